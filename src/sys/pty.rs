//! Pseudo-terminals: a fresh pair for a plugin whose output goes to a terminal,
//! so that it gets a terminal of its own, never the operator's.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// A new pseudo-terminal pair (master, slave), both close-on-exec and neither a
/// controlling terminal of ours; the slave gets `like`'s window size when that
/// is a terminal.
pub fn open(like: BorrowedFd<'_>) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let m = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: `m` was just opened and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: grantpt and unlockpt take a pty master descriptor, which `master` is.
    cvt(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: `name` is writable for its length, which is passed; ptsname_r writes
    // a NUL-terminated path or fails.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let s = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `s` was just opened and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    // Output as written, no "\n" -> "\r\n": it goes on to a terminal that does
    // its own output processing.
    // SAFETY: a zeroed termios is a valid buffer for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `slave` is an open terminal; `t` is live and writable.
    cvt(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) })?;
    t.c_oflag &= !libc::OPOST;
    // SAFETY: `t` is an initialised termios read by the call.
    cvt(unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) })?;
    let mut size: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which is live and
    // writable; on a non-terminal it fails and `size` is not used.
    if unsafe { libc::ioctl(like.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads one winsize from `size`.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IsTerminal, Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_pair_carries_what_the_slave_writes_to_the_master() {
        let (master, slave) = open(std::io::stdin().as_fd()).unwrap();
        assert!(slave.as_fd().is_terminal() && master.as_fd().is_terminal());
        let mut s = std::fs::File::from(slave);
        s.write_all(b"hello\n").unwrap();
        drop(s);
        let mut m = std::fs::File::from(master);
        let mut got = Vec::new();
        let _ = m.read_to_end(&mut got); // ends in EIO once the slave is closed
        assert_eq!(got, b"hello\n", "bytes pass as written");
    }
}
