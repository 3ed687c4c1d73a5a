//! The real web application on temporary storage, called through the real router: one fixture
//! for the unit tests (`web::tests`) and the `web_api` fuzz target (feature `fuzzing`), so both
//! exercise the same state (config file, sled-backed auth, TLS, Modbus hub, status).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use axum::http::{Method, StatusCode};
pub use bytes::Bytes;

use axum::body::Body;
use axum::http::{Request, header};
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::auth::{Auth, Role};
use super::{AppState, CSRF_HEADER, SESSION_COOKIE, WebContext, logs, router, tls};
use crate::config::Config;
use crate::config_store::ConfigStore;
use crate::modbus::ModbusHub;
use crate::mqtt::{ClientRegistry, MqttStats};
use crate::state::StateStore;
use crate::status::GatewayStatus;
use crate::uplink::UplinkStatus;

/// The first admin, created by setup.
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery";
/// A viewer account.
pub const VIEWER: &str = "watcher";
pub const VIEWER_PASSWORD: &str = "staple battery horse";
pub const OPERATOR: &str = "shift-lead";
pub const OPERATOR_PASSWORD: &str = "battery staple horse";

/// Who sends a request made with [`WebHarness::request_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Admin,
    Viewer,
    Anonymous,
}

/// Credentials sent with a request (any combination, to test the guard).
#[derive(Debug, Clone, Default)]
pub struct Cred {
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
}

/// A gateway's web state after first-boot setup: [`ADMIN`], [`OPERATOR`] and [`VIEWER`] exist.
pub struct WebHarness {
    pub state: AppState,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl WebHarness {
    pub async fn new() -> WebHarness {
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
        let store = ConfigStore::new(c.clone(), Some(path.clone()));
        let audit = Arc::new(
            crate::audit::AuditTrail::open(&dir.path().join("audit"), 1 << 20, 4).expect("audit"),
        );
        let auth = Arc::new(
            Auth::open(
                &StateStore::temporary().expect("sled"),
                store.clone(),
                Default::default(),
                audit.clone(),
            )
            .expect("auth"),
        );
        let code = auth.setup_code().expect("setup pending");
        auth.setup(
            ADMIN,
            ADMIN_PASSWORD,
            &code,
            std::net::Ipv4Addr::LOCALHOST.into(),
        )
        .await
        .expect("setup");
        auth.create_user(OPERATOR, OPERATOR_PASSWORD, Role::Operator)
            .await
            .expect("operator");
        auth.create_user(VIEWER, VIEWER_PASSWORD, Role::Viewer)
            .await
            .expect("viewer");
        let tls = Arc::new(tls::WebTls::load_or_generate(&c).expect("tls"));
        WebHarness {
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
                web_stats: Arc::default(),
                audit,
            }),
            config_path: path,
            _dir: dir,
        }
    }

    /// The configuration file the API writes.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// A new session of `user` with its CSRF token.
    pub fn session(&self, user: &str) -> Cred {
        let (sid, csrf) = self.state.auth.new_session(user).expect("session");
        Cred {
            cookie: Some(sid),
            csrf: Some(csrf),
            bearer: None,
        }
    }

    /// A request as admin (a fresh session and its CSRF token: a request that changes session
    /// timeouts or passwords cannot lock the next one out).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        self.request_as(Who::Admin, method, path, content_type, body)
            .await
    }

    pub async fn request_as(
        &self,
        who: Who,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let cred = match who {
            Who::Admin => self.session(ADMIN),
            Who::Viewer => self.session(VIEWER),
            Who::Anonymous => Cred::default(),
        };
        self.call(method, path, &cred, content_type, body).await
    }

    /// One request through the real router (Host `gw.test`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let mut b = Request::builder()
            .method(method)
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
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let resp = router(self.state.clone())
            .oneshot(b.body(Body::from(body.into())).expect("request"))
            .await
            .expect("response");
        let code = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("body");
        (code, bytes)
    }
}
