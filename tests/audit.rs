//! `warden audit verify` and `warden audit query` end to end: logs written through
//! the library, then edited, cut, reordered, rotated, torn and searched, with the
//! exact lines users see.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use warden::audit::{
    self, line, rotated_files, AuditConfig, AuditLog, Decision, Event, FsyncPolicy,
};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(dir: &Path, args: &[&str]) -> Output {
    Command::new(WARDEN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Event `i`: plugins alternate echo/clock, every fifth is denied, ops cycle.
fn event(i: u64) -> Event {
    let ops = ["kv.get", "kv.put", "log.write"];
    Event {
        kind: "host_call",
        plugin: Some(if i % 2 == 0 { "echo" } else { "clock" }.into()),
        version: Some("1.0.0".into()),
        op: Some(ops[(i % 3) as usize].into()),
        capability: Some("kv:read".into()),
        decision: Some(if i % 5 == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        }),
        reason: Some(format!("call {i}")),
        duration_us: Some(i),
        ..Event::default()
    }
}

/// Writes `n` events to `dir/audit.log`; returns the path and the last hash.
fn write_log(dir: &Path, n: u64) -> (PathBuf, String) {
    let path = dir.join("audit.log");
    let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    for i in 1..=n {
        assert_eq!(log.append(&event(i)).unwrap(), i);
    }
    let last = log.last_hash().to_string();
    log.close().unwrap();
    (path, last)
}

fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    f(&mut lines);
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn assert_broken(dir: &Path, args: &[&str], want: &str) {
    let o = warden(dir, args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end(), want);
    assert_eq!(stdout(&o), "");
}

#[test]
fn intact_log_verifies_and_prints_the_last_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, last) = write_log(tmp.path(), 50);
    let o = warden(tmp.path(), &["audit", "verify", "audit.log"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("intact, 50 events (seq 1..50), last sha256 {last}\n")
    );
    let o = warden(
        tmp.path(),
        &["audit", "verify", "--expect-last", &last, "audit.log"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn edited_line_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 50);
    edit_lines(&path, |l| {
        // one byte: "call 25" -> "call 35", still valid JSON
        l[24] = l[24].replace("\"call 25\"", "\"call 35\"");
    });
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 26: prev does not match the sha256 of line 25 (line 25 was edited, or this line's prev was)",
    );
}

#[test]
fn deleted_line_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 50);
    edit_lines(&path, |l| {
        l.remove(24);
    });
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 25: seq 26 follows seq 24: 1 event missing (lines deleted or reordered)",
    );
}

#[test]
fn truncated_middle_line_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 50);
    edit_lines(&path, |l| {
        let half = l[24].len() / 2;
        l[24].truncate(half);
    });
    let o = warden(tmp.path(), &["audit", "verify", "audit.log"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("broken: audit.log line 25: not a valid audit record: not valid JSON: EOF while parsing"),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("(line edited or truncated)"),
        "{err}"
    );
}

#[test]
fn reordered_lines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 50);
    edit_lines(&path, |l| l.swap(24, 25));
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 25: seq 26 follows seq 24: 1 event missing (lines deleted or reordered)",
    );
    // A line copied in again is caught as seq going backwards.
    let dir = tempdir_in(tmp.path());
    let (path, _) = write_log(&dir, 50);
    edit_lines(&path, |l| {
        let copy = l[24].clone();
        l.insert(25, copy);
    });
    assert_broken(
        &dir,
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 26: seq 25 does not follow seq 25 (lines reordered or duplicated)",
    );
}

fn tempdir_in(dir: &Path) -> PathBuf {
    let d = dir.join("more");
    fs::create_dir(&d).unwrap();
    d
}

#[test]
fn cut_end_is_caught_only_with_an_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last) = write_log(tmp.path(), 50);
    edit_lines(&path, |l| {
        l.pop();
    });
    // Without an anchor, 49 events are a valid chain: say so, honestly.
    let o = warden(tmp.path(), &["audit", "verify", "audit.log"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("intact, 49 events (seq 1..49)"));
    let o = warden(
        tmp.path(),
        &["audit", "verify", "--expect-last", &last, "audit.log"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("broken: audit.log: the last line's sha256 is "),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with(&format!(
            "not the expected {last} (lines removed from the end, or a different log)"
        )),
        "{err}"
    );
}

#[test]
fn expect_last_says_when_events_were_appended_after_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last) = write_log(tmp.path(), 50);
    // warden goes on writing after the operator recorded the end: that is not a cut.
    let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    for i in 51..=53 {
        assert_eq!(log.append(&event(i)).unwrap(), i);
    }
    log.close().unwrap();
    let o = warden(
        tmp.path(),
        &["audit", "verify", "--expect-last", &last, "audit.log"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.trim_end().ends_with(&format!(
            "not the expected {last}: the expected line is still in the chain (seq 50) and 3 events were appended after it; anchor the new end instead"
        )),
        "{err}"
    );
}

#[test]
fn cut_inside_the_last_line_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 5);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 5: not terminated by a newline (a write cut short by a crash, or the file was truncated)",
    );
}

#[test]
fn rotation_chains_across_files_and_a_missing_file_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.log");
    let mut cfg = AuditConfig::new(&path);
    cfg.rotate_bytes = Some(6000);
    let mut log = AuditLog::open(cfg).unwrap();
    for i in 1..=50 {
        log.append(&event(i)).unwrap();
    }
    drop(log);
    let rotated = rotated_files(&path).unwrap();
    let names: Vec<String> = rotated
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["audit.log.000001", "audit.log.000002"]);

    let o = warden(
        tmp.path(),
        &[
            "audit",
            "verify",
            "audit.log.000001",
            "audit.log.000002",
            "audit.log",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("intact, 50 events (seq 1..50)"),
        "{}",
        stdout(&o)
    );

    let first_of_live = line::parse(
        fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .as_bytes(),
    )
    .unwrap()
    .seq;
    let first_of_second = line::parse(
        fs::read_to_string(&rotated[1])
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .as_bytes(),
    )
    .unwrap()
    .seq;
    let missing = first_of_live - first_of_second;
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log.000001", "audit.log"],
        &format!(
            "broken: audit.log line 1: seq {first_of_live} follows seq {}: {missing} events missing (lines deleted or reordered, or a file missing before this one)",
            first_of_second - 1
        ),
    );

    // Files out of order.
    let o = warden(
        tmp.path(),
        &[
            "audit",
            "verify",
            "audit.log.000002",
            "audit.log.000001",
            "audit.log",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("broken: audit.log.000001 line 1: seq 1 "),
        "{}",
        stderr(&o)
    );

    // Starting at a later file is a valid chain, with a note about what is unchecked.
    let o = warden(
        tmp.path(),
        &["audit", "verify", "audit.log.000002", "audit.log"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains(&format!(
        "note: the chain starts at seq {first_of_second}: older files were not given"
    )));
}

#[test]
fn reopening_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last) = write_log(tmp.path(), 10);
    let mut log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    assert_eq!(log.next_seq(), 11);
    assert_eq!(log.last_hash(), last);
    for i in 11..=20 {
        assert_eq!(log.append(&event(i)).unwrap(), i);
    }
    drop(log);
    let o = warden(tmp.path(), &["audit", "verify", "audit.log"]);
    assert!(
        stdout(&o).starts_with("intact, 20 events (seq 1..20)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn torn_final_line_after_a_crash_is_moved_aside_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("audit.log");
    let mut cfg = AuditConfig::new(&path);
    cfg.fsync = FsyncPolicy::EveryEvent;
    let mut log = AuditLog::open(cfg.clone()).unwrap();
    for i in 1..=10 {
        log.append(&event(i)).unwrap();
    }
    // SIGKILL in the middle of writing line 11: half a line on disk. (Every event
    // is already written, so dropping here writes nothing more.)
    drop(log);
    let full = line::encode(11, 0, &event(11).fields(), line::ZERO_HASH).unwrap();
    let torn = &full[..full.len() / 2];
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(torn);
    fs::write(&path, &bytes).unwrap();
    assert_broken(
        tmp.path(),
        &["audit", "verify", "audit.log"],
        "broken: audit.log line 11: not terminated by a newline (a write cut short by a crash, or the file was truncated)",
    );

    let mut log = AuditLog::open(cfg).unwrap();
    assert_eq!(log.append(&event(12)).unwrap(), 12);
    drop(log);
    assert_eq!(
        fs::read(tmp.path().join("audit.log.torn-11")).unwrap(),
        torn
    );
    let o = warden(tmp.path(), &["audit", "verify", "audit.log"]);
    assert!(
        stdout(&o).starts_with("intact, 12 events (seq 1..12)"),
        "{}",
        stdout(&o)
    );
    let o = warden(
        tmp.path(),
        &[
            "audit",
            "query",
            "--kind",
            "audit.torn_tail",
            "--json",
            "audit.log",
        ],
    );
    let r = line::parse(stdout(&o).trim_end().as_bytes()).unwrap();
    assert_eq!(r.seq, 11);
    assert_eq!(r.extra["bytes"], torn.len());
}

/// A valid chain whose events happened 3 h, 90 min, 10 min and 30 s ago.
fn write_aged_log(dir: &Path) -> PathBuf {
    let now = audit::time::micros(SystemTime::now());
    let ages = [3 * 3600, 90 * 60, 10 * 60, 30];
    let mut prev = line::ZERO_HASH.to_string();
    let mut text = Vec::new();
    for (i, age) in ages.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let t = now - Duration::from_secs(age).as_micros() as i64;
        let l = line::encode(seq, t, &event(seq).fields(), &prev).unwrap();
        prev = line::hash(&l);
        text.extend_from_slice(&l);
        text.push(b'\n');
    }
    let path = dir.join("aged.log");
    fs::write(&path, text).unwrap();
    path
}

fn seqs(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| line::parse(l.as_bytes()).unwrap().seq)
        .collect()
}

#[test]
fn query_filters_and_prints_lines_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_log(tmp.path(), 30);
    let q = |args: &[&str]| {
        let mut all = vec!["audit", "query", "audit.log", "--json"];
        all.extend_from_slice(args);
        let o = warden(tmp.path(), &all);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let plugin = q(&["--plugin", "clock"]);
    assert_eq!(seqs(&plugin), (1..=29).step_by(2).collect::<Vec<_>>());
    assert_eq!(seqs(&q(&["--decision", "deny"])), [5, 10, 15, 20, 25, 30]);
    assert_eq!(
        seqs(&q(&["--op", "kv.get"])),
        [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    );
    assert_eq!(
        seqs(&q(&[
            "--plugin",
            "echo",
            "--decision",
            "deny",
            "--op",
            "kv.get"
        ])),
        [30]
    );
    assert_eq!(seqs(&q(&["--plugin", "echo", "--last", "2"])), [28, 30]);
    // --json prints the stored lines byte for byte.
    let stored = fs::read_to_string(&path).unwrap();
    let stored: Vec<&str> = stored.lines().collect();
    let got: Vec<&str> = plugin.lines().collect();
    assert_eq!(got[0], stored[0]);
    assert_eq!(got[14], stored[28]);

    let aged = write_aged_log(tmp.path());
    let since = |d: &str| {
        let o = warden(
            tmp.path(),
            &[
                "audit",
                "query",
                "--json",
                "--since",
                d,
                aged.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        seqs(&stdout(&o))
    };
    assert_eq!(since("1h"), [3, 4]);
    assert_eq!(since("100m"), [2, 3, 4]);
    assert_eq!(since("90s"), [4]);
    assert_eq!(since("1d"), [1, 2, 3, 4]);
}

#[test]
fn query_table_is_aligned() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 10);
    let o = warden(
        tmp.path(),
        &["audit", "query", "audit.log", "--decision", "deny"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with(
            "TIME                         PLUGIN  EVENT                CAPABILITY  DECISION  REASON"
        ),
        "{out}"
    );
    assert!(
        rows[1].ends_with("  clock   host_call/log.write  kv:read     deny      call 5"),
        "{out}"
    );
    assert!(
        rows[2].ends_with("  echo    host_call/kv.put     kv:read     deny      call 10"),
        "{out}"
    );
    let o = warden(
        tmp.path(),
        &["audit", "query", "audit.log", "--plugin", "nobody"],
    );
    assert_eq!(stdout(&o), "no matching events\n");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), 1);
    let cases: [(&[&str], &str); 4] = [
        (
            &["audit", "query", "audit.log", "--decision", "maybe"],
            "invalid value 'maybe' for '--decision <D>': unknown decision \"maybe\" (expected allow, deny, rate_limited or error)",
        ),
        (
            &["audit", "query", "audit.log", "--since", "2w"],
            "invalid value '2w' for '--since <DURATION>': invalid duration \"2w\": expected a number and a unit s, m, h or d (90s, 15m, 2h, 7d)",
        ),
        (
            &["audit", "verify", "audit.log", "--expect-last", "abc"],
            "invalid value 'abc' for '--expect-last <SHA>': \"abc\" is not a sha256: expected 64 lowercase hex digits",
        ),
        (&["audit", "verify"], "the following required arguments were not provided"),
    ];
    for (args, want) in cases {
        let o = warden(tmp.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn missing_file_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = warden(tmp.path(), &["audit", "verify", "nope.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "warden: nope.log: cannot open: No such file or directory (os error 2)\n"
    );
}

#[test]
fn help_explains_each_command() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["audit", "--help"][..],
            "Check or search the tamper-evident audit log",
        ),
        (&["audit", "verify", "--help"][..], "--expect-last <SHA>"),
        (&["audit", "query", "--help"][..], "--since <DURATION>"),
    ] {
        let o = warden(tmp.path(), args);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains(want), "{args:?}: {}", stdout(&o));
    }
}

/// Rotation numbers only grow, also after every rotated file has been archived
/// away and warden restarted: `.000001` was handed out again, a name the
/// archive already held, sorting before the older files in a glob.
#[test]
fn rotation_numbers_keep_growing_after_old_files_are_archived() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut cfg = AuditConfig::new(&path);
    cfg.rotate_bytes = Some(400);
    let ev = Event {
        kind: "admin",
        reason: Some("x".repeat(100)),
        ..Event::default()
    };
    let mut log = AuditLog::open(cfg.clone()).unwrap();
    for _ in 0..8 {
        log.append(&ev).unwrap();
    }
    log.close().unwrap();
    let old = rotated_files(&path).unwrap();
    assert!(old.len() >= 2, "{old:?}");
    let newest_old = old.last().unwrap().file_name().unwrap().to_owned();
    // Archive every rotated file (deleting from the oldest end, all of them).
    for f in &old {
        fs::rename(f, archive.path().join(f.file_name().unwrap())).unwrap();
    }
    // warden restarts and rotates again.
    let mut log = AuditLog::open(cfg).unwrap();
    for _ in 0..8 {
        log.append(&ev).unwrap();
    }
    log.close().unwrap();
    let new = rotated_files(&path).unwrap();
    let first_new = new[0].file_name().unwrap().to_owned();
    assert!(
        first_new > newest_old,
        "after archiving up to {newest_old:?}, the next rotation was named {first_new:?} again"
    );
    assert!(
        !archive.path().join(&first_new).exists(),
        "{first_new:?} now names two different files (one in the archive)"
    );
}

/// A reader that stops early (`warden audit query LOG | head -1`) ends warden
/// quietly, by SIGPIPE as other tools end; it panicked ("failed printing to
/// stdout: Broken pipe").
#[test]
fn a_reader_that_stops_early_ends_the_query_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 3000);
    let mut child = Command::new(WARDEN)
        .args(["audit", "query", path.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"seq\":"), "{first}");
    // The reader is gone: warden's next writes find no one.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
