//! Whole client conversations, MQTT 3.1.1 and 5, against a real broker connection
//! (`ironbridge_broker::fuzzing::converse`: `connection::serve` over an in-memory pipe, a fresh
//! broker per input, tokio's paused clock). Up to 3 connections one after the other, or each
//! starting once the one before has written its input (both open: a takeover with the same
//! client id), so that kept sessions are resumed, taken over, replaced by a clean start or left
//! to expire.
//!
//! Invariants, for every input:
//! - no panic; every connection ends (the broker closes) within its pauses plus `CLOSE_BOUND`;
//! - what the broker sends decodes with the crate's own client decoder, no partial packet at
//!   close; a CONNACK first and only then, nothing after a refusing one; DISCONNECT only in
//!   MQTT 5 and only last; no AUTH;
//! - every PUBACK/PUBREC refers to a QoS 1/QoS 2 PUBLISH id the client sent on that connection,
//!   every PUBCOMP to a PUBREL it sent, every PUBREL to a PUBREC it sent (any connection: a
//!   resumed session sends them again); no more answers than packets asked for them (PUBACK +
//!   PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP); a SUBACK/UNSUBACK has one reason per filter
//!   of a SUBSCRIBE/UNSUBSCRIBE with its id;
//! - every PUBLISH delivered to the client, and every message an in-process subscriber got,
//!   has a valid topic name (and response topic) a client published to (or made its will),
//!   one its topic rules allow (not `secret/...`, no `$` topic but `$fuzz/...`, no Sparkplug
//!   command or state); deliveries match a filter a client subscribed to and (when neither it
//!   nor a connection open at the same time acknowledges) stay within its receive maximum;
//! - MQTT 5: every packet after the CONNACK but SUBACK/UNSUBACK fits the client's maximum packet
//!   size (deliveries, resent ones included; a DISCONNECT drops its reason string);
//! - after the last connection: no connection counted, sessions, subscriptions and queued bytes
//!   back to where they were once every disconnected session expired, and at once when no
//!   accepted CONNECT asked for a session that outlives its connection; retained messages
//!   within their limits.
//!
//! Input (every read past the end gives 0): per connection a flags byte (bit 0 MQTT 5, bit 1
//! auto-acknowledge deliveries, bit 2 close the write side at the end instead of staying
//! silent, bit 3 a raw blob instead of a built CONNECT, bit 4 overlap the connection before),
//! the CONNECT's fields, then steps, each
//! a kind byte (mod 16) and its fields, until a NEXT step or the end. The seeds are written by
//! `fuzz/seeds/mqtt_connection.py`, which documents every field.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ironbridge_broker::codec::{
    self, Auth, ConnAck, Connect, ConnectProperties, Disconnect, Packet, Protocol, PubResp,
    Publish, PublishProperties, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will, WillProperties,
};
use ironbridge_broker::fuzzing::{self, CLOSE_BOUND, Outcome, PASSWORD, Script, Step, USER};
use ironbridge_broker::topic;
use libfuzzer_sys::fuzz_target;

const MAX_CONNECTIONS: usize = 3;
const MAX_STEPS: usize = 64;
/// Bytes a connection's steps may write (repeats of 1 KiB payloads add up).
const MAX_BYTES: usize = 64 << 10;

const CLIENT_IDS: &[&str] = &["c1", "c2", "", "fuzz", "c1/with/levels", "ü-ñ"];
const TOPICS: &[&str] = &[
    "sensors/1/temp",
    "sensors/2/temp",
    "plant/a",
    "a/b/c",
    "a",
    "/",
    "a//b",
    "secret/x",
    "$fuzz/x",
    "$SYS/uptime",
    "spBv1.0/g/NCMD/n",
    "spBv1.0/g/NDATA/n",
    "spBv1.0/STATE/h",
    "",
    "a/+",
    "a/#",
    "#",
    "+",
    "a\0b",
    "$share/g/x",
    "é/ü",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const FILTERS: &[&str] = &[
    "#",
    "+",
    "sensors/#",
    "sensors/+/temp",
    "plant/+",
    "a/b/c",
    "secret/#",
    "$fuzz/#",
    "$SYS/#",
    "+/#",
    "$share/g/sensors/#",
    "$share/g/#",
    "$share/fuzz/#",
    "$share//x",
    "$share/g",
    "$share/g+/x",
    "$share",
    "a/#/b",
    "a+",
    "",
    "a\0",
    "sensors/1/temp",
    "/#",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const IDS: &[u16] = &[1, 2, 3, 4, 5, 6, 7, 8, 100, 0x7fff, 0xffff, 0];
const PAYLOADS: &[&[u8]] = &[b"", b"21.5", b"\xff\xfe not UTF-8", b"{\"v\":1}"];
const KEEP_ALIVES: &[u16] = &[0, 1, 2, 5, 60, 65535];
const EXPIRIES: &[u32] = &[0, 1, 5, 10, 100, u32::MAX];
const RECEIVE_MAXIMUMS: &[Option<u16>] = &[None, Some(1), Some(2), Some(100)];
const MAX_PACKETS: &[Option<u32>] = &[None, Some(16), Some(32), Some(64), Some(128), Some(4096)];
const WILL_DELAYS: &[u32] = &[0, 1, 5, 100];
const MESSAGE_EXPIRIES: &[u32] = &[0, 1, 10];
const ACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x87, 0x92];
const DISCONNECT_REASONS: &[u8] = &[0x00, 0x04, 0x80, 0x81, 0x8e];
const PAUSES_MS: &[u64] = &[1, 10, 100, 1_000, 3_000, 8_000, 20_000];
const SUBSCRIPTION_IDS: &[Option<u32>] = &[None, Some(1), Some(7), Some(268_435_455)];

/// Reads the input front to back; 0 past its end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, pool: &[T]) -> T {
        pool[usize::from(self.u8()) % pool.len()]
    }
    /// A length byte, then up to that many bytes.
    fn blob(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8()).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
    /// From `pool`, or (a byte from 0xF0) any string from a blob.
    fn string(&mut self, pool: &[&str]) -> String {
        let b = self.u8();
        if b >= 0xF0 {
            String::from_utf8_lossy(&self.blob()).into_owned()
        } else {
            pool[usize::from(b) % pool.len()].to_string()
        }
    }
    fn packet_id(&mut self) -> u16 {
        let b = self.u8();
        if b >= 0xF0 {
            u16::from_be_bytes([self.u8(), self.u8()])
        } else {
            IDS[usize::from(b) % IDS.len()]
        }
    }
    fn payload(&mut self) -> Bytes {
        match self.u8() {
            0xF0.. => self.blob().into(),
            0xE0.. => vec![b'p'; 1025].into(), // one byte over max_payload_bytes
            0xD0.. => vec![b'p'; 1024].into(),
            b => Bytes::from_static(PAYLOADS[usize::from(b) % PAYLOADS.len()]),
        }
    }
    fn user_properties(&mut self, present: bool) -> Vec<(String, String)> {
        if present {
            vec![("k".into(), self.string(TOPICS))]
        } else {
            Vec::new()
        }
    }
}

fn encode(p: &Packet, protocol: Protocol) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    codec::encode(p, protocol, &mut out).ok()?;
    Some(out.to_vec())
}

fn connect(i: &mut Input, protocol: Protocol) -> Connect {
    let client_id = i.string(CLIENT_IDS);
    let flags = i.u8();
    let keep_alive = i.pick(KEEP_ALIVES);
    let (username, password) = match (flags >> 1) & 3 {
        0 => (None, None),
        1 => (
            Some(USER.to_string()),
            Some(Bytes::from_static(PASSWORD.as_bytes())),
        ),
        2 => (Some(USER.to_string()), Some(Bytes::from_static(b"wrong"))),
        _ => (None, Some(Bytes::from_static(b"no user"))),
    };
    let v5 = protocol == Protocol::V5;
    let mut properties = ConnectProperties {
        request_problem_information: flags & 0x10 == 0,
        request_response_information: flags & 0x20 != 0,
        authentication_method: (flags & 0x40 != 0).then(|| "SCRAM-SHA-1".to_string()),
        ..ConnectProperties::default()
    };
    if v5 {
        properties.session_expiry_interval = i.pick(EXPIRIES);
        properties.receive_maximum = i.pick(RECEIVE_MAXIMUMS);
        properties.maximum_packet_size = i.pick(MAX_PACKETS);
        properties.topic_alias_maximum = i.pick(&[0, 2]);
        properties.user_properties = i.user_properties(flags & 0x80 != 0);
    }
    let will = (flags & 8 != 0).then(|| {
        let topic = i.string(TOPICS);
        let payload = i.payload();
        let w = i.u8();
        let mut properties = WillProperties {
            payload_format_indicator: (w & 8 != 0).then_some(1),
            ..WillProperties::default()
        };
        if v5 {
            properties.will_delay_interval = i.pick(WILL_DELAYS);
            properties.message_expiry_interval = (w & 0x10 != 0).then(|| i.pick(MESSAGE_EXPIRIES));
            properties.response_topic = (w & 0x20 != 0).then(|| i.string(TOPICS));
        }
        Will {
            topic,
            payload,
            qos: QoS::from_u8(w & 3).unwrap_or(QoS::AtMostOnce),
            retain: w & 4 != 0,
            properties,
        }
    });
    Connect {
        protocol,
        clean_start: flags & 1 != 0,
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties,
    }
}

fn publish(i: &mut Input, v5: bool) -> Packet {
    let f = i.u8();
    let qos = QoS::from_u8(f & 3).unwrap_or(QoS::AtMostOnce);
    let mut topic = i.string(TOPICS);
    let packet_id = i.packet_id();
    let payload = i.payload();
    let mut properties = PublishProperties::default();
    if v5 {
        let alias = (f >> 4) & 7;
        if alias > 0 {
            properties.topic_alias = Some(u16::from(alias - 1));
            if f & 0x80 != 0 {
                topic.clear();
            }
        }
        let p = i.u8();
        properties.payload_format_indicator = (p & 1 != 0).then_some(1);
        properties.message_expiry_interval = (p & 2 != 0).then(|| i.pick(MESSAGE_EXPIRIES));
        properties.response_topic = (p & 4 != 0).then(|| i.string(TOPICS));
        properties.correlation_data = (p & 8 != 0).then(|| Bytes::from_static(b"corr"));
        properties.user_properties = i.user_properties(p & 0x10 != 0);
        if p & 0x20 != 0 {
            properties.subscription_identifiers = vec![1];
        }
        properties.content_type = (p & 0x40 != 0).then(|| "text/plain".to_string());
    }
    Packet::Publish(Publish {
        dup: f & 8 != 0,
        qos,
        retain: f & 4 != 0,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
        properties,
        payload,
    })
}

fn resp(i: &mut Input) -> PubResp {
    PubResp {
        packet_id: i.packet_id(),
        reason: i.pick(ACK_REASONS),
        ..PubResp::default()
    }
}

fn subscribe(i: &mut Input, v5: bool) -> Packet {
    let packet_id = i.packet_id();
    let n = 1 + usize::from(i.u8() % 3);
    let filters = (0..n)
        .map(|_| {
            let filter = i.string(FILTERS);
            let o = i.u8();
            let opts = SubscriptionOptions {
                qos: QoS::from_u8(o % 3).unwrap_or(QoS::AtMostOnce),
                no_local: v5 && o & 4 != 0,
                retain_as_published: v5 && o & 8 != 0,
                retain_handling: match (o >> 4) % 3 {
                    _ if !v5 => RetainHandling::OnSubscribe,
                    0 => RetainHandling::OnSubscribe,
                    1 => RetainHandling::OnNewSubscribe,
                    _ => RetainHandling::Never,
                },
            };
            (filter, opts)
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id,
        subscription_identifier: if v5 { i.pick(SUBSCRIPTION_IDS) } else { None },
        user_properties: Vec::new(),
        filters,
    })
}

/// Builds one step (not NEXT); `None` when it encodes to nothing.
fn step(i: &mut Input, kind: u8, protocol: Protocol, last: &Option<Vec<u8>>) -> Option<Vec<Step>> {
    let v5 = protocol == Protocol::V5;
    let packet = match kind {
        0 | 15 => publish(i, v5),
        1 => Packet::PubAck(resp(i)),
        2 => Packet::PubRec(resp(i)),
        3 => Packet::PubRel(resp(i)),
        4 => Packet::PubComp(resp(i)),
        5 => subscribe(i, v5),
        6 => {
            let packet_id = i.packet_id();
            let n = 1 + usize::from(i.u8() % 3);
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                user_properties: Vec::new(),
                filters: (0..n).map(|_| i.string(FILTERS)).collect(),
            })
        }
        7 => Packet::PingReq,
        8 => {
            let reason = i.pick(DISCONNECT_REASONS);
            let f = i.u8();
            Packet::Disconnect(Disconnect {
                reason,
                session_expiry_interval: (f & 1 != 0).then(|| i.pick(EXPIRIES)),
                reason_string: (f & 2 != 0).then(|| "bye".to_string()),
                user_properties: i.user_properties(f & 4 != 0),
                server_reference: None,
            })
        }
        9 => {
            let ms = i.pick(PAUSES_MS);
            return Some(vec![Step::Pause(Duration::from_millis(ms))]);
        }
        10 => return Some(vec![Step::Send(i.blob())]),
        11 => {
            // The next step's bytes, cut short.
            let cut = usize::from(i.u8());
            let kind = i.u8() % 16;
            if matches!(kind, 9..=14) {
                return None;
            }
            let steps = step(i, kind, protocol, last)?;
            return Some(
                steps
                    .into_iter()
                    .map(|s| match s {
                        Step::Send(mut b) => {
                            b.truncate(cut % b.len().max(1));
                            Step::Send(b)
                        }
                        pause => pause,
                    })
                    .collect(),
            );
        }
        12 => {
            let n = 1 + usize::from(i.u8() % 16);
            return last.as_ref().map(|b| vec![Step::Send(b.repeat(n))]);
        }
        13 => match i.u8() % 7 {
            0 => Packet::Auth(Auth {
                reason: 0x18,
                authentication_method: Some("SCRAM-SHA-1".into()),
                ..Auth::default()
            }),
            1 => Packet::ConnAck(ConnAck::default()),
            2 => Packet::SubAck(SubAck {
                packet_id: 1,
                reasons: vec![0],
                ..SubAck::default()
            }),
            3 => Packet::UnsubAck(UnsubAck {
                packet_id: 1,
                reasons: vec![0],
                ..UnsubAck::default()
            }),
            4 => Packet::PingResp,
            5 => Packet::Connect(connect(i, protocol)),
            _ => Packet::PubAck(PubResp {
                packet_id: i.packet_id(),
                reason: 0x10,
                reason_string: Some("why".into()),
                user_properties: vec![("k".into(), "v".into())],
            }),
        },
        _ => return None,
    };
    encode(&packet, protocol).map(|b| vec![Step::Send(b)])
}

fn scripts(data: &[u8]) -> Vec<Script> {
    let mut i = Input(data);
    let mut scripts = Vec::new();
    while !i.0.is_empty() && scripts.len() < MAX_CONNECTIONS {
        let flags = i.u8();
        let protocol = if flags & 1 != 0 {
            Protocol::V5
        } else {
            Protocol::V311
        };
        let mut steps = Vec::new();
        if flags & 8 != 0 {
            steps.push(Step::Send(i.blob()));
        } else if let Some(b) = encode(&Packet::Connect(connect(&mut i, protocol)), protocol) {
            steps.push(Step::Send(b));
        }
        let mut last = None;
        let mut bytes = 0;
        while !i.0.is_empty() && steps.len() < MAX_STEPS && bytes < MAX_BYTES {
            let kind = i.u8() % 16;
            if kind == 14 {
                break;
            }
            for s in step(&mut i, kind, protocol, &last).unwrap_or_default() {
                if let Step::Send(b) = &s {
                    bytes += b.len();
                    // A repeat repeats the step before it, not itself (no exponential growth).
                    if kind != 12 {
                        last = Some(b.clone());
                    }
                }
                steps.push(s);
            }
        }
        scripts.push(Script {
            steps,
            auto_ack: flags & 2 != 0,
            half_close: flags & 4 != 0,
            overlap: flags & 0x10 != 0,
        });
    }
    scripts
}

/// Topics no client may publish to under the fuzzing topic rules.
fn forbidden(topic: &str) -> bool {
    let levels: Vec<&str> = topic.split('/').collect();
    levels[0] == "secret"
        || (levels[0].starts_with('$') && levels[0] != "$fuzz")
        || (levels[0] == "spBv1.0"
            && (levels.get(1) == Some(&"STATE")
                || matches!(levels.get(2), Some(&"NCMD") | Some(&"DCMD"))))
}

fn check_message(
    what: &str,
    topic: &str,
    response_topic: Option<&str>,
    published: &HashSet<String>,
) {
    assert!(
        topic::valid_topic_name(topic).is_ok(),
        "{what}: invalid topic {topic:?}"
    );
    assert!(
        !forbidden(topic),
        "{what}: {topic:?} the topic rules forbid"
    );
    assert!(
        published.contains(topic),
        "{what}: {topic:?} nobody published to"
    );
    if let Some(r) = response_topic {
        assert!(
            topic::valid_topic_name(r).is_ok(),
            "{what}: invalid response topic {r:?} (topic {topic:?})"
        );
    }
}

fn check(scripts: &[Script], out: &Outcome) {
    let cfg = fuzzing::config();
    let mut may_persist = false;
    // Across connections (a resumed session keeps subscriptions and sends PUBRELs again,
    // overlapping connections see each other's messages): what any of them sent.
    let mut filters: Vec<String> = Vec::new();
    let mut published: HashSet<String> = HashSet::new();
    let mut pubrecs: HashSet<u16> = HashSet::new();
    for x in &out.exchanges {
        for p in &x.sent {
            match p {
                Packet::Publish(p) if !p.topic.is_empty() => {
                    published.insert(p.topic.clone());
                }
                Packet::Connect(c) => published.extend(c.will.iter().map(|w| w.topic.clone())),
                Packet::PubRec(r) => {
                    pubrecs.insert(r.packet_id);
                }
                Packet::Subscribe(s) => filters.extend(s.filters.iter().map(|(f, _)| f.clone())),
                _ => {}
            }
        }
    }
    let acks = |x: &fuzzing::Exchange| {
        x.sent.iter().any(|p| {
            matches!(
                p,
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)
            )
        })
    };
    for (n, x) in out.exchanges.iter().enumerate() {
        let ctx = format!("connection {n} ({:?})", x.protocol);
        assert!(
            x.finished,
            "{ctx}: neither closed nor ended within {CLOSE_BOUND:?} after its input"
        );
        assert!(
            x.closed_after <= CLOSE_BOUND,
            "{ctx}: ended {:?} after its input",
            x.closed_after
        );
        assert!(
            x.received_error.is_none(),
            "{ctx}: the broker sent what its codec refuses: {:?}",
            x.received_error
        );
        assert_eq!(x.received_leftover, 0, "{ctx}: a partial packet at close");

        let mut q1 = (0usize, HashSet::new());
        let mut q2 = (0usize, HashSet::new());
        let mut rels = (0usize, HashSet::new());
        let mut subs: HashMap<u16, Vec<usize>> = HashMap::new();
        let mut unsubs: HashMap<u16, Vec<usize>> = HashMap::new();
        let mut pings = 0usize;
        for p in &x.sent {
            match p {
                Packet::Publish(p) => {
                    let id = p.packet_id.unwrap_or(0);
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            q1.0 += 1;
                            q1.1.insert(id);
                        }
                        QoS::ExactlyOnce => {
                            q2.0 += 1;
                            q2.1.insert(id);
                        }
                    }
                }
                Packet::PubRel(r) => {
                    rels.0 += 1;
                    rels.1.insert(r.packet_id);
                }
                Packet::Subscribe(s) => {
                    subs.entry(s.packet_id).or_default().push(s.filters.len());
                }
                Packet::Unsubscribe(u) => {
                    unsubs.entry(u.packet_id).or_default().push(u.filters.len());
                }
                Packet::PingReq => pings += 1,
                _ => {}
            }
        }
        let connect = match x.sent.first() {
            Some(Packet::Connect(c)) => Some(c),
            _ => None,
        };
        let Some((first, _)) = x.received.first() else {
            continue;
        };
        let Packet::ConnAck(connack) = first else {
            panic!("{ctx}: first packet {}", first.name());
        };
        if connack.reason != 0 {
            assert_eq!(
                x.received.len(),
                1,
                "{ctx}: packets after a refusing CONNACK"
            );
            continue;
        }
        let c = connect.expect("a successful CONNACK answers a CONNECT");
        let v5 = c.protocol == Protocol::V5;
        may_persist |= if v5 {
            c.properties.session_expiry_interval > 0
        } else {
            !c.clean_start
        };
        let max_out = match (v5, c.properties.maximum_packet_size) {
            (true, Some(m)) => m as usize,
            _ => usize::MAX,
        };
        let window = match (v5, c.properties.receive_maximum) {
            (true, Some(m)) => usize::from(m),
            _ => 65_535,
        }
        .min(cfg.max_inflight_messages);
        // Acknowledgements free slots of the session's window, also from the connection open
        // before or after this one.
        let overlapping =
            |m: usize| (m + 1 == n && scripts[n].overlap) || (m == n + 1 && scripts[m].overlap);
        let client_acks = acks(x)
            || (n > 0 && overlapping(n - 1) && acks(&out.exchanges[n - 1]))
            || out
                .exchanges
                .get(n + 1)
                .is_some_and(|y| overlapping(n + 1) && acks(y));
        let (mut answers, mut comps, mut subacks, mut unsubacks, mut pingresps) = (0, 0, 0, 0, 0);
        let mut fresh_inflight = 0usize;
        let last = x.received.len() - 1;
        for (k, (p, size)) in x.received.iter().enumerate().skip(1) {
            // [MQTT-3.1.2-24]. Not checked: SUBACK/UNSUBACK (one reason per filter: no smaller
            // form exists; the broker sends them whole).
            if !matches!(p, Packet::SubAck(_) | Packet::UnsubAck(_)) {
                assert!(
                    *size <= max_out,
                    "{ctx}: {} of {size} bytes, the client's maximum is {max_out}",
                    p.name()
                );
            }
            match p {
                Packet::ConnAck(_) => panic!("{ctx}: a second CONNACK"),
                Packet::PubAck(r) => {
                    assert!(
                        q1.1.contains(&r.packet_id),
                        "{ctx}: PUBACK {} for no QoS 1 PUBLISH sent",
                        r.packet_id
                    );
                    answers += 1;
                }
                Packet::PubRec(r) => {
                    assert!(
                        q2.1.contains(&r.packet_id),
                        "{ctx}: PUBREC {} for no QoS 2 PUBLISH sent",
                        r.packet_id
                    );
                    answers += 1;
                }
                Packet::PubComp(r) => {
                    assert!(
                        rels.1.contains(&r.packet_id),
                        "{ctx}: PUBCOMP {} for no PUBREL sent",
                        r.packet_id
                    );
                    comps += 1;
                }
                Packet::PubRel(r) => {
                    assert!(
                        pubrecs.contains(&r.packet_id),
                        "{ctx}: PUBREL {} for no PUBREC sent",
                        r.packet_id
                    );
                }
                Packet::SubAck(s) => {
                    assert!(
                        subs.get(&s.packet_id)
                            .is_some_and(|n| n.contains(&s.reasons.len())),
                        "{ctx}: SUBACK {} with {} reasons matches no SUBSCRIBE sent",
                        s.packet_id,
                        s.reasons.len()
                    );
                    subacks += 1;
                }
                Packet::UnsubAck(u) => {
                    let sent = unsubs.get(&u.packet_id);
                    assert!(
                        sent.is_some(),
                        "{ctx}: UNSUBACK {} for no UNSUBSCRIBE sent",
                        u.packet_id
                    );
                    if v5 {
                        assert!(
                            sent.is_some_and(|n| n.contains(&u.reasons.len())),
                            "{ctx}: UNSUBACK {} reasons",
                            u.packet_id
                        );
                    }
                    unsubacks += 1;
                }
                Packet::PingResp => pingresps += 1,
                Packet::Publish(p) => {
                    let what = format!("{ctx}: PUBLISH {:?}", p.packet_id);
                    check_message(
                        &what,
                        &p.topic,
                        p.properties.response_topic.as_deref(),
                        &published,
                    );
                    assert!(
                        filters.iter().any(|f| topic::parse_filter(f)
                            .is_ok_and(|f| topic::matches(f.filter(), &p.topic))),
                        "{what}: {:?} matches no filter subscribed to",
                        p.topic
                    );
                    if p.qos != QoS::AtMostOnce && !p.dup {
                        fresh_inflight += 1;
                    }
                }
                Packet::Disconnect(_) => {
                    assert!(v5, "{ctx}: a DISCONNECT to a 3.1.1 client");
                    assert_eq!(k, last, "{ctx}: packets after the broker's DISCONNECT");
                }
                other => panic!("{ctx}: the broker sent {}", other.name()),
            }
        }
        assert!(
            answers <= q1.0 + q2.0,
            "{ctx}: {answers} PUBACK/PUBREC for {} QoS 1/2 PUBLISH",
            q1.0 + q2.0
        );
        assert!(
            comps <= rels.0,
            "{ctx}: {comps} PUBCOMP for {} PUBREL",
            rels.0
        );
        assert!(
            pingresps <= pings,
            "{ctx}: {pingresps} PINGRESP for {pings} PINGREQ"
        );
        assert!(
            subacks <= subs.values().map(Vec::len).sum::<usize>(),
            "{ctx}: more SUBACKs than SUBSCRIBEs"
        );
        assert!(
            unsubacks <= unsubs.values().map(Vec::len).sum::<usize>(),
            "{ctx}: more UNSUBACKs than UNSUBSCRIBEs"
        );
        if !client_acks {
            assert!(
                fresh_inflight <= window,
                "{ctx}: {fresh_inflight} unacknowledged QoS 1/2 deliveries, receive maximum {window}"
            );
        }
    }
    for m in &out.local {
        check_message(
            "in-process subscriber",
            &m.topic,
            m.response_topic.as_deref(),
            &published,
        );
        assert!(
            topic::matches("#", &m.topic),
            "in-process subscriber: {:?} does not match #",
            m.topic
        );
    }
    assert_eq!(
        out.stats.connections_current, 0,
        "a connection still counted"
    );
    let core = |s: &ironbridge_broker::BrokerSizes| (s.sessions, s.subscriptions, s.queued_bytes);
    assert_eq!(
        core(&out.after_expiry),
        core(&out.before),
        "(sessions, subscriptions, queued bytes) after every session expired"
    );
    if !may_persist {
        assert_eq!(
            core(&out.after),
            core(&out.before),
            "(sessions, subscriptions, queued bytes) after clean sessions ended"
        );
    }
    assert!(out.after.retained_messages <= cfg.max_retained_messages);
    assert!(out.after.retained_bytes <= cfg.max_retained_bytes);
}

/// With `MQTT_CONNECTION_TRACE` set, each connection's packets both ways (to read a crash).
fn trace(out: &Outcome) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("MQTT_CONNECTION_TRACE").is_some()) {
        return;
    }
    for (n, x) in out.exchanges.iter().enumerate() {
        eprintln!(
            "connection {n} ({:?}), closed {:?} after its input",
            x.protocol, x.closed_after
        );
        for p in &x.sent {
            eprintln!("  > {p:?}");
        }
        if let Some(e) = &x.sent_error {
            eprintln!("  > error: {e}");
        }
        for (p, size) in &x.received {
            eprintln!("  < {p:?} ({size} bytes)");
        }
    }
    for m in &out.local {
        eprintln!("  in-process: {:?} {:?}", m.topic, m.payload);
    }
    eprintln!(
        "sizes before {:?}\n      after {:?}\n after expiry {:?}",
        out.before, out.after, out.after_expiry
    );
}

fuzz_target!(|data: &[u8]| {
    let scripts = scripts(data);
    if scripts.is_empty() {
        return;
    }
    let out = fuzzing::converse(&scripts);
    trace(&out);
    check(&scripts, &out);
});
