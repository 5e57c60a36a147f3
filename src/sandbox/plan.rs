//! The sandbox plan: everything the child will do, computed in the parent before
//! clone (mount list, rlimits, ids, environment, argv, landlock rules, the compiled
//! seccomp program, the cgroup), and its `Display` for `warden run --dry-run`.
//!
//! This is the allocating, fallible half of a launch. Nothing here runs after
//! clone; the child only reads a `Plan` (see `child.rs`).

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::landlock::{self as lls, HostRule};
use super::seccomp::{self, Filter};
use super::SandboxError;
use crate::bundle::manifest::Resources;
use crate::bundle::VerifiedBundle;
use crate::sys;

/// A scratch tmpfs is mounted here in the child's private mount namespace
/// (invisible to the host); the child pivots into it, finds the old root at
/// [`OLD_ROOT`] and assembles the new root at [`NEW_ROOT`], as bubblewrap does.
pub(crate) const STAGING: &CStr = c"/tmp";
/// Where host paths are read from during set-up (prefix of every bind source).
pub(crate) const OLD_ROOT: &str = "/oldroot";
/// Where the new root is assembled (prefix of every target).
pub(crate) const NEW_ROOT: &str = "/newroot";
/// Where the plugin sees its bundle directory, read-only.
pub const BUNDLE_PATH: &str = "/bundle";
/// The plugin's uid and gid inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// The sandbox's hostname.
pub const HOSTNAME: &str = "warden";
/// The default host uid range for plugins when warden runs as root.
pub const DEFAULT_UID_RANGE: (u32, u32) = (3_000_000_000, 3_000_065_535);
/// The landlock ABI required by default: 6 adds signal and abstract-socket scoping
/// to the TCP rules of ABI 4.
pub const DEFAULT_LANDLOCK_MIN_ABI: u32 = 6;
/// /etc files a dynamically linked program may need.
const ETC_FILES: &[&str] = &["ld.so.cache", "nsswitch.conf", "localtime"];
/// Top-level directories a dynamic program may need (symlinks into /usr on merged-usr
/// systems are recreated as symlinks).
const ROOT_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Device nodes bind-mounted from the host into the sandbox's /dev.
const DEVICES: &[(&str, u64)] = &[
    ("null", lls::RW_DEV_ACCESS),
    ("zero", lls::RW_DEV_ACCESS),
    ("full", lls::RW_DEV_ACCESS),
    ("random", lls::READ_FILE_ACCESS),
    ("urandom", lls::READ_FILE_ACCESS),
];

/// Operator choices that shape a plan.
#[derive(Clone, Debug)]
pub struct Config {
    /// Host uids for plugins when warden runs as root: each plugin gets
    /// `start + hash(id) % (end - start + 1)` unless `host_uid` says otherwise.
    /// Ignored when unprivileged.
    pub uid_range: (u32, u32),
    /// The host uid (and gid) for this plugin as root, given by the caller:
    /// `warden serve` gives each plugin one of its own and keeps it in its state
    /// database. `None`: hashed from the id within `uid_range`.
    pub host_uid: Option<u32>,
    /// The lowest landlock ABI warden accepts.
    pub landlock_min_abi: u32,
    /// Place each sandbox in its own cgroup (v1 memory+pids) when warden may (the
    /// init moves itself in, which costs no RCU grace period); the rlimits apply
    /// either way.
    pub cgroup: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uid_range: DEFAULT_UID_RANGE,
            host_uid: None,
            landlock_min_abi: DEFAULT_LANDLOCK_MIN_ABI,
            cgroup: true,
        }
    }
}

/// One mount-namespace operation, in order; targets are inside [`STAGING`].
#[derive(Debug)]
pub(crate) enum MountOp {
    /// A directory in the new root.
    Mkdir {
        target: CString,
    },
    /// An empty file in the new root (a bind target).
    Mkfile {
        target: CString,
    },
    Symlink {
        to: CString,
        target: CString,
    },
    /// Bind `source` at `target` (recursively), then remount read-only unless
    /// `writable`, keeping `keep` flags (those the kernel locks in a user namespace).
    Bind {
        source: Option<CString>,
        target: CString,
        keep: libc::c_ulong,
        writable: bool,
    },
    /// The bundle: the child opens `Plan::bundle_path` before it gives up host
    /// root, checks it is the very directory (device and inode) of the O_PATH
    /// handle taken at verification, and binds that handle via /proc/self/fd.
    BindBundle {
        target: CString,
        keep: libc::c_ulong,
    },
    Tmpfs {
        target: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    Proc {
        target: CString,
    },
    RemountRo {
        target: CString,
        flags: libc::c_ulong,
    },
}

/// How plugin ids map to host ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    pub inside_uid: u32,
    pub inside_gid: u32,
    pub host_uid: u32,
    pub host_gid: u32,
    /// Root: the ids come from the configured range and supplementary groups are
    /// dropped. Unprivileged: our own ids, `setgroups` denied.
    pub privileged: bool,
}

/// A cgroup v1 placement (memory + pids), used when warden may write there.
#[derive(Clone, Debug)]
pub enum CgroupPlan {
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        memory_bytes: u64,
        pids_max: u64,
    },
    Absent(String),
}

/// Everything a launch of one verified bundle does, decided before clone.
#[derive(Debug)]
pub struct Plan {
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) sha256: String,
    pub(crate) bundle_dir: PathBuf,
    pub(crate) bundle_path: CString,
    pub(crate) mounts: Vec<MountOp>,
    pub(crate) shown_mounts: Vec<String>,
    pub(crate) rlimits: Vec<(libc::__rlimit_resource_t, u64, &'static str, String)>,
    pub(crate) ids: IdMap,
    pub(crate) argv: Vec<CString>,
    pub(crate) env: Vec<CString>,
    pub(crate) landlock_abi: u32,
    pub(crate) landlock_min_abi: u32,
    pub(crate) landlock_rules: Vec<HostRule>,
    pub(crate) seccomp: Filter,
    pub(crate) cgroup: CgroupPlan,
    pub(crate) cap_last: u32,
    pub(crate) stdin: OwnedFd,
    pub(crate) resources: Resources,
}

impl Plan {
    /// Builds the plan for `bundle` with the effective `resources` (manifest
    /// clamped by policy) and `args` (the manifest's, or the operator's override).
    /// Fails closed when the kernel lacks a required layer.
    pub fn new(
        bundle: &VerifiedBundle,
        resources: Resources,
        args: &[String],
        config: &Config,
    ) -> Result<Plan, SandboxError> {
        let m = bundle.manifest();
        let landlock_abi = match sys::landlock::abi_version() {
            Ok(v) => v,
            Err(e) => {
                return Err(SandboxError::Missing {
                    feature: "landlock",
                    detail: format!(
                        "the kernel has no usable landlock ({}); add landlock to CONFIG_LSM / lsm=",
                        sys::errno_name(e.raw_os_error().unwrap_or(0))
                    ),
                })
            }
        };
        if landlock_abi < config.landlock_min_abi {
            return Err(SandboxError::Missing {
                feature: "landlock",
                detail: format!(
                    "the kernel offers landlock ABI {landlock_abi}, warden requires >= {}",
                    config.landlock_min_abi
                ),
            });
        }
        for (ns, file) in [
            ("user", "user"),
            ("pid", "pid"),
            ("mount", "mnt"),
            ("net", "net"),
            ("ipc", "ipc"),
            ("uts", "uts"),
            ("cgroup", "cgroup"),
        ] {
            if !Path::new("/proc/self/ns").join(file).exists() {
                return Err(SandboxError::Missing {
                    feature: "namespaces",
                    detail: format!("the kernel has no {ns} namespaces"),
                });
            }
        }
        if !Path::new("/proc/self/status").exists() {
            return Err(SandboxError::Missing {
                feature: "procfs",
                detail: "/proc is not mounted".into(),
            });
        }
        let seccomp = seccomp::compile_default().map_err(SandboxError::Seccomp)?;
        let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63);

        // SAFETY: getuid/getgid/geteuid cannot fail and touch no memory.
        let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
        let ids = if euid == 0 {
            let host = config
                .host_uid
                .unwrap_or_else(|| host_id(m.id.as_str(), config.uid_range));
            IdMap {
                inside_uid: INSIDE_ID,
                inside_gid: INSIDE_ID,
                host_uid: host,
                host_gid: host,
                privileged: true,
            }
        } else {
            IdMap {
                inside_uid: INSIDE_ID,
                inside_gid: INSIDE_ID,
                host_uid: uid,
                host_gid: gid,
                privileged: false,
            }
        };

        let mut b = Builder::default();
        let perr = |path: &str, e: std::io::Error| SandboxError::Prepare {
            what: path.to_owned(),
            source: e,
        };
        // Top-level: /usr, then merged-usr symlinks or real directories.
        b.bind_ro("/usr", "/usr").map_err(|e| perr("/usr", e))?;
        let usr = open_path("/usr").map_err(|e| perr("/usr", e))?;
        let mut rules = vec![HostRule {
            fd: usr,
            access: lls::EXEC_ACCESS,
            shown: "/usr".into(),
        }];
        for d in ROOT_DIRS {
            let host = format!("/{d}");
            match std::fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    let to = std::fs::read_link(&host).map_err(|e| perr(&host, e))?;
                    b.symlink(&to, &host);
                }
                Ok(md) if md.is_dir() => {
                    b.bind_ro(&host, &host).map_err(|e| perr(&host, e))?;
                    rules.push(HostRule {
                        fd: open_path(&host).map_err(|e| perr(&host, e))?,
                        access: lls::EXEC_ACCESS,
                        shown: host.clone(),
                    });
                }
                _ => {}
            }
        }
        b.mkdir("/etc");
        for f in ETC_FILES {
            let host = format!("/etc/{f}");
            match std::fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    let to = std::fs::read_link(&host).map_err(|e| perr(&host, e))?;
                    if to.starts_with("/usr/") {
                        b.symlink(&to, &host);
                        continue;
                    }
                    let real = std::fs::canonicalize(&host).map_err(|e| perr(&host, e))?;
                    b.bind_file(&real.to_string_lossy(), &host, false)
                        .map_err(|e| perr(&host, e))?;
                    rules.push(HostRule {
                        fd: open_path(&real.to_string_lossy()).map_err(|e| perr(&host, e))?,
                        access: lls::READ_FILE_ACCESS,
                        shown: host.clone(),
                    });
                }
                Ok(md) if md.is_file() => {
                    b.bind_file(&host, &host, false)
                        .map_err(|e| perr(&host, e))?;
                    rules.push(HostRule {
                        fd: open_path(&host).map_err(|e| perr(&host, e))?,
                        access: lls::READ_FILE_ACCESS,
                        shown: host.clone(),
                    });
                }
                _ => {}
            }
        }
        // The bundle, from the handle taken at verification time.
        let bundle_real = std::fs::canonicalize(bundle.dir()).map_err(|e| perr("bundle", e))?;
        let bundle_keep = statvfs_keep(&bundle_real.to_string_lossy()).unwrap_or(0);
        b.mkdir(BUNDLE_PATH);
        b.ops.push(MountOp::BindBundle {
            target: staged(BUNDLE_PATH),
            keep: bundle_keep,
        });
        b.shown.push(format!(
            "ro-bind {} -> {BUNDLE_PATH} (checked to be the directory verified)",
            bundle_real.display()
        ));
        rules.push(HostRule {
            fd: sys::proc::dup_cloexec_above(bundle.dir_fd(), 3).map_err(|e| perr("bundle", e))?,
            access: lls::READ_DIR_ACCESS,
            shown: BUNDLE_PATH.into(),
        });
        // Private, size-capped /tmp.
        let tmp_mb = resources.tmp_mb.get();
        b.mkdir("/tmp");
        let tmp_data = format!("size={tmp_mb}m,nr_inodes=16384,mode=1777");
        b.ops.push(MountOp::Tmpfs {
            target: staged("/tmp"),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: cstring(&tmp_data),
        });
        b.shown
            .push(format!("tmpfs /tmp ({tmp_data}, nosuid, nodev; writable)"));
        // Fresh /proc of the new pid namespace.
        b.mkdir("/proc");
        b.ops.push(MountOp::Proc {
            target: staged("/proc"),
        });
        b.shown
            .push("proc /proc (new pid namespace; nosuid, nodev, noexec)".into());
        // Minimal /dev.
        b.mkdir("/dev");
        b.ops.push(MountOp::Tmpfs {
            target: staged("/dev"),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: c"size=64k,nr_inodes=64,mode=0755".into(),
        });
        b.shown.push("tmpfs /dev (read-only after setup)".into());
        for (d, access) in DEVICES {
            let host = format!("/dev/{d}");
            b.bind_file(&host, &host, true)
                .map_err(|e| perr(&host, e))?;
            rules.push(HostRule {
                fd: open_path(&host).map_err(|e| perr(&host, e))?,
                access: *access,
                shown: host.clone(),
            });
        }
        for (to, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            b.symlink(Path::new(to), link);
        }
        b.ops.push(MountOp::RemountRo {
            target: staged("/dev"),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        });
        b.shown
            .push("pivot_root into the new root; old root detached (MNT_DETACH)".into());
        b.shown.push("remount / read-only".into());

        let r = resources;
        let mib = 1024 * 1024;
        let rlimits = vec![
            (
                libc::RLIMIT_AS,
                r.memory_mb.get() * mib,
                "RLIMIT_AS",
                format!("memory_mb={}", r.memory_mb.get()),
            ),
            (
                libc::RLIMIT_NOFILE,
                r.nofile.get(),
                "RLIMIT_NOFILE",
                format!("nofile={}", r.nofile.get()),
            ),
            (
                libc::RLIMIT_NPROC,
                r.pids.get(),
                "RLIMIT_NPROC",
                format!("pids={} (counted per host uid)", r.pids.get()),
            ),
            (
                libc::RLIMIT_FSIZE,
                r.tmp_mb.get() * mib,
                "RLIMIT_FSIZE",
                format!("tmp_mb={}", r.tmp_mb.get()),
            ),
            (libc::RLIMIT_CORE, 0, "RLIMIT_CORE", "no core dumps".into()),
        ];

        let cgroup = if config.cgroup {
            cgroup_plan(ids.privileged, &resources)
        } else {
            CgroupPlan::Absent("disabled by the operator (--no-cgroup); rlimits apply".into())
        };

        let mut argv = vec![cstring(m.id.as_str())];
        argv.extend(args.iter().map(|a| cstring(a)));
        let env = [
            "PATH=/usr/bin:/bin".to_owned(),
            "HOME=/tmp".to_owned(),
            "TMPDIR=/tmp".to_owned(),
            "TZ=UTC".to_owned(),
            "LANG=C.UTF-8".to_owned(),
            format!("WARDEN_PLUGIN_ID={}", m.id),
            format!("WARDEN_PLUGIN_VERSION={}", m.version),
            "WARDEN_FD=3".to_owned(),
        ]
        .iter()
        .map(|s| cstring(s))
        .collect();
        let stdin = std::fs::File::open("/dev/null")
            .map_err(|e| perr("/dev/null", e))?
            .into();
        Ok(Plan {
            id: m.id.to_string(),
            version: m.version.to_string(),
            sha256: bundle.sha256().to_string(),
            bundle_dir: bundle.dir().to_owned(),
            bundle_path: cstring(&bundle_real.to_string_lossy()),
            mounts: b.ops,
            shown_mounts: b.shown,
            rlimits,
            ids,
            argv,
            env,
            landlock_abi,
            landlock_min_abi: config.landlock_min_abi,
            landlock_rules: rules,
            seccomp,
            cgroup,
            cap_last,
            stdin,
            resources,
        })
    }

    /// The plugin id this plan launches.
    pub fn plugin_id(&self) -> &str {
        &self.id
    }

    /// The landlock ABI that will be in force (for the launch audit event).
    pub fn landlock_abi(&self) -> u32 {
        self.landlock_abi
    }

    /// The uid/gid mapping.
    pub fn ids(&self) -> IdMap {
        self.ids
    }

    /// The cgroup placement, or why there is none.
    pub fn cgroup(&self) -> &CgroupPlan {
        &self.cgroup
    }

    /// For the launch's audit event: `"v1 memory+pids"`, or `"none: <why>"` (an
    /// optional layer's absence is audited).
    pub fn cgroup_audit(&self) -> String {
        match &self.cgroup {
            CgroupPlan::V1 { .. } => "v1 memory+pids".into(),
            CgroupPlan::Absent(why) => format!("none: {why}"),
        }
    }

    /// The effective resource limits.
    pub fn resources(&self) -> Resources {
        self.resources
    }
}

#[derive(Default)]
struct Builder {
    ops: Vec<MountOp>,
    shown: Vec<String>,
}

impl Builder {
    fn mkdir(&mut self, path: &str) {
        self.ops.push(MountOp::Mkdir {
            target: staged(path),
        });
    }
    fn symlink(&mut self, to: &Path, link: &str) {
        self.ops.push(MountOp::Symlink {
            to: cstring(&to.to_string_lossy()),
            target: staged(link),
        });
        self.shown
            .push(format!("symlink {link} -> {}", to.display()));
    }
    fn bind_ro(&mut self, host: &str, inside: &str) -> std::io::Result<()> {
        let keep = statvfs_keep(host)?;
        self.mkdir(inside);
        self.ops.push(MountOp::Bind {
            source: Some(host_source(host)),
            target: staged(inside),
            keep,
            writable: false,
        });
        self.shown.push(format!("ro-bind {host} -> {inside}"));
        Ok(())
    }
    fn bind_file(&mut self, host: &str, inside: &str, writable: bool) -> std::io::Result<()> {
        let keep = statvfs_keep(host)?;
        self.ops.push(MountOp::Mkfile {
            target: staged(inside),
        });
        self.ops.push(MountOp::Bind {
            source: Some(host_source(host)),
            target: staged(inside),
            keep,
            writable,
        });
        let kind = if writable { "dev-bind" } else { "ro-bind" };
        self.shown.push(format!("{kind} {host} -> {inside}"));
        Ok(())
    }
}

fn staged(inside: &str) -> CString {
    cstring(&format!("{NEW_ROOT}{inside}"))
}

fn host_source(host: &str) -> CString {
    cstring(&format!("{OLD_ROOT}{host}"))
}

fn cstring(s: &str) -> CString {
    // Manifest args and ids are validated UTF-8 without NUL (the manifest refuses
    // control characters); a NUL here would be a bug, and we drop it rather than panic.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn open_path(p: &str) -> std::io::Result<OwnedFd> {
    sys::fs::open_dir_path(Path::new(p)).or_else(|_| {
        let c = CString::new(Path::new(p).as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = sys::landlock::open_path(&c)?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    })
}

/// The mount flags of `path`'s mount that must be kept on a read-only remount.
fn statvfs_keep(path: &str) -> std::io::Result<libc::c_ulong> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let f = sys::mount::statvfs_flags(&c)?;
    let mut keep = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st != 0 {
            keep |= ms;
        }
    }
    Ok(keep)
}

/// The host uid (and gid) of plugin `id` when warden runs as root and nobody
/// gave it one: a hash of the id within `range`. Stable, but two ids may share
/// one (see docs/sandbox.md); `warden serve` prefers it, then takes the next
/// free uid.
pub fn host_id(id: &str, (lo, hi): (u32, u32)) -> u32 {
    lo + (fnv1a(id.as_bytes()) % u64::from(hi - lo + 1)) as u32
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cgroup_plan(privileged: bool, r: &Resources) -> CgroupPlan {
    let mem = Path::new("/sys/fs/cgroup/memory");
    let pids = Path::new("/sys/fs/cgroup/pids");
    if !(mem.join("memory.limit_in_bytes").exists() && pids.join("pids.max").exists()
        || mem.join("cgroup.procs").exists() && pids.join("cgroup.procs").exists())
    {
        return CgroupPlan::Absent(
            "no cgroup v1 memory+pids hierarchy (cgroup v2 delegation is not implemented yet); rlimits apply".into(),
        );
    }
    let writable = |p: &Path| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: `c` is NUL-terminated and outlives the call.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    };
    if !privileged || !writable(mem) || !writable(pids) {
        return CgroupPlan::Absent(
            "cgroup v1 memory/pids are not writable by warden; rlimits apply".into(),
        );
    }
    CgroupPlan::V1 {
        memory: mem.join("warden"),
        pids: pids.join("warden"),
        memory_bytes: r.memory_mb.get() * 1024 * 1024,
        pids_max: r.pids.get(),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for {} {} sha256={}",
            self.id, self.version, self.sha256
        )?;
        writeln!(
            f,
            "bundle: {} (visible at {BUNDLE_PATH})",
            self.bundle_dir.display()
        )?;
        writeln!(
            f,
            "exec: execveat(memfd of the verified artifact, \"\", AT_EMPTY_PATH)"
        )?;
        writeln!(
            f,
            "namespaces: user pid mount net ipc uts cgroup (net: loopback only)"
        )?;
        let i = self.ids;
        if i.privileged {
            writeln!(
                f,
                "uid map: inside {}:{} -> host {}:{} (from the uid range; supplementary groups dropped)",
                i.inside_uid, i.inside_gid, i.host_uid, i.host_gid
            )?;
        } else {
            writeln!(
                f,
                "uid map: inside {}:{} -> host {}:{} (our own ids; setgroups denied)",
                i.inside_uid, i.inside_gid, i.host_uid, i.host_gid
            )?;
        }
        writeln!(f, "hostname: {HOSTNAME}")?;
        writeln!(f, "mounts:")?;
        writeln!(f, "  tmpfs / (new root; read-only after setup)")?;
        for m in &self.shown_mounts {
            writeln!(f, "  {m}")?;
        }
        writeln!(f, "rlimits:")?;
        for (_, v, name, why) in &self.rlimits {
            writeln!(f, "  {name} {v} ({why})")?;
        }
        match &self.cgroup {
            CgroupPlan::V1 {
                memory,
                pids,
                memory_bytes,
                pids_max,
            } => writeln!(
                f,
                "cgroup: v1 {}/<id>-<pid> memory.limit_in_bytes={memory_bytes}, {}/<id>-<pid> pids.max={pids_max}",
                memory.display(),
                pids.display()
            )?,
            CgroupPlan::Absent(why) => writeln!(f, "cgroup: absent: {why}")?,
        }
        writeln!(
            f,
            "fds: 0=/dev/null 1=stdout 2=stderr 3=broker socket (AF_UNIX SOCK_SEQPACKET); all others closed"
        )?;
        writeln!(f, "env:")?;
        for e in &self.env {
            writeln!(f, "  {}", e.to_string_lossy())?;
        }
        let args: Vec<_> = self
            .argv
            .iter()
            .map(|a| format!("{:?}", a.to_string_lossy()))
            .collect();
        writeln!(f, "argv: [{}]", args.join(", "))?;
        writeln!(f, "capabilities: all five sets empty; no_new_privs")?;
        writeln!(
            f,
            "scheduling: SCHED_BATCH (wake-ups do not preempt the running task; same CPU share)"
        )?;
        let abi = self.landlock_abi;
        writeln!(
            f,
            "landlock: ABI {abi} in force (required >= {}); handled fs: {}",
            self.landlock_min_abi,
            lls::fs_names(lls::fs_rights(abi))
        )?;
        for r in &self.landlock_rules {
            writeln!(
                f,
                "  {}: {}",
                r.shown,
                lls::fs_names(r.access & lls::fs_rights(abi))
            )?;
        }
        writeln!(
            f,
            "  /tmp: {}",
            lls::fs_names(lls::TMP_ACCESS & lls::fs_rights(abi))
        )?;
        writeln!(
            f,
            "  /proc: {}",
            lls::fs_names(lls::PROC_ACCESS & lls::fs_rights(abi))
        )?;
        if abi >= 4 {
            writeln!(f, "  net: tcp bind and connect denied")?;
        }
        if abi >= 6 {
            writeln!(f, "  scoped: abstract unix sockets, signals")?;
        }
        let s = &self.seccomp;
        writeln!(
            f,
            "seccomp: {} BPF instructions; arch x86_64 only (x32 and others killed); default errno {}",
            s.program.len(),
            sys::errno_name(s.default_errno)
        )?;
        let allowed: Vec<String> = s
            .allowed
            .iter()
            .map(|(n, c)| {
                if c.is_empty() {
                    (*n).to_owned()
                } else {
                    format!("{n}(args)")
                }
            })
            .collect();
        writeln!(f, "  allow: {}", allowed.join(" "))?;
        let denied: Vec<String> = s
            .denied
            .iter()
            .map(|(n, e)| format!("{n}={}", sys::errno_name(*e)))
            .collect();
        writeln!(f, "  deny: {}", denied.join(" "))
    }
}
