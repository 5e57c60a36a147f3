//! Launching a verified bundle confined: the plan (parent side), the child
//! sequence and sandbox init, landlock and seccomp, and the [`Sandbox`] handle.
//!
//! Public API: [`Plan::new`] (decide everything, fail closed on missing kernel
//! features), [`Sandbox::spawn`] (clone + child sequence), then [`Sandbox::wait`],
//! [`Sandbox::kill`], [`Sandbox::terminate`], and the supervisor's end of the
//! broker socket. This module does not verify bundles (`crate::bundle`), read
//! operator policy (`crate::policy`) or speak the broker protocol (later:
//! `crate::broker`); raw syscalls live in `crate::sys`.

mod child;
pub mod landlock;
pub mod plan;
pub mod seccomp;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

pub use plan::{CgroupPlan, Config, IdMap, Plan, BUNDLE_PATH};
pub use seccomp::SeccompError;

use crate::bundle::VerifiedBundle;
use crate::sys::{self, errno_name};

/// A numbered step of the launch sequence, named in `sandbox: <step>: <ERRNO>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Socketpair = 1,
    Pipe,
    Landlock,
    Clone,
    UidMap,
    GidMap,
    Setgroups,
    Cgroup,
    Sync,
    UnshareCgroup,
    Pdeathsig,
    MountPrivate,
    MountRoot,
    Mkdir,
    Mknod,
    Symlink,
    Bind,
    BindBundle,
    RemountRo,
    MountTmpfs,
    MountProc,
    PivotRoot,
    UmountOldRoot,
    RemountRootRo,
    Setrlimit,
    Sethostname,
    Dup,
    CloseRange,
    Setresgid,
    Setresuid,
    CapbsetDrop,
    AmbientClear,
    Capset,
    NoNewPrivs,
    Dumpable,
    LandlockAddRule,
    LandlockRestrict,
    Seccomp,
    Sigmask,
    Fork,
    Execveat,
    SchedPolicy,
    Setsid,
}

impl Step {
    const ALL: [Step; 43] = [
        Step::Socketpair,
        Step::Pipe,
        Step::Landlock,
        Step::Clone,
        Step::UidMap,
        Step::GidMap,
        Step::Setgroups,
        Step::Cgroup,
        Step::Sync,
        Step::UnshareCgroup,
        Step::Pdeathsig,
        Step::MountPrivate,
        Step::MountRoot,
        Step::Mkdir,
        Step::Mknod,
        Step::Symlink,
        Step::Bind,
        Step::BindBundle,
        Step::RemountRo,
        Step::MountTmpfs,
        Step::MountProc,
        Step::PivotRoot,
        Step::UmountOldRoot,
        Step::RemountRootRo,
        Step::Setrlimit,
        Step::Sethostname,
        Step::Dup,
        Step::CloseRange,
        Step::Setresgid,
        Step::Setresuid,
        Step::CapbsetDrop,
        Step::AmbientClear,
        Step::Capset,
        Step::NoNewPrivs,
        Step::Dumpable,
        Step::LandlockAddRule,
        Step::LandlockRestrict,
        Step::Seccomp,
        Step::Sigmask,
        Step::Fork,
        Step::Execveat,
        Step::SchedPolicy,
        Step::Setsid,
    ];

    fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == n)
    }

    /// The name users see.
    pub fn name(self) -> &'static str {
        match self {
            Step::Socketpair => "socketpair",
            Step::Pipe => "pipe",
            Step::Landlock => "landlock_create_ruleset",
            Step::Clone => "clone",
            Step::UidMap => "uid_map",
            Step::GidMap => "gid_map",
            Step::Setgroups => "setgroups",
            Step::Cgroup => "cgroup",
            Step::Sync => "sync",
            Step::UnshareCgroup => "unshare_cgroup",
            Step::Pdeathsig => "pdeathsig",
            Step::MountPrivate => "mount_private",
            Step::MountRoot => "mount_root_tmpfs",
            Step::Mkdir => "mkdir",
            Step::Mknod => "mknod",
            Step::Symlink => "symlink",
            Step::Bind => "bind_mount",
            Step::BindBundle => "bind_bundle",
            Step::RemountRo => "remount_ro",
            Step::MountTmpfs => "mount_tmpfs",
            Step::MountProc => "mount_proc",
            Step::PivotRoot => "pivot_root",
            Step::UmountOldRoot => "umount_old_root",
            Step::RemountRootRo => "remount_root_ro",
            Step::Setrlimit => "setrlimit",
            Step::Sethostname => "sethostname",
            Step::Dup => "dup3",
            Step::CloseRange => "close_range",
            Step::Setresgid => "setresgid",
            Step::Setresuid => "setresuid",
            Step::CapbsetDrop => "capbset_drop",
            Step::AmbientClear => "ambient_clear",
            Step::Capset => "capset",
            Step::NoNewPrivs => "no_new_privs",
            Step::Dumpable => "set_dumpable",
            Step::LandlockAddRule => "landlock_add_rule",
            Step::LandlockRestrict => "landlock_restrict_self",
            Step::Seccomp => "seccomp",
            Step::Sigmask => "sigprocmask",
            Step::Fork => "fork",
            Step::Execveat => "execveat",
            Step::SchedPolicy => "sched_setscheduler",
            Step::Setsid => "setsid",
        }
    }
}

/// Why a sandbox could not be planned, started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A required kernel layer is missing: the launch is refused.
    #[error("sandbox: kernel feature missing: {feature}: {detail}")]
    Missing {
        feature: &'static str,
        detail: String,
    },
    /// Preparing the plan failed (a host path could not be inspected).
    #[error("sandbox: prepare {what}: {source}")]
    Prepare { what: String, source: io::Error },
    #[error("{0}")]
    Seccomp(SeccompError),
    /// A numbered step of the launch sequence failed.
    #[error("sandbox: {}: {}", .step.name(), errno_display(*.errno))]
    Setup { step: Step, errno: i32 },
    /// Waiting for or signalling the sandbox failed.
    #[error("sandbox: {what}: {}", errno_name(.source.raw_os_error().unwrap_or(0)))]
    Control {
        what: &'static str,
        source: io::Error,
    },
}

impl SandboxError {
    fn setup(step: Step, e: io::Error) -> SandboxError {
        SandboxError::Setup {
            step,
            errno: e.raw_os_error().unwrap_or(0),
        }
    }
}

/// Where the plugin's stdout or stderr goes.
#[derive(Debug)]
pub enum Output {
    /// The caller's own fd 1 or 2 (for `warden run`).
    Inherit,
    /// This fd (e.g. a pipe the supervisor reads).
    Fd(OwnedFd),
}

/// The plugin's stdout and stderr; stdin is always /dev/null.
#[derive(Debug)]
pub struct Stdio {
    pub stdout: Output,
    pub stderr: Output,
}

impl Stdio {
    pub fn inherit() -> Stdio {
        Stdio {
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }
}

/// How the plugin ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// A running sandbox: its init's pid and pidfd, and the supervisor's end of the
/// broker socket. Dropping it kills and reaps the sandbox if still running.
#[derive(Debug)]
pub struct Sandbox {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    socket: Option<OwnedFd>,
    report: OwnedFd,
    cgroups: Vec<PathBuf>,
    status: Option<ExitStatus>,
    stale_cgroups: u32,
    /// Held open for the sandbox's life: the child checks it for a hang-up to
    /// learn that we died before its parent-death signal was (re)armed.
    _alive: OwnedFd,
}

const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_PIDFD
    | libc::SIGCHLD;

/// Fds handed to the child are renumbered above this first, so that moving them
/// into 0..=6 never clobbers one another.
const HIGH_FD: i32 = 10;

impl Sandbox {
    /// Launches `bundle` as `plan` says. `plan` must have been made from `bundle`.
    ///
    /// The sandbox's parent-death signal is tied to the calling *thread*: call this
    /// from a thread that lives as long as the sandbox should (the supervisor's
    /// event-loop thread, or the main thread of `warden run`).
    pub fn spawn(
        plan: &Plan,
        bundle: &VerifiedBundle,
        stdio: Stdio,
    ) -> Result<Sandbox, SandboxError> {
        let (sup, plug) =
            sys::seqpacket::pair().map_err(|e| SandboxError::setup(Step::Socketpair, e))?;
        let (report_r, report_w) =
            sys::socket::pipe(0).map_err(|e| SandboxError::setup(Step::Pipe, e))?;
        // The sync channel is a socketpair so that writing to a child that already
        // failed is EPIPE, not SIGPIPE; the child reads it like a pipe.
        let (sync_r, sync_w) =
            sys::seqpacket::pair().map_err(|e| SandboxError::setup(Step::Socketpair, e))?;
        let ruleset = landlock::build(plan.landlock_abi, &plan.landlock_rules)
            .map_err(|e| SandboxError::setup(Step::Landlock, e))?;
        let high = |fd: BorrowedFd<'_>| {
            sys::proc::dup_cloexec_above(fd, HIGH_FD).map_err(|e| SandboxError::setup(Step::Dup, e))
        };
        let mut keep: Vec<OwnedFd> = Vec::with_capacity(8);
        let mut moves = [(0, 0, false); 7];
        let mut n = 0;
        let mut push = |fd: OwnedFd, dst: i32, cloexec: bool, keep: &mut Vec<OwnedFd>| {
            moves[n] = (fd.as_raw_fd(), dst, cloexec);
            n += 1;
            keep.push(fd);
        };
        push(high(plan.stdin.as_fd())?, 0, false, &mut keep);
        if let Output::Fd(fd) = &stdio.stdout {
            push(high(fd.as_fd())?, 1, false, &mut keep);
        }
        if let Output::Fd(fd) = &stdio.stderr {
            push(high(fd.as_fd())?, 2, false, &mut keep);
        }
        push(high(plug.as_fd())?, 3, false, &mut keep);
        push(
            high(bundle.artifact_fd())?,
            seccomp::MEMFD_FD as i32,
            true,
            &mut keep,
        );
        let report_high = high(report_w.as_fd())?;
        let report_raw = report_high.as_raw_fd();
        push(report_high, child::REPORT_FD, true, &mut keep);
        push(high(ruleset.as_fd())?, 6, true, &mut keep);
        drop((report_w, plug));

        let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        // Read here, in the parent: the child must not allocate.
        let title = format!("warden-init {}", plan.id);
        let area = sys::proc::arg_area().ok();
        let args = child::ChildArgs {
            plan,
            sync_read: sync_r.as_raw_fd(),
            sync_write: sync_w.as_raw_fd(),
            report: report_raw,
            bundle_dir: bundle.dir_fd().as_raw_fd(),
            moves,
            moves_len: n,
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            signals: sys::proc::sigset(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP]),
            empty_mask: sys::proc::sigset(&[]),
            title: area.map(|a| (a, title.as_bytes())),
        };

        // SAFETY: the child runs only `child::init`, which makes raw syscalls over
        // the prepared `args` and leaves with `_exit`/exec; it never returns here.
        let forked = unsafe { sys::ns::clone_fork(CLONE_FLAGS as libc::c_ulong) }
            .map_err(|e| SandboxError::setup(Step::Clone, e))?;
        let (pid, pidfd) = match forked {
            sys::ns::Forked::Child => child::init(&args),
            sys::ns::Forked::Parent { pid, pidfd } => {
                (pid, pidfd.expect("CLONE_PIDFD was asked for"))
            }
        };
        drop(sync_r);
        drop(keep);
        drop(ruleset);
        let mut sb = Sandbox {
            pid,
            pidfd,
            socket: Some(sup),
            report: report_r,
            cgroups: Vec::new(),
            status: None,
            stale_cgroups: 0,
            _alive: sync_w,
        };
        // Id maps, then "go"; the cgroups are made while the child builds its
        // mounts, and their `tasks` files follow with a second message, which the
        // child waits for at step 4. A child that already failed a step has closed
        // its end: EPIPE then means "see the report", which `wait` reads.
        let go = |sb: &Sandbox, byte: &[u8], fds: &[BorrowedFd<'_>]| match sys::seqpacket::send(
            sb._alive.as_fd(),
            byte,
            fds,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => Ok(false),
            Err(e) => Err(SandboxError::setup(Step::Sync, e)),
            Ok(()) => Ok(true),
        };
        let r = sb.write_id_maps(plan).and_then(|()| {
            if go(&sb, b"1", &[])? && matches!(plan.cgroup, CgroupPlan::V1 { .. }) {
                let mut dirs = CgroupDirs::default();
                let prepared = dirs.prepare(plan);
                sb.cgroups = std::mem::take(&mut dirs.0);
                let tasks = prepared?;
                let fds: Vec<BorrowedFd<'_>> = tasks.iter().map(AsFd::as_fd).collect();
                go(&sb, b"2", &fds)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            // The child may have failed a step first (and our step failed because
            // it was gone): its report is the cause worth showing.
            let _ = sb.kill();
            return Err(match sb.wait() {
                Err(child @ SandboxError::Setup { .. }) => child,
                _ => e,
            });
        }
        Ok(sb)
    }

    /// Parent-side step 2: the id maps.
    fn write_id_maps(&mut self, plan: &Plan) -> Result<(), SandboxError> {
        let ids = plan.ids;
        let proc_file = |name: &str| format!("/proc/{}/{name}", self.pid);
        if !ids.privileged {
            std::fs::write(proc_file("setgroups"), "deny")
                .map_err(|e| SandboxError::setup(Step::Setgroups, e))?;
        }
        std::fs::write(
            proc_file("uid_map"),
            format!("{} {} 1\n", ids.inside_uid, ids.host_uid),
        )
        .map_err(|e| SandboxError::setup(Step::UidMap, e))?;
        std::fs::write(
            proc_file("gid_map"),
            format!("{} {} 1\n", ids.inside_gid, ids.host_gid),
        )
        .map_err(|e| SandboxError::setup(Step::GidMap, e))?;
        Ok(())
    }

    /// The pid of the sandbox init, in the caller's pid namespace.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The init's pidfd: readable when the sandbox has exited (for an event loop).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The supervisor's end of the broker socket (SOCK_SEQPACKET), until taken.
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(AsFd::as_fd)
    }

    /// Takes ownership of the supervisor's end of the broker socket.
    pub fn take_socket(&mut self) -> Option<OwnedFd> {
        self.socket.take()
    }

    /// SIGKILL to the init: the kernel then kills everything in the sandbox.
    pub fn kill(&self) -> Result<(), SandboxError> {
        self.signal(libc::SIGKILL)
    }

    /// SIGTERM to the init, which forwards it to the plugin.
    pub fn terminate(&self) -> Result<(), SandboxError> {
        self.signal(libc::SIGTERM)
    }

    /// `sig` (SIGTERM, SIGINT or SIGHUP: the ones the init passes on) to the
    /// init, which forwards it to the plugin as itself.
    pub fn forward(&self, sig: libc::c_int) -> Result<(), SandboxError> {
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => self.signal(sig),
            _ => self.terminate(),
        }
    }

    fn signal(&self, sig: libc::c_int) -> Result<(), SandboxError> {
        if self.status.is_some() {
            return Ok(());
        }
        match sys::proc::pidfd_send_signal(self.pidfd.as_fd(), sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(|source| SandboxError::Control {
                what: "pidfd_send_signal",
                source,
            }),
        }
    }

    /// Blocks until the sandbox has exited; returns the plugin's status, or the
    /// setup step that failed.
    pub fn wait(&mut self) -> Result<ExitStatus, SandboxError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let init = sys::proc::waitid_pidfd(self.pidfd.as_fd()).map_err(|source| {
            SandboxError::Control {
                what: "waitid",
                source,
            }
        })?;
        self.remove_cgroups();
        // Every writer of the report pipe is gone now: read to EOF.
        let mut buf = [0u8; 12 * 8];
        let mut len = 0;
        while len < buf.len() {
            match sys::proc::read(self.report.as_raw_fd(), &mut buf[len..]) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            }
        }
        let mut status = match init {
            sys::proc::Exit::Code(c) => ExitStatus::Code(c),
            sys::proc::Exit::Signal(s) => ExitStatus::Signal(s),
        };
        for rec in buf[..len - len % 12].chunks(12) {
            let word =
                |i: usize| u32::from_ne_bytes(rec[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            match word(0) {
                child::REC_SETUP_FAILED => {
                    self.status = Some(ExitStatus::Code(125));
                    return Err(SandboxError::Setup {
                        step: Step::from_u32(word(1)).unwrap_or(Step::Sync),
                        errno: word(2) as i32,
                    });
                }
                child::REC_EXITED => status = ExitStatus::Code(word(1) as i32),
                child::REC_SIGNALED => status = ExitStatus::Signal(word(1) as i32),
                _ => {}
            }
        }
        if len == 0 && init == sys::proc::Exit::Code(125) {
            // The init left before "go": the parent side vanished (cannot happen
            // while we are alive) or the sync read failed.
            self.status = Some(status);
            return Err(SandboxError::Setup {
                step: Step::Sync,
                errno: libc::EPIPE,
            });
        }
        self.status = Some(status);
        Ok(status)
    }

    /// Whether a per-sandbox cgroup could not be removed after exit (a later
    /// [`sweep_stale_cgroups`] will).
    pub fn left_stale_cgroups(&self) -> bool {
        self.stale_cgroups > 0
    }

    fn remove_cgroups(&mut self) {
        for dir in self.cgroups.drain(..) {
            // A v1 cgroup is removable once it has no tasks. When the kernel still
            // lists an exiting task, the directory is left for
            // `sweep_stale_cgroups`.
            if std::fs::remove_dir(&dir).is_err() {
                self.stale_cgroups += 1;
                STALE_CGROUPS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(dir);
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
        self.remove_cgroups();
    }
}

/// The per-sandbox cgroup directories being made; removed on drop unless taken
/// over by the [`Sandbox`] (which removes them after the sandbox exits).
#[derive(Default)]
struct CgroupDirs(Vec<PathBuf>);

/// Makes every per-launch cgroup name unique within this process.
static CGROUP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl CgroupDirs {
    /// Parent-side part of step 4 (cgroup v1 memory+pids): makes
    /// `<base>/<id>.<our pid>.<n>` in each hierarchy, writes its limit, and opens
    /// its `tasks` file for the init (sent over the sync socket), which writes "0"
    /// there to move itself in.
    ///
    /// Moving oneself (one thread, by `tasks`) is the one cgroup v1 migration that
    /// does not take the global threadgroup lock, so it does not wait for an RCU
    /// grace period (milliseconds; more under load) as writing another process's
    /// pid to `cgroup.procs` does. The write is permitted by the credentials the
    /// file was opened with (ours), not the init's. The init is single-threaded,
    /// so moving its one thread moves the whole process, and it does so before it
    /// starts the plugin.
    fn prepare(&mut self, plan: &Plan) -> Result<Vec<OwnedFd>, SandboxError> {
        let CgroupPlan::V1 {
            memory,
            pids,
            memory_bytes,
            pids_max,
        } = &plan.cgroup
        else {
            return Ok(Vec::new());
        };
        let err = |e| SandboxError::setup(Step::Cgroup, e);
        let hierarchies = [
            (memory, "memory.limit_in_bytes", *memory_bytes),
            (pids, "pids.max", *pids_max),
        ];
        'name: loop {
            let n = CGROUP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Plugin ids have no '.': see `cgroup_owner`.
            let name = format!("{}.{}.{n}", plan.id, std::process::id());
            for (base, _, _) in &hierarchies {
                std::fs::create_dir_all(base).map_err(err)?;
                let dir = base.join(&name);
                match std::fs::create_dir(&dir) {
                    // Left behind by a killed warden that had our pid: another name.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        for made in self.0.drain(..) {
                            let _ = std::fs::remove_dir(made);
                        }
                        continue 'name;
                    }
                    r => r.map_err(err)?,
                }
                self.0.push(dir);
            }
            break;
        }
        let mut tasks = Vec::with_capacity(2);
        for (dir, (_, file, value)) in self.0.iter().zip(&hierarchies) {
            std::fs::write(dir.join(file), value.to_string()).map_err(err)?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("tasks"))
                .map_err(err)?;
            tasks.push(OwnedFd::from(f));
        }
        Ok(tasks)
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for dir in self.0.drain(..) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The errno's symbolic name, or `errno <n>` when `sys::errno_name` does not know it.
fn errno_display(errno: i32) -> String {
    match errno_name(errno) {
        "EUNKNOWN" => format!("errno {errno}"),
        name => name.to_owned(),
    }
}

/// This process's per-sandbox cgroups that could not be removed when their
/// sandbox exited (the kernel still listed an exiting task), for the next sweep.
static STALE_CGROUPS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The pid of the warden that made the per-sandbox cgroup `name`
/// (`<id>.<warden pid>.<n>`), or None for another name.
fn cgroup_owner(name: &str) -> Option<u32> {
    let mut parts = name.split('.');
    let (_id, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || n.parse::<u64>().is_err() {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` runs the same program as this one (its `comm`): a
/// warden. A dead warden's pid taken by another process does not keep that
/// warden's leftover cgroups (it did while the pid existed).
fn is_warden(pid: u32) -> bool {
    let comm = |p: &str| std::fs::read(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// Removes leftover per-plugin cgroups: this process's that could not be removed
/// at exit, and those of warden processes that are gone (killed before they could
/// clean up). A live warden's are left alone: it makes each cgroup, empty, before
/// the sandbox init moves itself in. Only empty cgroups can be removed, so live
/// sandboxes are never touched. Best effort.
pub fn sweep_stale_cgroups() {
    STALE_CGROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|dir| std::fs::remove_dir(dir).is_err() && dir.exists());
    let me = std::process::id();
    for base in ["/sys/fs/cgroup/memory/warden", "/sys/fs/cgroup/pids/warden"] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let owner = e.file_name().to_str().and_then(cgroup_owner);
            if owner.is_some_and(|pid| pid == me || is_warden(pid)) {
                continue;
            }
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cgroup_owner, is_warden};

    #[test]
    fn only_a_live_process_of_this_program_owns_cgroups() {
        assert!(is_warden(std::process::id()));
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!is_warden(other.id()), "another program at the pid");
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(!is_warden(other.id()), "a pid nobody has");
    }

    #[test]
    fn cgroup_names_say_which_warden_made_them() {
        assert_eq!(cgroup_owner("probe.1234.0"), Some(1234));
        assert_eq!(cgroup_owner("my-plugin.77.12"), Some(77));
        // Older names (`<id>-<init pid>`) and anything else have no owner.
        assert_eq!(cgroup_owner("probe-1234"), None);
        assert_eq!(cgroup_owner("probe.1234"), None);
        assert_eq!(cgroup_owner("probe.x.1"), None);
        assert_eq!(cgroup_owner("probe.1.2.3"), None);
    }
}
