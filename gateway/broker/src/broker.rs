//! The broker's shared state: sessions by client id, the subscription tree, the retained
//! store; routing of durable messages into session queues. One mutex guards it; it is held
//! only for map and tree operations, never across I/O. Lock order: broker, then a session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::acl::{Acl, Action};
use crate::auth::Authenticator;
use crate::clients::ClientRegistry;
use crate::codec::{QoS, RetainHandling, SubscriptionOptions, reason};
use crate::config::MqttConfig;
use crate::hook::{Accepted, Persistence};
use crate::message::{Message, SessionKey};
use crate::retained::RetainedStore;
use crate::session::{Kick, QueueLimits, Queued, Session};
use crate::stats::{MqttStats, UserEvent};
use crate::topic::{self, FilterRef};
use crate::tree::{Delivery, SubscriptionTree};

struct State {
    tree: SubscriptionTree<SessionKey>,
    sessions: HashMap<SessionKey, Arc<Session>>,
    by_client_id: HashMap<String, SessionKey>,
    retained: RetainedStore,
    /// Scratch space for matching, kept to avoid an allocation per message.
    matched: Vec<Delivery<SessionKey>>,
    /// Delayed wills of sessions that ended before the delay (clean start, expiry), with their
    /// client ids: due at once [MQTT-3.1.2-8], published by the next [`Broker::due_wills`].
    ended_wills: Vec<(Message, String)>,
}

/// What [`Broker::attach`] answers a CONNECT.
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    pub(crate) generation: u64,
    pub(crate) session_present: bool,
}

/// The broker core shared by listeners, connections and in-process clients.
pub struct Broker {
    pub(crate) cfg: MqttConfig,
    state: Mutex<State>,
    pub(crate) stats: Arc<MqttStats>,
    pub(crate) persistence: Arc<dyn Persistence>,
    pub(crate) acl: Acl,
    pub(crate) auth: Authenticator,
    pub(crate) clients: Arc<ClientRegistry>,
    next_key: AtomicU64,
    total_queued: Arc<AtomicUsize>,
    /// Open sockets per address unit (IPv6 /64).
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionsFull;

impl Broker {
    pub(crate) fn new(
        cfg: MqttConfig,
        persistence: Arc<dyn Persistence>,
        acl: Acl,
        stats: Arc<MqttStats>,
    ) -> Arc<Broker> {
        let auth = Authenticator::new(
            &cfg.users,
            cfg.allow_anonymous,
            cfg.auth_queue,
            Duration::from_millis(cfg.auth_timeout_ms),
        );
        Arc::new(Broker {
            state: Mutex::new(State {
                tree: SubscriptionTree::default(),
                sessions: HashMap::new(),
                by_client_id: HashMap::new(),
                retained: RetainedStore::new(cfg.max_retained_messages, cfg.max_retained_bytes),
                matched: Vec::new(),
                ended_wills: Vec::new(),
            }),
            cfg,
            stats,
            persistence,
            acl,
            auth,
            clients: Arc::new(ClientRegistry::default()),
            next_key: AtomicU64::new(1),
            total_queued: Arc::new(AtomicUsize::new(0)),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.cfg.max_queued_messages,
            max_bytes: self.cfg.max_queued_bytes,
            max_bytes_total: self.cfg.max_queued_bytes_total,
        }
    }

    fn new_session(&self, client_id: String, expiry_s: u32) -> Arc<Session> {
        let key = SessionKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        Arc::new(Session::new(
            key,
            client_id,
            expiry_s,
            self.total_queued.clone(),
        ))
    }

    /// Binds a connection to the session of `client_id`: resumes it (`clean_start` false and
    /// one exists for the same `user`) or starts a new one; an existing connection of that
    /// client is kicked with "session taken over". Another user's session is never resumed
    /// (its subscriptions and queue were authorized for that user): it is replaced as for a
    /// clean start.
    pub(crate) fn attach(
        &self,
        client_id: &str,
        user: Option<&str>,
        clean_start: bool,
        expiry_s: u32,
        kick: Arc<Kick>,
    ) -> Result<Attached, SessionsFull> {
        let mut st = self.lock();
        let existing = st
            .by_client_id
            .get(client_id)
            .and_then(|k| st.sessions.get(k))
            .cloned();
        let (session, present) = match existing {
            Some(s) if !clean_start && s.lock().user.as_deref() == user => (s, true),
            Some(old) => {
                // A clean start ends the old session (its subscriptions and queue) first.
                Self::remove_session(&mut st, &old);
                let s = self.new_session(client_id.to_string(), expiry_s);
                st.sessions.insert(s.key, s.clone());
                st.by_client_id.insert(client_id.to_string(), s.key);
                if let Some((_, k)) = old.lock().connection.take() {
                    MqttStats::inc(&self.stats.session_takeovers, 1);
                    k.kick(reason::SESSION_TAKEN_OVER);
                }
                (s, false)
            }
            None => {
                if st.by_client_id.len() >= self.cfg.max_sessions {
                    return Err(SessionsFull);
                }
                let s = self.new_session(client_id.to_string(), expiry_s);
                st.sessions.insert(s.key, s.clone());
                st.by_client_id.insert(client_id.to_string(), s.key);
                (s, false)
            }
        };
        {
            let mut s = session.lock();
            s.expiry_s = expiry_s;
            s.user = user.map(str::to_owned);
        }
        let (generation, old) = session.attach(kick);
        if let Some(old) = old {
            MqttStats::inc(&self.stats.session_takeovers, 1);
            old.kick(reason::SESSION_TAKEN_OVER);
        }
        Ok(Attached {
            session,
            generation,
            session_present: present,
        })
    }

    /// The connection `generation` of `session` ended: the session ends with it unless it has
    /// an expiry interval.
    pub(crate) fn detach(&self, session: &Arc<Session>, generation: u64) {
        if !session.detach(generation) {
            return;
        }
        if session.lock().expiry_s == 0 {
            let mut st = self.lock();
            // Still ours (not resumed by a new connection meanwhile)?
            if session.generation() == generation {
                Self::remove_session(&mut st, session);
            }
        }
    }

    /// Removes a session with its subscriptions and queue.
    fn remove_session(st: &mut State, session: &Arc<Session>) {
        let filters: Vec<String> = session.lock().subscriptions.keys().cloned().collect();
        for f in &filters {
            if let Ok(parsed) = topic::parse_filter(f) {
                let (filter, group) = split(&parsed);
                st.tree.unsubscribe(filter, group, session.key);
            }
        }
        session.lock().subscriptions.clear();
        if let Some((will, _)) = session.lock().pending_will.take() {
            st.ended_wills.push((will, session.client_id.clone()));
        }
        st.sessions.remove(&session.key);
        if st.by_client_id.get(&session.client_id) == Some(&session.key) {
            st.by_client_id.remove(&session.client_id);
        }
        session.clear();
    }

    /// Keeps the delayed will of connection `generation` of `session` until `at` (see
    /// [`Broker::due_wills`]); drops it if the client is back already; returns it if the
    /// session has ended meanwhile (it is due now [MQTT-3.1.2-8]).
    pub(crate) fn park_will(
        &self,
        session: &Arc<Session>,
        generation: u64,
        will: Message,
        at: Instant,
    ) -> Option<Message> {
        // Under the broker lock: `remove_session` cannot end the session in between.
        let st = self.lock();
        if !st.sessions.contains_key(&session.key) {
            return Some(will);
        }
        let mut s = session.lock();
        if s.connection.is_none() && session.generation() == generation {
            s.pending_will = Some((will, at));
        }
        None
    }

    /// Takes the delayed wills that are due at `now`, and those of sessions that ended, with
    /// their client ids.
    pub(crate) fn due_wills(&self, now: Instant) -> Vec<(Message, String)> {
        let mut st = self.lock();
        let ended = std::mem::take(&mut st.ended_wills);
        st.sessions
            .values()
            .filter_map(|s| {
                let mut g = s.lock();
                match &g.pending_will {
                    Some((_, at)) if *at <= now && g.connection.is_none() => {
                        g.pending_will.take().map(|(m, _)| (m, s.client_id.clone()))
                    }
                    _ => None,
                }
            })
            .chain(ended)
            .collect()
    }

    /// Ends sessions whose client has been away longer than their expiry; how many.
    pub(crate) fn expire_sessions(&self, now: Instant) -> usize {
        let mut st = self.lock();
        let expired: Vec<Arc<Session>> = st
            .sessions
            .values()
            .filter(|s| {
                let g = s.lock();
                g.connection.is_none()
                    && g.disconnected_at.is_some_and(|at| {
                        g.expiry_s != u32::MAX
                            && now.duration_since(at) >= Duration::from_secs(g.expiry_s as u64)
                    })
                    && !s.client_id.is_empty()
            })
            .cloned()
            .collect();
        for s in &expired {
            Self::remove_session(&mut st, s);
        }
        st.retained.remove_expired(now);
        MqttStats::inc(&self.stats.sessions_expired, expired.len() as u64);
        expired.len()
    }

    /// Adds (or replaces) a subscription; queues the retained messages it should get.
    /// Returns the granted QoS or a failure reason code.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        full_filter: &str,
        opts: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> u8 {
        let parsed = match topic::parse_filter(full_filter) {
            Ok(p) => p,
            Err(e) => return e.reason_code(),
        };
        let (filter, group) = split(&parsed);
        let mut st = self.lock();
        let is_new = {
            let mut s = session.lock();
            let is_new = !s.subscriptions.contains_key(full_filter);
            if is_new && s.subscriptions.len() >= self.cfg.max_subscriptions_per_client {
                MqttStats::inc(&self.stats.subscriptions_rejected, 1);
                return reason::QUOTA_EXCEEDED;
            }
            s.subscriptions
                .insert(full_filter.to_string(), (opts, subscription_id));
            is_new
        };
        st.tree
            .subscribe(filter, group, session.key, opts, subscription_id);
        // Retained messages are not sent for shared subscriptions [MQTT-3.8.4-4 note, 4.8.2].
        let send_retained = group.is_none()
            && match opts.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => is_new,
                RetainHandling::Never => false,
            };
        if send_retained {
            let mut found = Vec::new();
            st.retained.matching(filter, Instant::now(), &mut found);
            drop(st);
            let limits = self.queue_limits();
            for msg in found {
                let qos = msg.qos.min(opts.qos);
                let q = Queued {
                    msg,
                    qos,
                    // Retained messages sent on subscribe keep the flag [MQTT-3.3.1-8].
                    retain: true,
                    subscription_ids: subscription_id.into_iter().collect(),
                };
                if !session.enqueue(q, limits) {
                    MqttStats::inc(&self.stats.messages_dropped, 1);
                }
            }
        }
        opts.qos as u8
    }

    /// Removes a subscription; whether it existed.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, full_filter: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(full_filter) else {
            return false;
        };
        let (filter, group) = split(&parsed);
        let mut st = self.lock();
        let existed = session.lock().subscriptions.remove(full_filter).is_some();
        if existed {
            st.tree.unsubscribe(filter, group, session.key);
        }
        existed
    }

    /// Delivers durable messages to their subscribers and updates the retained store.
    pub fn route(&self, messages: &[Arc<Message>]) {
        let limits = self.queue_limits();
        let mut st = self.lock();
        let st = &mut *st;
        for msg in messages {
            if msg.retain
                && let Err(e) = st.retained.set(msg.clone())
            {
                MqttStats::inc(&self.stats.retained_rejected, 1);
                tracing::debug!(topic = ?msg.topic, error = %e, "retained message refused");
            }
            st.matched.clear();
            st.tree.matches(&msg.topic, &mut st.matched);
            // One delivery per session: highest QoS of its matching subscriptions, all their
            // identifiers [MQTT-3.3.4-3/-5].
            st.matched.sort_by_key(|d| d.who);
            let mut i = 0;
            while i < st.matched.len() {
                let who = st.matched[i].who;
                let mut qos = None::<QoS>;
                let mut retain = false;
                let mut ids = Vec::new();
                while i < st.matched.len() && st.matched[i].who == who {
                    let d = &st.matched[i];
                    i += 1;
                    // No local: not back to the publishing session [MQTT-3.8.3-3].
                    if d.opts.no_local && !d.shared && msg.origin == Some(who) {
                        continue;
                    }
                    qos = Some(qos.map_or(d.opts.qos, |q| q.max(d.opts.qos)));
                    retain |= d.opts.retain_as_published && msg.retain;
                    if let Some(id) = d.subscription_id {
                        ids.push(id);
                    }
                }
                let (Some(sub_qos), Some(session)) = (qos, st.sessions.get(&who)) else {
                    continue;
                };
                let q = Queued {
                    msg: msg.clone(),
                    // Never above the published QoS [MQTT-3.8.4-8].
                    qos: msg.qos.min(sub_qos),
                    retain,
                    subscription_ids: ids,
                };
                if !session.enqueue(q, limits) {
                    MqttStats::inc(&self.stats.messages_dropped, 1);
                }
            }
        }
    }

    /// Appends `message` through the persistence hook, waits until it is durable, then routes
    /// it. For wills and anything the broker publishes itself.
    pub(crate) async fn publish_durably(&self, message: Message, client_id: &str) -> bool {
        let accepted = [Accepted {
            message: &message,
            client_id,
        }];
        let durable = match self.persistence.append(&accepted).await {
            Ok(d) => d.await,
            Err(e) => Err(e),
        };
        match durable {
            Ok(()) => {
                MqttStats::inc(&self.stats.publishes_appended, 1);
                self.route(&[Arc::new(message)]);
                true
            }
            Err(e) => {
                MqttStats::inc(&self.stats.append_errors, 1);
                tracing::error!(client_id = ?client_id, error = %e, "message not appended to the buffer");
                false
            }
        }
    }

    /// An in-process subscriber's session (no client id; queues QoS 0 while it is busy).
    pub(crate) fn local_session(&self) -> Arc<Session> {
        let s = self.new_session(String::new(), u32::MAX);
        s.lock().queue_offline_qos0 = true;
        self.lock().sessions.insert(s.key, s.clone());
        s
    }

    pub(crate) fn drop_local_session(&self, session: &Arc<Session>) {
        let mut st = self.lock();
        Self::remove_session(&mut st, session);
    }

    /// Asks every connection to end with `reason` (e.g. server shutting down).
    pub(crate) fn kick_all(&self, reason_code: u8) {
        let st = self.lock();
        for s in st.sessions.values() {
            if let Some((_, k)) = &s.lock().connection {
                k.kick(reason_code);
            }
        }
    }

    /// Checks a topic rule and counts a refusal for the account.
    pub(crate) fn allowed(
        &self,
        user: Option<&str>,
        client_id: &str,
        action: Action,
        topic_or_filter: &str,
    ) -> bool {
        let d = self.acl.check(user, client_id, action, topic_or_filter);
        if !d.allowed {
            MqttStats::inc(&self.stats.acl_denied, 1);
            self.stats
                .user_event(&self.account(user), UserEvent::AclDenied);
        }
        d.allowed
    }

    /// The per-user metrics bucket of a user name (bounded by the configured users).
    pub(crate) fn account(&self, user: Option<&str>) -> String {
        match user {
            None => "(anonymous)".into(),
            Some(u) if self.auth.knows(u) => u.into(),
            Some(_) => "(unknown)".into(),
        }
    }

    /// Reserves a socket slot for `ip`; `None` at the per-address limit.
    pub(crate) fn reserve_address(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let unit = crate::throttle::address_unit(ip);
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(unit).or_insert(0);
        if *n >= self.cfg.max_connections_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            broker: self.clone(),
            unit,
        })
    }

    /// Sessions held (connected or waiting), in-process subscribers included.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Subscriptions held.
    pub fn subscription_count(&self) -> usize {
        self.lock().tree.len()
    }

    /// Retained messages held and their bytes.
    pub fn retained(&self) -> (usize, usize) {
        let st = self.lock();
        (st.retained.len(), st.retained.bytes())
    }

    /// Copies the state's sizes into the stats gauges.
    pub(crate) fn publish_sizes(&self) {
        let (sessions, subscriptions, retained, retained_bytes) = {
            let st = self.lock();
            (
                st.sessions.len(),
                st.tree.len(),
                st.retained.len(),
                st.retained.bytes(),
            )
        };
        let set = |g: &std::sync::atomic::AtomicU64, v: usize| g.store(v as u64, Ordering::Relaxed);
        set(&self.stats.sessions, sessions);
        set(&self.stats.subscriptions, subscriptions);
        set(&self.stats.retained_messages, retained);
        set(&self.stats.retained_bytes, retained_bytes);
        set(&self.stats.queued_bytes, self.queued_bytes());
    }

    /// Bytes queued for all sessions.
    pub fn queued_bytes(&self) -> usize {
        self.total_queued.load(Ordering::Relaxed)
    }
}

/// A socket counted against its address until dropped.
pub(crate) struct AddressSlot {
    broker: Arc<Broker>,
    unit: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .broker
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.unit) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.unit);
            }
        }
    }
}

fn split<'a>(parsed: &'a FilterRef<'a>) -> (&'a str, Option<&'a str>) {
    match parsed {
        FilterRef::Plain(f) => (f, None),
        FilterRef::Shared { group, filter } => (filter, Some(group)),
    }
}
