//! docs/protocol.md as a contract, checked with a plugin written from the docs
//! alone (`tests/plugins/docplugin.c`, C, no SDK): the handshake, every op and
//! flag combination, descriptors, several calls in flight, and the documented
//! errors, each checked against what the docs say.

mod common;

use common::{stderr, stdout, Fixture};

/// Every op, flag combination and non-framing error the docs describe, from the C
/// plugin: passes where warden and docs/protocol.md agree.
#[test]
fn the_doc_plugin_passes_its_own_checks() {
    if !common::require_sandbox() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let mut c = c.unwrap();
            std::thread::spawn(move || {
                let mut r = c.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut c);
            });
        }
    });
    let f = Fixture::new();
    let caps = [
        "kv:read",
        "kv:write",
        "log:write",
        "monitor:read",
        "audit:read",
        "http:egress",
        "static:read",
        "static:write",
        "notify:send",
    ];
    let b = f.bundle_with("docmain", "1.0.0", &caps, &common::plugin("docplugin"), "");
    let p = f.path().join("p.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"status":"approved","egress":{{"allow":["127.0.0.1:{port}","127.0.0.1:9","127.0.0.2:9"],"allow_addresses":["127.0.0.1"]}}}}"#
        ),
    )
    .unwrap();
    let port = port.to_string();
    let out = f.run(&b, &["--policy", p.to_str().unwrap(), "--", "main", &port]);
    let o = stdout(&out);
    let fails: Vec<&str> = o.lines().filter(|l| l.starts_with("CHECK FAIL")).collect();
    assert!(
        fails.is_empty() && o.contains(", 0 failed"),
        "{}\n{}",
        fails.join("\n"),
        stderr(&out)
    );
}
