//! Roles and the audit trail (issue 19, items 3 and 4) against the real daemon: the operator
//! may write to devices but not change configuration, users or tokens; every login, change and
//! device write is in the audit trail with who, from where and what came of it; the trail
//! survives `kill -9` (each record is synced before the request is answered) and exports as
//! CSV and JSON lines. Item 3's node controls and item 4's details: a Sparkplug command names
//! the MQTT user who sent it, `Node Control/Reboot` is refused unless enabled, configuration
//! changes carry a redacted field diff, expired sessions are recorded, and the trail is
//! forwarded to Kafka through the buffer.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, Route, hash_password, prepare,
    session_cookie, text, within,
};
use ironbridge_e2e::sparkplug::Host;
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};
use reqwest::Method;
use serde_json::{Value, json};

const OPERATOR: (&str, &str) = ("shift-lead", "operator horse battery");
const VIEWER: (&str, &str) = ("watcher", "viewer horse battery");

struct Session {
    cookie: String,
    csrf: String,
}

async fn login(gw: &Gateway, user: &str, password: &str) -> Result<Session> {
    let r = gw
        .client()?
        .post(gw.url("/api/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await?;
    ensure!(r.status().as_u16() == 200, "login {user}: {}", r.status());
    let cookie = session_cookie(r.headers()).context("cookie")?;
    let body: Value = r.json().await?;
    Ok(Session {
        cookie,
        csrf: text(&body, "/csrf_token").context("csrf")?.to_string(),
    })
}

async fn call(gw: &Gateway, s: &Session, method: Method, path: &str, body: Value) -> Result<u16> {
    Ok(gw
        .client()?
        .request(method, gw.url(path))
        .header("cookie", format!("ib_session={}", s.cookie))
        .header("x-csrf-token", &s.csrf)
        .json(&body)
        .send()
        .await?
        .status()
        .as_u16())
}

async fn audit(gw: &Gateway, query: &str) -> Result<Vec<Value>> {
    let (code, body) = gw.api_get(&format!("/api/audit?{query}")).await?;
    ensure!(code == 200, "/api/audit {code}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["records"].as_array().cloned().unwrap_or_default())
}

fn find<'a>(records: &'a [Value], action: &str, actor: &str) -> Option<&'a Value> {
    records
        .iter()
        .rev()
        .find(|r| r["action"] == action && r["actor"] == actor)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_role_and_an_audit_trail_that_survives_kill_9() -> Result<()> {
    prepare().await?;
    let mut gw = Gateway::start(GatewayOptions::default()).await?;
    for (user, password, role) in [
        (OPERATOR.0, OPERATOR.1, "operator"),
        (VIEWER.0, VIEWER.1, "viewer"),
    ] {
        let r = gw
            .api(Method::POST, "/api/users")?
            .json(&json!({"username": user, "password": password, "role": role}))
            .send()
            .await?;
        ensure!(r.status().is_success(), "create {user}: {}", r.status());
    }
    let op = login(&gw, OPERATOR.0, OPERATOR.1).await?;
    let viewer = login(&gw, VIEWER.0, VIEWER.1).await?;

    // The operator reaches the device write (404: no such device here), the viewer does not.
    let write = json!({"tag": "setpoint", "value": 42});
    let code = call(
        &gw,
        &op,
        Method::POST,
        "/api/devices/press-3/write",
        write.clone(),
    )
    .await?;
    ensure!(code == 404, "operator write answered {code}");
    let code = call(
        &gw,
        &viewer,
        Method::POST,
        "/api/devices/press-3/write",
        write,
    )
    .await?;
    ensure!(code == 403, "viewer write answered {code}");
    // The operator changes no configuration, users or tokens.
    for (method, path, body) in [
        (Method::PUT, "/api/config/log", json!({"level": "debug"})),
        (
            Method::POST,
            "/api/users",
            json!({"username": "x", "password": "long enough pw", "role": "admin"}),
        ),
        (
            Method::POST,
            "/api/tokens",
            json!({"name": "mine", "role": "admin"}),
        ),
        (Method::POST, "/api/system/restart", json!({})),
    ] {
        let code = call(&gw, &op, method.clone(), path, body).await?;
        ensure!(code == 403, "operator {method} {path} answered {code}");
    }
    let code = call(&gw, &op, Method::POST, "/api/logout", json!({})).await?;
    ensure!(code == 200, "logout {code}");
    let r = gw
        .client()?
        .post(gw.url("/api/login"))
        .json(&json!({"username": OPERATOR.0, "password": "not the password"}))
        .send()
        .await?;
    ensure!(r.status().as_u16() == 401);

    // kill -9 right after the last answer: everything answered is on disk.
    gw.kill().await?;
    gw.restart().await?;

    let all = audit(&gw, "limit=1000").await?;
    let show = || serde_json::to_string_pretty(&all).unwrap_or_default();
    let login_ok =
        find(&all, "login", OPERATOR.0).with_context(|| format!("no login:\n{}", show()))?;
    ensure!(
        login_ok["outcome"] == "ok" && login_ok["peer"] == "127.0.0.1",
        "{login_ok}"
    );
    let failed = find(&all, "login_failed", OPERATOR.0).context("no failed login")?;
    ensure!(failed["outcome"] == "denied");
    let w = find(&all, "device_write", OPERATOR.0).context("no device write")?;
    ensure!(
        w["target"] == "press-3/setpoint" && w["detail"]["new"] == 42 && w["outcome"] == "denied",
        "{w}"
    );
    let vw = find(&all, "device_write", VIEWER.0).context("no refused viewer write")?;
    ensure!(vw["outcome"] == "denied", "{vw}");
    let cfg = find(&all, "config_change", OPERATOR.0).context("no refused config change")?;
    ensure!(
        cfg["outcome"] == "denied" && cfg["target"] == "/api/config/log",
        "{cfg}"
    );
    ensure!(find(&all, "logout", OPERATOR.0).is_some(), "no logout");
    let created = all
        .iter()
        .find(|r| r["action"] == "user_create" && r["outcome"] == "ok")
        .context("no user_create")?;
    ensure!(
        created["source"] == "api" && created["actor"] == "token:e2e-harness",
        "{created}"
    );
    ensure!(
        all.iter().filter(|r| r["action"] == "daemon_start").count() == 2,
        "two starts expected"
    );
    let seqs: Vec<u64> = all.iter().filter_map(|r| r["seq"].as_u64()).collect();
    ensure!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps in seq: {seqs:?}"
    );

    // Filters and exports.
    let only = audit(&gw, &format!("actor={}&outcome=denied", OPERATOR.0)).await?;
    ensure!(
        !only.is_empty()
            && only
                .iter()
                .all(|r| r["actor"] == OPERATOR.0 && r["outcome"] == "denied"),
        "filter: {only:?}"
    );
    let (code, csv) = gw
        .api_get("/api/audit?format=csv&action=device_write")
        .await?;
    ensure!(
        code == 200 && csv.starts_with("seq,time,source,actor"),
        "csv: {csv}"
    );
    ensure!(csv.lines().count() == 3, "header + 2 writes: {csv}");
    let (code, jsonl) = gw.api_get("/api/audit?format=jsonl").await?;
    ensure!(code == 200);
    for line in jsonl.lines() {
        serde_json::from_str::<Value>(line).with_context(|| format!("jsonl line: {line}"))?;
    }
    ensure!(jsonl.lines().count() == all.len(), "jsonl has every record");
    Ok(())
}

/// The MQTT account of the SCADA host that sends the commands.
const SCADA: (&str, &str) = ("scada7", "scada7 long password");

/// Polls the trail until a record satisfies `pred` (commands are recorded off the request path).
async fn wait_record(gw: &Gateway, query: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let records = audit(gw, query).await?;
        if let Some(r) = records.iter().find(|r| pred(r)) {
            return Ok(r.clone());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no such record for {query}: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_diffs_session_ends_and_forwarding_to_kafka() -> Result<()> {
    if !require(&[External::Tansu, External::PythonVenv])? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "audit details", audit_details()).await
}

async fn audit_details() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    // The Sparkplug traffic goes to the default topic.
    for topic in ["audit", "mqtt"] {
        kafka.create_topic(topic, 1).await?;
    }
    let mut opts = GatewayOptions {
        kafka: Some(tansu.bootstrap()),
        routes: vec![Route::new("ironbridge/audit", "audit")],
        users: vec![(SCADA.0.into(), hash_password(SCADA.1).await?)],
        extra_toml: "[audit]\nforward_topic = \"ironbridge/audit\"\n\n\
                     [sparkplug]\nenabled = true\ngroup_id = \"plant\"\nedge_node_id = \"gw1\"\n"
            .into(),
        ..GatewayOptions::default()
    };
    opts.web_settings
        .insert("session_idle_timeout_s".into(), "2".into());
    let gw = Gateway::start(opts).await?;

    // A SCADA host, logged in as scada7, also listening where the forwarded records are
    // appended: they must not reach MQTT subscribers.
    let mut host = Host::start_as(
        gw.mqtt_port(),
        &["spBv1.0/#", "ironbridge/#"],
        SCADA.0,
        SCADA.1,
    )
    .await?;
    host.send(json!({"cmd": "ncmd_rebirth", "group": "plant", "node": "gw1"}))
        .await?;
    let nbirth = host
        .next("NBIRTH", Duration::from_secs(20), |v| v["type"] == "NBIRTH")
        .await?;
    let offered: Vec<&str> = nbirth["metrics"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        offered.contains(&"Node Control/Rebirth") && !offered.contains(&"Node Control/Reboot"),
        "NBIRTH offers {offered:?}"
    );
    // Reboot is off by default: refused, attributed to the MQTT user, the daemon stays up.
    host.send(
        json!({"cmd": "ncmd", "group": "plant", "node": "gw1", "uuid": "reboot-1",
        "metrics": [{"name": "Node Control/Reboot", "datatype": "Boolean", "value": true}]}),
    )
    .await?;
    let reboot = wait_record(&gw, "action=command", |r| {
        r["target"] == "Node Control/Reboot"
    })
    .await?;
    ensure!(
        reboot["actor"] == SCADA.0
            && reboot["source"] == "mqtt"
            && reboot["peer"] == "127.0.0.1"
            && reboot["outcome"] == "denied"
            && reboot["detail"]["correlation_id"] == "reboot-1"
            && reboot["detail"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("sparkplug.commands.allow_reboot")),
        "{reboot}"
    );
    let rebirth = wait_record(&gw, "action=command", |r| {
        r["target"] == "Node Control/Rebirth"
    })
    .await?;
    ensure!(
        rebirth["actor"] == SCADA.0 && rebirth["outcome"] == "ok",
        "{rebirth}"
    );
    let (code, _) = gw.api_get("/api/status").await?;
    ensure!(
        code == 200,
        "the daemon answers after the refused reboot: {code}"
    );

    // A configuration change names the fields, old and new.
    let (code, body) = gw.api_get("/api/config/log").await?;
    ensure!(code == 200, "GET /api/config/log {code}");
    let mut log: Value = serde_json::from_str(&body)?;
    log["level"] = "debug".into();
    let r = gw
        .api(Method::PUT, "/api/config/log")?
        .json(&log)
        .send()
        .await?;
    ensure!(
        r.status().is_success(),
        "PUT /api/config/log {}",
        r.status()
    );
    let change = wait_record(&gw, "action=config_change", |r| r["outcome"] == "ok").await?;
    let diff = &change["detail"]["diff"]["changes"];
    ensure!(
        change["detail"]["sections"] == json!(["log"])
            && *diff == json!([{"field": "log.level", "old": "info", "new": "debug"}]),
        "{change}"
    );

    // A web session that idles past web.session_idle_timeout_s (2 s) ends, and says so.
    let s = login(&gw, ADMIN_USER, ADMIN_PASSWORD).await?;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let code = call(&gw, &s, Method::POST, "/api/logout", json!({})).await?;
    ensure!(code == 401, "an expired session answered {code}");
    let ended = wait_record(&gw, "action=session_end", |r| r["actor"] == ADMIN_USER).await?;
    ensure!(ended["detail"]["reason"] == "expired", "{ended}");

    // Every record so far reached Kafka through the buffer, byte for byte what the trail says.
    let trail = audit(&gw, "limit=1000").await?;
    let in_kafka = kafka.consume("audit", Some(trail.len())).await?;
    let mut forwarded = Vec::new();
    for rec in &in_kafka {
        ensure!(
            rec.header_str("mqtt_client_id") == Some("ironbridge-audit"),
            "headers of {rec:?}"
        );
        let v: Value = serde_json::from_str(rec.value_str().context("value")?)?;
        forwarded.push(v);
    }
    for r in &trail {
        ensure!(
            forwarded.iter().any(|f| f == r),
            "record {r} not in Kafka ({} forwarded)",
            forwarded.len()
        );
    }
    ensure!(
        !host
            .others
            .iter()
            .any(|t| t.starts_with("ironbridge/audit")),
        "an MQTT subscriber saw the forwarded audit records: {:?}",
        host.others
    );
    let (_, metrics) = gw.api_get("/metrics").await?;
    ensure!(
        metrics.contains("ironbridge_audit_forward_dropped_total 0"),
        "no audit forwarding metric"
    );
    Ok(())
}
