//! Handlers of the JSON API (see `API.md`), pages and health. Access is decided before these run
//! (the guard in `mod.rs`); handlers that act for a user take the [`Principal`].

use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use ironbridge_adapters::modbus::{
    Device, DeviceConfig, Quality, Transport, Value, ValueKind, WriteError, probe,
};

use super::auth::{AuthError, Principal, PrincipalKind, Role};
use super::{
    ApiError, ApiPath, AppState, Audited, JsonBody, audit_event, clear_cookie, client_addr,
    session_cookie,
};
use crate::audit::{self, Event, Outcome, Source};

type ApiResult<T = Response> = Result<T, ApiError>;

// ---- pages, assets, health, metrics ----

fn static_response(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub async fn page(uri: Uri) -> Response {
    match super::assets::asset(uri.path()) {
        Some((ct, body)) => static_response(ct, body),
        None => ApiError::not_found("no such page").into_response(),
    }
}

pub async fn asset(uri: Uri) -> Response {
    match super::assets::asset(uri.path()) {
        Some((ct, body)) => {
            let mut r = static_response(ct, body);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        None => ApiError::not_found("no such asset").into_response(),
    }
}

pub async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(format!("nothing at {}", uri.path())).into_response()
}

/// 200 while the pipeline works (the uplink being offline is buffering, not a failure);
/// 503 when the buffer failed or a component keeps restarting.
/// Public: the status only (`ok`/`failing`), for load balancers and monitors; the problems,
/// uplink state and backlog need a signed-in user or token (they tell an attacker what is down).
pub async fn healthz(State(st): State<AppState>, p: Option<Extension<Principal>>) -> Response {
    let r = st.status.report();
    let code = if r.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if r.healthy { "ok" } else { "failing" };
    let body = if p.is_some() {
        json!({
            "status": status,
            "problems": r.problems,
            "uplink": r.uplink.state,
            "backlog_records": r.buffer.records,
        })
    } else {
        json!({ "status": status })
    };
    (code, Json(body)).into_response()
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.status.metrics() + &st.web_stats.render() + &st.audit.metrics(),
    )
        .into_response()
}

// ---- session, setup, login ----

pub async fn session(State(st): State<AppState>, p: Option<Extension<Principal>>) -> Json<Json_> {
    let setup_required = st.auth.setup_required();
    let mut v = json!({
        "setup_required": setup_required,
        "setup_code_required": setup_required,
        "authenticated": p.is_some(),
    });
    if let Some(Extension(p)) = p {
        v["user"] = p.who().into();
        v["role"] = serde_json::to_value(p.role).unwrap_or_default();
        if let PrincipalKind::Session {
            csrf,
            idle_expires_in_s,
            ..
        } = &p.kind
        {
            v["csrf_token"] = csrf.clone().into();
            v["idle_expires_in_s"] = (*idle_expires_in_s).into();
        }
    }
    Json(v)
}

#[derive(Deserialize)]
pub struct SetupBody {
    username: String,
    password: String,
    #[serde(default)]
    setup_code: String,
}

fn signed_in(user: &str, role: Role, sid: &str, csrf: &str) -> Response {
    let mut resp = Json(json!({"user": user, "role": role, "csrf_token": csrf})).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(sid));
    resp
}

pub async fn setup(
    State(st): State<AppState>,
    addr: Option<Extension<ConnectInfo<super::ClientAddr>>>,
    JsonBody(b): JsonBody<SetupBody>,
) -> ApiResult {
    let peer = client_addr(addr);
    let r = st
        .auth
        .setup(&b.username, &b.password, &b.setup_code, peer)
        .await;
    let outcome = if r.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Denied
    };
    st.audit
        .record(
            Event::new(Source::Web, b.username.clone(), "setup")
                .peer(peer)
                .target(b.username.clone())
                .outcome(outcome),
        )
        .await;
    let (user, sid, csrf) = r?;
    Ok(signed_in(&user.name, user.role, &sid, &csrf))
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(
    State(st): State<AppState>,
    addr: Option<Extension<ConnectInfo<super::ClientAddr>>>,
    JsonBody(b): JsonBody<LoginBody>,
) -> ApiResult {
    let peer = client_addr(addr);
    let r = st.auth.login(&b.username, &b.password, peer).await;
    let (action, outcome) = match &r {
        Ok(_) => ("login", Outcome::Ok),
        Err(AuthError::RateLimited(_)) => ("login_throttled", Outcome::Denied),
        Err(_) => ("login_failed", Outcome::Denied),
    };
    st.audit
        .record(
            Event::new(Source::Web, b.username.clone(), action)
                .peer(peer)
                .outcome(outcome),
        )
        .await;
    let (user, sid, csrf) = r?;
    Ok(signed_in(&user.name, user.role, &sid, &csrf))
}

pub async fn logout(State(st): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    st.auth.logout(&p);
    let mut resp = Json(json!({"ok": true})).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    resp
}

#[derive(Deserialize)]
pub struct PasswordBody {
    current: String,
    new: String,
}

pub async fn password(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    addr: Option<Extension<ConnectInfo<super::ClientAddr>>>,
    JsonBody(b): JsonBody<PasswordBody>,
) -> ApiResult {
    st.auth
        .change_password(&p, &b.current, &b.new, client_addr(addr))
        .await?;
    Ok(Json(json!({"ok": true})).into_response())
}

// ---- users and tokens ----

pub async fn users(State(st): State<AppState>) -> ApiResult {
    Ok(Json(st.auth.users()?).into_response())
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    password: String,
    #[serde(default = "viewer")]
    role: Role,
}

fn viewer() -> Role {
    Role::Viewer
}

pub async fn create_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<NewUser>,
) -> ApiResult {
    let u = st
        .auth
        .create_user(&b.username, &b.password, b.role)
        .await?;
    tracing::info!(by = %p.who(), user = %u.name, role = ?u.role, "web user created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": u.name, "role": u.role})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    role: Option<Role>,
    password: Option<String>,
}

pub async fn update_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    JsonBody(b): JsonBody<UserChange>,
) -> ApiResult {
    let u = st
        .auth
        .update_user(&name, b.role, b.password.as_deref())
        .await?;
    tracing::info!(by = %p.who(), user = %u.name, role = ?u.role, "web user changed");
    Ok(Json(u).into_response())
}

pub async fn delete_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    st.auth.delete_user(&name)?;
    tracing::info!(by = %p.who(), user = %name, "web user deleted");
    Ok(Json(json!({"ok": true})).into_response())
}

pub async fn tokens(State(st): State<AppState>) -> ApiResult {
    Ok(Json(st.auth.tokens()?).into_response())
}

#[derive(Deserialize)]
pub struct NewToken {
    name: String,
    #[serde(default = "viewer")]
    role: Role,
}

pub async fn create_token(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<NewToken>,
) -> ApiResult {
    let (token, info) = st.auth.create_token(&b.name, b.role, &p.who())?;
    tracing::info!(by = %p.who(), token = %info.name, id = %info.id, role = ?info.role, "API token created");
    let mut v = serde_json::to_value(&info).unwrap_or_default();
    v["token"] = token.into();
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn delete_token(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    st.auth.delete_token(&id)?;
    tracing::info!(by = %p.who(), %id, "API token deleted");
    Ok(Json(json!({"ok": true})).into_response())
}

// ---- status and live data ----

pub async fn status(State(st): State<AppState>) -> Response {
    Json(st.status.report()).into_response()
}

/// Every configured device (file and run-time ones) with its index in `modbus.devices`
/// (`None` for run-time devices).
pub(crate) fn device_configs(st: &AppState) -> Vec<(Option<usize>, DeviceConfig)> {
    let cfg = st.config.current();
    cfg.modbus
        .devices
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, d)| (Some(i), d))
        .chain(st.runtime_devices.iter().cloned().map(|d| (None, d)))
        .collect()
}

fn resolved(st: &AppState, name: &str) -> ApiResult<(DeviceConfig, Device)> {
    let (_, dc) = device_configs(st)
        .into_iter()
        .find(|(_, d)| d.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no device {name:?}")))?;
    let dev = dc
        .resolve("device")
        .map_err(|e| ApiError::internal(format!("device {name:?} does not validate: {e:?}")))?;
    Ok((dc, dev))
}

fn quality_parts(q: &Quality) -> (&'static str, Option<String>) {
    match q {
        Quality::Good => ("good", None),
        Quality::Stale => ("stale", None),
        Quality::Bad(r) => ("bad", Some(r.to_string())),
    }
}

fn device_json(st: &AppState, dc: &DeviceConfig) -> Json_ {
    let dev = dc.resolve("device").ok();
    let (transport, address) = match &dc.transport {
        Transport::Tcp { address } => ("tcp", address.clone()),
        Transport::Rtu { path, .. } => ("rtu", path.clone()),
    };
    let health = st
        .hub
        .health()
        .into_iter()
        .find(|h| h.device == dc.name)
        .map(|h| serde_json::to_value(h).unwrap_or_default())
        .unwrap_or(Json_::Null);
    let tags: Vec<Json_> = dc
        .tags
        .iter()
        .map(|t| {
            let writable = dev
                .as_ref()
                .and_then(|d| d.tag(&t.name))
                .is_some_and(|(_, t)| t.writable);
            let latest = st.hub.latest_tag(&dc.name, &t.name);
            let (quality, reason) = latest
                .as_ref()
                .map(|r| quality_parts(&r.quality))
                .map(|(q, r)| (Json_::from(q), r.map(Json_::from).unwrap_or(Json_::Null)))
                .unwrap_or((Json_::Null, Json_::Null));
            json!({
                "name": t.name,
                "data_type": t.data_type,
                "unit": t.unit,
                "writable": writable,
                "value": latest.as_ref().and_then(|r| r.value.clone()),
                "quality": quality,
                "reason": reason,
                "ts": latest.as_ref().map(|r| r.timestamp_ms),
            })
        })
        .collect();
    json!({
        "name": dc.name,
        "transport": transport,
        "address": address,
        "unit_id": dc.unit_id,
        "enabled": dc.enabled,
        "runtime_only": st.runtime_devices.iter().any(|d| d.name == dc.name),
        "health": health,
        "tags": tags,
    })
}

pub async fn devices(State(st): State<AppState>) -> Response {
    let v: Vec<Json_> = device_configs(&st)
        .iter()
        .map(|(_, d)| device_json(&st, d))
        .collect();
    Json(v).into_response()
}

pub async fn device(State(st): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let (_, dc) = device_configs(&st)
        .into_iter()
        .find(|(_, d)| d.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no device {name:?}")))?;
    Ok(Json(device_json(&st, &dc)).into_response())
}

#[derive(Deserialize)]
pub struct ReadBody {
    tag: String,
}

pub async fn device_read(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(b): JsonBody<ReadBody>,
) -> ApiResult {
    let (dc, dev) = resolved(&st, &name)?;
    if dev.tag(&b.tag).is_none() {
        return Err(ApiError::not_found(format!(
            "device {name:?} has no tag {:?}",
            b.tag
        )));
    }
    if matches!(dc.transport, Transport::Rtu { .. })
        && st.hub.devices().iter().any(|d| d.name == name && d.enabled)
    {
        return Err(ApiError::conflict(
            "the serial line is in use by the poller; see the tag's live value instead",
        ));
    }
    match probe::read_tag(&dev, &b.tag).await {
        Ok(r) => {
            let (quality, reason) = quality_parts(&r.quality);
            Ok(Json(json!({
                "value": r.value,
                "quality": quality,
                "reason": reason,
                "ts": r.ts,
                "raw": r.raw,
                "elapsed_ms": r.elapsed_ms,
            }))
            .into_response())
        }
        Err(probe::ProbeError::UnknownTag { .. }) => {
            Err(ApiError::not_found(format!("no tag {:?}", b.tag)))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "device_error",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize)]
pub struct WriteBody {
    tag: String,
    value: Json_,
}

/// The JSON value as the tag's value kind (scaled numeric tags take any number).
fn to_value(kind: ValueKind, v: &Json_) -> Result<Value, String> {
    let int = || {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
            .ok_or_else(|| format!("{v} is not an integer"))
    };
    let range = |n: i128, lo: i128, hi: i128| {
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range {lo}..={hi}"))
        }
    };
    Ok(match kind {
        ValueKind::Bool => match v {
            Json_::Bool(b) => Value::Bool(*b),
            Json_::Number(n) if n.as_u64() == Some(0) => Value::Bool(false),
            Json_::Number(n) if n.as_u64() == Some(1) => Value::Bool(true),
            _ => return Err(format!("{v} is not true/false")),
        },
        ValueKind::U16 => Value::U16(range(int()?, 0, u16::MAX.into())? as u16),
        ValueKind::I16 => Value::I16(range(int()?, i16::MIN.into(), i16::MAX.into())? as i16),
        ValueKind::U32 => Value::U32(range(int()?, 0, u32::MAX.into())? as u32),
        ValueKind::I32 => Value::I32(range(int()?, i32::MIN.into(), i32::MAX.into())? as i32),
        ValueKind::U64 => Value::U64(range(int()?, 0, u64::MAX.into())? as u64),
        ValueKind::I64 => Value::I64(range(int()?, i64::MIN.into(), i64::MAX.into())? as i64),
        ValueKind::F32 => {
            Value::F32(v.as_f64().ok_or_else(|| format!("{v} is not a number"))? as f32)
        }
        ValueKind::F64 => Value::F64(v.as_f64().ok_or_else(|| format!("{v} is not a number"))?),
        ValueKind::String => Value::String(
            v.as_str()
                .ok_or_else(|| format!("{v} is not a string"))?
                .to_string(),
        ),
    })
}

/// Writes one tag (operators and admins). Recorded in the audit trail with the value before
/// (the poller's latest reading), the value asked for and the result.
pub async fn device_write(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    addr: Option<Extension<ConnectInfo<super::ClientAddr>>>,
    ApiPath(name): ApiPath<String>,
    JsonBody(b): JsonBody<WriteBody>,
) -> ApiResult {
    let old = st
        .hub
        .latest_tag(&name, &b.tag)
        .and_then(|r| r.value)
        .map(|v| serde_json::to_value(v).unwrap_or(Json_::Null))
        .unwrap_or(Json_::Null);
    let r = write_tag(&st, &p, &name, &b).await;
    let (outcome, error) = match &r {
        Ok(_) => (Outcome::Ok, None),
        Err(e) if e.status.is_client_error() => (Outcome::Denied, Some(e.message.clone())),
        Err(e) => (Outcome::Failed, Some(e.message.clone())),
    };
    let peer = addr.map(|Extension(c)| c.0.0.ip());
    st.audit
        .record(
            audit_event(&p, peer, "device_write")
                .target(format!("{name}/{}", b.tag))
                .outcome(outcome)
                .detail(json!({"old": old, "new": b.value, "error": error})),
        )
        .await;
    // Marked either way, so the guard does not record the request a second time.
    let mut resp = match r {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(Audited);
    Ok(resp)
}

async fn write_tag(
    st: &AppState,
    p: &Principal,
    name: &str,
    b: &WriteBody,
) -> ApiResult<Json<Json_>> {
    let (_, dev) = resolved(st, name)?;
    let Some((_, tag)) = dev.tag(&b.tag) else {
        return Err(ApiError::not_found(format!(
            "device {name:?} has no tag {:?}",
            b.tag
        )));
    };
    if !tag.writable {
        return Err(ApiError::field(
            "tag",
            format!("tag {:?} is read-only", b.tag),
        ));
    }
    let value = to_value(tag.value_kind(), &b.value).map_err(|m| ApiError::field("value", m))?;
    tracing::info!(by = %p.who(), device = %name, tag = %b.tag, value = %b.value, "web write to a Modbus tag");
    match st.hub.write(name, &b.tag, value).await {
        Ok(o) => Ok(Json(json!({"ok": true, "verified": o.verified}))),
        Err(e) => {
            tracing::warn!(by = %p.who(), device = %name, tag = %b.tag, error = %e, "web write failed");
            Err(match e {
                WriteError::UnknownDevice(_) | WriteError::UnknownTag { .. } => {
                    ApiError::not_found(e.to_string())
                }
                WriteError::ReadOnly(_) | WriteError::Value { .. } => {
                    ApiError::field("value", e.to_string())
                }
                WriteError::Disabled(_) => ApiError::conflict(e.to_string()),
                WriteError::Stopped => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the Modbus poller is not running",
                ),
                WriteError::Device { .. } | WriteError::VerifyMismatch { .. } => {
                    ApiError::new(StatusCode::BAD_GATEWAY, "device_error", e.to_string())
                }
            })
        }
    }
}

/// `GET /api/audit`: the audit trail, filtered (`since_ms`, `until_ms`, `actor`, `action`,
/// `source`, `outcome`, `text`, `limit`), as JSON (default), `format=csv` or `format=jsonl`
/// (both as a download).
pub async fn audit_records(
    State(st): State<AppState>,
    Query(filter): Query<audit::Query>,
    Query(f): Query<AuditFormat>,
) -> ApiResult {
    let format = f.format.unwrap_or_default();
    let trail = st.audit.clone();
    let records = tokio::task::spawn_blocking(move || trail.query(&filter))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let download = |ct: &'static str, name: &'static str, body: String| {
        (
            [
                (header::CONTENT_TYPE, ct),
                (header::CONTENT_DISPOSITION, name),
            ],
            body,
        )
            .into_response()
    };
    Ok(match format.as_str() {
        "" | "json" => Json(json!({ "records": records })).into_response(),
        "csv" => download(
            "text/csv; charset=utf-8",
            "attachment; filename=\"ironbridge-audit.csv\"",
            audit::to_csv(&records),
        ),
        "jsonl" => download(
            "application/x-ndjson",
            "attachment; filename=\"ironbridge-audit.jsonl\"",
            records
                .iter()
                .filter_map(|r| serde_json::to_string(r).ok())
                .map(|l| l + "\n")
                .collect(),
        ),
        other => {
            return Err(ApiError::field(
                "format",
                format!("{other:?} is not json, csv or jsonl"),
            ));
        }
    })
}

/// `format=` of `GET /api/audit` (the filters are [`audit::Query`], from the same query string).
#[derive(Deserialize)]
pub struct AuditFormat {
    format: Option<String>,
}

pub async fn mqtt_clients(State(st): State<AppState>) -> Response {
    Json(st.clients.list()).into_response()
}

/// One connection test at a time.
static UPLINK_TEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn uplink_test(State(st): State<AppState>, JsonBody(body): JsonBody<Json_>) -> ApiResult {
    let Ok(_one) = UPLINK_TEST.try_lock() else {
        return Err(ApiError::conflict("a connection test is already running"));
    };
    let current = st.config.current().kafka.clone();
    let cfg = match body {
        Json_::Object(ref m) if m.is_empty() => current,
        Json_::Null => current,
        mut given => {
            // Secrets sent back redacted keep the saved value.
            if given.pointer("/sasl/password").and_then(Json_::as_str)
                == Some(crate::config_store::REDACTED)
                && let Some(s) = &current.sasl
            {
                given["sasl"]["password"] = s.password.clone().into();
            }
            let mut de = given;
            if let Json_::Object(m) = &mut de {
                // Fill what the form left out from the saved section.
                if let Ok(Json_::Object(saved)) = serde_json::to_value(&current) {
                    for (k, v) in saved {
                        m.entry(k).or_insert(v);
                    }
                }
            }
            serde_path_to_error::deserialize::<_, crate::uplink::UplinkConfig>(de).map_err(|e| {
                let f = e.path().to_string();
                ApiError::field(&format!("kafka.{f}"), e.into_inner().to_string())
            })?
        }
    };
    if let Err(e) = cfg.validate() {
        return Err(ApiError::field(&format!("kafka.{}", e.field), e.message));
    }
    let started = Instant::now();
    let r = crate::uplink::test_connection(&cfg, Duration::from_secs(10)).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Json(match r {
        Ok(topics) => json!({
            "ok": true,
            "message": format!("connected to {}; {} topics", cfg.bootstrap_servers.join(", "), topics.len()),
            "brokers": cfg.bootstrap_servers,
            "topics": topics,
            "elapsed_ms": elapsed_ms,
        }),
        Err(m) => json!({
            "ok": false,
            "message": m,
            "brokers": cfg.bootstrap_servers,
            "topics": [],
            "elapsed_ms": elapsed_ms,
        }),
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct LogQuery {
    lines: Option<usize>,
}

pub async fn logs(State(st): State<AppState>, Query(q): Query<LogQuery>) -> Response {
    let n = q.lines.unwrap_or(200).min(super::logs::CAPACITY);
    Json(st.logs.tail(n)).into_response()
}

pub async fn system(State(st): State<AppState>) -> Response {
    let cfg = st.config.current();
    let pending = st.config.restart_required();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(),
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        "gateway_id": cfg.gateway_id(),
        "config_path": st.config.path().map(|p| p.display().to_string()),
        "state_dir": cfg.gateway.state_dir.display().to_string(),
        "restart_required": !pending.is_empty(),
        "restart_required_sections": pending,
        "tls_fingerprint_sha256": st.tls.fingerprint(),
        "tls_certificate": st.tls.cert_path().display().to_string(),
        "tls_operator_managed": st.tls.is_operator_managed(),
    }))
    .into_response()
}

pub async fn restart(State(st): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    tracing::warn!(by = %p.who(), "restart requested through the web API");
    let _ = st.restart.send(true);
    (
        StatusCode::ACCEPTED,
        Json(json!({"ok": true, "message": "restarting"})),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CertBody {
    cert_pem: String,
    key_pem: String,
}

pub async fn put_certificate(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<CertBody>,
) -> ApiResult {
    let tls = st.tls.clone();
    let fp = tokio::task::spawn_blocking(move || tls.install(&b.cert_pem, &b.key_pem))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            super::tls::TlsError::OperatorManaged => ApiError::conflict(e.to_string()),
            super::tls::TlsError::Invalid(m) => {
                let field = if m.starts_with("key_pem") {
                    "key_pem"
                } else {
                    "cert_pem"
                };
                ApiError::field(field, m)
            }
            other => ApiError::internal(other.to_string()),
        })?;
    tracing::info!(by = %p.who(), fingerprint_sha256 = %fp, "web certificate uploaded");
    Ok(Json(json!({"ok": true, "applied": true, "fingerprint_sha256": fp})).into_response())
}
