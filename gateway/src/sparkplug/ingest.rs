//! Ingest of Sparkplug B from third-party edge nodes publishing to the embedded broker.
//!
//! Subscribes to `spBv1.0/#` (and `spAv1.0/#`, only to count it as the wrong namespace),
//! decodes every payload within the configured limits, keeps the latest births in sled (tree
//! `sparkplug.ingest`) to resolve aliases, tracks `seq` per edge node and asks a node for a
//! rebirth (NCMD `Node Control/Rebirth` = true) when its `seq` jumps, when it sends data or a
//! DBIRTH without a known NBIRTH, or data with an alias no birth defined. Requests are rate
//! limited per node (`rebirth_min_interval_ms`) and never sent to the gateway's own node.
//!
//! Nothing here can stop the gateway: malformed payloads, bad topics and oversize payloads are
//! counted ([`IngestStatus`]) and logged at most once per 10 s per kind.
//!
//! The uplink does not depend on this component: it keeps its own birth history from the
//! buffer (see `uplink::sparkplug`), because it must follow log order, not arrival order.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::births::{self, Birth, BirthCache, CacheLimits, MetricDef};
use super::config::IngestConfig;
use super::payload::{Limits, Metric, MetricValue, Payload, decode_payload};
use super::topic::{MessageType, Topic, TopicError};
use crate::event::Event;
use crate::mqtt::{BrokerHandle, MqttError};
use crate::state::StateStore;

/// Nodes shown in the per-node view; further nodes are counted but not listed.
pub const MAX_NODES: usize = 1024;
/// Devices listed per node.
const MAX_DEVICES: usize = 256;
/// At most one log line per kind of problem in this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("sparkplug ingest: {0}")]
    Mqtt(#[from] MqttError),
    #[error("sparkplug ingest: state store: {0}")]
    State(#[from] crate::state::StateError),
}

/// Counters and the per-node view, shared with `/api/status` and `/metrics`.
#[derive(Default)]
pub struct IngestStatus {
    /// Subscribed on the embedded broker (messages published from now on are seen).
    pub subscribed: std::sync::atomic::AtomicBool,
    pub messages: AtomicU64,
    pub births: AtomicU64,
    pub deaths: AtomicU64,
    pub data: AtomicU64,
    pub commands_seen: AtomicU64,
    pub malformed: AtomicU64,
    pub oversize: AtomicU64,
    pub wrong_namespace: AtomicU64,
    pub bad_topic: AtomicU64,
    pub seq_gaps: AtomicU64,
    pub missing_births: AtomicU64,
    pub unknown_aliases: AtomicU64,
    pub rebirth_requests: AtomicU64,
    pub rebirths_suppressed: AtomicU64,
    pub cache_evictions: AtomicU64,
    nodes: Mutex<BTreeMap<String, NodeView>>,
}

/// One edge node as the ingest sees it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeView {
    pub group_id: String,
    pub edge_node_id: String,
    pub online: bool,
    pub bd_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Metrics in the node's birth.
    pub metrics: usize,
    pub last_birth_ms: Option<u64>,
    pub last_message_ms: u64,
    pub seq_gaps: u64,
    pub rebirth_requests: u64,
    pub devices: BTreeMap<String, DeviceView>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DeviceView {
    pub online: bool,
    pub metrics: usize,
    pub last_message_ms: u64,
}

/// A copy of the counters and the node list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestSnapshot {
    pub subscribed: bool,
    pub messages: u64,
    pub births: u64,
    pub deaths: u64,
    pub data: u64,
    pub commands_seen: u64,
    pub malformed: u64,
    pub oversize: u64,
    pub wrong_namespace: u64,
    pub bad_topic: u64,
    pub seq_gaps: u64,
    pub missing_births: u64,
    pub unknown_aliases: u64,
    pub rebirth_requests: u64,
    pub rebirths_suppressed: u64,
    pub cache_evictions: u64,
    pub nodes: Vec<NodeView>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl IngestStatus {
    pub fn new() -> Arc<IngestStatus> {
        Arc::new(IngestStatus::default())
    }

    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            subscribed: self.subscribed.load(Ordering::Relaxed),
            messages: get(&self.messages),
            births: get(&self.births),
            deaths: get(&self.deaths),
            data: get(&self.data),
            commands_seen: get(&self.commands_seen),
            malformed: get(&self.malformed),
            oversize: get(&self.oversize),
            wrong_namespace: get(&self.wrong_namespace),
            bad_topic: get(&self.bad_topic),
            seq_gaps: get(&self.seq_gaps),
            missing_births: get(&self.missing_births),
            unknown_aliases: get(&self.unknown_aliases),
            rebirth_requests: get(&self.rebirth_requests),
            rebirths_suppressed: get(&self.rebirths_suppressed),
            cache_evictions: get(&self.cache_evictions),
            nodes: lock(&self.nodes).values().cloned().collect(),
        }
    }

    /// Prometheus text lines (`ironbridge_sparkplug_ingest_*`).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.snapshot();
        let counters: [(&str, u64, &str); 15] = [
            (
                "messages_total",
                s.messages,
                "Sparkplug messages seen on the embedded broker",
            ),
            ("births_total", s.births, "NBIRTH and DBIRTH messages"),
            ("deaths_total", s.deaths, "NDEATH and DDEATH messages"),
            ("data_total", s.data, "NDATA and DDATA messages"),
            (
                "commands_total",
                s.commands_seen,
                "NCMD and DCMD messages seen",
            ),
            (
                "malformed_total",
                s.malformed,
                "payloads that are not valid Sparkplug B",
            ),
            (
                "oversize_total",
                s.oversize,
                "payloads over the size or metric-count limit",
            ),
            (
                "wrong_namespace_total",
                s.wrong_namespace,
                "messages in another namespace (spAv1.0)",
            ),
            (
                "bad_topic_total",
                s.bad_topic,
                "spBv1.0 topics that are not valid Sparkplug topics",
            ),
            ("seq_gaps_total", s.seq_gaps, "seq numbers out of order"),
            (
                "missing_births_total",
                s.missing_births,
                "messages from nodes or devices without a known birth",
            ),
            (
                "unknown_aliases_total",
                s.unknown_aliases,
                "metrics with an alias no birth defined",
            ),
            (
                "rebirth_requests_total",
                s.rebirth_requests,
                "NCMD rebirth requests sent",
            ),
            (
                "rebirths_suppressed_total",
                s.rebirths_suppressed,
                "rebirth requests withheld by the rate limit",
            ),
            (
                "cache_evictions_total",
                s.cache_evictions,
                "births evicted from the bounded cache",
            ),
        ];
        for (name, v, help) in counters {
            let _ = writeln!(out, "# HELP ironbridge_sparkplug_ingest_{name} {help}");
            let _ = writeln!(out, "# TYPE ironbridge_sparkplug_ingest_{name} counter");
            let _ = writeln!(out, "ironbridge_sparkplug_ingest_{name} {v}");
        }
        let online = s.nodes.iter().filter(|n| n.online).count();
        let _ = writeln!(
            out,
            "# HELP ironbridge_sparkplug_ingest_nodes_online Edge nodes with a live birth"
        );
        let _ = writeln!(out, "# TYPE ironbridge_sparkplug_ingest_nodes_online gauge");
        let _ = writeln!(out, "ironbridge_sparkplug_ingest_nodes_online {online}");
    }

    fn node<R>(&self, group: &str, node: &str, f: impl FnOnce(&mut NodeView) -> R) -> Option<R> {
        let mut nodes = lock(&self.nodes);
        let key = births::key(group, node, None);
        if !nodes.contains_key(&key) && nodes.len() >= MAX_NODES {
            return None;
        }
        let v = nodes.entry(key).or_insert_with(|| NodeView {
            group_id: group.to_string(),
            edge_node_id: node.to_string(),
            ..NodeView::default()
        });
        v.last_message_ms = now_ms();
        Some(f(v))
    }
}

/// Logs each kind of problem at most once per [`LOG_EVERY`], with how many were suppressed.
#[derive(Default)]
pub(crate) struct LogLimiter {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    /// Whether to log now, and how many of this kind were suppressed since the last line.
    pub(crate) fn allow(&mut self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(kind) {
            Some((t, n)) if now.duration_since(*t) < LOG_EVERY => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let s = *n;
                *t = now;
                *n = 0;
                Some(s)
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// The ingest state machine, separate from the broker so it can be driven directly in tests.
pub struct Ingest {
    cfg: IngestConfig,
    limits: Limits,
    own: (String, String),
    status: Arc<IngestStatus>,
    cache: BirthCache,
    /// Arrival counter, the "position" of births in the cache.
    position: u64,
    seqs: HashMap<String, u64>,
    last_rebirth: HashMap<String, Instant>,
    log: LogLimiter,
}

/// What the ingest wants published after a message.
#[derive(Debug, Clone, PartialEq)]
pub struct RebirthRequest {
    pub group_id: String,
    pub edge_node_id: String,
    pub reason: String,
}

impl RebirthRequest {
    /// The NCMD `Node Control/Rebirth` = true.
    pub fn event(&self) -> Event {
        let payload = Payload::new(now_ms(), None).with_metric(Metric::new(
            "Node Control/Rebirth",
            MetricValue::Boolean(true),
        ));
        Event {
            topic: Topic::node(&self.group_id, MessageType::NCmd, &self.edge_node_id).to_string(),
            // Encoding a boolean metric cannot fail.
            payload: Bytes::from(payload.encode().unwrap_or_default()),
            qos: 0,
            client_id: Some("ironbridge-sparkplug-ingest".into()),
            ..Event::default()
        }
    }
}

impl Ingest {
    /// `own` is the gateway's own (group id, edge node id): never asked for a rebirth.
    pub fn new(
        cfg: IngestConfig,
        own: (String, String),
        state: Option<&StateStore>,
        status: Arc<IngestStatus>,
    ) -> Result<Ingest, IngestError> {
        let tree = match state {
            Some(s) => Some(s.tree("sparkplug.ingest")?),
            None => None,
        };
        let limits = Limits {
            max_metrics: cfg.max_metrics.max(1),
            ..Limits::default()
        };
        let cache = BirthCache::open(
            tree,
            CacheLimits {
                history: 1,
                ..CacheLimits::default()
            },
        );
        Ok(Ingest {
            cfg,
            limits,
            own,
            status,
            cache,
            position: 0,
            seqs: HashMap::new(),
            last_rebirth: HashMap::new(),
            log: LogLimiter::default(),
        })
    }

    /// The latest birth definition of a metric (e.g. the datatype of a tag of the gateway's own
    /// devices, for commands).
    pub fn metric_def(
        &self,
        group: &str,
        node: &str,
        device: Option<&str>,
        name: &str,
    ) -> Option<MetricDef> {
        self.cache
            .latest(&births::key(group, node, device))
            .and_then(|b| b.by_name(name).cloned())
    }

    fn warn(&mut self, kind: &'static str, topic: &str, what: &str) {
        if let Some(suppressed) = self.log.allow(kind) {
            tracing::warn!(kind, topic, suppressed, "sparkplug ingest: {what}");
        }
    }

    /// Handles one message; returns a rebirth request to publish, if any.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Option<RebirthRequest> {
        inc(&self.status.messages);
        let t = match Topic::parse(topic) {
            Ok(t) => t,
            Err(TopicError::Namespace) => {
                inc(&self.status.wrong_namespace);
                self.warn("wrong_namespace", topic, "not in the spBv1.0 namespace");
                return None;
            }
            Err(e) => {
                inc(&self.status.bad_topic);
                let what = format!("invalid Sparkplug topic: {e}");
                self.warn("bad_topic", topic, &what);
                return None;
            }
        };
        let Topic::Node {
            group_id,
            message_type,
            edge_node_id,
            device_id,
        } = t
        else {
            return None; // STATE: the edge node (node.rs) follows the primary host.
        };
        if matches!(message_type, MessageType::NCmd | MessageType::DCmd) {
            inc(&self.status.commands_seen);
            return None;
        }
        let p = match decode_payload(payload, &self.limits) {
            Ok(p) => p,
            Err(e) => {
                if e.is_oversize() {
                    inc(&self.status.oversize);
                    self.warn("oversize", topic, &format!("payload skipped: {e}"));
                } else {
                    inc(&self.status.malformed);
                    self.warn("malformed", topic, &format!("payload skipped: {e}"));
                }
                return None;
            }
        };
        let node_key = births::key(&group_id, &edge_node_id, None);
        let own = group_id == self.own.0 && edge_node_id == self.own.1;
        let mut trouble: Option<String> = None;

        // seq: NBIRTH restarts it; everything else but NDEATH must follow by one (mod 256).
        // A seq above 255 is malformed and not used (found by fuzzing: it overflowed `last + 1`).
        let seq = p.seq.filter(|&s| s <= 255);
        if let (Some(s), None) = (p.seq, seq) {
            inc(&self.status.malformed);
            self.warn("seq_range", topic, &format!("seq {s} outside 0-255"));
        }
        match message_type {
            MessageType::NBirth => match seq {
                Some(s) => {
                    self.seqs.insert(node_key.clone(), s);
                }
                None => {
                    self.seqs.remove(&node_key);
                }
            },
            MessageType::NDeath => {}
            _ => match (self.seqs.get(&node_key).copied(), seq) {
                (Some(last), Some(s)) => {
                    let expected = (last + 1) % 256;
                    if s != expected {
                        inc(&self.status.seq_gaps);
                        self.status
                            .node(&group_id, &edge_node_id, |n| n.seq_gaps += 1);
                        trouble = Some(format!("seq {s} after {last} (expected {expected})"));
                    }
                    self.seqs.insert(node_key.clone(), s);
                }
                // First message since start: take its seq (no gap can be judged).
                (None, Some(s)) => {
                    self.seqs.insert(node_key.clone(), s);
                }
                (_, None) if p.seq.is_none() => {
                    inc(&self.status.malformed);
                    self.warn("no_seq", topic, "message without seq");
                }
                (_, None) => {}
            },
        }

        let now = now_ms();
        match message_type {
            MessageType::NBirth | MessageType::DBirth => {
                inc(&self.status.births);
                self.position += 1;
                let (birth, skipped) = Birth::from_payload(&p, self.position);
                if skipped > 0 {
                    inc(&self.status.malformed);
                    self.warn(
                        "birth_metric",
                        topic,
                        "birth metrics without name or datatype skipped",
                    );
                }
                let metrics = birth.metrics.len();
                let bd_seq = birth.bd_seq;
                let key = births::key(&group_id, &edge_node_id, device_id.as_deref());
                if message_type == MessageType::DBirth && self.cache.latest(&node_key).is_none() {
                    inc(&self.status.missing_births);
                    trouble.get_or_insert_with(|| "DBIRTH without a known NBIRTH".into());
                }
                let evicted = self.cache.evicted();
                self.cache.record(&key, birth);
                if self.cache.evicted() > evicted {
                    self.status
                        .cache_evictions
                        .fetch_add(self.cache.evicted() - evicted, Ordering::Relaxed);
                }
                self.status
                    .node(&group_id, &edge_node_id, |n| match &device_id {
                        None => {
                            n.online = true;
                            n.bd_seq = bd_seq;
                            n.metrics = metrics;
                            n.last_birth_ms = Some(now);
                            n.last_seq = p.seq;
                            for d in n.devices.values_mut() {
                                d.online = false;
                            }
                        }
                        Some(d) => {
                            n.last_seq = p.seq;
                            if n.devices.len() < MAX_DEVICES || n.devices.contains_key(d) {
                                let dv = n.devices.entry(d.clone()).or_default();
                                dv.online = true;
                                dv.metrics = metrics;
                                dv.last_message_ms = now;
                            }
                        }
                    });
            }
            MessageType::NDeath | MessageType::DDeath => {
                inc(&self.status.deaths);
                let bd_seq = p
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| m.value.as_ref())
                    .and_then(MetricValue::as_f64)
                    .map(|f| f as u64);
                self.status
                    .node(&group_id, &edge_node_id, |n| match &device_id {
                        None => {
                            // An NDEATH with another bdSeq belongs to an older session.
                            if bd_seq.is_none() || n.bd_seq.is_none() || bd_seq == n.bd_seq {
                                n.online = false;
                                for d in n.devices.values_mut() {
                                    d.online = false;
                                }
                            }
                        }
                        Some(d) => {
                            n.last_seq = p.seq;
                            if let Some(dv) = n.devices.get_mut(d) {
                                dv.online = false;
                                dv.last_message_ms = now;
                            }
                        }
                    });
                if message_type == MessageType::NDeath {
                    self.seqs.remove(&node_key);
                }
            }
            _ => {
                inc(&self.status.data);
                let key = births::key(&group_id, &edge_node_id, device_id.as_deref());
                let birth = self.cache.latest(&key);
                let node_birth = self.cache.latest(&node_key);
                if birth.is_none() || node_birth.is_none() {
                    inc(&self.status.missing_births);
                    trouble.get_or_insert_with(|| {
                        format!("{} without a known birth", message_type.as_str())
                    });
                } else if let Some(b) = &birth {
                    let unknown = p
                        .metrics
                        .iter()
                        .filter(|m| {
                            let by_alias = m.alias.is_some_and(|a| {
                                b.by_alias(a).is_some()
                                    || node_birth.as_ref().is_some_and(|n| n.by_alias(a).is_some())
                            });
                            let by_name = m.name.as_deref().is_some_and(|n| b.by_name(n).is_some());
                            !(by_alias || by_name)
                        })
                        .count();
                    if unknown > 0 {
                        self.status
                            .unknown_aliases
                            .fetch_add(unknown as u64, Ordering::Relaxed);
                        trouble
                            .get_or_insert_with(|| format!("{unknown} metric(s) not in the birth"));
                    }
                }
                self.status.node(&group_id, &edge_node_id, |n| {
                    n.last_seq = p.seq;
                    if let Some(d) = &device_id
                        && let Some(dv) = n.devices.get_mut(d)
                    {
                        dv.last_message_ms = now;
                    }
                });
            }
        }

        let reason = trouble?;
        if own {
            return None;
        }
        self.warn("rebirth", topic, &format!("needs a rebirth: {reason}"));
        if !self.cfg.request_rebirth {
            return None;
        }
        let min = Duration::from_millis(self.cfg.rebirth_min_interval_ms);
        if let Some(t) = self.last_rebirth.get(&node_key)
            && t.elapsed() < min
        {
            inc(&self.status.rebirths_suppressed);
            return None;
        }
        if self.last_rebirth.len() >= MAX_NODES * 4 {
            self.last_rebirth.retain(|_, t| t.elapsed() < min);
        }
        self.last_rebirth.insert(node_key, Instant::now());
        inc(&self.status.rebirth_requests);
        self.status
            .node(&group_id, &edge_node_id, |n| n.rebirth_requests += 1);
        tracing::info!(group_id, edge_node_id, %reason, "sparkplug ingest: requesting a rebirth");
        Some(RebirthRequest {
            group_id,
            edge_node_id,
            reason,
        })
    }
}

/// The shared handle the command consumer uses to look up our own births.
pub type SharedIngest = Arc<tokio::sync::Mutex<Ingest>>;

/// Runs the ingest on the embedded broker until `stop`.
pub async fn run(
    ingest: SharedIngest,
    broker: Arc<BrokerHandle>,
    stop: impl Future<Output = ()>,
) -> Result<(), IngestError> {
    let mut sub = broker
        .subscribe("ironbridge-sparkplug-ingest", &["spBv1.0/#", "spAv1.0/#"])
        .await?;
    let status = ingest.lock().await.status.clone();
    status.subscribed.store(true, Ordering::Relaxed);
    tracing::info!("sparkplug ingest subscribed to spBv1.0/#");
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            _ = &mut stop => return Ok(()),
            m = sub.next() => match m {
                Some(m) => m,
                None => {
                    status.subscribed.store(false, Ordering::Relaxed);
                    return Err(IngestError::Mqtt(MqttError::Router(
                        "ingest subscription closed".into(),
                    )));
                }
            },
        };
        let request = ingest.lock().await.handle(&msg.topic, &msg.payload);
        if let Some(r) = request
            && let Err(e) = broker.publish(&r.event()).await
        {
            tracing::warn!(error = %e, group_id = %r.group_id, edge_node_id = %r.edge_node_id,
                "sparkplug ingest: could not publish a rebirth request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::payload::DataType;

    fn ingest(request_rebirth: bool) -> (Ingest, Arc<IngestStatus>) {
        let status = IngestStatus::new();
        let cfg = IngestConfig {
            request_rebirth,
            rebirth_min_interval_ms: 60_000,
            max_metrics: 50,
            ..IngestConfig::default()
        };
        let i =
            Ingest::new(cfg, ("own".into(), "gw".into()), None, status.clone()).expect("ingest");
        (i, status)
    }

    fn nbirth(seq: u64) -> Vec<u8> {
        Payload::new(1, Some(seq))
            .with_metric(Metric::new("bdSeq", MetricValue::Int64(3)))
            .with_metric(Metric::new(
                "Node Control/Rebirth",
                MetricValue::Boolean(false),
            ))
            .encode()
            .expect("encode")
    }

    fn dbirth(seq: u64) -> Vec<u8> {
        Payload::new(1, Some(seq))
            .with_metric(Metric::new("temp", MetricValue::Float(1.0)).with_alias(10))
            .encode()
            .expect("encode")
    }

    fn ddata(seq: u64, alias: u64) -> Vec<u8> {
        Payload::new(1, Some(seq))
            .with_metric(Metric::aliased(alias, MetricValue::Float(2.0)))
            .encode()
            .expect("encode")
    }

    #[test]
    fn births_seq_gaps_and_rebirth_requests() {
        let (mut i, status) = ingest(true);
        assert_eq!(i.handle("spBv1.0/g/NBIRTH/n", &nbirth(0)), None);
        assert_eq!(i.handle("spBv1.0/g/DBIRTH/n/d", &dbirth(1)), None);
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(2, 10)), None);
        assert_eq!(
            i.metric_def("g", "n", Some("d"), "temp")
                .map(|m| m.datatype),
            Some(DataType::Float)
        );
        // seq 3 lost.
        let r = i
            .handle("spBv1.0/g/DDATA/n/d", &ddata(4, 10))
            .expect("rebirth");
        assert_eq!((r.group_id.as_str(), r.edge_node_id.as_str()), ("g", "n"));
        assert!(r.reason.contains("seq 4 after 2"), "{}", r.reason);
        assert_eq!(r.event().topic, "spBv1.0/g/NCMD/n");
        let cmd = decode_payload(&r.event().payload, &Limits::default()).expect("ncmd");
        assert_eq!(cmd.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(cmd.metrics[0].value, Some(MetricValue::Boolean(true)));
        // Rate limited.
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(9, 10)), None);
        let s = status.snapshot();
        assert_eq!(
            (s.seq_gaps, s.rebirth_requests, s.rebirths_suppressed),
            (2, 1, 1)
        );
        assert_eq!(s.nodes.len(), 1);
        assert!(s.nodes[0].online);
        assert_eq!(s.nodes[0].bd_seq, Some(3));
        assert_eq!(s.nodes[0].devices.get("d").map(|d| d.metrics), Some(1));
        // A seq above 255 (fuzzing found u64::MAX after an NBIRTH with it) is malformed.
        let malformed = status.snapshot().malformed;
        assert_eq!(i.handle("spBv1.0/g/NBIRTH/n", &nbirth(u64::MAX)), None);
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(u64::MAX, 10)), None);
        assert_eq!(status.snapshot().malformed, malformed + 2);
        assert_eq!(status.snapshot().seq_gaps, 2);
        // seq wraps 255 → 0 without a gap.
        assert_eq!(i.handle("spBv1.0/g/NBIRTH/n", &nbirth(254)), None);
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(255, 10)), None);
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(0, 10)), None);
        assert_eq!(status.snapshot().seq_gaps, 2);
        // NDEATH: offline.
        let death = Payload::new(1, None)
            .with_metric(Metric::new("bdSeq", MetricValue::Int64(3)))
            .encode()
            .expect("encode");
        assert_eq!(i.handle("spBv1.0/g/NDEATH/n", &death), None);
        assert!(!status.snapshot().nodes[0].online);
    }

    #[test]
    fn missing_births_unknown_aliases_and_own_node() {
        let (mut i, status) = ingest(true);
        let r = i
            .handle("spBv1.0/g/DDATA/x/d", &ddata(5, 1))
            .expect("rebirth");
        assert!(r.reason.contains("without a known birth"), "{}", r.reason);
        i.handle("spBv1.0/g/NBIRTH/y", &nbirth(0));
        i.handle("spBv1.0/g/DBIRTH/y/d", &dbirth(1));
        let r = i
            .handle("spBv1.0/g/DDATA/y/d", &ddata(2, 99))
            .expect("rebirth");
        assert!(r.reason.contains("not in the birth"), "{}", r.reason);
        // Never to ourselves.
        assert_eq!(i.handle("spBv1.0/own/DDATA/gw/d", &ddata(7, 1)), None);
        let s = status.snapshot();
        assert_eq!(
            (s.missing_births, s.unknown_aliases, s.rebirth_requests),
            (2, 1, 2)
        );
        // Without request_rebirth: counted only.
        let (mut i, status) = ingest(false);
        assert_eq!(i.handle("spBv1.0/g/DDATA/x/d", &ddata(5, 1)), None);
        assert_eq!(status.snapshot().missing_births, 1);
    }

    #[test]
    fn bad_input_is_counted() {
        let (mut i, status) = ingest(true);
        assert_eq!(i.handle("spBv1.0/g/NDATA/n", b"\xff\xff\xff"), None);
        assert_eq!(i.handle("spAv1.0/g/NDATA/n", b""), None);
        assert_eq!(i.handle("spBv1.0/g/NFOO/n", b""), None);
        assert_eq!(i.handle("spBv1.0/g", b""), None);
        let mut big = Payload::new(1, Some(0));
        for n in 0..51 {
            big.metrics
                .push(Metric::new(format!("m{n}"), MetricValue::Int8(0)));
        }
        assert_eq!(
            i.handle("spBv1.0/g/NBIRTH/n", &big.encode().expect("encode")),
            None
        );
        assert_eq!(i.handle("spBv1.0/g/DCMD/n/d", b""), None);
        let s = status.snapshot();
        assert_eq!(
            (
                s.malformed,
                s.wrong_namespace,
                s.bad_topic,
                s.oversize,
                s.commands_seen
            ),
            (1, 1, 2, 1, 1)
        );
        assert_eq!(s.messages, 6);
        let mut text = String::new();
        status.render_metrics(&mut text);
        assert!(
            text.contains("ironbridge_sparkplug_ingest_oversize_total 1"),
            "{text}"
        );
    }

    #[test]
    fn births_survive_a_restart() {
        let store = StateStore::temporary().expect("store");
        let status = IngestStatus::new();
        let mut i = Ingest::new(
            IngestConfig::default(),
            ("o".into(), "o".into()),
            Some(&store),
            status.clone(),
        )
        .expect("ingest");
        i.handle("spBv1.0/g/NBIRTH/n", &nbirth(0));
        i.handle("spBv1.0/g/DBIRTH/n/d", &dbirth(1));
        drop(i);
        let mut i = Ingest::new(
            IngestConfig::default(),
            ("o".into(), "o".into()),
            Some(&store),
            status.clone(),
        )
        .expect("ingest");
        // First message after the restart: its seq is taken, the alias is known.
        assert_eq!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(40, 10)), None);
        assert_eq!(status.snapshot().rebirth_requests, 0);
    }
}
