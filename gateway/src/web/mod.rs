//! The web UI (web-core owns this module; web-ui only adds `assets`).

pub mod assets;
