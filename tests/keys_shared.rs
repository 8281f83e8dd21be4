//! Signing keys kept in the store ([`KeyRing::from_store`]): two instances (two
//! authorization servers in one process, each with its own ring, sharing one key store) sign
//! and verify with one ring; a rotation on one is verified by the other's `McpOAuthLayer` at
//! once and reaches its `/jwks.json`; racing rotations make one key; tokens naming unknown
//! keys cost one store read per cooldown, not one each; a store that is down is a clear error
//! at start and a `503` later, never a 500; settings are checked; the private key never shows
//! in `Debug` output.

#![cfg(feature = "server")]

#[path = "support/app_probe.rs"]
mod app_probe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::post;
use http::StatusCode;
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::keys::{KeyError, KeyRing, RotationOutcome, SigningAlgorithm, SigningKey};
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::store::{KeyRotation, KeyStore, MemoryStore, StoreError, StoredKey};
use mcp_oauth::{ConfigError, McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};

const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";

/// A key store that counts reads and can be switched off.
#[derive(Default)]
struct Probe {
    inner: Arc<MemoryStore>,
    loads: AtomicUsize,
    down: AtomicBool,
}

impl Probe {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("probe: switched off"));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyStore for Probe {
    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.load_keys(ring, now).await
    }

    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.create_initial_key(ring, key).await
    }

    async fn rotate_key(
        &self,
        ring: &str,
        expected_current: &str,
        next: StoredKey,
        now: u64,
        publish_until: u64,
    ) -> Result<KeyRotation, StoreError> {
        self.check()?;
        self.inner
            .rotate_key(ring, expected_current, next, now, publish_until)
            .await
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune_keys(ring, now).await
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    let n = now();
    json!({
        "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": n + 300, "iat": n,
        "jti": format!("fam-{n}.x"), "client_id": "c1", "scope": "read",
    })
}

/// An instance: an authorization server on `ring`, and its app (`/mcp` behind the layer,
/// plus the OAuth routes).
async fn instance(ring: KeyRing) -> (AuthorizationServer, Router) {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .key_ring(ring)
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/mcp", post(|| async { "ok" }))
        .layer(McpOAuthLayer::new(&cfg))
        .merge(oauth_router(&cfg, &server));
    (server, app)
}

/// A ring on `store` whose background refresh stays out of the way of the test.
async fn open(store: Arc<impl KeyStore>) -> KeyRing {
    KeyRing::from_store(store)
        .refresh_interval(Duration::from_secs(3600))
        .open()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_keys_and_see_each_others_rotation() {
    let store = Arc::new(MemoryStore::new());
    let (a, app_a) = instance(open(store.clone()).await).await;
    let (b, app_b) = instance(open(store.clone()).await).await;
    assert!(a.key_ring().is_shared());
    assert_eq!(a.key_ring().current().kid(), b.key_ring().current().kid());
    assert_eq!(
        app_probe::jwks_kids(&app_a).await,
        app_probe::jwks_kids(&app_b).await
    );

    // A token signed on A verifies on B.
    let t1 = a.key_ring().sign("at+jwt", &claims()).unwrap();
    assert_eq!(app_probe::mcp(&app_b, &t1).await, StatusCode::OK);

    // A rotates; B has not reloaded, yet verifies A's new token at once (unknown kid →
    // one reload), and then publishes the same keys as A.
    let old = a.key_ring().current().kid().to_owned();
    let rotated = a.rotate_signing_key().await.unwrap();
    let RotationOutcome::Rotated { kid: new } = rotated else {
        panic!("A alone must rotate: {rotated:?}");
    };
    assert_ne!(new, old);
    assert_eq!(b.key_ring().current().kid(), old, "B has not reloaded yet");
    let t2 = a.key_ring().sign("at+jwt", &claims()).unwrap();
    assert_eq!(app_probe::mcp(&app_b, &t2).await, StatusCode::OK);
    assert_eq!(
        b.key_ring().current().kid(),
        new,
        "B now signs with A's key"
    );
    assert_eq!(
        app_probe::jwks_kids(&app_a).await,
        app_probe::jwks_kids(&app_b).await
    );
    assert_eq!(
        app_probe::jwks_kids(&app_b).await,
        vec![new.clone(), old.clone()]
    );
    // Tokens signed before the rotation still verify everywhere.
    assert_eq!(app_probe::mcp(&app_a, &t1).await, StatusCode::OK);
    assert_eq!(app_probe::mcp(&app_b, &t1).await, StatusCode::OK);

    // B rotating from the key A rotated away from is superseded; from the current one it
    // wins.
    let (ra, rb) = tokio::join!(a.rotate_signing_key(), b.rotate_signing_key());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.kid(), rb.kid(), "racing rotations make one key");
    assert_eq!(
        usize::from(matches!(ra, RotationOutcome::Rotated { .. }))
            + usize::from(matches!(rb, RotationOutcome::Rotated { .. })),
        1,
        "exactly one racing rotation wins: {ra:?} / {rb:?}"
    );
    assert_eq!(a.key_ring().jwks(), b.key_ring().jwks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_instances_starting_at_once_make_one_key() {
    let store = Arc::new(MemoryStore::new());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        set.spawn(async move { open(store).await.current().kid().to_owned() });
    }
    let mut kids = Vec::new();
    while let Some(k) = set.join_next().await {
        kids.push(k.unwrap());
    }
    kids.dedup();
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(store.load_keys("default", now()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_cost_one_store_read_per_cooldown() {
    let probe = Arc::new(Probe::default());
    let ring = KeyRing::from_store(probe.clone())
        .refresh_interval(Duration::from_secs(3600))
        .unknown_kid_cooldown(Duration::from_secs(300))
        .open()
        .await
        .unwrap();
    let (_server, app) = instance(ring).await;
    let before = probe.loads.load(Ordering::SeqCst);
    // 100 tokens, each signed by a key nobody knows (100 different kids), at once.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        let token = SigningKey::generate(SigningAlgorithm::Es256)
            .unwrap()
            .sign("at+jwt", &claims())
            .unwrap();
        set.spawn(async move { app_probe::mcp(&app, &token).await });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        probe.loads.load(Ordering::SeqCst) - before,
        1,
        "a flood of unknown kids must cost one store read per cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_a_clear_error_then_a_503() {
    // Down at start: `open` fails and says why.
    let probe = Arc::new(Probe::default());
    probe.down.store(true, Ordering::SeqCst);
    let err = KeyRing::from_store(probe.clone()).open().await.unwrap_err();
    assert!(
        matches!(err, KeyError::Store(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("switched off"), "{err}");

    // Down later: known keys keep verifying (and signing); a token naming an unknown key,
    // which would need the store, is a 503, not a 401 and never a 500.
    probe.down.store(false, Ordering::SeqCst);
    let ring = KeyRing::from_store(probe.clone())
        .refresh_interval(Duration::from_secs(3600))
        .unknown_kid_cooldown(Duration::ZERO)
        .open()
        .await
        .unwrap();
    let (server, app) = instance(ring).await;
    probe.down.store(true, Ordering::SeqCst);
    let known = server.key_ring().sign("at+jwt", &claims()).unwrap();
    assert_eq!(app_probe::mcp(&app, &known).await, StatusCode::OK);
    let stranger = SigningKey::generate(SigningAlgorithm::Es256)
        .unwrap()
        .sign("at+jwt", &claims())
        .unwrap();
    assert_eq!(
        app_probe::mcp(&app, &stranger).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let err = server.rotate_signing_key().await.unwrap_err();
    assert!(matches!(err, KeyError::Store(_)), "{err:?}");
    assert!(server.key_ring().reload().await.is_err());
    assert_eq!(
        app_probe::mcp(&app, &known).await,
        StatusCode::OK,
        "the ring keeps its keys"
    );
    // Back up: the unknown key is still unknown, now a plain 401.
    probe.down.store(false, Ordering::SeqCst);
    assert_eq!(
        app_probe::mcp(&app, &stranger).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_and_scheduled_rotation() {
    let store = Arc::new(MemoryStore::new());
    let a = KeyRing::from_store(store.clone())
        .refresh_interval(Duration::from_secs(1))
        .rotate_every(Duration::from_secs(2))
        .open()
        .await
        .unwrap();
    let b = KeyRing::from_store(store.clone())
        .refresh_interval(Duration::from_secs(1))
        .open()
        .await
        .unwrap();
    let first = a.current().kid().to_owned();
    // Within a few seconds A rotates on schedule and B, which never rotates itself, follows
    // through its background refresh alone.
    // A generous deadline: the schedule is 1-2 s, the bound only catches "never".
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if a.current().kid() != first && b.current().kid() == a.current().kid() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled rotation reached B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.find(&first).is_some(),
        "the retired key is still accepted"
    );
}

#[tokio::test]
async fn settings_are_checked() {
    let bad = KeyRing::from_store(MemoryStore::new())
        .ring_name("no spaces")
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad,
            KeyError::InvalidSetting {
                setting: "ring_name",
                ..
            }
        ),
        "{bad:?}"
    );
    let bad = KeyRing::from_store(MemoryStore::new())
        .refresh_interval(Duration::ZERO)
        .open()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("refresh_interval"), "{bad}");

    // Retired keys must outlive the access tokens they signed.
    let short = KeyRing::from_store(MemoryStore::new())
        .retain_retired_for(Duration::from_secs(600))
        .open()
        .await
        .unwrap();
    let err = with_hour_tokens(short).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::KeyRetentionTooShort { retention, .. } if retention == Duration::from_secs(600)
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("retain_retired_for"), "{err}");

    // Rings are separate by name: EdDSA keys in another ring of the same store.
    let store = Arc::new(MemoryStore::new());
    let one = open(store.clone()).await;
    let two = KeyRing::from_store(store.clone())
        .ring_name("tenant-2")
        .algorithm(SigningAlgorithm::EdDsa)
        .open()
        .await
        .unwrap();
    assert_ne!(one.current().kid(), two.current().kid());
    assert_eq!(two.current().algorithm(), SigningAlgorithm::EdDsa);
}

#[tokio::test]
async fn the_private_key_never_shows() {
    let key = StoredKey::generate(SigningAlgorithm::Es256, now()).unwrap();
    let der = key.private_key.as_pkcs8_der().to_vec();
    let shown = format!("{key:?} {:?}", key.private_key);
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &der[..8])), "{shown}");
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&hex[..16]), "{shown}");
    let ring = open(Arc::new(MemoryStore::new())).await;
    let shown = format!("{ring:?}");
    assert!(!shown.contains(&hex[..16]));
    // A record whose kid does not match its key is refused.
    let mut forged = key.clone();
    forged.kid = "someone-else".to_owned();
    assert!(matches!(
        forged.signing_key(),
        Err(KeyError::KidMismatch { kid }) if kid == "someone-else"
    ));
}

/// Without a store the server still rotates its own ring.
#[tokio::test]
async fn local_rings_rotate_too() {
    let ring = KeyRing::generate(SigningAlgorithm::EdDsa).unwrap();
    assert!(!ring.is_shared());
    let (server, app) = instance(ring).await;
    let old = server.key_ring().current().kid().to_owned();
    let outcome = server.rotate_signing_key().await.unwrap();
    assert!(matches!(outcome, RotationOutcome::Rotated { .. }));
    assert_eq!(
        server.key_ring().current().algorithm(),
        SigningAlgorithm::EdDsa
    );
    assert_eq!(
        app_probe::jwks_kids(&app).await,
        vec![outcome.kid().to_owned(), old]
    );
    server.key_ring().reload().await.unwrap();
}

/// Mints one access token with a `JwtIssuer` on `ring` (what the token endpoint does).
async fn mint(ring: &KeyRing) -> Result<String, mcp_oauth::issuer::IssueError> {
    use mcp_oauth::issuer::{AccessTokenRequest, JwtIssuer, TokenIssuer};
    let scope: mcp_oauth::scope::ScopeSet = "read".parse().unwrap();
    let claims = serde_json::Map::new();
    JwtIssuer::new(ISSUER, ring.clone())
        .issue(&AccessTokenRequest {
            subject: "alice",
            client_id: "c1",
            scope: &scope,
            audience: RESOURCE,
            family_id: "fam",
            auth_time: now(),
            claims: &claims,
            lifetime: Duration::from_secs(300),
        })
        .await
        .map(|t| t.token)
}

/// Issue 13 item 6: the retention must cover the access-token lifetime **plus the refresh
/// interval** (an instance that has not reloaded may sign with a key another one retired
/// up to a refresh interval ago) plus a margin. Access + 2 min was accepted before.
#[tokio::test]
async fn retention_must_cover_the_refresh_interval_too() {
    let short = KeyRing::from_store(MemoryStore::new())
        .refresh_interval(Duration::from_secs(3600))
        .retain_retired_for(Duration::from_secs(3600 + 120))
        .open()
        .await
        .unwrap();
    let err = with_hour_tokens(short).await.unwrap_err();
    let ConfigError::KeyRetentionTooShort {
        retention,
        refresh_interval,
        needed,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*retention, Duration::from_secs(3720));
    assert_eq!(*refresh_interval, Duration::from_secs(3600));
    assert_eq!(*needed, Duration::from_secs(3600 + 3600 + 300));
    let text = err.to_string();
    for n in ["3720", "3600", "7500"] {
        assert!(text.contains(n), "the error names {n}: {text}");
    }

    // Enough: accepted; and the default retention of a ring the server opens covers it.
    let enough = KeyRing::from_store(MemoryStore::new())
        .refresh_interval(Duration::from_secs(60))
        .retain_retired_for(Duration::from_secs(3600 + 60 + 300))
        .open()
        .await
        .unwrap();
    with_hour_tokens(enough).await.unwrap();
}

/// Issue 13 item 6: an instance whose reload failed may have missed a rotation, so it must
/// not go on signing with the key it holds as current (other instances may drop it before
/// the tokens expire): minting fails (the token endpoint answers 503) until a reload works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_whose_reload_failed_refuses_to_sign() {
    let shared = Arc::new(MemoryStore::new());
    let a = open(shared.clone()).await;
    // B reaches the same keys through a connection that can fail.
    let probe = Arc::new(Probe {
        inner: shared.clone(),
        ..Probe::default()
    });
    let b = open(probe.clone()).await;
    assert_eq!(a.current().kid(), b.current().kid());
    assert!(mint(&b).await.is_ok());

    // A rotates; B's store is unreachable when it reloads.
    let old = b.current().kid().to_owned();
    let rotated = a.rotate_fresh().await.unwrap();
    probe.down.store(true, Ordering::SeqCst);
    assert!(b.reload().await.is_err());
    assert_eq!(
        b.current().kid(),
        old,
        "B still holds the retired key as current"
    );
    let refused = b.sign("at+jwt", &claims()).unwrap_err();
    assert!(
        matches!(
            refused,
            KeyError::Stale {
                reload_failed: true,
                ..
            }
        ),
        "{refused:?}"
    );
    let err = mint(&b).await.unwrap_err();
    assert!(err.to_string().contains("refusing to sign"), "{err}");

    // The store is back: minting reloads first (at most once a second: wait that out) and
    // signs with A's new key.
    probe.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = mint(&b).await.unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rotated.kid()));
    assert!(b.sign("at+jwt", &claims()).is_ok());
}

/// Issue 13 item 6: `KeyRing::rotate` on a shared ring made a key only this process knew
/// (other instances refused its tokens, the next reload dropped it). It is refused now, and
/// `rotate_to` rotates through the store, where every instance sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_shared_ring_goes_through_the_store() {
    let store = Arc::new(MemoryStore::new());
    let a = open(store.clone()).await;
    let b = open(store.clone()).await;
    let first = a.current().kid().to_owned();
    let local = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    assert!(matches!(a.rotate(local), Err(KeyError::SharedRing)));
    assert_eq!(a.current().kid(), first, "nothing changed");

    let pem_key = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let new_kid = pem_key.kid().to_owned();
    let outcome = a.rotate_to(pem_key).await.unwrap();
    assert_eq!(
        outcome,
        RotationOutcome::Rotated {
            kid: new_kid.clone()
        }
    );
    assert_eq!(a.current().kid(), new_kid);
    b.reload().await.unwrap();
    assert_eq!(
        b.current().kid(),
        new_kid,
        "the other instance signs with it"
    );
    assert_eq!(b.current().algorithm(), SigningAlgorithm::EdDsa);
    let token = a.sign("at+jwt", &claims()).unwrap();
    let (_server, app_b) = instance(b).await;
    assert_eq!(app_probe::mcp(&app_b, &token).await, StatusCode::OK);
}

/// An authorization server issuing one-hour access tokens, signing with `ring`.
async fn with_hour_tokens(ring: KeyRing) -> Result<AuthorizationServer, ConfigError> {
    AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .access_token_ttl(Duration::from_secs(3600))
        .key_ring(ring)
        .build()
        .await
}
