//! In-process subscribers (`BrokerHandle::subscribe`, used by the Sparkplug edge node and
//! ingest) see client publishes, the gateway's own publishes and retained messages.

mod mqtt_common;

use std::time::Duration;

use ironbridge::event::Event;
use ironbridge::mqtt::{MqttConfig, Subscription};
use mqtt_common::*;

async fn next(sub: &mut Subscription) -> ironbridge::mqtt::Message {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("message in time")
        .expect("router alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_subscriber_sees_clients_own_publishes_and_retained() {
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let port = b.port();
    let mqtt = |args: &[&str]| {
        let mut v = vec!["-h", "127.0.0.1", "-p", &port, "-q", "1"];
        v.extend_from_slice(args);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Retained before the subscription exists: delivered on subscribe.
    let args = mqtt(&["-r", "-t", "spBv1.0/STATE/scada", "-m", "online"]);
    pub_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;

    let mut sub = b
        .handle
        .subscribe("test-local", &["spBv1.0/STATE/+", "cmd/#"])
        .await
        .expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.topic, "spBv1.0/STATE/scada");
    assert_eq!(&m.payload[..], b"online");

    let args = mqtt(&["-t", "cmd/press", "-m", "go"]);
    pub_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    let m = next(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("cmd/press", &b"go"[..])
    );

    b.handle
        .publish(&Event {
            topic: "cmd/own".into(),
            payload: payload("self"),
            qos: 1,
            ..Event::default()
        })
        .await
        .expect("local publish");
    let m = next(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("cmd/own", &b"self"[..])
    );
}
