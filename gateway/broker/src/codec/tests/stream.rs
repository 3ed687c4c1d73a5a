//! The decoder on a byte stream: partial packets, several packets per read, size limits, and
//! zero-copy payloads.

use bytes::Bytes;

use super::*;

/// A client's packets after its CONNECT, one of each type it may send.
pub(super) fn client_packets(protocol: Protocol) -> Vec<Packet> {
    let mut packets = vec![
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "plant/line1/temp".into(),
            packet_id: Some(1),
            payload: Bytes::from_static(b"21.5"),
            ..Publish::default()
        }),
        Packet::PubAck(PubResp {
            packet_id: 2,
            ..PubResp::default()
        }),
        Packet::PubRec(PubResp {
            packet_id: 3,
            ..PubResp::default()
        }),
        Packet::PubRel(PubResp {
            packet_id: 3,
            ..PubResp::default()
        }),
        Packet::PubComp(PubResp {
            packet_id: 4,
            ..PubResp::default()
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            filters: vec![("a/#".into(), SubscriptionOptions::default())],
            ..Subscribe::default()
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            filters: vec!["a/#".into()],
            ..Unsubscribe::default()
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::default()),
    ];
    if protocol == Protocol::V5 {
        packets.insert(8, Packet::Auth(Auth::default()));
    }
    packets
}

fn connect_packet(protocol: Protocol) -> Packet {
    Packet::Connect(Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: "split".into(),
        properties: ConnectProperties {
            request_problem_information: true,
            ..ConnectProperties::default()
        },
        ..Connect::default()
    })
}

#[test]
fn one_byte_at_a_time_gives_the_same_packets_and_consumes_nothing_early() {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut expected = vec![connect_packet(protocol)];
        expected.extend(client_packets(protocol));
        let bytes: Vec<u8> = expected
            .iter()
            .flat_map(|p| encode_vec(p, protocol))
            .collect();
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in &bytes {
            buf.extend_from_slice(&[b]);
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => assert_eq!(buf.len(), before, "consumed without a whole packet"),
                Err(e) => panic!("{protocol:?}: {e}"),
            }
        }
        assert!(buf.is_empty());
        assert_eq!(out, expected);
    }
}

#[test]
fn several_packets_in_one_read_come_out_one_per_call() {
    let mut bytes = encode_vec(&connect_packet(Protocol::V5), Protocol::V5);
    bytes.extend(encode_vec(&Packet::PingReq, Protocol::V5));
    let publish = Body::new()
        .str("t")
        .props(Body::new())
        .raw(b"x")
        .frame(0x30);
    bytes.extend(&publish);
    // The first 3 bytes of another PUBLISH.
    bytes.extend(&publish[..3]);
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingReq)));
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Publish(_)))));
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], &publish[..3]);
    buf.extend_from_slice(&publish[3..]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Publish(_)))));
    assert_eq!(d.decode(&mut BytesMut::new()), Ok(None));
}

#[test]
fn oversized_packet_is_refused_from_its_fixed_header() {
    let mut d = Decoder::client(Protocol::V5, 100);
    // A PUBLISH announcing 99 bytes after a 2-byte fixed header: 101 in all; only the header
    // has arrived.
    let mut buf = BytesMut::from(&[0x30, 99][..]);
    let expected = DecodeError::TooLarge {
        packet: "PUBLISH",
        size: 101,
        max: 100,
    };
    assert_eq!(d.decode(&mut buf), Err(expected.clone()));
    assert_eq!(expected.reason_code(), reason::PACKET_TOO_LARGE);
    // A four-byte length (128 MiB) is refused as early.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x40][..]);
    assert!(
        matches!(d.decode(&mut buf), Err(DecodeError::TooLarge { size, .. }) if size == (1 << 27) + 5)
    );
}

#[test]
fn maximum_packet_size_counts_the_whole_packet() {
    // Exactly 100 bytes in all: accepted.
    let frame = Body::new()
        .str("t")
        .props(Body::new())
        .raw(&[0; 94])
        .frame(0x30);
    assert_eq!(frame.len(), 100);
    let mut d = Decoder::client(Protocol::V5, 100);
    assert!(matches!(
        d.decode(&mut BytesMut::from(&frame[..])),
        Ok(Some(_))
    ));
    d.set_max_packet_size(99);
    assert_eq!(d.max_packet_size(), 99);
    let result = d.decode(&mut BytesMut::from(&frame[..]));
    assert!(matches!(
        result,
        Err(DecodeError::TooLarge {
            size: 100,
            max: 99,
            ..
        })
    ));
}

#[test]
fn payload_is_a_slice_of_the_read_buffer() {
    let frame = Body::new()
        .str("t")
        .u16(9)
        .props(Body::new())
        .raw(&[7; 100])
        .frame(0x32);
    let mut buf = BytesMut::from(&frame[..]);
    let start = buf.as_ptr() as usize;
    let range = start..start + buf.len();
    let mut d = Decoder::client(Protocol::V5, 1024);
    let Ok(Some(Packet::Publish(p))) = d.decode(&mut buf) else {
        panic!()
    };
    assert_eq!(p.payload.len(), 100);
    assert!(
        range.contains(&(p.payload.as_ptr() as usize)),
        "payload was copied"
    );
}

#[test]
fn empty_buffer_is_not_a_packet() {
    assert_eq!(Decoder::new(10).decode(&mut BytesMut::new()), Ok(None));
    assert_malformed(decode_packet(Protocol::V5, &[]), "empty frame");
    assert_malformed(
        decode_packet(Protocol::V5, &[0xC0]),
        "ends inside the remaining length",
    );
    assert_malformed(
        decode_packet(Protocol::V5, &[0xC0, 0x01]),
        "differs from the remaining length",
    );
}
