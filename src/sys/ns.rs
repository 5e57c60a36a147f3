//! Process creation into new namespaces, and the UTS hostname.
//!
//! Only the raw calls live here; which namespaces to create and what the child does
//! afterwards is `crate::sandbox`'s business.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::cvt;

/// What a fork-like clone returned.
pub enum Forked {
    /// We are the new child process.
    Child,
    /// We are the caller; the child has this pid (in our pid namespace) and, when
    /// asked for, a pidfd.
    Parent {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
    },
}

/// `clone(flags)` without a new stack: like `fork(2)`, the child continues on a
/// copy of the caller's stack and address space. With `CLONE_PIDFD` in `flags`, the
/// parent also receives a pidfd.
///
/// # Safety
///
/// The child is a copy of one thread of a possibly multi-threaded process: until it
/// execs or exits it may only make async-signal-safe calls (no allocation, no locks,
/// no panics), and it must leave with `_exit`, never by returning into code that
/// runs destructors of state shared with the parent.
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the raw clone syscall with a NULL stack duplicates the calling thread
    // (fork semantics). `&mut pidfd` is a valid writable int for the kernel's
    // CLONE_PIDFD result (x86_64 argument order: flags, stack, parent_tid,
    // child_tid, tls). The caller upholds the child-side contract above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        return Ok(Forked::Child);
    }
    let pidfd = if flags & (libc::CLONE_PIDFD as libc::c_ulong) != 0 {
        // SAFETY: with CLONE_PIDFD the kernel stored a fresh pidfd that nobody else owns.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        None
    };
    Ok(Forked::Parent {
        pid: ret as libc::pid_t,
        pidfd,
    })
}

/// `clone(CLONE_VM | CLONE_VFORK | SIGCHLD | flags)` running `child(arg)` on
/// `stack`, like `posix_spawn`: no page tables are copied, the child shares the
/// caller's memory until it execs or exits, and the calling thread is suspended
/// until then. `flags` adds namespace flags (`CLONE_NEW*`) or 0. Returns the
/// child's pid.
///
/// # Safety
///
/// `child` runs on `stack` in the caller's address space while the caller is
/// suspended: it may only make raw syscalls, read memory that stays valid and
/// unchanged until it execs, and write nothing but its own stack (errno aside); it
/// must leave by a successful exec or `_exit`, never by returning (glibc would
/// then call `exit`, running the caller's atexit handlers in shared memory).
/// `stack` must stay unused by anyone else until this returns.
pub unsafe fn clone_vfork(
    stack: &mut [std::mem::MaybeUninit<u8>],
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    flags: libc::c_int,
) -> io::Result<libc::pid_t> {
    // The stack grows down: start at its 16-byte aligned top.
    let top = stack.as_mut_ptr_range().end as usize & !15;
    // SAFETY: glibc's clone switches the child to `top`, inside `stack`, which the
    // caller leaves to the child; CLONE_VFORK keeps this thread (and so `stack` and
    // everything the child reads) suspended until the child execs or exits. The
    // caller upholds the child-side contract above.
    let pid = unsafe {
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | flags,
            arg,
        )
    };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// `sethostname(2)` in the caller's UTS namespace.
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads exactly `name.len()` bytes from a live slice.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: integer argument only.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}
