//! A TCP fault proxy: listens on 127.0.0.1 and forwards to a target, with faults switchable at runtime.
//!
//! Modes ([`Mode`]):
//! - `Pass`: forward bytes both ways.
//! - `Cut`: close every current connection, and close new ones right after accepting them.
//! - `Blackhole`: keep connections open (and accept new ones) but forward nothing either way; bytes already
//!   read are held, and flow again when the mode goes back to `Pass`/`Slow` (a healed partition). A new
//!   connection's upstream connection is only opened once forwarding resumes.
//! - `Slow`: forward, but wait `delay` before each chunk and, with `bytes_per_sec`, the chunk's length at
//!   that rate.
//!
//! Memory is bounded: each direction of each connection owns one fixed [`CHUNK`]-byte buffer.
//!
//! ```no_run
//! # async fn t(target: std::net::SocketAddr) -> anyhow::Result<()> {
//! use ironbridge_e2e::{FaultProxy, Mode};
//! let proxy = FaultProxy::start(target).await?;
//! // point the client at proxy.addr() ...
//! proxy.set_mode(Mode::Blackhole);
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Size of each per-direction copy buffer.
pub const CHUNK: usize = 16 * 1024;

/// How long the proxy waits for the target to accept a connection before closing the client's.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy's behaviour; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward both ways.
    #[default]
    Pass,
    /// Close all connections; close new ones at once.
    Cut,
    /// Keep connections open, forward nothing.
    Blackhole,
    /// Forward with a delay per chunk and an optional bandwidth limit.
    Slow {
        /// Added before each chunk is forwarded.
        delay: Duration,
        /// Bandwidth limit per direction and connection, if any.
        bytes_per_sec: Option<u64>,
    },
}

impl Mode {
    /// `Slow` with only a per-chunk delay.
    pub fn slow(delay: Duration) -> Mode {
        Mode::Slow {
            delay,
            bytes_per_sec: None,
        }
    }

    /// How long to hold a chunk of `len` bytes before forwarding it, or `None` if it must not be forwarded.
    fn hold_for(self, len: usize) -> Option<Duration> {
        match self {
            Mode::Pass => Some(Duration::ZERO),
            Mode::Cut | Mode::Blackhole => None,
            Mode::Slow {
                delay,
                bytes_per_sec,
            } => {
                let transfer = match bytes_per_sec {
                    Some(bps) if bps > 0 => Duration::from_secs_f64(len as f64 / bps as f64),
                    _ => Duration::ZERO,
                };
                Some(delay + transfer)
            }
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Pass => write!(f, "pass"),
            Mode::Cut => write!(f, "cut"),
            Mode::Blackhole => write!(f, "blackhole"),
            Mode::Slow {
                delay,
                bytes_per_sec: None,
            } => write!(f, "slow {}", delay.as_millis()),
            Mode::Slow {
                delay,
                bytes_per_sec: Some(bps),
            } => write!(f, "slow {} {bps}", delay.as_millis()),
        }
    }
}

/// Parses the command syntax of the `fault-proxy` binary: `pass`, `cut`, `blackhole`,
/// `slow <ms> [<bytes_per_sec>]`.
impl FromStr for Mode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Mode> {
        let mut words = s.split_whitespace();
        let mode = match words.next() {
            Some("pass") => Mode::Pass,
            Some("cut") => Mode::Cut,
            Some("blackhole") => Mode::Blackhole,
            Some("slow") => {
                let ms: u64 = words
                    .next()
                    .context("slow needs a delay in milliseconds: slow <ms> [<bytes_per_sec>]")?
                    .parse()
                    .context("slow <ms>: not a whole number of milliseconds")?;
                let bytes_per_sec = match words.next() {
                    None => None,
                    Some(w) => {
                        let bps: u64 = w
                            .parse()
                            .context("slow <ms> <bytes_per_sec>: not a whole number")?;
                        if bps == 0 {
                            bail!("slow <ms> <bytes_per_sec>: must be at least 1");
                        }
                        Some(bps)
                    }
                };
                Mode::Slow {
                    delay: Duration::from_millis(ms),
                    bytes_per_sec,
                }
            }
            Some(other) => bail!(
                "unknown mode {other:?}; expected pass, cut, blackhole or slow <ms> [<bytes_per_sec>]"
            ),
            None => bail!("empty command"),
        };
        if let Some(extra) = words.next() {
            bail!("unexpected {extra:?} after {mode}");
        }
        Ok(mode)
    }
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    active: AtomicUsize,
    upstream_bytes: AtomicU64,
    downstream_bytes: AtomicU64,
}

/// A running fault proxy. Dropping it stops listening and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:<free port> and forwards to `target` (which must be a loopback address),
    /// starting in [`Mode::Pass`].
    pub async fn start(target: SocketAddr) -> Result<FaultProxy> {
        FaultProxy::start_on(SocketAddr::from((crate::net::LOCALHOST, 0)), target).await
    }

    /// Like [`FaultProxy::start`] but on a given listen address (also loopback only).
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> Result<FaultProxy> {
        if !listen.ip().is_loopback() || !target.ip().is_loopback() {
            bail!("fault proxy is for loopback only: listen {listen}, target {target}");
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("fault proxy: bind {listen}"))?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, target, mode_rx, stats.clone()));
        Ok(FaultProxy {
            addr,
            target,
            mode,
            stats,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the mode; takes effect at once for current and new connections.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far (including ones closed at once because of `Cut`).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Connections currently open.
    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::Relaxed)
    }

    /// Bytes forwarded client → target and target → client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.stats.upstream_bytes.load(Ordering::Relaxed),
            self.stats.downstream_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task (closing both
        // sockets).
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let client = match accepted {
                    Ok((client, _)) => client,
                    // e.g. EMFILE: back off a little instead of spinning.
                    Err(_) => { sleep(Duration::from_millis(10)).await; continue; }
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                if *mode.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                let mode = mode.clone();
                let stats = stats.clone();
                conns.spawn(async move {
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    let _ = connection(client, target, mode, &stats).await;
                    stats.active.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Waits until the mode allows forwarding. Returns `false` when the connection must close (`Cut`, or the
/// proxy was dropped).
async fn wait_forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        match m {
            Mode::Cut => return false,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
            Mode::Pass | Mode::Slow { .. } => return true,
        }
    }
}

async fn connection(
    mut client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stats: &Stats,
) -> io::Result<()> {
    // A blackholed new connection does not reach the target until forwarding resumes (a client that gives
    // up meanwhile is only noticed then).
    if !wait_forwarding(&mut mode).await {
        return Ok(());
    }
    let mut upstream = tokio::select! {
        r = timeout(CONNECT_TIMEOUT, TcpStream::connect(target)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect to target timed out")),
        },
        _ = wait_cut(mode.clone()) => return Ok(()),
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    tokio::try_join!(
        pump(cr, uw, mode.clone(), &stats.upstream_bytes),
        pump(ur, cw, mode, &stats.downstream_bytes),
    )?;
    Ok(())
}

/// Resolves when the mode becomes `Cut` or the proxy is dropped.
async fn wait_cut(mut mode: watch::Receiver<Mode>) {
    loop {
        if *mode.borrow_and_update() == Mode::Cut {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction with one fixed buffer, obeying the mode between and during chunks.
/// Returns `Ok` on EOF (after half-closing the writer) or when the connection must close.
async fn pump<R, W>(
    mut rd: R,
    mut wr: W,
    mut mode: watch::Receiver<Mode>,
    counter: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Read a chunk, but only while forwarding is allowed (blackhole: leave bytes in the kernel).
        let n = loop {
            if !wait_forwarding(&mut mode).await {
                return Err(closed());
            }
            tokio::select! {
                r = rd.read(&mut buf) => break r?,
                changed = mode.changed() => if changed.is_err() { return Err(closed()); },
            }
        };
        if n == 0 {
            // Half-close: the peer sees EOF, the other direction keeps going.
            let _ = wr.shutdown().await;
            return Ok(());
        }
        // Hold the chunk as the mode says; a mode change restarts the wait under the new mode.
        loop {
            let m = *mode.borrow_and_update();
            match m.hold_for(n) {
                None if m == Mode::Cut => return Err(closed()),
                None => {
                    if mode.changed().await.is_err() {
                        return Err(closed());
                    }
                }
                Some(d) if d.is_zero() => break,
                Some(d) => tokio::select! {
                    _ = sleep(d) => break,
                    changed = mode.changed() => if changed.is_err() { return Err(closed()); },
                },
            }
        }
        // Write it, still reacting to cut/blackhole between partial writes (`write` is cancel-safe).
        let mut off = 0;
        while off < n {
            if !wait_forwarding(&mut mode).await {
                return Err(closed());
            }
            tokio::select! {
                w = wr.write(&buf[off..n]) => {
                    let w = w?;
                    if w == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    off += w;
                    counter.fetch_add(w as u64, Ordering::Relaxed);
                }
                changed = mode.changed() => if changed.is_err() { return Err(closed()); },
            }
        }
    }
}

/// The error that makes `try_join!` drop the connection (both sockets close).
fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by fault proxy")
}
