//! MQTT 3.1.1 and 5.0 packet codec.
//!
//! Why our own (docs/decisions/0001-mqtt-broker.md): one set of types for both versions,
//! payloads as zero-copy `Bytes`, and strict validation of everything the specifications call
//! malformed or a protocol error, each mapped to its MQTT 5 reason code.

mod packet;

pub use packet::*;
