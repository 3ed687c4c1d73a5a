//! Routing: MQTT topic filters → Kafka topic, key templates, headers and values.
//!
//! # Key templates
//!
//! A key template is literal text with placeholders in braces:
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{topic}` | the whole MQTT topic |
//! | `{level[N]}` | level N of the MQTT topic, counted from 0 (`a/b/c`: `{level[1]}` is `b`) |
//! | `{client_id}` | the publishing MQTT client id |
//! | `{gateway_id}` | this gateway's id |
//! | `{property[NAME]}` | the first MQTT 5 user property called NAME |
//! | `{sparkplug.group_id}`, `{sparkplug.edge_node_id}`, `{sparkplug.device_id}` | parts of a Sparkplug B topic `spBv1.0/<group>/<type>/<edge node>[/<device>]` |
//! | `{{`, `}}` | a literal `{`, `}` |
//!
//! A placeholder with nothing to show (no such level, no client id, not a Sparkplug topic) is
//! empty. If the whole key comes out empty the record has no key (`key = ""` never sets one).
//!
//! # Partitions
//!
//! Keyed records go where the Java client's default partitioner puts them:
//! `toPositive(murmur2(key)) % partitions`. Records without a key are partitioned the same way by
//! their MQTT topic, so everything from one MQTT topic stays in one partition, in order.
//!
//! # Headers
//!
//! `mqtt_topic`, `mqtt_qos` (`0`–`2`), `mqtt_retain` (`true`/`false`), `mqtt_client_id` (when
//! known), `mqtt_content_type` (MQTT 5, when set), `gateway_id`, `buffer_offset` (decimal), then
//! every MQTT 5 user property under its own name. Kafka headers here are unique by name: a user
//! property whose name is already taken (a repeated property, or one called like the headers
//! above) gets `#2`, `#3`, … appended. Within a Kafka topic, `gateway_id` + `buffer_offset`
//! identify a record exactly, so a consumer can drop the duplicates that at-least-once delivery
//! may produce (the copy of a retained message in the retained topic carries the same pair).
//!
//! # JSON envelope (`value = "json"`)
//!
//! ```json
//! {"topic":"plant/line1/temp","qos":1,"retain":false,"timestamp":1700000000000,
//!  "client_id":"plc-7","content_type":"text/plain","user_properties":{"unit":"degC"},
//!  "payload":"21.5","payload_encoding":"utf8"}
//! ```
//!
//! `timestamp` is the acceptance time in ms since the Unix epoch. `payload` is UTF-8 text when the
//! payload is valid UTF-8 (`"payload_encoding":"utf8"`), otherwise base64
//! (`"payload_encoding":"base64"`). `client_id` and `content_type` are left out when unknown.
//! A user property name that occurs more than once maps to an array of its values, in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use rskafka::record::Record;

use super::config::{Unmatched, UplinkConfig, ValueFormat};
use super::partitioner::{murmur2, to_positive};
use super::sparkplug::{self as sp, SparkplugDecoder};
use crate::event::Event;

/// A parsed MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    levels: Vec<FilterLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FilterLevel {
    Exact(String),
    Single,
    Multi,
}

impl TopicFilter {
    /// Parses a filter by MQTT's rules: `+` fills a whole level, `#` only as the last level.
    pub fn parse(filter: &str) -> Result<TopicFilter, String> {
        if filter.is_empty() {
            return Err("an MQTT topic filter must not be empty".into());
        }
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            levels.push(match *p {
                "+" => FilterLevel::Single,
                "#" if i + 1 == parts.len() => FilterLevel::Multi,
                "#" => return Err(format!("{filter:?}: '#' must be the last level")),
                p if p.contains(['+', '#']) => {
                    return Err(format!("{filter:?}: '+' and '#' must fill a whole level"));
                }
                p => FilterLevel::Exact(p.to_string()),
            });
        }
        Ok(TopicFilter { levels })
    }

    /// Whether `topic` matches. As in MQTT, topics starting with `$` match no filter starting
    /// with a wildcard.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(FilterLevel::Exact(_))) {
            return false;
        }
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                FilterLevel::Multi => return true,
                FilterLevel::Single => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                FilterLevel::Exact(e) => {
                    if parts.next() != Some(e.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// A parsed key template (syntax in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Text(String),
    Topic,
    Level(usize),
    ClientId,
    GatewayId,
    Property(String),
    SparkplugGroup,
    SparkplugNode,
    SparkplugDevice,
}

impl KeyTemplate {
    pub fn parse(template: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at {i} (write '}}}}' for a literal one)"
                    ));
                }
                '{' => {
                    let rest = &template[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("unclosed '{{' at {i}"));
                    };
                    let name = &rest[..end];
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                    if !text.is_empty() {
                        parts.push(KeyPart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Self::placeholder(name)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(KeyPart::Text(text));
        }
        Ok(KeyTemplate { parts })
    }

    fn placeholder(name: &str) -> Result<KeyPart, String> {
        let indexed = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('['))
                .and_then(|r| r.strip_suffix(']'))
        };
        Ok(match name {
            "topic" => KeyPart::Topic,
            "client_id" => KeyPart::ClientId,
            "gateway_id" => KeyPart::GatewayId,
            "sparkplug.group_id" => KeyPart::SparkplugGroup,
            "sparkplug.edge_node_id" => KeyPart::SparkplugNode,
            "sparkplug.device_id" => KeyPart::SparkplugDevice,
            _ => {
                if let Some(n) = indexed("level") {
                    KeyPart::Level(
                        n.parse().map_err(|_| {
                            format!("{{{name}}}: the level must be a number from 0")
                        })?,
                    )
                } else if let Some(p) = indexed("property").filter(|p| !p.is_empty()) {
                    KeyPart::Property(p.to_string())
                } else {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; use {{topic}}, {{level[N]}}, {{client_id}}, \
                         {{gateway_id}}, {{property[NAME]}} or {{sparkplug.group_id|edge_node_id|device_id}}"
                    ));
                }
            }
        })
    }

    /// Renders the key for `event`; `None` when it comes out empty.
    pub fn render(&self, event: &Event, gateway_id: &str) -> Option<Vec<u8>> {
        let mut out = String::new();
        let sparkplug = |i: usize| -> Option<&str> {
            let mut it = event.topic.split('/');
            if it.next() != Some("spBv1.0") {
                return None;
            }
            event.topic.split('/').nth(i)
        };
        for p in &self.parts {
            match p {
                KeyPart::Text(t) => out.push_str(t),
                KeyPart::Topic => out.push_str(&event.topic),
                KeyPart::Level(n) => out.push_str(event.topic.split('/').nth(*n).unwrap_or("")),
                KeyPart::ClientId => out.push_str(event.client_id.as_deref().unwrap_or("")),
                KeyPart::GatewayId => out.push_str(gateway_id),
                KeyPart::Property(name) => out.push_str(
                    event
                        .user_properties
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or(""),
                ),
                KeyPart::SparkplugGroup => out.push_str(sparkplug(1).unwrap_or("")),
                KeyPart::SparkplugNode => out.push_str(sparkplug(3).unwrap_or("")),
                KeyPart::SparkplugDevice => out.push_str(sparkplug(4).unwrap_or("")),
            }
        }
        (!out.is_empty()).then(|| out.into_bytes())
    }
}

/// Builds the Kafka headers of one event (see the module docs).
pub fn headers(event: &Event, gateway_id: &str, offset: u64) -> BTreeMap<String, Vec<u8>> {
    let mut h = BTreeMap::new();
    h.insert("mqtt_topic".to_string(), event.topic.clone().into_bytes());
    h.insert("mqtt_qos".to_string(), event.qos.to_string().into_bytes());
    h.insert(
        "mqtt_retain".to_string(),
        if event.retain {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        },
    );
    if let Some(c) = &event.client_id {
        h.insert("mqtt_client_id".to_string(), c.clone().into_bytes());
    }
    if let Some(c) = &event.content_type {
        h.insert("mqtt_content_type".to_string(), c.clone().into_bytes());
    }
    h.insert("gateway_id".to_string(), gateway_id.as_bytes().to_vec());
    h.insert("buffer_offset".to_string(), offset.to_string().into_bytes());
    for (k, v) in &event.user_properties {
        let mut name = k.clone();
        let mut n = 1;
        while h.contains_key(&name) {
            n += 1;
            name = format!("{k}#{n}");
        }
        h.insert(name, v.clone().into_bytes());
    }
    h
}

/// The JSON envelope of one event (see the module docs).
pub fn envelope(event: &Event, timestamp_ms: i64) -> Vec<u8> {
    use serde_json::{Map, Value};
    let mut m = Map::new();
    m.insert("topic".into(), Value::from(event.topic.as_str()));
    m.insert("qos".into(), Value::from(event.qos));
    m.insert("retain".into(), Value::from(event.retain));
    m.insert("timestamp".into(), Value::from(timestamp_ms));
    if let Some(c) = &event.client_id {
        m.insert("client_id".into(), Value::from(c.as_str()));
    }
    if let Some(c) = &event.content_type {
        m.insert("content_type".into(), Value::from(c.as_str()));
    }
    if !event.user_properties.is_empty() {
        let mut props = Map::new();
        for (k, v) in &event.user_properties {
            match props.get_mut(k) {
                None => {
                    props.insert(k.clone(), Value::from(v.as_str()));
                }
                Some(Value::Array(a)) => a.push(Value::from(v.as_str())),
                Some(prev) => {
                    let first = prev.take();
                    *prev = Value::Array(vec![first, Value::from(v.as_str())]);
                }
            }
        }
        m.insert("user_properties".into(), Value::Object(props));
    }
    match std::str::from_utf8(&event.payload) {
        Ok(s) => {
            m.insert("payload".into(), Value::from(s));
            m.insert("payload_encoding".into(), Value::from("utf8"));
        }
        Err(_) => {
            let b = base64::engine::general_purpose::STANDARD.encode(&event.payload);
            m.insert("payload".into(), Value::from(b));
            m.insert("payload_encoding".into(), Value::from("base64"));
        }
    }
    // Serializing a Map of Values cannot fail.
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// Where a built record is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Route(usize),
    Default,
    Retained,
}

/// A Kafka record ready to be partitioned and produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub offset: u64,
    pub topic: Arc<str>,
    /// `toPositive(murmur2(key or MQTT topic))`; the partition is this modulo the count.
    pub hash: u32,
    pub record: Record,
    pub size: usize,
    pub origin: Origin,
}

/// What routing made of one event.
#[derive(Debug)]
pub enum Routed {
    Records(Vec<Built>),
    /// Matched no route and `unmatched = "drop"`.
    Dropped,
}

struct CompiledRoute {
    filter: TopicFilter,
    topic: Arc<str>,
    key: KeyTemplate,
    value: ValueFormat,
}

/// Compiled routes plus the default and retained targets.
pub struct Router {
    routes: Vec<CompiledRoute>,
    default_topic: Option<Arc<str>>,
    default_key: KeyTemplate,
    retained_topic: Option<Arc<str>>,
    gateway_id: String,
    /// Present when a route decodes Sparkplug: sees every record, in log order.
    sparkplug: Option<SparkplugDecoder>,
}

impl Router {
    /// Compiles the routes of a validated config.
    pub fn new(
        config: &UplinkConfig,
        gateway_id: String,
    ) -> Result<Router, super::config::ConfigError> {
        Self::with_state(config, gateway_id, None)
    }

    /// Like [`Router::new`]; the Sparkplug birth history of `sparkplug_*` routes is persisted in
    /// `state` (see `uplink::sparkplug`).
    pub fn with_state(
        config: &UplinkConfig,
        gateway_id: String,
        state: Option<&crate::state::StateStore>,
    ) -> Result<Router, super::config::ConfigError> {
        use super::config::ConfigError;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            routes.push(CompiledRoute {
                filter: TopicFilter::parse(&r.filter)
                    .map_err(|m| ConfigError::new(format!("kafka.routes[{i}].filter"), m))?,
                topic: Arc::from(r.topic.as_str()),
                key: KeyTemplate::parse(&r.key)
                    .map_err(|m| ConfigError::new(format!("kafka.routes[{i}].key"), m))?,
                value: r.value,
            });
        }
        Ok(Router {
            routes,
            default_topic: (config.unmatched == Unmatched::Forward)
                .then(|| Arc::from(config.default_topic.as_str())),
            default_key: KeyTemplate {
                parts: vec![KeyPart::Topic],
            },
            retained_topic: config.retained_topic.as_deref().map(Arc::from),
            gateway_id,
            sparkplug: config
                .routes
                .iter()
                .any(|r| r.value.is_sparkplug())
                .then(|| SparkplugDecoder::new(state)),
        })
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Routes one decoded event accepted at `timestamp_ms` and stored at `offset`.
    pub fn route(&mut self, event: &Event, offset: u64, timestamp_ms: i64) -> Routed {
        // Births are learnt from every record, whatever route it takes.
        let decoded = self
            .sparkplug
            .as_mut()
            .and_then(|d| d.observe(event, offset));
        let matched = self
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.filter.matches(&event.topic));
        let (origin, topic, key_t, value) = match matched {
            Some((i, r)) => (Origin::Route(i), Arc::clone(&r.topic), &r.key, r.value),
            None => match &self.default_topic {
                Some(t) => (
                    Origin::Default,
                    Arc::clone(t),
                    &self.default_key,
                    ValueFormat::Raw,
                ),
                None => {
                    return match self.retained(event, offset, timestamp_ms) {
                        Some(b) => Routed::Records(vec![b]),
                        None => Routed::Dropped,
                    };
                }
            },
        };
        let key = key_t.render(event, &self.gateway_id);
        let mut out = Vec::with_capacity(1);
        match (value, &decoded) {
            (ValueFormat::SparkplugMetrics, Some(d)) => {
                for (i, v) in sp::metric_values(d, event, timestamp_ms)
                    .into_iter()
                    .enumerate()
                {
                    let mut b = self.build(
                        event,
                        offset,
                        timestamp_ms,
                        Arc::clone(&topic),
                        key.clone(),
                        Some(v.to_vec()),
                        origin,
                    );
                    b.record
                        .headers
                        .insert("sparkplug_metric_index".into(), i.to_string().into_bytes());
                    b.size += 32;
                    out.push(b);
                }
            }
            _ => {
                let value = match (value, &decoded) {
                    (ValueFormat::SparkplugJson, Some(d)) => {
                        sp::message_value(d, event, timestamp_ms)
                    }
                    (ValueFormat::Json, _) => envelope(event, timestamp_ms),
                    _ => event.payload.to_vec(),
                };
                out.push(self.build(event, offset, timestamp_ms, topic, key, Some(value), origin));
            }
        }
        if let Some(b) = self.retained(event, offset, timestamp_ms) {
            out.push(b);
        }
        Routed::Records(out)
    }

    fn retained(&self, event: &Event, offset: u64, timestamp_ms: i64) -> Option<Built> {
        let topic = self.retained_topic.as_ref().filter(|_| event.retain)?;
        let value = (!event.payload.is_empty()).then(|| event.payload.to_vec());
        let key = Some(event.topic.clone().into_bytes());
        Some(self.build(
            event,
            offset,
            timestamp_ms,
            Arc::clone(topic),
            key,
            value,
            Origin::Retained,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        event: &Event,
        offset: u64,
        timestamp_ms: i64,
        topic: Arc<str>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        origin: Origin,
    ) -> Built {
        let hash = to_positive(murmur2(key.as_deref().unwrap_or(event.topic.as_bytes())));
        let record = Record {
            key,
            value,
            headers: headers(event, &self.gateway_id, offset),
            timestamp: timestamp(timestamp_ms),
        };
        // Record framing (lengths, varints, deltas) adds a few bytes per record and header.
        let size = record.approximate_size() + 16 + 4 * record.headers.len();
        Built {
            offset,
            topic,
            hash,
            record,
            size,
            origin,
        }
    }
}

/// Milliseconds since the epoch as a chrono time (clamped to the representable range).
pub fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::uplink::config::RouteConfig;

    fn ev(topic: &str) -> Event {
        Event {
            topic: topic.into(),
            payload: Bytes::from_static(b"21.5"),
            qos: 1,
            retain: false,
            client_id: Some("plc-7".into()),
            content_type: None,
            user_properties: vec![],
        }
    }

    #[test]
    fn filters_match_like_mqtt() {
        let f = |s: &str| TopicFilter::parse(s).expect("valid filter");
        assert!(f("a/b/c").matches("a/b/c"));
        assert!(!f("a/b/c").matches("a/b"));
        assert!(!f("a/b").matches("a/b/c"));
        assert!(f("a/+/c").matches("a/x/c"));
        assert!(f("a/+/c").matches("a//c"));
        assert!(!f("a/+/c").matches("a/x/y/c"));
        assert!(f("a/#").matches("a"));
        assert!(f("a/#").matches("a/b/c/d"));
        assert!(!f("a/#").matches("b/a"));
        assert!(f("#").matches("x/y"));
        assert!(f("+").matches("x"));
        assert!(!f("+").matches("x/y"));
        assert!(f("+/+").matches("/x"));
        assert!(!f("#").matches("$SYS/broker"));
        assert!(!f("+/broker").matches("$SYS/broker"));
        assert!(f("$SYS/#").matches("$SYS/broker"));
        for bad in ["", "a/#/b", "a/b#", "a+/b", "#/"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn key_templates_render() {
        let mut e = ev("spBv1.0/plant1/DDATA/edge7/press3");
        e.user_properties = vec![("line".into(), "L1".into()), ("line".into(), "L2".into())];
        let render = |t: &str, e: &Event| {
            KeyTemplate::parse(t)
                .expect("valid template")
                .render(e, "gw1")
                .map(|k| String::from_utf8(k).expect("utf8"))
        };
        let r = |t: &str| render(t, &e);
        assert_eq!(
            r("{topic}").as_deref(),
            Some("spBv1.0/plant1/DDATA/edge7/press3")
        );
        assert_eq!(r("{level[1]}/{level[4]}").as_deref(), Some("plant1/press3"));
        assert_eq!(r("{level[9]}"), None);
        assert_eq!(r("x{level[9]}").as_deref(), Some("x"));
        assert_eq!(r("{client_id}@{gateway_id}").as_deref(), Some("plc-7@gw1"));
        assert_eq!(r("{property[line]}").as_deref(), Some("L1"));
        assert_eq!(r("{property[none]}"), None);
        assert_eq!(
            r("{sparkplug.group_id}:{sparkplug.edge_node_id}:{sparkplug.device_id}").as_deref(),
            Some("plant1:edge7:press3")
        );
        assert_eq!(
            r("{{literal}} {topic}").map(|s| s.len()),
            Some("{literal} ".len() + e.topic.len())
        );
        assert_eq!(r(""), None);
        e.topic = "plant/x".into();
        assert_eq!(render("{sparkplug.group_id}", &e), None);
        for bad in [
            "{",
            "}",
            "{nope}",
            "{level[x]}",
            "{level}",
            "{property[]}",
            "{topic",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn headers_carry_mqtt_metadata_and_dedup_ids() {
        let mut e = ev("a/b");
        e.retain = true;
        e.qos = 2;
        e.content_type = Some("application/json".into());
        e.user_properties = vec![
            ("unit".into(), "degC".into()),
            ("unit".into(), "K".into()),
            ("gateway_id".into(), "spoof".into()),
        ];
        let h = headers(&e, "gw1", 42);
        let s = |k: &str| h.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(s("mqtt_topic").as_deref(), Some("a/b"));
        assert_eq!(s("mqtt_qos").as_deref(), Some("2"));
        assert_eq!(s("mqtt_retain").as_deref(), Some("true"));
        assert_eq!(s("mqtt_client_id").as_deref(), Some("plc-7"));
        assert_eq!(s("mqtt_content_type").as_deref(), Some("application/json"));
        assert_eq!(s("gateway_id").as_deref(), Some("gw1"));
        assert_eq!(s("buffer_offset").as_deref(), Some("42"));
        assert_eq!(s("unit").as_deref(), Some("degC"));
        assert_eq!(s("unit#2").as_deref(), Some("K"));
        assert_eq!(s("gateway_id#2").as_deref(), Some("spoof"));
        assert_eq!(h.len(), 10);
        e.client_id = None;
        e.content_type = None;
        e.user_properties.clear();
        assert_eq!(headers(&e, "gw1", 0).len(), 5);
    }

    #[test]
    fn json_envelope() {
        let mut e = ev("a/b");
        e.user_properties = vec![
            ("k".into(), "1".into()),
            ("k".into(), "2".into()),
            ("j".into(), "x".into()),
        ];
        let v: serde_json::Value =
            serde_json::from_slice(&envelope(&e, 1_700_000_000_123)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"topic":"a/b","qos":1,"retain":false,"timestamp":1_700_000_000_123i64,
                "client_id":"plc-7","user_properties":{"k":["1","2"],"j":"x"},
                "payload":"21.5","payload_encoding":"utf8"})
        );
        e.payload = Bytes::from_static(&[0xff, 0x00, 0x10]);
        e.client_id = None;
        e.user_properties.clear();
        e.content_type = Some("application/octet-stream".into());
        let v: serde_json::Value = serde_json::from_slice(&envelope(&e, 5)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"topic":"a/b","qos":1,"retain":false,"timestamp":5,
                "content_type":"application/octet-stream","payload":"/wAQ","payload_encoding":"base64"})
        );
    }

    fn router(routes: Vec<RouteConfig>, unmatched: Unmatched, retained: Option<&str>) -> Router {
        let c = UplinkConfig {
            routes,
            unmatched,
            retained_topic: retained.map(String::from),
            ..Default::default()
        };
        c.validate().expect("valid");
        Router::new(&c, "gw1".into()).expect("router")
    }

    fn route(filter: &str, topic: &str, key: &str, value: ValueFormat) -> RouteConfig {
        RouteConfig {
            name: None,
            filter: filter.into(),
            topic: topic.into(),
            key: key.into(),
            value,
        }
    }

    #[test]
    fn first_match_wins_then_default_or_drop() {
        let routes = vec![
            route("plant/+/temp", "temps", "{level[1]}", ValueFormat::Raw),
            route("plant/#", "plant", "{topic}", ValueFormat::Json),
        ];
        let mut r = router(routes.clone(), Unmatched::Forward, None);
        let one = |r: &mut Router, topic: &str| match r.route(&ev(topic), 7, 1000) {
            Routed::Records(mut v) => {
                assert_eq!(v.len(), 1);
                v.pop()
            }
            Routed::Dropped => None,
        };
        let b = one(&mut r, "plant/l1/temp").expect("routed");
        assert_eq!((&*b.topic, b.origin), ("temps", Origin::Route(0)));
        assert_eq!(b.record.key.as_deref(), Some(&b"l1"[..]));
        assert_eq!(b.hash, to_positive(murmur2(b"l1")));
        assert_eq!(b.record.value.as_deref(), Some(&b"21.5"[..]));
        assert_eq!(b.record.timestamp.timestamp_millis(), 1000);
        let b = one(&mut r, "plant/l1/pressure").expect("routed");
        assert_eq!((&*b.topic, b.origin), ("plant", Origin::Route(1)));
        assert!(
            b.record
                .value
                .as_deref()
                .is_some_and(|v| v.starts_with(b"{"))
        );
        let b = one(&mut r, "other").expect("default");
        assert_eq!((&*b.topic, b.origin), ("mqtt", Origin::Default));
        assert_eq!(b.record.key.as_deref(), Some(&b"other"[..]));
        let mut r = router(routes, Unmatched::Drop, None);
        assert!(one(&mut r, "other").is_none());
    }

    #[test]
    fn keyless_records_partition_by_mqtt_topic() {
        let mut r = router(
            vec![route("#", "all", "", ValueFormat::Raw)],
            Unmatched::Drop,
            None,
        );
        let Routed::Records(v) = r.route(&ev("a/b"), 0, 0) else {
            panic!("dropped")
        };
        assert_eq!(v[0].record.key, None);
        assert_eq!(v[0].hash, to_positive(murmur2(b"a/b")));
    }

    #[test]
    fn retained_messages_also_go_to_the_retained_topic() {
        let mut r = router(
            vec![route("a/#", "t", "x", ValueFormat::Raw)],
            Unmatched::Drop,
            Some("retained"),
        );
        let mut e = ev("a/b");
        e.retain = true;
        let Routed::Records(v) = r.route(&e, 3, 0) else {
            panic!("dropped")
        };
        assert_eq!(v.len(), 2);
        assert_eq!((&*v[1].topic, v[1].origin), ("retained", Origin::Retained));
        assert_eq!(v[1].record.key.as_deref(), Some(&b"a/b"[..]));
        // Clearing a retained message is a tombstone; unmatched retained messages still go.
        e.payload = Bytes::new();
        e.topic = "z".into();
        let Routed::Records(v) = r.route(&e, 4, 0) else {
            panic!("dropped")
        };
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].record.value, None);
        e.retain = false;
        assert!(matches!(r.route(&e, 5, 0), Routed::Dropped));
    }
}

#[cfg(test)]
mod sparkplug_tests {
    use bytes::Bytes;

    use super::*;
    use crate::sparkplug::payload::{Metric, MetricValue, Payload};
    use crate::uplink::config::RouteConfig;

    #[test]
    fn sparkplug_routes_decode_and_learn_births_from_every_record() {
        let c = UplinkConfig {
            routes: vec![
                RouteConfig {
                    name: None,
                    filter: "spBv1.0/+/NBIRTH/#".into(),
                    topic: "births".into(),
                    key: "{topic}".into(),
                    value: ValueFormat::Raw,
                },
                RouteConfig {
                    name: None,
                    filter: "spBv1.0/#".into(),
                    topic: "metrics".into(),
                    key: "{sparkplug.edge_node_id}".into(),
                    value: ValueFormat::SparkplugMetrics,
                },
                RouteConfig {
                    name: None,
                    filter: "#".into(),
                    topic: "other".into(),
                    key: "{topic}".into(),
                    value: ValueFormat::SparkplugJson,
                },
            ],
            ..Default::default()
        };
        c.validate().expect("valid");
        let mut r = Router::new(&c, "gw".into()).expect("router");
        let ev = |topic: &str, p: Payload| Event {
            topic: topic.into(),
            payload: Bytes::from(p.encode().expect("encode")),
            ..Event::default()
        };
        let birth = Payload::new(1, Some(0))
            .with_metric(Metric::new("a", MetricValue::Int8(0)).with_alias(1))
            .with_metric(Metric::new("b", MetricValue::Boolean(false)).with_alias(2));
        // The birth goes raw to "births", and is learnt anyway.
        let Routed::Records(v) = r.route(&ev("spBv1.0/g/NBIRTH/n", birth.clone()), 1, 0) else {
            panic!("dropped")
        };
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].record.value.as_deref(),
            Some(&birth.encode().expect("e")[..])
        );
        let mut data = Payload::new(2, Some(1));
        data.metrics = vec![
            Metric::aliased(1, MetricValue::UInt32(0xFF)),
            Metric::aliased(2, MetricValue::Boolean(true)),
        ];
        let Routed::Records(v) = r.route(&ev("spBv1.0/g/NDATA/n", data), 2, 0) else {
            panic!("dropped")
        };
        assert_eq!(v.len(), 2);
        let j: serde_json::Value =
            serde_json::from_slice(v[0].record.value.as_deref().expect("value")).expect("json");
        assert_eq!(
            (j["name"].as_str(), j["value"].as_i64()),
            (Some("a"), Some(-1))
        );
        assert_eq!(
            v[1].record.headers.get("sparkplug_metric_index"),
            Some(&b"1".to_vec())
        );
        assert_eq!(v[1].record.key.as_deref(), Some(&b"n"[..]));
        // Not Sparkplug: sent as-is.
        let plain = Event {
            topic: "plant/x".into(),
            payload: Bytes::from_static(b"21.5"),
            ..Event::default()
        };
        let Routed::Records(v) = r.route(&plain, 3, 0) else {
            panic!("dropped")
        };
        assert_eq!(v[0].record.value.as_deref(), Some(&b"21.5"[..]));
    }
}
