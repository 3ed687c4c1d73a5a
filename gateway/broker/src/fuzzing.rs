//! A broker and an in-memory client, for the `mqtt_connection` fuzz target (feature `fuzzing`,
//! hidden: not part of the crate's API).
//!
//! [`converse`] starts a broker core without listeners ([`NoPersistence`], the short limits and
//! topic rules of [`config`], two in-process subscribers on `#` and `$share/fuzz/#`), then runs
//! each [`Script`] in turn (or overlapping the one before, [`Script::overlap`]) as one client
//! connection: a `tokio::io::duplex` pipe served by the real connection code
//! (`connection::serve`, as a TCP socket would be), the client writing the script's bytes and
//! reading everything the broker sends. It reports what each client sent and received (decoded
//! with the crate's codec), what the in-process subscribers received, and the broker's sizes
//! before and after.
//!
//! Time is tokio's paused clock on a current-thread runtime made for the call: pauses,
//! keep-alive and every deadline cost no real time, and a connection that has not ended
//! [`CLOSE_BOUND`] after its script (plus the script's pauses) is reported as not `finished`
//! instead of hanging the caller.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::acl::{Acl, AclRule, Action, Permission};
use crate::broker::Broker;
use crate::codec::{self, DecodeError, Decoder, Packet, Protocol, PubResp, QoS, reason};
use crate::{BrokerHandle, BrokerSizes, Message, MqttConfig, MqttStats, MqttStatsSnapshot};
use crate::{NoPersistence, Subscription};

/// The account of [`config`] (password [`PASSWORD`]), hashed with the cheapest argon2id
/// parameters so that a login costs microseconds. Any other user name is checked against the
/// real-cost dummy hash (tens of milliseconds): fuzz inputs should use this one.
pub const USER: &str = "fuzz";
pub const PASSWORD: &str = "fuzz";
/// The share group of the in-process shared subscriber (`$share/fuzz/#`).
pub const LOCAL_GROUP: &str = "fuzz";
/// How long after its script's end (and the script's own pauses) a connection may take to end:
/// a CONNECT deadline, a keep-alive of 1.5 × `max_keep_alive_s`, the final writes and the
/// linger, with room to spare.
pub const CLOSE_BOUND: Duration = Duration::from_secs(30);
/// Virtual time for the in-process subscribers to take what was routed before sizes are taken.
const SETTLE: Duration = Duration::from_secs(2);
const PIPE_BYTES: usize = 64 * 1024;
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);

/// One thing the client does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Writes these bytes (any: packets encoded by the caller, parts of packets, garbage).
    Send(Vec<u8>),
    /// Waits (virtual time), reading and auto-acknowledging meanwhile; the broker gets to
    /// process everything it can first.
    Pause(Duration),
}

/// One client connection, from the first byte to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub steps: Vec<Step>,
    /// Answer the broker's QoS 1/2 deliveries (PUBACK, PUBREC) and PUBRELs (PUBCOMP) as they
    /// arrive, as a well-behaved client does.
    pub auto_ack: bool,
    /// After the steps, close the client's write side (the broker reads end of stream);
    /// otherwise stay connected and silent until the broker closes (keep-alive at the latest).
    pub half_close: bool,
    /// Start once the previous connection has written its script, not once it has ended: both
    /// are open at once (with the same client id, a takeover).
    pub overlap: bool,
}

/// What one connection looked like from the client.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The protocol of the client's CONNECT as the broker's decoder saw it (3.1.1 when it named
    /// an unsupported one or none): what `received` is decoded in.
    pub protocol: Protocol,
    /// The bytes the client wrote (script and automatic acknowledgements, in the order written;
    /// the broker may not have read all of them).
    pub written: Vec<u8>,
    /// `written` decoded the way the broker decodes its input (CONNECT size limit first, then
    /// the packet limit), up to the first error.
    pub sent: Vec<Packet>,
    pub sent_error: Option<DecodeError>,
    /// Everything the broker sent, decoded with a client decoder, each with its size in bytes.
    pub received: Vec<(Packet, usize)>,
    /// Why the broker's bytes did not decode (everything after is dropped).
    pub received_error: Option<DecodeError>,
    /// Bytes the broker sent after its last whole packet.
    pub received_leftover: usize,
    /// The connection ended (the broker closed its side and its connection task returned)
    /// within the script's pauses plus [`CLOSE_BOUND`].
    pub finished: bool,
    /// Virtual time from the end of the script to the end of the connection (when finished).
    pub closed_after: Duration,
}

/// What [`converse`] reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One per script run (the run stops after a connection that did not finish).
    pub exchanges: Vec<Exchange>,
    /// What the in-process subscribers (`#`, `$share/fuzz/#`) received, in order.
    pub local: Vec<Arc<Message>>,
    /// Sizes with the two in-process subscribers and no client.
    pub before: BrokerSizes,
    /// After the last connection ended.
    pub after: BrokerSizes,
    /// After that, once the housekeeping published every delayed will and expired every
    /// disconnected session (as it would a day later).
    pub after_expiry: BrokerSizes,
    /// The counters at the end (`connections_current` back to 0, ...).
    pub stats: MqttStatsSnapshot,
}

/// The broker configuration of [`converse`]: anonymous clients and [`USER`]; topic rules
/// denying publishes to `secret/#` (and subscriptions overlapping it to [`USER`]) and allowing
/// `#` and `$fuzz/#` to everyone; small limits, so that inputs
/// reach them (payload 1 KiB, topic 64 bytes, 4 unacknowledged publishes each way, 8
/// subscriptions, 4 topic aliases, 8 retained messages, 4 sessions, keep-alive at most 5 s,
/// session expiry at most 10 s, 16 queued messages per session).
pub fn config() -> MqttConfig {
    let everyone = vec!["*".to_string(), "$anonymous".to_string()];
    MqttConfig {
        allow_anonymous: true,
        users: [(USER.to_string(), user_phc().to_string())].into(),
        acl: vec![
            AclRule {
                users: everyone.clone(),
                action: Action::Publish,
                permission: Permission::Deny,
                topics: vec!["secret/#".into()],
            },
            // A deny for subscriptions refuses every filter that overlaps it (`#` too): only
            // for the account, so that anonymous clients can subscribe to `#`.
            AclRule {
                users: vec![USER.to_string()],
                action: Action::Subscribe,
                permission: Permission::Deny,
                topics: vec!["secret/#".into()],
            },
            AclRule {
                users: everyone,
                action: Action::All,
                permission: Permission::Allow,
                topics: vec!["#".into(), "$fuzz/#".into()],
            },
        ],
        max_payload_bytes: 1024,
        max_topic_bytes: 64,
        connect_timeout_ms: 1_000,
        max_connect_bytes: 4096,
        auth_timeout_ms: 1_000,
        max_unacked_per_client: 4,
        max_inflight_messages: 4,
        max_keep_alive_s: 5,
        max_subscriptions_per_client: 8,
        topic_alias_maximum: 4,
        max_retained_messages: 8,
        max_retained_bytes: 4096,
        max_sessions: 4,
        max_session_expiry_s: 10,
        max_queued_messages: 16,
        max_queued_bytes: 16 << 10,
        max_queued_bytes_total: 64 << 10,
        ..MqttConfig::default()
    }
}

/// argon2id of [`PASSWORD`] with the minimum cost (8 KiB, 1 pass), made once.
fn user_phc() -> &'static str {
    static PHC: OnceLock<String> = OnceLock::new();
    PHC.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(8, 1, 1, None).expect("argon2 parameters");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::from_b64("aXJvbmJyaWRnZWZ1eno").expect("salt");
        argon
            .hash_password(PASSWORD.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    })
}

/// Runs `scripts` one after the other (or overlapping, see [`Script::overlap`]) against one
/// fresh broker (see the module documentation).
/// Panics of the connection task are resumed here; other tasks' panics reach the panic hook
/// (libFuzzer's aborts).
pub fn converse(scripts: &[Script]) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    rt.block_on(run(scripts))
}

async fn run(scripts: &[Script]) -> Outcome {
    let cfg = config();
    let acl = Acl::new(&cfg.acl).expect("the fuzzing topic rules are valid");
    let stats = Arc::new(MqttStats::default());
    let broker = Broker::new(cfg, Arc::new(NoPersistence), acl, stats.clone());
    let (shutdown, _) = watch::channel(false);
    let handle = BrokerHandle {
        broker: broker.clone(),
        tcp_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        tls_addr: None,
        shutdown,
        tasks: Vec::new(),
    };
    let local = Arc::new(Mutex::new(Vec::new()));
    let share = format!("$share/{LOCAL_GROUP}/#");
    let collectors: Vec<_> = [
        handle.subscribe(&["#"]).expect("local subscriber"),
        handle
            .subscribe(&[&share])
            .expect("shared local subscriber"),
    ]
    .into_iter()
    .map(|sub| tokio::spawn(collect(sub, local.clone())))
    .collect();
    let before = handle.sizes();
    let mut exchanges = Vec::with_capacity(scripts.len());
    // Connections started and not yet ended, and when the last one's script ends.
    let mut open: Vec<JoinHandle<Exchange>> = Vec::new();
    let mut script_ended = None;
    for script in scripts {
        match script_ended.take() {
            Some(ended) if script.overlap => {
                let _ = ended.await;
            }
            _ => {
                for c in open.drain(..) {
                    exchanges.push(join(c).await);
                }
                if exchanges.last().is_some_and(|x| !x.finished) {
                    break;
                }
            }
        }
        let (ended, ended_rx) = oneshot::channel();
        script_ended = Some(ended_rx);
        let c = connection(broker.clone(), script.clone(), ended);
        open.push(tokio::spawn(c));
    }
    for c in open {
        exchanges.push(join(c).await);
    }
    tokio::time::sleep(SETTLE).await;
    let after = handle.sizes();
    // The housekeeping tick once every session expiry has passed (its clock is the system's,
    // not the paused one): due wills, expired sessions, then the wills of those sessions.
    let later = Instant::now() + Duration::from_secs(86_400);
    publish_due_wills(&broker, later).await;
    broker.expire_sessions(later);
    publish_due_wills(&broker, later).await;
    tokio::time::sleep(SETTLE).await;
    let after_expiry = handle.sizes();
    for c in &collectors {
        c.abort();
    }
    let local = std::mem::take(&mut *local.lock().unwrap_or_else(|p| p.into_inner()));
    Outcome {
        exchanges,
        local,
        before,
        after,
        after_expiry,
        stats: stats.snapshot(),
    }
}

/// A connection task's exchange; its panic resumed here.
async fn join(c: JoinHandle<Exchange>) -> Exchange {
    match c.await {
        Ok(x) => x,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn publish_due_wills(broker: &Broker, now: Instant) {
    for (will, client_id) in broker.due_wills(now) {
        if broker.publish_durably(will, &client_id).await {
            MqttStats::inc(&broker.stats.wills_recorded, 1);
        }
    }
}

async fn collect(mut sub: Subscription, into: Arc<Mutex<Vec<Arc<Message>>>>) {
    while let Some(m) = sub.next().await {
        into.lock().unwrap_or_else(|p| p.into_inner()).push(m);
    }
}

/// The client's write side, keeping a copy of what it wrote.
struct Writer {
    wr: WriteHalf<DuplexStream>,
    written: Vec<u8>,
    /// Cleared by the first failed write (the broker is gone) or the half close.
    open: bool,
}

impl Writer {
    async fn write(&mut self, bytes: &[u8]) {
        if self.open && !bytes.is_empty() {
            match self.wr.write_all(bytes).await {
                Ok(()) => self.written.extend_from_slice(bytes),
                Err(_) => self.open = false,
            }
        }
    }
}

/// One connection; `script_ended` is told when the client has written its script.
async fn connection(
    broker: Arc<Broker>,
    script: Script,
    script_ended: oneshot::Sender<()>,
) -> Exchange {
    let script_bytes: Vec<u8> = script
        .steps
        .iter()
        .flat_map(|s| match s {
            Step::Send(b) => b.as_slice(),
            Step::Pause(_) => &[],
        })
        .copied()
        .collect();
    let protocol = decode_as_broker(&broker.cfg, &script_bytes).0;
    let pauses: Duration = script
        .steps
        .iter()
        .map(|s| match s {
            Step::Pause(d) => *d,
            Step::Send(_) => Duration::ZERO,
        })
        .sum();
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let serve = tokio::spawn(crate::connection::serve(
        broker.clone(),
        server,
        PEER,
        false,
    ));
    let (rd, wr) = tokio::io::split(client);
    let (ack_tx, mut acks) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_all(rd, protocol, script.auto_ack.then_some(ack_tx)));
    let mut writer = Writer {
        wr,
        written: Vec::new(),
        open: true,
    };
    let mut script_end = tokio::time::Instant::now();
    let conversation = async {
        for step in &script.steps {
            match step {
                Step::Send(bytes) => {
                    while let Ok(ack) = acks.try_recv() {
                        writer.write(&ack).await;
                    }
                    writer.write(bytes).await;
                }
                Step::Pause(d) => {
                    let sleep = tokio::time::sleep(*d);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            Some(ack) = acks.recv() => writer.write(&ack).await,
                        }
                    }
                }
            }
        }
        script_end = tokio::time::Instant::now();
        let _ = script_ended.send(());
        if script.half_close {
            while let Ok(ack) = acks.try_recv() {
                writer.write(&ack).await;
            }
            let _ = writer.wr.shutdown().await;
            writer.open = false;
        }
        // Until the broker closes: its end of stream ends the reader.
        let mut reader = reader;
        let received = loop {
            tokio::select! {
                r = &mut reader => break r,
                Some(ack) = acks.recv(), if writer.open => writer.write(&ack).await,
            }
        };
        let served = serve.await;
        (received, served)
    };
    let (finished, received) = match tokio::time::timeout(pauses + CLOSE_BOUND, conversation).await
    {
        Ok((received, served)) => {
            if let Err(e) = served
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
            let received = match received {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Received::default(),
            };
            (true, received)
        }
        Err(_) => (false, Received::default()),
    };
    let closed_after = if finished {
        script_end.elapsed()
    } else {
        Duration::ZERO
    };
    let written = std::mem::take(&mut writer.written);
    let (_, sent, sent_error) = decode_as_broker(&broker.cfg, &written);
    Exchange {
        protocol,
        written,
        sent,
        sent_error,
        received: received.packets,
        received_error: received.error,
        received_leftover: received.leftover,
        finished,
        closed_after,
    }
}

#[derive(Debug, Default)]
struct Received {
    packets: Vec<(Packet, usize)>,
    error: Option<DecodeError>,
    leftover: usize,
}

/// Reads until the broker closes, decoding as a client of `protocol` does; sends the
/// acknowledgements of what needs one to `acks`.
async fn read_all(
    mut rd: ReadHalf<DuplexStream>,
    protocol: Protocol,
    acks: Option<mpsc::UnboundedSender<Vec<u8>>>,
) -> Received {
    let mut decoder = Decoder::client(protocol, usize::MAX);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Received::default();
    loop {
        buf.reserve(4096);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if out.error.is_some() {
            buf.clear();
            continue;
        }
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(p)) => {
                    if let Some(tx) = &acks
                        && let Some(ack) = ack_for(&p)
                    {
                        let mut b = BytesMut::new();
                        if codec::encode(&ack, protocol, &mut b).is_ok() {
                            let _ = tx.send(b.to_vec());
                        }
                    }
                    out.packets.push((p, before - buf.len()));
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    buf.clear();
                    break;
                }
            }
        }
    }
    out.leftover = buf.len();
    out
}

/// What a well-behaved client answers to `p`, if anything.
fn ack_for(p: &Packet) -> Option<Packet> {
    let resp = |packet_id| PubResp {
        packet_id,
        ..PubResp::default()
    };
    match p {
        Packet::Publish(p) => match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(resp(id))),
            (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(resp(id))),
            _ => None,
        },
        Packet::PubRel(r) => Some(Packet::PubComp(resp(r.packet_id))),
        _ => None,
    }
}

/// Decodes a client's bytes as `connection::serve` does: the CONNECT under
/// `max_connect_bytes`, the rest under the packet limit. Returns the protocol the CONNECT
/// chose (3.1.1 when unsupported or unknown, as the broker answers then), the packets and the
/// first error.
pub fn decode_as_broker(
    cfg: &MqttConfig,
    bytes: &[u8],
) -> (Protocol, Vec<Packet>, Option<DecodeError>) {
    let mut decoder = Decoder::new(cfg.max_connect_bytes);
    let mut buf = BytesMut::from(bytes);
    let mut packets = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => {
                if matches!(p, Packet::Connect(_)) {
                    decoder.set_max_packet_size(cfg.max_packet_bytes());
                }
                packets.push(p);
            }
            Ok(None) => return (decoder.protocol().unwrap_or_default(), packets, None),
            Err(e) => {
                let protocol = if e.reason_code() == reason::UNSUPPORTED_PROTOCOL_VERSION {
                    Protocol::V311
                } else {
                    decoder.protocol().unwrap_or_default()
                };
                return (protocol, packets, Some(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Connect, ConnectProperties, Disconnect, Publish, Subscribe};
    use crate::codec::{SubscriptionOptions, Unsubscribe};

    fn bytes(protocol: Protocol, packets: &[Packet]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in packets {
            codec::encode(p, protocol, &mut out).expect("encode");
        }
        out.to_vec()
    }

    fn connect(protocol: Protocol, client_id: &str, expiry: u32) -> Packet {
        Packet::Connect(Connect {
            protocol,
            clean_start: true,
            keep_alive: 30,
            client_id: client_id.into(),
            properties: ConnectProperties {
                session_expiry_interval: expiry,
                request_problem_information: true,
                ..ConnectProperties::default()
            },
            ..Connect::default()
        })
    }

    fn publish(topic: &str, qos: QoS, id: u16) -> Packet {
        Packet::Publish(Publish {
            qos,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(id),
            payload: "21.5".into(),
            ..Publish::default()
        })
    }

    fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
        Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
            ..Subscribe::default()
        })
    }

    fn names(x: &Exchange) -> Vec<&'static str> {
        x.received.iter().map(|(p, _)| p.name()).collect()
    }

    #[test]
    fn a_clean_conversation_in_both_protocols() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let script = Script {
                steps: vec![
                    Step::Send(bytes(
                        protocol,
                        &[
                            connect(protocol, "c1", 0),
                            subscribe(1, "plant/#", QoS::ExactlyOnce),
                        ],
                    )),
                    Step::Pause(Duration::from_millis(10)),
                    Step::Send(bytes(
                        protocol,
                        &[
                            publish("plant/a", QoS::AtLeastOnce, 7),
                            publish("plant/b", QoS::ExactlyOnce, 8),
                        ],
                    )),
                    Step::Pause(Duration::from_secs(1)),
                    Step::Send(bytes(
                        protocol,
                        &[
                            Packet::PubRel(PubResp {
                                packet_id: 8,
                                ..PubResp::default()
                            }),
                            Packet::PingReq,
                            Packet::Unsubscribe(Unsubscribe {
                                packet_id: 2,
                                filters: vec!["plant/#".into()],
                                ..Unsubscribe::default()
                            }),
                            Packet::Disconnect(Disconnect::default()),
                        ],
                    )),
                ],
                auto_ack: true,
                half_close: false,
                overlap: false,
            };
            let out = converse(&[script]);
            let x = &out.exchanges[0];
            assert!(x.finished, "{protocol:?}");
            assert!(x.received_error.is_none() && x.received_leftover == 0);
            let got = names(x);
            for want in [
                "CONNACK", "SUBACK", "PUBACK", "PUBREC", "PUBCOMP", "PINGRESP",
            ] {
                assert!(
                    got.contains(&want),
                    "{protocol:?}: {want} missing from {got:?}"
                );
            }
            // Its own two messages, acknowledged by the client (auto_ack).
            assert_eq!(
                got.iter().filter(|n| **n == "PUBLISH").count(),
                2,
                "{got:?}"
            );
            assert!(x.sent.iter().any(|p| matches!(p, Packet::PubAck(_))));
            // Each once to `#` and once to the shared subscriber.
            let mut topics: Vec<&str> = out.local.iter().map(|m| m.topic.as_str()).collect();
            topics.sort();
            assert_eq!(
                topics,
                ["plant/a", "plant/a", "plant/b", "plant/b"],
                "{protocol:?}"
            );
            assert_eq!(out.after, out.before, "{protocol:?}");
            assert_eq!(out.after_expiry, out.before);
            assert_eq!(out.stats.connections_current, 0);
        }
    }

    #[test]
    fn silence_ends_by_keep_alive_and_a_kept_session_expires() {
        let mut with_will = connect(Protocol::V5, "c2", 60);
        if let Packet::Connect(c) = &mut with_will {
            c.will = Some(crate::codec::Will {
                topic: "plant/will".into(),
                properties: crate::codec::WillProperties {
                    will_delay_interval: 5,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let script = Script {
            steps: vec![
                Step::Send(bytes(
                    Protocol::V5,
                    &[with_will, subscribe(1, "a/+", QoS::AtLeastOnce)],
                )),
                Step::Pause(Duration::from_secs(3600)),
            ],
            auto_ack: false,
            half_close: false,
            overlap: false,
        };
        let out = converse(&[script]);
        let x = &out.exchanges[0];
        assert!(x.finished);
        assert_eq!(names(x), ["CONNACK", "SUBACK", "DISCONNECT"]);
        match &x.received[2].0 {
            Packet::Disconnect(d) => assert_eq!(d.reason, reason::KEEP_ALIVE_TIMEOUT),
            p => panic!("{p:?}"),
        }
        assert_eq!(out.after.sessions, out.before.sessions + 1, "kept for 10 s");
        assert_eq!(out.after.subscriptions, out.before.subscriptions + 1);
        assert_eq!(out.after_expiry, out.before);
        assert_eq!(out.stats.keep_alive_timeouts, 1);
        // The delayed will, published by the housekeeping (once to `#`, once shared).
        let topics: Vec<&str> = out.local.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["plant/will", "plant/will"]);
    }

    /// Found by the fuzz target: a response topic with a wildcard was accepted and delivered.
    #[test]
    fn a_response_topic_must_be_a_topic_name() {
        let mut publish = publish("plant/a", QoS::AtLeastOnce, 1);
        if let Packet::Publish(p) = &mut publish {
            p.properties.response_topic = Some("plant/#".into());
        }
        let mut will = connect(Protocol::V5, "c2", 0);
        if let Packet::Connect(c) = &mut will {
            c.will = Some(crate::codec::Will {
                topic: "plant/will".into(),
                properties: crate::codec::WillProperties {
                    response_topic: Some("+".into()),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let script = |packets: &[Packet]| Script {
            steps: vec![Step::Send(bytes(Protocol::V5, packets))],
            ..Script::default()
        };
        let out = converse(&[
            script(&[connect(Protocol::V5, "c1", 0), publish]),
            script(&[will]),
        ]);
        assert_eq!(names(&out.exchanges[0]), ["CONNACK", "DISCONNECT"]);
        match &out.exchanges[0].received[1].0 {
            Packet::Disconnect(d) => assert_eq!(d.reason, reason::PROTOCOL_ERROR),
            p => panic!("{p:?}"),
        }
        match &out.exchanges[1].received[..] {
            [(Packet::ConnAck(a), _)] => assert_eq!(a.reason, reason::PROTOCOL_ERROR),
            r => panic!("{r:?}"),
        }
        // The reason string stays for a client without a maximum packet size.
        if let (Packet::Disconnect(d), size) = &out.exchanges[0].received[1] {
            assert!(d.reason_string.is_some() && *size > 32, "{d:?}");
        }
        assert!(out.local.is_empty(), "{:?}", out.local);
        assert_eq!(out.after, out.before);
    }

    /// Found by the fuzz target: a resumed session resent its unacknowledged deliveries above
    /// the new connection's maximum packet size.
    #[test]
    fn a_resend_respects_the_new_maximum_packet_size() {
        let mut first = connect(Protocol::V5, "c3", 10);
        let mut again = connect(Protocol::V5, "c3", 10);
        if let (Packet::Connect(a), Packet::Connect(b)) = (&mut first, &mut again) {
            a.properties.maximum_packet_size = Some(1024);
            b.clean_start = false;
            b.properties.maximum_packet_size = Some(16);
        }
        let out = converse(&[
            Script {
                steps: vec![
                    Step::Send(bytes(
                        Protocol::V5,
                        &[first, subscribe(1, "sensors/#", QoS::AtLeastOnce)],
                    )),
                    Step::Pause(Duration::from_millis(10)),
                    Step::Send(bytes(
                        Protocol::V5,
                        &[publish("sensors/1", QoS::AtLeastOnce, 1)],
                    )),
                    Step::Pause(Duration::from_millis(10)),
                ],
                half_close: true,
                ..Script::default()
            },
            Script {
                steps: vec![Step::Send(bytes(Protocol::V5, &[again, Packet::PingReq]))],
                half_close: true,
                ..Script::default()
            },
        ]);
        assert_eq!(
            names(&out.exchanges[0]),
            ["CONNACK", "SUBACK", "PUBACK", "PUBLISH"]
        );
        // Not resent (25 bytes): dropped as if delivered.
        let again = &out.exchanges[1];
        assert!(
            again.received.iter().all(|(p, _)| p.name() != "PUBLISH"),
            "{again:?}"
        );
        assert_eq!(out.stats.messages_oversize, 1);
    }

    /// Found with this harness: a DISCONNECT's reason string made it exceed the client's
    /// maximum packet size.
    #[test]
    fn a_disconnect_fits_the_maximum_packet_size() {
        let mut small = connect(Protocol::V5, "c4", 0);
        if let Packet::Connect(c) = &mut small {
            c.properties.maximum_packet_size = Some(32);
        }
        let mut publish = publish("plant/a", QoS::AtMostOnce, 0);
        if let Packet::Publish(p) = &mut publish {
            p.properties.response_topic = Some("plant/#".into());
        }
        let out = converse(&[Script {
            steps: vec![Step::Send(bytes(Protocol::V5, &[small, publish]))],
            ..Script::default()
        }]);
        match &out.exchanges[0].received[..] {
            [_, (Packet::Disconnect(d), size)] => {
                assert_eq!(d.reason, reason::PROTOCOL_ERROR);
                assert_eq!(d.reason_string, None);
                assert!(*size <= 32);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn an_overlapping_connection_takes_the_session_over() {
        let mut again = connect(Protocol::V5, "c5", 10);
        if let Packet::Connect(c) = &mut again {
            c.clean_start = false;
        }
        let out = converse(&[
            Script {
                steps: vec![Step::Send(bytes(
                    Protocol::V5,
                    &[
                        connect(Protocol::V5, "c5", 10),
                        subscribe(1, "a/#", QoS::AtLeastOnce),
                    ],
                ))],
                ..Script::default()
            },
            Script {
                steps: vec![Step::Send(bytes(Protocol::V5, &[again, Packet::PingReq]))],
                half_close: true,
                overlap: true,
                ..Script::default()
            },
        ]);
        let first = &out.exchanges[0];
        assert!(
            first.finished && first.closed_after < Duration::from_secs(2),
            "{first:?}"
        );
        match &first.received.last() {
            Some((Packet::Disconnect(d), _)) => assert_eq!(d.reason, reason::SESSION_TAKEN_OVER),
            r => panic!("{r:?}"),
        }
        assert_eq!(names(&out.exchanges[1]), ["CONNACK", "PINGRESP"]);
        assert_eq!(out.stats.session_takeovers, 1);
        assert_eq!(out.after.subscriptions, out.before.subscriptions + 1);
        assert_eq!(out.after_expiry, out.before);
    }

    #[test]
    fn garbage_and_no_connect_are_closed_in_time() {
        let scripts = [
            Script {
                steps: vec![Step::Send(b"\x10\xff\xff\xff\xff\x7f garbage".to_vec())],
                ..Script::default()
            },
            // Nothing at all, the client stays: the CONNECT deadline closes it.
            Script::default(),
        ];
        let out = converse(&scripts);
        assert_eq!(out.exchanges.len(), 2);
        for x in &out.exchanges {
            assert!(x.finished && x.closed_after <= CLOSE_BOUND, "{x:?}");
            assert!(x.received.is_empty(), "{x:?}");
        }
        assert_eq!(out.after, out.before);
    }
}
