//! [`CachedRevocations`]: a revocation list that remembers, for a short time, which token ids
//! it found not revoked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{RevokedTokens, VerifyError};

/// The longest [`CachedRevocations`] may trust a "not revoked" answer (60 s):
/// [`CachedRevocations::new`] and
/// [`McpOAuthConfigBuilder::build`](crate::McpOAuthConfigBuilder::build) refuse more.
pub const MAX_REVOCATION_CACHE: Duration = Duration::from_secs(60);

/// A [`RevokedTokens`] in front of another that asks it about each token id at most once per
/// `ttl` while the answer is "not revoked".
///
/// The layer consults the revocation list on every request, cache hits included. With the
/// embedded authorization server on a SQL store that is one query per request (about 0.1 ms
/// on SQLite, a network round trip on PostgreSQL); this wrapper turns it into one query per
/// token per `ttl`. The price is stated plainly: **a revocation takes effect within `ttl`**
/// instead of at once, on every instance (this one included, because revocations also come
/// from the grant store's own steps, such as a refresh-token reuse that revokes a family,
/// which never pass through here). Turned on with
/// [`McpOAuthConfigBuilder::revocation_cache`](crate::McpOAuthConfigBuilder::revocation_cache);
/// off by default.
///
/// What is never cached: a "revoked" answer (every later request asks again, so it can
/// never turn into "not revoked" from here) and an error (the request fails closed with
/// `503`, and the next one asks again). [`revoke`](RevokedTokens::revoke) through this
/// wrapper forgets the token id at once. At most `capacity` ids are remembered; when full,
/// stale ones are dropped first, then everything (the next requests ask the list again).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mcp_oauth::verify::{CachedRevocations, MemoryRevocations, RevokedTokens};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let list = Arc::new(MemoryRevocations::new());
/// let cached = CachedRevocations::new(list.clone(), Duration::from_secs(2), 10_000).unwrap();
/// assert!(!cached.is_revoked("jti-1").await.unwrap());
/// // Revoked behind the cache's back: still "not revoked" for up to two seconds...
/// list.revoke("jti-1", u64::MAX / 2).await.unwrap();
/// assert!(!cached.is_revoked("jti-1").await.unwrap());
/// // ...while a revocation through the cache takes effect at once.
/// cached.revoke("jti-2", u64::MAX / 2).await.unwrap();
/// assert!(cached.is_revoked("jti-2").await.unwrap());
/// # }
/// ```
pub struct CachedRevocations {
    inner: Arc<dyn RevokedTokens>,
    ttl: Duration,
    capacity: usize,
    checked: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for CachedRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRevocations")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl CachedRevocations {
    /// Wraps `inner`, trusting a "not revoked" answer for `ttl` (zero: never, every question
    /// goes to `inner`), for at most `capacity` token ids at a time (at least one).
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`](crate::ConfigError::OutOfRange) for a `ttl` above
    /// [`MAX_REVOCATION_CACHE`].
    pub fn new(
        inner: Arc<dyn RevokedTokens>,
        ttl: Duration,
        capacity: usize,
    ) -> Result<Self, crate::ConfigError> {
        check_revocation_cache(ttl)?;
        Ok(Self {
            inner,
            ttl,
            capacity: capacity.max(1),
            checked: Mutex::new(HashMap::new()),
        })
    }

    fn fresh(&self, jti: &str) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(jti)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    fn remember(&self, jti: &str, at: Instant) {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.len() >= self.capacity && !checked.contains_key(jti) {
            checked.retain(|_, t| t.elapsed() < self.ttl);
            if checked.len() >= self.capacity {
                checked.clear();
            }
        }
        checked.insert(jti.to_owned(), at);
    }

    fn forget(&self, jti: &str) {
        self.checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(jti);
    }
}

#[async_trait]
impl RevokedTokens for CachedRevocations {
    async fn is_revoked(&self, jti: &str) -> Result<bool, VerifyError> {
        if self.fresh(jti) {
            return Ok(false);
        }
        // The answer is as old as the question: a revocation that lands while the list is
        // being asked is at most `ttl` away from being seen.
        let asked = Instant::now();
        let revoked = self.inner.is_revoked(jti).await?;
        if revoked {
            self.forget(jti);
        } else {
            self.remember(jti, asked);
        }
        Ok(revoked)
    }

    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), VerifyError> {
        self.forget(jti);
        let result = self.inner.revoke(jti, expires_at).await;
        // Asked between the two lines above, another request may have remembered the id
        // as not revoked: forget it again now that the list knows.
        self.forget(jti);
        result
    }
}

/// Refuses a revocation cache above [`MAX_REVOCATION_CACHE`].
pub(crate) fn check_revocation_cache(ttl: Duration) -> Result<(), crate::ConfigError> {
    if ttl > MAX_REVOCATION_CACHE {
        return Err(crate::ConfigError::OutOfRange {
            field: "revocation_cache",
            min: 0,
            max: MAX_REVOCATION_CACHE.as_secs(),
            value: u64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::verify::MemoryRevocations;

    /// A list that counts its questions and can be made to fail.
    #[derive(Default)]
    struct Counting {
        list: MemoryRevocations,
        asked: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl RevokedTokens for Counting {
        async fn is_revoked(&self, jti: &str) -> Result<bool, VerifyError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(VerifyError::unavailable("revocation list"));
            }
            self.list.is_revoked(jti).await
        }
        async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), VerifyError> {
            self.list.revoke(jti, expires_at).await
        }
    }

    const FAR: u64 = u64::MAX / 2;

    fn cached(inner: &Arc<Counting>, ttl: Duration, capacity: usize) -> CachedRevocations {
        CachedRevocations::new(inner.clone(), ttl, capacity).unwrap()
    }

    #[tokio::test]
    async fn a_not_revoked_answer_is_trusted_for_the_ttl_then_asked_again() {
        let inner = Arc::new(Counting::default());
        let c = cached(&inner, Duration::from_millis(300), 100);
        for _ in 0..5 {
            assert!(!c.is_revoked("a").await.unwrap());
        }
        assert_eq!(inner.asked.load(Ordering::SeqCst), 1);
        // Revoked behind the cache: seen once the ttl is over, and from then on.
        inner.revoke("a", FAR).await.unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(c.is_revoked("a").await.unwrap());
        assert!(c.is_revoked("a").await.unwrap());
        assert_eq!(
            inner.asked.load(Ordering::SeqCst),
            3,
            "revoked is never cached"
        );
    }

    #[tokio::test]
    async fn a_revocation_through_the_cache_takes_effect_at_once() {
        let inner = Arc::new(Counting::default());
        let c = cached(&inner, Duration::from_secs(60), 100);
        assert!(!c.is_revoked("a").await.unwrap());
        c.revoke("a", FAR).await.unwrap();
        assert!(c.is_revoked("a").await.unwrap());
    }

    #[tokio::test]
    async fn errors_fail_closed_and_are_not_cached() {
        let inner = Arc::new(Counting::default());
        let c = cached(&inner, Duration::from_secs(60), 100);
        inner.failing.store(true, Ordering::SeqCst);
        assert!(c.is_revoked("a").await.is_err());
        assert!(c.is_revoked("a").await.is_err());
        inner.failing.store(false, Ordering::SeqCst);
        assert!(!c.is_revoked("a").await.unwrap());
        assert_eq!(inner.asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn at_most_capacity_ids_are_remembered() {
        let inner = Arc::new(Counting::default());
        let c = cached(&inner, Duration::from_secs(60), 3);
        for id in ["a", "b", "c", "d"] {
            assert!(!c.is_revoked(id).await.unwrap());
        }
        let held = c.checked.lock().unwrap().len();
        assert!(held <= 3, "{held}");
        // What was dropped is asked again; nothing is ever answered wrongly.
        inner.revoke("a", FAR).await.unwrap();
        assert!(c.is_revoked("a").await.unwrap());
    }

    #[test]
    fn more_than_the_maximum_is_refused() {
        let list: Arc<dyn RevokedTokens> = Arc::new(MemoryRevocations::new());
        let e = CachedRevocations::new(list.clone(), Duration::from_secs(61), 10).unwrap_err();
        assert!(e.to_string().contains("revocation_cache"), "{e}");
        assert!(CachedRevocations::new(list, MAX_REVOCATION_CACHE, 1).is_ok());
    }

    #[tokio::test]
    async fn a_zero_ttl_asks_every_time() {
        let inner = Arc::new(Counting::default());
        let c = cached(&inner, Duration::ZERO, 0);
        for _ in 0..3 {
            assert!(!c.is_revoked("a").await.unwrap());
        }
        assert_eq!(inner.asked.load(Ordering::SeqCst), 3);
    }
}
