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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The Sparkplug datatype of a Modbus tag's readings (scaled numeric tags read as `F64`, so
/// they are Double).
pub fn datatype_of(kind: ValueKind) -> DataType {
    match kind {
        ValueKind::Bool => DataType::Boolean,
        ValueKind::U16 => DataType::UInt16,
        ValueKind::I16 => DataType::Int16,
        ValueKind::U32 => DataType::UInt32,
        ValueKind::I32 => DataType::Int32,
        ValueKind::U64 => DataType::UInt64,
        ValueKind::I64 => DataType::Int64,
        ValueKind::F32 => DataType::Float,
        ValueKind::F64 => DataType::Double,
        ValueKind::String => DataType::String,
    }
}

/// A reading's value as a Sparkplug value of [`datatype_of`] its kind.
pub fn metric_value(v: &Value) -> MetricValue {
    match v {
        Value::Bool(b) => MetricValue::Boolean(*b),
        Value::U16(x) => MetricValue::UInt16(*x),
        Value::I16(x) => MetricValue::Int16(*x),
        Value::U32(x) => MetricValue::UInt32(*x),
        Value::I32(x) => MetricValue::Int32(*x),
        Value::U64(x) => MetricValue::UInt64(*x),
        Value::I64(x) => MetricValue::Int64(*x),
        Value::F32(x) => MetricValue::Float(*x),
        Value::F64(x) => MetricValue::Double(*x),
        Value::String(s) => MetricValue::String(s.clone()),
    }
}

fn metric_json(v: &MetricValue) -> serde_json::Value {
    v.to_json()
}

/// A command value converted to the Modbus value a tag of `kind` takes: integers into integer
/// tags within the type's range (floats only when integral), any number into float tags
/// (within f32's range for f32), booleans only into boolean tags, strings only into string
/// tags. Scale/offset and the raw range are checked by the poller's write.
pub fn command_value(kind: ValueKind, v: &MetricValue) -> Result<Value, String> {
    let int: Option<i128> = match v {
        MetricValue::Int8(x) => Some((*x).into()),
        MetricValue::Int16(x) => Some((*x).into()),
        MetricValue::Int32(x) => Some((*x).into()),
        MetricValue::Int64(x) => Some((*x).into()),
        MetricValue::UInt8(x) => Some((*x).into()),
        MetricValue::UInt16(x) => Some((*x).into()),
        MetricValue::UInt32(x) => Some((*x).into()),
        MetricValue::UInt64(x) => Some((*x).into()),
        MetricValue::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38 => {
            Some(*f as i128)
        }
        MetricValue::Double(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38 => {
            Some(*f as i128)
        }
        _ => None,
    };
    let float: Option<f64> = match v {
        MetricValue::Float(f) => Some(f64::from(*f)),
        MetricValue::Double(f) => Some(*f),
        _ => int.map(|i| i as f64),
    };
    let wrong = || {
        format!(
            "a {} value cannot be written to a {} metric",
            v.datatype(),
            datatype_of(kind)
        )
    };
    let range = |i: i128| format!("{i} is out of range for {}", datatype_of(kind));
    Ok(match kind {
        ValueKind::Bool => match v {
            MetricValue::Boolean(b) => Value::Bool(*b),
            _ => return Err(wrong()),
        },
        ValueKind::String => match v {
            MetricValue::String(s) | MetricValue::Text(s) => Value::String(s.clone()),
            _ => return Err(wrong()),
        },
        ValueKind::F32 => {
            let f = float.ok_or_else(wrong)?;
            if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(format!("{f} is out of range for Float"));
            }
            Value::F32(f as f32)
        }
        ValueKind::F64 => Value::F64(float.ok_or_else(wrong)?),
        ValueKind::U16 => {
            let i = int.ok_or_else(wrong)?;
            Value::U16(u16::try_from(i).map_err(|_| range(i))?)
        }
        ValueKind::I16 => {
            let i = int.ok_or_else(wrong)?;
            Value::I16(i16::try_from(i).map_err(|_| range(i))?)
        }
        ValueKind::U32 => {
            let i = int.ok_or_else(wrong)?;
            Value::U32(u32::try_from(i).map_err(|_| range(i))?)
        }
        ValueKind::I32 => {
            let i = int.ok_or_else(wrong)?;
            Value::I32(i32::try_from(i).map_err(|_| range(i))?)
        }
        ValueKind::U64 => {
            let i = int.ok_or_else(wrong)?;
            Value::U64(u64::try_from(i).map_err(|_| range(i))?)
        }
        ValueKind::I64 => {
            let i = int.ok_or_else(wrong)?;
            Value::I64(i64::try_from(i).map_err(|_| range(i))?)
        }
    })
}

/// Whether a bad reading means the device (not just one tag) is unreachable: then the device
/// is dead for Sparkplug (DDEATH). Exceptions and decode errors are per tag (a null value).
pub fn device_unreachable(q: &Quality) -> bool {
    matches!(
        q,
        Quality::Bad(
            BadReason::Timeout
                | BadReason::NotConnected(_)
                | BadReason::Io(_)
                | BadReason::Crc
                | BadReason::WrongUnit
                | BadReason::Malformed(_)
        )
    )
}

fn quality_code(q: &Quality) -> i32 {
    match q {
        Quality::Good => QUALITY_GOOD,
        Quality::Stale => QUALITY_STALE,
        Quality::Bad(_) => QUALITY_BAD,
    }
}

/// One tag as a Sparkplug metric.
#[derive(Debug, Clone, PartialEq)]
pub struct TagModel {
    pub name: String,
    /// Unique across the edge node (all devices), from 1 in configuration order.
    pub alias: u64,
    pub kind: ValueKind,
    pub datatype: DataType,
    pub unit: String,
    pub writable: bool,
}

/// One Modbus device as a Sparkplug device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceModel {
    pub name: String,
    pub tags: Vec<TagModel>,
    /// The shortest poll interval of the device's groups (ms).
    pub scan_rate_ms: Option<i64>,
}

impl DeviceModel {
    pub fn tag(&self, name: &str) -> Option<&TagModel> {
        self.tags.iter().find(|t| t.name == name)
    }
    pub fn tag_by_alias(&self, alias: u64) -> Option<&TagModel> {
        self.tags.iter().find(|t| t.alias == alias)
    }
}

/// The Sparkplug devices of the enabled Modbus devices, aliases assigned in configuration
/// order (stable while the configuration is).
pub fn model(devices: &[Arc<Device>]) -> Vec<DeviceModel> {
    let mut alias = 0u64;
    devices
        .iter()
        .filter(|d| d.enabled)
        .map(|d| DeviceModel {
            name: d.name.clone(),
            scan_rate_ms: d.groups.iter().map(|g| g.interval.as_millis() as i64).min(),
            tags: d
                .tags
                .iter()
                .map(|t| {
                    alias += 1;
                    TagModel {
                        name: t.name.clone(),
                        alias,
                        kind: t.value_kind(),
                        datatype: datatype_of(t.value_kind()),
                        unit: t.unit.clone(),
                        writable: t.writable,
                    }
                })
                .collect(),
        })
        .collect()
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub message_type: MessageType,
    pub topic: String,
    pub payload: Payload,
}

impl Outgoing {
    pub fn encode(&self) -> Result<Vec<u8>, NodeError> {
        self.payload
            .encode()
            .map_err(|e| NodeError::Encode(e.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Published {
    value: Option<Value>,
    quality: i32,
}

#[derive(Debug)]
struct DeviceState {
    model: DeviceModel,
    born: bool,
    last: HashMap<String, Published>,
}

/// Counters and state of a session, for `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionSnapshot {
    pub born: bool,
    pub bdseq: u64,
    /// The seq of the last message published.
    pub seq: Option<u64>,
    pub devices_online: usize,
    pub births: u64,
    pub rebirths: u64,
    pub data_messages: u64,
    pub device_deaths: u64,
    pub primary_host_online: Option<bool>,
    pub node_data_messages: u64,
}

/// Gateway values published as node metrics (NBIRTH, then NDATA by exception).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayMetrics {
    pub uplink_online: bool,
    pub backlog_records: u64,
}

/// The node metric values last published, and when the backlog was.
#[derive(Debug, Clone, Copy, Default)]
struct NodePublished {
    gateway: GatewayMetrics,
    devices_online: u32,
    backlog_at_ms: u64,
}

/// The state machine of one Sparkplug session of the edge node (see the module docs).
#[derive(Debug)]
pub struct NodeCore {
    group_id: String,
    edge_node_id: String,
    devices: Vec<DeviceState>,
    bdseq: u64,
    /// seq of the next message.
    next_seq: u64,
    born: bool,
    stats: SessionSnapshot,
    /// Latest gateway values, and what the last NBIRTH/NDATA published.
    gateway: GatewayMetrics,
    node_published: NodePublished,
    /// The node controls besides Rebirth this session offers and accepts.
    controls: NodeControls,
}

/// Node controls besides Rebirth (always offered), each off unless configured
/// (`sparkplug.commands.allow_reboot` / `allow_next_server`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeControls {
    /// `Node Control/Reboot`: the daemon's orderly restart.
    pub reboot: bool,
    /// `Node Control/Next Server`: only meaningful on the upstream session.
    pub next_server: bool,
}

impl NodeCore {
    pub fn new(group_id: &str, edge_node_id: &str, devices: Vec<DeviceModel>) -> NodeCore {
        NodeCore {
            group_id: group_id.into(),
            edge_node_id: edge_node_id.into(),
            devices: devices
                .into_iter()
                .map(|model| DeviceState {
                    model,
                    born: false,
                    last: HashMap::new(),
                })
                .collect(),
            bdseq: 0,
            next_seq: 0,
            born: false,
            stats: SessionSnapshot::default(),
            gateway: GatewayMetrics::default(),
            node_published: NodePublished::default(),
            controls: NodeControls::default(),
        }
    }

    /// The latest gateway values (for the next NBIRTH), without publishing anything.
    pub fn set_gateway(&mut self, gateway: GatewayMetrics) {
        self.gateway = gateway;
    }

    /// Offers these node controls in the NBIRTH and accepts them in NCMDs.
    pub fn with_controls(mut self, controls: NodeControls) -> NodeCore {
        self.controls = controls;
        self
    }

    pub fn controls(&self) -> NodeControls {
        self.controls
    }

    /// The shortest poll interval of the node's devices (ms), as `Node Control/Scan Rate`.
    pub fn scan_rate_ms(&self) -> i64 {
        self.devices
            .iter()
            .filter_map(|d| d.model.scan_rate_ms)
            .min()
            .unwrap_or(0)
    }

    fn devices_online(&self) -> u32 {
        self.devices.iter().filter(|d| d.born).count() as u32
    }

    /// Takes the latest gateway values: an NDATA with the node metrics that changed since the
    /// last NBIRTH/NDATA (the backlog at most every [`BACKLOG_INTERVAL_MS`]); `now` in ms.
    pub fn node_data(&mut self, gateway: GatewayMetrics, now: u64) -> Option<Outgoing> {
        self.gateway = gateway;
        if !self.born {
            return None;
        }
        let mut metrics = Vec::new();
        let p = self.node_published;
        if gateway.uplink_online != p.gateway.uplink_online {
            metrics.push(
                Metric::new(UPLINK_ONLINE, MetricValue::Boolean(gateway.uplink_online))
                    .with_timestamp(now),
            );
            self.node_published.gateway.uplink_online = gateway.uplink_online;
        }
        let online = self.devices_online();
        if online != p.devices_online {
            metrics
                .push(Metric::new(DEVICES_ONLINE, MetricValue::UInt32(online)).with_timestamp(now));
            self.node_published.devices_online = online;
        }
        if gateway.backlog_records != p.gateway.backlog_records
            && now >= p.backlog_at_ms.saturating_add(BACKLOG_INTERVAL_MS)
        {
            metrics.push(
                Metric::new(
                    BACKLOG_RECORDS,
                    MetricValue::UInt64(gateway.backlog_records),
                )
                .with_timestamp(now),
            );
            self.node_published.gateway.backlog_records = gateway.backlog_records;
            self.node_published.backlog_at_ms = now;
        }
        if metrics.is_empty() {
            return None;
        }
        self.stats.node_data_messages += 1;
        let mut payload = Payload::new(now, Some(self.take_seq()));
        payload.metrics = metrics;
        Some(Outgoing {
            message_type: MessageType::NData,
            topic: self.node_topic(MessageType::NData),
            payload,
        })
    }

    /// Takes a new device list (the Modbus configuration changed); the caller rebirths.
    pub fn replace_devices(&mut self, devices: Vec<DeviceModel>) {
        self.devices = devices
            .into_iter()
            .map(|model| DeviceState {
                model,
                born: false,
                last: HashMap::new(),
            })
            .collect();
    }

    pub fn is_born(&self) -> bool {
        self.born
    }

    pub fn bdseq(&self) -> u64 {
        self.bdseq
    }

    /// The bdSeq of a session that is connected but not born yet (its will carries it).
    pub fn set_bdseq(&mut self, bdseq: u64) {
        self.bdseq = bdseq;
    }

    pub fn devices(&self) -> impl Iterator<Item = &DeviceModel> {
        self.devices.iter().map(|d| &d.model)
    }

    pub fn device(&self, name: &str) -> Option<&DeviceModel> {
        self.devices
            .iter()
            .find(|d| d.model.name == name)
            .map(|d| &d.model)
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        let mut s = self.stats.clone();
        s.born = self.born;
        s.bdseq = self.bdseq;
        s.seq = (self.born).then(|| (self.next_seq + 255) % 256);
        s.devices_online = self.devices.iter().filter(|d| d.born).count();
        s
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq = (self.next_seq + 1) % 256;
        s
    }

    fn node_topic(&self, t: MessageType) -> String {
        Topic::node(&self.group_id, t, &self.edge_node_id).to_string()
    }

    fn device_topic(&self, t: MessageType, device: &str) -> String {
        Topic::device(&self.group_id, t, &self.edge_node_id, device).to_string()
    }

    /// The NDEATH of session `bdseq` (the will): only the bdSeq metric, no seq.
    pub fn death(&self, bdseq: u64) -> Outgoing {
        Outgoing {
            message_type: MessageType::NDeath,
            topic: self.node_topic(MessageType::NDeath),
            payload: Payload::new(now_ms(), None)
                .with_metric(Metric::new(BDSEQ, MetricValue::Int64(bdseq as i64))),
        }
    }

    /// Starts a session with `bdseq`: NBIRTH (seq 0) and a DBIRTH for every device (its latest
    /// readings from `latest`), followed by its DDEATH if those say it is unreachable. Also
    /// used for a rebirth (same bdSeq).
    pub fn birth(&mut self, bdseq: u64, latest: &dyn Fn(&str) -> Vec<Reading>) -> Vec<Outgoing> {
        let rebirth = self.born && bdseq == self.bdseq;
        self.bdseq = bdseq;
        self.born = true;
        self.next_seq = 0;
        if rebirth {
            self.stats.rebirths += 1;
        } else {
            self.stats.births += 1;
        }
        let now = now_ms();
        let seq = self.take_seq();
        let nbirth = Payload::new(now, Some(seq))
            .with_metric(Metric::new(BDSEQ, MetricValue::Int64(bdseq as i64)).with_timestamp(now))
            .with_metric(Metric::new(REBIRTH, MetricValue::Boolean(false)).with_timestamp(now))
            .with_metric(
                Metric::new(
                    "Properties/Software",
                    MetricValue::String(format!("Ironbridge {}", env!("CARGO_PKG_VERSION"))),
                )
                .with_timestamp(now),
            )
            .with_metric(
                Metric::new(
                    "Properties/Devices",
                    MetricValue::UInt32(self.devices.len() as u32),
                )
                .with_timestamp(now),
            )
            .with_metric(
                // Read-only: the poll intervals are configuration (see plan_command).
                Metric::new(SCAN_RATE, MetricValue::Int64(self.scan_rate_ms()))
                    .with_timestamp(now)
                    .with_property("readOnly", PropertyValue::boolean(true)),
            )
            .with_metric(
                Metric::new(
                    UPLINK_ONLINE,
                    MetricValue::Boolean(self.gateway.uplink_online),
                )
                .with_timestamp(now),
            )
            .with_metric(
                Metric::new(
                    BACKLOG_RECORDS,
                    MetricValue::UInt64(self.gateway.backlog_records),
                )
                .with_timestamp(now),
            );
        let mut nbirth = nbirth;
        // Only the controls this gateway accepts: a host shows no button that would be refused.
        if self.controls.reboot {
            nbirth = nbirth
                .with_metric(Metric::new(REBOOT, MetricValue::Boolean(false)).with_timestamp(now));
        }
        if self.controls.next_server {
            nbirth = nbirth.with_metric(
                Metric::new(NEXT_SERVER, MetricValue::Boolean(false)).with_timestamp(now),
            );
        }
        let mut out = vec![Outgoing {
            message_type: MessageType::NBirth,
            topic: self.node_topic(MessageType::NBirth),
            payload: nbirth,
        }];
        // Every configured device is born with the node, so a host knows all of them from the
        // start: one not read yet has null values of bad quality (DDATA follows when it
        // answers), one known to be unreachable is declared dead at once (DBIRTH when it
        // answers again). A device answering late thus never gets its DBIRTH after DDATA.
        for i in 0..self.devices.len() {
            self.devices[i].born = false;
            self.devices[i].last.clear();
            let readings = latest(&self.devices[i].model.name);
            let answered = readings.iter().any(|r| !device_unreachable(&r.quality));
            let unreachable = !answered && !readings.is_empty();
            out.push(self.dbirth(i, &readings));
            if unreachable {
                out.push(self.ddeath(i));
            }
        }
        let online = self.devices_online();
        out[0]
            .payload
            .metrics
            .push(Metric::new(DEVICES_ONLINE, MetricValue::UInt32(online)).with_timestamp(now));
        self.node_published = NodePublished {
            gateway: self.gateway,
            devices_online: online,
            backlog_at_ms: now,
        };
        out
    }

    fn dbirth(&mut self, i: usize, latest: &[Reading]) -> Outgoing {
        let now = now_ms();
        let seq = self.take_seq();
        let mut payload = Payload::new(now, Some(seq));
        let dev = &mut self.devices[i];
        for t in &dev.model.tags {
            let r = latest.iter().find(|r| r.tag == t.name);
            let (value, quality, ts) = match r {
                Some(r) if !device_unreachable(&r.quality) => {
                    (r.value.clone(), quality_code(&r.quality), r.timestamp_ms)
                }
                _ => (None, QUALITY_BAD, now),
            };
            let mut m = match &value {
                Some(v) => Metric::new(t.name.clone(), metric_value(v)),
                None => Metric::null(t.name.clone(), t.datatype),
            }
            .with_alias(t.alias)
            .with_timestamp(ts)
            .with_property("readOnly", PropertyValue::boolean(!t.writable))
            .with_property("Quality", PropertyValue::new(MetricValue::Int32(quality)));
            if !t.unit.is_empty() {
                m = m.with_property("engUnit", PropertyValue::string(t.unit.clone()));
            }
            // The datatype is the tag's even when the value's differs (it never should).
            m.datatype = Some(t.datatype);
            payload.metrics.push(m);
            dev.last
                .insert(t.name.clone(), Published { value, quality });
        }
        dev.born = true;
        let topic = self.device_topic(MessageType::DBirth, &self.devices[i].model.name);
        Outgoing {
            message_type: MessageType::DBirth,
            topic,
            payload,
        }
    }

    fn ddeath(&mut self, i: usize) -> Outgoing {
        self.devices[i].born = false;
        self.devices[i].last.clear();
        self.stats.device_deaths += 1;
        let seq = self.take_seq();
        let topic = self.device_topic(MessageType::DDeath, &self.devices[i].model.name);
        Outgoing {
            message_type: MessageType::DDeath,
            topic,
            payload: Payload::new(now_ms(), Some(seq)),
        }
    }

    /// New readings → DDATA (changed values only, by alias, with their timestamps), DDEATH
    /// when a device stops answering, DBIRTH when it answers again. Nothing before the birth.
    pub fn readings(
        &mut self,
        batch: &[Reading],
        latest: &dyn Fn(&str) -> Vec<Reading>,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if !self.born {
            return out;
        }
        // Pending DDATA metrics per device index, flushed in device order of first change.
        let mut pending: Vec<(usize, Vec<Metric>)> = Vec::new();
        let flush = |me: &mut NodeCore,
                     i: usize,
                     pending: &mut Vec<(usize, Vec<Metric>)>,
                     out: &mut Vec<Outgoing>| {
            if let Some(p) = pending.iter().position(|(d, _)| *d == i) {
                let (_, metrics) = pending.remove(p);
                if !metrics.is_empty() {
                    out.push(me.ddata(i, metrics));
                }
            }
        };
        for r in batch {
            let Some(i) = self.devices.iter().position(|d| d.model.name == r.device) else {
                continue;
            };
            if device_unreachable(&r.quality) {
                if self.devices[i].born {
                    flush(self, i, &mut pending, &mut out);
                    out.push(self.ddeath(i));
                }
                continue;
            }
            if !self.devices[i].born {
                let mut l = latest(&r.device);
                // The reading in hand is newer than (or the same as) the hub's.
                match l.iter_mut().find(|x| x.tag == r.tag) {
                    Some(x) => *x = r.clone(),
                    None => l.push(r.clone()),
                }
                out.push(self.dbirth(i, &l));
                continue;
            }
            let dev = &mut self.devices[i];
            let Some(t) = dev.model.tag(&r.tag) else {
                continue;
            };
            let now = Published {
                value: r.value.clone(),
                quality: quality_code(&r.quality),
            };
            let before = dev.last.get(&t.name);
            if before == Some(&now) {
                continue;
            }
            let quality_changed = before.is_none_or(|b| b.quality != now.quality);
            let mut m = match &now.value {
                Some(v) => Metric::aliased(t.alias, metric_value(v)),
                None => Metric {
                    alias: Some(t.alias),
                    datatype: Some(t.datatype),
                    ..Metric::default()
                },
            }
            .with_timestamp(r.timestamp_ms);
            if quality_changed || now.quality != QUALITY_GOOD {
                m = m.with_property(
                    "Quality",
                    PropertyValue::new(MetricValue::Int32(now.quality)),
                );
            }
            dev.last.insert(t.name.clone(), now);
            match pending.iter_mut().find(|(d, _)| *d == i) {
                Some((_, ms)) => ms.push(m),
                None => pending.push((i, vec![m])),
            }
        }
        for (i, metrics) in std::mem::take(&mut pending) {
            if !metrics.is_empty() {
                out.push(self.ddata(i, metrics));
            }
        }
        out
    }

    fn ddata(&mut self, i: usize, metrics: Vec<Metric>) -> Outgoing {
        self.stats.data_messages += 1;
        let seq = self.take_seq();
        let mut payload = Payload::new(now_ms(), Some(seq));
        payload.metrics = metrics;
        Outgoing {
            message_type: MessageType::DData,
            topic: self.device_topic(MessageType::DData, &self.devices[i].model.name),
            payload,
        }
    }

    /// A DDATA (`device`) or NDATA replaying `metrics` (marked `is_historical`) in this
    /// session's seq. `None` before the birth, or for a device that is not born now (a host
    /// takes DDATA only after the device's DBIRTH).
    pub fn historical(
        &mut self,
        kind: MessageType,
        device: Option<&str>,
        metrics: Vec<Metric>,
    ) -> Option<Outgoing> {
        if !self.born || metrics.is_empty() {
            return None;
        }
        let topic = match (kind, device) {
            (MessageType::DData, Some(d)) => {
                let dev = self.devices.iter().find(|x| x.model.name == d)?;
                if !dev.born {
                    return None;
                }
                self.device_topic(MessageType::DData, d)
            }
            (MessageType::NData, None) => self.node_topic(MessageType::NData),
            _ => return None,
        };
        if kind == MessageType::DData {
            self.stats.data_messages += 1;
        } else {
            self.stats.node_data_messages += 1;
        }
        let mut payload = Payload::new(now_ms(), Some(self.take_seq()));
        payload.metrics = metrics;
        Some(Outgoing {
            message_type: kind,
            topic,
            payload,
        })
    }

    /// Ends the session (NDEATH to publish, then nothing until the next birth).
    pub fn die(&mut self) -> Option<Outgoing> {
        if !self.born {
            return None;
        }
        self.born = false;
        for d in &mut self.devices {
            d.born = false;
            d.last.clear();
        }
        Some(self.death(self.bdseq))
    }

    pub fn set_host_online(&mut self, online: Option<bool>) {
        self.stats.primary_host_online = online;
    }
}

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

/// Persisted per session: the last bdSeq used and whether the session may have ended without
/// an NDEATH (the emulated will is published at the next start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub bdseq: u64,
    pub online: bool,
}

pub async fn load_session(
    state: &StateStore,
    key: &str,
) -> Result<Option<SessionRecord>, NodeError> {
    let state = state.clone();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || {
        let tree = state.tree(STATE_TREE)?;
        Ok(StateStore::get_json::<SessionRecord>(&tree, &key)?)
    })
    .await
    .map_err(|e| NodeError::Task(e.to_string()))?
}

/// Writes the record and flushes it to disk before returning.
pub async fn save_session(
    state: &StateStore,
    key: &str,
    rec: SessionRecord,
) -> Result<(), NodeError> {
    let state = state.clone();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || {
        let tree = state.tree(STATE_TREE)?;
        StateStore::put_json_durable(&tree, &key, &rec)?;
        Ok(())
    })
    .await
    .map_err(|e| NodeError::Task(e.to_string()))?
}

/// The bdSeq of the next session after `prev` (0 for the first ever).
pub fn next_bdseq(prev: Option<SessionRecord>) -> u64 {
    prev.map(|r| (r.bdseq + 1) % 256).unwrap_or(0)
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
    pub commands: super::audit::AuditCounters,
    /// The most recent command results, oldest first.
    pub recent_commands: Vec<super::audit::CommandRecord>,
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

/// A DCMD metric checked against the device model, waiting for its Modbus write.
#[derive(Debug)]
pub struct WriteJob {
    pub from: Requester,
    pub device: String,
    pub tag: String,
    pub value: Value,
    pub json: serde_json::Value,
}

/// A decoded NCMD/DCMD, turned into rebirth requests, write jobs and rejections.
#[derive(Debug, Default)]
pub struct CommandPlan {
    pub rebirth: bool,
    /// `Node Control/Next Server` (upstream session only).
    pub next_server: bool,
    /// `Node Control/Reboot`: restart the gateway.
    pub reboot: bool,
    pub writes: Vec<WriteJob>,
    pub rejected: Vec<CommandResult>,
}

/// Where a command came from and which rules apply to it.
#[derive(Debug, Clone)]
pub struct CommandOrigin<'a> {
    /// From [`CommandAudit::claim`].
    pub from: Requester,
    /// `sparkplug.commands.allow`.
    pub allow: &'a [String],
    /// `sparkplug.commands.restrict_dcmd`.
    pub restricted: bool,
}

/// Checks a command payload against the node's devices: unknown devices and metrics,
/// read-only metrics, values of the wrong type or range, and (when `restricted`, or for Kafka
/// commands) metrics not in `allow` are rejected. `source` is from [`CommandAudit::claim`].
pub fn plan_command(
    core: &NodeCore,
    message_type: MessageType,
    device: Option<&str>,
    payload: &[u8],
    origin: &CommandOrigin<'_>,
) -> CommandPlan {
    let CommandOrigin {
        from,
        allow,
        restricted,
    } = origin;
    let (source, restricted) = (from.source, *restricted);
    let mut plan = CommandPlan::default();
    let kind = message_type.as_str().to_string();
    let reject = |metric: &str, value: serde_json::Value, reason: String| CommandResult {
        from: from.clone(),
        kind: kind.clone(),
        device: device.map(String::from),
        metric: metric.to_string(),
        value,
        outcome: Outcome::Rejected,
        reason: Some(reason),
    };
    let p = match decode_payload(payload, &Limits::default()) {
        Ok(p) => p,
        Err(e) => {
            plan.rejected.push(reject(
                "",
                serde_json::Value::Null,
                format!("malformed payload: {e}"),
            ));
            return plan;
        }
    };
    if p.metrics.is_empty() {
        plan.rejected
            .push(reject("", serde_json::Value::Null, "no metrics".into()));
    }
    for m in p.metrics {
        let json = m.value.as_ref().map(metric_json).unwrap_or_default();
        let label = m
            .name
            .clone()
            .or_else(|| m.alias.map(|a| format!("alias:{a}")))
            .unwrap_or_default();
        match (message_type, device) {
            (MessageType::NCmd, _) => {
                let name = m.name.as_deref().unwrap_or_default();
                let controls = core.controls();
                let flag = match name {
                    REBIRTH => Some(&mut plan.rebirth),
                    REBOOT if controls.reboot => Some(&mut plan.reboot),
                    NEXT_SERVER if controls.next_server => Some(&mut plan.next_server),
                    REBOOT | NEXT_SERVER => {
                        let (key, scope) = if name == REBOOT {
                            ("allow_reboot", "")
                        } else {
                            (
                                "allow_next_server",
                                "; it applies to the upstream server's session only",
                            )
                        };
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!(
                                "{name} is off on this gateway (sparkplug.commands.{key}){scope}"
                            ),
                        ));
                        continue;
                    }
                    SCAN_RATE => {
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!("{SCAN_RATE} is read-only: poll intervals are set per device (modbus.devices poll_interval_ms, poll groups)"),
                        ));
                        continue;
                    }
                    _ => {
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!("unknown node metric (supported: {REBIRTH}, and when enabled {REBOOT}, {NEXT_SERVER})"),
                        ));
                        continue;
                    }
                };
                match (flag, &m.value) {
                    (Some(f), Some(MetricValue::Boolean(true))) => *f = true,
                    _ => plan.rejected.push(reject(
                        &label,
                        json,
                        format!("{name} must be the Boolean true"),
                    )),
                }
            }
            (MessageType::DCmd, Some(dev)) => {
                let Some(model) = core.device(dev) else {
                    plan.rejected
                        .push(reject(&label, json, format!("unknown device {dev:?}")));
                    continue;
                };
                let tag = match (&m.name, m.alias) {
                    (Some(n), _) => model.tag(n),
                    (None, Some(a)) => model.tag_by_alias(a),
                    (None, None) => None,
                };
                let Some(tag) = tag else {
                    plan.rejected.push(reject(
                        &label,
                        json,
                        format!("device {dev:?} has no metric {label:?}"),
                    ));
                    continue;
                };
                if !tag.writable {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("metric {:?} is read-only", tag.name),
                    ));
                    continue;
                }
                if (restricted || source == CommandSource::Kafka) && !allowed(allow, dev, &tag.name)
                {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("{dev}/{} is not in sparkplug.commands.allow", tag.name),
                    ));
                    continue;
                }
                let mut m = m;
                if m.datatype.is_none()
                    && let Err(e) = m.resolve(tag.datatype)
                {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("value does not fit {}: {e}", tag.datatype),
                    ));
                    continue;
                }
                let Some(v) = &m.value else {
                    plan.rejected
                        .push(reject(&tag.name, json, "null value".into()));
                    continue;
                };
                match command_value(tag.kind, v) {
                    Ok(value) => plan.writes.push(WriteJob {
                        from: from.clone(),
                        device: dev.to_string(),
                        tag: tag.name.clone(),
                        value,
                        json: metric_json(v),
                    }),
                    Err(e) => plan.rejected.push(reject(&tag.name, json, e)),
                }
            }
            _ => plan
                .rejected
                .push(reject(&label, json, "not a command".into())),
        }
    }
    plan
}

/// `device/tag` or `device/*` in the allow-list.
pub fn allowed(allow: &[String], device: &str, tag: &str) -> bool {
    allow.iter().any(|a| match a.split_once('/') {
        Some((d, t)) => d == device && (t == "*" || t == tag),
        None => false,
    })
}

/// Runs Modbus writes one at a time and records every result.
pub async fn run_writes(
    hub: Arc<ModbusHub>,
    audit: Arc<CommandAudit>,
    mut jobs: mpsc::Receiver<WriteJob>,
) {
    while let Some(j) = jobs.recv().await {
        let r = hub.write(&j.device, &j.tag, j.value.clone()).await;
        let (outcome, reason) = match r {
            Ok(_) => (Outcome::Ok, None),
            Err(
                e @ (WriteError::UnknownDevice(_)
                | WriteError::UnknownTag { .. }
                | WriteError::ReadOnly(_)
                | WriteError::Disabled(_)
                | WriteError::Value { .. }),
            ) => (Outcome::Rejected, Some(e.to_string())),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        audit.record(CommandResult {
            from: j.from,
            kind: "DCMD".into(),
            device: Some(j.device),
            metric: j.tag,
            value: j.json,
            outcome,
            reason,
        });
    }
}

/// Hands a plan's writes to the write queue (rejecting them when it is full) and records its
/// rejections; returns whether a rebirth was asked for (recorded as done by the caller).
pub fn dispatch(plan: CommandPlan, audit: &CommandAudit, writes: &mpsc::Sender<WriteJob>) -> bool {
    for r in plan.rejected {
        audit.record(r);
    }
    for j in plan.writes {
        if let Err(mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j)) =
            writes.try_send(j)
        {
            audit.record(CommandResult {
                from: j.from,
                kind: "DCMD".into(),
                device: Some(j.device),
                metric: j.tag,
                value: j.json,
                outcome: Outcome::Rejected,
                reason: Some(format!("busy: {COMMAND_QUEUE} writes already queued")),
            });
        }
    }
    plan.rebirth
}

pub fn rebirth_done(audit: &CommandAudit, from: Requester) {
    node_control_done(audit, from, REBIRTH, Ok(()));
}

/// Records the result of a node control (`metric` = true) executed by the caller.
pub fn node_control_done(
    audit: &CommandAudit,
    from: Requester,
    metric: &str,
    result: Result<(), String>,
) {
    let (outcome, reason) = match result {
        Ok(()) => (Outcome::Ok, None),
        Err(e) => (Outcome::Failed, Some(e)),
    };
    audit.record(CommandResult {
        from,
        kind: "NCMD".into(),
        device: None,
        metric: metric.into(),
        value: serde_json::Value::Bool(true),
        outcome,
        reason,
    });
}

/// `Node Control/Reboot`: the orderly restart of `POST /api/system/restart` (audited first,
/// so the result is in the log before the daemon goes down).
pub fn reboot(ctx: &NodeContext, from: Requester) {
    match &ctx.restart {
        Some(tx) if tx.receiver_count() > 0 => {
            let (source, actor) = (from.source, from.actor.clone());
            node_control_done(&ctx.audit, from, REBOOT, Ok(()));
            tracing::warn!(?source, actor, "restart requested by Sparkplug {REBOOT}");
            let _ = tx.send(true);
        }
        _ => node_control_done(
            &ctx.audit,
            from,
            REBOOT,
            Err("no restart path in this process".into()),
        ),
    }
}

/// The gateway values for the node metrics now.
pub fn gateway_metrics(ctx: &NodeContext) -> GatewayMetrics {
    ctx.gateway_metrics
        .as_ref()
        .map(|f| f())
        .unwrap_or_default()
}

/// The correlation id of a command (its payload's `uuid`), without decoding twice on error.
fn correlation(payload: &[u8]) -> Option<String> {
    decode_payload(payload, &Limits::default())
        .ok()
        .and_then(|p| p.uuid)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Readings available now, after `first` (one batch).
fn drain(first: Reading, rx: &mut broadcast::Receiver<Reading>) -> (Vec<Reading>, bool) {
    let mut batch = vec![first];
    let mut lagged = false;
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
            Err(_) => break,
        }
    }
    (batch, lagged)
}

struct Embedded<'a> {
    ctx: &'a NodeContext,
    core: NodeCore,
    client_id: String,
}

impl Embedded<'_> {
    async fn publish(&self, out: Vec<Outgoing>) -> Result<(), NodeError> {
        for o in out {
            let payload = o.encode()?;
            let event = Event {
                topic: o.topic,
                payload: Bytes::from(payload),
                qos: if o.message_type == MessageType::NDeath {
                    1
                } else {
                    0
                },
                client_id: Some(self.client_id.clone()),
                ..Event::default()
            };
            self.ctx.broker.publish(&event).await?;
        }
        self.update_status();
        Ok(())
    }

    fn update_status(&self) {
        let snap = self.core.snapshot();
        self.ctx.status.update(|r| r.embedded = snap);
    }

    /// NBIRTH and DBIRTHs again with the same bdSeq (NCMD rebirth, or after falling behind).
    async fn rebirth(&mut self) -> Result<(), NodeError> {
        if !self.core.is_born() {
            return Ok(());
        }
        let hub = self.ctx.hub.clone();
        let bdseq = self.core.bdseq();
        let out = self.core.birth(bdseq, &|d: &str| hub.latest(d));
        self.publish(out).await
    }

    /// Follows changes of the polled devices (a Modbus configuration change): new model and a
    /// rebirth. An empty list (the poller restarting) keeps the old model.
    async fn check_devices(&mut self, known: &mut Vec<Arc<Device>>) -> Result<(), NodeError> {
        let now = self.ctx.hub.devices();
        let same = now.len() == known.len()
            && now
                .iter()
                .zip(known.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if now.is_empty() || same {
            return Ok(());
        }
        tracing::info!(
            devices = now.len(),
            "Modbus devices changed: Sparkplug rebirth"
        );
        *known = now;
        self.core.replace_devices(model(known));
        self.rebirth().await
    }

    async fn node_data(&mut self) -> Result<(), NodeError> {
        let g = gateway_metrics(self.ctx);
        match self.core.node_data(g, now_ms()) {
            Some(o) => self.publish(vec![o]).await,
            None => Ok(()),
        }
    }

    async fn on_readings(&mut self, batch: &[Reading]) -> Result<(), NodeError> {
        let hub = self.ctx.hub.clone();
        let out = self.core.readings(batch, &|d: &str| hub.latest(d));
        self.publish(out).await
    }

    /// A new session: next bdSeq persisted (durably, with "online") before the NBIRTH.
    async fn go_online(&mut self) -> Result<(), NodeError> {
        let prev = load_session(&self.ctx.state, "embedded").await?;
        let bdseq = next_bdseq(prev);
        save_session(
            &self.ctx.state,
            "embedded",
            SessionRecord {
                bdseq,
                online: true,
            },
        )
        .await?;
        let hub = self.ctx.hub.clone();
        let out = self.core.birth(bdseq, &|d: &str| hub.latest(d));
        tracing::info!(bdseq, messages = out.len(), "Sparkplug edge node born");
        self.publish(out).await?;
        // From here the session carries the readings; while it waited, the JSON topics did.
        hub.set_sparkplug_waiting(false);
        Ok(())
    }

    /// Ends the session (NDEATH); `waiting`: for the primary host to come back.
    async fn go_offline(&mut self, waiting: bool) -> Result<(), NodeError> {
        self.ctx.hub.set_sparkplug_waiting(waiting);
        if let Some(death) = self.core.die() {
            let bdseq = self.core.bdseq();
            self.publish(vec![death]).await?;
            save_session(
                &self.ctx.state,
                "embedded",
                SessionRecord {
                    bdseq,
                    online: false,
                },
            )
            .await?;
            tracing::info!(bdseq, "Sparkplug edge node: NDEATH published");
        }
        Ok(())
    }
}

/// Runs the edge node on the embedded broker until `stop` (then NDEATH).
pub async fn run(
    ctx: NodeContext,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let group = ctx.config.group_id.clone();
    let node_id = ctx.embedded_node_id.clone();
    ctx.status.update(|r| {
        r.group_id = group.clone();
        r.edge_node_id = ctx.edge_node_id.clone();
        r.embedded_edge_node_id = node_id.clone();
    });
    if ctx.config.upstream.is_none() {
        // No upstream session: its buffer cursor must not keep segments.
        if let Err(e) = ctx.buffer.remove_consumer(upstream::CONSUMER) {
            tracing::warn!(error = %e, "removing the Sparkplug upstream buffer cursor failed");
        }
    }
    let ncmd = Topic::node(&group, MessageType::NCmd, &node_id).to_string();
    let dcmd = format!("{}/+", Topic::node(&group, MessageType::DCmd, &node_id));
    // With an upstream server the primary host lives there: the embedded session (the data
    // path to the buffer and Kafka) never waits for it. See decision record 0003.
    let states = if ctx.config.upstream.is_none() {
        state_topics(ctx.config.primary_host_id.as_deref())
    } else {
        Vec::new()
    };
    let mut filters = vec![ncmd.as_str(), dcmd.as_str()];
    filters.extend(states.iter().map(String::as_str));
    let mut sub = ctx
        .broker
        .subscribe(&format!("sparkplug-node:{node_id}"), &filters)
        .await?;
    let mut readings = ctx.hub.subscribe();
    tokio::pin!(stop);
    // The poller sets the device list when it starts: its first reading says it has.
    let mut first = None;
    if ctx.expect_devices && ctx.hub.devices().is_empty() {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = tokio::time::timeout(Duration::from_secs(5), readings.recv()) => {
                first = r.ok().and_then(|r| r.ok());
            }
        }
    }
    let mut known = ctx.hub.devices();
    let mut node = Embedded {
        ctx: &ctx,
        core: NodeCore::new(&group, &node_id, model(&known)).with_controls(NodeControls {
            reboot: ctx.config.commands.allow_reboot,
            // The embedded broker is the only server here.
            next_server: false,
        }),
        client_id: format!("sparkplug:{node_id}"),
    };
    node.core.set_gateway(gateway_metrics(&ctx));

    // The emulated will: the previous run ended without its NDEATH.
    if let Some(prev) = load_session(&ctx.state, "embedded").await?
        && prev.online
    {
        tracing::warn!(
            bdseq = prev.bdseq,
            "previous Sparkplug session ended without NDEATH; publishing it now"
        );
        node.publish(vec![node.core.death(prev.bdseq)]).await?;
        save_session(
            &ctx.state,
            "embedded",
            SessionRecord {
                bdseq: prev.bdseq,
                online: false,
            },
        )
        .await?;
    }
    let mut host = HostTracker::default();
    if states.is_empty() {
        node.go_online().await?;
    } else {
        node.core.set_host_online(Some(false));
        node.update_status();
        ctx.hub.set_sparkplug_waiting(true);
        tracing::info!(host = ?ctx.config.primary_host_id, "Sparkplug edge node waiting for the primary host's STATE (Modbus readings go to the JSON topics meanwhile)");
    }

    let (write_tx, write_rx) = mpsc::channel(COMMAND_QUEUE);
    let writer = tokio::spawn(run_writes(ctx.hub.clone(), ctx.audit.clone(), write_rx));
    // The upstream session shares the write queue (one poller, one audit). If this task
    // fails, dropping the guard aborts it: the upstream server then publishes the will.
    let (upstream_stop, upstream_stop_rx) = tokio::sync::watch::channel(false);
    let upstream_task = ctx.config.upstream.clone().map(|cfg| {
        let (c, w) = (ctx.clone(), write_tx.clone());
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = upstream::run(c, cfg, w, upstream_stop_rx).await {
                tracing::error!(error = %e, "Sparkplug upstream session stopped");
            }
        }))
    });
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let result: Result<(), NodeError> = async {
        if let Some(r) = first {
            let (batch, _) = drain(r, &mut readings);
            node.on_readings(&batch).await?;
        }
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    node.check_devices(&mut known).await?;
                    node.node_data().await?;
                }
                r = readings.recv() => {
                    match r {
                        Ok(first) => {
                            node.check_devices(&mut known).await?;
                            let (batch, lagged) = drain(first, &mut readings);
                            if lagged {
                                tracing::warn!("Sparkplug edge node fell behind the Modbus readings; rebirth");
                                node.rebirth().await?;
                            } else {
                                node.on_readings(&batch).await?;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            tracing::warn!("Sparkplug edge node fell behind the Modbus readings; rebirth");
                            node.rebirth().await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(NodeError::Task("Modbus readings closed".into()));
                        }
                    }
                }
                m = sub.next() => {
                    let Some(m) = m else {
                        return Err(NodeError::Task("embedded broker subscription closed".into()));
                    };
                    if states.contains(&m.topic) {
                        let Some(s) = parse_state(&m.payload) else {
                            tracing::warn!(topic = %m.topic, "unreadable primary host STATE ignored");
                            continue;
                        };
                        if !host.apply(s) {
                            tracing::info!(topic = %m.topic, "primary host STATE older than the last one seen: ignored");
                            continue;
                        }
                        node.core.set_host_online(Some(host.online));
                        if host.online && !node.core.is_born() {
                            tracing::info!("primary host online");
                            node.go_online().await?;
                        } else if !host.online && node.core.is_born() {
                            tracing::info!("primary host offline: ending the Sparkplug session");
                            node.go_offline(true).await?;
                        }
                        node.update_status();
                        continue;
                    }
                    let Ok(Topic::Node { message_type, device_id, .. }) = Topic::parse(&m.topic) else {
                        continue;
                    };
                    let from = ctx
                        .audit
                        .claim(correlation(&m.payload).as_deref(), m.publisher.as_deref());
                    let origin = CommandOrigin {
                        from: from.clone(),
                        allow: &ctx.config.commands.allow,
                        restricted: ctx.config.commands.restrict_dcmd,
                    };
                    let plan = plan_command(
                        &node.core,
                        message_type,
                        device_id.as_deref(),
                        &m.payload,
                        &origin,
                    );
                    let reboot_asked = plan.reboot;
                    if dispatch(plan, &ctx.audit, &write_tx) {
                        node.rebirth().await?;
                        rebirth_done(&ctx.audit, from.clone());
                    }
                    if reboot_asked {
                        reboot(&ctx, from);
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = upstream_stop.send(true);
    if let Some(mut t) = upstream_task {
        // Bounded: NDEATH and DISCONNECT take at most a few seconds.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut t.0).await;
    }
    drop(write_tx);
    // A write in flight gets a moment to finish and be audited.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    match result {
        Ok(()) => {
            node.go_offline(false).await?;
            Ok(())
        }
        Err(e) => {
            // Not running: the JSON topics carry the readings until it is again.
            ctx.hub.set_sparkplug_waiting(true);
            Err(e)
        }
    }
}

/// Checks the `[sparkplug]` table against the rest of the configuration: (field, message)
/// pairs as [`crate::config::Config::validate`] reports them.
pub fn validate(
    sp: &SparkplugConfig,
    gateway_id: &str,
    modbus: &ModbusConfig,
) -> Vec<(String, String)> {
    use super::topic::validate_id;
    let mut issues = Vec::new();
    if !sp.enabled && sp.upstream.is_none() && sp.commands.allow.is_empty() {
        // Still check the ids below: they are cheap and catch typos before enabling.
    }
    if let Err(e) = validate_id(&sp.group_id) {
        issues.push(("sparkplug.group_id".into(), e));
    }
    if !sp.edge_node_id.is_empty() {
        if let Err(e) = validate_id(&sp.edge_node_id) {
            issues.push(("sparkplug.edge_node_id".into(), e));
        }
    } else if sp.enabled
        && let Err(e) = validate_id(gateway_id)
    {
        issues.push((
            "sparkplug.edge_node_id".into(),
            format!("not set, and the gateway id {gateway_id:?} cannot be used instead: {e}"),
        ));
    }
    if let Some(h) = &sp.primary_host_id
        && let Err(e) = validate_id(h)
    {
        issues.push(("sparkplug.primary_host_id".into(), e));
    }
    if !sp.embedded_edge_node_id.is_empty() {
        let own = if sp.edge_node_id.is_empty() {
            gateway_id
        } else {
            &sp.edge_node_id
        };
        if let Err(e) = validate_id(&sp.embedded_edge_node_id) {
            issues.push(("sparkplug.embedded_edge_node_id".into(), e));
        } else if sp.upstream.is_none() {
            issues.push((
                "sparkplug.embedded_edge_node_id".into(),
                "needs [sparkplug.upstream] (without it the embedded session is edge_node_id)"
                    .into(),
            ));
        } else if sp.embedded_edge_node_id == own {
            issues.push((
                "sparkplug.embedded_edge_node_id".into(),
                format!(
                    "must differ from the edge node id {own:?}: two live sessions may not share one identity"
                ),
            ));
        }
    }
    if let Some(u) = &sp.upstream {
        if u.history_rate == 0 {
            issues.push((
                "sparkplug.upstream.history_rate".into(),
                "must be at least 1 (messages per second)".into(),
            ));
        }
        match u.server.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => issues.push((
                "sparkplug.upstream.server".into(),
                format!(
                    "{:?} is not host:port (e.g. \"broker.plant:1883\")",
                    u.server
                ),
            )),
        }
        if u.keep_alive_s < 5 {
            issues.push((
                "sparkplug.upstream.keep_alive_s".into(),
                "must be at least 5".into(),
            ));
        }
        if u.password.is_some() && u.username.is_none() {
            issues.push((
                "sparkplug.upstream.password".into(),
                "needs sparkplug.upstream.username".into(),
            ));
        }
        if let Some(ca) = &u.ca_file {
            if !u.tls {
                issues.push((
                    "sparkplug.upstream.ca_file".into(),
                    "needs sparkplug.upstream.tls = true".into(),
                ));
            } else if let Err(e) = std::fs::File::open(ca) {
                issues.push((
                    "sparkplug.upstream.ca_file".into(),
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
        }
    }
    for (i, a) in sp.commands.allow.iter().enumerate() {
        let field = format!("sparkplug.commands.allow[{i}]");
        let Some((d, t)) = a.split_once('/') else {
            issues.push((
                field,
                format!("{a:?} is not \"device/tag\" or \"device/*\""),
            ));
            continue;
        };
        let Some(dev) = modbus.devices.iter().find(|x| x.name == d) else {
            issues.push((field, format!("{a:?}: no Modbus device {d:?}")));
            continue;
        };
        if t == "*" {
            continue;
        }
        match dev.tags.iter().find(|x| x.name == t) {
            None => issues.push((field, format!("{a:?}: device {d:?} has no tag {t:?}"))),
            Some(tag) if tag.access != ironbridge_adapters::modbus::Access::ReadWrite => issues
                .push((
                    field,
                    format!(
                        "{a:?}: tag {t:?} is read-only (access = \"read_write\" makes it writable)"
                    ),
                )),
            Some(_) => {}
        }
    }
    issues
}

pub mod records;
#[cfg(test)]
mod tests;
pub mod upstream;
