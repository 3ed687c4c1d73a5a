//! Payload types generated from `gateway/proto/sparkplug_b.proto` (see `gateway/build.rs`).
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/sparkplug_b.rs"));
