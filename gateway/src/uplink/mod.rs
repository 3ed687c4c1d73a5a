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
pub mod route;
pub mod sparkplug;
pub mod status;
mod tls;

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
