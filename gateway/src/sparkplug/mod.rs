//! Sparkplug B (Eclipse Sparkplug 3.0): the edge node for the gateway's Modbus devices, ingest
//! of third-party edge nodes publishing to the embedded broker, and the command path back to
//! the PLC.
//!
//! One protobuf runtime: prost, with types generated at build time from
//! `gateway/proto/sparkplug_b.proto` by protox (no system `protoc`). `sparkplug-rs` is not used:
//! its payload types are generated for the `protobuf` crate, which would put a second protobuf
//! runtime in the binary, and the part that would remain (topic parsing) is `topic.rs`.

pub mod audit;
pub mod births;
pub mod config;
pub mod ingest;
pub mod node;
pub mod payload;
pub mod proto;
pub mod topic;

pub use config::SparkplugConfig;
pub use topic::{MessageType, Topic, TopicError};
