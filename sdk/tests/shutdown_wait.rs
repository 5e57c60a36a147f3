//! `wait_for_shutdown` with a timeout too long to add to the clock (such as
//! `Duration::MAX`, a common "for ever") waits for the shutdown instead of
//! panicking.

use std::time::Duration;

mod common;
use common::WELCOME;
use warden_plugin::Client;

#[test]
fn a_timeout_past_the_clocks_end_waits_for_the_shutdown() {
    let (warden, plugin) = common::seqpacket_pair();
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
