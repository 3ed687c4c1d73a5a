//! The MQTT codec on any bytes from the network, from either side. Never panics; a stream cut
//! at any points decodes to what it decodes to at once, consuming nothing until a packet is
//! whole; every decoded packet re-encodes, no larger than it came, to bytes that decode to it
//! again and re-encode to the same bytes.
//!
//! Input: a mode byte (bit 0: a client's decoder, else a server's; bit 1: the client's protocol
//! is 5, else 3.1.1; bits 2-4: the maximum packet size from `MAX_SIZES`), a split byte (0: the
//! stream at once; n: chunks of 1 to n bytes), then the stream. Seeds are written by the
//! ignored test `codec::tests::corpus::write_fuzz_seed_corpus`.
#![no_main]

use bytes::BytesMut;
use ironbridge_broker::codec::{
    DecodeError, Decoder, Packet, Protocol, decode_packet, encode, encoded_len,
};
use libfuzzer_sys::fuzz_target;

const MAX_SIZES: [usize; 8] = [usize::MAX, 16, 64, 128, 512, 4096, 65_536, 268_435_460];

/// Each decoded packet with the protocol it was decoded in and the bytes it took; how it ended.
type Outcome = (Vec<(Protocol, Packet, usize)>, Result<usize, DecodeError>);

fn run(mut decoder: Decoder, chunks: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(p)) => {
                    let protocol = match &p {
                        Packet::Connect(c) => c.protocol,
                        _ => decoder.protocol().expect("a packet after the protocol is known"),
                    };
                    assert!(buf.len() < before, "a packet from no bytes");
                    packets.push((protocol, p, before - buf.len()));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "consumed without a whole packet");
                    break;
                }
                Err(e) => return (packets, Err(e)),
            }
        }
    }
    (packets, Ok(buf.len()))
}

/// Cuts `stream` in chunks of 1 to `max` bytes (a small LCG picks each); `max` 0: one chunk.
fn chunks(stream: &[u8], max: u8) -> Vec<&[u8]> {
    if max == 0 {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut x = u32::from(max);
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (x >> 16) as usize % usize::from(max)).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, split, stream @ ..] = data else {
        return;
    };
    let max = MAX_SIZES[usize::from(mode >> 2) & 7];
    let decoder = || {
        if mode & 1 == 0 {
            Decoder::new(max)
        } else {
            let protocol = if mode & 2 == 0 { Protocol::V311 } else { Protocol::V5 };
            Decoder::client(protocol, max)
        }
    };

    let whole = run(decoder(), &[stream]);
    let split = run(decoder(), &chunks(stream, *split));
    assert_eq!(whole, split, "the split stream decoded differently");

    for (protocol, packet, size) in &whole.0 {
        let mut once = BytesMut::new();
        encode(packet, *protocol, &mut once).expect("a decoded packet re-encodes");
        assert_eq!(encoded_len(packet, *protocol), Ok(once.len()));
        assert!(once.len() <= *size, "re-encoded larger than received");
        let again = decode_packet(*protocol, &once).expect("its encoding decodes");
        assert_eq!(&again, packet, "decode(encode(p)) != p");
        let mut twice = BytesMut::new();
        encode(&again, *protocol, &mut twice).expect("re-encodes");
        assert_eq!(once, twice, "encoding is not a fixed point");
    }
});
