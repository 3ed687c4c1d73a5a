//! The internal rumqttd: router thread plus one MQTT 5 listener on loopback (3.1.1 clients are
//! translated by the front end), reachable only with per-start random credentials that the
//! front end injects.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::task::Poll;

use rand::Rng;
use rumqttd::local::LinkBuilder;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Protocol, v5::V5};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::task::JoinHandle;

use super::{MqttConfig, MqttError};

/// Client id of the gateway's own local link (publishes from in-process components).
pub(crate) const LOCAL_CLIENT_ID: &str = "ironbridge-local";

pub(crate) struct Internal {
    pub(crate) addr: SocketAddr,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) servers: Vec<JoinHandle<()>>,
    pub(crate) local: (LinkTx, LinkRx),
    pub(crate) links: LinkFactory,
}

/// Opens further local links (in-process subscribers) to the router. A closure because
/// rumqttd does not export the router channel's item type.
pub(crate) type LinkFactory = Box<dyn Fn(&str) -> Result<(LinkTx, LinkRx), String> + Send + Sync>;

fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A free loopback port. rumqttd binds by address only, so there is a tiny window in which
/// another process could take it; the bind error is then reported by [`spawn_server`].
fn free_loopback() -> Result<SocketAddr, MqttError> {
    let l = StdListener::bind(("127.0.0.1", 0))
        .map_err(|e| MqttError::Router(format!("no loopback port: {e}")))?;
    l.local_addr()
        .map_err(|e| MqttError::Router(format!("no loopback port: {e}")))
}

/// Starts rumqttd's accept loop on the current runtime. Its first poll binds the listener
/// synchronously, so a bind failure is seen here instead of only in rumqttd's log.
async fn spawn_server<P>(
    mut server: Server<P>,
    addr: SocketAddr,
) -> Result<JoinHandle<()>, MqttError>
where
    P: Protocol + Clone + Send + Sync + 'static,
{
    let mut fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        if let Err(e) = server.start(LinkType::Remote).await {
            tracing::error!(%addr, error = %e, "internal MQTT listener stopped");
        }
    });
    let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Some(())),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if first.is_some() {
        return Err(MqttError::Router(format!(
            "internal listener on {addr} could not start (see log)"
        )));
    }
    Ok(tokio::spawn(fut))
}

pub(crate) async fn start(cfg: &MqttConfig) -> Result<Internal, MqttError> {
    let router_cfg = RouterConfig {
        // Room for the gateway's own local links besides client connections.
        max_connections: cfg.max_connections + 16,
        max_outgoing_packet_count: cfg.router.max_outgoing_packet_count,
        max_segment_size: cfg.router.segment_bytes,
        max_segment_count: cfg.router.segment_count,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    // The router thread holds a sender to itself and so runs until the process exits; an idle
    // router costs one parked thread and its (bounded) in-memory logs.
    let router_tx = Router::new(0, router_cfg).spawn();
    let user = format!("ironbridge-{}", random_token());
    let password = random_token();
    let connections = ConnectionSettings {
        connection_timeout_ms: cfg.connect_timeout_ms.min(u16::MAX as u64) as u16,
        // The front end enforces the real limits; this only has to let them through.
        max_payload_size: cfg.max_packet_bytes() + 4096,
        max_inflight_count: 100,
        auth: Some(HashMap::from([(user.clone(), password.clone())])),
        external_auth: None,
        dynamic_filters: false,
    };
    let settings = |name: &str, listen| ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
    let addr = free_loopback()?;
    let servers = vec![
        spawn_server(
            Server::new(settings("internal-v5", addr), router_tx.clone(), V5),
            addr,
        )
        .await?,
    ];
    let links_tx = router_tx.clone();
    let links: LinkFactory = Box::new(move |client_id: &str| {
        LinkBuilder::new(client_id, links_tx.clone())
            .build()
            .map(|(tx, rx, _connack)| (tx, rx))
            .map_err(|e| e.to_string())
    });
    let local = match LinkBuilder::new(LOCAL_CLIENT_ID, router_tx).build() {
        Ok((tx, rx, _connack)) => (tx, rx),
        Err(e) => {
            servers.iter().for_each(|h| h.abort());
            return Err(MqttError::Router(format!("local link: {e}")));
        }
    };
    Ok(Internal {
        addr,
        user,
        password,
        servers,
        local,
        links,
    })
}
