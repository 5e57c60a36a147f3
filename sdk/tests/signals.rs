//! A plugin's own signal handlers, installed without SA_RESTART, interrupt the
//! SDK's blocking calls with EINTR: that is not the channel failing.

use std::time::Duration;

mod common;
use common::WELCOME;
use warden_plugin::Client;

extern "C" fn nothing(_: libc::c_int) {}

#[test]
fn a_signal_during_the_handshake_is_not_a_channel_error() {
    // SAFETY: a zeroed sigaction is a valid empty one; the handler does nothing
    // and is async-signal-safe; no SA_RESTART, so a blocked recv fails with EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let (warden, plugin) = common::seqpacket_pair();
    // SAFETY: pthread_self takes no arguments and cannot fail.
    let me = unsafe { libc::pthread_self() };
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        warden.recv(&mut buf).unwrap();
        // The plugin now waits for its welcome: interrupt that wait.
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: `me` is the test's thread, alive until this thread is joined.
        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(100));
        warden.send(WELCOME).unwrap();
        warden
    });
    let client = Client::with_socket(plugin, "p", "1.0.0");
    let _warden = peer.join().unwrap();
    assert!(client.is_ok(), "{:?}", client.err());
}
