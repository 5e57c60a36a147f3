//! The host ops' handlers. Each re-validates its own arguments (strict decoding,
//! sizes, ranges) even though dispatch already checked the capability; ops that can
//! block are returned as work for the pool instead of being run here.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

use super::egress::{self, guard, DialRequest, Egress};
use super::files::{self, FileRoot};
use super::ops::Provider;
use super::protocol::{self, Args, CallError, ErrorCode};
use super::workers::Work;
use crate::bundle::Capability;
use crate::store::kv::Quota;

/// The longest KV key, in bytes.
pub const MAX_KEY: usize = 256;
/// The longest KV value, in bytes.
pub const MAX_VALUE: usize = 16384;
/// The longest log message, in bytes.
pub const MAX_LOG_MESSAGE: usize = 4096;
/// The most fields on one log line.
pub const MAX_LOG_FIELDS: usize = 16;
/// The longest string log field value, in bytes.
pub const MAX_LOG_FIELD_VALUE: usize = 1024;
/// The most recent audit events `audit.query` can return.
pub const MAX_AUDIT_QUERY: usize = 256;

/// What a handler decided.
pub enum Outcome<'a> {
    Now(Result<Value, CallError>),
    /// Refused at once, with extra fields for the audit event (e.g. a dial's host).
    Refused(CallError, serde_json::Map<String, Value>),
    /// A `kv.get` of this checked key: answered from the loop's read cache, or
    /// queued as [`Work::Get`] (the key is copied only then).
    Get(Cow<'a, str>),
    Queued(Work),
}

/// What handlers may see of the calling plugin.
pub struct Caller<'a> {
    pub id: &'a str,
    pub kv_quota: Quota,
    pub stats: &'a super::Counters,
    pub recent: &'a std::collections::VecDeque<Recent>,
    /// What may be used (manifest ∩ policy); `fs.open` checks write access here.
    pub granted: &'a [crate::bundle::Capability],
    pub call_timeout: std::time::Duration,
    pub egress: Option<&'a std::sync::Arc<Egress>>,
    pub files: Option<&'a std::sync::Arc<FileRoot>>,
}

/// One of a plugin's recent audit records, kept for `audit.query`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recent {
    pub time_us: u64,
    pub kind: &'static str,
    pub op: std::borrow::Cow<'static, str>,
    pub capability: Option<crate::bundle::Capability>,
    pub decision: crate::audit::Decision,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub duration_us: u64,
}

fn bad(message: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::BadRequest, message)
}

fn too_large(message: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::TooLarge, message)
}

fn check_key(key: &str) -> Result<(), CallError> {
    if key.is_empty() {
        return Err(bad("key must not be empty"));
    }
    if key.len() > MAX_KEY {
        return Err(too_large(format!(
            "key is {} bytes, the limit is {MAX_KEY}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("key must not contain control characters"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    key: String,
}

/// The `key` of `kv.get` and `kv.delete`: the SDK's `{"key":"..."}` read as it
/// is, anything else strictly parsed (the same key or error either way; the fuzz
/// target checks that against [`key_arg_parsed`]).
pub(super) fn key_arg(args: Option<Args<'_>>) -> Result<Cow<'_, str>, CallError> {
    match protocol::sole_string(args, "key") {
        Some(key) => Ok(Cow::Borrowed(key)),
        None => key_arg_parsed(args).map(Cow::Owned),
    }
}

/// [`key_arg`] through the strict parser only.
pub(super) fn key_arg_parsed(args: Option<Args<'_>>) -> Result<String, CallError> {
    Ok(protocol::args::<KeyArgs>(args)?.key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    prefix: String,
    limit: Option<u64>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogArgs {
    level: String,
    message: String,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditArgs {
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DialArgs {
    host: String,
    port: u64,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenArgs {
    path: String,
    flags: Vec<String>,
}

/// The capability a call of `op` is audited under: the op's own, except an
/// `fs.open` that can change the file, which needs static:write (it was audited
/// as static:read). Rate buckets stay the op's (docs/policy.md).
pub fn capability_of(op: &super::ops::Op, args: Option<Args<'_>>) -> Capability {
    if !matches!(op.provider, Provider::FsOpen) {
        return op.capability;
    }
    match protocol::args::<OpenArgs>(args) {
        Ok(a) if a.flags.iter().any(|f| files::Flags::name_writes(f)) => Capability::StaticWrite,
        _ => op.capability,
    }
}

/// Runs (or prepares) `provider` for one call.
pub fn handle<'a>(provider: Provider, args: Option<Args<'a>>, caller: &Caller<'_>) -> Outcome<'a> {
    match run(provider, args, caller) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Now(Err(e)),
    }
}

fn run<'a>(
    provider: Provider,
    args: Option<Args<'a>>,
    caller: &Caller<'_>,
) -> Result<Outcome<'a>, CallError> {
    Ok(match provider {
        Provider::KvGet => {
            let key = key_arg(args)?;
            check_key(&key)?;
            Outcome::Get(key)
        }
        Provider::KvDelete => {
            let key = key_arg(args)?;
            check_key(&key)?;
            Outcome::Queued(Work::Delete {
                key: key.into_owned(),
            })
        }
        Provider::KvPut => {
            let a: PutArgs = protocol::args(args)?;
            check_key(&a.key)?;
            if a.value.len() > MAX_VALUE {
                return Err(too_large(format!(
                    "value is {} bytes, the limit is {MAX_VALUE}",
                    a.value.len()
                )));
            }
            Outcome::Queued(Work::Put {
                key: a.key,
                value: a.value,
                quota: caller.kv_quota,
            })
        }
        Provider::KvList => {
            let a: ListArgs = protocol::args(args)?;
            if a.prefix.len() > MAX_KEY {
                return Err(too_large("prefix is longer than a key may be"));
            }
            let limit = a.limit.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(bad("limit must be 1..=1000"));
            }
            if let Some(c) = &a.cursor {
                check_key(c)?;
            }
            Outcome::Queued(Work::List {
                prefix: a.prefix,
                limit: limit as usize,
                cursor: a.cursor,
            })
        }
        Provider::Log => Outcome::Now(log_write(protocol::args(args)?, caller.id)),
        Provider::MonitorStats => {
            let _: NoArgs = protocol::args(args)?;
            Outcome::Now(Ok(json!({ "host": host_stats(), "plugin": caller.stats })))
        }
        Provider::AuditQuery => {
            let a: AuditArgs = protocol::args(args)?;
            let limit = a.limit.unwrap_or(50);
            if !(1..=MAX_AUDIT_QUERY as u64).contains(&limit) {
                return Err(bad(format!("limit must be 1..={MAX_AUDIT_QUERY}")));
            }
            // The newest `limit`, as many as fit in one reply; newest last.
            let mut events: Vec<&Recent> =
                caller.recent.iter().rev().take(limit as usize).collect();
            events.truncate(protocol::fitting(&events));
            events.reverse();
            Outcome::Now(Ok(json!({ "events": events })))
        }
        Provider::NetDial => net_dial(protocol::args(args)?, caller)?,
        Provider::FsOpen => {
            let a: OpenArgs = protocol::args(args)?;
            let req = files::validate(&a.path, &a.flags)?;
            if req.flags.writes() && !caller.granted.contains(&Capability::StaticWrite) {
                return Err(CallError::new(
                    ErrorCode::Denied,
                    "fs.open for writing needs static:write; static:read allows read-only opens",
                ));
            }
            let Some(root) = caller.files else {
                return Err(CallError::new(
                    ErrorCode::Unavailable,
                    format!("no data directory is configured for plugin {}", caller.id),
                ));
            };
            Outcome::Queued(Work::Open {
                root: std::sync::Arc::clone(root),
                req,
            })
        }
        Provider::Unavailable(why) => {
            Outcome::Now(Err(CallError::new(ErrorCode::Unavailable, why)))
        }
    })
}

/// Validates a dial and checks the host against the allow-list; resolving,
/// checking addresses and connecting happen on a worker.
fn net_dial(a: DialArgs, caller: &Caller<'_>) -> Result<Outcome<'static>, CallError> {
    if a.host.len() > guard::MAX_HOST + 2 {
        return Err(too_large("host is longer than 253 characters"));
    }
    let port = match u16::try_from(a.port) {
        Ok(p) if p != 0 => p,
        _ => return Err(bad("port must be 1..=65535")),
    };
    let host = guard::parse_host(&a.host).map_err(|e| bad(e.to_string()))?;
    let limit = caller.call_timeout.as_millis() as u64;
    // By default leave a tenth of the call's time, so the dial's own timeout (with
    // its audit fields) answers before the broker's call deadline does.
    let timeout_ms = match a.timeout_ms {
        None => (egress::DEFAULT_TIMEOUT.as_millis() as u64).min(limit - limit / 10),
        Some(t) if (1..=limit).contains(&t) => t,
        Some(_) => return Err(bad(format!("timeout_ms must be 1..={limit}"))),
    };
    let audit = egress::audit_fields(&host.to_string(), port);
    let Some(policy) = caller.egress else {
        return Ok(Outcome::Refused(
            CallError::new(
                ErrorCode::Denied,
                format!(
                    "{host}:{port}: the policy of {} has no egress allow-list",
                    caller.id
                ),
            ),
            audit,
        ));
    };
    if policy.pattern_for(&host, port).is_none() {
        return Ok(Outcome::Refused(
            CallError::new(
                ErrorCode::Denied,
                format!("{host}:{port} is not in the egress allow-list"),
            ),
            audit,
        ));
    }
    Ok(Outcome::Queued(Work::Dial(DialRequest {
        host,
        port,
        timeout: std::time::Duration::from_millis(timeout_ms),
        egress: std::sync::Arc::clone(policy),
    })))
}

fn log_write(a: LogArgs, plugin: &str) -> Result<Value, CallError> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
    if !LEVELS.contains(&a.level.as_str()) {
        return Err(bad(format!("level must be one of {}", LEVELS.join(", "))));
    }
    if a.message.len() > MAX_LOG_MESSAGE {
        return Err(too_large(format!(
            "message is longer than {MAX_LOG_MESSAGE} bytes"
        )));
    }
    if a.fields.len() > MAX_LOG_FIELDS {
        return Err(too_large(format!("more than {MAX_LOG_FIELDS} fields")));
    }
    // The message is a quoted value like any field's: free text holding
    // `plugin=other level=error` must not pass for fields of the line.
    let mut line = format!(
        "plugin={plugin} level={} msg={}",
        a.level,
        quoted(&a.message)
    );
    for (k, v) in &a.fields {
        let name_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !name_ok {
            return Err(bad(format!("field name {k:?} must be [a-z0-9_]{{1,64}}")));
        }
        let shown = match v {
            Value::String(s) if s.len() <= MAX_LOG_FIELD_VALUE => quoted(s),
            Value::String(_) => {
                return Err(too_large(format!(
                    "field {k} is longer than {MAX_LOG_FIELD_VALUE} bytes"
                )))
            }
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(bad(format!(
                    "field {k} must be a string, number or boolean"
                )))
            }
        };
        line.push_str(&format!(" {k}={shown}"));
    }
    // Queued for the log thread: writing stderr here could block the loop.
    crate::logsink::line(line);
    Ok(json!({}))
}

/// A field value as written after `name=`: as it is when it is plain text, else
/// quoted with `"`, `\` and control characters escaped once (`\"`, `\\`, `\n`,
/// `\t`, `\r`, `\u{..}`), so that a value can neither pass for more fields
/// (`user="bob level=error"`, not `user=bob level=error`) nor be confused with
/// another value. Plain: not empty, no whitespace, `=`, `"`, `\` or control.
fn quoted(v: &str) -> String {
    let plain = !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '"' | '\\'));
    if plain {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `host` object of `monitor.stats`: load averages, total and available
/// memory (KiB) and uptime (s), read from /proc; a figure that cannot be read is
/// `null` (the load: an empty list).
fn host_stats() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let loadavg = read("/proc/loadavg");
    let load: Vec<f64> = loadavg
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    let meminfo = read("/proc/meminfo");
    let mem = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let uptime: Option<f64> = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok());
    json!({
        "load": load,
        "mem_total_kb": mem("MemTotal:"),
        "mem_available_kb": mem("MemAvailable:"),
        "uptime_s": uptime.map(|u| u as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(recent: &std::collections::VecDeque<Recent>) -> Caller<'_> {
        static STATS: super::super::Counters = super::super::Counters {
            calls: 0,
            allowed: 0,
            denied: 0,
            rate_limited: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
        };
        Caller {
            id: "t",
            kv_quota: Quota::default(),
            stats: &STATS,
            recent,
            granted: &[Capability::StaticRead],
            call_timeout: std::time::Duration::from_secs(5),
            egress: None,
            files: None,
        }
    }

    fn now_err(p: Provider, args: &str) -> CallError {
        let raw = Args::parse(args).unwrap();
        let r = std::collections::VecDeque::new();
        match handle(p, Some(raw), &caller(&r)) {
            Outcome::Now(Err(e)) | Outcome::Refused(e, _) => e,
            _ => panic!("{args}: expected an immediate error"),
        }
    }

    #[test]
    fn handlers_revalidate_arguments() {
        assert_eq!(
            now_err(Provider::KvGet, r#"{"key":""}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::KvGet, r#"{"key":"a\nb"}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::KvGet, r#"{"key":1}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::KvGet, r#"{"key":"k","ns":"plugin:other"}"#).code,
            ErrorCode::BadRequest
        );
        let long = format!(r#"{{"key":"{}"}}"#, "k".repeat(MAX_KEY + 1));
        assert_eq!(now_err(Provider::KvGet, &long).code, ErrorCode::TooLarge);
        let big = format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(MAX_VALUE + 1));
        assert_eq!(now_err(Provider::KvPut, &big).code, ErrorCode::TooLarge);
        assert_eq!(
            now_err(Provider::KvList, r#"{"limit":0}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::Log, r#"{"level":"loud","message":"x"}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(
                Provider::Log,
                r#"{"level":"info","message":"x","fields":{"Bad":1}}"#
            )
            .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::MonitorStats, r#"{"x":1}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            now_err(Provider::Unavailable("nobody"), "{}").code,
            ErrorCode::Unavailable
        );
        for args in [
            r#"{"host":"evil.com?x.example.com","port":443}"#,
            r#"{"host":"a.example.com","port":0}"#,
            r#"{"host":"a.example.com","port":70000}"#,
            r#"{"host":"a.example.com","port":443,"timeout_ms":0}"#,
            r#"{"host":"a.example.com","port":443,"via":"x"}"#,
        ] {
            assert_eq!(now_err(Provider::NetDial, args).code, ErrorCode::BadRequest);
        }
        assert_eq!(
            now_err(Provider::FsOpen, r#"{"path":"a","flags":["write"]}"#).code,
            ErrorCode::Denied,
            "static:read alone cannot open for writing"
        );
        assert_eq!(
            now_err(Provider::FsOpen, r#"{"path":"../a","flags":["read"]}"#).code,
            ErrorCode::Denied
        );
    }

    #[test]
    fn a_message_cannot_pass_for_fields() {
        assert_eq!(quoted("a\nplugin=evil"), "\"a\\nplugin=evil\"");
        assert_eq!(
            quoted("ok plugin=other level=error"),
            "\"ok plugin=other level=error\""
        );
        assert_eq!(quoted("plain"), "plain");
    }
    /// A field value cannot pass for more fields, and two values are never
    /// written alike: one with whitespace, `=`, `"`, `\` or a control character
    /// is quoted, each escaped once (a newline and a literal `\n` were written
    /// alike; `user=bob level=error admin=true` passed for three fields).
    #[test]
    fn field_values_are_quoted_unambiguously() {
        assert_eq!(quoted("bob"), "bob");
        assert_eq!(quoted("bob level=error"), "\"bob level=error\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a\u{a0}b"), "\"a\u{a0}b\"");
        for (a, b) in [
            ("a b\n", "a b\\n"),
            ("\u{e9}\n", "\\u{e9}\n"),
            ("x\ty", "x\\ty"),
        ] {
            assert_ne!(quoted(a), quoted(b), "{a:?} and {b:?} are written alike");
        }
    }
}
