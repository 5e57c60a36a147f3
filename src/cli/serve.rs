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
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: ServeArgs) -> Result<(), Failure> {
    let cfg = Config::load(&a.config).map_err(Failure::general)?;
    if a.check {
        println!("{cfg:#?}");
        return Ok(());
    }
    let sup = Supervisor::new(cfg).map_err(Failure::general)?;
    sup.run().map_err(Failure::general)
}
