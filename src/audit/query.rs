//! Filtering audit files: which lines match a plugin, decision, op, kind and age,
//! keeping the most recent N.
//!
//! Reads lines and parses them strictly (a line that is not a valid record is an
//! error naming it, not a silent skip) but does not check the hash chain: that is
//! `verify`'s job. An unterminated final line (a write in progress) is skipped.

use std::collections::VecDeque;
use std::path::PathBuf;

use super::line::{self, Record};
use super::{AuditError, Decision};

/// What to look for; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub plugin: Option<String>,
    pub decision: Option<Decision>,
    pub op: Option<String>,
    pub kind: Option<String>,
    /// Only events at or after this time (microseconds since the Unix epoch).
    pub since_us: Option<i64>,
    /// Keep only the last `limit` matches (the most recent).
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether `r` passes every condition that is set.
    pub fn matches(&self, r: &Record) -> bool {
        fn eq(want: &Option<String>, got: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| got.as_ref() == Some(w))
        }
        eq(&self.plugin, &r.plugin)
            && eq(&self.op, &r.op)
            && self.kind.as_ref().is_none_or(|k| *k == r.kind)
            && self.decision.is_none_or(|d| r.decision == Some(d))
            && self.since_us.is_none_or(|t| r.time_us >= t)
    }
}

/// One matching line: parsed, and exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub record: Record,
    pub line: String,
}

/// The matching lines of `files`, read in the order given, oldest first.
pub fn query(files: &[PathBuf], filter: &Filter) -> Result<Vec<Hit>, AuditError> {
    let mut hits = VecDeque::new();
    for path in files {
        let mut bad = None;
        super::each_line(path, |lineno, buf| {
            if buf.pop() != Some(b'\n') {
                return false; // a torn last line: nothing more to read
            }
            let record = match line::parse(buf) {
                Ok(r) => r,
                Err(why) => {
                    bad = Some(AuditError::BadRecord {
                        path: path.clone(),
                        line: lineno,
                        why,
                    });
                    return false;
                }
            };
            if filter.matches(&record) {
                // parse succeeded, so the bytes are valid UTF-8
                let line = String::from_utf8_lossy(buf).into_owned();
                hits.push_back(Hit { record, line });
                if filter.limit.is_some_and(|l| hits.len() > l) {
                    hits.pop_front();
                }
            }
            true
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
    }
    Ok(hits.into())
}
