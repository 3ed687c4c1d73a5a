//! The tansu harness against the real broker, verified with the independent confluent-kafka client.
//! What these tests pin down is summarised in `tests/TANSU.md`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use ironbridge_e2e::{External, KafkaTool, ProduceOptions, Record, Storage, Tansu, require};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];

/// The index each `kafka_tool.py produce` value starts with.
fn index(r: &Record) -> Result<u64> {
    let v = r.value.as_deref().context("null value")?;
    let digits = v.get(..10).context("value shorter than 10 bytes")?;
    std::str::from_utf8(digits)?
        .parse()
        .context("value does not start with an index")
}

#[tokio::test]
async fn produce_and_consume_with_key_and_headers() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("headers", 3).await?;
    let stats = kafka
        .produce(
            "headers",
            &ProduceOptions {
                count: 20,
                size: 64,
                key: Some("plant/line1/temp".into()),
                headers: vec![
                    ("gateway_id".into(), "gw-1".into()),
                    ("mqtt_qos".into(), "1".into()),
                    ("empty".into(), String::new()),
                ],
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(stats.count, 20);

    let records = kafka.consume("headers", Some(20)).await?;
    assert_eq!(records.len(), 20);
    // One key: one partition, in order, offsets from 0.
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "one key must map to one partition");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(index(r)?, i as u64);
        assert_eq!(r.value.as_ref().map(Vec::len), Some(64));
        assert_eq!(r.key_str(), Some("plant/line1/temp"));
        assert_eq!(r.header_str("gateway_id"), Some("gw-1"));
        assert_eq!(r.header_str("mqtt_qos"), Some("1"));
        assert_eq!(r.header("empty"), Some(&b""[..]));
        assert_eq!(r.headers.len(), 3);
        assert!(r.timestamp > 1_600_000_000_000, "timestamp {}", r.timestamp);
    }
    Ok(())
}

#[tokio::test]
async fn create_topic_with_partitions_and_produce_to_each() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("four", 4).await?;
    // Creating it again with the same partition count is fine for the tool.
    kafka.create_topic("four", 4).await?;
    for p in 0..4 {
        kafka
            .produce(
                "four",
                &ProduceOptions {
                    count: 5,
                    partition: Some(p),
                    ..Default::default()
                },
            )
            .await?;
    }
    let records = kafka.consume("four", Some(20)).await?;
    for p in 0..4 {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4], "partition {p}");
    }
    // Consuming to the end (no --expect) returns the same records.
    assert_eq!(kafka.consume("four", None).await?.len(), 20);
    Ok(())
}

#[tokio::test]
async fn compression_codecs_on_memory_engine() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        kafka.create_topic(&topic, 1).await?;
        // linger so that records share compressed batches.
        kafka
            .produce(
                &topic,
                &ProduceOptions {
                    count: 200,
                    size: 300,
                    compression: codec.into(),
                    linger_ms: 50,
                    headers: vec![("codec".into(), codec.into())],
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("produce {codec}"))?;
        let records = kafka
            .consume(&topic, Some(200))
            .await
            .with_context(|| format!("consume {codec}"))?;
        let indexes: Vec<u64> = records.iter().map(index).collect::<Result<_>>()?;
        assert_eq!(indexes, (0..200).collect::<Vec<_>>(), "{codec}");
        assert!(records.iter().all(|r| r.header_str("codec") == Some(codec)));
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_engine_keeps_records_across_restart() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("durable", 2).await?;
    let opts = ProduceOptions {
        count: 30,
        key: Some("k".into()),
        compression: "lz4".into(),
        ..Default::default()
    };
    kafka.produce("durable", &opts).await?;

    tansu.restart().await?;
    assert_eq!(kafka.consume("durable", Some(30)).await?.len(), 30);

    // A crash (SIGKILL) loses nothing that was acknowledged either.
    kafka.produce("durable", &opts).await?;
    tansu.kill().await?;
    tansu.restart().await?;
    let records = kafka.consume("durable", Some(60)).await?;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..60).collect::<Vec<_>>());
    Ok(())
}

/// Throughput of the independent producer against tansu: a baseline to compare the gateway's uplink with.
/// Bounded (20 000 records of 200 bytes); prints the numbers.
#[tokio::test]
async fn baseline_produce_throughput() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("bench", 1).await?;
    let stats = kafka
        .produce(
            "bench",
            &ProduceOptions {
                count: 20_000,
                size: 200,
                compression: "lz4".into(),
                linger_ms: 10,
                ..Default::default()
            },
        )
        .await?;
    eprintln!(
        "baseline: confluent-kafka -> tansu (memory, acks=all, lz4): {} records x 200 B in {:.3} s = {:?} rec/s",
        stats.count, stats.elapsed_s, stats.records_per_s
    );
    assert_eq!(stats.count, 20_000);
    Ok(())
}

/// Three produce calls of 50 records each, one batch per call (flush sends at once; linger keeps each
/// call in one batch).
async fn three_batches_of_50(kafka: &KafkaTool, topic: &str, compression: &str) -> Result<()> {
    kafka.create_topic(topic, 1).await?;
    for _ in 0..3 {
        kafka
            .produce(
                topic,
                &ProduceOptions {
                    count: 50,
                    compression: compression.into(),
                    linger_ms: 1000,
                    ..Default::default()
                },
            )
            .await?;
    }
    Ok(())
}

/// Pins tansu 0.6.0's memory-engine quirks (TANSU.md): the high watermark is the last batch's base
/// offset + 1, and a fetch starting inside a batch skips the rest of that batch.
#[tokio::test]
async fn memory_engine_quirks_are_as_documented() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    three_batches_of_50(&kafka, "quirks", "none").await?;
    let offsets = kafka.offsets("quirks").await?;
    assert_eq!((offsets[0].low, offsets[0].high), (0, 101), "watermarks");
    assert_eq!(kafka.consume("quirks", None).await?.len(), 150);
    // From a batch boundary: fine.
    let from_50 = kafka.consume_from("quirks", Some(50), None).await?;
    assert_eq!(from_50.first().map(|r| r.offset), Some(50));
    assert_eq!(from_50.len(), 100);
    // From inside a batch: the rest of that batch (60..=99) is skipped.
    let from_60 = kafka.consume_from("quirks", Some(60), None).await?;
    assert_eq!(from_60.first().map(|r| r.offset), Some(100));
    assert_eq!(from_60.len(), 50);
    Ok(())
}

/// The SQLite engine has neither memory-engine quirk; snappy batches are stored but cannot be fetched.
#[tokio::test]
async fn sqlite_engine_offsets_and_codecs() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let mut kafka = KafkaTool::new(tansu.bootstrap());
    three_batches_of_50(&kafka, "exact", "none").await?;
    let offsets = kafka.offsets("exact").await?;
    assert_eq!((offsets[0].low, offsets[0].high), (0, 150), "watermarks");
    let from_60 = kafka.consume_from("exact", Some(60), None).await?;
    let got: Vec<i64> = from_60.iter().map(|r| r.offset).collect();
    assert_eq!(got, (60..150).collect::<Vec<_>>());

    for codec in ["gzip", "lz4", "zstd"] {
        let topic = format!("sqlite-{codec}");
        three_batches_of_50(&kafka, &topic, codec).await?;
        let records = kafka.consume(&topic, Some(150)).await?;
        let indexes: Vec<u64> = records.iter().map(index).collect::<Result<_>>()?;
        assert_eq!(
            indexes,
            (0..50).cycle().take(150).collect::<Vec<_>>(),
            "{codec}"
        );
    }

    three_batches_of_50(&kafka, "sqlite-snappy", "snappy").await?;
    kafka.timeout = std::time::Duration::from_secs(5);
    let snappy = kafka.consume("sqlite-snappy", Some(150)).await;
    assert!(
        snappy.is_err(),
        "snappy fetch on sqlite works now: update TANSU.md"
    );
    assert!(tansu.log().contains("UnexpectedType(\"Snappy\")"));
    Ok(())
}

/// A port clash makes tansu log the error, panic and exit 0; the harness must still report it.
#[tokio::test]
async fn start_on_a_taken_port_reports_the_clash() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let err = match Tansu::start_on(port, Storage::Memory).await {
        Ok(_) => anyhow::bail!("tansu started on a taken port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("Address already in use"), "{err}");
    assert!(err.contains("exited during start"), "{err}");
    Ok(())
}
