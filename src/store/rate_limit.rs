//! Rate-limit counters kept in a store ([`RateLimitStore`]), so that several instances of the
//! authorization server behind one load balancer share one budget per client address instead
//! of each granting its own.
//!
//! # The algorithm: GCRA, a token bucket in one number
//!
//! Every store counts with the *generic cell rate algorithm*: a key's whole state is one
//! timestamp, its *theoretical arrival time* (TAT). A budget of `limit` hits per `window`
//! admits one hit every `window / limit` (the *emission interval*) and a burst of `limit`.
//! A hit at `now` moves the TAT to `max(TAT, now) + interval`, and is allowed when the new
//! TAT lies no further than `window` (the burst) ahead of `now`; a refused hit leaves the
//! TAT where it was and learns how long to wait.
//!
//! That is exactly the in-process token bucket the server uses without a shared store (a
//! bucket of `limit` that refills continuously), so moving from one instance to several
//! changes *where* the budget lives, not what it allows. It is chosen over a fixed window,
//! which lets twice the limit through around a window boundary, and over a sliding log,
//! which stores every hit: here one small record per key suffices, it expires by itself
//! once the bucket is full again, and one atomic step (a Lua script, one `INSERT … ON
//! CONFLICT … RETURNING`, one lock) both reads and writes it.
//!
//! # Keys
//!
//! The server's keys are `"{endpoint kind}:{client address}"` (`register:203.0.113.9`,
//! `token:2001:db8:1:2::`, `login:unknown`). Addresses are not secrets; codes, tokens and
//! client secrets never become part of a key.
//!
//! ```
//! use std::time::Duration;
//! use mcp_oauth::store::{MemoryStore, RateLimitStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = MemoryStore::new();
//! let (minute, now_ms) = (Duration::from_secs(60), 1_700_000_000_000);
//! // Three hits a minute: the first three at once pass, the fourth waits 20 s.
//! for left in [2, 1, 0] {
//!     let d = store.hit("register:192.0.2.1", 3, minute, now_ms).await.unwrap();
//!     assert!(d.allowed && d.remaining == left);
//! }
//! let refused = store.hit("register:192.0.2.1", 3, minute, now_ms).await.unwrap();
//! assert!(!refused.allowed);
//! assert_eq!(refused.retry_after, Duration::from_secs(20));
//! // 20 s later one more passes; another address has a budget of its own.
//! assert!(store.hit("register:192.0.2.1", 3, minute, now_ms + 20_000).await.unwrap().allowed);
//! assert!(store.hit("register:192.0.2.2", 3, minute, now_ms).await.unwrap().allowed);
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryStore, StoreError};

/// What [`RateLimitStore::hit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// Whether the hit is within the budget.
    pub allowed: bool,
    /// How many more hits the budget allows right now (`0` when refused).
    pub remaining: u32,
    /// How long until a hit would be allowed again ([`Duration::ZERO`] when allowed).
    pub retry_after: Duration,
}

/// Rate-limit counters a store keeps for every instance that shares it. See the
/// [module docs](self) for the algorithm every implementation follows.
///
/// [`RedisStore`](crate::store::redis::RedisStore) and
/// [`PostgresStore`](crate::store::sql::PostgresStore) implement it and offer themselves
/// through [`GrantStore::rate_limit_store`](super::GrantStore::rate_limit_store), so an
/// authorization server on one of them shares its limits automatically;
/// [`SqliteStore`](crate::store::sql::SqliteStore) and [`MemoryStore`] implement it too (for
/// an explicit [`rate_limit_store`](crate::server::AuthorizationServerBuilder::rate_limit_store)
/// and for tests), but a single instance is served as well by its in-process buckets.
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `RateLimitStore`",
    note = "implement `mcp_oauth::store::RateLimitStore`, or use `MemoryStore`, `PostgresStore` or `RedisStore`"
)]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts one hit against `key` and decides, atomically (of `n` concurrent hits on a
    /// fresh key, exactly `min(n, limit)` are allowed, whichever instance sends them): at
    /// most `limit` hits in a burst, refilling at `limit` per `window`. `now_ms` is the
    /// caller's clock in milliseconds since the Unix epoch. A `limit` of `0` counts as `1`.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError>;

    /// Forgets the keys whose buckets are full again at `now_ms` (they behave exactly like
    /// absent keys); returns how many went. Stores whose records expire on their own keep
    /// the default, which does nothing.
    async fn sweep_rate_limits(&self, now_ms: u64) -> Result<u64, StoreError> {
        let _ = now_ms;
        Ok(0)
    }
}

#[async_trait]
impl<T: RateLimitStore + ?Sized> RateLimitStore for Arc<T> {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        (**self).hit(key, limit, window, now_ms).await
    }

    async fn sweep_rate_limits(&self, now_ms: u64) -> Result<u64, StoreError> {
        (**self).sweep_rate_limits(now_ms).await
    }
}

/// The GCRA parameters of one budget, in milliseconds, and the arithmetic every store shares.
/// Stores compute the step itself atomically where the state lives; this turns its result
/// into a [`RateLimitDecision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Milliseconds between two hits at the sustained rate.
    pub(crate) interval_ms: u64,
    /// How far ahead of `now` the TAT may run: the burst, `limit × interval`.
    pub(crate) burst_ms: u64,
}

impl Gcra {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        let limit = u64::from(limit.max(1));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let interval_ms = (window_ms / limit).max(1);
        Self {
            interval_ms,
            burst_ms: interval_ms.saturating_mul(limit),
        }
    }

    /// One step on the TAT `tat` (`0` for an absent key): the decision and the TAT to store
    /// (`None` when refused, which leaves it unchanged).
    pub(crate) fn step(&self, tat: u64, now_ms: u64) -> (RateLimitDecision, Option<u64>) {
        let next = tat.max(now_ms).saturating_add(self.interval_ms);
        let allowed = next - now_ms <= self.burst_ms;
        (
            self.decision(allowed, if allowed { next } else { tat }, now_ms),
            allowed.then_some(next),
        )
    }

    /// The decision for a step a store took atomically: whether it allowed the hit, and the
    /// TAT it holds afterwards (the new one when allowed, the unchanged one when refused).
    pub(crate) fn decision(&self, allowed: bool, tat: u64, now_ms: u64) -> RateLimitDecision {
        if allowed {
            let ahead = tat.saturating_sub(now_ms);
            let remaining = self.burst_ms.saturating_sub(ahead) / self.interval_ms;
            RateLimitDecision {
                allowed: true,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                retry_after: Duration::ZERO,
            }
        } else {
            let next = tat.max(now_ms).saturating_add(self.interval_ms);
            let wait = next
                .saturating_sub(now_ms)
                .saturating_sub(self.burst_ms)
                .max(1);
            RateLimitDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_millis(wait),
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
#[cfg(any(feature = "server", feature = "testkit"))]
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Most keys [`MemoryStore`] keeps. Beyond, expired keys are dropped and then the key
/// closest to a full bucket (the smallest TAT) is evicted: never a shared overflow bucket,
/// which a caller spraying keys could drain for everyone (see
/// [`server::rate_limit`](crate::server) for the trade-off).
const MEMORY_MAX_KEYS: usize = 65_536;

/// [`MemoryStore`]'s counters: the TAT of each key, behind their own lock.
#[derive(Debug, Default)]
pub(super) struct MemoryRateLimits {
    tats: Mutex<HashMap<String, u64>>,
}

impl MemoryRateLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Plain numbers: a poisoned lock holds nothing half-written.
        self.tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        let gcra = Gcra::new(limit, window);
        let mut tats = self.rate_limits.lock();
        if tats.len() >= MEMORY_MAX_KEYS && !tats.contains_key(key) {
            tats.retain(|_, tat| *tat > now_ms);
            if tats.len() >= MEMORY_MAX_KEYS {
                let closest_to_full = tats
                    .iter()
                    .min_by_key(|(_, tat)| **tat)
                    .map(|(k, _)| k.clone());
                if let Some(k) = closest_to_full {
                    tats.remove(&k);
                }
            }
        }
        let tat = tats.get(key).copied().unwrap_or(0);
        let (decision, next) = gcra.step(tat, now_ms);
        if let Some(next) = next {
            tats.insert(key.to_owned(), next);
        }
        Ok(decision)
    }

    async fn sweep_rate_limits(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut tats = self.rate_limits.lock();
        let before = tats.len();
        tats.retain(|_, tat| *tat > now_ms);
        Ok((before - tats.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_matches_a_token_bucket() {
        // 3 a minute: interval 20 s, burst 60 s.
        let g = Gcra::new(3, Duration::from_secs(60));
        assert_eq!(g.interval_ms, 20_000);
        assert_eq!(g.burst_ms, 60_000);
        let t0 = 1_000_000;
        let (d, tat) = g.step(0, t0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        let (d, tat) = g.step(tat.unwrap(), t0);
        assert_eq!(d.remaining, 1);
        let (d, tat) = g.step(tat.unwrap(), t0);
        assert_eq!(d.remaining, 0);
        let tat = tat.unwrap();
        let (d, none) = g.step(tat, t0);
        assert!(!d.allowed);
        assert_eq!(none, None);
        assert_eq!(d.retry_after, Duration::from_secs(20));
        // 5 s later: 15 s to wait; 20 s later, one hit again, and only one.
        assert_eq!(
            g.step(tat, t0 + 5_000).0.retry_after,
            Duration::from_secs(15)
        );
        let (d, tat2) = g.step(tat, t0 + 20_000);
        assert!(d.allowed && d.remaining == 0);
        assert!(!g.step(tat2.unwrap(), t0 + 20_000).0.allowed);
        // A whole window later the bucket is full again.
        let (d, _) = g.step(tat, t0 + 60_000);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn zero_limit_counts_as_one_and_tiny_windows_do_not_divide_by_zero() {
        let g = Gcra::new(0, Duration::from_secs(1));
        assert_eq!(g.burst_ms, 1_000);
        let g = Gcra::new(1_000, Duration::from_millis(10));
        assert_eq!(g.interval_ms, 1);
        assert!(g.step(0, 5).0.allowed);
    }

    #[tokio::test]
    async fn memory_keys_are_bounded() {
        let store = MemoryStore::new();
        let w = Duration::from_secs(60);
        for i in 0..MEMORY_MAX_KEYS {
            assert!(
                store
                    .hit(&format!("k{i}"), 1, w, 1_000)
                    .await
                    .unwrap()
                    .allowed
            );
        }
        // Issue 8 item 7 (this test asserted the old shared overflow bucket, where `new-2`
        // was refused because `new-1` had drained it): full, a new key still gets a bucket
        // of its own, and the table does not grow.
        assert!(store.hit("new-1", 1, w, 1_000).await.unwrap().allowed);
        assert!(store.hit("new-2", 1, w, 1_000).await.unwrap().allowed);
        assert!(!store.hit("new-2", 1, w, 1_000).await.unwrap().allowed);
        // Once the buckets are full again they are forgotten.
        assert_eq!(
            store.sweep_rate_limits(1_000 + 60_000).await.unwrap(),
            MEMORY_MAX_KEYS as u64
        );
        assert!(store.hit("new-2", 1, w, 61_000).await.unwrap().allowed);
    }
}
