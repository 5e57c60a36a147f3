//! The service configuration file of `warden serve` (`/etc/warden/warden.json`, or
//! `--config PATH`): where plugins, keys, state, the audit log and the control
//! socket live, the uid range, default limits and rate limits, restart policy and
//! output rate limits. docs/config.md documents every key.
//!
//! Decoding is strict: unknown keys and bad values are refused with the key named,
//! before warden does anything. Relative paths are resolved against the directory
//! of the config file, so the bundled `examples/warden.json` runs from the repo.
//! Nothing here opens the paths it names: the supervisor does, in order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::FsyncPolicy;
use crate::broker::protocol::Rate;
use crate::policy::Limits;

/// The path used when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/warden/warden.json";
/// The largest config file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: larger than the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge { path: PathBuf },
    #[error("config {path}: line {line} column {column}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("config {path}: {key}: {why}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    plugin_dir: PathBuf,
    trust_dir: PathBuf,
    state_dir: PathBuf,
    audit_log: PathBuf,
    #[serde(default)]
    audit_rotate_mb: Option<u64>,
    #[serde(default)]
    audit_fsync: Option<String>,
    control_socket: PathBuf,
    #[serde(default)]
    admin_group: Option<String>,
    #[serde(default)]
    uid_range: Option<String>,
    #[serde(default)]
    landlock_min_abi: Option<u32>,
    #[serde(default)]
    cgroup: Option<bool>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    rate: Option<RawRate>,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    start_timeout_ms: Option<u64>,
    #[serde(default)]
    shutdown_deadline_ms: Option<u64>,
    #[serde(default)]
    output: RawOutput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: u32,
    burst: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    max_restarts: Option<u32>,
    window_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    lines_per_second: Option<u32>,
    burst: Option<u32>,
    max_line_bytes: Option<usize>,
}

/// Restart policy: exponential backoff from `initial_backoff` doubling up to
/// `max_backoff`; more than `max_restarts` restarts within `window` puts the
/// plugin in `failed` until an operator restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_restarts: u32,
    pub window: Duration,
}

/// Rate limit on plugin stdout/stderr lines forwarded to warden's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub lines_per_second: u32,
    pub burst: u32,
    pub max_line_bytes: usize,
}

/// A validated configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub source: PathBuf,
    pub plugin_dir: PathBuf,
    pub trust_dir: PathBuf,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    /// Rotate the audit log before it would pass this many bytes (`None`: never).
    pub audit_rotate_bytes: Option<u64>,
    pub audit_fsync: FsyncPolicy,
    pub control_socket: PathBuf,
    /// Members of this group (besides root) may use the control socket.
    pub admin_gid: Option<u32>,
    pub uid_range: (u32, u32),
    pub landlock_min_abi: u32,
    pub cgroup: bool,
    /// Ceilings applied to every plugin on top of its manifest and policy.
    pub limits: Limits,
    /// Default host-call rate per capability.
    pub rate: Rate,
    pub restart: Restart,
    /// How long a started plugin has to say hello.
    pub start_timeout: Duration,
    /// How long a plugin has to stop after `shutdown` before SIGKILL.
    pub shutdown_deadline: Duration,
    pub output: Output,
}

impl Config {
    /// The effective configuration under the keys of the file (docs/config.md),
    /// defaults filled in and paths made absolute: what `warden serve --check`
    /// prints, so that each value can be found by the name the operator writes.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let fsync = match self.audit_fsync {
            FsyncPolicy::Never => "never",
            FsyncPolicy::OnFlush => "on_flush",
            FsyncPolicy::EveryEvent => "every_event",
        };
        let l = &self.limits;
        serde_json::json!({
            "plugin_dir": self.plugin_dir,
            "trust_dir": self.trust_dir,
            "state_dir": self.state_dir,
            "audit_log": self.audit_log,
            "audit_rotate_mb": self.audit_rotate_bytes.map(|b| b / (1024 * 1024)),
            "audit_fsync": fsync,
            "control_socket": self.control_socket,
            "admin_group": self.admin_gid.map(|g| g.to_string()),
            "uid_range": format!("{}-{}", self.uid_range.0, self.uid_range.1),
            "landlock_min_abi": self.landlock_min_abi,
            "cgroup": self.cgroup,
            "limits": {
                "memory_mb": l.memory_mb,
                "pids": l.pids,
                "nofile": l.nofile,
                "tmp_mb": l.tmp_mb,
                "call_timeout_ms": l.call_timeout_ms,
                "data_mb": l.data_mb,
            },
            "rate": self.rate,
            "restart": {
                "initial_backoff_ms": ms(self.restart.initial_backoff),
                "max_backoff_ms": ms(self.restart.max_backoff),
                "max_restarts": self.restart.max_restarts,
                "window_s": self.restart.window.as_secs(),
            },
            "start_timeout_ms": ms(self.start_timeout),
            "shutdown_deadline_ms": ms(self.shutdown_deadline),
            "output": {
                "lines_per_second": self.output.lines_per_second,
                "burst": self.output.burst,
                "max_line_bytes": self.output.max_line_bytes,
            },
        })
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = crate::strict::open_regular(path)
            .and_then(|(f, _)| crate::strict::read_capped(f, MAX_CONFIG_BYTES))
            .map_err(|e| match e {
                crate::strict::ReadError::Io(source) => read(source),
                crate::strict::ReadError::TooLarge(_) => ConfigError::TooLarge {
                    path: path.to_owned(),
                },
                e @ crate::strict::ReadError::NotRegular => read(std::io::Error::other(e)),
            })?;
        // A bare file name's parent is "": the current directory.
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Config::parse(&bytes, path, &base, group_gid)
    }

    /// Validates config text; `path` is used in messages, relative paths are
    /// joined to `base`, and `gid_of` resolves a group name.
    pub fn parse(
        bytes: &[u8],
        path: &Path,
        base: &Path,
        gid_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<Config, ConfigError> {
        let raw: Raw = crate::strict::decode(bytes).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.error.line(),
            column: e.error.column(),
            msg: e.message(),
        })?;
        let bad = |key: &'static str, why: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            why,
        };
        let abs = |key: &'static str, p: PathBuf| -> Result<PathBuf, ConfigError> {
            if p.as_os_str().is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
            Ok(if p.is_absolute() { p } else { base.join(p) })
        };
        let plugin_dir = abs("plugin_dir", raw.plugin_dir)?;
        let trust_dir = abs("trust_dir", raw.trust_dir)?;
        let state_dir = abs("state_dir", raw.state_dir)?;
        let audit_log = abs("audit_log", raw.audit_log)?;
        range("audit_rotate_mb", raw.audit_rotate_mb, (1, 1_048_576), &bad)?;
        let audit_fsync = match raw.audit_fsync.as_deref() {
            None | Some("on_flush") => FsyncPolicy::OnFlush,
            Some("never") => FsyncPolicy::Never,
            Some("every_event") => FsyncPolicy::EveryEvent,
            Some(other) => {
                return Err(bad(
                    "audit_fsync",
                    format!("{other:?} is not one of \"on_flush\", \"every_event\", \"never\""),
                ))
            }
        };
        let control_socket = abs("control_socket", raw.control_socket)?;
        if control_socket.as_os_str().len() >= 108 {
            return Err(bad(
                "control_socket",
                format!(
                    "{} is longer than a Unix socket path may be (107 bytes)",
                    control_socket.display()
                ),
            ));
        }
        let admin_gid = match raw.admin_group {
            None => None,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => Some(gid_of(&g).ok_or_else(|| {
                    bad("admin_group", format!("no group named {g:?} on this host"))
                })?),
            },
        };
        let uid_range = match raw.uid_range {
            None => crate::sandbox::plan::DEFAULT_UID_RANGE,
            Some(s) => parse_range(&s).map_err(|why| bad("uid_range", why))?,
        };
        let landlock_min_abi = raw
            .landlock_min_abi
            .unwrap_or(crate::sandbox::plan::DEFAULT_LANDLOCK_MIN_ABI);
        if landlock_min_abi == 0 {
            return Err(bad("landlock_min_abi", "must be at least 1".into()));
        }
        let l = raw.limits;
        let d = crate::bundle::manifest::Resources::default();
        range("limits.memory_mb", l.memory_mb, bounds(d.memory_mb), &bad)?;
        range("limits.pids", l.pids, bounds(d.pids), &bad)?;
        range("limits.nofile", l.nofile, bounds(d.nofile), &bad)?;
        range("limits.tmp_mb", l.tmp_mb, bounds(d.tmp_mb), &bad)?;
        range(
            "limits.call_timeout_ms",
            l.call_timeout_ms,
            bounds(d.call_timeout_ms),
            &bad,
        )?;
        range(
            "limits.data_mb",
            l.data_mb,
            crate::policy::DATA_MB_RANGE,
            &bad,
        )?;
        let rate = match raw.rate {
            None => Rate::default(),
            Some(r) => {
                range(
                    "rate.per_second",
                    Some(r.per_second.into()),
                    (1, 1_000_000),
                    &bad,
                )?;
                range("rate.burst", Some(r.burst.into()), (1, 1_000_000), &bad)?;
                Rate {
                    per_second: r.per_second,
                    burst: r.burst,
                }
            }
        };
        let rs = raw.restart;
        range(
            "restart.initial_backoff_ms",
            rs.initial_backoff_ms,
            (10, 3_600_000),
            &bad,
        )?;
        range(
            "restart.max_backoff_ms",
            rs.max_backoff_ms,
            (10, 3_600_000),
            &bad,
        )?;
        range(
            "restart.max_restarts",
            rs.max_restarts.map(u64::from),
            (0, 10_000),
            &bad,
        )?;
        range("restart.window_s", rs.window_s, (1, 86_400), &bad)?;
        let restart = Restart {
            initial_backoff: Duration::from_millis(rs.initial_backoff_ms.unwrap_or(500)),
            max_backoff: Duration::from_millis(rs.max_backoff_ms.unwrap_or(30_000)),
            max_restarts: rs.max_restarts.unwrap_or(5),
            window: Duration::from_secs(rs.window_s.unwrap_or(60)),
        };
        if restart.max_backoff < restart.initial_backoff {
            return Err(bad(
                "restart.max_backoff_ms",
                format!(
                    "{} is less than restart.initial_backoff_ms ({})",
                    restart.max_backoff.as_millis(),
                    restart.initial_backoff.as_millis()
                ),
            ));
        }
        range(
            "start_timeout_ms",
            raw.start_timeout_ms,
            (100, 600_000),
            &bad,
        )?;
        range(
            "shutdown_deadline_ms",
            raw.shutdown_deadline_ms,
            (10, 600_000),
            &bad,
        )?;
        let o = raw.output;
        range(
            "output.lines_per_second",
            o.lines_per_second.map(u64::from),
            (1, 100_000),
            &bad,
        )?;
        range("output.burst", o.burst.map(u64::from), (1, 1_000_000), &bad)?;
        range(
            "output.max_line_bytes",
            o.max_line_bytes.map(|v| v as u64),
            (80, 65_536),
            &bad,
        )?;
        Ok(Config {
            source: path.to_owned(),
            plugin_dir,
            trust_dir,
            state_dir,
            audit_log,
            audit_rotate_bytes: raw.audit_rotate_mb.map(|mb| mb * 1024 * 1024),
            audit_fsync,
            control_socket,
            admin_gid,
            uid_range,
            landlock_min_abi,
            cgroup: raw.cgroup.unwrap_or(true),
            limits: l,
            rate,
            restart,
            start_timeout: Duration::from_millis(raw.start_timeout_ms.unwrap_or(10_000)),
            shutdown_deadline: Duration::from_millis(raw.shutdown_deadline_ms.unwrap_or(5_000)),
            output: Output {
                lines_per_second: o.lines_per_second.unwrap_or(20),
                burst: o.burst.unwrap_or(100),
                max_line_bytes: o.max_line_bytes.unwrap_or(2048),
            },
        })
    }
}

fn bounds<const MIN: u64, const MAX: u64>(
    _: crate::bundle::manifest::Bounded<MIN, MAX>,
) -> (u64, u64) {
    (MIN, MAX)
}

fn range(
    key: &'static str,
    value: Option<u64>,
    (min, max): (u64, u64),
    bad: &impl Fn(&'static str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => {
            Err(bad(key, format!("{v} is outside {min}..={max}")))
        }
        _ => Ok(()),
    }
}

/// Parses `START-END` (host uids for plugins when warden runs as root).
pub fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected START-END, e.g. 3000000000-3000065535"))?;
    let a: u32 = a.parse().map_err(|e| format!("{s:?}: START: {e}"))?;
    let b: u32 = b.parse().map_err(|e| format!("{s:?}: END: {e}"))?;
    if a == 0 || a > b || b == u32::MAX {
        return Err(format!("{s:?}: need 0 < START <= END < 4294967295"));
    }
    Ok((a, b))
}

/// The gid of group `name` from /etc/group.
pub fn group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#""plugin_dir":"p","trust_dir":"t","state_dir":"/s","audit_log":"a.jsonl","control_socket":"c.sock""#;

    /// `serve --check` printed the config's Rust Debug form, whose names
    /// (`audit_rotate_bytes`, `admin_gid`, `start_timeout: 10s`) are not the
    /// file's keys. Its JSON, nulls left out, reads back as the same config.
    #[test]
    fn check_prints_the_config_under_its_own_keys() {
        fn strip(v: &mut serde_json::Value) {
            if let serde_json::Value::Object(m) = v {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(strip);
            }
        }
        let c = p(r#""audit_rotate_mb":64,"admin_group":"wheel","limits":{"pids":9},"restart":{"window_s":30}"#)
            .unwrap();
        let json = c.to_json();
        assert_eq!(json["audit_rotate_mb"], 64);
        assert_eq!(json["start_timeout_ms"], 10000);
        assert_eq!(json["restart"]["window_s"], 30);
        let mut stripped = json.clone();
        strip(&mut stripped);
        let again = Config::parse(
            stripped.to_string().as_bytes(),
            Path::new("w.json"),
            Path::new("/base"),
            |_| None,
        )
        .unwrap();
        assert_eq!(again.to_json(), json);
    }

    fn p(extra: &str) -> Result<Config, ConfigError> {
        let sep = if extra.is_empty() { "" } else { "," };
        Config::parse(
            format!("{{{MIN}{sep}{extra}}}").as_bytes(),
            Path::new("w.json"),
            Path::new("/base"),
            |g| (g == "wheel").then_some(10),
        )
    }

    #[test]
    fn minimal_config_resolves_relative_paths() {
        let c = p("").unwrap();
        assert_eq!(c.plugin_dir, Path::new("/base/p"));
        assert_eq!(c.state_dir, Path::new("/s"));
        assert_eq!(c.restart.max_restarts, 5);
        assert_eq!(c.admin_gid, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = p(r#""plugins":"x""#).unwrap_err().to_string();
        assert!(e.contains("unknown field `plugins`"), "{e}");
        let e = p(r#""restart":{"max_restart":1}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `max_restart`"), "{e}");
        let e = p(r#""restart":{"window_s":0}"#).unwrap_err().to_string();
        assert_eq!(e, "config w.json: restart.window_s: 0 is outside 1..=86400");
        let e = p(r#""limits":{"pids":1}"#).unwrap_err().to_string();
        assert_eq!(e, "config w.json: limits.pids: 1 is outside 2..=1024");
        let e = p(r#""uid_range":"5-1""#).unwrap_err().to_string();
        assert!(e.starts_with("config w.json: uid_range: "), "{e}");
        let e = p(r#""admin_group":"nosuch""#).unwrap_err().to_string();
        assert_eq!(
            e,
            "config w.json: admin_group: no group named \"nosuch\" on this host"
        );
        assert_eq!(p(r#""admin_group":"wheel""#).unwrap().admin_gid, Some(10));
        let e = p(r#""restart":{"initial_backoff_ms":1000,"max_backoff_ms":100}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("restart.max_backoff_ms"), "{e}");
    }

    /// docs/config.md names nested keys `restart.max_restarts`; an operator who
    /// writes that dotted name at the top level is told of an unknown field
    /// *under `restart`*, as if the restart object had a stray key: the key in
    /// front is cut from the unknown field's own name at its last dot.
    #[test]
    fn a_dotted_unknown_key_at_the_top_is_not_put_under_another() {
        let e = p(r#""restart.max_restarts":3"#).unwrap_err().to_string();
        assert!(
            !e.contains(": restart: unknown field"),
            "a top-level key blamed on `restart`: {e}"
        );
    }

    /// `limits.data_mb` (the data directory quota of every plugin) is range
    /// checked like the other limits, and a `null` limit is refused.
    #[test]
    fn limits_data_mb_is_range_checked() {
        let e = p(r#""limits":{"data_mb":0}"#).unwrap_err().to_string();
        assert!(e.contains("limits.data_mb"), "{e}");
        assert_eq!(
            p(r#""limits":{"data_mb":7}"#).unwrap().limits.data_mb,
            Some(7)
        );
        assert!(p(r#""limits":{"pids":null}"#).is_err());
    }

    #[test]
    fn audit_rotation_and_fsync_policy() {
        let c = p("").unwrap();
        assert_eq!(
            (c.audit_rotate_bytes, c.audit_fsync),
            (None, FsyncPolicy::OnFlush)
        );
        let c = p(r#""audit_rotate_mb":64,"audit_fsync":"every_event""#).unwrap();
        assert_eq!(c.audit_rotate_bytes, Some(64 << 20));
        assert_eq!(c.audit_fsync, FsyncPolicy::EveryEvent);
        assert_eq!(
            p(r#""audit_fsync":"never""#).unwrap().audit_fsync,
            FsyncPolicy::Never
        );
        let e = p(r#""audit_rotate_mb":0"#).unwrap_err().to_string();
        assert_eq!(
            e,
            "config w.json: audit_rotate_mb: 0 is outside 1..=1048576"
        );
        let e = p(r#""audit_fsync":"always""#).unwrap_err().to_string();
        assert!(
            e.starts_with("config w.json: audit_fsync: \"always\" is not one of"),
            "{e}"
        );
    }
}
