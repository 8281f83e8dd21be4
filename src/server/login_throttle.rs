//! Per-account throttling of failed sign-ins at the built-in login form.
//!
//! The per-address limit of login posts ([`login_rate_limit`]) stops one address from
//! guessing quickly, but an attacker with many addresses could still guess one user's
//! password at full speed. So failed sign-ins are also counted per account (user name), in
//! two token buckets, and every **failed** sign-in takes one token from both:
//!
//! - **per account and address** ([`login_account_rate_limit`]; bursts of 10, then 2 a
//!   minute, by default): the budget of one client address (an IPv4 address, or an IPv6
//!   `/64`, as for the per-address limits) for one account. An address that keeps failing
//!   for an account only spends its own budget: the user signing in from anywhere else is
//!   not slowed down at all, so one address cannot turn the throttle into a lockout button.
//! - **per account, all addresses together** ([`login_account_total_rate_limit`]; bursts of
//!   100, then 20 a minute, by default): the ceiling of guesses at one account from
//!   everywhere, which only an attack from many addresses can reach.
//!
//! While either bucket is empty the password is not checked at all and the login page says
//! to wait. Successful sign-ins cost nothing. Both tokens are reserved together, under one
//! lock, before the password is checked and given back when the check succeeds, so guesses
//! sent at the same time cannot all pass the budget while the first ones are still being
//! hashed.
//!
//! The buckets live in process (one budget per instance) and are keyed by a SHA-256 of the
//! user name (and of the address prefix), so the tables never hold the names people tried.
//! At most 16,384 accounts and 65,536 (account, address) pairs are tracked; when a table is
//! full, the bucket that has recovered most is forgotten first.
//!
//! The account-wide budget still lets an attacker who controls many addresses (with IPv6,
//! the `/64`s of one `/48` are enough) slow down a given user's sign-ins by failing on
//! purpose; raise [`login_account_total_rate_limit`] if that nuisance matters more than
//! the guessing rate it allows.
//!
//! [`login_rate_limit`]: super::AuthorizationServerBuilder::login_rate_limit
//! [`login_account_rate_limit`]: super::AuthorizationServerBuilder::login_account_rate_limit
//! [`login_account_total_rate_limit`]: super::AuthorizationServerBuilder::login_account_total_rate_limit

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::RateLimit;

/// Most accounts tracked at once (account-wide buckets).
const MAX_ACCOUNTS: usize = 16_384;
/// Most (account, address) pairs tracked at once.
const MAX_PAIRS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The budgets a failed sign-in is charged to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginBudgets {
    /// Per (account, client address).
    pub(crate) per_address: RateLimit,
    /// Per account, all addresses together.
    pub(crate) per_account: RateLimit,
}

/// One table of buckets, all refilling at the same rate.
#[derive(Debug)]
struct Table {
    buckets: HashMap<[u8; 32], Bucket>,
    max: usize,
}

/// The failed-sign-in buckets of one authorization server.
#[derive(Debug)]
pub(crate) struct AccountThrottle {
    tables: Mutex<(Table, Table)>,
}

fn account_key(account: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"account\0")
        .chain_update(account.as_bytes())
        .finalize()
        .into()
}

/// The key of (account, address): the address is reduced to its IPv4 address or IPv6
/// `/64` (the unit one subscriber holds); an unknown address is one shared key.
fn pair_key(account: &str, addr: Option<IpAddr>) -> [u8; 32] {
    let prefix: Vec<u8> = match addr.map(|a| a.to_canonical()) {
        None => vec![0],
        Some(IpAddr::V4(v4)) => [&[4u8][..], &v4.octets()].concat(),
        Some(IpAddr::V6(v6)) => [&[6u8][..], &v6.octets()[..8]].concat(),
    };
    // The account's length first, so no (account, address) can collide with another.
    Sha256::new()
        .chain_update(b"pair\0")
        .chain_update((account.len() as u64).to_le_bytes())
        .chain_update(account.as_bytes())
        .chain_update(&prefix)
        .finalize()
        .into()
}

fn refill(b: &mut Bucket, limit: RateLimit, now: Instant) {
    let capacity = f64::from(limit.burst.max(1));
    let per_sec = f64::from(limit.per_minute) / 60.0;
    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
    b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
    b.last = now;
}

impl Table {
    fn new(max: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            max,
        }
    }

    /// `Err(seconds to wait)` when `key`'s bucket has no whole token; nothing is taken.
    fn check(&mut self, key: &[u8; 32], limit: RateLimit, now: Instant) -> Result<(), u64> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let Some(b) = self.buckets.get_mut(key) else {
            return Ok(());
        };
        refill(b, limit, now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let per_sec = f64::from(limit.per_minute) / 60.0;
        let wait = (1.0 - b.tokens) / per_sec;
        // At most 60 s / per_minute ≤ 60: the cast cannot truncate.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a wait of at most 60 s, never negative"
        )]
        Err(wait.ceil().max(1.0) as u64)
    }

    /// Takes one token of `key`'s bucket (after [`check`](Self::check) said there is one).
    fn take(&mut self, key: [u8; 32], limit: RateLimit, now: Instant) {
        if limit.is_unlimited() {
            return;
        }
        if let Some(b) = self.buckets.get_mut(&key) {
            refill(b, limit, now);
            b.tokens -= 1.0;
            return;
        }
        if self.buckets.len() >= self.max {
            // Forget the bucket that has recovered most (it throttles least).
            for b in self.buckets.values_mut() {
                refill(b, limit, now);
            }
            if let Some(victim) = self
                .buckets
                .iter()
                .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&victim);
            }
        }
        self.buckets.insert(
            key,
            Bucket {
                tokens: f64::from(limit.burst.max(1)) - 1.0,
                last: now,
            },
        );
    }

    fn give_back(&mut self, key: &[u8; 32], limit: RateLimit, now: Instant) {
        if limit.is_unlimited() {
            return;
        }
        let capacity = f64::from(limit.burst.max(1));
        if let Some(b) = self.buckets.get_mut(key) {
            refill(b, limit, now);
            b.tokens = (b.tokens + 1.0).min(capacity);
        }
    }
}

impl AccountThrottle {
    pub(crate) fn new() -> Self {
        Self::with_capacity(MAX_PAIRS, MAX_ACCOUNTS)
    }

    fn with_capacity(max_pairs: usize, max_accounts: usize) -> Self {
        Self {
            tables: Mutex::new((Table::new(max_pairs), Table::new(max_accounts))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Table, Table)> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one token of both budgets of `account` signing in from `addr` **before** its
    /// password is checked, so attempts sent at the same time cannot all pass while the
    /// first ones are still being hashed (each reserves its own tokens, atomically: both or
    /// neither); `Err(seconds to wait)` when either budget is spent. An attempt that did
    /// not fail gives its tokens back with [`refund`](Self::refund), so successful sign-ins
    /// cost nothing.
    pub(crate) fn reserve(
        &self,
        account: &str,
        addr: Option<IpAddr>,
        budgets: LoginBudgets,
        now: Instant,
    ) -> Result<(), u64> {
        let (pk, ak) = (pair_key(account, addr), account_key(account));
        let mut guard = self.lock();
        let (pairs, accounts) = &mut *guard;
        let pair = pairs.check(&pk, budgets.per_address, now);
        let all = accounts.check(&ak, budgets.per_account, now);
        match (pair, all) {
            (Ok(()), Ok(())) => {
                pairs.take(pk, budgets.per_address, now);
                accounts.take(ak, budgets.per_account, now);
                Ok(())
            }
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(w), Ok(())) | (Ok(()), Err(w)) => Err(w),
        }
    }

    /// Gives back the tokens [`reserve`](Self::reserve) took, for an attempt that did not
    /// fail (the password was right, or it could not be checked).
    pub(crate) fn refund(
        &self,
        account: &str,
        addr: Option<IpAddr>,
        budgets: LoginBudgets,
        now: Instant,
    ) {
        let (pk, ak) = (pair_key(account, addr), account_key(account));
        let mut guard = self.lock();
        let (pairs, accounts) = &mut *guard;
        pairs.give_back(&pk, budgets.per_address, now);
        accounts.give_back(&ak, budgets.per_account, now);
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let g = self.lock();
        (g.0.buckets.len(), g.1.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Only the per-(account, address) budget counts.
    fn per_address(limit: RateLimit) -> LoginBudgets {
        LoginBudgets {
            per_address: limit,
            per_account: RateLimit::unlimited(),
        }
    }

    fn defaults() -> LoginBudgets {
        LoginBudgets {
            per_address: RateLimit::per_minute(2).with_burst(10),
            per_account: RateLimit::per_minute(20).with_burst(100),
        }
    }

    // issue 8 item 7: failed logins are throttled per account (from one address).
    #[test]
    fn failures_empty_the_account_bucket_and_it_refills() {
        let t = AccountThrottle::new();
        let b = per_address(RateLimit::per_minute(2).with_burst(3));
        let a = ip("192.0.2.1");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.reserve("alice", a, b, start), Ok(()));
        }
        let wait = t.reserve("alice", a, b, start).unwrap_err();
        assert_eq!(wait, 30);
        // Other accounts are not affected.
        assert_eq!(t.reserve("bob", a, b, start), Ok(()));
        // 30 s later one attempt is back (2 a minute).
        assert_eq!(
            t.reserve("alice", a, b, start + Duration::from_secs(31)),
            Ok(())
        );
    }

    // issue 8 item 7 (follow-up): one address failing for an account at the limit's own pace
    // forever does not lock the user out from another address. Before: one bucket per
    // account, kept empty by 2 wrong passwords a minute from anywhere.
    #[test]
    fn one_address_cannot_lock_the_account_out_elsewhere() {
        let t = AccountThrottle::new();
        let b = defaults();
        let attacker = ip("203.0.113.7");
        let user = ip("198.51.100.20");
        let start = Instant::now();
        let mut refused = 0;
        // An hour of guessing from one address, one attempt every 10 s.
        for s in (0..3600).step_by(10) {
            let now = start + Duration::from_secs(s);
            if t.reserve("alice", attacker, b, now).is_err() {
                refused += 1;
            }
            // The user, from home, is never held back.
            if s % 600 == 0 {
                assert_eq!(t.reserve("alice", user, b, now), Ok(()), "at {s} s");
                t.refund("alice", user, b, now);
            }
        }
        // The attacker got its burst and then 2 a minute, no more.
        assert!(refused >= 360 - 10 - 2 * 60 - 1, "refused only {refused}");
        // Other addresses of the attacker's IPv6 /64 share its budget.
        let v6 = ip("2001:db8:1:2::1");
        for _ in 0..10 {
            t.reserve("carol", v6, b, start).unwrap();
        }
        assert!(
            t.reserve("carol", ip("2001:db8:1:2:ffff::9"), b, start)
                .is_err()
        );
        assert_eq!(t.reserve("carol", ip("2001:db8:1:3::1"), b, start), Ok(()));
    }

    // issue 8 item 7 (follow-up): many addresses together still hit the account-wide
    // budget, and then even a fresh address is refused.
    #[test]
    fn many_addresses_hit_the_account_wide_budget() {
        let t = AccountThrottle::new();
        let b = defaults();
        let now = Instant::now();
        for i in 0..10u8 {
            for _ in 0..10 {
                let a = Some(IpAddr::from([198, 51, 100, i]));
                assert_eq!(t.reserve("alice", a, b, now), Ok(()));
            }
        }
        // 100 failures from 10 addresses: the account-wide burst is spent.
        let wait = t.reserve("alice", ip("192.0.2.99"), b, now).unwrap_err();
        assert!(
            (3..=4).contains(&wait),
            "20 a minute: one every 3 s, not {wait}"
        );
        // The refused attempt took nothing from the fresh address's own budget.
        let later = now + Duration::from_secs(4);
        assert_eq!(t.reserve("alice", ip("192.0.2.99"), b, later), Ok(()));
        assert!(t.reserve("alice", ip("192.0.2.98"), b, later).is_err());
        // Other accounts are not affected.
        assert_eq!(t.reserve("bob", ip("192.0.2.99"), b, now), Ok(()));
    }

    // A refusal by one budget takes no token from the other (both or neither).
    #[test]
    fn a_refused_attempt_takes_nothing() {
        let t = AccountThrottle::new();
        let b = LoginBudgets {
            per_address: RateLimit::per_minute(1).with_burst(1),
            per_account: RateLimit::per_minute(1).with_burst(3),
        };
        let now = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(t.reserve("alice", a, b, now), Ok(()));
        for _ in 0..10 {
            assert!(t.reserve("alice", a, b, now).is_err());
        }
        // The account-wide bucket still has 2 of 3.
        assert_eq!(t.reserve("alice", ip("192.0.2.2"), b, now), Ok(()));
        assert_eq!(t.reserve("alice", ip("192.0.2.3"), b, now), Ok(()));
        assert!(t.reserve("alice", ip("192.0.2.4"), b, now).is_err());
    }

    #[test]
    fn unlimited_never_throttles_or_grows() {
        let t = AccountThrottle::new();
        let now = Instant::now();
        let b = LoginBudgets {
            per_address: RateLimit::unlimited(),
            per_account: RateLimit::unlimited(),
        };
        for _ in 0..100 {
            assert_eq!(t.reserve("alice", None, b, now), Ok(()));
        }
        assert_eq!(t.len(), (0, 0));
    }

    #[test]
    fn table_is_bounded_and_keeps_the_most_throttled() {
        let t = AccountThrottle::with_capacity(4, 4);
        let b = LoginBudgets {
            per_address: RateLimit::per_minute(1).with_burst(2),
            per_account: RateLimit::per_minute(1).with_burst(2),
        };
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(t.reserve("victim", None, b, now), Ok(()));
        }
        for i in 0..50 {
            let _ = t.reserve(&format!("spray{i}"), None, b, now);
        }
        let (pairs, accounts) = t.len();
        assert!(pairs <= 4 && accounts <= 4);
        assert!(
            t.reserve("victim", None, b, now).is_err(),
            "the throttled account was evicted"
        );
    }

    // issue 8 item 7 (review): a refunded reservation (a right password) costs nothing.
    #[test]
    fn refunded_reservations_cost_nothing() {
        let t = AccountThrottle::new();
        let one = RateLimit::per_minute(1).with_burst(1);
        let b = LoginBudgets {
            per_address: one,
            per_account: one,
        };
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.reserve("alice", None, b, now), Ok(()));
            t.refund("alice", None, b, now);
        }
        assert_eq!(t.reserve("alice", None, b, now), Ok(()));
        assert!(t.reserve("alice", None, b, now).is_err());
        assert!(t.reserve("alice", ip("192.0.2.1"), b, now).is_err());
    }
}
