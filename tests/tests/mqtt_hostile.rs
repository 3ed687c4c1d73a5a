//! Hostile MQTT clients against the real `ironbridge` daemon (no Kafka: it buffers).
//!
//! Each test starts the daemon with the broker's safe defaults (no grant-everything topic rule)
//! and runs ONE attack from 127.0.0.1 while a legitimate device on 127.0.0.2 (raw MQTT over
//! TCP, `ironbridge_e2e::hostile`) keeps logging in and publishing QoS 1 every 200 ms. Every
//! test asserts (see [`Bounds`]):
//! - each PUBACK of the device within 1 s, each of its logins within 1 s, none refused;
//! - the daemon's VmRSS (sampled every 100 ms) below 64 MB from the attack's start until it
//!   recovered, and back within +8 MB of the pre-attack level within 70 s of the attack's end
//!   (the daemon trims malloc once a minute; the wait ends as soon as it is back);
//! - `/healthz` 200 throughout, no panic in the daemon's log;
//! - the refusal counter of the limit under attack (`mqtt.refused.*`, `mqtt.protocol_errors`,
//!   ... in `/api/status`, or `/metrics`) went up by what the attack provoked, and what the
//!   attacker saw on the wire (reason codes, closes, timing) is what the limit promises.
//!
//! Each prints one line `HOSTILE-TABLE | ATTACK | peak MB | after MB | legit max ack ms | refused`
//! (MB = 10^6 bytes) and a `HOSTILE-DETAIL` line.
//!
//! Run: `CARGO_TARGET_DIR=/var/tmp/ironbridge-target cargo nextest run -p ironbridge-e2e
//! --cargo-profile test-opt --test mqtt_hostile --no-capture`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_e2e::gateway::{
    Gateway, GatewayOptions, Progress, hash_password, metric, num, prepare, within,
};
use ironbridge_e2e::hostile::{
    ATTACKER, Bounds, ConnectSpec, DEVICE, DeviceSpec, MB, Mqtt, PUBREC, Recv, Watch, Will, delta,
    disconnect_reason, frame, metric_delta, parse_connack, parse_suback, props, publish, put_bin,
    put_str, rss_bytes, subscribe, tcp_from, vbi,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

/// Every test's deadline: the attack (< 60 s) plus up to 70 s for the memory to come back.
const LIMIT: Duration = Duration::from_secs(170);
const PASSWORD: &str = "legit device pw 1";

/// The daemon as shipped: no topic rule granting the protected topics.
fn options() -> GatewayOptions {
    GatewayOptions {
        id: "e2e-hostile".into(),
        grant_all_topics: false,
        ..Default::default()
    }
}

fn mqtt_addr(gw: &Gateway) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, gw.mqtt_port()))
}

/// Runs `f(0..n)` with at most `parallel` at once; results in index order.
async fn parallel<T, F, Fut>(n: usize, parallel: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let sem = Arc::new(Semaphore::new(parallel));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let fut = f(i);
        set.spawn(async move {
            let _permit = permit;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, r) = r.context("task panicked")?;
        out[i] = Some(r.with_context(|| format!("attacker #{i}"))?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// `/api/status` at a moment when the legitimate device has nothing in flight (just after one
/// of its PUBACKs; the next publish is ~200 ms away), with its ack count then: so that
/// `buffer.records` can be accounted for exactly.
async fn quiet_status(gw: &Gateway, w: &Watch) -> Result<(Value, u64)> {
    for _ in 0..20 {
        let a = w.device_acked();
        let deadline = Instant::now() + Duration::from_secs(2);
        while w.device_acked() == a && Instant::now() < deadline {
            sleep(Duration::from_millis(2)).await;
        }
        let a1 = w.device_acked();
        let s = gw.status().await?;
        if w.device_acked() == a1 {
            return Ok((s, a1));
        }
    }
    bail!("no quiet moment for a status snapshot")
}

/// `mqtt.sessions` with no network client connected (the in-process subscribers' sessions),
/// once the broker has published its sizes (once a second).
async fn idle_sessions(gw: &Gateway) -> Result<u64> {
    let s = gw
        .wait_status("broker sizes published", Duration::from_secs(10), |s| {
            num(s, "/uptime_s").is_some_and(|u| u >= 2)
        })
        .await?;
    num(&s, "/mqtt/sessions").context("mqtt.sessions")
}

/// Counters of the `mqtt.refused` block and friends, as `name +delta` for the table.
fn deltas(before: &Value, after: &Value, pointers: &[&str]) -> Result<BTreeMap<String, i64>> {
    let mut m = BTreeMap::new();
    for p in pointers {
        m.insert(
            p.trim_start_matches("/mqtt/").replace('/', "."),
            delta(before, after, p)?,
        );
    }
    Ok(m)
}

fn show(d: &BTreeMap<String, i64>) -> String {
    d.iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| format!("{k} {v:+}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `bytes` one byte per `every` while watching the socket: when the server closed it
/// (time since the start), or `None` at `limit`; and what the server sent.
async fn trickle(
    s: TcpStream,
    bytes: Vec<u8>,
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(every);
    let mut i = 0;
    let deadline = start + limit;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return (Some(start.elapsed()), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if i < bytes.len() {
                    if wr.write_all(&bytes[i..i + 1]).await.is_err() {
                        return (Some(start.elapsed()), got);
                    }
                    i += 1;
                }
            }
            _ = sleep_until(deadline) => return (None, got),
        }
    }
}

/// Holds a socket open without sending anything: when the server closed it, or `None` at
/// `limit` (then it is closed by us).
fn hold_silent(mut s: TcpStream, limit: Duration) -> JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        let t = Instant::now();
        let mut b = [0u8; 256];
        loop {
            match timeout_at(t + limit, s.read(&mut b)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    })
}

/// The body of an encoded packet (after the fixed header).
fn body_of(packet: &[u8]) -> Vec<u8> {
    let mut i = 1;
    while packet[i] & 0x80 != 0 {
        i += 1;
    }
    packet[i + 1..].to_vec()
}

// ---------------------------------------------------------------------------------------------
// 1. Partial 1 MB CONNECTs
// ---------------------------------------------------------------------------------------------

/// 40 sockets announce a 1 MiB CONNECT and trickle its first bytes: refused from the fixed
/// header (max_connect_bytes 64 KiB) and closed at once. Then 40 that announce 60,000 bytes
/// (under the limit) and trickle: closed at connect_timeout_ms (10 s). Memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_01_partial_1mb_connects() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-01");
    within(LIMIT, "attack 1", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let wave = |announce: usize, limit: Duration, every: Duration| {
            parallel(40, 40, move |i| async move {
                let s = tcp_from(ATTACKER, addr).await?;
                let body = body_of(&ConnectSpec::v5(&format!("trickle-{i}")).encode());
                let mut bytes = vec![0x10];
                bytes.extend_from_slice(&vbi(announce));
                bytes.extend_from_slice(&body);
                let mut s = s;
                // The fixed header at once, then the rest byte by byte.
                s.write_all(&bytes[..1 + vbi(announce).len()]).await?;
                let rest = bytes[1 + vbi(announce).len()..].to_vec();
                Ok(trickle(s, rest, every, limit).await)
            })
        };
        let a = wave(1 << 20, Duration::from_secs(5), Duration::from_millis(100)).await?;
        let a_closed: Vec<Duration> = a.iter().filter_map(|(c, _)| *c).collect();
        let a_max = a_closed.iter().max().copied().unwrap_or_default();
        p.note(format!(
            "1 MiB announced: {} of 40 closed by the daemon, slowest after {} ms",
            a_closed.len(),
            a_max.as_millis()
        ));
        // The refused sockets' slots are free again once the daemon saw them close.
        let sockets_before = num(&w.status_before, "/mqtt/sockets").unwrap_or(0);
        let t = Instant::now();
        gw.wait_status("sockets released", Duration::from_secs(10), |s| {
            num(s, "/mqtt/sockets").is_some_and(|n| n <= sockets_before.max(1))
        })
        .await?;
        let released = t.elapsed();
        p.note(format!(
            "their sockets released {} ms after the last close",
            released.as_millis()
        ));
        let b = wave(60_000, Duration::from_secs(15), Duration::from_millis(200)).await?;
        let b_closed: Vec<Duration> = b.iter().filter_map(|(c, _)| *c).collect();
        let (b_min, b_max) = (
            b_closed.iter().min().copied().unwrap_or_default(),
            b_closed.iter().max().copied().unwrap_or_default(),
        );
        p.note(format!(
            "60,000 B announced: {} of 40 closed, after {:.1}-{:.1} s",
            b_closed.len(),
            b_min.as_secs_f64(),
            b_max.as_secs_f64()
        ));
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &[
                "/mqtt/protocol_errors",
                "/mqtt/refused/per_address",
                "/mqtt/refused/max_connections",
            ],
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "1 partial 1 MB CONNECTs",
            &format!(
                "{} (40 at max_connect_bytes within {} ms, 40 at connect_timeout_ms)",
                show(&d),
                a_max.as_millis()
            ),
        )?;
        ensure!(
            a_closed.len() == 40 && a_max < Duration::from_secs(3),
            "1 MiB CONNECTs: {} of 40 closed, slowest {a_max:?}",
            a_closed.len()
        );
        ensure!(
            a.iter().all(|(_, got)| got.is_empty()),
            "the daemon answered a CONNECT it refused from its fixed header (protocol unknown)"
        );
        ensure!(
            b_closed.len() == 40
                && b_min >= Duration::from_secs(9)
                && b_max <= Duration::from_secs(12),
            "trickled CONNECTs under the limit must be closed at connect_timeout_ms (10 s): \
             {} of 40 closed, {b_min:?}..{b_max:?}",
            b_closed.len()
        );
        ensure!(
            d["refused.per_address"] == 0 && d["refused.max_connections"] == 0,
            "no socket of the attack should have met a connection limit: {d:?}"
        );
        ensure!(
            d["protocol_errors"] == 80,
            "protocol_errors +{} (expected +80)",
            d["protocol_errors"]
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 2. CONNECTs with 1 MB wills, waiting for the password check
// ---------------------------------------------------------------------------------------------

/// A daemon with one account (`plc`), anonymous access off, and the legitimate device logging
/// in as `plc` from 127.0.0.2 for every publish: the password check is what is under attack.
async fn password_daemon(p: &Progress) -> Result<(Gateway, SocketAddr, Watch)> {
    let hash = hash_password(PASSWORD).await?;
    let gw = Gateway::start(GatewayOptions {
        allow_anonymous: false,
        users: vec![("plc".into(), hash)],
        ..options()
    })
    .await?;
    let addr = mqtt_addr(&gw);
    let dev = DeviceSpec::new(addr)
        .login("plc", PASSWORD)
        .reconnect_every(1);
    let w = Watch::begin(&gw, dev, Bounds::default()).await?;
    p.note(format!(
        "pre-attack RSS {:.1} MB",
        w.pre_rss as f64 / MB as f64
    ));
    Ok((gw, addr, w))
}

/// (a) 30 concurrent MQTT 5 CONNECTs with a 1 MiB will and a (wrong) password to check:
/// refused from the fixed header (packet too large for max_connect_bytes, 64 KiB) before any
/// password check, closed at once; nothing is buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_02a_1mib_wills() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-02a");
    within(LIMIT, "attack 2a", async {
        let (gw, addr, w) = password_daemon(&p).await?;
        let big = parallel(30, 30, move |i| async move {
            let spec = ConnectSpec::v5(&format!("bigwill-{i}"))
                .login("plc", "wrong password")
                .will(Will {
                    topic: format!("plant/will/{i}"),
                    payload: vec![b'w'; 1 << 20],
                    qos: 1,
                    retain: false,
                });
            let bytes = spec.encode();
            let mut m = Mqtt::open(ATTACKER, addr, true).await?;
            let t = Instant::now();
            let _ = timeout(Duration::from_secs(10), m.stream.write_all(&bytes)).await;
            let (got, closed) = m.until_closed(Duration::from_secs(5)).await?;
            Ok((closed, got, t.elapsed()))
        })
        .await?;
        let closed = big.iter().filter(|(c, _, _)| *c).count();
        let slowest = big.iter().map(|x| x.2).max().unwrap_or_default();
        let answers: Vec<String> = big
            .iter()
            .flat_map(|(_, got, _)| got.iter().map(|p| p.describe()))
            .collect();
        p.note(format!(
            "1 MiB wills: {closed} of 30 closed, answers {answers:?}, slowest {} ms",
            slowest.as_millis()
        ));
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &[
                "/mqtt/protocol_errors",
                "/mqtt/auth_failures",
                "/mqtt/refused/auth_busy",
            ],
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "2a 1 MiB wills at the password check",
            &format!(
                "{} (max_connect_bytes, all closed within {} ms, no password checked)",
                show(&d),
                slowest.as_millis()
            ),
        )?;
        ensure!(
            closed == 30,
            "only {closed} of 30 1-MiB CONNECTs were closed"
        );
        ensure!(
            big.iter()
                .flat_map(|(_, got, _)| got)
                .all(|p| parse_connack(true, p).is_ok_and(|a| a.code == 0x95)),
            "a 1-MiB CONNECT got something other than CONNACK 0x95: {answers:?}"
        );
        ensure!(
            d["protocol_errors"] == 30 && d["auth_failures"] == 0 && d["refused.auth_busy"] == 0,
            "30 oversize CONNECTs: {d:?} (expected protocol_errors +30 and no password check)"
        );
        Ok(())
    })
    .await
}

/// (b) The attacker shrinks the wills to 60,000 bytes (under max_connect_bytes) so that 30
/// concurrent CONNECTs (wrong passwords, 15 user names) reach the password check at once: they
/// are bounded by the login throttle (20 attempts per address) and the auth queue (16) and
/// refused bad password / busy / banned, with the memory of the parked wills and of two argon2
/// checks bounded. The device on 127.0.0.2 must keep logging in within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_02b_60kb_wills_fill_the_password_queue() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-02b");
    within(LIMIT, "attack 2b", async {
        let (gw, addr, w) = password_daemon(&p).await?;
        let shrunk = parallel(30, 30, move |i| async move {
            let user = if i.is_multiple_of(2) {
                "plc".to_string()
            } else {
                format!("spray-{i}")
            };
            let spec = ConnectSpec::v5(&format!("midwill-{i}"))
                .login(&user, "wrong password")
                .will(Will {
                    topic: format!("plant/will/{i}"),
                    payload: vec![b'w'; 60_000],
                    qos: 1,
                    retain: false,
                });
            let (_, ack) = Mqtt::connect(ATTACKER, addr, &spec, Duration::from_secs(10)).await?;
            Ok(ack.code)
        })
        .await?;
        let mut codes: BTreeMap<u8, usize> = BTreeMap::new();
        for c in &shrunk {
            *codes.entry(*c).or_default() += 1;
        }
        p.note(format!("60,000 B wills: CONNACK codes {codes:x?}"));
        // Keep the device logging in a little after the burst.
        sleep(Duration::from_secs(1)).await;
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &[
                "/mqtt/refused/auth_busy",
                "/mqtt/refused/auth_throttled",
                "/mqtt/auth_failures",
            ],
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "2b 60 kB wills at the password check",
            &format!("{}; CONNACK {codes:x?}", show(&d)),
        )?;
        ensure!(
            shrunk.iter().all(|c| matches!(c, 0x86 | 0x89 | 0x8A)),
            "60,000-byte-will CONNECTs with wrong passwords: codes {codes:x?}"
        );
        let checked = d["auth_failures"] - d["refused.auth_throttled"];
        ensure!(
            checked <= 20 && d["refused.auth_busy"] + d["refused.auth_throttled"] >= 10,
            "30 concurrent password checks from one address: {d:?} ({checked} checked)"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 3. Junk logins
// ---------------------------------------------------------------------------------------------

/// 400 CONNECTs with wrong passwords (the device's own user name and others), 40 at a time,
/// from 127.0.0.1, while the device logs in with the right password from 127.0.0.2 for every
/// publish (every 200 ms): at most 20 passwords are checked (login throttle per address), the
/// rest refused banned or busy, and the device is served within 1 s each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_03_junk_logins() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-03");
    within(LIMIT, "attack 3", async {
        let (gw, addr, w) = password_daemon(&p).await?;

        let t = Instant::now();
        let junk = parallel(400, 40, move |i| async move {
            let user = if i.is_multiple_of(2) {
                "plc".to_string()
            } else {
                format!("junk-{i}")
            };
            let spec = ConnectSpec::v5(&format!("junk-{i}"))
                .version(i % 3 != 0)
                .login(&user, &format!("guess {i}"));
            let (_, ack) = Mqtt::connect(ATTACKER, addr, &spec, Duration::from_secs(10)).await?;
            Ok((spec.v5, ack.code))
        })
        .await?;
        let took = t.elapsed();
        let mut codes: BTreeMap<(bool, u8), usize> = BTreeMap::new();
        for c in &junk {
            *codes.entry(*c).or_default() += 1;
        }
        p.note(format!(
            "400 junk logins in {:.1} s: (v5, code) {codes:x?}",
            took.as_secs_f64()
        ));
        // Keep the device going a little after the burst.
        sleep(Duration::from_secs(2)).await;
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &[
                "/mqtt/refused/auth_throttled",
                "/mqtt/refused/auth_busy",
                "/mqtt/auth_failures",
            ],
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "3 400 junk logins",
            &format!(
                "{}; {} passwords checked",
                show(&d),
                d["auth_failures"] - d["refused.auth_throttled"]
            ),
        )?;
        ensure!(
            // 0x97: the address's connection quota (`max_connections_per_address`), which a
            // burst of 40 parallel logins can reach while refused sockets are still closing.
            junk.iter().all(|(v5, c)| if *v5 {
                matches!(c, 0x86 | 0x89 | 0x8A | 0x97)
            } else {
                matches!(c, 3..=5)
            }),
            "a junk login was not refused as bad credentials, busy, banned or over quota: {codes:x?}"
        );
        // Throttled answers count as auth failures too; the rest were real password checks.
        let checked = d["auth_failures"] - d["refused.auth_throttled"];
        ensure!(
            (0..=20).contains(&checked),
            "{checked} junk passwords were checked (the login throttle allows 20 per address)"
        );
        // Refused cheaply (no argon2): busy (at most 4 queued per address) or throttled; a few
        // may meet the address's connection quota instead.
        ensure!(
            d["refused.auth_throttled"] + d["refused.auth_busy"] >= 300
                && d["refused.auth_throttled"] + d["refused.auth_busy"] + checked <= 400,
            "400 junk logins: {d:?}"
        );
        ensure!(
            out.device.connects >= 5,
            "the device logged in only {} times",
            out.device.connects
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 4. Silent sockets
// ---------------------------------------------------------------------------------------------

/// (a) max_connections_per_address = 16: 40 silent sockets from 127.0.0.1 get 16 slots, the
/// other 24 are closed within 2 s; another CONNECT from 127.0.0.1 is refused quota exceeded
/// (0x97); the device on 127.0.0.2 keeps logging in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_04a_silent_sockets_per_address() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-04a");
    within(LIMIT, "attack 4a", async {
        let gw =
            Gateway::start(options().mqtt_setting("max_connections_per_address", "16")).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let mut held = Vec::new();
        for _ in 0..40 {
            held.push(hold_silent(
                tcp_from(ATTACKER, addr).await?,
                Duration::from_secs(6),
            ));
        }
        // After the refusals' 2 s CONNECT wait: a CONNECT from the same address is answered.
        sleep(Duration::from_millis(2500)).await;
        let extra = Mqtt::connect(
            ATTACKER,
            addr,
            &ConnectSpec::v5("one-more-from-127.0.0.1"),
            Duration::from_secs(5),
        )
        .await;
        let extra_code = match &extra {
            Ok((_, a)) => format!("CONNACK {:#04x}", a.code),
            Err(e) => format!("{e:#}"),
        };
        let mut closed = Vec::new();
        for h in held {
            if let Some(t) = h.await? {
                closed.push(t);
            }
        }
        let slowest = closed.iter().max().copied().unwrap_or_default();
        p.note(format!(
            "40 silent sockets: {} closed by the daemon (slowest {} ms), {} held; another \
             CONNECT from 127.0.0.1: {extra_code}",
            closed.len(),
            slowest.as_millis(),
            40 - closed.len()
        ));
        let after = gw.status().await?;
        let d = deltas(&w.status_before, &after, &["/mqtt/refused/per_address"])?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check("4a silent sockets, 16 per address", &show(&d))?;
        ensure!(
            closed.len() == 24 && slowest < Duration::from_secs(3),
            "expected the 24 sockets over the per-address limit closed within 3 s: {} closed, \
             slowest {slowest:?}",
            closed.len()
        );
        ensure!(
            extra.as_ref().is_ok_and(|(_, a)| a.code == 0x97),
            "a CONNECT over the per-address limit: {extra_code} (expected CONNACK 0x97)"
        );
        ensure!(
            d["refused.per_address"] == 25,
            "refused.per_address {:+} (expected +25)",
            d["refused.per_address"]
        );
        Ok(())
    })
    .await
}

/// (b) max_connections = 64 (per address 1000), connect_timeout_ms = 2000: 70 silent sockets
/// from 127.0.0.1 take every free slot (the long-lived device holds one); a new device on
/// 127.0.0.2 is refused server busy while they are held and gets in once connect_timeout_ms
/// has closed them: after at most ~2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_04b_silent_sockets_total() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-04b");
    within(LIMIT, "attack 4b", async {
        let gw = Gateway::start(
            options()
                .mqtt_setting("max_connections", "64")
                .mqtt_setting("max_connections_per_address", "1000")
                .mqtt_setting("connect_timeout_ms", "2000"),
        )
        .await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr).long_lived(), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let opened = Instant::now();
        let mut held = Vec::new();
        for _ in 0..70 {
            held.push(hold_silent(
                tcp_from(ATTACKER, addr).await?,
                Duration::from_secs(6),
            ));
        }
        p.note(format!(
            "70 silent sockets opened in {} ms",
            opened.elapsed().as_millis()
        ));
        let mut refusals = Vec::new();
        let mut got_in = None;
        for attempt in 0..40 {
            let t = Instant::now();
            match Mqtt::connect(
                DEVICE,
                addr,
                &ConnectSpec::v5("newcomer"),
                Duration::from_secs(3),
            )
            .await
            {
                Ok((m, a)) if a.code == 0 => {
                    got_in = Some((opened.elapsed(), attempt));
                    m.close().await;
                    break;
                }
                Ok((_, a)) => refusals.push(format!(
                    "CONNACK {:#04x} ({} ms)",
                    a.code,
                    t.elapsed().as_millis()
                )),
                Err(e) => refusals.push(format!("{e:#}")),
            }
            sleep(Duration::from_millis(200)).await;
        }
        let mut closed = Vec::new();
        for h in held {
            if let Some(t) = h.await? {
                closed.push(t);
            }
        }
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &["/mqtt/refused/max_connections", "/mqtt/protocol_errors"],
        )?;
        p.note(format!(
            "newcomer: {got_in:?} (since the sockets opened, attempt); refused before: \
             {refusals:?}; {} of 70 silent sockets closed by the daemon",
            closed.len()
        ));
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "4b silent sockets, 64 in total",
            &format!(
                "{}; newcomer in after {} ms",
                show(&d),
                got_in.map_or(-1, |(t, _)| t.as_millis() as i64)
            ),
        )?;
        let (t, _) = got_in.context("the newcomer never got in")?;
        ensure!(
            t <= Duration::from_millis(3000),
            "the newcomer got in only after {t:?} (connect_timeout_ms is 2000)"
        );
        ensure!(
            !refusals.is_empty()
                && refusals
                    .iter()
                    .all(|r| r.contains("0x89") || r.contains("closed before CONNACK")),
            "while the slots were held the newcomer must be refused server busy: {refusals:?}"
        );
        ensure!(
            closed.len() == 70,
            "{} of 70 silent sockets closed by the daemon",
            closed.len()
        );
        ensure!(
            d["refused.max_connections"] >= 7 + refusals.len() as i64 && d["protocol_errors"] >= 63,
            "counters: {d:?}"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 5. Keep-alive 0
// ---------------------------------------------------------------------------------------------

/// max_keep_alive_s = 2: clients asking for no keep-alive (0) or a longer one get 2 s (MQTT 5:
/// server keep alive 2 in the CONNACK) and are disconnected after 1.5 × 2 = 3 s of silence
/// (MQTT 5: DISCONNECT 0x8D).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_05_keep_alive_zero() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-05");
    within(LIMIT, "attack 5", async {
        let gw = Gateway::start(options().mqtt_setting("max_keep_alive_s", "2")).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let r = parallel(25, 25, move |i| async move {
            let (v5, ka) = match i {
                0..=9 => (true, 0),
                10..=19 => (false, 0),
                _ => (true, 600),
            };
            let spec = ConnectSpec::v5(&format!("idle-{i}"))
                .version(v5)
                .keep_alive(ka);
            let (mut m, ack) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            let t = Instant::now();
            let (got, closed) = m.until_closed(Duration::from_secs(8)).await?;
            Ok((v5, ack.server_keep_alive, got, closed.then(|| t.elapsed())))
        })
        .await?;
        let times: Vec<Duration> = r.iter().filter_map(|x| x.3).collect();
        let (min, max) = (
            times.iter().min().copied().unwrap_or_default(),
            times.iter().max().copied().unwrap_or_default(),
        );
        p.note(format!(
            "{} of 25 idle clients disconnected after {} - {} ms",
            times.len(),
            min.as_millis(),
            max.as_millis()
        ));
        let after = gw.status().await?;
        let d = deltas(
            &w.status_before,
            &after,
            &["/mqtt/refused/keep_alive_timeouts"],
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "5 keep-alive 0 (max 2 s)",
            &format!(
                "{}; idle closed after {}-{} ms",
                show(&d),
                min.as_millis(),
                max.as_millis()
            ),
        )?;
        ensure!(
            times.len() == 25,
            "only {} of 25 idle clients were disconnected",
            times.len()
        );
        ensure!(
            min >= Duration::from_millis(2500) && max <= Duration::from_millis(3500),
            "idle clients must be disconnected 1.5 x 2 s = 3 s after CONNACK: {min:?}..{max:?}"
        );
        for (i, (v5, ska, got, _)) in r.iter().enumerate() {
            if *v5 {
                ensure!(
                    *ska == Some(2),
                    "client {i}: server keep alive {ska:?}, expected 2"
                );
                ensure!(
                    got.len() == 1 && got[0].kind() == 14 && disconnect_reason(&got[0]) == 0x8D,
                    "client {i}: expected DISCONNECT 0x8D, got {:?}",
                    got.iter().map(|p| p.describe()).collect::<Vec<_>>()
                );
            } else {
                ensure!(got.is_empty(), "3.1.1 client {i} got packets: {got:?}");
            }
        }
        ensure!(
            d["refused.keep_alive_timeouts"] == 25,
            "keep_alive_timeouts {:+}",
            d["refused.keep_alive_timeouts"]
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 6. Retained messages of 1 MiB
// ---------------------------------------------------------------------------------------------

/// 40 retained messages of 1 MiB (max_payload_bytes) on 40 topics: all accepted into the buffer
/// (by design), but the retained store keeps only what fits max_retained_bytes (16 MiB); the
/// rest is counted as refused. Clearing them (empty retained publishes) gives the memory back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_06_retained_1mib() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-06");
    within(LIMIT, "attack 6", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let (mut m, _) = Mqtt::connect_ok(
            ATTACKER,
            addr,
            &ConnectSpec::v5("retainer"),
            Duration::from_secs(5),
        )
        .await?;
        let payload = vec![b'r'; 1 << 20];
        let mut codes = BTreeMap::new();
        for i in 0..40 {
            let c = m
                .publish_qos1(
                    &format!("hostile/retained/{i}"),
                    &payload,
                    true,
                    Duration::from_secs(10),
                )
                .await?;
            *codes.entry(c).or_insert(0) += 1;
        }
        sleep(Duration::from_millis(1200)).await;
        let full = gw.status().await?;
        let held_rss = w.rss_now()?;
        let kept = num(&full, "/mqtt/retained_messages").unwrap_or(0);
        let kept_bytes = num(&full, "/mqtt/retained_bytes").unwrap_or(0);
        p.note(format!(
            "40 x 1 MiB retained: PUBACK codes {codes:x?}; store holds {kept} messages, {:.1} MB; \
             RSS {:.1} MB",
            kept_bytes as f64 / MB as f64,
            held_rss as f64 / MB as f64
        ));
        // Clear them: an empty retained payload deletes a topic's retained message.
        for i in 0..40 {
            m.publish_qos1(
                &format!("hostile/retained/{i}"),
                b"",
                true,
                Duration::from_secs(10),
            )
            .await?;
        }
        m.close().await;
        gw.wait_status("retained store empty", Duration::from_secs(5), |s| {
            num(s, "/mqtt/retained_messages") == Some(0)
        })
        .await?;
        let d = deltas(&w.status_before, &full, &["/mqtt/refused/retained"])?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "6 40 retained x 1 MiB",
            &format!(
                "{} ({kept} kept, {:.1} MB; RSS holding them {:.1} MB)",
                show(&d),
                kept_bytes as f64 / MB as f64,
                held_rss as f64 / MB as f64
            ),
        )?;
        ensure!(
            codes.get(&0) == Some(&40),
            "every 1 MiB publish is valid and must be acknowledged 0: {codes:x?}"
        );
        ensure!(
            kept_bytes <= 16 << 20 && kept >= 10,
            "retained store: {kept} messages, {kept_bytes} bytes (max_retained_bytes 16 MiB)"
        );
        ensure!(
            d["refused.retained"] == 40 - kept as i64,
            "refused.retained {:+} with {kept} of 40 kept",
            d["refused.retained"]
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 7. 3,000 subscriptions
// ---------------------------------------------------------------------------------------------

/// One MQTT 5 client asks for 3,000 distinct filters (30 SUBSCRIBEs of 100), one 3.1.1 client
/// for 300: 256 each are granted (max_subscriptions_per_client), the rest refused (0x97 / 0x80);
/// once they disconnect `mqtt.subscriptions` is back to its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_07_many_subscriptions() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-07");
    within(LIMIT, "attack 7", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));
        let base = num(&w.status_before, "/mqtt/subscriptions").context("subscriptions")?;

        let mut clients = Vec::new();
        let mut all_codes = Vec::new();
        for (v5, total) in [(true, 3000usize), (false, 300)] {
            let spec = ConnectSpec::v5(&format!("subscriber-{v5}")).version(v5);
            let (mut m, _) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            let mut codes = Vec::new();
            for chunk in 0..total / 100 {
                let filters: Vec<(String, u8)> = (0..100)
                    .map(|k| (format!("hostile/sub/{v5}/{}", chunk * 100 + k), 0))
                    .collect();
                codes.extend(m.subscribe(&filters, Duration::from_secs(10)).await?);
            }
            all_codes.push((v5, codes));
            clients.push(m);
        }
        let full = gw
            .wait_status("subscriptions counted", Duration::from_secs(5), |s| {
                num(s, "/mqtt/subscriptions") == Some(base + 512)
            })
            .await?;
        p.note(format!(
            "subscriptions {base} -> {:?} while connected",
            num(&full, "/mqtt/subscriptions")
        ));
        for m in clients {
            m.close().await;
        }
        gw.wait_status(
            "subscriptions back to baseline",
            Duration::from_secs(5),
            |s| num(s, "/mqtt/subscriptions") == Some(base),
        )
        .await?;
        let after = gw.status().await?;
        let d = deltas(&w.status_before, &after, &["/mqtt/refused/subscriptions"])?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "7 3000 subscription filters",
            &format!(
                "{}; subscriptions {base} -> {} -> {base}",
                show(&d),
                base + 512
            ),
        )?;
        for (v5, codes) in &all_codes {
            let refused = if *v5 { 0x97 } else { 0x80 };
            ensure!(
                codes.len() == if *v5 { 3000 } else { 300 }
                    && codes[..256].iter().all(|c| *c == 0)
                    && codes[256..].iter().all(|c| *c == refused),
                "v5={v5}: SUBACK codes granted {} / refused {:#04x} {} / other {}",
                codes.iter().filter(|c| **c == 0).count(),
                refused,
                codes.iter().filter(|c| **c == refused).count(),
                codes.iter().filter(|c| **c != 0 && **c != refused).count()
            );
        }
        ensure!(
            d["refused.subscriptions"] == 2744 + 44,
            "refused.subscriptions {:+} (expected +2788)",
            d["refused.subscriptions"]
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 8. Topic aliases
// ---------------------------------------------------------------------------------------------

/// MQTT 5 clients pipeline 300 PUBLISHes with topic aliases 1..300: with 60 kB topics the first
/// is refused (max_topic_bytes 4096: DISCONNECT 0x90); with 4,000-byte topics 32 are accepted
/// (topic_alias_maximum) and alias 33 ends the connection (DISCONNECT 0x94).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_08_topic_aliases() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-08");
    within(LIMIT, "attack 8", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        let r = parallel(10, 10, move |c| async move {
            let topic_len = if c < 5 { 60_000 } else { 4_000 };
            let (m, ack) = Mqtt::connect_ok(
                ATTACKER,
                addr,
                &ConnectSpec::v5(&format!("aliaser-{c}")),
                Duration::from_secs(5),
            )
            .await?;
            let (mut rd, mut wr) = m.stream.into_split();
            let writer = tokio::spawn(async move {
                let mut sent = 0;
                for alias in 1..=300u16 {
                    let mut topic = format!("hostile/alias/{c}/{alias}/").into_bytes();
                    topic.resize(topic_len, b'x');
                    let mut prop = vec![0x23];
                    prop.extend_from_slice(&alias.to_be_bytes());
                    let pkt = publish(true, &topic, b"a", 0, false, 0, &prop);
                    if !matches!(
                        timeout(Duration::from_secs(5), wr.write_all(&pkt)).await,
                        Ok(Ok(()))
                    ) {
                        break;
                    }
                    sent += 1;
                }
                sent
            });
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 4096];
            let closed = loop {
                match timeout_at(deadline, rd.read(&mut buf)).await {
                    Err(_) => break false,
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                }
            };
            let sent = writer.await?;
            Ok((topic_len, ack.topic_alias_maximum, got, closed, sent))
        })
        .await?;
        let after = gw.status().await?;
        let d = deltas(&w.status_before, &after, &["/mqtt/protocol_errors"])?;
        let received = delta(&w.status_before, &after, "/mqtt/publishes_received")?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "8 300 topic aliases, 60 kB / 4 kB topics",
            &format!("{} (5 x 0x90, 5 x 0x94)", show(&d)),
        )?;
        for (c, (len, tam, got, closed, sent)) in r.iter().enumerate() {
            let want = if *len > 4096 { 0x90 } else { 0x94 };
            ensure!(*tam == Some(32), "client {c}: topic alias maximum {tam:?}");
            ensure!(
                *closed && got.len() >= 2 && got[0] == 0xE0 && got.get(2) == Some(&want),
                "client {c} ({len}-byte topics, {sent} sent): expected DISCONNECT {want:#04x} \
                 and a close, got {:02x?} (closed {closed})",
                &got[..got.len().min(8)]
            );
        }
        ensure!(
            d["protocol_errors"] == 10,
            "protocol_errors {:+}",
            d["protocol_errors"]
        );
        ensure!(
            received >= 5 * 32,
            "the 4,000-byte-topic clients' first 32 publishes should have been accepted \
             (publishes_received {received:+})"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 9. 800 client ids
// ---------------------------------------------------------------------------------------------

/// 800 distinct client ids connect with clean start and leave (half with DISCONNECT, half by
/// dropping the socket; MQTT 5 and 3.1.1): `mqtt.sessions` is back to its baseline. Then, with
/// max_sessions = 300, 400 MQTT 5 ids leave sessions with a 3 s expiry behind: those beyond the
/// limit are refused quota exceeded (0x97), and all expire back to the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_09_many_client_ids() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-09");
    within(LIMIT, "attack 9", async {
        let gw = Gateway::start(options().mqtt_setting("max_sessions", "300")).await?;
        let addr = mqtt_addr(&gw);
        let w = Watch::begin(&gw, DeviceSpec::new(addr).long_lived(), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));
        let base = num(&w.status_before, "/mqtt/sessions").context("sessions")?;

        let t = Instant::now();
        parallel(800, 16, move |i| async move {
            let spec = ConnectSpec::v5(&format!("churn-{i}")).version(i.is_multiple_of(2));
            let (m, _) = Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            if i % 4 < 2 {
                m.close().await;
            } else {
                drop(m);
            }
            Ok(())
        })
        .await?;
        p.note(format!(
            "800 clean-start ids in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        // The sizes are published once a second: only a value taken after that counts.
        sleep(Duration::from_millis(1100)).await;
        let back = gw
            .wait_status(
                "sessions back after clean starts",
                Duration::from_secs(5),
                |s| num(s, "/mqtt/sessions") == Some(base),
            )
            .await?;
        let metrics_mid = gw.metrics().await?;

        let codes = parallel(400, 16, move |i| async move {
            let spec = ConnectSpec::v5(&format!("persist-{i}")).session_expiry(3);
            let (m, ack) = Mqtt::connect(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            if ack.code == 0 {
                m.close().await;
            }
            Ok(ack.code)
        })
        .await?;
        let accepted = codes.iter().filter(|c| **c == 0).count();
        let refused = codes.iter().filter(|c| **c == 0x97).count();
        let full = gw.status().await?;
        // Meanwhile a new device id is refused too: the limit is global.
        let newcomer = Mqtt::connect(
            DEVICE,
            addr,
            &ConnectSpec::v5("new-device-while-full"),
            Duration::from_secs(5),
        )
        .await
        .map(|(_, a)| a.code);
        p.note(format!(
            "400 persistent ids: {accepted} accepted, {refused} refused 0x97; sessions {:?}; a new \
             device id from 127.0.0.2 meanwhile: {newcomer:x?}",
            num(&full, "/mqtt/sessions")
        ));
        // Held (published within a second), then expired back to the baseline.
        let t = Instant::now();
        let mut most = 0;
        loop {
            let s = gw.status().await?;
            let n = num(&s, "/mqtt/sessions").context("sessions")?;
            most = most.max(n);
            if n == base && most > base && t.elapsed() > Duration::from_millis(1100) {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(12),
                "sessions {n} (most {most}) not back to {base} within 12 s"
            );
            sleep(Duration::from_millis(100)).await;
        }
        p.note(format!(
            "sessions peaked at {most}, back to {base} after {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let metrics_after = gw.metrics().await?;
        let rejected = metric_delta(
            &metrics_mid,
            &metrics_after,
            "ironbridge_mqtt_connections_rejected_total",
        )?;
        let expired = metric_delta(
            &metrics_mid,
            &metrics_after,
            "ironbridge_mqtt_sessions_expired_total",
        )?;
        let out = w.finish(&gw, &p).await?;
        out.report_and_check(
            "9 800 client ids (+400 persistent)",
            &format!(
                "sessions {base} -> {base} -> {most} -> {base}; max_sessions: \
                 connections_rejected {rejected:+} (0x97 x {refused}), sessions_expired {expired:+}"
            ),
        )?;
        ensure!(
            num(&back, "/mqtt/sessions") == Some(base),
            "sessions not back"
        );
        ensure!(
            accepted + refused == 400 && refused >= 1,
            "persistent ids: {accepted} accepted, {refused} refused, other codes {:x?}",
            codes
                .iter()
                .filter(|c| **c != 0 && **c != 0x97)
                .collect::<Vec<_>>()
        );
        ensure!(
            rejected as usize >= refused,
            "connections_rejected {rejected:+} < {refused} refusals"
        );
        ensure!(
            expired as usize >= accepted,
            "sessions_expired {expired:+} < {accepted} persistent sessions"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 10. 30,000 topics
// ---------------------------------------------------------------------------------------------

/// 30,000 distinct topics published at QoS 0 (4 connections, pipelined): all land in the buffer
/// (by design), nothing is kept per topic in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_10_many_topics() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-10");
    within(LIMIT, "attack 10", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let mut w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));
        let (before, a0) = quiet_status(&gw, &w).await?;

        let t = Instant::now();
        parallel(4, 4, move |c| async move {
            let spec = ConnectSpec::v5(&format!("topic-flood-{c}")).version(c.is_multiple_of(2));
            let (mut m, _) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            let mut bytes = Vec::new();
            for i in 0..7_500 {
                let topic = format!("hostile/flood/{c}/{i}");
                bytes.extend(publish(m.v5, topic.as_bytes(), b"v", 0, false, 0, &[]));
            }
            m.send(&bytes).await?;
            m.ping(Duration::from_secs(30)).await?;
            m.close().await;
            Ok(())
        })
        .await?;
        p.note(format!(
            "30,000 topics in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let dev = w.stop_device().await?;
        let after = gw.status().await?;
        let device_acks = dev.acked as i64 - a0 as i64;
        let records = delta(&before, &after, "/buffer/records")?;
        let next = delta(&before, &after, "/buffer/next_offset")?;
        let received = delta(&before, &after, "/mqtt/publishes_received")?;
        let pe = delta(&before, &after, "/mqtt/protocol_errors")?;
        let out = w.finish_with(&gw, &p, Some(dev)).await?;
        out.report_and_check(
            "10 30000 topics QoS 0",
            &format!(
                "none refused (by design); buffer.records {records:+} = 30000 + {device_acks} legit"
            ),
        )?;
        ensure!(
            records == 30_000 + device_acks && next == records,
            "buffer.records {records:+}, next_offset {next:+}: expected 30000 + {device_acks}"
        );
        ensure!(
            received == 30_000 + device_acks,
            "publishes_received {received:+}"
        );
        ensure!(pe == 0, "protocol_errors {pe:+}");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 11. Malformed packets
// ---------------------------------------------------------------------------------------------

/// What the daemon must do with one malformed packet.
#[derive(Debug, Clone)]
enum Expect {
    /// Sent after a valid CONNECT: the connection ends (MQTT 5: DISCONNECT with one of these
    /// reason codes first; 3.1.1: just closed). Counted in protocol_errors.
    Ends(&'static [u8]),
    /// Sent instead of the CONNECT: CONNACK with this code (`None`: nothing) and closed,
    /// counted in protocol_errors (`true`) or as a rejected connection (`false`: a well-formed
    /// CONNECT the broker refuses, or an unsupported protocol version).
    Refused { code: Option<u8>, counted: bool },
    /// A SUBSCRIBE refused in its SUBACK (MQTT 5 code; 3.1.1: 0x80); the connection stays.
    SubAck(u8),
}

impl Expect {
    /// What one such connection adds to (protocol_errors, connections_rejected).
    fn counts(&self) -> (i64, i64) {
        match self {
            Expect::Ends(_) => (1, 0),
            Expect::Refused { counted: true, .. } => (1, 0),
            Expect::Refused { counted: false, .. } => (0, 1),
            Expect::SubAck(_) => (0, 0),
        }
    }
}

/// One malformed packet: (name, sent after a valid CONNECT, bytes, expectation). `None` when
/// the case does not exist in that protocol version.
type Case = (&'static str, bool, Vec<u8>, Expect);

fn malformed_case(kind: usize, i: usize, v5: bool) -> Option<Case> {
    use Expect::*;
    let topic = format!("hostile/m/{i}");
    let pub_body = |topic: &[u8], qos: u8, id: u16, raw_props: &[u8], payload: &[u8]| {
        let p = publish(v5, topic, payload, qos.min(2), false, id, raw_props);
        body_of(&p)
    };
    let v5_props = |raw: &[u8]| if v5 { props(raw) } else { Vec::new() };
    let connect = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = Vec::new();
        f(&mut b);
        frame(0x10, &b)
    };
    // A CONNECT body with the given flags byte, client id and extra fields after it.
    let connect_with = |name: &str, level: u8, flags: u8, client_id: &[u8], tail: &[u8]| {
        let mut b = Vec::new();
        put_str(&mut b, name);
        b.push(level);
        b.push(flags);
        b.extend_from_slice(&30u16.to_be_bytes());
        if level == 5 {
            b.push(0);
        }
        put_bin(&mut b, client_id);
        b.extend_from_slice(tail);
        frame(0x10, &b)
    };
    let level = if v5 { 5 } else { 4 };
    let cid = format!("mal-{i}");
    let connect_v5_only = |c: Expect| {
        if v5 {
            c
        } else {
            Refused {
                code: None,
                counted: true,
            }
        }
    };
    let c: Case = match kind {
        0 => (
            "PUBLISH QoS 3",
            true,
            frame(0x36, &pub_body(topic.as_bytes(), 1, 1, &[], b"x")),
            Ends(&[0x81]),
        ),
        1 => (
            "PUBLISH DUP on QoS 0",
            true,
            frame(0x38, &pub_body(topic.as_bytes(), 0, 0, &[], b"x")),
            Ends(&[0x81]),
        ),
        2 => (
            "SUBSCRIBE flags 0000",
            true,
            {
                let s = subscribe(v5, 7, &[(topic.clone(), 0)]);
                frame(0x80, &body_of(&s))
            },
            Ends(&[0x81]),
        ),
        3 => (
            "PUBREL flags 0000",
            true,
            frame(0x60, &(i as u16 | 1).to_be_bytes()),
            Ends(&[0x81]),
        ),
        4 => (
            "UNSUBSCRIBE flags 0000",
            true,
            {
                let mut b = 9u16.to_be_bytes().to_vec();
                b.extend(v5_props(&[]));
                put_str(&mut b, &topic);
                frame(0xA0, &b)
            },
            Ends(&[0x81]),
        ),
        5 => (
            "reserved packet type 0",
            true,
            frame(0x00, &vec![0; i % 5]),
            Ends(&[0x81]),
        ),
        6 => (
            "packet type 15",
            true,
            frame(0xF0, &[]),
            Ends(if v5 { &[0x82] } else { &[0x81] }),
        ),
        7 => (
            "topic not UTF-8",
            true,
            {
                let mut t = format!("hostile/{i}/").into_bytes();
                t.extend_from_slice(&[0xC3, 0x28]);
                frame(0x30, &pub_body(&t, 0, 0, &[], b"x"))
            },
            Ends(&[0x81]),
        ),
        8 => (
            "U+0000 in topic",
            true,
            frame(
                0x32,
                &pub_body(format!("hostile/{i}/\0/x").as_bytes(), 1, 3, &[], b"x"),
            ),
            Ends(&[0x81]),
        ),
        9 => (
            "'+' in a PUBLISH topic",
            true,
            frame(
                0x32,
                &pub_body(format!("hostile/+/{i}").as_bytes(), 1, 3, &[], b"x"),
            ),
            Ends(&[0x90]),
        ),
        10 => (
            "'#' in a PUBLISH topic",
            true,
            frame(
                0x30,
                &pub_body(format!("hostile/{i}/#").as_bytes(), 0, 0, &[], b"x"),
            ),
            Ends(&[0x90]),
        ),
        11 => (
            "filter a/#/b",
            true,
            subscribe(v5, 5, &[(format!("hostile/#/b{i}"), 1)]),
            SubAck(0x8F),
        ),
        12 => (
            "filter a+/b",
            true,
            subscribe(v5, 5, &[(format!("hostile/x+{i}/b"), 0)]),
            SubAck(0x8F),
        ),
        13 => (
            "reserved subscription option bits",
            true,
            subscribe(v5, 5, &[(topic.clone(), if v5 { 0xC1 } else { 0x05 })]),
            Ends(&[0x81]),
        ),
        14 => (
            "QoS 1 with packet id 0",
            true,
            frame(0x32, &pub_body(topic.as_bytes(), 1, 0, &[], b"x")),
            Ends(&[0x82]),
        ),
        15 => (
            "second CONNECT",
            true,
            ConnectSpec::v5(&format!("again-{i}")).version(v5).encode(),
            Ends(&[0x82]),
        ),
        16 => (
            "SUBSCRIBE without filters",
            true,
            {
                let mut b = 3u16.to_be_bytes().to_vec();
                b.extend(v5_props(&[]));
                frame(0x82, &b)
            },
            Ends(&[0x82]),
        ),
        17 => (
            "PINGRESP from a client",
            true,
            frame(0xD0, &vec![0; i % 3]),
            Ends(&[0x82]),
        ),
        18 => (
            "remaining length of 5 bytes",
            true,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Ends(&[0x81]),
        ),
        19 => (
            "UTF-16 surrogate in topic",
            true,
            {
                let mut t = format!("hostile/{i}/").into_bytes();
                t.extend_from_slice(&[0xED, 0xA0, 0x80]);
                frame(0x30, &pub_body(&t, 0, 0, &[], b"x"))
            },
            Ends(&[0x81]),
        ),
        20 => (
            "topic length past the packet",
            true,
            frame(0x30, &[0x00, 0xF0, b'a', b'b', (i % 200) as u8]),
            Ends(&[0x81]),
        ),
        21 => (
            "UNSUBSCRIBE without filters",
            true,
            {
                let mut b = 4u16.to_be_bytes().to_vec();
                b.extend(v5_props(&[]));
                frame(0xA2, &b)
            },
            Ends(&[0x82]),
        ),
        22 => (
            "PUBACK of one byte",
            true,
            frame(0x40, &[(i % 250) as u8 + 1]),
            Ends(&[0x81]),
        ),
        23 => (
            "PUBLISH announcing 2 MiB",
            true,
            {
                let mut b = vec![0x30];
                b.extend(vbi(2 << 20));
                b.extend_from_slice(&[0, 3, b'a', b'/', b'b']);
                b
            },
            Ends(&[0x95]),
        ),
        24 => (
            "empty topic",
            true,
            frame(0x30, &pub_body(b"", 0, 0, &[], format!("x{i}").as_bytes())),
            Ends(&[0x82, 0x90]),
        ),
        // MQTT 5 only.
        25 if v5 => (
            "topic alias 0",
            true,
            frame(0x30, &pub_body(topic.as_bytes(), 0, 0, &[0x23, 0, 0], b"x")),
            Ends(&[0x94]),
        ),
        26 if v5 => (
            "topic alias 33 > maximum",
            true,
            frame(
                0x30,
                &pub_body(topic.as_bytes(), 0, 0, &[0x23, 0, 33], b"x"),
            ),
            Ends(&[0x94]),
        ),
        27 if v5 => (
            "unknown topic alias",
            true,
            frame(0x30, &pub_body(b"", 0, 0, &[0x23, 0, 5], b"x")),
            Ends(&[0x82]),
        ),
        28 if v5 => (
            "unknown property 0x7F",
            true,
            frame(0x30, &pub_body(topic.as_bytes(), 0, 0, &[0x7F, 1], b"x")),
            Ends(&[0x81]),
        ),
        29 if v5 => (
            "property twice",
            true,
            frame(
                0x30,
                &pub_body(topic.as_bytes(), 0, 0, &[0x01, 0, 0x01, 0], b"x"),
            ),
            Ends(&[0x82]),
        ),
        30 if v5 => (
            "subscription identifier from a client",
            true,
            frame(0x30, &pub_body(topic.as_bytes(), 0, 0, &[0x0B, 5], b"x")),
            Ends(&[0x82]),
        ),
        31 if v5 => (
            "payload not UTF-8 despite its format indicator",
            true,
            frame(
                0x30,
                &pub_body(
                    topic.as_bytes(),
                    0,
                    0,
                    &[0x01, 1],
                    &[0xFF, 0xFE, (i % 200) as u8],
                ),
            ),
            Ends(&[0x99]),
        ),
        // Instead of the CONNECT.
        32 => (
            "PUBLISH before CONNECT",
            false,
            publish(v5, topic.as_bytes(), b"x", 0, false, 0, &[]),
            Refused {
                code: None,
                counted: true,
            },
        ),
        33 => (
            "CONNECT reserved flag",
            false,
            connect_with("MQTT", level, 0x03, cid.as_bytes(), &[]),
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        34 => (
            "CONNECT protocol name MQTX",
            false,
            connect_with("MQTX", level, 0x02, cid.as_bytes(), &[]),
            Refused {
                code: Some(0x01),
                counted: false,
            },
        ),
        35 => (
            "CONNECT protocol level 6",
            false,
            connect_with("MQTT", 6, 0x02, cid.as_bytes(), &[]),
            Refused {
                code: Some(0x01),
                counted: false,
            },
        ),
        36 => (
            "CONNECT MQIsdp 3",
            false,
            connect_with("MQIsdp", 3, 0x02, cid.as_bytes(), &[]),
            Refused {
                code: Some(0x01),
                counted: false,
            },
        ),
        37 => (
            "will QoS 3",
            false,
            {
                let mut tail = Vec::new();
                if v5 {
                    tail.push(0);
                }
                put_str(&mut tail, &topic);
                put_bin(&mut tail, b"w");
                connect_with("MQTT", level, 0x02 | 0x04 | 0x18, cid.as_bytes(), &tail)
            },
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        38 => (
            "will retain without will",
            false,
            connect_with("MQTT", level, 0x22, cid.as_bytes(), &[]),
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        39 => (
            "client id not UTF-8",
            false,
            connect_with(
                "MQTT",
                level,
                0x02,
                &[b'm', 0xC0, 0xAF, (i % 100) as u8 + 1],
                &[],
            ),
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        40 => (
            "client id with U+0000",
            false,
            connect_with("MQTT", level, 0x02, format!("m\0{i}").as_bytes(), &[]),
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        41 => (
            "will topic with a wildcard",
            false,
            {
                let mut tail = Vec::new();
                if v5 {
                    tail.push(0);
                }
                put_str(&mut tail, &format!("hostile/+/{i}"));
                put_bin(&mut tail, b"w");
                connect_with("MQTT", level, 0x02 | 0x04, cid.as_bytes(), &tail)
            },
            Refused {
                code: Some(if v5 { 0x90 } else { 3 }),
                counted: true,
            },
        ),
        42 => (
            "CONNECT cut short",
            false,
            connect(&|b| {
                put_str(b, "MQTT");
                b.push(level);
            }),
            connect_v5_only(Refused {
                code: Some(0x81),
                counted: true,
            }),
        ),
        43 => (
            "CONNECT fixed-header flags 0001",
            false,
            {
                let mut c = ConnectSpec::v5(&cid).version(v5).encode();
                c[0] = 0x11;
                c
            },
            Refused {
                code: None,
                counted: true,
            },
        ),
        44 => (
            "CONNECT announcing 1 MiB",
            false,
            {
                let mut b = vec![0x10];
                b.extend(vbi(1 << 20));
                b.extend_from_slice(&body_of(&ConnectSpec::v5(&cid).version(v5).encode()));
                b
            },
            Refused {
                code: None,
                counted: true,
            },
        ),
        45 if v5 => (
            "CONNECT with an authentication method",
            false,
            {
                let mut s = ConnectSpec::v5(&cid);
                s.extra_props = vec![0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'];
                s.encode()
            },
            Refused {
                code: Some(0x8C),
                counted: false,
            },
        ),
        45 => (
            "3.1.1 password without user name",
            false,
            {
                let mut tail = Vec::new();
                put_bin(&mut tail, b"pw");
                connect_with("MQTT", 4, 0x42, cid.as_bytes(), &tail)
            },
            Refused {
                code: None,
                counted: true,
            },
        ),
        46 if !v5 => (
            "3.1.1 empty client id, persistent session",
            false,
            connect_with("MQTT", 4, 0x00, b"", &[]),
            Refused {
                code: Some(2),
                counted: false,
            },
        ),
        _ => return None,
    };
    Some(c)
}

const MALFORMED_KINDS: usize = 47;

/// What one malformed connection observed, checked against its expectation.
async fn malformed_one(addr: SocketAddr, i: usize, case: Case, v5: bool) -> Result<String> {
    let (name, after_connect, bytes, expect) = case;
    let mut m = if after_connect {
        let spec = ConnectSpec::v5(&format!("mal-{i}")).version(v5);
        Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5))
            .await?
            .0
    } else {
        Mqtt::open(ATTACKER, addr, v5).await?
    };
    let _ = m.send(&bytes).await;
    let ver = if v5 { "5" } else { "3.1.1" };
    match expect {
        Expect::Ends(codes) => {
            let (got, closed) = m.until_closed(Duration::from_secs(5)).await?;
            let desc: Vec<String> = got.iter().map(|p| p.describe()).collect();
            ensure!(
                closed,
                "{name} ({ver}): connection not closed; got {desc:?}"
            );
            if v5 {
                ensure!(
                    got.len() == 1
                        && got[0].kind() == 14
                        && codes.contains(&disconnect_reason(&got[0])),
                    "{name} (5): expected DISCONNECT {codes:x?}, got {desc:?}"
                );
            } else {
                ensure!(
                    got.is_empty(),
                    "{name} (3.1.1): expected a plain close, got {desc:?}"
                );
            }
        }
        Expect::Refused { code, .. } => {
            let (got, closed) = m.until_closed(Duration::from_secs(5)).await?;
            let desc: Vec<String> = got.iter().map(|p| p.describe()).collect();
            ensure!(
                closed,
                "{name} ({ver}): connection not closed; got {desc:?}"
            );
            match code {
                None => ensure!(
                    got.is_empty(),
                    "{name} ({ver}): expected no answer, got {desc:?}"
                ),
                Some(c) => {
                    // Unsupported protocols are answered in 3.1.1 format (return code 1).
                    let as_v5 = v5 && c != 0x01;
                    ensure!(
                        got.len() == 1 && parse_connack(as_v5, &got[0]).is_ok_and(|a| a.code == c),
                        "{name} ({ver}): expected CONNACK {c:#04x}, got {desc:?}"
                    );
                }
            }
        }
        Expect::SubAck(code) => {
            let want = if v5 { code } else { 0x80 };
            match m.recv(Duration::from_secs(5)).await? {
                Recv::Packet(p) => {
                    let (_, codes) = parse_suback(v5, &p)?;
                    ensure!(
                        codes == [want],
                        "{name} ({ver}): SUBACK {codes:x?}, expected [{want:#04x}]"
                    );
                }
                other => bail!("{name} ({ver}): expected SUBACK, got {other:?}"),
            }
            // Still served.
            m.ping(Duration::from_secs(5))
                .await
                .with_context(|| format!("{name} ({ver}): the connection should stay"))?;
            m.close().await;
        }
    }
    Ok(format!("{name} ({ver})"))
}

/// 1,000 connections, each sending a different malformed packet (47 kinds, MQTT 5 and 3.1.1,
/// varied per connection): each is closed or refused with the reason the specification names;
/// protocol_errors counts exactly the violations; nothing reaches the buffer (its record count
/// grows exactly by the legitimate device's acknowledged messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_11_malformed_packets() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-11");
    within(LIMIT, "attack 11", async {
        let gw = Gateway::start(options()).await?;
        let addr = mqtt_addr(&gw);
        let idle_sessions = idle_sessions(&gw).await?;
        let mut w = Watch::begin(&gw, DeviceSpec::new(addr), Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));

        // 1,000 (kind, version) pairs cycling over every case that exists.
        let mut plan = Vec::new();
        let mut k = 0usize;
        while plan.len() < 1000 {
            let kind = k % MALFORMED_KINDS;
            let v5 = (k / MALFORMED_KINDS).is_multiple_of(2);
            if malformed_case(kind, plan.len(), v5).is_some() {
                plan.push((kind, v5));
            }
            k += 1;
        }
        let (counted, rejected) = plan
            .iter()
            .enumerate()
            .filter_map(|(i, &(kind, v5))| malformed_case(kind, i, v5))
            .map(|(_, _, _, e)| e.counts())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let kinds: std::collections::BTreeSet<(usize, bool)> = plan.iter().copied().collect();

        // Calibration: every (kind, version) once, alone, with its own counter deltas.
        let mut wrong = Vec::new();
        let mut m0 = gw.metrics().await?;
        for (n, &(kind, v5)) in kinds.iter().enumerate() {
            let i = 5000 + n;
            let case = malformed_case(kind, i, v5).context("case")?;
            let (name, want) = (case.0, case.3.counts());
            if let Err(e) = malformed_one(addr, i, case, v5).await {
                wrong.push(format!("{e:#}"));
            }
            let m1 = gw.metrics().await?;
            let got = (
                metric_delta(&m0, &m1, "ironbridge_mqtt_protocol_errors_total")? as i64,
                metric_delta(&m0, &m1, "ironbridge_mqtt_connections_rejected_total")? as i64,
            );
            if got != want {
                wrong.push(format!(
                    "{name} (v5 {v5}): (protocol_errors, connections_rejected) {got:?}, expected \
                     {want:?}"
                ));
            }
            m0 = m1;
        }
        p.note(format!(
            "calibration: {} kinds x versions one by one, {} wrong",
            kinds.len(),
            wrong.len()
        ));

        let (before, a0) = quiet_status(&gw, &w).await?;
        let metrics_before = gw.metrics().await?;
        let t = Instant::now();
        let plan = Arc::new(plan);
        let results = parallel(1000, 32, {
            let plan = plan.clone();
            move |i| {
                let (kind, v5) = plan[i];
                async move {
                    let case = malformed_case(kind, i, v5).context("case")?;
                    Ok(malformed_one(addr, i, case, v5)
                        .await
                        .map_err(|e| format!("#{i}: {e:#}")))
                }
            }
        })
        .await;
        p.note(format!(
            "1000 malformed connections ({} distinct kinds x versions) in {:.1} s",
            kinds.len(),
            t.elapsed().as_secs_f64()
        ));
        let dev = w.stop_device().await?;
        let after = gw.status().await?;
        let device_acks = dev.acked as i64 - a0 as i64;
        let records = delta(&before, &after, "/buffer/records")?;
        let pe = delta(&before, &after, "/mqtt/protocol_errors")?;
        let rj = metric_delta(
            &metrics_before,
            &gw.metrics().await?,
            "ironbridge_mqtt_connections_rejected_total",
        )? as i64;
        let appended = delta(&before, &after, "/mqtt/publishes_appended")?;
        // The sizes are published once a second: wait for a fresh value.
        sleep(Duration::from_millis(1100)).await;
        let sessions = gw
            .wait_status("sessions back", Duration::from_secs(5), |s| {
                num(s, "/mqtt/sessions") == Some(idle_sessions)
            })
            .await
            .is_ok();
        let out = w.finish_with(&gw, &p, Some(dev)).await?;
        out.report_and_check(
            "11 1000 malformed packets",
            &format!(
                "protocol_errors {pe:+} (expected {counted}), connections_rejected {rj:+} \
                 (expected {rejected}); buffer.records {records:+} = legit {device_acks}"
            ),
        )?;
        ensure!(
            wrong.is_empty(),
            "calibration (each kind alone):\n{}",
            wrong.join("\n")
        );
        let results = results?;
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        ensure!(
            failed.is_empty() && results.len() == 1000,
            "{} of {} malformed connections not handled as expected (first 30):\n{}",
            failed.len(),
            results.len(),
            failed
                .iter()
                .take(30)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        ensure!(
            records == device_acks && appended == device_acks,
            "buffer.records {records:+}, publishes_appended {appended:+}, but the legitimate \
             device got {device_acks} acks: something malformed was appended"
        );
        ensure!(pe == counted, "protocol_errors {pe:+}, expected {counted}");
        ensure!(
            rj == rejected,
            "connections_rejected {rj:+}, expected {rejected}"
        );
        ensure!(sessions, "sessions not back to the baseline");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 12. Internal client ids, Sparkplug commands and host state
// ---------------------------------------------------------------------------------------------

/// An ordinary account connects with the client ids the gateway's components used to have
/// (`ironbridge-sparkplug-ingest`, `ironbridge-local`, ...), each twice (a takeover among
/// network clients), subscribes to `spBv1.0/#` as a witness, and publishes Sparkplug DCMD/NCMD
/// and `spBv1.0/STATE/...` and `$SYS/...`: MQTT 5 gets PUBACK/PUBREC 0x87, 3.1.1 is
/// disconnected; nothing reaches the buffer or the witnesses, the components do not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_12_internal_ids_and_commands() -> Result<()> {
    prepare().await?;
    let p = Progress::new("hostile-12");
    within(LIMIT, "attack 12", async {
        let hash = hash_password(PASSWORD).await?;
        let gw = Gateway::start(GatewayOptions {
            allow_anonymous: false,
            users: vec![("plc".into(), hash.clone()), ("mallory".into(), hash)],
            ..options()
        })
        .await?;
        let addr = mqtt_addr(&gw);
        let dev = DeviceSpec::new(addr).login("plc", PASSWORD);
        let mut w = Watch::begin(&gw, dev, Bounds::default()).await?;
        p.note(format!(
            "pre-attack RSS {:.1} MB",
            w.pre_rss as f64 / MB as f64
        ));
        let (before, a0) = quiet_status(&gw, &w).await?;
        let metrics_before = gw.metrics().await?;

        // Impostors: each id twice; the second takes the session over.
        let ids = [
            ("ironbridge-sparkplug-ingest", true),
            ("ironbridge-local", false),
            ("ironbridge-sparkplug-node", true),
            ("ironbridge-e2e-hostile", false),
        ];
        let mut witnesses = Vec::new();
        let mut takeovers = Vec::new();
        for (id, v5) in ids {
            let spec = ConnectSpec::v5(id).version(v5).login("mallory", PASSWORD);
            let (mut first, _) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            let (mut second, _) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            let (got, closed) = first.until_closed(Duration::from_secs(5)).await?;
            takeovers.push((
                id,
                v5,
                got.iter().map(|p| p.describe()).collect::<Vec<_>>(),
                closed,
            ));
            let codes = second
                .subscribe(&[("spBv1.0/#".to_string(), 1)], Duration::from_secs(5))
                .await?;
            ensure!(codes == [1], "witness {id}: SUBACK {codes:x?}");
            witnesses.push((id, second));
        }

        let topics = [
            "spBv1.0/plant/DCMD/e2e-hostile/dev1",
            "spBv1.0/plant/NCMD/e2e-hostile",
            "spBv1.0/ironbridge/NCMD/e2e-hostile",
            "spBv1.0/ironbridge/DCMD/e2e-hostile/plc1",
            "spBv1.0/STATE/scada-host",
            "spBv1.0/STATE/ironbridge",
            "$SYS/broker/hostile",
        ];
        // MQTT 5: QoS 1 and QoS 2, each refused 0x87; the connection stays.
        let spec = ConnectSpec::v5("mallory-v5").login("mallory", PASSWORD);
        let (mut m, _) = Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
        let mut v5_codes = Vec::new();
        for round in 0..5 {
            for t in topics {
                let payload = format!("rebirth {round}");
                v5_codes.push((
                    t,
                    1,
                    m.publish_qos1(t, payload.as_bytes(), false, Duration::from_secs(5))
                        .await?,
                ));
                let id = m.next_packet_id();
                m.send(&publish(
                    true,
                    t.as_bytes(),
                    payload.as_bytes(),
                    2,
                    false,
                    id,
                    &[],
                ))
                .await?;
                v5_codes.push((t, 2, m.wait_ack(id, PUBREC, Duration::from_secs(5)).await?));
            }
        }
        m.ping(Duration::from_secs(5)).await?;
        m.close().await;
        // MQTT 3.1.1: no negative acknowledgement, the connection is closed.
        let mut v311 = Vec::new();
        for (k, t) in topics.iter().enumerate() {
            let spec = ConnectSpec::v311(&format!("mallory-311-{k}")).login("mallory", PASSWORD);
            let (mut m, _) =
                Mqtt::connect_ok(ATTACKER, addr, &spec, Duration::from_secs(5)).await?;
            m.send(&publish(false, t.as_bytes(), b"rebirth", 1, false, 1, &[]))
                .await?;
            let (got, closed) = m.until_closed(Duration::from_secs(5)).await?;
            v311.push((
                *t,
                got.iter().map(|p| p.describe()).collect::<Vec<_>>(),
                closed,
            ));
        }
        // Did any witness see anything?
        let mut seen = Vec::new();
        for (id, mut wit) in witnesses {
            while let Recv::Packet(p) = wit.recv(Duration::from_millis(300)).await? {
                seen.push(format!("{id}: {}", p.describe()));
            }
            wit.close().await;
        }
        let dev = w.stop_device().await?;
        let after = gw.status().await?;
        let metrics_after = gw.metrics().await?;
        let device_acks = dev.acked as i64 - a0 as i64;
        let records = delta(&before, &after, "/buffer/records")?;
        let acl = delta(&before, &after, "/mqtt/refused/acl_denied")?;
        let sample = "ironbridge_mqtt_user_acl_denied_total{user=\"mallory\"}";
        let mallory = metric(&metrics_after, sample).unwrap_or(0.0)
            - metric(&metrics_before, sample).unwrap_or(0.0);
        let ingest = |s: &Value| {
            (
                s.pointer("/sparkplug_ingest/messages").cloned(),
                s.pointer("/sparkplug_ingest/commands_seen").cloned(),
                s.pointer("/sparkplug_ingest/subscribed").cloned(),
            )
        };
        let components = |s: &Value| s.get("components").cloned();
        p.note(format!(
            "takeovers {takeovers:?}; 3.1.1 {v311:?}; witnesses saw {seen:?}; components {}",
            components(&after).unwrap_or_default()
        ));
        let out = w.finish_with(&gw, &p, Some(dev)).await?;
        let refused = (v5_codes.len() + v311.len()) as i64;
        out.report_and_check(
            "12 internal ids, DCMD/NCMD/STATE",
            &format!(
                "acl_denied {acl:+} (mallory {mallory:+}); buffer.records {records:+} = legit \
                 {device_acks}"
            ),
        )?;
        for (id, v5, got, closed) in &takeovers {
            ensure!(*closed, "{id}: the first connection was not taken over");
            if *v5 {
                ensure!(
                    got.len() == 1 && got[0].starts_with("DISCONNECT[8e"),
                    "{id}: expected DISCONNECT 0x8E on takeover, got {got:?}"
                );
            }
        }
        ensure!(
            v5_codes.iter().all(|(_, _, c)| *c == 0x87),
            "MQTT 5 publishes to protected topics: {v5_codes:x?}"
        );
        ensure!(
            v311.iter()
                .all(|(_, got, closed)| *closed && got.is_empty()),
            "MQTT 3.1.1 publishes to protected topics must close the connection: {v311:?}"
        );
        ensure!(seen.is_empty(), "witnesses received: {seen:?}");
        ensure!(
            records == device_acks,
            "buffer.records {records:+} but the legitimate device got {device_acks} acks"
        );
        ensure!(acl == refused, "acl_denied {acl:+}, expected {refused}");
        ensure!(
            mallory == refused as f64,
            "per-user acl_denied for mallory {mallory:+}"
        );
        ensure!(
            components(&before) == components(&after),
            "components changed: {:?} -> {:?}",
            components(&before),
            components(&after)
        );
        ensure!(
            ingest(&before) == ingest(&after),
            "Sparkplug ingest saw something: {:?} -> {:?}",
            ingest(&before),
            ingest(&after)
        );
        Ok(())
    })
    .await
}

/// The helpers' own encoding, checked against the daemon's codec expectations offline.
#[test]
fn encodings() {
    assert_eq!(vbi(0), [0]);
    assert_eq!(vbi(127), [127]);
    assert_eq!(vbi(128), [0x80, 1]);
    assert_eq!(vbi(1 << 20), [0x80, 0x80, 0x40]);
    let c = ConnectSpec::v311("a").encode();
    assert_eq!(
        c,
        [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b'a'
        ]
    );
    assert_eq!(body_of(&c).len(), 13);
    let p = publish(true, b"t", b"x", 1, false, 7, &[]);
    assert_eq!(p, [0x32, 7, 0, 1, b't', 0, 7, 0, b'x']);
    assert!(rss_bytes(std::process::id()).expect("own RSS") > 0);
}
