//! Codec tests: one per specification rule (`rules`), the encoder's forms and refusals
//! (`encoding`), streaming (`stream`), property-based round trips (`roundtrip`), bytes captured
//! from real clients and servers (`interop`), and the fuzz seed corpus (`corpus`).

mod corpus;
mod encoding;
mod interop;
mod roundtrip;
mod rules;
mod stream;

use bytes::BytesMut;

use super::*;

/// Builds packet bytes by hand, so tests can write what an encoder never would.
#[derive(Debug, Clone, Default)]
pub(super) struct Body(pub Vec<u8>);

impl Body {
    pub fn new() -> Body {
        Body::default()
    }
    pub fn u8(mut self, v: u8) -> Body {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Body {
        self.0.extend_from_slice(b);
        self
    }
    /// A two-byte length and `s`'s bytes (which need not be UTF-8).
    pub fn str(self, s: impl AsRef<[u8]>) -> Body {
        let s = s.as_ref();
        self.u16(s.len() as u16).raw(s)
    }
    pub fn vbi(mut self, mut v: u32) -> Body {
        loop {
            let b = (v % 128) as u8;
            v /= 128;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    /// A property section: its length, then `p`.
    pub fn props(self, p: Body) -> Body {
        let len = p.0.len() as u32;
        self.vbi(len).raw(&p.0)
    }
    /// The whole packet: `first`, the remaining length, this body.
    pub fn frame(&self, first: u8) -> Vec<u8> {
        let mut out = Body::new().u8(first).vbi(self.0.len() as u32);
        out.0.extend_from_slice(&self.0);
        out.0
    }
}

/// Variable header of a CONNECT up to the keep alive.
pub(super) fn connect_header(level: u8, flags: u8) -> Body {
    Body::new().str("MQTT").u8(level).u8(flags).u16(60)
}

/// A minimal valid CONNECT frame (clean start, client id "c").
pub(super) fn connect_frame(protocol: Protocol) -> Vec<u8> {
    match protocol {
        Protocol::V311 => connect_header(4, 0x02).str("c").frame(0x10),
        Protocol::V5 => connect_header(5, 0x02)
            .props(Body::new())
            .str("c")
            .frame(0x10),
    }
}

pub(super) fn v5(frame: &[u8]) -> Result<Packet, DecodeError> {
    decode_packet(Protocol::V5, frame)
}

pub(super) fn v311(frame: &[u8]) -> Result<Packet, DecodeError> {
    decode_packet(Protocol::V311, frame)
}

pub(super) fn encode_vec(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    match encode(packet, protocol, &mut out) {
        Ok(()) => out.to_vec(),
        Err(e) => panic!("encoding {packet:?} for {protocol:?}: {e}"),
    }
}

#[track_caller]
pub(super) fn assert_malformed(result: Result<Packet, DecodeError>, needle: &str) {
    assert_error(result, reason::MALFORMED_PACKET, needle);
}

#[track_caller]
pub(super) fn assert_protocol_error(result: Result<Packet, DecodeError>, needle: &str) {
    assert_error(result, reason::PROTOCOL_ERROR, needle);
}

/// The error has `code` and its message contains `needle` (what was wrong, for the log).
#[track_caller]
pub(super) fn assert_error(result: Result<Packet, DecodeError>, code: u8, needle: &str) {
    match result {
        Ok(p) => panic!("decoded {p:?}, expected an error with reason 0x{code:02X}"),
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.reason_code(), code, "{msg}");
            assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
        }
    }
}
