//! The web UI in a real browser (Debian's headless Chromium through chromedriver) against the real
//! daemon: first-boot setup with the code from the log → sign out and in → add a Modbus device
//! pointing at the simulator → its live value → write a setpoint (confirmed) and see it in the
//! simulator → add a Kafka route on the Uplink page, test the connection, save → records arrive in
//! tansu → a viewer sees no edit or write controls → a device named with markup shows as text.
//! Every page is saved as a screenshot at 1366×768 and 375×812 (see `webdriver::screenshot_dir`),
//! and the dashboard's transferred bytes (cold cache) are measured and bounded.
//!
//! Waits poll the DOM with a deadline; nothing sleeps to synchronise.

#[path = "web_browser/webdriver.rs"]
mod webdriver;

// The MQTT page's topic rules editor, against a daemon of its own.
#[path = "web_browser/mqtt_rules.rs"]
mod mqtt_rules;

// Issue 19: safe post-login redirects, the operator role and the audit page.
#[path = "web_browser/audit_roles.rs"]
mod audit_roles;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_adapters::modbus::Area;
use ironbridge_adapters::modbus::sim::demo;
use ironbridge_e2e::gateway::{Gateway, GatewayOptions, Progress, prepare, within};
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use webdriver::{Browser, browser_available, screenshot_dir};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];
const WAIT: Duration = Duration::from_secs(20);
const ADMIN: (&str, &str) = ("admin", "Plant-Floor-Secret-42");
const VIEWER: (&str, &str) = ("operator", "Read-Only-Viewer-77");
const XSS_NAME: &str = "<script>alert(1)<img src=x onerror=alert(2)>";
/// Upper bound for the dashboard's first load (HTML, CSS, JS, logo, first API answers).
const DASHBOARD_BUDGET_BYTES: f64 = 100.0 * 1024.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_first_boot_to_kafka_in_a_real_browser() -> Result<()> {
    if !require(NEEDS)? || !browser_available()? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(360), "browser flow", run()).await
}

/// The one-time setup code the daemon logs while no web user exists (`setup_code=...`).
async fn setup_code(gw: &Gateway) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = gw.log();
        if let Some(code) = log.lines().rev().find_map(|l| {
            let rest = &l[l.find("setup_code=")? + "setup_code=".len()..];
            let code: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!code.is_empty()).then_some(code)
        }) {
            return Ok(code);
        }
        ensure!(
            Instant::now() < deadline,
            "no setup_code= in the daemon log:\n{}",
            gw.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Big-endian f32 from two holding registers (the demo's `ABCD` order).
fn f32_of(regs: &[u16]) -> f32 {
    f32::from_bits(((regs[0] as u32) << 16) | regs[1] as u32)
}

struct Ui {
    b: Browser,
    base: String,
}

impl Ui {
    async fn open(&self, path: &str) -> Result<()> {
        self.b.goto(&format!("{}{path}", self.base)).await
    }

    async fn wait_path(&self, path: &str) -> Result<()> {
        let script = format!(
            "return location.pathname === {} && document.readyState === 'complete'",
            serde_json::to_string(path)?
        );
        self.b
            .wait(&format!("location {path}"), WAIT, &script)
            .await?;
        Ok(())
    }

    /// Waits until the page has rendered (no "Loading…" left, the main area has content).
    async fn settled(&self) -> Result<()> {
        self.b
            .wait(
                "page rendered",
                WAIT,
                "const m = document.querySelector('main') || document.querySelector('.auth-box'); \
                 return !!m && m.children.length > 0 && !document.body.innerText.includes('Loading…')",
            )
            .await?;
        Ok(())
    }

    async fn shot(&self, dir: &Path, name: &str) -> Result<()> {
        self.settled().await?;
        self.b.screenshot(&dir.join(format!("{name}.png"))).await
    }

    async fn login(&self, user: &str, pass: &str) -> Result<()> {
        self.open("/login").await?;
        self.wait_path("/login").await?;
        self.b.fill("input[name=username]", user).await?;
        self.b.fill("input[name=password]", pass).await?;
        self.b.click("#login-submit").await?;
        self.wait_path("/dashboard").await
    }

    async fn sign_out(&self) -> Result<()> {
        // On a phone the button sits in the collapsed menu, so it is clicked from script once the
        // layout has been built.
        self.b
            .wait(
                "sign-out button",
                WAIT,
                "const b = [...document.querySelectorAll('.side-foot button')].find(b => b.textContent === 'Sign out'); \
                 if (!b) return false; b.click(); return true;",
            )
            .await?;
        self.wait_path("/login").await
    }

    /// Clicks the primary button of the open dialog (Continue / Write value / Close …).
    async fn dialog_confirm(&self) -> Result<()> {
        self.b
            .click("dialog[open] .dlg-foot button:last-child")
            .await
    }

    async fn toast(&self, contains: &str) -> Result<String> {
        let script = format!(
            "const t = [...document.querySelectorAll('.toast')].map(t => t.textContent).find(t => t.includes({})); return t || null",
            serde_json::to_string(contains)?
        );
        let v = self
            .b
            .wait(&format!("toast {contains:?}"), WAIT, &script)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
}

async fn run() -> Result<()> {
    let p = Progress::new("web_browser");
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots)?;
    let wide = shots.join("1366x768");
    let phone = shots.join("375x812");

    let sim = demo::start("press-1", SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let sim_addr = sim.server.addr().to_string();
    let kdir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(kdir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("plant-data", 1).await?;
    kafka.create_topic("mqtt", 1).await?;
    // No Kafka and no device in the file: the operator configures both in the browser.
    let gw = Gateway::start(GatewayOptions {
        id: "e2e-web".into(),
        auto_setup: false,
        ..Default::default()
    })
    .await?;
    let base = format!("https://{}", gw.web_addr());
    p.note(format!("gateway at {base}, simulator at {sim_addr}"));

    let ui = Ui {
        b: Browser::start(1366, 768).await?,
        base,
    };
    let result = flow(&ui, &gw, &sim, &sim_addr, &tansu, &kafka, &wide, &phone, &p).await;
    if result.is_err() {
        let _ = ui.b.screenshot(&shots.join("failure.png")).await;
        eprintln!("daemon log tail:\n{}", gw.log_tail());
    }
    ui.b.quit().await;
    sim.shutdown().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn flow(
    ui: &Ui,
    gw: &Gateway,
    sim: &demo::Demo,
    sim_addr: &str,
    tansu: &Tansu,
    kafka: &KafkaTool,
    wide: &Path,
    phone: &Path,
    p: &Progress,
) -> Result<()> {
    let b = &ui.b;

    // ---- first boot: "/" sends a new box to the setup page ----
    ui.open("/").await?;
    ui.wait_path("/setup").await?;
    ui.shot(wide, "01-setup").await?;
    let code = setup_code(gw).await?;
    b.fill("input[name=username]", ADMIN.0).await?;
    // A weak password is refused with a message at the field.
    b.fill("input[name=password]", "short").await?;
    b.fill("input[name=password2]", "short").await?;
    b.fill("input[name=setup_code]", &code).await?;
    b.click("#setup-submit").await?;
    b.wait(
        "password policy error at the field",
        WAIT,
        "return document.querySelector('.field.invalid .err, .banner.bad')?.textContent || null",
    )
    .await?;
    b.fill("input[name=password]", ADMIN.1).await?;
    b.fill("input[name=password2]", ADMIN.1).await?;
    b.click("#setup-submit").await?;
    ui.wait_path("/dashboard").await?;
    p.note("setup done");

    // ---- sign out, sign in ----
    ui.sign_out().await?;
    ui.shot(wide, "02-login").await?;
    b.fill("input[name=username]", ADMIN.0).await?;
    b.fill("input[name=password]", "wrong-password-123").await?;
    b.click("#login-submit").await?;
    b.wait(
        "wrong password refused",
        WAIT,
        "return document.querySelector('.banner.bad')?.textContent || null",
    )
    .await?;
    ui.login(ADMIN.0, ADMIN.1).await?;
    p.note("signed in");

    // ---- add the Modbus device with two tags ----
    ui.open("/devices?new=1").await?;
    b.fill("#dev-name", "press-1").await?;
    b.fill("#dev-address", sim_addr).await?;
    let tag =
        |n: usize, f: &str, el: &str| format!("#tag-editor td[data-field=\"tags[{n}].{f}\"] {el}");
    for (n, (name, addr, ty, unit, access)) in [
        ("temperature", "30001", "f32", "degC", "read_only"),
        ("speed_setpoint", "40011", "f32", "rpm", "read_write"),
    ]
    .into_iter()
    .enumerate()
    {
        b.click("#add-tag").await?;
        b.fill(&tag(n, "name", "input"), name).await?;
        b.fill(&tag(n, "address", "input"), addr).await?;
        b.choose(&tag(n, "type", "select"), ty).await?;
        b.fill(&tag(n, "unit", "input"), unit).await?;
        b.choose(&tag(n, "access", "select"), access).await?;
    }
    ui.shot(wide, "05-device-edit").await?;
    b.click("#save-device").await?;
    b.wait(
        "device page after save",
        WAIT,
        "return location.pathname === '/devices' && new URLSearchParams(location.search).get('d') === 'press-1'",
    )
    .await?;

    // ---- its live value ----
    let v = b
        .wait(
            "live temperature with quality Good",
            Duration::from_secs(30),
            "const r = document.querySelector('#tag-table tr[data-tag=\"temperature\"]'); if (!r) return null; \
             const v = r.querySelector('.value').textContent, q = r.querySelector('.quality').textContent, \
             ts = r.querySelector('.ts').textContent; \
             return q.startsWith('Good') && ts.length > 10 && isFinite(parseFloat(v)) ? v : null",
        )
        .await?;
    let temp: f64 = v.as_str().unwrap_or_default().trim().parse()?;
    ensure!(
        (17.0..=25.0).contains(&temp),
        "the demo's temperature is 21 ± 3 degC, the page shows {temp}"
    );
    p.note(format!("live value on the page: temperature {temp}"));

    // Test read of a tag.
    b.click("button[data-action=read][data-tag=temperature]")
        .await?;
    let read = b
        .wait(
            "test read result",
            WAIT,
            "return document.querySelector('dialog[open] #read-value')?.textContent || null",
        )
        .await?;
    ensure!(
        read.as_str().unwrap_or_default().contains("degC"),
        "test read shows {read}"
    );
    ui.dialog_confirm().await?;

    // ---- write a setpoint: value, then an explicit confirmation ----
    b.click("button[data-action=write][data-tag=speed_setpoint]")
        .await?;
    b.fill("dialog[open] #write-value", "1234.5").await?;
    ui.dialog_confirm().await?; // Continue
    let question = b
        .wait(
            "confirmation step",
            WAIT,
            "const d = document.querySelector('dialog[open]'); return d && d.textContent.includes('Confirm write') ? d.textContent : null",
        )
        .await?;
    ensure!(
        question
            .as_str()
            .unwrap_or_default()
            .contains("press-1 / speed_setpoint"),
        "confirmation names the target: {question}"
    );
    ui.dialog_confirm().await?; // Write value
    ui.toast("Written").await?;
    let regs = sim
        .server
        .simulator()
        .registers(demo::UNIT, Area::HoldingRegister, 10, 2);
    ensure!(
        (f32_of(&regs) - 1234.5).abs() < 1e-3,
        "the simulator holds {} after the write",
        f32_of(&regs)
    );
    p.note("write reached the simulator");
    ui.shot(wide, "04-device-live").await?;

    // ---- the Kafka uplink: brokers, one route, test, save ----
    ui.open("/uplink").await?;
    ui.settled().await?;
    b.fill("#kafka-servers", &tansu.bootstrap()).await?;
    b.click("#add-route").await?;
    let route = |f: &str, el: &str| format!("[data-field=\"kafka.routes[0].{f}\"] {el}");
    b.fill(&route("filter", "input"), "ironbridge/modbus/#")
        .await?;
    b.fill(&route("topic", "input"), "plant-data").await?;
    b.choose(&route("value", "select"), "json").await?;
    b.click("#test-connection").await?;
    let tested = b
        .wait(
            "connection test result",
            Duration::from_secs(40),
            "const r = document.querySelector('#test-result .banner.ok, #test-result .banner.bad'); return r ? r.className + ': ' + r.textContent : null",
        )
        .await?;
    ensure!(
        tested
            .as_str()
            .unwrap_or_default()
            .contains("Connection OK"),
        "connection test against tansu: {tested}"
    );
    ui.shot(wide, "07-uplink").await?;
    b.click("main form button[type=submit]").await?;
    let saved = b
        .wait(
            "save result",
            WAIT,
            "const r = document.querySelector('main .banner.ok, main .banner.warn, main .banner.bad'); return r ? r.className + ': ' + r.textContent : null",
        )
        .await?;
    let saved = saved.as_str().unwrap_or_default().to_string();
    ensure!(!saved.contains("bad"), "saving the uplink failed: {saved}");
    if saved.contains("Restart required") {
        p.note("uplink change needs a restart: restarting from the banner");
        b.click("main .banner.warn button").await?;
        ui.dialog_confirm().await?;
        ui.toast("Restart requested").await?;
        // The page reloads once the gateway answers again.
        b.wait(
            "gateway back after restart",
            Duration::from_secs(60),
            "return !document.querySelector('.toast') && document.readyState === 'complete' && !!document.querySelector('#kafka-servers')",
        )
        .await?;
    }

    // ---- records arrive in the broker ----
    let records = kafka.consume("plant-data", Some(2)).await?;
    let topics: Vec<String> = records
        .iter()
        .filter_map(|r| r.header_str("mqtt_topic").map(str::to_string))
        .collect();
    ensure!(
        topics
            .iter()
            .any(|t| t.starts_with("ironbridge/modbus/press-1/")),
        "records in plant-data come from the device: {topics:?}"
    );
    let value: Value = serde_json::from_slice(records[0].value.as_deref().unwrap_or_default())
        .context("value format json")?;
    ensure!(value.is_object(), "JSON envelope: {value}");
    p.note(format!(
        "{} records in Kafka topic plant-data",
        records.len()
    ));

    // ---- dashboard: connected uplink, the device, page weight with a cold cache ----
    b.cdp("Network.enable", json!({})).await?;
    b.cdp("Network.clearBrowserCache", json!({})).await?;
    ui.open("/dashboard").await?;
    b.wait(
        "dashboard shows the uplink connected and the device",
        Duration::from_secs(30),
        "const u = document.querySelector('#card-uplink .pill'), d = document.querySelector('#device-health'); \
         return !!u && u.textContent === 'Connected' && !!d && d.textContent.includes('press-1')",
    )
    .await?;
    let weight = b
        .js(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const r = performance.getEntriesByType('resource'); \
             const sum = (k) => r.reduce((a, e) => a + (e[k] || 0), 0); \
             return { html: n.transferSize, resources: sum('transferSize'), decoded: n.decodedBodySize + sum('decodedBodySize'), \
                      files: r.map(e => e.name.replace(location.origin, '') + ' ' + e.transferSize) }",
            vec![],
        )
        .await?;
    let transferred =
        weight["html"].as_f64().unwrap_or(0.0) + weight["resources"].as_f64().unwrap_or(0.0);
    eprintln!(
        "dashboard page weight: {:.1} KiB transferred ({:.1} KiB decoded); {}",
        transferred / 1024.0,
        weight["decoded"].as_f64().unwrap_or(0.0) / 1024.0,
        weight["files"]
    );
    ensure!(transferred > 0.0, "no transfer sizes measured: {weight}");
    ensure!(
        transferred < DASHBOARD_BUDGET_BYTES,
        "the dashboard transferred {transferred} bytes (budget {DASHBOARD_BUDGET_BYTES})"
    );

    // ---- a viewer account ----
    ui.open("/system").await?;
    ui.settled().await?;
    b.fill("#add-user input[autocomplete=off]", VIEWER.0)
        .await?;
    b.fill("#add-user input[type=password]", VIEWER.1).await?;
    b.choose("#add-user select", "viewer").await?;
    b.click("#add-user button[type=submit]").await?;
    b.wait(
        "viewer added",
        WAIT,
        "return document.querySelector('#users .banner.ok')?.textContent || null",
    )
    .await?;

    // ---- markup in a device name is shown as text ----
    ui.open("/devices?new=1").await?;
    b.fill("#dev-name", XSS_NAME).await?;
    b.fill("#dev-address", sim_addr).await?;
    // Same simulator, so another unit id (the validator refuses a duplicate on one address).
    b.fill("#dev-unit", "2").await?;
    b.click("#add-tag").await?;
    b.fill(&tag(0, "name", "input"), "t").await?;
    b.fill(&tag(0, "address", "input"), "40001").await?;
    b.click("#save-device").await?;
    b.wait(
        "device with markup in its name saved",
        WAIT,
        "return new URLSearchParams(location.search).get('d') || null",
    )
    .await?;
    ui.open("/devices").await?;
    let shown = b
        .wait(
            "device list with the odd name",
            WAIT,
            "return [...document.querySelectorAll('#device-list a.device-link')].map(a => a.textContent).find(t => t.startsWith('<script>')) || null",
        )
        .await?;
    ensure!(
        shown == json!(XSS_NAME),
        "name shown as {shown}, want the literal text"
    );
    ensure!(
        b.count("main img[src=x], main script").await? == 0,
        "markup from a device name became elements"
    );
    if let Some(alert) = b.open_alert().await {
        bail!("a script from a device name ran: alert {alert:?}");
    }
    ui.shot(wide, "03-devices").await?;

    // ---- screenshots of every page, desktop then phone ----
    let pages = [
        ("/dashboard", "00-dashboard"),
        ("/devices", "03-devices"),
        ("/devices?d=press-1", "04-device-live"),
        ("/devices?edit=press-1", "05-device-edit"),
        ("/mqtt", "06-mqtt"),
        ("/uplink", "07-uplink"),
        ("/sparkplug", "08-sparkplug"),
        ("/buffer", "09-buffer"),
        ("/system", "10-system"),
    ];
    for (path, name) in pages {
        ui.open(path).await?;
        ui.shot(wide, name).await?;
    }
    b.set_size(375, 812).await?;
    for (path, name) in pages {
        ui.open(path).await?;
        ui.shot(phone, name).await?;
        // Tables scroll inside their box; the page itself never scrolls sideways.
        let overflow = b
            .js(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await?;
        ensure!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{path} is wider than a 375 px phone by {overflow} px"
        );
    }
    ui.open("/dashboard").await?;
    ui.settled().await?;
    b.click(".topbar button").await?;
    b.find("#side.open a[href='/uplink']").await?;
    ui.shot(phone, "00-dashboard-menu").await?;
    ui.sign_out().await?;
    ui.shot(phone, "02-login").await?;
    b.set_size(1366, 768).await?;

    // ---- the viewer sees values but no edit or write controls ----
    ui.login(VIEWER.0, VIEWER.1).await?;
    ui.open("/devices?d=press-1").await?;
    b.wait(
        "viewer sees live values",
        WAIT,
        "const r = document.querySelector('#tag-table tr[data-tag=\"speed_setpoint\"] .value'); return r && isFinite(parseFloat(r.textContent))",
    )
    .await?;
    ensure!(
        b.count("main [data-action]").await? == 0,
        "a viewer sees edit/read/write/delete controls"
    );
    ui.shot(wide, "11-viewer-device").await?;
    for path in ["/devices", "/uplink", "/mqtt", "/buffer", "/system"] {
        ui.open(path).await?;
        ui.settled().await?;
        // Everyone may change their own password; nothing else.
        let n = b
            .js(
                "return [...document.querySelectorAll('main button[type=submit], main [data-action], #add-device, #add-route, #restart')] \
                 .filter(e => !e.closest('#password-form')).length",
                vec![],
            )
            .await?;
        let n = n.as_u64().unwrap_or(u64::MAX);
        ensure!(n == 0, "a viewer sees {n} change controls on {path}");
        let enabled = b
            .js(
                "return [...document.querySelectorAll('main form input, main form select, main form textarea')] \
                 .filter(e => !e.disabled && !e.closest('#password-form')).length",
                vec![],
            )
            .await?;
        ensure!(
            enabled == json!(0),
            "{path}: {enabled} editable inputs for a viewer"
        );
    }
    p.note("viewer checks done");
    Ok(())
}
