//! `net.dial`: resolve a host the policy allows, check every resolved address
//! against the guard, connect to a checked address with a timeout, and hand back
//! the connected socket (the broker passes it to the plugin with SCM_RIGHTS).
//!
//! The pure rules (host and pattern parsing, forbidden ranges) live in [`guard`];
//! this module does the blocking part and runs only on the worker pool, never on
//! the event loop. It does not decide grants (dispatch does) and does not send
//! anything to the plugin (the broker does).

pub mod guard;

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::protocol::{CallError, ErrorCode};
pub use guard::{Egress, Host, HostPattern, Net, Verdict};

/// Name resolutions running at once (each on a thread of its own, since
/// getaddrinfo cannot be cancelled); more answer `rate_limited`.
pub const MAX_RESOLVERS: usize = 16;
/// The dial timeout when the call names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most addresses one name may resolve to before it is refused.
pub const MAX_ADDRESSES: usize = 32;

static RESOLVERS: AtomicUsize = AtomicUsize::new(0);

/// One validated dial, ready for a worker.
#[derive(Debug)]
pub struct DialRequest {
    pub host: Host,
    pub port: u16,
    pub timeout: Duration,
    pub egress: Arc<Egress>,
}

/// What a dial produced: the reply, the socket on success, and the audit fields.
#[derive(Debug)]
pub struct Dialled {
    pub result: Result<Value, CallError>,
    pub fd: Option<OwnedFd>,
    pub audit: Map<String, Value>,
}

/// The audit fields every dial carries.
pub fn audit_fields(host: &str, port: u16) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("host".into(), json!(host));
    m.insert("port".into(), json!(port));
    m
}

/// Resolves, checks and connects. Runs on a worker thread.
pub fn dial(req: &DialRequest) -> Dialled {
    let started = Instant::now();
    let mut audit = audit_fields(&req.host.to_string(), req.port);
    let fail = |audit: Map<String, Value>, code, msg: String| Dialled {
        result: Err(CallError::new(code, msg)),
        fd: None,
        audit,
    };
    let addrs: Vec<IpAddr> = match &req.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => match resolve(name, req.port, req.timeout) {
            Ok(a) => a,
            Err(e) => return fail(audit, e.code, e.message),
        },
    };
    audit.insert(
        "resolved".into(),
        Value::Array(addrs.iter().map(|a| json!(a.to_string())).collect()),
    );
    // Every address must pass: a name with one forbidden address is refused as a
    // whole, so a rebinding resolver cannot pick which one we dial.
    let mut why_allowed = Vec::new();
    for ip in &addrs {
        match req.egress.check(*ip) {
            Verdict::Public => {}
            Verdict::AllowedByPolicy { range, net } => {
                why_allowed.push(format!("{ip} is {range}, allowed by policy {net}"))
            }
            Verdict::Forbidden(range) => {
                let msg = format!(
                    "{}:{} resolves to {ip}, which is {range}; the policy does not allow it",
                    req.host, req.port
                );
                return fail(audit, ErrorCode::Denied, msg);
            }
        }
    }
    if !why_allowed.is_empty() {
        audit.insert("allowance".into(), json!(why_allowed.join("; ")));
    }
    let mut last = None;
    for ip in &addrs {
        let left = req.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let addr = SocketAddr::new(*ip, req.port);
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                audit.insert("address".into(), json!(addr.to_string()));
                return Dialled {
                    result: Ok(json!({ "fd": true, "address": addr.to_string() })),
                    fd: Some(OwnedFd::from(stream)),
                    audit,
                };
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::TimedOut => fail(
            audit,
            ErrorCode::Timeout,
            format!("connecting to {addr}: timed out"),
        ),
        Some((addr, e)) => fail(
            audit,
            ErrorCode::Unavailable,
            format!("connecting to {addr}: {e}"),
        ),
        None => fail(
            audit,
            ErrorCode::Timeout,
            format!(
                "{}:{} did not connect within {} ms",
                req.host,
                req.port,
                req.timeout.as_millis()
            ),
        ),
    }
}

/// Resolves `name` with the system resolver (getaddrinfo) on a thread of its own,
/// waiting at most `timeout`. A resolution that takes longer answers `timeout`; its
/// thread finishes in the background and its answer is dropped.
fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<IpAddr>, CallError> {
    if RESOLVERS.fetch_add(1, Ordering::AcqRel) >= MAX_RESOLVERS {
        RESOLVERS.fetch_sub(1, Ordering::AcqRel);
        return Err(CallError::new(
            ErrorCode::RateLimited,
            format!("more than {MAX_RESOLVERS} name resolutions are running"),
        ));
    }
    let (tx, rx) = mpsc::channel();
    let owned = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name("warden-resolve".into())
        .spawn(move || {
            let r = (owned.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>());
            RESOLVERS.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        RESOLVERS.fetch_sub(1, Ordering::AcqRel);
        return Err(CallError::new(
            ErrorCode::Internal,
            format!("starting a resolver thread: {e}"),
        ));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(mut addrs)) => {
            let mut seen = std::collections::HashSet::new();
            addrs.retain(|a| seen.insert(*a));
            if addrs.is_empty() {
                return Err(CallError::new(
                    ErrorCode::NotFound,
                    format!("{name} has no addresses"),
                ));
            }
            if addrs.len() > MAX_ADDRESSES {
                return Err(CallError::new(
                    ErrorCode::Denied,
                    format!("{name} resolves to more than {MAX_ADDRESSES} addresses"),
                ));
            }
            Ok(addrs)
        }
        Ok(Err(e)) => Err(CallError::new(
            ErrorCode::NotFound,
            format!("resolving {name}: {e}"),
        )),
        Err(_) => Err(CallError::new(
            ErrorCode::Timeout,
            format!(
                "resolving {name} took longer than {} ms",
                timeout.as_millis()
            ),
        )),
    }
}
