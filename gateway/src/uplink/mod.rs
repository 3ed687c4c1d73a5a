//! Kafka uplink: reads the buffer, routes events to Kafka records, commits after acks=all.
//!
//! Wiring (the daemon's supervisor):
//!
//! ```no_run
//! # async fn demo(log: std::sync::Arc<edge_buffer::Log>, config: ironbridge::uplink::UplinkConfig) {
//! use std::sync::Arc;
//! use ironbridge::uplink::{self, UplinkStatus};
//! let status = Arc::new(UplinkStatus::new());
//! let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
//! let task = tokio::spawn(uplink::run(config, log, Arc::clone(&status), async move {
//!     let _ = stop_rx.wait_for(|stop| *stop).await;
//! }));
//! // … /metrics and /healthz render status.snapshot() …
//! let _ = stop_tx.send(true);
//! let _ = task.await;
//! # }
//! ```
//!
//! Delivery is at-least-once: the buffer cursor only moves past records Kafka acknowledged
//! (acks=all) or that were dead-lettered (counted, logged, in the status). Each record carries
//! `gateway_id` + `buffer_offset` headers so consumers can drop duplicates exactly. See
//! [`route`] for routing, keys, partitions, headers and the JSON envelope; [`config`] for the
//! `[kafka]` table.

pub mod commands;
pub mod config;
pub mod partitioner;
mod producer;
mod resume;
pub mod route;
pub mod sparkplug;
pub mod status;
pub(crate) mod tls;

use std::future::Future;
use std::sync::Arc;

use edge_buffer::Log;

pub use config::{
    CompressionCodec, ConfigError, RouteConfig, SaslConfig, SaslMechanism, TlsConfig, Unmatched,
    UplinkConfig, ValueFormat,
};
pub use status::{DeadLetter, ErrorInfo, RouteCounters, UplinkSnapshot, UplinkState, UplinkStatus};

/// Why the uplink stopped. Kafka being unreachable or refusing records is never one of them:
/// those are retried or dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("invalid uplink configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("uplink buffer error: {0}")]
    Buffer(#[from] edge_buffer::Error),
    #[error("uplink internal error: {0}")]
    Internal(String),
}

/// Runs the uplink until `shutdown` completes (or the log is closed), then commits the cursor
/// and returns.
///
/// With no `bootstrap_servers` it sets the state to disconnected ("not configured") and just
/// waits for `shutdown`: the gateway only buffers. On shutdown an in-flight produce may take up
/// to `shutdown_grace_ms` to finish; whatever was acknowledged by then is committed.
pub async fn run(
    config: UplinkConfig,
    log: Arc<Log>,
    status: Arc<UplinkStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UplinkError> {
    run_with_state(config, log, status, None, shutdown).await
}

/// [`run`], with the gateway's state store for the Sparkplug birth history of
/// `sparkplug_json` / `sparkplug_metrics` routes (kept in memory only without one).
pub async fn run_with_state(
    config: UplinkConfig,
    log: Arc<Log>,
    status: Arc<UplinkStatus>,
    state: Option<crate::state::StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UplinkError> {
    config.validate()?;
    status.attach(&config, &log);
    if !config.is_enabled() {
        status.set_state(UplinkState::Disconnected {
            reason: "not configured (no kafka.bootstrap_servers)".into(),
        });
        shutdown.await;
        return Ok(());
    }
    let tls = if config.tls.enabled {
        Some(tls::client_config(&config.tls)?)
    } else {
        None
    };
    let gateway_id = config.effective_gateway_id();
    let router = route::Router::with_state(&config, gateway_id.clone(), state.as_ref())?;
    tracing::info!(
        brokers = ?config.bootstrap_servers,
        gateway_id = %gateway_id,
        routes = config.routes.len(),
        "uplink starting"
    );
    let uplink = producer::Uplink::new(config, log, Arc::clone(&status), router, tls);
    let result = uplink.run(producer::Shutdown::new(shutdown)).await;
    status.set_state(UplinkState::Disconnected {
        reason: match &result {
            Ok(()) => "stopped".into(),
            Err(e) => e.to_string(),
        },
    });
    result
}

/// A one-shot "test connection" (web UI): connects to `config.bootstrap_servers` with its TLS
/// and SASL settings and lists the cluster's topics, all within `limit`. The error says what
/// failed in words.
pub async fn test_connection(
    config: &UplinkConfig,
    limit: std::time::Duration,
) -> Result<Vec<String>, String> {
    use rskafka::client::{ClientBuilder, Credentials, SaslConfig as Sasl};
    if config.bootstrap_servers.is_empty() {
        return Err("no bootstrap servers given (kafka.bootstrap_servers)".into());
    }
    let mut b = ClientBuilder::new(config.bootstrap_servers.clone())
        .client_id(config.client_id.as_str())
        .backoff_config(rskafka::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(1),
            base: 2.,
            deadline: Some(limit),
        });
    if config.tls.enabled {
        let tls = tls::client_config(&config.tls).map_err(|e| e.to_string())?;
        b = b.tls_config(tls);
    }
    if let Some(s) = &config.sasl {
        let c = Credentials::new(s.username.clone(), s.password.clone());
        b = b.sasl_config(match s.mechanism {
            SaslMechanism::Plain => Sasl::Plain(c),
            SaslMechanism::ScramSha256 => Sasl::ScramSha256(c),
            SaslMechanism::ScramSha512 => Sasl::ScramSha512(c),
        });
    }
    let work = async {
        let client = b
            .build()
            .await
            .map_err(|e| format!("connecting: {}", error_chain(&e)))?;
        let topics = client
            .list_topics()
            .await
            .map_err(|e| format!("listing topics: {}", error_chain(&e)))?;
        let mut names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {} within {} s (unreachable, filtered, or not Kafka)",
            config.bootstrap_servers.join(", "),
            limit.as_secs()
        )),
    }
}

/// An error with its sources, each once (`connecting: timed out: ...`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = e.source();
    }
    s
}
