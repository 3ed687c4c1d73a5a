//! The Kafka broker (tansu, sqlite storage) stops and comes back on the same port while the real
//! `ironbridge` daemon runs: messages published before, during and after the broker's downtime all
//! arrive, in order per key, duplicates only as identical records with the same `gateway_id` +
//! `buffer_offset`.

use std::time::Duration;

use anyhow::{Result, ensure};
use ironbridge_e2e::gateway::{
    Delivery, Gateway, GatewayOptions, Progress, Route, StreamPublisher, StreamSpec,
    assert_complete, num, prepare, text, within,
};
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];
/// Messages per key in each phase (before, during, after).
const PER_PHASE: u32 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_while_online_loses_nothing() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "broker restart", broker_restart()).await
}

async fn broker_restart() -> Result<()> {
    let p = Progress::new("broker-restart");
    let dir = tempfile::tempdir()?;
    let mut tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("telemetry", 3).await?;
    let gw = Gateway::start(
        GatewayOptions {
            id: "e2e-broker-restart".into(),
            kafka: Some(tansu.bootstrap()),
            routes: vec![Route::new("plant/#", "telemetry")],
            ..Default::default()
        }
        .kafka_setting("request_timeout_ms", "2000"),
    )
    .await?;
    let topics: Vec<String> = (0..4).map(|i| format!("plant/m{i}/temp")).collect();
    let phase = |start: u32, rate: f64| {
        let mut s = StreamSpec::new(gw.mqtt_port(), "machines", topics.clone(), PER_PHASE);
        s.start = start;
        s.rate = rate;
        s
    };

    // Before: delivered while the broker is up.
    let r = StreamPublisher::spawn(&phase(0, 0.0))?
        .finish(Duration::from_secs(30))
        .await?;
    ensure!(
        r.acked.len() == 600,
        "before: {} acknowledged",
        r.acked.len()
    );
    gw.wait_forwarded(Duration::from_secs(30)).await?;
    p.note("before: 600 delivered; stopping the broker");

    // During: the broker is down; the gateway accepts and buffers.
    tansu.stop().await?;
    let r = StreamPublisher::spawn(&phase(PER_PHASE, 0.0))?
        .finish(Duration::from_secs(30))
        .await?;
    ensure!(
        r.acked.len() == 600,
        "during: {} acknowledged",
        r.acked.len()
    );
    let s = gw
        .wait_status(
            "the broker's absence in the status",
            Duration::from_secs(20),
            |s| {
                text(s, "/uplink/state").is_some_and(|st| st != "connected")
                    && num(s, "/uplink/lag_records") == Some(600)
            },
        )
        .await?;
    p.note(format!(
        "during: 600 buffered, uplink {} ({})",
        text(&s, "/uplink/state").unwrap_or_default(),
        text(&s, "/uplink/reason").unwrap_or_default()
    ));

    // After: the broker is back on the same port; publishing goes on during the catch-up.
    tansu.restart().await?;
    let after = StreamPublisher::spawn(&phase(2 * PER_PHASE, 200.0))?;
    let r = after.finish(Duration::from_secs(30)).await?;
    ensure!(
        r.acked.len() == 600,
        "after: {} acknowledged",
        r.acked.len()
    );
    let s = gw.wait_forwarded(Duration::from_secs(60)).await?;
    p.note(format!(
        "after: caught up; {:?} retries",
        num(&s, "/uplink/retries")
    ));
    ensure!(
        text(&s, "/uplink/state") == Some("connected")
            && num(&s, "/uplink/dead_lettered") == Some(0),
        "{s}"
    );

    let records = kafka.consume("telemetry", None).await?;
    let read = records.len();
    let d = Delivery::analyse(records)?;
    assert_complete(&d, &topics, 0, 3 * PER_PHASE)?;
    p.note(format!(
        "broker restart: 1800 messages (600 before, 600 while down, 600 after), {read} records read, \
         {} duplicates with identical gateway_id + buffer_offset",
        d.duplicates
    ));
    Ok(())
}
