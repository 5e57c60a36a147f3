//! Host calls from a real sandboxed plugin under `warden run`: every op, each kind
//! of denial, rate limits, namespaces, the audit trail, and that an acknowledged
//! `kv.put` survives SIGKILL of warden.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{example, stderr, stdout, Fixture};

/// The example plugins' version: the SDK says hello with it.
const V: &str = "0.1.0";

struct Run {
    f: Fixture,
    state: PathBuf,
}

impl Run {
    fn new() -> Run {
        let f = Fixture::new();
        let state = f.path().join("state");
        Run { f, state }
    }

    fn bundle(&self, id: &str, caps: &[&str]) -> PathBuf {
        self.f.bundle_with(id, V, caps, &example("hostcall"), "")
    }

    /// `warden run BUNDLE -- calls...` with this fixture's state dir (and policy).
    fn run(&self, bundle: &Path, policy: Option<&Path>, calls: &[&str]) -> std::process::Output {
        let mut args = vec!["--state-dir", self.state.to_str().unwrap()];
        if let Some(p) = policy {
            args.extend(["--policy", p.to_str().unwrap()]);
        }
        args.push("--");
        args.extend_from_slice(calls);
        self.f.run(bundle, &args)
    }

    /// Starts `warden run BUNDLE -- kv.put {key:k, value} sleep 30` in the
    /// background and returns it once the put is acknowledged.
    fn put_and_hold(&self, bundle: &Path, value: &str) -> std::process::Child {
        let put = format!(r#"{{"key":"k","value":"{value}"}}"#);
        let mut child = Command::new(common::WARDEN)
            .args([
                "run",
                bundle.to_str().unwrap(),
                "--trust",
                self.f.trust().to_str().unwrap(),
            ])
            .args(["--state-dir", self.state.to_str().unwrap(), "--"])
            .args(["kv.put", &put, "sleep", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "kv.put ok {}");
        child
    }

    fn policy(&self, name: &str, json: &str) -> PathBuf {
        let p = self.f.path().join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.state.join("audit.log")).unwrap()
    }
}

/// The answer lines, checked for a successful run.
fn answers(out: &std::process::Output) -> Vec<String> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stdout(out).lines().map(str::to_owned).collect()
}

#[test]
fn every_op_from_a_sandboxed_plugin() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle(
        "allops",
        &[
            "kv:read",
            "kv:write",
            "log:write",
            "monitor:read",
            "audit:read",
        ],
    );
    let out = r.run(
        &b,
        None,
        &[
            "kv.put",
            r#"{"key":"a","value":"1"}"#,
            "kv.put",
            r#"{"key":"b","value":"2"}"#,
            "kv.get",
            r#"{"key":"a"}"#,
            "kv.list",
            r#"{"prefix":"","limit":10}"#,
            "kv.delete",
            r#"{"key":"b"}"#,
            "kv.get",
            r#"{"key":"b"}"#,
            "log.write",
            r#"{"level":"warn","message":"disk almost full","fields":{"pct":93}}"#,
            "monitor.stats",
            "{}",
            "audit.query",
            r#"{"limit":3}"#,
        ],
    );
    let lines = answers(&out);
    assert_eq!(lines[0], "kv.put ok {}");
    assert_eq!(lines[2], r#"kv.get ok {"value":"1"}"#);
    assert_eq!(lines[3], r#"kv.list ok {"cursor":null,"keys":["a","b"]}"#);
    assert_eq!(lines[4], r#"kv.delete ok {"deleted":true}"#);
    assert!(lines[5].starts_with("kv.get err not_found"), "{}", lines[5]);
    assert_eq!(lines[6], "log.write ok {}");
    assert!(
        lines[7].starts_with(r#"monitor.stats ok {"host":{"load":["#),
        "{}",
        lines[7]
    );
    assert!(
        lines[7].contains(r#""allowed":7,"#) && lines[7].contains(r#""calls":8,"#),
        "{}",
        lines[7]
    );
    assert!(lines[8].contains(r#""op":"monitor.stats""#), "{}", lines[8]);
    // The plugin's log line reaches warden's log, tagged with its id.
    assert!(
        stderr(&out).contains(r#"plugin=allops level=warn msg="disk almost full" pct=93"#),
        "{}",
        stderr(&out)
    );
    // Every decision is in a verifying audit log: launch, hello, 9 calls, exit.
    let audit = r.audit();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains(r#""kind":"host_call""#))
            .count(),
        9
    );
    assert!(audit.lines().next().unwrap().contains(r#""kind":"launch""#));
    assert!(audit.lines().last().unwrap().contains(r#""exit_code":0"#));
    let v = common::warden(&[
        "audit",
        "verify",
        r.state.join("audit.log").to_str().unwrap(),
    ]);
    assert!(
        stdout(&v).starts_with("intact, 12 events"),
        "{}",
        stdout(&v)
    );
}

#[test]
fn denials_not_declared_not_granted_and_other_namespaces() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("narrow", &["kv:read", "kv:write"]);
    let policy = r.policy("p.json", r#"{"status":"approved","grant":["kv:read"]}"#);
    let out = r.run(
        &b,
        Some(&policy),
        &[
            "kv.put",
            r#"{"key":"a","value":"1"}"#,
            "log.write",
            r#"{"level":"info","message":"x"}"#,
            "kv.get",
            r#"{"key":"a","ns":"plugin:other"}"#,
            "kv.steal",
            "{}",
            "net.dial",
            r#"{"host":"example.com","port":443}"#,
        ],
    );
    let lines = answers(&out);
    assert_eq!(lines[0], "kv.put err denied kv.put needs kv:write, which the manifest declares but the policy does not grant");
    assert_eq!(lines[1], "log.write err denied log.write needs log:write, which the manifest of narrow does not declare");
    assert!(
        lines[2].starts_with("kv.get err bad_request args: unknown field `ns`"),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        r#"kv.steal err unknown_op no op named "kv.steal""#
    );
    assert!(lines[4].starts_with("net.dial err denied"), "{}", lines[4]);
    let audit = r.audit();
    assert_eq!(audit.matches(r#""decision":"deny""#).count(), 3, "{audit}");

    // Namespaces: another plugin with the same state cannot see narrow's keys.
    let writer = r.bundle("writer", &["kv:read", "kv:write"]);
    answers(&r.run(
        &writer,
        None,
        &["kv.put", r#"{"key":"secret","value":"w"}"#],
    ));
    let reader = r.bundle("reader", &["kv:read"]);
    let lines = answers(&r.run(
        &reader,
        None,
        &["kv.get", r#"{"key":"secret"}"#, "kv.list", "{}"],
    ));
    assert!(lines[0].starts_with("kv.get err not_found"), "{}", lines[0]);
    assert_eq!(lines[1], r#"kv.list ok {"cursor":null,"keys":[]}"#);
}

#[test]
fn policy_rate_limits_apply_per_capability() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("chatty", &["log:write", "kv:read"]);
    let policy = r.policy(
        "p.json",
        r#"{"status":"approved","rate_limits":{"log:write":{"per_second":1,"burst":2}}}"#,
    );
    let msg = r#"{"level":"debug","message":"m"}"#;
    let lines = answers(&r.run(
        &b,
        Some(&policy),
        &[
            "log.write",
            msg,
            "log.write",
            msg,
            "log.write",
            msg,
            "kv.get",
            r#"{"key":"k"}"#,
        ],
    ));
    assert_eq!(&lines[..2], ["log.write ok {}", "log.write ok {}"]);
    assert_eq!(
        lines[2],
        "log.write err rate_limited log:write allows 1 calls/s (burst 2)"
    );
    assert!(
        lines[3].starts_with("kv.get err not_found"),
        "kv:read has its own bucket: {}",
        lines[3]
    );
    assert!(r.audit().contains(r#""decision":"rate_limited""#));
}

#[test]
fn blocked_and_malformed_policies_are_refused_before_launch() {
    let r = Run::new();
    let b = r.bundle("nope", &["kv:read"]);
    let blocked = r.policy("b.json", r#"{"status":"blocked"}"#);
    let out = r.run(&b, Some(&blocked), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("nope is blocked by policy"),
        "{}",
        stderr(&out)
    );
    let bad = r.policy(
        "r.json",
        r#"{"rate_limits":{"kv:raed":{"per_second":1,"burst":1}}}"#,
    );
    let out = r.run(&b, Some(&bad), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(r#"unknown capability "kv:raed""#),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_acknowledged_put_survives_sigkill_of_warden() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("durable", &["kv:read", "kv:write"]);
    let mut child = r.put_and_hold(&b, "acked");
    child.kill().unwrap(); // SIGKILL, right after the acknowledgement
    child.wait().unwrap();
    let lines = answers(&r.run(&b, None, &["kv.get", r#"{"key":"k"}"#]));
    assert_eq!(lines[0], r#"kv.get ok {"value":"acked"}"#);
}

#[test]
fn a_second_run_on_a_busy_state_dir_is_told_how_to_proceed() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("busy", &["kv:read", "kv:write"]);
    let mut first = r.put_and_hold(&b, "first");
    // Same state dir, same audit log: refused before launch, with the way out.
    let out = r.run(&b, None, &["kv.get", r#"{"key":"k"}"#]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!(
            "another process is writing this audit log (lock held by pid {} (warden)); another warden uses this state directory: give this run its own --audit FILE (or --state-dir)",
            first.id()
        )),
        "{}",
        stderr(&out)
    );
    // With an audit log of its own it runs, sharing the KV database.
    let own = r.f.path().join("second-audit.log");
    let mut args = vec![
        "--state-dir",
        r.state.to_str().unwrap(),
        "--audit",
        own.to_str().unwrap(),
        "--",
    ];
    args.extend(["kv.get", r#"{"key":"k"}"#]);
    let lines = answers(&r.f.run(&b, &args));
    assert_eq!(lines[0], r#"kv.get ok {"value":"first"}"#);
    // Given the first run's audit log with --audit, from another state dir: the
    // log is what is shared, and the message says so (it spoke of the state dir).
    let other_state = r.f.path().join("other-state");
    let busy = r.state.join("audit.log");
    let args = [
        "--state-dir",
        other_state.to_str().unwrap(),
        "--audit",
        busy.to_str().unwrap(),
        "--",
        "kv.get",
        r#"{"key":"k"}"#,
    ];
    let out = r.f.run(&b, &args);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!(
            "(lock held by pid {} (warden)); another warden writes this audit log: give this run its own --audit FILE",
            first.id()
        )),
        "{}",
        stderr(&out)
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn the_database_is_opened_only_for_a_kv_grant() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let db = r.state.join("warden.db");
    // Declared but not granted: refused by the broker, and no database work.
    let b = r.bundle("nokv", &["kv:read", "log:write"]);
    let policy = r.policy("p.json", r#"{"status":"approved","grant":["log:write"]}"#);
    let lines = answers(&r.run(&b, Some(&policy), &["kv.get", r#"{"key":"a"}"#]));
    assert!(lines[0].starts_with("kv.get err denied"), "{}", lines[0]);
    assert!(r.audit().contains(r#""kind":"launch""#));
    assert!(!db.exists(), "no kv grant, no database");
    // Granted: the database is made (and its schema checked) as before.
    let lines = answers(&r.run(&b, None, &["kv.get", r#"{"key":"a"}"#]));
    assert!(lines[0].starts_with("kv.get err not_found"), "{}", lines[0]);
    assert!(db.exists());
}

/// warden's stderr is a pipe nobody reads (a stalled journal): the plugin's
/// `log.write` lines fill it within a few calls, yet every call is answered and
/// warden exits, because log lines go through a queue to a thread of their own.
#[test]
fn a_stderr_nobody_reads_does_not_block_host_calls() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("loud", &["log:write"]);
    let msg = format!(r#"{{"level":"info","message":"{}"}}"#, "x".repeat(4000));
    let calls = 40; // 160 KB of log lines: more than a pipe holds (64 KiB)
    let mut args = vec![
        "run".to_string(),
        b.to_str().unwrap().to_string(),
        "--trust".to_string(),
        r.f.trust().to_str().unwrap().to_string(),
        "--state-dir".to_string(),
        r.state.to_str().unwrap().to_string(),
        "--".to_string(),
    ];
    for _ in 0..calls {
        args.extend(["log.write".to_string(), msg.clone()]);
    }
    let mut child = Command::new(common::WARDEN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden run blocked on a full stderr");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), calls, "{lines:?}");
    assert!(lines.iter().all(|l| l == "log.write ok {}"), "{lines:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("plugin=loud level=info msg=xxxx"),
        "some lines got through"
    );
}

/// Two `warden run`s of one plugin on one state directory (each with its own
/// audit log, as the refusal of a shared audit log suggests), writing the same
/// KV namespace at once: every put is acknowledged, none is lost, and the
/// namespace's usage row counts them all (the quota's input). The writer's
/// transactions take SQLite's write lock up front and wait for it (busy
/// timeout), so neither plugin sees "database is locked".
#[test]
fn two_runs_on_one_state_dir_lose_no_put() {
    if !common::require_sandbox() {
        return;
    }
    const PUTS: usize = 300;
    let r = Run::new();
    let b = r.bundle("shared", &["kv:read", "kv:write"]);
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|side| {
            let mut cmd = Command::new(common::WARDEN);
            cmd.args(["run", b.to_str().unwrap(), "--trust"])
                .arg(r.f.trust())
                .arg("--state-dir")
                .arg(&r.state)
                .arg("--audit")
                .arg(r.f.path().join(format!("audit-{side}.log")))
                .arg("--");
            for i in 0..PUTS {
                cmd.args([
                    "kv.put",
                    &format!(r#"{{"key":"{side}{i:03}","value":"{i}"}}"#),
                ]);
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in runs {
        let out = c.wait_with_output().unwrap();
        let lines = answers(&out);
        assert_eq!(lines.len(), PUTS, "{}", stderr(&out));
        assert!(lines.iter().all(|l| l == "kv.put ok {}"), "{lines:?}");
    }
    let db = rusqlite::Connection::open(r.state.join("warden.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM kv", [], |row| row.get(0))
        .unwrap();
    assert_eq!(n, 2 * PUTS as i64);
    let keys: i64 = db
        .query_row("SELECT keys FROM kv_usage", [], |row| row.get(0))
        .unwrap();
    assert_eq!(keys, 2 * PUTS as i64);
}

/// Two `warden run`s of one plugin on one state directory (allowed, each with
/// its own audit log): a value one of them had read was served from its read
/// cache for the rest of its run, after the other had committed and
/// acknowledged a new one. A run's cache cannot see other processes' writes,
/// so `warden run` reads through to the database.
#[test]
fn a_run_reads_what_another_run_wrote() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("shared", &["kv:read", "kv:write"]);
    answers(&r.run(&b, None, &["kv.put", r#"{"key":"k","value":"v1"}"#]));
    let mut a = Command::new(common::WARDEN)
        .args(["run", b.to_str().unwrap(), "--trust"])
        .arg(r.f.trust())
        .arg("--state-dir")
        .arg(&r.state)
        .arg("--audit")
        .arg(r.f.path().join("audit-a.log"))
        .args(["--", "kv.get", r#"{"key":"k"}"#, "sleep", "4"])
        .args(["kv.get", r#"{"key":"k"}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(a.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), r#"kv.get ok {"value":"v1"}"#);
    let b_audit = r.f.path().join("audit-b.log");
    let put = r.f.run(
        &b,
        &[
            "--state-dir",
            r.state.to_str().unwrap(),
            "--audit",
            b_audit.to_str().unwrap(),
            "--",
            "kv.put",
            r#"{"key":"k","value":"v2"}"#,
        ],
    );
    assert_eq!(answers(&put), ["kv.put ok {}"]);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), r#"kv.get ok {"value":"v2"}"#, "a stale read");
    assert!(a.wait().unwrap().success());
}
