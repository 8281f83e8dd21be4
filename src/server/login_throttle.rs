//! Per-account throttling of failed sign-ins at the built-in login form.
//!
//! The per-address limit of login posts ([`login_rate_limit`]) stops one address from
//! guessing quickly, but an attacker with many addresses could still guess one user's
//! password at full speed. So each account (user name) also has a token bucket
//! ([`login_account_rate_limit`]): every **failed** sign-in takes one token, and while the
//! bucket is empty the password is not checked at all and the login page says to wait.
//! Successful sign-ins cost nothing. The token is reserved before the password is checked
//! and given back when the check succeeds, so guesses sent at the same time cannot all
//! pass the budget while the first ones are still being hashed.
//!
//! The buckets live in process (one budget per instance) and are keyed by a SHA-256 of the
//! user name, so the table never holds the names people tried. At most 16,384 accounts are
//! tracked; when full, the bucket that has recovered most is forgotten first.
//!
//! Throttling per account lets anyone slow down a given user's sign-ins by failing on
//! purpose; the defaults (bursts of 10 failures, then 2 a minute) keep that nuisance small
//! while making online guessing useless.
//!
//! [`login_rate_limit`]: super::AuthorizationServerBuilder::login_rate_limit
//! [`login_account_rate_limit`]: super::AuthorizationServerBuilder::login_account_rate_limit

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::RateLimit;

/// Most accounts tracked at once.
const MAX_ACCOUNTS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The failed-sign-in buckets of one authorization server.
#[derive(Debug)]
pub(crate) struct AccountThrottle {
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
    max_accounts: usize,
}

fn key(account: &str) -> [u8; 32] {
    Sha256::digest(account.as_bytes()).into()
}

fn refill(b: &mut Bucket, limit: RateLimit, now: Instant) {
    let capacity = f64::from(limit.burst.max(1));
    let per_sec = f64::from(limit.per_minute) / 60.0;
    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
    b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
    b.last = now;
}

impl AccountThrottle {
    pub(crate) fn new() -> Self {
        Self::with_capacity(MAX_ACCOUNTS)
    }

    fn with_capacity(max_accounts: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            max_accounts,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one token of `account`'s budget **before** its password is checked, so
    /// attempts sent at the same time cannot all pass while the first ones are still being
    /// hashed (each reserves its own token, atomically); `Err(seconds to wait)` when the
    /// budget is spent. An attempt that did not fail gives its token back with
    /// [`refund`](Self::refund), so successful sign-ins cost nothing.
    pub(crate) fn reserve(&self, account: &str, limit: RateLimit, now: Instant) -> Result<(), u64> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let capacity = f64::from(limit.burst.max(1));
        let mut map = self.lock();
        let k = key(account);
        if let Some(b) = map.get_mut(&k) {
            refill(b, limit, now);
            if b.tokens < 1.0 {
                let per_sec = f64::from(limit.per_minute) / 60.0;
                let wait = (1.0 - b.tokens) / per_sec;
                // At most 60 s / per_minute ≤ 60: the cast cannot truncate.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                return Err(wait.ceil().max(1.0) as u64);
            }
            b.tokens -= 1.0;
            return Ok(());
        }
        if map.len() >= self.max_accounts {
            // Forget the bucket that has recovered most (it throttles least).
            for b in map.values_mut() {
                refill(b, limit, now);
            }
            if let Some(victim) = map
                .iter()
                .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                .map(|(k, _)| *k)
            {
                map.remove(&victim);
            }
        }
        map.insert(
            k,
            Bucket {
                tokens: capacity - 1.0,
                last: now,
            },
        );
        Ok(())
    }

    /// Gives back the token [`reserve`](Self::reserve) took, for an attempt that did not
    /// fail (the password was right, or it could not be checked).
    pub(crate) fn refund(&self, account: &str, limit: RateLimit, now: Instant) {
        if limit.is_unlimited() {
            return;
        }
        let capacity = f64::from(limit.burst.max(1));
        if let Some(b) = self.lock().get_mut(&key(account)) {
            refill(b, limit, now);
            b.tokens = (b.tokens + 1.0).min(capacity);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // issue 8 item 7: failed logins are throttled per account, whatever the address.
    #[test]
    fn failures_empty_the_account_bucket_and_it_refills() {
        let t = AccountThrottle::new();
        let limit = RateLimit::per_minute(2).with_burst(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.reserve("alice", limit, start), Ok(()));
        }
        let wait = t.reserve("alice", limit, start).unwrap_err();
        assert_eq!(wait, 30);
        // Other accounts are not affected.
        assert_eq!(t.reserve("bob", limit, start), Ok(()));
        // 30 s later one attempt is back (2 a minute).
        assert_eq!(
            t.reserve("alice", limit, start + Duration::from_secs(31)),
            Ok(())
        );
    }

    #[test]
    fn unlimited_never_throttles_or_grows() {
        let t = AccountThrottle::new();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(t.reserve("alice", RateLimit::unlimited(), now), Ok(()));
        }
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn table_is_bounded_and_keeps_the_most_throttled() {
        let t = AccountThrottle::with_capacity(4);
        let limit = RateLimit::per_minute(1).with_burst(2);
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(t.reserve("victim", limit, now), Ok(()));
        }
        for i in 0..50 {
            let _ = t.reserve(&format!("spray{i}"), limit, now);
        }
        assert!(t.len() <= 4);
        assert!(
            t.reserve("victim", limit, now).is_err(),
            "the throttled account was evicted"
        );
    }

    // issue 8 item 7 (review): a refunded reservation (a right password) costs nothing.
    #[test]
    fn refunded_reservations_cost_nothing() {
        let t = AccountThrottle::new();
        let limit = RateLimit::per_minute(1).with_burst(1);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.reserve("alice", limit, now), Ok(()));
            t.refund("alice", limit, now);
        }
        assert_eq!(t.reserve("alice", limit, now), Ok(()));
        assert!(t.reserve("alice", limit, now).is_err());
    }
}
