//! MQTT 3.1.1 and 5.0 packet codec.
//!
//! Why our own (docs/decisions/0001-mqtt-broker.md): one set of types for both versions,
//! payloads as zero-copy `Bytes`, and strict validation of everything the specifications call
//! malformed or a protocol error, each mapped to its MQTT 5 reason code.
//!
//! Left to the broker and the topic module, which have the state for them: topic name and filter
//! syntax (wildcards, an empty topic without an alias, the response topic), topic alias values
//! (0, above the maximum), subscription identifiers on a client's PUBLISH, no-local on a shared
//! subscription, a DISCONNECT's session expiry after a CONNECT's 0, AUTH methods, and packet
//! identifiers beyond their being nonzero.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod read;
mod spec;

#[cfg(test)]
mod tests;

pub use decode::{Decoder, decode_packet};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use spec::MAX_REMAINING_LENGTH;
