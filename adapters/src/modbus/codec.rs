//! Pure encoding and decoding of tag values to and from Modbus registers.
//!
//! # Byte and word order
//!
//! A value's bytes in big-endian order are named A, B, C, D (… H for 64-bit values); A is the
//! most significant byte. Registers are 16-bit words sent high byte first. The four orders:
//!
//! | order  | 32-bit value in registers | 64-bit value in registers | 16-bit value |
//! |--------|---------------------------|---------------------------|--------------|
//! | `ABCD` | `AB CD` (big endian, Modbus default) | `AB CD EF GH` | `AB` |
//! | `CDAB` | `CD AB` (word swap)        | `GH EF CD AB`             | `AB` |
//! | `BADC` | `BA DC` (byte swap)        | `BA DC FE HG`             | `BA` |
//! | `DCBA` | `DC BA` (little endian)    | `HG FE DC BA`             | `BA` |
//!
//! Strings are bytes in reading order, two per register; `ABCD`/`CDAB` put the first character
//! in the high byte, `BADC`/`DCBA` in the low byte. Trailing NUL bytes are dropped on decode and
//! padded on encode. A `bit` tag is decoded from the 16-bit register value after byte order.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a value is laid out in registers (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum WordOrder {
    #[default]
    #[serde(alias = "abcd", alias = "big_endian")]
    ABCD,
    #[serde(alias = "cdab", alias = "word_swap")]
    CDAB,
    #[serde(alias = "badc", alias = "byte_swap")]
    BADC,
    #[serde(alias = "dcba", alias = "little_endian")]
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The data type of a tag, as stored in the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One coil or discrete input.
    Bool,
    /// Bit `n` (0 = least significant) of a 16-bit register.
    Bit(u8),
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// A fixed-length string of this many bytes (two per register).
    String(u16),
}

impl DataType {
    /// Registers (for register areas) or bits (for bit areas) the type occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit(_) | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String(len) => len.div_ceil(2),
        }
    }

    /// Whether the type is read from coils/discrete inputs (true) or registers (false).
    pub fn is_bit_type(self) -> bool {
        matches!(self, DataType::Bool)
    }

    /// Whether scale, offset and deadband apply.
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            DataType::Bool | DataType::Bit(_) | DataType::String(_)
        )
    }

    /// The kind of value this type decodes to before scaling.
    pub fn raw_kind(self) -> ValueKind {
        match self {
            DataType::Bool | DataType::Bit(_) => ValueKind::Bool,
            DataType::U16 => ValueKind::U16,
            DataType::I16 => ValueKind::I16,
            DataType::U32 => ValueKind::U32,
            DataType::I32 => ValueKind::I32,
            DataType::U64 => ValueKind::U64,
            DataType::I64 => ValueKind::I64,
            DataType::F32 => ValueKind::F32,
            DataType::F64 => ValueKind::F64,
            DataType::String(_) => ValueKind::String,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Bool => f.write_str("bool"),
            DataType::Bit(n) => write!(f, "bit {n}"),
            DataType::U16 => f.write_str("u16"),
            DataType::I16 => f.write_str("i16"),
            DataType::U32 => f.write_str("u32"),
            DataType::I32 => f.write_str("i32"),
            DataType::U64 => f.write_str("u64"),
            DataType::I64 => f.write_str("i64"),
            DataType::F32 => f.write_str("f32"),
            DataType::F64 => f.write_str("f64"),
            DataType::String(n) => write!(f, "string[{n}]"),
        }
    }
}

/// A typed value: raw from the device, or in engineering units after scale and offset
/// (a scaled numeric tag always yields [`Value::F64`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    String(String),
}

/// The type of a [`Value`] (e.g. for a Sparkplug datatype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Bool(_) => ValueKind::Bool,
            Value::U16(_) => ValueKind::U16,
            Value::I16(_) => ValueKind::I16,
            Value::U32(_) => ValueKind::U32,
            Value::I32(_) => ValueKind::I32,
            Value::U64(_) => ValueKind::U64,
            Value::I64(_) => ValueKind::I64,
            Value::F32(_) => ValueKind::F32,
            Value::F64(_) => ValueKind::F64,
            Value::String(_) => ValueKind::String,
        }
    }

    /// The value as a float (bools are 0/1; strings have none).
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::U16(v) => f64::from(v),
            Value::I16(v) => f64::from(v),
            Value::U32(v) => f64::from(v),
            Value::I32(v) => f64::from(v),
            Value::U64(v) => v as f64,
            Value::I64(v) => v as f64,
            Value::F32(v) => f64::from(v),
            Value::F64(v) => v,
            Value::String(_) => return None,
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("{data_type} needs {needed} registers, got {got}")]
    Short {
        data_type: DataType,
        needed: usize,
        got: usize,
    },
    #[error("a {value_kind:?} value cannot be written to a {data_type} tag")]
    WrongKind {
        data_type: DataType,
        value_kind: ValueKind,
    },
    #[error("{value} is out of range for {data_type}")]
    OutOfRange { value: String, data_type: DataType },
    #[error("string of {len} bytes does not fit {data_type}")]
    StringTooLong { len: usize, data_type: DataType },
    #[error("{data_type} is read and written as bits, not registers")]
    NotRegisters { data_type: DataType },
}

fn bytes_to_registers(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<[u8; 2]> = bytes.chunks(2).map(|c| [c[0], c[1]]).collect();
    if order.swaps_words() {
        words.reverse();
    }
    words
        .into_iter()
        .map(|[hi, lo]| {
            if order.swaps_bytes() {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect()
}

/// Inverse of `bytes_to_registers`: big-endian value bytes (A first).
fn registers_to_bytes<const N: usize>(regs: &[u16], order: WordOrder) -> [u8; N] {
    let mut out = [0u8; N];
    let words = N / 2;
    for (i, reg) in regs.iter().take(words).enumerate() {
        let [hi, lo] = reg.to_be_bytes();
        let pair = if order.swaps_bytes() {
            [lo, hi]
        } else {
            [hi, lo]
        };
        let slot = if order.swaps_words() {
            words - 1 - i
        } else {
            i
        };
        out[slot * 2] = pair[0];
        out[slot * 2 + 1] = pair[1];
    }
    out
}

/// Decodes a raw value (before scaling) from the registers of a register tag.
pub fn decode_registers(
    data_type: DataType,
    order: WordOrder,
    regs: &[u16],
) -> Result<Value, CodecError> {
    let needed = usize::from(data_type.width());
    if regs.len() < needed {
        return Err(CodecError::Short {
            data_type,
            needed,
            got: regs.len(),
        });
    }
    Ok(match data_type {
        DataType::Bool => return Err(CodecError::NotRegisters { data_type }),
        DataType::Bit(n) => {
            let v = u16::from_be_bytes(registers_to_bytes::<2>(regs, order));
            Value::Bool(n < 16 && (v >> n) & 1 == 1)
        }
        DataType::U16 => Value::U16(u16::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::I16 => Value::I16(i16::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::U32 => Value::U32(u32::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::I32 => Value::I32(i32::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::F32 => Value::F32(f32::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::U64 => Value::U64(u64::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::I64 => Value::I64(i64::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::F64 => Value::F64(f64::from_be_bytes(registers_to_bytes(regs, order))),
        DataType::String(len) => {
            let mut bytes = Vec::with_capacity(needed * 2);
            for reg in &regs[..needed] {
                let [hi, lo] = reg.to_be_bytes();
                if order.swaps_bytes() {
                    bytes.extend_from_slice(&[lo, hi]);
                } else {
                    bytes.extend_from_slice(&[hi, lo]);
                }
            }
            bytes.truncate(usize::from(len));
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    })
}

/// Encodes a raw value (already unscaled, of the tag's raw kind) into registers.
/// `Bit(n)` encodes to the single register with only that bit set or clear; writers use a
/// masked write for it instead (see [`bit_masks`]).
pub fn encode_registers(
    data_type: DataType,
    order: WordOrder,
    value: &Value,
) -> Result<Vec<u16>, CodecError> {
    let wrong = || CodecError::WrongKind {
        data_type,
        value_kind: value.kind(),
    };
    let bytes: Vec<u8> = match (data_type, value) {
        (DataType::Bool, _) => return Err(CodecError::NotRegisters { data_type }),
        (DataType::Bit(n), Value::Bool(b)) => {
            let v: u16 = if *b { 1u16 << (n & 15) } else { 0 };
            v.to_be_bytes().to_vec()
        }
        (DataType::U16, Value::U16(v)) => v.to_be_bytes().to_vec(),
        (DataType::I16, Value::I16(v)) => v.to_be_bytes().to_vec(),
        (DataType::U32, Value::U32(v)) => v.to_be_bytes().to_vec(),
        (DataType::I32, Value::I32(v)) => v.to_be_bytes().to_vec(),
        (DataType::F32, Value::F32(v)) => v.to_be_bytes().to_vec(),
        (DataType::U64, Value::U64(v)) => v.to_be_bytes().to_vec(),
        (DataType::I64, Value::I64(v)) => v.to_be_bytes().to_vec(),
        (DataType::F64, Value::F64(v)) => v.to_be_bytes().to_vec(),
        (DataType::String(len), Value::String(s)) => {
            if s.len() > usize::from(len) {
                return Err(CodecError::StringTooLong {
                    len: s.len(),
                    data_type,
                });
            }
            let mut bytes = s.as_bytes().to_vec();
            bytes.resize(usize::from(data_type.width()) * 2, 0);
            // Strings never swap words: only the byte order within a register applies.
            return Ok(bytes
                .chunks(2)
                .map(|c| {
                    if order.swaps_bytes() {
                        u16::from_be_bytes([c[1], c[0]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    }
                })
                .collect());
        }
        _ => return Err(wrong()),
    };
    Ok(bytes_to_registers(&bytes, order))
}

/// AND/OR masks for a masked register write (function 22) that sets bit `n` of a `Bit(n)`
/// tag to `on`, honouring the byte order of the register.
pub fn bit_masks(bit: u8, order: WordOrder, on: bool) -> (u16, u16) {
    let mask = 1u16 << (bit & 15);
    let mask = if order.swaps_bytes() {
        mask.swap_bytes()
    } else {
        mask
    };
    (!mask, if on { mask } else { 0 })
}

/// Raw device value → engineering value: `raw * scale + offset`. With scale 1 and offset 0 the
/// raw value is returned unchanged (keeping its type); otherwise numeric values become `F64`.
pub fn to_engineering(raw: Value, scale: f64, offset: f64) -> Value {
    if scale == 1.0 && offset == 0.0 {
        return raw;
    }
    match raw.as_f64() {
        Some(f) if !matches!(raw, Value::Bool(_)) => Value::F64(f * scale + offset),
        _ => raw,
    }
}

/// Engineering value → raw value of `data_type` for writing: `(value - offset) / scale`,
/// rounded to the nearest integer for integer types, with a range check.
pub fn from_engineering(
    data_type: DataType,
    value: &Value,
    scale: f64,
    offset: f64,
) -> Result<Value, CodecError> {
    let wrong = || CodecError::WrongKind {
        data_type,
        value_kind: value.kind(),
    };
    match data_type {
        DataType::Bool | DataType::Bit(_) => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            other => match other.as_f64() {
                Some(0.0) => Ok(Value::Bool(false)),
                Some(1.0) => Ok(Value::Bool(true)),
                _ => Err(wrong()),
            },
        },
        DataType::String(_) => match value {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Err(wrong()),
        },
        _ => {
            let identity = scale == 1.0 && offset == 0.0;
            // Exact integer passthrough without a float round trip (u64/i64 beyond 2^53).
            if identity && let Some(v) = exact_integer(data_type, value) {
                return v;
            }
            if matches!(value, Value::Bool(_) | Value::String(_)) {
                return Err(wrong());
            }
            let eng = value.as_f64().ok_or_else(wrong)?;
            let raw = (eng - offset) / scale;
            float_to_raw(data_type, raw)
        }
    }
}

fn exact_integer(data_type: DataType, value: &Value) -> Option<Result<Value, CodecError>> {
    let as_i128: i128 = match *value {
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => v.into(),
        Value::I64(v) => v.into(),
        _ => return None,
    };
    let out = |ok: Option<Value>| {
        ok.ok_or_else(|| CodecError::OutOfRange {
            value: as_i128.to_string(),
            data_type,
        })
    };
    Some(match data_type {
        DataType::U16 => out(u16::try_from(as_i128).ok().map(Value::U16)),
        DataType::I16 => out(i16::try_from(as_i128).ok().map(Value::I16)),
        DataType::U32 => out(u32::try_from(as_i128).ok().map(Value::U32)),
        DataType::I32 => out(i32::try_from(as_i128).ok().map(Value::I32)),
        DataType::U64 => out(u64::try_from(as_i128).ok().map(Value::U64)),
        DataType::I64 => out(i64::try_from(as_i128).ok().map(Value::I64)),
        _ => return None,
    })
}

fn float_to_raw(data_type: DataType, raw: f64) -> Result<Value, CodecError> {
    let range = || CodecError::OutOfRange {
        value: raw.to_string(),
        data_type,
    };
    if !raw.is_finite() && !matches!(data_type, DataType::F32 | DataType::F64) {
        return Err(range());
    }
    let r = raw.round();
    Ok(match data_type {
        DataType::U16 if (0.0..=f64::from(u16::MAX)).contains(&r) => Value::U16(r as u16),
        DataType::I16 if (f64::from(i16::MIN)..=f64::from(i16::MAX)).contains(&r) => {
            Value::I16(r as i16)
        }
        DataType::U32 if (0.0..=f64::from(u32::MAX)).contains(&r) => Value::U32(r as u32),
        DataType::I32 if (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&r) => {
            Value::I32(r as i32)
        }
        // 2^64 and 2^63 are exactly representable; the upper bounds are exclusive.
        DataType::U64 if (0.0..18_446_744_073_709_551_616.0).contains(&r) => Value::U64(r as u64),
        DataType::I64
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&r) =>
        {
            Value::I64(r as i64)
        }
        DataType::F32 if raw.is_nan() || raw.abs() <= f64::from(f32::MAX) || raw.is_infinite() => {
            Value::F32(raw as f32)
        }
        DataType::F64 => Value::F64(raw),
        _ => return Err(range()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(dt: DataType, o: WordOrder, v: Value) -> Vec<u16> {
        encode_registers(dt, o, &v).expect("encodes")
    }
    fn dec(dt: DataType, o: WordOrder, r: &[u16]) -> Value {
        decode_registers(dt, o, r).expect("decodes")
    }

    /// Hand-computed vectors: (type, value, [ABCD, CDAB, BADC, DCBA] registers).
    fn vectors() -> Vec<(DataType, Value, [Vec<u16>; 4])> {
        use DataType as T;
        vec![
            // 0x1234
            (
                T::U16,
                Value::U16(0x1234),
                [vec![0x1234], vec![0x1234], vec![0x3412], vec![0x3412]],
            ),
            // -2 = 0xFFFE
            (
                T::I16,
                Value::I16(-2),
                [vec![0xFFFE], vec![0xFFFE], vec![0xFEFF], vec![0xFEFF]],
            ),
            // 0x12345678: A=12 B=34 C=56 D=78
            (
                T::U32,
                Value::U32(0x1234_5678),
                [
                    vec![0x1234, 0x5678],
                    vec![0x5678, 0x1234],
                    vec![0x3412, 0x7856],
                    vec![0x7856, 0x3412],
                ],
            ),
            // -123456789 = 0xF8A432EB
            (
                T::I32,
                Value::I32(-123_456_789),
                [
                    vec![0xF8A4, 0x32EB],
                    vec![0x32EB, 0xF8A4],
                    vec![0xA4F8, 0xEB32],
                    vec![0xEB32, 0xA4F8],
                ],
            ),
            // 123.456f32 = 0x42F6E979
            (
                T::F32,
                Value::F32(123.456),
                [
                    vec![0x42F6, 0xE979],
                    vec![0xE979, 0x42F6],
                    vec![0xF642, 0x79E9],
                    vec![0x79E9, 0xF642],
                ],
            ),
            // -1.5f32 = 0xBFC00000
            (
                T::F32,
                Value::F32(-1.5),
                [
                    vec![0xBFC0, 0x0000],
                    vec![0x0000, 0xBFC0],
                    vec![0xC0BF, 0x0000],
                    vec![0x0000, 0xC0BF],
                ],
            ),
            // 0x0102030405060708
            (
                T::U64,
                Value::U64(0x0102_0304_0506_0708),
                [
                    vec![0x0102, 0x0304, 0x0506, 0x0708],
                    vec![0x0708, 0x0506, 0x0304, 0x0102],
                    vec![0x0201, 0x0403, 0x0605, 0x0807],
                    vec![0x0807, 0x0605, 0x0403, 0x0201],
                ],
            ),
            // -2 = 0xFFFFFFFFFFFFFFFE
            (
                T::I64,
                Value::I64(-2),
                [
                    vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
                    vec![0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                    vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
                    vec![0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
                ],
            ),
            // 1.0f64 = 0x3FF0000000000000
            (
                T::F64,
                Value::F64(1.0),
                [
                    vec![0x3FF0, 0, 0, 0],
                    vec![0, 0, 0, 0x3FF0],
                    vec![0xF03F, 0, 0, 0],
                    vec![0, 0, 0, 0xF03F],
                ],
            ),
            // -273.15f64 = 0xC071126666666666
            (
                T::F64,
                Value::F64(-273.15),
                [
                    vec![0xC071, 0x1266, 0x6666, 0x6666],
                    vec![0x6666, 0x6666, 0x1266, 0xC071],
                    vec![0x71C0, 0x6612, 0x6666, 0x6666],
                    vec![0x6666, 0x6666, 0x6612, 0x71C0],
                ],
            ),
            // "ABC" in 4 bytes: 'A'=0x41 'B'=0x42 'C'=0x43, NUL pad
            (
                T::String(4),
                Value::String("ABC".into()),
                [
                    vec![0x4142, 0x4300],
                    vec![0x4142, 0x4300],
                    vec![0x4241, 0x0043],
                    vec![0x4241, 0x0043],
                ],
            ),
            // odd length: 3 bytes → 2 registers
            (
                T::String(3),
                Value::String("XYZ".into()),
                [
                    vec![0x5859, 0x5A00],
                    vec![0x5859, 0x5A00],
                    vec![0x5958, 0x005A],
                    vec![0x5958, 0x005A],
                ],
            ),
            // bit 9 of a register: 0x0200 (byte-swapped: 0x0002)
            (
                T::Bit(9),
                Value::Bool(true),
                [vec![0x0200], vec![0x0200], vec![0x0002], vec![0x0002]],
            ),
            (
                T::Bit(0),
                Value::Bool(false),
                [vec![0], vec![0], vec![0], vec![0]],
            ),
        ]
    }

    #[test]
    fn hand_computed_vectors_every_type_and_order() {
        for (dt, value, regs) in vectors() {
            for (order, expected) in WordOrder::ALL.iter().zip(regs.iter()) {
                assert_eq!(
                    enc(dt, *order, value.clone()),
                    *expected,
                    "encode {dt} {order} {value}"
                );
                assert_eq!(
                    dec(dt, *order, expected),
                    value,
                    "decode {dt} {order} {expected:04X?}"
                );
            }
        }
    }

    #[test]
    fn bit_decoding_reads_only_its_bit() {
        // 0b1000_0000_0000_0101 = 0x8005
        for (bit, on) in [(0, true), (1, false), (2, true), (15, true), (14, false)] {
            assert_eq!(
                dec(DataType::Bit(bit), WordOrder::ABCD, &[0x8005]),
                Value::Bool(on)
            );
            assert_eq!(
                dec(DataType::Bit(bit), WordOrder::BADC, &[0x0580]),
                Value::Bool(on)
            );
        }
    }

    #[test]
    fn bit_masks_match_register_layout() {
        assert_eq!(bit_masks(9, WordOrder::ABCD, true), (!0x0200, 0x0200));
        assert_eq!(bit_masks(9, WordOrder::ABCD, false), (!0x0200, 0));
        assert_eq!(bit_masks(9, WordOrder::BADC, true), (!0x0002, 0x0002));
        // Function 22: result = (current AND and) OR (or AND NOT and)
        let apply = |cur: u16, (and, or): (u16, u16)| (cur & and) | (or & !and);
        assert_eq!(apply(0xFFFF, bit_masks(3, WordOrder::ABCD, false)), 0xFFF7);
        assert_eq!(apply(0x0000, bit_masks(3, WordOrder::DCBA, true)), 0x0800);
    }

    #[test]
    fn strings_trim_nuls_and_reject_overlong() {
        assert_eq!(
            dec(
                DataType::String(6),
                WordOrder::ABCD,
                &[0x4F4B, 0x0000, 0x0000]
            ),
            Value::String("OK".into())
        );
        assert!(matches!(
            encode_registers(
                DataType::String(2),
                WordOrder::ABCD,
                &Value::String("abc".into())
            ),
            Err(CodecError::StringTooLong { .. })
        ));
        // Invalid UTF-8 from a device does not fail the decode.
        assert_eq!(
            dec(DataType::String(2), WordOrder::ABCD, &[0xFF41]),
            Value::String("\u{FFFD}A".into())
        );
    }

    #[test]
    fn short_input_and_wrong_kinds_are_errors() {
        assert!(matches!(
            decode_registers(DataType::F64, WordOrder::ABCD, &[1, 2, 3]),
            Err(CodecError::Short {
                needed: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            encode_registers(DataType::U32, WordOrder::ABCD, &Value::I32(1)),
            Err(CodecError::WrongKind { .. })
        ));
        assert!(matches!(
            decode_registers(DataType::Bool, WordOrder::ABCD, &[1]),
            Err(CodecError::NotRegisters { .. })
        ));
    }

    #[test]
    fn scaling_and_unscaling() {
        assert_eq!(to_engineering(Value::U16(1234), 1.0, 0.0), Value::U16(1234));
        assert_eq!(
            to_engineering(Value::U16(1234), 0.1, 0.0),
            Value::F64(123.4)
        );
        assert_eq!(
            to_engineering(Value::I16(-100), 0.5, 10.0),
            Value::F64(-40.0)
        );
        assert_eq!(
            to_engineering(Value::Bool(true), 2.0, 1.0),
            Value::Bool(true)
        );
        assert_eq!(
            from_engineering(DataType::U16, &Value::F64(123.4), 0.1, 0.0),
            Ok(Value::U16(1234))
        );
        assert_eq!(
            from_engineering(DataType::I16, &Value::F64(-40.0), 0.5, 10.0),
            Ok(Value::I16(-100))
        );
        assert!(matches!(
            from_engineering(DataType::U16, &Value::F64(-1.0), 1.0, 0.0),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            from_engineering(DataType::U16, &Value::I32(70_000), 1.0, 0.0),
            Err(CodecError::OutOfRange { .. })
        ));
        assert_eq!(
            from_engineering(DataType::U64, &Value::U64(u64::MAX), 1.0, 0.0),
            Ok(Value::U64(u64::MAX))
        );
        assert_eq!(
            from_engineering(DataType::I16, &Value::U64(5), 1.0, 0.0),
            Ok(Value::I16(5))
        );
        assert_eq!(
            from_engineering(DataType::F32, &Value::I32(3), 1.0, 0.0),
            Ok(Value::F32(3.0))
        );
        assert_eq!(
            from_engineering(DataType::Bit(3), &Value::U16(1), 1.0, 0.0),
            Ok(Value::Bool(true))
        );
        assert!(from_engineering(DataType::U16, &Value::String("1".into()), 1.0, 0.0).is_err());
        assert!(from_engineering(DataType::U16, &Value::F64(f64::NAN), 1.0, 0.0).is_err());
    }

    fn order() -> impl Strategy<Value = WordOrder> {
        prop::sample::select(WordOrder::ALL.to_vec())
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    fn typed_value() -> impl Strategy<Value = (DataType, Value)> {
        prop_oneof![
            any::<u16>().prop_map(|v| (DataType::U16, Value::U16(v))),
            any::<i16>().prop_map(|v| (DataType::I16, Value::I16(v))),
            any::<u32>().prop_map(|v| (DataType::U32, Value::U32(v))),
            any::<i32>().prop_map(|v| (DataType::I32, Value::I32(v))),
            any::<u64>().prop_map(|v| (DataType::U64, Value::U64(v))),
            any::<i64>().prop_map(|v| (DataType::I64, Value::I64(v))),
            any::<u32>().prop_map(|b| (DataType::F32, Value::F32(f32::from_bits(b)))),
            any::<u64>().prop_map(|b| (DataType::F64, Value::F64(f64::from_bits(b)))),
            (0u8..16, any::<bool>()).prop_map(|(n, b)| (DataType::Bit(n), Value::Bool(b))),
            ("[a-zA-Z0-9 _.-]{0,20}", 20u16..=24)
                .prop_map(|(s, len)| (DataType::String(len), Value::String(s))),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips((dt, v) in typed_value(), o in order()) {
            let regs = encode_registers(dt, o, &v).unwrap();
            prop_assert_eq!(regs.len(), usize::from(dt.width()));
            let back = decode_registers(dt, o, &regs).unwrap();
            prop_assert!(same(&v, &back), "{:?} -> {:04X?} -> {:?}", v, regs, back);
        }

        #[test]
        fn decode_then_encode_round_trips(regs in prop::collection::vec(any::<u16>(), 4), o in order()) {
            for dt in [DataType::U16, DataType::I16, DataType::U32, DataType::I32, DataType::U64,
                       DataType::I64, DataType::F32, DataType::F64] {
                let v = decode_registers(dt, o, &regs).unwrap();
                let again = encode_registers(dt, o, &v).unwrap();
                prop_assert_eq!(&again[..], &regs[..usize::from(dt.width())]);
            }
        }

        #[test]
        fn decode_never_panics(regs in prop::collection::vec(any::<u16>(), 0..6), o in order(), n in 0u8..20, len in 0u16..12) {
            for dt in [DataType::Bool, DataType::Bit(n), DataType::U16, DataType::F64, DataType::String(len)] {
                let _ = decode_registers(dt, o, &regs);
            }
        }

        #[test]
        fn scaled_integers_round_trip(raw in any::<i16>(), scale in prop::sample::select(vec![0.1, 0.01, 0.5, 2.0, 10.0]), offset in -100.0f64..100.0) {
            let eng = to_engineering(Value::I16(raw), scale, offset);
            let back = from_engineering(DataType::I16, &eng, scale, offset).unwrap();
            prop_assert_eq!(back, Value::I16(raw));
        }
    }
}
