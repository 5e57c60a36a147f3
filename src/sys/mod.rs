//! Thin safe wrappers over raw Linux syscalls.
//!
//! Every raw syscall the crate makes is wrapped exactly once here and returns
//! `io::Result`; callers name the step when they map the error. This module imports
//! nothing from the rest of the crate and holds no policy: it only makes the call
//! and turns `-1`/errno into `io::Error`.

pub mod caps;
pub mod fs;
pub mod landlock;
pub mod mount;
pub mod ns;
pub mod proc;
pub mod pty;
pub mod sched;
pub mod seccomp;
pub mod seqpacket;
pub mod socket;

use std::io;

/// Turns a libc return value into `io::Result`, reading errno on `-1`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns the result of a raw `syscall(2)` into `io::Result`: the call's value,
/// or the errno it failed with (the kernel's errors come back as `-1` with errno
/// set, so every negative value is a failure).
pub(crate) fn cvt_syscall(ret: libc::c_long) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// The short symbolic name of an errno (`EPERM`, `ENOENT`, ...), for one-line
/// error messages that operators can search for.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EUSERS => "EUSERS",
        libc::ESTALE => "ESTALE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTEMPTY => "ENOTEMPTY",
        _ => "EUNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_syscall_gives_its_value_or_its_errno() {
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        assert_eq!(cvt_syscall(pid).unwrap(), std::process::id() as usize);
        // SAFETY: closing -1 touches no descriptor; it fails with EBADF.
        let r = unsafe { libc::syscall(libc::SYS_close, -1) };
        assert_eq!(
            cvt_syscall(r).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
