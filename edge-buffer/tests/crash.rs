//! Crash trials: a child process appends under load with `FsyncPolicy::Always` and reports each
//! acknowledged offset; the parent kills it with SIGKILL at a random moment, reopens the log and
//! checks that every acknowledged record is present, intact, in order and not duplicated.
//!
//! The child is this test binary re-executed with `EDGE_BUFFER_CRASH_CHILD` set.
//! `EDGE_BUFFER_CRASH_TRIALS` sets the number of trials (default 50).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{payload_for, read_all};
use edge_buffer::{FsyncPolicy, Log, Options, Record};
use rand::{Rng, SeedableRng, rngs::StdRng};

const CHILD_ENV: &str = "EDGE_BUFFER_CRASH_CHILD";
const WRITERS: u64 = 4;

fn opts() -> Options {
    Options {
        segment_bytes: 64 << 10,
        fsync: FsyncPolicy::Always,
        ..Options::default()
    }
}

/// Payload id: writer in the top bits, sequence below, so duplicates and reordering are visible.
fn id(writer: u64, seq: u64) -> u64 {
    (writer << 40) | seq
}

/// The child: several threads append small batches and print "ack <first> <end> <writer> <seq0>".
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(Log::open(&dir, opts()).expect("child open"));
    let start_seq: u64 = std::env::var("START_SEQ")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut seq = start_seq;
                loop {
                    let n = 1 + (seq % 5);
                    let payloads: Vec<Vec<u8>> = (0..n)
                        .map(|k| payload_for(id(w, seq + k), 40 + (k as usize * 30)))
                        .collect();
                    let records: Vec<Record> = payloads.iter().map(|p| Record::new(0, p)).collect();
                    let r = log
                        .append(&records)
                        .expect("append")
                        .wait()
                        .expect("durable");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {} {} {} {}", r.start, r.end, w, seq).unwrap();
                    o.flush().unwrap();
                    seq += n;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn sigkill_never_loses_acknowledged_records() {
    let trials: usize = std::env::var("EDGE_BUFFER_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = StdRng::seed_from_u64(
        std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42),
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Acknowledged batches across all trials: first offset -> (end, writer, first seq).
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut next_seq = 0u64;
    let mut total_acked = 0u64;
    for trial in 0..trials {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("START_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(rng.random_range(5..150));
        let pid = child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            // SIGKILL through kill(1): no libc binding needed in the tests.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|s| s.parse().ok())
                .collect();
            if line.starts_with("ack ") && f.len() == 4 {
                acked.insert(f[0], (f[1], f[2], f[3]));
                total_acked += f[1] - f[0];
            }
        }
        killer.join().unwrap();
        let _ = child.wait();
        // Sequences restart above everything used so far, so ids stay unique across trials.
        next_seq += 1_000_000;

        let log = Log::open(dir.path(), opts()).expect("reopen after SIGKILL");
        let records = read_all(&log, 0);
        let by_offset: HashMap<u64, &edge_buffer::StoredRecord> =
            records.iter().map(|r| (r.offset, r)).collect();
        assert_eq!(
            log.stats().corrupt_records,
            0,
            "trial {trial}: corruption after crash"
        );
        for (&first, &(end, writer, seq)) in &acked {
            for (k, o) in (first..end).enumerate() {
                let r = by_offset
                    .get(&o)
                    .unwrap_or_else(|| panic!("trial {trial}: acknowledged offset {o} lost"));
                let want = payload_for(id(writer, seq + k as u64), 40 + k * 30);
                assert_eq!(
                    &r.payload[..],
                    &want[..],
                    "trial {trial}: offset {o} damaged"
                );
            }
        }
        // No duplicates and per-writer order: ids are unique and increase per writer.
        let mut seen = std::collections::HashSet::new();
        let mut last_per_writer: HashMap<u64, u64> = HashMap::new();
        for r in &records {
            let rid = u64::from_le_bytes(r.payload[..8].try_into().unwrap());
            assert!(
                seen.insert(rid),
                "trial {trial}: duplicate record id {rid:#x}"
            );
            let (w, s) = (rid >> 40, rid & ((1 << 40) - 1));
            if let Some(prev) = last_per_writer.insert(w, s) {
                assert!(s > prev, "trial {trial}: writer {w} out of order");
            }
        }
        drop(log);
    }
    assert!(total_acked > 0, "children acknowledged nothing");
    eprintln!("{trials} SIGKILL trials, {total_acked} acknowledged records verified");
}
