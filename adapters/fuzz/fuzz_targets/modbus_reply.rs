//! Modbus replies as a PLC (or a noisy RS-485 line) might send them: any bytes, against any
//! request. Decoding must never panic, and a reply that decodes must match the request
//! (bit/register counts, echoes), so a malformed frame can only ever become a counted error.
#![no_main]

use ironbridge_adapters::modbus::codec::{DataType, WordOrder, decode_registers};
use ironbridge_adapters::modbus::config::Area;
use ironbridge_adapters::modbus::pdu::{Op, OpResult, rtu_crc_ok, rtu_frame};
use libfuzzer_sys::fuzz_target;

fn op_from(b: &[u8]) -> Option<(Op, &[u8])> {
    let (&kind, rest) = b.split_first()?;
    let (head, rest) = (rest.get(..6)?, rest.get(6..)?);
    let a = u16::from_be_bytes([head[0], head[1]]);
    let n = u16::from_be_bytes([head[2], head[3]]);
    let v = u16::from_be_bytes([head[4], head[5]]);
    let op = match kind % 9 {
        0 => Op::Read {
            area: Area::Coil,
            start: a,
            count: n % 2001,
        },
        1 => Op::Read {
            area: Area::DiscreteInput,
            start: a,
            count: n % 2001,
        },
        2 => Op::Read {
            area: Area::HoldingRegister,
            start: a,
            count: n % 126,
        },
        3 => Op::Read {
            area: Area::InputRegister,
            start: a,
            count: n % 126,
        },
        4 => Op::WriteCoil {
            address: a,
            value: v & 1 == 1,
        },
        5 => Op::WriteCoils {
            start: a,
            values: vec![true; usize::from(n % 64)],
        },
        6 => Op::WriteRegister {
            address: a,
            value: v,
        },
        7 => Op::WriteRegisters {
            start: a,
            values: vec![v; usize::from(n % 64)],
        },
        _ => Op::MaskWrite {
            address: a,
            and: n,
            or: v,
        },
    };
    Some((op, rest))
}

fuzz_target!(|data: &[u8]| {
    let Some((op, reply)) = op_from(data) else {
        return;
    };
    // The RTU reader asks how long the reply is once it has its first bytes.
    if let Some(len) = op.expected_reply_len(reply) {
        assert!(
            len >= 2,
            "a reply PDU has at least a function code and one byte"
        );
    }
    match op.decode_reply(reply) {
        Ok(OpResult::Bits(bits)) => match op {
            Op::Read { count, .. } => assert_eq!(bits.len(), usize::from(count)),
            _ => panic!("bits for a write"),
        },
        Ok(OpResult::Registers(regs)) => {
            let Op::Read { count, .. } = op else {
                panic!("registers for a write")
            };
            assert_eq!(regs.len(), usize::from(count));
            // Any register contents decode (or are refused) for every type and order.
            for order in [
                WordOrder::ABCD,
                WordOrder::CDAB,
                WordOrder::BADC,
                WordOrder::DCBA,
            ] {
                for dt in [
                    DataType::Bit(reply.first().copied().unwrap_or(0) % 20),
                    DataType::U16,
                    DataType::I16,
                    DataType::U32,
                    DataType::I32,
                    DataType::U64,
                    DataType::I64,
                    DataType::F32,
                    DataType::F64,
                    DataType::String(count.saturating_mul(2)),
                ] {
                    let _ = decode_registers(dt, order, &regs);
                }
            }
        }
        Ok(OpResult::Written) => assert!(!matches!(op, Op::Read { .. })),
        Err(_) => {}
    }
    // RTU framing: our own frames (unit, non-empty PDU, CRC) always pass the CRC check;
    // arbitrary bytes never panic it.
    let _ = rtu_crc_ok(reply);
    if !reply.is_empty() {
        assert!(rtu_crc_ok(&rtu_frame(data[0], reply)));
    }
});
