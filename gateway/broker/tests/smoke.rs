//! The broker against a real client library (rumqttc), MQTT 3.1.1 and 5, on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use ironbridge_broker::{BrokerHandle, Message, MqttConfig, MqttStats, NoPersistence, QoS, start};

async fn broker() -> BrokerHandle {
    let config = MqttConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        allow_anonymous: true,
        ..MqttConfig::default()
    };
    start(
        config,
        Arc::new(NoPersistence),
        Arc::new(MqttStats::default()),
    )
    .await
    .expect("start")
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_publish_reaches_local_and_network_subscribers() {
    let b = broker().await;
    let mut local = b.subscribe(&["plant/#"]).expect("local");
    let port = b.tcp_addr().port();
    let mut opts = rumqttc::MqttOptions::new("sub-1", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_loop) = rumqttc::AsyncClient::new(opts, 10);
    sub.subscribe("plant/+/t", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    within(async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) =
                sub_loop.poll().await.expect("poll")
            {
                break;
            }
        }
    })
    .await;
    let (publ, mut pub_loop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("pub-1", "127.0.0.1", port), 10);
    publ.publish("plant/a/t", rumqttc::QoS::AtMostOnce, false, "21.5")
        .await
        .expect("publish");
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let got = within(async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) =
                sub_loop.poll().await.expect("poll")
            {
                return p;
            }
        }
    })
    .await;
    assert_eq!(got.topic, "plant/a/t");
    assert_eq!(&got.payload[..], b"21.5");
    // Published at QoS 0: delivered at QoS 0 although subscribed at 1 [MQTT-3.8.4-8].
    assert_eq!(got.qos, rumqttc::QoS::AtMostOnce);
    let m = within(local.next()).await.expect("local message");
    assert_eq!(m.topic, "plant/a/t");
    b.deliver(Message::new("plant/b/t", "x", QoS::AtLeastOnce, false));
    let got = within(async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) =
                sub_loop.poll().await.expect("poll")
            {
                return p;
            }
        }
    })
    .await;
    assert_eq!(
        (got.topic.as_str(), got.qos),
        ("plant/b/t", rumqttc::QoS::AtLeastOnce)
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_and_user_properties() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions, mqttbytes::QoS as Q};
    let b = broker().await;
    let port = b.tcp_addr().port();
    let (publ, mut pub_loop) = AsyncClient::new(MqttOptions::new("p5", "127.0.0.1", port), 10);
    let props = PublishProperties {
        user_properties: vec![("site".into(), "north".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publ.publish_with_properties("cell/1/state", Q::AtLeastOnce, true, "on", props)
        .await
        .expect("publish");
    within(async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.expect("poll") {
                break;
            }
        }
    })
    .await;
    let (sub, mut sub_loop) = AsyncClient::new(MqttOptions::new("s5", "127.0.0.1", port), 10);
    sub.subscribe("cell/#", Q::AtLeastOnce).await.expect("sub");
    let got = within(async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.expect("poll") {
                return p;
            }
        }
    })
    .await;
    assert!(got.retain, "retained message keeps its flag on subscribe");
    assert_eq!(&got.payload[..], b"on");
    let props = got.properties.expect("properties");
    assert_eq!(props.user_properties, vec![("site".into(), "north".into())]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    b.stop().await;
}
