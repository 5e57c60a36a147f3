//! The audit thread's CPU priority.
//!
//! While decisions stream in, the audit thread hashes and writes at SCHED_IDLE:
//! on CPU time that neither the event loop nor any plugin wants. On a small
//! machine it then stops taking a CPU away from them, since whichever of them
//! wakes preempts it at once. Measured with `cargo bench --bench broker` on
//! 2 CPUs: the machine went from about 70 % to about 88 % busy, and calls/s at
//! 16 plugins rose by about a fifth.
//!
//! Background priority must never mean "audited late" or "the loop waits". So
//! the thread returns to normal priority whenever it may be falling behind:
//! - when the loop finds the queue [`PROMOTE_LEN`] long, or its oldest event
//!   older than [`PROMOTE_AGE`], on a push or on its own turns;
//! - when the loop must wait for the queue's lock and finds it held for more
//!   than a few spins (the thread may have been preempted holding it). The loop
//!   seldom waits: while the lock is taken it holds its events and goes on
//!   serving (up to `HOLD_MAX` events or [`PROMOTE_AGE`], see `record`);
//! - by itself, when it finds the queue empty.
//!
//! It goes back to idle priority only for a batch that shows it keeping up
//! (at least [`STREAM`] events, fewer than half of [`PROMOTE_LEN`]). Under CPUs
//! busy with other work the priority so rises and falls with the backlog, which
//! stays under [`PROMOTE_LEN`] events and [`PROMOTE_AGE`]: the loop never waits
//! for room because of it.
//!
//! It only ever goes down where it is allowed to come back up: with
//! CAP_SYS_NICE, or an RLIMIT_NICE that permits nice 0 (systemd: `LimitNICE=`).
//! Elsewhere it keeps normal priority throughout.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use crate::sys::sched::{self, Policy};

/// Queued events at which the loop promotes an idle-priority audit thread.
pub const PROMOTE_LEN: usize = 4096;

/// Age of the oldest queued event at which the loop promotes an idle-priority
/// audit thread (it normally drains every millisecond; the log's default flush
/// interval, 200 ms, is the bound this keeps).
pub const PROMOTE_AGE: Duration = Duration::from_millis(50);

/// Events in one batch from which the audit thread treats the flow as a stream
/// and moves to idle priority for it. Fewer, and it stays normal: a trickle
/// costs nobody a CPU.
const STREAM: usize = 32;

/// A batch this long or longer means the thread is catching up: it keeps the
/// priority it has (and, at normal priority, does not yield; see `record`).
pub(super) const CATCHING_UP: usize = PROMOTE_LEN / 2;

/// CAP_SYS_NICE (capability.h).
const CAP_SYS_NICE: u32 = 23;

/// The RLIMIT_NICE value that lets a thread return to nice 0 (20 - nice).
const NICE_ZERO_RLIMIT: u64 = 20;

/// Shared by the audit thread and the loop.
pub struct Priority {
    /// Idle priority may be used: coming back is permitted here.
    enabled: AtomicBool,
    /// The audit thread's id, 0 until it has started.
    tid: AtomicI32,
    /// The audit thread is at idle priority (set after the move, cleared by
    /// whoever moves it back).
    idle: AtomicBool,
}

impl Priority {
    /// Whether idle priority may be used is decided here, once.
    pub fn new() -> Priority {
        Priority::with(may_return_to_normal())
    }

    fn with(enabled: bool) -> Priority {
        Priority {
            enabled: AtomicBool::new(enabled),
            tid: AtomicI32::new(0),
            idle: AtomicBool::new(false),
        }
    }

    /// Audit thread, first thing: records which thread it is.
    pub fn register(&self) {
        self.tid.store(sched::gettid(), Ordering::Release);
    }

    /// Audit thread: it is about to write a batch of `n` events.
    pub fn before_batch(&self, n: usize) {
        if !(STREAM..CATCHING_UP).contains(&n)
            || !self.enabled.load(Ordering::Relaxed)
            || self.idle.load(Ordering::Relaxed)
        {
            return;
        }
        // The move first, the flag after: a loop that reads the flag as clear in
        // between promotes on its next check instead.
        if sched::set_policy(0, Policy::Idle).is_ok() {
            self.idle.store(true, Ordering::Release);
        }
    }

    /// Audit thread: it found the queue empty.
    pub fn on_empty(&self) {
        self.back_to_normal(0);
    }

    /// Loop: the audit thread may be behind. A no-op unless it is at idle
    /// priority.
    pub fn promote(&self) {
        if self.idle.load(Ordering::Acquire) {
            self.back_to_normal(self.tid.load(Ordering::Acquire));
        }
    }

    /// Whether idle priority may be used here.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether the audit thread is at idle priority (the loop then watches it).
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    fn back_to_normal(&self, tid: libc::pid_t) {
        if self.idle.swap(false, Ordering::AcqRel)
            && sched::set_policy(tid, Policy::Normal).is_err()
        {
            // Not permitted after all (a limit lowered since the start): never
            // go down again, and leave the flag set so that every later check
            // retries; back-pressure still keeps every event.
            self.enabled.store(false, Ordering::Relaxed);
            self.idle.store(true, Ordering::Release);
        }
    }
}

/// Whether a thread of this process that moves to SCHED_IDLE may move back.
fn may_return_to_normal() -> bool {
    crate::sys::caps::effective_has(CAP_SYS_NICE).unwrap_or(false)
        || crate::sys::proc::getrlimit(libc::RLIMIT_NICE)
            .is_ok_and(|l| l.rlim_cur >= NICE_ZERO_RLIMIT)
}

/// For tests: whether idle priority cannot be used here, said on stderr. Under
/// `WARDEN_TEST_STRICT` as root (where CAP_SYS_NICE is expected) that fails.
#[cfg(test)]
pub(super) fn unavailable_here(p: &Priority) -> bool {
    if p.enabled() {
        return false;
    }
    assert!(
        std::env::var_os("WARDEN_TEST_STRICT").is_none() || crate::sys::socket::euid() != 0,
        "root without CAP_SYS_NICE"
    );
    eprintln!("skipped: neither CAP_SYS_NICE nor RLIMIT_NICE >= 20");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// Runs `steps` on a thread of its own (the "audit thread"), one per
    /// message, and reports that thread's policy after each.
    fn on_thread(p: &Arc<Priority>) -> (mpsc::Sender<usize>, mpsc::Receiver<Option<Policy>>) {
        let (tx, rx) = mpsc::channel::<usize>();
        let (rtx, rrx) = mpsc::channel();
        let p = Arc::clone(p);
        std::thread::spawn(move || {
            p.register();
            for n in rx {
                if n == 0 {
                    p.on_empty();
                } else {
                    p.before_batch(n);
                }
                rtx.send(sched::policy(0).unwrap()).unwrap();
            }
        });
        (tx, rrx)
    }

    #[test]
    fn a_stream_goes_idle_and_the_loop_or_an_empty_queue_brings_it_back() {
        let p = Arc::new(Priority::new());
        if unavailable_here(&p) {
            return;
        }
        let (tx, rx) = on_thread(&p);
        let step = |n| {
            tx.send(n).unwrap();
            rx.recv().unwrap()
        };
        // A trickle stays normal.
        assert_eq!(step(STREAM - 1), Some(Policy::Normal));
        assert!(!p.is_idle());
        // A stream goes idle.
        assert_eq!(step(STREAM), Some(Policy::Idle));
        assert!(p.is_idle());
        // The loop promotes it; while its batches show it catching up it stays
        // normal, and the first batch that shows it keeping up goes idle again.
        p.promote();
        assert!(!p.is_idle());
        assert_eq!(
            sched::policy(p.tid.load(Ordering::Acquire)).unwrap(),
            Some(Policy::Normal)
        );
        assert_eq!(step(CATCHING_UP), Some(Policy::Normal));
        assert_eq!(step(PROMOTE_LEN * 2), Some(Policy::Normal));
        assert_eq!(step(CATCHING_UP - 1), Some(Policy::Idle));
        // An empty queue brings it back by itself.
        assert_eq!(step(0), Some(Policy::Normal));
        assert!(!p.is_idle());
    }

    #[test]
    fn without_permission_to_come_back_it_never_goes_idle() {
        let p = Arc::new(Priority::with(false));
        let (tx, rx) = on_thread(&p);
        for n in [STREAM, STREAM * 100, 0, STREAM] {
            tx.send(n).unwrap();
            assert_eq!(rx.recv().unwrap(), Some(Policy::Normal));
        }
        assert!(!p.is_idle());
    }
}
