//! The egress guard: pure parsing and matching, no I/O. Parses the host a plugin
//! asks for, the operator's host patterns (`api.example.com:443`, `*.example.org:443`,
//! `127.0.0.1:8080`, `[::1]:8080`) and address allowances (`127.0.0.1`,
//! `10.0.0.0/8`, `fd00::/8`), and classifies every address: is it in a forbidden
//! range, and if so does the policy name it explicitly?
//!
//! Resolution, dialling and auditing live in `super::dial`; policy decoding lives in
//! `crate::policy`. Nothing here may block, allocate a socket or read a file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest host name accepted (DNS limit, without a trailing dot).
pub const MAX_HOST: usize = 253;

/// Why a host, pattern or address allowance was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("host {host:?}: {why}")]
    BadHost { host: String, why: &'static str },
    #[error("egress pattern {pattern:?}: {why}")]
    BadPattern { pattern: String, why: String },
    #[error("egress address allowance {net:?}: {why}")]
    BadNet { net: String, why: &'static str },
}

/// A parsed, normalised host: a lower-case ASCII name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A label that `inet_aton` would read as a number (`127`, `0x7f`, `017`).
fn numeric_label(l: &str) -> bool {
    l.bytes().all(|c| c.is_ascii_digit())
        || (l.len() > 2 && l.starts_with("0x") && l[2..].bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Parses a host as a plugin or operator wrote it. Addresses: dotted IPv4 (std's
/// strict form), IPv6 with or without brackets. Names: ASCII letters, digits and
/// `-`, labels of 1..=63, at most 253 characters, upper case folded to lower;
/// refused: empty labels (so no trailing dot), anything else (`?`, `/`, `@`, `:`,
/// `_`, `%`, spaces, non-ASCII), and names that a resolver would read as a
/// numeric address (`127.1`, `0x7f000001`) or whose last label is all digits.
pub fn parse_host(text: &str) -> Result<Host, GuardError> {
    let bad = |why| GuardError::BadHost {
        host: text.to_owned(),
        why,
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| bad("unclosed ["))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| bad("not an IPv6 address inside [ ]"));
    }
    if let Ok(a) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(a)));
    }
    if text.contains(':') {
        return text
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| bad("contains ':' but is not an IPv6 address"));
    }
    if !text.is_ascii() {
        return Err(bad("not ASCII (use the punycode xn-- form)"));
    }
    if text.len() > MAX_HOST {
        return Err(bad("longer than 253 characters"));
    }
    let name = text.to_ascii_lowercase();
    if name.ends_with('.') {
        return Err(bad("trailing dot"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if !labels.iter().all(|l| label_ok(l)) {
        return Err(bad(
            "labels must be 1..=63 of a-z, 0-9 and '-', not starting or ending with '-'",
        ));
    }
    if labels.iter().all(|l| numeric_label(l))
        || labels
            .last()
            .is_some_and(|l| l.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(bad("looks like a numeric address"));
    }
    Ok(Host::Name(name))
}

/// The host half of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this name.
    Exact(String),
    /// `*.<suffix>`: exactly one label, then `.<suffix>`.
    OneLabelUnder(String),
    /// Exactly this address.
    Ip(IpAddr),
}

/// One egress allow-list entry: a host match and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: HostMatch,
    pub port: u16,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Exact(n) => write!(f, "{n}:{}", self.port),
            HostMatch::OneLabelUnder(s) => write!(f, "*.{s}:{}", self.port),
            HostMatch::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            HostMatch::Ip(a) => write!(f, "{a}:{}", self.port),
        }
    }
}

impl HostPattern {
    /// Parses `host:port`, `*.suffix:port` or `[v6]:port`. The port is required
    /// (1..=65535); `*` may only be the whole leftmost label, and the suffix must
    /// have at least two labels (`*.com:443` is refused).
    pub fn parse(text: &str) -> Result<HostPattern, GuardError> {
        let bad = |why: &str| GuardError::BadPattern {
            pattern: text.to_owned(),
            why: why.to_owned(),
        };
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("needs a port: host:port"))?;
        if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) || port.len() > 5 {
            return Err(bad("the port must be a number 1..=65535"));
        }
        let port: u16 = match port.parse() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number 1..=65535")),
        };
        if host.contains(':') && !host.starts_with('[') {
            return Err(bad("write IPv6 addresses in brackets: [::1]:443"));
        }
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            match parse_host(suffix).map_err(|e| bad(&e.to_string()))? {
                Host::Name(s) if s.contains('.') => HostMatch::OneLabelUnder(s),
                Host::Name(_) => return Err(bad("a wildcard needs at least two labels after *.")),
                Host::Ip(_) => return Err(bad("a wildcard cannot precede an address")),
            }
        } else if host.contains('*') {
            return Err(bad(
                "'*' may only be the whole leftmost label (*.example.org)",
            ));
        } else {
            match parse_host(host).map_err(|e| bad(&e.to_string()))? {
                Host::Name(n) => HostMatch::Exact(n),
                Host::Ip(a) => HostMatch::Ip(a),
            }
        };
        Ok(HostPattern { host, port })
    }

    /// Whether `host:port` matches: label-wise, never by substring.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match (&self.host, host) {
            (HostMatch::Exact(p), Host::Name(n)) => p == n,
            (HostMatch::OneLabelUnder(s), Host::Name(n)) => n
                .strip_suffix(s.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            (HostMatch::Ip(p), Host::Ip(a)) => canonical(*p) == canonical(*a),
            _ => false,
        }
    }
}

/// An address range the operator allows explicitly: `addr` or `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Net {
    /// Parses `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`. Host bits must be zero.
    pub fn parse(text: &str) -> Result<Net, GuardError> {
        let bad = |why| GuardError::BadNet {
            net: text.to_owned(),
            why,
        };
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => return Err(bad("the prefix length is out of range")),
            },
        };
        let net = Net { addr, prefix };
        if !net.contains(addr) || masked(addr, prefix) != addr {
            return Err(bad("has bits set beyond the prefix length"));
        }
        Ok(net)
    }

    /// Whether `ip` lies in this range (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                masked(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4; everything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, why: &'static str) -> (u32, u8, &'static str) {
    (u32::from_be_bytes([a, b, c, d]), prefix, why)
}

/// Forbidden IPv4 ranges, with the reason shown in refusals and the audit log.
const V4_FORBIDDEN: &[(u32, u8, &str)] = &[
    v4(0, 0, 0, 0, 8, "unspecified (0.0.0.0/8, \"this network\")"),
    v4(10, 0, 0, 0, 8, "private (10.0.0.0/8, RFC 1918)"),
    v4(100, 64, 0, 0, 10, "carrier-grade NAT (100.64.0.0/10)"),
    v4(127, 0, 0, 0, 8, "loopback (127.0.0.0/8)"),
    v4(
        169,
        254,
        169,
        254,
        32,
        "cloud metadata (169.254.169.254, link-local)",
    ),
    v4(169, 254, 0, 0, 16, "link-local (169.254.0.0/16)"),
    v4(172, 16, 0, 0, 12, "private (172.16.0.0/12, RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (192.0.0.0/24)"),
    v4(192, 0, 2, 0, 24, "documentation (192.0.2.0/24)"),
    v4(192, 88, 99, 0, 24, "6to4 relay anycast (192.88.99.0/24)"),
    v4(192, 168, 0, 0, 16, "private (192.168.0.0/16, RFC 1918)"),
    v4(198, 18, 0, 0, 15, "benchmarking (198.18.0.0/15)"),
    v4(198, 51, 100, 0, 24, "documentation (198.51.100.0/24)"),
    v4(203, 0, 113, 0, 24, "documentation (203.0.113.0/24)"),
    v4(224, 0, 0, 0, 4, "multicast (224.0.0.0/4)"),
    v4(255, 255, 255, 255, 32, "broadcast (255.255.255.255)"),
    v4(240, 0, 0, 0, 4, "reserved (240.0.0.0/4)"),
];

fn v4_forbidden(a: Ipv4Addr) -> Option<&'static str> {
    let x = u32::from(a);
    V4_FORBIDDEN.iter().find_map(|&(net, prefix, why)| {
        let m = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        (x & m == net).then_some(why)
    })
}

/// Forbidden IPv6 ranges that do not embed an IPv4 address.
const V6_FORBIDDEN: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified (::)"),
    (1, 128, "loopback (::1)"),
    (
        0x0064_ff9b_0001 << 80,
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (0x0100 << 112, 64, "discard-only (100::/64)"),
    (0x2001_0000 << 96, 32, "Teredo (2001::/32)"),
    (0x2001_0002 << 96, 48, "benchmarking (2001:2::/48)"),
    (0x2001_0010 << 96, 28, "ORCHID (2001:10::/28)"),
    (0x2001_0020 << 96, 28, "ORCHIDv2 (2001:20::/28)"),
    (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
    (0x3fff << 112, 20, "documentation (3fff::/20)"),
    (0xfc00 << 112, 7, "unique-local (fc00::/7)"),
    (0xfe80 << 112, 10, "link-local (fe80::/10)"),
    (0xfec0 << 112, 10, "site-local (fec0::/10)"),
    (0xff00 << 112, 8, "multicast (ff00::/8)"),
];

fn in_v6(x: u128, net: u128, prefix: u8) -> bool {
    let m = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    x & m == net
}

/// Why `ip` is forbidden (unless the policy names it), or `None` for a public
/// address. IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) are judged by the embedded address; any IPv6 address outside
/// global unicast `2000::/3` is forbidden.
pub fn forbidden(ip: IpAddr) -> Option<String> {
    let a = match ip {
        IpAddr::V4(a) => return v4_forbidden(a).map(str::to_owned),
        IpAddr::V6(a) => a,
    };
    let x = u128::from(a);
    if let Some(&(_, _, why)) = V6_FORBIDDEN
        .iter()
        .find(|(net, prefix, _)| in_v6(x, *net, *prefix))
    {
        return Some(why.to_owned());
    }
    let low32 = Ipv4Addr::from(x as u32);
    let embedded = if in_v6(x, 0xffff << 32, 96) {
        Some(("IPv4-mapped", low32))
    } else if in_v6(x, 0, 96) {
        Some(("IPv4-compatible", low32))
    } else if in_v6(x, 0xffff << 48, 96) {
        Some(("IPv4-translated", low32))
    } else if in_v6(x, 0x0064_ff9b << 96, 96) {
        Some(("NAT64", low32))
    } else if in_v6(x, 0x2002 << 112, 16) {
        Some(("6to4", Ipv4Addr::from((x >> 80) as u32)))
    } else {
        None
    };
    if let Some((form, inner)) = embedded {
        return v4_forbidden(inner).map(|why| format!("{form} form of {inner}, {why}"));
    }
    if !in_v6(x, 0x2000 << 112, 3) {
        return Some("outside IPv6 global unicast (2000::/3)".into());
    }
    None
}

/// The operator's egress policy for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// Which host:port pairs may be dialled.
    pub allow: Vec<HostPattern>,
    /// Forbidden addresses the operator allows anyway, named explicitly.
    pub addresses: Vec<Net>,
}

/// What the guard decided about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A public address.
    Public,
    /// In a forbidden range, but the policy names it: the allowance that matched.
    AllowedByPolicy { range: String, net: Net },
    /// Forbidden: why.
    Forbidden(String),
}

impl Egress {
    /// Parses the policy's lists; every entry must parse.
    pub fn parse(allow: &[String], addresses: &[String]) -> Result<Egress, GuardError> {
        Ok(Egress {
            allow: allow
                .iter()
                .map(|p| HostPattern::parse(p))
                .collect::<Result<_, _>>()?,
            addresses: addresses
                .iter()
                .map(|n| Net::parse(n))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The pattern that allows `host:port`, if any.
    pub fn pattern_for(&self, host: &Host, port: u16) -> Option<&HostPattern> {
        self.allow.iter().find(|p| p.matches(host, port))
    }

    /// Whether `ip` may be dialled. An allowance matches the address as resolved or
    /// its IPv4 form when it is IPv4-mapped.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        match forbidden(ip) {
            None => Verdict::Public,
            Some(range) => {
                let c = canonical(ip);
                match self
                    .addresses
                    .iter()
                    .find(|n| n.contains(ip) || n.contains(c))
                {
                    Some(net) => Verdict::AllowedByPolicy { range, net: *net },
                    None => Verdict::Forbidden(range),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (address, forbidden?) — every forbidden range in its IPv4 and IPv6 forms,
    /// the embedded forms, and public addresses that must pass.
    const ADDRESSES: &[(&str, bool)] = &[
        // IPv4 forbidden ranges
        ("0.0.0.0", true),
        ("0.1.2.3", true),
        ("10.0.0.1", true),
        ("10.255.255.255", true),
        ("172.16.0.1", true),
        ("172.31.255.254", true),
        ("192.168.1.1", true),
        ("100.64.0.1", true),
        ("100.127.255.254", true),
        ("127.0.0.1", true),
        ("127.255.255.254", true),
        ("169.254.169.254", true),
        ("169.254.0.1", true),
        ("192.0.0.170", true),
        ("192.0.2.1", true),
        ("198.51.100.7", true),
        ("203.0.113.9", true),
        ("198.18.0.1", true),
        ("198.19.255.255", true),
        ("224.0.0.251", true),
        ("239.255.255.250", true),
        ("255.255.255.255", true),
        ("240.0.0.1", true),
        ("192.88.99.1", true),
        // IPv4 edges that are public
        ("172.15.255.255", false),
        ("172.32.0.0", false),
        ("100.63.255.255", false),
        ("100.128.0.0", false),
        ("198.17.255.255", false),
        ("198.20.0.0", false),
        ("11.0.0.1", false),
        ("8.8.8.8", false),
        ("1.1.1.1", false),
        ("93.184.216.34", false),
        ("223.255.255.254", false),
        // IPv6 forbidden ranges
        ("::", true),
        ("::1", true),
        ("fe80::1", true),
        ("febf::1", true),
        ("fec0::1", true),
        ("fc00::1", true),
        ("fd00:ec2::254", true),
        ("ff02::1", true),
        ("ff05::1:3", true),
        ("2001:db8::1", true),
        ("3fff::1", true),
        ("2001:2::1", true),
        ("100::1", true),
        ("2001::1", true),
        ("2001:10::1", true),
        ("64:ff9b:1::1", true),
        ("4000::1", true),
        ("::2:3:4:5", true),
        // IPv4 in IPv6 clothing
        ("::ffff:127.0.0.1", true),
        ("::ffff:7f00:1", true),
        ("::ffff:169.254.169.254", true),
        ("::ffff:10.1.2.3", true),
        ("::ffff:192.168.0.1", true),
        ("::127.0.0.1", true),
        ("::10.0.0.1", true),
        ("::ffff:0:127.0.0.1", true),
        ("64:ff9b::127.0.0.1", true),
        ("64:ff9b::a9fe:a9fe", true),
        ("64:ff9b::192.168.1.1", true),
        ("2002:7f00:1::", true),
        ("2002:a9fe:a9fe::1", true),
        ("2002:c0a8:101::1", true),
        ("::ffff:100.64.0.1", true),
        ("::ffff:224.0.0.1", true),
        // Public IPv6 and embedded public IPv4
        ("2606:4700:4700::1111", false),
        ("2a00:1450:4001::200e", false),
        ("2001:4860:4860::8888", false),
        ("::ffff:8.8.8.8", false),
        ("64:ff9b::808:808", false),
        ("2002:808:808::1", false),
        ("::8.8.8.8", false),
    ];

    #[test]
    fn address_table() {
        let e = Egress::default();
        let mut rows = 0;
        for (text, forbid) in ADDRESSES {
            let ip: IpAddr = text.parse().unwrap_or_else(|_| panic!("{text}"));
            let got = forbidden(ip);
            assert_eq!(got.is_some(), *forbid, "{text}: {got:?}");
            assert_eq!(
                matches!(e.check(ip), Verdict::Forbidden(_)),
                *forbid,
                "{text}"
            );
            rows += 1;
        }
        assert!(rows >= 40);
    }

    #[test]
    fn explicit_allowances_lift_exactly_what_they_name() {
        let e = Egress::parse(
            &[],
            &["127.0.0.1".into(), "10.1.0.0/16".into(), "fd00::/8".into()],
        )
        .unwrap();
        let allowed = |t: &str| !matches!(e.check(t.parse().unwrap()), Verdict::Forbidden(_));
        assert!(allowed("127.0.0.1"));
        assert!(allowed("::ffff:127.0.0.1"));
        assert!(!allowed("127.0.0.2"));
        assert!(allowed("10.1.200.3"));
        assert!(!allowed("10.2.0.1"));
        assert!(allowed("fd12::1"));
        assert!(!allowed("fc00::1"));
        assert!(!allowed("169.254.169.254"));
        assert!(matches!(
            e.check("127.0.0.1".parse().unwrap()),
            Verdict::AllowedByPolicy { .. }
        ));
        assert_eq!(e.check("8.8.8.8".parse().unwrap()), Verdict::Public);
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "localhost",
            "10.0.0.0/",
        ] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    /// (pattern, requested host, port, matches?)
    const PATTERNS: &[(&str, &str, u16, bool)] = &[
        ("api.example.com:443", "api.example.com", 443, true),
        ("api.example.com:443", "API.Example.COM", 443, true),
        ("api.example.com:443", "api.example.com", 80, false),
        ("api.example.com:443", "x.api.example.com", 443, false),
        (
            "api.example.com:443",
            "api.example.com.evil.net",
            443,
            false,
        ),
        ("api.example.com:443", "evilapi.example.com", 443, false),
        ("*.example.org:443", "a.example.org", 443, true),
        ("*.example.org:443", "example.org", 443, false),
        ("*.example.org:443", "a.b.example.org", 443, false),
        ("*.example.org:443", "evilexample.org", 443, false),
        ("*.example.org:443", "example.org.evil.net", 443, false),
        ("*.example.org:443", "a.example.org.evil.net", 443, false),
        ("*.example.org:443", "a.example.org", 8443, false),
        ("127.0.0.1:8080", "127.0.0.1", 8080, true),
        ("127.0.0.1:8080", "::ffff:127.0.0.1", 8080, true),
        ("127.0.0.1:8080", "127.0.0.2", 8080, false),
        ("127.0.0.1:8080", "localhost", 8080, false),
        ("[::1]:8080", "::1", 8080, true),
        ("[::1]:8080", "[::1]", 8080, true),
        ("x.example.com:443", "x.example.com", 443, true),
    ];

    #[test]
    fn pattern_table() {
        for (pat, host, port, want) in PATTERNS {
            let p = HostPattern::parse(pat).unwrap_or_else(|e| panic!("{e}"));
            let h = parse_host(host).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.matches(&h, *port), *want, "{pat} vs {host}:{port}");
        }
    }

    /// Hosts a plugin might send that must be refused before any lookup; in
    /// particular strings a substring match would accept.
    const BAD_HOSTS: &[&str] = &[
        "",
        "evil.com?x.example.com",
        "evil.com/x.example.com",
        "user@api.example.com",
        "evil.com#api.example.com",
        "api.example.com.",
        "api..example.com",
        ".example.com",
        "-a.example.com",
        "a-.example.com",
        "a_b.example.com",
        "ex ample.com",
        "exämple.com",
        "127.1",
        "0x7f000001",
        "0x7f.0x1",
        "1.2.3.999",
        "example.123",
        "api.example.com:443",
        "[::1",
        "[127.0.0.1]",
        "api.example.com%00",
    ];

    #[test]
    fn hosts_are_refused_before_resolution() {
        for h in BAD_HOSTS {
            assert!(parse_host(h).is_err(), "{h:?} should be refused");
        }
        let long = format!("{}.com", "a.".repeat(130));
        assert!(parse_host(&long).is_err());
        assert_eq!(
            parse_host("Xn--Bcher-kva.Example").unwrap(),
            Host::Name("xn--bcher-kva.example".into())
        );
        assert!(
            parse_host("010.1.1.1").is_err(),
            "std refuses leading zeros, and the name rules refuse a numeric last label"
        );
    }

    #[test]
    fn patterns_are_parsed_strictly() {
        for bad in [
            "api.example.com",
            "api.example.com:0",
            "api.example.com:65536",
            "api.example.com:-1",
            "api.example.com:+443",
            "*.com:443",
            "*example.com:443",
            "a.*.example.com:443",
            "**.example.com:443",
            "*.127.0.0.1:443",
            "::1:443",
            "evil.com?x.example.com:443",
            "api.example.com.:443",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            HostPattern::parse("*.Example.org:443").unwrap().to_string(),
            "*.example.org:443"
        );
    }
}
