//! `warden-plugin`: the plugin side of warden's broker protocol.
//!
//! This crate must never depend on the supervisor crate; it speaks only the wire
//! protocol documented in `docs/protocol.md`. The handshake and typed calls arrive
//! with the broker issue; until then the crate only exposes the protocol constants.

/// The environment variable that names the plugin's end of the broker socket.
pub const FD_ENV: &str = "WARDEN_FD";
/// The environment variable that carries the plugin's id.
pub const ID_ENV: &str = "WARDEN_PLUGIN_ID";
