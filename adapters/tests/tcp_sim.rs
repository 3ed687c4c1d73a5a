//! The poller against the simulator over Modbus TCP on 127.0.0.1: typed values, report by
//! exception, heartbeat, deadband, exceptions, slow replies, disconnects, bad replies, writes,
//! concurrency of TCP devices and the demo device.

mod common;

use std::time::Duration;

use common::{devices, wait_all_good, wait_for};
use ironbridge_adapters::modbus::sim::{Corruption, Simulator, demo};
use ironbridge_adapters::modbus::{
    Area, BadReason, LinkState, ModbusConfig, Poller, Quality, Value, WriteError,
};
use tokio::sync::mpsc;

async fn sim() -> (Simulator, ironbridge_adapters::modbus::sim::SimServer) {
    let sim = Simulator::new();
    sim.add_unit(1);
    let server = sim
        .spawn_tcp("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator binds");
    (sim, server)
}

fn device_toml(addr: &str, extra: &str, tags: &str) -> String {
    format!(
        "[[devices]]\nname = 'plc'\ntransport = {{ type = 'tcp', address = '{addr}' }}\n\
         poll_interval_ms = 50\ntimeout_ms = 300\nheartbeat_ms = 0\n{extra}\n{tags}"
    )
}

const TYPED_TAGS: &str = r#"
[[devices.tags]]
name = "f32_abcd"
address = "40001"
type = "f32"
[[devices.tags]]
name = "f32_cdab"
address = "40003"
type = "f32"
order = "CDAB"
[[devices.tags]]
name = "u32_dcba"
address = "40005"
type = "u32"
order = "DCBA"
[[devices.tags]]
name = "f64_badc"
address = "40007"
type = "f64"
order = "BADC"
[[devices.tags]]
name = "i16_scaled"
address = "40011"
type = "i16"
scale = 0.1
offset = 10
unit = "degC"
[[devices.tags]]
name = "name"
address = "40012"
type = "string"
length = 6
[[devices.tags]]
name = "bit2"
address = "40015"
type = "bit"
bit = 2
[[devices.tags]]
name = "i64"
address = "30001"
type = "i64"
[[devices.tags]]
name = "u16_input"
address = "30005"
type = "u16"
[[devices.tags]]
name = "coil3"
address = "00004"
type = "bool"
[[devices.tags]]
name = "di0"
address = "10001"
type = "bool"
"#;

fn load_typed(sim: &Simulator) {
    // Hand-computed register images (see codec tests for the byte order table).
    sim.set_registers(1, Area::HoldingRegister, 0, &[0x42F6, 0xE979]); // 123.456
    sim.set_registers(1, Area::HoldingRegister, 2, &[0x0000, 0xBFC0]); // -1.5 CDAB
    sim.set_registers(1, Area::HoldingRegister, 4, &[0x7856, 0x3412]); // 0x12345678 DCBA
    sim.set_registers(
        1,
        Area::HoldingRegister,
        6,
        &[0x71C0, 0x6612, 0x6666, 0x6666],
    ); // -273.15 BADC
    sim.set_registers(1, Area::HoldingRegister, 10, &[0xFF9C]); // -100 → -10 * 0.1 + 10 = 0
    sim.set_registers(1, Area::HoldingRegister, 11, &[0x4142, 0x4300, 0]); // "ABC"
    sim.set_registers(1, Area::HoldingRegister, 14, &[0x0004]); // bit 2 set
    sim.set_registers(1, Area::InputRegister, 0, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]); // -2
    sim.set_registers(1, Area::InputRegister, 4, &[54321]);
    sim.set_bits(1, Area::Coil, 3, &[true]);
    sim.set_bits(1, Area::DiscreteInput, 0, &[true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_report_by_exception_and_deadband() {
    let (sim, server) = sim().await;
    load_typed(&sim);
    let tags = format!(
        "{TYPED_TAGS}\n[[devices.tags]]\nname = 'level'\naddress = '40021'\ntype = 'u16'\ndeadband = 10\n"
    );
    let devs = devices(&device_toml(&server.addr().to_string(), "", &tags));
    let (tx, mut rx) = mpsc::channel(1024);
    let poller = Poller::spawn(devs, tx);
    let names = [
        "f32_abcd",
        "f32_cdab",
        "u32_dcba",
        "f64_badc",
        "i16_scaled",
        "name",
        "bit2",
        "i64",
        "u16_input",
        "coil3",
        "di0",
        "level",
    ];
    let got = wait_all_good(&mut rx, "plc", &names, Duration::from_secs(5)).await;
    assert_eq!(got["f32_abcd"], Value::F32(123.456));
    assert_eq!(got["f32_cdab"], Value::F32(-1.5));
    assert_eq!(got["u32_dcba"], Value::U32(0x1234_5678));
    assert_eq!(got["f64_badc"], Value::F64(-273.15));
    match got["i16_scaled"] {
        Value::F64(v) => assert!(v.abs() < 1e-9, "{v}"),
        ref other => panic!("scaled value should be f64, got {other:?}"),
    }
    assert_eq!(got["name"], Value::String("ABC".into()));
    assert_eq!(got["bit2"], Value::Bool(true));
    assert_eq!(got["i64"], Value::I64(-2));
    assert_eq!(got["u16_input"], Value::U16(54321));
    assert_eq!(got["coil3"], Value::Bool(true));
    assert_eq!(got["di0"], Value::Bool(true));

    // Report by exception: after a change to one tag, the next reading is that tag — the
    // unchanged tags polled in between were not re-sent.
    sim.set_registers(1, Area::InputRegister, 4, &[1]);
    let r = rx.recv().await.expect("reading");
    assert_eq!(
        (r.tag.as_str(), r.value),
        ("u16_input", Some(Value::U16(1)))
    );
    assert!(r.timestamp_ms > 1_600_000_000_000);

    // Deadband 10: a move of 5 is not reported, a move of 11 from the last report is.
    sim.set_registers(1, Area::HoldingRegister, 20, &[5]);
    sim.set_bits(1, Area::Coil, 3, &[false]);
    let r = rx.recv().await.expect("reading");
    assert_eq!(
        r.tag, "coil3",
        "the 5-unit move of 'level' must not be reported"
    );
    sim.set_registers(1, Area::HoldingRegister, 20, &[11]);
    let r = rx.recv().await.expect("reading");
    assert_eq!((r.tag.as_str(), r.value), ("level", Some(Value::U16(11))));

    let h = &poller.health()[0];
    assert_eq!(h.state, LinkState::Ok);
    assert!(h.polls >= 3 && h.responses >= 3 && h.timeouts == 0, "{h:?}");
    // One block per area for this map: 3 register/bit areas + discrete inputs.
    assert!(h.rtt_avg_us > 0);
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_resends_unchanged_values() {
    let (sim, server) = sim().await;
    sim.set_registers(1, Area::HoldingRegister, 0, &[7]);
    let devs = devices(&device_toml(
        &server.addr().to_string(),
        "",
        "[[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n",
    ));
    let mut devs = devs;
    devs[0].heartbeat = Some(Duration::from_millis(300));
    let (tx, mut rx) = mpsc::channel(64);
    let poller = Poller::spawn(devs, tx);
    let first = wait_for(&mut rx, Duration::from_secs(5), "first", |r| r.tag == "v").await;
    let second = wait_for(&mut rx, Duration::from_secs(5), "heartbeat", |r| {
        r.tag == "v"
    })
    .await;
    let gap = second.timestamp_ms - first.timestamp_ms;
    assert!((250..1500).contains(&gap), "heartbeat gap {gap} ms");
    assert_eq!(second.value, Some(Value::U16(7)));
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_split_merged_reads_and_mark_only_their_tags() {
    let (sim, server) = sim().await;
    sim.set_registers(1, Area::HoldingRegister, 0, &[1]);
    sim.set_registers(1, Area::HoldingRegister, 5, &[2]);
    sim.set_registers(1, Area::HoldingRegister, 100, &[3]);
    // A hole in the device's map inside the merged block 0..=5.
    sim.set_exception(1, Area::HoldingRegister, 3, 2);
    let tags = "[[devices.tags]]\nname='a'\naddress='40001'\ntype='u16'\n\
                [[devices.tags]]\nname='b'\naddress='40006'\ntype='u16'\n\
                [[devices.tags]]\nname='c'\naddress='40101'\ntype='u16'\n";
    let devs = devices(&device_toml(&server.addr().to_string(), "", tags));
    let (tx, mut rx) = mpsc::channel(256);
    let poller = Poller::spawn(devs, tx);
    let got = wait_all_good(&mut rx, "plc", &["a", "b", "c"], Duration::from_secs(5)).await;
    assert_eq!(got["a"], Value::U16(1));
    assert_eq!(got["b"], Value::U16(2));

    sim.set_exception(1, Area::HoldingRegister, 100, 4);
    let r = wait_for(&mut rx, Duration::from_secs(5), "c bad", |r| r.tag == "c").await;
    assert_eq!(r.quality, Quality::Bad(BadReason::Exception(4)));
    assert_eq!(r.value, None);
    sim.set_exception(1, Area::HoldingRegister, 5, 2);
    let r = wait_for(&mut rx, Duration::from_secs(5), "b bad", |r| r.tag == "b").await;
    assert_eq!(r.quality, Quality::Bad(BadReason::Exception(2)));
    // The device still answers: not a failed poll, a still good 'a', and 'c' recovers.
    sim.clear_exception(1, Area::HoldingRegister, 100);
    let r = wait_for(&mut rx, Duration::from_secs(5), "c good", |r| r.tag == "c").await;
    assert_eq!(r.quality, Quality::Good);
    let h = &poller.health()[0];
    assert!(h.exceptions >= 3, "{h:?}");
    assert_eq!(h.state, LinkState::Ok);
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_device_times_out_then_recovers() {
    let (sim, server) = sim().await;
    sim.set_registers(1, Area::HoldingRegister, 0, &[42]);
    let devs = devices(&device_toml(
        &server.addr().to_string(),
        "retries = 0",
        "[[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n",
    ));
    let (tx, mut rx) = mpsc::channel(64);
    let poller = Poller::spawn(devs, tx);
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.quality.is_good()
    })
    .await;
    sim.set_delay(Duration::from_millis(700));
    let r = wait_for(&mut rx, Duration::from_secs(5), "timeout", |r| {
        !r.quality.is_good()
    })
    .await;
    assert_eq!(r.quality, Quality::Bad(BadReason::Timeout));
    assert_eq!(poller.health()[0].state, LinkState::Failing);
    sim.set_delay(Duration::ZERO);
    let r = wait_for(&mut rx, Duration::from_secs(15), "recovered", |r| {
        r.quality.is_good()
    })
    .await;
    assert_eq!(r.value, Some(Value::U16(42)));
    let h = &poller.health()[0];
    assert!(h.timeouts >= 1 && h.failed_polls >= 1, "{h:?}");
    // A timed-out TCP connection is replaced (a late reply must not be taken for the next).
    assert!(h.connects >= 2, "{h:?}");
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_and_refused_connections_reconnect_with_backoff() {
    let (sim, server) = sim().await;
    sim.set_registers(1, Area::HoldingRegister, 0, &[9]);
    let devs = devices(&device_toml(
        &server.addr().to_string(),
        "retries = 0",
        "[[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n",
    ));
    let (tx, mut rx) = mpsc::channel(64);
    let poller = Poller::spawn(devs, tx);
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.quality.is_good()
    })
    .await;

    // Connections dropped and new ones refused: the tag goes bad.
    sim.refuse_connections(true);
    sim.disconnect_all();
    let r = wait_for(&mut rx, Duration::from_secs(5), "bad", |r| {
        !r.quality.is_good()
    })
    .await;
    assert!(
        matches!(
            r.quality,
            Quality::Bad(BadReason::Io(_) | BadReason::NotConnected(_))
        ),
        "{r:?}"
    );
    // Accepting again: the poller reconnects by itself and the value is good again.
    sim.refuse_connections(false);
    let r = wait_for(&mut rx, Duration::from_secs(15), "good again", |r| {
        r.quality.is_good()
    })
    .await;
    assert_eq!(r.value, Some(Value::U16(9)));
    let h = &poller.health()[0];
    assert!(h.connects >= 2, "{h:?}");
    assert!(h.io_errors + h.connect_failures >= 1, "{h:?}");

    // The server goes away entirely (connection refused), then comes back on the same port.
    let addr = server.addr();
    server.shutdown().await;
    wait_for(&mut rx, Duration::from_secs(10), "not connected", |r| {
        matches!(r.quality, Quality::Bad(BadReason::NotConnected(_)))
    })
    .await;
    let server = sim.spawn_tcp(addr).await.expect("rebind");
    wait_for(&mut rx, Duration::from_secs(40), "back", |r| {
        r.quality.is_good()
    })
    .await;
    assert!(poller.health()[0].connect_failures >= 1);
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_wrong_unit_and_garbage_replies_are_counted_not_fatal() {
    let (sim, server) = sim().await;
    sim.set_registers(1, Area::HoldingRegister, 0, &[5, 6]);
    let devs = devices(&device_toml(
        &server.addr().to_string(),
        "retries = 0",
        "[[devices.tags]]\nname='v'\naddress='40001'\ntype='u32'\n",
    ));
    let (tx, mut rx) = mpsc::channel(64);
    let poller = Poller::spawn(devs, tx);
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.quality.is_good()
    })
    .await;

    sim.short_replies(1);
    let r = wait_for(&mut rx, Duration::from_secs(5), "short", |r| {
        !r.quality.is_good()
    })
    .await;
    assert!(
        matches!(r.quality, Quality::Bad(BadReason::Malformed(_))),
        "{r:?}"
    );
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.quality.is_good()
    })
    .await;

    sim.corrupt_next_reply(Corruption::WrongUnit);
    let r = wait_for(&mut rx, Duration::from_secs(5), "wrong unit", |r| {
        !r.quality.is_good()
    })
    .await;
    assert_eq!(r.quality, Quality::Bad(BadReason::WrongUnit));
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.quality.is_good()
    })
    .await;

    sim.corrupt_next_reply(Corruption::Garbage);
    let r = wait_for(&mut rx, Duration::from_secs(5), "garbage", |r| {
        !r.quality.is_good()
    })
    .await;
    assert!(
        matches!(
            r.quality,
            Quality::Bad(BadReason::Malformed(_) | BadReason::Io(_) | BadReason::Timeout)
        ),
        "{r:?}"
    );
    let r = wait_for(&mut rx, Duration::from_secs(10), "good", |r| {
        r.quality.is_good()
    })
    .await;
    assert_eq!(r.value, Some(Value::U32(0x0005_0006)));
    let h = &poller.health()[0];
    assert!(h.malformed >= 1 && h.wrong_unit >= 1, "{h:?}");
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_every_kind_with_scale_order_and_verification() {
    let (sim, server) = sim().await;
    let tags = r#"
[[devices.tags]]
name = "setpoint"
address = "40001"
type = "f32"
order = "CDAB"
access = "read_write"
verify_write = true
[[devices.tags]]
name = "speed"
address = "40003"
type = "u16"
scale = 0.1
access = "read_write"
[[devices.tags]]
name = "limit"
address = "40004"
type = "i32"
order = "DCBA"
access = "read_write"
[[devices.tags]]
name = "label"
address = "40010"
type = "string"
length = 4
access = "read_write"
verify_write = true
[[devices.tags]]
name = "enable_bit"
address = "40020"
type = "bit"
bit = 9
access = "read_write"
verify_write = true
[[devices.tags]]
name = "pump"
address = "00001"
type = "bool"
access = "read_write"
verify_write = true
[[devices.tags]]
name = "valve"
address = "00002"
type = "bool"
access = "read_write"
[[devices.tags]]
name = "measured"
address = "30001"
type = "u16"
"#;
    sim.set_registers(1, Area::HoldingRegister, 19, &[0x00FF]);
    let devs = devices(&device_toml(&server.addr().to_string(), "", tags));
    let (tx, mut rx) = mpsc::channel(256);
    let poller = Poller::spawn(devs, tx);

    let out = poller
        .write("plc", "setpoint", Value::F64(-1.5))
        .await
        .expect("write f32");
    assert!(out.verified);
    assert_eq!(out.requests, 1);
    assert_eq!(
        sim.registers(1, Area::HoldingRegister, 0, 2),
        vec![0x0000, 0xBFC0]
    );
    // Scaled: 123.4 engineering → 1234 raw, a single register (function 6).
    let out = poller
        .write("plc", "speed", Value::F64(123.4))
        .await
        .expect("write scaled");
    assert_eq!(out.requests, 1);
    assert_eq!(sim.registers(1, Area::HoldingRegister, 2, 1), vec![1234]);
    // Adjacent tags in one request: speed (40003) + limit (40004..5) → one function 16.
    let out = poller
        .write_tags(
            "plc",
            vec![
                ("limit".into(), Value::I32(-123_456_789)),
                ("speed".into(), Value::U16(7)), // engineering 7 → raw 70
            ],
        )
        .await
        .expect("write two");
    assert_eq!(out.requests, 1);
    assert_eq!(
        sim.registers(1, Area::HoldingRegister, 2, 3),
        vec![70, 0xEB32, 0xA4F8]
    );
    poller
        .write("plc", "label", Value::String("OK".into()))
        .await
        .expect("write string");
    assert_eq!(
        sim.registers(1, Area::HoldingRegister, 9, 2),
        vec![0x4F4B, 0]
    );
    // A bit: masked write keeps the other bits.
    poller
        .write("plc", "enable_bit", Value::Bool(true))
        .await
        .expect("write bit");
    assert_eq!(sim.registers(1, Area::HoldingRegister, 19, 1), vec![0x02FF]);
    // Coils: two adjacent coils in one function 15; one alone as function 5.
    let out = poller
        .write_tags(
            "plc",
            vec![
                ("pump".into(), Value::Bool(true)),
                ("valve".into(), Value::Bool(true)),
            ],
        )
        .await
        .expect("write coils");
    assert_eq!(out.requests, 1);
    assert_eq!(sim.bits(1, Area::Coil, 0, 2), vec![true, true]);
    poller
        .write("plc", "valve", Value::Bool(false))
        .await
        .expect("write coil");
    assert_eq!(sim.bits(1, Area::Coil, 0, 2), vec![true, false]);
    // The write is picked up by the next poll and reported.
    wait_for(&mut rx, Duration::from_secs(5), "valve false", |r| {
        r.tag == "valve" && r.value == Some(Value::Bool(false))
    })
    .await;

    // Refusals before anything reaches the wire.
    let e = poller
        .write("plc", "measured", Value::U16(1))
        .await
        .expect_err("read-only");
    assert_eq!(e, WriteError::ReadOnly("measured".into()));
    let e = poller
        .write("plc", "speed", Value::F64(7000.0))
        .await
        .expect_err("out of range");
    assert!(matches!(e, WriteError::Value { .. }), "{e}");
    let e = poller
        .write("plc", "nope", Value::U16(1))
        .await
        .expect_err("unknown tag");
    assert!(matches!(e, WriteError::UnknownTag { .. }), "{e}");
    let e = poller
        .write("other", "speed", Value::U16(1))
        .await
        .expect_err("unknown device");
    assert!(matches!(e, WriteError::UnknownDevice(_)), "{e}");
    // The device refuses: the exception comes back as the error.
    sim.set_exception(1, Area::HoldingRegister, 2, 3);
    let e = poller
        .write("plc", "speed", Value::U16(1))
        .await
        .expect_err("exception");
    assert!(
        matches!(
            e,
            WriteError::Device {
                reason: BadReason::Exception(3),
                ..
            }
        ),
        "{e}"
    );
    let h = &poller.health()[0];
    assert!(h.writes >= 8 && h.failed_writes >= 1, "{h:?}");
    poller.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_devices_are_polled_concurrently() {
    let (fast_sim, fast) = sim().await;
    let (slow_sim, slow) = sim().await;
    fast_sim.set_registers(1, Area::HoldingRegister, 0, &[1]);
    slow_sim.set_registers(1, Area::HoldingRegister, 0, &[2]);
    slow_sim.set_delay(Duration::from_millis(400));
    let text = format!(
        "[[devices]]\nname='fast'\ntransport={{type='tcp', address='{}'}}\npoll_interval_ms=50\n\
         [[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n\
         [[devices]]\nname='slow'\ntransport={{type='tcp', address='{}'}}\npoll_interval_ms=50\ntimeout_ms=2000\n\
         [[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n",
        fast.addr(),
        slow.addr()
    );
    let (tx, mut rx) = mpsc::channel(1024);
    let poller = Poller::spawn(devices(&text), tx);
    wait_for(&mut rx, Duration::from_secs(5), "slow", |r| {
        r.device == "slow"
    })
    .await;
    let before = poller.health();
    // Let the fast device count its polls over a window where the slow one manages few.
    let window = Duration::from_millis(1200);
    let drain = async { while let Some(_r) = rx.recv().await {} };
    let _ = tokio::time::timeout(window, drain).await;
    let after = poller.health();
    let fast_polls = after[0].polls - before[0].polls;
    let slow_polls = after[1].polls - before[1].polls;
    println!("in {window:?}: fast device {fast_polls} polls, slow device {slow_polls} polls");
    assert!(fast_polls >= 10, "fast device starved: {fast_polls}");
    assert!(slow_polls <= 4, "slow device: {slow_polls}");
    assert_eq!(after[1].timeouts, 0);
    poller.shutdown().await;
    fast.shutdown().await;
    slow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_device_delivers_every_tag_and_accepts_writes() {
    let demo = demo::start("demo", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo starts");
    let config = ModbusConfig {
        devices: vec![demo.config.clone()],
    };
    let devs = config.validate().expect("demo config is valid");
    let (tx, mut rx) = mpsc::channel(256);
    let poller = Poller::spawn(devs, tx);
    let got = wait_all_good(
        &mut rx,
        "demo",
        &[
            "temperature",
            "pressure",
            "motor_running",
            "parts_count",
            "speed_setpoint",
            "door_open",
            "serial_number",
        ],
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(got["temperature"], Value::F32(t) if (17.0..25.0).contains(&t)));
    assert!(matches!(got["pressure"], Value::F64(p) if (2.2..2.6).contains(&p)));
    assert_eq!(got["serial_number"], Value::String("IB-DEMO-0001".into()));
    assert_eq!(got["speed_setpoint"], Value::F32(1450.0));
    let out = poller
        .write("demo", "speed_setpoint", Value::F64(1500.0))
        .await
        .expect("write");
    assert!(out.verified);
    wait_for(&mut rx, Duration::from_secs(5), "new setpoint", |r| {
        r.tag == "speed_setpoint" && r.value == Some(Value::F32(1500.0))
    })
    .await;
    poller.shutdown().await;
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_stops_the_poller() {
    let (_sim, server) = sim().await;
    let devs = devices(&device_toml(
        &server.addr().to_string(),
        "",
        "[[devices.tags]]\nname='v'\naddress='40001'\ntype='u16'\n",
    ));
    let (tx, rx) = mpsc::channel(1);
    let poller = Poller::spawn(devs, tx);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), poller.shutdown())
        .await
        .expect("poller stops");
    server.shutdown().await;
}
