//! Sparkplug B ingest end to end, through the real `ironbridge` binary: a third-party edge node
//! written in Python (Google protobuf from the same .proto + paho, `tests/py/sparkplug_node.py`)
//! publishes births and data by alias to the gateway; the decoded records are read back from
//! Kafka (Tansu) with the independent confluent-kafka client:
//!
//! - data by alias only is decoded with the names and datatypes of its birth (signed values in
//!   both Tahu conventions, UInt64 max, arrays),
//! - a seq gap makes the gateway send NCMD `Node Control/Rebirth`, which the Python node sees,
//! - after the rebirth with *new* aliases, data is resolved with the new ones, while the backlog
//!   before it was resolved with the old ones,
//! - a malformed payload, an oversize payload and a wrong namespace are counted, the daemon
//!   stays up.
//!
//! And the gateway as a Sparkplug host (`host_state_reorder_window_and_stale_records`), with
//! Eclipse Tahu's JavaScript codec (`tests/js/tahu_host.js`) as the third-party edge node and
//! observer:
//!
//! - `host_id`: the retained QoS 1 STATE birth, republished when overwritten offline, the
//!   emulated will after kill -9, offline on a graceful stop;
//! - `reorder_timeout_ms`: a message late within the window is counted and asks for nothing; a
//!   gap still open when the window ends asks for a rebirth, not before;
//! - `sparkplug_metrics`: DDEATH and NDEATH become one stale record per metric of the births.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Progress, Route, num, prepare, within};
use ironbridge_e2e::kafka::Record;
use ironbridge_e2e::tahu::TahuHost;
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_node_is_decoded_to_kafka_with_rebirth_on_seq_gap() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(120), "sparkplug ingest test", ingest()).await
}

fn json(r: &Record) -> Result<Value> {
    serde_json::from_str(r.value_str().context("value is not UTF-8")?)
        .with_context(|| format!("value is not JSON: {:?}", r.value_str()))
}

async fn ingest() -> Result<()> {
    let p = Progress::new("sparkplug-ingest");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("sp-metrics", 2).await?;
    kafka.create_topic("sp-messages", 1).await?;
    let gw = Gateway::start(
        GatewayOptions {
            id: "e2e-sparkplug".into(),
            kafka: Some(tansu.bootstrap()),
            routes: vec![
                Route::new("spBv1.0/plant/DDATA/thirdparty/dev1", "sp-metrics")
                    .value("sparkplug_metrics")
                    .key("{sparkplug.edge_node_id}/{sparkplug.device_id}"),
                Route::new("spBv1.0/#", "sp-messages").value("sparkplug_json"),
            ],
            extra_toml:
                "[sparkplug.ingest]\nrequest_rebirth = true\nrebirth_min_interval_ms = 1000\n\
                     max_metrics = 50\n"
                    .into(),
            ..Default::default()
        }
        .kafka_setting("unmatched", "\"drop\""),
    )
    .await?;
    gw.wait_status("ingest subscribed", Duration::from_secs(10), |s| {
        s.pointer("/sparkplug_ingest/subscribed") == Some(&Value::Bool(true))
    })
    .await?;
    p.note("tansu, gateway and ingest are up");

    // The third-party node runs its whole scenario; its stdout is the event log.
    let mut child = Command::new(External::PythonVenv.path())
        .arg(ironbridge_e2e::external::py_dir().join("sparkplug_node.py"))
        .args(["--port", &gw.mqtt_port().to_string(), "--oversize", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting sparkplug_node.py")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut events: Vec<Value> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("node said {line:?}"))?;
        events.push(v);
    }
    let status = child.wait().await?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            e.read_to_string(&mut err).await?;
        }
        bail!(
            "sparkplug_node.py exited with {status}; events {events:?}; stderr {err}\nlog tail:\n{}",
            gw.log_tail()
        );
    }
    p.note("python node done");
    // The gateway's rebirth request reached the third-party node.
    let ncmd = events
        .iter()
        .find(|e| e["event"] == "ncmd")
        .context("no NCMD event")?;
    ensure!(ncmd["topic"] == "spBv1.0/plant/NCMD/thirdparty", "{ncmd}");
    ensure!(
        ncmd["metrics"][0]["name"] == "Node Control/Rebirth"
            && ncmd["metrics"][0]["boolean_value"] == true,
        "{ncmd}"
    );
    ensure!(events.iter().any(|e| e["event"] == "done"), "{events:?}");

    // Counters: one gap, one rebirth request, malformed, oversize, wrong namespace; alive.
    let s = gw
        .wait_status(
            "ingest counted the bad input",
            Duration::from_secs(10),
            |s| {
                num(s, "/sparkplug_ingest/malformed") >= Some(1)
                    && num(s, "/sparkplug_ingest/oversize") >= Some(1)
                    && num(s, "/sparkplug_ingest/wrong_namespace") >= Some(1)
            },
        )
        .await?;
    ensure!(num(&s, "/sparkplug_ingest/seq_gaps") == Some(1), "{s}");
    ensure!(
        num(&s, "/sparkplug_ingest/rebirth_requests") == Some(1),
        "{s}"
    );
    let nodes = s["sparkplug_ingest"]["nodes"].as_array().context("nodes")?;
    let node = nodes
        .iter()
        .find(|n| n["edge_node_id"] == "thirdparty")
        .context("node view")?;
    ensure!(node["online"] == true && node["bd_seq"] == 0, "{node}");
    ensure!(node["devices"]["dev1"]["metrics"] == 11, "{node}");
    let metrics = gw.metrics().await?;
    ensure!(
        metrics.contains("ironbridge_sparkplug_ingest_oversize_total 1"),
        "{metrics}"
    );
    let (code, _) = gw.healthz().await?;
    ensure!(code == 200, "healthz {code}");

    // Kafka: per-metric records of dev1's DDATA. 7 metrics + 1 + 1 after the rebirth.
    gw.wait_forwarded(Duration::from_secs(30)).await?;
    let recs = kafka.consume("sp-metrics", Some(9)).await?;
    ensure!(recs.len() == 9, "{} records", recs.len());
    // One key, so one partition: Kafka offset order is log order.
    let mut recs = recs;
    recs.sort_by_key(|r| r.offset);
    let vals: Vec<Value> = recs.iter().map(json).collect::<Result<_>>()?;
    for r in &recs {
        ensure!(
            r.key_str() == Some("thirdparty/dev1"),
            "key {:?}",
            r.key_str()
        );
        ensure!(r.header_str("sparkplug_metric_index").is_some());
    }
    let by = |seq: u64, name: &str| {
        vals.iter()
            .find(|v| v["seq"] == seq && v["name"] == name)
            .cloned()
            .with_context(|| format!("no record for {name} seq {seq}: {vals:#?}"))
    };
    // Before the rebirth (aliases 10..): every value typed by the first DBIRTH.
    let t = by(2, "temp")?;
    ensure!(t["value"] == 21.5 && t["datatype"] == "Float", "{t}");
    ensure!(
        t["group_id"] == "plant" && t["edge_node_id"] == "thirdparty",
        "{t}"
    );
    ensure!(
        t["device_id"] == "dev1" && t["message_type"] == "DDATA",
        "{t}"
    );
    ensure!(t["quality"] == "good" && t["is_null"] == false, "{t}");
    ensure!(
        t["alias"] == 10 && t["timestamp"].as_u64() > Some(1_600_000_000_000),
        "{t}"
    );
    ensure!(by(2, "count")?["value"] == -7, "sign-extended Int16");
    ensure!(by(2, "small")?["value"] == -1, "width-only Int8");
    ensure!(by(2, "big")?["value"] == u64::MAX, "UInt64 max");
    ensure!(by(2, "flags")?["value"] == serde_json::json!([false, true]));
    ensure!(by(2, "ints")?["value"] == serde_json::json!([-3, 4]));
    ensure!(by(2, "names")?["value"] == serde_json::json!(["ab", "", "c"]));
    ensure!(by(4, "temp")?["value"] == 21.75, "the record after the gap");
    // After the rebirth, temp is alias 20: the last record, resolved with the new birth.
    let t = vals.last().context("last record")?;
    ensure!(t["name"] == "temp", "{t}");
    ensure!(
        t["value"] == 22.5 && t["alias"] == 20 && t["seq"] == 2,
        "{t}"
    );

    // Per-message records: births, the NCMD the gateway sent, and the bad payload.
    let msgs = kafka.consume("sp-messages", None).await?;
    let msgs: Vec<Value> = msgs.iter().map(json).collect::<Result<_>>()?;
    let kinds: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m["message_type"].as_str())
        .collect();
    ensure!(
        kinds.iter().filter(|k| **k == "DBIRTH").count() == 2,
        "{kinds:?}"
    );
    let ncmd = msgs
        .iter()
        .find(|m| m["message_type"] == "NCMD")
        .context("the rebirth NCMD in Kafka")?;
    ensure!(
        ncmd["metrics"][0]["name"] == "Node Control/Rebirth" && ncmd["metrics"][0]["value"] == true,
        "{ncmd}"
    );
    let dbirth = msgs
        .iter()
        .find(|m| m["message_type"] == "DBIRTH")
        .context("DBIRTH")?;
    ensure!(
        dbirth["metrics"][0]["properties"]["engUnit"]["value"] == "degC",
        "{dbirth}"
    );
    let bad = msgs
        .iter()
        .find(|m| m["edge_node_id"] == "badnode" && m.get("error").is_some())
        .context("the malformed payload with its error")?;
    ensure!(bad["payload_base64"] == "////AQ==", "{bad}");
    p.note("kafka records checked");
    Ok(())
}

const HOST_NEEDS: &[External] = &[
    External::Tansu,
    External::PythonVenv,
    External::Node,
    External::TahuJs,
];
const HOST_ID: &str = "ironbridge-host";
const STATE_TOPIC: &str = "spBv1.0/STATE/ironbridge-host";
const REORDER_MS: u64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_state_reorder_window_and_stale_records() -> Result<()> {
    if !require(HOST_NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "sparkplug host test", as_host()).await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A Tahu metric (`type` is Tahu's datatype name).
fn m(name: &str, alias: u64, ty: &str, value: Value) -> Value {
    json!({"name": name, "alias": alias, "type": ty, "value": value, "timestamp": now_ms()})
}

/// A node metric, by name only.
fn named(name: &str, ty: &str, value: Value) -> Value {
    json!({"name": name, "type": ty, "value": value, "timestamp": now_ms()})
}

/// A data metric by alias only.
fn by_alias(alias: u64, ty: &str, value: Value) -> Value {
    json!({"alias": alias, "type": ty, "value": value, "timestamp": now_ms()})
}

fn payload(seq: Option<u64>, metrics: Vec<Value>) -> Value {
    let mut p = json!({"timestamp": now_ms(), "metrics": metrics});
    if let Some(s) = seq {
        p["seq"] = json!(s);
    }
    p
}

fn our_state(v: &Value) -> bool {
    v["kind"] == "state" && v["topic"] == STATE_TOPIC
}

async fn as_host() -> Result<()> {
    let p = Progress::new("sparkplug-host");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("sp-stale", 1).await?;
    kafka.create_topic("sp-state", 1).await?;
    let mut gw = Gateway::start(
        GatewayOptions {
            id: "e2e-sparkplug-host".into(),
            kafka: Some(tansu.bootstrap()),
            routes: vec![
                Route::new("spBv1.0/plant/+/thirdparty/#", "sp-stale").value("sparkplug_metrics"),
                Route::new("spBv1.0/STATE/#", "sp-state"),
            ],
            extra_toml: format!(
                "[sparkplug.ingest]\nrebirth_min_interval_ms = 0\nreorder_timeout_ms = {REORDER_MS}\n\
                 host_id = \"{HOST_ID}\"\n"
            ),
            ..Default::default()
        }
        .kafka_setting("unmatched", "\"drop\""),
    )
    .await?;
    gw.wait_status("ingest subscribed", Duration::from_secs(10), |s| {
        s.pointer("/sparkplug_ingest/subscribed") == Some(&Value::Bool(true))
    })
    .await?;
    let mut host = TahuHost::start(gw.mqtt_port(), &["spBv1.0/#"], "tahu-thirdparty").await?;

    // STATE birth: retained, QoS 1, JSON online/timestamp [tck-id-host-topic-phid-birth-qos,
    // tck-id-host-topic-phid-birth-retain, tck-id-host-topic-phid-birth-payload].
    let birth = host
        .next("retained STATE", Duration::from_secs(10), our_state)
        .await?;
    ensure!(birth["qos"] == 1 && birth["retain"] == true, "{birth}");
    ensure!(birth["state"]["online"] == true, "{birth}");
    let t1 = birth["state"]["timestamp"]
        .as_u64()
        .context("STATE timestamp")?;
    ensure!(t1 > 1_600_000_000_000, "{birth}");
    // Overwritten offline by someone else: the same birth again
    // [tck-id-message-flow-hid-sparkplug-state-message-delivered].
    host.send(
        json!({"cmd": "raw", "topic": STATE_TOPIC, "qos": 1, "retain": true,
        "text": format!(r#"{{"online":false,"timestamp":{}}}"#, t1 + 1)}),
    )
    .await?;
    let again = host
        .next("STATE online again", Duration::from_secs(10), |v| {
            our_state(v) && v["state"]["online"] == true
        })
        .await?;
    ensure!(again["state"]["timestamp"] == t1, "{again}");
    p.note("STATE birth and republish");

    // A third-party node, encoded by Tahu.
    let node = "spBv1.0/plant/NBIRTH/thirdparty";
    host.publish(
        node,
        payload(
            Some(0),
            vec![
                named("bdSeq", "Int64", json!(5)),
                named("Node Control/Rebirth", "Boolean", json!(false)),
            ],
        ),
    )
    .await?;
    let dev1 = "spBv1.0/plant/DBIRTH/thirdparty/dev1";
    host.publish(
        dev1,
        payload(
            Some(1),
            vec![
                m("temp", 1, "Float", json!(20.5)),
                m("count", 2, "Int32", json!(7)),
            ],
        ),
    )
    .await?;
    host.publish(
        "spBv1.0/plant/DBIRTH/thirdparty/dev2",
        payload(Some(2), vec![m("x", 3, "Int16", json!(1))]),
    )
    .await?;
    let data = "spBv1.0/plant/DDATA/thirdparty/dev1";
    for seq in [3, 5, 4] {
        host.publish(
            data,
            payload(Some(seq), vec![by_alias(1, "Float", json!(21.0))]),
        )
        .await?;
    }
    // 4 after 5: late, within the window: counted, no gap, no rebirth
    // [tck-id-operational-behavior-host-reordering-success].
    let s = gw
        .wait_status("the late message counted", Duration::from_secs(10), |s| {
            num(s, "/sparkplug_ingest/out_of_order") == Some(1)
                && num(s, "/sparkplug_ingest/data") == Some(3)
        })
        .await?;
    ensure!(
        num(&s, "/sparkplug_ingest/seq_gaps") == Some(0)
            && num(&s, "/sparkplug_ingest/rebirth_requests") == Some(0),
        "{}",
        s["sparkplug_ingest"]
    );
    p.note("out-of-order message absorbed by the window");

    // 8 (6 and 7 missing), then 6: 7 stays missing → NCMD rebirth once the window has passed
    // [tck-id-operational-behavior-host-reordering-start, -rebirth].
    host.publish(
        data,
        payload(Some(8), vec![by_alias(1, "Float", json!(22.0))]),
    )
    .await?;
    let sent = tokio::time::Instant::now();
    host.publish(
        data,
        payload(Some(6), vec![by_alias(1, "Float", json!(21.5))]),
    )
    .await?;
    let ncmd = host
        .next("NCMD rebirth", Duration::from_secs(10), |v| {
            v["type"] == "NCMD" && v["node"] == "thirdparty"
        })
        .await?;
    let waited = sent.elapsed();
    ensure!(
        waited >= Duration::from_millis(REORDER_MS),
        "rebirth after {waited:?}, before the reorder window of {REORDER_MS} ms ended"
    );
    let rebirth = ncmd["metrics"][0].clone();
    ensure!(
        rebirth["name"] == "Node Control/Rebirth" && rebirth["value"] == true,
        "{ncmd}"
    );
    ensure!(ncmd["qos"] == 0 && ncmd["retain"] == false, "{ncmd}");
    let s = gw.status().await?;
    ensure!(
        num(&s, "/sparkplug_ingest/seq_gaps") == Some(1)
            && num(&s, "/sparkplug_ingest/out_of_order") == Some(2)
            && num(&s, "/sparkplug_ingest/rebirth_requests") == Some(1),
        "{}",
        s["sparkplug_ingest"]
    );
    p.note(format!("rebirth requested {waited:?} after the gap"));

    // Deaths → stale records per metric of the births.
    let ddeath_ts = now_ms();
    host.publish(
        "spBv1.0/plant/DDEATH/thirdparty/dev2",
        json!({"timestamp": ddeath_ts, "seq": 9}),
    )
    .await?;
    host.publish(
        "spBv1.0/plant/NDEATH/thirdparty",
        payload(None, vec![named("bdSeq", "Int64", json!(5))]),
    )
    .await?;
    gw.wait_status("deaths seen", Duration::from_secs(10), |s| {
        num(s, "/sparkplug_ingest/deaths") == Some(2)
    })
    .await?;
    gw.wait_forwarded(Duration::from_secs(30)).await?;
    let recs = kafka.consume("sp-stale", None).await?;
    let vals: Vec<Value> = recs.iter().map(json).collect::<Result<_>>()?;
    let of = |t: &str| -> Vec<(Value, Value, Value)> {
        vals.iter()
            .filter(|v| v["message_type"] == t)
            .map(|v| {
                (
                    v["device_id"].clone(),
                    v["name"].clone(),
                    v["quality"].clone(),
                )
            })
            .collect()
    };
    let stale = json!("stale");
    ensure!(
        of("DDEATH") == [(json!("dev2"), json!("x"), stale.clone())],
        "{vals:#?}"
    );
    let ddeath = vals
        .iter()
        .find(|v| v["message_type"] == "DDEATH")
        .context("DDEATH record")?;
    ensure!(
        ddeath["timestamp"] == ddeath_ts && ddeath["datatype"] == "Int16",
        "{ddeath}"
    );
    ensure!(
        of("NDEATH")
            == [
                (Value::Null, json!("bdSeq"), stale.clone()),
                (Value::Null, json!("Node Control/Rebirth"), stale.clone()),
                (json!("dev1"), json!("temp"), stale.clone()),
                (json!("dev1"), json!("count"), stale.clone()),
            ],
        "{vals:#?}"
    );
    p.note("stale records per metric in Kafka");

    // kill -9: the broker dies with the daemon. At the next start the will (offline, the old
    // timestamp) goes out first, then a new birth with a later timestamp.
    gw.kill().await?;
    drop(host);
    gw.restart().await?;
    let mut host = TahuHost::start(gw.mqtt_port(), &[STATE_TOPIC], "tahu-after-restart").await?;
    let birth2 = host
        .next(
            "retained STATE after restart",
            Duration::from_secs(10),
            |v| our_state(v) && v["state"]["online"] == true,
        )
        .await?;
    let t2 = birth2["state"]["timestamp"]
        .as_u64()
        .context("STATE timestamp")?;
    ensure!(t2 > t1, "{birth2}");
    gw.wait_forwarded(Duration::from_secs(30)).await?;
    let states: Vec<Value> = kafka
        .consume("sp-state", None)
        .await?
        .iter()
        .map(json)
        .collect::<Result<_>>()?;
    let ours: Vec<&Value> = states.iter().filter(|v| v["timestamp"] != t1 + 1).collect();
    ensure!(
        ours == [
            &json!({"online": true, "timestamp": t1}),
            &json!({"online": true, "timestamp": t1}),
            &json!({"online": false, "timestamp": t1}),
            &json!({"online": true, "timestamp": t2}),
        ],
        "STATE records: {states:?}"
    );
    p.note("emulated will after kill -9");

    // Graceful stop: offline, QoS 1, now [tck-id-host-topic-phid-death-payload-disconnect-clean].
    gw.stop().await?;
    let death = host
        .next("STATE offline", Duration::from_secs(10), |v| {
            our_state(v) && v["state"]["online"] == false
        })
        .await?;
    ensure!(death["qos"] == 1, "{death}");
    ensure!(death["state"]["timestamp"].as_u64() >= Some(t2), "{death}");
    Ok(())
}
