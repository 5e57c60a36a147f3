//! Hostile-plugin tests: the real escape attempts of `tests/hostile/hostile.c`, each run as a
//! signed plugin under `warden run`, each required to come back BLOCKED (or, for the attempts
//! listed in `docs/SECURITY.md`, to die by the documented signal), while the host-side
//! witnesses (a TCP, UDP, abstract and path unix listener, a victim process, the hostname, the
//! bundle directory) show nothing reached them. Also: no plugin process outlives a SIGKILLed
//! `warden run`.
//!
//! Not here: unit tests of the sandbox steps (they live beside the code), the unconfined
//! self-check that proves the attempts are real (`scripts/hostile-selfcheck.sh`).
//!
//! Skips name the missing kernel feature; with `WARDEN_TEST_STRICT=1` a skip is a failure.
//! A missing `cc` is always a failure.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const HOSTILE_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/hostile.c");

/// The manifest's resources; the attempts get the matching numbers as parameters.
const MEMORY_MB: u32 = 64;
const PIDS: u32 = 16;
const TMP_MB: u32 = 4;

/// Signals a plugin may legitimately die by, per attempt (see docs/SECURITY.md).
const NONE: &[i32] = &[];
/// The seccomp filter's default action may kill instead of returning an errno.
const SECCOMP: &[i32] = &[libc::SIGSYS];
/// The memory cgroup's OOM killer (or seccomp, should mmap ever be refused).
const OOM: &[i32] = &[libc::SIGKILL, libc::SIGSYS];

/// One entry of the hostile test plan.
struct Attempt {
    name: &'static str,
    args: Vec<String>,
    may_die_by: &'static [i32],
    /// stdin is a pseudo-terminal (for TIOCSTI).
    pty_stdin: bool,
}

fn attempt(name: &'static str, args: &[&str], may_die_by: &'static [i32]) -> Attempt {
    Attempt {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        may_die_by,
        pty_stdin: false,
    }
}

// ---------------------------------------------------------------- skips

/// Kernel features `warden run` needs; returns the names of the missing ones.
fn missing_features() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let max_userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if !Path::new("/proc/self/ns/user").exists() || max_userns == 0 {
        missing.push("user namespaces (user.max_user_namespaces > 0)");
    }
    if fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
        && !is_root()
    {
        missing.push("unprivileged user namespaces (kernel.unprivileged_userns_clone=1)");
    }
    for ns in ["pid", "mnt", "net", "ipc", "uts"] {
        if !Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            missing.push(match ns {
                "pid" => "pid namespaces",
                "mnt" => "mount namespaces",
                "net" => "network namespaces",
                "ipc" => "ipc namespaces",
                _ => "uts namespaces",
            });
        }
    }
    if landlock_abi() < 1 {
        missing.push("landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)");
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        missing.push("seccomp filters (CONFIG_SECCOMP_FILTER)");
    }
    missing
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the kernel only returns the ABI
    // number (or an error); no memory is read or written and no fd is created.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

/// Returns true when the test must not run; panics instead under WARDEN_TEST_STRICT=1.
fn skip_for_missing_features(test: &str) -> bool {
    let missing = missing_features();
    if missing.is_empty() {
        return false;
    }
    let msg = format!("{test}: skipped, kernel lacks: {}", missing.join(", "));
    if std::env::var("WARDEN_TEST_STRICT").as_deref() == Ok("1") {
        panic!("{msg} (WARDEN_TEST_STRICT=1 makes a skip a failure)");
    }
    eprintln!("{msg}");
    true
}

// -------------------------------------------------------------- fixture

/// A compiled hostile plugin, packed and signed, with its trust directory.
struct Plugin {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    trust: PathBuf,
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Plugin {
    fn build() -> Plugin {
        // Outside /tmp on purpose: the sandbox's private /tmp must not be what hides these.
        let dir = tempfile::Builder::new()
            .prefix("hostile")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let exe = root.join("hostile");
        let cc = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(&exe)
            .arg(HOSTILE_C)
            .output();
        match cc {
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "the hostile-plugin tests need a C compiler: `cc` was not found in PATH \
                 (install gcc or clang; on Debian: apt-get install gcc libc6-dev)"
            ),
            Err(e) => panic!("cannot run cc: {e}"),
            Ok(out) => assert!(
                out.status.success(),
                "cc failed to compile {HOSTILE_C}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        let key = root.join("publisher");
        run_ok(
            Command::new(WARDEN).arg("keygen").arg("--out").arg(&key),
            "warden keygen",
        );
        let trust = root.join("trust");
        fs::create_dir_all(trust.join("test")).unwrap();
        fs::copy(root.join("publisher.pub"), trust.join("test/hostile.pub")).unwrap();
        let manifest = root.join("manifest.json");
        fs::write(
            &manifest,
            format!(
                r#"{{"id":"hostile","version":"1.0.0","publisher":"test","min_core":"0.1.0","capabilities":[],"resources":{{"memory_mb":{MEMORY_MB},"pids":{PIDS},"nofile":64,"tmp_mb":{TMP_MB}}}}}"#
            ),
        )
        .unwrap();
        let bundle = root.join("bundle");
        run_ok(
            Command::new(WARDEN)
                .arg("pack")
                .arg("--manifest")
                .arg(&manifest)
                .arg("--artifact")
                .arg(&exe)
                .arg("--key")
                .arg(root.join("publisher.key"))
                .arg("--out")
                .arg(&bundle),
            "warden pack",
        );
        Plugin {
            _dir: dir,
            root,
            bundle,
            trust,
        }
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(WARDEN);
        cmd.arg("run")
            .arg(&self.bundle)
            .arg("--trust")
            .arg(&self.trust)
            .arg("--state-dir")
            .arg(self.trust.with_file_name("state"))
            .arg("--")
            .args(args);
        cmd
    }
}

/// Host-side witnesses: whatever reaches one of these has escaped.
struct Witnesses {
    tcp: TcpListener,
    udp: UdpSocket,
    abstract_name: String,
    abstract_unix: UnixListener,
    path_unix: UnixListener,
    path: PathBuf,
    victim: Child,
    hostname: String,
    hostfile: PathBuf,
    marker: String,
    bundle_listing: BTreeSet<String>,
    victim_reported: bool,
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

impl Witnesses {
    fn start(plugin: &Plugin) -> Witnesses {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        udp.set_nonblocking(true).unwrap();
        let abstract_name = format!("warden-hostile-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let abstract_unix = UnixListener::bind_addr(&addr).expect("bind abstract unix socket");
        abstract_unix.set_nonblocking(true).unwrap();
        let path = plugin.root.join("host.sock");
        let path_unix = UnixListener::bind(&path).expect("bind unix socket path");
        path_unix.set_nonblocking(true).unwrap();
        let victim = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn victim `sleep 600`");
        let marker = format!("hostile-secret-{}", std::process::id());
        let hostfile = plugin.root.join("host-secret.txt");
        fs::write(&hostfile, format!("{marker}\n")).unwrap();
        Witnesses {
            tcp,
            udp,
            abstract_name,
            abstract_unix,
            path_unix,
            path,
            victim,
            hostname: hostname(),
            hostfile,
            marker,
            bundle_listing: listing(&plugin.bundle),
            victim_reported: false,
        }
    }

    fn victim_pid(&self) -> String {
        self.victim.id().to_string()
    }

    /// Everything the attempt must not have touched; returns what it did touch.
    fn check(&mut self, plugin: &Plugin) -> Vec<String> {
        let mut bad = Vec::new();
        if self.tcp.accept().is_ok() {
            bad.push("the host TCP listener accepted a connection".to_string());
        }
        let mut buf = [0u8; 64];
        if self.udp.recv_from(&mut buf).is_ok() {
            bad.push("the host UDP socket received a datagram".to_string());
        }
        if self.abstract_unix.accept().is_ok() {
            bad.push(format!(
                "the abstract unix listener @{} accepted a connection",
                self.abstract_name
            ));
        }
        if self.path_unix.accept().is_ok() {
            bad.push(format!(
                "the unix listener {} accepted a connection",
                self.path.display()
            ));
        }
        match self.victim.try_wait() {
            Ok(None) => {}
            _ if self.victim_reported => {}
            Ok(Some(st)) => {
                self.victim_reported = true;
                bad.push(format!("the victim process died: {st}"));
            }
            Err(e) => bad.push(format!("cannot check the victim: {e}")),
        }
        let now = hostname();
        if now != self.hostname {
            bad.push(format!(
                "the host hostname changed from {:?} to {:?}",
                self.hostname, now
            ));
        }
        let files = listing(&plugin.bundle);
        if files != self.bundle_listing {
            bad.push(format!("the bundle directory changed: {files:?}"));
        }
        if fs::read_to_string(&self.hostfile).ok().as_deref()
            != Some(format!("{}\n", self.marker).as_str())
        {
            bad.push("the host file changed".to_string());
        }
        bad
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        let _ = self.victim.kill();
        let _ = self.victim.wait();
    }
}

// ---------------------------------------------------------------- running

/// A pseudo-terminal pair: (master, slave).
fn open_pty() -> std::io::Result<(OwnedFd, fs::File)> {
    // SAFETY: posix_openpt only takes flags and returns a new fd or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `master` is a freshly opened fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: grantpt/unlockpt take a valid pty master fd, which `master` is.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0
        // SAFETY: as above.
        || unsafe { libc::unlockpt(master.as_raw_fd()) } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the length passed; ptsname_r NUL-terminates it.
    if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    Ok((master, slave))
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn run_with_timeout(mut cmd: Command, stdin: Stdio, timeout: Duration) -> Outcome {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden run");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait warden run") {
            break st;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait warden run");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        timed_out,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

/// Ok(verdict line) or Err(why the attempt failed the test).
fn judge(a: &Attempt, o: &Outcome) -> Result<String, String> {
    let detail = || {
        format!(
            "exit {}; stdout: {:?}; stderr: {:?}",
            o.status,
            o.stdout.trim(),
            o.stderr.trim()
        )
    };
    if o.timed_out {
        return Err(format!("timed out; {}", detail()));
    }
    let Some(code) = o.status.code() else {
        return Err(format!(
            "`warden run` itself died by signal {:?}; {}",
            o.status.signal(),
            detail()
        ));
    };
    let lines: Vec<&str> = o.stdout.lines().collect();
    let blocked = format!("BLOCKED {}: ", a.name);
    match code {
        0 if lines.len() == 1 && lines[0].starts_with(&blocked) => Ok(lines[0].to_string()),
        0 => Err(format!("exit 0 without one BLOCKED line; {}", detail())),
        1 => Err(format!("ESCAPED; {}", detail())),
        125 => Err(format!(
            "`warden run` refused or failed to set up the sandbox; {}",
            detail()
        )),
        c if c > 128 && a.may_die_by.contains(&(c - 128)) => Ok(format!(
            "killed by {} ({}), an expected layer for {}",
            signal_name(c - 128),
            c - 128,
            a.name
        )),
        c if c > 128 => Err(format!(
            "plugin killed by {} ({}), not an expected outcome for this attempt; {}",
            signal_name(c - 128),
            c - 128,
            detail()
        )),
        _ => Err(format!("unexpected exit; {}", detail())),
    }
}

fn plan(w: &Witnesses) -> Vec<Attempt> {
    let victim = w.victim_pid();
    let hostfile = w.hostfile.to_string_lossy().into_owned();
    let tcp = w.tcp.local_addr().unwrap().port().to_string();
    let udp = w.udp.local_addr().unwrap().port().to_string();
    let path = w.path.to_string_lossy().into_owned();
    let new_hostname = format!("hostile-{}", std::process::id());
    let (pids, mem, tmp) = (PIDS.to_string(), MEMORY_MB.to_string(), TMP_MB.to_string());
    let mut v = vec![
        // files
        attempt("read_shadow", &[], NONE),
        attempt("read_root", &[], NONE),
        attempt("read_home", &[], NONE),
        attempt("read_hostfile", &[&hostfile, &w.marker], NONE),
        attempt("proc1_root", &[], NONE),
        attempt("open_by_handle", &[], SECCOMP),
        attempt("proc_kcore", &[], NONE),
        attempt("write_root", &[], NONE),
        attempt("write_usr", &[], NONE),
        attempt("write_etc", &[], NONE),
        attempt("write_bundle", &[], NONE),
        attempt("write_exe", &[], NONE),
        // processes
        attempt("proc_count", &["4"], NONE),
        attempt("proc_hostpid", &[&victim], NONE),
        attempt("ptrace_init", &[], SECCOMP),
        attempt("ptrace_hostpid", &[&victim], SECCOMP),
        attempt("ptrace_traceme", &[], SECCOMP),
        attempt("process_vm_readv", &[&victim], SECCOMP),
        attempt("signal_scope", &[], SECCOMP),
        attempt("kill_hostpid", &[&victim], SECCOMP),
        attempt("kill_all", &[], SECCOMP),
        // mounts and namespaces
        attempt("mount_tmpfs", &[], SECCOMP),
        attempt("remount_rw", &["/"], SECCOMP),
        attempt("remount_rw", &["/usr"], SECCOMP),
        attempt("unshare_user", &[], SECCOMP),
        attempt("clone_newns", &[], SECCOMP),
        attempt("clone_newnet", &[], SECCOMP),
        attempt("clone_newuser_ns", &[], SECCOMP),
        attempt("setns", &[&victim], SECCOMP),
        attempt("chroot", &[], SECCOMP),
        attempt("pivot_root", &[], SECCOMP),
        attempt("fanotify", &[], SECCOMP),
        // network
        attempt("raw_packet", &[], SECCOMP),
        attempt("raw_icmp", &[], SECCOMP),
        attempt("tcp_host", &[&tcp], SECCOMP),
        attempt("tcp_public", &["1.1.1.1", "80"], SECCOMP),
        attempt("udp_send", &[&udp], SECCOMP),
        attempt("abstract_unix", &[&w.abstract_name], SECCOMP),
        attempt("unix_path", &[&path], SECCOMP),
        // devices
        attempt("mknod", &[], SECCOMP),
        attempt("dev_mem", &[], NONE),
        attempt("dev_kmsg", &[], NONE),
        attempt("dev_disk", &[], NONE),
        attempt("iopl", &[], SECCOMP),
        // /proc/sys, /sys
        attempt("proc_sys_hostname", &[&new_hostname], NONE),
        attempt("sysrq", &[], NONE),
        attempt("core_pattern", &[], NONE),
        attempt("sys_write", &[], NONE),
        attempt("cgroup_release_agent", &[], NONE),
        // kernel attack surface
        attempt("add_key", &[], SECCOMP),
        attempt("keyctl", &[], SECCOMP),
        attempt("request_key", &[], SECCOMP),
        attempt("bpf_map", &[], SECCOMP),
        attempt("bpf_prog", &[], SECCOMP),
        attempt("perf_event_open", &[], SECCOMP),
        attempt("userfaultfd", &[], SECCOMP),
        attempt("io_uring", &[], SECCOMP),
        attempt("syslog", &[], SECCOMP),
        attempt("init_module", &[], SECCOMP),
        attempt("finit_module", &[], SECCOMP),
        attempt("delete_module", &[], SECCOMP),
        attempt("reboot", &[], SECCOMP),
        attempt("kexec_load", &[], SECCOMP),
        attempt("swapon", &[], SECCOMP),
        attempt("clock_settime", &[], SECCOMP),
        attempt("sethostname", &[&w.hostname], SECCOMP),
        // identity and inherited state
        attempt("fds", &[], NONE),
        attempt("env", &[], NONE),
        attempt("caps", &[], NONE),
        attempt("uid0", &[], SECCOMP),
        attempt("setrlimit", &[], SECCOMP),
        attempt("prlimit_init", &[], SECCOMP),
        attempt("fallocate_keep_size", &[], SECCOMP),
        attempt("nice", &[], SECCOMP),
        // resources
        attempt("tmp_cap", &[&tmp], NONE),
        attempt("fork_bomb", &[&pids], SECCOMP),
        attempt("mem_bomb", &[&mem], OOM),
    ];
    v.push(Attempt {
        pty_stdin: true,
        ..attempt("tiocsti", &[], SECCOMP)
    });
    v
}

#[test]
fn hostile_plugin_attempts_are_all_blocked() {
    if skip_for_missing_features("hostile_plugin_attempts_are_all_blocked") {
        return;
    }
    let plugin = Plugin::build();
    let mut witnesses = Witnesses::start(&plugin);
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for a in plan(&witnesses) {
        let mut args = vec![a.name.to_string()];
        args.extend(a.args.iter().cloned());
        let label = args.join(" ");
        let mut _master = None;
        let stdin = if a.pty_stdin {
            match open_pty() {
                Ok((m, slave)) => {
                    _master = Some(m);
                    Stdio::from(slave)
                }
                Err(e) => {
                    report.push(format!("{label}: no pty ({e}); stdin is /dev/null"));
                    Stdio::null()
                }
            }
        } else {
            Stdio::null()
        };
        let outcome = run_with_timeout(plugin.command(&args), stdin, Duration::from_secs(60));
        match judge(&a, &outcome) {
            Ok(line) => report.push(format!("{label}: {line}")),
            Err(why) => failures.push(format!("{label}: {why}")),
        }
        for touched in witnesses.check(&plugin) {
            failures.push(format!("{label}: {touched}"));
        }
    }
    eprintln!("hostile attempts:\n  {}", report.join("\n  "));
    assert!(
        failures.is_empty(),
        "{} hostile attempt(s) not blocked:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// warden run's own stdin, stdout and stderr are a terminal, as in an operator's
/// shell: the plugin gets pipes and a session of its own, never the terminal.
#[test]
fn the_plugin_never_gets_the_operators_terminal() {
    if skip_for_missing_features("the_plugin_never_gets_the_operators_terminal") {
        return;
    }
    let plugin = Plugin::build();
    let (master, slave) = open_pty().expect("a pseudo-terminal");
    let check = slave.try_clone().unwrap();
    let mut child = plugin
        .command(&["tty".to_string()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn warden run");
    // The terminal's side: everything until the last slave descriptor closes.
    let reader = drain(master);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden run did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // What it changed was its own terminal: the operator's still echoes.
    // SAFETY: a zeroed termios is a valid buffer.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr fills `t` from `check`, an open descriptor of the
    // harness's terminal.
    let got = unsafe { libc::tcgetattr(check.as_raw_fd(), &mut t) };
    // The reader sees the end once no one holds the terminal's other side.
    drop(check);
    let text = reader.join().unwrap();
    assert!(
        text.contains("BLOCKED tty: the session is the sandbox init's"),
        "{status}: {text}"
    );
    assert_eq!(got, 0);
    assert!(
        t.c_lflag & libc::ECHO != 0,
        "the operator's terminal lost its echo"
    );
}

/// Everything read from a pseudo-terminal's master until its last slave closes.
fn drain(master: OwnedFd) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut m = fs::File::from(master);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// stdout and stderr on two different terminals each reach their own; with no
/// pseudo-terminal to be had (here /dev/ptmx hidden in a private mount
/// namespace), the plugin's output still reaches the terminal, through a pipe.
#[test]
fn the_plugins_output_reaches_each_terminal() {
    if skip_for_missing_features("the_plugins_output_reaches_each_terminal") {
        return;
    }
    let plugin = Plugin::build();
    let (m1, s1) = open_pty().expect("a pseudo-terminal");
    let (m2, s2) = open_pty().expect("a pseudo-terminal");
    let mut child = plugin
        .command(&["tty".to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(s1))
        .stderr(Stdio::from(s2))
        .spawn()
        .unwrap();
    let (r1, r2) = (drain(m1), drain(m2));
    let status = child.wait().unwrap();
    let (t1, t2) = (r1.join().unwrap(), r2.join().unwrap());
    assert!(t1.contains("BLOCKED tty"), "{status}: stdout {t1:?}");
    assert!(
        t2.contains("tty: a line on stderr"),
        "{status}: stderr {t2:?}"
    );

    let (m, s) = open_pty().expect("a pseudo-terminal");
    let cmd = plugin.command(&["tty".to_string()]);
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind /dev/null /dev/ptmx && mount -t tmpfs none /dev/pts && exec \"$@\"")
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(s.try_clone().unwrap()))
        .stderr(Stdio::from(s))
        .spawn()
        .expect("unshare (util-linux)");
    let r = drain(m);
    let status = child.wait().unwrap();
    let text = r.join().unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("no pseudo-terminal for the plugin"), "{text}");
    assert!(text.contains("BLOCKED tty"), "{text}");
}

/// Pids (other than ours) whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

#[test]
fn plugin_does_not_survive_warden_sigkill() {
    if skip_for_missing_features("plugin_does_not_survive_warden_sigkill") {
        return;
    }
    let plugin = Plugin::build();
    let marker = format!("hostile-sleepforever-{}", std::process::id());
    let mut child = plugin
        .command(&["sleepforever".to_string(), marker.clone()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    let line = match started {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the plugin never reported SLEEPING ({status}); stderr: {err}");
        }
    };
    assert!(
        line.starts_with(&format!("SLEEPING {marker}:")),
        "unexpected first line from the plugin: {line:?}"
    );
    assert!(
        !processes_with(&marker).is_empty(),
        "no process carries the marker while the plugin runs: the /proc scan would prove nothing"
    );
    child.kill().expect("SIGKILL warden run");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    let left = loop {
        let left = processes_with(&marker);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for (pid, _) in &left {
        // SAFETY: kill takes plain integers; these pids were just read from /proc and carry
        // our unique marker, so they are the leaked plugin processes this test started.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(
        left.is_empty(),
        "plugin processes outlived a SIGKILLed `warden run` by 2 s: {left:?}"
    );
}

// ------------------------------------------------- found by review (sandbox)

/// `warden run ... >> plugins.log`: warden passes its stdout to the plugin as it is,
/// so the plugin holds the operator's own open file description of the log. It must
/// not be able to do more than add its output: here it clears O_APPEND, truncates
/// the file (earlier runs' lines are lost) and rewrites it from offset 0.
#[test]
fn the_plugin_cannot_rewrite_the_operators_log_file() {
    if skip_for_missing_features("the_plugin_cannot_rewrite_the_operators_log_file") {
        return;
    }
    let plugin = Plugin::build();
    let log = plugin.root.join("plugins.log");
    let earlier = "2026-11-26 an earlier run's line\n2026-11-26 warden: another\n";
    fs::write(&log, earlier).unwrap();
    let out = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = plugin
        .command(&["stdout_rewrite".to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::piped())
        .output()
        .expect("run warden")
        .status;
    let now = fs::read_to_string(&log).unwrap();
    assert!(
        now.starts_with(earlier),
        "the plugin rewrote the operator's log file ({status}); it now reads: {now:?}"
    );
    assert!(
        now.contains("BLOCKED stdout_rewrite: "),
        "{status}: {now:?}"
    );
}

/// The plugin does not learn the operator's host layout from warden's own command
/// line (the trust and state directories, the bundle) through the sandbox init,
/// a copy of warden: /proc shows only what the plugin may ptrace (the init was
/// listed, its /proc/1/cmdline readable). The bind sources /proc/self/mountinfo
/// shows are a documented limit.
#[test]
fn the_plugin_does_not_see_host_paths() {
    if skip_for_missing_features("the_plugin_does_not_see_host_paths") {
        return;
    }
    let plugin = Plugin::build();
    let bundle = fs::canonicalize(&plugin.bundle).unwrap();
    let trust = fs::canonicalize(&plugin.trust).unwrap();
    let a = attempt("host_paths", &[], NONE);
    let args = vec![
        "host_paths".to_string(),
        bundle.to_string_lossy().into_owned(),
        trust.to_string_lossy().into_owned(),
    ];
    let o = run_with_timeout(
        plugin.command(&args),
        Stdio::null(),
        Duration::from_secs(60),
    );
    if let Err(why) = judge(&a, &o) {
        panic!("host_paths: {why}");
    }
}
