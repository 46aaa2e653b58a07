//! Addresses brig never dials for a sandbox unless the operator allows private
//! ones (`EGRESS_ALLOW_PRIVATE`): whatever reaches the host, its neighbours or
//! the cloud's metadata service rather than the internet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::pattern::canonical;

/// Why `ip` is never dialled for a sandbox, or `None` for a public address.
/// An IPv4 address inside an IPv6 one (mapped, NAT64, 6to4) is judged as
/// the IPv4 address it reaches.
pub fn refused_because(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
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
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        "an IETF protocol address (192.0.0/24)"
    } else if a == 198 && (b == 18 || b == 19) {
        "a benchmarking address (198.18/15)"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() || a >= 240 {
        "a reserved address (240/4)"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "an unspecified address (::)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if first & 0xffc0 == 0xfe80 {
        "a link-local address (fe80::/10)"
    } else if first & 0xffc0 == 0xfec0 {
        "a site-local address (fec0::/10)"
    } else if first & 0xfe00 == 0xfc00 {
        "a unique local (private) address (fc00::/7)"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.segments()[..6] == [0; 6] {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        "an IPv4-compatible address (::/96)"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 one leads to through a translator: NAT64's
/// `64:ff9b::/96` or 6to4's `2002::/16`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else {
        None
    }
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
        ] {
            assert!(refused(ip), "{ip} would be dialled");
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
            "192.0.2.1",
            "203.0.113.7",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:1.1.1.1",
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
