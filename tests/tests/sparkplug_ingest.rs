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

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Progress, Route, num, prepare, within};
use ironbridge_e2e::kafka::Record;
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};
use serde_json::Value;
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
