//! Signed plugin bundles: the manifest, the closed capability list, minisign keys
//! and signatures, the trust store, and verification into a [`VerifiedBundle`].
//!
//! Nothing outside this module can construct a `VerifiedBundle`; everything that
//! launches a plugin takes one. This module does not launch, sandbox or talk to
//! plugins.

pub mod capability;
pub mod manifest;
pub mod minisign;
pub mod trust;
pub mod verify;

pub use capability::Capability;
pub use manifest::Manifest;
pub use trust::TrustStore;
pub use verify::{verify, VerifiedBundle, VerifyError};

use std::ffi::CStr;

/// The signed manifest inside a bundle directory.
pub const MANIFEST_FILE: &CStr = c"manifest.json";
/// The detached minisign signature of the manifest.
pub const SIGNATURE_FILE: &CStr = c"manifest.json.minisig";
/// The executable the manifest pins by sha256.
pub const ARTIFACT_FILE: &CStr = c"artifact";
