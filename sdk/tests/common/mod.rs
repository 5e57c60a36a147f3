//! What the SDK's integration tests share: a SEQPACKET socketpair standing in
//! for warden's channel, and the `welcome` a fake warden answers a hello with.

#![allow(dead_code)] // each test file uses its own part

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// A `welcome` granting kv:read, with the documented default limits.
pub const WELCOME: &[u8] = br#"{"type":"welcome","version":1,"plugin":"p","capabilities":["kv:read"],"limits":{"max_message":65536,"max_in_flight":32,"call_timeout_ms":5000,"rate":{"per_second":500,"burst":1000}}}"#;

/// A fresh AF_UNIX SOCK_SEQPACKET pair (close-on-exec) as raw descriptors, which
/// the caller then owns.
pub fn raw_seqpacket_pair() -> [RawFd; 2] {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`, nothing else.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    fds
}

/// A fresh SEQPACKET pair: (warden's end, the plugin's end).
pub fn seqpacket_pair() -> (UnixDatagram, UnixDatagram) {
    let [a, b] = raw_seqpacket_pair();
    // SAFETY: fresh descriptors from socketpair, each owned once, here.
    unsafe { (UnixDatagram::from_raw_fd(a), UnixDatagram::from_raw_fd(b)) }
}
