//! `warden run` and signals: SIGTERM, SIGINT and SIGHUP sent to warden reach
//! the plugin as themselves (docs/sandbox.md), and warden exits with the
//! plugin's code (128+N when killed by signal N), its audit trail complete
//! however many signals come.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `warden run` of the probe bundle `b` with the probe's `args`, its output
/// discarded.
fn probe_run(f: &Fixture, b: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(WARDEN);
    cmd.args([
        "run",
        b.to_str().unwrap(),
        "--trust",
        f.trust().to_str().unwrap(),
        "--state-dir",
        f.state_dir().to_str().unwrap(),
        "--",
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// Waits until warden, the plugin and its child (which carry `marker`; the
/// sandbox init's command line is its own) all run.
fn wait_for_marker(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids_with_marker(marker).len() < 3 {
        assert!(Instant::now() < deadline, "plugin never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `warden run` of the probe in `sleep` mode, once the plugin (and its child) run.
fn start_sleeper(f: &Fixture, tag: &str) -> Child {
    let b = f.bundle("probe", &plugin("probe"), "");
    let marker = format!("marker-{tag}-{}-{:?}", std::process::id(), Instant::now());
    let child = probe_run(f, &b, &["sleep", &marker]).spawn().unwrap();
    wait_for_marker(&marker);
    child
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill takes a pid and a signal number; the child is not reaped yet,
    // so its pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden run did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGINT and SIGHUP sent to warden reach the plugin as themselves: a plugin
/// that does not handle them dies of them, and warden exits 128+N for that N
/// (both were sent on as SIGTERM: Ctrl-C gave 143).
#[test]
fn sigint_and_sighup_are_forwarded_as_themselves() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGHUP, "SIGHUP")] {
        let mut child = start_sleeper(&f, name);
        signal(&child, sig);
        let st = wait(&mut child);
        assert_eq!(
            st.code(),
            Some(128 + sig),
            "{name} to warden: the plugin should die of {name} and warden exit {}; got {st:?}",
            128 + sig
        );
    }
}

/// A SIGTERM that comes while warden is cleaning up (after the plugin ended: a
/// second Ctrl-C, a supervisor repeating its SIGTERM) does not kill it before
/// it has written the run's `exit` event and closed the log (it did: the log
/// was left empty, launch event included).
#[test]
fn repeated_sigterm_does_not_kill_warden_before_the_exit_event() {
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    for round in 0..3 {
        let mut child = start_sleeper(&f, &format!("term{round}"));
        // A SIGTERM every 200 µs until warden has ended.
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            signal(&child, libc::SIGTERM);
            std::thread::sleep(Duration::from_micros(200));
        };
        let log = std::fs::read_to_string(f.state_dir().join("audit.log")).unwrap();
        let last = log.lines().last().unwrap_or_default();
        assert_eq!(
            (st.code(), st.signal()),
            (Some(128 + libc::SIGTERM), None),
            "round {round}: warden itself was killed instead of exiting with the plugin's 143: {st:?}; the log ends with {last}"
        );
        assert!(
            last.contains(r#""kind":"exit""#),
            "round {round}: the audit log does not end with the run's exit event: {last}"
        );
    }
}

/// warden started with SIGINT, SIGHUP, SIGTERM and SIGCHLD ignored (as a
/// background job of a non-interactive shell ignores SIGINT, or under
/// `nohup`): the plugin still starts with every signal at its default, so a
/// forwarded SIGINT ends it, and its exit status still reaches warden. The
/// ignored dispositions went through warden and its sandbox init to the plugin
/// (exec keeps SIG_IGN): a forwarded SIGINT was dropped and the run never
/// ended (CI run from a background shell hung here).
#[test]
fn signals_ignored_by_wardens_parent_are_default_for_the_plugin() {
    use std::os::unix::process::CommandExt;
    if !require_sandbox() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle("probe", &plugin("probe"), "");
    let run = |args: &[&str]| {
        let mut cmd = probe_run(&f, &b, args);
        // SAFETY: between fork and exec only signal(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGCHLD] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    };
    // The exit status goes through with SIGCHLD ignored.
    let mut child = run(&["exit", "3"]);
    assert_eq!(wait(&mut child).code(), Some(3));
    let marker = format!("marker-ign-{}-{:?}", std::process::id(), Instant::now());
    let mut child = run(&["sleep", &marker]);
    wait_for_marker(&marker);
    signal(&child, libc::SIGINT);
    let st = wait(&mut child);
    assert_eq!(st.code(), Some(128 + libc::SIGINT), "{st:?}");
}
