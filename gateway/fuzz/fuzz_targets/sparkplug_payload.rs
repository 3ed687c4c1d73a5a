//! A Sparkplug B payload as any edge node on the plant network might send it: any bytes.
//! Decoding within limits never panics; whatever decodes re-encodes, and decoding that again
//! gives the same bytes once more (a fixed point); every value converts to JSON; the ingest
//! state machine takes it on any message type without panicking.
#![no_main]

use ironbridge::sparkplug::config::IngestConfig;
use ironbridge::sparkplug::ingest::{Ingest, IngestStatus};
use ironbridge::sparkplug::payload::{Limits, decode_payload};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 6] = [
    "spBv1.0/g/NBIRTH/n",
    "spBv1.0/g/DBIRTH/n/d",
    "spBv1.0/g/NDATA/n",
    "spBv1.0/g/DDATA/n/d",
    "spBv1.0/g/DDEATH/n/d",
    "spBv1.0/g/NDEATH/n",
];

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 1 << 16,
        max_metrics: 256,
        max_depth: 4,
    };
    if let Ok(p) = decode_payload(data, &limits) {
        for m in &p.metrics {
            let _ = m.to_json();
        }
        let once = p.encode().expect("a decoded payload re-encodes");
        let again = decode_payload(&once, &limits).expect("its encoding decodes");
        let twice = again.encode().expect("re-encodes");
        assert_eq!(once, twice, "decode/encode is not a fixed point");
    }
    let mut ingest = Ingest::new(
        IngestConfig::default(),
        ("own".into(), "gw".into()),
        None,
        IngestStatus::new(),
    )
    .expect("in-memory ingest");
    let topic = TOPICS[data.first().map(|b| *b as usize % TOPICS.len()).unwrap_or(0)];
    let _ = ingest.handle(topic, data);
    let _ = ingest.handle("spBv1.0/g/DDATA/n/d", data);
});
