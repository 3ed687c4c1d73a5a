//! Modbus devices on the data path: the adapters' poller reads the configured devices, and every
//! reading becomes a publish on `ironbridge/modbus/<device>/<tag>` through the MQTT endpoint, so
//! it is appended to the buffer (and seen by local subscribers and the uplink) like any publish.
//!
//! Payload (JSON): `{"value": 21.5, "unit": "degC", "quality": "good", "ts": <poll time, ms>}`;
//! a bad reading has `"value": null`, `"quality": "bad"` and a `"reason"`.
//!
//! [`ModbusHub`] is what other components (Sparkplug edge node, web UI) use: latest values,
//! a fan-out of readings, and writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ironbridge_adapters::modbus::{
    Device, DeviceHealth, Poller, PollerHandle, Quality, Reading, Value, WriteError, WriteOutcome,
};
use tokio::sync::{RwLock, broadcast, mpsc};

use crate::clock::lock;
use crate::event::Event;
use crate::mqtt::{BrokerHandle, MqttError};

pub const TOPIC_PREFIX: &str = "ironbridge/modbus";

/// Readings waiting to be published; the poller waits when it is full (bounded memory).
const QUEUE: usize = 1024;

/// Readings kept for each subscriber of [`ModbusHub::subscribe`]; a subscriber that falls
/// further behind gets `Lagged` and must resynchronise from [`ModbusHub::latest`].
const FANOUT: usize = 4096;

/// The latest per-device health, shared with `/api/status` and `/metrics`.
pub type HealthBoard = Arc<Mutex<Vec<DeviceHealth>>>;

/// The running Modbus side as the rest of the gateway sees it: the configured devices, the
/// latest reading of every tag (report-by-exception means a tag that does not change is not
/// re-sent, so births and the UI need this), a fan-out of new readings (Sparkplug edge node,
/// UI), and writes (Sparkplug DCMD, UI). Survives restarts of the polling component.
pub struct ModbusHub {
    devices: Mutex<Vec<Arc<Device>>>,
    latest: Mutex<HashMap<(String, String), Reading>>,
    readings: broadcast::Sender<Reading>,
    poller: RwLock<Option<PollerHandle>>,
    health: HealthBoard,
    /// The Sparkplug edge node's embedded session waits for its primary host (no births).
    sparkplug_waiting: AtomicBool,
}

impl ModbusHub {
    pub fn new(health: HealthBoard) -> Arc<ModbusHub> {
        Arc::new(ModbusHub {
            devices: Mutex::new(Vec::new()),
            latest: Mutex::new(HashMap::new()),
            readings: broadcast::channel(FANOUT).0,
            poller: RwLock::new(None),
            health,
            sparkplug_waiting: AtomicBool::new(false),
        })
    }

    /// Set by the Sparkplug edge node while its embedded session waits for the primary host:
    /// the JSON topics carry the readings to the buffer meanwhile
    /// ([`JsonTopics::WhileSparkplugWaits`]).
    pub fn set_sparkplug_waiting(&self, waiting: bool) {
        self.sparkplug_waiting.store(waiting, Ordering::Relaxed);
    }

    pub fn sparkplug_waiting(&self) -> bool {
        self.sparkplug_waiting.load(Ordering::Relaxed)
    }

    /// New readings from now on (changes and heartbeats, as the poller reports them).
    pub fn subscribe(&self) -> broadcast::Receiver<Reading> {
        self.readings.subscribe()
    }

    /// The devices being polled (empty while the poller is not running).
    pub fn devices(&self) -> Vec<Arc<Device>> {
        lock(&self.devices).clone()
    }

    /// The latest reading of every tag of `device` seen since the poller started.
    pub fn latest(&self, device: &str) -> Vec<Reading> {
        let mut v: Vec<Reading> = lock(&self.latest)
            .values()
            .filter(|r| r.device == device)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.tag.cmp(&b.tag));
        v
    }

    /// The latest reading of one tag.
    pub fn latest_tag(&self, device: &str, tag: &str) -> Option<Reading> {
        lock(&self.latest)
            .get(&(device.to_string(), tag.to_string()))
            .cloned()
    }

    pub fn health(&self) -> Vec<DeviceHealth> {
        lock(&self.health).clone()
    }

    /// Writes a tag through the running poller (type and range checked there; read-only and
    /// unknown tags refused). `WriteError::Stopped` while the poller is not running.
    pub async fn write(
        &self,
        device: &str,
        tag: &str,
        value: Value,
    ) -> Result<WriteOutcome, WriteError> {
        match self.poller.read().await.as_ref() {
            Some(p) => p.write(device, tag, value).await,
            None => Err(WriteError::Stopped),
        }
    }

    fn record(&self, r: &Reading) {
        lock(&self.latest).insert((r.device.clone(), r.tag.clone()), r.clone());
        // No subscriber is fine.
        let _ = self.readings.send(r.clone());
    }
}

/// Turns a reading into the publish that carries it.
pub fn reading_event(r: &Reading, unit: &str) -> Event {
    let mut body = serde_json::json!({
        "value": r.value,
        "unit": unit,
        "ts": r.timestamp_ms,
    });
    match &r.quality {
        Quality::Good => body["quality"] = "good".into(),
        Quality::Stale => body["quality"] = "stale".into(),
        Quality::Bad(reason) => {
            body["quality"] = "bad".into();
            body["reason"] = reason.to_string().into();
        }
    }
    Event {
        topic: format!("{TOPIC_PREFIX}/{}/{}", r.device, r.tag),
        payload: Bytes::from(body.to_string()),
        qos: 1,
        client_id: Some(format!("modbus:{}", r.device)),
        content_type: Some("application/json".into()),
        ..Event::default()
    }
}

/// When readings are published as JSON on `ironbridge/modbus/<device>/<tag>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonTopics {
    /// Every reading (no Sparkplug edge node, or `sparkplug.json_topics = true`).
    Always,
    /// While the Sparkplug edge node's embedded session waits for its primary host (no
    /// births): the data path to the buffer and Kafka never stops.
    WhileSparkplugWaits,
}

/// Polls `devices` until `stop` resolves: every reading goes to the hub and is published as
/// JSON on `ironbridge/modbus/<device>/<tag>` through `broker` as `json` says.
pub async fn run(
    devices: Vec<Device>,
    hub: Arc<ModbusHub>,
    broker: Arc<BrokerHandle>,
    json: JsonTopics,
    stop: impl Future<Output = ()>,
) -> Result<(), MqttError> {
    let units: HashMap<(String, String), String> = devices
        .iter()
        .flat_map(|d| {
            d.tags
                .iter()
                .map(move |t| ((d.name.clone(), t.name.clone()), t.unit.clone()))
        })
        .collect();
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let poller = Poller::spawn(devices, tx);
    *lock(&hub.devices) = poller.devices().to_vec();
    lock(&hub.latest).clear();
    *hub.poller.write().await = Some(poller);
    tokio::pin!(stop);
    let mut board_tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = board_tick.tick() => {
                if let Some(p) = hub.poller.read().await.as_ref() {
                    *lock(&hub.health) = p.health();
                }
            }
            reading = rx.recv() => {
                let Some(r) = reading else { break Ok(()) };
                hub.record(&r);
                if json == JsonTopics::Always || hub.sparkplug_waiting() {
                    let unit = units.get(&(r.device.clone(), r.tag.clone())).map(String::as_str).unwrap_or("");
                    if let Err(e) = broker.publish(&reading_event(&r, unit)).await {
                        break Err(e);
                    }
                }
            }
        }
    };
    let poller = hub.poller.write().await.take();
    lock(&hub.devices).clear();
    if let Some(p) = poller {
        p.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbridge_adapters::modbus::{BadReason, Value};

    #[test]
    fn readings_become_json_publishes() {
        let r = Reading {
            device: "press".into(),
            tag: "temp".into(),
            value: Some(Value::F32(21.5)),
            quality: Quality::Good,
            timestamp_ms: 1000,
        };
        let e = reading_event(&r, "degC");
        assert_eq!(e.topic, "ironbridge/modbus/press/temp");
        let v: serde_json::Value = serde_json::from_slice(&e.payload).expect("json");
        assert_eq!(v["value"], 21.5);
        assert_eq!(v["unit"], "degC");
        assert_eq!(v["quality"], "good");
        assert_eq!(v["ts"], 1000);

        let bad = Reading {
            value: None,
            quality: Quality::Bad(BadReason::Exception(2)),
            ..r
        };
        let v: serde_json::Value =
            serde_json::from_slice(&reading_event(&bad, "").payload).expect("json");
        assert_eq!(v["quality"], "bad");
        assert!(v["value"].is_null());
        assert!(
            v["reason"]
                .as_str()
                .is_some_and(|s| s.contains("exception 2")),
            "{v}"
        );
    }
}
