//! One test per rule the decoder enforces, named after it (statement ids are MQTT 5.0's unless
//! marked 3.1.1).

use super::*;

fn empty() -> Body {
    Body::new()
}

/// A v5 PUBLISH QoS 0 to "t" with properties `p` and payload "x".
fn publish_with(p: Body) -> Vec<u8> {
    Body::new().str("t").props(p).raw(b"x").frame(0x30)
}

/// A v5 CONNECT (clean start) with properties `p`.
fn connect_with(p: Body) -> Vec<u8> {
    connect_header(5, 0x02).props(p).str("c").frame(0x10)
}

// Fixed header.

#[test]
fn reserved_flag_bits_must_be_zero_mqtt_2_1_3_1() {
    for kind in [1u8, 2, 4, 5, 7, 9, 11, 12, 13, 14, 15] {
        for flags in 1..16u8 {
            assert_malformed(v5(&empty().frame(kind << 4 | flags)), "flags");
        }
    }
}

#[test]
fn pubrel_subscribe_unsubscribe_flags_must_be_0010_mqtt_3_6_1_1_and_3_8_1_1_and_3_10_1_1() {
    for kind in [6u8, 8, 10] {
        for flags in (0..16u8).filter(|&f| f != 0b0010) {
            let frame = Body::new().u16(1).frame(kind << 4 | flags);
            assert_malformed(v311(&frame), "flags 0b");
        }
    }
    assert!(v311(&Body::new().u16(1).frame(0x62)).is_ok());
}

#[test]
fn publish_qos_3_is_malformed_mqtt_3_3_1_4() {
    assert_malformed(
        v5(&Body::new().str("t").u16(1).props(empty()).frame(0x36)),
        "QoS 3",
    );
    assert_malformed(v311(&Body::new().str("t").u16(1).frame(0x36)), "QoS 3");
}

#[test]
fn publish_dup_with_qos_0_is_malformed_mqtt_3_3_1_2() {
    assert_malformed(v5(&Body::new().str("t").props(empty()).frame(0x38)), "DUP");
    let dup_qos1 = v5(&Body::new().str("t").u16(1).props(empty()).frame(0x3A));
    assert!(matches!(
        dup_qos1,
        Ok(Packet::Publish(Publish { dup: true, .. }))
    ));
}

#[test]
fn reserved_packet_types_are_malformed() {
    assert_malformed(v5(&empty().frame(0x00)), "reserved packet type 0");
    // AUTH (15) is reserved in 3.1.1.
    assert_malformed(v311(&empty().frame(0xF0)), "reserved in MQTT 3.1.1");
}

#[test]
fn remaining_length_of_more_than_4_bytes_is_malformed_mqtt_1_5_5() {
    assert_malformed(
        v5(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        "more than 4 bytes",
    );
    let mut d = Decoder::new(usize::MAX);
    let mut buf = BytesMut::from(&[0x10, 0x80, 0x80, 0x80, 0x80][..]);
    assert_eq!(
        d.decode(&mut buf).map_err(|e| e.reason_code()),
        Err(reason::MALFORMED_PACKET)
    );
}

#[test]
fn variable_byte_integers_longer_than_needed_are_accepted_mqtt_1_5_5() {
    assert_eq!(v5(&[0xC0, 0x80, 0x00]), Ok(Packet::PingReq));
    // A property length of 0 in two bytes.
    let frame = Body::new().str("t").raw(&[0x80, 0x00]).frame(0x30);
    assert!(v5(&frame).is_ok());
}

// Data types.

#[test]
fn string_must_be_well_formed_utf8_mqtt_1_5_4_1() {
    // A stray byte, an encoded surrogate (U+D800), an overlong '/'.
    for bad in [&[0xFF][..], &[0xED, 0xA0, 0x80], &[0xC0, 0xAF]] {
        let frame = Body::new().str(bad).props(empty()).frame(0x30);
        assert_malformed(v5(&frame), "topic name is not valid UTF-8");
    }
}

#[test]
fn string_must_not_contain_u0000_mqtt_1_5_4_2() {
    assert_malformed(
        v5(&Body::new().str("a\0b").props(empty()).frame(0x30)),
        "U+0000",
    );
    let user = Body::new().u8(0x26).str("k").str("v\0");
    assert_malformed(
        v5(&publish_with(user)),
        "user property value contains U+0000",
    );
}

#[test]
fn byte_order_mark_is_kept_mqtt_1_5_4_3() {
    let frame = Body::new().str("\u{FEFF}a").props(empty()).frame(0x30);
    let Ok(Packet::Publish(p)) = v5(&frame) else {
        panic!()
    };
    assert_eq!(p.topic, "\u{FEFF}a");
}

#[test]
fn string_length_must_fit_in_the_packet() {
    let frame = Body::new().u16(10).raw(b"abc").frame(0x30);
    assert_malformed(v311(&frame), "topic name runs past the end");
}

#[test]
fn binary_data_length_must_fit_in_the_packet() {
    let data = Body::new().u8(0x09).u16(9).raw(b"ab");
    assert_malformed(
        v5(&publish_with(data)),
        "correlation data runs past the end",
    );
    let will = connect_header(4, 0x06)
        .str("c")
        .str("wt")
        .u16(5)
        .raw(b"ab")
        .frame(0x10);
    assert_malformed(v311(&will), "will payload runs past the end");
}

// Packet identifiers.

#[test]
fn packet_identifier_must_be_nonzero_mqtt_2_2_1_3() {
    let publish = Body::new().str("t").u16(0).props(empty()).frame(0x32);
    let subscribe = Body::new().u16(0).props(empty()).str("t").u8(0).frame(0x82);
    let unsubscribe = Body::new().u16(0).props(empty()).str("t").frame(0xA2);
    for frame in [publish, subscribe, unsubscribe] {
        assert_protocol_error(v5(&frame), "packet identifier 0");
    }
}

#[test]
fn acknowledgements_carry_a_nonzero_packet_identifier_mqtt_2_2_1_5_and_2_2_1_6() {
    for first in [0x40, 0x50, 0x62, 0x70, 0xB0] {
        assert_protocol_error(
            v311(&Body::new().u16(0).frame(first)),
            "packet identifier 0",
        );
    }
    assert_protocol_error(
        v311(&Body::new().u16(0).u8(0).frame(0x90)),
        "packet identifier 0",
    );
}

#[test]
fn qos_0_publish_has_no_packet_identifier_mqtt_2_2_1_2() {
    let frame = Body::new().str("t").raw(&[0, 1, b'x']).frame(0x30);
    let Ok(Packet::Publish(p)) = v311(&frame) else {
        panic!()
    };
    assert_eq!(p.packet_id, None);
    assert_eq!(&p.payload[..], &[0, 1, b'x']);
}

// Order and direction on a connection.

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    let mut d = Decoder::new(1024);
    // Refused from its first byte, before the rest arrives.
    let mut buf = BytesMut::from(&[0x30][..]);
    assert_protocol_error(
        d.decode(&mut buf).map(|p| p.unwrap_or(Packet::PingReq)),
        "first packet must be CONNECT",
    );
}

#[test]
fn second_connect_is_a_protocol_error_mqtt_3_1_0_2() {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&connect_frame(Protocol::V5)[..]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    buf.extend_from_slice(&connect_frame(Protocol::V5));
    let result = d.decode(&mut buf).map(|p| p.unwrap_or(Packet::PingReq));
    assert_protocol_error(result, "second CONNECT");
}

#[test]
fn server_packets_from_a_client_are_protocol_errors() {
    for frame in [
        Body::new().u8(0).u8(0).props(empty()).frame(0x20),
        Body::new().u16(1).props(empty()).u8(0).frame(0x90),
        Body::new().u16(1).props(empty()).u8(0).frame(0xB0),
        empty().frame(0xD0),
    ] {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&connect_frame(Protocol::V5)[..]);
        assert!(d.decode(&mut buf).is_ok());
        buf.extend_from_slice(&frame);
        let result = d.decode(&mut buf).map(|p| p.unwrap_or(Packet::PingReq));
        assert_protocol_error(result, "only a server sends");
    }
}

#[test]
fn client_packets_to_a_client_are_protocol_errors() {
    for frame in [
        connect_frame(Protocol::V5),
        Body::new().u16(1).props(empty()).str("t").u8(0).frame(0x82),
        Body::new().u16(1).props(empty()).str("t").frame(0xA2),
        empty().frame(0xC0),
    ] {
        let mut d = Decoder::client(Protocol::V5, 1024);
        let result = d.decode(&mut BytesMut::from(&frame[..]));
        assert_protocol_error(
            result.map(|p| p.unwrap_or(Packet::PingReq)),
            "only a client sends",
        );
    }
}

#[test]
fn connect_fixes_the_protocol() {
    let mut d = Decoder::new(1024);
    assert_eq!(d.protocol(), None);
    let mut buf = BytesMut::from(&connect_frame(Protocol::V311)[..]);
    let Ok(Some(Packet::Connect(c))) = d.decode(&mut buf) else {
        panic!()
    };
    assert_eq!(
        (c.protocol, d.protocol()),
        (Protocol::V311, Some(Protocol::V311))
    );
    // A v5 PUBACK (with a reason code) is too long for 3.1.1.
    buf.extend_from_slice(&Body::new().u16(1).u8(0x10).frame(0x40));
    let result = d.decode(&mut buf).map(|p| p.unwrap_or(Packet::PingReq));
    assert_malformed(result, "1 bytes after the end");
}

// CONNECT.

#[test]
fn protocol_name_must_be_mqtt_mqtt_3_1_2_1() {
    for (name, level) in [("MQIsdp", 3u8), ("MQTX", 4), ("mqtt", 5)] {
        let frame = Body::new()
            .str(name)
            .u8(level)
            .u8(0x02)
            .u16(60)
            .str("c")
            .frame(0x10);
        let err = v311(&frame).unwrap_err();
        assert_eq!(err.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(
            err,
            DecodeError::UnsupportedProtocol {
                name: name.into(),
                level
            }
        );
    }
}

#[test]
fn protocol_level_must_be_4_or_5_mqtt_3_1_2_2() {
    for level in [0u8, 3, 6, 0x84] {
        let frame = connect_header(level, 0x02).str("c").frame(0x10);
        assert_error(v5(&frame), reason::UNSUPPORTED_PROTOCOL_VERSION, "level");
    }
}

#[test]
fn unsupported_protocol_is_reported_before_other_errors() {
    // Reserved flag set and nothing after it: still "unsupported protocol" for an MQTT 3.1 client.
    let frame = Body::new().str("MQIsdp").u8(3).u8(0x03).frame(0x10);
    assert_error(v311(&frame), reason::UNSUPPORTED_PROTOCOL_VERSION, "MQIsdp");
}

#[test]
fn connect_reserved_flag_must_be_0_mqtt_3_1_2_3() {
    assert_malformed(
        v311(&connect_header(4, 0x03).str("c").frame(0x10)),
        "reserved connect flag",
    );
    assert_malformed(
        v5(&connect_header(5, 0x03).props(empty()).str("c").frame(0x10)),
        "reserved connect flag",
    );
}

#[test]
fn will_qos_must_be_0_without_will_flag_mqtt_3_1_2_11_and_3_1_1_3_1_2_13() {
    for qos_bits in [0x08, 0x10, 0x18] {
        let frame = connect_header(4, 0x02 | qos_bits).str("c").frame(0x10);
        assert_malformed(v311(&frame), "will QoS without the will flag");
    }
}

#[test]
fn will_retain_must_be_0_without_will_flag_mqtt_3_1_2_13_and_3_1_1_3_1_2_15() {
    let frame = connect_header(5, 0x22).props(empty()).str("c").frame(0x10);
    assert_malformed(v5(&frame), "will retain without the will flag");
}

#[test]
fn will_qos_3_is_malformed_mqtt_3_1_2_12() {
    let frame = connect_header(5, 0x1E)
        .props(empty())
        .str("c")
        .props(empty())
        .str("w")
        .str("p")
        .frame(0x10);
    assert_malformed(v5(&frame), "will QoS 3");
}

#[test]
fn v311_password_needs_a_user_name_3_1_1_mqtt_3_1_2_22() {
    let frame = connect_header(4, 0x42).str("c").str("secret").frame(0x10);
    assert_malformed(v311(&frame), "password flag without the user name flag");
    // MQTT 5 allows a password alone.
    let frame = connect_header(5, 0x42)
        .props(empty())
        .str("c")
        .str("secret")
        .frame(0x10);
    let Ok(Packet::Connect(c)) = v5(&frame) else {
        panic!()
    };
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"secret"[..]))
    );
}

#[test]
fn flagged_fields_must_be_present_mqtt_3_1_2_9_and_3_1_2_17_and_3_1_2_19() {
    let no_user = connect_header(4, 0x82).str("c").frame(0x10);
    assert_malformed(v311(&no_user), "user name runs past the end");
    let no_password = connect_header(4, 0xC2).str("c").str("u").frame(0x10);
    assert_malformed(v311(&no_password), "password runs past the end");
    let no_will = connect_header(5, 0x06).props(empty()).str("c").frame(0x10);
    assert_malformed(v5(&no_will), "property length runs past the end");
}

#[test]
fn connect_with_bytes_after_the_payload_is_malformed() {
    let frame = connect_header(4, 0x02).str("c").u8(0).frame(0x10);
    assert_malformed(v311(&frame), "1 bytes after the end");
}

#[test]
fn absent_request_problem_information_means_1() {
    for frame in [connect_frame(Protocol::V5), connect_frame(Protocol::V311)] {
        let Ok(Packet::Connect(c)) = v5(&frame) else {
            panic!()
        };
        assert!(c.properties.request_problem_information);
    }
    let Ok(Packet::Connect(c)) = v5(&connect_with(Body::new().u8(0x17).u8(0))) else {
        panic!()
    };
    assert!(!c.properties.request_problem_information);
}

#[test]
fn protocol_is_known_after_a_refused_connect() {
    let mut d = Decoder::new(1024);
    let frame = connect_header(5, 0x03).props(empty()).str("c").frame(0x10);
    let result = d.decode(&mut BytesMut::from(&frame[..]));
    assert_eq!(
        result.map_err(|e| e.reason_code()),
        Err(reason::MALFORMED_PACKET)
    );
    // So the refusal can be a v5 CONNACK with reason 0x81.
    assert_eq!(d.protocol(), Some(Protocol::V5));
}

// MQTT 5 properties.

#[test]
fn unknown_property_identifier_is_malformed_mqtt_2_2_2_2() {
    for id in [
        Body::new().u8(0x04),
        Body::new().u8(0x7F),
        Body::new().u8(0x00),
        Body::new().raw(&[0x80, 0x01]),
    ] {
        assert_malformed(v5(&publish_with(id.u8(0))), "unknown property identifier");
    }
}

#[test]
fn property_not_allowed_in_the_packet_is_malformed_mqtt_2_2_2_2() {
    let session_expiry = Body::new().u8(0x11).u32(10);
    assert_malformed(
        v5(&publish_with(session_expiry)),
        "session expiry interval (0x11) is not allowed",
    );
    let alias = Body::new().u8(0x23).u16(1);
    let puback = Body::new().u16(1).u8(0).props(alias).frame(0x40);
    assert_malformed(v5(&puback), "topic alias (0x23) is not allowed");
    let will_props = Body::new().u8(0x21).u16(5);
    let frame = connect_header(5, 0x06)
        .props(empty())
        .str("c")
        .props(will_props)
        .str("w")
        .str("p")
        .frame(0x10);
    assert_malformed(v5(&frame), "receive maximum (0x21) is not allowed");
}

#[test]
fn single_valued_property_twice_is_a_protocol_error() {
    let twice = Body::new().u8(0x02).u32(1).u8(0x02).u32(2);
    assert_protocol_error(
        v5(&publish_with(twice)),
        "message expiry interval included more than once",
    );
    let twice = Body::new().u8(0x11).u32(1).u8(0x21).u16(3).u8(0x11).u32(1);
    assert_protocol_error(
        v5(&connect_with(twice)),
        "session expiry interval included more than once",
    );
}

#[test]
fn user_property_may_repeat_and_keeps_its_order() {
    let user = Body::new()
        .u8(0x26)
        .str("k")
        .str("1")
        .u8(0x26)
        .str("k")
        .str("2")
        .u8(0x26)
        .str("a")
        .str("3");
    let Ok(Packet::Publish(p)) = v5(&publish_with(user)) else {
        panic!()
    };
    let expected =
        [("k", "1"), ("k", "2"), ("a", "3")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(p.properties.user_properties, expected);
}

#[test]
fn subscription_identifier_may_repeat_in_publish_and_is_left_to_the_broker() {
    let ids = Body::new().u8(0x0B).vbi(1).u8(0x0B).vbi(268_435_455);
    let Ok(Packet::Publish(p)) = v5(&publish_with(ids)) else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 268_435_455]);
}

#[test]
fn subscription_identifier_twice_in_subscribe_is_a_protocol_error() {
    let ids = Body::new().u8(0x0B).vbi(1).u8(0x0B).vbi(2);
    let frame = Body::new().u16(1).props(ids).str("t").u8(0).frame(0x82);
    assert_protocol_error(
        v5(&frame),
        "subscription identifier included more than once",
    );
}

#[test]
fn subscription_identifier_0_is_a_protocol_error() {
    let zero = || Body::new().u8(0x0B).vbi(0);
    assert_protocol_error(v5(&publish_with(zero())), "subscription identifier of 0");
    let frame = Body::new().u16(1).props(zero()).str("t").u8(0).frame(0x82);
    assert_protocol_error(v5(&frame), "subscription identifier of 0");
}

#[test]
fn receive_maximum_0_is_a_protocol_error() {
    assert_protocol_error(
        v5(&connect_with(Body::new().u8(0x21).u16(0))),
        "receive maximum of 0",
    );
    let connack = Body::new()
        .u8(0)
        .u8(0)
        .props(Body::new().u8(0x21).u16(0))
        .frame(0x20);
    assert_protocol_error(v5(&connack), "receive maximum of 0");
}

#[test]
fn maximum_packet_size_0_is_a_protocol_error() {
    assert_protocol_error(
        v5(&connect_with(Body::new().u8(0x27).u32(0))),
        "maximum packet size of 0",
    );
    let connack = Body::new()
        .u8(0)
        .u8(0)
        .props(Body::new().u8(0x27).u32(0))
        .frame(0x20);
    assert_protocol_error(v5(&connack), "maximum packet size of 0");
}

#[test]
fn request_problem_information_other_than_0_or_1_is_a_protocol_error() {
    let p = Body::new().u8(0x17).u8(2);
    assert_protocol_error(v5(&connect_with(p)), "request problem information of 2");
}

#[test]
fn request_response_information_other_than_0_or_1_is_a_protocol_error() {
    let p = Body::new().u8(0x19).u8(7);
    assert_protocol_error(v5(&connect_with(p)), "request response information of 7");
}

#[test]
fn payload_format_indicator_other_than_0_or_1_is_a_protocol_error() {
    let p = || Body::new().u8(0x01).u8(2);
    assert_protocol_error(v5(&publish_with(p())), "payload format indicator of 2");
    let will = connect_header(5, 0x06)
        .props(empty())
        .str("c")
        .props(p())
        .str("w")
        .str("p")
        .frame(0x10);
    assert_protocol_error(v5(&will), "payload format indicator of 2");
}

#[test]
fn connack_availability_properties_other_than_0_or_1_are_protocol_errors() {
    for id in [0x24u8, 0x25, 0x28, 0x29, 0x2A] {
        let connack = Body::new()
            .u8(0)
            .u8(0)
            .props(Body::new().u8(id).u8(2))
            .frame(0x20);
        assert_protocol_error(v5(&connack), "of 2 (only 0 or 1)");
    }
}

#[test]
fn topic_alias_is_decoded_and_left_to_the_broker() {
    let Ok(Packet::Publish(p)) = v5(&publish_with(Body::new().u8(0x23).u16(0))) else {
        panic!()
    };
    assert_eq!(p.properties.topic_alias, Some(0));
}

#[test]
fn property_length_must_fit_in_the_packet() {
    let frame = Body::new().str("t").vbi(10).u8(0x02).frame(0x30);
    assert_malformed(v5(&frame), "properties runs past the end");
}

#[test]
fn property_value_must_fit_in_the_property_section() {
    // A 4-byte message expiry interval in a 3-byte section: not read on into the payload.
    let frame = Body::new()
        .str("t")
        .vbi(3)
        .u8(0x02)
        .u16(0)
        .raw(b"payload")
        .frame(0x30);
    assert_malformed(v5(&frame), "message expiry interval runs past the end");
}

#[test]
fn authentication_data_without_a_method_is_a_protocol_error() {
    let p = Body::new().u8(0x16).str("data");
    assert_protocol_error(
        v5(&connect_with(p)),
        "authentication data without an authentication method",
    );
}

// SUBSCRIBE and UNSUBSCRIBE.

#[test]
fn subscribe_needs_a_topic_filter_mqtt_3_8_3_2_and_3_1_1_mqtt_3_8_3_3() {
    assert_protocol_error(
        v5(&Body::new().u16(1).props(empty()).frame(0x82)),
        "no topic filter",
    );
    assert_protocol_error(v311(&Body::new().u16(1).frame(0x82)), "no topic filter");
}

#[test]
fn subscription_options_reserved_bits_are_malformed_mqtt_3_8_3_5() {
    for options in [0x40u8, 0x80, 0xC1] {
        let frame = Body::new()
            .u16(1)
            .props(empty())
            .str("t")
            .u8(options)
            .frame(0x82);
        assert_malformed(v5(&frame), "reserved subscription option bits");
    }
}

#[test]
fn retain_handling_3_is_a_protocol_error_3_8_3_1() {
    let frame = Body::new()
        .u16(1)
        .props(empty())
        .str("t")
        .u8(0x30)
        .frame(0x82);
    assert_protocol_error(v5(&frame), "retain handling 3");
}

#[test]
fn subscription_maximum_qos_3_is_a_protocol_error_3_8_3_1() {
    // 5.0 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3".
    let frame = Body::new()
        .u16(1)
        .props(empty())
        .str("t")
        .u8(0x03)
        .frame(0x82);
    assert_protocol_error(v5(&frame), "maximum QoS 3");
}

#[test]
fn v311_requested_qos_byte_upper_bits_and_qos_3_are_malformed_3_1_1_mqtt_3_8_3_4() {
    for options in [0x04u8, 0x80, 0x03, 0x2D] {
        let frame = Body::new().u16(1).str("t").u8(options).frame(0x82);
        assert_malformed(v311(&frame), "requested QoS byte");
    }
}

#[test]
fn subscription_options_are_decoded() {
    let frame = Body::new()
        .u16(7)
        .props(empty())
        .str("a/+")
        .u8(0x2D)
        .str("b")
        .u8(0x12)
        .frame(0x82);
    let Ok(Packet::Subscribe(s)) = v5(&frame) else {
        panic!()
    };
    let first = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::Never,
    };
    let second = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        retain_handling: RetainHandling::OnNewSubscribe,
        ..SubscriptionOptions::default()
    };
    assert_eq!(
        s.filters,
        vec![("a/+".to_string(), first), ("b".to_string(), second)]
    );
}

#[test]
fn unsubscribe_needs_a_topic_filter_mqtt_3_10_3_2() {
    assert_protocol_error(
        v5(&Body::new().u16(1).props(empty()).frame(0xA2)),
        "no topic filter",
    );
    assert_protocol_error(v311(&Body::new().u16(1).frame(0xA2)), "no topic filter");
}

#[test]
fn topic_syntax_is_left_to_the_topic_module() {
    let frame = Body::new()
        .u16(1)
        .str("a/#/b")
        .u8(0)
        .str("")
        .u8(1)
        .frame(0x82);
    let Ok(Packet::Subscribe(s)) = v311(&frame) else {
        panic!()
    };
    assert_eq!(s.filters.len(), 2);
    let Ok(Packet::Publish(p)) = v311(&Body::new().str("+/#").frame(0x30)) else {
        panic!()
    };
    assert_eq!(p.topic, "+/#");
}

// Bytes after what the packet type defines.

#[test]
fn pingreq_and_pingresp_with_a_body_are_malformed() {
    assert_malformed(v5(&[0xC0, 0x01, 0x00]), "1 bytes after the end");
    assert_malformed(v311(&[0xD0, 0x02, 0x00, 0x00]), "2 bytes after the end");
}

#[test]
fn v311_acknowledgements_of_more_than_2_bytes_are_malformed() {
    for first in [0x40, 0x50, 0x62, 0x70, 0xB0] {
        assert_malformed(
            v311(&Body::new().u16(1).u8(0).frame(first)),
            "1 bytes after the end",
        );
    }
}

#[test]
fn v311_disconnect_with_a_body_is_malformed() {
    assert_malformed(v311(&[0xE0, 0x01, 0x00]), "1 bytes after the end");
}

#[test]
fn v5_bytes_after_the_properties_are_malformed() {
    assert_malformed(
        v5(&Body::new().u16(1).u8(0).props(empty()).u8(0).frame(0x40)),
        "after the end",
    );
    assert_malformed(
        v5(&Body::new().u8(0).props(empty()).u8(0).frame(0xE0)),
        "after the end",
    );
    assert_malformed(
        v5(&Body::new().u8(0).u8(0).props(empty()).u8(0).frame(0x20)),
        "after the end",
    );
}

// CONNACK.

#[test]
fn connack_reserved_flags_must_be_0_mqtt_3_2_2_1() {
    assert_malformed(
        v311(&Body::new().u8(0x02).u8(0).frame(0x20)),
        "reserved connect acknowledge flags",
    );
}

#[test]
fn session_present_with_a_refusal_is_a_protocol_error_mqtt_3_2_2_6_and_3_1_1_mqtt_3_2_2_4() {
    assert_protocol_error(
        v5(&Body::new().u8(1).u8(0x87).props(empty()).frame(0x20)),
        "session present",
    );
    assert_protocol_error(
        v311(&Body::new().u8(1).u8(5).frame(0x20)),
        "session present",
    );
}

#[test]
fn v311_connack_return_codes_map_to_reason_codes_3_1_1_3_2_2_3() {
    let expected = [0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
    for (code, reason) in expected.into_iter().enumerate() {
        let Ok(Packet::ConnAck(c)) = v311(&Body::new().u8(0).u8(code as u8).frame(0x20)) else {
            panic!()
        };
        assert_eq!(c.reason, reason);
    }
    assert_malformed(
        v311(&Body::new().u8(0).u8(6).frame(0x20)),
        "reserved return code 6",
    );
}

#[test]
fn v5_connack_needs_its_property_length() {
    assert_malformed(
        v5(&Body::new().u8(0).u8(0).frame(0x20)),
        "property length runs past the end",
    );
}

// Reason codes.

#[test]
fn reason_code_not_defined_for_the_packet_is_malformed() {
    let cases = [
        Body::new().u8(0).u8(0x01).props(empty()).frame(0x20),
        Body::new().u16(1).u8(0x92).frame(0x40),
        Body::new().u16(1).u8(0x10).frame(0x62),
        Body::new().u16(1).props(empty()).u8(0x03).frame(0x90),
        Body::new().u16(1).props(empty()).u8(0x10).frame(0xB0),
        Body::new().u8(0x01).frame(0xE0),
        Body::new().u8(0x01).props(empty()).frame(0xF0),
    ];
    for frame in cases {
        assert_malformed(v5(&frame), "is not one this packet has");
    }
}

#[test]
fn v5_short_forms_are_accepted() {
    let ack = |reason| PubResp {
        packet_id: 1,
        reason,
        ..PubResp::default()
    };
    assert_eq!(
        v5(&Body::new().u16(1).frame(0x40)),
        Ok(Packet::PubAck(ack(0)))
    );
    assert_eq!(
        v5(&Body::new().u16(1).u8(0x10).frame(0x40)),
        Ok(Packet::PubAck(ack(0x10)))
    );
    assert_eq!(
        v5(&[0xE0, 0x00]),
        Ok(Packet::Disconnect(Disconnect::default()))
    );
    let d = Disconnect {
        reason: 0x04,
        ..Disconnect::default()
    };
    assert_eq!(v5(&[0xE0, 0x01, 0x04]), Ok(Packet::Disconnect(d)));
    assert_eq!(v5(&[0xF0, 0x00]), Ok(Packet::Auth(Auth::default())));
}

#[test]
fn auth_with_a_reason_code_but_no_property_length_is_malformed_3_15_2_1() {
    assert_malformed(v5(&[0xF0, 0x01, 0x18]), "property length runs past the end");
}

#[test]
fn suback_and_unsuback_need_a_reason_code() {
    assert_protocol_error(
        v5(&Body::new().u16(1).props(empty()).frame(0x90)),
        "no reason code",
    );
    assert_protocol_error(v311(&Body::new().u16(1).frame(0x90)), "no reason code");
    assert_protocol_error(
        v5(&Body::new().u16(1).props(empty()).frame(0xB0)),
        "no reason code",
    );
}

#[test]
fn v311_suback_return_codes_are_0_1_2_or_0x80_3_1_1_mqtt_3_9_3_2() {
    let Ok(Packet::SubAck(a)) = v311(&Body::new().u16(1).raw(&[0, 1, 2, 0x80]).frame(0x90)) else {
        panic!()
    };
    assert_eq!(a.reasons, vec![0, 1, 2, 0x80]);
    assert_malformed(
        v311(&Body::new().u16(1).u8(0x87).frame(0x90)),
        "return code 0x87",
    );
}

// Errors.

#[test]
fn errors_map_to_their_reason_codes() {
    let cases = [
        (DecodeError::malformed("x"), 0x81),
        (DecodeError::protocol("x"), 0x82),
        (
            DecodeError::TooLarge {
                packet: "PUBLISH",
                size: 2,
                max: 1,
            },
            0x95,
        ),
        (
            DecodeError::UnsupportedProtocol {
                name: "MQIsdp".into(),
                level: 3,
            },
            0x84,
        ),
    ];
    for (e, code) in cases {
        assert_eq!(e.reason_code(), code, "{e}");
    }
}

#[test]
fn error_messages_name_the_packet_and_what_was_wrong() {
    let e = v5(&Body::new().str("a\0").props(empty()).frame(0x30)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed PUBLISH: topic name contains U+0000"
    );
    let e = v5(&Body::new().u16(0).props(empty()).str("t").u8(0).frame(0x82)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "protocol error in SUBSCRIBE: packet identifier 0"
    );
    assert_eq!(
        DecodeError::protocol("first packet is not CONNECT").to_string(),
        "protocol error in packet: first packet is not CONNECT"
    );
}
