//! The primary host application's STATE: parsing, ordering across reconnects, the topics.

use super::*;

/// A primary host application's `spBv1.0/STATE/<id>` payload: Sparkplug 3.0 JSON
/// (`{"online": true, "timestamp": ms}`), or the 2.2 strings `ONLINE`/`OFFLINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    pub online: bool,
    pub timestamp: Option<u64>,
}

pub fn parse_state(payload: &[u8]) -> Option<HostState> {
    #[derive(Deserialize)]
    struct Json {
        online: bool,
        timestamp: Option<u64>,
    }
    if let Ok(j) = serde_json::from_slice::<Json>(payload) {
        return Some(HostState {
            online: j.online,
            timestamp: j.timestamp,
        });
    }
    match std::str::from_utf8(payload).ok()?.trim() {
        "ONLINE" => Some(HostState {
            online: true,
            timestamp: None,
        }),
        "OFFLINE" => Some(HostState {
            online: false,
            timestamp: None,
        }),
        _ => None,
    }
}

/// Tracks the primary host: a STATE older than the last one seen is ignored (3.0). Kept for
/// the life of the edge node, across connections, so an old retained "online" cannot bring a
/// session back after a newer "offline".
#[derive(Debug, Default)]
pub struct HostTracker {
    last_ts: Option<u64>,
    pub online: bool,
}

impl HostTracker {
    /// Applies a STATE message; false (and nothing changes) when it is older than the last.
    pub fn apply(&mut self, s: HostState) -> bool {
        if let (Some(last), Some(ts)) = (self.last_ts, s.timestamp)
            && ts < last
        {
            return false;
        }
        if s.timestamp.is_some() {
            self.last_ts = s.timestamp;
        }
        self.online = s.online;
        true
    }
}

/// The topics a primary host publishes its STATE on: Sparkplug 3.0 `spBv1.0/STATE/<id>` and,
/// for hosts before 3.0 (e.g. MQTT Engine before 4.0.14), `STATE/<id>`.
pub fn state_topics(primary_host_id: Option<&str>) -> Vec<String> {
    primary_host_id
        .map(|h| {
            vec![
                Topic::State {
                    host_id: h.to_string(),
                }
                .to_string(),
                format!("STATE/{h}"),
            ]
        })
        .unwrap_or_default()
}
