//! Uplink behaviour that needs no broker: not configured, unreachable brokers, shutdown while
//! backing off, configuration errors.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_buffer::{Log, Options, Record};
use ironbridge::event::Event;
use ironbridge::uplink::{
    self, RouteConfig, UplinkConfig, UplinkError, UplinkState, UplinkStatus, ValueFormat,
};
use tokio::sync::watch;

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there afterwards.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn encoded(topic: &str) -> Vec<u8> {
    let e = Event {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(b"1"),
        ..Default::default()
    };
    let mut b = Vec::new();
    e.encode(&mut b).expect("encode");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_configured_just_buffers_until_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path(), Options::default()).expect("log"));
    let status = Arc::new(UplinkStatus::new());
    let (tx, mut rx) = watch::channel(false);
    let task = tokio::spawn(uplink::run(
        UplinkConfig::default(),
        Arc::clone(&log),
        Arc::clone(&status),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let b = encoded("a/b");
    log.append(&[Record::new(1, &b)])
        .expect("append")
        .durable()
        .await
        .expect("durable");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = status.snapshot();
    assert!(matches!(s.state, UplinkState::Disconnected { .. }), "{s:?}");
    assert!(s.is_healthy());
    assert_eq!(s.lag_records, 1);
    let _ = tx.send(true);
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("task");
    assert!(r.is_ok());
    assert_eq!(log.cursor("uplink").expect("cursor"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_backs_off_and_shutdown_is_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path(), Options::default()).expect("log"));
    let b = encoded("a/b");
    log.append(&[Record::new(1, &b), Record::new(2, &b)])
        .expect("append")
        .durable()
        .await
        .expect("durable");
    let status = Arc::new(UplinkStatus::new());
    let config = UplinkConfig {
        bootstrap_servers: vec![format!("127.0.0.1:{}", closed_port())],
        request_timeout_ms: 2_000,
        retry_backoff_initial_ms: 50,
        retry_backoff_max_ms: 400,
        ..Default::default()
    };
    let (tx, mut rx) = watch::channel(false);
    let task = tokio::spawn(uplink::run(
        config,
        Arc::clone(&log),
        Arc::clone(&status),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = status.snapshot();
        if s.retries >= 3 {
            break s;
        }
        assert!(Instant::now() < deadline, "no retries: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match &s.state {
        UplinkState::BackingOff {
            reason,
            retry_in_ms,
        } => {
            assert!(reason.contains("127.0.0.1"), "{reason}");
            assert!(*retry_in_ms <= 400);
        }
        other => panic!("expected backing off, got {other:?}"),
    }
    assert!(!s.is_healthy());
    assert_eq!(
        (s.committed_offset, s.forwarded_records, s.lag_records),
        (0, 0, 2)
    );
    assert!(s.lag_oldest_age_ms.is_some());
    let stop = Instant::now();
    let _ = tx.send(true);
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("task");
    assert!(r.is_ok());
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stop.elapsed()
    );
    // Nothing was acknowledged, so nothing was committed past the start.
    assert!(log.cursor("uplink").expect("cursor").unwrap_or(0) == 0);
}

#[tokio::test]
async fn invalid_config_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path(), Options::default()).expect("log"));
    let config = UplinkConfig {
        bootstrap_servers: vec!["127.0.0.1:9092".into()],
        routes: vec![RouteConfig {
            name: None,
            filter: "a/+".into(),
            topic: "bad topic".into(),
            key: "{topic}".into(),
            value: ValueFormat::Raw,
        }],
        ..Default::default()
    };
    let r = uplink::run(config, log, Arc::new(UplinkStatus::new()), async {}).await;
    match r {
        Err(UplinkError::Config(e)) => assert_eq!(e.field, "kafka.routes[0].topic"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
