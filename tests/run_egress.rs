//! `net.dial` from a sandboxed plugin under `warden run`: the `fetch` example
//! fetches a page from a server this test runs on loopback, only when the policy
//! names the address; a name that resolves to a forbidden address is refused
//! (resolution goes through an /etc/hosts of the test's own mount namespace, never
//! the real DNS). Traffic only ever goes to 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{example, stderr, stdout, Fixture};

const V: &str = "0.1.0";
const BODY: &str = "hello, warden";

/// An HTTP/1.0 server on 127.0.0.1; returns its port and a count of connections.
fn server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
        }
    });
    (port, hits)
}

struct Run {
    f: Fixture,
    bundle: PathBuf,
}

impl Run {
    fn new() -> Run {
        let f = Fixture::new();
        let bundle = f.bundle_with("fetch", V, &["http:egress"], &example("fetch"), "");
        Run { f, bundle }
    }

    fn policy(&self, name: &str, json: &str) -> PathBuf {
        let p = self.f.path().join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    fn args(&self, policy: Option<&Path>, host: &str, port: u16) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            self.bundle.to_str().unwrap().into(),
            "--trust".into(),
            self.f.trust().to_str().unwrap().into(),
            "--state-dir".into(),
            self.f.state_dir().to_str().unwrap().into(),
        ];
        if let Some(p) = policy {
            a.extend(["--policy".into(), p.to_str().unwrap().into()]);
        }
        a.extend(["--".into(), host.into(), port.to_string(), "/".into()]);
        a
    }

    fn fetch(&self, policy: Option<&Path>, host: &str, port: u16) -> Output {
        Command::new(common::WARDEN)
            .args(self.args(policy, host, port))
            .output()
            .unwrap()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.f.state_dir().join("audit.log")).unwrap()
    }
}

fn dial_events(audit: &str) -> Vec<serde_json::Value> {
    audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["op"] == "net.dial")
        .collect()
}

#[test]
fn fetch_from_loopback_only_when_the_policy_names_it() {
    if !common::require_sandbox() {
        return;
    }
    let (port, hits) = server();
    let r = Run::new();

    let named = r.policy(
        "named.json",
        &format!(
            r#"{{"egress":{{"allow":["127.0.0.1:{port}"],"allow_addresses":["127.0.0.1"]}}}}"#
        ),
    );
    let out = r.fetch(Some(&named), "127.0.0.1", port);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "HTTP/1.0 200 OK\nbody 13 bytes\n"),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Allowed host:port, but loopback is not named as an address: refused.
    let pattern_only = r.policy(
        "pattern.json",
        &format!(r#"{{"egress":{{"allow":["127.0.0.1:{port}"]}}}}"#),
    );
    let out = r.fetch(Some(&pattern_only), "127.0.0.1", port);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("fetch err denied 127.0.0.1:{port} resolves to 127.0.0.1, which is loopback (127.0.0.0/8); the policy does not allow it\n")
    );
    // No policy at all: no egress allow-list.
    let out = r.fetch(None, "127.0.0.1", port);
    assert_eq!(
        stdout(&out),
        format!(
            "fetch err denied 127.0.0.1:{port}: the policy of fetch has no egress allow-list\n"
        )
    );
    // Another port, an IPv4-mapped spelling of a forbidden address, a bad host.
    let out = r.fetch(Some(&named), "127.0.0.1", port.wrapping_add(1).max(1));
    assert!(
        stdout(&out).ends_with("is not in the egress allow-list\n"),
        "{}",
        stdout(&out)
    );
    let mapped = r.policy(
        "mapped.json",
        &format!(r#"{{"egress":{{"allow":["[::ffff:169.254.169.254]:{port}"]}}}}"#),
    );
    let out = r.fetch(Some(&mapped), "::ffff:169.254.169.254", port);
    assert!(
        stdout(&out).contains("cloud metadata (169.254.169.254, link-local)"),
        "{}",
        stdout(&out)
    );
    let out = r.fetch(Some(&named), "evil.com?x.127.0.0.1", port);
    assert!(
        stdout(&out).starts_with("fetch err bad_request host"),
        "{}",
        stdout(&out)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "no refused dial connected");

    // Every dial is audited with host, resolved and dialled address, decision, reason.
    let events = dial_events(&r.audit());
    assert_eq!(events.len(), 6, "{events:?}");
    let ok = &events[0];
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["extra"]["host"], "127.0.0.1");
    assert_eq!(ok["extra"]["resolved"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(ok["extra"]["address"], format!("127.0.0.1:{port}"));
    assert!(ok["extra"]["allowance"]
        .as_str()
        .unwrap()
        .contains("allowed by policy 127.0.0.1/32"));
    let refused = &events[1];
    assert_eq!(refused["decision"], "deny");
    assert_eq!(refused["extra"]["host"], "127.0.0.1");
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("loopback (127.0.0.0/8)"));
    assert_eq!(events[2]["extra"]["port"], port);
}

/// Whether this process may make a private mount namespace with `unshare -m`.
fn can_unshare_mounts() -> bool {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn an_allowed_name_that_resolves_to_a_forbidden_address_is_refused() {
    if !common::require_sandbox() {
        return;
    }
    if !can_unshare_mounts() {
        common::skip(
            "mount namespaces via `unshare -m` (needed to give the test its own /etc/hosts)",
        );
        return;
    }
    let (port, hits) = server();
    let r = Run::new();
    // The test's own resolver configuration: files only; a DNS fallback could
    // only reach loopback.
    let etc = r.f.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), "127.0.0.1 allowed.test\n").unwrap();
    std::fs::write(etc.join("nsswitch.conf"), "hosts: files\n").unwrap();
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let in_ns = |policy: &Path, host: &str| -> Output {
        let script = r#"set -e
mount --bind "$1/hosts" /etc/hosts
mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$1/resolv.conf" /etc/resolv.conf
shift
exec "$@""#;
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&etc)
            .arg(common::WARDEN)
            .args(r.args(Some(policy), host, port))
            .output()
            .unwrap()
    };

    let name_only = r.policy(
        "name.json",
        &format!(r#"{{"egress":{{"allow":["allowed.test:{port}"]}}}}"#),
    );
    let out = in_ns(&name_only, "allowed.test");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("fetch err denied allowed.test:{port} resolves to 127.0.0.1, which is loopback (127.0.0.0/8); the policy does not allow it\n")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Naming the address explicitly lets the same name through: the resolution
    // really went through the test's hosts file.
    let named = r.policy(
        "named.json",
        &format!(
            r#"{{"egress":{{"allow":["allowed.test:{port}"],"allow_addresses":["127.0.0.1/32"]}}}}"#
        ),
    );
    let out = in_ns(&named, "allowed.test");
    assert_eq!(
        stdout(&out),
        "HTTP/1.0 200 OK\nbody 13 bytes\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A name the resolver does not know.
    let other = r.policy(
        "other.json",
        &format!(r#"{{"egress":{{"allow":["missing.test:{port}"]}}}}"#),
    );
    let out = in_ns(&other, "missing.test");
    assert!(
        stdout(&out).starts_with("fetch err not_found resolving missing.test"),
        "{}",
        stdout(&out)
    );

    let events = dial_events(&r.audit());
    assert_eq!(events[0]["decision"], "deny");
    assert_eq!(events[0]["extra"]["host"], "allowed.test");
    assert_eq!(
        events[0]["extra"]["resolved"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(events[1]["decision"], "allow");
    assert_eq!(events[1]["extra"]["address"], format!("127.0.0.1:{port}"));
}
