//! `[mqtt]` table of `ironbridge.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::MqttError;

/// The embedded MQTT endpoint (MQTT 3.1.1 and 5 on every listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain TCP listener. `--demo` uses 127.0.0.1:11883.
    pub listen: SocketAddr,
    /// Optional TLS listener; off unless this table is present.
    pub tls: Option<TlsListenerConfig>,
    /// Accept clients that send no username. Clients that do send one are always checked.
    pub allow_anonymous: bool,
    /// Username → argon2id PHC hash (`ironbridge hash-password`).
    pub users: BTreeMap<String, String>,
    /// Largest PUBLISH payload accepted; a larger one closes the connection unacknowledged.
    /// Keep it below the buffer's `max_record_bytes` minus 70 KiB (topic and properties).
    pub max_payload_bytes: usize,
    /// Client connections served at once; one more gets CONNACK "server unavailable/busy".
    pub max_connections: usize,
    /// QoS 1/2 publishes of one client that may wait for their PUBACK/PUBREC. At the limit
    /// the gateway stops reading from that client until acknowledgements went out (what
    /// MQTT 5 calls receive maximum). Bounds the router's per-client acknowledgement queue
    /// whatever the client sends.
    pub max_unacked_per_client: usize,
    /// Time a new connection has to complete TLS and send CONNECT.
    pub connect_timeout_ms: u64,
    pub router: RouterTuning,
}

/// TLS listener: PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// rumqttd's in-memory router. It only feeds local MQTT subscribers: the buffer is written
/// before the router sees a publish, so these bound memory, not durability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterTuning {
    /// Size of one in-memory commit-log segment. rumqttd keeps one log per distinct
    /// subscription filter, so memory is about filters × segment_bytes × (segment_count + 1).
    /// At least 1024 (rumqttd panics below that).
    pub segment_bytes: usize,
    /// Segments kept per filter before the oldest is dropped; a local subscriber that falls
    /// further behind than this silently skips data (rumqttd only logs "cursor jumped").
    pub segment_count: usize,
    /// Publishes handed to one QoS 0 subscriber per router pass.
    pub max_outgoing_packet_count: u64,
}

fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            tls: None,
            allow_anonymous: false,
            users: BTreeMap::new(),
            max_payload_bytes: 1 << 20,
            max_connections: 512,
            max_unacked_per_client: 512,
            connect_timeout_ms: 10_000,
            router: RouterTuning::default(),
        }
    }
}

impl Default for RouterTuning {
    fn default() -> Self {
        // 4 × 1 MiB per filter: a few seconds of a busy plant for a lagging local subscriber,
        // small enough for a 512 MiB gateway with dozens of filters.
        RouterTuning {
            segment_bytes: 1 << 20,
            segment_count: 4,
            max_outgoing_packet_count: 200,
        }
    }
}

/// Room for the topic (≤ 64 KiB) and MQTT 5 properties around the payload.
pub(crate) const PACKET_OVERHEAD: usize = 70 * 1024;

impl MqttConfig {
    /// Largest MQTT packet (remaining length) read from a client.
    pub(crate) fn max_packet_bytes(&self) -> usize {
        self.max_payload_bytes + PACKET_OVERHEAD
    }

    /// Checks values that would otherwise fail later (or make rumqttd panic). Errors name the field.
    pub fn validate(&self) -> Result<(), MqttError> {
        let bad = |field: &str, reason: String| MqttError::Config {
            field: format!("mqtt.{field}"),
            reason,
        };
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 256 << 20 {
            return Err(bad(
                "max_payload_bytes",
                "must be between 1 and 268435456".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "must be at least 1".into()));
        }
        if self.max_unacked_per_client == 0 || self.max_unacked_per_client > 65_535 {
            return Err(bad(
                "max_unacked_per_client",
                "must be between 1 and 65535".into(),
            ));
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 65_000 {
            return Err(bad(
                "connect_timeout_ms",
                "must be between 1 and 65000".into(),
            ));
        }
        if self.router.segment_bytes < 1024 {
            return Err(bad("router.segment_bytes", "must be at least 1024".into()));
        }
        if self.router.segment_count == 0 {
            return Err(bad("router.segment_count", "must be at least 1".into()));
        }
        if self.router.max_outgoing_packet_count == 0 {
            return Err(bad(
                "router.max_outgoing_packet_count",
                "must be at least 1".into(),
            ));
        }
        if let Some(tls) = &self.tls
            && tls.listen == self.listen
            && tls.listen.port() != 0
        {
            return Err(bad(
                "tls.listen",
                format!("{} is also mqtt.listen", tls.listen),
            ));
        }
        for (user, hash) in &self.users {
            if user.is_empty() {
                return Err(bad("users", "a username is empty".into()));
            }
            super::auth::check_phc(hash).map_err(|reason| bad(&format!("users.{user}"), reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: MqttConfig = serde_json::from_str("{}").expect("empty table");
        assert_eq!(c, MqttConfig::default());
        assert!(!c.allow_anonymous);
        assert_eq!(c.listen.port(), 1883);
        assert!(serde_json::from_str::<MqttConfig>(r#"{"listne": "0.0.0.0:1"}"#).is_err());
        let t: MqttConfig =
            serde_json::from_str(r#"{"tls": {"cert": "/c.pem", "key": "/k.pem"}}"#).expect("tls");
        assert_eq!(t.tls.map(|t| t.listen.port()), Some(8883));
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = MqttConfig::default();
        c.users.insert("plc".into(), "plaintext".into());
        let e = c
            .validate()
            .expect_err("plain password refused")
            .to_string();
        assert!(e.contains("mqtt.users.plc"), "{e}");
        let c = MqttConfig {
            router: RouterTuning {
                segment_bytes: 10,
                ..RouterTuning::default()
            },
            ..MqttConfig::default()
        };
        assert!(
            c.validate()
                .expect_err("tiny segment")
                .to_string()
                .contains("router.segment_bytes")
        );
    }
}
