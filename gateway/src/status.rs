//! One status model for logs, `/metrics` (Prometheus text format), `/healthz` and `/api/status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edge_buffer::{Log, Stats};
use serde::Serialize;

use ironbridge_adapters::modbus::DeviceHealth;

use crate::clock::{lock, now_ms};
use crate::modbus::HealthBoard;
use crate::mqtt::MqttStats;
use crate::sparkplug::audit::CommandAudit;
use crate::sparkplug::node::{NodeStatus, SparkplugNodeReport};
use crate::uplink::{UplinkSnapshot, UplinkStatus};

/// What the supervisor knows about one component.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ComponentState {
    Starting,
    Running,
    Restarting {
        reason: String,
        attempt: u32,
        retry_in_ms: u64,
    },
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    #[serde(flatten)]
    pub state: ComponentState,
    pub restarts: u64,
}

/// Per-second rates over the last sampling interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    pub ingest_per_s: f64,
    pub forward_per_s: f64,
}

/// Shared by every component; cheap to clone.
#[derive(Clone)]
pub struct GatewayStatus {
    inner: Arc<Inner>,
}

struct Inner {
    gateway_id: String,
    started: Instant,
    log: Arc<Log>,
    mqtt: Arc<MqttStats>,
    uplink: Arc<UplinkStatus>,
    components: Mutex<BTreeMap<&'static str, ComponentStatus>>,
    modbus: HealthBoard,
    rates: Mutex<RateSampler>,
    sparkplug_ingest: Mutex<Option<Arc<crate::sparkplug::ingest::IngestStatus>>>,
    sparkplug_node: Mutex<Option<(Arc<NodeStatus>, Arc<CommandAudit>)>>,
}

/// The previous sample (time, appended, forwarded) and the rates derived from it.
#[derive(Default)]
struct RateSampler {
    last: Option<(Instant, u64, u64)>,
    rates: Rates,
}

/// Everything `/api/status` returns.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub gateway_id: String,
    pub version: &'static str,
    pub uptime_s: u64,
    pub healthy: bool,
    pub problems: Vec<String>,
    pub components: BTreeMap<&'static str, ComponentStatus>,
    pub buffer: BufferReport,
    pub uplink: UplinkSnapshot,
    pub mqtt: MqttReport,
    pub devices: Vec<DeviceHealth>,
    pub rates: Rates,
    /// Sparkplug ingest of third-party edge nodes (when running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparkplug_ingest: Option<crate::sparkplug::ingest::IngestSnapshot>,
    /// The Sparkplug edge node (when `sparkplug.enabled`) and its command audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparkplug_node: Option<SparkplugNodeReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BufferReport {
    pub bytes: u64,
    pub max_bytes: u64,
    pub fill_ratio: f64,
    pub records: u64,
    pub oldest_offset: u64,
    pub next_offset: u64,
    pub oldest_age_ms: Option<u64>,
    pub dropped_records: u64,
    pub corrupt_records: u64,
    pub full_rejections: u64,
    pub disk_full_errors: u64,
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MqttReport {
    pub connections: u64,
    pub publishes_received: u64,
    pub publishes_appended: u64,
    pub append_errors: u64,
    pub auth_failures: u64,
    pub protocol_errors: u64,
    /// Open sockets (before CONNECT included), sessions, subscriptions, retained messages and
    /// bytes, bytes queued for subscribers: what the limits bound.
    pub sockets: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained_messages: u64,
    pub retained_bytes: u64,
    pub queued_bytes: u64,
    /// Refusals at a limit, since start.
    pub refused: MqttRefusals,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct MqttRefusals {
    pub max_connections: u64,
    pub per_address: u64,
    pub auth_busy: u64,
    pub auth_throttled: u64,
    pub acl_denied: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub messages_dropped: u64,
    pub keep_alive_timeouts: u64,
}

impl GatewayStatus {
    pub fn new(
        gateway_id: String,
        log: Arc<Log>,
        mqtt: Arc<MqttStats>,
        uplink: Arc<UplinkStatus>,
    ) -> Self {
        GatewayStatus {
            inner: Arc::new(Inner {
                gateway_id,
                started: Instant::now(),
                log,
                mqtt,
                uplink,
                components: Mutex::new(BTreeMap::new()),
                modbus: HealthBoard::default(),
                rates: Mutex::new(RateSampler::default()),
                sparkplug_ingest: Mutex::new(None),
                sparkplug_node: Mutex::new(None),
            }),
        }
    }

    pub fn set_component(&self, name: &'static str, state: ComponentState) {
        let mut c = lock(&self.inner.components);
        let entry = c.entry(name).or_insert(ComponentStatus {
            state: ComponentState::Starting,
            restarts: 0,
        });
        if matches!(state, ComponentState::Restarting { .. }) {
            entry.restarts += 1;
        }
        entry.state = state;
    }

    /// Shows the Sparkplug ingest counters and node view in the report and metrics.
    pub fn set_sparkplug_ingest(&self, s: Arc<crate::sparkplug::ingest::IngestStatus>) {
        *lock(&self.inner.sparkplug_ingest) = Some(s);
    }

    /// Shows the Sparkplug edge node and its command audit in `/api/status`.
    /// The running edge node's status (`None`: not running, e.g. disabled in the config).
    pub fn set_sparkplug_node(&self, node: Option<(Arc<NodeStatus>, Arc<CommandAudit>)>) {
        *lock(&self.inner.sparkplug_node) = node;
    }

    /// Where the Modbus component posts per-device health.
    pub fn modbus_health(&self) -> HealthBoard {
        self.inner.modbus.clone()
    }

    pub fn uplink(&self) -> &Arc<UplinkStatus> {
        &self.inner.uplink
    }

    pub fn buffer_stats(&self) -> Stats {
        self.inner.log.stats()
    }

    /// Updates ingest/forward rates; called periodically by the daemon's sampler.
    pub fn sample_rates(&self) {
        let appended = self.inner.log.stats().appended_records;
        let forwarded = self.inner.uplink.snapshot().forwarded_records;
        let now = Instant::now();
        let mut r = lock(&self.inner.rates);
        if let Some((t, a, f)) = r.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 {
                r.rates = Rates {
                    ingest_per_s: appended.saturating_sub(a) as f64 / dt,
                    forward_per_s: forwarded.saturating_sub(f) as f64 / dt,
                };
            }
        }
        r.last = Some((now, appended, forwarded));
    }

    pub fn report(&self) -> StatusReport {
        let s = self.inner.log.stats();
        let uplink = self.inner.uplink.snapshot();
        let m = self.inner.mqtt.snapshot();
        let components = lock(&self.inner.components).clone();
        let mut problems = Vec::new();
        if let Some(f) = &s.failed {
            problems.push(format!("buffer failed: {f}"));
        }
        for (name, c) in &components {
            if let ComponentState::Restarting { reason, .. } = &c.state {
                problems.push(format!("{name} restarting: {reason}"));
            }
        }
        let healthy = problems.is_empty();
        if !uplink.is_healthy() {
            problems.push(format!(
                "uplink: {}",
                serde_json::to_string(&uplink.state).unwrap_or_default()
            ));
        }
        if s.dropped_records > 0 {
            problems.push(format!(
                "buffer full: {} records dropped since start",
                s.dropped_records
            ));
        }
        StatusReport {
            gateway_id: self.inner.gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.inner.started.elapsed().as_secs(),
            healthy,
            problems,
            components,
            buffer: BufferReport {
                bytes: s.bytes_on_disk,
                max_bytes: s.max_bytes,
                fill_ratio: s.bytes_on_disk as f64 / s.max_bytes.max(1) as f64,
                records: s.records(),
                oldest_offset: s.oldest_offset,
                next_offset: s.next_offset,
                oldest_age_ms: s.oldest_timestamp_ms.map(|t| (now_ms() - t).max(0) as u64),
                dropped_records: s.dropped_records,
                corrupt_records: s.corrupt_records,
                full_rejections: s.full_rejections,
                disk_full_errors: s.disk_full_errors,
                failed: s.failed.clone(),
            },
            uplink,
            mqtt: MqttReport {
                connections: m.connections_current,
                publishes_received: m.publishes_received,
                publishes_appended: m.publishes_appended,
                append_errors: m.append_errors,
                auth_failures: m.auth_failures,
                protocol_errors: m.protocol_errors,
                sockets: m.sockets_current,
                sessions: m.sessions,
                subscriptions: m.subscriptions,
                retained_messages: m.retained_messages,
                retained_bytes: m.retained_bytes,
                queued_bytes: m.queued_bytes,
                refused: MqttRefusals {
                    max_connections: m.refused_max_connections,
                    per_address: m.refused_per_address,
                    auth_busy: m.auth_busy,
                    auth_throttled: m.auth_throttled,
                    acl_denied: m.acl_denied,
                    subscriptions: m.subscriptions_rejected,
                    retained: m.retained_rejected,
                    messages_dropped: m.messages_dropped,
                    keep_alive_timeouts: m.keep_alive_timeouts,
                },
            },
            devices: lock(&self.inner.modbus).clone(),
            rates: lock(&self.inner.rates).rates,
            sparkplug_ingest: lock(&self.inner.sparkplug_ingest)
                .as_ref()
                .map(|s| s.snapshot()),
            sparkplug_node: lock(&self.inner.sparkplug_node)
                .as_ref()
                .map(|(n, a)| SparkplugNodeReport::new(n, a)),
        }
    }

    /// One line for systemd's STATUS and the logs: uplink state and backlog.
    pub fn summary_line(&self) -> String {
        let s = self.inner.log.stats();
        let u = self.inner.uplink.snapshot();
        let state = serde_json::to_value(&u.state)
            .ok()
            .and_then(|v| {
                let st = v.get("state")?.as_str()?.to_string();
                Some(match v.get("reason").and_then(|r| r.as_str()) {
                    Some(r) => format!("{st} ({r})"),
                    None => st,
                })
            })
            .unwrap_or_default();
        format!(
            "uplink {state}; backlog {} records, {:.1} MB of {:.0} MB",
            u.lag_records,
            s.bytes_on_disk as f64 / 1e6,
            s.max_bytes as f64 / 1e6
        )
    }

    /// Renders the Prometheus text exposition format.
    pub fn metrics(&self) -> String {
        let s = self.inner.log.stats();
        let u = self.inner.uplink.snapshot();
        let m = self.inner.mqtt.snapshot();
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(
                out,
                "# HELP ironbridge_{name} {help}\n# TYPE ironbridge_{name} {kind}"
            );
            for (labels, v) in samples {
                let _ = writeln!(out, "ironbridge_{name}{labels} {v}");
            }
        };
        let one = |v: u64| [("", v as f64)];
        metric("up", "gauge", "1 while the daemon runs.", &[("", 1.0)]);
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            &one(self.inner.started.elapsed().as_secs()),
        );
        metric(
            "buffer_bytes",
            "gauge",
            "Bytes of buffer segments on disk.",
            &one(s.bytes_on_disk),
        );
        metric(
            "buffer_max_bytes",
            "gauge",
            "Configured buffer size limit.",
            &one(s.max_bytes),
        );
        metric(
            "buffer_records",
            "gauge",
            "Records held in the buffer.",
            &one(s.records()),
        );
        metric(
            "buffer_next_offset",
            "gauge",
            "Offset the next accepted record gets.",
            &one(s.next_offset),
        );
        let age = s
            .oldest_timestamp_ms
            .map(|t| (now_ms() - t).max(0) as f64 / 1e3)
            .unwrap_or(0.0);
        metric(
            "buffer_oldest_age_seconds",
            "gauge",
            "Age of the oldest buffered record.",
            &[("", age)],
        );
        metric(
            "buffer_appended_records_total",
            "counter",
            "Records accepted into the buffer.",
            &one(s.appended_records),
        );
        metric(
            "buffer_dropped_records_total",
            "counter",
            "Records dropped unread because the buffer was full.",
            &one(s.dropped_records),
        );
        metric(
            "buffer_corrupt_records_total",
            "counter",
            "Corrupt records skipped.",
            &one(s.corrupt_records),
        );
        metric(
            "buffer_full_rejections_total",
            "counter",
            "Appends refused because the buffer was full (backpressure).",
            &one(s.full_rejections),
        );
        metric(
            "buffer_disk_full_errors_total",
            "counter",
            "Appends that failed because the file system was full.",
            &one(s.disk_full_errors),
        );
        metric(
            "buffer_fsyncs_total",
            "counter",
            "fdatasync calls.",
            &one(s.fsyncs),
        );
        metric(
            "buffer_fsync_seconds_total",
            "counter",
            "Time spent in fdatasync.",
            &[("", s.fsync_total_micros as f64 / 1e6)],
        );
        metric(
            "buffer_fsync_max_seconds",
            "gauge",
            "Longest fdatasync since start.",
            &[("", s.fsync_max_micros as f64 / 1e6)],
        );
        metric(
            "buffer_failed",
            "gauge",
            "1 when the buffer refuses appends after a failed fdatasync.",
            &one(s.failed.is_some() as u64),
        );
        metric(
            "mqtt_connections",
            "gauge",
            "Connected MQTT clients.",
            &one(m.connections_current),
        );
        metric(
            "mqtt_connections_total",
            "counter",
            "MQTT connections accepted.",
            &one(m.connections_total),
        );
        metric(
            "mqtt_auth_failures_total",
            "counter",
            "MQTT CONNECTs refused for credentials.",
            &one(m.auth_failures),
        );
        metric(
            "mqtt_unacked_limit_waits_total",
            "counter",
            "Times reading from an MQTT client paused at max_unacked_per_client.",
            &one(m.unacked_limit_waits),
        );
        metric(
            "mqtt_protocol_errors_total",
            "counter",
            "Malformed MQTT packets (connection closed, daemon unaffected).",
            &one(m.protocol_errors),
        );
        metric(
            "mqtt_publishes_received_total",
            "counter",
            "MQTT publishes received.",
            &one(m.publishes_received),
        );
        metric(
            "mqtt_publishes_appended_total",
            "counter",
            "MQTT publishes durably appended to the buffer.",
            &one(m.publishes_appended),
        );
        metric(
            "mqtt_append_errors_total",
            "counter",
            "MQTT publishes the buffer refused.",
            &one(m.append_errors),
        );
        for (name, kind, help, v) in [
            (
                "mqtt_sockets",
                "gauge",
                "Open MQTT sockets, before CONNECT included.",
                m.sockets_current,
            ),
            (
                "mqtt_sessions",
                "gauge",
                "MQTT sessions held (connected or away, in-process subscribers included).",
                m.sessions,
            ),
            (
                "mqtt_subscriptions",
                "gauge",
                "MQTT subscriptions held.",
                m.subscriptions,
            ),
            (
                "mqtt_retained_messages",
                "gauge",
                "Retained MQTT messages held.",
                m.retained_messages,
            ),
            (
                "mqtt_retained_bytes",
                "gauge",
                "Bytes of retained MQTT messages held.",
                m.retained_bytes,
            ),
            (
                "mqtt_queued_bytes",
                "gauge",
                "Bytes queued for MQTT subscribers.",
                m.queued_bytes,
            ),
            (
                "mqtt_refused_max_connections_total",
                "counter",
                "MQTT sockets refused at mqtt.max_connections.",
                m.refused_max_connections,
            ),
            (
                "mqtt_refused_per_address_total",
                "counter",
                "MQTT sockets refused at mqtt.max_connections_per_address.",
                m.refused_per_address,
            ),
            (
                "mqtt_connections_rejected_total",
                "counter",
                "MQTT CONNECTs refused (client id, protocol version, session limit).",
                m.connections_rejected,
            ),
            (
                "mqtt_auth_busy_total",
                "counter",
                "MQTT CONNECTs refused server busy (password-check queue full or slow).",
                m.auth_busy,
            ),
            (
                "mqtt_auth_throttled_total",
                "counter",
                "MQTT CONNECTs refused for repeated failed logins.",
                m.auth_throttled,
            ),
            (
                "mqtt_acl_denied_total",
                "counter",
                "MQTT publishes and subscriptions refused by the topic rules.",
                m.acl_denied,
            ),
            (
                "mqtt_keep_alive_timeouts_total",
                "counter",
                "MQTT connections closed for a silent client.",
                m.keep_alive_timeouts,
            ),
            (
                "mqtt_session_takeovers_total",
                "counter",
                "MQTT sessions taken over by a new connection with the same client id.",
                m.session_takeovers,
            ),
            (
                "mqtt_sessions_expired_total",
                "counter",
                "MQTT sessions expired while their client was away.",
                m.sessions_expired,
            ),
            (
                "mqtt_messages_delivered_total",
                "counter",
                "MQTT messages delivered to subscribers.",
                m.messages_delivered,
            ),
            (
                "mqtt_messages_dropped_total",
                "counter",
                "MQTT messages dropped for a subscriber whose queue was full.",
                m.messages_dropped,
            ),
            (
                "mqtt_messages_expired_total",
                "counter",
                "MQTT messages expired before delivery.",
                m.messages_expired,
            ),
            (
                "mqtt_messages_oversize_total",
                "counter",
                "MQTT messages not sent: larger than the client's maximum packet size.",
                m.messages_oversize,
            ),
            (
                "mqtt_retained_rejected_total",
                "counter",
                "Retained MQTT messages refused at the retained limits.",
                m.retained_rejected,
            ),
            (
                "mqtt_subscriptions_rejected_total",
                "counter",
                "MQTT subscriptions refused at max_subscriptions_per_client.",
                m.subscriptions_rejected,
            ),
            (
                "mqtt_wills_total",
                "counter",
                "MQTT last-will messages published.",
                m.wills_recorded,
            ),
        ] {
            metric(name, kind, help, &one(v));
        }
        let per_user = |f: fn(&crate::mqtt::UserCounters) -> u64| -> Vec<(String, f64)> {
            m.per_user
                .iter()
                .map(|(u, c)| (format!("{{user=\"{}\"}}", prom_escape(u)), f(c) as f64))
                .collect()
        };
        for (name, help, samples) in [
            (
                "mqtt_user_auth_failures_total",
                "Failed MQTT logins per account.",
                per_user(|c| c.auth_failures),
            ),
            (
                "mqtt_user_acl_denied_total",
                "MQTT topic-rule refusals per account.",
                per_user(|c| c.acl_denied),
            ),
        ] {
            let samples: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(name, "counter", help, &samples);
        }
        let state = |st: &str| {
            let cur = serde_json::to_value(&u.state)
                .ok()
                .and_then(|v| v.get("state").and_then(|s| s.as_str().map(str::to_string)))
                .unwrap_or_default();
            (cur == st) as u64 as f64
        };
        let states = [
            "disconnected",
            "connecting",
            "connected",
            "backing_off",
            "error",
        ];
        let labels: Vec<String> = states
            .iter()
            .map(|s| format!("{{state=\"{s}\"}}"))
            .collect();
        let samples: Vec<(&str, f64)> = states
            .iter()
            .zip(&labels)
            .map(|(s, l)| (l.as_str(), state(s)))
            .collect();
        metric(
            "uplink_state",
            "gauge",
            "1 for the uplink's current state.",
            &samples,
        );
        metric(
            "uplink_forwarded_records_total",
            "counter",
            "Records acknowledged by Kafka.",
            &one(u.forwarded_records),
        );
        metric(
            "uplink_forwarded_bytes_total",
            "counter",
            "Bytes acknowledged by Kafka.",
            &one(u.forwarded_bytes),
        );
        metric(
            "uplink_retries_total",
            "counter",
            "Produce retries.",
            &one(u.retries),
        );
        metric(
            "uplink_request_timeouts_total",
            "counter",
            "Produce requests that did not finish within request_timeout_ms.",
            &one(u.request_timeouts),
        );
        metric(
            "uplink_duplicates_suppressed_total",
            "counter",
            "Records sent again that Kafka recognised as already written (idempotent producer).",
            &one(u.duplicates_suppressed),
        );
        metric(
            "uplink_unproven_resends_total",
            "counter",
            "Records sent again without proof Kafka had not written them (may be duplicated).",
            &one(u.unproven_resends),
        );
        metric(
            "uplink_resume_skipped_total",
            "counter",
            "Records not sent again because the partition's tail showed they were already there.",
            &one(u.resume_skipped),
        );
        metric(
            "uplink_producer_resets_total",
            "counter",
            "New idempotent producer identities after Kafka refused a sequence or producer id.",
            &one(u.producer_resets),
        );
        metric(
            "uplink_request_limit_bytes",
            "gauge",
            "Current produce request size limit (shrinks after timeouts).",
            &one(u.request_limit_bytes),
        );
        metric(
            "uplink_lag_records",
            "gauge",
            "Buffered records not yet acknowledged by Kafka.",
            &one(u.lag_records),
        );
        metric(
            "uplink_lag_seconds",
            "gauge",
            "Age of the oldest record not yet acknowledged by Kafka.",
            &[("", u.lag_oldest_age_ms.unwrap_or(0) as f64 / 1e3)],
        );
        metric(
            "uplink_dropped_unmatched_total",
            "counter",
            "Records matching no route, dropped by config.",
            &one(u.dropped_unmatched),
        );
        metric(
            "uplink_dead_lettered_total",
            "counter",
            "Records Kafka refused for good (too large, unknown topic).",
            &one(u.dead_lettered),
        );
        let routes: Vec<(String, f64)> = u
            .routes
            .iter()
            .chain(std::iter::once(&u.default_route))
            .chain(u.retained_route.iter())
            .map(|r| {
                (
                    format!(
                        "{{route=\"{}\",topic=\"{}\"}}",
                        escape(&r.name),
                        escape(&r.topic)
                    ),
                    r.records as f64,
                )
            })
            .collect();
        let samples: Vec<(&str, f64)> = routes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "uplink_route_records_total",
            "counter",
            "Records forwarded per route.",
            &samples,
        );
        let devices = lock(&self.inner.modbus).clone();
        let per_device = |f: &dyn Fn(&DeviceHealth) -> f64| -> Vec<(String, f64)> {
            devices
                .iter()
                .map(|d| (format!("{{device=\"{}\"}}", escape(&d.device)), f(d)))
                .collect()
        };
        type DeviceMetric<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(&DeviceHealth) -> f64);
        let device_metrics: [DeviceMetric; 6] = [
            (
                "modbus_device_up",
                "gauge",
                "1 while the device's last poll succeeded.",
                &|d| matches!(d.state, ironbridge_adapters::modbus::LinkState::Ok) as u8 as f64,
            ),
            ("modbus_polls_total", "counter", "Poll cycles.", &|d| {
                d.polls as f64
            }),
            (
                "modbus_failed_polls_total",
                "counter",
                "Poll cycles that failed.",
                &|d| d.failed_polls as f64,
            ),
            (
                "modbus_timeouts_total",
                "counter",
                "Requests that timed out.",
                &|d| d.timeouts as f64,
            ),
            (
                "modbus_exceptions_total",
                "counter",
                "Modbus exception responses.",
                &|d| d.exceptions as f64,
            ),
            (
                "modbus_rtt_seconds",
                "gauge",
                "Mean request round-trip time.",
                &|d| d.rtt_avg_us as f64 / 1e6,
            ),
        ];
        for (name, kind, help, f) in device_metrics {
            let rows = per_device(f);
            let samples: Vec<(&str, f64)> = rows.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(name, kind, help, &samples);
        }
        let comps = lock(&self.inner.components).clone();
        let labels: Vec<(String, f64)> = comps
            .iter()
            .map(|(n, c)| (format!("{{component=\"{n}\"}}"), c.restarts as f64))
            .collect();
        let samples: Vec<(&str, f64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "component_restarts_total",
            "counter",
            "Restarts of supervised components.",
            &samples,
        );
        if let Some(sp) = lock(&self.inner.sparkplug_ingest).as_ref() {
            sp.render_metrics(&mut out);
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn prom_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
