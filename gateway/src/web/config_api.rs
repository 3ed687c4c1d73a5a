//! Configuration through the API: read (secrets redacted), change one section, replace the
//! whole TOML file, and the device conveniences (add/replace/delete one device, its tag list as
//! CSV). Every change goes through [`ConfigStore`](crate::config_store::ConfigStore): the file's
//! own validator, an atomic write, then live apply or `restart_required`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value};

use ironbridge_adapters::modbus::{DeviceConfig, TagConfig};

use super::auth::Principal;
use super::{ApiError, ApiPath, AppState, AuditDetail, FieldError, JsonBody, TextBody};
use crate::config_store::{REDACTED, Saved};

type ApiResult<T = Response> = Result<T, ApiError>;

/// The answer to a saved change; its audit record gets the changed sections and the
/// redacted field diff.
fn saved(s: Saved, created: bool) -> Response {
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let detail = serde_json::json!({ "sections": s.changed, "diff": s.diff });
    let mut resp = (code, Json(s)).into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    resp
}

pub async fn get_config(State(st): State<AppState>) -> Response {
    Json(st.config.redacted_json()).into_response()
}

pub async fn get_section(
    State(st): State<AppState>,
    ApiPath(section): ApiPath<String>,
) -> ApiResult {
    let all = st.config.redacted_json();
    match all.get(&section) {
        Some(v) => Ok(Json(v.clone()).into_response()),
        None => Err(ApiError::not_found(format!(
            "no configuration section {section:?} (sections: {})",
            crate::config_store::sections().join(", ")
        ))),
    }
}

/// `[mqtt.users]` values that are not PHC hashes are passwords typed into the UI: hash them.
async fn hash_mqtt_passwords(section: &mut Value) -> ApiResult<()> {
    let Some(Value::Object(users)) = section.get_mut("users") else {
        return Ok(());
    };
    for (name, v) in users.iter_mut() {
        let Some(s) = v.as_str() else { continue };
        if s == REDACTED || s.starts_with('$') {
            continue;
        }
        if s.chars().count() < 8 {
            return Err(ApiError::field(
                &format!("mqtt.users.{name}"),
                "an MQTT password must be at least 8 characters",
            ));
        }
        let pw = s.to_string();
        let hash = tokio::task::spawn_blocking(move || crate::mqtt::hash_password(&pw))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        *v = Value::String(hash);
    }
    Ok(())
}

pub async fn put_section(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(section): ApiPath<String>,
    JsonBody(mut body): JsonBody<Value>,
) -> ApiResult {
    if section == "mqtt" {
        hash_mqtt_passwords(&mut body).await?;
    }
    let s = st.config.put_section(&section, body).await?;
    tracing::info!(by = %p.who(), %section, "configuration section changed through the web API");
    Ok(saved(s, false))
}

pub async fn get_toml(State(st): State<AppState>) -> ApiResult {
    let Some(path) = st.config.path() else {
        return Err(ApiError::conflict(
            "the daemon runs without a configuration file",
        ));
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"ironbridge.toml\""),
    );
    Ok(resp)
}

pub async fn put_toml(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    TextBody(text): TextBody,
) -> ApiResult {
    // An empty file is a valid configuration (all defaults), but as an upload it is a mistake.
    if text.trim().is_empty() {
        return Err(ApiError::field("", "the uploaded configuration is empty"));
    }
    let s = st.config.put_text(text).await?;
    tracing::info!(by = %p.who(), "configuration file replaced through the web API");
    Ok(saved(s, false))
}

fn runtime_only(st: &AppState, name: &str) -> ApiResult<()> {
    if st.runtime_devices.iter().any(|d| d.name == name) {
        return Err(ApiError::conflict(format!(
            "device {name:?} exists only at run time (the demo's simulated machine) and is not in the configuration file"
        )));
    }
    Ok(())
}

fn devices_mut(v: &mut Value) -> Option<&mut Vec<Value>> {
    let modbus = v.get_mut("modbus")?.as_object_mut()?;
    modbus
        .entry("devices")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
}

fn index_of(devices: &[Value], name: &str) -> Option<usize> {
    devices
        .iter()
        .position(|d| d.get("name").and_then(Value::as_str) == Some(name))
}

pub async fn add_device(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(device): JsonBody<Value>,
) -> ApiResult {
    if let Some(name) = device.get("name").and_then(Value::as_str) {
        runtime_only(&st, name)?;
    }
    let s = st
        .config
        .update(|v| {
            devices_mut(v)
                .ok_or_else(|| vec![("modbus".to_string(), "missing".to_string())])?
                .push(device);
            Ok(())
        })
        .await?;
    tracing::info!(by = %p.who(), "Modbus device added through the web API");
    Ok(saved(s, true))
}

pub async fn put_device(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    JsonBody(device): JsonBody<Value>,
) -> ApiResult {
    runtime_only(&st, &name)?;
    let mut missing = false;
    let s = st
        .config
        .update(|v| {
            let devices = devices_mut(v)
                .ok_or_else(|| vec![("modbus".to_string(), "missing".to_string())])?;
            match index_of(devices, &name) {
                Some(i) => devices[i] = device,
                None => missing = true,
            }
            Ok(())
        })
        .await?;
    if missing {
        return Err(ApiError::not_found(format!("no device {name:?}")));
    }
    tracing::info!(by = %p.who(), device = %name, "Modbus device changed through the web API");
    Ok(saved(s, false))
}

pub async fn delete_device(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    runtime_only(&st, &name)?;
    if !st
        .config
        .current()
        .modbus
        .devices
        .iter()
        .any(|d| d.name == name)
    {
        return Err(ApiError::not_found(format!("no device {name:?}")));
    }
    let s = st
        .config
        .update(|v| {
            if let Some(devices) = devices_mut(v)
                && let Some(i) = index_of(devices, &name)
            {
                devices.remove(i);
            }
            Ok(())
        })
        .await?;
    tracing::info!(by = %p.who(), device = %name, "Modbus device deleted through the web API");
    Ok(saved(s, false))
}

/// The tag list's CSV columns, in order (see API.md).
pub const CSV_COLUMNS: &[&str] = &[
    "name",
    "area",
    "address",
    "type",
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
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Tags as CSV (header line first).
pub fn tags_to_csv(tags: &[TagConfig]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for t in tags {
        let v = serde_json::to_value(t).unwrap_or_default();
        let cells: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match v.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => csv_field(s),
                Some(other) => csv_field(&other.to_string()),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180 records (quoted fields, doubled quotes, CRLF or LF). Each record with its line.
/// CSV records, each with its 1-based line.
type Rows = Vec<(usize, Vec<String>)>;

fn parse_csv(text: &str) -> Result<Rows, (usize, String)> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push((row_line, std::mem::take(&mut row)));
                line += 1;
                row_line = line;
                any = false;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err((row_line, "unterminated quoted field".into()));
    }
    if any {
        row.push(field);
        rows.push((row_line, row));
    }
    rows.retain(|(_, r)| !(r.len() == 1 && r[0].trim().is_empty()));
    Ok(rows)
}

/// Parses a tag list; problems name the line and column.
pub fn csv_to_tags(text: &str) -> Result<Vec<Value>, Vec<FieldError>> {
    let err = |line: usize, field: &str, message: String| {
        vec![FieldError {
            field: field.to_string(),
            message,
            line: Some(line),
        }]
    };
    let rows = parse_csv(text).map_err(|(l, m)| err(l, "tags.csv", m))?;
    let mut it = rows.into_iter();
    let Some((hl, header)) = it.next() else {
        return Err(err(
            1,
            "tags.csv",
            "empty: the first line names the columns".into(),
        ));
    };
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in &header {
        if !CSV_COLUMNS.contains(&h.as_str()) {
            return Err(err(
                hl,
                "tags.csv",
                format!("unknown column {h:?} (columns: {})", CSV_COLUMNS.join(", ")),
            ));
        }
    }
    let mut tags = Vec::new();
    for (line, row) in it {
        if row.len() > header.len() {
            return Err(err(
                line,
                "tags.csv",
                format!("{} cells, {} columns", row.len(), header.len()),
            ));
        }
        let mut m = Map::new();
        for (h, cell) in header.iter().zip(row) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let value = match h.as_str() {
                "bit" | "length" => cell
                    .parse::<u64>()
                    .map(Value::from)
                    .map_err(|_| err(line, h, format!("{cell:?} is not a whole number")))?,
                "scale" | "offset" => cell
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                    .ok_or_else(|| err(line, h, format!("{cell:?} is not a number")))?,
                "deadband" => match cell
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Value::Number(n),
                    None => Value::String(cell.to_string()),
                },
                "verify_write" => match cell.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Value::Bool(true),
                    "false" | "no" | "0" => Value::Bool(false),
                    _ => return Err(err(line, h, format!("{cell:?} is not true/false"))),
                },
                _ => Value::String(cell.to_string()),
            };
            m.insert(h.clone(), value);
        }
        // Same shape check as the file (unknown values, missing columns), with the line.
        if let Err(e) = serde_json::from_value::<TagConfig>(Value::Object(m.clone())) {
            return Err(err(line, "tags.csv", e.to_string()));
        }
        tags.push(Value::Object(m));
    }
    Ok(tags)
}

fn file_device(st: &AppState, name: &str) -> ApiResult<DeviceConfig> {
    st.config
        .current()
        .modbus
        .devices
        .iter()
        .find(|d| d.name == name)
        .cloned()
        .or_else(|| st.runtime_devices.iter().find(|d| d.name == name).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no device {name:?}")))
}

pub async fn get_tags_csv(State(st): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let d = file_device(&st, &name)?;
    let mut resp = tags_to_csv(&d.tags).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(resp)
}

pub async fn put_tags_csv(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    TextBody(text): TextBody,
) -> ApiResult {
    runtime_only(&st, &name)?;
    file_device(&st, &name)?;
    let tags = csv_to_tags(&text).map_err(ApiError::invalid)?;
    let n = tags.len();
    let s = st
        .config
        .update(|v| {
            if let Some(devices) = devices_mut(v)
                && let Some(i) = index_of(devices, &name)
            {
                devices[i]["tags"] = Value::Array(tags);
            }
            Ok(())
        })
        .await?;
    tracing::info!(by = %p.who(), device = %name, tags = n, "Modbus tag list imported through the web API");
    Ok(saved(s, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_with_quotes() {
        let text = "name,address,type,unit,scale,deadband,access\r\n\"temp, oil\",40011,f32,\"deg\"\"C\",0.1,2%,read_write\nspeed,40001,u16,,,0.5,\n";
        let tags = csv_to_tags(text).expect("parse");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["name"], "temp, oil");
        assert_eq!(tags[0]["unit"], "deg\"C");
        assert_eq!(tags[0]["deadband"], "2%");
        assert_eq!(tags[1]["deadband"], 0.5);
        let parsed: Vec<TagConfig> = tags
            .into_iter()
            .map(|t| serde_json::from_value(t).expect("tag"))
            .collect();
        let out = tags_to_csv(&parsed);
        let again: Vec<TagConfig> = csv_to_tags(&out)
            .expect("reparse")
            .into_iter()
            .map(|t| serde_json::from_value(t).expect("tag"))
            .collect();
        assert_eq!(again, parsed);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = csv_to_tags("name,address,type,bit\nok,40001,u16,\nbad,40002,bit,x\n").unwrap_err();
        assert_eq!(e[0].line, Some(3));
        assert_eq!(e[0].field, "bit");
        let e = csv_to_tags("name,colour\n").unwrap_err();
        assert!(e[0].message.contains("colour"));
        let e = csv_to_tags("name,address,type\nx,1,float128\n").unwrap_err();
        assert_eq!(e[0].line, Some(2));
    }
}
