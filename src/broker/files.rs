//! `fs.open`: each plugin's persistent data directory (`<state>/data/<id>/`),
//! path and flag validation, the quota check, and opening beneath the directory
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)`.
//!
//! Validation ([`validate`]) is pure and runs in the handler; [`open`] blocks
//! (a directory walk for the quota, the open itself) and runs on the worker pool.
//! Grants are decided by dispatch and the handler; the descriptor is sent by the
//! broker. Raw syscalls live in `crate::sys::fs`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::protocol::{CallError, ErrorCode};
use crate::sys;

/// The longest relative path accepted, in bytes.
pub const MAX_PATH: usize = 1024;
/// The default per-plugin data quota, in MiB (policy `limits.data_mb` lowers or
/// raises it within 1..=65536).
pub const DEFAULT_QUOTA_MB: u64 = 64;
/// Directory entries the quota walk visits before it gives up and refuses writes.
const MAX_WALK: usize = 100_000;

/// Why a data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("creating the data directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "opening the data directory {path} (it must be a real directory, not a symlink): {source}"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error("giving the data directory {path} to uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },
    #[error("setting mode 0700 on the data directory {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// A plugin's data directory, pinned by an open descriptor.
#[derive(Debug)]
pub struct FileRoot {
    pub dir: OwnedFd,
    pub path: PathBuf,
    pub quota_bytes: u64,
    /// The plugin's host uid and gid when warden runs as root: new files are
    /// given to it.
    pub owner: Option<(u32, u32)>,
}

impl FileRoot {
    /// Creates (or reuses) `<state_dir>/data/<id>/` with mode 0700, owned by
    /// `owner` when given, and opens it. A symlink in place of the directory is
    /// refused.
    pub fn prepare(
        state_dir: &Path,
        id: &str,
        quota_bytes: u64,
        owner: Option<(u32, u32)>,
    ) -> Result<FileRoot, FilesError> {
        let data = state_dir.join("data");
        let path = data.join(id);
        for (p, mode) in [(&data, 0o711), (&path, 0o700)] {
            match std::fs::create_dir(p) {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(
                        |source| FilesError::Chmod {
                            path: p.clone(),
                            source,
                        },
                    )?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(FilesError::Create {
                        path: p.clone(),
                        source,
                    })
                }
            }
        }
        let dir = sys::fs::open_dir_nofollow(&path).map_err(|source| FilesError::Open {
            path: path.clone(),
            source,
        })?;
        if let Some((uid, gid)) = owner {
            sys::fs::fchown(dir.as_fd(), uid, gid).map_err(|source| FilesError::Chown {
                path: path.clone(),
                uid,
                source,
            })?;
        }
        sys::fs::fchmod(dir.as_fd(), 0o700).map_err(|source| FilesError::Chmod {
            path: path.clone(),
            source,
        })?;
        Ok(FileRoot {
            dir,
            path,
            quota_bytes,
            owner,
        })
    }
}

/// The flags of one `fs.open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
}

impl Flags {
    /// Whether the open can change the file (and so needs `static:write`).
    pub fn writes(&self) -> bool {
        self.write || self.create || self.truncate || self.append
    }

    /// The flag called `name`, if there is one.
    fn named(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "read" => &mut self.read,
            "write" => &mut self.write,
            "create" => &mut self.create,
            "truncate" => &mut self.truncate,
            "append" => &mut self.append,
            _ => return None,
        })
    }

    /// Whether `name` is a flag that can change the file (whatever else the
    /// list it comes in says).
    pub fn name_writes(name: &str) -> bool {
        let mut f = Flags::default();
        if let Some(slot) = f.named(name) {
            *slot = true;
        }
        f.writes()
    }
}

/// One validated open, ready for a worker.
#[derive(Debug)]
pub struct OpenRequest {
    pub path: String,
    c_path: CString,
    pub flags: Flags,
}

fn bad(msg: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::BadRequest, msg)
}

fn denied(msg: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::Denied, msg)
}

/// Checks the path and flag names before anything touches the disk. Paths are
/// relative, `/`-separated, without `..`, empty or `.` components, NUL or control
/// characters, at most [`MAX_PATH`] bytes.
pub fn validate(path: &str, flags: &[String]) -> Result<OpenRequest, CallError> {
    let mut f = Flags::default();
    if flags.is_empty() {
        return Err(bad("flags must name at least read or write"));
    }
    for name in flags {
        let Some(slot) = f.named(name) else {
            return Err(bad(format!(
                "unknown flag {name:?} (read, write, create, truncate, append)"
            )));
        };
        if *slot {
            return Err(bad(format!("flag {name:?} given twice")));
        }
        *slot = true;
    }
    if !f.read && !f.write {
        return Err(bad("flags must include read or write"));
    }
    if (f.create || f.truncate || f.append) && !f.write {
        return Err(bad("create, truncate and append need write"));
    }
    if path.is_empty() {
        return Err(bad("path must not be empty"));
    }
    if path.len() > MAX_PATH {
        return Err(CallError::new(
            ErrorCode::TooLarge,
            format!("path is {} bytes, the limit is {MAX_PATH}", path.len()),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("path must not contain control characters"));
    }
    if path.starts_with('/') {
        return Err(denied(format!(
            "{path:?} is absolute; paths are relative to the plugin's data directory"
        )));
    }
    for comp in path.split('/') {
        match comp {
            ".." => {
                return Err(denied(format!(
                    "{path:?} contains '..'; paths may not leave the data directory"
                )))
            }
            "" | "." => return Err(bad(format!("{path:?} has an empty or '.' component"))),
            _ => {}
        }
    }
    let c_path = CString::new(path).map_err(|_| bad("path contains a NUL byte"))?;
    Ok(OpenRequest {
        path: path.to_owned(),
        c_path,
        flags: f,
    })
}

/// Bytes allocated under `dir` (st_blocks × 512 of every entry, symlinks not
/// followed), or `None` when the tree is too large to walk.
pub fn usage(dir: &Path) -> io::Result<Option<u64>> {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            seen += 1;
            if seen > MAX_WALK {
                return Ok(None);
            }
            let meta = entry.path().symlink_metadata()?;
            total += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(Some(total))
}

/// What an open produced: the reply, the file on success, and audit fields.
#[derive(Debug)]
pub struct Opened {
    pub result: Result<Value, CallError>,
    pub fd: Option<OwnedFd>,
    pub audit: Map<String, Value>,
}

fn kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a fifo",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

fn not_regular(path: &str, mode: libc::mode_t) -> CallError {
    if mode & libc::S_IFMT == libc::S_IFLNK {
        return symlink_refused(path);
    }
    denied(format!("{path:?} is {}, not a regular file", kind(mode)))
}

fn symlink_refused(path: &str) -> CallError {
    denied(format!(
        "{path:?} is or passes through a symbolic link, which fs.open never follows"
    ))
}

fn open_error(path: &str, e: &io::Error) -> CallError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => CallError::new(
            ErrorCode::NotFound,
            format!("no file {path:?} in the data directory"),
        ),
        Some(libc::EXDEV) => denied(format!("{path:?} leads outside the data directory")),
        Some(libc::ELOOP) => symlink_refused(path),
        Some(libc::ENOTDIR) => bad(format!("a component of {path:?} is not a directory")),
        Some(libc::EISDIR) => denied(format!("{path:?} is a directory, not a regular file")),
        Some(libc::ENXIO) | Some(libc::ENODEV) | Some(libc::ETXTBSY) => {
            denied(format!("{path:?} is not a regular file"))
        }
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            denied(format!("opening {path:?}: {e}"))
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => denied(format!("quota: opening {path:?}: {e}")),
        Some(libc::ENAMETOOLONG) => CallError::new(ErrorCode::TooLarge, format!("{path:?}: {e}")),
        Some(libc::ENOSYS) => CallError::new(
            ErrorCode::Unavailable,
            "fs.open needs the openat2 system call (Linux 5.6 or later), which this kernel lacks",
        ),
        _ => CallError::new(ErrorCode::Internal, format!("opening {path:?}: {e}")),
    }
}

const RESOLVE: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS;

/// The audit fields every open carries.
pub fn audit_fields(path: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("path".into(), json!(path));
    m
}

/// Opens `req` beneath `root`. Runs on a worker thread.
pub fn open(root: &FileRoot, req: &OpenRequest) -> Opened {
    let mut audit = audit_fields(&req.path);
    let fail = |audit, e| Opened {
        result: Err(e),
        fd: None,
        audit,
    };
    let f = req.flags;
    if f.writes() {
        match usage(&root.path) {
            Ok(Some(used)) if used < root.quota_bytes => {
                audit.insert("used_bytes".into(), json!(used));
            }
            Ok(Some(used)) => {
                audit.insert("used_bytes".into(), json!(used));
                return fail(
                    audit,
                    denied(format!(
                        "quota: the data directory uses {used} bytes of its {}-byte quota; opening {:?} for writing is refused",
                        root.quota_bytes, req.path
                    )),
                );
            }
            Ok(None) => {
                return fail(
                    audit,
                    denied(format!(
                        "quota: the data directory holds more than {MAX_WALK} entries"
                    )),
                )
            }
            Err(e) => {
                return fail(
                    audit,
                    CallError::new(
                        ErrorCode::Internal,
                        format!("measuring the data directory: {e}"),
                    ),
                )
            }
        }
    }
    // Look before opening: an existing entry must be a regular file, so that a
    // device node or fifo is never opened at all.
    let before = match sys::fs::openat2(
        root.dir.as_fd(),
        &req.c_path,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
        RESOLVE,
    ) {
        Ok(fd) => match sys::fs::fstat(fd.as_fd()) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Some((st.st_dev, st.st_ino)),
            Ok(st) => return fail(audit, not_regular(&req.path, st.st_mode)),
            Err(e) => return fail(audit, open_error(&req.path, &e)),
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && f.create => None,
        Err(e) => return fail(audit, open_error(&req.path, &e)),
    };
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    flags |= match (f.read, f.write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if f.create {
        flags |= libc::O_CREAT;
    }
    if f.truncate {
        flags |= libc::O_TRUNC;
    }
    if f.append {
        flags |= libc::O_APPEND;
    }
    let fd = match sys::fs::openat2(root.dir.as_fd(), &req.c_path, flags, 0o600, RESOLVE) {
        Ok(fd) => fd,
        Err(e) => return fail(audit, open_error(&req.path, &e)),
    };
    let st = match sys::fs::fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return fail(audit, open_error(&req.path, &e)),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return fail(audit, not_regular(&req.path, st.st_mode));
    }
    if before.is_some_and(|b| b != (st.st_dev, st.st_ino)) {
        return fail(
            audit,
            denied(format!(
                "{:?} was replaced while it was being opened",
                req.path
            )),
        );
    }
    // What this open created is the plugin's; a file that was there (the
    // operator's, say) keeps its owner: the descriptor is all the plugin gets.
    if let (Some((uid, gid)), None) = (root.owner, before) {
        if st.st_uid != uid {
            if let Err(e) = sys::fs::fchown(fd.as_fd(), uid, gid) {
                return fail(
                    audit,
                    CallError::new(
                        ErrorCode::Internal,
                        format!("giving {:?} to the plugin's uid: {e}", req.path),
                    ),
                );
            }
        }
    }
    // O_NONBLOCK only guarded the open; a regular file does not need it.
    if let Err(e) = sys::seqpacket::set_nonblocking(fd.as_fd(), false) {
        return fail(
            audit,
            CallError::new(ErrorCode::Internal, format!("fcntl: {e}")),
        );
    }
    Opened {
        result: Ok(json!({ "fd": true, "size": st.st_size })),
        fd: Some(fd),
        audit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paths_and_flags_are_validated_before_any_io() {
        let ok = validate("notes/a.txt", &flags(&["read"])).unwrap();
        assert!(!ok.flags.writes());
        let w = validate("a", &flags(&["write", "create", "append"])).unwrap();
        assert!(w.flags.writes());
        for (p, fl, code) in [
            ("../x", &["read"][..], ErrorCode::Denied),
            ("a/../../x", &["read"], ErrorCode::Denied),
            ("/etc/passwd", &["read"], ErrorCode::Denied),
            ("", &["read"], ErrorCode::BadRequest),
            ("a//b", &["read"], ErrorCode::BadRequest),
            ("./a", &["read"], ErrorCode::BadRequest),
            ("a\nb", &["read"], ErrorCode::BadRequest),
            ("a", &[], ErrorCode::BadRequest),
            ("a", &["exec"], ErrorCode::BadRequest),
            ("a", &["read", "read"], ErrorCode::BadRequest),
            ("a", &["read", "create"], ErrorCode::BadRequest),
            ("a", &["append"], ErrorCode::BadRequest),
        ] {
            let e = validate(p, &flags(fl)).unwrap_err();
            assert_eq!(e.code, code, "{p:?} {fl:?}: {}", e.message);
        }
        let long = "a".repeat(MAX_PATH + 1);
        assert_eq!(
            validate(&long, &flags(&["read"])).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn opens_beneath_and_refuses_links_and_specials() {
        let tmp = tempfile::tempdir().unwrap();
        let root = FileRoot::prepare(tmp.path(), "p", 1 << 20, None).unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::fs::write(root.path.join("a"), "hello").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.path.join("out")).unwrap();
        std::os::unix::fs::symlink("a", root.path.join("in")).unwrap();
        std::fs::create_dir(root.path.join("d")).unwrap();
        let open_ = |p: &str, fl: &[&str]| open(&root, &validate(p, &flags(fl)).unwrap());
        assert!(open_("a", &["read"]).fd.is_some());
        assert_eq!(
            open_("out", &["read"]).result.unwrap_err().code,
            ErrorCode::Denied
        );
        assert_eq!(
            open_("in", &["read"]).result.unwrap_err().code,
            ErrorCode::Denied
        );
        assert_eq!(
            open_("d", &["read"]).result.unwrap_err().code,
            ErrorCode::Denied
        );
        assert_eq!(
            open_("missing", &["read"]).result.unwrap_err().code,
            ErrorCode::NotFound
        );
        let c = open_("new", &["write", "create"]);
        assert!(c.fd.is_some(), "{:?}", c.result);
        let made = std::process::Command::new("mkfifo")
            .arg(root.path.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let e = open_("fifo", &["write"]).result.unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied);
        assert!(e.message.contains("fifo"), "{}", e.message);
    }
}
