//! The built-in demo device for `ironbridge --demo`: a simulated machine whose readings enter
//! the gateway like any publish (buffer first, then local subscribers and the uplink).
//!
//! Topics: `ironbridge/demo/<signal>`; payload: `{"value": …, "unit": …, "ts": <ms>, "quality": "good"}`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::event::Event;
use crate::mqtt::{BrokerHandle, MqttError};

/// One reading every `PERIOD` per signal.
const PERIOD: Duration = Duration::from_secs(1);

fn readings(t: f64, count: u64) -> [(&'static str, String, &'static str); 4] {
    let temperature = 21.0 + 3.0 * (t / 60.0).sin();
    let pressure = 2.4 + 0.1 * (t / 7.0).cos();
    let running = (t as u64 / 30) % 4 != 3;
    [
        ("temperature", format!("{temperature:.2}"), "degC"),
        ("pressure", format!("{pressure:.3}"), "bar"),
        ("motor_running", running.to_string(), ""),
        ("parts_count", count.to_string(), "parts"),
    ]
}

/// Publishes simulated readings until `stop` resolves.
pub async fn run(
    broker: Arc<BrokerHandle>,
    stop: impl Future<Output = ()>,
) -> Result<(), MqttError> {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(PERIOD);
    let mut count = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        count += 1;
        for (signal, value, unit) in readings(now.as_secs_f64(), count) {
            let payload = format!(
                "{{\"value\":{value},\"unit\":\"{unit}\",\"ts\":{},\"quality\":\"good\"}}",
                now.as_millis()
            );
            let event = Event {
                topic: format!("ironbridge/demo/{signal}"),
                payload: Bytes::from(payload),
                qos: 1,
                client_id: Some("ironbridge-demo-device".into()),
                content_type: Some("application/json".into()),
                ..Event::default()
            };
            broker.publish(&event).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn readings_are_valid_json_numbers() {
        for (_, value, _) in super::readings(1234.5, 7) {
            assert!(
                serde_json::from_str::<serde_json::Value>(&value).is_ok(),
                "{value}"
            );
        }
    }
}
