//! Bounds-checked reading of the MQTT data types (MQTT 5.0 section 1.5) from one packet's frame.
//! Binary fields are `Bytes` slices of the frame: no copy.

use bytes::Bytes;

use super::error::{DecodeError, malformed};

/// Result of reading a variable byte integer from bytes that may not all have arrived.
pub(super) enum Vbi {
    /// Value and the number of bytes it took.
    Done(u32, usize),
    /// The bytes end inside it.
    Incomplete,
    /// A fifth byte would be needed (MQTT 5.0 1.5.5: at most four).
    TooLong,
}

/// Non-minimal encodings (0x80 0x00 for 0) are accepted: 1.5.5 asks senders for the minimum
/// but calls nothing else malformed.
pub(super) fn read_vbi(buf: &[u8]) -> Vbi {
    let mut value = 0u32;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Vbi::Incomplete;
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Vbi::Done(value, i + 1);
        }
    }
    Vbi::TooLong
}

/// Number of bytes `value` takes as a variable byte integer.
pub(super) fn vbi_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor over `frame[pos..end]`; `pos <= end <= frame.len()` always holds.
pub(super) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// Reads `frame[start..]`.
    pub(super) fn new(frame: &'a Bytes, start: usize) -> Reader<'a> {
        let end = frame.len();
        Reader {
            frame,
            pos: start.min(end),
            end,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let frame: &'a [u8] = self.frame;
        let bytes = self
            .pos
            .checked_add(n)
            .filter(|&to| to <= self.end)
            .and_then(|to| frame.get(self.pos..to))
            .ok_or_else(|| malformed(format!("{what} runs past the end of the packet")))?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        <[u8; N]>::try_from(bytes)
            .map_err(|_| malformed(format!("{what} runs past the end of the packet")))
    }

    pub(super) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(super) fn vbi(&mut self, what: &str) -> Result<u32, DecodeError> {
        let frame: &'a [u8] = self.frame;
        let rest = frame.get(self.pos..self.end).unwrap_or_default();
        match read_vbi(rest) {
            Vbi::Done(v, n) => {
                self.pos += n;
                Ok(v)
            }
            Vbi::Incomplete => Err(malformed(format!("{what} runs past the end of the packet"))),
            Vbi::TooLong => Err(malformed(format!(
                "{what} is a variable byte integer of more than 4 bytes"
            ))),
        }
    }

    /// A UTF-8 encoded string: well-formed UTF-8 [MQTT-1.5.4-1] without U+0000 [MQTT-1.5.4-2].
    pub(super) fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let len = self.u16(what)?;
        let raw = self.take(usize::from(len), what)?;
        let s = std::str::from_utf8(raw)
            .map_err(|_| malformed(format!("{what} is not valid UTF-8")))?;
        if raw.contains(&0) {
            return Err(malformed(format!("{what} contains U+0000")));
        }
        Ok(s.to_owned())
    }

    /// Binary data: a two-byte length, then that many bytes, sliced from the frame.
    pub(super) fn binary(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(what)?);
        let start = self.pos;
        self.take(len, what)?;
        Ok(self.frame.slice(start..start + len))
    }

    /// Everything left, sliced from the frame.
    pub(super) fn rest(&mut self) -> Bytes {
        let out = self.frame.slice(self.pos..self.end);
        self.pos = self.end;
        out
    }

    /// The next `len` bytes as their own reader (a property section); this one skips them.
    pub(super) fn sub(&mut self, len: usize, what: &str) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.take(len, what)?;
        Ok(Reader {
            frame: self.frame,
            pos: start,
            end: self.pos,
        })
    }

    /// Refuses bytes after what the packet type defines.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(malformed(format!("{n} bytes after the end of the packet"))),
        }
    }
}
