//! The MQTT load generator: N connections of MQTT 3.1.1 QoS 1 publishers, each with a bounded
//! window of unacknowledged PUBLISHes, counting PUBACKs. The same generator drives every broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

/// What each PUBLISH carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload {
    /// A global message index as 10 decimal digits, then `x` up to `size` bytes (the same values
    /// `kafka_tool.py produce` writes).
    Indexed { size: usize },
    /// Microseconds since the epoch at send time (u64 big-endian), a sequence number (u64
    /// big-endian), then `x` up to `size` bytes.
    Timestamped { size: usize },
    /// Pseudo-random bytes (incompressible).
    Random { size: usize },
}

impl Payload {
    fn size(self) -> usize {
        match self {
            Payload::Indexed { size }
            | Payload::Timestamped { size }
            | Payload::Random { size } => size,
        }
    }
}

/// When the publishers stop.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// This many messages in total (split over the connections), all acknowledged.
    Count(u64),
    /// Until [`Load::stop`].
    Open,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub conns: usize,
    /// Unacknowledged PUBLISHes per connection.
    pub window: usize,
    /// `{conn}` is replaced by the connection index.
    pub topic: String,
    pub client_prefix: String,
    pub payload: Payload,
    /// Messages per second over all connections; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    pub limit: Limit,
}

/// Counters shared by all connections.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    next_index: AtomicU64,
    /// Publish → PUBACK in microseconds, per acknowledged message sent after `ack_from`
    /// (PUBACKs come in order on a connection, so send times queue up per connection).
    ack_micros: std::sync::Mutex<Vec<u32>>,
    ack_from: std::sync::Mutex<Option<Instant>>,
}

/// A running load.
pub struct Load {
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Result<()>>,
}

impl Load {
    /// Connects every publisher (CONNECT/CONNACK) and starts publishing.
    pub async fn start(spec: LoadSpec) -> Result<Load> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut conns = Vec::with_capacity(spec.conns);
        for i in 0..spec.conns {
            let client_id = format!("{}-{i}", spec.client_prefix);
            let s = timeout(Duration::from_secs(10), connect(spec.addr, &client_id))
                .await
                .with_context(|| format!("MQTT connect to {} timed out", spec.addr))??;
            conns.push(s);
        }
        let mut tasks = JoinSet::new();
        let n = spec.conns as u64;
        for (i, s) in conns.into_iter().enumerate() {
            let quota = match spec.limit {
                Limit::Count(total) => Some(total / n + u64::from((i as u64) < total % n)),
                Limit::Open => None,
            };
            let conn = Conn {
                topic: spec.topic.replace("{conn}", &i.to_string()),
                payload: spec.payload,
                window: spec.window,
                rate: spec.rate.map(|r| r / n as f64),
                quota,
                seed: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            };
            tasks.spawn(conn.run(s, counters.clone(), stop.clone()));
        }
        Ok(Load {
            counters,
            stop,
            tasks,
        })
    }

    /// Record publish → PUBACK times of messages sent from now on.
    pub fn time_acks_from_now(&self) {
        *lock(&self.counters.ack_from) = Some(Instant::now());
    }

    /// Publish → PUBACK times recorded so far (µs), sorted.
    pub fn ack_latencies(&self) -> Vec<u32> {
        let mut v = lock(&self.counters.ack_micros).clone();
        v.sort_unstable();
        v
    }

    pub fn acked(&self) -> u64 {
        self.counters.acked.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Tells the publishers to stop sending; they wait (up to `drain`) for outstanding acks.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for every connection to finish (after [`Load::signal_stop`], or its count), up to
    /// `limit`.
    pub async fn finish(mut self, limit: Duration) -> Result<()> {
        let r = timeout(limit, async {
            while let Some(r) = self.tasks.join_next().await {
                r.context("publisher task")??;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match r {
            Ok(r) => r,
            Err(_) => {
                self.tasks.abort_all();
                bail!(
                    "publishers did not finish within {limit:?} ({} sent, {} acked)",
                    self.sent(),
                    self.acked()
                )
            }
        }
    }

    /// Stops and waits.
    pub async fn stop(self, limit: Duration) -> Result<()> {
        self.signal_stop();
        self.finish(limit).await
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

async fn connect(addr: SocketAddr, client_id: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut pkt = vec![0x10];
    remaining_length(body.len(), &mut pkt);
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)
        .await
        .context("reading CONNACK")?;
    if connack[0] != 0x20 || connack[1] != 2 || connack[3] != 0 {
        bail!("CONNACK refused: {connack:02x?}");
    }
    Ok(s)
}

struct Conn {
    topic: String,
    payload: Payload,
    window: usize,
    rate: Option<f64>,
    quota: Option<u64>,
    seed: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the writer and the ack reader of one connection share.
struct ConnShared {
    window: Semaphore,
    /// Publishes written so far.
    sent: AtomicU64,
    writer_done: AtomicBool,
    /// Send times of unacknowledged publishes, in order (`None`: not timed).
    times: std::sync::Mutex<std::collections::VecDeque<Option<Instant>>>,
}

impl Conn {
    async fn run(self, s: TcpStream, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Result<()> {
        let (r, w) = s.into_split();
        let shared = Arc::new(ConnShared {
            window: Semaphore::new(self.window),
            sent: AtomicU64::new(0),
            writer_done: AtomicBool::new(false),
            times: std::sync::Mutex::new(std::collections::VecDeque::new()),
        });
        let reader = tokio::spawn(read_acks(r, shared.clone(), counters.clone()));
        let w = self.write(w, &shared, &counters, &stop).await;
        // The reader ends once every sent message is acknowledged (or the broker goes away).
        let acked = reader.await.context("ack reader task")?;
        let (mut w, sent) = w?;
        let acked = acked?;
        if acked < sent {
            bail!("{} of {sent} publishes unacknowledged", sent - acked);
        }
        let _ = w.write_all(&[0xe0, 0]).await; // DISCONNECT
        let _ = w.shutdown().await;
        Ok(())
    }

    async fn write(
        &self,
        mut w: OwnedWriteHalf,
        shared: &ConnShared,
        counters: &Counters,
        stop: &AtomicBool,
    ) -> Result<(OwnedWriteHalf, u64)> {
        let window = &shared.window;
        let size = self.payload.size();
        let mut rng = self.seed;
        let mut buf = Vec::with_capacity(64 * (size + self.topic.len() + 8));
        let mut packet_id: u16 = 0;
        let mut sent: u64 = 0;
        let started = Instant::now();
        let result = async {
            loop {
                if stop.load(Ordering::Relaxed) || self.quota.is_some_and(|q| sent >= q) {
                    return Ok::<_, anyhow::Error>(());
                }
                // How many may go now: the window, the quota, and the rate.
                let mut n = self.quota.map_or(256, |q| (q - sent).min(256)) as usize;
                if let Some(rate) = self.rate {
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    if due <= sent {
                        let at = started + Duration::from_secs_f64((sent + 1) as f64 / rate);
                        sleep_until(at).await;
                        continue;
                    }
                    n = n.min((due - sent) as usize);
                }
                // At least one slot (waiting for it), then whatever else is free.
                match tokio::time::timeout(Duration::from_millis(100), window.acquire()).await {
                    Ok(p) => p.context("window closed")?.forget(),
                    Err(_) => continue, // re-check stop
                }
                let mut take = 1;
                while take < n {
                    match window.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            take += 1;
                        }
                        Err(_) => break,
                    }
                }
                buf.clear();
                let first = counters
                    .next_index
                    .fetch_add(take as u64, Ordering::Relaxed);
                for index in first..first + take as u64 {
                    packet_id = packet_id.wrapping_add(1).max(1);
                    buf.push(0x32); // PUBLISH, QoS 1
                    remaining_length(2 + self.topic.len() + 2 + size, &mut buf);
                    buf.extend_from_slice(&(self.topic.len() as u16).to_be_bytes());
                    buf.extend_from_slice(self.topic.as_bytes());
                    buf.extend_from_slice(&packet_id.to_be_bytes());
                    let start = buf.len();
                    match self.payload {
                        Payload::Indexed { .. } => {
                            let mut digits = [b'0'; 10];
                            let mut v = index;
                            for d in digits.iter_mut().rev() {
                                *d = b'0' + (v % 10) as u8;
                                v /= 10;
                            }
                            buf.extend_from_slice(&digits[..10.min(size)]);
                        }
                        Payload::Timestamped { .. } => {
                            let mut head = [0u8; 16];
                            head[..8].copy_from_slice(&now_micros().to_be_bytes());
                            head[8..].copy_from_slice(&index.to_be_bytes());
                            buf.extend_from_slice(&head[..16.min(size)]);
                        }
                        Payload::Random { .. } => {
                            while buf.len() - start + 8 <= size {
                                rng ^= rng << 13;
                                rng ^= rng >> 7;
                                rng ^= rng << 17;
                                buf.extend_from_slice(&rng.to_le_bytes());
                            }
                        }
                    }
                    let filled = buf.len() - start;
                    buf.resize(start + size.max(filled), b'x');
                }
                let timed = lock(&counters.ack_from).is_some_and(|from| from <= Instant::now());
                {
                    let now = timed.then(Instant::now);
                    let mut q = lock(&shared.times);
                    q.extend(std::iter::repeat_n(now, take));
                }
                sent += take as u64;
                shared.sent.store(sent, Ordering::Release);
                counters.sent.fetch_add(take as u64, Ordering::Relaxed);
                w.write_all(&buf).await.context("writing PUBLISH")?;
            }
        }
        .await;
        shared.writer_done.store(true, Ordering::Release);
        result.map(|()| (w, sent))
    }
}

/// Counts PUBACKs, returning window slots; ends when the writer is done and everything it sent
/// is acknowledged, or at EOF.
async fn read_acks(
    mut r: OwnedReadHalf,
    shared: Arc<ConnShared>,
    counters: Arc<Counters>,
) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut acked = 0u64;
    loop {
        if shared.writer_done.load(Ordering::Acquire)
            && acked >= shared.sent.load(Ordering::Acquire)
        {
            return Ok(acked);
        }
        let n = match timeout(Duration::from_millis(100), r.read(&mut buf[have..])).await {
            Ok(r) => r.context("reading PUBACKs")?,
            Err(_) => continue,
        };
        if n == 0 {
            return Ok(acked);
        }
        have += n;
        let mut at = 0;
        let mut got = 0u64;
        while have - at >= 2 {
            // Fixed header, remaining length (varint).
            let mut len = 0usize;
            let mut mult = 1usize;
            let mut i = at + 1;
            let mut complete = false;
            while i < have {
                let b = buf[i];
                len += (b & 0x7f) as usize * mult;
                mult *= 128;
                i += 1;
                if b & 0x80 == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete || have - i < len {
                break;
            }
            if buf[at] >> 4 == 4 {
                got += 1;
            }
            at = i + len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if have == buf.len() {
            bail!(
                "MQTT packet from the broker larger than {} bytes",
                buf.len()
            );
        }
        if got > 0 {
            let now = Instant::now();
            let mut lat = Vec::new();
            {
                let mut q = lock(&shared.times);
                for _ in 0..got {
                    if let Some(Some(t)) = q.pop_front() {
                        lat.push((now - t).as_micros().min(u32::MAX as u128) as u32);
                    }
                }
            }
            if !lat.is_empty() {
                lock(&counters.ack_micros).extend(lat);
            }
            acked += got;
            counters.acked.fetch_add(got, Ordering::Relaxed);
            shared.window.add_permits(got as usize);
        }
    }
}
