//! The Ironbridge daemon's components. The data path: MQTT broker tap → edge-buffer → uplink.

pub mod event;
pub mod mqtt;
pub mod uplink;
