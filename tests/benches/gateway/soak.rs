//! Soak: the daemon at a steady publish rate for a long time with periodic uplink outages,
//! sampled every few seconds — RSS, open file descriptors, buffer backlog, publish → Kafka
//! latency — written as CSV and plotted to SVG (`docs/soak/`). What it shows is growth: every
//! series must come back to its level after each outage, none may climb run over run.
//!
//! The consumer is an rskafka fetch loop reading the topic from offset 0; it checks at the end
//! that every record the gateway appended reached Kafka (distinct `buffer_offset` headers) and
//! counts redeliveries.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ironbridge_e2e::net::{LOCALHOST, free_port};
use ironbridge_e2e::{FaultProxy, Mode, Storage, Tansu};
use plotters::prelude::*;
use rskafka::client::partition::PartitionClient;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::daemon::{Daemon, DaemonConfig, num};
use crate::kafka;
use crate::load::{Limit, Load, LoadSpec, Payload};

const TOPIC: &str = "soak";
const PAYLOAD: usize = 100;
const CONNS: usize = 8;
/// The consumer's fetch `max_wait_ms`: its polling granularity (a bound on what it adds to the
/// latency it measures).
const FETCH_MAX_WAIT_MS: i32 = 10;

#[derive(Debug, Clone)]
pub struct SoakSpec {
    pub duration: Duration,
    pub rate: f64,
    pub sample_every: Duration,
    /// (start after the soak's start, length, mode) of every outage.
    pub outages: Vec<(Duration, Duration, Mode)>,
}

impl SoakSpec {
    /// `minutes` of load at `rate` msg/s; an outage of a fifth of every 5-minute period
    /// (60 s), starting in its third minute, cycling cut → blackhole → slow.
    pub fn periodic(minutes: u64, rate: f64) -> SoakSpec {
        let period = Duration::from_secs(300)
            .min(Duration::from_secs(minutes * 60 / 2).max(Duration::from_secs(60)));
        let length = period / 5;
        let modes = [
            Mode::Cut,
            Mode::Blackhole,
            Mode::slow(Duration::from_millis(200)),
        ];
        let mut outages = Vec::new();
        let mut start = period * 2 / 5;
        let end = Duration::from_secs(minutes * 60);
        let mut i = 0;
        while start + length + period / 5 <= end {
            outages.push((start, length, modes[i % modes.len()]));
            start += period;
            i += 1;
        }
        SoakSpec {
            duration: end,
            rate,
            sample_every: Duration::from_secs(5),
            outages,
        }
    }
}

/// A value of a sample, as plotted or summarised.
type Field<'a> = Box<dyn Fn(&Sample) -> f64 + 'a>;
/// Named, coloured series of one panel.
type Series<'a> = Vec<(&'a str, RGBColor, Field<'a>)>;

/// One sample row.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t_s: f64,
    pub acked: u64,
    pub rss_mb: f64,
    /// Of `rss_mb`, the anonymous memory: what the heap holds, without the binary's pages.
    pub rss_anon_mb: f64,
    pub fds: u64,
    pub backlog_records: u64,
    /// The gateway's own view of its delivery delay: age of the oldest record not yet in Kafka.
    pub oldest_age_ms: f64,
    pub buffer_mb: f64,
    /// Publish → fetched from Kafka over the records fetched in this interval (ms).
    pub lat_p50_ms: f64,
    pub lat_p99_ms: f64,
    pub lat_max_ms: f64,
    pub fetched: u64,
    pub outage: bool,
}

pub struct SoakResult {
    pub samples: Vec<Sample>,
    pub appended: u64,
    pub distinct: u64,
    pub redelivered: u64,
    pub outages: Vec<(f64, f64, String)>,
    pub csv: PathBuf,
    pub svg: PathBuf,
}

/// What the consumer task shares with the sampler.
#[derive(Default)]
struct Consumed {
    window: Mutex<Vec<u32>>,
    fetched: AtomicU64,
    distinct: AtomicU64,
    redelivered: AtomicU64,
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1e3
}

/// Reads the topic from offset 0 until `stop` and the topic is quiet: latency of every record
/// into the shared window, distinct `buffer_offset`s in a bitmap. Outages cut the consumer off
/// too: a failed or stuck fetch reconnects and goes on from the same offset.
async fn consume(bootstrap: String, c: Arc<Consumed>, stop: Arc<AtomicBool>) -> Result<()> {
    let mut offset = 0i64;
    let mut seen: Vec<u64> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    let mut pc: Option<PartitionClient> = None;
    loop {
        let client = match pc.take() {
            Some(p) => p,
            None => match timeout(
                Duration::from_secs(5),
                kafka::partition(&bootstrap, TOPIC, 0),
            )
            .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        // Generous: tansu's memory engine answers fetches deep into a large topic slowly.
        let recs = match timeout(
            Duration::from_secs(30),
            client.fetch_records(offset, 1..8_000_000, FETCH_MAX_WAIT_MS),
        )
        .await
        {
            Ok(Ok((recs, _))) => {
                pc = Some(client);
                recs
            }
            _ => continue,
        };
        if recs.is_empty() {
            if stop.load(Ordering::Relaxed)
                && idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2)
            {
                return Ok(());
            }
            continue;
        }
        idle_since = None;
        let now = kafka::now_micros();
        let mut lat = Vec::with_capacity(recs.len());
        for r in recs {
            offset = offset.max(r.offset + 1);
            c.fetched.fetch_add(1, Ordering::Relaxed);
            let rec = &r.record;
            if let Some(v) = rec.value.as_deref().filter(|v| v.len() >= 8) {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&v[..8]);
                let sent = u64::from_be_bytes(ts);
                lat.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
            let off = rec
                .headers
                .get("buffer_offset")
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .context("record without a buffer_offset header")?;
            let (word, bit) = ((off / 64) as usize, off % 64);
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            if seen[word] & (1 << bit) != 0 {
                c.redelivered.fetch_add(1, Ordering::Relaxed);
            } else {
                seen[word] |= 1 << bit;
                c.distinct.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Ok(mut w) = c.window.lock() {
            w.extend(lat);
        }
    }
}

pub async fn run(bin: &Path, dir: &Path, spec: &SoakSpec, out_dir: &Path) -> Result<SoakResult> {
    // Kafka advertises the proxy, so every connection after bootstrapping goes through it (the
    // consumer's too: it retries through outages).
    let port = free_port()?;
    let proxy = Arc::new(FaultProxy::start(SocketAddr::from((LOCALHOST, port))).await?);
    let tansu = Tansu::start_advertising(port, Storage::Memory, proxy.addr()).await?;
    kafka::create_topic(&tansu.bootstrap(), TOPIC, 1).await?;
    let cfg = DaemonConfig {
        fsync: "always",
        max_bytes: 2 << 30,
        extra: format!(
            "[kafka]\nbootstrap_servers = [\"{}\"]\ndefault_topic = \"{TOPIC}\"\nretry_backoff_max_ms = 2000\n",
            proxy.addr()
        ),
    };
    let mut d = Daemon::start(bin, dir, &cfg).await?;
    let consumed = Arc::new(Consumed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(tansu.bootstrap(), consumed.clone(), stop.clone()));
    let load = Load::start(LoadSpec {
        addr: d.mqtt,
        conns: CONNS,
        window: 4096,
        topic: "plant/soak/{conn}".into(),
        client_prefix: "soak".into(),
        payload: Payload::Timestamped { size: PAYLOAD },
        rate: Some(spec.rate),
        limit: Limit::Open,
    })
    .await?;
    let t0 = Instant::now();
    let outages = {
        let proxy = proxy.clone();
        let plan = spec.outages.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for (start, len, mode) in plan {
                sleep_until(t0 + start).await;
                let at = t0.elapsed().as_secs_f64();
                proxy.set_mode(mode);
                sleep(len).await;
                proxy.set_mode(Mode::Pass);
                done.push((at, t0.elapsed().as_secs_f64(), format!("{mode:?}")));
            }
            done
        })
    };
    let mut samples = Vec::new();
    let mut tick = t0;
    while t0.elapsed() < spec.duration {
        tick += spec.sample_every;
        sleep_until(tick).await;
        let st = d.status().await?;
        let mut lat = consumed
            .window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        lat.sort_unstable();
        let t_s = t0.elapsed().as_secs_f64();
        let s = Sample {
            t_s,
            acked: load.acked(),
            rss_mb: d.vm_rss()? as f64 / 1e6,
            rss_anon_mb: d.rss_anon()? as f64 / 1e6,
            fds: open_fds(d.pid),
            backlog_records: num(&st, "/uplink/lag_records"),
            oldest_age_ms: num(&st, "/uplink/lag_oldest_age_ms") as f64,
            buffer_mb: num(&st, "/buffer/bytes") as f64 / 1e6,
            lat_p50_ms: quantile(&lat, 0.5),
            lat_p99_ms: quantile(&lat, 0.99),
            lat_max_ms: quantile(&lat, 1.0),
            fetched: consumed.fetched.load(Ordering::Relaxed),
            outage: proxy.mode() != Mode::Pass,
        };
        eprintln!(
            "[soak] t={:>5.0}s acked={} rss={:.1}MB fds={} backlog={} p99={:.1}ms{}",
            s.t_s,
            s.acked,
            s.rss_mb,
            s.fds,
            s.backlog_records,
            s.lat_p99_ms,
            if s.outage { " (outage)" } else { "" }
        );
        samples.push(s);
    }
    load.stop(Duration::from_secs(60)).await?;
    let outages = outages.await.context("outage task")?;
    proxy.set_mode(Mode::Pass);
    // The samples are written before the final check, so a failed check still leaves them.
    std::fs::create_dir_all(out_dir)?;
    let csv = out_dir.join("soak.csv");
    let svg = out_dir.join("soak.svg");
    write_csv(&csv, &samples)?;
    plot(&svg, &samples, &outages, spec)?;
    // Everything appended must reach Kafka.
    let appended = num(&d.status().await?, "/buffer/next_offset");
    let deadline = Instant::now() + Duration::from_secs(300);
    while consumed.distinct.load(Ordering::Relaxed) < appended && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if consumed.distinct.load(Ordering::Relaxed) >= appended {
        consumer.await.context("consumer task")??;
    } else {
        consumer.abort();
    }
    d.stop().await?;
    drop(proxy);
    drop(tansu);

    Ok(SoakResult {
        samples,
        appended,
        distinct: consumed.distinct.load(Ordering::Relaxed),
        redelivered: consumed.redelivered.load(Ordering::Relaxed),
        outages,
        csv,
        svg,
    })
}

fn write_csv(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut s = String::from(
        "t_s,acked,rss_mb,rss_anon_mb,fds,backlog_records,oldest_age_ms,buffer_mb,lat_p50_ms,lat_p99_ms,lat_max_ms,fetched,outage\n",
    );
    for x in samples {
        let _ = writeln!(
            s,
            "{:.1},{},{:.2},{:.2},{},{},{:.0},{:.2},{:.2},{:.2},{:.2},{},{}",
            x.t_s,
            x.acked,
            x.rss_mb,
            x.rss_anon_mb,
            x.fds,
            x.backlog_records,
            x.oldest_age_ms,
            x.buffer_mb,
            x.lat_p50_ms,
            x.lat_p99_ms,
            x.lat_max_ms,
            x.fetched,
            u8::from(x.outage)
        );
    }
    std::fs::write(path, s).with_context(|| format!("write {}", path.display()))
}

/// Five panels over time: RSS, open fds, backlog, buffer size, latency (log scale); outages shaded.
fn plot(
    path: &Path,
    samples: &[Sample],
    outages: &[(f64, f64, String)],
    spec: &SoakSpec,
) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 1250)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "ironbridge soak: {:.0} msg/s QoS 1 for {} min, fsync=always, outages shaded (cut, blackhole, slow 200 ms)",
            spec.rate,
            spec.duration.as_secs() / 60
        ),
        ("sans-serif", 18),
    )?;
    let panels = body.split_evenly((5, 1));
    let t_max = samples.last().map_or(1.0, |s| s.t_s) / 60.0;
    let charts: Vec<(&str, bool, Series)> = vec![
        (
            "RSS (MB)",
            false,
            vec![
                ("VmRSS", BLUE, Box::new(|s: &Sample| s.rss_mb)),
                (
                    "of it anonymous (heap)",
                    CYAN,
                    Box::new(|s: &Sample| s.rss_anon_mb),
                ),
            ],
        ),
        (
            "open file descriptors",
            false,
            vec![("fds", MAGENTA, Box::new(|s: &Sample| s.fds as f64))],
        ),
        (
            "backlog (k records)",
            false,
            vec![(
                "not yet in Kafka",
                RED,
                Box::new(|s: &Sample| s.backlog_records as f64 / 1e3),
            )],
        ),
        (
            "buffer on disk (MB)",
            false,
            vec![("segments", BLACK, Box::new(|s: &Sample| s.buffer_mb))],
        ),
        (
            "publish → consumer latency (ms, log)",
            true,
            vec![
                ("p50", GREEN, Box::new(|s: &Sample| s.lat_p50_ms)),
                ("p99", RED, Box::new(|s: &Sample| s.lat_p99_ms)),
                (
                    "gateway: oldest record not yet in Kafka",
                    BLACK,
                    Box::new(|s: &Sample| s.oldest_age_ms),
                ),
            ],
        ),
    ];
    for (area, (label, log, series)) in panels.iter().zip(charts) {
        let values: Vec<f64> = samples
            .iter()
            .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
            .filter(|v| v.is_finite())
            .collect();
        let hi = values.iter().copied().fold(0.0f64, f64::max).max(1.0) * 1.15;
        let mut b = ChartBuilder::on(area);
        b.margin(8).x_label_area_size(28).y_label_area_size(70);
        if log {
            let lo = values
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f64::MAX, f64::min)
                .clamp(0.01, 1.0);
            let mut c = b.build_cartesian_2d(0.0..t_max, (lo..hi).log_scale())?;
            draw_panel(&mut c, samples, outages, label, series, lo, hi)?;
        } else {
            let mut c = b.build_cartesian_2d(0.0..t_max, 0.0..hi)?;
            draw_panel(&mut c, samples, outages, label, series, 0.0, hi)?;
        }
    }
    root.present()?;
    Ok(())
}

fn draw_panel<'a, Y>(
    c: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    samples: &[Sample],
    outages: &[(f64, f64, String)],
    label: &str,
    series: Series<'_>,
    lo: f64,
    hi: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    c.configure_mesh()
        .x_desc("minutes")
        .y_desc(label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (a, b, _) in outages {
        c.draw_series(std::iter::once(Rectangle::new(
            [(a / 60.0, lo), (b / 60.0, hi)],
            RGBColor(255, 200, 120).mix(0.35).filled(),
        )))?;
    }
    for (name, color, f) in series {
        c.draw_series(LineSeries::new(
            samples
                .iter()
                .map(|s| (s.t_s / 60.0, f(s)))
                .filter(|(_, v)| v.is_finite() && *v >= lo),
            color.stroke_width(2),
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// The summary: each series' level after the first minute, at the end, and its peak.
pub fn summary(r: &SoakResult, spec: &SoakSpec) -> String {
    let mut out = String::new();
    let steady: Vec<&Sample> = r.samples.iter().filter(|s| !s.outage).collect();
    let warm = r.samples.iter().find(|s| s.t_s >= 60.0);
    let last = r.samples.last();
    let peak = |f: &Field| r.samples.iter().map(f).fold(0.0f64, f64::max);
    let at = |s: Option<&Sample>, f: &Field| s.map_or(f64::NAN, f);
    let mut p99s: Vec<f64> = steady
        .iter()
        .map(|s| s.lat_p99_ms)
        .filter(|v| v.is_finite())
        .collect();
    p99s.sort_by(f64::total_cmp);
    let med = p99s.get(p99s.len() / 2).copied().unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "| series | after 1 min | end | peak |\n|---|---|---|---|"
    );
    let rows: [(&str, Field); 5] = [
        ("RSS (MB)", Box::new(|s| s.rss_mb)),
        ("of it anonymous (MB)", Box::new(|s| s.rss_anon_mb)),
        ("open fds", Box::new(|s| s.fds as f64)),
        (
            "backlog not in Kafka (k records)",
            Box::new(|s| s.backlog_records as f64 / 1e3),
        ),
        ("buffer on disk (MB)", Box::new(|s| s.buffer_mb)),
    ];
    for (name, f) in rows {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.1} | {:.1} |",
            at(warm, &f),
            at(last, &f),
            peak(&f)
        );
    }
    let floor_rows: [(&str, Field); 2] = [
        ("RSS floor (MB)", Box::new(|s| s.rss_mb)),
        ("anonymous floor (MB)", Box::new(|s| s.rss_anon_mb)),
    ];
    let _ = write!(out, "\n| between outages | before the first |");
    for i in 1..=r.outages.len() {
        let _ = write!(out, " after outage {i} |");
    }
    let _ = writeln!(out, "\n|---|---|{}", "---|".repeat(r.outages.len()));
    for (name, f) in floor_rows {
        let _ = write!(out, "| {name} |");
        for v in floors(r, &f) {
            let _ = write!(out, " {v:.1} |");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nA floor is the lowest sample of a stretch: from 1 min in to the first outage, then from 90 s \
         after each outage's start (its catch-up done) to the next one or the end. Memory an outage \
         keeps for good makes this row climb; memory given back leaves it level."
    );
    let _ = writeln!(
        out,
        "\n{} samples every {} s over {} min at {:.0} msg/s; {} outages ({}); {} records appended, \
         {} distinct read back from Kafka by the consumer (not read: {}), {} redelivered copies; median of the per-interval p99 \
         latency outside outages: {med:.1} ms.",
        r.samples.len(),
        spec.sample_every.as_secs(),
        spec.duration.as_secs() / 60,
        spec.rate,
        r.outages.len(),
        r.outages
            .iter()
            .map(|(a, b, m)| format!("{m} {:.0}–{:.0} s", a, b))
            .collect::<Vec<_>>()
            .join(", "),
        r.appended,
        r.distinct,
        r.appended.saturating_sub(r.distinct),
        r.redelivered
    );
    out
}

/// The lowest value of `f` in each stretch between outages (see the summary's note).
fn floors(r: &SoakResult, f: &Field) -> Vec<f64> {
    let end = r.samples.last().map_or(0.0, |s| s.t_s + 1.0);
    let mut stretches = Vec::new();
    let mut from = 60.0;
    for (start, _, _) in &r.outages {
        stretches.push((from, *start));
        from = start + 90.0;
    }
    stretches.push((from, end));
    stretches
        .into_iter()
        .map(|(a, b)| {
            r.samples
                .iter()
                .filter(|s| s.t_s >= a && s.t_s < b)
                .map(f)
                // f64::min ignores NaN, so an empty stretch stays NaN.
                .fold(f64::NAN, f64::min)
        })
        .collect()
}
