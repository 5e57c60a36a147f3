//! The control plane's wire format and its client: one JSON request line per
//! connection on a Unix socket, answered by one JSON line `{"ok": ...}` or
//! `{"error": "..."}`, and who may ask (root, warden's own uid, or members of the
//! configured admin group, by `SO_PEERCRED`).
//!
//! The server side (accepting, reading, dispatching) lives in the supervisor's
//! loop; printing tables lives in `crate::cli`. Nothing here touches plugins.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why a control request failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: connect: {source}{}", connect_hint(source))]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The answer did not come within `wait` ([`ANSWER_WAIT`] for `warden ctl`).
    #[error(
        "control socket {path}: warden did not answer within {wait:?} (its loop may be stuck: see its log, e.g. journalctl -u warden)"
    )]
    NoAnswer { path: PathBuf, wait: Duration },
    #[error("control socket {path}: malformed answer: {why}")]
    Malformed { path: PathBuf, why: String },
    /// warden refused or failed the request; the message is its own.
    #[error("{0}")]
    Refused(String),
}

/// How long `warden ctl` waits for warden's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// What to do about a refused connection, said after the error.
fn connect_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (only root and members of the config's admin_group may use it)"
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            " (is warden serve running with this config?)"
        }
        _ => "",
    }
}

/// One administrative request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    List,
    Status {
        id: String,
    },
    Install {
        id: String,
    },
    Activate {
        id: String,
    },
    Disable {
        id: String,
    },
    Restart {
        id: String,
    },
    PolicyShow {
        id: String,
    },
    PolicyApprove {
        id: String,
        grant: Option<Vec<String>>,
        /// Replaces the egress allow-list (`host:port` patterns) when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        egress: Option<Vec<String>>,
        /// Replaces the explicitly allowed addresses when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allow_addresses: Option<Vec<String>>,
    },
    PolicyBlock {
        id: String,
    },
    AllowDowngrade {
        id: String,
        version: String,
    },
    Stats {
        id: Option<String>,
    },
    Reload,
}

impl Request {
    /// The request's name, for the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Request::List => "list",
            Request::Status { .. } => "status",
            Request::Install { .. } => "install",
            Request::Activate { .. } => "activate",
            Request::Disable { .. } => "disable",
            Request::Restart { .. } => "restart",
            Request::PolicyShow { .. } => "policy_show",
            Request::PolicyApprove { .. } => "policy_approve",
            Request::PolicyBlock { .. } => "policy_block",
            Request::AllowDowngrade { .. } => "allow_downgrade",
            Request::Stats { .. } => "stats",
            Request::Reload => "reload",
        }
    }

    /// Whether the request changes anything (audited as an admin action).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Request::List
                | Request::Status { .. }
                | Request::PolicyShow { .. }
                | Request::Stats { .. }
        )
    }
}

/// Encodes an answer line.
pub fn answer(result: &Result<Value, String>) -> Vec<u8> {
    let v = match result {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    let mut line = serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// Whether a peer may use the control socket: root, the uid warden runs as, or a
/// member (primary or supplementary group) of `admin_gid`.
pub fn authorized(
    uid: u32,
    gid: u32,
    groups: &[u32],
    own_uid: u32,
    admin_gid: Option<u32>,
) -> bool {
    uid == 0 || uid == own_uid || admin_gid.is_some_and(|g| gid == g || groups.contains(&g))
}

/// Sends `req` to the warden listening on `path` and returns its `ok` value.
pub fn request(path: &Path, req: &Request) -> Result<Value, ControlError> {
    request_within(path, req, ANSWER_WAIT)
}

/// [`request`], waiting at most `wait` for the answer.
fn request_within(path: &Path, req: &Request, wait: Duration) -> Result<Value, ControlError> {
    let io = |what| {
        move |source| ControlError::Io {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let mut s = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(wait)).map_err(io("set timeout"))?;
    let mut line = serde_json::to_vec(req).expect("requests encode");
    line.push(b'\n');
    match s.write_all(&line) {
        // A refused peer is answered and hung up on before it writes: read why.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => {}
        r => r.map_err(io("write"))?,
    }
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ControlError::NoAnswer {
                    path: path.to_owned(),
                    wait,
                }
            }
            _ => io("read")(e),
        })?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| ControlError::Malformed {
        path: path.to_owned(),
        why: if answer.is_empty() {
            "connection closed without an answer".into()
        } else {
            e.to_string()
        },
    })?;
    if let Some(e) = v.get("error") {
        return Err(ControlError::Refused(
            e.as_str().unwrap_or("unknown error").to_owned(),
        ));
    }
    v.get("ok").cloned().ok_or_else(|| ControlError::Malformed {
        path: path.to_owned(),
        why: "neither ok nor error".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warden that takes the request and never answers is named as such, with
    /// how long ctl waited (it was "read: Resource temporarily unavailable").
    #[test]
    fn no_answer_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = std::thread::spawn(move || listener.accept().unwrap());
        let e = request_within(&path, &Request::List, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, ControlError::NoAnswer { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("did not answer within 100ms"), "{shown}");
        drop(held.join());
    }

    #[test]
    fn requests_round_trip() {
        let r = Request::PolicyApprove {
            id: "a".into(),
            grant: Some(vec!["kv:read".into()]),
            egress: None,
            allow_addresses: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"policy_approve","id":"a","grant":["kv:read"]}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let r = Request::PolicyApprove {
            id: "a".into(),
            grant: None,
            egress: Some(vec!["api.example.com:443".into()]),
            allow_addresses: Some(vec![]),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"policy_approve","id":"a","grant":null,"egress":["api.example.com:443"],"allow_addresses":[]}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    /// A misspelt field of an admin request is refused, not ignored: here
    /// `grants` (for `grant`) would otherwise approve every capability the
    /// manifest declares instead of the one asked for.
    #[test]
    fn unknown_request_fields_are_refused() {
        let typo = r#"{"op":"policy_approve","id":"a","grants":["kv:read"]}"#;
        let r = serde_json::from_str::<Request>(typo);
        assert!(r.is_err(), "accepted as {r:?}");
        let typo = r#"{"op":"policy_approve","id":"a","grant":["kv:read"],"egres":["x:1"]}"#;
        let r = serde_json::from_str::<Request>(typo);
        assert!(r.is_err(), "accepted as {r:?}");
    }

    #[test]
    fn who_may_ask() {
        assert!(authorized(0, 0, &[], 500, None));
        assert!(authorized(500, 500, &[], 500, None));
        assert!(!authorized(1000, 1000, &[], 500, None));
        assert!(authorized(1000, 1000, &[27], 500, Some(27)));
        assert!(authorized(1000, 27, &[], 500, Some(27)));
        assert!(!authorized(1000, 1000, &[28], 500, Some(27)));
    }
}
