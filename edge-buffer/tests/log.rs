//! Append/read/reopen, cursors, retention, bounds and locking on real files.

mod common;

use std::time::Duration;

use common::{payload_for, read_all, segment_files, small};
use edge_buffer::{Error, FsyncPolicy, FullPolicy, Log, Options, Record};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary batches come back identical and in order, across segment rolls and reopen.
    #[test]
    fn batches_round_trip_across_rolls_and_reopen(
        batches in prop::collection::vec(
            prop::collection::vec((any::<i64>(), prop::collection::vec(any::<u8>(), 0..700)), 0..20),
            1..12),
        reopen_after in 0usize..12,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        let mut log = Log::open(dir.path(), small(FsyncPolicy::Never)).unwrap();
        for (i, batch) in batches.iter().enumerate() {
            if i == reopen_after {
                drop(log);
                log = Log::open(dir.path(), small(FsyncPolicy::Never)).unwrap();
            }
            let records: Vec<Record> = batch.iter().map(|(ts, p)| Record::new(*ts, p)).collect();
            let offsets = log.append(&records).unwrap().wait().unwrap();
            prop_assert_eq!(offsets.end - offsets.start, batch.len() as u64);
            for (o, (ts, p)) in offsets.zip(batch) {
                expected.push((o, *ts, p.clone()));
            }
        }
        let check = |log: &Log| {
            let got: Vec<_> = read_all(log, 0).into_iter().map(|r| (r.offset, r.timestamp_ms, r.payload.to_vec())).collect();
            got == expected
        };
        prop_assert!(check(&log));
        drop(log);
        let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
        prop_assert!(check(&log));
        prop_assert_eq!(log.stats().corrupt_records, 0);
        prop_assert_eq!(log.stats().next_offset, expected.len() as u64);
    }
}

#[test]
fn reader_starts_mid_log_and_offsets_are_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
    for i in 0..500u64 {
        let p = payload_for(i, 50);
        log.append(&[Record::new(i as i64, &p)])
            .unwrap()
            .wait()
            .unwrap();
    }
    assert!(
        segment_files(dir.path()).len() > 5,
        "expected several segments"
    );
    let got = read_all(&log, 321);
    assert_eq!(got.len(), 179);
    for (i, r) in got.iter().enumerate() {
        let o = 321 + i as u64;
        assert_eq!(r.offset, o);
        assert_eq!(&r.payload[..], &payload_for(o, 50)[..]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn reader_tails_appends_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap());
    let mut reader = log.reader(0).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                let p = payload_for(i, 100);
                log.append(&[Record::new(0, &p)]).unwrap().wait().unwrap();
            }
        })
    };
    let mut next = 0;
    while next < 300 {
        let batch = tokio::time::timeout(Duration::from_secs(10), reader.next_batch(64, 1 << 20))
            .await
            .expect("reader woke up")
            .unwrap();
        for r in batch {
            assert_eq!(r.offset, next);
            assert_eq!(&r.payload[..], &payload_for(next, 100)[..]);
            next += 1;
        }
    }
    writer.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn async_ticket_resolves_after_sync_and_interval_policy_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
    let range = log
        .append(&[Record::new(1, b"a"), Record::new(2, b"b")])
        .unwrap()
        .durable()
        .await
        .unwrap();
    assert_eq!(range, 0..2);
    let s = log.stats();
    assert!(s.synced_offset >= 2 && s.fsyncs >= 1, "{s:?}");
    drop(log);

    let opts = small(FsyncPolicy::Interval(Duration::from_millis(5)));
    let log = Log::open(dir.path(), opts).unwrap();
    log.append(&[Record::new(3, b"c")])
        .unwrap()
        .durable()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.stats().synced_offset < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "interval sync never happened"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn cursors_persist_and_retention_deletes_passed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(FsyncPolicy::Never)).unwrap();
    for i in 0..400u64 {
        log.append(&[Record::new(0, &payload_for(i, 100))])
            .unwrap()
            .wait()
            .unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert_eq!(log.cursor("uplink").unwrap(), None);
    log.commit("uplink", 200).unwrap();
    log.commit("audit", 350).unwrap();
    let after = segment_files(dir.path()).len();
    assert!(
        after < before,
        "retention should delete segments: {before} -> {after}"
    );
    let oldest = log.stats().oldest_offset;
    assert!(oldest <= 200 && oldest > 0, "oldest {oldest}");
    assert!(matches!(
        log.commit("bad name", 1),
        Err(Error::InvalidConsumerName(_))
    ));
    drop(log);

    let log = Log::open(dir.path(), small(FsyncPolicy::Never)).unwrap();
    assert_eq!(log.cursor("uplink").unwrap(), Some(200));
    assert_eq!(log.cursor("audit").unwrap(), Some(350));
    let first = log
        .reader_for("uplink")
        .unwrap()
        .read_batch(1, 1 << 20)
        .unwrap();
    assert_eq!(first[0].offset, 200);
    log.remove_consumer("uplink").unwrap();
    assert!(log.stats().oldest_offset > 200);
}

#[test]
fn second_open_of_a_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), Options::default()).unwrap();
    match Log::open(dir.path(), Options::default()) {
        Err(e @ Error::Locked { .. }) => assert!(e.to_string().contains("in use")),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes: 10_000,
        segment_bytes: 8192,
        ..Options::default()
    };
    assert!(matches!(
        Log::open(dir.path(), opts),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn drop_oldest_keeps_the_log_bounded_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes: 64 << 10,
        full_policy: FullPolicy::DropOldest,
        ..small(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let mut reader = log.reader(0).unwrap();
    for i in 0..3000u64 {
        log.append(&[Record::new(0, &payload_for(i, 100))])
            .unwrap()
            .wait()
            .unwrap();
        let s = log.stats();
        assert!(s.bytes_on_disk <= 64 << 10, "over max: {}", s.bytes_on_disk);
    }
    let s = log.stats();
    assert!(s.dropped_records > 2000, "{s:?}");
    assert_eq!(
        s.oldest_offset, s.dropped_records,
        "every dropped record counted exactly"
    );
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, s.bytes_on_disk);
    // A reader that was left behind skips the dropped records and says how many.
    let mut got = Vec::new();
    loop {
        let b = reader.read_batch(500, 1 << 20).unwrap();
        if b.is_empty() {
            break;
        }
        got.extend(b);
    }
    assert_eq!(got.first().unwrap().offset, s.oldest_offset);
    assert_eq!(got.last().unwrap().offset, 2999);
    assert_eq!(reader.missed(), s.oldest_offset);
    for r in &got {
        assert_eq!(&r.payload[..], &payload_for(r.offset, 100)[..]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn backpressure_refuses_when_full_and_recovers_when_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes: 64 << 10,
        full_policy: FullPolicy::Backpressure,
        ..small(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let mut accepted = 0u64;
    let err = loop {
        match log.append(&[Record::new(0, &payload_for(accepted, 100))]) {
            Ok(t) => {
                t.wait().unwrap();
                accepted += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Full { .. }), "{err}");
    assert!(accepted > 400);
    let s = log.stats();
    assert_eq!(s.dropped_records, 0);
    assert_eq!(s.full_rejections, 1);
    // Space comes back once a consumer passes whole segments.
    let waiter = log.wait_for_space(1000);
    log.commit("uplink", accepted / 2).unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("space freed");
    log.append(&[Record::new(0, &payload_for(accepted, 100))])
        .unwrap()
        .wait()
        .unwrap();
    let all = read_all(&log, 0);
    assert_eq!(all.last().unwrap().offset, accepted);
}

#[test]
fn oversized_records_and_batches_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(FsyncPolicy::Never)).unwrap();
    let big = vec![0u8; (64 << 10) + 1];
    assert!(matches!(
        log.append(&[Record::new(0, &big)]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.stats().next_offset, 0);
}

#[test]
fn stats_report_timestamps_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(FsyncPolicy::Always)).unwrap();
    assert_eq!(log.stats().oldest_timestamp_ms, None);
    log.append(&[Record::new(1000, b"x"), Record::new(2000, b"y")])
        .unwrap()
        .wait()
        .unwrap();
    let s = log.stats();
    assert_eq!(s.oldest_timestamp_ms, Some(1000));
    assert_eq!(s.newest_timestamp_ms, Some(2000));
    assert_eq!(s.records(), 2);
    assert_eq!(s.acknowledged_offset, 2);
}

/// Regression (loss campaign, disk-full): a segment dropped whole under `drop_oldest` can hold
/// records the consumer had already committed past; those were delivered, not dropped, and
/// `dropped_records` must not count them, or it overstates the loss.
#[test]
fn drop_oldest_counts_only_records_a_consumer_had_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes: 64 << 10,
        full_policy: FullPolicy::DropOldest,
        ..small(FsyncPolicy::Never)
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let append = |i: u64| {
        log.append(&[Record::new(0, &payload_for(i, 100))])
            .unwrap()
            .wait()
            .unwrap();
    };
    // The consumer is in the middle of the first segment when the log starts to fill.
    for i in 0..20 {
        append(i);
    }
    log.commit("uplink", 20).unwrap();
    assert_eq!(log.stats().segments, 1);
    for i in 20..3000 {
        append(i);
    }
    let s = log.stats();
    assert!(s.oldest_offset > 20, "{s:?}");
    assert_eq!(
        s.dropped_records,
        s.oldest_offset - 20,
        "dropped = records the consumer had not reached: {s:?}"
    );
    // The consumer's reader agrees: it misses exactly the dropped records.
    let mut reader = log.reader_for("uplink").unwrap();
    let b = reader.read_batch(1, 1 << 20).unwrap();
    assert_eq!(b[0].offset, s.oldest_offset);
    assert_eq!(reader.missed(), s.dropped_records);
}
