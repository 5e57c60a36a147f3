//! Thread scheduling policy: which thread id the caller is, moving a thread of
//! this process between SCHED_IDLE and the normal policy, and SCHED_BATCH for a
//! sandbox before it starts the plugin.

use std::io;

use super::cvt;

/// The caller's thread id (`gettid(2)`).
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// A scheduling policy this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_OTHER at the thread's nice value.
    Normal,
    /// SCHED_IDLE: runs only on CPU time no normal thread wants.
    Idle,
    /// SCHED_BATCH: a normal thread's share, but its wake-ups do not preempt
    /// the thread running on the CPU.
    Batch,
}

/// `sched_setscheduler(tid, policy, {0})`; `tid` 0 is the calling thread.
/// Leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows the
/// thread's nice value (EPERM otherwise); entering it, or SCHED_BATCH from the
/// normal policy, is always allowed. Allocation-free (the sandbox child calls it).
pub fn set_policy(tid: libc::pid_t, policy: Policy) -> io::Result<()> {
    let p = match policy {
        Policy::Normal => libc::SCHED_OTHER,
        Policy::Idle => libc::SCHED_IDLE,
        Policy::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param on the stack for the call.
    cvt(unsafe { libc::sched_setscheduler(tid, p, &param) }).map(drop)
}

/// `sched_getscheduler(tid)`: the thread's policy, `None` for one this crate
/// does not use (FIFO, RR, DEADLINE).
pub fn policy(tid: libc::pid_t) -> io::Result<Option<Policy>> {
    // SAFETY: integer argument only.
    let p = cvt(unsafe { libc::sched_getscheduler(tid) })?;
    Ok(match p {
        libc::SCHED_OTHER => Some(Policy::Normal),
        libc::SCHED_IDLE => Some(Policy::Idle),
        libc::SCHED_BATCH => Some(Policy::Batch),
        _ => None,
    })
}
