//! The trust store: pinned publisher keys and the revocation list.
//!
//! Layout of a trust directory (docs/trust.md):
//!
//! ```text
//! TRUSTDIR/<publisher>/<name>.pub   one or more minisign public keys per publisher
//! TRUSTDIR/revoked                  optional; key ids refused everywhere, one per line
//! ```
//!
//! Loading is strict: an unreadable or malformed key, a key id pinned twice, or an
//! unexpected file is an error naming the path, never skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::manifest::Slug;
use super::minisign::{KeyId, PublicKey, MAX_KEY_BYTES};

/// The name of the revocation list inside a trust directory.
pub const REVOKED_FILE: &str = "revoked";

/// Why a trust directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// Pinned keys by id and by publisher, and revoked key ids.
#[derive(Debug, Default)]
pub struct TrustStore {
    keys: HashMap<KeyId, (Slug, PublicKey)>,
    publishers: BTreeMap<Slug, Vec<KeyId>>,
    revoked: HashSet<KeyId>,
}

impl TrustStore {
    /// Loads every pinned key and the revocation list under `dir`.
    pub fn load(dir: &Path) -> Result<TrustStore, TrustError> {
        let mut store = TrustStore::default();
        for entry in read_dir_sorted(dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })?;
            if name == REVOKED_FILE && kind.is_file() {
                store.load_revoked(&path)?;
            } else if kind.is_dir() {
                let publisher = Slug::new(&name).map_err(|why| TrustError::Invalid {
                    path: path.clone(),
                    why: format!("publisher directory: {why}"),
                })?;
                store.load_publisher(publisher, &path)?;
            } else if !name.starts_with('.') && !name.starts_with("README") {
                return Err(TrustError::Invalid {
                    path,
                    why: "unexpected entry: keys live in <publisher>/<name>.pub, revocations in `revoked`"
                        .into(),
                });
            }
        }
        Ok(store)
    }

    fn load_publisher(&mut self, publisher: Slug, dir: &Path) -> Result<(), TrustError> {
        for entry in read_dir_sorted(dir)? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pub") {
                continue;
            }
            let key = PublicKey::parse(&read_capped(&path)?).map_err(|e| TrustError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })?;
            if let Some((other, _)) = self.keys.get(&key.key_id) {
                return Err(TrustError::Invalid {
                    path,
                    why: format!("key {} is already pinned for publisher {other}", key.key_id),
                });
            }
            self.publishers
                .entry(publisher.clone())
                .or_default()
                .push(key.key_id);
            self.keys.insert(key.key_id, (publisher.clone(), key));
        }
        Ok(())
    }

    fn load_revoked(&mut self, path: &Path) -> Result<(), TrustError> {
        for (n, line) in read_capped(path)?.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let id: KeyId = line.parse().map_err(|e| TrustError::Invalid {
                path: path.to_owned(),
                why: format!("line {}: {e}", n + 1),
            })?;
            self.revoked.insert(id);
        }
        Ok(())
    }

    /// The pinned key with this id and the publisher it is pinned for.
    pub fn key(&self, id: KeyId) -> Option<(&Slug, &PublicKey)> {
        self.keys.get(&id).map(|(p, k)| (p, k))
    }

    /// The ids of the keys pinned for `publisher` (empty when it is unknown).
    pub fn publisher_keys(&self, publisher: &Slug) -> &[KeyId] {
        self.publishers.get(publisher).map_or(&[], Vec::as_slice)
    }

    pub fn is_revoked(&self, id: KeyId) -> bool {
        self.revoked.contains(&id)
    }

    /// How many keys are pinned, across all publishers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, TrustError> {
    let err = |source| TrustError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn read_capped(path: &Path) -> Result<String, TrustError> {
    let meta = fs::metadata(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_KEY_BYTES as u64 {
        return Err(TrustError::Invalid {
            path: path.to_owned(),
            why: format!("larger than {MAX_KEY_BYTES} bytes"),
        });
    }
    fs::read_to_string(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::minisign::SecretKey;

    #[test]
    fn loads_publishers_rotation_and_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        fs::create_dir(dir.path().join("acme")).unwrap();
        fs::create_dir(dir.path().join("other")).unwrap();
        fs::write(dir.path().join("acme/2025.pub"), a.public().to_file()).unwrap();
        fs::write(dir.path().join("acme/2026.pub"), b.public().to_file()).unwrap();
        fs::write(dir.path().join("acme/notes.txt"), "ignored").unwrap();
        fs::write(dir.path().join("other/k.pub"), c.public().to_file()).unwrap();
        fs::write(
            dir.path().join(REVOKED_FILE),
            format!("# old\n{}  # leaked\n", a.key_id),
        )
        .unwrap();
        let t = TrustStore::load(dir.path()).unwrap();
        let acme = Slug::new("acme").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.publisher_keys(&acme).len(), 2);
        assert_eq!(t.key(c.key_id).unwrap().0.as_str(), "other");
        assert!(t.is_revoked(a.key_id) && !t.is_revoked(b.key_id));
        assert!(t.publisher_keys(&Slug::new("nobody").unwrap()).is_empty());
    }

    #[test]
    fn refuses_bad_keys_duplicates_and_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        fs::write(dir.path().join("acme/k.pub"), "garbage").unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("acme/k.pub") && e.contains("public key"), "{e}");

        let k = SecretKey::generate().unwrap();
        fs::write(dir.path().join("acme/k.pub"), k.public().to_file()).unwrap();
        fs::create_dir(dir.path().join("twin")).unwrap();
        fs::write(dir.path().join("twin/k.pub"), k.public().to_file()).unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("already pinned for publisher acme"), "{e}");

        fs::remove_dir_all(dir.path().join("twin")).unwrap();
        fs::write(dir.path().join("acme.pub"), k.public().to_file()).unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unexpected entry"), "{e}");

        fs::remove_file(dir.path().join("acme.pub")).unwrap();
        fs::write(dir.path().join(REVOKED_FILE), "nothex\n").unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
