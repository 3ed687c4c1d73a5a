//! Seeds for the `mqtt_codec` fuzz target (gateway/broker/fuzz): valid packets of every type in
//! both versions, from both sides, and the streams captured from real clients. Written into the source tree by
//! `cargo test -p ironbridge-broker write_fuzz_seed_corpus -- --ignored`.
//!
//! An input is: a mode byte (bit 0: client-side decoder; bit 1: its protocol is 5; bits 2-4: the
//! maximum packet size, 0 = none), a split byte (0: the stream at once; n: chunks of 1 to n
//! bytes), then the stream.

use std::path::Path;

use bytes::Bytes;

use super::*;

fn user() -> Vec<UserProperty> {
    vec![
        ("site".into(), "berlin".into()),
        ("line".into(), "3".into()),
    ]
}

fn connect(protocol: Protocol) -> Packet {
    Packet::Connect(Connect {
        protocol,
        clean_start: false,
        keep_alive: 30,
        client_id: "edge-7".into(),
        username: Some("plant".into()),
        password: Some(Bytes::from_static(b"secret")),
        will: Some(Will {
            topic: "status/edge-7".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: 5,
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("r".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: user(),
            },
        }),
        properties: ConnectProperties {
            session_expiry_interval: 3600,
            receive_maximum: Some(20),
            maximum_packet_size: Some(65536),
            topic_alias_maximum: 10,
            request_response_information: true,
            request_problem_information: false,
            user_properties: user(),
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"n,,n=user")),
        },
    })
}

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: qos != QoS::AtMostOnce,
        qos,
        retain: true,
        topic: "plant/line1/temp".into(),
        packet_id: Some(7).filter(|_| qos != QoS::AtMostOnce),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            response_topic: Some("reply/edge-7".into()),
            correlation_data: Some(Bytes::from_static(b"\x0a\x0b")),
            user_properties: user(),
            subscription_identifiers: vec![7, 300_000],
            content_type: Some("application/json".into()),
        },
        payload: Bytes::from_static(br#"{"t":21.5}"#),
    })
}

fn resp(reason: u8) -> PubResp {
    PubResp {
        packet_id: 7,
        reason,
        reason_string: Some("why".into()).filter(|_| reason != 0),
        user_properties: if reason == 0 { Vec::new() } else { user() },
    }
}

/// What a client sends after its CONNECT.
fn from_client() -> Vec<Packet> {
    vec![
        publish(QoS::AtMostOnce),
        publish(QoS::AtLeastOnce),
        publish(QoS::ExactlyOnce),
        Packet::PubAck(resp(0)),
        Packet::PubAck(resp(0x10)),
        Packet::PubRec(resp(0x80)),
        Packet::PubRel(resp(0)),
        Packet::PubComp(resp(0x92)),
        Packet::Subscribe(Subscribe {
            packet_id: 8,
            subscription_identifier: Some(300_000),
            user_properties: user(),
            filters: vec![
                (
                    "plant/+/temp".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::OnNewSubscribe,
                    },
                ),
                (
                    "$share/g/cmd/#".into(),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        retain_handling: RetainHandling::Never,
                        ..SubscriptionOptions::default()
                    },
                ),
            ],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 9,
            user_properties: user(),
            filters: vec!["plant/+/temp".into(), "cmd/#".into()],
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect {
            reason: reason::DISCONNECT_WITH_WILL,
            session_expiry_interval: Some(0),
            reason_string: Some("bye".into()),
            user_properties: user(),
            server_reference: None,
        }),
        Packet::Disconnect(Disconnect::default()),
        Packet::Auth(Auth {
            reason: 0x19,
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"c=biws")),
            reason_string: None,
            user_properties: Vec::new(),
        }),
    ]
}

/// What a server sends.
fn from_server() -> Vec<Packet> {
    vec![
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: 0,
            properties: ConnAckProperties {
                session_expiry_interval: Some(600),
                receive_maximum: Some(100),
                maximum_qos: Some(1),
                retain_available: Some(true),
                maximum_packet_size: Some(1 << 20),
                assigned_client_identifier: Some("auto-1".into()),
                topic_alias_maximum: Some(16),
                reason_string: Some("ok".into()),
                user_properties: user(),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(false),
                shared_subscription_available: Some(true),
                server_keep_alive: Some(60),
                response_information: Some("resp/".into()),
                server_reference: Some("other:1883".into()),
                authentication_method: Some("SCRAM-SHA-256".into()),
                authentication_data: Some(Bytes::from_static(b"s")),
            },
        }),
        Packet::ConnAck(ConnAck {
            reason: reason::NOT_AUTHORIZED,
            ..ConnAck::default()
        }),
        publish(QoS::ExactlyOnce),
        Packet::PubAck(resp(reason::NO_MATCHING_SUBSCRIBERS)),
        Packet::PubRec(resp(0)),
        Packet::PubRel(resp(0x92)),
        Packet::PubComp(resp(0)),
        Packet::SubAck(SubAck {
            packet_id: 8,
            reason_string: Some("partly".into()),
            user_properties: user(),
            reasons: vec![1, 2, reason::NOT_AUTHORIZED, 0],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 9,
            reason_string: None,
            user_properties: user(),
            reasons: vec![0, reason::NO_SUBSCRIPTION_EXISTED],
        }),
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: reason::SERVER_MOVED,
            server_reference: Some("other:1883".into()),
            ..Disconnect::default()
        }),
        Packet::Auth(Auth {
            reason: 0x18,
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..Auth::default()
        }),
    ]
}

fn stream(packets: &[Packet], protocol: Protocol) -> Vec<u8> {
    packets
        .iter()
        .filter(|p| protocol == Protocol::V5 || !matches!(p, Packet::Auth(_)))
        .flat_map(|p| encode_vec(p, protocol))
        .collect()
}

/// (file name, input).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (protocol, tag, client_mode) in
        [(Protocol::V311, "v311", 0x01u8), (Protocol::V5, "v5", 0x03)]
    {
        let connect = stream(&[connect(protocol)], protocol);
        for (i, p) in from_client().iter().enumerate() {
            let packet = stream(std::slice::from_ref(p), protocol);
            if packet.is_empty() {
                continue;
            }
            let mut input = vec![0x00, 0x00];
            input.extend(&connect);
            input.extend(packet);
            seeds.push((
                format!("seed-{tag}-client-{i:02}-{}", p.name().to_lowercase()),
                input,
            ));
        }
        for (i, p) in from_server().iter().enumerate() {
            let packet = stream(std::slice::from_ref(p), protocol);
            if packet.is_empty() {
                continue;
            }
            let mut input = vec![client_mode, 0x00];
            input.extend(packet);
            seeds.push((
                format!("seed-{tag}-server-{i:02}-{}", p.name().to_lowercase()),
                input,
            ));
        }
        // Whole sessions, split in chunks of up to 1, 3 and 7 bytes, under a 128-byte limit.
        let mut session = vec![0x00, 0x07];
        session.extend(&connect);
        session.extend(stream(&from_client(), protocol));
        seeds.push((format!("seed-{tag}-client-session"), session));
        let mut session = vec![client_mode, 0x03];
        session.extend(stream(&from_server(), protocol));
        seeds.push((format!("seed-{tag}-server-session"), session));
        let mut limited = vec![0x0C, 0x01];
        limited.extend(connect_frame(protocol));
        let small = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: Some(1),
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        });
        limited.extend(stream(&[small, Packet::PingReq], protocol));
        seeds.push((format!("seed-{tag}-client-limit-128"), limited));
    }
    for (name, mode, stream) in super::interop::CAPTURED {
        let mut input = vec![*mode, 0x00];
        input.extend(super::interop::hex(stream));
        seeds.push((format!("seed-captured-{name}"), input));
    }
    seeds
}

#[test]
fn fuzz_seeds_decode_cleanly() {
    for (name, input) in seeds() {
        let [mode, _, stream @ ..] = &input[..] else {
            panic!()
        };
        let mut d = if mode & 1 == 0 {
            Decoder::new(if mode >> 2 == 3 { 128 } else { usize::MAX })
        } else {
            let protocol = if mode & 2 == 0 {
                Protocol::V311
            } else {
                Protocol::V5
            };
            Decoder::client(protocol, usize::MAX)
        };
        let mut buf = BytesMut::from(stream);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert!(buf.is_empty(), "{name}");
    }
}

#[test]
#[ignore = "writes the fuzz seed corpus into the source tree"]
fn write_fuzz_seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mqtt_codec");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, input) in seeds() {
        std::fs::write(dir.join(name), input).unwrap();
    }
}
