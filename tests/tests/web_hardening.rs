//! Issue 19 against the real daemon on loopback: login throttling that a burst cannot race and
//! an attacker cannot use to keep the admin out, one policy for web and MQTT logins (item 2),
//! log lines that outside values cannot
//! forge, in text and JSON (item 5), and the small ones (item 6): `HEAD` wherever `GET`, a
//! minimal public `/healthz`, sessions capped per user.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, hash_password, prepare, session_cookie,
};
use ironbridge_e2e::hostile::{ConnectSpec, Mqtt};
use serde_json::{Value, json};

/// An HTTPS client trusting the daemon's certificate, sending from `src` (a loopback address).
fn client_from(gw: &Gateway, src: Ipv4Addr) -> Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(gw.web_cert_path())? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(IpAddr::V4(src))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()?)
}

async fn login(
    c: &reqwest::Client,
    gw: &Gateway,
    user: &str,
    password: &str,
) -> Result<(u16, Option<String>)> {
    let r = c
        .post(gw.url("/api/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await?;
    Ok((r.status().as_u16(), session_cookie(r.headers())))
}

/// An MQTT account for the shared-throttle check.
const PLC: (&str, &str) = ("plc5", "plc5 long password");

/// CONNACK reason of an MQTT 5 login as [`PLC`] from `src`.
async fn mqtt_login_from(gw: &Gateway, src: Ipv4Addr) -> Result<u8> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], gw.mqtt_port()));
    let spec = ConnectSpec::v5(&format!("plc-{src}")).login(PLC.0, PLC.1);
    let (_conn, ack) = Mqtt::connect(src, to, &spec, Duration::from_secs(10)).await?;
    Ok(ack.code)
}

/// Before: 40 concurrent wrong passwords got 38 argon2 checks (401) and 2 refusals (429), and
/// one wrong login per lock period kept `admin` locked out from everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn login_bursts_cannot_race_the_throttle_nor_lock_the_admin_out() -> Result<()> {
    prepare().await?;
    let gw = Gateway::start(GatewayOptions {
        allow_anonymous: false,
        users: vec![(PLC.0.into(), hash_password(PLC.1).await?)],
        ..GatewayOptions::default()
    })
    .await?;
    let attacker = client_from(&gw, Ipv4Addr::new(127, 0, 0, 3))?;
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (c, url) = (attacker.clone(), gw.url("/api/login"));
        burst.spawn(async move {
            let body = json!({"username": ADMIN_USER, "password": format!("wrong guess {i}")});
            Ok::<_, anyhow::Error>(c.post(url).json(&body).send().await?.status().as_u16())
        });
    }
    let (mut checked, mut refused, mut no_connection) = (0, 0, 0);
    while let Some(a) = burst.join_next().await {
        match a? {
            Ok(401) => checked += 1,
            Ok(429) => refused += 1,
            Ok(other) => anyhow::bail!("unexpected answer {other}"),
            // Over web.max_connections_per_address (32): closed before any request.
            Err(_) => no_connection += 1,
        }
    }
    eprintln!(
        "burst of 40: {checked} checked (401), {refused} refused (429), {no_connection} connections closed by the per-address cap"
    );
    ensure!(
        checked <= 5,
        "{checked} guesses were checked; the limit is 5"
    );
    ensure!(refused >= 20, "only {refused} answered 429");
    // The right password from the attacker's address is refused too: it is locked ...
    let (code, _) = login(&attacker, &gw, ADMIN_USER, ADMIN_PASSWORD).await?;
    ensure!(code == 429, "locked address answered {code}");
    // ... but the admin at their own desk signs in.
    let desk = client_from(&gw, Ipv4Addr::new(127, 0, 0, 4))?;
    let (code, cookie) = login(&desk, &gw, ADMIN_USER, ADMIN_PASSWORD).await?;
    ensure!(
        code == 200 && cookie.is_some(),
        "the admin from another address: {code}"
    );
    // One address spraying user names is locked as a whole after 20 failures.
    let sprayer = client_from(&gw, Ipv4Addr::new(127, 0, 0, 5))?;
    let mut refused_at = None;
    for i in 0..30 {
        let (code, _) = login(&sprayer, &gw, &format!("user{i}"), "wrong guess").await?;
        if code == 429 {
            refused_at = Some(i);
            break;
        }
    }
    ensure!(
        refused_at == Some(20),
        "address lock after {refused_at:?} failures"
    );
    // One policy for both doors: the address the web locked is refused at MQTT CONNECT too,
    // with the right password (0x8A Banned), while the PLC on another address logs in.
    let code = mqtt_login_from(&gw, Ipv4Addr::new(127, 0, 0, 5)).await?;
    ensure!(
        code == 0x8A,
        "MQTT login from the locked address: CONNACK {code:#04x}"
    );
    let code = mqtt_login_from(&gw, Ipv4Addr::new(127, 0, 0, 6)).await?;
    ensure!(
        code == 0,
        "MQTT login from another address: CONNACK {code:#04x}"
    );
    Ok(())
}

/// A user name that tries to start a line of its own, with a fake certificate fingerprint, a
/// terminal escape and a right-to-left override.
const FORGED: &str = "x\n2026-12-07T00:00:00.000000Z  INFO ironbridge::web::tls: web TLS certificate fingerprint_sha256=DE:AD:BE:EF\r\u{1b}[2J\u{202e}";

/// The values of `key=` that stand outside quoted values in a text log line.
fn unquoted_values(line: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if line[i..].starts_with(key) && (i == 0 || bytes[i - 1] == b' ') {
            let v: String = line[i + key.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            out.push(v);
        }
        i += 1;
    }
    out
}

/// Before: the crafted user name wrote a forged line, fake `fingerprint_sha256=` included.
#[tokio::test(flavor = "multi_thread")]
async fn outside_values_cannot_forge_log_lines() -> Result<()> {
    prepare().await?;
    // Text.
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let c = gw.client()?;
    let (code, _) = login(&c, &gw, FORGED, "wrong password").await?;
    ensure!(code == 401, "forged login answered {code}");
    let real = gw
        .log()
        .lines()
        .flat_map(|l| unquoted_values(l, "fingerprint_sha256="))
        .collect::<Vec<_>>();
    let log = gw.log();
    ensure!(!real.is_empty(), "no fingerprint line");
    ensure!(
        real.iter().all(|v| !v.contains("DE:AD")),
        "a forged fingerprint stands as a field: {real:?}\n{log}"
    );
    ensure!(
        !log.lines().any(|l| l.starts_with("2026-12-07T00:00:00")),
        "a forged line starts a line:\n{log}"
    );
    ensure!(
        !log.contains('\u{1b}') && !log.contains('\u{202e}') && !log.contains('\r'),
        "raw control characters in the log"
    );
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("web login failed"))
        .collect();
    ensure!(
        failed.len() == 1 && failed[0].contains("DE:AD:BE:EF"),
        "the whole user name stays on its own event's line: {failed:?}"
    );
    // The UI's log view escapes the same way.
    let (code, body) = gw.api_get("/api/logs?limit=1000").await?;
    ensure!(code == 200, "/api/logs {code}");
    ensure!(
        // serde writes a raw ESC as `\u001b` and a raw U+202E as itself; the escaped forms
        // are `\\u{1b}` and `\\u{202e}`.
        !body.contains("\\u001b") && !body.contains('\u{202e}') && body.contains("\\\\u{1b}"),
        "the UI log holds raw control characters: {body}"
    );
    drop(gw);

    // JSON: every line stays one valid JSON object with the value intact.
    let gw = Gateway::start(GatewayOptions {
        log_format: "json".into(),
        auto_setup: false,
        ..GatewayOptions::default()
    })
    .await?;
    let (code, _) = login(&gw.client()?, &gw, FORGED, "wrong password").await?;
    ensure!(code == 401, "forged login answered {code}");
    let log = gw.log();
    let mut seen = false;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if v.pointer("/fields/message").and_then(Value::as_str) == Some("web login failed") {
            ensure!(
                v.pointer("/fields/user").and_then(Value::as_str) == Some(FORGED),
                "user field changed: {v}"
            );
            seen = true;
        }
    }
    ensure!(seen, "no JSON login-failure line:\n{log}");
    ensure!(
        !log.lines().any(|l| l.starts_with("2026-12-07")),
        "a forged line in the JSON log"
    );
    Ok(())
}

/// Before: `HEAD /healthz` was 401, the public body listed the problems, and any viewer signing
/// in 256 times logged every admin out (global least-recently-used cap).
#[tokio::test(flavor = "multi_thread")]
async fn head_minimal_healthz_and_sessions_capped_per_user() -> Result<()> {
    prepare().await?;
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let c = gw.client()?;
    let r = c.head(gw.url("/healthz")).send().await?;
    ensure!(r.status().as_u16() == 200, "HEAD /healthz {}", r.status());
    let r = c.head(gw.url("/login")).send().await?;
    ensure!(r.status().as_u16() == 200, "HEAD /login {}", r.status());
    let r = c.head(gw.url("/api/status")).send().await?;
    ensure!(
        r.status().as_u16() == 401,
        "HEAD /api/status without auth {}",
        r.status()
    );
    let r = c
        .head(gw.url("/api/status"))
        .bearer_auth(gw.token().context("token")?)
        .send()
        .await?;
    ensure!(
        r.status().as_u16() == 200,
        "HEAD /api/status with a token {}",
        r.status()
    );

    let (code, public) = gw.healthz().await?;
    ensure!(
        code == 200 && public == json!({"status": "ok"}),
        "public /healthz: {public}"
    );
    let (code, body) = gw.api_get("/healthz").await?;
    let detailed: Value = serde_json::from_str(&body)?;
    ensure!(
        code == 200 && detailed.get("problems").is_some(),
        "/healthz with a token: {body}"
    );

    // A viewer signs in over and over; the admin's session survives.
    let r = gw
        .api(reqwest::Method::POST, "/api/users")?
        .json(&json!({"username": "viewer1", "password": "viewer horse battery", "role": "viewer"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "create viewer: {}", r.status());
    let (code, admin) = login(&c, &gw, ADMIN_USER, ADMIN_PASSWORD).await?;
    ensure!(code == 200, "admin login {code}");
    let admin = admin.context("admin cookie")?;
    let (_, first_viewer) = login(&c, &gw, "viewer1", "viewer horse battery").await?;
    let first_viewer = first_viewer.context("viewer cookie")?;
    for _ in 0..260 {
        let (code, _) = login(&c, &gw, "viewer1", "viewer horse battery").await?;
        ensure!(code == 200, "viewer login {code}");
    }
    let alive = |cookie: String| {
        let c = c.clone();
        let url = gw.url("/api/status");
        async move {
            Ok::<_, anyhow::Error>(
                c.get(url)
                    .header("cookie", format!("ib_session={cookie}"))
                    .send()
                    .await?
                    .status()
                    .as_u16(),
            )
        }
    };
    ensure!(
        alive(admin).await? == 200,
        "the admin was logged out by a viewer"
    );
    ensure!(
        alive(first_viewer).await? == 401,
        "the viewer's oldest session outlived the per-user cap"
    );
    Ok(())
}
