//! Landlock for the sandbox: which rights are handled at each ABI, the rules as
//! narrow as the mounts, and building the ruleset fd in the parent.
//!
//! Rules on host inodes that are bind-mounted into the sandbox (/usr, /etc files,
//! the bundle, device nodes) are added here, before clone; the two filesystems that
//! only exist inside the sandbox (/tmp and /proc) get their rules in the child
//! (see `child.rs`), with the rights listed in [`TMP_ACCESS`] and [`PROC_ACCESS`].
//! The syscalls themselves live in `crate::sys::landlock`.

use std::os::fd::{AsFd, OwnedFd};

use crate::sys::landlock as ll;

/// Every filesystem right up to ABI 5 (ABI 6 and 7 added none).
pub fn fs_rights(abi: u32) -> u64 {
    let mut r = (1u64 << 13) - 1;
    if abi >= 2 {
        r |= ll::ACCESS_FS_REFER;
    }
    if abi >= 3 {
        r |= ll::ACCESS_FS_TRUNCATE;
    }
    if abi >= 5 {
        r |= ll::ACCESS_FS_IOCTL_DEV;
    }
    r
}

/// Network rights handled (and so denied, since no port rule is added).
pub fn net_rights(abi: u32) -> u64 {
    if abi >= 4 {
        ll::ACCESS_NET_BIND_TCP | ll::ACCESS_NET_CONNECT_TCP
    } else {
        0
    }
}

/// IPC scopes.
pub fn scopes(abi: u32) -> u64 {
    if abi >= 6 {
        ll::SCOPE_ABSTRACT_UNIX_SOCKET | ll::SCOPE_SIGNAL
    } else {
        0
    }
}

/// Read and execute: the system's programs and libraries (/usr).
pub const EXEC_ACCESS: u64 =
    ll::ACCESS_FS_EXECUTE | ll::ACCESS_FS_READ_FILE | ll::ACCESS_FS_READ_DIR;
/// Read-only directory trees (the bundle).
pub const READ_DIR_ACCESS: u64 = ll::ACCESS_FS_READ_FILE | ll::ACCESS_FS_READ_DIR;
/// Read-only single files (/etc essentials, /dev/random, /dev/urandom).
pub const READ_FILE_ACCESS: u64 = ll::ACCESS_FS_READ_FILE;
/// Read-write device files (/dev/null, /dev/zero, /dev/full).
pub const RW_DEV_ACCESS: u64 =
    ll::ACCESS_FS_READ_FILE | ll::ACCESS_FS_WRITE_FILE | ll::ACCESS_FS_TRUNCATE;
/// The private /tmp: everything but execute and device nodes.
pub const TMP_ACCESS: u64 = ll::ACCESS_FS_READ_FILE
    | ll::ACCESS_FS_READ_DIR
    | ll::ACCESS_FS_WRITE_FILE
    | ll::ACCESS_FS_TRUNCATE
    | ll::ACCESS_FS_MAKE_REG
    | ll::ACCESS_FS_MAKE_DIR
    | ll::ACCESS_FS_MAKE_SYM
    | ll::ACCESS_FS_MAKE_SOCK
    | ll::ACCESS_FS_MAKE_FIFO
    | ll::ACCESS_FS_REMOVE_FILE
    | ll::ACCESS_FS_REMOVE_DIR
    | ll::ACCESS_FS_REFER;
/// The sandbox's own /proc: read only.
pub const PROC_ACCESS: u64 = ll::ACCESS_FS_READ_FILE | ll::ACCESS_FS_READ_DIR;

/// Names of the rights in `mask`, for `--dry-run`.
pub fn fs_names(mask: u64) -> String {
    const NAMES: [&str; 16] = [
        "execute",
        "write_file",
        "read_file",
        "read_dir",
        "remove_dir",
        "remove_file",
        "make_char",
        "make_dir",
        "make_reg",
        "make_sock",
        "make_fifo",
        "make_block",
        "make_sym",
        "refer",
        "truncate",
        "ioctl_dev",
    ];
    let v: Vec<&str> = (0..16)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect();
    v.join(",")
}

/// A rule on a host inode that will be visible inside the sandbox.
#[derive(Debug)]
pub struct HostRule {
    /// O_PATH handle of the inode, taken when the plan was made.
    pub fd: OwnedFd,
    pub access: u64,
    /// Where the plugin sees it, for `--dry-run`.
    pub shown: String,
}

/// Creates a ruleset for `abi` holding `rules` (rights outside what the ABI
/// handles are dropped).
pub fn build(abi: u32, rules: &[HostRule]) -> std::io::Result<OwnedFd> {
    let fs = fs_rights(abi);
    let ruleset = ll::create_ruleset(fs, net_rights(abi), scopes(abi), abi)?;
    for r in rules {
        ll::add_path_rule_fd(ruleset.as_fd(), r.fd.as_fd(), r.access & fs)?;
    }
    Ok(ruleset)
}
