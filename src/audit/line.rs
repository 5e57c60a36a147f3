//! One audit line: encoding an [`Event`] with its seq, time and prev into the fixed
//! field order, hashing a line, and the strict parse of a line back into a
//! [`Record`].
//!
//! This is the only place that knows the line format (see docs/audit.md). It does no
//! I/O: files, buffering and rotation live in `log`, chain checking in `verify`.

use serde_json::{Map, Value};

use super::{time, Decision, Fields};

/// The `prev` of the very first line of a log: 64 zeros.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The optional fields, in the order they appear between `kind` and `prev`.
const OPTIONAL: [&str; 9] = [
    "plugin",
    "version",
    "sha256",
    "op",
    "capability",
    "decision",
    "reason",
    "duration_us",
    "extra",
];

/// Why a line is not a valid audit record.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
    #[error("missing field {0:?}")]
    Missing(&'static str),
    #[error("unknown field {0:?}")]
    Unknown(String),
    #[error("field {0:?} is out of order")]
    Order(String),
    #[error("field {field:?} is not {want}")]
    Type {
        field: &'static str,
        want: &'static str,
    },
}

/// A parsed, validated audit line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// As written: RFC 3339 UTC with microseconds.
    pub time: String,
    /// `time` as microseconds since the Unix epoch.
    pub time_us: i64,
    pub kind: String,
    pub plugin: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub op: Option<String>,
    pub capability: Option<String>,
    pub decision: Option<Decision>,
    pub reason: Option<String>,
    pub duration_us: Option<u64>,
    /// The `extra` object (empty when the line has none).
    pub extra: Map<String, Value>,
    /// The hex sha256 of the previous line.
    pub prev: String,
}

/// Lowercase hex sha256 of `bytes` (a line without its newline).
pub fn hash(bytes: &[u8]) -> String {
    hex(sha256(bytes).as_ref())
}

/// Replaces `out` with the lowercase hex sha256 of `bytes`, reusing its buffer.
pub fn hash_into(out: &mut String, bytes: &[u8]) {
    out.clear();
    push_hex(out, sha256(bytes).as_ref());
}

/// SHA-256 for the chain: ring's implementation picks the fastest code the CPU
/// supports (the event loop hashes every line it audits: the audit log's main cost).
fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.reserve(bytes.len() * 2);
    // A digest's worth at a time through a buffer on the stack.
    for chunk in bytes.chunks(32) {
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        let out = &out[..chunk.len() * 2];
        s.push_str(std::str::from_utf8(out).expect("hex digits are ASCII"));
    }
}

/// True for exactly 64 lowercase hex digits.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Encodes `e` as one line (without the newline) in the documented field order.
pub fn encode(
    seq: u64,
    time_us: i64,
    e: &Fields<'_>,
    prev: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(384);
    encode_into(&mut out, seq, time_us, e, prev)?;
    Ok(out)
}

/// Appends the line for `e` (without the newline) to `out`: `seq`, `time`, `kind`,
/// the optional fields in [`OPTIONAL`] order (absent ones omitted, `extra` only
/// when not empty), `prev`. Strings are escaped as serde_json escapes them, so the
/// bytes are exactly what serialising an ordered map of these fields gives.
pub fn encode_into(
    out: &mut Vec<u8>,
    seq: u64,
    time_us: i64,
    e: &Fields<'_>,
    prev: &str,
) -> Result<(), serde_json::Error> {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(n.format(seq).as_bytes());
    out.extend_from_slice(b",\"time\":\"");
    time::write(out, time_us);
    out.extend_from_slice(b"\",\"kind\":");
    push_str(out, e.kind)?;
    let strings = [
        ("plugin", e.plugin),
        ("version", e.version),
        ("sha256", e.sha256),
        ("op", e.op),
        ("capability", e.capability),
        ("decision", e.decision.map(Decision::as_str)),
        ("reason", e.reason),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            push_str(out, v)?;
        }
    }
    if let Some(d) = e.duration_us {
        out.extend_from_slice(b",\"duration_us\":");
        out.extend_from_slice(n.format(d).as_bytes());
    }
    if let Some(x) = e.extra.filter(|x| !x.is_empty()) {
        out.extend_from_slice(b",\"extra\":");
        serde_json::to_writer(&mut *out, x)?;
    }
    out.extend_from_slice(b",\"prev\":");
    push_str(out, prev)?;
    out.push(b'}');
    Ok(())
}

/// Appends `v` as a JSON string, escaped exactly as serde_json escapes it. Most
/// values (ids, versions, hashes, op names) need no escape and are copied as they
/// are, which is what serde_json would write for them.
fn push_str(out: &mut Vec<u8>, v: &str) -> Result<(), serde_json::Error> {
    // Every byte is looked at (no early exit), which the compiler vectorises.
    let needs_escape = v.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        return serde_json::to_writer(&mut *out, v);
    }
    out.reserve(v.len() + 2);
    out.push(b'"');
    out.extend_from_slice(v.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Parses one line (without its newline) strictly: a JSON object with `seq`, `time`,
/// `kind` first, then known optional fields in order, and `prev` last, each of the
/// right type.
pub fn parse(line: &[u8]) -> Result<Record, LineError> {
    let v: Value = serde_json::from_slice(line).map_err(LineError::Json)?;
    let Value::Object(mut m) = v else {
        return Err(LineError::NotObject);
    };
    check_order(&m)?;
    let seq = m
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|&s| s >= 1)
        .ok_or(LineError::Type {
            field: "seq",
            want: "an integer >= 1",
        })?;
    let time = take_string(&mut m, "time")?.ok_or(LineError::Missing("time"))?;
    let time_us = time::parse(&time).ok_or(LineError::Type {
        field: "time",
        want: "RFC 3339 UTC with microseconds (YYYY-MM-DDTHH:MM:SS.ffffffZ)",
    })?;
    let kind = take_string(&mut m, "kind")?
        .filter(|k| !k.is_empty())
        .ok_or(LineError::Type {
            field: "kind",
            want: "a non-empty string",
        })?;
    let decision = match take_string(&mut m, "decision")? {
        None => None,
        Some(d) => Some(d.parse::<Decision>().map_err(|_| LineError::Type {
            field: "decision",
            want: "one of allow, deny, rate_limited, error",
        })?),
    };
    let duration_us = match m.get("duration_us") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or(LineError::Type {
            field: "duration_us",
            want: "a non-negative integer",
        })?),
    };
    let extra = match m.remove("extra") {
        None => Map::new(),
        Some(Value::Object(x)) => x,
        Some(_) => {
            return Err(LineError::Type {
                field: "extra",
                want: "an object",
            })
        }
    };
    let prev = take_string(&mut m, "prev")?
        .filter(|p| is_hash(p))
        .ok_or(LineError::Type {
            field: "prev",
            want: "64 lowercase hex digits",
        })?;
    Ok(Record {
        seq,
        time,
        time_us,
        kind,
        plugin: take_string(&mut m, "plugin")?,
        version: take_string(&mut m, "version")?,
        sha256: take_string(&mut m, "sha256")?,
        op: take_string(&mut m, "op")?,
        capability: take_string(&mut m, "capability")?,
        decision,
        reason: take_string(&mut m, "reason")?,
        duration_us,
        extra,
        prev,
    })
}

/// `seq`, `time`, `kind` first, `prev` last, and known optional fields in between in
/// their documented order.
fn check_order(m: &Map<String, Value>) -> Result<(), LineError> {
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    for (i, want) in ["seq", "time", "kind"].into_iter().enumerate() {
        match keys.get(i) {
            Some(&k) if k == want => {}
            _ if m.contains_key(want) => return Err(LineError::Order(want.into())),
            _ => return Err(LineError::Missing(want)),
        }
    }
    match keys.last() {
        Some(&"prev") => {}
        _ if m.contains_key("prev") => return Err(LineError::Order("prev".into())),
        _ => return Err(LineError::Missing("prev")),
    }
    let mut next = 0;
    for &k in &keys[3..keys.len() - 1] {
        let Some(pos) = OPTIONAL.iter().position(|&o| o == k) else {
            return Err(LineError::Unknown(k.into()));
        };
        if pos < next {
            return Err(LineError::Order(k.into()));
        }
        next = pos + 1;
    }
    Ok(())
}

fn take_string(
    m: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, LineError> {
    match m.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(LineError::Type {
            field,
            want: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(
            hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    use super::*;
    use crate::audit::Event;

    fn event() -> Event {
        let mut extra = Map::new();
        extra.insert("uid".into(), 0.into());
        Event {
            kind: "host_call",
            plugin: Some("echo".into()),
            version: Some("1.0.0".into()),
            op: Some("kv.get".into()),
            capability: Some("kv:read".into()),
            decision: Some(Decision::Deny),
            reason: Some("not granted".into()),
            duration_us: Some(17),
            extra,
            ..Event::default()
        }
    }

    #[test]
    fn encodes_in_documented_order() {
        let line = encode(3, 1_709_210_096_123_456, &event().fields(), ZERO_HASH).unwrap();
        let want = format!(
            r#"{{"seq":3,"time":"2024-02-29T12:34:56.123456Z","kind":"host_call","plugin":"echo","version":"1.0.0","op":"kv.get","capability":"kv:read","decision":"deny","reason":"not granted","duration_us":17,"extra":{{"uid":0}},"prev":"{ZERO_HASH}"}}"#
        );
        assert_eq!(String::from_utf8(line).unwrap(), want);
    }

    /// The hand-written encoder gives the same bytes as serialising an ordered map
    /// of the same fields, for strings that need escaping too.
    #[test]
    fn encoder_matches_serde_for_awkward_strings() {
        let awkward = [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "control \u{0} \u{1f} \n \r \t \u{8} \u{c} \u{7f}",
            "unicode é ✓ 😀 \u{2028}",
        ];
        for (i, s) in awkward.iter().enumerate() {
            let mut extra = Map::new();
            extra.insert((*s).into(), Value::from(*s));
            let e = Event {
                kind: "host_call",
                plugin: Some((*s).into()),
                version: (i % 2 == 0).then(|| (*s).into()),
                sha256: Some("ab".repeat(32)),
                op: Some((*s).into()),
                capability: (i % 2 == 1).then(|| (*s).into()),
                decision: Some(Decision::RateLimited),
                reason: Some((*s).into()),
                duration_us: (i != 2).then_some(u64::MAX - i as u64),
                extra: if i == 3 { Map::new() } else { extra },
            };
            let mut m = Map::new();
            m.insert("seq".into(), Value::from(u64::MAX));
            m.insert("time".into(), time::format(-1).into());
            m.insert("kind".into(), e.kind.into());
            let f = e.fields();
            for (k, v) in [
                ("plugin", f.plugin),
                ("version", f.version),
                ("sha256", f.sha256),
                ("op", f.op),
                ("capability", f.capability),
                ("decision", f.decision.map(Decision::as_str)),
                ("reason", f.reason),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v.into());
                }
            }
            if let Some(d) = f.duration_us {
                m.insert("duration_us".into(), d.into());
            }
            if !e.extra.is_empty() {
                m.insert("extra".into(), Value::Object(e.extra.clone()));
            }
            m.insert("prev".into(), ZERO_HASH.into());
            let want = serde_json::to_vec(&m).unwrap();
            assert_eq!(
                String::from_utf8(encode(u64::MAX, -1, &f, ZERO_HASH).unwrap()).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn hex_of_any_length() {
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        for n in [0, 1, 31, 32, 33, 64, 70, 256] {
            let want: String = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex(&bytes[..n]), want);
        }
    }

    #[test]
    fn push_str_escapes_every_ascii_byte_as_serde_does() {
        for b in 0u8..=0x7f {
            let v = format!("a{}b", b as char);
            let mut out = Vec::new();
            push_str(&mut out, &v).unwrap();
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "byte {b:#x}");
        }
    }

    #[test]
    fn parse_round_trips() {
        let line = encode(3, 1_709_210_096_123_456, &event().fields(), ZERO_HASH).unwrap();
        let r = parse(&line).unwrap();
        assert_eq!(r.seq, 3);
        assert_eq!(r.kind, "host_call");
        assert_eq!(r.decision, Some(Decision::Deny));
        assert_eq!(r.duration_us, Some(17));
        assert_eq!(r.extra.get("uid"), Some(&Value::from(0)));
        assert_eq!(r.sha256, None);
        assert_eq!(r.prev, ZERO_HASH);
    }

    #[test]
    fn parse_is_strict() {
        let z = ZERO_HASH;
        let t = "2024-02-29T12:34:56.123456Z";
        let cases = [
            (
                format!(r#"{{"seq":1,"time":"{t}","kind":"x","prev":"{z}""#),
                "not valid JSON",
            ),
            ("[1]".to_string(), "not a JSON object"),
            (
                format!(r#"{{"seq":1,"time":"{t}","kind":"x"}}"#),
                "missing field \"prev\"",
            ),
            (
                format!(r#"{{"time":"{t}","seq":1,"kind":"x","prev":"{z}"}}"#),
                "out of order",
            ),
            (
                format!(r#"{{"seq":1,"time":"{t}","kind":"x","who":1,"prev":"{z}"}}"#),
                "unknown field \"who\"",
            ),
            (
                format!(
                    r#"{{"seq":1,"time":"{t}","kind":"x","op":"a","plugin":"b","prev":"{z}"}}"#
                ),
                "\"plugin\" is out of order",
            ),
            (
                format!(r#"{{"seq":0,"time":"{t}","kind":"x","prev":"{z}"}}"#),
                "\"seq\" is not",
            ),
            (
                format!(r#"{{"seq":1,"time":"yesterday","kind":"x","prev":"{z}"}}"#),
                "\"time\" is not",
            ),
            (
                format!(r#"{{"seq":1,"time":"{t}","kind":"x","decision":"maybe","prev":"{z}"}}"#),
                "\"decision\" is not",
            ),
            (
                format!(r#"{{"seq":1,"time":"{t}","kind":"x","prev":"ABC"}}"#),
                "\"prev\" is not",
            ),
        ];
        for (line, want) in cases {
            let e = parse(line.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
