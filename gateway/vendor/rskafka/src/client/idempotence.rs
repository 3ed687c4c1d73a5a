//! Idempotent produce (KIP-98, without transactions).
//!
//! A producer asks the cluster once for a [`ProducerIdentity`] (InitProducerId) and stamps every
//! batch with it and a per-partition sequence number ([`ProducerSequences`]). The partition
//! leader keeps, per producer and partition, the sequence it expects next: a batch sent again
//! (after a timeout or a broken connection) is recognised as a duplicate instead of being
//! appended twice, and a batch that would leave a gap is refused. A batch must be resent with
//! exactly the stamp and records it was first sent with.
//!
//! When the leader no longer knows the producer (`UNKNOWN_PRODUCER_ID`), expects another
//! sequence (`OUT_OF_ORDER_SEQUENCE_NUMBER`) or another epoch, the batch was not written: the
//! producer takes a new identity (an "epoch bump", see [`Client::init_producer_id`]) and
//! restarts every partition's sequence at 0 ([`needs_new_identity`]).
//!
//! # References
//! - <https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging>
//! - <https://cwiki.apache.org/confluence/display/KAFKA/KIP-360%3A+Improve+reliability+of+idempotent%2Ftransactional+producer>

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use tracing::{error, info};

use crate::{
    backoff::{Backoff, ErrorOrThrottle},
    client::error::{Error, RequestContext, Result},
    connection::BrokerCache,
    messenger::RequestError,
    protocol::{
        error::Error as ProtocolError,
        messages::InitProducerIdRequest,
        primitives::{Int16, Int32, Int64, NullableString},
    },
    throttle::maybe_throttle,
};

use super::Client;

/// Producer id and epoch assigned by the cluster (InitProducerId).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
}

/// Where a batch stands in its producer's sequence for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceStamp {
    pub producer: ProducerIdentity,
    /// Sequence number of the batch's first record; the others follow one by one.
    pub base_sequence: i32,
}

/// The leader's answer to an idempotent produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotentAck {
    /// The records were appended, the first at this offset.
    Appended { base_offset: i64 },
    /// The leader had already appended this batch (`DUPLICATE_SEQUENCE_NUMBER`; Apache Kafka
    /// instead answers a duplicate of one of the last five batches with its original offset).
    Duplicate,
}

/// Sequence numbers wrap from `i32::MAX` to 0 (Kafka's `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// The next sequence number of every partition for one producer identity.
#[derive(Debug)]
pub struct ProducerSequences {
    identity: ProducerIdentity,
    next: HashMap<(Arc<str>, i32), i32>,
}

impl ProducerSequences {
    /// Every partition starts at sequence 0 for a new identity.
    pub fn new(identity: ProducerIdentity) -> Self {
        Self {
            identity,
            next: HashMap::new(),
        }
    }

    pub fn identity(&self) -> ProducerIdentity {
        self.identity
    }

    /// Reserves the sequence numbers of a batch of `records` records for `topic`/`partition`.
    pub fn stamp(&mut self, topic: &Arc<str>, partition: i32, records: usize) -> SequenceStamp {
        let next = self.next.entry((Arc::clone(topic), partition)).or_insert(0);
        let base_sequence = *next;
        let n = i32::try_from(records).unwrap_or(i32::MAX);
        *next = increment_sequence(base_sequence, n);
        SequenceStamp {
            producer: self.identity,
            base_sequence,
        }
    }

    /// Gives back the numbers of the last batch stamped for `topic`/`partition`, which the
    /// leader refused for good (too large, invalid): the batch sent in its place starts there.
    /// Returns false (and changes nothing) if `stamp` is not that batch's.
    pub fn release(&mut self, topic: &Arc<str>, partition: i32, stamp: SequenceStamp, records: usize) -> bool {
        if stamp.producer != self.identity {
            return false;
        }
        let Some(next) = self.next.get_mut(&(Arc::clone(topic), partition)) else {
            return false;
        };
        let n = i32::try_from(records).unwrap_or(i32::MAX);
        if increment_sequence(stamp.base_sequence, n) != *next {
            return false;
        }
        *next = stamp.base_sequence;
        true
    }
}

/// True if the leader refused a batch because of its producer stamp: the batch was not
/// written, and the producer needs a new identity before it sends again.
pub fn needs_new_identity(e: &ProtocolError) -> bool {
    matches!(
        e,
        ProtocolError::OutOfOrderSequenceNumber
            | ProtocolError::UnknownProducerId
            | ProtocolError::InvalidProducerEpoch
            | ProtocolError::ProducerFenced
            | ProtocolError::InvalidProducerIdMapping
    )
}

impl Client {
    /// Asks the cluster for a new idempotent producer identity (InitProducerId without a
    /// transactional id, producer id and epoch -1).
    ///
    /// This is also how to bump the epoch after a sequence error: KIP-360's in-place bump
    /// (InitProducerId with the current id and epoch) is not answered by every
    /// Kafka-protocol broker (tansu 0.6 has no such path), and a fresh identity has the same
    /// effect for a producer without transactions: its sequences restart at 0.
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity> {
        let request = &InitProducerIdRequest {
            transactional_id: NullableString(None),
            transaction_timeout_ms: Int32(60_000),
            producer_id: Int64(-1),
            producer_epoch: Int16(-1),
        };
        let brokers = &*self.brokers;
        let mut backoff = Backoff::new(&self.backoff_config);
        let identity = backoff
            .retry_with_backoff("init_producer_id", || async move {
                let attempt = async {
                    let (broker, r#gen) = brokers
                        .get()
                        .await
                        .map_err(|e| ErrorOrThrottle::Error((Error::from(e), None)))?;
                    let response = broker
                        .request(request)
                        .await
                        .map_err(|e| ErrorOrThrottle::Error((e.into(), Some(r#gen))))?;
                    maybe_throttle(Some(response.throttle_time_ms))?;
                    match response.error {
                        Some(e) => Err(ErrorOrThrottle::Error((
                            Error::ServerError {
                                protocol_error: e,
                                error_message: None,
                                request: RequestContext::Topic(String::new()),
                                response: None,
                                is_virtual: false,
                            },
                            Some(r#gen),
                        ))),
                        None => Ok(ProducerIdentity {
                            id: response.producer_id.0,
                            epoch: response.producer_epoch.0,
                        }),
                    }
                };
                let (error, cache_gen) = match attempt.await {
                    Ok(identity) => return ControlFlow::Break(Ok(identity)),
                    Err(ErrorOrThrottle::Throttle(t)) => {
                        return ControlFlow::Continue(ErrorOrThrottle::Throttle(t));
                    }
                    Err(ErrorOrThrottle::Error(e)) => e,
                };
                match &error {
                    Error::Request(RequestError::Poisoned(_) | RequestError::IO(_))
                    | Error::Connection(_) => {
                        if let Some(cache_gen) = cache_gen {
                            brokers
                                .invalidate("init_producer_id: connection broken", cache_gen)
                                .await;
                        }
                    }
                    // The broker is still loading its producer id block (KIP-730).
                    Error::ServerError {
                        protocol_error:
                            ProtocolError::CoordinatorLoadInProgress
                            | ProtocolError::NotCoordinator
                            | ProtocolError::CoordinatorNotAvailable
                            | ProtocolError::ConcurrentTransactions,
                        ..
                    } => {}
                    _ => {
                        error!(e = %error, "init_producer_id: fatal error");
                        return ControlFlow::Break(Err(error));
                    }
                }
                ControlFlow::Continue(ErrorOrThrottle::Error(error))
            })
            .await
            .map_err(Error::RetryFailed)??;
        info!(
            producer_id = identity.id,
            producer_epoch = identity.epoch,
            "idempotent producer identity"
        );
        Ok(identity)
    }
}
