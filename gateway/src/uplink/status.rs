//! The uplink's state and counters, shared with the web UI, `/metrics` and `/healthz`.

use std::sync::{Mutex, MutexGuard, Weak};

use edge_buffer::Log;
use serde::Serialize;

use super::config::UplinkConfig;
use super::route::Origin;
use crate::clock::now_ms;

/// What the uplink is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UplinkState {
    /// Not configured (no bootstrap servers), or stopped.
    Disconnected { reason: String },
    /// Connecting to the cluster for the first time or after a failure.
    Connecting,
    /// The last request succeeded.
    Connected,
    /// A transient failure (broker unreachable, leader moving, timeout); retrying after a delay.
    BackingOff { reason: String, retry_in_ms: u64 },
    /// A failure that needs attention (authentication, TLS, authorization); still retrying.
    Error { reason: String, retry_in_ms: u64 },
}

/// Counters of one route (or of the default / retained target).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteCounters {
    pub name: String,
    pub filter: String,
    pub topic: String,
    /// Records acknowledged by Kafka.
    pub records: u64,
    /// Their approximate uncompressed size (key + value + headers).
    pub bytes: u64,
}

/// The last record that was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub buffer_offset: u64,
    /// Kafka topic it was meant for (empty if it could not be decoded).
    pub topic: String,
    pub reason: String,
    pub at_ms: i64,
}

/// An error with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    pub message: String,
    pub at_ms: i64,
}

/// A point-in-time copy of the uplink's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UplinkSnapshot {
    #[serde(flatten)]
    pub state: UplinkState,
    /// When `state` last changed (ms since the epoch).
    pub state_since_ms: i64,
    /// Records acknowledged by Kafka (acks=all), all topics.
    pub forwarded_records: u64,
    pub forwarded_bytes: u64,
    pub produce_requests: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Produce requests that did not finish within `request_timeout_ms`.
    pub request_timeouts: u64,
    /// The current request size limit: `max_request_bytes`, halved after each timeout and
    /// grown back while requests succeed.
    pub request_limit_bytes: u64,
    /// The committed buffer cursor: every offset below is done, durably.
    pub committed_offset: u64,
    /// Every offset below was acknowledged by Kafka or skipped (committed at most
    /// `commit_interval_ms` later).
    pub forwarded_offset: u64,
    /// Buffer records not yet forwarded (acknowledged buffer end − `forwarded_offset`).
    pub lag_records: u64,
    /// Age of the oldest record not yet forwarded, when known.
    pub lag_oldest_age_ms: Option<u64>,
    /// Per route, in configuration order.
    pub routes: Vec<RouteCounters>,
    /// Unmatched events sent to the default topic.
    pub default_route: RouteCounters,
    /// Retained messages sent to the retained topic.
    pub retained_route: Option<RouteCounters>,
    /// Unmatched events dropped (`unmatched = "drop"`).
    pub dropped_unmatched: u64,
    /// Records skipped for good: too large, unknown topic, rejected by the broker, undecodable.
    pub dead_lettered: u64,
    pub last_dead_letter: Option<DeadLetter>,
    /// Buffer records dropped by the buffer's full policy before the uplink read them.
    pub buffer_missed: u64,
    pub last_error: Option<ErrorInfo>,
    /// Idempotent producer id (KIP-98) the uplink stamps its batches with; -1 before it has one.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// New producer identities taken after the broker refused a batch's sequence or producer.
    pub producer_resets: u64,
    /// Records sent again that the broker recognised as already written (not duplicated).
    pub duplicates_suppressed: u64,
    /// Records sent again without proof that the broker had not written them before
    /// (at-least-once fallback): each may appear twice in Kafka.
    pub unproven_resends: u64,
    /// Records not sent because the partition's tail showed they were already there (written
    /// before a restart, or by a request in doubt).
    pub resume_skipped: u64,
}

impl UplinkSnapshot {
    /// Healthy: not configured (nothing to do) or connected.
    pub fn is_healthy(&self) -> bool {
        matches!(
            self.state,
            UplinkState::Connected | UplinkState::Disconnected { .. }
        )
    }
}

struct Inner {
    snap: UplinkSnapshot,
    /// Timestamp of the oldest record not yet forwarded, when the uplink holds it.
    oldest_pending_ms: Option<i64>,
}

/// Shared, cheap to update; the lead renders [`UplinkStatus::snapshot`].
pub struct UplinkStatus {
    inner: Mutex<Inner>,
    log: Mutex<Weak<Log>>,
}

impl Default for UplinkStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl UplinkStatus {
    pub fn new() -> UplinkStatus {
        UplinkStatus {
            inner: Mutex::new(Inner {
                snap: UplinkSnapshot {
                    state: UplinkState::Disconnected {
                        reason: "not started".into(),
                    },
                    state_since_ms: now_ms(),
                    forwarded_records: 0,
                    forwarded_bytes: 0,
                    produce_requests: 0,
                    retries: 0,
                    request_timeouts: 0,
                    request_limit_bytes: 0,
                    committed_offset: 0,
                    forwarded_offset: 0,
                    lag_records: 0,
                    lag_oldest_age_ms: None,
                    routes: Vec::new(),
                    default_route: RouteCounters::default(),
                    retained_route: None,
                    dropped_unmatched: 0,
                    dead_lettered: 0,
                    last_dead_letter: None,
                    buffer_missed: 0,
                    last_error: None,
                    producer_id: -1,
                    producer_epoch: -1,
                    producer_resets: 0,
                    duplicates_suppressed: 0,
                    unproven_resends: 0,
                    resume_skipped: 0,
                },
                oldest_pending_ms: None,
            }),
            log: Mutex::new(Weak::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current status. Lag is computed against the buffer's current end.
    pub fn snapshot(&self) -> UplinkSnapshot {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).upgrade();
        let bounds = log.map(|l| {
            let st = l.stats();
            (st.oldest_offset, st.acknowledged_offset)
        });
        let g = self.lock();
        let mut s = g.snap.clone();
        if let Some((oldest, end)) = bounds {
            // Records the full policy dropped before they were read are no longer lag.
            s.lag_records = end.saturating_sub(s.forwarded_offset.max(oldest));
        }
        s.lag_oldest_age_ms = if s.lag_records == 0 {
            None
        } else {
            g.oldest_pending_ms
                .map(|t| now_ms().saturating_sub(t).max(0) as u64)
        };
        s
    }

    pub(crate) fn attach(&self, config: &UplinkConfig, log: &std::sync::Arc<Log>) {
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::downgrade(log);
        let mut g = self.lock();
        g.snap.request_limit_bytes = config.max_request_bytes as u64;
        g.snap.routes = config
            .routes
            .iter()
            .map(|r| RouteCounters {
                name: r.name.clone().unwrap_or_else(|| r.filter.clone()),
                filter: r.filter.clone(),
                topic: r.topic.clone(),
                records: 0,
                bytes: 0,
            })
            .collect();
        g.snap.default_route = RouteCounters {
            name: "default".into(),
            filter: String::new(),
            topic: match config.unmatched {
                super::config::Unmatched::Forward => config.default_topic.clone(),
                super::config::Unmatched::Drop => String::new(),
            },
            records: 0,
            bytes: 0,
        };
        g.snap.retained_route = config.retained_topic.as_ref().map(|t| RouteCounters {
            name: "retained".into(),
            filter: String::new(),
            topic: t.clone(),
            records: 0,
            bytes: 0,
        });
    }

    pub(crate) fn set_state(&self, state: UplinkState) {
        let mut g = self.lock();
        let same_kind = std::mem::discriminant(&g.snap.state) == std::mem::discriminant(&state);
        if !same_kind {
            g.snap.state_since_ms = now_ms();
        }
        g.snap.state = state;
    }

    pub(crate) fn state(&self) -> UplinkState {
        self.lock().snap.state.clone()
    }

    pub(crate) fn error(&self, message: String) {
        self.lock().snap.last_error = Some(ErrorInfo {
            message,
            at_ms: now_ms(),
        });
    }

    pub(crate) fn forwarded(&self, origin: Origin, records: u64, bytes: u64) {
        let mut g = self.lock();
        g.snap.forwarded_records += records;
        g.snap.forwarded_bytes += bytes;
        let c = match origin {
            Origin::Route(i) => g.snap.routes.get_mut(i),
            Origin::Default => Some(&mut g.snap.default_route),
            Origin::Retained => g.snap.retained_route.as_mut(),
        };
        if let Some(c) = c {
            c.records += records;
            c.bytes += bytes;
        }
    }

    pub(crate) fn request(&self) {
        self.lock().snap.produce_requests += 1;
    }

    /// `requests` produce requests timed out; requests are now limited to `limit` bytes.
    pub(crate) fn timed_out(&self, requests: u64, limit: usize) {
        let mut g = self.lock();
        g.snap.request_timeouts += requests;
        g.snap.request_limit_bytes = limit as u64;
    }

    pub(crate) fn request_limit(&self, limit: usize) {
        self.lock().snap.request_limit_bytes = limit as u64;
    }

    pub(crate) fn retry(&self) {
        self.lock().snap.retries += 1;
    }

    pub(crate) fn dropped_unmatched(&self, n: u64) {
        self.lock().snap.dropped_unmatched += n;
    }

    pub(crate) fn dead_letter(&self, buffer_offset: u64, topic: &str, reason: &str) {
        let mut g = self.lock();
        g.snap.dead_lettered += 1;
        g.snap.last_dead_letter = Some(DeadLetter {
            buffer_offset,
            topic: topic.to_string(),
            reason: reason.to_string(),
            at_ms: now_ms(),
        });
    }

    pub(crate) fn committed(&self, offset: u64) {
        let mut g = self.lock();
        g.snap.committed_offset = offset;
        g.snap.forwarded_offset = g.snap.forwarded_offset.max(offset);
    }

    /// Everything below `offset` is forwarded (or skipped); nothing is pending.
    pub(crate) fn progressed(&self, offset: u64) {
        let mut g = self.lock();
        g.snap.forwarded_offset = g.snap.forwarded_offset.max(offset);
        g.oldest_pending_ms = None;
    }

    pub(crate) fn pending_from(&self, oldest_pending_ms: i64) {
        let mut g = self.lock();
        if g.oldest_pending_ms.is_none() {
            g.oldest_pending_ms = Some(oldest_pending_ms);
        }
    }

    /// A new producer identity; `reset` when it replaces one the broker refused.
    pub(crate) fn producer(&self, id: i64, epoch: i16, reset: bool) {
        let mut g = self.lock();
        g.snap.producer_id = id;
        g.snap.producer_epoch = epoch;
        if reset {
            g.snap.producer_resets += 1;
        }
    }

    pub(crate) fn duplicates_suppressed(&self, records: u64) {
        self.lock().snap.duplicates_suppressed += records;
    }

    pub(crate) fn unproven_resends(&self, records: u64) {
        self.lock().snap.unproven_resends += records;
    }

    pub(crate) fn resume_skipped(&self, records: u64) {
        self.lock().snap.resume_skipped += records;
    }

    pub(crate) fn missed(&self, n: u64) {
        self.lock().snap.buffer_missed = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_serializes_with_flat_state() {
        let s = UplinkStatus::new();
        s.set_state(UplinkState::BackingOff {
            reason: "connection refused".into(),
            retry_in_ms: 400,
        });
        s.dead_letter(9, "t", "too large");
        let snap = s.snapshot();
        assert!(!snap.is_healthy());
        let v = serde_json::to_value(&snap).expect("serializes");
        assert_eq!(v["state"], "backing_off");
        assert_eq!(v["reason"], "connection refused");
        assert_eq!(v["dead_lettered"], 1);
        assert_eq!(v["last_dead_letter"]["buffer_offset"], 9);
    }
}
