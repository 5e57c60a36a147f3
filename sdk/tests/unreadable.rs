//! A datagram from warden that the SDK cannot read (larger than the protocol's
//! limit, so cut by the kernel; not a JSON object; a reply without an id) cannot
//! be routed to the call it answers: the channel is closed, and every waiting
//! call fails, instead of one of them waiting for ever.

use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::WELCOME;
use warden_plugin::{Client, Error, MAX_MESSAGE};

/// Makes one `kv.get` that a fake warden answers with `reply(id)`; the call's
/// result, or `None` if it had none within 5 s.
fn answered_with(reply: impl Fn(u64) -> Vec<u8> + Send + 'static) -> Option<Result<(), Error>> {
    let (warden, plugin) = common::seqpacket_pair();
    let peer = std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_MESSAGE];
        warden.recv(&mut buf).unwrap(); // hello
        warden.send(WELCOME).unwrap();
        let n = warden.recv(&mut buf).unwrap(); // the call
        let call: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        warden.send(&reply(call["id"].as_u64().unwrap())).unwrap();
        warden
    });
    let client = Client::with_socket(plugin, "p", "1.0.0").unwrap();
    let (tx, rx) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        let _ = tx.send(client.kv_get("k").map(drop));
        client
    });
    let got = rx.recv_timeout(Duration::from_secs(5)).ok();
    let _warden = peer.join().unwrap();
    if got.is_some() {
        drop(caller.join().unwrap());
    }
    // Otherwise the caller is stuck for good; leave it.
    got
}

fn assert_channel_error(got: Option<Result<(), Error>>, needle: &str) {
    match got {
        Some(Err(Error::Channel(m))) => assert!(m.contains(needle), "{m}"),
        Some(other) => panic!("expected a channel error naming {needle:?}, got {other:?}"),
        None => panic!("the call is still waiting for a reply it will never get"),
    }
}

#[test]
fn a_reply_larger_than_the_limit_fails_the_call() {
    let got = answered_with(|id| {
        let value = "x".repeat(MAX_MESSAGE);
        format!(r#"{{"type":"reply","id":{id},"ok":{{"value":"{value}"}}}}"#).into_bytes()
    });
    assert_channel_error(got, "larger than");
}

#[test]
fn a_reply_that_is_not_json_fails_the_call() {
    let got = answered_with(|id| format!(r#"{{"type":"reply","id":{id},"ok":{{"#).into_bytes());
    assert_channel_error(got, "not a JSON object");
}

#[test]
fn a_reply_without_an_id_fails_the_call() {
    let got = answered_with(|_| br#"{"type":"reply","id":"1","ok":{}}"#.to_vec());
    assert_channel_error(got, "without a valid id");
}

/// An error code this SDK does not know (one a later warden adds) fails the call
/// as `internal`, naming the code; it did fail it as `channel`, which says the
/// channel is gone while it was not.
#[test]
fn an_error_code_from_a_later_version_fails_the_call_as_internal() {
    let got = answered_with(|id| {
        format!(r#"{{"type":"reply","id":{id},"error":{{"code":"quota","message":"over"}}}}"#)
            .into_bytes()
    });
    match got {
        Some(Err(Error::Internal(m))) => {
            assert!(m.contains("\"quota\"") && m.contains("over"), "{m}")
        }
        other => panic!("expected internal naming the code, got {other:?}"),
    }
}
