//! A tiny systemd notifier: datagrams to `$NOTIFY_SOCKET` (`READY=1`, `STATUS=`,
//! `STOPPING=1`, `RELOADING=1`, `WATCHDOG=1`) and the watchdog interval from
//! `$WATCHDOG_USEC`. No libsystemd. Absent variables make every call a no-op, so
//! `warden serve` behaves the same outside systemd.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name).ok()?
            } else {
                SocketAddr::from_pathname(std::path::Path::new(&p)).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the configured interval).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends one notification; failures are ignored (systemd may be gone).
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            let _ = sock.send_to_addr(msg.as_bytes(), addr);
        }
    }
}
