//! The running configuration: the current [`Config`] in a `watch` channel (components that can
//! apply a change live subscribe and restart themselves), the file it came from, and the one
//! write path the web API uses: validate with the file's own validator, write atomically, publish.
//!
//! A section is changed as JSON (the API's shape), turned back into a [`Config`] through serde
//! (type errors name the field, e.g. `kafka.routes[1].topic`), validated with
//! [`Config::validate`], rendered to TOML, and parsed again with [`Config::parse`] — the very
//! function `check-config` and the daemon's start use — before anything is written. The file is
//! written as a temporary file in the same directory, fsynced, renamed over the old one, and the
//! directory fsynced: a reader (or a power cut) sees the old file or the new one, never a mix.
//!
//! Comments: tables that did not change keep their text and comments (`toml_edit`); a changed
//! table is rewritten from the schema (its comments are lost, its values kept).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{Mutex, watch};

use crate::config::{Config, ConfigError, ConfigIssue};

/// What a secret looks like on GET; sending it back on PUT keeps the stored value.
pub const REDACTED: &str = "********";

/// The top-level tables of `ironbridge.toml`, in file order.
pub fn sections() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The part of a section that only a restart applies (`None`: the whole section is live).
fn live_part(section: &str, c: &Config) -> Option<Value> {
    match section {
        "gateway" => Some(v(&c.gateway.state_dir)),
        "buffer" => Some(v(&c.buffer)),
        "mqtt" => Some(v(&c.mqtt)),
        "log" => Some(v(&c.log)),
        "audit" => Some(v(&c.audit)),
        "web" => Some(serde_json::json!([
            c.web.listen,
            c.web.http_listen,
            c.web.http_redirect,
            c.web.tls_cert,
            c.web.tls_key,
            c.web.max_connections,
            c.web.max_connections_per_address
        ])),
        // The edge node restarts in-process; the ingest and the Kafka command consumer take
        // their part (and the ids they match and publish on) at start.
        "sparkplug" => Some(serde_json::json!([
            c.sparkplug.ingest,
            c.sparkplug.commands,
            c.sparkplug.group_id,
            c.sparkplug.edge_node_id,
            c.sparkplug.embedded_edge_node_id,
            c.sparkplug.upstream.is_some()
        ])),
        // kafka and modbus restart their component in-process.
        _ => None,
    }
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

/// The outcome of a saved change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saved {
    pub saved: bool,
    /// True when every changed section is in effect now.
    pub applied: bool,
    pub restart_required: bool,
    pub changed: Vec<String>,
    pub message: String,
    /// What changed, field by field, secrets redacted: for the audit trail, not the answer.
    #[serde(skip)]
    pub diff: Diff,
}

/// Changed fields between two configurations (see [`redacted_diff`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Diff {
    pub changes: Vec<FieldChange>,
    /// More fields changed than [`MAX_DIFF_FIELDS`]; only the first are listed.
    pub truncated: bool,
}

/// One changed value; `old`/`new` are `null` where the field did not exist.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    /// Dotted path: `kafka.sasl.password`, `modbus.devices[2].host`.
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// Fields a diff lists at most (an audit record stays small whatever the edit).
pub const MAX_DIFF_FIELDS: usize = 64;
/// A value longer than this (as JSON) is cut in a diff.
const MAX_DIFF_VALUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("no configuration file: the daemon was started without one")]
    NoFile,
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown configuration section {0:?}")]
    UnknownSection(String),
}

/// Cheap to share (`Arc`).
pub struct ConfigStore {
    tx: watch::Sender<Arc<Config>>,
    started: Arc<Config>,
    path: Option<PathBuf>,
    writing: Mutex<()>,
}

impl ConfigStore {
    pub fn new(config: Config, path: Option<PathBuf>) -> Arc<ConfigStore> {
        let config = Arc::new(config);
        Arc::new(ConfigStore {
            tx: watch::channel(config.clone()).0,
            started: config,
            path,
            writing: Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The configuration the daemon started with.
    pub fn started(&self) -> &Config {
        &self.started
    }

    /// Sections changed since start in a way only a restart applies.
    pub fn restart_required(&self) -> Vec<String> {
        let now = self.current();
        sections()
            .into_iter()
            .filter(|s| live_part(s, &now) != live_part(s, &self.started))
            .collect()
    }

    /// The whole configuration as JSON with secrets replaced by [`REDACTED`].
    pub fn redacted_json(&self) -> Value {
        let mut v = serde_json::to_value(&*self.current()).unwrap_or(Value::Null);
        redact(&mut v);
        v
    }

    /// Replaces one section with `value` (secrets sent as [`REDACTED`] keep their value).
    pub async fn put_section(&self, section: &str, value: Value) -> Result<Saved, StoreError> {
        if !sections().iter().any(|s| s == section) {
            return Err(StoreError::UnknownSection(section.to_string()));
        }
        self.update(|v| {
            if let Value::Object(m) = v {
                m.insert(section.to_string(), value);
            }
            Ok(())
        })
        .await
    }

    /// Changes the configuration through its JSON form: `edit` gets the current configuration
    /// (secrets in clear) and may fail with field issues.
    pub async fn update(
        &self,
        edit: impl FnOnce(&mut Value) -> Result<(), Vec<(String, String)>>,
    ) -> Result<Saved, StoreError> {
        let _w = self.writing.lock().await;
        let old = self.current();
        let old_json = serde_json::to_value(&*old).unwrap_or(Value::Null);
        let mut v = old_json.clone();
        edit(&mut v).map_err(|issues| invalid(self.name(), issues))?;
        unredact(&mut v, &old_json);
        let new: Config = serde_path_to_error::deserialize(v).map_err(|e| {
            let field = e.path().to_string();
            invalid(
                self.name(),
                vec![(
                    if field == "." { String::new() } else { field },
                    e.into_inner().to_string(),
                )],
            )
        })?;
        let issues = new.validate();
        if !issues.is_empty() {
            return Err(invalid(self.name(), issues));
        }
        let old_text = match &self.path {
            Some(p) => std::fs::read_to_string(p).ok(),
            None => None,
        };
        let text = render(old_text.as_deref(), &old, &new)
            .map_err(|m| invalid(self.name(), vec![(String::new(), m)]))?;
        self.write_and_publish(text, old).await
    }

    /// Replaces the whole file (`PUT /api/config/toml`), validated like `check-config`.
    pub async fn put_text(&self, text: String) -> Result<Saved, StoreError> {
        let _w = self.writing.lock().await;
        let old = self.current();
        self.write_and_publish(text, old).await
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into())
    }

    async fn write_and_publish(&self, text: String, old: Arc<Config>) -> Result<Saved, StoreError> {
        // The file's own parser and validator decide, exactly as at the next start.
        let parsed = Config::parse(&text, &self.name()).map_err(StoreError::Invalid)?;
        let path = self.path.clone().ok_or(StoreError::NoFile)?;
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&p, text.as_bytes()))
            .await
            .map_err(|e| StoreError::Write {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        let changed = changed_sections(&old, &parsed);
        let diff = redacted_diff(&old, &parsed);
        self.tx.send_replace(Arc::new(parsed));
        let pending = self.restart_required();
        let needs_restart: Vec<&String> = changed.iter().filter(|s| pending.contains(s)).collect();
        let applied = needs_restart.is_empty();
        let message = if changed.is_empty() {
            "saved; nothing changed".to_string()
        } else if applied {
            format!("saved and applied: {}", changed.join(", "))
        } else {
            format!(
                "saved; restart the gateway to apply {}",
                needs_restart
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        tracing::info!(file = %path.display(), changed = ?changed, restart_required = !applied, "configuration saved");
        Ok(Saved {
            saved: true,
            applied,
            restart_required: !applied,
            changed,
            message,
            diff,
        })
    }
}

/// The fields that differ between `old` and `new`, in file order, with every secret (see
/// [`redact`]) shown as [`REDACTED`] on both sides: the record says that a password changed,
/// never what it is. Arrays are compared element by element.
pub fn redacted_diff(old: &Config, new: &Config) -> Diff {
    fn cut(v: &Value) -> Value {
        let text = v.to_string();
        if text.len() <= MAX_DIFF_VALUE {
            return v.clone();
        }
        let mut end = MAX_DIFF_VALUE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Value::String(format!("{}… ({} bytes)", &text[..end], text.len()))
    }
    fn walk(path: &mut Vec<String>, field: String, a: &Value, b: &Value, out: &mut Diff) {
        if a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().collect();
                keys.extend(y.keys().filter(|k| !x.contains_key(*k)));
                for k in keys {
                    path.push(k.clone());
                    let f = if field.is_empty() {
                        k.clone()
                    } else {
                        format!("{field}.{k}")
                    };
                    let none = Value::Null;
                    walk(
                        path,
                        f,
                        x.get(k).unwrap_or(&none),
                        y.get(k).unwrap_or(&none),
                        out,
                    );
                    path.pop();
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                let none = Value::Null;
                for i in 0..x.len().max(y.len()) {
                    let f = format!("{field}[{i}]");
                    walk(
                        path,
                        f,
                        x.get(i).unwrap_or(&none),
                        y.get(i).unwrap_or(&none),
                        out,
                    );
                }
            }
            _ => {
                if out.changes.len() >= MAX_DIFF_FIELDS {
                    out.truncated = true;
                    return;
                }
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                let secret = is_secret(&p);
                let shown = |v: &Value| {
                    let mut v = v.clone();
                    if secret && !v.is_null() {
                        v = Value::String(REDACTED.into());
                    } else {
                        redact_nested(&mut v, &p);
                    }
                    cut(&v)
                };
                out.changes.push(FieldChange {
                    field,
                    old: shown(a),
                    new: shown(b),
                });
            }
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Diff::default();
    };
    let mut out = Diff::default();
    walk(&mut Vec::new(), String::new(), &a, &b, &mut out);
    out
}

/// Redacts the secrets inside `v`, a value found at `at` (an added table, e.g. a new device
/// or `[kafka.sasl]`, carries its secrets inside).
fn redact_nested(v: &mut Value, at: &[&str]) {
    let mut wrapped = v.take();
    for k in at.iter().rev() {
        let mut m = serde_json::Map::new();
        m.insert((*k).to_string(), wrapped);
        wrapped = Value::Object(m);
    }
    redact(&mut wrapped);
    for k in at {
        wrapped = match wrapped {
            Value::Object(mut m) => m.remove(*k).unwrap_or(Value::Null),
            other => other,
        };
    }
    *v = wrapped;
}

fn invalid(source_name: String, issues: Vec<(String, String)>) -> StoreError {
    StoreError::Invalid(ConfigError {
        source_name,
        issues: issues
            .into_iter()
            .map(|(field, message)| ConfigIssue {
                field,
                line: None,
                message,
            })
            .collect(),
    })
}

/// Top-level sections whose values differ.
pub fn changed_sections(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The new file text: the old file with the changed tables replaced (other tables keep their
/// comments and layout), or the whole configuration when there is no old file.
fn render(old_text: Option<&str>, old: &Config, new: &Config) -> Result<String, String> {
    let full = toml::to_string(new).map_err(|e| format!("cannot render TOML: {e}"))?;
    let Some(old_text) = old_text else {
        return Ok(full);
    };
    let Ok(mut doc) = old_text.parse::<toml_edit::DocumentMut>() else {
        return Ok(full);
    };
    let fresh = full
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| format!("rendered TOML does not parse: {e}"))?;
    for section in changed_sections(old, new) {
        match fresh.get(&section) {
            Some(item) => {
                doc.insert(&section, item.clone());
            }
            None => {
                doc.remove(&section);
            }
        }
    }
    Ok(doc.to_string())
}

/// Temporary file in the same directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o640);
        opts.mode(mode);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Secret fields: `kafka.sasl.password`, every `mqtt.users` hash, and any field whose name
/// says password/secret (e.g. a future `sparkplug` or MQTT upstream password).
fn is_secret(path: &[&str]) -> bool {
    matches!(path, ["mqtt", "users", _])
        || path
            .last()
            .is_some_and(|k| k.contains("password") || k.contains("secret"))
}

/// Replaces secret strings by [`REDACTED`].
pub fn redact(v: &mut Value) {
    fn walk(v: &mut Value, path: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    path.push(k.clone());
                    let p: Vec<&str> = path.iter().map(String::as_str).collect();
                    if child.is_string() && is_secret(&p) {
                        *child = Value::String(REDACTED.into());
                    } else {
                        walk(child, path);
                    }
                    path.pop();
                }
            }
            Value::Array(a) => {
                for child in a {
                    walk(child, path);
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new());
}

/// Puts back the stored value wherever `new` says [`REDACTED`] at the same place.
fn unredact(new: &mut Value, old: &Value) {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => {
            for (k, child) in n.iter_mut() {
                if child.as_str() == Some(REDACTED) {
                    if let Some(orig) = o.get(k) {
                        *child = orig.clone();
                    }
                } else if let Some(orig) = o.get(k) {
                    unredact(child, orig);
                }
            }
        }
        (Value::Array(n), Value::Array(o)) => {
            for (child, orig) in n.iter_mut().zip(o) {
                unredact(child, orig);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
# operator comment kept
[gateway]
id = "gw-1" # trailing comment

[kafka]
bootstrap_servers = ["127.0.0.1:9092"]
compression = "zstd"

[kafka.sasl]
mechanism = "scram-sha-512"
username = "u"
password = "p4ss"

[[kafka.routes]]
filter = "a/+/b"
topic = "t"

[[modbus.devices]]
name = "press"
transport = { type = "tcp", address = "127.0.0.1:1502" }

[[modbus.devices.tags]]
name = "temp"
address = "40011"
type = "f32"
deadband = "2%"

[[modbus.devices.tags]]
name = "speed"
address = "40001"
type = "u16"
deadband = 0.5
scale = 0.1
"#;

    #[test]
    fn json_and_toml_round_trip() {
        let c = Config::parse(FULL, "x.toml").expect("valid");
        let json = serde_json::to_value(&c).expect("json");
        let back: Config = serde_json::from_value(json).expect("from json");
        assert_eq!(back, c);
        let text = toml::to_string(&c).expect("toml");
        let again = Config::parse(&text, "y.toml").expect("rendered TOML is valid");
        assert_eq!(again, c);
    }

    #[tokio::test]
    async fn section_update_keeps_comments_secrets_and_validates() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ironbridge.toml");
        std::fs::write(&path, FULL).expect("write");
        let store = ConfigStore::new(Config::load(&path).expect("load"), Some(path.clone()));
        let shown = store.redacted_json();
        assert_eq!(shown["kafka"]["sasl"]["password"], REDACTED);
        let mut kafka = shown["kafka"].clone();
        kafka["compression"] = "gzip".into();
        let saved = store.put_section("kafka", kafka.clone()).await.expect("ok");
        assert!(saved.applied && !saved.restart_required, "{saved:?}");
        assert_eq!(
            saved.diff.changes,
            [FieldChange {
                field: "kafka.compression".into(),
                old: "zstd".into(),
                new: "gzip".into()
            }]
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("# operator comment kept"), "{text}");
        assert!(text.contains("# trailing comment"), "{text}");
        assert_eq!(
            store.current().kafka.compression,
            crate::uplink::CompressionCodec::Gzip
        );
        assert_eq!(
            store
                .current()
                .kafka
                .sasl
                .as_ref()
                .map(|s| s.password.as_str()),
            Some("p4ss")
        );

        kafka["routes"][0]["topic"] = "".into();
        let before = std::fs::read_to_string(&path).expect("read");
        match store.put_section("kafka", kafka).await {
            Err(StoreError::Invalid(e)) => {
                assert!(e.issues[0].field.starts_with("kafka.routes[0]"), "{e}")
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).expect("read"), before);

        let mut buffer = store.redacted_json()["buffer"].clone();
        buffer["max_bytes"] = "lots".into();
        match store.put_section("buffer", buffer).await {
            Err(StoreError::Invalid(e)) => assert_eq!(e.issues[0].field, "buffer.max_bytes"),
            other => panic!("expected a type error, got {other:?}"),
        }
        let mut buffer = store.redacted_json()["buffer"].clone();
        buffer["max_bytes"] = (512u64 << 20).into();
        let saved = store.put_section("buffer", buffer).await.expect("ok");
        assert!(saved.restart_required);
        assert_eq!(store.restart_required(), vec!["buffer".to_string()]);
    }

    #[test]
    fn diffs_name_fields_and_never_show_secrets() {
        let old = Config::parse(FULL, "old.toml").expect("old");
        let mut new = old.clone();
        if let Some(s) = new.kafka.sasl.as_mut() {
            s.password = "n3w secret".into();
        }
        new.mqtt
            .users
            .insert("plc9".into(), "$argon2id$v=19$secret-hash".into());
        new.gateway.id = "gw-2".into();
        let d = redacted_diff(&old, &new);
        let text = serde_json::to_string(&d).expect("json");
        assert!(
            !text.contains("n3w secret") && !text.contains("p4ss"),
            "{text}"
        );
        assert!(!text.contains("secret-hash"), "{text}");
        let field = |f: &str| d.changes.iter().find(|c| c.field == f).cloned();
        assert_eq!(
            field("gateway.id").map(|c| (c.old, c.new)),
            Some(("gw-1".into(), "gw-2".into()))
        );
        let pw = field("kafka.sasl.password").expect("password listed as changed");
        assert_eq!(
            (pw.old.as_str(), pw.new.as_str()),
            (Some(REDACTED), Some(REDACTED))
        );
        let user = field("mqtt.users.plc9").expect("new user listed");
        assert_eq!(
            (user.old, user.new),
            (Value::Null, Value::String(REDACTED.into()))
        );
        // A whole table added carries its secrets redacted too.
        let mut bare = old.clone();
        bare.kafka.sasl = None;
        let d = redacted_diff(&bare, &old);
        let text = serde_json::to_string(&d).expect("json");
        assert!(
            text.contains("kafka.sasl") && !text.contains("p4ss"),
            "{text}"
        );
        // Bounded whatever the edit.
        let mut many = old.clone();
        for i in 0..200 {
            many.mqtt.users.insert(format!("u{i}"), "h".into());
        }
        let d = redacted_diff(&old, &many);
        assert!(d.truncated && d.changes.len() == MAX_DIFF_FIELDS);
    }
}
