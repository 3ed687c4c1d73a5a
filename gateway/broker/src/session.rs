//! One client session: its subscriptions, the messages queued for it, what is in flight to it
//! and the QoS 2 packet ids it has sent us. It outlives the connection when the client asked
//! for a session expiry interval, so a returning client gets what it missed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::codec::{QoS, SubscriptionOptions};
use crate::message::{Message, SessionKey};

/// A message waiting for its delivery to one session.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) msg: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub(crate) qos: QoS,
    /// The retain flag as delivered (set for retained messages sent on subscribe, and for
    /// live ones under retain-as-published).
    pub(crate) retain: bool,
    pub(crate) subscription_ids: Vec<u32>,
}

/// A QoS 1/2 message sent and not yet completed.
#[derive(Debug, Clone)]
pub(crate) enum Inflight {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Queued),
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// Limits a session's queue obeys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_bytes_total: usize,
}

/// Why the connection serving a session must end, set by whoever ends it.
pub(crate) struct Kick {
    pub(crate) notify: Notify,
    /// MQTT 5 reason code for the DISCONNECT; 0 = not kicked.
    pub(crate) reason: AtomicU8,
}

impl Kick {
    pub(crate) fn new() -> Arc<Kick> {
        Arc::new(Kick {
            notify: Notify::new(),
            reason: AtomicU8::new(0),
        })
    }

    pub(crate) fn kick(&self, reason: u8) {
        self.reason.store(reason, Ordering::Release);
        self.notify.notify_one();
    }

    pub(crate) fn reason(&self) -> Option<u8> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            r => Some(r),
        }
    }
}

pub(crate) struct SessionState {
    /// Filter as subscribed (with any `$share/group/` prefix) → options and identifier.
    pub(crate) subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) queued_bytes: usize,
    pub(crate) inflight: BTreeMap<u16, Inflight>,
    next_packet_id: u16,
    /// QoS 2 publishes received (PUBREC sent) and not yet released by the client.
    pub(crate) incoming_qos2: HashSet<u16>,
    /// The connection serving this session now, with its generation.
    pub(crate) connection: Option<(u64, Arc<Kick>)>,
    /// Seconds the session outlives its connection (0 = ends with it, `u32::MAX` = never).
    pub(crate) expiry_s: u32,
    /// When the last connection ended (while no connection serves it).
    pub(crate) disconnected_at: Option<Instant>,
    /// Whether offline QoS 0 messages are queued (only for in-process subscribers).
    pub(crate) queue_offline_qos0: bool,
    /// A will waiting for its delay; a returning client cancels it.
    pub(crate) pending_will: Option<(Message, Instant)>,
    /// The user name the session's client logged in with: only that user resumes it (its
    /// subscriptions and queued messages were authorized for that user).
    pub(crate) user: Option<String>,
}

/// See the module documentation.
pub struct Session {
    pub(crate) key: SessionKey,
    /// Empty for in-process subscribers.
    pub(crate) client_id: String,
    state: Mutex<SessionState>,
    /// Wakes the connection (or in-process subscriber) when messages were queued.
    pub(crate) ready: Notify,
    generation: AtomicU64,
    /// Everything queued for all sessions (shared by all of them).
    total_queued: Arc<AtomicUsize>,
}

impl Session {
    pub(crate) fn new(
        key: SessionKey,
        client_id: String,
        expiry_s: u32,
        total_queued: Arc<AtomicUsize>,
    ) -> Session {
        Session {
            key,
            client_id,
            state: Mutex::new(SessionState {
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight: BTreeMap::new(),
                next_packet_id: 1,
                incoming_qos2: HashSet::new(),
                connection: None,
                expiry_s,
                disconnected_at: None,
                queue_offline_qos0: false,
                pending_will: None,
                user: None,
            }),
            ready: Notify::new(),
            generation: AtomicU64::new(0),
            total_queued,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds a new connection; returns its generation and the previous connection's kick.
    pub(crate) fn attach(&self, kick: Arc<Kick>) -> (u64, Option<Arc<Kick>>) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut s = self.lock();
        s.disconnected_at = None;
        s.pending_will = None;
        let old = s.connection.replace((generation, kick)).map(|(_, k)| k);
        (generation, old)
    }

    /// Unbinds connection `generation` if it is still the current one.
    pub(crate) fn detach(&self, generation: u64) -> bool {
        let mut s = self.lock();
        if s.connection.as_ref().is_some_and(|(g, _)| *g == generation) {
            s.connection = None;
            s.disconnected_at = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// The current connection generation (0 = none yet).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Queues `q` unless a limit is reached; whether it was queued.
    pub(crate) fn enqueue(&self, q: Queued, limits: QueueLimits) -> bool {
        let weight = q.msg.weight();
        let mut s = self.lock();
        if s.connection.is_none() && q.qos == QoS::AtMostOnce && !s.queue_offline_qos0 {
            return false;
        }
        if s.queue.len() >= limits.max_messages || s.queued_bytes + weight > limits.max_bytes {
            return false;
        }
        let total = self.total_queued.fetch_add(weight, Ordering::AcqRel);
        if total + weight > limits.max_bytes_total {
            self.total_queued.fetch_sub(weight, Ordering::AcqRel);
            return false;
        }
        s.queued_bytes += weight;
        s.queue.push_back(q);
        drop(s);
        self.ready.notify_one();
        true
    }

    /// Takes the next queued message (accounting its bytes out).
    pub(crate) fn pop(s: &mut SessionState, total: &AtomicUsize) -> Option<Queued> {
        let q = s.queue.pop_front()?;
        let w = q.msg.weight();
        s.queued_bytes = s.queued_bytes.saturating_sub(w);
        release(total, w);
        Some(q)
    }

    pub(crate) fn total_queued(&self) -> &AtomicUsize {
        &self.total_queued
    }

    /// A free packet id for a message to this session, if any (65,535 in flight at most).
    pub(crate) fn next_packet_id(s: &mut SessionState) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = s.next_packet_id;
            s.next_packet_id = s.next_packet_id.checked_add(1).unwrap_or(1);
            if !s.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Frees everything queued (the session ends).
    pub(crate) fn clear(&self) {
        let mut s = self.lock();
        while Self::pop(&mut s, &self.total_queued).is_some() {}
        s.inflight.clear();
        s.incoming_qos2.clear();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let bytes = s.queued_bytes;
        s.queue.clear();
        if bytes > 0 {
            release(&self.total_queued, bytes);
        }
    }
}

/// Takes `bytes` off the all-sessions total, never below zero.
fn release(total: &AtomicUsize, bytes: usize) {
    let _ = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
        Some(t.saturating_sub(bytes))
    });
}
