//! Sparkplug B payloads: every Sparkplug 3.0 datatype, decoded from and encoded to the prost
//! types of `sparkplug_b.proto`, with limits for untrusted input and a JSON form.
//!
//! # Value encoding (Sparkplug 3.0, section 6.4.16 and the array appendix)
//!
//! | datatype | protobuf field | notes |
//! | --- | --- | --- |
//! | Int8, Int16, Int32 | `int_value` | encoded sign-extended to 32 bits; decoded by truncating to the width, so `0xFF` and `0xFFFFFFFF` are both `-1` for Int8 |
//! | UInt8, UInt16, UInt32 | `int_value` | `long_value` accepted on decode (Tahu Java sends UInt32 there) |
//! | Int64, UInt64 | `long_value` | Int64 two's complement; `int_value` accepted on decode |
//! | DateTime | `long_value` | ms since the Unix epoch |
//! | Float, Double | `float_value`, `double_value` | a Double sent as `float_value` is accepted |
//! | Boolean | `boolean_value` | |
//! | String, Text, UUID | `string_value` | |
//! | Bytes, File | `bytes_value` | File metadata in `metadata` |
//! | DataSet | `dataset_value` | cells typed by the column types (basic types only) |
//! | Template | `template_value` | members are metrics, parameters typed |
//! | PropertySet, PropertySetList | properties only | |
//! | Int8Array … UInt64Array, FloatArray, DoubleArray, DateTimeArray | `bytes_value` | packed little-endian |
//! | BooleanArray | `bytes_value` | 4-byte LE count, then the bits MSB first, padded to a byte |
//! | StringArray | `bytes_value` | UTF-8 strings, each NUL-terminated |
//!
//! (The 3.0 specification's FloatArray/DoubleArray examples show big-endian bytes although the
//! text says little-endian; Eclipse Tahu and this codec use little-endian.)
//!
//! A data message may carry a metric by alias without a datatype. Such a value is decoded
//! *untyped* — `int_value` as UInt32, `long_value` as UInt64, `bytes_value` as Bytes, … — which
//! keeps every bit, and [`Metric::resolve`] re-reads it once the datatype is known from the birth.

use std::fmt;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value as Json};

use super::proto::payload as pb;

/// Sparkplug B datatypes (the numbers are the wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
    Uuid = 15,
    DataSet = 16,
    Bytes = 17,
    File = 18,
    Template = 19,
    PropertySet = 20,
    PropertySetList = 21,
    Int8Array = 22,
    Int16Array = 23,
    Int32Array = 24,
    Int64Array = 25,
    UInt8Array = 26,
    UInt16Array = 27,
    UInt32Array = 28,
    UInt64Array = 29,
    FloatArray = 30,
    DoubleArray = 31,
    BooleanArray = 32,
    StringArray = 33,
    DateTimeArray = 34,
}

impl DataType {
    pub const ALL: [DataType; 34] = [
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float,
        DataType::Double,
        DataType::Boolean,
        DataType::String,
        DataType::DateTime,
        DataType::Text,
        DataType::Uuid,
        DataType::DataSet,
        DataType::Bytes,
        DataType::File,
        DataType::Template,
        DataType::PropertySet,
        DataType::PropertySetList,
        DataType::Int8Array,
        DataType::Int16Array,
        DataType::Int32Array,
        DataType::Int64Array,
        DataType::UInt8Array,
        DataType::UInt16Array,
        DataType::UInt32Array,
        DataType::UInt64Array,
        DataType::FloatArray,
        DataType::DoubleArray,
        DataType::BooleanArray,
        DataType::StringArray,
        DataType::DateTimeArray,
    ];

    /// The datatype with wire code `code`; `None` for 0 (Unknown) and codes beyond 34.
    pub fn from_code(code: u32) -> Option<DataType> {
        let i = code.checked_sub(1)? as usize;
        DataType::ALL.get(i).copied()
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    /// The specification's name (`"Int8"`, `"UUID"`, `"DateTimeArray"`, …).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Int8 => "Int8",
            DataType::Int16 => "Int16",
            DataType::Int32 => "Int32",
            DataType::Int64 => "Int64",
            DataType::UInt8 => "UInt8",
            DataType::UInt16 => "UInt16",
            DataType::UInt32 => "UInt32",
            DataType::UInt64 => "UInt64",
            DataType::Float => "Float",
            DataType::Double => "Double",
            DataType::Boolean => "Boolean",
            DataType::String => "String",
            DataType::DateTime => "DateTime",
            DataType::Text => "Text",
            DataType::Uuid => "UUID",
            DataType::DataSet => "DataSet",
            DataType::Bytes => "Bytes",
            DataType::File => "File",
            DataType::Template => "Template",
            DataType::PropertySet => "PropertySet",
            DataType::PropertySetList => "PropertySetList",
            DataType::Int8Array => "Int8Array",
            DataType::Int16Array => "Int16Array",
            DataType::Int32Array => "Int32Array",
            DataType::Int64Array => "Int64Array",
            DataType::UInt8Array => "UInt8Array",
            DataType::UInt16Array => "UInt16Array",
            DataType::UInt32Array => "UInt32Array",
            DataType::UInt64Array => "UInt64Array",
            DataType::FloatArray => "FloatArray",
            DataType::DoubleArray => "DoubleArray",
            DataType::BooleanArray => "BooleanArray",
            DataType::StringArray => "StringArray",
            DataType::DateTimeArray => "DateTimeArray",
        }
    }

    /// Parses a name as written by [`DataType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL
            .iter()
            .copied()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// The basic types allowed in DataSet cells and Template parameters.
    pub fn is_basic(self) -> bool {
        matches!(
            self,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float
                | DataType::Double
                | DataType::Boolean
                | DataType::String
                | DataType::DateTime
                | DataType::Text
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DataType::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown Sparkplug datatype {s:?}")))
    }
}

/// A typed value. `None` next to it (in [`Metric::value`] etc.) means null.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
    String(String),
    /// Milliseconds since the Unix epoch.
    DateTime(u64),
    Text(String),
    Uuid(String),
    DataSet(DataSet),
    Bytes(Vec<u8>),
    File(Vec<u8>),
    Template(Template),
    PropertySet(PropertySet),
    PropertySetList(Vec<PropertySet>),
    Int8Array(Vec<i8>),
    Int16Array(Vec<i16>),
    Int32Array(Vec<i32>),
    Int64Array(Vec<i64>),
    UInt8Array(Vec<u8>),
    UInt16Array(Vec<u16>),
    UInt32Array(Vec<u32>),
    UInt64Array(Vec<u64>),
    FloatArray(Vec<f32>),
    DoubleArray(Vec<f64>),
    BooleanArray(Vec<bool>),
    StringArray(Vec<String>),
    DateTimeArray(Vec<u64>),
}

/// A DataSet: typed columns and rows of cells (`None` = null cell).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataSet {
    pub columns: Vec<String>,
    pub types: Vec<DataType>,
    pub rows: Vec<Vec<Option<MetricValue>>>,
}

/// A Template definition or instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub version: Option<String>,
    /// For instances: the name of the definition.
    pub template_ref: Option<String>,
    pub is_definition: bool,
    pub metrics: Vec<Metric>,
    pub parameters: Vec<Parameter>,
}

/// A Template parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub datatype: DataType,
    pub value: Option<MetricValue>,
}

/// A property value: its datatype and value (`None` = null).
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue {
    pub datatype: DataType,
    pub value: Option<MetricValue>,
}

impl PropertyValue {
    pub fn new(value: MetricValue) -> PropertyValue {
        PropertyValue {
            datatype: value.datatype(),
            value: Some(value),
        }
    }

    pub fn string(s: impl Into<String>) -> PropertyValue {
        PropertyValue::new(MetricValue::String(s.into()))
    }

    pub fn boolean(b: bool) -> PropertyValue {
        PropertyValue::new(MetricValue::Boolean(b))
    }

    pub fn null(datatype: DataType) -> PropertyValue {
        PropertyValue {
            datatype,
            value: None,
        }
    }
}

/// An ordered set of named properties (e.g. `engUnit`, `readOnly`, `Quality`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertySet(pub Vec<(String, PropertyValue)>);

impl PropertySet {
    pub fn get(&self, key: &str) -> Option<&PropertyValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: PropertyValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Metric metadata (multi-part files, content types, …).
pub type MetaData = pb::MetaData;

/// One metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    /// Ms since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Required in births; data messages may leave it out (see [`Metric::resolve`]).
    pub datatype: Option<DataType>,
    pub is_historical: bool,
    pub is_transient: bool,
    pub metadata: Option<MetaData>,
    pub properties: Option<PropertySet>,
    /// `None`: null (`is_null`).
    pub value: Option<MetricValue>,
}

impl Metric {
    /// A named metric; the datatype is the value's.
    pub fn new(name: impl Into<String>, value: MetricValue) -> Metric {
        Metric {
            name: Some(name.into()),
            datatype: Some(value.datatype()),
            value: Some(value),
            ..Metric::default()
        }
    }

    /// A metric referred to by alias only (data messages after a birth).
    pub fn aliased(alias: u64, value: MetricValue) -> Metric {
        Metric {
            alias: Some(alias),
            value: Some(value),
            ..Metric::default()
        }
    }

    /// A named null metric of `datatype`.
    pub fn null(name: impl Into<String>, datatype: DataType) -> Metric {
        Metric {
            name: Some(name.into()),
            datatype: Some(datatype),
            ..Metric::default()
        }
    }

    pub fn with_alias(mut self, alias: u64) -> Metric {
        self.alias = Some(alias);
        self
    }

    pub fn with_timestamp(mut self, ms: u64) -> Metric {
        self.timestamp = Some(ms);
        self
    }

    /// Leaves the datatype out (data messages by alias).
    pub fn without_datatype(mut self) -> Metric {
        self.datatype = None;
        self
    }

    pub fn with_property(mut self, key: impl Into<String>, value: PropertyValue) -> Metric {
        self.properties
            .get_or_insert_with(PropertySet::default)
            .insert(key, value);
        self
    }

    pub fn is_null(&self) -> bool {
        self.value.is_none()
    }

    /// Re-reads a value decoded without a datatype as `datatype` (taken from the birth) and
    /// records the datatype. A value that already has its datatype is checked against it.
    pub fn resolve(&mut self, datatype: DataType) -> Result<(), String> {
        if let Some(v) = self.value.take() {
            let raw = to_raw(&v, Ctx::Metric).map_err(|e| e.to_string())?;
            self.value = Some(
                from_raw(datatype, raw, Ctx::Metric, &mut Budget::unlimited())
                    .map_err(|f| f.to_string())?,
            );
        }
        self.datatype = Some(datatype);
        Ok(())
    }
}

/// A whole payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    /// Ms since the Unix epoch (send time).
    pub timestamp: Option<u64>,
    pub metrics: Vec<Metric>,
    /// 0–255; absent in NDEATH.
    pub seq: Option<u64>,
    /// Free text; Ironbridge carries a command's correlation id here.
    pub uuid: Option<String>,
    pub body: Option<Vec<u8>>,
}

impl Payload {
    pub fn new(timestamp_ms: u64, seq: Option<u64>) -> Payload {
        Payload {
            timestamp: Some(timestamp_ms),
            seq,
            ..Payload::default()
        }
    }

    pub fn with_metric(mut self, m: Metric) -> Payload {
        self.metrics.push(m);
        self
    }

    /// The protobuf bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.to_proto()?.encode_to_vec())
    }

    pub fn to_proto(&self) -> Result<super::proto::Payload, EncodeError> {
        Ok(super::proto::Payload {
            timestamp: self.timestamp,
            metrics: self
                .metrics
                .iter()
                .map(metric_to_proto)
                .collect::<Result<_, _>>()?,
            seq: self.seq,
            uuid: self.uuid.clone(),
            body: self.body.clone(),
        })
    }
}

/// Bounds for decoding untrusted payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_bytes: usize,
    /// Most metrics, counting template members, dataset cells and properties too.
    pub max_metrics: usize,
    /// Deepest nesting of templates and property sets.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_metrics: 10_000,
            max_depth: 8,
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("payload has more than {limit} metrics (including template members and cells)")]
    TooManyMetrics { limit: usize },
    #[error("templates or property sets nested deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("not a Sparkplug B payload: {0}")]
    Protobuf(String),
    /// A metric, property, cell or parameter does not match its datatype (or has none).
    #[error("{0}")]
    Invalid(String),
}

impl PayloadError {
    /// Whether the payload was refused for its size (counted as oversize, not malformed).
    pub fn is_oversize(&self) -> bool {
        matches!(
            self,
            PayloadError::TooLarge { .. } | PayloadError::TooManyMetrics { .. }
        )
    }
}

/// A value that cannot be encoded where it was put (e.g. an array in a DataSet cell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {datatype} value cannot be encoded in {context}")]
pub struct EncodeError {
    pub datatype: DataType,
    pub context: &'static str,
}

/// Decodes a payload within `limits`: size first, then a scan of the top-level metric count
/// (before anything is allocated for them), then the protobuf, then every value by its datatype.
pub fn decode_payload(bytes: &[u8], limits: &Limits) -> Result<Payload, PayloadError> {
    if bytes.len() > limits.max_bytes {
        return Err(PayloadError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if count_top_level_metrics(bytes)? > limits.max_metrics {
        return Err(PayloadError::TooManyMetrics {
            limit: limits.max_metrics,
        });
    }
    let p =
        super::proto::Payload::decode(bytes).map_err(|e| PayloadError::Protobuf(e.to_string()))?;
    let mut budget = Budget {
        metrics: limits.max_metrics,
        depth: limits.max_depth,
        limits: *limits,
    };
    let mut metrics = Vec::with_capacity(p.metrics.len());
    for (i, m) in p.metrics.into_iter().enumerate() {
        metrics.push(metric_from_proto(m, i, &mut budget).map_err(|f| match f {
            Fail::Limit(e) => e,
            Fail::Bad(reason) => PayloadError::Invalid(reason),
        })?);
    }
    Ok(Payload {
        timestamp: p.timestamp,
        metrics,
        seq: p.seq,
        uuid: p.uuid,
        body: p.body,
    })
}

/// Counts field-2 (metrics) entries at the top level of a protobuf message without decoding
/// them; errors on malformed wire data.
fn count_top_level_metrics(mut b: &[u8]) -> Result<usize, PayloadError> {
    fn varint(b: &mut &[u8]) -> Result<u64, PayloadError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&byte, rest)) = b.split_first() else {
                return Err(PayloadError::Protobuf("truncated varint".into()));
            };
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PayloadError::Protobuf("varint too long".into()))
    }
    fn skip(b: &mut &[u8], n: u64) -> Result<(), PayloadError> {
        let n = usize::try_from(n).map_err(|_| PayloadError::Protobuf("length overflow".into()))?;
        if b.len() < n {
            return Err(PayloadError::Protobuf("truncated field".into()));
        }
        *b = &b[n..];
        Ok(())
    }
    let mut count = 0usize;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 => skip(&mut b, 8)?,
            2 => {
                let n = varint(&mut b)?;
                skip(&mut b, n)?;
                if field == 2 {
                    count += 1;
                }
            }
            5 => skip(&mut b, 4)?,
            // Groups (3/4) are not used by Sparkplug; prost reports them properly.
            _ => return Ok(count),
        }
    }
    Ok(count)
}

/// What is left of the limits while decoding one payload.
struct Budget {
    metrics: usize,
    depth: usize,
    limits: Limits,
}

impl Budget {
    fn unlimited() -> Budget {
        Budget {
            metrics: usize::MAX,
            depth: usize::MAX,
            limits: Limits {
                max_bytes: usize::MAX,
                max_metrics: usize::MAX,
                max_depth: usize::MAX,
            },
        }
    }

    fn take(&mut self, n: usize) -> Result<(), Fail> {
        self.metrics =
            self.metrics
                .checked_sub(n)
                .ok_or(Fail::Limit(PayloadError::TooManyMetrics {
                    limit: self.limits.max_metrics,
                }))?;
        Ok(())
    }

    fn enter(&mut self) -> Result<(), Fail> {
        self.depth = self
            .depth
            .checked_sub(1)
            .ok_or(Fail::Limit(PayloadError::TooDeep {
                limit: self.limits.max_depth,
            }))?;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_add(1);
    }
}

/// A decoding failure inside a payload: a limit (reported as such) or bad content.
#[derive(Debug)]
enum Fail {
    Limit(PayloadError),
    Bad(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Bad(s)
    }
}

impl Fail {
    /// Prefixes a content error with where it happened.
    fn at(self, place: impl fmt::Display) -> Fail {
        match self {
            Fail::Bad(m) => Fail::Bad(format!("{place}: {m}")),
            limit => limit,
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Limit(e) => e.fmt(f),
            Fail::Bad(m) => f.write_str(m),
        }
    }
}

/// The protobuf value fields common to metrics, dataset cells, parameters and properties.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    DataSet(pb::DataSet),
    Template(pb::Template),
    PropertySet(pb::PropertySet),
    PropertySetList(pb::PropertySetList),
    Extension,
}

impl Raw {
    fn field(&self) -> &'static str {
        match self {
            Raw::Int(_) => "int_value",
            Raw::Long(_) => "long_value",
            Raw::Float(_) => "float_value",
            Raw::Double(_) => "double_value",
            Raw::Bool(_) => "boolean_value",
            Raw::Str(_) => "string_value",
            Raw::Bytes(_) => "bytes_value",
            Raw::DataSet(_) => "dataset_value",
            Raw::Template(_) => "template_value",
            Raw::PropertySet(_) => "propertyset_value",
            Raw::PropertySetList(_) => "propertysets_value",
            Raw::Extension => "extension_value",
        }
    }
}

/// Where a value sits (what the protobuf can carry there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Metric,
    Cell,
    Parameter,
    Property,
}

impl Ctx {
    fn name(self) -> &'static str {
        match self {
            Ctx::Metric => "a metric",
            Ctx::Cell => "a DataSet cell",
            Ctx::Parameter => "a Template parameter",
            Ctx::Property => "a property",
        }
    }

    fn allows(self, dt: DataType) -> bool {
        match self {
            Ctx::Metric => !matches!(dt, DataType::PropertySet | DataType::PropertySetList),
            Ctx::Cell | Ctx::Parameter => dt.is_basic(),
            Ctx::Property => {
                dt.is_basic()
                    || matches!(
                        dt,
                        DataType::PropertySet | DataType::PropertySetList | DataType::Uuid
                    )
            }
        }
    }
}

impl MetricValue {
    pub fn datatype(&self) -> DataType {
        match self {
            MetricValue::Int8(_) => DataType::Int8,
            MetricValue::Int16(_) => DataType::Int16,
            MetricValue::Int32(_) => DataType::Int32,
            MetricValue::Int64(_) => DataType::Int64,
            MetricValue::UInt8(_) => DataType::UInt8,
            MetricValue::UInt16(_) => DataType::UInt16,
            MetricValue::UInt32(_) => DataType::UInt32,
            MetricValue::UInt64(_) => DataType::UInt64,
            MetricValue::Float(_) => DataType::Float,
            MetricValue::Double(_) => DataType::Double,
            MetricValue::Boolean(_) => DataType::Boolean,
            MetricValue::String(_) => DataType::String,
            MetricValue::DateTime(_) => DataType::DateTime,
            MetricValue::Text(_) => DataType::Text,
            MetricValue::Uuid(_) => DataType::Uuid,
            MetricValue::DataSet(_) => DataType::DataSet,
            MetricValue::Bytes(_) => DataType::Bytes,
            MetricValue::File(_) => DataType::File,
            MetricValue::Template(_) => DataType::Template,
            MetricValue::PropertySet(_) => DataType::PropertySet,
            MetricValue::PropertySetList(_) => DataType::PropertySetList,
            MetricValue::Int8Array(_) => DataType::Int8Array,
            MetricValue::Int16Array(_) => DataType::Int16Array,
            MetricValue::Int32Array(_) => DataType::Int32Array,
            MetricValue::Int64Array(_) => DataType::Int64Array,
            MetricValue::UInt8Array(_) => DataType::UInt8Array,
            MetricValue::UInt16Array(_) => DataType::UInt16Array,
            MetricValue::UInt32Array(_) => DataType::UInt32Array,
            MetricValue::UInt64Array(_) => DataType::UInt64Array,
            MetricValue::FloatArray(_) => DataType::FloatArray,
            MetricValue::DoubleArray(_) => DataType::DoubleArray,
            MetricValue::BooleanArray(_) => DataType::BooleanArray,
            MetricValue::StringArray(_) => DataType::StringArray,
            MetricValue::DateTimeArray(_) => DataType::DateTimeArray,
        }
    }

    /// The value as a JSON number when it is numeric or boolean (for deadbands, commands).
    pub fn as_f64(&self) -> Option<f64> {
        Some(match self {
            MetricValue::Int8(v) => f64::from(*v),
            MetricValue::Int16(v) => f64::from(*v),
            MetricValue::Int32(v) => f64::from(*v),
            MetricValue::Int64(v) => *v as f64,
            MetricValue::UInt8(v) => f64::from(*v),
            MetricValue::UInt16(v) => f64::from(*v),
            MetricValue::UInt32(v) => f64::from(*v),
            MetricValue::UInt64(v) => *v as f64,
            MetricValue::Float(v) => f64::from(*v),
            MetricValue::Double(v) => *v,
            MetricValue::DateTime(v) => *v as f64,
            MetricValue::Boolean(b) => f64::from(u8::from(*b)),
            _ => return None,
        })
    }
}

fn le_chunks<const N: usize, T>(
    b: &[u8],
    dt: DataType,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if !b.len().is_multiple_of(N) {
        return Err(format!(
            "{dt} of {} bytes is not a whole number of {N}-byte elements",
            b.len()
        ));
    }
    Ok(b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

fn decode_bool_array(b: &[u8]) -> Result<Vec<bool>, String> {
    let Some((count, bits)) = b.split_first_chunk::<4>() else {
        return Err("BooleanArray shorter than its 4-byte count".into());
    };
    let n = u32::from_le_bytes(*count) as usize;
    if bits.len() != n.div_ceil(8) {
        return Err(format!(
            "BooleanArray of {n} values needs {} bytes of bits, has {}",
            n.div_ceil(8),
            bits.len()
        ));
    }
    Ok((0..n)
        .map(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
        .collect())
}

fn encode_bool_array(v: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.len().div_ceil(8));
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    let mut bits = vec![0u8; v.len().div_ceil(8)];
    for (i, b) in v.iter().enumerate() {
        if *b {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
    }
    out.extend_from_slice(&bits);
    out
}

fn decode_string_array(b: &[u8]) -> Result<Vec<String>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = b.strip_suffix(&[0]) else {
        return Err("StringArray does not end with a NUL".into());
    };
    body.split(|c| *c == 0)
        .map(|s| {
            String::from_utf8(s.to_vec()).map_err(|_| "StringArray holds invalid UTF-8".to_string())
        })
        .collect()
}

fn encode_string_array(v: &[String]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    for s in v {
        if s.as_bytes().contains(&0) {
            return Err("a StringArray element containing NUL");
        }
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// Interprets a raw protobuf value as `dt`.
fn from_raw(dt: DataType, raw: Raw, ctx: Ctx, budget: &mut Budget) -> Result<MetricValue, Fail> {
    use MetricValue as V;
    if !ctx.allows(dt) {
        return Err(format!("{dt} is not allowed in {}", ctx.name()).into());
    }
    let mismatch = |raw: &Raw| format!("{dt} value carried in {}", raw.field());
    // Integers: either integer field, truncated to the width (both Tahu sign conventions).
    let int = |raw: &Raw| -> Result<u64, String> {
        match raw {
            Raw::Int(v) => Ok(u64::from(*v)),
            Raw::Long(v) => Ok(*v),
            other => Err(mismatch(other)),
        }
    };
    Ok(match dt {
        DataType::Int8 => V::Int8(int(&raw)? as u8 as i8),
        DataType::Int16 => V::Int16(int(&raw)? as u16 as i16),
        DataType::Int32 => V::Int32(int(&raw)? as u32 as i32),
        DataType::Int64 => match raw {
            // A 32-bit field can only hold a sign-extended 32-bit value.
            Raw::Int(v) => V::Int64(i64::from(v as i32)),
            other => V::Int64(int(&other)? as i64),
        },
        DataType::UInt8 => V::UInt8(int(&raw)? as u8),
        DataType::UInt16 => V::UInt16(int(&raw)? as u16),
        DataType::UInt32 => V::UInt32(int(&raw)? as u32),
        DataType::UInt64 => V::UInt64(int(&raw)?),
        DataType::DateTime => V::DateTime(int(&raw)?),
        DataType::Float => match raw {
            Raw::Float(f) => V::Float(f),
            other => return Err(mismatch(&other).into()),
        },
        DataType::Double => match raw {
            Raw::Double(f) => V::Double(f),
            Raw::Float(f) => V::Double(f64::from(f)),
            other => return Err(mismatch(&other).into()),
        },
        DataType::Boolean => match raw {
            Raw::Bool(b) => V::Boolean(b),
            other => return Err(mismatch(&other).into()),
        },
        DataType::String | DataType::Text | DataType::Uuid => match raw {
            Raw::Str(s) => match dt {
                DataType::String => V::String(s),
                DataType::Text => V::Text(s),
                _ => V::Uuid(s),
            },
            other => return Err(mismatch(&other).into()),
        },
        DataType::DataSet => match raw {
            Raw::DataSet(d) => V::DataSet(dataset_from_proto(d, budget)?),
            other => return Err(mismatch(&other).into()),
        },
        DataType::Template => match raw {
            Raw::Template(t) => V::Template(template_from_proto(t, budget)?),
            other => return Err(mismatch(&other).into()),
        },
        DataType::PropertySet => match raw {
            Raw::PropertySet(p) => V::PropertySet(propertyset_from_proto(p, budget)?),
            other => return Err(mismatch(&other).into()),
        },
        DataType::PropertySetList => match raw {
            Raw::PropertySetList(l) => V::PropertySetList(
                l.propertyset
                    .into_iter()
                    .map(|p| propertyset_from_proto(p, budget))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(mismatch(&other).into()),
        },
        _ => {
            let Raw::Bytes(b) = raw else {
                return Err(mismatch(&raw).into());
            };
            match dt {
                DataType::Bytes => V::Bytes(b),
                DataType::File => V::File(b),
                DataType::Int8Array => V::Int8Array(b.iter().map(|x| *x as i8).collect()),
                DataType::UInt8Array => V::UInt8Array(b),
                DataType::Int16Array => V::Int16Array(le_chunks(&b, dt, i16::from_le_bytes)?),
                DataType::UInt16Array => V::UInt16Array(le_chunks(&b, dt, u16::from_le_bytes)?),
                DataType::Int32Array => V::Int32Array(le_chunks(&b, dt, i32::from_le_bytes)?),
                DataType::UInt32Array => V::UInt32Array(le_chunks(&b, dt, u32::from_le_bytes)?),
                DataType::Int64Array => V::Int64Array(le_chunks(&b, dt, i64::from_le_bytes)?),
                DataType::UInt64Array => V::UInt64Array(le_chunks(&b, dt, u64::from_le_bytes)?),
                DataType::DateTimeArray => V::DateTimeArray(le_chunks(&b, dt, u64::from_le_bytes)?),
                DataType::FloatArray => V::FloatArray(le_chunks(&b, dt, f32::from_le_bytes)?),
                DataType::DoubleArray => V::DoubleArray(le_chunks(&b, dt, f64::from_le_bytes)?),
                DataType::BooleanArray => V::BooleanArray(decode_bool_array(&b)?),
                DataType::StringArray => V::StringArray(decode_string_array(&b)?),
                _ => return Err(format!("{dt} cannot be decoded from bytes_value").into()),
            }
        }
    })
}

/// A value decoded without a datatype (data message by alias): lossless, see module docs.
fn untyped(raw: Raw, budget: &mut Budget) -> Result<MetricValue, Fail> {
    use MetricValue as V;
    Ok(match raw {
        Raw::Int(v) => V::UInt32(v),
        Raw::Long(v) => V::UInt64(v),
        Raw::Float(v) => V::Float(v),
        Raw::Double(v) => V::Double(v),
        Raw::Bool(v) => V::Boolean(v),
        Raw::Str(v) => V::String(v),
        Raw::Bytes(v) => V::Bytes(v),
        Raw::DataSet(d) => V::DataSet(dataset_from_proto(d, budget)?),
        Raw::Template(t) => V::Template(template_from_proto(t, budget)?),
        Raw::PropertySet(p) => V::PropertySet(propertyset_from_proto(p, budget)?),
        Raw::PropertySetList(l) => V::PropertySetList(
            l.propertyset
                .into_iter()
                .map(|p| propertyset_from_proto(p, budget))
                .collect::<Result<_, _>>()?,
        ),
        Raw::Extension => return Err(Fail::Bad("extension values are not supported".into())),
    })
}

/// The raw protobuf value of `v` (checked against what `ctx` can carry).
fn to_raw(v: &MetricValue, ctx: Ctx) -> Result<Raw, EncodeError> {
    use MetricValue as V;
    let dt = v.datatype();
    if !ctx.allows(dt) {
        return Err(EncodeError {
            datatype: dt,
            context: ctx.name(),
        });
    }
    fn pack<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Raw {
        let mut out = Vec::with_capacity(v.len() * N);
        for x in v {
            out.extend_from_slice(&f(*x));
        }
        Raw::Bytes(out)
    }
    Ok(match v {
        // Signed: sign-extended to 32 bits.
        V::Int8(x) => Raw::Int(i32::from(*x) as u32),
        V::Int16(x) => Raw::Int(i32::from(*x) as u32),
        V::Int32(x) => Raw::Int(*x as u32),
        V::Int64(x) => Raw::Long(*x as u64),
        V::UInt8(x) => Raw::Int(u32::from(*x)),
        V::UInt16(x) => Raw::Int(u32::from(*x)),
        V::UInt32(x) => Raw::Int(*x),
        V::UInt64(x) | V::DateTime(x) => Raw::Long(*x),
        V::Float(x) => Raw::Float(*x),
        V::Double(x) => Raw::Double(*x),
        V::Boolean(x) => Raw::Bool(*x),
        V::String(s) | V::Text(s) | V::Uuid(s) => Raw::Str(s.clone()),
        V::DataSet(d) => Raw::DataSet(dataset_to_proto(d)?),
        V::Template(t) => Raw::Template(template_to_proto(t)?),
        V::PropertySet(p) => Raw::PropertySet(propertyset_to_proto(p)?),
        V::PropertySetList(l) => Raw::PropertySetList(pb::PropertySetList {
            propertyset: l
                .iter()
                .map(propertyset_to_proto)
                .collect::<Result<_, _>>()?,
        }),
        V::Bytes(b) | V::File(b) | V::UInt8Array(b) => Raw::Bytes(b.clone()),
        V::Int8Array(a) => Raw::Bytes(a.iter().map(|x| *x as u8).collect()),
        V::Int16Array(a) => pack(a, i16::to_le_bytes),
        V::UInt16Array(a) => pack(a, u16::to_le_bytes),
        V::Int32Array(a) => pack(a, i32::to_le_bytes),
        V::UInt32Array(a) => pack(a, u32::to_le_bytes),
        V::Int64Array(a) => pack(a, i64::to_le_bytes),
        V::UInt64Array(a) | V::DateTimeArray(a) => pack(a, u64::to_le_bytes),
        V::FloatArray(a) => pack(a, f32::to_le_bytes),
        V::DoubleArray(a) => pack(a, f64::to_le_bytes),
        V::BooleanArray(a) => Raw::Bytes(encode_bool_array(a)),
        V::StringArray(a) => Raw::Bytes(encode_string_array(a).map_err(|context| EncodeError {
            datatype: dt,
            context,
        })?),
    })
}

fn metric_raw(v: pb::metric::Value) -> Raw {
    use pb::metric::Value as P;
    match v {
        P::IntValue(x) => Raw::Int(x),
        P::LongValue(x) => Raw::Long(x),
        P::FloatValue(x) => Raw::Float(x),
        P::DoubleValue(x) => Raw::Double(x),
        P::BooleanValue(x) => Raw::Bool(x),
        P::StringValue(x) => Raw::Str(x),
        P::BytesValue(x) => Raw::Bytes(x),
        P::DatasetValue(x) => Raw::DataSet(x),
        P::TemplateValue(x) => Raw::Template(x),
        P::ExtensionValue(_) => Raw::Extension,
    }
}

fn raw_metric(r: Raw) -> Option<pb::metric::Value> {
    use pb::metric::Value as P;
    Some(match r {
        Raw::Int(x) => P::IntValue(x),
        Raw::Long(x) => P::LongValue(x),
        Raw::Float(x) => P::FloatValue(x),
        Raw::Double(x) => P::DoubleValue(x),
        Raw::Bool(x) => P::BooleanValue(x),
        Raw::Str(x) => P::StringValue(x),
        Raw::Bytes(x) => P::BytesValue(x),
        Raw::DataSet(x) => P::DatasetValue(x),
        Raw::Template(x) => P::TemplateValue(x),
        _ => return None,
    })
}

/// The oneofs of cells, parameters and properties have the same basic members.
macro_rules! basic_oneof {
    ($from:ident, $to:ident, $ty:path) => {
        fn $from(v: $ty) -> Raw {
            use $ty as P;
            match v {
                P::IntValue(x) => Raw::Int(x),
                P::LongValue(x) => Raw::Long(x),
                P::FloatValue(x) => Raw::Float(x),
                P::DoubleValue(x) => Raw::Double(x),
                P::BooleanValue(x) => Raw::Bool(x),
                P::StringValue(x) => Raw::Str(x),
                #[allow(unreachable_patterns)]
                _ => Raw::Extension,
            }
        }
        fn $to(r: Raw) -> Option<$ty> {
            use $ty as P;
            Some(match r {
                Raw::Int(x) => P::IntValue(x),
                Raw::Long(x) => P::LongValue(x),
                Raw::Float(x) => P::FloatValue(x),
                Raw::Double(x) => P::DoubleValue(x),
                Raw::Bool(x) => P::BooleanValue(x),
                Raw::Str(x) => P::StringValue(x),
                _ => return None,
            })
        }
    };
}

basic_oneof!(cell_raw, raw_cell, pb::data_set::data_set_value::Value);
basic_oneof!(param_raw, raw_param, pb::template::parameter::Value);

fn property_raw(v: pb::property_value::Value) -> Raw {
    use pb::property_value::Value as P;
    match v {
        P::IntValue(x) => Raw::Int(x),
        P::LongValue(x) => Raw::Long(x),
        P::FloatValue(x) => Raw::Float(x),
        P::DoubleValue(x) => Raw::Double(x),
        P::BooleanValue(x) => Raw::Bool(x),
        P::StringValue(x) => Raw::Str(x),
        P::PropertysetValue(x) => Raw::PropertySet(x),
        P::PropertysetsValue(x) => Raw::PropertySetList(x),
        P::ExtensionValue(_) => Raw::Extension,
    }
}

fn raw_property(r: Raw) -> Option<pb::property_value::Value> {
    use pb::property_value::Value as P;
    Some(match r {
        Raw::Int(x) => P::IntValue(x),
        Raw::Long(x) => P::LongValue(x),
        Raw::Float(x) => P::FloatValue(x),
        Raw::Double(x) => P::DoubleValue(x),
        Raw::Bool(x) => P::BooleanValue(x),
        Raw::Str(x) => P::StringValue(x),
        Raw::PropertySet(x) => P::PropertysetValue(x),
        Raw::PropertySetList(x) => P::PropertysetsValue(x),
        _ => return None,
    })
}

fn datatype_code(code: Option<u32>) -> Result<Option<DataType>, String> {
    match code {
        None => Ok(None),
        Some(c) => DataType::from_code(c)
            .map(Some)
            .ok_or_else(|| format!("unknown datatype {c}")),
    }
}

fn metric_from_proto(m: pb::Metric, index: usize, budget: &mut Budget) -> Result<Metric, Fail> {
    let label = match (&m.name, m.alias) {
        (Some(n), _) => format!("metric {n:?}"),
        (None, Some(a)) => format!("metric alias {a}"),
        (None, None) => format!("metric #{index}"),
    };
    let at = |f: Fail| f.at(&label);
    budget.take(1)?;
    let datatype = datatype_code(m.datatype).map_err(|e| at(e.into()))?;
    let properties = match m.properties {
        Some(p) => Some(propertyset_from_proto(p, budget).map_err(at)?),
        None => None,
    };
    let value = if m.is_null == Some(true) {
        None
    } else {
        match m.value {
            None => None,
            Some(v) => {
                let raw = metric_raw(v);
                Some(match datatype {
                    Some(dt) => from_raw(dt, raw, Ctx::Metric, budget).map_err(at)?,
                    None => untyped(raw, budget).map_err(at)?,
                })
            }
        }
    };
    Ok(Metric {
        name: m.name,
        alias: m.alias,
        timestamp: m.timestamp,
        datatype,
        is_historical: m.is_historical.unwrap_or(false),
        is_transient: m.is_transient.unwrap_or(false),
        metadata: m.metadata,
        properties,
        value,
    })
}

fn metric_to_proto(m: &Metric) -> Result<pb::Metric, EncodeError> {
    let value = match &m.value {
        None => None,
        Some(v) => raw_metric(to_raw(v, Ctx::Metric)?),
    };
    Ok(pb::Metric {
        name: m.name.clone(),
        alias: m.alias,
        timestamp: m.timestamp,
        datatype: m.datatype.map(DataType::code),
        is_historical: m.is_historical.then_some(true),
        is_transient: m.is_transient.then_some(true),
        is_null: m.value.is_none().then_some(true),
        metadata: m.metadata.clone(),
        properties: match &m.properties {
            Some(p) => Some(propertyset_to_proto(p)?),
            None => None,
        },
        value,
    })
}

fn dataset_from_proto(d: pb::DataSet, budget: &mut Budget) -> Result<DataSet, Fail> {
    let types = d
        .types
        .iter()
        .map(|c| DataType::from_code(*c).ok_or_else(|| format!("unknown DataSet column type {c}")))
        .collect::<Result<Vec<_>, _>>()?;
    if d.columns.len() != types.len() {
        return Err(format!(
            "DataSet has {} column names and {} types",
            d.columns.len(),
            types.len()
        )
        .into());
    }
    if let Some(n) = d.num_of_columns
        && n != types.len() as u64
    {
        return Err(format!("DataSet says {n} columns and has {}", types.len()).into());
    }
    let mut rows = Vec::with_capacity(d.rows.len().min(1024));
    for (r, row) in d.rows.into_iter().enumerate() {
        if row.elements.len() != types.len() {
            return Err(format!(
                "DataSet row {r} has {} cells for {} columns",
                row.elements.len(),
                types.len()
            )
            .into());
        }
        budget.take(row.elements.len().max(1))?;
        let mut cells = Vec::with_capacity(row.elements.len());
        for (e, dt) in row.elements.into_iter().zip(&types) {
            cells.push(match e.value {
                None => None,
                Some(v) => Some(
                    from_raw(*dt, cell_raw(v), Ctx::Cell, budget)
                        .map_err(|f| f.at(format!("DataSet row {r}")))?,
                ),
            });
        }
        rows.push(cells);
    }
    Ok(DataSet {
        columns: d.columns,
        types,
        rows,
    })
}

fn dataset_to_proto(d: &DataSet) -> Result<pb::DataSet, EncodeError> {
    let mut rows = Vec::with_capacity(d.rows.len());
    for row in &d.rows {
        let mut elements = Vec::with_capacity(row.len());
        for cell in row {
            elements.push(pb::data_set::DataSetValue {
                value: match cell {
                    None => None,
                    Some(v) => raw_cell(to_raw(v, Ctx::Cell)?),
                },
            });
        }
        rows.push(pb::data_set::Row { elements });
    }
    Ok(pb::DataSet {
        num_of_columns: Some(d.types.len() as u64),
        columns: d.columns.clone(),
        types: d.types.iter().map(|t| t.code()).collect(),
        rows,
    })
}

fn template_from_proto(t: pb::Template, budget: &mut Budget) -> Result<Template, Fail> {
    budget.enter()?;
    let mut metrics = Vec::with_capacity(t.metrics.len().min(1024));
    for (i, m) in t.metrics.into_iter().enumerate() {
        metrics.push(metric_from_proto(m, i, budget).map_err(|f| f.at("template member"))?);
    }
    let mut parameters = Vec::with_capacity(t.parameters.len().min(64));
    for p in t.parameters {
        budget.take(1)?;
        let name = p.name.unwrap_or_default();
        let code = p
            .r#type
            .ok_or_else(|| format!("template parameter {name:?} without a type"))?;
        let datatype = DataType::from_code(code)
            .ok_or_else(|| format!("template parameter {name:?}: unknown type {code}"))?;
        let value = match p.value {
            None => None,
            Some(v) => Some(
                from_raw(datatype, param_raw(v), Ctx::Parameter, budget)
                    .map_err(|f| f.at(format!("template parameter {name:?}")))?,
            ),
        };
        parameters.push(Parameter {
            name,
            datatype,
            value,
        });
    }
    budget.leave();
    Ok(Template {
        version: t.version,
        template_ref: t.template_ref,
        is_definition: t.is_definition.unwrap_or(false),
        metrics,
        parameters,
    })
}

fn template_to_proto(t: &Template) -> Result<pb::Template, EncodeError> {
    let mut parameters = Vec::with_capacity(t.parameters.len());
    for p in &t.parameters {
        parameters.push(pb::template::Parameter {
            name: Some(p.name.clone()),
            r#type: Some(p.datatype.code()),
            value: match &p.value {
                None => None,
                Some(v) => raw_param(to_raw(v, Ctx::Parameter)?),
            },
        });
    }
    Ok(pb::Template {
        version: t.version.clone(),
        metrics: t
            .metrics
            .iter()
            .map(metric_to_proto)
            .collect::<Result<_, _>>()?,
        parameters,
        template_ref: t.template_ref.clone(),
        is_definition: Some(t.is_definition),
    })
}

fn propertyset_from_proto(p: pb::PropertySet, budget: &mut Budget) -> Result<PropertySet, Fail> {
    if p.keys.len() != p.values.len() {
        return Err(format!(
            "property set has {} keys and {} values",
            p.keys.len(),
            p.values.len()
        )
        .into());
    }
    budget.enter()?;
    budget.take(p.keys.len())?;
    let mut out = Vec::with_capacity(p.keys.len());
    for (k, v) in p.keys.into_iter().zip(p.values) {
        let code = v
            .r#type
            .ok_or_else(|| format!("property {k:?} without a type"))?;
        let datatype = DataType::from_code(code)
            .ok_or_else(|| format!("property {k:?}: unknown type {code}"))?;
        let value = if v.is_null == Some(true) {
            None
        } else {
            match v.value {
                None => None,
                Some(x) => Some(
                    from_raw(datatype, property_raw(x), Ctx::Property, budget)
                        .map_err(|f| f.at(format!("property {k:?}")))?,
                ),
            }
        };
        out.push((k, PropertyValue { datatype, value }));
    }
    budget.leave();
    Ok(PropertySet(out))
}

fn propertyset_to_proto(p: &PropertySet) -> Result<pb::PropertySet, EncodeError> {
    let mut keys = Vec::with_capacity(p.0.len());
    let mut values = Vec::with_capacity(p.0.len());
    for (k, v) in &p.0 {
        keys.push(k.clone());
        values.push(pb::PropertyValue {
            r#type: Some(v.datatype.code()),
            is_null: v.value.is_none().then_some(true),
            value: match &v.value {
                None => None,
                Some(x) => raw_property(to_raw(x, Ctx::Property)?),
            },
        });
    }
    Ok(pb::PropertySet { keys, values })
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

fn float_json(v: f64) -> Json {
    match serde_json::Number::from_f64(v) {
        Some(n) => Json::Number(n),
        // JSON has no NaN/Infinity: written as strings.
        None if v.is_nan() => Json::from("NaN"),
        None if v > 0.0 => Json::from("Infinity"),
        None => Json::from("-Infinity"),
    }
}

/// A Float as JSON: its shortest decimal form (0.1f32 is `0.1`, not `0.10000000149011612`).
fn f32_json(v: f32) -> Json {
    match v.to_string().parse::<f64>() {
        Ok(d) if v.is_finite() => float_json(d),
        _ => float_json(f64::from(v)),
    }
}

fn b64(b: &[u8]) -> Json {
    Json::from(base64::engine::general_purpose::STANDARD.encode(b))
}

impl MetricValue {
    /// The JSON form: numbers, booleans and strings as such; Bytes/File as base64 strings;
    /// DateTime as ms; arrays as JSON arrays; NaN/±Infinity as the strings `"NaN"`,
    /// `"Infinity"`, `"-Infinity"`; DataSets as `{"columns","types","rows"}`; Templates as
    /// `{"template_ref","version","is_definition","parameters","metrics"}`; property sets as
    /// objects of `{"type","value"}`.
    pub fn to_json(&self) -> Json {
        use MetricValue as V;
        match self {
            V::Int8(v) => Json::from(*v),
            V::Int16(v) => Json::from(*v),
            V::Int32(v) => Json::from(*v),
            V::Int64(v) => Json::from(*v),
            V::UInt8(v) => Json::from(*v),
            V::UInt16(v) => Json::from(*v),
            V::UInt32(v) => Json::from(*v),
            V::UInt64(v) | V::DateTime(v) => Json::from(*v),
            V::Float(v) => f32_json(*v),
            V::Double(v) => float_json(*v),
            V::Boolean(v) => Json::from(*v),
            V::String(s) | V::Text(s) | V::Uuid(s) => Json::from(s.as_str()),
            V::Bytes(b) | V::File(b) => b64(b),
            V::DataSet(d) => d.to_json(),
            V::Template(t) => t.to_json(),
            V::PropertySet(p) => p.to_json(),
            V::PropertySetList(l) => Json::Array(l.iter().map(PropertySet::to_json).collect()),
            V::Int8Array(a) => Json::from(a.clone()),
            V::Int16Array(a) => Json::from(a.clone()),
            V::Int32Array(a) => Json::from(a.clone()),
            V::Int64Array(a) => Json::from(a.clone()),
            V::UInt8Array(a) => Json::from(a.clone()),
            V::UInt16Array(a) => Json::from(a.clone()),
            V::UInt32Array(a) => Json::from(a.clone()),
            V::UInt64Array(a) | V::DateTimeArray(a) => Json::from(a.clone()),
            V::FloatArray(a) => Json::Array(a.iter().map(|v| f32_json(*v)).collect()),
            V::DoubleArray(a) => Json::Array(a.iter().map(|v| float_json(*v)).collect()),
            V::BooleanArray(a) => Json::from(a.clone()),
            V::StringArray(a) => Json::from(a.clone()),
        }
    }

    /// A value of `datatype` from JSON (e.g. a command's `"value"`): numbers must fit the type
    /// exactly (no rounding of integers, no overflow), booleans may be given for numeric types
    /// as `true`/`false` only where the datatype is Boolean, strings for string types, base64 for
    /// Bytes/File, arrays for array types.
    pub fn from_json(datatype: DataType, v: &Json) -> Result<MetricValue, String> {
        use MetricValue as V;
        let int = |v: &Json| -> Result<i128, String> {
            if let Some(i) = v.as_i64() {
                return Ok(i128::from(i));
            }
            if let Some(u) = v.as_u64() {
                return Ok(i128::from(u));
            }
            if let Some(f) = v.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                return Ok(f as i128);
            }
            if let Some(s) = v.as_str()
                && let Ok(i) = s.trim().parse::<i128>()
            {
                return Ok(i);
            }
            Err(format!("{v} is not an integer"))
        };
        fn fit<T: TryFrom<i128>>(i: i128, dt: DataType) -> Result<T, String> {
            T::try_from(i).map_err(|_| format!("{i} is out of range for {dt}"))
        }
        let float = |v: &Json| -> Result<f64, String> {
            match v {
                Json::Number(n) => n.as_f64().ok_or_else(|| format!("{v} is not a number")),
                Json::String(s) => match s.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    s => s.trim().parse().map_err(|_| format!("{v} is not a number")),
                },
                _ => Err(format!("{v} is not a number")),
            }
        };
        let string = |v: &Json| -> Result<String, String> {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{v} is not a string"))
        };
        let bytes = |v: &Json| -> Result<Vec<u8>, String> {
            let s = v
                .as_str()
                .ok_or_else(|| format!("{v} is not a base64 string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("not base64: {e}"))
        };
        let array = |v: &Json| -> Result<Vec<Json>, String> {
            v.as_array()
                .cloned()
                .ok_or_else(|| format!("{datatype} needs a JSON array"))
        };
        macro_rules! ints {
            ($t:ty) => {
                array(v)?
                    .iter()
                    .map(|x| int(x).and_then(|i| fit::<$t>(i, datatype)))
                    .collect::<Result<Vec<$t>, String>>()?
            };
        }
        Ok(match datatype {
            DataType::Int8 => V::Int8(fit(int(v)?, datatype)?),
            DataType::Int16 => V::Int16(fit(int(v)?, datatype)?),
            DataType::Int32 => V::Int32(fit(int(v)?, datatype)?),
            DataType::Int64 => V::Int64(fit(int(v)?, datatype)?),
            DataType::UInt8 => V::UInt8(fit(int(v)?, datatype)?),
            DataType::UInt16 => V::UInt16(fit(int(v)?, datatype)?),
            DataType::UInt32 => V::UInt32(fit(int(v)?, datatype)?),
            DataType::UInt64 => V::UInt64(fit(int(v)?, datatype)?),
            DataType::DateTime => V::DateTime(fit(int(v)?, datatype)?),
            DataType::Float => {
                let f = float(v)?;
                if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                    return Err(format!("{f} is out of range for Float"));
                }
                V::Float(f as f32)
            }
            DataType::Double => V::Double(float(v)?),
            DataType::Boolean => match v {
                Json::Bool(b) => V::Boolean(*b),
                Json::Number(n) if n.as_u64() == Some(0) => V::Boolean(false),
                Json::Number(n) if n.as_u64() == Some(1) => V::Boolean(true),
                _ => return Err(format!("{v} is not a boolean")),
            },
            DataType::String => V::String(string(v)?),
            DataType::Text => V::Text(string(v)?),
            DataType::Uuid => V::Uuid(string(v)?),
            DataType::Bytes => V::Bytes(bytes(v)?),
            DataType::File => V::File(bytes(v)?),
            DataType::Int8Array => V::Int8Array(ints!(i8)),
            DataType::Int16Array => V::Int16Array(ints!(i16)),
            DataType::Int32Array => V::Int32Array(ints!(i32)),
            DataType::Int64Array => V::Int64Array(ints!(i64)),
            DataType::UInt8Array => V::UInt8Array(ints!(u8)),
            DataType::UInt16Array => V::UInt16Array(ints!(u16)),
            DataType::UInt32Array => V::UInt32Array(ints!(u32)),
            DataType::UInt64Array => V::UInt64Array(ints!(u64)),
            DataType::DateTimeArray => V::DateTimeArray(ints!(u64)),
            DataType::FloatArray => V::FloatArray(
                array(v)?
                    .iter()
                    .map(|x| float(x).map(|f| f as f32))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::DoubleArray => {
                V::DoubleArray(array(v)?.iter().map(float).collect::<Result<_, _>>()?)
            }
            DataType::BooleanArray => V::BooleanArray(
                array(v)?
                    .iter()
                    .map(|x| x.as_bool().ok_or_else(|| format!("{x} is not a boolean")))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::StringArray => {
                V::StringArray(array(v)?.iter().map(string).collect::<Result<_, _>>()?)
            }
            DataType::DataSet
            | DataType::Template
            | DataType::PropertySet
            | DataType::PropertySetList => {
                return Err(format!("{datatype} values cannot be given as JSON"));
            }
        })
    }
}

impl DataSet {
    pub fn to_json(&self) -> Json {
        let rows = self
            .rows
            .iter()
            .map(|r| {
                Json::Array(
                    r.iter()
                        .map(|c| c.as_ref().map(MetricValue::to_json).unwrap_or(Json::Null))
                        .collect(),
                )
            })
            .collect();
        serde_json::json!({
            "columns": self.columns,
            "types": self.types.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "rows": Json::Array(rows),
        })
    }
}

impl Template {
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        if let Some(r) = &self.template_ref {
            m.insert("template_ref".into(), Json::from(r.as_str()));
        }
        if let Some(v) = &self.version {
            m.insert("version".into(), Json::from(v.as_str()));
        }
        m.insert("is_definition".into(), Json::from(self.is_definition));
        m.insert(
            "parameters".into(),
            Json::Array(
                self.parameters
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "type": p.datatype.name(),
                            "value": p.value.as_ref().map(MetricValue::to_json),
                        })
                    })
                    .collect(),
            ),
        );
        m.insert(
            "metrics".into(),
            Json::Array(self.metrics.iter().map(Metric::to_json).collect()),
        );
        Json::Object(m)
    }
}

impl PropertySet {
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        for (k, v) in &self.0 {
            m.insert(
                k.clone(),
                serde_json::json!({
                    "type": v.datatype.name(),
                    "value": v.value.as_ref().map(MetricValue::to_json),
                }),
            );
        }
        Json::Object(m)
    }
}

impl Metric {
    /// `{"name","alias","timestamp","datatype","value","is_null",…}` (absent fields left out).
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), Json::from(n.as_str()));
        }
        if let Some(a) = self.alias {
            m.insert("alias".into(), Json::from(a));
        }
        if let Some(t) = self.timestamp {
            m.insert("timestamp".into(), Json::from(t));
        }
        if let Some(d) = self.datatype {
            m.insert("datatype".into(), Json::from(d.name()));
        }
        m.insert(
            "value".into(),
            self.value
                .as_ref()
                .map(MetricValue::to_json)
                .unwrap_or(Json::Null),
        );
        m.insert("is_null".into(), Json::from(self.value.is_none()));
        if self.is_historical {
            m.insert("is_historical".into(), Json::from(true));
        }
        if self.is_transient {
            m.insert("is_transient".into(), Json::from(true));
        }
        if let Some(p) = &self.properties
            && !p.is_empty()
        {
            m.insert("properties".into(), p.to_json());
        }
        Json::Object(m)
    }
}

#[cfg(test)]
mod tests;
