//! The daemon: opens the buffer, starts the MQTT endpoint, the uplink, the Modbus poller, the
//! web port (HTTPS + redirect) and (in demo mode) the simulated Modbus device, supervises them,
//! applies configuration changes made through the web API, and shuts down in bounded time.
//!
//! Live configuration: the current configuration is in a [`ConfigStore`]'s `watch` channel.
//! Components that can take a change without a restart run under [`supervise_config`], which
//! stops the component gracefully when *its* part of the configuration changes and starts it
//! again with the new one. For the uplink that is safe by construction: it commits the buffer
//! cursor only after Kafka acknowledged, the old instance has finished before the new one
//! starts, and the new one resumes at the cursor — nothing is lost or reordered (a record in
//! flight may be sent twice, as after any reconnect; `gateway_id` + `buffer_offset` identify it).
//! Sections that need a restart (listeners, buffer, state directory) are reported by
//! `GET /api/system` as `restart_required`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use edge_buffer::Log;
use tokio::sync::watch;

use crate::config::Config;
use crate::config_store::ConfigStore;
use crate::notify::Notifier;
use crate::state::StateStore;
use crate::status::{ComponentState, GatewayStatus};
use crate::uplink::UplinkStatus;
use crate::web::{self, WebContext};
use crate::{modbus, mqtt, uplink};

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

/// A stop signal for one run of a component: the daemon's stop, or a change of its config.
pub type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn until_stop_or_change<K: PartialEq + Send + Sync>(
    stop: watch::Receiver<bool>,
    mut config: watch::Receiver<Arc<Config>>,
    key: fn(&Config) -> K,
    base: K,
) {
    tokio::select! {
        _ = stopped(stop) => {}
        _ = async {
            loop {
                if config.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if key(&config.borrow_and_update()) != base {
                    return;
                }
            }
        } => {}
    }
}

/// Like [`supervise`], for a component whose configuration can change at run time: `make` gets
/// the current configuration and a stop future that also fires when `key(config)` changes; the
/// component then returns and is started again at once with the new configuration (not counted
/// as a failure). A failed component waiting for its retry is started at once on a change too.
pub async fn supervise_config<K, F, Fut, E>(
    name: &'static str,
    status: GatewayStatus,
    stop: watch::Receiver<bool>,
    config: watch::Receiver<Arc<Config>>,
    key: fn(&Config) -> K,
    mut make: F,
) where
    K: PartialEq + Send + Sync + 'static,
    F: FnMut(Arc<Config>, StopFuture) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut attempt: u32 = 0;
    loop {
        let cfg = config.borrow().clone();
        status.set_component(name, ComponentState::Running);
        let started = Instant::now();
        let stop_run: StopFuture = Box::pin(until_stop_or_change(
            stop.clone(),
            config.clone(),
            key,
            key(&cfg),
        ));
        let outcome = tokio::spawn(make(cfg.clone(), stop_run)).await;
        if *stop.borrow() {
            status.set_component(name, ComponentState::Stopped);
            return;
        }
        let reason = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) if e.is_panic() => Some("panicked".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if key(&config.borrow()) != key(&cfg) {
            tracing::info!(component = name, previous_error = ?reason, "configuration changed; restarting the component with it");
            attempt = 0;
            continue;
        }
        let reason = reason.unwrap_or_else(|| "exited unexpectedly".to_string());
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
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = until_stop_or_change(stop.clone(), config.clone(), key, key(&cfg)) => {
                if *stop.borrow() {
                    status.set_component(name, ComponentState::Stopped);
                    return;
                }
                attempt = 0;
            }
        }
    }
}

/// How the daemon was started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file (changes made through the web API are written there).
    pub config_path: Option<PathBuf>,
    /// Start the demo's simulated Modbus machine (a run-time-only device).
    pub demo_device: bool,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: stopped.
    Stopped,
    /// `POST /api/system/restart`: everything was shut down in order; start again.
    Restart,
}

fn uplink_key(c: &Config) -> (uplink::UplinkConfig, String) {
    (c.kafka.clone(), c.gateway.id.clone())
}

fn modbus_key(
    c: &Config,
) -> (
    ironbridge_adapters::modbus::ModbusConfig,
    modbus::JsonTopics,
) {
    (c.modbus.clone(), json_topics(c))
}

/// With the Sparkplug edge node on, the JSON topics only if asked for (or while it waits for
/// its primary host).
fn json_topics(c: &Config) -> modbus::JsonTopics {
    if !c.sparkplug.enabled || c.sparkplug.json_topics {
        modbus::JsonTopics::Always
    } else {
        modbus::JsonTopics::WhileSparkplugWaits
    }
}

fn sparkplug_node_key(c: &Config) -> (crate::sparkplug::SparkplugConfig, String, bool) {
    (
        c.sparkplug.clone(),
        c.edge_node_id(),
        !c.modbus.devices.is_empty(),
    )
}

/// Runs the gateway until SIGTERM/SIGINT, a restart request or a fatal buffer failure.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<Exit> {
    // The demo's simulated machine is a real Modbus TCP server on loopback, polled like any PLC.
    let mut runtime_devices = Vec::new();
    let demo = if opts.demo_device {
        let d = ironbridge_adapters::modbus::sim::demo::start("demo", ([127, 0, 0, 1], 0).into())
            .await
            .context("starting the demo Modbus device")?;
        tracing::info!(addr = %d.server.addr(), "demo Modbus device listening");
        runtime_devices.push(d.config.clone());
        Some(d)
    } else {
        None
    };
    {
        let mut all = config.modbus.clone();
        all.devices.extend(runtime_devices.iter().cloned());
        all.validate().map_err(|issues| {
            let text: Vec<String> = issues
                .iter()
                .map(|i| format!("modbus.{}: {}", i.field, i.message))
                .collect();
            anyhow::anyhow!("invalid Modbus configuration: {}", text.join("; "))
        })?;
    }
    let gateway_id = config.gateway_id();
    let buffer_dir = config.buffer_dir();
    let opts_buf = config.buffer.options();
    let dir = buffer_dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, opts_buf))
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

    // The web's certificate.
    let tls = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || web::tls::WebTls::load_or_generate(&c))
            .await
            .context("web certificate task")?
            .context("web TLS certificate")?
    };
    let tls = Arc::new(tls);
    let web_cfg = config.web.clone();
    let web_audit_cfg = config.audit.clone();
    let state_dir_root = config.gateway.state_dir.clone();
    let store = ConfigStore::new(config, opts.config_path.clone());
    let audit = {
        let (dir, c) = (state_dir_root.join("audit"), web_audit_cfg.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::audit::AuditTrail::open(&dir, c.max_bytes.0, c.files)
            })
            .await
            .context("audit trail task")?
            .context("opening the audit trail")?,
        )
    };
    // Before the first record, so that the forwarding starts with daemon_start.
    if !web_audit_cfg.forward_topic.is_empty()
        && let Some(rx) = audit.forward_records(crate::audit::forward::QUEUE)
    {
        tokio::spawn(crate::audit::forward::run(
            rx,
            broker.clone(),
            web_audit_cfg.forward_topic.clone(),
        ));
    }
    audit
        .record(
            crate::audit::Event::new(crate::audit::Source::Daemon, "-", "daemon_start")
                .detail(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
        )
        .await;
    let auth = Arc::new(
        web::auth::Auth::open(
            &state,
            store.clone(),
            broker.login_throttle(),
            audit.clone(),
        )
        .context("web users")?,
    );
    let hub = modbus::ModbusHub::new(status.modbus_health());
    let (restart_tx, mut restart_rx) = watch::channel(false);
    let web_stats = Arc::new(web::listener::WebStats::default());
    let ctx = Arc::new(WebContext {
        status: status.clone(),
        hub: hub.clone(),
        clients: broker.clients(),
        config: store.clone(),
        auth: auth.clone(),
        tls: tls.clone(),
        logs: web::logs::LogRing::global(),
        runtime_devices: runtime_devices.clone(),
        restart: restart_tx.clone(),
        started: Instant::now(),
        web_stats: web_stats.clone(),
        audit: audit.clone(),
    });

    let listener = tokio::net::TcpListener::bind(web_cfg.listen)
        .await
        .with_context(|| format!("web.listen: cannot listen on {}", web_cfg.listen))?;
    let https_addr = listener.local_addr().unwrap_or(web_cfg.listen);
    let acceptor = tls.acceptor().context("web TLS configuration")?;
    let limits = web::listener::ConnLimits {
        max_connections: web_cfg.max_connections,
        max_per_address: web_cfg.max_connections_per_address,
    };
    let web_task = tokio::spawn(web::listener::serve(
        listener,
        Some(acceptor),
        web::router(ctx.clone()),
        limits,
        web_stats.clone(),
        stop_rx.clone(),
    ));
    tracing::info!(addr = %https_addr, fingerprint_sha256 = %tls.fingerprint(), "web UI listening: https://{https_addr}/");
    let redirect_task = if web_cfg.http_redirect {
        let l = tokio::net::TcpListener::bind(web_cfg.http_listen)
            .await
            .with_context(|| {
                format!(
                    "web.http_listen: cannot listen on {} (set web.http_redirect = false to turn the redirect off)",
                    web_cfg.http_listen
                )
            })?;
        tracing::info!(addr = %web_cfg.http_listen, "HTTP listener redirects to HTTPS");
        Some(tokio::spawn(web::listener::serve(
            l,
            None,
            web::redirect_router(https_addr.port()),
            limits,
            web_stats.clone(),
            stop_rx.clone(),
        )))
    } else {
        None
    };
    // Once a minute: expired web sessions go, and so do the free pages an uplink catch-up
    // leaves inside malloc's arenas (see `malloc::trim`).
    let housekeeping = {
        let auth = auth.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                auth.cleanup();
                let started = std::time::Instant::now();
                let released = crate::malloc::trim();
                tracing::debug!(released, took = ?started.elapsed(), "malloc trim");
            }
        })
    };

    let uplink_task = {
        let (log, st, state) = (log.clone(), uplink_status.clone(), state.clone());
        tokio::spawn(supervise_config(
            "uplink",
            status.clone(),
            stop_rx.clone(),
            store.subscribe(),
            uplink_key,
            move |cfg, stop| {
                let mut kafka = cfg.kafka.clone();
                if kafka.gateway_id.is_empty() {
                    kafka.gateway_id = cfg.gateway_id();
                }
                uplink::run_with_state(kafka, log.clone(), st.clone(), Some(state.clone()), stop)
            },
        ))
    };
    // An edge node that waits for its primary host on the embedded broker from the start: the
    // JSON topics carry the first readings too (the node clears this once born).
    {
        let c = store.current();
        hub.set_sparkplug_waiting(
            c.sparkplug.enabled
                && c.sparkplug.primary_host_id.is_some()
                && c.sparkplug.upstream.is_none(),
        );
    }
    let modbus_task = {
        let (broker, hub, runtime) = (broker.clone(), hub.clone(), runtime_devices.clone());
        tokio::spawn(supervise_config(
            "modbus",
            status.clone(),
            stop_rx.clone(),
            store.subscribe(),
            modbus_key,
            move |cfg, stop| {
                let mut mc = cfg.modbus.clone();
                mc.devices.extend(runtime.iter().cloned());
                let (broker, hub) = (broker.clone(), hub.clone());
                async move {
                    let devices = mc.validate().map_err(|issues| {
                        issues
                            .iter()
                            .map(|i| format!("modbus.{i}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })?;
                    if devices.is_empty() {
                        stop.await;
                        return Ok(());
                    }
                    modbus::run(devices, hub, broker, json_topics(&cfg), stop)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        ))
    };
    // Sparkplug ingest and Kafka commands: the configuration at start (their part of
    // [sparkplug] needs a restart, see config_store); the edge node follows changes live.
    let boot = store.current();
    // The edge node's session on the embedded broker (one identity per live session).
    let embedded_node_id = boot.sparkplug.embedded_node_id(&boot.edge_node_id());
    // sp-data: Sparkplug ingest of third-party edge nodes on the embedded broker.
    let sparkplug_ingest = if boot.sparkplug.ingest.enabled {
        let own_node = embedded_node_id.clone();
        let ingest_status = crate::sparkplug::ingest::IngestStatus::new();
        status.set_sparkplug_ingest(ingest_status.clone());
        let ingest = crate::sparkplug::ingest::Ingest::new(
            boot.sparkplug.ingest.clone(),
            (boot.sparkplug.group_id.clone(), own_node),
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
    // Every command result (MQTT, upstream, Kafka) also goes into the durable audit trail.
    let audit_task = tokio::spawn(audit.clone().follow_commands(command_audit.clone()));
    let commands_task =
        (boot.kafka.is_enabled() && !boot.sparkplug.commands.kafka_topic.is_empty()).then(|| {
            // Commands become DCMD/NCMD on the embedded broker: its session's identity.
            let edge_node_id = embedded_node_id.clone();
            let (kafka, sp, gw) = (
                boot.kafka.clone(),
                boot.sparkplug.clone(),
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
    // sp-node: the Sparkplug edge node for the Modbus devices; executes DCMD/NCMD. Follows
    // configuration changes live (enabled, ids, primary host, upstream).
    let node_task = {
        let (hub, broker, state, audit, restart, log) = (
            hub.clone(),
            broker.clone(),
            state.clone(),
            command_audit.clone(),
            restart_tx.clone(),
            log.clone(),
        );
        let (st, runtime) = (status.clone(), runtime_devices.clone());
        tokio::spawn(supervise_config(
            "sparkplug_node",
            status.clone(),
            stop_rx.clone(),
            store.subscribe(),
            sparkplug_node_key,
            move |cfg, stop| {
                let status = st.clone();
                let ctx = crate::sparkplug::node::NodeContext {
                    config: cfg.sparkplug.clone(),
                    edge_node_id: cfg.edge_node_id(),
                    embedded_node_id: cfg.sparkplug.embedded_node_id(&cfg.edge_node_id()),
                    buffer: log.clone(),
                    expect_devices: !cfg.modbus.devices.is_empty() || !runtime.is_empty(),
                    hub: hub.clone(),
                    broker: broker.clone(),
                    state: state.clone(),
                    audit: audit.clone(),
                    status: Arc::new(crate::sparkplug::node::NodeStatus::default()),
                    restart: Some(restart.clone()),
                    gateway_metrics: Some({
                        let status = status.clone();
                        Arc::new(move || {
                            let u = status.uplink().snapshot();
                            crate::sparkplug::node::GatewayMetrics {
                                uplink_online: matches!(u.state, uplink::UplinkState::Connected),
                                backlog_records: u.lag_records,
                            }
                        })
                    }),
                };
                async move {
                    if !ctx.config.enabled {
                        status.set_sparkplug_node(None);
                        stop.await;
                        return Ok(());
                    }
                    status.set_sparkplug_node(Some((ctx.status.clone(), ctx.audit.clone())));
                    crate::sparkplug::node::run(ctx, stop).await
                }
            },
        ))
    };
    status.set_component("mqtt", ComponentState::Running);
    status.set_component("web", ComponentState::Running);
    tracing::info!(%gateway_id, mqtt = %broker.tcp_addr(), web = %https_addr, "ironbridge running");

    let mut notifier = Notifier::new();
    notifier.ready(&status.summary_line());

    // Sample rates, feed the watchdog while the pipeline works, and watch for a failed buffer,
    // which only a reopen (a restart) can cure.
    let mut tick = tokio::time::interval(notifier.tick_interval());
    let mut exit = Exit::Stopped;
    let fatal: Option<String> = tokio::select! {
        sig = shutdown_signal() => {
            tracing::info!(signal = sig, "shutting down");
            None
        }
        _ = restart_rx.wait_for(|r| *r) => {
            tracing::info!("restarting on request");
            exit = Exit::Restart;
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
    let grace = Duration::from_millis(store.current().gateway.shutdown_timeout_ms);
    housekeeping.abort();
    audit_task.abort();
    drop(ctx);
    let orderly = async {
        // The edge node publishes its NDEATH while the broker still runs.
        let _ = node_task.await;
        let _ = modbus_task.await;
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
        let _ = web_task.await;
        if let Some(t) = redirect_task {
            let _ = t.await;
        }
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
        None => Ok(exit),
    }
}
