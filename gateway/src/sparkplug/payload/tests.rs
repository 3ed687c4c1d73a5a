use proptest::prelude::*;

use super::*;
use crate::sparkplug::proto;

fn round_trip(p: &Payload) -> Payload {
    let bytes = p.encode().expect("encodes");
    decode_payload(&bytes, &Limits::default()).expect("decodes")
}

fn single(m: Metric) -> Payload {
    Payload::new(1_700_000_000_000, Some(7)).with_metric(m)
}

fn raw_metric_payload(datatype: Option<u32>, value: pb::metric::Value) -> Vec<u8> {
    proto::Payload {
        timestamp: Some(1),
        seq: Some(0),
        metrics: vec![pb::Metric {
            name: Some("m".into()),
            datatype,
            value: Some(value),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

fn decode_one(bytes: &[u8]) -> Result<Option<MetricValue>, PayloadError> {
    let mut p = decode_payload(bytes, &Limits::default())?;
    Ok(p.metrics.pop().and_then(|m| m.value))
}

#[test]
fn datatype_codes_and_names() {
    for (i, d) in DataType::ALL.iter().enumerate() {
        assert_eq!(d.code() as usize, i + 1);
        assert_eq!(DataType::from_code(d.code()), Some(*d));
        assert_eq!(DataType::from_name(d.name()), Some(*d));
    }
    assert_eq!(DataType::from_code(0), None);
    assert_eq!(DataType::from_code(35), None);
    assert_eq!(DataType::from_name("uuid"), Some(DataType::Uuid));
}

#[test]
fn signed_integers_sign_extend_on_encode_and_truncate_on_decode() {
    // Encoded sign-extended to 32 bits (Tahu Java's convention for Int8/Int16/Int32).
    let p = single(Metric::new("i8", MetricValue::Int8(-1)));
    let pb = p.to_proto().expect("proto");
    assert_eq!(
        pb.metrics[0].value,
        Some(pb::metric::Value::IntValue(u32::MAX))
    );
    let p = single(Metric::new("i64", MetricValue::Int64(-2)));
    let pb = p.to_proto().expect("proto");
    assert_eq!(
        pb.metrics[0].value,
        Some(pb::metric::Value::LongValue(u64::MAX - 1))
    );
    // Both conventions decode: width-only and sign-extended.
    for raw in [0xFFu32, 0xFFFF_FFFF] {
        let b = raw_metric_payload(Some(1), pb::metric::Value::IntValue(raw));
        assert_eq!(decode_one(&b), Ok(Some(MetricValue::Int8(-1))));
    }
    for raw in [0x8000u32, 0xFFFF_8000] {
        let b = raw_metric_payload(Some(2), pb::metric::Value::IntValue(raw));
        assert_eq!(decode_one(&b), Ok(Some(MetricValue::Int16(i16::MIN))));
    }
    // Int64 in a 32-bit field: sign-extended from 32 bits.
    let b = raw_metric_payload(Some(4), pb::metric::Value::IntValue(0xFFFF_FFFE));
    assert_eq!(decode_one(&b), Ok(Some(MetricValue::Int64(-2))));
    // UInt32 in long_value (Tahu Java) and UInt64 in int_value.
    let b = raw_metric_payload(Some(7), pb::metric::Value::LongValue(4_000_000_000));
    assert_eq!(decode_one(&b), Ok(Some(MetricValue::UInt32(4_000_000_000))));
    let b = raw_metric_payload(Some(8), pb::metric::Value::IntValue(5));
    assert_eq!(decode_one(&b), Ok(Some(MetricValue::UInt64(5))));
    // Double sent as float_value.
    let b = raw_metric_payload(Some(10), pb::metric::Value::FloatValue(1.5));
    assert_eq!(decode_one(&b), Ok(Some(MetricValue::Double(1.5))));
}

#[test]
fn arrays_match_the_specification_examples() {
    let bytes_of = |v: MetricValue| match to_raw(&v, Ctx::Metric).expect("raw") {
        Raw::Bytes(b) => b,
        other => panic!("not bytes: {other:?}"),
    };
    assert_eq!(
        bytes_of(MetricValue::Int32Array(vec![123456789, 987654321])),
        [0x15, 0xCD, 0x5B, 0x07, 0xB1, 0x68, 0xDE, 0x3A]
    );
    assert_eq!(
        bytes_of(MetricValue::BooleanArray(vec![
            false, false, true, true, false, true, false, false, true, true, false, true
        ])),
        [0x0C, 0x00, 0x00, 0x00, 0x34, 0xD0]
    );
    assert_eq!(
        bytes_of(MetricValue::StringArray(vec!["ABC".into(), "hello".into()])),
        [0x41, 0x42, 0x43, 0x00, 0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x00]
    );
    assert_eq!(
        bytes_of(MetricValue::Int16Array(vec![-30000, 30000])),
        [0xD0, 0x8A, 0x30, 0x75]
    );
    assert_eq!(
        bytes_of(MetricValue::DateTimeArray(vec![1256102875335])),
        1256102875335u64.to_le_bytes()
    );
    assert_eq!(
        bytes_of(MetricValue::FloatArray(vec![1.23])),
        1.23f32.to_le_bytes()
    );
    // Malformed arrays are errors, not panics.
    for (dt, b) in [
        (25u32, vec![1, 2, 3]),
        (32, vec![9, 0, 0, 0, 0xff]),
        (32, vec![1, 0]),
        (33, b"no-nul".to_vec()),
        (33, vec![0xff, 0]),
    ] {
        let p = raw_metric_payload(Some(dt), pb::metric::Value::BytesValue(b));
        assert!(
            matches!(decode_one(&p), Err(PayloadError::Invalid(_))),
            "datatype {dt}"
        );
    }
    // An empty StringArray is empty.
    let p = raw_metric_payload(Some(33), pb::metric::Value::BytesValue(vec![]));
    assert_eq!(decode_one(&p), Ok(Some(MetricValue::StringArray(vec![]))));
    // A StringArray with an empty string.
    let p = raw_metric_payload(Some(33), pb::metric::Value::BytesValue(vec![0, b'a', 0]));
    assert_eq!(
        decode_one(&p),
        Ok(Some(MetricValue::StringArray(vec!["".into(), "a".into()])))
    );
}

#[test]
fn wrong_fields_and_unknown_datatypes_are_invalid() {
    for (dt, v) in [
        (3u32, pb::metric::Value::StringValue("x".into())),
        (9, pb::metric::Value::DoubleValue(1.0)),
        (11, pb::metric::Value::IntValue(1)),
        (12, pb::metric::Value::BytesValue(vec![])),
        (16, pb::metric::Value::IntValue(1)),
        (20, pb::metric::Value::IntValue(1)),
        (0, pb::metric::Value::IntValue(1)),
        (99, pb::metric::Value::IntValue(1)),
    ] {
        let p = raw_metric_payload(Some(dt), v);
        let e = decode_one(&p).expect_err("invalid");
        assert!(matches!(e, PayloadError::Invalid(_)), "{dt}: {e}");
        assert!(e.to_string().contains("metric \"m\""), "{e}");
    }
}

#[test]
fn untyped_values_resolve_with_the_birth_datatype() {
    let b = proto::Payload {
        metrics: vec![
            pb::Metric {
                alias: Some(3),
                value: Some(pb::metric::Value::IntValue(0xFFFF_FFFB)),
                ..Default::default()
            },
            pb::Metric {
                alias: Some(4),
                value: Some(pb::metric::Value::BytesValue(vec![1, 0, 0, 0, 0x80])),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec();
    let mut p = decode_payload(&b, &Limits::default()).expect("decodes");
    assert_eq!(p.metrics[0].value, Some(MetricValue::UInt32(0xFFFF_FFFB)));
    assert_eq!(p.metrics[0].datatype, None);
    p.metrics[0].resolve(DataType::Int16).expect("resolves");
    assert_eq!(p.metrics[0].value, Some(MetricValue::Int16(-5)));
    assert_eq!(p.metrics[0].datatype, Some(DataType::Int16));
    p.metrics[1]
        .resolve(DataType::BooleanArray)
        .expect("resolves");
    assert_eq!(
        p.metrics[1].value,
        Some(MetricValue::BooleanArray(vec![true]))
    );
    let mut m = p.metrics[1].clone();
    assert!(m.resolve(DataType::Float).is_err());
}

#[test]
fn nulls_properties_and_metadata_round_trip() {
    let m = Metric::null("n", DataType::Double)
        .with_alias(9)
        .with_timestamp(5)
        .with_property("engUnit", PropertyValue::string("degC"))
        .with_property("readOnly", PropertyValue::boolean(true))
        .with_property("Quality", PropertyValue::new(MetricValue::Int32(192)))
        .with_property("missing", PropertyValue::null(DataType::String))
        .with_property(
            "nested",
            PropertyValue::new(MetricValue::PropertySet(PropertySet(vec![(
                "k".into(),
                PropertyValue::new(MetricValue::UInt64(u64::MAX)),
            )]))),
        )
        .with_property(
            "list",
            PropertyValue::new(MetricValue::PropertySetList(vec![
                PropertySet::default(),
                PropertySet(vec![(
                    "a".into(),
                    PropertyValue::new(MetricValue::Float(0.5)),
                )]),
            ])),
        );
    let mut m = m;
    m.is_historical = true;
    m.is_transient = true;
    m.metadata = Some(MetaData {
        content_type: Some("text/plain".into()),
        size: Some(3),
        ..Default::default()
    });
    let mut p = single(m);
    p.uuid = Some("cmd-1".into());
    p.body = Some(b"x".to_vec());
    let back = round_trip(&p);
    assert_eq!(back, p);
    assert!(back.metrics[0].is_null());
    assert_eq!(
        back.metrics[0]
            .properties
            .as_ref()
            .and_then(|s| s.get("engUnit"))
            .and_then(|v| v.value.clone()),
        Some(MetricValue::String("degC".into()))
    );
}

#[test]
fn encode_refuses_values_where_the_protobuf_cannot_carry_them() {
    let ds = DataSet {
        columns: vec!["a".into()],
        types: vec![DataType::Int8Array],
        rows: vec![vec![Some(MetricValue::Int8Array(vec![1]))]],
    };
    let e = single(Metric::new("d", MetricValue::DataSet(ds)))
        .encode()
        .expect_err("arrays are not DataSet cells");
    assert_eq!(e.datatype, DataType::Int8Array);
    assert!(
        single(Metric::new(
            "p",
            MetricValue::PropertySet(PropertySet::default())
        ))
        .encode()
        .is_err()
    );
    assert!(
        single(Metric::new(
            "s",
            MetricValue::StringArray(vec!["a\0b".into()])
        ))
        .encode()
        .is_err()
    );
}

#[test]
fn limits_are_enforced_before_and_while_decoding() {
    let mut p = Payload::new(1, Some(0));
    for i in 0..20 {
        p.metrics
            .push(Metric::new(format!("m{i}"), MetricValue::Int32(i)));
    }
    let b = p.encode().expect("encodes");
    let lim = |max_bytes, max_metrics, max_depth| Limits {
        max_bytes,
        max_metrics,
        max_depth,
    };
    assert!(decode_payload(&b, &lim(1 << 20, 20, 4)).is_ok());
    let e = decode_payload(&b, &lim(1 << 20, 19, 4)).expect_err("too many");
    assert_eq!(e, PayloadError::TooManyMetrics { limit: 19 });
    assert!(e.is_oversize());
    let e = decode_payload(&b, &lim(10, 100, 4)).expect_err("too large");
    assert!(matches!(e, PayloadError::TooLarge { limit: 10, .. }));
    assert!(e.is_oversize());

    // Template members count too; nesting is bounded.
    let mut inner = Template {
        template_ref: Some("T".into()),
        metrics: (0..10)
            .map(|i| Metric::new(format!("x{i}"), MetricValue::Boolean(true)))
            .collect(),
        ..Template::default()
    };
    for _ in 0..3 {
        inner = Template {
            template_ref: Some("T".into()),
            metrics: vec![Metric::new("t", MetricValue::Template(inner))],
            ..Template::default()
        };
    }
    let b = single(Metric::new("root", MetricValue::Template(inner)))
        .encode()
        .expect("encodes");
    assert!(decode_payload(&b, &lim(1 << 20, 100, 4)).is_ok());
    assert_eq!(
        decode_payload(&b, &lim(1 << 20, 10, 4)),
        Err(PayloadError::TooManyMetrics { limit: 10 })
    );
    assert_eq!(
        decode_payload(&b, &lim(1 << 20, 100, 3)),
        Err(PayloadError::TooDeep { limit: 3 })
    );

    // DataSet cells count.
    let ds = DataSet {
        columns: vec!["a".into(), "b".into()],
        types: vec![DataType::Int32, DataType::String],
        rows: (0..10)
            .map(|i| vec![Some(MetricValue::Int32(i)), None])
            .collect(),
    };
    let b = single(Metric::new("ds", MetricValue::DataSet(ds)))
        .encode()
        .expect("encodes");
    assert!(decode_payload(&b, &lim(1 << 20, 21, 4)).is_ok());
    assert!(decode_payload(&b, &lim(1 << 20, 20, 4)).is_err());
}

#[test]
fn garbage_and_truncations_are_errors_not_panics() {
    let p = single(
        Metric::new("s", MetricValue::String("hello".into()))
            .with_property("engUnit", PropertyValue::string("m")),
    );
    let b = p.encode().expect("encodes");
    for cut in 0..b.len() {
        let _ = decode_payload(&b[..cut], &Limits::default());
    }
    assert!(matches!(
        decode_payload(&[0xff, 0xff, 0xff], &Limits::default()),
        Err(PayloadError::Protobuf(_))
    ));
    assert!(matches!(
        decode_payload(b"{\"json\": true}", &Limits::default()),
        Err(PayloadError::Protobuf(_))
    ));
    // An empty payload is a valid (empty) Sparkplug payload.
    assert_eq!(
        decode_payload(&[], &Limits::default()),
        Ok(Payload::default())
    );
}

#[test]
fn json_forms() {
    use serde_json::json;
    let j = |v: MetricValue| v.to_json();
    assert_eq!(j(MetricValue::Float(0.1)), json!(0.1));
    assert_eq!(j(MetricValue::Double(f64::NAN)), json!("NaN"));
    assert_eq!(j(MetricValue::Float(f32::NEG_INFINITY)), json!("-Infinity"));
    assert_eq!(j(MetricValue::UInt64(u64::MAX)), json!(u64::MAX));
    assert_eq!(j(MetricValue::Bytes(vec![0xff, 0, 0x10])), json!("/wAQ"));
    assert_eq!(
        j(MetricValue::BooleanArray(vec![true, false])),
        json!([true, false])
    );
    let ds = DataSet {
        columns: vec!["a".into(), "b".into()],
        types: vec![DataType::Int32, DataType::String],
        rows: vec![vec![Some(MetricValue::Int32(1)), None]],
    };
    assert_eq!(
        j(MetricValue::DataSet(ds)),
        json!({"columns":["a","b"],"types":["Int32","String"],"rows":[[1,null]]})
    );
    let m = Metric::new("t", MetricValue::Int16(-3))
        .with_alias(2)
        .with_property("engUnit", PropertyValue::string("bar"));
    assert_eq!(
        m.to_json(),
        json!({"name":"t","alias":2,"datatype":"Int16","value":-3,"is_null":false,
               "properties":{"engUnit":{"type":"String","value":"bar"}}})
    );

    // From JSON (commands): exact fits only.
    let f = MetricValue::from_json;
    assert_eq!(f(DataType::Int16, &json!(-3)), Ok(MetricValue::Int16(-3)));
    assert_eq!(
        f(DataType::UInt16, &json!(65535.0)),
        Ok(MetricValue::UInt16(65535))
    );
    assert!(f(DataType::UInt16, &json!(65536)).is_err());
    assert!(f(DataType::UInt16, &json!(-1)).is_err());
    assert!(f(DataType::Int32, &json!(1.5)).is_err());
    assert!(f(DataType::Int32, &json!("x")).is_err());
    assert_eq!(f(DataType::Int32, &json!("12")), Ok(MetricValue::Int32(12)));
    assert_eq!(
        f(DataType::Float, &json!(21.5)),
        Ok(MetricValue::Float(21.5))
    );
    assert!(f(DataType::Float, &json!(1e300)).is_err());
    assert_eq!(
        f(DataType::Boolean, &json!(true)),
        Ok(MetricValue::Boolean(true))
    );
    assert_eq!(
        f(DataType::Boolean, &json!(0)),
        Ok(MetricValue::Boolean(false))
    );
    assert!(f(DataType::Boolean, &json!("yes")).is_err());
    assert_eq!(
        f(DataType::Int8Array, &json!([1, -2])),
        Ok(MetricValue::Int8Array(vec![1, -2]))
    );
    assert_eq!(
        f(DataType::Bytes, &json!("/wAQ")),
        Ok(MetricValue::Bytes(vec![0xff, 0, 0x10]))
    );
    assert!(f(DataType::DataSet, &json!({})).is_err());
}

// ---------------------------------------------------------------------------------------------
// Property tests: every datatype round-trips through encode → protobuf bytes → decode.
// ---------------------------------------------------------------------------------------------

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL
        | prop::num::f32::SUBNORMAL
        | prop::num::f32::ZERO
        | prop::num::f32::INFINITE
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
        | prop::num::f64::INFINITE
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 äöü€_./-]{0,12}"
}

fn basic_value(dt: DataType) -> BoxedStrategy<MetricValue> {
    use MetricValue as V;
    match dt {
        DataType::Int8 => any::<i8>().prop_map(V::Int8).boxed(),
        DataType::Int16 => any::<i16>().prop_map(V::Int16).boxed(),
        DataType::Int32 => any::<i32>().prop_map(V::Int32).boxed(),
        DataType::Int64 => any::<i64>().prop_map(V::Int64).boxed(),
        DataType::UInt8 => any::<u8>().prop_map(V::UInt8).boxed(),
        DataType::UInt16 => any::<u16>().prop_map(V::UInt16).boxed(),
        DataType::UInt32 => any::<u32>().prop_map(V::UInt32).boxed(),
        DataType::UInt64 => any::<u64>().prop_map(V::UInt64).boxed(),
        DataType::Float => finite_f32().prop_map(V::Float).boxed(),
        DataType::Double => finite_f64().prop_map(V::Double).boxed(),
        DataType::Boolean => any::<bool>().prop_map(V::Boolean).boxed(),
        DataType::String => text().prop_map(V::String).boxed(),
        DataType::Text => text().prop_map(V::Text).boxed(),
        DataType::DateTime => any::<u64>().prop_map(V::DateTime).boxed(),
        other => unreachable!("{other} is not basic"),
    }
}

fn basic_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(
        DataType::ALL
            .iter()
            .copied()
            .filter(|d| d.is_basic())
            .collect::<Vec<_>>(),
    )
}

fn dataset() -> impl Strategy<Value = DataSet> {
    prop::collection::vec((text(), basic_type()), 0..4).prop_flat_map(|cols| {
        let types: Vec<DataType> = cols.iter().map(|c| c.1).collect();
        let names: Vec<String> = cols.into_iter().map(|c| c.0).collect();
        let row = types
            .iter()
            .map(|t| prop::option::weighted(0.8, basic_value(*t)))
            .collect::<Vec<_>>();
        prop::collection::vec(row, 0..4).prop_map(move |rows| DataSet {
            columns: names.clone(),
            types: types.clone(),
            rows,
        })
    })
}

fn parameter() -> impl Strategy<Value = Parameter> {
    (text(), basic_type()).prop_flat_map(|(name, dt)| {
        prop::option::weighted(0.8, basic_value(dt)).prop_map(move |value| Parameter {
            name: name.clone(),
            datatype: dt,
            value,
        })
    })
}

fn property_value(depth: u32) -> BoxedStrategy<PropertyValue> {
    let basic = basic_type()
        .prop_flat_map(|dt| {
            prop::option::weighted(0.9, basic_value(dt)).prop_map(move |value| PropertyValue {
                datatype: dt,
                value,
            })
        })
        .boxed();
    if depth == 0 {
        return basic;
    }
    prop_oneof![
        4 => basic,
        1 => property_set(depth - 1)
            .prop_map(|s| PropertyValue::new(MetricValue::PropertySet(s))),
        1 => prop::collection::vec(property_set(depth - 1), 0..3)
            .prop_map(|l| PropertyValue::new(MetricValue::PropertySetList(l))),
    ]
    .boxed()
}

fn property_set(depth: u32) -> BoxedStrategy<PropertySet> {
    prop::collection::vec((text(), property_value(depth)), 0..3)
        .prop_map(|kv| {
            // Keys are unique in a set built by `insert`; keep them so for equality.
            let mut s = PropertySet::default();
            for (k, v) in kv {
                s.insert(k, v);
            }
            s
        })
        .boxed()
}

fn template(depth: u32) -> BoxedStrategy<Template> {
    let members = if depth == 0 {
        prop::collection::vec(scalar_metric(), 0..3).boxed()
    } else {
        prop::collection::vec(
            prop_oneof![
                3 => scalar_metric(),
                1 => template(depth - 1).prop_map(|t| Metric::new("nested", MetricValue::Template(t))),
            ],
            0..3,
        )
        .boxed()
    };
    (
        prop::option::of(text()),
        prop::option::of(text()),
        any::<bool>(),
        members,
        prop::collection::vec(parameter(), 0..3),
    )
        .prop_map(
            |(version, template_ref, is_definition, metrics, parameters)| Template {
                version,
                template_ref,
                is_definition,
                metrics,
                parameters,
            },
        )
        .boxed()
}

fn scalar_metric() -> BoxedStrategy<Metric> {
    (text(), basic_type())
        .prop_flat_map(|(name, dt)| basic_value(dt).prop_map(move |v| Metric::new(name.clone(), v)))
        .boxed()
}

/// A value of `dt`, for every metric datatype.
fn value(dt: DataType) -> BoxedStrategy<MetricValue> {
    use MetricValue as V;
    let n = 0..6usize;
    match dt {
        d if d.is_basic() => basic_value(d),
        DataType::Uuid => "[0-9a-f-]{36}".prop_map(V::Uuid).boxed(),
        DataType::Bytes => prop::collection::vec(any::<u8>(), n)
            .prop_map(V::Bytes)
            .boxed(),
        DataType::File => prop::collection::vec(any::<u8>(), n)
            .prop_map(V::File)
            .boxed(),
        DataType::DataSet => dataset().prop_map(V::DataSet).boxed(),
        DataType::Template => template(2).prop_map(V::Template).boxed(),
        DataType::PropertySet => property_set(1).prop_map(V::PropertySet).boxed(),
        DataType::PropertySetList => prop::collection::vec(property_set(1), n)
            .prop_map(V::PropertySetList)
            .boxed(),
        DataType::Int8Array => prop::collection::vec(any::<i8>(), n)
            .prop_map(V::Int8Array)
            .boxed(),
        DataType::Int16Array => prop::collection::vec(any::<i16>(), n)
            .prop_map(V::Int16Array)
            .boxed(),
        DataType::Int32Array => prop::collection::vec(any::<i32>(), n)
            .prop_map(V::Int32Array)
            .boxed(),
        DataType::Int64Array => prop::collection::vec(any::<i64>(), n)
            .prop_map(V::Int64Array)
            .boxed(),
        DataType::UInt8Array => prop::collection::vec(any::<u8>(), n)
            .prop_map(V::UInt8Array)
            .boxed(),
        DataType::UInt16Array => prop::collection::vec(any::<u16>(), n)
            .prop_map(V::UInt16Array)
            .boxed(),
        DataType::UInt32Array => prop::collection::vec(any::<u32>(), n)
            .prop_map(V::UInt32Array)
            .boxed(),
        DataType::UInt64Array => prop::collection::vec(any::<u64>(), n)
            .prop_map(V::UInt64Array)
            .boxed(),
        DataType::FloatArray => prop::collection::vec(finite_f32(), n)
            .prop_map(V::FloatArray)
            .boxed(),
        DataType::DoubleArray => prop::collection::vec(finite_f64(), n)
            .prop_map(V::DoubleArray)
            .boxed(),
        DataType::BooleanArray => prop::collection::vec(any::<bool>(), 0..20)
            .prop_map(V::BooleanArray)
            .boxed(),
        DataType::StringArray => prop::collection::vec(text(), n)
            .prop_map(V::StringArray)
            .boxed(),
        DataType::DateTimeArray => prop::collection::vec(any::<u64>(), n)
            .prop_map(V::DateTimeArray)
            .boxed(),
        other => unreachable!("{other}"),
    }
}

fn any_metric_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(
        DataType::ALL
            .iter()
            .copied()
            .filter(|d| Ctx::Metric.allows(*d))
            .collect::<Vec<_>>(),
    )
}

fn any_metric() -> impl Strategy<Value = Metric> {
    (
        text(),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        any_metric_type(),
        any::<bool>(),
        prop::option::of(property_set(1)),
    )
        .prop_flat_map(|(name, alias, ts, dt, null, props)| {
            value(dt).prop_map(move |v| {
                let mut m = if null {
                    Metric::null(name.clone(), dt)
                } else {
                    Metric::new(name.clone(), v)
                };
                m.alias = alias;
                m.timestamp = ts;
                m.properties = props.clone().filter(|p| !p.is_empty());
                m
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_datatype_round_trips(metrics in prop::collection::vec(any_metric(), 0..6),
                                  seq in prop::option::of(0u64..256),
                                  uuid in prop::option::of(text())) {
        let mut p = Payload::new(1_700_000_000_000, seq);
        p.uuid = uuid;
        p.metrics = metrics;
        let back = round_trip(&p);
        prop_assert_eq!(&back, &p);
        // JSON never fails and is an object per metric.
        for m in &back.metrics {
            prop_assert!(m.to_json().is_object());
        }
    }

    #[test]
    fn values_survive_an_alias_only_data_message(
        (dt, v) in any_metric_type().prop_flat_map(|dt| value(dt).prop_map(move |v| (dt, v)))
    ) {
        // Encode with the datatype, strip it (as DDATA by alias does), resolve from the "birth".
        let m = Metric::new("x", v.clone()).with_alias(1);
        let mut pb = single(m).to_proto().expect("proto");
        pb.metrics[0].datatype = None;
        pb.metrics[0].name = None;
        let mut back = decode_payload(&pb.encode_to_vec(), &Limits::default()).expect("decodes");
        back.metrics[0].resolve(dt).expect("resolves");
        prop_assert_eq!(back.metrics[0].value.as_ref(), Some(&v));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload(&b, &Limits { max_bytes: 1 << 16, max_metrics: 64, max_depth: 4 });
    }
}
