//! The TLS listener with a generated certificate, used by mosquitto_pub --cafile.

mod mqtt_common;

use std::time::Duration;

use ironbridge::mqtt::{MqttConfig, TlsListenerConfig};
use mqtt_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");

    let b = start(MqttConfig {
        allow_anonymous: true,
        tls: Some(TlsListenerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: cert.clone(),
            key,
        }),
        ..config()
    })
    .await;
    let tls_port = b
        .handle
        .tls_addr()
        .expect("tls listener")
        .port()
        .to_string();
    let cafile = cert.to_str().expect("utf-8 path");
    for v in ["mqttv311", "mqttv5"] {
        let args = [
            "-h",
            "localhost",
            "-p",
            &tls_port,
            "--cafile",
            cafile,
            "-V",
            v,
            "-q",
            "1",
            "-t",
            "tls/t",
            "-m",
            v,
        ];
        pub_ok(&args, None).await;
    }
    // Without TLS on the TLS port the client gets nowhere, and nothing is recorded.
    let out = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &tls_port,
            "-q",
            "1",
            "-t",
            "tls/t",
            "-m",
            "plain",
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    let events = read_events(&b.log, 2, Duration::from_secs(10)).await;
    let got: Vec<_> = events.iter().map(|(_, e)| e.payload.clone()).collect();
    assert_eq!(got, vec![payload("mqttv311"), payload("mqttv5")]);
    assert_eq!(b.log.stats().next_offset, 2);
    b.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_certificate_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        std::sync::Arc::new(edge_buffer::Log::open(dir.path(), Default::default()).expect("log"));
    let cfg = MqttConfig {
        tls: Some(TlsListenerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        }),
        ..config()
    };
    let err = ironbridge::mqtt::start(cfg, log)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}
