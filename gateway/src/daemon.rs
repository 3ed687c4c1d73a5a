//! The daemon: opens the buffer, starts the MQTT endpoint, the uplink, the web port and (in
//! demo mode) the simulated Modbus device, supervises them, and shuts down in bounded time.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use edge_buffer::Log;
use tokio::sync::watch;

use crate::config::Config;
use crate::notify::Notifier;
use crate::state::StateStore;
use crate::status::{ComponentState, GatewayStatus};
use crate::uplink::UplinkStatus;
use crate::{http, modbus, mqtt, uplink};

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs a component, restarting it with exponential backoff (1 s doubling to 60 s, reset after a
/// minute of good running) until `stop`. A panic counts as a failure, not the end of the process.
pub async fn supervise<F, Fut, E>(
    name: &'static str,
    status: GatewayStatus,
    stop: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut attempt: u32 = 0;
    loop {
        status.set_component(name, ComponentState::Running);
        let started = Instant::now();
        let outcome = tokio::spawn(make()).await;
        if *stop.borrow() {
            status.set_component(name, ComponentState::Stopped);
            return;
        }
        let reason = match outcome {
            Ok(Ok(())) => "exited unexpectedly".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) if e.is_panic() => "panicked".to_string(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        attempt = attempt.saturating_add(1);
        let delay = Duration::from_secs(1u64 << (attempt - 1).min(6)).min(Duration::from_secs(60));
        tracing::error!(component = name, %reason, retry_in_s = delay.as_secs(), "component failed; restarting");
        status.set_component(
            name,
            ComponentState::Restarting {
                reason,
                attempt,
                retry_in_ms: delay.as_millis() as u64,
            },
        );
        let mut s = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = s.wait_for(|s| *s) => {
                status.set_component(name, ComponentState::Stopped);
                return;
            }
        }
    }
}

/// How the daemon was asked to stop.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Runs the gateway until SIGTERM/SIGINT or a fatal buffer failure.
pub async fn run(mut config: Config, demo_device: bool) -> anyhow::Result<()> {
    // The demo's simulated machine is a real Modbus TCP server on loopback, polled like any PLC.
    let demo = if demo_device {
        let d = ironbridge_adapters::modbus::sim::demo::start("demo", ([127, 0, 0, 1], 0).into())
            .await
            .context("starting the demo Modbus device")?;
        tracing::info!(addr = %d.server.addr(), "demo Modbus device listening");
        config.modbus.devices.push(d.config.clone());
        Some(d)
    } else {
        None
    };
    let devices = config.modbus.validate().map_err(|issues| {
        let text: Vec<String> = issues
            .iter()
            .map(|i| format!("modbus.{}: {}", i.field, i.message))
            .collect();
        anyhow::anyhow!("invalid Modbus configuration: {}", text.join("; "))
    })?;
    let gateway_id = config.gateway_id();
    let buffer_dir = config.buffer_dir();
    let opts = config.buffer.options();
    let dir = buffer_dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, opts))
        .await
        .context("buffer recovery task")?
        .with_context(|| format!("opening the buffer at {}", buffer_dir.display()))?;
    let log = Arc::new(log);
    let s = log.stats();
    tracing::info!(
        dir = %buffer_dir.display(),
        records = s.records(),
        bytes = s.bytes_on_disk,
        corrupt = s.corrupt_records,
        truncated_bytes = s.truncated_bytes,
        "buffer open"
    );

    // Small keyed state (Sparkplug bdSeq and births, web users and sessions, command offsets).
    // One instance per process: sled locks its directory.
    let state_dir = config.gateway.state_dir.join("state");
    let state = {
        let dir = state_dir.clone();
        tokio::task::spawn_blocking(move || StateStore::open(&dir))
            .await
            .context("state store task")?
            .with_context(|| format!("opening the state store at {}", state_dir.display()))?
    };

    let broker = mqtt::start(config.mqtt.clone(), log.clone())
        .await
        .context("starting the MQTT endpoint")?;
    let uplink_status = Arc::new(UplinkStatus::new());
    let status = GatewayStatus::new(
        gateway_id.clone(),
        log.clone(),
        broker.stats(),
        uplink_status.clone(),
    );
    let broker = Arc::new(broker);
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("web.listen: cannot listen on {}", config.web.listen))?;
    tracing::info!(addr = %config.web.listen, "web port listening (/metrics, /healthz, /api/status)");
    let web = tokio::spawn(
        axum::serve(listener, http::router(status.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    let mut kafka = config.kafka.clone();
    if kafka.gateway_id.is_empty() {
        kafka.gateway_id = gateway_id.clone();
    }
    let uplink_task = {
        let (log, st, stop) = (log.clone(), uplink_status.clone(), stop_rx.clone());
        tokio::spawn(supervise("uplink", status.clone(), stop_rx.clone(), {
            let state = state.clone();
            move || {
                uplink::run_with_state(
                    kafka.clone(),
                    log.clone(),
                    st.clone(),
                    Some(state.clone()),
                    stopped(stop.clone()),
                )
            }
        }))
    };
    let modbus_hub = modbus::ModbusHub::new(status.modbus_health());
    let modbus_task = (!devices.is_empty()).then(|| {
        let (broker, stop, hub) = (broker.clone(), stop_rx.clone(), modbus_hub.clone());
        tokio::spawn(supervise(
            "modbus",
            status.clone(),
            stop_rx.clone(),
            move || {
                modbus::run(
                    devices.clone(),
                    hub.clone(),
                    Some(broker.clone()),
                    stopped(stop.clone()),
                )
            },
        ))
    });
    // sp-data: Sparkplug ingest of third-party edge nodes on the embedded broker.
    let sparkplug_ingest = if config.sparkplug.ingest.enabled {
        let own_node = if config.sparkplug.edge_node_id.is_empty() {
            gateway_id.clone()
        } else {
            config.sparkplug.edge_node_id.clone()
        };
        let ingest_status = crate::sparkplug::ingest::IngestStatus::new();
        status.set_sparkplug_ingest(ingest_status.clone());
        let ingest = crate::sparkplug::ingest::Ingest::new(
            config.sparkplug.ingest.clone(),
            (config.sparkplug.group_id.clone(), own_node),
            Some(&state),
            ingest_status,
        )
        .context("starting the Sparkplug ingest")?;
        let ingest = Arc::new(tokio::sync::Mutex::new(ingest));
        let (i, broker, stop) = (ingest.clone(), broker.clone(), stop_rx.clone());
        let task = tokio::spawn(supervise(
            "sparkplug_ingest",
            status.clone(),
            stop_rx.clone(),
            move || crate::sparkplug::ingest::run(i.clone(), broker.clone(), stopped(stop.clone())),
        ));
        Some((ingest, task))
    } else {
        None
    };
    // sp-data: commands from Kafka → DCMD/NCMD on the local broker; results to Kafka.
    // The one CommandAudit shared with the edge node (sp-node) that executes the commands.
    let command_audit = Arc::new(crate::sparkplug::audit::CommandAudit::new(
        crate::sparkplug::audit::DEFAULT_CAPACITY,
    ));
    let commands_task = (config.kafka.is_enabled()
        && !config.sparkplug.commands.kafka_topic.is_empty())
    .then(|| {
        let edge_node_id = if config.sparkplug.edge_node_id.is_empty() {
            gateway_id.clone()
        } else {
            config.sparkplug.edge_node_id.clone()
        };
        let (kafka, sp, gw) = (
            config.kafka.clone(),
            config.sparkplug.clone(),
            gateway_id.clone(),
        );
        let (broker, audit, state, stop) = (
            broker.clone(),
            command_audit.clone(),
            state.clone(),
            stop_rx.clone(),
        );
        let ingest = sparkplug_ingest.as_ref().map(|(i, _)| i.clone());
        tokio::spawn(supervise(
            "sparkplug_commands",
            status.clone(),
            stop_rx.clone(),
            move || {
                uplink::commands::run(
                    kafka.clone(),
                    uplink::commands::Context {
                        sparkplug: sp.clone(),
                        edge_node_id: edge_node_id.clone(),
                        gateway_id: gw.clone(),
                        broker: broker.clone(),
                        audit: audit.clone(),
                        ingest: ingest.clone(),
                        state: state.clone(),
                    },
                    stopped(stop.clone()),
                )
            },
        ))
    });
    status.set_component("mqtt", ComponentState::Running);
    status.set_component("web", ComponentState::Running);
    tracing::info!(%gateway_id, mqtt = %broker.tcp_addr(), "ironbridge running");

    let mut notifier = Notifier::new();
    notifier.ready(&status.summary_line());

    // Sample rates, feed the watchdog while the pipeline works, and watch for a failed buffer,
    // which only a reopen (a restart) can cure.
    let mut tick = tokio::time::interval(notifier.tick_interval());
    let fatal: Option<String> = tokio::select! {
        sig = shutdown_signal() => {
            tracing::info!(signal = sig, "shutting down");
            None
        }
        failure = async {
            loop {
                tick.tick().await;
                status.sample_rates();
                let stats = log.stats();
                if let Some(f) = &stats.failed {
                    return f.clone();
                }
                if let Some(why) = notifier.health_tick(&stats, &status.summary_line()) {
                    tracing::error!(reason = %why, "pipeline stuck; watchdog pings withheld");
                }
            }
        } => {
            tracing::error!(reason = %failure, "buffer failed; exiting so the service manager restarts and recovers it");
            Some(failure)
        }
    };
    notifier.stopping();

    // Stop accepting, let in-flight work finish, sync the buffer — all within a bound.
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(config.gateway.shutdown_timeout_ms);
    let orderly = async {
        if let Some(t) = modbus_task {
            let _ = t.await;
        }
        if let Some((_, t)) = sparkplug_ingest {
            let _ = t.await;
        }
        if let Some(t) = commands_task {
            let _ = t.await;
        }
        if let Some(d) = demo {
            d.shutdown().await;
        }
        match Arc::try_unwrap(broker) {
            Ok(b) => b.stop().await,
            Err(_) => tracing::warn!("MQTT endpoint still referenced at shutdown; dropping it"),
        }
        let _ = uplink_task.await;
        let _ = web.await;
    };
    if tokio::time::timeout(grace, orderly).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown took too long; syncing and exiting"
        );
    }
    if let Err(e) = state.flush() {
        tracing::error!(error = %e, "state store flush failed");
    }
    let sync = tokio::task::spawn_blocking(move || log.sync()).await;
    match sync {
        Ok(Ok(())) => tracing::info!("buffer synced; bye"),
        Ok(Err(e)) => tracing::error!(error = %e, "final buffer sync failed"),
        Err(e) => tracing::error!(error = %e, "final buffer sync task failed"),
    }
    match fatal {
        Some(f) => anyhow::bail!("buffer failed: {f}"),
        None => Ok(()),
    }
}
