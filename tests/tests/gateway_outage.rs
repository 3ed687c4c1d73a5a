//! Uplink outages while devices keep publishing, through the real `ironbridge` binary: the Kafka
//! connection goes through a [`FaultProxy`] (tansu advertises the proxy, so every connection the
//! gateway makes after bootstrapping passes it too). The proxy cuts (connections closed, new ones
//! refused) or blackholes (connections stay open, nothing flows, a healed partition delivers what
//! was held) for several seconds; the status must show the backlog, and afterwards every message
//! must be in Kafka, in order per key, with duplicates only as identical records with the same
//! `gateway_id` + `buffer_offset`.

use std::time::Duration;

use anyhow::{Result, ensure};
use ironbridge_e2e::gateway::{
    Delivery, Gateway, GatewayOptions, Progress, ProxiedKafka, Route, StreamPublisher, StreamSpec,
    assert_complete, metric, num, prepare, text, within,
};
use ironbridge_e2e::{External, KafkaTool, Mode, require};
use tokio::time::{Instant, sleep_until};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];
/// How long the uplink stays broken.
const OUTAGE: Duration = Duration::from_secs(6);
/// Keys (MQTT topics) and messages per key: 6 × 400 = 2400 at 200 messages/s, about 12 s.
const KEYS: usize = 6;
const PER_KEY: u32 = 400;
const RATE: f64 = 200.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_uplink_buffers_then_delivers_everything_in_order() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "cut outage", outage(Mode::Cut)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_uplink_buffers_then_delivers_everything_in_order() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(150),
        "blackhole outage",
        outage(Mode::Blackhole),
    )
    .await
}

async fn outage(mode: Mode) -> Result<()> {
    let p = Progress::new(if mode == Mode::Cut {
        "cut"
    } else {
        "blackhole"
    });
    let kafka = ProxiedKafka::start().await?;
    let tool = KafkaTool::new(kafka.direct());
    tool.create_topic("telemetry", 3).await?;
    let gw = Gateway::start(
        GatewayOptions {
            id: "e2e-outage".into(),
            kafka: Some(kafka.bootstrap()),
            routes: vec![Route::new("plant/#", "telemetry")],
            ..Default::default()
        }
        // A blackholed request is noticed after this long.
        .kafka_setting("request_timeout_ms", "2000"),
    )
    .await?;
    gw.wait_status("uplink connected", Duration::from_secs(20), |s| {
        text(s, "/uplink/state") == Some("connected")
    })
    .await?;
    p.note("gateway connected to Kafka through the proxy");

    let topics: Vec<String> = (0..KEYS)
        .map(|i| format!("plant/line{i}/temperature"))
        .collect();
    let mut spec = StreamSpec::new(gw.mqtt_port(), "line-sensors", topics.clone(), PER_KEY);
    spec.rate = RATE;
    spec.ack_timeout = Duration::from_secs(20);
    let mut publisher = StreamPublisher::spawn(&spec)?;
    publisher.wait_acked(300, Duration::from_secs(20)).await?;
    gw.wait_status("records flowing", Duration::from_secs(20), |s| {
        num(s, "/uplink/forwarded_records").is_some_and(|n| n >= 100)
    })
    .await?;

    let cut_at = Instant::now();
    kafka.proxy.set_mode(mode);
    p.note(format!("{mode} at {} acknowledged", publisher.acked()));
    let during = gw
        .wait_status(
            "backlog shown while the uplink is broken",
            Duration::from_secs(20),
            |s| {
                text(s, "/uplink/state").is_some_and(|st| st != "connected")
                    && num(s, "/uplink/lag_records").is_some_and(|n| n > 0)
            },
        )
        .await?;
    p.note(format!(
        "status shows {} ({}), lag {:?} records",
        text(&during, "/uplink/state").unwrap_or_default(),
        text(&during, "/uplink/reason").unwrap_or_default(),
        num(&during, "/uplink/lag_records")
    ));
    // The fault lasts OUTAGE from the moment it was switched on (the duration under test).
    sleep_until(cut_at + OUTAGE).await;
    let before = gw.status().await?;
    let metrics = gw.metrics().await?;
    kafka.proxy.set_mode(Mode::Pass);
    p.note("proxy passes again");

    // While broken: nothing forwarded, the backlog grew with the publishing, the status and the
    // metrics say so, and the gateway stays healthy (buffering is not a failure).
    ensure!(
        text(&before, "/uplink/state").is_some_and(|st| st != "connected"),
        "state at the end of the outage: {before}"
    );
    ensure!(
        num(&before, "/uplink/forwarded_records") == num(&during, "/uplink/forwarded_records"),
        "records were forwarded during the outage: {during} then {before}"
    );
    let lag_during = num(&during, "/uplink/lag_records").unwrap_or(0);
    let lag_before = num(&before, "/uplink/lag_records").unwrap_or(0);
    ensure!(
        lag_before > lag_during && lag_before >= 500,
        "the backlog did not grow while publishing: {lag_during} then {lag_before}"
    );
    ensure!(
        num(&before, "/uplink/lag_oldest_age_ms").is_some_and(|ms| ms >= 2000),
        "backlog age: {before}"
    );
    ensure!(
        before.pointer("/uplink/last_error/message").is_some(),
        "no last_error in {before}"
    );
    ensure!(
        metric(&metrics, "ironbridge_uplink_lag_records").is_some_and(|v| v > 0.0)
            && metric(&metrics, "ironbridge_uplink_state{state=\"connected\"}") == Some(0.0),
        "metrics during the outage:\n{metrics}"
    );
    let (code, health) = gw.healthz().await?;
    ensure!(
        code == 200,
        "/healthz {code} while only buffering: {health}"
    );

    let report = publisher.finish(Duration::from_secs(60)).await?;
    ensure!(
        !report.broken && report.acked.len() == KEYS * PER_KEY as usize && report.unacked == 0,
        "publisher: published {}, acked {}, broken {}",
        report.published,
        report.acked.len(),
        report.broken
    );
    let status = gw.wait_forwarded(Duration::from_secs(60)).await?;
    p.note(format!(
        "caught up: forwarded {:?} records in {:?} produce requests, {:?} retries",
        num(&status, "/uplink/forwarded_records"),
        num(&status, "/uplink/produce_requests"),
        num(&status, "/uplink/retries")
    ));
    ensure!(
        text(&status, "/uplink/state") == Some("connected")
            && num(&status, "/uplink/dead_lettered") == Some(0),
        "{status}"
    );

    let records = tool.consume("telemetry", None).await?;
    let read = records.len();
    let d = Delivery::analyse(records)?;
    assert_complete(&d, &topics, 0, PER_KEY)?;
    ensure!(d.unique.len() == KEYS * PER_KEY as usize);
    p.note(format!(
        "{mode}: {} messages, outage {:?}, {read} records read, {} duplicates (identical, same \
         gateway_id + buffer_offset), lag at the end of the outage {lag_before}",
        d.unique.len(),
        OUTAGE,
        d.duplicates
    ));
    Ok(())
}

/// A link too slow to carry one full produce request within `request_timeout_ms` (a cellular
/// uplink): the uplink must shrink its requests after the timeouts and drain the backlog,
/// instead of resending the same request forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_link_drains_with_smaller_requests() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(180), "slow link", slow_link()).await
}

async fn slow_link() -> Result<()> {
    /// 100 kB/s: the backlog (~0.8 MB in one request of up to 1 MB) needs ~8 s, 4× the timeout.
    const BYTES_PER_SEC: u64 = 100_000;
    const TIMEOUT_MS: u64 = 2_000;
    let p = Progress::new("slow link");
    let kafka = ProxiedKafka::start().await?;
    let tool = KafkaTool::new(kafka.direct());
    tool.create_topic("telemetry", 1).await?;
    let gw = Gateway::start(
        GatewayOptions {
            id: "e2e-slow-link".into(),
            kafka: Some(kafka.bootstrap()),
            routes: vec![Route::new("plant/#", "telemetry")],
            ..Default::default()
        }
        .kafka_setting("request_timeout_ms", &TIMEOUT_MS.to_string())
        // Uncompressed, so the bytes on the wire are what the request limit counts.
        .kafka_setting("compression", "\"none\"")
        .kafka_setting("retry_backoff_max_ms", "1000"),
    )
    .await?;
    gw.wait_status("uplink connected", Duration::from_secs(20), |s| {
        text(s, "/uplink/state") == Some("connected")
    })
    .await?;

    // Build a backlog while the link is down, so it goes out in full-size requests.
    kafka.proxy.set_mode(Mode::Cut);
    let topics: Vec<String> = (0..KEYS).map(|i| format!("plant/field{i}/flow")).collect();
    let per_key = 700;
    let mut spec = StreamSpec::new(gw.mqtt_port(), "field-sensors", topics.clone(), per_key);
    spec.ack_timeout = Duration::from_secs(30);
    let report = StreamPublisher::spawn(&spec)?
        .finish(Duration::from_secs(60))
        .await?;
    ensure!(
        !report.broken && report.acked.len() == KEYS * per_key as usize,
        "publisher: published {}, acked {}",
        report.published,
        report.acked.len()
    );
    let before = gw.status().await?;
    let limit_before = num(&before, "/uplink/request_limit_bytes");
    ensure!(
        limit_before == Some(1_000_000),
        "request limit before: {before}"
    );
    p.note(format!(
        "backlog of {:?} records; link now {BYTES_PER_SEC} B/s",
        num(&before, "/uplink/lag_records")
    ));

    let slow_at = Instant::now();
    kafka.proxy.set_mode(Mode::Slow {
        delay: Duration::ZERO,
        bytes_per_sec: Some(BYTES_PER_SEC),
    });
    let status = gw.wait_forwarded(Duration::from_secs(150)).await?;
    let timeouts = num(&status, "/uplink/request_timeouts").unwrap_or(0);
    p.note(format!(
        "drained in {:?}: {:?} produce requests, {timeouts} timed out, request limit now {:?}",
        slow_at.elapsed(),
        num(&status, "/uplink/produce_requests"),
        num(&status, "/uplink/request_limit_bytes")
    ));
    ensure!(
        timeouts >= 1,
        "no request timed out, so the link was not too slow for a full request: {status}"
    );
    let metrics = gw.metrics().await?;
    ensure!(
        metric(&metrics, "ironbridge_uplink_request_timeouts_total") == Some(timeouts as f64),
        "metrics:\n{metrics}"
    );
    kafka.proxy.set_mode(Mode::Pass);

    let records = tool.consume("telemetry", None).await?;
    let d = Delivery::analyse(records)?;
    assert_complete(&d, &topics, 0, per_key)?;
    p.note(format!(
        "{} messages in order, {} duplicates (requests that timed out but were stored)",
        d.unique.len(),
        d.duplicates
    ));
    Ok(())
}
