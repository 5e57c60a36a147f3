//! The broker: serves each plugin's host calls on its end of a SEQPACKET socket.
//!
//! For every call, in this order: decode strictly -> is the op known -> is its
//! capability granted (manifest ∩ policy) -> rate limit -> the handler, which
//! re-validates its arguments -> reply -> one audit record. Blocking work runs on
//! the worker pool and completes through a mio `Waker`. The broker is a component
//! of an event loop that someone else owns (`warden run`, `warden serve`): the loop
//! hands it readiness events, wake-ups and ticks. It does not launch or supervise
//! processes, and it does not decide policy: it is given the grants.
//!
//! This file holds the state, channel I/O (batched reads, coalesced replies,
//! closing) and the loop's bookkeeping; `dispatch` handles each message.

mod cache;
mod dispatch;
pub mod egress;
pub mod files;
pub mod fuzz;
pub mod handlers;
pub mod ops;
pub mod protocol;
pub mod ratelimit;
mod record;
pub mod workers;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use serde_json::Value;

pub use crate::audit::Decision;
use crate::bundle::Capability;
use crate::store::kv::Quota;
use crate::store::{Store, StoreError};
use crate::sys::seqpacket;
use cache::KvCache;
use handlers::{Caller, Outcome};
use protocol::{
    CallError, DecodeError, ErrorCode, Incoming, Limits, Outgoing, Rate, MAX_IN_FLIGHT, MAX_MESSAGE,
};
use ratelimit::TokenBucket;
pub use record::{AuditRecorder, Record, Recorder};
use workers::{Done, Job, Pool, Work};

/// Messages read from one plugin before the loop moves on to others; the rest is
/// read on the next turn, so a flooding plugin cannot starve the others.
const READ_BUDGET: usize = 2;
// `read` receives one batch of two buffers: the budget is that batch.
const _: () = assert!(READ_BUDGET == 2);
/// Replies held back within a turn go out once this many plugins have one
/// waiting, not only at the turn's end: a plugin with several calls in the batch
/// still gets its replies in one wake-up, and no reply waits for a whole turn's
/// worth of other plugins. Measured with `cargo bench --bench broker`, 4 runs
/// each: p99 at 128 plugins 1.42-1.49 ms against 1.66-1.87 ms when held to the
/// turn's end; 1 (never holding back) cost a quarter of the calls/s at 128
/// plugins and raised p99 at 16 about 2-3x.
const FLUSH_EVERY: usize = 8;
/// Replies queued for a plugin that does not read them before its channel closes.
const MAX_QUEUED: usize = 1024;
/// Sent messages' buffers kept for reuse: enough for a turn's replies to every
/// plugin of a busy batch; each at most [`SPARE_CAPACITY`] bytes.
const SPARE_BUFFERS: usize = 64;
const SPARE_CAPACITY: usize = 4096;
/// Recent events kept per plugin for `audit.query`.
const RECENT: usize = handlers::MAX_AUDIT_QUERY;

/// The broker's maps are keyed by its own tokens, call ids (at most
/// [`MAX_IN_FLIGHT`] per plugin, so a plugin choosing colliding ids only slows its
/// own tiny table), capabilities and namespaces: a multiply-rotate hash (the
/// "Fx" hash) is enough, and much cheaper per call than SipHash.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Whole words first, then the tail zero-padded in a register: no
        // variable-length copy (a memcpy call per word) for a short key.
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.write_u64(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let word = tail
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            self.write_u64(word);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The longest op name kept, in bytes: an unknown op's name is the plugin's own
/// text, and goes into error messages and audit lines cut to this.
const MAX_OP_NAME: usize = 64;

/// The name an op is audited under: the op table's own string when it is known,
/// else the plugin's, clipped to [`MAX_OP_NAME`].
fn op_name(name: &str) -> Cow<'static, str> {
    match ops::find(name) {
        Some(op) => Cow::Borrowed(op.name),
        None => Cow::Owned(protocol::clip(name, MAX_OP_NAME).into_owned()),
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("starting the worker pool: {0}")]
    Pool(#[from] StoreError),
    #[error("registering the channel of plugin {plugin}: {source}")]
    Register { plugin: String, source: io::Error },
}

/// What the broker knows of one plugin: who it is and what it may do.
#[derive(Debug, Clone)]
pub struct PluginContext {
    pub id: String,
    pub version: String,
    pub sha256: String,
    /// What the manifest declares.
    pub declared: Vec<Capability>,
    /// What may be used: the manifest's capabilities ∩ the policy's grants.
    pub granted: Vec<Capability>,
    pub call_timeout: Duration,
    /// The token bucket for each capability, unless overridden below.
    pub rate: Rate,
    pub rate_overrides: Vec<(Capability, Rate)>,
    pub kv_quota: Quota,
    /// Policy status `blocked`: every call is denied.
    pub blocked: bool,
    /// The policy's egress allow-list for `net.dial`; `None` refuses every dial.
    pub egress: Option<Arc<egress::Egress>>,
    /// The plugin's data directory for `fs.open`; `None` answers `unavailable`.
    pub files: Option<Arc<files::FileRoot>>,
}

fn decision_of(result: &Result<Value, CallError>) -> Decision {
    match result {
        Ok(_) => Decision::Allow,
        Err(e) => match e.code {
            ErrorCode::Denied => Decision::Deny,
            ErrorCode::RateLimited => Decision::RateLimited,
            // A missing key is an answered, allowed call.
            ErrorCode::NotFound => Decision::Allow,
            _ => Decision::Error,
        },
    }
}

/// The audit reason of a call's result: empty when it succeeded, else
/// `code: message`.
fn reason_of(result: &Result<Value, CallError>) -> String {
    match result {
        Ok(_) => String::new(),
        Err(e) => format!("{}: {}", e.code, e.message),
    }
}

/// Per-plugin counters, kept for `monitor.stats` and the operator's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub calls: u64,
    pub allowed: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A call handed to the worker pool, from its submission until its result comes
/// back: also after a `timeout` reply answered it, and after its channel closed.
/// Results are matched by the broker's own sequence number, never by the
/// plugin's call id, which the plugin may reuse once it has its reply.
struct Pending {
    token: Token,
    /// The plugin's id for the call.
    id: u64,
    /// Who made the call: its result is audited under it even once the plugin
    /// is detached.
    ctx: Arc<PluginContext>,
    op: &'static ops::Op,
    /// The capability its audit event names (`handlers::capability_of`).
    capability: Capability,
    started: Instant,
    /// For a `kv.get`: the key and the cache generation when it was submitted.
    fill: Option<(String, u64)>,
    awaiting: Awaiting,
    /// For a dial or an open: what its audit event names if the call times
    /// out before its result comes (its result carries them otherwise).
    audit: Option<Box<serde_json::Map<String, Value>>>,
}

/// What a pending call's result is still wanted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// The plugin waits for the reply.
    Reply,
    /// The plugin was answered `timeout`, and the call audited: the result is
    /// dropped. Until it comes, the call still counts against the plugin's
    /// in-flight limit, so that calls timing out cannot pile up work.
    Nothing,
    /// The channel closed first: the result is audited (marked not delivered),
    /// not sent.
    Audit,
}

struct Conn {
    fd: Option<OwnedFd>,
    /// Shared with the audit queue, which records without copying its strings.
    ctx: Arc<PluginContext>,
    ns: Arc<str>,
    ready: bool,
    /// The capabilities its welcome listed (once `ready`): a policy change
    /// grants it at most these until a new instance is welcomed.
    told: Vec<Capability>,
    /// The plugin's calls waiting for a reply: call id -> [`Pending`] number.
    in_flight: FastMap<u64, u64>,
    /// Its calls on the worker pool, counting those already answered `timeout`.
    running: usize,
    /// It is on the pending list (at most once: a flooding plugin gets one read
    /// budget per turn however many readiness events it causes).
    queued: bool,
    /// Messages waiting for the socket to drain, each with the descriptor it carries.
    outq: VecDeque<(Vec<u8>, Option<OwnedFd>)>,
    want_write: bool,
    buckets: FastMap<Capability, TokenBucket>,
    counters: Counters,
    recent: VecDeque<handlers::Recent>,
    ping: Option<(u64, Instant)>,
    last_pong: Option<Instant>,
    closed: Option<String>,
}

/// The broker for every attached plugin.
pub struct Broker<R: Recorder> {
    registry: Registry,
    conns: FastMap<Token, Conn>,
    pool: Pool,
    recorder: R,
    pending: VecDeque<Token>,
    caches: FastMap<Arc<str>, KvCache>,
    /// Whether `kv.get` may be answered from `caches`: only while this broker is
    /// the only writer of its namespaces ([`Broker::read_through`]).
    read_cache: bool,
    /// Calls on the worker pool, by the broker's sequence number.
    jobs: FastMap<u64, Pending>,
    next_seq: u64,
    /// (deadline, sequence number) of each pending call, earliest first.
    deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    /// Inside a loop turn, replies are queued and sent together at its end: the
    /// plugin is then woken once per batch rather than once per reply.
    deferring: bool,
    dirty: Vec<Token>,
    closed: Vec<(Token, String)>,
    ping_seq: u64,
    /// Receive buffers, one per message of a batch ([`READ_BUDGET`]).
    buf: Vec<u8>,
    buf2: Vec<u8>,
    /// Buffers of sent messages, kept for the next replies.
    spare: Vec<Vec<u8>>,
}

impl<R: Recorder> Broker<R> {
    /// A broker whose blocking work runs on `readers` reader threads and one writer,
    /// waking the loop through `waker`.
    pub fn new(
        registry: &Registry,
        store: &Store,
        waker: Arc<Waker>,
        recorder: R,
        readers: usize,
    ) -> Result<Broker<R>, BrokerError> {
        Ok(Broker {
            registry: registry
                .try_clone()
                .map_err(|source| BrokerError::Register {
                    plugin: "(registry)".into(),
                    source,
                })?,
            conns: FastMap::default(),
            pool: Pool::start(store, waker, readers)?,
            recorder,
            pending: VecDeque::new(),
            caches: FastMap::default(),
            read_cache: true,
            jobs: FastMap::default(),
            next_seq: 0,
            deadlines: std::collections::BinaryHeap::new(),
            deferring: false,
            dirty: Vec::new(),
            closed: Vec::new(),
            ping_seq: 0,
            buf: vec![0u8; MAX_MESSAGE],
            buf2: vec![0u8; MAX_MESSAGE],
            spare: Vec::new(),
        })
    }

    /// Every `kv.get` reads the database: for a broker whose namespaces other
    /// processes may write too (`warden run`s sharing a state directory), which
    /// its read cache would not see.
    pub fn read_through(&mut self) {
        self.read_cache = false;
        self.caches.clear();
    }

    /// The recorder, for the loop owner's own events and flushing.
    pub fn recorder(&mut self) -> &mut R {
        &mut self.recorder
    }

    /// Stops the worker pool (finishing queued work) and returns the recorder.
    /// Calls whose results nobody will read any more are audited as not
    /// delivered: each call gets its audit event.
    pub fn into_recorder(self) -> R {
        let Broker {
            pool,
            mut recorder,
            mut jobs,
            ..
        } = self;
        for done in pool.finish() {
            if let Some(p) = jobs.remove(&done.seq) {
                if p.awaiting != Awaiting::Nothing {
                    record_undelivered(&mut recorder, &p, done);
                }
            }
        }
        recorder
    }

    /// Starts serving `fd` (the supervisor's end of the plugin's socket) as `token`.
    pub fn attach(
        &mut self,
        token: Token,
        fd: OwnedFd,
        ctx: PluginContext,
    ) -> Result<(), BrokerError> {
        let err = |source| BrokerError::Register {
            plugin: ctx.id.clone(),
            source,
        };
        seqpacket::set_nonblocking(fd.as_fd(), true).map_err(err)?;
        self.registry
            .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
            .map_err(err)?;
        let ns: Arc<str> = Arc::from(format!("plugin:{}", ctx.id));
        self.conns.insert(
            token,
            Conn {
                fd: Some(fd),
                ctx: Arc::new(ctx),
                ns,
                ready: false,
                told: Vec::new(),
                in_flight: FastMap::default(),
                running: 0,
                queued: false,
                outq: VecDeque::new(),
                want_write: false,
                buckets: FastMap::default(),
                counters: Counters::default(),
                recent: VecDeque::new(),
                ping: None,
                last_pong: None,
                closed: None,
            },
        );
        // Data may already be waiting (edge-triggered readiness would not say so).
        self.queue_read(token);
        Ok(())
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    /// One turn of an event loop: waits for events (no longer than `max_wait`,
    /// and not at all when work is pending), serves the broker's own sources
    /// (`waker` and plugin channels), expires late calls and continues channels
    /// that used up their read budget. Events for other tokens go to `other`.
    pub fn turn(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        waker: Token,
        max_wait: Option<Duration>,
        mut other: impl FnMut(&MioEvent),
    ) -> io::Result<()> {
        // The clock is read only when some call has a deadline.
        let mut timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if self.has_pending() {
            timeout = Some(Duration::ZERO);
        }
        for limit in [max_wait, self.recorder.watch_within()] {
            timeout = match (timeout, limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let polled = poll.poll(events, timeout);
        self.recorder.watch();
        match polled {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        self.deferring = true;
        for ev in events.iter() {
            let token = ev.token();
            if token == waker {
                self.completions();
            } else if self.owns(token) {
                self.ready(
                    token,
                    ev.is_readable() || ev.is_read_closed(),
                    ev.is_writable(),
                );
                if self.dirty.len() >= FLUSH_EVERY {
                    self.flush_dirty();
                }
            } else {
                other(ev);
            }
        }
        if self.next_deadline().is_some() {
            self.expire(Instant::now());
        }
        self.run_pending();
        self.deferring = false;
        self.flush_dirty();
        Ok(())
    }

    /// Handles readiness of a plugin channel.
    pub fn ready(&mut self, token: Token, readable: bool, writable: bool) {
        if writable {
            self.flush(token);
        }
        if readable {
            self.read(token);
        }
    }

    /// Whether some channel still has unread messages (poll with a zero timeout).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Continues reading channels that used up their budget.
    pub fn run_pending(&mut self) {
        for _ in 0..self.pending.len() {
            if let Some(token) = self.pending.pop_front() {
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.queued = false;
                }
                self.read(token);
            }
        }
    }

    /// Puts `token` on the pending list unless it is there already.
    fn queue_read(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if !conn.queued {
                conn.queued = true;
                self.pending.push_back(token);
            }
        }
    }

    /// Delivers finished work (call after the waker fires).
    pub fn completions(&mut self) {
        for done in self.pool.take_done() {
            if let Some((ns, key)) = &done.wrote {
                // A read that overlapped this write may have cached the value
                // from before it (a fill checks only for writes submitted while
                // the read was out); the key is read afresh from now on.
                if let Some(cache) = self.caches.get_mut(ns) {
                    cache.invalidate(key);
                }
            }
            let Some(call) = self.jobs.remove(&done.seq) else {
                continue;
            };
            let conn = self.conns.get_mut(&call.token);
            match call.awaiting {
                Awaiting::Audit => {
                    record_undelivered(&mut self.recorder, &call, done);
                    continue;
                }
                Awaiting::Nothing => {
                    // Answered `timeout` already; only its in-flight slot frees.
                    if let Some(conn) = conn {
                        conn.running = conn.running.saturating_sub(1);
                    }
                    continue;
                }
                Awaiting::Reply => {}
            }
            let Some(conn) = conn else {
                continue;
            };
            conn.running = conn.running.saturating_sub(1);
            conn.in_flight.remove(&call.id);
            if let (Some((key, generation)), Some(cache)) =
                (call.fill, self.caches.get_mut(&conn.ns))
            {
                match &done.result {
                    Ok(v) => cache.fill(generation, key, v["value"].as_str().map(str::to_owned)),
                    Err(e) if e.code == ErrorCode::NotFound => cache.fill(generation, key, None),
                    Err(_) => {}
                }
            }
            self.reply_full(
                call.token,
                call.id,
                call.op.name,
                Some(call.capability),
                call.started,
                done.result,
                done.fd,
                done.audit.as_ref(),
            );
        }
    }

    /// The earliest call deadline, for the loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|d| d.0 .0)
    }

    /// Answers `timeout` for every call past its deadline. Deadlines sit in a
    /// min-heap; entries of calls that already finished are dropped as they surface.
    pub fn expire(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((deadline, seq))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(call) = self.jobs.get_mut(&seq) else {
                continue;
            };
            if call.awaiting != Awaiting::Reply {
                continue;
            }
            let Some(conn) = self.conns.get_mut(&call.token) else {
                continue;
            };
            // The result, when it comes, only frees the slot (see `Awaiting`).
            call.awaiting = Awaiting::Nothing;
            conn.in_flight.remove(&call.id);
            let (token, id, op, started) = (call.token, call.id, call.op, call.started);
            let capability = call.capability;
            let audit = call.audit.clone();
            let e = CallError::new(
                ErrorCode::Timeout,
                format!(
                    "{} did not finish within {} ms",
                    op.name,
                    conn.ctx.call_timeout.as_millis()
                ),
            );
            self.reply_full(
                token,
                id,
                op.name,
                Some(capability),
                started,
                Err(e),
                None,
                audit.as_deref(),
            );
        }
    }

    /// Sends a health `ping`; returns its sequence number.
    pub fn ping(&mut self, token: Token) -> Option<u64> {
        self.ping_seq += 1;
        let seq = self.ping_seq;
        let conn = self.conns.get_mut(&token)?;
        if conn.closed.is_some() || !conn.ready {
            return None;
        }
        conn.ping = Some((seq, Instant::now()));
        self.send(token, Outgoing::Ping { seq }.encode(), None);
        Some(seq)
    }

    /// When the plugin last answered a ping, and whether one is outstanding since.
    pub fn health(&self, token: Token) -> Option<(Option<Instant>, Option<Instant>)> {
        self.conns
            .get(&token)
            .map(|c| (c.last_pong, c.ping.map(|(_, at)| at)))
    }

    /// Asks the plugin to stop within `deadline`.
    pub fn shutdown(&mut self, token: Token, deadline: Duration) {
        let msg = Outgoing::Shutdown {
            deadline_ms: deadline.as_millis() as u64,
        }
        .encode();
        self.send(token, msg, None);
    }

    /// Whether the plugin has completed its handshake.
    pub fn is_ready(&self, token: Token) -> bool {
        self.conns
            .get(&token)
            .is_some_and(|c| c.ready && c.closed.is_none())
    }

    /// Applies a changed policy to a channel at once: its egress lists and
    /// `blocked` status hold from the next call on, and so does a narrowing of
    /// its grants (it needs no new instance). A plugin not yet welcomed is
    /// welcomed with the new grants; a welcomed one keeps at most what its
    /// welcome listed (a widening needs a new welcome, so a new instance).
    /// Returns whether the new grants differ from what its welcome listed.
    pub fn set_policy(
        &mut self,
        token: Token,
        granted: Vec<Capability>,
        egress: Option<Arc<egress::Egress>>,
        blocked: bool,
    ) -> bool {
        let Some(c) = self.conns.get_mut(&token) else {
            return false;
        };
        let told = c.ready.then_some(&c.told);
        let differs = told.is_some_and(|t| *t != granted);
        let ctx = Arc::make_mut(&mut c.ctx);
        ctx.granted = match told {
            Some(t) => granted.into_iter().filter(|g| t.contains(g)).collect(),
            None => granted,
        };
        ctx.egress = egress;
        ctx.blocked = blocked;
        differs
    }

    pub fn counters(&self, token: Token) -> Option<Counters> {
        self.conns.get(&token).map(|c| c.counters)
    }

    /// Channels the broker closed since the last call, with the reason.
    pub fn take_closed(&mut self) -> Vec<(Token, String)> {
        std::mem::take(&mut self.closed)
    }

    /// Stops serving `token` and forgets it; returns its final counters. Its calls
    /// still on the worker pool are audited when they finish.
    pub fn detach(&mut self, token: Token) -> Option<Counters> {
        let mut conn = self.conns.remove(&token)?;
        orphan(&mut self.jobs, &mut conn);
        if !self.conns.values().any(|c| c.ns == conn.ns) {
            self.caches.remove(&conn.ns);
        }
        if let Some(fd) = conn.fd.take() {
            let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        Some(conn.counters)
    }

    /// Reads up to [`READ_BUDGET`] messages with one recvmmsg. Fewer than the
    /// budget means the channel was drained; a full batch puts it on the pending
    /// list, to be read again on the next turn after the others.
    fn read(&mut self, token: Token) {
        let Some(fd) = self.conns.get(&token).and_then(|c| c.fd.as_ref()) else {
            return;
        };
        let (mut first, mut second) = (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.buf2),
        );
        let got = seqpacket::recv_batch(fd.as_fd(), [&mut first[..], &mut second[..]]);
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.queue_read(token),
            Err(e) => self.close(token, format!("read failed: {e}")),
            Ok((count, received)) => {
                for (r, bytes) in received.iter().take(count).zip([&first, &second]) {
                    if self.conns.get(&token).is_none_or(|c| c.fd.is_none()) {
                        break;
                    }
                    match r {
                        None => self.close(token, "plugin closed its end".into()),
                        Some(r) => self.received(token, r, &bytes[..r.len]),
                    }
                }
                if count == READ_BUDGET {
                    self.queue_read(token);
                }
            }
        }
        self.buf = first;
        self.buf2 = second;
    }

    /// One datagram from the plugin: counted, checked for descriptors and size,
    /// then handled.
    fn received(&mut self, token: Token, r: &seqpacket::Received, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.counters.bytes_in += r.full_len as u64;
        if r.had_fds {
            return self.violation(token, "the plugin sent a file descriptor".into());
        }
        if r.truncated {
            conn.counters.calls += 1;
            let e = CallError::new(
                ErrorCode::TooLarge,
                format!(
                    "message is {} bytes, the limit is {MAX_MESSAGE}",
                    r.full_len
                ),
            );
            self.send(token, Outgoing::Error { error: &e }.encode(), None);
            self.audit(token, "host_call", "?", None, Instant::now(), &Err(e), None);
            return;
        }
        self.message(token, bytes);
    }

    fn close(&mut self, token: Token, why: String) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        if let Some(fd) = conn.fd.take() {
            // Best effort, without blocking: what is queued (a coalesced reply, or
            // the error that explains this close) goes out before the channel does.
            for (msg, pass) in conn.outq.drain(..) {
                let fds: Vec<std::os::fd::BorrowedFd<'_>> =
                    pass.iter().map(|f| f.as_fd()).collect();
                if seqpacket::send(fd.as_fd(), &msg, &fds).is_err() {
                    break;
                }
            }
            let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        orphan(&mut self.jobs, conn);
        conn.outq.clear();
        conn.closed = Some(why.clone());
        self.closed.push((token, why));
    }

    /// Sends one message, with `pass` attached as SCM_RIGHTS when given; the
    /// descriptor is closed on our side once sent (or when the channel closes).
    fn send(&mut self, token: Token, msg: Vec<u8>, pass: Option<OwnedFd>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let Some(fd) = conn.fd.as_ref() else {
            return;
        };
        conn.counters.bytes_out += msg.len() as u64;
        if self.deferring && conn.outq.is_empty() && !conn.want_write {
            conn.outq.push_back((msg, pass));
            self.dirty.push(token);
            return;
        }
        if conn.outq.is_empty() {
            let fds: Vec<std::os::fd::BorrowedFd<'_>> = pass.iter().map(|f| f.as_fd()).collect();
            match seqpacket::send(fd.as_fd(), &msg, &fds) {
                Ok(()) => return recycle(&mut self.spare, msg),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return self.close(token, format!("write failed: {e}")),
            }
        }
        if conn.outq.len() >= MAX_QUEUED {
            return self.close(token, format!("plugin left {MAX_QUEUED} replies unread"));
        }
        conn.outq.push_back((msg, pass));
        want_write(&self.registry, token, conn, true);
    }

    /// An empty buffer for an outgoing message: one a sent message left behind
    /// when there is one, so that a reply costs no allocation.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Sends the replies held back in this turn.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            self.flush(token);
        }
        // The list's buffer is kept for the next batch (flushing adds nothing).
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let Some(fd) = conn.fd.as_ref() else {
            return;
        };
        while let Some((msg, pass)) = conn.outq.front() {
            let fds: Vec<std::os::fd::BorrowedFd<'_>> = pass.iter().map(|f| f.as_fd()).collect();
            match seqpacket::send(fd.as_fd(), msg, &fds) {
                Ok(()) => {
                    if let Some((msg, _)) = conn.outq.pop_front() {
                        recycle(&mut self.spare, msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return want_write(&self.registry, token, conn, true);
                }
                Err(e) => return self.close(token, format!("write failed: {e}")),
            }
        }
        want_write(&self.registry, token, conn, false);
    }
}

/// The calls of `conn` that wait for a reply will get none (its channel closed,
/// or it is detached): their results are to be audited as not delivered.
fn orphan(jobs: &mut FastMap<u64, Pending>, conn: &mut Conn) {
    for (_, seq) in conn.in_flight.drain() {
        if let Some(p) = jobs.get_mut(&seq) {
            p.awaiting = Awaiting::Audit;
        }
    }
    conn.running = 0;
}

/// Audits the result of a call that no reply will carry: its decision is the
/// result's, and `"delivered": false` under `extra` says the plugin never saw it.
fn record_undelivered<R: Recorder>(recorder: &mut R, p: &Pending, done: Done) {
    let mut extra = done.audit.unwrap_or_default();
    extra.insert("delivered".into(), Value::Bool(false));
    let reason = reason_of(&done.result);
    recorder.record(&Record {
        plugin: &p.ctx,
        kind: "host_call",
        op: Cow::Borrowed(p.op.name),
        capability: Some(p.capability),
        decision: decision_of(&done.result),
        reason: &reason,
        duration: p.started.elapsed(),
        time_us: crate::audit::time::micros(SystemTime::now()),
        extra: Some(&extra),
    });
}

/// Keeps a sent message's buffer for the next reply (see [`Broker::buffer`]).
fn recycle(spare: &mut Vec<Vec<u8>>, mut msg: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS && msg.capacity() <= SPARE_CAPACITY {
        msg.clear();
        spare.push(msg);
    }
}

/// Registers interest in the channel's writability (replies are queued) or drops
/// it (the queue drained), when that changes.
fn want_write(registry: &Registry, token: Token, conn: &mut Conn, on: bool) {
    if conn.want_write == on {
        return;
    }
    let Some(fd) = conn.fd.as_ref() else {
        return;
    };
    conn.want_write = on;
    let interest = if on {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    let _ = registry.reregister(&mut SourceFd(&fd.as_raw_fd()), token, interest);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Recorder for Nothing {
        fn record(&mut self, _r: &Record<'_>) {}
    }

    /// However many readiness events a flooding plugin causes, it is on the
    /// pending list once, so it gets one read budget per turn from it.
    #[test]
    fn a_channel_is_pending_at_most_once() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut broker = Broker::new(poll.registry(), &store, waker, Nothing, 1).unwrap();
        let (ours, theirs) = seqpacket::pair().unwrap();
        let ctx = PluginContext {
            id: "p".into(),
            version: "1.0.0".into(),
            sha256: "00".repeat(32),
            declared: vec![],
            granted: vec![],
            call_timeout: Duration::from_secs(1),
            rate: Rate::default(),
            rate_overrides: vec![],
            kv_quota: Quota::default(),
            blocked: false,
            egress: None,
            files: None,
        };
        broker.attach(Token(1), ours, ctx).unwrap();
        let hello = br#"{"type":"hello","versions":[1],"plugin":"p","version":"1.0.0"}"#;
        seqpacket::send(theirs.as_fd(), hello, &[]).unwrap();
        let pong = br#"{"type":"pong","seq":1}"#;
        for _ in 0..8 {
            seqpacket::send(theirs.as_fd(), pong, &[]).unwrap();
        }
        assert_eq!(broker.pending.len(), 1, "attached: read at the next turn");
        for _ in 0..3 {
            broker.ready(Token(1), true, false);
        }
        assert_eq!(broker.pending.len(), 1);
        broker.run_pending();
        assert_eq!(broker.pending.len(), 1, "still more to read");
    }
}
