//! CONNECT checks: argon2id users, refusals with a proper CONNACK, anonymous off by default.

mod mqtt_common;

use std::time::Duration;

use ironbridge::mqtt::{MqttConfig, hash_password};
use mqtt_common::*;

async fn attempt(
    port: &str,
    version: &str,
    login: Option<(&str, &str)>,
    msg: &str,
) -> (bool, String) {
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        version,
        "-q",
        "1",
        "-t",
        "auth/t",
        "-m",
        msg,
    ];
    if let Some((u, p)) = login {
        args.extend(["-u", u, "-P", p]);
    }
    let out = run("mosquitto_pub", &args, None).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_lowercase(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_wrong_password_and_anonymous() {
    let mut cfg = config();
    cfg.users
        .insert("plc".into(), hash_password("s3cret").expect("hash"));
    let b = start(cfg.clone()).await;
    let port = b.port();

    assert!(
        attempt(&port, "mqttv311", Some(("plc", "s3cret")), "ok-311")
            .await
            .0
    );
    assert!(
        attempt(&port, "mqttv5", Some(("plc", "s3cret")), "ok-5")
            .await
            .0
    );
    let (ok, err) = attempt(&port, "mqttv311", Some(("plc", "wrong")), "bad").await;
    assert!(!ok && err.contains("bad user name or password"), "{err}");
    let (ok, err) = attempt(&port, "mqttv5", Some(("nobody", "s3cret")), "bad").await;
    assert!(!ok && err.contains("bad user name or password"), "{err}");
    let (ok, err) = attempt(&port, "mqttv311", None, "anon").await;
    assert!(!ok && err.contains("not authori"), "{err}");
    let (ok, err) = attempt(&port, "mqttv5", None, "anon").await;
    assert!(!ok && err.contains("not authori"), "{err}");

    let events = read_events(&b.log, 2, Duration::from_secs(10)).await;
    let got: Vec<_> = events.iter().map(|(_, e)| e.payload.clone()).collect();
    assert_eq!(got, vec![payload("ok-311"), payload("ok-5")]);
    let s = b.handle.stats().snapshot();
    assert_eq!(
        (s.auth_failures, s.connections_total, s.publishes_received),
        (4, 2, 2)
    );
    b.handle.stop().await;

    // Anonymous allowed: no credentials pass, wrong credentials still fail.
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..cfg
    })
    .await;
    let port = b.port();
    assert!(attempt(&port, "mqttv311", None, "anon").await.0);
    assert!(
        !attempt(&port, "mqttv311", Some(("plc", "wrong")), "bad")
            .await
            .0
    );
    let events = read_events(&b.log, 1, Duration::from_secs(10)).await;
    assert_eq!(events[0].1.payload, payload("anon"));
    b.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = MqttConfig {
        listen: taken.local_addr().expect("addr"),
        ..MqttConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        std::sync::Arc::new(edge_buffer::Log::open(dir.path(), Default::default()).expect("log"));
    let err = ironbridge::mqtt::start(cfg, log)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("mqtt.listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_with_connack() {
    let b = start(MqttConfig {
        allow_anonymous: true,
        max_connections: 1,
        ..config()
    })
    .await;
    let port = b.port();
    let _holder = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "hold"])
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    let stats = b.handle.stats();
    until("holder connected", Duration::from_secs(10), || {
        stats.snapshot().connections_current == 1
    })
    .await;
    let (ok, err) = attempt(&port, "mqttv311", None, "over").await;
    assert!(!ok && err.contains("unavailable"), "{err}");
    assert_eq!(b.handle.stats().snapshot().refused_max_connections, 1);
}
