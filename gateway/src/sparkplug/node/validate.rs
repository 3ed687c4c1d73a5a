//! Checks of the `[sparkplug]` table against the rest of the configuration.

use super::*;

/// Checks the `[sparkplug]` table against the rest of the configuration: (field, message)
/// pairs as [`crate::config::Config::validate`] reports them.
pub fn validate(
    sp: &SparkplugConfig,
    gateway_id: &str,
    modbus: &ModbusConfig,
) -> Vec<(String, String)> {
    use crate::sparkplug::topic::validate_id;
    let mut issues = Vec::new();
    if !sp.enabled && sp.upstream.is_none() && sp.commands.allow.is_empty() {
        // Still check the ids below: they are cheap and catch typos before enabling.
    }
    if let Err(e) = validate_id(&sp.group_id) {
        issues.push(("sparkplug.group_id".into(), e));
    }
    if !sp.edge_node_id.is_empty() {
        if let Err(e) = validate_id(&sp.edge_node_id) {
            issues.push(("sparkplug.edge_node_id".into(), e));
        }
    } else if sp.enabled
        && let Err(e) = validate_id(gateway_id)
    {
        issues.push((
            "sparkplug.edge_node_id".into(),
            format!("not set, and the gateway id {gateway_id:?} cannot be used instead: {e}"),
        ));
    }
    if let Some(h) = &sp.primary_host_id
        && let Err(e) = validate_id(h)
    {
        issues.push(("sparkplug.primary_host_id".into(), e));
    }
    if !sp.embedded_edge_node_id.is_empty() {
        let own = if sp.edge_node_id.is_empty() {
            gateway_id
        } else {
            &sp.edge_node_id
        };
        if let Err(e) = validate_id(&sp.embedded_edge_node_id) {
            issues.push(("sparkplug.embedded_edge_node_id".into(), e));
        } else if sp.upstream.is_none() {
            issues.push((
                "sparkplug.embedded_edge_node_id".into(),
                "needs [sparkplug.upstream] (without it the embedded session is edge_node_id)"
                    .into(),
            ));
        } else if sp.embedded_edge_node_id == own {
            issues.push((
                "sparkplug.embedded_edge_node_id".into(),
                format!(
                    "must differ from the edge node id {own:?}: two live sessions may not share one identity"
                ),
            ));
        }
    }
    if let Some(u) = &sp.upstream {
        if u.history_rate == 0 {
            issues.push((
                "sparkplug.upstream.history_rate".into(),
                "must be at least 1 (messages per second)".into(),
            ));
        }
        match u.server.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => issues.push((
                "sparkplug.upstream.server".into(),
                format!(
                    "{:?} is not host:port (e.g. \"broker.plant:1883\")",
                    u.server
                ),
            )),
        }
        if u.keep_alive_s < 5 {
            issues.push((
                "sparkplug.upstream.keep_alive_s".into(),
                "must be at least 5".into(),
            ));
        }
        if u.password.is_some() && u.username.is_none() {
            issues.push((
                "sparkplug.upstream.password".into(),
                "needs sparkplug.upstream.username".into(),
            ));
        }
        if let Some(ca) = &u.ca_file {
            if !u.tls {
                issues.push((
                    "sparkplug.upstream.ca_file".into(),
                    "needs sparkplug.upstream.tls = true".into(),
                ));
            } else if let Err(e) = std::fs::File::open(ca) {
                issues.push((
                    "sparkplug.upstream.ca_file".into(),
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
        }
    }
    for (i, a) in sp.commands.allow.iter().enumerate() {
        let field = format!("sparkplug.commands.allow[{i}]");
        let Some((d, t)) = a.split_once('/') else {
            issues.push((
                field,
                format!("{a:?} is not \"device/tag\" or \"device/*\""),
            ));
            continue;
        };
        let Some(dev) = modbus.devices.iter().find(|x| x.name == d) else {
            issues.push((field, format!("{a:?}: no Modbus device {d:?}")));
            continue;
        };
        if t == "*" {
            continue;
        }
        match dev.tags.iter().find(|x| x.name == t) {
            None => issues.push((field, format!("{a:?}: device {d:?} has no tag {t:?}"))),
            Some(tag) if tag.access != ironbridge_adapters::modbus::Access::ReadWrite => issues
                .push((
                    field,
                    format!(
                        "{a:?}: tag {t:?} is read-only (access = \"read_write\" makes it writable)"
                    ),
                )),
            Some(_) => {}
        }
    }
    issues
}
