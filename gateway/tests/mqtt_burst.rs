//! A burst of 20 000 QoS 1 messages from four publishers: every one is in the buffer, in order
//! per publisher; and with a full buffer under backpressure publishers wait, nothing is lost.

mod mqtt_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edge_buffer::{FullPolicy, Options};
use ironbridge::mqtt::MqttConfig;
use mqtt_common::*;

async fn burst(port: &str, publishers: usize, per: usize, size: usize) {
    let mut runs = Vec::new();
    for p in 0..publishers {
        let port = port.to_string();
        runs.push(tokio::spawn(async move {
            let pad = "x".repeat(size);
            let lines: String = (0..per).map(|i| format!("{p}:{i}:{pad}\n")).collect();
            let version = if p % 2 == 0 { "mqttv311" } else { "mqttv5" };
            let id = format!("burst-{p}");
            let topic = format!("burst/{p}");
            pub_ok(
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-q",
                    "1",
                    "-t",
                    &topic,
                    "-i",
                    &id,
                    "-l",
                ],
                Some(lines.as_bytes()),
            )
            .await;
        }));
    }
    for r in runs {
        r.await.expect("publisher");
    }
}

fn check_order(
    events: &[(edge_buffer::StoredRecord, ironbridge::event::Event)],
    publishers: usize,
    per: usize,
) {
    let mut next: HashMap<usize, usize> = HashMap::new();
    for (_, ev) in events {
        let text = std::str::from_utf8(&ev.payload).expect("utf-8");
        let mut parts = text.splitn(3, ':');
        let p: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("publisher");
        let i: usize = parts.next().and_then(|s| s.parse().ok()).expect("seq");
        let want = next.entry(p).or_default();
        assert_eq!(i, *want, "publisher {p} out of order or missing");
        *want += 1;
        assert_eq!(ev.topic, format!("burst/{p}"));
    }
    assert_eq!(next.len(), publishers);
    assert!(next.values().all(|&n| n == per));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_qos1_none_missed() {
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let t = Instant::now();
    burst(&b.port(), 4, 5000, 16).await;
    let events = read_events(&b.log, 20_000, Duration::from_secs(60)).await;
    let took = t.elapsed();
    check_order(&events, 4, 5000);
    let s = b.handle.stats().snapshot();
    assert_eq!(
        (s.publishes_received, s.publishes_appended, s.append_errors),
        (20_000, 20_000, 0)
    );
    let ls = b.log.stats();
    eprintln!(
        "20000 QoS1 msgs in {took:?}; {} append batches, {} fsyncs, durable wait avg {} us max {} us",
        s.durable_batches,
        ls.fsyncs,
        s.durable_wait_micros_total / s.durable_batches.max(1),
        s.durable_wait_micros_max
    );
    b.handle.stop().await;
}

/// The slowest disk is a full one: with the backpressure policy and a consumer that frees
/// space slowly, publishers are held (no PUBACK) and every message still arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_backpressure_loses_nothing() {
    let opts = Options {
        max_bytes: 64 << 10,
        segment_bytes: 16 << 10,
        full_policy: FullPolicy::Backpressure,
        ..Options::default()
    };
    let b = start_with(
        MqttConfig {
            allow_anonymous: true,
            ..config()
        },
        opts,
    )
    .await;
    // A slow consumer: registered before publishing so that retention waits for it.
    b.log.commit("slow", 0).expect("register consumer");
    let log = b.log.clone();
    let stats = b.handle.stats();
    let consumer = tokio::spawn(async move {
        // Consume nothing until publishers are held by the full buffer.
        until("the buffer to fill", Duration::from_secs(30), || {
            stats.snapshot().backpressure_waits > 0
        })
        .await;
        let mut reader = log.reader_for("slow").expect("reader");
        let mut got = Vec::new();
        while got.len() < 3000 {
            let batch =
                tokio::time::timeout(Duration::from_secs(60), reader.next_batch(100, 1 << 20))
                    .await
                    .expect("records keep coming")
                    .expect("read");
            if let Some(last) = batch.last() {
                log.commit("slow", last.offset + 1).expect("commit");
            }
            for r in batch {
                got.push((
                    r.clone(),
                    ironbridge::event::Event::decode(&r.payload).expect("decode"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got
    });
    burst(&b.port(), 2, 1500, 100).await;
    let events = consumer.await.expect("consumer");
    check_order(&events, 2, 1500);
    let s = b.handle.stats().snapshot();
    assert!(s.backpressure_waits > 0, "the buffer never filled: {s:?}");
    assert_eq!(
        (s.publishes_appended, b.log.stats().dropped_records),
        (3000, 0)
    );
    b.handle.stop().await;
}
