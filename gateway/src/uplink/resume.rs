//! Resume without resending: what this gateway already wrote to a partition, read from the
//! partition's tail (the argument is in the uplink README, "Resume").
//!
//! Each run of the uplink writes a partition in buffer-offset order, sending a record only once
//! every earlier record for that partition was acknowledged (or dead-lettered), and starts at
//! the committed cursor, below which everything was acknowledged. So if the last record of
//! this gateway in the partition carries buffer offset L, every record up to L routed there is
//! in the partition. The last one, not the highest: after a resend without this check the log
//! may read 1, 2, 3, 1, 2, and trusting 3 is only safe because 3 happens to be there too; the
//! last is safe whatever came before it (a wiped buffer restarting at offset 0 included).

use std::time::Duration;

use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::Record;
use tokio::time::{Instant, timeout};

use super::partitioner::partition_for_key;

/// What the tail of a partition proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// This gateway's records up to this buffer offset are in the partition (`None`: none
    /// are). Records after it may be there too (a resend), but are not proven.
    Proven(Option<u64>),
    /// The tail cannot prove what is there: send everything (at-least-once).
    Unproven(String),
}

/// Folds the records of a partition's tail, oldest first, into a [`Tail`].
pub(crate) struct TailScan<'a> {
    gateway_id: &'a [u8],
    partition: i32,
    partitions: i32,
    last: Option<u64>,
    doubt: Option<String>,
}

impl<'a> TailScan<'a> {
    pub(crate) fn new(gateway_id: &'a str, partition: i32, partitions: i32) -> Self {
        TailScan {
            gateway_id: gateway_id.as_bytes(),
            partition,
            partitions,
            last: None,
            doubt: None,
        }
    }

    pub(crate) fn add(&mut self, r: &Record) {
        if self.doubt.is_some()
            || r.headers.get("gateway_id").map(Vec::as_slice) != Some(self.gateway_id)
        {
            return;
        }
        let Some(offset) = r
            .headers
            .get("buffer_offset")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.doubt = Some("a record of this gateway without a buffer_offset header".into());
            return;
        };
        // Where the uplink puts this record now: if the partition count or the keys changed
        // since it was written, order per partition says nothing about the records in between.
        let key = match (&r.key, r.headers.get("mqtt_topic")) {
            (Some(k), _) => k.as_slice(),
            (None, Some(t)) => t.as_slice(),
            (None, None) => &[],
        };
        if partition_for_key(key, self.partitions) != self.partition {
            self.doubt = Some(format!(
                "record at buffer offset {offset} would now go to another partition (partition count or key changed)"
            ));
            return;
        }
        self.last = Some(offset);
    }

    /// What the records added prove on their own: `None` if none of them was ours.
    fn outcome(self) -> Option<Tail> {
        match (self.doubt, self.last) {
            (Some(d), _) => Some(Tail::Unproven(d)),
            (None, Some(last)) => Some(Tail::Proven(Some(last))),
            (None, None) => None,
        }
    }

    /// `reached_start`: the records added cover the partition from its first record on.
    pub(crate) fn finish(self, reached_start: bool) -> Tail {
        self.outcome().unwrap_or_else(|| {
            if reached_start {
                Tail::Proven(None)
            } else {
                Tail::Unproven(
                    "no record of this gateway among the partition's last records (scan window too small for other writers, or older ones expired)".into(),
                )
            }
        })
    }
}

/// The first stretch read from a partition's end; each further one is this many times larger.
/// Usually our last record is among the very last ones, so a restart reads little.
const FIRST_STRETCH: u64 = 64;
const STRETCH_GROWTH: u64 = 8;

/// Reads the partition backwards from its end, in growing stretches, until a stretch holds a
/// record of this gateway (the last of ours in it is the last in the partition), the
/// partition's start, or `window` records in all.
pub(crate) async fn scan(
    pc: &PartitionClient,
    gateway_id: &str,
    partitions: i32,
    window: u64,
    limit: Duration,
) -> Result<Tail, String> {
    let deadline = Instant::now() + limit;
    let left = || deadline.saturating_duration_since(Instant::now());
    let late = || format!("reading the partition's tail took longer than {limit:?}");
    let high = timeout(left(), pc.get_offset(OffsetAt::Latest))
        .await
        .map_err(|_| late())?
        .map_err(|e| format!("reading the high watermark: {e}"))?;
    let low = timeout(left(), pc.get_offset(OffsetAt::Earliest))
        .await
        .map_err(|_| late())?
        .map_err(|e| format!("reading the low watermark: {e}"))?;
    let window = i64::try_from(window).unwrap_or(i64::MAX);
    let floor = low.max(high.saturating_sub(window));
    let mut end = high;
    let mut stretch = FIRST_STRETCH as i64;
    while end > floor {
        let start = floor.max(end - stretch);
        let mut judge = TailScan::new(gateway_id, pc.partition(), partitions);
        let mut next = start;
        // Each fetch returns at least one record while next < end; the bound is a safety net.
        let mut fetches = 0i64;
        while next < end {
            fetches += 1;
            if fetches > end - start + 16 {
                return Err(format!(
                    "reading the tail made no progress at offset {next}"
                ));
            }
            let (records, _) = timeout(left(), pc.fetch_records(next, 1..4 * 1_048_576, 100))
                .await
                .map_err(|_| late())?
                .map_err(|e: KafkaError| format!("reading the partition's tail: {e}"))?;
            let before = next;
            for r in records {
                if r.offset >= next && r.offset < end {
                    judge.add(&r.record);
                    next = r.offset + 1;
                }
            }
            if next == before {
                // Nothing at `next` (compacted away, or a control record): move on.
                next += 1;
            }
        }
        if let Some(tail) = judge.outcome() {
            return Ok(tail);
        }
        end = start;
        stretch = stretch.saturating_mul(STRETCH_GROWTH as i64);
    }
    Ok(TailScan::new(gateway_id, pc.partition(), partitions).finish(floor == low))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rec(gw: &str, offset: &str, key: Option<&str>) -> Record {
        let mut headers = BTreeMap::new();
        headers.insert("gateway_id".to_string(), gw.as_bytes().to_vec());
        headers.insert("buffer_offset".to_string(), offset.as_bytes().to_vec());
        headers.insert("mqtt_topic".to_string(), b"line/1".to_vec());
        Record {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: None,
            headers,
            timestamp: chrono::DateTime::from_timestamp_millis(0).unwrap_or_default(),
        }
    }

    /// The partition where `key` (or the MQTT topic "line/1") goes among 4.
    fn home(key: Option<&str>) -> i32 {
        partition_for_key(key.unwrap_or("line/1").as_bytes(), 4)
    }

    #[test]
    fn last_offset_of_this_gateway_only() {
        let p = home(Some("k"));
        let mut s = TailScan::new("gw1", p, 4);
        for r in [
            rec("gw1", "10", Some("k")),
            rec("gw2", "99", Some("k")),
            rec("gw1", "12", Some("k")),
            rec("gw2", "100", Some("k")),
        ] {
            s.add(&r);
        }
        assert_eq!(s.finish(false), Tail::Proven(Some(12)));
        // A resend of 10 after 12 (a crash without this check): only 10 is proven.
        let mut s = TailScan::new("gw1", p, 4);
        for r in [
            rec("gw1", "10", Some("k")),
            rec("gw1", "12", Some("k")),
            rec("gw1", "10", Some("k")),
        ] {
            s.add(&r);
        }
        assert_eq!(s.finish(false), Tail::Proven(Some(10)));
    }

    #[test]
    fn keyless_records_are_placed_by_their_mqtt_topic() {
        let mut s = TailScan::new("gw1", home(None), 4);
        s.add(&rec("gw1", "5", None));
        assert_eq!(s.finish(false), Tail::Proven(Some(5)));
    }

    #[test]
    fn nothing_of_ours_proves_nothing_unless_the_whole_partition_was_read() {
        let s = TailScan::new("gw1", 0, 4);
        assert_eq!(s.finish(true), Tail::Proven(None));
        let mut s = TailScan::new("gw1", 0, 4);
        s.add(&rec("other", "1", Some("k")));
        assert!(matches!(s.finish(false), Tail::Unproven(_)));
    }

    #[test]
    fn a_changed_partition_layout_is_not_trusted() {
        let p = home(Some("k"));
        let mut s = TailScan::new("gw1", p, 4);
        s.add(&rec("gw1", "3", Some("k")));
        // The same key lands elsewhere among 4 partitions: it was written under another layout.
        let mut other = TailScan::new("gw1", (p + 1) % 4, 4);
        other.add(&rec("gw1", "3", Some("k")));
        assert_eq!(s.finish(false), Tail::Proven(Some(3)));
        assert!(
            matches!(other.finish(false), Tail::Unproven(m) if m.contains("another partition"))
        );
    }

    #[test]
    fn a_record_without_buffer_offset_is_not_trusted() {
        let mut r = rec("gw1", "1", Some("k"));
        r.headers.remove("buffer_offset");
        let mut s = TailScan::new("gw1", home(Some("k")), 4);
        s.add(&r);
        assert!(matches!(s.finish(true), Tail::Unproven(_)));
    }
}
