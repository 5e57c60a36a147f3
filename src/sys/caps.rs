//! Credentials and capabilities: setresuid/setresgid/setgroups, the capability
//! sets (bounding, ambient, effective/permitted/inheritable) and no_new_privs.
//!
//! Allocation-free, for use in the post-clone child. Which ids to take is decided
//! by `crate::sandbox`.

use std::io;

use super::{cvt, cvt_syscall};

/// `setresuid(2)` with the same id for real, effective and saved.
pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: raw syscall with integer arguments only (the libc wrapper would
    // broadcast to other threads with signals; the child is single-threaded).
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    cvt_syscall(r).map(drop)
}

/// `setresgid(2)` with the same id for real, effective and saved.
pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: raw syscall with integer arguments only (see `setresuid`).
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    cvt_syscall(r).map(drop)
}

/// `setgroups(0, NULL)`: drops every supplementary group.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: size 0 with a NULL list; the kernel reads nothing.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
    cvt_syscall(r).map(drop)
}

/// `prctl(PR_CAPBSET_DROP, cap)`.
pub fn capbset_drop(cap: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) }).map(drop)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
pub fn ambient_clear_all() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset(2)` emptying the effective, permitted and inheritable sets of the caller.
pub fn capset_empty() -> io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: `hdr` is a version-3 header and `data` the two-element array that
    // version 3 requires; both live on the stack for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    cvt_syscall(r).map(drop)
}

/// Whether capability number `cap` is in the calling thread's effective set
/// (`capget(2)`).
pub fn effective_has(cap: u32) -> io::Result<bool> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: `hdr` is a version-3 header and `data` the writable two-element
    // array that version 3 fills; both live on the stack for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    cvt_syscall(r)?;
    let word = data.get((cap / 32) as usize).map_or(0, |d| d.effective);
    Ok(word & (1 << (cap % 32)) != 0)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, and /proc/<pid> files and ptrace
/// access are reserved to root of the owning namespace.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}
