//! docs/protocol.md: "A plugin ignores message types and fields it does not know
//! (later versions may add some)". That holds before `welcome` too: a message of
//! a type the SDK does not know is skipped, not taken for a refused handshake.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;

use warden_plugin::Client;

const WELCOME: &[u8] = br#"{"type":"welcome","version":1,"plugin":"p","capabilities":["kv:read"],"limits":{"max_message":65536,"max_in_flight":32,"call_timeout_ms":5000,"rate":{"per_second":500,"burst":1000}}}"#;

#[test]
fn a_message_of_an_unknown_type_before_welcome_is_ignored() {
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
        warden
            .send(br#"{"type":"notice","text":"a later version's message"}"#)
            .unwrap();
        warden.send(WELCOME).unwrap();
        warden
    });
    let client = Client::with_socket(plugin, "p", "1.0.0");
    let _warden = peer.join().unwrap();
    let client = client.expect("the handshake must skip the unknown message");
    assert!(client.has("kv:read"));
}
