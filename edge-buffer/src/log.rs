//! The log: segment management, appends with group commit, retention and cursors.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};

use crate::format::{self, SEGMENT_HEADER_LEN, ScanItem, SegmentScanner};
use crate::{Error, FsyncPolicy, FullPolicy, Options, Reader, Record, Stats, cursor};

const SEGMENT_SUFFIX: &str = ".seg";
const LOCK_FILE: &str = "LOCK";

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How far readers may read: offsets below `end`, and bytes of the segment `segment_base` below
/// `segment_len`. Under [`FsyncPolicy::Always`] this trails the writer until the covering
/// `fdatasync`; otherwise it follows each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visible {
    pub(crate) end: u64,
    pub(crate) segment_base: u64,
    pub(crate) segment_len: u64,
    /// Set when the log is closed or has failed; waiters stop waiting.
    pub(crate) closed: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentInfo {
    pub(crate) base: u64,
    pub(crate) bytes: u64,
}

pub(crate) struct State {
    pub(crate) segments: VecDeque<SegmentInfo>,
    active: Arc<File>,
    next_offset: u64,
    encode_buf: Vec<u8>,
    total_bytes: u64,
    oldest_timestamp_ms: Option<Option<i64>>,
    newest_timestamp_ms: Option<i64>,
    cursors: BTreeMap<String, u64>,
    /// Everything written to the OS so far.
    written: Visible,
    synced_end: u64,
    failed: Option<Arc<io::Error>>,
    closed: bool,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    dropped: AtomicU64,
    corrupt: AtomicU64,
    truncated_bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_last_us: AtomicU64,
    fsync_max_us: AtomicU64,
    fsync_total_us: AtomicU64,
    full_rejections: AtomicU64,
    disk_full_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) state: Mutex<State>,
    /// Wakes the sync thread.
    sync_wanted: Condvar,
    /// Readers and async append tickets watch this.
    pub(crate) visible_tx: watch::Sender<Visible>,
    /// Blocking append tickets wait here (paired with `state`).
    visible_cv: Condvar,
    counters: Counters,
    /// Signalled when space is freed (retention or drops), for backpressured writers.
    space_freed: Notify,
    stop: AtomicBool,
    /// Serialises cursor-file writers, which work outside `state`'s lock.
    cursor_writer: Mutex<()>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the on-disk log inconsistent (every
        // write is positional and published only after it completed), so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn count_corrupt(&self, n: u64) {
        self.counters.corrupt.fetch_add(n, Ordering::Relaxed);
    }

    fn publish(&self, v: Visible) {
        self.visible_tx.send_replace(v);
        self.visible_cv.notify_all();
    }
}

/// A durable, bounded, segmented append-only log in one directory.
///
/// One process owns a directory at a time (an exclusive lock on `LOCK`). All methods take
/// `&self`; share a `Log` between tasks or threads with an `Arc`. Dropping it syncs the log
/// and stops its sync thread.
pub struct Log {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    /// Held by the `Log` itself, not by readers or tickets, so dropping the log frees the
    /// directory for the next open.
    _lock: File,
}

/// Offsets assigned to an appended batch; resolve it to learn when they are acknowledged.
#[must_use = "an append is only acknowledged once its ticket resolves"]
pub struct AppendTicket {
    shared: Arc<Shared>,
    offsets: Range<u64>,
}

impl AppendTicket {
    /// The offsets assigned to the batch, in order.
    pub fn offsets(&self) -> Range<u64> {
        self.offsets.clone()
    }

    fn check(
        &self,
        v: &Visible,
        st_failed: Option<&Arc<io::Error>>,
    ) -> Option<Result<Range<u64>, Error>> {
        if v.end >= self.offsets.end {
            return Some(Ok(self.offsets.clone()));
        }
        if let Some(e) = st_failed {
            return Some(Err(Error::SyncFailed(e.clone())));
        }
        if v.closed {
            return Some(Err(Error::Closed));
        }
        None
    }

    /// Waits until the batch is acknowledged by the log's fsync policy.
    pub async fn durable(self) -> Result<Range<u64>, Error> {
        let mut rx = self.shared.visible_tx.subscribe();
        loop {
            {
                let v = *rx.borrow_and_update();
                let failed = self.shared.lock().failed.clone();
                if let Some(r) = self.check(&v, failed.as_ref()) {
                    return r;
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Blocks the thread until the batch is acknowledged (for non-async callers).
    pub fn wait(self) -> Result<Range<u64>, Error> {
        let mut st = self.shared.lock();
        loop {
            let v = *self.shared.visible_tx.borrow();
            if let Some(r) = self.check(&v, st.failed.as_ref()) {
                return r;
            }
            st = self
                .shared
                .visible_cv
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX)
            && stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn create_segment(dir: &Path, base: u64) -> Result<File, Error> {
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let header = format::encode_segment_header(base, now_ms());
    let res = file.write_all_at(&header, 0).and_then(|_| file.sync_data());
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(Error::io(&path, e));
    }
    cursor::sync_dir(dir)?;
    Ok(file)
}

/// First record's timestamp in a segment, if it has a readable one.
fn first_timestamp(dir: &Path, base: u64, max_payload: u32) -> Option<i64> {
    let path = segment_path(dir, base);
    let file = File::open(&path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut scan = SegmentScanner::new(file, SEGMENT_HEADER_LEN, len, base, max_payload);
    loop {
        match scan.next_item().ok()? {
            ScanItem::Record { timestamp_ms, .. } => return Some(timestamp_ms),
            ScanItem::Corrupt { .. } => continue,
            ScanItem::Garbage { .. } | ScanItem::End => return None,
        }
    }
}

struct Recovered {
    next_offset: u64,
    len: u64,
    newest_timestamp_ms: Option<i64>,
    corrupt: u64,
    truncated: u64,
}

/// Scans the tail segment, truncating a torn tail; the only full scan done at open.
fn recover_tail(path: &Path, base: u64, max_payload: u32) -> Result<Recovered, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let header_ok = len >= SEGMENT_HEADER_LEN
        && file.read_exact_at(&mut header, 0).is_ok()
        && format::decode_segment_header(&header) == Some(base);
    if !header_ok {
        // Crash between creating the file and syncing its header: nothing in it was acknowledged.
        let h = format::encode_segment_header(base, now_ms());
        file.set_len(0)
            .and_then(|_| file.write_all_at(&h, 0))
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
        return Ok(Recovered {
            next_offset: base,
            len: SEGMENT_HEADER_LEN,
            newest_timestamp_ms: None,
            corrupt: 0,
            truncated: len.saturating_sub(SEGMENT_HEADER_LEN),
        });
    }
    let reader = file.try_clone().map_err(|e| Error::io(path, e))?;
    let mut scan = SegmentScanner::new(reader, SEGMENT_HEADER_LEN, len, base, max_payload);
    let mut rec = Recovered {
        next_offset: base,
        len,
        newest_timestamp_ms: None,
        corrupt: 0,
        truncated: 0,
    };
    loop {
        match scan.next_item().map_err(|e| Error::io(path, e))? {
            ScanItem::Record {
                offset,
                timestamp_ms,
                ..
            } => {
                rec.next_offset = offset + 1;
                rec.newest_timestamp_ms = Some(timestamp_ms);
            }
            ScanItem::Corrupt { at, .. } => {
                rec.corrupt += 1;
                tracing::warn!(segment = %path.display(), position = at, "skipping corrupt record in buffer");
            }
            ScanItem::Garbage { at } => {
                tracing::warn!(segment = %path.display(), position = at, bytes = len - at, "truncating torn tail of buffer");
                file.set_len(at)
                    .and_then(|_| file.sync_data())
                    .map_err(|e| Error::io(path, e))?;
                rec.truncated = len - at;
                rec.len = at;
                break;
            }
            ScanItem::End => break,
        }
    }
    Ok(rec)
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash if there was one.
    ///
    /// Only the tail segment is scanned, so opening is fast whatever the backlog.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Log, Error> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_bytes < 4096 || opts.max_bytes < 2 * opts.segment_bytes {
            return Err(Error::InvalidOptions(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({}), and segment_bytes at least 4096",
                opts.max_bytes, opts.segment_bytes
            )));
        }
        if let FsyncPolicy::Interval(d) = opts.fsync
            && d.is_zero()
        {
            return Err(Error::InvalidOptions(
                "fsync interval must be greater than zero".into(),
            ));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }

        let mut bases = list_segments(&dir)?;
        if bases.is_empty() {
            create_segment(&dir, 0)?;
            bases.push(0);
        }
        let tail_base = *bases.last().unwrap_or(&0);
        let tail_path = segment_path(&dir, tail_base);
        let rec = recover_tail(&tail_path, tail_base, opts.max_record_bytes)?;

        let mut segments = VecDeque::with_capacity(bases.len());
        let mut total_bytes = 0;
        for &base in &bases {
            let bytes = if base == tail_base {
                rec.len
            } else {
                let p = segment_path(&dir, base);
                fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len()
            };
            total_bytes += bytes;
            segments.push_back(SegmentInfo { base, bytes });
        }
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tail_path)
            .map_err(|e| Error::io(&tail_path, e))?;

        let (mut cursors, cursors_corrupt) = cursor::load(&dir)?;
        if cursors_corrupt {
            tracing::warn!(dir = %dir.display(), "cursor file is corrupt; consumers restart from the oldest record");
        }
        for offset in cursors.values_mut() {
            *offset = (*offset).min(rec.next_offset);
        }

        let written = Visible {
            end: rec.next_offset,
            segment_base: tail_base,
            segment_len: rec.len,
            closed: false,
        };
        let counters = Counters::default();
        counters.corrupt.store(rec.corrupt, Ordering::Relaxed);
        counters
            .truncated_bytes
            .store(rec.truncated, Ordering::Relaxed);
        let state = State {
            segments,
            active: Arc::new(active),
            next_offset: rec.next_offset,
            encode_buf: Vec::new(),
            total_bytes,
            oldest_timestamp_ms: None,
            newest_timestamp_ms: rec.newest_timestamp_ms,
            cursors,
            written,
            synced_end: rec.next_offset,
            failed: None,
            closed: false,
        };
        let (visible_tx, _) = watch::channel(written);
        let shared = Arc::new(Shared {
            dir,
            opts: opts.clone(),
            state: Mutex::new(state),
            sync_wanted: Condvar::new(),
            visible_tx,
            visible_cv: Condvar::new(),
            counters,
            space_freed: Notify::new(),
            stop: AtomicBool::new(false),
            cursor_writer: Mutex::new(()),
        });
        let syncer = match opts.fsync {
            FsyncPolicy::Never => None,
            policy => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("edge-buffer-sync".into())
                        .spawn(move || sync_loop(&s, policy))
                        .map_err(|e| Error::io(&shared.dir, e))?,
                )
            }
        };
        Ok(Log {
            shared,
            syncer,
            _lock: lock,
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends a batch of records as one write; returns a ticket that resolves when the whole
    /// batch is acknowledged under the fsync policy.
    ///
    /// A batch is never split across segments, so it is written (and recovered) whole or not at
    /// all up to its last complete record.
    pub fn append(&self, records: &[Record<'_>]) -> Result<AppendTicket, Error> {
        let opts = &self.shared.opts;
        let mut needed = 0u64;
        for r in records {
            if r.payload.len() > opts.max_record_bytes as usize {
                return Err(Error::RecordTooLarge {
                    size: r.payload.len(),
                    max: opts.max_record_bytes,
                });
            }
            needed += format::frame_len(r.payload.len()) as u64;
        }
        if needed + SEGMENT_HEADER_LEN > opts.max_bytes - opts.segment_bytes {
            return Err(Error::BatchTooLarge {
                size: needed,
                max: opts.max_bytes,
                segment: opts.segment_bytes,
            });
        }
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            return Err(Error::SyncFailed(e.clone()));
        }
        if st.closed {
            return Err(Error::Closed);
        }
        let first = st.next_offset;
        if records.is_empty() {
            return Ok(self.ticket(first..first));
        }
        let roll = st.written.segment_len > SEGMENT_HEADER_LEN
            && st.written.segment_len + needed > opts.segment_bytes;
        let needed_total = needed + if roll { SEGMENT_HEADER_LEN } else { 0 };
        self.make_room(&mut st, needed_total)?;
        if roll {
            self.roll(&mut st)?;
        }

        let mut buf = std::mem::take(&mut st.encode_buf);
        buf.clear();
        let mut offset = first;
        for r in records {
            format::encode_frame(&mut buf, offset, r.timestamp_ms, r.payload);
            offset += 1;
        }
        let pos = st.written.segment_len;
        let res = st.active.write_all_at(&buf, pos);
        if buf.capacity() > 8 << 20 {
            buf = Vec::new();
        }
        st.encode_buf = buf;
        if let Err(e) = res {
            // The next append overwrites at the same position, so a partial write leaves no trace
            // once it is replaced; cut it now so a crash before then cannot expose it either.
            let _ = st.active.set_len(pos);
            let err = Error::io(segment_path(&self.shared.dir, st.written.segment_base), e);
            if matches!(err, Error::DiskFull { .. }) {
                self.shared
                    .counters
                    .disk_full_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Err(err);
        }
        st.written.segment_len += needed;
        st.written.end = offset;
        st.next_offset = offset;
        st.total_bytes += needed;
        if let Some(seg) = st.segments.back_mut() {
            seg.bytes += needed;
        }
        st.newest_timestamp_ms = records.last().map(|r| r.timestamp_ms);
        if st.oldest_timestamp_ms == Some(None) {
            st.oldest_timestamp_ms = None;
        }
        self.shared
            .counters
            .appended
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        match opts.fsync {
            FsyncPolicy::Always => self.shared.sync_wanted.notify_one(),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => self.shared.publish(st.written),
        }
        drop(st);
        Ok(self.ticket(first..offset))
    }

    fn ticket(&self, offsets: Range<u64>) -> AppendTicket {
        AppendTicket {
            shared: self.shared.clone(),
            offsets,
        }
    }

    /// Frees space for `needed` more bytes according to the full policy.
    fn make_room(&self, st: &mut State, needed: u64) -> Result<(), Error> {
        let max = self.shared.opts.max_bytes;
        if st.total_bytes + needed <= max {
            return Ok(());
        }
        match self.shared.opts.full_policy {
            FullPolicy::Backpressure => {
                self.shared
                    .counters
                    .full_rejections
                    .fetch_add(1, Ordering::Relaxed);
                Err(Error::Full {
                    used: st.total_bytes,
                    max,
                })
            }
            FullPolicy::DropOldest => {
                // Only records some consumer has not committed past are lost; the ones every
                // consumer already passed were delivered (a segment is dropped whole, so it can
                // hold both). Without consumers every record counts.
                let read = st.cursors.values().min().copied().unwrap_or(0);
                let mut dropped = 0;
                while st.total_bytes + needed > max && st.segments.len() > 1 {
                    let seg = st.segments[0];
                    let next_base = st.segments[1].base;
                    self.delete_segment(st, seg)?;
                    dropped += next_base - read.clamp(seg.base, next_base);
                }
                if dropped > 0 {
                    self.shared
                        .counters
                        .dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                    tracing::warn!(records = dropped, "buffer full: dropped oldest records");
                    cursor::sync_dir(&self.shared.dir)?;
                }
                // With only the active segment left the batch still fits: `append` bounds a batch
                // by max_bytes - segment_bytes.
                Ok(())
            }
        }
    }

    fn delete_segment(&self, st: &mut State, seg: SegmentInfo) -> Result<(), Error> {
        let path = segment_path(&self.shared.dir, seg.base);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        st.segments.pop_front();
        st.total_bytes -= seg.bytes;
        st.oldest_timestamp_ms = None;
        self.shared.space_freed.notify_waiters();
        Ok(())
    }

    /// Seals the active segment (synced) and starts a new one at the next offset.
    fn roll(&self, st: &mut State) -> Result<(), Error> {
        let old_path = segment_path(&self.shared.dir, st.written.segment_base);
        // Sealed segments are always complete on disk (whatever the policy), so recovery only
        // ever has to scan the tail.
        let t = Instant::now();
        st.active.sync_data().map_err(|e| Error::io(&old_path, e))?;
        self.record_fsync(t.elapsed());
        let base = st.next_offset;
        let file = create_segment(&self.shared.dir, base)?;
        st.active = Arc::new(file);
        st.segments.push_back(SegmentInfo {
            base,
            bytes: SEGMENT_HEADER_LEN,
        });
        st.total_bytes += SEGMENT_HEADER_LEN;
        st.written.segment_base = base;
        st.written.segment_len = SEGMENT_HEADER_LEN;
        st.synced_end = st.written.end;
        // Everything before the new segment is now durable; readers may go on to it.
        self.shared.publish(st.written);
        Ok(())
    }

    fn record_fsync(&self, took: Duration) {
        record_fsync(&self.shared, took)
    }

    /// Forces everything appended so far to stable storage.
    pub fn sync(&self) -> Result<(), Error> {
        let mut st = self.shared.lock();
        let t = Instant::now();
        st.active
            .sync_data()
            .map_err(|e| Error::io(segment_path(&self.shared.dir, st.written.segment_base), e))?;
        self.record_fsync(t.elapsed());
        st.synced_end = st.written.end;
        self.shared.publish(st.written);
        Ok(())
    }

    /// Waits until an append of `bytes` would fit (for [`FullPolicy::Backpressure`]).
    pub async fn wait_for_space(&self, bytes: u64) {
        loop {
            let freed = self.shared.space_freed.notified();
            {
                let st = self.shared.lock();
                if st.total_bytes + bytes <= self.shared.opts.max_bytes || st.closed {
                    return;
                }
            }
            freed.await;
        }
    }

    /// A reader positioned at `from` (clamped to the records still on disk).
    pub fn reader(&self, from: u64) -> Result<Reader, Error> {
        Reader::new(self.shared.clone(), from)
    }

    /// A reader positioned at consumer `name`'s cursor, or at the oldest record.
    pub fn reader_for(&self, name: &str) -> Result<Reader, Error> {
        let from = self.cursor(name)?.unwrap_or(0);
        self.reader(from)
    }

    /// Consumer `name`'s committed position: the next offset it wants.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>, Error> {
        if !cursor::valid_name(name) {
            return Err(Error::InvalidConsumerName(name.to_string()));
        }
        Ok(self.shared.lock().cursors.get(name).copied())
    }

    /// Durably records that consumer `name` has processed every offset below `next_offset`,
    /// then deletes sealed segments that every consumer has passed.
    ///
    /// The cursor file is written (and fsynced) outside the log's state lock, so appends are
    /// not held up by it; cursor writers are serialised among themselves.
    pub fn commit(&self, name: &str, next_offset: u64) -> Result<(), Error> {
        if !cursor::valid_name(name) {
            return Err(Error::InvalidConsumerName(name.to_string()));
        }
        self.update_cursors(|cursors, log_end| {
            let next_offset = next_offset.min(log_end);
            cursors.insert(name.to_string(), next_offset) != Some(next_offset)
        })
    }

    /// Forgets consumer `name`, so it no longer holds back retention.
    pub fn remove_consumer(&self, name: &str) -> Result<(), Error> {
        self.update_cursors(|cursors, _| cursors.remove(name).is_some())
    }

    /// Applies `change` (which says whether it changed anything) to a copy of the cursors,
    /// stores them, then applies retention.
    fn update_cursors(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, u64>, u64) -> bool,
    ) -> Result<(), Error> {
        let _writer = self
            .shared
            .cursor_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (mut cursors, log_end) = {
            let st = self.shared.lock();
            (st.cursors.clone(), st.next_offset)
        };
        if !change(&mut cursors, log_end) {
            return Ok(());
        }
        // On a full file system the cursor file cannot be rewritten, and without the commit no
        // segment would ever be released: the buffer would stay full for good. Deleting the
        // segments every consumer has passed first is safe — after a crash before the cursor is
        // stored, a consumer resumes from the oldest remaining record (redelivery, no loss) —
        // and makes room to store it.
        let stored = cursor::store(&self.shared.dir, &cursors);
        if let Err(e) = &stored
            && !matches!(e, Error::DiskFull { .. })
        {
            return stored;
        }
        let deleted = {
            let mut st = self.shared.lock();
            st.cursors = cursors.clone();
            self.apply_retention(&mut st)?
        };
        if deleted {
            cursor::sync_dir(&self.shared.dir)?;
        }
        if stored.is_err() {
            cursor::store(&self.shared.dir, &cursors)?;
        }
        Ok(())
    }

    /// Deletes sealed segments every consumer has passed; says whether it deleted any (the
    /// caller syncs the directory after releasing the lock).
    fn apply_retention(&self, st: &mut State) -> Result<bool, Error> {
        let Some(&min) = st.cursors.values().min() else {
            return Ok(false);
        };
        let mut deleted = false;
        while st.segments.len() > 1 && st.segments[1].base <= min {
            let seg = st.segments[0];
            self.delete_segment(st, seg)?;
            deleted = true;
        }
        Ok(deleted)
    }

    /// A snapshot of sizes, positions and counters.
    pub fn stats(&self) -> Stats {
        let mut st = self.shared.lock();
        let oldest_offset = st
            .segments
            .front()
            .map(|s| s.base)
            .unwrap_or(st.next_offset);
        if st.oldest_timestamp_ms.is_none() {
            let ts = first_timestamp(
                &self.shared.dir,
                oldest_offset,
                self.shared.opts.max_record_bytes,
            );
            st.oldest_timestamp_ms = Some(ts);
        }
        let c = &self.shared.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            bytes_on_disk: st.total_bytes,
            max_bytes: self.shared.opts.max_bytes,
            segments: st.segments.len(),
            oldest_offset,
            next_offset: st.next_offset,
            acknowledged_offset: self.shared.visible_tx.borrow().end,
            synced_offset: st.synced_end,
            oldest_timestamp_ms: st.oldest_timestamp_ms.flatten(),
            newest_timestamp_ms: st.newest_timestamp_ms,
            appended_records: ld(&c.appended),
            dropped_records: ld(&c.dropped),
            corrupt_records: ld(&c.corrupt),
            truncated_bytes: ld(&c.truncated_bytes),
            fsyncs: ld(&c.fsyncs),
            fsync_last_micros: ld(&c.fsync_last_us),
            fsync_max_micros: ld(&c.fsync_max_us),
            fsync_total_micros: ld(&c.fsync_total_us),
            full_rejections: ld(&c.full_rejections),
            disk_full_errors: ld(&c.disk_full_errors),
            failed: st.failed.as_ref().map(|e| e.to_string()),
        }
    }

    /// Syncs and closes the log; pending tickets resolve, readers see the end.
    pub fn close(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.sync_wanted.notify_all();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
        let res = self.sync();
        let mut st = self.shared.lock();
        st.closed = true;
        st.written.closed = true;
        let mut v = *self.shared.visible_tx.borrow();
        v.closed = true;
        self.shared.publish(v);
        self.shared.space_freed.notify_waiters();
        res
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if !self.shared.lock().closed
            && let Err(e) = self.shutdown()
        {
            tracing::error!(error = %e, "closing the buffer failed");
        }
    }
}

fn record_fsync(shared: &Shared, took: Duration) {
    let us = took.as_micros() as u64;
    let c = &shared.counters;
    c.fsyncs.fetch_add(1, Ordering::Relaxed);
    c.fsync_last_us.store(us, Ordering::Relaxed);
    c.fsync_max_us.fetch_max(us, Ordering::Relaxed);
    c.fsync_total_us.fetch_add(us, Ordering::Relaxed);
}

/// The group-commit loop: one `fdatasync` covers every append written before it started.
fn sync_loop(shared: &Shared, policy: FsyncPolicy) {
    loop {
        let (target, file) = {
            let mut st = shared.lock();
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if st.written.end > st.synced_end && st.failed.is_none() {
                    break;
                }
                st = match policy {
                    FsyncPolicy::Interval(d) => {
                        shared
                            .sync_wanted
                            .wait_timeout(st, d)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    _ => shared
                        .sync_wanted
                        .wait(st)
                        .unwrap_or_else(|p| p.into_inner()),
                };
            }
            (st.written, st.active.clone())
        };
        let t = Instant::now();
        let res = file.sync_data();
        record_fsync(shared, t.elapsed());
        let mut st = shared.lock();
        match res {
            Ok(()) => {
                if target.end > st.synced_end {
                    st.synced_end = target.end;
                }
                if policy == FsyncPolicy::Always {
                    // A roll may have published a later position meanwhile; never go back.
                    let current = *shared.visible_tx.borrow();
                    if target.end > current.end
                        || (target.end == current.end
                            && target.segment_base == current.segment_base
                            && target.segment_len > current.segment_len)
                    {
                        shared.publish(target);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "fdatasync of the buffer failed");
                st.failed = Some(Arc::new(e));
                shared.visible_cv.notify_all();
                let mut v = *shared.visible_tx.borrow();
                v.closed = true;
                shared.publish(v);
            }
        }
        if let FsyncPolicy::Interval(d) = policy {
            drop(st);
            // Sleep out the rest of the interval, unless closing.
            let rest = d.saturating_sub(t.elapsed());
            if !rest.is_zero() && !shared.stop.load(Ordering::SeqCst) {
                let st = shared.lock();
                let _ = shared.sync_wanted.wait_timeout(st, rest);
            }
        }
    }
}
