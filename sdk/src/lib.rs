//! `warden-plugin`: the plugin side of warden's broker protocol (docs/protocol.md).
//!
//! [`Client::connect`] takes the socket named by `WARDEN_FD`, says `hello`, and
//! returns once warden answered `welcome`. A background thread reads every message:
//! it routes replies to the waiting calls, answers `ping` by itself, and records
//! `shutdown`. Calls are synchronous and may be made from several threads at once.
//! A message from warden that cannot be read (larger than [`MAX_MESSAGE`], not a
//! JSON object, a reply without an id) closes the channel: the call it may have
//! answered is unknown, so every waiting call fails with [`Error::Channel`].
//!
//! [`Client::dial`] and [`Client::open`] return a descriptor warden opened for the
//! plugin (a connected TCP socket, a file in the plugin's data directory); it
//! arrives as SCM_RIGHTS with the reply, received with `recvmsg`. If this process
//! has no free descriptor slot then (RLIMIT_NOFILE), the kernel drops it; the call
//! then fails with [`Error::Unavailable`] saying so, though warden did the op.
//!
//! This crate must never depend on the supervisor crate: it speaks only the wire
//! protocol, so it doubles as a reference for other languages.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The environment variable that names the plugin's end of the broker socket.
pub const FD_ENV: &str = "WARDEN_FD";
/// The environment variable that carries the plugin's id.
pub const ID_ENV: &str = "WARDEN_PLUGIN_ID";
/// The environment variable that carries the version of the manifest warden
/// verified (what `hello` must say; see [`Client::connect_verified`]).
pub const VERSION_ENV: &str = "WARDEN_PLUGIN_VERSION";
/// The protocol versions this SDK speaks.
pub const VERSIONS: &[u32] = &[1];
/// The largest message either side sends.
pub const MAX_MESSAGE: usize = 65536;

/// Whether [`Client::connect`] has taken the descriptor `WARDEN_FD` names: it
/// is taken once per process (the first client closes it when it goes, and the
/// number may then belong to anything).
static FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// A failed call or connection, typed as warden typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Denied(String),
    RateLimited(String),
    BadRequest(String),
    UnknownOp(String),
    TooLarge(String),
    NotFound(String),
    Unavailable(String),
    Timeout(String),
    Internal(String),
    /// Not running under warden, the handshake failed, or the channel closed.
    Channel(String),
}

impl Error {
    fn from_wire(code: &str, message: String) -> Error {
        match code {
            "denied" => Error::Denied(message),
            "rate_limited" => Error::RateLimited(message),
            "bad_request" => Error::BadRequest(message),
            "unknown_op" => Error::UnknownOp(message),
            "too_large" => Error::TooLarge(message),
            "not_found" => Error::NotFound(message),
            "unavailable" => Error::Unavailable(message),
            "timeout" => Error::Timeout(message),
            "internal" => Error::Internal(message),
            // A code a later warden added fails this call, not the channel.
            other => Error::Internal(format!("error code {other:?}: {message}")),
        }
    }

    /// The wire code (`denied`, `not_found`, ...), or `channel`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::RateLimited(_) => "rate_limited",
            Error::BadRequest(_) => "bad_request",
            Error::UnknownOp(_) => "unknown_op",
            Error::TooLarge(_) => "too_large",
            Error::NotFound(_) => "not_found",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
            Error::Channel(_) => "channel",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::RateLimited(m)
            | Error::BadRequest(m)
            | Error::UnknownOp(m)
            | Error::TooLarge(m)
            | Error::NotFound(m)
            | Error::Unavailable(m)
            | Error::Timeout(m)
            | Error::Internal(m)
            | Error::Channel(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for Error {}

fn channel(e: impl fmt::Display) -> Error {
    Error::Channel(e.to_string())
}

/// Log levels for [`Client::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// What warden said in `welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub version: u32,
    pub plugin: String,
    pub capabilities: Vec<String>,
    pub max_in_flight: u64,
    pub call_timeout_ms: u64,
}

type Reply = (Result<Value, Error>, Option<OwnedFd>);

/// How [`Client::open`] opens a file (docs/protocol.md, `fs.open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenFlags {
    /// Read-only (needs `static:read` or `static:write`).
    pub const READ: OpenFlags = OpenFlags {
        read: true,
        write: false,
        create: false,
        truncate: false,
        append: false,
    };
    /// Write, creating or truncating the file (needs `static:write`).
    pub const WRITE: OpenFlags = OpenFlags {
        read: false,
        write: true,
        create: true,
        truncate: true,
        append: false,
    };
    /// Append, creating the file if absent (needs `static:write`).
    pub const APPEND: OpenFlags = OpenFlags {
        read: false,
        write: true,
        create: true,
        truncate: false,
        append: true,
    };

    fn names(self) -> Vec<&'static str> {
        [
            (self.read, "read"),
            (self.write, "write"),
            (self.create, "create"),
            (self.truncate, "truncate"),
            (self.append, "append"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

struct Shared {
    sock: UnixDatagram,
    waiting: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    shutdown: Mutex<Option<u64>>,
    shutdown_cv: Condvar,
    closed: Mutex<Option<String>>,
}

impl Shared {
    fn send(&self, msg: &Value) -> Result<(), Error> {
        self.send_bytes(serde_json::to_vec(msg).map_err(channel)?)
    }

    fn send_bytes(&self, bytes: Vec<u8>) -> Result<(), Error> {
        if bytes.len() > MAX_MESSAGE {
            return Err(Error::TooLarge(format!(
                "message is {} bytes, the limit is {MAX_MESSAGE}",
                bytes.len()
            )));
        }
        // A signal handler installed without SA_RESTART interrupts the send; that
        // is not the channel failing.
        loop {
            match self.sock.send(&bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map(drop).map_err(channel),
            }
        }
    }

    fn close(&self, why: String) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        for (_, tx) in self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = tx.send((Err(Error::Channel(why.clone())), None));
        }
        // Under the lock `wait_for_shutdown` checks `closed` with: the wake-up
        // cannot fall between its check and its wait.
        let _shutdown = self.shutdown.lock().unwrap_or_else(|p| p.into_inner());
        self.shutdown_cv.notify_all();
    }

    /// Warden sent a message the SDK cannot read or route: which call it
    /// answered is unknown, so no call can trust a reply any more. The channel
    /// is shut down (warden sees the plugin hang up) and closed.
    fn unreadable(&self, why: String) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.close(why);
    }
}

/// A connection to warden.
pub struct Client {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    welcome: Welcome,
    reader: Option<JoinHandle<()>>,
}

impl Client {
    /// [`Client::connect`] with the version of the manifest warden verified
    /// (`WARDEN_PLUGIN_VERSION`): a plugin that says hello with it needs no
    /// rebuild when only its manifest's version changes (a hello with another
    /// version is refused).
    pub fn connect_verified() -> Result<Client, Error> {
        let version = std::env::var(VERSION_ENV)
            .map_err(|_| Error::Channel(format!("{VERSION_ENV} is not set")))?;
        Client::connect(&version)
    }

    /// Connects through `WARDEN_FD` and says hello as `WARDEN_PLUGIN_ID` at
    /// `version` (which must equal the manifest's version). Once per process:
    /// the client owns that descriptor, so a later call (also after a refused
    /// handshake, which closed it) fails with [`Error::Channel`].
    pub fn connect(version: &str) -> Result<Client, Error> {
        let fd: i32 = std::env::var(FD_ENV)
            .map_err(|_| Error::Channel(format!("{FD_ENV} is not set: not running under warden")))?
            .parse()
            .map_err(|_| Error::Channel(format!("{FD_ENV} is not a number")))?;
        let id =
            std::env::var(ID_ENV).map_err(|_| Error::Channel(format!("{ID_ENV} is not set")))?;
        if fd < 3 {
            return Err(Error::Channel(format!(
                "{FD_ENV}={fd} is not a broker socket"
            )));
        }
        if FD_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(Error::Channel(format!(
                "{FD_ENV}={fd} was already taken by an earlier Client::connect \
                 (one connection per process)"
            )));
        }
        // SAFETY: warden hands the plugin exactly this descriptor, open, as its end
        // of the broker socket; FD_TAKEN makes this the one place in the process
        // that takes ownership of it, once.
        let sock = unsafe { UnixDatagram::from_raw_fd(fd) };
        Client::with_socket(sock, &id, version)
    }

    /// Says hello on an already open socket (for tests and embedding).
    pub fn with_socket(sock: UnixDatagram, id: &str, version: &str) -> Result<Client, Error> {
        let shared = Arc::new(Shared {
            sock,
            waiting: Mutex::new(HashMap::new()),
            shutdown: Mutex::new(None),
            shutdown_cv: Condvar::new(),
            closed: Mutex::new(None),
        });
        shared.send(
            &json!({"type": "hello", "versions": VERSIONS, "plugin": id, "version": version}),
        )?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        // The first `welcome` or `error` answers the hello; a message of
        // another type (one a later version added) is skipped, as after it.
        let msg = loop {
            let n = match shared.sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.map_err(channel)?,
            };
            let msg: Value = serde_json::from_slice(&buf[..n]).map_err(channel)?;
            match msg["type"].as_str() {
                Some("welcome" | "error") | None => break msg,
                Some(_) => continue,
            }
        };
        let welcome = match msg["type"].as_str() {
            Some("welcome") => Welcome {
                version: msg["version"].as_u64().unwrap_or(0) as u32,
                plugin: msg["plugin"].as_str().unwrap_or_default().to_owned(),
                capabilities: msg["capabilities"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                max_in_flight: msg["limits"]["max_in_flight"].as_u64().unwrap_or(1),
                call_timeout_ms: msg["limits"]["call_timeout_ms"].as_u64().unwrap_or(0),
            },
            _ => {
                let m = msg["error"]["message"].as_str().unwrap_or("no welcome");
                return Err(Error::Channel(format!("handshake refused: {m}")));
            }
        };
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("warden-plugin-reader".into())
            .spawn(move || read_loop(&reader_shared, buf))
            .map_err(channel)?;
        Ok(Client {
            shared,
            next_id: AtomicU64::new(1),
            welcome,
            reader: Some(reader),
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Whether warden granted `capability` (e.g. `kv:write`).
    pub fn has(&self, capability: &str) -> bool {
        self.welcome.capabilities.iter().any(|c| c == capability)
    }

    /// Makes one call and waits for its reply. A descriptor that came with the
    /// reply is closed; use [`Client::call_with_fd`] to keep it.
    pub fn call(&self, op: &str, args: Value) -> Result<Value, Error> {
        self.call_with_fd(op, args).map(|(v, _)| v)
    }

    /// `net.dial`: a TCP connection warden made to `host:port` on the policy's
    /// terms (the egress allow-list and address rules).
    pub fn dial(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        self.dial_args(json!({ "host": host, "port": port }))
    }

    /// [`Client::dial`] with a timeout for resolving and connecting.
    pub fn dial_timeout(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, Error> {
        let ms = timeout.as_millis().max(1) as u64;
        self.dial_args(json!({ "host": host, "port": port, "timeout_ms": ms }))
    }

    fn dial_args(&self, args: Value) -> Result<TcpStream, Error> {
        let (_, fd) = self.call_with_fd("net.dial", args)?;
        let fd =
            fd.ok_or_else(|| Error::Channel("net.dial: the reply carried no socket".into()))?;
        Ok(TcpStream::from(fd))
    }

    /// `fs.open`: a file in the plugin's data directory; `path` is relative to it.
    pub fn open(&self, path: &str, flags: OpenFlags) -> Result<File, Error> {
        let (_, fd) =
            self.call_with_fd("fs.open", json!({ "path": path, "flags": flags.names() }))?;
        let fd = fd.ok_or_else(|| Error::Channel("fs.open: the reply carried no file".into()))?;
        Ok(File::from(fd))
    }

    /// Makes one call and waits for its reply and the descriptor it carried, if any.
    pub fn call_with_fd(&self, op: &str, args: Value) -> Result<(Value, Option<OwnedFd>), Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Checked after the call waits: `close` marks the channel closed before
        // it fails the waiting calls, so a call either was failed by it or sees
        // the mark here (checked first, a close between the check and the
        // insert left the call waiting for a reader that had gone).
        let closed = self
            .shared
            .closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(why) = closed {
            self.shared
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(Error::Channel(why));
        }
        if let Err(e) = self.shared.send_bytes(call_message(id, op, &args)?) {
            self.shared
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e);
        }
        let (result, fd) = rx
            .recv()
            .unwrap_or_else(|_| (Err(Error::Channel("reader stopped".into())), None));
        result.map(|v| (v, fd))
    }

    /// `kv.get`: the value, or `None` when the key is absent.
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, Error> {
        match self.call("kv.get", json!({ "key": key })) {
            Ok(v) => Ok(v["value"].as_str().map(str::to_owned)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `kv.put`: returns once the value is on disk.
    pub fn kv_put(&self, key: &str, value: &str) -> Result<(), Error> {
        self.call("kv.put", json!({ "key": key, "value": value }))
            .map(drop)
    }

    /// `kv.delete`: whether the key existed.
    pub fn kv_delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.call("kv.delete", json!({ "key": key }))?["deleted"] == json!(true))
    }

    /// `kv.list`: one page of keys with `prefix`, and the cursor for the next page.
    pub fn kv_list(
        &self,
        prefix: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), Error> {
        let mut args = json!({ "prefix": prefix, "limit": limit });
        if let Some(c) = cursor {
            args["cursor"] = json!(c);
        }
        let v = self.call("kv.list", args)?;
        let keys = v["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((keys, v["cursor"].as_str().map(str::to_owned)))
    }

    /// `log.write` with optional structured fields.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, Value)]) -> Result<(), Error> {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.call(
            "log.write",
            json!({ "level": level.as_str(), "message": message, "fields": fields }),
        )
        .map(drop)
    }

    /// `monitor.stats`: host load, memory, uptime and this plugin's counters.
    pub fn monitor_stats(&self) -> Result<Value, Error> {
        self.call("monitor.stats", json!({}))
    }

    /// `audit.query`: this plugin's most recent audit events.
    pub fn audit_query(&self, limit: u32) -> Result<Vec<Value>, Error> {
        let v = self.call("audit.query", json!({ "limit": limit }))?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }

    /// Whether the channel to warden is closed (warden went away or cut it off).
    pub fn is_closed(&self) -> bool {
        self.shared
            .closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Runs `action` once, or every `every` until warden asks the plugin to stop
    /// or the channel closes: the loop of a long-running plugin.
    pub fn repeat(&self, every: Option<Duration>, mut action: impl FnMut(&Client)) {
        loop {
            action(self);
            let Some(period) = every else { return };
            if self.wait_for_shutdown(Some(period)).is_some() || self.is_closed() {
                return;
            }
        }
    }

    /// Whether warden asked the plugin to stop, and with what deadline (ms).
    pub fn shutdown_requested(&self) -> Option<u64> {
        *self
            .shared
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until warden asks the plugin to stop or the channel closes, or until
    /// `timeout`. Returns the shutdown deadline (ms) when one was asked for.
    pub fn wait_for_shutdown(&self, timeout: Option<Duration>) -> Option<u64> {
        let mut state = self
            .shared
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A timeout past the clock's end (`Duration::MAX`) is no timeout.
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let closed = self
                .shared
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if state.is_some() || closed {
                return *state;
            }
            state = match deadline {
                None => self
                    .shared
                    .shutdown_cv
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.shared
                        .shutdown_cv
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.shared.sock.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// One datagram received: its length, the descriptors attached to it
/// (close-on-exec), whether the kernel dropped descriptors it carried
/// (MSG_CTRUNC: this process had no free descriptor slot for them), and
/// whether it was cut to fit the buffer (MSG_TRUNC).
struct Received {
    len: usize,
    fds: Vec<OwnedFd>,
    fds_lost: bool,
    truncated: bool,
}

/// Receives one datagram and the descriptors attached to it.
fn recv_with_fds(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    // SAFETY: `msg` points at `iov` (covering `buf`) and at `cmsg`, both live and
    // writable for the duration of the call, with their true lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by a successful recvmsg; CMSG_FIRSTHDR walks the
    // control buffer it describes, within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a valid cmsghdr inside the control buffer (see above).
        let hdr = unsafe { &*c };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a pure computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (hdr.cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
            // SAFETY: an SCM_RIGHTS payload is `count` ints starting at CMSG_DATA.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, within the payload; unaligned read because the
                // payload has no alignment guarantee.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel just installed `raw` in our table for us; we are
                // its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok(Received {
        len: n as usize,
        fds,
        fds_lost: msg.msg_flags & libc::MSG_CTRUNC != 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

fn read_loop(shared: &Shared, mut buf: Vec<u8>) {
    loop {
        let Received {
            len: n,
            mut fds,
            fds_lost,
            truncated,
        } = match recv_with_fds(&shared.sock, &mut buf) {
            Ok(got) if got.len == 0 => return shared.close("warden closed the channel".into()),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return shared.close(format!("reading from warden: {e}")),
        };
        // A message the SDK cannot read may be the reply a call waits for: the
        // channel closes rather than leave that call waiting for ever.
        if truncated {
            return shared.unreadable(format!(
                "warden sent a message larger than {MAX_MESSAGE} bytes (the protocol's limit)"
            ));
        }
        let msg = match serde_json::from_slice::<Value>(&buf[..n]) {
            Ok(msg @ Value::Object(_)) => msg,
            _ => {
                return shared.unreadable("warden sent a message that is not a JSON object".into())
            }
        };
        match msg["type"].as_str() {
            Some("reply") => {
                let Some(id) = msg["id"].as_u64() else {
                    return shared.unreadable("warden sent a reply without a valid id".into());
                };
                let result = match msg.get("error") {
                    Some(e) => Err(Error::from_wire(
                        e["code"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("").to_owned(),
                    )),
                    // The op was done (a socket connected, a file opened), but
                    // its descriptor never reached us: say why, not "no socket".
                    None if fds_lost && fds.is_empty() => Err(Error::Unavailable(
                        "the descriptor warden sent with this reply was lost: this \
                         process has no free descriptor slot (RLIMIT_NOFILE reached; \
                         the kernel dropped it, MSG_CTRUNC)"
                            .into(),
                    )),
                    None => Ok(msg.get("ok").cloned().unwrap_or(Value::Null)),
                };
                // The protocol sends at most one descriptor per reply; extras close.
                let fd = if fds.is_empty() {
                    None
                } else {
                    Some(fds.swap_remove(0))
                };
                let waiter = shared
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send((result, fd));
                }
            }
            Some("ping") => {
                let _ = shared.send(&json!({"type": "pong", "seq": msg["seq"]}));
            }
            Some("shutdown") => {
                let deadline = msg["deadline_ms"].as_u64().unwrap_or(0);
                *shared.shutdown.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
                shared.shutdown_cv.notify_all();
            }
            Some("error") => {
                let m = msg["error"]["message"].as_str().unwrap_or("").to_owned();
                eprintln!("warden-plugin: warden reported: {m}");
            }
            _ => {}
        }
    }
}

/// A call as bytes, its fields in the order docs/protocol.md shows
/// (`type`, `id`, `op`, `args`) whatever serde_json's map order: warden reads
/// that shape without its general decoder.
fn call_message(id: u64, op: &str, args: &Value) -> Result<Vec<u8>, Error> {
    let mut bytes = format!(r#"{{"type":"call","id":{id},"op":"#).into_bytes();
    serde_json::to_writer(&mut bytes, op).map_err(channel)?;
    bytes.extend_from_slice(br#","args":"#);
    serde_json::to_writer(&mut bytes, args).map_err(channel)?;
    bytes.push(b'}');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_written_in_the_documented_field_order() {
        let bytes = call_message(7, "kv.get", &json!({ "key": "k\"" })).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"type":"call","id":7,"op":"kv.get","args":{"key":"k\""}}"#
        );
    }
}
