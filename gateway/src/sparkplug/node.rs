//! The Sparkplug B edge node for the gateway's own Modbus devices (see `README.md` in this
//! directory, "Edge node").
//!
//! * [`NodeCore`] is the state machine of one Sparkplug session (one MQTT server): births,
//!   data by exception, device deaths and rebirths, `seq` and `bdSeq`. It is pure: it turns
//!   events into the messages to publish, so it is unit-tested without a broker.
//! * [`run`] drives a session on the embedded broker: `bdSeq` and "online" persisted in sled
//!   (the will is emulated: a run that did not end with an NDEATH gets its NDEATH published at
//!   the next start), readings from [`ModbusHub`], NCMD/DCMD and the primary host's STATE from
//!   the broker, writes through a bounded command queue, audited in [`CommandAudit`].
//! * `upstream.rs` drives a second session on an upstream MQTT server with a real MQTT will.
//!
//! Files: `machine.rs` ([`NodeCore`]), `values.rs` (Modbus values ↔ metrics), `commands.rs`
//! (NCMD/DCMD checks, writes, node controls), `host.rs` (primary host STATE), `session.rs`
//! (the persisted session record), `embedded.rs` ([`run`]), `upstream.rs`, `records.rs`
//! (buffer records back to readings for store-and-forward), `status.rs`, `validate.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ironbridge_adapters::modbus::{
    BadReason, Device, ModbusConfig, Quality, Reading, Value, ValueKind, WriteError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::audit::{CommandAudit, CommandResult, CommandSource, Outcome, Requester};
use super::config::SparkplugConfig;
use super::payload::{
    DataType, Limits, Metric, MetricValue, Payload, PropertyValue, decode_payload,
};
use super::topic::{MessageType, Topic};
use crate::clock::now_ms_u64 as now_ms;
use crate::event::Event;
use crate::modbus::ModbusHub;
use crate::mqtt::{BrokerHandle, MqttError};
use crate::state::{StateError, StateStore};

/// Name of the node control metric that asks for a rebirth (Sparkplug 3.0).
pub const REBIRTH: &str = "Node Control/Rebirth";
/// Node controls besides Rebirth (Sparkplug 3.0 names).
pub const NEXT_SERVER: &str = "Node Control/Next Server";
pub const REBOOT: &str = "Node Control/Reboot";
pub const SCAN_RATE: &str = "Node Control/Scan Rate";
/// Node metrics published by exception (NDATA).
pub const UPLINK_ONLINE: &str = "Gateway/Uplink Online";
pub const BACKLOG_RECORDS: &str = "Gateway/Backlog Records";
pub const DEVICES_ONLINE: &str = "Gateway/Modbus Devices Online";
/// `Gateway/Backlog Records` changes with every message: at most one NDATA with it per this.
pub const BACKLOG_INTERVAL_MS: u64 = 5_000;
/// Name of the birth/death sequence metric.
pub const BDSEQ: &str = "bdSeq";
/// The `Quality` property's values: Sparkplug 3.0 allows exactly these three
/// (`tck-id-payloads-propertyset-quality-value-value`: 0 bad, 192 good, 500 stale).
pub const QUALITY_GOOD: i32 = 192;
pub const QUALITY_STALE: i32 = 500;
pub const QUALITY_BAD: i32 = 0;

/// Sled tree of the edge node's sessions (`embedded`, `upstream`).
pub const STATE_TREE: &str = "sparkplug.node";

/// Readings taken from the fan-out in one go (one DDATA per device per batch).
const BATCH: usize = 512;
/// DCMD writes waiting for the Modbus poller; beyond this a command is rejected as busy.
const COMMAND_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("embedded broker: {0}")]
    Mqtt(#[from] MqttError),
    #[error("payload encoding: {0}")]
    Encode(String),
    #[error("{0}")]
    Task(String),
}

/// What the node component needs.
#[derive(Clone)]
pub struct NodeContext {
    pub config: SparkplugConfig,
    /// The effective edge node id (`sparkplug.edge_node_id`, else the gateway id): the
    /// identity of the upstream session when there is one, else of the embedded session.
    pub edge_node_id: String,
    /// The embedded session's edge node id: `edge_node_id` without an upstream server, else
    /// [`SparkplugConfig::embedded_node_id`] (one identity per live session).
    pub embedded_node_id: String,
    /// The gateway's buffer: the upstream session follows the embedded session's records in
    /// it (live data and store-and-forward).
    pub buffer: Arc<edge_buffer::Log>,
    /// Whether Modbus devices are configured: then the first births wait (up to 5 s) for the
    /// poller to start, so that the NBIRTH already lists them.
    pub expect_devices: bool,
    pub hub: Arc<ModbusHub>,
    pub broker: Arc<BrokerHandle>,
    pub state: StateStore,
    pub audit: Arc<CommandAudit>,
    pub status: Arc<NodeStatus>,
    /// The daemon's orderly restart (`Node Control/Reboot`); `None` refuses it.
    pub restart: Option<tokio::sync::watch::Sender<bool>>,
    /// Gateway values for the node metrics (uplink online, backlog); `None`: defaults.
    pub gateway_metrics: Option<Arc<dyn Fn() -> GatewayMetrics + Send + Sync>>,
}

mod commands;
mod embedded;
mod host;
mod machine;
pub mod records;
mod session;
mod status;
#[cfg(test)]
mod tests;
pub mod upstream;
mod validate;
mod values;

pub use commands::*;
pub use embedded::*;
pub use host::*;
pub use machine::*;
pub use session::*;
pub use status::*;
pub use validate::*;
pub use values::*;
