//! Commands from Kafka to the gateway's devices: reads `sparkplug.commands.kafka_topic` (every
//! partition; next offsets kept in sled, tree `sparkplug.commands`), checks each command against
//! `sparkplug.commands.allow`, publishes it as a Sparkplug DCMD (or NCMD rebirth) to the gateway's
//! own edge node on the embedded broker with the command id in the payload's `uuid`, and writes
//! every Kafka command's result (from the edge node's [`CommandAudit`]) to
//! `sparkplug.commands.result_topic` when set.
//!
//! # Command records (JSON values)
//!
//! ```json
//! {"id": "c-42", "device": "press", "tag": "setpoint", "value": 42.5}
//! {"id": "c-43", "rebirth": true}
//! ```
//!
//! `id` is optional (default `kafka-<partition>-<offset>`). The value is converted to the tag's
//! Sparkplug datatype as announced in the gateway's own DBIRTH (numbers must fit exactly);
//! before that birth is known, a JSON integer is sent as Int64, a fraction as Double, a boolean
//! as Boolean and a string as String, and the edge node checks the type.
//!
//! A command is refused (and reported with outcome `rejected`) when it is not valid JSON of
//! this form, when `device/tag` is not in the allow-list (`device/*` allows a whole device; an
//! empty list allows nothing), or when it is older than [`MAX_AGE`] by its Kafka timestamp
//! (commands queued while the gateway was down are not replayed to a machine hours later). A
//! rebirth request is always allowed.
//!
//! # Results (JSON values, key = the command id)
//!
//! `{"id","kind":"DCMD"|"NCMD","device","tag","value","outcome":"ok"|"rejected"|"failed",
//! "reason","time_ms","gateway_id"}`.
//!
//! Offsets: the next offset of a partition is stored (flushed) once its fetched records were
//! handled, so a command is executed at most once per gateway, apart from a crash between the
//! publish and the flush. A fresh gateway starts at the earliest retained record; [`MAX_AGE`]
//! keeps old ones from being executed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;
use tokio::time::{sleep, timeout};

use super::config::{SaslMechanism, UplinkConfig};
use super::partitioner::partition_for_key;
use crate::clock::now_ms_u64 as now_ms;
use crate::event::Event;
use crate::mqtt::BrokerHandle;
use crate::sparkplug::SparkplugConfig;
use crate::sparkplug::audit::{
    CommandAudit, CommandRecord, CommandResult, CommandSource, Outcome, Requester,
};
use crate::sparkplug::ingest::SharedIngest;
use crate::sparkplug::payload::{DataType, Metric, MetricValue, Payload};
use crate::sparkplug::topic::{MessageType, Topic};
use crate::state::{StateStore, Tree};

/// Commands older than this (Kafka timestamp) are refused.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Largest command record fetched.
const MAX_FETCH_BYTES: i32 = 1 << 20;
const FETCH_WAIT_MS: i32 = 500;
/// Sled tree of the next offsets (`<topic>/<partition>` → offset).
pub const TREE: &str = "sparkplug.commands";

#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    #[error("kafka commands: {0}")]
    Kafka(String),
    #[error("kafka commands: state store: {0}")]
    State(#[from] crate::state::StateError),
    #[error("kafka commands: {0}")]
    Config(#[from] super::ConfigError),
}

/// A command record as parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Write {
        id: String,
        device: String,
        tag: String,
        value: Json,
    },
    Rebirth {
        id: String,
    },
}

impl Command {
    /// Parses a record value; `default_id` when it has no `id`.
    pub fn parse(value: &[u8], default_id: String) -> Result<Command, (String, String)> {
        let v: Json = serde_json::from_slice(value).map_err(|e| {
            (
                default_id.clone(),
                format!("malformed command (not JSON): {e}"),
            )
        })?;
        let id = match v.get("id") {
            Some(Json::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
            Some(Json::Number(n)) => n.to_string(),
            None | Some(Json::Null) => default_id,
            Some(_) => return Err((default_id, "malformed command: bad \"id\"".into())),
        };
        if v.get("rebirth").and_then(Json::as_bool) == Some(true) {
            return Ok(Command::Rebirth { id });
        }
        let field = |name: &str| {
            v.get(name)
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let (Some(device), Some(tag)) = (field("device"), field("tag")) else {
            return Err((
                id,
                "malformed command: needs \"device\" and \"tag\" (or \"rebirth\": true)".into(),
            ));
        };
        let Some(value) = v.get("value").cloned() else {
            return Err((id, "malformed command: no \"value\"".into()));
        };
        if crate::sparkplug::topic::validate_id(&device).is_err() {
            return Err((id, format!("malformed command: device {device:?}")));
        }
        Ok(Command::Write {
            id,
            device,
            tag,
            value,
        })
    }
}

/// Whether `device/tag` is in the allow-list (`device/*` allows the whole device).
pub fn allowed(allow: &[String], device: &str, tag: &str) -> bool {
    allow.iter().any(|a| match a.split_once('/') {
        Some((d, "*")) => d == device,
        Some((d, t)) => d == device && t == tag,
        None => false,
    })
}

/// The value of a JSON command without a known datatype.
fn guess(v: &Json) -> Option<MetricValue> {
    Some(match v {
        Json::Bool(b) => MetricValue::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => MetricValue::Int64(i),
            None => MetricValue::Double(n.as_f64()?),
        },
        Json::String(s) => MetricValue::String(s.clone()),
        _ => return None,
    })
}

/// Everything the consumer needs from the rest of the gateway.
pub struct Context {
    pub sparkplug: SparkplugConfig,
    /// The gateway's own edge node id (`sparkplug.edge_node_id` or the gateway id).
    pub edge_node_id: String,
    pub gateway_id: String,
    pub broker: Arc<BrokerHandle>,
    pub audit: Arc<CommandAudit>,
    pub ingest: Option<SharedIngest>,
    pub state: StateStore,
}

/// A Kafka command record as the requester of a command.
fn kafka(actor: &str, id: String) -> Requester {
    Requester::new(CommandSource::Kafka, Some(actor.to_string()), Some(id))
}

impl Context {
    fn reject(
        &self,
        from: Requester,
        kind: &str,
        device: Option<String>,
        tag: &str,
        value: Json,
        reason: String,
    ) {
        let id = from.correlation_id.as_deref().unwrap_or_default();
        tracing::warn!(%id, ?device, tag, %reason, "kafka command refused");
        self.audit.record(CommandResult {
            from,
            kind: kind.into(),
            device,
            metric: tag.into(),
            value,
            outcome: Outcome::Rejected,
            reason: Some(reason),
        });
    }

    /// Handles one command record (`actor`: where it is, `kafka:<topic>/<partition>@<offset>`;
    /// `age` from its Kafka timestamp).
    pub async fn handle(&self, value: &[u8], actor: &str, default_id: String, age: Duration) {
        let cmd = match Command::parse(value, default_id) {
            Ok(c) => c,
            Err((id, reason)) => {
                let raw = String::from_utf8_lossy(&value[..value.len().min(256)]).into_owned();
                self.reject(kafka(actor, id), "DCMD", None, "", Json::from(raw), reason);
                return;
            }
        };
        let group = &self.sparkplug.group_id;
        let (id, event, kind) = match cmd {
            Command::Rebirth { id } => {
                if age > MAX_AGE {
                    let r = format!("expired: {} s old", age.as_secs());
                    self.reject(
                        kafka(actor, id),
                        "NCMD",
                        None,
                        "Node Control/Rebirth",
                        json!(true),
                        r,
                    );
                    return;
                }
                let mut p = Payload::new(now_ms(), None).with_metric(Metric::new(
                    "Node Control/Rebirth",
                    MetricValue::Boolean(true),
                ));
                p.uuid = Some(id.clone());
                let topic = Topic::node(group, MessageType::NCmd, &self.edge_node_id);
                (id, (topic, p), "NCMD")
            }
            Command::Write {
                id,
                device,
                tag,
                value,
            } => {
                if !allowed(&self.sparkplug.commands.allow, &device, &tag) {
                    let r = format!("{device}/{tag} is not in sparkplug.commands.allow");
                    self.reject(kafka(actor, id), "DCMD", Some(device), &tag, value, r);
                    return;
                }
                if age > MAX_AGE {
                    let r = format!("expired: {} s old", age.as_secs());
                    self.reject(kafka(actor, id), "DCMD", Some(device), &tag, value, r);
                    return;
                }
                let datatype: Option<DataType> = match &self.ingest {
                    Some(i) => i
                        .lock()
                        .await
                        .metric_def(group, &self.edge_node_id, Some(&device), &tag)
                        .map(|d| d.datatype),
                    None => None,
                };
                let typed = match datatype {
                    Some(dt) => MetricValue::from_json(dt, &value),
                    None => guess(&value).ok_or_else(|| format!("{value} is not a scalar")),
                };
                let v = match typed {
                    Ok(v) => v,
                    Err(e) => {
                        self.reject(
                            kafka(actor, id),
                            "DCMD",
                            Some(device),
                            &tag,
                            value,
                            format!("bad value: {e}"),
                        );
                        return;
                    }
                };
                let mut p = Payload::new(now_ms(), None).with_metric(Metric::new(&tag, v));
                p.uuid = Some(id.clone());
                let topic = Topic::device(group, MessageType::DCmd, &self.edge_node_id, &device);
                (id, (topic, p), "DCMD")
            }
        };
        let (topic, payload) = event;
        let bytes = match payload.encode() {
            Ok(b) => b,
            Err(e) => {
                self.reject(
                    kafka(actor, id),
                    kind,
                    None,
                    "",
                    Json::Null,
                    format!("cannot encode: {e}"),
                );
                return;
            }
        };
        self.audit.expect(&id, actor.to_string());
        let ev = Event {
            topic: topic.to_string(),
            payload: Bytes::from(bytes),
            // NCMD/DCMD are QoS 0, not retained (tck-id-topics-ncmd-mqtt, -dcmd-mqtt).
            qos: 0,
            client_id: Some("ironbridge-kafka-commands".into()),
            ..Event::default()
        };
        match self.broker.publish(&ev).await {
            Ok(_) => tracing::info!(%id, topic = %ev.topic, "kafka command published"),
            Err(e) => {
                // Not published: report it ourselves (the edge node never sees it).
                self.audit.claim(Some(&id), None);
                self.audit.record(CommandResult {
                    from: kafka(actor, id),
                    kind: kind.into(),
                    device: None,
                    metric: String::new(),
                    value: Json::Null,
                    outcome: Outcome::Failed,
                    reason: Some(format!("could not publish on the local broker: {e}")),
                });
            }
        }
    }
}

/// The result record of a Kafka command.
pub fn result_value(r: &CommandRecord, gateway_id: &str) -> Json {
    json!({
        "id": r.correlation_id,
        "kind": r.kind,
        "device": r.device,
        "tag": r.metric,
        "value": r.value,
        "outcome": r.outcome.as_str(),
        "reason": r.reason,
        "time_ms": r.time_ms,
        "gateway_id": gateway_id,
    })
}

async fn connect(cfg: &UplinkConfig) -> Result<Client, CommandsError> {
    let mut b = ClientBuilder::new(cfg.bootstrap_servers.clone())
        .client_id(format!("{}-commands", cfg.client_id));
    if cfg.tls.enabled {
        b = b.tls_config(super::tls::client_config(&cfg.tls)?);
    }
    if let Some(s) = &cfg.sasl {
        let c = Credentials::new(s.username.clone(), s.password.clone());
        b = b.sasl_config(match s.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(c),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
        });
    }
    match timeout(cfg.request_timeout(), b.build()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(CommandsError::Kafka(format!("connecting: {e}"))),
        Err(_) => Err(CommandsError::Kafka("connecting timed out".into())),
    }
}

async fn partitions(client: &Client, topic: &str) -> Result<i32, CommandsError> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| CommandsError::Kafka(format!("metadata: {e}")))?;
    topics
        .iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.len() as i32)
        .filter(|n| *n > 0)
        .ok_or_else(|| CommandsError::Kafka(format!("topic {topic} does not exist")))
}

/// One partition of the command topic.
struct Reader {
    client: PartitionClient,
    partition: i32,
    next: i64,
    key: String,
}

impl Reader {
    async fn open(
        client: &Client,
        topic: &str,
        partition: i32,
        tree: &Tree,
    ) -> Result<Reader, CommandsError> {
        let pc = client
            .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| CommandsError::Kafka(format!("{topic}/{partition}: {e}")))?;
        let key = format!("{topic}/{partition}");
        let next = match StateStore::get_json::<i64>(tree, &key)? {
            Some(o) => o,
            None => pc
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(|e| CommandsError::Kafka(format!("{key}: earliest offset: {e}")))?,
        };
        Ok(Reader {
            client: pc,
            partition,
            next,
            key,
        })
    }
}

/// Runs the command consumer and the result writer until `stop`. Kafka being unreachable or the
/// topic missing is retried (every few seconds); only a state store failure ends it (and the
/// supervisor restarts it).
pub async fn run(
    kafka: UplinkConfig,
    ctx: Context,
    stop: impl Future<Output = ()>,
) -> Result<(), CommandsError> {
    let topic = ctx.sparkplug.commands.kafka_topic.clone();
    let result_topic = ctx.sparkplug.commands.result_topic.clone();
    let tree = ctx.state.tree(TREE)?;
    let mut results = ctx.audit.subscribe();
    tokio::pin!(stop);
    let mut delay = Duration::from_millis(500);
    loop {
        let session = async {
            let client = connect(&kafka).await?;
            let n = partitions(&client, &topic).await?;
            let mut readers = Vec::with_capacity(n as usize);
            for p in 0..n {
                readers.push(Reader::open(&client, &topic, p, &tree).await?);
            }
            tracing::info!(%topic, partitions = n, "kafka command consumer ready");
            let mut writers: HashMap<i32, PartitionClient> = HashMap::new();
            let mut result_partitions: Option<i32> = None;
            loop {
                tokio::select! {
                    r = results.recv() => match r {
                        Ok(rec) => {
                            if rec.source != CommandSource::Kafka || result_topic.is_empty() {
                                continue;
                            }
                            write_result(&client, &result_topic, &mut result_partitions, &mut writers, &rec, &ctx.gateway_id).await?;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "kafka command results: fell behind the audit; some results not written");
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok::<(), CommandsError>(()),
                    },
                    r = fetch_all(&mut readers) => {
                        for (i, recs) in r? {
                            let reader = &mut readers[i];
                            let Some(last) = recs.last().map(|r| r.offset) else { continue };
                            for rec in recs {
                                let age = Duration::from_millis(
                                    (now_ms() as i64 - rec.record.timestamp.timestamp_millis())
                                        .max(0) as u64,
                                );
                                let id = format!("kafka-{}-{}", reader.partition, rec.offset);
                                let actor = format!("kafka:{}@{}", reader.key, rec.offset);
                                let value = rec.record.value.unwrap_or_default();
                                ctx.handle(&value, &actor, id, age).await;
                            }
                            reader.next = last + 1;
                            StateStore::put_json_durable(&tree, &reader.key, &reader.next)?;
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = session => r,
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(CommandsError::State(e)) => return Err(CommandsError::State(e)),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "kafka command consumer: retrying");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

type Fetched = Vec<(usize, Vec<rskafka::record::RecordAndOffset>)>;

async fn fetch_all(readers: &mut [Reader]) -> Result<Fetched, CommandsError> {
    let futs = readers.iter().enumerate().map(|(i, r)| async move {
        let res = r
            .client
            .fetch_records(r.next, 1..MAX_FETCH_BYTES, FETCH_WAIT_MS)
            .await;
        (i, res)
    });
    let mut out = Vec::new();
    for (i, res) in futures::future::join_all(futs).await {
        match res {
            Ok((recs, _high)) => {
                let next = readers[i].next;
                let recs: Vec<_> = recs.into_iter().filter(|r| r.offset >= next).collect();
                if !recs.is_empty() {
                    out.push((i, recs));
                }
            }
            Err(rskafka::client::error::Error::ServerError {
                protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                ..
            }) => {
                let r = &mut readers[i];
                let earliest = r
                    .client
                    .get_offset(OffsetAt::Earliest)
                    .await
                    .map_err(|e| CommandsError::Kafka(format!("{}: {e}", r.key)))?;
                tracing::warn!(key = %r.key, from = r.next, to = earliest, "kafka commands: offset out of range; skipping to the earliest retained");
                r.next = earliest;
            }
            Err(e) => {
                return Err(CommandsError::Kafka(format!(
                    "fetch {}: {e}",
                    readers[i].key
                )));
            }
        }
    }
    Ok(out)
}

async fn write_result(
    client: &Client,
    topic: &str,
    partitions_cache: &mut Option<i32>,
    writers: &mut HashMap<i32, PartitionClient>,
    rec: &CommandRecord,
    gateway_id: &str,
) -> Result<(), CommandsError> {
    let n = match partitions_cache {
        Some(n) => *n,
        None => {
            let n = partitions(client, topic).await?;
            *partitions_cache = Some(n);
            n
        }
    };
    let key = rec.correlation_id.clone().unwrap_or_default().into_bytes();
    let p = partition_for_key(&key, n);
    let pc = match writers.entry(p) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(
            client
                .partition_client(topic.to_string(), p, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| CommandsError::Kafka(format!("{topic}/{p}: {e}")))?,
        ),
    };
    let record = Record {
        key: Some(key),
        value: Some(serde_json::to_vec(&result_value(rec, gateway_id)).unwrap_or_default()),
        headers: Default::default(),
        timestamp: super::route::timestamp(now_ms() as i64),
    };
    pc.produce(vec![record], Compression::NoCompression)
        .await
        .map_err(|e| CommandsError::Kafka(format!("writing the result to {topic}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let c = Command::parse(
            br#"{"id":"a","device":"press","tag":"sp","value":4}"#,
            "d".into(),
        );
        assert_eq!(
            c,
            Ok(Command::Write {
                id: "a".into(),
                device: "press".into(),
                tag: "sp".into(),
                value: json!(4)
            })
        );
        assert_eq!(
            Command::parse(br#"{"rebirth":true}"#, "kafka-0-3".into()),
            Ok(Command::Rebirth {
                id: "kafka-0-3".into()
            })
        );
        assert_eq!(
            Command::parse(br#"{"id":7,"rebirth":true}"#, "x".into()),
            Ok(Command::Rebirth { id: "7".into() })
        );
        for bad in [
            &b"nope"[..],
            br#"{"device":"d"}"#,
            br#"{"device":"d","tag":"t"}"#,
            br#"{"device":"a/b","tag":"t","value":1}"#,
            br#"{"id":[],"rebirth":true}"#,
        ] {
            assert!(
                Command::parse(bad, "x".into()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn allow_list() {
        let allow = vec!["press/setpoint".to_string(), "pump/*".to_string()];
        assert!(allowed(&allow, "press", "setpoint"));
        assert!(!allowed(&allow, "press", "speed"));
        assert!(allowed(&allow, "pump", "anything"));
        assert!(!allowed(&[], "press", "setpoint"));
        assert!(!allowed(&["press".to_string()], "press", "setpoint"));
    }

    #[test]
    fn guesses_scalars() {
        assert_eq!(guess(&json!(3)), Some(MetricValue::Int64(3)));
        assert_eq!(guess(&json!(3.5)), Some(MetricValue::Double(3.5)));
        assert_eq!(guess(&json!(true)), Some(MetricValue::Boolean(true)));
        assert_eq!(guess(&json!([1])), None);
    }
}
