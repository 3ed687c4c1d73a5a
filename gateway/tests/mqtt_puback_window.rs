//! Measures when a QoS 1 PUBACK reaches the publisher relative to the durable append of the
//! same message, for the gateway's broker (PUBACK.md has the figures, and those of the rumqttd
//! local-link tap this design replaced).
//!
//! `cargo test -p ironbridge --test mqtt_puback_window -- --ignored --nocapture`

mod mqtt_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_buffer::Log;
use ironbridge::mqtt::MqttConfig;
use mqtt_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const N: usize = 500;

type Seen = Arc<Mutex<HashMap<u32, Instant>>>;

/// Records when each message (payload = its number) becomes readable, i.e. durable. On its
/// own thread and runtime so that the observer lags the fsync as little as possible.
fn watch_durable(log: Arc<Log>) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    std::thread::spawn(move || {
        rt.block_on(async move {
            let mut reader = log.reader(0).expect("reader");
            loop {
                let Ok(batch) = reader.next_batch(1000, 1 << 20).await else {
                    return;
                };
                let now = Instant::now();
                for r in batch {
                    // The last 4 bytes of the record are the message number in both setups.
                    let p = &r.payload[r.payload.len() - 4..];
                    let i = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    s.lock().expect("lock").insert(i, now);
                }
            }
        })
    });
    seen
}

/// A minimal MQTT 3.1.1 publisher: CONNECT, then N QoS 1 publishes one at a time.
async fn publish_sequentially(addr: SocketAddr) -> Vec<Instant> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let id = b"window";
    let mut connect = vec![
        0x10,
        (10 + 2 + id.len()) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        60,
        0,
        id.len() as u8,
    ];
    connect.extend_from_slice(id);
    s.write_all(&connect).await.expect("send connect");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.expect("connack");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let topic = b"window/t";
    let mut acked = Vec::with_capacity(N);
    for i in 0..N as u32 {
        let pkid = (i % 60000 + 1) as u16;
        let mut p = vec![0x32, (2 + topic.len() + 2 + 4) as u8, 0, topic.len() as u8];
        p.extend_from_slice(topic);
        p.extend_from_slice(&pkid.to_be_bytes());
        p.extend_from_slice(&i.to_be_bytes());
        s.write_all(&p).await.expect("publish");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.expect("puback");
        acked.push(Instant::now());
        assert_eq!(ack, [0x40, 2, (pkid >> 8) as u8, pkid as u8]);
    }
    acked
}

fn report(name: &str, acked: &[Instant], seen: &Seen) {
    let seen = seen.lock().expect("lock");
    // Positive: PUBACK arrived after the append was durable. Negative: before.
    let mut w: Vec<i64> = (0..N)
        .map(|i| {
            let d = seen[&(i as u32)];
            let a = acked[i];
            if a >= d {
                (a - d).as_micros() as i64
            } else {
                -((d - a).as_micros() as i64)
            }
        })
        .collect();
    w.sort_unstable();
    let before = w.iter().filter(|&&x| x < 0).count();
    println!(
        "{name}: PUBACK minus durable (us): min {} p50 {} p99 {} max {}; acked before durable: {before}/{N}",
        w[0],
        w[N / 2],
        w[N * 99 / 100],
        w[N - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn puback_vs_durable_append() {
    // 1. The gateway front end.
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let seen = watch_durable(b.log.clone());
    let acked = publish_sequentially(b.handle.tcp_addr()).await;
    until("all durable", Duration::from_secs(10), || {
        seen.lock().expect("lock").len() == N
    })
    .await;
    report("front end (ironbridge)", &acked, &seen);
    b.handle.stop().await;
}
