//! The closed list of capability names a manifest may declare.
//!
//! Adding a capability is a code change here and a line in docs/manifest.md; an
//! unknown name in a manifest or a policy is always refused, never ignored.

use std::fmt;
use std::str::FromStr;

macro_rules! capabilities {
    ($($variant:ident => $name:literal,)*) => {
        /// One capability from the closed list.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Capability {
            $($variant,)*
        }

        impl Capability {
            /// Every capability, in the order of the documentation.
            pub const ALL: &'static [Capability] = &[$(Capability::$variant,)*];

            /// The wire name, e.g. `kv:read`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Capability::$variant => $name,)*
                }
            }
        }

        impl FromStr for Capability {
            type Err = UnknownCapability;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Capability::$variant),)*
                    _ => Err(UnknownCapability(s.to_owned())),
                }
            }
        }
    };
}

capabilities! {
    AuditRead => "audit:read",
    HttpEgress => "http:egress",
    KvRead => "kv:read",
    KvWrite => "kv:write",
    LogWrite => "log:write",
    MonitorRead => "monitor:read",
    MonitorAdmin => "monitor:admin",
    NodeRead => "node:read",
    NodeAdmin => "node:admin",
    NotifySend => "notify:send",
    StaticRead => "static:read",
    StaticWrite => "static:write",
    TaskRead => "task:read",
    TaskRun => "task:run",
    TunnelAdmin => "tunnel:admin",
    WorkerRoute => "worker:route",
    NetworkPlan => "network:plan",
    NetworkApply => "network:apply",
    DdnsAdmin => "ddns:admin",
}

/// A name that is not in the closed list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}")]
pub struct UnknownCapability(pub String);

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Capability::ALL {
            assert!(seen.insert(c.as_str()), "duplicate name {}", c);
            assert_eq!(c.as_str().parse::<Capability>(), Ok(*c));
        }
        assert_eq!(Capability::ALL.len(), 19);
    }

    #[test]
    fn unknown_and_near_miss_names_are_refused() {
        for bad in ["", "kv", "kv:READ", "kv:read ", "root", "kv:*"] {
            assert!(bad.parse::<Capability>().is_err(), "{bad:?} accepted");
        }
    }
}
