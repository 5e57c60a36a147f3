//! The operator's per-plugin policy file (`--policy FILE`): review status, granted
//! capabilities and lowered limits, and how it combines with a manifest.
//!
//! Decoding is strict (unknown fields and unknown capability names are refused) and
//! a policy may only narrow what the manifest asks for. The format is documented in
//! docs/policy.md. Nothing here launches or enforces anything: `crate::sandbox`
//! enforces limits, the broker enforces grants, rate limits, the egress
//! allow-list (parsed here with `crate::broker::egress::guard`, matched there) and
//! the data quota.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::broker::egress::guard::{Egress, GuardError};
use crate::broker::protocol::Rate;
use crate::bundle::manifest::{Bounded, Resources};
use crate::bundle::{Capability, Manifest};
use crate::strict::{self, present, UniqueMap};

/// The largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than the {MAX_POLICY_BYTES}-byte limit")]
    TooLarge { path: PathBuf },
    #[error("{path}: line {line} column {column}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{path}: unknown capability {name:?} in {field}")]
    UnknownCapability {
        path: PathBuf,
        name: String,
        /// `grant` or `rate_limits`.
        field: &'static str,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Egress { path: PathBuf, source: GuardError },
    #[error("{path}: limits.{field} is {value}, which is outside {min}..={max}")]
    OutOfRange {
        path: PathBuf,
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// The operator's review decision for a plugin.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    PendingReview,
    Approved,
    Blocked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingReview => "pending_review",
            Status::Approved => "approved",
            Status::Blocked => "blocked",
        }
    }
}

/// Limits the operator lowers; absent fields leave the manifest's value.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, deserialize_with = "present")]
    pub memory_mb: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub pids: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub nofile: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub tmp_mb: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub call_timeout_ms: Option<u64>,
    /// The plugin's data directory quota for `fs.open` (MiB).
    #[serde(default, deserialize_with = "present")]
    pub data_mb: Option<u64>,
}

/// The bounds of `limits.data_mb`.
pub const DATA_MB_RANGE: (u64, u64) = (1, 65536);
/// The most entries in each egress list.
pub const MAX_EGRESS_ENTRIES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    status: Status,
    #[serde(default, deserialize_with = "present")]
    grant: Option<Vec<String>>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    rate_limits: UniqueMap<Rate>,
    #[serde(default, deserialize_with = "present")]
    egress: Option<RawEgress>,
}

/// Token-bucket rates for host calls: a default for every capability and
/// overrides for some (docs/policy.md).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimits {
    pub default: Option<Rate>,
    pub per_capability: Vec<(Capability, Rate)>,
}

/// The largest `per_second` or `burst` a policy may set.
pub const MAX_RATE: u32 = 1_000_000;

/// A validated policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub status: Status,
    /// Granted capabilities; `None` (no policy, or no `grant` key) grants what the
    /// manifest declares.
    pub grant: Option<Vec<Capability>>,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    /// The `net.dial` allow-list; `None` refuses every dial.
    pub egress: Option<Egress>,
}

/// What a plugin may actually have: manifest ∩ policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub capabilities: Vec<Capability>,
    pub resources: Resources,
}

impl Policy {
    /// Reads and validates a policy file (a regular file of at most
    /// [`MAX_POLICY_BYTES`]).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let bytes = strict::open_regular(path)
            .and_then(|(f, _)| strict::read_capped(f, MAX_POLICY_BYTES))
            .map_err(|e| match e {
                strict::ReadError::Io(source) => PolicyError::Read {
                    path: path.to_owned(),
                    source,
                },
                strict::ReadError::TooLarge(_) => PolicyError::TooLarge {
                    path: path.to_owned(),
                },
                e @ strict::ReadError::NotRegular => PolicyError::Invalid {
                    path: path.to_owned(),
                    why: e.to_string(),
                },
            })?;
        Policy::parse(&bytes, path)
    }

    /// Validates policy text; `path` is only used in messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = strict::decode(bytes).map_err(|e| PolicyError::Syntax {
            path: path.to_owned(),
            line: e.error.line(),
            column: e.error.column(),
            msg: e.message(),
        })?;
        let grant = match raw.grant {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        n.parse::<Capability>()
                            .map_err(|_| PolicyError::UnknownCapability {
                                path: path.to_owned(),
                                name: n.clone(),
                                field: "grant",
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let l = raw.limits;
        let d = Resources::default();
        check(path, "memory_mb", l.memory_mb, d.memory_mb)?;
        check(path, "pids", l.pids, d.pids)?;
        check(path, "nofile", l.nofile, d.nofile)?;
        check(path, "tmp_mb", l.tmp_mb, d.tmp_mb)?;
        check(
            path,
            "call_timeout_ms",
            l.call_timeout_ms,
            d.call_timeout_ms,
        )?;
        if let Some(v) = l.data_mb {
            let (min, max) = DATA_MB_RANGE;
            if !(min..=max).contains(&v) {
                return Err(PolicyError::OutOfRange {
                    path: path.to_owned(),
                    field: "data_mb",
                    value: v,
                    min,
                    max,
                });
            }
        }
        let egress = match raw.egress {
            None => None,
            Some(e) => {
                if e.allow.len() > MAX_EGRESS_ENTRIES
                    || e.allow_addresses.len() > MAX_EGRESS_ENTRIES
                {
                    return Err(PolicyError::Invalid {
                        path: path.to_owned(),
                        why: format!("egress lists hold at most {MAX_EGRESS_ENTRIES} entries"),
                    });
                }
                Some(
                    Egress::parse(&e.allow, &e.allow_addresses).map_err(|source| {
                        PolicyError::Egress {
                            path: path.to_owned(),
                            source,
                        }
                    })?,
                )
            }
        };
        let mut rate_limits = RateLimits::default();
        for (name, rate) in raw.rate_limits.0 {
            if !(1..=MAX_RATE).contains(&rate.per_second) || !(1..=MAX_RATE).contains(&rate.burst) {
                return Err(PolicyError::Invalid {
                    path: path.to_owned(),
                    why: format!("rate_limits.{name}: per_second and burst must be 1..={MAX_RATE}"),
                });
            }
            if name == "default" {
                rate_limits.default = Some(rate);
            } else {
                let cap =
                    name.parse::<Capability>()
                        .map_err(|_| PolicyError::UnknownCapability {
                            path: path.to_owned(),
                            name: name.clone(),
                            field: "rate_limits",
                        })?;
                rate_limits.per_capability.push((cap, rate));
            }
        }
        Ok(Policy {
            status: raw.status,
            grant,
            limits: l,
            rate_limits,
            egress,
        })
    }

    /// The plugin's data quota in bytes (`limits.data_mb`, default 64 MiB).
    pub fn data_quota_bytes(&self) -> u64 {
        self.limits
            .data_mb
            .unwrap_or(crate::broker::files::DEFAULT_QUOTA_MB)
            * 1024
            * 1024
    }

    /// Combines with a manifest: capabilities = manifest ∩ grant; each limit = the
    /// lower of the manifest's and the policy's.
    pub fn apply(&self, m: &Manifest) -> Effective {
        let capabilities = match &self.grant {
            None => m.capabilities.clone(),
            Some(g) => m
                .capabilities
                .iter()
                .copied()
                .filter(|c| g.contains(c))
                .collect(),
        };
        let r = m.resources;
        let low = |have: u64, cap: Option<u64>| cap.map_or(have, |c| have.min(c));
        let resources = Resources {
            memory_mb: Bounded(low(r.memory_mb.get(), self.limits.memory_mb)),
            pids: Bounded(low(r.pids.get(), self.limits.pids)),
            nofile: Bounded(low(r.nofile.get(), self.limits.nofile)),
            tmp_mb: Bounded(low(r.tmp_mb.get(), self.limits.tmp_mb)),
            call_timeout_ms: Bounded(low(r.call_timeout_ms.get(), self.limits.call_timeout_ms)),
        };
        Effective {
            capabilities,
            resources,
        }
    }
}

fn check<const MIN: u64, const MAX: u64>(
    path: &Path,
    field: &'static str,
    value: Option<u64>,
    _range: Bounded<MIN, MAX>,
) -> Result<(), PolicyError> {
    match value {
        Some(v) if !(MIN..=MAX).contains(&v) => Err(PolicyError::OutOfRange {
            path: path.to_owned(),
            field,
            value: v,
            min: MIN,
            max: MAX,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Policy, PolicyError> {
        Policy::parse(s.as_bytes(), Path::new("p.json"))
    }

    #[test]
    fn strict_decoding() {
        assert!(
            p(r#"{"status":"approved","grant":["kv:read"],"limits":{"memory_mb":64}}"#).is_ok()
        );
        assert!(p(r#"{"grants":[]}"#).is_err());
        assert!(p(r#"{"limits":{"memory":1}}"#).is_err());
        assert!(p(r#"{"status":"ok"}"#).is_err());
        let e = p(r#"{"grant":["kv:READ"]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"p.json: unknown capability "kv:READ" in grant"#
        );
        let e = p(r#"{"limits":{"pids":1}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.json: limits.pids is 1, which is outside 2..=1024"
        );
    }

    #[test]
    fn egress_is_parsed_strictly() {
        let ok = p(r#"{"egress":{"allow":["api.example.com:443","*.example.org:443","[::1]:80"],"allow_addresses":["127.0.0.1","10.0.0.0/8"]}}"#).unwrap();
        let e = ok.egress.unwrap();
        assert_eq!(e.allow.len(), 3);
        assert_eq!(e.addresses.len(), 2);
        assert!(p("{}").unwrap().egress.is_none());
        let e = p(r#"{"egress":{"allow":["api.example.com"]}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"p.json: egress pattern "api.example.com": needs a port: host:port"#
        );
        let e = p(r#"{"egress":{"allow_addresses":["10.0.0.1/8"]}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"p.json: egress address allowance "10.0.0.1/8": has bits set beyond the prefix length"#
        );
        assert!(p(r#"{"egress":{"hosts":[]}}"#).is_err());
        assert!(p(r#"{"egress":{"allow":["*.com:443"]}}"#).is_err());
        let e = p(r#"{"limits":{"data_mb":0}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.json: limits.data_mb is 0, which is outside 1..=65536"
        );
        assert_eq!(
            p(r#"{"limits":{"data_mb":2}}"#).unwrap().data_quota_bytes(),
            2 << 20
        );
    }

    /// An unknown capability under `rate_limits` names that field (it said "in
    /// grant").
    #[test]
    fn unknown_rate_limit_capability_names_rate_limits() {
        let e = p(r#"{"grant":["kv:read"],"rate_limits":{"kv:raed":{"per_second":1,"burst":1}}}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("in grant"), "{e}");
        assert!(e.contains("rate_limits"), "{e}");
    }

    /// A key said twice is refused inside `rate_limits` as at the top level (the
    /// last one silently won: the operator's 1/s became 1000000/s).
    #[test]
    fn duplicate_rate_limit_key_is_refused() {
        assert!(p(r#"{"status":"blocked","status":"approved"}"#).is_err());
        let r = p(
            r#"{"rate_limits":{"default":{"per_second":1,"burst":1},"default":{"per_second":1000000,"burst":1000000}}}"#,
        );
        assert!(r.is_err(), "accepted: {:?}", r.map(|p| p.rate_limits));
    }

    /// `"grant": null` is a wrong type, refused; it was read as "no grant key",
    /// which grants everything the manifest declares.
    #[test]
    fn null_grant_is_refused_not_everything() {
        let r = p(r#"{"status":"approved","grant":null}"#);
        assert!(r.is_err(), "accepted with grant {:?}", r.map(|p| p.grant));
    }

    #[test]
    fn status_defaults_to_pending_review() {
        assert_eq!(p("{}").unwrap().status, Status::PendingReview);
    }
}
