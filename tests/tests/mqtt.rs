//! The MQTT publishing helpers (`mosquitto_pub`, paho-mqtt v2) against a real `mosquitto` broker.

use std::time::Duration;

use anyhow::Result;
use ironbridge_e2e::{External, Mosquitto, MqttPublish, MqttVersion, require};

const NEEDS: &[External] = &[
    External::Mosquitto,
    External::MosquittoClients,
    External::PythonVenv,
];

#[tokio::test]
async fn mosquitto_pub_and_paho_publish_v311_and_v5() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let broker = Mosquitto::start().await?;
    broker.subscribe("checker", "plant/#").await?;

    let mut p = MqttPublish::new(broker.port(), "plant/a", "from-mosquitto-v311");
    p.version = MqttVersion::V311;
    p.via_mosquitto().await?;

    let mut p = MqttPublish::new(broker.port(), "plant/b", "from-mosquitto-v5");
    p.user_properties = vec![("site".into(), "north".into())];
    p.content_type = Some("text/plain".into());
    p.via_mosquitto().await?;

    let mut p = MqttPublish::new(broker.port(), "plant/c", "paho-v311-{i}");
    p.version = MqttVersion::V311;
    p.count = 3;
    p.via_paho().await?;

    let mut p = MqttPublish::new(broker.port(), "plant/d", "paho-v5");
    p.qos = 2;
    p.user_properties = vec![("line".into(), "7".into())];
    p.content_type = Some("application/octet-stream".into());
    p.via_paho().await?;

    let got = broker
        .collect("checker", "plant/#", 6, Duration::from_secs(10))
        .await?;
    let summary: Vec<(String, String)> = got
        .iter()
        .map(|m| (m.topic.clone(), m.payload.as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        summary,
        [
            ("plant/a", "from-mosquitto-v311"),
            ("plant/b", "from-mosquitto-v5"),
            ("plant/c", "paho-v311-0"),
            ("plant/c", "paho-v311-1"),
            ("plant/c", "paho-v311-2"),
            ("plant/d", "paho-v5"),
        ]
        .map(|(t, p)| (t.to_owned(), p.to_owned()))
    );
    let props = |i: usize| got[i].properties.to_string();
    assert!(
        props(1).contains("north"),
        "user property lost: {}",
        props(1)
    );
    assert!(
        props(1).contains("text/plain"),
        "content type lost: {}",
        props(1)
    );
    assert!(
        props(5).contains("\"7\""),
        "user property lost: {}",
        props(5)
    );
    Ok(())
}

#[tokio::test]
async fn publish_to_a_closed_port_fails_clearly() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    let port = ironbridge_e2e::free_port()?;
    let mut p = MqttPublish::new(port, "t", "x");
    p.timeout = Duration::from_secs(5);
    let err = p.via_paho().await.expect_err("nothing listens there");
    assert!(format!("{err:#}").contains("Connection refused"), "{err:#}");
    assert!(p.via_mosquitto().await.is_err());
    Ok(())
}
