//! The Sparkplug session state machine: births, data by exception, deaths, `seq` and `bdSeq`.
//! Pure: it turns events into the messages to publish.

use super::*;

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
pub(super) struct Published {
    value: Option<Value>,
    quality: i32,
}

#[derive(Debug)]
pub(super) struct DeviceState {
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
pub(super) struct NodePublished {
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
