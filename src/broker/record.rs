//! Where the broker's decisions go: the [`Recorder`] trait it calls for every
//! decision, and [`AuditRecorder`], which writes them to the tamper-evident audit
//! log from a thread of its own. Nothing here decides anything; it only records.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use super::priority::{Priority, CATCHING_UP, PROMOTE_AGE, PROMOTE_LEN};
use super::{Decision, PluginContext};
use serde_json::{Map, Value};

use crate::audit::{time, AuditLog, Event, Fields};
use crate::bundle::Capability;

/// One thing the broker decided, for the audit log.
#[derive(Debug)]
pub struct Record<'a> {
    pub plugin: &'a Arc<PluginContext>,
    /// `host_call`, `hello` or `channel`.
    pub kind: &'static str,
    /// The op's name: borrowed from the op table when the op is known.
    pub op: Cow<'static, str>,
    pub capability: Option<Capability>,
    pub decision: Decision,
    pub reason: &'a str,
    pub duration: Duration,
    /// When it was decided: microseconds since the Unix epoch (the line's `time`).
    pub time_us: i64,
    /// Op-specific fields (a dial's host, port, resolved and dialled address; an
    /// open's path), written under the event's `extra`.
    pub extra: Option<&'a serde_json::Map<String, Value>>,
}

/// Where audit records go.
pub trait Recorder {
    fn record(&mut self, r: &Record<'_>);

    /// Set once recording has failed; the loop owner must then stop serving
    /// (fail closed: no unaudited decisions).
    fn failure(&self) -> Option<String> {
        None
    }

    /// The longest the loop may sleep before it calls [`Recorder::watch`]
    /// (`None`: no limit).
    fn watch_within(&self) -> Option<Duration> {
        None
    }

    /// Called by the loop once per turn: lets the recorder check on its writer.
    fn watch(&self) {}
}

/// Records into the tamper-evident audit log from a thread of its own, so that
/// encoding, hashing, writing and fsync never stall the event loop. The loop only
/// appends to a queue; the audit thread drains it every millisecond while events
/// arrive (at once when [`AUDIT_BATCH`] wait), at least every flush interval, and
/// flushes the log per its fsync policy. [`AuditRecorder::close`] drains and flushes everything: nothing accepted
/// is lost on a clean stop. While decisions stream in the thread runs at idle
/// CPU priority, and the loop puts it back to normal when it falls behind (see
/// `priority`).
pub struct AuditRecorder {
    shared: Arc<AuditShared>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// Something was queued since the loop last called `watch`: that push
    /// already checked whether the audit thread is behind.
    pushed: std::cell::Cell<bool>,
    /// Events the loop holds, in order, because the queue's lock was taken when
    /// they came (see [`HOLD_MAX`]); handed over ahead of the next event, or at
    /// the loop's next turn.
    held: std::cell::RefCell<Vec<Queued>>,
}

/// Events the loop holds while it finds the queue's lock taken, before it waits
/// for the lock. The holder is the audit thread, which takes the lock for a
/// moment per batch; at idle priority it can be preempted inside that moment and
/// then not run again for milliseconds. The loop waited for it (promoting it
/// first): every plugin's calls stalled meanwhile. Now it goes on serving and
/// hands the events over at its next push or turn, and waits only when it holds
/// this many, or held the oldest for [`PROMOTE_AGE`]. Measured with `cargo bench
/// --bench broker` at 128 plugins (promotions traced by cause): the promotions
/// for a taken lock, about 8 a second and half of all, were gone. What that did
/// to p99 is within this 2-CPU machine's noise: p99 over the ceiling's p99 went
/// from a mean of 2.45x to 2.09x in one set of six interleaved pairs (lower in
/// five), from 1.77x to 1.96x in another of five with a build running, and in
/// long runs (12 s in 16 rounds) was 1.97x and 2.16x before, 2.21x and 1.88x
/// after.
const HOLD_MAX: usize = 1024;

/// Queued events at which the loop wakes the audit thread. Below it, the audit
/// thread wakes itself: every [`AUDIT_TICK`] while events keep coming, every
/// flush interval when idle. Self-timed wake-ups matter on a small machine: a
/// thread woken by the loop tends to be run on the loop's CPU, taking it from the
/// loop, while a timer wake-up lands on whichever CPU is idle.
pub const AUDIT_BATCH: usize = 2048;

/// How often the audit thread looks at the queue while events keep arriving.
const AUDIT_TICK: Duration = Duration::from_millis(1);

/// Lines the audit thread writes at normal priority before it yields the CPU:
/// when it shares a CPU with the event loop (or a plugin), the loop then waits
/// for a few dozen microseconds of hashing, not for a whole tick's batch (at idle
/// priority it needs no yield: the loop preempts it). Measured: p99 at 16
/// plugins halves (about 650 -> 300 µs), throughput unchanged.
///
/// A thread catching up (a batch of [`CATCHING_UP`] or more) does not yield: each
/// yield gives up the rest of its fair share (the scheduler pushes its deadline a
/// whole slice back). On CPUs kept busy by the loop and plugins it then wrote
/// slower than decisions came, the queue stayed full, and the loop waited about
/// 10 ms for room every 40 ms. Measured with `cargo bench --bench broker`, 128
/// plugins, one 1-second round (`WARDEN_BENCH_ROUNDS=1 WARDEN_BENCH_SECS=1`):
/// p99 9.0-9.7 ms in 7 of 8 runs before, 0.86-1.27 ms in 5 of 6 after (3.2 ms
/// in one).
const AUDIT_YIELD_EVERY: usize = 16;

/// Queued events at which the loop stops and waits for the audit thread, so that
/// a loop producing decisions faster than they can be hashed and written cannot
/// grow the queue without limit (back-pressure, never a drop).
pub const AUDIT_QUEUE_MAX: usize = 8192;

/// The most events the audit thread takes from the queue at once. A loop that
/// finds the queue full so waits for one such batch to be written (about 3 ms at
/// 1.6 µs per line), not for everything the queue held (8192 events, about
/// 13 ms). As many as mark a batch as catching up, so a thread that is behind
/// writes batch after batch without yields.
const AUDIT_BATCH_MAX: usize = CATCHING_UP;

/// Tries the loop makes for the queue's lock before it takes a holder for a
/// preempted idle-priority audit thread (a few microseconds in all).
const LOCK_SPINS: u32 = 200;

/// What waits for the audit thread: an event the loop owner built, or one broker
/// decision, which shares the plugin's identity instead of copying its strings.
enum Queued {
    /// An event and when it was queued (microseconds since the epoch). Boxed:
    /// events are rare, and unboxed they would make every queued decision 2.5
    /// times as large (264 instead of 104 bytes, memory the loop writes and the
    /// audit thread reads for each call).
    Event(Box<Event>, i64),
    Decision(Decided),
}

struct Decided {
    plugin: Arc<PluginContext>,
    kind: &'static str,
    op: Cow<'static, str>,
    capability: Option<Capability>,
    decision: Decision,
    reason: Option<String>,
    duration_us: u64,
    time_us: i64,
    extra: Option<Box<Map<String, Value>>>,
}

impl Queued {
    /// When it happened, for the line's `time`.
    fn time_us(&self) -> i64 {
        match self {
            Queued::Event(_, t) => *t,
            Queued::Decision(d) => d.time_us,
        }
    }

    fn fields(&self) -> Fields<'_> {
        match self {
            Queued::Event(e, _) => e.fields(),
            Queued::Decision(d) => Fields {
                kind: d.kind,
                plugin: Some(&d.plugin.id),
                version: Some(&d.plugin.version),
                sha256: Some(&d.plugin.sha256),
                op: Some(&d.op),
                capability: d.capability.map(Capability::as_str),
                decision: Some(d.decision),
                reason: d.reason.as_deref(),
                duration_us: Some(d.duration_us),
                extra: d.extra.as_deref(),
            },
        }
    }
}

struct AuditShared {
    queue: Mutex<Vec<Queued>>,
    wake: Condvar,
    /// Signalled when a full queue was taken (the loop may be waiting for room).
    room: Condvar,
    stop: AtomicBool,
    /// When the oldest event of the batch the audit thread is writing was
    /// queued (µs since the epoch), 0 between batches. Set under the queue lock
    /// as the batch leaves the queue, so the loop never loses sight of it.
    writing_since: AtomicI64,
    /// Set when the audit thread has ended (stopped or failed): nobody drains.
    ended: AtomicBool,
    failed: Mutex<Option<String>>,
    /// The audit thread's CPU priority (idle while streaming, see `priority`).
    priority: Priority,
}

impl AuditShared {
    /// The queue, for a loop that must wait for it (see [`HOLD_MAX`]). A lock
    /// held for longer than a few spins may mean an idle-priority audit thread
    /// preempted while holding it: it is promoted before we wait.
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        use std::sync::TryLockError;
        // A running holder lets go within a few hundred nanoseconds.
        for _ in 0..LOCK_SPINS {
            match self.queue.try_lock() {
                Ok(q) => return q,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        self.priority.promote();
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue, when its lock is free; else `None` while the loop may go on
    /// holding `held` at `now_us` (fewer than [`HOLD_MAX`], the oldest younger
    /// than [`PROMOTE_AGE`]), and past that the queue after waiting for it.
    fn queue_unless_held(
        &self,
        held: &[Queued],
        now_us: i64,
    ) -> Option<std::sync::MutexGuard<'_, Vec<Queued>>> {
        use std::sync::TryLockError;
        let young =
            |q: &Queued| now_us.saturating_sub(q.time_us()) < PROMOTE_AGE.as_micros() as i64;
        match self.queue.try_lock() {
            Ok(q) => Some(q),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock)
                if held.len() < HOLD_MAX && held.first().is_none_or(young) =>
            {
                None
            }
            Err(TryLockError::WouldBlock) => Some(self.lock_queue()),
        }
    }

    /// Waits (waking the audit thread) until `incoming` more events fit in the
    /// queue, unless the audit thread has ended: back-pressure, never a drop.
    fn room_for<'a>(
        &'a self,
        mut q: std::sync::MutexGuard<'a, Vec<Queued>>,
        incoming: usize,
    ) -> std::sync::MutexGuard<'a, Vec<Queued>> {
        while q.len() + incoming > AUDIT_QUEUE_MAX && !self.ended.load(Ordering::Acquire) {
            self.wake.notify_one();
            q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q
    }

    /// Promotes an idle-priority audit thread that is behind at `now_us`.
    fn promote_if_behind(&self, q: &[Queued], now_us: i64) {
        if self.priority.is_idle() && self.behind(q, now_us) {
            self.priority.promote();
        }
    }

    /// Whether the audit thread is behind at `now_us`, given the queue `q` (read
    /// under its lock): the queue is long, or the oldest event not yet written
    /// (in the batch being written, else first in the queue) is old.
    fn behind(&self, q: &[Queued], now_us: i64) -> bool {
        let oldest = match self.writing_since.load(Ordering::Relaxed) {
            0 => q.first().map(Queued::time_us),
            t => Some(t),
        };
        q.len() >= PROMOTE_LEN
            || oldest.is_some_and(|t| now_us.saturating_sub(t) >= PROMOTE_AGE.as_micros() as i64)
    }
}

impl AuditRecorder {
    /// Starts the audit thread, which owns `log` from now on.
    pub fn start(log: AuditLog) -> AuditRecorder {
        let shared = Arc::new(AuditShared {
            queue: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            writing_since: AtomicI64::new(0),
            failed: Mutex::new(None),
            priority: Priority::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || {
                s.priority.register();
                let r = drain(&s, log);
                let _q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                s.ended.store(true, Ordering::Release);
                s.room.notify_all();
                r
            })
            .expect("spawning the audit thread");
        AuditRecorder {
            shared,
            thread: Some(thread),
            pushed: std::cell::Cell::new(false),
            held: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Whether the audit thread may run at idle CPU priority while decisions
    /// stream in (it may come back: CAP_SYS_NICE or RLIMIT_NICE >= 20).
    pub fn idle_priority(&self) -> bool {
        self.shared.priority.enabled()
    }

    /// Queues an event (launch, exit, ...) for the log.
    pub fn append(&self, e: Event) {
        self.push(Queued::Event(Box::new(e), time::micros(SystemTime::now())));
    }

    fn push(&self, item: Queued) {
        let s = &*self.shared;
        let now = item.time_us();
        let mut held = self.held.borrow_mut();
        let Some(q) = s.queue_unless_held(&held, now) else {
            held.push(item);
            self.pushed.set(true);
            return;
        };
        let mut q = s.room_for(q, held.len() + 1);
        let before = q.len();
        q.append(&mut held);
        q.push(item);
        if before < AUDIT_BATCH && q.len() >= AUDIT_BATCH {
            s.wake.notify_one();
        }
        s.promote_if_behind(&q, now);
        self.pushed.set(true);
    }

    /// Hands what the loop holds to the queue: when its lock is free, or (then
    /// waiting for it) when what is held is as many or as old as `push` holds.
    fn hand_over(&self) {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return;
        }
        let s = &*self.shared;
        let now = time::micros(SystemTime::now());
        if let Some(q) = s.queue_unless_held(&held, now) {
            let incoming = held.len();
            s.room_for(q, incoming).append(&mut held);
        }
    }

    /// Writes everything queued, flushes and closes the log.
    pub fn close(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        {
            // Under the queue's lock: the thread reads `stop` under it before it
            // waits, so this wake-up cannot fall between its check and its wait.
            // What the loop still holds goes in first: written like the rest.
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.append(self.held.get_mut());
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("audit thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for AuditRecorder {
    /// Every path that drops the recorder (an early return, an error, a loop
    /// owner that does not call `close`) still drains, syncs and closes the log:
    /// nothing accepted is lost on a clean stop. Here the error has no caller to
    /// go to, so it is said on stderr.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warden: {e}");
        }
    }
}

/// Moves the oldest queued events, at most [`AUDIT_BATCH_MAX`], into `spare` (an
/// empty buffer) and returns it as the batch to write; the rest stay queued, in
/// order. A queue that fits is swapped whole, leaving `spare` as the queue.
fn take_oldest(q: &mut Vec<Queued>, mut spare: Vec<Queued>) -> Vec<Queued> {
    if q.len() <= AUDIT_BATCH_MAX {
        return std::mem::replace(q, spare);
    }
    spare.extend(q.drain(..AUDIT_BATCH_MAX));
    spare
}

/// The audit thread's work: writes what is queued, at least every flush interval
/// (every tick while events arrive, at once when [`AUDIT_BATCH`] wait), until
/// stopped or failed.
fn drain(s: &AuditShared, mut log: AuditLog) -> Result<(), String> {
    let interval = log.flush_interval();
    let path = log.path().display().to_string();
    let fail = |e: &dyn std::fmt::Display| {
        let msg = format!("audit log {path}: {e}");
        s.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(msg.clone());
        msg
    };
    let mut busy = false;
    // The batch's buffer, emptied and handed back to the queue for the loop to
    // fill next: the loop then neither regrows a queue from nothing (moving every
    // queued event at each doubling) nor frees on this thread what it allocated.
    let mut spare: Vec<Queued> = Vec::new();
    loop {
        let mut batch = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < AUDIT_BATCH && !s.stop.load(Ordering::Acquire) {
                // Sleep for a tick while busy, else until what is buffered is due.
                let due = log.flush_due().unwrap_or(interval);
                let due = if busy { due.min(AUDIT_TICK) } else { due };
                q = s
                    .wake
                    .wait_timeout(q, due)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let full = q.len() >= AUDIT_QUEUE_MAX;
            let batch = take_oldest(&mut q, std::mem::take(&mut spare));
            s.writing_since
                .store(batch.first().map_or(0, Queued::time_us), Ordering::Relaxed);
            if full {
                s.room.notify_all();
            }
            batch
        };
        busy = !batch.is_empty();
        if busy {
            s.priority.before_batch(batch.len());
        } else {
            s.priority.on_empty();
        }
        let yields = batch.len() < CATCHING_UP;
        for (i, q) in batch.iter().enumerate() {
            if let Err(e) = log.append_at(&q.fields(), q.time_us()) {
                return Err(fail(&e));
            }
            // At idle priority whoever wants the CPU takes it anyway.
            if yields && i % AUDIT_YIELD_EVERY == AUDIT_YIELD_EVERY - 1 && !s.priority.is_idle() {
                std::thread::yield_now();
            }
        }
        s.writing_since.store(0, Ordering::Relaxed);
        batch.clear();
        if batch.capacity() > AUDIT_BATCH {
            // A backlog's buffer is not kept for a stream that has caught up.
            batch.shrink_to(AUDIT_BATCH);
        }
        spare = batch;
        let empty = s.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        if s.stop.load(Ordering::Acquire) && empty {
            // One sync for everything at the end.
            return log.close().map_err(|e| fail(&e));
        }
        // Written and synced per the log's flush interval and buffer size, not per
        // batch: a busy loop must not turn into one fdatasync per few events.
        if log.flush_due() == Some(Duration::ZERO) {
            if let Err(e) = log.flush() {
                return Err(fail(&e));
            }
        }
    }
}

impl Recorder for AuditRecorder {
    fn record(&mut self, r: &Record<'_>) {
        self.push(Queued::Decision(Decided {
            plugin: Arc::clone(r.plugin),
            kind: r.kind,
            op: r.op.clone(),
            capability: r.capability,
            decision: r.decision,
            reason: (!r.reason.is_empty()).then(|| r.reason.to_owned()),
            duration_us: r.duration.as_micros() as u64,
            time_us: r.time_us,
            extra: r.extra.filter(|x| !x.is_empty()).cloned().map(Box::new),
        }));
    }

    fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// While the audit thread is at idle priority the loop looks at it at least
    /// every [`PROMOTE_AGE`], so that a thread starved by busy CPUs is promoted
    /// even when no new decision comes. Half that: the first turn after a push
    /// skips its look (the push just looked), so the second one looks.
    /// Events the loop holds are handed over within a tick.
    fn watch_within(&self) -> Option<Duration> {
        if !self.held.borrow().is_empty() {
            return Some(AUDIT_TICK);
        }
        self.shared.priority.is_idle().then_some(PROMOTE_AGE / 2)
    }

    fn watch(&self) {
        self.hand_over();
        let s = &*self.shared;
        // A turn that queued decisions checked at each push; only a quiet turn
        // needs to look (and take the queue's lock).
        if !self.pushed.replace(false) && s.priority.is_idle() {
            let now = time::micros(SystemTime::now());
            s.promote_if_behind(&s.lock_queue(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_files, AuditConfig, VerifyReport};

    fn context() -> Arc<PluginContext> {
        Arc::new(PluginContext {
            id: "p".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            declared: vec![],
            granted: vec![],
            call_timeout: Duration::from_secs(1),
            rate: crate::broker::Rate::default(),
            rate_overrides: vec![],
            kv_quota: crate::store::kv::Quota::default(),
            blocked: false,
            egress: None,
            files: None,
        })
    }

    /// Records `n` decisions as fast as the loop could, the i-th decided at
    /// `time_us(i)`.
    fn record_many(rec: &mut AuditRecorder, n: usize, time_us: impl Fn(usize) -> i64) {
        let ctx = context();
        for i in 0..n {
            rec.record(&Record {
                plugin: &ctx,
                kind: "host_call",
                op: Cow::Borrowed("kv.get"),
                capability: Some(Capability::KvRead),
                decision: Decision::Allow,
                reason: if i % 2 == 0 { "" } else { "why" },
                duration: Duration::from_micros(i as u64),
                time_us: time_us(i),
                extra: None,
            });
        }
    }

    fn assert_intact(path: &std::path::Path, n: usize) {
        match verify_files(&[path.to_path_buf()]).unwrap() {
            VerifyReport::Intact { events, .. } => assert_eq!(events, n as u64),
            other => panic!("{other:?}"),
        }
    }

    /// More decisions than the queue holds, as fast as the loop can make them: the
    /// loop waits for room rather than dropping, and every one is in the log.
    #[test]
    fn a_full_queue_holds_the_loop_back_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        let n = AUDIT_QUEUE_MAX * 3 + 7;
        record_many(&mut rec, n, |i| 1_700_000_000_000_000 + i as i64);
        assert!(rec.shared.queue.lock().unwrap().len() <= AUDIT_QUEUE_MAX);
        rec.close().unwrap();
        assert_intact(&path, n);
        // Each line carries the time of its decision, not of its writing, and the
        // lines are in the order of the decisions.
        let text = std::fs::read_to_string(&path).unwrap();
        let times: Vec<i64> = text
            .lines()
            .map(|l| crate::audit::line::parse(l.as_bytes()).unwrap().time_us)
            .collect();
        let expected: Vec<i64> = (0..n).map(|i| 1_700_000_000_000_000 + i as i64).collect();
        assert_eq!(times, expected);
    }

    /// Takes the audit queue's lock on a thread of its own, as an audit thread
    /// preempted inside its moment with the lock would hold it, and returns
    /// once it is taken. The thread lets go when `release` receives, or after
    /// `max`; it then returns whether it was released (not timed out), and
    /// `freed` is set just before the lock is.
    fn take_queue_lock(
        rec: &AuditRecorder,
        max: Duration,
    ) -> (
        std::sync::mpsc::Sender<()>,
        Arc<AtomicBool>,
        std::thread::JoinHandle<bool>,
    ) {
        let shared = Arc::clone(&rec.shared);
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let freed = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&freed);
        let holder = std::thread::spawn(move || {
            let q = shared.queue.lock().unwrap();
            taken_tx.send(()).unwrap();
            let released = release_rx.recv_timeout(max).is_ok();
            set.store(true, Ordering::SeqCst);
            drop(q);
            released
        });
        taken_rx.recv().unwrap();
        (release, freed, holder)
    }

    fn times_in(path: &std::path::Path) -> Vec<i64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| crate::audit::line::parse(l.as_bytes()).unwrap().time_us)
            .collect()
    }

    /// While the queue's lock is taken, the loop does not wait for it: it holds
    /// its decisions and goes on, and hands them over, in order, at its next
    /// turn once the lock is free (it waited, and every plugin with it).
    #[test]
    fn a_taken_queue_lock_does_not_hold_the_loop_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        let (release, _, holder) = take_queue_lock(&rec, Duration::from_secs(10));
        let base = time::micros(SystemTime::now());
        record_many(&mut rec, 100, |i| base + i as i64);
        assert_eq!(rec.held.borrow().len(), 100);
        assert_eq!(rec.watch_within(), Some(AUDIT_TICK));
        // Still taken: the turn keeps holding them.
        rec.watch();
        assert_eq!(rec.held.borrow().len(), 100);
        let _ = release.send(());
        assert!(holder.join().unwrap(), "the loop waited for the lock");
        rec.watch();
        assert!(rec.held.borrow().is_empty());
        // Held, then queued behind them: all in order.
        record_many(&mut rec, 5, |i| base + 100 + i as i64);
        rec.close().unwrap();
        assert_intact(&path, 105);
        assert_eq!(
            times_in(&path),
            (0..105).map(|i| base + i).collect::<Vec<_>>()
        );
    }

    /// What the loop holds is bounded: at [`HOLD_MAX`] events, or once it has
    /// held the oldest for [`PROMOTE_AGE`], it waits for the lock after all.
    #[test]
    fn the_loop_holds_at_most_hold_max_events_for_at_most_promote_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        let wait = Duration::from_millis(300);
        let base = time::micros(SystemTime::now());
        let (_release, freed, holder) = take_queue_lock(&rec, wait);
        record_many(&mut rec, HOLD_MAX + 1, |i| base + i as i64);
        assert!(freed.load(Ordering::SeqCst), "held more than HOLD_MAX");
        assert!(rec.held.borrow().is_empty());
        assert!(!holder.join().unwrap());
        let age = PROMOTE_AGE.as_micros() as i64;
        let (_release, freed, holder) = take_queue_lock(&rec, wait);
        record_many(&mut rec, 2, |i| base + HOLD_MAX as i64 + 1 + i as i64 * age);
        assert!(freed.load(Ordering::SeqCst), "held longer than PROMOTE_AGE");
        assert!(!holder.join().unwrap());
        rec.close().unwrap();
        assert_intact(&path, HOLD_MAX + 3);
    }

    /// A long queue gives up its oldest events, at most a batch's worth, and keeps
    /// the rest in order; a short one is taken whole.
    #[test]
    fn the_audit_thread_takes_the_oldest_batch() {
        let event = |i: usize| {
            let e = Event {
                kind: "test",
                ..Event::default()
            };
            Queued::Event(Box::new(e), i as i64)
        };
        let mut q: Vec<Queued> = (0..AUDIT_BATCH_MAX + 5).map(event).collect();
        let batch = take_oldest(&mut q, Vec::new());
        let times = |v: &[Queued]| v.iter().map(Queued::time_us).collect::<Vec<_>>();
        assert_eq!(
            times(&batch),
            (0..AUDIT_BATCH_MAX as i64).collect::<Vec<_>>()
        );
        let rest = AUDIT_BATCH_MAX as i64..AUDIT_BATCH_MAX as i64 + 5;
        assert_eq!(times(&q), rest.clone().collect::<Vec<_>>());
        let batch = take_oldest(&mut q, Vec::new());
        assert_eq!(times(&batch), rest.collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    /// The loop judges the audit thread by its oldest unwritten event, also
    /// when that event has already left the queue in the batch being written.
    #[test]
    fn behind_counts_the_batch_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let rec = AuditRecorder::start(
            AuditLog::open(AuditConfig::new(dir.path().join("audit.log"))).unwrap(),
        );
        let s = &*rec.shared;
        let now = time::micros(SystemTime::now());
        let age = PROMOTE_AGE.as_micros() as i64;
        assert!(!s.behind(&[], now));
        s.writing_since.store(now - age / 2, Ordering::Relaxed);
        assert!(!s.behind(&[], now));
        s.writing_since.store(now - age, Ordering::Relaxed);
        assert!(
            s.behind(&[], now),
            "an old batch being written, an empty queue"
        );
        s.writing_since.store(0, Ordering::Relaxed);
        let event = Event {
            kind: "test",
            ..Event::default()
        };
        let old = Queued::Event(Box::new(event), now - age);
        assert!(s.behind(std::slice::from_ref(&old), now));
        rec.close().unwrap();
    }

    /// Every CPU busy with spinning threads of normal priority: an audit thread
    /// that went to idle priority would get almost no CPU at all (its weight is
    /// 3 against their 1024 each) and, once the queue is full, hold the loop
    /// back for many seconds (about 14 s here without promotion). The loop
    /// promotes it well before that (well under 1 s here).
    #[test]
    fn an_idle_priority_audit_thread_on_busy_cpus_is_promoted_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        if crate::broker::priority::unavailable_here(&rec.shared.priority) {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hogs: Vec<_> = (0..cpus)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        // Bursts in the size range that moves the audit thread to idle priority,
        // then one run of three full queues.
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            record_many(&mut rec, 256, |_| time::micros(SystemTime::now()));
            n += 256;
            std::thread::sleep(Duration::from_millis(2));
        }
        let went_idle = rec.shared.priority.is_idle();
        record_many(&mut rec, AUDIT_QUEUE_MAX * 3, |_| {
            time::micros(SystemTime::now())
        });
        n += AUDIT_QUEUE_MAX * 3;
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            h.join().unwrap();
        }
        rec.close().unwrap();
        assert_intact(&path, n);
        eprintln!("{n} decisions queued in {took:?} (went idle: {went_idle})");
        assert!(
            took < Duration::from_secs(5),
            "queueing {n} decisions took {took:?}: the starved audit thread held the loop back"
        );
    }

    /// A decision queued while the audit thread is idle is in the file within
    /// about one flush interval (docs/audit.md), not two: the log's interval
    /// started when the thread got to the event, up to an interval after it
    /// was queued.
    #[test]
    fn an_idle_queued_decision_is_written_within_one_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let interval = Duration::from_millis(200);
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = interval;
        let mut rec = AuditRecorder::start(AuditLog::open(cfg).unwrap());
        std::thread::sleep(Duration::from_millis(20)); // the thread is waiting
        record_many(&mut rec, 1, |_| time::micros(SystemTime::now()));
        let queued = std::time::Instant::now();
        let mut waited = Duration::ZERO;
        while std::fs::metadata(&path).unwrap().len() == 0 && waited < interval * 3 {
            std::thread::sleep(Duration::from_millis(5));
            waited = queued.elapsed();
        }
        rec.close().unwrap();
        assert!(
            waited < interval * 3 / 2,
            "a queued decision reached the file only {waited:?} after it was queued (flush interval {interval:?})"
        );
    }
}
