//! Every publish (QoS 0/1/2, MQTT 3.1.1 and 5) lands in the buffer with the right fields.

mod mqtt_common;

use std::time::Duration;

use mqtt_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_versions_properties_retain_and_order() {
    let b = start(ironbridge::mqtt::MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let port = b.port();
    let mut expected = Vec::new();
    for (v, vname) in [("mqttv311", "v311"), ("mqttv5", "v5")] {
        for qos in ["0", "1", "2"] {
            let topic = format!("plant/{vname}/q{qos}");
            let msg = format!("m-{vname}-{qos}");
            let id = format!("pub-{vname}-{qos}");
            let mut args = vec![
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                v,
                "-q",
                qos,
                "-t",
                &topic,
                "-m",
                &msg,
                "-i",
                &id,
            ];
            if vname == "v5" {
                args.extend(["-D", "publish", "user-property", "unit", "degC"]);
                args.extend(["-D", "publish", "user-property", "line", "7"]);
                args.extend(["-D", "publish", "content-type", "text/plain"]);
            }
            pub_ok(&args, None).await;
            expected.push((
                topic,
                msg,
                id,
                qos.parse::<u8>().expect("qos"),
                vname == "v5",
            ));
        }
    }
    // Retained, a Sparkplug topic and a `$` topic (rumqttd alone would drop the latter).
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
            "on",
            "-i",
            "ret",
        ],
        None,
    )
    .await;
    pub_ok(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "spBv1.0/G1/NDATA/E1",
            "-m",
            "x",
            "-i",
            "sp",
        ],
        None,
    )
    .await;
    pub_ok(
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
            "d",
            "-i",
            "dollar",
        ],
        None,
    )
    .await;
    // 200 lines from one publisher keep their order.
    let lines: String = (0..200).map(|i| format!("seq-{i}\n")).collect();
    pub_ok(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "plant/seq",
            "-l",
            "-i",
            "seq",
        ],
        Some(lines.as_bytes()),
    )
    .await;

    let events = read_events(&b.log, expected.len() + 3 + 200, Duration::from_secs(20)).await;
    for (i, (topic, msg, id, qos, v5)) in expected.iter().enumerate() {
        let (rec, ev) = &events[i];
        assert_eq!(rec.offset, i as u64);
        assert_eq!(&ev.topic, topic);
        assert_eq!(ev.payload, payload(msg));
        assert_eq!(ev.qos, *qos, "{topic}");
        assert!(!ev.retain);
        assert_eq!(ev.client_id.as_deref(), Some(id.as_str()));
        if *v5 {
            assert_eq!(ev.content_type.as_deref(), Some("text/plain"));
            assert_eq!(
                ev.user_properties,
                vec![
                    ("unit".to_string(), "degC".to_string()),
                    ("line".to_string(), "7".to_string())
                ]
            );
        } else {
            assert!(ev.content_type.is_none() && ev.user_properties.is_empty());
        }
        let now = ironbridge_now_ms();
        assert!(
            rec.timestamp_ms <= now && rec.timestamp_ms > now - 60_000,
            "acceptance timestamp"
        );
    }
    let n = expected.len();
    assert_eq!(
        (events[n].1.topic.as_str(), events[n].1.retain),
        ("plant/state", true)
    );
    assert_eq!(events[n + 1].1.topic, "spBv1.0/G1/NDATA/E1");
    assert_eq!(events[n + 2].1.topic, "$custom/a");
    for (i, (_, ev)) in events[n + 3..].iter().enumerate() {
        assert_eq!(ev.payload, payload(&format!("seq-{i}")));
    }
    let s = b.handle.stats().snapshot();
    assert_eq!(s.publishes_received, events.len() as u64);
    assert_eq!(s.publishes_appended, events.len() as u64);
    assert_eq!(s.append_errors, 0);
    b.handle.stop().await;
}

fn ironbridge_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// In-process publishes (e.g. the Sparkplug edge node) are buffered first, then delivered to
/// local subscribers; after stop() the port is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_publish_and_stop() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let b = start(ironbridge::mqtt::MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let port = b.port();
    let mut sub = tokio::process::Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-d",
            "-t",
            "edge/#",
        ])
        .args(["-F", "%t %p %P"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        let mut subscribed = false;
        while let Some(l) = lines.next_line().await.expect("line") {
            if l.contains("SUBACK") && !subscribed {
                subscribed = true;
                let ev = ironbridge::event::Event {
                    topic: "edge/node1".into(),
                    payload: payload("local"),
                    qos: 1,
                    user_properties: vec![("src".into(), "gateway".into())],
                    ..Default::default()
                };
                let offsets = b.handle.publish(&ev).await.expect("local publish");
                assert_eq!(offsets, 0..1);
            } else if subscribed && l.starts_with("edge/") {
                return l;
            }
        }
        panic!("subscriber ended");
    })
    .await
    .expect("delivered in time");
    assert_eq!(line, "edge/node1 local src:gateway");
    let events = read_events(&b.log, 1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1.qos, 1);
    let addr = b.handle.tcp_addr();
    b.handle.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after stop"
    );
}

/// A hand-written MQTT 3.1.1 client: CONNECT (clean session, `keep_alive` s, a 3-byte client
/// id), CONNACK checked.
async fn raw_connect(
    addr: std::net::SocketAddr,
    keep_alive: u8,
    id: [u8; 3],
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, keep_alive, 0, 3,
    ];
    s.write_all(&[&head[..], &id[..]].concat())
        .await
        .expect("connect packet");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.expect("connack");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

/// Keep-alive 0 ("no keep-alive", common on PLC clients) is legal MQTT; rumqttd alone drops
/// such clients without CONNACK, the front end serves them. (mosquitto_pub refuses -k 0, so
/// this client is hand-written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start(ironbridge::mqtt::MqttConfig {
        allow_anonymous: true,
        ..config()
    })
    .await;
    let mut s = raw_connect(b.handle.tcp_addr(), 0, *b"ka0").await;
    // PUBLISH QoS 1, topic "ka/0", packet id 1, payload "z".
    s.write_all(&[0x32, 9, 0, 4, b'k', b'a', b'/', b'0', 0, 1, b'z'])
        .await
        .expect("publish");
    let mut puback = [0u8; 4];
    s.read_exact(&mut puback).await.expect("puback");
    assert_eq!(puback, [0x40, 2, 0, 1]);
    let events = read_events(&b.log, 1, Duration::from_secs(10)).await;
    assert_eq!(
        (events[0].1.topic.as_str(), events[0].1.client_id.as_deref()),
        ("ka/0", Some("ka0"))
    );
    b.handle.stop().await;
}

/// `max_unacked_per_client`: a client that sends many QoS 1 publishes at once is read no
/// further while that many wait for their PUBACK, and reading resumes as the acks go out:
/// every publish is acknowledged, in order, nothing stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_limit_pauses_reading_and_loses_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start(ironbridge::mqtt::MqttConfig {
        allow_anonymous: true,
        max_unacked_per_client: 4,
        ..config()
    })
    .await;
    let mut s = raw_connect(b.handle.tcp_addr(), 60, *b"ua0").await;
    const N: u16 = 300;
    for round in 0..2u16 {
        // N publishes in one write: QoS 1, topic "ua/0", packet ids from 1, payload "z".
        let mut burst = Vec::new();
        for i in 0..N {
            let id = (round * N + i + 1).to_be_bytes();
            burst.extend_from_slice(&[0x32, 9, 0, 4, b'u', b'a', b'/', b'0', id[0], id[1], b'z']);
        }
        s.write_all(&burst).await.expect("publishes");
        let mut acks = vec![0u8; 4 * N as usize];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut acks))
            .await
            .expect("every publish acknowledged in time")
            .expect("pubacks");
        for (i, ack) in acks.chunks(4).enumerate() {
            let id = (round * N + i as u16 + 1).to_be_bytes();
            assert_eq!(ack, [0x40, 2, id[0], id[1]], "round {round}, ack {i}");
        }
    }
    let events = read_events(&b.log, 2 * N as usize, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2 * N as usize);
    let waits = b.handle.stats().snapshot().unacked_limit_waits;
    assert!(
        waits >= 2,
        "reading never paused at the limit ({waits} waits)"
    );
    b.handle.stop().await;
}
