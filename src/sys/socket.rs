//! Pipes and plain socket I/O: CLOEXEC pipes, and sending or receiving one
//! datagram with `send(2)`/`recv(2)` (SEQPACKET pairs and SCM_RIGHTS live in
//! `seqpacket`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// `pipe2(O_CLOEXEC | extra)`: returns (read end, write end).
pub fn pipe(extra: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | extra) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `recv(2)` of one datagram into `buf` (truncated if larger), with `flags`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(2)` of one datagram with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never
/// a SIGPIPE).
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of `buf.len()` readable bytes.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The credentials of a connected Unix socket's peer (`SO_PEERCRED`), as the
/// kernel recorded them at `connect`: (pid, uid, gid).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(libc::pid_t, libc::uid_t, libc::gid_t)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` holds its exact size, as
    // getsockopt(SO_PEERCRED) requires; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// The peer's supplementary groups as the kernel recorded them at connect time
/// (`SO_PEERGROUPS`), translated into our user namespace. No /proc lookup, so no
/// race with pid reuse and no need to see the peer's /proc entry.
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of exactly `len` bytes; the kernel
        // writes at most `len` bytes and sets `len` to the size it needs or wrote.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let need = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(need);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && need > groups.len() {
            groups.resize(need, 0);
            continue;
        }
        return Err(e);
    }
}

/// The effective uid of this process (`geteuid`, which cannot fail).
pub fn euid() -> libc::uid_t {
    // SAFETY: geteuid takes no arguments and always succeeds.
    unsafe { libc::geteuid() }
}
