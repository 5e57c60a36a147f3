//! The post-clone half of a launch: the sandbox init (PID 1 of the new pid
//! namespace) and the plugin process it forks.
//!
//! Everything here runs in a fork-like copy of a possibly multi-threaded parent, so
//! it is one flat, numbered sequence of raw syscalls over data prepared by the
//! parent (`Plan`, `ChildArgs`): no allocation, no locks, no logging, no panics.
//! A failed step is written to the report pipe as `(step, errno)` before `_exit`.
//! Nothing here decides policy.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::plan::{CgroupPlan, MountOp, Plan, HOSTNAME, STAGING};
use super::seccomp::MEMFD_FD;
use super::Step;
use crate::sys::{self, caps, landlock as ll, mount, proc};

/// Fd numbers inside the sandbox.
pub(crate) const REPORT_FD: RawFd = 5;
const RULESET_FD: RawFd = 6;

/// Record kinds on the report pipe: `[kind, a, b]` as three native-endian u32s.
pub(crate) const REC_SETUP_FAILED: u32 = 1;
pub(crate) const REC_EXITED: u32 = 2;
pub(crate) const REC_SIGNALED: u32 = 3;

/// Raw data for the child, prepared by the parent before clone. Every fd here
/// is close-on-exec and numbered above [`RULESET_FD`].
pub(crate) struct ChildArgs<'a> {
    pub plan: &'a Plan,
    pub sync_read: RawFd,
    pub sync_write: RawFd,
    pub report: RawFd,
    pub bundle_dir: RawFd,
    /// (source, destination, close-on-exec) in order.
    pub moves: [(RawFd, RawFd, bool); 7],
    pub moves_len: usize,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub signals: libc::sigset_t,
    pub empty_mask: libc::sigset_t,
    /// warden's argument area and the init's command line to write there
    /// (`warden-init ID`); `None` when the area could not be read.
    pub title: Option<(proc::ArgArea, &'a [u8])>,
}

fn report(fd: RawFd, kind: u32, a: u32, b: u32) {
    let mut rec = [0u8; 12];
    rec[0..4].copy_from_slice(&kind.to_ne_bytes());
    rec[4..8].copy_from_slice(&a.to_ne_bytes());
    rec[8..12].copy_from_slice(&b.to_ne_bytes());
    let _ = proc::write(fd, &rec);
}

fn fail(fd: RawFd, step: Step, e: io::Error) -> ! {
    report(
        fd,
        REC_SETUP_FAILED,
        step as u32,
        e.raw_os_error().unwrap_or(0) as u32,
    );
    proc::exit_now(125)
}

/// Writes `/oldroot/proc/self/fd/<fd>` into `buf` without allocating.
fn fd_link(buf: &mut [u8; 48], fd: RawFd) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/oldroot/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut k) = (fd.unsigned_abs(), 0);
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = PREFIX.len();
    while k > 0 {
        k -= 1;
        buf[at] = digits[k];
        at += 1;
    }
    buf[at] = 0;
    match std::ffi::CStr::from_bytes_until_nul(&buf[..]) {
        Ok(c) => c,
        Err(_) => c"/",
    }
}

/// The sandbox init. Never returns.
pub(crate) fn init(a: &ChildArgs<'_>) -> ! {
    let mut rep = a.report;
    macro_rules! step {
        ($step:expr, $e:expr) => {
            if let Err(e) = $e {
                fail(rep, $step, e)
            }
        };
    }
    let p = a.plan;

    // 1. Die with the parent, then close the parent-already-dead race: the parent
    //    writes one byte after the id maps; EOF means it died before that.
    let _ = proc::close(a.sync_write);
    step!(Step::Pdeathsig, proc::set_pdeathsig(libc::SIGKILL));
    let mut go = [0u8; 1];
    match proc::read(a.sync_read, &mut go) {
        Ok(1) => {}
        _ => proc::exit_now(125),
    }
    // Every signal at its default: the init must see its children exit (an
    // inherited SIG_IGN for SIGCHLD reaps them unseen), and the plugin inherits
    // the dispositions (an ignored SIGINT would be ignored by the plugin, and
    // the SIGINT warden forwards lost).
    step!(Step::Sigmask, proc::default_signals());
    // A name of its own: a copy of warden, it was `warden` in ps and top, and
    // `killall warden` or `pkill -x warden` signalled every sandbox init too.
    // Its command line was warden's as well (`pkill -f "warden serve"` stopped
    // every plugin by signal): it says `warden-init ID` instead. Cosmetic, so a
    // failure is no reason to stop.
    let _ = proc::set_name(c"warden-init");
    if let Some((area, title)) = a.title {
        // SAFETY: this child of clone has one thread; `area` was read in the
        // parent, whose argument area the child has a copy of.
        unsafe { proc::set_cmdline(area, title) };
    }

    // Open the bundle by path while we still have the creator's host identity (it
    // may sit in a directory only that identity can traverse) and insist it is the
    // directory that was verified.
    let bundle = match sys::landlock::open_path(&p.bundle_path) {
        Ok(fd) => fd,
        Err(e) => fail(rep, Step::BindBundle, e),
    };
    match (mount::fd_dev_ino(bundle), mount::fd_dev_ino(a.bundle_dir)) {
        (Ok(have), Ok(want)) if have == want => {}
        (Err(e), _) | (_, Err(e)) => fail(rep, Step::BindBundle, e),
        _ => fail(
            rep,
            Step::BindBundle,
            io::Error::from_raw_os_error(libc::ESTALE),
        ),
    }
    let mut bundle_src_buf = [0u8; 48];
    let bundle_src = fd_link(&mut bundle_src_buf, bundle);

    // 2. Namespaces were created by clone and the parent wrote the id maps; take
    //    the plugin's ids now, so that what we create below has a mapped owner.
    //    The ns capabilities survive (uid 0 is not mapped, so no setuid fix-up).
    if p.ids.privileged {
        step!(Step::Setgroups, caps::clear_groups());
    }
    step!(Step::Setresgid, caps::setresgid(p.ids.inside_gid));
    step!(Step::Setresuid, caps::setresuid(p.ids.inside_uid));
    // Changing credentials cleared the parent-death signal: set it again, then
    // check the parent did not die meanwhile (it holds the sync pipe's write end
    // for the sandbox's whole life, so a hang-up means it is gone).
    step!(Step::Pdeathsig, proc::set_pdeathsig(libc::SIGKILL));
    let mut pfd = [libc::pollfd {
        fd: a.sync_read,
        events: libc::POLLIN,
        revents: 0,
    }];
    match proc::poll(&mut pfd, 0) {
        Ok(_) if pfd[0].revents & (libc::POLLHUP | libc::POLLERR) == 0 => {}
        _ => proc::exit_now(125),
    }

    // 3. Mounts.
    step!(
        Step::MountPrivate,
        mount::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
    );
    step!(
        Step::MountRoot,
        mount::mount(
            Some(c"tmpfs"),
            STAGING,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"size=64k,nr_inodes=16,mode=0755"),
        )
    );
    step!(Step::PivotRoot, mount::chdir(STAGING));
    step!(Step::Mkdir, mount::mkdir(c"newroot", 0o755));
    step!(Step::Mkdir, mount::mkdir(c"oldroot", 0o755));
    step!(
        Step::MountRoot,
        mount::mount(
            Some(c"tmpfs"),
            c"newroot",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"size=1m,nr_inodes=256,mode=0755"),
        )
    );
    step!(Step::PivotRoot, mount::pivot_root(c".", c"oldroot"));
    step!(Step::PivotRoot, mount::chdir(c"/"));
    for op in &p.mounts {
        match op {
            MountOp::Mkdir { target } => step!(Step::Mkdir, mount::mkdir(target, 0o755)),
            MountOp::Mkfile { target } => {
                step!(Step::Mknod, mount::mknod(target, libc::S_IFREG | 0o444, 0))
            }
            MountOp::Symlink { to, target } => step!(Step::Symlink, mount::symlink(to, target)),
            MountOp::Bind {
                source,
                target,
                keep,
                writable,
            } => {
                step!(
                    Step::Bind,
                    mount::mount(
                        source.as_deref(),
                        target,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None
                    )
                );
                if !writable {
                    step!(
                        Step::RemountRo,
                        mount::mount(
                            None,
                            target,
                            None,
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep,
                            None
                        )
                    );
                    // The remount covers the top mount only: host mounts beneath
                    // it (a tmpfs under /usr, say) come in by MS_REC and are made
                    // read-only here too.
                    step!(Step::RemountRo, mount::make_tree_readonly(target));
                }
            }
            MountOp::BindBundle { target, keep } => {
                step!(
                    Step::BindBundle,
                    mount::mount(
                        Some(bundle_src),
                        target,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None
                    )
                );
                step!(
                    Step::RemountRo,
                    mount::mount(
                        None,
                        target,
                        None,
                        libc::MS_REMOUNT
                            | libc::MS_BIND
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | keep,
                        None
                    )
                );
                step!(Step::RemountRo, mount::make_tree_readonly(target));
            }
            MountOp::Tmpfs {
                target,
                flags,
                data,
            } => step!(
                Step::MountTmpfs,
                mount::mount(Some(c"tmpfs"), target, Some(c"tmpfs"), *flags, Some(data))
            ),
            MountOp::Proc { target } => step!(
                Step::MountProc,
                mount::mount(
                    Some(c"proc"),
                    target,
                    Some(c"proc"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    // Only processes the plugin may ptrace are shown: not the
                    // init, a copy of warden whose command line names the
                    // operator's paths.
                    Some(c"hidepid=ptraceable")
                )
            ),
            MountOp::RemountRo { target, flags } => step!(
                Step::RemountRo,
                mount::mount(
                    None,
                    target,
                    None,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
                    None
                )
            ),
        }
    }
    step!(
        Step::UmountOldRoot,
        mount::umount2(c"/oldroot", libc::MNT_DETACH)
    );
    step!(Step::PivotRoot, mount::chdir(c"/newroot"));
    step!(Step::PivotRoot, mount::pivot_root(c".", c"."));
    step!(Step::UmountOldRoot, mount::umount2(c".", libc::MNT_DETACH));
    step!(Step::PivotRoot, mount::chdir(c"/"));
    step!(
        Step::RemountRootRo,
        mount::mount(
            None,
            c"/",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None
        )
    );

    // 4. The cgroups the parent made and limited meanwhile: it sends their `tasks`
    //    files, and we move ourselves in (this one thread, "0" = the caller; see
    //    `CgroupDirs::prepare`). Before the rlimits: RLIMIT_NOFILE must not stop the
    //    descriptors from arriving (we still hold copies of all of the parent's).
    //    Then rlimits, hostname, and the cgroup namespace, rooted in our cgroup.
    if matches!(p.cgroup, CgroupPlan::V1 { .. }) {
        let mut tasks = [-1; 2];
        match sys::seqpacket::recv_fds_blocking(a.sync_read, &mut go, &mut tasks) {
            Ok((1, 2)) if go[0] == b'2' => {}
            // The parent is gone or failed (it reports its own error).
            Ok((0, _)) => proc::exit_now(125),
            Err(e) if e.raw_os_error() != Some(libc::EMSGSIZE) => proc::exit_now(125),
            Err(e) => fail(rep, Step::Cgroup, e),
            Ok(_) => fail(
                rep,
                Step::Cgroup,
                io::Error::from_raw_os_error(libc::EPROTO),
            ),
        }
        for fd in tasks {
            match proc::write(fd, b"0") {
                Ok(1) => {}
                Ok(_) => fail(rep, Step::Cgroup, io::Error::from_raw_os_error(libc::EIO)),
                Err(e) => fail(rep, Step::Cgroup, e),
            }
            let _ = proc::close(fd);
        }
    }
    let _ = proc::close(a.sync_read);
    for (res, value, _, _) in &p.rlimits {
        step!(Step::Setrlimit, proc::setrlimit(*res, *value));
    }
    // SCHED_BATCH, inherited by the plugin (seccomp keeps it from changing it):
    // its wake-ups, such as a reply arriving from warden's event loop, do not
    // preempt whatever runs on the CPU, so the loop sends a turn's replies before
    // the plugins it woke run. Its CPU share is unchanged.
    step!(
        Step::SchedPolicy,
        sys::sched::set_policy(0, sys::sched::Policy::Batch)
    );
    // A session of its own: no controlling terminal (an inherited tty on fd 1 or
    // 2 is then only a file to write to: no job control, no terminal signals), and
    // out of warden's process group.
    step!(Step::Setsid, proc::setsid());
    step!(Step::Sethostname, sys::ns::sethostname(HOSTNAME.as_bytes()));
    step!(Step::UnshareCgroup, sys::ns::unshare(libc::CLONE_NEWCGROUP));

    // 5. fds: 0 /dev/null, 1 and 2 stdout/stderr, 3 the broker socket, 4 the memfd,
    //    5 the report pipe, 6 the landlock ruleset; everything else closed.
    for (src, dst, cloexec) in a.moves.iter().take(a.moves_len) {
        let flags = if *cloexec { libc::O_CLOEXEC } else { 0 };
        step!(Step::Dup, proc::dup3(*src, *dst, flags));
        if *dst == REPORT_FD {
            rep = REPORT_FD;
        }
    }
    step!(
        Step::CloseRange,
        proc::close_range(RULESET_FD as u32 + 1, u32::MAX)
    );

    // 6. Environment: prepared by the parent (`envp`); nothing else is inherited.

    // 7. Capabilities: bounding, ambient, then effective/permitted/inheritable.
    for cap in 0..=p.cap_last {
        step!(
            Step::CapbsetDrop,
            caps::capbset_drop(libc::c_ulong::from(cap))
        );
    }
    step!(Step::AmbientClear, caps::ambient_clear_all());
    step!(Step::Capset, caps::capset_empty());
    step!(Step::NoNewPrivs, caps::set_no_new_privs());
    // The init is a copy of warden's address space: keep the plugin (same uid)
    // out of /proc/1/mem and friends. Unprivileged, no credential change did this
    // for us. The plugin's exec makes it dumpable again for itself only.
    step!(Step::Dumpable, caps::set_not_dumpable());

    // 8. Landlock: add the sandbox-only filesystems, then restrict.
    for (path, access) in [
        (c"/tmp", super::landlock::TMP_ACCESS),
        (c"/proc", super::landlock::PROC_ACCESS),
    ] {
        let fd = match ll::open_path(path) {
            Ok(fd) => fd,
            Err(e) => fail(rep, Step::LandlockAddRule, e),
        };
        let access = access & super::landlock::fs_rights(p.landlock_abi);
        step!(
            Step::LandlockAddRule,
            ll::add_path_rule(RULESET_FD, fd, access)
        );
        let _ = proc::close(fd);
    }
    step!(Step::LandlockRestrict, ll::restrict_self(RULESET_FD));
    let _ = proc::close(RULESET_FD);
    // The plugin will enter a nested domain that only adds signal and
    // abstract-socket scoping: the init stays outside it, so the plugin can neither
    // signal its init nor reach an abstract socket the init could hold. Created
    // here, before seccomp, at RULESET_FD (the lowest free fd once it is closed).
    let scoped = super::landlock::scopes(p.landlock_abi);
    if scoped != 0 {
        match ll::create_ruleset(0, 0, scoped, p.landlock_abi) {
            Ok(fd) if fd.as_raw_fd() == RULESET_FD => std::mem::forget(fd),
            Ok(fd) => {
                step!(
                    Step::Dup,
                    proc::dup3(fd.as_raw_fd(), RULESET_FD, libc::O_CLOEXEC)
                );
                drop(fd);
            }
            Err(e) => fail(rep, Step::Landlock, e),
        }
    }

    // 9. seccomp.
    step!(Step::Seccomp, sys::seccomp::set_filter(&p.seccomp.program));

    // Fork the plugin with the init's signals blocked, so none is lost.
    step!(
        Step::Sigmask,
        proc::sigprocmask(libc::SIG_BLOCK, &a.signals).map(drop)
    );
    // vfork-style: the plugin borrows our memory until its exec (nothing to copy,
    // and nothing for its exec to tear down) while we wait; after that it shares
    // nothing with us.
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); PLUGIN_STACK];
    // SAFETY: `plugin_entry` only makes raw syscalls, reads `a` (which lives in our
    // frame's caller and is not changed while we are suspended), writes only its
    // stack, and leaves by exec or _exit; `stack` is this frame's and unused by us.
    let forked = unsafe {
        sys::ns::clone_vfork(
            &mut stack,
            plugin_entry,
            a as *const ChildArgs<'_> as *mut libc::c_void,
            0,
        )
    };
    let plugin = match forked {
        Err(e) => fail(rep, Step::Fork, e),
        Ok(pid) => pid,
    };
    // The init keeps only the report pipe.
    let _ = proc::close_range(0, REPORT_FD as u32 - 1);
    let _ = proc::close(RULESET_FD);
    reap_loop(a, plugin)
}

/// The plugin's stack until its exec (it runs a few syscalls, then execveat).
const PLUGIN_STACK: usize = 64 * 1024;

extern "C" fn plugin_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&ChildArgs` that `init` passed to `clone_vfork`; init
    // is suspended (CLONE_VFORK) until we exec or exit, so it is alive and unchanged.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    plugin(a)
}

/// The plugin process: restore signal state, then 10. execveat the memfd. It runs
/// in the init's memory until the exec (see `clone_vfork`): raw syscalls only.
fn plugin(a: &ChildArgs<'_>) -> ! {
    // Dispositions are the init's, all at their defaults (see `init`).
    if let Err(e) = proc::sigprocmask(libc::SIG_SETMASK, &a.empty_mask) {
        fail(REPORT_FD, Step::Sigmask, e)
    }
    if let Err(e) = proc::set_pdeathsig(libc::SIGKILL) {
        fail(REPORT_FD, Step::Pdeathsig, e)
    }
    if super::landlock::scopes(a.plan.landlock_abi) != 0 {
        if let Err(e) = ll::restrict_self(RULESET_FD) {
            fail(REPORT_FD, Step::LandlockRestrict, e)
        }
        let _ = proc::close(RULESET_FD);
    }
    // SAFETY: argv and envp are NULL-terminated pointer arrays into CStrings the
    // parent prepared before clone; this address space (the init's, which is
    // suspended until we exec) is a copy of the parent's that nobody frees.
    let e = unsafe { proc::execveat_empty_path(MEMFD_FD as RawFd, a.argv, a.envp) };
    fail(REPORT_FD, Step::Execveat, e)
}

/// PID 1: forward SIGTERM/SIGINT/SIGHUP to the plugin, reap everything, and when
/// the plugin is gone report its status and exit (the kernel then kills whatever
/// is left in the pid namespace).
fn reap_loop(a: &ChildArgs<'_>, plugin: libc::pid_t) -> ! {
    loop {
        match proc::sigwaitinfo(&a.signals) {
            Ok(libc::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = proc::kill(plugin, sig);
            }
        }
        while let Ok(Some((pid, status))) = proc::wait_nohang(-1) {
            if pid == plugin {
                if libc::WIFSIGNALED(status) {
                    report(REPORT_FD, REC_SIGNALED, libc::WTERMSIG(status) as u32, 0);
                } else {
                    report(REPORT_FD, REC_EXITED, libc::WEXITSTATUS(status) as u32, 0);
                }
                proc::exit_now(0);
            }
        }
    }
}
