//! The edge node's session on an upstream MQTT server (`[sparkplug.upstream]`), beside the
//! one on the embedded broker: its own [`NodeCore`] (own `seq`, own `bdSeq` persisted under
//! the key `upstream`), and a real MQTT will.
//!
//! Every connection is a new Sparkplug session (Sparkplug 3.0, clean session): the next bdSeq
//! is persisted once the server is reachable (a TCP or TLS failure takes none), the NDEATH
//! carrying it is the CONNECT's will (QoS 1, not retained), and after the CONNACK the node
//! subscribes to its NCMD/DCMD (and the primary host's STATE, 3.0 and legacy topics) and
//! publishes its births once the host is online. Losing the connection ends the session; the
//! next one, after a bounded exponential backoff, takes the next bdSeq and starts with births
//! again. The primary host's state is tracked across connections (a STATE older than the last
//! one seen is ignored).
//!
//! This session carries the node's identity (`edge_node_id`); its data follows the embedded
//! session's records in the edge-buffer (`records.rs`; see
//! `docs/decisions/0003-sparkplug-sessions.md`): live while born, and what happened while it
//! was not (server unreachable, host offline) is replayed after the births as DDATA/NDATA with
//! `is_historical`, at `history_rate` per second, live data first. Publishes go through
//! rumqttc's bounded request queue; a publish that does not fit is dropped (counted) and the
//! session reborn, since the host would see a `seq` gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_buffer::{Log, Reader, StoredRecord};
use ironbridge_adapters::modbus::Device;
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::records::{SessionMessage, history, readings, session_message};
use super::{
    AbortOnDrop, CommandOrigin, HostTracker, NEXT_SERVER, NodeContext, NodeControls, NodeCore,
    NodeError, Outgoing, SessionRecord, UpstreamReport, WriteJob, correlation, dispatch,
    gateway_metrics, load_session, model, next_bdseq, node_control_done, parse_state, plan_command,
    rebirth_done, reboot, save_session, state_topics,
};
use crate::sparkplug::audit::{CommandSource, Requester};
use crate::sparkplug::config::UpstreamConfig;
use crate::sparkplug::topic::{MessageType, Topic};
use crate::uplink::TlsConfig;

/// Sled key of the upstream session's record in [`super::STATE_TREE`].
pub const SESSION_KEY: &str = "upstream";
/// The edge-buffer consumer whose cursor is where the upstream session has got to (the start
/// of the history still to replay): its segments are kept until then.
pub const CONSUMER: &str = "sparkplug-upstream";
/// Records read from the buffer in one go.
const READ_BATCH: usize = 256;
/// Records the history replay looks at per tick before giving the loop back.
const REPLAY_SCAN: usize = 64;
/// How often the consumer cursor is committed (an fsync each).
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for a TCP (and TLS) connection to the server.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);
/// rumqttc's request queue (publishes waiting for the socket).
const REQUEST_QUEUE: usize = 256;
/// Events from the connection task waiting for the session loop.
const EVENT_QUEUE: usize = 64;
/// Largest MQTT packet sent or accepted (a DBIRTH of a big device is a few tens of kB).
const MAX_PACKET: usize = 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// How long a graceful end waits for the NDEATH's PUBACK and the DISCONNECT to be written.
const GOODBYE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::uplink::ConfigError),
    #[error("{0:?} is not host:port")]
    Server(String),
    #[error("buffer: {0}")]
    Buffer(#[from] edge_buffer::Error),
}

/// What the connection task reports.
#[derive(Debug)]
enum ConnEvent {
    ConnAck,
    Publish {
        topic: String,
        payload: bytes::Bytes,
    },
    PubAck,
    /// The connection ended (error text, or "disconnected" after our DISCONNECT).
    Closed(String),
}

/// How a session ended.
#[derive(Debug, PartialEq)]
enum End {
    Stop,
    /// Ended on purpose (primary host offline, Next Server): reconnect without backoff.
    Reconnect,
    /// Connection lost or refused.
    Lost(String),
}

/// `host:port` (IPv6 hosts in brackets).
pub fn split_server(server: &str) -> Result<(String, u16), UpstreamError> {
    let (h, p) = server
        .rsplit_once(':')
        .ok_or_else(|| UpstreamError::Server(server.into()))?;
    let port = p
        .parse::<u16>()
        .map_err(|_| UpstreamError::Server(server.into()))?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(UpstreamError::Server(server.into()));
    }
    Ok((host.to_string(), port))
}

/// The rustls configuration for the upstream server (ring; `ca_file` or the system roots).
pub fn tls_config(cfg: &UpstreamConfig) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let tls = TlsConfig {
        enabled: true,
        ca_file: cfg.ca_file.clone(),
        ..TlsConfig::default()
    };
    Ok(crate::uplink::tls::client_config_for(
        &tls,
        "sparkplug.upstream",
    )?)
}

/// The next backoff after `d`: doubled, at most [`BACKOFF_MAX`].
pub fn next_backoff(d: Duration) -> Duration {
    (d * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// Drives the connection: forwards what the session needs, counts publishes written.
async fn connection(mut el: rumqttc::EventLoop, tx: mpsc::Sender<ConnEvent>, sent: Arc<AtomicU64>) {
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => ConnEvent::ConnAck,
            Ok(Event::Incoming(Packet::Publish(p))) => ConnEvent::Publish {
                topic: p.topic,
                payload: p.payload,
            },
            Ok(Event::Incoming(Packet::PubAck(_))) => ConnEvent::PubAck,
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                let _ = tx.send(ConnEvent::Closed("disconnected".into())).await;
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(ConnEvent::Closed(e.to_string())).await;
                return;
            }
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

/// The history settings of `[sparkplug.upstream]`.
#[derive(Debug, Clone, Copy)]
struct HistoryLimits {
    rate: u32,
    max_age_ms: u64,
    max_records: u64,
}

/// The embedded session's records as the upstream session follows them: a live reader, the
/// gap (the first record not delivered while there was no born session), and the history
/// being replayed after a birth. The consumer cursor is the oldest of these positions.
struct Follower {
    log: Arc<Log>,
    group: String,
    /// The embedded session's edge node id.
    node: String,
    live: Reader,
    gap_start: Option<u64>,
    replay: Option<(Reader, u64)>,
    committed: u64,
    committed_at: Instant,
    limits: HistoryLimits,
}

impl Follower {
    fn open(
        log: Arc<Log>,
        group: String,
        node: String,
        limits: HistoryLimits,
    ) -> Result<Follower, UpstreamError> {
        // First run: from now on (nothing was missed yet). Later runs: from where the last
        // one got to, so what happened while the gateway was down is history too.
        let start = match log.cursor(CONSUMER)? {
            Some(c) => c,
            None => log.stats().next_offset,
        };
        log.commit(CONSUMER, start)?;
        Ok(Follower {
            live: log.reader(start)?,
            log,
            group,
            node,
            gap_start: None,
            replay: None,
            committed: start,
            committed_at: Instant::now(),
            limits,
        })
    }

    /// The next records of the buffer (waits for at least one).
    async fn next_live(&mut self) -> Result<Vec<StoredRecord>, NodeError> {
        self.live
            .next_batch(READ_BATCH, 1 << 20)
            .await
            .map_err(|e| NodeError::Task(format!("reading the buffer: {e}")))
    }

    fn message(&self, rec: &StoredRecord) -> Option<SessionMessage> {
        session_message(&rec.payload, &self.group, &self.node)
    }

    /// Records read while no session is born: they are the gap (bounded by `max_records`).
    fn missed(&mut self, first_offset: u64, report: &mut UpstreamReport) {
        let start = *self.gap_start.get_or_insert(first_offset);
        let end = self.live.next_offset();
        let max = self.limits.max_records;
        if end.saturating_sub(start) > max {
            let new_start = end - max;
            report.history_dropped += new_start - start;
            self.gap_start = Some(new_start);
        }
        report.history_pending = self.pending();
    }

    /// The session ended: what comes next (and what was not replayed yet) is the gap.
    fn session_ended(&mut self) {
        let next = self.live.next_offset();
        let from = self
            .replay
            .take()
            .map(|(r, _)| r.next_offset())
            .unwrap_or(next);
        let start = self.gap_start.map_or(from, |g| g.min(from));
        self.gap_start = Some(start);
    }

    /// Births are out: the gap becomes the history to replay.
    fn born(&mut self) -> Result<(), NodeError> {
        if let Some(start) = self.gap_start.take() {
            let end = self.live.next_offset();
            if end > start {
                let reader = self
                    .log
                    .reader(start)
                    .map_err(|e| NodeError::Task(format!("reading the buffer: {e}")))?;
                self.replay = Some((reader, end));
            }
        }
        Ok(())
    }

    /// Records still to replay or missed (buffer offsets).
    fn pending(&self) -> u64 {
        let next = self.live.next_offset();
        let replay = self
            .replay
            .as_ref()
            .map_or(0, |(r, end)| end.saturating_sub(r.next_offset()));
        replay + self.gap_start.map_or(0, |g| next.saturating_sub(g))
    }

    /// The next message of the history to replay (skipping records of other publishers and
    /// messages too old); `None` when there is none in this scan.
    fn next_history(&mut self, report: &mut UpstreamReport) -> Option<SessionMessage> {
        let oldest_ms = (super::now_ms().saturating_sub(self.limits.max_age_ms)) as i64;
        for _ in 0..REPLAY_SCAN {
            let (reader, end) = self.replay.as_mut()?;
            if reader.next_offset() >= *end {
                self.replay = None;
                return None;
            }
            let rec = match reader.read_batch(1, 1 << 20) {
                Ok(mut b) if !b.is_empty() => b.remove(0),
                Ok(_) => {
                    self.replay = None;
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Sparkplug upstream history: buffer read failed; history skipped");
                    self.replay = None;
                    return None;
                }
            };
            if rec.offset >= *end {
                self.replay = None;
                return None;
            }
            let Some(msg) = self.message(&rec) else {
                continue;
            };
            if history(&msg).is_none() {
                continue;
            }
            if rec.timestamp_ms < oldest_ms {
                report.history_expired += 1;
                continue;
            }
            return Some(msg);
        }
        None
    }

    /// Commits the consumer cursor (at most every [`COMMIT_EVERY`], or now with `force`).
    fn commit(&mut self, force: bool) {
        let pos = self
            .replay
            .as_ref()
            .map(|(r, _)| r.next_offset())
            .or(self.gap_start)
            .unwrap_or_else(|| self.live.next_offset());
        if pos == self.committed || (!force && self.committed_at.elapsed() < COMMIT_EVERY) {
            return;
        }
        match self.log.commit(CONSUMER, pos) {
            Ok(()) => {
                self.committed = pos;
                self.committed_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(error = %e, "Sparkplug upstream: committing the buffer cursor failed")
            }
        }
    }
}

struct Session<'a> {
    ctx: &'a NodeContext,
    cfg: UpstreamConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
    port: u16,
    client_id: String,
    core: NodeCore,
    known: Vec<Arc<Device>>,
    follow: Follower,
    /// The primary host's state, kept across connections (STATE timestamps order it).
    primary: HostTracker,
    writes: mpsc::Sender<WriteJob>,
    report: UpstreamReport,
    sent: Arc<AtomicU64>,
    /// A publish was dropped in this session: rebirth when the queue has room.
    rebirth_due: bool,
}

impl Session<'_> {
    fn update_status(&mut self) {
        self.report.session = self.core.snapshot();
        self.report.messages_sent = self.sent.load(Ordering::Relaxed);
        self.report.history_pending = self.follow.pending();
        let r = self.report.clone();
        self.ctx.status.update(|s| s.upstream = Some(r));
    }

    fn set_disconnected(&mut self, reason: Option<String>) {
        self.report.connected = false;
        if reason.is_some() {
            self.report.last_error = reason;
        }
        self.follow.session_ended();
        self.update_status();
    }

    /// Queues messages; what does not fit is dropped and counted, and a rebirth scheduled.
    fn publish(&mut self, client: &AsyncClient, out: Vec<Outgoing>) -> Result<(), NodeError> {
        for o in out {
            let payload = o.encode()?;
            let qos = if o.message_type == MessageType::NDeath {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            if client.try_publish(o.topic, qos, false, payload).is_err() {
                self.report.dropped_messages += 1;
                self.rebirth_due = true;
            }
        }
        self.update_status();
        Ok(())
    }

    fn births(&mut self, client: &AsyncClient) -> Result<(), NodeError> {
        self.core.set_gateway(gateway_metrics(self.ctx));
        let hub = self.ctx.hub.clone();
        let bdseq = self.core.bdseq();
        let out = self.core.birth(bdseq, &|d: &str| hub.latest(d));
        self.rebirth_due = false;
        self.publish(client, out)?;
        self.follow.born()
    }

    /// The embedded session's new records: live data while born, else the gap.
    fn on_records(
        &mut self,
        client: Option<&AsyncClient>,
        batch: Vec<StoredRecord>,
    ) -> Result<(), NodeError> {
        let Some(first) = batch.first().map(|r| r.offset) else {
            return Ok(());
        };
        match client {
            Some(client) if self.core.is_born() => {
                let mut live = Vec::new();
                for rec in &batch {
                    if let Some(msg) = self.follow.message(rec) {
                        live.extend(readings(&self.core, &msg));
                    }
                }
                let hub = self.ctx.hub.clone();
                let out = self.core.readings(&live, &|d: &str| hub.latest(d));
                self.publish(client, out)
            }
            _ => {
                self.follow.missed(first, &mut self.report);
                Ok(())
            }
        }
    }

    /// One message of history (if any is due), as DDATA/NDATA with `is_historical`.
    fn replay_one(&mut self, client: &AsyncClient) -> Result<(), NodeError> {
        let Some(msg) = self.follow.next_history(&mut self.report) else {
            self.update_status();
            return Ok(());
        };
        let Some((kind, device, metrics)) = history(&msg) else {
            return Ok(());
        };
        match self.core.historical(kind, device.as_deref(), metrics) {
            Some(o) => {
                self.report.history_replayed += 1;
                self.publish(client, vec![o])
            }
            None => {
                // The device is not born in this session (dead now, or no longer configured).
                self.report.history_dropped += 1;
                Ok(())
            }
        }
    }

    /// Follows Modbus device list changes (new model; the caller rebirths if born).
    fn devices_changed(&mut self) -> bool {
        let now = self.ctx.hub.devices();
        let same = now.len() == self.known.len()
            && now
                .iter()
                .zip(self.known.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if now.is_empty() || same {
            return false;
        }
        self.known = now;
        self.core.replace_devices(model(&self.known));
        true
    }

    fn options(&self, bdseq: u64) -> Result<MqttOptions, NodeError> {
        let will = self.core.death(bdseq);
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(u64::from(self.cfg.keep_alive_s.max(5))))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_request_channel_capacity(REQUEST_QUEUE)
            .set_last_will(LastWill::new(
                will.topic.clone(),
                will.encode()?,
                QoS::AtLeastOnce,
                false,
            ));
        if let Some(u) = &self.cfg.username {
            o.set_credentials(u.clone(), self.cfg.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        Ok(o)
    }

    /// Whether a CONNECT can be sent: a TCP connection (and a TLS handshake) to the server.
    /// A session's bdSeq is taken only after this (`tck-id-topics-nbirth-bdseq-increment`:
    /// incremented on every new MQTT CONNECT), so a server that cannot be reached does not
    /// make consecutive wills jump.
    async fn reachable(&self) -> Result<(), String> {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            if let Some(tls) = &self.tls {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("TLS server name {:?}: {e}", self.host))?;
                tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
            }
            Ok(())
        };
        tokio::time::timeout(REACH_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {REACH_TIMEOUT:?}")))
    }

    /// NDEATH (QoS 1, its PUBACK awaited briefly), then DISCONNECT.
    async fn goodbye(&mut self, client: &AsyncClient, events: &mut mpsc::Receiver<ConnEvent>) {
        let deadline = Instant::now() + GOODBYE;
        if let Some(death) = self.core.die() {
            let bdseq = self.core.bdseq();
            if self.publish(client, vec![death]).is_ok() {
                while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
                    match ev {
                        ConnEvent::PubAck => break,
                        ConnEvent::Closed(_) => return,
                        _ => {}
                    }
                }
                tracing::info!(bdseq, "Sparkplug upstream: NDEATH published");
            }
        }
        if client.try_disconnect().is_ok() {
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
                if matches!(ev, ConnEvent::Closed(_)) {
                    break;
                }
            }
        }
    }

    /// Applies a STATE message of the primary host: births once it is online, the end of
    /// the session when it goes offline. `Some(End)` when the session must end.
    async fn on_state(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<ConnEvent>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<End>, NodeError> {
        let Some(s) = parse_state(payload) else {
            tracing::warn!(%topic, "unreadable primary host STATE ignored");
            return Ok(None);
        };
        if !self.primary.apply(s) {
            tracing::info!(%topic, "primary host STATE older than the last one seen: ignored");
            return Ok(None);
        }
        self.core.set_host_online(Some(self.primary.online));
        if self.primary.online && !self.core.is_born() {
            tracing::info!("primary host online (upstream)");
            self.births(client)?;
        } else if !self.primary.online && self.core.is_born() {
            tracing::info!("primary host offline (upstream): ending the session");
            // A new session needs a new will: disconnect, reconnect.
            self.goodbye(client, events).await;
            return Ok(Some(End::Reconnect));
        }
        self.update_status();
        Ok(None)
    }

    /// One connection = one Sparkplug session.
    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Result<End, NodeError> {
        tokio::select! {
            _ = stop.changed() => return Ok(End::Stop),
            r = self.reachable() => if let Err(e) = r {
                return Ok(End::Lost(e));
            },
        }
        let bdseq = next_bdseq(load_session(&self.ctx.state, SESSION_KEY).await?);
        save_session(
            &self.ctx.state,
            SESSION_KEY,
            SessionRecord {
                bdseq,
                online: true,
            },
        )
        .await?;
        // The will must carry this session's bdSeq, also while no birth was published yet.
        self.core.die();
        let opts = self.options(bdseq)?;
        let (client, el) = AsyncClient::new(opts, REQUEST_QUEUE);
        let (tx, mut events) = mpsc::channel(EVENT_QUEUE);
        // The connection task dies with its session.
        let _conn = AbortOnDrop(tokio::spawn(connection(el, tx, self.sent.clone())));

        let acked = tokio::select! {
            _ = stop.changed() => return Ok(End::Stop),
            r = tokio::time::timeout(Duration::from_secs(15), events.recv()) => r,
        };
        match acked {
            Ok(Some(ConnEvent::ConnAck)) => {}
            Ok(Some(ConnEvent::Closed(e))) => return Ok(End::Lost(e)),
            Ok(_) => return Ok(End::Lost("connection closed".into())),
            Err(_) => return Ok(End::Lost("no CONNACK within 15 s".into())),
        }
        let group = self.ctx.config.group_id.clone();
        let node_id = self.ctx.edge_node_id.clone();
        let ncmd = Topic::node(&group, MessageType::NCmd, &node_id).to_string();
        let dcmd = format!("{}/+", Topic::node(&group, MessageType::DCmd, &node_id));
        let states = state_topics(self.ctx.config.primary_host_id.as_deref());
        let mut filters = vec![ncmd, dcmd];
        filters.extend(states.iter().cloned());
        for f in filters {
            if let Err(e) = client.try_subscribe(f, QoS::AtLeastOnce) {
                return Ok(End::Lost(format!("subscribe: {e}")));
            }
        }
        self.report.connected = true;
        self.report.connects += 1;
        self.report.last_error = None;
        tracing::info!(server = %self.cfg.server, bdseq, "Sparkplug upstream connected");
        // bdSeq is known from here on (the will), whether or not the host lets us be born.
        self.core.set_bdseq(bdseq);
        if states.is_empty() {
            self.births(&client)?;
        } else {
            // Births wait for a STATE message on this connection (retained: it comes at once).
            self.core.set_host_online(Some(false));
            self.update_status();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut history =
            tokio::time::interval(Duration::from_secs(1) / self.follow.limits.rate.max(1));
        history.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let replaying = self.follow.replay.is_some() && self.core.is_born();
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    self.goodbye(&client, &mut events).await;
                    return Ok(End::Stop);
                }
                ev = events.recv() => {
                    let (topic, payload) = match ev {
                        Some(ConnEvent::Publish { topic, payload }) => (topic, payload),
                        Some(ConnEvent::Closed(e)) => {
                            self.core.die();
                            return Ok(End::Lost(e));
                        }
                        Some(_) => continue,
                        None => {
                            self.core.die();
                            return Ok(End::Lost("connection task ended".into()));
                        }
                    };
                    if states.contains(&topic) {
                        if let Some(end) = self.on_state(&client, &mut events, &topic, &payload).await? {
                            return Ok(end);
                        }
                        continue;
                    }
                    if let Some(end) = self.on_command(&client, &mut events, &topic, &payload).await? {
                        return Ok(end);
                    }
                }
                batch = self.follow.next_live() => {
                    self.on_records(Some(&client), batch?)?;
                }
                _ = tick.tick() => {
                    let g = gateway_metrics(self.ctx);
                    if let Some(o) = self.core.node_data(g, super::now_ms()) {
                        self.publish(&client, vec![o])?;
                    }
                    if self.devices_changed() && self.core.is_born() {
                        tracing::info!("Modbus devices changed: Sparkplug upstream rebirth");
                        self.births(&client)?;
                    } else if self.rebirth_due && self.core.is_born() {
                        self.births(&client)?;
                    }
                    self.follow.commit(false);
                    self.update_status();
                }
                _ = history.tick(), if replaying => self.replay_one(&client)?,
            }
        }
    }

    /// An NCMD/DCMD from the upstream server. `Some(End)` when the session must end.
    async fn on_command(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<ConnEvent>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<End>, NodeError> {
        let Ok(Topic::Node {
            message_type,
            device_id,
            ..
        }) = Topic::parse(topic)
        else {
            return Ok(None);
        };
        // Whoever published on the upstream server: we know the server, not the client.
        let from = Requester::new(
            CommandSource::Upstream,
            Some(format!("upstream:{}", self.cfg.server)),
            correlation(payload),
        );
        let origin = CommandOrigin {
            from: from.clone(),
            allow: &self.ctx.config.commands.allow,
            restricted: self.ctx.config.commands.restrict_dcmd,
        };
        let plan = plan_command(
            &self.core,
            message_type,
            device_id.as_deref(),
            payload,
            &origin,
        );
        let (reboot_asked, next_server) = (plan.reboot, plan.next_server);
        if dispatch(plan, &self.ctx.audit, &self.writes) {
            if self.core.is_born() {
                self.births(client)?;
            }
            rebirth_done(&self.ctx.audit, from.clone());
        }
        if reboot_asked {
            reboot(self.ctx, from.clone());
        }
        if next_server {
            // One server configured: the "next" one is a new session on it.
            node_control_done(&self.ctx.audit, from, NEXT_SERVER, Ok(()));
            tracing::info!("{NEXT_SERVER}: ending the upstream session");
            self.goodbye(client, events).await;
            return Ok(Some(End::Reconnect));
        }
        Ok(None)
    }
}

/// Runs the upstream sessions until `stop` turns true (then NDEATH and DISCONNECT).
pub async fn run(
    ctx: NodeContext,
    cfg: UpstreamConfig,
    writes: mpsc::Sender<WriteJob>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let mut report = UpstreamReport {
        server: cfg.server.clone(),
        ..UpstreamReport::default()
    };
    let limits = HistoryLimits {
        rate: cfg.history_rate,
        max_age_ms: cfg.history_max_age_s.saturating_mul(1000),
        max_records: cfg.history_max_records,
    };
    let setup = split_server(&cfg.server).and_then(|hp| {
        let tls = if cfg.tls {
            Some(tls_config(&cfg)?)
        } else {
            None
        };
        let follow = Follower::open(
            ctx.buffer.clone(),
            ctx.config.group_id.clone(),
            ctx.embedded_node_id.clone(),
            limits,
        )?;
        Ok((hp, tls, follow))
    });
    let ((host, port), tls, follow) = match setup {
        Ok(x) => x,
        Err(e) => {
            // The embedded session goes on; the operator sees why upstream does not.
            tracing::error!(error = %e, "Sparkplug upstream not started");
            report.last_error = Some(e.to_string());
            ctx.status.update(|s| s.upstream = Some(report));
            let _ = stop.wait_for(|s| *s).await;
            return Ok(());
        }
    };
    if ctx.expect_devices && ctx.hub.devices().is_empty() {
        // Let the poller publish its device list first, so the first NBIRTH lists them.
        let mut readings = ctx.hub.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::timeout(Duration::from_secs(5), readings.recv()) => {}
        }
    }
    let known = ctx.hub.devices();
    let client_id = if cfg.client_id.is_empty() {
        format!("ironbridge-{}", ctx.edge_node_id)
    } else {
        cfg.client_id.clone()
    };
    let mut s = Session {
        core: NodeCore::new(&ctx.config.group_id, &ctx.edge_node_id, model(&known)).with_controls(
            NodeControls {
                reboot: ctx.config.commands.allow_reboot,
                next_server: ctx.config.commands.allow_next_server,
            },
        ),
        ctx: &ctx,
        cfg,
        tls,
        host,
        port,
        client_id,
        known,
        follow,
        primary: HostTracker::default(),
        writes,
        report,
        sent: Arc::new(AtomicU64::new(0)),
        rebirth_due: false,
    };
    s.update_status();
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let connects_before = s.report.connects;
        let end = s.session(&mut stop).await?;
        let reason = match &end {
            End::Stop => None,
            End::Reconnect => Some("session ended (reconnecting)".to_string()),
            End::Lost(e) => Some(e.clone()),
        };
        if matches!(end, End::Lost(_)) && s.report.connects == connects_before {
            s.report.connect_failures += 1;
        }
        s.set_disconnected(reason);
        let wait = match end {
            End::Stop => break,
            End::Reconnect => Duration::ZERO,
            End::Lost(e) => {
                if started.elapsed() >= STABLE {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(server = %s.cfg.server, error = %e, retry_in_ms = backoff.as_millis() as u64, "Sparkplug upstream connection lost");
                let w = backoff;
                backoff = next_backoff(backoff);
                w
            }
        };
        let until = tokio::time::sleep(wait);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                _ = stop.changed() => break,
                batch = s.follow.next_live() => s.on_records(None, batch?)?,
            }
        }
        s.follow.commit(false);
    }
    s.follow.commit(true);
    // The session record stays "online: true": harmless for upstream (the broker published
    // the will or our NDEATH); the next connection takes the next bdSeq either way.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_server_addresses() {
        assert_eq!(
            split_server("broker.plant:8883").ok(),
            Some(("broker.plant".to_string(), 8883))
        );
        assert_eq!(
            split_server("[::1]:1883").ok(),
            Some(("::1".to_string(), 1883))
        );
        for bad in ["broker", ":1883", "b:0", "b:x", "b:70000"] {
            assert!(split_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_backoff_is_bounded() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_backoff(d);
            seen.push(d);
        }
        assert_eq!(&seen[..4], [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(*seen.last().unwrap_or(&d), BACKOFF_MAX);
    }

    #[test]
    fn upstream_tls_config_names_the_field() {
        let cfg = UpstreamConfig {
            server: "127.0.0.1:8883".into(),
            client_id: String::new(),
            username: None,
            password: None,
            tls: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            keep_alive_s: 30,
            history_rate: 50,
            history_max_age_s: 60,
            history_max_records: 100,
        };
        let e = tls_config(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("sparkplug.upstream.ca_file"), "{e}");
    }
}
