//! The broker stays a broker: retained messages and last wills reach local subscribers, and
//! a will that fires is also recorded in the buffer.

mod mqtt_common;

use std::process::Stdio;
use std::time::Duration;

use ironbridge::mqtt::MqttConfig;
use mqtt_common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `mosquitto_sub -d` and returns once its SUBACK arrived, with its stdout lines.
async fn subscriber(
    args: &[&str],
) -> (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    // mosquitto_sub flushes stdout only per message; line-buffer it to see the SUBACK.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(args)
        .arg("-d")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub (apt-get install mosquitto-clients)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.expect("read") {
            if l.contains("SUBACK") {
                return;
            }
        }
        panic!("subscriber ended before SUBACK");
    })
    .await
    .expect("SUBACK in time");
    (child, lines)
}

/// Next stdout line that is not mosquitto debug output.
async fn next_message(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.expect("read") {
            if !l.starts_with("Client ") && !l.starts_with("Subscribed") {
                return l;
            }
        }
        panic!("subscriber ended");
    })
    .await
    .expect("message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_last_will() {
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let port = b.port();

    // Retained: stored by the router and replayed (retain flag set) to a later subscriber.
    pub_ok(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-r",
            "-t",
            "plant/state",
            "-m",
            "running",
        ],
        None,
    )
    .await;
    for v in ["mqttv311", "mqttv5"] {
        let (_sub, mut lines) = subscriber(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            v,
            "-t",
            "plant/#",
            "-F",
            "%r %t %p",
        ])
        .await;
        assert_eq!(
            next_message(&mut lines).await,
            "1 plant/state running",
            "{v}"
        );
    }

    // Last will: a client that vanishes (SIGKILL) has its will delivered and recorded.
    let (_sub, mut lines) = subscriber(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "dead/#",
        "-F",
        "%t %p",
    ])
    .await;
    let before = b.handle.stats().snapshot().connections_current;
    let mut victim = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "victim",
            "-t",
            "quiet",
            "-k",
            "5",
        ])
        .args([
            "--will-topic",
            "dead/victim",
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("victim");
    let stats = b.handle.stats();
    until("victim connected", Duration::from_secs(10), || {
        stats.snapshot().connections_current > before
    })
    .await;
    victim.kill().await.expect("kill victim");
    assert_eq!(next_message(&mut lines).await, "dead/victim bye");
    let events = read_events(&b.log, 2, Duration::from_secs(10)).await;
    let will = &events[1].1;
    assert_eq!(
        (will.topic.as_str(), will.qos, will.client_id.as_deref()),
        ("dead/victim", 1, Some("victim"))
    );
    assert_eq!(will.payload, payload("bye"));
    assert_eq!(b.handle.stats().snapshot().wills_recorded, 1);

    // A clean DISCONNECT discards the will, in the router and in the buffer.
    pub_ok(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "plant/x",
            "-m",
            "1",
            "--will-topic",
            "dead/clean",
            "--will-payload",
            "no",
        ],
        None,
    )
    .await;
    let events = read_events(&b.log, 3, Duration::from_secs(10)).await;
    assert_eq!(events[2].1.topic, "plant/x");
    assert_eq!(b.handle.stats().snapshot().wills_recorded, 1);
    b.handle.stop().await;
}
