//! Shared helpers for integration tests: build the C test plugin, make keys, trust
//! directories and signed bundles in a temp dir, run the `warden` binary, and skip
//! (or fail, with WARDEN_TEST_STRICT=1) when a kernel feature is missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// A world-readable scratch directory (so an unprivileged uid can use it too).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("warden-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

/// Compiles `tests/plugins/<name>.c` once per test binary and returns the path.
pub fn plugin(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = DIR.get_or_init(tempdir);
    let out = dir.path().join(name);
    if !out.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/plugins/{name}.c"));
        let tmp = dir
            .path()
            .join(format!("{name}.{}.tmp", std::process::id()));
        let st = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("cc");
        assert!(st.success(), "cc failed for {name}");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// Builds the example plugins (crate `warden-examples`) once per test binary and
/// returns the path of `name`. A nested cargo with its own target directory, so it
/// never waits on the lock of the build running the tests.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target/test-plugins");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "warden-examples",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(root)
            .output()
            .expect("running cargo to build the example plugins");
        assert!(
            out.status.success(),
            "building the example plugins failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("release")
    });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "no example plugin named {name} at {}",
        path.display()
    );
    path
}

/// A key, a trust directory pinning it for publisher `acme`, and helpers to pack.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let f = Fixture { dir: tempdir() };
        let key = f.path().join("acme");
        let out = warden(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(f.trust().join("acme")).unwrap();
        std::fs::copy(f.path().join("acme.pub"), f.trust().join("acme/acme.pub")).unwrap();
        f
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn trust(&self) -> PathBuf {
        self.path().join("trust")
    }
    /// Packs `artifact` as plugin `id` with extra manifest fields (JSON object body
    /// fragments, e.g. `"args":["x"]`), returning the bundle dir.
    pub fn bundle(&self, id: &str, artifact: &Path, extra: &str) -> PathBuf {
        self.bundle_with(id, "1.0.0", &["log:write"], artifact, extra)
    }

    /// Like [`Fixture::bundle`] with a version and capabilities of its own.
    pub fn bundle_with(
        &self,
        id: &str,
        version: &str,
        caps: &[&str],
        artifact: &Path,
        extra: &str,
    ) -> PathBuf {
        let m = self.path().join(format!("{id}.json"));
        let sep = if extra.is_empty() { "" } else { "," };
        let caps = serde_json::to_string(caps).unwrap();
        std::fs::write(
            &m,
            format!(r#"{{"id":"{id}","version":"{version}","publisher":"acme","min_core":"0.1.0","capabilities":{caps}{sep}{extra}}}"#),
        )
        .unwrap();
        let out_dir = self.path().join(format!("bundle-{id}"));
        let out = warden(&[
            "pack",
            "--manifest",
            m.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
            "--key",
            self.path().join("acme.key").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "pack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out_dir
    }
    /// `warden run BUNDLE --trust TRUST [extra...]`.
    /// Unless `extra` names one, the state dir is `<fixture>/state` (never the
    /// host's /var/lib/warden or $HOME).
    pub fn run(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["run", bundle.to_str().unwrap(), "--trust"];
        let trust = self.trust();
        args.push(trust.to_str().unwrap());
        let state = self.state_dir();
        if !extra.contains(&"--state-dir") {
            args.extend(["--state-dir", state.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        warden(&args)
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }
}

pub fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Skips a test whose kernel feature is missing, naming it; with
/// WARDEN_TEST_STRICT=1 a skip is a failure.
pub fn skip(missing: &str) {
    if std::env::var("WARDEN_TEST_STRICT").as_deref() == Ok("1") {
        panic!("WARDEN_TEST_STRICT=1 and a required feature is missing: {missing}");
    }
    eprintln!("SKIP: missing {missing}");
}

/// Returns the name of the first missing sandbox prerequisite, if any: landlock
/// ABI >= 6, unprivileged-capable user namespaces, seccomp.
pub fn missing_sandbox_feature() -> Option<String> {
    // SAFETY: the ABI query passes NULL/0 and only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if abi < 6 {
        return Some(format!("landlock ABI >= 6 (kernel reports {abi})"));
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Some("user namespaces".into());
    }
    if std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map_or(true, |s| s.trim() == "0")
    {
        return Some("user namespaces (user.max_user_namespaces is 0)".into());
    }
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .contains("Seccomp:")
    {
        return Some("seccomp".into());
    }
    None
}

/// Checks the prerequisites, skipping (or failing under strict mode) when absent.
pub fn require_sandbox() -> bool {
    match missing_sandbox_feature() {
        Some(m) => {
            skip(&m);
            false
        }
        None => true,
    }
}

/// The sandbox inits (`warden-init`, whose command line is their own) that are
/// parents of `pids`.
pub fn inits_above(pids: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(ppid) = ppid {
            let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
            if comm.trim_end() == "warden-init" && !out.contains(&ppid) {
                out.push(ppid);
            }
        }
    }
    out
}

/// The pids whose command line contains `marker` (warden, the plugin and its
/// children carry an argument given to `warden run`; the sandbox init's command
/// line is `warden-init ID`: see [`inits_above`]).
pub fn pids_with_marker(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}
