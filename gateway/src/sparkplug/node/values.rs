//! Modbus values and qualities as Sparkplug metrics, and command values back.

use super::*;

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

pub(super) fn metric_json(v: &MetricValue) -> serde_json::Value {
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

pub(super) fn quality_code(q: &Quality) -> i32 {
    match q {
        Quality::Good => QUALITY_GOOD,
        Quality::Stale => QUALITY_STALE,
        Quality::Bad(_) => QUALITY_BAD,
    }
}
