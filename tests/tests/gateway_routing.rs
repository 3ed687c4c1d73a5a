//! The gateway's main job end to end, through the real `ironbridge` binary: 2,000 MQTT messages
//! from independent clients (paho and mosquitto_pub; QoS 0, 1 and 2; MQTT 3.1.1 and 5 with user
//! properties; retained) reach Kafka — checked with the independent confluent-kafka client — on the
//! right topics, with the right keys (default and templates), headers, timestamps and the
//! partitions Java's default partitioner would pick (murmur2 computed independently in
//! `tests/py/kafka_tool.py`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    Delivery, Gateway, GatewayOptions, Progress, Route, StreamPublisher, StreamSpec,
    assert_complete, buffer_offset, java_partitions, metric, mosquitto_lines, now_ms, num,
    parse_payload, prepare, within,
};
use ironbridge_e2e::{External, KafkaTool, MqttVersion, Storage, Tansu, require};

const NEEDS: &[External] = &[
    External::Tansu,
    External::PythonVenv,
    External::MosquittoClients,
];
const GATEWAY_ID: &str = "e2e-routing";
/// Kafka topics and their partition counts.
const TOPICS: [(&str, u32); 4] = [("temps", 6), ("pressures", 3), ("mqtt", 2), ("alarms", 1)];
/// Clock granularity between the gateway's acceptance stamp and the test's own clock readings.
const CLOCK_SLACK_MS: i64 = 20;

/// What every record of one publisher job must look like.
struct Expect {
    kafka_topic: &'static str,
    key: String,
    qos: &'static str,
    retain: &'static str,
    client_id: String,
    /// Headers beyond the standard ones: user properties and content type.
    extra: Vec<(&'static str, &'static str)>,
    /// Wall-clock span of the publisher run (ms since the epoch).
    window: (i64, i64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_messages_are_routed_keyed_partitioned_and_stamped() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "routing test", routing()).await
}

fn topics(f: impl Fn(usize) -> String, n: usize) -> Vec<String> {
    (0..n).map(f).collect()
}

async fn routing() -> Result<()> {
    let p = Progress::new("routing");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    for (t, p) in TOPICS {
        kafka.create_topic(t, p).await?;
    }
    let gw = Gateway::start(GatewayOptions {
        id: GATEWAY_ID.into(),
        kafka: Some(tansu.bootstrap()),
        routes: vec![
            Route::new("plant/+/temperature", "temps"),
            Route::new("plant/+/pressure", "pressures").key("{level[1]}/{client_id}"),
            Route::new("alarms/#", "alarms").key("alarm-{level[1]}"),
        ],
        ..Default::default()
    })
    .await?;
    p.note("tansu and the gateway are up");
    let port = gw.mqtt_port();

    let temp = topics(|i| format!("plant/line{i}/temperature"), 8);
    let press = topics(|i| format!("plant/line{i}/pressure"), 4);
    let other = topics(|i| format!("other/dev{i}"), 4);
    let alarm = topics(|i| format!("alarms/press{i}"), 2);

    // A: paho, MQTT 5, QoS 1, user properties and content type: 8 × 125 = 1000.
    let mut a = StreamSpec::new(port, "temp-sensors", temp.clone(), 125);
    a.user_properties = vec![
        ("unit".into(), "degC".into()),
        ("site".into(), "north".into()),
    ];
    a.content_type = Some("text/plain".into());
    // B: paho, MQTT 3.1.1, QoS 2: 4 × 100 = 400.
    let mut b = StreamSpec::new(port, "press-plc", press.clone(), 100);
    b.version = MqttVersion::V311;
    b.qos = 2;
    let pa = StreamPublisher::spawn(&a)?;
    let pb = StreamPublisher::spawn(&b)?;
    // C: mosquitto_pub, MQTT 5, QoS 0, a user property, unmatched (default topic): 4 × 100 = 400.
    // D: mosquitto_pub, MQTT 3.1.1, QoS 1, retained: 2 × 100 = 200.
    let mut jobs = tokio::task::JoinSet::new();
    for (i, t) in other.iter().enumerate() {
        let t = t.clone();
        jobs.spawn(async move {
            let lines: Vec<String> = (0..100).map(|s| format!("{t}#{s}")).collect();
            let start = now_ms();
            mosquitto_lines(
                port,
                &t,
                0,
                MqttVersion::V5,
                &format!("dev-{i}"),
                &lines,
                &["-D", "publish", "user-property", "origin", "mosquitto"],
            )
            .await?;
            Ok::<_, anyhow::Error>((t, (start, now_ms())))
        });
    }
    for (i, t) in alarm.iter().enumerate() {
        let t = t.clone();
        jobs.spawn(async move {
            let lines: Vec<String> = (0..100).map(|s| format!("{t}#{s}")).collect();
            let start = now_ms();
            mosquitto_lines(
                port,
                &t,
                1,
                MqttVersion::V311,
                &format!("alarm-{i}"),
                &lines,
                &["-r"],
            )
            .await?;
            Ok::<_, anyhow::Error>((t, (start, now_ms())))
        });
    }
    let mut windows: HashMap<String, (i64, i64)> = HashMap::new();
    while let Some(r) = jobs.join_next().await {
        let (t, w) = r??;
        windows.insert(t, w);
    }
    p.note("mosquitto_pub jobs done");
    let ra = pa.finish(Duration::from_secs(60)).await?;
    let rb = pb.finish(Duration::from_secs(60)).await?;
    for (name, r, n) in [("A", &ra, 1000), ("B", &rb, 400)] {
        ensure!(
            !r.broken && r.acked.len() == n && r.unacked == 0,
            "publisher {name}: {r:?}"
        );
    }

    p.note("paho publishers done");
    // The expectations per MQTT topic.
    let mut expect: HashMap<String, Expect> = HashMap::new();
    for t in &temp {
        expect.insert(
            t.clone(),
            Expect {
                kafka_topic: "temps",
                key: t.clone(),
                qos: "1",
                retain: "false",
                client_id: "temp-sensors".into(),
                extra: vec![
                    ("mqtt_content_type", "text/plain"),
                    ("unit", "degC"),
                    ("site", "north"),
                ],
                window: (ra.started_ms, ra.finished_ms),
            },
        );
    }
    for t in &press {
        let line = t.split('/').nth(1).unwrap_or_default();
        expect.insert(
            t.clone(),
            Expect {
                kafka_topic: "pressures",
                key: format!("{line}/press-plc"),
                qos: "2",
                retain: "false",
                client_id: "press-plc".into(),
                extra: vec![],
                window: (rb.started_ms, rb.finished_ms),
            },
        );
    }
    for (i, t) in other.iter().enumerate() {
        expect.insert(
            t.clone(),
            Expect {
                kafka_topic: "mqtt",
                key: t.clone(),
                qos: "0",
                retain: "false",
                client_id: format!("dev-{i}"),
                extra: vec![("origin", "mosquitto")],
                window: windows[t],
            },
        );
    }
    for (i, t) in alarm.iter().enumerate() {
        expect.insert(
            t.clone(),
            Expect {
                kafka_topic: "alarms",
                key: format!("alarm-press{i}"),
                qos: "1",
                retain: "true",
                client_id: format!("alarm-{i}"),
                extra: vec![],
                window: windows[t],
            },
        );
    }

    let status = gw.wait_forwarded(Duration::from_secs(60)).await?;
    p.note("gateway forwarded everything");
    let mut records = Vec::new();
    for (t, _) in TOPICS {
        records.extend(kafka.consume(t, None).await?);
    }
    p.note(format!("consumed {} records", records.len()));
    let d = Delivery::analyse(records)?;
    for group in [&temp, &other] {
        assert_complete(&d, group, 0, if group.len() == 8 { 125 } else { 100 })?;
    }
    assert_complete(&d, &press, 0, 100)?;
    assert_complete(&d, &alarm, 0, 100)?;
    ensure!(d.unique.len() == 2000, "{} unique records", d.unique.len());
    // Every accepted message has its own buffer offset, 0 to 1999.
    let offsets: BTreeSet<u64> = d.unique.iter().map(buffer_offset).collect::<Result<_>>()?;
    ensure!(
        offsets == (0..2000).collect::<BTreeSet<u64>>(),
        "buffer offsets are not exactly 0..2000: {} distinct, first {:?}, last {:?}",
        offsets.len(),
        offsets.first(),
        offsets.last()
    );

    // Keys, headers, timestamps.
    for r in &d.unique {
        let (mqtt_topic, _) = parse_payload(r)?;
        let e = expect
            .get(&mqtt_topic)
            .with_context(|| format!("unexpected MQTT topic {mqtt_topic}"))?;
        let ctx = || format!("record {r:?}");
        ensure!(r.topic == e.kafka_topic, "wrong Kafka topic: {}", ctx());
        ensure!(r.key_str() == Some(e.key.as_str()), "wrong key: {}", ctx());
        let want: Vec<(&str, &str)> = [
            ("mqtt_topic", mqtt_topic.as_str()),
            ("mqtt_qos", e.qos),
            ("mqtt_retain", e.retain),
            ("mqtt_client_id", e.client_id.as_str()),
            ("gateway_id", GATEWAY_ID),
        ]
        .into_iter()
        .chain(e.extra.iter().copied())
        .collect();
        for (name, value) in &want {
            ensure!(
                r.header_str(name) == Some(*value),
                "header {name} should be {value:?}: {}",
                ctx()
            );
        }
        let names: BTreeSet<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: BTreeSet<&str> = want
            .iter()
            .map(|(n, _)| *n)
            .chain(["buffer_offset"])
            .collect();
        ensure!(
            names == want_names && names.len() == r.headers.len(),
            "header names {names:?}, expected {want_names:?} (each once): {}",
            ctx()
        );
        ensure!(
            r.timestamp_type == 1,
            "timestamp type {} is not CreateTime: {}",
            r.timestamp_type,
            ctx()
        );
        let (from, to) = e.window;
        ensure!(
            r.timestamp >= from - CLOCK_SLACK_MS && r.timestamp <= to + CLOCK_SLACK_MS,
            "Kafka timestamp {} is outside the publisher's run {from}..{to}: {}",
            r.timestamp,
            ctx()
        );
    }
    // Acceptance times never go backwards within one MQTT topic.
    let mut last_ts: HashMap<&str, i64> = HashMap::new();
    for r in &d.unique {
        let t = r.header_str("mqtt_topic").unwrap_or_default();
        let prev = last_ts.insert(t, r.timestamp).unwrap_or(i64::MIN);
        ensure!(
            r.timestamp >= prev,
            "{t}: timestamp {} after {prev}",
            r.timestamp
        );
    }

    // Partitions: where the Java client would have put each key.
    for (t, n) in TOPICS {
        let recs: Vec<_> = d.unique.iter().filter(|r| r.topic == t).collect();
        let keys: BTreeSet<String> = recs
            .iter()
            .map(|r| r.key_str().unwrap_or_default().to_string())
            .collect();
        let keys: Vec<String> = keys.into_iter().collect();
        let java = java_partitions(&keys, n).await?;
        let mut used = BTreeSet::new();
        for r in &recs {
            let k = r.key_str().unwrap_or_default();
            ensure!(
                Some(&r.partition) == java.get(k),
                "{t}: key {k:?} is in partition {}, Java's murmur2 partitioner says {:?}",
                r.partition,
                java.get(k)
            );
            used.insert(r.partition);
        }
        if n > 1 {
            ensure!(
                used.len() > 1,
                "{t}: all keys in one partition, the check proves little"
            );
        }
    }

    // The status and the metrics agree.
    let s = gw.status().await?;
    let route = |i: usize| num(&s, &format!("/uplink/routes/{i}/records"));
    ensure!(
        (route(0), route(1), route(2)) == (Some(1000), Some(400), Some(200)),
        "route counters: {s}"
    );
    ensure!(
        num(&s, "/uplink/default_route/records") == Some(400),
        "default route: {s}"
    );
    ensure!(
        num(&s, "/uplink/dead_lettered") == Some(0)
            && num(&s, "/uplink/dropped_unmatched") == Some(0),
        "{s}"
    );
    ensure!(
        num(&s, "/mqtt/publishes_appended") == Some(2000)
            && num(&s, "/buffer/next_offset") == Some(2000),
        "{s}"
    );
    let m = gw.metrics().await?;
    for (labels, want) in [
        ("{route=\"plant/+/temperature\",topic=\"temps\"}", 1000.0),
        ("{route=\"plant/+/pressure\",topic=\"pressures\"}", 400.0),
        ("{route=\"alarms/#\",topic=\"alarms\"}", 200.0),
        ("{route=\"default\",topic=\"mqtt\"}", 400.0),
    ] {
        let name = format!("ironbridge_uplink_route_records_total{labels}");
        ensure!(
            metric(&m, &name) == Some(want),
            "{name} = {:?}, want {want}",
            metric(&m, &name)
        );
    }
    eprintln!(
        "routing: 2000 messages, {} records read from Kafka ({} duplicates with identical ids), \
         forwarded_records {:?}",
        d.unique.len() + d.duplicates,
        d.duplicates,
        num(&status, "/uplink/forwarded_records")
    );
    Ok(())
}
