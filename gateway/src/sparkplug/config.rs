//! `[sparkplug]` table of `ironbridge.toml`.

use serde::{Deserialize, Serialize};

/// Sparkplug B: the edge node for the gateway's own Modbus devices, ingest of third-party edge
/// nodes on the embedded broker, and the command path back to the PLC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparkplugConfig {
    /// Publish the Modbus devices as a Sparkplug B edge node (NBIRTH/DBIRTH/DDATA...).
    pub enabled: bool,
    /// Sparkplug group id (`spBv1.0/<group_id>/...`).
    pub group_id: String,
    /// Edge node id. Default: the gateway id. With `upstream`, the identity of the upstream
    /// session (what the SCADA host knows).
    pub edge_node_id: String,
    /// The embedded broker's session's edge node id when `upstream` is set (one identity per
    /// live session). Default: `<edge_node_id>-local`. Without `upstream` the embedded session
    /// is `edge_node_id`.
    pub embedded_edge_node_id: String,
    /// Primary host application id; when set, births are published only while that host's
    /// STATE (`spBv1.0/STATE/<id>`, or `STATE/<id>` before 3.0) says it is online. With
    /// `upstream` it is watched on the upstream server only.
    pub primary_host_id: Option<String>,
    /// Also publish the plain JSON topics `ironbridge/modbus/<device>/<tag>` while the edge node
    /// is enabled (they are always published when it is not).
    pub json_topics: bool,
    /// Optionally also publish the edge node to an upstream MQTT server (with its own NDEATH will).
    pub upstream: Option<UpstreamConfig>,
    pub ingest: IngestConfig,
    pub commands: CommandsConfig,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            enabled: false,
            group_id: "ironbridge".into(),
            edge_node_id: String::new(),
            embedded_edge_node_id: String::new(),
            primary_host_id: None,
            json_topics: false,
            upstream: None,
            ingest: IngestConfig::default(),
            commands: CommandsConfig::default(),
        }
    }
}

impl SparkplugConfig {
    /// The embedded session's edge node id, given the effective `edge_node_id`.
    pub fn embedded_node_id(&self, edge_node_id: &str) -> String {
        match (&self.upstream, self.embedded_edge_node_id.is_empty()) {
            (None, _) => edge_node_id.to_string(),
            (Some(_), true) => format!("{edge_node_id}-local"),
            (Some(_), false) => self.embedded_edge_node_id.clone(),
        }
    }
}

/// An upstream MQTT server the edge node also publishes to. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`.
    pub server: String,
    /// Default: `ironbridge-<edge_node_id>`.
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// TLS to the upstream server.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA bundle for TLS (default: the system roots).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
    /// Store-and-forward: historical messages replayed per second after the births (live
    /// data always goes first).
    #[serde(default = "default_history_rate")]
    pub history_rate: u32,
    /// Store-and-forward: changes older than this are not replayed (counted as expired).
    #[serde(default = "default_history_max_age")]
    pub history_max_age_s: u64,
    /// Store-and-forward: at most this many buffer records are kept for replay (the oldest
    /// beyond are counted as dropped). 0 turns store-and-forward off.
    #[serde(default = "default_history_max_records")]
    pub history_max_records: u64,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("server", &self.server)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("history_rate", &self.history_rate)
            .field("history_max_age_s", &self.history_max_age_s)
            .field("history_max_records", &self.history_max_records)
            .finish()
    }
}

fn default_keep_alive() -> u16 {
    30
}

fn default_history_rate() -> u32 {
    50
}

fn default_history_max_age() -> u64 {
    7 * 24 * 3600
}

fn default_history_max_records() -> u64 {
    1_000_000
}

/// Ingest of Sparkplug B from other edge nodes publishing to the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Decode `spBv1.0/#` publishes, track births and sequence numbers.
    pub enabled: bool,
    /// Send `Node Control/Rebirth` (NCMD) to a node whose seq jumps or whose birth is unknown.
    pub request_rebirth: bool,
    /// At most one rebirth request per node in this interval.
    pub rebirth_min_interval_ms: u64,
    /// Metrics per payload beyond which a payload is counted oversize and skipped.
    pub max_metrics: usize,
    /// Sparkplug 3.0 "Reorder Timeout": after a seq jump, wait this long for the missing
    /// messages before requesting a rebirth. 0: no window, a jump requests a rebirth at once.
    pub reorder_timeout_ms: u64,
    /// Act as a Sparkplug host application with this host id: publish `spBv1.0/STATE/<host_id>`
    /// (retained, QoS 1) on the embedded broker. None: no STATE (default).
    pub host_id: Option<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            enabled: true,
            request_rebirth: true,
            rebirth_min_interval_ms: 5_000,
            max_metrics: 10_000,
            reorder_timeout_ms: 0,
            host_id: None,
        }
    }
}

/// Commands from the plant's systems back to the PLC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Kafka topic the uplink reads commands from (empty: off). Offset kept in the state store.
    pub kafka_topic: String,
    /// Kafka topic every command's result is written to (empty: log and status only).
    pub result_topic: String,
    /// Tags commands may write, as `device/tag`; `device/*` allows every writable tag of a
    /// device. Applies to Kafka commands; DCMDs on the broker may write any writable tag
    /// unless `restrict_dcmd` is set.
    pub allow: Vec<String>,
    /// Apply the allow-list to DCMDs arriving over MQTT too.
    pub restrict_dcmd: bool,
    /// Accept NCMD `Node Control/Reboot` (an orderly restart of the daemon) and offer it in the
    /// NBIRTH. Off by default: a host on the plant network must not be able to restart the
    /// gateway unless the owner decided so.
    pub allow_reboot: bool,
    /// Accept NCMD `Node Control/Next Server` on the upstream session (reconnect, a new
    /// session) and offer it in that NBIRTH. Off by default.
    pub allow_next_server: bool,
}
