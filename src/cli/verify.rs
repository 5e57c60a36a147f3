//! `warden verify`: check a bundle against a trust directory and say so in one line.

use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::bundle::{self, TrustStore};

/// Verify a bundle: signature, pinned publisher key, manifest and artifact digest.
///
/// Prints `verified <id> <version> publisher=<p> key=<keyid> sha256=<hex>` and exits 0,
/// or prints `rejected: <code>: <detail>` on stderr and exits 1. The codes are listed
/// in docs/manifest.md.
#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle directory (manifest.json, manifest.json.minisig, artifact).
    pub dir: PathBuf,
    /// The trust directory: <publisher>/<name>.pub keys and an optional `revoked` list.
    #[arg(long, value_name = "TRUSTDIR")]
    pub trust: PathBuf,
}

pub fn run(a: VerifyArgs) -> Result<(), Failure> {
    let trust = load_trust(&a.trust)?;
    let b = bundle::verify(&a.dir, &trust).map_err(|e| Failure::rejected(&e, 1))?;
    let m = b.manifest();
    println!(
        "verified {} {} publisher={} key={} sha256={}",
        m.id,
        m.version,
        m.publisher,
        b.key_id(),
        b.sha256()
    );
    Ok(())
}

/// Loads a trust directory, as every command that verifies does.
pub fn load_trust(dir: &std::path::Path) -> Result<TrustStore, Failure> {
    TrustStore::load(dir).map_err(|e| Failure::general(format_args!("trust store: {e}")))
}
