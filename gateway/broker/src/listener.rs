//! Listeners: accept sockets within the connection limits (total and per address, counting
//! sockets that have not sent CONNECT yet), TCP keepalive for half-open peers, TLS handshake
//! within the CONNECT deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::codec::reason;
use crate::stats::{Gauge, MqttStats};

/// How often a silent peer's TCP connection is probed (half-open sockets are found within
/// about `KEEPALIVE_IDLE + 3 × KEEPALIVE_INTERVAL`).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Sockets over a limit that are answered with a refusing CONNACK at once; beyond these
/// they are closed without one (a flood cannot make refusals cost more than this).
const REFUSALS_AT_ONCE: usize = 16;

/// Accepts sockets until `shutdown`; then waits up to 5 s for its connections to end.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let overflow = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        MqttStats::inc(&broker.stats.refused_max_connections, 1);
                        tracing::debug!(%peer, max = broker.cfg.max_connections, "MQTT socket refused: mqtt.max_connections open");
                        refuse(&broker, &overflow, &mut conns, sock, tls.clone(), reason::SERVER_BUSY);
                        continue;
                    };
                    let Some(address) = broker.reserve_address(peer.ip()) else {
                        MqttStats::inc(&broker.stats.refused_per_address, 1);
                        tracing::debug!(%peer, max = broker.cfg.max_connections_per_address, "MQTT socket refused: mqtt.max_connections_per_address open");
                        refuse(&broker, &overflow, &mut conns, sock, tls.clone(), reason::QUOTA_EXCEEDED);
                        continue;
                    };
                    tune(&sock);
                    let broker = broker.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        let _address = address;
                        let _socket = Gauge::up(&broker.stats.sockets_current);
                        serve(broker.clone(), sock, peer, tls).await;
                    });
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
    let _ = timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// Refuses a socket over a limit with a CONNACK where a refusal slot is free (so the client
/// learns why), or closes it at once.
fn refuse(
    broker: &Arc<Broker>,
    overflow: &Arc<Semaphore>,
    conns: &mut JoinSet<()>,
    sock: TcpStream,
    tls: Option<TlsAcceptor>,
    code: u8,
) {
    let Ok(permit) = overflow.clone().try_acquire_owned() else {
        return;
    };
    let max = broker.cfg.max_connect_bytes.min(4096);
    conns.spawn(async move {
        let _permit = permit;
        match tls {
            None => crate::connection::refuse(sock, max, code).await,
            Some(acceptor) => {
                if let Ok(Ok(s)) = timeout(Duration::from_secs(2), acceptor.accept(sock)).await {
                    crate::connection::refuse(s, max, code).await;
                }
            }
        }
    });
}

fn tune(sock: &TcpStream) {
    let _ = sock.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(sock).set_tcp_keepalive(&ka);
}

async fn serve(broker: Arc<Broker>, sock: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
    let Some(acceptor) = tls else {
        return crate::connection::serve(broker, sock, peer, false).await;
    };
    let deadline = Duration::from_millis(broker.cfg.connect_timeout_ms);
    match timeout(deadline, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => crate::connection::serve(broker, stream, peer, true).await,
        Ok(Err(e)) => {
            MqttStats::inc(&broker.stats.protocol_errors, 1);
            tracing::info!(%peer, error = %e, "MQTT TLS handshake failed");
        }
        Err(_) => {
            MqttStats::inc(&broker.stats.protocol_errors, 1);
            tracing::info!(%peer, "MQTT TLS handshake timed out");
        }
    }
}

pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
