//! One client connection, from its CONNECT to its end.
//!
//! Inbound, each socket read is decoded into packets; the PUBLISHes of one read are appended
//! through the persistence hook as one batch, and every packet's answer (PUBACK, SUBACK, ...)
//! waits in a pipeline behind the batches before it, so answers keep the order of the packets
//! and no PUBACK/PUBREC leaves before its message is durable. A message is routed to
//! subscribers only once durable, too. Outbound, a writer task owns the socket's write half;
//! deliveries are taken from the session queue only while the writer has room and the
//! client's receive maximum allows.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};

use crate::acl::Action;
use crate::auth::AuthOutcome;
use crate::broker::{Attached, Broker};
use crate::clients::{ClientInfo, remote};
use crate::codec::{
    self, ConnAck, ConnAckProperties, Connect, DecodeError, Decoder, Disconnect, Packet, Protocol,
    PubResp, Publish, PublishProperties, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, reason,
};
use crate::hook::{Accepted, Durable};
use crate::message::{Message, Publisher};
use crate::session::{Inflight, Kick, Queued, Session};
use crate::stats::{Gauge, MqttStats, UserEvent};
use crate::topic;

/// Read batches that may wait for their append at once (group commit makes more useless).
const BATCHES_IN_FLIGHT: usize = 8;
const READ_CHUNK: usize = 16 * 1024;
/// Encoded packets waiting for the writer task.
const WRITER_QUEUE: usize = 64;
/// A client that does not read what we send for this long is cut off.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// How long a connection may take to acknowledge its last deliveries at shutdown.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);
/// How long a socket refused for a connection limit may take to send its CONNECT.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);
/// Deliveries encoded per wake-up before the connection looks at its socket again.
const DELIVERIES_PER_TURN: usize = 256;

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The client closed the socket or sent DISCONNECT.
    Closed {
        will: bool,
    },
    /// A protocol violation: MQTT 5 clients get a DISCONNECT with this reason.
    Violation(u8, String),
    /// The server ends it (takeover, shutdown) with this reason.
    Kicked(u8),
    KeepAlive,
    Io(std::io::Error),
    Append(String),
}

/// The answers to one read's packets, sent once its publishes are durable.
struct Batch {
    durable: Option<Durable>,
    read_at: Instant,
    publishes: usize,
    /// QoS 1/2 publishes among them (they count against the receive maximum until acked).
    acked: usize,
    actions: Vec<Deferred>,
}

/// Something that must wait for the batches before it.
enum Deferred {
    Send(Box<Packet>),
    Route(Arc<Message>),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Disconnect {
        will: bool,
    },
    Fail(u8, String),
    /// A QoS 2 publish is durable: the session owns its packet id until PUBREL.
    Qos2Owned(u16),
}

/// What a connection knows of its client after CONNECT.
struct Client {
    protocol: Protocol,
    client_id: String,
    user: Option<String>,
    peer: SocketAddr,
    /// Stamped on every message this client publishes (its will too).
    publisher: Arc<Publisher>,
    will: Option<Message>,
    will_delay_s: u32,
    /// The client's receive maximum (QoS 1/2 messages in flight to it).
    send_window: usize,
    /// The client's maximum packet size.
    max_packet_out: usize,
    aliases: Vec<Option<String>>,
    problem_information: bool,
}

/// Serves one accepted socket until it closes.
pub(crate) async fn serve<S>(broker: Arc<Broker>, stream: S, peer: SocketAddr, tls: bool)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = Decoder::new(broker.cfg.max_connect_bytes);
    let deadline = Duration::from_millis(broker.cfg.connect_timeout_ms);
    let (tx, writer) = spawn_writer(wr);
    let connect = match timeout(deadline, read_connect(&mut rd, &mut buf, &mut decoder)).await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            // An unsupported protocol version is a refusal (as documented in `MqttStats`), not a
            // protocol error.
            let counter = if e.reason_code() == reason::UNSUPPORTED_PROTOCOL_VERSION {
                &broker.stats.connections_rejected
            } else {
                &broker.stats.protocol_errors
            };
            MqttStats::inc(counter, 1);
            tracing::info!(%peer, error = %e, "MQTT connection closed before a valid CONNECT");
            if e.reason_code() == reason::UNSUPPORTED_PROTOCOL_VERSION {
                let _ = send_connack(
                    &tx,
                    Protocol::V311,
                    reason::UNSUPPORTED_PROTOCOL_VERSION,
                    false,
                    ConnAckProperties::default(),
                )
                .await;
            } else if let Some(Protocol::V5) = decoder.protocol() {
                let _ = send_connack(
                    &tx,
                    Protocol::V5,
                    e.reason_code(),
                    false,
                    ConnAckProperties::default(),
                )
                .await;
            }
            return end_refused(tx, writer, &mut rd).await;
        }
        Err(_) => {
            MqttStats::inc(&broker.stats.protocol_errors, 1);
            tracing::info!(%peer, "no MQTT CONNECT in time");
            return end_refused(tx, writer, &mut rd).await;
        }
    };
    decoder.set_max_packet_size(broker.cfg.max_packet_bytes());
    let protocol = connect.protocol;
    let refuse = |code: u8| {
        let tx = tx.clone();
        async move {
            let _ = send_connack(&tx, protocol, code, false, ConnAckProperties::default()).await;
        }
    };
    // Enhanced authentication (AUTH packets) is not offered [MQTT-4.12.0-1].
    if connect.properties.authentication_method.is_some() {
        MqttStats::inc(&broker.stats.connections_rejected, 1);
        refuse(reason::BAD_AUTHENTICATION_METHOD).await;
        return end_refused(tx, writer, &mut rd).await;
    }
    let user = connect.username.clone();
    let account = broker.account(user.as_deref());
    match broker
        .auth
        .check(peer.ip(), user.as_deref(), connect.password.as_deref())
        .await
    {
        AuthOutcome::Accepted => {}
        outcome => {
            let code = match outcome {
                AuthOutcome::NotAuthorized => reason::NOT_AUTHORIZED,
                AuthOutcome::Busy => {
                    MqttStats::inc(&broker.stats.auth_busy, 1);
                    reason::SERVER_BUSY
                }
                AuthOutcome::Throttled(_) => {
                    MqttStats::inc(&broker.stats.auth_throttled, 1);
                    reason::BANNED
                }
                _ => reason::BAD_USER_NAME_OR_PASSWORD,
            };
            if code != reason::SERVER_BUSY {
                MqttStats::inc(&broker.stats.auth_failures, 1);
                broker.stats.user_event(&account, UserEvent::AuthFailure);
            } else {
                MqttStats::inc(&broker.stats.connections_rejected, 1);
            }
            tracing::warn!(%peer, client_id = ?connect.client_id, user = ?user, ?outcome, "MQTT login refused");
            refuse(code).await;
            return end_refused(tx, writer, &mut rd).await;
        }
    }
    let mut client_id = connect.client_id.clone();
    let mut assigned = None;
    if client_id.is_empty() {
        // 3.1.1: an empty id needs a clean session [MQTT-3.1.3-8]; MQTT 5: we assign one
        // and say so [MQTT-3.2.2-16].
        if protocol == Protocol::V311 && !connect.clean_start {
            MqttStats::inc(&broker.stats.connections_rejected, 1);
            refuse(reason::CLIENT_IDENTIFIER_NOT_VALID).await;
            return end_refused(tx, writer, &mut rd).await;
        }
        client_id = assign_client_id();
        assigned = Some(client_id.clone());
    }
    if broker.cfg.client_id_prefix_user
        && let Some(u) = &user
        && !client_id.starts_with(u.as_str())
    {
        MqttStats::inc(&broker.stats.connections_rejected, 1);
        tracing::warn!(%peer, client_id = ?client_id, user = ?u, "MQTT client id does not start with its user name");
        refuse(reason::CLIENT_IDENTIFIER_NOT_VALID).await;
        return end_refused(tx, writer, &mut rd).await;
    }
    let publisher = Arc::new(Publisher {
        client_id: client_id.clone(),
        username: user.clone(),
        peer,
    });
    // A will is a publish like any other: checked against the topic rules at CONNECT.
    let will = match &connect.will {
        Some(w) => {
            if topic::valid_topic_name(&w.topic).is_err()
                || w.topic.len() > broker.cfg.max_topic_bytes
            {
                MqttStats::inc(&broker.stats.protocol_errors, 1);
                refuse(reason::TOPIC_NAME_INVALID).await;
                return end_refused(tx, writer, &mut rd).await;
            }
            // As in a PUBLISH [MQTT-3.3.2-14].
            if let Some(r) = &w.properties.response_topic
                && topic::valid_topic_name(r).is_err()
            {
                MqttStats::inc(&broker.stats.protocol_errors, 1);
                refuse(reason::PROTOCOL_ERROR).await;
                return end_refused(tx, writer, &mut rd).await;
            }
            if !broker.allowed(user.as_deref(), &client_id, Action::Publish, &w.topic) {
                refuse(reason::NOT_AUTHORIZED).await;
                return end_refused(tx, writer, &mut rd).await;
            }
            let mut m = Message::new(w.topic.clone(), w.payload.clone(), w.qos, w.retain);
            m.payload_format_indicator = w.properties.payload_format_indicator;
            m.content_type = w.properties.content_type.clone();
            m.response_topic = w.properties.response_topic.clone();
            m.correlation_data = w.properties.correlation_data.clone();
            m.user_properties = w.properties.user_properties.clone();
            m.expires_at = w
                .properties
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(s as u64));
            m.publisher = Some(publisher.clone());
            Some(m)
        }
        None => None,
    };
    let expiry_s = match protocol {
        Protocol::V5 => connect
            .properties
            .session_expiry_interval
            .min(broker.cfg.max_session_expiry_s),
        // 3.1.1 clean session = 0: the session persists, for as long as the broker allows.
        Protocol::V311 if !connect.clean_start => broker.cfg.max_session_expiry_s,
        Protocol::V311 => 0,
    };
    let kick = Kick::new();
    let Ok(Attached {
        session,
        generation,
        session_present,
    }) = broker.attach(
        &client_id,
        user.as_deref(),
        connect.clean_start,
        expiry_s,
        kick.clone(),
    )
    else {
        MqttStats::inc(&broker.stats.connections_rejected, 1);
        tracing::warn!(%peer, client_id = ?client_id, max = broker.cfg.max_sessions, "MQTT session limit reached");
        refuse(match protocol {
            Protocol::V5 => reason::QUOTA_EXCEEDED,
            Protocol::V311 => reason::SERVER_UNAVAILABLE,
        })
        .await;
        return end_refused(tx, writer, &mut rd).await;
    };
    let max_ka = broker.cfg.max_keep_alive_s;
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_ka {
        max_ka
    } else {
        connect.keep_alive
    };
    let mut props = ConnAckProperties::default();
    if protocol == Protocol::V5 {
        props.receive_maximum = Some(broker.cfg.max_unacked_per_client.min(65_535) as u16);
        props.maximum_packet_size =
            Some(broker.cfg.max_packet_bytes().min(u32::MAX as usize) as u32);
        props.topic_alias_maximum = Some(broker.cfg.topic_alias_maximum);
        props.retain_available = Some(true);
        props.wildcard_subscription_available = Some(true);
        props.subscription_identifiers_available = Some(true);
        props.shared_subscription_available = Some(true);
        props.assigned_client_identifier = assigned;
        if keep_alive != connect.keep_alive {
            props.server_keep_alive = Some(keep_alive);
        }
        if expiry_s != connect.properties.session_expiry_interval {
            props.session_expiry_interval = Some(expiry_s);
        }
    }
    if send_connack(&tx, protocol, reason::SUCCESS, session_present, props)
        .await
        .is_err()
    {
        broker.detach(&session, generation);
        return end_refused(tx, writer, &mut rd).await;
    }
    let _connected = Gauge::up(&broker.stats.connections_current);
    MqttStats::inc(&broker.stats.connections_total, 1);
    let _listed = broker.clients.add(ClientInfo {
        client_id: client_id.clone(),
        username: user.clone(),
        remote: remote(peer),
        protocol: match protocol {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        },
        tls,
        connected_at: crate::now_ms(),
    });
    tracing::debug!(%peer, client_id = ?client_id, ?protocol, user = ?user, session_present, "MQTT client connected");
    let client = Client {
        protocol,
        client_id,
        user,
        peer,
        publisher,
        will,
        will_delay_s: connect
            .will
            .as_ref()
            .map_or(0, |w| w.properties.will_delay_interval),
        send_window: connect
            .properties
            .receive_maximum
            .map_or(65_535, usize::from)
            .min(broker.cfg.max_inflight_messages),
        max_packet_out: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        aliases: vec![None; broker.cfg.topic_alias_maximum as usize],
        problem_information: connect.properties.request_problem_information,
    };
    let mut conn = Connection {
        broker: broker.clone(),
        session: session.clone(),
        kick,
        client,
        tx,
        pipeline: FuturesOrdered::new(),
        unacked: 0,
        keep_alive: Duration::from_secs(keep_alive as u64) * 3 / 2,
        last_packet: tokio::time::Instant::now(),
        writer_full: false,
        input_done: false,
        pending_qos2: HashSet::new(),
    };
    let end = conn.run(&mut rd, buf, decoder, session_present).await;
    conn.finish(end, generation).await;
    let Connection { tx, .. } = conn;
    close(tx, writer).await;
    linger(&mut rd).await;
}

/// Closes a connection that never got served: the refusal is written, then [`linger`].
async fn end_refused<R: AsyncRead + Unpin>(
    tx: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
    rd: &mut R,
) {
    close(tx, writer).await;
    linger(rd).await;
}

/// After our FIN, reads (and drops) what the client still sends until it closes too, briefly:
/// closing a socket with unread input resets it, and a reset can destroy what we sent last
/// (a DISCONNECT, the final deliveries) before the client reads it.
async fn linger<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut sink = [0u8; 1024];
    let _ = timeout(Duration::from_secs(1), async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Answers a socket over a connection limit: reads its CONNECT (briefly) to refuse it in its
/// own protocol with `code` (3.1.1: "server unavailable"), then closes.
pub(crate) async fn refuse<S>(stream: S, max_connect_bytes: usize, code: u8)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let mut decoder = Decoder::new(max_connect_bytes);
    let read = read_connect(&mut rd, &mut buf, &mut decoder);
    if let Ok(Ok(Some(c))) = timeout(REFUSAL_DEADLINE, read).await {
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: code,
            properties: ConnAckProperties::default(),
        });
        let mut out = BytesMut::new();
        if codec::encode(&p, c.protocol, &mut out).is_ok() {
            let _ = timeout(REFUSAL_DEADLINE, wr.write_all(&out)).await;
        }
    }
    let _ = timeout(REFUSAL_DEADLINE, wr.shutdown()).await;
}

fn assign_client_id() -> String {
    let mut b = [0u8; 12];
    if getrandom(&mut b).is_err() {
        let t = crate::now_ms() as u64;
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("ironbridge-{hex}")
}

fn getrandom(b: &mut [u8]) -> Result<(), ()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(b))
        .map_err(|_| ())
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Option<Connect>, DecodeError> {
    loop {
        match decoder.decode(buf)? {
            Some(Packet::Connect(c)) => return Ok(Some(c)),
            Some(_) => return Err(DecodeError::protocol("first packet is not CONNECT")),
            None => {}
        }
        buf.reserve(1024);
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn send_connack(
    tx: &mpsc::Sender<Bytes>,
    protocol: Protocol,
    code: u8,
    session_present: bool,
    properties: ConnAckProperties,
) -> Result<(), ()> {
    let p = Packet::ConnAck(ConnAck {
        session_present,
        reason: code,
        properties,
    });
    let mut out = BytesMut::new();
    codec::encode(&p, protocol, &mut out).map_err(|_| ())?;
    tx.send(out.freeze()).await.map_err(|_| ())
}

fn spawn_writer<W: AsyncWrite + Send + Unpin + 'static>(
    mut wr: WriteHalf<W>,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>)
where
    ReadHalf<W>: Send,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    let task = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(first) = rx.recv().await {
            out.extend_from_slice(&first);
            while out.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            let write = async {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            match timeout(WRITE_STALL, write).await {
                Ok(Ok(())) => out.clear(),
                _ => break,
            }
        }
        let _ = timeout(Duration::from_secs(1), wr.shutdown()).await;
    });
    (tx, task)
}

/// Closes the writer: what was queued is written (bounded by the write stall timeout).
async fn close(tx: mpsc::Sender<Bytes>, writer: tokio::task::JoinHandle<()>) {
    drop(tx);
    let _ = timeout(Duration::from_secs(2), writer).await;
}

struct Connection {
    broker: Arc<Broker>,
    session: Arc<Session>,
    kick: Arc<Kick>,
    client: Client,
    tx: mpsc::Sender<Bytes>,
    pipeline: FuturesOrdered<BatchFuture>,
    /// QoS 1/2 publishes read and not yet acknowledged (the receive maximum's count).
    unacked: usize,
    keep_alive: Duration,
    /// On tokio's clock, like the `sleep_until` it arms (so a paused test clock applies).
    last_packet: tokio::time::Instant,
    /// Deliveries stopped because the writer was full; resumed when it has room.
    writer_full: bool,
    /// A DISCONNECT or a violation was read: nothing after it is read or handled (the
    /// connection ends once the answers before it went out).
    input_done: bool,
    /// QoS 2 packet ids read and not yet answered with PUBREC (their batch is not durable
    /// yet): resends are duplicates on this connection, but the session takes ownership (its
    /// `incoming_qos2`) only with the PUBREC [MQTT-4.3.3-9].
    pending_qos2: HashSet<u16>,
}

type BatchFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Result<(), String>, Batch)> + Send>>;

fn batch_future(mut batch: Batch) -> BatchFuture {
    Box::pin(async move {
        let r = match batch.durable.take() {
            Some(d) => d.await.map_err(|e| e.0),
            None => Ok(()),
        };
        (r, batch)
    })
}

impl Connection {
    fn protocol(&self) -> Protocol {
        self.client.protocol
    }

    async fn send(&mut self, p: &Packet) -> Result<(), End> {
        let mut out = BytesMut::new();
        codec::encode(p, self.protocol(), &mut out)
            .map_err(|e| End::Violation(reason::IMPLEMENTATION_SPECIFIC_ERROR, e.to_string()))?;
        self.tx
            .send(out.freeze())
            .await
            .map_err(|_| End::Io(std::io::ErrorKind::BrokenPipe.into()))
    }

    async fn run(
        &mut self,
        rd: &mut ReadHalf<impl AsyncRead + AsyncWrite + Send + Unpin>,
        mut buf: BytesMut,
        mut decoder: Decoder,
        session_present: bool,
    ) -> End {
        if session_present && let Err(e) = self.resend_inflight().await {
            return e;
        }
        let kick = self.kick.clone();
        let session = self.session.clone();
        let writer = self.tx.clone();
        let receive_max = self.broker.cfg.max_unacked_per_client;
        // Bytes left over in `buf` after CONNECT are handled first.
        let mut pending_read = !buf.is_empty();
        let mut paused_logged = false;
        let mut input_end: Option<End> = None;
        let mut draining: Option<tokio::time::Instant> = None;
        loop {
            if pending_read {
                pending_read = false;
                if let Err(e) = self.handle_read(&mut buf, &mut decoder).await {
                    return e;
                }
            }
            // The input ended: what was read before still completes (a DISCONNECT in it
            // decides about the will), then the connection ends.
            if let Some(end) = input_end.take_if(|_| self.pipeline.is_empty()) {
                return end;
            }
            if draining.is_some() && self.pipeline.is_empty() && self.delivered_all() {
                return End::Kicked(reason::SERVER_SHUTTING_DOWN);
            }
            let can_read = input_end.is_none()
                && !self.input_done
                && self.pipeline.len() < BATCHES_IN_FLIGHT
                && (self.protocol() == Protocol::V5 || self.unacked < receive_max);
            if !can_read && !paused_logged && self.unacked >= receive_max {
                paused_logged = true;
                MqttStats::inc(&self.broker.stats.unacked_limit_waits, 1);
            }
            // Paused by us (not reading the client until its publishes are durable): its
            // silence is ours, so the keep-alive period starts again when reading resumes.
            let paused = !can_read && input_end.is_none() && !self.input_done;
            if paused {
                self.last_packet = tokio::time::Instant::now();
            }
            let deadline = self.last_packet + self.keep_alive;
            tokio::select! {
                biased;
                _ = kick.notify.notified() => match self.kick.reason() {
                    // Shutdown: what is queued (the edge node's NDEATH) goes out first, and the
                    // connection stays until the client acknowledged it (1 s at most).
                    Some(reason::SERVER_SHUTTING_DOWN) if draining.is_none() => {
                        draining = Some(tokio::time::Instant::now() + SHUTDOWN_DRAIN);
                        if let Err(e) = self.deliver().await {
                            return e;
                        }
                    }
                    Some(r) => return End::Kicked(r),
                    None => {}
                },
                _ = sleep_until(draining.unwrap_or(deadline)), if draining.is_some() => {
                    return End::Kicked(reason::SERVER_SHUTTING_DOWN);
                }
                Some((result, batch)) = self.pipeline.next(), if !self.pipeline.is_empty() => {
                    if let Err(e) = self.complete(result, batch).await {
                        return e;
                    }
                    paused_logged = false;
                }
                permit = writer.reserve(), if self.writer_full => {
                    drop(permit);
                    self.writer_full = false;
                    if let Err(e) = self.deliver().await {
                        return e;
                    }
                }
                _ = session.ready.notified(), if !self.writer_full => {
                    if let Err(e) = self.deliver().await {
                        return e;
                    }
                }
                r = rd.read_buf(&mut buf), if can_read => match r {
                    Ok(0) => input_end = Some(End::Closed { will: true }),
                    Ok(_) => {
                        self.last_packet = tokio::time::Instant::now();
                        if let Err(e) = self.handle_read(&mut buf, &mut decoder).await {
                            return e;
                        }
                        if buf.capacity() - buf.len() < 1024 {
                            buf.reserve(READ_CHUNK);
                        }
                    }
                    Err(e) => input_end = Some(End::Io(e)),
                },
                _ = sleep_until(deadline), if !paused => return End::KeepAlive,
            }
        }
    }

    /// Decodes what was read and queues one batch with its publishes and answers.
    async fn handle_read(&mut self, buf: &mut BytesMut, decoder: &mut Decoder) -> Result<(), End> {
        let mut batch = Batch {
            durable: None,
            read_at: Instant::now(),
            publishes: 0,
            acked: 0,
            actions: Vec::new(),
        };
        let mut messages: Vec<Arc<Message>> = Vec::new();
        let mut failed = None;
        loop {
            let packet = match decoder.decode(buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(Deferred::Fail(e.reason_code(), e.to_string()));
                    break;
                }
            };
            match self.packet(packet, &mut batch, &mut messages) {
                Ok(true) => {}
                Ok(false) => {
                    self.input_done = true;
                    break;
                }
                Err(d) => {
                    failed = Some(d);
                    break;
                }
            }
        }
        if !messages.is_empty() {
            let payload: u64 = messages.iter().map(|m| m.payload.len() as u64).sum();
            MqttStats::inc(&self.broker.stats.publishes_received, messages.len() as u64);
            MqttStats::inc(&self.broker.stats.publish_payload_bytes, payload);
            let accepted: Vec<Accepted<'_>> = messages
                .iter()
                .map(|m| Accepted {
                    message: m.as_ref(),
                    client_id: &self.client.client_id,
                })
                .collect();
            match self.broker.persistence.append(&accepted).await {
                Ok(d) => batch.durable = Some(d),
                Err(e) => {
                    MqttStats::inc(&self.broker.stats.append_errors, 1);
                    return Err(End::Append(e.0));
                }
            }
            drop(accepted);
            batch.publishes = messages.len();
        }
        if let Some(f) = failed {
            // The connection is condemned: what the client sends after this is not handled.
            self.input_done = true;
            batch.actions.push(f);
        }
        if !batch.actions.is_empty() || batch.durable.is_some() {
            self.pipeline.push_back(batch_future(batch));
        }
        Ok(())
    }

    /// Handles one inbound packet into `batch`; `Ok(false)` to stop reading (DISCONNECT).
    fn packet(
        &mut self,
        packet: Packet,
        batch: &mut Batch,
        messages: &mut Vec<Arc<Message>>,
    ) -> Result<bool, Deferred> {
        let v5 = self.protocol() == Protocol::V5;
        match packet {
            Packet::Publish(p) => self.publish(p, batch, messages)?,
            Packet::PubAck(r) => self.acked(r.packet_id, false),
            Packet::PubRec(r) => {
                let known = matches!(
                    self.session.lock().inflight.get(&r.packet_id),
                    Some(Inflight::Publish(_))
                );
                if known {
                    if r.reason >= 0x80 {
                        // The client refused it: the exchange ends here [MQTT-4.3.3-?].
                        self.acked(r.packet_id, false);
                    } else {
                        self.session
                            .lock()
                            .inflight
                            .insert(r.packet_id, Inflight::Released);
                        batch
                            .actions
                            .push(Deferred::Send(Box::new(Packet::PubRel(PubResp {
                                packet_id: r.packet_id,
                                ..PubResp::default()
                            }))));
                    }
                } else {
                    batch
                        .actions
                        .push(Deferred::Send(Box::new(Packet::PubRel(PubResp {
                            packet_id: r.packet_id,
                            reason: if v5 {
                                reason::PACKET_IDENTIFIER_NOT_FOUND
                            } else {
                                0
                            },
                            ..PubResp::default()
                        }))));
                }
            }
            Packet::PubRel(r) => {
                let known = self.session.lock().incoming_qos2.remove(&r.packet_id);
                batch
                    .actions
                    .push(Deferred::Send(Box::new(Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        reason: if known || !v5 {
                            0
                        } else {
                            reason::PACKET_IDENTIFIER_NOT_FOUND
                        },
                        ..PubResp::default()
                    }))));
            }
            Packet::PubComp(r) => self.acked(r.packet_id, true),
            Packet::Subscribe(s) => batch.actions.push(Deferred::Subscribe(s)),
            Packet::Unsubscribe(u) => batch.actions.push(Deferred::Unsubscribe(u)),
            Packet::PingReq => batch
                .actions
                .push(Deferred::Send(Box::new(Packet::PingResp))),
            Packet::Disconnect(d) => {
                if let Some(e) = d.session_expiry_interval {
                    // Zero at CONNECT cannot become non-zero at DISCONNECT [MQTT-3.14.2-2].
                    let mut s = self.session.lock();
                    if s.expiry_s == 0 && e != 0 {
                        drop(s);
                        return Err(Deferred::Fail(
                            reason::PROTOCOL_ERROR,
                            "session expiry set at DISCONNECT after 0 at CONNECT".into(),
                        ));
                    }
                    s.expiry_s = e.min(self.broker.cfg.max_session_expiry_s);
                }
                batch.actions.push(Deferred::Disconnect {
                    will: d.reason == reason::DISCONNECT_WITH_WILL,
                });
                return Ok(false);
            }
            Packet::Connect(_) => {
                return Err(Deferred::Fail(
                    reason::PROTOCOL_ERROR,
                    "second CONNECT [MQTT-3.1.0-2]".into(),
                ));
            }
            Packet::Auth(_) => {
                return Err(Deferred::Fail(
                    reason::PROTOCOL_ERROR,
                    "AUTH without an authentication method".into(),
                ));
            }
            other => {
                return Err(Deferred::Fail(
                    reason::PROTOCOL_ERROR,
                    format!("a client may not send {}", packet_name(&other)),
                ));
            }
        }
        Ok(true)
    }

    fn publish(
        &mut self,
        mut p: Publish,
        batch: &mut Batch,
        messages: &mut Vec<Arc<Message>>,
    ) -> Result<(), Deferred> {
        let v5 = self.protocol() == Protocol::V5;
        let fail = |code: u8, why: &str| Err(Deferred::Fail(code, why.to_string()));
        if p.payload.len() > self.broker.cfg.max_payload_bytes {
            return fail(
                reason::PACKET_TOO_LARGE,
                "payload larger than mqtt.max_payload_bytes",
            );
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return fail(
                reason::PROTOCOL_ERROR,
                "PUBLISH from a client with a subscription identifier [MQTT-3.3.4-6]",
            );
        }
        if let Some(alias) = p.properties.topic_alias.take() {
            let slot = (alias as usize).checked_sub(1);
            let Some(slot) = slot.filter(|s| *s < self.client.aliases.len()) else {
                return fail(
                    reason::TOPIC_ALIAS_INVALID,
                    "topic alias 0 or above the maximum [MQTT-3.3.2-8/-9]",
                );
            };
            if p.topic.is_empty() {
                match &self.client.aliases[slot] {
                    Some(t) => p.topic = t.clone(),
                    None => return fail(reason::PROTOCOL_ERROR, "unknown topic alias"),
                }
            } else {
                self.client.aliases[slot] = Some(p.topic.clone());
            }
        }
        if p.topic.len() > self.broker.cfg.max_topic_bytes {
            return fail(
                reason::TOPIC_NAME_INVALID,
                "topic longer than mqtt.max_topic_bytes",
            );
        }
        if let Err(e) = topic::valid_topic_name(&p.topic) {
            return fail(e.reason_code(), &e.to_string());
        }
        // A response topic is a topic name too: no wildcards, not empty [MQTT-3.3.2-14].
        if let Some(r) = &p.properties.response_topic
            && topic::valid_topic_name(r).is_err()
        {
            return fail(
                reason::PROTOCOL_ERROR,
                "response topic is not a valid topic name [MQTT-3.3.2-14]",
            );
        }
        let qos = p.qos;
        let ack = |code: u8| match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubResp {
                packet_id: p.packet_id.unwrap_or(0),
                reason: code,
                ..PubResp::default()
            })),
            QoS::ExactlyOnce => Some(Packet::PubRec(PubResp {
                packet_id: p.packet_id.unwrap_or(0),
                reason: code,
                ..PubResp::default()
            })),
        };
        if qos != QoS::AtMostOnce {
            self.unacked += 1;
            batch.acked += 1;
            if v5 && self.unacked > self.broker.cfg.max_unacked_per_client {
                return fail(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "more unacknowledged publishes than the receive maximum [MQTT-3.3.4-9]",
                );
            }
        }
        // A QoS 2 resend before PUBREL was accepted already [MQTT-4.3.3-10]: only PUBREC again.
        if qos == QoS::ExactlyOnce
            && let Some(id) = p.packet_id
            && (self.pending_qos2.contains(&id) || self.session.lock().incoming_qos2.contains(&id))
        {
            batch
                .actions
                .extend(ack(0).map(|p| Deferred::Send(Box::new(p))));
            return Ok(());
        }
        if !self.broker.allowed(
            self.client.user.as_deref(),
            &self.client.client_id,
            Action::Publish,
            &p.topic,
        ) {
            tracing::info!(peer = %self.client.peer, client_id = ?self.client.client_id, topic = ?p.topic, "MQTT publish refused by the topic rules");
            if !v5 {
                // 3.1.1 has no negative acknowledgement: close [MQTT-3.3.5-2].
                return fail(reason::NOT_AUTHORIZED, "publish not authorized");
            }
            batch
                .actions
                .extend(ack(reason::NOT_AUTHORIZED).map(|p| Deferred::Send(Box::new(p))));
            return Ok(());
        }
        if v5
            && p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            if qos == QoS::AtMostOnce {
                return fail(
                    reason::PAYLOAD_FORMAT_INVALID,
                    "payload is not UTF-8 as its format indicator says",
                );
            }
            batch
                .actions
                .extend(ack(reason::PAYLOAD_FORMAT_INVALID).map(|p| Deferred::Send(Box::new(p))));
            return Ok(());
        }
        let props = std::mem::take(&mut p.properties);
        let msg = Message {
            topic: std::mem::take(&mut p.topic),
            payload: p.payload,
            qos,
            retain: p.retain,
            payload_format_indicator: props.payload_format_indicator,
            expires_at: props
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(s as u64)),
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties: props.user_properties,
            origin: Some(self.session.key),
            publisher: Some(self.client.publisher.clone()),
        };
        // Routed at its place among the read's packets (before its own ack, and before a
        // later SUBSCRIBE/UNSUBSCRIBE of the same read takes effect [MQTT-3.10.4-2]).
        let msg = Arc::new(msg);
        messages.push(msg.clone());
        batch.actions.push(Deferred::Route(msg));
        if qos == QoS::ExactlyOnce
            && let Some(id) = p.packet_id
        {
            // Owned by the session once durable, with the PUBREC: a connection that ends before
            // (taken over, append failed) has not accepted it, and the client's resend is new.
            self.pending_qos2.insert(id);
            batch.actions.push(Deferred::Qos2Owned(id));
        }
        batch
            .actions
            .extend(ack(0).map(|p| Deferred::Send(Box::new(p))));
        Ok(())
    }

    /// Nothing queued for the client and nothing waiting for its acknowledgement.
    fn delivered_all(&self) -> bool {
        let s = self.session.lock();
        s.queue.is_empty() && s.inflight.is_empty()
    }

    /// A PUBACK/PUBCOMP (or refusing PUBREC) for an outbound message.
    fn acked(&self, packet_id: u16, comp: bool) {
        let mut s = self.session.lock();
        let matches = match s.inflight.get(&packet_id) {
            Some(Inflight::Publish(_)) => !comp,
            Some(Inflight::Released) => comp,
            None => false,
        };
        if matches {
            s.inflight.remove(&packet_id);
            drop(s);
            // A slot opened in the send window.
            self.session.ready.notify_one();
        }
    }

    /// A batch became durable (or failed): carry out its answers in order.
    async fn complete(&mut self, result: Result<(), String>, batch: Batch) -> Result<(), End> {
        if let Err(e) = result {
            MqttStats::inc(&self.broker.stats.append_errors, 1);
            return Err(End::Append(e));
        }
        if batch.publishes > 0 {
            MqttStats::inc(
                &self.broker.stats.publishes_appended,
                batch.publishes as u64,
            );
            self.broker
                .stats
                .record_durable_wait(batch.read_at.elapsed().as_micros() as u64);
        }
        self.unacked = self.unacked.saturating_sub(batch.acked);
        let mut route = Vec::new();
        for action in batch.actions {
            match action {
                Deferred::Route(m) => route.push(m),
                other => {
                    if !route.is_empty() {
                        self.broker.route(&route);
                        route.clear();
                    }
                    match other {
                        Deferred::Send(p) => self.send(&p).await?,
                        Deferred::Subscribe(s) => self.subscribe(s).await?,
                        Deferred::Unsubscribe(u) => self.unsubscribe(u).await?,
                        Deferred::Disconnect { will } => return Err(End::Closed { will }),
                        Deferred::Fail(code, why) => return Err(End::Violation(code, why)),
                        Deferred::Qos2Owned(id) => {
                            self.pending_qos2.remove(&id);
                            self.session.lock().incoming_qos2.insert(id);
                        }
                        Deferred::Route(_) => {}
                    }
                }
            }
        }
        if !route.is_empty() {
            self.broker.route(&route);
        }
        Ok(())
    }

    async fn subscribe(&mut self, s: Subscribe) -> Result<(), End> {
        let v5 = self.protocol() == Protocol::V5;
        let mut reasons = Vec::with_capacity(s.filters.len());
        for (filter, opts) in &s.filters {
            let code = if filter.len() > self.broker.cfg.max_topic_bytes {
                reason::TOPIC_FILTER_INVALID
            } else if let Err(e) = topic::parse_filter(filter) {
                e.reason_code()
            } else if v5 && opts.no_local && filter.starts_with("$share/") {
                // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
                return Err(End::Violation(
                    reason::PROTOCOL_ERROR,
                    "no local on a shared subscription".into(),
                ));
            } else if !self.broker.allowed(
                self.client.user.as_deref(),
                &self.client.client_id,
                Action::Subscribe,
                filter,
            ) {
                tracing::info!(peer = %self.client.peer, client_id = ?self.client.client_id, filter = ?filter, "MQTT subscription refused by the topic rules");
                reason::NOT_AUTHORIZED
            } else {
                self.broker
                    .subscribe(&self.session, filter, *opts, s.subscription_identifier)
            };
            reasons.push(code);
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reasons,
            ..SubAck::default()
        }))
        .await?;
        // Retained messages queued by the subscribe go out after the SUBACK.
        self.deliver().await
    }

    async fn unsubscribe(&mut self, u: Unsubscribe) -> Result<(), End> {
        let reasons = u
            .filters
            .iter()
            .map(|f| {
                if self.broker.unsubscribe(&self.session, f) {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons,
            ..UnsubAck::default()
        }))
        .await
    }

    /// After a resumed session: unacknowledged PUBLISHes again with DUP, PUBRELs again
    /// [MQTT-4.4.0-1].
    async fn resend_inflight(&mut self) -> Result<(), End> {
        let inflight: Vec<(u16, Inflight)> = self
            .session
            .lock()
            .inflight
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, f) in inflight {
            match f {
                Inflight::Publish(q) => {
                    if let Some(p) = self.outbound(&q, Some(id), true) {
                        // This connection's maximum packet size may be smaller than the one it
                        // was first sent under: dropped as if delivered [MQTT-3.1.2-25].
                        let fits = codec::encoded_len(&p, self.protocol())
                            .is_ok_and(|n| n <= self.client.max_packet_out);
                        if !fits {
                            MqttStats::inc(&self.broker.stats.messages_oversize, 1);
                            self.session.lock().inflight.remove(&id);
                            continue;
                        }
                        self.send(&p).await?;
                    }
                }
                Inflight::Released => {
                    self.send(&Packet::PubRel(PubResp {
                        packet_id: id,
                        ..PubResp::default()
                    }))
                    .await?
                }
            }
        }
        self.deliver().await
    }

    /// The PUBLISH for a queued message, or `None` when it expired before its delivery started
    /// [MQTT-3.3.2-5]. A resend (`dup`) goes out even if expired meanwhile: its delivery started
    /// and must be completed [MQTT-4.4.0-1] (dropping it would also leave its packet id in
    /// flight for good, holding a slot of the send window).
    fn outbound(&self, q: &Queued, packet_id: Option<u16>, dup: bool) -> Option<Packet> {
        let now = Instant::now();
        let expiry = match q.msg.expires_at {
            Some(at) if at <= now && !dup => return None,
            Some(at) => Some(at.saturating_duration_since(now).as_secs().max(1) as u32),
            None => None,
        };
        let m = &q.msg;
        Some(Packet::Publish(Publish {
            dup,
            qos: q.qos,
            retain: q.retain,
            topic: m.topic.clone(),
            packet_id,
            properties: PublishProperties {
                payload_format_indicator: m.payload_format_indicator,
                message_expiry_interval: expiry,
                topic_alias: None,
                response_topic: m.response_topic.clone(),
                correlation_data: m.correlation_data.clone(),
                user_properties: m.user_properties.clone(),
                subscription_identifiers: q.subscription_ids.clone(),
                content_type: m.content_type.clone(),
            },
            payload: m.payload.clone(),
        }))
    }

    /// Sends queued messages while the writer has room and the send window allows.
    async fn deliver(&mut self) -> Result<(), End> {
        let stats = self.broker.stats.clone();
        for _ in 0..DELIVERIES_PER_TURN {
            let Ok(permit) = self.tx.try_reserve() else {
                // The writer is full: `run` resumes once it has room (bounded by WRITE_STALL).
                self.writer_full = true;
                return Ok(());
            };
            let next = {
                let mut s = self.session.lock();
                let window_full = s.inflight.len() >= self.client.send_window;
                match s.queue.front() {
                    None => None,
                    Some(q) if q.qos != QoS::AtMostOnce && window_full => None,
                    Some(_) => {
                        let q = Session::pop(&mut s, self.session.total_queued());
                        q.map(|q| {
                            let id = if q.qos == QoS::AtMostOnce {
                                None
                            } else {
                                Session::next_packet_id(&mut s)
                            };
                            (q, id)
                        })
                    }
                }
            };
            let Some((q, id)) = next else { return Ok(()) };
            if q.qos != QoS::AtMostOnce && id.is_none() {
                continue;
            }
            let Some(packet) = self.outbound(&q, id, false) else {
                MqttStats::inc(&stats.messages_expired, 1);
                continue;
            };
            let mut out = BytesMut::new();
            if codec::encode(&packet, self.protocol(), &mut out).is_err() {
                continue;
            }
            // Never above the client's maximum packet size; dropped as if delivered
            // [MQTT-3.1.2-25].
            if out.len() > self.client.max_packet_out {
                MqttStats::inc(&stats.messages_oversize, 1);
                continue;
            }
            if let Some(id) = id {
                self.session
                    .lock()
                    .inflight
                    .insert(id, Inflight::Publish(q));
            }
            MqttStats::inc(&stats.messages_delivered, 1);
            permit.send(out.freeze());
        }
        // More may be queued: come back after a look at the socket.
        self.session.ready.notify_one();
        Ok(())
    }

    /// Ends the connection: DISCONNECT with a reason where MQTT 5 allows, the will where the
    /// client did not end cleanly, the session detached.
    async fn finish(&mut self, end: End, generation: u64) {
        let stats = self.broker.stats.clone();
        let v5 = self.protocol() == Protocol::V5;
        let peer = self.client.peer;
        let client_id = self.client.client_id.clone();
        let (publish_will, disconnect) = match &end {
            End::Closed { will } => (*will, None),
            End::Violation(code, why) => {
                MqttStats::inc(&stats.protocol_errors, 1);
                tracing::info!(%peer, client_id = ?client_id, reason = format_args!("{code:#04x}"), why = %why, "MQTT connection closed for a protocol violation");
                (
                    true,
                    Some((*code, self.client.problem_information.then(|| why.clone()))),
                )
            }
            End::Kicked(code) => {
                // A shutdown is not the client's failure: no will [MQTT-3.1.2-8 allows none
                // when the server closes for a reason of its own]; a takeover does send it.
                (*code == reason::SESSION_TAKEN_OVER, Some((*code, None)))
            }
            End::KeepAlive => {
                MqttStats::inc(&stats.keep_alive_timeouts, 1);
                tracing::info!(%peer, client_id = ?client_id, "MQTT keep-alive expired");
                (true, Some((reason::KEEP_ALIVE_TIMEOUT, None)))
            }
            End::Io(e) => {
                tracing::debug!(%peer, client_id = ?client_id, error = %e, "MQTT connection lost");
                (true, None)
            }
            End::Append(e) => {
                tracing::error!(%peer, client_id = ?client_id, error = %e, "MQTT publish not appended: connection closed unacknowledged");
                (true, Some((reason::UNSPECIFIED_ERROR, None)))
            }
        };
        if v5 && let Some((code, why)) = disconnect {
            let mut d = Disconnect {
                reason: code,
                reason_string: why,
                ..Disconnect::default()
            };
            // No reason string where it would exceed the client's maximum packet size
            // [MQTT-3.14.2-3].
            let size = codec::encoded_len(&Packet::Disconnect(d.clone()), Protocol::V5);
            if size.is_ok_and(|n| n > self.client.max_packet_out) {
                d.reason_string = None;
            }
            let _ = self.send(&Packet::Disconnect(d)).await;
        }
        self.broker.detach(&self.session, generation);
        if publish_will && let Some(will) = self.client.will.take() {
            let delay = self.client.will_delay_s;
            let expiry = self.session.lock().expiry_s;
            if delay == 0 || expiry == 0 {
                if self.broker.publish_durably(will, &client_id).await {
                    MqttStats::inc(&stats.wills_recorded, 1);
                }
            } else {
                // Published after the delay (or when the session ends, if sooner) unless the
                // client is back [MQTT-3.1.3-9]: kept in the session (one at most, so bounded
                // by the session limit), published by the broker's housekeeping.
                // A resumed session (takeover by the same client) already counts as back.
                // A session that already ended (replaced by a clean start) publishes it now.
                let wait = Duration::from_secs(delay.min(expiry) as u64);
                let at = Instant::now() + wait;
                if let Some(will) = self.broker.park_will(&self.session, generation, will, at)
                    && self.broker.publish_durably(will, &client_id).await
                {
                    MqttStats::inc(&stats.wills_recorded, 1);
                }
            }
        }
        tracing::debug!(%peer, client_id = ?self.client.client_id, ?end, "MQTT client disconnected");
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::ConnAck(_) => "CONNACK",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "this packet",
    }
}
