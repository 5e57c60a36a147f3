//! `wait_for_shutdown` with a timeout too long to add to the clock (such as
//! `Duration::MAX`, a common "for ever") waits for the shutdown instead of
//! panicking.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use warden_plugin::Client;

const WELCOME: &[u8] = br#"{"type":"welcome","version":1,"plugin":"p","capabilities":[],"limits":{"max_message":65536,"max_in_flight":32,"call_timeout_ms":5000,"rate":{"per_second":500,"burst":1000}}}"#;

#[test]
fn a_timeout_past_the_clocks_end_waits_for_the_shutdown() {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two new descriptors that we then own.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: fresh descriptors from socketpair, each owned once.
    let (warden, plugin) = unsafe {
        (
            UnixDatagram::from_raw_fd(fds[0]),
            UnixDatagram::from_raw_fd(fds[1]),
        )
    };
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        warden.recv(&mut buf).unwrap(); // hello
        warden.send(WELCOME).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        warden
            .send(br#"{"type":"shutdown","deadline_ms":5000}"#)
            .unwrap();
        warden
    });
    let client = Client::with_socket(plugin, "p", "1.0.0").unwrap();
    assert_eq!(client.wait_for_shutdown(Some(Duration::MAX)), Some(5000));
    let mut runs = 0;
    client.repeat(Some(Duration::MAX), |_| runs += 1);
    assert_eq!(runs, 1);
    drop(peer.join().unwrap());
}
