//! The edge node's state for `/api/status`.

use super::*;

/// The edge node's state for `/api/status`.
#[derive(Default)]
pub struct NodeStatus {
    inner: Mutex<NodeReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReport {
    pub group_id: String,
    pub edge_node_id: String,
    /// The embedded session's edge node id (differs from `edge_node_id` with an upstream
    /// server).
    pub embedded_edge_node_id: String,
    pub embedded: SessionSnapshot,
    pub upstream: Option<UpstreamReport>,
}

/// The session on `[sparkplug.upstream]`, for `/api/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamReport {
    pub server: String,
    pub connected: bool,
    /// Why the last connection ended or failed (cleared on connect).
    pub last_error: Option<String>,
    /// Successful connections (each one a new session, next bdSeq).
    pub connects: u64,
    /// Connection attempts that failed (unreachable, refused, no CONNACK).
    pub connect_failures: u64,
    /// Publishes written to the connection.
    pub messages_sent: u64,
    /// Publishes that did not fit the bounded send queue (the session is then reborn).
    pub dropped_messages: u64,
    /// Store-and-forward: buffer records not yet delivered to this server (missed while there
    /// was no born session, or waiting to be replayed).
    pub history_pending: u64,
    /// Historical DDATA/NDATA published after a birth.
    pub history_replayed: u64,
    /// History older than `history_max_age_s` when its turn came (not replayed).
    pub history_expired: u64,
    /// History beyond `history_max_records`, or of a device not born at replay (not
    /// replayed).
    pub history_dropped: u64,
    pub session: SessionSnapshot,
}

impl NodeStatus {
    pub fn report(&self) -> NodeReport {
        self.inner.lock().map(|g| g.clone()).unwrap_or_default()
    }
    pub fn update(&self, f: impl FnOnce(&mut NodeReport)) {
        if let Ok(mut g) = self.inner.lock() {
            f(&mut g);
        }
    }
}

/// The edge node and its commands in `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SparkplugNodeReport {
    #[serde(flatten)]
    pub node: NodeReport,
    pub commands: crate::sparkplug::audit::AuditCounters,
    /// The most recent command results, oldest first.
    pub recent_commands: Vec<crate::sparkplug::audit::CommandRecord>,
}

impl SparkplugNodeReport {
    pub fn new(node: &NodeStatus, audit: &CommandAudit) -> SparkplugNodeReport {
        SparkplugNodeReport {
            node: node.report(),
            commands: audit.counters(),
            recent_commands: audit.recent(),
        }
    }
}
