//! The web port's listeners (HTTPS and the plain-HTTP redirect), built to hold against hostile
//! clients on the plant network:
//!
//! * Accepting never waits for anything: a connection over the caps ([`ConnLimits`]: total and
//!   per source address, IPv6 by /64) is closed at once, so silent sockets from one host cannot
//!   take the slots (or file descriptors) of another.
//! * Every phase has a deadline: the TLS handshake ([`HANDSHAKE_TIMEOUT`]), the request head
//!   ([`HEADER_TIMEOUT`], which hyper also starts while a kept-alive connection waits for its
//!   next request, so it bounds idle keep-alive too), the whole request ([`REQUEST_TIMEOUT`],
//!   the router's middleware) and any stall in either direction ([`IDLE_TIMEOUT`]).
//! * Every refusal and every deadline hit is counted ([`ListenerStats`], in `/metrics`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::{ApiError, ClientAddr};
use ironbridge_broker::throttle::address_unit;

/// A TLS handshake must finish within this (a browser needs milliseconds).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head must arrive within this, counted from when the connection starts waiting for
/// it (so also after the previous response on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body included) must be answered within this; then 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that moves no byte in either direction for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of request head hyper buffers at most (431/close beyond).
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How long open connections get to finish when the daemon stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection caps of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
}

/// Counters of one listener (`/metrics`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_total_cap: AtomicU64,
    pub refused_address_cap: AtomicU64,
    pub handshake_failed: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    pub request_timeouts: AtomicU64,
}

/// One metric: name, kind, help and its counter in [`ListenerStats`].
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ListenerStats) -> &AtomicU64,
);

/// The counters of both listeners.
#[derive(Debug, Default)]
pub struct WebStats {
    pub https: ListenerStats,
    pub http: ListenerStats,
}

impl WebStats {
    /// The Prometheus text of the listeners' counters.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let series: [Series; 9] = [
            (
                "web_connections_open",
                "gauge",
                "Open web connections.",
                |s| &s.open,
            ),
            (
                "web_connections_accepted_total",
                "counter",
                "Web connections accepted.",
                |s| &s.accepted,
            ),
            (
                "web_connections_refused_total_cap_total",
                "counter",
                "Web connections closed at once: web.max_connections reached.",
                |s| &s.refused_total_cap,
            ),
            (
                "web_connections_refused_address_cap_total",
                "counter",
                "Web connections closed at once: web.max_connections_per_address reached.",
                |s| &s.refused_address_cap,
            ),
            (
                "web_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed.",
                |s| &s.handshake_failed,
            ),
            (
                "web_tls_handshake_timeouts_total",
                "counter",
                "TLS handshakes not finished in time.",
                |s| &s.handshake_timeouts,
            ),
            (
                "web_header_timeouts_total",
                "counter",
                "Connections closed: no complete request head in time (slow or idle client).",
                |s| &s.header_timeouts,
            ),
            (
                "web_idle_closed_total",
                "counter",
                "Connections closed: no byte moved for the idle timeout.",
                |s| &s.idle_closed,
            ),
            (
                "web_request_timeouts_total",
                "counter",
                "Requests answered 408: not done within the request timeout.",
                |s| &s.request_timeouts,
            ),
        ];
        for (name, kind, help, field) in series {
            let _ = writeln!(
                out,
                "# HELP ironbridge_{name} {help}\n# TYPE ironbridge_{name} {kind}"
            );
            for (label, s) in [("https", &self.https), ("http", &self.http)] {
                let _ = writeln!(
                    out,
                    "ironbridge_{name}{{listener=\"{label}\"}} {}",
                    field(s).load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

/// Open connections, total and per address unit.
struct Counts {
    total: usize,
    by_unit: HashMap<IpAddr, usize>,
}

struct Limiter {
    limits: ConnLimits,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    limiter: Arc<Limiter>,
    unit: IpAddr,
    stats: Arc<WebStats>,
    https: bool,
}

impl Limiter {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpAddr, &'static str> {
        let unit = address_unit(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.max_connections {
            return Err("total");
        }
        let n = c.by_unit.entry(unit).or_insert(0);
        if *n >= self.limits.max_per_address {
            return Err("address");
        }
        *n += 1;
        c.total += 1;
        Ok(unit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_unit.get_mut(&self.unit) {
            *n -= 1;
            if *n == 0 {
                c.by_unit.remove(&self.unit);
            }
        }
        stats_of(&self.stats, self.https)
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn stats_of(stats: &WebStats, https: bool) -> &ListenerStats {
    if https { &stats.https } else { &stats.http }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) under `limits` until `stop` turns
/// true; then lets open connections finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnLimits,
    stats: Arc<WebStats>,
    mut stop: watch::Receiver<bool>,
) {
    let https = tls.is_some();
    let limiter = Arc::new(Limiter {
        limits,
        counts: Mutex::new(Counts {
            total: 0,
            by_unit: HashMap::new(),
        }),
    });
    let mut conns = JoinSet::new();
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "web accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stop_requested(&mut stop) => break,
        };
        let s = stats_of(&stats, https);
        let unit = match limiter.admit(peer.ip()) {
            Ok(unit) => unit,
            Err(which) => {
                let counter = if which == "total" {
                    &s.refused_total_cap
                } else {
                    &s.refused_address_cap
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, cap = which, "web connection refused: connection cap");
                drop(sock);
                continue;
            }
        };
        s.accepted.fetch_add(1, Ordering::Relaxed);
        s.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            limiter: limiter.clone(),
            unit,
            stats: stats.clone(),
            https,
        };
        conns.spawn(connection(
            sock,
            peer,
            tls.clone(),
            app.clone(),
            stats.clone(),
            stop.clone(),
            slot,
        ));
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    stats: Arc<WebStats>,
    stop: watch::Receiver<bool>,
    slot: Slot,
) {
    let _ = sock.set_nodelay(true);
    let s = stats_of(&stats, slot.https);
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                Ok(Ok(stream)) => http(stream, peer, app, s, stop).await,
                Ok(Err(e)) => {
                    s.handshake_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "web TLS handshake failed");
                }
                Err(_) => {
                    s.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "web TLS handshake timed out");
                }
            }
        }
        None => http(sock, peer, app, s, stop).await,
    }
    drop(slot);
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    s: &ListenerStats,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: io,
        started,
        last: last.clone(),
    };
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
        app.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    loop {
        let idle_for = Duration::from_millis(
            (started.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed)),
        );
        if idle_for >= IDLE_TIMEOUT {
            s.idle_closed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "web connection closed: idle");
            return;
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        s.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(%peer, error = %e, "web connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(IDLE_TIMEOUT - idle_for) => {}
            _ = stop_requested(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await;
                return;
            }
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, before the caller awaits on.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// A stream that records when it last moved a byte (milliseconds after `started`).
struct Watched<I> {
    inner: I,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<I> Watched<I> {
    fn moved(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Middleware: a request not answered within [`REQUEST_TIMEOUT`] (a slow body, a stuck device)
/// gets 408 and frees its connection.
pub async fn request_timeout(
    axum::extract::State(stats): axum::extract::State<Arc<WebStats>>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            stats.https.request_timeouts.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not complete within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
            .into_response()
        }
    }
}
