//! RFC 7009 revocation and RFC 7662 introspection, driven through `oauth_router`, with the
//! MCP endpoint behind `McpOAuthLayer` (configured by `.authorization_server(&server)`) to prove
//! that a revoked token really stops working, cached or not.

#![cfg(feature = "server")]

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, StaticClient};
use mcp_oauth::store::{AuthorizationCode, SecretHash};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "https://app.example.com/callback";
const PUBLIC: &str = "public-client";
const OTHER: &str = "other-client";
/// A confidential client: a resource server allowed to introspect.
const RS: &str = "resource-server";
const RS_SECRET: &str = "rs-secret-0123456789abcdef";
/// A confidential client that is not a resource server: it may not introspect.
const CONFIDENTIAL_APP: &str = "confidential-app";
const APP_SECRET: &str = "app-secret-0123456789abcdef";
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
    #[track_caller]
    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], error, "{}", self.body);
        assert_eq!(self.headers["cache-control"], "no-store");
    }

    fn field(&self, name: &str) -> String {
        self.body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            .to_owned()
    }
}

async fn harness() -> Harness {
    harness_with(std::time::Duration::ZERO).await
}

/// The harness with the layer's `McpOAuthConfigBuilder::revocation_cache`
/// set to `revocation_cache`.
async fn harness_with(revocation_cache: std::time::Duration) -> Harness {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .client(StaticClient::public(PUBLIC, [REDIRECT]))
        .client(StaticClient::public(OTHER, [REDIRECT]))
        .client(StaticClient::confidential(RS, RS_SECRET, [REDIRECT]))
        .client(StaticClient::confidential(
            CONFIDENTIAL_APP,
            APP_SECRET,
            [REDIRECT],
        ))
        .introspection_clients([RS])
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("read", "Read")
        .scope("write", "Write")
        .authorization_server(&server)
        .revocation_cache(revocation_cache)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/mcp",
            post(|auth: Auth| async move { axum::Json(json!({"sub": auth.subject()})) }),
        )
        .layer(McpOAuthLayer::new(cfg.clone()))
        .merge(oauth_router(&cfg, &server));
    Harness { server, app }
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Harness {
    async fn post(&self, path: &str, params: &[(&str, &str)], auth: Option<&str>) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut req =
            Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "no 500, ever");
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], "application/json");
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).expect("JSON"),
        }
    }

    /// A code exchange for `client`: (access token, refresh token).
    async fn tokens(&self, client: &str) -> (String, String) {
        let code = format!("code-{}", seq());
        self.server
            .grant_store()
            .put_code(
                SecretHash::of(&code),
                AuthorizationCode {
                    client_id: client.into(),
                    redirect_uri: REDIRECT.into(),
                    redirect_uri_in_request: true,
                    code_challenge: CHALLENGE.into(),
                    scope: ScopeSet::parse("read write").unwrap(),
                    resource: RESOURCE.into(),
                    subject: "alice".into(),
                    claims: serde_json::Map::new(),
                    auth_time: now(),
                    expires_at: now() + 60,
                },
            )
            .await
            .unwrap();
        let r = self
            .post(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                    ("client_id", client),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (r.field("access_token"), r.field("refresh_token"))
    }

    async fn refresh(&self, client: &str, rt: &str) -> Reply {
        self.post(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", client),
            ],
            None,
        )
        .await
    }

    async fn revoke(&self, client: &str, token: &str, hint: Option<&str>) -> Reply {
        let mut p = vec![("token", token), ("client_id", client)];
        if let Some(h) = hint {
            p.push(("token_type_hint", h));
        }
        self.post("/revoke", &p, None).await
    }

    async fn introspect(&self, token: &str) -> Reply {
        self.post(
            "/introspect",
            &[("token", token)],
            Some(&basic(RS, RS_SECRET)),
        )
        .await
    }

    async fn mcp(&self, access: &str) -> StatusCode {
        let req = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {access}"))
            .body(Body::from(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            ))
            .unwrap();
        self.app.clone().oneshot(req).await.unwrap().status()
    }
}

// ---------------------------------------------------------------- revocation

#[tokio::test]
async fn revoking_an_access_token_makes_the_layer_refuse_it() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    // Verified once, so the layer has it cached: revocation must still win.
    assert_eq!(h.mcp(&access).await, StatusCode::OK);
    let r = h.revoke(PUBLIC, &access, Some("access_token")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
    // Only that token: the grant lives on.
    let r = h.refresh(PUBLIC, &rt).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(h.mcp(&r.field("access_token")).await, StatusCode::OK);
    // Revoking it again is fine.
    assert_eq!(h.revoke(PUBLIC, &access, None).await.status, StatusCode::OK);
}

/// `revocation_cache(ttl)` (opt-in) trades "at once" for "within `ttl`": right after the
/// revocation the layer still trusts its fresh "not revoked" answer (so the cache is really
/// in the path), once `ttl` has passed it asks the store again and refuses the token.
/// Introspection (the authorization server's own view) is exact all along.
#[tokio::test]
async fn with_a_revocation_cache_a_revoked_token_is_refused_within_the_ttl() {
    let ttl = std::time::Duration::from_secs(3);
    let h = harness_with(ttl).await;
    let (access, _) = h.tokens(PUBLIC).await;
    assert_eq!(h.mcp(&access).await, StatusCode::OK);
    let r = h.revoke(PUBLIC, &access, Some("access_token")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(h.introspect(&access).await.body["active"], false);
    assert_eq!(h.mcp(&access).await, StatusCode::OK, "inside the ttl");
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
}

/// More than a minute is refused when the configuration is built.
#[tokio::test]
async fn a_revocation_cache_over_a_minute_is_refused() {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .build()
        .await
        .unwrap();
    let built = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("read", "Read")
        .authorization_server(&server)
        .revocation_cache(std::time::Duration::from_secs(61))
        .build();
    let e = built.expect_err("refused");
    assert!(
        matches!(
            e,
            mcp_oauth::ConfigError::OutOfRange {
                field: "revocation_cache",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_the_whole_grant() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    assert_eq!(h.mcp(&access).await, StatusCode::OK);
    let r = h.revoke(PUBLIC, &rt, Some("refresh_token")).await;
    assert_eq!(r.status, StatusCode::OK);
    h.refresh(PUBLIC, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_type_hint_is_only_a_hint() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    // Wrong hints, and a hint nobody defined, still find the token.
    assert_eq!(
        h.revoke(PUBLIC, &access, Some("refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.revoke(PUBLIC, &rt, Some("access_token")).await.status,
        StatusCode::OK
    );
    h.refresh(PUBLIC, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let (_, rt) = h.tokens(PUBLIC).await;
    assert_eq!(
        h.revoke(PUBLIC, &rt, Some("id_token")).await.status,
        StatusCode::OK
    );
    h.refresh(PUBLIC, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn unknown_or_malformed_tokens_still_get_200() {
    let h = harness().await;
    for token in [
        "not-a-token",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        &"x".repeat(5000),
    ] {
        let r = h.revoke(PUBLIC, token, None).await;
        assert_eq!(r.status, StatusCode::OK, "{token}: {}", r.body);
    }
}

#[tokio::test]
async fn another_clients_tokens_are_left_alone() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    // 200, so nobody learns whether the token exists, but nothing is revoked.
    assert_eq!(h.revoke(OTHER, &rt, None).await.status, StatusCode::OK);
    assert_eq!(h.revoke(OTHER, &access, None).await.status, StatusCode::OK);
    assert_eq!(h.mcp(&access).await, StatusCode::OK);
    assert_eq!(h.refresh(PUBLIC, &rt).await.status, StatusCode::OK);
}

#[tokio::test]
async fn revocation_needs_client_authentication() {
    let h = harness().await;
    let (access, _) = h.tokens(PUBLIC).await;
    h.post("/revoke", &[("token", &access)], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    h.revoke("no-such-client", &access, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // A confidential client must use its secret here too.
    h.revoke(RS, &access, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    h.post("/revoke", &[("client_id", PUBLIC)], None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(h.mcp(&access).await, StatusCode::OK, "nothing was revoked");
}

#[tokio::test]
async fn confidential_client_revokes_its_own_tokens_with_its_secret() {
    let h = harness().await;
    let code = format!("code-{}", seq());
    h.server
        .grant_store()
        .put_code(
            SecretHash::of(&code),
            AuthorizationCode {
                client_id: RS.into(),
                redirect_uri: REDIRECT.into(),
                redirect_uri_in_request: true,
                code_challenge: CHALLENGE.into(),
                scope: ScopeSet::parse("read").unwrap(),
                resource: RESOURCE.into(),
                subject: "alice".into(),
                claims: serde_json::Map::new(),
                auth_time: now(),
                expires_at: now() + 60,
            },
        )
        .await
        .unwrap();
    let r = h
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(&basic(RS, RS_SECRET)),
        )
        .await;
    let access = r.field("access_token");
    let r = h
        .post(
            "/revoke",
            &[("token", &access)],
            Some(&basic(RS, RS_SECRET)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.mcp(&access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revocation_refuses_json_and_repeated_parameters() {
    let h = harness().await;
    let res = h
        .app
        .clone()
        .oneshot(
            Request::post("/revoke")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"token":"x","client_id":"public-client"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    h.post(
        "/revoke",
        &[("token", "a"), ("token", "b"), ("client_id", PUBLIC)],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

// ---------------------------------------------------------------- introspection

#[tokio::test]
async fn introspection_of_an_active_access_token() {
    let h = harness().await;
    let (access, _) = h.tokens(PUBLIC).await;
    let r = h.introspect(&access).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let b = &r.body;
    assert_eq!(b["active"], true);
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["scope"], "read write");
    assert_eq!(b["client_id"], PUBLIC);
    assert_eq!(b["sub"], "alice");
    assert_eq!(b["aud"], RESOURCE);
    assert_eq!(b["iss"], ISSUER);
    let (exp, iat) = (b["exp"].as_u64().unwrap(), b["iat"].as_u64().unwrap());
    assert!(iat <= now() && exp >= now() + 3500, "{b}");
    assert!(b["jti"].as_str().unwrap().contains('.'));
}

#[tokio::test]
async fn introspection_of_an_active_refresh_token() {
    let h = harness().await;
    let (_, rt) = h.tokens(PUBLIC).await;
    let r = h.introspect(&rt).await;
    let b = &r.body;
    assert_eq!(b["active"], true, "{b}");
    assert_eq!(b["token_type"], "refresh_token");
    assert_eq!(b["client_id"], PUBLIC);
    assert_eq!(b["scope"], "read write");
    assert_eq!(b["sub"], "alice");
    assert!(b["exp"].as_u64().unwrap() > now() + 24 * 3600);
    // The hint changes nothing.
    let r = h
        .post(
            "/introspect",
            &[("token", &rt), ("token_type_hint", "refresh_token")],
            Some(&basic(RS, RS_SECRET)),
        )
        .await;
    assert_eq!(r.body["active"], true);
}

#[tokio::test]
async fn introspection_reports_dead_tokens_inactive() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    h.revoke(PUBLIC, &access, None).await;
    assert_eq!(h.introspect(&access).await.body, json!({"active": false}));

    let (access, rt2) = h.tokens(PUBLIC).await;
    h.revoke(PUBLIC, &rt2, None).await;
    assert_eq!(h.introspect(&rt2).await.body, json!({"active": false}));
    assert_eq!(
        h.introspect(&access).await.body,
        json!({"active": false}),
        "the family's access tokens died with it"
    );

    for garbage in ["nope", "a.b.c", ""] {
        let r = h
            .post(
                "/introspect",
                &[
                    ("token", garbage),
                    ("client_id", RS),
                    ("client_secret", RS_SECRET),
                ],
                None,
            )
            .await;
        if garbage.is_empty() {
            r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        } else {
            assert_eq!(r.body, json!({"active": false}), "{garbage}");
        }
    }
    // A token signed by someone else's key.
    let foreign = mcp_oauth::keys::KeyRing::generate(mcp_oauth::keys::SigningAlgorithm::Es256)
        .unwrap()
        .sign(
            "at+jwt",
            &json!({"iss": ISSUER, "sub": "mallory", "aud": RESOURCE, "exp": now() + 600,
                    "iat": now(), "jti": "x.y", "client_id": PUBLIC, "scope": "read"}),
        )
        .unwrap();
    assert_eq!(h.introspect(&foreign).await.body, json!({"active": false}));
    assert_eq!(h.introspect(&rt).await.body["active"], true);
}

#[tokio::test]
async fn introspection_is_for_authenticated_confidential_clients_only() {
    let h = harness().await;
    let (access, _) = h.tokens(PUBLIC).await;
    h.post(
        "/introspect",
        &[("token", &access), ("client_id", PUBLIC)],
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    h.post("/introspect", &[("token", &access)], None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let r = h
        .post(
            "/introspect",
            &[("token", &access)],
            Some(&basic(RS, "wrong")),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(r.headers.get("www-authenticate").is_some());
    h.post(
        "/introspect",
        &[("token", &access), ("client_id", RS)],
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // With the secret in the body it works too.
    let r = h
        .post(
            "/introspect",
            &[
                ("token", &access),
                ("client_id", RS),
                ("client_secret", RS_SECRET),
            ],
            None,
        )
        .await;
    assert_eq!(r.body["active"], true);
}

/// RFC 7662: `active` means usable now. A refresh token rotated out (and past the grace
/// window) would trip reuse detection, so it must introspect inactive; the one just rotated
/// out is still usable inside the grace window, and the current one is active.
/// Issue 8 item 8 (this test was ignored before: the store could not tell the states apart).
#[tokio::test]
async fn rotated_out_refresh_token_introspects_inactive() {
    let h = harness().await;
    let (_, rt0) = h.tokens(PUBLIC).await;
    let rt1 = h.refresh(PUBLIC, &rt0).await.field("refresh_token");
    let rt2 = h.refresh(PUBLIC, &rt1).await.field("refresh_token");
    assert_eq!(h.introspect(&rt2).await.body["active"], true);
    assert_eq!(
        h.introspect(&rt1).await.body["active"],
        true,
        "the token just rotated out still works inside the grace window"
    );
    assert_eq!(h.introspect(&rt0).await.body, json!({"active": false}));
    // Introspecting did not trip reuse detection: the current token still refreshes.
    assert_eq!(h.refresh(PUBLIC, &rt2).await.status, StatusCode::OK);
}

/// Issue 8 item 8: authenticating is not enough to introspect. Only the configured resource
/// servers may; a confidential configured client that is not one, and a confidential
/// dynamically registered client, get `403 unauthorized_client` and learn nothing.
#[tokio::test]
async fn only_configured_resource_servers_may_introspect() {
    let h = harness().await;
    let (access, rt) = h.tokens(PUBLIC).await;
    for token in [&access, &rt] {
        let r = h
            .post(
                "/introspect",
                &[("token", token)],
                Some(&basic(CONFIDENTIAL_APP, APP_SECRET)),
            )
            .await;
        r.assert_error(StatusCode::FORBIDDEN, "unauthorized_client");
        assert!(r.body.get("active").is_none(), "{}", r.body);
    }

    // A client registered through DCR with a secret.
    let res = h
        .app
        .clone()
        .oneshot(
            Request::post("/register")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({
                        "redirect_uris": [REDIRECT],
                        "token_endpoint_auth_method": "client_secret_basic",
                    })
                    .to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let reg: Value = serde_json::from_slice(
        &axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let r = h
        .post(
            "/introspect",
            &[("token", &access)],
            Some(&basic(id, secret)),
        )
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "unauthorized_client");
    // Its authentication is still checked first: a wrong secret is 401.
    h.post(
        "/introspect",
        &[("token", &access)],
        Some(&basic(id, "wrong")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // The configured resource server still can.
    assert_eq!(h.introspect(&access).await.body["active"], true);
}

/// Issue 8 item 8: the builder only accepts configured confidential clients as introspection
/// clients (a DCR client id, or a public client, cannot be named).
#[tokio::test]
async fn introspection_clients_must_be_configured_and_confidential() {
    let base = || {
        AuthorizationServer::builder()
            .authenticator(InsecureAutoApprove::new("alice"))
            .client(StaticClient::public(PUBLIC, [REDIRECT]))
            .client(StaticClient::confidential(RS, RS_SECRET, [REDIRECT]))
    };
    assert!(base().introspection_clients([RS]).build().await.is_ok());
    assert!(
        base()
            .introspection_clients(["unknown"])
            .build()
            .await
            .is_err()
    );
    assert!(
        base()
            .introspection_clients([PUBLIC])
            .build()
            .await
            .is_err()
    );
}

/// Issue 8 item 8: a verifier accepts a token up to its leeway past `exp`, so a revocation
/// must last that long too. A token 30 s past `exp` (inside the default 60 s leeway) that is
/// revoked stays refused by the layer; before the fix its revocation expired with `exp` and
/// the layer let it through.
#[tokio::test]
async fn a_revoked_token_stays_refused_through_the_leeway() {
    let h = harness().await;
    let exp = now() - 30;
    let token = h
        .server
        .key_ring()
        .sign(
            "at+jwt",
            &json!({"iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": exp,
                    "iat": exp - 600, "jti": format!("solo{}.abc", seq()), "client_id": PUBLIC,
                    "scope": "read"}),
        )
        .unwrap();
    assert_eq!(
        h.mcp(&token).await,
        StatusCode::OK,
        "inside the leeway the token still works"
    );
    assert_eq!(h.revoke(PUBLIC, &token, None).await.status, StatusCode::OK);
    assert_eq!(
        h.mcp(&token).await,
        StatusCode::UNAUTHORIZED,
        "a revoked token must stay refused until exp + leeway"
    );
    assert_eq!(h.introspect(&token).await.body, json!({"active": false}));
}

/// Issue 8 item 8: the leeway has a maximum (5 minutes), enforced by `build()`.
#[tokio::test]
async fn leeway_above_five_minutes_is_refused() {
    use std::time::Duration;
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .build()
        .await
        .unwrap();
    let cfg = |leeway| {
        McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer(ISSUER)
            .authorization_server(&server)
            .leeway(leeway)
            .build()
    };
    assert!(cfg(Duration::from_secs(300)).is_ok());
    let err = cfg(Duration::from_secs(301)).unwrap_err();
    assert!(err.to_string().contains("leeway"), "{err}");
    let verifier = |leeway| {
        mcp_oauth::verify::JwtVerifier::builder(server.key_ring().clone())
            .issuer(ISSUER)
            .audience(RESOURCE)
            .leeway(leeway)
            .build()
    };
    assert!(verifier(Duration::from_secs(300)).is_ok());
    assert!(verifier(Duration::from_secs(3600)).is_err());
}
