//! The producer loop: buffer batches → routed records → produce requests per (topic,
//! partition) → cursor commit once everything up to it was acknowledged.
//!
//! Ordering: a batch is finished (every record acknowledged or dead-lettered) before the cursor
//! moves past it. Within a batch, each partition's chunks are sent in offset order, up to
//! `max_in_flight_requests` at once; the leader's sequence check keeps a later chunk from being
//! written ahead of an earlier one that was not, and answers are applied in sending order. So a
//! later record never overtakes an earlier, unacknowledged one on the same partition, across
//! retries, reconnects and restarts. While a batch is delivered the next one is read and routed
//! on a blocking thread. Memory is bounded by two batches (`batch_max_records` /
//! `batch_max_bytes`) plus their Kafka records, whatever the backlog.
//!
//! Idempotence (KIP-98): every request carries the uplink's producer identity and the
//! partition's next sequence numbers, fixed when the chunk is first sent. A chunk whose outcome
//! is unknown (timeout, broken connection) is sent again with the same records and stamp, so the
//! broker recognises it if it had written it. When the broker refuses the stamp (unknown
//! producer, out-of-order sequence, fenced epoch) the uplink takes a new identity and restamps;
//! a chunk that was in doubt is then sent without that protection and counted in
//! `unproven_resends`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use edge_buffer::{Log, Reader, StoredRecord};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand::Rng;
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::idempotence::{
    IdempotentAck, ProducerSequences, SequenceStamp, needs_new_identity,
};
use rskafka::client::partition::{
    Compression, EncodedBatch, PartitionClient, UnknownTopicHandling,
};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::config::{SaslMechanism, UplinkConfig};
use super::resume::{self, Tail};
use super::route::{Built, Routed, Router};
use super::status::{UplinkState, UplinkStatus};
use super::{UplinkError, error_chain};
use crate::event::Event;

/// A shutdown signal that may be awaited many times.
pub(crate) struct Shutdown {
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl Shutdown {
    pub(crate) fn new(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        Shutdown {
            fut: Box::pin(fut),
            fired: false,
        }
    }

    pub(crate) async fn wait(&mut self) {
        if !self.fired {
            (&mut self.fut).await;
            self.fired = true;
        }
    }
}

/// Exponential backoff, doubling from `initial` up to `max`, with "equal jitter": a delay is
/// uniformly drawn from [cap/2, cap], so retries of many gateways spread out but never collapse
/// to zero.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = cap / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A failed Kafka operation.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    /// Needs an operator (credentials, certificates, ACLs) rather than patience.
    attention: bool,
}

impl Failure {
    fn new(message: String) -> Self {
        let m = message.to_ascii_lowercase();
        let attention = [
            "sasl",
            "certificate",
            "authoriz",
            "authenticat",
            "tls",
            "handshake",
        ]
        .iter()
        .any(|w| m.contains(w));
        Failure { message, attention }
    }
}

/// What a produce error means for the records of the request.
enum ProduceVerdict {
    /// The broker will never take these records as they are (too large, invalid): split the
    /// request, dead-letter single records.
    Reject(String),
    /// The topic or partition is unknown to the broker: check the metadata.
    TopicMissing(String),
    /// The topic exists but may not be written (invalid name, not authorized): dead-letter.
    TopicRejected(String),
    /// The broker refused the producer stamp (not written): take a new producer identity.
    Sequence(String),
    Transient(String),
}

fn classify(e: &KafkaError) -> ProduceVerdict {
    let msg = error_chain(e);
    match e {
        KafkaError::ServerError { protocol_error, .. } => match protocol_error {
            ProtocolError::MessageTooLarge
            | ProtocolError::RecordListTooLarge
            | ProtocolError::InvalidRecord
            | ProtocolError::InvalidTimestamp
            | ProtocolError::CorruptMessage => ProduceVerdict::Reject(msg),
            ProtocolError::UnknownTopicOrPartition => ProduceVerdict::TopicMissing(msg),
            ProtocolError::InvalidTopicException | ProtocolError::TopicAuthorizationFailed => {
                ProduceVerdict::TopicRejected(msg)
            }
            e if needs_new_identity(e) => ProduceVerdict::Sequence(msg),
            _ => ProduceVerdict::Transient(msg),
        },
        _ => ProduceVerdict::Transient(msg),
    }
}

/// How a topic resolved against the cluster metadata.
#[derive(Debug, Clone)]
enum Resolution {
    Partitions(i32),
    Missing(String),
}

struct Session {
    client: Client,
    partitions: HashMap<Arc<str>, i32>,
    refreshed: Instant,
    clients: HashMap<(Arc<str>, i32), Arc<PartitionClient>>,
    /// Topics found missing, with when to ask again.
    missing: HashMap<Arc<str>, (Instant, String)>,
}

/// Records of one (topic, partition) in offset order, in request-sized chunks.
struct Group {
    topic: Arc<str>,
    partition: i32,
    chunks: VecDeque<Chunk>,
    /// Size of the last chunk, while the chunks are being built.
    tail_bytes: usize,
    /// The topic's partition count when the group was made.
    partitions: i32,
    /// Records below this buffer offset may already be in the partition (written before a
    /// restart, or by a request in doubt): read the partition's tail before sending. 0: none.
    check_below: u64,
}

/// One produce request's records, and what became of it.
struct Chunk {
    records: Vec<Built>,
    state: ChunkState,
    /// Consecutive timeouts while stamped.
    timeouts: u32,
}

enum ChunkState {
    Unsent,
    /// Stamped and encoded when first sent: it goes again with exactly these bytes (records
    /// and stamp) until the broker answers, so the broker can recognise it.
    Sent {
        stamp: SequenceStamp,
        batch: EncodedBatch,
        /// The outcome is unknown (it may be in the log).
        in_doubt: bool,
    },
    /// Acknowledged behind an earlier chunk that is not (yet): counted and released from the
    /// group only in order, so the cursor never passes an unacknowledged record.
    Acked,
}

impl Chunk {
    fn new(records: Vec<Built>) -> Chunk {
        Chunk {
            records,
            state: ChunkState::Unsent,
            timeouts: 0,
        }
    }

    fn is_sent(&self) -> bool {
        matches!(self.state, ChunkState::Sent { .. })
    }
}

impl Group {
    fn new(topic: Arc<str>, partition: i32, partitions: i32) -> Group {
        Group {
            topic,
            partition,
            chunks: VecDeque::new(),
            tail_bytes: 0,
            partitions,
            check_below: 0,
        }
    }

    /// Appends a record, starting a new chunk when the last one would exceed `limit` bytes
    /// (a record larger than `limit` is a chunk of its own).
    fn push(&mut self, b: Built, limit: usize) {
        match self.chunks.back_mut() {
            Some(c)
                if matches!(c.state, ChunkState::Unsent) && self.tail_bytes + b.size <= limit =>
            {
                self.tail_bytes += b.size;
                c.records.push(b);
            }
            _ => {
                self.tail_bytes = b.size;
                self.chunks.push_back(Chunk::new(vec![b]));
            }
        }
    }

    /// Splits the records not yet sent behind the last sent chunk into chunks of at most
    /// `limit` bytes, in order. Sent chunks keep their records (the broker knows them by their
    /// stamps).
    fn rechunk(&mut self, limit: usize) {
        let keep = self
            .chunks
            .iter()
            .rposition(|c| !matches!(c.state, ChunkState::Unsent))
            .map_or(0, |i| i + 1);
        let pending: Vec<Built> = self.chunks.drain(keep..).flat_map(|c| c.records).collect();
        self.tail_bytes = 0;
        for b in pending {
            self.push(b, limit);
        }
    }

    /// Forgets every stamp (the producer identity changed). Records of a chunk in doubt are
    /// checked against the partition's tail before they go again.
    fn unstamp(&mut self) {
        for c in &mut self.chunks {
            if let ChunkState::Sent { in_doubt, .. } = c.state {
                if in_doubt && let Some(last) = c.records.last() {
                    self.check_below = self.check_below.max(last.offset + 1);
                }
                c.state = ChunkState::Unsent;
            }
            c.timeouts = 0;
        }
    }

    /// Applies what the partition's tail proved to the records below `check_below`: drops
    /// those already there. Returns (dropped, sent without proof). Runs only on unstamped
    /// chunks (acknowledged ones are left alone).
    fn apply(&mut self, tail: &Tail) -> (u64, u64) {
        let below = std::mem::take(&mut self.check_below);
        let doubtful = |b: &Built| b.offset < below;
        let unsent = |c: &Chunk| matches!(c.state, ChunkState::Unsent);
        match tail {
            Tail::Proven(None) => (0, 0),
            Tail::Proven(Some(last)) => {
                let mut dropped = 0u64;
                for c in self.chunks.iter_mut().filter(|c| unsent(c)) {
                    let before = c.records.len();
                    c.records.retain(|b| !(doubtful(b) && b.offset <= *last));
                    dropped += (before - c.records.len()) as u64;
                }
                self.chunks.retain(|c| !c.records.is_empty());
                (dropped, 0)
            }
            Tail::Unproven(_) => {
                let n = self
                    .chunks
                    .iter()
                    .filter(|c| unsent(c))
                    .flat_map(|c| &c.records)
                    .filter(|b| doubtful(b))
                    .count();
                (0, n as u64)
            }
        }
    }

    /// Takes acknowledged chunks off the front (in order) and counts them as forwarded.
    fn release_acked(&mut self, status: &UplinkStatus) {
        while self
            .chunks
            .front()
            .is_some_and(|c| matches!(c.state, ChunkState::Acked))
        {
            if let Some(c) = self.chunks.pop_front() {
                for b in &c.records {
                    status.forwarded(b.origin, 1, b.size as u64);
                }
            }
        }
    }
}

enum GroupResult {
    Done,
    TopicMissing(String),
    /// The broker refused the producer stamp: a new identity is needed.
    Sequence(String),
    /// The request did not finish within `request_timeout_ms`.
    TimedOut(String),
    Transient(String),
}

/// The smallest request the uplink shrinks to after timeouts (a larger record still goes
/// whole). Small enough that a broker which cannot take a full request in time still gets
/// records through; large enough to keep a few hundred readings per request.
const MIN_REQUEST_BYTES: usize = 16 * 1024;

/// The request size limit, halved after a timeout and grown back by an eighth of the
/// configured maximum after each round without one (AIMD, like TCP's congestion window).
/// A broker that needs longer than `request_timeout_ms` for a full request would otherwise
/// get the same request again and again, and the backlog would never drain.
#[derive(Debug)]
struct RequestLimit {
    max: usize,
    current: usize,
}

impl RequestLimit {
    fn new(max: usize) -> RequestLimit {
        RequestLimit { max, current: max }
    }

    fn get(&self) -> usize {
        self.current
    }

    fn shrink(&mut self) {
        self.current = (self.current / 2).max(MIN_REQUEST_BYTES.min(self.max));
    }

    fn grow(&mut self) {
        self.current = (self.current + (self.max / 8).max(1)).min(self.max);
    }
}

/// Why `deliver` stopped before the batch was done.
struct Interrupted {
    /// Every offset below this was acknowledged or skipped.
    done: u64,
}

pub(crate) struct Uplink {
    cfg: UplinkConfig,
    log: Arc<Log>,
    status: Arc<UplinkStatus>,
    /// Shared with the read-ahead thread (one user at a time).
    router: Arc<std::sync::Mutex<Router>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    compression: Compression,
    session: Option<Session>,
    backoff: Backoff,
    /// Consecutive failed rounds; the session is rebuilt after a few.
    failed_rounds: u32,
    request_limit: RequestLimit,
    /// Producer identity and per-partition sequence numbers; `None` until InitProducerId
    /// answered (and again after the broker refused the identity).
    sequences: Option<std::sync::Mutex<ProducerSequences>>,
    /// The identity was refused: the next one is counted as a reset.
    identity_refused: bool,
    /// Records below this buffer offset existed before this run: an earlier run may have sent
    /// them (see [`resume`]).
    resume_until: u64,
    /// What each partition's tail proved, read once per run.
    resume: HashMap<(Arc<str>, i32), Tail>,
}

/// A stamped chunk that timed out this often is split anyway under a new identity (its
/// records then count as `unproven_resends`): a link too slow for it would otherwise get the
/// same request forever.
const MAX_STAMPED_TIMEOUTS: u32 = 2;

impl Uplink {
    pub(crate) fn new(
        cfg: UplinkConfig,
        log: Arc<Log>,
        status: Arc<UplinkStatus>,
        router: Router,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let backoff = Backoff::new(
            Duration::from_millis(cfg.retry_backoff_initial_ms),
            Duration::from_millis(cfg.retry_backoff_max_ms),
        );
        let compression = cfg.compression.to_rskafka();
        let request_limit = RequestLimit::new(cfg.max_request_bytes);
        Uplink {
            cfg,
            log,
            status,
            router: Arc::new(std::sync::Mutex::new(router)),
            tls,
            compression,
            session: None,
            backoff,
            failed_rounds: 0,
            request_limit,
            sequences: None,
            identity_refused: false,
            resume_until: 0,
            resume: HashMap::new(),
        }
    }

    fn timeout(&self) -> Duration {
        self.cfg.request_timeout()
    }

    async fn commit(&self, next_offset: u64) -> Result<(), UplinkError> {
        let log = Arc::clone(&self.log);
        let name = self.cfg.consumer.clone();
        tokio::task::spawn_blocking(move || log.commit(&name, next_offset))
            .await
            .map_err(|e| UplinkError::Internal(format!("commit task failed: {e}")))??;
        self.status.committed(next_offset);
        debug!(next_offset, "uplink cursor committed");
        Ok(())
    }

    /// The loop; returns once `shutdown` fired (or the log closed) and the cursor is committed.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown) -> Result<(), UplinkError> {
        let mut reader: Reader = self.log.reader_for(&self.cfg.consumer)?;
        let mut committed = self
            .log
            .cursor(&self.cfg.consumer)?
            .unwrap_or(reader.next_offset());
        let mut done = reader.next_offset().max(committed);
        self.resume_until = self.log.stats().next_offset;
        self.status.committed(committed);
        let interval = Duration::from_millis(self.cfg.commit_interval_ms);
        let mut last_commit = Instant::now();
        let mut next_connect = Instant::now();
        self.status.set_state(UplinkState::Connecting);
        // A full batch read (and routed) on a blocking thread while the previous one was being
        // delivered, or the first records of a partial one.
        let mut ahead: Option<Ahead> = None;
        loop {
            let prepared = match ahead.take() {
                Some(Ahead::Prepared(p)) => p,
                other => {
                    let first = match other {
                        Some(Ahead::Partial(recs)) => recs,
                        _ => Vec::new(),
                    };
                    // Wait for records; commit finished work when idle (at most once per interval).
                    let first = if first.is_empty() {
                        loop {
                            let recs = reader
                                .read_batch(self.cfg.batch_max_records, self.cfg.batch_max_bytes)?;
                            if !recs.is_empty() {
                                break recs;
                            }
                            if done > committed && last_commit.elapsed() >= interval {
                                self.commit(done).await?;
                                committed = done;
                                last_commit = Instant::now();
                            }
                            let commit_at = (done > committed).then(|| last_commit + interval);
                            // While idle, keep a connection and check it every
                            // `metadata_refresh_ms`, so the status tells whether Kafka is reachable.
                            let connect_at = match &self.session {
                                None => Some(next_connect),
                                Some(s) => Some(
                                    s.refreshed
                                        + Duration::from_millis(self.cfg.metadata_refresh_ms),
                                ),
                            };
                            tokio::select! {
                                _ = shutdown.wait() => {
                                    if done > committed {
                                        self.commit(done).await?;
                                    }
                                    return Ok(());
                                }
                                r = reader.wait() => match r {
                                    Ok(()) => {}
                                    Err(edge_buffer::Error::Closed) => {
                                        if done > committed {
                                            self.commit(done).await?;
                                        }
                                        return Ok(());
                                    }
                                    Err(e) => return Err(e.into()),
                                },
                                _ = sleep_until(commit_at.unwrap_or_else(Instant::now)), if commit_at.is_some() => {}
                                _ = sleep_until(connect_at.unwrap_or_else(Instant::now)), if connect_at.is_some() => {
                                    next_connect = self.connect_idle(&mut shutdown).await;
                                }
                            }
                        }
                    } else {
                        first
                    };
                    let batch = self.linger(&mut reader, first).await?;
                    self.status.missed(reader.missed());
                    let mut router = self.router.lock().unwrap_or_else(|e| e.into_inner());
                    match prepare(&mut router, &self.status, self.cfg.max_record_bytes, batch) {
                        Some(p) => p,
                        None => continue,
                    }
                }
            };
            self.status.pending_from(prepared.head_timestamp_ms);
            let end = prepared.end;
            // The next batch is read and routed on another thread while this one is delivered:
            // the broker's work on this batch overlaps ours on the next.
            let read_ahead = {
                let router = Arc::clone(&self.router);
                let status = Arc::clone(&self.status);
                let (max_records, max_bytes) =
                    (self.cfg.batch_max_records, self.cfg.batch_max_bytes);
                let max_record_bytes = self.cfg.max_record_bytes;
                let mut reader = reader;
                tokio::task::spawn_blocking(move || {
                    let next = read_ahead(
                        &mut reader,
                        &router,
                        &status,
                        (max_records, max_bytes),
                        max_record_bytes,
                    );
                    (reader, next)
                })
            };
            let (delivered, read) = tokio::join!(
                self.deliver(prepared.start, prepared.built, &mut shutdown),
                read_ahead
            );
            let (r, next) =
                read.map_err(|e| UplinkError::Internal(format!("read-ahead task failed: {e}")))?;
            reader = r;
            ahead = next?;
            match delivered? {
                Ok(()) => {
                    done = end;
                    self.status.progressed(done);
                }
                Err(Interrupted { done: d }) => {
                    if d > committed {
                        self.commit(d).await?;
                    }
                    return Ok(());
                }
            }
            if last_commit.elapsed() >= interval {
                self.commit(done).await?;
                committed = done;
                last_commit = Instant::now();
            }
        }
    }

    /// Tops up a batch for up to `linger_ms` while it is not full.
    async fn linger(
        &self,
        reader: &mut Reader,
        mut batch: Vec<StoredRecord>,
    ) -> Result<Vec<StoredRecord>, UplinkError> {
        let max_records = self.cfg.batch_max_records;
        let max_bytes = self.cfg.batch_max_bytes;
        let mut bytes: usize = batch.iter().map(|r| r.payload.len()).sum();
        if self.cfg.linger_ms == 0 {
            return Ok(batch);
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.linger_ms);
        while batch.len() < max_records && bytes < max_bytes {
            tokio::select! {
                _ = sleep_until(deadline) => break,
                r = reader.wait() => match r {
                    Ok(()) => {}
                    Err(edge_buffer::Error::Closed) => break,
                    Err(e) => return Err(e.into()),
                },
            }
            let more = reader.read_batch(max_records - batch.len(), max_bytes - bytes)?;
            bytes += more.iter().map(|r| r.payload.len()).sum::<usize>();
            batch.extend(more);
        }
        Ok(batch)
    }

    /// Delivers one batch's records (`start`: the batch's first buffer offset).
    /// `Ok(Ok(()))`: every record acknowledged or dead-lettered.
    async fn deliver(
        &mut self,
        start: u64,
        built: Vec<Built>,
        shutdown: &mut Shutdown,
    ) -> Result<Result<(), Interrupted>, UplinkError> {
        if built.is_empty() {
            return Ok(Ok(()));
        }

        // Resolve the topics (partition counts), retrying until the cluster answers.
        let mut topics: Vec<Arc<str>> = Vec::new();
        for b in &built {
            if !topics.contains(&b.topic) {
                topics.push(Arc::clone(&b.topic));
            }
        }
        let resolved = loop {
            if shutdown.fired {
                return Ok(Err(Interrupted { done: start }));
            }
            let r = tokio::select! {
                r = self.resolve(&topics) => r,
                _ = shutdown.wait() => return Ok(Err(Interrupted { done: start })),
            };
            match r {
                Ok(r) => break r,
                Err(f) => {
                    if self.fail(f, shutdown).await {
                        return Ok(Err(Interrupted { done: start }));
                    }
                }
            }
        };

        // Partition and chunk.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(Arc<str>, i32), usize> = HashMap::new();
        for b in built {
            let n = match resolved.get(&b.topic) {
                Some(Resolution::Partitions(n)) => *n,
                Some(Resolution::Missing(reason)) => {
                    warn!(offset = b.offset, topic = %b.topic, %reason, "uplink dead-lettered a record");
                    self.status.dead_letter(b.offset, &b.topic, reason);
                    continue;
                }
                None => {
                    let reason = "topic was not resolved";
                    warn!(offset = b.offset, topic = %b.topic, %reason, "uplink dead-lettered a record");
                    self.status.dead_letter(b.offset, &b.topic, reason);
                    continue;
                }
            };
            let partition = (b.hash % n.max(1) as u32) as i32;
            let i = *index
                .entry((Arc::clone(&b.topic), partition))
                .or_insert_with(|| {
                    groups.push(Group::new(Arc::clone(&b.topic), partition, n));
                    groups.len() - 1
                });
            groups[i].push(b, self.request_limit.get());
        }
        // Records an earlier run may have sent: what the partition's tail proved (or read it
        // before the first send).
        for g in &mut groups {
            let first = g
                .chunks
                .front()
                .and_then(|c| c.records.first())
                .map(|b| b.offset);
            if first.is_some_and(|o| o < self.resume_until) {
                g.check_below = self.resume_until;
                let key = (Arc::clone(&g.topic), g.partition);
                if let Some(tail) = self.resume.get(&key) {
                    let counts = g.apply(tail);
                    self.count_resume(counts);
                }
            }
        }

        // Delivery rounds: every group with work sends its chunks in order; failures are retried
        // after a backoff, the groups that succeeded are not sent again.
        loop {
            if groups.iter().all(|g| g.chunks.is_empty()) {
                self.backoff.reset();
                self.failed_rounds = 0;
                return Ok(Ok(()));
            }
            if shutdown.fired {
                return Ok(Err(Interrupted {
                    done: pending_start(&groups).unwrap_or(start),
                }));
            }
            let acquired = tokio::select! {
                r = async {
                    self.ensure_identity().await?;
                    self.partition_clients(&groups).await
                } => r,
                _ = shutdown.wait() => Err(Failure::new("shutting down".into())),
            };
            let (clients, mut missing, mut transient) = match acquired {
                Ok(a) => a,
                Err(f) => {
                    if shutdown.fired || self.fail(f, shutdown).await {
                        return Ok(Err(Interrupted {
                            done: pending_start(&groups).unwrap_or(start),
                        }));
                    }
                    continue;
                }
            };
            if let Err(m) = self.check_tails(&mut groups, &clients).await {
                transient.get_or_insert(m);
            }
            let Some(sequences) = self.sequences.as_ref() else {
                continue;
            };
            let results = {
                let status = &self.status;
                let compression = self.compression;
                let request_timeout = self.timeout();
                let max_in_flight = self.cfg.max_in_flight_requests;
                let work = groups
                    .iter_mut()
                    .filter(|g| !g.chunks.is_empty() && g.check_below == 0)
                    .filter_map(|g| {
                        let key = (Arc::clone(&g.topic), g.partition);
                        let pc = clients.get(&key).cloned()?;
                        let produce = move |_: &[Built], _: SequenceStamp, batch: &EncodedBatch| {
                            let pc = Arc::clone(&pc);
                            let batch = batch.clone();
                            async move { pc.produce_encoded(&batch).await }
                        };
                        Some(async move {
                            let r = deliver_group(
                                g,
                                produce,
                                sequences,
                                status,
                                request_timeout,
                                compression,
                                max_in_flight,
                            )
                            .await;
                            (key, r)
                        })
                    });
                let mut all = std::pin::pin!(futures::future::join_all(work));
                tokio::select! {
                    r = &mut all => r,
                    _ = shutdown.wait() => {
                        // Let the in-flight requests finish within the grace period.
                        let grace = Duration::from_millis(self.cfg.shutdown_grace_ms);
                        match timeout(grace, &mut all).await {
                            Ok(r) => r,
                            Err(_) => {
                                warn!("uplink shutdown: in-flight produce requests did not finish in time");
                                Vec::new()
                            }
                        }
                    }
                }
            };
            let mut timed_out: u64 = 0;
            let mut refused = false;
            for (key, r) in results {
                match r {
                    GroupResult::Done => {}
                    GroupResult::Sequence(m) => {
                        refused = true;
                        transient.get_or_insert(m);
                    }
                    GroupResult::TimedOut(m) => {
                        timed_out += 1;
                        transient.get_or_insert(m);
                    }
                    GroupResult::TopicMissing(m) => {
                        if !missing.iter().any(|(t, _)| *t == key.0) {
                            missing.push((Arc::clone(&key.0), m));
                        }
                    }
                    GroupResult::Transient(m) => {
                        if let Some(s) = self.session.as_mut() {
                            s.clients.remove(&key);
                        }
                        transient.get_or_insert(m);
                    }
                }
            }
            for (topic, message) in missing {
                match self.check_missing(&topic).await {
                    Ok(Some(reason)) => {
                        for g in groups.iter_mut().filter(|g| g.topic == topic) {
                            g.unstamp();
                            g.check_below = 0;
                            for b in g.chunks.drain(..).flat_map(|c| c.records) {
                                self.status.dead_letter(b.offset, &b.topic, &reason);
                                warn!(offset = b.offset, topic = %b.topic, %reason, "uplink dead-lettered a record");
                            }
                        }
                    }
                    Ok(None) => {
                        transient.get_or_insert(message);
                    }
                    Err(f) => {
                        transient.get_or_insert(f.message);
                    }
                }
            }
            if groups
                .iter()
                .flat_map(|g| &g.chunks)
                .any(|c| c.timeouts >= MAX_STAMPED_TIMEOUTS)
            {
                // Let the rechunk below split the chunk that keeps timing out.
                refused = true;
            }
            if refused {
                self.new_identity(&mut groups);
            }
            if timed_out > 0 {
                // rskafka finishes sending an abandoned request in the background; a new
                // connection keeps the next, smaller request from queueing behind it (and a
                // closed connection lets the broker drop a request it has not fully read).
                self.session = None;
                self.request_limit.shrink();
                let limit = self.request_limit.get();
                self.status.timed_out(timed_out, limit);
                info!(
                    request_limit_bytes = limit,
                    "uplink: a produce request timed out; sending smaller requests"
                );
                for g in &mut groups {
                    g.rechunk(limit);
                }
            } else if transient.is_none() && self.request_limit.get() < self.request_limit.max {
                self.request_limit.grow();
                self.status.request_limit(self.request_limit.get());
            }
            if shutdown.fired {
                continue;
            }
            if let Some(m) = transient {
                if self.fail(Failure::new(m), shutdown).await {
                    return Ok(Err(Interrupted {
                        done: pending_start(&groups).unwrap_or(start),
                    }));
                }
            } else {
                self.status.set_state(UplinkState::Connected);
            }
        }
    }

    /// Gets a producer identity (InitProducerId) if the uplink has none.
    async fn ensure_identity(&mut self) -> Result<(), Failure> {
        if self.sequences.is_some() {
            return Ok(());
        }
        let t = self.timeout();
        let s = self.session().await?;
        let id = timeout(t, s.client.init_producer_id())
            .await
            .map_err(|_| Failure::new(format!("getting a producer id timed out after {t:?}")))?
            .map_err(|e| Failure::new(format!("getting a producer id: {}", error_chain(&e))))?;
        let reset = std::mem::take(&mut self.identity_refused);
        self.status.producer(id.id, id.epoch, reset);
        info!(
            producer_id = id.id,
            producer_epoch = id.epoch,
            reset,
            "uplink: idempotent producer identity"
        );
        self.sequences = Some(std::sync::Mutex::new(ProducerSequences::new(id)));
        Ok(())
    }

    /// Drops the producer identity (the next round asks for a new one) and every stamp made
    /// with it. The broker can no longer tell a resend of a chunk in doubt from new records:
    /// the partition's tail is read first.
    fn new_identity(&mut self, groups: &mut [Group]) {
        self.sequences = None;
        self.identity_refused = true;
        for g in groups {
            g.unstamp();
        }
    }

    fn count_resume(&self, (skipped, unproven): (u64, u64)) {
        if skipped > 0 {
            self.status.resume_skipped(skipped);
        }
        if unproven > 0 {
            self.status.unproven_resends(unproven);
        }
    }

    /// Reads the tail of every partition that has records below its `check_below` and
    /// applies it. A scan that fails leaves its group for the next round (the error).
    async fn check_tails(
        &mut self,
        groups: &mut [Group],
        clients: &HashMap<(Arc<str>, i32), Arc<PartitionClient>>,
    ) -> Result<(), String> {
        let window = self.cfg.resume_scan_records;
        let gateway_id = self.cfg.effective_gateway_id();
        // Reading a few thousand records back may take a slow broker longer than one produce.
        let scan_limit = self.timeout().max(Duration::from_secs(30));
        let mut first_error = None;
        for g in groups
            .iter_mut()
            .filter(|g| g.check_below > 0 && !g.chunks.is_empty())
        {
            let key = (Arc::clone(&g.topic), g.partition);
            let Some(pc) = clients.get(&key) else {
                continue;
            };
            let tail = if window == 0 {
                Tail::Unproven("kafka.resume_scan_records = 0".into())
            } else {
                match resume::scan(pc, &gateway_id, g.partitions, window, scan_limit).await {
                    Ok(t) => t,
                    Err(m) => {
                        first_error.get_or_insert(format!(
                            "reading the tail of {}/{}: {m}",
                            g.topic, g.partition
                        ));
                        continue;
                    }
                }
            };
            // A buffer offset this run's buffer never had before it started belongs to
            // another buffer with this gateway_id: it proves nothing about ours.
            let tail = match tail {
                Tail::Proven(Some(last)) if last >= self.resume_until => Tail::Unproven(format!(
                    "the partition holds buffer offset {last} of this gateway_id, beyond this buffer's end {} (another buffer with the same gateway_id?)",
                    self.resume_until
                )),
                t => t,
            };
            let below = g.check_below;
            let counts = g.apply(&tail);
            match &tail {
                Tail::Proven(last) => info!(
                    topic = %g.topic,
                    partition = g.partition,
                    last_written = ?last,
                    skipped = counts.0,
                    "uplink: partition tail read; records already there are not sent again"
                ),
                Tail::Unproven(reason) => warn!(
                    topic = %g.topic,
                    partition = g.partition,
                    records = counts.1,
                    below,
                    %reason,
                    "uplink: partition tail proves nothing; sending again what may be there (at-least-once)"
                ),
            }
            self.count_resume(counts);
            self.resume.insert(key, tail);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One connection attempt while there is nothing to send; returns when to try again.
    async fn connect_idle(&mut self, shutdown: &mut Shutdown) -> Instant {
        let r = tokio::select! {
            r = self.session() => r.map(|_| ()),
            _ = shutdown.wait() => return Instant::now(),
        };
        match r {
            Ok(()) => {
                self.backoff.reset();
                self.failed_rounds = 0;
                self.status.set_state(UplinkState::Connected);
                Instant::now()
            }
            Err(f) => {
                let delay = self.backoff.next_delay();
                self.record_failure(&f, delay);
                self.session = None;
                Instant::now() + delay
            }
        }
    }

    fn record_failure(&mut self, f: &Failure, delay: Duration) {
        self.failed_rounds += 1;
        self.status.retry();
        self.status.error(f.message.clone());
        let retry_in_ms = delay.as_millis() as u64;
        let state = if f.attention {
            UplinkState::Error {
                reason: f.message.clone(),
                retry_in_ms,
            }
        } else {
            UplinkState::BackingOff {
                reason: f.message.clone(),
                retry_in_ms,
            }
        };
        self.status.set_state(state);
        warn!(error = %f.message, retry_in_ms, "uplink: Kafka request failed; backing off");
        if self.failed_rounds >= 3 {
            // Start over from the bootstrap servers: new connections, fresh metadata.
            self.session = None;
        }
    }

    /// Records a failure, backs off (unless shut down meanwhile). Returns true on shutdown.
    async fn fail(&mut self, f: Failure, shutdown: &mut Shutdown) -> bool {
        let delay = self.backoff.next_delay();
        self.record_failure(&f, delay);
        tokio::select! {
            _ = sleep(delay) => false,
            _ = shutdown.wait() => true,
        }
    }

    async fn connect(&self) -> Result<Session, Failure> {
        let t = self.timeout();
        let mut b = ClientBuilder::new(self.cfg.bootstrap_servers.clone())
            .client_id(self.cfg.client_id.as_str())
            // rskafka retries forever by default. Its own retries (reconnects, leader moves)
            // get a short deadline; past that the error comes back here, to the status and
            // this loop's backoff.
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(self.cfg.retry_backoff_initial_ms.min(1_000)),
                max_backoff: Duration::from_secs(1),
                base: 2.,
                deadline: Some(inner_deadline(&self.cfg)),
            });
        if let Some(tls) = &self.tls {
            b = b.tls_config(Arc::clone(tls));
        }
        if let Some(s) = &self.cfg.sasl {
            let c = Credentials::new(s.username.clone(), s.password.clone());
            b = b.sasl_config(match s.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(c),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
            });
        }
        let client = match timeout(t, b.build()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(Failure::new(format!(
                    "connecting to Kafka: {}",
                    error_chain(&e)
                )));
            }
            Err(_) => {
                return Err(Failure::new(format!(
                    "connecting to Kafka timed out after {t:?}"
                )));
            }
        };
        let mut s = Session {
            client,
            partitions: HashMap::new(),
            refreshed: Instant::now(),
            clients: HashMap::new(),
            missing: HashMap::new(),
        };
        refresh(&mut s, t).await?;
        info!(brokers = ?self.cfg.bootstrap_servers, "uplink connected to Kafka");
        Ok(s)
    }

    async fn session(&mut self) -> Result<&mut Session, Failure> {
        let refresh_every = Duration::from_millis(self.cfg.metadata_refresh_ms);
        let t = self.timeout();
        match &mut self.session {
            Some(s) => {
                if s.refreshed.elapsed() >= refresh_every {
                    refresh(s, t).await?;
                }
            }
            None => {
                if !matches!(
                    self.status.state(),
                    UplinkState::BackingOff { .. } | UplinkState::Error { .. }
                ) {
                    self.status.set_state(UplinkState::Connecting);
                }
                self.session = Some(self.connect().await?);
            }
        }
        self.session
            .as_mut()
            .ok_or_else(|| Failure::new("no Kafka session".into()))
    }

    /// Partition counts for `topics`; a topic the cluster does not have (and does not create
    /// on request) resolves to `Missing`.
    async fn resolve(
        &mut self,
        topics: &[Arc<str>],
    ) -> Result<HashMap<Arc<str>, Resolution>, Failure> {
        let t = self.timeout();
        let retry_missing = Duration::from_millis(self.cfg.unknown_topic_retry_ms);
        let s = self.session().await?;
        let mut out = HashMap::new();
        let mut refreshed = false;
        for topic in topics {
            if let Some(n) = s.partitions.get(topic) {
                out.insert(Arc::clone(topic), Resolution::Partitions(*n));
                continue;
            }
            if let Some((until, reason)) = s.missing.get(topic)
                && Instant::now() < *until
            {
                out.insert(Arc::clone(topic), Resolution::Missing(reason.clone()));
                continue;
            }
            if !refreshed {
                refresh(s, t).await?;
                refreshed = true;
                if let Some(n) = s.partitions.get(topic) {
                    out.insert(Arc::clone(topic), Resolution::Partitions(*n));
                    continue;
                }
            }
            let r = probe(s, topic, t, retry_missing).await?;
            out.insert(Arc::clone(topic), r);
        }
        Ok(out)
    }

    /// After UnknownTopicOrPartition on produce: `Some(reason)` if the topic is really gone.
    async fn check_missing(&mut self, topic: &Arc<str>) -> Result<Option<String>, Failure> {
        let t = self.timeout();
        let retry_missing = Duration::from_millis(self.cfg.unknown_topic_retry_ms);
        let s = self.session().await?;
        refresh(s, t).await?;
        if s.partitions.contains_key(topic) {
            return Ok(None);
        }
        Ok(match probe(s, topic, t, retry_missing).await? {
            Resolution::Partitions(_) => None,
            Resolution::Missing(reason) => Some(reason),
        })
    }

    /// Partition clients for the groups with work. Besides the clients: topics the broker
    /// said it does not know, and the first other failure (those groups wait for the next round).
    #[allow(clippy::type_complexity)]
    async fn partition_clients(
        &mut self,
        groups: &[Group],
    ) -> Result<
        (
            HashMap<(Arc<str>, i32), Arc<PartitionClient>>,
            Vec<(Arc<str>, String)>,
            Option<String>,
        ),
        Failure,
    > {
        let t = self.timeout();
        let s = self.session().await?;
        let mut out = HashMap::new();
        let mut missing: Vec<(Arc<str>, String)> = Vec::new();
        let mut transient = None;
        for g in groups.iter().filter(|g| !g.chunks.is_empty()) {
            let key = (Arc::clone(&g.topic), g.partition);
            if let Some(pc) = s.clients.get(&key) {
                out.insert(key, Arc::clone(pc));
                continue;
            }
            if missing.iter().any(|(t, _)| *t == g.topic) {
                continue;
            }
            let r = timeout(
                t,
                s.client.partition_client(
                    g.topic.to_string(),
                    g.partition,
                    UnknownTopicHandling::Error,
                ),
            )
            .await;
            match r {
                Ok(Ok(pc)) => {
                    let pc = Arc::new(pc);
                    s.clients.insert(key.clone(), Arc::clone(&pc));
                    out.insert(key, pc);
                }
                Ok(Err(e)) => match classify(&e) {
                    ProduceVerdict::TopicMissing(m) | ProduceVerdict::TopicRejected(m) => {
                        missing.push((Arc::clone(&g.topic), m));
                    }
                    ProduceVerdict::Reject(m)
                    | ProduceVerdict::Sequence(m)
                    | ProduceVerdict::Transient(m) => {
                        transient.get_or_insert(format!(
                            "finding the leader of {}/{}: {m}",
                            g.topic, g.partition
                        ));
                    }
                },
                Err(_) => {
                    transient.get_or_insert(format!(
                        "finding the leader of {}/{} timed out after {t:?}",
                        g.topic, g.partition
                    ));
                }
            }
        }
        Ok((out, missing, transient))
    }
}

/// Budget for rskafka's internal retries of one operation: a few quick retries, never more
/// than the request timeout.
fn inner_deadline(cfg: &UplinkConfig) -> Duration {
    Duration::from_millis((4 * cfg.retry_backoff_initial_ms).clamp(1_000, 2_000))
        .min(cfg.request_timeout())
}

/// Where the first record not yet acknowledged is: chunks are in offset order per group.
fn pending_start(groups: &[Group]) -> Option<u64> {
    groups
        .iter()
        .filter_map(|g| g.chunks.front().and_then(|c| c.records.first()))
        .map(|b| b.offset)
        .min()
}

/// Reloads partition counts of all topics.
async fn refresh(s: &mut Session, t: Duration) -> Result<(), Failure> {
    let topics = timeout(t, s.client.list_topics())
        .await
        .map_err(|_| Failure::new(format!("reading Kafka metadata timed out after {t:?}")))?
        .map_err(|e| Failure::new(format!("reading Kafka metadata: {}", error_chain(&e))))?;
    s.partitions = topics
        .into_iter()
        .filter(|t| !t.partitions.is_empty())
        .map(|t| (Arc::from(t.name.as_str()), t.partitions.len() as i32))
        .collect();
    s.refreshed = Instant::now();
    Ok(())
}

/// Asks for a topic that the metadata does not list: a metadata request for it lets brokers
/// with `auto.create.topics.enable` create it.
async fn probe(
    s: &mut Session,
    topic: &Arc<str>,
    t: Duration,
    retry_missing: Duration,
) -> Result<Resolution, Failure> {
    let r = timeout(
        t,
        s.client
            .partition_client(topic.to_string(), 0, UnknownTopicHandling::Error),
    )
    .await
    .map_err(|_| Failure::new(format!("looking up topic {topic} timed out after {t:?}")))?;
    match r {
        Ok(pc) => {
            s.clients.insert((Arc::clone(topic), 0), Arc::new(pc));
            refresh(s, t).await?;
            match s.partitions.get(topic) {
                Some(n) => Ok(Resolution::Partitions(*n)),
                None => Err(Failure::new(format!(
                    "topic {topic} has a leader but is not listed in the metadata yet"
                ))),
            }
        }
        Err(e) => match classify(&e) {
            ProduceVerdict::TopicMissing(m) | ProduceVerdict::TopicRejected(m) => {
                let reason = format!("topic {topic} does not exist or may not be used: {m}");
                warn!(%topic, %reason, "uplink: records for this topic are dead-lettered");
                s.missing.insert(
                    Arc::clone(topic),
                    (Instant::now() + retry_missing, reason.clone()),
                );
                Ok(Resolution::Missing(reason))
            }
            ProduceVerdict::Reject(m)
            | ProduceVerdict::Sequence(m)
            | ProduceVerdict::Transient(m) => {
                Err(Failure::new(format!("looking up topic {topic}: {m}")))
            }
        },
    }
}

/// A batch decoded and routed, ready to deliver.
struct Prepared {
    /// Buffer offsets `start..end`.
    start: u64,
    end: u64,
    head_timestamp_ms: i64,
    built: Vec<Built>,
}

/// What the read-ahead found.
enum Ahead {
    Prepared(Prepared),
    /// Fewer records than a full batch: topped up (linger) before it is routed.
    Partial(Vec<StoredRecord>),
}

/// Reads the next batch if the log has records; routes it if it is full (a backlog).
fn read_ahead(
    reader: &mut Reader,
    router: &std::sync::Mutex<Router>,
    status: &UplinkStatus,
    (max_records, max_bytes): (usize, usize),
    max_record_bytes: usize,
) -> Result<Option<Ahead>, UplinkError> {
    let batch = reader.read_batch(max_records, max_bytes)?;
    if batch.is_empty() {
        return Ok(None);
    }
    status.missed(reader.missed());
    let bytes: usize = batch.iter().map(|r| r.payload.len()).sum();
    if batch.len() < max_records && bytes < max_bytes {
        return Ok(Some(Ahead::Partial(batch)));
    }
    let mut router = router.lock().unwrap_or_else(|e| e.into_inner());
    Ok(prepare(&mut router, status, max_record_bytes, batch).map(Ahead::Prepared))
}

/// Decodes and routes a batch; undecodable and oversized records are dead-lettered here.
fn prepare(
    router: &mut Router,
    status: &UplinkStatus,
    max_record_bytes: usize,
    batch: Vec<StoredRecord>,
) -> Option<Prepared> {
    let (start, end, head_timestamp_ms) = match (batch.first(), batch.last()) {
        (Some(h), Some(t)) => (h.offset, t.offset + 1, h.timestamp_ms),
        _ => return None,
    };
    let dead_letter = |offset: u64, topic: &str, reason: &str| {
        warn!(offset, topic, reason, "uplink dead-lettered a record");
        status.dead_letter(offset, topic, reason);
    };
    let mut built: Vec<Built> = Vec::with_capacity(batch.len());
    for rec in &batch {
        let event = match Event::decode(&rec.payload) {
            Ok(e) => e,
            Err(e) => {
                dead_letter(rec.offset, "", &format!("undecodable buffer record: {e}"));
                continue;
            }
        };
        match router.route(&event, rec.offset, rec.timestamp_ms) {
            Routed::Dropped => status.dropped_unmatched(1),
            Routed::Records(v) => {
                for b in v {
                    if b.size > max_record_bytes {
                        let reason = format!(
                            "record of {} bytes exceeds max_record_bytes ({max_record_bytes})",
                            b.size
                        );
                        dead_letter(b.offset, &b.topic, &reason);
                    } else {
                        built.push(b);
                    }
                }
            }
        }
    }
    Some(Prepared {
        start,
        end,
        head_timestamp_ms,
        built,
    })
}

/// Sends a group's chunks in order with `produce` (a partition client's, or a fake in tests),
/// up to `max_in_flight` requests at once. Each chunk is stamped with the producer identity and
/// the partition's next sequence numbers from `sequences`, and encoded, when it is first sent;
/// a resend reuses those bytes.
///
/// Order: the leader appends a stamped batch only right after the one before it (sequence
/// check), so no chunk can be written ahead of an earlier one that was not. Answers are taken
/// in sending order; a chunk acknowledged behind one that failed stays in the group as
/// acknowledged and leaves it (is counted forwarded) only when everything before it did. After
/// the first failure nothing new is sent; the requests in flight are awaited, and chunks whose
/// answer was an error keep their stamps for the next round (an earlier chunk's failure makes
/// the broker refuse the later ones as out of order; resent in order with the same stamps they
/// are taken).
#[allow(clippy::too_many_arguments)]
async fn deliver_group<P, F>(
    g: &mut Group,
    produce: P,
    sequences: &std::sync::Mutex<ProducerSequences>,
    status: &UplinkStatus,
    request_timeout: Duration,
    compression: Compression,
    max_in_flight: usize,
) -> GroupResult
where
    P: Fn(&[Built], SequenceStamp, &EncodedBatch) -> F,
    F: Future<Output = Result<IdempotentAck, KafkaError>>,
{
    let lock = || sequences.lock().unwrap_or_else(|e| e.into_inner());
    let mut in_flight = FuturesOrdered::new();
    // Index of the next chunk to send; chunks are released from the front only at the end, so
    // indices stay valid.
    let mut next = 0usize;
    let mut failure: Option<GroupResult> = None;
    // The first failure was a rejection of the chunk at this index (too large, invalid).
    let mut rejected: Option<(usize, String)> = None;
    // The first failure: the topic may not be written.
    let mut topic_rejected: Option<String> = None;
    loop {
        while failure.is_none()
            && rejected.is_none()
            && topic_rejected.is_none()
            && in_flight.len() < max_in_flight.max(1)
            && next < g.chunks.len()
        {
            let i = next;
            next += 1;
            let chunk = &mut g.chunks[i];
            if matches!(chunk.state, ChunkState::Unsent) {
                let stamp = lock().stamp(&g.topic, g.partition, chunk.records.len());
                let refs: Vec<&Record> = chunk.records.iter().map(|b| &b.record).collect();
                match EncodedBatch::new(&refs, compression, Some(stamp)) {
                    Ok(batch) => {
                        chunk.state = ChunkState::Sent {
                            stamp,
                            batch,
                            in_doubt: false,
                        };
                    }
                    Err(e) => {
                        lock().release(&g.topic, g.partition, stamp, chunk.records.len());
                        rejected = Some((i, format!("encoding the records: {}", error_chain(&e))));
                        continue;
                    }
                }
            }
            let ChunkState::Sent { stamp, batch, .. } = &chunk.state else {
                continue; // acknowledged in an earlier round
            };
            status.request();
            let request = timeout(request_timeout, produce(&chunk.records, *stamp, batch));
            in_flight.push_back(async move { (i, request.await) });
        }
        if let Some((i, r)) = in_flight.next().await {
            // An encoding failure is noted when sending, before earlier chunks are answered.
            let first = failure.is_none()
                && topic_rejected.is_none()
                && rejected.as_ref().is_none_or(|(j, _)| i < *j);
            let chunk = &mut g.chunks[i];
            let ChunkState::Sent { in_doubt, .. } = &mut chunk.state else {
                continue;
            };
            match r {
                Err(_) => {
                    *in_doubt = true;
                    chunk.timeouts += 1;
                    if first {
                        failure = Some(GroupResult::TimedOut(format!(
                            "produce to {}/{} timed out after {request_timeout:?}",
                            g.topic, g.partition
                        )));
                    }
                }
                Ok(Ok(ack)) => {
                    if ack == IdempotentAck::Duplicate {
                        status.duplicates_suppressed(chunk.records.len() as u64);
                    }
                    chunk.state = ChunkState::Acked;
                    chunk.timeouts = 0;
                }
                Ok(Err(e)) => {
                    // A broken connection may have lost the answer, not the request.
                    if !matches!(e, KafkaError::ServerError { .. }) {
                        *in_doubt = true;
                    }
                    // After an earlier failure, an error is most likely the refusal of a
                    // batch out of order behind it: the chunk keeps its stamp.
                    if first {
                        let at = |m: String| format!("produce to {}/{}: {m}", g.topic, g.partition);
                        match classify(&e) {
                            ProduceVerdict::Reject(m) => rejected = Some((i, m)),
                            ProduceVerdict::TopicRejected(m) => topic_rejected = Some(m),
                            ProduceVerdict::TopicMissing(m) => {
                                failure = Some(GroupResult::TopicMissing(m));
                            }
                            ProduceVerdict::Sequence(m) => {
                                failure = Some(GroupResult::Sequence(at(m)));
                            }
                            ProduceVerdict::Transient(m) => {
                                failure = Some(GroupResult::Transient(at(m)));
                            }
                        }
                    }
                }
            }
            if !in_flight.is_empty() {
                continue;
            }
        }
        // Everything sent was answered: settle a rejection, then go on or stop.
        if let Some((i, m)) = rejected.take() {
            let n = g.chunks[i].records.len();
            // Not written: its sequence numbers go to the records sent in its place (only
            // possible if no later chunk took numbers after it).
            let released = match g.chunks[i].state {
                ChunkState::Sent { stamp, .. } => lock().release(&g.topic, g.partition, stamp, n),
                _ => true,
            };
            let later_stamped = g.chunks.iter().skip(i + 1).any(Chunk::is_sent);
            let mut chunk = std::mem::replace(&mut g.chunks[i], Chunk::new(Vec::new()));
            if chunk.records.len() > 1 {
                // Find the culprit: retry both halves, in order.
                let second = chunk.records.split_off(chunk.records.len() / 2);
                g.chunks[i] = Chunk::new(chunk.records);
                g.chunks.insert(i + 1, Chunk::new(second));
            } else {
                for b in chunk.records.drain(..) {
                    let reason = format!("rejected by the broker: {m}");
                    warn!(offset = b.offset, topic = %b.topic, %reason, "uplink dead-lettered a record");
                    status.dead_letter(b.offset, &b.topic, &reason);
                }
                g.chunks.remove(i);
            }
            next = i;
            if !released || later_stamped {
                // Later chunks carry sequence numbers after the gap: the leader would refuse
                // them; restamp everything under a new identity.
                failure = Some(GroupResult::Sequence(format!(
                    "produce to {}/{}: a batch was rejected ({m}) with later batches stamped after it",
                    g.topic, g.partition
                )));
            }
        }
        if let Some(m) = topic_rejected.take() {
            let reason = format!("topic {} rejected the records: {m}", g.topic);
            g.unstamp();
            g.check_below = 0;
            for c in g.chunks.iter_mut() {
                if matches!(c.state, ChunkState::Acked) {
                    continue;
                }
                for b in c.records.drain(..) {
                    warn!(offset = b.offset, topic = %b.topic, %reason, "uplink dead-lettered a record");
                    status.dead_letter(b.offset, &b.topic, &reason);
                }
            }
            g.chunks.retain(|c| !c.records.is_empty());
            next = g.chunks.len();
        }
        if failure.is_some() || next >= g.chunks.len() {
            break;
        }
    }
    g.release_acked(status);
    failure.unwrap_or(GroupResult::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::client::idempotence::ProducerIdentity;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let caps = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for cap in caps {
            let d = b.next_delay().as_millis() as u64;
            assert!(d >= cap / 2 && d <= cap, "delay {d} for cap {cap}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    fn built(offset: u64, value: &str) -> Built {
        let record = Record {
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Default::default(),
            timestamp: crate::uplink::route::timestamp(0),
        };
        Built {
            offset,
            topic: Arc::from("t"),
            hash: 0,
            size: record.approximate_size(),
            record,
            origin: super::super::route::Origin::Default,
        }
    }

    fn server_error(e: ProtocolError) -> KafkaError {
        KafkaError::ServerError {
            protocol_error: e,
            error_message: None,
            request: rskafka::client::error::RequestContext::Partition("t".into(), 0),
            response: None,
            is_virtual: false,
        }
    }

    fn group(values: &[&str], per_chunk: usize) -> Group {
        let mut chunks = VecDeque::new();
        let all: Vec<Built> = values
            .iter()
            .enumerate()
            .map(|(i, v)| built(i as u64, v))
            .collect();
        for c in all.chunks(per_chunk) {
            chunks.push_back(Chunk::new(c.to_vec()));
        }
        Group {
            chunks,
            ..Group::new(Arc::from("t"), 0, 1)
        }
    }

    fn sequences() -> std::sync::Mutex<ProducerSequences> {
        std::sync::Mutex::new(ProducerSequences::new(ProducerIdentity { id: 7, epoch: 0 }))
    }

    fn appended() -> Result<IdempotentAck, KafkaError> {
        Ok(IdempotentAck::Appended { base_offset: 0 })
    }

    fn values(records: &[Built]) -> Vec<String> {
        records
            .iter()
            .map(|b| {
                String::from_utf8_lossy(b.record.value.as_deref().unwrap_or_default()).into_owned()
            })
            .collect()
    }

    fn offsets(g: &Group) -> Vec<u64> {
        g.chunks
            .iter()
            .flat_map(|c| &c.records)
            .map(|b| b.offset)
            .collect()
    }

    fn in_doubt(c: &Chunk) -> bool {
        matches!(c.state, ChunkState::Sent { in_doubt: true, .. })
    }

    /// Delivers with one request in flight (the order of calls is the order of answers).
    async fn deliver_one_by_one<P, F>(
        g: &mut Group,
        produce: P,
        sequences: &std::sync::Mutex<ProducerSequences>,
        status: &UplinkStatus,
        request_timeout: Duration,
    ) -> GroupResult
    where
        P: Fn(&[Built], SequenceStamp, &EncodedBatch) -> F,
        F: Future<Output = Result<IdempotentAck, KafkaError>>,
    {
        deliver_group(
            g,
            produce,
            sequences,
            status,
            request_timeout,
            Compression::NoCompression,
            1,
        )
        .await
    }

    /// A broker that rejects any request holding a "BAD" record as too large, and the
    /// sequence of requests it saw.
    #[tokio::test]
    async fn too_large_requests_are_split_until_the_culprit_is_dead_lettered() {
        let seen = std::sync::Mutex::new(Vec::<Vec<String>>::new());
        let stamps = std::sync::Mutex::new(Vec::<i32>::new());
        let produce = |records: &[Built], stamp: SequenceStamp, _: &EncodedBatch| {
            let v = values(records);
            let bad = v.iter().any(|s| s == "BAD");
            seen.lock().expect("lock").push(v);
            if !bad {
                stamps.lock().expect("lock").push(stamp.base_sequence);
            }
            async move {
                if bad {
                    Err(server_error(ProtocolError::MessageTooLarge))
                } else {
                    appended()
                }
            }
        };
        let status = UplinkStatus::new();
        let seqs = sequences();
        let mut g = group(&["a", "b", "c", "d", "BAD", "f", "g", "h"], 8);
        let r = deliver_one_by_one(&mut g, produce, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Done));
        assert!(g.chunks.is_empty());
        let s = status.snapshot();
        assert_eq!((s.forwarded_records, s.dead_lettered), (7, 1));
        assert_eq!(s.last_dead_letter.map(|d| d.buffer_offset), Some(4));
        // Everything that was accepted went in offset order.
        let accepted: Vec<String> = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|v| !v.iter().any(|s| s == "BAD"))
            .flatten()
            .cloned()
            .collect();
        assert_eq!(accepted, ["a", "b", "c", "d", "f", "g", "h"]);
        // Refused requests gave their sequence numbers back: the accepted ones have no gap
        // (a-d at 0, f at 4, g-h at 5).
        assert_eq!(*stamps.lock().expect("lock"), [0, 4, 5]);
    }

    #[tokio::test]
    async fn transient_errors_keep_the_rest_in_order_for_the_next_round() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let produce = |_records: &[Built], _stamp: SequenceStamp, _: &EncodedBatch| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 1 {
                    Err(server_error(ProtocolError::NotLeaderOrFollower))
                } else {
                    appended()
                }
            }
        };
        let seqs = sequences();
        let status = UplinkStatus::new();
        let mut g = group(&["a", "b", "c", "d", "e", "f"], 2);
        let r = deliver_one_by_one(&mut g, &produce, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Transient(_)));
        // The first chunk went; the second failed and stays first in line.
        let left: Vec<u64> = offsets(&g);
        assert_eq!(left, [2, 3, 4, 5]);
        let r = deliver_one_by_one(&mut g, &produce, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Done));
        assert_eq!(status.snapshot().forwarded_records, 6);
    }

    #[tokio::test]
    async fn unknown_topic_and_rejected_topic() {
        let status = UplinkStatus::new();
        let mut g = group(&["a", "b"], 1);
        let seqs = sequences();
        let missing = |_r: &[Built], _s: SequenceStamp, _b: &EncodedBatch| async {
            Err::<IdempotentAck, _>(server_error(ProtocolError::UnknownTopicOrPartition))
        };
        let r = deliver_one_by_one(&mut g, missing, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::TopicMissing(_)));
        assert_eq!(g.chunks.len(), 2);
        let denied = |_r: &[Built], _s: SequenceStamp, _b: &EncodedBatch| async {
            Err::<IdempotentAck, _>(server_error(ProtocolError::TopicAuthorizationFailed))
        };
        let r = deliver_one_by_one(&mut g, denied, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Done));
        assert_eq!(status.snapshot().dead_lettered, 2);
    }

    #[tokio::test]
    async fn a_hanging_request_times_out() {
        let status = UplinkStatus::new();
        let mut g = group(&["a"], 1);
        let seqs = sequences();
        let hang = |_r: &[Built], _s: SequenceStamp, _b: &EncodedBatch| {
            std::future::pending::<Result<IdempotentAck, KafkaError>>()
        };
        let r = deliver_one_by_one(&mut g, hang, &seqs, &status, Duration::from_millis(50)).await;
        assert!(matches!(r, GroupResult::TimedOut(m) if m.contains("timed out")));
        assert_eq!(g.chunks.len(), 1);
        assert!(in_doubt(&g.chunks[0]));
    }

    /// KIP-98: a batch whose outcome is unknown goes again with the same records and stamp,
    /// so the broker can recognise it; a duplicate answer counts as delivered, once.
    #[tokio::test]
    async fn a_request_in_doubt_is_resent_with_the_same_stamp() {
        let status = UplinkStatus::new();
        let seqs = sequences();
        let mut g = group(&["a", "b", "c", "d"], 2);
        let sent = std::sync::Mutex::new(Vec::<(Vec<String>, i32)>::new());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let produce = |records: &[Built], stamp: SequenceStamp, _: &EncodedBatch| {
            sent.lock()
                .expect("lock")
                .push((values(records), stamp.base_sequence));
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                match n {
                    // The first request is written but its answer never comes.
                    0 => std::future::pending().await,
                    1 => Ok(IdempotentAck::Duplicate),
                    _ => appended(),
                }
            }
        };
        let r =
            deliver_one_by_one(&mut g, &produce, &seqs, &status, Duration::from_millis(50)).await;
        assert!(matches!(r, GroupResult::TimedOut(_)));
        // A smaller request limit must not split the chunk the broker may have.
        g.rechunk(1);
        assert_eq!(g.chunks.front().map(|c| c.records.len()), Some(2));
        let r = deliver_one_by_one(&mut g, &produce, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Done));
        let sent = sent.lock().expect("lock").clone();
        let expected: Vec<(Vec<String>, i32)> = vec![
            (vec!["a".into(), "b".into()], 0),
            (vec!["a".into(), "b".into()], 0),
            (vec!["c".into()], 2),
            (vec!["d".into()], 3),
        ];
        assert_eq!(sent, expected);
        let s = status.snapshot();
        assert_eq!((s.forwarded_records, s.duplicates_suppressed), (4, 2));
    }

    /// Up to `max_in_flight` requests go out before the first answer comes back: the fake
    /// broker answers only when three requests wait at once (a single request in flight would
    /// never be answered).
    #[tokio::test]
    async fn requests_are_pipelined_up_to_the_limit() {
        let status = UplinkStatus::new();
        let seqs = sequences();
        let mut g = group(&["a", "b", "c", "d", "e", "f"], 1);
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let stamps = std::sync::Mutex::new(Vec::<i32>::new());
        let produce = |_r: &[Built], stamp: SequenceStamp, _b: &EncodedBatch| {
            stamps.lock().expect("lock").push(stamp.base_sequence);
            let barrier = Arc::clone(&barrier);
            async move {
                barrier.wait().await;
                appended()
            }
        };
        let r = timeout(
            Duration::from_secs(5),
            deliver_group(
                &mut g,
                produce,
                &seqs,
                &status,
                Duration::from_secs(5),
                Compression::Lz4,
                3,
            ),
        )
        .await
        .expect("three requests were in flight at once");
        assert!(matches!(r, GroupResult::Done));
        assert!(g.chunks.is_empty());
        assert_eq!(*stamps.lock().expect("lock"), [0, 1, 2, 3, 4, 5]);
        assert_eq!(status.snapshot().forwarded_records, 6);
    }

    /// The first of three requests in flight fails, the second is acknowledged, the third is
    /// refused as out of order (as a leader would): nothing is counted forwarded past the
    /// failure; the next round resends the first and third with their stamps, not the second.
    #[tokio::test]
    async fn an_earlier_failure_holds_back_later_acknowledgements() {
        let status = UplinkStatus::new();
        let seqs = sequences();
        let mut g = group(&["a", "b", "c", "d", "e", "f"], 2);
        let sent = std::sync::Mutex::new(Vec::<(Vec<String>, i32)>::new());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let produce = |records: &[Built], stamp: SequenceStamp, _: &EncodedBatch| {
            sent.lock()
                .expect("lock")
                .push((values(records), stamp.base_sequence));
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(server_error(ProtocolError::NotLeaderOrFollower)),
                    2 => Err(server_error(ProtocolError::OutOfOrderSequenceNumber)),
                    _ => appended(),
                }
            }
        };
        let r = deliver_group(
            &mut g,
            &produce,
            &seqs,
            &status,
            Duration::from_secs(5),
            Compression::NoCompression,
            5,
        )
        .await;
        assert!(
            matches!(r, GroupResult::Transient(_)),
            "the first failure decides"
        );
        assert_eq!(status.snapshot().forwarded_records, 0);
        assert_eq!(offsets(&g), [0, 1, 2, 3, 4, 5]);
        assert!(matches!(g.chunks[1].state, ChunkState::Acked));
        assert!(g.chunks[0].is_sent() && g.chunks[2].is_sent());
        let r = deliver_group(
            &mut g,
            &produce,
            &seqs,
            &status,
            Duration::from_secs(5),
            Compression::NoCompression,
            5,
        )
        .await;
        assert!(matches!(r, GroupResult::Done));
        assert!(g.chunks.is_empty());
        let sent = sent.lock().expect("lock").clone();
        let v = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        let expected: Vec<(Vec<String>, i32)> = vec![
            (v("a", "b"), 0),
            (v("c", "d"), 2),
            (v("e", "f"), 4),
            (v("a", "b"), 0),
            (v("e", "f"), 4),
        ];
        assert_eq!(sent, expected);
        let s = status.snapshot();
        assert_eq!((s.forwarded_records, s.producer_resets), (6, 0));
    }

    /// An out-of-order answer means the batch was not written: the group stops with its
    /// records, and after a new identity only a chunk in doubt is counted as unproven.
    #[tokio::test]
    async fn a_refused_stamp_asks_for_a_new_identity() {
        let status = UplinkStatus::new();
        let seqs = sequences();
        let mut g = group(&["a", "b"], 2);
        let refuse = |_r: &[Built], _s: SequenceStamp, _b: &EncodedBatch| async {
            Err::<IdempotentAck, _>(server_error(ProtocolError::OutOfOrderSequenceNumber))
        };
        let r = deliver_one_by_one(&mut g, refuse, &seqs, &status, Duration::from_secs(5)).await;
        assert!(matches!(r, GroupResult::Sequence(_)));
        assert_eq!(g.chunks.len(), 1);
        assert!(g.chunks[0].is_sent() && !in_doubt(&g.chunks[0]));
        g.unstamp();
        assert_eq!(g.check_below, 0, "not written: no need to read the tail");
        g.chunks[0].state = ChunkState::Sent {
            stamp: SequenceStamp {
                producer: ProducerIdentity { id: 7, epoch: 0 },
                base_sequence: 0,
            },
            batch: EncodedBatch::new(&[], Compression::NoCompression, None).expect("encode"),
            in_doubt: true,
        };
        g.unstamp();
        assert!(!g.chunks[0].is_sent());
        assert_eq!(
            g.check_below, 2,
            "in doubt: read the tail before sending offsets 0-1 again"
        );
    }

    /// What a partition's tail proved decides which records below `check_below` go again.
    #[test]
    fn the_tail_drops_what_is_already_there_and_counts_what_is_unproven() {
        let mut g = group(&["a", "b", "c", "d", "e"], 2);
        g.check_below = 4;
        assert_eq!(g.apply(&Tail::Proven(Some(2))), (3, 0));
        let left: Vec<u64> = offsets(&g);
        assert_eq!(left, [3, 4]);
        assert_eq!(g.check_below, 0);
        // Offsets at or beyond check_below are never dropped, whatever the tail says.
        let mut g = group(&["a", "b", "c"], 3);
        g.check_below = 1;
        assert_eq!(g.apply(&Tail::Proven(Some(2))), (1, 0));
        assert_eq!(offsets(&g).len(), 2);
        let mut g = group(&["a", "b", "c"], 3);
        g.check_below = 2;
        assert_eq!(g.apply(&Tail::Unproven("x".into())), (0, 2));
        assert_eq!(offsets(&g).len(), 3);
        let mut g = group(&["a"], 1);
        g.check_below = 1;
        assert_eq!(g.apply(&Tail::Proven(None)), (0, 0));
        assert_eq!(g.chunks.len(), 1);
    }

    #[test]
    fn sequence_numbers_wrap_and_are_given_back_only_by_the_last_batch() {
        use rskafka::client::idempotence::increment_sequence;
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 2, 5), 2);
        let mut s = ProducerSequences::new(ProducerIdentity { id: 1, epoch: 0 });
        let t: Arc<str> = Arc::from("t");
        let a = s.stamp(&t, 0, 3);
        let b = s.stamp(&t, 0, 2);
        assert_eq!((a.base_sequence, b.base_sequence), (0, 3));
        assert_eq!(s.stamp(&t, 1, 1).base_sequence, 0);
        assert!(!s.release(&t, 0, a, 3));
        assert!(s.release(&t, 0, b, 2));
        assert_eq!(s.stamp(&t, 0, 1).base_sequence, 3);
    }

    #[test]
    fn chunks_respect_the_limit_and_rechunking_keeps_the_order() {
        let mut g = Group::new(Arc::from("t"), 0, 1);
        let records: Vec<Built> = (0..100).map(|i| built(i, "0123456789")).collect();
        let size = records[0].size;
        for b in records {
            g.push(b, 10 * size);
        }
        assert_eq!(g.chunks.len(), 10);
        // The first chunk was sent; the rest is split smaller, in order.
        g.chunks.pop_front();
        g.rechunk(3 * size);
        assert!(g.chunks.iter().all(|c| c.records.len() <= 3));
        let left: Vec<u64> = offsets(&g);
        assert_eq!(left, (10..100).collect::<Vec<u64>>());
        // A record larger than the limit still goes, alone.
        g.rechunk(size / 2);
        assert!(g.chunks.iter().all(|c| c.records.len() == 1));
        assert_eq!(g.chunks.len(), 90);
    }

    #[test]
    fn request_limit_halves_on_timeouts_and_grows_back() {
        let mut l = RequestLimit::new(1_000_000);
        l.shrink();
        assert_eq!(l.get(), 500_000);
        for _ in 0..20 {
            l.shrink();
        }
        assert_eq!(l.get(), MIN_REQUEST_BYTES);
        let mut rounds = 0;
        while l.get() < 1_000_000 {
            l.grow();
            rounds += 1;
        }
        assert_eq!((l.get(), rounds), (1_000_000, 8));
        // A configured maximum below the floor is kept.
        let mut small = RequestLimit::new(1_000);
        small.shrink();
        assert_eq!(small.get(), 1_000);
    }

    #[test]
    fn failures_needing_attention() {
        assert!(Failure::new("Sasl handshake failed: API error".into()).attention);
        assert!(Failure::new("invalid peer certificate: UnknownIssuer".into()).attention);
        assert!(!Failure::new("IO Error: Connection refused (os error 111)".into()).attention);
    }
}
