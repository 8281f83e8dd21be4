//! Two instances of the authorization server, as two processes (the `store_node` example
//! binary) with separate memory but one store, behave as one server: they
//! take their signing keys from the store (no key is handed to them) and publish the same
//! JWKS; a client registers on A, authorizes on B, redeems the code on A, calls the MCP
//! endpoint on B, refreshes on B, and a revocation on A is refused by B's layer on the very
//! next request. Refreshes of one token racing across both instances rotate it once (the
//! others get the same successor), and a code redeemed on both at once is issued once. A key
//! rotated on A verifies on B at once, both JWKS converge, and rotations racing on both make
//! one key. Once on PostgreSQL, once on Redis (each skipped without its server, failed under
//! `CI`).

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;
use stores::flow::{Http, ISSUER};
use stores::{Node, PgSchema, RedisNamespace};

async fn scenario(backend: &str, env: HashMap<&'static str, String>) {
    let (a, b) = tokio::join!(Node::spawn(&env), Node::spawn(&env));
    let http = Http::new();

    // Both publish, and so verify with, the same key: the one the first of them created in
    // the store.
    let jwks = http.jwks(&a.base).await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    assert_eq!(jwks, http.jwks(&b.base).await);

    // DCR on A, authorize on B, token on A.
    let client = http.register(&a.base).await.expect("register on A");
    let code = http
        .authorize(&b.base, &client)
        .await
        .expect("B must know the client registered on A");
    let first = http
        .exchange(&a.base, &client, &code)
        .await
        .expect("A must redeem the code issued by B");
    assert_eq!(
        http.mcp(&b.base, &first.access).await,
        200,
        "B accepts A's token"
    );
    assert_eq!(http.mcp(&a.base, &first.access).await, 200);
    // The code is spent on both.
    let replay = http.exchange(&b.base, &client, &code).await;
    assert!(
        matches!(replay, Err((400, _))),
        "{backend}: a code redeemed on A must be refused on B: {replay:?}"
    );

    // Refresh on B; the new tokens work on A.
    let code = http.authorize(&a.base, &client).await.expect("authorize");
    let tokens = http
        .exchange(&b.base, &client, &code)
        .await
        .expect("exchange");
    let second = http
        .refresh(&b.base, &client, &tokens.refresh)
        .await
        .expect("refresh on B of a token minted by B");
    assert_eq!(http.mcp(&a.base, &second.access).await, 200);

    // Eight refreshes of one token, alternating between the instances, at once: all succeed
    // with one and the same successor, and the family stays alive.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (http, client, refresh) = (http.clone(), client.clone(), second.refresh.clone());
        set.spawn(async move { http.refresh(&base, &client, &refresh).await });
    }
    let mut successors = Vec::new();
    while let Some(r) = set.join_next().await {
        let t = r
            .expect("task")
            .unwrap_or_else(|e| panic!("{backend}: a racing refresh failed: {e:?}"));
        successors.push(t);
    }
    assert!(
        successors
            .iter()
            .all(|t| t.refresh == successors[0].refresh),
        "{backend}: racing refreshes across instances must share one successor"
    );
    let third = successors.swap_remove(0);
    assert_eq!(http.mcp(&b.base, &third.access).await, 200);

    // One code redeemed on A and B at the same moment: issued once.
    let code = http.authorize(&b.base, &client).await.expect("authorize");
    let (on_a, on_b) = tokio::join!(
        http.exchange(&a.base, &client, &code),
        http.exchange(&b.base, &client, &code)
    );
    // At most one exchange wins. When both land together, the loser's replay revokes the
    // winner's family before it is created, so both fail: the replay defence of RFC 6749
    // §4.1.2, as the store contract documents for `GrantStore::create_family`.
    assert!(
        usize::from(on_a.is_ok()) + usize::from(on_b.is_ok()) <= 1,
        "{backend}: a code raced on both instances must never be issued twice: {on_a:?} / {on_b:?}"
    );

    // Revoke the refresh token on A: B refuses the family's access token at once, and its
    // refresh token everywhere.
    assert_eq!(http.revoke(&a.base, &client, &third.refresh).await, 200);
    assert_eq!(
        http.mcp(&b.base, &third.access).await,
        401,
        "{backend}: B must refuse an access token of a family revoked on A"
    );
    assert!(matches!(
        http.refresh(&b.base, &client, &third.refresh).await,
        Err((400, _))
    ));

    // Revoke one access token on B: A refuses it, its sibling grant is untouched.
    let (other_client, other) = http.new_grant(&b.base).await.expect("grant");
    let (_, sibling) = http.new_grant(&a.base).await.expect("grant");
    assert_eq!(http.mcp(&a.base, &other.access).await, 200);
    assert_eq!(
        http.revoke(&b.base, &other_client, &other.access).await,
        200
    );
    assert_eq!(
        http.mcp(&a.base, &other.access).await,
        401,
        "{backend}: A must refuse an access token revoked on B"
    );
    assert_eq!(http.mcp(&a.base, &sibling.access).await, 200);
    assert!(
        http.refresh(&a.base, &other_client, &other.refresh)
            .await
            .is_ok(),
        "revoking an access token leaves its refresh token alone"
    );
    rotation(backend, &http, &a.base, &b.base).await;
    eprintln!("{backend}: two instances behaved as one");
    a.kill9().await;
    b.kill9().await;
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().expect("a JWT");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let header: Value = serde_json::from_slice(&header).expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// A rotation on A reaches B: B verifies A's next token (signed with the new key) at once,
/// tokens signed before keep working on both, both JWKS converge (B's background reload, or
/// the unknown kid, brings the key), and B signs with the new key too. Then both rotate at
/// the same moment: one wins, and they agree on the key.
async fn rotation(backend: &str, http: &Http, a: &str, b: &str) {
    let (client, before) = http.new_grant(a).await.expect("grant on A");
    let old = kid_of(&before.access);
    let (new, won) = http.rotate_signing_key(a).await;
    assert!(won, "{backend}: A alone rotates, and wins");
    assert_ne!(new, old);

    let code = http.authorize(a, &client).await.expect("authorize on A");
    let after = http
        .exchange(a, &client, &code)
        .await
        .expect("exchange on A");
    assert_eq!(
        kid_of(&after.access),
        new,
        "{backend}: A signs with its new key"
    );
    assert_eq!(
        http.mcp(b, &after.access).await,
        200,
        "{backend}: B must verify a token signed with the key A rotated in"
    );
    assert_eq!(
        http.mcp(b, &before.access).await,
        200,
        "{backend}: older tokens stay valid"
    );
    assert_eq!(http.mcp(a, &before.access).await, 200);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (ja, jb) = (http.jwks(a).await, http.jwks(b).await);
        if ja == jb {
            assert_eq!(kids(&ja), vec![new.clone(), old.clone()], "{backend}: {ja}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backend}: the JWKS of A and B did not converge: {ja} / {jb}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // B signs with the new key as well (its background reload runs every 2 s here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let code = http.authorize(b, &client).await.expect("authorize on B");
        let on_b = http
            .exchange(b, &client, &code)
            .await
            .expect("exchange on B");
        if kid_of(&on_b.access) == new {
            assert_eq!(http.mcp(a, &on_b.access).await, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backend}: B never signed with the key rotated in on A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // Both rotate at once, from the same current key: one new key, which both then publish.
    let ((ka, wa), (kb, wb)) = tokio::join!(http.rotate_signing_key(a), http.rotate_signing_key(b));
    assert_eq!(ka, kb, "{backend}: racing rotations must agree on one key");
    assert_eq!(
        usize::from(wa) + usize::from(wb),
        1,
        "{backend}: exactly one of two racing rotations wins"
    );
    assert_eq!(http.jwks(a).await, http.jwks(b).await);
    let mut published = kids(&http.jwks(a).await);
    assert_eq!(
        published.remove(0),
        ka,
        "{backend}: the current key comes first"
    );
    published.sort();
    let mut retired = vec![new, old];
    retired.sort();
    assert_eq!(
        published, retired,
        "{backend}: both retired keys are still published"
    );
}

fn base_env(store: String, namespace: String) -> HashMap<&'static str, String> {
    HashMap::from([
        ("MCP_OAUTH_STORE", store),
        ("MCP_OAUTH_STORE_NAMESPACE", namespace),
        ("MCP_OAUTH_PUBLIC_URL", ISSUER.to_owned()),
        // No signing key: the nodes take theirs from the store.
        ("MCP_OAUTH_KEY_REFRESH_SECS", "2".to_owned()),
        ("MCP_OAUTH_INSECURE_ADMIN_ROUTES", "1".to_owned()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres() {
    let Some(schema) = PgSchema::create("store_multi").await else {
        return;
    };
    let env = base_env(format!("postgres:{}", schema.url), schema.name.clone());
    let outcome = tokio::spawn(scenario("postgres", env)).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_redis() {
    let Some(ns) = RedisNamespace::create("store_multi").await else {
        return;
    };
    let env = base_env(format!("redis:{}", ns.url), ns.prefix.clone());
    let outcome = tokio::spawn(scenario("redis", env)).await;
    ns.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
