//! `private_key_jwt` client authentication (RFC 7523, issue 11) over HTTP, through
//! `oauth_router` as an application mounts it: a client registered by DCR with an inline
//! `jwks` redeems a code with a signed assertion (codes are put straight into the grant store,
//! as in `as_token.rs`); a replayed assertion is refused, also by a second server sharing the
//! store (SQLite file, PostgreSQL, Redis); a `jwks_uri` served on loopback by the test works,
//! is cached, is fetched again for an unknown `kid` at most once per cooldown, and its outage
//! is `503`, never `invalid_client`. Every response is JSON and never a 500.

#![cfg(feature = "private-key-jwt")]

#[macro_use]
#[path = "support/stores.rs"]
mod stores;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, StaticClient};
use mcp_oauth::store::{AuthorizationCode, MemoryStore, SecretHash};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://mcp.example.com";
const TOKEN_ENDPOINT: &str = "https://mcp.example.com/token";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "https://app.example.com/callback";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    #[track_caller]
    fn assert_error(&self, status: StatusCode, error: &str, fragment: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], error, "{}", self.body);
        let description = self.body["error_description"].as_str().unwrap_or_default();
        assert!(
            description.contains(fragment),
            "{description:?} lacks {fragment:?}"
        );
    }
}

struct Harness {
    server: AuthorizationServer,
    app: Router,
}

async fn harness(builder: AuthorizationServerBuilder) -> Harness {
    let server = builder
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
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
    let app = oauth_router(&cfg, &server);
    Harness { server, app }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rand() -> String {
    stores::unique("r")
}

fn form(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "no 500, ever");
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn post_form(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.send(
            Request::post(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form(params)))
                .unwrap(),
        )
        .await
    }

    async fn register(&self, meta: Value) -> Reply {
        self.send(
            Request::post("/register")
                .header("content-type", "application/json")
                .body(Body::from(meta.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Stores a fresh code for `client_id` and returns it.
    async fn code(&self, client_id: &str) -> String {
        let code = format!("code-{}", rand());
        let now = now();
        self.server
            .grant_store()
            .put_code(
                SecretHash::of(&code),
                AuthorizationCode {
                    client_id: client_id.to_owned(),
                    redirect_uri: REDIRECT.to_owned(),
                    redirect_uri_in_request: true,
                    code_challenge: CHALLENGE.to_owned(),
                    scope: ScopeSet::parse("read").unwrap(),
                    resource: RESOURCE.to_owned(),
                    subject: "alice".to_owned(),
                    claims: serde_json::Map::new(),
                    auth_time: now - 5,
                    expires_at: now + 60,
                },
            )
            .await
            .unwrap();
        code
    }

    /// Redeems `code` authenticating with `assertion` (and `client_id` in the body when
    /// given).
    async fn exchange(&self, code: &str, client_id: Option<&str>, assertion: &str) -> Reply {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ];
        if let Some(id) = client_id {
            params.push(("client_id", id));
        }
        self.post_form("/token", &params).await
    }

    /// Revokes an unknown token, authenticating with `assertion` (client auth is all that
    /// can fail).
    async fn revoke(&self, assertion: &str) -> Reply {
        self.post_form(
            "/revoke",
            &[
                ("token", "not-a-token"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
            ],
        )
        .await
    }
}

/// A client key pair and the assertions it signs.
struct ClientKey(SigningKey);

impl ClientKey {
    fn new() -> Self {
        Self(SigningKey::generate(SigningAlgorithm::Es256).unwrap())
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.0.jwk()]})
    }

    fn assertion_to(&self, client_id: &str, aud: &str) -> String {
        let now = now();
        self.0
            .sign(
                "JWT",
                &json!({
                    "iss": client_id, "sub": client_id, "aud": aud,
                    "iat": now, "exp": now + 120, "jti": rand(),
                }),
            )
            .unwrap()
    }

    fn assertion(&self, client_id: &str) -> String {
        self.assertion_to(client_id, TOKEN_ENDPOINT)
    }
}

#[tokio::test]
async fn a_dcr_client_with_inline_jwks_redeems_a_code_and_replays_are_refused() {
    let h = harness(AuthorizationServer::builder().store(MemoryStore::new())).await;
    let key = ClientKey::new();

    // Discovery says what is accepted.
    let meta = h
        .send(
            Request::get("/.well-known/oauth-authorization-server")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .body;
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt")),
        "{meta}"
    );
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256", "PS256"])
    );

    // Registration: private_key_jwt with an inline JWKS; no secret comes back.
    let reg = h
        .register(json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": key.jwks(),
        }))
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    assert_eq!(reg.body["token_endpoint_auth_method"], "private_key_jwt");
    assert!(reg.body.get("client_secret").is_none(), "{}", reg.body);
    assert_eq!(reg.body["jwks"], key.jwks());
    let id = reg.body["client_id"].as_str().unwrap().to_owned();

    // A code redeemed with an assertion (aud = the token endpoint, client_id in the body).
    let assertion = key.assertion(&id);
    let ok = h.exchange(&h.code(&id).await, Some(&id), &assertion).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body["access_token"].is_string());

    // The same assertion again, for a fresh code: replay.
    let replay = h.exchange(&h.code(&id).await, Some(&id), &assertion).await;
    replay.assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "used before");

    // aud = the issuer, and no client_id in the body (the assertion's sub names the client).
    let ok = h
        .exchange(&h.code(&id).await, None, &key.assertion_to(&id, ISSUER))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // Another audience is refused.
    let wrong = h
        .exchange(
            &h.code(&id).await,
            Some(&id),
            &key.assertion_to(&id, "https://other.example.com/token"),
        )
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "aud");

    // Another key, even under the registered client id, is refused.
    let stranger = ClientKey::new();
    let forged = h
        .exchange(&h.code(&id).await, Some(&id), &stranger.assertion(&id))
        .await;
    forged.assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "No key");

    // The client cannot fall back to naming itself like a public client.
    let bare = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &h.code(&id).await),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", &id),
            ],
        )
        .await;
    bare.assert_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "private_key_jwt",
    );

    // An assertion plus a secret is two methods at once.
    let mixed = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &h.code(&id).await),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &key.assertion(&id)),
                ("client_secret", "whatever"),
            ],
        )
        .await;
    mixed.assert_error(StatusCode::BAD_REQUEST, "invalid_request", "More than one");

    // A wrong assertion type.
    let typ = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &h.code(&id).await),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_assertion_type", "urn:example:saml"),
                ("client_assertion", &key.assertion(&id)),
            ],
        )
        .await;
    typ.assert_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client_assertion_type",
    );

    // Revocation authenticates the same way.
    let revoked = h.revoke(&key.assertion(&id)).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);

    // An unknown client is invalid_client (register again).
    let unknown = h.revoke(&key.assertion("nobody")).await;
    unknown.assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unknown client");

    // Registration refuses private keys and a missing key source.
    let mut private = serde_json::to_value(key.0.jwk()).unwrap();
    private["d"] = json!("AAAA");
    for (meta, why) in [
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [private]}}),
            "private member",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
            "jwks or jwks_uri",
        ),
    ] {
        h.register(meta).await.assert_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            why,
        );
    }
}

#[tokio::test]
async fn a_configured_client_with_a_jwks_authenticates() {
    let key = ClientKey::new();
    let h = harness(
        AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client(StaticClient::private_key_jwt("backend", &key.jwks(), [REDIRECT]).unwrap()),
    )
    .await;
    let ok = h
        .exchange(&h.code("backend").await, None, &key.assertion("backend"))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // A configured key set with a private member is a configuration error.
    let mut private = serde_json::to_value(key.0.jwk()).unwrap();
    private["d"] = json!("AAAA");
    let err = StaticClient::private_key_jwt("backend", &json!({"keys": [private]}), [REDIRECT])
        .unwrap_err();
    assert!(err.to_string().contains("private member"), "{err}");
    assert!(StaticClient::private_key_jwt_uri("b", "http://example.com/jwks", [REDIRECT]).is_err());
}

#[tokio::test]
async fn a_resource_server_introspects_with_an_assertion() {
    let key = ClientKey::new();
    let h = harness(
        AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client(StaticClient::private_key_jwt("rs", &key.jwks(), [REDIRECT]).unwrap())
            .introspection_clients(["rs"]),
    )
    .await;
    let tokens = h
        .exchange(&h.code("rs").await, None, &key.assertion("rs"))
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let access = tokens.body["access_token"].as_str().unwrap().to_owned();
    let introspect = |assertion: String| {
        let access = access.clone();
        let h = &h;
        async move {
            h.post_form(
                "/introspect",
                &[
                    ("token", access.as_str()),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.as_str()),
                ],
            )
            .await
        }
    };
    let active = introspect(key.assertion("rs")).await;
    assert_eq!(active.status, StatusCode::OK, "{}", active.body);
    assert_eq!(active.body["active"], true, "{}", active.body);
    // A forged assertion does not introspect.
    introspect(ClientKey::new().assertion("rs"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "No key");
}

/// A JWK Set served on loopback: its key sets (one per fetch: the last repeats), a fetch
/// counter and an outage switch.
struct JwksServer {
    base: String,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks_server(sets: Vec<Value>) -> JwksServer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (f, d) = (fetches.clone(), down.clone());
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let (f, d, sets) = (f.clone(), d.clone(), sets.clone());
            async move {
                if d.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                }
                let n = f.fetch_add(1, Ordering::SeqCst);
                (StatusCode::OK, sets[n.min(sets.len() - 1)].to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    JwksServer {
        base: format!("http://127.0.0.1:{}", addr.port()),
        fetches,
        down,
    }
}

#[tokio::test]
async fn a_jwks_uri_on_loopback_is_fetched_cached_refetched_once_and_its_outage_is_503() {
    let key = ClientKey::new();
    let stranger = ClientKey::new();
    let jwks = jwks_server(vec![key.jwks()]).await;
    let uri = format!("{}/jwks.json", jwks.base);
    let h = harness(
        AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client_jwks_allow_loopback()
            .client_jwks_refetch_cooldown(Duration::from_secs(1)),
    )
    .await;
    let reg = h
        .register(json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": uri,
        }))
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    let id = reg.body["client_id"].as_str().unwrap().to_owned();

    let ok = h
        .exchange(&h.code(&id).await, Some(&id), &key.assertion(&id))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(h.revoke(&key.assertion(&id)).await.status, StatusCode::OK);
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "the keys are cached"
    );

    // Unknown kids: once the cooldown since the last fetch has passed, one refetch, then
    // the cooldown holds again (within it, the first fetch itself counts).
    h.revoke(&stranger.assertion(&id)).await.assert_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "No key of the client has kid",
    );
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "within the cooldown"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        h.revoke(&stranger.assertion(&id)).await.assert_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "No key of the client has kid",
        );
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        2,
        "an unknown kid refetches at most once per cooldown"
    );

    // A client whose jwks_uri is down gets 503, never invalid_client.
    jwks.down.store(true, Ordering::SeqCst);
    let h2 = harness(
        AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client_jwks_allow_loopback()
            .client(StaticClient::private_key_jwt_uri("down", &uri, [REDIRECT]).unwrap()),
    )
    .await;
    let down = h2.revoke(&key.assertion("down")).await;
    down.assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "jwks_uri",
    );
    assert!(down.headers.contains_key("retry-after"));
    // While the first server still has the keys cached, it keeps working.
    assert_eq!(h.revoke(&key.assertion(&id)).await.status, StatusCode::OK);

    // Without the loopback switch the SSRF guard refuses the address: also 503.
    jwks.down.store(false, Ordering::SeqCst);
    let guarded = harness(
        AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client(StaticClient::private_key_jwt_uri("guarded", &uri, [REDIRECT]).unwrap()),
    )
    .await;
    let refused = guarded.revoke(&key.assertion("guarded")).await;
    refused.assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "loopback",
    );
}

/// Two servers on one shared store: an assertion used at A is refused at B.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn replay_across<S>(a: S, b: S)
where
    S: mcp_oauth::store::ClientStore + mcp_oauth::store::GrantStore,
{
    let key = ClientKey::new();
    let build = |store: S| {
        AuthorizationServer::builder()
            .store(store)
            .client(StaticClient::private_key_jwt("backend", &key.jwks(), [REDIRECT]).unwrap())
    };
    let ha = harness(build(a)).await;
    let hb = harness(build(b)).await;
    let assertion = key.assertion("backend");
    let first = ha.revoke(&assertion).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    hb.revoke(&assertion).await.assert_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "used before",
    );
    // And the other way round, with a code.
    let assertion = key.assertion("backend");
    let ok = hb
        .exchange(&hb.code("backend").await, None, &assertion)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    ha.exchange(&ha.code("backend").await, None, &assertion)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "used before");
}

across_shared_stores!(
    a_replay_at_one_server_is_refused_at_another,
    replay_across,
    "pkjwt"
);
