//! Installing a classic-BPF seccomp filter. Compiling the filter is
//! `crate::sandbox::seccomp`'s business.

use std::io;

use super::cvt_syscall;

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)` for the calling thread.
/// `filter` is the program as raw `sock_filter` instructions.
pub fn set_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies
    // the program and never writes through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    cvt_syscall(r).map(drop)
}
