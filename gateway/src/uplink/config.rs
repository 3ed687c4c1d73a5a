//! The `[kafka]` table of `ironbridge.toml`.
//!
//! ```toml
//! [kafka]
//! bootstrap_servers = ["kafka-1.plant.example:9093", "kafka-2.plant.example:9093"]
//! gateway_id = "press-shop-gw1"          # default: the host name
//! compression = "lz4"                    # none | gzip | snappy | lz4 | zstd
//! unmatched = "forward"                  # forward (to default_topic) | drop
//! default_topic = "mqtt"
//! retained_topic = "mqtt-retained"       # optional compacted topic for retained messages
//!
//! [[kafka.routes]]
//! filter = "plant/+/temperature"
//! topic = "telemetry"
//! key = "{level[1]}"                     # see the key template syntax in `route`
//! value = "json"                         # raw | json | sparkplug_json | sparkplug_metrics
//!
//! [kafka.tls]
//! enabled = true
//! ca_file = "/etc/ironbridge/tls/kafka-ca.pem"
//! cert_file = "/etc/ironbridge/tls/gw1.pem"
//! key_file = "/etc/ironbridge/tls/gw1.key"
//!
//! [kafka.sasl]
//! mechanism = "scram-sha-512"            # plain | scram-sha-256 | scram-sha-512
//! username = "gw1"
//! password = "..."
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route::{KeyTemplate, TopicFilter};

/// Kafka uplink configuration. Every field has a default; with no `bootstrap_servers` the uplink
/// is off and the gateway only buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// `host:port` of one or more brokers. Empty: the uplink is not configured.
    pub bootstrap_servers: Vec<String>,
    /// Kafka client id sent with every request.
    pub client_id: String,
    /// Identifies this gateway in the `gateway_id` header (with `buffer_offset` it makes every
    /// record unique). Empty: the host name.
    pub gateway_id: String,
    /// The buffer consumer (cursor) name used by the uplink.
    pub consumer: String,
    pub tls: TlsConfig,
    pub sasl: Option<SaslConfig>,
    pub compression: CompressionCodec,
    /// Most buffer records read into one batch. A batch and its Kafka records (headers
    /// included, about 1 KiB per record) stay in memory until every record is acknowledged,
    /// and glibc keeps that memory for the next catch-up.
    pub batch_max_records: usize,
    /// Most payload bytes read into one batch (the batch holds at least one record).
    pub batch_max_bytes: usize,
    /// How long to wait for more records once one is available, to fill a batch.
    pub linger_ms: u64,
    /// Upper bound for the records of one produce request to one partition (approximate,
    /// uncompressed). Keep it below the broker's `message.max.bytes`.
    pub max_request_bytes: usize,
    /// A single Kafka record (key + value + headers) larger than this is dead-lettered.
    pub max_record_bytes: usize,
    /// Produce requests in flight at once per partition (1-5: the leader remembers the last
    /// five batches of an idempotent producer to recognise a resend).
    pub max_in_flight_requests: usize,
    /// Deadline for one Kafka operation (connect, metadata, produce), retries inside included.
    pub request_timeout_ms: u64,
    /// First retry delay after a failure; doubles per failure up to `retry_backoff_max_ms`, with
    /// full jitter.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// How often partition counts are refreshed from the cluster's metadata (also how often an
    /// idle uplink checks that Kafka is still reachable).
    pub metadata_refresh_ms: u64,
    /// How long a topic found missing (and not auto-created) is treated as missing before the
    /// uplink asks the cluster again. Records for it meanwhile are dead-lettered.
    pub unknown_topic_retry_ms: u64,
    /// The cursor is committed at most this often while busy (and promptly once idle).
    pub commit_interval_ms: u64,
    /// On shutdown, how long an in-flight produce may still take before the uplink gives up.
    pub shutdown_grace_ms: u64,
    /// After a restart: how many records at the end of each partition are read to find what
    /// this gateway already wrote (see the uplink README, "Resume"); 0 = resend everything
    /// after the committed cursor (at-least-once).
    pub resume_scan_records: u64,
    /// What happens to events that match no route.
    pub unmatched: Unmatched,
    /// Kafka topic for unmatched events when `unmatched = "forward"` (key: the MQTT topic,
    /// value: the payload as-is).
    pub default_topic: String,
    /// If set, retained MQTT messages are also sent to this (compacted) topic with the MQTT topic
    /// as key; an empty retained payload (MQTT's "clear retained") becomes a tombstone.
    pub retained_topic: Option<String>,
    /// Ordered routes; the first whose filter matches the MQTT topic wins.
    pub routes: Vec<RouteConfig>,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            bootstrap_servers: Vec::new(),
            client_id: "ironbridge".into(),
            gateway_id: String::new(),
            consumer: "uplink".into(),
            tls: TlsConfig::default(),
            sasl: None,
            compression: CompressionCodec::Lz4,
            batch_max_records: 2_000,
            batch_max_bytes: 1 << 20,
            linger_ms: 5,
            max_request_bytes: 1_000_000,
            max_record_bytes: 1_000_000,
            max_in_flight_requests: 5,
            request_timeout_ms: 30_000,
            retry_backoff_initial_ms: 200,
            retry_backoff_max_ms: 30_000,
            metadata_refresh_ms: 60_000,
            unknown_topic_retry_ms: 60_000,
            commit_interval_ms: 1_000,
            shutdown_grace_ms: 5_000,
            resume_scan_records: 20_000,
            unmatched: Unmatched::Forward,
            default_topic: "mqtt".into(),
            retained_topic: None,
            routes: Vec::new(),
        }
    }
}

/// `[kafka.tls]`: TLS with rustls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM file with the CA certificate(s) to trust. Unset: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Verify broker certificates against this name instead of the host in the broker address
    /// (SNI still carries the broker host).
    pub server_name: Option<String>,
}

/// `[kafka.sasl]`: SASL authentication (what rskafka supports besides OAUTHBEARER).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "plain", alias = "PLAIN")]
    Plain,
    #[serde(rename = "scram-sha-256", alias = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-512", alias = "SCRAM-SHA-512")]
    ScramSha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionCodec {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl CompressionCodec {
    pub(crate) fn to_rskafka(self) -> rskafka::client::partition::Compression {
        use rskafka::client::partition::Compression;
        match self {
            CompressionCodec::None => Compression::NoCompression,
            CompressionCodec::Gzip => Compression::Gzip,
            CompressionCodec::Snappy => Compression::Snappy,
            CompressionCodec::Lz4 => Compression::Lz4,
            CompressionCodec::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Send to `default_topic`.
    #[default]
    Forward,
    /// Drop (counted).
    Drop,
}

/// One `[[kafka.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Label for status and metrics. Default: the filter.
    #[serde(default)]
    pub name: Option<String>,
    /// MQTT topic filter (`+` one level, `#` the rest).
    pub filter: String,
    /// Kafka topic.
    pub topic: String,
    /// Key template; default `{topic}` (the MQTT topic). An empty result means no key.
    #[serde(default = "default_key")]
    pub key: String,
    #[serde(default)]
    pub value: ValueFormat,
}

fn default_key() -> String {
    "{topic}".into()
}

/// How a record's value is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// The MQTT payload as-is.
    #[default]
    Raw,
    /// A JSON envelope: topic, qos, retain, timestamp, client id, content type, user properties
    /// and the payload as UTF-8 text or base64 (see `route::envelope`).
    Json,
    /// Sparkplug B decoded to JSON, one record per message: group, edge node, device, message
    /// type, seq, timestamp and the metrics with names (aliases resolved), datatypes, values,
    /// timestamps and quality (see `uplink::sparkplug`). Other payloads on such a route are
    /// sent as with `raw`.
    #[serde(rename = "sparkplug_json")]
    SparkplugJson,
    /// Like `sparkplug_json`, but one record per metric.
    #[serde(rename = "sparkplug_metrics")]
    SparkplugMetrics,
}

impl ValueFormat {
    /// Whether records of this format are decoded Sparkplug.
    pub fn is_sparkplug(self) -> bool {
        matches!(
            self,
            ValueFormat::SparkplugJson | ValueFormat::SparkplugMetrics
        )
    }
}

/// A configuration error, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_kafka_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "is {} characters long, Kafka allows 249",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; Kafka topic names use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl UplinkConfig {
    /// Whether the uplink is configured at all.
    pub fn is_enabled(&self) -> bool {
        !self.bootstrap_servers.is_empty()
    }

    /// `gateway_id`, or the host name when that is empty.
    pub fn effective_gateway_id(&self) -> String {
        if !self.gateway_id.is_empty() {
            return self.gateway_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ironbridge".into())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks every field; errors name the field as `kafka.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, s) in self.bootstrap_servers.iter().enumerate() {
            let field = format!("kafka.bootstrap_servers[{i}]");
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(ConfigError::new(field, format!("{s:?} is not host:port")));
            };
            if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
                return Err(ConfigError::new(field, format!("{s:?} is not host:port")));
            }
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::new("kafka.client_id", "must not be empty"));
        }
        if !self
            .consumer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.consumer.is_empty()
            || self.consumer.len() > 64
        {
            return Err(ConfigError::new(
                "kafka.consumer",
                "use 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let positive: [(&str, u64); 6] = [
            ("kafka.batch_max_records", self.batch_max_records as u64),
            ("kafka.batch_max_bytes", self.batch_max_bytes as u64),
            ("kafka.max_request_bytes", self.max_request_bytes as u64),
            ("kafka.max_record_bytes", self.max_record_bytes as u64),
            ("kafka.request_timeout_ms", self.request_timeout_ms),
            (
                "kafka.retry_backoff_initial_ms",
                self.retry_backoff_initial_ms,
            ),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(field, "must be greater than 0"));
            }
        }
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms {
            return Err(ConfigError::new(
                "kafka.retry_backoff_max_ms",
                "must be at least retry_backoff_initial_ms",
            ));
        }
        if !(1..=5).contains(&self.max_in_flight_requests) {
            return Err(ConfigError::new(
                "kafka.max_in_flight_requests",
                "must be 1 to 5 (an idempotent producer's limit)",
            ));
        }
        if self.max_request_bytes > i32::MAX as usize {
            return Err(ConfigError::new("kafka.max_request_bytes", "is too large"));
        }
        if self.unmatched == Unmatched::Forward {
            valid_kafka_topic(&self.default_topic)
                .map_err(|m| ConfigError::new("kafka.default_topic", m))?;
        }
        if let Some(t) = &self.retained_topic {
            valid_kafka_topic(t).map_err(|m| ConfigError::new("kafka.retained_topic", m))?;
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::new(
                "kafka.tls.key_file",
                "cert_file and key_file must be given together",
            ));
        }
        if let Some(name) = &self.tls.server_name {
            rustls::pki_types::ServerName::try_from(name.as_str())
                .map_err(|e| ConfigError::new("kafka.tls.server_name", format!("{name:?}: {e}")))?;
        }
        if let Some(sasl) = &self.sasl
            && sasl.username.is_empty()
        {
            return Err(ConfigError::new("kafka.sasl.username", "must not be empty"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            TopicFilter::parse(&r.filter)
                .map_err(|m| ConfigError::new(format!("kafka.routes[{i}].filter"), m))?;
            valid_kafka_topic(&r.topic)
                .map_err(|m| ConfigError::new(format!("kafka.routes[{i}].topic"), m))?;
            KeyTemplate::parse(&r.key)
                .map_err(|m| ConfigError::new(format!("kafka.routes[{i}].key"), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_disabled() {
        let c = UplinkConfig::default();
        assert!(!c.is_enabled());
        c.validate().expect("defaults validate");
    }

    #[test]
    fn parses_json_with_defaults_and_rejects_unknown_fields() {
        let c: UplinkConfig = serde_json::from_str(
            r#"{"bootstrap_servers":["127.0.0.1:9092"],"compression":"zstd",
                "routes":[{"filter":"a/+/c","topic":"t1","value":"json"}],
                "sasl":{"mechanism":"SCRAM-SHA-512","username":"u","password":"p"}}"#,
        )
        .expect("parses");
        assert!(c.is_enabled());
        assert_eq!(c.compression, CompressionCodec::Zstd);
        assert_eq!(c.routes[0].key, "{topic}");
        assert_eq!(c.routes[0].value, ValueFormat::Json);
        assert_eq!(
            c.sasl.as_ref().map(|s| s.mechanism),
            Some(SaslMechanism::ScramSha512)
        );
        assert!(!format!("{:?}", c.sasl).contains("\"p\""));
        c.validate().expect("validates");
        let e = serde_json::from_str::<UplinkConfig>(r#"{"bootstrap":"x"}"#)
            .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = UplinkConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into(), "nohost".into()],
            ..Default::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("kafka.bootstrap_servers[1]".into())
        );
        c.bootstrap_servers.pop();
        c.routes.push(RouteConfig {
            name: None,
            filter: "a/#/b".into(),
            topic: "t".into(),
            key: default_key(),
            value: ValueFormat::Raw,
        });
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("kafka.routes[0].filter".into())
        );
        c.routes[0].filter = "a/#".into();
        c.routes[0].topic = "bad topic".into();
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("kafka.routes[0].topic".into())
        );
        c.routes[0].topic = "good".into();
        c.routes[0].key = "{nope}".into();
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("kafka.routes[0].key".into())
        );
        c.routes[0].key = "{level[1]}-{client_id}".into();
        c.validate().expect("valid");
        c.tls.cert_file = Some("/x.pem".into());
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("kafka.tls.key_file".into())
        );
    }

    #[test]
    fn kafka_topic_names() {
        assert!(valid_kafka_topic("plant.telemetry_v1-a").is_ok());
        assert!(valid_kafka_topic("").is_err());
        assert!(valid_kafka_topic("..").is_err());
        assert!(valid_kafka_topic("a/b").is_err());
        assert!(valid_kafka_topic(&"x".repeat(250)).is_err());
    }
}
