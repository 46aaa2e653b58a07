//! Egress decisions (issue 18, first part): the patterns a session's
//! allow-list is made of ([`Pattern`]), the list itself ([`AllowList`]), the
//! addresses never dialled ([`refused_because`]) and the decision for one
//! connection ([`decide`]): the name asked for is checked against the list,
//! brig resolves it itself, and the addresses it would dial are checked
//! again, so a name that resolves to a refused address is refused (DNS
//! rebinding). Nothing dials yet: the in-sandbox proxy, the tunnel frames and
//! the dialer in brig-api come next and take their decisions here.

mod address;
mod pattern;

use std::net::IpAddr;

pub use self::address::refused_because;
pub use self::pattern::{Pattern, PatternError};

/// Most entries one allow-list may hold.
pub const MAX_PATTERNS: usize = 256;

/// A list entry that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error("{entry:?}: {reason}")]
    Pattern {
        entry: String,
        #[source]
        reason: PatternError,
    },
    #[error("more than {MAX_PATTERNS} patterns")]
    TooMany,
}

/// A session's allow-list (or an operator's bounds): default deny, so the
/// empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Pattern>);

impl AllowList {
    /// Parses each entry; the first malformed one is named in the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, AllowListError> {
        if entries.len() > MAX_PATTERNS {
            return Err(AllowListError::TooMany);
        }
        entries
            .iter()
            .map(|entry| {
                entry.as_ref().parse().map_err(|reason| AllowListError::Pattern {
                    entry: entry.as_ref().to_string(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.0
    }

    /// This list followed by the patterns of `more` (each already bounded).
    pub fn extended(&self, more: &AllowList) -> AllowList {
        AllowList(self.0.iter().chain(&more.0).cloned().collect())
    }

    /// Whether brig should resolve the name `host` for a connection on
    /// `port` at all: only when a pattern might allow it (by name, or by a
    /// network its addresses could fall in), so that a sandbox cannot make
    /// brig look up names of its choosing (data leaks out through lookups).
    pub fn worth_resolving(&self, host: &str, port: u16) -> bool {
        let Ok(name) = pattern::host_name(host) else {
            return false;
        };
        self.0
            .iter()
            .any(|p| p.allows_name(&name, port) || p.is_network_for(port))
    }

    /// The first of `asked` that no pattern of these bounds covers.
    pub fn first_outside<'a>(&self, asked: &'a AllowList) -> Option<&'a Pattern> {
        asked
            .0
            .iter()
            .find(|wanted| !self.0.iter().any(|bound| bound.covers(wanted)))
    }
}

/// What to do with one connection a sandbox asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dial one of these (in this order).
    Dial(Vec<IpAddr>),
    /// Refuse, with a one-line reason for the sandbox and the audit line.
    Refuse(String),
}

/// Where brig may dial when a sandbox asks for `host` (a name or an address
/// literal) on `port`. `resolved`: what brig's own resolver answered for a
/// name (ignored for a literal). `allow_private`: the operator's
/// `EGRESS_ALLOW_PRIVATE`. `own`: the host's own addresses, never dialled
/// unless private ones are allowed (include any public address that reaches
/// the host without being on an interface, such as a cloud's 1:1 NAT). The
/// caller dials only the addresses of [`Verdict::Dial`] and never looks the
/// name up again.
pub fn decide(
    list: &AllowList,
    host: &str,
    port: u16,
    resolved: &[IpAddr],
    allow_private: bool,
    own: &[IpAddr],
) -> Verdict {
    let refused = |ip: IpAddr| -> Option<String> {
        let reached = address::effective(ip);
        // Cloud credentials: no deployment means that by allowing its LAN.
        if address::is_metadata(reached) {
            return Some(format!("{ip} is the cloud metadata service"));
        }
        if allow_private {
            return None;
        }
        if let Some(why) = refused_because(ip) {
            return Some(format!("{ip} is {why}"));
        }
        own.iter()
            .any(|mine| address::effective(*mine) == reached)
            .then(|| format!("{ip} is an address of brig's host"))
    };
    if port == 0 {
        return Verdict::Refuse("port 0".into());
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>();
    if let Ok(ip) = literal {
        if !list.0.iter().any(|p| p.allows_addr(ip, port)) {
            return Verdict::Refuse(format!("{host}:{port} is not in the session's allow-list"));
        }
        return match refused(ip) {
            Some(why) => Verdict::Refuse(why),
            None => Verdict::Dial(vec![ip]),
        };
    }
    let Ok(name) = pattern::host_name(host) else {
        return Verdict::Refuse("not a host name or an IP address".into());
    };
    if resolved.is_empty() {
        return Verdict::Refuse(format!("{name} does not resolve"));
    }
    // A name the list names allows every address it resolves to; otherwise
    // the addresses the list's networks hold.
    let by_name = list.0.iter().any(|p| p.allows_name(&name, port));
    let candidates: Vec<IpAddr> = resolved
        .iter()
        .copied()
        .filter(|ip| by_name || list.0.iter().any(|p| p.allows_addr(*ip, port)))
        .collect();
    if candidates.is_empty() {
        return Verdict::Refuse(format!("{name}:{port} is not in the session's allow-list"));
    }
    // One refused address refuses the name: it may be rebinding to the host,
    // the LAN or the metadata service between two lookups.
    if let Some(why) = resolved.iter().find_map(|ip| refused(*ip)) {
        return Verdict::Refuse(format!("{name} resolves to a refused address: {why}"));
    }
    Verdict::Dial(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn ips(ips: &[&str]) -> Vec<IpAddr> {
        ips.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    fn refused(verdict: Verdict) -> String {
        match verdict {
            Verdict::Refuse(why) => why,
            Verdict::Dial(to) => panic!("dialled {to:?}"),
        }
    }

    #[test]
    fn an_ipv6_network_does_not_reach_ipv4_through_a_translator() {
        let allowed = list(&["2002::/16", "64:ff9b::/96"]);
        for host in ["[2002:101:101::]", "[64:ff9b::101:101]"] {
            let why = refused(decide(&allowed, host, 443, &[], false, &[]));
            assert!(why.contains("not in the session's allow-list"), "{host}: {why}");
        }
        refused(decide(
            &list(&["*"]),
            "pypi.org",
            0,
            &ips(&["151.101.0.223"]),
            false,
            &[],
        ));
    }

    #[test]
    fn the_metadata_service_is_refused_even_where_private_addresses_are_allowed() {
        let everything = list(&["*"]);
        for host in [
            "169.254.169.254",
            "[::ffff:169.254.169.254]",
            "[fd00:ec2::254]",
            "100.100.100.200",
        ] {
            let why = refused(decide(&everything, host, 80, &[], true, &[]));
            assert!(why.contains("metadata"), "{host}: {why}");
        }
        let why = refused(decide(
            &everything,
            "metadata.internal",
            80,
            &ips(&["169.254.169.254"]),
            true,
            &[],
        ));
        assert!(why.contains("metadata"), "{why}");
        assert_eq!(
            decide(&everything, "10.0.0.1", 80, &[], true, &[]),
            Verdict::Dial(ips(&["10.0.0.1"]))
        );
    }

    #[test]
    fn only_names_a_pattern_might_allow_are_worth_resolving() {
        let names = list(&["pypi.org:443", "*.example.com"]);
        assert!(names.worth_resolving("PyPI.org", 443));
        assert!(!names.worth_resolving("pypi.org", 80));
        assert!(names.worth_resolving("a.example.com", 80));
        assert!(!names.worth_resolving("secret-data.attacker.test", 443));
        assert!(!names.worth_resolving("not a name", 443));
        let networks = list(&["198.51.100.0/24:443"]);
        assert!(networks.worth_resolving("anything.test", 443));
        assert!(!networks.worth_resolving("anything.test", 80));
        assert_eq!(names.extended(&networks).patterns().len(), 3);
    }

    #[test]
    fn the_empty_list_refuses_everything() {
        let empty = AllowList::default();
        let why = refused(decide(&empty, "pypi.org", 443, &ips(&["151.101.0.223"]), false, &[]));
        assert_eq!(why, "pypi.org:443 is not in the session's allow-list");
        refused(decide(&empty, "1.1.1.1", 443, &[], false, &[]));
    }

    #[test]
    fn an_allowed_name_dials_what_it_resolves_to() {
        let allowed = list(&["pypi.org", "*.pythonhosted.org:443"]);
        let public = ips(&["151.101.0.223", "2a04:4e42::223"]);
        assert_eq!(
            decide(&allowed, "PyPI.org", 443, &public, false, &[]),
            Verdict::Dial(public.clone())
        );
        assert_eq!(
            decide(&allowed, "files.pythonhosted.org", 443, &public, false, &[]),
            Verdict::Dial(public.clone())
        );
        refused(decide(&allowed, "files.pythonhosted.org", 80, &public, false, &[]));
        let why = refused(decide(&allowed, "pypi.org", 443, &[], false, &[]));
        assert_eq!(why, "pypi.org does not resolve");
    }

    #[test]
    fn a_name_that_resolves_to_a_refused_address_is_refused() {
        let allowed = list(&["*"]);
        for (address, said) in [
            ("169.254.169.254", "metadata"),
            ("127.0.0.1", "loopback"),
            ("10.0.0.5", "private"),
            ("::ffff:169.254.169.254", "metadata"),
        ] {
            let resolved = ips(&["151.101.0.223", address]);
            let why = refused(decide(&allowed, "rebind.example", 80, &resolved, false, &[]));
            assert!(why.starts_with("rebind.example resolves to "), "{why}");
            assert!(why.contains(said), "{why}");
        }
        // Unless the operator allows private addresses (tests, LANs).
        let resolved = ips(&["127.0.0.1"]);
        assert_eq!(
            decide(&allowed, "local.test", 80, &resolved, true, &[]),
            Verdict::Dial(resolved)
        );
    }

    #[test]
    fn address_literals_are_checked_against_networks_and_the_refused_ranges() {
        let allowed = list(&["93.184.216.0/24", "169.254.0.0/16", "*.example.com"]);
        assert_eq!(
            decide(&allowed, "93.184.216.34", 443, &[], false, &[]),
            Verdict::Dial(ips(&["93.184.216.34"]))
        );
        let why = refused(decide(&allowed, "169.254.169.254", 80, &[], false, &[]));
        assert!(why.contains("metadata"), "{why}");
        refused(decide(&allowed, "93.184.217.1", 443, &[], false, &[]));
        let v6 = list(&["[2606:4700::1111]:443"]);
        assert_eq!(
            decide(&v6, "[2606:4700::1111]", 443, &[], false, &[]),
            Verdict::Dial(ips(&["2606:4700::1111"]))
        );
    }

    #[test]
    fn a_host_that_is_neither_a_name_nor_an_address_is_refused() {
        let allowed = list(&["*"]);
        let public = ips(&["151.101.0.223"]);
        for host in ["", "exa mple.com", "a..b", "x/y", &"a".repeat(300), "[::1", "300.1.2.3"] {
            let why = refused(decide(&allowed, host, 443, &public, false, &[]));
            assert_eq!(why, "not a host name or an IP address", "{host:?}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_even_when_public() {
        let allowed = list(&["*"]);
        let own = ips(&["93.184.216.10"]);
        let why = refused(decide(&allowed, "me.example", 22, &own, false, &own));
        assert!(why.contains("an address of brig's host"), "{why}");
        refused(decide(&allowed, "93.184.216.10", 22, &[], false, &own));
        // Also through the IPv6 forms that reach it.
        for form in ["::ffff:93.184.216.10", "64:ff9b::5db8:d80a", "2002:5db8:d80a::1"] {
            let why = refused(decide(&allowed, "me.example", 22, &ips(&[form]), false, &own));
            assert!(why.contains("an address of brig's host"), "{form}: {why}");
        }
    }

    #[test]
    fn a_name_outside_the_list_reaches_only_the_addresses_its_networks_hold() {
        let allowed = list(&["93.184.216.0/24"]);
        let resolved = ips(&["93.184.216.9", "151.101.0.223"]);
        assert_eq!(
            decide(&allowed, "svc.example", 443, &resolved, false, &[]),
            Verdict::Dial(ips(&["93.184.216.9"]))
        );
    }

    #[test]
    fn lists_name_their_bad_entry_and_are_bounded() {
        let err = AllowList::parse(&["pypi.org", "exa mple.com"]).unwrap_err();
        assert!(
            err.to_string().starts_with("\"exa mple.com\": not a host name"),
            "{err}"
        );
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("h{i}.example")).collect();
        assert_eq!(AllowList::parse(&many).unwrap_err(), AllowListError::TooMany);
    }

    #[test]
    fn a_session_asks_only_for_what_the_operator_allows() {
        let bounds = list(&["*.pythonhosted.org", "pypi.org:443", "203.0.113.0/24"]);
        assert_eq!(
            bounds.first_outside(&list(&["files.pythonhosted.org", "203.0.113.7"])),
            None
        );
        let outside = list(&["pypi.org:443", "pypi.org"]);
        assert_eq!(
            bounds.first_outside(&outside).map(ToString::to_string),
            Some("pypi.org".into())
        );
        assert!(
            AllowList::default().first_outside(&list(&["pypi.org"])).is_some(),
            "no bounds: egress off"
        );
    }
}
