//! The buckets, budgets and keys of the per-address rate limits.

use super::*;

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn no_address_is_its_own_key() {
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

/// Issue 8 item 7. This test used to assert the old behaviour (a full table sent every
/// new address into one shared overflow bucket, which the 9th address drained for all
/// the others); it now asserts the fix: every address keeps a bucket of its own, churn
/// evicts the buckets closest to full, and a drained bucket survives the churn.
#[test]
fn churn_never_shares_a_bucket_and_cannot_evict_a_drained_one() {
    let l = Limiter::with_capacity(8);
    let limit = RateLimit::per_minute(10);
    let t0 = Instant::now();
    let v4 = |i: u32| ClientKey::of(Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
    // The attacker's own address, drained.
    let attacker = ClientKey::of(Some(ip("203.0.113.66")));
    for _ in 0..10 {
        assert!(l.take(LimitKind::Register, attacker, limit, t0).is_ok());
    }
    assert!(l.take(LimitKind::Register, attacker, limit, t0).is_err());
    // 100 churned addresses, each with a budget of its own: none is refused, the table
    // stays at its cap.
    for i in 0..100u32 {
        let later = t0 + Duration::from_millis(u64::from(i));
        assert!(
            l.take(LimitKind::Register, v4(i), limit, later).is_ok(),
            "address {i} was pushed into a shared bucket"
        );
        assert!(l.len() <= 8);
    }
    // A legitimate newcomer after the churn is not throttled by it.
    let newcomer = ClientKey::of(Some(ip("192.0.2.10")));
    let t1 = t0 + Duration::from_millis(200);
    assert!(l.take(LimitKind::Register, newcomer, limit, t1).is_ok());
    // The attacker's drained bucket was never evicted: still refused.
    assert!(l.take(LimitKind::Register, attacker, limit, t1).is_err());
    // Buckets that are full again are forgotten.
    let later = t0 + Duration::from_secs(120);
    let k = ClientKey::of(Some(ip("192.0.2.77")));
    assert!(l.take(LimitKind::Register, k, limit, later).is_ok());
    assert_eq!(l.len(), 1);
}

/// With a burst of one every used bucket is equally drained; evicting the oldest is then
/// the rule, and winning one request back costs an attacker as many fresh addresses as
/// the table holds.
#[test]
fn escaping_by_eviction_costs_a_table_full_of_addresses() {
    let l = Limiter::with_capacity(8);
    let limit = RateLimit::per_minute(1);
    let t0 = Instant::now();
    let attacker = ClientKey::of(Some(ip("203.0.113.66")));
    assert!(l.take(LimitKind::Register, attacker, limit, t0).is_ok());
    let at = |i: u32| t0 + Duration::from_millis(u64::from(i) + 1);
    for i in 0..8u32 {
        let k = ClientKey::of(Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
        assert!(
            l.take(LimitKind::Register, attacker, limit, at(i)).is_err(),
            "after {i} new addresses the attacker is still refused"
        );
        assert!(l.take(LimitKind::Register, k, limit, at(i)).is_ok());
    }
    // Only a table full (8) of drained fresh addresses evicted it: one request back.
    assert!(l.take(LimitKind::Register, attacker, limit, at(8)).is_ok());
    assert!(l.take(LimitKind::Register, attacker, limit, at(8)).is_err());
}

/// Issue 8 item 7: IPv6 clients share one bucket per `/64`, so rotating through the
/// addresses of one `/64` does not escape the limit.
#[test]
fn ipv6_addresses_of_one_64_share_a_bucket() {
    let l = Limiter::new();
    let limit = RateLimit::per_minute(2);
    let t0 = Instant::now();
    let a = ClientKey::of(Some(ip("2001:db8:1:2::1")));
    let b = ClientKey::of(Some(ip("2001:db8:1:2:ffff:ffff:ffff:fffe")));
    let c = ClientKey::of(Some(ip("2001:db8:1:3::1")));
    assert!(l.take(LimitKind::Token, a, limit, t0).is_ok());
    assert!(l.take(LimitKind::Token, b, limit, t0).is_ok());
    assert!(l.take(LimitKind::Token, a, limit, t0).is_err());
    assert!(l.take(LimitKind::Token, b, limit, t0).is_err());
    assert!(l.take(LimitKind::Token, c, limit, t0).is_ok());
}
