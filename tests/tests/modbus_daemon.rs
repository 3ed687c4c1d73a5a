//! A Modbus TCP device described in TOML delivers typed, scaled values with quality to Kafka
//! through the real `ironbridge` daemon. The device is pymodbus (an independent implementation,
//! `adapters/tests/py/pymodbus_server.py`, register images built with Python's struct module);
//! Kafka is tansu; what arrived is read with confluent-kafka.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Route, prepare, within};
use ironbridge_e2e::pymodbus::start_pymodbus;
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, free_port, require};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];

const DEVICE: &str = r#"
[[modbus.devices]]
name = "py1"
transport = { type = "tcp", address = "127.0.0.1:PORT" }
unit_id = 1
timeout_ms = 500
poll_interval_ms = 200

[[modbus.devices.tags]]
name = "f32_abcd"
address = "40001"
type = "f32"
unit = "bar"

[[modbus.devices.tags]]
name = "f32_cdab_scaled"
address = "40003"
type = "f32"
order = "CDAB"
scale = 10.0
offset = 1.0

[[modbus.devices.tags]]
name = "i16"
address = "40011"
type = "i16"

[[modbus.devices.tags]]
name = "u32_input"
address = "30001"
type = "u32"

[[modbus.devices.tags]]
name = "coil0"
address = "00001"
type = "bool"

[[modbus.devices.tags]]
name = "missing"
address = "40201"
type = "u16"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_values_reach_kafka_typed_scaled_and_with_quality() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(120), "modbus through the daemon", run()).await
}

async fn run() -> Result<()> {
    let port = free_port()?;
    let _device = start_pymodbus(port).await?;
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("modbus", 1).await?;
    kafka.create_topic("mqtt", 1).await?;
    let gw = Gateway::start(GatewayOptions {
        id: "e2e-modbus".into(),
        kafka: Some(tansu.bootstrap()),
        routes: vec![Route::new("ironbridge/modbus/#", "modbus")],
        extra_toml: DEVICE.replace("PORT", &port.to_string()),
        ..Default::default()
    })
    .await?;

    // One record per tag at least (report by exception: every tag reports once when first read).
    let records = kafka.consume("modbus", Some(6)).await?;
    let mut latest: HashMap<String, serde_json::Value> = HashMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().unwrap_or_default())?;
        let value: serde_json::Value =
            serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                .with_context(|| format!("record for {key} is not JSON"))?;
        latest.insert(key, value);
    }
    let get = |tag: &str| {
        latest
            .get(&format!("ironbridge/modbus/py1/{tag}"))
            .cloned()
            .with_context(|| format!("no record for tag {tag}; got {:?}", latest.keys()))
    };
    let close = |v: &serde_json::Value, want: f64| {
        v["value"].as_f64().is_some_and(|x| (x - want).abs() < 1e-3)
    };

    let v = get("f32_abcd")?;
    ensure!(
        close(&v, 123.456) && v["quality"] == "good" && v["unit"] == "bar",
        "f32_abcd: {v}"
    );
    // -1.5 stored CDAB, scaled: -1.5 * 10 + 1 = -14.
    let v = get("f32_cdab_scaled")?;
    ensure!(
        close(&v, -14.0) && v["quality"] == "good",
        "f32_cdab_scaled: {v}"
    );
    let v = get("i16")?;
    ensure!(v["value"] == -2 && v["quality"] == "good", "i16: {v}");
    let v = get("u32_input")?;
    ensure!(
        v["value"] == 4_000_000_000u64 && v["quality"] == "good",
        "u32_input: {v}"
    );
    let v = get("coil0")?;
    ensure!(v["value"] == true && v["quality"] == "good", "coil0: {v}");
    // Address 200 is not defined on the device: exception 2, reported as bad quality, no value.
    let v = get("missing")?;
    ensure!(
        v["quality"] == "bad"
            && v["value"].is_null()
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("exception 2")),
        "missing: {v}"
    );
    for r in &records {
        ensure!(
            r.header_str("gateway_id") == Some("e2e-modbus"),
            "gateway_id header missing on {r:?}"
        );
    }

    // The device's health reaches the status page (refreshed every second), polls counted and
    // the undefined address counted as a Modbus exception.
    gw.wait_status(
        "device health in /api/status",
        Duration::from_secs(10),
        |s| {
            let dev = &s["devices"][0];
            dev["device"] == "py1"
                && dev["polls"].as_u64().unwrap_or(0) >= 1
                && dev["exceptions"].as_u64().unwrap_or(0) >= 1
        },
    )
    .await?;
    Ok(())
}
