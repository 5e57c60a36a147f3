//! Durable state in one SQLite database (bundled SQLite, WAL): the plugins'
//! key-value namespaces (schema v1) and the supervisor's per-plugin records
//! (lifecycle status, review policy, highest version seen; schema v2; egress lists,
//! v3; host uids, v4). Every write is a committed transaction with
//! `synchronous=FULL`, so an acknowledged write survives a crash of warden.
//!
//! This module knows nothing of capabilities, the protocol or what a status means:
//! callers pass namespace strings and plain records ([`plugins::Record`]) and the
//! supervisor interprets them. Connections are per thread; open one with [`Store::connect`].

pub mod kv;
pub mod plugins;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: opened read-only (the file, or the filesystem it is on, cannot be written), and warden writes it")]
    ReadOnly { path: PathBuf },
    #[error("state directory {path}: another `warden serve` is using it (lock held on {lock}{holder}): give each warden serve a state_dir of its own")]
    ServedByAnother {
        path: PathBuf,
        lock: PathBuf,
        /// ` by pid N (COMM)`, or "" when /proc/locks does not say.
        holder: String,
    },
    #[error("state directory {path}: `warden run` is using it (lock held on {lock}{holder}): give warden serve a state_dir of its own, or stop the run")]
    InUseByRun {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("state directory {path}: `warden serve` is using it (lock held on {lock}{holder}): give this run its own --state-dir")]
    Served {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("state directory {path}: cannot lock {lock}: {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: schema version {found} is newer than this warden ({supported})")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

/// The schema this warden writes; older databases are migrated forward in order.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS kv (
    ns    TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_usage (
    ns    TEXT PRIMARY KEY,
    keys  INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
";

/// v2: one row per plugin the supervisor has seen.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS plugins (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    version         TEXT NOT NULL,
    highest         TEXT NOT NULL,
    allow_downgrade TEXT,
    policy_status   TEXT NOT NULL DEFAULT 'pending_review',
    grants          TEXT NOT NULL DEFAULT '[]',
    updated_us      INTEGER NOT NULL
) WITHOUT ROWID;
";

/// v3: a plugin's egress allow-list and explicitly allowed addresses (JSON lists).
const SCHEMA_V3: &str = "
ALTER TABLE plugins ADD COLUMN egress TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plugins ADD COLUMN allow_addresses TEXT NOT NULL DEFAULT '[]';
";

/// v4: the host uid given to each plugin (`warden serve` as root), one per uid.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS host_uids (
    plugin TEXT PRIMARY KEY,
    uid    INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;
";

/// The database file inside a state directory.
pub const DB_FILE: &str = "warden.db";

/// The lock file inside a state directory: `warden serve` holds it exclusively,
/// each `warden run` shared, for as long as they use the directory.
pub const LOCK_FILE: &str = "warden.lock";

/// Who holds a state directory, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `warden serve`: alone. Its plugin records and the plugins it launches
    /// are its own; a second supervisor would launch them all again.
    Serve,
    /// `warden run`: beside other runs (each with its own audit log), never
    /// beside a `warden serve`.
    Run,
}

/// A held state directory: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Creates (if needed, mode 0700) `state_dir` and takes its lock for `holder`,
/// before anything in it is opened: a second `warden serve` is refused, and so
/// is a `warden serve` beside a `warden run` (either way round).
pub fn claim(state_dir: &Path, holder: Holder) -> Result<StateLock, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    Store::unopened(state_dir)?;
    let lock = state_dir.join(LOCK_FILE);
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock)
    };
    // A lock file made by a warden of another uid may be read-only to us: a
    // read-only descriptor locks as well.
    let file = match open(true) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => open(false),
        r => r,
    }
    .map_err(|source| StoreError::Lock {
        path: state_dir.to_owned(),
        lock: lock.clone(),
        source,
    })?;
    // Retried for a moment: see `flock_soon`.
    match crate::sys::fs::flock_soon(&file, holder == Holder::Serve) {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let (path, by) = (state_dir.to_owned(), crate::sys::fs::flock_holders(&file));
            Err(match holder {
                Holder::Run => StoreError::Served {
                    path,
                    lock,
                    holder: by,
                },
                // Shared holders only: runs. Otherwise a serve holds it.
                Holder::Serve if crate::sys::fs::flock_shared_nonblocking(&file).is_ok() => {
                    StoreError::InUseByRun {
                        path,
                        lock,
                        holder: by,
                    }
                }
                Holder::Serve => StoreError::ServedByAnother {
                    path,
                    lock,
                    holder: by,
                },
            })
        }
        Err(source) => Err(StoreError::Lock {
            path: state_dir.to_owned(),
            lock,
            source,
        }),
    }
}

/// A handle on the database file; cheap to clone, opens connections on demand.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed, mode 0700) `state_dir` and the database in it, and
    /// brings the schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let store = Store::unopened(state_dir)?;
        let mut conn = store.connect()?;
        let err = |source| StoreError::Open {
            path: store.path.clone(),
            source,
        };
        // One transaction, holding the write lock from the start: a crash in the
        // middle leaves the schema as it was, and two wardens starting on a fresh
        // state directory at once migrate it once.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: store.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            tx.execute_batch(SCHEMA_V1).map_err(err)?;
        }
        if found < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(err)?;
        }
        if found < 3 {
            tx.execute_batch(SCHEMA_V3).map_err(err)?;
        }
        if found < 4 {
            tx.execute_batch(SCHEMA_V4).map_err(err)?;
        }
        if found < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(store)
    }

    /// Creates (if needed, mode 0700) `state_dir` but leaves the database alone:
    /// for a caller that will not touch it, such as `warden run` of a plugin granted
    /// no KV capability. Connecting to it later skips the schema check that
    /// [`Store::open`] makes, so a caller that may use it must call `open`.
    pub fn unopened(state_dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Dir {
                path: state_dir.to_owned(),
                // A file in the way is "File exists" from mkdir: say what is wrong.
                source: if source.kind() == std::io::ErrorKind::AlreadyExists {
                    std::io::Error::from_raw_os_error(libc::ENOTDIR)
                } else {
                    source
                },
            })?;
        Ok(Store {
            path: state_dir.join(DB_FILE),
        })
    }

    /// A new connection in WAL mode with full fsync on commit. A file SQLite can
    /// open only for reading is refused here: SQLite would quietly open it
    /// read-only, and every write fail later without naming the file.
    pub fn connect(&self) -> Result<Connection, StoreError> {
        let err = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let conn = Connection::open(&self.path).map_err(err)?;
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        // Switching a new database to WAL needs it to itself, and SQLite answers
        // "busy" at once rather than waiting: retried for the same 10 s (only a
        // fresh database opened by several at once meets this).
        let mut tries = 0;
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 1000 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break r.map_err(err)?,
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wardens starting on a fresh state directory at once migrate it once,
    /// without one tripping over the other's half-done schema.
    #[test]
    fn concurrent_opens_of_a_fresh_directory_all_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let p = dir.path().to_owned();
                    std::thread::spawn(move || Store::open(&p).map(drop).map_err(|e| e.to_string()))
                })
                .collect();
            for o in opens {
                o.join().unwrap().unwrap();
            }
        }
    }

    /// One `warden serve` per state directory, runs beside runs, never a serve
    /// beside a run: each refusal says which kind of warden holds it.
    #[test]
    fn state_dir_claims_refuse_a_second_serve_and_mixing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let serve = claim(&state, Holder::Serve).unwrap();
        let e = claim(&state, Holder::Serve).unwrap_err();
        assert!(matches!(e, StoreError::ServedByAnother { .. }), "{e}");
        // Naming who holds it: this process.
        let by = format!(".lock by pid {} (", std::process::id());
        assert!(e.to_string().contains(&by), "{e}");
        let e = claim(&state, Holder::Run).unwrap_err();
        assert!(matches!(e, StoreError::Served { .. }), "{e}");
        drop(serve);
        let run1 = claim(&state, Holder::Run).unwrap();
        let run2 = claim(&state, Holder::Run).unwrap();
        let e = claim(&state, Holder::Serve).unwrap_err();
        assert!(matches!(e, StoreError::InUseByRun { .. }), "{e}");
        drop((run1, run2));
        claim(&state, Holder::Serve).unwrap();
    }

    /// A state directory path that is a file was refused as "File exists",
    /// which reads as if all were well; it is "Not a directory", naming it.
    #[test]
    fn a_state_dir_that_is_a_file_is_named_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "").unwrap();
        let e = Store::open(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "state directory {}: Not a directory (os error 20)",
                file.display()
            )
        );
    }

    /// A database warden cannot write (a 0444 file, or as root an immutable
    /// one) is refused at open, naming the path and why: it was opened
    /// read-only without a word, and every `kv.put` then failed `internal`
    /// with "attempt to write a readonly database", naming no file.
    #[test]
    fn a_read_only_database_is_refused_at_open_naming_its_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let db = dir.path().join(DB_FILE);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
        // Root writes a 0444 file anyway: make it immutable instead.
        struct Immutable<'a>(&'a Path);
        impl Drop for Immutable<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(self.0)
                    .status();
            }
        }
        let mut _guard = None;
        if std::fs::OpenOptions::new().write(true).open(&db).is_ok() {
            let made = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&db)
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                eprintln!("skipped: running as root and chattr +i failed");
                return;
            }
            _guard = Some(Immutable(&db));
        }
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&db.display().to_string()), "{e}");
        assert!(e.contains("read-only"), "{e}");
    }
}
