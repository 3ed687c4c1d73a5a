//! The MQTT front end: accepts clients (TCP or TLS), checks CONNECT, appends every PUBLISH to
//! the buffer and forwards a client's packets to the internal router only once the appends
//! before them are durable. So rumqttd's PUBACK/PUBREC, and any delivery to local subscribers,
//! come after the write-ahead, and a slow or full disk slows publishers instead of losing data.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use edge_buffer::{AppendTicket, Error as BufError, Log, Record};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::auth::{AuthOutcome, Authenticator};
use super::codec::{self, CodecError, PublishDecoder, Refusal, Version};
use super::stats::{ConnectionGuard, MqttStats};
use super::{MqttConfig, MqttError};
use crate::event::Event;

/// Chunks read from one client that may wait for their append at once. With group commit
/// more in flight buys nothing; this bounds per-connection memory to about
/// `CHUNKS_IN_FLIGHT × (READ_CHUNK + max packet)`.
const CHUNKS_IN_FLIGHT: usize = 8;
const READ_CHUNK: usize = 16 * 1024;
/// On gateway shutdown a connection sends this PINGREQ to the router and relays the router's
/// packets until the PINGRESP comes back, so what the router queued for the client before
/// (e.g. the edge node's NDEATH) reaches it before the connection closes.
const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// How long a closing connection waits for that PINGRESP.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Codec(#[from] CodecError),
    #[error("second CONNECT on one connection")]
    SecondConnect,
    #[error("buffer append failed: {0}")]
    Append(#[from] BufError),
    #[error("event encoding: {0}")]
    Encode(#[from] crate::event::EncodeError),
}

/// QoS 1/2 publishes of one connection forwarded to the router and not yet acknowledged to
/// the client (see `MqttConfig::max_unacked_per_client`).
struct Unacked {
    count: AtomicUsize,
    limit: usize,
    acked: Notify,
}

impl Unacked {
    fn new(limit: usize) -> Unacked {
        Unacked {
            count: AtomicUsize::new(0),
            limit,
            acked: Notify::new(),
        }
    }

    fn sent(&self, n: usize) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    fn acked(&self, n: usize) {
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n))
            });
        self.acked.notify_waiters();
    }

    /// Waits until the count is below the limit; whether it had to wait.
    async fn below_limit(&self) -> bool {
        // The usual case, checked before registering with `acked` (that takes its lock).
        if self.count.load(Ordering::Relaxed) < self.limit {
            return false;
        }
        let mut waited = false;
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Relaxed) < self.limit {
                return waited;
            }
            waited = true;
            notified.await;
        }
    }
}

/// What [`Front::inbound`] needs to know of its connection.
struct ClientIn<'a> {
    version: Version,
    client_id: &'a str,
    disconnected: &'a AtomicBool,
    unacked: &'a Unacked,
}

/// Bytes read from a client, forwarded once `ticket` (its publishes' append) is durable.
struct Chunk {
    ticket: Option<AppendTicket>,
    publishes: u64,
    bytes: Bytes,
    read_at: Instant,
}

pub(crate) struct Front {
    pub(crate) cfg: MqttConfig,
    pub(crate) auth: Authenticator,
    pub(crate) log: Arc<Log>,
    pub(crate) stats: Arc<MqttStats>,
    /// The internal router's MQTT 5 listener.
    pub(crate) upstream: SocketAddr,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) clients: Arc<super::clients::ClientRegistry>,
}

/// Appends with the buffer's full policy applied: waits for space under backpressure, retries
/// a full file system, fails otherwise. The caller holds its client's packets meanwhile.
pub(crate) async fn append(
    log: &Log,
    stats: &MqttStats,
    records: &[Record<'_>],
) -> Result<AppendTicket, BufError> {
    loop {
        match log.append(records) {
            Ok(t) => return Ok(t),
            Err(BufError::Full { .. }) => {
                MqttStats::inc(&stats.backpressure_waits, 1);
                // Generous estimate (frame headers, a new segment's header) so that the wait
                // does not return before the append can fit.
                let need: u64 = records
                    .iter()
                    .map(|r| r.payload.len() as u64 + 64)
                    .sum::<u64>()
                    + 4096;
                log.wait_for_space(need).await;
            }
            Err(e @ BufError::DiskFull { .. }) => {
                MqttStats::inc(&stats.append_errors, 1);
                tracing::warn!(error = %e, "buffer file system full; MQTT publishers wait");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                MqttStats::inc(&stats.append_errors, 1);
                return Err(e);
            }
        }
    }
}

impl Front {
    pub(crate) async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) {
        let mut conns = JoinSet::new();
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                r = listener.accept() => match r {
                    Ok((sock, peer)) => {
                        let _ = sock.set_nodelay(true);
                        conns.spawn(self.clone().serve(sock, peer, tls.clone()));
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        // Connections watch the same signal; give them a moment to close, then cut the rest.
        let _ = timeout(Duration::from_secs(5), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        conns.abort_all();
    }

    async fn serve(self: Arc<Self>, sock: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve_stream(sock, peer, false).await;
        };
        match timeout(self.connect_timeout(), acceptor.accept(sock)).await {
            Ok(Ok(stream)) => self.serve_stream(stream, peer, true).await,
            Ok(Err(e)) => {
                MqttStats::inc(&self.stats.protocol_errors, 1);
                tracing::info!(%peer, error = %e, "MQTT TLS handshake failed");
            }
            Err(_) => {
                MqttStats::inc(&self.stats.protocol_errors, 1);
                tracing::info!(%peer, "MQTT TLS handshake timed out");
            }
        }
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.connect_timeout_ms)
    }

    async fn refuse<W: AsyncWrite + Unpin>(&self, w: &mut W, version: Version, why: Refusal) {
        let _ = w.write_all(&codec::connack_refusal(version, why)).await;
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }

    async fn serve_stream<S>(&self, stream: S, peer: SocketAddr, tls: bool)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let max_packet = self.cfg.max_packet_bytes();
        let (mut cr, mut cw) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let frame = match timeout(
            self.connect_timeout(),
            read_frame(&mut cr, &mut buf, max_packet),
        )
        .await
        {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                MqttStats::inc(&self.stats.protocol_errors, 1);
                tracing::info!(%peer, error = %e, "MQTT connection closed before CONNECT");
                return;
            }
            Err(_) => {
                MqttStats::inc(&self.stats.protocol_errors, 1);
                tracing::info!(%peer, "no MQTT CONNECT in time");
                return;
            }
        };
        if codec::packet_type(&frame) != codec::CONNECT {
            MqttStats::inc(&self.stats.protocol_errors, 1);
            tracing::info!(%peer, "first MQTT packet is not CONNECT");
            return;
        }
        let version = match codec::connect_version(&frame) {
            Ok(v) => v,
            Err(e) => {
                MqttStats::inc(&self.stats.connections_rejected, 1);
                tracing::info!(%peer, error = %e, "MQTT CONNECT refused");
                // Best effort: 3.1 clients understand the 3.1.1 CONNACK layout.
                self.refuse(&mut cw, Version::V4, Refusal::UnsupportedVersion)
                    .await;
                return;
            }
        };
        let info = match codec::parse_connect(version, &frame, max_packet) {
            Ok(i) => i,
            Err(e) => {
                MqttStats::inc(&self.stats.protocol_errors, 1);
                tracing::info!(%peer, error = %e, "malformed MQTT CONNECT");
                return;
            }
        };
        let client_id = info.client_id.clone();
        // rumqttd drops such ids silently; refuse them properly instead.
        if client_id.contains(['+', '$', '#', '/']) {
            MqttStats::inc(&self.stats.connections_rejected, 1);
            tracing::info!(%peer, client_id, "MQTT client id with + $ # or / refused");
            return self.refuse(&mut cw, version, Refusal::BadClientId).await;
        }
        let user = info.login.as_ref().map(|(u, _)| u.clone());
        match self.auth.check(info.login.clone()).await {
            AuthOutcome::Accepted => {}
            outcome => {
                MqttStats::inc(&self.stats.auth_failures, 1);
                tracing::warn!(%peer, client_id, ?user, "MQTT login refused");
                let why = if outcome == AuthOutcome::NotAuthorized {
                    Refusal::NotAuthorized
                } else {
                    Refusal::BadCredentials
                };
                return self.refuse(&mut cw, version, why).await;
            }
        }
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            MqttStats::inc(&self.stats.connections_rejected, 1);
            tracing::warn!(%peer, client_id, max = self.cfg.max_connections, "MQTT connection limit reached");
            return self
                .refuse(&mut cw, version, Refusal::ServerUnavailable)
                .await;
        };
        let will = info.will.clone();
        let upstream = async {
            let s = TcpStream::connect(self.upstream).await?;
            s.set_nodelay(true)?;
            let connect = codec::rewrite_connect(info, &self.user, &self.password)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let (ur, mut uw) = s.into_split();
            uw.write_all(&connect).await?;
            Ok::<_, io::Error>((ur, uw))
        };
        let (ur, uw) = match upstream.await {
            Ok(x) => x,
            Err(e) => {
                MqttStats::inc(&self.stats.connections_rejected, 1);
                tracing::error!(%peer, client_id, error = %e, "internal MQTT router unreachable");
                return self
                    .refuse(&mut cw, version, Refusal::ServerUnavailable)
                    .await;
            }
        };
        let _guard = ConnectionGuard::new(&self.stats);
        let _listed = self.clients.add(super::clients::ClientInfo {
            client_id: client_id.clone(),
            username: user.clone(),
            remote: super::clients::remote(peer),
            protocol: if version == Version::V5 { "5" } else { "3.1.1" },
            tls,
            connected_at: now_ms(),
        });
        tracing::debug!(%peer, client_id, ?version, ?user, "MQTT client connected");

        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        // For the shutdown PINGREQ; dropped when the client's input ends, so that `forward`
        // then sees the channel close.
        let mut drain_tx = Some(tx.clone());
        let (pongs_tx, mut pongs) = watch::channel(0u64);
        let disconnected = AtomicBool::new(false);
        let unacked = Unacked::new(self.cfg.max_unacked_per_client);
        let client = ClientIn {
            version,
            client_id: &client_id,
            disconnected: &disconnected,
            unacked: &unacked,
        };
        let inbound = self.inbound(cr, buf, tx, client);
        let forward = self.forward(rx, uw);
        let outbound = copy_out(ur, cw, version, max_packet, &pongs_tx, &unacked);
        tokio::pin!(inbound, forward, outbound);
        let mut shutdown = self.shutdown.clone();
        let mut inbound_done = false;
        let mut stopping = false;
        loop {
            tokio::select! {
                r = &mut inbound, if !inbound_done => {
                    inbound_done = true;
                    drain_tx = None;
                    if let Err(e) = r {
                        if !matches!(e, ConnError::Io(_)) {
                            MqttStats::inc(&self.stats.protocol_errors, 1);
                        }
                        tracing::info!(%peer, client_id, error = %e, "MQTT client connection ends");
                    }
                }
                r = &mut forward => {
                    match r {
                        Err(e) => {
                            tracing::warn!(%peer, client_id, error = %e, "MQTT connection closed unacknowledged");
                        }
                        Ok(mut uw) => {
                            // After a DISCONNECT the router closes the connection itself. Closing
                            // it from here as well can make rumqttd handle the disconnect twice,
                            // and the second one drops whichever connection took over the
                            // connection id meanwhile (see PUBACK.md).
                            if !disconnected.load(Ordering::Relaxed) {
                                let _ = uw.shutdown().await;
                            }
                            // Everything was handed over; let the last acks reach the client.
                            let _ = timeout(Duration::from_secs(1), &mut outbound).await;
                        }
                    }
                    break;
                }
                _ = &mut outbound => break,
                _ = stopped(&mut shutdown) => {
                    stopping = true;
                    if let Some(tx) = drain_tx.take() {
                        let ping = Chunk {
                            ticket: None,
                            publishes: 0,
                            bytes: Bytes::from_static(&PINGREQ),
                            read_at: Instant::now(),
                        };
                        let drained = drain(tx, ping, &mut forward, &mut outbound, &mut pongs);
                        if timeout(DRAIN_TIMEOUT, drained).await.is_err() {
                            tracing::debug!(%peer, client_id, "router queue not drained before close");
                        }
                    }
                    break;
                }
            }
        }
        // The router fires the will itself (for local subscribers) when the connection drops
        // without DISCONNECT; the buffer gets the same will here. Not on gateway shutdown.
        if let Some(will) = will
            && !disconnected.load(Ordering::Relaxed)
            && !stopping
        {
            self.record_will(&will, &client_id).await;
        }
        tracing::debug!(%peer, client_id, "MQTT client disconnected");
    }

    async fn record_will(&self, will: &Event, client_id: &str) {
        let mut buf = Vec::new();
        if let Err(e) = will.encode(&mut buf) {
            tracing::warn!(client_id, error = %e, "will message cannot be recorded");
            return;
        }
        let res = match append(&self.log, &self.stats, &[Record::new(now_ms(), &buf)]).await {
            Ok(t) => t.durable().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(_) => {
                MqttStats::inc(&self.stats.wills_recorded, 1);
                MqttStats::inc(&self.stats.publishes_appended, 1);
            }
            Err(e) => {
                MqttStats::inc(&self.stats.append_errors, 1);
                tracing::error!(client_id, error = %e, "will message not recorded in the buffer");
            }
        }
    }

    /// Reads client packets, appends the publishes of each read as one batch and queues the
    /// bytes for [`Front::forward`]. Ends at EOF, DISCONNECT or the first bad packet.
    async fn inbound<R: AsyncRead + Unpin>(
        &self,
        mut cr: R,
        mut buf: BytesMut,
        tx: mpsc::Sender<Chunk>,
        client: ClientIn<'_>,
    ) -> Result<(), ConnError> {
        let ClientIn {
            version,
            client_id,
            disconnected,
            unacked,
        } = client;
        let max_packet = self.cfg.max_packet_bytes();
        let mut decoder = PublishDecoder::default();
        let mut encoded = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut read_at = Instant::now();
        // MQTT 3.1.1 packets re-encoded as MQTT 5 for the router; MQTT 5 goes as read.
        let mut translated = BytesMut::new();
        loop {
            encoded.clear();
            spans.clear();
            let mut take = 0;
            let mut stop = false;
            let mut payload_bytes = 0u64;
            let mut expect_acks = 0usize;
            while let Some(n) = codec::frame_len(&buf[take..], max_packet)? {
                let frame = &buf[take..take + n];
                match codec::packet_type(frame) {
                    codec::PUBLISH => {
                        let ev = decoder.event(
                            version,
                            frame,
                            client_id,
                            max_packet,
                            self.cfg.max_payload_bytes,
                        )?;
                        payload_bytes += ev.payload.len() as u64;
                        if ev.qos > 0 {
                            expect_acks += 1;
                        }
                        let start = encoded.len();
                        ev.encode(&mut encoded)?;
                        spans.push((start, encoded.len()));
                    }
                    codec::CONNECT => return Err(ConnError::SecondConnect),
                    codec::DISCONNECT => {
                        stop = true;
                        // MQTT 5 "disconnect with will message": keep it from the router so
                        // that the router publishes the will, as the client asked.
                        if version == Version::V5 && frame.len() > 2 && frame[2] == 0x04 {
                            break;
                        }
                        disconnected.store(true, Ordering::Relaxed);
                        if version == Version::V4 {
                            codec::v4_to_v5(frame, &mut translated)?;
                        }
                        take += n;
                        break;
                    }
                    _ => {}
                }
                if version == Version::V4 {
                    codec::v4_to_v5(frame, &mut translated)?;
                }
                take += n;
            }
            if take > 0 {
                let raw = buf.split_to(take);
                let bytes = match version {
                    Version::V4 => translated.split().freeze(),
                    Version::V5 => raw.freeze(),
                };
                let ticket = if spans.is_empty() {
                    None
                } else {
                    let ts = now_ms();
                    let records: Vec<Record<'_>> = spans
                        .iter()
                        .map(|&(a, b)| Record::new(ts, &encoded[a..b]))
                        .collect();
                    MqttStats::inc(&self.stats.publishes_received, spans.len() as u64);
                    MqttStats::inc(&self.stats.publish_payload_bytes, payload_bytes);
                    Some(append(&self.log, &self.stats, &records).await?)
                };
                let chunk = Chunk {
                    ticket,
                    publishes: spans.len() as u64,
                    bytes,
                    read_at,
                };
                unacked.sent(expect_acks);
                if tx.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            if stop {
                return Ok(());
            }
            if unacked.below_limit().await {
                MqttStats::inc(&self.stats.unacked_limit_waits, 1);
            }
            buf.reserve(READ_CHUNK);
            if cr.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            read_at = Instant::now();
        }
    }

    /// Hands queued client bytes to the router in order, each chunk only after its appends
    /// are durable. Returns the write half once the client's input ended: closing it tells
    /// the router the client left.
    async fn forward<W: AsyncWrite + Unpin>(
        &self,
        mut rx: mpsc::Receiver<Chunk>,
        mut uw: W,
    ) -> Result<W, ConnError> {
        while let Some(chunk) = rx.recv().await {
            if let Some(ticket) = chunk.ticket {
                if let Err(e) = ticket.durable().await {
                    MqttStats::inc(&self.stats.append_errors, 1);
                    return Err(e.into());
                }
                MqttStats::inc(&self.stats.publishes_appended, chunk.publishes);
                self.stats.record_durable_wait(
                    chunk.read_at.elapsed().as_micros().min(u64::MAX as u128) as u64,
                );
            }
            uw.write_all(&chunk.bytes).await?;
        }
        Ok(uw)
    }
}

/// Sends `ping` to the router behind the client's queued packets and relays the router's
/// packets until a PINGRESP has been written to the client (or either direction ends).
async fn drain<F, O>(
    tx: mpsc::Sender<Chunk>,
    ping: Chunk,
    forward: &mut std::pin::Pin<&mut F>,
    outbound: &mut std::pin::Pin<&mut O>,
    pongs: &mut watch::Receiver<u64>,
) where
    F: std::future::Future,
    O: std::future::Future,
{
    let send = tx.send(ping);
    tokio::pin!(send);
    let mut sent = false;
    loop {
        tokio::select! {
            r = &mut send, if !sent => {
                if r.is_err() {
                    return;
                }
                sent = true;
                // PINGRESPs relayed so far answered the client's own pings.
                pongs.mark_unchanged();
            }
            _ = pongs.changed(), if sent => return,
            // `forward` only ends on an error here (the channel is still open).
            _ = forward.as_mut() => return,
            _ = outbound.as_mut() => return,
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Reads until `buf` starts with a whole packet and splits it off; `None` at a clean EOF.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, ConnError> {
    loop {
        if let Some(n) = codec::frame_len(buf, max)? {
            return Ok(Some(buf.split_to(n).freeze()));
        }
        buf.reserve(READ_CHUNK);
        if r.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

/// Router → client: whole packets, byte for byte to MQTT 5 clients, translated for 3.1.1
/// clients (flushing after each read, for TLS). Counts the PINGRESPs written in `pongs` and
/// the PUBACKs/PUBRECs in `unacked`.
async fn copy_out<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    version: Version,
    max_packet: usize,
    pongs: &watch::Sender<u64>,
    unacked: &Unacked,
) -> Result<(), ConnError> {
    // The router's packets to one subscriber; a little above the client limit.
    let max = max_packet + 4096;
    let mut inb = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    loop {
        let mut open = true;
        let mut pingresps = 0u64;
        let mut acks = 0usize;
        let mut count = |packet_type: u8| match packet_type {
            codec::PINGRESP => pingresps += 1,
            codec::PUBACK | codec::PUBREC => acks += 1,
            _ => {}
        };
        match version {
            Version::V5 => {
                let mut end = 0;
                while let Some(n) = codec::frame_len(&inb[end..], max)? {
                    count(codec::packet_type(&inb[end..]));
                    end += n;
                }
                out = inb.split_to(end);
            }
            Version::V4 => {
                while let Some(n) = codec::frame_len(&inb, max)? {
                    let frame = inb.split_to(n);
                    count(codec::packet_type(&frame));
                    if !codec::v5_to_v4(&frame, &mut out)? {
                        open = false;
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            w.write_all(&out).await?;
            w.flush().await?;
            out.clear();
        }
        if acks > 0 {
            unacked.acked(acks);
        }
        if pingresps > 0 {
            pongs.send_modify(|n| *n += pingresps);
        }
        if !open {
            let _ = w.shutdown().await;
            return Ok(());
        }
        inb.reserve(READ_CHUNK);
        if r.read_buf(&mut inb).await? == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
    }
}

/// Builds the TLS acceptor from PEM files; errors name the file.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, MqttError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |path: &std::path::Path, reason: String| MqttError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(cert, "no certificate in file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_err(key, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
