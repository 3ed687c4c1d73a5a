//! The idempotent producer of the vendored rskafka (KIP-98) against two Kafka-protocol
//! implementations: tansu and librdkafka's mock cluster (three brokers, Apache Kafka's checks).
//!
//! KIP-98: "the broker will reject a produce request from an idempotent producer if the sequence
//! number is not exactly one greater than the last committed message's", duplicates of a batch
//! already written are not appended again, and a producer the broker does not know is refused
//! (`UNKNOWN_PRODUCER_ID`). What each broker answers is checked here; the records are counted by
//! the independent librdkafka consumer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::{External, KafkaTool, MockKafka, Storage, Tansu, require};
use rskafka::client::error::Error as KafkaError;
use rskafka::client::idempotence::{
    IdempotentAck, ProducerIdentity, ProducerSequences, SequenceStamp, needs_new_identity,
};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

fn records(prefix: &str, n: usize) -> Vec<Record> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let timestamp = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    (0..n)
        .map(|i| Record {
            key: None,
            value: Some(format!("{prefix}-{i}").into_bytes()),
            headers: Default::default(),
            timestamp,
        })
        .collect()
}

async fn client(brokers: Vec<String>) -> Result<Client> {
    Ok(ClientBuilder::new(brokers)
        .backoff_config(rskafka::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.,
            deadline: Some(Duration::from_secs(10)),
        })
        .build()
        .await?)
}

fn protocol_error(e: &KafkaError) -> Option<&rskafka::client::error::ProtocolError> {
    match e {
        KafkaError::ServerError { protocol_error, .. } => Some(protocol_error),
        _ => None,
    }
}

/// One producer session on partition 0 of `topic`: append, resend (duplicate), a gap
/// (out of order), an unknown producer, and a fresh identity starting at sequence 0 again.
async fn exercise(brokers: Vec<String>, kafka: &KafkaTool, topic: &str) -> Result<()> {
    let client = client(brokers).await?;
    let pc: PartitionClient = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await?;
    let first = client.init_producer_id().await?;
    assert!(first.id >= 0 && first.epoch >= 0, "identity {first:?}");
    let mut seqs = ProducerSequences::new(first);
    let t: Arc<str> = Arc::from(topic);

    // Batch A, then A again with the same stamp: a resend after an unknown outcome.
    let a = seqs.stamp(&t, 0, 3);
    assert_eq!(a.base_sequence, 0);
    let ack = pc
        .produce_idempotent(records("a", 3), Compression::NoCompression, a)
        .await?;
    assert_eq!(ack, IdempotentAck::Appended { base_offset: 0 });
    let again = pc
        .produce_idempotent(records("a", 3), Compression::NoCompression, a)
        .await?;
    // tansu answers DUPLICATE_SEQUENCE_NUMBER; Apache Kafka (and the mock) the first offsets.
    assert!(
        matches!(
            again,
            IdempotentAck::Duplicate | IdempotentAck::Appended { base_offset: 0 }
        ),
        "resent batch: {again:?}"
    );

    // Batch B follows A.
    let b = seqs.stamp(&t, 0, 2);
    assert_eq!(b.base_sequence, 3);
    let ack = pc
        .produce_idempotent(records("b", 2), Compression::Lz4, b)
        .await?;
    assert_eq!(ack, IdempotentAck::Appended { base_offset: 3 });

    // A gap: sequence 10 where 5 is expected. Refused, not written.
    let gap = SequenceStamp {
        producer: first,
        base_sequence: 10,
    };
    let e = pc
        .produce_idempotent(records("gap", 1), Compression::NoCompression, gap)
        .await
        .err()
        .context("a sequence gap was accepted")?;
    let pe = protocol_error(&e).with_context(|| format!("gap: {e}"))?;
    assert!(needs_new_identity(pe), "gap answered with {pe:?}");

    // A producer id the cluster never handed out.
    let stranger = SequenceStamp {
        producer: ProducerIdentity {
            id: first.id + 1_000_000,
            epoch: 0,
        },
        base_sequence: 0,
    };
    match pc
        .produce_idempotent(records("x", 1), Compression::NoCompression, stranger)
        .await
    {
        Err(e) => {
            let pe = protocol_error(&e).with_context(|| format!("stranger: {e}"))?;
            assert!(
                needs_new_identity(pe),
                "unknown producer answered with {pe:?}"
            );
        }
        // Apache Kafka (and the mock) accept a first batch of an unknown producer at
        // sequence 0: the producer's state starts with it.
        Ok(IdempotentAck::Appended { .. }) => {}
        Ok(other) => bail!("unknown producer: {other:?}"),
    }

    // A new identity (the epoch bump): sequences restart at 0 on every partition.
    let second = client.init_producer_id().await?;
    assert_ne!(second, first);
    let mut seqs = ProducerSequences::new(second);
    let c = seqs.stamp(&t, 0, 1);
    assert_eq!(c.base_sequence, 0);
    let ack = pc
        .produce_idempotent(records("c", 1), Compression::NoCompression, c)
        .await?;
    assert!(matches!(ack, IdempotentAck::Appended { .. }), "{ack:?}");

    // Read back independently: A once, B, (the stranger's record where accepted), C.
    let got = kafka.consume(topic, None).await?;
    let values: Vec<String> = got
        .iter()
        .filter(|r| r.partition == 0)
        .filter_map(|r| r.value_str().map(str::to_owned))
        .filter(|v| !v.starts_with("x-"))
        .collect();
    assert_eq!(values, ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0"]);
    Ok(())
}

#[tokio::test]
async fn idempotent_produce_against_tansu() -> Result<()> {
    if !require(&[External::Tansu, External::PythonVenv])? {
        return Ok(());
    }
    let tansu = Tansu::start(Storage::Memory).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("idem", 1).await?;
    exercise(vec![tansu.bootstrap()], &kafka, "idem")
        .await
        .with_context(|| format!("tansu log:\n{}", tansu.log()))
}

/// The mock checks sequence numbers only for transactional producers
/// (`rd_kafka_mock_validate_records` in librdkafka's `rdkafka_mock.c` returns early without a
/// transactional id), so duplicates and gaps are checked against tansu above. Here: an identity
/// from a three-broker cluster, stamped batches to partitions led by different brokers, each
/// partition's sequence continuing where it was, every record read back once.
#[tokio::test]
async fn idempotent_produce_against_librdkafka_mock_cluster() -> Result<()> {
    if !require(&[External::PythonVenv])? {
        return Ok(());
    }
    let mock = MockKafka::start(3).await?;
    let kafka = KafkaTool::new(mock.bootstrap());
    // The mock has no CreateTopics; it creates a topic (4 partitions) when a client asks for it.
    let client = client(mock.brokers()).await?;
    let identity = client.init_producer_id().await?;
    let mut seqs = ProducerSequences::new(identity);
    let t: Arc<str> = Arc::from("idem");
    let mut expected = Vec::new();
    for round in 0..3 {
        for p in 0..4 {
            let pc = client
                .partition_client("idem", p, UnknownTopicHandling::Retry)
                .await?;
            let stamp = seqs.stamp(&t, p, 2);
            assert_eq!(stamp.base_sequence, round * 2);
            let prefix = format!("p{p}r{round}");
            let ack = pc
                .produce_idempotent(records(&prefix, 2), Compression::Lz4, stamp)
                .await?;
            assert_eq!(
                ack,
                IdempotentAck::Appended {
                    base_offset: i64::from(round) * 2
                }
            );
            expected.extend([format!("{prefix}-0"), format!("{prefix}-1")]);
        }
    }
    let mut got: Vec<String> = kafka
        .consume("idem", Some(expected.len()))
        .await?
        .iter()
        .filter_map(|r| r.value_str().map(str::to_owned))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    Ok(())
}
