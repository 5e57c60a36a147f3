//! Mount-namespace syscalls: mount, pivot_root, umount2 and the few directory-entry
//! calls needed to build a root (mkdir, mknod, symlink, chdir).
//!
//! Every function takes `&CStr` so the post-clone child can call them without
//! allocating. No mount policy lives here.

use std::ffi::CStr;
use std::io;
use std::ptr;

use super::{cvt, cvt_syscall};

fn opt(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

/// `mount(2)`.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: every pointer is either NULL or a NUL-terminated string borrowed for
    // the duration of the call; `data` is only read as a string by the filesystems
    // we pass it to (tmpfs, proc).
    cvt(unsafe {
        libc::mount(
            opt(source),
            target.as_ptr(),
            opt(fstype),
            flags,
            opt(data).cast(),
        )
    })
    .map(drop)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// MOUNT_ATTR_RDONLY (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `mount_setattr(AT_FDCWD, path, AT_RECURSIVE, {attr_set: MOUNT_ATTR_RDONLY})`:
/// the mount at `path` and every mount beneath it read-only, other flags left as
/// they are. Allocation-free.
pub fn make_tree_readonly(path: &CStr) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a live mount_attr whose exact
    // size is passed; the kernel only reads both. syscall(2) is variadic: each
    // argument is passed at the type mount_setattr(2) takes (int dirfd, path
    // pointer, unsigned flags, attr pointer, size_t size).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt_syscall(r).map(drop)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    cvt_syscall(r).map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `mkdir(2)`.
pub fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
}

/// `mknod(2)`; with `S_IFREG` it creates an empty file (a bind-mount target).
pub fn mknod(path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mknod(path.as_ptr(), mode, dev) }).map(drop)
}

/// `symlink(2)`: creates `link` pointing at `target`.
pub fn symlink(target: &CStr, link: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated strings that outlive the call.
    cvt(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `statvfs(3)` mount flags (`ST_*`) of the filesystem holding `path`.
pub fn statvfs_flags(path: &CStr) -> io::Result<libc::c_ulong> {
    // SAFETY: an all-zero statvfs is a valid value of a plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is a valid, writable statvfs.
    cvt(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    Ok(st.f_flag)
}

/// `(st_dev, st_ino)` of `path` (following symlinks), without allocating.
pub fn dev_ino(path: &CStr) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is a valid, writable stat.
    cvt(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

/// `(st_dev, st_ino)` of an open fd (`O_PATH` handles included).
pub fn fd_dev_ino(fd: std::os::fd::RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat; a bad fd only yields EBADF.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}
