//! Field protocol adapters for Ironbridge.
//!
//! [`modbus`]: Modbus TCP and RTU — a typed device/tag model loaded from TOML, value
//! encoding for every data type and word order, a block-read coalescing planner, a poller
//! (concurrent TCP endpoints, one-request-at-a-time serial buses) that reports typed readings
//! with quality by exception, writes, and a simulator for tests and `--demo`.

pub mod modbus;
