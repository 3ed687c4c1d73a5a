//! The encoder: MQTT 5 short forms, what 3.1.1 leaves out, and what it refuses to write.

use bytes::Bytes;

use super::*;

fn resp(reason: u8) -> PubResp {
    PubResp {
        packet_id: 0x1234,
        reason,
        ..PubResp::default()
    }
}

fn encode_err(packet: &Packet, protocol: Protocol) -> EncodeError {
    let mut out = BytesMut::from(&b"kept"[..]);
    let err = encode(packet, protocol, &mut out).unwrap_err();
    assert_eq!(&out[..], b"kept", "output changed by a refused packet");
    assert_eq!(encoded_len(packet, protocol), Err(err.clone()));
    err
}

#[test]
fn v5_acknowledgement_short_forms_3_4_2_1() {
    // Reason 0 without properties: the packet identifier alone.
    assert_eq!(
        encode_vec(&Packet::PubAck(resp(0)), Protocol::V5),
        [0x40, 2, 0x12, 0x34]
    );
    // Another reason without properties: no property length.
    assert_eq!(
        encode_vec(&Packet::PubRec(resp(0x10)), Protocol::V5),
        [0x50, 3, 0x12, 0x34, 0x10]
    );
    assert_eq!(
        encode_vec(&Packet::PubRel(resp(0x92)), Protocol::V5),
        [0x62, 3, 0x12, 0x34, 0x92]
    );
    let with_string = PubResp {
        reason_string: Some("r".into()),
        ..resp(0)
    };
    let expected = [0x70, 8, 0x12, 0x34, 0, 4, 0x1F, 0, 1, b'r'];
    assert_eq!(
        encode_vec(&Packet::PubComp(with_string), Protocol::V5),
        expected
    );
}

#[test]
fn v5_disconnect_and_auth_short_forms_3_14_2_1_and_3_15_2_1() {
    assert_eq!(
        encode_vec(&Packet::Disconnect(Disconnect::default()), Protocol::V5),
        [0xE0, 0]
    );
    let d = Disconnect {
        reason: reason::SERVER_SHUTTING_DOWN,
        ..Disconnect::default()
    };
    assert_eq!(
        encode_vec(&Packet::Disconnect(d), Protocol::V5),
        [0xE0, 1, 0x8B]
    );
    assert_eq!(
        encode_vec(&Packet::Auth(Auth::default()), Protocol::V5),
        [0xF0, 0]
    );
    // AUTH has no reason-only form: reason code and property length go together.
    let a = Auth {
        reason: 0x18,
        ..Auth::default()
    };
    assert_eq!(
        encode_vec(&Packet::Auth(a), Protocol::V5),
        [0xF0, 2, 0x18, 0]
    );
}

#[test]
fn v311_leaves_out_reason_codes_and_properties() {
    let full = PubResp {
        packet_id: 7,
        reason: 0x80,
        reason_string: Some("no".into()),
        user_properties: vec![("k".into(), "v".into())],
    };
    assert_eq!(
        encode_vec(&Packet::PubAck(full), Protocol::V311),
        [0x40, 2, 0, 7]
    );
    let d = Disconnect {
        reason: 0x8B,
        reason_string: Some("bye".into()),
        ..Disconnect::default()
    };
    assert_eq!(
        encode_vec(&Packet::Disconnect(d), Protocol::V311),
        [0xE0, 0]
    );
    let p = Publish {
        topic: "t".into(),
        properties: PublishProperties {
            message_expiry_interval: Some(5),
            ..PublishProperties::default()
        },
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    assert_eq!(
        encode_vec(&Packet::Publish(p), Protocol::V311),
        [0x30, 4, 0, 1, b't', b'x']
    );
}

#[test]
fn v311_suback_failure_is_0x80() {
    let a = SubAck {
        packet_id: 1,
        reasons: vec![
            0,
            1,
            2,
            reason::NOT_AUTHORIZED,
            reason::TOPIC_FILTER_INVALID,
        ],
        ..SubAck::default()
    };
    assert_eq!(
        encode_vec(&Packet::SubAck(a), Protocol::V311),
        [0x90, 7, 0, 1, 0, 1, 2, 0x80, 0x80]
    );
}

#[test]
fn v311_connack_uses_the_3_1_1_return_codes() {
    let cases = [
        (reason::SUCCESS, 0),
        (reason::UNSUPPORTED_PROTOCOL_VERSION, 1),
        (reason::CLIENT_IDENTIFIER_NOT_VALID, 2),
        (reason::SERVER_UNAVAILABLE, 3),
        (reason::SERVER_BUSY, 3),
        (reason::BAD_USER_NAME_OR_PASSWORD, 4),
        (reason::NOT_AUTHORIZED, 5),
        (reason::BANNED, 5),
    ];
    for (reason, code) in cases {
        let c = ConnAck {
            reason,
            ..ConnAck::default()
        };
        assert_eq!(
            encode_vec(&Packet::ConnAck(c), Protocol::V311),
            [0x20, 2, 0, code]
        );
    }
}

#[test]
fn v311_unsuback_has_no_payload() {
    let a = UnsubAck {
        packet_id: 9,
        reasons: vec![reason::NO_SUBSCRIPTION_EXISTED],
        ..UnsubAck::default()
    };
    assert_eq!(
        encode_vec(&Packet::UnsubAck(a), Protocol::V311),
        [0xB0, 2, 0, 9]
    );
}

#[test]
fn v311_subscribe_carries_only_the_qos() {
    let s = Subscribe {
        packet_id: 1,
        subscription_identifier: Some(3),
        filters: vec![(
            "t".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::Never,
            },
        )],
        ..Subscribe::default()
    };
    assert_eq!(
        encode_vec(&Packet::Subscribe(s.clone()), Protocol::V311),
        [0x82, 6, 0, 1, 0, 1, b't', 2]
    );
    assert_eq!(
        encode_vec(&Packet::Subscribe(s), Protocol::V5),
        [0x82, 9, 0, 1, 2, 0x0B, 3, 0, 1, b't', 0x2E]
    );
}

#[test]
fn publish_fixed_header_flags() {
    let p = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "t".into(),
        packet_id: Some(1),
        ..Publish::default()
    };
    assert_eq!(encode_vec(&Packet::Publish(p), Protocol::V5)[0], 0x3D);
}

#[test]
fn refuses_a_string_longer_than_65535_bytes() {
    let p = Packet::Publish(Publish {
        topic: "a".repeat(65_536),
        ..Publish::default()
    });
    let expected = EncodeError::TooLong {
        packet: "PUBLISH",
        field: "topic name",
        len: 65_536,
    };
    assert_eq!(encode_err(&p, Protocol::V5), expected);
    let ok = Packet::Publish(Publish {
        topic: "a".repeat(65_535),
        ..Publish::default()
    });
    assert_eq!(encoded_len(&ok, Protocol::V311), Ok(1 + 3 + 2 + 65_535));
}

#[test]
fn refuses_binary_data_longer_than_65535_bytes() {
    let c = Connect {
        protocol: Protocol::V5,
        password: Some(Bytes::from(vec![0; 65_536])),
        ..Connect::default()
    };
    assert!(matches!(
        encode_err(&Packet::Connect(c), Protocol::V5),
        EncodeError::TooLong {
            field: "password",
            ..
        }
    ));
}

#[test]
fn refuses_u0000_in_a_string_mqtt_1_5_4_2() {
    let p = Packet::Unsubscribe(Unsubscribe {
        packet_id: 1,
        filters: vec!["a\0".into()],
        ..Unsubscribe::default()
    });
    let expected = EncodeError::NulCharacter {
        packet: "UNSUBSCRIBE",
        field: "topic filter",
    };
    assert_eq!(encode_err(&p, Protocol::V311), expected);
}

#[test]
fn refuses_a_packet_over_the_protocol_limit() {
    // 256 MiB of zeroed pages the kernel never has to provide: only the length is looked at.
    let payload = Bytes::from(vec![0u8; MAX_REMAINING_LENGTH]);
    let p = Packet::Publish(Publish {
        topic: "t".into(),
        payload: payload.clone(),
        ..Publish::default()
    });
    assert_eq!(
        encode_err(&p, Protocol::V311),
        EncodeError::PacketTooLarge {
            packet: "PUBLISH",
            size: MAX_REMAINING_LENGTH + 3,
        }
    );
    let p = Packet::Publish(Publish {
        topic: "t".into(),
        payload: payload.slice(..MAX_REMAINING_LENGTH - 3),
        ..Publish::default()
    });
    assert_eq!(
        encoded_len(&p, Protocol::V311),
        Ok(1 + 4 + MAX_REMAINING_LENGTH)
    );
}

#[test]
fn refuses_what_the_receiver_would_refuse() {
    let publish = |qos, packet_id, dup| {
        Packet::Publish(Publish {
            dup,
            qos,
            topic: "t".into(),
            packet_id,
            ..Publish::default()
        })
    };
    let cases = [
        (
            publish(QoS::AtLeastOnce, Some(0), false),
            "packet identifier 0",
        ),
        (
            publish(QoS::AtLeastOnce, None, false),
            "without a packet identifier",
        ),
        (
            publish(QoS::AtMostOnce, Some(1), false),
            "packet identifier on a QoS 0",
        ),
        (publish(QoS::AtMostOnce, None, true), "DUP set on a QoS 0"),
        (Packet::PubAck(resp(0x92)), "reason code not defined"),
        (
            Packet::Subscribe(Subscribe::default()),
            "packet identifier 0",
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                ..Subscribe::default()
            }),
            "no topic filter",
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: 1,
                ..SubAck::default()
            }),
            "no reason code",
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 1,
                ..UnsubAck::default()
            }),
            "no reason code",
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: reason::NOT_AUTHORIZED,
                ..ConnAck::default()
            }),
            "session present with a refusal",
        ),
        (
            Packet::ConnAck(ConnAck {
                properties: ConnAckProperties {
                    maximum_qos: Some(2),
                    ..ConnAckProperties::default()
                },
                ..ConnAck::default()
            }),
            "limited to 0 or 1",
        ),
        (
            Packet::Connect(Connect {
                protocol: Protocol::V5,
                properties: ConnectProperties {
                    receive_maximum: Some(0),
                    ..ConnectProperties::default()
                },
                ..Connect::default()
            }),
            "receive maximum or maximum packet size of 0",
        ),
        (
            Packet::Connect(Connect {
                protocol: Protocol::V5,
                properties: ConnectProperties {
                    authentication_data: Some(Bytes::from_static(b"x")),
                    ..ConnectProperties::default()
                },
                ..Connect::default()
            }),
            "authentication data without an authentication method",
        ),
        (
            Packet::Connect(Connect {
                protocol: Protocol::V311,
                ..Connect::default()
            }),
            "differs from the protocol to encode",
        ),
        (
            Packet::Publish(Publish {
                topic: "t".into(),
                properties: PublishProperties {
                    subscription_identifiers: vec![268_435_456],
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            "subscription identifier outside",
        ),
    ];
    for (packet, needle) in cases {
        let e = encode_err(&packet, Protocol::V5).to_string();
        assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
    }
    let auth = encode_err(&Packet::Auth(Auth::default()), Protocol::V311);
    assert!(
        auth.to_string()
            .contains("AUTH does not exist in MQTT 3.1.1")
    );
    let c = Connect {
        protocol: Protocol::V311,
        password: Some(Bytes::from_static(b"p")),
        ..Connect::default()
    };
    assert!(
        encode_err(&Packet::Connect(c), Protocol::V311)
            .to_string()
            .contains("without a user name")
    );
}

#[test]
fn encoded_len_is_the_length_written() {
    for protocol in [Protocol::V311, Protocol::V5] {
        for p in super::stream::client_packets(protocol) {
            assert_eq!(
                encoded_len(&p, protocol),
                Ok(encode_vec(&p, protocol).len()),
                "{p:?}"
            );
        }
    }
}

#[test]
fn appends_to_what_is_in_the_buffer() {
    let mut out = BytesMut::from(&b"ab"[..]);
    encode(&Packet::PingResp, Protocol::V5, &mut out).unwrap();
    assert_eq!(&out[..], &[b'a', b'b', 0xD0, 0]);
}
