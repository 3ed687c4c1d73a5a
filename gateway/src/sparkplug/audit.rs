//! Audit of commands sent to the gateway's Sparkplug edge node (DCMD writes, NCMD rebirths),
//! whether they arrived over MQTT or from the Kafka command topic.
//!
//! [`CommandAudit`] keeps the most recent results (a bounded list, for `/api/status` and the
//! UI), counters, and a [`broadcast`] of every result as it is recorded (the Kafka result
//! writer subscribes to it). Every result is also logged.
//!
//! The Kafka command consumer publishes a DCMD/NCMD on the local broker with its correlation
//! id in the payload's `uuid` field; it first calls [`CommandAudit::expect`] so the edge node's
//! result is attributed to [`CommandSource::Kafka`] (and the allow-list applied to it). A
//! command the consumer refuses itself (not allowed, malformed) goes straight to
//! [`CommandAudit::record`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Default number of results kept in [`CommandAudit::recent`].
pub const DEFAULT_CAPACITY: usize = 200;

/// Results a lagging [`CommandAudit::subscribe`] receiver may fall behind before it gets
/// `Lagged`.
const BROADCAST_CAPACITY: usize = 256;

/// Correlation ids announced with [`CommandAudit::expect`] and not yet seen; the oldest are
/// forgotten beyond this.
const PENDING_CAPACITY: usize = 1024;

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandSource {
    /// A DCMD/NCMD published on the embedded broker by an MQTT client.
    Mqtt,
    /// A DCMD/NCMD received from the upstream MQTT server (`[sparkplug.upstream]`).
    Upstream,
    /// A record of the Kafka command topic.
    Kafka,
}

/// What happened to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done: the value was written to the device (or the rebirth published).
    Ok,
    /// Refused before anything was sent to a device: unknown device or metric, read-only
    /// metric, wrong type, out of range, not allowed, malformed.
    Rejected,
    /// Accepted, but the device write failed (timeout, exception, verify mismatch, poller
    /// stopped).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// One command and its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRecord {
    /// Increasing number of the result in this process.
    pub seq: u64,
    /// When the result was recorded (ms since the Unix epoch).
    pub time_ms: u64,
    pub source: CommandSource,
    /// The payload's `uuid` (Kafka: the command record's `id`), if any.
    pub correlation_id: Option<String>,
    /// `NCMD` or `DCMD`.
    pub kind: String,
    /// The Sparkplug device (Modbus device name); `None` for node commands.
    pub device: Option<String>,
    /// The metric name (or `alias:<n>` when an unknown alias was used).
    pub metric: String,
    /// The requested value, as JSON.
    pub value: serde_json::Value,
    pub outcome: Outcome,
    /// Why a command was rejected or failed.
    pub reason: Option<String>,
}

/// A command result before [`CommandAudit::record`] numbers and timestamps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub source: CommandSource,
    pub correlation_id: Option<String>,
    pub kind: String,
    pub device: Option<String>,
    pub metric: String,
    pub value: serde_json::Value,
    pub outcome: Outcome,
    pub reason: Option<String>,
}

/// Counters over the life of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditCounters {
    pub total: u64,
    pub ok: u64,
    pub rejected: u64,
    pub failed: u64,
    pub from_mqtt: u64,
    pub from_kafka: u64,
    pub from_upstream: u64,
}

/// Recent command results, counters and a live feed. Share it as `Arc<CommandAudit>`.
pub struct CommandAudit {
    capacity: usize,
    recent: Mutex<VecDeque<CommandRecord>>,
    pending: Mutex<VecDeque<String>>,
    seq: AtomicU64,
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    from_mqtt: AtomicU64,
    from_kafka: AtomicU64,
    from_upstream: AtomicU64,
    tx: broadcast::Sender<CommandRecord>,
}

impl Default for CommandAudit {
    fn default() -> Self {
        CommandAudit::new(DEFAULT_CAPACITY)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl CommandAudit {
    /// Keeps the last `capacity` results (at least one).
    pub fn new(capacity: usize) -> CommandAudit {
        CommandAudit {
            capacity: capacity.max(1),
            recent: Mutex::new(VecDeque::new()),
            pending: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            from_mqtt: AtomicU64::new(0),
            from_kafka: AtomicU64::new(0),
            from_upstream: AtomicU64::new(0),
            tx: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }

    /// Announces that a command with this correlation id is about to be published on the
    /// local broker on behalf of the Kafka command topic (call before publishing).
    pub fn expect(&self, correlation_id: &str) {
        let mut p = lock(&self.pending);
        if p.len() >= PENDING_CAPACITY {
            p.pop_front();
        }
        p.push_back(correlation_id.to_string());
    }

    /// Where a command carrying `correlation_id` came from: [`CommandSource::Kafka`] if it
    /// was announced with [`CommandAudit::expect`] (and is forgotten now), else MQTT.
    pub fn claim(&self, correlation_id: Option<&str>) -> CommandSource {
        let Some(id) = correlation_id else {
            return CommandSource::Mqtt;
        };
        let mut p = lock(&self.pending);
        match p.iter().position(|x| x == id) {
            Some(i) => {
                p.remove(i);
                CommandSource::Kafka
            }
            None => CommandSource::Mqtt,
        }
    }

    /// Records a result: logged, counted, kept in the recent list, sent to subscribers.
    pub fn record(&self, r: CommandResult) -> CommandRecord {
        let rec = CommandRecord {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: now_ms(),
            source: r.source,
            correlation_id: r.correlation_id,
            kind: r.kind,
            device: r.device,
            metric: r.metric,
            value: r.value,
            outcome: r.outcome,
            reason: r.reason,
        };
        let counter = match rec.outcome {
            Outcome::Ok => &self.ok,
            Outcome::Rejected => &self.rejected,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match rec.source {
            CommandSource::Mqtt => &self.from_mqtt,
            CommandSource::Kafka => &self.from_kafka,
            CommandSource::Upstream => &self.from_upstream,
        }
        .fetch_add(1, Ordering::Relaxed);
        let device = rec.device.as_deref().unwrap_or("");
        let id = rec.correlation_id.as_deref().unwrap_or("");
        let reason = rec.reason.as_deref().unwrap_or("");
        match rec.outcome {
            Outcome::Ok => tracing::info!(
                source = ?rec.source, kind = %rec.kind, device, metric = %rec.metric,
                value = %rec.value, correlation_id = id, "command done"
            ),
            Outcome::Rejected | Outcome::Failed => tracing::warn!(
                source = ?rec.source, kind = %rec.kind, device, metric = %rec.metric,
                value = %rec.value, correlation_id = id, outcome = rec.outcome.as_str(),
                reason, "command not done"
            ),
        }
        {
            let mut recent = lock(&self.recent);
            if recent.len() >= self.capacity {
                recent.pop_front();
            }
            recent.push_back(rec.clone());
        }
        // No subscriber is fine.
        let _ = self.tx.send(rec.clone());
        rec
    }

    /// The most recent results, oldest first.
    pub fn recent(&self) -> Vec<CommandRecord> {
        lock(&self.recent).iter().cloned().collect()
    }

    pub fn counters(&self) -> AuditCounters {
        let ok = self.ok.load(Ordering::Relaxed);
        let rejected = self.rejected.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        AuditCounters {
            total: ok + rejected + failed,
            ok,
            rejected,
            failed,
            from_mqtt: self.from_mqtt.load(Ordering::Relaxed),
            from_kafka: self.from_kafka.load(Ordering::Relaxed),
            from_upstream: self.from_upstream.load(Ordering::Relaxed),
        }
    }

    /// Every result recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CommandRecord> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, id: Option<&str>, source: CommandSource) -> CommandResult {
        CommandResult {
            source,
            correlation_id: id.map(String::from),
            kind: "DCMD".into(),
            device: Some("press".into()),
            metric: "setpoint".into(),
            value: serde_json::json!(42),
            outcome,
            reason: (outcome != Outcome::Ok).then(|| "read-only".into()),
        }
    }

    #[test]
    fn keeps_recent_counts_and_broadcasts() {
        let audit = CommandAudit::new(2);
        let mut rx = audit.subscribe();
        audit.record(result(Outcome::Ok, None, CommandSource::Mqtt));
        audit.record(result(Outcome::Rejected, Some("a"), CommandSource::Kafka));
        let last = audit.record(result(Outcome::Failed, None, CommandSource::Mqtt));
        let recent = audit.recent();
        assert_eq!(recent.len(), 2, "bounded");
        assert_eq!(recent[0].outcome, Outcome::Rejected);
        assert_eq!(recent[1], last);
        assert_eq!(last.seq, 3);
        assert_eq!(
            audit.counters(),
            AuditCounters {
                total: 3,
                ok: 1,
                rejected: 1,
                failed: 1,
                from_mqtt: 2,
                from_kafka: 1,
                from_upstream: 0
            }
        );
        assert_eq!(rx.try_recv().expect("first").outcome, Outcome::Ok);
        assert_eq!(
            rx.try_recv().expect("second").correlation_id.as_deref(),
            Some("a")
        );
        let json = serde_json::to_value(&last).expect("json");
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["source"], "mqtt");
        assert_eq!(json["reason"], "read-only");
    }

    #[test]
    fn expected_ids_are_attributed_to_kafka_once() {
        let audit = CommandAudit::default();
        audit.expect("k1");
        assert_eq!(audit.claim(Some("other")), CommandSource::Mqtt);
        assert_eq!(audit.claim(None), CommandSource::Mqtt);
        assert_eq!(audit.claim(Some("k1")), CommandSource::Kafka);
        assert_eq!(audit.claim(Some("k1")), CommandSource::Mqtt, "claimed once");
        for i in 0..PENDING_CAPACITY + 10 {
            audit.expect(&format!("id{i}"));
        }
        assert_eq!(audit.claim(Some("id0")), CommandSource::Mqtt, "bounded");
        assert_eq!(
            audit.claim(Some(&format!("id{}", PENDING_CAPACITY + 9))),
            CommandSource::Kafka
        );
    }
}
