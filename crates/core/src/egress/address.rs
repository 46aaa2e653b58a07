//! Addresses brig never dials for a sandbox unless the operator allows private
//! ones (`EGRESS_ALLOW_PRIVATE`): whatever reaches the host, its neighbours or
//! the cloud's metadata service rather than the internet, and the ranges that
//! route nowhere public (documentation, reserved, translator forms that are
//! not decoded).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address a connection to `ip` reaches: an IPv4 address carried in an
/// IPv6 one (mapped `::ffff:a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, the old
/// IPv4-compatible `::a.b.c.d`, NAT64's `64:ff9b::/96`, 6to4's `2002::/16`)
/// is the IPv4 address; anything else is itself. Every check (refused
/// ranges, the host's own addresses, allow-list networks) is made on this.
pub(crate) fn effective(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => v4(hi, lo),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => v4(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4(hi, lo),
        [0x2002, hi, lo, ..] => v4(hi, lo),
        _ => ip,
    }
}

/// The cloud metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254;
/// AWS over IPv6: fd00:ec2::254; Alibaba: 100.100.100.200), refused even
/// where private addresses are allowed. `ip` is an [`effective`] address.
pub(crate) fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 2] = [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(100, 100, 100, 200)];
    match ip {
        IpAddr::V4(v4) => V4.contains(&v4),
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    }
}

/// Why `ip` is never dialled for a sandbox, or `None` for a public address.
/// Judged on the [`effective`] address.
pub fn refused_because(ip: IpAddr) -> Option<&'static str> {
    match effective(ip) {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_unspecified() || a == 0 {
        "an unspecified address (0.0.0.0/8)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_link_local() {
        // 169.254.169.254 is the cloud metadata service.
        "a link-local address (169.254.0.0/16, the cloud metadata service among them)"
    } else if ip.is_private() {
        "a private address (10/8, 172.16/12, 192.168/16)"
    } else if a == 100 && (64..128).contains(&b) {
        "a shared (carrier-grade NAT) address (100.64/10)"
    } else if a == 192 && b == 0 && c == 0 {
        "an IETF protocol address (192.0.0/24)"
    } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113) {
        "a documentation address"
    } else if a == 198 && (b == 18 || b == 19) {
        "a benchmarking address (198.18/15)"
    } else if (a, b, c) == (192, 88, 99) {
        "a retired 6to4 relay address (192.88.99/24)"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() || a >= 240 {
        "a reserved address (240/4)"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        "an unspecified address (::)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s[0] < 0x0100 {
        "an IETF reserved address (::/8)"
    } else if s[..4] == [0x0100, 0, 0, 0] {
        "a discard-only address (100::/64)"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        "a translated address outside NAT64's well-known /96 (64:ff9b::/32, 64:ff9b:1::/48)"
    } else if s[0] == 0x2001 && s[1] == 0 {
        "a Teredo address (2001::/32)"
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || s[0] & 0xfff0 == 0x3ff0 {
        "a documentation address (2001:db8::/32, 3fff::/20)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "a link-local address (fe80::/10)"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "a site-local address (fec0::/10)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "a unique local (private) address (fc00::/7, the metadata service's fd00:ec2::254 among them)"
    } else if ip.is_multicast() {
        "a multicast address"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        refused_because(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn what_reaches_the_host_the_lan_or_the_metadata_service_is_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "169.254.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101::1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b::1:a9fe:a9fe",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "::2:1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.7",
            "192.88.99.1",
            "2001:db8::1",
            "3fff::1",
            "fd00:ec2::254",
        ] {
            assert!(refused(ip), "{ip} would be dialled");
        }
    }

    #[test]
    fn an_ipv4_address_inside_an_ipv6_one_is_judged_as_the_ipv4_address() {
        let v4: IpAddr = "169.254.169.254".parse().unwrap();
        for form in [
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::",
        ] {
            assert_eq!(effective(form.parse().unwrap()), v4, "{form}");
        }
        for itself in ["::", "::1", "2606:4700::1111"] {
            let ip: IpAddr = itself.parse().unwrap();
            assert_eq!(effective(ip), ip);
        }
    }

    #[test]
    fn public_addresses_are_dialled() {
        for ip in [
            "1.1.1.1",
            "151.101.0.223",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2a04:4e42::223",
            "::ffff:1.1.1.1",
            "::ffff:0:101:101",
            "64:ff9b::101:101",
            "2002:0101:0101::1",
        ] {
            assert!(
                !refused(ip),
                "{ip} is refused: {:?}",
                refused_because(ip.parse().unwrap())
            );
        }
    }
}
