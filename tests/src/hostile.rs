//! Tools for the hostile-client tests (`tests/tests/mqtt_hostile.rs`): a raw MQTT 3.1.1 / 5
//! client over a `TcpStream` bound to a chosen loopback source address (so that the daemon sees
//! the attacker on 127.0.0.1 and the legitimate device on 127.0.0.2), packet builders that can
//! also build what no library would send, the daemon's resident memory sampled from
//! `/proc/<pid>/status`, a `/healthz` watcher, a legitimate device that keeps logging in and
//! publishing QoS 1 while an attack runs, and [`Watch`], which ties them together and checks the
//! bounds every attack must respect.
//!
//! Sizes are in MB = 10^6 bytes (VmRSS is reported in KiB and converted).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::gateway::{Gateway, Progress, https_get};

/// Where attackers connect from.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Where the legitimate device connects from (another address unit for the broker's
/// per-address limits and login throttle).
pub const DEVICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// 10^6 bytes.
pub const MB: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// MQTT variable byte integer.
pub fn vbi(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A two-byte length and the bytes (UTF-8 string or binary data; nothing is checked, so that
/// invalid strings can be sent).
pub fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bin(out, s.as_bytes());
}

/// A whole packet: first byte, remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    out.extend_from_slice(&vbi(body.len()));
    out.extend_from_slice(body);
    out
}

/// A property section: length, then the properties as given.
pub fn props(raw: &[u8]) -> Vec<u8> {
    let mut out = vbi(raw.len());
    out.extend_from_slice(raw);
    out
}

/// A will message.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// What a CONNECT carries.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub v5: bool,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub will: Option<Will>,
    /// MQTT 5 session expiry interval (absent: 0).
    pub session_expiry: Option<u32>,
    /// More raw MQTT 5 CONNECT properties.
    pub extra_props: Vec<u8>,
}

impl ConnectSpec {
    pub fn v5(client_id: &str) -> ConnectSpec {
        ConnectSpec {
            v5: true,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 30,
            username: None,
            password: None,
            will: None,
            session_expiry: None,
            extra_props: Vec::new(),
        }
    }

    pub fn v311(client_id: &str) -> ConnectSpec {
        ConnectSpec {
            v5: false,
            ..ConnectSpec::v5(client_id)
        }
    }

    pub fn version(self, v5: bool) -> ConnectSpec {
        ConnectSpec { v5, ..self }
    }

    pub fn login(mut self, user: &str, password: &str) -> ConnectSpec {
        self.username = Some(user.into());
        self.password = Some(password.as_bytes().to_vec());
        self
    }

    pub fn keep_alive(mut self, s: u16) -> ConnectSpec {
        self.keep_alive = s;
        self
    }

    pub fn will(mut self, will: Will) -> ConnectSpec {
        self.will = Some(will);
        self
    }

    pub fn session_expiry(mut self, s: u32) -> ConnectSpec {
        self.session_expiry = Some(s);
        self
    }

    pub fn clean_start(mut self, clean: bool) -> ConnectSpec {
        self.clean_start = clean;
        self
    }

    /// The CONNECT packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, "MQTT");
        b.push(if self.v5 { 5 } else { 4 });
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        b.push(flags);
        b.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.v5 {
            let mut p = Vec::new();
            if let Some(e) = self.session_expiry {
                p.push(0x11);
                p.extend_from_slice(&e.to_be_bytes());
            }
            p.extend_from_slice(&self.extra_props);
            b.extend_from_slice(&props(&p));
        }
        put_str(&mut b, &self.client_id);
        if let Some(w) = &self.will {
            if self.v5 {
                b.push(0); // no will properties
            }
            put_str(&mut b, &w.topic);
            put_bin(&mut b, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut b, u);
        }
        if let Some(pw) = &self.password {
            put_bin(&mut b, pw);
        }
        frame(0x10, &b)
    }
}

/// A PUBLISH. `packet_id` is written for QoS 1 and 2 only; `raw_props` is the MQTT 5 property
/// section's content (ignored for 3.1.1).
pub fn publish(
    v5: bool,
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
    raw_props: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(topic.len() + payload.len() + 16);
    put_bin(&mut b, topic);
    if qos > 0 {
        b.extend_from_slice(&packet_id.to_be_bytes());
    }
    if v5 {
        b.extend_from_slice(&props(raw_props));
    }
    b.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &b)
}

/// A SUBSCRIBE with (filter, options byte) pairs.
pub fn subscribe(v5: bool, packet_id: u16, filters: &[(String, u8)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&packet_id.to_be_bytes());
    if v5 {
        b.push(0);
    }
    for (f, o) in filters {
        put_str(&mut b, f);
        b.push(*o);
    }
    frame(0x82, &b)
}

/// A DISCONNECT (MQTT 5 with `reason`; 3.1.1 has none).
pub fn disconnect(v5: bool, reason: u8) -> Vec<u8> {
    if v5 && reason != 0 {
        frame(0xE0, &[reason, 0])
    } else {
        vec![0xE0, 0]
    }
}

pub const PINGREQ: [u8; 2] = [0xC0, 0];

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// A packet from the server.
#[derive(Debug, Clone)]
pub struct Packet {
    pub first: u8,
    pub body: Vec<u8>,
}

pub const CONNACK: u8 = 2;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// Short description for messages.
    pub fn describe(&self) -> String {
        let name = match self.kind() {
            1 => "CONNECT",
            2 => "CONNACK",
            3 => "PUBLISH",
            4 => "PUBACK",
            5 => "PUBREC",
            6 => "PUBREL",
            7 => "PUBCOMP",
            9 => "SUBACK",
            11 => "UNSUBACK",
            13 => "PINGRESP",
            14 => "DISCONNECT",
            15 => "AUTH",
            _ => "packet",
        };
        let head: Vec<String> = self
            .body
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{name}[{}]", head.join(" "))
    }
}

/// Splits a whole packet off the front of `buf`, if there is one.
fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Packet>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += (b & 0x7F) as usize * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        ensure!(
            i <= 4,
            "server sent a remaining length of more than 4 bytes"
        );
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let body = buf[i..i + len].to_vec();
    buf.drain(..i + len);
    Ok(Some(Packet { first, body }))
}

/// Walks an MQTT 5 property section (`data` starts at its length); calls `f(id, value bytes)`
/// for each property; returns the bytes the section took.
fn walk_props(data: &[u8], mut f: impl FnMut(u8, &[u8])) -> Result<usize> {
    let (len, n) = read_vbi(data).context("property length")?;
    let end = n + len;
    ensure!(data.len() >= end, "property section runs past the packet");
    let mut i = n;
    while i < end {
        let id = data[i];
        i += 1;
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => read_vbi(&data[i..]).context("vbi property")?.1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                ensure!(i + 2 <= end, "property runs past its section");
                2 + u16::from_be_bytes([data[i], data[i + 1]]) as usize
            }
            0x26 => {
                ensure!(i + 2 <= end, "property runs past its section");
                let k = 2 + u16::from_be_bytes([data[i], data[i + 1]]) as usize;
                ensure!(i + k + 2 <= end, "property runs past its section");
                k + 2 + u16::from_be_bytes([data[i + k], data[i + k + 1]]) as usize
            }
            other => bail!("unknown property 0x{other:02x}"),
        };
        ensure!(i + size <= end, "property runs past its section");
        f(id, &data[i..i + size]);
        i += size;
    }
    Ok(end)
}

fn read_vbi(data: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    let mut mult = 1usize;
    for (i, &b) in data.iter().enumerate().take(4) {
        v += (b & 0x7F) as usize * mult;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
        mult *= 128;
    }
    None
}

/// A CONNACK's content.
#[derive(Debug, Clone, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// MQTT 5 reason code, or the 3.1.1 return code as is.
    pub code: u8,
    pub server_keep_alive: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub receive_maximum: Option<u16>,
}

pub fn parse_connack(v5: bool, p: &Packet) -> Result<ConnAck> {
    ensure!(
        p.kind() == CONNACK,
        "expected CONNACK, got {}",
        p.describe()
    );
    ensure!(p.body.len() >= 2, "short CONNACK {:?}", p.body);
    let mut c = ConnAck {
        session_present: p.body[0] & 1 == 1,
        code: p.body[1],
        ..ConnAck::default()
    };
    if v5 && p.body.len() > 2 {
        walk_props(&p.body[2..], |id, v| match id {
            0x13 => c.server_keep_alive = Some(u16::from_be_bytes([v[0], v[1]])),
            0x22 => c.topic_alias_maximum = Some(u16::from_be_bytes([v[0], v[1]])),
            0x21 => c.receive_maximum = Some(u16::from_be_bytes([v[0], v[1]])),
            _ => {}
        })?;
    }
    Ok(c)
}

/// PUBACK / PUBREC: packet id and reason code (0 when absent).
pub fn parse_ack(p: &Packet) -> Result<(u16, u8)> {
    ensure!(p.body.len() >= 2, "short {}", p.describe());
    let id = u16::from_be_bytes([p.body[0], p.body[1]]);
    Ok((id, p.body.get(2).copied().unwrap_or(0)))
}

/// SUBACK: packet id and one reason code per filter.
pub fn parse_suback(v5: bool, p: &Packet) -> Result<(u16, Vec<u8>)> {
    ensure!(p.kind() == SUBACK, "expected SUBACK, got {}", p.describe());
    ensure!(p.body.len() >= 3, "short SUBACK");
    let id = u16::from_be_bytes([p.body[0], p.body[1]]);
    let mut at = 2;
    if v5 {
        at += walk_props(&p.body[2..], |_, _| {})?;
    }
    Ok((id, p.body[at..].to_vec()))
}

/// A DISCONNECT's reason code (0 when absent).
pub fn disconnect_reason(p: &Packet) -> u8 {
    p.body.first().copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// A TCP connection to `to` from `from` (any port).
pub async fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((from, 0)))
        .with_context(|| format!("bind {from}:0"))?;
    let s = timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .with_context(|| format!("connect {from} -> {to}: timed out"))?
        .with_context(|| format!("connect {from} -> {to}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// What [`Mqtt::recv`] saw.
#[derive(Debug)]
pub enum Recv {
    Packet(Packet),
    /// The server closed the connection (FIN or reset).
    Closed,
    Timeout,
}

/// A raw MQTT client connection.
pub struct Mqtt {
    pub stream: TcpStream,
    pub v5: bool,
    buf: Vec<u8>,
    next_id: u16,
}

impl Mqtt {
    /// An open TCP connection, nothing sent yet.
    pub async fn open(from: Ipv4Addr, to: SocketAddr, v5: bool) -> Result<Mqtt> {
        Ok(Mqtt {
            stream: tcp_from(from, to).await?,
            v5,
            buf: Vec::new(),
            next_id: 0,
        })
    }

    /// Opens a connection and sends `spec`; returns the connection and the CONNACK (whatever
    /// its code), or an error if the server closed or stayed silent for `limit`.
    pub async fn connect(
        from: Ipv4Addr,
        to: SocketAddr,
        spec: &ConnectSpec,
        limit: Duration,
    ) -> Result<(Mqtt, ConnAck)> {
        let mut m = Mqtt::open(from, to, spec.v5).await?;
        m.send(&spec.encode()).await?;
        match m.recv(limit).await? {
            Recv::Packet(p) => {
                let ack = parse_connack(spec.v5, &p)?;
                Ok((m, ack))
            }
            Recv::Closed => bail!("closed before CONNACK"),
            Recv::Timeout => bail!("no CONNACK within {limit:?}"),
        }
    }

    /// Like [`Mqtt::connect`], but a refusal is an error.
    pub async fn connect_ok(
        from: Ipv4Addr,
        to: SocketAddr,
        spec: &ConnectSpec,
        limit: Duration,
    ) -> Result<(Mqtt, ConnAck)> {
        let (m, ack) = Mqtt::connect(from, to, spec, limit).await?;
        ensure!(
            ack.code == 0,
            "CONNACK {:#04x} for {:?}",
            ack.code,
            spec.client_id
        );
        Ok((m, ack))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.context("write")?;
        Ok(())
    }

    /// The next packet, or how the wait ended.
    pub async fn recv(&mut self, limit: Duration) -> Result<Recv> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = take_frame(&mut self.buf)? {
                return Ok(Recv::Packet(p));
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(Recv::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(Recv::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server closes the connection (or `limit`): the packets it sent before,
    /// and whether and when it closed.
    pub async fn until_closed(&mut self, limit: Duration) -> Result<(Vec<Packet>, bool)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Recv::Packet(p) => got.push(p),
                Recv::Closed => return Ok((got, true)),
                Recv::Timeout => return Ok((got, false)),
            }
        }
    }

    pub fn next_packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    /// Publishes QoS 1 and waits for its PUBACK (other packets are skipped): the reason code.
    pub async fn publish_qos1(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        limit: Duration,
    ) -> Result<u8> {
        let id = self.next_packet_id();
        let p = publish(self.v5, topic.as_bytes(), payload, 1, retain, id, &[]);
        self.send(&p).await?;
        self.wait_ack(id, PUBACK, limit).await
    }

    /// Waits for the PUBACK (or PUBREC) of `id`: its reason code.
    pub async fn wait_ack(&mut self, id: u16, kind: u8, limit: Duration) -> Result<u8> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Recv::Packet(p) if p.kind() == kind => {
                    let (got, code) = parse_ack(&p)?;
                    if got == id {
                        return Ok(code);
                    }
                }
                Recv::Packet(p) if p.kind() == DISCONNECT => {
                    bail!(
                        "DISCONNECT {:#04x} instead of an ack",
                        disconnect_reason(&p)
                    )
                }
                Recv::Packet(_) => {}
                Recv::Closed => bail!("connection closed before the ack of {id}"),
                Recv::Timeout => bail!("no ack of {id} within {limit:?}"),
            }
        }
    }

    /// Subscribes and waits for the SUBACK: one reason code per filter.
    pub async fn subscribe(
        &mut self,
        filters: &[(String, u8)],
        limit: Duration,
    ) -> Result<Vec<u8>> {
        let id = self.next_packet_id();
        let p = subscribe(self.v5, id, filters);
        self.send(&p).await?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Recv::Packet(p) if p.kind() == SUBACK => {
                    let (got, codes) = parse_suback(self.v5, &p)?;
                    if got == id {
                        return Ok(codes);
                    }
                }
                Recv::Packet(_) => {}
                Recv::Closed => bail!("connection closed before the SUBACK"),
                Recv::Timeout => bail!("no SUBACK within {limit:?}"),
            }
        }
    }

    /// Round trip: PINGREQ, then waits for PINGRESP (everything sent before was handled).
    pub async fn ping(&mut self, limit: Duration) -> Result<()> {
        self.send(&PINGREQ).await?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Recv::Packet(p) if p.kind() == PINGRESP => return Ok(()),
                Recv::Packet(p) if p.kind() == DISCONNECT => {
                    bail!(
                        "DISCONNECT {:#04x} instead of PINGRESP",
                        disconnect_reason(&p)
                    )
                }
                Recv::Packet(_) => {}
                Recv::Closed => bail!("connection closed before PINGRESP"),
                Recv::Timeout => bail!("no PINGRESP within {limit:?}"),
            }
        }
    }

    /// Sends DISCONNECT (normal) and closes.
    pub async fn close(mut self) {
        let d = disconnect(self.v5, 0);
        let _ = self.stream.write_all(&d).await;
        let _ = self.stream.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Resident memory
// ---------------------------------------------------------------------------------------------

/// VmRSS of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()
        .context("VmRSS number")?;
    Ok(kb * 1024)
}

/// Samples a process's VmRSS periodically.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                match rss_bytes(pid) {
                    Ok(b) => lock(&s).push((Instant::now(), b)),
                    Err(_) => return,
                }
            }
        });
        RssSampler { samples, task }
    }

    fn between(&self, from: Instant, to: Instant) -> Vec<u64> {
        lock(&self.samples)
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, b)| *b)
            .collect()
    }

    pub fn peak_between(&self, from: Instant, to: Instant) -> Option<u64> {
        self.between(from, to).into_iter().max()
    }

    pub fn median_between(&self, from: Instant, to: Instant) -> Option<u64> {
        let mut v = self.between(from, to);
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// The latest sample taken at or after `after`.
    pub fn latest_after(&self, after: Instant) -> Option<(Instant, u64)> {
        lock(&self.samples)
            .last()
            .copied()
            .filter(|(t, _)| *t >= after)
    }

    pub fn count(&self) -> usize {
        lock(&self.samples).len()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// /healthz
// ---------------------------------------------------------------------------------------------

/// Polls `/healthz` periodically; every answer that is not 200 (or no answer) is kept.
pub struct HealthWatch {
    checks: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    slowest: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl HealthWatch {
    pub fn start(gw: &Gateway, every: Duration) -> Result<HealthWatch> {
        let client = gw.client()?;
        let url = gw.url("/healthz");
        let checks = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let slowest = Arc::new(AtomicU64::new(0));
        let (c, b, s) = (checks.clone(), bad.clone(), slowest.clone());
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = Instant::now();
                let r = https_get(&client, &url).await;
                s.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                c.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok((200, _)) => {}
                    Ok((code, body)) => lock(&b).push(format!(
                        "+{:.1}s: /healthz {code}: {body}",
                        started.elapsed().as_secs_f64()
                    )),
                    Err(e) => lock(&b).push(format!(
                        "+{:.1}s: /healthz: {e:#}",
                        started.elapsed().as_secs_f64()
                    )),
                }
            }
        });
        Ok(HealthWatch {
            checks,
            bad,
            slowest,
            task,
        })
    }

    /// Stops polling: (checks made, failures, slowest answer in ms).
    pub fn stop(self) -> (u64, Vec<String>, u64) {
        self.task.abort();
        (
            self.checks.load(Ordering::Relaxed),
            lock(&self.bad).clone(),
            self.slowest.load(Ordering::Relaxed),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The legitimate device
// ---------------------------------------------------------------------------------------------

/// How the legitimate device behaves.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub broker: SocketAddr,
    pub from: Ipv4Addr,
    pub connect: ConnectSpec,
    pub topic: String,
    /// One QoS 1 publish per period.
    pub every: Duration,
    /// Disconnect and log in again after this many publishes (`None`: one long connection,
    /// reconnecting only when it breaks).
    pub reconnect_every: Option<u32>,
    /// How long to wait for a CONNACK or PUBACK before calling it lost (the bounds the test
    /// asserts are tighter; this only keeps the device going).
    pub wait: Duration,
}

impl DeviceSpec {
    /// MQTT 5, anonymous, from [`DEVICE`], QoS 1 every 200 ms, a new login every 5 publishes.
    pub fn new(broker: SocketAddr) -> DeviceSpec {
        DeviceSpec {
            broker,
            from: DEVICE,
            connect: ConnectSpec::v5("legit-device"),
            topic: "plant/line1/legit".into(),
            every: Duration::from_millis(200),
            reconnect_every: Some(5),
            wait: Duration::from_secs(5),
        }
    }

    pub fn login(mut self, user: &str, password: &str) -> DeviceSpec {
        self.connect = self.connect.login(user, password);
        self
    }

    /// A new login after every `n` publishes.
    pub fn reconnect_every(mut self, n: u32) -> DeviceSpec {
        self.reconnect_every = Some(n);
        self
    }

    pub fn long_lived(mut self) -> DeviceSpec {
        self.reconnect_every = None;
        self
    }
}

/// What the legitimate device experienced.
#[derive(Debug, Clone, Default)]
pub struct DeviceReport {
    /// Successful logins and the slowest CONNACK.
    pub connects: u64,
    pub connect_max: Duration,
    /// Refused or failed logins.
    pub refusals: Vec<String>,
    pub published: u64,
    pub acked: u64,
    pub ack_max: Duration,
    /// Publishes not acknowledged with 0, or connections lost.
    pub failures: Vec<String>,
}

/// A running legitimate device.
pub struct LegitDevice {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: JoinHandle<DeviceReport>,
}

impl LegitDevice {
    pub fn spawn(spec: DeviceSpec) -> LegitDevice {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_device(spec, stop.clone(), acked.clone()));
        LegitDevice { stop, acked, task }
    }

    /// Publishes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` publishes were acknowledged.
    pub async fn wait_acked(&self, n: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.acked() < n {
            ensure!(
                !self.task.is_finished(),
                "the legitimate device stopped after {} acks",
                self.acked()
            );
            ensure!(
                Instant::now() < deadline,
                "the legitimate device got only {} of {n} acks within {limit:?}",
                self.acked()
            );
            sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops after the publish under way (its ack awaited) and returns the report.
    pub async fn stop(self) -> Result<DeviceReport> {
        self.stop.store(true, Ordering::Relaxed);
        timeout(Duration::from_secs(15), self.task)
            .await
            .context("the legitimate device did not stop")?
            .context("the legitimate device panicked")
    }
}

async fn run_device(
    spec: DeviceSpec,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> DeviceReport {
    let mut r = DeviceReport::default();
    let mut conn: Option<Mqtt> = None;
    let mut since_login = 0u32;
    let mut seq = 0u64;
    let started = Instant::now();
    let mut next = Instant::now();
    let at = |started: Instant| format!("+{:.1}s", started.elapsed().as_secs_f64());
    while !stop.load(Ordering::Relaxed) {
        sleep_until(next).await;
        next += spec.every;
        if Instant::now() > next {
            // Fell behind (a slow ack): keep the period from now on.
            next = Instant::now() + spec.every;
        }
        if conn.is_none() {
            let t = Instant::now();
            match Mqtt::connect(spec.from, spec.broker, &spec.connect, spec.wait).await {
                Ok((c, ack)) if ack.code == 0 => {
                    r.connects += 1;
                    r.connect_max = r.connect_max.max(t.elapsed());
                    conn = Some(c);
                    since_login = 0;
                }
                Ok((_, ack)) => {
                    r.refusals.push(format!(
                        "{}: CONNACK {:#04x} after {} ms",
                        at(started),
                        ack.code,
                        t.elapsed().as_millis()
                    ));
                    continue;
                }
                Err(e) => {
                    r.refusals.push(format!(
                        "{}: login failed after {} ms: {e:#}",
                        at(started),
                        t.elapsed().as_millis()
                    ));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        seq += 1;
        let payload = format!("legit#{seq}");
        let t = Instant::now();
        r.published += 1;
        match c
            .publish_qos1(&spec.topic, payload.as_bytes(), false, spec.wait)
            .await
        {
            Ok(0) => {
                r.acked += 1;
                acked.fetch_add(1, Ordering::Relaxed);
                r.ack_max = r.ack_max.max(t.elapsed());
            }
            Ok(code) => r
                .failures
                .push(format!("{}: PUBACK {code:#04x} for #{seq}", at(started))),
            Err(e) => {
                r.failures
                    .push(format!("{}: publish #{seq}: {e:#}", at(started)));
                conn = None;
                continue;
            }
        }
        since_login += 1;
        if spec.reconnect_every.is_some_and(|n| since_login >= n)
            && let Some(c) = conn.take()
        {
            c.close().await;
        }
    }
    if let Some(c) = conn.take() {
        c.close().await;
    }
    r
}

// ---------------------------------------------------------------------------------------------
// One attack's observation
// ---------------------------------------------------------------------------------------------

/// The bounds every attack is held to.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Peak VmRSS during the attack and until it recovered.
    pub peak_max: u64,
    /// After the attack VmRSS must come back to within this of the pre-attack level ...
    pub recover_margin: u64,
    /// ... within this long (the daemon trims malloc once a minute).
    pub recover_within: Duration,
    /// Each PUBACK of the legitimate device.
    pub ack_max: Duration,
    /// Each CONNACK of the legitimate device (`None`: not checked).
    pub connect_max: Option<Duration>,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            peak_max: 64 * MB,
            recover_margin: 8 * MB,
            recover_within: Duration::from_secs(70),
            ack_max: Duration::from_secs(1),
            connect_max: Some(Duration::from_secs(1)),
        }
    }
}

/// Watches the daemon through one attack: start it with [`Watch::begin`] before the attack,
/// end it with [`Watch::finish`] after.
pub struct Watch {
    pid: u32,
    rss: RssSampler,
    health: HealthWatch,
    device: LegitDevice,
    pub pre_rss: u64,
    pub attack_start: Instant,
    /// `/api/status` just before the attack.
    pub status_before: Value,
    /// `/metrics` just before the attack.
    pub metrics_before: String,
    bounds: Bounds,
}

/// What one attack did to the daemon.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pre_rss: u64,
    pub peak_rss: u64,
    /// The first sample back within the margin (or the last one, if it never came back).
    pub after_rss: u64,
    pub recovered: bool,
    /// From the end of the attack until VmRSS was back.
    pub recovery: Duration,
    pub attack: Duration,
    pub device: DeviceReport,
    pub health_checks: u64,
    pub health_failures: Vec<String>,
    pub health_slowest_ms: u64,
    pub rss_samples: usize,
    pub panics: Vec<String>,
    bounds: Bounds,
}

impl Watch {
    /// Starts sampling VmRSS (100 ms) and `/healthz` (500 ms), starts the legitimate device,
    /// waits until it got 3 PUBACKs, lets the daemon settle for a second and takes the
    /// pre-attack level (median of that second's samples), `/api/status` and `/metrics`.
    pub async fn begin(gw: &Gateway, device: DeviceSpec, bounds: Bounds) -> Result<Watch> {
        let pid = gw.pid().context("the daemon is not running")?;
        let rss = RssSampler::start(pid, Duration::from_millis(100));
        let health = HealthWatch::start(gw, Duration::from_millis(500))?;
        let device = LegitDevice::spawn(device);
        device.wait_acked(3, Duration::from_secs(20)).await?;
        let settle = Instant::now();
        sleep(Duration::from_millis(1200)).await;
        let pre_rss = rss
            .median_between(settle, Instant::now())
            .context("no RSS sample before the attack")?;
        let status_before = gw.status().await?;
        let metrics_before = gw.metrics().await?;
        Ok(Watch {
            pid,
            rss,
            health,
            device,
            pre_rss,
            attack_start: Instant::now(),
            status_before,
            metrics_before,
            bounds,
        })
    }

    /// The current VmRSS.
    pub fn rss_now(&self) -> Result<u64> {
        rss_bytes(self.pid)
    }

    /// Publishes the legitimate device got acknowledged so far.
    pub fn device_acked(&self) -> u64 {
        self.device.acked()
    }

    /// Stops the legitimate device now (its report is kept for [`Watch::finish`]); for attacks
    /// that count exactly what reached the buffer.
    pub async fn stop_device(&mut self) -> Result<DeviceReport> {
        let d = std::mem::replace(
            &mut self.device,
            LegitDevice {
                stop: Arc::new(AtomicBool::new(true)),
                acked: Arc::new(AtomicU64::new(0)),
                task: tokio::spawn(async { DeviceReport::default() }),
            },
        );
        d.stop().await
    }

    /// The attack is over: waits until VmRSS is back within the margin (or the time is up),
    /// stops the device and the watchers and collects everything.
    pub async fn finish(self, gw: &Gateway, p: &Progress) -> Result<Outcome> {
        self.finish_with(gw, p, None).await
    }

    /// [`Watch::finish`] with the device's report taken earlier by [`Watch::stop_device`].
    pub async fn finish_with(
        self,
        gw: &Gateway,
        p: &Progress,
        device: Option<DeviceReport>,
    ) -> Result<Outcome> {
        let ended = Instant::now();
        let limit = self.pre_rss + self.bounds.recover_margin;
        let deadline = ended + self.bounds.recover_within;
        let mut after = self.rss_now().unwrap_or(u64::MAX);
        let mut recovered = false;
        let mut noted = false;
        loop {
            if let Some((_, b)) = self.rss.latest_after(ended) {
                after = b;
                if b <= limit {
                    recovered = true;
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            if !noted && ended.elapsed() > Duration::from_secs(5) {
                noted = true;
                p.note(format!(
                    "RSS {:.1} MB, waiting for <= {:.1} MB (malloc trim runs once a minute)",
                    after as f64 / MB as f64,
                    limit as f64 / MB as f64
                ));
            }
            sleep(Duration::from_millis(100)).await;
        }
        let recovery = ended.elapsed();
        let peak = self
            .rss
            .peak_between(self.attack_start, Instant::now())
            .unwrap_or(after)
            .max(after);
        let attack = ended - self.attack_start;
        let report = match device {
            Some(d) => {
                let _ = self.device.stop().await;
                d
            }
            None => self.device.stop().await?,
        };
        let rss_samples = self.rss.count();
        let (health_checks, health_failures, health_slowest_ms) = self.health.stop();
        let panics = gw
            .log()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_string)
            .collect();
        Ok(Outcome {
            pre_rss: self.pre_rss,
            peak_rss: peak,
            after_rss: after,
            recovered,
            recovery,
            attack,
            device: report,
            health_checks,
            health_failures,
            health_slowest_ms,
            rss_samples,
            panics,
            bounds: self.bounds,
        })
    }
}

impl Outcome {
    /// Prints the table line `ATTACK | peak MB | after MB | legit max ack ms | refused` (and a
    /// detail line), then checks every bound.
    pub fn report_and_check(&self, attack: &str, refused: &str) -> Result<()> {
        let mb = |b: u64| b as f64 / MB as f64;
        println!(
            "HOSTILE-TABLE | {attack} | {:.1} | {:.1} | {} | {refused}",
            mb(self.peak_rss),
            mb(self.after_rss),
            self.device.ack_max.as_millis()
        );
        println!(
            "HOSTILE-DETAIL | {attack} | pre {:.1} MB, attack {:.1}s, back after {:.1}s ({}), \
             legit: {} logins (max CONNACK {} ms), {}/{} acked, {} refusals, {} failures; \
             /healthz {} checks (slowest {} ms), {} bad; {} RSS samples",
            mb(self.pre_rss),
            self.attack.as_secs_f64(),
            self.recovery.as_secs_f64(),
            if self.recovered {
                "recovered"
            } else {
                "NOT recovered"
            },
            self.device.connects,
            self.device.connect_max.as_millis(),
            self.device.acked,
            self.device.published,
            self.device.refusals.len(),
            self.device.failures.len(),
            self.health_checks,
            self.health_slowest_ms,
            self.health_failures.len(),
            self.rss_samples
        );
        self.check()
    }

    /// Every bound of [`Bounds`], the device and `/healthz`.
    pub fn check(&self) -> Result<()> {
        let b = &self.bounds;
        let mb = |v: u64| v as f64 / MB as f64;
        let mut problems = Vec::new();
        if !self.panics.is_empty() {
            problems.push(format!("the daemon panicked: {:?}", self.panics));
        }
        if self.peak_rss >= b.peak_max {
            problems.push(format!(
                "peak VmRSS {:.1} MB >= {:.1} MB (pre-attack {:.1} MB)",
                mb(self.peak_rss),
                mb(b.peak_max),
                mb(self.pre_rss)
            ));
        }
        if !self.recovered {
            problems.push(format!(
                "VmRSS {:.1} MB not back within {:.1} MB of the pre-attack {:.1} MB after {:?}",
                mb(self.after_rss),
                mb(b.recover_margin),
                mb(self.pre_rss),
                b.recover_within
            ));
        }
        let d = &self.device;
        if !d.failures.is_empty() {
            problems.push(format!("legitimate device failures: {:?}", d.failures));
        }
        if !d.refusals.is_empty() {
            problems.push(format!(
                "legitimate device logins refused: {:?}",
                d.refusals
            ));
        }
        if d.ack_max >= b.ack_max {
            problems.push(format!(
                "legitimate device: a PUBACK took {} ms (bound {} ms)",
                d.ack_max.as_millis(),
                b.ack_max.as_millis()
            ));
        }
        if let Some(c) = b.connect_max
            && d.connect_max >= c
        {
            problems.push(format!(
                "legitimate device: a CONNACK took {} ms (bound {} ms)",
                d.connect_max.as_millis(),
                c.as_millis()
            ));
        }
        if d.acked < 5 {
            problems.push(format!(
                "legitimate device: only {} publishes acknowledged",
                d.acked
            ));
        }
        if !self.health_failures.is_empty() {
            problems.push(format!("/healthz not 200: {:?}", self.health_failures));
        }
        if self.health_checks < 2 {
            problems.push(format!("/healthz polled only {} times", self.health_checks));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(problems.join("\n")))
        }
    }
}

/// `after - before` of a counter in two `/api/status` documents (JSON pointer).
pub fn delta(before: &Value, after: &Value, pointer: &str) -> Result<i64> {
    let get = |v: &Value| {
        v.pointer(pointer)
            .and_then(Value::as_u64)
            .with_context(|| format!("{pointer} missing from /api/status"))
    };
    Ok(get(after)? as i64 - get(before)? as i64)
}

/// `after - before` of a sample in two `/metrics` texts.
pub fn metric_delta(before: &str, after: &str, sample: &str) -> Result<f64> {
    let get = |m: &str| {
        crate::gateway::metric(m, sample).with_context(|| format!("{sample} missing from /metrics"))
    };
    Ok(get(after)? - get(before)?)
}
