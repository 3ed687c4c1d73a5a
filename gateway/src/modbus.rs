//! Modbus devices on the data path: the adapters' poller reads the configured devices, and every
//! reading becomes a publish on `ironbridge/modbus/<device>/<tag>` through the MQTT endpoint, so
//! it is appended to the buffer (and seen by local subscribers and the uplink) like any publish.
//!
//! Payload (JSON): `{"value": 21.5, "unit": "degC", "quality": "good", "ts": <poll time, ms>}`;
//! a bad reading has `"value": null`, `"quality": "bad"` and a `"reason"`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ironbridge_adapters::modbus::{Device, DeviceHealth, Poller, Quality, Reading};
use tokio::sync::mpsc;

use crate::event::Event;
use crate::mqtt::{BrokerHandle, MqttError};

pub const TOPIC_PREFIX: &str = "ironbridge/modbus";

/// Readings waiting to be published; the poller waits when it is full (bounded memory).
const QUEUE: usize = 1024;

/// The latest per-device health, shared with `/api/status` and `/metrics`.
pub type HealthBoard = Arc<Mutex<Vec<DeviceHealth>>>;

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

/// Polls `devices` and publishes their readings until `stop` resolves.
pub async fn run(
    devices: Vec<Device>,
    broker: Arc<BrokerHandle>,
    health: HealthBoard,
    stop: impl Future<Output = ()>,
) -> Result<(), MqttError> {
    let units: std::collections::HashMap<(String, String), String> = devices
        .iter()
        .flat_map(|d| {
            d.tags
                .iter()
                .map(move |t| ((d.name.clone(), t.name.clone()), t.unit.clone()))
        })
        .collect();
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let poller = Poller::spawn(devices, tx);
    tokio::pin!(stop);
    let mut board_tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = board_tick.tick() => {
                *health.lock().unwrap_or_else(|p| p.into_inner()) = poller.health();
            }
            reading = rx.recv() => {
                let Some(r) = reading else { break Ok(()) };
                let unit = units.get(&(r.device.clone(), r.tag.clone())).map(String::as_str).unwrap_or("");
                if let Err(e) = broker.publish(&reading_event(&r, unit)).await {
                    break Err(e);
                }
            }
        }
    };
    poller.shutdown().await;
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
