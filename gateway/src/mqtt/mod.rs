//! The gateway's MQTT endpoint: the `ironbridge-broker` crate with the buffer as its durable
//! log. Every accepted PUBLISH and will becomes an [`Event`] record in the edge-buffer before
//! its PUBACK/PUBREC and before any subscriber sees it (PUBACK.md); in-process components
//! (Sparkplug node and ingest, Modbus readings, Kafka commands) publish and subscribe here
//! without sockets or client ids.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_buffer::{AppendTicket, Error as BufError, Log, Record};
use ironbridge_broker::{Accepted, Appending, Durable, PersistError, Persistence, QoS};

pub use ironbridge_broker::{
    BrokerSizes, ClientInfo, ClientRegistry, DUMMY_PHC, MqttConfig, MqttStats, MqttStatsSnapshot,
    TlsListenerConfig, UserCounters, hash_password, verify_password,
};

use crate::clock::now_ms;
use crate::event::Event;

/// Everything that can stop the MQTT endpoint from starting or a local publish from landing.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error(transparent)]
    Start(#[from] ironbridge_broker::BrokerError),
    #[error("event encoding: {0}")]
    Encode(#[from] crate::event::EncodeError),
    #[error("buffer: {0}")]
    Buffer(#[from] edge_buffer::Error),
    /// An in-process subscription ended.
    #[error("internal MQTT broker: {0}")]
    Router(String),
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

/// The broker's durable log: each message as an [`Event`] record in the buffer.
struct BufferPersistence {
    log: Arc<Log>,
    stats: Arc<MqttStats>,
}

fn event_of(a: &Accepted<'_>) -> Event {
    let m = a.message;
    Event {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos as u8,
        retain: m.retain,
        client_id: (!a.client_id.is_empty()).then(|| a.client_id.to_string()),
        content_type: m.content_type.clone(),
        user_properties: m.user_properties.clone(),
    }
}

impl Persistence for BufferPersistence {
    fn append<'a>(&'a self, batch: &'a [Accepted<'a>]) -> Appending<'a> {
        Box::pin(async move {
            let mut encoded = Vec::new();
            let mut spans = Vec::with_capacity(batch.len());
            for a in batch {
                let start = encoded.len();
                event_of(a)
                    .encode(&mut encoded)
                    .map_err(|e| PersistError(e.to_string()))?;
                spans.push((start, encoded.len()));
            }
            let ts = now_ms();
            let records: Vec<Record<'_>> = spans
                .iter()
                .map(|&(a, b)| Record::new(ts, &encoded[a..b]))
                .collect();
            let ticket = append(&self.log, &self.stats, &records)
                .await
                .map_err(|e| PersistError(e.to_string()))?;
            Ok(Box::pin(async move {
                ticket
                    .durable()
                    .await
                    .map(|_| ())
                    .map_err(|e| PersistError(e.to_string()))
            }) as Durable)
        })
    }
}

/// A running MQTT endpoint. Dropping it stops the listeners too, without waiting.
pub struct BrokerHandle {
    inner: ironbridge_broker::BrokerHandle,
    log: Arc<Log>,
    stats: Arc<MqttStats>,
}

/// A message delivered to an in-process subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// The network client that published it; `None` for in-process publishes.
    pub publisher: Option<Arc<ironbridge_broker::Publisher>>,
}

/// An in-process subscription on the embedded broker (see [`BrokerHandle::subscribe`]).
/// Delivery is QoS 0 into a bounded queue: a subscriber that does not keep up misses messages
/// (counted), never blocks publishers.
pub struct Subscription(ironbridge_broker::Subscription);

impl Subscription {
    /// The next message; `None` once the broker is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.0.next().await.map(|m| Message {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            retain: m.retain,
            publisher: m.publisher.clone(),
        })
    }

    /// Adds a filter to this subscription.
    pub fn add(&mut self, filter: &str) -> Result<(), MqttError> {
        Ok(self.0.add(filter)?)
    }
}

/// Starts the endpoint on the current tokio runtime: binds the listeners (an error, not a
/// panic, if a port is taken) and begins accepting clients.
pub async fn start(config: MqttConfig, log: Arc<Log>) -> Result<BrokerHandle, MqttError> {
    let stats = Arc::new(MqttStats::default());
    let persistence = Arc::new(BufferPersistence {
        log: log.clone(),
        stats: stats.clone(),
    });
    let inner = ironbridge_broker::start(config, persistence, stats.clone()).await?;
    Ok(BrokerHandle { inner, log, stats })
}

impl BrokerHandle {
    /// Where the plain TCP listener is bound (the real port when configured with port 0).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.inner.tcp_addr()
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_addr()
    }

    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// The connected clients.
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.inner.clients()
    }

    /// The failed-login throttle, shared with the web's logins.
    pub fn login_throttle(&self) -> ironbridge_broker::throttle::LoginThrottle {
        self.inner.login_throttle()
    }

    /// Sessions, subscriptions, retained and queued messages held now.
    pub fn sizes(&self) -> BrokerSizes {
        self.inner.sizes()
    }

    /// Publishes from inside the gateway (e.g. the Sparkplug edge node): appended to the buffer
    /// like a client publish, and once durable delivered to subscribers at the event's QoS.
    /// Returns the buffer offsets.
    pub async fn publish(&self, event: &Event) -> Result<Range<u64>, MqttError> {
        let offsets = self.append(event).await?;
        let mut m = ironbridge_broker::Message::new(
            event.topic.clone(),
            event.payload.clone(),
            QoS::from_u8(event.qos).unwrap_or(QoS::AtMostOnce),
            event.retain,
        );
        m.content_type = event.content_type.clone();
        m.user_properties = event.user_properties.clone();
        self.inner.deliver(m);
        Ok(offsets)
    }

    /// Appends an event from inside the gateway to the buffer (durably), for the uplink only:
    /// no MQTT subscriber sees it (e.g. the audit trail's forwarded records).
    pub async fn append(&self, event: &Event) -> Result<Range<u64>, MqttError> {
        let mut buf = Vec::new();
        event.encode(&mut buf)?;
        let ticket = append(&self.log, &self.stats, &[Record::new(now_ms(), &buf)]).await?;
        let offsets = ticket.durable().await?;
        MqttStats::inc(&self.stats.publishes_appended, 1);
        Ok(offsets)
    }

    /// Subscribes an in-process component (e.g. the Sparkplug edge node listening for
    /// NCMD/DCMD) to `filters`. `name` is for logs only: in-process subscribers have no client
    /// id a network client could take. It sees what MQTT clients publish and what
    /// [`BrokerHandle::publish`] publishes, and retained messages matching a filter when it
    /// subscribes.
    pub async fn subscribe(&self, name: &str, filters: &[&str]) -> Result<Subscription, MqttError> {
        tracing::debug!(subscriber = name, ?filters, "in-process MQTT subscription");
        Ok(Subscription(self.inner.subscribe(filters)?))
    }

    /// Stops accepting, delivers what in-process components published before (the edge
    /// node's NDEATH) to connected clients and closes their connections (waiting up to 5 s).
    pub async fn stop(self) {
        self.inner.stop().await
    }
}
