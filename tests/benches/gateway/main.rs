//! Gateway benchmark: the `ironbridge` daemon, end to end on 127.0.0.1, each figure next to a
//! baseline measured in the same run.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/ironbridge-target
//! cargo bench -p ironbridge-e2e --bench gateway             # full, ~10 min on 2 cores
//! cargo bench -p ironbridge-e2e --bench gateway -- --quick  # ~2 min
//! ```
//!
//! Options after `--`: `--quick`, `--only ingest,drain,latency,rss,recovery,size,fanout,idle,soak`,
//! `--dir DIR` (state and buffers; default `/var/tmp`), `--bin PATH` (daemon binary; default:
//! builds `cargo build --release -p ironbridge` and uses `<target>/release/ironbridge`),
//! `--no-build`.
//! The soak runs only when named: `--only soak [--soak-minutes 30] [--soak-rate 5000] [--out DIR]`
//! (default `docs/soak/`: `soak.csv`, `soak.svg`, `SUMMARY.md`).
//!
//! 1. Ingest: MQTT 3.1.1 QoS 1, 100 B payloads, 8 publishers with 128 unacknowledged publishes
//!    each, PUBACKs per second — ironbridge (fsync always, then interval) vs mosquitto, same
//!    load generator (`load.rs`).
//! 2. Drain: a backlog filled with the uplink off, then a restart with Kafka configured, timed
//!    until `/api/status` shows every record forwarded — vs rskafka and confluent-kafka producing
//!    the same records to a fresh tansu (memory engine) each. Counts verified by confluent-kafka.
//! 3. Latency: MQTT publish → record fetchable from Kafka at a steady 10k msg/s, timestamp in
//!    the payload, an rskafka fetch loop as consumer — vs rskafka producing directly (linger 5 ms
//!    like the uplink).
//! 4. Peak RSS (VmHWM) of the daemon holding, then draining, a large backlog; binary size.
//! 5. Recovery: restart after `kill -9` while writing a large backlog, until the daemon serves —
//!    vs the same restart with an empty buffer.
//! 6. Soak (`soak.rs`): a steady rate for half an hour with periodic outages, sampled and plotted.

mod daemon;
mod fanout;
mod kafka;
mod load;
mod mosq;
mod soak;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::{External, FaultProxy, KafkaTool, Mode, ProduceOptions, Storage, Tansu};
use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};

use daemon::{Daemon, DaemonConfig, num};
use load::{Limit, Load, LoadSpec, Payload};

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    dir: PathBuf,
    bin: Option<PathBuf>,
    build: bool,
    soak_minutes: u64,
    soak_rate: f64,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut o = Opts {
            quick: false,
            only: None,
            dir: PathBuf::from("/var/tmp"),
            bin: std::env::var_os("IRONBRIDGE_BIN").map(PathBuf::from),
            build: true,
            soak_minutes: 30,
            soak_rate: 5_000.0,
            out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/soak"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--only" => {
                    let v = args.next().context("--only needs a list")?;
                    o.only = Some(v.split(',').map(str::to_string).collect());
                }
                "--dir" => o.dir = PathBuf::from(args.next().context("--dir needs a path")?),
                "--bin" => o.bin = Some(PathBuf::from(args.next().context("--bin needs a path")?)),
                "--no-build" => o.build = false,
                "--soak-minutes" => {
                    o.soak_minutes = args.next().context("--soak-minutes needs N")?.parse()?;
                }
                "--soak-rate" => {
                    o.soak_rate = args.next().context("--soak-rate needs msg/s")?.parse()?;
                }
                "--out" => o.out = PathBuf::from(args.next().context("--out needs a path")?),
                // `cargo bench` passes --bench; libtest-style filters are ignored too.
                _ => {}
            }
        }
        Ok(o)
    }

    /// Every part runs by default except the soak, which runs only when named in `--only`.
    fn wants(&self, part: &str) -> bool {
        match &self.only {
            Some(v) => v.iter().any(|p| p == part),
            None => part != "soak",
        }
    }
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    ingest_rounds: usize,
    ingest_warmup: Duration,
    ingest_measure: Duration,
    drain_records: u64,
    latency_rate: f64,
    latency_rounds: usize,
    latency_run: Duration,
    latency_warmup: Duration,
    rss_backlog: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                ingest_rounds: 1,
                ingest_warmup: Duration::from_secs(1),
                ingest_measure: Duration::from_secs(4),
                drain_records: 100_000,
                latency_rate: 10_000.0,
                latency_rounds: 1,
                latency_run: Duration::from_secs(8),
                latency_warmup: Duration::from_secs(2),
                rss_backlog: 128 * MIB,
            }
        } else {
            Plan {
                ingest_rounds: 3,
                ingest_warmup: Duration::from_secs(2),
                ingest_measure: Duration::from_secs(8),
                drain_records: 1_000_000,
                latency_rate: 10_000.0,
                latency_rounds: 3,
                latency_run: Duration::from_secs(12),
                latency_warmup: Duration::from_secs(2),
                rss_backlog: 1 << 30,
            }
        }
    }
}

/// One line of the result table.
struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: String,
    goal: String,
}

struct Bench {
    opts: Opts,
    plan: Plan,
    bin: PathBuf,
    rows: Vec<Row>,
    notes: Vec<String>,
}

const INGEST_CONNS: usize = 8;
const INGEST_WINDOW: usize = 128;
const PAYLOAD: usize = 100;
/// Live traffic while a backlog drains (`drain_with_live`), messages per second.
const LIVE_RATE: f64 = 2_000.0;

/// The latency consumer's `max_wait_ms` per fetch.
const LATENCY_MAX_WAIT_MS: i32 = 1;

/// Publishes the gateway appended since start (what the latency consumer must see).
async fn load_sent_total(d: &Daemon) -> Result<u64> {
    Ok(num(&d.status().await?, "/buffer/next_offset"))
}

fn main() -> Result<()> {
    let opts = Opts::parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let soak = if opts.wants("soak") {
            Duration::from_secs(opts.soak_minutes * 60 + 10 * 60)
        } else {
            Duration::ZERO
        };
        let limit = soak
            + if opts.quick {
                Duration::from_secs(8 * 60)
            } else {
                Duration::from_secs(30 * 60)
            };
        tokio::select! {
            r = timeout(limit, run(opts)) => r.with_context(|| format!("bench exceeded its {limit:?} limit"))?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; child processes are killed"),
            _ = sigterm() => bail!("terminated; child processes are killed"),
        }
    })
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn run(opts: Opts) -> Result<()> {
    for tool in [External::Tansu, External::PythonVenv, External::Mosquitto] {
        if !tool.path().is_file() {
            bail!(
                "{tool:?} not found at {}: run `sudo tests/scripts/install-deps.sh`",
                tool.path().display()
            );
        }
    }
    let bin = daemon_binary(&opts).await?;
    let plan = Plan::new(opts.quick);
    let started = Instant::now();
    let mut b = Bench {
        opts,
        plan,
        bin,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    let load_before = loadavg();
    if b.opts.wants("ingest") {
        b.ingest().await.context("ingest")?;
    }
    if b.opts.wants("drain") {
        b.drain().await.context("drain")?;
        b.drain_with_live()
            .await
            .context("drain with live traffic")?;
    }
    if b.opts.wants("latency") {
        b.latency().await.context("latency")?;
    }
    if b.opts.wants("rss") {
        b.rss().await.context("rss")?;
    }
    if b.opts.wants("recovery") {
        b.recovery().await.context("recovery")?;
    }
    if b.opts.wants("size") {
        b.size().await.context("binary size")?;
    }
    if b.opts.wants("fanout") {
        b.fanout().await.context("fanout")?;
    }
    if b.opts.wants("idle") {
        b.idle().await.context("idle memory")?;
    }
    if b.opts.wants("soak") {
        b.soak().await.context("soak")?;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Gateway bench ({} run, {:.0} s; load average {} before, {} after; {})\n",
        if b.opts.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        load_before,
        loadavg(),
        source_version().await
    );
    let _ = writeln!(
        out,
        "| measurement | ironbridge | baseline | ratio | goal |\n|---|---|---|---|---|"
    );
    for r in &b.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.what, r.ours, r.baseline, r.ratio, r.goal
        );
    }
    if !b.notes.is_empty() {
        let _ = writeln!(out);
        for n in &b.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    println!("{out}");
    Ok(())
}

/// The commit the daemon was built from, and whether its sources had local changes.
async fn source_version() -> String {
    let git = |args: &'static [&'static str]| async move {
        Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(args)
            .output()
            .await
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).await;
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "../gateway",
        "../edge-buffer",
    ])
    .await
    .is_some_and(|s| !s.is_empty());
    match head {
        Some(h) if dirty => format!("daemon from {h} + uncommitted changes"),
        Some(h) => format!("daemon from {h}"),
        None => "daemon version unknown".into(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[gateway bench] {}", msg.as_ref());
}

/// The daemon binary: `--bin`/`IRONBRIDGE_BIN`, else a fresh `cargo build --release -p ironbridge`.
async fn daemon_binary(opts: &Opts) -> Result<PathBuf> {
    if let Some(b) = &opts.bin {
        if !b.is_file() {
            bail!("daemon binary {} not found", b.display());
        }
        return Ok(b.clone());
    }
    // This bench runs from <target>/release/deps/.
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .context("bench executable location")?
        .to_path_buf();
    let bin = release.join("ironbridge");
    if opts.build {
        progress("cargo build --release -p ironbridge");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = release.parent().context("target dir")?;
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "ironbridge"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .await
            .context("run cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p ironbridge failed ({status})");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release -p ironbridge` or pass --bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn percentile_u32(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1e3)
}

fn kps(v: f64) -> String {
    format!("{:.0} msg/s", v)
}

/// A scratch directory below `--dir`, removed on drop.
fn scratch(opts: &Opts, what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("ironbridge-bench-{what}-"))
        .tempdir_in(&opts.dir)
        .with_context(|| format!("temp dir in {}", opts.dir.display()))
}

/// Prometheus sample value from `/metrics`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn kafka_table(bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        "[kafka]\nbootstrap_servers = [\"{bootstrap}\"]\ndefault_topic = \"{topic}\"\n{extra}\n"
    )
}

/// Counts a topic's records with the independent client (confluent-kafka).
async fn py_count(bootstrap: &str, topic: &str, expect: u64) -> Result<(u64, u64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kafka_count.py");
    let mut cmd = Command::new(External::PythonVenv.path());
    cmd.arg(script)
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .arg("--expect")
        .arg(expect.to_string())
        .args(["--timeout", "180"]);
    daemon::die_with_parent(&mut cmd);
    let out = ironbridge_e2e::process::run(&mut cmd, Duration::from_secs(200)).await?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("kafka_count output")?;
    Ok((
        num(&v, "/records"),
        num(&v, "/distinct_ids"),
        v.pointer("/elapsed_s")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
    ))
}

impl Bench {
    fn daemon_cfg(&self, fsync: &'static str, max_bytes: u64, extra: String) -> DaemonConfig {
        DaemonConfig {
            fsync,
            max_bytes,
            extra,
        }
    }

    /// PUBACKs per second over `measure` after `warmup`, for the broker at `addr`.
    /// Also returns publish → PUBACK percentiles over the measured period.
    async fn ingest_rate(&self, addr: std::net::SocketAddr, who: &str) -> Result<(f64, String)> {
        self.publish_for(addr, who, None)
            .await
            .map(|(r, _, d)| (r, d))
    }

    /// Publishes for warm-up + measure, as fast as the windows allow or at `rate`; returns
    /// acks/s, the sorted publish → PUBACK times (µs) and a summary of them.
    async fn publish_for(
        &self,
        addr: std::net::SocketAddr,
        who: &str,
        rate: Option<f64>,
    ) -> Result<(f64, Vec<u32>, String)> {
        let load = Load::start(LoadSpec {
            addr,
            conns: INGEST_CONNS,
            window: if rate.is_some() { 4096 } else { INGEST_WINDOW },
            topic: "plant/bench/ingest/{conn}".into(),
            client_prefix: format!("bench-{who}"),
            payload: Payload::Indexed { size: PAYLOAD },
            rate,
            limit: Limit::Open,
        })
        .await?;
        sleep(self.plan.ingest_warmup).await;
        let (a0, t0) = (load.acked(), Instant::now());
        load.time_acks_from_now();
        sleep(self.plan.ingest_measure).await;
        let (a1, t1) = (load.acked(), Instant::now());
        let lat = load.ack_latencies();
        load.stop(Duration::from_secs(30)).await?;
        let q = |p: f64| percentile_u32(&lat, p);
        let summary = format!(
            "PUBACK p50 {} p99 {} max {}",
            ms(q(0.5)),
            ms(q(0.99)),
            ms(q(1.0))
        );
        Ok(((a1 - a0) as f64 / (t1 - t0).as_secs_f64(), lat, summary))
    }

    async fn ingest_ironbridge(&self, fsync: &'static str) -> Result<(f64, String)> {
        let dir = scratch(&self.opts, "ingest")?;
        let mut d = Daemon::start(
            &self.bin,
            dir.path(),
            &self.daemon_cfg(fsync, 4 << 30, String::new()),
        )
        .await?;
        let rate = self.ingest_rate(d.mqtt, &format!("ib-{fsync}")).await;
        let metrics = d
            .get("/metrics")
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let st = d.status().await.ok();
        let _ = d.stop().await;
        let (rate, acks) = rate.with_context(|| format!("ironbridge log:\n{}", d.log_tail()))?;
        let fsyncs = metric(&metrics, "ironbridge_buffer_fsyncs_total");
        let fsync_s = metric(&metrics, "ironbridge_buffer_fsync_seconds_total");
        let appended = st.as_ref().map_or(0, |s| num(s, "/buffer/next_offset"));
        let detail = format!(
            "{acks}; {appended} records, {fsyncs:.0} fsyncs ({:.0} records/fsync, {:.2} ms mean fsync)",
            appended as f64 / fsyncs.max(1.0),
            fsync_s * 1e3 / fsyncs.max(1.0)
        );
        Ok((rate, detail))
    }

    async fn ingest(&mut self) -> Result<()> {
        let extra = std::env::var("BENCH_MOSQ_EXTRA")
            .unwrap_or_default()
            .replace("\\n", "\n");
        let mosq = mosq::Broker::start(&extra).await?;
        let addr = mosq.addr;
        let (mut m, mut a, mut i) = (Vec::new(), Vec::new(), Vec::new());
        let mut details = Vec::new();
        for round in 0..self.plan.ingest_rounds {
            // Rotate the order so that drift in the machine's load hits every contender.
            for k in 0..3 {
                match (k + round) % 3 {
                    0 => {
                        progress(format!("ingest round {}: mosquitto", round + 1));
                        let (r, acks) = self.ingest_rate(addr, "mosq").await?;
                        details.push(format!("mosquitto: {r:.0} msg/s, {acks}"));
                        m.push(r);
                    }
                    1 => {
                        progress(format!(
                            "ingest round {}: ironbridge fsync=always",
                            round + 1
                        ));
                        let (r, d) = self.ingest_ironbridge("always").await?;
                        details.push(format!("ironbridge always: {r:.0} msg/s, {d}"));
                        a.push(r);
                    }
                    _ => {
                        progress(format!(
                            "ingest round {}: ironbridge fsync=interval",
                            round + 1
                        ));
                        let (r, d) = self.ingest_ironbridge("interval").await?;
                        details.push(format!("ironbridge interval: {r:.0} msg/s, {d}"));
                        i.push(r);
                    }
                }
            }
        }
        // Acceptance latency at a steady 10k msg/s: publish → PUBACK.
        progress("ingest: publish → PUBACK at 10k msg/s, mosquitto");
        let (_, mosq_lat, _) = self.publish_for(addr, "mosq-paced", Some(10_000.0)).await?;
        drop(mosq);
        progress("ingest: publish → PUBACK at 10k msg/s, ironbridge fsync=always");
        let ib_lat = {
            let dir = scratch(&self.opts, "ingest")?;
            let mut d = Daemon::start(
                &self.bin,
                dir.path(),
                &self.daemon_cfg("always", 4 << 30, String::new()),
            )
            .await?;
            let r = self.publish_for(d.mqtt, "ib-paced", Some(10_000.0)).await;
            let _ = d.stop().await;
            r.with_context(|| format!("ironbridge log:\n{}", d.log_tail()))?
                .1
        };
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (x, y) = (percentile_u32(&ib_lat, p), percentile_u32(&mosq_lat, p));
            self.rows.push(Row {
                what: format!(
                    "accept latency: publish → PUBACK at 10 000 msg/s ({INGEST_CONNS} publishers, {PAYLOAD} B), fsync=always: {label}"
                ),
                ours: ms(x),
                baseline: format!("mosquitto 2.0: {}", ms(y)),
                ratio: format!("{:.2}× (ours/baseline time)", x as f64 / y.max(1) as f64),
                goal: "-".into(),
            });
        }
        let all = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.notes.push(format!(
            "ingest samples (msg/s) — mosquitto: {}; ironbridge always: {}; interval: {}",
            all(&m),
            all(&a),
            all(&i)
        ));
        for d in details {
            self.notes.push(format!("ingest {d}"));
        }
        let (m, a, i) = (median(&mut m), median(&mut a), median(&mut i));
        let what = format!(
            "ingest: MQTT 3.1.1 QoS 1, {PAYLOAD} B, {INGEST_CONNS} publishers × {INGEST_WINDOW} in flight, PUBACKs/s (median of {})",
            self.plan.ingest_rounds
        );
        self.rows.push(Row {
            what: format!("{what}, fsync=always"),
            ours: kps(a),
            baseline: format!("mosquitto 2.0: {}", kps(m)),
            ratio: format!("{:.2}×", a / m),
            goal: "≥ 1.0×".into(),
        });
        self.rows.push(Row {
            what: format!("{what}, fsync=interval (10 ms)"),
            ours: kps(i),
            baseline: format!("mosquitto 2.0: {}", kps(m)),
            ratio: format!("{:.2}×", i / m),
            goal: "(context)".into(),
        });
        Ok(())
    }

    async fn drain(&mut self) -> Result<()> {
        let n = self.plan.drain_records;
        let mqtt_topic = "plant/bench/drain";
        let dir = scratch(&self.opts, "drain")?;
        // Fill with the uplink off. fsync=interval only to fill faster; it is not measured.
        progress(format!("drain: filling the buffer with {n} records"));
        let cfg = self.daemon_cfg("interval", 4 << 30, String::new());
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        let fill_t = Instant::now();
        let load = Load::start(LoadSpec {
            addr: d.mqtt,
            conns: INGEST_CONNS,
            window: 256,
            topic: mqtt_topic.into(),
            client_prefix: "bench-drain".into(),
            payload: Payload::Indexed { size: PAYLOAD },
            rate: None,
            limit: Limit::Count(n),
        })
        .await?;
        load.finish(Duration::from_secs(600)).await?;
        let fill_s = fill_t.elapsed().as_secs_f64();
        let st = d.status().await?;
        let records = num(&st, "/buffer/next_offset");
        let bytes = num(&st, "/buffer/bytes");
        d.stop().await?;
        if records != n {
            bail!("buffer holds {records} records after publishing {n}");
        }

        // The gateway: restart with Kafka configured, time until everything is forwarded.
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "drain", 1).await?;
        progress(format!(
            "drain: ironbridge forwarding {n} records ({:.0} MB buffer)",
            bytes as f64 / MB
        ));
        let cfg = self.daemon_cfg(
            "always",
            4 << 30,
            kafka_table(&tansu.bootstrap(), "drain", ""),
        );
        let t0 = Instant::now();
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        let started_s = t0.elapsed().as_secs_f64();
        let mut first = None;
        let deadline = t0 + Duration::from_secs(if self.opts.quick { 120 } else { 600 });
        let last = loop {
            let st = d.status().await?;
            let fwd = num(&st, "/uplink/forwarded_records");
            if fwd > 0 && first.is_none() {
                first = Some(t0.elapsed().as_secs_f64());
            }
            if fwd >= n && num(&st, "/uplink/lag_records") == 0 {
                break st;
            }
            if Instant::now() >= deadline {
                bail!(
                    "drain not finished after {:?}: {fwd} of {n} forwarded; status {st}\n{}",
                    deadline - t0,
                    d.log_tail()
                );
            }
            sleep(Duration::from_millis(20)).await;
        };
        let gw_s = t0.elapsed().as_secs_f64();
        let vm_hwm = d.vm_hwm().unwrap_or(0);
        d.stop().await?;
        let requests = num(&last, "/uplink/produce_requests");
        let dead = num(&last, "/uplink/dead_lettered");
        let (got, distinct, _) = py_count(&tansu.bootstrap(), "drain", n).await?;
        drop(tansu);
        if got != n || distinct != n || dead != 0 {
            bail!(
                "gateway drain: Kafka has {got} records ({distinct} distinct) of {n}; {dead} dead-lettered"
            );
        }

        // rskafka alone, same records, same batching.
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "drain", 1).await?;
        progress("drain: rskafka baseline");
        let rs_s = kafka::produce_raw(
            &tansu.bootstrap(),
            "drain",
            mqtt_topic,
            n,
            PAYLOAD,
            10_000,
            1_000_000,
        )
        .await?;
        let (rs_got, _, _) = py_count(&tansu.bootstrap(), "drain", n).await?;
        drop(tansu);

        // confluent-kafka (librdkafka), same sizes, key and header names.
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "drain", 1).await?;
        progress("drain: confluent-kafka baseline");
        let mut tool = KafkaTool::new(tansu.bootstrap());
        tool.timeout = Duration::from_secs(300);
        let py_wall = Instant::now();
        let stats = tool
            .produce(
                "drain",
                &ProduceOptions {
                    count: n,
                    size: PAYLOAD,
                    compression: "lz4".into(),
                    acks: "all".into(),
                    key: Some(mqtt_topic.into()),
                    headers: vec![
                        ("mqtt_topic".into(), mqtt_topic.into()),
                        ("mqtt_qos".into(), "1".into()),
                        ("mqtt_retain".into(), "false".into()),
                        ("mqtt_client_id".into(), "bench-drain-0".into()),
                        ("gateway_id".into(), "bench-gw".into()),
                        ("buffer_offset".into(), "123456".into()),
                    ],
                    partition: Some(0),
                    linger_ms: 5,
                },
            )
            .await?;
        let py_wall = py_wall.elapsed().as_secs_f64();
        let (py_got, _, _) = py_count(&tansu.bootstrap(), "drain", n).await?;
        drop(tansu);
        if rs_got != n || py_got != n {
            bail!("baselines: rskafka left {rs_got}, confluent-kafka {py_got} records of {n}");
        }
        let py_s = stats.elapsed_s;

        let what = format!(
            "drain: {n} × {PAYLOAD} B backlog → tansu (memory), 1 partition, lz4, acks=all; time to all forwarded"
        );
        let rate = |s: f64| format!("{:.1} s ({:.0} rec/s)", s, n as f64 / s);
        self.rows.push(Row {
            what: what.clone(),
            ours: rate(gw_s),
            baseline: format!("rskafka alone: {}", rate(rs_s)),
            ratio: format!("{:.2}×", rs_s / gw_s),
            goal: "≥ 0.8×".into(),
        });
        self.rows.push(Row {
            what,
            ours: rate(gw_s),
            baseline: format!("confluent-kafka: {}", rate(py_s)),
            ratio: format!("{:.2}×", py_s / gw_s),
            goal: "≥ 0.8×".into(),
        });
        self.notes.push(format!(
            "drain: fill {fill_s:.1} s ({:.0} msg/s, fsync=interval, uplink off), buffer {:.0} MB; \
             gateway time counts from spawning the daemon (status answering after {started_s:.2} s, \
             first record acknowledged by Kafka after {:.2} s) to /api/status showing all {n} forwarded \
             (polled every 20 ms); {requests} produce requests; {got} records / {distinct} distinct \
             (gateway_id, buffer_offset) in Kafka per confluent-kafka; daemon VmHWM {:.1} MB",
            n as f64 / fill_s,
            bytes as f64 / MB,
            first.unwrap_or(0.0),
            vm_hwm as f64 / MB
        ));
        self.notes.push(format!(
            "drain baselines: rskafka time counts from connecting to the last ack (records built \
             in the loop, same key/value/6 headers, requests ≤ 10 000 records / 1 MB, one in flight); \
             confluent-kafka time is kafka_tool.py's own elapsed_s (first produce to flush, linger 5 ms, \
             default in-flight pipelining; constant buffer_offset header), {py_wall:.1} s with Python \
             start-up; counts verified: {rs_got} and {py_got}"
        ));
        Ok(())
    }

    /// Fills a fresh buffer in `dir` with `n` records on `mqtt_topic`, uplink off. Returns the
    /// seconds it took and the buffer's size in bytes.
    async fn fill_backlog(&self, dir: &Path, n: u64, mqtt_topic: &str) -> Result<(f64, u64)> {
        // fsync=interval only to fill faster; it is not measured.
        let cfg = self.daemon_cfg("interval", 4 << 30, String::new());
        let mut d = Daemon::start(&self.bin, dir, &cfg).await?;
        let t = Instant::now();
        let load = Load::start(LoadSpec {
            addr: d.mqtt,
            conns: INGEST_CONNS,
            window: 256,
            topic: mqtt_topic.into(),
            client_prefix: "bench-fill".into(),
            payload: Payload::Indexed { size: PAYLOAD },
            rate: None,
            limit: Limit::Count(n),
        })
        .await?;
        load.finish(Duration::from_secs(600)).await?;
        let fill_s = t.elapsed().as_secs_f64();
        let st = d.status().await?;
        d.stop().await?;
        let records = num(&st, "/buffer/next_offset");
        if records != n {
            bail!("buffer holds {records} records after publishing {n}");
        }
        Ok((fill_s, num(&st, "/buffer/bytes")))
    }

    /// Live traffic at `LIVE_RATE` into a gateway whose uplink starts with a backlog of
    /// `backlog` records (0: none), for as long as the backlog takes to drain (at least
    /// `min_run`). Returns publish→PUBACK and publish→fetchable-in-Kafka latencies of the live
    /// messages (µs, sorted), the seconds until the backlog was forwarded, and a note.
    async fn live_round(
        &self,
        backlog: u64,
        min_run: Duration,
    ) -> Result<(Vec<u32>, Vec<u64>, f64, String)> {
        let dir = scratch(&self.opts, "drain-live")?;
        if backlog > 0 {
            self.fill_backlog(dir.path(), backlog, "plant/bench/drain")
                .await?;
        }
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "drain", 1).await?;
        kafka::create_topic(&tansu.bootstrap(), "live", 1).await?;
        let pc = kafka::partition(&tansu.bootstrap(), "live", 0).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = tokio::spawn(kafka::latency_consumer(
            pc,
            LATENCY_MAX_WAIT_MS,
            0,
            stop.clone(),
            Duration::from_secs(600),
        ));
        let routes = "[[kafka.routes]]\nfilter = \"plant/bench/live/#\"\ntopic = \"live\"\n";
        let cfg = self.daemon_cfg(
            "always",
            4 << 30,
            kafka_table(&tansu.bootstrap(), "drain", routes),
        );
        let t0 = Instant::now();
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        let load = Load::start(LoadSpec {
            addr: d.mqtt,
            conns: 2,
            window: 4096,
            topic: "plant/bench/live/{conn}".into(),
            client_prefix: "bench-live".into(),
            payload: Payload::Timestamped { size: PAYLOAD },
            rate: Some(LIVE_RATE),
            limit: Limit::Open,
        })
        .await?;
        load.time_acks_from_now();
        let deadline = t0 + Duration::from_secs(if self.opts.quick { 120 } else { 600 });
        let drained_s = loop {
            let st = d.status().await?;
            let fwd = num(&st, "/uplink/forwarded_records");
            if fwd >= backlog && num(&st, "/uplink/lag_records") == 0 || backlog == 0 {
                break t0.elapsed().as_secs_f64();
            }
            if Instant::now() >= deadline {
                bail!("drain with live traffic not finished: {fwd} forwarded; status {st}");
            }
            sleep(Duration::from_millis(20)).await;
        };
        if let Some(rest) = (t0 + min_run).checked_duration_since(Instant::now()) {
            sleep(rest).await;
        }
        let acks = load.ack_latencies();
        load.stop(Duration::from_secs(30)).await?;
        let sent = load_sent_total(&d).await?;
        let wait = Instant::now() + Duration::from_secs(60);
        let st = loop {
            let st = d.status().await?;
            if num(&st, "/uplink/forwarded_records") >= sent || Instant::now() >= wait {
                break st;
            }
            sleep(Duration::from_millis(20)).await;
        };
        d.stop().await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let lat = consumer.await.context("consumer task")??;
        drop(tansu);
        let live = sent - backlog;
        if lat.records != live {
            bail!("live consumer saw {} of {live} live records", lat.records);
        }
        let mut e2e = lat.samples;
        e2e.sort_unstable();
        let note = format!(
            "{live} live messages, {} produce requests, {} forwarded",
            num(&st, "/uplink/produce_requests"),
            num(&st, "/uplink/forwarded_records")
        );
        Ok((acks, e2e, drained_s, note))
    }

    /// Live traffic while a backlog drains, against the same live traffic with no backlog.
    async fn drain_with_live(&mut self) -> Result<()> {
        let n = self.plan.drain_records;
        progress(format!(
            "drain with live traffic: {LIVE_RATE:.0} msg/s while {n} records drain"
        ));
        let (acks, e2e, drained_s, note) = self.live_round(n, Duration::ZERO).await?;
        let run = Duration::from_secs_f64(drained_s.max(3.0));
        progress(format!(
            "drain with live traffic: the same live traffic alone for {run:?}"
        ));
        let (acks0, e2e0, _, note0) = self.live_round(0, run).await?;
        let q32 = |v: &[u32], p: f64| percentile_u32(v, p);
        let what = format!(
            "live traffic ({LIVE_RATE:.0} msg/s, {PAYLOAD} B, QoS 1) while a {n}-record backlog drains"
        );
        self.rows.push(Row {
            what: format!("{what}: publish → PUBACK p99"),
            ours: ms(q32(&acks, 0.99)),
            baseline: format!("same traffic, no backlog: {}", ms(q32(&acks0, 0.99))),
            ratio: format!(
                "{:.2}× (ours/baseline time)",
                q32(&acks, 0.99) as f64 / q32(&acks0, 0.99).max(1) as f64
            ),
            goal: "-".into(),
        });
        self.rows.push(Row {
            what: format!("{what}: publish → fetchable in Kafka p99"),
            ours: ms(percentile(&e2e, 0.99)),
            baseline: format!("same traffic, no backlog: {}", ms(percentile(&e2e0, 0.99))),
            ratio: format!(
                "{:.2}× (ours/baseline time)",
                percentile(&e2e, 0.99) as f64 / percentile(&e2e0, 0.99).max(1) as f64
            ),
            goal: "-".into(),
        });
        self.notes.push(format!(
            "drain with live traffic: backlog forwarded {drained_s:.1} s after spawning the daemon \
             ({:.0} rec/s, live records included); live publish→PUBACK p50/p99/max {}/{}/{} (no \
             backlog: {}/{}/{}); live publish→fetchable p50/p99/max {}/{}/{} (no backlog: \
             {}/{}/{}); one buffer, one cursor: live records queue behind the backlog; {note}; \
             no backlog: {note0}",
            n as f64 / drained_s,
            ms(q32(&acks, 0.5)),
            ms(q32(&acks, 0.99)),
            ms(q32(&acks, 1.0)),
            ms(q32(&acks0, 0.5)),
            ms(q32(&acks0, 0.99)),
            ms(q32(&acks0, 1.0)),
            ms(percentile(&e2e, 0.5)),
            ms(percentile(&e2e, 0.99)),
            ms(percentile(&e2e, 1.0)),
            ms(percentile(&e2e0, 0.5)),
            ms(percentile(&e2e0, 0.99)),
            ms(percentile(&e2e0, 1.0)),
        ));
        Ok(())
    }

    /// One latency run against a fresh tansu: the gateway (`gateway = true`) or rskafka
    /// producing directly. Returns the consumer's measurements and a note.
    async fn latency_round(&self, gateway: bool) -> Result<(kafka::Latencies, String)> {
        let p = self.plan;
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "lat", 1).await?;
        let pc = kafka::partition(&tansu.bootstrap(), "lat", 0).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let from = kafka::now_micros() + p.latency_warmup.as_micros() as u64;
        let consumer = tokio::spawn(kafka::latency_consumer(
            pc,
            LATENCY_MAX_WAIT_MS,
            from,
            stop.clone(),
            p.latency_run + Duration::from_secs(60),
        ));
        let (expected, note) = if gateway {
            let dir = scratch(&self.opts, "latency")?;
            let cfg = self.daemon_cfg(
                "always",
                4 << 30,
                kafka_table(&tansu.bootstrap(), "lat", ""),
            );
            let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
            let load = Load::start(LoadSpec {
                addr: d.mqtt,
                conns: INGEST_CONNS,
                window: 4096,
                topic: "plant/bench/lat/{conn}".into(),
                client_prefix: "bench-lat".into(),
                payload: Payload::Timestamped { size: PAYLOAD },
                rate: Some(p.latency_rate),
                limit: Limit::Open,
            })
            .await?;
            let cpu0 = daemon::thread_cpu(d.pid);
            sleep(p.latency_warmup).await;
            load.time_acks_from_now();
            sleep(p.latency_run.saturating_sub(p.latency_warmup)).await;
            let cpu = daemon::cpu_delta(&cpu0, &daemon::thread_cpu(d.pid));
            let acks = load.ack_latencies();
            let q = |p: f64| ms(percentile_u32(&acks, p));
            load.stop(Duration::from_secs(30)).await?;
            let sent = load_sent_total(&d).await?;
            // Let the uplink finish before the consumer gives up on silence.
            let deadline = Instant::now() + Duration::from_secs(30);
            let st = loop {
                let st = d.status().await?;
                if num(&st, "/uplink/forwarded_records") >= sent || Instant::now() >= deadline {
                    break st;
                }
                sleep(Duration::from_millis(20)).await;
            };
            d.stop().await?;
            (
                sent,
                format!(
                    "gateway: publish→PUBACK p50 {} p99 {} p99.9 {} max {}; {} forwarded in {} \
                     produce requests; daemon CPU by thread: {cpu}",
                    q(0.5),
                    q(0.99),
                    q(0.999),
                    q(1.0),
                    num(&st, "/uplink/forwarded_records"),
                    num(&st, "/uplink/produce_requests")
                ),
            )
        } else {
            let producer = kafka::partition(&tansu.bootstrap(), "lat", 0).await?;
            let (produced, requests, busy) = kafka::produce_paced(
                producer,
                "plant/bench/lat/0",
                PAYLOAD,
                p.latency_rate,
                p.latency_run,
                Duration::from_millis(5),
            )
            .await?;
            (
                produced,
                format!(
                    "rskafka: {produced} produced in {requests} requests, mean produce round trip {:.2} ms",
                    busy.as_secs_f64() * 1e3 / requests.max(1) as f64
                ),
            )
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let lat = consumer.await.context("consumer task")??;
        drop(tansu);
        if lat.records < expected {
            bail!(
                "latency ({}): consumer saw {} of {expected} records",
                if gateway { "gateway" } else { "baseline" },
                lat.records
            );
        }
        Ok((lat, note))
    }

    async fn latency(&mut self) -> Result<()> {
        let p = self.plan;
        let rate = p.latency_rate;
        let (mut gw, mut raw) = (kafka::Latencies::default(), kafka::Latencies::default());
        let mut notes = Vec::new();
        for round in 0..p.latency_rounds {
            // Alternate, so that both see the same machine.
            for gateway in [round % 2 == 0, round % 2 != 0] {
                progress(format!(
                    "latency round {}: {} at {rate:.0} msg/s for {:?}",
                    round + 1,
                    if gateway {
                        "ironbridge"
                    } else {
                        "rskafka baseline"
                    },
                    p.latency_run
                ));
                let (l, note) = self.latency_round(gateway).await?;
                let (p50, p99) = {
                    let mut v = l.samples.clone();
                    v.sort_unstable();
                    (percentile(&v, 0.5), percentile(&v, 0.99))
                };
                notes.push(format!(
                    "round {}: {note}; p50 {} p99 {}; consumer: {} fetches ({} empty), at most {} records in one",
                    round + 1,
                    ms(p50),
                    ms(p99),
                    l.fetches,
                    l.empty_fetches,
                    l.max_per_fetch
                ));
                let into = if gateway { &mut gw } else { &mut raw };
                into.samples.extend(l.samples);
                into.to_accept.extend(l.to_accept);
                into.accept_to_fetch.extend(l.accept_to_fetch);
                into.records += l.records;
                into.fetches += l.fetches;
                into.empty_fetches += l.empty_fetches;
                into.max_per_fetch = into.max_per_fetch.max(l.max_per_fetch);
                into.elapsed += l.elapsed;
            }
        }
        let mut a = std::mem::take(&mut gw.samples);
        let mut b = std::mem::take(&mut raw.samples);
        a.sort_unstable();
        b.sort_unstable();
        let what = format!(
            "latency: MQTT publish → fetchable in Kafka, {rate:.0} msg/s, {PAYLOAD} B, {} × {} s ({} s warm-up each excluded)",
            p.latency_rounds,
            p.latency_run.as_secs(),
            p.latency_warmup.as_secs()
        );
        for (label, q, goal) in [("p50", 0.5, "-"), ("p99", 0.99, "p99 < 20 ms")] {
            let (x, y) = (percentile(&a, q), percentile(&b, q));
            self.rows.push(Row {
                what: format!("{what}: {label}"),
                ours: ms(x),
                baseline: format!("rskafka producer, linger 5 ms: {}", ms(y)),
                ratio: format!("{:.2}× (ours/baseline time)", x as f64 / y.max(1) as f64),
                goal: goal.into(),
            });
        }
        let split = |l: &kafka::Latencies| {
            let mut x = l.to_accept.clone();
            let mut y = l.accept_to_fetch.clone();
            x.sort_unstable();
            y.sort_unstable();
            let q = |v: &[i64], p: f64| {
                v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                    .map_or(0.0, |u| *u as f64 / 1e3)
            };
            format!(
                "send→Kafka timestamp p50 {:.1} ms / p99 {:.1} ms, Kafka timestamp→fetched p50 {:.1} ms / p99 {:.1} ms",
                q(&x, 0.5),
                q(&x, 0.99),
                q(&y, 0.5),
                q(&y, 0.99)
            )
        };
        let poll = |l: &kafka::Latencies| l.elapsed.as_secs_f64() * 1e3 / l.fetches.max(1) as f64;
        self.notes.push(format!(
            "latency: gateway p50/p90/p99/p99.9/max = {}/{}/{}/{}/{} over {} samples; baseline \
             {}/{}/{}/{}/{} over {} samples. Consumer: rskafka fetch loop from offset 0, max_wait \
             {LATENCY_MAX_WAIT_MS} ms, one fetch response every {:.2} ms on average (gateway runs) / \
             {:.2} ms (baseline runs): its polling granularity. Same machine, same wall clock.",
            ms(percentile(&a, 0.5)),
            ms(percentile(&a, 0.9)),
            ms(percentile(&a, 0.99)),
            ms(percentile(&a, 0.999)),
            ms(a.last().copied().unwrap_or(0)),
            a.len(),
            ms(percentile(&b, 0.5)),
            ms(percentile(&b, 0.9)),
            ms(percentile(&b, 0.99)),
            ms(percentile(&b, 0.999)),
            ms(b.last().copied().unwrap_or(0)),
            b.len(),
            poll(&gw),
            poll(&raw),
        ));
        self.notes.push(format!(
            "latency split (Kafka timestamps have 1 ms resolution) — gateway: {}; baseline: {}",
            split(&gw),
            split(&raw)
        ));
        for n in notes {
            self.notes.push(format!("latency {n}"));
        }
        Ok(())
    }

    async fn rss(&mut self) -> Result<()> {
        let target = self.plan.rss_backlog;
        let tansu = Tansu::start(Storage::Memory).await?;
        kafka::create_topic(&tansu.bootstrap(), "rss", 1).await?;
        // Kafka unreachable while the backlog builds: the uplink retries against a cut proxy.
        let proxy = FaultProxy::start(tansu.addr()).await?;
        proxy.set_mode(Mode::Cut);
        let dir = scratch(&self.opts, "rss")?;
        let max_bytes = target + target / 4 + 64 * MIB;
        let cfg = self.daemon_cfg(
            "always",
            max_bytes,
            kafka_table(
                &proxy.addr().to_string(),
                "rss",
                "retry_backoff_max_ms = 1000",
            ),
        );
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        let rss_start = d.vm_rss()?;
        progress(format!(
            "rss: filling a {:.0} MiB backlog (1000 B random payloads, fsync=always, Kafka unreachable)",
            target as f64 / MIB as f64
        ));
        let t0 = Instant::now();
        let load = Load::start(LoadSpec {
            addr: d.mqtt,
            conns: INGEST_CONNS,
            window: 256,
            topic: "plant/bench/rss/{conn}".into(),
            client_prefix: "bench-rss".into(),
            payload: Payload::Random { size: 1000 },
            rate: None,
            limit: Limit::Open,
        })
        .await?;
        let deadline = t0 + Duration::from_secs(if self.opts.quick { 60 } else { 300 });
        loop {
            let st = d.status().await?;
            if num(&st, "/buffer/bytes") >= target {
                break;
            }
            if Instant::now() >= deadline {
                bail!("backlog not filled in time: {st}");
            }
            sleep(Duration::from_millis(100)).await;
        }
        load.stop(Duration::from_secs(30)).await?;
        let fill_s = t0.elapsed().as_secs_f64();
        sleep(Duration::from_secs(1)).await;
        let st = d.status().await?;
        let held = num(&st, "/buffer/next_offset");
        let held_bytes = num(&st, "/buffer/bytes");
        let forwarded_before = num(&st, "/uplink/forwarded_records");
        let hwm_hold = d.vm_hwm()?;
        let rss_hold = d.vm_rss()?;

        progress("rss: Kafka reachable again, draining");
        proxy.set_mode(Mode::Pass);
        let t1 = Instant::now();
        let deadline = t1 + Duration::from_secs(if self.opts.quick { 120 } else { 600 });
        let mut hwm_peak_seen = 0;
        loop {
            let st = d.status().await?;
            hwm_peak_seen = hwm_peak_seen.max(d.vm_rss().unwrap_or(0));
            if num(&st, "/uplink/forwarded_records") >= held && num(&st, "/uplink/lag_records") == 0
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("backlog not drained in time: {st}\n{}", d.log_tail());
            }
            sleep(Duration::from_millis(100)).await;
        }
        let drain_s = t1.elapsed().as_secs_f64();
        let hwm_drain = d.vm_hwm()?;
        d.stop().await?;
        drop(proxy);
        drop(tansu);

        let mb = |b: u64| format!("{:.1} MB", b as f64 / MB);
        let size = format!("{:.0} MiB", held_bytes as f64 / MIB as f64);
        self.rows.push(Row {
            what: format!(
                "peak RSS (VmHWM) holding a {size} backlog ({held} × 1000 B), Kafka unreachable"
            ),
            ours: mb(hwm_hold),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "< 48 MB".into(),
        });
        self.rows.push(Row {
            what: format!("peak RSS (VmHWM) after draining it to tansu ({drain_s:.1} s)"),
            ours: mb(hwm_drain),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "< 48 MB".into(),
        });
        self.notes.push(format!(
            "rss: VmRSS {} after start, {} when the backlog was full (filled in {fill_s:.1} s, \
             {:.0} MB/s with fsync=always; {forwarded_before} forwarded before Kafka came back), \
             highest sampled VmRSS while draining {}; drain {:.0} rec/s",
            mb(rss_start),
            mb(rss_hold),
            held_bytes as f64 / MB / fill_s,
            mb(hwm_peak_seen),
            held as f64 / drain_s
        ));
        Ok(())
    }

    /// Restart after `kill -9` with a large backlog in the buffer (killed while 8 publishers
    /// were writing) vs with an empty buffer: time from spawning the daemon until it serves
    /// (`/api/status` answers and the MQTT port accepts), and nothing acknowledged lost.
    async fn recovery(&mut self) -> Result<()> {
        let target = self.plan.rss_backlog;
        let cfg = self.daemon_cfg("always", target * 2 + 64 * MIB, String::new());
        let bin = self.bin.clone();
        let restart_after_kill = async |d: &mut Daemon, dir: &Path| {
            d.kill9().await?;
            let t = Instant::now();
            let d2 = Daemon::start(&bin, dir, &cfg).await?;
            Ok::<_, anyhow::Error>((d2, t.elapsed()))
        };
        let mut empty = Vec::new();
        let mut full = Vec::new();
        let mut notes = Vec::new();
        for round in 0..3 {
            progress(format!("recovery round {}: empty buffer", round + 1));
            let dir = scratch(&self.opts, "recovery-empty")?;
            let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
            let (mut d, took) = restart_after_kill(&mut d, dir.path()).await?;
            d.stop().await?;
            empty.push(took.as_secs_f64());

            progress(format!(
                "recovery round {}: kill -9 while writing a {:.0} MiB backlog",
                round + 1,
                target as f64 / MIB as f64
            ));
            let dir = scratch(&self.opts, "recovery-backlog")?;
            let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
            let load = Load::start(LoadSpec {
                addr: d.mqtt,
                conns: INGEST_CONNS,
                window: 256,
                topic: "plant/bench/recovery/{conn}".into(),
                client_prefix: "bench-recovery".into(),
                payload: Payload::Random { size: 1000 },
                rate: None,
                limit: Limit::Open,
            })
            .await?;
            let deadline = Instant::now() + Duration::from_secs(300);
            while num(&d.status().await?, "/buffer/bytes") < target {
                if Instant::now() >= deadline {
                    bail!("recovery: backlog not filled in 300 s");
                }
                sleep(Duration::from_millis(50)).await;
            }
            let acked = load.acked();
            let (mut d2, took) = restart_after_kill(&mut d, dir.path()).await?;
            // The publishers' connections died with the daemon.
            let _ = load.stop(Duration::from_secs(10)).await;
            let st = d2.status().await?;
            let held = num(&st, "/buffer/next_offset");
            d2.stop().await?;
            if held < acked {
                bail!("recovery: {held} records after kill -9, {acked} had been acknowledged");
            }
            notes.push(format!(
                "{:.0} MB / {held} records held ({acked} acknowledged before the kill)",
                num(&st, "/buffer/bytes") as f64 / MB
            ));
            full.push(took.as_secs_f64());
        }
        let summary = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{:.0}", x * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.notes.push(format!(
            "recovery (ms per round) — backlog: {}; empty: {}; backlogs: {}",
            summary(&full),
            summary(&empty),
            notes.join("; ")
        ));
        let (f, e) = (median(&mut full), median(&mut empty));
        self.rows.push(Row {
            what: format!(
                "recovery: kill -9 while writing, restart until serving (status + MQTT), {:.0} MiB backlog (median of 3)",
                target as f64 / MIB as f64
            ),
            ours: format!("{:.0} ms", f * 1e3),
            baseline: format!("same restart with an empty buffer: {:.0} ms", e * 1e3),
            ratio: format!("{:.2}× (time)", f / e),
            goal: "no acknowledged record lost (checked)".into(),
        });
        Ok(())
    }

    async fn soak(&mut self) -> Result<()> {
        let spec = soak::SoakSpec::periodic(self.opts.soak_minutes, self.opts.soak_rate);
        progress(format!(
            "soak: {} min at {:.0} msg/s, {} outages, samples every {:?} → {}",
            self.opts.soak_minutes,
            self.opts.soak_rate,
            spec.outages.len(),
            spec.sample_every,
            self.opts.out.display()
        ));
        let dir = scratch(&self.opts, "soak")?;
        let r = soak::run(&self.bin, dir.path(), &spec, &self.opts.out).await?;
        let text = soak::summary(&r, &spec);
        println!(
            "\n## Soak\n\n{text}\nCSV: {}\nplot: {}",
            r.csv.display(),
            r.svg.display()
        );
        std::fs::write(self.opts.out.join("SUMMARY.md"), &text)?;
        if r.distinct < r.appended {
            bail!(
                "soak lost records: {} of {} in Kafka",
                r.distinct,
                r.appended
            );
        }
        Ok(())
    }

    async fn size(&mut self) -> Result<()> {
        let built = std::fs::metadata(&self.bin)?.len();
        let scratch = scratch(&self.opts, "size")?;
        let copy = scratch.path().join("ironbridge");
        let stripped = match Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&copy)
            .arg(&self.bin)
            .status()
            .await
        {
            Ok(s) if s.success() => Some(std::fs::metadata(&copy)?.len()),
            _ => None,
        };
        self.rows.push(Row {
            what: "release binary size (x86_64; profile strips symbols, thin LTO)".into(),
            ours: match stripped {
                Some(s) => format!(
                    "{:.2} MB ({:.2} MB after strip --strip-all)",
                    built as f64 / MB,
                    s as f64 / MB
                ),
                None => format!("{:.2} MB", built as f64 / MB),
            },
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "-".into(),
        });
        Ok(())
    }
}
