//! `fs.open` from a sandboxed plugin under `warden run` (the `hostcall` example's
//! `fs.read`/`fs.write`/`fs.append`, which use the SDK's `open`): reads and writes
//! in the plugin's data directory, and refusals of `..`, absolute paths, symlinks
//! out, a symlink swapped in during the open, special files, write without
//! `static:write`, and quota overflow.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{example, stderr, stdout, Fixture};

const V: &str = "0.1.0";

struct Run {
    f: Fixture,
}

impl Run {
    fn new() -> Run {
        Run { f: Fixture::new() }
    }

    fn bundle(&self, id: &str, caps: &[&str]) -> PathBuf {
        self.f.bundle_with(id, V, caps, &example("hostcall"), "")
    }

    /// The plugin's data directory, created ahead of warden (which reuses it).
    fn data(&self, id: &str) -> PathBuf {
        let d = self.f.state_dir().join("data").join(id);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn run(&self, bundle: &Path, policy: Option<&str>, calls: &[&str]) -> Vec<String> {
        let mut args = vec![];
        let p = self.f.path().join("policy.json");
        if let Some(json) = policy {
            std::fs::write(&p, json).unwrap();
            args.extend(["--policy", p.to_str().unwrap()]);
        }
        args.push("--");
        args.extend_from_slice(calls);
        let out = self.f.run(bundle, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out).lines().map(str::to_owned).collect()
    }
}

#[test]
fn reads_writes_and_refusals() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("files", &["static:read", "static:write"]);
    let data = r.data("files");
    let secret = r.f.path().join("secret.txt");
    std::fs::write(&secret, "SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, data.join("out")).unwrap();
    std::os::unix::fs::symlink("../../../secret.txt", data.join("rel")).unwrap();
    std::fs::create_dir(data.join("sub")).unwrap();
    std::os::unix::fs::symlink("../notes.txt", data.join("sub/back")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(data.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let lines = r.run(
        &b,
        None,
        &[
            "fs.write",
            "notes.txt",
            "hello",
            "fs.append",
            "notes.txt",
            ", world",
            "fs.read",
            "notes.txt",
            "fs.write",
            "sub/deep.txt",
            "x",
            "fs.read",
            "../secret.txt",
            "fs.read",
            "sub/../../secret.txt",
            "fs.read",
            "/etc/passwd",
            "fs.read",
            "out",
            "fs.read",
            "rel",
            "fs.read",
            "sub/back",
            "fs.read",
            "pipe",
            "fs.write",
            "pipe",
            "x",
            "fs.read",
            "sub",
            "fs.read",
            "missing",
            "fs.open",
            r#"{"path":"notes.txt","flags":["read","exec"]}"#,
        ],
    );
    let want = [
        "fs.write ok 5",
        "fs.append ok 7",
        r#"fs.read ok "hello, world""#,
        "fs.write ok 1",
        r#"fs.read err denied "../secret.txt" contains '..'; paths may not leave the data directory"#,
        r#"fs.read err denied "sub/../../secret.txt" contains '..'; paths may not leave the data directory"#,
        r#"fs.read err denied "/etc/passwd" is absolute; paths are relative to the plugin's data directory"#,
        r#"fs.read err denied "out" is or passes through a symbolic link, which fs.open never follows"#,
        r#"fs.read err denied "rel" is or passes through a symbolic link, which fs.open never follows"#,
        r#"fs.read err denied "sub/back" is or passes through a symbolic link, which fs.open never follows"#,
        r#"fs.read err denied "pipe" is a fifo, not a regular file"#,
        r#"fs.write err denied "pipe" is a fifo, not a regular file"#,
        r#"fs.read err denied "sub" is a directory, not a regular file"#,
        r#"fs.read err not_found no file "missing" in the data directory"#,
        r#"fs.open err bad_request unknown flag "exec" (read, write, create, truncate, append)"#,
    ];
    assert_eq!(lines, want);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "SECRET");
    assert_eq!(
        std::fs::read_to_string(data.join("notes.txt")).unwrap(),
        "hello, world"
    );
    // The directory and what the plugin created belong to the plugin's uid.
    let dir = std::fs::metadata(&data).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o700);
    let file = std::fs::metadata(data.join("notes.txt")).unwrap();
    assert_eq!((file.uid(), file.mode() & 0o777), (dir.uid(), 0o600));
    let audit = std::fs::read_to_string(r.f.state_dir().join("audit.log")).unwrap();
    assert!(audit.contains(r#""path":"notes.txt""#), "{audit}");
    // The launch says whether the sandbox has a cgroup (an optional layer).
    let launch = audit
        .lines()
        .find(|l| l.contains(r#""kind":"launch""#))
        .expect("a launch event");
    assert!(launch.contains(r#""cgroup":""#), "{launch}");

    // static:read alone opens read-only.
    let ro = r.bundle("reader", &["static:read"]);
    std::fs::write(r.data("reader").join("a"), "A").unwrap();
    let lines = r.run(&ro, None, &["fs.read", "a", "fs.write", "a", "B"]);
    assert_eq!(
        lines,
        [
            r#"fs.read ok "A""#,
            "fs.write err denied fs.open for writing needs static:write; static:read allows read-only opens"
        ]
    );
    // Each open is audited under the capability it needed: a read-only one under
    // static:read, one that writes (allowed or not) under static:write (both were
    // static:read).
    let audit = std::fs::read_to_string(r.f.state_dir().join("audit.log")).unwrap();
    let opens: Vec<(&str, bool)> = audit
        .lines()
        .filter(|l| l.contains(r#""plugin":"reader""#) && l.contains(r#""op":"fs.open""#))
        .map(|l| {
            let cap = if l.contains(r#""capability":"static:write""#) {
                "static:write"
            } else {
                "static:read"
            };
            (cap, l.contains(r#""decision":"allow""#))
        })
        .collect();
    assert_eq!(
        opens,
        [("static:read", true), ("static:write", false)],
        "{audit}"
    );
    // A file the plugin did not create keeps its owner: opening it gives the plugin
    // no more than the descriptor (before, a read made it the plugin's, to chmod).
    let a = std::fs::metadata(r.data("reader").join("a")).unwrap();
    // SAFETY: geteuid takes no arguments and cannot fail.
    assert_eq!(a.uid(), unsafe { libc::geteuid() });
}

#[test]
fn a_symlink_swapped_in_during_the_open_is_refused() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("racer", &["static:read"]);
    let data = r.data("racer");
    let secret = r.f.path().join("secret.txt");
    std::fs::write(&secret, "SECRET").unwrap();
    std::fs::write(data.join("target"), "inside").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let d = data.clone();
    // Flip `target` between a regular file and a symlink pointing out, atomically
    // (rename over it), as fast as possible while the plugin opens it.
    let flipper = std::thread::spawn(move || {
        let mut flips = 0u64;
        while !s.load(Ordering::Relaxed) {
            let link = d.join(".link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&secret, &link).unwrap();
            std::fs::rename(&link, d.join("target")).unwrap();
            std::fs::write(d.join(".file"), "inside").unwrap();
            std::fs::rename(d.join(".file"), d.join("target")).unwrap();
            flips += 1;
        }
        flips
    });
    let mut calls = Vec::new();
    for _ in 0..400 {
        calls.extend(["fs.read", "target"]);
    }
    let lines = r.run(&b, None, &calls);
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert_eq!(lines.len(), 400);
    let (mut read, mut refused) = (0, 0);
    for l in &lines {
        assert!(!l.contains("SECRET"), "the symlink was followed: {l}");
        if l == r#"fs.read ok "inside""# || l == r#"fs.read ok """# {
            read += 1;
        } else {
            assert!(l.starts_with("fs.read err denied"), "{l}");
            refused += 1;
        }
    }
    eprintln!("{flips} flips; {read} reads inside, {refused} refused");
    assert!(flips > 0);
}

#[test]
fn quota_overflow_is_refused() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("hog", &["static:read", "static:write"]);
    let data = r.data("hog");
    std::fs::write(data.join("big"), vec![7u8; 2 << 20]).unwrap();
    let policy = r#"{"limits":{"data_mb":1}}"#;
    let lines = r.run(
        &b,
        Some(policy),
        &["fs.write", "more", "x", "fs.read", "big"],
    );
    assert!(
        lines[0].starts_with("fs.write err denied quota: the data directory uses ")
            && lines[0].ends_with(
                r#"bytes of its 1048576-byte quota; opening "more" for writing is refused"#
            ),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], format!("fs.read ok {} bytes", 2 << 20));
    assert!(!data.join("more").exists());
    // Freeing space lets writes through again.
    std::fs::remove_file(data.join("big")).unwrap();
    let lines = r.run(&b, Some(policy), &["fs.write", "more", "x"]);
    assert_eq!(lines, ["fs.write ok 1"]);
}

/// A write open that succeeds is audited under static:write too (its result
/// came back through the pool with the op's static:read).
#[test]
fn a_write_open_that_succeeds_is_audited_under_static_write() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("writer", &["static:read", "static:write"]);
    r.data("writer");
    let lines = r.run(&b, None, &["fs.write", "w.txt", "x", "fs.read", "w.txt"]);
    assert_eq!(lines, ["fs.write ok 1", r#"fs.read ok "x""#]);
    let audit = std::fs::read_to_string(r.f.state_dir().join("audit.log")).unwrap();
    let opens: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains(r#""plugin":"writer""#) && l.contains(r#""op":"fs.open""#))
        .map(|l| {
            if l.contains(r#""capability":"static:write""#) {
                "static:write"
            } else {
                "static:read"
            }
        })
        .collect();
    assert_eq!(opens, ["static:write", "static:read"], "{audit}");
}

/// Every fs.open takes from static:read's token bucket, as docs/policy.md says,
/// write opens included (for a while they took static:write's).
#[test]
fn a_static_read_rate_limit_bounds_every_open_as_documented() {
    if !common::require_sandbox() {
        return;
    }
    let r = Run::new();
    let b = r.bundle("limited", &["static:read", "static:write"]);
    r.data("limited");
    let policy = r#"{"rate_limits":{"static:read":{"per_second":1,"burst":1}}}"#;
    let lines = r.run(
        &b,
        Some(policy),
        &[
            "fs.write", "a", "x", "fs.write", "b", "y", "fs.write", "c", "z",
        ],
    );
    assert!(
        lines.iter().any(|l| l.contains("rate_limited")),
        "three write opens within a second, static:read allows 1/s burst 1: {lines:?}"
    );
}
