//! Property tests: any valid packet survives encode → decode, in both versions (minus what 3.1.1
//! cannot carry), and any split of a stream decodes to the same packets.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::spec::{self, valid_reason};
use super::*;

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,6}"
}

fn data() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn reason_of(kind: u8) -> impl Strategy<Value = u8> {
    select(
        (0..=255)
            .filter(|&c| valid_reason(kind, c))
            .collect::<Vec<u8>>(),
    )
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn subscription_id() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let properties = (
        any::<u32>(),
        of(1..=u16::MAX),
        of(1..=u32::MAX),
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
        users(),
        of(text()),
        of(data()),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, user, method, data)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: user,
                // Data needs a method.
                authentication_data: data.filter(|_| method.is_some()),
                authentication_method: method,
            },
        );
    let will_properties = (
        any::<u32>(),
        of(0..=1u8),
        of(any::<u32>()),
        of(text()),
        of(text()),
        of(data()),
        users(),
    )
        .prop_map(|(delay, pfi, expiry, ct, rt, cd, user)| WillProperties {
            will_delay_interval: delay,
            payload_format_indicator: pfi,
            message_expiry_interval: expiry,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
        });
    let will = (text(), data(), qos(), any::<bool>(), will_properties).prop_map(
        |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    );
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        of(text()),
        of(data()),
        of(will),
        properties,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, username, password, will, properties)| {
                // 3.1.1 has no password without a user name.
                let username = match protocol {
                    Protocol::V311 if password.is_some() => username.or(Some(String::new())),
                    _ => username,
                };
                Packet::Connect(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    username,
                    password,
                    will,
                    properties,
                })
            },
        )
}

fn connack() -> impl Strategy<Value = Packet> {
    let limits = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(0..=1u8),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(text()),
        of(any::<u16>()),
        of(text()),
        users(),
    );
    let rest = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(text()),
        of(text()),
        of(text()),
        of(data()),
    );
    (any::<bool>(), reason_of(spec::CONNACK), limits, rest).prop_map(|(sp, reason, l, r)| {
        Packet::ConnAck(ConnAck {
            session_present: sp && reason == 0,
            reason,
            properties: ConnAckProperties {
                session_expiry_interval: l.0,
                receive_maximum: l.1,
                maximum_qos: l.2,
                retain_available: l.3,
                maximum_packet_size: l.4,
                assigned_client_identifier: l.5,
                topic_alias_maximum: l.6,
                reason_string: l.7,
                user_properties: l.8,
                wildcard_subscription_available: r.0,
                subscription_identifiers_available: r.1,
                shared_subscription_available: r.2,
                server_keep_alive: r.3,
                response_information: r.4,
                server_reference: r.5,
                authentication_method: r.6,
                authentication_data: r.7,
            },
        })
    })
}

fn publish() -> impl Strategy<Value = Packet> {
    let properties = (
        of(0..=1u8),
        of(any::<u32>()),
        of(any::<u16>()),
        of(text()),
        of(data()),
        users(),
        vec(subscription_id(), 0..3),
        of(text()),
    )
        .prop_map(
            |(pfi, expiry, alias, rt, cd, user, ids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: rt,
                correlation_data: cd,
                user_properties: user,
                subscription_identifiers: ids,
                content_type: ct,
            },
        );
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        text(),
        packet_id(),
        properties,
        data(),
    )
        .prop_map(|(dup, qos, retain, topic, id, properties, payload)| {
            let at_least_once = qos != QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && at_least_once,
                qos,
                retain,
                topic,
                packet_id: Some(id).filter(|_| at_least_once),
                properties,
                payload,
            })
        })
}

fn pub_resp(kind: u8) -> impl Strategy<Value = PubResp> {
    (packet_id(), reason_of(kind), of(text()), users()).prop_map(|(packet_id, reason, rs, user)| {
        PubResp {
            packet_id,
            reason,
            reason_string: rs,
            user_properties: user,
        }
    })
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    let handling = select(vec![
        RetainHandling::OnSubscribe,
        RetainHandling::OnNewSubscribe,
        RetainHandling::Never,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(|(qos, nl, rap, rh)| {
        SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: rh,
        }
    })
}

fn subscribe() -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        of(subscription_id()),
        users(),
        vec((text(), options()), 1..4),
    )
        .prop_map(|(id, sid, user, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id: id,
                subscription_identifier: sid,
                user_properties: user,
                filters,
            })
        })
}

fn suback() -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        of(text()),
        users(),
        vec(reason_of(spec::SUBACK), 1..4),
    )
        .prop_map(|(id, rs, user, reasons)| {
            Packet::SubAck(SubAck {
                packet_id: id,
                reason_string: rs,
                user_properties: user,
                reasons,
            })
        })
}

fn unsubscribe() -> impl Strategy<Value = Packet> {
    (packet_id(), users(), vec(text(), 1..4)).prop_map(|(id, user, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            user_properties: user,
            filters,
        })
    })
}

fn unsuback() -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        of(text()),
        users(),
        vec(reason_of(spec::UNSUBACK), 1..4),
    )
        .prop_map(|(id, rs, user, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id: id,
                reason_string: rs,
                user_properties: user,
                reasons,
            })
        })
}

fn disconnect() -> impl Strategy<Value = Packet> {
    (
        reason_of(spec::DISCONNECT),
        of(any::<u32>()),
        of(text()),
        users(),
        of(text()),
    )
        .prop_map(|(reason, sei, rs, user, sr)| {
            Packet::Disconnect(Disconnect {
                reason,
                session_expiry_interval: sei,
                reason_string: rs,
                user_properties: user,
                server_reference: sr,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason_of(spec::AUTH),
        of(text()),
        of(data()),
        of(text()),
        users(),
    )
        .prop_map(|(reason, m, d, rs, user)| {
            Packet::Auth(Auth {
                reason,
                authentication_method: m,
                authentication_data: d,
                reason_string: rs,
                user_properties: user,
            })
        })
}

/// Any packet valid in `protocol` (3.1.1: no AUTH; its v5-only fields are filled all the same,
/// to show the encoder leaves them out).
fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(protocol),
        connack(),
        publish(),
        pub_resp(spec::PUBACK).prop_map(Packet::PubAck),
        pub_resp(spec::PUBREC).prop_map(Packet::PubRec),
        pub_resp(spec::PUBREL).prop_map(Packet::PubRel),
        pub_resp(spec::PUBCOMP).prop_map(Packet::PubComp),
        subscribe(),
        suback(),
        unsubscribe(),
        unsuback(),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(),
    ];
    match protocol {
        Protocol::V311 => common.boxed(),
        Protocol::V5 => prop_oneof![14 => common, 1 => auth()].boxed(),
    }
}

/// What a 3.1.1 peer receives of `p`: no properties, no reason codes but CONNACK's and SUBACK's
/// (mapped to 3.1.1's), subscription options reduced to the QoS.
fn as_v311(p: Packet) -> Packet {
    let resp = |r: PubResp| PubResp {
        packet_id: r.packet_id,
        ..PubResp::default()
    };
    match p {
        Packet::Connect(c) => Packet::Connect(Connect {
            properties: ConnectProperties {
                request_problem_information: true,
                ..ConnectProperties::default()
            },
            will: c.will.map(|w| Will {
                properties: WillProperties::default(),
                ..w
            }),
            ..c
        }),
        Packet::ConnAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            reason: spec::connack_reason_from_v311(reason::connack_v311(c.reason)).unwrap(),
            properties: ConnAckProperties::default(),
        }),
        Packet::Publish(p) => Packet::Publish(Publish {
            properties: PublishProperties::default(),
            ..p
        }),
        Packet::PubAck(r) => Packet::PubAck(resp(r)),
        Packet::PubRec(r) => Packet::PubRec(resp(r)),
        Packet::PubRel(r) => Packet::PubRel(resp(r)),
        Packet::PubComp(r) => Packet::PubComp(resp(r)),
        Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.packet_id,
            filters: s
                .filters
                .into_iter()
                .map(|(f, o)| {
                    let o = SubscriptionOptions {
                        qos: o.qos,
                        ..SubscriptionOptions::default()
                    };
                    (f, o)
                })
                .collect(),
            ..Subscribe::default()
        }),
        Packet::SubAck(a) => Packet::SubAck(SubAck {
            packet_id: a.packet_id,
            reasons: a
                .reasons
                .into_iter()
                .map(|r| if r <= 2 { r } else { 0x80 })
                .collect(),
            ..SubAck::default()
        }),
        Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            user_properties: Vec::new(),
            ..u
        }),
        Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            packet_id: a.packet_id,
            ..UnsubAck::default()
        }),
        Packet::Disconnect(_) => Packet::Disconnect(Disconnect::default()),
        p => p,
    }
}

/// A client's stream: CONNECT, then packets a client sends.
fn client_stream(protocol: Protocol) -> impl Strategy<Value = Vec<Packet>> {
    let from_client = packet(protocol).prop_filter("client packets", |p| {
        !matches!(
            p,
            Packet::Connect(_)
                | Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp
        )
    });
    (connect(protocol), vec(from_client, 0..6)).prop_map(|(c, rest)| {
        let mut all = vec![c];
        all.extend(rest);
        all
    })
}

fn expected_in(protocol: Protocol, p: Packet) -> Packet {
    match protocol {
        Protocol::V311 => as_v311(p),
        Protocol::V5 => p,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v5_packets_round_trip(p in packet(Protocol::V5)) {
        let bytes = encode_vec(&p, Protocol::V5);
        prop_assert_eq!(encoded_len(&p, Protocol::V5), Ok(bytes.len()));
        prop_assert_eq!(decode_packet(Protocol::V5, &bytes), Ok(p));
    }

    #[test]
    fn v311_packets_round_trip_without_what_3_1_1_cannot_carry(p in packet(Protocol::V311)) {
        let bytes = encode_vec(&p, Protocol::V311);
        prop_assert_eq!(encoded_len(&p, Protocol::V311), Ok(bytes.len()));
        prop_assert_eq!(decode_packet(Protocol::V311, &bytes), Ok(as_v311(p)));
    }

    #[test]
    fn any_split_of_a_client_stream_gives_the_same_packets(
        v5 in any::<bool>(),
        packets in client_stream(Protocol::V311),
        packets_v5 in client_stream(Protocol::V5),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (protocol, packets) = if v5 { (Protocol::V5, packets_v5) } else { (Protocol::V311, packets) };
        let bytes: Vec<u8> = packets.iter().flat_map(|p| encode_vec(p, protocol)).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in cuts {
            buf.extend_from_slice(&bytes[from..to]);
            from = to;
            while let Some(p) = d.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        let expected: Vec<Packet> = packets.into_iter().map(|p| expected_in(protocol, p)).collect();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), client in any::<bool>()) {
        let mut d = if client { Decoder::client(Protocol::V5, 256) } else { Decoder::new(256) };
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = decode_packet(Protocol::V311, &bytes);
        let _ = decode_packet(Protocol::V5, &bytes);
    }
}
