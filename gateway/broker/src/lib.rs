//! Ironbridge's embedded MQTT broker (MQTT 3.1.1 and 5 on the same listeners).
//!
//! Contract (work in progress: see docs/decisions/0001-mqtt-broker.md):
//! - one TCP/TLS connection per client, no proxy, no protocol translation;
//! - a PUBLISH is acknowledged (PUBACK/PUBREC) only after the durable-append hook says it is
//!   durable, and only then delivered to subscribers;
//! - every byte from the network is checked by [`codec`] before anything else sees it;
//! - every map, queue and connection count is bounded by a configured limit.

pub mod codec;
pub mod message;
pub mod topic;
