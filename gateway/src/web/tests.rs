//! The access table against the real router: every route, without credentials, as viewer, as
//! admin, and every state-changing one without its CSRF token.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tower::ServiceExt as _;

use super::auth::{Auth, Role};
use super::*;
use crate::config::Config;
use crate::config_store::ConfigStore;
use crate::modbus::ModbusHub;
use crate::mqtt::{ClientRegistry, MqttStats};
use crate::state::StateStore;
use crate::status::GatewayStatus;
use crate::uplink::UplinkStatus;

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = Config::default();
    c.gateway.state_dir = dir.path().join("state");
    let path = dir.path().join("ironbridge.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nstate_dir = {:?}\n",
            c.gateway.state_dir.display().to_string()
        ),
    )
    .expect("config");
    let log = Arc::new(
        edge_buffer::Log::open(dir.path().join("buffer"), edge_buffer::Options::default())
            .expect("log"),
    );
    let status = GatewayStatus::new(
        "t".into(),
        log,
        Arc::new(MqttStats::default()),
        Arc::new(UplinkStatus::new()),
    );
    let store = ConfigStore::new(c.clone(), Some(path));
    let auth =
        Arc::new(Auth::open(&StateStore::temporary().expect("sled"), store.clone()).expect("auth"));
    let tls = Arc::new(tls::WebTls::load_or_generate(&c).expect("tls"));
    Fixture {
        state: Arc::new(WebContext {
            hub: ModbusHub::new(status.modbus_health()),
            status,
            clients: Arc::new(ClientRegistry::default()),
            config: store,
            auth,
            tls,
            logs: logs::LogRing::global(),
            runtime_devices: Vec::new(),
            restart: watch::channel(false).0,
            started: Instant::now(),
        }),
        _dir: dir,
    }
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{name}", "nobody")
        .replace("{id}", "nothing")
        .replace("{section}", "log")
        .replace("{*path}", "app.js")
}

struct Cred {
    cookie: Option<String>,
    csrf: Option<String>,
    bearer: Option<String>,
}

async fn call(st: &AppState, method: &Method, path: &str, cred: &Cred) -> (StatusCode, String) {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, "gw.test");
    if let Some(c) = &cred.cookie {
        b = b.header(header::COOKIE, format!("{SESSION_COOKIE}={c}"));
    }
    if let Some(t) = &cred.csrf {
        b = b.header(CSRF_HEADER, t);
    }
    if let Some(t) = &cred.bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = if *method == Method::GET || *method == Method::DELETE {
        Body::empty()
    } else {
        b = b.header(header::CONTENT_TYPE, "application/json");
        Body::from("{}")
    };
    let resp = router(st.clone())
        .oneshot(b.body(body).expect("request"))
        .await
        .expect("response");
    let code = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

fn session(st: &AppState, user: &str) -> Cred {
    let (sid, csrf) = st.auth.new_session(user).expect("session");
    Cred {
        cookie: Some(sid),
        csrf: Some(csrf),
        bearer: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_guarded() {
    let f = fixture();
    let st = &f.state;
    let code = st.auth.setup_code().expect("setup pending");
    st.auth
        .setup("admin", "correct horse battery", &code)
        .await
        .expect("setup");
    st.auth
        .create_user("watcher", "staple battery horse", Role::Viewer)
        .await
        .expect("viewer");
    let (admin_token, _) = st
        .auth
        .create_token("ci", Role::Admin, "admin")
        .expect("token");
    let none = Cred {
        cookie: None,
        csrf: None,
        bearer: None,
    };
    let table = route_table();
    assert!(table.len() > 40, "the table has {} routes", table.len());
    for r in table {
        let path = concrete(r.path);
        let what = format!("{} {}", r.method, r.path);
        let unsafe_method = !is_safe(&r.method);

        let (anon, body) = call(st, &r.method, &path, &none).await;
        match r.access {
            Access::Public => assert!(
                anon != StatusCode::UNAUTHORIZED && anon != StatusCode::FORBIDDEN,
                "{what} is public but answered {anon} without credentials: {body}"
            ),
            _ => assert_eq!(
                anon,
                StatusCode::UNAUTHORIZED,
                "{what} without credentials: {body}"
            ),
        }
        if r.access == Access::Public {
            continue;
        }

        let (viewer, body) = call(st, &r.method, &path, &session(st, "watcher")).await;
        match r.access {
            Access::Admin => {
                assert_eq!(viewer, StatusCode::FORBIDDEN, "{what} as viewer: {body}");
                assert!(body.contains("\"forbidden\""), "{what} as viewer: {body}");
            }
            _ => assert!(
                viewer != StatusCode::UNAUTHORIZED && viewer != StatusCode::FORBIDDEN,
                "{what} as viewer answered {viewer}: {body}"
            ),
        }

        let (admin, body) = call(st, &r.method, &path, &session(st, "admin")).await;
        assert!(
            admin != StatusCode::UNAUTHORIZED
                && admin != StatusCode::FORBIDDEN
                && admin != StatusCode::METHOD_NOT_ALLOWED
                && !body.contains("nothing at"),
            "{what} as admin answered {admin}: {body}"
        );

        if unsafe_method {
            let mut no_csrf = session(st, "admin");
            no_csrf.csrf = None;
            let (c, body) = call(st, &r.method, &path, &no_csrf).await;
            assert_eq!(c, StatusCode::FORBIDDEN, "{what} without CSRF: {body}");
            assert!(body.contains("\"csrf\""), "{what} without CSRF: {body}");
            let mut wrong = session(st, "admin");
            wrong.csrf = Some("forged".into());
            let (c, _) = call(st, &r.method, &path, &wrong).await;
            assert_eq!(c, StatusCode::FORBIDDEN, "{what} with a wrong CSRF token");
            // A bearer token needs no CSRF token.
            let bearer = Cred {
                cookie: None,
                csrf: None,
                bearer: Some(admin_token.clone()),
            };
            let (c, body) = call(st, &r.method, &path, &bearer).await;
            assert!(
                c != StatusCode::UNAUTHORIZED && c != StatusCode::FORBIDDEN,
                "{what} with an admin token answered {c}: {body}"
            );
        }
    }
    // A wrong token is refused even on a route a cookie would open.
    let bad = Cred {
        cookie: session(st, "admin").cookie,
        csrf: None,
        bearer: Some("ibt_nothing_wrong".into()),
    };
    let (c, _) = call(st, &Method::GET, "/api/status", &bad).await;
    assert_eq!(c, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_origin_and_redirect() {
    let f = fixture();
    let st = &f.state;
    let resp = router(st.clone())
        .oneshot(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    let h = resp.headers();
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.contains_key("strict-transport-security"));

    // Login from another origin is refused before any password check.
    let resp = router(st.clone())
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/api/login")
                .header(header::HOST, "gw.test")
                .header(header::ORIGIN, "https://evil.example")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"username":"a","password":"b"}"#))
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = redirect_router(8443)
        .oneshot(
            Request::builder()
                .uri("/dashboard?x=1")
                .header(header::HOST, "box.plant:8080")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()[header::LOCATION],
        "https://box.plant:8443/dashboard?x=1"
    );
    assert_eq!(host_without_port("[::1]:80"), "[::1]");
}
