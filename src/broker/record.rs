//! Where the broker's decisions go: the [`Recorder`] trait it calls for every
//! decision, and [`AuditRecorder`], which writes them to the tamper-evident audit
//! log from a thread of its own. Nothing here decides anything; it only records.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

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
}

/// Records into the tamper-evident audit log from a thread of its own, so that
/// encoding, hashing, writing and fsync never stall the event loop. The loop only
/// appends to a queue; the audit thread drains it every millisecond while events
/// arrive (at once when [`AUDIT_BATCH`] wait), at least every flush interval, and
/// flushes the log per its fsync policy. [`AuditRecorder::close`] drains and flushes everything: nothing accepted
/// is lost on a clean stop.
pub struct AuditRecorder {
    shared: Arc<AuditShared>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// Queued events at which the loop wakes the audit thread. Below it, the audit
/// thread wakes itself: every [`AUDIT_TICK`] while events keep coming, every
/// flush interval when idle. Self-timed wake-ups matter on a small machine: a
/// thread woken by the loop tends to be run on the loop's CPU, taking it from the
/// loop, while a timer wake-up lands on whichever CPU is idle.
pub const AUDIT_BATCH: usize = 2048;

/// How often the audit thread looks at the queue while events keep arriving.
const AUDIT_TICK: Duration = Duration::from_millis(1);

/// Lines the audit thread writes before it yields the CPU: when it shares a CPU
/// with the event loop (or a plugin), the loop then waits for a few dozen
/// microseconds of hashing, not for a whole tick's batch. Measured: p99 at 16
/// plugins halves (about 650 -> 300 µs), throughput unchanged.
const AUDIT_YIELD_EVERY: usize = 16;

/// Queued events at which the loop stops and waits for the audit thread, so that
/// a loop producing decisions faster than they can be hashed and written cannot
/// grow the queue without limit (back-pressure, never a drop).
pub const AUDIT_QUEUE_MAX: usize = 8192;

/// What waits for the audit thread: an event the loop owner built, or one broker
/// decision, which shares the plugin's identity instead of copying its strings.
enum Queued {
    /// An event and when it was queued (microseconds since the epoch).
    Event(Event, i64),
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
    /// Set when the audit thread has ended (stopped or failed): nobody drains.
    ended: AtomicBool,
    failed: Mutex<Option<String>>,
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
            failed: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || {
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
        }
    }

    /// Queues an event (launch, exit, ...) for the log.
    pub fn append(&self, e: Event) {
        self.push(Queued::Event(e, time::micros(SystemTime::now())));
    }

    fn push(&self, item: Queued) {
        let s = &*self.shared;
        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q.len() >= AUDIT_QUEUE_MAX && !s.ended.load(Ordering::Acquire) {
            s.wake.notify_one();
            q = s.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.push(item);
        if q.len() == AUDIT_BATCH {
            s.wake.notify_one();
        }
    }

    /// Writes everything queued, flushes and closes the log.
    pub fn close(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("audit thread panicked".into())),
            None => Ok(()),
        }
    }
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
    loop {
        let batch = {
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
            let batch = std::mem::take(&mut *q);
            if batch.len() >= AUDIT_QUEUE_MAX {
                s.room.notify_all();
            }
            batch
        };
        busy = !batch.is_empty();
        for (i, q) in batch.iter().enumerate() {
            if let Err(e) = log.append_at(&q.fields(), q.time_us()) {
                return Err(fail(&e));
            }
            if i % AUDIT_YIELD_EVERY == AUDIT_YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_files, AuditConfig, VerifyReport};

    /// More decisions than the queue holds, as fast as the loop can make them: the
    /// loop waits for room rather than dropping, and every one is in the log.
    #[test]
    fn a_full_queue_holds_the_loop_back_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut rec = AuditRecorder::start(AuditLog::open(AuditConfig::new(&path)).unwrap());
        let ctx = Arc::new(PluginContext {
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
        });
        let n = AUDIT_QUEUE_MAX * 3 + 7;
        for i in 0..n {
            rec.record(&Record {
                plugin: &ctx,
                kind: "host_call",
                op: Cow::Borrowed("kv.get"),
                capability: Some(Capability::KvRead),
                decision: Decision::Allow,
                reason: if i % 2 == 0 { "" } else { "why" },
                duration: Duration::from_micros(i as u64),
                time_us: 1_700_000_000_000_000 + i as i64,
                extra: None,
            });
        }
        assert!(rec.shared.queue.lock().unwrap().len() <= AUDIT_QUEUE_MAX);
        rec.close().unwrap();
        match verify_files(std::slice::from_ref(&path)).unwrap() {
            VerifyReport::Intact { events, .. } => assert_eq!(events, n as u64),
            other => panic!("{other:?}"),
        }
        // Each line carries the time of its decision, not of its writing.
        let text = std::fs::read_to_string(&path).unwrap();
        let last = crate::audit::line::parse(text.lines().last().unwrap().as_bytes()).unwrap();
        assert_eq!(last.time_us, 1_700_000_000_000_000 + (n as i64 - 1));
    }
}
