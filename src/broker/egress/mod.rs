//! `net.dial`: resolve a host the policy allows, check every resolved address
//! against the guard, connect to a checked address with a timeout, and hand back
//! the connected socket (the broker passes it to the plugin with SCM_RIGHTS).
//!
//! The pure rules (host and pattern parsing, forbidden ranges) live in [`guard`];
//! this module does the blocking part and runs only on the worker pool, never on
//! the event loop. It does not decide grants (dispatch does) and does not send
//! anything to the plugin (the broker does).

pub mod guard;
pub mod wait;

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::protocol::{CallError, ErrorCode};
pub use guard::{Egress, Host, HostPattern, Net, Verdict};
pub use wait::{Interrupted, Stop, Waiter};

/// Name resolutions running at once for one plugin (each on a thread of its
/// own, since getaddrinfo cannot be cancelled: one given up on still runs until
/// the resolver answers); more answer `rate_limited`. Per plugin, so that one
/// plugin dialling names whose DNS never answers uses up only its own.
pub const MAX_RESOLVERS_PER_PLUGIN: usize = 4;
/// Name resolutions running at once in all (a backstop).
pub const MAX_RESOLVERS: usize = 64;
/// The dial timeout when the call names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most addresses one name may resolve to before it is refused.
pub const MAX_ADDRESSES: usize = 32;

/// Resolutions running, per plugin (namespace) and in all.
static RESOLVING: Mutex<Resolving> = Mutex::new(Resolving {
    total: 0,
    by_plugin: Vec::new(),
});

struct Resolving {
    total: usize,
    /// (plugin namespace, resolutions running): few at a time.
    by_plugin: Vec<(Arc<str>, usize)>,
}

/// One running resolution's place, given back when its thread ends.
struct ResolverSlot(Arc<str>);

impl ResolverSlot {
    fn take(ns: &Arc<str>) -> Result<ResolverSlot, CallError> {
        let mut r = RESOLVING.lock().unwrap_or_else(|p| p.into_inner());
        let mine = r.by_plugin.iter().find(|(p, _)| p == ns).map_or(0, |e| e.1);
        let why = if mine >= MAX_RESOLVERS_PER_PLUGIN {
            format!(
                "more than {MAX_RESOLVERS_PER_PLUGIN} name resolutions of this plugin are running (one given up on runs until the resolver answers)"
            )
        } else if r.total >= MAX_RESOLVERS {
            format!("more than {MAX_RESOLVERS} name resolutions are running")
        } else {
            r.total += 1;
            match r.by_plugin.iter_mut().find(|(p, _)| p == ns) {
                Some(e) => e.1 += 1,
                None => r.by_plugin.push((Arc::clone(ns), 1)),
            }
            return Ok(ResolverSlot(Arc::clone(ns)));
        };
        Err(CallError::new(ErrorCode::RateLimited, why))
    }
}

impl Drop for ResolverSlot {
    fn drop(&mut self) {
        let mut r = RESOLVING.lock().unwrap_or_else(|p| p.into_inner());
        r.total -= 1;
        if let Some(i) = r.by_plugin.iter().position(|(p, _)| *p == self.0) {
            r.by_plugin[i].1 -= 1;
            if r.by_plugin[i].1 == 0 {
                r.by_plugin.swap_remove(i);
            }
        }
    }
}

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

/// Resolves, checks and connects. Runs on a worker thread, and waits through
/// `waiter`: it gives up at the request's timeout, or at once when warden stops.
pub fn dial(req: &DialRequest, ns: &Arc<str>, waiter: &mut Waiter) -> Dialled {
    let deadline = Instant::now() + req.timeout;
    let mut audit = audit_fields(&req.host.to_string(), req.port);
    let fail = |audit: Map<String, Value>, code, msg: String| Dialled {
        result: Err(CallError::new(code, msg)),
        fd: None,
        audit,
    };
    let addrs: Vec<IpAddr> = match &req.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => match resolve(name, req.port, deadline, req.timeout, ns, waiter) {
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
        let addr = SocketAddr::new(*ip, req.port);
        match connect(addr, deadline, waiter) {
            Ok(stream) => {
                audit.insert("address".into(), json!(addr.to_string()));
                return Dialled {
                    result: Ok(json!({ "fd": true, "address": addr.to_string() })),
                    fd: Some(OwnedFd::from(stream)),
                    audit,
                };
            }
            Err(Failed::Stopping) => {
                let msg = format!("warden is stopping; connecting to {addr} was abandoned");
                return fail(audit, ErrorCode::Unavailable, msg);
            }
            Err(Failed::TimedOut) => {
                last = Some((addr, None));
                break;
            }
            Err(Failed::Io(e)) => last = Some((addr, Some(e))),
        }
    }
    match last {
        Some((addr, None)) => fail(
            audit,
            ErrorCode::Timeout,
            format!(
                "connecting to {addr}: no answer within {} ms",
                req.timeout.as_millis()
            ),
        ),
        Some((addr, Some(e))) => fail(
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

/// Why one connect failed.
enum Failed {
    TimedOut,
    Stopping,
    Io(std::io::Error),
}

impl From<Interrupted> for Failed {
    fn from(i: Interrupted) -> Failed {
        match i {
            Interrupted::TimedOut => Failed::TimedOut,
            Interrupted::Stopping => Failed::Stopping,
        }
    }
}

/// Connects to `addr` by `deadline` (a non-blocking connect watched through
/// `waiter`, so that warden stopping ends it); the stream returned is blocking,
/// as the plugin expects a socket from `net.dial` to be.
fn connect(addr: SocketAddr, deadline: Instant, waiter: &mut Waiter) -> Result<TcpStream, Failed> {
    if Instant::now() >= deadline {
        return Err(Failed::TimedOut);
    }
    let mut socket = mio::net::TcpStream::connect(addr).map_err(Failed::Io)?;
    waiter.watch(&mut socket).map_err(Failed::Io)?;
    let connected = loop {
        if let Err(i) = waiter.wait(deadline) {
            break Err(Failed::from(i));
        }
        // Writable with no pending error and a peer: connected. A wake-up for
        // something else leaves it still connecting (ENOTCONN).
        match socket.take_error() {
            Ok(Some(e)) | Err(e) => break Err(Failed::Io(e)),
            Ok(None) => {}
        }
        match socket.peer_addr() {
            Ok(_) => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => break Err(Failed::Io(e)),
        }
    };
    waiter.forget(&mut socket);
    connected?;
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false).map_err(Failed::Io)?;
    Ok(stream)
}

/// Resolves `name` with the system resolver (getaddrinfo) on a thread of its own,
/// waiting until `deadline` (`timeout` after the dial began, for the message) or
/// until warden stops. A resolution that takes longer answers `timeout`; its
/// thread finishes in the background and its answer is dropped.
fn resolve(
    name: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
    ns: &Arc<str>,
    waiter: &mut Waiter,
) -> Result<Vec<IpAddr>, CallError> {
    let slot = ResolverSlot::take(ns)?;
    let (tx, rx) = mpsc::channel();
    let owned = name.to_owned();
    let waker = waiter.waker();
    let spawned = std::thread::Builder::new()
        .name("warden-resolve".into())
        .spawn(move || {
            let r = (owned.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>());
            drop(slot);
            let _ = tx.send(r);
            // The dial may have given up meanwhile: then nobody reads it.
            let _ = waker.wake();
        });
    if let Err(e) = spawned {
        // The slot went with the closure spawn dropped.
        return Err(CallError::new(
            ErrorCode::Internal,
            format!("starting a resolver thread: {e}"),
        ));
    }
    let answer = loop {
        match rx.try_recv() {
            Ok(answer) => break Ok(answer),
            Err(mpsc::TryRecvError::Empty) => {}
            // It sends before it ends: it panicked.
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(CallError::new(
                    ErrorCode::Internal,
                    format!("resolving {name}: the resolver thread ended without an answer"),
                ))
            }
        }
        if let Err(i) = waiter.wait(deadline) {
            break Err(i);
        }
    };
    match answer {
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
        Err(Interrupted::Stopping) => Err(CallError::new(
            ErrorCode::Unavailable,
            format!("warden is stopping; resolving {name} was abandoned"),
        )),
        Err(Interrupted::TimedOut) => Err(CallError::new(
            ErrorCode::Timeout,
            format!(
                "resolving {name} took longer than {} ms",
                timeout.as_millis()
            ),
        )),
    }
}
