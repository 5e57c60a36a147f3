//! `cargo bench --bench launch`: launch latency of the sandbox.
//!
//! 1. Library API: time from the start of `Sandbox::spawn` to the first message
//!    received on the supervisor's socket end, over N launches of a trivial plugin
//!    (plan made once, as a supervisor would).
//! 2. Whole process: `warden run` of the same trivial plugin, N times.
//! 3. Reference: `bwrap --unshare-all --die-with-parent --clearenv` with read-only
//!    /usr running /bin/true, N times.
//!
//! The plugin is dynamically linked (like /bin/true under bwrap), and the targets are
//! judged on it. The same plugin linked statically (`cc -static`, when the C library
//! has a static archive) is measured too and labelled "static plugin": the difference
//! is the dynamic loader's work inside the sandbox.
//!
//! Floors, measured in the same run with the same plugin and memfd: the time to
//! its first message when the launch is nothing but a clone and `execveat` (no
//! namespaces; the six new namespaces warden creates; those namespaces made
//! before the clock starts, as a pool of pre-built sandboxes would). No uid map,
//! mounts, cgroup, rlimits, landlock or seccomp: a launch that confines cannot
//! be faster than these on the same machine.
//!
//! N is 200 unless WARDEN_BENCH_N says otherwise; WARDEN_BENCH_ONLY=library stops
//! after the library measurements (for quick A/B runs). Targets: launch-to-first-message
//! median <= 1 ms; whole-process `warden run` median <= 0.7x the bwrap median.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden::bundle::{self, TrustStore};
use warden::sandbox::{Config, Plan, Sandbox};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

const PLUGIN: &str = r#"
#include <sys/socket.h>
int main(void) { send(3, "{\"op\":\"hello\"}", 14, 0); return 0; }
"#;

fn must(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packs `artifact` as plugin `hello` into `dir/<out>`.
fn pack(dir: &Path, artifact: &Path, out: &str) -> PathBuf {
    let b = dir.join(out);
    must(
        Command::new(WARDEN)
            .arg("pack")
            .arg("--manifest")
            .arg(dir.join("m.json"))
            .arg("--artifact")
            .arg(artifact)
            .arg("--key")
            .arg(dir.join("k.key"))
            .arg("--out")
            .arg(&b),
    );
    b
}

/// The bundle of the statically linked plugin, if the C library can link one.
fn setup_static(dir: &Path) -> Option<PathBuf> {
    let ok = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(dir.join("hello-static"))
        .arg(dir.join("hello.c"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| pack(dir, &dir.join("hello-static"), "bundle-static"))
}

fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("hello.c"), PLUGIN).unwrap();
    must(
        Command::new("cc")
            .args(["-O2", "-o"])
            .arg(dir.join("hello"))
            .arg(dir.join("hello.c")),
    );
    must(
        Command::new(WARDEN)
            .arg("keygen")
            .arg("--out")
            .arg(dir.join("k")),
    );
    let trust = dir.join("trust");
    std::fs::create_dir_all(trust.join("acme")).unwrap();
    std::fs::copy(dir.join("k.pub"), trust.join("acme/k.pub")).unwrap();
    std::fs::write(
        dir.join("m.json"),
        r#"{"id":"hello","version":"1.0.0","publisher":"acme","min_core":"0.1.0","capabilities":[]}"#,
    )
    .unwrap();
    (pack(dir, &dir.join("hello"), "bundle"), trust)
}

struct Stats {
    median: Duration,
    p99: Duration,
    min: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        min: v[0],
    }
}

fn show(name: &str, s: &Stats) {
    println!(
        "{name:<44} median {:>9.3} ms   p99 {:>9.3} ms   min {:>9.3} ms",
        s.median.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.min.as_secs_f64() * 1e3
    );
}

fn time_process(n: usize, mut make: impl FnMut() -> Command) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let mut c = make();
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let t = Instant::now();
            let st = c.status().expect("spawn");
            let d = t.elapsed();
            assert!(st.success(), "{c:?} failed: {st}");
            d
        })
        .collect()
}

fn bwrap_command() -> Command {
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-all",
        "--die-with-parent",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    // Debian 12 is merged-/usr: /bin, /lib, /lib64, /sbin are symlinks into /usr.
    for d in ["bin", "lib", "lib64", "sbin"] {
        let p = Path::new("/").join(d);
        match std::fs::read_link(&p) {
            Ok(to) => {
                c.arg("--symlink").arg(to).arg(&p);
            }
            Err(_) if p.is_dir() => {
                c.arg("--ro-bind").arg(&p).arg(&p);
            }
            Err(_) => {}
        }
    }
    c.arg("/bin/true");
    c
}

/// The namespaces `Sandbox::spawn` creates in its clone (it unshares the cgroup
/// namespace afterwards, where available).
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// How a floor measurement starts the plugin.
#[derive(Clone, Copy)]
enum Floor {
    /// A vfork-style clone with these namespace flags (0: none), then execveat at
    /// once: the least any launch into those namespaces pays.
    Cold(libc::c_int),
    /// A fork-style clone into the new namespaces first, unclocked; the clock
    /// starts when the waiting child is told to execveat: the best a pool of
    /// pre-built sandboxes could do, before any of the confinement such a sandbox
    /// would also carry.
    Warm,
}

/// What a floor child needs, prepared before the clone (the child only reads it).
struct FloorChild {
    /// The plugin's socket end, to become fd 3.
    plugin: std::os::fd::RawFd,
    /// The verified artifact's memfd.
    memfd: std::os::fd::RawFd,
    /// Read one byte from this before the exec (Warm), or -1.
    wait_go: std::os::fd::RawFd,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

/// The floor child: waits if told to, puts the socket at fd 3 and execs the
/// memfd. Raw syscalls only (it may share the bench's memory, see `clone_vfork`).
extern "C" fn floor_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&FloorChild` that `floor` passed to the clone; it
    // lives, unchanged, until the child has exec'd or exited.
    let c = unsafe { &*(arg as *const FloorChild) };
    let mut b = [0u8; 1];
    if c.wait_go >= 0 && !matches!(warden::sys::proc::read(c.wait_go, &mut b), Ok(1)) {
        warden::sys::proc::exit_now(126);
    }
    if warden::sys::proc::dup3(c.plugin, 3, 0).is_ok() {
        // SAFETY: argv and envp are NULL-terminated arrays of static C strings.
        let _ = unsafe {
            warden::sys::proc::execveat_empty_path(c.memfd, c.argv.as_ptr(), c.envp.as_ptr())
        };
    }
    warden::sys::proc::exit_now(127)
}

/// The floor child to reap: `clone_vfork` gives a pid, `clone_fork` a pidfd.
enum Started {
    Pid(libc::pid_t),
    PidFd(std::os::fd::OwnedFd),
}

/// Time from the start of a launch to the plugin's first message when the
/// launch does nothing but `how` and `execveat` of the verified memfd, with the
/// socket as fd 3: no uid map, sandbox init, mounts, cgroup, rlimits, landlock or
/// seccomp. A floor under any sandbox's launch of this plugin on this machine.
fn floor(v: &warden::bundle::VerifiedBundle, n: usize, how: Floor) -> Stats {
    use std::os::fd::{AsFd, AsRawFd};
    use warden::sys::ns::{clone_fork, clone_vfork, Forked};
    use warden::sys::proc::{waitid_pidfd, write, Exit};
    let mut stack = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut first = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for _ in 0..n + 10 {
        let (ours, theirs) = warden::sys::seqpacket::pair().unwrap();
        let (go_r, go_w) = warden::sys::socket::pipe(0).unwrap();
        let child = FloorChild {
            plugin: theirs.as_raw_fd(),
            memfd: v.artifact_fd().as_raw_fd(),
            wait_go: match how {
                Floor::Cold(_) => -1,
                Floor::Warm => go_r.as_raw_fd(),
            },
            argv: [c"hello".as_ptr(), std::ptr::null()],
            envp: [std::ptr::null()],
        };
        let arg = &child as *const FloorChild as *mut libc::c_void;
        let t = Instant::now();
        let (t, done) = match how {
            Floor::Cold(flags) => {
                // SAFETY: `floor_child` makes raw syscalls only, reads `child`
                // (unchanged while we are suspended) and leaves by exec or _exit;
                // `stack` is used by nobody else.
                let pid = unsafe { clone_vfork(&mut stack, floor_child, arg, flags) }.unwrap();
                (t, Started::Pid(pid))
            }
            Floor::Warm => {
                let flags = (NAMESPACES | libc::SIGCHLD | libc::CLONE_PIDFD) as libc::c_ulong;
                // SAFETY: the child runs `floor_child` (raw syscalls on the
                // descriptors and arrays prepared above) and leaves by exec or _exit.
                match unsafe { clone_fork(flags) }.unwrap() {
                    Forked::Child => {
                        floor_child(arg);
                        unreachable!("floor_child execs or exits")
                    }
                    Forked::Parent { pidfd, .. } => {
                        // Let the child reach its read before the clock starts.
                        std::thread::sleep(Duration::from_millis(2));
                        let t = Instant::now();
                        write(go_w.as_raw_fd(), b"g").unwrap();
                        (t, Started::PidFd(pidfd.expect("CLONE_PIDFD gives a pidfd")))
                    }
                }
            }
        };
        drop(theirs);
        let k = warden::sys::socket::recv(ours.as_fd(), &mut buf, 0).unwrap();
        first.push(t.elapsed());
        assert_eq!(&buf[..k], br#"{"op":"hello"}"#);
        match done {
            Started::PidFd(pidfd) => {
                assert_eq!(waitid_pidfd(pidfd.as_fd()).unwrap(), Exit::Code(0))
            }
            Started::Pid(pid) => {
                let mut status = 0;
                // SAFETY: waits for our own child `pid`; `status` is a writable int.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert_eq!(status, 0, "floor plugin exit status");
            }
        }
    }
    // The first ten were warm-up.
    stats(first.split_off(10))
}

fn main() {
    // `cargo bench` passes --bench; any other argument is a filter we ignore.
    let n: usize = std::env::var("WARDEN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::Builder::new()
        .prefix("warden-bench-")
        .tempdir()
        .unwrap();
    let (bundle_dir, trust_dir) = setup(dir.path());
    let static_dir = setup_static(dir.path());
    let trust = TrustStore::load(&trust_dir).unwrap();
    let v = bundle::verify(&bundle_dir, &trust).unwrap();
    let plan = Plan::new(&v, v.manifest().resources, &[], &Config::default()).unwrap();
    let no_cg = Config {
        cgroup: false,
        ..Config::default()
    };
    let plan_no_cg = Plan::new(&v, v.manifest().resources, &[], &no_cg).unwrap();
    println!(
        "warden launch bench: n={n}, landlock ABI {}, cgroup {}",
        plan.landlock_abi(),
        match plan.cgroup() {
            warden::sandbox::CgroupPlan::V1 { .. } => "v1 memory+pids",
            warden::sandbox::CgroupPlan::Absent(_) => "absent",
        }
    );

    // 1. Library: spawn -> first message on fd 3.
    let mut buf = [0u8; 256];
    for _ in 0..10 {
        let mut sb = Sandbox::spawn(&plan, &v, warden::sandbox::Stdio::inherit()).unwrap();
        warden::sys::socket::recv(sb.socket().unwrap(), &mut buf, 0).unwrap();
        sb.wait().unwrap();
    }
    let launch = |plan: &Plan, v: &warden::bundle::VerifiedBundle| {
        let mut first = Vec::with_capacity(n);
        let mut whole = Vec::with_capacity(n);
        let mut buf = [0u8; 256];
        for _ in 0..n {
            let t = Instant::now();
            let mut sb = Sandbox::spawn(plan, v, warden::sandbox::Stdio::inherit()).unwrap();
            let k = warden::sys::socket::recv(sb.socket().unwrap(), &mut buf, 0).unwrap();
            first.push(t.elapsed());
            assert_eq!(&buf[..k], br#"{"op":"hello"}"#);
            let st = sb.wait().unwrap();
            whole.push(t.elapsed());
            assert_eq!(st, warden::sandbox::ExitStatus::Code(0));
        }
        (stats(first), stats(whole))
    };
    let (first, whole) = launch(&plan, &v);
    show("library: spawn -> first message on fd 3", &first);
    show("library: spawn -> exit reaped", &whole);
    let (first_nc, whole_nc) = launch(&plan_no_cg, &v);
    show("library, no cgroup: spawn -> first message", &first_nc);
    show("library, no cgroup: spawn -> exit reaped", &whole_nc);
    let static_v = static_dir
        .as_ref()
        .map(|d| bundle::verify(d, &trust).unwrap());
    let static_first = static_v.as_ref().map(|sv| {
        let sp = Plan::new(sv, sv.manifest().resources, &[], &Config::default()).unwrap();
        let (first, _) = launch(&sp, sv);
        show("library, static plugin: spawn -> first msg", &first);
        first
    });
    // Floors: the same plugin started with nothing but a clone and its exec.
    let floor_plain = floor(&v, n, Floor::Cold(0));
    show("floor: vfork-style clone + execveat", &floor_plain);
    let floor_ns = floor(&v, n, Floor::Cold(NAMESPACES));
    show("floor: the same into 6 new namespaces", &floor_ns);
    let floor_warm = floor(&v, n, Floor::Warm);
    show("floor: namespaces made unclocked, execveat", &floor_warm);
    if std::env::var("WARDEN_BENCH_ONLY").is_ok_and(|v| v == "library") {
        return;
    }

    // 2. Whole process `warden run`.
    let run = stats(time_process(n, || {
        let mut c = Command::new(WARDEN);
        c.arg("run").arg(&bundle_dir).arg("--trust").arg(&trust_dir);
        c
    }));
    show("process: warden run (verify + sandbox)", &run);
    let run_nc = stats(time_process(n, || {
        let mut c = Command::new(WARDEN);
        c.arg("run")
            .arg(&bundle_dir)
            .arg("--trust")
            .arg(&trust_dir)
            .arg("--no-cgroup");
        c
    }));
    show("process: warden run --no-cgroup", &run_nc);
    let run_static = static_dir.as_ref().map(|d| {
        let run = stats(time_process(n, || {
            let mut c = Command::new(WARDEN);
            c.arg("run").arg(d).arg("--trust").arg(&trust_dir);
            c
        }));
        // Its artifact is ~50x the dynamic one's, and `warden run` hashes every
        // byte: this line is not comparable with the dynamic plugin's.
        show("process: warden run, static plugin (big)", &run);
        run
    });
    // Where the whole-process time goes: the same binary doing less.
    let verify = stats(time_process(n, || {
        let mut c = Command::new(WARDEN);
        c.arg("verify")
            .arg(&bundle_dir)
            .arg("--trust")
            .arg(&trust_dir);
        c
    }));
    show("process: warden verify (no sandbox)", &verify);
    let dry = stats(time_process(n, || {
        let mut c = Command::new(WARDEN);
        c.arg("run")
            .arg(&bundle_dir)
            .arg("--trust")
            .arg(&trust_dir)
            .arg("--dry-run");
        c
    }));
    show("process: warden run --dry-run (verify + plan)", &dry);
    let tru = stats(time_process(n, || Command::new("/bin/true")));
    show("process: /bin/true (fork+exec floor)", &tru);

    // 3. bwrap reference.
    let have_bwrap = Command::new("bwrap").arg("--version").output().is_ok();
    if !have_bwrap {
        println!("bwrap not installed: run scripts/bench-launch.sh (installs bubblewrap)");
        return;
    }
    let bw = stats(time_process(n, bwrap_command));
    show("process: bwrap --unshare-all ... /bin/true", &bw);

    let ratio = run.median.as_secs_f64() / bw.median.as_secs_f64();
    let ok = |b: bool| if b { "MET" } else { "NOT MET" };
    println!(
        "target: launch->first message median <= 1 ms: {:.3} ms  {}",
        first.median.as_secs_f64() * 1e3,
        ok(first.median <= Duration::from_millis(1))
    );
    println!(
        "        (floors in this run: a clone into the six namespaces plus the exec, nothing else: {:.3} ms; \
         with the namespaces made before the clock starts: {:.3} ms)",
        floor_ns.median.as_secs_f64() * 1e3,
        floor_warm.median.as_secs_f64() * 1e3
    );
    println!(
        "target: warden run / bwrap median <= 0.70: {ratio:.2}  {}",
        ok(ratio <= 0.7)
    );
    if let (Some(first), Some(run)) = (&static_first, &run_static) {
        println!(
            "        (static plugin, not the target: first message {:.3} ms {}, warden run / bwrap {:.2} {})",
            first.median.as_secs_f64() * 1e3,
            ok(first.median <= Duration::from_millis(1)),
            run.median.as_secs_f64() / bw.median.as_secs_f64(),
            ok(run.median.as_secs_f64() / bw.median.as_secs_f64() <= 0.7)
        );
        let size = |d: &Path| std::fs::metadata(d.join("artifact")).map_or(0, |m| m.len());
        if let Some(d) = &static_dir {
            println!(
                "        (the static artifact is {} KiB against {} KiB: `warden run` verifies every byte)",
                size(d) / 1024,
                size(&bundle_dir) / 1024
            );
        }
    } else {
        println!("        (static plugin not measured: `cc -static` failed; install the C library's static archive)");
    }
    let ratio_nc = run_nc.median.as_secs_f64() / bw.median.as_secs_f64();
    println!(
        "        (without cgroup: first message {:.3} ms {}, warden run / bwrap {ratio_nc:.2} {})",
        first_nc.median.as_secs_f64() * 1e3,
        ok(first_nc.median <= Duration::from_millis(1)),
        ok(ratio_nc <= 0.7)
    );
}
