//! Landlock syscalls: ABI probe, ruleset creation, path-beneath and net-port rules,
//! restrict_self. The uapi constants the `libc` crate lacks are defined here.
//!
//! Which rights to handle and grant is `crate::sandbox::landlock`'s business.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_syscall};

pub const CREATE_RULESET_VERSION: u32 = 1;
pub const RULE_PATH_BENEATH: libc::c_int = 1;

pub const ACCESS_FS_EXECUTE: u64 = 1 << 0;
pub const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
pub const ACCESS_FS_READ_FILE: u64 = 1 << 2;
pub const ACCESS_FS_READ_DIR: u64 = 1 << 3;
pub const ACCESS_FS_REMOVE_DIR: u64 = 1 << 4;
pub const ACCESS_FS_REMOVE_FILE: u64 = 1 << 5;
pub const ACCESS_FS_MAKE_CHAR: u64 = 1 << 6;
pub const ACCESS_FS_MAKE_DIR: u64 = 1 << 7;
pub const ACCESS_FS_MAKE_REG: u64 = 1 << 8;
pub const ACCESS_FS_MAKE_SOCK: u64 = 1 << 9;
pub const ACCESS_FS_MAKE_FIFO: u64 = 1 << 10;
pub const ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
pub const ACCESS_FS_MAKE_SYM: u64 = 1 << 12;
/// ABI 2.
pub const ACCESS_FS_REFER: u64 = 1 << 13;
/// ABI 3.
pub const ACCESS_FS_TRUNCATE: u64 = 1 << 14;
/// ABI 5.
pub const ACCESS_FS_IOCTL_DEV: u64 = 1 << 15;

/// ABI 4.
pub const ACCESS_NET_BIND_TCP: u64 = 1 << 0;
/// ABI 4.
pub const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;

/// ABI 6.
pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
/// ABI 6.
pub const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The highest Landlock ABI the running kernel supports (`EOPNOTSUPP` when Landlock
/// is built in but disabled, `ENOSYS` when absent).
pub fn abi_version() -> io::Result<u32> {
    // SAFETY: NULL attr with size 0 and the VERSION flag only queries the ABI.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    cvt_syscall(r).map(|v| v as u32)
}

/// `landlock_create_ruleset` handling the given rights. `abi` decides how much of
/// the attribute struct is passed (ABI < 4 knows only the fs field, < 6 no scopes).
pub fn create_ruleset(fs: u64, net: u64, scoped: u64, abi: u32) -> io::Result<OwnedFd> {
    let attr = RulesetAttr {
        handled_access_fs: fs,
        handled_access_net: net,
        scoped,
    };
    let size = if abi >= 6 {
        24
    } else if abi >= 4 {
        16
    } else {
        8
    };
    // SAFETY: `attr` is a live repr(C) struct of at least `size` bytes laid out as
    // the kernel's landlock_ruleset_attr prefix of that size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size as usize,
            0u32,
        )
    };
    let fd = cvt_syscall(r)? as RawFd;
    // SAFETY: `fd` is a new ruleset fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `landlock_add_rule(PATH_BENEATH)`: grants `access` beneath the file `parent`.
/// Takes raw fds so the post-clone child can call it without owning wrappers.
pub fn add_path_rule(ruleset: RawFd, parent: RawFd, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: `attr` is a live packed struct matching landlock_path_beneath_attr;
    // the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    cvt_syscall(r).map(drop)
}

/// `landlock_restrict_self(ruleset, 0)`.
pub fn restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    cvt_syscall(r).map(drop)
}

/// Opens `path` as an `O_PATH | O_CLOEXEC` handle (for rules), without allocation.
pub fn open_path(path: &std::ffi::CStr) -> io::Result<RawFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })
}

/// Borrowed variant of [`add_path_rule`] for parent-side code.
pub fn add_path_rule_fd(
    ruleset: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    access: u64,
) -> io::Result<()> {
    add_path_rule(ruleset.as_raw_fd(), parent.as_raw_fd(), access)
}
