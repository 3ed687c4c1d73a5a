//! The Kafka uplink against a real Kafka-protocol broker (tansu) on 127.0.0.1, checked with an
//! independent client (confluent-kafka / librdkafka via tests/py/kafka_tool.py).
//!
//! Needs `/var/cache/ironbridge/tansu/bin/tansu` (tests/scripts/install-tansu.sh) and the venv
//! `/var/cache/ironbridge/venv` (tests/scripts/setup-python.sh); override with `IRONBRIDGE_TANSU`
//! and `IRONBRIDGE_VENV`. Without them the tests print why and pass, unless
//! `IRONBRIDGE_REQUIRE_KAFKA=1`.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use edge_buffer::{Log, Options, Record};
use ironbridge::event::Event;
use ironbridge::uplink::partitioner::partition_for_key;
use ironbridge::uplink::{
    self, RouteConfig, Unmatched, UplinkConfig, UplinkError, UplinkSnapshot, UplinkState,
    UplinkStatus, ValueFormat,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TS0: i64 = 1_700_000_000_000;

fn tansu_bin() -> PathBuf {
    std::env::var_os("IRONBRIDGE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ironbridge/tansu/bin/tansu"))
}

fn python() -> PathBuf {
    std::env::var_os("IRONBRIDGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ironbridge/venv"))
        .join("bin/python")
}

fn kafka_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/kafka_tool.py")
}

/// Whether the external pieces are there; if not, says so (and fails when they are required).
fn have_kafka() -> bool {
    let missing: Vec<String> = [tansu_bin(), python(), kafka_tool()]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("skipping Kafka uplink test: missing {}", missing.join(", "));
    if std::env::var("IRONBRIDGE_REQUIRE_KAFKA").is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("{msg}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tansu broker process, killed on drop.
struct Tansu {
    child: Child,
    port: u16,
}

impl Tansu {
    /// Starts tansu on `port` with `storage` (run in `dir`, where its log goes too).
    fn start(port: u16, storage: &str, dir: &Path) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("tansu log");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let t = Tansu { child, port };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(python())
        .arg(kafka_tool())
        .args(args)
        .output()
        .expect("run kafka_tool.py")
}

fn create_topic(bootstrap: &str, topic: &str, partitions: u32) {
    let p = partitions.to_string();
    let out = tool(&[
        "create-topic",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--partitions",
        &p,
    ]);
    assert!(
        out.status.success(),
        "create-topic {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `expect` records of `topic` from the beginning; returns them and whether the tool
/// reached `expect` before `timeout_s`.
fn consume(bootstrap: &str, topic: &str, expect: usize, timeout_s: u32) -> (Vec<Value>, bool) {
    let n = expect.to_string();
    let t = timeout_s.to_string();
    let out = tool(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--expect",
        &n,
        "--timeout",
        &t,
    ]);
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (records, out.status.success())
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .expect("base64")
}

fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["headers"][name].as_str()
}

fn offset_of(r: &Value) -> u64 {
    header(r, "buffer_offset")
        .and_then(|s| s.parse().ok())
        .expect("buffer_offset header")
}

fn open_log(dir: &Path) -> Arc<Log> {
    Arc::new(Log::open(dir.join("buffer"), Options::default()).expect("open log"))
}

async fn append(log: &Log, events: &[(i64, Event)]) {
    let encoded: Vec<(i64, Vec<u8>)> = events
        .iter()
        .map(|(ts, e)| {
            let mut buf = Vec::new();
            e.encode(&mut buf).expect("encode");
            (*ts, buf)
        })
        .collect();
    let records: Vec<Record<'_>> = encoded.iter().map(|(ts, b)| Record::new(*ts, b)).collect();
    log.append(&records)
        .expect("append")
        .durable()
        .await
        .expect("durable");
}

fn event(topic: &str, payload: &[u8]) -> Event {
    Event {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: false,
        client_id: Some("dev-1".into()),
        content_type: None,
        user_properties: vec![],
    }
}

struct Running {
    status: Arc<UplinkStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), UplinkError>>,
}

fn start_uplink(config: UplinkConfig, log: &Arc<Log>) -> Running {
    let status = Arc::new(UplinkStatus::new());
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(uplink::run(
        config,
        Arc::clone(log),
        Arc::clone(&status),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    Running { status, stop, task }
}

impl Running {
    async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        cond: impl Fn(&UplinkSnapshot) -> bool,
    ) -> UplinkSnapshot {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status.snapshot();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> UplinkSnapshot {
        let _ = self.stop.send(true);
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("uplink stops in time")
            .expect("uplink task");
        r.expect("uplink ends cleanly");
        self.status.snapshot()
    }
}

fn base_config(bootstrap: String) -> UplinkConfig {
    UplinkConfig {
        bootstrap_servers: vec![bootstrap],
        gateway_id: "gw-test".into(),
        request_timeout_ms: 5_000,
        retry_backoff_initial_ms: 100,
        retry_backoff_max_ms: 1_000,
        commit_interval_ms: 100,
        ..Default::default()
    }
}

fn route(filter: &str, topic: &str, key: &str, value: ValueFormat) -> RouteConfig {
    RouteConfig {
        name: None,
        filter: filter.into(),
        topic: topic.into(),
        key: key.into(),
        value,
    }
}

/// N events over three routes (two routes and the default topic) arrive with the right topics,
/// keys, partitions, timestamps, headers and values, in order per partition; the cursor is
/// committed; a restart resumes from the cursor without re-sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_kafka_routed_keyed_and_partitioned() {
    if !have_kafka() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(free_port(), "memory://tansu/", dir.path());
    let bs = tansu.bootstrap();
    create_topic(&bs, "telemetry", 3);
    create_topic(&bs, "alarms", 2);
    create_topic(&bs, "mqtt", 1);
    create_topic(&bs, "retained", 1);

    let log = open_log(dir.path());
    let n = 300usize;
    let mut events = Vec::new();
    for i in 0..n {
        let (topic, payload) = match i % 3 {
            0 => (
                format!("plant/line{}/temp", i % 5),
                format!("{}", 20 + i).into_bytes(),
            ),
            1 => (
                format!("alarms/press{}", i % 2),
                vec![0xff, (i % 256) as u8, 0x00],
            ),
            _ => (format!("misc/{i}"), format!("m{i}").into_bytes()),
        };
        let mut e = event(&topic, &payload);
        e.retain = i % 10 == 0;
        if i % 7 == 0 {
            e.user_properties = vec![("unit".into(), "degC".into())];
            e.content_type = Some("text/plain".into());
        }
        e.qos = (i % 3) as u8;
        events.push((TS0 + i as i64 * 10, e));
    }
    append(&log, &events[..n / 2]).await;

    let mut config = base_config(bs.clone());
    config.routes = vec![
        route("plant/+/temp", "telemetry", "{level[1]}", ValueFormat::Raw),
        route("alarms/#", "alarms", "{topic}", ValueFormat::Json),
    ];
    config.linger_ms = 20;
    config.retained_topic = Some("retained".into());
    let up = start_uplink(config.clone(), &log);
    up.wait_for("first half committed", 30, |s| {
        s.committed_offset == (n / 2) as u64
    })
    .await;
    // Live data while running.
    append(&log, &events[n / 2..]).await;
    let s = up
        .wait_for("all committed", 30, |s| s.committed_offset == n as u64)
        .await;
    assert_eq!(s.state, UplinkState::Connected);
    let retained = n.div_ceil(10);
    assert_eq!(s.forwarded_records, (n + retained) as u64);
    assert_eq!(
        s.retained_route.as_ref().map(|r| r.records),
        Some(retained as u64)
    );
    assert_eq!(s.routes[0].records, n.div_ceil(3) as u64);
    assert_eq!(s.routes[1].records, (n / 3) as u64);
    assert_eq!(s.default_route.records, (n / 3) as u64);
    assert_eq!(
        (s.dead_lettered, s.dropped_unmatched, s.lag_records),
        (0, 0, 0)
    );
    up.stop().await;
    assert_eq!(log.cursor("uplink").expect("cursor"), Some(n as u64));

    let mut seen: HashMap<u64, Value> = HashMap::new();
    for (topic, count, partitions) in [
        ("telemetry", n.div_ceil(3), 3),
        ("alarms", n / 3, 2),
        ("mqtt", n / 3, 1),
    ] {
        let (recs, ok) = consume(&bs, topic, count, 30);
        assert!(ok, "{topic}: got {} of {count}", recs.len());
        // Order per partition follows the buffer.
        let mut last: BTreeMap<i64, u64> = BTreeMap::new();
        for r in recs {
            assert_eq!(r["topic"], topic);
            let off = offset_of(&r);
            let p = r["partition"].as_i64().expect("partition");
            if let Some(prev) = last.insert(p, off) {
                assert!(prev < off, "{topic}/{p}: offset {off} after {prev}");
            }
            let key = r["key"].as_str().expect("utf8 key").to_string();
            assert_eq!(
                p,
                partition_for_key(key.as_bytes(), partitions) as i64,
                "{topic} key {key}"
            );
            assert!(
                seen.insert(off, r).is_none(),
                "buffer offset {off} delivered twice"
            );
        }
    }
    assert_eq!(seen.len(), n);
    for (i, (ts, e)) in events.iter().enumerate() {
        let r = &seen[&(i as u64)];
        assert_eq!(r["timestamp"].as_i64(), Some(*ts), "timestamp of {i}");
        assert_eq!(header(r, "mqtt_topic"), Some(e.topic.as_str()));
        assert_eq!(header(r, "mqtt_qos"), Some(e.qos.to_string().as_str()));
        let retain = if i % 10 == 0 { "true" } else { "false" };
        assert_eq!(header(r, "mqtt_retain"), Some(retain));
        assert_eq!(header(r, "mqtt_client_id"), Some("dev-1"));
        assert_eq!(header(r, "gateway_id"), Some("gw-test"));
        if i % 7 == 0 {
            assert_eq!(header(r, "unit"), Some("degC"));
            assert_eq!(header(r, "mqtt_content_type"), Some("text/plain"));
        } else {
            assert_eq!(header(r, "unit"), None);
        }
        let value = b64(&r["value"]);
        match i % 3 {
            0 => {
                assert_eq!(r["key"].as_str(), e.topic.split('/').nth(1));
                assert_eq!(value, e.payload.to_vec());
            }
            1 => {
                assert_eq!(r["key"].as_str(), Some(e.topic.as_str()));
                let env: Value = serde_json::from_slice(&value).expect("json envelope");
                assert_eq!(env["topic"], e.topic.as_str());
                assert_eq!(env["timestamp"].as_i64(), Some(*ts));
                assert_eq!(env["payload_encoding"], "base64");
                assert_eq!(b64(&env["payload"]), e.payload.to_vec());
            }
            _ => {
                assert_eq!(r["key"].as_str(), Some(e.topic.as_str()));
                assert_eq!(value, e.payload.to_vec());
            }
        }
    }

    // Retained messages also went to the retained topic, keyed by MQTT topic.
    let (recs, ok) = consume(&bs, "retained", retained, 30);
    assert!(ok, "retained: got {} of {retained}", recs.len());
    for r in &recs {
        let off = offset_of(r);
        assert_eq!(off % 10, 0);
        let e = &events[off as usize].1;
        assert_eq!(r["key"].as_str(), Some(e.topic.as_str()));
        assert_eq!(b64(&r["value"]), e.payload.to_vec());
        assert_eq!(header(r, "mqtt_retain"), Some("true"));
    }

    // A restart resumes at the cursor: only the new events are sent.
    let more: Vec<(i64, Event)> = (0..10)
        .map(|i| (TS0 + 100_000 + i, event(&format!("misc/late{i}"), b"late")))
        .collect();
    append(&log, &more).await;
    let up = start_uplink(config, &log);
    up.wait_for("restart committed", 30, |s| {
        s.committed_offset == n as u64 + 10
    })
    .await;
    let s = up.stop().await;
    assert_eq!(s.forwarded_records, 10);
    let (recs, ok) = consume(&bs, "mqtt", n / 3 + 11, 3);
    assert!(!ok, "more records than sent reached topic mqtt");
    assert_eq!(recs.len(), n / 3 + 10);
}

/// With the broker down the uplink backs off, the cursor stays put and the buffer keeps
/// accepting; once the broker is up everything is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_backs_off_and_catches_up() {
    if !have_kafka() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // Create the topic on a file-backed broker, then take it down.
    let tansu = Tansu::start(port, "sqlite://tansu.db", dir.path());
    create_topic(&tansu.bootstrap(), "readings", 2);
    drop(tansu);

    let log = open_log(dir.path());
    let mut config = base_config(format!("127.0.0.1:{port}"));
    config.unmatched = Unmatched::Drop;
    config.routes = vec![route("sensors/#", "readings", "{topic}", ValueFormat::Raw)];
    config.compression = uplink::CompressionCodec::Gzip;
    let up = start_uplink(config, &log);
    let batch1: Vec<(i64, Event)> = (0..50)
        .map(|i| {
            (
                TS0 + i,
                event(&format!("sensors/s{}", i % 4), format!("v{i}").as_bytes()),
            )
        })
        .collect();
    append(&log, &batch1).await;
    let s = up
        .wait_for("backing off", 20, |s| {
            matches!(s.state, UplinkState::BackingOff { .. }) && s.retries >= 2
        })
        .await;
    assert_eq!(s.committed_offset, 0);
    assert_eq!(s.forwarded_records, 0);
    assert!(s.last_error.is_some());
    // Keeps accepting while offline; lag is visible.
    let batch2: Vec<(i64, Event)> = (50..100)
        .map(|i| {
            (
                TS0 + i,
                event(&format!("sensors/s{}", i % 4), format!("v{i}").as_bytes()),
            )
        })
        .collect();
    append(&log, &batch2).await;
    let s = up.wait_for("lag", 5, |s| s.lag_records == 100).await;
    assert!(s.lag_oldest_age_ms.is_some());
    assert_eq!(log.cursor("uplink").expect("cursor").unwrap_or(0), 0);

    let tansu = Tansu::start(port, "sqlite://tansu.db", dir.path());
    let s = up
        .wait_for("caught up", 60, |s| s.committed_offset == 100)
        .await;
    assert_eq!(s.state, UplinkState::Connected);
    assert_eq!((s.lag_records, s.lag_oldest_age_ms), (0, None));

    // The broker goes away while the uplink holds connections to it, and comes back.
    drop(tansu);
    let batch3: Vec<(i64, Event)> = (100..150)
        .map(|i| {
            (
                TS0 + i,
                event(&format!("sensors/s{}", i % 4), format!("v{i}").as_bytes()),
            )
        })
        .collect();
    append(&log, &batch3).await;
    let s = up
        .wait_for("backing off again", 30, |s| {
            matches!(s.state, UplinkState::BackingOff { .. })
        })
        .await;
    assert_eq!(s.committed_offset, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tansu = Tansu::start(port, "sqlite://tansu.db", dir.path());
    let s = up
        .wait_for("caught up again", 60, |s| s.committed_offset == 150)
        .await;
    assert_eq!(s.state, UplinkState::Connected);
    up.stop().await;

    let (recs, ok) = consume(&tansu.bootstrap(), "readings", 150, 30);
    assert!(ok, "got {} of 150", recs.len());
    let mut offsets: Vec<u64> = recs.iter().map(offset_of).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets, (0..150).collect::<Vec<u64>>());
    // Per MQTT topic (= key) the order of the buffer holds.
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in &recs {
        let key = r["key"].as_str().expect("key").to_string();
        let off = offset_of(r);
        if let Some(prev) = last.insert(key.clone(), off) {
            assert!(prev < off, "{key}: {off} after {prev}");
        }
    }
}

/// Records too large for `max_record_bytes`, and records for a topic the cluster does not have,
/// are dead-lettered (counted, skipped, committed); everything else flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_unknown_topic_records_are_dead_lettered() {
    if !have_kafka() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(free_port(), "memory://tansu/", dir.path());
    let bs = tansu.bootstrap();
    create_topic(&bs, "good", 1);
    let log = open_log(dir.path());
    let mut config = base_config(bs.clone());
    config.max_record_bytes = 10_000;
    config.unmatched = Unmatched::Drop;
    config.routes = vec![
        route("good/#", "good", "{topic}", ValueFormat::Raw),
        route("ghost/#", "no-such-topic", "{topic}", ValueFormat::Raw),
    ];
    let mut events = Vec::new();
    for i in 0..40i64 {
        let e = match i % 4 {
            0 => event("good/big", &vec![b'x'; 20_000]),
            1 => event("ghost/a", b"lost"),
            2 => event("other/dropped", b"dropped"),
            _ => event("good/small", format!("ok{i}").as_bytes()),
        };
        events.push((TS0 + i, e));
    }
    append(&log, &events).await;
    let up = start_uplink(config, &log);
    let s = up
        .wait_for("all committed", 30, |s| s.committed_offset == 40)
        .await;
    let s2 = up.stop().await;
    eprintln!("status: {s2:#?}");
    assert_eq!(s.forwarded_records, 10);
    assert_eq!(s.dropped_unmatched, 10);
    let (recs, ok) = consume(&bs, "good", 10, 30);
    assert!(ok, "got {} of 10", recs.len());
    assert!(
        recs.iter()
            .all(|r| header(r, "mqtt_topic") == Some("good/small"))
    );
    // tansu may create topics on request (like auto.create.topics.enable): then the ghost
    // records are delivered there instead of dead-lettered.
    let ghost_delivered = s2.routes[1].records;
    assert_eq!(s.dead_lettered + ghost_delivered, 20, "{s:#?}");
    assert!(s.dead_lettered >= 10);
    let dl = s.last_dead_letter.expect("last dead letter");
    assert!(
        dl.reason.contains("max_record_bytes") || dl.reason.contains("no-such-topic"),
        "{dl:?}"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `kafka.test` and a client certificate, as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ironbridge-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "/CN=kafka.test",
            "subjectAltName=DNS:kafka.test\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "/CN=gw-test", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extf), ext).expect("ext file");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }
}

/// A socat TLS terminator (client certificate required) in front of a plain port.
struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mutual TLS with a custom CA and a verified name other than the dialled address; records
/// reach Kafka zstd-compressed. A wrong CA shows as an error state and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_custom_ca() {
    if !have_kafka() {
        return;
    }
    if Command::new("socat").arg("-V").output().is_err()
        || Command::new("openssl").arg("version").output().is_err()
    {
        eprintln!("skipping TLS test: socat or openssl missing");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path();
    make_pki(pki);
    let (plain, tls) = (free_port(), free_port());
    // Create the topic while served in plain, on file-backed storage.
    let t = Tansu::start(plain, "sqlite://tansu.db", pki);
    create_topic(&t.bootstrap(), "secure", 2);
    drop(t);
    // tansu 0.6 does not terminate TLS itself: it listens in plain and advertises the TLS port.
    let url = |p: u16| format!("tcp://127.0.0.1:{p}");
    let log_file = std::fs::File::create(pki.join("tansu.log")).expect("log");
    let mut tansu = Command::new(tansu_bin())
        .args([
            "broker",
            "--listener-url",
            &url(plain),
            "--advertised-listener-url",
            &url(tls),
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(pki)
        .stdout(log_file.try_clone().expect("fd"))
        .stderr(log_file)
        .spawn()
        .expect("tansu");
    let socat = Socat(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,cafile=ca.pem,verify=1"
            ))
            .arg(format!("TCP:127.0.0.1:{plain}"))
            .current_dir(pki)
            .stderr(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in [plain, tls] {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(Instant::now() < deadline, "port {p} not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let log = open_log(pki);
    append(
        &log,
        &(0..20i64)
            .map(|i| (TS0 + i, event(&format!("secure/{}", i % 3), b"s")))
            .collect::<Vec<_>>(),
    )
    .await;

    // Wrong CA: the handshake fails, the state says so, nothing is committed.
    let other = tempfile::tempdir().expect("tempdir");
    make_pki(other.path());
    let mut config = base_config(format!("127.0.0.1:{tls}"));
    config.default_topic = "secure".into();
    config.compression = uplink::CompressionCodec::Zstd;
    config.tls = uplink::TlsConfig {
        enabled: true,
        ca_file: Some(other.path().join("ca.pem")),
        cert_file: Some(pki.join("client.pem")),
        key_file: Some(pki.join("client.key")),
        server_name: Some("kafka.test".into()),
    };
    let up = start_uplink(config.clone(), &log);
    let s = up
        .wait_for("tls error", 20, |s| {
            matches!(s.state, UplinkState::Error { .. })
        })
        .await;
    assert_eq!(s.committed_offset, 0);
    let s = up.stop().await;
    assert!(
        s.last_error
            .is_some_and(|e| e.message.to_lowercase().contains("certificate"))
    );

    // The right CA: delivered over mutual TLS.
    config.tls.ca_file = Some(pki.join("ca.pem"));
    let up = start_uplink(config, &log);
    let s = up
        .wait_for("delivered over TLS", 30, |s| {
            s.committed_offset == 20 || s.dead_lettered > 0
        })
        .await;
    up.stop().await;
    assert_eq!((s.forwarded_records, s.dead_lettered), (20, 0), "{s:#?}");
    drop(socat);
    let _ = tansu.kill();
    let _ = tansu.wait();

    // Check with the independent client, on the same data served in plain.
    let tansu = Tansu::start(plain, "sqlite://tansu.db", pki);
    let (recs, ok) = consume(&tansu.bootstrap(), "secure", 20, 30);
    assert!(ok, "got {} of 20", recs.len());
    assert!(
        recs.iter()
            .all(|r| header(r, "gateway_id") == Some("gw-test"))
    );
}

/// A backlog (as after an outage) is caught up in big batches; prints the rate.
/// `IRONBRIDGE_UPLINK_BENCH_N` sets the number of records (default 20000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_catch_up_rate() {
    if !have_kafka() {
        return;
    }
    let n: usize = std::env::var("IRONBRIDGE_UPLINK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(free_port(), "memory://tansu/", dir.path());
    let bs = tansu.bootstrap();
    create_topic(&bs, "backlog", 4);
    let log = open_log(dir.path());
    let payload = vec![b'7'; 100];
    for chunk in 0..n.div_ceil(1000) {
        let events: Vec<(i64, Event)> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                (
                    TS0 + i as i64,
                    event(&format!("plant/m{}/v", i % 50), &payload),
                )
            })
            .collect();
        append(&log, &events).await;
    }
    let mut config = base_config(bs.clone());
    config.default_topic = "backlog".into();
    let start = Instant::now();
    let up = start_uplink(config, &log);
    let s = up
        .wait_for("backlog committed", 300, |s| s.committed_offset == n as u64)
        .await;
    let secs = start.elapsed().as_secs_f64();
    up.stop().await;
    eprintln!(
        "uplink catch-up: {n} records ({} bytes) in {secs:.2}s = {:.0} records/s, {} produce requests",
        s.forwarded_bytes,
        n as f64 / secs,
        s.produce_requests
    );
    let (recs, ok) = consume(&bs, "backlog", n, 120);
    assert!(ok, "got {} of {n}", recs.len());
}

/// An idle uplink connects eagerly and notices when the broker goes away (for /healthz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uplink_reports_broker_reachability() {
    if !have_kafka() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(free_port(), "memory://tansu/", dir.path());
    let log = open_log(dir.path());
    let mut config = base_config(tansu.bootstrap());
    config.metadata_refresh_ms = 300;
    let up = start_uplink(config, &log);
    let s = up
        .wait_for("connected while idle", 20, |s| {
            s.state == UplinkState::Connected
        })
        .await;
    assert!(s.is_healthy());
    drop(tansu);
    let s = up
        .wait_for("broker loss noticed", 20, |s| {
            matches!(s.state, UplinkState::BackingOff { .. })
        })
        .await;
    assert!(!s.is_healthy());
    up.stop().await;
}

/// Many small requests in flight at once to one partition (the backlog in one batch, 4 KiB
/// requests, five in flight): the leader takes them in order — tansu checks the idempotent
/// producer's sequence numbers, so an overtaking request would be refused and show up as a
/// producer reset — and every record arrives once, in buffer order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_arrive_once_and_in_order() {
    if !have_kafka() {
        return;
    }
    let n = 6_000usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(free_port(), "memory://tansu/", dir.path());
    let bs = tansu.bootstrap();
    create_topic(&bs, "pipelined", 1);
    let log = open_log(dir.path());
    let payload = vec![b'p'; 100];
    let events: Vec<(i64, Event)> = (0..n)
        .map(|i| (TS0 + i as i64, event("plant/pipe/v", &payload)))
        .collect();
    append(&log, &events).await;
    let config = UplinkConfig {
        default_topic: "pipelined".into(),
        batch_max_records: n,
        batch_max_bytes: 64 << 20,
        max_request_bytes: 4096,
        max_in_flight_requests: 5,
        ..base_config(bs.clone())
    };
    let up = start_uplink(config, &log);
    up.wait_for("all committed", 120, |s| s.committed_offset == n as u64)
        .await;
    let s = up.stop().await;
    assert!(
        s.produce_requests >= (n / 20) as u64,
        "small requests: {} for {n} records",
        s.produce_requests
    );
    assert_eq!(
        (
            s.forwarded_records,
            s.producer_resets,
            s.duplicates_suppressed
        ),
        (n as u64, 0, 0),
        "{s:#?}"
    );
    let (recs, ok) = consume(&bs, "pipelined", n, 120);
    assert!(ok && recs.len() == n, "got {} of {n}", recs.len());
    let offsets: Vec<u64> = recs.iter().map(offset_of).collect();
    assert_eq!(
        offsets,
        (0..n as u64).collect::<Vec<_>>(),
        "once each, in buffer order"
    );
}
