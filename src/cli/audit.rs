//! `warden audit verify` and `warden audit query`: parse the flags, call
//! `crate::audit`, and print one line (verify) or a table / the raw lines (query).
//!
//! No log format knowledge lives here beyond choosing columns to show; reading,
//! checking and filtering are in `crate::audit`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::Failure;
use crate::audit::{self, line, Decision, Filter, Hit, VerifyReport};

/// Check or search the tamper-evident audit log.
///
/// The audit log is JSON Lines: one event per line, each line carrying the sha256 of
/// the line before it. Rotated files are named LOG.000001, LOG.000002, ...; pass them
/// oldest first, then the live file, e.g. `audit.log.[0-9]* audit.log`. See
/// docs/audit.md.
#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    Verify(VerifyArgs),
    Query(QueryArgs),
}

/// Check that audit files form one unbroken chain.
///
/// Reads the files in the order given, checks that every line is a valid record,
/// that seq numbers run on without a gap, and that each line's `prev` is the sha256
/// of the line before it (across files too). Prints
/// `intact, N events (seq A..B), last sha256 H` and exits 0, or prints
/// `broken: FILE line N: what is wrong` for the first broken link and exits 1.
///
/// Lines removed from the very end leave no broken link; to catch that, record the
/// printed last sha256 somewhere else and pass it back with --expect-last.
#[derive(Args)]
pub struct VerifyArgs {
    /// Audit files, oldest first (rotated files, then the live file).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Fail unless the last line's sha256 is SHA (64 hex digits), as recorded earlier.
    #[arg(long, value_name = "SHA", value_parser = parse_sha)]
    pub expect_last: Option<String>,
}

/// Show audit events that match, as a table or as the original JSON lines.
///
/// Every filter given must match. Reads the files in the order given (oldest first);
/// does not check the hash chain (use `warden audit verify` for that).
#[derive(Args)]
pub struct QueryArgs {
    /// Audit files, oldest first (rotated files, then the live file).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only events of this plugin id.
    #[arg(long, value_name = "ID")]
    pub plugin: Option<String>,
    /// Only events with this decision: allow, deny, rate_limited or error.
    #[arg(long, value_name = "D", value_parser = parse_decision)]
    pub decision: Option<Decision>,
    /// Only host calls of this op, e.g. kv.get.
    #[arg(long, value_name = "OP")]
    pub op: Option<String>,
    /// Only events of this kind, e.g. launch, exit, host_call.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only events newer than this: a number and a unit, s, m, h or d (90s, 15m, 2h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only the last N matching events.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Print the matching lines exactly as stored (JSON Lines) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AuditArgs) -> Result<(), Failure> {
    match a.command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Query(a) => query(a),
    }
}

fn verify(a: VerifyArgs) -> Result<(), Failure> {
    let report = audit::verify_files(&a.files).map_err(Failure::general)?;
    match report {
        VerifyReport::Broken { file, line, what } => Err(Failure {
            line: format!("broken: {} line {line}: {what}", file.display()),
            code: 1,
        }),
        VerifyReport::Intact {
            events,
            first_seq,
            last_hash,
        } => {
            let last = last_hash.as_deref().unwrap_or(line::ZERO_HASH);
            if let Some(want) = &a.expect_last {
                if want != last {
                    let file = a.files.last().map(|f| f.display().to_string());
                    let file = file.unwrap_or_default();
                    // The chain is intact, so a line whose `prev` is the anchor
                    // follows the anchored line: events were appended since, which
                    // is normal operation, not a cut.
                    let end = first_seq.map_or(0, |f| f + events - 1);
                    let line = match anchored_seq(&a.files, want) {
                        Some(seq) => format!(
                            "broken: {file}: the last line's sha256 is {last}, not the expected {want}: the expected line is still in the chain (seq {seq}) and {} events were appended after it; anchor the new end instead",
                            end.saturating_sub(seq)
                        ),
                        None => format!(
                            "broken: {file}: the last line's sha256 is {last}, not the expected {want} (lines removed from the end, or a different log)"
                        ),
                    };
                    return Err(Failure { line, code: 1 });
                }
            }
            match first_seq {
                None => println!("intact, 0 events"),
                Some(first) => {
                    let end = first + events - 1;
                    println!("intact, {events} events (seq {first}..{end}), last sha256 {last}");
                    if first != 1 {
                        println!(
                            "note: the chain starts at seq {first}: older files were not given, so their loss cannot be detected here"
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// The seq of the line whose sha256 is `hash`, found as the `prev` of the line
/// after it, in files whose chain was verified intact.
fn anchored_seq(files: &[PathBuf], hash: &str) -> Option<u64> {
    let needle = format!("\"prev\":\"{hash}\"}}");
    for f in files {
        let text = std::fs::read(f).ok()?;
        for l in text.split(|&b| b == b'\n') {
            if l.ends_with(needle.as_bytes()) {
                let v: serde_json::Value = serde_json::from_slice(l).ok()?;
                return v["seq"].as_u64()?.checked_sub(1).filter(|&s| s > 0);
            }
        }
    }
    None
}

fn query(a: QueryArgs) -> Result<(), Failure> {
    let since_us = a.since.map(|d| {
        let now = audit::time::micros(SystemTime::now());
        now.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    });
    let filter = Filter {
        plugin: a.plugin,
        decision: a.decision,
        op: a.op,
        kind: a.kind,
        since_us,
        limit: a.last,
    };
    let hits = audit::query(&a.files, &filter).map_err(Failure::general)?;
    if a.json {
        for h in &hits {
            println!("{}", h.line);
        }
    } else if hits.is_empty() {
        println!("no matching events");
    } else {
        print!("{}", table(&hits));
    }
    Ok(())
}

/// An aligned table: time, plugin, event (kind/op), capability, decision, reason.
fn table(hits: &[Hit]) -> String {
    // Plugins choose some of this text (an unknown op's name): it must not add
    // rows or drive the operator's terminal.
    use crate::text::printable;
    let dash = |s: &Option<String>| s.as_deref().map_or_else(|| "-".into(), printable);
    let mut rows = vec![[
        "TIME".to_string(),
        "PLUGIN".into(),
        "EVENT".into(),
        "CAPABILITY".into(),
        "DECISION".into(),
        "REASON".into(),
    ]];
    for h in hits {
        let r = &h.record;
        let event = match &r.op {
            Some(op) => printable(&format!("{}/{op}", r.kind)),
            None => printable(&r.kind),
        };
        rows.push([
            printable(&r.time),
            dash(&r.plugin),
            event,
            dash(&r.capability),
            r.decision.map_or("-".into(), |d| d.to_string()),
            dash(&r.reason),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut cells: Vec<String> = row[..5]
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        cells.push(row[5].clone());
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    out
}

fn parse_sha(s: &str) -> Result<String, String> {
    if line::is_hash(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a sha256: expected 64 lowercase hex digits"
        ))
    }
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    s.parse().map_err(|e: audit::UnknownDecision| e.to_string())
}

/// `90s`, `15m`, `2h`, `7d`: a whole number and one unit.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a number and a unit s, m, h or d (90s, 15m, 2h, 7d)"
        )
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n = &s[..s.len() - unit.len_utf8()];
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "",
            "s",
            "10",
            "1.5h",
            "-1m",
            "10w",
            "1 h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
