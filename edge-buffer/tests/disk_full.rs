//! A real full file system (a small tmpfs mounted for the test): appends fail with a typed
//! error, nothing acknowledged is lost, and appends work again once space returns.
//!
//! Needs root (mount). Set `EDGE_BUFFER_SKIP_ENOSPC=1` to skip where mounting is impossible.

mod common;

use std::process::Command;

use common::{payload_for, read_all, small};
use edge_buffer::{Error, FsyncPolicy, Log, Record};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` for the test; `None` (skip) where mounting is impossible and
/// `EDGE_BUFFER_SKIP_ENOSPC` is set.
fn mount_tmpfs(size: &str) -> Option<(tempfile::TempDir, Tmpfs)> {
    let holder = tempfile::tempdir().unwrap();
    let mnt = holder.path().join("fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        if std::env::var("EDGE_BUFFER_SKIP_ENOSPC").is_ok() {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        panic!("mounting a tmpfs failed: run as root, or set EDGE_BUFFER_SKIP_ENOSPC=1");
    }
    Some((holder, Tmpfs(mnt)))
}

/// Appends 300-byte records (offset-derived payloads) until one fails: (acknowledged, error).
fn append_until_an_error(log: &Log) -> (u64, Error) {
    let mut acked = 0u64;
    loop {
        match log
            .append(&[Record::new(0, &payload_for(acked, 300))])
            .and_then(|t| t.wait())
        {
            Ok(_) => acked += 1,
            Err(e) => return (acked, e),
        }
        assert!(acked < 100_000, "never ran out of space");
    }
}

/// Appends the record for `offset` and waits until it is durable; its offsets.
fn append_next(log: &Log, offset: u64) -> std::ops::Range<u64> {
    log.append(&[Record::new(0, &payload_for(offset, 300))])
        .unwrap()
        .wait()
        .unwrap()
}

#[test]
fn enospc_is_a_typed_recoverable_error() {
    let Some((_holder, fs)) = mount_tmpfs("256k") else {
        return;
    };
    let mnt = fs.0.clone();
    // A filler file we can delete later to give the space back.
    std::fs::write(mnt.join("filler"), vec![0u8; 64 << 10]).unwrap();
    let dir = mnt.join("buffer");

    let log = Log::open(&dir, small(FsyncPolicy::Always)).unwrap();
    let (acked, err) = append_until_an_error(&log);
    assert!(
        matches!(err, Error::DiskFull { .. }),
        "expected DiskFull, got {err}"
    );
    assert!(err.to_string().contains("full"));
    assert!(log.stats().disk_full_errors >= 1 || log.stats().next_offset == acked);
    // Still full: still a typed error, and the log is unchanged.
    assert!(matches!(
        log.append(&[Record::new(0, &payload_for(acked, 300))]),
        Err(Error::DiskFull { .. })
    ));
    assert_eq!(log.stats().next_offset, acked);

    // Space comes back: appends succeed again, offsets continue without a gap.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    assert_eq!(append_next(&log, acked), acked..acked + 1);
    drop(log);

    let log = Log::open(&dir, small(FsyncPolicy::Always)).unwrap();
    let got = read_all(&log, 0);
    assert_eq!(got.len() as u64, acked + 1);
    for r in &got {
        assert_eq!(&r.payload[..], &payload_for(r.offset, 300)[..]);
    }
    assert_eq!(log.stats().corrupt_records, 0);
}

/// On a full file system, a consumer that has read everything must still be able to commit:
/// the commit writes a new cursor file, so it first releases the segments every consumer has
/// passed (found by the disk-full campaign: acknowledgements never resumed after the uplink
/// drained, because the commit itself failed with ENOSPC).
#[test]
fn a_commit_on_a_full_file_system_releases_the_passed_segments() {
    let Some((_holder, fs)) = mount_tmpfs("256k") else {
        return;
    };
    let dir = fs.0.join("buffer");
    let log = Log::open(&dir, small(FsyncPolicy::Always)).unwrap();
    let mut reader = log.reader_for("uplink").unwrap();
    let (acked, err) = append_until_an_error(&log);
    assert!(
        matches!(err, Error::DiskFull { .. }),
        "expected DiskFull, got {err}"
    );
    // The consumer reads everything, then commits while the file system is full.
    let mut read = 0u64;
    loop {
        let batch = reader.read_batch(1000, 1 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        read += batch.len() as u64;
    }
    assert_eq!(read, acked);
    let segments_before = log.stats().segments;
    log.commit("uplink", acked)
        .expect("a commit on a full file system must succeed");
    assert!(
        log.stats().segments < segments_before,
        "no segment released: {} before, {} after",
        segments_before,
        log.stats().segments
    );
    assert_eq!(log.cursor("uplink").unwrap(), Some(acked));
    // The space is back: appends succeed and continue the offsets.
    assert_eq!(append_next(&log, acked), acked..acked + 1);
    drop(reader);
    drop(log);

    // The stored cursor survives a restart: the consumer resumes at the new record.
    let log = Log::open(&dir, small(FsyncPolicy::Always)).unwrap();
    let mut reader = log.reader_for("uplink").unwrap();
    let batch = reader.read_batch(1000, 1 << 20).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].offset, acked);
    assert_eq!(&batch[0].payload[..], &payload_for(acked, 300)[..]);
}
