//! `Client::connect` takes ownership of the descriptor `WARDEN_FD` names. A
//! second `connect` in the same process (a retry after a refused handshake, say)
//! must not take it again: by then the first one closed it, and the number may
//! belong to a file opened since. Alone in its file: it sets the process's
//! environment.

use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixDatagram;

mod common;
use warden_plugin::{Client, Error};

#[test]
fn a_second_connect_does_not_take_a_descriptor_it_does_not_own() {
    let fds = common::raw_seqpacket_pair();
    // SAFETY: a fresh descriptor from socketpair, owned once (the plugin's end
    // is handed to the SDK through the environment, as warden does).
    let warden = unsafe { UnixDatagram::from_raw_fd(fds[0]) };
    let plugin_fd = fds[1];
    std::env::set_var(warden_plugin::FD_ENV, plugin_fd.to_string());
    std::env::set_var(warden_plugin::ID_ENV, "p");
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        warden.recv(&mut buf).unwrap(); // hello
        warden
            .send(br#"{"type":"error","error":{"code":"bad_request","message":"protocol violation: hello says version 9.9.9, the manifest 1.0.0"}}"#)
            .unwrap();
        warden
    });
    match Client::connect("9.9.9") {
        Err(Error::Channel(m)) => assert!(m.contains("handshake refused"), "{m}"),
        other => panic!("expected a refused handshake, got {:?}", other.err()),
    }
    drop(peer.join().unwrap());
    // The first connect closed the socket; a file now has its number.
    let file = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup2 onto a number nothing in this process holds (the SDK closed
    // it above); the copy is ours, closed below.
    let ours = unsafe { libc::dup2(file.as_raw_fd(), plugin_fd) };
    assert_eq!(ours, plugin_fd);
    drop(file);
    let second = Client::connect("1.0.0");
    assert!(second.is_err(), "a second connect must fail");
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let still_open = unsafe { libc::fcntl(ours, libc::F_GETFD) } != -1;
    if still_open {
        // SAFETY: `ours` is the descriptor dup2 made for this test, still open
        // and used by nothing else; closed once, here.
        unsafe { libc::close(ours) };
    }
    assert!(
        still_open,
        "the second connect closed a descriptor it did not own: {:?}",
        second.err()
    );
}
