//! A Modbus server simulator (TCP, and RTU on a serial port) built on `tokio-modbus`'s server,
//! for tests and the daemon's `--demo`.
//!
//! One [`Simulator`] holds the memory of any number of unit ids (65536 coils, discrete inputs,
//! holding and input registers each) and the faults to inject:
//! exceptions on chosen addresses, a response delay, silent (dead) units, short replies,
//! replies with a wrong unit id or garbage (TCP), dropping every open connection, refusing
//! new ones. [`demo`] runs a changing process for `ironbridge --demo`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::config::Area;

const SPACE: usize = 65_536;

struct Memory {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

impl Memory {
    fn new() -> Self {
        Memory {
            coils: vec![false; SPACE],
            discrete: vec![false; SPACE],
            holding: vec![0; SPACE],
            input: vec![0; SPACE],
        }
    }
}

/// A corruption applied to the next reply(ies) on the wire (TCP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The MBAP unit id is changed.
    WrongUnit,
    /// The reply's PDU is replaced by an impossible one (byte count beyond the frame).
    Garbage,
}

#[derive(Default)]
struct Faults {
    exceptions: HashMap<(u8, Area, u16), u8>,
    delay: Duration,
    silent: HashSet<u8>,
    short_replies: u32,
    corrupt: Vec<Corruption>,
}

struct Inner {
    units: Mutex<HashMap<u8, Memory>>,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    connections: AtomicU64,
    refuse: AtomicBool,
    generation: Mutex<CancellationToken>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the plain data inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A simulated set of Modbus units. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("requests", &self.requests())
            .finish()
    }
}

impl Simulator {
    /// A simulator with no units (add them with [`Simulator::add_unit`]).
    pub fn new() -> Self {
        Simulator {
            inner: Arc::new(Inner {
                units: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                requests: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                refuse: AtomicBool::new(false),
                generation: Mutex::new(CancellationToken::new()),
            }),
        }
    }

    /// Adds a unit id with zeroed memory (no-op if present).
    pub fn add_unit(&self, unit: u8) {
        lock(&self.inner.units)
            .entry(unit)
            .or_insert_with(Memory::new);
    }

    fn with_unit<R>(&self, unit: u8, f: impl FnOnce(&mut Memory) -> R) -> R {
        let mut units = lock(&self.inner.units);
        f(units.entry(unit).or_insert_with(Memory::new))
    }

    pub fn set_registers(&self, unit: u8, area: Area, start: u16, values: &[u16]) {
        self.with_unit(unit, |m| {
            let mem = match area {
                Area::InputRegister => &mut m.input,
                _ => &mut m.holding,
            };
            for (i, v) in values.iter().enumerate() {
                if let Some(slot) = mem.get_mut(usize::from(start) + i) {
                    *slot = *v;
                }
            }
        })
    }

    pub fn registers(&self, unit: u8, area: Area, start: u16, count: u16) -> Vec<u16> {
        self.with_unit(unit, |m| {
            let mem = match area {
                Area::InputRegister => &m.input,
                _ => &m.holding,
            };
            let s = usize::from(start);
            mem[s..(s + usize::from(count)).min(SPACE)].to_vec()
        })
    }

    pub fn set_bits(&self, unit: u8, area: Area, start: u16, values: &[bool]) {
        self.with_unit(unit, |m| {
            let mem = match area {
                Area::DiscreteInput => &mut m.discrete,
                _ => &mut m.coils,
            };
            for (i, v) in values.iter().enumerate() {
                if let Some(slot) = mem.get_mut(usize::from(start) + i) {
                    *slot = *v;
                }
            }
        })
    }

    pub fn bits(&self, unit: u8, area: Area, start: u16, count: u16) -> Vec<bool> {
        self.with_unit(unit, |m| {
            let mem = match area {
                Area::DiscreteInput => &m.discrete,
                _ => &m.coils,
            };
            let s = usize::from(start);
            mem[s..(s + usize::from(count)).min(SPACE)].to_vec()
        })
    }

    /// Requests touching `address` of `area` on `unit` get exception `code`.
    pub fn set_exception(&self, unit: u8, area: Area, address: u16, code: u8) {
        lock(&self.inner.faults)
            .exceptions
            .insert((unit, area, address), code);
    }

    pub fn clear_exception(&self, unit: u8, area: Area, address: u16) {
        lock(&self.inner.faults)
            .exceptions
            .remove(&(unit, area, address));
    }

    /// Every reply is delayed this long (per connection, requests are answered in order).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.inner.faults).delay = delay;
    }

    /// A silent unit never answers (a dead device on a bus).
    pub fn set_silent(&self, unit: u8, silent: bool) {
        let mut f = lock(&self.inner.faults);
        if silent {
            f.silent.insert(unit);
        } else {
            f.silent.remove(&unit);
        }
    }

    /// The next `n` register/bit reads return one item fewer than requested.
    pub fn short_replies(&self, n: u32) {
        lock(&self.inner.faults).short_replies = n;
    }

    /// Corrupts the next reply on the wire (TCP). Queued: call several times for several replies.
    pub fn corrupt_next_reply(&self, c: Corruption) {
        lock(&self.inner.faults).corrupt.push(c);
    }

    /// Closes every open TCP connection now.
    pub fn disconnect_all(&self) {
        let mut g = lock(&self.inner.generation);
        g.cancel();
        *g = CancellationToken::new();
    }

    /// While set, new TCP connections are accepted and closed at once.
    pub fn refuse_connections(&self, refuse: bool) {
        self.inner.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Requests received (all units, all connections).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Serves Modbus TCP on `listener` until `stop` is cancelled.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> io::Result<()> {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let sim = self.clone();
        let on_connected = move |stream: TcpStream, _addr: SocketAddr| {
            let sim = sim.clone();
            async move {
                if sim.inner.refuse.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                sim.inner.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let token = lock(&sim.inner.generation).clone();
                let wrapped = SimStream {
                    inner: stream,
                    closed: Box::pin(token.cancelled_owned()),
                    sim: sim.clone(),
                    pending: Vec::new(),
                };
                Ok(Some((
                    SimService {
                        sim: sim.clone(),
                        tcp: true,
                    },
                    wrapped,
                )))
            }
        };
        let on_error = |e: io::Error| tracing::debug!(error = %e, "simulator connection ended");
        tokio::select! {
            r = server.serve(&on_connected, on_error) => r,
            _ = stop.cancelled() => Ok(()),
        }
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves Modbus TCP in a task.
    pub async fn spawn_tcp(&self, addr: SocketAddr) -> io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let sim = self.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = sim.serve_tcp(listener, s).await {
                tracing::warn!(error = %e, "simulator stopped");
            }
        });
        Ok(SimServer {
            addr: local,
            stop,
            task,
            sim: self.clone(),
        })
    }

    /// Serves Modbus RTU on the serial device `path` in a task (e.g. one end of a pty pair).
    /// Units not added, and silent units, never answer; broadcasts (unit 0) are applied and
    /// not answered.
    pub fn spawn_rtu(&self, path: &str, baud: u32) -> io::Result<SimServer> {
        let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, baud))
            .map_err(io::Error::other)?;
        let server = tokio_modbus::server::rtu::Server::new(port);
        let stop = CancellationToken::new();
        let service = SimService {
            sim: self.clone(),
            tcp: false,
        };
        let s = stop.clone();
        let task = tokio::spawn(async move {
            match server.serve_until(service, s.cancelled_owned()).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "RTU simulator stopped"),
            }
        });
        Ok(SimServer {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stop,
            task,
            sim: self.clone(),
        })
    }

    fn handle(
        &self,
        unit: u8,
        req: Request<'_>,
        tcp: bool,
    ) -> Result<Option<Response>, ExceptionCode> {
        self.inner.requests.fetch_add(1, Ordering::SeqCst);
        let mut faults = lock(&self.inner.faults);
        if faults.silent.contains(&unit) {
            return Ok(None);
        }
        let broadcast = !tcp && unit == 0;
        let known = lock(&self.inner.units).contains_key(&unit);
        if !known && !broadcast {
            // A TCP gateway answers for an absent unit; a serial line stays silent.
            return if tcp {
                Err(ExceptionCode::GatewayTargetDevice)
            } else {
                Ok(None)
            };
        }
        let range = |area: Area, start: u16, count: usize| -> Result<(), ExceptionCode> {
            if count == 0 || usize::from(start) + count > SPACE {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            for a in usize::from(start)..usize::from(start) + count {
                if let Some(code) = faults.exceptions.get(&(unit, area, a as u16)) {
                    return Err(ExceptionCode::new(*code));
                }
            }
            Ok(())
        };
        let short = |faults: &mut Faults| {
            if faults.short_replies > 0 {
                faults.short_replies -= 1;
                1
            } else {
                0
            }
        };
        let targets: Vec<u8> = if broadcast {
            lock(&self.inner.units).keys().copied().collect()
        } else {
            vec![unit]
        };
        let response = match req {
            Request::ReadCoils(a, n) | Request::ReadDiscreteInputs(a, n) => {
                let area = if matches!(req, Request::ReadCoils(..)) {
                    Area::Coil
                } else {
                    Area::DiscreteInput
                };
                if n > 2000 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                range(area, a, usize::from(n))?;
                let cut = short(&mut faults);
                let mut bits = self.bits(unit, area, a, n);
                bits.truncate(bits.len().saturating_sub(cut));
                if area == Area::Coil {
                    Response::ReadCoils(bits)
                } else {
                    Response::ReadDiscreteInputs(bits)
                }
            }
            Request::ReadHoldingRegisters(a, n) | Request::ReadInputRegisters(a, n) => {
                let area = if matches!(req, Request::ReadHoldingRegisters(..)) {
                    Area::HoldingRegister
                } else {
                    Area::InputRegister
                };
                if n > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                range(area, a, usize::from(n))?;
                let cut = short(&mut faults);
                let mut regs = self.registers(unit, area, a, n);
                regs.truncate(regs.len().saturating_sub(cut));
                if area == Area::HoldingRegister {
                    Response::ReadHoldingRegisters(regs)
                } else {
                    Response::ReadInputRegisters(regs)
                }
            }
            Request::WriteSingleCoil(a, v) => {
                range(Area::Coil, a, 1)?;
                for u in &targets {
                    self.set_bits(*u, Area::Coil, a, &[v]);
                }
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteMultipleCoils(a, ref v) => {
                range(Area::Coil, a, v.len())?;
                for u in &targets {
                    self.set_bits(*u, Area::Coil, a, v);
                }
                Response::WriteMultipleCoils(a, v.len() as u16)
            }
            Request::WriteSingleRegister(a, v) => {
                range(Area::HoldingRegister, a, 1)?;
                for u in &targets {
                    self.set_registers(*u, Area::HoldingRegister, a, &[v]);
                }
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleRegisters(a, ref v) => {
                range(Area::HoldingRegister, a, v.len())?;
                for u in &targets {
                    self.set_registers(*u, Area::HoldingRegister, a, v);
                }
                Response::WriteMultipleRegisters(a, v.len() as u16)
            }
            Request::MaskWriteRegister(a, and, or) => {
                range(Area::HoldingRegister, a, 1)?;
                for u in &targets {
                    let cur = self.registers(*u, Area::HoldingRegister, a, 1)[0];
                    let new = (cur & and) | (or & !and);
                    self.set_registers(*u, Area::HoldingRegister, a, &[new]);
                }
                Response::MaskWriteRegister(a, and, or)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if broadcast {
            return Ok(None);
        }
        Ok(Some(response))
    }

    fn take_corruption(&self) -> Option<Corruption> {
        let mut f = lock(&self.inner.faults);
        if f.corrupt.is_empty() {
            None
        } else {
            Some(f.corrupt.remove(0))
        }
    }

    fn delay(&self) -> Duration {
        lock(&self.inner.faults).delay
    }
}

/// A running simulator endpoint.
pub struct SimServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    sim: Simulator,
}

impl SimServer {
    /// The TCP address served (RTU: unspecified).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }
    /// Stops serving: closes the listener (or port) and every connection.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.sim.disconnect_all();
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct SimService {
    sim: Simulator,
    tcp: bool,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = ServiceFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let sim = self.sim.clone();
        let tcp = self.tcp;
        Box::pin(async move {
            let delay = sim.delay();
            if !delay.is_zero() {
                // Simulated device latency.
                tokio::time::sleep(delay).await;
            }
            sim.handle(req.slave, req.request, tcp)
        })
    }
}

/// A TCP stream that can be closed from outside and corrupts replies on request.
struct SimStream {
    inner: TcpStream,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    sim: Simulator,
    pending: Vec<u8>,
}

impl SimStream {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            // End of stream: the server drops the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        // A reply starts with the 7-byte MBAP header.
        if buf.len() >= 8
            && let Some(c) = self.sim.take_corruption()
        {
            let mut frame = buf.to_vec();
            match c {
                Corruption::WrongUnit => frame[6] = frame[6].wrapping_add(1),
                Corruption::Garbage => {
                    // Length 3: unit, function, byte count 200 with no data.
                    frame.truncate(8);
                    frame[4] = 0;
                    frame[5] = 3;
                    frame.push(200);
                }
            }
            self.pending = frame;
            let _ = self.poll_pending(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The built-in demo device for `ironbridge --demo`: a simulated machine on Modbus TCP with a
/// matching device configuration.
pub mod demo {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    use super::{SimServer, Simulator};
    use crate::modbus::codec::{DataType, Value, WordOrder, encode_registers};
    use crate::modbus::config::{Area, DeviceConfig};

    pub const UNIT: u8 = 1;

    /// The demo device's configuration (TOML below `[[modbus.devices]]`), pointing at `address`.
    pub fn device_toml(name: &str, address: &str) -> String {
        format!(
            r#"name = "{name}"
transport = {{ type = "tcp", address = "{address}" }}
unit_id = {UNIT}
poll_interval_ms = 1000
heartbeat_ms = 30000
groups = [{{ name = "fast", interval_ms = 250 }}]

[[tags]]
name = "temperature"
address = "30001"
type = "f32"
unit = "degC"
deadband = 0.05
group = "fast"

[[tags]]
name = "pressure"
address = "30003"
type = "i16"
scale = 0.001
unit = "bar"
deadband = "1%"
group = "fast"

[[tags]]
name = "motor_running"
address = "00001"
type = "bool"
group = "fast"

[[tags]]
name = "parts_count"
address = "40001"
type = "u32"
order = "CDAB"
unit = "parts"

[[tags]]
name = "speed_setpoint"
address = "40011"
type = "f32"
unit = "rpm"
access = "read_write"
verify_write = true

[[tags]]
name = "door_open"
address = "40021"
type = "bit"
bit = 2

[[tags]]
name = "serial_number"
address = "30101"
type = "string"
length = 12
"#
        )
    }

    /// The demo device's configuration as a value.
    pub fn device_config(name: &str, address: &str) -> DeviceConfig {
        // The text above is fixed and tested; a failure here is a bug in this file.
        toml::from_str(&device_toml(name, address)).unwrap_or_else(|e| {
            panic!("demo device configuration does not parse: {e}");
        })
    }

    /// Sets the simulator's memory for time `t` (seconds) and cycle count `n`.
    pub fn update(sim: &Simulator, t: f64, n: u64) {
        let put = |area: Area, addr: u16, dt: DataType, order: WordOrder, v: Value| {
            if let Ok(regs) = encode_registers(dt, order, &v) {
                sim.set_registers(UNIT, area, addr, &regs);
            }
        };
        let temperature = 21.0 + 3.0 * (t / 60.0).sin();
        let pressure_mbar = (2400.0 + 100.0 * (t / 7.0).cos()) as i16;
        let running = (t as u64 / 30) % 4 != 3;
        put(
            Area::InputRegister,
            0,
            DataType::F32,
            WordOrder::ABCD,
            Value::F32(temperature as f32),
        );
        put(
            Area::InputRegister,
            2,
            DataType::I16,
            WordOrder::ABCD,
            Value::I16(pressure_mbar),
        );
        sim.set_bits(UNIT, Area::Coil, 0, &[running]);
        put(
            Area::HoldingRegister,
            0,
            DataType::U32,
            WordOrder::CDAB,
            Value::U32(n as u32),
        );
        let door = (t as u64 / 45).is_multiple_of(3);
        let status = sim.registers(UNIT, Area::HoldingRegister, 20, 1)[0];
        let status = if door {
            status | 0b100
        } else {
            status & !0b100
        };
        sim.set_registers(UNIT, Area::HoldingRegister, 20, &[status]);
    }

    /// A running demo device.
    pub struct Demo {
        pub server: SimServer,
        pub config: DeviceConfig,
        process: JoinHandle<()>,
        stop: CancellationToken,
    }

    impl Demo {
        pub async fn shutdown(self) {
            self.stop.cancel();
            let _ = self.process.await;
            self.server.shutdown().await;
        }
    }

    /// Starts the demo device on `bind` (e.g. `127.0.0.1:15020`, or port 0 for any) and its
    /// changing process (values move every 250 ms; parts are counted while the motor runs).
    pub async fn start(name: &str, bind: SocketAddr) -> std::io::Result<Demo> {
        let sim = Simulator::new();
        sim.add_unit(UNIT);
        let serial = encode_registers(
            DataType::String(12),
            WordOrder::ABCD,
            &Value::String("IB-DEMO-0001".into()),
        )
        .unwrap_or_default();
        sim.set_registers(UNIT, Area::InputRegister, 100, &serial);
        if let Ok(regs) = encode_registers(DataType::F32, WordOrder::ABCD, &Value::F32(1450.0)) {
            sim.set_registers(UNIT, Area::HoldingRegister, 10, &regs);
        }
        update(&sim, now_s(), 0);
        let server = sim.spawn_tcp(bind).await?;
        let config = device_config(name, &server.addr().to_string());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let process = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut count = 0u64;
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t = now_s();
                if (t as u64 / 30) % 4 != 3 {
                    count += 1;
                }
                update(&sim, t, count);
            }
        });
        Ok(Demo {
            server,
            config,
            process,
            stop,
        })
    }

    fn now_s() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    }
}
