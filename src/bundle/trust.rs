//! The trust store: pinned publisher keys and the revocation list.
//!
//! Layout of a trust directory (docs/trust.md):
//!
//! ```text
//! TRUSTDIR/<publisher>/<name>.pub   one or more minisign public keys per publisher
//! TRUSTDIR/revoked                  optional; key ids refused everywhere, one per line
//! ```
//!
//! Loading is strict: an unreadable or malformed key, a key id pinned twice, an
//! unexpected file, or anything every user may write (the directory, a publisher
//! directory, a key, the revocation list) is an error naming the path, never
//! skipped. Names starting with `.` (`.git`, `.keep`) are ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::manifest::Slug;
use super::minisign::{KeyId, PublicKey, MAX_KEY_BYTES};

/// The name of the revocation list inside a trust directory.
pub const REVOKED_FILE: &str = "revoked";

/// The largest revocation list read, in bytes (tens of thousands of key ids).
pub const MAX_REVOKED_BYTES: usize = 1 << 20;

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
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })?;
            if name == REVOKED_FILE {
                // Whatever it is: read if it is (or links to) a regular file,
                // refused otherwise, never taken for a publisher's directory.
                store.revoked.extend(revocations(&path)?);
            } else if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
                // A symlink to a directory is one too (a ConfigMap lays out
                // `acme -> ..data/acme`); its target is read and checked.
                let publisher = Slug::new(&name).map_err(|why| TrustError::Invalid {
                    path: path.clone(),
                    why: format!("publisher directory: {why}"),
                })?;
                store.load_publisher(publisher, &path)?;
            } else if !name.starts_with("README") {
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
            let text = read_capped(&path, MAX_KEY_BYTES)?;
            let key = PublicKey::parse(&text).map_err(|e| TrustError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })?;
            // The same key under another id is the same key: pinned twice.
            let twice = self.keys.get(&key.key_id).or_else(|| {
                self.keys
                    .values()
                    .find(|(_, k)| k.key.as_bytes() == key.key.as_bytes())
            });
            if let Some((other, _)) = twice {
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

    /// Adds the revocations of `dir`'s list, as far as it can be read, to these
    /// keys: for a reload whose full load failed, since a revocation must take
    /// effect whatever else is wrong in the directory.
    pub fn revoke_from(&mut self, dir: &Path) -> Result<usize, TrustError> {
        let path = dir.join(REVOKED_FILE);
        if !path.exists() {
            return Ok(0);
        }
        let ids = revocations(&path)?;
        let n = ids.len();
        self.revoked.extend(ids);
        Ok(n)
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

/// The entries of a trust directory (the top one or a publisher's), which must
/// not be writable by every user, sorted by name.
fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, TrustError> {
    let err = |source| TrustError::Read {
        path: dir.to_owned(),
        source,
    };
    not_world_writable(dir, &fs::metadata(dir).map_err(err)?)?;
    let mut entries = fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The key ids listed in a revocation list file.
fn revocations(path: &Path) -> Result<HashSet<KeyId>, TrustError> {
    let mut ids = HashSet::new();
    for (n, line) in read_capped(path, MAX_REVOKED_BYTES)?.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let id: KeyId = line.parse().map_err(|e| TrustError::Invalid {
            path: path.to_owned(),
            why: format!("line {}: {e}", n + 1),
        })?;
        ids.insert(id);
    }
    Ok(ids)
}

/// Refuses what every user may write: whoever can change it can change whom
/// warden trusts.
fn not_world_writable(path: &Path, meta: &fs::Metadata) -> Result<(), TrustError> {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(TrustError::Invalid {
            path: path.to_owned(),
            why: "every user may write it; refusing to trust what it holds (chmod o-w)".into(),
        });
    }
    Ok(())
}

/// Reads a small regular file: never a fifo or device (opened without blocking,
/// then checked), at most `max` bytes. A symlink to a regular file is read (a
/// Kubernetes ConfigMap or NixOS /etc lays keys out so); the checks apply to
/// what it points at.
fn read_capped(path: &Path, max: usize) -> Result<String, TrustError> {
    use crate::strict::{self, ReadError};
    let err = |e: ReadError| match e {
        ReadError::Io(source) => TrustError::Read {
            path: path.to_owned(),
            source,
        },
        e => TrustError::Invalid {
            path: path.to_owned(),
            why: e.to_string(),
        },
    };
    let (file, meta) = strict::open_regular(path).map_err(err)?;
    not_world_writable(path, &meta)?;
    let bytes = strict::read_capped(file, max as u64).map_err(err)?;
    String::from_utf8(bytes).map_err(|_| TrustError::Invalid {
        path: path.to_owned(),
        why: "not UTF-8 text".into(),
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
        // The same key under another key id is still the same key.
        let renamed = PublicKey {
            key_id: "0123456789ABCDEF".parse().unwrap(),
            key: k.public().key,
        };
        assert_ne!(renamed.key_id, k.key_id);
        fs::write(dir.path().join("twin/k.pub"), renamed.to_file()).unwrap();
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
        // A sign is not a hex digit (from_str_radix would take `+` and 15 digits).
        fs::write(dir.path().join(REVOKED_FILE), "+34E7681CC01A989\n").unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("16 hex digits"), "{e}");
    }

    /// A `revoked` directory (one file per revoked key, say) is refused as not a
    /// regular file, not taken for a publisher named "revoked" (which revoked
    /// nothing).
    #[test]
    fn revoked_as_a_directory_is_refused_not_a_publisher() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        fs::write(dir.path().join("acme/k.pub"), k.public().to_file()).unwrap();
        fs::create_dir(dir.path().join(REVOKED_FILE)).unwrap();
        fs::write(
            dir.path().join(REVOKED_FILE).join("leaked"),
            format!("{}\n", k.key_id),
        )
        .unwrap();
        match TrustStore::load(dir.path()) {
            Err(e) => assert!(e.to_string().contains("revoked"), "{e}"),
            Ok(t) => panic!(
                "loaded without error; key {} revoked: {}",
                k.key_id,
                t.is_revoked(k.key_id)
            ),
        }
    }

    /// A `revoked` symlink to a regular file (the ConfigMap layout) is read, on
    /// load as on reload (it was refused as an unexpected entry on load).
    #[test]
    fn revoked_symlink_to_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        fs::write(dir.path().join("acme/k.pub"), k.public().to_file()).unwrap();
        fs::create_dir(dir.path().join("..data")).unwrap();
        fs::write(dir.path().join("..data/revoked"), format!("{}\n", k.key_id)).unwrap();
        std::os::unix::fs::symlink("..data/revoked", dir.path().join(REVOKED_FILE)).unwrap();
        let t = TrustStore::load(dir.path()).unwrap();
        assert!(t.is_revoked(k.key_id));
    }

    /// A publisher directory that is a symlink to a directory (a Kubernetes
    /// ConfigMap with `acme/k.pub` items lays out `acme -> ..data/acme`) is read
    /// as that publisher's keys: it was refused as an unexpected entry. A symlink
    /// to a file is still one.
    #[test]
    fn publisher_directory_symlink_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        fs::create_dir_all(dir.path().join("..data/acme")).unwrap();
        fs::write(dir.path().join("..data/acme/k.pub"), k.public().to_file()).unwrap();
        std::os::unix::fs::symlink("..data/acme", dir.path().join("acme")).unwrap();
        let t = TrustStore::load(dir.path()).unwrap();
        assert_eq!(t.key(k.key_id).unwrap().0.as_str(), "acme");
        std::os::unix::fs::symlink("..data/acme/k.pub", dir.path().join("stray")).unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("stray") && e.contains("unexpected entry"), "{e}");
    }

    /// A fifo, or a symlink to a device, named like a key is refused at once,
    /// not waited on or read without end.
    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        let fifo = dir.path().join("acme/f.pub");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("f.pub") && e.contains("not a regular file"),
            "{e}"
        );
        fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("acme/z.pub")).unwrap();
        let e = TrustStore::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("z.pub") && e.contains("not a regular file"),
            "{e}"
        );
        fs::remove_file(dir.path().join("acme/z.pub")).unwrap();
        // A symlink to a key file is read (ConfigMap layout: k.pub -> ..data/k.pub).
        let k = SecretKey::generate().unwrap();
        fs::create_dir(dir.path().join("acme/..data")).unwrap();
        fs::write(dir.path().join("acme/..data/k.pub"), k.public().to_file()).unwrap();
        std::os::unix::fs::symlink("..data/k.pub", dir.path().join("acme/k.pub")).unwrap();
        assert_eq!(TrustStore::load(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn refuses_what_every_user_may_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        fs::write(dir.path().join("acme/k.pub"), k.public().to_file()).unwrap();
        assert!(TrustStore::load(dir.path()).is_ok());
        let mode =
            |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        for (p, m) in [
            (dir.path().to_owned(), 0o700),
            (dir.path().join("acme"), 0o755),
            (dir.path().join("acme/k.pub"), 0o644),
        ] {
            mode(&p, m | 0o002);
            let e = TrustStore::load(dir.path()).unwrap_err().to_string();
            assert!(e.contains("every user may write"), "{e}");
            assert!(e.starts_with(&p.display().to_string()), "{e}");
            mode(&p, m);
        }
    }

    /// Dot entries (`.git`, `.keep`) are not publishers; a long revocation list
    /// loads; `revoke_from` applies a list when the rest of the directory fails.
    #[test]
    fn dot_entries_long_revocation_lists_and_revocations_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".keep"), "").unwrap();
        let list: String = (1..=300u64)
            .map(|i| format!("{i:016X}  # leaked\n"))
            .collect();
        assert!(list.len() > MAX_KEY_BYTES);
        fs::write(dir.path().join(REVOKED_FILE), &list).unwrap();
        let t = TrustStore::load(dir.path()).unwrap();
        assert!(t.is_revoked("000000000000012C".parse().unwrap()));

        let mut old = TrustStore::default();
        fs::write(dir.path().join("NOTES.txt"), "stray").unwrap();
        assert!(TrustStore::load(dir.path()).is_err());
        assert_eq!(old.revoke_from(dir.path()).unwrap(), 300);
        assert!(old.is_revoked("0000000000000001".parse().unwrap()));
    }
}
