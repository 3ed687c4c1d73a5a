//! Authorization against real sockets: the protected topics without rules, explicit grants,
//! `%u`/`%c` patterns, first match wins, subscribe coverage, refusal counters, client id
//! prefixes, passwords and the login throttle.

mod common;

use common::*;
use ironbridge_broker::QoS;
use ironbridge_broker::acl::{AclRule, Action, Permission};
use ironbridge_broker::codec::Packet;

/// Publishes to the protected topics the broker refuses without rules.
const PROTECTED: [&str; 4] = [
    "spBv1.0/G/DCMD/N/D",
    "spBv1.0/G/NCMD/N",
    "spBv1.0/STATE/host",
    "$SYS/x",
];

fn rule(users: &[&str], action: Action, permission: Permission, topics: &[&str]) -> AclRule {
    AclRule {
        users: users.iter().map(|s| s.to_string()).collect(),
        action,
        permission,
        topics: topics.iter().map(|s| s.to_string()).collect(),
    }
}

/// Two subscribers, `#` and `spBv1.0/#`: a protected publish must reach neither. The sentinel
/// (published afterwards to a topic both match) must be the next thing each receives.
async fn subscribers(addr: std::net::SocketAddr) -> (Raw, Raw) {
    let mut all = Raw::v5(addr, "sub-all").await;
    assert_eq!(all.subscribe("#", QoS::AtLeastOnce).await, 1);
    let mut spb = Raw::v5(addr, "sub-spb").await;
    assert_eq!(spb.subscribe("spBv1.0/#", QoS::AtLeastOnce).await, 1);
    (all, spb)
}

async fn next_is_sentinel(sub: &mut Raw, sentinel: &str) {
    let p = sub.receive().await;
    assert_eq!(
        (p.topic.as_str(), payload(&p)),
        (sentinel, "sentinel"),
        "a refused publish was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_protected_topics_refused_without_rules() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut all, mut spb) = subscribers(addr).await;
    // A will is a publish: a protected will topic is refused at CONNECT.
    let (_, a) = Raw::connect(addr, with_will(v5("w"), "spBv1.0/G/NCMD/N", "x", 0)).await;
    assert_eq!(a.code(), Some(0x87));
    let (_, a) = Raw::connect(addr, with_will(v311("w"), "$SYS/w", "x", 0)).await;
    assert_eq!(a.code(), Some(5));
    let mut p = Raw::v5(addr, "pub").await;
    for t in PROTECTED {
        // MQTT 5 3.4.2.1: 0x87 "not authorized" in the PUBACK.
        assert_eq!(p.publish_acked(t, "x").await, 0x87, "{t}");
    }
    // QoS 2: refused in the PUBREC.
    let id = p.publish("spBv1.0/G/DCMD/N/D", "x", QoS::ExactlyOnce).await;
    match p.expect().await {
        Packet::PubRec(r) => assert_eq!((Some(r.packet_id), r.reason), (id, 0x87)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // Subscribing to `$SYS/#` is refused; subscribing to Sparkplug commands is not protected.
    let codes = p
        .subscribe_with(
            &[
                ("$SYS/#", sub_opts(QoS::AtMostOnce)),
                ("$share/g/$SYS/#", sub_opts(QoS::AtMostOnce)),
                ("spBv1.0/+/DCMD/#", sub_opts(QoS::AtMostOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(codes, [0x87, 0x87, 0]);
    // Plain topics and Sparkplug data are allowed, and delivered.
    assert_eq!(p.publish_acked("spBv1.0/G/NDATA/N", "sentinel").await, 0);
    next_is_sentinel(&mut all, "spBv1.0/G/NDATA/N").await;
    next_is_sentinel(&mut spb, "spBv1.0/G/NDATA/N").await;
    assert_eq!(p.publish_acked("plant/a/t", "sentinel").await, 0);
    next_is_sentinel(&mut all, "plant/a/t").await;
    let s = stats(&b);
    assert_eq!(s.acl_denied, 9, "2 wills, 4 + 1 publishes, 2 subscriptions");
    assert_eq!(s.per_user["(anonymous)"].acl_denied, 9);
    assert_eq!(
        s.publishes_appended, 2,
        "refused publishes are never appended"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_protected_publish_closes_the_connection() {
    let b = broker(config()).await;
    let addr = b.tcp_addr();
    let (mut all, mut spb) = subscribers(addr).await;
    for (i, t) in PROTECTED.iter().enumerate() {
        let mut p = Raw::v311(addr, &format!("pub311-{i}")).await;
        p.publish(t, "x", QoS::AtLeastOnce).await;
        // 3.1.1 has no negative PUBACK: the connection is closed [MQTT-3.3.5-2].
        let seen = p.expect_closed().await;
        assert!(seen.is_empty(), "{t}: {seen:?}");
    }
    let mut p = Raw::v311(addr, "pub311-ok").await;
    // QoS 0 is refused the same way.
    p.publish("$SYS/y", "x", QoS::AtMostOnce).await;
    assert!(p.expect_closed().await.is_empty());
    let mut p = Raw::v311(addr, "pub311-sub").await;
    // 3.1.1 SUBACK failure is 0x80.
    assert_eq!(p.subscribe("$SYS/#", QoS::AtLeastOnce).await, 0x80);
    assert_eq!(p.publish_acked("spBv1.0/G/DDATA/N/D", "sentinel").await, 0);
    next_is_sentinel(&mut all, "spBv1.0/G/DDATA/N/D").await;
    next_is_sentinel(&mut spb, "spBv1.0/G/DDATA/N/D").await;
    assert_eq!(stats(&b).acl_denied, 6);
    b.stop().await;
}

/// Users `scada` (granted DCMD literally), `op` (only `#`); a subscriber sees what passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmd_needs_a_literal_grant() {
    let mut cfg = config();
    for u in ["scada", "op"] {
        cfg.users.insert(u.into(), cheap_hash(u));
    }
    cfg.acl = vec![
        rule(
            &["scada"],
            Action::Publish,
            Permission::Allow,
            &["spBv1.0/+/DCMD/#"],
        ),
        rule(&["*"], Action::All, Permission::Allow, &["#"]),
    ];
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (mut sub, _) = Raw::accepted(addr, with_login(v5("watch"), "op", "op")).await;
    assert_eq!(sub.subscribe("spBv1.0/#", QoS::AtLeastOnce).await, 1);
    let (mut scada, _) = Raw::accepted(addr, with_login(v5("scada-1"), "scada", "scada")).await;
    let (mut op, _) = Raw::accepted(addr, with_login(v5("op-1"), "op", "op")).await;

    assert_eq!(scada.publish_acked("spBv1.0/G/DCMD/N/D", "go").await, 0);
    let got = sub.receive().await;
    assert_eq!(
        (got.topic.as_str(), payload(&got)),
        ("spBv1.0/G/DCMD/N/D", "go")
    );
    // The grant is DCMD only: NCMD and STATE stay closed for scada (its `#` rule grants nothing).
    assert_eq!(scada.publish_acked("spBv1.0/G/NCMD/N", "x").await, 0x87);
    assert_eq!(scada.publish_acked("spBv1.0/STATE/h", "x").await, 0x87);
    // `#` alone does not grant DCMD.
    assert_eq!(op.publish_acked("spBv1.0/G/DCMD/N/D", "evil").await, 0x87);
    assert_eq!(op.publish_acked("spBv1.0/G/DDATA/N/D", "sentinel").await, 0);
    next_is_sentinel(&mut sub, "spBv1.0/G/DDATA/N/D").await;
    // The same user over 3.1.1: closed.
    let (mut op311, _) = Raw::accepted(addr, with_login(v311("op-2"), "op", "op")).await;
    op311
        .publish("spBv1.0/G/DCMD/N/D", "evil", QoS::AtLeastOnce)
        .await;
    assert!(op311.expect_closed().await.is_empty());

    let s = stats(&b);
    assert_eq!(s.acl_denied, 4);
    assert_eq!(s.per_user["scada"].acl_denied, 2);
    assert_eq!(s.per_user["op"].acl_denied, 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_users_first_match_and_coverage() {
    let mut cfg = config();
    for u in ["plc7", "plc8"] {
        cfg.users.insert(u.into(), cheap_hash(u));
    }
    cfg.acl = vec![
        // Deny before allow: the first rule that applies decides.
        rule(
            &["*"],
            Action::Publish,
            Permission::Deny,
            &["plant/%u/secret"],
        ),
        rule(&["*"], Action::Publish, Permission::Allow, &["plant/%u/#"]),
        rule(
            &["*", "$anonymous"],
            Action::Publish,
            Permission::Allow,
            &["devices/%c/#"],
        ),
        rule(
            &["$anonymous"],
            Action::Subscribe,
            Permission::Allow,
            &["public/#"],
        ),
        rule(
            &["*"],
            Action::Subscribe,
            Permission::Allow,
            &["plant/#", "line/+/t", "devices/#"],
        ),
    ];
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (mut plc7, _) = Raw::accepted(addr, with_login(v5("plc7-a"), "plc7", "plc7")).await;
    let (mut plc8, _) = Raw::accepted(addr, with_login(v5("plc8-a"), "plc8", "plc8")).await;
    let mut anon = Raw::v5(addr, "anon-1").await;

    // Subscribe coverage: `plant/#` covers `plant/+/t`; `line/+/t` covers itself and
    // `line/4/t` but not `line/#`.
    let codes = plc8
        .subscribe_with(
            &[
                ("plant/+/t", sub_opts(QoS::AtLeastOnce)),
                ("line/+/t", sub_opts(QoS::AtLeastOnce)),
                ("line/4/t", sub_opts(QoS::AtLeastOnce)),
                ("line/#", sub_opts(QoS::AtLeastOnce)),
                ("public/#", sub_opts(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(codes, [1, 1, 1, 0x87, 0x87]);
    // `$share/group/filter` is judged on `filter`.
    let codes = plc7
        .subscribe_with(
            &[
                ("$share/g/plant/#", sub_opts(QoS::AtLeastOnce)),
                ("$share/g/line/#", sub_opts(QoS::AtLeastOnce)),
                ("$share/g/office/#", sub_opts(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(codes, [1, 0x87, 0x87]);
    // "$anonymous" is clients without a user name; "*" does not include them.
    assert_eq!(anon.subscribe("public/#", QoS::AtMostOnce).await, 0);
    assert_eq!(anon.subscribe("plant/#", QoS::AtMostOnce).await, 0x87);

    // %u: plc7 publishes under plant/plc7/ only.
    assert_eq!(plc7.publish_acked("plant/plc7/t", "1").await, 0);
    let p = plc8.receive().await;
    assert_eq!((p.topic.as_str(), payload(&p)), ("plant/plc7/t", "1"));
    // The shared subscription's only member is plc7 itself.
    let p = plc7.receive().await;
    assert_eq!((p.topic.as_str(), payload(&p)), ("plant/plc7/t", "1"));
    assert_eq!(plc7.publish_acked("plant/plc8/t", "x").await, 0x87);
    assert_eq!(plc7.publish_acked("plant/plc7/secret", "x").await, 0x87);
    // %c: the client id's subtree, for users and anonymous clients alike.
    assert_eq!(plc7.publish_acked("devices/plc7-a/x", "1").await, 0);
    assert_eq!(plc7.publish_acked("devices/plc8-a/x", "x").await, 0x87);
    assert_eq!(anon.publish_acked("devices/anon-1/x", "1").await, 0);
    // A %u filter never matches an anonymous client; no other rule applies: denied.
    assert_eq!(anon.publish_acked("plant/anon-1/t", "x").await, 0x87);
    // Rules exist and none applies: denied (no default allow).
    assert_eq!(plc7.publish_acked("office/x", "x").await, 0x87);
    // Nothing refused was delivered: the next message for each is the sentinel.
    assert_eq!(plc8.publish_acked("plant/plc8/t", "sentinel").await, 0);
    for sub in [&mut plc8, &mut plc7] {
        let p = sub.receive().await;
        assert_eq!(
            (p.topic.as_str(), payload(&p)),
            ("plant/plc8/t", "sentinel")
        );
    }

    let s = stats(&b);
    assert_eq!(s.per_user["plc8"].acl_denied, 2);
    assert_eq!(s.per_user["plc7"].acl_denied, 6);
    assert_eq!(s.per_user["(anonymous)"].acl_denied, 2);
    assert_eq!(s.acl_denied, 10);
    b.stop().await;
}

/// A deny rule applies to a subscription as soon as it overlaps: `#` would receive the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_overlap_refuses_wide_subscriptions() {
    let mut cfg = config();
    cfg.acl = vec![
        rule(
            &["$anonymous"],
            Action::Subscribe,
            Permission::Deny,
            &["plant/secret/#"],
        ),
        rule(&["$anonymous"], Action::All, Permission::Allow, &["#"]),
    ];
    let b = broker(cfg).await;
    let mut c = Raw::v5(b.tcp_addr(), "c").await;
    let codes = c
        .subscribe_with(
            &[
                ("#", sub_opts(QoS::AtMostOnce)),
                ("plant/+/x", sub_opts(QoS::AtMostOnce)),
                ("plant/public/#", sub_opts(QoS::AtMostOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(codes, [0x87, 0x87, 0]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_must_start_with_the_user_name() {
    let mut cfg = config();
    cfg.client_id_prefix_user = true;
    cfg.users.insert("plc7".into(), cheap_hash("pw"));
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (_, a) = Raw::connect(addr, with_login(v5("other"), "plc7", "pw")).await;
    // MQTT 5: 0x85 "client identifier not valid".
    assert_eq!(a.code(), Some(0x85));
    let (_, a) = Raw::connect(addr, with_login(v311("plc8"), "plc7", "pw")).await;
    // 3.1.1: return code 2 "identifier rejected".
    assert_eq!(a.code(), Some(2));
    Raw::accepted(addr, with_login(v5("plc7"), "plc7", "pw")).await;
    Raw::accepted(addr, with_login(v311("plc7-line1"), "plc7", "pw")).await;
    // Anonymous clients have no user name to start with.
    Raw::v5(addr, "anything").await;
    assert_eq!(stats(&b).connections_rejected, 2);
    b.stop().await;
}

/// Real argon2id hashes (`hash_password`): wrong password, missing user name, right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_checked_against_argon2_hashes() {
    let mut cfg = config();
    cfg.allow_anonymous = false;
    cfg.users.insert("plc".into(), real_hash().await);
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (_, a) = Raw::connect(addr, with_login(v5("plc-1"), "plc", "wrong")).await;
    assert_eq!(a.code(), Some(0x86), "bad user name or password");
    let (_, a) = Raw::connect(addr, with_login(v311("plc-1"), "plc", "wrong")).await;
    assert_eq!(a.code(), Some(4));
    let (_, a) = Raw::connect(addr, v5("anon")).await;
    assert_eq!(a.code(), Some(0x87), "no user name, anonymous off");
    let (_, a) = Raw::connect(addr, v311("anon")).await;
    assert_eq!(a.code(), Some(5));
    let (mut c, _) = Raw::accepted(addr, with_login(v5("plc-1"), "plc", REAL_PASSWORD)).await;
    c.ping().await;
    let s = stats(&b);
    assert_eq!(s.auth_failures, 4);
    assert_eq!(s.per_user["plc"].auth_failures, 2);
    assert_eq!(s.per_user["(anonymous)"].auth_failures, 2);
    b.stop().await;
}

/// Five wrong passwords for a user from 127.0.0.1 lock that user × address: the sixth attempt
/// is refused "banned" even with the right password (no password check), while the device on
/// 127.0.0.2 still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttle_locks_the_guesser_not_the_device() {
    let mut cfg = config();
    cfg.allow_anonymous = false;
    cfg.users.insert("plc".into(), cheap_hash("s3cret"));
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    for i in 0..5 {
        let (_, a) = Raw::connect(addr, with_login(v5(&format!("g{i}")), "plc", "guess")).await;
        assert_eq!(a.code(), Some(0x86), "attempt {i}");
    }
    let (_, a) = Raw::connect(addr, with_login(v5("g5"), "plc", "guess")).await;
    assert_eq!(a.code(), Some(0x8A), "6th wrong password: banned");
    let (_, a) = Raw::connect(addr, with_login(v5("g6"), "plc", "s3cret")).await;
    assert_eq!(a.code(), Some(0x8A), "locked out: not even checked");
    let (_, a) = Raw::connect(addr, with_login(v311("g7"), "plc", "s3cret")).await;
    assert_eq!(a.code(), Some(5), "3.1.1: not authorized");
    let (mut device, _) = Raw::accepted_from(
        OTHER_ADDRESS,
        addr,
        with_login(v5("plc-device"), "plc", "s3cret"),
    )
    .await;
    device.ping().await;
    let s = stats(&b);
    assert_eq!(s.auth_throttled, 3);
    assert_eq!(s.per_user["plc"].auth_failures, 8);
    // A wrong guess from the other address is still checked normally (not banned).
    let (_, a) = Raw::connect_from(OTHER_ADDRESS, addr, with_login(v5("g8"), "plc", "guess")).await;
    assert_eq!(a.code(), Some(0x86));
    b.stop().await;
}

/// A persistent session belongs to the user that made it: another user connecting with the
/// same client id (clean start 0) must not inherit its subscriptions or queued messages, which
/// were authorized for the first user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_not_inherited_by_another_user() {
    let mut cfg = config();
    for u in ["scada", "guest"] {
        cfg.users.insert(u.into(), cheap_hash(u));
    }
    cfg.acl = vec![
        rule(
            &["scada"],
            Action::Subscribe,
            Permission::Allow,
            &["spBv1.0/#"],
        ),
        rule(
            &["guest"],
            Action::Subscribe,
            Permission::Allow,
            &["public/#"],
        ),
        rule(&["$anonymous"], Action::Publish, Permission::Allow, &["#"]),
    ];
    let b = broker(cfg).await;
    let addr = b.tcp_addr();
    let (mut s, _) = Raw::accepted(
        addr,
        with_login(persistent(v5("scada-1"), 60), "scada", "scada"),
    )
    .await;
    assert_eq!(s.subscribe("spBv1.0/#", QoS::AtLeastOnce).await, 1);
    s.disconnect().await;
    let mut p = Raw::v5(addr, "plc").await;
    assert_eq!(p.publish_acked("spBv1.0/G/NDATA/N", "queued").await, 0);
    // The guest may not subscribe to it...
    let (mut g, _) = Raw::accepted(addr, with_login(v5("guest-1"), "guest", "guest")).await;
    assert_eq!(g.subscribe("spBv1.0/#", QoS::AtLeastOnce).await, 0x87);
    g.disconnect().await;
    // ...nor get it by resuming scada's session under scada's client id.
    let (mut g, ack) = Raw::accepted(
        addr,
        with_login(persistent(v5("scada-1"), 60), "guest", "guest"),
    )
    .await;
    assert!(!ack.session_present, "another user's session was resumed");
    assert_eq!(p.publish_acked("spBv1.0/G/NDATA/N", "live").await, 0);
    assert_eq!(g.subscribe("public/#", QoS::AtLeastOnce).await, 1);
    assert_eq!(p.publish_acked("public/x", "sentinel").await, 0);
    let m = g.receive().await;
    assert_eq!(
        (m.topic.as_str(), payload(&m)),
        ("public/x", "sentinel"),
        "the guest received scada's subscription"
    );
    b.stop().await;
}

/// MQTT 3.1 (protocol name `MQIsdp`, level 3) is refused with return code 1 "unacceptable
/// protocol version" [MQTT-3.1.2-2 3.1.1], counted as a rejected connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_version_refused() {
    let b = broker(config()).await;
    let mut raw = Raw::socket(b.tcp_addr(), ironbridge_broker::codec::Protocol::V311).await;
    raw.write_raw(&[
        0x10, 0x0F, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x01, b'x',
    ])
    .await;
    let seen = raw.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::ConnAck(a)] if a.reason == 0x84),
        "{seen:?}"
    );
    let s = stats(&b);
    assert_eq!((s.connections_rejected, s.protocol_errors), (1, 0));
    b.stop().await;
}
