//! An application message as the broker holds it between its durable append and its delivery:
//! shared (`Arc`) by every subscriber's queue and the retained store, never copied per subscriber.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{QoS, UserProperty};

/// One accepted PUBLISH (or will), after topic-alias resolution and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// QoS as published; each delivery uses min(this, the subscription's QoS).
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    pub payload_format_indicator: Option<u8>,
    /// When the message expires (MQTT 5 message expiry interval), measured from acceptance.
    pub expires_at: Option<Instant>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
    /// The publishing session (for no-local); `None` for in-process publishes.
    pub origin: Option<SessionKey>,
    /// Who published it, as authenticated at CONNECT; `None` for in-process publishes.
    pub publisher: Option<Arc<Publisher>>,
}

/// A network client as the broker authenticated it: one per connection, shared by its
/// messages, so that an application acting on a message (a Sparkplug command) can say who sent
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    pub client_id: String,
    /// The authenticated user name; `None` for an anonymous client.
    pub username: Option<String>,
    pub peer: SocketAddr,
}

impl Publisher {
    /// The user name, or `client:<client id>` for an anonymous client.
    pub fn actor(&self) -> String {
        match &self.username {
            Some(u) => u.clone(),
            None => format!("client:{}", self.client_id),
        }
    }
}

/// A session's identity inside the broker: a number, never a client id a network client could
/// choose, so in-process subscribers and network sessions cannot collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

impl Message {
    /// A message with only topic, payload, QoS and retain set.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            payload_format_indicator: None,
            expires_at: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            origin: None,
            publisher: None,
        }
    }

    /// Whether the message expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Bytes this message holds, for the retained store's and the session queues' byte limits.
    pub fn weight(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.response_topic.as_ref().map_or(0, String::len)
            + self.correlation_data.as_ref().map_or(0, Bytes::len)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 128
    }
}
