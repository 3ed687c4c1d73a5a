//! `edge-buffer`: a durable, bounded, segmented append-only disk log.
//!
//! Everything an edge gateway accepts is appended here first; uplinks read it back in order
//! and commit how far they got. The log is built for small flash-backed machines:
//!
//! * **Durable**: records are framed with length and CRC32C in segment files named by base
//!   offset (see `FORMAT.md` in the crate). With
//!   [`FsyncPolicy::Always`] an append is acknowledged only after the `fdatasync` that covers
//!   it, and concurrent appends share one `fdatasync` (group commit).
//! * **Recoverable**: opening scans only the tail segment; a torn tail is truncated, a bad
//!   record elsewhere is counted and skipped, never delivered.
//! * **Bounded**: at most [`Options::max_bytes`] on disk; when full either the oldest segments
//!   are dropped ([`FullPolicy::DropOldest`], counted) or appends fail with
//!   [`Error::Full`] ([`FullPolicy::Backpressure`]). Memory does not grow with the backlog.
//! * **Consumers**: named cursors are stored atomically in the log directory; segments that
//!   every consumer has passed are deleted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), edge_buffer::Error> {
//! use edge_buffer::{Log, Options, Record};
//! let log = Log::open("/var/lib/ironbridge/buffer", Options::default())?;
//! let offsets = log.append(&[Record::new(1_700_000_000_000, b"reading")])?.durable().await?;
//! let mut reader = log.reader_for("uplink")?;
//! let batch = reader.next_batch(1000, 1 << 20).await?;
//! if let Some(last) = batch.last() {
//!     log.commit("uplink", last.offset + 1)?;
//! }
//! # let _ = offsets; Ok(()) }
//! ```

mod cursor;
mod error;
mod format;
mod log;
mod reader;

pub use error::Error;
pub use log::{AppendTicket, Log};
pub use reader::Reader;

use std::time::Duration;

/// When appended data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge an append only after an `fdatasync` covering it (group commit).
    Always,
    /// Acknowledge once written to the OS; `fdatasync` at most this often.
    Interval(Duration),
    /// Acknowledge once written to the OS; sync only when segments roll and on close.
    Never,
}

/// What an append does when the log has reached [`Options::max_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Delete whole oldest segments, even unread ones, and count the dropped records.
    DropOldest,
    /// Refuse the append with [`Error::Full`] until consumers free space.
    Backpressure,
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Upper bound for all segment files together. At least twice `segment_bytes`.
    pub max_bytes: u64,
    /// A segment is rolled once it would grow past this size.
    pub segment_bytes: u64,
    pub full_policy: FullPolicy,
    pub fsync: FsyncPolicy,
    /// Largest payload accepted in one record.
    pub max_record_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: 1 << 30,
            segment_bytes: 32 << 20,
            full_policy: FullPolicy::DropOldest,
            fsync: FsyncPolicy::Always,
            max_record_bytes: 4 << 20,
        }
    }
}

/// A record to append: the caller's timestamp (milliseconds since the Unix epoch) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub timestamp_ms: i64,
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn new(timestamp_ms: i64, payload: &'a [u8]) -> Self {
        Record {
            timestamp_ms,
            payload,
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: bytes::Bytes,
}

/// A snapshot of the log's state and counters, for metrics and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of all segment files.
    pub bytes_on_disk: u64,
    pub max_bytes: u64,
    pub segments: usize,
    /// First offset still on disk.
    pub oldest_offset: u64,
    /// Offset the next appended record will get.
    pub next_offset: u64,
    /// Offsets below this are acknowledged (durable under [`FsyncPolicy::Always`]).
    pub acknowledged_offset: u64,
    /// Offsets below this have been covered by an `fdatasync`.
    pub synced_offset: u64,
    pub oldest_timestamp_ms: Option<i64>,
    pub newest_timestamp_ms: Option<i64>,
    /// Records appended since open.
    pub appended_records: u64,
    /// Records deleted because the log was full before every consumer had committed past
    /// them, since open (records all consumers had passed are not counted). A consumer may
    /// still deliver some of them from a batch it had read before; its reader's
    /// [`Reader::missed`] is the exact loss.
    pub dropped_records: u64,
    /// Records that failed their CRC and were skipped (by recovery or readers), since open.
    pub corrupt_records: u64,
    /// Bytes cut off a torn tail at open.
    pub truncated_bytes: u64,
    pub fsyncs: u64,
    pub fsync_last_micros: u64,
    pub fsync_max_micros: u64,
    pub fsync_total_micros: u64,
    /// Appends refused because the log was full ([`FullPolicy::Backpressure`]).
    pub full_rejections: u64,
    /// Appends that failed because the file system was full.
    pub disk_full_errors: u64,
    /// Why the log refuses appends (a failed `fdatasync`); reopening is the cure.
    pub failed: Option<String>,
}

impl Stats {
    /// Records between the oldest and the next offset (holes left by corrupt records included).
    pub fn records(&self) -> u64 {
        self.next_offset - self.oldest_offset
    }
}
