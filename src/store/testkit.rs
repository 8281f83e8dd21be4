//! The contract every [`ClientStore`] + [`GrantStore`] must meet, as runnable checks.
//!
//! This module is behind the `testkit` feature (off by default). It is for people writing
//! their own store: enable it in your `[dev-dependencies]`
//! (`mcp-oauth = { version = "…", features = ["testkit"] }`) and run the same conformance
//! suite that every built-in store (memory, SQLite, PostgreSQL, Redis) passes.
//!
//! The authorization server's security rests on a few store guarantees: a code is redeemed
//! once even when 64 requests race for it, a replayed code reports the family its first
//! redemption created, a revoked family leaves a tombstone that a late `create_family` runs
//! into, a refresh token rotates once even when 32 requests race with it (the others get the
//! winner's sealed successor), and reuse outside the grace window revokes the whole family.
//! These functions check each rule against a real store; each panics with a message naming
//! the broken rule.
//!
//! Run them all with [`run_all`] from a test on a **multi-thread** runtime, so that the
//! concurrency checks race for real:
//!
//! ```
//! use std::sync::Arc;
//! use mcp_oauth::store::{MemoryStore, testkit};
//!
//! # fn main() {
//! // In your tests: #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
//! rt.block_on(testkit::run_all(Arc::new(MemoryStore::new())));
//! # }
//! ```
//!
//! A [`KeyStore`](super::KeyStore) has its own contract, [`run_key_store`]: one first key of
//! a ring when 16 instances start at once, one new key when they rotate at once, retired keys
//! loaded until their time and then pruned.
//!
//! Client retention, registration fingerprints and shared rate-limit counters have their own
//! contracts, [`run_retention`] and [`run_rate_limits`] (a store that keeps every client,
//! never deduplicates registrations, or offers no counters, skips them): idle dynamic
//! clients go, never-used ones go after their shorter window while used ones stay, clients
//! holding live grants and static clients stay, a touch racing the sweep is never lost, the
//! newest client filed under a registration fingerprint is found and a deleted one never is,
//! 40 concurrent hits against a limit of 7 let exactly 7 through, and the budget refills.
//!
//! Every check creates its own uniquely named records, so the checks may run against a
//! database that holds other data, and each may also be run alone. They use the real clock
//! as `now`, and move `now` forward explicitly to test expiry. [`sweep_removes_only_expired`] and
//! [`revocation_outlives_family`] call [`sweep`](GrantStore::sweep), the latter with a clock
//! [`REVOCATION_SWEEP_AHEAD`] seconds ahead, which drops whatever expires within that minute:
//! run the kit against a **dedicated** test store or database, never a production one.

mod keys;

use std::sync::Arc;

pub use keys::{
    KEY_RACERS, concurrent_initial_key, concurrent_key_rotation, key_lifecycle,
    retired_keys_until_pruned, run_key_store,
};
use serde_json::{Map, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::{
    ApplicationType, AuthorizationCode, Client, ClientFingerprint, ClientSource, ClientStore,
    CodePeek, CodeRedeem, CodeRedemption, CodeTake, GrantStore, InitialGrant, PendingAuthorization,
    RefreshFamily, RefreshLookup, RefreshTokenState, Rotation, SecretHash, StoreError,
    TokenEndpointAuthMethod, UpstreamLogin,
};
use crate::scope::ScopeSet;

/// Concurrent redemptions of one code in [`concurrent_take_code`].
pub const CODE_RACERS: usize = 64;
/// Concurrent rotations of one refresh token in [`concurrent_rotation_in_grace`].
pub const ROTATION_RACERS: usize = 32;
/// Concurrent uses of one client-assertion id in [`concurrent_assertion_id`].
pub const ASSERTION_RACERS: usize = 32;
/// Concurrent takes of one upstream login in [`concurrent_upstream_login`].
pub const UPSTREAM_LOGIN_RACERS: usize = 32;
/// The grace window (seconds) the rotation checks use.
pub const GRACE_SECS: u64 = 30;
/// How far ahead of the real clock [`revocation_outlives_family`] sweeps.
pub const REVOCATION_SWEEP_AHEAD: u64 = 61;
/// The longest access-token lifetime the authorization server allows (24 h): a revoked
/// family's access tokens must stay refused at least this long after the revocation.
pub const MAX_ACCESS_TOKEN_SECS: u64 = 24 * 3600;

/// Runs every check in order. See the [module docs](self).
///
/// # Panics
/// When the store breaks a rule (the message names it) or fails.
pub async fn run_all<S: ClientStore + GrantStore>(store: Arc<S>) {
    clients(&*store).await;
    codes_single_use(&*store).await;
    code_expiry(&*store).await;
    concurrent_take_code(store.clone()).await;
    redeem_code(&*store).await;
    concurrent_redeem_code(store.clone()).await;
    family_lifecycle(&*store).await;
    revoke_before_create(&*store).await;
    rotation(&*store).await;
    refresh_token_states(&*store).await;
    concurrent_rotation_in_grace(store.clone()).await;
    reuse_after_grace(&*store).await;
    expired_family(&*store).await;
    family_of_refresh_uses_now(&*store).await;
    revoke_token(&*store).await;
    assertion_ids(&*store).await;
    concurrent_assertion_id(store.clone()).await;
    upstream_tokens(&*store).await;
    upstream_logins(&*store).await;
    concurrent_upstream_login(store.clone()).await;
    consent(&*store).await;
    pending(&*store).await;
    sweep_removes_only_expired(&*store).await;
    stats(&*store).await;
    revocation_outlives_family(&*store).await;
}

fn now() -> u64 {
    crate::util::now()
}

/// A unique id with a readable prefix (no `.`, so it is a valid family id).
fn uid(prefix: &str) -> String {
    format!("{prefix}-{}", crate::util::random_token(12))
}

fn ok<T>(what: &str, r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store contract: {what} failed: {e}"),
    }
}

fn sample_client(id: &str) -> Client {
    let mut extra = Map::new();
    extra.insert("client_uri".to_owned(), json!("https://app.example.com"));
    Client {
        client_id: id.to_owned(),
        secret_hash: Some(SecretHash::of("testkit-secret")),
        secret_expires_at: 0,
        client_name: Some("Testkit client".to_owned()),
        redirect_uris: vec!["https://app.example.com/cb".to_owned()],
        grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
        application_type: ApplicationType::Web,
        scope: Some(scope("read write")),
        extra,
        issued_at: now(),
        last_used_at: 0,
        source: ClientSource::Dynamic,
    }
}

fn scope(s: &str) -> ScopeSet {
    match ScopeSet::parse(s) {
        Ok(v) => v,
        Err(e) => panic!("testkit scope {s:?}: {e}"),
    }
}

fn sample_code(client_id: &str, expires_at: u64) -> AuthorizationCode {
    let mut claims = Map::new();
    claims.insert("email".to_owned(), json!("alice@example.com"));
    AuthorizationCode {
        client_id: client_id.to_owned(),
        redirect_uri: "https://app.example.com/cb?x=1".to_owned(),
        redirect_uri_in_request: false,
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        scope: scope("read write"),
        resource: "https://mcp.example.com/mcp".to_owned(),
        subject: "alice".to_owned(),
        claims,
        auth_time: now(),
        expires_at,
    }
}

fn sample_family(id: &str, expires_at: u64) -> RefreshFamily {
    RefreshFamily {
        family_id: id.to_owned(),
        client_id: "testkit-client".to_owned(),
        subject: "alice".to_owned(),
        scope: scope("read write"),
        resource: "https://mcp.example.com/mcp".to_owned(),
        claims: Map::new(),
        auth_time: now(),
        created_at: now(),
        expires_at,
    }
}

fn sample_pending(expires_at: u64) -> PendingAuthorization {
    PendingAuthorization {
        client_id: "testkit-client".to_owned(),
        redirect_uri: "https://app.example.com/cb".to_owned(),
        redirect_uri_in_request: false,
        state: Some("xyz".to_owned()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        scope: scope("read"),
        resource: "https://mcp.example.com/mcp".to_owned(),
        csrf_hash: SecretHash::of("csrf"),
        subject: Some("alice".to_owned()),
        claims: Map::new(),
        auth_time: Some(now()),
        expires_at,
    }
}

/// The family `family_of_refresh` reports for `token` now, whatever the token's state.
async fn family_of<S: GrantStore + ?Sized>(store: &S, token: &SecretHash) -> Option<RefreshFamily> {
    ok(
        "family_of_refresh",
        store.family_of_refresh(token, now()).await,
    )
    .map(|l| l.family)
}

/// A new, live family with one refresh token; returns the family and the token's hash.
async fn live_family<S: GrantStore + ?Sized>(store: &S) -> (RefreshFamily, SecretHash) {
    let family = sample_family(&uid("fam"), now() + 3600);
    let token = SecretHash::of(&uid("rt"));
    ok(
        "create_family",
        store.create_family(family.clone(), Some(token)).await,
    );
    (family, token)
}

/// Client CRUD: insert (and `Conflict` on a duplicate id), get round-trips every field,
/// upsert replaces, touch records the time, count follows, delete reports existence.
pub async fn clients<S: ClientStore + ?Sized>(store: &S) {
    let before = ok("count_clients", store.count_clients().await);
    let id = uid("client");
    let client = sample_client(&id);
    ok("insert_client", store.insert_client(client.clone()).await);
    assert_eq!(
        ok("get_client", store.get_client(&id).await).as_ref(),
        Some(&client),
        "store contract: get_client must return the inserted client unchanged"
    );
    assert!(
        matches!(
            store.insert_client(client.clone()).await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: insert_client of an existing id must fail with Conflict"
    );
    assert_eq!(
        ok("count_clients", store.count_clients().await),
        before + 1,
        "store contract: count_clients must count the new client"
    );
    let mut changed = client.clone();
    changed.client_name = Some("Renamed".to_owned());
    changed.redirect_uris.push("http://127.0.0.1/cb".to_owned());
    ok("upsert_client", store.upsert_client(changed.clone()).await);
    assert_eq!(
        ok("get_client", store.get_client(&id).await).as_ref(),
        Some(&changed),
        "store contract: upsert_client must replace the client"
    );
    let upserted = uid("client");
    ok(
        "upsert_client (new)",
        store.upsert_client(sample_client(&upserted)).await,
    );
    assert!(
        ok("get_client", store.get_client(&upserted).await).is_some(),
        "store contract: upsert_client must create a missing client"
    );
    let t = now() + 5;
    ok("touch_client", store.touch_client(&id, t).await);
    let touched = ok("get_client", store.get_client(&id).await);
    assert_eq!(
        touched.map(|c| c.last_used_at),
        Some(t),
        "store contract: touch_client must record last_used_at"
    );
    ok(
        "touch_client (unknown id)",
        store.touch_client(&uid("missing"), t).await,
    );
    assert!(
        ok("delete_client", store.delete_client(&id).await),
        "store contract: delete_client must report that the client existed"
    );
    assert!(
        !ok("delete_client", store.delete_client(&id).await),
        "store contract: a second delete_client must report false"
    );
    assert!(ok("get_client", store.get_client(&id).await).is_none());
    ok("delete_client", store.delete_client(&upserted).await);
    assert_eq!(
        ok("count_clients", store.count_clients().await),
        before,
        "store contract: count_clients must follow deletions"
    );
    assert!(
        ok("get_client", store.get_client(&uid("missing")).await).is_none(),
        "store contract: an unknown client is None"
    );
}

/// Codes are single use: the first take returns the code, every later take reports
/// `Replayed` with the **first** taker's family id; unknown codes are `NotFound`.
pub async fn codes_single_use<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let hash = SecretHash::of(&uid("code"));
    let code = sample_code("testkit-client", n + 60);
    ok("put_code", store.put_code(hash, code.clone()).await);
    let first = ok("take_code", store.take_code(&hash, "fam-first", n).await);
    assert_eq!(
        first,
        CodeTake::Taken(code.clone()),
        "store contract: the first take_code must return the stored code unchanged"
    );
    for attempt in ["fam-second", "fam-third"] {
        let again = ok("take_code", store.take_code(&hash, attempt, n + 1).await);
        assert_eq!(
            again,
            CodeTake::Replayed {
                family_id: "fam-first".to_owned(),
                code: code.clone(),
            },
            "store contract: a replayed code must report the family bound at first redemption and the stored code"
        );
    }
    let unknown = ok(
        "take_code",
        store
            .take_code(&SecretHash::of(&uid("nocode")), "fam", n)
            .await,
    );
    assert_eq!(
        unknown,
        CodeTake::NotFound,
        "store contract: an unknown code is NotFound"
    );
}

/// A code is `NotFound` from its `expires_at` on, and an expired code is never `Taken`.
pub async fn code_expiry<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let hash = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(hash, sample_code("testkit-client", n + 10))
            .await,
    );
    assert_eq!(
        ok("take_code", store.take_code(&hash, "fam", n + 10).await),
        CodeTake::NotFound,
        "store contract: a code at its expires_at must be NotFound"
    );
    assert_eq!(
        ok("take_code", store.take_code(&hash, "fam", n).await),
        CodeTake::NotFound,
        "store contract: an expired code must stay unredeemable"
    );
    let stale = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(stale, sample_code("testkit-client", n - 1))
            .await,
    );
    assert_eq!(
        ok("take_code", store.take_code(&stale, "fam", n).await),
        CodeTake::NotFound,
        "store contract: a code stored already expired must be NotFound"
    );
}

/// [`CODE_RACERS`] concurrent `take_code` calls of one code, each with its own family id:
/// exactly one is `Taken`, every other is `Replayed` naming the winner's family.
pub async fn concurrent_take_code<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let hash = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(hash, sample_code("testkit-client", n + 60))
            .await,
    );
    let barrier = Arc::new(Barrier::new(CODE_RACERS));
    let mut set = JoinSet::new();
    for i in 0..CODE_RACERS {
        let store = store.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            let family = format!("race-{i}");
            barrier.wait().await;
            let r = store.take_code(&hash, &family, n).await;
            (family, r)
        });
    }
    let mut winners = Vec::new();
    let mut replayed = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (family, r) = match joined {
            Ok(v) => v,
            Err(e) => panic!("store contract: a take_code task panicked: {e}"),
        };
        match ok("concurrent take_code", r) {
            CodeTake::Taken(_) => winners.push(family),
            CodeTake::Replayed { family_id, .. } => replayed.push(family_id),
            other => panic!("store contract: concurrent take_code returned {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "store contract: exactly one of {CODE_RACERS} concurrent take_code calls may win, got {}",
        winners.len()
    );
    assert_eq!(replayed.len(), CODE_RACERS - 1);
    assert!(
        replayed.iter().all(|f| *f == winners[0]),
        "store contract: every losing take_code must report the winner's family id"
    );
}

/// A redemption of `hash` creating a family `id` with a refresh token; returns it and the
/// token's hash.
fn redemption(id: &str, expires_at: u64) -> (CodeRedemption, SecretHash) {
    let token = SecretHash::of(&uid("rt"));
    let r = CodeRedemption {
        family: sample_family(id, expires_at),
        refresh: Some(token),
        sealed_grant: format!("sealed-{id}").into_bytes(),
    };
    (r, token)
}

/// Redeeming a code ([`GrantStore::redeem_code`]) spends it and creates its family in one
/// step: `peek_code` does not spend; `redeem_code` makes the family and its refresh token
/// exist and binds the family to the code (later `peek_code`/`redeem_code`/`take_code` report
/// it as spent by that family, and nothing more is created); a family id that exists (or was
/// revoked) is `Conflict` and leaves the code unspent; expired and unknown codes are
/// `NotFound`. The sealed grant is returned by `initial_grant` while the family is live,
/// never rotated and the grant never claimed; `claim_initial_grant` wins once, and never
/// after a rotation (whose sealed successor it leaves alone). A store that does not read
/// codes without spending them ([`CodePeek::Unsupported`], the default) skips the checks of
/// `peek_code` and `initial_grant`.
pub async fn redeem_code<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let hash = SecretHash::of(&uid("code"));
    let code = sample_code("testkit-client", n + 60);
    ok("put_code", store.put_code(hash, code.clone()).await);
    let atomic = !matches!(
        ok("peek_code", store.peek_code(&hash, n).await),
        CodePeek::Unsupported
    );
    if atomic {
        assert_eq!(
            ok("peek_code", store.peek_code(&hash, n).await),
            CodePeek::Live(code.clone()),
            "store contract: peek_code must return a live code unchanged, and not spend it"
        );
        // A family id that is taken (here: a tombstone) is Conflict, and spends nothing.
        let revoked = uid("fam");
        ok("revoke_family", store.revoke_family(&revoked, n).await);
        let (r, _) = redemption(&revoked, n + 3600);
        assert!(
            matches!(
                store.redeem_code(&hash, r, n).await,
                Err(StoreError::Conflict { .. })
            ),
            "store contract: redeem_code with a revoked family id must be Conflict"
        );
        assert_eq!(
            ok("peek_code", store.peek_code(&hash, n).await),
            CodePeek::Live(code.clone()),
            "store contract: a redeem_code that failed must leave the code unspent"
        );
    }
    let id = uid("fam");
    let (r, token) = redemption(&id, n + 3600);
    let family = r.family.clone();
    assert_eq!(
        ok("redeem_code", store.redeem_code(&hash, r, n).await),
        CodeRedeem::Redeemed,
        "store contract: the first redeem_code of a live code must redeem it"
    );
    assert_eq!(
        family_of(store, &token).await.as_ref(),
        Some(&family),
        "store contract: redeem_code must create the family with its refresh token"
    );
    let (again, again_token) = redemption(&uid("fam"), n + 3600);
    assert_eq!(
        ok(
            "redeem_code (again)",
            store.redeem_code(&hash, again, n).await
        ),
        CodeRedeem::Spent {
            family_id: id.clone(),
            code: code.clone()
        },
        "store contract: a second redeem_code must report the first one's family"
    );
    assert!(
        family_of(store, &again_token).await.is_none(),
        "store contract: a redeem_code of a spent code must create nothing"
    );
    assert!(
        matches!(
            ok("take_code", store.take_code(&hash, "other", n).await),
            CodeTake::Replayed { family_id, .. } if family_id == id
        ),
        "store contract: take_code after redeem_code must report the redemption's family"
    );
    if atomic {
        assert_eq!(
            ok("peek_code", store.peek_code(&hash, n).await),
            CodePeek::Spent {
                family_id: id.clone(),
                code: code.clone()
            },
            "store contract: peek_code of a redeemed code must report its family"
        );
        assert_eq!(
            ok("peek_code (expired)", store.peek_code(&hash, n + 60).await),
            CodePeek::NotFound,
            "store contract: peek_code of an expired code must be NotFound"
        );
        assert_eq!(
            ok("initial_grant", store.initial_grant(&id, n).await),
            Some(InitialGrant {
                family: family.clone(),
                sealed_grant: format!("sealed-{id}").into_bytes()
            }),
            "store contract: initial_grant must return the sealed grant of an unrotated family"
        );
        assert_eq!(
            ok(
                "initial_grant (expired)",
                store.initial_grant(&id, n + 3600).await
            ),
            None,
            "store contract: initial_grant must not return an expired family"
        );
        ok(
            "rotate_refresh",
            store
                .rotate_refresh(&token, SecretHash::of(&uid("rt")), vec![1], n, GRACE_SECS)
                .await,
        );
        assert_eq!(
            ok("initial_grant (rotated)", store.initial_grant(&id, n).await),
            None,
            "store contract: initial_grant must not return a family whose token was rotated"
        );
        assert!(
            !ok(
                "claim_initial_grant (rotated)",
                store.claim_initial_grant(&id).await
            ),
            "store contract: a rotated family's first grant cannot be claimed"
        );
        assert!(
            matches!(
                ok(
                    "rotate_refresh (grace)",
                    store
                        .rotate_refresh(&token, SecretHash::of(&uid("rt")), vec![2], n, GRACE_SECS)
                        .await
                ),
                Rotation::Grace { sealed_successor, .. } if sealed_successor == vec![1]
            ),
            "store contract: claim_initial_grant must keep a rotation's sealed successor"
        );
        // A claim: exactly once.
        let hash = SecretHash::of(&uid("code"));
        ok("put_code", store.put_code(hash, code.clone()).await);
        let id = uid("fam");
        let (r, _) = redemption(&id, n + 3600);
        ok("redeem_code", store.redeem_code(&hash, r, n).await);
        assert!(
            ok("claim_initial_grant", store.claim_initial_grant(&id).await),
            "store contract: the first claim of a redeemed family's grant must win"
        );
        assert!(
            !ok(
                "claim_initial_grant (again)",
                store.claim_initial_grant(&id).await
            ),
            "store contract: a grant is claimed once"
        );
        assert_eq!(
            ok("initial_grant (claimed)", store.initial_grant(&id, n).await),
            None,
            "store contract: initial_grant must not return a claimed grant"
        );
        // A revoked family.
        let hash = SecretHash::of(&uid("code"));
        ok("put_code", store.put_code(hash, code.clone()).await);
        let id = uid("fam");
        let (r, _) = redemption(&id, n + 3600);
        ok("redeem_code", store.redeem_code(&hash, r, n).await);
        ok("revoke_family", store.revoke_family(&id, n).await);
        assert_eq!(
            ok("initial_grant (revoked)", store.initial_grant(&id, n).await),
            None,
            "store contract: initial_grant must not return a revoked family"
        );
    }
    // Expired and unknown codes.
    let expired = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(expired, sample_code("testkit-client", n))
            .await,
    );
    let (r, token) = redemption(&uid("fam"), n + 3600);
    assert_eq!(
        ok(
            "redeem_code (expired)",
            store.redeem_code(&expired, r, n).await
        ),
        CodeRedeem::NotFound,
        "store contract: redeem_code of an expired code must be NotFound"
    );
    assert!(family_of(store, &token).await.is_none());
    let (r, _) = redemption(&uid("fam"), n + 3600);
    assert_eq!(
        ok(
            "redeem_code (unknown)",
            store.redeem_code(&SecretHash::of(&uid("code")), r, n).await
        ),
        CodeRedeem::NotFound,
        "store contract: redeem_code of an unknown code must be NotFound"
    );
}

/// [`CODE_RACERS`] concurrent `redeem_code` calls of one code, each with its own family:
/// exactly one redeems, every other reports the winner's family, and only the winner's
/// family exists.
pub async fn concurrent_redeem_code<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let hash = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(hash, sample_code("testkit-client", n + 60))
            .await,
    );
    let barrier = Arc::new(Barrier::new(CODE_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..CODE_RACERS {
        let store = store.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            let (r, token) = redemption(&uid("race"), n + 3600);
            let family = r.family.family_id.clone();
            barrier.wait().await;
            let got = store.redeem_code(&hash, r, n).await;
            (family, token, got)
        });
    }
    let mut winners = Vec::new();
    let mut spent = Vec::new();
    let mut losers = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (family, token, got) = match joined {
            Ok(v) => v,
            Err(e) => panic!("store contract: a redeem_code task panicked: {e}"),
        };
        match ok("concurrent redeem_code", got) {
            CodeRedeem::Redeemed => winners.push((family, token)),
            CodeRedeem::Spent { family_id, .. } => {
                spent.push(family_id);
                losers.push(token);
            }
            other => panic!("store contract: concurrent redeem_code returned {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "store contract: exactly one of {CODE_RACERS} concurrent redeem_code calls may win"
    );
    assert!(
        spent.iter().all(|f| *f == winners[0].0),
        "store contract: every losing redeem_code must report the winner's family id"
    );
    assert!(family_of(store.as_ref(), &winners[0].1).await.is_some());
    for token in losers {
        assert!(
            family_of(store.as_ref(), &token).await.is_none(),
            "store contract: a losing redeem_code must create no family"
        );
    }
}

/// A family: created with its refresh token, found by it, a duplicate id is `Conflict`;
/// revoking it (twice: idempotent) kills the refresh token, every `"{family}.x"` access
/// token id, and blocks re-creation; other families are unaffected. A family without a
/// refresh token still anchors its access tokens.
pub async fn family_lifecycle<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (family, token) = live_family(store).await;
    let (other, other_token) = live_family(store).await;
    assert_eq!(
        family_of(store, &token).await.as_ref(),
        Some(&family),
        "store contract: family_of_refresh must return the family unchanged"
    );
    assert!(
        matches!(
            store
                .create_family(family.clone(), Some(SecretHash::of(&uid("rt"))))
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: create_family of an existing id must fail with Conflict"
    );
    let jti = format!("{}.abc", family.family_id);
    assert!(
        !ok("is_token_revoked", store.is_token_revoked(&jti, n).await),
        "store contract: a live family's access tokens are not revoked"
    );
    ok(
        "revoke_family",
        store.revoke_family(&family.family_id, n).await,
    );
    ok(
        "revoke_family (again)",
        store.revoke_family(&family.family_id, n + 1).await,
    );
    assert!(
        ok("is_token_revoked", store.is_token_revoked(&jti, n).await),
        "store contract: revoking a family must revoke every access token id \"{{family}}.…\""
    );
    assert!(
        family_of(store, &token).await.is_none(),
        "store contract: family_of_refresh must not return a revoked family"
    );
    let rotated = ok(
        "rotate_refresh",
        store
            .rotate_refresh(
                &token,
                SecretHash::of(&uid("rt")),
                vec![1],
                n + 1,
                GRACE_SECS,
            )
            .await,
    );
    assert_eq!(
        rotated,
        Rotation::Invalid,
        "store contract: a revoked family's refresh token must be Invalid"
    );
    assert!(
        matches!(
            store.create_family(family.clone(), None).await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: create_family of a revoked id must fail with Conflict"
    );
    let other_jti = format!("{}.abc", other.family_id);
    assert!(
        !ok(
            "is_token_revoked",
            store.is_token_revoked(&other_jti, n).await
        ),
        "store contract: revoking one family must not touch another"
    );
    assert!(
        family_of(store, &other_token).await.is_some(),
        "store contract: revoking one family must not touch another's refresh token"
    );

    let bare = sample_family(&uid("fam"), n + 3600);
    ok(
        "create_family (no refresh token)",
        store.create_family(bare.clone(), None).await,
    );
    let bare_jti = format!("{}.xyz", bare.family_id);
    assert!(!ok(
        "is_token_revoked",
        store.is_token_revoked(&bare_jti, n).await
    ));
    ok(
        "revoke_family",
        store.revoke_family(&bare.family_id, n).await,
    );
    assert!(
        ok(
            "is_token_revoked",
            store.is_token_revoked(&bare_jti, n).await
        ),
        "store contract: a family without refresh token must still revoke its access tokens"
    );
}

/// A code replay that revokes the family before the first redemption created it leaves a
/// tombstone: the late `create_family` fails with `Conflict`, so the first exchange fails
/// too (RFC 6749 §4.1.2).
pub async fn revoke_before_create<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let id = uid("fam");
    ok(
        "revoke_family (unknown id)",
        store.revoke_family(&id, n).await,
    );
    let token = SecretHash::of(&uid("rt"));
    assert!(
        matches!(
            store
                .create_family(sample_family(&id, n + 3600), Some(token))
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: create_family after revoke_family of that id must fail with Conflict"
    );
    assert!(
        ok(
            "is_token_revoked",
            store.is_token_revoked(&format!("{id}.a"), n).await
        ),
        "store contract: a tombstoned family's access tokens are revoked"
    );
    assert!(
        family_of(store, &token).await.is_none(),
        "store contract: the refused family's refresh token must not exist"
    );
}

/// Sequential rotation: the current token rotates (`Rotated`), its successor becomes
/// current, the rotated-out token inside the grace window gets `Grace` with the sealed
/// successor the rotation stored, and an unknown token is `Invalid`.
pub async fn rotation<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (family, t0) = live_family(store).await;
    let t1 = SecretHash::of(&uid("rt"));
    let r = ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t0, t1, b"sealed-1".to_vec(), n, GRACE_SECS)
            .await,
    );
    assert_eq!(
        r,
        Rotation::Rotated(family.clone()),
        "store contract: rotating the current token must return Rotated with the family"
    );
    assert_eq!(
        family_of(store, &t1).await.as_ref(),
        Some(&family),
        "store contract: the successor must belong to the family"
    );
    let r = ok(
        "rotate_refresh (grace)",
        store
            .rotate_refresh(
                &t0,
                SecretHash::of(&uid("rt")),
                b"ignored".to_vec(),
                n + GRACE_SECS,
                GRACE_SECS,
            )
            .await,
    );
    assert_eq!(
        r,
        Rotation::Grace {
            family: family.clone(),
            sealed_successor: b"sealed-1".to_vec()
        },
        "store contract: the previous token inside the grace window must get Grace with the stored sealed successor"
    );
    let t2 = SecretHash::of(&uid("rt"));
    let r = ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t1, t2, b"sealed-2".to_vec(), n + 1, GRACE_SECS)
            .await,
    );
    assert!(
        matches!(r, Rotation::Rotated(_)),
        "store contract: the successor must rotate in turn, got {r:?}"
    );
    let r = ok(
        "rotate_refresh (unknown)",
        store
            .rotate_refresh(
                &SecretHash::of(&uid("rt")),
                SecretHash::of(&uid("rt")),
                vec![],
                n,
                GRACE_SECS,
            )
            .await,
    );
    assert_eq!(
        r,
        Rotation::Invalid,
        "store contract: an unknown refresh token is Invalid"
    );
    assert!(!ok(
        "is_token_revoked",
        store
            .is_token_revoked(&format!("{}.a", family.family_id), n)
            .await
    ));
}

/// `family_of_refresh` tells where a token stands: the current one is
/// [`Current`](RefreshTokenState::Current), the one the last rotation replaced is
/// [`Previous`](RefreshTokenState::Previous) with its rotation time (usable inside the grace
/// window only), every older one is [`Retired`](RefreshTokenState::Retired) (never usable:
/// introspection must call it inactive); a revoked family answers `None` for all of them.
pub async fn refresh_token_states<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let state = |l: Option<RefreshLookup>| l.map(|l| l.state);
    let (family, t0) = live_family(store).await;
    let l0 = ok("family_of_refresh", store.family_of_refresh(&t0, n).await);
    assert_eq!(
        l0.as_ref().map(|l| &l.family),
        Some(&family),
        "store contract: family_of_refresh must return the family unchanged"
    );
    assert_eq!(
        state(l0),
        Some(RefreshTokenState::Current),
        "store contract: a family's first token is Current"
    );
    let t1 = SecretHash::of(&uid("rt"));
    ok(
        "rotate_refresh",
        store.rotate_refresh(&t0, t1, vec![1], n, GRACE_SECS).await,
    );
    let l0 = ok("family_of_refresh", store.family_of_refresh(&t0, n).await);
    assert_eq!(
        l0.as_ref().map(|l| l.state),
        Some(RefreshTokenState::Previous { rotated_at: n }),
        "store contract: the rotated-out token is Previous, with its rotation time"
    );
    if let Some(l0) = l0 {
        assert!(
            l0.is_usable(n + GRACE_SECS, GRACE_SECS),
            "the previous token is usable to the end of the grace window"
        );
        assert!(
            !l0.is_usable(n + GRACE_SECS + 1, GRACE_SECS),
            "the previous token is not usable past the grace window"
        );
    }
    assert_eq!(
        state(ok(
            "family_of_refresh",
            store.family_of_refresh(&t1, n).await
        )),
        Some(RefreshTokenState::Current),
        "store contract: the successor is Current"
    );
    let t2 = SecretHash::of(&uid("rt"));
    ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t1, t2, vec![2], n + 1, GRACE_SECS)
            .await,
    );
    let l0 = ok(
        "family_of_refresh",
        store.family_of_refresh(&t0, n + 1).await,
    );
    assert_eq!(
        l0.as_ref().map(|l| l.state),
        Some(RefreshTokenState::Retired),
        "store contract: a token two rotations back is Retired"
    );
    assert!(
        l0.is_some_and(|l| !l.is_usable(n + 1, GRACE_SECS)),
        "a Retired token is never usable"
    );
    assert_eq!(
        state(ok(
            "family_of_refresh",
            store.family_of_refresh(&t1, n + 1).await
        )),
        Some(RefreshTokenState::Previous { rotated_at: n + 1 }),
    );
    assert_eq!(
        state(ok(
            "family_of_refresh",
            store.family_of_refresh(&t2, n + 1).await
        )),
        Some(RefreshTokenState::Current),
    );
    ok(
        "revoke_family",
        store.revoke_family(&family.family_id, n + 2).await,
    );
    for t in [t0, t1, t2] {
        assert!(
            ok(
                "family_of_refresh",
                store.family_of_refresh(&t, n + 2).await
            )
            .is_none(),
            "store contract: no token of a revoked family is found"
        );
    }
}

/// [`ROTATION_RACERS`] concurrent rotations of one refresh token, each with its own successor
/// and sealed blob, inside the grace window: exactly one `Rotated`, every other `Grace`
/// carrying the **winner's** sealed successor, and the family stays live (the winner's
/// successor rotates next).
pub async fn concurrent_rotation_in_grace<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let (family, t0) = live_family(&*store).await;
    let barrier = Arc::new(Barrier::new(ROTATION_RACERS));
    let mut set = JoinSet::new();
    for i in 0..ROTATION_RACERS {
        let store = store.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            let successor = SecretHash::of(&uid("rt"));
            let sealed = format!("sealed-{i}").into_bytes();
            barrier.wait().await;
            let r = store
                .rotate_refresh(&t0, successor, sealed.clone(), n, GRACE_SECS)
                .await;
            (successor, sealed, r)
        });
    }
    let mut winners = Vec::new();
    let mut graced = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (successor, sealed, r) = match joined {
            Ok(v) => v,
            Err(e) => panic!("store contract: a rotate_refresh task panicked: {e}"),
        };
        match ok("concurrent rotate_refresh", r) {
            Rotation::Rotated(f) => {
                assert_eq!(f, family);
                winners.push((successor, sealed));
            }
            Rotation::Grace {
                family: f,
                sealed_successor,
            } => {
                assert_eq!(f, family);
                graced.push(sealed_successor);
            }
            other => panic!(
                "store contract: a concurrent rotation inside the grace window returned {other:?} (must be Rotated or Grace)"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "store contract: exactly one of {ROTATION_RACERS} concurrent rotations may win, got {}",
        winners.len()
    );
    assert_eq!(graced.len(), ROTATION_RACERS - 1);
    let (winner_successor, winner_sealed) = &winners[0];
    assert!(
        graced.iter().all(|s| s == winner_sealed),
        "store contract: every concurrent rotation must receive the winner's sealed successor"
    );
    assert!(
        !ok(
            "is_token_revoked",
            store
                .is_token_revoked(&format!("{}.a", family.family_id), n)
                .await
        ),
        "store contract: concurrent rotation inside the grace window must not revoke the family"
    );
    let r = ok(
        "rotate_refresh (winner's successor)",
        store
            .rotate_refresh(
                winner_successor,
                SecretHash::of(&uid("rt")),
                vec![],
                n + 1,
                GRACE_SECS,
            )
            .await,
    );
    assert!(
        matches!(r, Rotation::Rotated(_)),
        "store contract: the winner's successor must be current after the race, got {r:?}"
    );
}

/// Presenting a rotated-out token after the grace window is reuse: `Reused`, and the store
/// has revoked the family (its access token ids and the current refresh token die too).
pub async fn reuse_after_grace<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (family, t0) = live_family(store).await;
    let t1 = SecretHash::of(&uid("rt"));
    let r = ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t0, t1, b"s".to_vec(), n, GRACE_SECS)
            .await,
    );
    assert!(matches!(r, Rotation::Rotated(_)), "got {r:?}");
    let r = ok(
        "rotate_refresh (reuse)",
        store
            .rotate_refresh(
                &t0,
                SecretHash::of(&uid("rt")),
                vec![],
                n + GRACE_SECS + 1,
                GRACE_SECS,
            )
            .await,
    );
    assert_eq!(
        r,
        Rotation::Reused {
            family_id: family.family_id.clone()
        },
        "store contract: a rotated-out token after the grace window must be Reused"
    );
    assert!(
        ok(
            "is_token_revoked",
            store
                .is_token_revoked(&format!("{}.x", family.family_id), n + GRACE_SECS + 1)
                .await
        ),
        "store contract: reuse must revoke the family's access tokens"
    );
    let r = ok(
        "rotate_refresh (current after reuse)",
        store
            .rotate_refresh(
                &t1,
                SecretHash::of(&uid("rt")),
                vec![],
                n + GRACE_SECS + 2,
                GRACE_SECS,
            )
            .await,
    );
    assert_eq!(
        r,
        Rotation::Invalid,
        "store contract: after reuse the current refresh token must be Invalid too"
    );
    assert!(
        family_of(store, &t1).await.is_none(),
        "store contract: family_of_refresh must not return a family revoked by reuse"
    );

    // An even older token (two rotations back) is reuse at any time.
    let (family, t0) = live_family(store).await;
    let t1 = SecretHash::of(&uid("rt"));
    let t2 = SecretHash::of(&uid("rt"));
    ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t0, t1, b"s1".to_vec(), n, GRACE_SECS)
            .await,
    );
    ok(
        "rotate_refresh",
        store
            .rotate_refresh(&t1, t2, b"s2".to_vec(), n, GRACE_SECS)
            .await,
    );
    let r = ok(
        "rotate_refresh (two back)",
        store
            .rotate_refresh(&t0, SecretHash::of(&uid("rt")), vec![], n, GRACE_SECS)
            .await,
    );
    assert_eq!(
        r,
        Rotation::Reused {
            family_id: family.family_id.clone()
        },
        "store contract: a token two rotations back must be Reused even inside the window"
    );
}

/// A family past its `expires_at` is dead: its refresh token is `Invalid` and
/// `family_of_refresh` does not return it.
pub async fn expired_family<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let family = sample_family(&uid("fam"), n - 1);
    let token = SecretHash::of(&uid("rt"));
    ok(
        "create_family (expired)",
        store.create_family(family, Some(token)).await,
    );
    assert_eq!(
        ok(
            "rotate_refresh",
            store
                .rotate_refresh(&token, SecretHash::of(&uid("rt")), vec![], n, GRACE_SECS)
                .await
        ),
        Rotation::Invalid,
        "store contract: an expired family's refresh token must be Invalid"
    );
    assert!(
        family_of(store, &token).await.is_none(),
        "store contract: family_of_refresh must not return an expired family"
    );
}

/// `family_of_refresh` judges by the `now` it is given, not by a clock of its own: a family
/// expiring at `n + 100` is found with a clock far in the past and just before its expiry,
/// and not at or after it, while the real clock is still long before it.
pub async fn family_of_refresh_uses_now<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let family = sample_family(&uid("fam"), n + 100);
    let token = SecretHash::of(&uid("rt"));
    ok(
        "create_family",
        store.create_family(family.clone(), Some(token)).await,
    );
    for (at, live) in [
        (n - 10 * 24 * 3600, true),
        (n + 99, true),
        (n + 100, false),
        (n + 10 * 24 * 3600, false),
    ] {
        let found = ok(
            "family_of_refresh",
            store.family_of_refresh(&token, at).await,
        );
        assert_eq!(
            found.map(|l| l.family).as_ref(),
            live.then_some(&family),
            "store contract: family_of_refresh at {at} (the family expires at {}) must judge by \
             the given now",
            n + 100
        );
    }
}

/// `revoke_token` revokes exactly that `jti` (not its siblings of the same family) until its
/// expiry.
pub async fn revoke_token<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (family, _) = live_family(store).await;
    let jti = format!("{}.one", family.family_id);
    let sibling = format!("{}.two", family.family_id);
    assert!(!ok(
        "is_token_revoked",
        store.is_token_revoked(&jti, n).await
    ));
    ok("revoke_token", store.revoke_token(&jti, n + 100).await);
    assert!(
        ok("is_token_revoked", store.is_token_revoked(&jti, n).await),
        "store contract: a revoked jti must be revoked"
    );
    assert!(
        ok(
            "is_token_revoked",
            store.is_token_revoked(&jti, n + 100).await
        ),
        "store contract: a revoked jti must stay revoked until its expires_at"
    );
    assert!(
        !ok(
            "is_token_revoked",
            store.is_token_revoked(&sibling, n).await
        ),
        "store contract: revoke_token must not revoke other tokens of the family"
    );
    let unrelated = uid("jti");
    ok(
        "revoke_token",
        store.revoke_token(&unrelated, n + 100).await,
    );
    assert!(ok(
        "is_token_revoked",
        store.is_token_revoked(&unrelated, n).await
    ));
}

/// `record_assertion_id` (RFC 7523 `jti` replay): the first use of a (client, `jti`) pair is
/// recorded, every later one until its expiry is a replay; the same `jti` of another client
/// is its own; once the record has expired the pair may be recorded again; a sweep keeps a
/// live record.
pub async fn assertion_ids<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (client, other, jti) = (uid("client"), uid("client"), uid("jti"));
    assert!(
        ok(
            "record_assertion_id",
            store.record_assertion_id(&client, &jti, n + 60, n).await
        ),
        "store contract: a new assertion id must be recorded"
    );
    assert!(
        !ok(
            "record_assertion_id",
            store.record_assertion_id(&client, &jti, n + 60, n).await
        ),
        "store contract: a recorded assertion id must be refused (replay)"
    );
    assert!(
        !ok(
            "record_assertion_id",
            store
                .record_assertion_id(&client, &jti, n + 60, n + 60)
                .await
        ),
        "store contract: an assertion id must stay recorded until its expires_at"
    );
    assert!(
        ok(
            "record_assertion_id",
            store.record_assertion_id(&other, &jti, n + 60, n).await
        ),
        "store contract: assertion ids are per client"
    );
    ok("sweep", store.sweep(n).await);
    assert!(
        !ok(
            "record_assertion_id",
            store
                .record_assertion_id(&client, &jti, n + 60, n + 1)
                .await
        ),
        "store contract: a sweep must keep a live assertion id"
    );
    assert!(
        ok(
            "record_assertion_id",
            store
                .record_assertion_id(&client, &jti, n + 60, n + 61)
                .await
        ),
        "store contract: an expired assertion id may be recorded again"
    );
}

/// Kept upstream tokens: none at first; the record put is the record got, byte for byte
/// (binary, with NUL and non-UTF-8 bytes); a second put replaces it; records are per
/// (provider, subject) (another provider, another subject, and a pair whose parts are split
/// differently each have their own); a sweep keeps them; a delete forgets them (and says
/// whether there was one).
pub async fn upstream_tokens<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let (provider, subject) = (uid("https://idp.example.com/"), uid("user"));
    assert_eq!(
        ok(
            "get_upstream_tokens",
            store.get_upstream_tokens(&provider, &subject).await
        ),
        None,
        "store contract: no upstream tokens before any are put"
    );
    let first: Vec<u8> = vec![1, 0, 0xff, 0xfe, b'a', 0, 7];
    ok(
        "put_upstream_tokens",
        store
            .put_upstream_tokens(&provider, &subject, first.clone(), n)
            .await,
    );
    assert_eq!(
        ok(
            "get_upstream_tokens",
            store.get_upstream_tokens(&provider, &subject).await
        )
        .as_deref(),
        Some(first.as_slice()),
        "store contract: the upstream token record must come back byte for byte"
    );
    let second: Vec<u8> = (0..=255u8).collect();
    ok(
        "put_upstream_tokens",
        store
            .put_upstream_tokens(&provider, &subject, second.clone(), n + 1)
            .await,
    );
    assert_eq!(
        ok(
            "get_upstream_tokens",
            store.get_upstream_tokens(&provider, &subject).await
        )
        .as_deref(),
        Some(second.as_slice()),
        "store contract: a second put must replace the upstream token record"
    );
    let other_provider = uid("https://other.example.com/");
    let split = (format!("{provider}|"), subject.clone());
    for (p, s) in [
        (other_provider.as_str(), subject.as_str()),
        (provider.as_str(), "someone-else"),
        (split.0.as_str(), split.1.as_str()),
    ] {
        assert_eq!(
            ok("get_upstream_tokens", store.get_upstream_tokens(p, s).await),
            None,
            "store contract: upstream token records are per (provider, subject)"
        );
    }
    ok("sweep", store.sweep(n + 10 * 365 * 24 * 3600).await);
    assert!(
        ok(
            "get_upstream_tokens",
            store.get_upstream_tokens(&provider, &subject).await
        )
        .is_some(),
        "store contract: a sweep must keep upstream token records"
    );
    assert!(
        ok(
            "delete_upstream_tokens",
            store.delete_upstream_tokens(&provider, &subject).await
        ),
        "store contract: deleting a kept upstream token record must say it was there"
    );
    assert_eq!(
        ok(
            "get_upstream_tokens",
            store.get_upstream_tokens(&provider, &subject).await
        ),
        None,
        "store contract: a deleted upstream token record must be gone"
    );
    assert!(
        !ok(
            "delete_upstream_tokens",
            store.delete_upstream_tokens(&provider, &subject).await
        ),
        "store contract: deleting an absent upstream token record must say so"
    );
}

/// [`ASSERTION_RACERS`] concurrent uses of one assertion id: exactly one is recorded.
pub async fn concurrent_assertion_id<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let (client, jti) = (uid("client"), uid("jti"));
    let barrier = Arc::new(Barrier::new(ASSERTION_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..ASSERTION_RACERS {
        let (store, barrier, client, jti) =
            (store.clone(), barrier.clone(), client.clone(), jti.clone());
        set.spawn(async move {
            barrier.wait().await;
            store.record_assertion_id(&client, &jti, n + 60, n).await
        });
    }
    let mut recorded = 0;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| panic!("racer panicked: {e}"));
        if ok("record_assertion_id", r) {
            recorded += 1;
        }
    }
    assert_eq!(
        recorded, 1,
        "store contract: exactly one of {ASSERTION_RACERS} concurrent uses of an assertion id may be recorded"
    );
}

/// Upstream logins in progress (`put_upstream_login` / `take_upstream_login`): a missing
/// record is `None`; a stored one is returned once, as stored, then is gone; a second put
/// under one key replaces the first; an expired one is never returned (at its `expires_at`
/// or later, swept or not); the sweep keeps a live one.
pub async fn upstream_logins<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let login = |payload: &str, expires_at: u64| UpstreamLogin {
        payload: payload.to_owned(),
        expires_at,
    };
    let missing = SecretHash::of(&uid("state"));
    assert_eq!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&missing, n).await
        ),
        None,
        "store contract: an unknown upstream login must be None"
    );
    let key = SecretHash::of(&uid("state"));
    ok(
        "put_upstream_login",
        store
            .put_upstream_login(&key, login("{\"a\":1}", n + 600))
            .await,
    );
    ok(
        "put_upstream_login",
        store
            .put_upstream_login(&key, login("{\"a\":2}", n + 600))
            .await,
    );
    assert_eq!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&key, n).await
        ),
        Some(login("{\"a\":2}", n + 600)),
        "store contract: an upstream login must be returned as last stored"
    );
    assert_eq!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&key, n).await
        ),
        None,
        "store contract: an upstream login must be taken once"
    );
    // Expired: at its expiry and after, whether or not the sweep ran.
    let expired = SecretHash::of(&uid("state"));
    ok(
        "put_upstream_login",
        store.put_upstream_login(&expired, login("{}", n + 5)).await,
    );
    assert_eq!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&expired, n + 5).await
        ),
        None,
        "store contract: an upstream login must not be returned at its expiry"
    );
    let swept = SecretHash::of(&uid("state"));
    ok(
        "put_upstream_login",
        store.put_upstream_login(&swept, login("{}", n + 1)).await,
    );
    let live = SecretHash::of(&uid("state"));
    ok(
        "put_upstream_login",
        store.put_upstream_login(&live, login("{}", n + 600)).await,
    );
    // The sweep (or, for Redis, the key's own expiry) drops what expired; the take refuses
    // it in any case.
    ok("sweep", store.sweep(n + 2).await);
    assert_eq!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&swept, n + 2).await
        ),
        None,
        "store contract: an expired upstream login must stay gone after the sweep"
    );
    assert!(
        ok(
            "take_upstream_login",
            store.take_upstream_login(&live, n).await
        )
        .is_some(),
        "store contract: the sweep must keep a live upstream login"
    );
}

/// [`UPSTREAM_LOGIN_RACERS`] concurrent takes of one upstream login (two callbacks with one
/// `state`, on any instances sharing the store): exactly one gets it.
pub async fn concurrent_upstream_login<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let key = SecretHash::of(&uid("state"));
    ok(
        "put_upstream_login",
        store
            .put_upstream_login(
                &key,
                UpstreamLogin {
                    payload: "{}".into(),
                    expires_at: n + 600,
                },
            )
            .await,
    );
    let barrier = Arc::new(Barrier::new(UPSTREAM_LOGIN_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..UPSTREAM_LOGIN_RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            store.take_upstream_login(&key, n).await
        });
    }
    let mut taken = 0;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| panic!("racer panicked: {e}"));
        if ok("take_upstream_login", r).is_some() {
            taken += 1;
        }
    }
    assert_eq!(
        taken, 1,
        "store contract: exactly one of {UPSTREAM_LOGIN_RACERS} concurrent takes of an upstream login may get it"
    );
}

/// Consent: none at first, remembered after `put_consent`, replaced by the next one, kept
/// per (subject, client).
pub async fn consent<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let subject = uid("user");
    let client = uid("client");
    assert!(ok("get_consent", store.get_consent(&subject, &client).await).is_none());
    ok(
        "put_consent",
        store
            .put_consent(&subject, &client, &scope("read"), n)
            .await,
    );
    assert_eq!(
        ok("get_consent", store.get_consent(&subject, &client).await),
        Some(scope("read"))
    );
    ok(
        "put_consent",
        store
            .put_consent(&subject, &client, &scope("read write"), n)
            .await,
    );
    assert_eq!(
        ok("get_consent", store.get_consent(&subject, &client).await),
        Some(scope("read write")),
        "store contract: put_consent must replace the previous consent"
    );
    assert!(
        ok(
            "get_consent",
            store.get_consent(&subject, &uid("client")).await
        )
        .is_none(),
        "store contract: consent is per client"
    );
    assert!(
        ok(
            "get_consent",
            store.get_consent(&uid("user"), &client).await
        )
        .is_none(),
        "store contract: consent is per subject"
    );
}

/// Pending requests: readable (repeatedly) until taken, taken exactly once, invisible once
/// expired.
pub async fn pending<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let id = uid("pending");
    let p = sample_pending(n + 600);
    ok("put_pending", store.put_pending(&id, p.clone()).await);
    for _ in 0..2 {
        assert_eq!(
            ok("get_pending", store.get_pending(&id, n).await).as_ref(),
            Some(&p),
            "store contract: get_pending must return the request unchanged, repeatedly"
        );
    }
    assert_eq!(
        ok("take_pending", store.take_pending(&id, n).await).as_ref(),
        Some(&p)
    );
    assert!(
        ok("take_pending", store.take_pending(&id, n).await).is_none(),
        "store contract: take_pending must succeed only once"
    );
    assert!(ok("get_pending", store.get_pending(&id, n).await).is_none());

    let expired = uid("pending");
    ok(
        "put_pending",
        store.put_pending(&expired, sample_pending(n + 10)).await,
    );
    assert!(
        ok("get_pending", store.get_pending(&expired, n + 10).await).is_none(),
        "store contract: an expired pending request must be invisible"
    );
    assert!(
        ok("take_pending", store.take_pending(&expired, n + 10).await).is_none(),
        "store contract: an expired pending request must not be taken"
    );
}

/// `sweep` drops expired codes, pending requests and revoked-token entries (and counts
/// them), and keeps everything live: an unexpired code, a live family, a revoked family's
/// tombstone, an unexpired revocation.
pub async fn sweep_removes_only_expired<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    ok(
        "put_code",
        store
            .put_code(
                SecretHash::of(&uid("code")),
                sample_code("testkit-client", n - 1),
            )
            .await,
    );
    ok(
        "put_pending",
        store
            .put_pending(&uid("pending"), sample_pending(n - 1))
            .await,
    );
    ok("revoke_token", store.revoke_token(&uid("jti"), n - 1).await);

    let live_code = SecretHash::of(&uid("code"));
    let code = sample_code("testkit-client", n + 60);
    ok("put_code", store.put_code(live_code, code.clone()).await);
    let live_pending = uid("pending");
    ok(
        "put_pending",
        store
            .put_pending(&live_pending, sample_pending(n + 600))
            .await,
    );
    let live_jti = uid("jti");
    ok("revoke_token", store.revoke_token(&live_jti, n + 600).await);
    let (_, token) = live_family(store).await;
    let tombstone = uid("fam");
    ok("revoke_family", store.revoke_family(&tombstone, n).await);

    let swept = ok("sweep", store.sweep(n).await);
    assert!(
        swept >= 3,
        "store contract: sweep must remove (and count) the expired code, pending request and revocation; reported {swept}"
    );
    assert_eq!(
        ok("take_code", store.take_code(&live_code, "fam", n).await),
        CodeTake::Taken(code),
        "store contract: sweep must keep unexpired codes"
    );
    assert!(
        ok("get_pending", store.get_pending(&live_pending, n).await).is_some(),
        "store contract: sweep must keep unexpired pending requests"
    );
    assert!(
        ok(
            "is_token_revoked",
            store.is_token_revoked(&live_jti, n).await
        ),
        "store contract: sweep must keep unexpired revocations"
    );
    assert!(
        family_of(store, &token).await.is_some(),
        "store contract: sweep must keep live families"
    );
    assert!(
        matches!(
            store
                .create_family(sample_family(&tombstone, n + 3600), None)
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: sweep must keep a freshly revoked family's tombstone"
    );
}

/// `stats` counts live codes, live families and remembered revocations.
pub async fn stats<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let base = ok("stats", store.stats(n).await);

    let code = SecretHash::of(&uid("code"));
    ok(
        "put_code",
        store
            .put_code(code, sample_code("testkit-client", n + 60))
            .await,
    );
    let s = ok("stats", store.stats(n).await);
    assert_eq!(
        s.live_codes,
        base.live_codes + 1,
        "store contract: stats must count a new code"
    );
    ok("take_code", store.take_code(&code, "fam", n).await);
    let s = ok("stats", store.stats(n).await);
    assert_eq!(
        s.live_codes, base.live_codes,
        "store contract: stats must not count a redeemed code as live"
    );

    let (family, _) = live_family(store).await;
    let s = ok("stats", store.stats(n).await);
    assert_eq!(
        s.live_families,
        base.live_families + 1,
        "store contract: stats must count a new family"
    );
    ok(
        "revoke_family",
        store.revoke_family(&family.family_id, n).await,
    );
    let s = ok("stats", store.stats(n).await);
    assert_eq!(
        s.live_families, base.live_families,
        "store contract: stats must not count a revoked family as live"
    );

    ok(
        "revoke_token",
        store.revoke_token(&uid("jti"), n + 60).await,
    );
    let s = ok("stats", store.stats(n).await);
    assert_eq!(
        s.revoked_tokens,
        base.revoked_tokens + 1,
        "store contract: stats must count a remembered revocation"
    );
}

/// A revoked family's access tokens stay refused after the **family** expires and `sweep`
/// runs: access tokens issued by a refresh shortly before the family's `expires_at` live past
/// it (up to [`MAX_ACCESS_TOKEN_SECS`]), so the revocation must be remembered for at least
/// that long after `revoke_family`, like the tombstone of an unknown family. A live,
/// unrevoked family that expires is simply gone.
pub async fn revocation_outlives_family<S: GrantStore + ?Sized>(store: &S) {
    let n = now();
    let later = n + REVOCATION_SWEEP_AHEAD;
    let family = sample_family(&uid("fam"), n + 60);
    ok(
        "create_family",
        store
            .create_family(family.clone(), Some(SecretHash::of(&uid("rt"))))
            .await,
    );
    ok(
        "revoke_family",
        store.revoke_family(&family.family_id, n).await,
    );
    ok("sweep", store.sweep(later).await);
    assert!(
        ok(
            "is_token_revoked",
            store
                .is_token_revoked(&format!("{}.x", family.family_id), later)
                .await
        ),
        "store contract: a revoked family's access tokens must stay revoked after the family expired and was swept (they may live up to {MAX_ACCESS_TOKEN_SECS} s after the revocation)"
    );
    assert!(
        matches!(
            store
                .create_family(sample_family(&family.family_id, later + 3600), None)
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "store contract: a revoked family id must not be re-created after the family expired and was swept"
    );
}

mod retention;

pub use retention::{
    IDLE_AGE, IDLE_CUTOFF, RATE_LIMIT, RATE_LIMIT_RACERS, TOUCH_RACE_ROUNDS, client_fingerprints,
    clients_in_use_kept, concurrent_rate_limit_hits, idle_clients_removed, rate_limit_window,
    run_rate_limits, run_retention, static_clients_kept, touch_during_idle_sweep,
    unused_clients_removed,
};
