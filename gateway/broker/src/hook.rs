//! The durable-append hook: what makes "acknowledged" mean "on disk". The broker hands every
//! accepted PUBLISH (and every will) to it before anything else happens to the message; the
//! PUBACK/PUBREC and the delivery to subscribers wait until the hook's durability future
//! resolves. Batches from one connection are appended in order and their futures awaited in
//! order, so a client's messages keep their order.

use std::future::Future;
use std::pin::Pin;

use crate::message::Message;

/// One message to append, with the client that published it.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    pub message: &'a Message,
    /// Empty for in-process publishes.
    pub client_id: &'a str,
}

/// Why an append failed; the connection is closed unacknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PersistError(pub String);

/// Resolves once a batch is durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send>>;

/// Resolves once a batch is appended (in order), to its [`Durable`].
pub type Appending<'a> = Pin<Box<dyn Future<Output = Result<Durable, PersistError>> + Send + 'a>>;

/// The durable log behind the broker (the gateway's edge-buffer).
pub trait Persistence: Send + Sync + 'static {
    /// Appends `batch` in order. May wait (for space under backpressure); must not reorder
    /// against earlier calls from the same task.
    fn append<'a>(&'a self, batch: &'a [Accepted<'a>]) -> Appending<'a>;
}

/// Keeps nothing: every batch is "durable" at once. For tests and brokers without a log.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPersistence;

impl Persistence for NoPersistence {
    fn append<'a>(&'a self, _batch: &'a [Accepted<'a>]) -> Appending<'a> {
        Box::pin(async { Ok(Box::pin(async { Ok(()) }) as Durable) })
    }
}
