//! The worker pool for host ops that can block: SQLite reads on reader threads,
//! and every write on one writer thread that commits in groups (one fsync for all
//! the writes waiting at that moment). Results come back through a shared list and
//! a mio `Waker`; the event loop never waits on a worker. Dials and file opens
//! (`net.dial`, `fs.open`) run on I/O threads of their own, so a slow resolver or
//! connect never delays KV work; their results can carry a descriptor. Plugins
//! take turns there, each with at most [`IO_PER_PLUGIN`] running, and more
//! threads start (up to [`IO_THREADS_MAX`]) while a plugin under that limit has a
//! job waiting and no thread is free: plugins dialling hosts that never answer
//! hold their own threads, not everyone's.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;
use rusqlite::Connection;
use serde_json::{json, Map, Value};

use super::egress::{self, DialRequest, Stop, Waiter};
use super::files::{self, FileRoot, OpenRequest};
use super::protocol::{fitting, CallError, ErrorCode};
use crate::store::kv::{self, KvError, Quota};
use crate::store::{Store, StoreError};

/// The most writes committed in one transaction.
const MAX_GROUP: usize = 256;
/// Threads serving dials and file opens, started with the first one.
pub const IO_THREADS: usize = 4;
/// The most threads serving dials and file opens: it takes this many divided by
/// [`IO_PER_PLUGIN`] plugins, all holding their limit, before another plugin's
/// dial or open waits for a thread.
pub const IO_THREADS_MAX: usize = 32;
/// A thread beyond [`IO_THREADS`] ends after this long with nothing to do
/// (shorter in tests, which wait for it).
const IO_IDLE_END: Duration = Duration::from_secs(if cfg!(test) { 2 } else { 30 });

/// One unit of blocking work for a plugin's call.
#[derive(Debug)]
pub struct Job {
    /// The broker's own number for the call (unique for the broker's life; a
    /// plugin's call ids may be reused).
    pub seq: u64,
    pub ns: Arc<str>,
    pub work: Work,
    /// When the call times out: a dial or open not started by then is not
    /// started at all, and a dial gives up by then.
    pub deadline: Instant,
}

#[derive(Debug)]
pub enum Work {
    Get {
        key: String,
    },
    List {
        prefix: String,
        limit: usize,
        cursor: Option<String>,
    },
    Put {
        key: String,
        value: String,
        quota: Quota,
    },
    Delete {
        key: String,
    },
    Dial(DialRequest),
    Open {
        root: Arc<FileRoot>,
        req: OpenRequest,
    },
}

impl Work {
    /// What a dial's or an open's audit event names (its destination, its
    /// path) however the call ends: answered, timed out, or cancelled.
    pub fn audit_fields(&self) -> Option<Map<String, Value>> {
        match self {
            Work::Dial(req) => Some(egress::audit_fields(&req.host.to_string(), req.port)),
            Work::Open { req, .. } => Some(files::audit_fields(&req.path)),
            _ => None,
        }
    }

    fn is_write(&self) -> bool {
        matches!(self, Work::Put { .. } | Work::Delete { .. })
    }

    fn is_io(&self) -> bool {
        matches!(self, Work::Dial(_) | Work::Open { .. })
    }
}

/// A finished job.
#[derive(Debug)]
pub struct Done {
    /// The [`Job::seq`] of the job.
    pub seq: u64,
    pub result: Result<Value, CallError>,
    /// A descriptor for the plugin (a dialled socket, an opened file), sent with
    /// the reply as SCM_RIGHTS; dropped (closed) if the call already timed out.
    pub fd: Option<OwnedFd>,
    /// Extra fields for the call's audit event.
    pub audit: Option<Map<String, Value>>,
    /// The namespace and key a write was for (committed or not): the loop drops
    /// that key from its read cache, whether or not the call is still waited for.
    pub wrote: Option<(Arc<str>, String)>,
}

impl Done {
    fn plain(seq: u64, result: Result<Value, CallError>) -> Done {
        Done {
            seq,
            result,
            fd: None,
            audit: None,
            wrote: None,
        }
    }
}

struct Completions {
    done: Mutex<Vec<Done>>,
    waker: Arc<Waker>,
}

impl Completions {
    fn push(&self, items: impl IntoIterator<Item = Done>) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = done.is_empty();
        done.extend(items);
        if was_empty && !done.is_empty() {
            // A failed wake means the poll is gone: the loop is shutting down.
            let _ = self.waker.wake();
        }
    }
}

/// The running pool. Dropping it finishes queued work, then joins the threads.
pub struct Pool {
    store: Store,
    readers: usize,
    reads: Option<Sender<Job>>,
    writes: Option<Sender<Job>>,
    /// The I/O lane's queue, once its threads run.
    io: Option<Arc<IoQueue>>,
    /// I/O threads started so far (for their names).
    io_started: usize,
    completions: Arc<Completions>,
    threads: Vec<JoinHandle<()>>,
}

/// Which database thread group a KV job runs on (dials and opens go to the
/// I/O queue).
#[derive(Clone, Copy)]
enum Lane {
    Read,
    Write,
}

impl Pool {
    /// A pool of `readers` reader threads, one writer and the I/O threads. Each
    /// group is started by its first job, and each database thread opens its own
    /// connection then: a plugin that never touches KV or files costs no threads
    /// and no database work (a short `warden run` stays cheap).
    pub fn start(store: &Store, waker: Arc<Waker>, readers: usize) -> Result<Pool, StoreError> {
        Ok(Pool {
            store: store.clone(),
            readers: readers.max(1),
            reads: None,
            writes: None,
            io: None,
            io_started: 0,
            completions: Arc::new(Completions {
                done: Mutex::new(Vec::new()),
                waker,
            }),
            threads: Vec::new(),
        })
    }

    /// The queue of the database lane `lane`, starting its threads on first use.
    fn queue(&mut self, lane: Lane) -> &Sender<Job> {
        let slot = match lane {
            Lane::Read => &mut self.reads,
            Lane::Write => &mut self.writes,
        };
        if slot.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let c = &self.completions;
            if let Lane::Read = lane {
                let rx = Arc::new(Mutex::new(rx));
                for i in 0..self.readers {
                    let (conn, rx, c) = (Lazy::new(&self.store), Arc::clone(&rx), Arc::clone(c));
                    self.threads
                        .push(spawn(format!("warden-read-{i}"), move || {
                            reader(conn, rx, c)
                        }));
                }
            } else {
                let (conn, c) = (Lazy::new(&self.store), Arc::clone(c));
                self.threads
                    .push(spawn("warden-write".into(), move || writer(conn, rx, c)));
            }
            *slot = Some(tx);
        }
        slot.as_ref().expect("just started")
    }

    /// The I/O lane's queue, starting its first threads on first use.
    fn io_queue(&mut self) -> Arc<IoQueue> {
        if let Some(q) = &self.io {
            return Arc::clone(q);
        }
        let q = Arc::new(IoQueue::default());
        {
            let mut s = q.state.lock().unwrap_or_else(|p| p.into_inner());
            (s.threads, s.starting) = (IO_THREADS, IO_THREADS);
        }
        for _ in 0..IO_THREADS {
            self.start_io_thread(&q).expect("spawning a worker thread");
        }
        self.io = Some(Arc::clone(&q));
        q
    }

    /// Starts an I/O thread (counted in the queue's `threads` and `starting`
    /// already). It is not joined: it takes itself out of `threads` when it
    /// ends (idle, or the queue closed), and [`Pool::stop`] waits for none left.
    fn start_io_thread(&mut self, q: &Arc<IoQueue>) -> std::io::Result<()> {
        let (q, c) = (Arc::clone(q), Arc::clone(&self.completions));
        let name = format!("warden-io-{}", self.io_started);
        self.io_started += 1;
        std::thread::Builder::new()
            .name(name)
            .spawn(move || io_worker(&q, &c))?;
        Ok(())
    }

    /// Queues a job; its result arrives through [`Pool::take_done`].
    pub fn submit(&mut self, job: Job) {
        if job.work.is_io() {
            let q = self.io_queue();
            if q.push(job) {
                if let Err(e) = self.start_io_thread(&q) {
                    // The job waits for a thread that is running already.
                    q.not_started();
                    eprintln!("warden: starting another I/O thread: {e}");
                }
            }
            return;
        }
        let lane = if job.work.is_write() {
            Lane::Write
        } else {
            Lane::Read
        };
        let seq = job.seq;
        if self.queue(lane).send(job).is_err() {
            self.completions.push([Done::plain(
                seq,
                Err(CallError::new(
                    ErrorCode::Internal,
                    "worker pool has stopped",
                )),
            )]);
        }
    }

    /// Everything finished since the last call.
    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(
            &mut *self
                .completions
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Finishes every queued job, stops the threads, and returns what finished
    /// and was not yet taken.
    pub fn finish(mut self) -> Vec<Done> {
        self.stop();
        self.take_done()
    }

    fn stop(&mut self) {
        self.reads.take();
        self.writes.take();
        if let Some(q) = self.io.take() {
            q.close();
            q.wait_ended();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning a worker thread")
}

/// A database failure of one KV call: names what the call was about. Not the
/// database's host path: the message goes to the plugin too, which is not told
/// the host's layout (the operator's config names the file).
fn db_failed(work: &Work, e: impl std::fmt::Display) -> CallError {
    let about = match work {
        Work::Get { key } | Work::Put { key, .. } | Work::Delete { key } => format!("key {key:?}"),
        Work::List { prefix, .. } => format!("prefix {prefix:?}"),
        Work::Dial(_) | Work::Open { .. } => String::new(),
    };
    CallError::new(ErrorCode::Internal, format!("state database: {about}: {e}"))
}

/// A connection opened on first use, on the thread that uses it.
struct Lazy {
    store: Store,
    conn: Option<Connection>,
}

impl Lazy {
    fn new(store: &Store) -> Lazy {
        Lazy {
            store: store.clone(),
            conn: None,
        }
    }

    fn get(&mut self) -> Result<&mut Connection, CallError> {
        if self.conn.is_none() {
            // The reason names the database's host path: it goes to warden's log,
            // not to the plugin.
            let conn = self.store.connect().map_err(|e| {
                crate::logsink::line(format!("warden: {e}"));
                CallError::new(
                    ErrorCode::Internal,
                    "state database: it could not be opened (warden's log says why)",
                )
            })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }
}

fn reader(mut conn: Lazy, rx: Arc<Mutex<Receiver<Job>>>, out: Arc<Completions>) {
    loop {
        // Take everything queued at once: one wake-up serves a whole batch.
        let batch: Vec<Job> = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            std::iter::once(first)
                .chain(rx.try_iter().take(MAX_GROUP - 1))
                .collect()
        };
        let conn = conn.get();
        out.push(batch.into_iter().map(|job| {
            let result = match &conn {
                Ok(c) => read(c, &job),
                Err(e) => Err(e.clone()),
            };
            Done::plain(job.seq, result)
        }));
    }
}

/// Dials and file opens a plugin may have on the I/O threads at once: one
/// plugin dialling hosts that never answer holds at most this many of the
/// [`IO_THREADS`], and the others' dials and opens go on meanwhile.
pub const IO_PER_PLUGIN: usize = 2;

/// The I/O lane's queue: per plugin (by namespace), first in first out, and
/// the plugins in turn, each with at most [`IO_PER_PLUGIN`] jobs running.
#[derive(Default)]
struct IoQueue {
    state: Mutex<IoState>,
    ready: Condvar,
    /// Ends the dials running when the queue closes.
    stop: Arc<Stop>,
}

#[derive(Default)]
struct IoState {
    waiting: HashMap<Arc<str>, VecDeque<Job>>,
    /// Plugins with jobs waiting, in the order they are served.
    turns: VecDeque<Arc<str>>,
    running: HashMap<Arc<str>, usize>,
    closed: bool,
    /// Threads serving the queue (started, or about to be).
    threads: usize,
    /// Threads started by [`IoQueue::push`] that have not yet come for a job.
    starting: usize,
    /// Threads waiting for a job.
    idle: usize,
}

impl IoState {
    /// Jobs that could start now: each plugin's waiting jobs, up to what its
    /// limit leaves it.
    fn startable(&self) -> usize {
        self.turns
            .iter()
            .map(|ns| {
                let running = self.running.get(ns).copied().unwrap_or(0);
                let waiting = self.waiting.get(ns).map_or(0, VecDeque::len);
                waiting.min(IO_PER_PLUGIN.saturating_sub(running))
            })
            .sum()
    }

    /// The first plugin in turn with fewer than [`IO_PER_PLUGIN`] running.
    fn pick(&self) -> Option<usize> {
        self.turns
            .iter()
            .position(|ns| self.running.get(ns).copied().unwrap_or(0) < IO_PER_PLUGIN)
    }

    /// The next job of the plugin at `turns[i]`, counted as running; the plugin
    /// goes to the back of the turns if it has more waiting.
    fn pop_turn(&mut self, i: usize) -> Job {
        let ns = self.turns.remove(i).expect("a turn that exists");
        let queue = self.waiting.get_mut(&ns).expect("a turn has jobs");
        let job = queue.pop_front().expect("a turn has jobs");
        if queue.is_empty() {
            self.waiting.remove(&ns);
        } else {
            self.turns.push_back(Arc::clone(&ns));
        }
        *self.running.entry(ns).or_default() += 1;
        job
    }
}

impl IoQueue {
    /// Queues `job`. Returns whether the caller must start one more thread (it
    /// is counted already): more jobs could start now than threads are free.
    fn push(&self, job: Job) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ns = Arc::clone(&job.ns);
        let queue = s.waiting.entry(Arc::clone(&ns)).or_default();
        queue.push_back(job);
        if queue.len() == 1 {
            s.turns.push_back(ns);
        }
        self.ready.notify_one();
        let free = s.idle + s.starting;
        let more = !s.closed && s.threads < IO_THREADS_MAX && s.startable() > free;
        if more {
            s.threads += 1;
            s.starting += 1;
        }
        more
    }

    /// A thread [`IoQueue::push`] asked for could not be started.
    fn not_started(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.starting = s.starting.saturating_sub(1);
        s.threads = s.threads.saturating_sub(1);
    }

    /// The next job for a free thread: the first plugin in turn that has fewer
    /// than [`IO_PER_PLUGIN`] running; `None` once closed and drained, or for a
    /// thread beyond [`IO_THREADS`] idle for [`IO_IDLE_END`] (it ends). Once
    /// closed, what still waits is handed out to be cancelled, not run (`true`):
    /// warden stops without dialling for calls nobody will read.
    fn take(&self, fresh: bool) -> Option<(Job, bool)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if fresh {
            // Under the same lock as becoming idle or taking a job: a thread is
            // always counted as starting, idle or busy.
            s.starting = s.starting.saturating_sub(1);
        }
        loop {
            let st = &mut *s;
            if st.closed {
                if st.turns.is_empty() {
                    st.threads = st.threads.saturating_sub(1);
                    self.ready.notify_all();
                    return None;
                }
                return Some((st.pop_turn(0), true));
            }
            if let Some(i) = st.pick() {
                return Some((st.pop_turn(i), false));
            }
            st.idle += 1;
            let (g, waited) = self
                .ready
                .wait_timeout(s, IO_IDLE_END)
                .unwrap_or_else(|p| p.into_inner());
            s = g;
            s.idle -= 1;
            if waited.timed_out() && !s.closed && s.threads > IO_THREADS && s.pick().is_none() {
                s.threads = s.threads.saturating_sub(1);
                return None;
            }
        }
    }

    /// Waits until every thread has ended (after [`IoQueue::close`]).
    fn wait_ended(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.threads > 0 {
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A job of `ns` finished: its place goes to the next.
    fn done(&self, ns: &Arc<str>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.running.get_mut(ns) {
            *n -= 1;
            if *n == 0 {
                s.running.remove(ns);
            }
        }
        self.ready.notify_all();
    }

    /// No more jobs: the threads hand out what still waits as cancelled, the
    /// dials running give up, and the threads stop.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
        self.stop.stop();
    }
}

/// Serves dials and file opens, one at a time per thread. A job whose call has
/// already timed out is not started (the plugin was answered), nor is one still
/// waiting when warden stops; a dial stops trying at the call's deadline, or
/// when warden stops.
fn io_worker(q: &IoQueue, out: &Completions) {
    // Made by the thread's first dial, and kept for the next.
    let mut waiter: Option<Waiter> = None;
    let mut fresh = true;
    while let Some((job, cancelled)) = q.take(std::mem::take(&mut fresh)) {
        let (seq, ns) = (job.seq, Arc::clone(&job.ns));
        // A panic in one job (a bug) must not leave its plugin's place taken
        // and its call unanswered: it is answered `internal`, and the thread
        // goes on.
        let run = std::panic::AssertUnwindSafe(|| run_io(q, job, cancelled, &mut waiter));
        let done = std::panic::catch_unwind(run).unwrap_or_else(|_| {
            waiter = None;
            Done::plain(
                seq,
                Err(CallError::new(
                    ErrorCode::Internal,
                    "the dial or open failed (panicked)",
                )),
            )
        });
        q.done(&ns);
        out.push([done]);
    }
}

/// One dial or open (or its cancellation, or its timeout before its turn).
fn run_io(q: &IoQueue, job: Job, cancelled: bool, waiter: &mut Option<Waiter>) -> Done {
    // Not started: answered, its audit record still naming what was asked for.
    let unstarted = |code, message: &str| Done {
        audit: job.work.audit_fields(),
        ..Done::plain(job.seq, Err(CallError::new(code, message)))
    };
    if cancelled {
        unstarted(
            ErrorCode::Unavailable,
            "warden is stopping; the call was not started",
        )
    } else if Instant::now() >= job.deadline {
        unstarted(
            ErrorCode::Timeout,
            "the call timed out before its turn on an I/O thread",
        )
    } else {
        match job.work {
            Work::Dial(mut req) => {
                let left = job.deadline.saturating_duration_since(Instant::now());
                req.timeout = req.timeout.min(left);
                let d = match waiter {
                    Some(w) => egress::dial(&req, &job.ns, w),
                    None => match q.stop.waiter() {
                        Ok(w) => egress::dial(&req, &job.ns, waiter.insert(w)),
                        Err(e) => egress::Dialled {
                            result: Err(CallError::new(
                                ErrorCode::Internal,
                                format!("cannot wait for a dial on this I/O thread: {e}"),
                            )),
                            fd: None,
                            audit: egress::audit_fields(&req.host.to_string(), req.port),
                        },
                    },
                };
                Done {
                    seq: job.seq,
                    result: d.result,
                    fd: d.fd,
                    audit: Some(d.audit),
                    wrote: None,
                }
            }
            Work::Open { ref root, ref req } => {
                let o = files::open(root, req);
                Done {
                    seq: job.seq,
                    result: o.result,
                    fd: o.fd,
                    audit: Some(o.audit),
                    wrote: None,
                }
            }
            _ => Done::plain(
                job.seq,
                Err(CallError::new(
                    ErrorCode::Internal,
                    "a database job was queued to an I/O thread",
                )),
            ),
        }
    }
}

fn read(conn: &Connection, job: &Job) -> Result<Value, CallError> {
    match &job.work {
        Work::Get { key } => match kv::get(conn, &job.ns, key) {
            Ok(Some(value)) => Ok(json!({ "value": value })),
            Ok(None) => Err(CallError::new(
                ErrorCode::NotFound,
                format!("no key {key:?}"),
            )),
            Err(e) => Err(db_failed(&job.work, e)),
        },
        Work::List {
            prefix,
            limit,
            cursor,
        } => match kv::list(conn, &job.ns, prefix, *limit, cursor.as_deref()) {
            Ok((keys, next)) => {
                let (keys, next) = fit_keys(keys, next);
                Ok(json!({ "keys": keys, "cursor": next }))
            }
            Err(e) => Err(db_failed(&job.work, e)),
        },
        Work::Put { .. } | Work::Delete { .. } | Work::Dial(_) | Work::Open { .. } => Err(
            CallError::new(ErrorCode::Internal, "a write was queued to a reader"),
        ),
    }
}

/// The keys of a `kv.list` page that fit in one reply ([`super::protocol::LIST_BUDGET`] bytes of
/// JSON); when some are left out, the cursor continues after the last one kept.
fn fit_keys(mut keys: Vec<String>, next: Option<String>) -> (Vec<String>, Option<String>) {
    let n = fitting(&keys);
    if n == keys.len() {
        return (keys, next);
    }
    keys.truncate(n);
    let next = keys.last().cloned();
    (keys, next)
}

fn writer(mut conn: Lazy, rx: Receiver<Job>, out: Arc<Completions>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = match conn.get() {
            Ok(c) => commit_group(c, &batch),
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        };
        out.push(batch.into_iter().zip(results).map(|(job, result)| {
            let wrote = match job.work {
                Work::Put { key, .. } | Work::Delete { key } => Some((job.ns, key)),
                _ => None,
            };
            Done {
                wrote,
                ..Done::plain(job.seq, result)
            }
        }));
    }
}

/// Applies a group of writes in one transaction. A write refused for its own reason
/// (quota) changes nothing and does not affect the others; a database failure
/// fails the whole group, and nothing is acknowledged.
fn commit_group(conn: &mut Connection, batch: &[Job]) -> Vec<Result<Value, CallError>> {
    let failed = |e: &rusqlite::Error| -> Vec<Result<Value, CallError>> {
        batch
            .iter()
            .map(|job| Err(db_failed(&job.work, e)))
            .collect()
    };
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return failed(&e),
    };
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let r = match &job.work {
            Work::Put { key, value, quota } => match kv::put(&tx, &job.ns, key, value, *quota) {
                Ok(()) => Ok(json!({})),
                Err(e @ KvError::Quota { .. }) => {
                    Err(CallError::new(ErrorCode::Denied, format!("kv {e}")))
                }
                Err(KvError::Db(e)) => return failed(&e),
            },
            Work::Delete { key } => match kv::delete(&tx, &job.ns, key) {
                Ok(deleted) => Ok(json!({ "deleted": deleted })),
                Err(e) => return failed(&e),
            },
            Work::Get { .. } | Work::List { .. } | Work::Dial(_) | Work::Open { .. } => Err(
                CallError::new(ErrorCode::Internal, "a read was queued to the writer"),
            ),
        };
        results.push(r);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, ns: &Arc<str>) -> Job {
        Job {
            seq,
            ns: Arc::clone(ns),
            work: Work::Get { key: "k".into() },
            deadline: Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    /// More threads are asked for while more jobs could start than threads are
    /// free, never for a plugin at its limit, and never past IO_THREADS_MAX.
    #[test]
    fn the_io_queue_asks_for_threads_only_for_jobs_that_could_start() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("plugin:a"), Arc::from("plugin:b"));
        let q = IoQueue::default();
        q.state.lock().unwrap().threads = IO_THREADS;
        // Every thread busy: a's first two jobs could start, its third could not.
        assert!(q.push(job(0, &a)));
        assert!(q.push(job(1, &a)));
        assert!(!q.push(job(2, &a)), "a is at its limit");
        assert!(q.push(job(3, &b)));
        // The threads asked for come; two take a's jobs, one b's.
        assert_eq!(q.state.lock().unwrap().starting, 3);
        let taken: Vec<u64> = (0..3).map(|_| q.take(true).unwrap().0.seq).collect();
        assert_eq!(taken, [0, 3, 1]);
        assert_eq!(q.state.lock().unwrap().starting, 0);
        // A free thread serves the next job without another being asked for.
        q.state.lock().unwrap().idle = 1;
        assert!(!q.push(job(4, &b)));
        // And the pool stops growing at its maximum.
        let mut s = q.state.lock().unwrap();
        (s.idle, s.threads) = (0, IO_THREADS_MAX);
        drop(s);
        let c: Arc<str> = Arc::from("plugin:c");
        assert!(!q.push(job(5, &c)));
        assert_eq!(q.state.lock().unwrap().threads, IO_THREADS_MAX);
    }

    /// The I/O threads started with the first job are free for it: as many
    /// jobs as there are threads, from as many plugins, start no more threads
    /// (the first ones were not counted as free until they reached the queue,
    /// so the first dials after a start grew the pool while all four were
    /// about to take them).
    #[test]
    fn the_first_io_jobs_start_no_thread_beyond_the_first_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let egress = Arc::new(egress::Egress::parse(&["192.0.2.1:443".into()], &[]).unwrap());
        for trial in 0..20 {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let mut pool = Pool::start(&store, waker, 1).unwrap();
            for i in 0..IO_THREADS {
                let ns: Arc<str> = Arc::from(format!("plugin:p{i}"));
                let req = DialRequest {
                    host: egress::guard::parse_host("192.0.2.1").unwrap(),
                    port: 443,
                    timeout: std::time::Duration::from_secs(1),
                    egress: Arc::clone(&egress),
                };
                pool.submit(Job {
                    // Past its deadline: answered without dialling.
                    deadline: Instant::now(),
                    work: Work::Dial(req),
                    ..job(i as u64, &ns)
                });
            }
            let started = pool.io_started;
            drop(pool.finish());
            assert!(
                started <= IO_THREADS,
                "trial {trial}: {IO_THREADS} jobs of {IO_THREADS} plugins at first use started {started} I/O threads"
            );
        }
    }

    /// An I/O thread beyond the first ones that ends after IO_IDLE_END idle is
    /// gone: the pool keeps no handle of it. Its JoinHandle stayed in
    /// `Pool::threads` until warden stopped, and glibc frees a joinable
    /// thread's stack only when it is joined: every grow-and-shrink of the
    /// pool kept up to 28 dead threads' stacks for the life of `warden serve`.
    #[test]
    fn io_threads_that_ended_idle_are_not_kept() {
        // A loopback listener whose accept queue is full: connects hang.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        // SAFETY: listen(2) on a socket we own, with a backlog of 0.
        let r = unsafe { libc::listen(fd, 0) };
        assert_eq!(r, 0);
        let port = l.local_addr().unwrap().port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let _held: Vec<_> = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
            })
            .collect();
        let egress = Arc::new(
            egress::Egress::parse(&[format!("127.0.0.1:{port}")], &["127.0.0.1".into()]).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let mut pool = Pool::start(&store, waker, 1).unwrap();
        // Five plugins with two hanging dials each: more than the first four
        // threads are needed.
        for i in 0..10u64 {
            let ns: Arc<str> = Arc::from(format!("plugin:p{}", i / 2));
            let req = DialRequest {
                host: egress::guard::parse_host("127.0.0.1").unwrap(),
                port,
                timeout: Duration::from_secs(1),
                egress: Arc::clone(&egress),
            };
            pool.submit(Job {
                deadline: Instant::now() + Duration::from_secs(1),
                work: Work::Dial(req),
                ..job(i, &ns)
            });
        }
        let grown = pool.io_started;
        assert!(
            grown > IO_THREADS,
            "the pool did not grow ({grown} threads)"
        );
        // The dials end after 1 s; the extra threads 30 s after that.
        std::thread::sleep(IO_IDLE_END + Duration::from_secs(3));
        let live = pool.io.as_ref().unwrap().state.lock().unwrap().threads;
        assert_eq!(live, IO_THREADS, "the extra threads did not end");
        let dead = pool.threads.iter().filter(|t| t.is_finished()).count();
        assert_eq!(
            dead, 0,
            "{dead} I/O threads that ended idle are still held, unjoined (of {grown} started)"
        );
    }

    /// Plugins take turns, each with at most IO_PER_PLUGIN running; once closed,
    /// what still waits is handed out to be cancelled.
    #[test]
    fn the_io_queue_takes_turns_and_cancels_on_close() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("plugin:a"), Arc::from("plugin:b"));
        let q = IoQueue::default();
        for seq in 0..4 {
            q.push(job(seq, &a));
        }
        q.push(job(10, &b));
        let order: Vec<u64> = (0..3).map(|_| q.take(false).unwrap().0.seq).collect();
        // a, b, a: then a is at its limit, so its other jobs wait.
        assert_eq!(order, [0, 10, 1]);
        q.done(&a);
        assert_eq!(q.take(false).map(|(j, c)| (j.seq, c)), Some((2, false)));
        q.close();
        assert_eq!(q.take(false).map(|(j, c)| (j.seq, c)), Some((3, true)));
        assert!(q.take(false).is_none());
    }

    /// A dial cancelled because warden stops is answered `unavailable`, and its
    /// audit record still names where it was to go.
    #[test]
    fn a_cancelled_dial_is_answered_and_names_its_destination() {
        let ns: Arc<str> = Arc::from("plugin:a");
        let egress = egress::Egress::parse(&["192.0.2.1:443".into()], &[]).unwrap();
        let req = DialRequest {
            host: egress::guard::parse_host("192.0.2.1").unwrap(),
            port: 443,
            timeout: std::time::Duration::from_secs(1),
            egress: Arc::new(egress),
        };
        let q = IoQueue::default();
        q.push(Job {
            work: Work::Dial(req),
            ..job(7, &ns)
        });
        q.close();
        let poll = mio::Poll::new().unwrap();
        let out = Completions {
            done: Mutex::new(Vec::new()),
            waker: Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap()),
        };
        io_worker(&q, &out);
        let done = out.done.lock().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].result.as_ref().unwrap_err().code,
            ErrorCode::Unavailable
        );
        let audit = done[0].audit.as_ref().unwrap();
        assert_eq!(
            (&audit["host"], &audit["port"]),
            (&json!("192.0.2.1"), &json!(443))
        );
    }
}
