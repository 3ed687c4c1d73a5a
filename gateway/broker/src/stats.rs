//! Counters for /metrics and the status page. Every refusal and drop has one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the MQTT broker, shared with whoever renders metrics.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Client connections that completed CONNECT and are open.
    pub connections_current: AtomicU64,
    /// Sockets open, including those that have not sent CONNECT yet.
    pub sockets_current: AtomicU64,
    /// Connections that completed CONNECT (authenticated), since start.
    pub connections_total: AtomicU64,
    /// Refused for an invalid client id, an unsupported protocol version, a session limit or
    /// a busy password check.
    pub connections_rejected: AtomicU64,
    /// Sockets closed at once because `max_connections` were open.
    pub refused_max_connections: AtomicU64,
    /// Sockets closed at once because `max_connections_per_address` were open from the address.
    pub refused_per_address: AtomicU64,
    /// CONNECTs refused "server busy": the password-check queue was full or too slow.
    pub auth_busy: AtomicU64,
    /// CONNECTs refused because their user × address or address was locked out.
    pub auth_throttled: AtomicU64,
    /// CONNECTs refused for bad or missing credentials.
    pub auth_failures: AtomicU64,
    /// Connections closed for malformed packets, protocol errors, oversize packets or a
    /// CONNECT timeout.
    pub protocol_errors: AtomicU64,
    /// Connections closed because no packet came within 1.5 × keep-alive.
    pub keep_alive_timeouts: AtomicU64,
    /// Sessions taken over by a new connection with the same client id.
    pub session_takeovers: AtomicU64,
    /// Sessions that expired while their client was away.
    pub sessions_expired: AtomicU64,
    /// PUBLISH packets read from clients (every QoS).
    pub publishes_received: AtomicU64,
    pub publish_payload_bytes: AtomicU64,
    /// Publishes durably appended to the buffer (client publishes and recorded wills).
    pub publishes_appended: AtomicU64,
    /// Publishes and subscriptions refused by the topic rules.
    pub acl_denied: AtomicU64,
    /// Appends or durability waits that failed.
    pub append_errors: AtomicU64,
    /// Appends that waited because the buffer was full under the backpressure policy.
    pub backpressure_waits: AtomicU64,
    /// Last-will messages published.
    pub wills_recorded: AtomicU64,
    /// Times reading from a client paused because `max_unacked_per_client` of its publishes
    /// were waiting for their acknowledgement.
    pub unacked_limit_waits: AtomicU64,
    /// Messages for a subscriber dropped: its queue (or all queues together) full.
    pub messages_dropped: AtomicU64,
    /// Messages not sent because they expired or exceeded the client's maximum packet size.
    pub messages_expired: AtomicU64,
    pub messages_oversize: AtomicU64,
    /// Messages delivered to subscribers (network and in-process).
    pub messages_delivered: AtomicU64,
    /// Retained messages refused because the store was at its limit.
    pub retained_rejected: AtomicU64,
    /// Subscriptions refused at `max_subscriptions_per_client`.
    pub subscriptions_rejected: AtomicU64,
    /// Time from reading a publish to its durable append (what a QoS 1/2 client waits extra).
    pub durable_wait_micros_total: AtomicU64,
    pub durable_wait_micros_max: AtomicU64,
    /// Append batches waited for (one per socket read that carried publishes).
    pub durable_batches: AtomicU64,
    /// Sizes of the broker's state, refreshed once a second: sessions (connected or away,
    /// in-process subscribers included), subscriptions, retained messages and their bytes,
    /// bytes queued for all sessions.
    pub sessions: AtomicU64,
    pub subscriptions: AtomicU64,
    pub retained_messages: AtomicU64,
    pub retained_bytes: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Per user name (`(anonymous)`, `(unknown)` for names not configured): login failures
    /// and topic-rule refusals. Bounded by the configured users.
    pub per_user: Mutex<BTreeMap<String, UserCounters>>,
}

/// Refusals of one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserCounters {
    pub auth_failures: u64,
    pub acl_denied: u64,
}

/// A plain copy of [`MqttStats`]'s counters, plus the broker's current sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStatsSnapshot {
    pub connections_current: u64,
    pub sockets_current: u64,
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub refused_max_connections: u64,
    pub refused_per_address: u64,
    pub auth_busy: u64,
    pub auth_throttled: u64,
    pub auth_failures: u64,
    pub protocol_errors: u64,
    pub keep_alive_timeouts: u64,
    pub session_takeovers: u64,
    pub sessions_expired: u64,
    pub publishes_received: u64,
    pub publish_payload_bytes: u64,
    pub publishes_appended: u64,
    pub acl_denied: u64,
    pub append_errors: u64,
    pub backpressure_waits: u64,
    pub wills_recorded: u64,
    pub unacked_limit_waits: u64,
    pub messages_dropped: u64,
    pub messages_expired: u64,
    pub messages_oversize: u64,
    pub messages_delivered: u64,
    pub retained_rejected: u64,
    pub subscriptions_rejected: u64,
    pub durable_wait_micros_total: u64,
    pub durable_wait_micros_max: u64,
    pub durable_batches: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained_messages: u64,
    pub retained_bytes: u64,
    pub queued_bytes: u64,
    pub per_user: BTreeMap<String, UserCounters>,
}

/// Which per-user counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserEvent {
    AuthFailure,
    AclDenied,
}

impl MqttStats {
    pub fn snapshot(&self) -> MqttStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MqttStatsSnapshot {
            connections_current: g(&self.connections_current),
            sockets_current: g(&self.sockets_current),
            connections_total: g(&self.connections_total),
            connections_rejected: g(&self.connections_rejected),
            refused_max_connections: g(&self.refused_max_connections),
            refused_per_address: g(&self.refused_per_address),
            auth_busy: g(&self.auth_busy),
            auth_throttled: g(&self.auth_throttled),
            auth_failures: g(&self.auth_failures),
            protocol_errors: g(&self.protocol_errors),
            keep_alive_timeouts: g(&self.keep_alive_timeouts),
            session_takeovers: g(&self.session_takeovers),
            sessions_expired: g(&self.sessions_expired),
            publishes_received: g(&self.publishes_received),
            publish_payload_bytes: g(&self.publish_payload_bytes),
            publishes_appended: g(&self.publishes_appended),
            acl_denied: g(&self.acl_denied),
            append_errors: g(&self.append_errors),
            backpressure_waits: g(&self.backpressure_waits),
            wills_recorded: g(&self.wills_recorded),
            unacked_limit_waits: g(&self.unacked_limit_waits),
            messages_dropped: g(&self.messages_dropped),
            messages_expired: g(&self.messages_expired),
            messages_oversize: g(&self.messages_oversize),
            messages_delivered: g(&self.messages_delivered),
            retained_rejected: g(&self.retained_rejected),
            subscriptions_rejected: g(&self.subscriptions_rejected),
            durable_wait_micros_total: g(&self.durable_wait_micros_total),
            durable_wait_micros_max: g(&self.durable_wait_micros_max),
            durable_batches: g(&self.durable_batches),
            sessions: g(&self.sessions),
            subscriptions: g(&self.subscriptions),
            retained_messages: g(&self.retained_messages),
            retained_bytes: g(&self.retained_bytes),
            queued_bytes: g(&self.queued_bytes),
            per_user: self
                .per_user
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Adds `n` to a counter.
    pub fn inc(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn record_durable_wait(&self, micros: u64) {
        self.durable_wait_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.durable_wait_micros_max
            .fetch_max(micros, Ordering::Relaxed);
        self.durable_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal for `account` (already bucketed: a configured user name,
    /// `(anonymous)` or `(unknown)`, so the map stays bounded).
    pub(crate) fn user_event(&self, account: &str, event: UserEvent) {
        let mut map = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(account) {
            map.insert(account.to_string(), UserCounters::default());
        }
        if let Some(c) = map.get_mut(account) {
            match event {
                UserEvent::AuthFailure => c.auth_failures += 1,
                UserEvent::AclDenied => c.acl_denied += 1,
            }
        }
    }
}

/// Keeps a gauge right however a task ends.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn up(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
