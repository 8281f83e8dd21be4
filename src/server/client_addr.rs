//! Which address a request comes from, for the per-address rate limits (see
//! [`rate_limit`](super::rate_limit#which-address)): the TCP peer, or, when that peer is a
//! trusted proxy, the rightmost forwarded address that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ConnectInfo;
use http::HeaderMap;
use http::request::Parts;

/// The client address of a request: the peer, or, when the peer is a trusted proxy, the
/// rightmost forwarded address that is not a trusted proxy. `None` without `ConnectInfo`;
/// the first such request of the process logs an error that names the fix, since every
/// client then shares one rate-limit bucket.
pub(crate) fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        no_connect_info();
        return None;
    };
    Some(resolve_client(
        peer.ip().to_canonical(),
        &parts.headers,
        trusted_proxies,
    ))
}

/// Logs, once per process, that requests arrive without a peer address.
fn no_connect_info() {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    // A read first: the common case (already logged) writes nothing to the shared flag.
    if !LOGGED.load(Ordering::Relaxed) && !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!(
            target: "mcp_oauth::config",
            "requests reach the authorization server without the client's address, so every \
             client shares one rate-limit bucket and one abusive client throttles everyone: \
             serve the app with `into_make_service_with_connect_info::<std::net::SocketAddr>()` \
             (and list a reverse proxy in `trusted_proxies`)"
        );
    }
}

fn is_trusted(addr: IpAddr, trusted: &[IpAddr]) -> bool {
    trusted.iter().any(|t| t.to_canonical() == addr)
}

/// Applies the trusted-proxy rule to a known peer.
fn resolve_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    // Walk from the proxy nearest to us towards the client; the first hop that is not one of
    // ours is the client. A hop we cannot parse was written by someone we do not control
    // (or by a misconfigured proxy): stop and key on the last address we trust.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(addr) if is_trusted(*addr, trusted) => client = *addr,
            Some(addr) => return *addr,
            None => return client,
        }
    }
    client
}

/// The forwarded chain, leftmost (claimed client) first: `X-Forwarded-For` when present,
/// else the `for=` parameters of `Forwarded`. `None` entries did not parse.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| parse_node(s.trim()))
            .collect();
    }
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let for_value = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            });
            if let Some(v) = for_value {
                hops.push(parse_node(v.trim_matches('"')));
            }
        }
    }
    hops
}

/// Parses `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn parts_from(peer: Option<&str>, pairs: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::get("/token").body(()).unwrap();
        *req.headers_mut() = headers(pairs);
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        req.into_parts().0
    }

    #[test]
    fn untrusted_peer_ignores_forwarding_headers() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(resolve_client(ip("192.0.2.1"), &h, &[]), ip("192.0.2.1"));
        // Trusting some other proxy changes nothing for this peer.
        assert_eq!(
            resolve_client(ip("192.0.2.1"), &h, &[ip("10.0.0.1")]),
            ip("192.0.2.1")
        );
        let parts = parts_from(Some("192.0.2.1:5000"), &[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_address(&parts, &[]), Some(ip("192.0.2.1")));
    }

    #[test]
    fn trusted_proxy_uses_rightmost_untrusted_hop() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client prepended a fake address; the proxies appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &h, &proxies),
            ip("203.0.113.9")
        );
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &h, &proxies),
            ip("203.0.113.9")
        );
        // Ports and brackets.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:4711")]);
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &h, &proxies),
            ip("2001:db8::5")
        );
        let h = headers(&[("x-forwarded-for", "203.0.113.9:1234")]);
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &h, &proxies),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_header_when_no_xff() {
        let proxies = [ip("10.0.0.1")];
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1",
        )]);
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &h, &proxies),
            ip("2001:db8:cafe::17")
        );
    }

    #[test]
    fn trusted_proxy_without_headers_or_with_garbage() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            resolve_client(ip("10.0.0.1"), &HeaderMap::new(), &proxies),
            ip("10.0.0.1")
        );
        // Only proxies in the chain: the leftmost proxy is the best we know.
        let h = headers(&[("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &proxies), ip("10.0.0.2"));
        // An unparseable hop stops the walk at the last trusted address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown, 10.0.0.2")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &proxies), ip("10.0.0.2"));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peer_matches_trusted_ipv4() {
        let proxies = [ip("10.0.0.1")];
        let parts = parts_from(
            Some("[::ffff:10.0.0.1]:443"),
            &[("x-forwarded-for", "203.0.113.9")],
        );
        assert_eq!(client_address(&parts, &proxies), Some(ip("203.0.113.9")));
    }

    #[test]
    fn no_connect_info_is_unknown() {
        let parts = parts_from(None, &[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_address(&parts, &[ip("203.0.113.9")]), None);
    }
}
