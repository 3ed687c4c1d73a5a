//! Modbus requests as the poller issues them, and the RTU framing (our own: the RTU master must
//! count CRC errors, reject replies from the wrong unit and drain late replies on a shared bus,
//! which `tokio-modbus`'s RTU client silently resynchronises over).

use std::fmt;

use super::config::Area;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Functions 1–4.
    Read { area: Area, start: u16, count: u16 },
    /// Function 5.
    WriteCoil { address: u16, value: bool },
    /// Function 15.
    WriteCoils { start: u16, values: Vec<bool> },
    /// Function 6.
    WriteRegister { address: u16, value: u16 },
    /// Function 16.
    WriteRegisters { start: u16, values: Vec<u16> },
    /// Function 22: `(current AND and) OR (or AND NOT and)`.
    MaskWrite { address: u16, and: u16, or: u16 },
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
    Written,
}

impl Op {
    pub fn function_code(&self) -> u8 {
        match self {
            Op::Read { area, .. } => match area {
                Area::Coil => 1,
                Area::DiscreteInput => 2,
                Area::HoldingRegister => 3,
                Area::InputRegister => 4,
            },
            Op::WriteCoil { .. } => 5,
            Op::WriteRegister { .. } => 6,
            Op::WriteCoils { .. } => 15,
            Op::WriteRegisters { .. } => 16,
            Op::MaskWrite { .. } => 22,
        }
    }

    /// The request PDU (function code first).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.function_code()];
        let put16 = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_be_bytes());
        match self {
            Op::Read { start, count, .. } => {
                put16(&mut out, *start);
                put16(&mut out, *count);
            }
            Op::WriteCoil { address, value } => {
                put16(&mut out, *address);
                put16(&mut out, if *value { 0xFF00 } else { 0x0000 });
            }
            Op::WriteRegister { address, value } => {
                put16(&mut out, *address);
                put16(&mut out, *value);
            }
            Op::WriteCoils { start, values } => {
                put16(&mut out, *start);
                put16(&mut out, values.len() as u16);
                let packed = pack_bits(values);
                out.push(packed.len() as u8);
                out.extend_from_slice(&packed);
            }
            Op::WriteRegisters { start, values } => {
                put16(&mut out, *start);
                put16(&mut out, values.len() as u16);
                out.push((values.len() * 2) as u8);
                for v in values {
                    put16(&mut out, *v);
                }
            }
            Op::MaskWrite { address, and, or } => {
                put16(&mut out, *address);
                put16(&mut out, *and);
                put16(&mut out, *or);
            }
        }
        out
    }

    /// Length of the reply PDU once its first bytes are known (`None`: need more bytes).
    /// `pdu` starts at the function code.
    pub fn expected_reply_len(&self, pdu: &[u8]) -> Option<usize> {
        let fc = *pdu.first()?;
        if fc & 0x80 != 0 {
            return Some(2);
        }
        match fc {
            1..=4 => pdu.get(1).map(|n| 2 + usize::from(*n)),
            5 | 6 | 15 | 16 => Some(5),
            22 => Some(7),
            // Unknown function: the caller resynchronises on line silence.
            _ => None,
        }
    }

    /// Validates and decodes a reply PDU (function code first).
    pub fn decode_reply(&self, pdu: &[u8]) -> Result<OpResult, ReplyError> {
        let fc = *pdu
            .first()
            .ok_or_else(|| ReplyError::Malformed("empty reply".into()))?;
        let want = self.function_code();
        if fc == want | 0x80 {
            let code = *pdu
                .get(1)
                .ok_or_else(|| ReplyError::Malformed("exception reply without a code".into()))?;
            return Err(ReplyError::Exception(code));
        }
        if fc != want {
            return Err(ReplyError::Malformed(format!(
                "reply has function {fc}, request had {want}"
            )));
        }
        let be16 = |i: usize| -> Result<u16, ReplyError> {
            match (pdu.get(i), pdu.get(i + 1)) {
                (Some(h), Some(l)) => Ok(u16::from_be_bytes([*h, *l])),
                _ => Err(ReplyError::Malformed(format!(
                    "reply of {} bytes is too short",
                    pdu.len()
                ))),
            }
        };
        match self {
            Op::Read { area, count, .. } => {
                let n = usize::from(
                    *pdu.get(1)
                        .ok_or_else(|| ReplyError::Malformed("no byte count".into()))?,
                );
                let data = pdu.get(2..2 + n).ok_or_else(|| {
                    ReplyError::Malformed(format!(
                        "byte count {n} but only {} data bytes",
                        pdu.len().saturating_sub(2)
                    ))
                })?;
                let count = usize::from(*count);
                if area.is_bits() {
                    if n != count.div_ceil(8) {
                        return Err(ReplyError::Malformed(format!(
                            "{n} data bytes for {count} bits"
                        )));
                    }
                    Ok(OpResult::Bits(unpack_bits(data, count)))
                } else {
                    if n != count * 2 {
                        return Err(ReplyError::Malformed(format!(
                            "{n} data bytes for {count} registers"
                        )));
                    }
                    Ok(OpResult::Registers(
                        data.chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect(),
                    ))
                }
            }
            Op::WriteCoil { address, value } => {
                let echo = (be16(1)?, be16(3)?);
                let sent = (*address, if *value { 0xFF00 } else { 0 });
                echo_check(echo == sent)
            }
            Op::WriteRegister { address, value } => {
                echo_check((be16(1)?, be16(3)?) == (*address, *value))
            }
            Op::WriteCoils { start, values } => {
                echo_check((be16(1)?, be16(3)?) == (*start, values.len() as u16))
            }
            Op::WriteRegisters { start, values } => {
                echo_check((be16(1)?, be16(3)?) == (*start, values.len() as u16))
            }
            Op::MaskWrite { address, and, or } => {
                echo_check((be16(1)?, be16(3)?, be16(5)?) == (*address, *and, *or))
            }
        }
    }
}

fn echo_check(ok: bool) -> Result<OpResult, ReplyError> {
    if ok {
        Ok(OpResult::Written)
    } else {
        Err(ReplyError::Malformed(
            "write reply does not echo the request".into(),
        ))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read { area, start, count } => write!(f, "read {area} {start}+{count}"),
            Op::WriteCoil { address, value } => write!(f, "write coil {address}={value}"),
            Op::WriteCoils { start, values } => {
                write!(f, "write coils {start}+{}", values.len())
            }
            Op::WriteRegister { address, value } => {
                write!(f, "write register {address}={value}")
            }
            Op::WriteRegisters { start, values } => {
                write!(f, "write registers {start}+{}", values.len())
            }
            Op::MaskWrite { address, and, or } => {
                write!(f, "mask write {address} and={and:#06x} or={or:#06x}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    Exception(u8),
    Malformed(String),
}

pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

pub fn unpack_bits(bytes: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|i| bytes.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1))
        .collect()
}

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An RTU frame: unit, PDU, CRC (low byte first).
pub fn rtu_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(pdu.len() + 3);
    f.push(unit);
    f.extend_from_slice(pdu);
    let crc = crc16(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// Checks the CRC of a complete RTU frame.
pub fn rtu_crc_ok(frame: &[u8]) -> bool {
    if frame.len() < 4 {
        return false;
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    crc16(body) == u16::from_le_bytes([crc[0], crc[1]])
}

/// Name of a standard exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "non-standard exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_vectors() {
        // Read holding registers, unit 1, address 0, count 10: 01 03 00 00 00 0A C5 CD
        let f = rtu_frame(
            1,
            &Op::Read {
                area: Area::HoldingRegister,
                start: 0,
                count: 10,
            }
            .encode(),
        );
        assert_eq!(f, vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]);
        assert!(rtu_crc_ok(&f));
        // Write single coil unit 17 address 0xAC on: 11 05 00 AC FF 00 4E 8B
        let f = rtu_frame(
            17,
            &Op::WriteCoil {
                address: 0xAC,
                value: true,
            }
            .encode(),
        );
        assert_eq!(f, vec![0x11, 0x05, 0x00, 0xAC, 0xFF, 0x00, 0x4E, 0x8B]);
        let mut bad = f.clone();
        bad[3] ^= 1;
        assert!(!rtu_crc_ok(&bad));
    }

    #[test]
    fn encodes_writes() {
        assert_eq!(
            Op::WriteCoils {
                start: 19,
                values: vec![
                    true, false, true, true, false, false, true, true, true, false
                ]
            }
            .encode(),
            vec![15, 0, 19, 0, 10, 2, 0xCD, 0x01]
        );
        assert_eq!(
            Op::WriteRegisters {
                start: 1,
                values: vec![0x000A, 0x0102]
            }
            .encode(),
            vec![16, 0, 1, 0, 2, 4, 0, 0x0A, 1, 2]
        );
        assert_eq!(
            Op::MaskWrite {
                address: 4,
                and: 0xF2,
                or: 0x25
            }
            .encode(),
            vec![22, 0, 4, 0, 0xF2, 0, 0x25]
        );
    }

    #[test]
    fn decodes_and_validates_replies() {
        let read = Op::Read {
            area: Area::HoldingRegister,
            start: 0,
            count: 2,
        };
        assert_eq!(
            read.decode_reply(&[3, 4, 0, 1, 0xFF, 0xFE]),
            Ok(OpResult::Registers(vec![1, 0xFFFE]))
        );
        assert_eq!(read.decode_reply(&[0x83, 2]), Err(ReplyError::Exception(2)));
        assert!(matches!(
            read.decode_reply(&[3, 2, 0, 1]),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            read.decode_reply(&[3, 4, 0, 1]),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            read.decode_reply(&[4, 4, 0, 1, 0, 2]),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            read.decode_reply(&[]),
            Err(ReplyError::Malformed(_))
        ));
        let coils = Op::Read {
            area: Area::Coil,
            start: 0,
            count: 10,
        };
        assert_eq!(
            coils.decode_reply(&[1, 2, 0xCD, 0x01]),
            Ok(OpResult::Bits(vec![
                true, false, true, true, false, false, true, true, true, false
            ]))
        );
        assert!(matches!(
            coils.decode_reply(&[1, 1, 0xCD]),
            Err(ReplyError::Malformed(_))
        ));
        let w = Op::WriteRegister {
            address: 7,
            value: 9,
        };
        assert_eq!(w.decode_reply(&[6, 0, 7, 0, 9]), Ok(OpResult::Written));
        assert!(matches!(
            w.decode_reply(&[6, 0, 7, 0, 8]),
            Err(ReplyError::Malformed(_))
        ));
        assert_eq!(read.expected_reply_len(&[3]), None);
        assert_eq!(read.expected_reply_len(&[3, 4]), Some(6));
        assert_eq!(read.expected_reply_len(&[0x83]), Some(2));
        assert_eq!(w.expected_reply_len(&[6]), Some(5));
    }
}
