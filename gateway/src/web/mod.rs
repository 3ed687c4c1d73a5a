//! The web port: HTTPS with the UI's pages, the JSON API under `/api/`, `/metrics` and
//! `/healthz`, plus a plain-HTTP listener that only redirects to HTTPS.
//!
//! Access control lives in one place: every route is added through [`Routes::add`] with its
//! [`Access`] (public, viewer, operator, admin), and the [`guard`] middleware decides every request from
//! that table — authentication (session cookie or bearer token), role, and CSRF for
//! state-changing requests made with a cookie. `tests::every_route_is_guarded` walks the table.
//! The API is documented in `API.md` beside this file.

pub mod api;
pub mod assets;
pub mod auth;
pub mod config_api;
pub mod listener;
pub mod logs;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Extension, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::audit;
use crate::config_store::{ConfigStore, StoreError};
use crate::modbus::ModbusHub;
use crate::mqtt::ClientRegistry;
use crate::status::GatewayStatus;
use ironbridge_adapters::modbus::DeviceConfig;

use self::auth::{Auth, AuthError, Principal, PrincipalKind, Role};
use self::logs::LogRing;
use self::tls::WebTls;

/// Request bodies larger than this get 413.
pub const MAX_BODY: usize = 256 * 1024;
pub const SESSION_COOKIE: &str = "ib_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Pages, assets, `/healthz`, `/api/session`, `/api/setup`, `/api/login`.
    Public,
    /// Any signed-in user or token (GET of status and configuration, own password, logout).
    Viewer,
    /// Operators and admins: writes to devices (tag writes, test reads that reach the device).
    Operator,
    /// Admins only (configuration, users, tokens, certificates, restart).
    Admin,
}

/// Everything the handlers share.
pub struct WebContext {
    pub status: GatewayStatus,
    pub hub: Arc<ModbusHub>,
    pub clients: Arc<ClientRegistry>,
    pub config: Arc<ConfigStore>,
    pub auth: Arc<Auth>,
    pub tls: Arc<WebTls>,
    pub logs: Arc<LogRing>,
    /// Devices that exist only at run time (the demo's simulated machine).
    pub runtime_devices: Vec<DeviceConfig>,
    /// Set to true to ask the daemon for an orderly restart.
    pub restart: watch::Sender<bool>,
    pub started: Instant,
    /// The listeners' counters (`/metrics`).
    pub web_stats: Arc<listener::WebStats>,
    /// The audit trail: logins, changes and device writes made here are recorded in it.
    pub audit: Arc<crate::audit::AuditTrail>,
}

pub type AppState = Arc<WebContext>;

/// One row of the access table.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// The router under construction and its access table: the only way to add a route.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<RouteSpec>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn add<H, T>(mut self, method: Method, path: &'static str, access: Access, h: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("unsupported method {method} for {path}"));
        self.router = self.router.route(path, on(filter, h));
        self.table.push(RouteSpec {
            method,
            path,
            access,
        });
        self
    }
}

/// The pages of the UI (static shells; the data comes from the API).
pub const PAGES: &[&str] = &[
    "/",
    "/setup",
    "/login",
    "/dashboard",
    "/devices",
    "/mqtt",
    "/sparkplug",
    "/uplink",
    "/buffer",
    "/system",
    "/audit",
];

fn routes() -> Routes {
    use Access::*;
    use Method as M;
    let mut r = Routes::new();
    for page in PAGES {
        r = r.add(M::GET, page, Public, api::page);
    }
    r.add(M::GET, "/assets/{*path}", Public, api::asset)
        .add(M::GET, "/healthz", Public, api::healthz)
        .add(M::GET, "/metrics", Viewer, api::metrics)
        .add(M::GET, "/api/session", Public, api::session)
        .add(M::POST, "/api/setup", Public, api::setup)
        .add(M::POST, "/api/login", Public, api::login)
        .add(M::POST, "/api/logout", Viewer, api::logout)
        .add(M::POST, "/api/password", Viewer, api::password)
        .add(M::GET, "/api/users", Admin, api::users)
        .add(M::POST, "/api/users", Admin, api::create_user)
        .add(M::PUT, "/api/users/{name}", Admin, api::update_user)
        .add(M::DELETE, "/api/users/{name}", Admin, api::delete_user)
        .add(M::GET, "/api/tokens", Admin, api::tokens)
        .add(M::POST, "/api/tokens", Admin, api::create_token)
        .add(M::DELETE, "/api/tokens/{id}", Admin, api::delete_token)
        .add(M::GET, "/api/status", Viewer, api::status)
        .add(M::GET, "/api/devices", Viewer, api::devices)
        .add(M::POST, "/api/devices", Admin, config_api::add_device)
        .add(M::GET, "/api/devices/{name}", Viewer, api::device)
        .add(M::PUT, "/api/devices/{name}", Admin, config_api::put_device)
        .add(
            M::DELETE,
            "/api/devices/{name}",
            Admin,
            config_api::delete_device,
        )
        .add(
            M::POST,
            "/api/devices/{name}/read",
            Operator,
            api::device_read,
        )
        .add(
            M::POST,
            "/api/devices/{name}/write",
            Operator,
            api::device_write,
        )
        .add(
            M::GET,
            "/api/devices/{name}/tags.csv",
            Viewer,
            config_api::get_tags_csv,
        )
        .add(
            M::PUT,
            "/api/devices/{name}/tags.csv",
            Admin,
            config_api::put_tags_csv,
        )
        .add(M::GET, "/api/mqtt/clients", Viewer, api::mqtt_clients)
        .add(M::POST, "/api/uplink/test", Admin, api::uplink_test)
        .add(M::GET, "/api/logs", Viewer, api::logs)
        .add(M::GET, "/api/audit", Admin, api::audit_records)
        .add(M::GET, "/api/system", Viewer, api::system)
        .add(M::POST, "/api/system/restart", Admin, api::restart)
        .add(M::GET, "/api/config", Viewer, config_api::get_config)
        .add(M::GET, "/api/config/toml", Admin, config_api::get_toml)
        .add(M::PUT, "/api/config/toml", Admin, config_api::put_toml)
        .add(
            M::GET,
            "/api/config/{section}",
            Viewer,
            config_api::get_section,
        )
        .add(
            M::PUT,
            "/api/config/{section}",
            Admin,
            config_api::put_section,
        )
        .add(M::PUT, "/api/web/certificate", Admin, api::put_certificate)
}

/// The access table (method, path pattern, access) of every route.
pub fn route_table() -> &'static [RouteSpec] {
    static TABLE: OnceLock<Vec<RouteSpec>> = OnceLock::new();
    TABLE.get_or_init(|| routes().table)
}

fn access_of(method: &Method, path: &str) -> Option<Access> {
    static INDEX: OnceLock<HashMap<(Method, &'static str), Access>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            route_table()
                .iter()
                .map(|r| ((r.method.clone(), r.path), r.access))
                .collect()
        })
        .get(&(method.clone(), path))
        .copied()
}

/// The HTTPS application: routes, the guard, security headers, body limit.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.web_stats.clone(),
            listener::request_timeout,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The plain-HTTP listener's application: everything redirects to the same path over HTTPS.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_without_port)
            .filter(|h| {
                !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            })
            .unwrap_or("localhost")
            .to_string();
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let location = format!("https://{host}{port}{path}");
        let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    })
}

fn host_without_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port → [v6]
        return match rest.find(']') {
            Some(i) => &h[..i + 2],
            None => h,
        };
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/metrics";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "cross-origin-opener-policy", "same-origin");
    if api {
        set(h, "cache-control", "no-store");
    }
    resp
}

/// The cookie value of `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who sent the request: a bearer token (`Err` if one is given but invalid), else a live session
/// cookie, else nobody.
fn authenticate(st: &WebContext, headers: &HeaderMap) -> Result<Option<Principal>, ()> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(())?;
        return st.auth.bearer(token).map(Some).ok_or(());
    }
    Ok(cookie(headers, SESSION_COOKIE).and_then(|sid| st.auth.session(sid)))
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The one access check: decides every routed request from the access table. Every
/// state-changing request of a signed-in user or token is recorded in the audit trail with its
/// outcome — refused here or answered by the handler — unless the handler recorded it itself
/// with more detail ([`Audited`]).
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // HEAD is served by the GET handler (without its body), so it has GET's access.
    let lookup = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let access = match &matched {
        // A path that exists with another method: as strict as possible (then 405).
        Some(p) => access_of(&lookup, p).unwrap_or(Access::Admin),
        None => Access::Admin,
    };
    let principal = match authenticate(&st, req.headers()) {
        Ok(p) => p,
        Err(()) if access == Access::Public => None,
        Err(()) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "invalid API token",
            )
            .into_response();
        }
    };
    if access == Access::Public {
        if !is_safe(&method) && !same_origin(req.headers()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin",
                "the request's Origin does not match this host",
            )
            .into_response();
        }
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        return next.run(req).await;
    }
    let Some(p) = principal else {
        // Not recorded: anyone can send these, and they must not push real records out of the
        // bounded trail.
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first (session expired or missing), or send an API token",
        )
        .into_response();
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.ip());
    let audit = (!is_safe(&method)).then(|| {
        let action = action_of(&method, matched.as_deref().unwrap_or(""));
        let mut e = audit_event(&p, peer, action).target(req.uri().path().to_string());
        e.detail = serde_json::json!({ "request": format!("{method} {}", matched.as_deref().unwrap_or("")) });
        e
    });
    let resp = match check_role_and_csrf(&p, access, &method, req.headers()) {
        Err(refusal) => refusal.into_response(),
        Ok(()) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
    };
    if let Some(mut e) = audit
        && resp.extensions().get::<Audited>().is_none()
    {
        if let Some(AuditDetail(serde_json::Value::Object(extra))) = resp.extensions().get()
            && let serde_json::Value::Object(detail) = &mut e.detail
        {
            detail.extend(extra.clone());
        }
        st.audit.record(e.outcome(outcome_of(resp.status()))).await;
    }
    resp
}

fn check_role_and_csrf(
    p: &Principal,
    access: Access,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if let PrincipalKind::Session { csrf, .. } = &p.kind
        && !is_safe(method)
    {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::ct_eq(sent.as_bytes(), csrf.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header",
            ));
        }
    }
    let needed = match access {
        Access::Admin => Some(Role::Admin),
        Access::Operator => Some(Role::Operator),
        Access::Viewer | Access::Public => None,
    };
    if let Some(role) = needed
        && !p.role.includes(role)
    {
        let message = match role {
            Role::Admin => "this needs the admin role",
            _ => "this needs the operator or admin role",
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
    }
    Ok(())
}

/// Marks a response whose handler wrote its own audit record.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Fields a handler adds to the `detail` of its request's audit record (a JSON object).
#[derive(Debug, Clone)]
pub struct AuditDetail(pub serde_json::Value);

/// The audit event of an action by `p` (from `peer`).
pub fn audit_event(p: &Principal, peer: Option<IpAddr>, action: &'static str) -> audit::Event {
    let source = match p.kind {
        PrincipalKind::Session { .. } => audit::Source::Web,
        PrincipalKind::Token { .. } => audit::Source::Api,
    };
    let mut e = audit::Event::new(source, p.who(), action);
    e.peer = peer.map(|ip| ip.to_string());
    e
}

fn outcome_of(status: StatusCode) -> audit::Outcome {
    if status.is_success() || status.is_redirection() {
        audit::Outcome::Ok
    } else if status.is_client_error() {
        audit::Outcome::Denied
    } else {
        audit::Outcome::Failed
    }
}

/// The audit action of a state-changing route.
fn action_of(method: &Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        (_, p) if p.starts_with("/api/config") => "config_change",
        ("POST", "/api/devices") | (_, "/api/devices/{name}") => "config_change",
        (_, "/api/devices/{name}/tags.csv") => "config_change",
        (_, "/api/devices/{name}/write") => "device_write",
        (_, "/api/devices/{name}/read") => "device_read",
        ("POST", "/api/users") => "user_create",
        ("PUT", "/api/users/{name}") => "user_change",
        ("DELETE", "/api/users/{name}") => "user_delete",
        ("POST", "/api/tokens") => "token_create",
        ("DELETE", "/api/tokens/{id}") => "token_delete",
        (_, "/api/web/certificate") => "certificate_change",
        (_, "/api/system/restart") => "restart",
        (_, "/api/password") => "password_change",
        (_, "/api/logout") => "logout",
        (_, "/api/uplink/test") => "uplink_test",
        _ => "change",
    }
}

/// `Origin`, when sent, must name the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .strip_prefix("https://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The peer address of a connection (inserted by [`listener::serve`] into every request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address (for throttling and the audit trail); unspecified when the request did
/// not come through [`listener::serve`] (in-process tests).
pub fn client_addr(info: Option<Extension<ConnectInfo<ClientAddr>>>) -> IpAddr {
    info.map(|Extension(c)| c.0.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// One field problem in an error response.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The API's error: `{"error": code, "message": text, "fields": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn invalid(fields: Vec<FieldError>) -> ApiError {
        let message = fields
            .iter()
            .map(|f| {
                if f.field.is_empty() {
                    f.message.clone()
                } else {
                    format!("{}: {}", f.field, f.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message,
            fields,
            retry_after: None,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
            line: None,
        }])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if !self.fields.is_empty() {
            body["fields"] = serde_json::to_value(&self.fields).unwrap_or_default();
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            AuthError::RateLimited(d) => {
                let mut a =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
                a.retry_after = Some(d.as_secs().max(1));
                a
            }
            AuthError::SetupDone => {
                ApiError::new(StatusCode::CONFLICT, "setup_done", e.to_string())
            }
            AuthError::BadSetupCode => {
                ApiError::new(StatusCode::FORBIDDEN, "bad_setup_code", e.to_string())
            }
            AuthError::Policy { field, message } => ApiError::field(field, message),
            AuthError::Conflict(m) => ApiError::conflict(m),
            AuthError::NotFound(m) => ApiError::not_found(m),
            AuthError::Invalid(m) => ApiError::bad_request(m),
            AuthError::State(_) | AuthError::Internal(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid(c) => ApiError::invalid(
                c.issues
                    .into_iter()
                    .map(|i| FieldError {
                        field: i.field,
                        message: i.message,
                        line: i.line,
                    })
                    .collect(),
            ),
            StoreError::UnknownSection(s) => {
                ApiError::not_found(format!("no configuration section {s:?}"))
            }
            StoreError::NoFile => ApiError::conflict(e.to_string()),
            StoreError::Write { .. } => ApiError::internal(e.to_string()),
        }
    }
}

/// A JSON body: size limited (413), and type errors name the field (422).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        let text = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    Err(ApiError::bad_request(format!("body is not JSON: {inner}")))
                } else {
                    Err(ApiError::field(
                        if field == "." { "" } else { &field },
                        inner.to_string(),
                    ))
                }
            }
        }
    }
}

/// A path parameter whose rejection (e.g. percent-encoded bytes that are not UTF-8) is the API's
/// JSON error, like every other error, rather than axum's plain text.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) if e.status().is_client_error() => Err(ApiError::bad_request(e.body_text())),
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// Reads a body up to [`MAX_BODY`] (413 beyond).
pub async fn read_body<S: Send + Sync>(
    req: Request<Body>,
    state: &S,
) -> Result<bytes::Bytes, ApiError> {
    bytes::Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body larger than {} KiB", MAX_BODY / 1024),
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// A text body (CSV, TOML), size limited.
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        String::from_utf8(bytes.to_vec())
            .map(TextBody)
            .map_err(|_| ApiError::bad_request("body is not UTF-8 text"))
    }
}

/// Sets the session cookie.
pub fn session_cookie(sid: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ib_session=; Path=/"))
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("ib_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Test and fuzz support only: not an API of the daemon.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
