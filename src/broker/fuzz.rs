//! The body of the decoder fuzz target (`fuzz/`), kept in the library so that it
//! compiles with every change and runs over a corpus in the ordinary tests.
//!
//! One datagram: [`protocol::decode`] must not panic and must agree with the
//! general decoder ([`protocol::decode_general`]), and a decoded call's arguments
//! go through every op's strict argument validation.

use std::collections::VecDeque;
use std::time::Duration;

use super::handlers::{self, Caller};
use super::ops::OPS;
use super::protocol::{self, Incoming};
use super::Counters;
use crate::bundle::Capability;

/// Runs one fuzz input; panics on any disagreement (that is the finding).
pub fn one(data: &[u8]) {
    let fast = protocol::decode(data);
    let general = protocol::decode_general(data);
    assert_eq!(
        format!("{fast:?}"),
        format!("{general:?}"),
        "decode and decode_general disagree on {:?}",
        String::from_utf8_lossy(data)
    );
    let Ok(Incoming::Call { args, .. }) = fast else {
        return;
    };
    // The plain `{"key":"..."}` reading gives what the strict parse gives.
    assert_eq!(
        format!("{:?}", handlers::key_arg(args)),
        format!("{:?}", handlers::key_arg_parsed(args)),
        "key_arg and the strict parse disagree on {:?}",
        String::from_utf8_lossy(data)
    );
    let stats = Counters::default();
    let recent = VecDeque::new();
    let caller = Caller {
        id: "fuzz",
        kv_quota: Default::default(),
        stats: &stats,
        recent: &recent,
        granted: &[Capability::KvRead, Capability::KvWrite],
        call_timeout: Duration::from_secs(5),
        egress: None,
        files: None,
    };
    for op in OPS {
        // log.write prints; skip it to keep the fuzzer's output readable.
        if op.name != "log.write" {
            let _ = handlers::handle(op.provider, args, &caller);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages at the edges of the plain-call shape, each of which must decode
    /// exactly as the general decoder decodes it.
    #[test]
    fn plain_calls_decode_as_the_general_decoder_does() {
        let cases: &[&str] = &[
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"greeting"}}"#,
            r#"{"type":"call","id":0,"op":"kv.list"}"#,
            r#"{"type":"call","id":18446744073709551615,"op":"x","args":{}}"#,
            r#"{"type":"call","id":18446744073709551616,"op":"x","args":{}}"#,
            r#"{"type":"call","id":01,"op":"x"}"#,
            r#"{"type":"call","id":-1,"op":"x"}"#,
            r#"{"type":"call","id":1.5,"op":"x"}"#,
            r#"{"type":"call","id":1e3,"op":"x"}"#,
            r#"{"type":"call","id":1,"op":""}"#,
            r#"{"type":"call","id":1,"op":"kv\u002eget"}"#,
            r#"{"type":"call","id":1,"op":"kv get"}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":[]}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":"{}"}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":null}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"}"}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"x"}}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"x"} }"#,
            r#"{"type":"call","id":1,"op":"kv.get","args": {"key":"x"}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"x"},"id":2}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{},"x":{}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"a":1,"a":2}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"x"#,
            r#"{"type":"call","id":1,"op":"kv.get"}  "#,
            r#"{"type":"call","id":1,"op":"kv.get"} x"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{}}"#,
            r#"{"type":"call","id":1,"op":"kv.get","op":"kv.put"}"#,
            r#"{"type":"call","id":1,"op":"kv.get","seq":1}"#,
            r#"{"type":"call","id":1}"#,
            r#"{"type":"call","op":"kv.get"}"#,
            r#"{"type":"call","id":1,"op":"kv.get","args":{"key":"caf\u00e9"}}"#,
        ];
        for c in cases {
            one(c.as_bytes());
        }
        // The common call decodes to its parts (that it takes the plain path is
        // checked in protocol's tests).
        let common = cases[0].as_bytes();
        match protocol::decode(common) {
            Ok(Incoming::Call { id, op, args }) => {
                assert_eq!((id, op.as_ref()), (1, "kv.get"));
                assert_eq!(args.map(|a| a.get()), Some(r#"{"key":"greeting"}"#));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every one-byte deletion, replacement and insertion of two plain calls (a
    /// put and a get), and each call cut short, decode alike both ways, read the
    /// key alike both ways, and never panic.
    #[test]
    fn mutated_calls_decode_alike() {
        let bytes: &[u8] = b"{}[]\":,0123456789 -.eE\\u\x00\xff}a";
        for base in [
            &br#"{"type":"call","id":12,"op":"kv.put","args":{"key":"k","value":"v"}}"#[..],
            br#"{"type":"call","id":3,"op":"kv.get","args":{"key":"greeting"}}"#,
        ] {
            mutate(base, bytes);
        }
    }

    fn mutate(base: &[u8], bytes: &[u8]) {
        for i in 0..base.len() {
            let mut cut = base.to_vec();
            cut.remove(i);
            one(&cut);
            for &b in bytes {
                let mut m = base.to_vec();
                m[i] = b;
                one(&m);
                let mut ins = base.to_vec();
                ins.insert(i, b);
                one(&ins);
            }
        }
        one(&base[..base.len() - 1]);
    }
}
