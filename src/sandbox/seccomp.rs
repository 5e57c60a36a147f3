//! The seccomp policy: loading `policies/seccomp/default.json` (embedded at build
//! time) and compiling it to a classic-BPF program for x86_64.
//!
//! The program checks the audit architecture (anything but x86_64 is killed), kills
//! x32 syscalls, then walks the allow entries in file order; entries with argument
//! conditions compare the low 32 bits of the argument. `deny` entries return their
//! errno; everything else returns `default_errno`. Installing the program is
//! `crate::sys::seccomp`'s job; nothing here runs in the child.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

/// The default policy, as shipped.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/seccomp/default.json");

/// The fd number at which the sandbox keeps the verified artifact's memfd until it
/// execs it; the only fd `execveat` accepts.
pub const MEMFD_FD: u32 = 4;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// Why a seccomp policy could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp policy: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("seccomp policy: unknown syscall {0:?}")]
    UnknownSyscall(String),
    #[error("seccomp policy: unknown symbolic value {0:?}")]
    UnknownValue(String),
    #[error("seccomp policy: unknown errno {0:?}")]
    UnknownErrno(String),
    #[error("seccomp policy: {0} is both allowed and denied")]
    Conflict(String),
    #[error("seccomp policy: argument index {0} out of range 0..6")]
    BadIndex(u8),
    #[error(
        "seccomp policy: an allow entry for {0} without `args` makes its other entries meaningless"
    )]
    Shadowed(String),
    #[error("seccomp policy: entry for {0} needs a non-empty comment")]
    NoComment(String),
    #[error("seccomp policy: program too long")]
    TooLong,
}

// Strings borrow from the policy text (copied only when they hold escapes): a
// launch compiles the policy, and this saves hundreds of allocations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile<'a> {
    #[allow(dead_code)]
    comment: serde::de::IgnoredAny,
    #[serde(borrow)]
    default_errno: Cow<'a, str>,
    #[serde(borrow)]
    allow: Vec<AllowEntry<'a>>,
    #[serde(borrow)]
    deny: Vec<DenyEntry<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry<'a> {
    #[serde(borrow)]
    syscall: Cow<'a, str>,
    #[serde(borrow)]
    comment: Cow<'a, str>,
    #[serde(default)]
    args: Vec<ArgCond>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyEntry<'a> {
    #[serde(borrow)]
    syscall: Cow<'a, str>,
    #[serde(borrow)]
    comment: Cow<'a, str>,
    #[serde(default, borrow)]
    errno: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgCond {
    index: u8,
    op: Op,
    value: Value,
    #[serde(default)]
    mask: Option<Value>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    MaskedEq,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Value {
    Num(u32),
    Sym(String),
}

impl Value {
    fn resolve(&self) -> Result<u32, SeccompError> {
        match self {
            Value::Num(n) => Ok(*n),
            Value::Sym(s) => Ok(match s.as_str() {
                "AF_UNIX" => libc::AF_UNIX as u32,
                "AF_INET" => libc::AF_INET as u32,
                "AF_INET6" => libc::AF_INET6 as u32,
                "TIOCSTI" => libc::TIOCSTI as u32,
                "TIOCLINUX" => libc::TIOCLINUX as u32,
                "AT_EMPTY_PATH" => libc::AT_EMPTY_PATH as u32,
                "MEMFD_FD" => MEMFD_FD,
                "CLONE_NEW_ANY" => CLONE_NEW_ANY,
                _ => return Err(SeccompError::UnknownValue(s.clone())),
            }),
        }
    }
}

/// Every namespace-creating clone flag (CLONE_NEWTIME shares its bit value with
/// CSIGNAL's range on clone(2) and is only usable via unshare/clone3, both denied).
const CLONE_NEW_ANY: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// One argument condition, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub mask: u32,
    pub value: u32,
    /// true: the masked argument must equal `value`; false: must differ.
    pub equal: bool,
}

/// A compiled policy: the BPF program and what it contains, for `--dry-run`.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The program, ready for `sys::seccomp::set_filter`.
    pub program: Vec<libc::sock_filter>,
    /// Allowed syscalls in policy order (names repeat when there are alternatives),
    /// with their argument conditions.
    pub allowed: Vec<(&'static str, Vec<Cond>)>,
    /// Explicitly denied syscalls and the errno each gets.
    pub denied: Vec<(&'static str, i32)>,
    /// The errno for anything not listed.
    pub default_errno: i32,
}

/// The shipped default policy, compiled once per process.
static DEFAULT: std::sync::OnceLock<Option<Filter>> = std::sync::OnceLock::new();

/// Compiles the shipped default policy (once per process; later calls copy it).
pub fn compile_default() -> Result<Filter, SeccompError> {
    match DEFAULT.get_or_init(|| compile(DEFAULT_POLICY).ok()) {
        Some(f) => Ok(f.clone()),
        // Only a broken build gets here: compile again for the error itself.
        None => compile(DEFAULT_POLICY),
    }
}

/// Starts compiling the default policy on a thread of its own, so that a later
/// [`compile_default`] (in `Plan::new`) finds it done: `warden run` overlaps it
/// with loading the trust store and verifying the bundle.
pub fn precompile_default() {
    let spawned = std::thread::Builder::new()
        .name("warden-seccomp".into())
        .spawn(|| drop(compile_default()));
    // Without the thread, `Plan::new` compiles it itself.
    drop(spawned);
}

/// Parses and compiles a policy in the `policies/seccomp/*.json` format.
pub fn compile(text: &str) -> Result<Filter, SeccompError> {
    let file: PolicyFile = serde_json::from_str(text)?;
    let default_errno = errno_value(&file.default_errno)?;
    // Group allow entries per syscall, keeping first-appearance order.
    let mut order: Vec<(&'static str, i64)> = Vec::new();
    let mut groups: BTreeMap<&'static str, Vec<Vec<Cond>>> = BTreeMap::new();
    let mut allowed = Vec::new();
    for e in &file.allow {
        if e.comment.trim().is_empty() {
            return Err(SeccompError::NoComment(e.syscall.to_string()));
        }
        let (name, nr) = lookup(&e.syscall)?;
        let mut conds = Vec::new();
        for c in &e.args {
            if c.index > 5 {
                return Err(SeccompError::BadIndex(c.index));
            }
            let value = c.value.resolve()?;
            let mask = match (&c.mask, c.op) {
                (Some(m), Op::MaskedEq) => m.resolve()?,
                (None, Op::MaskedEq) => return Err(SeccompError::UnknownValue("mask".into())),
                (Some(_), _) => return Err(SeccompError::UnknownValue("mask".into())),
                (None, _) => u32::MAX,
            };
            conds.push(Cond {
                index: c.index,
                mask,
                value,
                equal: c.op != Op::Ne,
            });
        }
        let g = groups.entry(name).or_default();
        if g.is_empty() {
            order.push((name, nr));
        }
        if g.iter().any(Vec::is_empty) || (!g.is_empty() && conds.is_empty()) {
            return Err(SeccompError::Shadowed(name.to_owned()));
        }
        g.push(conds.clone());
        allowed.push((name, conds));
    }
    let mut denied = Vec::new();
    for d in &file.deny {
        if d.comment.trim().is_empty() {
            return Err(SeccompError::NoComment(d.syscall.to_string()));
        }
        let (name, nr) = lookup(&d.syscall)?;
        if groups.contains_key(name) {
            return Err(SeccompError::Conflict(name.to_owned()));
        }
        let errno = match &d.errno {
            Some(e) => errno_value(e)?,
            None => libc::EPERM,
        };
        denied.push((name, nr, errno));
    }

    let mut p: Vec<libc::sock_filter> = vec![
        ld(OFF_ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL_PROCESS),
        ld(OFF_NR),
        jge(X32_SYSCALL_BIT, 0, 1),
        ret(RET_KILL_PROCESS),
    ];
    // One block per listed syscall, then a binary search over the syscall number
    // down to short chains of `jeq`, so that both the kernel's per-syscall cache
    // analysis and a filtered syscall cost O(log n) comparisons.
    let mut blocks: Vec<(u32, Vec<libc::sock_filter>)> = Vec::new();
    for (name, nr) in &order {
        let alts = &groups[name];
        let mut block: Vec<libc::sock_filter> = Vec::new();
        if alts.len() == 1 && alts[0].is_empty() {
            block.push(ret(RET_ALLOW));
        } else {
            for conds in alts {
                // Each condition: load, mask, compare; on failure jump to the next
                // alternative (or to the block's final deny).
                let per_cond = |c: &Cond| if c.mask == u32::MAX { 2 } else { 3 };
                let total: usize = conds.iter().map(per_cond).sum::<usize>() + 1;
                let mut used = 0usize;
                for c in conds {
                    block.push(ld(OFF_ARGS + 8 * u32::from(c.index)));
                    used += 1;
                    if c.mask != u32::MAX {
                        block.push(and(c.mask));
                        used += 1;
                    }
                    used += 1;
                    // Instructions left after this jump up to and including `ret ALLOW`.
                    let to_fail = u8::try_from(total - used).map_err(|_| SeccompError::TooLong)?;
                    block.push(if c.equal {
                        jeq(c.value, 0, to_fail)
                    } else {
                        jeq(c.value, to_fail, 0)
                    });
                }
                block.push(ret(RET_ALLOW));
            }
            block.push(ret(RET_ERRNO | libc::EPERM as u32));
        }
        blocks.push((*nr as u32, block));
    }
    for (_, nr, errno) in &denied {
        blocks.push((*nr as u32, vec![ret(RET_ERRNO | (*errno as u32 & 0xffff))]));
    }
    blocks.sort_by_key(|b| b.0);
    let default = ret(RET_ERRNO | (default_errno as u32 & 0xffff));
    p.reserve(search_len(&blocks));
    search(&blocks, default, &mut p)?;
    if p.len() > 4096 {
        return Err(SeccompError::TooLong);
    }
    Ok(Filter {
        program: p,
        allowed,
        denied: denied.into_iter().map(|(n, _, e)| (n, e)).collect(),
        default_errno,
    })
}

/// Appends a binary search over `blocks` (sorted by syscall number) to `out`.
/// Every block ends in `ret`, so the accumulator still holds the number at each
/// comparison.
fn search(
    blocks: &[(u32, Vec<libc::sock_filter>)],
    default: libc::sock_filter,
    out: &mut Vec<libc::sock_filter>,
) -> Result<(), SeccompError> {
    if blocks.len() <= 4 {
        for (nr, block) in blocks {
            let skip = u8::try_from(block.len()).map_err(|_| SeccompError::TooLong)?;
            out.push(jeq(*nr, 0, skip));
            out.extend_from_slice(block);
        }
        out.push(default);
        return Ok(());
    }
    let mid = blocks.len() / 2;
    // nr >= blocks[mid]: take the `ja` over the left half; else fall into it.
    out.push(jge(blocks[mid].0, 0, 1));
    out.push(stmt(
        (libc::BPF_JMP | libc::BPF_JA) as u16,
        u32::try_from(search_len(&blocks[..mid])).map_err(|_| SeccompError::TooLong)?,
    ));
    search(&blocks[..mid], default, out)?;
    search(&blocks[mid..], default, out)
}

/// The number of instructions `search` emits for `blocks`.
fn search_len(blocks: &[(u32, Vec<libc::sock_filter>)]) -> usize {
    if blocks.len() <= 4 {
        return blocks.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + 1;
    }
    let mid = blocks.len() / 2;
    2 + search_len(&blocks[..mid]) + search_len(&blocks[mid..])
}

fn ld(off: u32) -> libc::sock_filter {
    stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, off)
}
fn and(k: u32) -> libc::sock_filter {
    stmt((libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16, k)
}
fn ret(k: u32) -> libc::sock_filter {
    stmt((libc::BPF_RET | libc::BPF_K) as u16, k)
}
fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    jump(
        (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        k,
        jt,
        jf,
    )
}
fn jge(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    jump(
        (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
        k,
        jt,
        jf,
    )
}
fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno_value(name: &str) -> Result<i32, SeccompError> {
    Ok(match name {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EACCES" => libc::EACCES,
        "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
        _ => return Err(SeccompError::UnknownErrno(name.to_owned())),
    })
}

macro_rules! syscall_table {
    ($($name:ident,)*) => {
        const SYSCALLS: &[(&str, libc::c_long)] = &[$((stringify!($name), libc::$name),)*];
    };
}

fn lookup(name: &str) -> Result<(&'static str, i64), SeccompError> {
    static BY_NAME: std::sync::OnceLock<std::collections::HashMap<&'static str, i64>> =
        std::sync::OnceLock::new();
    let map = BY_NAME.get_or_init(|| SYSCALLS.iter().map(|(n, nr)| (&n[4..], *nr)).collect());
    map.get_key_value(name)
        .map(|(n, nr)| (*n, *nr))
        .ok_or_else(|| SeccompError::UnknownSyscall(name.to_owned()))
}

syscall_table! {
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_acct,
    SYS_add_key,
    SYS_adjtimex,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_bind,
    SYS_bpf,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chroot,
    SYS_clock_adjtime,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_clock_settime,
    SYS_clone,
    SYS_clone3,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_delete_module,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fallocate,
    SYS_fanotify_init,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_finit_module,
    SYS_flock,
    SYS_fork,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fsopen,
    SYS_fspick,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_get_robust_list,
    SYS_getcwd,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_init_module,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_io_uring_setup,
    SYS_ioctl,
    SYS_ioperm,
    SYS_iopl,
    SYS_kcmp,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_keyctl,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_lookup_dcookie,
    SYS_lseek,
    SYS_lstat,
    SYS_madvise,
    SYS_mbind,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_migrate_pages,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mmap,
    SYS_mount,
    SYS_mount_setattr,
    SYS_move_mount,
    SYS_move_pages,
    SYS_mprotect,
    SYS_mremap,
    SYS_msync,
    SYS_munmap,
    SYS_name_to_handle_at,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_open_by_handle_at,
    SYS_open_tree,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_perf_event_open,
    SYS_personality,
    SYS_pidfd_getfd,
    SYS_pidfd_open,
    SYS_pipe,
    SYS_pipe2,
    SYS_pivot_root,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_pselect6,
    SYS_ptrace,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_quotactl,
    SYS_read,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_reboot,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_request_key,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getaffinity,
    SYS_sched_getparam,
    SYS_sched_getscheduler,
    SYS_sched_setaffinity,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_mempolicy,
    SYS_set_robust_list,
    SYS_set_tid_address,
    SYS_setdomainname,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_sethostname,
    SYS_setitimer,
    SYS_setns,
    SYS_setpgid,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setsid,
    SYS_setsockopt,
    SYS_settimeofday,
    SYS_setuid,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socket,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_swapoff,
    SYS_swapon,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync_file_range,
    SYS_sysinfo,
    SYS_syslog,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_umount2,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_unshare,
    SYS_uselib,
    SYS_userfaultfd,
    SYS_utimensat,
    SYS_vfork,
    SYS_vhangup,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
}

/// Runs `program` on one syscall the way the kernel would, for tests: returns the
/// action word.
#[cfg(test)]
fn emulate(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = program[pc];
        let class = u32::from(i.code) & 0x07;
        match class {
            c if c == libc::BPF_LD => acc = data[(i.k / 4) as usize],
            c if c == libc::BPF_ALU => acc &= i.k,
            c if c == libc::BPF_RET => return i.k,
            c if c == libc::BPF_JMP => {
                let op = u32::from(i.code) & 0xf0;
                if op == libc::BPF_JA {
                    pc += i.k as usize;
                } else {
                    let hit = if op == libc::BPF_JEQ {
                        acc == i.k
                    } else {
                        acc >= i.k
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
            }
            _ => panic!("unexpected instruction"),
        }
        pc += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &Filter, nr: libc::c_long, args: [u64; 6]) -> u32 {
        emulate(&f.program, AUDIT_ARCH_X86_64, nr as u32, args)
    }

    #[test]
    fn default_policy_compiles_and_every_entry_is_commented() {
        let f = compile_default().unwrap();
        assert!(f.allowed.len() > 100);
        assert_eq!(f.default_errno, libc::ENOSYS);
    }

    #[test]
    fn dangerous_calls_are_denied() {
        let f = compile_default().unwrap();
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_io_uring_setup,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_execve,
        ] {
            assert_eq!(
                run(&f, nr, [0; 6]),
                RET_ERRNO | libc::EPERM as u32,
                "nr {nr}"
            );
        }
        assert_eq!(
            run(&f, libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(run(&f, 9999, [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
    }

    #[test]
    fn argument_filters() {
        let f = compile_default().unwrap();
        assert_eq!(run(&f, libc::SYS_read, [0; 6]), RET_ALLOW);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(&f, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        let ns = thread | libc::CLONE_NEWUSER as u64;
        assert_eq!(run(&f, libc::SYS_clone, [ns, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(
            run(&f, libc::SYS_socket, [libc::AF_UNIX as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&f, libc::SYS_socket, [libc::AF_INET6 as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(
                &f,
                libc::SYS_socket,
                [libc::AF_NETLINK as u64, 0, 0, 0, 0, 0]
            ),
            RET_ERRNO | 1
        );
        assert_eq!(
            run(
                &f,
                libc::SYS_socket,
                [libc::AF_PACKET as u64, 0, 0, 0, 0, 0]
            ),
            RET_ERRNO | 1
        );
        assert_eq!(
            run(&f, libc::SYS_ioctl, [1, libc::TCGETS, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&f, libc::SYS_ioctl, [1, libc::TIOCSTI, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
        let e = libc::AT_EMPTY_PATH as u64;
        assert_eq!(
            run(&f, libc::SYS_execveat, [MEMFD_FD as u64, 0, 0, 0, e, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&f, libc::SYS_execveat, [5, 0, 0, 0, e, 0]),
            RET_ERRNO | 1
        );
        assert_eq!(
            run(&f, libc::SYS_execveat, [MEMFD_FD as u64, 0, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
    }

    #[test]
    fn every_listed_syscall_gets_its_verdict() {
        let f = compile_default().unwrap();
        for (name, conds) in &f.allowed {
            let nr = lookup(name).unwrap().1;
            if conds.is_empty() {
                assert_eq!(run(&f, nr, [0; 6]), RET_ALLOW, "{name}");
            }
        }
        for (name, errno) in &f.denied {
            let nr = lookup(name).unwrap().1;
            assert_eq!(run(&f, nr, [0; 6]), RET_ERRNO | *errno as u32, "{name}");
        }
        for nr in 0..600 {
            if !SYSCALLS.iter().any(|(_, n)| *n == nr) {
                assert_eq!(
                    run(&f, nr, [0; 6]),
                    RET_ERRNO | libc::ENOSYS as u32,
                    "nr {nr}"
                );
            }
        }
    }

    #[test]
    fn foreign_arch_and_x32_are_killed() {
        let f = compile_default().unwrap();
        assert_eq!(
            emulate(&f.program, 0x4000_0003, 0, [0; 6]),
            RET_KILL_PROCESS
        );
        let x32 = X32_SYSCALL_BIT | libc::SYS_read as u32;
        assert_eq!(
            emulate(&f.program, AUDIT_ARCH_X86_64, x32, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let unknown = r#"{"comment":"","default_errno":"ENOSYS","allow":[{"syscall":"frobnicate","comment":"x"}],"deny":[]}"#;
        assert!(matches!(
            compile(unknown),
            Err(SeccompError::UnknownSyscall(_))
        ));
        let both = r#"{"comment":"","default_errno":"ENOSYS","allow":[{"syscall":"read","comment":"x"}],"deny":[{"syscall":"read","comment":"y"}]}"#;
        assert!(matches!(compile(both), Err(SeccompError::Conflict(_))));
        let uncommented = r#"{"comment":"","default_errno":"ENOSYS","allow":[{"syscall":"read","comment":" "}],"deny":[]}"#;
        assert!(matches!(
            compile(uncommented),
            Err(SeccompError::NoComment(_))
        ));
        let extra = r#"{"comment":"","default_errno":"ENOSYS","allow":[],"deny":[],"x":1}"#;
        assert!(compile(extra).is_err());
    }
}
