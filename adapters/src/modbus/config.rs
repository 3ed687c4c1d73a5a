//! The operator's device and tag model and its validation.
//!
//! The raw, deserialized form ([`ModbusConfig`], [`DeviceConfig`], [`TagConfig`]) mirrors the
//! TOML (`[modbus]` table in the gateway's file, see `adapters/README.md`) and rejects unknown
//! fields. [`ModbusConfig::validate`] checks what the types cannot and resolves every device into
//! a [`Device`] the planner and poller use; each problem is a [`ConfigIssue`] whose `field` is a
//! dotted path relative to the `[modbus]` table, e.g. `devices[0].tags[3].address`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codec::{DataType, WordOrder};

/// Register/bit area of a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    #[serde(alias = "coils")]
    Coil,
    #[serde(alias = "discrete_inputs")]
    DiscreteInput,
    #[serde(alias = "holding_registers", alias = "holding")]
    HoldingRegister,
    #[serde(alias = "input_registers", alias = "input")]
    InputRegister,
}

impl Area {
    pub fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }
    pub fn is_writable(self) -> bool {
        matches!(self, Area::Coil | Area::HoldingRegister)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::DiscreteInput => "discrete_input",
            Area::HoldingRegister => "holding_register",
            Area::InputRegister => "input_register",
        }
    }
    /// Leading digit of the Modicon notation (0xxxx, 1xxxx, 3xxxx, 4xxxx).
    pub fn modicon_digit(self) -> u8 {
        match self {
            Area::Coil => 0,
            Area::DiscreteInput => 1,
            Area::InputRegister => 3,
            Area::HoldingRegister => 4,
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything below `[modbus]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModbusConfig {
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// Modbus TCP: `address = "10.0.0.5:502"` (port defaults to 502).
    Tcp { address: String },
    /// Modbus RTU on a serial line.
    Rtu {
        path: String,
        #[serde(default = "default_baud")]
        baud: u32,
        #[serde(default)]
        parity: Parity,
        #[serde(default = "default_data_bits")]
        data_bits: u8,
        #[serde(default = "default_stop_bits")]
        stop_bits: u8,
    },
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp { address } => write!(f, "tcp {address}"),
            Transport::Rtu {
                path,
                baud,
                parity,
                data_bits,
                stop_bits,
            } => {
                let p = match parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                write!(f, "rtu {path} {baud} {data_bits}{p}{stop_bits}")
            }
        }
    }
}

/// A named poll group with its own interval (`[[modbus.devices.groups]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroup {
    pub name: String,
    pub interval_ms: u64,
}

/// One device as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub transport: Transport,
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Extra attempts after a timeout, CRC error or I/O error (not after an exception).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Interval of the implicit group `default`, used by tags without `group`.
    #[serde(default = "default_interval")]
    pub poll_interval_ms: u64,
    #[serde(default)]
    pub groups: Vec<PollGroup>,
    /// Re-publish unchanged values after this long (0 = only on change).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Unused registers a read may span to merge two tags into one request.
    #[serde(default = "default_gap_registers")]
    pub max_gap_registers: u16,
    /// Unused bits a read may span to merge two tags into one request.
    #[serde(default = "default_gap_bits")]
    pub max_gap_bits: u16,
    /// At most 125 (the protocol limit); some devices need less.
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// At most 2000 (the protocol limit).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_read: u16,
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

fn yes() -> bool {
    true
}
fn default_unit() -> u8 {
    1
}
fn default_timeout() -> u64 {
    1000
}
fn default_retries() -> u32 {
    1
}
fn default_interval() -> u64 {
    1000
}
fn default_heartbeat() -> u64 {
    60_000
}
fn default_gap_registers() -> u16 {
    10
}
fn default_gap_bits() -> u16 {
    64
}
fn default_max_registers() -> u16 {
    MAX_REGISTERS_PER_READ
}
fn default_max_bits() -> u16 {
    MAX_BITS_PER_READ
}

/// Protocol limits for one read request.
pub const MAX_REGISTERS_PER_READ: u16 = 125;
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Protocol limits for one write request (functions 15 and 16).
pub const MAX_REGISTERS_PER_WRITE: u16 = 123;
pub const MAX_BITS_PER_WRITE: u16 = 1968;

/// An address: a 0-based number, or a string in Modicon notation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AddressSpec {
    Offset(i64),
    Text(String),
}

/// Deadband: an absolute number in engineering units, or a string `"2%"`: percent of the last
/// published value's magnitude.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    Absolute(f64),
    Percent(f64),
}

/// As written in the configuration (a number, or `"2%"`), so a serialized configuration reads
/// back the same.
impl Serialize for Deadband {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Deadband::Absolute(v) => s.serialize_f64(*v),
            Deadband::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for Deadband {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "{s:?} is not a deadband (examples: 0.5 for an absolute deadband, \"2%\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(Deadband::Absolute(i as f64)),
            Raw::Float(f) => Ok(Deadband::Absolute(f)),
            Raw::Text(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    p.trim()
                        .parse::<f64>()
                        .map(Deadband::Percent)
                        .map_err(|_| bad(&s))
                } else {
                    t.parse::<f64>()
                        .map(Deadband::Absolute)
                        .map_err(|_| bad(&s))
                }
            }
        }
    }
}

impl Deadband {
    /// Whether `new` differs from the last published `old` by more than the deadband.
    pub fn exceeded(self, old: f64, new: f64) -> bool {
        if old.is_nan() || new.is_nan() {
            return old.is_nan() != new.is_nan();
        }
        let diff = (new - old).abs();
        match self {
            Deadband::Absolute(db) => diff > db,
            Deadband::Percent(p) => diff > old.abs() * p / 100.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    #[default]
    #[serde(alias = "read", alias = "ro")]
    ReadOnly,
    #[serde(alias = "rw")]
    ReadWrite,
}

/// Data type names as written in the configuration (`bit` needs `bit = n`, `string` needs
/// `length = bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeName {
    #[serde(alias = "boolean")]
    Bool,
    Bit,
    #[serde(alias = "uint16", alias = "word")]
    U16,
    #[serde(alias = "int16")]
    I16,
    #[serde(alias = "uint32")]
    U32,
    #[serde(alias = "int32")]
    I32,
    #[serde(alias = "uint64")]
    U64,
    #[serde(alias = "int64")]
    I64,
    #[serde(alias = "float32", alias = "float", alias = "real")]
    F32,
    #[serde(alias = "float64", alias = "double")]
    F64,
    String,
}

/// One tag as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    pub name: String,
    /// Poll group; default: the device's `poll_interval_ms` group `default`.
    #[serde(default)]
    pub group: Option<String>,
    /// Optional when `address` is in Modicon notation, which names the area.
    #[serde(default)]
    pub area: Option<Area>,
    pub address: AddressSpec,
    #[serde(rename = "type")]
    pub data_type: TypeName,
    /// For `type = "bit"`: bit number 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `type = "string"`: length in bytes (two per register).
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub order: WordOrder,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, e.g. `"degC"`.
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub deadband: Option<Deadband>,
    #[serde(default)]
    pub access: Access,
    /// After a write, read the value back and fail the write if it differs.
    #[serde(default)]
    pub verify_write: bool,
}

fn one() -> f64 {
    1.0
}

/// A validation problem: `field` is a dotted path below `[modbus]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub name: String,
    /// Index into [`Device::groups`].
    pub group: usize,
    pub area: Area,
    /// 0-based protocol address.
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    pub unit: String,
    pub deadband: Option<Deadband>,
    pub writable: bool,
    pub verify_write: bool,
}

impl Tag {
    /// Registers (register areas) or bits (bit areas) the tag occupies.
    pub fn width(&self) -> u16 {
        self.data_type.width()
    }
    /// One past the last address, as u32 (never overflows).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width())
    }
    /// Whether the published value is scaled (then it is always `f64`).
    pub fn is_scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }
    /// The kind of value readings of this tag carry (for e.g. Sparkplug datatypes).
    pub fn value_kind(&self) -> super::codec::ValueKind {
        if self.is_scaled() && self.data_type.is_numeric() {
            super::codec::ValueKind::F64
        } else {
            self.data_type.raw_kind()
        }
    }
}

/// A validated poll group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedGroup {
    pub name: String,
    pub interval: Duration,
}

/// A validated device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub name: String,
    pub enabled: bool,
    pub transport: Transport,
    pub unit_id: u8,
    pub timeout: Duration,
    pub retries: u32,
    pub heartbeat: Option<Duration>,
    pub groups: Vec<ResolvedGroup>,
    pub tags: Vec<Tag>,
    pub max_gap_registers: u16,
    pub max_gap_bits: u16,
    pub max_registers_per_read: u16,
    pub max_bits_per_read: u16,
}

impl Device {
    pub fn tag(&self, name: &str) -> Option<(usize, &Tag)> {
        self.tags.iter().enumerate().find(|(_, t)| t.name == name)
    }
    /// The key of the bus the device shares with others: the TCP address or the serial path.
    pub fn bus_key(&self) -> String {
        match &self.transport {
            Transport::Tcp { address } => format!("tcp:{}", normalize_tcp(address)),
            Transport::Rtu { path, .. } => format!("rtu:{path}"),
        }
    }
}

fn normalize_tcp(address: &str) -> String {
    match split_host_port(address) {
        Ok((h, p)) => format!("{h}:{p}"),
        Err(_) => address.to_string(),
    }
}

/// `host:port`, `host` (port 502), `[v6]:port`.
pub(crate) fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let a = address.trim();
    if a.is_empty() {
        return Err("must not be empty (e.g. \"10.0.0.5:502\")".into());
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((h, tail)) = rest.split_once(']') else {
            return Err(format!("{a:?}: missing ']'"));
        };
        match tail.strip_prefix(':') {
            Some(p) => (h.to_string(), Some(p)),
            None if tail.is_empty() => (h.to_string(), None),
            None => return Err(format!("{a:?} is not host:port")),
        }
    } else if a.matches(':').count() == 1 {
        let (h, p) = a.split_once(':').unwrap_or((a, ""));
        (h.to_string(), Some(p))
    } else if a.contains(':') {
        // A bare IPv6 address without a port.
        (a.to_string(), None)
    } else {
        (a.to_string(), None)
    };
    if host.is_empty() {
        return Err(format!("{a:?} has no host"));
    }
    let port = match port {
        None => 502,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{a:?}: port must be 1..65535")),
            Ok(n) => n,
        },
    };
    Ok((host, port))
}

/// Parses an address: a 0-based integer, or Modicon notation `"40001"` (5 digits, 1-based,
/// up to 9999 per area) or `"400001"` (6 digits, up to 65536). The leading digit names the
/// area: 0 coil, 1 discrete input, 3 input register, 4 holding register. A string of other
/// form (e.g. `"100"`) is a 0-based address.
pub fn parse_address(spec: &AddressSpec) -> Result<(Option<Area>, u16), String> {
    match spec {
        AddressSpec::Offset(n) => u16::try_from(*n)
            .map(|a| (None, a))
            .map_err(|_| format!("{n} is out of range (0-based addresses are 0..=65535)")),
        AddressSpec::Text(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{s:?} is not an address (use a 0-based number, or Modicon notation such as \"40001\")"
                ));
            }
            if t.len() != 5 && t.len() != 6 {
                return t
                    .parse::<u16>()
                    .map(|a| (None, a))
                    .map_err(|_| format!("{s:?} is out of range (0..=65535)"));
            }
            let area = match t.as_bytes()[0] {
                b'0' => Area::Coil,
                b'1' => Area::DiscreteInput,
                b'3' => Area::InputRegister,
                b'4' => Area::HoldingRegister,
                _ => {
                    return Err(format!(
                        "{s:?}: Modicon addresses start with 0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register)"
                    ));
                }
            };
            let n: u32 = t[1..]
                .parse()
                .map_err(|_| format!("{s:?} is not a number"))?;
            let max = if t.len() == 5 { 9999 } else { 65536 };
            if n == 0 || n > max {
                return Err(format!(
                    "{s:?}: Modicon addresses are 1-based ({}{}..={}{})",
                    area.modicon_digit(),
                    if t.len() == 5 { "0001" } else { "00001" },
                    area.modicon_digit(),
                    max
                ));
            }
            Ok((Some(area), (n - 1) as u16))
        }
    }
}

fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 128 {
        return Some("must be at most 128 bytes".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Some(format!(
            "{name:?} contains {c:?}; names become MQTT topic levels, so '/', '+', '#' and control characters are not allowed"
        ));
    }
    None
}

impl ModbusConfig {
    /// Validates every device and returns the resolved ones (disabled devices included, with
    /// `enabled = false`), or every problem found.
    pub fn validate(&self) -> Result<Vec<Device>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut devices = Vec::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let path = format!("devices[{i}]");
            if let Some(prev) = names.insert(d.name.as_str(), i) {
                issues.push(ConfigIssue {
                    field: format!("{path}.name"),
                    message: format!("duplicate device name {:?} (also devices[{prev}])", d.name),
                });
            }
            match d.resolve(&path) {
                Ok(dev) => devices.push((i, dev)),
                Err(mut e) => issues.append(&mut e),
            }
        }
        // Devices sharing a bus: same serial settings, distinct unit ids.
        let mut buses: BTreeMap<String, Vec<(usize, &Device)>> = BTreeMap::new();
        for (i, d) in &devices {
            if d.enabled {
                buses.entry(d.bus_key()).or_default().push((*i, d));
            }
        }
        for members in buses.values() {
            let (first_i, first) = members[0];
            let mut units: HashMap<u8, usize> = HashMap::new();
            for &(i, d) in members {
                if let Some(prev) = units.insert(d.unit_id, i) {
                    issues.push(ConfigIssue {
                        field: format!("devices[{i}].unit_id"),
                        message: format!(
                            "unit id {} is already used by devices[{prev}] ({:?}) on the same {}",
                            d.unit_id,
                            self.devices[prev].name,
                            if matches!(d.transport, Transport::Rtu { .. }) {
                                "serial line"
                            } else {
                                "TCP address"
                            }
                        ),
                    });
                }
                if i != first_i
                    && matches!(d.transport, Transport::Rtu { .. })
                    && d.transport != first.transport
                {
                    issues.push(ConfigIssue {
                        field: format!("devices[{i}].transport"),
                        message: format!(
                            "{} shares the serial line with devices[{first_i}] ({:?}) but its settings differ ({}); all devices on one line use the same baud rate, parity, data and stop bits",
                            d.transport, first.name, first.transport
                        ),
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(devices.into_iter().map(|(_, d)| d).collect())
        } else {
            Err(issues)
        }
    }
}

impl DeviceConfig {
    /// Validates this device; `path` prefixes the field names (e.g. `devices[0]`).
    pub fn resolve(&self, path: &str) -> Result<Device, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, message: String| {
            issues.push(ConfigIssue {
                field: format!("{path}.{field}"),
                message,
            })
        };
        if let Some(p) = name_problem(&self.name) {
            bad("name", p);
        }
        match &self.transport {
            Transport::Tcp { address } => {
                if let Err(e) = split_host_port(address) {
                    bad("transport.address", e);
                }
            }
            Transport::Rtu {
                path: dev,
                baud,
                parity,
                data_bits,
                stop_bits,
            } => {
                if dev.trim().is_empty() {
                    bad(
                        "transport.path",
                        "must name the serial device, e.g. \"/dev/ttyUSB0\"".into(),
                    );
                }
                if !(50..=4_000_000).contains(baud) {
                    bad(
                        "transport.baud",
                        format!("{baud} is not a usable baud rate (e.g. 9600, 19200, 115200)"),
                    );
                }
                if *data_bits != 8 {
                    bad(
                        "transport.data_bits",
                        format!("{data_bits}: Modbus RTU frames use 8 data bits"),
                    );
                }
                if *stop_bits != 1 && *stop_bits != 2 {
                    bad(
                        "transport.stop_bits",
                        format!("{stop_bits}: must be 1 or 2"),
                    );
                }
                let _ = parity;
                if !(1..=247).contains(&self.unit_id) {
                    bad(
                        "unit_id",
                        format!(
                            "{}: RTU unit ids are 1..=247 (0 is broadcast, 248..=255 reserved)",
                            self.unit_id
                        ),
                    );
                }
            }
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            bad(
                "timeout_ms",
                format!("{}: must be 1..=60000", self.timeout_ms),
            );
        }
        if self.retries > 10 {
            bad("retries", format!("{}: must be 0..=10", self.retries));
        }
        if self.max_registers_per_read == 0 || self.max_registers_per_read > MAX_REGISTERS_PER_READ
        {
            bad(
                "max_registers_per_read",
                format!(
                    "{}: must be 1..={MAX_REGISTERS_PER_READ} (Modbus limit)",
                    self.max_registers_per_read
                ),
            );
        }
        if self.max_bits_per_read == 0 || self.max_bits_per_read > MAX_BITS_PER_READ {
            bad(
                "max_bits_per_read",
                format!(
                    "{}: must be 1..={MAX_BITS_PER_READ} (Modbus limit)",
                    self.max_bits_per_read
                ),
            );
        }
        let interval_ok = |ms: u64| (10..=86_400_000).contains(&ms);
        if !interval_ok(self.poll_interval_ms) {
            bad(
                "poll_interval_ms",
                format!(
                    "{}: must be 10..=86400000 (10 ms to a day)",
                    self.poll_interval_ms
                ),
            );
        }
        let mut groups = vec![ResolvedGroup {
            name: "default".into(),
            interval: Duration::from_millis(self.poll_interval_ms),
        }];
        for (gi, g) in self.groups.iter().enumerate() {
            if let Some(p) = name_problem(&g.name) {
                bad(&format!("groups[{gi}].name"), p);
            }
            if groups.iter().any(|x| x.name == g.name) {
                bad(
                    &format!("groups[{gi}].name"),
                    format!(
                        "duplicate group name {:?}{}",
                        g.name,
                        if g.name == "default" {
                            " (the group \"default\" is the device's poll_interval_ms)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            if !interval_ok(g.interval_ms) {
                bad(
                    &format!("groups[{gi}].interval_ms"),
                    format!("{}: must be 10..=86400000 (10 ms to a day)", g.interval_ms),
                );
            }
            groups.push(ResolvedGroup {
                name: g.name.clone(),
                interval: Duration::from_millis(g.interval_ms),
            });
        }

        let mut tags = Vec::new();
        let mut tag_names: HashMap<&str, usize> = HashMap::new();
        for (ti, t) in self.tags.iter().enumerate() {
            let tpath = format!("tags[{ti}]");
            if let Some(prev) = tag_names.insert(t.name.as_str(), ti) {
                bad(
                    &format!("{tpath}.name"),
                    format!("duplicate tag name {:?} (also tags[{prev}])", t.name),
                );
            }
            match t.resolve(&groups) {
                Ok(tag) => tags.push((ti, tag)),
                Err(errs) => {
                    for (field, message) in errs {
                        bad(&format!("{tpath}.{field}"), message);
                    }
                }
            }
        }
        // Overlaps, per area. Bit tags may share a register when their bits differ.
        let mut by_area: BTreeMap<Area, Vec<(usize, &Tag)>> = BTreeMap::new();
        for (ti, t) in &tags {
            by_area.entry(t.area).or_default().push((*ti, t));
        }
        for list in by_area.values_mut() {
            list.sort_by_key(|(ti, t)| (t.address, *ti));
            let mut seen_bits: HashSet<(u16, u8)> = HashSet::new();
            // The tag reaching furthest so far.
            let mut reach: Option<(usize, &Tag)> = None;
            for &(ti, t) in list.iter() {
                if let DataType::Bit(n) = t.data_type
                    && !seen_bits.insert((t.address, n))
                {
                    bad(
                        &format!("tags[{ti}].bit"),
                        format!("bit {n} of {} {} is already another tag", t.area, t.address),
                    );
                }
                if let Some((pi, p)) = reach {
                    let both_bits = matches!(p.data_type, DataType::Bit(_))
                        && matches!(t.data_type, DataType::Bit(_));
                    if u32::from(t.address) < p.end() && !both_bits {
                        bad(
                            &format!("tags[{ti}].address"),
                            format!(
                                "{} {}..{} ({:?}) overlaps tags[{pi}] {:?} at {}..{}",
                                t.area,
                                t.address,
                                t.end(),
                                t.name,
                                p.name,
                                p.address,
                                p.end()
                            ),
                        );
                    }
                }
                if reach.is_none_or(|(_, p)| t.end() > p.end()) {
                    reach = Some((ti, t));
                }
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Device {
            name: self.name.clone(),
            enabled: self.enabled,
            transport: self.transport.clone(),
            unit_id: self.unit_id,
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            heartbeat: (self.heartbeat_ms > 0).then(|| Duration::from_millis(self.heartbeat_ms)),
            groups,
            tags: tags.into_iter().map(|(_, t)| t).collect(),
            max_gap_registers: self.max_gap_registers,
            max_gap_bits: self.max_gap_bits,
            max_registers_per_read: self.max_registers_per_read,
            max_bits_per_read: self.max_bits_per_read,
        })
    }
}

impl TagConfig {
    /// Returns (field, message) pairs on error.
    fn resolve(&self, groups: &[ResolvedGroup]) -> Result<Tag, Vec<(String, String)>> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut bad = |f: &str, m: String| errs.push((f.to_string(), m));
        if let Some(p) = name_problem(&self.name) {
            bad("name", p);
        }
        let group = match &self.group {
            None => 0,
            Some(g) => match groups.iter().position(|x| &x.name == g) {
                Some(i) => i,
                None => {
                    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    bad(
                        "group",
                        format!("no poll group {g:?} (groups: {})", names.join(", ")),
                    );
                    0
                }
            },
        };
        let (area, address) = match parse_address(&self.address) {
            Err(e) => {
                bad("address", e);
                (self.area.unwrap_or(Area::HoldingRegister), 0)
            }
            Ok((notation, addr)) => match (notation, self.area) {
                (Some(n), Some(a)) if n != a => {
                    bad(
                        "area",
                        format!("{a} contradicts the address's Modicon notation, which means {n}"),
                    );
                    (a, addr)
                }
                (Some(n), _) => (n, addr),
                (None, Some(a)) => (a, addr),
                (None, None) => {
                    bad(
                        "area",
                        "missing: coil, discrete_input, holding_register or input_register (or write the address in Modicon notation, e.g. \"40001\")".into(),
                    );
                    (Area::HoldingRegister, addr)
                }
            },
        };
        let data_type = match self.data_type {
            TypeName::Bool => DataType::Bool,
            TypeName::Bit => match self.bit {
                Some(n) if n < 16 => DataType::Bit(n),
                Some(n) => {
                    bad("bit", format!("{n}: a register has bits 0..=15"));
                    DataType::Bit(0)
                }
                None => {
                    bad("bit", "missing: type \"bit\" needs bit = 0..=15".into());
                    DataType::Bit(0)
                }
            },
            TypeName::U16 => DataType::U16,
            TypeName::I16 => DataType::I16,
            TypeName::U32 => DataType::U32,
            TypeName::I32 => DataType::I32,
            TypeName::U64 => DataType::U64,
            TypeName::I64 => DataType::I64,
            TypeName::F32 => DataType::F32,
            TypeName::F64 => DataType::F64,
            TypeName::String => match self.length {
                Some(n) if (1..=MAX_REGISTERS_PER_READ * 2).contains(&n) => DataType::String(n),
                Some(n) => {
                    bad(
                        "length",
                        format!(
                            "{n}: a string is 1..={} bytes (it must fit one read)",
                            MAX_REGISTERS_PER_READ * 2
                        ),
                    );
                    DataType::String(1)
                }
                None => {
                    bad(
                        "length",
                        "missing: type \"string\" needs length = bytes".into(),
                    );
                    DataType::String(1)
                }
            },
        };
        if self.bit.is_some() && self.data_type != TypeName::Bit {
            bad("bit", "only for type = \"bit\"".into());
        }
        if self.length.is_some() && self.data_type != TypeName::String {
            bad("length", "only for type = \"string\"".into());
        }
        if area.is_bits() && data_type != DataType::Bool {
            bad(
                "type",
                format!(
                    "{data_type} does not fit {area}: coils and discrete inputs hold one bit each; use type = \"bool\""
                ),
            );
        }
        if !area.is_bits() && data_type == DataType::Bool {
            bad(
                "type",
                format!(
                    "bool does not fit {area}: use type = \"bit\" with bit = n for one bit of a register"
                ),
            );
        }
        let end = u32::from(address) + u32::from(data_type.width());
        if end > 65_536 {
            bad(
                "address",
                format!(
                    "{area} {address} with {data_type} ({} {}) runs past the last address 65535",
                    data_type.width(),
                    if area.is_bits() { "bits" } else { "registers" }
                ),
            );
        }
        let numeric = data_type.is_numeric();
        if !self.scale.is_finite() || self.scale == 0.0 {
            bad(
                "scale",
                format!("{}: must be a non-zero number", self.scale),
            );
        } else if self.scale != 1.0 && !numeric {
            bad(
                "scale",
                format!("only numeric types are scaled, not {data_type}"),
            );
        }
        if !self.offset.is_finite() {
            bad("offset", format!("{}: must be a number", self.offset));
        } else if self.offset != 0.0 && !numeric {
            bad(
                "offset",
                format!("only numeric types have an offset, not {data_type}"),
            );
        }
        if let Some(db) = self.deadband {
            if !numeric {
                bad(
                    "deadband",
                    format!(
                        "only numeric types have a deadband; {data_type} is reported on every change"
                    ),
                );
            }
            let v = match db {
                Deadband::Absolute(v) | Deadband::Percent(v) => v,
            };
            if !v.is_finite() || v < 0.0 {
                bad("deadband", format!("{v}: must be a number >= 0"));
            }
        }
        let writable = self.access == Access::ReadWrite;
        if writable && !area.is_writable() {
            bad(
                "access",
                format!(
                    "{area}s are read-only in Modbus; only coils and holding registers can be written"
                ),
            );
        }
        if self.verify_write && !writable {
            bad("verify_write", "only for access = \"read_write\"".into());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Tag {
            name: self.name.clone(),
            group,
            area,
            address,
            data_type,
            order: self.order,
            scale: self.scale,
            offset: self.offset,
            unit: self.unit.clone(),
            deadband: self.deadband,
            writable,
            verify_write: self.verify_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ModbusConfig {
        toml::from_str(toml_text).expect("parses")
    }

    fn issues(toml_text: &str) -> Vec<ConfigIssue> {
        parse(toml_text).validate().expect_err("should be invalid")
    }

    fn has(issues: &[ConfigIssue], field: &str, needle: &str) -> bool {
        issues
            .iter()
            .any(|i| i.field == field && i.message.contains(needle))
    }

    const GOOD: &str = r#"
[[devices]]
name = "press"
transport = { type = "tcp", address = "127.0.0.1:5020" }
unit_id = 1
poll_interval_ms = 1000
groups = [{ name = "fast", interval_ms = 100 }]

[[devices.tags]]
name = "speed"
group = "fast"
address = "40001"
type = "f32"
order = "CDAB"
scale = 0.1
unit = "rpm"
deadband = "2%"
access = "read_write"

[[devices.tags]]
name = "running"
area = "coil"
address = 0
type = "bool"

[[devices.tags]]
name = "alarm_bit_3"
area = "holding_register"
address = 10
type = "bit"
bit = 3

[[devices.tags]]
name = "alarm_bit_4"
address = "40011"
type = "bit"
bit = 4

[[devices.tags]]
name = "serial"
area = "input_register"
address = 100
type = "string"
length = 10

[[devices]]
name = "meter"
transport = { type = "rtu", path = "/dev/ttyUSB0", baud = 19200, parity = "even" }
unit_id = 7
[[devices.tags]]
name = "energy"
address = "300001"
type = "u64"
deadband = 0.5
"#;

    #[test]
    fn good_config_resolves() {
        let devices = parse(GOOD).validate().expect("valid");
        assert_eq!(devices.len(), 2);
        let press = &devices[0];
        let (_, speed) = press.tag("speed").expect("tag");
        assert_eq!(speed.area, Area::HoldingRegister);
        assert_eq!(speed.address, 0);
        assert_eq!(speed.group, 1);
        assert_eq!(speed.order, WordOrder::CDAB);
        assert_eq!(speed.deadband, Some(Deadband::Percent(2.0)));
        assert!(speed.writable);
        assert_eq!(press.tag("alarm_bit_4").map(|(_, t)| t.address), Some(10));
        assert_eq!(
            press.tag("serial").map(|(_, t)| t.data_type),
            Some(DataType::String(10))
        );
        let meter = &devices[1];
        assert_eq!(meter.tags[0].area, Area::InputRegister);
        assert_eq!(meter.tags[0].deadband, Some(Deadband::Absolute(0.5)));
        assert_eq!(meter.retries, 1);
        assert_eq!(meter.timeout, Duration::from_millis(1000));
        assert_eq!(meter.bus_key(), "rtu:/dev/ttyUSB0");
        assert_eq!(press.bus_key(), "tcp:127.0.0.1:5020");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = toml::from_str::<ModbusConfig>(
            "[[devices]]\nname='a'\ntransport={type='tcp', address='h'}\ncolour='red'\n",
        )
        .expect_err("unknown field");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = toml::from_str::<ModbusConfig>(
            "[[devices]]\nname='a'\ntransport={type='tcp', address='h', baud=9600}\n",
        )
        .expect_err("unknown transport field");
        assert!(e.to_string().contains("baud"), "{e}");
        let e = toml::from_str::<ModbusConfig>(
            "[[devices]]\nname='a'\ntransport={type='tcp', address='h'}\n[[devices.tags]]\nname='x'\naddress=1\ntype='u16'\nscael=2\n",
        )
        .expect_err("unknown tag field");
        assert!(e.to_string().contains("scael"), "{e}");
    }

    #[test]
    fn modicon_notation() {
        let p = |s: &str| parse_address(&AddressSpec::Text(s.into()));
        assert_eq!(p("40001"), Ok((Some(Area::HoldingRegister), 0)));
        assert_eq!(p("49999"), Ok((Some(Area::HoldingRegister), 9998)));
        assert_eq!(p("30010"), Ok((Some(Area::InputRegister), 9)));
        assert_eq!(p("10001"), Ok((Some(Area::DiscreteInput), 0)));
        assert_eq!(p("00005"), Ok((Some(Area::Coil), 4)));
        assert_eq!(p("465536"), Ok((Some(Area::HoldingRegister), 65535)));
        assert_eq!(p("300001"), Ok((Some(Area::InputRegister), 0)));
        assert_eq!(p("123"), Ok((None, 123)));
        assert!(p("40000").is_err());
        assert!(p("465537").is_err());
        assert!(p("20001").unwrap_err().contains("start with 0"));
        assert!(p("4x001").is_err());
        assert_eq!(
            parse_address(&AddressSpec::Offset(65535)),
            Ok((None, 65535))
        );
        assert!(parse_address(&AddressSpec::Offset(65536)).is_err());
        assert!(parse_address(&AddressSpec::Offset(-1)).is_err());
    }

    fn device(tags: &str) -> String {
        format!(
            "[[devices]]\nname = 'd'\ntransport = {{ type = 'tcp', address = '127.0.0.1' }}\n{tags}"
        )
    }

    #[test]
    fn overlapping_addresses() {
        let i = issues(&device(
            "[[devices.tags]]\nname='a'\naddress='40001'\ntype='u32'\n[[devices.tags]]\nname='b'\naddress='40002'\ntype='u16'\n",
        ));
        assert!(has(&i, "devices[0].tags[1].address", "overlaps"), "{i:?}");
        // Different areas do not overlap; bits of one register do not either.
        parse(&device(
            "[[devices.tags]]\nname='a'\naddress='40001'\ntype='u32'\n[[devices.tags]]\nname='b'\naddress='30001'\ntype='u32'\n\
             [[devices.tags]]\nname='c'\naddress='40010'\ntype='bit'\nbit=1\n[[devices.tags]]\nname='d'\naddress='40010'\ntype='bit'\nbit=2\n",
        ))
        .validate()
        .expect("valid");
        let i = issues(&device(
            "[[devices.tags]]\nname='c'\naddress='40010'\ntype='bit'\nbit=1\n[[devices.tags]]\nname='d'\naddress='40010'\ntype='bit'\nbit=1\n",
        ));
        assert!(has(&i, "devices[0].tags[1].bit", "already"), "{i:?}");
        // A long tag overlapping a later one past a short one in between.
        let i = issues(&device(
            "[[devices.tags]]\nname='s'\naddress=0\narea='holding_register'\ntype='string'\nlength=20\n\
             [[devices.tags]]\nname='x'\naddress=2\narea='input_register'\ntype='u16'\n\
             [[devices.tags]]\nname='y'\naddress=8\narea='holding_register'\ntype='u16'\n",
        ));
        assert!(has(&i, "devices[0].tags[2].address", "overlaps"), "{i:?}");
    }

    #[test]
    fn out_of_range_and_type_area_mismatch() {
        let i = issues(&device(
            "[[devices.tags]]\nname='a'\naddress=65535\narea='holding_register'\ntype='u32'\n\
             [[devices.tags]]\nname='b'\naddress=1\narea='coil'\ntype='u16'\n\
             [[devices.tags]]\nname='c'\naddress=1\narea='input_register'\ntype='bool'\n\
             [[devices.tags]]\nname='d'\naddress=1\narea='input_register'\ntype='u16'\naccess='read_write'\n\
             [[devices.tags]]\nname='e'\naddress='40100'\narea='coil'\ntype='bool'\n\
             [[devices.tags]]\nname='f'\naddress=5\ntype='u16'\n\
             [[devices.tags]]\nname='g'\naddress='40200'\ntype='bit'\n\
             [[devices.tags]]\nname='h'\naddress='40300'\ntype='string'\nlength=300\n\
             [[devices.tags]]\nname='i'\naddress='40400'\ntype='u16'\nscale=0\n\
             [[devices.tags]]\nname='j'\naddress='40500'\ntype='string'\nlength=4\ndeadband=1\n\
             [[devices.tags]]\nname='k/l'\naddress='40600'\ntype='u16'\ngroup='nope'\n",
        ));
        for (field, needle) in [
            ("devices[0].tags[0].address", "past the last address"),
            ("devices[0].tags[1].type", "does not fit coil"),
            ("devices[0].tags[2].type", "bool does not fit"),
            ("devices[0].tags[3].access", "read-only"),
            ("devices[0].tags[4].area", "contradicts"),
            ("devices[0].tags[5].area", "missing"),
            ("devices[0].tags[6].bit", "missing"),
            ("devices[0].tags[7].length", "300"),
            ("devices[0].tags[8].scale", "non-zero"),
            ("devices[0].tags[9].deadband", "only numeric"),
            ("devices[0].tags[10].name", "'/'"),
            ("devices[0].tags[10].group", "no poll group"),
        ] {
            assert!(has(&i, field, needle), "{field} {needle}: {i:#?}");
        }
    }

    #[test]
    fn duplicates_and_serial_settings() {
        let text = r#"
[[devices]]
name = "m1"
transport = { type = "rtu", path = "/dev/ttyS1", baud = 0, data_bits = 7, stop_bits = 3 }
unit_id = 0
timeout_ms = 0
[[devices.tags]]
name = "t"
address = 0
area = "holding_register"
type = "u16"
[[devices.tags]]
name = "t"
address = 1
area = "holding_register"
type = "u16"

[[devices]]
name = "m1"
transport = { type = "rtu", path = "/dev/ttyS2", baud = 9600 }
unit_id = 3
[[devices]]
name = "m3"
transport = { type = "rtu", path = "/dev/ttyS2", baud = 19200 }
unit_id = 3
[[devices]]
name = "plc"
transport = { type = "tcp", address = "10.0.0.1:70000" }
"#;
        let i = issues(text);
        for (field, needle) in [
            ("devices[0].transport.baud", "baud"),
            ("devices[0].transport.data_bits", "8 data bits"),
            ("devices[0].transport.stop_bits", "1 or 2"),
            ("devices[0].unit_id", "1..=247"),
            ("devices[0].timeout_ms", "1..=60000"),
            ("devices[0].tags[1].name", "duplicate tag name"),
            ("devices[1].name", "duplicate device name"),
            ("devices[2].unit_id", "already used"),
            ("devices[2].transport", "settings differ"),
            ("devices[3].transport.address", "port"),
        ] {
            assert!(has(&i, field, needle), "{field} {needle}: {i:#?}");
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("plc"), Ok(("plc".into(), 502)));
        assert_eq!(split_host_port("plc:1502"), Ok(("plc".into(), 1502)));
        assert_eq!(split_host_port("[::1]:1502"), Ok(("::1".into(), 1502)));
        assert_eq!(split_host_port("::1"), Ok(("::1".into(), 502)));
        assert!(split_host_port("plc:0").is_err());
        assert!(split_host_port(":502").is_err());
        assert!(split_host_port("").is_err());
    }

    #[test]
    fn readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("toml block") + "```toml\n".len();
        let len = readme[start..].find("```").expect("block end");
        #[derive(serde::Deserialize)]
        struct File {
            modbus: ModbusConfig,
        }
        let file: File =
            toml::from_str(&readme[start..start + len]).expect("README example parses");
        let devices = file.modbus.validate().expect("README example is valid");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].tags.len(), 7);
    }

    #[test]
    fn deadband_semantics() {
        assert!(!Deadband::Absolute(0.5).exceeded(10.0, 10.5));
        assert!(Deadband::Absolute(0.5).exceeded(10.0, 10.51));
        assert!(!Deadband::Percent(10.0).exceeded(100.0, 110.0));
        assert!(Deadband::Percent(10.0).exceeded(100.0, 89.0));
        assert!(Deadband::Percent(10.0).exceeded(0.0, 0.001));
        assert!(Deadband::Absolute(1.0).exceeded(1.0, f64::NAN));
        assert!(!Deadband::Absolute(1.0).exceeded(f64::NAN, f64::NAN));
        let e = toml::from_str::<TagConfig>("name='a'\naddress=1\ntype='u16'\ndeadband='x%'")
            .expect_err("bad deadband");
        assert!(e.to_string().contains("not a deadband"), "{e}");
        let d: TagConfig = toml::from_str("name='a'\naddress=1\ntype='u16'\ndeadband=2")
            .expect("integer deadband");
        assert_eq!(d.deadband, Some(Deadband::Absolute(2.0)));
    }
}
