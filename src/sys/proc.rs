//! Process-level syscalls: fds (dup3, close_range, read/write on raw fds, poll),
//! rlimits, parent-death signal, signals and masks, waiting (pidfd and wait4),
//! execveat and `_exit`.
//!
//! Everything here is allocation-free so the post-clone child may call it. No
//! sandbox policy lives here.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{cvt, cvt_syscall};

/// `dup3(old, new, flags)`.
pub fn dup3(old: RawFd, new: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only; `new` is replaced atomically, which is the
    // point: the caller owns the numbering of its fd table.
    cvt(unsafe { libc::dup3(old, new, flags) }).map(drop)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a close-on-exec duplicate numbered >= `min`.
pub fn dup_cloexec_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl on a borrowed open fd with an integer argument.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: `n` is a new fd that nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

/// `close_range(first, last, 0)`.
pub fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: closing fds is memory-safe; the caller decides which fds it no
    // longer needs (any owners of those numbers must never use them again).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    cvt_syscall(r).map(drop)
}

/// `close(fd)` of a raw fd the caller owns.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller owns `fd` and does not use it again.
    cvt(unsafe { libc::close(fd) }).map(drop)
}

/// `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)` from `buf`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of `buf.len()` readable bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `setrlimit(2)` with soft = hard = `value`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit on the stack for the duration of the call.
    cvt(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// `getrlimit(2)`: the soft and the hard limit.
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit on the stack for the call.
    cvt(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok(lim)
}

/// `prctl(PR_SET_PDEATHSIG, sig)`.
pub fn set_pdeathsig(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// `prctl(PR_SET_NAME, name)`: the calling thread's name (`comm`, at most 15
/// bytes are kept).
pub fn set_name(name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: `name` is a NUL-terminated string that lives for the call; the
    // kernel copies at most 16 bytes of it.
    cvt(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) })
        .map(drop)
}

/// Where this process's command line lives: the argument area the kernel set up
/// at exec (`arg_start`..`arg_end`, fields 48 and 49 of `/proc/self/stat`), which
/// `/proc/PID/cmdline` shows. Only [`arg_area`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct ArgArea {
    start: usize,
    end: usize,
}

/// This process's argument area, read from `/proc/self/stat`.
pub fn arg_area() -> io::Result<ArgArea> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat");
    // Fields after the command name (which may hold spaces and parentheses)
    // start at field 3, the state.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let mut next =
        || -> io::Result<usize> { fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad) };
    let (start, end) = (next()?, next()?);
    if start == 0 || end <= start {
        return Err(bad());
    }
    Ok(ArgArea { start, end })
}

/// Replaces this process's command line (as `/proc/PID/cmdline`, `ps` and
/// `pgrep -f` see it) with `title`, cut to the argument area's size and padded
/// with NULs. Allocation-free.
///
/// # Safety
/// The process must have one thread (nothing else may read its arguments
/// meanwhile), and `area` must come from [`arg_area`] in this process or in the
/// process it was forked from (a fork has the same area, copied).
pub unsafe fn set_cmdline(area: ArgArea, title: &[u8]) {
    let len = area.end - area.start;
    // The last byte stays NUL: the kernel reads past the area (into the
    // environment) when it is not, taking that for a setproctitle()-style title.
    let n = title.len().min(len - 1);
    let at = area.start as *mut u8;
    // SAFETY: per the contract, start..end is this process's argument area: the
    // strings exec wrote on the initial stack, mapped writable for the life of the
    // process; n < len, so both writes stay inside it; one thread, so nothing
    // reads it meanwhile; `title` is a live slice of at least n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(title.as_ptr(), at, n);
        std::ptr::write_bytes(at.add(n), 0, len - n);
    }
}

/// Every signal's disposition back to the default: handlers, and above all
/// `SIG_IGN`, which exec keeps, so that a signal ignored by whoever started
/// warden (a background job of a non-interactive shell ignores SIGINT; `nohup`,
/// SIGHUP) is not ignored by the plugin. SIGKILL and SIGSTOP cannot be changed;
/// glibc's own real-time signals (32 up to SIGRTMIN) are left to it.
/// Allocation-free.
pub fn default_signals() -> io::Result<()> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || (32..libc::SIGRTMIN()).contains(&sig) {
            continue;
        }
        signal_default(sig)?;
    }
    Ok(())
}

/// Sets the disposition of `sig` back to the default action.
pub fn signal_default(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: installing SIG_DFL involves no handler code; libc's signal() only
    // calls rt_sigaction.
    if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal set for `sigprocmask`/`sigwaitinfo`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset/sigaddset only
    // write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// `sigprocmask(how, set)`, returning the previous mask.
pub fn sigprocmask(how: libc::c_int, set: &libc::sigset_t) -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is a valid value.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are valid sigsets that outlive the call.
    let r = unsafe { libc::pthread_sigmask(how, set, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(old)
}

/// `sigwaitinfo(2)`: waits for one of the (blocked) signals in `set`; returns its number.
pub fn sigwaitinfo(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    // SAFETY: `set` is a valid sigset; a NULL siginfo is allowed.
    cvt(unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) })
}

/// `wait4(pid, WNOHANG)`: `Ok(None)` when no child has changed state.
pub fn wait_nohang(pid: libc::pid_t) -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid writable int; rusage is NULL.
    let r = cvt(unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, std::ptr::null_mut()) })?;
    Ok((r != 0).then_some((r, status)))
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a borrowed open pidfd, a signal number, a NULL siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    cvt_syscall(r).map(drop)
}

/// How a process ended, as `waitid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// `waitid(P_PIDFD, pidfd, WEXITED)`: blocks until the process exits and reaps it.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Exit> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid writable siginfo_t; the pidfd is borrowed and open.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid with WEXITED filled in a SIGCHLD siginfo, whose status
        // field is valid to read.
        let status = unsafe { info.si_status() };
        return Ok(if info.si_code == libc::CLD_EXITED {
            Exit::Code(status)
        } else {
            Exit::Signal(status)
        });
    }
}

/// `setsid(2)`: a new session and process group led by the caller, with no
/// controlling terminal. Allocation-free (the sandbox child calls it).
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments; fails only for a process group leader.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// `poll(2)` on `fds`, retrying on EINTR; returns the number of ready entries.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `fds` is a live, writable slice of pollfd of the given length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: executes the open file `fd`.
/// Returns only on failure.
///
/// # Safety
///
/// `argv` and `envp` must be NULL-terminated arrays of pointers to NUL-terminated
/// strings, all alive for the duration of the call.
pub unsafe fn execveat_empty_path(
    fd: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> io::Error {
    const EMPTY: &CStr = c"";
    // SAFETY: EMPTY is a static NUL-terminated string; the caller vouches for
    // argv and envp.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            EMPTY.as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// `_exit(2)`: leaves immediately, running no destructors or atexit handlers.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

/// `signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK)`: the signals in `set` (which the
/// caller blocks) become readable on the returned fd.
pub fn signalfd(set: &libc::sigset_t) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `set` is a valid sigset that outlives the call.
    let fd = cvt(unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: `fd` is a new fd that nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let hard = getrlimit(libc::RLIMIT_NOFILE)?.rlim_max;
    setrlimit(libc::RLIMIT_NOFILE, hard)?;
    Ok(hard)
}
