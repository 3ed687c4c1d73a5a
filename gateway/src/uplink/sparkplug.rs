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
//!
//! # Deaths make the metrics of the last births stale
//!
//! For `sparkplug_metrics` a DDEATH becomes one record per metric of the device's last DBIRTH
//! and an NDEATH one per metric of the node's last NBIRTH and of the last DBIRTH of every device
//! of that node still alive then, each with `"quality": "stale"` — what a Sparkplug host does
//! with its tags (tck-id-operational-behavior-edge-node-termination-host-action-*-tags-stale).
//! "Alive" is judged in log order like aliases: a DBIRTH after the node's NBIRTH and not
//! followed by a DDEATH (deaths are remembered since start; a device whose DDEATH was read
//! before a restart is made stale once more by the NDEATH). An NDEATH whose `bdSeq` differs
//! from the NBIRTH's ends an older session and makes nothing stale.

use std::collections::{BTreeSet, HashMap};
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
    /// For a death: the births whose metrics it makes stale (see the module docs).
    pub stale: Vec<StaleBirth>,
}

/// The metrics of one birth made stale by a death.
pub struct StaleBirth {
    /// The device (None: the node's own metrics).
    pub device_id: Option<String>,
    pub birth: Arc<Birth>,
}

/// See the module docs.
pub struct SparkplugDecoder {
    cache: BirthCache,
    limits: Limits,
    log: LogLimiter,
    /// Device ids per node key, from the births read (and those in the stored history).
    devices: HashMap<String, BTreeSet<String>>,
    /// Offset of the last DDEATH per device key.
    deaths: HashMap<String, u64>,
}

/// Device keys remembered for stale records at most (as many as the birth history holds).
const MAX_DEVICES: usize = 4096;

impl SparkplugDecoder {
    pub fn new(state: Option<&StateStore>) -> SparkplugDecoder {
        let tree = state.and_then(|s| match s.tree(TREE) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "uplink: Sparkplug birth history not persisted");
                None
            }
        });
        let mut devices: HashMap<String, BTreeSet<String>> = HashMap::new();
        for k in tree.iter().flat_map(|t| t.iter().keys()).flatten() {
            // Sparkplug ids cannot contain '/': `group/node/device` is a device key.
            let k = String::from_utf8_lossy(&k).into_owned();
            if let Some((node, device)) = k.rsplit_once('/')
                && node.contains('/')
            {
                devices
                    .entry(node.to_string())
                    .or_default()
                    .insert(device.to_string());
            }
        }
        SparkplugDecoder {
            cache: BirthCache::open(tree, CacheLimits::default()),
            limits: Limits::default(),
            log: LogLimiter::default(),
            devices,
            deaths: HashMap::new(),
        }
    }

    fn remember_device(&mut self, node_key: String, device: &str) {
        let known: usize = self.devices.values().map(BTreeSet::len).sum();
        let set = self.devices.entry(node_key).or_default();
        if known < MAX_DEVICES || set.contains(device) {
            set.insert(device.to_string());
        }
    }

    /// The births a death at `offset` makes stale.
    fn stale(
        &mut self,
        p: &Payload,
        message_type: MessageType,
        node_key: &str,
        device_id: Option<&str>,
        offset: u64,
    ) -> Vec<StaleBirth> {
        let node = self.cache.resolve(node_key, offset);
        let alive = |this: &Self, device: &str| -> Option<Arc<Birth>> {
            let key = format!("{node_key}/{device}");
            let b = this.cache.resolve(&key, offset)?;
            let after_node = node.as_ref().is_none_or(|n| b.position > n.position);
            let dead = this
                .deaths
                .get(&key)
                .is_some_and(|&d| d > b.position && d < offset);
            (after_node && !dead).then_some(b)
        };
        match (message_type, device_id) {
            (MessageType::DDeath, Some(d)) => {
                let stale = alive(self, d)
                    .map(|birth| StaleBirth {
                        device_id: Some(d.to_string()),
                        birth,
                    })
                    .into_iter()
                    .collect();
                self.deaths.insert(format!("{node_key}/{d}"), offset);
                stale
            }
            (MessageType::NDeath, None) => {
                let Some(node) = node.clone() else {
                    return Vec::new();
                };
                let bd_seq = p
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| m.value.as_ref())
                    .and_then(MetricValue::as_f64)
                    .map(|f| f as u64);
                if bd_seq.is_some() && node.bd_seq.is_some() && bd_seq != node.bd_seq {
                    return Vec::new();
                }
                let mut stale = vec![StaleBirth {
                    device_id: None,
                    birth: node,
                }];
                let devices = self.devices.get(node_key).cloned().unwrap_or_default();
                for d in devices {
                    if let Some(birth) = alive(self, &d) {
                        stale.push(StaleBirth {
                            device_id: Some(d),
                            birth,
                        });
                    }
                }
                stale
            }
            _ => Vec::new(),
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
        let mut stale = Vec::new();
        let node_key = births::key(&group_id, &edge_node_id, None);
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
                    if let Some(d) = &device_id {
                        self.remember_device(node_key.clone(), d);
                    }
                    resolved = p
                        .metrics
                        .iter()
                        .map(|m| m.name.is_some() && m.datatype.is_some())
                        .collect();
                }
                _ => {
                    if is_death(message_type) {
                        stale =
                            self.stale(p, message_type, &node_key, device_id.as_deref(), offset);
                    }
                    let node = self.cache.resolve(&node_key, offset);
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
            stale,
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
    if !d.stale.is_empty() {
        return stale_values(d, p, base, received_at);
    }
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

/// One record per metric a death makes stale. It carries no value: the metric keeps its last
/// one, which is no longer current. The time is the DDEATH's timestamp, and for an NDEATH —
/// which the MQTT server may publish long after the node went — the gateway's receipt time.
fn stale_values(
    d: &Decoded,
    p: &Payload,
    base: Map<String, Json>,
    received_at: i64,
) -> Vec<Arc<[u8]>> {
    let at = match d.message_type {
        MessageType::DDeath => p.timestamp.map_or(json!(received_at), |t| json!(t)),
        _ => json!(received_at),
    };
    d.stale
        .iter()
        .flat_map(|s| s.birth.metrics.iter().map(move |m| (s, m)))
        .map(|(s, m)| {
            let mut o = base.clone();
            o.insert("device_id".into(), json!(s.device_id));
            o.insert("name".into(), json!(m.name));
            if let Some(a) = m.alias {
                o.insert("alias".into(), json!(a));
            }
            o.insert("datatype".into(), json!(m.datatype.name()));
            o.insert("timestamp".into(), at.clone());
            o.insert("quality".into(), json!("stale"));
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

    fn nbirth(bd_seq: i64) -> Payload {
        Payload::new(1, Some(0))
            .with_metric(Metric::new("bdSeq", MetricValue::Int64(bd_seq)))
            .with_metric(Metric::new(
                "Node Control/Rebirth",
                MetricValue::Boolean(false),
            ))
    }

    fn ndeath(bd_seq: i64) -> Payload {
        Payload::new(50, None).with_metric(Metric::new("bdSeq", MetricValue::Int64(bd_seq)))
    }

    /// (device_id, name, quality) of each record.
    fn stale_of(d: &mut SparkplugDecoder, e: &Event, offset: u64) -> Vec<(Json, Json, Json)> {
        let o = d.observe(e, offset).expect("decoded");
        metric_values(&o, e, 777)
            .iter()
            .map(|v| {
                let v = value(v);
                (
                    v["device_id"].clone(),
                    v["name"].clone(),
                    v["quality"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn deaths_make_every_metric_of_the_last_births_stale() {
        let store = StateStore::temporary().expect("store");
        let mut d = SparkplugDecoder::new(Some(&store));
        d.observe(&ev("spBv1.0/g/NBIRTH/n", &nbirth(3)), 1);
        d.observe(&ev("spBv1.0/g/DBIRTH/n/d1", &birth(1)), 2);
        let x = Payload::new(1, Some(2))
            .with_metric(Metric::new("x", MetricValue::Double(0.5)).with_alias(7));
        d.observe(&ev("spBv1.0/g/DBIRTH/n/d2", &x), 3);
        // DDEATH: d2's metric, at the DDEATH's timestamp
        // [tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-tags-stale].
        let ddeath = ev("spBv1.0/g/DDEATH/n/d2", &Payload::new(40, Some(3)));
        let o = d.observe(&ddeath, 4).expect("decoded");
        let v: Vec<Json> = metric_values(&o, &ddeath, 777)
            .iter()
            .map(|v| value(v))
            .collect();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (&v[0]["device_id"], &v[0]["name"], &v[0]["alias"]),
            (&json!("d2"), &json!("x"), &json!(7))
        );
        assert_eq!(v[0]["datatype"], "Double");
        assert_eq!(
            (&v[0]["quality"], &v[0]["timestamp"]),
            (&json!("stale"), &json!(40))
        );
        assert_eq!(v[0]["message_type"], "DDEATH");
        assert!(
            v[0].get("value").is_none(),
            "a stale record has no value: {}",
            v[0]
        );
        // NDEATH: the node's metrics and those of d1 (d2 is dead already), at receipt time
        // [...-ndeath-node-tags-stale, ...-ndeath-devices-tags-stale].
        let death = ev("spBv1.0/g/NDEATH/n", &ndeath(3));
        let o = d.observe(&death, 5).expect("decoded");
        let v: Vec<Json> = metric_values(&o, &death, 777)
            .iter()
            .map(|v| value(v))
            .collect();
        let names: Vec<(Json, Json)> = v
            .iter()
            .map(|v| (v["device_id"].clone(), v["name"].clone()))
            .collect();
        assert_eq!(
            names,
            [
                (Json::Null, json!("bdSeq")),
                (Json::Null, json!("Node Control/Rebirth")),
                (json!("d1"), json!("temp")),
                (json!("d1"), json!("on")),
            ]
        );
        assert!(
            v.iter()
                .all(|v| v["quality"] == "stale" && v["timestamp"] == 777)
        );
        // An NDEATH of an older session (another bdSeq) makes nothing stale: one record per
        // metric of the death itself, as before.
        let old = ev("spBv1.0/g/NDEATH/n", &ndeath(2));
        assert_eq!(
            stale_of(&mut d, &old, 6),
            [(Json::Null, json!("bdSeq"), json!("stale"))]
        );
        // After a restart the devices are known from the stored births (a DDEATH read before
        // it is not: d2 is made stale once more).
        let mut d = SparkplugDecoder::new(Some(&store));
        assert_eq!(stale_of(&mut d, &death, 5).len(), 5);
        // A new session: devices born before its NBIRTH are not part of it.
        d.observe(&ev("spBv1.0/g/NBIRTH/n", &nbirth(4)), 10);
        assert_eq!(
            stale_of(&mut d, &ev("spBv1.0/g/NDEATH/n", &ndeath(4)), 11).len(),
            2
        );
        // A DDEATH without a known DBIRTH: one record, as before.
        let lone = ev("spBv1.0/g/DDEATH/n/zz", &Payload::new(3, Some(4)));
        assert_eq!(
            stale_of(&mut d, &lone, 12),
            [(json!("zz"), Json::Null, json!("stale"))]
        );
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
