//! `warden serve` as operators run it: a real supervisor process on a temp config,
//! driven with `warden ctl`, supervising the hand-written protocol plugin
//! `tests/plugins/svc.c`. Lifecycle and refusals, rollback, crash loops reaching
//! `failed`, hung plugins, blue-green replacement, SIGKILL of warden, the control
//! socket's SO_PEERCRED check, and 100 plugins at once.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require_sandbox, stderr, stdout, tempdir, warden, WARDEN};
use serde_json::Value;

struct Serve {
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: String,
}

impl Serve {
    /// A key, trust dir, plugin dir and config (with `extra` config keys); not started.
    fn new(extra: &str) -> Serve {
        let dir = tempdir();
        let p = dir.path();
        std::fs::create_dir_all(p.join("trust/acme")).unwrap();
        std::fs::create_dir_all(p.join("plugins")).unwrap();
        let out = warden(&["keygen", "--out", p.join("acme").to_str().unwrap()]);
        assert!(out.status.success(), "keygen: {}", stderr(&out));
        std::fs::copy(p.join("acme.pub"), p.join("trust/acme/acme.pub")).unwrap();
        let s = Serve {
            dir,
            child: None,
            extra: extra.to_owned(),
        };
        s.write_config();
        s
    }

    fn write_config(&self) {
        let sep = if self.extra.is_empty() { "" } else { "," };
        std::fs::write(
            self.path().join("warden.json"),
            format!(
                r#"{{"plugin_dir":"plugins","trust_dir":"trust","state_dir":"state",
                "audit_log":"state/audit.jsonl","control_socket":"control.sock",
                "restart":{{"initial_backoff_ms":50,"max_backoff_ms":200,"max_restarts":3,"window_s":60}},
                "shutdown_deadline_ms":1000{sep}{}}}"#,
                self.extra
            ),
        )
        .unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("warden.json")
    }

    fn log_path(&self) -> PathBuf {
        self.path().join("serve.log")
    }

    /// Packs svc.c as plugin `id` at `version`, run with `mode`, into a temp dir
    /// and swaps it into the plugin directory (as an operator's deploy would).
    fn deploy(&self, id: &str, version: &str, mode: &str, health: &str) {
        let m = self.path().join(format!("{id}-{version}.json"));
        let health = if health.is_empty() {
            String::new()
        } else {
            format!(r#","health":{health}"#)
        };
        std::fs::write(
            &m,
            format!(
                r#"{{"id":"{id}","version":"{version}","publisher":"acme","min_core":"0.1.0",
                "capabilities":["kv:write","log:write"],"args":["{mode}","{version}"],
                "resources":{{"memory_mb":64,"pids":8,"nofile":64,"tmp_mb":1}}{health}}}"#
            ),
        )
        .unwrap();
        let staged = self.path().join(format!("staged-{id}-{version}"));
        let _ = std::fs::remove_dir_all(&staged);
        let svc = common::plugin("svc");
        let out = warden(&[
            "pack",
            "--manifest",
            m.to_str().unwrap(),
            "--artifact",
            svc.to_str().unwrap(),
            "--key",
            self.path().join("acme.key").to_str().unwrap(),
            "--out",
            staged.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "pack: {}", stderr(&out));
        let target = self.path().join("plugins").join(id);
        if target.exists() {
            let old = self.path().join(format!("old-{id}-{version}"));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&target, &old).unwrap();
        }
        std::fs::rename(&staged, &target).unwrap();
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(WARDEN)
            .args(["serve", "--config", self.config().to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start warden serve");
        self.child = Some(child);
        let sock = self.path().join("control.sock");
        let t0 = Instant::now();
        while !sock.exists() || !self.ctl(&["list"]).status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "warden serve did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we spawned and a plain signal number.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM and wait; returns the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "warden did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let c = self.config();
        let mut a = vec!["ctl", "--config", c.to_str().unwrap()];
        a.extend_from_slice(args);
        warden(&a)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}\nlog:\n{}",
            stderr(&out),
            self.log()
        );
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    /// `ctl ARGS` must fail with exactly `line`.
    fn refused(&self, args: &[&str], line: &str) {
        let out = self.ctl(args);
        assert!(!out.status.success(), "ctl {args:?} should fail");
        assert_eq!(stderr(&out).trim_end(), line);
    }

    fn status(&self, id: &str) -> Value {
        self.ok(&["status", id])
    }

    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for {what}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_runtime(&self, id: &str, runtime: &str) -> Value {
        let mut last = Value::Null;
        self.wait(
            &format!("{id} to be {runtime}"),
            Duration::from_secs(20),
            || {
                last = self.status(id);
                last["runtime"] == runtime
            },
        );
        last
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path().join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Installs, approves and activates `id`, waiting until it runs.
    fn bring_up(&self, id: &str) -> Value {
        self.ok(&["install", id]);
        self.ok(&["policy", "approve", id]);
        self.ok(&["activate", id]);
        self.wait_runtime(id, "running")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let s = Serve::new(r#""restart_policy":{}"#);
    let out = warden(&["serve", "--config", s.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown field `restart_policy`"),
        "{}",
        stderr(&out)
    );
    let s = Serve::new(r#""output":{"lines_per_second":0}"#);
    let out = warden(&["serve", "--config", s.config().to_str().unwrap()]);
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "warden: config {}: output.lines_per_second: 0 is outside 1..=100000",
            s.config().display()
        )
    );
}

#[test]
fn lifecycle_refusals_rollback_and_persistence() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let st = s.status("svc");
    assert_eq!(st["status"], "verified");
    assert_eq!(st["policy"], "pending_review");
    assert_eq!(st["grants"], serde_json::json!([]));
    s.refused(
        &["activate", "svc"],
        "warden: cannot activate plugin svc: it is verified, and activate is allowed only from installed or disabled; install it first: warden ctl install svc",
    );
    s.refused(
        &["disable", "svc"],
        "warden: cannot disable plugin svc: it is verified, and disable is allowed only from installed or active",
    );
    s.refused(&["install", "nope"], "warden: no plugin \"nope\"");
    s.ok(&["install", "svc"]);
    s.refused(
        &["install", "svc"],
        "warden: cannot install plugin svc: it is installed, and install is allowed only from verified",
    );
    s.ok(&["activate", "svc"]);
    let st = s.wait_runtime("svc", "running");
    assert_eq!(st["policy"], "pending_review");
    s.ok(&["disable", "svc"]);
    s.wait_runtime("svc", "stopped");
    s.ok(&["activate", "svc"]);
    s.wait_runtime("svc", "running");

    // Rollback: an older version is refused while the newer keeps serving.
    s.deploy("svc", "0.9.0", "serve", "");
    s.ok(&["reload"]);
    let st = s.status("svc");
    assert_eq!(st["serving_version"], "1.0.0");
    assert_eq!(st["version"], "1.0.0");
    assert!(s.log().contains(
        "plugin=svc rejected: rollback: version 0.9.0 is older than 1.0.0, the highest seen"
    ));
    s.wait(
        "the rollback in the audit log",
        Duration::from_secs(5),
        || {
            s.audit().iter().any(|e| {
                e["kind"] == "verify_failure"
                    && e["reason"].as_str().unwrap_or("").contains("rollback")
            })
        },
    );
    // ... unless the operator allows that downgrade explicitly (of a version
    // older than the highest: there is nothing to allow for another).
    let out = s.ctl(&["allow-downgrade", "svc", "1.0.0"]);
    assert!(
        !out.status.success() && stderr(&out).contains("is not older than 1.0.0"),
        "{}",
        stderr(&out)
    );
    s.ok(&["allow-downgrade", "svc", "0.9.0"]);
    s.wait("0.9.0 to serve", Duration::from_secs(10), || {
        s.status("svc")["serving_version"] == "0.9.0"
    });

    // Every lifecycle change is audited with the admin's uid.
    std::thread::sleep(Duration::from_millis(400));
    let changes: Vec<String> = s
        .audit()
        .iter()
        .filter(|e| e["kind"] == "plugin.status")
        .map(|e| {
            format!(
                "{} uid={}",
                e["reason"].as_str().unwrap(),
                e["extra"]["uid"]
            )
        })
        .collect();
    // SAFETY: geteuid takes no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        changes,
        vec![
            format!("new -> verified uid={uid}"),
            format!("verified -> installed uid={uid}"),
            format!("installed -> active uid={uid}"),
            format!("active -> disabled uid={uid}"),
            format!("disabled -> active uid={uid}"),
        ]
    );

    // A vanished bundle stops the plugin; it can only be disabled.
    std::fs::remove_dir_all(s.path().join("plugins/svc")).unwrap();
    s.ok(&["reload"]);
    let st = s.wait_runtime("svc", "stopped");
    assert_eq!(st["problem"], "bundle missing from the plugin directory");
    s.ok(&["disable", "svc"]);
    s.refused(
        &["activate", "svc"],
        "warden: cannot activate plugin svc: its bundle is not present and verified (bundle missing from the plugin directory); it can only be disabled",
    );
    // Paths of bundles are never shown to clients.
    let list = stdout(&s.ctl(&["--json", "list"]));
    assert!(!list.contains(s.path().to_str().unwrap()), "{list}");

    // State survives a restart of warden.
    assert!(s.stop().success());
    // A clean stop loses no event: the service's own last ones are in the log.
    let kinds: Vec<String> = s
        .audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.iter().rev().take(2).rev().collect::<Vec<_>>(),
        ["service.stopping", "service.stop"],
        "{kinds:?}"
    );
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let st = s.status("svc");
    assert_eq!(st["status"], "disabled");
    assert_eq!(st["policy"], "pending_review");
    assert!(s.log().contains("all plugins stopped; audit log flushed"));
}

/// The sandbox init, a copy of warden, is named `warden-init`: it was `warden`
/// in ps and top, and `killall warden` / `pkill -x warden` signalled every
/// sandbox init along with warden itself. Its command line is `warden-init ID`:
/// it was warden's, so `pkill -f "warden serve"` matched every init.
#[test]
fn the_sandbox_init_has_a_name_and_command_line_of_its_own() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let st = s.bring_up("svc");
    let init = st["pid"].as_i64().unwrap();
    let comm = |pid: i64| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm(init), "warden-init\n");
    assert_eq!(comm(s.pid() as i64), "warden\n");
    // Its command line too (`pkill -f "warden serve"` matched every init):
    // `warden-init ID`, the rest of warden's argument area NULs.
    let cmdline = |pid: i64| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let line = cmdline(init);
    let text = line.split(|&b| b == 0).next().unwrap();
    assert_eq!(
        text,
        b"warden-init svc",
        "{:?}",
        String::from_utf8_lossy(&line)
    );
    assert!(line[text.len()..].iter().all(|&b| b == 0), "{line:?}");
    assert!(String::from_utf8_lossy(&cmdline(s.pid() as i64)).contains("serve"));
    assert!(s.stop().success());
}

/// `policy show` gives the limits the plugin runs under: its manifest's,
/// lowered to the config's caps, and its data quota. It showed the config's
/// caps alone, `null` where the config sets none.
#[test]
fn policy_show_gives_the_limits_in_effect() {
    let mut s = Serve::new(r#""limits":{"memory_mb":32,"data_mb":5}"#);
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let p = s.ok(&["policy", "show", "svc"]);
    assert_eq!(
        p["limits"],
        serde_json::json!({"memory_mb": 32, "pids": 8, "nofile": 64, "tmp_mb": 1,
                           "call_timeout_ms": 5000, "data_mb": 5}),
        "{p}"
    );
    assert!(s.stop().success());
}

#[test]
fn crash_loop_reaches_failed_after_its_budget() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("crashy", "1.0.0", "crash", "");
    s.start();
    s.ok(&["install", "crashy"]);
    s.ok(&["activate", "crashy"]);
    let st = s.wait_runtime("crashy", "failed");
    assert_eq!(st["restarts"], 3);
    assert_eq!(st["last_exit"], "exit code 3");
    // Status says why it is down and what brings it back (it said `problem -`).
    assert_eq!(
        st["problem"],
        "restart budget spent: more than 3 restarts within 60 s; `warden ctl restart crashy` starts it again"
    );
    let log = s.log();
    assert!(log.contains("plugin=crashy restarting in 50 ms (restart 1 of 3 within 60 s)"));
    assert!(log.contains("plugin=crashy restarting in 100 ms (restart 2 of 3 within 60 s)"));
    assert!(log.contains("plugin=crashy restarting in 200 ms (restart 3 of 3 within 60 s)"));
    assert!(log.contains("plugin=crashy failed: more than 3 restarts within 60 s"));
    // It stays down...
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.status("crashy")["runtime"], "failed");
    // (the audit log is flushed every 200 ms)
    let kinds: Vec<String> = s
        .audit()
        .iter()
        .filter(|e| e["plugin"] == "crashy")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "restart").count(), 3);
    assert_eq!(kinds.iter().filter(|k| *k == "plugin.failed").count(), 1);
    // ... until an operator restarts it (with a fresh budget).
    s.ok(&["restart", "crashy"]);
    s.wait_runtime("crashy", "failed");
    assert_eq!(s.status("crashy")["restarts"], 6);
    assert!(s.stop().success());
}

#[test]
fn hung_plugin_is_killed_and_restarted_within_two_intervals() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    let interval = Duration::from_millis(500);
    s.deploy(
        "hung",
        "1.0.0",
        "hang",
        r#"{"interval_ms":500,"timeout_ms":100}"#,
    );
    s.start();
    s.ok(&["install", "hung"]);
    s.ok(&["activate", "hung"]);
    let st = s.wait_runtime("hung", "running");
    let t0 = Instant::now();
    let first = st["pid"].as_i64().unwrap();
    s.wait("a restarted instance", 2 * interval, || {
        let st = s.status("hung");
        st["pid"].as_i64().is_some_and(|p| p != first)
    });
    let took = t0.elapsed();
    assert!(!alive(first), "the hung sandbox must be gone");
    assert!(s
        .log()
        .contains("plugin=hung plugin.unhealthy: no pong within 100 ms; killed"));
    eprintln!(
        "hung plugin restarted {} ms after it was running",
        took.as_millis()
    );
    assert!(s.stop().success());
}

#[test]
fn blue_green_swap_without_failed_calls_and_bad_version_keeps_old() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("kv", "1.0.0", "client", "");
    s.start();
    s.bring_up("kv");
    let calls = |s: &Serve| s.ok(&["stats", "kv"])["allowed"].as_u64().unwrap_or(0);
    s.wait("calls from 1.0.0", Duration::from_secs(10), || {
        calls(&s) > 50
    });
    s.deploy("kv", "2.0.0", "client", "");
    s.ok(&["reload"]);
    s.wait("2.0.0 to take over", Duration::from_secs(10), || {
        s.status("kv")["serving_version"] == "2.0.0"
    });
    s.wait("calls from 2.0.0", Duration::from_secs(10), || {
        calls(&s) > 50
    });
    assert!(s.log().contains("kv 2.0.0 serving (client)"));
    assert!(s
        .log()
        .contains("plugin=kv plugin.replaced: now serving 2.0.0"));

    // A bad new version never takes over.
    s.deploy("kv", "3.0.0", "crash", "");
    s.ok(&["reload"]);
    s.wait("the failed replacement", Duration::from_secs(10), || {
        s.log()
            .contains("plugin=kv replacement by 3.0.0 failed: it exited (exit code 3); the old instance keeps serving")
    });
    let st = s.status("kv");
    assert_eq!(st["serving_version"], "2.0.0");
    assert_eq!(st["runtime"], "running");
    let before = calls(&s);
    s.wait("2.0.0 to keep serving", Duration::from_secs(10), || {
        calls(&s) > before + 20
    });
    assert!(s.stop().success());
    let log = s.log();
    assert!(
        !log.contains("CALL FAILED"),
        "a call failed during the swap:\n{log}"
    );
}

#[test]
fn sigkill_of_warden_leaves_no_plugin_and_state_recovers() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let st = s.bring_up("svc");
    let pid = st["pid"].as_i64().unwrap();
    assert!(alive(pid));
    s.signal(libc::SIGKILL);
    let _ = s.child.take().unwrap().wait();
    s.wait(
        "the sandbox to die with warden",
        Duration::from_secs(5),
        || !alive(pid),
    );
    s.start();
    let st = s.wait_runtime("svc", "running");
    assert_eq!(st["status"], "active");
    assert_eq!(st["policy"], "approved");
    assert_ne!(st["pid"].as_i64().unwrap(), pid);
    assert!(s.stop().success());
}

/// Whether this process may run a child as another uid (the feature the control
/// socket test needs), by trying it.
fn can_switch_uid() -> bool {
    Command::new("true")
        .uid(65534)
        .gid(65534)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn control_socket_refuses_a_non_admin_uid() {
    if !can_switch_uid() {
        common::skip("the ability to run a child as uid 65534 (setuid)");
        return;
    }
    let mut s = Serve::new(r#""admin_group":"4242""#);
    s.start();
    let sock = s.path().join("control.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // Open the file mode so the refusal is SO_PEERCRED's, not the filesystem's.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let as_user = |gid: u32| {
        Command::new(WARDEN)
            .args(["ctl", "--socket", sock.to_str().unwrap(), "list"])
            .uid(65534)
            .gid(gid)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = as_user(65534);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "warden: permission denied: uid 65534 is not root or a member of the admin group"
    );
    s.wait(
        "the refusal in the audit log",
        Duration::from_secs(5),
        || {
            s.audit()
                .iter()
                .any(|e| e["kind"] == "admin.refused" && e["extra"]["uid"] == 65534)
        },
    );
    // A member of the admin group is served: as primary group ...
    let out = as_user(4242);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ID"));
    // ... and as a supplementary group (SO_PEERGROUPS).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--groups=4242", WARDEN])
        .args(["ctl", "--socket", sock.to_str().unwrap(), "list"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ID"));
    assert!(s.stop().success());
}

#[test]
fn chatty_output_is_forwarded_tagged_and_rate_limited() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new(r#""output":{"lines_per_second":5,"burst":10}"#);
    s.deploy("chatty", "1.0.0", "chatty", "");
    s.start();
    s.bring_up("chatty");
    s.wait("the first lines", Duration::from_secs(5), || {
        s.log()
            .contains("warden: plugin=chatty stdout: chatty line 0")
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = s.log();
    let forwarded = log.matches("plugin=chatty stdout: chatty line").count();
    assert!(forwarded <= 15, "{forwarded} lines forwarded");
    assert!(s.stop().success());
    assert!(
        s.log().contains("output lines suppressed (rate limit)"),
        "{}",
        s.log()
    );
}

/// A plugin that floods its output and then goes quiet gets the count of its
/// suppressed lines reported anyway, a second after the last one: it was
/// reported only with the next line that got through, never if none did.
#[test]
fn suppressed_output_is_reported_when_the_plugin_goes_quiet() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new(r#""output":{"lines_per_second":1,"burst":10}"#);
    s.deploy("chatty", "1.0.0", "chatty", "");
    s.start();
    s.bring_up("chatty");
    s.wait(
        "the suppressed lines' count",
        Duration::from_secs(10),
        || s.log().contains("output lines suppressed (rate limit)"),
    );
    let stats = s.ok(&["stats", "chatty"]);
    assert!(
        stats["output_suppressed"].as_u64().unwrap() > 900,
        "{stats}"
    );
    assert!(s.stop().success());
}

/// A plugin disabled while it is in its channel-closed grace has stopped: its
/// end is not a crash (no restart counted, no backoff for a disabled plugin).
#[test]
fn disabled_in_its_channel_closed_grace_is_stopped_not_crashed() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("cf", "1.0.0", "closefd", "");
    s.start();
    s.bring_up("cf");
    s.wait("the channel to close", Duration::from_secs(5), || {
        s.log().contains("plugin=cf channel closed")
    });
    s.ok(&["disable", "cf"]);
    let st = s.wait_runtime("cf", "stopped");
    assert_eq!(st["restarts"], 0, "{st}\n{}", s.log());
    assert!(!s.log().contains("plugin=cf restarting"), "{}", s.log());
}

/// What a plugin wrote before it exited is all forwarded, however much of it
/// sat in its (enlarged) pipe: the last line after 512 KiB written at once.
#[test]
fn output_written_just_before_exit_is_not_lost() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new(r#""output":{"lines_per_second":1000,"burst":1000}"#);
    s.deploy("big", "1.0.0", "bigexit", "");
    s.start();
    s.ok(&["install", "big"]);
    s.ok(&["policy", "approve", "big"]);
    s.ok(&["activate", "big"]);
    s.wait("the last line", Duration::from_secs(10), || {
        s.log().contains("plugin=big stdout: bigexit done")
    });
}

#[test]
fn a_hundred_plugins_supervised_at_once() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    let n = 100;
    for i in 0..n {
        s.deploy(
            &format!("p{i:03}"),
            "1.0.0",
            "serve",
            r#"{"interval_ms":1000,"timeout_ms":500}"#,
        );
    }
    s.start();
    for i in 0..n {
        let id = format!("p{i:03}");
        s.ok(&["install", &id]);
        s.ok(&["activate", &id]);
    }
    s.wait("100 plugins running", Duration::from_secs(60), || {
        let list = s.ok(&["list"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["runtime"] == "running")
            .count()
            == n
    });
    // Health pings flow for all of them and nobody restarts.
    std::thread::sleep(Duration::from_millis(2500));
    let list = s.ok(&["list"]);
    for p in list.as_array().unwrap() {
        assert_eq!(p["runtime"], "running", "{p}");
        assert_eq!(p["restarts"], 0, "{p}");
        assert!(p["last_pong_ms_ago"].as_u64().is_some(), "{p}");
    }
    let stats = s.ok(&["stats"]);
    eprintln!(
        "warden with {n} plugins: rss {} KiB",
        stats["warden"]["rss_kb"]
    );
    let t0 = Instant::now();
    assert!(s.stop().success());
    eprintln!("stopped {n} plugins in {} ms", t0.elapsed().as_millis());
}

#[test]
fn egress_policy_set_with_ctl_governs_net_dial() {
    if !require_sandbox() {
        return;
    }
    // A loopback web server that counts the requests it answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&served);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi");
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut s = Serve::new("");
    // The `fetch` example, fetching through net.dial every 200 ms.
    let m = s.path().join("fetch.json");
    std::fs::write(
        &m,
        format!(
            r#"{{"id":"fetch","version":"0.1.0","publisher":"acme","min_core":"0.1.0",
            "capabilities":["http:egress"],"args":["--every","0.2","127.0.0.1","{port}","/"]}}"#
        ),
    )
    .unwrap();
    let fetch = common::example("fetch");
    let out = warden(&[
        "pack",
        "--manifest",
        m.to_str().unwrap(),
        "--artifact",
        fetch.to_str().unwrap(),
        "--key",
        s.path().join("acme.key").to_str().unwrap(),
        "--out",
        s.path().join("plugins/fetch").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "pack: {}", stderr(&out));
    s.start();
    s.bring_up("fetch"); // approved with http:egress, but no egress list
    let dial_events = |s: &Serve, decision: &str| {
        s.audit()
            .iter()
            .filter(|e| {
                e["plugin"] == "fetch" && e["op"] == "net.dial" && e["decision"] == decision
            })
            .count()
    };
    s.wait("a denied net.dial", Duration::from_secs(10), || {
        dial_events(&s, "deny") > 0
    });
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A malformed pattern is refused when the operator sets it, naming the problem.
    let out = s.ctl(&[
        "policy",
        "approve",
        "fetch",
        "--egress",
        "evil.com?x.example.com:443",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot approve plugin fetch: egress:"),
        "{}",
        stderr(&out)
    );

    // The pattern alone is not enough for loopback: the address must be allowed too.
    let target = format!("127.0.0.1:{port}");
    s.ok(&["policy", "approve", "fetch", "--egress", &target]);
    let shown = s.ok(&["policy", "show", "fetch"]);
    assert_eq!(shown["egress"], serde_json::json!([target]));
    s.ok(&["policy", "approve", "fetch", "--allow-address", "127.0.0.1"]);
    let shown = s.ok(&["policy", "show", "fetch"]);
    assert_eq!(
        shown["egress"],
        serde_json::json!([target]),
        "the pattern is kept"
    );
    assert_eq!(shown["allow_addresses"], serde_json::json!(["127.0.0.1"]));
    s.wait("the server to be reached", Duration::from_secs(10), || {
        served.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    s.wait(
        "an allowed net.dial in the audit log",
        Duration::from_secs(5),
        || dial_events(&s, "allow") > 0,
    );
    assert!(s.stop().success());
}

/// `audit_rotate_mb`: the audit log rotates at that size, and the chain runs on
/// from the rotated file into the new one.
#[test]
fn the_audit_log_rotates_at_the_configured_size() {
    use warden::audit::{AuditConfig, AuditLog, Event, FsyncPolicy};
    let mut s = Serve::new(r#""audit_rotate_mb":1"#);
    // An earlier log just under 1 MiB: serve's first events take it past.
    let path = s.path().join("state/audit.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut cfg = AuditConfig::new(&path);
        cfg.fsync = FsyncPolicy::Never;
        let mut log = AuditLog::open(cfg).unwrap();
        // Long lines, then short ones to come within a line of the size.
        for (reason, room) in [("r".repeat(1000), 3000), (String::new(), 150)] {
            while std::fs::metadata(&path).unwrap().len() < (1 << 20) - room {
                let e = Event {
                    kind: "test",
                    reason: Some(reason.clone()),
                    ..Event::default()
                };
                log.append(&e).unwrap();
                log.flush().unwrap();
            }
        }
        log.close().unwrap();
    }
    s.start();
    assert!(s.stop().success());
    let rotated = s.path().join("state/audit.jsonl.000001");
    assert!(rotated.exists(), "{}", s.log());
    let out = warden(&[
        "audit",
        "verify",
        rotated.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(stdout(&out).starts_with("intact"), "{}", stdout(&out));
    let kinds: Vec<String> = s
        .audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("service.stop"),
        "{kinds:?}"
    );
}

/// An allowed downgrade allows that one version: the highest version seen stays,
/// and a version between the two is still refused as a rollback.
#[test]
fn an_allowed_downgrade_allows_only_that_version() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "2.0.0", "serve", "");
    s.start();
    s.bring_up("svc");
    s.deploy("svc", "1.0.0", "serve", "");
    s.ok(&["allow-downgrade", "svc", "1.0.0"]);
    s.wait("1.0.0 to serve", Duration::from_secs(10), || {
        s.status("svc")["serving_version"] == "1.0.0"
    });
    s.deploy("svc", "1.5.0", "serve", "");
    s.ok(&["reload"]);
    s.wait("1.5.0 to be refused", Duration::from_secs(10), || {
        s.log()
            .contains("rejected: rollback: version 1.5.0 is older than 2.0.0")
    });
    assert_eq!(s.status("svc")["serving_version"], "1.0.0");
}

/// A control request whose write to the state database fails changes nothing:
/// not the policy in effect, and not what a later write saves. The loop waits
/// only briefly for the database's lock meanwhile.
#[test]
fn a_refused_approve_changes_nothing() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    s.ok(&["policy", "approve", "svc", "--grant", "kv:write"]);
    let before = s.ok(&["policy", "show", "svc"]);
    // Another process holds the state database's write lock.
    let db = rusqlite::Connection::open(s.path().join("state/warden.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t0 = Instant::now();
    let out = s.ctl(&["policy", "approve", "svc", "--grant", "log:write"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("database is locked"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let out = s.ctl(&["allow-downgrade", "svc", "0.1.0"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    let after = s.ok(&["policy", "show", "svc"]);
    assert_eq!(after, before);
    // A later write saves the record as it is in effect.
    s.ok(&["install", "svc"]);
    assert!(s.stop().success());
    s.start();
    assert_eq!(s.ok(&["policy", "show", "svc"]), before);
    let db = rusqlite::Connection::open(s.path().join("state/warden.db")).unwrap();
    let allowed: Option<String> = db
        .query_row(
            "SELECT allow_downgrade FROM plugins WHERE id = 'svc'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(allowed, None, "a refused allow-downgrade was saved later");
}

/// SemVer precedence ignores build metadata: `1.0.0` after `1.0.0+build.2` is
/// not a rollback.
#[test]
fn build_metadata_does_not_order_versions() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0+build.2", "serve", "");
    s.start();
    s.bring_up("svc");
    s.deploy("svc", "1.0.0", "serve", "");
    s.ok(&["reload"]);
    s.wait("1.0.0 to serve", Duration::from_secs(10), || {
        s.status("svc")["serving_version"] == "1.0.0"
    });
    assert!(!s.log().contains("rejected: rollback"), "{}", s.log());
}

/// A revocation takes effect at `reload` even when something else in the trust
/// directory is wrong: the keys loaded before are kept, the revocation list is
/// applied, and `ctl reload` fails naming the problem.
#[test]
fn a_revocation_applies_on_reload_whatever_else_is_wrong() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    s.bring_up("svc");
    let public = std::fs::read_to_string(s.path().join("acme.pub")).unwrap();
    let key = warden::bundle::minisign::PublicKey::parse(&public)
        .unwrap()
        .key_id;
    std::fs::write(s.path().join("trust/revoked"), format!("{key}\n")).unwrap();
    std::fs::write(s.path().join("trust/NOTES.txt"), "acme's key leaked\n").unwrap();
    let out = s.ctl(&["reload"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("NOTES.txt") && err.contains("applied its revocation list (1 keys)"),
        "{err}"
    );
    let st = s.wait_runtime("svc", "stopped");
    assert!(st["problem"].as_str().unwrap().contains("revoked"), "{st}");
}

/// A control reply larger than the socket's buffer is delivered in full to a
/// client that reads it late (2000 plugin records: about 0.5 MB of `list`).
#[test]
fn a_large_control_reply_is_delivered_in_full() {
    if !require_sandbox() {
        return;
    }
    use std::io::{Read, Write};
    let mut s = Serve::new("");
    s.start();
    assert!(s.stop().success());
    let db = rusqlite::Connection::open(s.path().join("state/warden.db")).unwrap();
    for i in 0..2000 {
        db.execute(
            "INSERT INTO plugins (id, status, version, highest, policy_status, grants, updated_us)
             VALUES (?1, 'disabled', '1.0.0', '1.0.0', 'approved', '[\"kv:read\",\"kv:write\"]', 0)",
            [format!("plugin-number-{i:05}")],
        )
        .unwrap();
    }
    drop(db);
    s.start();
    let mut c = std::os::unix::net::UnixStream::connect(s.path().join("control.sock")).unwrap();
    c.write_all(b"{\"op\":\"list\"}\n").unwrap();
    // The client reads only later: the reply has to wait for room.
    std::thread::sleep(Duration::from_millis(500));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let r = c.read_to_end(&mut got);
    assert!(
        r.is_ok() && got.ends_with(b"\n"),
        "{r:?} after {} bytes",
        got.len()
    );
    let v: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v["ok"].as_array().unwrap().len(), 2000);
}

/// Activated again while it is still stopping (disable, then activate before the
/// old instance is gone): it runs again once the old one has stopped.
#[test]
fn activating_during_a_graceful_stop_brings_it_back() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    // Says hello, then ignores `shutdown`: stopping takes the 1 s deadline.
    s.deploy("h", "1.0.0", "hang", "");
    s.start();
    s.bring_up("h");
    s.ok(&["disable", "h"]);
    assert_eq!(s.status("h")["runtime"], "stopping");
    s.ok(&["activate", "h"]);
    s.wait("h to run again", Duration::from_secs(10), || {
        let st = s.status("h");
        st["runtime"] == "running" && st["last_exit"].is_string()
    });
}

/// A new version deployed while the plugin is still starting (before its hello)
/// is the one that ends up serving.
#[test]
fn a_version_deployed_while_the_plugin_starts_is_run() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("slow", "1.0.0", "slowhello", "");
    s.start();
    s.ok(&["install", "slow"]);
    s.ok(&["policy", "approve", "slow"]);
    s.ok(&["activate", "slow"]);
    assert_eq!(s.status("slow")["runtime"], "starting");
    s.deploy("slow", "2.0.0", "serve", "");
    s.ok(&["reload"]);
    s.wait("2.0.0 to serve", Duration::from_secs(10), || {
        s.status("slow")["serving_version"] == "2.0.0"
    });
}

/// During a swap: a rescan with nothing new leaves the candidate alone, and the
/// serving version put back calls the swap off.
#[test]
fn a_swap_survives_rescans_and_is_called_off_by_a_revert() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("sw", "1.0.0", "serve", "");
    s.start();
    s.bring_up("sw");
    s.deploy("sw", "2.0.0", "slowhello", "");
    s.ok(&["reload"]);
    std::thread::sleep(Duration::from_millis(700));
    s.ok(&["reload"]); // nothing changed on disk
    s.wait("2.0.0 to serve", Duration::from_secs(10), || {
        s.status("sw")["serving_version"] == "2.0.0"
    });
    let log = s.log();
    assert_eq!(
        log.matches("plugin=sw replacing: 2.0.0 started").count(),
        1,
        "{log}"
    );

    // 3.0.0 starts proving itself; the operator puts 2.0.0 back meanwhile.
    s.deploy("sw", "3.0.0", "slowhello", "");
    s.ok(&["reload"]);
    assert_eq!(s.status("sw")["replacing"], "3.0.0");
    s.deploy("sw", "2.0.0", "slowhello", "");
    s.ok(&["reload"]);
    std::thread::sleep(Duration::from_secs(3));
    let st = s.status("sw");
    assert_eq!(st["serving_version"], "2.0.0", "{st}\n{}", s.log());
    assert!(
        s.log().contains(
            "plugin=sw replacement by 3.0.0 called off: 2.0.0 is in the plugin directory again"
        ),
        "{}",
        s.log()
    );
    assert!(
        s.log().contains(
            "plugin=sw downgrade to 2.0.0 allowed: it is the version serving, put back in the plugin directory"
        ),
        "{}",
        s.log()
    );
    // It is still accepted after a restart.
    assert!(s.stop().success());
    s.start();
    let st = s.wait_runtime("sw", "running");
    assert_eq!(st["serving_version"], "2.0.0", "{st}");
}

/// Control clients that never finish their request are capped: warden does not
/// run out of descriptors, and the ones over the cap are told it is busy.
#[test]
fn idle_control_clients_are_capped() {
    if !require_sandbox() {
        return;
    }
    use std::io::{Read, Write};
    let mut s = Serve::new("");
    s.start();
    let fds = |s: &Serve| {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .count()
    };
    let before = fds(&s);
    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut c = std::os::unix::net::UnixStream::connect(s.path().join("control.sock")).unwrap();
        c.write_all(b"{\"op\":").unwrap(); // never finished
        idle.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = fds(&s);
    assert!(
        after <= before + 64 + 4,
        "{before} descriptors before, {after} after"
    );
    let last = idle.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = last.read_to_string(&mut answer);
    assert!(answer.contains("busy"), "{answer:?}");
    drop(idle);
    // An oversized request is answered, not just closed.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = std::os::unix::net::UnixStream::connect(s.path().join("control.sock")).unwrap();
    c.write_all(&vec![b'a'; 70_000]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.contains("larger than 65536 bytes"), "{answer:?}");
}

/// A plugin-directory entry that is a symlink to a bundle (an atomic deploy) is
/// a plugin like any other.
#[test]
fn a_symlinked_bundle_is_a_plugin() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    std::fs::create_dir_all(s.path().join("bundles")).unwrap();
    std::fs::rename(
        s.path().join("plugins/svc"),
        s.path().join("bundles/svc-1.0.0"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../bundles/svc-1.0.0", s.path().join("plugins/svc")).unwrap();
    s.start();
    let st = s.bring_up("svc");
    assert_eq!(st["serving_version"], "1.0.0", "{st}");
}

/// After an atomic deploy flips the symlink (here to a copy of the same
/// release, the old directory removed) a crash restarts the plugin from what
/// the entry names now; it was refused (the directory launched must be the one
/// verified) until a reload, every restart counting against the budget.
#[test]
fn a_restart_after_a_symlink_flip_launches_what_the_entry_names() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    let bundles = deploy_through_a_symlink(&s);
    s.start();
    let old = s.bring_up("svc")["pid"].as_i64().unwrap();
    // The deploy: a new directory, the symlink swapped by rename, the old gone.
    flip_to_a_copy(&s, &bundles);
    std::fs::remove_dir_all(bundles.join("a")).unwrap();
    // SAFETY: kill with the pid of the sandbox init warden reported.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    s.wait("a new instance", Duration::from_secs(10), || {
        let st = s.status("svc");
        st["runtime"] == "running" && st["pid"].as_i64().is_some_and(|p| p != old)
    });
    assert!(!s.log().contains("plugin=svc launch failed"), "{}", s.log());
}

/// A candidate that never says hello is reported failed once, not again when
/// its kill is reaped.
#[test]
fn a_candidate_without_hello_fails_once() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new(r#""start_timeout_ms":500"#);
    s.deploy("sw", "1.0.0", "serve", "");
    s.start();
    s.bring_up("sw");
    s.deploy("sw", "2.0.0", "nohello", "");
    s.ok(&["reload"]);
    s.wait("the replacement to fail", Duration::from_secs(10), || {
        s.log().contains("plugin=sw replacement by 2.0.0 failed")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.status("sw")["serving_version"], "1.0.0");
    let log = s.log();
    assert_eq!(
        log.matches("plugin=sw replacement by 2.0.0 failed").count(),
        1,
        "{log}"
    );
    // The serving instance is healthy: the candidate's failure is not the
    // plugin's (no `plugin.unhealthy` for it, in the log or the audit log).
    assert!(!log.contains("plugin=sw plugin.unhealthy"), "{log}");
    let unhealthy = s
        .audit()
        .iter()
        .filter(|e| e["kind"] == "plugin.unhealthy")
        .count();
    assert_eq!(unhealthy, 0);
}

/// As root each plugin gets a host uid of its own within `uid_range` (ids
/// hashing to one uid were only named, sharing RLIMIT_NPROC); a plugin for
/// which no uid is left does not start, and says why.
#[test]
fn each_plugin_gets_a_host_uid_of_its_own() {
    if !require_sandbox() {
        return;
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: host uids come from uid_range only when warden runs as root");
        return;
    }
    let mut s = Serve::new(r#""uid_range":"3000000000-3000000001""#);
    for id in ["one", "two", "three"] {
        s.deploy(id, "1.0.0", "serve", "");
    }
    s.start();
    let uid_of = |st: serde_json::Value| -> u32 {
        let pid = st["pid"].as_i64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let one = uid_of(s.bring_up("one"));
    let two = uid_of(s.bring_up("two"));
    assert_ne!(one, two);
    for u in [one, two] {
        assert!((3_000_000_000..=3_000_000_001).contains(&u), "{u}");
    }
    s.ok(&["install", "three"]);
    s.ok(&["policy", "approve", "three"]);
    s.ok(&["activate", "three"]);
    s.wait("three to be refused a uid", Duration::from_secs(5), || {
        s.log()
            .contains("plugin=three launch failed: no host uid left for it")
    });
    // Kept across a restart.
    s.ok(&["restart", "one"]);
    s.wait("one to run again", Duration::from_secs(10), || {
        s.status("one")["runtime"] == "running"
    });
    assert_eq!(uid_of(s.status("one")), one);
}

/// Relative paths are resolved against the directory holding the config file,
/// also when it is given as a bare file name (`--config warden.json`), where they
/// stayed relative.
#[test]
fn check_resolves_paths_of_a_bare_config_name() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("warden.json"),
        r#"{"plugin_dir":"p","trust_dir":"t","state_dir":"s","audit_log":"a.jsonl","control_socket":"c.sock"}"#,
    )
    .unwrap();
    for d in ["p", "t"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let out = Command::new(WARDEN)
        .args(["serve", "--check", "--config", "warden.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = format!("\"plugin_dir\": {:?}", dir.path().join("p"));
    assert!(
        stdout(&out).contains(&want),
        "want {want} in:\n{}",
        stdout(&out)
    );
}

/// `policy approve` while a newer version is proving itself does not call the
/// upgrade off (the swap was restarted from the old bundle).
#[test]
fn approve_during_a_swap_keeps_the_new_version() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("up", "1.0.0", "serve", "");
    s.start();
    s.bring_up("up");
    s.deploy("up", "2.0.0", "slowhello", "");
    s.ok(&["reload"]);
    assert_eq!(s.status("up")["replacing"], "2.0.0");
    s.ok(&["policy", "approve", "up", "--grant", "kv:write"]);
    let st = s.status("up");
    assert_eq!(st["replacing"], "2.0.0", "{st}");
    s.wait("2.0.0 to serve", Duration::from_secs(10), || {
        s.status("up")["serving_version"] == "2.0.0"
    });
}

/// A plugin approved while it is still starting (before its hello) is welcomed
/// with the grants now in force, not those of the pending review it was
/// launched under (every call was denied until a restart).
#[test]
fn approve_while_starting_reaches_the_starting_instance() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("st", "1.0.0", "slowclient", "");
    s.start();
    s.ok(&["install", "st"]);
    s.ok(&["activate", "st"]); // policy pending_review: no grants
    assert_eq!(s.status("st")["runtime"], "starting");
    s.ok(&["policy", "approve", "st"]);
    assert_eq!(
        s.ok(&["policy", "show", "st"])["effective"],
        serde_json::json!(["kv:write", "log:write"])
    );
    s.wait_runtime("st", "running");
    let stats = |s: &Serve| s.ok(&["stats", "st"]);
    s.wait("kv.put calls", Duration::from_secs(10), || {
        let st = stats(&s);
        st["allowed"].as_u64().unwrap_or(0) + st["denied"].as_u64().unwrap_or(0) > 20
    });
    let st = stats(&s);
    assert_eq!(st["denied"], 0, "approved, yet its calls are denied: {st}");
}

/// The live instance crashing for the last time of its budget while a new
/// version proves itself: the plugin is `failed` and stays down (the candidate
/// was promoted and kept running).
#[test]
fn a_failed_plugin_has_no_running_instance() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    std::fs::write(
        s.config(),
        r#"{"plugin_dir":"plugins","trust_dir":"trust","state_dir":"state",
        "audit_log":"state/audit.jsonl","control_socket":"control.sock",
        "restart":{"initial_backoff_ms":50,"max_backoff_ms":200,"max_restarts":0,"window_s":60},
        "shutdown_deadline_ms":1000}"#,
    )
    .unwrap();
    s.deploy("ff", "1.0.0", "serve", "");
    s.start();
    let st = s.bring_up("ff");
    let old = st["pid"].as_i64().unwrap();
    s.deploy("ff", "2.0.0", "slowhello", "");
    s.ok(&["reload"]);
    assert_eq!(s.status("ff")["replacing"], "2.0.0");
    // SAFETY: kill with the pid of the sandbox init warden reported.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    let st = s.wait_runtime("ff", "failed");
    std::thread::sleep(Duration::from_millis(2500));
    let st2 = s.status("ff");
    assert!(
        st2["runtime"] != "failed" || st2["pid"].is_null(),
        "reported failed while an instance runs: {st} then {st2}\n{}",
        s.log()
    );
}

/// Narrowing a plugin's grants with `policy approve --grant` takes effect even
/// when the blue-green replacement that would carry the new welcome fails: here
/// the plugin itself makes it fail (its instance welcomed without kv:write
/// exits). The old instance went on making kv.put calls with the revoked grant
/// for as long as it ran.
#[test]
fn a_revoked_grant_stops_working_when_the_swap_fails() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("g", "1.0.0", "greedy", "");
    s.start();
    s.bring_up("g");
    let allowed = |s: &Serve| s.ok(&["stats", "g"])["allowed"].as_u64().unwrap_or(0);
    s.wait("kv.put calls allowed", Duration::from_secs(10), || {
        allowed(&s) > 20
    });
    s.ok(&["policy", "approve", "g", "--grant", "log:write"]);
    s.wait("the replacement to fail", Duration::from_secs(10), || {
        s.log().contains("plugin=g replacement by 1.0.0 failed")
    });
    let before = allowed(&s);
    std::thread::sleep(Duration::from_millis(1000));
    let after = allowed(&s);
    assert_eq!(
        before,
        after,
        "kv:write was revoked, yet {} more kv.put calls were allowed: {}\n{}",
        after - before,
        s.ok(&["policy", "show", "g"]),
        s.log()
    );
}

/// After an atomic deploy of the same release (the symlink flipped to a copy)
/// and a reload, the plugin's bundle names the new directory; a policy change
/// that needs a new welcome must replace the serving instance from that
/// bundle. It was started from the serving instance's own bundle, whose path
/// no longer names the directory verified: every such replacement failed
/// (bind_bundle ESTALE) and the old welcome stayed.
#[test]
fn a_policy_change_after_a_same_release_redeploy_replaces_the_instance() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    let bundles = deploy_through_a_symlink(&s);
    s.start();
    let old = s.bring_up("svc")["pid"].as_i64().unwrap();
    // The same release deployed again: a new directory, the symlink swapped.
    flip_to_a_copy(&s, &bundles);
    s.ok(&["reload"]);
    // Narrow the grants: the serving instance was told kv:write, so it is
    // replaced blue-green with the same release.
    s.ok(&["policy", "approve", "svc", "--grant", "log:write"]);
    s.wait("the replacement to serve", Duration::from_secs(10), || {
        let st = s.status("svc");
        s.log().contains("plugin=svc replacement by 1.0.0 failed")
            || (st["runtime"] == "running" && st["pid"].as_i64().is_some_and(|p| p != old))
    });
    assert!(
        !s.log().contains("plugin=svc replacement by 1.0.0 failed"),
        "{}",
        s.log()
    );
}

/// `policy approve ID --egress ''` (the documented way to clear a plugin's
/// egress list) keeps the grants of a plugin approved with a narrow `--grant`:
/// it reset them to everything the manifest declares.
#[test]
fn an_egress_only_approve_keeps_the_narrowed_grants() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    s.ok(&["install", "svc"]);
    let p = s.ok(&["policy", "approve", "svc", "--grant", "log:write"]);
    assert_eq!(p["grants"], serde_json::json!(["log:write"]));
    let p = s.ok(&["policy", "approve", "svc", "--egress", ""]);
    assert_eq!(
        p["grants"],
        serde_json::json!(["log:write"]),
        "clearing the egress list widened the grants"
    );
    // `--grant ''` approves with no grants at all (it was refused).
    let p = s.ok(&["policy", "approve", "svc", "--grant", ""]);
    assert_eq!(p["grants"], serde_json::json!([]));
    // An egress list for a plugin that does not declare http:egress could never
    // be used: refused, as a grant it does not declare is (it was accepted).
    s.refused(
        &["policy", "approve", "svc", "--egress", "example.com:443"],
        "warden: cannot approve plugin svc: --egress: its manifest does not declare http:egress (the capability of net.dial), so the list would never be used",
    );
}

/// A config value of the wrong type is refused naming its key (docs/config.md:
/// "one line naming the file and the key"); it named the line and column only.
#[test]
fn a_wrong_type_in_the_config_names_the_key() {
    for (extra, key) in [
        (r#""cgroup":"yes""#, "cgroup"),
        (r#""output":{"burst":"3"}"#, "output.burst"),
    ] {
        let s = Serve::new(extra);
        let out = warden(&["serve", "--check", "--config", s.config().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(key), "{key} is not named: {err}");
    }
}

/// `warden serve --check` fails where serve would refuse to start (a trust
/// directory that does not exist); it passed, printing the config.
#[test]
fn check_fails_where_serve_would_refuse_to_start() {
    let s = Serve::new("");
    std::fs::remove_dir_all(s.path().join("trust")).unwrap();
    let serve = warden(&["serve", "--config", s.config().to_str().unwrap()]);
    assert_eq!(serve.status.code(), Some(1), "{}", stderr(&serve));
    let check = warden(&["serve", "--check", "--config", s.config().to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "--check passed a config that serve refuses ({})",
        stderr(&serve).trim_end()
    );
}

/// After a new version fails its blue-green swap, `warden ctl list` says so in
/// PROBLEM (it showed the new version, `active running` and `-`: a successful
/// upgrade to read).
#[test]
fn list_does_not_pass_off_a_failed_upgrade_as_done() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("kv", "1.0.0", "serve", "");
    s.start();
    s.bring_up("kv");
    s.deploy("kv", "2.0.0", "crash", "");
    s.ok(&["reload"]);
    s.wait("the failed replacement", Duration::from_secs(10), || {
        s.log().contains("plugin=kv replacement by 2.0.0 failed")
    });
    assert_eq!(s.status("kv")["serving_version"], "1.0.0");
    let list = s.ok(&["list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "kv")
        .unwrap()
        .clone();
    assert!(
        row["version"] == "1.0.0" || !row["problem"].is_null(),
        "ctl list shows {} running with no problem while 1.0.0 serves: {row}",
        row["version"]
    );
}

/// A new bundle that does not verify (signed by a key nobody pins, the
/// commonest deploy mistake) is visible to `warden ctl`: `reload` names it,
/// `list` has a `rejected` row with the reason (it was only in warden's log).
#[test]
fn a_rejected_new_bundle_is_visible_to_ctl() {
    let mut s = Serve::new("");
    s.deploy("good", "1.0.0", "serve", "");
    s.deploy("wrongkey", "1.0.0", "serve", "");
    let other = s.path().join("other");
    let out = warden(&["keygen", "--out", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bundle = s.path().join("plugins/wrongkey");
    let out = warden(&[
        "sign",
        bundle.to_str().unwrap(),
        "--key",
        s.path().join("other.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.start();
    let reload = s.ctl(&["reload"]);
    let said = format!("{}{}", stdout(&reload), stderr(&reload));
    let list = s.ok(&["list"]);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "wrongkey");
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "wrongkey")
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["status"], "rejected", "{row}");
    assert!(
        row["problem"]
            .as_str()
            .unwrap_or("")
            .contains("key_mismatch"),
        "{row}"
    );
    assert!(said.contains("wrongkey: rejected: key_mismatch"), "{said}");
    assert!(
        listed || said.contains("wrongkey"),
        "ctl reload said {said:?} (exit {:?}) and ctl list has no row for wrongkey: {list}\nwarden's log:\n{}",
        reload.status.code(),
        s.log()
    );
}

/// `policy approve` handled in the same loop turn as the plugin's hello (both
/// were waiting when warden woke): the broker has welcomed the instance with the
/// pending-review grants (none), but the supervisor has not yet noticed it is
/// ready (`ready_at` is set by the next tick). The broker kept the instance to
/// what its welcome listed, while the supervisor, thinking it unwelcomed, did
/// not replace it: approved, `effective` said kv:write, yet every kv.put was
/// denied for as long as the instance ran. Now the broker says who was told.
#[test]
fn approve_in_the_turn_of_the_hello_is_not_lost() {
    if !require_sandbox() {
        return;
    }
    use std::io::{BufRead, Write};
    let mut s = Serve::new("");
    s.deploy("st", "1.0.0", "slowclient", "");
    s.start();
    s.ok(&["install", "st"]);
    // A control client warden has accepted before it is stopped.
    let mut c = std::os::unix::net::UnixStream::connect(s.path().join("control.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.ok(&["activate", "st"]); // pending review: welcomed with no grants
    assert_eq!(s.status("st")["runtime"], "starting");
    // Stop warden until the plugin has said hello (1.5 s late) and the
    // approve is written: both are read in one turn.
    s.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2500));
    c.write_all(b"{\"op\":\"policy_approve\",\"id\":\"st\",\"grant\":null}\n")
        .unwrap();
    s.signal(libc::SIGCONT);
    let mut line = String::new();
    std::io::BufReader::new(&c).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\""), "{line}");
    s.wait_runtime("st", "running");
    let stats = |s: &Serve| s.ok(&["stats", "st"]);
    // Time for a blue-green replacement (its hello is 1.5 s late too).
    std::thread::sleep(Duration::from_millis(5000));
    let before = stats(&s)["denied"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1000));
    let st = stats(&s);
    assert_eq!(
        st["denied"].as_u64().unwrap_or(0),
        before,
        "approved with kv:write (effective {}), yet kv.put calls are still denied: {st}\n{}",
        s.ok(&["policy", "show", "st"])["effective"],
        s.log()
    );
}

/// A failed swap is shown as the plugin's problem "until a swap starts or
/// succeeds". `ctl restart` after it launches the new version as the live
/// instance (no swap), and the new version serves: the problem is cleared (it
/// still said the replacement failed and "the old instance serves on").
#[test]
fn a_restart_into_the_new_version_clears_the_failed_swap() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("kv", "1.0.0", "serve", "");
    s.start();
    s.bring_up("kv");
    // 2.0.0 never answers a ping: it fails to prove itself as a candidate, but
    // runs as a live instance (its manifest asks for no health checks).
    s.deploy("kv", "2.0.0", "hang", "");
    s.ok(&["reload"]);
    s.wait("the failed replacement", Duration::from_secs(10), || {
        s.log().contains("plugin=kv replacement by 2.0.0 failed")
    });
    s.ok(&["restart", "kv"]);
    s.wait("2.0.0 to serve", Duration::from_secs(10), || {
        let st = s.status("kv");
        st["serving_version"] == "2.0.0" && st["runtime"] == "running"
    });
    let st = s.status("kv");
    assert!(
        st["problem"].is_null(),
        "2.0.0 serves, yet the problem says: {}",
        st["problem"]
    );
}

/// Moves plugin `svc`'s bundle to `bundles/a` and makes `plugins/svc` a symlink
/// to it (an atomic-deploy layout); returns the `bundles` directory.
fn deploy_through_a_symlink(s: &Serve) -> std::path::PathBuf {
    let bundles = s.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::rename(s.path().join("plugins/svc"), bundles.join("a")).unwrap();
    std::os::unix::fs::symlink("../bundles/a", s.path().join("plugins/svc")).unwrap();
    bundles
}

/// The same release deployed again: copied to `bundles/b`, and `plugins/svc`
/// swapped to it by rename.
fn flip_to_a_copy(s: &Serve, bundles: &std::path::Path) {
    std::fs::create_dir(bundles.join("b")).unwrap();
    for f in std::fs::read_dir(bundles.join("a")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), bundles.join("b").join(f.file_name())).unwrap();
    }
    std::os::unix::fs::symlink("../bundles/b", s.path().join("plugins/.svc.new")).unwrap();
    std::fs::rename(
        s.path().join("plugins/.svc.new"),
        s.path().join("plugins/svc"),
    )
    .unwrap();
}

/// Output read in bounded shares per turn is all forwarded even when the plugin
/// writes nothing more: here 512 KiB and a last line in one burst, then silence
/// (the pipe is edge-triggered: no new write, no new wake-up).
#[test]
fn a_burst_of_output_is_forwarded_without_more_writes() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new(r#""output":{"lines_per_second":1000,"burst":1000}"#);
    s.deploy("burst", "1.0.0", "bigserve", "");
    s.start();
    s.bring_up("burst");
    s.wait(
        "the last line of the burst",
        Duration::from_secs(10),
        || s.log().contains("plugin=burst stdout: bigserve done"),
    );
    assert_eq!(s.status("burst")["runtime"], "running");
}

/// A regular file where the control socket should be is no stale socket: warden
/// refuses to start, naming the path, and leaves the file alone.
#[test]
fn a_regular_file_at_the_control_socket_path_is_not_removed() {
    let s = Serve::new("");
    let sock = s.path().join("control.sock");
    std::fs::write(&sock, "not a socket\n").unwrap();
    let mut child = Command::new(WARDEN)
        .args(["serve", "--config", s.config().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve started: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&sock).unwrap(),
        "not a socket\n",
        "the file at the control socket path was replaced"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("control socket {}", sock.display())) && err.contains("not a socket"),
        "{err}"
    );
}

/// warden's CPU time so far (utime + stime, in clock ticks).
fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A plugin SIGKILLed at its stop deadline that takes long to die (here frozen
/// by the cgroup v1 freezer; in life, stuck in uninterruptible sleep, or just
/// freeing a lot of memory) is waited for, not polled in a busy loop.
#[test]
fn a_plugin_slow_to_die_after_sigkill_does_not_spin_the_loop() {
    if !require_sandbox() {
        return;
    }
    let freezer = Path::new("/sys/fs/cgroup/freezer");
    if !freezer.join("cgroup.procs").exists() {
        common::skip("the cgroup v1 freezer");
        return;
    }
    let mut s = Serve::new("");
    s.deploy("slow", "1.0.0", "serve", "");
    s.start();
    let st = s.bring_up("slow");
    let init = st["pid"].as_i64().unwrap();
    let cg = freezer.join(format!("warden-review-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    struct Thaw(PathBuf);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            for p in procs.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/freezer/cgroup.procs", p);
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let thaw = Thaw(cg.clone());
    // The init and the plugin (its only child).
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    for p in std::iter::once(init.to_string()).chain(children.split_whitespace().map(String::from))
    {
        std::fs::write(cg.join("cgroup.procs"), &p).unwrap();
    }
    std::fs::write(cg.join("freezer.state"), "FROZEN").unwrap();
    s.wait("the sandbox to be frozen", Duration::from_secs(10), || {
        std::fs::read_to_string(cg.join("freezer.state")).is_ok_and(|v| v.trim() == "FROZEN")
    });
    // Shutdown is not answered: SIGKILL after 1 s (the test config's deadline),
    // which cannot take effect while the sandbox is frozen.
    s.ok(&["disable", "slow"]);
    let t0 = Instant::now();
    let c0 = cpu_ticks(s.pid());
    // A window of 2 s past the deadline, measured, not waited on for an event.
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(s.pid()) - c0;
    let hz = 100; // USER_HZ
    assert_eq!(s.status("slow")["runtime"], "stopping");
    drop(thaw);
    s.wait_runtime("slow", "stopped");
    assert!(
        used * 1000 / hz < 300,
        "warden used {} ms of CPU in the {} ms it waited for a killed plugin to die",
        used * 1000 / hz,
        t0.elapsed().as_millis()
    );
}

/// A plugin directory that cannot be read at a reload is no clean reload: `ctl
/// reload` fails naming the directory and why, and the plugins it stops say
/// that, not that their bundle is missing.
#[test]
fn reload_reports_an_unreadable_plugin_directory() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("p", "1.0.0", "serve", "");
    s.start();
    s.bring_up("p");
    let dir = s.path().join("plugins");
    std::fs::rename(&dir, s.path().join("plugins.moved")).unwrap();
    let out = s.ctl(&["reload"]);
    assert!(!out.status.success(), "reload said: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "plugin directory {}: No such file or directory",
            dir.display()
        )),
        "{err}"
    );
    let st = s.wait_runtime("p", "stopped");
    assert_eq!(
        st["problem"],
        "the plugin directory could not be read (No such file or directory (os error 2))"
    );
    std::fs::rename(s.path().join("plugins.moved"), &dir).unwrap();
    let out = s.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.wait_runtime("p", "running");
}

/// A pong that arrives in time, while the loop is held up (here by control
/// requests waiting for the state database's lock), is read before the ping is
/// judged unanswered: the plugin is not killed as unhealthy.
#[test]
fn a_pong_in_time_is_not_missed_while_the_loop_is_held_up() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy(
        "slow",
        "1.0.0",
        "slowpong",
        r#"{"interval_ms":400,"timeout_ms":300}"#,
    );
    s.start();
    s.bring_up("slow");
    // Another process holds the state database's write lock: every approve
    // below holds the loop for warden's database wait (500 ms) and is refused.
    let db = rusqlite::Connection::open(s.path().join("state/warden.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    for _ in 0..12 {
        let out = s.ctl(&["policy", "approve", "slow", "--grant", "kv:write"]);
        assert!(
            stderr(&out).contains("database is locked"),
            "{}",
            stderr(&out)
        );
    }
    db.execute_batch("ROLLBACK").unwrap();
    let st = s.status("slow");
    assert_eq!(st["runtime"], "running", "{st}");
    assert_eq!(st["restarts"], 0, "{st}\nlog:\n{}", s.log());
    assert!(!s.log().contains("unhealthy"), "{}", s.log());
}

/// Runs `warden ARGS` for at most 10 s; `None` if it was still running then
/// (it is killed).
fn exits_within_10s(args: &[&str]) -> Option<(i32, String)> {
    let mut c = Command::new(WARDEN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(st) = c.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
            return Some((st.code().unwrap_or(-1), err));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// A second `warden serve` given the same state directory (with an audit log
/// and control socket of its own) started and ran beside the first: both read
/// the same plugin records and both launched every active plugin, each with
/// its own idea of the records it then wrote back. A `warden run` on that
/// state directory shared the plugin's KV namespace and data directory with
/// the supervised instance. Both are now refused at start, naming the state
/// directory; the serving warden is left alone.
#[test]
fn a_second_warden_on_a_served_state_dir_is_refused() {
    if !require_sandbox() {
        return;
    }
    let mut s = Serve::new("");
    s.deploy("svc", "1.0.0", "serve", "");
    s.start();
    let pid = s.bring_up("svc")["pid"].as_i64().unwrap();
    let state = s.path().join("state");
    let second = s.path().join("second.json");
    std::fs::write(
        &second,
        r#"{"plugin_dir":"plugins","trust_dir":"trust","state_dir":"state",
        "audit_log":"second.jsonl","control_socket":"second.sock"}"#,
    )
    .unwrap();
    let got = exits_within_10s(&["serve", "--config", second.to_str().unwrap()]);
    let (code, err) = got.expect("a second warden serve on the same state_dir kept running");
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "warden: state directory {}: another `warden serve` is using it (lock held on {} by pid {} (warden)): give each warden serve a state_dir of its own",
            state.display(),
            state.join("warden.lock").display(),
            s.pid()
        )
    );
    let bundle = s.path().join("plugins/svc");
    let got = exits_within_10s(&[
        "run",
        bundle.to_str().unwrap(),
        "--trust",
        s.path().join("trust").to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--audit",
        s.path().join("run.jsonl").to_str().unwrap(),
    ]);
    let (code, err) = got.expect("a warden run on a served state dir kept running");
    assert_eq!(code, 125, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "warden: state directory {}: `warden serve` is using it (lock held on {} by pid {} (warden)): give this run its own --state-dir",
            state.display(),
            state.join("warden.lock").display(),
            s.pid()
        )
    );
    // The first one serves on, with its one instance.
    let st = s.status("svc");
    assert_eq!(
        (st["runtime"].as_str(), st["pid"].as_i64()),
        (Some("running"), Some(pid))
    );
    assert!(s.stop().success());
}
