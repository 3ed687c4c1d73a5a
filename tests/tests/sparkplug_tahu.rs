//! The gateway as a Sparkplug B edge node, read by a second independent host: Eclipse Tahu's
//! JavaScript codec (`sparkplug-payload`, the lineage of Ignition's MQTT Engine) with MQTT.js,
//! subscribed to `spBv1.0/#` at QoS 1 on the real daemon's broker (`tests/js/tahu_host.js`), with
//! the adapters' Modbus simulator as the PLC. Every message the host receives is checked:
//!
//! - NBIRTH seq 0 with bdSeq [tck-id-topics-nbirth-seq-num, tck-id-topics-nbirth-bdseq-included];
//!   a DBIRTH of each device after the NBIRTH and before any other message of that device
//!   [tck-id-topics-dbirth-seq, tck-id-operational-behavior-device-dbirth];
//! - datatypes as Tahu decodes them equal the gateway's declaration, values decoded by Tahu;
//! - seq 0–255 continuous over every message, across a wrap
//!   [tck-id-payloads-sequence-num-incrementing];
//! - QoS 0 / retain false for NBIRTH, DBIRTH, DDATA, NDATA, DDEATH, QoS 1 for NDEATH
//!   [tck-id-topics-nbirth-mqtt, tck-id-topics-dbirth-mqtt, tck-id-topics-ddata-mqtt,
//!   tck-id-topics-ndata-mqtt, tck-id-topics-ddeath-mqtt, tck-id-topics-ndeath-mqtt ... retain];
//! - a payload timestamp on every message and a timestamp on every metric of births and data
//!   [tck-id-payloads-name-birth-data-requirement];
//! - NCMD rebirth (Tahu-encoded, QoS 0) → NBIRTH seq 0 with the same bdSeq, births again;
//! - a Tahu-encoded DCMD writes the simulated PLC;
//! - graceful stop → NDEATH with the NBIRTH's bdSeq [tck-id-topics-ndeath-payload].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_adapters::modbus::codec::{DataType, Value as MValue, WordOrder, encode_registers};
use ironbridge_adapters::modbus::config::Area;
use ironbridge_adapters::modbus::sim::{SimServer, Simulator};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Progress, prepare, within};
use ironbridge_e2e::sparkplug::metric;
use ironbridge_e2e::tahu::TahuHost;
use ironbridge_e2e::{External, require};
use serde_json::{Value, json};

const NEEDS: &[External] = &[External::Node, External::TahuJs];
const UNIT: u8 = 1;

const DEVICE: &str = r#"
[[modbus.devices]]
name = "plc1"
transport = { type = "tcp", address = "ADDR" }
unit_id = 1
timeout_ms = 200
retries = 0
poll_interval_ms = 20
heartbeat_ms = 0

[[modbus.devices.tags]]
name = "valve"
address = "00001"
type = "bool"
access = "read_write"

[[modbus.devices.tags]]
name = "speed"
address = "40001"
type = "u16"
unit = "rpm"
access = "read_write"

[[modbus.devices.tags]]
name = "temp"
address = "30001"
type = "i16"
unit = "degC"

[[modbus.devices.tags]]
name = "count"
address = "40002"
type = "u32"

[[modbus.devices.tags]]
name = "offset"
address = "40004"
type = "i32"
access = "read_write"

[[modbus.devices.tags]]
name = "total"
address = "40006"
type = "u64"

[[modbus.devices.tags]]
name = "delta"
address = "40010"
type = "i64"

[[modbus.devices.tags]]
name = "pressure"
address = "40014"
type = "f32"
access = "read_write"

[[modbus.devices.tags]]
name = "energy"
address = "40016"
type = "f64"

[[modbus.devices.tags]]
name = "label"
address = "40020"
type = "string"
length = 8

[[modbus.devices.tags]]
name = "level"
address = "40030"
type = "i16"
scale = 0.1
access = "read_write"
"#;

fn regs(dt: DataType, v: MValue) -> Vec<u16> {
    encode_registers(dt, WordOrder::ABCD, &v).unwrap_or_default()
}

async fn start_plc() -> Result<(Simulator, SimServer)> {
    let sim = Simulator::new();
    sim.add_unit(UNIT);
    let h = Area::HoldingRegister;
    sim.set_bits(UNIT, Area::Coil, 0, &[false]);
    sim.set_registers(UNIT, h, 0, &[1200]);
    sim.set_registers(
        UNIT,
        Area::InputRegister,
        0,
        &regs(DataType::I16, MValue::I16(-5)),
    );
    sim.set_registers(UNIT, h, 1, &regs(DataType::U32, MValue::U32(70_000)));
    sim.set_registers(UNIT, h, 3, &regs(DataType::I32, MValue::I32(-2)));
    sim.set_registers(UNIT, h, 5, &regs(DataType::U64, MValue::U64(1 << 40)));
    sim.set_registers(UNIT, h, 9, &regs(DataType::I64, MValue::I64(-3)));
    sim.set_registers(UNIT, h, 13, &regs(DataType::F32, MValue::F32(1.5)));
    sim.set_registers(UNIT, h, 15, &regs(DataType::F64, MValue::F64(-273.15)));
    sim.set_registers(
        UNIT,
        h,
        19,
        &regs(DataType::String(8), MValue::String("ABC".into())),
    );
    sim.set_registers(UNIT, h, 29, &regs(DataType::I16, MValue::I16(250)));
    let server = sim
        .spawn_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("Modbus simulator")?;
    Ok((sim, server))
}

fn is(t: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["kind"] == "sparkplug" && v["type"] == t
}

/// Messages of the edge node `plant/gw1` (the host's own commands excluded).
fn node_messages(history: &[Value]) -> Vec<&Value> {
    history
        .iter()
        .filter(|m| m["kind"] == "sparkplug" && m["group"] == "plant" && m["node"] == "gw1")
        .filter(|m| m["type"] != "NCMD" && m["type"] != "DCMD")
        .collect()
}

/// Checks every message the host received from the first NBIRTH on (the node was born before
/// the host subscribed); returns how many were checked.
fn check_all(history: &[Value]) -> Result<usize> {
    let msgs: Vec<&Value> = node_messages(history)
        .into_iter()
        .skip_while(|m| m["type"] != "NBIRTH")
        .collect();
    let mut expected: Option<u64> = None;
    let mut born: HashSet<String> = HashSet::new();
    let mut node_born = false;
    for m in &msgs {
        let t = m["type"].as_str().unwrap_or_default();
        // QoS and retain per message type (received at QoS 1: the delivery keeps the
        // publisher's QoS when it is lower).
        let qos = if t == "NDEATH" { 1 } else { 0 };
        ensure!(
            m["qos"] == qos && m["retain"] == false,
            "{t} delivered with QoS {} retain {}, want QoS {qos} retain false: {m}",
            m["qos"],
            m["retain"]
        );
        ensure!(
            m["timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "no payload timestamp: {m}"
        );
        if matches!(t, "NBIRTH" | "DBIRTH" | "NDATA" | "DDATA") {
            for x in m["metrics"].as_array().context("metrics")? {
                ensure!(
                    x["timestamp"].as_u64().is_some(),
                    "{t} metric without a timestamp: {x}"
                );
            }
        }
        match t {
            "NDEATH" => {
                ensure!(m["seq"].is_null(), "NDEATH with a seq: {m}");
                expected = None;
                node_born = false;
                born.clear();
                continue;
            }
            "NBIRTH" => {
                ensure!(m["seq"] == 0, "NBIRTH seq {}", m["seq"]);
                ensure!(m["bd_seq"].as_u64().is_some(), "NBIRTH without bdSeq: {m}");
                node_born = true;
                born.clear();
            }
            _ => {
                ensure!(node_born, "{t} before the NBIRTH: {m}");
                let seq = m["seq"].as_u64().with_context(|| format!("no seq: {m}"))?;
                if let Some(e) = expected {
                    ensure!(seq == e, "seq {seq} where {e} was due: {m}");
                }
                let device = m["device"].as_str().unwrap_or_default().to_string();
                match t {
                    "DBIRTH" => {
                        born.insert(device);
                    }
                    "DDATA" | "DDEATH" => {
                        ensure!(
                            born.contains(&device),
                            "{t} of {device} before its DBIRTH: {m}"
                        );
                        if t == "DDEATH" {
                            born.remove(&device);
                        }
                    }
                    _ => {}
                }
            }
        }
        expected = Some((m["seq"].as_u64().unwrap_or(0) + 1) % 256);
    }
    Ok(msgs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tahu_host_reads_the_edge_node() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "Tahu host", tahu()).await
}

async fn tahu() -> Result<()> {
    let p = Progress::new("sparkplug_tahu");
    let (sim, server) = start_plc().await?;
    let mut gw = Gateway::start(GatewayOptions {
        id: "e2e-sparkplug-tahu".into(),
        extra_toml: format!(
            "[sparkplug]\nenabled = true\ngroup_id = \"plant\"\nedge_node_id = \"gw1\"\n{}",
            DEVICE.replace("ADDR", &server.addr().to_string())
        ),
        ..Default::default()
    })
    .await?;
    // The node was born before the host subscribed: a Tahu-encoded NCMD asks for the births.
    let mut host = TahuHost::start(gw.mqtt_port(), &["spBv1.0/#"], "tahu-e2e-host").await?;
    host.send(json!({"cmd": "ncmd_rebirth", "group": "plant", "node": "gw1"}))
        .await?;
    let nbirth = host
        .next("NBIRTH", Duration::from_secs(20), is("NBIRTH"))
        .await?;
    let bd_seq = nbirth["bd_seq"].as_u64().context("bdSeq")?;
    let bd = metric(&nbirth, "bdSeq").context("bdSeq metric")?;
    ensure!(bd["datatype"] == "Int64", "{bd}");
    let rb = metric(&nbirth, "Node Control/Rebirth").context("rebirth metric")?;
    ensure!(rb["datatype"] == "Boolean" && rb["value"] == false, "{rb}");
    let dbirth = host
        .next("DBIRTH plc1", Duration::from_secs(20), |v| {
            is("DBIRTH")(v) && v["device"] == "plc1"
        })
        .await?;
    p.note("NBIRTH and DBIRTH");

    // Datatypes as Tahu reads them = the gateway's declaration; values as Tahu decodes them.
    let want = [
        ("valve", "Boolean", json!(false)),
        ("speed", "UInt16", json!(1200)),
        ("temp", "Int16", json!(-5)),
        ("count", "UInt32", json!(70000)),
        ("offset", "Int32", json!(-2)),
        ("total", "UInt64", json!(1u64 << 40)),
        ("delta", "Int64", json!(-3)),
        ("pressure", "Float", json!(1.5)),
        ("energy", "Double", json!(-273.15)),
        ("label", "String", json!("ABC")),
        ("level", "Double", json!(25.0)),
    ];
    let mut alias_of = std::collections::HashMap::new();
    for (tag, dt, value) in &want {
        let m = metric(&dbirth, tag).with_context(|| format!("{tag} in {dbirth}"))?;
        ensure!(
            m["datatype"] == *dt,
            "{tag}: Tahu read {}, want {dt}",
            m["datatype"]
        );
        alias_of.insert(*tag, m["alias"].as_u64().context("alias")?);
        if *dt == "UInt32" {
            // Sparkplug 3.0 puts UInt32 in int_value; Tahu's JavaScript decoder (1.0.3) reads it
            // from long_value only, so it cannot show this value: the field is checked instead.
            ensure!(m["value_field"] == "intValue", "{tag}: {m}");
            continue;
        }
        let ok = match (m["value"].as_f64(), value.as_f64()) {
            (Some(a), Some(b)) if *dt == "Double" || *dt == "Float" => (a - b).abs() < 1e-9,
            _ => m["value"] == *value,
        };
        ensure!(ok, "{tag}: Tahu decoded {}, want {value}", m["value"]);
    }
    p.note("datatypes and values as Tahu decodes them");

    // Data by exception through a seq wrap: 270 changes of temp, each read back by alias with
    // the DBIRTH's datatype (data messages need not repeat it).
    let temp_alias = alias_of["temp"];
    for i in 0..270i16 {
        let v = 1000 + i;
        sim.set_registers(
            UNIT,
            Area::InputRegister,
            0,
            &regs(DataType::I16, MValue::I16(v)),
        );
        host.next(&format!("temp = {v}"), Duration::from_secs(10), |m| {
            is("DDATA")(m)
                && m["metrics"].as_array().is_some_and(|ms| {
                    ms.iter().any(|x| {
                        x["alias"] == temp_alias && x["value"] == v && x["datatype"] == "Int16"
                    })
                })
        })
        .await?;
    }
    ensure!(
        node_messages(&host.history)
            .iter()
            .any(|m| m["type"] == "DDATA" && m["seq"] == 0),
        "the seq did not wrap"
    );
    p.note("270 DDATA, seq wrapped");

    // A Tahu-encoded DCMD (by name, with Tahu's datatypes) reaches the PLC.
    host.send(
        json!({"cmd": "dcmd", "group": "plant", "node": "gw1", "device": "plc1",
        "metrics": [
            {"name": "speed", "datatype": "UInt16", "value": 1500},
            {"name": "offset", "datatype": "Int32", "value": -100000},
            {"name": "pressure", "datatype": "Float", "value": 2.25},
            {"name": "valve", "datatype": "Boolean", "value": true},
            {"name": "level", "datatype": "Double", "value": 42.5}
        ]}),
    )
    .await?;
    let speed_alias = alias_of["speed"];
    host.next("speed 1500 in DDATA", Duration::from_secs(15), |m| {
        is("DDATA")(m)
            && m["metrics"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|x| x["alias"] == speed_alias && x["value"] == 1500)
            })
    })
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.registers(UNIT, Area::HoldingRegister, 29, 1) != [425]
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(sim.registers(UNIT, Area::HoldingRegister, 0, 1) == [1500]);
    ensure!(
        sim.registers(UNIT, Area::HoldingRegister, 3, 2)
            == regs(DataType::I32, MValue::I32(-100_000))
    );
    ensure!(
        sim.registers(UNIT, Area::HoldingRegister, 13, 2) == regs(DataType::F32, MValue::F32(2.25))
    );
    ensure!(sim.bits(UNIT, Area::Coil, 0, 1) == [true]);
    ensure!(sim.registers(UNIT, Area::HoldingRegister, 29, 1) == [425]);
    p.note("Tahu DCMD wrote the PLC");

    // A second rebirth: same bdSeq, seq from 0, the device born again.
    host.send(json!({"cmd": "ncmd_rebirth", "group": "plant", "node": "gw1"}))
        .await?;
    let again = host
        .next("second NBIRTH", Duration::from_secs(20), is("NBIRTH"))
        .await?;
    ensure!(
        again["seq"] == 0 && again["bd_seq"] == bd_seq,
        "rebirth: {again}"
    );
    host.next("DBIRTH plc1 again", Duration::from_secs(20), |v| {
        is("DBIRTH")(v) && v["device"] == "plc1"
    })
    .await?;

    // Graceful stop: NDEATH (QoS 1) with the NBIRTH's bdSeq before the connection closes.
    gw.stop().await?;
    let ndeath = host
        .next("NDEATH", Duration::from_secs(20), is("NDEATH"))
        .await?;
    ensure!(ndeath["bd_seq"] == bd_seq, "{ndeath}");
    let n = ndeath["metrics"].as_array().map_or(0, Vec::len);
    ensure!(n == 1, "NDEATH carries only bdSeq: {ndeath}");
    let checked = check_all(&host.history)?;
    p.note(format!(
        "{checked} messages checked (QoS, retain, seq, timestamps, births first)"
    ));
    ensure!(checked > 270, "{checked} messages");
    Ok(())
}
