//! The session on the embedded broker: readings from the Modbus fan-out, commands and the
//! primary host's STATE from the broker.

use super::*;

/// The gateway values for the node metrics now.
pub fn gateway_metrics(ctx: &NodeContext) -> GatewayMetrics {
    ctx.gateway_metrics
        .as_ref()
        .map(|f| f())
        .unwrap_or_default()
}

/// The correlation id of a command (its payload's `uuid`), without decoding twice on error.
pub(super) fn correlation(payload: &[u8]) -> Option<String> {
    decode_payload(payload, &Limits::default())
        .ok()
        .and_then(|p| p.uuid)
}

/// Aborts a spawned task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Readings available now, after `first` (one batch).
pub(super) fn drain(first: Reading, rx: &mut broadcast::Receiver<Reading>) -> (Vec<Reading>, bool) {
    let mut batch = vec![first];
    let mut lagged = false;
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
            Err(_) => break,
        }
    }
    (batch, lagged)
}

pub(super) struct Embedded<'a> {
    ctx: &'a NodeContext,
    core: NodeCore,
    client_id: String,
}

impl Embedded<'_> {
    async fn publish(&self, out: Vec<Outgoing>) -> Result<(), NodeError> {
        for o in out {
            let payload = o.encode()?;
            let event = Event {
                topic: o.topic,
                payload: Bytes::from(payload),
                qos: if o.message_type == MessageType::NDeath {
                    1
                } else {
                    0
                },
                client_id: Some(self.client_id.clone()),
                ..Event::default()
            };
            self.ctx.broker.publish(&event).await?;
        }
        self.update_status();
        Ok(())
    }

    fn update_status(&self) {
        let snap = self.core.snapshot();
        self.ctx.status.update(|r| r.embedded = snap);
    }

    /// NBIRTH and DBIRTHs again with the same bdSeq (NCMD rebirth, or after falling behind).
    async fn rebirth(&mut self) -> Result<(), NodeError> {
        if !self.core.is_born() {
            return Ok(());
        }
        let hub = self.ctx.hub.clone();
        let bdseq = self.core.bdseq();
        let out = self.core.birth(bdseq, &|d: &str| hub.latest(d));
        self.publish(out).await
    }

    /// Follows changes of the polled devices (a Modbus configuration change): new model and a
    /// rebirth. An empty list (the poller restarting) keeps the old model.
    async fn check_devices(&mut self, known: &mut Vec<Arc<Device>>) -> Result<(), NodeError> {
        let now = self.ctx.hub.devices();
        let same = now.len() == known.len()
            && now
                .iter()
                .zip(known.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if now.is_empty() || same {
            return Ok(());
        }
        tracing::info!(
            devices = now.len(),
            "Modbus devices changed: Sparkplug rebirth"
        );
        *known = now;
        self.core.replace_devices(model(known));
        self.rebirth().await
    }

    async fn node_data(&mut self) -> Result<(), NodeError> {
        let g = gateway_metrics(self.ctx);
        match self.core.node_data(g, now_ms()) {
            Some(o) => self.publish(vec![o]).await,
            None => Ok(()),
        }
    }

    async fn on_readings(&mut self, batch: &[Reading]) -> Result<(), NodeError> {
        let hub = self.ctx.hub.clone();
        let out = self.core.readings(batch, &|d: &str| hub.latest(d));
        self.publish(out).await
    }

    /// A new session: next bdSeq persisted (durably, with "online") before the NBIRTH.
    async fn go_online(&mut self) -> Result<(), NodeError> {
        let prev = load_session(&self.ctx.state, "embedded").await?;
        let bdseq = next_bdseq(prev);
        save_session(
            &self.ctx.state,
            "embedded",
            SessionRecord {
                bdseq,
                online: true,
            },
        )
        .await?;
        let hub = self.ctx.hub.clone();
        let out = self.core.birth(bdseq, &|d: &str| hub.latest(d));
        tracing::info!(bdseq, messages = out.len(), "Sparkplug edge node born");
        self.publish(out).await?;
        // From here the session carries the readings; while it waited, the JSON topics did.
        hub.set_sparkplug_waiting(false);
        Ok(())
    }

    /// Ends the session (NDEATH); `waiting`: for the primary host to come back.
    async fn go_offline(&mut self, waiting: bool) -> Result<(), NodeError> {
        self.ctx.hub.set_sparkplug_waiting(waiting);
        if let Some(death) = self.core.die() {
            let bdseq = self.core.bdseq();
            self.publish(vec![death]).await?;
            save_session(
                &self.ctx.state,
                "embedded",
                SessionRecord {
                    bdseq,
                    online: false,
                },
            )
            .await?;
            tracing::info!(bdseq, "Sparkplug edge node: NDEATH published");
        }
        Ok(())
    }
}

/// Runs the edge node on the embedded broker until `stop` (then NDEATH).
pub async fn run(
    ctx: NodeContext,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let group = ctx.config.group_id.clone();
    let node_id = ctx.embedded_node_id.clone();
    ctx.status.update(|r| {
        r.group_id = group.clone();
        r.edge_node_id = ctx.edge_node_id.clone();
        r.embedded_edge_node_id = node_id.clone();
    });
    if ctx.config.upstream.is_none() {
        // No upstream session: its buffer cursor must not keep segments.
        if let Err(e) = ctx.buffer.remove_consumer(upstream::CONSUMER) {
            tracing::warn!(error = %e, "removing the Sparkplug upstream buffer cursor failed");
        }
    }
    let ncmd = Topic::node(&group, MessageType::NCmd, &node_id).to_string();
    let dcmd = format!("{}/+", Topic::node(&group, MessageType::DCmd, &node_id));
    // With an upstream server the primary host lives there: the embedded session (the data
    // path to the buffer and Kafka) never waits for it. See decision record 0003.
    let states = if ctx.config.upstream.is_none() {
        state_topics(ctx.config.primary_host_id.as_deref())
    } else {
        Vec::new()
    };
    let mut filters = vec![ncmd.as_str(), dcmd.as_str()];
    filters.extend(states.iter().map(String::as_str));
    let mut sub = ctx
        .broker
        .subscribe(&format!("sparkplug-node:{node_id}"), &filters)
        .await?;
    let mut readings = ctx.hub.subscribe();
    tokio::pin!(stop);
    // The poller sets the device list when it starts: its first reading says it has.
    let mut first = None;
    if ctx.expect_devices && ctx.hub.devices().is_empty() {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = tokio::time::timeout(Duration::from_secs(5), readings.recv()) => {
                first = r.ok().and_then(|r| r.ok());
            }
        }
    }
    let mut known = ctx.hub.devices();
    let mut node = Embedded {
        ctx: &ctx,
        core: NodeCore::new(&group, &node_id, model(&known)).with_controls(NodeControls {
            reboot: ctx.config.commands.allow_reboot,
            // The embedded broker is the only server here.
            next_server: false,
        }),
        client_id: format!("sparkplug:{node_id}"),
    };
    node.core.set_gateway(gateway_metrics(&ctx));

    // The emulated will: the previous run ended without its NDEATH.
    if let Some(prev) = load_session(&ctx.state, "embedded").await?
        && prev.online
    {
        tracing::warn!(
            bdseq = prev.bdseq,
            "previous Sparkplug session ended without NDEATH; publishing it now"
        );
        node.publish(vec![node.core.death(prev.bdseq)]).await?;
        save_session(
            &ctx.state,
            "embedded",
            SessionRecord {
                bdseq: prev.bdseq,
                online: false,
            },
        )
        .await?;
    }
    let mut host = HostTracker::default();
    if states.is_empty() {
        node.go_online().await?;
    } else {
        node.core.set_host_online(Some(false));
        node.update_status();
        ctx.hub.set_sparkplug_waiting(true);
        tracing::info!(host = ?ctx.config.primary_host_id, "Sparkplug edge node waiting for the primary host's STATE (Modbus readings go to the JSON topics meanwhile)");
    }

    let (write_tx, write_rx) = mpsc::channel(COMMAND_QUEUE);
    let writer = tokio::spawn(run_writes(ctx.hub.clone(), ctx.audit.clone(), write_rx));
    // The upstream session shares the write queue (one poller, one audit). If this task
    // fails, dropping the guard aborts it: the upstream server then publishes the will.
    let (upstream_stop, upstream_stop_rx) = tokio::sync::watch::channel(false);
    let upstream_task = ctx.config.upstream.clone().map(|cfg| {
        let (c, w) = (ctx.clone(), write_tx.clone());
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = upstream::run(c, cfg, w, upstream_stop_rx).await {
                tracing::error!(error = %e, "Sparkplug upstream session stopped");
            }
        }))
    });
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let result: Result<(), NodeError> = async {
        if let Some(r) = first {
            let (batch, _) = drain(r, &mut readings);
            node.on_readings(&batch).await?;
        }
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    node.check_devices(&mut known).await?;
                    node.node_data().await?;
                }
                r = readings.recv() => {
                    match r {
                        Ok(first) => {
                            node.check_devices(&mut known).await?;
                            let (batch, lagged) = drain(first, &mut readings);
                            if lagged {
                                tracing::warn!("Sparkplug edge node fell behind the Modbus readings; rebirth");
                                node.rebirth().await?;
                            } else {
                                node.on_readings(&batch).await?;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            tracing::warn!("Sparkplug edge node fell behind the Modbus readings; rebirth");
                            node.rebirth().await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(NodeError::Task("Modbus readings closed".into()));
                        }
                    }
                }
                m = sub.next() => {
                    let Some(m) = m else {
                        return Err(NodeError::Task("embedded broker subscription closed".into()));
                    };
                    if states.contains(&m.topic) {
                        let Some(s) = parse_state(&m.payload) else {
                            tracing::warn!(topic = %m.topic, "unreadable primary host STATE ignored");
                            continue;
                        };
                        if !host.apply(s) {
                            tracing::info!(topic = %m.topic, "primary host STATE older than the last one seen: ignored");
                            continue;
                        }
                        node.core.set_host_online(Some(host.online));
                        if host.online && !node.core.is_born() {
                            tracing::info!("primary host online");
                            node.go_online().await?;
                        } else if !host.online && node.core.is_born() {
                            tracing::info!("primary host offline: ending the Sparkplug session");
                            node.go_offline(true).await?;
                        }
                        node.update_status();
                        continue;
                    }
                    let Ok(Topic::Node { message_type, device_id, .. }) = Topic::parse(&m.topic) else {
                        continue;
                    };
                    let from = ctx
                        .audit
                        .claim(correlation(&m.payload).as_deref(), m.publisher.as_deref());
                    let origin = CommandOrigin {
                        from: from.clone(),
                        allow: &ctx.config.commands.allow,
                        restricted: ctx.config.commands.restrict_dcmd,
                    };
                    let plan = plan_command(
                        &node.core,
                        message_type,
                        device_id.as_deref(),
                        &m.payload,
                        &origin,
                    );
                    let reboot_asked = plan.reboot;
                    if dispatch(plan, &ctx.audit, &write_tx) {
                        node.rebirth().await?;
                        rebirth_done(&ctx.audit, from.clone());
                    }
                    if reboot_asked {
                        reboot(&ctx, from);
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = upstream_stop.send(true);
    if let Some(mut t) = upstream_task {
        // Bounded: NDEATH and DISCONNECT take at most a few seconds.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut t.0).await;
    }
    drop(write_tx);
    // A write in flight gets a moment to finish and be audited.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    match result {
        Ok(()) => {
            node.go_offline(false).await?;
            Ok(())
        }
        Err(e) => {
            // Not running: the JSON topics carry the readings until it is again.
            ctx.hub.set_sparkplug_waiting(true);
            Err(e)
        }
    }
}
