//! The MQTT page's topic rules (`[[mqtt.acl]]`) in a real browser, against its own daemon (no
//! Kafka): as admin, add a rule granting `scada` publish on `spBv1.0/+/DCMD/#`, move it to the
//! top, tick "client id must start with the user name", save → the file on disk has the
//! `[[mqtt.acl]]` tables in that order and everything else of `[mqtt]` as it was (the account
//! hashes included); an invalid filter (`a/#/b`) shows the API's error at its rule and changes
//! nothing; the Limits card shows the broker's counters from `/api/status`; a viewer sees the
//! rules but no control to change them. Screenshots: `mqtt-topic-rules`, `mqtt-rule-dialog`,
//! `mqtt-rule-error` and `mqtt-limits` at 1366×768, `mqtt-topic-rules` and `mqtt-limits` at
//! 375×812.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, Progress, hash_password, prepare, within,
};
use serde_json::{Value, json};

use super::webdriver::{Browser, browser_available, screenshot_dir};
use super::{Ui, VIEWER, WAIT};

/// Rules already in the file when the page first opens.
const SEEDED_RULES: &str = r#"
[[mqtt.acl]]
users = ["plc7"]
action = "publish"
permission = "allow"
topics = ["plant/%u/#"]

[[mqtt.acl]]
users = ["*"]
action = "subscribe"
permission = "allow"
topics = ["plant/#", "spBv1.0/#"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_mqtt_topic_rules_in_a_real_browser() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(240), "topic rules flow", run()).await
}

/// `[mqtt]` of the file on disk, as TOML.
fn mqtt_in_file(gw: &Gateway) -> Result<toml::Value> {
    let text = std::fs::read_to_string(gw.config_path())?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("the config file:\n{text}"))?;
    doc.get("mqtt")
        .cloned()
        .with_context(|| format!("no [mqtt] in\n{text}"))
}

fn rule(users: &[&str], action: &str, permission: &str, topics: &[&str]) -> Value {
    json!({ "users": users, "action": action, "permission": permission, "topics": topics })
}

/// The file's `mqtt.acl` as JSON (for comparing with `rule(...)`).
fn acl_in_file(gw: &Gateway) -> Result<Value> {
    let mqtt = mqtt_in_file(gw)?;
    Ok(serde_json::to_value(
        mqtt.get("acl")
            .cloned()
            .unwrap_or(toml::Value::Array(vec![])),
    )?)
}

async fn run() -> Result<()> {
    let p = Progress::new("web_browser mqtt rules");
    let shots = screenshot_dir();
    let wide = shots.join("1366x768");
    let phone = shots.join("375x812");
    std::fs::create_dir_all(&wide)?;
    std::fs::create_dir_all(&phone)?;
    let users = vec![
        ("plc7".to_string(), hash_password("plc7-password-1").await?),
        (
            "scada".to_string(),
            hash_password("scada-password-1").await?,
        ),
    ];
    let gw = Gateway::start(GatewayOptions {
        id: "e2e-web-mqtt".into(),
        users: users.clone(),
        extra_toml: SEEDED_RULES.into(),
        // Only the rules above (not the harness's grant of every topic).
        grant_all_topics: false,
        ..Default::default()
    })
    .await?;
    // A viewer account, through the API with the harness's admin token.
    let resp = gw
        .api(reqwest::Method::POST, "/api/users")?
        .json(&json!({ "username": VIEWER.0, "password": VIEWER.1, "role": "viewer" }))
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 201,
        "create the viewer: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    let ui = Ui {
        b: Browser::start(1366, 768).await?,
        base: format!("https://{}", gw.web_addr()),
    };
    let result = flow(&ui, &gw, &users, &wide, &phone, &p).await;
    if result.is_err() {
        let _ = ui.b.screenshot(&shots.join("failure-mqtt.png")).await;
        eprintln!("daemon log tail:\n{}", gw.log_tail());
    }
    ui.b.quit().await;
    result
}

/// Waits until the MQTT page shows `n` rule rows and the Limits card has its counters.
async fn mqtt_page(ui: &Ui, n: usize) -> Result<()> {
    ui.open("/mqtt").await?;
    ui.b.wait(
        &format!("{n} topic rules and the limits"),
        WAIT,
        &format!(
            "return document.querySelectorAll('#mqtt-acl tbody tr[data-rule]').length === {n} \
             && !!document.querySelector('#mqtt-limits dd[data-key=sockets]')"
        ),
    )
    .await?;
    ui.settled().await
}

/// Scrolls the card `css` to the top of the viewport (below the phone layout's sticky top bar).
async fn scroll_to(ui: &Ui, css: &str) -> Result<()> {
    ui.b.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); \
         const bar = document.querySelector('.topbar'); \
         const h = bar && getComputedStyle(bar).display !== 'none' ? bar.offsetHeight : 0; \
         window.scrollBy(0, -(h + 8)); return true",
        vec![json!(css)],
    )
    .await?;
    Ok(())
}

/// The text of the banner the rules card shows after Save.
async fn save_result(ui: &Ui) -> Result<String> {
    let v = ui
        .b
        .wait(
            "topic rules save result",
            WAIT,
            "const r = document.querySelector('#mqtt-rules .banner'); return r ? r.className + ': ' + r.textContent : null",
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn flow(
    ui: &Ui,
    gw: &Gateway,
    users: &[(String, String)],
    wide: &std::path::Path,
    phone: &std::path::Path,
    p: &Progress,
) -> Result<()> {
    let b = &ui.b;
    let before = mqtt_in_file(gw)?;
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await?;
    mqtt_page(ui, 2).await?;

    // ---- the limits card: the broker's sizes against the configured limits ----
    let sockets = b
        .js(
            "return document.querySelector('#mqtt-limits dd[data-key=sockets]').textContent",
            vec![],
        )
        .await?;
    ensure!(
        sockets.as_str().unwrap_or_default().ends_with(" of 512"),
        "sockets in use against max_connections (512): {sockets}"
    );
    let refused = b
        .js(
            "return [...document.querySelectorAll('#mqtt-limits dd')].map(d => d.dataset.key + '=' + d.textContent)",
            vec![],
        )
        .await?;
    for key in [
        "sessions",
        "subscriptions",
        "retained_messages",
        "retained_bytes",
        "queued_bytes",
        "max_connections",
        "per_address",
        "auth_busy",
        "auth_throttled",
        "acl_denied",
        "retained",
        "messages_dropped",
        "keep_alive_timeouts",
    ] {
        ensure!(
            refused.as_array().is_some_and(|a| a.iter().any(|s| s
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{key}=")) && s.len() > key.len() + 1))),
            "the limits card has no value for {key}: {refused}"
        );
    }

    // ---- add a rule: scada may publish Sparkplug device commands ----
    b.click("#add-rule").await?;
    b.find("dialog[open] #rule-users").await?;
    b.fill("dialog[open] #rule-users", "scada").await?;
    b.choose("dialog[open] #rule-action", "publish").await?;
    b.choose("dialog[open] #rule-permission", "allow").await?;
    b.fill("dialog[open] #rule-topics", "spBv1.0/+/DCMD/#")
        .await?;
    ui.shot(wide, "mqtt-rule-dialog").await?;
    ui.dialog_confirm().await?;
    b.wait(
        "the new rule as row 3",
        WAIT,
        "const r = document.querySelector('#mqtt-acl tr[data-rule=\"2\"]'); return !!r && r.textContent.includes('spBv1.0/+/DCMD/#') && r.textContent.includes('scada')",
    )
    .await?;
    // The filter names DCMD literally: the table says it opens the protected topic.
    ensure!(
        b.count("#mqtt-acl tr[data-rule=\"2\"] .pill.warn").await? == 1,
        "the DCMD grant is not marked"
    );
    // First match wins: move it to the top.
    b.click("#mqtt-acl button[data-action=rule-up][data-rule=\"2\"]")
        .await?;
    b.click("#mqtt-acl button[data-action=rule-up][data-rule=\"1\"]")
        .await?;
    b.wait(
        "the new rule first",
        WAIT,
        "const r = document.querySelector('#mqtt-acl tr[data-rule=\"0\"]'); return !!r && r.textContent.includes('spBv1.0/+/DCMD/#')",
    )
    .await?;
    ensure!(
        b.js(
            "return document.querySelector('#mqtt-acl button[data-action=rule-up][data-rule=\"0\"]').disabled \
             && document.querySelector('#mqtt-acl button[data-action=rule-down][data-rule=\"2\"]').disabled",
            vec![]
        )
        .await?
            == json!(true),
        "the first rule cannot move up, the last not down"
    );
    b.click("#mqtt-client-id-prefix").await?;
    b.click("#save-rules").await?;
    let saved = save_result(ui).await?;
    ensure!(
        saved.contains("banner warn") && saved.contains("Restart required"),
        "saving the rules: {saved}"
    );
    let want = json!([
        rule(&["scada"], "publish", "allow", &["spBv1.0/+/DCMD/#"]),
        rule(&["plc7"], "publish", "allow", &["plant/%u/#"]),
        rule(&["*"], "subscribe", "allow", &["plant/#", "spBv1.0/#"]),
    ]);
    ensure!(
        acl_in_file(gw)? == want,
        "[[mqtt.acl]] in the file: {}",
        acl_in_file(gw)?
    );
    let text = std::fs::read_to_string(gw.config_path())?;
    ensure!(
        text.matches("[[mqtt.acl]]").count() == 3,
        "three [[mqtt.acl]] tables:\n{text}"
    );
    // Everything else of [mqtt] is as it was; the accounts keep their hashes.
    let after = mqtt_in_file(gw)?;
    ensure!(
        after.get("client_id_prefix_user") == Some(&toml::Value::Boolean(true)),
        "client_id_prefix_user in the file: {after:?}"
    );
    for key in [
        "listen",
        "allow_anonymous",
        "max_connections",
        "max_payload_bytes",
    ] {
        ensure!(
            after.get(key) == before.get(key) || before.get(key).is_none(),
            "mqtt.{key} changed: {:?} → {:?}",
            before.get(key),
            after.get(key)
        );
    }
    for (name, hash) in users {
        ensure!(
            after
                .get("users")
                .and_then(|u| u.get(name))
                .and_then(toml::Value::as_str)
                == Some(hash.as_str()),
            "the hash of {name} changed: {after:?}"
        );
    }
    p.note("rule saved: [[mqtt.acl]] in the file, first");
    scroll_to(ui, "#mqtt-rules").await?;
    ui.shot(wide, "mqtt-topic-rules").await?;
    scroll_to(ui, "#mqtt-limits").await?;
    ui.shot(wide, "mqtt-limits").await?;

    // ---- an invalid filter: the API's error at the rule, nothing saved ----
    let file_before = std::fs::read_to_string(gw.config_path())?;
    b.click("#mqtt-acl button[data-action=rule-edit][data-rule=\"1\"]")
        .await?;
    b.fill("dialog[open] #rule-topics", "plant/%u/#\na/#/b")
        .await?;
    ui.dialog_confirm().await?;
    b.wait(
        "the edited rule",
        WAIT,
        "const r = document.querySelector('#mqtt-acl tr[data-rule=\"1\"]'); return !!r && r.textContent.includes('a/#/b')",
    )
    .await?;
    b.click("#save-rules").await?;
    let err = b
        .wait(
            "the API's error next to rule 2's second filter",
            WAIT,
            "const e = document.querySelector('#mqtt-acl tr[data-rule=\"1\"] [data-field=\"mqtt.acl[1].topics[1]\"] .err'); return e ? e.textContent : null",
        )
        .await?;
    let err = err.as_str().unwrap_or_default().to_string();
    ensure!(err.contains("a/#/b"), "error at the rule: {err}");
    let saved = save_result(ui).await?;
    ensure!(
        saved.contains("banner bad"),
        "an invalid rule must not save: {saved}"
    );
    scroll_to(ui, "#mqtt-rules").await?;
    ui.shot(wide, "mqtt-rule-error").await?;
    // The same message as the API gives for that field.
    let mut section: Value = serde_json::from_str(&gw.api_get("/api/config/mqtt").await?.1)?;
    section["acl"][1]["topics"] = json!(["plant/%u/#", "a/#/b"]);
    let resp = gw
        .api(reqwest::Method::PUT, "/api/config/mqtt")?
        .json(&section)
        .send()
        .await?;
    ensure!(resp.status().as_u16() == 422, "the API: {}", resp.status());
    let api_err: Value = resp.json().await?;
    ensure!(
        api_err["fields"][0]["field"] == "mqtt.acl[1].topics[1]"
            && api_err["fields"][0]["message"] == json!(err),
        "the page shows {err:?}, the API says {api_err}"
    );
    ensure!(
        std::fs::read_to_string(gw.config_path())? == file_before,
        "a refused save changed the file"
    );
    p.note(format!("invalid filter refused at its rule: {err}"));

    // ---- phone ----
    b.set_size(375, 812).await?;
    mqtt_page(ui, 3).await?;
    for (card, name) in [
        ("#mqtt-rules", "mqtt-topic-rules"),
        ("#mqtt-limits", "mqtt-limits"),
    ] {
        scroll_to(ui, card).await?;
        ui.shot(phone, name).await?;
    }
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await?;
    ensure!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "/mqtt is wider than a 375 px phone by {overflow} px"
    );
    b.set_size(1366, 768).await?;
    ui.sign_out().await?;

    // ---- a viewer sees the rules, not the controls ----
    ui.login(VIEWER.0, VIEWER.1).await?;
    mqtt_page(ui, 3).await?;
    let shown = b
        .js(
            "return document.querySelector('#mqtt-acl tr[data-rule=\"0\"]').textContent",
            vec![],
        )
        .await?;
    ensure!(
        shown
            .as_str()
            .unwrap_or_default()
            .contains("spBv1.0/+/DCMD/#"),
        "the viewer sees the rules: {shown}"
    );
    let controls = b
        .js(
            "return [...document.querySelectorAll('#mqtt-rules button, #mqtt-rules [data-action], #add-rule, #save-rules')].length",
            vec![],
        )
        .await?;
    ensure!(
        controls == json!(0),
        "a viewer sees {controls} rule controls"
    );
    let enabled = b
        .js(
            "return [...document.querySelectorAll('#mqtt-rules input, #mqtt-rules select, #mqtt-rules textarea')].filter(e => !e.disabled).length",
            vec![],
        )
        .await?;
    ensure!(
        enabled == json!(0),
        "{enabled} editable inputs in the rules for a viewer"
    );
    ensure!(
        b.count("#mqtt-client-id-prefix:checked:disabled").await? == 1,
        "the viewer sees the saved client id setting, read-only"
    );
    p.note("viewer sees the rules read-only");
    Ok(())
}
