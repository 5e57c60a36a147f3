//! A reply whose descriptor the kernel could not install (the plugin's
//! descriptor table is full: MSG_CTRUNC) is reported as that, not as a broken
//! channel or a reply "without a socket". Alone in its file: it lowers the
//! process's RLIMIT_NOFILE.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use warden_plugin::{Client, Error, OpenFlags};

const WELCOME: &[u8] = br#"{"type":"welcome","version":1,"plugin":"p","capabilities":["static:read"],"limits":{"max_message":65536,"max_in_flight":32,"call_timeout_ms":5000,"rate":{"per_second":500,"burst":1000}}}"#;

/// Sends `msg` with `fd` attached (SCM_RIGHTS).
fn send_with_fd(sock: &UnixDatagram, msg: &[u8], fd: RawFd) {
    let mut cmsg = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    m.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer (32 bytes) holds one cmsghdr with one int;
    // CMSG_FIRSTHDR points into it and CMSG_DATA at its payload.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        libc::CMSG_DATA(c).cast::<RawFd>().write_unaligned(fd);
    }
    // SAFETY: `m` points at `iov` (covering `msg`) and at `cmsg`, live for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &m, 0) };
    assert_eq!(n, msg.len() as isize, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_descriptor_lost_to_a_full_descriptor_table_is_said_so() {
    let (warden, plugin) = UnixDatagram::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        warden.recv(&mut buf).unwrap(); // hello
        warden.send(WELCOME).unwrap();
        let n = warden.recv(&mut buf).unwrap(); // the call
        let call: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        let reply = format!(
            r#"{{"type":"reply","id":{},"ok":{{"fd":true,"size":0}}}}"#,
            call["id"]
        );
        send_with_fd(&warden, reply.as_bytes(), file.as_raw_fd());
        // Kept open until the client has its answer: closing it would free
        // the slot its copy needs.
        (warden, file)
    });
    let client = Client::with_socket(plugin, "p", "1.0.0").unwrap();
    // No free slot below the limit: the lowest free descriptor is the limit.
    // SAFETY: dup of stdin's number; the new descriptor is closed at once.
    let lowest_free = unsafe { libc::dup(0) };
    assert!(lowest_free >= 0);
    // SAFETY: closing the descriptor dup just made, which nothing else uses.
    unsafe { libc::close(lowest_free) };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills `old`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let lim = libc::rlimit {
        rlim_cur: lowest_free as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid rlimit for the calling process, soft below hard.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let got = client.open("a", OpenFlags::READ);
    // SAFETY: restores the limit read above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    let _ends = peer.join().unwrap();
    match got {
        Err(Error::Unavailable(m)) => assert!(m.contains("RLIMIT_NOFILE"), "{m}"),
        other => panic!("expected unavailable naming RLIMIT_NOFILE, got {other:?}"),
    }
}
