//! warden: a Linux-native sandboxing supervisor for signed plugins.
//!
//! The library holds every layer (see docs/ and ../shared/DESIGN.md for the map);
//! the binary in `src/main.rs` only parses arguments and exits. Dependencies point
//! down: cli -> supervisor -> broker -> audit, store, bundle -> sys.

pub mod audit;
pub mod broker;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod control;
pub mod logsink;
pub mod policy;
pub mod sandbox;
pub mod store;
pub mod strict;
pub mod supervisor;
pub mod sys;
pub mod text;
