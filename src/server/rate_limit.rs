//! Per-address rate limits of the authorization server's unauthenticated endpoints:
//! `/register`, `/token` (with `/revoke` and `/introspect`) and login form submissions.
//!
//! Each limit is an in-process **token bucket** per (endpoint kind, client address): a bucket
//! holds up to [`RateLimit::burst`] requests and refills at [`RateLimit::per_minute`] a
//! minute. A request that finds its bucket empty gets `429 slow_down` with a `Retry-After`.
//!
//! # Which address
//!
//! The client address is the TCP peer, taken from axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (serve the app with
//! `into_make_service_with_connect_info::<SocketAddr>()`). Only when that peer is one of the
//! [`trusted_proxies`](super::AuthorizationServerBuilder::trusted_proxies) are forwarding
//! headers believed: the client is then the **rightmost** address of `X-Forwarded-For` (or,
//! when that header is absent, of `Forwarded: for=`) that is not itself a trusted proxy.
//! Everything left of it can be written by the client and is ignored, so a client cannot
//! pick its own bucket. IPv6 clients are keyed by their `/64` prefix, the unit one host
//! usually receives.
//!
//! Without `ConnectInfo` (in tests with `oneshot`, or behind a server that does not provide
//! it) every request shares one "unknown" bucket per kind.
//!
//! # Deployment caveat
//!
//! Behind a reverse proxy that is **not** listed as trusted, every request appears to come
//! from the proxy and all users share one bucket; list the proxy's address. A proxy that
//! passes a client's `X-Forwarded-For` through without appending the real peer lets that
//! client choose its bucket; such a proxy must not be trusted.
//!
//! Memory is bounded: idle buckets (full again) are swept, the map holds at most
//! 65,536 addresses per server, and when it is full new addresses share one overflow bucket
//! per kind, so an address-spraying client cannot grow memory or escape limits.
//!
//! # Several instances: counters in the store
//!
//! Behind a load balancer, in-process buckets would give each instance the full budget, so
//! `n` instances would allow `n` times the limit. When the store offers shared counters
//! ([`GrantStore::rate_limit_store`](crate::store::GrantStore::rate_limit_store):
//! [`PostgresStore`](crate::store::sql::PostgresStore) and
//! [`RedisStore`](crate::store::redis::RedisStore) do) the limits are counted there instead,
//! one atomic step per request with the same token-bucket arithmetic (GCRA, see
//! [`store::rate_limit`](crate::store::rate_limit)), and every instance shares one budget per
//! address. This is on by default;
//! [`shared_rate_limits(false)`](super::AuthorizationServerBuilder::shared_rate_limits)
//! keeps the counters in process, and
//! [`rate_limit_store`](super::AuthorizationServerBuilder::rate_limit_store) names another
//! store for them. The keys are `"{kind}:{address}"` (`register:203.0.113.9`): addresses,
//! never a secret.
//!
//! **The shared limiter fails open.** When the store cannot count (it is down, or slow past
//! its operation timeout), the request is judged by this instance's own in-process buckets
//! instead, as if there were no shared store, and a warning is logged at most once a minute
//! (target `mcp_oauth::rate_limit`): an outage of the counters must not become an outage of
//! sign-in. Endpoints that need the store for their own work still answer
//! `503 temporarily_unavailable` while it is down.
//!
//! ```
//! use std::time::Duration;
//! use mcp_oauth::server::{AuthorizationServer, RateLimit};
//! use mcp_oauth::authn::StaticUsers;
//!
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     .register_rate_limit(RateLimit::per_minute(30).with_burst(10))
//!     .login_rate_limit(RateLimit::per_minute(10))
//!     .trusted_proxies(["10.0.0.2".parse().unwrap()])
//!     .build()
//!     .unwrap();
//! # let _ = (server, Duration::ZERO);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use http::HeaderMap;
use http::request::Parts;

use super::AsContext;
use crate::error::OAuthError;
use crate::store::StoreError;
use crate::store::rate_limit::now_ms;

/// A rate limit: `per_minute` requests a minute per client address, in bursts of `burst`.
///
/// `per_minute == 0` turns the limit off ([`RateLimit::unlimited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute (`0`: no limit).
    pub per_minute: u32,
    /// Largest burst (at least one request always fits).
    pub burst: u32,
}

impl RateLimit {
    /// `n` a minute, bursts of `n`.
    #[must_use]
    pub fn per_minute(n: u32) -> Self {
        Self {
            per_minute: n,
            burst: n,
        }
    }

    /// Sets the largest burst.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// No limit at all (for servers that limit at the proxy).
    #[must_use]
    pub fn unlimited() -> Self {
        Self {
            per_minute: 0,
            burst: 0,
        }
    }

    /// Whether this limit is off.
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.per_minute == 0
    }

    /// The same limit as a budget of `burst` hits refilling over the window in which
    /// `per_minute` would deliver them (for [`RateLimitStore::hit`]).
    fn as_budget(self) -> (u32, Duration) {
        let burst = self.burst.max(1);
        let per_minute = u64::from(self.per_minute.max(1));
        (
            burst,
            Duration::from_millis(u64::from(burst) * 60_000 / per_minute),
        )
    }
}

/// Which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LimitKind {
    /// `/register`.
    Register,
    /// `/token`, `/revoke`, `/introspect`.
    Token,
    /// Login form submissions.
    Login,
    /// `/authorize` and its login and consent form posts.
    Authorize,
}

impl LimitKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Token => "token",
            Self::Login => "login",
            Self::Authorize => "authorize",
        }
    }
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    /// An IPv4 address, or an IPv6 `/64` prefix.
    Ip(IpAddr),
    /// No address known (no `ConnectInfo`).
    Unknown,
    /// The shared bucket used once the map is full.
    Overflow,
}

impl ClientKey {
    fn of(addr: Option<IpAddr>) -> Self {
        match addr {
            None => Self::Unknown,
            Some(IpAddr::V4(v4)) => Self::Ip(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                Self::Ip(IpAddr::V6(Ipv6Addr::from(seg)))
            }
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Unknown => f.write_str("unknown"),
            Self::Overflow => f.write_str("overflow"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// When the bucket is full again: from then on, forgetting it changes nothing.
    full_at: Instant,
}

/// Most buckets kept per server (all kinds together).
const MAX_KEYS: usize = 65_536;
/// Sweep idle buckets at most this often (once a second while the map is full).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    buckets: HashMap<(LimitKind, ClientKey), Bucket>,
    last_sweep: Instant,
}

/// The shared counters' failures are logged at most this often (seconds).
const SHARED_WARN_EVERY_SECS: u64 = 60;

/// The token buckets of one authorization server.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
    max_keys: usize,
    /// When a failure of the shared counters was last logged (seconds since the epoch).
    shared_warned_at: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    pub(crate) fn new() -> Self {
        Self::with_capacity(MAX_KEYS)
    }

    fn with_capacity(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(State {
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            max_keys,
            shared_warned_at: AtomicU64::new(0),
        }
    }

    /// Logs a failure of the shared counters, at most once a minute.
    fn warn_shared(&self, error: &StoreError) {
        let now = crate::util::now();
        let last = self.shared_warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SHARED_WARN_EVERY_SECS
            && self
                .shared_warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "mcp_oauth::rate_limit",
                error = %error,
                "shared rate-limit counters unavailable; counting in process meanwhile (fail open)"
            );
        }
    }

    /// Takes one request from the bucket of `(kind, key)`; `Err(seconds to wait)` when empty.
    fn take(
        &self,
        kind: LimitKind,
        key: ClientKey,
        limit: RateLimit,
        now: Instant,
    ) -> Result<(), u64> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let capacity = f64::from(limit.burst.max(1));
        let per_sec = f64::from(limit.per_minute) / 60.0;
        // A poisoned lock only means another thread panicked mid-update; the buckets are
        // still plain numbers, so keep going rather than failing every request.
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since_sweep = now.saturating_duration_since(st.last_sweep);
        if since_sweep >= SWEEP_EVERY
            || (st.buckets.len() >= self.max_keys && since_sweep >= SWEEP_WHEN_FULL_EVERY)
        {
            st.buckets.retain(|_, b| b.full_at > now);
            st.last_sweep = now;
        }
        let key = if st.buckets.len() < self.max_keys || st.buckets.contains_key(&(kind, key)) {
            key
        } else {
            ClientKey::Overflow
        };
        let bucket = st.buckets.entry((kind, key)).or_insert(Bucket {
            tokens: capacity,
            last: now,
            full_at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.last = now;
        let outcome = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_sec;
            // At most 60 s / per_minute ≤ 60: the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Err(wait.ceil().max(1.0) as u64)
        };
        let refill = ((capacity - bucket.tokens) / per_sec).clamp(0.0, 86_400.0);
        bucket.full_at = now + Duration::from_secs_f64(refill);
        outcome
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.buckets.len())
    }
}

/// The client address of a request: the peer, or, when the peer is a trusted proxy, the
/// rightmost forwarded address that is not a trusted proxy. `None` without `ConnectInfo`.
pub(crate) fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())?;
    Some(resolve_client(peer, &parts.headers, trusted_proxies))
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

/// Counts one request of `kind` from the request's client address, in the store's shared
/// counters when there are any (falling back to the in-process buckets when they fail), else
/// in process; `Err(429 slow_down)` with `Retry-After` when over the limit.
pub(crate) async fn check(
    ctx: &AsContext,
    kind: LimitKind,
    parts: &Parts,
) -> Result<(), OAuthError> {
    let server = &ctx.server;
    let limit = match kind {
        LimitKind::Register => server.limits.register,
        LimitKind::Token => server.limits.token,
        LimitKind::Login => server.limits.login,
        LimitKind::Authorize => server.limits.authorize,
    };
    if limit.is_unlimited() {
        return Ok(());
    }
    let addr = client_address(parts, &server.trusted_proxies);
    let key = ClientKey::of(addr);
    let refused = |retry_after: u64| {
        tracing::debug!(
            target: "mcp_oauth::rate_limit",
            ?kind,
            client = ?addr,
            retry_after,
            "rate limit exceeded"
        );
        OAuthError::rate_limited(retry_after)
    };
    if let Some(shared) = server.upkeep.shared_limiter(&*server.grants) {
        let (budget, window) = limit.as_budget();
        let name = format!("{}:{key}", kind.as_str());
        match shared.hit(&name, budget, window, now_ms()).await {
            Ok(d) if d.allowed => return Ok(()),
            Ok(d) => {
                let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
                return Err(refused(secs));
            }
            Err(e) => server.limiter.warn_shared(&e),
        }
    }
    server
        .limiter
        .take(kind, key, limit, Instant::now())
        .map_err(refused)
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
        assert_eq!(ClientKey::of(None), ClientKey::Unknown);
    }

    #[test]
    fn ipv6_keyed_by_64() {
        assert_eq!(
            ClientKey::of(Some(ip("2001:db8:1:2:aaaa::1"))),
            ClientKey::of(Some(ip("2001:db8:1:2:bbbb::9")))
        );
        assert_ne!(
            ClientKey::of(Some(ip("2001:db8:1:2::1"))),
            ClientKey::of(Some(ip("2001:db8:1:3::1")))
        );
    }

    #[test]
    fn bucket_refills_and_reports_retry_after() {
        let l = Limiter::new();
        let limit = RateLimit::per_minute(60).with_burst(2);
        let t0 = Instant::now();
        let k = ClientKey::of(Some(ip("192.0.2.1")));
        assert!(l.take(LimitKind::Token, k, limit, t0).is_ok());
        assert!(l.take(LimitKind::Token, k, limit, t0).is_ok());
        assert_eq!(l.take(LimitKind::Token, k, limit, t0), Err(1));
        // Another address and another kind have their own buckets.
        let other = ClientKey::of(Some(ip("192.0.2.2")));
        assert!(l.take(LimitKind::Token, other, limit, t0).is_ok());
        assert!(l.take(LimitKind::Login, k, limit, t0).is_ok());
        // One second refills one request at 60 a minute.
        assert!(
            l.take(LimitKind::Token, k, limit, t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            l.take(LimitKind::Token, k, limit, t0 + Duration::from_secs(1))
                .is_err()
        );
        // Slow limits report longer waits.
        let slow = RateLimit::per_minute(1);
        assert!(l.take(LimitKind::Register, k, slow, t0).is_ok());
        assert_eq!(l.take(LimitKind::Register, k, slow, t0), Err(60));
    }

    #[test]
    fn budgets_match_the_buckets() {
        assert_eq!(
            RateLimit::per_minute(20).as_budget(),
            (20, Duration::from_secs(60))
        );
        assert_eq!(
            RateLimit::per_minute(30).with_burst(10).as_budget(),
            (10, Duration::from_secs(20))
        );
        assert_eq!(
            RateLimit {
                per_minute: 10,
                burst: 0
            }
            .as_budget(),
            (1, Duration::from_secs(6))
        );
        assert_eq!(ClientKey::of(None).to_string(), "unknown");
        assert_eq!(
            ClientKey::of(Some(ip("2001:db8:1:2:aaaa::1"))).to_string(),
            "2001:db8:1:2::"
        );
        assert_eq!(
            format!(
                "{}:{}",
                LimitKind::Register.as_str(),
                ClientKey::of(Some(ip("192.0.2.1")))
            ),
            "register:192.0.2.1"
        );
    }

    #[test]
    fn unlimited_and_zero_burst() {
        let l = Limiter::new();
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(
                l.take(
                    LimitKind::Token,
                    ClientKey::Unknown,
                    RateLimit::unlimited(),
                    t0
                )
                .is_ok()
            );
        }
        assert_eq!(l.len(), 0);
        let zero_burst = RateLimit {
            per_minute: 10,
            burst: 0,
        };
        assert!(
            l.take(LimitKind::Token, ClientKey::Unknown, zero_burst, t0)
                .is_ok()
        );
        assert!(
            l.take(LimitKind::Token, ClientKey::Unknown, zero_burst, t0)
                .is_err()
        );
    }

    #[test]
    fn memory_is_bounded_and_overflow_is_limited() {
        let l = Limiter::with_capacity(8);
        let limit = RateLimit::per_minute(1);
        let t0 = Instant::now();
        let mut refused = 0;
        for i in 0..100u32 {
            let k = ClientKey::of(Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
            if l.take(LimitKind::Register, k, limit, t0).is_err() {
                refused += 1;
            }
        }
        // Eight addresses and the overflow bucket.
        assert_eq!(l.len(), 9);
        // Eight addresses got their own bucket; the other 92 share one overflow bucket.
        assert_eq!(refused, 100 - 8 - 1);
        // Idle buckets are swept once they are full again.
        let later = t0 + Duration::from_secs(120);
        let k = ClientKey::of(Some(ip("192.0.2.77")));
        assert!(l.take(LimitKind::Register, k, limit, later).is_ok());
        assert_eq!(l.len(), 1);
    }
}
