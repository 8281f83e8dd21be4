//! The contract of [`ClientStore::sweep_idle_clients`] and of [`RateLimitStore`]. Not part
//! of [`run_all`](super::run_all), which every store passes: a store that keeps the default
//! `sweep_idle_clients` (keep every client) or has no shared counters runs only what it
//! offers, with [`run_retention`] and [`run_rate_limits`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::{
    Client, ClientFingerprint, ClientSource, ClientStore, GrantStore, SecretHash, now, ok,
    sample_client, sample_code, sample_family, sample_pending, uid,
};
use crate::store::{RateLimitStore, StoreError};

/// How long ago the idle clients of these checks were last used (seconds).
pub const IDLE_AGE: u64 = 10_000;
/// The cutoff the checks sweep with, before `now` (seconds): clients last used before
/// `now - IDLE_CUTOFF` are idle. Anything the rest of the kit stores is newer.
pub const IDLE_CUTOFF: u64 = 5_000;
/// Rounds of [`touch_during_idle_sweep`].
pub const TOUCH_RACE_ROUNDS: usize = 20;
/// Concurrent hits in [`concurrent_rate_limit_hits`].
pub const RATE_LIMIT_RACERS: usize = 40;
/// The limit [`concurrent_rate_limit_hits`] races against.
pub const RATE_LIMIT: u32 = 7;

/// Runs the client-retention checks: [`idle_clients_removed`], [`unused_clients_removed`],
/// [`client_fingerprints`] (registration deduplication), [`clients_in_use_kept`],
/// [`static_clients_kept`], [`touch_during_idle_sweep`]. Run them against a **dedicated**
/// store: they sweep every dynamic client idle for more than [`IDLE_CUTOFF`] seconds.
///
/// # Panics
/// When the store breaks a rule (the message names it) or fails.
pub async fn run_retention<S: ClientStore + GrantStore>(store: Arc<S>) {
    idle_clients_removed(&*store).await;
    unused_clients_removed(&*store).await;
    client_fingerprints(&*store).await;
    clients_in_use_kept(&*store).await;
    static_clients_kept(&*store).await;
    touch_during_idle_sweep(store).await;
}

/// Runs the rate-limit checks: [`concurrent_rate_limit_hits`], [`rate_limit_window`].
///
/// # Panics
/// When the store breaks a rule (the message names it) or fails.
pub async fn run_rate_limits<S: RateLimitStore>(store: Arc<S>) {
    concurrent_rate_limit_hits(store.clone()).await;
    rate_limit_window(&*store).await;
}

/// A dynamic client last used (or, when `used` is `false`, registered and never used)
/// [`IDLE_AGE`] seconds ago.
fn idle_client(id: &str, used: bool) -> Client {
    let mut c = sample_client(id);
    if used {
        c.issued_at = now() - 2 * IDLE_AGE;
        c.last_used_at = now() - IDLE_AGE;
    } else {
        c.issued_at = now() - IDLE_AGE;
        c.last_used_at = 0;
    }
    c
}

async fn insert<S: ClientStore + ?Sized>(store: &S, client: Client) -> String {
    let id = client.client_id.clone();
    ok("insert_client", store.insert_client(client).await);
    id
}

async fn sweep<S: ClientStore + ?Sized>(store: &S) -> u64 {
    let n = now();
    ok(
        "sweep_idle_clients",
        store.sweep_idle_clients(n - IDLE_CUTOFF, n).await,
    )
}

async fn exists<S: ClientStore + ?Sized>(store: &S, id: &str) -> bool {
    ok("get_client", store.get_client(id).await).is_some()
}

/// Idle dynamic clients go (never used since registration, or last used long ago), and are
/// counted; recently used or recently registered ones stay; a second sweep finds nothing
/// more of them.
pub async fn idle_clients_removed<S: ClientStore + ?Sized>(store: &S) {
    let never_used = insert(store, idle_client(&uid("idle"), false)).await;
    let long_ago = insert(store, idle_client(&uid("idle"), true)).await;
    let mut recent = idle_client(&uid("recent"), true);
    recent.last_used_at = now() - 60;
    let recent = insert(store, recent).await;
    let new = insert(store, sample_client(&uid("new"))).await;

    let removed = sweep(store).await;
    assert!(
        removed >= 2,
        "store contract: sweep_idle_clients must remove (and count) idle dynamic clients; reported {removed}"
    );
    assert!(
        !exists(store, &never_used).await,
        "store contract: a dynamic client registered long ago and never used must be swept"
    );
    assert!(
        !exists(store, &long_ago).await,
        "store contract: a dynamic client last used before the cutoff must be swept"
    );
    assert!(
        exists(store, &recent).await,
        "store contract: a client used after the cutoff must be kept, however old its registration"
    );
    assert!(
        exists(store, &new).await,
        "store contract: a client registered after the cutoff must be kept"
    );
    sweep(store).await;
    assert!(
        exists(store, &recent).await && exists(store, &new).await,
        "store contract: sweeping again must keep what the first sweep kept"
    );
    for id in [recent, new] {
        ok("delete_client", store.delete_client(&id).await);
    }
}

/// [`ClientStore::sweep_unused_clients`]: a dynamic client never used and registered before
/// the cutoff goes (with nothing live); one used once, however long ago, stays (that is the
/// idle rule's business); a recent one stays; one holding a live refresh family, an
/// unexpired code or an unexpired pending request stays; a static one stays.
pub async fn unused_clients_removed<S: ClientStore + GrantStore + ?Sized>(store: &S) {
    let n = now();
    let unused = insert(store, idle_client(&uid("unused"), false)).await;
    let used_long_ago = insert(store, idle_client(&uid("used"), true)).await;
    let recent = insert(store, sample_client(&uid("recent-unused"))).await;

    let with_pending = insert(store, idle_client(&uid("unused-pending"), false)).await;
    let mut pending = sample_pending(n + 600);
    pending.client_id.clone_from(&with_pending);
    ok(
        "put_pending",
        store.put_pending(&uid("pending"), pending).await,
    );
    let with_code = insert(store, idle_client(&uid("unused-code"), false)).await;
    ok(
        "put_code",
        store
            .put_code(
                SecretHash::of(&uid("code")),
                sample_code(&with_code, n + 60),
            )
            .await,
    );
    let with_family = insert(store, idle_client(&uid("unused-fam"), false)).await;
    let mut family = sample_family(&uid("fam"), n + 3600);
    family.client_id.clone_from(&with_family);
    ok("create_family", store.create_family(family, None).await);
    let mut configured = idle_client(&uid("unused-static"), false);
    configured.source = ClientSource::Static;
    let configured = insert(store, configured).await;

    let removed = ok(
        "sweep_unused_clients",
        store.sweep_unused_clients(n - IDLE_CUTOFF, n).await,
    );
    assert!(
        removed >= 1,
        "store contract: sweep_unused_clients must remove (and count) never-used dynamic clients registered before the cutoff; reported {removed}"
    );
    assert!(
        !exists(store, &unused).await,
        "store contract: a dynamic client registered before the cutoff and never used must be swept by sweep_unused_clients"
    );
    for (id, what) in [
        (&used_long_ago, "a client used once, however long ago"),
        (&recent, "a client registered after the cutoff"),
        (
            &with_pending,
            "a client holding an unexpired pending request",
        ),
        (&with_code, "a client holding an unexpired code"),
        (&with_family, "a client holding a live refresh family"),
        (&configured, "a static client"),
    ] {
        assert!(
            exists(store, id).await,
            "store contract: sweep_unused_clients must keep {what}"
        );
    }
    for id in [
        used_long_ago,
        recent,
        with_pending,
        with_code,
        with_family,
        configured,
    ] {
        ok("delete_client", store.delete_client(&id).await);
    }
}

/// [`ClientStore::insert_client_with_fingerprint`] and
/// [`ClientStore::find_client_by_fingerprint`]: the client filed under a fingerprint is found
/// (with its recorded use), the newest of two wins, another fingerprint finds nothing, a
/// taken id is a conflict, and a deleted client is never returned.
pub async fn client_fingerprints<S: ClientStore + ?Sized>(store: &S) {
    let fp = ClientFingerprint(SecretHash::of(&uid("fp")).0);
    let other = ClientFingerprint(SecretHash::of(&uid("fp")).0);
    let mut first = sample_client(&uid("fp-first"));
    first.secret_hash = None;
    first.issued_at = now() - 10;
    ok(
        "insert_client_with_fingerprint",
        store
            .insert_client_with_fingerprint(first.clone(), &fp)
            .await,
    );
    let found = ok(
        "find_client_by_fingerprint",
        store.find_client_by_fingerprint(&fp).await,
    );
    assert_eq!(
        found.as_ref().map(|c| c.client_id.as_str()),
        Some(first.client_id.as_str()),
        "store contract: find_client_by_fingerprint must find the client filed under the fingerprint"
    );
    assert_eq!(
        found,
        Some(first.clone()),
        "store contract: the client found by fingerprint must be the client stored"
    );
    assert!(
        ok(
            "find_client_by_fingerprint",
            store.find_client_by_fingerprint(&other).await
        )
        .is_none(),
        "store contract: another fingerprint must find nothing"
    );
    let mut duplicate = sample_client(&first.client_id);
    duplicate.client_name = Some("someone else".to_owned());
    assert!(
        matches!(
            store
                .insert_client_with_fingerprint(duplicate, &other)
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: insert_client_with_fingerprint must refuse a taken id with Conflict"
    );
    let used_at = now();
    ok(
        "touch_client",
        store.touch_client(&first.client_id, used_at).await,
    );
    let found = ok(
        "find_client_by_fingerprint",
        store.find_client_by_fingerprint(&fp).await,
    );
    assert_eq!(
        found.map(|c| c.last_used_at),
        Some(used_at),
        "store contract: the client found by fingerprint must carry its recorded use"
    );

    let mut second = sample_client(&uid("fp-second"));
    second.secret_hash = None;
    ok(
        "insert_client_with_fingerprint",
        store
            .insert_client_with_fingerprint(second.clone(), &fp)
            .await,
    );
    let found = ok(
        "find_client_by_fingerprint",
        store.find_client_by_fingerprint(&fp).await,
    );
    assert_eq!(
        found.map(|c| c.client_id),
        Some(second.client_id.clone()),
        "store contract: the newest client filed under a fingerprint must win"
    );
    ok(
        "delete_client",
        store.delete_client(&second.client_id).await,
    );
    let found = ok(
        "find_client_by_fingerprint",
        store.find_client_by_fingerprint(&fp).await,
    );
    assert!(
        found
            .as_ref()
            .is_none_or(|c| c.client_id == first.client_id),
        "store contract: a deleted client must never be found by fingerprint"
    );
    ok("delete_client", store.delete_client(&first.client_id).await);
    assert!(
        ok(
            "find_client_by_fingerprint",
            store.find_client_by_fingerprint(&fp).await
        )
        .is_none(),
        "store contract: with every client filed under it deleted, a fingerprint finds nothing"
    );
}

/// An idle client that still holds something live is in use and kept: a live refresh
/// family, an unredeemed unexpired authorization code, an unexpired pending authorization
/// request. Expired or revoked leftovers do not keep it. (A redeemed code is not checked:
/// the token endpoint creates its family in the same request.)
pub async fn clients_in_use_kept<S: ClientStore + GrantStore + ?Sized>(store: &S) {
    let n = now();
    let with_family = insert(store, idle_client(&uid("fam-holder"), true)).await;
    let mut family = sample_family(&uid("fam"), n + 3600);
    family.client_id.clone_from(&with_family);
    ok(
        "create_family",
        store
            .create_family(family, Some(SecretHash::of(&uid("rt"))))
            .await,
    );

    let with_code = insert(store, idle_client(&uid("code-holder"), true)).await;
    let code = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store.put_code(code, sample_code(&with_code, n + 60)).await,
    );
    let with_pending = insert(store, idle_client(&uid("pending-holder"), false)).await;
    let mut pending = sample_pending(n + 600);
    pending.client_id.clone_from(&with_pending);
    ok(
        "put_pending",
        store.put_pending(&uid("pending"), pending).await,
    );

    let with_revoked = insert(store, idle_client(&uid("revoked-holder"), true)).await;
    let mut revoked = sample_family(&uid("fam"), n + 3600);
    revoked.client_id.clone_from(&with_revoked);
    let revoked_id = revoked.family_id.clone();
    ok("create_family", store.create_family(revoked, None).await);
    ok("revoke_family", store.revoke_family(&revoked_id, n).await);

    let with_expired = insert(store, idle_client(&uid("expired-holder"), true)).await;
    let mut expired = sample_family(&uid("fam"), n - 1);
    expired.client_id.clone_from(&with_expired);
    ok("create_family", store.create_family(expired, None).await);
    ok(
        "put_code",
        store
            .put_code(
                SecretHash::of(&uid("code")),
                sample_code(&with_expired, n - 1),
            )
            .await,
    );
    let mut stale = sample_pending(n - 1);
    stale.client_id.clone_from(&with_expired);
    ok(
        "put_pending",
        store.put_pending(&uid("pending"), stale).await,
    );

    sweep(store).await;
    for (id, what) in [
        (&with_family, "a live refresh family"),
        (&with_code, "an unexpired authorization code"),
        (&with_pending, "an unexpired pending authorization request"),
    ] {
        assert!(
            exists(store, id).await,
            "store contract: sweep_idle_clients must keep an idle client holding {what}"
        );
    }
    assert!(
        !exists(store, &with_revoked).await,
        "store contract: a revoked family must not keep an idle client"
    );
    assert!(
        !exists(store, &with_expired).await,
        "store contract: an expired family, code or pending request must not keep an idle client"
    );
    for id in [with_family, with_code, with_pending] {
        ok("delete_client", store.delete_client(&id).await);
    }
}

/// Static clients are never swept, however idle.
pub async fn static_clients_kept<S: ClientStore + ?Sized>(store: &S) {
    let mut c = idle_client(&uid("static"), false);
    c.source = ClientSource::Static;
    let id = c.client_id.clone();
    ok("upsert_client", store.upsert_client(c).await);
    sweep(store).await;
    assert!(
        exists(store, &id).await,
        "store contract: sweep_idle_clients must never remove a static client"
    );
    ok("delete_client", store.delete_client(&id).await);
}

/// A touch racing the sweep is never lost: in every round an idle client is touched while a
/// sweep runs; when the touch is followed by a successful read, the client must survive the
/// sweep (the sweep's check and delete are one step, so it either deleted the client before
/// the touch or saw the touch). A client touched before the sweep always stays.
pub async fn touch_during_idle_sweep<S: ClientStore>(store: Arc<S>) {
    let id = insert(&*store, idle_client(&uid("touched"), false)).await;
    ok("touch_client", store.touch_client(&id, now()).await);
    sweep(&*store).await;
    assert!(
        exists(&*store, &id).await,
        "store contract: a client touched before the sweep must be kept"
    );
    ok("delete_client", store.delete_client(&id).await);

    let mut survived = 0;
    for _ in 0..TOUCH_RACE_ROUNDS {
        let id = insert(&*store, idle_client(&uid("racing"), true)).await;
        let barrier = Arc::new(Barrier::new(2));
        let (s, b) = (store.clone(), barrier.clone());
        let sweeper = tokio::spawn(async move {
            b.wait().await;
            sweep(&*s).await
        });
        let (s, b, i) = (store.clone(), barrier, id.clone());
        let toucher = tokio::spawn(async move {
            b.wait().await;
            ok("touch_client", s.touch_client(&i, now()).await);
            exists(&*s, &i).await
        });
        let seen_after_touch = match toucher.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Err(e) = sweeper.await {
            std::panic::resume_unwind(e.into_panic());
        }
        if seen_after_touch {
            survived += 1;
            assert!(
                exists(&*store, &id).await,
                "store contract: a client touched (and read back) during a sweep must not be deleted by it"
            );
            ok("delete_client", store.delete_client(&id).await);
        }
    }
    // Which side wins each round is up to the scheduler; the rule holds either way.
    let _ = survived;
}

async fn hit<S: RateLimitStore + ?Sized>(
    store: &S,
    key: &str,
    limit: u32,
    window: Duration,
    now_ms: u64,
) -> crate::store::RateLimitDecision {
    match store.hit(key, limit, window, now_ms).await {
        Ok(d) => d,
        Err(e) => panic!("store contract: rate-limit hit failed: {e}"),
    }
}

fn now_ms() -> u64 {
    crate::store::rate_limit::now_ms()
}

/// [`RATE_LIMIT_RACERS`] concurrent hits on a fresh key with a limit of [`RATE_LIMIT`]:
/// exactly [`RATE_LIMIT`] are allowed, with distinct `remaining` counts down to zero; the
/// refused ones say how long to wait.
pub async fn concurrent_rate_limit_hits<S: RateLimitStore>(store: Arc<S>) {
    let key = format!("testkit:{}", uid("race"));
    let t = now_ms();
    let window = Duration::from_secs(60);
    let barrier = Arc::new(Barrier::new(RATE_LIMIT_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..RATE_LIMIT_RACERS {
        let (s, b, k) = (store.clone(), barrier.clone(), key.clone());
        set.spawn(async move {
            b.wait().await;
            s.hit(&k, RATE_LIMIT, window, t).await
        });
    }
    let mut allowed = Vec::new();
    let mut refused = 0;
    while let Some(r) = set.join_next().await {
        let d = match r {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => panic!("store contract: rate-limit hit failed: {e}"),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if d.allowed {
            assert_eq!(d.retry_after, Duration::ZERO);
            allowed.push(d.remaining);
        } else {
            assert!(
                d.retry_after > Duration::ZERO && d.remaining == 0,
                "store contract: a refused hit must say how long to wait ({d:?})"
            );
            refused += 1;
        }
    }
    allowed.sort_unstable();
    let expected: Vec<u32> = (0..RATE_LIMIT).collect();
    assert_eq!(
        allowed, expected,
        "store contract: of {RATE_LIMIT_RACERS} concurrent hits with limit {RATE_LIMIT}, exactly {RATE_LIMIT} must pass, counting down"
    );
    assert_eq!(refused, RATE_LIMIT_RACERS - RATE_LIMIT as usize);
}

/// The budget refills: 3 a minute lets 3 through at once and refuses the 4th for 20 s; 20 s
/// later one more (and only one) passes; once a whole window has passed since the bucket
/// was last drained, all 3 pass again. Keys are independent, and sweeping full buckets
/// changes nothing.
pub async fn rate_limit_window<S: RateLimitStore + ?Sized>(store: &S) {
    let key = format!("testkit:{}", uid("window"));
    let other = format!("testkit:{}", uid("window"));
    let w = Duration::from_secs(60);
    let t0 = now_ms();
    for expected in [2, 1, 0] {
        let d = hit(store, &key, 3, w, t0).await;
        assert!(
            d.allowed && d.remaining == expected,
            "store contract: a hit within the limit must pass with {expected} remaining ({d:?})"
        );
    }
    let d = hit(store, &key, 3, w, t0).await;
    assert!(
        !d.allowed && d.retry_after == Duration::from_secs(20),
        "store contract: the 4th hit of 3 a minute must be refused for 20 s ({d:?})"
    );
    assert!(
        hit(store, &other, 3, w, t0).await.allowed,
        "store contract: another key must have its own budget"
    );
    let d = hit(store, &key, 3, w, t0 + 5_000).await;
    assert!(
        !d.allowed && d.retry_after == Duration::from_secs(15),
        "store contract: a refused hit must not consume budget, and the wait must shrink ({d:?})"
    );
    assert!(
        hit(store, &key, 3, w, t0 + 20_000).await.allowed,
        "store contract: after a third of the window one more hit must pass"
    );
    assert!(
        !hit(store, &key, 3, w, t0 + 20_000).await.allowed,
        "store contract: only one hit may pass per refill interval"
    );
    // Drained at t0 + 20 s; full again a window later.
    let reset = t0 + 80_000;
    let swept = store.sweep_rate_limits(reset).await;
    assert!(
        swept.is_ok(),
        "store contract: sweep_rate_limits failed: {}",
        swept.map_or_else(|e: StoreError| e.to_string(), |_| String::new())
    );
    for expected in [2, 1, 0] {
        let d = hit(store, &key, 3, w, reset).await;
        assert!(
            d.allowed && d.remaining == expected,
            "store contract: a whole window after the last drain the budget must be full again ({d:?})"
        );
    }
    assert!(!hit(store, &key, 3, w, reset).await.allowed);
}
