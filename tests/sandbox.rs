//! Integration tests for `warden run` and the sandbox library API: what the plugin
//! sees inside, exit-code passthrough, verified-bytes-run, no survivors after
//! SIGKILL of warden, --dry-run, set-up failures, and an unprivileged run.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden::bundle::{self, TrustStore};
use warden::sandbox::{Config, ExitStatus, Plan, Sandbox};

fn report(f: &Fixture) -> (String, std::process::Output) {
    let b = f.bundle("probe", &plugin("probe"), r#""resources":{"tmp_mb":2}"#);
    let out = f.run(&b, &[]);
    (stdout(&out), out)
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[test]
fn plugin_sees_only_its_sandbox() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let (s, out) = report(&f);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{s}\nstderr:\n{}",
        stderr(&out)
    );
    // Exactly fds 0-3; fd 3 is the SEQPACKET broker socket.
    assert_eq!(line(&s, "fds "), "fds 0 1 2 3");
    assert_eq!(line(&s, "fd3 "), "fd3 seqpacket");
    // Exactly the documented environment.
    let env: Vec<&str> = s.lines().filter_map(|l| l.strip_prefix("env ")).collect();
    assert_eq!(
        env,
        [
            "PATH=/usr/bin:/bin",
            "HOME=/tmp",
            "TMPDIR=/tmp",
            "TZ=UTC",
            "LANG=C.UTF-8",
            "WARDEN_PLUGIN_ID=probe",
            "WARDEN_PLUGIN_VERSION=1.0.0",
            "WARDEN_FD=3"
        ]
    );
    assert_eq!(line(&s, "uid "), "uid 1000 gid 1000");
    assert_eq!(
        line(&s, "pid "),
        "pid 2 ppid 1",
        "the sandbox init is PID 1"
    );
    assert_eq!(line(&s, "hostname "), "hostname warden");
    // Batch scheduling, which the plugin cannot leave.
    assert_eq!(line(&s, "sched "), "sched batch");
    assert_eq!(line(&s, "sched set normal"), "sched set normal ENOSYS");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            line(&s, &format!("status {set}:")),
            format!("status {set}:\t0000000000000000")
        );
    }
    assert_eq!(line(&s, "status NoNewPrivs:"), "status NoNewPrivs:\t1");
    assert_eq!(line(&s, "status Seccomp:"), "status Seccomp:\t2");
    // /tmp writable and capped at the manifest's tmp_mb (2 MiB here).
    assert_eq!(line(&s, "write /tmp/small"), "write /tmp/small: ok 1048576");
    let big = line(&s, "write /tmp/big");
    assert!(big.contains("ENOSPC") || big.contains("EFBIG"), "{big}");
    // Nothing else writable.
    assert_eq!(line(&s, "write /rootfile"), "write /rootfile: EROFS");
    assert_eq!(
        line(&s, "write /usr/warden-test"),
        "write /usr/warden-test: EROFS"
    );
    assert_eq!(line(&s, "write /bundle/x"), "write /bundle/x: EROFS");
    // Host files are not there at all.
    for p in ["/root", "/home", "/etc/shadow", "/etc/passwd", "/work"] {
        assert_eq!(
            line(&s, &format!("exists {p} ")),
            format!("exists {p} ENOENT")
        );
    }
    // The init (a copy of warden) is not even listed: /proc shows only what
    // the plugin may ptrace (hidepid=ptraceable).
    for p in [
        "/proc/1/mem",
        "/proc/1/environ",
        "/proc/1/maps",
        "/proc/1/cmdline",
    ] {
        let l = line(&s, &format!("read {p} "));
        assert!(l.ends_with("ENOENT"), "{l}");
    }
    // Only loopback in the network namespace; netlink sockets and new namespaces refused.
    let ifs: Vec<&str> = s.lines().filter_map(|l| l.strip_prefix("netif ")).collect();
    assert_eq!(ifs, ["lo"]);
    assert_eq!(line(&s, "socket netlink"), "socket netlink EPERM");
    assert_eq!(line(&s, "unshare"), "unshare EPERM");
}

#[test]
fn exit_codes_pass_through() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    assert_eq!(f.run(&b, &["--", "exit", "7"]).status.code(), Some(7));
    assert_eq!(f.run(&b, &["--", "exit", "0"]).status.code(), Some(0));
    assert_eq!(f.run(&b, &["--", "kill"]).status.code(), Some(137));
    let out = f.run(&b, &["--", "print", "passthrough"]);
    assert_eq!(stdout(&out), "passthrough\n");
}

#[test]
fn manifest_args_are_used_unless_overridden() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), r#""args":["exit","3"]"#);
    assert_eq!(f.run(&b, &[]).status.code(), Some(3));
    assert_eq!(f.run(&b, &["--", "exit", "4"]).status.code(), Some(4));
}

/// The artifact is replaced on disk after verification: what runs is still the
/// verified bytes held in the sealed memfd.
#[test]
fn verified_bytes_run_even_if_the_artifact_is_swapped() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), r#""args":["exit","11"]"#);
    let trust = TrustStore::load(&f.trust()).unwrap();
    let verified = bundle::verify(&b, &trust).unwrap();
    // Swap in a different program (a shell script exiting 99) at the same path.
    let artifact = b.join("artifact");
    std::fs::remove_file(&artifact).unwrap();
    std::fs::write(&artifact, "#!/bin/sh\nexit 99\n").unwrap();
    let m = verified.manifest();
    let plan = Plan::new(&verified, m.resources, &m.args, &Config::default()).unwrap();
    let mut sb = Sandbox::spawn(&plan, &verified, warden::sandbox::Stdio::inherit()).unwrap();
    assert_eq!(sb.wait().unwrap(), ExitStatus::Code(11));
    // And a fresh verification of the swapped bundle is refused.
    let e = bundle::verify(&b, &trust).unwrap_err();
    assert_eq!(e.code(), "digest_mismatch");
}

#[test]
fn first_message_arrives_on_the_supervisor_socket() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), r#""args":["hello"]"#);
    let trust = TrustStore::load(&f.trust()).unwrap();
    let v = bundle::verify(&b, &trust).unwrap();
    let plan = Plan::new(
        &v,
        v.manifest().resources,
        &v.manifest().args,
        &Config::default(),
    )
    .unwrap();
    let mut sb = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit()).unwrap();
    let mut buf = [0u8; 256];
    let sock = sb.socket().unwrap();
    let n = warden::sys::socket::recv(sock.as_fd(), &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], br#"{"op":"hello"}"#);
    assert_eq!(sb.wait().unwrap(), ExitStatus::Code(0));
}

/// The lines of `/proc/<pid>/cgroup` for the v1 memory and pids hierarchies.
fn v1_cgroups(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, rest)| rest.to_owned()))
        .filter(|l| l.starts_with("memory:") || l.starts_with("pids:"))
        .collect()
}

#[test]
fn init_and_plugin_are_in_the_limited_cgroups() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(
        "probe",
        &plugin("probe"),
        r#""args":["sleep"],"resources":{"memory_mb":64,"pids":16}"#,
    );
    let trust = TrustStore::load(&f.trust()).unwrap();
    let v = bundle::verify(&b, &trust).unwrap();
    let plan = Plan::new(
        &v,
        v.manifest().resources,
        &v.manifest().args,
        &Config::default(),
    )
    .unwrap();
    let warden::sandbox::CgroupPlan::V1 { memory, pids, .. } = plan.cgroup() else {
        skip("a writable cgroup v1 memory+pids hierarchy (root on cgroup v1)");
        return;
    };
    let mut buf = [0u8; 64];
    let mut sb = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit()).unwrap();
    // The cgroups are empty until the init moves in: a sweep meanwhile (another
    // sandbox of this process exiting, say) must leave them alone.
    warden::sandbox::sweep_stale_cgroups();
    warden::sys::socket::recv(sb.socket().unwrap(), &mut buf, 0).unwrap();
    let init = sb.pid() as u32;
    let ppid = |pid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(1)?.parse::<u32>().ok()
    };
    let plugin: u32 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .find(|p| p.bytes().all(|b| b.is_ascii_digit()) && ppid(p) == Some(init))
        .expect("the plugin process")
        .parse()
        .unwrap();
    let want = v1_cgroups(init);
    assert_eq!(want.len(), 2, "{want:?}");
    assert_eq!(
        v1_cgroups(plugin),
        want,
        "the plugin shares the init's cgroups"
    );
    let prefix = format!("/warden/probe.{}.", std::process::id());
    let mut dirs = Vec::new();
    for (line, base, file, value) in [
        (&want[0], memory, "memory.limit_in_bytes", "67108864"),
        (&want[1], pids, "pids.max", "16"),
    ] {
        let (_, path) = line.split_once(':').unwrap();
        assert!(path.starts_with(&prefix), "{line}");
        let dir = base.join(path.trim_start_matches("/warden/"));
        let got = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(got.trim(), value);
        dirs.push(dir);
    }
    sb.kill().unwrap();
    assert_eq!(sb.wait().unwrap(), ExitStatus::Signal(libc::SIGKILL));
    drop(sb);
    for d in dirs {
        assert!(!d.exists(), "{} removed after exit", d.display());
    }
}

#[test]
fn terminate_and_kill_end_the_whole_sandbox() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), r#""args":["sleep"]"#);
    let trust = TrustStore::load(&f.trust()).unwrap();
    let v = bundle::verify(&b, &trust).unwrap();
    let plan = Plan::new(
        &v,
        v.manifest().resources,
        &v.manifest().args,
        &Config::default(),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let mut sb = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit()).unwrap();
    warden::sys::socket::recv(sb.socket().unwrap(), &mut buf, 0).unwrap();
    sb.terminate().unwrap();
    assert_eq!(sb.wait().unwrap(), ExitStatus::Signal(libc::SIGTERM));
    let mut sb = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit()).unwrap();
    warden::sys::socket::recv(sb.socket().unwrap(), &mut buf, 0).unwrap();
    assert!(sb.pidfd().as_raw_fd() >= 0);
    sb.kill().unwrap();
    assert_eq!(sb.wait().unwrap(), ExitStatus::Signal(libc::SIGKILL));
}

#[test]
fn sigkill_of_warden_leaves_no_plugin_behind() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let marker = format!("marker-{}-{:?}", std::process::id(), Instant::now());
    let state = f.state_dir();
    let mut child = Command::new(WARDEN)
        .args([
            "run",
            b.to_str().unwrap(),
            "--trust",
            f.trust().to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--",
            "sleep",
            &marker,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // warden, the plugin and its child carry the marker; the sandbox init (a
    // copy of warden, its command line `warden-init probe`) is the plugin's
    // parent.
    let mut inits = Vec::new();
    while pids_with_marker(&marker).len() < 3 || inits.is_empty() {
        assert!(Instant::now() < deadline, "plugin never started");
        std::thread::sleep(Duration::from_millis(10));
        inits = inits_above(&pids_with_marker(&marker));
    }
    assert_eq!(inits.len(), 1, "{inits:?}");
    // Alive: still there, still the init, not a zombie waiting to be reaped.
    let init_alive = || {
        std::fs::read_to_string(format!("/proc/{}/stat", inits[0])).is_ok_and(|st| {
            st.contains("(warden-init)")
                && st
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = pids_with_marker(&marker);
        if init_alive() {
            left.push(inits[0]);
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plugin processes survived warden: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The killed warden could not remove its cgroup; the next run sweeps it.
    warden::sandbox::sweep_stale_cgroups();
}

#[test]
fn dry_run_prints_the_plan() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let out = f.run(&b, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    for want in [
        "mounts:",
        "ro-bind /usr -> /usr",
        "-> /bundle",
        "tmpfs /tmp (size=64m",
        "proc /proc",
        "rlimits:",
        "RLIMIT_AS 268435456",
        "RLIMIT_NOFILE 256",
        "RLIMIT_CORE 0",
        "landlock: ABI ",
        "net: tcp bind and connect denied",
        "scoped: abstract unix sockets, signals",
        "seccomp: ",
        "execveat(args)",
        "ptrace=EPERM",
        "uid map: inside 1000:1000 -> host ",
        "scheduling: SCHED_BATCH",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
}

#[test]
fn policy_narrows_limits_and_blocked_is_refused() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let pol = f.path().join("policy.json");
    std::fs::write(
        &pol,
        r#"{"status":"approved","grant":[],"limits":{"tmp_mb":2,"memory_mb":32}}"#,
    )
    .unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap(), "--dry-run"]);
    let s = stdout(&out);
    assert!(s.contains("tmpfs /tmp (size=2m"), "{s}");
    assert!(s.contains("RLIMIT_AS 33554432"), "{s}");
    assert!(s.contains("granted capabilities: []"), "{s}");
    std::fs::write(&pol, r#"{"status":"blocked"}"#).unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        format!("warden: probe is blocked by policy {}\n", pol.display())
    );
    std::fs::write(&pol, r#"{"grant":["kv:everything"]}"#).unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        format!(
            "warden: policy: {}: unknown capability \"kv:everything\" in grant\n",
            pol.display()
        )
    );
}

/// `warden run --dry-run` prints every effective limit: the broker's call
/// timeout and data quota too (it showed neither).
#[test]
fn dry_run_prints_every_effective_limit() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let pol = f.path().join("policy.json");
    std::fs::write(&pol, r#"{"limits":{"call_timeout_ms":1234,"data_mb":7}}"#).unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    let broker = line(&s, "broker:");
    assert!(
        broker.contains("call_timeout_ms 1234") && broker.contains("data_mb 7"),
        "{s}"
    );
    assert_eq!(
        line(&s, "egress:"),
        "egress: none (every net.dial is refused)"
    );
}

/// `"grant": null` in a policy is refused as a wrong type (it granted every
/// capability the manifest declares, as if `grant` were absent).
#[test]
fn a_null_grant_is_refused() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle_with(
        "probe",
        "1.0.0",
        &["kv:write", "log:write"],
        &plugin("probe"),
        "",
    );
    let pol = f.path().join("policy.json");
    std::fs::write(&pol, r#"{"status":"approved","grant":null}"#).unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap(), "--dry-run"]);
    let s = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(125),
        "accepted; {}",
        line(&s, "granted capabilities:")
    );
}

#[test]
fn refusals_exit_125_with_one_line() {
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    std::fs::write(b.join("artifact"), b"tampered").unwrap();
    let out = f.run(&b, &[]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(e.starts_with("rejected: digest_mismatch: "), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn missing_landlock_abi_is_a_precondition_failure() {
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let out = f.run(&b, &["--landlock-min-abi", "99"]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(
        e.starts_with("sandbox: kernel feature missing: landlock: the kernel offers landlock ABI "),
        "{e}"
    );
    assert!(e.ends_with(", warden requires >= 99\n"), "{e}");
}

/// A set-up step that fails in the child is reported as `sandbox: <step>: <ERRNO>`:
/// here the bundle directory is swapped for another one between verification and
/// launch, which the child refuses (it binds only the directory it verified).
#[test]
fn a_failed_setup_step_names_step_and_errno() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    // A bundle swapped for another directory after verification is refused in the child.
    let trust = TrustStore::load(&f.trust()).unwrap();
    let v = bundle::verify(&b, &trust).unwrap();
    let plan = Plan::new(&v, v.manifest().resources, &[], &Config::default()).unwrap();
    std::fs::rename(&b, f.path().join("moved")).unwrap();
    std::fs::create_dir(&b).unwrap();
    let e = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit())
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(e.to_string(), "sandbox: bind_bundle: ESTALE");
}

/// The sandbox also works for an ordinary user: run `warden run` as uid 65534.
#[test]
fn runs_as_an_unprivileged_user() {
    if !require_sandbox() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the other tests covered this case.
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux), to drop to an unprivileged uid");
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    // The test binary's directory may not be reachable by 65534: copy warden.
    let w = f.path().join("warden");
    std::fs::copy(WARDEN, &w).unwrap();
    let state = f.path().join("state-65534");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let run = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&w)
            .args([
                "run",
                b.to_str().unwrap(),
                "--trust",
                f.trust().to_str().unwrap(),
                "--state-dir",
                f.path().join("state-65534").to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // A process forked meanwhile by another test (a sandbox spawned in this test
    // process) briefly holds a copy of the copy's write descriptor: ETXTBSY.
    let mut out = run();
    for _ in 0..20 {
        if !stderr(&out).contains("Text file busy") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = run();
    }
    let s = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{s}\nstderr:\n{}",
        stderr(&out)
    );
    assert_eq!(line(&s, "uid "), "uid 1000 gid 1000");
    assert_eq!(line(&s, "pid "), "pid 2 ppid 1");
    assert_eq!(line(&s, "fds "), "fds 0 1 2 3");
    assert_eq!(
        line(&s, "status CapEff:"),
        "status CapEff:\t0000000000000000"
    );
    assert_eq!(line(&s, "status Seccomp:"), "status Seccomp:\t2");
    assert_eq!(line(&s, "write /rootfile"), "write /rootfile: EROFS");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&w)
        .args([
            "run",
            b.to_str().unwrap(),
            "--trust",
            f.trust().to_str().unwrap(),
            "--dry-run",
        ])
        .output()
        .unwrap();
    let s = stdout(&out);
    assert!(
        s.contains("uid map: inside 1000:1000 -> host 65534:65534 (our own ids; setgroups denied)"),
        "{s}"
    );
    assert!(s.contains("cgroup: absent: "), "{s}");
}

/// A host mount beneath a read-only bind (here a tmpfs under /usr, in a private
/// mount namespace of this test's own) is read-only inside too, not only the
/// bind's top mount.
#[test]
fn mounts_under_read_only_binds_are_read_only() {
    if !require_sandbox() {
        return;
    }
    let under = "/usr/local/src";
    if !std::path::Path::new(under).is_dir() {
        assert!(
            std::env::var_os("WARDEN_TEST_STRICT").is_none(),
            "{under} is missing"
        );
        eprintln!("skipped: no {under} to mount a tmpfs on");
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), r#""resources":{"tmp_mb":2}"#);
    let script = format!(
        "mount -t tmpfs warden-test {under} && exec \"$0\" run \"$1\" --trust \"$2\" --state-dir \"$3\""
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(common::WARDEN)
        .arg(&b)
        .arg(f.trust())
        .arg(f.state_dir())
        .output()
        .expect("unshare (util-linux)");
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}\n{}", stderr(&out));
    assert!(s.contains(&format!("mount {under} ")), "{s}");
    let rw: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("mount ") && l.ends_with(" rw"))
        .collect();
    assert!(rw.is_empty(), "writable mounts under /usr: {rw:?}");
}

/// `--` with nothing after it replaces the manifest's `args` with none; without
/// `--`, the manifest's apply.
#[test]
fn a_bare_double_dash_clears_the_manifests_args() {
    let f = Fixture::new();
    let b = f.bundle(
        "echo",
        std::path::Path::new("/bin/true"),
        r#""args":["--from-manifest"]"#,
    );
    let argv = |extra: &[&str]| {
        let out = f.run(&b, extra);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .find(|l| l.starts_with("argv:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(argv(&["--dry-run"]), r#"argv: ["echo", "--from-manifest"]"#);
    assert_eq!(argv(&["--dry-run", "--"]), r#"argv: ["echo"]"#);
    assert_eq!(argv(&["--dry-run", "--", "x"]), r#"argv: ["echo", "x"]"#);
}

/// `"status":"pending_review"` means "no grants" under `warden serve` but not
/// under `warden run`, where only `blocked` stops a plugin and `grant` decides:
/// the dry run says so, so that an operator does not take one for the other.
#[test]
fn pending_review_under_run_is_said_to_gate_nothing() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle_with(
        "probe",
        "1.0.0",
        &["kv:write", "log:write"],
        &plugin("probe"),
        "",
    );
    let pol = f.path().join("policy.json");
    std::fs::write(&pol, r#"{"status":"pending_review","grant":["log:write"]}"#).unwrap();
    let out = f.run(&b, &["--policy", pol.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        line(&stdout(&out), "granted capabilities:"),
        "granted capabilities: [log:write] (policy status pending_review; warden run gates only on blocked: grant decides)"
    );
}

/// Without `--policy` the plugin gets what its manifest declares (docs/policy.md);
/// the dry run said `policy status pending_review`, naming a policy nobody gave.
#[test]
fn dry_run_without_policy_says_the_manifest_decides() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle_with(
        "probe",
        "1.0.0",
        &["kv:write", "log:write"],
        &plugin("probe"),
        "",
    );
    let out = f.run(&b, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        line(&stdout(&out), "granted capabilities:"),
        "granted capabilities: [kv:write, log:write] (no --policy: everything the manifest declares)"
    );
}

/// Once the plugin has ended, `warden run` waits for the copy as long as the
/// reader takes something within 2 s (docs/sandbox.md): a reader of warden's
/// stdout taking 2 KiB every 100 ms gets everything. It lost the end: progress
/// was counted per 64 KiB write, which that reader needs over 3 s to take.
#[test]
fn a_slow_but_steady_reader_gets_all_of_the_output() {
    if !require_sandbox() {
        return;
    }
    use std::io::Read;
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let big = "x".repeat(120_000);
    let mut child = Command::new(WARDEN)
        .args(["run", b.to_str().unwrap(), "--trust"])
        .arg(f.trust())
        .arg("--state-dir")
        .arg(f.state_dir())
        .args(["--", "print", &big])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    // Let the plugin write everything and end first.
    std::thread::sleep(Duration::from_millis(1500));
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        got.len(),
        big.len() + 1,
        "the reader took 2 KiB every 100 ms, yet got {} of {} bytes",
        got.len(),
        big.len() + 1
    );
}
