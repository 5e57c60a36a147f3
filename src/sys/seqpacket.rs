//! AF_UNIX SOCK_SEQPACKET datagrams: socket pairs, non-blocking send and receive,
//! truncation detection, and descriptor passing (SCM_RIGHTS).
//!
//! The event loop's per-call receive and send go through syscall(2) rather than
//! glibc's recvmmsg() and send(), which are pthread cancellation points: each
//! switches asynchronous cancellation on and off around the call, about 190
//! instructions per host call in all (callgrind, `cargo bench --bench broker`).
//! Nothing in warden cancels a thread, so the raw call is the same call without
//! that; both never block here (MSG_DONTWAIT).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_syscall};

/// A connected SOCK_SEQPACKET pair, both ends close-on-exec and blocking.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints for the kernel to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a borrowed open fd; integer arguments only.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) }).map(drop)
}

/// What one receive returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes stored in the buffer (at most its length).
    pub len: usize,
    /// The datagram was longer than the buffer; `full_len` is its real size.
    pub truncated: bool,
    pub full_len: usize,
    /// The sender attached descriptors; they have been closed.
    pub had_fds: bool,
}

/// Receives one datagram without blocking. A datagram longer than `buf` is
/// reported as truncated (its excess is discarded by the kernel). Descriptors the
/// peer attached are closed immediately and reported. `Ok(None)` is end of stream
/// (an empty datagram is `Some`, of length 0).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let (_, [got]) = recv_batch(fd, [buf])?;
    Ok(got)
}

/// Receives up to `N` datagrams in one call (recvmmsg), without blocking: the
/// first `count` entries of the answer are filled (`None` is end of stream, which
/// ends the batch). A count below `N` means the socket had no more at that moment,
/// so the caller knows it drained the socket without another call that fails with
/// `EAGAIN`. A datagram longer than its buffer is reported as truncated; descriptors
/// the peer attached are closed at once and reported.
pub fn recv_batch<const N: usize>(
    fd: BorrowedFd<'_>,
    bufs: [&mut [u8]; N],
) -> io::Result<(usize, [Option<Received>; N])> {
    const CMSG_SPACE: usize = 256;
    let mut cmsgs = [[0u64; CMSG_SPACE / 8]; N];
    let lens = bufs.each_ref().map(|b| b.len());
    let mut iovs = bufs.map(|b| libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    });
    // SAFETY: mmsghdr is a plain C struct; all-zero is a valid empty value.
    let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    for ((m, iov), cmsg) in msgs.iter_mut().zip(iovs.iter_mut()).zip(cmsgs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = CMSG_SPACE;
    }
    // The raw system call, not glibc's recvmmsg(): see the module header.
    // SAFETY: raw recvmmsg(2), its result checked by cvt_syscall: each of the N
    // headers points at its own iovec (covering one caller buffer) and its own
    // control buffer, all live and writable for the call, with their true
    // lengths; syscall(2) is variadic, so every argument is passed at the type
    // recvmmsg(2) takes (int fd, header pointer, unsigned count, int flags,
    // timespec pointer), the timeout a typed null, which means none.
    let n = cvt_syscall(unsafe {
        libc::syscall(
            libc::SYS_recvmmsg,
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            N as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
            std::ptr::null_mut::<libc::timespec>(),
        )
    })?;
    let mut out = [None; N];
    let mut count = 0;
    for (i, m) in msgs.iter().enumerate().take(n) {
        count += 1;
        let full_len = m.msg_len as usize;
        let had_fds = close_passed_fds(&m.msg_hdr);
        // A zero-length read is the end of the stream, or an empty datagram (which
        // reads the same): only a peer that has shut down makes it the end. (An
        // empty datagram sent just before hanging up reads as the hang-up: nothing
        // tells the two apart then.)
        if full_len == 0 && !had_fds && peer_closed(fd) {
            break;
        }
        let flags = m.msg_hdr.msg_flags;
        out[i] = Some(Received {
            len: full_len.min(lens[i]),
            truncated: full_len > lens[i] || flags & libc::MSG_TRUNC != 0,
            full_len,
            had_fds: had_fds || flags & libc::MSG_CTRUNC != 0,
        });
    }
    Ok((count, out))
}

/// Whether the peer has shut down or closed its end (POLLRDHUP); a failed check
/// counts as closed.
fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    match super::proc::poll(&mut p, 0) {
        Ok(_) => p[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0,
        Err(_) => true,
    }
}

/// Calls `each` with every descriptor carried in `msg`'s control data
/// (SCM_RIGHTS), in order; `each` then owns it. Allocation-free.
fn for_each_passed_fd(msg: &libc::msghdr, mut each: impl FnMut(RawFd)) {
    // SAFETY: `msg` was filled by a successful recvmsg; the CMSG_* macros walk the
    // control buffer it describes, within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: `c` is a valid cmsghdr inside the control buffer (see above).
        let hdr = unsafe { &*c };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a pure computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (hdr.cmsg_len - header) / std::mem::size_of::<RawFd>();
            // SAFETY: an SCM_RIGHTS payload is `count` ints starting at CMSG_DATA.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, within the payload; read_unaligned because the
                // payload has no alignment guarantee.
                each(unsafe { data.add(i).read_unaligned() });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
}

/// Closes every descriptor carried in `msg`'s control data; returns whether any was.
fn close_passed_fds(msg: &libc::msghdr) -> bool {
    let mut any = false;
    for_each_passed_fd(msg, |raw| {
        // SAFETY: the kernel just installed `raw` in our table for us; we own it and
        // close it exactly once here.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        any = true;
    });
    any
}

/// Receives one datagram, blocking, with up to `fds.len()` (at most 4) passed
/// descriptors stored into `fds`, close-on-exec. Returns the number of bytes and of
/// descriptors. Allocation-free, for the post-clone child. A datagram or control
/// data that did not fit is an error (EMSGSIZE), and then every descriptor that did
/// arrive has been closed.
pub fn recv_fds_blocking(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut [RawFd],
) -> io::Result<(usize, usize)> {
    const MAX_FDS: usize = 4;
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Room for one SCM_RIGHTS header with MAX_FDS ints (CMSG_SPACE(16) = 32).
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: `msg` points at `iov` (covering `buf`) and `cmsg`, all live and
    // writable for the duration of the call, with their true lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got = 0;
    let mut overflow = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    for_each_passed_fd(&msg, |raw| {
        if got < fds.len() {
            fds[got] = raw;
            got += 1;
        } else {
            overflow = true;
            // SAFETY: the kernel just installed `raw` for us; nobody else knows it,
            // and it is closed exactly once here.
            unsafe { libc::close(raw) };
        }
    });
    if overflow {
        for raw in &fds[..got] {
            // SAFETY: as above: received here, closed once, never used.
            unsafe { libc::close(*raw) };
        }
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((n as usize, got))
}

/// Sends one datagram without blocking and without SIGPIPE, optionally with
/// descriptors attached (SCM_RIGHTS).
pub fn send(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        return send_plain(fd, bytes);
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut cmsg = [0u64; 64];
    let payload = std::mem::size_of_val(&fds[0]) * fds.len();
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    if space > std::mem::size_of_val(&cmsg) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds"));
    }
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer is `space` bytes, enough for one header and the
    // payload, so the first header exists and its data area holds `fds.len()` ints.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as usize;
        let data = libc::CMSG_DATA(c).cast::<RawFd>();
        for (i, f) in fds.iter().enumerate() {
            data.add(i).write_unaligned(f.as_raw_fd());
        }
    }
    // SAFETY: `msg` describes `bytes` (read-only for sendmsg despite the *mut) and
    // the control buffer, both live for the call.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`send`] without descriptors: send(2) skips the message header that sendmsg(2)
/// copies in and checks (measured in `cargo bench --bench broker`: about 0.25 µs
/// less of the event loop's CPU per reply). Made through syscall(2): see the module
/// header.
fn send_plain(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: raw sendto(2): `bytes` is valid for reads of its length for the
    // call; a null address with length 0 is what send(2) passes to sendto.
    // syscall(2) is variadic, so every argument is passed at the type sendto(2)
    // takes (int fd, buffer pointer, size_t length, int flags, address pointer,
    // socklen_t length).
    cvt_syscall(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd.as_raw_fd(),
            bytes.as_ptr(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn datagrams_truncation_fds_and_eof() {
        let (a, b) = pair().unwrap();
        send(a.as_fd(), b"hello", &[]).unwrap();
        let mut buf = [0u8; 4];
        let r = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(
            (r.len, r.truncated, r.full_len, r.had_fds),
            (4, true, 5, false)
        );
        let (x, _y) = pair().unwrap();
        send(a.as_fd(), b"fd", &[x.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let r = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(r.had_fds && !r.truncated && r.len == 2);
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // An empty datagram reads like the end of the stream, but is not.
        send(a.as_fd(), b"", &[]).unwrap();
        let r = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(r.len == 0 && !r.truncated && !r.had_fds);
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap(), None);
    }

    #[test]
    fn batches_say_when_the_socket_was_drained() {
        let (a, b) = pair().unwrap();
        let (mut x, mut y) = ([0u8; 4], [0u8; 16]);
        let e = recv_batch(b.as_fd(), [&mut x[..], &mut y[..]]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        send(a.as_fd(), b"one", &[]).unwrap();
        let (n, got) = recv_batch(b.as_fd(), [&mut x[..], &mut y[..]]).unwrap();
        assert_eq!(n, 1, "one waiting: the batch stops short");
        assert_eq!(got[0].map(|r| r.len), Some(3));
        assert_eq!(&x[..3], b"one");
        let (p, _q) = pair().unwrap();
        send(a.as_fd(), b"hello", &[]).unwrap();
        send(a.as_fd(), b"fd", &[p.as_fd()]).unwrap();
        send(a.as_fd(), b"third", &[]).unwrap();
        let (n, got) = recv_batch(b.as_fd(), [&mut x[..], &mut y[..]]).unwrap();
        assert_eq!(n, 2);
        let first = got[0].unwrap();
        assert_eq!((first.len, first.truncated, first.full_len), (4, true, 5));
        let second = got[1].unwrap();
        assert!(second.had_fds && second.len == 2 && &y[..2] == b"fd");
        drop(a);
        let (n, got) = recv_batch(b.as_fd(), [&mut x[..], &mut y[..]]).unwrap();
        assert_eq!((n, got[0].map(|r| r.len)), (2, Some(4)));
        assert_eq!(got[1], None, "end of stream after the last datagram");
    }

    #[test]
    fn blocking_receive_of_descriptors() {
        let (a, b) = pair().unwrap();
        let (x, y) = pair().unwrap();
        send(a.as_fd(), b"2", &[x.as_fd(), y.as_fd()]).unwrap();
        let (mut buf, mut fds) = ([0u8; 1], [-1; 2]);
        assert_eq!(
            recv_fds_blocking(b.as_raw_fd(), &mut buf, &mut fds).unwrap(),
            (1, 2)
        );
        assert_eq!(&buf, b"2");
        for fd in fds {
            // SAFETY: received above, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            assert!(fd.as_raw_fd() > 2);
        }
        // More descriptors than room: refused, and the ones that came are closed.
        send(a.as_fd(), b"2", &[x.as_fd(), y.as_fd(), x.as_fd()]).unwrap();
        let e = recv_fds_blocking(b.as_raw_fd(), &mut buf, &mut fds).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
        drop(a);
        assert_eq!(
            recv_fds_blocking(b.as_raw_fd(), &mut buf, &mut fds).unwrap(),
            (0, 0)
        );
    }
}
