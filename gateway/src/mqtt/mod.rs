//! Embedded MQTT endpoint: a front end that write-ahead-logs every publish into the buffer,
//! in front of an in-process rumqttd router that serves local subscribers.
//!
//! ```text
//! client ──TCP/TLS──► front end ──(append, wait durable)──► loopback ──► rumqttd router
//!   ▲                     │ CONNECT checked here (argon2id)               │ PUBACK/PUBREC,
//!   └─────────────────────┴──────────── bytes back unchanged ◄────────────┘ retained, wills
//! ```
//!
//! Why not a rumqttd local-link tap (see PUBACK.md): rumqttd acknowledges a publish when it
//! reaches its in-memory commit log, before any subscriber sees it, and a lagging subscriber
//! silently loses data when that bounded log rolls; the local link also loses the publisher's
//! QoS, retain flag and client id, and no subscriber can receive `$`-topics. In front of the
//! router none of that applies: nothing reaches rumqttd before it is durable, so every
//! acknowledgement the client sees comes after the append, and a slow disk slows publishers
//! (TCP backpressure) instead of dropping data.

mod auth;
mod clients;
mod codec;
mod config;
mod front;
mod router;
mod stats;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_buffer::{Log, Record};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, PingReq, Publish, PublishProperties};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinHandle;

pub(crate) use auth::DUMMY_PHC;
pub use auth::{hash_password, verify_password};
pub use clients::{ClientInfo, ClientRegistry};
pub use config::{MqttConfig, RouterTuning, TlsListenerConfig};
pub use stats::{MqttStats, MqttStatsSnapshot};

use crate::event::Event;

/// Everything that can stop the MQTT endpoint from starting or a local publish from landing.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS file {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("internal MQTT router: {0}")]
    Router(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("event encoding: {0}")]
    Encode(#[from] crate::event::EncodeError),
    #[error("buffer: {0}")]
    Buffer(#[from] edge_buffer::Error),
}

/// A running MQTT endpoint. Dropping it stops the listeners too, without waiting.
pub struct BrokerHandle {
    tcp_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stats: Arc<MqttStats>,
    clients: Arc<ClientRegistry>,
    log: Arc<Log>,
    shutdown: watch::Sender<bool>,
    accept_loops: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    local_tx: Mutex<LinkTx>,
    local_rx: LinkRx,
    links: router::LinkFactory,
}

/// A message delivered to an in-process subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// An in-process subscription on the embedded broker (see [`BrokerHandle::subscribe`]).
/// Delivery is the router's QoS 0: a subscriber that does not keep up is paused by the router
/// (bounded memory) and may miss messages, never blocks publishers.
pub struct Subscription {
    tx: LinkTx,
    rx: LinkRx,
}

impl Subscription {
    /// The next message; `None` once the router is gone.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            match self.rx.next().await {
                Ok(Some(rumqttd::Notification::Forward(f))) => {
                    return Some(Message {
                        topic: String::from_utf8_lossy(&f.publish.topic).into_owned(),
                        payload: f.publish.payload,
                        retain: f.publish.retain,
                    });
                }
                // The router paused this link because its queue filled: ask to be rescheduled.
                Ok(Some(rumqttd::Notification::Unschedule)) => {
                    if self.rx.wake().await.is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Adds a filter to this subscription.
    pub async fn add(&mut self, filter: &str) -> Result<(), MqttError> {
        subscribe_filter(&mut self.tx, filter).await
    }
}

async fn subscribe_filter(tx: &mut LinkTx, filter: &str) -> Result<(), MqttError> {
    use rumqttd::protocol::{Filter, QoS, RetainForwardRule, Subscribe};
    let subscribe = Subscribe {
        pkid: 0,
        filters: vec![Filter {
            path: filter.to_string(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: true,
            // Retained messages (e.g. a Sparkplug host's STATE) are delivered on subscribe.
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }],
    };
    tx.send(Packet::Subscribe(subscribe, None))
        .await
        .map(|_| ())
        .map_err(|e| MqttError::Router(format!("subscribe {filter}: {e}")))
}

async fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, MqttError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MqttError::Bind {
            field,
            addr,
            source,
        })
}

/// Starts the endpoint on the current tokio runtime: binds the listeners (an error, not a
/// panic, if a port is taken), starts the internal router, and begins accepting clients.
pub async fn start(config: MqttConfig, log: Arc<Log>) -> Result<BrokerHandle, MqttError> {
    config.validate()?;
    let tls = match &config.tls {
        Some(t) => Some((front::tls_acceptor(&t.cert, &t.key)?, t.listen)),
        None => None,
    };
    // Public ports first: the likeliest failure, and nothing has started yet.
    let tcp = bind("mqtt.listen", config.listen).await?;
    let tls = match tls {
        Some((acceptor, addr)) => Some((bind("mqtt.tls.listen", addr).await?, acceptor)),
        None => None,
    };
    let tcp_addr = tcp.local_addr().map_err(|source| MqttError::Bind {
        field: "mqtt.listen",
        addr: config.listen,
        source,
    })?;
    let tls_addr = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
    if config.users.is_empty() && !config.allow_anonymous {
        tracing::warn!(
            "mqtt.users is empty and mqtt.allow_anonymous is false: every MQTT client will be refused"
        );
    }
    let auth = auth::Authenticator::new(&config.users, config.allow_anonymous);
    let internal = router::start(&config).await?;
    let stats = Arc::new(MqttStats::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let clients = Arc::new(ClientRegistry::default());
    let front = Arc::new(front::Front {
        slots: Arc::new(Semaphore::new(config.max_connections)),
        cfg: config,
        auth,
        log: log.clone(),
        stats: stats.clone(),
        upstream: internal.addr,
        user: internal.user,
        password: internal.password,
        shutdown: shutdown_rx,
        clients: clients.clone(),
    });
    let mut accept_loops = vec![tokio::spawn(front.clone().accept_loop(tcp, None))];
    if let Some((listener, acceptor)) = tls {
        accept_loops.push(tokio::spawn(
            front.clone().accept_loop(listener, Some(acceptor)),
        ));
    }
    tracing::info!(%tcp_addr, ?tls_addr, "MQTT endpoint listening");
    let (local_tx, local_rx) = internal.local;
    Ok(BrokerHandle {
        tcp_addr,
        tls_addr,
        stats,
        clients,
        log,
        shutdown,
        accept_loops,
        servers: internal.servers,
        local_tx: Mutex::new(local_tx),
        local_rx,
        links: internal.links,
    })
}

impl BrokerHandle {
    /// Where the plain TCP listener is bound (the real port when configured with port 0).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// The connected clients.
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.clients.clone()
    }

    /// Publishes from inside the gateway (e.g. the Sparkplug edge node): appended to the buffer
    /// like a client publish, and once durable delivered to local MQTT subscribers (QoS 0 from
    /// the router; `qos` is recorded as given). Returns the buffer offsets.
    pub async fn publish(&self, event: &Event) -> Result<Range<u64>, MqttError> {
        let mut buf = Vec::new();
        event.encode(&mut buf)?;
        let ticket = front::append(
            &self.log,
            &self.stats,
            &[Record::new(front::now_ms(), &buf)],
        )
        .await?;
        let offsets = ticket.durable().await?;
        MqttStats::inc(&self.stats.publishes_appended, 1);
        let props =
            (event.content_type.is_some() || !event.user_properties.is_empty()).then(|| {
                PublishProperties {
                    content_type: event.content_type.clone(),
                    user_properties: event.user_properties.clone(),
                    ..Default::default()
                }
            });
        let publish = Publish::new(
            Bytes::from(event.topic.clone()),
            event.payload.clone(),
            event.retain,
        );
        self.local_tx
            .lock()
            .await
            .send(Packet::Publish(publish, props))
            .await
            .map_err(|e| MqttError::Router(format!("local publish: {e}")))?;
        Ok(offsets)
    }

    /// Subscribes an in-process component (e.g. the Sparkplug edge node listening for NCMD/DCMD)
    /// to `filters` on the embedded broker. `client_id` must be unique among local links.
    /// It sees what MQTT clients publish and what [`BrokerHandle::publish`] publishes, and
    /// retained messages matching a filter when it subscribes.
    pub async fn subscribe(
        &self,
        client_id: &str,
        filters: &[&str],
    ) -> Result<Subscription, MqttError> {
        let (mut tx, rx) = (self.links)(client_id)
            .map_err(|e| MqttError::Router(format!("local link {client_id}: {e}")))?;
        for f in filters {
            subscribe_filter(&mut tx, f).await?;
        }
        Ok(Subscription { tx, rx })
    }

    /// Stops accepting, closes client connections (waiting up to 5 s for them) and the
    /// internal listeners. rumqttd's router thread cannot be stopped and stays parked.
    /// What in-process components published before (the edge node's NDEATH) is delivered to
    /// the connected clients first, within about 2 s.
    pub async fn stop(mut self) {
        match tokio::time::timeout(Duration::from_secs(1), self.settle()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "MQTT router not settled before stop"),
            Err(_) => tracing::warn!("MQTT router not settled within 1 s before stop"),
        }
        let _ = self.shutdown.send(true);
        for h in self.accept_loops.drain(..) {
            let _ = h.await;
        }
        for h in self.servers.drain(..) {
            h.abort();
        }
        tracing::info!(tcp_addr = %self.tcp_addr, "MQTT endpoint stopped");
    }
}

impl BrokerHandle {
    /// Waits until the router has handed every publish sent on the local link to its
    /// subscribers' connections. [`BrokerHandle::publish`] returns once a packet is queued for
    /// the router thread, not when it was routed. The router handles a link's packets in order
    /// and finishes a scheduling pass (which moves routed data to the subscribers' connections)
    /// before it reads new events, so two PINGREQ round trips on the local link are a barrier.
    /// Each client connection then drains its own queue with a PINGREQ as it closes.
    async fn settle(&mut self) -> Result<(), MqttError> {
        let router = |e: rumqttd::local::LinkError| MqttError::Router(format!("local link: {e}"));
        for _ in 0..2 {
            self.local_tx
                .get_mut()
                .send(Packet::PingReq(PingReq))
                .await
                .map_err(router)?;
            // The local link subscribes to nothing and publishes at QoS 0: the only ack it
            // gets is the PINGRESP.
            loop {
                match self.local_rx.next().await.map_err(router)? {
                    Some(rumqttd::Notification::DeviceAck(_)) => break,
                    Some(rumqttd::Notification::Unschedule) => {
                        self.local_rx.wake().await.map_err(router)?
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for h in self.accept_loops.iter().chain(self.servers.iter()) {
            h.abort();
        }
    }
}
