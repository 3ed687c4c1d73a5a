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

/// `seq` of every message of edge node gw1 from the first NBIRTH on: 0 at each NBIRTH, then
/// +1 (mod 256) per message; NDEATH has none (`tck-id-payloads-sequence-num-always-included`,
/// `tck-id-payloads-sequence-num-incrementing`). Returns how many were checked.
fn check_node_seq(history: &[Value]) -> Result<usize> {
    let mut next: Option<i64> = None;
    let mut n = 0;
    for m in history.iter().filter(|m| node_msg(m)) {
        match m["type"].as_str() {
            Some("NDEATH") => {
                ensure!(m["seq"].is_null(), "NDEATH with a seq: {m}");
                next = None;
            }
            Some("NBIRTH") => {
                ensure!(m["seq"] == 0, "{m}");
                next = Some(1);
            }
            Some("NCMD" | "DCMD") => {}
            _ => {
                if let Some(want) = next {
                    ensure!(
                        m["seq"] == want,
                        "seq {} where {want} was due: {m}",
                        m["seq"]
                    );
                    next = Some((want + 1) % 256);
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Store-and-forward to the primary host's server: while the upstream connection is cut,
/// every change of a tag is kept (in the gateway's buffer, as the embedded session's records);
/// after the reconnect the births come first, then each change exactly once as DDATA with
/// `is_historical = true`, in order, with live changes interleaved (not historical) and the
/// session's `seq` unbroken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_store_and_forward_replays_history() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(150),
        "Sparkplug upstream store-and-forward",
        async {
            let p = Progress::new("sparkplug_store_and_forward");
            let (sim, server) = start_plc().await?;
            let broker = Mosquitto::start().await?;
            let proxy =
                FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], broker.port()))).await?;
            let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
            // A slow replay, so that live data has to interleave with it.
            let upstream = format!(
                "server = \"{}\"\nkeep_alive_s = 5\nhistory_rate = 5\n",
                proxy.addr()
            );
            let gw = Gateway::start(options(server.addr(), &upstream)).await?;
            let (bd0, db) = births(&mut host, "first session").await?;
            let temp = alias(&db, "temp")?;
            sim.set_registers(UNIT, Area::InputRegister, 0, &[7]);
            ddata(&mut host, temp, 7).await?;

            // The outage: the will, then changes the host cannot see.
            proxy.set_mode(Mode::Cut);
            let nd = host
                .next("will NDEATH after the cut", Duration::from_secs(20), is("NDEATH"))
                .await?;
            ensure!(bdseq(&nd) == Some(bd0), "{nd}");
            gw.wait_status("upstream disconnected", Duration::from_secs(10), |s| {
                s["sparkplug_node"]["upstream"]["connected"] == false
            })
            .await?;
            let outage: Vec<i64> = (200..230).collect();
            for v in &outage {
                sim.set_registers(UNIT, Area::InputRegister, 0, &[*v as u16]);
                // Held for three polls (50 ms), so the poller sees every value.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let pending = gw
                .wait_status("history pending", Duration::from_secs(10), |s| {
                    s["sparkplug_node"]["upstream"]["history_pending"].as_u64() > Some(0)
                })
                .await?["sparkplug_node"]["upstream"]["history_pending"]
                .clone();
            p.note(format!("{} changes during the outage, {pending} buffer records pending", outage.len()));

            // Back: births first, then the history, live changes in between.
            proxy.set_mode(Mode::Pass);
            let back = tokio::time::Instant::now();
            let births_at = host.history.len();
            let (bd1, db1) = births(&mut host, "after reconnect").await?;
            // Each attempt through the cutting proxy sent a CONNECT: each took a bdSeq.
            ensure!(bd1 > bd0, "bdSeq {bd1} after {bd0}");
            ensure!(
                metric(&db1, "temp").is_some_and(|m| m["value"] == 229),
                "the DBIRTH carries the current value: {db1}"
            );
            let live: Vec<i64> = (300..303).collect();
            for v in &live {
                sim.set_registers(UNIT, Area::InputRegister, 0, &[*v as u16]);
                ddata(&mut host, temp, *v).await?;
            }
            // Every outage change arrives as history; the last one ends the replay.
            let historical = |m: &Value| {
                m["type"] == "DDATA"
                    && m["metrics"].as_array().is_some_and(|ms| {
                        ms.iter().any(|x| x["alias"] == temp && x["is_historical"] == true && x["value"] == 229)
                    })
            };
            if !host.history[births_at..].iter().any(historical) {
                host.next("the last historical change", Duration::from_secs(30), historical)
                    .await?;
            }
            let replay_ms = back.elapsed().as_millis();
            let s = gw
                .wait_status("replay done", Duration::from_secs(10), |s| {
                    s["sparkplug_node"]["upstream"]["history_pending"] == 0
                })
                .await?;
            let session = &host.history[births_at..];
            let first_birth = session
                .iter()
                .position(|m| m["type"] == "NBIRTH")
                .context("NBIRTH")?;
            let mut hist_values = Vec::new();
            let mut live_values = Vec::new();
            let mut first_hist = None;
            let mut last_ts = 0;
            for (i, m) in session.iter().enumerate().filter(|(_, m)| m["type"] == "DDATA") {
                for x in m["metrics"].as_array().into_iter().flatten() {
                    if x["alias"] != temp {
                        continue;
                    }
                    let v = x["value"].as_i64().context("value")?;
                    if x["is_historical"] == true {
                        first_hist.get_or_insert(i);
                        let ts = x["timestamp"].as_u64().context("historical metric without timestamp")?;
                        ensure!(ts >= last_ts, "history out of order: {m}");
                        last_ts = ts;
                        hist_values.push(v);
                    } else {
                        live_values.push(v);
                    }
                }
            }
            let first_hist = first_hist.context("no historical DDATA")?;
            ensure!(first_hist > first_birth, "history before the births");
            let replayed: Vec<i64> = hist_values.iter().copied().filter(|v| outage.contains(v)).collect();
            let duplicates = replayed.len() - {
                let mut u = replayed.clone();
                u.dedup();
                u.len()
            };
            ensure!(replayed == outage, "history {hist_values:?}, want every outage change once: {outage:?}");
            ensure!(
                live.iter().all(|v| live_values.iter().filter(|x| *x == v).count() == 1),
                "live {live_values:?}"
            );
            ensure!(
                hist_values.iter().all(|v| !live.contains(v)),
                "a live change marked historical: {hist_values:?}"
            );
            let last_live = session
                .iter()
                .rposition(|m| m["type"] == "DDATA" && m["metrics"][0]["is_historical"] == false)
                .context("live DDATA")?;
            let last_hist = session
                .iter()
                .rposition(|m| m["type"] == "DDATA" && m["metrics"][0]["is_historical"] == true)
                .context("historical DDATA")?;
            ensure!(
                last_live < last_hist,
                "live data did not interleave with the replay (all live after the history)"
            );
            let checked = check_node_seq(&host.history)?;
            let up = &s["sparkplug_node"]["upstream"];
            ensure!(up["history_replayed"].as_u64() >= Some(outage.len() as u64), "{up}");
            p.note(format!(
                "replayed {} outage changes (duplicates {duplicates}) in {replay_ms} ms at 5/s, {} live changes interleaved, {checked} seq checked; status {up}",
                replayed.len(),
                live_values.len()
            ));
            Ok(())
        },
    )
    .await
}

/// A server that cannot be reached takes no bdSeq: the bdSeq increments by one on every MQTT
/// CONNECT actually sent (`tck-id-topics-nbirth-bdseq-increment`), so after refused
/// connections the first session of a new gateway is still bdSeq 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_takes_no_bdseq() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(
        Duration::from_secs(120),
        "bdSeq and refused connections",
        async {
            let (_sim, server) = start_plc().await?;
            let port = ironbridge_e2e::free_port()?;
            let upstream = format!("server = \"127.0.0.1:{port}\"\nkeep_alive_s = 5\n");
            let gw = Gateway::start(options(server.addr(), &upstream)).await?;
            // Nothing listens: refused, retried with back-off (1 s, 2 s, ...).
            gw.wait_status("three refused connections", Duration::from_secs(30), |s| {
                s["sparkplug_node"]["upstream"]["connect_failures"].as_u64() >= Some(3)
            })
            .await?;
            let broker = Mosquitto::start_on(port).await?;
            let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
            // Subscribed after the gateway may have connected: ask for the births.
            host.send(json!({"cmd": "ncmd_rebirth", "group": "plant", "node": "gw1"}))
                .await?;
            let (bd, _) = births(&mut host, "first session").await?;
            ensure!(bd == 0, "bdSeq {bd} after refused connections, want 0");
            Ok(())
        },
    )
    .await
}

/// The primary host's STATE on the upstream server, across reconnects: births wait for
/// "online"; a newer "offline" ends the session; an older "online" (retained by the server,
/// e.g. restored from a backup) is ignored on the next connection too, because the node keeps
/// the last timestamp it saw (`tck-id-operational-behavior-edge-node-termination-host-offline-timestamp`);
/// a host before 3.0 (`STATE/<id>`, `ONLINE`) is understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_primary_host_state_across_reconnects() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(120), "primary host upstream", async {
        let (_sim, server) = start_plc().await?;
        let broker = Mosquitto::start().await?;
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], broker.port()))).await?;
        let mut host = Host::start(broker.port(), &["spBv1.0/#"]).await?;
        let t0 = ironbridge_e2e::gateway::now_ms() as u64;
        host.send(json!({"cmd": "state", "host_id": "scada", "online": true, "timestamp": t0}))
            .await?;
        let upstream = format!("server = \"{}\"\nkeep_alive_s = 5\n", proxy.addr());
        let mut opts = options(server.addr(), &upstream);
        opts.extra_toml = opts.extra_toml.replace(
            "edge_node_id = \"gw1\"\n",
            "edge_node_id = \"gw1\"\nprimary_host_id = \"scada\"\n",
        );
        let gw = Gateway::start(opts).await?;
        let (bd0, _) = births(&mut host, "host online").await?;
        // The embedded session has its own identity and never waits for the host.
        let s = gw.status().await?;
        ensure!(
            s["sparkplug_node"]["embedded_edge_node_id"] == "gw1-local"
                && s["sparkplug_node"]["embedded"]["born"] == true,
            "{}",
            s["sparkplug_node"]
        );

        host.send(
            json!({"cmd": "state", "host_id": "scada", "online": false, "timestamp": t0 + 10}),
        )
        .await?;
        let nd = host
            .next(
                "NDEATH: host offline",
                Duration::from_secs(10),
                is("NDEATH"),
            )
            .await?;
        ensure!(bdseq(&nd) == Some(bd0), "{nd}");
        // An older "online" becomes the retained STATE; then the connection drops.
        host.send(json!({"cmd": "state", "host_id": "scada", "online": true, "timestamp": t0 + 5}))
            .await?;
        gw.wait_status(
            "reconnected after the offline",
            Duration::from_secs(15),
            |s| s["sparkplug_node"]["upstream"]["connects"].as_u64() >= Some(2),
        )
        .await?;
        proxy.set_mode(Mode::Cut);
        gw.wait_status("cut", Duration::from_secs(10), |s| {
            s["sparkplug_node"]["upstream"]["connected"] == false
        })
        .await?;
        proxy.set_mode(Mode::Pass);
        gw.wait_status("connected again", Duration::from_secs(15), |s| {
            s["sparkplug_node"]["upstream"]["connected"] == true
                && s["sparkplug_node"]["upstream"]["connects"].as_u64() >= Some(3)
        })
        .await?;
        // The retained old "online" came first on this connection: no births.
        let early = host
            .next(
                "no births on an old online",
                Duration::from_secs(3),
                is("NBIRTH"),
            )
            .await;
        ensure!(
            early.is_err(),
            "born on a STATE older than the last offline: {early:?}"
        );
        // A pre-3.0 host says ONLINE on STATE/<id>: births.
        host.send(json!({"cmd": "raw", "topic": "STATE/scada", "hex": "4f4e4c494e45"}))
            .await?;
        let (bd1, _) = births(&mut host, "legacy ONLINE").await?;
        ensure!(bd1 > bd0, "bdSeq {bd1} after {bd0}");
        Ok(())
    })
    .await
}
