//! The audit writer: one live file per log, held under an exclusive lock, with
//! buffered appends, a bounded flush interval, an fsync policy, size-based rotation,
//! and recovery on open (resume the chain; move a torn final line aside). An open
//! log splits into its [`Chain`] (seq and last hash: encodes and hashes lines) and
//! its [`LogFile`] (buffers, writes, syncs and rotates whole lines), so that the two
//! can run on different threads.
//!
//! The line format lives in `line`; checking a whole chain lives in `verify`. This
//! module never rewrites a complete line: the only bytes it ever removes are an
//! unterminated tail, and those are saved to `PATH.torn-<seq>` first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::line::{self, ZERO_HASH};
use super::{time, AuditConfig, AuditError, Event, Fields, FsyncPolicy};

/// Buffered bytes that force a flush even before the interval is up.
pub const MAX_BUFFER: usize = 64 * 1024;

/// How far back `open` reads at a time when looking for the last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// An open audit log: its [`Chain`] (what the next line carries) and its
/// [`LogFile`] (where lines go). Single writer: a second `open` of the same path
/// fails while this one is alive. Dropping it flushes (best effort); call
/// [`AuditLog::close`] to see a flush error. [`AuditLog::split`] gives the two
/// halves to two threads: one encodes and hashes, the other writes and syncs.
#[derive(Debug)]
pub struct AuditLog {
    chain: Chain,
    file: LogFile,
}

/// The hash chain's state: the seq and the hash the next line carries. Encodes
/// events into complete lines, each ending in a newline, ready for
/// [`LogFile::append_lines`].
#[derive(Debug)]
pub struct Chain {
    next_seq: u64,
    last_hash: String,
    /// The line being encoded, reused between events.
    scratch: Vec<u8>,
    /// The live file's path, for errors.
    path: PathBuf,
}

/// Where an audit log's lines go: the live file, held under an exclusive lock,
/// with the buffer, the flush interval, the fsync policy and rotation. It takes
/// whole lines and never looks inside them.
#[derive(Debug)]
pub struct LogFile {
    cfg: AuditConfig,
    file: File,
    /// `PATH.lock`: held (flock) for the log's life; it also keeps the next
    /// rotation number, so that numbers keep growing after rotated files are
    /// archived away.
    lock: File,
    /// Bytes already written to the live file.
    file_bytes: u64,
    buf: Vec<u8>,
    /// When the oldest event not yet flushed was accepted: still buffered, or
    /// written (at 64 KiB) but not yet synced. The flush interval runs from it.
    pending_since: Option<Instant>,
    next_rotation: u64,
}

/// What `open` found at the end of a file.
struct Tail {
    len: u64,
    /// The last newline-terminated line, without its newline.
    last: Option<Vec<u8>>,
    /// Where the unterminated bytes after the last newline start, if any.
    torn_from: Option<u64>,
}

impl AuditLog {
    /// Opens (creating if needed) the log at `cfg.path` and resumes its chain.
    ///
    /// Resuming reads the last line of the live file (or, when the live file is
    /// missing or empty, of the newest rotated file) to recover the next seq and the
    /// last hash; a last line that is not a valid record is refused. An unterminated
    /// final line (a write cut short by a crash) is moved to `PATH.torn-<seq>`, the
    /// file is cut back to its last complete line, and that fact is the first event
    /// written (`kind` `audit.torn_tail`).
    pub fn open(cfg: AuditConfig) -> Result<AuditLog, AuditError> {
        if cfg.rotate_bytes == Some(0) {
            return Err(AuditError::Config("rotate_bytes must be greater than 0"));
        }
        if cfg.path.file_name().is_none() {
            return Err(AuditError::Config("the log path has no file name"));
        }
        let path = cfg.path.clone();
        // Before the lock file is made next to it: no `/dev/null.lock`.
        regular_or_missing(&path)?;
        let lock = lock(&path)?;
        let kept_rotation = read_next_rotation(&lock);
        let (mut file, created) = open_live(&path)?;
        let tail = read_tail(&file, &path)?;
        // The directory entry must be durable before the first event is written
        // into the file. A file we just created needs the directory fsync; so does
        // an empty one (its creator may have died before syncing). A non-empty file
        // was synced by whichever writer first wrote to it (the same rule held for
        // it), so the fsync is skipped: it is the slowest step of opening a log.
        if created || tail.len == 0 {
            sync_dir(&path)?;
        }
        let rotated = rotated_numbered(&path)?;
        let (next_seq, last_hash) = match &tail.last {
            Some(l) => resume_from(l, &path)?,
            None => resume_from_newest_rotated(&rotated)?,
        };
        let torn = match tail.torn_from {
            Some(from) => Some(move_torn_aside(&mut file, &path, from, tail.len, next_seq)?),
            None => None,
        };
        let file_bytes = tail.torn_from.unwrap_or(tail.len);
        let mut log = AuditLog {
            chain: Chain {
                next_seq,
                last_hash,
                scratch: Vec::new(),
                path: path.clone(),
            },
            file: LogFile {
                cfg,
                file,
                lock,
                file_bytes,
                buf: Vec::new(),
                pending_since: None,
                next_rotation: rotated.last().map_or(1, |(n, _)| n + 1).max(kept_rotation),
            },
        };
        if let Some((saved_to, bytes)) = torn {
            let mut extra = serde_json::Map::new();
            extra.insert("saved_to".into(), saved_to.display().to_string().into());
            extra.insert("bytes".into(), bytes.len().into());
            extra.insert("sha256".into(), line::hash(&bytes).into());
            log.append(&Event {
                kind: "audit.torn_tail",
                reason: Some(
                    "the last line was not terminated (a write cut short by a crash); it was moved aside"
                        .into(),
                ),
                extra,
                ..Event::default()
            })?;
            log.flush()?;
            // Synced at once whatever the policy (`flush` skips it under Never):
            // the bytes it accounts for were moved aside already.
            log.file.sync()?;
        }
        Ok(log)
    }

    /// Adds one event and returns its seq. The line is buffered; it is written when
    /// a flush is due (interval or buffer size) or at once under
    /// [`FsyncPolicy::EveryEvent`]. If that write fails the event stays buffered,
    /// the error is returned, and the next flush retries it.
    pub fn append(&mut self, e: &Event) -> Result<u64, AuditError> {
        let seq = self.append_at(&e.fields(), time::micros(SystemTime::now()))?;
        if self.flush_due() == Some(Duration::ZERO) {
            self.flush()?;
        }
        Ok(seq)
    }

    /// [`AuditLog::append`] for a borrowed view of the fields, with the event's own
    /// time (microseconds since the epoch): a writer that queues events stamps them
    /// when they happen, not when its thread gets to them. The flush interval runs
    /// from that time, and the caller flushes when [`AuditLog::flush_due`] says so:
    /// a writer catching up on a backlog older than the interval then syncs once
    /// per batch, not once per event. Under [`FsyncPolicy::EveryEvent`] each
    /// event is written and synced here.
    pub fn append_at(&mut self, e: &Fields<'_>, now: i64) -> Result<u64, AuditError> {
        let len = self.chain.encode(e, now)?;
        // Rotated before the line is part of the chain: a failed rotation leaves
        // the chain where it was.
        self.file.make_room(len)?;
        let seq = self.chain.commit_into(&mut self.file.buf);
        self.file.buffered(now)?;
        Ok(seq)
    }

    /// Writes the buffered lines and, unless the policy is `Never`, fdatasyncs
    /// them and any written earlier without a sync (at 64 KiB).
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.file.flush()
    }

    /// Time until a flush is due (zero when overdue), for an event loop's poll
    /// timeout; `None` when every accepted event is flushed.
    pub fn flush_due(&self) -> Option<Duration> {
        self.file.flush_due()
    }

    /// The configured flush interval.
    pub fn flush_interval(&self) -> Duration {
        self.file.flush_interval()
    }

    /// The configured fsync policy.
    pub fn fsync(&self) -> FsyncPolicy {
        self.file.cfg.fsync
    }

    /// Flushes and syncs (whatever the policy) and closes the log.
    pub fn close(self) -> Result<(), AuditError> {
        self.file.close()
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.chain.next_seq
    }

    /// The sha256 of the last accepted line (64 zeros for an empty log): the value
    /// to anchor externally for `warden audit verify --expect-last`.
    pub fn last_hash(&self) -> &str {
        &self.chain.last_hash
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The two halves, for a caller that encodes on one thread and writes on
    /// another: every line the chain encodes must go to this file, in order.
    pub fn split(self) -> (Chain, LogFile) {
        (self.chain, self.file)
    }
}

impl Chain {
    /// Encodes `e` as the next line into the scratch buffer, without making it
    /// part of the chain yet ([`Chain::commit_into`] does); returns its length
    /// with the newline.
    fn encode(&mut self, e: &Fields<'_>, now: i64) -> Result<usize, AuditError> {
        if e.kind.is_empty() {
            return Err(AuditError::EmptyKind);
        }
        // The last seq there is stays unwritten, so that `next_seq` never wraps.
        if self.next_seq == u64::MAX {
            return Err(AuditError::SeqExhausted {
                path: self.path.clone(),
            });
        }
        self.scratch.clear();
        line::encode_into(&mut self.scratch, self.next_seq, now, e, &self.last_hash).map_err(
            |source| AuditError::Encode {
                kind: e.kind.to_owned(),
                source,
            },
        )?;
        Ok(self.scratch.len() + 1)
    }

    /// Makes the line [`Chain::encode`] left the chain's last: hashes it, appends
    /// it and its newline to `out`, and returns its seq.
    fn commit_into(&mut self, out: &mut Vec<u8>) -> u64 {
        line::hash_into(&mut self.last_hash, &self.scratch);
        out.extend_from_slice(&self.scratch);
        out.push(b'\n');
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Encodes `e`, which happened at `now` (microseconds since the epoch), as
    /// the next line, appended with its newline to `out`; returns its seq. On an
    /// error nothing is appended and the chain stays where it was.
    pub fn append_to(
        &mut self,
        out: &mut Vec<u8>,
        e: &Fields<'_>,
        now: i64,
    ) -> Result<u64, AuditError> {
        self.encode(e, now)?;
        Ok(self.commit_into(out))
    }
}

impl LogFile {
    /// Takes whole lines (each ending in a newline, from this log's [`Chain`], in
    /// order), the oldest of which happened at `oldest_us`. The flush interval
    /// runs from then. They are buffered, and written when a flush is due, at
    /// 64 KiB, or at once under [`FsyncPolicy::EveryEvent`] (written and synced
    /// here). With rotation on, the live file is rotated between lines, before
    /// the one that would take it past the limit.
    pub fn append_lines(&mut self, lines: &[u8], oldest_us: i64) -> Result<(), AuditError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.cfg.rotate_bytes.is_some() {
            for l in lines.split_inclusive(|&b| b == b'\n') {
                self.make_room(l.len())?;
                self.buf.extend_from_slice(l);
            }
        } else {
            self.buf.extend_from_slice(lines);
        }
        self.buffered(oldest_us)
    }

    /// Rotates first when a line of `len` bytes would take the live file past
    /// the rotation size (a lone line longer than that still goes in).
    fn make_room(&mut self, len: usize) -> Result<(), AuditError> {
        if let Some(max) = self.cfg.rotate_bytes {
            let pending = self.file_bytes + self.buf.len() as u64;
            if pending > 0 && pending + len as u64 > max {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// After lines were added to the buffer, the oldest of them from `oldest_us`:
    /// starts the flush interval if none runs, and writes per the policy and the
    /// buffer's size.
    fn buffered(&mut self, oldest_us: i64) -> Result<(), AuditError> {
        // The interval runs from when the event happened, not from when a
        // writer that queues events got to it: an event is in memory for at
        // most one interval in all.
        // The first buffered event is the oldest (lines come in time order), so
        // the clock is read once per flush, not per event.
        if self.pending_since.is_none() {
            let age = time::micros(SystemTime::now())
                .saturating_sub(oldest_us)
                .max(0) as u64;
            let age = Duration::from_micros(age).min(self.cfg.flush_interval);
            self.pending_since = Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
        }
        if self.cfg.fsync == FsyncPolicy::EveryEvent {
            self.flush()?;
        } else if self.buf.len() >= MAX_BUFFER {
            // Written now; synced with the next interval flush, so that a busy log
            // syncs a few times a second rather than once per 64 KiB.
            self.write_out()?;
        }
        Ok(())
    }

    /// fdatasync of the live file.
    fn sync(&self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Sync {
            path: self.cfg.path.clone(),
            source,
        })
    }

    /// Writes the buffered lines and, unless the policy is `Never`, fdatasyncs
    /// them and any written earlier without a sync (at 64 KiB). A failed write is
    /// cut back so the file never ends in a partial line of ours.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.write_out()?;
        if self.pending_since.is_some() && self.cfg.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        self.pending_since = None;
        Ok(())
    }

    /// Writes the buffered lines without syncing. A failed write is cut back so
    /// the file never ends in a partial line of ours.
    fn write_out(&mut self) -> Result<(), AuditError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Lines written into a file nobody can reach any more are lost without a
        // word: a deleted live file is an error (the lines stay buffered).
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|source| AuditError::Write {
            path: self.cfg.path.clone(),
            source,
        })?;
        if meta.nlink() == 0 {
            return Err(AuditError::Unlinked {
                path: self.cfg.path.clone(),
            });
        }
        // Shorter than what we wrote: truncated under us (logrotate's
        // copytruncate). Lines written between its copy and the truncation are
        // in neither file, and the new file would look like a chain that merely
        // starts later: an error, so that the owner stops. The lines in hand
        // still go in (and are synced), so that only that window is lost, and
        // later lines (the owner's own on its way out) are written as usual.
        let truncated = (meta.len() < self.file_bytes).then(|| AuditError::Truncated {
            path: self.cfg.path.clone(),
            written: self.file_bytes,
            found: meta.len(),
        });
        if truncated.is_some() {
            self.file_bytes = meta.len();
        }
        if let Err(source) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(self.file_bytes);
            return Err(AuditError::Write {
                path: self.cfg.path.clone(),
                source,
            });
        }
        self.file_bytes += self.buf.len() as u64;
        self.buf.clear();
        match truncated {
            Some(e) => {
                self.sync()?;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Time until a flush is due (zero when overdue), for an event loop's poll
    /// timeout; `None` when every accepted event is flushed.
    pub fn flush_due(&self) -> Option<Duration> {
        self.pending_since
            .map(|t| self.cfg.flush_interval.saturating_sub(t.elapsed()))
    }

    /// The configured flush interval.
    pub fn flush_interval(&self) -> Duration {
        self.cfg.flush_interval
    }

    /// Flushes and syncs (whatever the policy) and closes the log. `fdatasync`, as
    /// after a flush: it makes the appended lines and the file size durable, all
    /// that reading them back needs, and costs about half of an `fsync` here.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.write_out()?;
        self.sync()?;
        // Synced: nothing left for Drop to do.
        self.pending_since = None;
        Ok(())
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Flushes and fsyncs the live file, renames it to the next `PATH.NNNNNN`, and
    /// starts a new empty live file.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        let path = self.cfg.path.clone();
        self.file.sync_all().map_err(|source| AuditError::Sync {
            path: path.clone(),
            source,
        })?;
        let to = rotated_path(&path, self.next_rotation);
        let rotate_err = |source| AuditError::Rotate {
            from: path.clone(),
            to: to.clone(),
            source,
        };
        if to.symlink_metadata().is_ok() {
            return Err(rotate_err(io::Error::from(io::ErrorKind::AlreadyExists)));
        }
        // The next number is kept first: a crash after it costs a gap in the
        // numbers, never a number given twice.
        write_next_rotation(&self.lock, self.next_rotation + 1).map_err(rotate_err)?;
        fs::rename(&path, &to).map_err(rotate_err)?;
        self.next_rotation += 1;
        match open_live(&path) {
            Ok((file, _)) => self.file = file,
            Err(e) => {
                // No new file (out of descriptors, say): the old one goes back
                // to PATH, so that the lines still coming go on in it there,
                // not into a rotated file, and the next rotation can succeed.
                let _ = fs::rename(&to, &path);
                return Err(e);
            }
        }
        self.file_bytes = 0;
        sync_dir(&path)
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The rotated files of the log at `path` (`PATH.000001`, ...), oldest first: with
/// `path` itself appended, the argument list for `warden audit verify`.
pub fn rotated_files(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    Ok(rotated_numbered(path)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

fn rotated_path(path: &Path, n: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{n:06}"));
    path.with_file_name(name)
}

fn rotated_numbered(path: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let dir = parent(path);
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let read_err = |source| AuditError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let Some(digits) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = digits.parse::<u64>() {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn lock(path: &Path) -> Result<File, AuditError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| AuditError::Open {
            path: lock_path.clone(),
            source,
        })?;
    match crate::sys::fs::flock_soon(&f, true) {
        Ok(()) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(AuditError::Locked {
            path: path.to_path_buf(),
            holder: crate::sys::fs::flock_holders(&f),
        }),
        Err(source) => Err(AuditError::Lock {
            path: lock_path,
            source,
        }),
    }
}

/// The next rotation number kept in the lock file (`next_rotation=N`), 0 when
/// it keeps none (a log never rotated, or one rotated by an older warden).
fn read_next_rotation(lock: &File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 64];
    let n = lock.read_at(&mut buf, 0).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.trim().strip_prefix("next_rotation="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Keeps `n` as the next rotation number in the lock file, synced.
fn write_next_rotation(lock: &File, n: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let text = format!("next_rotation={n}\n");
    lock.set_len(0)?;
    lock.write_all_at(text.as_bytes(), 0)?;
    lock.sync_data()
}

/// Refuses a log path that names anything but a regular file (or nothing yet).
/// A symlink is refused too: the lock is `NAME.lock` beside the name given, so a
/// second name for the same file would let a second writer in, forking the chain.
fn regular_or_missing(path: &Path) -> Result<(), AuditError> {
    match fs::symlink_metadata(path) {
        Ok(m) => not_a_file(path, &m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
            // The lock file beside it would be the first thing to fail, named
            // instead of the directory.
            Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
                Err(AuditError::NoDirectory {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                })
            }
            _ => Ok(()),
        },
        Err(source) => Err(AuditError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn not_a_file(path: &Path, m: &fs::Metadata) -> Result<(), AuditError> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    let (what, hint) = if t.is_file() {
        return Ok(());
    } else if t.is_symlink() {
        (
            "is a symbolic link",
            " (give the path it points to: under a second name a second writer would get past the lock)",
        )
    } else if t.is_dir() {
        ("is a directory", "")
    } else if t.is_fifo() {
        ("is a FIFO", "")
    } else if t.is_char_device() {
        ("is a character device", "")
    } else if t.is_block_device() {
        ("is a block device", "")
    } else if t.is_socket() {
        ("is a socket", "")
    } else {
        ("is not a regular file", "")
    };
    Err(AuditError::NotAFile {
        path: path.to_path_buf(),
        what,
        hint,
    })
}

/// Opens the live file for appending, creating it when missing; says whether it
/// was created (the caller holds the log's lock, so nobody else creates it meanwhile).
/// A symlink is not followed, and what is opened must be a regular file.
fn open_live(path: &Path) -> Result<(File, bool), AuditError> {
    let open = |create: bool| {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(create)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o640)
            .open(path)
    };
    let open_err = |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    };
    let (file, created) = match open(false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => open(true).map(|f| (f, true)),
        r => r.map(|f| (f, false)),
    }
    .map_err(open_err)?;
    not_a_file(path, &file.metadata().map_err(open_err)?)?;
    Ok((file, created))
}

fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AuditError::Sync {
            path: dir.to_path_buf(),
            source,
        })
}

/// Finds the last complete line and any unterminated bytes after it, reading
/// backwards from the end in chunks.
fn read_tail(file: &File, path: &Path) -> Result<Tail, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(read_err)?.len();
    let mut pos = len;
    let mut acc: Vec<u8> = Vec::new(); // the bytes [pos, len)
    loop {
        let last_nl = acc.iter().rposition(|&b| b == b'\n');
        let enough = last_nl.is_some_and(|i| acc[..i].contains(&b'\n'));
        if enough || pos == 0 {
            break;
        }
        let step = TAIL_CHUNK.min(pos);
        pos -= step;
        let mut chunk = vec![0; step as usize];
        file.read_exact_at(&mut chunk, pos).map_err(read_err)?;
        chunk.extend_from_slice(&acc);
        acc = chunk;
    }
    let Some(end) = acc.iter().rposition(|&b| b == b'\n') else {
        return Ok(Tail {
            len,
            last: None,
            torn_from: (len > 0).then_some(0),
        });
    };
    let start = acc[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |j| j + 1);
    let end_abs = pos + end as u64;
    Ok(Tail {
        len,
        last: Some(acc[start..end].to_vec()),
        torn_from: (end_abs + 1 < len).then_some(end_abs + 1),
    })
}

fn resume_from(last: &[u8], path: &Path) -> Result<(u64, String), AuditError> {
    let r = line::parse(last).map_err(|why| AuditError::BrokenTail {
        path: path.to_path_buf(),
        why,
    })?;
    let next = r
        .seq
        .checked_add(1)
        .ok_or_else(|| AuditError::SeqExhausted {
            path: path.to_path_buf(),
        })?;
    Ok((next, line::hash(last)))
}

/// The chain's state after the rotated file whose last line has the highest seq
/// (a new chain when there is none). Highest seq, not highest number: a live
/// file renamed by hand (`PATH.1`, as docs/audit.md allows) or by logrotate
/// (which numbers newest first) is not numbered the way warden numbers, and
/// resuming from the highest number forked the chain.
fn resume_from_newest_rotated(rotated: &[(u64, PathBuf)]) -> Result<(u64, String), AuditError> {
    let mut newest = (1, ZERO_HASH.to_string());
    for (_, p) in rotated {
        let next = resume_from_rotated(p)?;
        if next.0 > newest.0 {
            newest = next;
        }
    }
    Ok(newest)
}

fn resume_from_rotated(path: &Path) -> Result<(u64, String), AuditError> {
    let f = File::open(path).map_err(|source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let tail = read_tail(&f, path)?;
    if tail.torn_from.is_some() {
        return Err(AuditError::TornRotated {
            path: path.to_path_buf(),
        });
    }
    match tail.last {
        Some(l) => resume_from(&l, path),
        None => Ok((1, ZERO_HASH.to_string())),
    }
}

/// Copies the bytes `[from, len)` to a new `PATH.torn-<seq>` (fsynced), then cuts
/// the live file back to `from` (fsynced). Returns where they went and the bytes.
fn move_torn_aside(
    file: &mut File,
    path: &Path,
    from: u64,
    len: u64,
    seq: u64,
) -> Result<(PathBuf, Vec<u8>), AuditError> {
    let mut bytes = vec![0; (len - from) as usize];
    file.read_exact_at(&mut bytes, from)
        .map_err(|source| AuditError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".torn-{seq}"));
    let mut to = path.with_file_name(&name);
    let mut n = 1;
    let saved = loop {
        let attempt = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&to);
        match attempt {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                let mut again = name.clone();
                again.push(format!(".{n}"));
                to = path.with_file_name(again);
                n += 1;
            }
            other => break other,
        }
    };
    let save_err = |source| AuditError::SaveTorn {
        path: path.to_path_buf(),
        to: to.clone(),
        source,
    };
    let mut saved = saved.map_err(save_err)?;
    saved.write_all(&bytes).map_err(save_err)?;
    saved.sync_all().map_err(save_err)?;
    sync_dir(&to)?;
    file.set_len(from).map_err(save_err)?;
    file.sync_all().map_err(|source| AuditError::Sync {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((to, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_files, Decision, VerifyReport};

    fn event(i: u64) -> Event {
        Event {
            kind: "host_call",
            plugin: Some("echo".into()),
            op: Some("kv.get".into()),
            decision: Some(Decision::Allow),
            duration_us: Some(i),
            ..Event::default()
        }
    }

    #[test]
    fn open_live_says_whether_it_created_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        assert!(open_live(&path).unwrap().1, "created");
        assert!(!open_live(&path).unwrap().1, "already there");
    }

    fn intact(files: &[PathBuf]) -> u64 {
        match verify_files(files).unwrap() {
            VerifyReport::Intact { events, .. } => events,
            broken => panic!("{broken:?}"),
        }
    }

    #[test]
    fn buffers_until_flush_and_drop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = Duration::from_secs(3600);
        let mut log = AuditLog::open(cfg).unwrap();
        assert_eq!(log.flush_due(), None);
        assert_eq!(log.append(&event(1)).unwrap(), 1);
        assert_eq!(log.append(&event(2)).unwrap(), 2);
        assert!(log.flush_due().unwrap() > Duration::from_secs(3000));
        assert_eq!(
            fs::read(&path).unwrap().len(),
            0,
            "buffered, not written yet"
        );
        log.flush().unwrap();
        assert_eq!(log.flush_due(), None);
        assert_eq!(intact(std::slice::from_ref(&path)), 2);
        log.append(&event(3)).unwrap();
        drop(log);
        assert_eq!(intact(&[path]), 3);
    }

    /// Lines written at 64 KiB are not synced yet: the interval flush that syncs
    /// them stays due, even when no event follows them.
    #[test]
    fn a_write_at_the_buffer_size_leaves_its_sync_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = Duration::from_secs(3600);
        let mut log = AuditLog::open(cfg).unwrap();
        let mut n = 0;
        while fs::metadata(&path).unwrap().len() == 0 {
            n += 1;
            log.append(&event(n)).unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() >= MAX_BUFFER as u64);
        let due = log
            .flush_due()
            .expect("a flush is still due for the unsynced lines");
        assert!(due > Duration::from_secs(3000), "{due:?}");
        log.flush().unwrap();
        assert_eq!(log.flush_due(), None);
        assert_eq!(intact(&[path]), n);
    }

    /// A log whose last seq is the largest there is cannot be continued: `open`
    /// says so (it used to overflow).
    #[test]
    fn a_log_at_the_last_seq_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let fields = Fields {
            kind: "host_call",
            ..Fields::default()
        };
        let mut text = line::encode(u64::MAX, 0, &fields, &line::hash(b"x")).unwrap();
        text.push(b'\n');
        fs::write(&path, &text).unwrap();
        let e = AuditLog::open(AuditConfig::new(&path))
            .map(drop)
            .unwrap_err();
        assert!(matches!(e, AuditError::SeqExhausted { .. }), "{e}");
        // One short of it: it opens, and refuses to append past the last seq.
        let mut text = line::encode(u64::MAX - 1, 0, &fields, &line::hash(b"x")).unwrap();
        text.push(b'\n');
        fs::write(&path, &text).unwrap();
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        let e = log.append(&event(1)).unwrap_err();
        assert!(matches!(e, AuditError::SeqExhausted { .. }), "{e}");
    }

    #[test]
    fn every_event_writes_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.fsync = FsyncPolicy::EveryEvent;
        let mut log = AuditLog::open(cfg).unwrap();
        log.append(&event(1)).unwrap();
        assert_eq!(log.flush_due(), None);
        assert_eq!(intact(std::slice::from_ref(&path)), 1);
        // Skip Drop, as SIGKILL would: the event is already on disk.
        std::mem::forget(log);
        assert_eq!(intact(&[path]), 1);
    }

    #[test]
    fn overdue_flush_happens_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.flush_interval = Duration::ZERO;
        let mut log = AuditLog::open(cfg).unwrap();
        log.append(&event(1)).unwrap();
        assert_eq!(log.flush_due(), None);
        assert_eq!(intact(&[path]), 1);
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let _log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        let e = AuditLog::open(AuditConfig::new(&path)).unwrap_err();
        // The refusal names the holder, here this very process.
        assert_eq!(
            e.to_string(),
            format!(
                "{}: another process is writing this audit log (lock held by pid {} ({}))",
                path.display(),
                std::process::id(),
                std::fs::read_to_string("/proc/self/comm")
                    .unwrap()
                    .trim_end()
            )
        );
    }

    /// A second name for a log (a symlink) got a lock of its own (`NAME.lock`
    /// beside the link), so two wardens wrote the same file at once and forked
    /// the chain; a dangling one failed "File exists". Both are refused, naming
    /// the path and why.
    #[test]
    fn a_symlinked_log_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let alias = dir.path().join("alias.log");
        std::os::unix::fs::symlink(&path, &alias).unwrap();
        let _log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        let e = AuditLog::open(AuditConfig::new(&alias)).unwrap_err();
        assert!(matches!(e, AuditError::NotAFile { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is a symbolic link; the audit log must be a regular file (give the path it points to: under a second name a second writer would get past the lock)",
                alias.display()
            )
        );
        let dangling = dir.path().join("dangling.log");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let e = AuditLog::open(AuditConfig::new(&dangling)).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(!dir.path().join("nowhere").exists());
    }

    /// A FIFO or a directory as the log was opened (a FIFO's events then went
    /// nowhere durable, and the run failed only at exit, after the plugin ran,
    /// on "cannot fsync"); a lock file was made beside it first. Refused up
    /// front, naming the path and what it is, with no lock file left behind.
    #[test]
    fn a_log_path_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = AuditLog::open(AuditConfig::new(&fifo)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is a FIFO; the audit log must be a regular file",
                fifo.display()
            )
        );
        assert!(!dir.path().join("fifo.log.lock").exists());
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let e = AuditLog::open(AuditConfig::new(&sub)).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    /// A log whose directory does not exist is refused naming the directory
    /// (the error named the lock file beside the log, `PATH.lock`).
    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere/audit.log");
        let e = AuditLog::open(AuditConfig::new(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: its directory {} does not exist (warden makes the log, not its directory)",
                path.display(),
                dir.path().join("nowhere").display()
            )
        );
    }

    /// A live file deleted while open (by hand, or a logrotate `create` setup
    /// without a restart gone wrong) took every later event with it, and flushes
    /// said nothing. The next flush now fails, naming the file.
    #[test]
    fn a_deleted_live_file_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        log.append(&event(1)).unwrap();
        log.flush().unwrap();
        fs::remove_file(&path).unwrap();
        log.append(&event(2)).unwrap();
        let e = log.flush().unwrap_err();
        assert!(matches!(e, AuditError::Unlinked { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!(
            "{}: the live file was deleted while this warden was writing it",
            path.display()
        )));
        drop(log);
        // Renamed aside instead, the file keeps its events and the chain.
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        log.append(&event(1)).unwrap();
        let aside = dir.path().join("aside.log");
        fs::rename(&path, &aside).unwrap();
        log.append(&event(2)).unwrap();
        log.flush().unwrap();
        drop(log);
        assert_eq!(intact(&[aside]), 2);
    }

    /// logrotate's `copytruncate` copies the live file and then truncates it to
    /// 0 while warden writes it. warden went on writing (O_APPEND: at offset 0)
    /// as if nothing had happened: whatever was written between the copy and the
    /// truncation was in neither file, and the new file on its own verified
    /// `intact` (with only a note that the chain starts later). A live file
    /// shorter than what this warden wrote to it is now an error at the next
    /// flush, naming copytruncate, so that the owner stops; the lines in hand
    /// still go in, so that only the window between copy and truncation is lost,
    /// and verify shows that gap.
    #[test]
    fn copytruncate_of_the_live_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        log.append(&event(1)).unwrap();
        log.append(&event(2)).unwrap();
        log.flush().unwrap();
        // logrotate: copy, (warden writes seq 3 meanwhile), truncate.
        let copy = dir.path().join("audit.log.1");
        fs::copy(&path, &copy).unwrap();
        log.append(&event(3)).unwrap();
        log.flush().unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        log.append(&event(4)).unwrap();
        let e = log.flush().unwrap_err();
        assert!(matches!(e, AuditError::Truncated { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: the live file was truncated", path.display())),
            "{msg}"
        );
        assert!(msg.contains("copytruncate"), "{msg}");
        // Reported once; what follows (the owner's own events on its way out)
        // is written as usual.
        log.append(&event(5)).unwrap();
        log.flush().unwrap();
        drop(log);
        match verify_files(&[copy, path]).unwrap() {
            VerifyReport::Broken { what, .. } => {
                assert!(
                    what.contains("seq 4 follows seq 2: 1 event missing"),
                    "{what}"
                )
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        log.append(&event(1)).unwrap();
        let hash = log.last_hash().to_string();
        drop(log);
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        assert_eq!(log.next_seq(), 2);
        assert_eq!(log.last_hash(), hash);
        assert_eq!(log.append(&event(2)).unwrap(), 2);
        drop(log);
        assert_eq!(intact(&[path]), 2);
    }

    #[test]
    fn rotation_chains_across_files_and_resumes_after_a_crash_mid_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.rotate_bytes = Some(600);
        let mut log = AuditLog::open(cfg.clone()).unwrap();
        for i in 0..12 {
            log.append(&event(i)).unwrap();
        }
        drop(log);
        let mut files = rotated_files(&path).unwrap();
        assert!(files.len() >= 2, "{files:?}");
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() <= 600);
        }
        // As if the supervisor died between renaming the live file and writing to
        // the new one: the chain resumes from the newest rotated file.
        fs::remove_file(&path).unwrap();
        let mut log = AuditLog::open(cfg).unwrap();
        assert!(log.next_seq() > 1);
        log.append(&event(99)).unwrap();
        drop(log);
        files.push(path.clone());
        let events = intact(&files);
        assert_eq!(events, log_lines(&files));
        assert!(rotated_files(&path).unwrap().len() >= files.len() - 1);
    }

    /// Lines encoded by the chain on one side and handed to the file in one
    /// chunk on the other land exactly as one event at a time would: the same
    /// files, rotated between the same lines.
    #[test]
    fn a_chunk_of_lines_rotates_between_lines_as_single_appends_do() {
        let files_of = |dir: &Path| {
            let path = dir.join("audit.log");
            let mut files = rotated_files(&path).unwrap();
            files.push(path);
            files
                .iter()
                .map(|f| fs::read(f).unwrap())
                .collect::<Vec<_>>()
        };
        let (one, chunked) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let config = |dir: &Path| {
            let mut cfg = AuditConfig::new(dir.join("audit.log"));
            cfg.rotate_bytes = Some(600);
            cfg
        };
        let mut log = AuditLog::open(config(one.path())).unwrap();
        for i in 0..12 {
            log.append_at(&event(i).fields(), 1_700_000_000_000_000 + i as i64)
                .unwrap();
        }
        log.close().unwrap();
        let (mut chain, mut file) = AuditLog::open(config(chunked.path())).unwrap().split();
        let mut lines = Vec::new();
        for i in 0..12 {
            let seq = chain
                .append_to(
                    &mut lines,
                    &event(i).fields(),
                    1_700_000_000_000_000 + i as i64,
                )
                .unwrap();
            assert_eq!(seq, i + 1);
        }
        file.append_lines(&lines, 1_700_000_000_000_000).unwrap();
        file.close().unwrap();
        let (a, b) = (files_of(one.path()), files_of(chunked.path()));
        assert!(a.len() >= 3, "{} files", a.len());
        assert_eq!(a, b);
    }

    /// The live file renamed by hand to `PATH.1` (docs/audit.md: warden keeps
    /// writing it until restarted), beside warden's own `PATH.000001` and
    /// `PATH.000002`: a restart continues from the file with the newest lines,
    /// not from the highest number (which forked the chain: seqs given twice).
    #[test]
    fn a_restart_continues_from_the_newest_rotated_file_whatever_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.rotate_bytes = Some(600);
        let mut log = AuditLog::open(cfg.clone()).unwrap();
        for i in 0..8 {
            log.append(&event(i)).unwrap();
        }
        let next = log.next_seq();
        drop(log);
        assert!(rotated_files(&path).unwrap().len() >= 2);
        fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        let mut log = AuditLog::open(cfg).unwrap();
        assert_eq!(log.next_seq(), next);
        log.append(&event(99)).unwrap();
        drop(log);
        let mut files: Vec<PathBuf> = rotated_files(&path)
            .unwrap()
            .into_iter()
            .filter(|f| !f.ends_with("audit.log.1"))
            .collect();
        files.push(dir.path().join("audit.log.1"));
        files.push(path);
        assert_eq!(intact(&files), next);
    }

    fn log_lines(files: &[PathBuf]) -> u64 {
        files
            .iter()
            .map(|f| fs::read(f).unwrap().iter().filter(|&&b| b == b'\n').count() as u64)
            .sum()
    }

    #[test]
    fn torn_tail_is_moved_aside_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        for i in 0..3 {
            log.append(&event(i)).unwrap();
        }
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":4,"time":"2026-"#).unwrap();
        drop(f);
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        log.flush().unwrap();
        let torn = dir.path().join("audit.log.torn-4");
        assert_eq!(fs::read(&torn).unwrap(), br#"{"seq":4,"time":"2026-"#);
        assert_eq!(log.append(&event(5)).unwrap(), 5);
        drop(log);
        assert_eq!(intact(std::slice::from_ref(&path)), 5);
        let text = fs::read_to_string(&path).unwrap();
        let fourth = text.lines().nth(3).unwrap();
        let r = line::parse(fourth.as_bytes()).unwrap();
        assert_eq!((r.seq, r.kind.as_str()), (4, "audit.torn_tail"));
        assert_eq!(r.extra["saved_to"], torn.display().to_string());
        assert_eq!(r.extra["bytes"], 22);
    }

    #[test]
    fn broken_last_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fs::write(&path, "{\"seq\":1}\n").unwrap();
        let e = AuditLog::open(AuditConfig::new(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{p}: the last line is not a valid audit record (missing field \"time\"); refusing to chain onto it (run `warden audit verify {p}`)",
                p = path.display()
            )
        );
    }

    #[test]
    fn empty_kind_and_zero_rotation_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.rotate_bytes = Some(0);
        assert!(matches!(AuditLog::open(cfg), Err(AuditError::Config(_))));
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        assert!(matches!(
            log.append(&Event::default()),
            Err(AuditError::EmptyKind)
        ));
    }

    #[test]
    fn resumes_after_lines_longer_than_a_tail_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        for n in [100_000, 10, 200_000] {
            let mut e = event(n as u64);
            e.reason = Some("x".repeat(n));
            log.append(&e).unwrap();
        }
        let hash = log.last_hash().to_string();
        drop(log);
        let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        assert_eq!((log.next_seq(), log.last_hash()), (4, hash.as_str()));
    }
}
