//! The plugin manifest: strict decoding, field validation and documented defaults.
//!
//! Decoding is strict (unknown fields, duplicate fields, trailing data and oversized
//! input are refused) and every field is validated while it is decoded, so a bad
//! value is reported with its line and column. Capabilities are decoded as names and
//! checked against the closed list separately, because an unknown capability has its
//! own rejection code. Nothing here touches the filesystem.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::capability::{Capability, UnknownCapability};

/// The largest `manifest.json` accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// At most this many `args`, each at most [`MAX_ARG_BYTES`] long.
pub const MAX_ARGS: usize = 64;
/// The longest single argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// At most this many entries in `provides` and in `consumes`.
pub const MAX_SERVICES: usize = 32;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("line {line} column {column}: {msg}")]
    Syntax {
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{0}")]
    UnknownCapability(UnknownCapability),
    #[error("capability {0} is listed twice")]
    DuplicateCapability(Capability),
    /// The file could not be read (missing, too large, not a regular file).
    #[error("{0}")]
    Unreadable(String),
    #[error("{field} is {len} characters long; at most {MAX_VERSION_LEN}")]
    VersionTooLong { field: &'static str, len: usize },
}

/// The longest `version` or `min_core`, in characters: a signature's trusted
/// comment carries the version, and must stay within what verify reads.
pub const MAX_VERSION_LEN: usize = 128;

impl ManifestError {
    fn from_decode(e: crate::strict::Decode) -> Self {
        ManifestError::Syntax {
            line: e.error.line(),
            column: e.error.column(),
            // The key it is about, then serde_json's message without its position
            // (reported separately). It may quote the manifest (an unknown field's
            // name), which is not authenticated yet when a parse fails: one line,
            // no escape sequences.
            msg: crate::text::printable(&e.message()),
        }
    }
}

/// A validated manifest. Constructed only by [`Manifest::parse`].
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub id: Slug,
    pub version: semver::Version,
    pub publisher: Slug,
    pub min_core: semver::Version,
    pub artifact: Artifact,
    pub capabilities: Vec<Capability>,
    pub args: Vec<String>,
    pub resources: Resources,
    pub health: Option<Health>,
    pub provides: Vec<ServiceName>,
    pub consumes: Vec<ServiceName>,
}

/// What the manifest pins of the artifact.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub sha256: Sha256Hex,
}

/// Resource requests. Each value has a documented default, minimum and maximum
/// (docs/manifest.md); the policy may lower them further, never raise them.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Address-space (and cgroup memory) limit, in MiB.
    pub memory_mb: Bounded<16, 4096>,
    /// Processes and threads inside the sandbox, including its init.
    pub pids: Bounded<2, 1024>,
    /// Open file descriptors.
    pub nofile: Bounded<16, 4096>,
    /// Size of the private writable /tmp, in MiB.
    pub tmp_mb: Bounded<1, 1024>,
    /// How long one host call may take before it answers `timeout`, in ms.
    pub call_timeout_ms: Bounded<10, 60_000>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_mb: Bounded(256),
            pids: Bounded(64),
            nofile: Bounded(256),
            tmp_mb: Bounded(64),
            call_timeout_ms: Bounded(5_000),
        }
    }
}

/// Health checking: the supervisor pings every `interval_ms` and expects a pong
/// within `timeout_ms`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Health {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "default_interval")]
    interval_ms: Bounded<100, 3_600_000>,
    #[serde(default = "default_timeout")]
    timeout_ms: Bounded<10, 600_000>,
}

fn default_interval() -> Bounded<100, 3_600_000> {
    Bounded(10_000)
}
fn default_timeout() -> Bounded<10, 600_000> {
    Bounded(2_000)
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawHealth::deserialize(d)?;
        if raw.timeout_ms.0 >= raw.interval_ms.0 {
            return Err(de::Error::custom(format!(
                "health.timeout_ms ({}) must be less than health.interval_ms ({})",
                raw.timeout_ms.0, raw.interval_ms.0
            )));
        }
        Ok(Health {
            interval_ms: raw.interval_ms.0,
            timeout_ms: raw.timeout_ms.0,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: Slug,
    version: semver::Version,
    publisher: Slug,
    min_core: semver::Version,
    artifact: Artifact,
    capabilities: Vec<String>,
    #[serde(default)]
    args: Args,
    #[serde(default)]
    resources: Resources,
    #[serde(default, deserialize_with = "crate::strict::present")]
    health: Option<Health>,
    #[serde(default)]
    provides: Services,
    #[serde(default)]
    consumes: Services,
}

impl Manifest {
    /// Decodes and validates `bytes` as a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let raw: RawManifest = crate::strict::decode(bytes).map_err(ManifestError::from_decode)?;
        for (field, v) in [("version", &raw.version), ("min_core", &raw.min_core)] {
            let len = v.to_string().len();
            if len > MAX_VERSION_LEN {
                return Err(ManifestError::VersionTooLong { field, len });
            }
        }
        let mut capabilities = Vec::with_capacity(raw.capabilities.len());
        for name in &raw.capabilities {
            let cap: Capability = name.parse().map_err(ManifestError::UnknownCapability)?;
            if capabilities.contains(&cap) {
                return Err(ManifestError::DuplicateCapability(cap));
            }
            capabilities.push(cap);
        }
        Ok(Manifest {
            id: raw.id,
            version: raw.version,
            publisher: raw.publisher,
            min_core: raw.min_core,
            artifact: raw.artifact,
            capabilities,
            args: raw.args.0,
            resources: raw.resources,
            health: raw.health,
            provides: raw.provides.0,
            consumes: raw.consumes.0,
        })
    }

    /// The version of this warden, against which `min_core` is checked.
    pub fn core_version() -> semver::Version {
        semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("crate version is semver")
    }

    /// Whether this warden is too old for the manifest (`min_core` is newer).
    pub fn needs_newer_core(&self) -> bool {
        // SemVer precedence: build metadata does not make a version newer.
        self.min_core.cmp_precedence(&Self::core_version()).is_gt()
    }
}

/// A lower-case identifier: `[a-z0-9][a-z0-9-]{0,63}`. Used for plugin ids and
/// publisher names, which also appear in paths and namespaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Validates `s` as a slug.
    pub fn new(s: &str) -> Result<Slug, String> {
        let b = s.as_bytes();
        let ok_first = b
            .first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok_first && ok_rest && b.len() <= 64 {
            Ok(Slug(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid name: use 1 to 64 of a-z, 0-9 and '-', not starting with '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Slug::new(&s).map_err(de::Error::custom)
    }
}

/// A sha256 digest written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256Hex(pub [u8; 32]);

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_sha256_hex(&s).map(Sha256Hex).ok_or_else(|| {
            de::Error::custom(format!(
                "{s:?} is not a sha256 digest (64 lower-case hex digits)"
            ))
        })
    }
}

fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// An integer that must lie in `MIN..=MAX`; decoding out of range fails with the
/// bounds named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if (MIN..=MAX).contains(&v) {
            Ok(Bounded(v))
        } else {
            Err(de::Error::custom(format!(
                "{v} is outside the allowed range {MIN}..={MAX}"
            )))
        }
    }
}

#[derive(Default)]
struct Args(Vec<String>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.len() > MAX_ARGS {
            return Err(de::Error::custom(format!(
                "at most {MAX_ARGS} args are allowed"
            )));
        }
        for a in &v {
            if a.len() > MAX_ARG_BYTES || a.contains('\0') {
                return Err(de::Error::custom(format!(
                    "each arg must be at most {MAX_ARG_BYTES} bytes with no NUL"
                )));
            }
        }
        Ok(Args(v))
    }
}

/// The name of a service a plugin provides or consumes: `[a-z][a-z0-9.-]{0,63}`,
/// optionally followed by `@<major>` (e.g. `dns.zone@1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn new(s: &str) -> Result<ServiceName, String> {
        let (name, major) = match s.split_once('@') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        let b = name.as_bytes();
        let name_ok = b.first().is_some_and(u8::is_ascii_lowercase)
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-');
        // No leading zero: `@01` would be `@1` written another way.
        let major_ok = major.is_none_or(|m| {
            !m.is_empty()
                && m.len() <= 9
                && m.bytes().all(|c| c.is_ascii_digit())
                && (m == "0" || !m.starts_with('0'))
        });
        if name_ok && major_ok {
            Ok(ServiceName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a service name: use [a-z][a-z0-9.-]{{0,63}} with an optional @<major>"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Default)]
struct Services(Vec<ServiceName>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.len() > MAX_SERVICES {
            return Err(de::Error::custom(format!(
                "at most {MAX_SERVICES} services are allowed"
            )));
        }
        let mut out: Vec<ServiceName> = Vec::with_capacity(v.len());
        for s in &v {
            let name = ServiceName::new(s).map_err(de::Error::custom)?;
            if out.contains(&name) {
                return Err(de::Error::custom(format!("service {s:?} is listed twice")));
            }
            out.push(name);
        }
        Ok(Services(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "id": "echo",
  "version": "1.2.3",
  "publisher": "acme",
  "min_core": "0.1.0",
  "artifact": {"sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
  "capabilities": ["kv:read", "log:write"]
}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        serde_json::to_string_pretty(&v).unwrap()
    }

    fn syntax_error(text: &str) -> (usize, usize, String) {
        match Manifest::parse(text.as_bytes()) {
            Err(ManifestError::Syntax { line, column, msg }) => (line, column, msg),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_manifest_gets_documented_defaults() {
        let m = Manifest::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(m.id.as_str(), "echo");
        assert_eq!(
            m.capabilities,
            vec![Capability::KvRead, Capability::LogWrite]
        );
        assert_eq!(m.resources, Resources::default());
        assert_eq!(m.resources.memory_mb.get(), 256);
        assert!(m.health.is_none() && m.args.is_empty() && m.provides.is_empty());
        assert!(!m.needs_newer_core());
    }

    #[test]
    fn unknown_field_is_refused_with_position() {
        let text = GOOD.replace("\"id\"", "\"extra\": 1, \"id\"");
        let (line, _, msg) = syntax_error(&text);
        assert_eq!(line, 2);
        assert!(msg.contains("unknown field `extra`"), "{msg}");
    }

    #[test]
    fn trailing_data_duplicate_fields_and_size_are_refused() {
        syntax_error(&format!("{GOOD} {{}}"));
        syntax_error(&GOOD.replace("\"id\": \"echo\",", "\"id\": \"echo\", \"id\": \"echo\","));
        let big = format!("{GOOD}{}", " ".repeat(MAX_MANIFEST_BYTES));
        assert!(matches!(
            Manifest::parse(big.as_bytes()),
            Err(ManifestError::TooLarge(_))
        ));
    }

    #[test]
    fn field_values_are_validated() {
        for (field, value, needle) in [
            ("id", r#""Echo""#, "not a valid name"),
            ("id", r#""-x""#, "not a valid name"),
            ("id", &format!("\"{}\"", "a".repeat(65)), "not a valid name"),
            ("publisher", r#""a/b""#, "not a valid name"),
            ("version", r#""1.0""#, "unexpected end of input"),
            ("artifact", r#"{"sha256": "ABC"}"#, "not a sha256 digest"),
            (
                "resources",
                r#"{"memory_mb": 999999}"#,
                "outside the allowed range 16..=4096",
            ),
            ("resources", r#"{"pids": 1}"#, "outside the allowed range"),
            ("resources", r#"{"cpu": 1}"#, "unknown field `cpu`"),
            (
                "health",
                r#"{"interval_ms": 1000, "timeout_ms": 1000}"#,
                "must be less than",
            ),
            ("provides", r#"["Bad Name"]"#, "not a service name"),
            ("consumes", r#"["dns", "dns"]"#, "listed twice"),
            ("args", r#"[1]"#, "invalid type"),
            // An object or absent: `null` is not read as "no health check".
            ("health", "null", "invalid type: null"),
        ] {
            let (_, _, msg) = syntax_error(&with(field, value));
            assert!(msg.contains(needle), "{field}={value}: {msg}");
        }
    }

    /// SemVer rules where they matter: build metadata does not make `min_core`
    /// newer, a service major has no leading zero, versions are short.
    #[test]
    fn versions_follow_semver_and_stay_short() {
        let m = Manifest::parse(with("min_core", r#""0.1.0+build.5""#).as_bytes()).unwrap();
        assert!(!m.needs_newer_core(), "warden {}", Manifest::core_version());
        let (_, _, msg) = syntax_error(&with("provides", r#"["dns@01"]"#));
        assert!(msg.contains("not a service name"), "{msg}");
        assert!(
            Manifest::parse(with("provides", r#"["dns@0", "dns.zone@10"]"#).as_bytes()).is_ok()
        );
        let long = format!(r#""1.0.0+{}""#, "a".repeat(200));
        let e = Manifest::parse(with("version", &long).as_bytes());
        assert!(
            matches!(
                e,
                Err(ManifestError::VersionTooLong {
                    field: "version",
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn capabilities_unknown_and_duplicate() {
        let e = Manifest::parse(with("capabilities", r#"["kv:read", "root"]"#).as_bytes());
        assert!(
            matches!(e, Err(ManifestError::UnknownCapability(_))),
            "{e:?}"
        );
        let e = Manifest::parse(with("capabilities", r#"["kv:read", "kv:read"]"#).as_bytes());
        assert!(matches!(
            e,
            Err(ManifestError::DuplicateCapability(Capability::KvRead))
        ));
    }

    #[test]
    fn min_core_newer_than_this_warden_is_flagged() {
        let m = Manifest::parse(with("min_core", r#""999.0.0""#).as_bytes()).unwrap();
        assert!(m.needs_newer_core());
    }

    #[test]
    fn service_names() {
        for ok in ["dns", "dns.zone@1", "a-b.c"] {
            ServiceName::new(ok).unwrap();
        }
        for bad in ["", "1dns", "dns@", "dns@x", "DNS", "dns zone"] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?}");
        }
    }
}
