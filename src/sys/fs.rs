//! File and memfd syscalls: opening without following links, sealed memfds.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{cvt, cvt_syscall};

/// Seals that make a memfd immutable: nobody may change its size or contents, and
/// nobody may remove the seals.
pub const SEALS_IMMUTABLE: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Creates an anonymous memory file that accepts seals and may be executed,
/// close-on-exec. `MFD_EXEC` (Linux 6.3+) is asked for explicitly so that the
/// `vm.memfd_noexec` default cannot change what we get; older kernels, which do not
/// know the flag (EINVAL), make every memfd executable.
pub fn memfd_create(name: &CStr) -> io::Result<File> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is NUL-terminated and outlives the call; the flags are constants.
    let fd = match cvt(unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: as above.
            cvt(unsafe { libc::memfd_create(name.as_ptr(), base) })?
        }
        other => other?,
    };
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Adds `seals` to a memfd (`F_ADD_SEALS`).
pub fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed, open fd with an integer argument; no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// Reads the seals on a memfd (`F_GET_SEALS`).
pub fn get_seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on a borrowed, open fd; no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

fn cstring(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens a directory as an `O_PATH` handle, for `openat` of its entries. The handle
/// pins the directory: later lookups through it cannot be redirected by renaming or
/// replacing the path.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is NUL-terminated and outlives the call; the fd is checked.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` inside `dir` read-only, refusing a symlink as the final component,
/// close-on-exec and non-blocking (so a fifo cannot stall the caller).
pub fn openat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // SAFETY: `dir` is an open directory handle and `name` a NUL-terminated string
    // that outlives the call; the returned fd is checked before it is wrapped.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Takes an exclusive advisory lock on `file` without waiting (`flock(LOCK_EX|LOCK_NB)`).
/// Fails with `EWOULDBLOCK` when another open file description holds it; the lock
/// goes away when the file is closed.
pub fn flock_exclusive_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: flock on a borrowed, open fd with constant flags; no pointers.
    cvt(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

/// Takes `file`'s flock, exclusive or shared, retrying a held lock every 20 ms
/// for 500 ms in all: a child being spawned by another thread of this process
/// holds a copy of the descriptor (and so the lock) between fork and exec, even
/// with O_CLOEXEC. Still `WouldBlock` after that: another holder has it.
pub fn flock_soon(file: &File, exclusive: bool) -> io::Result<()> {
    const TRIES: u32 = 25;
    const RETRY: std::time::Duration = std::time::Duration::from_millis(20);
    let mut tries = 0;
    loop {
        let taken = if exclusive {
            flock_exclusive_nonblocking(file)
        } else {
            flock_shared_nonblocking(file)
        };
        match taken {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < TRIES => {
                tries += 1;
                std::thread::sleep(RETRY);
            }
            r => return r,
        }
    }
}

/// Who holds a flock on `file`, for a refusal to name: ` by pid N (COMM)` for
/// each holder /proc/locks lists on its device and inode (pids as this process's
/// pid namespace sees them), or "" when none is found.
pub fn flock_holders(file: &File) -> String {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Ok(locks)) = (file.metadata(), std::fs::read_to_string("/proc/locks")) else {
        return String::new();
    };
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let mut pids: Vec<u32> = Vec::new();
    for line in locks.lines() {
        // `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`; a waiter's line has
        // `->` after `N:` and is skipped.
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[1] == "FLOCK" && f[5] == want {
            if let Ok(pid) = f[4].parse::<u32>() {
                if pid != 0 && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids.iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim_end() {
                "" => format!(" by pid {pid}"),
                c => format!(" by pid {pid} ({c})"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Takes a shared advisory lock on `file` without waiting (`flock(LOCK_SH|LOCK_NB)`).
/// Fails with `EWOULDBLOCK` while another open file description holds it exclusively.
pub fn flock_shared_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: flock on a borrowed, open fd with constant flags; no pointers.
    cvt(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) }).map(drop)
}

/// `openat2(dir, path, how)` with `how = {flags, mode, resolve}`, returning the new
/// descriptor. `ENOSYS` means the kernel predates openat2 (Linux 5.6).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = resolve;
    // SAFETY: `dir` is an open directory fd, `path` is NUL-terminated and `how` a
    // live, initialised open_how whose exact size is passed; all outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = cvt_syscall(fd)?;
    // SAFETY: openat2 succeeded, so `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is a plain C struct; all-zero is a valid value for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is live and writable for the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a borrowed, open fd with integer arguments; no pointers.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fchmod on a borrowed, open fd with an integer argument; no pointers.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Opens a directory for use as an `openat` base and for `fchown`/`fchmod`:
/// `O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC` (a symlink is refused).
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is NUL-terminated and outlives the call; the fd is checked.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
