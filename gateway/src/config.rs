//! `/etc/ironbridge/ironbridge.toml`: one schema for the file (and later the web UI), one
//! validator, and errors that name the field and the line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use ironbridge_adapters::modbus::ModbusConfig;

use crate::mqtt::MqttConfig;
use crate::sparkplug::SparkplugConfig;
use crate::uplink::UplinkConfig;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/ironbridge/ironbridge.toml";

/// Modbus devices that exist only at run time (the `--demo` machine), registered once at
/// start before the configuration is loaded, so that validation (of the file, and of edits
/// through the web API) accepts references to them.
static RUNTIME_DEVICES: std::sync::OnceLock<Vec<ironbridge_adapters::modbus::DeviceConfig>> =
    std::sync::OnceLock::new();

/// Registers the run-time devices (first call wins; the process has one set).
pub fn register_runtime_devices(devices: Vec<ironbridge_adapters::modbus::DeviceConfig>) {
    let _ = RUNTIME_DEVICES.set(devices);
}

/// The devices given to [`register_runtime_devices`], if any.
pub fn runtime_devices() -> &'static [ironbridge_adapters::modbus::DeviceConfig] {
    RUNTIME_DEVICES.get().map(Vec::as_slice).unwrap_or_default()
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub buffer: BufferConfig,
    pub web: WebConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub kafka: UplinkConfig,
    pub modbus: ModbusConfig,
    pub sparkplug: SparkplugConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Identifies this box in every Kafka record (`gateway_id` header). Default: the host name.
    pub id: String,
    /// Buffer, sled state and TLS material live below this directory.
    pub state_dir: PathBuf,
    /// How long a graceful shutdown may take before the process exits anyway.
    pub shutdown_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: String::new(),
            state_dir: PathBuf::from("/var/lib/ironbridge"),
            shutdown_timeout_ms: 15_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    DropOldest,
    Backpressure,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    Interval,
    Never,
}

/// Sizes are written as integers (bytes) or strings such as `"1 GiB"` or `"64MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1048576, \"512 MiB\", \"1GB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Default: `<gateway.state_dir>/buffer`.
    pub dir: Option<PathBuf>,
    pub max_bytes: ByteSize,
    pub segment_bytes: ByteSize,
    pub full_policy: FullPolicy,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    pub max_record_bytes: ByteSize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: None,
            max_bytes: ByteSize(1 << 30),
            segment_bytes: ByteSize(32 << 20),
            full_policy: FullPolicy::DropOldest,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 10,
            max_record_bytes: ByteSize(4 << 20),
        }
    }
}

impl BufferConfig {
    pub fn options(&self) -> edge_buffer::Options {
        edge_buffer::Options {
            max_bytes: self.max_bytes.0,
            segment_bytes: self.segment_bytes.0,
            full_policy: match self.full_policy {
                FullPolicy::DropOldest => edge_buffer::FullPolicy::DropOldest,
                FullPolicy::Backpressure => edge_buffer::FullPolicy::Backpressure,
            },
            fsync: match self.fsync {
                FsyncPolicy::Always => edge_buffer::FsyncPolicy::Always,
                FsyncPolicy::Interval => edge_buffer::FsyncPolicy::Interval(Duration::from_millis(
                    self.fsync_interval_ms,
                )),
                FsyncPolicy::Never => edge_buffer::FsyncPolicy::Never,
            },
            max_record_bytes: u32::try_from(self.max_record_bytes.0).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The HTTPS listener: web UI, JSON API, `/metrics`, `/healthz`. `--demo`: 127.0.0.1:18443.
    pub listen: SocketAddr,
    /// A plain-HTTP listener that only redirects to HTTPS (`http_redirect = false` turns it off).
    pub http_listen: SocketAddr,
    pub http_redirect: bool,
    /// The operator's certificate chain and key (PEM). Without them the gateway uses
    /// `<gateway.state_dir>/tls/web.crt` and `web.key`: generated (self-signed) on first start,
    /// or uploaded through `PUT /api/web/certificate`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A session ends after this long without a request ...
    pub session_idle_timeout_s: u64,
    /// ... and after this long in any case.
    pub session_absolute_timeout_s: u64,
    /// Open connections at most, per listener (HTTPS, HTTP redirect); more are closed at once.
    pub max_connections: usize,
    /// Open connections at most from one address (IPv6: one /64), per listener.
    pub max_connections_per_address: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            http_redirect: true,
            tls_cert: None,
            tls_key: None,
            session_idle_timeout_s: 30 * 60,
            session_absolute_timeout_s: 12 * 3600,
            max_connections: 256,
            max_connections_per_address: 32,
        }
    }
}

/// The audit trail (`<gateway.state_dir>/audit/`): who did what, append-only, rotating.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The trail's size on disk at most, over all its files; the oldest records go first.
    pub max_bytes: ByteSize,
    /// Files the trail rotates through (at least 2).
    pub files: usize,
    /// Also forward every record, as JSON, into the buffer under this MQTT topic, so that
    /// `[[kafka.routes]]` take it to Kafka like any reading (empty: off). Such records are
    /// not delivered to MQTT subscribers.
    pub forward_topic: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: ByteSize(16 << 20),
            files: 4,
            forward_topic: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,ironbridge::uplink=debug`; `RUST_LOG` overrides.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the field, e.g. `buffer.max_bytes` or `kafka.routes[1].filter`.
    pub field: String,
    /// 1-based line in the file, where the field appears in it.
    pub line: Option<usize>,
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source_name: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match issue.line {
                Some(line) => write!(f, "{}:{}: ", self.source_name, line)?,
                None => write!(f, "{}: ", self.source_name)?,
            }
            if issue.field.is_empty() {
                write!(f, "{}", issue.message)?;
            } else {
                write!(f, "{}: {}", issue.field, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line where a dotted field path (`a.b[2].c`) is written in the document.
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut span = None;
    let mut parts = field.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, value) = table.get_key_value(name)?;
        span = Some(key.span());
        let mut value = value.get_ref();
        if let Some(i) = index {
            let DeValue::Array(items) = value else { break };
            let item = items.get(i)?;
            span = Some(item.span());
            value = item.get_ref();
        }
        match value {
            DeValue::Table(t) if parts.peek().is_some() => table = t,
            _ => break,
        }
    }
    span.map(|s| line_of_offset(text, s.start))
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            issues: vec![ConfigIssue {
                field: String::new(),
                line: None,
                message: format!("cannot read the configuration file: {e}"),
            }],
        })?;
        Config::parse(&text, &source_name)
    }

    /// Parses and validates configuration text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let fail = |issues| ConfigError {
            source_name: source_name.to_string(),
            issues,
        };
        let de = toml::de::Deserializer::parse(text).map_err(|e| {
            fail(vec![ConfigIssue {
                field: String::new(),
                line: e.span().map(|s| line_of_offset(text, s.start)),
                message: format!("TOML syntax: {}", e.message()),
            }])
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.inner();
            let line = inner
                .span()
                .map(|s| line_of_offset(text, s.start))
                .or_else(|| line_of_field(text, &field));
            fail(vec![ConfigIssue {
                field: if field == "." { String::new() } else { field },
                line,
                message: inner.message().to_string(),
            }])
        })?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(fail(
                issues
                    .into_iter()
                    .map(|(field, message)| ConfigIssue {
                        line: line_of_field(text, &field),
                        field,
                        message,
                    })
                    .collect(),
            ))
        }
    }

    /// Checks what the types cannot: returns (field, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let b = &self.buffer;
        if b.segment_bytes.0 < 4096 {
            issues.push((
                "buffer.segment_bytes".into(),
                "must be at least 4 KiB".into(),
            ));
        }
        if b.max_bytes.0 < 2 * b.segment_bytes.0 {
            issues.push((
                "buffer.max_bytes".into(),
                format!(
                    "must be at least twice buffer.segment_bytes ({} bytes), is {} bytes",
                    b.segment_bytes.0, b.max_bytes.0
                ),
            ));
        }
        if b.fsync == FsyncPolicy::Interval && b.fsync_interval_ms == 0 {
            issues.push((
                "buffer.fsync_interval_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        if b.max_record_bytes.0 == 0 || b.max_record_bytes.0 > u32::MAX as u64 {
            issues.push((
                "buffer.max_record_bytes".into(),
                "must be between 1 byte and 4 GiB".into(),
            ));
        }
        if self.gateway.shutdown_timeout_ms == 0 {
            issues.push((
                "gateway.shutdown_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        let w = &self.web;
        if w.session_idle_timeout_s == 0 {
            issues.push((
                "web.session_idle_timeout_s".into(),
                "must be greater than 0".into(),
            ));
        }
        if w.session_absolute_timeout_s < w.session_idle_timeout_s {
            issues.push((
                "web.session_absolute_timeout_s".into(),
                "must be at least web.session_idle_timeout_s".into(),
            ));
        }
        if self.audit.max_bytes.0 < 64 * 1024 || self.audit.files < 2 {
            issues.push((
                "audit.max_bytes".into(),
                "audit.max_bytes must be at least 64 KiB and audit.files at least 2".into(),
            ));
        }
        if !self.audit.forward_topic.is_empty()
            && let Err(e) = ironbridge_broker::topic::valid_topic_name(&self.audit.forward_topic)
        {
            issues.push(("audit.forward_topic".into(), e.to_string()));
        }
        if w.max_connections == 0 || w.max_connections_per_address == 0 {
            issues.push((
                "web.max_connections".into(),
                "web.max_connections and web.max_connections_per_address must be greater than 0"
                    .into(),
            ));
        }
        if w.http_redirect && w.http_listen == w.listen {
            issues.push((
                "web.http_listen".into(),
                format!("{} is also web.listen (the HTTPS port)", w.http_listen),
            ));
        }
        if w.tls_cert.is_some() != w.tls_key.is_some() {
            issues.push((
                if w.tls_cert.is_none() {
                    "web.tls_cert"
                } else {
                    "web.tls_key"
                }
                .into(),
                "web.tls_cert and web.tls_key go together".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            issues.push(("log.level".into(), format!("not a valid filter: {e}")));
        }
        for (field, reason) in self.mqtt.validate() {
            issues.push((prefixed("mqtt", &field), reason));
        }
        if let Err(e) = self.kafka.validate() {
            issues.push((prefixed("kafka", &e.field), e.message));
        }
        // Files the daemon needs at start: a missing one is a problem of this file, named here.
        let mut files: Vec<(&str, &Path)> = Vec::new();
        if let Some(tls) = &self.mqtt.tls {
            files.push(("mqtt.tls.cert", &tls.cert));
            files.push(("mqtt.tls.key", &tls.key));
        }
        if self.kafka.tls.enabled {
            let t = &self.kafka.tls;
            for (field, path) in [
                ("kafka.tls.ca_file", &t.ca_file),
                ("kafka.tls.cert_file", &t.cert_file),
                ("kafka.tls.key_file", &t.key_file),
            ] {
                if let Some(p) = path {
                    files.push((field, p));
                }
            }
        }
        if let (Some(c), Some(k)) = (&self.web.tls_cert, &self.web.tls_key) {
            files.push(("web.tls_cert", c));
            files.push(("web.tls_key", k));
        }
        for (field, path) in files {
            if let Err(e) = std::fs::File::open(path) {
                issues.push((
                    field.to_string(),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        // Run-time devices (the `--demo` machine) are not in the file but can be named in
        // `sparkplug.commands.allow`.
        let mut modbus = self.modbus.clone();
        modbus.devices.extend(runtime_devices().iter().cloned());
        issues.extend(crate::sparkplug::node::validate(
            &self.sparkplug,
            &self.gateway_id(),
            &modbus,
        ));
        issues.extend(crate::sparkplug::ingest::validate(&self.sparkplug.ingest));
        if let Err(modbus) = self.modbus.validate() {
            issues.extend(
                modbus
                    .into_iter()
                    .map(|i| (prefixed("modbus", &i.field), i.message)),
            );
        }
        issues
    }

    /// The gateway id: `gateway.id`, else the host name.
    pub fn gateway_id(&self) -> String {
        if !self.gateway.id.is_empty() {
            return self.gateway.id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ironbridge".into())
    }

    /// The Sparkplug edge node id: `sparkplug.edge_node_id`, else the gateway id.
    pub fn edge_node_id(&self) -> String {
        if self.sparkplug.edge_node_id.is_empty() {
            self.gateway_id()
        } else {
            self.sparkplug.edge_node_id.clone()
        }
    }

    pub fn buffer_dir(&self) -> PathBuf {
        self.buffer
            .dir
            .clone()
            .unwrap_or_else(|| self.gateway.state_dir.join("buffer"))
    }
}

fn prefixed(section: &str, field: &str) -> String {
    if field.starts_with(&format!("{section}.")) || field == section {
        field.to_string()
    } else {
        format!("{section}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_from_an_empty_file() {
        let c = Config::parse("", "empty.toml").expect("empty config is valid");
        assert_eq!(c.buffer.max_bytes, ByteSize(1 << 30));
        assert_eq!(c.buffer.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn type_errors_name_field_and_line() {
        let text = "[gateway]\nid = \"gw\"\n\n[buffer]\nmax_bytes = \"lots\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.issues[0].field, "buffer.max_bytes");
        assert_eq!(e.issues[0].line, Some(5));
        assert!(
            e.to_string().starts_with("x.toml:5: buffer.max_bytes:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Config::parse("[buffer]\n\nmax_byte = 5\n", "x.toml").unwrap_err();
        assert_eq!(e.issues[0].line, Some(3));
        assert!(e.to_string().contains("max_byte"), "{e}");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let text = "[buffer]\nsegment_bytes = \"64 MiB\"\nmax_bytes = \"100 MiB\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.issues[0].field, "buffer.max_bytes");
        assert_eq!(e.issues[0].line, Some(3));
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let e = Config::parse("[buffer]\nmax_bytes = = 3\n", "x.toml").unwrap_err();
        assert_eq!(e.issues[0].line, Some(2));
    }

    #[test]
    fn sparkplug_allow_may_name_the_demo_device() {
        let text = "[sparkplug]\nenabled = true\n[sparkplug.commands]\nallow = [\"sparkplug-allow-demo/*\", \"sparkplug-allow-demo/speed_setpoint\"]\n";
        // Before the run-time device exists, the name is unknown (as for any typo).
        assert!(Config::parse(text, "x.toml").is_err());
        register_runtime_devices(vec![ironbridge_adapters::modbus::sim::demo::device_config(
            "sparkplug-allow-demo",
            "127.0.0.1:502",
        )]);
        let c = Config::parse(text, "x.toml");
        assert!(c.is_ok(), "{c:?}");
    }
}
