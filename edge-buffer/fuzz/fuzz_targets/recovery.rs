//! Segment recovery over arbitrary bytes: a log whose tail (or sealed) segment holds whatever the
//! fuzzer wrote must open, read only valid records in increasing offset order, accept appends,
//! and reopen to the same records.
#![no_main]

use edge_buffer::{FsyncPolicy, Log, Options, Record};
use libfuzzer_sys::fuzz_target;

fn opts() -> Options {
    Options {
        segment_bytes: 4096,
        max_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
        max_record_bytes: 1024,
        ..Options::default()
    }
}

fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut r = log.reader(0).expect("reader");
    let mut out = Vec::new();
    loop {
        let b = r.read_batch(100, 1 << 16).expect("read");
        if b.is_empty() {
            return out;
        }
        out.extend(b.into_iter().map(|r| (r.offset, r.payload.to_vec())));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A genuine log first, so the fuzzer mutates real frames as well as raw bytes.
        let log = Log::open(dir.path(), opts()).expect("open");
        for i in 0..(mode % 40) as u64 {
            let p = [i as u8; 37];
            log.append(&[Record::new(i as i64, &p)]).expect("append");
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let target = if mode & 0x80 != 0 { &segs[0] } else { &segs[segs.len() - 1] };
    let mut bytes = std::fs::read(target).expect("read seg");
    if mode & 0x40 != 0 {
        // Overwrite from just after the header.
        let at = 32.min(bytes.len());
        bytes.truncate(at);
    }
    bytes.extend_from_slice(data);
    std::fs::write(target, &bytes).expect("write seg");

    let log = Log::open(dir.path(), opts()).expect("open must survive any bytes");
    let first = read_all(&log);
    assert!(first.windows(2).all(|w| w[0].0 < w[1].0), "offsets must increase");
    let next = log.stats().next_offset;
    let ticket = log.append(&[Record::new(0, b"after recovery")]).expect("append after recovery");
    assert_eq!(ticket.offsets().start, next);
    drop(log);
    let log = Log::open(dir.path(), opts()).expect("reopen");
    let second = read_all(&log);
    assert_eq!(&second[..first.len().min(second.len())], &first[..first.len().min(second.len())]);
    assert_eq!(second.last().map(|r| r.1.as_slice()), Some(&b"after recovery"[..]));
});
