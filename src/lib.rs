//! warden: a Linux-native sandboxing supervisor for signed plugins.
//!
//! The library holds every layer (see docs/ and ../shared/DESIGN.md for the map);
//! the binary in `src/main.rs` only parses arguments and exits. Dependencies point
//! down: cli -> bundle -> sys.

pub mod bundle;
pub mod cli;
pub mod policy;
pub mod sandbox;
pub mod sys;
