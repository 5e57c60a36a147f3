//! The wire format of docs/protocol.md: decoding plugin messages strictly and
//! encoding warden's messages. No I/O and no policy live here.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol versions this warden speaks.
pub const VERSIONS: &[u32] = &[1];
/// The largest datagram in either direction.
pub const MAX_MESSAGE: usize = 65536;
/// Calls a plugin may have outstanding at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// The longest error message, in bytes: a longer one (it may quote what the
/// plugin sent) is cut, so that no reply or audit line grows with the plugin's
/// input.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Bytes of JSON a reply's list (`kv.list` keys, `audit.query` events) may take:
/// `max_message` less room for the envelope and a cursor.
pub const LIST_BUDGET: usize = MAX_MESSAGE - 1024;

/// How many of `items`, from the first, fit in one reply's list: their JSON,
/// with a separator each, within [`LIST_BUDGET`] bytes.
pub fn fitting<T: Serialize>(items: impl IntoIterator<Item = T>) -> usize {
    let mut used = 0usize;
    items
        .into_iter()
        .take_while(|item| {
            used += serde_json::to_vec(item).map_or(LIST_BUDGET + 1, |v| v.len()) + 1;
            used <= LIST_BUDGET
        })
        .count()
}

/// `s`, or its first bytes (cut at a character boundary) and "…", `max` bytes in
/// all at most.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// The typed error codes a reply or error message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Denied,
    RateLimited,
    BadRequest,
    UnknownOp,
    TooLarge,
    NotFound,
    Unavailable,
    Timeout,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Denied => "denied",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed error with its human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallError {
    pub code: ErrorCode,
    pub message: String,
}

impl CallError {
    /// An error; a message longer than [`MAX_ERROR_MESSAGE`] is clipped.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CallError {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            message = clip(&message, MAX_ERROR_MESSAGE).into_owned();
        }
        CallError { code, message }
    }
}

/// A message from a plugin.
#[derive(Debug)]
pub enum Incoming<'a> {
    Hello {
        versions: Vec<u32>,
        plugin: Cow<'a, str>,
        version: Cow<'a, str>,
    },
    Call {
        id: u64,
        op: Cow<'a, str>,
        args: Option<Args<'a>>,
    },
    Pong {
        seq: u64,
    },
}

/// The text of a call's `args`, as the plugin sent it: a JSON value the decoder
/// has checked is well-formed (each op then reads it strictly, see [`args`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args<'a>(&'a str);

impl<'a> Args<'a> {
    /// `text` as arguments, if it is well-formed JSON.
    pub fn parse(text: &'a str) -> Option<Args<'a>> {
        serde_json::from_str::<&RawValue>(text).ok()?;
        Some(Args(text))
    }

    pub fn get(self) -> &'a str {
        self.0
    }
}

/// Why a datagram could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The channel must close: the message cannot be trusted to mean anything.
    Framing(String),
    /// A well-framed call whose content is wrong; the channel stays open.
    BadCall { id: u64, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    id: Option<u64>,
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    args: Option<&'a RawValue>,
    versions: Option<Vec<u32>>,
    #[serde(borrow)]
    plugin: Option<Cow<'a, str>>,
    #[serde(borrow)]
    version: Option<Cow<'a, str>>,
    seq: Option<u64>,
}

/// Decodes one datagram.
///
/// A call in the exact shape the SDK writes is read by [`plain_call`] without
/// the general decoder (measured: about 95 instead of 335 ns for a `kv.get`);
/// everything else, valid or not, goes through [`decode_general`], which gives the
/// same result for every message `plain_call` accepts.
pub fn decode(bytes: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    let text = utf8(bytes)?;
    match plain_call(text) {
        Some(call) => Ok(call),
        None => decode_text(text),
    }
}

/// [`decode`] through the general decoder only (the fuzz target checks that both
/// agree).
pub fn decode_general(bytes: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    decode_text(utf8(bytes)?)
}

/// A datagram as text; anything but UTF-8 is a framing violation.
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::Framing(format!("message is not UTF-8: {e}")))
}

/// A call written exactly as `{"type":"call","id":N,"op":"NAME"}` or
/// `{"type":"call","id":N,"op":"NAME","args":{...}}`: no whitespace outside the
/// args, N plain decimal digits that fit a u64, NAME of letters, digits and `._-:`
/// only (no escapes), args a valid JSON object. `None` for anything else; the
/// general decoder then decides.
fn plain_call(text: &str) -> Option<Incoming<'_>> {
    let rest = text.strip_prefix(r#"{"type":"call","id":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits > 1 && rest.starts_with('0')) {
        return None;
    }
    let id: u64 = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(r#","op":""#)?;
    let name_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        .count();
    let (op, rest) = rest.split_at(name_len);
    let args = match rest.strip_prefix('"')? {
        "}" => None,
        rest => {
            let raw = rest.strip_prefix(r#","args":"#)?.strip_suffix('}')?;
            if !raw.starts_with('{') || !raw.ends_with('}') {
                return None;
            }
            if !flat_strings(raw) {
                serde_json::from_str::<&RawValue>(raw).ok()?;
            }
            Some(Args(raw))
        }
    };
    Some(Incoming::Call {
        id,
        op: Cow::Borrowed(op),
        args,
    })
}

/// Whether `raw` is `{}` or `{"K":"V",...}` with no whitespace and every key and
/// value a string without escapes or control characters: well-formed JSON by
/// construction, so the SDK's usual arguments need no parser to check them.
fn flat_strings(raw: &str) -> bool {
    let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        return false;
    };
    let mut rest = inner.as_bytes();
    while !rest.is_empty() {
        let Some(after_key) = plain_string(rest).and_then(|r| r.strip_prefix(b":")) else {
            return false;
        };
        match plain_string(after_key) {
            Some([]) => return true,
            Some([b',', more @ ..]) if !more.is_empty() => rest = more,
            _ => return false,
        }
    }
    true
}

/// `"..."` without escapes or control characters at the start of `b`: what
/// follows it.
fn plain_string(b: &[u8]) -> Option<&[u8]> {
    let body = b.strip_prefix(b"\"")?;
    let end = body
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (body[end] == b'"').then(|| &body[end + 1..])
}

/// The string `S` when `args` is exactly `{"NAME":"S"}` with `S` free of escapes
/// and control characters: the arguments the SDK writes for a one-string op, read
/// without a parser (a strict parse of the same text gives the same `S`).
pub fn sole_string<'a>(args: Option<Args<'a>>, name: &str) -> Option<&'a str> {
    let value = args?
        .0
        .strip_prefix("{\"")?
        .strip_prefix(name)?
        .strip_prefix("\":")?;
    // `"S"}`: a plain string, then only the closing brace.
    match plain_string(value.as_bytes())? {
        b"}" => Some(&value[1..value.len() - 2]),
        _ => None,
    }
}

/// The general strict decoder, for any message.
fn decode_text(text: &str) -> Result<Incoming<'_>, DecodeError> {
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) => return Err(classify(text, e)),
    };
    let only = |allowed: &[&str]| -> Result<(), String> {
        let present = [
            ("id", env.id.is_some()),
            ("op", env.op.is_some()),
            ("args", env.args.is_some()),
            ("versions", env.versions.is_some()),
            ("plugin", env.plugin.is_some()),
            ("version", env.version.is_some()),
            ("seq", env.seq.is_some()),
        ];
        match present.iter().find(|(k, p)| *p && !allowed.contains(k)) {
            Some((k, _)) => Err(format!(
                "field `{k}` does not belong in a `{}` message",
                env.ty
            )),
            None => Ok(()),
        }
    };
    match env.ty.as_ref() {
        "call" => {
            let id = env
                .id
                .ok_or_else(|| DecodeError::Framing("call without an `id`".into()))?;
            let bad = |message: String| DecodeError::BadCall { id, message };
            only(&["id", "op", "args"]).map_err(bad)?;
            let op = env.op.ok_or_else(|| bad("call without an `op`".into()))?;
            if let Some(args) = env.args {
                if !args.get().trim_start().starts_with('{') {
                    return Err(bad("`args` must be an object".into()));
                }
            }
            Ok(Incoming::Call {
                id,
                op,
                args: env.args.map(|a| Args(a.get())),
            })
        }
        "hello" => {
            only(&["versions", "plugin", "version"]).map_err(DecodeError::Framing)?;
            match (env.versions, env.plugin, env.version) {
                (Some(versions), Some(plugin), Some(version)) => Ok(Incoming::Hello {
                    versions,
                    plugin,
                    version,
                }),
                _ => Err(DecodeError::Framing(
                    "hello needs `versions`, `plugin` and `version`".into(),
                )),
            }
        }
        "pong" => {
            only(&["seq"]).map_err(DecodeError::Framing)?;
            let seq = env
                .seq
                .ok_or_else(|| DecodeError::Framing("pong without a `seq`".into()))?;
            Ok(Incoming::Pong { seq })
        }
        other => Err(DecodeError::Framing(format!(
            "unknown message type {other:?}"
        ))),
    }
}

/// A strict decode failed: a `call` with a readable u64 id gets a typed
/// `bad_request` reply; anything else is a framing violation.
fn classify(text: &str, e: serde_json::Error) -> DecodeError {
    let msg = e.to_string();
    // A field said twice is no message we can answer: which `id` would the
    // reply go to? (It went to the last one.) Looked for on its own, since
    // another error may come first.
    let top = serde_json::from_str::<crate::strict::UniqueMap<serde::de::IgnoredAny>>(text);
    if let Err(dup) = top.as_ref().map_err(ToString::to_string) {
        if dup.starts_with("duplicate key") {
            return DecodeError::Framing(dup.clone());
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        if map.get("type").and_then(|t| t.as_str()) == Some("call") {
            if let Some(id) = map.get("id").and_then(|i| i.as_u64()) {
                return DecodeError::BadCall { id, message: msg };
            }
        }
        return DecodeError::Framing(msg);
    }
    DecodeError::Framing(format!("message is not a JSON object: {msg}"))
}

/// Decodes a call's `args` into the op's own argument type (strict: unknown fields
/// refused), turning failures into `bad_request`.
pub fn args<'a, T: Deserialize<'a>>(args: Option<Args<'a>>) -> Result<T, CallError> {
    let text = args.map_or("{}", Args::get);
    serde_json::from_str(text)
        .map_err(|e| CallError::new(ErrorCode::BadRequest, format!("args: {e}")))
}

/// Messages warden sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing<'a> {
    Welcome {
        version: u32,
        plugin: &'a str,
        capabilities: &'a [&'a str],
        limits: Limits,
    },
    Reply {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        ok: Option<&'a serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a CallError>,
    },
    Error {
        error: &'a CallError,
    },
    Ping {
        seq: u64,
    },
    Shutdown {
        deadline_ms: u64,
    },
}

/// The limits announced in `welcome`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub max_message: usize,
    pub max_in_flight: usize,
    pub call_timeout_ms: u64,
    pub rate: Rate,
}

/// A token bucket's parameters: refill rate and burst size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            per_second: 500,
            burst: 1000,
        }
    }
}

impl Outgoing<'_> {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_into(Vec::new())
    }

    /// [`Outgoing::encode`] into `out` (emptied first), to reuse its allocation.
    pub fn encode_into(&self, mut out: Vec<u8>) -> Vec<u8> {
        out.clear();
        serde_json::to_writer(&mut out, self).expect("outgoing messages always serialize");
        out
    }
}

/// The reply to a `kv.get` that found its value, `{"type":"reply","id":ID,
/// "ok":{"value":VALUE}}`: the bytes [`Outgoing::Reply`] gives for that value,
/// written without building a JSON value first (the cache-hit path).
/// Written into `out` (emptied first), to reuse its allocation.
pub fn value_reply(mut out: Vec<u8>, id: u64, value: &str) -> Vec<u8> {
    out.clear();
    out.reserve(48 + value.len());
    out.extend_from_slice(b"{\"type\":\"reply\",\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"ok\":{\"value\":");
    serde_json::to_writer(&mut out, value).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(text: &str) -> String {
        match decode(text.as_bytes()) {
            Err(DecodeError::Framing(m)) => m,
            other => panic!("{text}: expected framing error, got {other:?}"),
        }
    }

    #[test]
    fn the_sdk_shape_takes_the_plain_path_and_others_do_not() {
        let sdk = r#"{"type":"call","id":7,"op":"kv.get","args":{"key":"k\""}}"#;
        assert!(plain_call(sdk).is_some());
        assert!(plain_call(r#"{"type":"call","id":7,"op":"kv.list"}"#).is_some());
        for other in [
            r#"{"args":{"key":"k"},"id":7,"op":"kv.get","type":"call"}"#,
            r#"{"type": "call","id":7,"op":"kv.get"}"#,
            r#"{"type":"call","id":7,"op":"kv.get","args":{}} "#,
        ] {
            assert!(plain_call(other).is_none(), "{other}");
            assert!(decode(other.as_bytes()).is_ok(), "{other}");
        }
    }

    #[test]
    fn decodes_the_three_plugin_messages() {
        match decode(br#"{"type":"hello","versions":[1],"plugin":"echo","version":"1.0.0"}"#) {
            Ok(Incoming::Hello {
                versions, plugin, ..
            }) => {
                assert_eq!(versions, vec![1]);
                assert_eq!(plugin, "echo");
            }
            other => panic!("{other:?}"),
        }
        match decode(br#"{"type":"call","id":7,"op":"kv.get","args":{"key":"a\"b"}}"#) {
            Ok(Incoming::Call {
                id: 7,
                op,
                args: Some(a),
            }) => {
                assert_eq!(op, "kv.get");
                assert_eq!(a.get(), r#"{"key":"a\"b"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(br#"{"type":"pong","seq":3}"#),
            Ok(Incoming::Pong { seq: 3 })
        ));
    }

    #[test]
    fn flat_arguments_are_read_without_a_parser_and_only_those() {
        for flat in [
            "{}",
            r#"{"key":"greeting"}"#,
            r#"{"key":"k","value":"v, with {braces} and : colons"}"#,
            r#"{"key":"café 😀"}"#,
            r#"{"":""}"#,
        ] {
            assert!(flat_strings(flat), "{flat}");
            assert!(Args::parse(flat).is_some(), "{flat}");
        }
        for other in [
            r#"{ "key":"k"}"#,
            r#"{"key":"a"b"}"#,
            r#"{"key":"a
b"}"#,
            "{\"key\":\"a\tb\"}",
            r#"{"key":"k",}"#,
            r#"{"key":"k""value":"v"}"#,
            r#"{"key":5}"#,
            r#"{"key"}"#,
            r#"{"key":"k"} "#,
            r#"{"key":"k"#,
            "{",
        ] {
            assert!(!flat_strings(other), "{other}");
        }
        let key = |t: &'static str| sole_string(Args::parse(t), "key");
        assert_eq!(key(r#"{"key":"greeting"}"#), Some("greeting"));
        assert_eq!(key(r#"{"key":"a\"b"}"#), None);
        assert_eq!(key(r#"{"key":"k","value":"v"}"#), None);
        assert_eq!(key(r#"{"keys":"k"}"#), None);
        assert_eq!(key(r#"{"key":"k"} "#), None);
    }

    #[test]
    fn value_reply_is_the_reply_encoding() {
        for (id, v) in [(0, ""), (7, "plain"), (u64::MAX, "q\"\\\n\u{1}é😀")] {
            let value = serde_json::json!({ "value": v });
            let want = Outgoing::Reply {
                id,
                ok: Some(&value),
                error: None,
            }
            .encode();
            assert_eq!(value_reply(b"stale".to_vec(), id, v), want);
        }
    }

    #[test]
    fn framing_violations() {
        assert!(matches!(decode(b"\xff\xfe"), Err(DecodeError::Framing(_))));
        framing("not json");
        framing("[1,2]");
        framing(r#"{"id":1,"op":"kv.get"}"#);
        framing(r#"{"type":"launch"}"#);
        framing(r#"{"type":"call","op":"kv.get"}"#);
        framing(r#"{"type":"call","id":-1,"op":"kv.get"}"#);
        framing(r#"{"type":"hello","versions":[1]}"#);
        framing(r#"{"type":"pong"}"#);
        framing(r#"{"type":"call","id":1,"op":"x"} trailing"#);
        // A field said twice: no reply could know its id (it went to the last).
        framing(r#"{"type":"call","id":129,"op":"kv.get","args":{},"id":1129}"#);
        framing(r#"{"type":"call","type":"call","id":1,"op":"kv.get"}"#);
        // ... also when another error comes first.
        framing(r#"{"type":"call","bogus":0,"id":1,"op":"kv.get","id":2}"#);
        framing(r#"{"type":"call","id":1,"op":5,"id":2}"#);
    }

    #[test]
    fn bad_calls_keep_their_id() {
        for text in [
            r#"{"type":"call","id":5,"op":"kv.get","extra":1}"#,
            r#"{"type":"call","id":5,"op":7}"#,
            r#"{"type":"call","id":5}"#,
            r#"{"type":"call","id":5,"op":"kv.get","args":[1]}"#,
            r#"{"type":"call","id":5,"op":"kv.get","seq":1}"#,
        ] {
            assert!(
                matches!(
                    decode(text.as_bytes()),
                    Err(DecodeError::BadCall { id: 5, .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn encodes_replies() {
        let ok = serde_json::json!({"value": "x"});
        let m = Outgoing::Reply {
            id: 3,
            ok: Some(&ok),
            error: None,
        }
        .encode();
        assert_eq!(m, br#"{"type":"reply","id":3,"ok":{"value":"x"}}"#);
        let e = CallError::new(ErrorCode::RateLimited, "slow down");
        let m = Outgoing::Reply {
            id: 4,
            ok: None,
            error: Some(&e),
        }
        .encode();
        assert_eq!(
            String::from_utf8(m).unwrap(),
            r#"{"type":"reply","id":4,"error":{"code":"rate_limited","message":"slow down"}}"#
        );
    }

    #[test]
    fn op_args_are_strict() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct A {
            #[allow(dead_code)]
            key: String,
        }
        let raw = Args::parse(r#"{"key":"k","x":1}"#).unwrap();
        let e = args::<A>(Some(raw)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(args::<A>(None).is_err());
    }
}
