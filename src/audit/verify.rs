//! Checking a chain of audit files: every line strict, seq continuous, and each
//! line's `prev` the sha256 of the line before it, across files in the order given.
//!
//! Reports the first broken link and stops. It never modifies a file and knows
//! nothing about how the log is written.

use std::path::PathBuf;

use super::line::{self, Record, ZERO_HASH};
use super::AuditError;

/// The outcome of [`verify_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every link holds.
    Intact {
        events: u64,
        /// The seq of the first line (1 unless the oldest files were not given);
        /// `None` when there are no events.
        first_seq: Option<u64>,
        /// The sha256 of the last line, for anchoring externally; `None` when empty.
        last_hash: Option<String>,
    },
    /// The first broken link: which file, which line (from 1), and what is wrong.
    Broken {
        file: PathBuf,
        line: u64,
        what: String,
    },
}

/// Where the previous line was, and what it was.
struct Link {
    file: usize,
    line: u64,
    seq: u64,
    hash: String,
}

/// Verifies `paths` as one chain, oldest file first.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, AuditError> {
    let mut events = 0;
    let mut first_seq = None;
    let mut last: Option<Link> = None;
    for (fi, path) in paths.iter().enumerate() {
        let mut report = None;
        super::each_line(path, |lineno, buf| {
            let broken = |what: String| VerifyReport::Broken {
                file: path.clone(),
                line: lineno,
                what,
            };
            if buf.pop() != Some(b'\n') {
                report = Some(broken(
                    "not terminated by a newline (a write cut short by a crash, or the file was truncated)"
                        .into(),
                ));
                return false;
            }
            let record = match line::parse(buf) {
                Ok(r) => r,
                Err(e) => {
                    report = Some(broken(format!(
                        "not a valid audit record: {e} (line edited or truncated)"
                    )));
                    return false;
                }
            };
            if let Some(what) = check_link(&record, last.as_ref(), paths, fi, lineno) {
                report = Some(broken(what));
                return false;
            }
            events += 1;
            first_seq.get_or_insert(record.seq);
            last = Some(Link {
                file: fi,
                line: lineno,
                seq: record.seq,
                hash: line::hash(buf),
            });
            true
        })?;
        if let Some(r) = report {
            return Ok(r);
        }
    }
    Ok(VerifyReport::Intact {
        events,
        first_seq,
        last_hash: last.map(|l| l.hash),
    })
}

/// What is wrong with the link from `prev` to `r`, if anything.
fn check_link(
    r: &Record,
    prev: Option<&Link>,
    paths: &[PathBuf],
    file: usize,
    line: u64,
) -> Option<String> {
    let Some(p) = prev else {
        // The first line given: it starts the log, or continues files not given.
        return match (r.seq, r.prev == ZERO_HASH) {
            (1, false) => Some("seq 1 must have the all-zero prev of a log's first line".into()),
            (s, true) if s != 1 => Some(format!(
                "seq {s} has the all-zero prev of a log's first line, but a log starts at seq 1"
            )),
            _ => None,
        };
    };
    let before = if p.file == file {
        format!("line {}", p.line)
    } else {
        format!("the last line of {}", paths[p.file].display())
    };
    if r.seq <= p.seq {
        return Some(format!(
            "seq {} does not follow seq {} (lines reordered or duplicated)",
            r.seq, p.seq
        ));
    }
    if r.seq > p.seq + 1 {
        let missing = r.seq - p.seq - 1;
        let hint = if line == 1 && file > 0 {
            "lines deleted or reordered, or a file missing before this one"
        } else {
            "lines deleted or reordered"
        };
        return Some(format!(
            "seq {} follows seq {}: {missing} event{} missing ({hint})",
            r.seq,
            p.seq,
            if missing == 1 { "" } else { "s" }
        ));
    }
    if r.prev != p.hash {
        return Some(format!(
            "prev does not match the sha256 of {before} ({before} was edited, or this line's prev was)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    /// Writes `lines` (seq, prev) as a file; returns its path.
    fn file(dir: &std::path::Path, lines: &[(u64, &str)]) -> PathBuf {
        let mut text = Vec::new();
        for &(seq, prev) in lines {
            let e = Event {
                kind: "admin",
                ..Event::default()
            };
            text.extend(line::encode(seq, 0, &e.fields(), prev).unwrap());
            text.push(b'\n');
        }
        let p = dir.join("a.log");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn what(r: VerifyReport) -> String {
        match r {
            VerifyReport::Broken { what, line, .. } => format!("{line}: {what}"),
            intact => panic!("{intact:?}"),
        }
    }

    #[test]
    fn first_line_rules() {
        let dir = tempfile::tempdir().unwrap();
        let other = line::hash(b"x");
        let p = file(dir.path(), &[(1, &other)]);
        assert_eq!(
            what(verify_files(&[p]).unwrap()),
            "1: seq 1 must have the all-zero prev of a log's first line"
        );
        let p = file(dir.path(), &[(2, ZERO_HASH)]);
        assert_eq!(
            what(verify_files(&[p]).unwrap()),
            "1: seq 2 has the all-zero prev of a log's first line, but a log starts at seq 1"
        );
        // A later file on its own: accepted, and the report says where it starts.
        let p = file(dir.path(), &[(7, &other)]);
        assert_eq!(
            verify_files(&[p]).unwrap(),
            VerifyReport::Intact {
                events: 1,
                first_seq: Some(7),
                last_hash: Some(line::hash(
                    &line::encode(
                        7,
                        0,
                        &Event {
                            kind: "admin",
                            ..Event::default()
                        }
                        .fields(),
                        &other
                    )
                    .unwrap()
                )),
            }
        );
    }

    #[test]
    fn empty_files_are_intact() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), &[]);
        assert_eq!(
            verify_files(&[p]).unwrap(),
            VerifyReport::Intact {
                events: 0,
                first_seq: None,
                last_hash: None
            }
        );
    }

    #[test]
    fn a_zero_prev_in_the_middle_is_a_broken_link() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), &[(1, ZERO_HASH), (2, ZERO_HASH)]);
        assert_eq!(
            what(verify_files(&[p]).unwrap()),
            "2: prev does not match the sha256 of line 1 (line 1 was edited, or this line's prev was)"
        );
    }
}
