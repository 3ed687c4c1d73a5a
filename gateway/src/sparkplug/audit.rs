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

use crate::clock::{lock, now_ms_u64 as now_ms};
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

/// Who asked for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub source: CommandSource,
    /// The MQTT user name (`client:<client id>` when anonymous), the Kafka record
    /// (`kafka:<topic>/<partition>@<offset>`), the upstream server; `None` when unknown.
    pub actor: Option<String>,
    /// The MQTT client's address.
    pub peer: Option<String>,
    /// The payload's `uuid` (Kafka: the command record's `id`), if any.
    pub correlation_id: Option<String>,
}

impl Requester {
    pub fn new(
        source: CommandSource,
        actor: Option<String>,
        correlation_id: Option<String>,
    ) -> Self {
        Requester {
            source,
            actor,
            peer: None,
            correlation_id,
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
    /// Who sent it (see [`Requester::actor`]).
    pub actor: Option<String>,
    /// The MQTT client's address.
    pub peer: Option<String>,
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
    pub from: Requester,
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
    /// Kafka commands announced and not yet seen: (correlation id, actor).
    pending: Mutex<VecDeque<(String, String)>>,
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
    /// local broker on behalf of the Kafka command topic's record `actor` (call before
    /// publishing).
    pub fn expect(&self, correlation_id: &str, actor: String) {
        let mut p = lock(&self.pending);
        if p.len() >= PENDING_CAPACITY {
            p.pop_front();
        }
        p.push_back((correlation_id.to_string(), actor));
    }

    /// Who sent a command carrying `correlation_id`, published by `publisher` (`None`: from
    /// inside the gateway). A network client is MQTT, named as the broker authenticated it,
    /// whatever its payload says; an in-process publish announced with
    /// [`CommandAudit::expect`] is Kafka (and is forgotten now).
    pub fn claim(
        &self,
        correlation_id: Option<&str>,
        publisher: Option<&ironbridge_broker::Publisher>,
    ) -> Requester {
        let correlation = correlation_id.map(String::from);
        if let Some(p) = publisher {
            return Requester {
                source: CommandSource::Mqtt,
                actor: Some(p.actor()),
                peer: Some(p.peer.ip().to_string()),
                correlation_id: correlation,
            };
        }
        let mut pending = lock(&self.pending);
        let announced = correlation_id
            .and_then(|id| pending.iter().position(|(x, _)| x == id))
            .and_then(|i| pending.remove(i));
        match announced {
            Some((_, actor)) => Requester::new(CommandSource::Kafka, Some(actor), correlation),
            None => Requester::new(CommandSource::Mqtt, None, correlation),
        }
    }

    /// Records a result: logged, counted, kept in the recent list, sent to subscribers.
    pub fn record(&self, r: CommandResult) -> CommandRecord {
        let rec = CommandRecord {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: now_ms(),
            source: r.from.source,
            actor: r.from.actor,
            peer: r.from.peer,
            correlation_id: r.from.correlation_id,
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
        let actor = rec.actor.as_deref().unwrap_or("-");
        let reason = rec.reason.as_deref().unwrap_or("");
        match rec.outcome {
            Outcome::Ok => tracing::info!(
                source = ?rec.source, actor, kind = %rec.kind, device, metric = %rec.metric,
                value = %rec.value, correlation_id = id, "command done"
            ),
            Outcome::Rejected | Outcome::Failed => tracing::warn!(
                source = ?rec.source, actor, kind = %rec.kind, device, metric = %rec.metric,
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
            from: Requester::new(source, None, id.map(String::from)),
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
        let source = |r: Requester| r.source;
        audit.expect("k1", "kafka:cmds/0@7".into());
        assert_eq!(
            source(audit.claim(Some("other"), None)),
            CommandSource::Mqtt
        );
        assert_eq!(source(audit.claim(None, None)), CommandSource::Mqtt);
        let k = audit.claim(Some("k1"), None);
        assert_eq!(k.source, CommandSource::Kafka);
        assert_eq!(k.actor.as_deref(), Some("kafka:cmds/0@7"));
        assert_eq!(
            source(audit.claim(Some("k1"), None)),
            CommandSource::Mqtt,
            "claimed once"
        );
        for i in 0..PENDING_CAPACITY + 10 {
            audit.expect(&format!("id{i}"), String::new());
        }
        assert_eq!(
            source(audit.claim(Some("id0"), None)),
            CommandSource::Mqtt,
            "bounded"
        );
        assert_eq!(
            source(audit.claim(Some(&format!("id{}", PENDING_CAPACITY + 9)), None)),
            CommandSource::Kafka
        );
    }

    #[test]
    fn a_network_client_is_named_as_authenticated_and_cannot_pass_for_kafka() {
        let audit = CommandAudit::default();
        audit.expect("k2", "kafka:cmds/0@8".into());
        let plc = ironbridge_broker::Publisher {
            client_id: "scada-1".into(),
            username: Some("operator7".into()),
            peer: "127.0.0.9:40000".parse().expect("addr"),
        };
        // The payload carries a pending Kafka id: still MQTT, still operator7.
        let r = audit.claim(Some("k2"), Some(&plc));
        assert_eq!(r.source, CommandSource::Mqtt);
        assert_eq!(r.actor.as_deref(), Some("operator7"));
        assert_eq!(r.peer.as_deref(), Some("127.0.0.9"));
        let anonymous = ironbridge_broker::Publisher {
            username: None,
            ..plc
        };
        let r = audit.claim(None, Some(&anonymous));
        assert_eq!(r.actor.as_deref(), Some("client:scada-1"));
        let rec = audit.record(CommandResult {
            from: r,
            ..result(Outcome::Ok, None, CommandSource::Mqtt)
        });
        assert_eq!(rec.actor.as_deref(), Some("client:scada-1"));
        // The Kafka command is still pending for the real in-process publish.
        assert_eq!(audit.claim(Some("k2"), None).source, CommandSource::Kafka);
    }
}
