//! Issue 19 in a real browser, against a daemon of its own (no Kafka): the post-login `next`
//! redirect stays on the gateway for the known open-redirect bypasses (`/\evil`, `//evil`,
//! `/<tab>/evil`, absolute and `javascript:` URLs) and follows a same-origin path; an operator
//! sees neither the audit trail nor the account cards; an admin opens System → Audit trail, sees
//! the operator's sign-ins and filters them. Screenshot: `audit-trail` at 1366×768.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, prepare, within,
};
use serde_json::json;

use super::webdriver::{Browser, browser_available, screenshot_dir};
use super::{Ui, WAIT};

const OPERATOR: (&str, &str) = ("shift-lead", "Operator-Writes-Tags-31");

/// `next` values that have sent browsers off-site through naive checks.
const BYPASSES: &[&str] = &[
    "/\\evil.example",
    "//evil.example",
    "/\t/evil.example",
    "/\\/evil.example",
    "https://evil.example/",
    "javascript:alert(document.domain)",
    "/\n/evil.example",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_safe_next_operator_and_audit_page_in_a_real_browser() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(240), "audit and roles flow", run()).await
}

async fn run() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let r = gw
        .api(reqwest::Method::POST, "/api/users")?
        .json(&json!({"username": OPERATOR.0, "password": OPERATOR.1, "role": "operator"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "create operator: {}", r.status());
    let ui = Ui {
        b: Browser::start(1366, 768).await?,
        base: format!("https://{}", gw.web_addr()),
    };
    let result = flow(&gw, &ui).await;
    if result.is_err() {
        let _ =
            ui.b.screenshot(&screenshot_dir().join("failure-audit.png"))
                .await;
    }
    ui.b.quit().await;
    result
}

async fn sign_in_with_next(ui: &Ui, next: &str, user: (&str, &str)) -> Result<String> {
    let q = url_encode(next);
    ui.open(&format!("/login?next={q}")).await?;
    ui.wait_path("/login").await?;
    ui.b.fill("input[name=username]", user.0).await?;
    ui.b.fill("input[name=password]", user.1).await?;
    ui.b.click("#login-submit").await?;
    let href = ui
        .b
        .wait(
            "redirect after sign-in",
            WAIT,
            "return location.pathname !== '/login' && document.readyState === 'complete' ? location.href : ''",
        )
        .await?;
    href.as_str().map(str::to_string).context("href")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn flow(gw: &Gateway, ui: &Ui) -> Result<()> {
    let home = format!("{}/dashboard", ui.base);
    for next in BYPASSES {
        let href = sign_in_with_next(ui, next, OPERATOR).await?;
        ensure!(href == home, "next={next:?} led to {href}");
        ui.sign_out().await?;
    }
    let href = sign_in_with_next(ui, "/system?tab=1", OPERATOR).await?;
    ensure!(
        href == format!("{}/system?tab=1", ui.base),
        "same-origin next: {href}"
    );

    // The operator: no audit trail, no account cards.
    ui.settled().await?;
    let role = ui.b.js("return document.body.className", vec![]).await?;
    ensure!(
        role.as_str().unwrap_or("").contains("role-operator"),
        "body class {role}"
    );
    ensure!(
        ui.b.count("#open-audit").await? == 0,
        "operator sees the audit link"
    );
    ui.open("/audit").await?;
    ui.b.wait(
        "audit refused to the operator",
        WAIT,
        "return document.body.innerText.includes('Only administrators can read the audit trail')",
    )
    .await?;
    ensure!(
        ui.b.count("#audit-table").await? == 0,
        "operator sees the audit table"
    );
    ui.sign_out().await?;

    // The admin: System → Audit trail, the operator's sign-ins, filtered.
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await?;
    ui.open("/system").await?;
    ui.b.click("#open-audit").await?;
    ui.wait_path("/audit").await?;
    ui.b
        .wait(
            "operator sign-ins listed",
            WAIT,
            &format!(
                "return [...document.querySelectorAll('#audit-table tbody tr[data-action=login]')].filter(r => r.children[2].textContent === {}).length",
                serde_json::to_string(OPERATOR.0)?
            ),
        )
        .await?;
    ui.shot(&screenshot_dir(), "audit-trail").await?;
    ui.b.fill("#audit-actor", OPERATOR.0).await?;
    ui.b.choose("#audit-action", "login").await?;
    ui.b.click("#audit-filter button[type=submit]").await?;
    let rows = ui
        .b
        .wait(
            "filtered rows",
            WAIT,
            &format!(
                "const rows = [...document.querySelectorAll('#audit-table tbody tr[data-seq]')]; \
                 return rows.length && rows.every(r => r.children[2].textContent === {} && r.dataset.action.startsWith('login')) ? rows.length : 0",
                serde_json::to_string(OPERATOR.0)?
            ),
        )
        .await?;
    ensure!(
        rows.as_u64() >= Some(BYPASSES.len() as u64 + 1),
        "{rows} sign-ins of the operator listed"
    );
    let csv =
        ui.b.js(
            "return document.querySelector('#audit-csv').getAttribute('href')",
            vec![],
        )
        .await?;
    ensure!(
        csv.as_str()
            .is_some_and(|h| h.contains("format=csv") && h.contains("actor=shift-lead")),
        "export link {csv}"
    );
    let (code, body) = gw.api_get(csv.as_str().context("href")?).await?;
    ensure!(
        code == 200 && body.lines().count() > BYPASSES.len(),
        "csv export {code}: {body}"
    );
    Ok(())
}
