//! One loopback rule for the whole crate.
//!
//! Several places need to know whether a host is "this machine": plain `http` is accepted for a
//! resource or issuer URL on a loopback host (development), loopback redirect URIs may use any
//! port (RFC 8252 §7.3), [`InsecureAutoApprove`](crate::authn::InsecureAutoApprove) only runs
//! on a loopback issuer, and the outbound HTTP client refuses loopback addresses unless allowed.
//! They all ask the two functions here, so that `http://127.0.0.2`, `http://[::1]` and
//! `http://LOCALHOST.` get the same answer everywhere.
//!
//! The rule, for a host as written in a URL (brackets around IPv6 allowed) or bare:
//!
//! - the name `localhost`, in any case, with or without the final dot (RFC 6761 §6.3); a name
//!   that merely starts with it (`localhost.example.com`) or ends with it
//!   (`app.localhost`) is **not** loopback: it would have to be resolved first;
//! - any address in `127.0.0.0/8`, and `::1`;
//! - the IPv4-mapped (`::ffff:127.0.0.1`) and IPv4-compatible (`::127.0.0.1`) IPv6 forms of a
//!   loopback IPv4 address.
//!
//! Nothing else: no DNS lookup, no `0.0.0.0`, no shorthand such as `127.1` (URL parsers expand
//! that to `127.0.0.1` before it gets here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a loopback address: `127.0.0.0/8`, `::1`, or the IPv4-mapped or
/// IPv4-compatible form of a `127.0.0.0/8` address.
#[must_use]
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || embedded_ipv4(v6).is_some_and(|v4| v4.is_loopback()),
    }
}

/// Whether `host` names this machine without a DNS lookup (see the [module docs](self)).
///
/// `host` is a URL host (`localhost`, `127.0.0.1`, `[::1]`) or a bare address (`::1`).
/// Comparison ignores ASCII case and one final dot of a name.
#[must_use]
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_loopback_ip(ip);
    }
    let name = bare.strip_suffix('.').unwrap_or(bare);
    name.eq_ignore_ascii_case("localhost")
}

/// The IPv4 address carried by an IPv4-mapped (`::ffff:a.b.c.d`) or IPv4-compatible
/// (`::a.b.c.d`, deprecated by RFC 4291 but still parsed by stacks) IPv6 address. `::` and
/// `::1` are not IPv4-compatible addresses.
#[must_use]
pub(crate) fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "LocalHost.",
            "localhost.",
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.255",
            "[::1]",
            "::1",
            "[0:0:0:0:0:0:0:1]",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "::127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host} is loopback");
        }
    }

    #[test]
    fn other_hosts_are_not_loopback() {
        for host in [
            "localhost.example.com",
            "app.localhost",
            "localhost..",
            "localhostx",
            "127.0.0.1.nip.io",
            "128.0.0.1",
            "126.255.255.255",
            "0.0.0.0",
            "[::]",
            "::",
            "::2",
            "[::ffff:10.0.0.1]",
            "::ffff:128.0.0.1",
            "[::1",
            "::1]",
            "127.1",
            "",
            "example.com",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host} is not loopback");
        }
    }

    #[test]
    fn loopback_ips() {
        assert!(is_loopback_ip("127.0.0.1".parse().unwrap()));
        assert!(is_loopback_ip("127.9.8.7".parse().unwrap()));
        assert!(is_loopback_ip("::1".parse().unwrap()));
        assert!(is_loopback_ip("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!is_loopback_ip("::".parse().unwrap()));
        assert!(!is_loopback_ip("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback_ip("fe80::1".parse().unwrap()));
    }

    #[test]
    fn embedded_ipv4_forms() {
        let v4 = |s: &str| embedded_ipv4(s.parse().unwrap());
        assert_eq!(v4("::ffff:10.1.2.3"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(v4("::10.1.2.3"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(v4("::"), None);
        assert_eq!(v4("::1"), None);
        assert_eq!(v4("::2"), Some(Ipv4Addr::new(0, 0, 0, 2)));
        assert_eq!(v4("2001:db8::1"), None);
    }
}
