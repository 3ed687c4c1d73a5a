//! The embedded session's messages, read back from the edge-buffer, as the upstream session
//! needs them (see `docs/decisions/0003-sparkplug-sessions.md`): live, as the Modbus readings
//! they were made from (so the upstream session's [`NodeCore`] reports them by exception with
//! its own `seq`); during store-and-forward, as the metrics to replay with `is_historical`.

use bytes::Bytes;
use ironbridge_adapters::modbus::{BadReason, Quality, Reading};

use super::{NodeCore, QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE, command_value};
use crate::event::Event;
use crate::sparkplug::payload::{Limits, Metric, MetricValue, Payload, decode_payload};
use crate::sparkplug::topic::{MessageType, Topic};

/// One message of the embedded session, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMessage {
    pub message_type: MessageType,
    pub device: Option<String>,
    pub payload: Payload,
}

/// Decodes a buffer record if it is a message of edge node `group/node` (anything else, or
/// a record that does not decode, is `None`: the buffer holds every publish of the broker).
pub fn session_message(record: &Bytes, group: &str, node: &str) -> Option<SessionMessage> {
    let event = Event::decode(record).ok()?;
    let Ok(Topic::Node {
        group_id,
        message_type,
        edge_node_id,
        device_id,
    }) = Topic::parse(&event.topic)
    else {
        return None;
    };
    if group_id != group || edge_node_id != node {
        return None;
    }
    let payload = decode_payload(&event.payload, &Limits::default()).ok()?;
    Some(SessionMessage {
        message_type,
        device: device_id,
        payload,
    })
}

/// The `Quality` property of a metric as a Modbus quality (absent: good).
fn quality_of(m: &Metric) -> Quality {
    let code = m
        .properties
        .as_ref()
        .and_then(|p| p.get("Quality"))
        .and_then(|v| v.value.as_ref())
        .and_then(MetricValue::as_f64)
        .map(|c| c as i32);
    match code {
        None | Some(QUALITY_GOOD) if m.value.is_some() => Quality::Good,
        Some(QUALITY_STALE) if m.value.is_some() => Quality::Stale,
        // A tag-level error (null value): not an unreachable device.
        Some(c) => Quality::Bad(BadReason::Decode(format!("quality {c}"))),
        None => Quality::Bad(BadReason::Decode(format!("quality {QUALITY_BAD}"))),
    }
}

/// The Modbus readings a device message was made from, as `core`'s model names them: DBIRTH
/// and DDATA metrics (by name or alias, values re-read with the tag's datatype), and DDEATH as
/// one reading that says the device is unreachable. Metrics the model does not know are left
/// out (the device list changed meanwhile).
pub fn readings(core: &NodeCore, msg: &SessionMessage) -> Vec<Reading> {
    let Some(device) = msg.device.as_deref().and_then(|d| core.device(d)) else {
        return Vec::new();
    };
    let now = msg.payload.timestamp.unwrap_or_default();
    match msg.message_type {
        MessageType::DDeath => vec![Reading {
            device: device.name.clone(),
            tag: String::new(),
            value: None,
            quality: Quality::Bad(BadReason::Timeout),
            timestamp_ms: now,
        }],
        MessageType::DBirth | MessageType::DData => msg
            .payload
            .metrics
            .iter()
            .filter_map(|m| {
                let tag = match (m.alias, m.name.as_deref()) {
                    (Some(a), _) => device.tag_by_alias(a),
                    (None, Some(n)) => device.tag(n),
                    (None, None) => None,
                }?;
                let mut m = m.clone();
                let value = match m.value {
                    Some(_) => {
                        if m.datatype.is_none() {
                            m.resolve(tag.datatype).ok()?;
                        }
                        Some(command_value(tag.kind, m.value.as_ref()?).ok()?)
                    }
                    None => None,
                };
                Some(Reading {
                    device: device.name.clone(),
                    tag: tag.name.clone(),
                    value,
                    quality: quality_of(&m),
                    timestamp_ms: m.timestamp.unwrap_or(now),
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The metric changes of a message to replay as history: DDATA and NDATA metrics as they
/// were, a DBIRTH's non-null values (the device's values when it was born); `None` for
/// anything else (births of the node, deaths).
pub fn history(msg: &SessionMessage) -> Option<(MessageType, Option<String>, Vec<Metric>)> {
    let now = msg.payload.timestamp.unwrap_or_default();
    let (kind, keep_null) = match msg.message_type {
        MessageType::DData => (MessageType::DData, true),
        MessageType::DBirth => (MessageType::DData, false),
        MessageType::NData => (MessageType::NData, true),
        _ => return None,
    };
    let metrics: Vec<Metric> = msg
        .payload
        .metrics
        .iter()
        .filter(|m| keep_null || m.value.is_some())
        .map(|m| {
            let mut h = m.clone();
            if kind == MessageType::DData {
                // Data messages name metrics by alias only (the upstream births use the
                // same aliases: one model for both sessions).
                if h.alias.is_some() {
                    h.name = None;
                }
                h.datatype = None;
                // Birth-only properties stay out of data messages; Quality stays.
                if let Some(p) = h.properties.as_mut() {
                    p.0.retain(|(k, _)| k != "readOnly" && k != "engUnit");
                    if p.0.is_empty() {
                        h.properties = None;
                    }
                }
            }
            h.timestamp = Some(m.timestamp.unwrap_or(now));
            h.is_historical = true;
            h
        })
        .collect();
    (!metrics.is_empty()).then(|| (kind, msg.device.clone(), metrics))
}
