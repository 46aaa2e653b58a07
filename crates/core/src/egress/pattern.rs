//! Allow-list patterns: `pypi.org`, `*.pythonhosted.org`, `api.example.com:443`,
//! `203.0.113.7`, `203.0.113.0/24`, `[2001:db8::1]:443`, `2001:db8::/32`, and `*`
//! (any host; an operator's bound, rarely a session's). A port, when given, is
//! the only port the pattern allows.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::address::effective;

/// Longest pattern accepted (a 253-byte name, `*.`, `:65535`, with room).
const MAX_PATTERN_BYTES: usize = 270;

/// Why a pattern was refused; the entry is named where the pattern is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(&'static str);

/// What a pattern's host part matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Every host (`*`).
    Any,
    /// One name, lower case, without a trailing dot.
    Name(String),
    /// Every name under this one (`*.example.com`: `a.example.com`,
    /// `b.a.example.com`, not `example.com` itself).
    Under(String),
    /// An address (as a /32 or /128) or a network.
    Net(IpNet),
}

/// One allow-list entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    host: Host,
    port: Option<u16>,
    /// As written (trimmed), for messages and for reading the list back.
    text: String,
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(written: &str) -> Result<Pattern, PatternError> {
        let text = written.trim();
        if text.is_empty() {
            return Err(PatternError("an empty pattern"));
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError("longer than any host name"));
        }
        let (host, port) = split_port(text)?;
        let host = parse_host(host)?;
        Ok(Pattern {
            host,
            port,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The host part and the port of `text`: `host:port`, `[v6]:port`, or a bare
/// IPv6 address or network (more than one colon, no brackets: no port).
fn split_port(text: &str) -> Result<(&str, Option<u16>), PatternError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(PatternError("a '[' without its ']'"))?;
        return match after {
            "" => Ok((host, None)),
            _ => {
                let port = after
                    .strip_prefix(':')
                    .ok_or(PatternError("only ':port' may follow ']'"))?;
                Ok((host, Some(parse_port(port)?)))
            }
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, Some(parse_port(port)?)))
        }
        _ => Ok((text, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, PatternError> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(PatternError("a port is a number from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

fn parse_host(host: &str) -> Result<Host, PatternError> {
    if host == "*" {
        return Ok(Host::Any);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'/') && has_leading_zero(host) {
        // ipnet reads `010.0.0.0/8` as 10/8 where C tools read 8/8.
        return Err(PatternError("a number with a leading zero (octal to some tools)"));
    }
    if let Ok(net) = host.parse::<IpNet>() {
        // `10.0.0.1/8` names a network by one of its addresses: say which.
        if net.network() != net.addr() {
            return Err(PatternError(
                "a network's address has host bits set (write its first address)",
            ));
        }
        return Ok(Host::Net(net));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Net(IpNet::from(ip)));
    }
    if host.contains('/') {
        return Err(PatternError("not an address/prefix network"));
    }
    match host.strip_prefix("*.") {
        Some(domain) => Ok(Host::Under(host_name(domain)?)),
        None if host.contains('*') => Err(PatternError("'*' stands alone or as the first label ('*.example.com')")),
        None => Ok(Host::Name(host_name(host)?)),
    }
}

/// `name` as a DNS name: labels of letters, digits, '-' and '_', 1 to 63
/// bytes each, no '-' at either end, 253 bytes in all; lower-cased, a
/// trailing dot dropped. A name that is all digits and dots is an address
/// gone wrong.
pub(crate) fn host_name(name: &str) -> Result<String, PatternError> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(PatternError("a host name is 1 to 253 bytes"));
    }
    for label in name.split('.') {
        let valid = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(PatternError(
                "not a host name (labels of letters, digits, '-', 1 to 63 bytes)",
            ));
        }
    }
    // Resolvers read `0x7f.1`, `0x7f000001` or `1.2.3.0x4` as addresses:
    // a name never ends in a number (the WHATWG URL rule).
    let last = name.rsplit('.').next().unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatternError(
            "not an IP address, and a host name never ends in a number",
        ));
    }
    Ok(name)
}

/// Whether a dotted decimal address or prefix has a part written with a
/// leading zero (`010`, `/08`).
fn has_leading_zero(text: &str) -> bool {
    text.split(['.', '/'])
        .any(|part| part.len() > 1 && part.starts_with('0'))
}

/// `name` lower-cased without a trailing dot, as patterns store names.
pub(crate) fn normal_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Pattern {
    fn port_allows(&self, port: u16) -> bool {
        self.port.is_none_or(|allowed| allowed == port)
    }

    /// Whether this pattern allows a connection to the host name `name` (not
    /// an address literal; see [`allows_addr`](Self::allows_addr)) on `port`.
    /// `name` must have passed [`host_name`].
    pub(crate) fn allows_name(&self, name: &str, port: u16) -> bool {
        let name = normal_name(name);
        self.port_allows(port)
            && match &self.host {
                Host::Any => true,
                Host::Name(allowed) => *allowed == name,
                Host::Under(domain) => is_under(&name, domain),
                Host::Net(_) => false,
            }
    }

    /// Whether this pattern is a network that could hold an address some
    /// name resolves to, on `port`.
    pub(crate) fn is_network_for(&self, port: u16) -> bool {
        self.port_allows(port) && matches!(self.host, Host::Net(_))
    }

    /// Whether this pattern allows a connection to `ip` on `port`, judged on
    /// the address it reaches (an IPv6 form carrying an IPv4 address matches
    /// IPv4 networks only, so an IPv6 network never grants IPv4 through a
    /// translator).
    pub(crate) fn allows_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.port_allows(port)
            && match &self.host {
                Host::Any => true,
                Host::Net(net) => net.contains(&effective(ip)),
                Host::Name(_) | Host::Under(_) => false,
            }
    }

    /// Whether everything `other` allows, this pattern allows too: how a
    /// session's pattern is checked against the operator's bounds.
    pub(crate) fn covers(&self, other: &Pattern) -> bool {
        let ports = match (self.port, other.port) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        ports
            && match (&self.host, &other.host) {
                (Host::Any, _) => true,
                (_, Host::Any) => false,
                (Host::Name(mine), Host::Name(theirs)) => mine == theirs,
                (Host::Under(domain), Host::Name(name)) => is_under(name, domain),
                (Host::Under(domain), Host::Under(theirs)) => theirs == domain || is_under(theirs, domain),
                (Host::Net(mine), Host::Net(theirs)) => mine.contains(theirs),
                _ => false,
            }
    }
}

/// `name` is a proper subdomain of `domain`.
fn is_under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1 && name.ends_with(domain) && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn every_documented_form_parses() {
        for text in [
            "pypi.org",
            "*.pythonhosted.org",
            "api.example.com:443",
            "203.0.113.7",
            "203.0.113.0/24",
            "[2001:db8::1]:443",
            "2001:db8::/32",
            "[2001:db8::/32]:443",
            "*",
            "*:443",
            "Example.COM.",
        ] {
            assert_eq!(p(text).to_string(), text);
        }
    }

    #[test]
    fn malformed_patterns_are_refused_with_a_reason() {
        for text in [
            "",
            "  ",
            "exa mple.com",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "*example.com",
            "a.*.example.com",
            "**",
            "-bad.example.com",
            "bad-.example.com",
            "x..example.com",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "example.com/24",
            "[2001:db8::1",
            "[2001:db8::1]443",
            "300.1.2.3",
            "010.0.0.0/8",
            "10.0.0.0/08",
            "017.0.0.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "1.2.3.0x4",
            "fe80::1%eth0",
            "pyp%69.org",
            "bücher.example",
            "pypi.org..",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert!(text.parse::<Pattern>().is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn names_match_exactly_or_below_a_wildcard_and_only_on_their_port() {
        assert!(p("pypi.org").allows_name("PyPI.org.", 443));
        assert!(!p("pypi.org").allows_name("files.pypi.org", 443));
        assert!(!p("pypi.org").allows_name("pypi.org.evil.com", 443));
        let under = p("*.pythonhosted.org");
        assert!(under.allows_name("files.pythonhosted.org", 443));
        assert!(under.allows_name("a.b.pythonhosted.org", 80));
        assert!(!under.allows_name("pythonhosted.org", 443), "the wildcard is a label");
        assert!(!under.allows_name("evilpythonhosted.org", 443));
        let port = p("api.example.com:443");
        assert!(port.allows_name("api.example.com", 443));
        assert!(!port.allows_name("api.example.com", 80));
        assert!(p("*").allows_name("anything.example", 1));
        assert!(
            !p("203.0.113.0/24").allows_name("example.com", 443),
            "a network never matches a name"
        );
    }

    #[test]
    fn addresses_match_their_network_including_mapped_ipv4() {
        let net = p("203.0.113.0/24");
        assert!(net.allows_addr("203.0.113.9".parse().unwrap(), 443));
        assert!(net.allows_addr("::ffff:203.0.113.9".parse().unwrap(), 443));
        assert!(!net.allows_addr("203.0.114.1".parse().unwrap(), 443));
        assert!(p("[2001:db8::1]:443").allows_addr("2001:db8::1".parse().unwrap(), 443));
        assert!(!p("[2001:db8::1]:443").allows_addr("2001:db8::1".parse().unwrap(), 80));
        assert!(!p("example.com").allows_addr("203.0.113.9".parse().unwrap(), 443));
        // An IPv6 network does not grant the IPv4 address a translator form reaches.
        assert!(!p("2002::/16").allows_addr("2002:101:101::".parse().unwrap(), 443));
        assert!(p("1.1.1.0/24").allows_addr("2002:101:101::".parse().unwrap(), 443));
    }

    #[test]
    fn a_bound_covers_what_is_narrower_and_nothing_wider() {
        let covers = |bound: &str, asked: &str| p(bound).covers(&p(asked));
        assert!(covers("*", "pypi.org:443"));
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*.example.com", "*.eu.example.com"));
        assert!(covers("*.example.com", "*.example.com:443"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com:443", "*.example.com"), "a bound's port binds");
        assert!(!covers("api.example.com", "*.api.example.com"));
        assert!(covers("203.0.113.0/24", "203.0.113.128/25"));
        assert!(covers("203.0.113.0/24", "203.0.113.7:22"));
        assert!(!covers("203.0.113.0/25", "203.0.113.0/24"));
        assert!(!covers("pypi.org", "*"));
        assert!(!covers("203.0.113.0/24", "example.com"));
    }
}
