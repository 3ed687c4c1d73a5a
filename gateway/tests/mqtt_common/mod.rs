//! Shared helpers for the MQTT integration tests: an in-process endpoint on 127.0.0.1 with a
//! temporary buffer, mosquitto client runs, and reading events back from the buffer.
#![allow(dead_code)]

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_buffer::{Log, Options, StoredRecord};
use ironbridge::event::Event;
use ironbridge::mqtt::{self, BrokerHandle, MqttConfig};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub struct TestBroker {
    pub handle: BrokerHandle,
    pub log: Arc<Log>,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub fn port(&self) -> String {
        self.handle.tcp_addr().port().to_string()
    }
}

/// A config listening on a free loopback port, with topic rules that also grant the topics
/// closed by default (Sparkplug commands and host state, `$custom/...`), so these tests can
/// publish them. The default rules have their own tests (ACL suite).
pub fn config() -> MqttConfig {
    let rule: ironbridge_broker::acl::AclRule = serde_json::from_value(serde_json::json!({
        "users": ["*", "$anonymous"],
        "action": "all",
        "permission": "allow",
        "topics": ["#", "spBv1.0/STATE/#", "spBv1.0/+/NCMD/#", "spBv1.0/+/DCMD/#", "$custom/#"],
    }))
    .expect("rule");
    MqttConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        acl: vec![rule],
        ..MqttConfig::default()
    }
}

pub async fn start(cfg: MqttConfig) -> TestBroker {
    start_with(cfg, Options::default()).await
}

pub async fn start_with(cfg: MqttConfig, opts: Options) -> TestBroker {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path().join("buffer"), opts).expect("open log"));
    let handle = mqtt::start(cfg, log.clone()).await.expect("broker starts");
    TestBroker { handle, log, dir }
}

/// Runs a mosquitto client to completion (30 s at most), feeding `stdin` if given.
pub async fn run(bin: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} not runnable (apt-get install mosquitto-clients): {e}"));
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(data).await.expect("stdin");
        drop(w);
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} timed out"))
        .expect("wait")
}

pub async fn pub_ok(args: &[&str], stdin: Option<&[u8]>) {
    let out = run("mosquitto_pub", args, stdin).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads records from offset 0 until `n` have arrived (panics after `within`).
pub async fn read_events(log: &Log, n: usize, within: Duration) -> Vec<(StoredRecord, Event)> {
    let mut reader = log.reader(0).expect("reader");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = match tokio::time::timeout(left, reader.next_batch(10_000, 8 << 20)).await {
            Ok(b) => b.expect("read"),
            Err(_) => panic!("only {} of {n} records arrived", out.len()),
        };
        for r in batch {
            let ev = Event::decode(&r.payload).expect("event decodes");
            out.push((r, ev));
        }
    }
    out
}

/// Waits until `cond` holds (panics after `within`), polling every 10 ms.
pub async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn payload(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
