//! `RemoteJwksVerifier` against a real third-party authorization server (`oidc-provider` 9,
//! see `tests/interop/oidc_provider.mjs`), directly and through `McpOAuthLayer`; plus a tiny
//! local JWKS server for the cache and size rules.
#![cfg(feature = "remote-jwks")]

#[path = "support/oidc.rs"]
mod oidc;
mod support;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use base64::Engine as _;
use http::{Request, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use mcp_oauth::verify::{RemoteJwksVerifier, TokenVerifier, VerifyError};
use mcp_oauth::{AuthContext, Compat, McpOAuthConfig, McpOAuthLayer, TokenKind};
use oidc::OidcProvider;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const RESOURCE: &str = "http://127.0.0.1:8765/mcp";
const OTHER_RESOURCE: &str = "http://127.0.0.1:8765/other";
const OPAQUE_RESOURCE: &str = "http://127.0.0.1:8765/opaque";
const METADATA: &str = "http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp";

async fn provider(test: &str) -> Option<OidcProvider> {
    let interop = support::interop(test)?;
    Some(OidcProvider::start(&interop, &[RESOURCE, OTHER_RESOURCE], OPAQUE_RESOURCE).await)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn header_of(token: &str) -> Value {
    let first = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `token` with its header replaced by one naming `kid` (the signature no longer matters:
/// no key with that id exists).
fn with_forged_kid(token: &str, kid: &str) -> String {
    let rest = token.split_once('.').unwrap().1;
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid });
    format!("{}.{rest}", b64(header.to_string().as_bytes()))
}

fn random_kid() -> String {
    let word = || RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", word(), word())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits up to 10 s for `done` (background refreshes run on their own schedule).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The MCP server under test: `POST /mcp` answers with the caller's subject and scopes.
fn app(verifier: RemoteJwksVerifier, issuer: &str) -> Router {
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(issuer)
        .scope("read", "Read")
        .scope("write", "Write")
        .default_scopes(["read"])
        .token_cache(0, Duration::ZERO)
        .verifier(verifier)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/mcp",
            post(
                |axum::Extension(ctx): axum::Extension<AuthContext>| async move {
                    format!("{} {}", ctx.subject(), ctx.scopes())
                },
            ),
        )
        .layer(McpOAuthLayer::new(cfg))
}

fn mcp_request(token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    ))
    .unwrap()
}

async fn call(app: &Router, token: Option<&str>) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(mcp_request(token)).await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn invalid_token_challenge(description: &str) -> String {
    format!(
        "Bearer resource_metadata=\"{METADATA}\", scope=\"read\", error=\"invalid_token\", error_description=\"{description}\""
    )
}

// ---------------------------------------------------------------------------------------------
// Against oidc-provider

#[tokio::test]
async fn discovers_the_provider_and_verifies_its_tokens() {
    let Some(idp) = provider("discovers_the_provider_and_verifies_its_tokens").await else {
        return;
    };
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap();
    assert_eq!(verifier.jwks_uri(), format!("{}/jwks", idp.issuer));
    assert_eq!(verifier.fetch_count(), 1, "discover fetches the JWKS once");
    assert_eq!(idp.jwks_fetches().await, 1);

    let token = idp.client_credentials_token(RESOURCE, "read write").await;
    let header = header_of(&token);
    assert_eq!(
        header["typ"], "at+jwt",
        "oidc-provider's JWT access tokens are RFC 9068"
    );
    assert_eq!(header["alg"], "ES256");

    let ctx = verifier.verify(&token).await.unwrap();
    assert_eq!(ctx.subject(), "test-client");
    assert_eq!(ctx.client_id(), Some("test-client"));
    assert_eq!(ctx.issuer(), Some(idp.issuer.as_str()));
    assert_eq!(ctx.audience(), [RESOURCE]);
    assert_eq!(ctx.kind(), TokenKind::Jwt);
    assert!(ctx.has_exact_scope("read") && ctx.has_exact_scope("write"));
    assert!(!ctx.has_exact_scope("admin"));
    assert!(ctx.expires_at().unwrap() > now());
    assert!(ctx.token_id().is_some());

    // Minted for another resource: refused (RFC 8707), without a refetch.
    let other = idp.client_credentials_token(OTHER_RESOURCE, "read").await;
    assert_eq!(
        verifier.verify(&other).await.unwrap_err(),
        VerifyError::WrongAudience
    );
    // An opaque token from the same server is not a JWT.
    let opaque = idp.client_credentials_token(OPAQUE_RESOURCE, "read").await;
    assert_eq!(
        verifier.verify(&opaque).await.unwrap_err(),
        VerifyError::Malformed
    );
    // A tampered payload fails the signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["scope"] = "read write admin".into();
    parts[1] = b64(claims.to_string().as_bytes());
    assert_eq!(
        verifier.verify(&parts.join(".")).await.unwrap_err(),
        VerifyError::InvalidSignature
    );
    // A verifier that expects another issuer refuses the token.
    let wrong_issuer = RemoteJwksVerifier::builder("http://127.0.0.1:1")
        .allow_loopback()
        .audience(RESOURCE)
        .jwks_uri(verifier.jwks_uri())
        .build()
        .unwrap();
    assert_eq!(
        wrong_issuer.verify(&token).await.unwrap_err(),
        VerifyError::WrongIssuer
    );

    assert_eq!(verifier.fetch_count(), 1);
    assert_eq!(
        idp.jwks_fetches().await,
        2,
        "one more for the second verifier"
    );
}

#[tokio::test]
async fn the_layer_accepts_provider_tokens_and_refuses_other_resources() {
    let Some(idp) = provider("the_layer_accepts_provider_tokens_and_refuses_other_resources").await
    else {
        return;
    };
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap();
    let app = app(verifier, &idp.issuer);

    let token = idp.client_credentials_token(RESOURCE, "read write").await;
    let (status, challenge, body) = call(&app, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(challenge, None);
    assert_eq!(body, "test-client read write");

    let other = idp
        .client_credentials_token(OTHER_RESOURCE, "read write")
        .await;
    let (status, challenge, body) = call(&app, Some(&other)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some(invalid_token_challenge("The access token was not issued for this resource").as_str())
    );
    assert!(body.contains("invalid_token"), "{body}");

    let (status, challenge, _) = call(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some(format!("Bearer resource_metadata=\"{METADATA}\", scope=\"read\"").as_str())
    );
    assert_eq!(idp.jwks_fetches().await, 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_once_the_cooldown_allows() {
    let Some(idp) = provider("a_rotated_key_is_picked_up_once_the_cooldown_allows").await else {
        return;
    };
    let cooldown = Duration::from_secs(3);
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .unknown_kid_cooldown(cooldown)
        .discover()
        .await
        .unwrap();
    let discovered = Instant::now();
    let app = app(verifier.clone(), &idp.issuer);
    let old = idp.client_credentials_token(RESOURCE, "read").await;
    assert_eq!(call(&app, Some(&old)).await.0, StatusCode::OK);

    let kid = idp.rotate().await;
    let new = idp.client_credentials_token(RESOURCE, "read").await;
    assert_eq!(
        header_of(&new)["kid"],
        kid.as_str(),
        "signed with the new key"
    );
    assert_ne!(header_of(&old)["kid"], kid.as_str());

    // Within the cooldown of the last fetch the new kid is unknown and nothing is fetched.
    if discovered.elapsed() < cooldown {
        assert_eq!(
            verifier.verify(&new).await.unwrap_err(),
            VerifyError::UnknownKey
        );
        assert_eq!(verifier.fetch_count(), 1);
    }
    tokio::time::sleep(cooldown.saturating_sub(discovered.elapsed()) + Duration::from_millis(100))
        .await;

    let (status, _, body) = call(&app, Some(&new)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "test-client read");
    assert_eq!(
        verifier.fetch_count(),
        2,
        "exactly one refresh for the new kid"
    );
    // The old key is still published: old tokens keep working, without another fetch.
    assert_eq!(call(&app, Some(&old)).await.0, StatusCode::OK);
    assert_eq!(call(&app, Some(&new)).await.0, StatusCode::OK);
    assert_eq!(idp.jwks_fetches().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_kids_costs_at_most_one_fetch_per_cooldown() {
    let Some(idp) = provider("a_flood_of_random_kids_costs_at_most_one_fetch_per_cooldown").await
    else {
        return;
    };
    let cooldown = Duration::from_secs(2);
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .unknown_kid_cooldown(cooldown)
        .discover()
        .await
        .unwrap();
    let app = app(verifier.clone(), &idp.issuer);
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    assert_eq!(call(&app, Some(&token)).await.0, StatusCode::OK);
    assert_eq!(idp.jwks_fetches().await, 1);

    // Let the cooldown run out, so the flood is allowed exactly one refresh.
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;

    async fn flood(app: &Router, token: &str, n: usize) -> Duration {
        let started = Instant::now();
        // Every task gets its own forged token; all are refused as signed by an unknown key.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let app = app.clone();
            let forged = with_forged_kid(token, &random_kid());
            tasks.spawn(async move { call(&app, Some(&forged)).await });
        }
        while let Some(result) = tasks.join_next().await {
            let (status, challenge, _) = result.unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                challenge.as_deref(),
                Some(invalid_token_challenge("The access token signature is invalid").as_str())
            );
        }
        started.elapsed()
    }

    let first_burst = Instant::now();
    let took = flood(&app, &token, 1_000).await;
    let fetched = idp.jwks_fetches().await - 1;
    eprintln!("1000 random kids in {took:?}: {fetched} JWKS fetch(es) at the provider");
    let allowed = 1 + (took.as_millis() / cooldown.as_millis()) as u64;
    assert!(fetched <= allowed, "{fetched} fetches in {took:?}");
    if took < cooldown {
        assert_eq!(fetched, 1, "one refresh for the whole burst");
    }

    // A second burst right away: still inside the cooldown, so no fetch at all.
    let before = idp.jwks_fetches().await;
    let took2 = flood(&app, &token, 1_000).await;
    let fetched2 = idp.jwks_fetches().await - before;
    eprintln!("another 1000 in {took2:?}: {fetched2} JWKS fetch(es)");
    let since = first_burst.elapsed();
    assert!(
        fetched2 <= (since.as_millis() / cooldown.as_millis()) as u64,
        "{fetched2} fetches within {since:?} of the first burst's fetch"
    );

    // The genuine token still works and costs nothing.
    let before = idp.jwks_fetches().await;
    assert_eq!(call(&app, Some(&token)).await.0, StatusCode::OK);
    assert_eq!(idp.jwks_fetches().await, before);
    assert_eq!(verifier.fetch_count(), idp.jwks_fetches().await);
}

#[tokio::test]
async fn with_the_default_cooldown_a_flood_right_after_a_fetch_costs_nothing() {
    let Some(idp) =
        provider("with_the_default_cooldown_a_flood_right_after_a_fetch_costs_nothing").await
    else {
        return;
    };
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap();
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    for _ in 0..1_000 {
        let forged = with_forged_kid(&token, &random_kid());
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    assert_eq!(idp.jwks_fetches().await, 1);
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn stale_keys_are_served_while_the_provider_is_down() {
    let Some(mut idp) = provider("stale_keys_are_served_while_the_provider_is_down").await else {
        return;
    };
    let verifier = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .refresh_interval(Duration::from_secs(1))
        .unknown_kid_cooldown(Duration::from_secs(1))
        .discover()
        .await
        .unwrap();
    let app = app(verifier.clone(), &idp.issuer);
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    assert_eq!(call(&app, Some(&token)).await.0, StatusCode::OK);
    let jwks_uri = verifier.jwks_uri().to_owned();
    let fetched = verifier.fetch_count();
    idp.kill().await;

    // The periodic refresh is due and fails; the keys already held keep working.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let (status, _, body) = call(&app, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        eventually("the background refresh", || {
            verifier.fetch_count() >= fetched + 1 + round
        })
        .await;
        assert_eq!(
            verifier.fetch_count(),
            fetched + 1 + round,
            "one failed refresh per round"
        );
    }

    // A verifier that never had keys cannot verify: 503, not 401.
    let fresh = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .jwks_uri(&jwks_uri)
        .build()
        .unwrap();
    assert!(matches!(
        fresh.verify(&token).await.unwrap_err(),
        VerifyError::Unavailable { .. }
    ));
    // ... and does not retry before the cooldown.
    assert!(matches!(
        fresh.verify(&token).await.unwrap_err(),
        VerifyError::Unavailable { .. }
    ));
    assert_eq!(fresh.fetch_count(), 1);
    let (status, challenge, _) = call(&crate::app(fresh, &idp.issuer), Some(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(challenge, None);

    let err = RemoteJwksVerifier::builder(&idp.issuer)
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_discovery(), "{err}");
}

#[tokio::test]
async fn discovery_refuses_an_issuer_mismatch() {
    let Some(idp) = provider("discovery_refuses_an_issuer_mismatch").await else {
        return;
    };
    // A trailing slash is a different issuer (RFC 8414 §3.3: byte-for-byte comparison).
    let err = RemoteJwksVerifier::builder(format!("{}/", idp.issuer))
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_discovery(), "{err}");
    assert!(!err.is_fetch() && !err.is_config());
    assert!(err.to_string().contains("byte for byte"), "{err}");

    let localhost = format!("http://localhost:{}", idp.port);
    let err = RemoteJwksVerifier::builder(&localhost)
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_discovery(), "{err}");
    assert!(err.to_string().contains(&idp.issuer), "{err}");

    // An issuer with a path the server does not know: every well-known form is a 404.
    let err = RemoteJwksVerifier::builder(format!("{}/tenant", idp.issuer))
        .allow_loopback()
        .audience(RESOURCE)
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_discovery(), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(
        idp.jwks_fetches().await,
        0,
        "no JWKS fetched after a failed discovery"
    );
}

#[tokio::test]
async fn rsa_and_eddsa_providers_and_the_algorithm_allow_list() {
    let Some(interop) = support::interop("rsa_and_eddsa_providers_and_the_algorithm_allow_list")
    else {
        return;
    };
    for alg in ["RS256", "PS256", "EdDSA"] {
        let idp = OidcProvider::start_with_alg(&interop, &[RESOURCE], OPAQUE_RESOURCE, alg).await;
        let token = idp.client_credentials_token(RESOURCE, "read").await;
        assert_eq!(header_of(&token)["alg"], alg);
        let verifier = RemoteJwksVerifier::builder(&idp.issuer)
            .allow_loopback()
            .audience(RESOURCE)
            .discover()
            .await
            .unwrap();
        assert_eq!(
            verifier.verify(&token).await.unwrap().subject(),
            "test-client",
            "{alg}"
        );
        let es_only = RemoteJwksVerifier::builder(&idp.issuer)
            .allow_loopback()
            .audience(RESOURCE)
            .algorithms([Algorithm::ES256])
            .discover()
            .await
            .unwrap();
        assert_eq!(
            es_only.verify(&token).await.unwrap_err(),
            VerifyError::DisallowedAlgorithm,
            "{alg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Against a local JWKS server

const LOCAL_ISSUER: &str = "http://127.0.0.1:1";

/// A JWKS server whose document, `Cache-Control` and delay the test controls.
#[derive(Clone, Default)]
struct Jwks {
    body: Arc<Mutex<(String, Option<&'static str>)>>,
    fetches: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    chunked: Arc<std::sync::atomic::AtomicBool>,
}

impl Jwks {
    async fn serve(&self) -> String {
        let state = self.clone();
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let delay = state.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let (body, cache) = state.body.lock().unwrap().clone();
                    let mut response =
                        http::Response::builder().header(header::CONTENT_TYPE, "application/json");
                    if let Some(cc) = cache {
                        response = response.header(header::CACHE_CONTROL, cc);
                    }
                    let body = if state.chunked.load(Ordering::SeqCst) {
                        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                            .into_bytes()
                            .chunks(16 * 1024)
                            .map(|c| Ok(c.to_vec()))
                            .collect();
                        Body::from_stream(futures_util::stream::iter(chunks))
                    } else {
                        Body::from(body)
                    };
                    response.body(body).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks")
    }

    fn set(&self, keys: &[Value], cache_control: Option<&'static str>) {
        *self.body.lock().unwrap() = (json!({ "keys": keys }).to_string(), cache_control);
    }

    fn set_raw(&self, body: String) {
        *self.body.lock().unwrap() = (body, None);
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// An ES256 key usable both through the crate's `SigningKey` and raw `jsonwebtoken`.
struct TestKey {
    der: Vec<u8>,
    key: SigningKey,
}

impl TestKey {
    fn new() -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap().as_ref().to_vec();
        let key = SigningKey::from_pkcs8_der(SigningAlgorithm::Es256, &der).unwrap();
        Self { der, key }
    }

    fn kid(&self) -> &str {
        self.key.kid()
    }

    fn jwk(&self) -> Value {
        serde_json::to_value(self.key.jwk()).unwrap()
    }

    fn claims(&self) -> Value {
        json!({
            "iss": LOCAL_ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "c1",
            "scope": "read", "iat": now(), "exp": now() + 300,
        })
    }

    fn token(&self) -> String {
        self.key.sign("at+jwt", &self.claims()).unwrap()
    }

    fn token_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.der)).unwrap()
    }

    fn header(&self, kid: Option<&str>, typ: Option<&str>) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_owned);
        h.typ = typ.map(str::to_owned);
        h
    }
}

fn local(uri: &str) -> mcp_oauth::verify::RemoteJwksVerifierBuilder {
    RemoteJwksVerifier::builder(LOCAL_ISSUER)
        .allow_loopback()
        .audience(RESOURCE)
        .jwks_uri(uri)
}

#[tokio::test]
async fn cache_control_max_age_extends_the_refresh_interval() {
    let key = TestKey::new();

    // With `max-age=3600` the 1 s interval is stretched: no refetch.
    let cached = Jwks::default();
    cached.set(&[key.jwk()], Some("public, max-age=3600"));
    let uri = cached.serve().await;
    let verifier = local(&uri)
        .refresh_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(verifier.fetch_count(), 0, "build() fetches nothing");
    assert_eq!(
        verifier.verify(&key.token()).await.unwrap().subject(),
        "alice"
    );
    assert_eq!(cached.fetches(), 1);

    // Without `Cache-Control` the interval applies: the next request after it starts a
    // background refresh and is served from the keys at hand.
    let plain = Jwks::default();
    plain.set(&[key.jwk()], None);
    let uri = plain.serve().await;
    let refreshing = local(&uri)
        .refresh_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(refreshing.verify(&key.token()).await.is_ok());
    assert_eq!(plain.fetches(), 1);

    // A tiny max-age is clamped up to a minute, which beats the 1 s interval as well.
    let tiny = Jwks::default();
    tiny.set(&[key.jwk()], Some("max-age=0"));
    let uri = tiny.serve().await;
    let clamped = local(&uri)
        .refresh_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(clamped.verify(&key.token()).await.is_ok());

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    for v in [&verifier, &refreshing, &clamped] {
        assert!(v.verify(&key.token()).await.is_ok());
    }
    eventually("the background refresh", || plain.fetches() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cached.fetches(), 1, "max-age=3600 honoured");
    assert_eq!(plain.fetches(), 2, "refreshed after the interval");
    assert_eq!(tiny.fetches(), 1, "max-age=0 clamped to 1 min");
    assert_eq!(refreshing.fetch_count(), 2);
}

#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let key = TestKey::new();
    let padding: Vec<Value> = (0..3_000)
        .map(|i| json!({ "kty": "oct", "kid": format!("pad-{i}"), "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" }))
        .collect();
    let mut keys = vec![key.jwk()];
    keys.extend(padding);
    let body = json!({ "keys": keys }).to_string();
    assert!(body.len() > 256 * 1024, "{}", body.len());

    for chunked in [false, true] {
        let server = Jwks::default();
        server.set_raw(body.clone());
        server.chunked.store(chunked, Ordering::SeqCst);
        let uri = server.serve().await;
        let verifier = local(&uri).build().unwrap();
        let err = verifier.verify(&key.token()).await.unwrap_err();
        match err {
            e @ VerifyError::Unavailable { .. } => {
                let why = e.to_string();
                assert!(why.contains("256 KiB"), "{why}");
                let source = std::error::Error::source(&e).expect("the fetch failure is kept");
                assert!(source.to_string().contains("256 KiB"), "{source}");
            }
            other => panic!("chunked={chunked}: {other:?}"),
        }
        assert_eq!(server.fetches(), 1);
        let err = local(&uri).discover().await.unwrap_err();
        assert!(err.is_fetch(), "{err}");
        assert!(err.to_string().contains("256 KiB"), "{err}");
    }

    // The same keys under the limit are fine (the symmetric padding keys are skipped).
    let server = Jwks::default();
    let mut keys = vec![key.jwk()];
    keys.extend(
        (0..10).map(|i| json!({ "kty": "oct", "kid": format!("pad-{i}"), "k": "c2VjcmV0" })),
    );
    server.set(&keys, None);
    let uri = server.serve().await;
    assert!(
        local(&uri)
            .build()
            .unwrap()
            .verify(&key.token())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn keys_are_chosen_by_kid_type_use_and_alg() {
    let key = TestKey::new();
    let other = TestKey::new();
    let server = Jwks::default();
    let uri = server.serve().await;
    let claims = key.claims();

    // `use: enc` under the right kid: skipped.
    let mut enc = key.jwk();
    enc["use"] = "enc".into();
    server.set(&[enc], None);
    let v = local(&uri).build().unwrap();
    assert_eq!(
        v.verify(&key.token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );

    // The JWK's own `alg` differs from the token's: skipped.
    let mut es384 = key.jwk();
    es384["alg"] = "ES384".into();
    server.set(&[es384], None);
    let v = local(&uri).build().unwrap();
    assert_eq!(
        v.verify(&key.token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );

    // An EC key on another curve under the right kid: skipped.
    let mut p384 = key.jwk();
    p384["crv"] = "P-384".into();
    p384.as_object_mut().unwrap().remove("alg");
    server.set(&[p384], None);
    let v = local(&uri).build().unwrap();
    assert_eq!(
        v.verify(&key.token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );

    // No kid in the token: the only fitting key is used ...
    server.set(&[key.jwk()], None);
    let v = local(&uri).build().unwrap();
    let no_kid = key.token_with(key.header(None, Some("at+jwt")), &claims);
    assert_eq!(v.verify(&no_kid).await.unwrap().subject(), "alice");
    // ... but with two candidates nothing is guessed.
    server.set(&[key.jwk(), other.jwk()], None);
    let v = local(&uri).build().unwrap();
    assert_eq!(
        v.verify(&no_kid).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(v.verify(&other.token()).await.unwrap().subject(), "alice");
    // A key signed by `other` but naming `key`'s kid: bad signature.
    let lying = other.token_with(key.header(Some(key.kid()), Some("at+jwt")), &claims);
    assert_eq!(
        v.verify(&lying).await.unwrap_err(),
        VerifyError::InvalidSignature
    );

    // Algorithms come from the allow-list: `none` and HS256 are refused before any key.
    let fetched = server.fetches();
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"at+jwt"}"#),
        b64(claims.to_string().as_bytes())
    );
    assert_eq!(
        v.verify(&none).await.unwrap_err(),
        VerifyError::DisallowedAlgorithm
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid().to_owned());
    hs.typ = Some("at+jwt".into());
    let hs =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(b"public-key-bytes")).unwrap();
    assert_eq!(
        v.verify(&hs).await.unwrap_err(),
        VerifyError::DisallowedAlgorithm
    );
    assert_eq!(server.fetches(), fetched);

    // `typ`: RFC 9068 by default; `JWT` or none only with the compat switch.
    let jwt_typ = key.token_with(key.header(Some(key.kid()), Some("JWT")), &claims);
    let untyped = key.token_with(key.header(Some(key.kid()), None), &claims);
    assert_eq!(
        v.verify(&jwt_typ).await.unwrap_err(),
        VerifyError::WrongType
    );
    assert_eq!(
        v.verify(&untyped).await.unwrap_err(),
        VerifyError::WrongType
    );
    let lax = local(&uri).compat(Compat::GenericJwtType).build().unwrap();
    assert!(lax.verify(&jwt_typ).await.is_ok());
    assert!(lax.verify(&untyped).await.is_ok());

    // `aud`: one of ours, or an extra one named by the compat switch.
    let mut api = claims.clone();
    api["aud"] = "https://api.example.com".into();
    let api = key.token_with(key.header(Some(key.kid()), Some("at+jwt")), &api);
    assert_eq!(
        v.verify(&api).await.unwrap_err(),
        VerifyError::WrongAudience
    );
    let extra = local(&uri)
        .compat(Compat::ExtraAudience("https://api.example.com".into()))
        .build()
        .unwrap();
    assert!(extra.verify(&api).await.is_ok());

    // Expiry with leeway; `jti` not required for external tokens.
    let mut old = claims.clone();
    old["exp"] = (now() - 30).into();
    let old = key.token_with(key.header(Some(key.kid()), Some("at+jwt")), &old);
    assert!(v.verify(&old).await.is_ok(), "inside the 60 s leeway");
    let strict = local(&uri).leeway(Duration::ZERO).build().unwrap();
    assert_eq!(strict.verify(&old).await.unwrap_err(), VerifyError::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_fetch() {
    let first = TestKey::new();
    let second = TestKey::new();
    let server = Jwks::default();
    server.set(&[first.jwk()], None);
    server.delay_ms.store(300, Ordering::SeqCst);
    let uri = server.serve().await;
    let verifier = local(&uri)
        .unknown_kid_cooldown(Duration::from_millis(500))
        .build()
        .unwrap();

    // 50 requests at once on a cold verifier: one fetch.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let v = verifier.clone();
        let t = first.token();
        tasks.spawn(async move { v.verify(&t).await.map(|c| c.subject().to_owned()) });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), "alice");
    }
    assert_eq!(server.fetches(), 1);

    // The server rotates; after the cooldown, 50 requests with the new kid: one fetch.
    server.set(&[second.jwk(), first.jwk()], None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..50 {
        let v = verifier.clone();
        let t = second.token();
        tasks.spawn(async move { v.verify(&t).await.map(|c| c.subject().to_owned()) });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), "alice");
    }
    assert_eq!(server.fetches(), 2);
    assert_eq!(verifier.fetch_count(), 2);
}

#[tokio::test]
async fn callers_that_hang_up_do_not_cancel_the_refresh() {
    let key = TestKey::new();
    let stranger = TestKey::new();
    let server = Jwks::default();
    server.set(&[key.jwk()], None);
    let uri = server.serve().await;
    // Wide windows, so a loaded 2-core machine cannot flake this (issue 8 item 11): the
    // JWKS answers after 2 s, so all five callers give up while the refresh is in flight,
    // and the last check lands well inside the 6 s cooldown that follows it.
    let verifier = local(&uri)
        .unknown_kid_cooldown(Duration::from_secs(6))
        .build()
        .unwrap();
    assert!(verifier.verify(&key.token()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(6_100)).await;

    // A slow JWKS, and clients that give up after 50 ms: the first one's refresh carries on
    // and is recorded, so the others cannot start new ones.
    server.delay_ms.store(2_000, Ordering::SeqCst);
    for _ in 0..5 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            verifier.verify(&stranger.token()),
        )
        .await;
        assert!(gave_up.is_err());
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        server.fetches(),
        2,
        "one refresh despite five abandoned requests"
    );
    assert_eq!(
        verifier.verify(&stranger.token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_bad_jwks_response_keeps_the_old_keys() {
    let key = TestKey::new();
    let server = Jwks::default();
    server.set(&[key.jwk()], None);
    let uri = server.serve().await;
    let verifier = local(&uri)
        .unknown_kid_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(verifier.verify(&key.token()).await.is_ok());
    server.set_raw("<html>maintenance</html>".to_owned());
    tokio::time::sleep(Duration::from_millis(250)).await;
    // An unknown kid forces a refresh, which fails: the old key still verifies.
    let stranger = TestKey::new();
    assert_eq!(
        verifier.verify(&stranger.token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(server.fetches(), 2);
    assert!(verifier.verify(&key.token()).await.is_ok());
}

#[test]
fn the_builder_refuses_unsafe_configurations() {
    let err = RemoteJwksVerifier::builder(LOCAL_ISSUER)
        .allow_loopback()
        .jwks_uri("http://127.0.0.1:1/jwks")
        .build()
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("audience"),
        "{err}"
    );

    let err = local("http://127.0.0.1:1/jwks")
        .algorithms([Algorithm::ES256, Algorithm::HS256])
        .build()
        .unwrap_err();
    assert!(err.is_config() && err.to_string().contains("HMAC"), "{err}");

    let err = local("http://127.0.0.1:1/jwks")
        .algorithms([])
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");

    let err = local("http://idp.example.com/jwks").build().unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("https"),
        "{err}"
    );

    let err = RemoteJwksVerifier::builder("https://idp.example.com")
        .audience(RESOURCE)
        .build()
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("jwks_uri"),
        "{err}"
    );

    let err = RemoteJwksVerifier::builder("not a url")
        .audience(RESOURCE)
        .jwks_uri("https://idp.example.com/jwks")
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(std::error::Error::source(&err).is_none());

    let ok = RemoteJwksVerifier::builder("https://tenant.example.auth0.com/")
        .audience(RESOURCE)
        .jwks_uri("https://tenant.example.auth0.com/.well-known/jwks.json")
        .build()
        .unwrap();
    assert_eq!(
        ok.jwks_uri(),
        "https://tenant.example.auth0.com/.well-known/jwks.json"
    );
    let debug = format!("{ok:?}");
    assert!(
        debug.contains("RemoteJwksVerifier") && debug.contains("auth0"),
        "{debug}"
    );
}
