//! rskafka pieces of the bench: topic creation, the raw baseline producer (drain and latency),
//! and the fetch loop that measures end-to-end latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

pub async fn client(bootstrap: &str) -> Result<Client> {
    timeout(
        Duration::from_secs(20),
        ClientBuilder::new(vec![bootstrap.to_string()])
            .client_id("ironbridge-bench")
            .build(),
    )
    .await
    .context("Kafka connect timed out")?
    .context("Kafka connect")
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let c = client(bootstrap).await?;
    c.controller_client()?
        .create_topic(topic, partitions, 1, 10_000)
        .await
        .with_context(|| format!("create topic {topic}"))?;
    Ok(())
}

pub async fn partition(bootstrap: &str, topic: &str, p: i32) -> Result<PartitionClient> {
    let c = client(bootstrap).await?;
    Ok(c.partition_client(topic, p, UnknownTopicHandling::Retry)
        .await?)
}

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the gateway writes for one MQTT message: key = MQTT topic, the payload as value, and its
/// six headers (`gateway_id` + `buffer_offset` included).
pub fn gateway_like_record(mqtt_topic: &str, value: Vec<u8>, offset: u64, ms: i64) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert("mqtt_topic".to_string(), mqtt_topic.as_bytes().to_vec());
    headers.insert("mqtt_qos".to_string(), b"1".to_vec());
    headers.insert("mqtt_retain".to_string(), b"false".to_vec());
    headers.insert("mqtt_client_id".to_string(), b"bench-drain-0".to_vec());
    headers.insert("gateway_id".to_string(), b"bench-gw".to_vec());
    headers.insert("buffer_offset".to_string(), offset.to_string().into_bytes());
    Record {
        key: Some(mqtt_topic.as_bytes().to_vec()),
        value: Some(value),
        headers,
        timestamp: ts(ms),
    }
}

/// `kafka_tool.py produce`'s value: the index as 10 digits, then `x` up to `size`.
pub fn indexed_value(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{i:010}").into_bytes();
    v.resize(size.max(v.len()), b'x');
    v
}

/// The raw producer baseline: `count` gateway-like records produced to partition 0 of `topic`
/// in requests of at most `max_records` / `max_bytes` (the uplink's defaults), one request in
/// flight, lz4, acks=all. Returns the seconds from connecting to the last acknowledgement.
pub async fn produce_raw(
    bootstrap: &str,
    topic: &str,
    mqtt_topic: &str,
    count: u64,
    size: usize,
    max_records: usize,
    max_bytes: usize,
) -> Result<f64> {
    let t0 = Instant::now();
    let pc = partition(bootstrap, topic, 0).await?;
    let mut i = 0u64;
    let mut chunk = Vec::with_capacity(max_records);
    let mut bytes = 0usize;
    while i < count {
        let r = gateway_like_record(mqtt_topic, indexed_value(i, size), i, now_ms());
        // The uplink's request-size estimate.
        let rsize = r.approximate_size() + 16 + 4 * r.headers.len();
        if !chunk.is_empty() && (chunk.len() >= max_records || bytes + rsize > max_bytes) {
            let n = chunk.len();
            timeout(
                Duration::from_secs(30),
                pc.produce(
                    std::mem::replace(&mut chunk, Vec::with_capacity(n)),
                    Compression::Lz4,
                ),
            )
            .await
            .context("produce timed out")??;
            bytes = 0;
        }
        bytes += rsize;
        chunk.push(r);
        i += 1;
    }
    if !chunk.is_empty() {
        timeout(Duration::from_secs(30), pc.produce(chunk, Compression::Lz4))
            .await
            .context("produce timed out")??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Latencies measured by the fetch loop.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Microseconds from the timestamp in the value to the fetch response that carried it.
    pub samples: Vec<u64>,
    /// Microseconds from the send timestamp to the record's Kafka timestamp (the gateway's
    /// acceptance time, millisecond resolution), and from that to the fetch.
    pub to_accept: Vec<i64>,
    pub accept_to_fetch: Vec<i64>,
    pub records: u64,
    /// Fetch responses received (empty ones included) and how long the loop ran, to state its
    /// polling granularity.
    pub fetches: u64,
    /// Fetch responses without records.
    pub empty_fetches: u64,
    /// Records per non-empty response: the largest.
    pub max_per_fetch: u64,
    pub elapsed: Duration,
}

/// Fetches partition 0 of `topic` from offset 0 in a tight loop (`max_wait_ms` per empty
/// fetch) until `stop` and no more records come, computing receive − send time for every
/// record whose value starts with a send timestamp at or after `measure_from_us`.
pub async fn latency_consumer(
    pc: PartitionClient,
    max_wait_ms: i32,
    measure_from_us: u64,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Result<Latencies> {
    let mut out = Latencies::default();
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let mut offset = 0i64;
    let mut idle_since: Option<Instant> = None;
    loop {
        if Instant::now() >= deadline {
            bail!("latency consumer ran past {limit:?}");
        }
        let (recs, _) = timeout(
            Duration::from_secs(10),
            pc.fetch_records(offset, 1..4_000_000, max_wait_ms),
        )
        .await
        .context("fetch timed out")??;
        let now = now_micros();
        out.fetches += 1;
        out.max_per_fetch = out.max_per_fetch.max(recs.len() as u64);
        if recs.is_empty() {
            out.empty_fetches += 1;
            if stop.load(Ordering::Relaxed) {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
            continue;
        }
        idle_since = None;
        for r in recs {
            offset = offset.max(r.offset + 1);
            out.records += 1;
            let Some(v) = r.record.value.as_deref() else {
                continue;
            };
            if v.len() < 8 {
                continue;
            }
            let sent = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
            if sent >= measure_from_us {
                out.samples.push(now.saturating_sub(sent));
                let accepted = r.record.timestamp.timestamp_millis() * 1000;
                out.to_accept.push(accepted - sent as i64);
                out.accept_to_fetch.push(now as i64 - accepted);
            }
        }
    }
    out.elapsed = t0.elapsed();
    Ok(out)
}

/// The latency baseline: records produced straight to Kafka at `rate`/s for `duration`, batched
/// like the uplink (wait for one, linger `linger`, one request in flight), timestamp in the
/// value. Returns the number produced, the number of produce requests and their summed time.
pub async fn produce_paced(
    pc: PartitionClient,
    mqtt_topic: &str,
    size: usize,
    rate: f64,
    duration: Duration,
    linger: Duration,
) -> Result<(u64, u64, Duration)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let topic = mqtt_topic.to_string();
    let gen_task = tokio::spawn(async move {
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let mut v = Vec::with_capacity(size);
                v.extend_from_slice(&now_micros().to_be_bytes());
                v.extend_from_slice(&sent.to_be_bytes());
                v.resize(size.max(16), b'x');
                if tx
                    .send(gateway_like_record(&topic, v, sent, now_ms()))
                    .is_err()
                {
                    return sent;
                }
                sent += 1;
            }
            let next = start + Duration::from_secs_f64((sent + 1) as f64 / rate);
            tokio::time::sleep_until(next).await;
        }
        sent
    });
    let mut produced = 0u64;
    let mut requests = 0u64;
    let mut busy = Duration::ZERO;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        sleep(linger).await;
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        produced += batch.len() as u64;
        requests += 1;
        let t = Instant::now();
        timeout(Duration::from_secs(30), pc.produce(batch, Compression::Lz4))
            .await
            .context("produce timed out")??;
        busy += t.elapsed();
    }
    let generated = gen_task.await.context("generator task")?;
    if generated != produced {
        bail!("generated {generated}, produced {produced}");
    }
    Ok((produced, requests, busy))
}
