//! `kill -9` of the real `ironbridge` daemon under load, then a restart on the same state
//! directory: every message whose PUBACK a publisher received reaches Kafka, in order per key, and
//! the duplicates the crash causes (records forwarded but not yet committed) are identical records
//! with the same `gateway_id` + `buffer_offset`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use ironbridge_e2e::gateway::{
    Delivery, Gateway, GatewayOptions, Progress, Route, StreamPublisher, StreamSpec, num, prepare,
    within,
};
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};

const NEEDS: &[External] = &[External::Tansu, External::PythonVenv];
/// Publishers, topics per publisher, and the rate of each.
const PUBLISHERS: usize = 3;
const TOPICS_EACH: usize = 2;
const RATE_EACH: f64 = 400.0;
/// Kill once this many messages were acknowledged in total.
const KILL_AFTER_ACKS: usize = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message() -> Result<()> {
    if !require(NEEDS)? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "kill -9 test", crash()).await
}

async fn crash() -> Result<()> {
    let p = Progress::new("kill-9");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("events", 4).await?;
    let mut gw = Gateway::start(GatewayOptions {
        id: "e2e-crash".into(),
        kafka: Some(tansu.bootstrap()),
        routes: vec![Route::new("line/#", "events")],
        ..Default::default()
    })
    .await?;
    p.note("gateway up");

    let mut publishers = Vec::new();
    let mut all_topics = Vec::new();
    for j in 0..PUBLISHERS {
        let topics: Vec<String> = (0..TOPICS_EACH)
            .map(|k| format!("line/p{j}/s{k}"))
            .collect();
        all_topics.extend(topics.iter().cloned());
        // More than can be sent before the kill: the publishers are still busy when it comes.
        let mut spec = StreamSpec::new(gw.mqtt_port(), &format!("plc-{j}"), topics, 100_000);
        spec.rate = RATE_EACH;
        publishers.push(StreamPublisher::spawn(&spec)?);
    }
    // Wait until enough was acknowledged and some, not all, was forwarded and committed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let acked: usize = publishers.iter().map(StreamPublisher::acked).sum();
        if acked >= KILL_AFTER_ACKS {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {acked} acknowledgements in 40 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = gw
        .wait_status("some records committed", Duration::from_secs(20), |s| {
            num(s, "/uplink/committed_offset").is_some_and(|n| n > 0)
        })
        .await?;
    let acked_at_kill: usize = publishers.iter().map(StreamPublisher::acked).sum();
    gw.kill().await?;
    p.note(format!(
        "kill -9 with {acked_at_kill} acknowledged; last status: next_offset {:?}, forwarded {:?}, committed {:?}",
        num(&s, "/buffer/next_offset"),
        num(&s, "/uplink/forwarded_offset"),
        num(&s, "/uplink/committed_offset")
    ));

    let mut acked = Vec::new();
    let mut published = 0;
    for publisher in publishers {
        let r = publisher.finish(Duration::from_secs(30)).await?;
        ensure!(r.broken, "a publisher did not notice the kill: {r:?}");
        published += r.published;
        acked.extend(r.acked);
    }
    p.note(format!(
        "publishers saw the connection drop: {published} sent, {} acknowledged",
        acked.len()
    ));

    gw.restart().await?;
    let after = gw.status().await?;
    ensure!(
        num(&after, "/buffer/next_offset").is_some_and(|n| n >= acked.len() as u64),
        "the buffer holds fewer records than were acknowledged: {after}"
    );
    let status = gw.wait_forwarded(Duration::from_secs(60)).await?;
    p.note(format!(
        "restarted and caught up: buffer next_offset {:?}, forwarded after restart {:?}",
        num(&status, "/buffer/next_offset"),
        num(&status, "/uplink/forwarded_records")
    ));

    let records = kafka.consume("events", None).await?;
    let read = records.len();
    let d = Delivery::analyse(records)?;
    let missing = d.missing(&acked);
    ensure!(
        missing.is_empty(),
        "{} acknowledged messages are not in Kafka, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // The log is sequential: what survived per topic is a prefix of what was sent, no holes.
    for t in &all_topics {
        let seqs = d.by_topic.get(t).map(Vec::as_slice).unwrap_or(&[]);
        let want: Vec<u32> = (0..seqs.len() as u32).collect();
        ensure!(
            seqs == want.as_slice(),
            "{t}: delivered sequence numbers have holes: {} records, last {:?}",
            seqs.len(),
            seqs.last()
        );
    }
    // Every unique record has its own buffer offset, and they are dense from 0.
    let offsets: BTreeSet<u64> = d
        .unique
        .iter()
        .map(ironbridge_e2e::gateway::buffer_offset)
        .collect::<Result<_>>()?;
    ensure!(
        offsets.len() == d.unique.len()
            && offsets.last().copied() == Some(d.unique.len() as u64 - 1),
        "buffer offsets of the delivered records are not 0..{}",
        d.unique.len()
    );
    p.note(format!(
        "kill -9: {} acknowledged, all in Kafka; {} delivered ({} accepted without an ack); \
         {read} records read, {} duplicates with identical gateway_id + buffer_offset; \
         after the restart the uplink skipped {:?} records its partitions' tails showed were there",
        acked.len(),
        d.unique.len(),
        d.unique.len() - acked.len(),
        d.duplicates,
        num(&status, "/uplink/resume_skipped"),
    ));
    // Resume without resending (uplink README, "Resume"): what the crashed process had
    // written after its last cursor commit is found in the partitions' tails, not sent again.
    ensure!(
        d.duplicates == 0,
        "{} duplicates after kill -9; uplink status {status}",
        d.duplicates
    );
    ensure!(
        num(&status, "/uplink/unproven_resends") == Some(0),
        "the uplink resent records without proof: {status}"
    );
    Ok(())
}
