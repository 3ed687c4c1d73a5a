//! Every bounded resource against real sockets: reaching a limit refuses (or pauses) that
//! client with its reason code and counts it, while a legitimate client is still served.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ironbridge_broker::QoS;
use ironbridge_broker::codec::{Packet, Protocol, PubResp, PublishProperties};

fn is_puback(p: &Packet, id: u16) -> bool {
    matches!(p, Packet::PubAck(PubResp { packet_id, reason: 0, .. }) if *packet_id == id)
}

fn is_disconnect(p: &Packet, code: u8) -> bool {
    matches!(p, Packet::Disconnect(d) if d.reason == code)
}

/// A connection the broker ends with DISCONNECT `code` (MQTT 5) and a close.
async fn expect_disconnected(c: &mut Raw, code: u8) {
    let seen = c.expect_closed().await;
    assert!(
        seen.len() == 1 && is_disconnect(&seen[0], code),
        "expected DISCONNECT {code:#04x} then close, got {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_counts_sockets_before_connect() {
    let mut cfg = config();
    cfg.max_connections = 5;
    cfg.connect_timeout_ms = 2000;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut legit = Raw::v5(addr, "legit").await;
    assert_eq!(legit.subscribe("legit/t", QoS::AtLeastOnce).await, 1);
    // Four sockets that never send CONNECT take the remaining slots.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Raw::socket(addr, Protocol::V5).await);
    }
    eventually("5 sockets counted", || stats(&b).sockets_current == 5).await;
    // One more: "server busy" (0x89 / 3.1.1 return code 3), or closed.
    let (_, a) = Raw::connect(addr, v5("late")).await;
    assert!(matches!(a.code(), Some(0x89) | None), "{:?}", a.code());
    let (_, a) = Raw::connect(addr, v311("late311")).await;
    assert!(matches!(a.code(), Some(3) | None), "{:?}", a.code());
    assert_eq!(stats(&b).refused_max_connections, 2);
    assert_eq!(stats(&b).connections_total, 1, "neither got in");
    // The connected client is still served.
    assert_eq!(legit.publish_acked("legit/t", "still here").await, 0);
    assert_eq!(payload(&legit.receive().await), "still here");
    // The silent sockets are closed at connect_timeout_ms.
    for s in &mut silent {
        assert!(s.expect_closed().await.is_empty());
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}"
    );
    drop(silent);
    eventually("silent sockets gone", || stats(&b).sockets_current == 1).await;
    served(addr.port(), "after").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_address() {
    let mut cfg = config();
    cfg.max_connections_per_address = 3;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut first = Raw::v5(addr, "a1").await;
    let _second = Raw::v5(addr, "a2").await;
    let third = Raw::v311(addr, "a3").await;
    // From the same address: "quota exceeded" 0x97 (3.1.1: 3), or closed.
    let (_, a) = Raw::connect(addr, v5("a4")).await;
    assert!(matches!(a.code(), Some(0x97) | None), "{:?}", a.code());
    let (_, a) = Raw::connect(addr, v311("a5")).await;
    assert!(matches!(a.code(), Some(3) | None), "{:?}", a.code());
    assert_eq!(stats(&b).refused_per_address, 2);
    // Another address is not affected, nor are the clients already connected.
    let (mut other, _) = Raw::accepted_from(OTHER_ADDRESS, addr, v5("b1")).await;
    assert_eq!(other.subscribe("pa/t", QoS::AtLeastOnce).await, 1);
    assert_eq!(first.publish_acked("pa/t", "x").await, 0);
    assert_eq!(payload(&other.receive().await), "x");
    // A slot freed on 127.0.0.1 is usable again.
    third.disconnect().await;
    eventually("a3 gone", || stats(&b).sockets_current == 3).await;
    served(addr.port(), "a6").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_size_and_deadline() {
    let mut cfg = config();
    cfg.max_connect_bytes = 128;
    cfg.connect_timeout_ms = 500;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    // A CONNECT over max_connect_bytes (a 500-byte will): closed, or CONNACK 0x95.
    let big = with_will(v5("big"), "will/t", &"w".repeat(500), 0);
    let (mut raw, a) = Raw::connect(addr, big).await;
    assert!(matches!(a.code(), Some(0x95) | None), "{:?}", a.code());
    if a.code().is_some() {
        assert!(raw.expect_closed().await.is_empty());
    }
    let big311 = with_will(v311("big311"), "will/t", &"w".repeat(500), 0);
    let (_, a) = Raw::connect(addr, big311).await;
    assert_eq!(a.code(), None, "3.1.1 has no code for it: closed");
    // Half a CONNECT: closed once connect_timeout_ms has passed.
    let mut half = Raw::socket(addr, Protocol::V5).await;
    let connect = encode(&Packet::Connect(v5("half")), Protocol::V5);
    let started = Instant::now();
    half.write_raw(&connect[..connect.len() / 2]).await;
    // Meanwhile a complete CONNECT of normal size is served.
    let mut legit = Raw::v5(addr, "legit").await;
    legit.ping().await;
    assert!(half.expect_closed().await.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(3000),
        "closed after {waited:?}"
    );
    let s = stats(&b);
    assert_eq!(s.protocol_errors, 3, "two oversize, one timeout");
    assert_eq!(s.connections_total, 1);
    b.stop().await;
}

/// CONNECTs sent at once with the right password; each answer: accepted or "server busy".
async fn login_burst(addr: std::net::SocketAddr, n: usize) -> Vec<(u8, Duration)> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(Raw::socket(addr, Protocol::V5).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut s) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let c = with_login(v5(&format!("plc-{i}")), "plc", REAL_PASSWORD);
            let a = s.handshake(c).await;
            let code = a.code().expect("a CONNACK, not a silent close");
            (code, started.elapsed(), s)
        }));
    }
    let mut out = Vec::new();
    let mut keep = Vec::new();
    for t in tasks {
        let (code, took, s) = within("login answers", t).await.expect("task");
        out.push((code, took));
        keep.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_queue_full_is_server_busy() {
    let mut cfg = config();
    cfg.users.insert("plc".into(), real_hash().await);
    cfg.auth_queue = 1;
    cfg.auth_timeout_ms = 1000;
    let b = broker(cfg).await;
    let answers = login_burst(b.tcp_addr(), 8).await;
    let ok = answers.iter().filter(|(c, _)| *c == 0).count();
    let busy: Vec<Duration> = answers
        .iter()
        .filter(|(c, _)| *c == 0x89)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ok + busy.len(), 8, "only accepted or busy: {answers:?}");
    assert!(ok >= 1, "{answers:?}");
    assert!(!busy.is_empty(), "{answers:?}");
    // A full queue answers at once: no CONNECT waits for a check it will not get.
    for t in &busy {
        assert!(*t < Duration::from_millis(1000), "busy after {t:?}");
    }
    let s = stats(&b);
    assert_eq!(s.auth_busy as usize, busy.len());
    assert_eq!(s.connections_rejected as usize, busy.len());
    assert_eq!(s.auth_failures, 0, "busy is not a failure");
    assert_eq!(s.auth_throttled, 0);
    // Busy refusals do not count as failed logins: the next attempt is checked.
    let (mut c, _) =
        Raw::accepted(b.tcp_addr(), with_login(v5("plc-x"), "plc", REAL_PASSWORD)).await;
    c.ping().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_wait_is_bounded_by_auth_timeout() {
    let mut cfg = config();
    cfg.users.insert("plc".into(), real_hash().await);
    // Room to wait, but only 1 ms for one of the two password workers.
    cfg.auth_queue = 8;
    cfg.auth_timeout_ms = 1;
    let b = broker(cfg).await;
    let answers = login_burst(b.tcp_addr(), 4).await;
    let ok: Vec<Duration> = answers
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|(_, t)| *t)
        .collect();
    let busy: Vec<Duration> = answers
        .iter()
        .filter(|(c, _)| *c == 0x89)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ok.len() + busy.len(), 4, "{answers:?}");
    assert!(!ok.is_empty() && !busy.is_empty(), "{answers:?}");
    // Those that found no worker were answered before any password check finished.
    let first_ok = ok.iter().min().copied().unwrap_or_default();
    for t in &busy {
        assert!(*t < first_ok, "busy after {t:?}, a check took {first_ok:?}");
    }
    assert_eq!(stats(&b).auth_busy as usize, busy.len());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client() {
    let mut cfg = config();
    cfg.max_subscriptions_per_client = 3;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut c = Raw::v5(addr, "c5").await;
    let o = sub_opts(QoS::AtMostOnce);
    let codes = c
        .subscribe_with(&[("a", o), ("b", o), ("c", o), ("d", o)], None)
        .await;
    assert_eq!(codes, [0, 0, 0, 0x97], "quota exceeded for the fourth");
    // Replacing an existing subscription is not a new one.
    assert_eq!(c.subscribe("a", QoS::AtLeastOnce).await, 1);
    assert_eq!(c.subscribe("e", QoS::AtMostOnce).await, 0x97);
    // The limit is per client; 3.1.1 reports the failure as 0x80.
    let mut d = Raw::v311(addr, "c311").await;
    let codes = d
        .subscribe_with(&[("a", o), ("b", o), ("c", o), ("d", o)], None)
        .await;
    assert_eq!(codes, [0, 0, 0, 0x80]);
    // After an unsubscribe there is room again.
    assert_eq!(c.unsubscribe(&["b"]).await, [0]);
    assert_eq!(c.subscribe("e", QoS::AtMostOnce).await, 0);
    assert_eq!(b.sizes().subscriptions, 6);
    assert_eq!(stats(&b).subscriptions_rejected, 3);
    served(addr.port(), "legit").await;
    b.stop().await;
}

fn aliased(topic: &str, alias: u16, id: u16) -> Packet {
    publish_with(
        topic,
        "a",
        QoS::AtLeastOnce,
        false,
        Some(id),
        PublishProperties {
            topic_alias: Some(alias),
            ..PublishProperties::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_maximum() {
    let mut cfg = config();
    cfg.topic_alias_maximum = 2;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut sub = Raw::v5(addr, "sub").await;
    assert_eq!(sub.subscribe("ta/#", QoS::AtLeastOnce).await, 1);
    let (mut c, ack) = Raw::accepted(addr, v5("aliaser")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));
    // Alias 2 (the maximum) is set, then used with an empty topic.
    c.send(&aliased("ta/x", 2, 1)).await;
    assert!(is_puback(&c.expect().await, 1));
    c.send(&aliased("", 2, 2)).await;
    assert!(is_puback(&c.expect().await, 2));
    for _ in 0..2 {
        assert_eq!(sub.receive().await.topic, "ta/x");
    }
    // Above the maximum: DISCONNECT 0x94 "topic alias invalid" [MQTT-3.3.2-9].
    c.send(&aliased("ta/y", 3, 3)).await;
    expect_disconnected(&mut c, 0x94).await;
    // Alias 0 is not permitted [MQTT-3.3.2-8].
    let mut z = Raw::v5(addr, "zero").await;
    z.send(&aliased("ta/z", 0, 1)).await;
    expect_disconnected(&mut z, 0x94).await;
    // Neither reached the subscriber, which is still served.
    let mut p = Raw::v5(addr, "plain").await;
    assert_eq!(p.publish_acked("ta/sentinel", "s").await, 0);
    assert_eq!(sub.receive().await.topic, "ta/sentinel");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_bytes() {
    let mut cfg = config();
    cfg.max_topic_bytes = 32;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let exact = format!("t/{}", "x".repeat(30));
    let long = format!("t/{}", "x".repeat(31));
    let mut c = Raw::v5(addr, "c").await;
    let codes = c
        .subscribe_with(
            &[
                (exact.as_str(), sub_opts(QoS::AtLeastOnce)),
                (long.as_str(), sub_opts(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    // A filter over the limit: SUBACK 0x8F "topic filter invalid".
    assert_eq!(codes, [1, 0x8F]);
    assert_eq!(c.publish_acked(&exact, "ok").await, 0);
    assert_eq!(payload(&c.receive().await), "ok");
    // A topic name over the limit: DISCONNECT 0x90 "topic name invalid".
    c.publish(&long, "x", QoS::AtLeastOnce).await;
    expect_disconnected(&mut c, 0x90).await;
    let mut d = Raw::v311(addr, "d").await;
    assert_eq!(d.subscribe(&long, QoS::AtMostOnce).await, 0x80);
    d.publish(&long, "x", QoS::AtMostOnce).await;
    assert!(d.expect_closed().await.is_empty());
    served(addr.port(), "legit").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_exceeded_v5() {
    let held = Held::new();
    let mut cfg = config();
    cfg.max_unacked_per_client = 2;
    let b = broker_with(cfg, Arc::new(HeldHook(held.clone()))).await;
    let addr = b.tcp_addr();
    let mut sub = Raw::v5(addr, "sub").await;
    assert_eq!(sub.subscribe("rm/#", QoS::AtLeastOnce).await, 1);
    let (mut c, ack) = Raw::accepted(addr, v5("eager")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    // Three QoS 1 publishes in one write while none can be acknowledged (not durable yet).
    c.send_together(&[
        publish("rm/1", "1", QoS::AtLeastOnce, Some(1)),
        publish("rm/2", "2", QoS::AtLeastOnce, Some(2)),
        publish("rm/3", "3", QoS::AtLeastOnce, Some(3)),
    ])
    .await;
    // The first two were appended (the third was read in the same read and refused).
    held.appended_at_least(2).await;
    // Nothing is acknowledged or delivered before it is durable.
    c.expect_silence(Duration::from_millis(200)).await;
    held.release();
    // The two within the limit are acknowledged, then DISCONNECT 0x93 "receive maximum
    // exceeded" (MQTT 5 section 3.3.4).
    let seen = c.expect_closed().await;
    assert!(
        seen.len() == 3
            && is_puback(&seen[0], 1)
            && is_puback(&seen[1], 2)
            && is_disconnect(&seen[2], 0x93),
        "{seen:?}"
    );
    assert_eq!(held.appended(), 2);
    // The subscriber got the two accepted ones, not the third.
    assert_eq!(sub.receive().await.topic, "rm/1");
    assert_eq!(sub.receive().await.topic, "rm/2");
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_acked("rm/sentinel", "s").await, 0);
    assert_eq!(sub.receive().await.topic, "rm/sentinel");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_pauses_v311() {
    let held = Held::new();
    let mut cfg = config();
    cfg.max_unacked_per_client = 2;
    let b = broker_with(cfg, Arc::new(HeldHook(held.clone()))).await;
    let addr = b.tcp_addr();
    let mut c = Raw::v311(addr, "old-plc").await;
    c.publish("rm/1", "1", QoS::AtLeastOnce).await;
    held.appended_at_least(1).await;
    c.publish("rm/2", "2", QoS::AtLeastOnce).await;
    held.appended_at_least(2).await;
    eventually("the pause to be counted", || {
        stats(&b).unacked_limit_waits >= 1
    })
    .await;
    c.send_together(&[
        publish("rm/3", "3", QoS::AtLeastOnce, Some(3)),
        publish("rm/4", "4", QoS::AtLeastOnce, Some(4)),
        publish("rm/5", "5", QoS::AtLeastOnce, Some(5)),
    ])
    .await;
    // Paused, not disconnected: another client is served meanwhile...
    let mut other = Raw::v311(addr, "other").await;
    assert_eq!(other.subscribe("rm/#", QoS::AtLeastOnce).await, 1);
    // ...while the paused client's new publishes are not even read.
    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(held.appended(), 2);
    assert_eq!(stats(&b).publishes_received, 2);
    held.release();
    for id in 1..=5 {
        let p = c.expect().await;
        assert!(is_puback(&p, id), "expected PUBACK {id}, got {p:?}");
    }
    c.ping().await;
    assert_eq!(held.appended(), 5);
    // Delivery waited for durability, too: the subscriber (subscribed after rm/1 and rm/2
    // were read, before they were durable) gets all five, in order.
    for t in ["rm/1", "rm/2", "rm/3", "rm/4", "rm/5"] {
        assert_eq!(other.receive().await.topic, t);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_count_limit() {
    let mut cfg = config();
    cfg.max_retained_messages = 2;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_retained("r/1", "a").await, 0);
    assert_eq!(p.publish_retained("r/2", "b").await, 0);
    // Accepted and delivered like any publish, but not kept.
    assert_eq!(p.publish_retained("r/3", "c").await, 0);
    assert_eq!(stats(&b).retained_rejected, 1);
    // Replacing a kept topic is still possible at the limit.
    assert_eq!(p.publish_retained("r/1", "a2").await, 0);
    assert_eq!(stats(&b).retained_rejected, 1);
    assert_eq!(b.sizes().retained_messages, 2);
    served(addr.port(), "legit").await;
    let got = retained_for_new_subscriber(addr, &mut p).await;
    assert_eq!(
        got,
        [("r/1".into(), "a2".into()), ("r/2".into(), "b".into())]
    );
    // An empty retained payload deletes [MQTT-3.3.1-6], freeing a place.
    assert_eq!(p.publish_retained("r/2", "").await, 0);
    assert_eq!(p.publish_retained("r/3", "c2").await, 0);
    assert_eq!(stats(&b).retained_rejected, 1);
    let got = retained_for_new_subscriber(addr, &mut p).await;
    assert_eq!(
        got,
        [("r/1".into(), "a2".into()), ("r/3".into(), "c2".into())]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_bytes_limit() {
    let mut cfg = config();
    // Message weight = topic + payload + 128: two of 3 + 200 + 128 = 331 fit, not a third.
    cfg.max_retained_bytes = 700;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut p = Raw::v5(addr, "p").await;
    let big = "x".repeat(200);
    assert_eq!(p.publish_retained("r/a", &big).await, 0);
    assert_eq!(p.publish_retained("r/b", &big).await, 0);
    assert_eq!(p.publish_retained("r/c", &big).await, 0);
    assert_eq!(stats(&b).retained_rejected, 1);
    assert_eq!(b.sizes().retained_bytes, 662);
    let got = retained_for_new_subscriber(addr, &mut p).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["r/a", "r/b"]);
    b.stop().await;
}

/// What a new `r/#` subscriber gets as retained, sorted; a live sentinel published by `p`
/// after the SUBACK marks the end.
async fn retained_for_new_subscriber(
    addr: std::net::SocketAddr,
    p: &mut Raw,
) -> Vec<(String, String)> {
    let mut s = Raw::v5(addr, "newcomer").await;
    assert_eq!(s.subscribe("r/#", QoS::AtLeastOnce).await, 1);
    assert_eq!(p.publish_acked("r/sentinel", "s").await, 0);
    let mut got = Vec::new();
    loop {
        let m = s.receive().await;
        if m.topic == "r/sentinel" {
            assert!(!m.retain);
            break;
        }
        assert!(m.retain, "{m:?}");
        got.push((m.topic.clone(), payload(&m).to_string()));
    }
    got.sort();
    got
}

/// An offline persistent session subscribed to `q/#` at QoS 1.
async fn offline_session(addr: std::net::SocketAddr, id: &str) {
    let (mut c, _) = Raw::accepted(addr, persistent(v5(id), 60)).await;
    assert_eq!(c.subscribe("q/#", QoS::AtLeastOnce).await, 1);
    c.disconnect().await;
}

/// Reconnects `id`; the payloads it gets until the sentinel `end-{id}` that `p` publishes
/// afterwards.
async fn drain(addr: std::net::SocketAddr, id: &str, p: &mut Raw) -> (Raw, Vec<String>) {
    let (mut c, ack) = Raw::accepted(addr, persistent(v5(id), 60)).await;
    assert!(ack.session_present);
    let end = format!("end-{id}");
    assert_eq!(p.publish_acked("q/sentinel", &end).await, 0);
    let mut got = Vec::new();
    loop {
        let m = c.receive().await;
        if payload(&m) == end {
            return (c, got);
        }
        got.push(payload(&m).to_string());
    }
}

/// Publishes `n` QoS 1 messages of `size` bytes to `q/x`; `online` gets each before the next.
async fn publish_n(p: &mut Raw, online: &mut Raw, n: usize, size: usize) {
    for i in 0..n {
        let body = format!("{i}{}", "x".repeat(size.saturating_sub(1)));
        assert_eq!(p.publish_acked("q/x", &body).await, 0);
        assert_eq!(payload(&online.receive().await), body, "online subscriber");
    }
}

fn prefixes(got: &[String]) -> Vec<String> {
    got.iter().map(|s| s[..1].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_per_session() {
    let mut cfg = config();
    cfg.max_queued_messages = 3;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    offline_session(addr, "away").await;
    let mut online = Raw::v5(addr, "online").await;
    assert_eq!(online.subscribe("q/#", QoS::AtLeastOnce).await, 1);
    let mut p = Raw::v5(addr, "p").await;
    publish_n(&mut p, &mut online, 5, 1).await;
    assert_eq!(stats(&b).messages_dropped, 2);
    let (_c, got) = drain(addr, "away", &mut p).await;
    assert_eq!(prefixes(&got), ["0", "1", "2"], "the first three were kept");
    assert_eq!(payload(&online.receive().await), "end-away");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bytes_per_session() {
    let mut cfg = config();
    // Weight 3 + 200 + 128 = 331: three fit in 1000 bytes.
    cfg.max_queued_bytes = 1000;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    offline_session(addr, "away").await;
    let mut online = Raw::v5(addr, "online").await;
    assert_eq!(online.subscribe("q/#", QoS::AtLeastOnce).await, 1);
    let mut p = Raw::v5(addr, "p").await;
    publish_n(&mut p, &mut online, 5, 200).await;
    assert_eq!(stats(&b).messages_dropped, 2);
    assert_eq!(b.sizes().queued_bytes, 993);
    let (_c, got) = drain(addr, "away", &mut p).await;
    assert_eq!(prefixes(&got), ["0", "1", "2"]);
    assert_eq!(payload(&online.receive().await), "end-away");
    b.stop().await;
}

/// The total is shared by every session: two away sessions fill it; what does not fit is
/// dropped and counted; draining one makes room again. Publishers are never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bytes_total() {
    let mut cfg = config();
    cfg.max_queued_bytes_total = 1000;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    offline_session(addr, "first").await;
    offline_session(addr, "second").await;
    let mut p = Raw::v5(addr, "p").await;
    for i in 0..5 {
        let body = format!("{i}{}", "x".repeat(199));
        assert_eq!(
            p.publish_acked("q/x", &body).await,
            0,
            "publisher still served"
        );
    }
    // m0 for both (662), m1 for the first (993); everything else dropped.
    assert_eq!(b.sizes().queued_bytes, 993);
    assert_eq!(stats(&b).messages_dropped, 7);
    let (first, got) = drain(addr, "first", &mut p).await;
    assert_eq!(prefixes(&got), ["0", "1"]);
    // Delivering the first's queue freed its bytes: the first's sentinel was queued for the
    // second, too.
    let (_second, got) = drain(addr, "second", &mut p).await;
    assert_eq!(prefixes(&got), ["0", "e"]);
    assert_eq!(got[1], "end-first");
    drop(first);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions() {
    let mut cfg = config();
    cfg.max_sessions = 2;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    // One session away (kept 60 s), one connected.
    let (c, _) = Raw::accepted(addr, persistent(v5("kept"), 60)).await;
    c.disconnect().await;
    let busy = Raw::v5(addr, "busy").await;
    // A third, new session: 0x97 "quota exceeded" (3.1.1: 3 "server unavailable").
    let (_, a) = Raw::connect(addr, v5("third")).await;
    assert_eq!(a.code(), Some(0x97));
    let (_, a) = Raw::connect(addr, v311("third")).await;
    assert_eq!(a.code(), Some(3));
    assert_eq!(stats(&b).connections_rejected, 2);
    // Existing sessions still reconnect: resumed, or replaced by a clean start.
    let (mut kept, ack) = Raw::accepted(addr, persistent(v5("kept"), 60)).await;
    assert!(ack.session_present);
    kept.ping().await;
    let (again, ack) = Raw::accepted(addr, v5("busy")).await;
    assert!(!ack.session_present);
    drop(busy);
    again.disconnect().await;
    // "busy" had no expiry: its session ended, so there is room for a new one.
    eventually("busy's session to end", || b.sizes().sessions == 1).await;
    served(addr.port(), "third").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_keep_alive() {
    let mut cfg = config();
    cfg.max_keep_alive_s = 1;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut none = v5("none");
    none.keep_alive = 0;
    let (mut silent, ack) = Raw::accepted(addr, none).await;
    let connected = Instant::now();
    // No keep-alive asked: the server imposes its maximum (MQTT 5 3.2.2.3.14).
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let mut long = v5("long");
    long.keep_alive = 600;
    let (mut pinger, ack) = Raw::accepted(addr, long).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let mut old = v311("old");
    old.keep_alive = 0;
    let (mut silent311, _) = Raw::accepted(addr, old).await;
    // A client that pings every 500 ms stays connected meanwhile.
    let pings = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pinger.ping().await;
        }
        pinger
    });
    // Silent for 1.5 × keep alive: DISCONNECT 0x8D "keep alive timeout" [MQTT-3.1.2-22].
    expect_disconnected(&mut silent, 0x8D).await;
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(4000),
        "disconnected after {waited:?}"
    );
    assert!(silent311.expect_closed().await.is_empty());
    let pinger = within("pings", pings).await.expect("pinger");
    pinger.disconnect().await;
    assert_eq!(stats(&b).keep_alive_timeouts, 2);
    b.stop().await;
}

/// Subscribing and unsubscribing 5,000 filters, and 2,000 client ids coming and going, leave
/// the broker's state as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_freed() {
    let mut cfg = config();
    cfg.max_subscriptions_per_client = 5000;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut c = Raw::v5(addr, "churn").await;
    let baseline = b.sizes();
    let filters: Vec<String> = (0..5000).map(|i| format!("mem/{i}/+/#")).collect();
    for chunk in filters.chunks(100) {
        let opts: Vec<(&str, _)> = chunk
            .iter()
            .map(|f| (f.as_str(), sub_opts(QoS::AtLeastOnce)))
            .collect();
        let codes = c.subscribe_with(&opts, None).await;
        assert!(codes.iter().all(|&x| x == 1));
    }
    assert_eq!(b.sizes().subscriptions, baseline.subscriptions + 5000);
    for chunk in filters.chunks(100) {
        let fs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let codes = c.unsubscribe(&fs).await;
        assert!(codes.iter().all(|&x| x == 0));
    }
    assert_eq!(b.sizes(), baseline);

    let mut tasks = Vec::new();
    for t in 0..4 {
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                let id = format!("churn-{t}-{i}");
                match i % 3 {
                    // Clean session, normal DISCONNECT.
                    0 => {
                        let mut c = Raw::v5(addr, &id).await;
                        assert_eq!(
                            c.subscribe(&format!("churn/{id}"), QoS::AtMostOnce).await,
                            0
                        );
                        c.disconnect().await;
                    }
                    // 3.1.1, the socket just dropped.
                    1 => {
                        let mut c = Raw::v311(addr, &id).await;
                        assert_eq!(
                            c.subscribe(&format!("churn/{id}"), QoS::AtMostOnce).await,
                            0
                        );
                    }
                    // A session expiry at CONNECT, set to 0 at DISCONNECT.
                    _ => {
                        let (mut c, _) = Raw::accepted(addr, persistent(v5(&id), 60)).await;
                        assert_eq!(
                            c.subscribe(&format!("churn/{id}"), QoS::AtMostOnce).await,
                            0
                        );
                        c.send(&Packet::Disconnect(ironbridge_broker::codec::Disconnect {
                            session_expiry_interval: Some(0),
                            ..Default::default()
                        }))
                        .await;
                        assert!(c.expect_closed().await.is_empty());
                    }
                }
            }
        }));
    }
    for t in tasks {
        within("2,000 connections", t).await.expect("churn task");
    }
    eventually("sessions and subscriptions back to baseline", || {
        b.sizes() == baseline
    })
    .await;
    eventually("one client listed", || b.clients().list().len() == 1).await;
    assert_eq!(stats(&b).connections_total, 2001);
    c.ping().await;
    b.stop().await;
}

/// After a protocol violation the connection is condemned: what the client sends after it is
/// not processed (not appended, not answered) even while earlier publishes are still waiting
/// to be durable [MQTT-4.13.1-1 5.0: the receiver closes the connection].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_processed_after_a_violation() {
    let held = Held::new();
    let b = broker_with(config(), Arc::new(HeldHook(held.clone()))).await;
    let addr = b.tcp_addr();
    let mut c = Raw::v5(addr, "bad").await;
    c.publish("ok/1", "before", QoS::AtLeastOnce).await;
    held.appended_at_least(1).await;
    // Topic alias 0: DISCONNECT 0x94 once the publish before it is acknowledged.
    c.send(&aliased("ok/2", 0, 2)).await;
    // Not for synchronisation: a pause so that the broker reads what follows separately
    // (packets after a violation in the same read are never decoded anyway).
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.ping_unanswered().await;
    c.publish("ok/3", "after", QoS::AtLeastOnce).await;
    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        held.appended(),
        1,
        "a publish after the violation was appended"
    );
    held.release();
    let seen = c.expect_closed().await;
    assert!(
        seen.len() == 2 && is_puback(&seen[0], 1) && is_disconnect(&seen[1], 0x94),
        "{seen:?}"
    );
    assert_eq!(held.appended(), 1);
    b.stop().await;
}

/// Outbound flow control: at most max_inflight_messages (or the client's receive maximum, if
/// lower) unacknowledged QoS 1 messages to a client [MQTT-3.3.4-9]; nothing above the
/// client's maximum packet size [MQTT-3.1.2-24].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_in_flight_window_and_packet_size() {
    let mut cfg = config();
    cfg.max_inflight_messages = 2;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut wide = Raw::v5(addr, "wide").await;
    assert_eq!(wide.subscribe("fc/#", QoS::AtLeastOnce).await, 1);
    let mut c = v5("narrow");
    c.properties.receive_maximum = Some(1);
    c.properties.maximum_packet_size = Some(100);
    let (mut narrow, _) = Raw::accepted(addr, c).await;
    assert_eq!(narrow.subscribe("fc/#", QoS::AtLeastOnce).await, 1);
    let mut p = Raw::v5(addr, "p").await;
    for i in 0..4 {
        assert_eq!(p.publish_acked("fc/t", &i.to_string()).await, 0);
    }
    assert_eq!(p.publish_acked("fc/big", &"x".repeat(200)).await, 0);
    assert_eq!(p.publish_acked("fc/t", "4").await, 0);
    // The broker's window: two, then nothing until an acknowledgement.
    let m0 = wide.expect_publish().await;
    let m1 = wide.expect_publish().await;
    wide.expect_silence(Duration::from_millis(200)).await;
    wide.send(&puback(m0.packet_id.unwrap_or(0))).await;
    assert_eq!(payload(&wide.expect_publish().await), "2");
    wide.send(&puback(m1.packet_id.unwrap_or(0))).await;
    assert_eq!(payload(&wide.receive().await), "3");
    assert_eq!(wide.receive().await.topic, "fc/big");
    assert_eq!(payload(&wide.receive().await), "4");
    // The client's own receive maximum of 1, and its maximum packet size of 100 bytes.
    for i in ["0", "1", "2", "3"] {
        let m = narrow.expect_publish().await;
        assert_eq!(payload(&m), i);
        narrow.expect_silence(Duration::from_millis(100)).await;
        narrow.send(&puback(m.packet_id.unwrap_or(0))).await;
    }
    assert_eq!(
        payload(&narrow.receive().await),
        "4",
        "the big one is skipped"
    );
    assert_eq!(stats(&b).messages_oversize, 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_bytes() {
    let mut cfg = config();
    cfg.max_payload_bytes = 100;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let mut sub = Raw::v5(addr, "sub").await;
    assert_eq!(sub.subscribe("pl/#", QoS::AtLeastOnce).await, 1);
    let (mut c, ack) = Raw::accepted(addr, v5("c")).await;
    assert_eq!(
        ack.properties.maximum_packet_size,
        Some(100 + ironbridge_broker::PACKET_OVERHEAD as u32)
    );
    assert_eq!(c.publish_acked("pl/ok", &"x".repeat(100)).await, 0);
    // One byte more: closed unacknowledged, DISCONNECT 0x95 "packet too large".
    c.publish("pl/big", &"x".repeat(101), QoS::AtLeastOnce)
        .await;
    expect_disconnected(&mut c, 0x95).await;
    let mut old = Raw::v311(addr, "old").await;
    old.publish("pl/big", &"x".repeat(101), QoS::AtLeastOnce)
        .await;
    assert!(old.expect_closed().await.is_empty());
    assert_eq!(sub.receive().await.topic, "pl/ok");
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_acked("pl/sentinel", "s").await, 0);
    assert_eq!(
        sub.receive().await.topic,
        "pl/sentinel",
        "an oversize publish was delivered"
    );
    b.stop().await;
}

/// A client the broker stops reading (3.1.1 at max_unacked_per_client, waiting for
/// durability) keeps sending; it is not "silent": no keep-alive timeout, no will, while the
/// pause lasts longer than 1.5 × its keep alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_is_not_timed_out() {
    let held = Held::new();
    let mut cfg = config();
    cfg.max_unacked_per_client = 1;
    cfg.max_keep_alive_s = 1;
    let b = broker_with(cfg, Arc::new(HeldHook(held.clone()))).await;
    let addr = b.tcp_addr();
    let mut c = with_will(v311("paused"), "will/paused", "dead", 0);
    c.keep_alive = 1;
    let (mut c, _) = Raw::accepted(addr, c).await;
    c.publish("pz/1", "1", QoS::AtLeastOnce).await;
    held.appended_at_least(1).await;
    // The client keeps talking (PINGREQ every 400 ms) while the broker does not read it.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.ping_unanswered().await;
    }
    assert_eq!(stats(&b).keep_alive_timeouts, 0);
    held.release();
    assert!(matches!(c.expect().await, Packet::PubAck(a) if a.packet_id == 1));
    for _ in 0..6 {
        assert_eq!(c.expect().await, Packet::PingResp);
    }
    c.ping().await;
    assert_eq!(stats(&b).wills_recorded, 0);
    b.stop().await;
}
