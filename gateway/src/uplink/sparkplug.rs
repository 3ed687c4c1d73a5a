//! Decoded Sparkplug B values for routes with `value = "sparkplug_json"` (one record per
//! message) or `value = "sparkplug_metrics"` (one record per metric).
//!
//! # Alias resolution follows log order
//!
//! Data messages name metrics by alias; the aliases are defined by the node's NBIRTH and the
//! device's DBIRTH *as they were when the data was written*. The uplink therefore keeps its own
//! birth history, built from the buffer records it routes (not from live traffic): every
//! NBIRTH/DBIRTH it reads is stored with its buffer offset, and a data record at offset `o` is
//! resolved with the newest birth before `o`. A backlog that spans a rebirth (new aliases) is
//! thus resolved with the old aliases up to the rebirth and the new ones after it.
//!
//! The history (up to 4 births per node/device, bounded in keys and definitions) lives in
//! sled (`sparkplug.uplink`), so a restart that re-reads records from the last committed cursor
//! still resolves them, even when births after the cursor had already been read before the
//! restart (they are stamped with their offsets, so they do not apply to earlier records; a
//! re-read birth replaces the stored one). A data record whose birth is older than the history
//! or was never in the buffer (e.g. dropped by `drop_oldest`) is sent with `"resolved": false`
//! and the alias, never with a wrong name.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value as Json, json};

use crate::event::Event;
use crate::sparkplug::births::{self, Birth, BirthCache, CacheLimits};
use crate::sparkplug::ingest::LogLimiter;
use crate::sparkplug::payload::{
    Limits, Metric, MetricValue, Payload, PayloadError, decode_payload,
};
use crate::sparkplug::topic::{MessageType, Topic};
use crate::state::StateStore;

/// Name of the sled tree of the uplink's birth history.
pub const TREE: &str = "sparkplug.uplink";

/// A Sparkplug record as the uplink sees it.
pub struct Decoded {
    pub group_id: String,
    pub edge_node_id: String,
    pub device_id: Option<String>,
    pub message_type: MessageType,
    pub payload: Result<Payload, PayloadError>,
    /// Per metric: whether its name and datatype are known (from the message or a birth).
    pub resolved: Vec<bool>,
}

/// See the module docs.
pub struct SparkplugDecoder {
    cache: BirthCache,
    limits: Limits,
    log: LogLimiter,
}

impl SparkplugDecoder {
    pub fn new(state: Option<&StateStore>) -> SparkplugDecoder {
        let tree = state.and_then(|s| match s.tree(TREE) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "uplink: Sparkplug birth history not persisted");
                None
            }
        });
        SparkplugDecoder {
            cache: BirthCache::open(tree, CacheLimits::default()),
            limits: Limits::default(),
            log: LogLimiter::default(),
        }
    }

    /// Looks at every record in log order: learns births, decodes and resolves the rest.
    /// `None` for topics that are not Sparkplug edge node/device messages.
    pub fn observe(&mut self, event: &Event, offset: u64) -> Option<Decoded> {
        if !event.topic.starts_with("spBv1.0/") {
            return None;
        }
        let Ok(Topic::Node {
            group_id,
            message_type,
            edge_node_id,
            device_id,
        }) = Topic::parse(&event.topic)
        else {
            return None;
        };
        let mut payload = decode_payload(&event.payload, &self.limits);
        let mut resolved = Vec::new();
        match &mut payload {
            Err(e) => {
                if let Some(suppressed) = self.log.allow("undecodable") {
                    tracing::warn!(topic = %event.topic, offset, error = %e, suppressed,
                        "uplink: Sparkplug payload cannot be decoded; sent with the error and the raw bytes");
                }
            }
            Ok(p) => match message_type {
                MessageType::NBirth | MessageType::DBirth => {
                    let key = births::key(&group_id, &edge_node_id, device_id.as_deref());
                    let (birth, _) = Birth::from_payload(p, offset);
                    self.cache.record(&key, birth);
                    resolved = p
                        .metrics
                        .iter()
                        .map(|m| m.name.is_some() && m.datatype.is_some())
                        .collect();
                }
                _ => {
                    let node = self
                        .cache
                        .resolve(&births::key(&group_id, &edge_node_id, None), offset);
                    let device = device_id.as_deref().and_then(|d| {
                        self.cache
                            .resolve(&births::key(&group_id, &edge_node_id, Some(d)), offset)
                    });
                    resolved = p
                        .metrics
                        .iter_mut()
                        .map(|m| resolve(m, device.as_deref(), node.as_deref()))
                        .collect();
                }
            },
        }
        Some(Decoded {
            group_id,
            edge_node_id,
            device_id,
            message_type,
            payload,
            resolved,
        })
    }
}

/// Fills in a metric's name and datatype from the births (device first, then node) and
/// re-reads its value with the datatype. Returns whether the metric is fully known.
fn resolve(m: &mut Metric, device: Option<&Birth>, node: Option<&Birth>) -> bool {
    let def = [device, node].into_iter().flatten().find_map(|b| {
        m.alias
            .and_then(|a| b.by_alias(a))
            .or_else(|| m.name.as_deref().and_then(|n| b.by_name(n)))
            .cloned()
    });
    if let Some(def) = def {
        if m.name.is_none() {
            m.name = Some(def.name.clone());
        }
        if m.datatype.is_none() && m.resolve(def.datatype).is_err() {
            return false;
        }
    }
    m.name.is_some() && m.datatype.is_some()
}

/// Quality of a metric: the `Quality` property if present (Sparkplug 3.0: 192 good, 500 stale,
/// 0 bad; other codes from older OPC-style senders: below 64 bad, else uncertain), `stale` for
/// death messages, otherwise good.
fn quality(m: &Metric) -> &'static str {
    let code = m
        .properties
        .as_ref()
        .and_then(|p| p.get("Quality"))
        .and_then(|v| v.value.as_ref())
        .and_then(MetricValue::as_f64);
    match code {
        None => "good",
        Some(c) if c as i64 == 192 => "good",
        Some(c) if c as i64 == 500 => "stale",
        Some(c) if (c as i64) < 64 => "bad",
        Some(_) => "uncertain",
    }
}

fn metric_fields(m: &Metric, resolved: bool, out: &mut Map<String, Json>) {
    out.insert("name".into(), json!(m.name));
    if let Some(a) = m.alias {
        out.insert("alias".into(), json!(a));
    }
    out.insert("datatype".into(), json!(m.datatype.map(|d| d.name())));
    out.insert(
        "value".into(),
        m.value
            .as_ref()
            .map(MetricValue::to_json)
            .unwrap_or(Json::Null),
    );
    out.insert("timestamp".into(), json!(m.timestamp));
    out.insert("is_null".into(), json!(m.value.is_none()));
    out.insert("quality".into(), json!(quality(m)));
    if m.is_historical {
        out.insert("is_historical".into(), json!(true));
    }
    if m.is_transient {
        out.insert("is_transient".into(), json!(true));
    }
    if !resolved {
        out.insert("resolved".into(), json!(false));
    }
    if let Some(p) = &m.properties
        && !p.is_empty()
    {
        out.insert("properties".into(), p.to_json());
    }
}

fn header(d: &Decoded, received_at: i64) -> Map<String, Json> {
    let mut h = Map::new();
    h.insert("group_id".into(), json!(d.group_id));
    h.insert("edge_node_id".into(), json!(d.edge_node_id));
    h.insert("device_id".into(), json!(d.device_id));
    h.insert("message_type".into(), json!(d.message_type.as_str()));
    if let Ok(p) = &d.payload {
        h.insert("seq".into(), json!(p.seq));
        if let Some(u) = &p.uuid {
            h.insert("uuid".into(), json!(u));
        }
    }
    h.insert("received_at".into(), json!(received_at));
    h
}

fn error_value(d: &Decoded, event: &Event, received_at: i64, e: &PayloadError) -> Vec<u8> {
    let mut h = header(d, received_at);
    h.insert("error".into(), json!(e.to_string()));
    h.insert(
        "payload_base64".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(&event.payload)),
    );
    serde_json::to_vec(&Json::Object(h)).unwrap_or_default()
}

fn is_death(t: MessageType) -> bool {
    matches!(t, MessageType::NDeath | MessageType::DDeath)
}

/// One JSON value for the whole message.
pub fn message_value(d: &Decoded, event: &Event, received_at: i64) -> Vec<u8> {
    let p = match &d.payload {
        Ok(p) => p,
        Err(e) => return error_value(d, event, received_at, e),
    };
    let mut h = header(d, received_at);
    h.insert("timestamp".into(), json!(p.timestamp));
    let metrics = p
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut o = Map::new();
            metric_fields(m, d.resolved.get(i).copied().unwrap_or(false), &mut o);
            if is_death(d.message_type) {
                o.insert("quality".into(), json!("stale"));
            }
            Json::Object(o)
        })
        .collect();
    h.insert("metrics".into(), Json::Array(metrics));
    if is_death(d.message_type) {
        h.insert("quality".into(), json!("stale"));
    }
    serde_json::to_vec(&Json::Object(h)).unwrap_or_default()
}

/// One JSON value per metric; a message without metrics (e.g. DDEATH) gives one value with
/// `"name": null`.
pub fn metric_values(d: &Decoded, event: &Event, received_at: i64) -> Vec<Arc<[u8]>> {
    let p = match &d.payload {
        Ok(p) => p,
        Err(e) => return vec![Arc::from(error_value(d, event, received_at, e))],
    };
    let base = {
        let mut h = header(d, received_at);
        h.insert("message_timestamp".into(), json!(p.timestamp));
        h
    };
    if p.metrics.is_empty() {
        let mut o = base;
        o.insert("name".into(), Json::Null);
        o.insert("value".into(), Json::Null);
        o.insert("timestamp".into(), json!(p.timestamp));
        o.insert("is_null".into(), json!(true));
        o.insert(
            "quality".into(),
            json!(if is_death(d.message_type) {
                "stale"
            } else {
                "good"
            }),
        );
        return vec![Arc::from(
            serde_json::to_vec(&Json::Object(o)).unwrap_or_default(),
        )];
    }
    p.metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut o = base.clone();
            metric_fields(m, d.resolved.get(i).copied().unwrap_or(false), &mut o);
            if o.get("timestamp").is_none_or(Json::is_null) {
                o.insert("timestamp".into(), json!(p.timestamp));
            }
            if is_death(d.message_type) {
                o.insert("quality".into(), json!("stale"));
            }
            Arc::from(serde_json::to_vec(&Json::Object(o)).unwrap_or_default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sparkplug::payload::{DataType, PropertyValue};

    fn ev(topic: &str, p: &Payload) -> Event {
        Event {
            topic: topic.into(),
            payload: Bytes::from(p.encode().expect("encode")),
            qos: 0,
            ..Event::default()
        }
    }

    fn birth(alias_of_temp: u64) -> Payload {
        Payload::new(10, Some(0))
            .with_metric(Metric::new("temp", MetricValue::Int16(0)).with_alias(alias_of_temp))
            .with_metric(
                Metric::new("on", MetricValue::Boolean(false)).with_alias(alias_of_temp + 1),
            )
    }

    fn data(alias: u64, raw: u32) -> Payload {
        let mut m = Metric::aliased(alias, MetricValue::UInt32(raw)).with_timestamp(99);
        m.datatype = None;
        Payload::new(11, Some(1)).with_metric(m)
    }

    fn value(v: &[u8]) -> Json {
        serde_json::from_slice(v).expect("json")
    }

    #[test]
    fn backlog_across_a_rebirth_resolves_with_the_aliases_of_its_time_also_after_restart() {
        let store = StateStore::temporary().expect("store");
        let mut d = SparkplugDecoder::new(Some(&store));
        d.observe(&ev("spBv1.0/g/DBIRTH/n/dev", &birth(1)), 10);
        let old = ev("spBv1.0/g/DDATA/n/dev", &data(1, 0xFFFF_FFFE));
        // Rebirth: temp is alias 5 now, alias 1 is gone.
        d.observe(&ev("spBv1.0/g/DBIRTH/n/dev", &birth(5)), 20);
        let new = ev("spBv1.0/g/DDATA/n/dev", &data(5, 7));
        for d in [&mut d, &mut SparkplugDecoder::new(Some(&store))] {
            let o = d.observe(&old, 15).expect("decoded");
            let v = value(&message_value(&o, &old, 1000));
            assert_eq!(v["metrics"][0]["name"], "temp");
            assert_eq!(v["metrics"][0]["datatype"], "Int16");
            assert_eq!(v["metrics"][0]["value"], -2);
            let n = d.observe(&new, 25).expect("decoded");
            let v = value(&message_value(&n, &new, 1000));
            assert_eq!(v["metrics"][0]["name"], "temp");
            assert_eq!(v["metrics"][0]["value"], 7);
            assert_eq!(v["group_id"], "g");
            assert_eq!(v["edge_node_id"], "n");
            assert_eq!(v["device_id"], "dev");
            assert_eq!(v["message_type"], "DDATA");
            assert_eq!(v["seq"], 1);
            assert_eq!(v["timestamp"], 11);
            assert_eq!(v["received_at"], 1000);
            assert_eq!(v["metrics"][0]["timestamp"], 99);
            assert_eq!(v["metrics"][0]["quality"], "good");
        }
        // Before any birth: unresolved, alias kept, raw value.
        let o = d.observe(&old, 5).expect("decoded");
        let v = value(&message_value(&o, &old, 0));
        assert_eq!(v["metrics"][0]["resolved"], false);
        assert_eq!(v["metrics"][0]["alias"], 1);
        assert!(v["metrics"][0]["name"].is_null());
    }

    #[test]
    fn per_metric_values_deaths_and_errors() {
        let mut d = SparkplugDecoder::new(None);
        let b = birth(1).with_metric(
            Metric::new("q", MetricValue::Double(1.5))
                .with_property("Quality", PropertyValue::new(MetricValue::Int32(0))),
        );
        let e = ev("spBv1.0/g/NBIRTH/n", &b);
        let o = d.observe(&e, 1).expect("decoded");
        let v: Vec<Json> = metric_values(&o, &e, 5).iter().map(|v| value(v)).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["name"], "temp");
        assert_eq!(v[0]["message_type"], "NBIRTH");
        assert_eq!(v[2]["quality"], "bad");
        assert_eq!(v[2]["datatype"], DataType::Double.name());
        assert_eq!(
            v[1]["timestamp"], 10,
            "message timestamp when the metric has none"
        );
        let death = ev("spBv1.0/g/DDEATH/n/x", &Payload::new(3, Some(4)));
        let o = d.observe(&death, 2).expect("decoded");
        let v = metric_values(&o, &death, 5);
        assert_eq!(v.len(), 1);
        let v = value(&v[0]);
        assert_eq!(
            (v["quality"].as_str(), v["device_id"].as_str()),
            (Some("stale"), Some("x"))
        );
        let bad = Event {
            topic: "spBv1.0/g/NDATA/n".into(),
            payload: Bytes::from_static(b"\xff\xff"),
            ..Event::default()
        };
        let o = d.observe(&bad, 3).expect("decoded");
        let v = value(&message_value(&o, &bad, 5));
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(v["payload_base64"], "//8=");
        assert!(d.observe(&ev("plant/x", &b), 4).is_none());
        assert!(d.observe(&ev("spBv1.0/STATE/h", &b), 4).is_none());
    }
}
