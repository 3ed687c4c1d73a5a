//! Sequential readers that follow the log as it grows.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::watch;

use crate::format::{SEGMENT_HEADER_LEN, ScanItem, SegmentScanner};
use crate::log::{Shared, Visible, segment_path};
use crate::{Error, StoredRecord};

/// Reads records in offset order from a position, then waits for new appends without polling.
///
/// A reader only sees acknowledged records. Corrupt records are skipped and counted in the
/// log's [`Stats::corrupt_records`](crate::Stats::corrupt_records); records dropped by the full
/// policy before the reader reached them are skipped and counted in [`Reader::missed`].
pub struct Reader {
    shared: Arc<Shared>,
    visible: watch::Receiver<Visible>,
    /// Next offset wanted.
    next: u64,
    segment_base: u64,
    scanner: Option<SegmentScanner>,
    missed: u64,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Result<Reader, Error> {
        let visible = shared.visible_tx.subscribe();
        let mut r = Reader {
            shared,
            visible,
            next: from,
            segment_base: 0,
            scanner: None,
            missed: 0,
        };
        r.position()?;
        Ok(r)
    }

    /// The offset the next record read will have at the earliest.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Records this reader skipped because they had been dropped before it got to them.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Opens the segment holding `self.next` (or the first one after a gap) and skips to it.
    fn position(&mut self) -> Result<(), Error> {
        loop {
            let (base, next_base) = {
                let st = self.shared.lock();
                let oldest = st.segments.front().map(|s| s.base).unwrap_or(0);
                let end = st
                    .segments
                    .back()
                    .map(|_| self.shared.visible_tx.borrow().end)
                    .unwrap_or(0);
                if self.next < oldest {
                    self.missed += oldest - self.next;
                    self.next = oldest;
                }
                self.next = self.next.min(end.max(oldest));
                let idx = st
                    .segments
                    .partition_point(|s| s.base <= self.next)
                    .saturating_sub(1);
                let base = st.segments.get(idx).map(|s| s.base).unwrap_or(oldest);
                (base, st.segments.get(idx + 1).map(|s| s.base))
            };
            let path = segment_path(&self.shared.dir, base);
            let file = match File::open(&path) {
                Ok(f) => f,
                // Dropped or retained away between the lookup and the open: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let mut scanner = SegmentScanner::new(
                file,
                SEGMENT_HEADER_LEN,
                SEGMENT_HEADER_LEN,
                base,
                self.shared.opts.max_record_bytes,
            );
            if let Some(nb) = next_base {
                scanner.set_max_offset(nb);
            }
            self.segment_base = base;
            self.scanner = Some(scanner);
            return Ok(());
        }
    }

    /// How far the current segment may be read, given what the writer has published.
    fn limit(&self, v: &Visible) -> Result<Option<u64>, Error> {
        if self.segment_base < v.segment_base {
            let path = segment_path(&self.shared.dir, self.segment_base);
            let len = std::fs::metadata(&path).map(|m| m.len());
            match len {
                Ok(len) => Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(&path, e)),
            }
        } else {
            Ok(Some(v.segment_len))
        }
    }

    /// Reads up to `max_records` records / about `max_bytes` of payload that are available now.
    /// Returns an empty batch when the reader has caught up.
    pub fn read_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let mut out = Vec::new();
        let mut data = BytesMut::new();
        let mut spans: Vec<(u64, i64, usize, usize)> = Vec::new();
        let mut bytes = 0usize;
        while spans.len() < max_records && (bytes < max_bytes || spans.is_empty()) {
            let v = *self.visible.borrow_and_update();
            if self.next >= v.end {
                break;
            }
            let Some(limit) = self.limit(&v)? else {
                // The segment was deleted under us; find where to continue.
                self.position()?;
                continue;
            };
            let sealed = self.segment_base < v.segment_base;
            let Some(scanner) = self.scanner.as_mut() else {
                self.position()?;
                continue;
            };
            if limit > scanner.limit() {
                scanner.set_limit(limit);
            }
            let path = || segment_path(&self.shared.dir, self.segment_base);
            match scanner.next_item().map_err(|e| Error::io(path(), e))? {
                ScanItem::Record {
                    offset,
                    timestamp_ms,
                    payload,
                } => {
                    if offset < self.next {
                        continue;
                    }
                    let p = &scanner.window()[payload];
                    let start = data.len();
                    data.extend_from_slice(p);
                    spans.push((offset, timestamp_ms, start, p.len()));
                    bytes += p.len();
                    self.next = offset + 1;
                }
                ScanItem::Corrupt { at, resumed_at } => {
                    self.shared.count_corrupt(1);
                    tracing::warn!(segment = %path().display(), position = at, skipped_bytes = resumed_at - at, "skipping corrupt record in buffer");
                }
                ScanItem::Garbage { at } => {
                    self.shared.count_corrupt(1);
                    tracing::warn!(segment = %path().display(), position = at, "skipping unreadable rest of buffer segment");
                    // In the active segment the scanner now stands at the published end, a frame
                    // boundary, and goes on from there as the writer appends.
                    if sealed {
                        self.next_segment()?;
                    }
                }
                ScanItem::End => {
                    if sealed {
                        self.next_segment()?;
                    } else {
                        break;
                    }
                }
            }
        }
        let data = data.freeze();
        out.reserve(spans.len());
        for (offset, timestamp_ms, start, len) in spans {
            out.push(StoredRecord {
                offset,
                timestamp_ms,
                payload: data.slice(start..start + len),
            });
        }
        Ok(out)
    }

    fn next_segment(&mut self) -> Result<(), Error> {
        let next_base = {
            let st = self.shared.lock();
            st.segments
                .iter()
                .map(|s| s.base)
                .find(|&b| b > self.segment_base)
        };
        if let Some(nb) = next_base {
            // Offsets between the last record read and the next segment were corrupt or dropped.
            self.next = self.next.max(nb);
        }
        self.position()
    }

    /// Waits until a record at or after [`Reader::next_offset`] is acknowledged.
    /// Returns [`Error::Closed`] once the log is closed and everything was read.
    pub async fn wait(&mut self) -> Result<(), Error> {
        let next = self.next;
        let v = self
            .visible
            .wait_for(|v| v.end > next || v.closed)
            .await
            .map_err(|_| Error::Closed)?;
        if v.end > next {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Like [`Reader::read_batch`], but waits for at least one record.
    pub async fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        loop {
            let batch = self.read_batch(max_records, max_bytes)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            self.wait().await?;
        }
    }
}
