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

/// A client subscription through the front end (rumqttc's MQTT 3.1.1 or 5 client), ready
/// once its SUBACK arrived. The task resolves to whether a publish came before the connection
/// ended.
macro_rules! subscriber {
    ($port:expr, $topic:expr, $id:expr, $m:path, $qos:path, $packet:path) => {{
        use $m::{AsyncClient, Event as E, MqttOptions};
        use $packet as Packet;
        let (client, mut events) = AsyncClient::new(MqttOptions::new($id, "127.0.0.1", $port), 16);
        client.subscribe($topic, $qos).await.expect("subscribe");
        loop {
            if let E::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connection") {
                break;
            }
        }
        tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(E::Incoming(Packet::Publish(_))) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
    }};
}

/// What the gateway publishes itself right before it stops (the edge node's NDEATH) reaches
/// the connected subscribers: `publish` only queues it for the router thread, so `stop` waits
/// for the router and each connection relays its queue before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_delivers_the_last_local_publish_to_connected_subscribers() {
    for round in 0..10 {
        let b = start(MqttConfig {
            allow_anonymous: true,
            ..config()
        })
        .await;
        let port = b.handle.tcp_addr().port();
        let v4 = subscriber!(
            port,
            "last/words",
            "sub-v4",
            rumqttc,
            rumqttc::QoS::AtLeastOnce,
            rumqttc::Packet
        );
        let v5 = subscriber!(
            port,
            "last/words",
            "sub-v5",
            rumqttc::v5,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            rumqttc::v5::mqttbytes::v5::Packet
        );
        b.handle
            .publish(&Event {
                topic: "last/words".into(),
                payload: payload("bye"),
                qos: 1,
                ..Event::default()
            })
            .await
            .expect("local publish");
        b.handle.stop().await;
        for (name, sub) in [("3.1.1", v4), ("5", v5)] {
            let got = tokio::time::timeout(Duration::from_secs(10), sub)
                .await
                .expect("subscriber ends after stop")
                .expect("subscriber task");
            assert!(
                got,
                "round {round}: the MQTT {name} subscriber's connection closed before the last publish"
            );
        }
    }
}
