//! Torn tails, trailing garbage and bit flips: open succeeds, good records stay readable,
//! bad ones are counted and never delivered.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{payload_for, read_all, segment_files, small};
use edge_buffer::{FsyncPolicy, Log, Record};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn build(dir: &std::path::Path, n: u64) {
    let log = Log::open(dir, small(FsyncPolicy::Never)).unwrap();
    for i in 0..n {
        log.append(&[Record::new(
            i as i64,
            &payload_for(i, 60 + (i % 50) as usize),
        )])
        .unwrap()
        .wait()
        .unwrap();
    }
}

fn check_intact(records: &[edge_buffer::StoredRecord]) {
    let mut last = None;
    for r in records {
        assert!(last.is_none_or(|l| r.offset > l), "offsets must increase");
        assert_eq!(
            &r.payload[..],
            &payload_for(r.offset, 60 + (r.offset % 50) as usize)[..]
        );
        assert_eq!(r.timestamp_ms, r.offset as i64);
        last = Some(r.offset);
    }
}

#[test]
fn torn_tail_at_every_kind_of_position_is_truncated() {
    let mut rng = StdRng::seed_from_u64(7);
    for trial in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 200);
        let tail = segment_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&tail).unwrap().len();
        let cut = rng.random_range(0..len);
        OpenOptions::new()
            .write(true)
            .open(&tail)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
        let got = read_all(&log, 0);
        check_intact(&got);
        // Records before the tail segment are all there; the tail lost at most what was cut.
        let n = got.len() as u64;
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "trial {trial}"
        );
        assert_eq!(log.stats().next_offset, n);
        assert_eq!(log.stats().corrupt_records, 0);
        // And the log keeps working after recovery.
        let off = log
            .append(&[Record::new(
                n as i64,
                &payload_for(n, 60 + (n % 50) as usize),
            )])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(off, n..n + 1);
        drop(log);
        let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
        assert_eq!(read_all(&log, 0).len() as u64, n + 1);
    }
}

#[test]
fn garbage_after_the_last_frame_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 100);
    let tail = segment_files(dir.path()).pop().unwrap();
    let before = std::fs::metadata(&tail).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&tail).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let junk: Vec<u8> = (0..1000).map(|_| rng.random()).collect();
    f.write_all(&junk).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);

    let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), before);
    assert_eq!(log.stats().truncated_bytes, 5096);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 100);
    check_intact(&got);
}

#[test]
fn bit_flips_inside_segments_are_counted_and_skipped() {
    let mut rng = StdRng::seed_from_u64(11);
    for trial in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 300);
        let segs = segment_files(dir.path());
        // Flip bits in a sealed segment and in the tail segment, past the headers.
        let mut flipped = 0;
        for seg in [
            &segs[rng.random_range(0..segs.len() - 1)],
            segs.last().unwrap(),
        ] {
            let f = OpenOptions::new().read(true).write(true).open(seg).unwrap();
            let len = f.metadata().unwrap().len();
            if len <= 40 {
                continue;
            }
            let at = rng.random_range(32..len);
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, at).unwrap();
            b[0] ^= 1 << rng.random_range(0..8);
            f.write_all_at(&b, at).unwrap();
            flipped += 1;
        }
        let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
        let got = read_all(&log, 0);
        check_intact(&got);
        let lost = 300 - got.len() as u64;
        assert!(
            lost >= 1 && lost <= 2 * flipped,
            "trial {trial}: lost {lost} records for {flipped} flips"
        );
        let s = log.stats();
        assert!(
            s.corrupt_records >= 1 || s.truncated_bytes > 0,
            "trial {trial}: {s:?}"
        );
    }
}

#[test]
fn garbage_segment_header_in_tail_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 100);
    let tail = segment_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new().write(true).open(&tail).unwrap();
    f.write_all_at(b"not a header", 0).unwrap();
    drop(f);
    let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
    let got = read_all(&log, 0);
    check_intact(&got);
    let n = log.stats().next_offset;
    assert_eq!(got.len() as u64, n);
    log.append(&[Record::new(0, b"after")])
        .unwrap()
        .wait()
        .unwrap();
}
