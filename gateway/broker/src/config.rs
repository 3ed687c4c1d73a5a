//! `[mqtt]` table of `ironbridge.toml`: listeners, accounts, topic rules and every limit.
//! Field by field reference: gateway/src/mqtt/README.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::acl::AclRule;

/// The embedded MQTT broker (MQTT 3.1.1 and 5 on every listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain TCP listener. `--demo` uses 127.0.0.1:11883.
    pub listen: SocketAddr,
    /// Optional TLS listener; off unless this table is present.
    pub tls: Option<TlsListenerConfig>,
    /// Accept clients that send no user name. Clients that do send one are always checked.
    pub allow_anonymous: bool,
    /// User name → argon2id PHC hash (`ironbridge hash-password`).
    pub users: BTreeMap<String, String>,
    /// Topic rules, first match wins; see [`crate::acl`].
    pub acl: Vec<AclRule>,
    /// A client that logs in with a user name must use a client id equal to it or starting
    /// with it (refused with "client identifier not valid" otherwise).
    pub client_id_prefix_user: bool,
    /// Largest PUBLISH payload accepted; a larger packet closes the connection unacknowledged.
    /// Keep it below the buffer's `max_record_bytes` minus 70 KiB (topic and properties).
    pub max_payload_bytes: usize,
    /// Longest topic name or filter accepted (the protocol allows 65,535 bytes).
    pub max_topic_bytes: usize,
    /// Sockets served at once, counting those that have not sent CONNECT yet; one more is
    /// refused ("server busy" when its CONNECT can still be read, otherwise closed).
    pub max_connections: usize,
    /// The same, per client IP address (IPv6: per /64).
    pub max_connections_per_address: usize,
    /// Time a new socket has to complete TLS and send its whole CONNECT.
    pub connect_timeout_ms: u64,
    /// Largest CONNECT packet (client id, credentials, will) accepted.
    pub max_connect_bytes: usize,
    /// CONNECTs that may wait for a password check; one more is refused "server busy".
    pub auth_queue: usize,
    /// Longest a CONNECT waits for its password check before "server busy".
    pub auth_timeout_ms: u64,
    /// QoS 1/2 publishes of one client that may wait for their PUBACK/PUBREC (the MQTT 5
    /// receive maximum the broker announces; 3.1.1 clients are simply not read from meanwhile).
    pub max_unacked_per_client: usize,
    /// QoS 1/2 messages sent to one client and not yet acknowledged by it (capped by the
    /// client's own receive maximum).
    pub max_inflight_messages: usize,
    /// Longest keep-alive granted; clients asking for more, or for none (0), get this one
    /// (MQTT 5: as server keep alive in the CONNACK).
    pub max_keep_alive_s: u16,
    /// Topic filters one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Topic aliases a client may use towards the broker (MQTT 5; 0 = none).
    pub topic_alias_maximum: u16,
    /// Retained messages kept, and their total size.
    pub max_retained_messages: usize,
    pub max_retained_bytes: usize,
    /// Sessions kept (connected or waiting for their client to return).
    pub max_sessions: usize,
    /// Longest a session outlives its connection (caps the client's session expiry interval;
    /// an MQTT 3.1.1 `clean session = 0` session gets exactly this).
    pub max_session_expiry_s: u32,
    /// Messages queued for one session (offline, or beyond its in-flight window), and their
    /// size; further messages for it are dropped and counted.
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Size of everything queued for all sessions together.
    pub max_queued_bytes_total: usize,
    /// Ignored: the in-memory router of earlier versions (rumqttd). Accepted so that older
    /// configuration files still load.
    #[serde(skip_serializing)]
    pub router: Option<toml_compat::Ignored>,
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
            acl: Vec::new(),
            client_id_prefix_user: false,
            max_payload_bytes: 1 << 20,
            max_topic_bytes: 4096,
            max_connections: 512,
            max_connections_per_address: 64,
            connect_timeout_ms: 10_000,
            max_connect_bytes: 64 << 10,
            auth_queue: 16,
            auth_timeout_ms: 5_000,
            max_unacked_per_client: 512,
            max_inflight_messages: 64,
            max_keep_alive_s: 300,
            max_subscriptions_per_client: 256,
            topic_alias_maximum: 32,
            max_retained_messages: 10_000,
            max_retained_bytes: 16 << 20,
            max_sessions: 1024,
            max_session_expiry_s: 86_400,
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 20,
            max_queued_bytes_total: 32 << 20,
            router: None,
        }
    }
}

/// Room for the topic and MQTT 5 properties around the payload.
pub const PACKET_OVERHEAD: usize = 70 * 1024;

impl MqttConfig {
    /// Largest MQTT packet (remaining length) read from a client.
    pub fn max_packet_bytes(&self) -> usize {
        self.max_payload_bytes + PACKET_OVERHEAD
    }

    /// Every problem of the table as (field below `mqtt.`, reason); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, reason: String| issues.push((field.to_string(), reason));
        let mut range = |field: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                bad(field, format!("must be between {min} and {max}"));
            }
        };
        range(
            "max_payload_bytes",
            self.max_payload_bytes as u64,
            1,
            256 << 20,
        );
        range("max_topic_bytes", self.max_topic_bytes as u64, 16, 65_535);
        range("max_connections", self.max_connections as u64, 1, 65_536);
        range(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
            1,
            65_536,
        );
        range("connect_timeout_ms", self.connect_timeout_ms, 1, 65_000);
        range(
            "max_connect_bytes",
            self.max_connect_bytes as u64,
            64,
            16 << 20,
        );
        range("auth_queue", self.auth_queue as u64, 1, 4096);
        range("auth_timeout_ms", self.auth_timeout_ms, 1, 600_000);
        range(
            "max_unacked_per_client",
            self.max_unacked_per_client as u64,
            1,
            65_535,
        );
        range(
            "max_inflight_messages",
            self.max_inflight_messages as u64,
            1,
            65_535,
        );
        range("max_keep_alive_s", self.max_keep_alive_s as u64, 1, 65_535);
        range(
            "max_subscriptions_per_client",
            self.max_subscriptions_per_client as u64,
            1,
            1 << 20,
        );
        range(
            "max_retained_messages",
            self.max_retained_messages as u64,
            0,
            1 << 24,
        );
        range("max_sessions", self.max_sessions as u64, 1, 1 << 20);
        range(
            "max_queued_messages",
            self.max_queued_messages as u64,
            1,
            1 << 24,
        );
        if let Some(tls) = &self.tls
            && tls.listen == self.listen
            && tls.listen.port() != 0
        {
            bad("tls.listen", format!("{} is also mqtt.listen", tls.listen));
        }
        for (user, hash) in &self.users {
            if user.is_empty() {
                bad("users", "a user name is empty".into());
            }
            if let Err(reason) = crate::auth::check_phc(hash) {
                bad(&format!("users.{user}"), reason);
            }
        }
        if let Err(errors) = crate::acl::Acl::new(&self.acl) {
            for (index, field, reason) in errors {
                bad(&format!("acl[{index}].{field}"), reason);
            }
        }
        issues
    }
}

/// Accepts and drops any TOML value (for retired fields).
pub mod toml_compat {
    use serde::{Deserialize, Deserializer};

    /// A retired field's value, ignored.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
    pub struct Ignored;

    impl<'de> Deserialize<'de> for Ignored {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
        }
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
        // Files written by earlier versions carry the retired router table.
        let old: MqttConfig =
            serde_json::from_str(r#"{"router": {"segment_bytes": 1048576}}"#).expect("router");
        assert!(old.validate().is_empty());
    }

    #[test]
    fn validation_names_every_field() {
        let mut c = MqttConfig::default();
        c.users.insert("plc".into(), "plaintext".into());
        c.max_keep_alive_s = 0;
        let issues = c.validate();
        let fields: Vec<&str> = issues.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["max_keep_alive_s", "users.plc"], "{issues:?}");
    }
}
