#![allow(dead_code)]

use edge_buffer::{FsyncPolicy, FullPolicy, Log, Options, StoredRecord};

/// Small segments so tests cross many segment boundaries.
pub fn small(fsync: FsyncPolicy) -> Options {
    Options {
        max_bytes: 1 << 30,
        segment_bytes: 4096,
        full_policy: FullPolicy::DropOldest,
        fsync,
        max_record_bytes: 64 << 10,
    }
}

/// Reads everything currently acknowledged from `from`.
pub fn read_all(log: &Log, from: u64) -> Vec<StoredRecord> {
    let mut reader = log.reader(from).expect("reader");
    let mut out = Vec::new();
    loop {
        let batch = reader.read_batch(1000, 1 << 20).expect("read");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Deterministic payload for an offset, so tests can check content without keeping copies.
pub fn payload_for(id: u64, len: usize) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len.max(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v.truncate(len.max(8));
    v
}
