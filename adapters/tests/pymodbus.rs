//! Our client against an independent Modbus implementation: pymodbus (Python), over TCP on
//! 127.0.0.1 and over RTU on a socat pty pair. The register images are built by
//! tests/py/pymodbus_server.py with Python's struct module, not by our codec.

mod common;

use std::time::Duration;

use common::{
    PtyPair, PyModbus, devices, free_port, require_pymodbus, require_socat, wait_all_good,
    wait_all_good_seen, wait_for,
};
use ironbridge_adapters::modbus::{BadReason, Poller, Quality, Value};
use tokio::sync::mpsc;

const TAGS: &str = r#"
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
name = "i16"
address = "40011"
type = "i16"
[[devices.tags]]
name = "text"
address = "40012"
type = "string"
length = 12
[[devices.tags]]
name = "bit0"
address = "40018"
type = "bit"
bit = 0
[[devices.tags]]
name = "bit1"
address = "40018"
type = "bit"
bit = 1
[[devices.tags]]
name = "bit15"
address = "40018"
type = "bit"
bit = 15
[[devices.tags]]
name = "i64"
address = "40019"
type = "i64"
[[devices.tags]]
name = "i32_cdab"
address = "40023"
type = "i32"
order = "CDAB"
[[devices.tags]]
name = "u64_dcba"
address = "40025"
type = "u64"
order = "DCBA"
[[devices.tags]]
name = "u32_input"
address = "30001"
type = "u32"
[[devices.tags]]
name = "scaled_input"
address = "30003"
type = "u16"
scale = 0.1
[[devices.tags]]
name = "coil0"
address = "00001"
type = "bool"
[[devices.tags]]
name = "coil2"
address = "00003"
type = "bool"
[[devices.tags]]
name = "coil9"
address = "00010"
type = "bool"
[[devices.tags]]
name = "di1"
address = "10002"
type = "bool"
[[devices.tags]]
name = "setpoint"
address = "40031"
type = "f32"
order = "CDAB"
access = "read_write"
verify_write = true
[[devices.tags]]
name = "count"
address = "40041"
type = "u16"
scale = 0.5
access = "read_write"
verify_write = true
[[devices.tags]]
name = "out20"
address = "00021"
type = "bool"
access = "read_write"
verify_write = true
[[devices.tags]]
name = "flag"
address = "40051"
type = "bit"
bit = 3
access = "read_write"
verify_write = true
[[devices.tags]]
name = "undefined"
address = "40101"
type = "u16"
"#;

const READ_NAMES: [&str; 18] = [
    "f32_abcd",
    "f32_cdab",
    "u32_dcba",
    "f64_badc",
    "i16",
    "text",
    "bit0",
    "bit1",
    "bit15",
    "i64",
    "i32_cdab",
    "u64_dcba",
    "u32_input",
    "scaled_input",
    "coil0",
    "coil2",
    "coil9",
    "di1",
];

fn check_values(got: &std::collections::HashMap<String, Value>) {
    assert_eq!(got["f32_abcd"], Value::F32(123.456));
    assert_eq!(got["f32_cdab"], Value::F32(-1.5));
    assert_eq!(got["u32_dcba"], Value::U32(0x1234_5678));
    assert_eq!(got["f64_badc"], Value::F64(-273.15));
    assert_eq!(got["i16"], Value::I16(-2));
    assert_eq!(got["text"], Value::String("PYMODBUS".into()));
    assert_eq!(got["bit0"], Value::Bool(true));
    assert_eq!(got["bit1"], Value::Bool(false));
    assert_eq!(got["bit15"], Value::Bool(true));
    assert_eq!(got["i64"], Value::I64(-123_456_789_012));
    assert_eq!(got["i32_cdab"], Value::I32(-1000));
    assert_eq!(got["u64_dcba"], Value::U64((1 << 63) + 5));
    assert_eq!(got["u32_input"], Value::U32(4_000_000_000));
    assert_eq!(got["scaled_input"], Value::F64(123.4));
    assert_eq!(got["coil0"], Value::Bool(true));
    assert_eq!(got["coil2"], Value::Bool(true));
    assert_eq!(got["coil9"], Value::Bool(false));
    assert_eq!(got["di1"], Value::Bool(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_against_pymodbus_over_tcp() {
    let Some(python) = require_pymodbus() else {
        return;
    };
    let port = free_port();
    let _server = PyModbus::start(&python, &["tcp", &port.to_string()]).await;
    let text = format!(
        "[[devices]]\nname='py'\ntransport={{type='tcp', address='127.0.0.1:{port}'}}\n\
         poll_interval_ms=100\ntimeout_ms=1000\n{TAGS}"
    );
    let (tx, mut rx) = mpsc::channel(1024);
    let poller = Poller::spawn(devices(&text), tx);
    let (got, seen) = wait_all_good_seen(&mut rx, "py", &READ_NAMES, Duration::from_secs(15)).await;
    check_values(&got);
    // pymodbus answers exception 2 for the undefined address; only that tag is bad.
    let undefined = &seen[&("py".to_string(), "undefined".to_string())];
    assert_eq!(undefined.quality, Quality::Bad(BadReason::Exception(2)));

    // Writes, each verified by reading back from pymodbus.
    for (tag, value) in [
        ("setpoint", Value::F64(42.5)),
        ("count", Value::F64(60.0)),
        ("out20", Value::Bool(true)),
        ("flag", Value::Bool(true)),
    ] {
        let out = poller
            .write("py", tag, value.clone())
            .await
            .unwrap_or_else(|e| panic!("write {tag}={value}: {e}"));
        assert!(out.verified, "{tag}");
    }
    wait_for(&mut rx, Duration::from_secs(5), "setpoint", |r| {
        r.tag == "setpoint" && r.value == Some(Value::F32(42.5))
    })
    .await;
    wait_for(&mut rx, Duration::from_secs(5), "count", |r| {
        r.tag == "count" && r.value == Some(Value::F64(60.0))
    })
    .await;
    let h = &poller.health()[0];
    assert_eq!(
        (h.timeouts, h.malformed, h.crc_errors, h.io_errors),
        (0, 0, 0, 0),
        "{h:?}"
    );
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_against_pymodbus_on_a_pty_with_two_units_and_a_dead_one() {
    if require_socat().is_none() {
        return;
    }
    let Some(python) = require_pymodbus() else {
        return;
    };
    let pty = PtyPair::start().await;
    let _server = PyModbus::start(&python, &["rtu", &pty.a, "19200"]).await;
    let serial = |name: &str, unit: u8, extra: &str| {
        format!(
            "[[devices]]\nname='{name}'\ntransport={{type='rtu', path='{}', baud=19200}}\nunit_id={unit}\n\
             poll_interval_ms=200\ntimeout_ms=500\n{extra}\n",
            pty.b
        )
    };
    let text = format!(
        "{}{TAGS}{}[[devices.tags]]\nname='w'\naddress='40001'\ntype='u16'\n\
         [[devices.tags]]\nname='c'\naddress='00001'\ntype='bool'\n{}[[devices.tags]]\nname='w'\naddress='40001'\ntype='u16'\n",
        serial("py1", 1, ""),
        serial("py2", 2, ""),
        serial("dead", 3, "retries = 0"),
    );
    let (tx, mut rx) = mpsc::channel(1024);
    let poller = Poller::spawn(devices(&text), tx);
    let got = wait_all_good(&mut rx, "py1", &READ_NAMES, Duration::from_secs(20)).await;
    check_values(&got);
    let got2 = wait_all_good(&mut rx, "py2", &["w", "c"], Duration::from_secs(10)).await;
    assert_eq!(got2["w"], Value::U16(0x0202));
    assert_eq!(got2["c"], Value::Bool(true));
    // pymodbus_server.py keeps absent units silent, like a dead device on the line.
    let r = wait_for(&mut rx, Duration::from_secs(10), "dead unit", |r| {
        r.device == "dead"
    })
    .await;
    assert_eq!(r.quality, Quality::Bad(BadReason::Timeout));
    let out = poller
        .write("py1", "setpoint", Value::F64(-7.25))
        .await
        .expect("RTU write to pymodbus");
    assert!(out.verified);
    let h = poller.health();
    println!("{:#?}", h);
    assert_eq!(h[0].crc_errors + h[1].crc_errors, 0);
    assert!(h[0].polls >= 1 && h[1].polls >= 1);
    poller.shutdown().await;
}
