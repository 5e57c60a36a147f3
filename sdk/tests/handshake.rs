//! docs/protocol.md: "A plugin ignores message types and fields it does not know
//! (later versions may add some)". That holds before `welcome` too: a message of
//! a type the SDK does not know is skipped, not taken for a refused handshake.

mod common;
use common::WELCOME;
use warden_plugin::Client;

#[test]
fn a_message_of_an_unknown_type_before_welcome_is_ignored() {
    let (warden, plugin) = common::seqpacket_pair();
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
