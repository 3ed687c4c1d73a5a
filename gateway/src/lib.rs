//! The Ironbridge daemon's components. The data path: MQTT endpoint → edge-buffer → uplink.

pub mod audit;
pub mod clock;
pub mod config;
pub mod config_store;
pub mod daemon;
pub mod event;
pub mod log_format;
pub mod malloc;
pub mod modbus;
pub mod mqtt;
pub mod notify;
pub mod sparkplug;
pub mod state;
pub mod status;
pub mod uplink;
pub mod web;
