//! Sessions and delivery semantics against real sockets: persistent sessions, resends,
//! expiry, takeover, wills, QoS 2, QoS downgrade and the MQTT 5 subscription options.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ironbridge_broker::QoS;
use ironbridge_broker::codec::{Packet, PubResp, PublishProperties, RetainHandling};

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..PubResp::default()
    }
}

/// The subscriber's next PUBLISH is `topic`: nothing else was delivered before it.
async fn next_topic(sub: &mut Raw, topic: &str) {
    let p = sub.receive().await;
    assert_eq!(p.topic, topic, "unexpected delivery {p:?}");
}

async fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> Raw {
    let mut s = Raw::v5(addr, id).await;
    assert_eq!(s.subscribe(filter, qos).await, qos as u8);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_what_it_missed_in_order() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("ps"), 60)).await;
    assert!(!ack.session_present);
    assert_eq!(s.subscribe("ps/#", QoS::AtLeastOnce).await, 1);
    s.disconnect().await;
    let mut p = Raw::v5(addr, "p").await;
    for i in 1..=3 {
        assert_eq!(p.publish_acked("ps/t", &i.to_string()).await, 0);
    }
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("ps"), 60)).await;
    // [MQTT-3.2.2-2]: session present when the session was resumed.
    assert!(ack.session_present);
    for i in 1..=3 {
        let m = s.receive().await;
        assert_eq!(
            (payload(&m), m.qos),
            (i.to_string().as_str(), QoS::AtLeastOnce)
        );
    }
    // The same for MQTT 3.1.1 with clean session 0.
    let (mut o, _) = Raw::accepted(addr, persistent(v311("ps311"), 0)).await;
    assert_eq!(o.subscribe("ps/#", QoS::AtLeastOnce).await, 1);
    o.disconnect().await;
    assert_eq!(p.publish_acked("ps/t", "4").await, 0);
    assert_eq!(payload(&s.receive().await), "4");
    let (mut o, ack) = Raw::accepted(addr, persistent(v311("ps311"), 0)).await;
    assert!(ack.session_present);
    assert_eq!(payload(&o.receive().await), "4");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_delivery_resent_with_dup() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut s, _) = Raw::accepted(addr, persistent(v5("dup"), 60)).await;
    assert_eq!(s.subscribe("dup/#", QoS::AtLeastOnce).await, 1);
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_acked("dup/t", "m1").await, 0);
    let first = s.expect_publish().await;
    assert!(!first.dup);
    // The connection drops before the PUBACK.
    drop(s);
    eventually("the drop to be noticed", || {
        stats(&b).connections_current == 1
    })
    .await;
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("dup"), 60)).await;
    assert!(ack.session_present);
    // [MQTT-4.4.0-1]: resent with DUP=1 and the original packet identifier.
    let again = s.expect_publish().await;
    assert!(again.dup, "{again:?}");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!((again.topic.as_str(), payload(&again)), ("dup/t", "m1"));
    s.send(&puback(again.packet_id.unwrap_or(0))).await;
    s.ping().await;
    // Acknowledged now: not sent a third time.
    s.disconnect().await;
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("dup"), 60)).await;
    assert!(ack.session_present);
    assert_eq!(p.publish_acked("dup/sentinel", "s").await, 0);
    next_topic(&mut s, "dup/sentinel").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expires_after_its_interval() {
    let mut cfg = config();
    cfg.max_session_expiry_s = 30;
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (mut s, _) = Raw::accepted(addr, persistent(v5("short"), 1)).await;
    assert_eq!(s.subscribe("exp/#", QoS::AtLeastOnce).await, 1);
    let (mut k, ack) = Raw::accepted(addr, persistent(v5("long"), 60)).await;
    // Capped by max_session_expiry_s, and said so (MQTT 5 3.2.2.3.2).
    assert_eq!(ack.properties.session_expiry_interval, Some(30));
    assert_eq!(k.subscribe("exp/#", QoS::AtLeastOnce).await, 1);
    s.disconnect().await;
    k.disconnect().await;
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_acked("exp/t", "queued").await, 0);
    let one = b.sizes().queued_bytes / 2;
    assert!(one > 0);
    // The spec timer itself: 2.5 s away with an expiry of 1 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(stats(&b).sessions_expired, 1);
    // The expired session's queue is freed with it.
    assert_eq!(b.sizes().queued_bytes, one);
    let (_s, ack) = Raw::accepted(addr, persistent(v5("short"), 1)).await;
    assert!(!ack.session_present, "expired");
    let (mut k, ack) = Raw::accepted(addr, persistent(v5("long"), 60)).await;
    assert!(ack.session_present);
    assert_eq!(payload(&k.receive().await), "queued");
    // Only the long session's subscription is left.
    assert_eq!(b.sizes().subscriptions, 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takeover() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut wills = subscriber(addr, "wills", "will/#", QoS::AtLeastOnce).await;
    let (mut first, _) = Raw::accepted(
        addr,
        with_will(persistent(v5("twin"), 60), "will/twin", "gone", 0),
    )
    .await;
    let (mut second, ack) = Raw::accepted(addr, persistent(v5("twin"), 60)).await;
    assert!(ack.session_present);
    // [MQTT-3.1.4-3]: DISCONNECT 0x8E "session taken over", then the connection is closed.
    let seen = first.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x8E),
        "{seen:?}"
    );
    // The existing client's will is published as for any close without DISCONNECT.
    let w = wills.receive().await;
    assert_eq!((w.topic.as_str(), payload(&w)), ("will/twin", "gone"));
    second.ping().await;
    // 3.1.1: the first connection is just closed [MQTT-3.1.4-2].
    let mut a = Raw::v311(addr, "twin311").await;
    let mut c = Raw::v311(addr, "twin311").await;
    assert!(a.expect_closed().await.is_empty());
    c.ping().await;
    assert_eq!(stats(&b).session_takeovers, 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut sub = subscriber(addr, "wills", "will/#", QoS::AtLeastOnce).await;
    let mut p = Raw::v5(addr, "p").await;

    // Closed without DISCONNECT: published [MQTT-3.1.2-8].
    let (w, _) = Raw::accepted(addr, with_will(v5("w1"), "will/w1", "lost", 0)).await;
    drop(w);
    let m = sub.receive().await;
    assert_eq!((m.topic.as_str(), payload(&m)), ("will/w1", "lost"));

    // Normal DISCONNECT: deleted, not published [MQTT-3.1.2-10].
    let (w, _) = Raw::accepted(addr, with_will(v5("w2"), "will/w2", "x", 0)).await;
    w.disconnect().await;
    // 3.1.1 DISCONNECT, too [MQTT-3.14.4-3].
    let (w, _) = Raw::accepted(addr, with_will(v311("w2b"), "will/w2b", "x", 0)).await;
    w.disconnect().await;
    assert_eq!(p.publish_acked("will/sentinel", "1").await, 0);
    next_topic(&mut sub, "will/sentinel").await;

    // DISCONNECT with reason 0x04 "disconnect with will message": published.
    let (mut w, _) = Raw::accepted(addr, with_will(v5("w3"), "will/w3", "asked", 0)).await;
    w.send(&disconnect(0x04)).await;
    assert!(w.expect_closed().await.is_empty());
    let m = sub.receive().await;
    assert_eq!((m.topic.as_str(), payload(&m)), ("will/w3", "asked"));

    // Will delay 2 s, back within it: not published [MQTT-3.1.3-9]. Will delay 1 s, not back:
    // published after the delay.
    let (w4, _) = Raw::accepted(addr, with_will(persistent(v5("w4"), 60), "will/w4", "x", 2)).await;
    let (w5, _) = Raw::accepted(
        addr,
        with_will(persistent(v5("w5"), 60), "will/w5", "late", 1),
    )
    .await;
    let dropped = Instant::now();
    drop(w4);
    drop(w5);
    let (mut back, ack) = Raw::accepted(addr, persistent(v5("w4"), 60)).await;
    assert!(ack.session_present);
    back.ping().await;
    let m = sub.receive().await;
    assert_eq!((m.topic.as_str(), payload(&m)), ("will/w5", "late"));
    let waited = dropped.elapsed();
    assert!(waited >= Duration::from_millis(950), "after {waited:?}");
    // The spec timer: beyond w4's delay.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(dropped.elapsed())).await;
    assert_eq!(p.publish_acked("will/sentinel", "2").await, 0);
    next_topic(&mut sub, "will/sentinel").await;
    assert_eq!(stats(&b).wills_recorded, 3);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exactly_once_inbound() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut sub = subscriber(addr, "s", "q2/#", QoS::ExactlyOnce).await;
    let mut p = Raw::v5(addr, "p").await;
    p.send(&publish("q2/x", "once", QoS::ExactlyOnce, Some(7)))
        .await;
    assert_eq!(p.expect().await, Packet::PubRec(resp(7)));
    // Resent before PUBREL (e.g. after a reconnect): only PUBREC again, no second delivery
    // [MQTT-4.3.3-10 5.0].
    let mut dup = publish("q2/x", "once", QoS::ExactlyOnce, Some(7));
    if let Packet::Publish(d) = &mut dup {
        d.dup = true;
    }
    p.send(&dup).await;
    assert_eq!(p.expect().await, Packet::PubRec(resp(7)));
    p.send(&Packet::PubRel(resp(7))).await;
    assert_eq!(p.expect().await, Packet::PubComp(resp(7)));
    // The subscriber: QoS 2 handshake once.
    let m = sub.expect_publish().await;
    assert_eq!((payload(&m), m.qos), ("once", QoS::ExactlyOnce));
    let id = m.packet_id.expect("id");
    sub.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(sub.expect().await, Packet::PubRel(resp(id)));
    sub.send(&Packet::PubComp(resp(id))).await;
    assert_eq!(p.publish_acked("q2/sentinel", "s").await, 0);
    next_topic(&mut sub, "q2/sentinel").await;
    assert_eq!(
        stats(&b).publishes_appended,
        2,
        "the resend was not recorded again"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exactly_once_outbound_across_reconnects() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut s, _) = Raw::accepted(addr, persistent(v5("q2s"), 60)).await;
    assert_eq!(s.subscribe("q2/#", QoS::ExactlyOnce).await, 2);
    let mut p = Raw::v5(addr, "p").await;
    p.send(&publish("q2/a", "a", QoS::ExactlyOnce, Some(1)))
        .await;
    assert_eq!(p.expect().await, Packet::PubRec(resp(1)));
    p.send(&Packet::PubRel(resp(1))).await;
    assert_eq!(p.expect().await, Packet::PubComp(resp(1)));
    // Received, PUBREC sent, PUBREL received; the connection drops before PUBCOMP.
    let m = s.expect_publish().await;
    let id = m.packet_id.expect("id");
    s.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(s.expect().await, Packet::PubRel(resp(id)));
    drop(s);
    eventually("the drop to be noticed", || {
        stats(&b).connections_current == 1
    })
    .await;
    // [MQTT-4.4.0-1]: the PUBREL is resent, not the PUBLISH.
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("q2s"), 60)).await;
    assert!(ack.session_present);
    assert_eq!(s.expect().await, Packet::PubRel(resp(id)));
    s.send(&Packet::PubComp(resp(id))).await;
    // A second message: the connection drops before the PUBREC; resent with DUP.
    p.send(&publish("q2/b", "b", QoS::ExactlyOnce, Some(2)))
        .await;
    assert_eq!(p.expect().await, Packet::PubRec(resp(2)));
    p.send(&Packet::PubRel(resp(2))).await;
    assert_eq!(p.expect().await, Packet::PubComp(resp(2)));
    let m = s.expect_publish().await;
    assert_eq!(payload(&m), "b");
    drop(s);
    eventually("the drop to be noticed", || {
        stats(&b).connections_current == 1
    })
    .await;
    let (mut s, _) = Raw::accepted(addr, persistent(v5("q2s"), 60)).await;
    let again = s.expect_publish().await;
    assert!(again.dup && again.packet_id == m.packet_id, "{again:?}");
    let id = again.packet_id.expect("id");
    s.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(s.expect().await, Packet::PubRel(resp(id)));
    s.send(&Packet::PubComp(resp(id))).await;
    assert_eq!(p.publish_acked("q2/sentinel", "s").await, 0);
    let m = s.expect_publish().await;
    assert_eq!(m.topic, "q2/sentinel", "nothing delivered twice");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_is_downgraded_to_the_lower() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut one = subscriber(addr, "one", "dg/#", QoS::AtLeastOnce).await;
    let mut zero = subscriber(addr, "zero", "dg/#", QoS::AtMostOnce).await;
    let mut p = Raw::v5(addr, "p").await;
    // [MQTT-3.8.4-8]: delivered at min(published, granted).
    p.publish("dg/0", "x", QoS::AtMostOnce).await;
    let m = one.receive().await;
    assert_eq!(
        (m.topic.as_str(), m.qos, m.packet_id),
        ("dg/0", QoS::AtMostOnce, None)
    );
    assert_eq!(zero.receive().await.qos, QoS::AtMostOnce);
    p.send(&publish("dg/2", "x", QoS::ExactlyOnce, Some(9)))
        .await;
    assert_eq!(p.expect().await, Packet::PubRec(resp(9)));
    p.send(&Packet::PubRel(resp(9))).await;
    assert_eq!(p.expect().await, Packet::PubComp(resp(9)));
    let m = one.receive().await;
    assert_eq!((m.topic.as_str(), m.qos), ("dg/2", QoS::AtLeastOnce));
    let m = zero.receive().await;
    assert_eq!((m.topic.as_str(), m.qos), ("dg/2", QoS::AtMostOnce));
    // The same for MQTT 3.1.1 subscribers.
    let mut old = Raw::v311(addr, "old").await;
    assert_eq!(old.subscribe("dg/#", QoS::AtLeastOnce).await, 1);
    p.publish("dg/0b", "x", QoS::AtMostOnce).await;
    let m = old.receive().await;
    assert_eq!((m.topic.as_str(), m.qos), ("dg/0b", QoS::AtMostOnce));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut nl = Raw::v5(addr, "nl").await;
    let mut opts = sub_opts(QoS::AtLeastOnce);
    opts.no_local = true;
    assert_eq!(nl.subscribe_with(&[("nl/#", opts)], None).await, [1]);
    let mut other = subscriber(addr, "other", "nl/#", QoS::AtLeastOnce).await;
    // [MQTT-3.8.3-3]: not sent back to the publishing connection's session.
    assert_eq!(nl.publish_acked("nl/own", "x").await, 0);
    next_topic(&mut other, "nl/own").await;
    // Without no local, a client gets its own messages.
    assert_eq!(other.publish_acked("nl/theirs", "x").await, 0);
    next_topic(&mut other, "nl/theirs").await;
    next_topic(&mut nl, "nl/theirs").await;
    // No local on a shared subscription is a protocol error [MQTT-3.8.3-4].
    let mut bad = Raw::v5(addr, "bad").await;
    let packet_id = bad.next_packet_id();
    bad.send(&Packet::Subscribe(ironbridge_broker::codec::Subscribe {
        packet_id,
        filters: vec![("$share/g/nl/#".into(), opts)],
        ..Default::default()
    }))
    .await;
    let seen = bad.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x82),
        "{seen:?}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut kept = Raw::v5(addr, "kept").await;
    let mut opts = sub_opts(QoS::AtLeastOnce);
    opts.retain_as_published = true;
    assert_eq!(kept.subscribe_with(&[("rap/#", opts)], None).await, [1]);
    let mut cleared = subscriber(addr, "cleared", "rap/#", QoS::AtLeastOnce).await;
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_retained("rap/x", "r").await, 0);
    // [MQTT-3.3.1-12]: retain as published 0: the flag is cleared on live deliveries.
    let m = cleared.receive().await;
    assert!(!m.retain, "{m:?}");
    // [MQTT-3.3.1-13]: retain as published 1: kept.
    let m = kept.receive().await;
    assert!(m.retain, "{m:?}");
    // A non-retained publish never has it.
    assert_eq!(p.publish_acked("rap/y", "n").await, 0);
    assert!(!kept.receive().await.retain);
    // 3.1.1 subscribers get the flag cleared on live deliveries too [MQTT-3.3.1-9 3.1.1].
    let mut old = Raw::v311(addr, "old").await;
    assert_eq!(old.subscribe("rap/x", QoS::AtLeastOnce).await, 1);
    let m = old.receive().await;
    assert!(m.retain, "retained on subscribe: flag set");
    assert_eq!(p.publish_retained("rap/x", "r2").await, 0);
    let m = old.receive().await;
    assert!(!m.retain && payload(&m) == "r2", "{m:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_retained("rh/x", "kept").await, 0);
    let mut c = Raw::v5(addr, "c").await;
    let with = |rh: RetainHandling| {
        let mut o = sub_opts(QoS::AtLeastOnce);
        o.retain_handling = rh;
        o
    };
    let mut sentinel = 0;
    // After each SUBSCRIBE: the retained message if any, then a live sentinel.
    let mut check = async |c: &mut Raw, filter: &str, rh: RetainHandling, expect: bool| {
        assert_eq!(c.subscribe_with(&[(filter, with(rh))], None).await, [1]);
        sentinel += 1;
        let s = format!("rh/s{sentinel}");
        assert_eq!(p.publish_acked(&s, "s").await, 0);
        let m = c.receive().await;
        if expect {
            assert_eq!(
                (m.topic.as_str(), m.retain),
                ("rh/x", true),
                "{filter} {rh:?}"
            );
            next_topic(c, &s).await;
        } else {
            assert_eq!(m.topic, s, "{filter} {rh:?}: no retained message expected");
        }
    };
    // 0: at every subscribe, new or not [MQTT-3.3.1-9].
    check(&mut c, "rh/#", RetainHandling::OnSubscribe, true).await;
    check(&mut c, "rh/#", RetainHandling::OnSubscribe, true).await;
    // 1: only if the subscription did not exist [MQTT-3.3.1-10].
    check(&mut c, "rh/+", RetainHandling::OnNewSubscribe, true).await;
    check(&mut c, "rh/+", RetainHandling::OnNewSubscribe, false).await;
    // 2: never [MQTT-3.3.1-11].
    check(&mut c, "+/x", RetainHandling::Never, false).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut p = Raw::v5(addr, "p").await;
    assert_eq!(p.publish_retained("si/r", "r").await, 0);
    let mut c = Raw::v5(addr, "c").await;
    let o = sub_opts(QoS::AtLeastOnce);
    assert_eq!(c.subscribe_with(&[("si/#", o)], Some(7)).await, [1]);
    // The retained message sent for the subscription carries its identifier.
    let m = c.receive().await;
    assert_eq!(
        (
            m.topic.as_str(),
            m.properties.subscription_identifiers.clone()
        ),
        ("si/r", vec![7])
    );
    assert_eq!(c.subscribe_with(&[("si/+", o)], Some(9)).await, [1]);
    let _ = c.receive().await; // si/r again for the new subscription
    // One delivery for two matching subscriptions, with both identifiers [MQTT-3.3.4-4].
    assert_eq!(p.publish_acked("si/x", "x").await, 0);
    let m = c.receive().await;
    let mut ids = m.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!((m.topic.as_str(), ids), ("si/x", vec![7, 9]));
    // Re-subscribing without an identifier removes it.
    let mut no_retained = o;
    no_retained.retain_handling = RetainHandling::Never;
    assert_eq!(c.subscribe_with(&[("si/+", no_retained)], None).await, [1]);
    assert_eq!(p.publish_acked("si/y", "y").await, 0);
    let m = c.receive().await;
    assert_eq!(
        (
            m.topic.as_str(),
            m.properties.subscription_identifiers.clone()
        ),
        ("si/y", vec![7])
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_while_queued() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut s, _) = Raw::accepted(addr, persistent(v5("away"), 60)).await;
    assert_eq!(s.subscribe("me/#", QoS::AtLeastOnce).await, 1);
    s.disconnect().await;
    let mut p = Raw::v5(addr, "p").await;
    let expiring = |topic: &str, s: u32, id: u16| {
        publish_with(
            topic,
            "x",
            QoS::AtLeastOnce,
            false,
            Some(id),
            PublishProperties {
                message_expiry_interval: Some(s),
                ..PublishProperties::default()
            },
        )
    };
    p.send(&expiring("me/short", 1, 1)).await;
    assert!(matches!(p.expect().await, Packet::PubAck(a) if a.reason == 0));
    p.send(&expiring("me/long", 60, 2)).await;
    assert!(matches!(p.expect().await, Packet::PubAck(a) if a.reason == 0));
    // The spec timer: the short one expires while its subscriber is away.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut s, ack) = Raw::accepted(addr, persistent(v5("away"), 60)).await;
    assert!(ack.session_present);
    // [MQTT-3.3.2-5]: an expired message is not delivered; [MQTT-3.3.2-6]: the interval sent
    // is what is left of it.
    let m = s.receive().await;
    assert_eq!(m.topic, "me/long");
    let left = m.properties.message_expiry_interval.expect("expiry");
    assert!((55..=58).contains(&left), "{left}");
    assert_eq!(stats(&b).messages_expired, 1);
    assert_eq!(p.publish_acked("me/sentinel", "s").await, 0);
    next_topic(&mut s, "me/sentinel").await;
    b.stop().await;
}

/// A message in flight when its subscriber went away, expired when it is back: still resent
/// (delivery had started [MQTT-4.4.0-1]; expiry applies before onward delivery starts,
/// [MQTT-3.3.2-5]), and in any case it must not hold the send window closed forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_in_flight_message_does_not_stall_the_session() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    // A receive maximum of 1: one unacknowledged QoS 1 message at a time.
    let mut c = persistent(v5("narrow"), 60);
    c.properties.receive_maximum = Some(1);
    let (mut s, _) = Raw::accepted(addr, c.clone()).await;
    assert_eq!(s.subscribe("nw/#", QoS::AtLeastOnce).await, 1);
    let mut p = Raw::v5(addr, "p").await;
    p.send(&publish_with(
        "nw/short",
        "x",
        QoS::AtLeastOnce,
        false,
        Some(1),
        PublishProperties {
            message_expiry_interval: Some(1),
            ..PublishProperties::default()
        },
    ))
    .await;
    assert!(matches!(p.expect().await, Packet::PubAck(a) if a.reason == 0));
    let m = s.expect_publish().await;
    assert_eq!(m.topic, "nw/short");
    // Gone without acknowledging it.
    drop(s);
    eventually("the drop to be noticed", || {
        stats(&b).connections_current == 1
    })
    .await;
    assert_eq!(p.publish_acked("nw/next", "y").await, 0);
    // The spec timer: the in-flight message expires meanwhile.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut s, ack) = Raw::accepted(addr, c).await;
    assert!(ack.session_present);
    let again = s.expect_publish().await;
    assert!(again.dup && again.topic == "nw/short", "{again:?}");
    s.send(&puback(again.packet_id.unwrap_or(0))).await;
    let m = s.receive().await;
    assert_eq!(m.topic, "nw/next", "the session is stalled");
    b.stop().await;
}

/// A QoS 2 PUBLISH read but not yet acknowledged (not durable yet) when its connection is
/// taken over: the client resends it on the new connection. The broker never sent a PUBREC for
/// it, so it had not accepted ownership [MQTT-4.3.3-9]: the resend must be delivered (once),
/// not answered with a PUBREC and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resend_after_an_unacknowledged_first_attempt_is_delivered() {
    let held = Held::new();
    let b = broker_with(config(), std::sync::Arc::new(HeldHook(held.clone()))).await;
    let addr = b.tcp_addr();
    let mut sub = subscriber(addr, "s", "q2t/#", QoS::ExactlyOnce).await;
    let (mut first, _) = Raw::accepted(addr, persistent(v5("q2c"), 60)).await;
    first
        .send(&publish("q2t/x", "m", QoS::ExactlyOnce, Some(5)))
        .await;
    held.appended_at_least(1).await;
    // The client reconnects (takeover) before any PUBREC; the first connection is closed.
    let (mut second, ack) = Raw::accepted(addr, persistent(v5("q2c"), 60)).await;
    assert!(ack.session_present);
    let seen = first.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x8E),
        "{seen:?}"
    );
    // [MQTT-4.4.0-1]: the client resends its unacknowledged PUBLISH with DUP.
    let mut dup = publish("q2t/x", "m", QoS::ExactlyOnce, Some(5));
    if let Packet::Publish(d) = &mut dup {
        d.dup = true;
    }
    second.send(&dup).await;
    held.release();
    assert_eq!(second.expect().await, Packet::PubRec(resp(5)));
    second.send(&Packet::PubRel(resp(5))).await;
    assert_eq!(second.expect().await, Packet::PubComp(resp(5)));
    let m = sub.expect_publish().await;
    assert_eq!(
        (m.topic.as_str(), payload(&m)),
        ("q2t/x", "m"),
        "the message was lost"
    );
    let id = m.packet_id.expect("id");
    sub.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(sub.expect().await, Packet::PubRel(resp(id)));
    sub.send(&Packet::PubComp(resp(id))).await;
    second
        .send(&publish("q2t/sentinel", "s", QoS::AtMostOnce, None))
        .await;
    let m = sub.expect_publish().await;
    assert_eq!(m.topic, "q2t/sentinel", "delivered twice");
    b.stop().await;
}

/// A delayed will is published when its session ends, if that is sooner than the delay
/// [MQTT-3.1.2-8]: here the client comes back with clean start 1, which ends the old session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_published_when_its_session_ends() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let mut sub = subscriber(addr, "wills", "will/#", QoS::AtLeastOnce).await;
    let (w, _) = Raw::accepted(
        addr,
        with_will(persistent(v5("w6"), 60), "will/w6", "ended", 30),
    )
    .await;
    drop(w);
    eventually("the drop to be noticed", || {
        stats(&b).connections_current == 1
    })
    .await;
    let started = Instant::now();
    let (mut back, ack) = Raw::accepted(addr, v5("w6")).await;
    assert!(!ack.session_present);
    back.ping().await;
    let m = sub.receive().await;
    assert_eq!((m.topic.as_str(), payload(&m)), ("will/w6", "ended"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The same when the first connection is still open and taken over by the clean start.
    let (mut first, _) = Raw::accepted(
        addr,
        with_will(persistent(v5("w7"), 60), "will/w7", "replaced", 30),
    )
    .await;
    let started = Instant::now();
    let (mut second, ack) = Raw::accepted(addr, v5("w7")).await;
    assert!(!ack.session_present);
    let seen = first.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x8E),
        "{seen:?}"
    );
    second.ping().await;
    let m = sub.receive().await;
    assert_eq!((m.topic.as_str(), payload(&m)), ("will/w7", "replaced"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    b.stop().await;
}
