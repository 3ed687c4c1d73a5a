//! The web API against the real `ironbridge` binary on 127.0.0.1, over HTTPS with the certificate
//! the daemon generated: TLS and the HTTP redirect, first-boot setup, login, sessions (expiry,
//! logout, wrong ids), lockout, roles, CSRF, every endpoint's authentication, validation errors
//! naming fields, atomic configuration writes, live apply, oversized bodies, script injection
//! stored verbatim, certificate upload, users and tokens, MQTT clients, logs, restart.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, https_client, prepare, session_cookie,
    text, within,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep};

const LIMIT: Duration = Duration::from_secs(90);

/// How a request authenticates.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Token(String),
    Session {
        cookie: String,
        csrf: Option<String>,
    },
}

struct Reply {
    code: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<Value>,
) -> Result<Reply> {
    let mut rb = gw.client()?.request(method.clone(), gw.url(path));
    match auth {
        Auth::None => {}
        Auth::Token(t) => rb = rb.bearer_auth(t),
        Auth::Session { cookie, csrf } => {
            rb = rb.header(reqwest::header::COOKIE, format!("ib_session={cookie}"));
            if let Some(c) = csrf {
                rb = rb.header("X-CSRF-Token", c);
            }
        }
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    Ok(Reply {
        code,
        headers,
        text,
    })
}

fn admin(gw: &Gateway) -> Result<Auth> {
    Ok(Auth::Token(gw.token().context("no token")?.to_string()))
}

/// Logs in; returns the session.
async fn login(gw: &Gateway, user: &str, password: &str) -> Result<Auth> {
    let r = call(
        gw,
        Method::POST,
        "/api/login",
        &Auth::None,
        Some(json!({"username": user, "password": password})),
    )
    .await?;
    ensure!(r.code == 200, "login {user}: {} {}", r.code, r.text);
    let cookie = session_cookie(&r.headers).context("no session cookie")?;
    let set = r
        .headers
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        ensure!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    let csrf = text(&r.json(), "/csrf_token")
        .context("no csrf_token")?
        .to_string();
    Ok(Auth::Session {
        cookie,
        csrf: Some(csrf),
    })
}

async fn start(opts: GatewayOptions) -> Result<Gateway> {
    prepare().await?;
    Gateway::start(opts).await
}

fn sha256_hex_colon(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificate_fingerprint_and_http_redirect() -> Result<()> {
    within(LIMIT, "tls", async {
        let gw = start(GatewayOptions {
            http_redirect: true,
            ..GatewayOptions::default()
        })
        .await?;
        let key = gw.state_dir().join("tls/web.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key)?.permissions());
        ensure!(mode & 0o777 == 0o600, "web.key mode {:o}", mode & 0o777);
        let pem = std::fs::read(gw.web_cert_path())?;
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(&pem).context("cert pem")?;
        let fp = sha256_hex_colon(&der);
        let log = gw.log();
        ensure!(
            log.contains("generated a self-signed web certificate"),
            "{log}"
        );
        ensure!(
            log.contains(&format!("fingerprint_sha256={fp}")),
            "fingerprint {fp} not logged:\n{log}"
        );
        // /api/system shows the same fingerprint.
        let sys = call(&gw, Method::GET, "/api/system", &admin(&gw)?, None).await?;
        ensure!(
            text(&sys.json(), "/tls_fingerprint_sha256") == Some(fp.as_str()),
            "{}",
            sys.text
        );

        // Plain HTTP only redirects, to the same path on the HTTPS port.
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let r = plain
            .get(format!("http://{}/dashboard?x=1", gw.http_addr()))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 308, "redirect status {}", r.status());
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        ensure!(
            loc == format!("https://127.0.0.1:{}/dashboard?x=1", gw.web_addr().port()),
            "Location {loc}"
        );
        let r = plain
            .get(format!("http://{}/api/status", gw.http_addr()))
            .send()
            .await?;
        ensure!(
            r.status().as_u16() == 308,
            "API over plain HTTP must redirect too"
        );
        // The HTTPS port does not speak plain HTTP.
        ensure!(
            plain
                .get(format!("http://{}/healthz", gw.web_addr()))
                .send()
                .await
                .map(|r| !r.status().is_success())
                .unwrap_or(true),
            "plain HTTP answered on the HTTPS port"
        );
        // A client that does not trust the certificate is refused.
        let untrusting = reqwest::Client::builder().build()?;
        ensure!(
            untrusting.get(gw.url("/healthz")).send().await.is_err(),
            "an untrusting client connected"
        );
        // Security headers.
        let r = call(&gw, Method::GET, "/healthz", &Auth::None, None).await?;
        let h = |k: &str| {
            r.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        ensure!(h("content-security-policy").contains("frame-ancestors 'none'"));
        ensure!(!h("content-security-policy").contains("unsafe-inline"));
        ensure!(h("x-frame-options") == "DENY");
        ensure!(h("x-content-type-options") == "nosniff");
        ensure!(h("referrer-policy") == "no-referrer");
        ensure!(h("strict-transport-security").starts_with("max-age="));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn first_boot_setup_login_logout_and_password_policy() -> Result<()> {
    within(LIMIT, "setup", async {
        let gw = start(GatewayOptions {
            auto_setup: false,
            ..GatewayOptions::default()
        })
        .await?;
        let s = call(&gw, Method::GET, "/api/session", &Auth::None, None).await?;
        ensure!(
            s.code == 200 && s.json()["setup_required"] == true,
            "{}",
            s.text
        );
        ensure!(s.json()["authenticated"] == false);
        // Everything else is closed while setup is pending: no default credentials.
        for path in ["/api/status", "/metrics", "/api/config"] {
            let r = call(&gw, Method::GET, path, &Auth::None, None).await?;
            ensure!(r.code == 401, "{path} before setup: {}", r.code);
        }
        for (user, pw) in [("admin", "admin"), ("admin", "password"), ("admin", "")] {
            let r = call(
                &gw,
                Method::POST,
                "/api/login",
                &Auth::None,
                Some(json!({"username": user, "password": pw})),
            )
            .await?;
            ensure!(r.code == 401, "default credentials {user}/{pw}: {}", r.code);
        }
        let code = gw.setup_code().context("setup code in the log")?;
        let setup =
            |u: &str, p: &str, c: &str| json!({"username": u, "password": p, "setup_code": c});
        let r = call(
            &gw,
            Method::POST,
            "/api/setup",
            &Auth::None,
            Some(setup("admin", "correct horse battery", "WRONG-CODE")),
        )
        .await?;
        ensure!(
            r.code == 403 && r.json()["error"] == "bad_setup_code",
            "{} {}",
            r.code,
            r.text
        );
        for (pw, why) in [
            ("short", "length"),
            ("password123", "common"),
            ("admin-admin-admin", "user name"),
        ] {
            let r = call(
                &gw,
                Method::POST,
                "/api/setup",
                &Auth::None,
                Some(setup("admin", pw, &code)),
            )
            .await?;
            ensure!(
                r.code == 422,
                "weak password ({why}) accepted: {} {}",
                r.code,
                r.text
            );
            ensure!(r.json()["fields"][0]["field"] == "password", "{}", r.text);
        }
        let r = call(
            &gw,
            Method::POST,
            "/api/setup",
            &Auth::None,
            Some(setup("admin", "correct horse battery", &code)),
        )
        .await?;
        ensure!(r.code == 200, "setup: {} {}", r.code, r.text);
        ensure!(session_cookie(&r.headers).is_some());
        let r = call(
            &gw,
            Method::POST,
            "/api/setup",
            &Auth::None,
            Some(setup("evil", "another long password", &code)),
        )
        .await?;
        ensure!(r.code == 409, "second setup: {} {}", r.code, r.text);

        let r = call(
            &gw,
            Method::POST,
            "/api/login",
            &Auth::None,
            Some(json!({"username": "admin", "password": "wrong password!"})),
        )
        .await?;
        ensure!(
            r.code == 401 && r.json()["error"] == "bad_credentials",
            "{}",
            r.text
        );
        let sess = login(&gw, "admin", "correct horse battery").await?;
        let s = call(&gw, Method::GET, "/api/session", &sess, None).await?;
        ensure!(
            s.json()["authenticated"] == true && s.json()["role"] == "admin",
            "{}",
            s.text
        );
        ensure!(s.json()["setup_required"] == false);
        ensure!(
            s.json()["idle_expires_in_s"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
        let st = call(&gw, Method::GET, "/api/status", &sess, None).await?;
        ensure!(st.code == 200, "{}", st.text);

        // Own password change: policy, current password, then the old one stops working.
        let r = call(
            &gw,
            Method::POST,
            "/api/password",
            &sess,
            Some(json!({"current": "nope nope nope", "new": "a brand new passphrase"})),
        )
        .await?;
        ensure!(
            r.code == 422 && r.json()["fields"][0]["field"] == "current",
            "{}",
            r.text
        );
        let r = call(
            &gw,
            Method::POST,
            "/api/password",
            &sess,
            Some(json!({"current": "correct horse battery", "new": "qwerty"})),
        )
        .await?;
        ensure!(
            r.code == 422 && r.json()["fields"][0]["field"] == "new",
            "{}",
            r.text
        );
        let r = call(
            &gw,
            Method::POST,
            "/api/password",
            &sess,
            Some(json!({"current": "correct horse battery", "new": "a brand new passphrase"})),
        )
        .await?;
        ensure!(r.code == 200, "{}", r.text);
        let r = call(
            &gw,
            Method::POST,
            "/api/login",
            &Auth::None,
            Some(json!({"username": "admin", "password": "correct horse battery"})),
        )
        .await?;
        ensure!(r.code == 401, "old password still works");

        // Logout ends the session server-side (the cookie alone is worthless afterwards).
        let r = call(&gw, Method::POST, "/api/logout", &sess, None).await?;
        ensure!(r.code == 200, "{}", r.text);
        let r = call(&gw, Method::GET, "/api/status", &sess, None).await?;
        ensure!(r.code == 401, "session alive after logout: {}", r.code);
        // A made-up session id is nobody.
        let forged = Auth::Session {
            cookie: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            csrf: None,
        };
        let r = call(&gw, Method::GET, "/api/status", &forged, None).await?;
        ensure!(r.code == 401);
        Ok(())
    })
    .await
}

/// Every endpoint: (method, path, who may call it).
const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "public"),
    ("GET", "/api/session", "public"),
    ("GET", "/", "public"),
    ("GET", "/dashboard", "public"),
    ("GET", "/metrics", "viewer"),
    ("POST", "/api/logout", "viewer"),
    ("POST", "/api/password", "viewer"),
    ("GET", "/api/users", "admin"),
    ("POST", "/api/users", "admin"),
    ("PUT", "/api/users/someone", "admin"),
    ("DELETE", "/api/users/someone", "admin"),
    ("GET", "/api/tokens", "admin"),
    ("POST", "/api/tokens", "admin"),
    ("DELETE", "/api/tokens/none", "admin"),
    ("GET", "/api/status", "viewer"),
    ("GET", "/api/devices", "viewer"),
    ("POST", "/api/devices", "admin"),
    ("GET", "/api/devices/none", "viewer"),
    ("PUT", "/api/devices/none", "admin"),
    ("DELETE", "/api/devices/none", "admin"),
    ("POST", "/api/devices/none/read", "operator"),
    ("POST", "/api/devices/none/write", "operator"),
    ("GET", "/api/devices/none/tags.csv", "viewer"),
    ("PUT", "/api/devices/none/tags.csv", "admin"),
    ("GET", "/api/mqtt/clients", "viewer"),
    ("POST", "/api/uplink/test", "admin"),
    ("GET", "/api/logs", "viewer"),
    ("GET", "/api/audit", "admin"),
    ("GET", "/api/system", "viewer"),
    ("POST", "/api/system/restart", "admin"),
    ("GET", "/api/config", "viewer"),
    ("GET", "/api/config/toml", "admin"),
    ("PUT", "/api/config/toml", "admin"),
    ("GET", "/api/config/kafka", "viewer"),
    ("PUT", "/api/config/kafka", "admin"),
    ("PUT", "/api/web/certificate", "admin"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_requires_its_role_and_csrf() -> Result<()> {
    within(LIMIT, "roles", async {
        let gw = start(GatewayOptions::default()).await?;
        let adm = admin(&gw)?;
        let r = call(&gw, Method::POST, "/api/users", &adm, Some(json!({"username": "watcher", "password": "staple battery horse", "role": "viewer"}))).await?;
        ensure!(r.code == 201, "{}", r.text);
        let r = call(&gw, Method::POST, "/api/tokens", &adm, Some(json!({"name": "prometheus", "role": "viewer"}))).await?;
        ensure!(r.code == 201, "{}", r.text);
        let viewer_token = Auth::Token(text(&r.json(), "/token").context("token")?.to_string());
        // The token list never shows a secret.
        let list = call(&gw, Method::GET, "/api/tokens", &adm, None).await?;
        ensure!(!list.text.contains("ibt_") && !list.text.contains("hash"), "{}", list.text);
        // Prometheus with the viewer token.
        let m = call(&gw, Method::GET, "/metrics", &viewer_token, None).await?;
        ensure!(m.code == 200 && m.text.contains("ironbridge_up 1"), "{}", m.code);

        for (method, path, who) in ENDPOINTS {
            let method = Method::from_bytes(method.as_bytes())?;
            let what = format!("{method} {path}");
            let state_changing = method != Method::GET;
            let body = state_changing.then(|| json!({}));
            // Restart and logout would end the test's daemon/session: only their refusals are checked.
            let harmless = !matches!(*path, "/api/system/restart" | "/api/logout");
            let anon = call(&gw, method.clone(), path, &Auth::None, body.clone()).await?;
            if *who == "public" {
                ensure!(anon.code != 401 && anon.code != 403, "{what} anonymous: {}", anon.code);
                continue;
            }
            ensure!(anon.code == 401, "{what} anonymous: {} {}", anon.code, anon.text);
            ensure!(anon.json()["error"] == "unauthenticated", "{what}: {}", anon.text);
            let bad = call(&gw, method.clone(), path, &Auth::Token("ibt_x_y".into()), body.clone()).await?;
            ensure!(bad.code == 401, "{what} with a wrong token: {}", bad.code);

            let v = login(&gw, "watcher", "staple battery horse").await?;
            if *who == "admin" || *who == "operator" {
                for auth in [&viewer_token, &v] {
                    let r = call(&gw, method.clone(), path, auth, body.clone()).await?;
                    ensure!(r.code == 403, "{what} as viewer: {} {}", r.code, r.text);
                }
            } else if harmless {
                let r = call(&gw, method.clone(), path, &viewer_token, body.clone()).await?;
                ensure!(r.code != 401 && r.code != 403, "{what} as viewer token: {} {}", r.code, r.text);
            }
            if state_changing {
                let a = login(&gw, ADMIN_USER, ADMIN_PASSWORD).await?;
                let Auth::Session { cookie, .. } = a else { bail!("no session") };
                let no_csrf = Auth::Session { cookie: cookie.clone(), csrf: None };
                let r = call(&gw, method.clone(), path, &no_csrf, body.clone()).await?;
                ensure!(r.code == 403 && r.json()["error"] == "csrf", "{what} without CSRF: {} {}", r.code, r.text);
                let wrong = Auth::Session { cookie, csrf: Some("0".repeat(43)) };
                let r = call(&gw, method.clone(), path, &wrong, body.clone()).await?;
                ensure!(r.code == 403 && r.json()["error"] == "csrf", "{what} wrong CSRF: {}", r.code);
            }
            if harmless {
                let r = call(&gw, method.clone(), path, &adm, body.clone()).await?;
                ensure!(r.code != 401 && r.code != 403 && r.code != 405, "{what} as admin: {} {}", r.code, r.text);
            }
        }
        // Viewer sees configuration but no secrets and no raw file.
        let v = login(&gw, "watcher", "staple battery horse").await?;
        let r = call(&gw, Method::GET, "/api/config", &v, None).await?;
        ensure!(r.code == 200 && r.json()["kafka"].is_object(), "{}", r.text);
        // The last admin cannot be deleted or demoted.
        let r = call(&gw, Method::DELETE, &format!("/api/users/{ADMIN_USER}"), &adm, None).await?;
        ensure!(r.code == 409, "{}", r.text);
        let r = call(&gw, Method::PUT, &format!("/api/users/{ADMIN_USER}"), &adm, Some(json!({"role": "viewer"}))).await?;
        ensure!(r.code == 409, "{}", r.text);
        // Deleting a user ends their sessions.
        let r = call(&gw, Method::DELETE, "/api/users/watcher", &adm, None).await?;
        ensure!(r.code == 200, "{}", r.text);
        let r = call(&gw, Method::GET, "/api/status", &v, None).await?;
        ensure!(r.code == 401, "deleted user's session still works");
        // Deleting a token revokes it.
        let list = call(&gw, Method::GET, "/api/tokens", &adm, None).await?.json();
        let id = list
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == "prometheus"))
            .and_then(|t| t["id"].as_str())
            .context("token id")?
            .to_string();
        let r = call(&gw, Method::DELETE, &format!("/api/tokens/{id}"), &adm, None).await?;
        ensure!(r.code == 200, "{}", r.text);
        let r = call(&gw, Method::GET, "/metrics", &viewer_token, None).await?;
        ensure!(r.code == 401, "revoked token still works");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn config_validation_atomic_write_and_live_apply() -> Result<()> {
    within(LIMIT, "config", async {
        let gw = start(GatewayOptions::default()).await?;
        let adm = admin(&gw)?;
        let path = gw.config_path();
        let kafka = call(&gw, Method::GET, "/api/config/kafka", &adm, None)
            .await?
            .json();
        ensure!(kafka.is_object(), "{kafka}");

        // A validation error names the field; the file is untouched.
        let before = std::fs::read(&path)?;
        let mut bad = kafka.clone();
        bad["routes"] =
            json!([{"filter": "a/#", "topic": "ok"}, {"filter": "b/#", "topic": "bad topic!"}]);
        let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(bad)).await?;
        ensure!(r.code == 422, "{} {}", r.code, r.text);
        ensure!(
            r.json()["fields"][0]["field"] == "kafka.routes[1].topic",
            "{}",
            r.text
        );
        let mut bad = kafka.clone();
        bad["request_timeout_ms"] = json!("soon");
        let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(bad)).await?;
        ensure!(
            r.code == 422 && r.json()["fields"][0]["field"] == "kafka.request_timeout_ms",
            "{}",
            r.text
        );
        let r = call(&gw, Method::PUT, "/api/config/toml", &adm, None).await?;
        ensure!(r.code == 422, "empty TOML body: {} {}", r.code, r.text);
        let gw_toml = String::from_utf8(before.clone())?;
        let broken = gw_toml.replace("[buffer]", "[buffer]\nmax_bytes = = 1");
        let r = gw
            .api(Method::PUT, "/api/config/toml")?
            .body(broken)
            .send()
            .await?;
        let (code, body): (u16, Value) = (r.status().as_u16(), r.json().await?);
        ensure!(
            code == 422 && body["fields"][0]["line"].as_u64().is_some(),
            "{code} {body}"
        );
        ensure!(
            std::fs::read(&path)? == before,
            "an invalid PUT changed the file"
        );

        // Secrets: redacted on GET, kept when sent back redacted.
        let mut k = kafka.clone();
        k["sasl"] = json!({"mechanism": "plain", "username": "gw", "password": "s3cret-value"});
        let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(k)).await?;
        ensure!(r.code == 200, "{} {}", r.code, r.text);
        let shown = call(&gw, Method::GET, "/api/config", &adm, None).await?;
        ensure!(!shown.text.contains("s3cret-value"), "secret shown");
        ensure!(shown.json()["kafka"]["sasl"]["password"] == "********");
        let mut k = shown.json()["kafka"].clone();
        k["client_id"] = json!("renamed");
        let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(k)).await?;
        ensure!(r.code == 200, "{}", r.text);
        let file = std::fs::read_to_string(&path)?;
        ensure!(
            file.contains("s3cret-value") && file.contains("renamed"),
            "{file}"
        );
        ensure!(
            file.contains("[web]") && file.contains("http_redirect = false"),
            "other sections lost: {file}"
        );

        // Atomic: readers see the old or the new file, never a partial one; no temp files stay.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || -> Result<usize> {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = std::fs::read_to_string(&path)?;
                    let v: toml::Table =
                        toml::from_str(&t).with_context(|| format!("partial file:\n{t}"))?;
                    let id = v
                        .get("kafka")
                        .and_then(|k| k.get("client_id"))
                        .and_then(|c| c.as_str())
                        .unwrap_or("");
                    ensure!(
                        id.starts_with("client-") || id == "renamed",
                        "unexpected client_id {id:?}"
                    );
                    reads += 1;
                }
                Ok(reads)
            })
        };
        for i in 0..20 {
            let mut k = call(&gw, Method::GET, "/api/config/kafka", &adm, None)
                .await?
                .json();
            k["client_id"] = json!(format!("client-{i}"));
            let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(k)).await?;
            ensure!(r.code == 200, "{}", r.text);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        ensure!(reads > 0);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().context("dir")?)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        ensure!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        // Live apply: the uplink restarts with new bootstrap servers, no daemon restart needed.
        let mut k = call(&gw, Method::GET, "/api/config/kafka", &adm, None)
            .await?
            .json();
        k["bootstrap_servers"] = json!(["127.0.0.1:9"]);
        let r = call(&gw, Method::PUT, "/api/config/kafka", &adm, Some(k)).await?;
        let saved = r.json();
        ensure!(
            saved["saved"] == true
                && saved["applied"] == true
                && saved["restart_required"] == false,
            "{saved}"
        );
        gw.wait_status(
            "uplink tries the new broker",
            Duration::from_secs(20),
            |s| !s["uplink"].to_string().contains("not configured"),
        )
        .await?;
        ensure!(
            gw.log()
                .contains("configuration changed; restarting the component"),
            "no live restart logged"
        );
        let sys = call(&gw, Method::GET, "/api/system", &adm, None)
            .await?
            .json();
        ensure!(sys["restart_required"] == false, "{sys}");

        // A section that needs a restart says so, in the answer and in /api/system.
        let mut b = call(&gw, Method::GET, "/api/config/buffer", &adm, None)
            .await?
            .json();
        b["max_bytes"] = json!(128u64 << 20);
        let r = call(&gw, Method::PUT, "/api/config/buffer", &adm, Some(b)).await?;
        let saved = r.json();
        ensure!(
            saved["restart_required"] == true && saved["applied"] == false,
            "{saved}"
        );
        let sys = call(&gw, Method::GET, "/api/system", &adm, None)
            .await?
            .json();
        ensure!(sys["restart_required"] == true, "{sys}");
        ensure!(
            sys["restart_required_sections"] == json!(["buffer"]),
            "{sys}"
        );
        // The file still passes check-config.
        let out = ironbridge_e2e::gateway::run_ironbridge(
            &["check-config", &path.to_string_lossy()],
            b"",
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_injection_devices_and_csv() -> Result<()> {
    within(LIMIT, "devices", async {
        let gw = start(GatewayOptions::default()).await?;
        let adm = admin(&gw)?;
        let big = json!({"name": "x".repeat(300 * 1024)});
        let r = call(&gw, Method::POST, "/api/devices", &adm, Some(big)).await?;
        ensure!(r.code == 413 && r.json()["error"] == "too_large", "{} {}", r.code, &r.text[..r.text.len().min(200)]);
        let r = gw.api(Method::PUT, "/api/config/toml")?.body("#".repeat(300 * 1024)).send().await?;
        ensure!(r.status().as_u16() == 413, "{}", r.status());

        // Device names become MQTT topic levels (no '/'), units are free text.
        let evil = "<img src=x onerror=alert(1)>";
        let unit = "\"><script>alert(1)</script>";
        let dev = json!({
            "name": evil,
            "transport": {"type": "tcp", "address": "127.0.0.1:9"},
            "timeout_ms": 200,
            "tags": [{"name": "t1", "address": "40001", "type": "u16", "unit": unit, "access": "read_write"}]
        });
        let r = call(&gw, Method::POST, "/api/devices", &adm, Some(dev)).await?;
        ensure!(r.code == 201, "{} {}", r.code, r.text);
        let r = call(&gw, Method::GET, "/api/devices", &adm, None).await?;
        let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        ensure!(ct.starts_with("application/json"), "{ct}");
        let d = &r.json()[0];
        ensure!(d["name"] == evil && d["tags"][0]["unit"] == unit, "not verbatim: {}", r.text);
        ensure!(d["transport"] == "tcp" && d["tags"][0]["writable"] == true, "{}", r.text);
        // One device by name (URL-encoded), its CSV, a test read of an unreachable device.
        let enc = "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E";
        let r = call(&gw, Method::GET, &format!("/api/devices/{enc}"), &adm, None).await?;
        ensure!(r.code == 200 && r.json()["name"] == evil, "{} {}", r.code, r.text);
        let r = call(&gw, Method::POST, &format!("/api/devices/{enc}/read"), &adm, Some(json!({"tag": "t1"}))).await?;
        ensure!(r.code == 502 && r.json()["message"].as_str().is_some_and(|m| m.contains("127.0.0.1:9")), "{} {}", r.code, r.text);
        let r = call(&gw, Method::POST, &format!("/api/devices/{enc}/read"), &adm, Some(json!({"tag": "nope"}))).await?;
        ensure!(r.code == 404, "{}", r.text);
        let csv = call(&gw, Method::GET, &format!("/api/devices/{enc}/tags.csv"), &adm, None).await?;
        ensure!(csv.text.starts_with("name,area,address,type"), "{}", csv.text);
        let new_csv = "name,address,type,unit,scale\nspeed,40002,u16,rpm,0.1\n\"a, b\",40003,i16,,\n";
        let r = gw.api(Method::PUT, &format!("/api/devices/{enc}/tags.csv"))?.body(new_csv).send().await?;
        ensure!(r.status().as_u16() == 200, "{}", r.text().await?);
        let d = call(&gw, Method::GET, &format!("/api/devices/{enc}"), &adm, None).await?.json();
        ensure!(d["tags"][1]["name"] == "a, b" && d["tags"][0]["unit"] == "rpm", "{d}");
        let r = gw.api(Method::PUT, &format!("/api/devices/{enc}/tags.csv"))?.body("name,address,type\nx,40001,float128\n").send().await?;
        let (code, body): (u16, Value) = (r.status().as_u16(), r.json().await?);
        ensure!(code == 422 && body["fields"][0]["line"] == 2, "{code} {body}");
        // Validation through the same validator: a bad address names the field.
        let mut d2 = call(&gw, Method::GET, "/api/config/modbus", &adm, None).await?.json();
        d2["devices"][0]["tags"][0]["address"] = json!("49999999");
        let r = call(&gw, Method::PUT, "/api/config/modbus", &adm, Some(d2)).await?;
        ensure!(r.code == 422 && r.json()["fields"][0]["field"].as_str().is_some_and(|f| f.starts_with("modbus.devices[0].tags[0]")), "{}", r.text);
        let r = call(&gw, Method::DELETE, &format!("/api/devices/{enc}"), &adm, None).await?;
        ensure!(r.code == 200, "{}", r.text);
        let r = call(&gw, Method::GET, "/api/devices", &adm, None).await?;
        ensure!(r.json() == json!([]), "{}", r.text);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_expire_and_logins_lock_out() -> Result<()> {
    within(LIMIT, "sessions", async {
        let mut web = BTreeMap::new();
        web.insert("session_idle_timeout_s".to_string(), "2".to_string());
        web.insert("session_absolute_timeout_s".to_string(), "3".to_string());
        let gw = start(GatewayOptions {
            web_settings: web,
            ..GatewayOptions::default()
        })
        .await?;
        let adm = admin(&gw)?;
        let r = call(
            &gw,
            Method::POST,
            "/api/users",
            &adm,
            Some(json!({"username": "op", "password": "staple battery horse"})),
        )
        .await?;
        ensure!(r.code == 201, "{}", r.text);
        // Idle expiry.
        let s = login(&gw, "op", "staple battery horse").await?;
        ensure!(call(&gw, Method::GET, "/api/status", &s, None).await?.code == 200);
        let started = Instant::now();
        loop {
            // Polling /api/session does not refresh... it does: wait without touching the session.
            sleep(Duration::from_millis(250)).await;
            if started.elapsed() > Duration::from_millis(2300) {
                break;
            }
        }
        let r = call(&gw, Method::GET, "/api/status", &s, None).await?;
        ensure!(
            r.code == 401,
            "idle session still valid after 2.3 s: {}",
            r.code
        );
        // Absolute expiry despite activity.
        let s = login(&gw, "op", "staple battery horse").await?;
        let started = Instant::now();
        let expired_after = loop {
            let r = call(&gw, Method::GET, "/api/status", &s, None).await?;
            if r.code == 401 {
                break started.elapsed();
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "session never expired"
            );
            sleep(Duration::from_millis(200)).await;
        };
        ensure!(
            expired_after >= Duration::from_millis(2500),
            "expired after {expired_after:?}"
        );

        // Lockout with backoff: after 5 failures even the right password gets 429 + Retry-After.
        let mut codes = Vec::new();
        for _ in 0..6 {
            let r = call(
                &gw,
                Method::POST,
                "/api/login",
                &Auth::None,
                Some(json!({"username": "op", "password": "wrong wrong wrong"})),
            )
            .await?;
            codes.push(r.code);
        }
        ensure!(
            codes[..5].iter().all(|c| *c == 401) && codes[5] == 429,
            "{codes:?}"
        );
        let r = call(
            &gw,
            Method::POST,
            "/api/login",
            &Auth::None,
            Some(json!({"username": "op", "password": "staple battery horse"})),
        )
        .await?;
        ensure!(r.code == 429, "locked-out user logged in: {}", r.code);
        let retry: u64 = r
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("Retry-After")?;
        ensure!((1..=30).contains(&retry), "Retry-After {retry}");
        // Other users are not locked out by it.
        login(&gw, ADMIN_USER, ADMIN_PASSWORD).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_upload_is_served_at_once() -> Result<()> {
    within(LIMIT, "cert", async {
        let mut gw = start(GatewayOptions::default()).await?;
        let adm = admin(&gw)?;
        let new = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "box.plant".to_string(),
        ])?;
        let other = rcgen::generate_simple_self_signed(vec!["x".to_string()])?;
        let r = call(
            &gw,
            Method::PUT,
            "/api/web/certificate",
            &adm,
            Some(json!({"cert_pem": new.cert.pem(), "key_pem": other.key_pair.serialize_pem()})),
        )
        .await?;
        ensure!(
            r.code == 422,
            "mismatched key accepted: {} {}",
            r.code,
            r.text
        );
        let r = call(
            &gw,
            Method::PUT,
            "/api/web/certificate",
            &adm,
            Some(json!({"cert_pem": "junk", "key_pem": "junk"})),
        )
        .await?;
        ensure!(
            r.code == 422 && r.json()["fields"][0]["field"] == "cert_pem",
            "{}",
            r.text
        );
        let old_pem = gw.state_dir().join("old-web.crt");
        std::fs::copy(gw.web_cert_path(), &old_pem)?;
        let r = call(
            &gw,
            Method::PUT,
            "/api/web/certificate",
            &adm,
            Some(json!({"cert_pem": new.cert.pem(), "key_pem": new.key_pair.serialize_pem()})),
        )
        .await?;
        ensure!(r.code == 200, "{} {}", r.code, r.text);
        let fp = sha256_hex_colon(new.cert.der());
        ensure!(r.json()["fingerprint_sha256"] == fp.as_str(), "{}", r.text);
        // A fresh client trusting only the old certificate is refused (an existing client could
        // resume its TLS session without seeing a certificate); one trusting the new one gets in.
        ensure!(
            https_client(&old_pem)?
                .get(gw.url("/healthz"))
                .send()
                .await
                .is_err(),
            "old certificate still served"
        );
        gw.reload_client()?;
        let (code, _) = ironbridge_e2e::gateway::https_get(
            &https_client(&gw.web_cert_path())?,
            &gw.url("/healthz"),
        )
        .await?;
        ensure!(code == 200);
        ensure!(
            gw.log().contains(&format!("fingerprint_sha256={fp}")),
            "new fingerprint not logged"
        );
        // And it is kept across a restart.
        gw.stop().await?;
        gw.restart().await?;
        let sys = gw.api_get("/api/system").await?;
        ensure!(sys.1.contains(&fp), "{}", sys.1);
        Ok(())
    })
    .await
}

/// A minimal MQTT 3.1.1 CONNECT for `client_id` (clean session, keep-alive 60 s).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, var.len() as u8];
    p.extend(var);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_clients_uplink_test_logs_and_restart() -> Result<()> {
    within(LIMIT, "misc", async {
        let gw = start(GatewayOptions::default()).await?;
        let adm = admin(&gw)?;
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.mqtt_port())).await?;
        sock.write_all(&connect_packet("press-7")).await?;
        let mut connack = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut sock, &mut connack).await?;
        ensure!(connack == [0x20, 2, 0, 0], "CONNACK {connack:?}");
        let r = call(&gw, Method::GET, "/api/mqtt/clients", &adm, None).await?;
        let c = &r.json()[0];
        ensure!(
            c["client_id"] == "press-7" && c["protocol"] == "3.1.1" && c["tls"] == false,
            "{}",
            r.text
        );
        ensure!(
            c["remote"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:"))
        );
        drop(sock);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = call(&gw, Method::GET, "/api/mqtt/clients", &adm, None).await?;
            if r.json() == json!([]) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "client still listed after disconnect: {}",
                r.text
            );
            sleep(Duration::from_millis(50)).await;
        }

        // Uplink test against nothing: a clear failure, within the bound.
        let r = call(
            &gw,
            Method::POST,
            "/api/uplink/test",
            &adm,
            Some(json!({"bootstrap_servers": ["127.0.0.1:9"]})),
        )
        .await?;
        let v = r.json();
        ensure!(r.code == 200 && v["ok"] == false, "{}", r.text);
        ensure!(
            v["message"].as_str().is_some_and(|m| !m.is_empty())
                && v["elapsed_ms"].as_u64().is_some_and(|t| t < 12_000),
            "{v}"
        );
        let r = call(&gw, Method::POST, "/api/uplink/test", &adm, None).await?;
        ensure!(
            r.json()["ok"] == false
                && r.json()["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no bootstrap servers")),
            "{}",
            r.text
        );

        // Recent logs.
        let r = call(&gw, Method::GET, "/api/logs?lines=500", &adm, None).await?;
        let lines = r.json();
        let lines = lines.as_array().context("log array")?;
        ensure!(
            lines.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("ironbridge running"))),
            "{}",
            r.text
        );
        ensure!(
            lines
                .iter()
                .all(|l| l["ts"].is_string() && l["level"].is_string() && l["target"].is_string())
        );
        let r = call(&gw, Method::GET, "/api/logs?lines=2", &adm, None).await?;
        ensure!(r.json().as_array().map(Vec::len) == Some(2), "{}", r.text);

        // Restart: an orderly shutdown, then the same process image again (no service manager here).
        let pid = gw.pid();
        let r = call(&gw, Method::POST, "/api/system/restart", &adm, None).await?;
        ensure!(r.code == 202, "{}", r.text);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if gw.log().matches("ironbridge running").count() >= 2
                && let Ok((200, body)) = gw.api_get("/api/system").await
            {
                let v: Value = serde_json::from_str(&body)?;
                ensure!(v["restart_required"] == false, "{v}");
                break;
            }
            ensure!(Instant::now() < deadline, "no restart:\n{}", gw.log_tail());
            sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            gw.log().contains("buffer synced; bye"),
            "restart was not orderly"
        );
        ensure!(gw.pid() == pid, "pid changed");
        Ok(())
    })
    .await
}
