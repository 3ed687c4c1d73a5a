//! Checks of rumqttd 0.20 behaviour that the MQTT front end is designed around (PUBACK.md).
//! If an upgrade changes one of these, the test says which assumption moved.

mod mqtt_common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ironbridge::mqtt::MqttConfig;
use mqtt_common::*;
use rumqttd::local::{LinkBuilder, LinkRx};
use rumqttd::protocol::v4::V4;
use rumqttd::{
    ConnectionSettings, LinkType, Notification, Router, RouterConfig, Server, ServerSettings,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

fn router_config(segment: usize, count: usize) -> RouterConfig {
    RouterConfig {
        max_connections: 10,
        max_outgoing_packet_count: 200,
        max_segment_size: segment,
        max_segment_count: count,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Forwards readable within `wait`, without answering Unschedule.
fn drain(rx: &mut LinkRx, wait: Duration) -> (Vec<rumqttd::Forward>, bool) {
    let mut out = Vec::new();
    let mut unscheduled = false;
    let deadline = Instant::now() + wait;
    // Ok(None): a wake-up token whose notifications an earlier call already took.
    while let Ok(n) = rx.recv_deadline(deadline) {
        match n {
            Some(Notification::Forward(f)) => out.push(f),
            Some(Notification::Unschedule) => unscheduled = true,
            _ => {}
        }
    }
    (out, unscheduled)
}

#[test]
fn local_link_stalls_without_wake_and_drops_retain_flag() {
    let router_tx = Router::new(0, router_config(1 << 20, 4)).spawn();
    let (mut sub_tx, mut sub_rx, _) = LinkBuilder::new("sub", router_tx.clone())
        .build()
        .expect("link");
    sub_tx.subscribe("#").expect("subscribe");
    let _ = drain(&mut sub_rx, Duration::from_millis(200)); // SUBACK
    let (mut pub_tx, _pub_rx, _) = LinkBuilder::new("pub", router_tx).build().expect("link");
    let retained = rumqttd::protocol::Publish::new(
        bytes::Bytes::from_static(b"facts/r"),
        bytes::Bytes::from_static(b"r"),
        true,
    );
    futures_block_on(pub_tx.send(rumqttd::protocol::Packet::Publish(retained, None)))
        .expect("send");
    for i in 0..1000u32 {
        pub_tx
            .publish("facts/a", i.to_be_bytes().to_vec())
            .expect("publish");
    }
    // Let the router fill the subscriber's outgoing buffer before reading it.
    std::thread::sleep(Duration::from_millis(300));
    let (first, unscheduled) = drain(&mut sub_rx, Duration::from_millis(300));
    assert!(unscheduled, "no Unschedule");
    assert!(first.len() < 1000, "got all {} without a wake", first.len());
    assert!(
        !first[0].publish.retain,
        "retain flag reached the local link"
    );
    let mut total = first.len();
    let mut wakes = 0;
    while total < 1001 {
        sub_rx.ready().expect("wake");
        wakes += 1;
        let (more, _) = drain(&mut sub_rx, Duration::from_millis(300));
        assert!(
            !more.is_empty(),
            "nothing after wake {wakes}, {total} so far (first {})",
            first.len()
        );
        total += more.len();
    }
    assert!(wakes >= 3, "{wakes} wakes for 1001 messages");
    // Forward carries (segment, absolute offset): contiguous offsets are how gaps would show.
    let offsets: Vec<u64> = first.iter().filter_map(|f| f.cursor.map(|c| c.1)).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
}

/// `LinkTx::send` is async but never awaits anything; run it to completion here.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn lagging_subscriber_skips_data_when_segments_roll() {
    let router_tx = Router::new(0, router_config(1024, 1)).spawn();
    let (mut sub_tx, mut sub_rx, _) = LinkBuilder::new("sub", router_tx.clone())
        .build()
        .expect("link");
    sub_tx.subscribe("#").expect("subscribe");
    let _ = drain(&mut sub_rx, Duration::from_millis(200));
    let (mut pub_tx, _pub_rx, _) = LinkBuilder::new("pub", router_tx).build().expect("link");
    // ~20 KiB into a 1 KiB × 1 commit log while the subscriber does not read.
    for i in 0..200u32 {
        pub_tx
            .publish("facts/gap", vec![i as u8; 100])
            .expect("publish");
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut got = Vec::new();
    loop {
        let (batch, unscheduled) = drain(&mut sub_rx, Duration::from_millis(300));
        got.extend(batch);
        if !unscheduled {
            break;
        }
        sub_rx.ready().expect("wake");
    }
    let offsets: Vec<u64> = got.iter().filter_map(|f| f.cursor.map(|c| c.1)).collect();
    let jumps: u64 = offsets.windows(2).map(|w| w[1] - w[0] - 1).sum::<u64>()
        + offsets.first().copied().unwrap_or(200);
    assert!(got.len() < 200, "nothing lost: {}", got.len());
    assert_eq!(
        got.len() as u64 + jumps,
        200,
        "the offsets account for every lost message"
    );
}

async fn plain_rumqttd(auth: Option<(&str, &str)>) -> SocketAddr {
    let router_tx = Router::new(0, router_config(1 << 20, 4)).spawn();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    let settings = ServerSettings {
        name: "plain".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: auth.map(|(u, p)| [(u.to_string(), p.to_string())].into_iter().collect()),
            external_auth: None,
            dynamic_filters: false,
        },
    };
    let mut server = Server::new(settings, router_tx, V4);
    tokio::spawn(async move {
        let _ = server.start(LinkType::Remote).await;
    });
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("rumqttd not listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_no_connack() {
    let addr = plain_rumqttd(Some(("u", "right"))).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // CONNECT, MQTT 3.1.1, clean, user+password flags, keep-alive 60, id "c", user "u", pw "wrong".
    let mut c = vec![
        0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'c', 0, 1, b'u', 0, 5,
    ];
    c.extend_from_slice(b"wrong");
    c[1] = (c.len() - 2) as u8;
    s.write_all(&c).await.expect("send");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time");
    assert_eq!(n.expect("read"), 0, "rumqttd answered {:?}", &buf);
}

/// `mosquitto_sub -d` until its SUBACK, then the first PUBLISH debug line.
async fn sub_publish_line(port: &str, extra: &[&str], publish: &[&str]) -> Option<String> {
    let mut child = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-d",
            "-W",
            "3",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while let Some(l) = lines.next_line().await.expect("line") {
        if l.contains("SUBACK") {
            break;
        }
    }
    pub_ok(publish, None).await;
    while let Ok(Some(l)) = lines.next_line().await {
        if l.contains("received PUBLISH") {
            return Some(l);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rumqttd_qos_upgrade_and_dollar_topics() {
    let addr = plain_rumqttd(None).await;
    let port = addr.port().to_string();
    // A QoS 0 publish reaches a QoS 1 subscriber as QoS 1 (MQTT says min of the two).
    let l = sub_publish_line(
        &port,
        &["-q", "1", "-t", "f/#"],
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "0",
            "-t",
            "f/x",
            "-m",
            "a",
        ],
    )
    .await
    .expect("delivered");
    assert!(l.contains("q1"), "{l}");
    // `$` topics: acknowledged, delivered to nobody (not even to "#").
    let l = sub_publish_line(
        &port,
        &["-t", "#"],
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "$custom/a",
            "-m",
            "a",
        ],
    )
    .await;
    assert_eq!(l, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_properties_reach_mqtt311_subscribers() {
    let b = start(MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let port = b.port();
    let publish = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-t",
        "mix/x",
        "-m",
        "hi",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
    ];
    let l = sub_publish_line(&port, &["-V", "mqttv311", "-t", "mix/#"], &publish).await;
    assert!(l.is_some(), "MQTT 3.1.1 subscriber got nothing");
}
