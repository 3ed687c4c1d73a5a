//! Bytes captured from real clients and a real server: mosquitto 2.0.11 (`mosquitto_pub`,
//! `mosquitto_sub`, the broker) and paho-mqtt 2.1.0 (Python), through a logging TCP proxy.
//! Each stream is one connection, client to server (`C>S`) or server to client (`S>C`).

use bytes::Bytes;

use super::*;

// Captured streams (hex, one packet per line), also seeds of the fuzz target (`corpus`).
const PUB_V311_QOS0_C2S: &str = "\
    100c00044d5154540402003c0000 \
    300b00047465737468656c6c6f \
    e000";
const PUB_V311_QOS1_C2S: &str = "\
    103600044d51545404ee003c00066c696e652d33000a7374617475732f70756200076f66666c696e65000570\
    6c616e740006736563726574 \
    3214000c73656e736f72732f74656d70000132312e35 \
    e000";
const PUB_V311_QOS1_S2C: &str = "\
    20020000 \
    40020001";
const PUB_V5_C2S: &str = "\
    105d00044d5154540506001e1f210014270001000022000a2600047369746500066265726c696e1100000e10\
    0006656467652d3712180000000503000a746578742f706c61696e000d7374617475732f656467652d370007\
    6f66666c696e65 \
    35590010706c616e742f6c696e65312f74656d7000013a020000003c0300106170706c69636174696f6e2f6a\
    736f6e260004756e697400014308000c7265706c792f656467652d370900043061306201017b2274223a3231\
    2e357d \
    62020001 \
    e000";
const PUB_V5_S2C: &str = "\
    200900000622000a210014 \
    50020001 \
    70020001";
const SUB_V5_S2C: &str = "\
    90050001000101 \
    335b0010706c616e742f6c696e65312f74656d7000013c0b070300106170706c69636174696f6e2f6a736f6e\
    260004756e697400014308000c7265706c792f656467652d3709000430613062010102000000347b2274223a\
    32312e357d";
const SUB_V311_C2S: &str = "\
    100c00044d5154540402003c0000 \
    820c00010007706c616e742f2302 \
    50020001 \
    70020001 \
    e000";
const SUB_V311_S2C: &str = "\
    20020000 \
    9003000102 \
    351e0010706c616e742f6c696e65312f74656d7000017b2274223a32312e357d \
    62020001";
const UNSUB_V5_C2S: &str = "\
    101a00044d5154540500003c0811000002582100140005686d692d31 \
    82090001000003782f7900 \
    a20d0002000008616c61726d732f23 \
    e000";
const UNSUB_V5_S2C: &str = "\
    200901000622000a210014 \
    900400010000 \
    b00400020000";
const UNSUB_V311_C2S: &str = "\
    101100044d5154540400003c0005686d692d32 \
    820800010003782f7900 \
    a20c00020008616c61726d732f23 \
    e000";
const UNSUB_V311_S2C: &str = "\
    20020000 \
    9003000100 \
    b0020002";
const PAHO_V5_C2S: &str = "\
    101600044d5154540502002d0000097061686f2d6f707473 \
    821a000100000c706c616e742f2b2f74656d701d0005636d642f2322 \
    40020001 \
    e00d040b11000000001f0003627965";

/// (name, fuzz mode byte: 0 a server's decoder, 1/3 a 3.1.1/5 client's, stream).
pub(super) const CAPTURED: &[(&str, u8, &str)] = &[
    ("pub-v311-qos0-c2s", 0x00, PUB_V311_QOS0_C2S),
    ("pub-v311-qos1-c2s", 0x00, PUB_V311_QOS1_C2S),
    ("pub-v311-qos1-s2c", 0x01, PUB_V311_QOS1_S2C),
    ("pub-v5-c2s", 0x00, PUB_V5_C2S),
    ("pub-v5-s2c", 0x03, PUB_V5_S2C),
    ("sub-v5-s2c", 0x03, SUB_V5_S2C),
    ("sub-v311-c2s", 0x00, SUB_V311_C2S),
    ("sub-v311-s2c", 0x01, SUB_V311_S2C),
    ("unsub-v5-c2s", 0x00, UNSUB_V5_C2S),
    ("unsub-v5-s2c", 0x03, UNSUB_V5_S2C),
    ("unsub-v311-c2s", 0x00, UNSUB_V311_C2S),
    ("unsub-v311-s2c", 0x01, UNSUB_V311_S2C),
    ("paho-v5-c2s", 0x00, PAHO_V5_C2S),
];

pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn user(k: &str, v: &str) -> UserProperty {
    (k.to_string(), v.to_string())
}

/// Decodes the whole stream (one byte at a time, as a slow network would deliver it) and checks
/// that every packet re-encodes to bytes that decode to it again.
fn decode_stream(mut decoder: Decoder, bytes: &str) -> Vec<Packet> {
    let bytes = hex(bytes);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in bytes {
        buf.extend_from_slice(&[b]);
        if let Some(p) = decoder.decode(&mut buf).unwrap() {
            out.push(p);
        }
    }
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    let protocol = decoder.protocol().unwrap();
    for p in &out {
        assert_eq!(
            decode_packet(protocol, &encode_vec(p, protocol)).as_ref(),
            Ok(p)
        );
    }
    out
}

fn from_client(bytes: &str) -> Vec<Packet> {
    decode_stream(Decoder::new(1 << 16), bytes)
}

fn to_client(protocol: Protocol, bytes: &str) -> Vec<Packet> {
    decode_stream(Decoder::client(protocol, 1 << 16), bytes)
}

fn ack(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..PubResp::default()
    }
}

fn v311_connect(client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol: Protocol::V311,
        clean_start,
        keep_alive: 60,
        client_id: client_id.into(),
        properties: ConnectProperties {
            request_problem_information: true,
            ..ConnectProperties::default()
        },
        ..Connect::default()
    }
}

/// `mosquitto_pub -V mqttv311 -t test -m hello`: no client id, so an empty one.
#[test]
fn mosquitto_pub_v311_qos0() {
    let c2s = PUB_V311_QOS0_C2S;
    let expected = vec![
        Packet::Connect(v311_connect("", true)),
        Packet::Publish(Publish {
            topic: "test".into(),
            payload: Bytes::from_static(b"hello"),
            ..Publish::default()
        }),
        Packet::Disconnect(Disconnect::default()),
    ];
    assert_eq!(from_client(c2s), expected);
    assert_eq!(
        to_client(Protocol::V311, "20020000"),
        vec![Packet::ConnAck(ConnAck::default())]
    );
    // And the encoder writes what mosquitto writes.
    let ours: Vec<u8> = expected
        .iter()
        .flat_map(|p| encode_vec(p, Protocol::V311))
        .collect();
    assert_eq!(ours, hex(c2s));
}

/// `mosquitto_pub -V mqttv311 -t sensors/temp -m 21.5 -q 1 -u plant -P secret
/// --will-topic status/pub --will-payload offline --will-qos 1 --will-retain -i line-3`
#[test]
fn mosquitto_pub_v311_credentials_will_and_qos1() {
    let c2s = PUB_V311_QOS1_C2S;
    let connect = Connect {
        username: Some("plant".into()),
        password: Some(Bytes::from_static(b"secret")),
        will: Some(Will {
            topic: "status/pub".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        ..v311_connect("line-3", true)
    };
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/temp".into(),
        packet_id: Some(1),
        payload: Bytes::from_static(b"21.5"),
        ..Publish::default()
    };
    let expected = vec![
        Packet::Connect(connect),
        Packet::Publish(publish),
        Packet::Disconnect(Disconnect::default()),
    ];
    assert_eq!(from_client(c2s), expected);
    let ours: Vec<u8> = expected
        .iter()
        .flat_map(|p| encode_vec(p, Protocol::V311))
        .collect();
    assert_eq!(ours, hex(c2s));
    let s2c = to_client(Protocol::V311, PUB_V311_QOS1_S2C);
    assert_eq!(
        s2c,
        vec![Packet::ConnAck(ConnAck::default()), Packet::PubAck(ack(1))]
    );
}

/// `mosquitto_pub -V mqttv5 -t plant/line1/temp -m '{"t":21.5}' -q 2 -r -i edge-7 -k 30 -x 3600
/// -D connect receive-maximum 20 -D connect maximum-packet-size 65536
/// -D connect topic-alias-maximum 10 -D connect user-property site berlin
/// --will-topic status/edge-7 --will-payload offline -D will will-delay-interval 5
/// -D will content-type text/plain -D publish message-expiry-interval 60
/// -D publish content-type application/json -D publish user-property unit C
/// -D publish response-topic reply/edge-7 -D publish correlation-data 0a0b
/// -D publish payload-format-indicator 1`
#[test]
fn mosquitto_pub_v5_connect_will_and_publish_properties() {
    let c2s = PUB_V5_C2S;
    let connect = Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "edge-7".into(),
        will: Some(Will {
            topic: "status/edge-7".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: 5,
                content_type: Some("text/plain".into()),
                ..WillProperties::default()
            },
        }),
        properties: ConnectProperties {
            session_expiry_interval: 3600,
            receive_maximum: Some(20),
            maximum_packet_size: Some(65536),
            topic_alias_maximum: 10,
            request_problem_information: true,
            user_properties: vec![user("site", "berlin")],
            ..ConnectProperties::default()
        },
        ..Connect::default()
    };
    let publish_properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        response_topic: Some("reply/edge-7".into()),
        // mosquitto_pub sends the argument's text, not the bytes it spells.
        correlation_data: Some(Bytes::from_static(b"0a0b")),
        user_properties: vec![user("unit", "C")],
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "plant/line1/temp".into(),
        packet_id: Some(1),
        properties: publish_properties,
        payload: Bytes::from_static(br#"{"t":21.5}"#),
        ..Publish::default()
    };
    let expected = vec![
        Packet::Connect(connect),
        Packet::Publish(publish),
        Packet::PubRel(ack(1)),
        Packet::Disconnect(Disconnect::default()),
    ];
    assert_eq!(from_client(c2s), expected);

    // The broker's CONNACK (topic alias maximum, receive maximum) and short-form PUBREC/PUBCOMP.
    let connack = ConnAck {
        properties: ConnAckProperties {
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            ..ConnAckProperties::default()
        },
        ..ConnAck::default()
    };
    let s2c = to_client(Protocol::V5, PUB_V5_S2C);
    let expected = vec![
        Packet::ConnAck(connack),
        Packet::PubRec(ack(1)),
        Packet::PubComp(ack(1)),
    ];
    assert_eq!(s2c, expected);
}

/// `mosquitto_sub -V mqttv5 -t 'plant/+/temp' -t 'alarms/#' -q 1 -i hmi-1 -c -x 600
/// -D subscribe subscription-identifier 7 -D subscribe user-property client hmi -C 1`,
/// receiving the retained message above with its subscription identifier.
#[test]
fn mosquitto_sub_v5_subscription_identifier() {
    let subscribe = "822d0001100b07260006636c69656e740003686d69000c706c616e742f2b2f74656d7001\
                     0008616c61726d732f2301";
    let mut d = Decoder::new(1 << 16);
    d.decode(&mut BytesMut::from(&connect_frame(Protocol::V5)[..]))
        .unwrap();
    let mut buf = BytesMut::from(&hex(subscribe)[..]);
    let qos1 = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    let expected = Subscribe {
        packet_id: 1,
        subscription_identifier: Some(7),
        user_properties: vec![user("client", "hmi")],
        filters: vec![("plant/+/temp".into(), qos1), ("alarms/#".into(), qos1)],
    };
    assert_eq!(d.decode(&mut buf), Ok(Some(Packet::Subscribe(expected))));

    let s2c = SUB_V5_S2C;
    let suback = SubAck {
        packet_id: 1,
        reasons: vec![1, 1],
        ..SubAck::default()
    };
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "plant/line1/temp".into(),
        packet_id: Some(1),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            // What was left of the 60 s.
            message_expiry_interval: Some(52),
            response_topic: Some("reply/edge-7".into()),
            correlation_data: Some(Bytes::from_static(b"0a0b")),
            user_properties: vec![user("unit", "C")],
            subscription_identifiers: vec![7],
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        },
        payload: Bytes::from_static(br#"{"t":21.5}"#),
        ..Publish::default()
    };
    assert_eq!(
        to_client(Protocol::V5, s2c),
        vec![Packet::SubAck(suback), Packet::Publish(publish)]
    );
}

/// `mosquitto_sub -V mqttv311 -t 'plant/#' -q 2 -C 1`: the QoS 2 flow from both sides.
#[test]
fn mosquitto_sub_v311_qos2_flow() {
    let c2s = SUB_V311_C2S;
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![(
            "plant/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..SubscriptionOptions::default()
            },
        )],
        ..Subscribe::default()
    };
    let expected = vec![
        Packet::Connect(v311_connect("", true)),
        Packet::Subscribe(subscribe),
        Packet::PubRec(ack(1)),
        Packet::PubComp(ack(1)),
        Packet::Disconnect(Disconnect::default()),
    ];
    assert_eq!(from_client(c2s), expected);
    let ours: Vec<u8> = expected
        .iter()
        .flat_map(|p| encode_vec(p, Protocol::V311))
        .collect();
    assert_eq!(ours, hex(c2s));

    let s2c = SUB_V311_S2C;
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "plant/line1/temp".into(),
        packet_id: Some(1),
        payload: Bytes::from_static(br#"{"t":21.5}"#),
        ..Publish::default()
    };
    let suback = SubAck {
        packet_id: 1,
        reasons: vec![2],
        ..SubAck::default()
    };
    let expected = vec![
        Packet::ConnAck(ConnAck::default()),
        Packet::SubAck(suback),
        Packet::Publish(publish),
        Packet::PubRel(ack(1)),
    ];
    assert_eq!(to_client(Protocol::V311, s2c), expected);
}

/// `mosquitto_sub -V mqttv5 -i hmi-1 -c -x 600 -U 'alarms/#' -t x/y -E` on the session of the
/// test above, then the same in 3.1.1 as `hmi-2`.
#[test]
fn mosquitto_sub_unsubscribe_v5_and_v311() {
    let c2s = UNSUB_V5_C2S;
    let packets = from_client(c2s);
    let Packet::Connect(c) = &packets[0] else {
        panic!()
    };
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, 600);
    assert_eq!(c.properties.receive_maximum, Some(20));
    let unsubscribe = Unsubscribe {
        packet_id: 2,
        user_properties: vec![],
        filters: vec!["alarms/#".into()],
    };
    assert_eq!(packets[2], Packet::Unsubscribe(unsubscribe));

    let s2c = to_client(Protocol::V5, UNSUB_V5_S2C);
    let Packet::ConnAck(connack) = &s2c[0] else {
        panic!()
    };
    assert!(connack.session_present);
    let unsuback = UnsubAck {
        packet_id: 2,
        reasons: vec![reason::SUCCESS],
        ..UnsubAck::default()
    };
    assert_eq!(s2c[2], Packet::UnsubAck(unsuback));

    let c2s = UNSUB_V311_C2S;
    assert_eq!(
        from_client(c2s)[0],
        Packet::Connect(v311_connect("hmi-2", false))
    );
    let s2c = to_client(Protocol::V311, UNSUB_V311_S2C);
    assert_eq!(
        s2c[2],
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            ..UnsubAck::default()
        })
    );
}

/// paho-mqtt 2.1.0: subscription options mosquitto_sub cannot set (no local, retain as
/// published, retain handling), then DISCONNECT "with will message" and properties.
#[test]
fn paho_v5_subscription_options_and_disconnect_with_will() {
    let c2s = PAHO_V5_C2S;
    let packets = from_client(c2s);
    let options = vec![
        (
            "plant/+/temp".to_string(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::OnNewSubscribe,
            },
        ),
        (
            "cmd/#".to_string(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                retain_handling: RetainHandling::Never,
                ..SubscriptionOptions::default()
            },
        ),
    ];
    let Packet::Subscribe(s) = &packets[1] else {
        panic!()
    };
    assert_eq!(s.filters, options);
    let disconnect = Disconnect {
        reason: reason::DISCONNECT_WITH_WILL,
        session_expiry_interval: Some(0),
        reason_string: Some("bye".into()),
        ..Disconnect::default()
    };
    assert_eq!(packets[3], Packet::Disconnect(disconnect));
}
