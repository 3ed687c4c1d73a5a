//! The MQTT clients connected right now, for the web UI (`GET /api/mqtt/clients`). An entry
//! lives exactly as long as its connection; there are never more than `mqtt.max_connections`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub remote: String,
    /// `"3.1.1"` or `"5"`.
    pub protocol: &'static str,
    pub tls: bool,
    /// Milliseconds since the Unix epoch.
    pub connected_at: i64,
}

#[derive(Debug, Default)]
pub struct ClientRegistry {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, ClientInfo>>,
}

impl ClientRegistry {
    /// The connected clients, oldest connection first.
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|c| c.connected_at);
        v
    }

    /// Registers a connection until the returned guard is dropped.
    pub fn add(self: &Arc<Self>, info: ClientInfo) -> ClientEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, info);
        ClientEntry {
            id,
            registry: self.clone(),
        }
    }
}

/// Keeps a connection listed until dropped.
pub struct ClientEntry {
    id: u64,
    registry: Arc<ClientRegistry>,
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.registry
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

pub fn remote(peer: SocketAddr) -> String {
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard() {
        let r = Arc::new(ClientRegistry::default());
        let info = ClientInfo {
            client_id: "plc".into(),
            username: None,
            remote: "127.0.0.1:5000".into(),
            protocol: "5",
            tls: false,
            connected_at: 1,
        };
        let g = r.add(info.clone());
        assert_eq!(r.list(), vec![info]);
        drop(g);
        assert!(r.list().is_empty());
    }
}
