use super::*;
use ironbridge_adapters::modbus::ModbusConfig;

const DEVICES: &str = r#"
[[devices]]
name = "press"
transport = { type = "tcp", address = "127.0.0.1:502" }

[[devices.tags]]
name = "temp"
address = "30001"
type = "f32"
unit = "degC"

[[devices.tags]]
name = "setpoint"
address = "40001"
type = "u16"
access = "read_write"

[[devices.tags]]
name = "scaled"
address = "40002"
type = "i16"
scale = 0.1
access = "read_write"

[[devices]]
name = "pump"
transport = { type = "tcp", address = "127.0.0.1:503" }

[[devices.tags]]
name = "running"
address = "00001"
type = "bool"
access = "read_write"

[[devices]]
name = "off"
enabled = false
transport = { type = "tcp", address = "127.0.0.1:504" }

[[devices.tags]]
name = "x"
address = "40001"
type = "u16"
"#;

fn modbus() -> ModbusConfig {
    toml::from_str(DEVICES).expect("devices parse")
}

fn devices() -> Vec<Arc<Device>> {
    modbus()
        .validate()
        .expect("devices valid")
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn core() -> NodeCore {
    NodeCore::new("plant", "gw1", model(&devices()))
}

fn reading(device: &str, tag: &str, value: Option<Value>, quality: Quality, ts: u64) -> Reading {
    Reading {
        device: device.into(),
        tag: tag.into(),
        value,
        quality,
        timestamp_ms: ts,
    }
}

fn good(device: &str, tag: &str, v: Value, ts: u64) -> Reading {
    reading(device, tag, Some(v), Quality::Good, ts)
}

fn none(_: &str) -> Vec<Reading> {
    Vec::new()
}

fn seqs(out: &[Outgoing]) -> Vec<Option<u64>> {
    out.iter().map(|o| o.payload.seq).collect()
}

fn metric<'a>(p: &'a Payload, name: &str) -> &'a Metric {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no metric {name} in {p:?}"))
}

#[test]
fn model_has_unique_aliases_and_mapped_datatypes() {
    let m = model(&devices());
    assert_eq!(m.len(), 2, "disabled devices are not Sparkplug devices");
    let aliases: Vec<u64> = m
        .iter()
        .flat_map(|d| d.tags.iter().map(|t| t.alias))
        .collect();
    assert_eq!(aliases, [1, 2, 3, 4]);
    let press = &m[0];
    assert_eq!(press.tag("temp").map(|t| t.datatype), Some(DataType::Float));
    assert_eq!(
        press.tag("setpoint").map(|t| t.datatype),
        Some(DataType::UInt16)
    );
    assert_eq!(
        press.tag("scaled").map(|t| t.datatype),
        Some(DataType::Double),
        "scaled tags are Double"
    );
    assert_eq!(
        m[1].tag("running").map(|t| t.datatype),
        Some(DataType::Boolean)
    );
    for (k, d) in [
        (ValueKind::Bool, DataType::Boolean),
        (ValueKind::U16, DataType::UInt16),
        (ValueKind::I16, DataType::Int16),
        (ValueKind::U32, DataType::UInt32),
        (ValueKind::I32, DataType::Int32),
        (ValueKind::U64, DataType::UInt64),
        (ValueKind::I64, DataType::Int64),
        (ValueKind::F32, DataType::Float),
        (ValueKind::F64, DataType::Double),
        (ValueKind::String, DataType::String),
    ] {
        assert_eq!(datatype_of(k), d);
    }
}

#[test]
fn birth_then_data_by_exception_with_aliases() {
    let mut c = core();
    let latest = |d: &str| {
        if d == "press" {
            vec![
                good("press", "temp", Value::F32(21.5), 100),
                good("press", "setpoint", Value::U16(7), 101),
            ]
        } else {
            Vec::new()
        }
    };
    let out = c.birth(5, &latest);
    assert_eq!(
        out.len(),
        3,
        "NBIRTH + a DBIRTH for every device, answered or not: {out:?}"
    );
    assert_eq!(out[0].topic, "spBv1.0/plant/NBIRTH/gw1");
    assert_eq!(out[0].payload.seq, Some(0));
    assert_eq!(
        metric(&out[0].payload, BDSEQ).value,
        Some(MetricValue::Int64(5))
    );
    assert_eq!(
        metric(&out[0].payload, REBIRTH).value,
        Some(MetricValue::Boolean(false))
    );
    let db = &out[1];
    assert_eq!(db.topic, "spBv1.0/plant/DBIRTH/gw1/press");
    assert_eq!(db.payload.seq, Some(1));
    assert_eq!(db.payload.metrics.len(), 3, "every tag, known or not");
    let temp = metric(&db.payload, "temp");
    assert_eq!(temp.alias, Some(1));
    assert_eq!(temp.datatype, Some(DataType::Float));
    assert_eq!(temp.value, Some(MetricValue::Float(21.5)));
    assert_eq!(temp.timestamp, Some(100));
    let props = temp.properties.as_ref().expect("properties");
    assert_eq!(props.get("engUnit"), Some(&PropertyValue::string("degC")));
    assert_eq!(props.get("readOnly"), Some(&PropertyValue::boolean(true)));
    let sp = metric(&db.payload, "setpoint");
    assert_eq!(
        sp.properties.as_ref().and_then(|p| p.get("readOnly")),
        Some(&PropertyValue::boolean(false))
    );
    let scaled = metric(&db.payload, "scaled");
    assert!(scaled.is_null(), "not read yet: null");
    assert_eq!(scaled.datatype, Some(DataType::Double));

    // A change → DDATA by alias with the reading's timestamp; an unchanged value → nothing.
    let out = c.readings(
        &[
            good("press", "temp", Value::F32(21.5), 200),
            good("press", "setpoint", Value::U16(8), 201),
        ],
        &none,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/plant/DDATA/gw1/press");
    assert_eq!(out[0].payload.seq, Some(3));
    let m = &out[0].payload.metrics;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].alias, Some(2));
    assert_eq!(m[0].name, None);
    assert_eq!(m[0].timestamp, Some(201));
    assert_eq!(m[0].value, Some(MetricValue::UInt16(8)));

    // A tag-level error: a null value with a bad Quality property.
    let out = c.readings(
        &[reading(
            "press",
            "temp",
            None,
            Quality::Bad(BadReason::Exception(2)),
            300,
        )],
        &none,
    );
    let m = &out[0].payload.metrics[0];
    assert!(m.is_null());
    assert_eq!(
        m.properties.as_ref().and_then(|p| p.get("Quality")),
        Some(&PropertyValue::new(MetricValue::Int32(QUALITY_BAD)))
    );

    // A rebirth keeps bdSeq and restarts seq at 0.
    let out = c.birth(5, &latest);
    assert_eq!(seqs(&out), [Some(0), Some(1), Some(2)]);
    assert_eq!(c.snapshot().rebirths, 1);
    assert_eq!(c.snapshot().births, 1);
}

#[test]
fn device_death_and_rebirth_on_return() {
    let mut c = core();
    c.birth(0, &none);
    // A device not read at the birth was born with nulls: its first reading is DDATA.
    let out = c.readings(&[good("pump", "running", Value::Bool(true), 10)], &none);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].message_type, MessageType::DData);
    assert_eq!(out[0].payload.metrics[0].alias, Some(4));
    assert_eq!(
        out[0].payload.metrics[0].value,
        Some(MetricValue::Boolean(true))
    );
    // Unreachable → DDEATH once.
    let down = reading(
        "pump",
        "running",
        None,
        Quality::Bad(BadReason::Timeout),
        20,
    );
    let out = c.readings(&[down.clone(), down.clone()], &none);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/plant/DDEATH/gw1/pump");
    assert_eq!(out[0].payload.seq, Some(4));
    assert!(c.readings(&[down], &none).is_empty());
    // Back → DBIRTH.
    let out = c.readings(&[good("pump", "running", Value::Bool(false), 30)], &none);
    assert_eq!(out[0].message_type, MessageType::DBirth);
    assert_eq!(
        metric(&out[0].payload, "running").value,
        Some(MetricValue::Boolean(false))
    );
    assert_eq!(c.snapshot().devices_online, 2);
}

/// A device unreachable at the NBIRTH is declared (DBIRTH, null values of bad quality) and
/// dead (DDEATH) at once, so a host knows it; it is born again when it answers. A device not
/// read yet is born with nulls and its first answer is DDATA, never a DBIRTH after data.
#[test]
fn every_device_is_born_with_the_node() {
    let mut c = core();
    let latest = |d: &str| match d {
        "press" => vec![reading(
            "press",
            "temp",
            None,
            Quality::Bad(BadReason::Timeout),
            5,
        )],
        _ => Vec::new(),
    };
    let out = c.birth(0, &latest);
    let kinds: Vec<(MessageType, &str)> = out
        .iter()
        .map(|o| (o.message_type, o.topic.rsplit('/').next().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            (MessageType::NBirth, "gw1"),
            (MessageType::DBirth, "press"),
            (MessageType::DDeath, "press"),
            (MessageType::DBirth, "pump"),
        ]
    );
    assert_eq!(seqs(&out), [Some(0), Some(1), Some(2), Some(3)]);
    let temp = metric(&out[1].payload, "temp");
    assert!(temp.is_null());
    assert_eq!(
        temp.properties.as_ref().and_then(|p| p.get("Quality")),
        Some(&PropertyValue::new(MetricValue::Int32(QUALITY_BAD)))
    );
    assert_eq!(
        metric(&out[0].payload, DEVICES_ONLINE).value,
        Some(MetricValue::UInt32(1)),
        "the dead device is not online"
    );
    // The dead device answers: DBIRTH; the unread one answers: DDATA.
    let out = c.readings(
        &[
            good("press", "temp", Value::F32(1.0), 10),
            good("pump", "running", Value::Bool(true), 11),
        ],
        &none,
    );
    let kinds: Vec<MessageType> = out.iter().map(|o| o.message_type).collect();
    assert_eq!(kinds, [MessageType::DBirth, MessageType::DData]);
}

/// Stale values carry Quality 500, the only stale code Sparkplug 3.0 allows
/// (`tck-id-payloads-propertyset-quality-value-value`: 0, 192 or 500).
#[test]
fn stale_quality_is_500() {
    let mut c = core();
    c.birth(0, &none);
    c.readings(&[good("pump", "running", Value::Bool(true), 1)], &none);
    let out = c.readings(
        &[reading(
            "pump",
            "running",
            Some(Value::Bool(true)),
            Quality::Stale,
            2,
        )],
        &none,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let q = out[0].payload.metrics[0]
        .properties
        .as_ref()
        .and_then(|p| p.get("Quality"));
    assert_eq!(q, Some(&PropertyValue::new(MetricValue::Int32(500))));
    for code in [QUALITY_GOOD, QUALITY_STALE, QUALITY_BAD] {
        assert!([0, 192, 500].contains(&code));
    }
}

#[test]
fn seq_wraps_after_255() {
    let mut c = core();
    c.birth(0, &none);
    c.readings(&[good("pump", "running", Value::Bool(true), 0)], &none);
    let mut all = Vec::new();
    for i in 0..300u64 {
        let out = c.readings(
            &[good("pump", "running", Value::Bool(i % 2 == 1), i)],
            &none,
        );
        all.extend(seqs(&out));
    }
    // NBIRTH 0, DBIRTH 1 and 2, the first DDATA 3, then DDATA from 4 on.
    let want: Vec<Option<u64>> = (4..304u64).map(|s| Some(s % 256)).collect();
    assert_eq!(all, want);
}

#[test]
fn nothing_before_birth_and_death_ends_session() {
    let mut c = core();
    assert!(
        c.readings(&[good("pump", "running", Value::Bool(true), 0)], &none)
            .is_empty()
    );
    assert!(c.die().is_none());
    c.birth(9, &none);
    let d = c.die().expect("NDEATH");
    assert_eq!(d.topic, "spBv1.0/plant/NDEATH/gw1");
    assert_eq!(d.payload.seq, None, "NDEATH has no seq");
    assert_eq!(metric(&d.payload, BDSEQ).value, Some(MetricValue::Int64(9)));
    assert!(!c.is_born());
}

const MQTT: CommandOrigin<'static> = CommandOrigin {
    from: Requester {
        source: CommandSource::Mqtt,
        actor: None,
        peer: None,
        correlation_id: None,
    },
    allow: &[],
    restricted: false,
};

fn dcmd(metrics: Vec<Metric>) -> Vec<u8> {
    let mut p = Payload::new(1, Some(0));
    p.metrics = metrics;
    p.uuid = Some("corr-1".into());
    p.encode().expect("encode")
}

fn plan(c: &NodeCore, device: &str, metrics: Vec<Metric>, restricted: bool) -> CommandPlan {
    plan_command(
        c,
        MessageType::DCmd,
        Some(device),
        &dcmd(metrics),
        &CommandOrigin {
            from: Requester::new(CommandSource::Mqtt, None, Some("corr-1".into())),
            allow: &["press/setpoint".to_string()],
            restricted,
        },
    )
}

#[test]
fn dcmd_checks_metric_access_type_and_range() {
    let c = core();
    // By name.
    let p = plan(
        &c,
        "press",
        vec![Metric::new("setpoint", MetricValue::UInt16(42))],
        false,
    );
    assert!(p.rejected.is_empty(), "{p:?}");
    assert_eq!(p.writes.len(), 1);
    assert_eq!(p.writes[0].value, Value::U16(42));
    assert_eq!(p.writes[0].from.correlation_id.as_deref(), Some("corr-1"));
    // By alias, without a datatype (resolved from the birth), and a scaled tag as Double.
    let p = plan(
        &c,
        "press",
        vec![
            Metric::aliased(2, MetricValue::UInt32(43)),
            Metric::new("scaled", MetricValue::Double(12.5)),
        ],
        false,
    );
    assert!(p.rejected.is_empty(), "{p:?}");
    assert_eq!(p.writes[0].value, Value::U16(43));
    assert_eq!(p.writes[1].value, Value::F64(12.5));
    let reason = |p: &CommandPlan| p.rejected[0].reason.clone().unwrap_or_default();
    // Unknown metric, unknown device, read-only, wrong type, out of range, null.
    let p = plan(
        &c,
        "press",
        vec![Metric::new("nope", MetricValue::UInt16(1))],
        false,
    );
    assert!(reason(&p).contains("no metric"), "{p:?}");
    let p = plan(
        &c,
        "ghost",
        vec![Metric::new("setpoint", MetricValue::UInt16(1))],
        false,
    );
    assert!(reason(&p).contains("unknown device"), "{p:?}");
    let p = plan(
        &c,
        "press",
        vec![Metric::new("temp", MetricValue::Float(1.0))],
        false,
    );
    assert!(reason(&p).contains("read-only"), "{p:?}");
    assert_eq!(p.rejected[0].outcome, Outcome::Rejected);
    let p = plan(
        &c,
        "press",
        vec![Metric::new("setpoint", MetricValue::Boolean(true))],
        false,
    );
    assert!(reason(&p).contains("cannot be written"), "{p:?}");
    let p = plan(
        &c,
        "press",
        vec![Metric::new("setpoint", MetricValue::Int32(70000))],
        false,
    );
    assert!(reason(&p).contains("out of range"), "{p:?}");
    let p = plan(
        &c,
        "press",
        vec![Metric::new("setpoint", MetricValue::Int32(-1))],
        false,
    );
    assert!(reason(&p).contains("out of range"), "{p:?}");
    let p = plan(
        &c,
        "press",
        vec![Metric::null("setpoint", DataType::UInt16)],
        false,
    );
    assert!(reason(&p).contains("null"), "{p:?}");
    // Malformed payload.
    let p = plan_command(&c, MessageType::DCmd, Some("press"), b"\xff\xff\xff", &MQTT);
    assert!(reason(&p).contains("malformed"), "{p:?}");
    // The allow-list, when restricted.
    let p = plan(
        &c,
        "press",
        vec![Metric::new("scaled", MetricValue::Double(1.0))],
        true,
    );
    assert!(
        reason(&p).contains("not in sparkplug.commands.allow"),
        "{p:?}"
    );
    let p = plan(
        &c,
        "press",
        vec![Metric::new("setpoint", MetricValue::UInt16(1))],
        true,
    );
    assert!(p.rejected.is_empty());
    assert!(allowed(&["pump/*".into()], "pump", "running"));
    assert!(!allowed(&["pump/*".into()], "press", "running"));
}

#[test]
fn ncmd_rebirth() {
    let c = core();
    let payload = dcmd(vec![Metric::new(REBIRTH, MetricValue::Boolean(true))]);
    let p = plan_command(&c, MessageType::NCmd, None, &payload, &MQTT);
    assert!(p.rebirth && p.rejected.is_empty());
    let payload = dcmd(vec![Metric::new(REBIRTH, MetricValue::Boolean(false))]);
    let p = plan_command(&c, MessageType::NCmd, None, &payload, &MQTT);
    assert!(!p.rebirth && p.rejected.len() == 1);
}

fn ncmd(c: &NodeCore, name: &str, v: MetricValue) -> CommandPlan {
    plan_command(
        c,
        MessageType::NCmd,
        None,
        &dcmd(vec![Metric::new(name, v)]),
        &MQTT,
    )
}

const ALL_CONTROLS: NodeControls = NodeControls {
    reboot: true,
    next_server: true,
};

#[test]
fn node_controls_reboot_next_server_scan_rate() {
    // Reboot and Next Server are off unless configured: refused with the key that enables them.
    let default = core();
    for name in [REBOOT, NEXT_SERVER] {
        let p = ncmd(&default, name, MetricValue::Boolean(true));
        assert!(
            !p.reboot && !p.next_server && p.rejected.len() == 1,
            "{p:?}"
        );
        let reason = p.rejected[0].reason.clone().unwrap_or_default();
        assert!(
            reason.contains("is off on this gateway")
                && reason.contains("sparkplug.commands.allow_"),
            "{reason}"
        );
    }
    let enabled = core().with_controls(ALL_CONTROLS);
    let p = ncmd(&enabled, REBOOT, MetricValue::Boolean(true));
    assert!(p.reboot && !p.rebirth && p.rejected.is_empty());
    let p = ncmd(&enabled, REBOOT, MetricValue::Boolean(false));
    assert!(!p.reboot && p.rejected.len() == 1);
    let p = ncmd(&enabled, NEXT_SERVER, MetricValue::Boolean(true));
    assert!(p.next_server && p.rejected.is_empty());
    // Rebirth needs no switch.
    let p = ncmd(&default, REBIRTH, MetricValue::Boolean(true));
    assert!(p.rebirth && p.rejected.is_empty());
    // Scan Rate is read-only: a write is rejected with the reason.
    let p = ncmd(&enabled, SCAN_RATE, MetricValue::Int64(500));
    assert_eq!(p.rejected.len(), 1);
    let reason = p.rejected[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("read-only"), "{reason}");
    let p = ncmd(
        &enabled,
        "Node Control/Self Destruct",
        MetricValue::Boolean(true),
    );
    assert_eq!(p.rejected.len(), 1);
}

#[test]
fn nbirth_declares_node_metrics_and_controls() {
    let mut c = core();
    c.set_gateway(GatewayMetrics {
        uplink_online: true,
        backlog_records: 12,
    });
    let out = c.birth(0, &none);
    let nb = &out[0].payload;
    for (name, dt) in [
        (REBIRTH, DataType::Boolean),
        (SCAN_RATE, DataType::Int64),
        (UPLINK_ONLINE, DataType::Boolean),
        (BACKLOG_RECORDS, DataType::UInt64),
        (DEVICES_ONLINE, DataType::UInt32),
    ] {
        assert_eq!(metric(nb, name).datatype, Some(dt), "{name}");
    }
    assert_eq!(
        metric(nb, UPLINK_ONLINE).value,
        Some(MetricValue::Boolean(true))
    );
    assert_eq!(
        metric(nb, BACKLOG_RECORDS).value,
        Some(MetricValue::UInt64(12))
    );
    // The devices' default poll interval (1 s) as the scan rate.
    assert!(matches!(metric(nb, SCAN_RATE).value, Some(MetricValue::Int64(x)) if x > 0));
    // Controls that are off are not offered.
    assert!(
        nb.metrics
            .iter()
            .all(|m| m.name.as_deref() != Some(NEXT_SERVER) && m.name.as_deref() != Some(REBOOT))
    );
    let mut u = core().with_controls(ALL_CONTROLS);
    let out = u.birth(0, &none);
    for name in [REBOOT, NEXT_SERVER] {
        assert_eq!(
            metric(&out[0].payload, name).value,
            Some(MetricValue::Boolean(false)),
            "{name}"
        );
    }
}

#[test]
fn ndata_by_exception_with_backlog_rate_limit() {
    let mut c = core();
    let g0 = GatewayMetrics {
        uplink_online: false,
        backlog_records: 0,
    };
    assert!(c.node_data(g0, 1).is_none(), "nothing before the birth");
    c.birth(0, &none);
    let t = now_ms();
    assert!(c.node_data(g0, t).is_none(), "unchanged: no NDATA");
    // Uplink online: at once.
    let g1 = GatewayMetrics {
        uplink_online: true,
        ..g0
    };
    let nd = c.node_data(g1, t + 10).expect("NDATA");
    assert_eq!(nd.topic, "spBv1.0/plant/NDATA/gw1");
    assert_eq!(
        nd.payload.seq,
        Some(3),
        "NDATA counts in the node's seq (after NBIRTH and two DBIRTHs)"
    );
    assert_eq!(nd.payload.metrics.len(), 1);
    assert_eq!(
        metric(&nd.payload, UPLINK_ONLINE).value,
        Some(MetricValue::Boolean(true))
    );
    // Backlog: at most one NDATA per BACKLOG_INTERVAL_MS.
    let g2 = GatewayMetrics {
        backlog_records: 100,
        ..g1
    };
    assert!(
        c.node_data(g2, t + 20).is_none(),
        "too soon after the birth"
    );
    let nd = c
        .node_data(g2, t + BACKLOG_INTERVAL_MS + 1)
        .expect("backlog NDATA");
    assert_eq!(
        metric(&nd.payload, BACKLOG_RECORDS).value,
        Some(MetricValue::UInt64(100))
    );
    let g3 = GatewayMetrics {
        backlog_records: 200,
        ..g2
    };
    assert!(c.node_data(g3, t + BACKLOG_INTERVAL_MS + 100).is_none());
    assert!(c.node_data(g3, t + 2 * BACKLOG_INTERVAL_MS + 2).is_some());
    // Devices online follows the device births and deaths.
    let down = reading("pump", "running", None, Quality::Bad(BadReason::Timeout), 1);
    let out = c.readings(&[down], &none);
    assert_eq!(out.len(), 1, "DDEATH");
    let nd = c
        .node_data(g3, t + 2 * BACKLOG_INTERVAL_MS + 3)
        .expect("devices online NDATA");
    assert_eq!(
        metric(&nd.payload, DEVICES_ONLINE).value,
        Some(MetricValue::UInt32(1))
    );
    assert_eq!(c.snapshot().node_data_messages, 4);
}

#[test]
fn command_values_convert_with_checks() {
    assert_eq!(
        command_value(ValueKind::I16, &MetricValue::Int64(-5)),
        Ok(Value::I16(-5))
    );
    assert_eq!(
        command_value(ValueKind::U64, &MetricValue::Double(3.0)),
        Ok(Value::U64(3))
    );
    assert!(command_value(ValueKind::U64, &MetricValue::Double(3.5)).is_err());
    assert_eq!(
        command_value(ValueKind::F32, &MetricValue::Int32(2)),
        Ok(Value::F32(2.0))
    );
    assert!(command_value(ValueKind::F32, &MetricValue::Double(1e300)).is_err());
    assert_eq!(
        command_value(ValueKind::String, &MetricValue::Text("a".into())),
        Ok(Value::String("a".into()))
    );
    assert!(command_value(ValueKind::String, &MetricValue::Int32(1)).is_err());
    assert!(command_value(ValueKind::Bool, &MetricValue::Int32(1)).is_err());
}

#[test]
fn host_state_is_parsed_and_ordered() {
    let s = parse_state(br#"{"online":true,"timestamp":10}"#).expect("3.0");
    assert_eq!(
        s,
        HostState {
            online: true,
            timestamp: Some(10)
        }
    );
    assert_eq!(parse_state(b"OFFLINE").map(|s| s.online), Some(false));
    assert!(parse_state(b"{}").is_none());
    let mut h = HostTracker::default();
    assert!(h.apply(s) && h.online);
    assert!(
        h.apply(s) && h.online,
        "the same STATE again (retained, reconnect)"
    );
    // An older OFFLINE (e.g. a late will) is ignored.
    assert!(!h.apply(HostState {
        online: false,
        timestamp: Some(5)
    }));
    assert!(h.online);
    assert!(h.apply(HostState {
        online: false,
        timestamp: Some(11)
    }));
    assert!(!h.online);
    // An old retained "online" after a newer "offline" (a reconnect) brings nothing back.
    assert!(!h.apply(s));
    assert!(!h.online);
    // Pre-3.0 hosts: text without timestamps, on STATE/<id>.
    let mut legacy = HostTracker::default();
    assert!(legacy.apply(parse_state(b"ONLINE").expect("2.2")) && legacy.online);
    assert_eq!(
        state_topics(Some("scada")),
        ["spBv1.0/STATE/scada", "STATE/scada"]
    );
    assert!(state_topics(None).is_empty());
}

#[test]
fn bdseq_continues_and_wraps() {
    assert_eq!(next_bdseq(None), 0);
    assert_eq!(
        next_bdseq(Some(SessionRecord {
            bdseq: 4,
            online: false
        })),
        5
    );
    assert_eq!(
        next_bdseq(Some(SessionRecord {
            bdseq: 255,
            online: true
        })),
        0
    );
}

#[tokio::test]
async fn sessions_persist() {
    let s = StateStore::temporary().expect("store");
    assert_eq!(load_session(&s, "embedded").await.expect("load"), None);
    let rec = SessionRecord {
        bdseq: 3,
        online: true,
    };
    save_session(&s, "embedded", rec).await.expect("save");
    assert_eq!(load_session(&s, "embedded").await.expect("load"), Some(rec));
}

#[test]
fn validation_names_fields() {
    let mut sp = SparkplugConfig {
        enabled: true,
        group_id: "a/b".into(),
        ..SparkplugConfig::default()
    };
    sp.primary_host_id = Some("h#".into());
    sp.commands.allow = vec![
        "press/setpoint".into(),
        "press/temp".into(),
        "ghost/x".into(),
        "nodevice".into(),
        "pump/*".into(),
        "press/missing".into(),
    ];
    sp.upstream = Some(super::super::config::UpstreamConfig {
        server: "nohost".into(),
        client_id: String::new(),
        username: None,
        password: Some("p".into()),
        tls: false,
        ca_file: None,
        keep_alive_s: 1,
        history_rate: 0,
        history_max_age_s: 60,
        history_max_records: 10,
    });
    sp.embedded_edge_node_id = "gw".into();
    let issues = validate(&sp, "gw", &modbus());
    let fields: Vec<&str> = issues.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "sparkplug.group_id",
            "sparkplug.primary_host_id",
            "sparkplug.embedded_edge_node_id",
            "sparkplug.upstream.history_rate",
            "sparkplug.upstream.server",
            "sparkplug.upstream.keep_alive_s",
            "sparkplug.upstream.password",
            "sparkplug.commands.allow[1]",
            "sparkplug.commands.allow[2]",
            "sparkplug.commands.allow[3]",
            "sparkplug.commands.allow[5]",
        ],
        "{issues:?}"
    );
    let ok = SparkplugConfig {
        enabled: true,
        ..SparkplugConfig::default()
    };
    assert!(validate(&ok, "gw-1", &modbus()).is_empty());
    assert_eq!(
        validate(&ok, "bad/id", &modbus())[0].0,
        "sparkplug.edge_node_id"
    );
    // One identity per live session: the embedded one is distinct only with upstream.
    assert_eq!(ok.embedded_node_id("gw-1"), "gw-1");
    let mut up: SparkplugConfig = toml::from_str(
        "enabled = true\nedge_node_id = \"press\"\n[upstream]\nserver = \"127.0.0.1:1883\"\n",
    )
    .expect("parse");
    assert_eq!(up.embedded_node_id("press"), "press-local");
    let up_cfg = up.upstream.clone().expect("upstream");
    assert_eq!(
        (
            up_cfg.history_rate,
            up_cfg.history_max_age_s,
            up_cfg.history_max_records
        ),
        (50, 7 * 24 * 3600, 1_000_000)
    );
    up.embedded_edge_node_id = "press-edge".into();
    assert_eq!(up.embedded_node_id("press"), "press-edge");
    assert!(validate(&up, "gw-1", &modbus()).is_empty());
    let mut alone = ok.clone();
    alone.embedded_edge_node_id = "other".into();
    assert_eq!(
        validate(&alone, "gw-1", &modbus())[0].0,
        "sparkplug.embedded_edge_node_id",
        "needs upstream"
    );
}

/// The embedded session's messages as the upstream session reads them back from the buffer:
/// each DDATA/DBIRTH/DDEATH becomes the readings it was made from (so the upstream session's
/// own core reports the same changes, in its own seq), and the history to replay keeps values,
/// timestamps and quality, marked `is_historical`, by alias only.
#[test]
fn embedded_records_become_readings_and_history() {
    use super::records::{history, readings, session_message};
    let encode = |o: &Outgoing| {
        let ev = Event {
            topic: o.topic.clone(),
            payload: Bytes::from(o.encode().expect("encode")),
            ..Event::default()
        };
        let mut buf = Vec::new();
        ev.encode(&mut buf).expect("event");
        Bytes::from(buf)
    };
    let mut embedded = NodeCore::new("plant", "gw1-local", model(&devices()));
    let mut upstream = NodeCore::new("plant", "gw1", model(&devices()));
    let out = embedded.birth(0, &none);
    upstream.birth(0, &none);
    // Not this node's records: ignored.
    assert!(session_message(&encode(&out[1]), "plant", "gw1").is_none());
    let db = session_message(&encode(&out[1]), "plant", "gw1-local").expect("DBIRTH");
    assert_eq!(db.message_type, MessageType::DBirth);
    assert!(
        history(&db).is_none(),
        "nothing read yet: no values to replay"
    );

    let out = embedded.readings(
        &[
            good("press", "temp", Value::F32(21.5), 100),
            good("press", "setpoint", Value::U16(9), 101),
            reading(
                "press",
                "scaled",
                Some(Value::F64(1.5)),
                Quality::Stale,
                102,
            ),
        ],
        &none,
    );
    assert_eq!(out.len(), 1);
    let msg = session_message(&encode(&out[0]), "plant", "gw1-local").expect("DDATA");
    let rs = readings(&upstream, &msg);
    assert_eq!(
        rs,
        [
            good("press", "temp", Value::F32(21.5), 100),
            good("press", "setpoint", Value::U16(9), 101),
            reading(
                "press",
                "scaled",
                Some(Value::F64(1.5)),
                Quality::Stale,
                102
            ),
        ]
    );
    // The upstream core reports the same changes by alias, in its own seq.
    let up = upstream.readings(&rs, &none);
    assert_eq!(up[0].topic, "spBv1.0/plant/DDATA/gw1/press");
    assert_eq!(up[0].payload.metrics.len(), 3);
    assert_eq!(up[0].payload.seq, Some(3));

    let (kind, device, metrics) = history(&msg).expect("history");
    assert_eq!(
        (kind, device.as_deref()),
        (MessageType::DData, Some("press"))
    );
    assert!(metrics.iter().all(|m| m.is_historical && m.name.is_none()));
    assert_eq!(metrics[0].timestamp, Some(100));
    let h = upstream
        .historical(kind, device.as_deref(), metrics)
        .expect("historical DDATA");
    assert_eq!(
        h.payload.seq,
        Some(4),
        "history counts in the session's seq"
    );
    assert_eq!(
        h.payload.metrics[2]
            .properties
            .as_ref()
            .and_then(|p| p.get("Quality")),
        Some(&PropertyValue::new(MetricValue::Int32(QUALITY_STALE)))
    );

    // A DDEATH becomes an unreachable reading: the upstream core sends its DDEATH; history of
    // a device that is not born is refused.
    let down = reading("press", "temp", None, Quality::Bad(BadReason::Timeout), 200);
    let out = embedded.readings(&[down], &none);
    let msg = session_message(&encode(&out[0]), "plant", "gw1-local").expect("DDEATH");
    let rs = readings(&upstream, &msg);
    assert!(rs.iter().all(|r| device_unreachable(&r.quality)));
    let up = upstream.readings(&rs, &none);
    assert_eq!(up[0].message_type, MessageType::DDeath);
    assert!(
        upstream
            .historical(
                MessageType::DData,
                Some("press"),
                vec![Metric::aliased(1, MetricValue::Float(1.0))]
            )
            .is_none()
    );
}
