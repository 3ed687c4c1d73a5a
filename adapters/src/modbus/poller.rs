//! The poller: one task per bus (a TCP address, or a serial port shared by several unit ids),
//! buses polled concurrently, requests on one bus strictly one at a time.
//!
//! * Each device's tags are read in the blocks of its [`DevicePlan`], per poll group on the
//!   group's interval (missed cycles are skipped, never bunched).
//! * A reading is sent when its value moved beyond the tag's deadband, its quality changed, or
//!   the device's heartbeat elapsed since it was last sent.
//! * Failures: a timeout, CRC error, wrong unit or I/O error ends the device's cycle (its other
//!   blocks are reported bad with the same reason, not tried), so a dead unit costs the bus one
//!   timeout per cycle; after two failed cycles in a row it is polled with a backoff (up to
//!   10 s) and without retries until it answers again. An exception fails only its block; an
//!   "illegal data address" on a merged block splits it into per-tag reads from then on.
//! * A broken TCP connection or serial port is re-established with exponential backoff
//!   (0.5 s to 30 s); meanwhile every tag of the bus is reported bad (not connected).
//! * A group whose last good poll is older than three intervals (an overloaded bus) has its
//!   good readings re-sent as stale.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::codec::{
    CodecError, DataType, Value, bit_masks, decode_registers, encode_registers, from_engineering,
    to_engineering,
};
use super::config::{Area, Device, MAX_BITS_PER_WRITE, MAX_REGISTERS_PER_WRITE, Tag};
use super::link::{CallError, Link};
use super::pdu::{Op, OpResult, exception_name};
use super::plan::{DevicePlan, ReadBlock};

/// One tag's value as polled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub device: String,
    pub tag: String,
    /// In engineering units. `None` when the quality is bad; for stale readings the last good
    /// value.
    pub value: Option<Value>,
    pub quality: Quality,
    /// When the poll that produced it completed (ms since the Unix epoch).
    pub timestamp_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "quality", content = "reason")]
pub enum Quality {
    Good,
    Bad(BadReason),
    /// The last good value, not refreshed for three poll intervals.
    Stale,
}

impl Quality {
    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
    /// Same quality, ignoring the text of an I/O or malformed-reply message.
    pub fn same_kind(&self, other: &Quality) -> bool {
        match (self, other) {
            (Quality::Bad(a), Quality::Bad(b)) => a.same_kind(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Good => f.write_str("good"),
            Quality::Stale => f.write_str("stale"),
            Quality::Bad(r) => write!(f, "bad: {r}"),
        }
    }
}

/// Why a reading is bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum BadReason {
    Timeout,
    /// Modbus exception code (2 = illegal data address, …).
    Exception(u8),
    Crc,
    WrongUnit,
    Malformed(String),
    /// The value could not be decoded (e.g. a float register pair out of range for a write).
    Decode(String),
    Io(String),
    /// The connection or serial port is down (with the last connect error).
    NotConnected(String),
}

impl BadReason {
    fn same_kind(&self, other: &BadReason) -> bool {
        match (self, other) {
            (BadReason::Exception(a), BadReason::Exception(b)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl From<&CallError> for BadReason {
    fn from(e: &CallError) -> Self {
        match e {
            CallError::Timeout => BadReason::Timeout,
            CallError::Exception(c) => BadReason::Exception(*c),
            CallError::Crc => BadReason::Crc,
            CallError::WrongUnit { .. } => BadReason::WrongUnit,
            CallError::Malformed(m) => BadReason::Malformed(m.clone()),
            CallError::Io(m) => BadReason::Io(m.clone()),
        }
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReason::Timeout => f.write_str("timeout"),
            BadReason::Exception(c) => write!(f, "exception {c} ({})", exception_name(*c)),
            BadReason::Crc => f.write_str("CRC error"),
            BadReason::WrongUnit => f.write_str("reply from the wrong unit"),
            BadReason::Malformed(m) => write!(f, "malformed reply: {m}"),
            BadReason::Decode(m) => write!(f, "decode: {m}"),
            BadReason::Io(m) => write!(f, "I/O: {m}"),
            BadReason::NotConnected(m) => write!(f, "not connected: {m}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Not tried yet.
    #[default]
    Starting,
    /// Connected and the device's last poll succeeded.
    Ok,
    /// Connected, but the device's last poll failed (timeout, CRC, …).
    Failing,
    /// The connection/port is down; reconnecting with backoff.
    Disconnected,
    Disabled,
}

/// Per-device health, for `/api/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceHealth {
    pub device: String,
    /// `tcp:host:port` or `rtu:/dev/…`.
    pub bus: String,
    pub unit_id: u8,
    pub state: LinkState,
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub requests: u64,
    pub responses: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub crc_errors: u64,
    pub wrong_unit: u64,
    pub malformed: u64,
    pub io_errors: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Poll cycles (one group, all its blocks) and those that failed.
    pub polls: u64,
    pub failed_polls: u64,
    pub readings_sent: u64,
    pub writes: u64,
    pub failed_writes: u64,
    pub rtt_last_us: u64,
    /// Exponentially weighted (1/8) mean round-trip time.
    pub rtt_avg_us: u64,
    pub rtt_max_us: u64,
}

/// Result of a successful write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    pub requests: usize,
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("no device {0:?}")]
    UnknownDevice(String),
    #[error("device {device:?} has no tag {tag:?}")]
    UnknownTag { device: String, tag: String },
    #[error("tag {0:?} is read-only")]
    ReadOnly(String),
    #[error("device {0:?} is disabled")]
    Disabled(String),
    #[error("tag {tag:?}: {error}")]
    Value { tag: String, error: CodecError },
    #[error("{op}: {reason}")]
    Device { op: String, reason: BadReason },
    #[error("tag {tag:?}: wrote {wrote}, read back {read}")]
    VerifyMismatch {
        tag: String,
        wrote: String,
        read: String,
    },
    #[error("the poller has stopped")]
    Stopped,
}

enum Command {
    Write {
        device: usize,
        items: Vec<(usize, Value)>,
        reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
    },
}

struct BusHandle {
    cmd: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

/// Starts polling. Spawns one task per bus on the current tokio runtime.
pub struct Poller;

impl Poller {
    /// Polls the enabled `devices` (validated by [`super::ModbusConfig::validate`]); readings go
    /// to `sink` (the poller waits when it is full; it stops when the receiver is dropped).
    pub fn spawn(devices: Vec<Device>, sink: mpsc::Sender<Reading>) -> PollerHandle {
        let stop = CancellationToken::new();
        let devices: Vec<Arc<Device>> = devices.into_iter().map(Arc::new).collect();
        let mut health = Vec::new();
        let mut by_bus: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let h = DeviceHealth {
                device: d.name.clone(),
                bus: d.bus_key(),
                unit_id: d.unit_id,
                state: if d.enabled {
                    LinkState::Starting
                } else {
                    LinkState::Disabled
                },
                ..DeviceHealth::default()
            };
            health.push(Arc::new(Mutex::new(h)));
            if !d.enabled {
                continue;
            }
            let key = d.bus_key();
            match by_bus.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => by_bus.push((key, vec![i])),
            }
        }
        let mut buses = Vec::new();
        let mut route = HashMap::new();
        for (bi, (key, members)) in by_bus.into_iter().enumerate() {
            let (cmd_tx, cmd_rx) = mpsc::channel(16);
            let mut states = Vec::new();
            for (local, &di) in members.iter().enumerate() {
                route.insert(di, (bi, local));
                states.push(DevState::new(devices[di].clone(), health[di].clone()));
            }
            let transport = devices[members[0]].transport.clone();
            let connect_timeout = members
                .iter()
                .map(|&i| devices[i].timeout)
                .max()
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_secs(1));
            let task = BusTask {
                key,
                transport,
                connect_timeout,
                link: None,
                reconnect_at: Instant::now(),
                backoff: RECONNECT_MIN,
                devices: states,
                sink: sink.clone(),
                cmd_rx,
                stop: stop.clone(),
            };
            buses.push(BusHandle {
                cmd: cmd_tx,
                task: tokio::spawn(task.run()),
            });
        }
        PollerHandle {
            devices,
            health,
            buses,
            route,
            stop,
        }
    }
}

/// Controls a running poller.
pub struct PollerHandle {
    devices: Vec<Arc<Device>>,
    health: Vec<Arc<Mutex<DeviceHealth>>>,
    buses: Vec<BusHandle>,
    /// device index → (bus, index on the bus)
    route: HashMap<usize, (usize, usize)>,
    stop: CancellationToken,
}

impl PollerHandle {
    /// The devices as configured (tag metadata for births, units, types).
    pub fn devices(&self) -> &[Arc<Device>] {
        &self.devices
    }

    /// A snapshot of every device's health, in configuration order.
    pub fn health(&self) -> Vec<DeviceHealth> {
        self.health
            .iter()
            .map(|h| h.lock().map(|g| g.clone()).unwrap_or_default())
            .collect()
    }

    /// Writes one tag (engineering value: scale/offset are undone, the word order applied).
    pub async fn write(
        &self,
        device: &str,
        tag: &str,
        value: Value,
    ) -> Result<WriteOutcome, WriteError> {
        self.write_tags(device, vec![(tag.to_string(), value)])
            .await
    }

    /// Writes several tags of one device; adjacent tags of one area go out in one request
    /// (function 15/16), a single coil/register as function 5/6, a `bit` tag as a masked
    /// write (function 22). Tags with `verify_write` are read back and compared. The written
    /// tags' groups are polled right after.
    pub async fn write_tags(
        &self,
        device: &str,
        values: Vec<(String, Value)>,
    ) -> Result<WriteOutcome, WriteError> {
        let di = self
            .devices
            .iter()
            .position(|d| d.name == device)
            .ok_or_else(|| WriteError::UnknownDevice(device.to_string()))?;
        let dev = &self.devices[di];
        if !dev.enabled {
            return Err(WriteError::Disabled(device.to_string()));
        }
        let mut items = Vec::with_capacity(values.len());
        for (tag, value) in values {
            let (ti, t) = dev.tag(&tag).ok_or_else(|| WriteError::UnknownTag {
                device: device.to_string(),
                tag: tag.clone(),
            })?;
            if !t.writable {
                return Err(WriteError::ReadOnly(tag));
            }
            // Fail early on values that do not fit; the bus task converts again.
            from_engineering(t.data_type, &value, t.scale, t.offset)
                .map_err(|error| WriteError::Value { tag, error })?;
            items.push((ti, value));
        }
        let (bi, local) = *self.route.get(&di).ok_or(WriteError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.buses[bi]
            .cmd
            .send(Command::Write {
                device: local,
                items,
                reply,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Stops every bus task and waits for them (connections are closed).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for b in std::mem::take(&mut self.buses) {
            let _ = b.task.await;
        }
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
const DEAD_BACKOFF_MAX: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

struct Published {
    value: Option<Value>,
    quality: Quality,
    at: Instant,
}

#[derive(Default)]
struct TagState {
    published: Option<Published>,
    last_good: Option<Value>,
}

struct BlockState {
    block: ReadBlock,
    /// Read tag by tag (after "illegal data address" on the merged block).
    split: bool,
}

struct GroupState {
    interval: Duration,
    next_due: Instant,
    blocks: Vec<BlockState>,
    last_success: Option<Instant>,
    stale_sent: bool,
}

struct DevState {
    dev: Arc<Device>,
    groups: Vec<GroupState>,
    tags: Vec<TagState>,
    health: Arc<Mutex<DeviceHealth>>,
    /// Consecutive failed cycles.
    failures: u32,
    retry_at: Option<Instant>,
}

impl DevState {
    fn new(dev: Arc<Device>, health: Arc<Mutex<DeviceHealth>>) -> Self {
        let plan = DevicePlan::new(&dev);
        let start = Instant::now();
        let groups = dev
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| GroupState {
                interval: g.interval,
                next_due: start,
                blocks: plan
                    .group_blocks(gi)
                    .map(|b| BlockState {
                        block: b.clone(),
                        split: false,
                    })
                    .collect(),
                last_success: None,
                stale_sent: false,
            })
            .filter(|g| !g.blocks.is_empty())
            .collect();
        let tags = dev.tags.iter().map(|_| TagState::default()).collect();
        DevState {
            dev,
            groups,
            tags,
            health,
            failures: 0,
            retry_at: None,
        }
    }

    fn with_health(&self, f: impl FnOnce(&mut DeviceHealth)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h);
        }
    }

    fn due(&self, gi: usize) -> Instant {
        let g = &self.groups[gi];
        match self.retry_at {
            Some(r) if r > g.next_due => r,
            _ => g.next_due,
        }
    }

    /// Decides whether a new reading is sent, records it, and returns it.
    fn observe(
        &mut self,
        ti: usize,
        value: Option<Value>,
        quality: Quality,
        ts: u64,
    ) -> Option<Reading> {
        let tag = &self.dev.tags[ti];
        let st = &mut self.tags[ti];
        let now = Instant::now();
        if quality.is_good() {
            st.last_good.clone_from(&value);
        }
        let send = match &st.published {
            None => true,
            Some(p) => {
                !p.quality.same_kind(&quality)
                    || value_changed(tag, p.value.as_ref(), value.as_ref())
                    || self
                        .dev
                        .heartbeat
                        .is_some_and(|h| now.duration_since(p.at) >= h)
            }
        };
        if !send {
            return None;
        }
        st.published = Some(Published {
            value: value.clone(),
            quality: quality.clone(),
            at: now,
        });
        Some(Reading {
            device: self.dev.name.clone(),
            tag: tag.name.clone(),
            value,
            quality,
            timestamp_ms: ts,
        })
    }
}

fn value_changed(tag: &Tag, old: Option<&Value>, new: Option<&Value>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => match (tag.deadband, a.as_f64(), b.as_f64()) {
            (Some(db), Some(x), Some(y)) if !matches!(a, Value::Bool(_)) => db.exceeded(x, y),
            (_, Some(x), Some(y)) if !matches!(a, Value::Bool(_)) => {
                !(x == y || (x.is_nan() && y.is_nan()))
            }
            _ => a != b,
        },
        (None, None) => false,
        _ => true,
    }
}

struct BusTask {
    key: String,
    transport: super::config::Transport,
    connect_timeout: Duration,
    link: Option<Link>,
    reconnect_at: Instant,
    backoff: Duration,
    devices: Vec<DevState>,
    sink: mpsc::Sender<Reading>,
    cmd_rx: mpsc::Receiver<Command>,
    stop: CancellationToken,
}

/// The sink was closed: stop.
struct SinkClosed;

impl BusTask {
    async fn run(mut self) {
        tracing::info!(bus = %self.key, devices = self.devices.len(), "modbus bus started");
        let mut commands_open = true;
        loop {
            let next = self.next_due();
            let wake = next.map(|(at, _, _)| at);
            // Unbiased: when writes keep arriving and a poll is due, both get their turn.
            let r = tokio::select! {
                _ = self.stop.cancelled() => break,
                cmd = self.cmd_rx.recv(), if commands_open => match cmd {
                    Some(Command::Write { device, items, reply }) => {
                        let r = self.write(device, items).await;
                        let _ = reply.send(r);
                        Ok(())
                    }
                    None => { commands_open = false; Ok(()) }
                },
                _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {
                    match next {
                        Some((_, di, gi)) => self.poll_group(di, gi).await,
                        None => Ok(()),
                    }
                }
            };
            if r.is_err() {
                tracing::info!(bus = %self.key, "reading sink closed; stopping");
                break;
            }
        }
        if let Some(Link::Tcp(_)) = self.link {
            tracing::debug!(bus = %self.key, "closing connection");
        }
        self.link = None;
    }

    fn next_due(&self) -> Option<(Instant, usize, usize)> {
        let mut best: Option<(Instant, usize, usize)> = None;
        for (di, d) in self.devices.iter().enumerate() {
            for gi in 0..d.groups.len() {
                let mut at = d.due(gi);
                if self.link.is_none() && self.reconnect_at > at {
                    at = self.reconnect_at;
                }
                if best.is_none_or(|(b, _, _)| at < b) {
                    best = Some((at, di, gi));
                }
            }
        }
        best
    }

    async fn send_all(&mut self, readings: Vec<Reading>, di: usize) -> Result<(), SinkClosed> {
        let n = readings.len() as u64;
        for r in readings {
            self.sink.send(r).await.map_err(|_| SinkClosed)?;
        }
        if n > 0 {
            self.devices[di].with_health(|h| h.readings_sent += n);
        }
        Ok(())
    }

    /// Opens the link if needed; on failure reports every tag of the bus as not connected.
    async fn ensure_link(&mut self) -> Result<bool, SinkClosed> {
        if self.link.is_some() {
            return Ok(true);
        }
        if Instant::now() < self.reconnect_at {
            return Ok(false);
        }
        match Link::open(&self.transport, self.connect_timeout).await {
            Ok(link) => {
                tracing::info!(bus = %self.key, "modbus link up");
                self.link = Some(link);
                self.backoff = RECONNECT_MIN;
                for d in &self.devices {
                    d.with_health(|h| h.connects += 1);
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(bus = %self.key, error = %e, retry_in_ms = self.backoff.as_millis() as u64, "modbus link down");
                self.reconnect_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                let ts = now_ms();
                for di in 0..self.devices.len() {
                    let d = &mut self.devices[di];
                    d.with_health(|h| {
                        h.connect_failures += 1;
                        h.state = LinkState::Disconnected;
                        h.last_error = Some(e.clone());
                        h.last_error_ms = Some(ts);
                    });
                    let q = Quality::Bad(BadReason::NotConnected(e.clone()));
                    let readings: Vec<Reading> = (0..d.tags.len())
                        .filter_map(|ti| d.observe(ti, None, q.clone(), ts))
                        .collect();
                    self.send_all(readings, di).await?;
                }
                Ok(false)
            }
        }
    }

    /// One request with the device's retries; keeps the counters.
    async fn call(&mut self, di: usize, op: &Op) -> Result<OpResult, CallError> {
        let d = &self.devices[di];
        let (unit, limit) = (d.dev.unit_id, d.dev.timeout);
        // A unit that keeps failing gets no retries: it must not hold the bus.
        let attempts = 1 + if d.failures > 0 { 0 } else { d.dev.retries };
        let mut last = CallError::Io("not connected".into());
        for _ in 0..attempts {
            if self.link.is_none() {
                // Reconnect at once inside a transaction (e.g. after a TCP timeout).
                self.reconnect_at = Instant::now();
                match Link::open(&self.transport, self.connect_timeout).await {
                    Ok(l) => {
                        self.link = Some(l);
                        for d in &self.devices {
                            d.with_health(|h| h.connects += 1);
                        }
                    }
                    Err(e) => {
                        self.reconnect_at = Instant::now() + self.backoff;
                        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                        for d in &self.devices {
                            d.with_health(|h| h.connect_failures += 1);
                        }
                        return Err(CallError::Io(e));
                    }
                }
            }
            let Some(link) = self.link.as_mut() else {
                break;
            };
            let t0 = Instant::now();
            let r = link.call(unit, op, limit).await;
            let rtt = t0.elapsed().as_micros() as u64;
            let d = &self.devices[di];
            match r {
                Ok(x) => {
                    d.with_health(|h| {
                        h.requests += 1;
                        h.responses += 1;
                        h.rtt_last_us = rtt;
                        h.rtt_max_us = h.rtt_max_us.max(rtt);
                        h.rtt_avg_us = if h.rtt_avg_us == 0 {
                            rtt
                        } else {
                            (h.rtt_avg_us * 7 + rtt) / 8
                        };
                    });
                    return Ok(x);
                }
                Err(e) => {
                    let ts = now_ms();
                    d.with_health(|h| {
                        h.requests += 1;
                        match &e {
                            CallError::Timeout => h.timeouts += 1,
                            CallError::Exception(_) => {
                                h.responses += 1;
                                h.exceptions += 1
                            }
                            CallError::Crc => h.crc_errors += 1,
                            CallError::WrongUnit { .. } => h.wrong_unit += 1,
                            CallError::Malformed(_) => h.malformed += 1,
                            CallError::Io(_) => h.io_errors += 1,
                        }
                        h.last_error = Some(format!("{op}: {e}"));
                        h.last_error_ms = Some(ts);
                    });
                    tracing::debug!(bus = %self.key, device = %d.dev.name, %op, error = %e, "modbus request failed");
                    if link.broken_by(&e) {
                        if !link.is_serial() || matches!(e, CallError::Io(_)) {
                            self.link = None;
                        }
                        if matches!(e, CallError::Io(_)) {
                            // A port/connection failure: back off before the next attempt.
                            self.reconnect_at = Instant::now() + self.backoff;
                            self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                            for d in &self.devices {
                                d.with_health(|h| h.state = LinkState::Disconnected);
                            }
                            return Err(e);
                        }
                    }
                    if matches!(e, CallError::Exception(_)) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn poll_group(&mut self, di: usize, gi: usize) -> Result<(), SinkClosed> {
        let now = Instant::now();
        {
            let g = &mut self.devices[di].groups[gi];
            g.next_due += g.interval;
            if g.next_due <= now {
                g.next_due = now + g.interval;
            }
        }
        self.check_stale().await?;
        if !self.ensure_link().await? {
            return Ok(());
        }
        let mut readings = Vec::new();
        let mut failure: Option<CallError> = None;
        let nblocks = self.devices[di].groups[gi].blocks.len();
        for bi in 0..nblocks {
            if let Some(e) = &failure {
                // The device failed this cycle: report the rest with the same reason.
                let q = Quality::Bad(BadReason::from(e));
                let ts = now_ms();
                let tags = self.devices[di].groups[gi].blocks[bi].block.tags.clone();
                for ti in tags {
                    readings.extend(self.devices[di].observe(ti, None, q.clone(), ts));
                }
                continue;
            }
            if let Err(e) = self.read_block(di, gi, bi, &mut readings).await {
                failure = Some(e);
            }
        }
        let d = &mut self.devices[di];
        let ts = now_ms();
        match &failure {
            None => {
                d.failures = 0;
                d.retry_at = None;
                let g = &mut d.groups[gi];
                g.last_success = Some(Instant::now());
                g.stale_sent = false;
                d.with_health(|h| {
                    h.polls += 1;
                    h.state = LinkState::Ok;
                    h.last_success_ms = Some(ts);
                });
            }
            Some(e) => {
                d.failures += 1;
                if d.failures >= 2 {
                    let interval = d.groups[gi].interval;
                    let factor = 1u32 << (d.failures - 1).min(10);
                    let delay = interval
                        .saturating_mul(factor)
                        .min(DEAD_BACKOFF_MAX)
                        .max(interval);
                    d.retry_at = Some(Instant::now() + delay);
                }
                let disconnected = matches!(e, CallError::Io(_));
                d.with_health(|h| {
                    h.polls += 1;
                    h.failed_polls += 1;
                    h.state = if disconnected {
                        LinkState::Disconnected
                    } else {
                        LinkState::Failing
                    };
                });
            }
        }
        self.send_all(readings, di).await
    }

    /// Reads one block (or its tags one by one once split) and records the readings. Returns
    /// the error that ends the device's cycle; exceptions only mark their tags bad.
    async fn read_block(
        &mut self,
        di: usize,
        gi: usize,
        bi: usize,
        readings: &mut Vec<Reading>,
    ) -> Result<(), CallError> {
        let (block, split) = {
            let b = &self.devices[di].groups[gi].blocks[bi];
            (b.block.clone(), b.split)
        };
        if !split {
            let op = Op::Read {
                area: block.area,
                start: block.start,
                count: block.count,
            };
            match self.call(di, &op).await {
                Ok(data) => {
                    let ts = now_ms();
                    for &ti in &block.tags {
                        let (v, q) = extract(&self.devices[di].dev.tags[ti], block.start, &data);
                        readings.extend(self.devices[di].observe(ti, v, q, ts));
                    }
                    return Ok(());
                }
                Err(CallError::Exception(2)) if block.tags.len() > 1 => {
                    tracing::info!(bus = %self.key, device = %self.devices[di].dev.name, %op,
                        "illegal data address on a merged read: reading its tags one by one from now on");
                    self.devices[di].groups[gi].blocks[bi].split = true;
                }
                Err(e @ CallError::Exception(_)) => {
                    let ts = now_ms();
                    let q = Quality::Bad(BadReason::from(&e));
                    for &ti in &block.tags {
                        readings.extend(self.devices[di].observe(ti, None, q.clone(), ts));
                    }
                    return Ok(());
                }
                Err(e) => {
                    let ts = now_ms();
                    let q = Quality::Bad(BadReason::from(&e));
                    for &ti in &block.tags {
                        readings.extend(self.devices[di].observe(ti, None, q.clone(), ts));
                    }
                    return Err(e);
                }
            }
        }
        for &ti in &block.tags {
            let tag = &self.devices[di].dev.tags[ti];
            let op = Op::Read {
                area: tag.area,
                start: tag.address,
                count: tag.width(),
            };
            let start = tag.address;
            let r = self.call(di, &op).await;
            let ts = now_ms();
            let (v, q, fatal) = match r {
                Ok(data) => {
                    let (v, q) = extract(&self.devices[di].dev.tags[ti], start, &data);
                    (v, q, None)
                }
                Err(e @ CallError::Exception(_)) => (None, Quality::Bad(BadReason::from(&e)), None),
                Err(e) => (None, Quality::Bad(BadReason::from(&e)), Some(e)),
            };
            readings.extend(self.devices[di].observe(ti, v, q, ts));
            if let Some(e) = fatal {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn check_stale(&mut self) -> Result<(), SinkClosed> {
        let now = Instant::now();
        for di in 0..self.devices.len() {
            let mut readings = Vec::new();
            for gi in 0..self.devices[di].groups.len() {
                let g = &self.devices[di].groups[gi];
                let late = g
                    .last_success
                    .is_some_and(|t| now.duration_since(t) > g.interval * 3);
                if !late || g.stale_sent {
                    continue;
                }
                self.devices[di].groups[gi].stale_sent = true;
                let ts = now_ms();
                let tags: Vec<usize> = self.devices[di].groups[gi]
                    .blocks
                    .iter()
                    .flat_map(|b| b.block.tags.iter().copied())
                    .collect();
                for ti in tags {
                    let d = &mut self.devices[di];
                    let good = d.tags[ti]
                        .published
                        .as_ref()
                        .is_some_and(|p| p.quality.is_good());
                    if good {
                        let v = d.tags[ti].last_good.clone();
                        readings.extend(d.observe(ti, v, Quality::Stale, ts));
                    }
                }
            }
            self.send_all(readings, di).await?;
        }
        Ok(())
    }

    async fn write(
        &mut self,
        di: usize,
        items: Vec<(usize, Value)>,
    ) -> Result<WriteOutcome, WriteError> {
        let dev = self.devices[di].dev.clone();
        let r = self.write_inner(&dev, di, &items).await;
        self.devices[di].with_health(|h| {
            h.writes += 1;
            if r.is_err() {
                h.failed_writes += 1;
            }
        });
        // Poll the written tags' groups next, so the new values are reported promptly.
        let now = Instant::now();
        for (ti, _) in &items {
            let group = dev.tags[*ti].group;
            for g in self.devices[di].groups.iter_mut() {
                if g.blocks.iter().any(|b| b.block.group == group) {
                    g.next_due = now;
                }
            }
        }
        r
    }

    async fn write_inner(
        &mut self,
        dev: &Device,
        di: usize,
        items: &[(usize, Value)],
    ) -> Result<WriteOutcome, WriteError> {
        if self.link.is_none() {
            self.reconnect_at = self.reconnect_at.min(Instant::now());
        }
        // Raw values and the requests that carry them.
        enum Piece {
            Coil(u16, bool),
            Regs(u16, Vec<u16>),
            Mask(u16, u16, u16),
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let mut raw_of: Vec<(usize, Value)> = Vec::new();
        for (ti, value) in items {
            let t = &dev.tags[*ti];
            let value_err = |error| WriteError::Value {
                tag: t.name.clone(),
                error,
            };
            let raw = from_engineering(t.data_type, value, t.scale, t.offset).map_err(value_err)?;
            match (t.data_type, &raw) {
                (DataType::Bool, Value::Bool(b)) => pieces.push(Piece::Coil(t.address, *b)),
                (DataType::Bit(n), Value::Bool(b)) => {
                    let (and, or) = bit_masks(n, t.order, *b);
                    pieces.push(Piece::Mask(t.address, and, or));
                }
                _ => {
                    let regs = encode_registers(t.data_type, t.order, &raw).map_err(value_err)?;
                    pieces.push(Piece::Regs(t.address, regs));
                }
            }
            raw_of.push((*ti, raw));
        }
        // Merge adjacent coils and adjacent registers into multi-writes.
        let mut coils: Vec<(u16, bool)> = Vec::new();
        let mut regs: Vec<(u16, Vec<u16>)> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        for p in pieces {
            match p {
                Piece::Coil(a, b) => coils.push((a, b)),
                Piece::Regs(a, r) => regs.push((a, r)),
                Piece::Mask(address, and, or) => ops.push(Op::MaskWrite { address, and, or }),
            }
        }
        coils.sort_by_key(|c| c.0);
        let mut runs: Vec<(u16, Vec<bool>)> = Vec::new();
        for (a, b) in coils {
            match runs.last_mut() {
                Some((s, v))
                    if u32::from(*s) + v.len() as u32 == u32::from(a)
                        && v.len() < usize::from(MAX_BITS_PER_WRITE) =>
                {
                    v.push(b)
                }
                _ => runs.push((a, vec![b])),
            }
        }
        for (start, values) in runs {
            ops.push(if values.len() == 1 {
                Op::WriteCoil {
                    address: start,
                    value: values[0],
                }
            } else {
                Op::WriteCoils { start, values }
            });
        }
        regs.sort_by_key(|r| r.0);
        let mut rruns: Vec<(u16, Vec<u16>)> = Vec::new();
        for (a, r) in regs {
            match rruns.last_mut() {
                Some((s, v))
                    if u32::from(*s) + v.len() as u32 == u32::from(a)
                        && v.len() + r.len() <= usize::from(MAX_REGISTERS_PER_WRITE) =>
                {
                    v.extend(r)
                }
                _ => rruns.push((a, r)),
            }
        }
        for (start, values) in rruns {
            ops.push(if values.len() == 1 {
                Op::WriteRegister {
                    address: start,
                    value: values[0],
                }
            } else {
                Op::WriteRegisters { start, values }
            });
        }
        let requests = ops.len();
        for op in &ops {
            self.call(di, op).await.map_err(|e| WriteError::Device {
                op: op.to_string(),
                reason: BadReason::from(&e),
            })?;
        }
        // Read-back verification.
        let mut verified = false;
        for (ti, raw) in raw_of {
            let t = &dev.tags[ti];
            if !t.verify_write {
                continue;
            }
            let op = Op::Read {
                area: t.area,
                start: t.address,
                count: t.width(),
            };
            let data = self.call(di, &op).await.map_err(|e| WriteError::Device {
                op: op.to_string(),
                reason: BadReason::from(&e),
            })?;
            let read = match (&data, t.data_type) {
                (OpResult::Bits(b), _) => b.first().copied().map(Value::Bool),
                (OpResult::Registers(r), dt) => decode_registers(dt, t.order, r).ok(),
                _ => None,
            };
            let same = match (&read, &raw) {
                (Some(Value::F32(a)), Value::F32(b)) => a.to_bits() == b.to_bits() || a == b,
                (Some(Value::F64(a)), Value::F64(b)) => a.to_bits() == b.to_bits() || a == b,
                (Some(a), b) => a == b,
                (None, _) => false,
            };
            if !same {
                return Err(WriteError::VerifyMismatch {
                    tag: t.name.clone(),
                    wrote: raw.to_string(),
                    read: read
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "nothing".into()),
                });
            }
            verified = true;
        }
        Ok(WriteOutcome { requests, verified })
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Decodes one tag from a block read starting at `start`.
pub(crate) fn extract(tag: &Tag, start: u16, data: &OpResult) -> (Option<Value>, Quality) {
    let off = usize::from(tag.address - start);
    let raw = match (data, tag.area) {
        (OpResult::Bits(bits), Area::Coil | Area::DiscreteInput) => match bits.get(off) {
            Some(b) => Ok(Value::Bool(*b)),
            None => Err("bit outside the reply".to_string()),
        },
        (OpResult::Registers(regs), Area::HoldingRegister | Area::InputRegister) => {
            match regs.get(off..) {
                Some(slice) => {
                    decode_registers(tag.data_type, tag.order, slice).map_err(|e| e.to_string())
                }
                None => Err("register outside the reply".to_string()),
            }
        }
        _ => Err("reply of the wrong kind".to_string()),
    };
    match raw {
        Ok(v) => (
            Some(to_engineering(v, tag.scale, tag.offset)),
            Quality::Good,
        ),
        Err(e) => (None, Quality::Bad(BadReason::Decode(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::Deadband;

    fn tag(deadband: Option<Deadband>) -> Tag {
        Tag {
            name: "t".into(),
            group: 0,
            area: Area::HoldingRegister,
            address: 0,
            data_type: DataType::F32,
            order: Default::default(),
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            deadband,
            writable: false,
            verify_write: false,
        }
    }

    #[test]
    fn change_detection() {
        let t = tag(Some(Deadband::Absolute(0.5)));
        let f = |x: f32| Some(Value::F32(x));
        assert!(!value_changed(&t, f(1.0).as_ref(), f(1.4).as_ref()));
        assert!(value_changed(&t, f(1.0).as_ref(), f(1.6).as_ref()));
        let t = tag(None);
        assert!(!value_changed(&t, f(1.0).as_ref(), f(1.0).as_ref()));
        assert!(value_changed(&t, f(1.0).as_ref(), f(1.0001).as_ref()));
        assert!(!value_changed(
            &t,
            f(f32::NAN).as_ref(),
            f(f32::NAN).as_ref()
        ));
        assert!(value_changed(&t, None, f(1.0).as_ref()));
        assert!(!value_changed(
            &t,
            Some(&Value::Bool(true)),
            Some(&Value::Bool(true))
        ));
        assert!(value_changed(
            &t,
            Some(&Value::String("a".into())),
            Some(&Value::String("b".into()))
        ));
    }

    #[test]
    fn quality_kinds() {
        let io = |m: &str| Quality::Bad(BadReason::Io(m.into()));
        assert!(io("a").same_kind(&io("b")));
        assert!(
            !Quality::Bad(BadReason::Exception(2))
                .same_kind(&Quality::Bad(BadReason::Exception(3)))
        );
        assert!(!Quality::Good.same_kind(&Quality::Stale));
        assert_eq!(
            Quality::Bad(BadReason::Exception(2)).to_string(),
            "bad: exception 2 (illegal data address)"
        );
        let json = serde_json::to_string(&Quality::Bad(BadReason::Exception(2))).unwrap();
        assert_eq!(
            json,
            r#"{"quality":"bad","reason":{"kind":"exception","detail":2}}"#
        );
        assert_eq!(
            serde_json::to_string(&Quality::Good).unwrap(),
            r#"{"quality":"good"}"#
        );
    }

    #[test]
    fn extract_from_blocks() {
        let mut t = tag(None);
        t.address = 10;
        t.scale = 0.5;
        let regs = OpResult::Registers(vec![0, 0, 0x3F80, 0]);
        assert_eq!(
            extract(&t, 8, &regs),
            (Some(Value::F64(0.5)), Quality::Good)
        );
        let (v, q) = extract(&t, 9, &regs);
        assert!(v.is_some() && q.is_good());
        let (v, q) = extract(&t, 7, &regs);
        assert!(v.is_none() && matches!(q, Quality::Bad(BadReason::Decode(_))));
        let (_, q) = extract(&t, 8, &OpResult::Bits(vec![true]));
        assert!(!q.is_good());
    }
}
