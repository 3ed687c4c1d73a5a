//! Counters for /metrics and the status page.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the MQTT endpoint, shared with whoever renders metrics.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connections_current: AtomicU64,
    /// Connections that completed CONNECT (authenticated), since start.
    pub connections_total: AtomicU64,
    /// Refused for `max_connections`, an invalid client id, an unsupported protocol version or
    /// an unavailable router.
    pub connections_rejected: AtomicU64,
    /// CONNECTs refused for bad or missing credentials.
    pub auth_failures: AtomicU64,
    /// Connections closed for malformed packets, oversize payloads or a CONNECT timeout.
    pub protocol_errors: AtomicU64,
    /// PUBLISH packets read from clients (every QoS).
    pub publishes_received: AtomicU64,
    pub publish_payload_bytes: AtomicU64,
    /// Publishes durably appended to the buffer (client publishes and recorded wills).
    pub publishes_appended: AtomicU64,
    /// Appends or durability waits that failed (the connection is closed unacknowledged, or
    /// the append is retried for a full disk).
    pub append_errors: AtomicU64,
    /// Appends that waited because the buffer was full under the backpressure policy.
    pub backpressure_waits: AtomicU64,
    /// Last-will messages written to the buffer when a client vanished.
    pub wills_recorded: AtomicU64,
    /// Times reading from a client paused because `max_unacked_per_client` of its publishes
    /// were waiting for their acknowledgement.
    pub unacked_limit_waits: AtomicU64,
    /// Time from reading a publish to its durable append (what a QoS 1/2 client waits extra).
    pub durable_wait_micros_total: AtomicU64,
    pub durable_wait_micros_max: AtomicU64,
    /// Append batches waited for (one per socket read that carried publishes).
    pub durable_batches: AtomicU64,
}

/// A plain copy of [`MqttStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStatsSnapshot {
    pub connections_current: u64,
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub auth_failures: u64,
    pub protocol_errors: u64,
    pub publishes_received: u64,
    pub publish_payload_bytes: u64,
    pub publishes_appended: u64,
    pub append_errors: u64,
    pub backpressure_waits: u64,
    pub wills_recorded: u64,
    pub unacked_limit_waits: u64,
    pub durable_wait_micros_total: u64,
    pub durable_wait_micros_max: u64,
    pub durable_batches: u64,
}

impl MqttStats {
    pub fn snapshot(&self) -> MqttStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MqttStatsSnapshot {
            connections_current: g(&self.connections_current),
            connections_total: g(&self.connections_total),
            connections_rejected: g(&self.connections_rejected),
            auth_failures: g(&self.auth_failures),
            protocol_errors: g(&self.protocol_errors),
            publishes_received: g(&self.publishes_received),
            publish_payload_bytes: g(&self.publish_payload_bytes),
            publishes_appended: g(&self.publishes_appended),
            append_errors: g(&self.append_errors),
            backpressure_waits: g(&self.backpressure_waits),
            wills_recorded: g(&self.wills_recorded),
            unacked_limit_waits: g(&self.unacked_limit_waits),
            durable_wait_micros_total: g(&self.durable_wait_micros_total),
            durable_wait_micros_max: g(&self.durable_wait_micros_max),
            durable_batches: g(&self.durable_batches),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_durable_wait(&self, micros: u64) {
        self.durable_wait_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.durable_wait_micros_max
            .fetch_max(micros, Ordering::Relaxed);
        self.durable_batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps `connections_current` right however a connection task ends.
pub(crate) struct ConnectionGuard<'a>(pub(crate) &'a MqttStats);

impl<'a> ConnectionGuard<'a> {
    pub(crate) fn new(stats: &'a MqttStats) -> Self {
        stats.connections_current.fetch_add(1, Ordering::Relaxed);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(stats)
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_current.fetch_sub(1, Ordering::Relaxed);
    }
}
