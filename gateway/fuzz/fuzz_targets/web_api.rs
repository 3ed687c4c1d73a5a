//! Request bodies (and path names) for every state-changing API route, sent through the real
//! axum router (`router(state)` with the guard, body limit and handlers) as a signed-in admin
//! with a valid CSRF token, against one gateway state (config file, sled auth, TLS, Modbus hub)
//! that lives for the whole run, so one input's changes are the next one's starting point.
//!
//! Input: byte 0 picks the route (of those below, in `route_table()` order), byte 1 is flags
//! (bits 0-1 the Content-Type: JSON, none, text/plain, text/csv; bit 2 a structured JSON value
//! generated from the rest; bit 3 the body nested in `[`…`]` as deep as byte 2 × 64; bit 4 the
//! path parameter's name from the input instead of a fixed one; bits 5-7 pick the fixed name
//! or section), the rest is the body.
//!
//! Invariants, for every input: no panic; no 5xx (a bad body is a 4xx with the API's JSON error
//! shape: `error` one of the documented codes with its documented status, `message`, `fields` as
//! documented); the configuration file on disk is still accepted by `Config::parse` (a change is
//! validated before it is written); `GET /api/status` still answers 200.
//!
//! Not fuzzed:
//! - `POST /api/devices/{name}/read`: connects to the device's address (any host, or a serial port).
//! - `POST /api/uplink/test`: connects to the Kafka brokers the body names.
//! - `POST /api/logout`, `POST /api/system/restart`: no body (and restart asks the daemon to exit).
//! - GET routes and the public pages: no body.
//!
//! Inputs naming `/dev/`, `/proc/`, `/sys/` or `/run/` (or hiding a `/` in a JSON/TOML escape)
//! are skipped: validation opens the certificate and key paths a config names, and opening a
//! FIFO blocks, a watchdog device arms it. The harness's own admin is never named in a path: the
//! status check runs as that admin.
#![no_main]

use std::sync::OnceLock;

use ironbridge::config::Config;
use ironbridge::web::route_table;
use ironbridge::web::testing::{ADMIN, Bytes, Method, StatusCode, VIEWER, WebHarness};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const EXCLUDED: &[(Method, &str)] = &[
    (Method::POST, "/api/devices/{name}/read"),
    (Method::POST, "/api/uplink/test"),
    (Method::POST, "/api/logout"),
    (Method::POST, "/api/system/restart"),
];

/// The fixed names a `{name}` parameter gets: the viewer account, the seeds' devices, nobody.
const NAMES: &[&str] = &[VIEWER, "plc1", "energy-meter-7", "nobody"];

const UNSAFE_PATHS: &[&[u8]] = &[
    b"/dev/",
    b"/proc/",
    b"/sys/",
    b"/run/",
    b"\\/",
    b"\\u002",
    b"\\U0000002",
];

/// Field names of the API's bodies and the config schema, for the structured generator.
const KEYS: &[&str] = &[
    "username",
    "password",
    "setup_code",
    "current",
    "new",
    "role",
    "name",
    "tag",
    "value",
    "cert_pem",
    "key_pem",
    "transport",
    "type",
    "address",
    "path",
    "baud",
    "unit_id",
    "enabled",
    "tags",
    "data_type",
    "bit",
    "length",
    "order",
    "scale",
    "offset",
    "unit",
    "deadband",
    "access",
    "verify_write",
    "group",
    "groups",
    "interval_ms",
    "devices",
    "bootstrap_servers",
    "routes",
    "topic",
    "sasl",
    "tls",
    "id",
    "state_dir",
    "listen",
    "session_idle_timeout_s",
    "session_absolute_timeout_s",
    "users",
    "level",
    "dir",
    "max_bytes",
];

struct Fuzz {
    rt: tokio::runtime::Runtime,
    harness: WebHarness,
    /// State-changing routes: (method, path pattern).
    routes: Vec<(Method, &'static str)>,
    sections: Vec<String>,
}

fn fuzz() -> &'static Fuzz {
    static F: OnceLock<Fuzz> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let harness = rt.block_on(WebHarness::new());
        let table = route_table();
        for (m, p) in EXCLUDED {
            assert!(
                table.iter().any(|r| r.method == m && r.path == *p),
                "excluded route {m} {p} is not in the route table any more"
            );
        }
        let routes = table
            .iter()
            .filter(|r| r.method != Method::GET && r.path.starts_with("/api/"))
            .filter(|r| !EXCLUDED.iter().any(|(m, p)| r.method == m && r.path == *p))
            .map(|r| (r.method.clone(), r.path))
            .collect();
        Fuzz {
            rt,
            harness,
            routes,
            sections: ironbridge::config_store::sections(),
        }
    })
}

/// Percent-encodes every byte but unreserved ones, so any name is a valid path segment.
fn encode(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json(u: &mut Unstructured, depth: u32) -> ArbResult<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=2)? {
            0 => Value::from(u.arbitrary::<i64>()?),
            1 => Value::from(u.arbitrary::<u64>()?),
            _ => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        },
        3 => Value::String(u.choose(KEYS)?.to_string()),
        4 => Value::String(u.arbitrary()?),
        5 => {
            let n = u.int_in_range(0..=8)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, depth - 1))
                    .collect::<ArbResult<_>>()?,
            )
        }
        _ => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=10)? {
                let k = if u.arbitrary()? {
                    u.choose(KEYS)?.to_string()
                } else {
                    u.arbitrary()?
                };
                m.insert(k, json(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// The documented status of each error code (API.md, "Errors").
fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "bad_request" => 400,
        "unauthenticated" | "bad_credentials" => 401,
        "forbidden" | "csrf" | "origin" | "bad_setup_code" => 403,
        "not_found" => 404,
        "conflict" | "setup_done" => 409,
        "too_large" => 413,
        "invalid" => 422,
        "rate_limited" => 429,
        "device_error" => 502,
        "unavailable" => 503,
        "internal" => 500,
        _ => return None,
    })
}

fn check_error(what: &str, status: StatusCode, body: &Bytes) {
    let shown = String::from_utf8_lossy(body);
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status} with a body that is not JSON ({e}): {shown}"));
    let code = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error code: {shown}"));
    assert_eq!(
        status_of(code),
        Some(status.as_u16()),
        "{what}: error {code:?} with status {status}: {shown}"
    );
    assert!(v["message"].is_string(), "{what}: no message: {shown}");
    if let Some(fields) = v.get("fields") {
        let fields = fields
            .as_array()
            .unwrap_or_else(|| panic!("{what}: fields: {shown}"));
        assert!(
            code == "invalid" && !fields.is_empty(),
            "{what}: fields: {shown}"
        );
        for f in fields {
            assert!(
                f["field"].is_string() && f["message"].is_string(),
                "{what}: {shown}"
            );
            assert!(
                f.get("line").is_none_or(Value::is_u64),
                "{what}: line: {shown}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fuzz();
    let [route, flags, rest @ ..] = data else {
        return;
    };
    let (method, pattern) = &f.routes[*route as usize % f.routes.len()];
    let (method, pattern) = (method.clone(), *pattern);
    let mut rest = rest;

    let path = match pattern.find('{') {
        None => pattern.to_string(),
        Some(open) => {
            let close = pattern.find('}').expect("a closed parameter");
            let name: Vec<u8> = if flags & 0x10 != 0 {
                let Some((&n, tail)) = rest.split_first() else {
                    return;
                };
                let n = (n as usize % 24).min(tail.len());
                let (name, tail) = tail.split_at(n);
                rest = tail;
                name.to_vec()
            } else {
                let pick = (flags >> 5) as usize;
                match &pattern[open..=close] {
                    "{section}" => f.sections[pick % f.sections.len()].clone().into_bytes(),
                    "{id}" => b"nothing".to_vec(),
                    _ => NAMES[pick % NAMES.len()].as_bytes().to_vec(),
                }
            };
            if name == ADMIN.as_bytes()
                || UNSAFE_PATHS
                    .iter()
                    .any(|u| name.windows(u.len()).any(|w| w == *u))
            {
                return;
            }
            format!(
                "{}{}{}",
                &pattern[..open],
                encode(&name),
                &pattern[close + 1..]
            )
        }
    };

    let mut body: Vec<u8> = if flags & 0x04 != 0 {
        match json(&mut Unstructured::new(rest), 12) {
            Ok(v) => serde_json::to_vec(&v).expect("a value serialises"),
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    if flags & 0x08 != 0 {
        let depth = rest.first().copied().unwrap_or(0) as usize * 64;
        body = [vec![b'['; depth], body, vec![b']'; depth]].concat();
    }
    if UNSAFE_PATHS
        .iter()
        .any(|u| body.windows(u.len()).any(|w| w == *u))
    {
        return;
    }
    let content_type = [
        Some("application/json"),
        None,
        Some("text/plain"),
        Some("text/csv"),
    ][(flags & 3) as usize];

    let what = format!("{method} {path}");
    f.rt.block_on(async {
        let h = &f.harness;
        let (status, resp) = h.request(method.clone(), &path, content_type, body).await;
        let allowed_503 = method == Method::POST && pattern == "/api/devices/{name}/write";
        if status.is_client_error() || status.is_server_error() {
            check_error(&what, status, &resp);
        }
        // The harness runs no Modbus poller: a valid write reaches it and is 503 by design.
        assert!(
            !status.is_server_error() || (allowed_503 && status == StatusCode::SERVICE_UNAVAILABLE),
            "{what}: {status}: {}",
            String::from_utf8_lossy(&resp)
        );

        let text = std::fs::read_to_string(h.config_path()).expect("the config file exists");
        if let Err(e) = Config::parse(&text, "ironbridge.toml") {
            panic!("{what} left a config that does not parse: {e}\n{text}");
        }
        let (s, resp) = h
            .request(Method::GET, "/api/status", None, Bytes::new())
            .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "after {what}: {}",
            String::from_utf8_lossy(&resp)
        );
    });
});
