//! Ironbridge's embedded MQTT broker: MQTT 3.1.1 and 5.0 on the same TCP and TLS listeners.
//!
//! Contract (design and the figures behind it: docs/decisions/0001-mqtt-broker.md):
//! - **Accepted means durable.** Every PUBLISH (and will) is handed to the [`Persistence`] hook
//!   first; its PUBACK/PUBREC and its delivery to subscribers wait until the hook says it is
//!   durable. One connection per client, no proxy, no protocol translation.
//! - **Checked input.** Every byte from the network goes through [`codec`] (malformed packets
//!   and protocol errors per the specifications, each with its reason code) and [`topic`]
//!   (topic names and filters) before anything else sees it.
//! - **Authorized.** Logins are argon2id checks behind a bounded queue and a throttle
//!   ([`auth`]); publishes and subscriptions obey the [`acl`] rules, with Sparkplug command and
//!   host-state topics and `$`-topics closed unless granted.
//! - **Bounded.** Sockets (total, per address, before CONNECT), CONNECT size and deadline,
//!   password checks, retained messages, subscriptions, topic aliases, in-flight and queued
//!   messages and sessions all have a configured limit ([`MqttConfig`]); reaching one refuses
//!   that client with its reason code and is counted in [`MqttStats`].
//! - **In-process clients** ([`BrokerHandle::subscribe`], [`BrokerHandle::deliver`]) use no
//!   socket and no client id, so no network client can impersonate or displace them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ironbridge_broker::BrokerError> {
//! use std::sync::Arc;
//! use ironbridge_broker::{MqttConfig, MqttStats, NoPersistence, start};
//! let config = MqttConfig { allow_anonymous: true, listen: ([127, 0, 0, 1], 0).into(), ..MqttConfig::default() };
//! let broker = start(config, Arc::new(NoPersistence), Arc::new(MqttStats::default())).await?;
//! let mut sub = broker.subscribe(&["plant/#"])?;
//! let msg = sub.next().await; // a network client's publish to plant/...
//! # let _ = msg; Ok(()) }
//! ```

pub mod acl;
pub mod auth;
mod broker;
mod clients;
pub mod codec;
mod config;
mod connection;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hook;
mod listener;
mod message;
pub mod retained;
mod session;
mod stats;
pub mod throttle;
pub mod topic;
pub mod tree;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use auth::{DUMMY_PHC, hash_password, verify_password};
pub use clients::{ClientInfo, ClientRegistry};
pub use codec::QoS;
pub use config::{MqttConfig, PACKET_OVERHEAD, TlsListenerConfig};
pub use hook::{Accepted, Appending, Durable, NoPersistence, PersistError, Persistence};
pub use message::{Message, Publisher, SessionKey};
pub use stats::{MqttStats, MqttStatsSnapshot, UserCounters};

use broker::Broker;
use session::Session;

/// Why the broker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid mqtt.{field}: {reason}")]
    Config { field: String, reason: String },
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS file {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("invalid topic filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A running broker. Dropping it stops the listeners too, without waiting.
pub struct BrokerHandle {
    broker: Arc<Broker>,
    tcp_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the listeners (an error, not a panic, if a port is taken) and starts serving.
/// `stats` receives the broker's counters (shared with the persistence hook's own).
pub async fn start(
    config: MqttConfig,
    persistence: Arc<dyn Persistence>,
    stats: Arc<MqttStats>,
) -> Result<BrokerHandle, BrokerError> {
    if let Some((field, reason)) = config.validate().into_iter().next() {
        return Err(BrokerError::Config { field, reason });
    }
    let acl = acl::Acl::new(&config.acl).map_err(|errors| {
        let (i, field, reason) = errors.into_iter().next().unwrap_or_default();
        BrokerError::Config {
            field: format!("acl[{i}].{field}"),
            reason,
        }
    })?;
    let tls = match &config.tls {
        Some(t) => Some((tls_acceptor(&t.cert, &t.key)?, t.listen)),
        None => None,
    };
    let tcp = bind("mqtt.listen", config.listen).await?;
    let tls = match tls {
        Some((acceptor, addr)) => Some((bind("mqtt.tls.listen", addr).await?, acceptor)),
        None => None,
    };
    let tcp_addr = tcp.local_addr().map_err(|source| BrokerError::Bind {
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
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let broker = Broker::new(config, persistence, acl, stats);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(listener::accept_loop(
        broker.clone(),
        tcp,
        None,
        slots.clone(),
        shutdown_rx.clone(),
    ))];
    if let Some((l, acceptor)) = tls {
        tasks.push(tokio::spawn(listener::accept_loop(
            broker.clone(),
            l,
            Some(acceptor),
            slots,
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(housekeeping(broker.clone(), shutdown_rx)));
    tracing::info!(%tcp_addr, ?tls_addr, "MQTT broker listening");
    Ok(BrokerHandle {
        broker,
        tcp_addr,
        tls_addr,
        shutdown,
        tasks,
    })
}

/// Session expiry and retained-message expiry, once a second.
async fn housekeeping(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = listener::stopped(&mut shutdown) => return,
            _ = tick.tick() => {
                // Wills first: a will is due at the latest when its session expires.
                for (will, client_id) in broker.due_wills(Instant::now()) {
                    if broker.publish_durably(will, &client_id).await {
                        MqttStats::inc(&broker.stats.wills_recorded, 1);
                    }
                }
                let n = broker.expire_sessions(Instant::now());
                if n > 0 {
                    tracing::debug!(sessions = n, "MQTT sessions expired");
                }
                broker.publish_sizes();
            }
        }
    }
}

async fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind {
            field,
            addr,
            source,
        })
}

/// A TLS acceptor from a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, BrokerError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |path: &Path, reason: String| BrokerError::Tls {
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

/// Sizes of the broker's state, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerSizes {
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained_messages: usize,
    pub retained_bytes: usize,
    pub queued_bytes: usize,
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
        self.broker.stats.clone()
    }

    /// The connected clients.
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.broker.clients.clone()
    }

    /// The failed-login throttle of MQTT logins, for other logins of the same device (the web
    /// UI) to share one policy and one per-address budget.
    pub fn login_throttle(&self) -> throttle::LoginThrottle {
        self.broker.auth.throttle()
    }

    pub fn sizes(&self) -> BrokerSizes {
        let (retained_messages, retained_bytes) = self.broker.retained();
        BrokerSizes {
            sessions: self.broker.session_count(),
            subscriptions: self.broker.subscription_count(),
            retained_messages,
            retained_bytes,
            queued_bytes: self.broker.queued_bytes(),
        }
    }

    /// Delivers a message the caller has already made durable (an in-process publish) to
    /// subscribers, and to the retained store when its retain flag is set.
    pub fn deliver(&self, message: Message) {
        self.broker.route(&[Arc::new(message)]);
    }

    /// An in-process subscription to `filters` (plain or `$share/...`). It receives what
    /// network clients publish and what [`BrokerHandle::deliver`] delivers (not its own
    /// deliveries' origin filtering: in-process messages have no origin), retained messages
    /// matching a filter when it subscribes, at QoS 0 into a bounded queue
    /// (`mqtt.max_queued_messages`): a subscriber that does not keep up loses messages
    /// (counted in `messages_dropped`) and never blocks publishers.
    pub fn subscribe(&self, filters: &[&str]) -> Result<Subscription, BrokerError> {
        let session = self.broker.local_session();
        let mut sub = Subscription {
            broker: self.broker.clone(),
            session,
        };
        for f in filters {
            sub.add(f)?;
        }
        Ok(sub)
    }

    /// Stops accepting, delivers what is queued, ends every connection with "server shutting
    /// down" and waits up to 5 s for them.
    pub async fn stop(mut self) {
        self.broker.kick_all(codec::reason::SERVER_SHUTTING_DOWN);
        let _ = self.shutdown.send(true);
        for h in self.tasks.drain(..) {
            let _ = h.await;
        }
        tracing::info!(tcp_addr = %self.tcp_addr, "MQTT broker stopped");
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for h in &self.tasks {
            h.abort();
        }
    }
}

/// An in-process subscription (see [`BrokerHandle::subscribe`]); unsubscribes when dropped.
pub struct Subscription {
    broker: Arc<Broker>,
    session: Arc<Session>,
}

impl Subscription {
    /// The next message. Never ends while the broker lives.
    pub async fn next(&mut self) -> Option<Arc<Message>> {
        loop {
            let ready = self.session.ready.notified();
            if let Some(q) = {
                let mut s = self.session.lock();
                Session::pop(&mut s, self.session.total_queued())
            } {
                MqttStats::inc(&self.broker.stats.messages_delivered, 1);
                return Some(q.msg);
            }
            ready.await;
        }
    }

    /// Adds a filter.
    pub fn add(&mut self, filter: &str) -> Result<(), BrokerError> {
        let opts = codec::SubscriptionOptions {
            qos: QoS::AtMostOnce,
            ..Default::default()
        };
        let code = self.broker.subscribe(&self.session, filter, opts, None);
        if code >= 0x80 {
            return Err(BrokerError::Filter {
                filter: filter.to_string(),
                reason: format!("refused with reason code {code:#04x}"),
            });
        }
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.drop_local_session(&self.session);
    }
}
