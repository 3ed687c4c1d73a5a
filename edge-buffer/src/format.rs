//! On-disk encoding of segments and record frames (see FORMAT.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"IBRGLOG\0";
/// Format version written into each segment header; bumped on incompatible changes.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Segment header: magic(8) version(2) flags(2) base_offset(8) created_ms(8) crc32c(4).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 32;
/// Frame header: body length(4) crc32c(4).
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Body prefix: offset(8) timestamp_ms(8); the payload follows.
pub(crate) const BODY_PREFIX_LEN: usize = 16;
/// Bytes a record of `payload_len` bytes occupies on disk.
pub(crate) const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + BODY_PREFIX_LEN + payload_len
}

pub(crate) fn encode_segment_header(
    base_offset: u64,
    created_ms: i64,
) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // h[10..12]: flags, none defined yet.
    h[12..20].copy_from_slice(&base_offset.to_le_bytes());
    h[20..28].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns its base offset when magic, version and CRC are right.
pub(crate) fn decode_segment_header(h: &[u8]) -> Option<u64> {
    if h.len() < SEGMENT_HEADER_LEN as usize || h[0..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().ok()?);
    if crc32c::crc32c(&h[0..28]) != crc {
        return None;
    }
    if u16::from_le_bytes(h[8..10].try_into().ok()?) != FORMAT_VERSION {
        return None;
    }
    Some(u64::from_le_bytes(h[12..20].try_into().ok()?))
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, offset: u64, timestamp_ms: i64, payload: &[u8]) {
    let start = buf.len();
    let body_len = (BODY_PREFIX_LEN + payload.len()) as u32;
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = frame_crc(&buf[start..start + 4], &buf[start + FRAME_HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC covers the length field too, so a corrupted length is caught like a corrupted body.
fn frame_crc(len_field: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_field), body)
}

/// What is found at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Valid {
        offset: u64,
        timestamp_ms: i64,
        payload: &'a [u8],
        len: usize,
    },
    /// The bytes end before the frame does (or before its header does).
    Incomplete {
        needed: usize,
    },
    Corrupt,
}

pub(crate) fn decode_frame(buf: &[u8], max_payload: u32) -> Frame<'_> {
    if buf.len() < FRAME_HEADER_LEN + BODY_PREFIX_LEN {
        return Frame::Incomplete {
            needed: FRAME_HEADER_LEN + BODY_PREFIX_LEN,
        };
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if body_len < BODY_PREFIX_LEN || body_len > BODY_PREFIX_LEN + max_payload as usize {
        return Frame::Corrupt;
    }
    let len = FRAME_HEADER_LEN + body_len;
    if buf.len() < len {
        return Frame::Incomplete { needed: len };
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if frame_crc(&buf[0..4], &buf[FRAME_HEADER_LEN..len]) != crc {
        return Frame::Corrupt;
    }
    let b = &buf[FRAME_HEADER_LEN..len];
    Frame::Valid {
        offset: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        timestamp_ms: i64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        payload: &b[BODY_PREFIX_LEN..],
        len,
    }
}

/// Cheap plausibility check of a frame header before paying for a CRC while resynchronising.
fn plausible_header(buf: &[u8], max_payload: u32, offsets: &std::ops::Range<u64>) -> bool {
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if body_len < BODY_PREFIX_LEN || body_len > BODY_PREFIX_LEN + max_payload as usize {
        return false;
    }
    let offset = u64::from_le_bytes([
        buf[8], buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15],
    ]);
    offsets.contains(&offset)
}

/// One step of a sequential scan through a segment.
#[derive(Debug)]
pub(crate) enum ScanItem {
    Record {
        offset: u64,
        timestamp_ms: i64,
        /// Position of the payload within the scanner's window, valid until the next call.
        payload: std::ops::Range<usize>,
    },
    /// Bytes `[at, resumed_at)` held no valid frame; scanning resumed at the next valid one.
    Corrupt { at: u64, resumed_at: u64 },
    /// Nothing valid from `at` up to the scan limit: a torn tail or trailing garbage.
    Garbage { at: u64 },
    /// The scan reached its limit exactly at a frame boundary.
    End,
}

/// Reads frames sequentially from a segment file through a bounded window.
///
/// The scanner never reads past `limit`, so a reader of the active segment only sees bytes
/// that the writer has published.
pub(crate) struct SegmentScanner {
    file: File,
    window: Vec<u8>,
    window_start: u64,
    pos: u64,
    limit: u64,
    /// Lowest offset the next record may have; frames below it are stale or misplaced.
    min_offset: u64,
    /// Exclusive upper bound for offsets in this segment, when known.
    max_offset: u64,
    max_payload: u32,
}

/// Bytes read from the file at a time; the window grows beyond it only for a larger frame.
const WINDOW: usize = 256 * 1024;

impl SegmentScanner {
    pub(crate) fn new(
        file: File,
        start: u64,
        limit: u64,
        min_offset: u64,
        max_payload: u32,
    ) -> Self {
        SegmentScanner {
            file,
            window: Vec::new(),
            window_start: start,
            pos: start,
            limit,
            min_offset,
            max_offset: u64::MAX,
            max_payload,
        }
    }

    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    pub(crate) fn set_max_offset(&mut self, max_offset: u64) {
        self.max_offset = max_offset;
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn window(&self) -> &[u8] {
        &self.window
    }

    /// Makes `[at, at + need)` available in the window (or as much of it as lies below the limit).
    fn fill(&mut self, at: u64, need: usize) -> io::Result<()> {
        let end = self.window_start + self.window.len() as u64;
        if at >= self.window_start && at + need as u64 <= end {
            return Ok(());
        }
        let want = need
            .max(WINDOW)
            .min((self.limit.saturating_sub(at)) as usize);
        self.window.clear();
        self.window.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.file.read_at(&mut self.window[got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.window.truncate(got);
        if self.window.capacity() > 4 * WINDOW && need <= WINDOW {
            self.window.shrink_to(WINDOW);
        }
        self.window_start = at;
        Ok(())
    }

    fn slice_at(&self, at: u64) -> &[u8] {
        let from = (at - self.window_start) as usize;
        let upto = ((self.limit - self.window_start) as usize).min(self.window.len());
        &self.window[from.min(upto)..upto]
    }

    pub(crate) fn next_item(&mut self) -> io::Result<ScanItem> {
        if self.pos >= self.limit {
            return Ok(ScanItem::End);
        }
        let mut need = FRAME_HEADER_LEN + BODY_PREFIX_LEN;
        loop {
            self.fill(self.pos, need)?;
            let offsets = self.min_offset..self.max_offset;
            match decode_frame(self.slice_at(self.pos), self.max_payload) {
                Frame::Valid {
                    offset,
                    timestamp_ms,
                    payload,
                    len,
                } if offsets.contains(&offset) => {
                    let start = payload.as_ptr() as usize - self.window.as_ptr() as usize;
                    let range = start..start + payload.len();
                    self.pos += len as u64;
                    self.min_offset = offset + 1;
                    return Ok(ScanItem::Record {
                        offset,
                        timestamp_ms,
                        payload: range,
                    });
                }
                Frame::Incomplete { needed }
                    if self.pos + needed as u64 <= self.limit && needed > need =>
                {
                    need = needed;
                }
                Frame::Incomplete { .. } | Frame::Valid { .. } | Frame::Corrupt => {
                    return self.resync();
                }
            }
        }
    }

    /// Searches forward for the next valid frame after a bad one at `self.pos`.
    fn resync(&mut self) -> io::Result<ScanItem> {
        let at = self.pos;
        let offsets = self.min_offset..self.max_offset;
        let probe = FRAME_HEADER_LEN + BODY_PREFIX_LEN;
        let mut p = at + 1;
        while p + probe as u64 <= self.limit {
            self.fill(p, probe)?;
            if plausible_header(self.slice_at(p), self.max_payload, &offsets) {
                let body_len =
                    u32::from_le_bytes(self.slice_at(p)[0..4].try_into().unwrap_or([0; 4]))
                        as usize;
                let len = FRAME_HEADER_LEN + body_len;
                if p + len as u64 <= self.limit {
                    self.fill(p, len)?;
                    if let Frame::Valid { offset, .. } =
                        decode_frame(self.slice_at(p), self.max_payload)
                        && offsets.contains(&offset)
                    {
                        self.pos = p;
                        return Ok(ScanItem::Corrupt { at, resumed_at: p });
                    }
                }
            }
            p += 1;
        }
        self.pos = self.limit;
        Ok(ScanItem::Garbage { at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_bit_flips_are_caught() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, -7, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        assert_eq!(
            decode_frame(&buf, 1024),
            Frame::Valid {
                offset: 42,
                timestamp_ms: -7,
                payload: b"hello",
                len: buf.len()
            }
        );
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(
                    decode_frame(&bad, 1024),
                    Frame::Valid {
                        offset: 42,
                        payload: b"hello",
                        ..
                    }
                ),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn segment_header_round_trip() {
        let h = encode_segment_header(1234, 99);
        assert_eq!(decode_segment_header(&h), Some(1234));
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(decode_segment_header(&bad), None);
    }
}
