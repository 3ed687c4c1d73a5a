//! Modbus TCP and RTU.
//!
//! * [`config`]: the operator's device and tag model (`[[modbus.devices]]` in the gateway's
//!   TOML), validated into [`Device`]s with errors that name the field.
//! * [`codec`]: pure encode/decode of every data type × word order.
//! * [`plan`]: block-read coalescing into as few requests as possible, printable for
//!   `check-config`.
//! * [`poller`]: polls devices and emits [`Reading`]s (report by exception + heartbeat) on a
//!   bounded channel; per-device health; writes through [`PollerHandle::write`].
//! * [`sim`]: a Modbus TCP (and RTU) server simulator with fault injection.

pub mod codec;
pub mod config;
mod link;
pub use link::{CallError, Client};
pub mod pdu;
pub mod plan;
pub mod poller;
pub mod probe;
pub mod sim;

pub use codec::{DataType, Value, ValueKind, WordOrder};
pub use config::{
    Access, Area, ConfigIssue, Deadband, Device, DeviceConfig, ModbusConfig, Parity, PollGroup,
    Tag, TagConfig, Transport,
};
pub use plan::{DevicePlan, PlanOptions, ReadBlock};
pub use poller::{
    BadReason, DeviceHealth, LinkState, Poller, PollerHandle, Quality, Reading, WriteError,
    WriteOutcome,
};
