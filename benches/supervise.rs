//! `cargo bench --bench supervise`: warden's own footprint as a service: resident
//! memory and idle CPU of one `warden serve` process with 1, 100 and 500 trivial
//! plugins active (tests/plugins/svc.c in `serve` mode: hello, then blocked in
//! recv). Plugins have no `health` section here, so an idle warden has nothing to
//! do at all; a second row per size adds 1 s health pings to show their cost.
//!
//! Targets: RSS under 20 MiB + 64 KiB per plugin; no measurable CPU when idle
//! beyond health pings. Sizes come from WARDEN_BENCH_SIZES (default "1,100,500");
//! the idle window from WARDEN_BENCH_IDLE_S (default 5).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn must(c: &mut Command) -> String {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    // Fields after the comm: state is [0]; utime [11], stime [12].
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

struct Run {
    child: Child,
}

impl Drop for Run {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of a child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn measure(dir: &Path, svc: &Path, n: usize, health: bool, idle: Duration) {
    let root = dir.join(format!("n{n}-{health}"));
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::fs::create_dir_all(root.join("trust/acme")).unwrap();
    must(
        Command::new(WARDEN)
            .args(["keygen", "--out"])
            .arg(root.join("acme")),
    );
    std::fs::copy(root.join("acme.pub"), root.join("trust/acme/acme.pub")).unwrap();
    let h = if health {
        r#","health":{"interval_ms":1000,"timeout_ms":500}"#
    } else {
        ""
    };
    for i in 0..n {
        let id = format!("p{i:03}");
        let m = root.join(format!("{id}.json"));
        std::fs::write(
            &m,
            format!(
                r#"{{"id":"{id}","version":"1.0.0","publisher":"acme","min_core":"0.1.0","capabilities":[],"args":["serve","1.0.0"],"resources":{{"memory_mb":16,"pids":4,"nofile":16,"tmp_mb":1}}{h}}}"#
            ),
        )
        .unwrap();
        must(
            Command::new(WARDEN)
                .arg("pack")
                .arg("--manifest")
                .arg(&m)
                .arg("--artifact")
                .arg(svc)
                .arg("--key")
                .arg(root.join("acme.key"))
                .arg("--out")
                .arg(root.join("plugins").join(&id)),
        );
    }
    std::fs::write(
        root.join("warden.json"),
        r#"{"plugin_dir":"plugins","trust_dir":"trust","state_dir":"state","audit_log":"state/audit.jsonl","control_socket":"control.sock","cgroup":false}"#,
    )
    .unwrap();
    let cfg = root.join("warden.json");
    let child = Command::new(WARDEN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = Run { child };
    let pid = run.child.id();
    let ctl = |args: &[&str]| {
        Command::new(WARDEN)
            .arg("ctl")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    while !ctl(&["list"]).status.success() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "warden did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_empty = rss_kb(pid);
    let t0 = Instant::now();
    for i in 0..n {
        let id = format!("p{i:03}");
        assert!(ctl(&["install", &id]).status.success());
        assert!(ctl(&["activate", &id]).status.success());
    }
    loop {
        let out = String::from_utf8_lossy(&ctl(&["list"]).stdout).into_owned();
        if out.lines().filter(|l| l.contains(" running ")).count() == n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "plugins did not all start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = t0.elapsed();
    // Let start-up work settle, then watch warden do nothing.
    std::thread::sleep(Duration::from_secs(1));
    let hz = 100.0; // USER_HZ on Linux
    let c0 = ticks(pid);
    let w0 = Instant::now();
    std::thread::sleep(idle);
    let cpu = (ticks(pid) - c0) as f64 / hz;
    let wall = w0.elapsed().as_secs_f64();
    let rss = rss_kb(pid);
    let target = 20 * 1024 + 64 * n as u64;
    println!(
        "{n:>4} plugins  health={:<5}  rss {:>6} KiB (empty {:>5} KiB, {:>5.1} KiB/plugin; target < {target} KiB: {})  idle cpu {:.3}% ({:.2} s cpu in {:.1} s)  start-all {:.2} s",
        if health { "1s" } else { "none" },
        rss,
        rss_empty,
        (rss.saturating_sub(rss_empty)) as f64 / n as f64,
        if rss < target { "ok" } else { "MISSED" },
        100.0 * cpu / wall,
        cpu,
        wall,
        up.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("WARDEN_BENCH_SIZES")
        .unwrap_or_else(|_| "1,100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let idle = Duration::from_secs(
        std::env::var("WARDEN_BENCH_IDLE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let dir = tempfile::Builder::new()
        .prefix("warden-bench-supervise-")
        .tempdir()
        .unwrap();
    let svc = dir.path().join("svc");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/svc.c");
    must(Command::new("cc").args(["-O2", "-o"]).arg(&svc).arg(&src));
    println!(
        "warden serve footprint (release build; idle window {} s)",
        idle.as_secs()
    );
    for &n in &sizes {
        measure(dir.path(), &svc, n, false, idle);
        measure(dir.path(), &svc, n, true, idle);
    }
}
