//! Commands from Kafka to the PLC, end to end through the real `ironbridge` binary: a JSON
//! command record in the Kafka command topic becomes a Sparkplug DCMD on the gateway's broker,
//! the edge node writes the Modbus register of a pymodbus device (read back with an independent
//! pymodbus client), and the result lands in the result topic; a write outside the allow-list and
//! a malformed record are refused and reported there, and never reach the device.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, prepare, within};
use ironbridge_e2e::kafka::Record;
use ironbridge_e2e::pymodbus::{pymodbus_python, start_pymodbus};
use ironbridge_e2e::sparkplug::{Host, check_qos_retain, is};
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, free_port, require};
use serde_json::Value;
use tokio::process::{Child, Command};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];

/// Reads holding register `index` (0-based) of unit 1 with pymodbus's own client.
async fn read_register(port: u16, index: u16) -> Result<u16> {
    let code = format!(
        "from pymodbus.client import ModbusTcpClient\n\
         c = ModbusTcpClient('127.0.0.1', port={port}); c.connect()\n\
         r = c.read_holding_registers({index}, count=1, device_id=1)\n\
         print(r.registers[0])\n"
    );
    let out = Command::new(pymodbus_python()?)
        .args(["-c", &code])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "pymodbus client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

const DEVICE: &str = r#"
[[modbus.devices]]
name = "press"
transport = { type = "tcp", address = "127.0.0.1:PORT" }
unit_id = 1
timeout_ms = 500
poll_interval_ms = 200

[[modbus.devices.tags]]
name = "setpoint"
address = "40031"
type = "u16"
access = "read_write"

[[modbus.devices.tags]]
name = "limit"
address = "40032"
type = "u16"
access = "read_write"

[sparkplug]
enabled = true
group_id = "plant"
edge_node_id = "gw1"

[sparkplug.commands]
kafka_topic = "commands"
result_topic = "command-results"
allow = ["press/setpoint"]
"#;

fn json(r: &Record) -> Result<Value> {
    serde_json::from_str(r.value_str().context("not UTF-8")?).context("not JSON")
}

struct Setup {
    _device: Child,
    _tansu: Tansu,
    _dir: tempfile::TempDir,
    modbus_port: u16,
    kafka: KafkaTool,
    gw: Gateway,
}

async fn setup() -> Result<Setup> {
    let modbus_port = free_port()?;
    let device = start_pymodbus(modbus_port).await?;
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("commands", 2).await?;
    kafka.create_topic("command-results", 1).await?;
    kafka.create_topic("mqtt", 1).await?;
    let gw = Gateway::start(
        GatewayOptions {
            id: "e2e-commands".into(),
            kafka: Some(tansu.bootstrap()),
            extra_toml: DEVICE.replace("PORT", &modbus_port.to_string()),
            ..Default::default()
        }
        .kafka_setting("unmatched", "\"drop\""),
    )
    .await?;
    Ok(Setup {
        _device: device,
        _tansu: tansu,
        _dir: dir,
        modbus_port,
        kafka,
        gw,
    })
}

/// The result record of command `id` (waits for `n` results in all).
async fn result(kafka: &KafkaTool, n: usize, id: &str) -> Result<Value> {
    let recs = kafka.consume("command-results", Some(n)).await?;
    for r in &recs {
        let v = json(r)?;
        if v["id"] == id {
            ensure!(r.key_str() == Some(id), "result key {:?}", r.key_str());
            return Ok(v);
        }
    }
    bail!("no result for {id} in {recs:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_malformed_commands_are_refused_and_reported() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(90), "refused commands", async {
        let s = setup().await?;
        let before = read_register(s.modbus_port, 31).await?;
        s.kafka
            .produce_value(
                "commands",
                Some("a"),
                r#"{"id":"forbidden-1","device":"press","tag":"limit","value":77}"#,
            )
            .await?;
        s.kafka
            .produce_value("commands", Some("b"), "this is not json")
            .await?;
        let r = result(&s.kafka, 2, "forbidden-1").await?;
        ensure!(r["outcome"] == "rejected", "{r}");
        ensure!(
            r["reason"]
                .as_str()
                .is_some_and(|m| m.contains("not in sparkplug.commands.allow")),
            "{r}"
        );
        ensure!(
            r["device"] == "press" && r["tag"] == "limit" && r["value"] == 77,
            "{r}"
        );
        ensure!(r["gateway_id"] == "e2e-commands", "{r}");
        let recs = s.kafka.consume("command-results", Some(2)).await?;
        let bad = recs
            .iter()
            .map(json)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .find(|v| v["id"].as_str().is_some_and(|i| i.starts_with("kafka-")))
            .context("the malformed record's result")?;
        ensure!(
            bad["outcome"] == "rejected"
                && bad["reason"]
                    .as_str()
                    .is_some_and(|m| m.contains("malformed")),
            "{bad}"
        );
        // Nothing reached the device.
        ensure!(read_register(s.modbus_port, 31).await? == before);
        let (code, _) = s.gw.healthz().await?;
        ensure!(code == 200);
        Ok(())
    })
    .await
}

/// Needs the edge node (branch sp-node) to execute the DCMD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_command_writes_the_modbus_register() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(90), "kafka command write", async {
        let s = setup().await?;
        ensure!(read_register(s.modbus_port, 30).await? == 0);
        // An independent subscriber sees the DCMD the command becomes.
        let mut host = Host::start(s.gw.mqtt_port(), &["spBv1.0/plant/DCMD/#"]).await?;
        s.kafka
            .produce_value(
                "commands",
                Some("press"),
                r#"{"id":"write-1","device":"press","tag":"setpoint","value":1234}"#,
            )
            .await?;
        let r = result(&s.kafka, 1, "write-1").await?;
        ensure!(r["outcome"] == "ok", "{r}\nlog tail:\n{}", s.gw.log_tail());
        ensure!(r["kind"] == "DCMD" && r["tag"] == "setpoint", "{r}");
        ensure!(read_register(s.modbus_port, 30).await? == 1234);
        let dcmd = host
            .next("the DCMD", Duration::from_secs(10), is("DCMD"))
            .await?;
        ensure!(dcmd["topic"] == "spBv1.0/plant/DCMD/gw1/press", "{dcmd}");
        // QoS 0, not retained (tck-id-topics-dcmd-mqtt).
        check_qos_retain(&host.history)?;
        Ok(())
    })
    .await
}
