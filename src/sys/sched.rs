//! Thread scheduling policy: SCHED_BATCH for a sandbox before it starts the
//! plugin (and the normal policy, for the benchmark's client to return to).

use std::io;

use super::cvt;

/// A scheduling policy this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_OTHER at the thread's nice value.
    Normal,
    /// SCHED_BATCH: a normal thread's share, but its wake-ups do not preempt
    /// the thread running on the CPU.
    Batch,
}

/// `sched_setscheduler(tid, policy, {0})`; `tid` 0 is the calling thread.
/// Moving between these two policies is always allowed. Allocation-free (the
/// sandbox child calls it).
pub fn set_policy(tid: libc::pid_t, policy: Policy) -> io::Result<()> {
    let p = match policy {
        Policy::Normal => libc::SCHED_OTHER,
        Policy::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param on the stack for the call.
    cvt(unsafe { libc::sched_setscheduler(tid, p, &param) }).map(drop)
}
