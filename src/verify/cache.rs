use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::context::AuthContext;

const SHARDS: usize = 16;

/// A bounded cache of successful verifications, keyed by the SHA-256 of the token.
///
/// The raw token is never stored. An entry lives no longer than the token's `exp` and no
/// longer than the TTL given at insertion, so caching never extends a token's life; the layer
/// still calls [`TokenVerifier::recheck`](super::TokenVerifier::recheck) on every hit, so a
/// revocation takes effect at once (or within
/// [`revocation_cache`](crate::McpOAuthConfigBuilder::revocation_cache), when set).
///
/// ```
/// use std::time::Duration;
/// use mcp_oauth::{AuthContext, TokenKind};
/// use mcp_oauth::verify::TokenCache;
///
/// let cache = TokenCache::new(1_000);
/// cache.insert("tok", AuthContext::new("alice", TokenKind::Custom), Duration::from_secs(30));
/// assert_eq!(cache.get("tok").unwrap().subject(), "alice");
/// assert!(cache.get("other").is_none());
/// ```
#[derive(Debug)]
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
}

#[derive(Debug)]
struct Entry {
    ctx: AuthContext,
    until: Instant,
}

impl TokenCache {
    /// A cache holding at most about `capacity` entries.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
        }
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// The cached context for `token`, if present and still fresh.
    #[must_use]
    pub fn get(&self, token: &str) -> Option<AuthContext> {
        let key = Self::key(token);
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match shard.get(&key) {
            Some(entry) if entry.until > Instant::now() => Some(entry.ctx.clone()),
            Some(_) => {
                shard.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches `ctx` for `token` for at most `ttl`, and never past the token's expiry.
    pub fn insert(&self, token: &str, ctx: AuthContext, ttl: Duration) {
        let mut ttl = ttl;
        if let Some(exp) = ctx.expires_at() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ttl = ttl.min(Duration::from_secs(exp.saturating_sub(now)));
        }
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let key = Self::key(token);
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| e.until > now);
            if shard.len() >= self.per_shard {
                // Still full of live entries: drop one arbitrary entry. A miss only costs a
                // fresh verification, never a wrong answer.
                if let Some(k) = shard.keys().next().copied() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                ctx,
                until: now + ttl,
            },
        );
    }

    /// Forgets `token` (for example after it was revoked through this process).
    pub fn remove(&self, token: &str) {
        let key = Self::key(token);
        self.shard(&key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
    }

    /// How many entries are held (fresh or not yet swept).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::TokenKind;

    #[test]
    fn never_outlives_exp_and_stays_bounded() {
        let cache = TokenCache::new(32);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expired = AuthContext::new("a", TokenKind::Jwt).with_expires_at(now - 1);
        cache.insert("t1", expired, Duration::from_secs(60));
        assert!(
            cache.get("t1").is_none(),
            "an expired token must not be cached"
        );
        for i in 0..1000 {
            cache.insert(
                &format!("tok{i}"),
                AuthContext::new("a", TokenKind::Jwt),
                Duration::from_secs(60),
            );
        }
        assert!(cache.len() <= 32 + SHARDS, "cache grew to {}", cache.len());
    }
}
