//! Bundle verification: the only way to obtain a [`VerifiedBundle`].
//!
//! The bundle directory is opened once as an `O_PATH` handle and every file is read
//! through it with `O_NOFOLLOW`, under a size cap. The signature is checked against
//! the pinned key before the manifest's claims are trusted; the artifact is copied
//! into a memfd while it is hashed, and the memfd is sealed before the digest is
//! compared. What is launched later is that sealed memfd, never the path.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ManifestError, Sha256Hex, Slug, MAX_MANIFEST_BYTES};
use super::minisign::{KeyId, MinisignError, PublicKey, SignatureFile, MAX_SIGNATURE_BYTES};
use super::trust::TrustStore;
use super::{ARTIFACT_FILE, MANIFEST_FILE, SIGNATURE_FILE};
use crate::sys;

/// The largest artifact accepted, in bytes.
pub const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;

const COPY_CHUNK: usize = 1024 * 1024;

/// Why a bundle was refused. Each variant has a stable code (see [`VerifyError::code`])
/// that scripts and tests rely on; the message is the human detail.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {why}")]
    BadBundle { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    BadManifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("{path}: {source}")]
    UnknownCapability {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("{id} {version} needs warden >= {min_core}, this is {core}")]
    MinCoreTooNew {
        id: String,
        version: String,
        min_core: String,
        core: String,
    },
    #[error("{path}: {why}")]
    BadArtifact { path: PathBuf, why: String },
    #[error("{path}: sha256 is {actual}, the manifest pins {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: Sha256Hex,
        actual: Sha256Hex,
    },
    #[error("publisher {publisher} of {id} has no pinned key in the trust store")]
    UnknownPublisher { publisher: String, id: String },
    #[error("{id} is signed by key {key_id}, which is not pinned for publisher {publisher}{}",
        .pinned_for.as_ref().map(|p| format!(" (it is pinned for {p})")).unwrap_or_default())]
    KeyMismatch {
        id: String,
        key_id: KeyId,
        publisher: String,
        pinned_for: Option<String>,
    },
    #[error("{path} is signed by key {key_id}, which is revoked")]
    RevokedKey { path: PathBuf, key_id: KeyId },
    #[error("{path}: {source}")]
    BadSignature {
        path: PathBuf,
        source: MinisignError,
    },
    #[error("{path}: {source}")]
    BadGlobalSignature {
        path: PathBuf,
        source: MinisignError,
    },
}

impl VerifyError {
    /// The stable rejection code printed as `rejected: <code>: <detail>`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::BadBundle { .. } => "bad_bundle",
            VerifyError::BadManifest { .. } => "bad_manifest",
            VerifyError::UnknownCapability { .. } => "unknown_capability",
            VerifyError::MinCoreTooNew { .. } => "min_core_too_new",
            VerifyError::BadArtifact { .. } => "bad_artifact",
            VerifyError::DigestMismatch { .. } => "digest_mismatch",
            VerifyError::UnknownPublisher { .. } => "unknown_publisher",
            VerifyError::KeyMismatch { .. } => "key_mismatch",
            VerifyError::RevokedKey { .. } => "revoked_key",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::BadGlobalSignature { .. } => "bad_global_signature",
        }
    }
}

/// A bundle whose signature, manifest and artifact digest all checked out. It owns
/// the sealed memfd holding the verified artifact bytes: the only thing that may be
/// executed for this plugin.
#[derive(Debug)]
pub struct VerifiedBundle {
    manifest: Manifest,
    key_id: KeyId,
    sha256: Sha256Hex,
    dir: PathBuf,
    dir_fd: OwnedFd,
    artifact: File,
    artifact_len: u64,
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The id of the pinned key that signed the manifest.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The digest of the artifact bytes held in the memfd.
    pub fn sha256(&self) -> Sha256Hex {
        self.sha256
    }

    /// The bundle directory as given (for messages; never re-opened for the artifact).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether [`VerifiedBundle::dir`] still names the directory verified (the
    /// one [`VerifiedBundle::dir_fd`] holds): not so once an atomic deploy has
    /// pointed the path elsewhere, or the directory was replaced. A sandbox only
    /// binds the directory verified.
    pub fn still_at_its_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.dir), sys::fs::fstat(self.dir_fd())) {
            (Ok(now), Ok(then)) => (now.dev(), now.ino()) == (then.st_dev, then.st_ino),
            _ => false,
        }
    }

    /// The `O_PATH` handle of the bundle directory taken at verification time.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir_fd.as_fd()
    }

    /// The sealed memfd holding the verified artifact (close-on-exec).
    pub fn artifact_fd(&self) -> BorrowedFd<'_> {
        self.artifact.as_fd()
    }

    pub fn artifact_len(&self) -> u64 {
        self.artifact_len
    }
}

/// Verifies the bundle in `dir` against `trust`.
// The error is large but built once per refused bundle, never on a hot path.
#[allow(clippy::result_large_err)]
/// The refusal of a manifest signed by key `key_id`, which no publisher pins, and
/// that does not even parse: unknown publisher or key mismatch, by what its
/// `publisher` field names if it names one (shown escaped, as it is untrusted).
fn unauthenticated(bytes: &[u8], key_id: KeyId, trust: &TrustStore) -> VerifyError {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let field = |k: &str| {
        v[k].as_str()
            .map_or_else(|| "?".to_owned(), crate::text::printable)
    };
    let (publisher, id) = (field("publisher"), field("id"));
    let pinned = crate::bundle::manifest::Slug::new(&publisher)
        .is_ok_and(|p| !trust.publisher_keys(&p).is_empty());
    if pinned {
        VerifyError::KeyMismatch {
            id,
            key_id,
            publisher,
            pinned_for: None,
        }
    } else {
        VerifyError::UnknownPublisher { publisher, id }
    }
}

/// Whether the key `key_id` (pinned for `signer`'s publisher, if at all) may
/// sign for `publisher`'s plugin `id`.
fn signed_for(
    publisher: &Slug,
    id: &str,
    key_id: KeyId,
    signer: Option<(&Slug, &PublicKey)>,
    trust: &TrustStore,
) -> Result<(), VerifyError> {
    match signer {
        Some((p, _)) if p == publisher => Ok(()),
        _ if trust.publisher_keys(publisher).is_empty() => Err(VerifyError::UnknownPublisher {
            publisher: publisher.to_string(),
            id: id.to_owned(),
        }),
        _ => Err(VerifyError::KeyMismatch {
            id: id.to_owned(),
            key_id,
            publisher: publisher.to_string(),
            pinned_for: signer.map(|(p, _)| p.to_string()),
        }),
    }
}

pub fn verify(dir: &Path, trust: &TrustStore) -> Result<VerifiedBundle, VerifyError> {
    let in_dir = |name: &CStr| dir.join(name.to_str().expect("ASCII name"));
    let dir_fd = sys::fs::open_dir_path(dir).map_err(|e| VerifyError::BadBundle {
        path: dir.to_owned(),
        why: format!("cannot open bundle directory: {e}"),
    })?;

    let manifest_path = in_dir(MANIFEST_FILE);
    let manifest_bytes = read_capped(dir_fd.as_fd(), MANIFEST_FILE, MAX_MANIFEST_BYTES as u64)
        .map_err(|why| VerifyError::BadManifest {
            path: manifest_path.clone(),
            source: ManifestError::Unreadable(why),
        })?;
    let sig_path = in_dir(SIGNATURE_FILE);
    let sig = read_capped(dir_fd.as_fd(), SIGNATURE_FILE, MAX_SIGNATURE_BYTES as u64)
        .map_err(MinisignError::Io)
        .and_then(|bytes| SignatureFile::parse(&bytes))
        .map_err(|source| VerifyError::BadSignature {
            path: sig_path.clone(),
            source,
        })?;

    // Authenticate the bytes before believing anything they say, when we can: a key
    // we pin signs for exactly one publisher. In docs/manifest.md's order: a bad
    // signature, then a revoked key, then an altered trusted comment.
    let signer = trust.key(sig.key_id);
    let checked = signer.map(|(_, key)| key.verify(&manifest_bytes, &sig));
    if let Some(Err(source)) = checked {
        if !matches!(source, MinisignError::BadGlobalSignature(_)) {
            return Err(VerifyError::BadSignature {
                path: sig_path,
                source,
            });
        }
        if !trust.is_revoked(sig.key_id) {
            return Err(VerifyError::BadGlobalSignature {
                path: sig_path,
                source,
            });
        }
    }
    if trust.is_revoked(sig.key_id) {
        return Err(VerifyError::RevokedKey {
            path: sig_path,
            key_id: sig.key_id,
        });
    }
    let parsed = Manifest::parse(&manifest_bytes);
    if let (Err(_), None) = (&parsed, signer) {
        // Not authenticated, and not valid: the key decides the refusal, not what
        // the unverified text says wrong (docs/manifest.md's order).
        return Err(unauthenticated(&manifest_bytes, sig.key_id, trust));
    }
    let manifest = parsed.map_err(|source| match source {
        ManifestError::UnknownCapability(_) | ManifestError::DuplicateCapability(_) => {
            // The key is judged before the capabilities (docs/manifest.md's
            // order): a publisher the rest of the text names that this key is
            // not pinned for is the refusal.
            let v: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap_or_default();
            let claimed = v["publisher"].as_str().and_then(|p| Slug::new(p).ok());
            let id = v["id"]
                .as_str()
                .map_or_else(|| "?".into(), crate::text::printable);
            match claimed.map(|p| signed_for(&p, &id, sig.key_id, signer, trust)) {
                Some(Err(e)) => e,
                _ => VerifyError::UnknownCapability {
                    path: manifest_path.clone(),
                    source,
                },
            }
        }
        _ => VerifyError::BadManifest {
            path: manifest_path.clone(),
            source,
        },
    })?;
    signed_for(
        &manifest.publisher,
        manifest.id.as_str(),
        sig.key_id,
        signer,
        trust,
    )?;
    if manifest.needs_newer_core() {
        return Err(VerifyError::MinCoreTooNew {
            id: manifest.id.to_string(),
            version: manifest.version.to_string(),
            min_core: manifest.min_core.to_string(),
            core: Manifest::core_version().to_string(),
        });
    }

    let artifact_path = in_dir(ARTIFACT_FILE);
    let bad_artifact = |why: String| VerifyError::BadArtifact {
        path: artifact_path.clone(),
        why,
    };
    let (memfd, len, digest) = copy_artifact(dir_fd.as_fd()).map_err(bad_artifact)?;
    if digest != manifest.artifact.sha256 {
        return Err(VerifyError::DigestMismatch {
            path: artifact_path,
            expected: manifest.artifact.sha256,
            actual: digest,
        });
    }
    Ok(VerifiedBundle {
        manifest,
        key_id: sig.key_id,
        sha256: digest,
        dir: dir.to_owned(),
        dir_fd,
        artifact: memfd,
        artifact_len: len,
    })
}

/// Reads an artifact file the way verification does (no symlinks, regular files
/// only, size cap) and returns its bytes and digest, for `warden pack`.
pub fn read_artifact_file(path: &Path) -> Result<(Vec<u8>, Sha256Hex), String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| "not a file name".to_owned())?;
    let dir = sys::fs::open_dir_path(parent).map_err(|e| format!("cannot open directory: {e}"))?;
    let cname = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|_| "name contains NUL".to_owned())?;
    let bytes = read_capped(dir.as_fd(), &cname, MAX_ARTIFACT_BYTES)?;
    let digest = Sha256Hex(Sha256::digest(&bytes).into());
    Ok((bytes, digest))
}

/// Reads the artifact once into a new memfd while hashing it, then seals the memfd.
fn copy_artifact(dir: BorrowedFd<'_>) -> Result<(File, u64, Sha256Hex), String> {
    let mut src = open_regular(dir, ARTIFACT_FILE, MAX_ARTIFACT_BYTES)?;
    let mut memfd = sys::fs::memfd_create(c"warden-artifact")
        .map_err(|e| format!("cannot create memfd: {e}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = read_some(&mut src, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_ARTIFACT_BYTES {
            return Err(format!(
                "grew past the {MAX_ARTIFACT_BYTES}-byte limit while being read"
            ));
        }
        hasher.update(&buf[..n]);
        memfd
            .write_all(&buf[..n])
            .map_err(|e| format!("cannot copy into memfd: {e}"))?;
    }
    sys::fs::add_seals(memfd.as_fd(), sys::fs::SEALS_IMMUTABLE)
        .map_err(|e| format!("cannot seal memfd: {e}"))?;
    Ok((memfd, total, Sha256Hex(hasher.finalize().into())))
}

/// Opens `name` in `dir` without following links and checks it is a regular file no
/// larger than `cap`.
fn open_regular(dir: BorrowedFd<'_>, name: &CStr, cap: u64) -> Result<File, String> {
    let file = sys::fs::openat_nofollow(dir, name).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => "is a symbolic link; bundles must hold regular files".to_owned(),
        Some(libc::ENOENT) => "is missing".to_owned(),
        _ => format!("cannot open: {e}"),
    })?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.len() > cap {
        return Err(format!(
            "is {} bytes, more than the {cap}-byte limit",
            meta.len()
        ));
    }
    Ok(file)
}

fn read_some(file: &mut File, buf: &mut [u8]) -> Result<usize, String> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// Reads a whole regular file of at most `cap` bytes, refusing one that grows past it.
fn read_capped(dir: BorrowedFd<'_>, name: &CStr, cap: u64) -> Result<Vec<u8>, String> {
    let file = open_regular(dir, name, cap)?;
    let mut out = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("read failed: {e}"))?;
    if out.len() as u64 > cap {
        return Err(format!("grew past the {cap}-byte limit while being read"));
    }
    Ok(out)
}
