//! Durable by default: an authorization server on a durable store keeps its signing keys in
//! that store unless given keys, so a restart signs nobody out (issue 10 item 2). A token
//! from the real token endpoint of a server on a SQLite file verifies at a second server
//! built on a fresh handle of the same file, with no `.key_ring(..)` anywhere. Keys that
//! would die with the process on a durable store are refused at build time with
//! `ConfigError::EphemeralKeys`: a store of your own that offers no key store, a ring from
//! `KeyRing::generate`, a ring kept in a `MemoryStore`. `.ephemeral_keys()` is the named
//! opt-out, and it logs a warning; a `MemoryStore` needs neither and logs nothing; keys
//! loaded from PEM are durable and accepted.

#![cfg(feature = "server")]
// Most cases need a durable store (SQLite); without it, their helpers go unused.
#![cfg_attr(not(feature = "sqlite"), allow(unused_imports, dead_code))]

#[path = "support/logs.rs"]
mod logs;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::post;
use http::{Request, StatusCode};
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::config::EphemeralKeysReason;
use mcp_oauth::keys::{KeyRing, SigningAlgorithm, SigningKey};
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder};
use mcp_oauth::store::{
    AuthorizationCode, CodeTake, GrantStore, MemoryStore, PendingAuthorization, RefreshFamily,
    RefreshLookup, Rotation, SecretHash, StoreError, StoreStats,
};
use mcp_oauth::{ConfigError, McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "http://127.0.0.1/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// Words of the warning `.ephemeral_keys()` logs on a durable store.
const WARNING: &str = "a restart signs everyone out";

// ------------------------------------------------------------------ helpers

fn builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
}

/// `/mcp` behind the layer, plus the OAuth routes of `server`.
fn app(server: &AuthorizationServer) -> Router {
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("read", "Read")
        .authorization_server(server)
        .build()
        .unwrap();
    Router::new()
        .route("/mcp", post(|| async { "ok" }))
        .layer(McpOAuthLayer::new(&cfg))
        .merge(oauth_router(&cfg, server))
}

async fn send(app: &Router, mut req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let peer: SocketAddr = "192.0.2.10:4000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

/// Registers a client, has it authorized (auto-approved) and exchanges the code at the
/// token endpoint: the access token.
async fn access_token(app: &Router) -> String {
    let (status, _, body) = send(
        app,
        Request::post("/register")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"})
                    .to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client = body["client_id"].as_str().unwrap().to_owned();
    let authorize = url::Url::parse_with_params(
        "http://localhost/authorize",
        &[
            ("response_type", "code"),
            ("client_id", &client),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("scope", "read"),
            ("state", "s"),
        ],
    )
    .unwrap();
    let path = format!("/authorize?{}", authorize.query().unwrap());
    let (status, headers, _) = send(app, Request::get(path).body(Body::empty()).unwrap()).await;
    assert!(status.is_redirection(), "{status}");
    let location = url::Url::parse(headers["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &client),
        ])
        .finish();
    let (status, _, body) = send(
        app,
        Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn mcp(app: &Router, token: &str) -> StatusCode {
    let req = Request::post("/mcp")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
        ))
        .unwrap();
    send(app, req).await.0
}

/// The header `kid` of a JWT.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// A grant store of someone's own: a `MemoryStore` inside, but it does not say it is not
/// durable (so it is taken to be) and offers no key store.
#[derive(Default)]
struct OwnStore(MemoryStore);

#[async_trait]
impl GrantStore for OwnStore {
    async fn put_code(&self, h: SecretHash, c: AuthorizationCode) -> Result<(), StoreError> {
        self.0.put_code(h, c).await
    }
    async fn take_code(&self, h: &SecretHash, f: &str, n: u64) -> Result<CodeTake, StoreError> {
        self.0.take_code(h, f, n).await
    }
    async fn create_family(
        &self,
        f: RefreshFamily,
        r: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        self.0.create_family(f, r).await
    }
    async fn rotate_refresh(
        &self,
        p: &SecretHash,
        s: SecretHash,
        x: Vec<u8>,
        n: u64,
        g: u64,
    ) -> Result<Rotation, StoreError> {
        self.0.rotate_refresh(p, s, x, n, g).await
    }
    async fn revoke_family(&self, f: &str, n: u64) -> Result<(), StoreError> {
        self.0.revoke_family(f, n).await
    }
    async fn family_of_refresh(
        &self,
        h: &SecretHash,
        n: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        self.0.family_of_refresh(h, n).await
    }
    async fn revoke_token(&self, j: &str, e: u64) -> Result<(), StoreError> {
        self.0.revoke_token(j, e).await
    }
    async fn is_token_revoked(&self, j: &str, n: u64) -> Result<bool, StoreError> {
        self.0.is_token_revoked(j, n).await
    }
    async fn get_consent(&self, s: &str, c: &str) -> Result<Option<ScopeSet>, StoreError> {
        self.0.get_consent(s, c).await
    }
    async fn put_consent(&self, s: &str, c: &str, x: &ScopeSet, n: u64) -> Result<(), StoreError> {
        self.0.put_consent(s, c, x, n).await
    }
    async fn put_pending(&self, i: &str, p: PendingAuthorization) -> Result<(), StoreError> {
        self.0.put_pending(i, p).await
    }
    async fn get_pending(
        &self,
        i: &str,
        n: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.0.get_pending(i, n).await
    }
    async fn take_pending(
        &self,
        i: &str,
        n: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.0.take_pending(i, n).await
    }
    async fn sweep(&self, n: u64) -> Result<u64, StoreError> {
        self.0.sweep(n).await
    }
    async fn stats(&self, n: u64) -> Result<StoreStats, StoreError> {
        self.0.stats(n).await
    }
}

fn refused(result: Result<AuthorizationServer, ConfigError>) -> EphemeralKeysReason {
    match result {
        Err(ConfigError::EphemeralKeys { reason }) => reason,
        Err(other) => panic!("expected EphemeralKeys, got {other:?}"),
        Ok(_) => panic!("expected EphemeralKeys, the server built"),
    }
}

// ------------------------------------------------------------------ refusals and opt-out

/// A durable store of one's own without a key store, and no key ring: refused, and the
/// message names both fixes.
#[tokio::test]
async fn a_durable_store_without_a_key_store_needs_keys_or_the_opt_out() {
    let err = builder()
        .grant_store(OwnStore::default())
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ConfigError::EphemeralKeys {
                reason: EphemeralKeysReason::NoKeyStore
            }
        ),
        "{err:?}"
    );
    for fix in [".key_ring(", ".ephemeral_keys()", "GrantStore::key_store"] {
        assert!(text.contains(fix), "the message names {fix}: {text}");
    }
}

/// Keys that die with the process, given for a durable store: refused whichever way they
/// were made.
#[tokio::test]
async fn process_local_keys_on_a_durable_store_are_refused() {
    let generated = builder()
        .grant_store(OwnStore::default())
        .key_ring(KeyRing::generate(SigningAlgorithm::Es256).unwrap())
        .build()
        .await;
    assert_eq!(refused(generated), EphemeralKeysReason::EphemeralKeyRing);

    let generated_key = builder()
        .grant_store(OwnStore::default())
        .key_ring(KeyRing::new(
            SigningKey::generate(SigningAlgorithm::EdDsa).unwrap(),
        ))
        .build()
        .await;
    assert_eq!(
        refused(generated_key),
        EphemeralKeysReason::EphemeralKeyRing
    );

    // A shared ring, but kept in memory: gone on a restart just the same.
    let in_memory = builder()
        .grant_store(OwnStore::default())
        .key_ring(
            KeyRing::from_store(MemoryStore::new())
                .open()
                .await
                .unwrap(),
        )
        .build()
        .await;
    assert_eq!(refused(in_memory), EphemeralKeysReason::EphemeralKeyRing);

    // A loaded ring rotated to a generated key in process is just as local.
    let ring =
        KeyRing::new(SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem_key()).unwrap());
    ring.rotate(SigningKey::generate(SigningAlgorithm::Es256).unwrap())
        .unwrap();
    let rotated = builder()
        .grant_store(OwnStore::default())
        .key_ring(ring)
        .build()
        .await;
    assert_eq!(refused(rotated), EphemeralKeysReason::EphemeralKeyRing);
}

/// `.ephemeral_keys()` builds on a durable store, with a generated key or the generated ring
/// given, and says once what it costs.
#[tokio::test]
async fn the_opt_out_builds_and_warns() {
    let (captured, _guard) = logs::Captured::start();
    let server = builder()
        .grant_store(OwnStore::default())
        .ephemeral_keys()
        .build()
        .await
        .unwrap();
    assert!(!server.key_ring().is_shared());
    let logs = captured.text();
    assert_eq!(logs.matches(WARNING).count(), 1, "{logs}");
    assert!(logs.contains("mcp_oauth::config"), "{logs}");
    assert!(logs.contains("ephemeral_keys"), "{logs}");

    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let kid = ring.current().kid().to_owned();
    let server = builder()
        .grant_store(OwnStore::default())
        .key_ring(ring)
        .ephemeral_keys()
        .build()
        .await
        .unwrap();
    assert_eq!(server.key_ring().current().kid(), kid, "the ring given");
    assert_eq!(captured.text().matches(WARNING).count(), 2);
}

/// A memory store needs no key ring and no opt-out, and logs nothing about keys (nor does
/// the opt-out there: nothing is lost that was not lost anyway).
#[tokio::test]
async fn a_memory_store_signs_with_a_process_key_silently() {
    let (captured, _guard) = logs::Captured::start();
    let server = builder().store(MemoryStore::new()).build().await.unwrap();
    assert!(!server.key_ring().is_shared());
    let default = builder().build().await.unwrap();
    assert!(!default.key_ring().is_shared());
    let opted = builder()
        .store(MemoryStore::new())
        .ephemeral_keys()
        .build()
        .await
        .unwrap();
    assert!(!opted.key_ring().is_shared());
    let generated = builder()
        .store(MemoryStore::new())
        .key_ring(KeyRing::generate(SigningAlgorithm::Es256).unwrap())
        .build()
        .await;
    assert!(generated.is_ok());
    let logs = captured.text();
    assert!(!logs.contains(WARNING), "{logs}");
    assert!(!logs.contains("signing key"), "{logs}");
}

/// Keys loaded from PEM come back after a restart: accepted on a durable store, without
/// the opt-out, and used as given.
#[tokio::test]
async fn pem_loaded_keys_are_durable() {
    let (captured, _guard) = logs::Captured::start();
    let key = SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem_key()).unwrap();
    let kid = key.kid().to_owned();
    let server = builder()
        .grant_store(OwnStore::default())
        .key_ring(KeyRing::new(key))
        .build()
        .await
        .unwrap();
    assert_eq!(server.key_ring().current().kid(), kid);
    let app = app(&server);
    let token = access_token(&app).await;
    assert_eq!(kid_of(&token), kid);
    assert_eq!(mcp(&app, &token).await, StatusCode::OK);
    assert!(!captured.text().contains(WARNING));
}

/// A fresh ES256 key as PKCS#8 PEM.
fn pem_key() -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = pair.to_pkcs8v1().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

// ------------------------------------------------------------------ SQLite

#[cfg(feature = "sqlite")]
mod sqlite {
    use mcp_oauth::store::KeyStore as _;
    use mcp_oauth::store::sql::SqliteStore;

    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcp_oauth_{name}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Server #1 on a SQLite file issues a token at its token endpoint; it goes away; server
    /// #2, built on a fresh handle of the same file with no key ring either, accepts the
    /// token and signs with the same key. A server on another file refuses it (the check
    /// can fail).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_survive_a_restart_on_one_sqlite_file() {
        let dir = temp_dir("keys_durable_restart");
        let file = dir.join("oauth.db");

        let first = builder()
            .store(SqliteStore::open(&file).await.unwrap())
            .build()
            .await
            .unwrap();
        assert!(
            first.key_ring().is_shared(),
            "the ring is kept in the store"
        );
        let kid = first.key_ring().current().kid().to_owned();
        let app_first = app(&first);
        let token = access_token(&app_first).await;
        assert_eq!(kid_of(&token), kid);
        assert_eq!(mcp(&app_first, &token).await, StatusCode::OK);
        drop(app_first);
        drop(first);

        let reopened = SqliteStore::open(&file).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let stored = reopened.load_keys("default", now).await.unwrap();
        assert_eq!(stored.len(), 1, "one key, in the file");
        assert_eq!(stored[0].kid, kid);
        let second = builder().store(reopened).build().await.unwrap();
        assert_eq!(second.key_ring().current().kid(), kid, "the same key");
        let app_second = app(&second);
        assert_eq!(mcp(&app_second, &token).await, StatusCode::OK);
        // And the restarted server's own tokens verify too.
        let fresh = access_token(&app_second).await;
        assert_eq!(mcp(&app_second, &fresh).await, StatusCode::OK);

        // Control: another file, another key; the token is refused there.
        let other = builder()
            .store(SqliteStore::open(dir.join("other.db")).await.unwrap())
            .build()
            .await
            .unwrap();
        assert_ne!(other.key_ring().current().kid(), kid);
        assert_eq!(mcp(&app(&other), &token).await, StatusCode::UNAUTHORIZED);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The ring the server opens keeps retired keys for the access-token lifetime plus the
    /// ring's refresh interval (30 s) plus 5 minutes, as a ring given with
    /// `KeyRing::from_store` would (issue 13: an instance that has not reloaded yet may
    /// still sign with a key up to a refresh interval after another retired it).
    #[tokio::test]
    async fn the_stores_ring_keeps_retired_keys_as_long_as_tokens_live() {
        let dir = temp_dir("keys_durable_retention");
        let store = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let server = builder()
            .store(store.clone())
            .access_token_ttl(Duration::from_secs(600))
            .build()
            .await
            .unwrap();
        let old = server.key_ring().current().kid().to_owned();
        server.rotate_signing_key().await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let keys = store.load_keys("default", now).await.unwrap();
        let retired = keys.iter().find(|k| k.kid == old).expect("still published");
        let kept = retired.publish_until.unwrap() - retired.retired_at.unwrap();
        assert_eq!(kept, 600 + 30 + 300);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Refusals on the real durable store; its in-memory form is not durable.
    #[tokio::test]
    async fn sqlite_refuses_process_keys_and_in_memory_needs_none() {
        let dir = temp_dir("keys_durable_refusals");
        let store = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let generated = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .store(store.clone())
            .key_ring(KeyRing::generate(SigningAlgorithm::Es256).unwrap())
            .build()
            .await;
        assert_eq!(refused(generated), EphemeralKeysReason::EphemeralKeyRing);

        let (captured, guard) = logs::Captured::start();
        let opted = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .store(store.clone())
            .ephemeral_keys()
            .build()
            .await
            .unwrap();
        drop(guard);
        assert!(!opted.key_ring().is_shared());
        assert!(captured.text().contains(WARNING));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            store.load_keys("default", now).await.unwrap().is_empty(),
            "the opt-out leaves the store's keys alone"
        );

        let (captured, guard) = logs::Captured::start();
        let in_memory = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .store(SqliteStore::in_memory().await.unwrap())
            .build()
            .await
            .unwrap();
        drop(guard);
        assert!(!in_memory.key_ring().is_shared());
        assert!(!captured.text().contains(WARNING));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The keys go with the grant store, not the client store.
    #[tokio::test]
    async fn the_grant_store_decides_where_the_keys_live() {
        let dir = temp_dir("keys_durable_split");
        let store = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let clients_only = builder()
            .client_store(store.clone())
            .grant_store(MemoryStore::new())
            .build()
            .await
            .unwrap();
        assert!(!clients_only.key_ring().is_shared());
        let grants = builder()
            .client_store(MemoryStore::new())
            .grant_store(store.clone())
            .build()
            .await
            .unwrap();
        assert!(grants.key_ring().is_shared());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
