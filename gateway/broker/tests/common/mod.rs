//! Helpers shared by the broker's integration tests: a broker on 127.0.0.1 with a given
//! configuration, a raw MQTT client over a `TcpStream` that speaks through the crate's own codec
//! (so a test sends exact packets and reads exact reason codes), a persistence hook whose
//! durability the test holds and releases, and bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ironbridge_broker::codec::{
    self, ConnAck, Connect, ConnectProperties, Decoder, Disconnect, Packet, Protocol, PubResp,
    Publish, PublishProperties, Subscribe, SubscriptionOptions, Unsubscribe, Will, reason,
};
use ironbridge_broker::{
    Accepted, Appending, BrokerHandle, Durable, MqttConfig, MqttStats, MqttStatsSnapshot,
    NoPersistence, Persistence, QoS, start,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};

/// Longest any single expected event may take (the test machine is shared and slow).
pub const WAIT: Duration = Duration::from_secs(10);

/// The second loopback address: "another device" for per-address limits and throttling.
pub const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A configuration listening on 127.0.0.1 (any port), anonymous clients allowed, no rules.
pub fn config() -> MqttConfig {
    MqttConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        allow_anonymous: true,
        ..MqttConfig::default()
    }
}

/// Starts a broker with `cfg` and no persistence.
pub async fn broker(cfg: MqttConfig) -> BrokerHandle {
    broker_with(cfg, Arc::new(NoPersistence)).await
}

pub async fn broker_with(cfg: MqttConfig, persistence: Arc<dyn Persistence>) -> BrokerHandle {
    start(cfg, persistence, Arc::new(MqttStats::default()))
        .await
        .expect("broker starts")
}

pub fn stats(b: &BrokerHandle) -> MqttStatsSnapshot {
    b.stats().snapshot()
}

/// `f`, or a panic naming `what` after [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits (bounded) until `cond` holds; for state with no event to await (counters, sizes).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// An argon2id PHC hash with the smallest parameters (8 KiB, 1 pass): the same verification
/// path as a real one, without a second of CPU per check in a debug build.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(8, 1, 1, None).expect("params");
    let salt = SaltString::encode_b64(b"ironbridge-tests").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

/// The password behind [`real_hash`].
pub const REAL_PASSWORD: &str = "s3cret";

/// A real hash of [`REAL_PASSWORD`] from [`ironbridge_broker::hash_password`] (OWASP cost),
/// made once per test binary, off the runtime.
pub async fn real_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        HASH.get_or_init(|| ironbridge_broker::hash_password(REAL_PASSWORD).expect("hash"))
            .clone()
    })
    .await
    .expect("hash task")
}

// ---------------------------------------------------------------------------------------------
// Packets

/// An MQTT 5 CONNECT: clean start, keep alive 60 s, no credentials.
pub fn v5(client_id: &str) -> Connect {
    Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_string(),
        properties: ConnectProperties {
            request_problem_information: true,
            ..ConnectProperties::default()
        },
        ..Connect::default()
    }
}

/// An MQTT 3.1.1 CONNECT: clean session, keep alive 60 s, no credentials.
pub fn v311(client_id: &str) -> Connect {
    Connect {
        protocol: Protocol::V311,
        ..v5(client_id)
    }
}

pub fn with_login(mut c: Connect, user: &str, password: &str) -> Connect {
    c.username = Some(user.to_string());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

/// Persistent: clean start 0 and (MQTT 5) the session expiry interval `expiry_s`.
pub fn persistent(mut c: Connect, expiry_s: u32) -> Connect {
    c.clean_start = false;
    c.properties.session_expiry_interval = expiry_s;
    c
}

pub fn with_will(mut c: Connect, topic: &str, payload: &str, delay_s: u32) -> Connect {
    let mut w = Will {
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        ..Will::default()
    };
    w.properties.will_delay_interval = delay_s;
    c.will = Some(w);
    c
}

pub fn publish(topic: &str, payload: &str, qos: QoS, packet_id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.to_string(),
        packet_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    })
}

pub fn publish_with(
    topic: &str,
    payload: &str,
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
    properties: PublishProperties,
) -> Packet {
    Packet::Publish(Publish {
        qos,
        retain,
        topic: topic.to_string(),
        packet_id,
        properties,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    })
}

pub fn sub_opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

pub fn puback(packet_id: u16) -> Packet {
    Packet::PubAck(PubResp {
        packet_id,
        ..PubResp::default()
    })
}

pub fn disconnect(reason: u8) -> Packet {
    Packet::Disconnect(Disconnect {
        reason,
        ..Disconnect::default()
    })
}

pub fn encode(p: &Packet, protocol: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    codec::encode(p, protocol, &mut out).expect("test packet encodes");
    out
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// A minimal MQTT client: exact packets out, exact packets in, nothing automatic (no acks, no
/// pings, no retries).
pub struct Raw {
    pub protocol: Protocol,
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    next_id: u16,
}

/// What [`Raw::connect`] got back.
pub enum Answer {
    ConnAck(Box<ConnAck>, Protocol),
    /// The broker closed the socket without a CONNACK.
    Closed,
}

impl Answer {
    /// The code on the wire: the CONNACK's reason code (MQTT 5) or return code (3.1.1; the
    /// codec decodes it into the matching MQTT 5 reason, mapped back here); `None` when closed.
    pub fn code(&self) -> Option<u8> {
        match self {
            Answer::ConnAck(c, Protocol::V5) => Some(c.reason),
            Answer::ConnAck(c, Protocol::V311) => Some(reason::connack_v311(c.reason)),
            Answer::Closed => None,
        }
    }
}

impl Raw {
    /// A TCP connection to `addr`, nothing sent yet.
    pub async fn socket(addr: SocketAddr, protocol: Protocol) -> Raw {
        let stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Raw::over(stream, protocol)
    }

    /// The same from the local address `local` (e.g. [`OTHER_ADDRESS`]).
    pub async fn socket_from(local: IpAddr, addr: SocketAddr, protocol: Protocol) -> Raw {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(local, 0)).expect("bind");
        let stream = within("TCP connect", sock.connect(addr))
            .await
            .expect("TCP connect");
        Raw::over(stream, protocol)
    }

    fn over(stream: TcpStream, protocol: Protocol) -> Raw {
        let _ = stream.set_nodelay(true);
        Raw {
            protocol,
            stream,
            buf: BytesMut::with_capacity(8192),
            decoder: Decoder::client(protocol, 16 << 20),
            next_id: 1,
        }
    }

    /// Connects and sends `c`; the broker's answer (CONNACK, or a close without one).
    pub async fn connect(addr: SocketAddr, c: Connect) -> (Raw, Answer) {
        let mut raw = Raw::socket(addr, c.protocol).await;
        let answer = raw.handshake(c).await;
        (raw, answer)
    }

    pub async fn connect_from(local: IpAddr, addr: SocketAddr, c: Connect) -> (Raw, Answer) {
        let mut raw = Raw::socket_from(local, addr, c.protocol).await;
        let answer = raw.handshake(c).await;
        (raw, answer)
    }

    /// Sends CONNECT on this socket and reads the answer.
    pub async fn handshake(&mut self, c: Connect) -> Answer {
        if self.try_send(&Packet::Connect(c)).await.is_err() {
            return Answer::Closed;
        }
        match self.next().await {
            Some(Packet::ConnAck(a)) => Answer::ConnAck(Box::new(a), self.protocol),
            None => Answer::Closed,
            Some(other) => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects; panics unless the CONNACK is a success.
    pub async fn accepted(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let id = c.client_id.clone();
        match Raw::connect(addr, c).await {
            (raw, Answer::ConnAck(a, _)) if a.reason == 0 => (raw, *a),
            (_, Answer::ConnAck(a, _)) => panic!("{id}: CONNACK {:#04x}", a.reason),
            (_, Answer::Closed) => panic!("{id}: closed without CONNACK"),
        }
    }

    /// The same from the local address `local`.
    pub async fn accepted_from(local: IpAddr, addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let id = c.client_id.clone();
        match Raw::connect_from(local, addr, c).await {
            (raw, Answer::ConnAck(a, _)) if a.reason == 0 => (raw, *a),
            (_, Answer::ConnAck(a, _)) => panic!("{id}: CONNACK {:#04x}", a.reason),
            (_, Answer::Closed) => panic!("{id}: closed without CONNACK"),
        }
    }

    /// An anonymous MQTT 5 client with a clean session.
    pub async fn v5(addr: SocketAddr, client_id: &str) -> Raw {
        Raw::accepted(addr, v5(client_id)).await.0
    }

    pub async fn v311(addr: SocketAddr, client_id: &str) -> Raw {
        Raw::accepted(addr, v311(client_id)).await.0
    }

    pub fn next_packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    pub async fn try_send(&mut self, p: &Packet) -> std::io::Result<()> {
        let out = encode(p, self.protocol);
        self.stream.write_all(&out).await
    }

    pub async fn send(&mut self, p: &Packet) {
        self.try_send(p).await.expect("send");
    }

    /// Several packets in one write (so that the broker reads them together).
    pub async fn send_together(&mut self, ps: &[Packet]) {
        let mut out = BytesMut::new();
        for p in ps {
            out.extend_from_slice(&encode(p, self.protocol));
        }
        self.write_raw(&out).await;
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet; `None` when the broker closed the connection (FIN or reset).
    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("the broker sent an invalid packet: {e}"),
            }
            self.buf.reserve(8192);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next packet within [`WAIT`]; `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Packet> {
        within("a packet from the broker", self.read_packet()).await
    }

    /// The next packet within `d`: `Err(())` if none came (and the connection is still open).
    pub async fn next_within(&mut self, d: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(d, self.read_packet())
            .await
            .map_err(|_| ())
    }

    /// The next packet, which must exist.
    pub async fn expect(&mut self) -> Packet {
        match self.next().await {
            Some(p) => p,
            None => panic!("connection closed, a packet was expected"),
        }
    }

    /// Nothing arrives for `d`, and the connection stays open.
    pub async fn expect_silence(&mut self, d: Duration) {
        match self.next_within(d).await {
            Err(()) => {}
            Ok(Some(p)) => panic!("expected silence, got {p:?}"),
            Ok(None) => panic!("expected silence, the connection closed"),
        }
    }

    /// Reads until the broker closes the connection; the packets it sent before.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        within("the broker to close the connection", async {
            while let Some(p) = self.read_packet().await {
                seen.push(p);
            }
        })
        .await;
        seen
    }

    /// Publishes and returns the packet id used (QoS 1/2).
    pub async fn publish(&mut self, topic: &str, payload: &str, qos: QoS) -> Option<u16> {
        let id = (qos != QoS::AtMostOnce).then(|| self.next_packet_id());
        self.send(&publish(topic, payload, qos, id)).await;
        id
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason code.
    pub async fn publish_acked(&mut self, topic: &str, payload: &str) -> u8 {
        let id = self.publish(topic, payload, QoS::AtLeastOnce).await;
        let ack = self.expect_puback().await;
        assert_eq!(Some(ack.packet_id), id, "PUBACK for another packet");
        ack.reason
    }

    pub async fn publish_retained(&mut self, topic: &str, payload: &str) -> u8 {
        let id = self.next_packet_id();
        let p = publish_with(
            topic,
            payload,
            QoS::AtLeastOnce,
            true,
            Some(id),
            PublishProperties::default(),
        );
        self.send(&p).await;
        let ack = self.expect_puback().await;
        assert_eq!(ack.packet_id, id);
        ack.reason
    }

    pub async fn expect_puback(&mut self) -> PubResp {
        match self.expect().await {
            Packet::PubAck(a) => a,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Subscribes and returns the SUBACK's codes (the next packet must be the SUBACK).
    pub async fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        subscription_identifier: Option<u32>,
    ) -> Vec<u8> {
        let packet_id = self.next_packet_id();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            subscription_identifier,
            filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            ..Subscribe::default()
        }))
        .await;
        match self.expect().await {
            Packet::SubAck(a) => {
                assert_eq!(a.packet_id, packet_id, "SUBACK for another packet");
                a.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter at `qos`; the SUBACK code.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        self.subscribe_with(&[(filter, sub_opts(qos))], None).await[0]
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let packet_id = self.next_packet_id();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters: filters.iter().map(|f| f.to_string()).collect(),
            ..Unsubscribe::default()
        }))
        .await;
        match self.expect().await {
            Packet::UnsubAck(a) => {
                assert_eq!(a.packet_id, packet_id);
                a.reasons
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH (not acknowledged).
    pub async fn expect_publish(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next PUBLISH, acknowledged if QoS 1.
    pub async fn receive(&mut self) -> Publish {
        let p = self.expect_publish().await;
        if p.qos == QoS::AtLeastOnce
            && let Some(id) = p.packet_id
        {
            self.send(&puback(id)).await;
        }
        p
    }

    /// A round trip through the broker's pipeline: everything this client sent before has been
    /// handled once the PINGRESP is here (answers keep the order of the packets).
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.expect().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends PINGREQ without waiting for the answer.
    pub async fn ping_unanswered(&mut self) {
        self.send(&Packet::PingReq).await;
    }

    /// Sends DISCONNECT (normal) and waits for the close.
    pub async fn disconnect(mut self) {
        self.send(&disconnect(0)).await;
        let rest = self.expect_closed().await;
        assert!(rest.is_empty(), "packets after DISCONNECT: {rest:?}");
    }
}

pub fn payload(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).expect("UTF-8 payload")
}

// ---------------------------------------------------------------------------------------------
// A persistence hook the test holds

/// Appends instantly but declares nothing durable until [`Held::release`]: the broker must hold
/// every PUBACK/PUBREC and delivery until then.
pub struct Held {
    open: AtomicBool,
    released: Notify,
    appended: watch::Sender<usize>,
}

impl Held {
    pub fn new() -> Arc<Held> {
        Arc::new(Held {
            open: AtomicBool::new(false),
            released: Notify::new(),
            appended: watch::Sender::new(0),
        })
    }

    /// Makes everything appended so far, and from now on, durable.
    pub fn release(&self) {
        self.open.store(true, Ordering::Release);
        self.released.notify_waiters();
    }

    /// Messages appended so far.
    pub fn appended(&self) -> usize {
        *self.appended.borrow()
    }

    /// Waits until at least `n` messages were appended.
    pub async fn appended_at_least(&self, n: usize) {
        let mut rx = self.appended.subscribe();
        within("appends", rx.wait_for(|c| *c >= n))
            .await
            .expect("watch");
    }

    async fn durable(self: Arc<Self>) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The hook as the broker sees it.
pub struct HeldHook(pub Arc<Held>);

impl Persistence for HeldHook {
    fn append<'a>(&'a self, batch: &'a [Accepted<'a>]) -> Appending<'a> {
        self.0.appended.send_modify(|c| *c += batch.len());
        let held = self.0.clone();
        Box::pin(async move {
            let durable: Durable = Box::pin(async move {
                held.durable().await;
                Ok(())
            });
            Ok(durable)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc witness

/// A real MQTT 3.1.1 client library (rumqttc) connects, subscribes to a topic of its own,
/// publishes to it at QoS 1 and gets its message back: the broker still serves legitimate
/// clients.
pub async fn served(port: u16, client_id: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as P, QoS as Q};
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 10);
    let topic = format!("legit/{client_id}");
    client
        .subscribe(topic.as_str(), Q::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .publish(topic.as_str(), Q::AtLeastOnce, false, "ok")
        .await
        .expect("publish");
    within(&format!("{client_id} (rumqttc) to be served"), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(P::ConnAck(a))) => {
                    assert_eq!(a.code, rumqttc::ConnectReturnCode::Success, "{client_id}");
                }
                Ok(Event::Incoming(P::Publish(p))) if p.topic == topic => {
                    assert_eq!(&p.payload[..], b"ok");
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("{client_id} (rumqttc): {e}"),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out (the event loop sends it), bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}
