//! NCMD/DCMD: checked against the node's devices, the allow-list and the node-control
//! switches, turned into Modbus writes and node controls, every result audited.

use super::*;

/// A DCMD metric checked against the device model, waiting for its Modbus write.
#[derive(Debug)]
pub struct WriteJob {
    pub from: Requester,
    pub device: String,
    pub tag: String,
    pub value: Value,
    pub json: serde_json::Value,
}

/// A decoded NCMD/DCMD, turned into rebirth requests, write jobs and rejections.
#[derive(Debug, Default)]
pub struct CommandPlan {
    pub rebirth: bool,
    /// `Node Control/Next Server` (upstream session only).
    pub next_server: bool,
    /// `Node Control/Reboot`: restart the gateway.
    pub reboot: bool,
    pub writes: Vec<WriteJob>,
    pub rejected: Vec<CommandResult>,
}

/// Where a command came from and which rules apply to it.
#[derive(Debug, Clone)]
pub struct CommandOrigin<'a> {
    /// From [`CommandAudit::claim`].
    pub from: Requester,
    /// `sparkplug.commands.allow`.
    pub allow: &'a [String],
    /// `sparkplug.commands.restrict_dcmd`.
    pub restricted: bool,
}

/// Checks a command payload against the node's devices: unknown devices and metrics,
/// read-only metrics, values of the wrong type or range, and (when `restricted`, or for Kafka
/// commands) metrics not in `allow` are rejected. `source` is from [`CommandAudit::claim`].
pub fn plan_command(
    core: &NodeCore,
    message_type: MessageType,
    device: Option<&str>,
    payload: &[u8],
    origin: &CommandOrigin<'_>,
) -> CommandPlan {
    let CommandOrigin {
        from,
        allow,
        restricted,
    } = origin;
    let (source, restricted) = (from.source, *restricted);
    let mut plan = CommandPlan::default();
    let kind = message_type.as_str().to_string();
    let reject = |metric: &str, value: serde_json::Value, reason: String| CommandResult {
        from: from.clone(),
        kind: kind.clone(),
        device: device.map(String::from),
        metric: metric.to_string(),
        value,
        outcome: Outcome::Rejected,
        reason: Some(reason),
    };
    let p = match decode_payload(payload, &Limits::default()) {
        Ok(p) => p,
        Err(e) => {
            plan.rejected.push(reject(
                "",
                serde_json::Value::Null,
                format!("malformed payload: {e}"),
            ));
            return plan;
        }
    };
    if p.metrics.is_empty() {
        plan.rejected
            .push(reject("", serde_json::Value::Null, "no metrics".into()));
    }
    for m in p.metrics {
        let json = m.value.as_ref().map(metric_json).unwrap_or_default();
        let label = m
            .name
            .clone()
            .or_else(|| m.alias.map(|a| format!("alias:{a}")))
            .unwrap_or_default();
        match (message_type, device) {
            (MessageType::NCmd, _) => {
                let name = m.name.as_deref().unwrap_or_default();
                let controls = core.controls();
                let flag = match name {
                    REBIRTH => Some(&mut plan.rebirth),
                    REBOOT if controls.reboot => Some(&mut plan.reboot),
                    NEXT_SERVER if controls.next_server => Some(&mut plan.next_server),
                    REBOOT | NEXT_SERVER => {
                        let (key, scope) = if name == REBOOT {
                            ("allow_reboot", "")
                        } else {
                            (
                                "allow_next_server",
                                "; it applies to the upstream server's session only",
                            )
                        };
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!(
                                "{name} is off on this gateway (sparkplug.commands.{key}){scope}"
                            ),
                        ));
                        continue;
                    }
                    SCAN_RATE => {
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!("{SCAN_RATE} is read-only: poll intervals are set per device (modbus.devices poll_interval_ms, poll groups)"),
                        ));
                        continue;
                    }
                    _ => {
                        plan.rejected.push(reject(
                            &label,
                            json,
                            format!("unknown node metric (supported: {REBIRTH}, and when enabled {REBOOT}, {NEXT_SERVER})"),
                        ));
                        continue;
                    }
                };
                match (flag, &m.value) {
                    (Some(f), Some(MetricValue::Boolean(true))) => *f = true,
                    _ => plan.rejected.push(reject(
                        &label,
                        json,
                        format!("{name} must be the Boolean true"),
                    )),
                }
            }
            (MessageType::DCmd, Some(dev)) => {
                let Some(model) = core.device(dev) else {
                    plan.rejected
                        .push(reject(&label, json, format!("unknown device {dev:?}")));
                    continue;
                };
                let tag = match (&m.name, m.alias) {
                    (Some(n), _) => model.tag(n),
                    (None, Some(a)) => model.tag_by_alias(a),
                    (None, None) => None,
                };
                let Some(tag) = tag else {
                    plan.rejected.push(reject(
                        &label,
                        json,
                        format!("device {dev:?} has no metric {label:?}"),
                    ));
                    continue;
                };
                if !tag.writable {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("metric {:?} is read-only", tag.name),
                    ));
                    continue;
                }
                if (restricted || source == CommandSource::Kafka) && !allowed(allow, dev, &tag.name)
                {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("{dev}/{} is not in sparkplug.commands.allow", tag.name),
                    ));
                    continue;
                }
                let mut m = m;
                if m.datatype.is_none()
                    && let Err(e) = m.resolve(tag.datatype)
                {
                    plan.rejected.push(reject(
                        &tag.name,
                        json,
                        format!("value does not fit {}: {e}", tag.datatype),
                    ));
                    continue;
                }
                let Some(v) = &m.value else {
                    plan.rejected
                        .push(reject(&tag.name, json, "null value".into()));
                    continue;
                };
                match command_value(tag.kind, v) {
                    Ok(value) => plan.writes.push(WriteJob {
                        from: from.clone(),
                        device: dev.to_string(),
                        tag: tag.name.clone(),
                        value,
                        json: metric_json(v),
                    }),
                    Err(e) => plan.rejected.push(reject(&tag.name, json, e)),
                }
            }
            _ => plan
                .rejected
                .push(reject(&label, json, "not a command".into())),
        }
    }
    plan
}

/// `device/tag` or `device/*` in the allow-list.
pub fn allowed(allow: &[String], device: &str, tag: &str) -> bool {
    allow.iter().any(|a| match a.split_once('/') {
        Some((d, t)) => d == device && (t == "*" || t == tag),
        None => false,
    })
}

/// Runs Modbus writes one at a time and records every result.
pub async fn run_writes(
    hub: Arc<ModbusHub>,
    audit: Arc<CommandAudit>,
    mut jobs: mpsc::Receiver<WriteJob>,
) {
    while let Some(j) = jobs.recv().await {
        let r = hub.write(&j.device, &j.tag, j.value.clone()).await;
        let (outcome, reason) = match r {
            Ok(_) => (Outcome::Ok, None),
            Err(
                e @ (WriteError::UnknownDevice(_)
                | WriteError::UnknownTag { .. }
                | WriteError::ReadOnly(_)
                | WriteError::Disabled(_)
                | WriteError::Value { .. }),
            ) => (Outcome::Rejected, Some(e.to_string())),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        audit.record(CommandResult {
            from: j.from,
            kind: "DCMD".into(),
            device: Some(j.device),
            metric: j.tag,
            value: j.json,
            outcome,
            reason,
        });
    }
}

/// Hands a plan's writes to the write queue (rejecting them when it is full) and records its
/// rejections; returns whether a rebirth was asked for (recorded as done by the caller).
pub fn dispatch(plan: CommandPlan, audit: &CommandAudit, writes: &mpsc::Sender<WriteJob>) -> bool {
    for r in plan.rejected {
        audit.record(r);
    }
    for j in plan.writes {
        if let Err(mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j)) =
            writes.try_send(j)
        {
            audit.record(CommandResult {
                from: j.from,
                kind: "DCMD".into(),
                device: Some(j.device),
                metric: j.tag,
                value: j.json,
                outcome: Outcome::Rejected,
                reason: Some(format!("busy: {COMMAND_QUEUE} writes already queued")),
            });
        }
    }
    plan.rebirth
}

pub fn rebirth_done(audit: &CommandAudit, from: Requester) {
    node_control_done(audit, from, REBIRTH, Ok(()));
}

/// Records the result of a node control (`metric` = true) executed by the caller.
pub fn node_control_done(
    audit: &CommandAudit,
    from: Requester,
    metric: &str,
    result: Result<(), String>,
) {
    let (outcome, reason) = match result {
        Ok(()) => (Outcome::Ok, None),
        Err(e) => (Outcome::Failed, Some(e)),
    };
    audit.record(CommandResult {
        from,
        kind: "NCMD".into(),
        device: None,
        metric: metric.into(),
        value: serde_json::Value::Bool(true),
        outcome,
        reason,
    });
}

/// `Node Control/Reboot`: the orderly restart of `POST /api/system/restart` (audited first,
/// so the result is in the log before the daemon goes down).
pub fn reboot(ctx: &NodeContext, from: Requester) {
    match &ctx.restart {
        Some(tx) if tx.receiver_count() > 0 => {
            let (source, actor) = (from.source, from.actor.clone());
            node_control_done(&ctx.audit, from, REBOOT, Ok(()));
            tracing::warn!(?source, actor, "restart requested by Sparkplug {REBOOT}");
            let _ = tx.send(true);
        }
        _ => node_control_done(
            &ctx.audit,
            from,
            REBOOT,
            Err("no restart path in this process".into()),
        ),
    }
}
