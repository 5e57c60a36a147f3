//! Where the broker's decisions go: the [`Recorder`] trait it calls for every
//! decision, and [`AuditRecorder`], which writes them to the tamper-evident audit
//! log. Nothing here decides anything; it only records.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{Decision, PluginContext};
use serde_json::{Map, Value};

use crate::audit::{time, AuditLog, Chain, Event, Fields, LogFile, MAX_BUFFER};
use crate::bundle::Capability;

/// One thing the broker decided, for the audit log.
#[derive(Debug)]
pub struct Record<'a> {
    pub plugin: &'a Arc<PluginContext>,
    /// `host_call`, `hello` or `channel`.
    pub kind: &'static str,
    /// The op's name: borrowed from the op table when the op is known.
    pub op: std::borrow::Cow<'static, str>,
    pub capability: Option<Capability>,
    pub decision: Decision,
    pub reason: &'a str,
    pub duration: Duration,
    /// When it was decided: microseconds since the Unix epoch (the line's `time`).
    pub time_us: i64,
    /// Op-specific fields (a dial's host, port, resolved and dialled address; an
    /// open's path), written under the event's `extra`.
    pub extra: Option<&'a Map<String, Value>>,
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

    /// Called by the loop once per turn: lets the recorder pass on what is due.
    fn watch(&self) {}
}

/// Records into the tamper-evident audit log. The event loop encodes and hashes
/// each line itself, into a buffer of its own, and hands the buffer to a writer
/// thread (`warden-audit`) at [`CHUNK`] bytes or once its oldest line is
/// [`HAND_OVER_AFTER`] old (at every turn under the `EveryEvent` fsync policy).
/// The writer only writes and syncs, per the log's flush interval and fsync
/// policy, so the loop never waits for the disk; it waits only when the writer
/// falls [`QUEUE_MAX`] bytes behind (back-pressure, never a drop).
/// [`AuditRecorder::close`] hands over and writes everything: nothing accepted is
/// lost on a clean stop.
///
/// Why the loop hashes: on a small machine a third busy thread costs more than
/// the hashing. With an audit thread doing the encoding (about 0.8 µs a line, at
/// idle CPU priority, promoted when it fell behind), it, the loop and the plugins
/// contended for 2 CPUs, and a thread that waited for a CPU waited a scheduler
/// slice (`perf sched`: the plugins' side queued 0.9 ms behind the loop while a
/// promoted audit thread held the other CPU for 4.6 ms). `cargo bench --bench
/// broker`, 128 plugins, interleaved with that build: p99 over the ceiling's
/// 1.60-1.81x in 4 long runs (`WARDEN_BENCH_SECS=12 WARDEN_BENCH_ROUNDS=16`;
/// before 1.90-2.28x) and 1.13-1.51x in 3 default runs (before 1.63-2.24x);
/// throughput at 16 plugins unchanged (mean 0.74x the ceiling's over 5 pairs,
/// both). The writer's CPU per call fell from about 0.8 to 0.4 µs, the loop's
/// rose by about 0.5 µs.
pub struct AuditRecorder {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// The loop's side: the chain and the lines encoded since the last hand-over.
    lines: RefCell<Lines>,
    /// Hand lines over at every turn (fsync policy `EveryEvent`).
    every_turn: bool,
    /// How long the loop keeps a line before handing it over.
    hand_over_after: Duration,
    /// The log's live file, for errors.
    path: String,
}

/// Bytes of lines at which the loop hands them to the writer: one write(2).
pub const CHUNK: usize = MAX_BUFFER;

/// The longest the loop keeps a line before handing it to the writer (a quarter
/// of the flush interval when that is shorter): the interval, which runs from
/// when the event happened, is then almost all the writer's.
pub const HAND_OVER_AFTER: Duration = Duration::from_millis(5);

/// Bytes handed over and not yet taken by the writer at which the loop waits for
/// it (about 12,000 lines of 330 bytes): a loop deciding faster than the disk
/// takes lines cannot grow memory without limit.
pub const QUEUE_MAX: usize = 4 << 20;

/// Emptied chunk buffers kept for the loop to fill again.
const SPARE_MAX: usize = 8;

/// What the loop encoded and has not handed over yet.
struct Lines {
    chain: Chain,
    buf: Vec<u8>,
    /// When the first line in `buf` happened (µs since the epoch).
    oldest_us: i64,
    /// When the first line in `buf` was encoded, on the monotonic clock: the
    /// hand-over is timed from it, so that a wall clock stepped back cannot keep
    /// lines in the loop until it catches up with their time.
    held_since: Instant,
}

/// Lines handed to the writer, the oldest of which happened at `oldest_us`.
struct Chunk {
    lines: Vec<u8>,
    oldest_us: i64,
}

#[derive(Default)]
struct Queue {
    chunks: Vec<Chunk>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// Emptied buffers, handed back to the loop.
    spare: Vec<Vec<u8>>,
    /// Set by `close` after its last hand-over: the writer writes what is queued
    /// and closes the log.
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a chunk is queued or the writer must stop.
    wake: Condvar,
    /// Signalled when the writer took the queue (the loop may wait for room).
    room: Condvar,
    /// Set when the writer has ended (stopped or failed): nobody takes chunks.
    ended: AtomicBool,
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the first failure; returns the message.
    fn fail(&self, msg: String) -> String {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(msg)
            .clone()
    }

    /// Queues `lines` for the writer and returns an empty buffer for the next
    /// ones. Waits while [`QUEUE_MAX`] bytes are queued, unless the writer has
    /// ended: then the lines are dropped (the failure is already recorded and
    /// the loop's owner stops serving).
    fn queue(&self, lines: Vec<u8>, oldest_us: i64) -> Vec<u8> {
        let mut q = self.lock();
        while q.bytes > 0
            && q.bytes + lines.len() > QUEUE_MAX
            && !self.ended.load(Ordering::Acquire)
        {
            self.wake.notify_one();
            q = self.room.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        if self.ended.load(Ordering::Acquire) {
            let mut unwritten = lines;
            unwritten.clear();
            return unwritten;
        }
        let fresh = q.spare.pop().unwrap_or_default();
        q.bytes += lines.len();
        q.chunks.push(Chunk { lines, oldest_us });
        drop(q);
        self.wake.notify_one();
        fresh
    }
}

impl AuditRecorder {
    /// Starts the writer thread, which owns the log's file from now on; the
    /// chain stays with the recorder (the loop's thread).
    pub fn start(log: AuditLog) -> AuditRecorder {
        let interval = log.flush_interval();
        let path = log.path().display().to_string();
        let every_turn = log.fsync() == crate::audit::FsyncPolicy::EveryEvent;
        let (chain, file) = log.split();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            ended: AtomicBool::new(false),
            failed: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let p = path.clone();
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || {
                // A panic is a failure like any other: reported, and the loop
                // never waits for room from a writer that is gone.
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write(&s, file).map_err(|e| e.to_string())
                }));
                let r = match written {
                    Ok(r) => r,
                    Err(_) => Err("the audit writer thread panicked".into()),
                }
                .map_err(|e| s.fail(format!("audit log {p}: {e}")));
                let _q = s.lock();
                s.ended.store(true, Ordering::Release);
                s.room.notify_all();
                r
            })
            .expect("spawning the audit thread");
        AuditRecorder {
            shared,
            thread: Some(thread),
            lines: RefCell::new(Lines {
                chain,
                buf: Vec::new(),
                oldest_us: 0,
                held_since: Instant::now(),
            }),
            every_turn,
            hand_over_after: HAND_OVER_AFTER.min(interval / 4),
            path,
        }
    }

    /// Records an event (launch, exit, ...) that happens now, and hands the
    /// loop's lines over if they are due: the loop owner may append between
    /// turns while it does long work (a scan verifying and launching many
    /// plugins), and its lines must not wait for the next turn meanwhile.
    pub fn append(&self, e: Event) {
        self.add(&e.fields(), time::micros(SystemTime::now()));
        if self.hand_over_in() == Some(Duration::ZERO) {
            self.hand_over();
        }
    }

    /// Encodes one line into the loop's buffer; hands the buffer over when full.
    fn add(&self, f: &Fields<'_>, time_us: i64) {
        let mut l = self.lines.borrow_mut();
        let l = &mut *l;
        if l.buf.is_empty() {
            l.oldest_us = time_us;
            l.held_since = Instant::now();
        }
        if let Err(e) = l.chain.append_to(&mut l.buf, f, time_us) {
            self.shared.fail(format!("audit log {}: {e}", self.path));
            return;
        }
        if l.buf.len() >= CHUNK {
            let lines = std::mem::take(&mut l.buf);
            l.buf = self.shared.queue(lines, l.oldest_us);
        }
    }

    /// Hands what the loop holds to the writer.
    fn hand_over(&self) {
        let mut l = self.lines.borrow_mut();
        if !l.buf.is_empty() {
            let lines = std::mem::take(&mut l.buf);
            l.buf = self.shared.queue(lines, l.oldest_us);
        }
    }

    /// How long until the loop's oldest line is due to be handed over (`None`
    /// when it holds none).
    fn hand_over_in(&self) -> Option<Duration> {
        let l = self.lines.borrow();
        if l.buf.is_empty() {
            return None;
        }
        if self.every_turn {
            return Some(Duration::ZERO);
        }
        Some(self.hand_over_after.saturating_sub(l.held_since.elapsed()))
    }

    /// Hands everything over, writes it, flushes and closes the log.
    pub fn close(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        // Stopped already (`close`, then Drop): said then.
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.hand_over();
        {
            // Under the queue's lock, after the last hand-over: the writer takes
            // the queue and reads `stop` under it, so it writes everything.
            let mut q = self.shared.lock();
            q.stop = true;
            self.shared.wake.notify_one();
        }
        let written = thread
            .join()
            .unwrap_or_else(|_| Err("audit thread panicked".into()));
        // A line the loop could not encode is a failure even if everything
        // handed over was written.
        written.and(self.failure().map_or(Ok(()), Err))
    }
}

impl Drop for AuditRecorder {
    /// Every path that drops the recorder (an early return, an error, a loop
    /// owner that does not call `close`) still writes, syncs and closes the log:
    /// nothing accepted is lost on a clean stop. Here the error has no caller to
    /// go to, so it is said on stderr.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warden: {e}");
        }
    }
}

/// The writer thread's work: writes what is handed over and flushes when the
/// log says a flush is due, until stopped (then closes the log) or failed.
fn write(s: &Shared, mut file: LogFile) -> Result<(), crate::audit::AuditError> {
    let mut written: Vec<Vec<u8>> = Vec::new();
    loop {
        let (chunks, stop) = {
            let mut q = s.lock();
            for mut b in written.drain(..) {
                if q.spare.len() < SPARE_MAX {
                    b.clear();
                    q.spare.push(b);
                }
            }
            while q.chunks.is_empty() && !q.stop {
                q = match file.flush_due() {
                    Some(d) if d.is_zero() => break,
                    Some(d) => {
                        s.wake
                            .wait_timeout(q, d)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => s.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
                };
            }
            q.bytes = 0;
            if !q.chunks.is_empty() {
                s.room.notify_all();
            }
            (std::mem::take(&mut q.chunks), q.stop)
        };
        for c in chunks {
            file.append_lines(&c.lines, c.oldest_us)?;
            written.push(c.lines);
        }
        if stop {
            // One sync for everything at the end.
            return file.close();
        }
        if file.flush_due() == Some(Duration::ZERO) {
            file.flush()?;
        }
    }
}

impl Recorder for AuditRecorder {
    fn record(&mut self, r: &Record<'_>) {
        self.add(
            &Fields {
                kind: r.kind,
                plugin: Some(&r.plugin.id),
                version: Some(&r.plugin.version),
                sha256: Some(&r.plugin.sha256),
                op: Some(&r.op),
                capability: r.capability.map(Capability::as_str),
                decision: Some(r.decision),
                reason: (!r.reason.is_empty()).then_some(r.reason),
                duration_us: Some(r.duration.as_micros() as u64),
                extra: r.extra,
            },
            r.time_us,
        );
    }

    fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The loop wakes in time to hand its oldest line over.
    fn watch_within(&self) -> Option<Duration> {
        self.hand_over_in()
    }

    fn watch(&self) {
        if self.hand_over_in() == Some(Duration::ZERO) {
            self.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_files, AuditConfig, FsyncPolicy, VerifyReport};
    use std::borrow::Cow;
    use std::time::Instant;

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

    fn times_in(path: &std::path::Path) -> Vec<i64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| crate::audit::line::parse(l.as_bytes()).unwrap().time_us)
            .collect()
    }

    /// Runs the loop's side as an idle event loop would: sleeps as long as
    /// `watch_within` allows, then calls `watch`, until nothing is held.
    fn idle_turns(rec: &AuditRecorder) {
        while let Some(d) = rec.watch_within() {
            std::thread::sleep(d);
            rec.watch();
        }
    }

    /// More lines than the queue holds, as fast as the loop can make them: every
    /// one is in the log, in the order of the decisions, each with the time of
    /// its decision, not of its writing.
    #[test]
    fn every_decision_is_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        let n = 2 * QUEUE_MAX / 330 + 7;
        record_many(&mut rec, n, |i| 1_700_000_000_000_000 + i as i64);
        rec.close().unwrap();
        assert_intact(&path, n);
        let expected: Vec<i64> = (0..n).map(|i| 1_700_000_000_000_000 + i as i64).collect();
        assert_eq!(times_in(&path), expected);
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            ended: AtomicBool::new(false),
            failed: Mutex::new(None),
        })
    }

    /// With QUEUE_MAX bytes waiting for the writer the loop waits (nothing is
    /// dropped), until the writer takes them.
    #[test]
    fn a_full_queue_holds_the_loop_back_until_the_writer_takes_it() {
        let s = shared();
        s.lock().bytes = QUEUE_MAX;
        let queued = Arc::new(AtomicBool::new(false));
        let (s2, done) = (Arc::clone(&s), Arc::clone(&queued));
        let lp = std::thread::spawn(move || {
            s2.queue(b"line\n".to_vec(), 1);
            done.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!queued.load(Ordering::SeqCst), "queued past QUEUE_MAX");
        s.lock().bytes = 0;
        s.room.notify_all();
        lp.join().unwrap();
        assert!(queued.load(Ordering::SeqCst));
        let q = s.lock();
        assert_eq!((q.chunks.len(), q.bytes), (1, 5));
    }

    /// Once the writer has ended (failed) the loop is never held back: what it
    /// hands over is dropped, since the loop's owner stops on the failure.
    #[test]
    fn an_ended_writer_never_holds_the_loop() {
        let s = shared();
        s.lock().bytes = QUEUE_MAX;
        s.ended.store(true, Ordering::Release);
        let fresh = s.queue(vec![b'x'; 100], 1);
        assert!(fresh.is_empty());
        assert!(s.lock().chunks.is_empty());
    }

    /// A decision is handed over within HAND_OVER_AFTER by an idle loop and is
    /// in the file within about one flush interval of being decided
    /// (docs/audit.md).
    #[test]
    fn a_lone_decision_is_written_within_one_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let interval = Duration::from_millis(200);
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = interval;
        let mut rec = AuditRecorder::start(AuditLog::open(cfg).unwrap());
        assert_eq!(rec.watch_within(), None);
        let decided = Instant::now();
        record_many(&mut rec, 1, |_| time::micros(SystemTime::now()));
        let within = rec.watch_within().expect("a line is held");
        assert!(within <= HAND_OVER_AFTER, "{within:?}");
        idle_turns(&rec);
        assert!(rec.lines.borrow().buf.is_empty());
        while std::fs::metadata(&path).unwrap().len() == 0 && decided.elapsed() < interval * 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let waited = decided.elapsed();
        rec.close().unwrap();
        assert!(
            waited < interval * 3 / 2,
            "a decision reached the file only {waited:?} after it was made (flush interval {interval:?})"
        );
        assert_intact(&path, 1);
    }

    /// Under EveryEvent the loop hands its lines over at every turn, and the
    /// writer writes and syncs them at once.
    #[test]
    fn every_event_hands_over_at_every_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.fsync = FsyncPolicy::EveryEvent;
        cfg.flush_interval = Duration::from_secs(3600);
        let mut rec = AuditRecorder::start(AuditLog::open(cfg).unwrap());
        record_many(&mut rec, 3, |i| 1_700_000_000_000_000 + i as i64);
        assert_eq!(rec.watch_within(), Some(Duration::ZERO));
        rec.watch();
        assert_eq!(rec.watch_within(), None);
        let t = Instant::now();
        while std::fs::metadata(&path).unwrap().len() == 0 && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_intact(&path, 3);
        rec.close().unwrap();
    }

    /// A writer that fails (the live file was deleted) is reported, naming the
    /// log, and does not hold back a loop that goes on deciding.
    #[test]
    fn a_failed_writer_is_reported_and_holds_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = Duration::from_millis(20);
        let mut rec = AuditRecorder::start(AuditLog::open(cfg).unwrap());
        std::fs::remove_file(&path).unwrap();
        record_many(&mut rec, 1, |_| time::micros(SystemTime::now()));
        idle_turns(&rec);
        let t = Instant::now();
        while rec.failure().is_none() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let why = rec.failure().expect("the writer's failure is reported");
        assert!(why.contains(&path.display().to_string()), "{why}");
        record_many(&mut rec, 2 * QUEUE_MAX / 300, |i| i as i64);
        assert!(rec.close().is_err());
    }

    /// The wall clock stepped back (NTP, an operator's `date`, a resumed VM)
    /// after a decision was stamped: its line is still handed over within
    /// HAND_OVER_AFTER, not held until the clock catches up with its time.
    #[test]
    fn a_clock_stepped_back_does_not_hold_lines_in_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        // Decided "an hour from now": as if the clock went back an hour since.
        let hour = 3_600_000_000;
        record_many(&mut rec, 1, |_| time::micros(SystemTime::now()) + hour);
        let t = Instant::now();
        while let Some(d) = rec.watch_within() {
            if t.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(d);
            rec.watch();
        }
        assert!(
            rec.lines.borrow().buf.is_empty(),
            "the line was still held by the loop {:?} after it was recorded",
            t.elapsed()
        );
        rec.close().unwrap();
        assert_intact(&path, 1);
    }

    /// The loop owner's own events while the loop does long work between turns
    /// (a scan verifying and launching many plugins): each is in the file within
    /// about one flush interval of happening, as when the loop is idle, not only
    /// once the loop turns again.
    #[test]
    fn events_appended_during_a_long_turn_are_written_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let interval = Duration::from_millis(100);
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = interval;
        let rec = AuditRecorder::start(AuditLog::open(cfg).unwrap());
        let launch = || Event {
            kind: "launch",
            ..Event::default()
        };
        let first = Instant::now();
        rec.append(launch());
        // No turn (no watch) meanwhile: the loop is busy launching.
        while std::fs::metadata(&path).unwrap().len() == 0 && first.elapsed() < interval * 4 {
            std::thread::sleep(Duration::from_millis(10));
            rec.append(launch());
        }
        let waited = first.elapsed();
        drop(rec);
        assert!(
            waited < interval * 3 / 2,
            "the first event reached the file only {waited:?} after it happened (flush interval {interval:?})"
        );
    }

    /// An event the chain cannot encode (an empty kind) fails the recorder at
    /// once: the loop's owner stops rather than serve unaudited.
    #[test]
    fn an_event_that_cannot_be_encoded_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let rec = AuditRecorder::start(
            AuditLog::open(AuditConfig::new(dir.path().join("audit.log"))).unwrap(),
        );
        rec.append(Event {
            kind: "",
            ..Event::default()
        });
        let why = rec.failure().expect("an encoding failure is reported");
        assert!(why.contains("audit.log"), "{why}");
        // And by close, though everything handed over was written.
        assert_eq!(rec.close(), Err(why));
    }
}
