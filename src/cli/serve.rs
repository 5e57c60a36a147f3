//! `warden serve`: load and validate the service config, then hand over to the
//! supervisor until SIGTERM. Exit 0 after a clean stop, 1 with one line otherwise.

use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::config::{Config, DEFAULT_PATH};
use crate::supervisor::Supervisor;

/// Run the supervisor: watch the plugin directory, keep active plugins running
/// and healthy, serve host calls and the control socket (see docs/config.md).
///
/// SIGHUP rescans the plugin directory; SIGTERM or SIGINT stops every plugin
/// gracefully, flushes the audit log and exits 0.
#[derive(Args)]
pub struct ServeArgs {
    /// The service configuration file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and what serving needs before it starts (the
    /// trust directory loads, the plugin directory can be read), print the
    /// effective configuration (as JSON under the file's keys, defaults filled in,
    /// paths absolute; `null`: not set) and exit; 1 with one line when serve would
    /// refuse.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: ServeArgs) -> Result<(), Failure> {
    let cfg = Config::load(&a.config).map_err(Failure::general)?;
    if a.check {
        let trust = Supervisor::preflight(&cfg).map_err(Failure::general)?;
        let text = serde_json::to_string_pretty(&cfg.to_json()).unwrap_or_default();
        println!("{text}");
        println!(
            "config {}: ok ({} pinned keys)",
            cfg.source.display(),
            trust.len()
        );
        return Ok(());
    }
    let sup = Supervisor::new(cfg).map_err(Failure::general)?;
    sup.run().map_err(Failure::general)
}
