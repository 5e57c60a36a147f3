//! Shared bits of the example plugins: argument handling and connecting.

use std::time::Duration;

/// `--every SECS` makes an example repeat its work until warden asks it to stop;
/// without it the example does its work once and exits. Other arguments are
/// returned in order.
pub fn args() -> (Option<Duration>, Vec<String>) {
    let mut every = None;
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--every" {
            let secs: f64 = it
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| fail("--every needs a number of seconds"));
            every = Some(Duration::from_secs_f64(secs));
        } else {
            rest.push(a);
        }
    }
    (every, rest)
}

/// Connects to warden (saying hello with the version of the manifest warden
/// verified, so a manifest bump needs no rebuild) or exits with a clear message.
pub fn connect() -> warden_plugin::Client {
    warden_plugin::Client::connect_verified()
        .unwrap_or_else(|e| fail(&format!("cannot reach warden: {e}")))
}

pub fn fail(msg: &str) -> ! {
    eprintln!("{}: {msg}", std::env::args().next().unwrap_or_default());
    std::process::exit(2)
}
