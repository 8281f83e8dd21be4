//! Per-address rate limits of the authorization server's unauthenticated endpoints:
//! `/register`, `/token` (with `/revoke` and `/introspect`), `/authorize` (with its login and
//! consent form posts) and login form submissions.
//!
//! Each limit is an in-process **token bucket** per (endpoint kind, client address): a bucket
//! holds up to [`RateLimit::burst`] requests and refills at [`RateLimit::per_minute`] a
//! minute. A request that finds its bucket empty gets `429 slow_down` with a `Retry-After`.
//!
//! `/register` has two buckets: the [registration
//! limit](super::AuthorizationServerBuilder::register_rate_limit) counts registrations that
//! create a client (60 a minute in bursts of 120 by default, sized for the many users
//! behind one address), and every request, checked before its body is read, counts against
//! ten times that budget; a registration answered with an identical earlier one's client
//! costs only the latter.
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
//! it) every request shares one "unknown" bucket per kind, and the first such request logs
//! an error (target `mcp_oauth::config`, once per process) that names the fix.
//!
//! # Deployment caveat
//!
//! Behind a reverse proxy that is **not** listed as trusted, every request appears to come
//! from the proxy and all users share one bucket; list the proxy's address. A proxy that
//! passes a client's `X-Forwarded-For` through without appending the real peer lets that
//! client choose its bucket; such a proxy must not be trusted.
//!
//! # Bounded memory, and why address churn helps nobody
//!
//! The table holds at most 65,536 buckets per server. A bucket that is full again carries no
//! information and is dropped as soon as it is (buckets are indexed by the moment they refill,
//! so this costs a look at the front of the index per request). When the table is still
//! full and a new address arrives, the bucket **closest to full** is evicted to make room,
//! and the new address gets a bucket of its own. There is no shared overflow bucket: an
//! attacker spraying addresses (an IPv6 `/48` holds 65,536 `/64`s) cannot push legitimate
//! clients into a bucket it drains, so its churn throttles nobody but itself.
//!
//! The trade-off: an evicted client starts again with a full bucket, so it wins back at most
//! the few requests its bucket was short of, and it is always the client that was *least*
//! throttled. To have its own drained bucket evicted, an attacker would have to drain all
//! 65,535 other buckets further than its own first, which costs far more requests than
//! the eviction returns. Each churned address, of course, gets its own budget: keying by
//! address cannot stop an attacker who really owns many addresses, which is why IPv6 is
//! keyed by `/64` (one subscriber's usual allocation).
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
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     .register_rate_limit(RateLimit::per_minute(30).with_burst(10))
//!     .login_rate_limit(RateLimit::per_minute(10))
//!     .trusted_proxies(["10.0.0.2".parse().unwrap()])
//!     .build()
//!     .await
//!     .unwrap();
//! # let _ = (server, Duration::ZERO);
//! # }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::request::Parts;

use super::AsContext;
pub(crate) use super::client_addr::client_address;
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

    /// The same limit `factor` times as large (still off when off).
    #[must_use]
    fn times(self, factor: u32) -> Self {
        Self {
            per_minute: self.per_minute.saturating_mul(factor),
            burst: self.burst.saturating_mul(factor),
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

/// How many times the registration limit every `/register` request (deduplicated or not,
/// valid or not) may use.
pub(crate) const REGISTER_REQUEST_FACTOR: u32 = 10;

/// Which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum LimitKind {
    /// `/register` requests that create a client.
    Register,
    /// Every `/register` request, before its body is read (ten times the `Register`
    /// budget): a deduplicated registration costs only this.
    RegisterRequest,
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
            Self::RegisterRequest => "register_request",
            Self::Token => "token",
            Self::Login => "login",
            Self::Authorize => "authorize",
        }
    }
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ClientKey {
    /// An IPv4 address, or an IPv6 `/64` prefix.
    Ip(IpAddr),
    /// No address known (no `ConnectInfo`).
    Unknown,
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

type BucketKey = (LimitKind, ClientKey);

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<BucketKey, Bucket>,
    /// Every bucket by the moment it is full again: the front is the bucket that loses least
    /// by being forgotten.
    by_full_at: BTreeSet<(Instant, BucketKey)>,
}

impl State {
    /// Drops every bucket that is full again at `now` (forgetting it changes nothing).
    fn drop_full(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.by_full_at.first() {
            if at > now {
                break;
            }
            self.by_full_at.pop_first();
            self.buckets.remove(&key);
        }
    }

    /// Evicts the bucket closest to full.
    fn evict_one(&mut self) {
        if let Some((_, key)) = self.by_full_at.pop_first() {
            self.buckets.remove(&key);
        }
    }
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
            state: Mutex::new(State::default()),
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
        st.drop_full(now);
        let key = (kind, key);
        if !st.buckets.contains_key(&key) && st.buckets.len() >= self.max_keys.max(1) {
            // Never a shared overflow bucket: make room by forgetting the bucket that is
            // closest to full (see the module docs for why churn gains an attacker nothing).
            st.evict_one();
        }
        let st = &mut *st;
        let bucket = st.buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            last: now,
            full_at: now,
        });
        let old_full_at = bucket.full_at;
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.last = now;
        let outcome = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_sec;
            // At most 60 s / per_minute ≤ 60: the cast cannot truncate.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a wait of at most 60 s, never negative"
            )]
            Err(wait.ceil().max(1.0) as u64)
        };
        let refill = ((capacity - bucket.tokens) / per_sec).clamp(0.0, 86_400.0);
        bucket.full_at = now + Duration::from_secs_f64(refill);
        st.by_full_at.remove(&(old_full_at, key));
        st.by_full_at.insert((bucket.full_at, key));
        outcome
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.buckets.len())
    }
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
        LimitKind::RegisterRequest => server.limits.register.times(REGISTER_REQUEST_FACTOR),
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
        #[cfg(feature = "metrics")]
        crate::metrics::rate_limited(kind.as_str());
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
mod tests;
