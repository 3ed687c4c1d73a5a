//! Ingest of Sparkplug B from third-party edge nodes publishing to the embedded broker.
//!
//! Subscribes to `spBv1.0/#` (and `spAv1.0/#`, only to count it as the wrong namespace),
//! decodes every payload within the configured limits, keeps the latest births in sled (tree
//! `sparkplug.ingest`) to resolve aliases, tracks `seq` per edge node and asks a node for a
//! rebirth (NCMD `Node Control/Rebirth` = true) when its `seq` jumps, when it sends data or a
//! DBIRTH without a known NBIRTH, or data with an alias no birth defined. Requests are rate
//! limited per node (`rebirth_min_interval_ms`) and never sent to the gateway's own node.
//!
//! With `reorder_timeout_ms` (Sparkplug 3.0 "Reorder Timeout") a seq jump starts a timer
//! instead: messages that fill the gap before it elapses are counted as out of order and the
//! node goes on; a gap still open when it elapses requests the rebirth.
//!
//! With `host_id` the gateway is a Sparkplug host application on its own broker: after
//! subscribing it publishes `spBv1.0/STATE/<host_id>` `{"online":true,"timestamp":T}` (retained,
//! QoS 1), republishes it when its own STATE is overwritten with `online: false`, and publishes
//! `online: false` on a graceful stop. The embedded broker dies with the daemon, so it cannot
//! deliver a will; instead, the session (`T`, open or closed) is kept in the state store (tree
//! `sparkplug.host`) and a session that did not end cleanly gets its will — `online: false` with
//! the same `T` — at the next start, before the new birth.
//!
//! Nothing here can stop the gateway: malformed payloads, bad topics and oversize payloads are
//! counted ([`IngestStatus`]) and logged at most once per 10 s per kind.
//!
//! The uplink does not depend on this component: it keeps its own birth history from the
//! buffer (see `uplink::sparkplug`), because it must follow log order, not arrival order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::births::{self, Birth, BirthCache, CacheLimits, MetricDef};
use super::config::IngestConfig;
use super::payload::{Limits, Metric, MetricValue, Payload, decode_payload};
use super::topic::{MessageType, Topic, TopicError};
use crate::clock::{lock, now_ms_u64 as now_ms};
use crate::event::Event;
use crate::mqtt::{BrokerHandle, MqttError};
use crate::state::{StateStore, Tree};

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
    pub out_of_order: AtomicU64,
    pub missing_births: AtomicU64,
    pub unknown_aliases: AtomicU64,
    pub rebirth_requests: AtomicU64,
    pub rebirths_suppressed: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub host_state_publishes: AtomicU64,
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
    /// Messages that arrived out of order within the reorder window.
    pub out_of_order: u64,
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
    pub out_of_order: u64,
    pub missing_births: u64,
    pub unknown_aliases: u64,
    pub rebirth_requests: u64,
    pub rebirths_suppressed: u64,
    pub cache_evictions: u64,
    pub host_state_publishes: u64,
    pub nodes: Vec<NodeView>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
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
            out_of_order: get(&self.out_of_order),
            missing_births: get(&self.missing_births),
            unknown_aliases: get(&self.unknown_aliases),
            rebirth_requests: get(&self.rebirth_requests),
            rebirths_suppressed: get(&self.rebirths_suppressed),
            cache_evictions: get(&self.cache_evictions),
            host_state_publishes: get(&self.host_state_publishes),
            nodes: lock(&self.nodes).values().cloned().collect(),
        }
    }

    /// Prometheus text lines (`ironbridge_sparkplug_ingest_*`).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.snapshot();
        let counters: [(&str, u64, &str); 17] = [
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
            (
                "seq_gaps_total",
                s.seq_gaps,
                "seq gaps (at once, or still open when the reorder window elapsed)",
            ),
            (
                "out_of_order_total",
                s.out_of_order,
                "messages that filled a seq gap within the reorder window",
            ),
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
            (
                "host_state_publishes_total",
                s.host_state_publishes,
                "STATE messages published as the host application (host_id)",
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
    seqs: HashMap<String, SeqState>,
    /// Nodes with a gap waiting in the reorder window.
    reordering: HashSet<String>,
    last_rebirth: HashMap<String, Instant>,
    host: Option<HostSession>,
    log: LogLimiter,
}

/// A node's seq as the ingest follows it.
struct SeqState {
    group_id: String,
    edge_node_id: String,
    /// The highest seq seen (mod 256).
    last: u64,
    /// Seqs skipped by a jump, each with the end of its reorder window.
    missing: HashMap<u64, Instant>,
}

/// Whether `s` is ahead of `last` by more than one (a jump forward, not an old or repeated
/// seq): within half the 0–255 cycle.
fn jumps_ahead(last: u64, s: u64) -> bool {
    (2..=128).contains(&((s + 256 - last) % 256))
}

/// The gateway's own Sparkplug host session (`host_id`).
struct HostSession {
    host_id: String,
    tree: Option<Tree>,
    /// The birth's (and will's) timestamp.
    timestamp: u64,
    /// Timestamp of the will of the previous session we published at start.
    will: Option<u64>,
}

impl HostSession {
    /// Keeps the session (durably: a will must never be lost or repeat an old timestamp).
    fn store(&self, open: bool) {
        let Some(tree) = &self.tree else { return };
        let s = StoredHostSession {
            timestamp: self.timestamp,
            open,
        };
        if let Err(e) = StateStore::put_json_durable(tree, &self.host_id, &s) {
            tracing::warn!(error = %e, "sparkplug host: session not stored");
        }
    }
}

fn state_topic(host_id: &str) -> String {
    format!("spBv1.0/STATE/{host_id}")
}

/// A host STATE message: JSON, retained, QoS 1 [tck-id-host-topic-phid-birth-qos,
/// tck-id-host-topic-phid-birth-retain, tck-id-host-topic-phid-birth-payload].
fn state_event(host_id: &str, online: bool, timestamp: u64) -> Event {
    Event {
        topic: state_topic(host_id),
        payload: Bytes::from(
            serde_json::json!({"online": online, "timestamp": timestamp}).to_string(),
        ),
        qos: 1,
        retain: true,
        client_id: Some("ironbridge-sparkplug-host".into()),
        ..Event::default()
    }
}

/// Checks the `[sparkplug.ingest]` settings.
pub fn validate(cfg: &IngestConfig) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    if let Some(h) = &cfg.host_id
        && let Err(e) = super::topic::validate_id(h)
    {
        issues.push(("sparkplug.ingest.host_id".into(), e));
    }
    issues
}

/// What the state store keeps of a host session.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHostSession {
    timestamp: u64,
    open: bool,
}

/// Name of the sled tree of the host session.
const HOST_TREE: &str = "sparkplug.host";

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
        let host = match (&cfg.host_id, state) {
            (None, _) => None,
            (Some(id), state) => Some(HostSession {
                host_id: id.clone(),
                tree: state.map(|s| s.tree(HOST_TREE)).transpose()?,
                timestamp: 0,
                will: None,
            }),
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
            reordering: HashSet::new(),
            last_rebirth: HashMap::new(),
            host,
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

    /// Host application (`host_id`): the will of a previous session that did not end cleanly —
    /// `online: false` with that session's timestamp, as the broker would have delivered it —
    /// to publish before subscribing.
    pub fn host_will(&mut self) -> Option<Event> {
        let h = self.host.as_mut()?;
        match StateStore::get_json::<StoredHostSession>(h.tree.as_ref()?, &h.host_id) {
            Ok(Some(s)) if s.open => {
                h.will = Some(s.timestamp);
                Some(state_event(&h.host_id, false, s.timestamp))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "sparkplug host: previous session unreadable; no will sent");
                None
            }
        }
    }

    /// Host application: a new session and its birth, `online: true` with a timestamp later
    /// than any earlier session's (edge nodes ignore STATE older than the last they saw).
    pub fn host_birth(&mut self) -> Option<Event> {
        let h = self.host.as_mut()?;
        let previous = h
            .tree
            .as_ref()
            .and_then(|t| StateStore::get_json::<StoredHostSession>(t, &h.host_id).ok())
            .flatten()
            .map_or(0, |s| s.timestamp + 1);
        h.timestamp = now_ms().max(previous).max(h.timestamp + 1);
        h.store(true);
        Some(state_event(&h.host_id, true, h.timestamp))
    }

    /// Host application: a STATE `online: false` on our own host id overwrote our birth →
    /// the birth again, same timestamp [tck-id-message-flow-hid-sparkplug-state-message-delivered].
    /// Our own will of the previous session, published before we subscribed and delivered back
    /// from the retained store, was replaced by our birth already: nothing to answer.
    pub fn host_state_seen(&self, topic: &str, payload: &[u8]) -> Option<Event> {
        let h = self.host.as_ref()?;
        if topic != state_topic(&h.host_id) || h.timestamp == 0 {
            return None;
        }
        let state = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
        let online = state.get("online").and_then(serde_json::Value::as_bool);
        let timestamp = state.get("timestamp").and_then(serde_json::Value::as_u64);
        (online == Some(false) && (h.will.is_none() || timestamp != h.will))
            .then(|| state_event(&h.host_id, true, h.timestamp))
    }

    /// Host application, graceful stop: `online: false` now, the session closed
    /// [tck-id-host-topic-phid-death-payload-disconnect-clean].
    pub fn host_death(&mut self) -> Option<Event> {
        let h = self.host.as_mut()?;
        if h.timestamp == 0 {
            return None;
        }
        h.store(false);
        Some(state_event(&h.host_id, false, now_ms().max(h.timestamp)))
    }

    fn warn(&mut self, kind: &'static str, topic: &str, what: &str) {
        if let Some(suppressed) = self.log.allow(kind) {
            tracing::warn!(kind, topic, suppressed, "sparkplug ingest: {what}");
        }
    }

    /// Handles one message; returns a rebirth request to publish, if any.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Option<RebirthRequest> {
        self.handle_at(topic, payload, Instant::now())
    }

    /// [`Ingest::handle`] at `now` (the start of a reorder window).
    pub fn handle_at(
        &mut self,
        topic: &str,
        payload: &[u8],
        at: Instant,
    ) -> Option<RebirthRequest> {
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
        let mut trouble: Option<String> = None;

        // seq: NBIRTH restarts it; everything else but NDEATH must follow by one (mod 256).
        // A seq above 255 is malformed and not used (found by fuzzing: it overflowed `last + 1`).
        let seq = p.seq.filter(|&s| s <= 255);
        if let (Some(s), None) = (p.seq, seq) {
            inc(&self.status.malformed);
            self.warn("seq_range", topic, &format!("seq {s} outside 0-255"));
        }
        match message_type {
            MessageType::NBirth => {
                self.reordering.remove(&node_key);
                match seq {
                    Some(s) => {
                        self.seqs.insert(
                            node_key.clone(),
                            SeqState {
                                group_id: group_id.clone(),
                                edge_node_id: edge_node_id.clone(),
                                last: s,
                                missing: HashMap::new(),
                            },
                        );
                    }
                    None => {
                        self.seqs.remove(&node_key);
                    }
                }
            }
            MessageType::NDeath => {}
            _ => match (self.seqs.get_mut(&node_key), seq) {
                (Some(st), Some(s)) => {
                    let last = st.last;
                    let expected = (last + 1) % 256;
                    let window = Duration::from_millis(self.cfg.reorder_timeout_ms);
                    if s == expected {
                        st.last = s;
                    } else if st.missing.remove(&s).is_some() {
                        // Late, but within the reorder window [tck-id-operational-behavior-host-reordering-success].
                        inc(&self.status.out_of_order);
                        if st.missing.is_empty() {
                            self.reordering.remove(&node_key);
                        }
                        self.status
                            .node(&group_id, &edge_node_id, |n| n.out_of_order += 1);
                    } else if !window.is_zero() && jumps_ahead(last, s) {
                        // [tck-id-operational-behavior-host-reordering-start]
                        let deadline = at + window;
                        let mut m = expected;
                        while m != s {
                            st.missing.entry(m).or_insert(deadline);
                            m = (m + 1) % 256;
                        }
                        st.last = s;
                        self.reordering.insert(node_key.clone());
                    } else {
                        inc(&self.status.seq_gaps);
                        self.status
                            .node(&group_id, &edge_node_id, |n| n.seq_gaps += 1);
                        trouble = Some(format!("seq {s} after {last} (expected {expected})"));
                        st.last = s;
                        st.missing.clear();
                        self.reordering.remove(&node_key);
                    }
                }
                // First message since start: take its seq (no gap can be judged).
                (None, Some(s)) => {
                    self.seqs.insert(
                        node_key.clone(),
                        SeqState {
                            group_id: group_id.clone(),
                            edge_node_id: edge_node_id.clone(),
                            last: s,
                            missing: HashMap::new(),
                        },
                    );
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
                    self.reordering.remove(&node_key);
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
        self.request(group_id, edge_node_id, reason, topic)
    }

    /// When the earliest reorder window ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.reordering
            .iter()
            .filter_map(|k| self.seqs.get(k))
            .flat_map(|st| st.missing.values())
            .min()
            .copied()
    }

    /// Ends the reorder windows elapsed at `now`: a gap still open is a seq gap and asks for a
    /// rebirth [tck-id-operational-behavior-host-reordering-rebirth].
    pub fn expire(&mut self, now: Instant) -> Vec<RebirthRequest> {
        let mut expired = Vec::new();
        for key in &self.reordering {
            let Some(st) = self.seqs.get_mut(key) else {
                continue;
            };
            if st.missing.values().any(|d| *d <= now) {
                let mut seqs: Vec<u64> = st.missing.drain().map(|(s, _)| s).collect();
                seqs.sort_unstable();
                expired.push((
                    key.clone(),
                    st.group_id.clone(),
                    st.edge_node_id.clone(),
                    seqs,
                ));
            }
        }
        let mut requests = Vec::new();
        for (key, group_id, edge_node_id, seqs) in expired {
            self.reordering.remove(&key);
            inc(&self.status.seq_gaps);
            self.status
                .node(&group_id, &edge_node_id, |n| n.seq_gaps += 1);
            let reason = format!(
                "seq {seqs:?} still missing after the reorder timeout ({} ms)",
                self.cfg.reorder_timeout_ms
            );
            let topic = Topic::node(&group_id, MessageType::NCmd, &edge_node_id).to_string();
            requests.extend(self.request(group_id, edge_node_id, reason, &topic));
        }
        requests
    }

    /// A rebirth request for a node in trouble, unless it is our own node, requests are off or
    /// the node was asked recently.
    fn request(
        &mut self,
        group_id: String,
        edge_node_id: String,
        reason: String,
        topic: &str,
    ) -> Option<RebirthRequest> {
        if group_id == self.own.0 && edge_node_id == self.own.1 {
            return None;
        }
        self.warn("rebirth", topic, &format!("needs a rebirth: {reason}"));
        if !self.cfg.request_rebirth {
            return None;
        }
        let node_key = births::key(&group_id, &edge_node_id, None);
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
    let status = ingest.lock().await.status.clone();
    let will = ingest.lock().await.host_will();
    if let Some(e) = will {
        publish_state(&broker, &e, &status).await;
    }
    // `spBv1.0/#` includes our own STATE: subscribed before the birth
    // [tck-id-host-topic-phid-birth-sub-required, tck-id-message-flow-phid-sparkplug-subscription].
    let mut sub = broker
        .subscribe("ironbridge-sparkplug-ingest", &["spBv1.0/#", "spAv1.0/#"])
        .await?;
    status.subscribed.store(true, Ordering::Relaxed);
    tracing::info!("sparkplug ingest subscribed to spBv1.0/#");
    let birth = ingest.lock().await.host_birth();
    if let Some(e) = birth {
        publish_state(&broker, &e, &status).await;
    }
    tokio::pin!(stop);
    loop {
        let deadline = ingest.lock().await.next_deadline();
        let msg = tokio::select! {
            _ = &mut stop => {
                let death = ingest.lock().await.host_death();
                if let Some(e) = death {
                    publish_state(&broker, &e, &status).await;
                }
                return Ok(());
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let requests = ingest.lock().await.expire(Instant::now());
                for r in requests {
                    publish_rebirth(&broker, &r).await;
                }
                continue;
            }
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
        let (request, state) = {
            let mut i = ingest.lock().await;
            let request = i.handle(&msg.topic, &msg.payload);
            (request, i.host_state_seen(&msg.topic, &msg.payload))
        };
        if let Some(r) = request {
            publish_rebirth(&broker, &r).await;
        }
        if let Some(e) = state {
            tracing::info!(topic = %e.topic, "sparkplug host: own STATE was set offline; published online again");
            publish_state(&broker, &e, &status).await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn publish_rebirth(broker: &BrokerHandle, r: &RebirthRequest) {
    if let Err(e) = broker.publish(&r.event()).await {
        tracing::warn!(error = %e, group_id = %r.group_id, edge_node_id = %r.edge_node_id,
            "sparkplug ingest: could not publish a rebirth request");
    }
}

async fn publish_state(broker: &BrokerHandle, e: &Event, status: &IngestStatus) {
    match broker.publish(e).await {
        Ok(_) => inc(&status.host_state_publishes),
        Err(err) => {
            tracing::warn!(error = %err, topic = %e.topic, "sparkplug host: could not publish STATE")
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

    fn windowed(ms: u64) -> (Ingest, Arc<IngestStatus>) {
        let status = IngestStatus::new();
        let cfg = IngestConfig {
            rebirth_min_interval_ms: 0,
            reorder_timeout_ms: ms,
            ..IngestConfig::default()
        };
        let i =
            Ingest::new(cfg, ("own".into(), "gw".into()), None, status.clone()).expect("ingest");
        (i, status)
    }

    #[test]
    fn reorder_window_waits_for_late_messages_before_a_rebirth() {
        let (mut i, status) = windowed(2_000);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(i.handle_at("spBv1.0/g/NBIRTH/n", &nbirth(0), at(0)), None);
        assert_eq!(i.handle_at("spBv1.0/g/DBIRTH/n/d", &dbirth(1), at(0)), None);
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(2, 10), at(0)),
            None
        );
        // 1, 2, 4: the window starts at 4 [tck-id-operational-behavior-host-reordering-start].
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(4, 10), at(100)),
            None
        );
        assert_eq!(i.next_deadline(), Some(at(2_100)));
        assert!(i.expire(at(2_000)).is_empty());
        // 3 arrives in time: counted, no rebirth, the timer ends
        // [tck-id-operational-behavior-host-reordering-success].
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(3, 10), at(500)),
            None
        );
        assert_eq!(i.next_deadline(), None);
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(5, 10), at(600)),
            None
        );
        let s = status.snapshot();
        assert_eq!((s.out_of_order, s.seq_gaps, s.rebirth_requests), (1, 0, 0));
        assert_eq!(s.nodes[0].out_of_order, 1);
        // 5, then 8 (6 and 7 missing), 6 arrives, 7 never does: the rebirth when the window
        // ends [tck-id-operational-behavior-host-reordering-rebirth].
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(8, 10), at(1_000)),
            None
        );
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(6, 10), at(1_200)),
            None
        );
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(9, 10), at(1_300)),
            None
        );
        assert!(i.expire(at(2_999)).is_empty());
        let r = i.expire(at(3_000));
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].group_id.as_str(), r[0].edge_node_id.as_str()),
            ("g", "n")
        );
        assert!(r[0].reason.contains("[7]"), "{}", r[0].reason);
        assert_eq!(i.next_deadline(), None);
        let s = status.snapshot();
        assert_eq!((s.out_of_order, s.seq_gaps, s.rebirth_requests), (2, 1, 1));
        // A repeated or old seq is no jump ahead: a gap at once, as without a window.
        assert!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(9, 10), at(4_000))
                .is_some()
        );
        // An NBIRTH ends an open window.
        assert_eq!(
            i.handle_at("spBv1.0/g/DDATA/n/d", &ddata(12, 10), at(5_000)),
            None
        );
        assert!(i.next_deadline().is_some());
        assert_eq!(
            i.handle_at("spBv1.0/g/NBIRTH/n", &nbirth(0), at(5_100)),
            None
        );
        assert_eq!(i.next_deadline(), None);
        // Our own node is never asked, also after a window.
        assert_eq!(
            i.handle_at("spBv1.0/own/NBIRTH/gw", &nbirth(0), at(0)),
            None
        );
        assert_eq!(
            i.handle_at("spBv1.0/own/DDATA/gw/d", &ddata(3, 1), at(0)),
            None
        );
        assert!(i.expire(at(10_000)).is_empty());
        // Without a window (the default) a jump asks at once.
        let (mut i, _) = windowed(0);
        i.handle("spBv1.0/g/NBIRTH/n", &nbirth(0));
        i.handle("spBv1.0/g/DBIRTH/n/d", &dbirth(1));
        assert!(i.handle("spBv1.0/g/DDATA/n/d", &ddata(3, 10)).is_some());
        assert_eq!(i.next_deadline(), None);
    }

    fn state(e: &Event) -> (String, u8, bool, serde_json::Value) {
        (
            e.topic.clone(),
            e.qos,
            e.retain,
            serde_json::from_slice(&e.payload).expect("STATE is JSON"),
        )
    }

    #[test]
    fn host_state_birth_will_republish_and_death() {
        let store = StateStore::temporary().expect("store");
        let host = |store| {
            let cfg = IngestConfig {
                host_id: Some("scada1".into()),
                ..IngestConfig::default()
            };
            Ingest::new(
                cfg,
                ("o".into(), "o".into()),
                Some(store),
                IngestStatus::new(),
            )
            .expect("ingest")
        };
        let mut i = host(&store);
        assert!(i.host_will().is_none(), "no earlier session");
        let (topic, qos, retain, birth) = state(&i.host_birth().expect("birth"));
        assert_eq!(
            (topic.as_str(), qos, retain),
            ("spBv1.0/STATE/scada1", 1, true)
        );
        assert_eq!(birth["online"], true);
        let t1 = birth["timestamp"].as_u64().expect("timestamp");
        assert!(t1 > 1_600_000_000_000);
        // Someone sets us offline: the same birth again.
        let offline = format!(r#"{{"online":false,"timestamp":{}}}"#, t1 + 5);
        let again = i
            .host_state_seen("spBv1.0/STATE/scada1", offline.as_bytes())
            .expect("republished");
        assert_eq!(state(&again).3, birth);
        assert!(
            i.host_state_seen("spBv1.0/STATE/other", offline.as_bytes())
                .is_none()
        );
        let online = format!(r#"{{"online":true,"timestamp":{t1}}}"#);
        assert!(
            i.host_state_seen("spBv1.0/STATE/scada1", online.as_bytes())
                .is_none()
        );
        // A crash (no death): the next start sends the will with the old timestamp first, then
        // a birth with a later one.
        drop(i);
        let mut i = host(&store);
        let will_event = i.host_will().expect("will");
        let (_, qos, retain, will) = state(&will_event);
        assert_eq!((qos, retain), (1, true));
        assert_eq!(will, serde_json::json!({"online": false, "timestamp": t1}));
        let t2 = state(&i.host_birth().expect("birth")).3["timestamp"]
            .as_u64()
            .expect("timestamp");
        assert!(t2 > t1);
        // Our own will, delivered back from the retained store, replaced by the birth already.
        assert!(
            i.host_state_seen(&will_event.topic, &will_event.payload)
                .is_none()
        );
        assert!(
            i.host_state_seen("spBv1.0/STATE/scada1", offline.as_bytes())
                .is_some()
        );
        // A graceful stop: offline now, and no will at the next start.
        let (_, _, _, death) = state(&i.host_death().expect("death"));
        assert_eq!(death["online"], false);
        assert!(death["timestamp"].as_u64() >= Some(t2));
        drop(i);
        assert!(host(&store).host_will().is_none());
        // Off by default.
        let (mut i, _) = ingest(true);
        assert!(i.host_birth().is_none() && i.host_will().is_none());
        let bad = IngestConfig {
            host_id: Some("a/b".into()),
            ..IngestConfig::default()
        };
        assert_eq!(validate(&bad).len(), 1);
        assert!(validate(&IngestConfig::default()).is_empty());
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
