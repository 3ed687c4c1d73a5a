//! Forwarding of audit records to Kafka through the normal data path: each record, as JSON,
//! is appended to the edge-buffer under `audit.forward_topic`, where `[[kafka.routes]]` pick it
//! up like any reading (durable across outages, ordered, exactly-once like the rest). Not
//! delivered to MQTT subscribers: the plant network does not see who did what.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::AuditRecord;
use crate::event::Event;
use crate::mqtt::BrokerHandle;

/// Records waiting for the buffer at most (a few seconds of a login storm).
pub const QUEUE: usize = 4096;
/// The publishing client id of forwarded records (the `mqtt_client_id` header in Kafka).
pub const CLIENT_ID: &str = "ironbridge-audit";

/// The buffer event of one record.
pub fn event(topic: &str, rec: &AuditRecord) -> Result<Event, serde_json::Error> {
    Ok(Event {
        topic: topic.to_string(),
        payload: Bytes::from(serde_json::to_vec(rec)?),
        qos: 1,
        client_id: Some(CLIENT_ID.into()),
        content_type: Some("application/json".into()),
        ..Event::default()
    })
}

/// Appends the records from `rx` to the buffer until the trail is gone. A record the buffer
/// refuses (full with the reject policy, disk error) is retried with a pause, so an outage of
/// the disk loses nothing that the queue can hold.
pub async fn run(mut rx: mpsc::Receiver<AuditRecord>, broker: Arc<BrokerHandle>, topic: String) {
    while let Some(rec) = rx.recv().await {
        let ev = match event(&topic, &rec) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(error = %e, seq = rec.seq, "audit record not forwarded");
                continue;
            }
        };
        let mut pause = Duration::from_millis(100);
        while let Err(e) = broker.append(&ev).await {
            tracing::warn!(error = %e, seq = rec.seq, "audit record not appended to the buffer yet; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}
