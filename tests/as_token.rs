//! The token endpoint, driven through `oauth_router` exactly as an application mounts it, with
//! the MCP endpoint behind `McpOAuthLayer` to prove what the issued tokens are worth. Codes
//! are put straight into the grant store (the authorize endpoint is tested on its own).
//! Every response is checked to be JSON and never a 500.

#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::routing::post;
use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, StaticClient};
use mcp_oauth::store::{
    ApplicationType, AuthorizationCode, Client, ClientSource, CodeTake, GrantStore,
    PendingAuthorization, RefreshFamily, Rotation, SecretHash, StoreError, StoreStats,
    TokenEndpointAuthMethod,
};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "https://app.example.com/callback";
const PUBLIC: &str = "public-client";
const OTHER: &str = "other-client";
const CONF: &str = "confidential-client";
const CONF_SECRET: &str = "s3cr3t-0123456789abcdef";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Harness {
    server: AuthorizationServer,
    app: Router,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<none>")
    }

    fn field(&self, name: &str) -> String {
        self.body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            .to_owned()
    }

    #[track_caller]
    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.error(), error, "{}", self.body);
        assert_eq!(self.headers["cache-control"], "no-store");
        assert!(self.body["error_description"].is_string());
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
    }
}

fn builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .client(StaticClient::public(PUBLIC, [REDIRECT]))
        .client(StaticClient::public(OTHER, [REDIRECT]))
        .client(StaticClient::confidential(CONF, CONF_SECRET, [REDIRECT]))
}

async fn harness_with(issuer: &str, builder: AuthorizationServerBuilder) -> Harness {
    let server = builder.build().await.unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .resource("https://mcp.example.com/other")
        .issuer(issuer)
        .scope("read", "Read")
        .scope("write", "Write")
        .authorization_server(&server)
        .build()
        .unwrap();
    let whoami = post(|auth: Auth| async move {
        axum::Json(json!({
            "sub": auth.subject(),
            "scope": auth.scopes().to_string(),
            "client_id": auth.client_id(),
        }))
    });
    let app = Router::new()
        .route("/mcp", whoami.clone())
        .route("/other", whoami)
        .layer(McpOAuthLayer::new(cfg.clone()))
        .merge(oauth_router(&cfg, &server));
    Harness { server, app }
}

async fn harness() -> Harness {
    harness_with(ISSUER, builder()).await
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn form(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        send(self.app.clone(), req).await
    }

    /// Stores a fresh code for `client_id` and returns it.
    async fn code(&self, client_id: &str) -> String {
        self.code_with(client_id, |_| {}).await
    }

    async fn code_with(
        &self,
        client_id: &str,
        edit: impl FnOnce(&mut AuthorizationCode),
    ) -> String {
        let code = format!("code-{}", rand());
        let now = now();
        let mut stored = AuthorizationCode {
            client_id: client_id.to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            redirect_uri_in_request: true,
            code_challenge: CHALLENGE.to_owned(),
            scope: ScopeSet::parse("read write").unwrap(),
            resource: RESOURCE.to_owned(),
            subject: "alice".to_owned(),
            claims: serde_json::Map::from_iter([("email".to_owned(), json!("alice@example.com"))]),
            auth_time: now - 5,
            expires_at: now + 60,
        };
        edit(&mut stored);
        self.server
            .grant_store()
            .put_code(SecretHash::of(&code), stored)
            .await
            .unwrap();
        code
    }

    async fn token(&self, params: &[(&str, &str)], authorization: Option<&str>) -> Reply {
        let mut req =
            Request::post("/token").header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        self.send(req.body(Body::from(form(params))).unwrap()).await
    }

    async fn exchange(&self, client_id: &str, code: &str) -> Reply {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", client_id),
            ],
            None,
        )
        .await
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> Reply {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
            None,
        )
        .await
    }

    /// Calls the protected MCP endpoint; the status and the body.
    async fn mcp(&self, access_token: &str) -> (StatusCode, Value) {
        self.mcp_at("/mcp", access_token).await
    }

    /// Calls the protected resource at `path`; the status and the body.
    async fn mcp_at(&self, path: &str, access_token: &str) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {access_token}"))
            .body(Body::from(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            ))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

async fn send(app: Router, req: Request<Body>) -> Reply {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "no 500, ever");
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "every token endpoint answer is JSON: {status} {bytes:?}"
    );
    let body = serde_json::from_slice(&bytes).expect("a JSON body");
    Reply {
        status,
        headers,
        body,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rand() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now(), N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------- authorization_code

#[tokio::test]
async fn public_client_exchanges_a_code_for_working_tokens() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let r = h.exchange(PUBLIC, &code).await;
    r.assert_ok();
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["pragma"], "no-cache");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    assert_eq!(r.body["scope"], "read write");
    let access = r.field("access_token");
    let refresh = r.field("refresh_token");
    assert!(refresh.len() >= 43, "a 256-bit refresh token");

    let claims = jwt_claims(&access);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], PUBLIC);
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["email"], "alice@example.com");
    assert!(claims["jti"].as_str().unwrap().contains('.'));

    let (status, who) = h.mcp(&access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        who,
        json!({"sub": "alice", "scope": "read write", "client_id": PUBLIC})
    );
}

#[tokio::test]
async fn confidential_client_with_basic_or_post() {
    let h = harness().await;
    let code = h.code(CONF).await;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    h.token(&params, Some(&basic(CONF, CONF_SECRET)))
        .await
        .assert_ok();

    let code = h.code(CONF).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", CONF),
                ("client_secret", CONF_SECRET),
            ],
            None,
        )
        .await;
    r.assert_ok();
}

#[tokio::test]
async fn confidential_client_authentication_failures() {
    let h = harness().await;
    let code = h.code(CONF).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    // Wrong secret over Basic: 401 with a Basic challenge.
    let r = h.token(&base, Some(&basic(CONF, "wrong"))).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert!(!r.body.to_string().contains("wrong"), "no secret echoed");
    // Wrong secret in the body: 401, no challenge.
    let mut p = base.to_vec();
    p.extend([("client_id", CONF), ("client_secret", "wrong")]);
    let r = h.token(&p, None).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(r.headers.get("www-authenticate").is_none());
    // A confidential client without its secret.
    let mut p = base.to_vec();
    p.push(("client_id", CONF));
    h.token(&p, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // A public client presenting a secret it does not have.
    let mut p = base.to_vec();
    p.extend([("client_id", PUBLIC), ("client_secret", "anything")]);
    h.token(&p, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // None of that spent the code.
    h.token(&base, Some(&basic(CONF, CONF_SECRET)))
        .await
        .assert_ok();
}

#[tokio::test]
async fn expired_client_secret_is_invalid_client() {
    let h = harness().await;
    let mut client = dynamic_client("expired-secret", &["authorization_code", "refresh_token"]);
    client.secret_hash = Some(SecretHash::of("old-secret"));
    client.secret_expires_at = now() - 1;
    client.token_endpoint_auth_method = TokenEndpointAuthMethod::ClientSecretPost;
    h.server.client_store().insert_client(client).await.unwrap();
    let code = h.code("expired-secret").await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", "expired-secret"),
                ("client_secret", "old-secret"),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_before_base64() {
    let id = "svc:a b+c%é";
    let secret = "p@ss:w+rd%/ é&=";
    let h = harness_with(
        ISSUER,
        builder().client(StaticClient::confidential(id, secret, [REDIRECT])),
    )
    .await;
    let code = h.code(id).await;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    // Unencoded credentials split at the first ':' of the id: unknown client.
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    );
    h.token(&params, Some(&raw))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let r = h.token(&params, Some(&basic(id, secret))).await;
    r.assert_ok();
    assert_eq!(jwt_claims(&r.field("access_token"))["client_id"], id);
}

#[tokio::test]
async fn more_than_one_authentication_method_is_invalid_request() {
    let h = harness().await;
    let code = h.code(CONF).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_secret", CONF_SECRET),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A client_id in the body naming someone else than Basic does.
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // The same client_id in both is fine.
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", CONF),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await;
    r.assert_ok();
}

#[tokio::test]
async fn unregistered_client_is_401_invalid_client() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let r = h.exchange("deleted-client", &code).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(r.headers.get("www-authenticate").is_none());
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(&basic("deleted-client", "x")),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"oauth\"");
    // No client authentication at all.
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // An assertion from a client not registered for private_key_jwt (without the feature
    // `private-key-jwt`, from any client) is refused.
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "a.b.c"),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // The code survived all of it.
    h.exchange(PUBLIC, &code).await.assert_ok();
}

#[tokio::test]
async fn json_body_is_invalid_request() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let body = json!({
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER, "client_id": PUBLIC,
    });
    let r = h
        .send(
            Request::post("/token")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // No content type at all.
    let r = h
        .send(
            Request::post("/token")
                .body(Body::from(form(&[("grant_type", "authorization_code")])))
                .unwrap(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A charset parameter and odd casing are fine.
    let r = h
        .send(
            Request::post("/token")
                .header(
                    "content-type",
                    "Application/X-WWW-Form-URLEncoded; charset=UTF-8",
                )
                .body(Body::from(form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                    ("client_id", PUBLIC),
                ])))
                .unwrap(),
        )
        .await;
    r.assert_ok();
}

#[tokio::test]
async fn duplicate_parameters_are_refused() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    for dup in ["code", "client_id", "grant_type", "code_verifier"] {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", PUBLIC),
        ];
        let value = params.iter().find(|(k, _)| *k == dup).unwrap().1;
        params.push((dup, value));
        h.token(&params, None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
                ("resource", RESOURCE),
                ("resource", "https://mcp.example.com/other"),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_target");
    // Refused before the code was touched.
    h.exchange(PUBLIC, &code).await.assert_ok();
}

#[tokio::test]
async fn grant_type_missing_or_unsupported() {
    let h = harness().await;
    h.token(&[("client_id", PUBLIC)], None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Empty counts as absent.
    h.token(&[("grant_type", ""), ("client_id", PUBLIC)], None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for g in [
        "password",
        "client_credentials",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        h.token(&[("grant_type", g), ("client_id", PUBLIC)], None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn other_methods_get_405_json() {
    let h = harness().await;
    let r = h
        .send(Request::get("/token").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error(), "invalid_request");
    assert_eq!(r.headers["allow"], "POST");
}

#[tokio::test]
async fn wrong_pkce_verifier_spends_the_code() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let wrong = "x".repeat(43);
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &wrong),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // One guess per code: the right verifier no longer helps.
    h.exchange(PUBLIC, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn malformed_or_missing_pkce_verifier() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    for bad in [
        &VERIFIER[..42],
        &format!("{}!", &VERIFIER[..43]),
        &"a".repeat(129),
    ] {
        let r = h
            .token(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", bad),
                    ("client_id", PUBLIC),
                ],
                None,
            )
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A verifier that cannot be right is refused before the code is taken.
    h.exchange(PUBLIC, &code).await.assert_ok();
}

#[tokio::test]
async fn replayed_code_is_refused_and_kills_what_it_issued() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let first = h.exchange(PUBLIC, &code).await;
    first.assert_ok();
    let access = first.field("access_token");
    let refresh = first.field("refresh_token");
    assert_eq!(h.mcp(&access).await.0, StatusCode::OK);

    h.exchange(PUBLIC, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    let (status, _) = h.mcp(&access).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the first access token is dead"
    );
    h.refresh(PUBLIC, &refresh)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn replay_racing_the_first_redemption_fails_both() {
    // The replay revokes the family before the first exchange created it: the tombstone
    // makes the first exchange fail too, so nobody holds a token of a replayed code.
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let grants = h.server.grant_store();
    let CodeTake::Taken(_) = grants
        .take_code(&SecretHash::of(&code), "winner", now())
        .await
        .unwrap()
    else {
        panic!("first take")
    };
    h.exchange(PUBLIC, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(grants.is_token_revoked("winner.x", now()).await.unwrap());
    // The first redemption, finishing late, cannot create its family any more.
    let late = RefreshFamily {
        family_id: "winner".into(),
        client_id: PUBLIC.into(),
        subject: "alice".into(),
        scope: ScopeSet::parse("read").unwrap(),
        resource: RESOURCE.into(),
        claims: serde_json::Map::new(),
        auth_time: now(),
        created_at: now(),
        expires_at: now() + 3600,
    };
    assert!(matches!(
        grants.create_family(late, None).await,
        Err(StoreError::Conflict { .. })
    ));
}

#[tokio::test]
async fn code_of_another_client_is_invalid_grant() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    h.exchange(OTHER, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // The stolen code is spent.
    h.exchange(PUBLIC, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn redirect_uri_must_match_byte_for_byte() {
    let h = harness().await;
    for other in [
        "https://app.example.com/callback/",
        "https://APP.example.com/callback",
        "https://app.example.com/callback?x=1",
    ] {
        let code = h.code(PUBLIC).await;
        let r = h
            .token(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", other),
                    ("code_verifier", VERIFIER),
                    ("client_id", PUBLIC),
                ],
                None,
            )
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let code = h.code(PUBLIC).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn resource_must_match_the_code() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
                ("resource", "https://mcp.example.com/other"),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_target");

    let code = h.code(PUBLIC).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", PUBLIC),
                ("resource", RESOURCE),
            ],
            None,
        )
        .await;
    r.assert_ok();

    // A code for the second resource yields a token for it.
    let code = h
        .code_with(PUBLIC, |c| {
            c.resource = "https://mcp.example.com/other".into()
        })
        .await;
    let r = h.exchange(PUBLIC, &code).await;
    r.assert_ok();
    let access = r.field("access_token");
    assert_eq!(jwt_claims(&access)["aud"], "https://mcp.example.com/other");
}

/// MCP authorization A1/A2: a token issued for `https://mcp.example.com/other` must not be
/// accepted at `https://mcp.example.com/mcp`, though one layer serves both and its verifier
/// accepts both audiences; each works at its own resource only.
#[tokio::test]
async fn token_for_another_resource_is_refused_by_the_layer() {
    let h = harness().await;
    let code = h
        .code_with(PUBLIC, |c| {
            c.resource = "https://mcp.example.com/other".into()
        })
        .await;
    let other = h.exchange(PUBLIC, &code).await.field("access_token");
    let code = h.code(PUBLIC).await;
    let mcp = h.exchange(PUBLIC, &code).await.field("access_token");

    let req = Request::post("/mcp")
        .header("authorization", format!("Bearer {other}"))
        .body(Body::from(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ))
        .unwrap();
    let r = send(h.app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let www = r.headers["www-authenticate"].to_str().unwrap();
    assert!(
        www.starts_with(
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
        ) && www.contains(r#"error="invalid_token""#),
        "{www}"
    );
    assert_eq!(h.mcp_at("/other", &mcp).await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(h.mcp_at("/other", &other).await.0, StatusCode::OK);
    assert_eq!(h.mcp(&mcp).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_or_expired_code_is_invalid_grant() {
    let h = harness().await;
    h.exchange(PUBLIC, "no-such-code")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let code = h.code_with(PUBLIC, |c| c.expires_at = now() - 1).await;
    h.exchange(PUBLIC, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    h.token(
        &[
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", PUBLIC),
        ],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

fn dynamic_client(id: &str, grants: &[&str]) -> Client {
    Client {
        client_id: id.to_owned(),
        secret_hash: None,
        secret_expires_at: 0,
        client_name: None,
        redirect_uris: vec![REDIRECT.to_owned()],
        grant_types: grants.iter().map(|g| (*g).to_owned()).collect(),
        token_endpoint_auth_method: TokenEndpointAuthMethod::None,
        application_type: ApplicationType::Web,
        scope: None,
        extra: serde_json::Map::new(),
        issued_at: now(),
        last_used_at: 0,
        source: ClientSource::Dynamic,
    }
}

#[tokio::test]
async fn refresh_token_only_for_clients_registered_for_it() {
    let h = harness().await;
    let store = h.server.client_store();
    store
        .insert_client(dynamic_client("code-only", &["authorization_code"]))
        .await
        .unwrap();
    let code = h.code("code-only").await;
    let r = h.exchange("code-only", &code).await;
    r.assert_ok();
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    assert_eq!(h.mcp(&r.field("access_token")).await.0, StatusCode::OK);
    h.refresh("code-only", "anything")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");

    // Registered for refresh_token: one is issued without offline_access being asked for.
    store
        .insert_client(dynamic_client(
            "with-refresh",
            &["authorization_code", "refresh_token"],
        ))
        .await
        .unwrap();
    let code = h.code("with-refresh").await;
    let r = h.exchange("with-refresh", &code).await;
    r.assert_ok();
    assert!(r.body["refresh_token"].is_string());
    let touched = store.get_client("with-refresh").await.unwrap().unwrap();
    assert!(
        touched.last_used_at >= now() - 5,
        "the token endpoint touches the client"
    );

    // Not registered for authorization_code at all.
    store
        .insert_client(dynamic_client("refresh-only", &["refresh_token"]))
        .await
        .unwrap();
    let code = h.code("refresh-only").await;
    h.exchange("refresh-only", &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
}

// ---------------------------------------------------------------- refresh_token

async fn first_tokens(h: &Harness, client: &str) -> (String, String) {
    let code = h.code(client).await;
    let r = h.exchange(client, &code).await;
    r.assert_ok();
    (r.field("access_token"), r.field("refresh_token"))
}

#[tokio::test]
async fn refresh_rotates_every_time() {
    let h = harness().await;
    let (access0, rt0) = first_tokens(&h, PUBLIC).await;
    let r = h.refresh(PUBLIC, &rt0).await;
    r.assert_ok();
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["pragma"], "no-cache");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "read write");
    let rt1 = r.field("refresh_token");
    let access1 = r.field("access_token");
    assert_ne!(rt1, rt0);
    assert_ne!(access1, access0);
    let (c0, c1) = (jwt_claims(&access0), jwt_claims(&access1));
    let family = |c: &Value| {
        c["jti"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(family(&c0), family(&c1), "same grant family");
    assert_eq!(c1["aud"], RESOURCE);
    assert_eq!(c1["email"], "alice@example.com");
    assert_eq!(h.mcp(&access1).await.0, StatusCode::OK);

    let r = h.refresh(PUBLIC, &rt1).await;
    r.assert_ok();
    assert_ne!(r.field("refresh_token"), rt1);
}

#[tokio::test]
async fn refresh_reuse_after_rotation_revokes_the_family() {
    let h = harness().await;
    let (access0, rt0) = first_tokens(&h, PUBLIC).await;
    let rt1 = h.refresh(PUBLIC, &rt0).await.field("refresh_token");
    let r = h.refresh(PUBLIC, &rt1).await;
    let rt2 = r.field("refresh_token");
    let access2 = r.field("access_token");
    // rt0 is two rotations back: reuse, whatever the grace window.
    h.refresh(PUBLIC, &rt0)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // The whole family is gone: the current refresh token and every access token.
    h.refresh(PUBLIC, &rt2)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access0).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.mcp(&access2).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_reuse_after_the_grace_window() {
    let h = harness_with(ISSUER, builder().refresh_grace(Duration::ZERO)).await;
    let (_, rt0) = first_tokens(&h, PUBLIC).await;
    let r = h.refresh(PUBLIC, &rt0).await;
    let rt1 = r.field("refresh_token");
    let access1 = r.field("access_token");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.refresh(PUBLIC, &rt0)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    h.refresh(PUBLIC, &rt1)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access1).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_inside_the_grace_get_the_same_successor() {
    let h = harness().await;
    let (_, rt0) = first_tokens(&h, PUBLIC).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let app = h.app.clone();
        let barrier = barrier.clone();
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt0),
            ("client_id", PUBLIC),
        ]);
        set.spawn(async move {
            let req = Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            barrier.wait().await;
            send(app, req).await
        });
    }
    let mut successors = std::collections::HashSet::new();
    let mut access = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        r.assert_ok();
        successors.insert(r.field("refresh_token"));
        access.insert(r.field("access_token"));
    }
    assert_eq!(
        successors.len(),
        1,
        "every racer receives the same successor"
    );
    assert_eq!(access.len(), 16, "each racer gets its own access token");
    let rt1 = successors.into_iter().next().unwrap();
    assert_ne!(rt1, rt0);
    // The family is intact: the successor rotates, and the access tokens work.
    for a in &access {
        assert_eq!(h.mcp(a).await.0, StatusCode::OK);
    }
    h.refresh(PUBLIC, &rt1).await.assert_ok();
}

#[tokio::test]
async fn refresh_may_narrow_but_never_widen_scope() {
    let h = harness().await;
    let code = h
        .code_with(PUBLIC, |c| c.scope = ScopeSet::parse("read").unwrap())
        .await;
    let r = h.exchange(PUBLIC, &code).await;
    let rt = r.field("refresh_token");
    for wider in ["read write", "write", "admin", "read offline_access"] {
        let r = h
            .token(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", PUBLIC),
                    ("scope", wider),
                ],
                None,
            )
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    // A refused request did not burn the token.
    h.refresh(PUBLIC, &rt).await.assert_ok();

    let (_, rt) = first_tokens(&h, PUBLIC).await;
    let r = h
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", PUBLIC),
                ("scope", "read"),
            ],
            None,
        )
        .await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
    assert_eq!(jwt_claims(&r.field("access_token"))["scope"], "read");
    // Narrowing one refresh does not shrink the grant: the next may ask for all of it.
    let r = h.refresh(PUBLIC, &r.field("refresh_token")).await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read write");
}

#[tokio::test]
async fn refresh_resource_must_match_the_grant() {
    let h = harness().await;
    let (_, rt) = first_tokens(&h, PUBLIC).await;
    let r = h
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", PUBLIC),
                ("resource", "https://mcp.example.com/other"),
            ],
            None,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_target");
    let r = h
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", PUBLIC),
                ("resource", RESOURCE),
            ],
            None,
        )
        .await;
    r.assert_ok();
}

#[tokio::test]
async fn refresh_token_of_another_client_is_not_burned() {
    let h = harness().await;
    let (_, rt) = first_tokens(&h, PUBLIC).await;
    h.refresh(OTHER, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    h.refresh(PUBLIC, &rt).await.assert_ok();
}

#[tokio::test]
async fn unknown_or_missing_refresh_token() {
    let h = harness().await;
    h.refresh(PUBLIC, "not-a-refresh-token")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    h.token(
        &[("grant_type", "refresh_token"), ("client_id", PUBLIC)],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn confidential_client_refreshes_with_its_secret() {
    let h = harness().await;
    let code = h.code(CONF).await;
    let r = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await;
    let rt = r.field("refresh_token");
    let params = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
    ];
    h.token(&params, Some(&basic(CONF, "wrong")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let mut p = params.to_vec();
    p.push(("client_id", CONF));
    h.token(&p, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    h.token(&params, Some(&basic(CONF, CONF_SECRET)))
        .await
        .assert_ok();
}

#[tokio::test]
async fn issuer_with_a_path_serves_the_token_endpoint_under_it() {
    let h = harness_with("https://mcp.example.com/tenant", builder()).await;
    let code = h.code(PUBLIC).await;
    let params = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", PUBLIC),
    ]);
    let r = h
        .send(
            Request::post("/tenant/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(params))
                .unwrap(),
        )
        .await;
    r.assert_ok();
    assert_eq!(
        jwt_claims(&r.field("access_token"))["iss"],
        "https://mcp.example.com/tenant"
    );
    assert_eq!(h.mcp(&r.field("access_token")).await.0, StatusCode::OK);
}

// ---------------------------------------------------------------- store outage

/// A grant store that is down.
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::unavailable("connection refused"))
}

#[async_trait]
impl GrantStore for DownStore {
    /// A test double that keeps nothing: the server signs with a key of its own.
    fn is_durable(&self) -> bool {
        false
    }
    async fn put_code(&self, _: SecretHash, _: AuthorizationCode) -> Result<(), StoreError> {
        down()
    }
    async fn take_code(&self, _: &SecretHash, _: &str, _: u64) -> Result<CodeTake, StoreError> {
        down()
    }
    async fn create_family(
        &self,
        _: RefreshFamily,
        _: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn rotate_refresh(
        &self,
        _: &SecretHash,
        _: SecretHash,
        _: Vec<u8>,
        _: u64,
        _: u64,
    ) -> Result<Rotation, StoreError> {
        down()
    }
    async fn revoke_family(&self, _: &str, _: u64) -> Result<(), StoreError> {
        down()
    }
    async fn family_of_refresh(
        &self,
        _: &SecretHash,
        _: u64,
    ) -> Result<Option<mcp_oauth::store::RefreshLookup>, StoreError> {
        down()
    }
    async fn revoke_token(&self, _: &str, _: u64) -> Result<(), StoreError> {
        down()
    }
    async fn is_token_revoked(&self, _: &str, _: u64) -> Result<bool, StoreError> {
        down()
    }
    async fn get_consent(&self, _: &str, _: &str) -> Result<Option<ScopeSet>, StoreError> {
        down()
    }
    async fn put_consent(&self, _: &str, _: &str, _: &ScopeSet, _: u64) -> Result<(), StoreError> {
        down()
    }
    async fn put_pending(&self, _: &str, _: PendingAuthorization) -> Result<(), StoreError> {
        down()
    }
    async fn get_pending(
        &self,
        _: &str,
        _: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        down()
    }
    async fn take_pending(
        &self,
        _: &str,
        _: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        down()
    }
    async fn sweep(&self, _: u64) -> Result<u64, StoreError> {
        down()
    }
    async fn stats(&self, _: u64) -> Result<StoreStats, StoreError> {
        down()
    }
}

#[tokio::test]
async fn store_outage_is_503_temporarily_unavailable() {
    let h = harness_with(ISSUER, builder().grant_store(DownStore)).await;
    let r = h.exchange(PUBLIC, "some-code").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
    assert!(r.headers.get("retry-after").is_some());
    assert!(
        !r.body.to_string().contains("connection refused"),
        "no internals leak"
    );
    h.refresh(PUBLIC, "some-refresh-token")
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
}

#[tokio::test]
async fn token_revoke_and_introspect_share_the_token_rate_limit() {
    let h = harness_with(
        ISSUER,
        builder().token_rate_limit(mcp_oauth::server::RateLimit::per_minute(3)),
    )
    .await;
    let post = |path: &'static str| {
        Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form(&[("client_id", PUBLIC), ("token", "x")])))
            .unwrap()
    };
    assert_eq!(h.send(post("/token")).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.send(post("/revoke")).await.status, StatusCode::OK);
    assert_eq!(
        h.send(post("/introspect")).await.status,
        StatusCode::UNAUTHORIZED
    );
    for path in ["/token", "/revoke", "/introspect"] {
        let r = h.send(post(path)).await;
        r.assert_error(StatusCode::TOO_MANY_REQUESTS, "slow_down");
        assert!(r.headers.get("retry-after").is_some(), "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// Issue 8 item 6: a replayed code is no kill switch
// ---------------------------------------------------------------------------------------

/// Issue 8 item 6: another client replaying a used code (with the right verifier even) gets
/// `invalid_grant` and revokes nothing: the first exchange's tokens keep working. Before
/// the fix any replay revoked the family, so anyone who saw a used code could log its user
/// out.
#[tokio::test]
async fn replay_by_another_client_revokes_nothing() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let first = h.exchange(PUBLIC, &code).await;
    first.assert_ok();
    let (access, refresh) = (first.field("access_token"), first.field("refresh_token"));
    h.exchange(OTHER, &code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let with_secret = h
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await;
    with_secret.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access).await.0, StatusCode::OK, "access token alive");
    h.refresh(PUBLIC, &refresh).await.assert_ok();
}

/// Issue 8 item 6: the code's own client replaying it without the right PKCE verifier (the
/// client id of a public client is no secret) revokes nothing either.
#[tokio::test]
async fn replay_with_a_wrong_verifier_revokes_nothing() {
    let h = harness().await;
    let code = h.code(PUBLIC).await;
    let first = h.exchange(PUBLIC, &code).await;
    first.assert_ok();
    let (access, refresh) = (first.field("access_token"), first.field("refresh_token"));
    let wrong = "w".repeat(43);
    h.token(
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &wrong),
            ("client_id", PUBLIC),
        ],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access).await.0, StatusCode::OK, "access token alive");
    h.refresh(PUBLIC, &refresh).await.assert_ok();
}

/// Issue 8 item 6, the positive side: the code's own (confidential) client, authenticated
/// and with the right verifier, replaying its code revokes the family (RFC 6749 §4.1.2);
/// the same replay with a wrong secret is `invalid_client` and revokes nothing.
#[tokio::test]
async fn replay_by_the_authenticated_owner_with_its_verifier_revokes_the_family() {
    let h = harness().await;
    let code = h.code(CONF).await;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let first = h.token(&params, Some(&basic(CONF, CONF_SECRET))).await;
    first.assert_ok();
    let access = first.field("access_token");
    h.token(&params, Some(&basic(CONF, "not-the-secret")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(h.mcp(&access).await.0, StatusCode::OK);
    h.token(&params, Some(&basic(CONF, CONF_SECRET)))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
    h.refresh_with_secret(&first.field("refresh_token"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

impl Harness {
    async fn refresh_with_secret(&self, refresh_token: &str) -> Reply {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            Some(&basic(CONF, CONF_SECRET)),
        )
        .await
    }

    /// `GET /authorize` (auto-approved) for `client_id`; the code from the redirect.
    async fn authorize(&self, client_id: &str, redirect_uri: Option<&str>) -> String {
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("scope", "read"),
            ("state", "s1"),
        ];
        if let Some(r) = redirect_uri {
            q.push(("redirect_uri", r));
        }
        let url = format!("/authorize?{}", form(&q));
        let res = self
            .app
            .clone()
            .oneshot(Request::get(url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let loc = res.headers()["location"].to_str().unwrap().to_owned();
        let query = loc.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {loc}"))
    }

    async fn exchange_at(&self, client_id: &str, code: &str, redirect_uri: Option<&str>) -> Reply {
        let mut p = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
        ];
        if let Some(r) = redirect_uri {
            p.push(("redirect_uri", r));
        }
        self.token(&p, None).await
    }
}

// ---------------------------------------------------------------------------------------
// Issue 8 item 9 (token part) and item 11: redirect_uri at /token
// ---------------------------------------------------------------------------------------

/// Issue 8 item 9: OAuth 2.1 §4.1.3 requires `redirect_uri` at `/token` only when the
/// authorization request carried one. A client with one registered URI that left it out of
/// `/authorize` may leave it out of `/token` too (before the fix: `invalid_request`); when it
/// sends one anyway it must be the registered one.
#[tokio::test]
async fn redirect_uri_is_optional_when_authorize_did_not_send_it() {
    let h = harness().await;
    let code = h.authorize(PUBLIC, None).await;
    h.exchange_at(PUBLIC, &code, None).await.assert_ok();

    let code = h.authorize(PUBLIC, None).await;
    h.exchange_at(PUBLIC, &code, Some("https://app.example.com/other"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    let code = h.authorize(PUBLIC, None).await;
    h.exchange_at(PUBLIC, &code, Some(REDIRECT))
        .await
        .assert_ok();
}

/// Issue 8 item 9, the negative side: when `/authorize` carried `redirect_uri`, `/token`
/// must repeat it (`invalid_request` without it, `invalid_grant` when it differs).
#[tokio::test]
async fn redirect_uri_is_required_when_authorize_sent_it() {
    let h = harness().await;
    let code = h.authorize(PUBLIC, Some(REDIRECT)).await;
    h.exchange_at(PUBLIC, &code, None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Like every failed check after the code is read, this spends the code.
    h.exchange_at(PUBLIC, &code, Some(REDIRECT))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let code = h.authorize(PUBLIC, Some(REDIRECT)).await;
    h.exchange_at(PUBLIC, &code, Some(REDIRECT))
        .await
        .assert_ok();
}

/// Issue 8 item 11: a loopback `redirect_uri` matches any port at `/authorize` (RFC 8252),
/// but at `/token` it must equal the one sent to `/authorize` byte for byte, port included.
#[tokio::test]
async fn loopback_redirect_uri_at_token_must_match_byte_for_byte() {
    const NATIVE: &str = "native-client";
    let h = harness_with(
        ISSUER,
        builder().client(StaticClient::public(NATIVE, ["http://127.0.0.1/callback"])),
    )
    .await;
    let sent = "http://127.0.0.1:51234/callback";
    for other in [
        "http://127.0.0.1:51235/callback",
        "http://127.0.0.1/callback",
        "http://localhost:51234/callback",
        "http://[::1]:51234/callback",
        "http://127.0.0.1:51234/callback/",
        "http://127.0.0.1:051234/callback",
    ] {
        let code = h.authorize(NATIVE, Some(sent)).await;
        h.exchange_at(NATIVE, &code, Some(other))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let code = h.authorize(NATIVE, Some(sent)).await;
    h.exchange_at(NATIVE, &code, Some(sent)).await.assert_ok();
}

// ---------------------------------------------------------------------------------------
// Issue 8 item 11: an expired refresh token
// ---------------------------------------------------------------------------------------

/// Issue 8 item 11: a refresh token whose family has expired gets `invalid_grant` (and is
/// not rotated). The family is written with an `expires_at` in the past, so no clock or
/// sleep is involved.
#[tokio::test]
async fn expired_refresh_token_is_invalid_grant() {
    let h = harness().await;
    let rt = format!("rt-{}", rand());
    let family = RefreshFamily {
        family_id: format!("fam{}", rand()),
        client_id: PUBLIC.into(),
        subject: "alice".into(),
        scope: ScopeSet::parse("read").unwrap(),
        resource: RESOURCE.into(),
        claims: serde_json::Map::new(),
        auth_time: now() - 7200,
        created_at: now() - 7200,
        expires_at: now() - 1,
    };
    h.server
        .grant_store()
        .create_family(family, Some(SecretHash::of(&rt)))
        .await
        .unwrap();
    h.refresh(PUBLIC, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // A live one next to it works, so the refusal is about the expiry.
    let (_, live) = first_tokens(&h, PUBLIC).await;
    h.refresh(PUBLIC, &live).await.assert_ok();
}

/// A page's response: status, cookies set (name=value), location, body.
struct Page {
    status: StatusCode,
    cookies: Vec<(String, String)>,
    location: Option<String>,
    body: String,
}

impl Page {
    fn attr(&self, marker: &str) -> String {
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].replace("&amp;", "&")
    }
}

async fn browse(app: &Router, req: Request<Body>) -> Page {
    let res = app.clone().oneshot(req).await.unwrap();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Page {
        status,
        cookies,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Issue 8 item 9 through the login and consent pages: the "was `redirect_uri` sent?" fact
/// survives the pending request parked while the user signs in and decides.
#[tokio::test]
async fn redirect_uri_rule_survives_the_login_and_consent_pages() {
    let h = harness_with(
        ISSUER,
        builder().authenticator(mcp_oauth::authn::StaticUsers::new().with_password("alice", "pw")),
    )
    .await;
    for sent in [None, Some(REDIRECT)] {
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", PUBLIC),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("scope", "read"),
        ];
        if let Some(r) = sent {
            q.push(("redirect_uri", r));
        }
        let mut jar: Vec<(String, String)> = Vec::new();
        let mut page = browse(
            &h.app,
            Request::get(format!("/authorize?{}", form(&q)))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let mut fields: Vec<(&str, &str)> = vec![("username", "alice"), ("password", "pw")];
        let mut forms = 0;
        let code = loop {
            assert!(page.status == StatusCode::OK || page.status == StatusCode::FOUND);
            for (k, v) in &page.cookies {
                jar.retain(|(name, _)| name != k);
                jar.push((k.clone(), v.clone()));
            }
            if let Some(loc) = &page.location {
                assert_eq!(forms, 2, "the login page, then the consent page");
                break form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| panic!("no code in {loc}"));
            }
            let (rid, csrf) = (
                page.attr("name=\"request_id\" value=\""),
                page.attr("name=\"csrf_token\" value=\""),
            );
            let mut all = fields.clone();
            all.extend([
                ("request_id", rid.as_str()),
                ("csrf_token", csrf.as_str()),
                ("decision", "approve"),
            ]);
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            page = browse(
                &h.app,
                Request::post(page.attr("action=\""))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("cookie", cookie)
                    .body(Body::from(form(&all)))
                    .unwrap(),
            )
            .await;
            fields.clear();
            forms += 1;
        };
        let r = h.exchange_at(PUBLIC, &code, None).await;
        match sent {
            None => r.assert_ok(),
            Some(_) => r.assert_error(StatusCode::BAD_REQUEST, "invalid_request"),
        }
    }
}
