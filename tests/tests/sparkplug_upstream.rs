//! The edge node's session on an upstream MQTT server (`[sparkplug.upstream]`): a real
//! `mosquitto` on 127.0.0.1, the independent host application (`tests/py/sparkplug_host.py`,
//! paho + Google protobuf) subscribed there, the adapters' Modbus simulator as the PLC.
//!
//! - births (bdSeq), DDATA by exception, a DCMD from the upstream server writing the PLC
//!   (audited with source `upstream`);
//! - `kill -9` → mosquitto publishes the will: NDEATH with the last NBIRTH's bdSeq; restart →
//!   NBIRTH with the next bdSeq; graceful stop → NDEATH published;
//! - connection cut (fault proxy) → will, reconnect with the next bdSeq and fresh births;
//! - TLS to the upstream server (CA and server certificate made with rcgen).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_adapters::modbus::config::Area;
use ironbridge_adapters::modbus::sim::{SimServer, Simulator};
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Progress, prepare, within};
use ironbridge_e2e::sparkplug::{Host, bdseq, is, metric};
use ironbridge_e2e::{External, FaultProxy, Mode, Mosquitto, require};
use serde_json::{Value, json};

const NEEDS: &[External] = &[External::PythonVenv, External::Mosquitto];
const UNIT: u8 = 1;

const DEVICE: &str = r#"
[[modbus.devices]]
name = "plc1"
transport = { type = "tcp", address = "ADDR" }
unit_id = 1
timeout_ms = 200
retries = 0
poll_interval_ms = 50
heartbeat_ms = 0

[[modbus.devices.tags]]
name = "speed"
address = "40001"
type = "u16"
access = "read_write"

[[modbus.devices.tags]]
name = "temp"
address = "30001"
type = "i16"
"#;

async fn start_plc() -> Result<(Simulator, SimServer)> {
    let sim = Simulator::new();
    sim.add_unit(UNIT);
    sim.set_registers(UNIT, Area::HoldingRegister, 0, &[1200]);
    sim.set_registers(UNIT, Area::InputRegister, 0, &[5]);
    let server = sim
        .spawn_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("Modbus simulator")?;
    Ok((sim, server))
}

/// The gateway as edge node `plant/gw1` with `upstream` as its `[sparkplug.upstream]` table.
fn options(plc: SocketAddr, upstream: &str) -> GatewayOptions {
    GatewayOptions {
        id: "e2e-sparkplug-upstream".into(),
        extra_toml: format!(
            "[sparkplug]\nenabled = true\ngroup_id = \"plant\"\nedge_node_id = \"gw1\"\n\
             [sparkplug.upstream]\n{upstream}\n{}",
            DEVICE.replace("ADDR", &plc.to_string())
        ),
        ..Default::default()
    }
}

fn node_msg(v: &Value) -> bool {
    v["kind"] == "sparkplug" && v["node"] == "gw1"
}

/// The next NBIRTH and the DBIRTH of plc1 after it; returns (bdSeq, DBIRTH).
async fn births(host: &mut Host, what: &str) -> Result<(i64, Value)> {
    let nb = host
        .next(
            &format!("{what}: NBIRTH"),
            Duration::from_secs(30),
            is("NBIRTH"),
        )
        .await?;
    ensure!(nb["seq"] == 0, "{nb}");
    let bd = bdseq(&nb).context("NBIRTH without bdSeq")?;
    let db = host
        .next(&format!("{what}: DBIRTH"), Duration::from_secs(20), |v| {
            v["type"] == "DBIRTH" && v["device"] == "plc1"
        })
        .await?;
    Ok((bd, db))
}

fn alias(dbirth: &Value, tag: &str) -> Result<u64> {
    metric(dbirth, tag)
        .and_then(|m| m["alias"].as_u64())
        .with_context(|| format!("no alias for {tag} in {dbirth}"))
}

/// The next DDATA of plc1 carrying `alias` = `value`.
async fn ddata(host: &mut Host, alias: u64, value: i64) -> Result<Value> {
    host.next(
        &format!("DDATA alias {alias} = {value}"),
        Duration::from_secs(15),
        move |v| {
            v["type"] == "DDATA"
                && v["metrics"].as_array().is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m["alias"] == alias && m["value"].as_i64() == Some(value))
                })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_births_will_restart_and_commands() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(180),
        "Sparkplug upstream session",
        async {
            let p = Progress::new("sparkplug_upstream");
            let (sim, server) = start_plc().await?;
            let broker = Mosquitto::start().await?;
            // Subscribed before the gateway connects: the first session's births are seen as is.
            let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
            let upstream = format!(
                "server = \"127.0.0.1:{}\"\nkeep_alive_s = 5\n",
                broker.port()
            );
            let mut gw = Gateway::start(options(server.addr(), &upstream)).await?;

            let (bd0, db) = births(&mut host, "first session").await?;
            ensure!(
                metric(&db, "speed").is_some_and(|m| m["value"] == 1200),
                "{db}"
            );
            let (speed, temp) = (alias(&db, "speed")?, alias(&db, "temp")?);
            p.note(format!("NBIRTH bdSeq {bd0}, DBIRTH"));

            // Report by exception on the upstream server too.
            sim.set_registers(UNIT, Area::InputRegister, 0, &[31]);
            ddata(&mut host, temp, 31).await?;
            p.note("DDATA");

            // A DCMD published on mosquitto writes the PLC and comes back as DDATA.
            host.send(
                json!({"cmd": "dcmd", "group": "plant", "node": "gw1", "device": "plc1",
                         "uuid": "up-1",
                         "metrics": [{"name": "speed", "datatype": "UInt16", "value": 1500}]}),
            )
            .await?;
            ddata(&mut host, speed, 1500).await?;
            ensure!(
                sim.registers(UNIT, Area::HoldingRegister, 0, 1) == [1500],
                "register not written"
            );
            let s = gw
                .wait_status("upstream DCMD audited", Duration::from_secs(10), |s| {
                    s["sparkplug_node"]["recent_commands"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|c| c["correlation_id"] == "up-1"))
                })
                .await?;
            let rec = s["sparkplug_node"]["recent_commands"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["correlation_id"] == "up-1"))
                .context("audit record")?;
            ensure!(
                rec["source"] == "upstream" && rec["outcome"] == "ok",
                "{rec}"
            );
            let up = &s["sparkplug_node"]["upstream"];
            ensure!(
                up["connected"] == true && up["session"]["bdseq"] == bd0,
                "{up}"
            );
            ensure!(up["messages_sent"].as_u64().unwrap_or(0) >= 3, "{up}");
            ensure!(
                s["sparkplug_node"]["commands"]["from_upstream"] == 1,
                "{}",
                s["sparkplug_node"]["commands"]
            );
            p.note("DCMD from upstream wrote the PLC, audited");

            // kill -9: the broker publishes the will, the NDEATH of this session's bdSeq.
            gw.kill().await?;
            let nd = host
                .next(
                    "will NDEATH after kill -9",
                    Duration::from_secs(20),
                    is("NDEATH"),
                )
                .await?;
            ensure!(bdseq(&nd) == Some(bd0) && nd["seq"].is_null(), "{nd}");
            p.note("kill -9 → will NDEATH");

            // Restart: the next session, bdSeq + 1, births again.
            gw.restart().await?;
            let (bd1, _) = births(&mut host, "after restart").await?;
            ensure!(bd1 == (bd0 + 1) % 256, "bdSeq {bd1} after {bd0}");
            p.note(format!("restart → NBIRTH bdSeq {bd1}"));

            // Graceful stop: NDEATH published by the node (then DISCONNECT, so no will).
            gw.stop().await?;
            let nd = host
                .next("NDEATH on stop", Duration::from_secs(15), is("NDEATH"))
                .await?;
            ensure!(bdseq(&nd) == Some(bd1), "{nd}");
            // Nothing from the node after its NDEATH (the will must not follow a DISCONNECT).
            let extra = host
                .next("anything after NDEATH", Duration::from_secs(2), node_msg)
                .await;
            ensure!(
                extra.is_err(),
                "message after the graceful NDEATH: {extra:?}"
            );
            p.note("graceful stop → NDEATH");
            drop(sim);
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reconnects_with_next_bdseq() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(120),
        "Sparkplug upstream reconnect",
        async {
            let (_sim, server) = start_plc().await?;
            let broker = Mosquitto::start().await?;
            let proxy =
                FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], broker.port()))).await?;
            let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
            let upstream = format!("server = \"{}\"\nkeep_alive_s = 5\n", proxy.addr());
            let gw = Gateway::start(options(server.addr(), &upstream)).await?;
            let (bd0, _) = births(&mut host, "first session").await?;

            // The connection is cut: the broker publishes the will; the node reconnects (backoff
            // from 1 s) with a new session.
            proxy.set_mode(Mode::Cut);
            let nd = host
                .next(
                    "will NDEATH after the cut",
                    Duration::from_secs(20),
                    is("NDEATH"),
                )
                .await?;
            ensure!(bdseq(&nd) == Some(bd0), "{nd}");
            gw.wait_status("upstream disconnected", Duration::from_secs(10), |s| {
                s["sparkplug_node"]["upstream"]["connected"] == false
            })
            .await?;
            proxy.set_mode(Mode::Pass);
            let (bd1, _) = births(&mut host, "after reconnect").await?;
            ensure!(bd1 > bd0, "bdSeq {bd1} after {bd0}");
            let s = gw
                .wait_status("upstream connected again", Duration::from_secs(10), |s| {
                    s["sparkplug_node"]["upstream"]["connected"] == true
                })
                .await?;
            ensure!(
                s["sparkplug_node"]["upstream"]["connects"].as_u64() >= Some(2),
                "{}",
                s["sparkplug_node"]["upstream"]
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_over_tls() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(120),
        "Sparkplug upstream over TLS",
        async {
            let dir = tempfile::tempdir()?;
            // A CA and a server certificate for 127.0.0.1 signed by it.
            let ca_key = rcgen::KeyPair::generate()?;
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "e2e upstream CA");
            let ca = ca_params.self_signed(&ca_key)?;
            let key = rcgen::KeyPair::generate()?;
            let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?
                .signed_by(&key, &ca, &ca_key)?;
            let (ca_pem, cert_pem, key_pem) = (
                dir.path().join("ca.pem"),
                dir.path().join("server.pem"),
                dir.path().join("server.key"),
            );
            std::fs::write(&ca_pem, ca.pem())?;
            std::fs::write(&cert_pem, cert.pem())?;
            std::fs::write(&key_pem, key.serialize_pem())?;

            let (_sim, server) = start_plc().await?;
            let broker = Mosquitto::start_with_tls(Some((&cert_pem, &key_pem))).await?;
            let tls_port = broker.tls_port().context("TLS port")?;
            // The host reads on the plain listener of the same broker.
            let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
            let upstream = format!(
                "server = \"127.0.0.1:{tls_port}\"\ntls = true\nca_file = \"{}\"\n",
                ca_pem.display()
            );
            let mut gw = Gateway::start(options(server.addr(), &upstream)).await?;
            let (bd, db) = births(&mut host, "TLS session").await?;
            ensure!(metric(&db, "speed").is_some(), "{db}");
            gw.stop().await?;
            let nd = host
                .next("NDEATH on stop", Duration::from_secs(15), is("NDEATH"))
                .await?;
            ensure!(bdseq(&nd) == Some(bd), "{nd}");

            // A wrong CA: no session, the reason is in the status.
            let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
            std::fs::write(&ca_pem, other.cert.pem())?;
            gw.restart().await?;
            gw.wait_status(
                "certificate error in the status",
                Duration::from_secs(20),
                |s| {
                    let up = &s["sparkplug_node"]["upstream"];
                    up["connected"] == false
                        && up["last_error"]
                            .as_str()
                            .is_some_and(|e| e.to_lowercase().contains("certificate"))
                },
            )
            .await?;
            Ok(())
        },
    )
    .await
}
