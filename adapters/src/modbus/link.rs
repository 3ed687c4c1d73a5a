//! Connections: Modbus TCP through `tokio-modbus`, Modbus RTU through our own master over
//! `tokio-serial` (see `pdu`). Both answer one request at a time and classify every failure.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_modbus::client::Client as _;
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{Request, Response, Slave};
use tokio_serial::SerialPort as _;

use super::config::{Area, Parity, Transport, split_host_port};
use super::pdu::{Op, OpResult, ReplyError, rtu_crc_ok, rtu_frame};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Timeout,
    Exception(u8),
    Crc,
    WrongUnit {
        expected: u8,
        got: u8,
    },
    Malformed(String),
    /// The connection or port failed; it is re-established.
    Io(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timeout"),
            CallError::Exception(c) => {
                write!(f, "exception {c} ({})", super::pdu::exception_name(*c))
            }
            CallError::Crc => f.write_str("CRC error"),
            CallError::WrongUnit { expected, got } => {
                write!(f, "reply from unit {got}, expected {expected}")
            }
            CallError::Malformed(m) => write!(f, "malformed reply: {m}"),
            CallError::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

pub(crate) enum Link {
    Tcp(TcpLink),
    Rtu(RtuLink),
}

impl Link {
    /// Connects (TCP) or opens the port (RTU).
    pub(crate) async fn open(
        transport: &Transport,
        connect_timeout: Duration,
    ) -> Result<Link, String> {
        match transport {
            Transport::Tcp { address } => TcpLink::connect(address, connect_timeout)
                .await
                .map(Link::Tcp),
            Transport::Rtu {
                path,
                baud,
                parity,
                data_bits,
                stop_bits,
            } => RtuLink::open(path, *baud, *parity, *data_bits, *stop_bits).map(Link::Rtu),
        }
    }

    pub(crate) async fn call(
        &mut self,
        unit: u8,
        op: &Op,
        limit: Duration,
    ) -> Result<OpResult, CallError> {
        match self {
            Link::Tcp(l) => l.call(unit, op, limit).await,
            Link::Rtu(l) => l.call(unit, op, limit).await,
        }
    }

    /// Whether the link must be re-established after this error.
    pub(crate) fn broken_by(&self, e: &CallError) -> bool {
        match self {
            // A TCP stream may still deliver the late or mismatched reply: start afresh.
            Link::Tcp(_) => matches!(
                e,
                CallError::Timeout
                    | CallError::WrongUnit { .. }
                    | CallError::Malformed(_)
                    | CallError::Io(_)
            ),
            // The RTU master drains and resynchronises itself; only a port failure breaks it.
            Link::Rtu(_) => matches!(e, CallError::Io(_)),
        }
    }

    pub(crate) fn is_serial(&self) -> bool {
        matches!(self, Link::Rtu(_))
    }
}

pub(crate) struct TcpLink {
    ctx: tokio_modbus::client::Context,
}

impl TcpLink {
    async fn connect(address: &str, limit: Duration) -> Result<TcpLink, String> {
        let (host, port) = split_host_port(address)?;
        let deadline = Instant::now() + limit;
        let addrs: Vec<_> = timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| format!("resolving {host}: timeout"))?
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        let mut last = format!("{host} resolved to no address");
        for addr in addrs {
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let ctx = tokio_modbus::client::tcp::attach(stream);
                    return Ok(TcpLink { ctx });
                }
                Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
                Err(_) => last = format!("connecting to {addr}: timeout"),
            }
        }
        Err(last)
    }

    async fn call(&mut self, unit: u8, op: &Op, limit: Duration) -> Result<OpResult, CallError> {
        use std::borrow::Cow;
        self.ctx.set_slave(Slave(unit));
        let req = match op {
            Op::Read { area, start, count } => match area {
                Area::Coil => Request::ReadCoils(*start, *count),
                Area::DiscreteInput => Request::ReadDiscreteInputs(*start, *count),
                Area::HoldingRegister => Request::ReadHoldingRegisters(*start, *count),
                Area::InputRegister => Request::ReadInputRegisters(*start, *count),
            },
            Op::WriteCoil { address, value } => Request::WriteSingleCoil(*address, *value),
            Op::WriteCoils { start, values } => {
                Request::WriteMultipleCoils(*start, Cow::Borrowed(values))
            }
            Op::WriteRegister { address, value } => Request::WriteSingleRegister(*address, *value),
            Op::WriteRegisters { start, values } => {
                Request::WriteMultipleRegisters(*start, Cow::Borrowed(values))
            }
            Op::MaskWrite { address, and, or } => Request::MaskWriteRegister(*address, *and, *or),
        };
        let result = match timeout(limit, self.ctx.call(req)).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(r) => r,
        };
        let response = match result {
            Ok(Ok(r)) => r,
            Ok(Err(code)) => return Err(CallError::Exception(u8::from(code))),
            Err(tokio_modbus::Error::Transport(e)) => {
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData => CallError::Malformed(e.to_string()),
                    _ => CallError::Io(e.to_string()),
                });
            }
            Err(tokio_modbus::Error::Protocol(p)) => {
                return Err(match &p {
                    tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => {
                        header_mismatch(unit, message)
                    }
                    other => CallError::Malformed(other.to_string()),
                });
            }
        };
        check_tcp_response(op, response)
    }
}

/// tokio-modbus reports `expected/request = Header { transaction_id: .., unit_id: .. }, actual/...`.
fn header_mismatch(unit: u8, message: &str) -> CallError {
    let units: Vec<u8> = message
        .match_indices("unit_id: ")
        .filter_map(|(i, m)| {
            let rest = &message[i + m.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect();
    match units.as_slice() {
        [want, got] if want != got => CallError::WrongUnit {
            expected: unit,
            got: *got,
        },
        _ => CallError::Malformed(format!("mismatched reply header: {message}")),
    }
}

fn check_tcp_response(op: &Op, response: Response) -> Result<OpResult, CallError> {
    let short = |what: &str, got: usize, want: u16| {
        Err(CallError::Malformed(format!(
            "{got} {what} in reply, {want} requested"
        )))
    };
    match (op, response) {
        (
            Op::Read { count, .. },
            Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits),
        ) => {
            if bits.len() < usize::from(*count) {
                return short("bits", bits.len(), *count);
            }
            bits.truncate(usize::from(*count));
            Ok(OpResult::Bits(bits))
        }
        (
            Op::Read { count, .. },
            Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words),
        ) => {
            if words.len() != usize::from(*count) {
                return short("registers", words.len(), *count);
            }
            Ok(OpResult::Registers(words))
        }
        (Op::WriteCoil { address, value }, Response::WriteSingleCoil(a, v))
            if a == *address && v == *value =>
        {
            Ok(OpResult::Written)
        }
        (Op::WriteRegister { address, value }, Response::WriteSingleRegister(a, v))
            if a == *address && v == *value =>
        {
            Ok(OpResult::Written)
        }
        (Op::WriteCoils { start, values }, Response::WriteMultipleCoils(a, n))
            if a == *start && usize::from(n) == values.len() =>
        {
            Ok(OpResult::Written)
        }
        (Op::WriteRegisters { start, values }, Response::WriteMultipleRegisters(a, n))
            if a == *start && usize::from(n) == values.len() =>
        {
            Ok(OpResult::Written)
        }
        (Op::MaskWrite { address, and, or }, Response::MaskWriteRegister(a, x, y))
            if a == *address && x == *and && y == *or =>
        {
            Ok(OpResult::Written)
        }
        (op, other) => Err(CallError::Malformed(format!(
            "reply {other:?} does not match {op}"
        ))),
    }
}

/// RTU master on one serial port.
pub(crate) struct RtuLink {
    port: tokio_serial::SerialStream,
    char_time: Duration,
    /// t3.5: required silence between frames.
    silence: Duration,
    last_activity: Instant,
}

/// Character time and inter-frame silence (3.5 characters; 1.75 ms above 19200 baud, as the
/// Modbus serial line specification fixes it).
pub(crate) fn rtu_timing(
    baud: u32,
    parity: Parity,
    data_bits: u8,
    stop_bits: u8,
) -> (Duration, Duration) {
    let bits = 1 + u32::from(data_bits) + u32::from(parity != Parity::None) + u32::from(stop_bits);
    let char_time = Duration::from_secs_f64(f64::from(bits) / f64::from(baud.max(1)));
    let silence = if baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        char_time.mul_f64(3.5)
    };
    (char_time, silence)
}

impl RtuLink {
    fn open(
        path: &str,
        baud: u32,
        parity: Parity,
        data_bits: u8,
        stop_bits: u8,
    ) -> Result<RtuLink, String> {
        let builder = tokio_serial::new(path, baud)
            .parity(match parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(match data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            })
            .stop_bits(if stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .flow_control(tokio_serial::FlowControl::None);
        let port = tokio_serial::SerialStream::open(&builder)
            .map_err(|e| format!("opening {path}: {e}"))?;
        let (char_time, silence) = rtu_timing(baud, parity, data_bits, stop_bits);
        Ok(RtuLink {
            port,
            char_time,
            silence,
            last_activity: Instant::now(),
        })
    }

    /// Drops whatever arrived outside a transaction (late replies of a timed-out unit).
    fn discard_input(&mut self) -> usize {
        let _ = self.port.clear(tokio_serial::ClearBuffer::Input);
        let mut scratch = [0u8; 256];
        let mut dropped = 0;
        // Bounded: a babbling device cannot keep us here.
        for _ in 0..64 {
            match self.port.try_read(&mut scratch) {
                Ok(n) if n > 0 => dropped += n,
                _ => break,
            }
        }
        dropped
    }

    /// After a bad frame: read and drop bytes until the line has been silent for a while.
    async fn resync(&mut self) {
        let quiet = self.silence.max(Duration::from_millis(20));
        let give_up = Instant::now() + Duration::from_secs(1);
        let mut scratch = [0u8; 256];
        while Instant::now() < give_up {
            match timeout(quiet, self.port.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => self.last_activity = Instant::now(),
                _ => break,
            }
        }
    }

    async fn call(&mut self, unit: u8, op: &Op, limit: Duration) -> Result<OpResult, CallError> {
        let dropped = self.discard_input();
        if dropped > 0 {
            tracing::debug!(dropped, "dropped stray bytes before request");
        }
        // Inter-frame silence since the last byte on the line.
        sleep_until(self.last_activity + self.silence).await;
        let frame = rtu_frame(unit, &op.encode());
        self.port
            .write_all(&frame)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        let sent = Instant::now() + self.char_time * frame.len() as u32;
        self.last_activity = sent;
        let deadline = sent + limit;
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        let total = loop {
            if buf.len() >= 2 {
                let fc = buf[1];
                let known = fc & 0x80 != 0 || matches!(fc, 1..=6 | 15 | 16 | 22);
                if !known {
                    self.resync().await;
                    return Err(CallError::Malformed(format!(
                        "unknown function code {fc} in reply"
                    )));
                }
                if let Some(pdu_len) = op.expected_reply_len(&buf[1..]) {
                    let total = 1 + pdu_len + 2;
                    if buf.len() >= total {
                        break total;
                    }
                }
            }
            match timeout_at(deadline, self.port.read(&mut chunk)).await {
                Err(_) => {
                    return Err(if buf.is_empty() {
                        CallError::Timeout
                    } else {
                        CallError::Malformed(format!(
                            "incomplete reply ({} bytes) when the timeout expired",
                            buf.len()
                        ))
                    });
                }
                Ok(Ok(0)) => return Err(CallError::Io("serial port closed".into())),
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    self.last_activity = Instant::now();
                }
                Ok(Err(e)) => return Err(CallError::Io(e.to_string())),
            }
        };
        let extra = buf.len() > total;
        let frame = &buf[..total];
        if !rtu_crc_ok(frame) {
            self.resync().await;
            return Err(CallError::Crc);
        }
        if extra {
            // More bytes than one frame: someone else is talking; let the line settle.
            self.resync().await;
        }
        if frame[0] != unit {
            return Err(CallError::WrongUnit {
                expected: unit,
                got: frame[0],
            });
        }
        op.decode_reply(&frame[1..total - 2]).map_err(|e| match e {
            ReplyError::Exception(c) => CallError::Exception(c),
            ReplyError::Malformed(m) => CallError::Malformed(m),
        })
    }
}

/// A one-request-at-a-time Modbus client outside the poller (diagnostics, "test read" in a UI,
/// benchmarks). Not for devices the poller also polls on a serial line: the port is exclusive.
pub struct Client {
    link: Link,
    unit: u8,
    timeout: Duration,
}

impl Client {
    /// Connects (TCP) or opens the serial port (RTU).
    pub async fn connect(
        transport: &Transport,
        unit: u8,
        timeout: Duration,
    ) -> Result<Client, String> {
        let link = Link::open(transport, timeout.max(Duration::from_secs(1))).await?;
        Ok(Client {
            link,
            unit,
            timeout,
        })
    }

    /// One request; the connection is unusable after an error that `Poller` would reconnect
    /// on (connect again).
    pub async fn call(&mut self, op: &Op) -> Result<OpResult, CallError> {
        self.link.call(self.unit, op, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_timing_follows_the_spec() {
        let (c, s) = rtu_timing(9600, Parity::Even, 8, 1);
        // 11 bits at 9600 baud = 1.146 ms; 3.5 chars = 4.01 ms
        assert_eq!(c.as_micros(), 1145);
        assert_eq!(s.as_micros(), 4010);
        let (_, s) = rtu_timing(115_200, Parity::None, 8, 1);
        assert_eq!(s, Duration::from_micros(1750));
    }

    #[test]
    fn header_mismatch_classification() {
        let m = "expected/request = Header { transaction_id: 3, unit_id: 1 }, actual/response = Header { transaction_id: 3, unit_id: 9 }";
        assert_eq!(
            header_mismatch(1, m),
            CallError::WrongUnit {
                expected: 1,
                got: 9
            }
        );
        let m = "expected/request = Header { transaction_id: 3, unit_id: 1 }, actual/response = Header { transaction_id: 4, unit_id: 1 }";
        assert!(matches!(header_mismatch(1, m), CallError::Malformed(_)));
    }
}
