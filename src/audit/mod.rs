//! The tamper-evident audit log: JSON Lines, append-only, each line carrying the
//! sha256 of the previous line (docs/audit.md is the operator's reference).
//!
//! Owns the event types callers fill in ([`Event`], [`Decision`]), the writer
//! ([`AuditLog`]: buffering, flush interval, fsync policy, rotation, recovery of a
//! torn tail), chain verification ([`verify_files`]) and filtering ([`query`]).
//! It does not decide what is audited or when to flush: the broker's recorder
//! encodes lines with the log's [`Chain`] on the event loop and has a writer thread
//! hand them to its [`LogFile`], flushing when [`LogFile::flush_due`] says.
//! Nothing here prints or exits; the CLI lives in `cli::audit`.

pub mod line;
mod log;
mod query;
pub mod time;
mod verify;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use line::{LineError, Record};
pub use log::{rotated_files, AuditLog, Chain, LogFile, MAX_BUFFER};
pub use query::{query, Filter, Hit};
pub use verify::{verify_files, VerifyReport};

/// The outcome of a checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    RateLimited,
    Error,
}

impl Decision {
    /// The name written in the log: `allow`, `deny`, `rate_limited`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::RateLimited => "rate_limited",
            Decision::Error => "error",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the four decisions.
#[derive(Debug, thiserror::Error)]
#[error("unknown decision {0:?} (expected allow, deny, rate_limited or error)")]
pub struct UnknownDecision(pub String);

impl FromStr for Decision {
    type Err = UnknownDecision;
    fn from_str(s: &str) -> Result<Decision, UnknownDecision> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "rate_limited" => Ok(Decision::RateLimited),
            "error" => Ok(Decision::Error),
            _ => Err(UnknownDecision(s.to_string())),
        }
    }
}

/// What a caller records; the log adds `seq`, `time` and `prev`.
///
/// Build one with struct update syntax:
/// `Event { kind: "launch", plugin: Some(id), ..Event::default() }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// What happened: `host_call`, `launch`, `exit`, `restart`, `verify_failure`,
    /// `plugin.status`, `admin`, `channel`, ... Must not be empty.
    pub kind: &'static str,
    pub plugin: Option<String>,
    pub version: Option<String>,
    /// The artifact's sha256 (hex).
    pub sha256: Option<String>,
    pub op: Option<String>,
    pub capability: Option<String>,
    pub decision: Option<Decision>,
    pub reason: Option<String>,
    pub duration_us: Option<u64>,
    /// Anything else, written under `"extra"` (omitted when empty), e.g. `{"uid": 0}`.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A borrowed view of an event's fields: what [`AuditLog::append_at`] writes.
/// Writers that keep the strings elsewhere (the broker's per-plugin identity, a
/// static op name) record without copying them into an [`Event`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub kind: &'a str,
    pub plugin: Option<&'a str>,
    pub version: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub op: Option<&'a str>,
    pub capability: Option<&'a str>,
    pub decision: Option<Decision>,
    pub reason: Option<&'a str>,
    pub duration_us: Option<u64>,
    /// Written under `"extra"` when present and not empty.
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Event {
    /// The event's fields, borrowed.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            kind: self.kind,
            plugin: self.plugin.as_deref(),
            version: self.version.as_deref(),
            sha256: self.sha256.as_deref(),
            op: self.op.as_deref(),
            capability: self.capability.as_deref(),
            decision: self.decision,
            reason: self.reason.as_deref(),
            duration_us: self.duration_us,
            extra: Some(&self.extra),
        }
    }
}

/// When written lines are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Never fsync (except at rotation); the kernel writes back when it likes.
    Never,
    /// fdatasync after every flush (the default): a SIGKILL or power loss loses at
    /// most the events accepted since the last flush.
    #[default]
    OnFlush,
    /// Write and fdatasync inside every `append`: an event survives SIGKILL and
    /// power loss once `append` returns.
    EveryEvent,
}

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The live file; rotated files are `PATH.000001`, `PATH.000002`, ...
    pub path: PathBuf,
    /// The longest an accepted event stays in memory before a flush is due.
    pub flush_interval: Duration,
    pub fsync: FsyncPolicy,
    /// Rotate before a line would take the live file past this many bytes.
    pub rotate_bytes: Option<u64>,
}

/// The default flush interval: 200 ms.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

impl AuditConfig {
    /// `path` with the defaults: 200 ms flush interval, fsync on flush, no rotation.
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            path: path.into(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            fsync: FsyncPolicy::default(),
            rotate_bytes: None,
        }
    }
}

/// A failed audit-log operation, naming the file and why.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit config: {0}")]
    Config(&'static str),
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}; the audit log must be a regular file{hint}")]
    NotAFile {
        path: PathBuf,
        what: &'static str,
        hint: &'static str,
    },
    #[error(
        "{path}: its directory {dir} does not exist (warden makes the log, not its directory)"
    )]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("{path}: another process is writing this audit log (lock held{holder})")]
    Locked {
        path: PathBuf,
        /// ` by pid N (COMM)`, or "" when /proc/locks does not say.
        holder: String,
    },
    #[error("{path}: cannot lock: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the live file was deleted while this warden was writing it; its events would be lost with it (to rotate it by hand, rename it: warden keeps writing the renamed file until restarted)")]
    Unlinked { path: PathBuf },
    #[error("{path}: the live file was truncated while this warden was writing it ({found} bytes, after {written} written), e.g. by logrotate's copytruncate, which the audit log does not support: events written between the copy and the truncation are in neither file (rotate with warden's own rotation, audit_rotate_mb, or rename the file: warden keeps writing the renamed file until restarted)")]
    Truncated {
        path: PathBuf,
        written: u64,
        found: u64,
    },
    #[error("{path}: cannot fsync: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from}: cannot rotate to {to}: {source}")]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot move the torn last line aside to {to}: {source}")]
    SaveTorn {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the last line is not a valid audit record ({why}); refusing to chain onto it (run `warden audit verify {path}`)")]
    BrokenTail { path: PathBuf, why: LineError },
    #[error("{path}: the last line has the largest seq there is (18446744073709551615); the chain cannot be continued: start a new log")]
    SeqExhausted { path: PathBuf },
    #[error("{path}: the last line is not terminated by a newline; refusing to chain onto a torn rotated file")]
    TornRotated { path: PathBuf },
    #[error("event kind is empty")]
    EmptyKind,
    #[error("cannot encode event {kind}: {source}")]
    Encode {
        kind: String,
        source: serde_json::Error,
    },
    #[error("{path} line {line}: not a valid audit record ({why}); run `warden audit verify`")]
    BadRecord {
        path: PathBuf,
        line: u64,
        why: LineError,
    },
}

/// Calls `each(line_number, bytes)` for every line of `path` (1-based; the bytes
/// keep their trailing newline when there is one) until `each` returns false.
fn each_line(
    path: &std::path::Path,
    mut each: impl FnMut(u64, &mut Vec<u8>) -> bool,
) -> Result<(), AuditError> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut r = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Read {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        if !each(lineno, &mut buf) {
            return Ok(());
        }
    }
}
