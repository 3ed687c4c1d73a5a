//! Local MQTT fan-out and idle memory, each next to mosquitto in the same run.
//!
//! - `fanout`: one MQTT 3.1.1 publisher sends 100 B messages on `bench/<seq % 16>` as fast as
//!   the broker takes them (QoS 0: no window but TCP's; QoS 1: [`PUB_WINDOW`] unacknowledged)
//!   while N subscribers (N = 1, 10, 50; MQTT 3.1.1, `bench/#`, same QoS as the publisher)
//!   read them. Delivered messages per second, summed over the subscribers, counted over the
//!   measured window only (after a warm-up). Afterwards the publisher stops, the subscribers read
//!   what is still on its way, and each one's count is compared with what the broker accepted:
//!   messages missing at a subscriber must equal the broker's own "dropped" counter (a session
//!   queue at its limit: ironbridge `mqtt.max_queued_messages`, mosquitto `max_queued_messages`,
//!   1000 by default in both); anything beyond it is reported as unexplained loss.
//! - `idle`: VmRSS and VmHWM 10 s after start with no clients, then with 100 idle MQTT
//!   connections (10 s after they connected).
//!
//! The clients are raw MQTT over tokio `TcpStream`, like `load.rs`: the same code drives both
//! brokers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::External;
use ironbridge_e2e::net::{LOCALHOST, free_port};
use ironbridge_e2e::process::log_tail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::daemon::{Daemon, die_with_parent};
use super::{Bench, MB, MIB, Row, kps, metric, mosq, progress, scratch};

/// Subscriber counts measured.
const SUBSCRIBERS: [usize; 3] = [1, 10, 50];
/// Payload bytes per message (a big-endian sequence number, then `x`).
const FANOUT_PAYLOAD: usize = 100;
/// Topics the publisher cycles through (`bench/0` … `bench/15`).
const TOPICS: u64 = 16;
/// Unacknowledged QoS 1 publishes (ironbridge's default `max_unacked_per_client`).
const PUB_WINDOW: usize = 512;
/// Publishes written per `write_all`.
const PUB_BATCH: usize = 64;
/// Upper bound on messages one run publishes (the time bound ends it long before).
const PUB_MAX: u64 = 500_000_000;
/// Idle MQTT connections in the `idle` part.
const IDLE_CONNS: usize = 100;
/// From start until the idle memory is read, and from connecting the idle clients until it is
/// read again.
const IDLE_WAIT: Duration = Duration::from_secs(10);

/// One fan-out run's outcome for one broker.
struct FanoutRun {
    /// Messages received by all subscribers per second in the measured window.
    delivered: f64,
    /// Slowest and fastest subscriber, msg/s, in the window.
    per_sub: (f64, f64),
    /// Messages the publisher wrote per second in the window (QoS 1: acknowledged).
    published_rate: f64,
    /// Messages the publisher sent in total (QoS 1: all acknowledged).
    published: u64,
    /// Per subscriber: messages received in total, sequence numbers not above the previous one.
    subs: Vec<SubResult>,
    /// The broker's count of messages it dropped for full subscriber queues (this run).
    dropped: Option<u64>,
    /// More of the broker's own counters (ironbridge: publishes appended, messages delivered).
    broker_detail: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct SubResult {
    received: u64,
    out_of_order: u64,
}

impl FanoutRun {
    /// Messages that never reached a subscriber: (total, worst subscriber).
    fn missing(&self) -> (u64, u64) {
        let each = self
            .subs
            .iter()
            .map(|s| self.published.saturating_sub(s.received));
        (each.clone().sum(), each.max().unwrap_or(0))
    }

    fn out_of_order(&self) -> u64 {
        self.subs.iter().map(|s| s.out_of_order).sum()
    }

    /// Missing messages, the broker's dropped counter, and what that leaves unexplained.
    fn loss_note(&self) -> String {
        let (missing, worst) = self.missing();
        let expected = self.published * self.subs.len() as u64;
        let mut s = format!(
            "{} of {expected} copies received ({:.2} %), {missing} missing (worst subscriber {worst})",
            expected - missing.min(expected),
            if expected == 0 {
                0.0
            } else {
                100.0 * (expected - missing.min(expected)) as f64 / expected as f64
            }
        );
        match self.dropped {
            Some(d) => {
                let _ = write!(s, ", broker counted {d} dropped");
                if missing > d {
                    let _ = write!(s, ": **{} unexplained**", missing - d);
                }
            }
            None => s.push_str(", broker's dropped counter unavailable"),
        }
        if self.out_of_order() > 0 {
            let _ = write!(s, ", {} out of order or duplicated", self.out_of_order());
        }
        if !self.broker_detail.is_empty() {
            let _ = write!(s, " ({})", self.broker_detail);
        }
        s
    }
}

/// Which broker a run targets.
enum Target<'a> {
    Ironbridge(&'a Daemon),
    Mosquitto(SocketAddr),
}

impl Target<'_> {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Ironbridge(d) => d.mqtt,
            Target::Mosquitto(a) => *a,
        }
    }

    /// Messages the broker dropped for full subscriber queues since it started, and for
    /// ironbridge its counts of publishes appended and messages delivered.
    async fn counters(&self) -> (Option<u64>, String) {
        match self {
            Target::Ironbridge(d) => {
                let Ok(body) = d.get("/metrics").await else {
                    return (None, "/metrics unavailable".into());
                };
                let text = String::from_utf8_lossy(&body);
                let has = |name: &str| text.lines().any(|l| l.starts_with(name));
                let dropped = "ironbridge_mqtt_messages_dropped_total";
                let appended = "ironbridge_mqtt_publishes_appended_total";
                let delivered = "ironbridge_mqtt_messages_delivered_total";
                let detail = format!(
                    "ironbridge counted {:.0} publishes appended, {:.0} messages delivered",
                    metric(&text, appended),
                    metric(&text, delivered)
                );
                (has(dropped).then(|| metric(&text, dropped) as u64), detail)
            }
            Target::Mosquitto(a) => (mosquitto_dropped(*a).await.ok(), String::new()),
        }
    }
}

impl Bench {
    /// Local fan-out: 1 publisher → N subscribers, QoS 0 and QoS 1, ironbridge vs mosquitto.
    pub(crate) async fn fanout(&mut self) -> Result<()> {
        let (warmup, measure) = if self.opts.quick {
            (Duration::from_secs(1), Duration::from_secs(4))
        } else {
            (Duration::from_secs(2), Duration::from_secs(10))
        };
        // `sys_interval 1`: the dropped counter in $SYS is at most 1 s old when read.
        let mosq_extra = format!(
            "sys_interval 1\n{}",
            std::env::var("BENCH_MOSQ_EXTRA")
                .unwrap_or_default()
                .replace("\\n", "\n")
        );
        let mut table = Vec::new();
        let mut round = 0;
        for qos in [0u8, 1] {
            for n in SUBSCRIBERS {
                let mut ib = None;
                let mut mq = None;
                // Alternate which broker goes first, so drift in the machine's load hits both.
                for k in 0..2 {
                    if (k + round) % 2 == 0 {
                        progress(format!("fanout: mosquitto, {n} subscribers, QoS {qos}"));
                        let broker = mosq::Broker::start(&mosq_extra).await?;
                        let r = fanout_run(Target::Mosquitto(broker.addr), n, qos, warmup, measure)
                            .await
                            .with_context(|| format!("mosquitto, N={n}, QoS {qos}"))?;
                        drop(broker);
                        mq = Some(r);
                    } else {
                        progress(format!("fanout: ironbridge, {n} subscribers, QoS {qos}"));
                        let dir = scratch(&self.opts, "fanout")?;
                        let mut d = Daemon::start(
                            &self.bin,
                            dir.path(),
                            &self.daemon_cfg("always", 4 << 30, String::new()),
                        )
                        .await?;
                        let r = fanout_run(Target::Ironbridge(&d), n, qos, warmup, measure).await;
                        let _ = d.stop().await;
                        ib = Some(r.with_context(|| {
                            format!("ironbridge, N={n}, QoS {qos}; log:\n{}", d.log_tail())
                        })?);
                    }
                }
                round += 1;
                let (Some(ib), Some(mq)) = (ib, mq) else {
                    bail!("fanout: a broker was not measured");
                };
                table.push((n, qos, ib, mq));
            }
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## MQTT fan-out (1 publisher → N subscribers on bench/#, {FANOUT_PAYLOAD} B, MQTT 3.1.1, \
             delivered msg/s summed over subscribers, {} s after {} s warm-up)\n",
            measure.as_secs(),
            warmup.as_secs()
        );
        let _ = writeln!(
            out,
            "| N | QoS | ironbridge msg/s | mosquitto msg/s | ratio |\n|---|---|---|---|---|"
        );
        for (n, qos, ib, mq) in &table {
            let _ = writeln!(
                out,
                "| {n} | {qos} | {:.0} | {:.0} | {:.2}× |",
                ib.delivered,
                mq.delivered,
                ib.delivered / mq.delivered.max(1.0)
            );
        }
        let _ = writeln!(out);
        for (n, qos, ib, mq) in &table {
            for (who, r) in [("ironbridge", ib), ("mosquitto", mq)] {
                let line = format!(
                    "fanout N={n} QoS {qos} {who}: publisher {:.0} msg/s; per subscriber {:.0}–{:.0} msg/s; \
                     after the run: {} published, {}",
                    r.published_rate,
                    r.per_sub.0,
                    r.per_sub.1,
                    r.published,
                    r.loss_note()
                );
                let _ = writeln!(out, "- {line}");
                self.notes.push(line);
            }
        }
        println!("{out}");

        let mut unexplained = Vec::new();
        for (n, qos, ib, mq) in &table {
            self.rows.push(Row {
                what: format!(
                    "fan-out: 1 publisher → {n} subscribers (bench/#), QoS {qos}, {FANOUT_PAYLOAD} B, \
                     delivered msg/s over all subscribers, {} s",
                    measure.as_secs()
                ),
                ours: kps(ib.delivered),
                baseline: format!("mosquitto 2.0: {}", kps(mq.delivered)),
                ratio: format!("{:.2}×", ib.delivered / mq.delivered.max(1.0)),
                goal: if *qos == 1 {
                    "no QoS 1 loss beyond counted drops".into()
                } else {
                    "-".into()
                },
            });
            for (who, r) in [("ironbridge", ib), ("mosquitto", mq)] {
                let (missing, _) = r.missing();
                if *qos == 1 && (r.dropped.is_none_or(|d| missing > d) || r.out_of_order() > 0) {
                    unexplained.push(format!("{who} N={n}: {}", r.loss_note()));
                }
            }
        }
        if !unexplained.is_empty() {
            let msg = format!(
                "fanout: QoS 1 messages lost beyond the brokers' dropped counters: {}",
                unexplained.join("; ")
            );
            eprintln!("[gateway bench] WARNING {msg}");
            self.notes.push(format!("**{msg}**"));
        }
        Ok(())
    }

    /// VmRSS/VmHWM 10 s after start, then with 100 idle MQTT connections, vs mosquitto.
    pub(crate) async fn idle(&mut self) -> Result<()> {
        // 100 clients from one address: above ironbridge's default per-address limit (64).
        let cfg = self.daemon_cfg(
            "always",
            64 * MIB,
            format!("max_connections_per_address = {}\n", IDLE_CONNS + 16),
        );
        let dir = scratch(&self.opts, "idle")?;

        // First start: the harness does the first-boot setup (one argon2id hash).
        progress("idle: ironbridge first start (first-boot setup), 10 s");
        let t = Instant::now();
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        sleep_until(t + IDLE_WAIT).await;
        let first = (d.vm_rss()?, d.vm_hwm()?);
        d.stop().await?;

        // The measured case: a restart of the set-up gateway (as after a reboot).
        progress("idle: ironbridge restarted on its state, 10 s, then 100 idle connections");
        let t = Instant::now();
        let mut d = Daemon::start(&self.bin, dir.path(), &cfg).await?;
        sleep_until(t + IDLE_WAIT).await;
        let ib_empty = (d.vm_rss()?, d.vm_hwm()?);
        let conns = idle_clients(d.mqtt, "idle-ib").await;
        let ib_conns = match conns {
            Ok(c) => {
                sleep(IDLE_WAIT).await;
                let m = (d.vm_rss()?, d.vm_hwm()?);
                let st = d.status().await.ok();
                close_all(c).await;
                Ok((m, st))
            }
            Err(e) => Err(e),
        };
        let _ = d.stop().await;
        let (ib_conns, st) =
            ib_conns.with_context(|| format!("ironbridge log:\n{}", d.log_tail()))?;

        progress("idle: mosquitto, 10 s, then 100 idle connections");
        let t = Instant::now();
        let m = MosqProcess::start().await?;
        sleep_until(t + IDLE_WAIT).await;
        let mq_empty = (proc_kb(m.pid, "VmRSS:")?, proc_kb(m.pid, "VmHWM:")?);
        let c = idle_clients(m.addr, "idle-mosq").await?;
        sleep(IDLE_WAIT).await;
        let mq_conns = (proc_kb(m.pid, "VmRSS:")?, proc_kb(m.pid, "VmHWM:")?);
        close_all(c).await;
        drop(m);

        let mb = |b: u64| format!("{:.1} MB", b as f64 / MB);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## Idle memory (VmRSS / VmHWM; ironbridge restarted on a set-up state, mosquitto 2.0 \
             with the bench's config)\n"
        );
        let _ = writeln!(
            out,
            "| state | ironbridge VmRSS | ironbridge VmHWM | mosquitto VmRSS | mosquitto VmHWM | ratio (VmRSS) |\n|---|---|---|---|---|---|"
        );
        for (what, ib, mq) in [
            ("10 s after start, no clients", ib_empty, mq_empty),
            (
                "100 idle MQTT connections, 10 s after connecting",
                ib_conns,
                mq_conns,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {:.1}× |",
                mb(ib.0),
                mb(ib.1),
                mb(mq.0),
                mb(mq.1),
                ib.0 as f64 / mq.0.max(1) as f64
            );
            self.rows.push(Row {
                what: format!("idle memory: {what} (VmRSS; VmHWM)"),
                ours: format!("{}; {}", mb(ib.0), mb(ib.1)),
                baseline: format!("mosquitto 2.0: {}; {}", mb(mq.0), mb(mq.1)),
                ratio: format!("{:.1}× (VmRSS)", ib.0 as f64 / mq.0.max(1) as f64),
                goal: "-".into(),
            });
        }
        let per_conn = |a: (u64, u64), b: (u64, u64)| {
            format!(
                "{:.1} KB",
                (b.0 as f64 - a.0 as f64) / IDLE_CONNS as f64 / 1e3
            )
        };
        let note = format!(
            "idle: VmRSS per idle connection: ironbridge {}, mosquitto {}; ironbridge's first start \
             (first-boot setup by the harness, one argon2id hash), 10 s after spawn: VmRSS {}, VmHWM {}; \
             ironbridge status with the clients connected: {} MQTT connections",
            per_conn(ib_empty, ib_conns),
            per_conn(mq_empty, mq_conns),
            mb(first.0),
            mb(first.1),
            st.as_ref()
                .and_then(|s| s.pointer("/mqtt/connections"))
                .map_or("?".into(), |v| v.to_string()),
        );
        let _ = writeln!(out, "\n- {note}");
        self.notes.push(note);
        println!("{out}");
        Ok(())
    }
}

/// One fan-out run against a fresh broker.
async fn fanout_run(
    target: Target<'_>,
    n: usize,
    qos: u8,
    warmup: Duration,
    measure: Duration,
) -> Result<FanoutRun> {
    let addr = target.addr();
    // Hard limit for every client loop of this run.
    let deadline = Instant::now() + warmup + measure + Duration::from_secs(120);
    let stop_subs = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = timeout(
            Duration::from_secs(10),
            connect(addr, &format!("fanout-sub-{i}"), 60),
        )
        .await
        .context("subscriber connect timed out")??;
        timeout(Duration::from_secs(10), subscribe(&mut s, "bench/#", qos))
            .await
            .context("SUBACK timed out")??;
        subs.push(tokio::spawn(subscriber(
            s,
            i,
            counts.clone(),
            stop_subs.clone(),
            deadline,
        )));
    }
    let total = |c: &[AtomicU64]| c.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
    let each = |c: &[AtomicU64]| {
        c.iter()
            .map(|x| x.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };

    let publisher = Publisher::start(addr, qos, deadline).await?;
    sleep(warmup).await;
    let (c0, e0, p0, t0) = (
        total(&counts),
        each(&counts),
        publisher.progress(),
        Instant::now(),
    );
    sleep(measure).await;
    let (c1, e1, p1, t1) = (
        total(&counts),
        each(&counts),
        publisher.progress(),
        Instant::now(),
    );
    let secs = (t1 - t0).as_secs_f64();
    let published = publisher.finish(Duration::from_secs(60)).await?;

    // What is still queued or in flight reaches the subscribers: wait until every subscriber
    // has everything, or nothing moved for 2 s (drops), at most 60 s.
    let settle_limit = Instant::now() + Duration::from_secs(60);
    let mut last = (total(&counts), Instant::now());
    loop {
        let now_total = total(&counts);
        if counts
            .iter()
            .all(|c| c.load(Ordering::Relaxed) >= published)
        {
            break;
        }
        if now_total != last.0 {
            last = (now_total, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        if Instant::now() >= settle_limit {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    stop_subs.store(true, Ordering::Relaxed);
    let mut results = Vec::with_capacity(n);
    for h in subs {
        results.push(
            timeout(Duration::from_secs(10), h)
                .await
                .context("subscriber did not stop")?
                .context("subscriber task")??,
        );
    }
    // mosquitto's $SYS counters are refreshed every `sys_interval` (1 s).
    if matches!(target, Target::Mosquitto(_)) {
        sleep(Duration::from_millis(1500)).await;
    }
    let (dropped, broker_detail) = target.counters().await;
    let rates: Vec<f64> = e0
        .iter()
        .zip(&e1)
        .map(|(a, b)| (b - a) as f64 / secs)
        .collect();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    Ok(FanoutRun {
        delivered: (c1 - c0) as f64 / secs,
        per_sub: (min, max),
        published_rate: (p1 - p0) as f64 / secs,
        published,
        subs: results,
        dropped,
        broker_detail,
    })
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// MQTT 3.1.1 CONNECT with a clean session; waits for an accepting CONNACK.
async fn connect(addr: SocketAddr, client_id: &str, keep_alive: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut pkt = vec![0x10];
    remaining_length(body.len(), &mut pkt);
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)
        .await
        .context("reading CONNACK")?;
    if connack[0] != 0x20 || connack[1] != 2 || connack[3] != 0 {
        bail!("CONNACK refused: {connack:02x?}");
    }
    Ok(s)
}

/// SUBSCRIBE (packet id 1) to one filter; checks the SUBACK grants `qos`.
async fn subscribe(s: &mut TcpStream, filter: &str, qos: u8) -> Result<()> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    let mut pkt = vec![0x82];
    remaining_length(body.len(), &mut pkt);
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).await?;
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).await.context("reading SUBACK")?;
    if suback[0] != 0x90 || suback[1] != 3 || suback[2..4] != [0, 1] || suback[4] != qos {
        bail!("SUBACK for {filter} at QoS {qos}: {suback:02x?}");
    }
    Ok(())
}

/// The next complete packet at the start of `buf`: (first byte, body range, total length).
fn next_packet(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return None;
        }
        let b = *buf.get(i)?;
        len += (b & 0x7f) as usize * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    (buf.len() - i >= len).then_some((buf[0], i..i + len, i + len))
}

/// A PUBLISH body: (topic, packet id, payload).
fn parse_publish(first: u8, body: &[u8]) -> Option<(&[u8], Option<u16>, &[u8])> {
    let tl = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let topic = body.get(2..2 + tl)?;
    let mut at = 2 + tl;
    let id = if (first >> 1) & 3 > 0 {
        let id = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
        Some(id)
    } else {
        None
    };
    Some((topic, id, body.get(at..)?))
}

/// Reads and counts PUBLISHes (acknowledging QoS 1 ones) until told to stop or `deadline`.
async fn subscriber(
    s: TcpStream,
    index: usize,
    counts: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Result<SubResult> {
    let (mut r, mut w) = s.into_split();
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    let mut res = SubResult::default();
    let mut last_seq: Option<u64> = None;
    let mut acks = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = match timeout(Duration::from_millis(100), r.read(&mut buf[have..])).await {
            Ok(n) => n.with_context(|| format!("subscriber {index}: read"))?,
            Err(_) => continue,
        };
        if n == 0 {
            bail!(
                "subscriber {index}: the broker closed the connection after {} messages",
                res.received
            );
        }
        have += n;
        let mut at = 0;
        while let Some((first, body, len)) = next_packet(&buf[at..have]) {
            if first >> 4 == 3 {
                let body = &buf[at + body.start..at + body.end];
                let (_, id, payload) = parse_publish(first, body)
                    .with_context(|| format!("subscriber {index}: malformed PUBLISH"))?;
                let seq = payload
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
                    .unwrap_or(0);
                if last_seq.is_some_and(|l| seq <= l) {
                    res.out_of_order += 1;
                }
                last_seq = Some(seq);
                res.received += 1;
                if let Some(id) = id {
                    acks.extend_from_slice(&[0x40, 2]);
                    acks.extend_from_slice(&id.to_be_bytes());
                }
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if have == buf.len() {
            bail!("subscriber {index}: packet larger than {} bytes", buf.len());
        }
        counts[index].store(res.received, Ordering::Relaxed);
        if !acks.is_empty() {
            w.write_all(&acks)
                .await
                .with_context(|| format!("subscriber {index}: writing PUBACKs"))?;
            acks.clear();
        }
    }
    let _ = w.write_all(&[0xe0, 0]).await; // DISCONNECT
    let _ = w.shutdown().await;
    Ok(res)
}

/// The one publisher: `bench/<seq % 16>`, 100 B payloads starting with the sequence number.
struct Publisher {
    stop: Arc<AtomicBool>,
    /// Written (QoS 0) or acknowledged (QoS 1).
    done: Arc<AtomicU64>,
    writer: JoinHandle<Result<(OwnedWriteHalf, u64)>>,
    reader: Option<JoinHandle<Result<u64>>>,
}

impl Publisher {
    async fn start(addr: SocketAddr, qos: u8, deadline: Instant) -> Result<Publisher> {
        let s = timeout(
            Duration::from_secs(10),
            connect(addr, "fanout-publisher", 60),
        )
        .await
        .context("publisher connect timed out")??;
        let (r, w) = s.into_split();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let writer_done = Arc::new(AtomicBool::new(false));
        let window = Arc::new(Semaphore::new(PUB_WINDOW));
        let reader = (qos == 1).then(|| {
            tokio::spawn(read_pubacks(
                r,
                window.clone(),
                done.clone(),
                sent.clone(),
                writer_done.clone(),
                deadline,
            ))
        });
        let writer = tokio::spawn(publish(
            w,
            qos,
            window,
            sent,
            (qos == 0).then(|| done.clone()),
            (stop.clone(), writer_done),
            deadline,
        ));
        Ok(Publisher {
            stop,
            done,
            writer,
            reader,
        })
    }

    fn progress(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops publishing; QoS 1: waits for every PUBACK. Returns the messages published.
    async fn finish(self, limit: Duration) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let (mut w, sent) = timeout(limit, self.writer)
            .await
            .context("publisher did not stop")?
            .context("publisher task")??;
        if let Some(reader) = self.reader {
            let acked = timeout(limit, reader)
                .await
                .context("publisher's PUBACKs did not all come")?
                .context("PUBACK reader task")??;
            if acked < sent {
                bail!("{} of {sent} QoS 1 publishes unacknowledged", sent - acked);
            }
        }
        let _ = w.write_all(&[0xe0, 0]).await; // DISCONNECT
        let _ = w.shutdown().await;
        Ok(sent)
    }
}

async fn publish(
    mut w: OwnedWriteHalf,
    qos: u8,
    window: Arc<Semaphore>,
    sent_shared: Arc<AtomicU64>,
    written: Option<Arc<AtomicU64>>,
    (stop, writer_done): (Arc<AtomicBool>, Arc<AtomicBool>),
    deadline: Instant,
) -> Result<(OwnedWriteHalf, u64)> {
    let r = publish_loop(
        &mut w,
        qos,
        &window,
        &sent_shared,
        written.as_deref(),
        &stop,
        deadline,
    )
    .await;
    // Whatever happened: the ack reader may end once everything sent is acknowledged.
    writer_done.store(true, Ordering::Release);
    r.map(|seq| (w, seq))
}

async fn publish_loop(
    w: &mut OwnedWriteHalf,
    qos: u8,
    window: &Semaphore,
    sent_shared: &AtomicU64,
    written: Option<&AtomicU64>,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<u64> {
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("bench/{t}")).collect();
    let mut buf = Vec::with_capacity(PUB_BATCH * (FANOUT_PAYLOAD + 16));
    let mut seq: u64 = 0;
    let mut packet_id: u16 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seq < PUB_MAX {
        let mut take = PUB_BATCH;
        if qos == 1 {
            match timeout(Duration::from_millis(100), window.acquire()).await {
                Ok(p) => p.context("window closed")?.forget(),
                Err(_) => continue, // re-check stop
            }
            take = 1;
            while take < PUB_BATCH {
                match window.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        take += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        buf.clear();
        for _ in 0..take {
            let topic = topics[(seq % TOPICS) as usize].as_bytes();
            buf.push(0x30 | (qos << 1));
            let id_len = if qos > 0 { 2 } else { 0 };
            remaining_length(2 + topic.len() + id_len + FANOUT_PAYLOAD, &mut buf);
            buf.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            buf.extend_from_slice(topic);
            if qos > 0 {
                packet_id = packet_id.wrapping_add(1).max(1);
                buf.extend_from_slice(&packet_id.to_be_bytes());
            }
            buf.extend_from_slice(&seq.to_be_bytes());
            buf.resize(buf.len() + FANOUT_PAYLOAD - 8, b'x');
            seq += 1;
        }
        // Counted before the write, so the ack reader never sees more acks than sends.
        sent_shared.store(seq, Ordering::Release);
        match timeout(Duration::from_secs(30), w.write_all(&buf)).await {
            Ok(r) => r.context("writing PUBLISH")?,
            Err(_) => bail!("publisher blocked for 30 s writing to the broker"),
        }
        if let Some(c) = written {
            c.store(seq, Ordering::Relaxed);
        }
    }
    Ok(seq)
}

/// Counts the publisher's PUBACKs; ends when the writer stopped and all are in, or at EOF.
async fn read_pubacks(
    mut r: OwnedReadHalf,
    window: Arc<Semaphore>,
    acked_shared: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    writer_done: Arc<AtomicBool>,
    deadline: Instant,
) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut acked = 0u64;
    while Instant::now() < deadline {
        if writer_done.load(Ordering::Acquire) && acked >= sent.load(Ordering::Acquire) {
            break;
        }
        let n = match timeout(Duration::from_millis(100), r.read(&mut buf[have..])).await {
            Ok(n) => n.context("reading PUBACKs")?,
            Err(_) => continue,
        };
        if n == 0 {
            break;
        }
        have += n;
        let mut at = 0;
        let mut got = 0;
        while let Some((first, _, len)) = next_packet(&buf[at..have]) {
            if first >> 4 == 4 {
                got += 1;
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        acked += got as u64;
        acked_shared.store(acked, Ordering::Relaxed);
        window.add_permits(got);
    }
    Ok(acked)
}

/// mosquitto's `$SYS/broker/publish/messages/dropped` (retained; absent while 0).
async fn mosquitto_dropped(addr: SocketAddr) -> Result<u64> {
    let mut s = timeout(Duration::from_secs(5), connect(addr, "fanout-sys", 10))
        .await
        .context("connect timed out")??;
    subscribe(&mut s, "$SYS/broker/publish/messages/dropped", 0).await?;
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    let until = Instant::now() + Duration::from_millis(2500);
    let mut value = 0;
    'read: while Instant::now() < until {
        let n = match timeout(Duration::from_millis(100), s.read(&mut buf[have..])).await {
            Ok(n) => n?,
            Err(_) => continue,
        };
        if n == 0 {
            break;
        }
        have += n;
        let mut at = 0;
        while let Some((first, body, len)) = next_packet(&buf[at..have]) {
            if first >> 4 == 3
                && let Some((_, _, payload)) =
                    parse_publish(first, &buf[at + body.start..at + body.end])
            {
                value = String::from_utf8_lossy(payload)
                    .trim()
                    .parse()
                    .context("$SYS dropped value")?;
                break 'read;
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if have == buf.len() {
            bail!("$SYS packet larger than {} bytes", buf.len());
        }
    }
    let _ = s.write_all(&[0xe0, 0]).await;
    Ok(value)
}

/// 100 MQTT 3.1.1 connections that only connect (keep-alive 60 s, no traffic within the wait).
async fn idle_clients(addr: SocketAddr, prefix: &str) -> Result<Vec<TcpStream>> {
    let mut v = Vec::with_capacity(IDLE_CONNS);
    for i in 0..IDLE_CONNS {
        let s = timeout(
            Duration::from_secs(10),
            connect(addr, &format!("{prefix}-{i}"), 60),
        )
        .await
        .with_context(|| format!("idle client {i}: connect timed out"))?
        .with_context(|| format!("idle client {i}"))?;
        v.push(s);
    }
    Ok(v)
}

async fn close_all(v: Vec<TcpStream>) {
    for mut s in v {
        let _ = timeout(Duration::from_secs(1), s.write_all(&[0xe0, 0])).await;
    }
}

/// mosquitto started here rather than by `mosq::Broker`, for its pid (same config).
struct MosqProcess {
    _child: Child,
    pid: u32,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl MosqProcess {
    async fn start() -> Result<MosqProcess> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-bench-mosquitto-")
            .tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from((LOCALHOST, port));
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, mosq::config(port, ""))?;
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(External::Mosquitto.path());
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("spawn mosquitto")?;
        let pid = child.id().context("mosquitto pid")?;
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited during start ({status}):\n{}",
                    log_tail(&log_path, 4000)
                );
            }
            // A bare TCP probe, closed at once (mosquitto forgets it).
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(MosqProcess {
                    _child: child,
                    pid,
                    addr,
                    _dir: dir,
                });
            }
            if Instant::now() >= limit {
                bail!(
                    "mosquitto on {addr} not ready:\n{}",
                    log_tail(&log_path, 4000)
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `/proc/PID/status` field in kB, as bytes.
fn proc_kb(pid: u32, field: &str) -> Result<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} not in {}", path.display()))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parse {line:?}"))?;
    Ok(kb * 1024)
}
