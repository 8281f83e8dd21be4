//! Registration at Claude scale (issue 11 item 2), over HTTP: identical public registrations
//! are one client on every store (1,000 of them, under the default rate limits, which they
//! do not use up), confidential ones never share a client or a secret, the rate limit counts
//! created clients, never-used clients are reaped and used ones are not, claude.ai's
//! `client_secret_post` (and `client_secret_basic`) registrations complete the whole flow,
//! and a client store that fails is `503 temporarily_unavailable` at every lookup, never
//! `401 invalid_client` (a client told `invalid_client` registers again).
//!
//! PostgreSQL and Redis come from `MCP_OAUTH_TEST_POSTGRES_URL` / `MCP_OAUTH_TEST_REDIS_URL`;
//! without a server those tests say so and pass, except under `CI`.

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use http::{Request, StatusCode};
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::oauth_router;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit, Retention};
use mcp_oauth::store::{Client, ClientStore, MemoryStore, StoreError};
use serde_json::{Value, json};
use sha2::Digest as _;
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:8000";
const RESOURCE: &str = "http://127.0.0.1:8000/mcp";
const VERIFIER: &str = "a-code-verifier-that-is-long-enough-0123456789";
const CLAUDE_AI: &str = "https://claude.ai/api/mcp/auth_callback";

struct Server {
    app: Router,
    server: AuthorizationServer,
}

async fn start(builder: AuthorizationServerBuilder) -> Server {
    let server = builder
        .authenticator(InsecureAutoApprove::new("alice"))
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
    Server {
        app: oauth_router(&cfg, &server),
        server,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn register(app: &Router, meta: &Value) -> Reply {
    send(
        app,
        Request::post("/register")
            .header("content-type", "application/json")
            .body(Body::from(meta.to_string()))
            .unwrap(),
    )
    .await
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn post_form(app: &Router, path: &str, pairs: &[(&str, &str)], basic: Option<&str>) -> Reply {
    let mut req = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(b) = basic {
        req = req.header("authorization", format!("Basic {b}"));
    }
    send(app, req.body(Body::from(form(pairs))).unwrap()).await
}

/// Claude Code's registration: loopback redirect on a port of its choosing.
fn claude_code(port: u16) -> Value {
    json!({
        "client_name": "Claude Code (notes)",
        "redirect_uris": [format!("http://localhost:{port}/callback")],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// claude.ai's registration: a confidential client with `client_secret_post`.
fn claude_ai(method: &str) -> Value {
    json!({
        "client_name": "Claude",
        "redirect_uris": [CLAUDE_AI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    })
}

/// Registers the same metadata 1,000 times (under the default rate limits) and checks that
/// the store holds one client.
async fn thousand_identical_registrations(s: Server) {
    let first = register(&s.app, &claude_code(50000)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["client_id"].as_str().unwrap().to_owned();
    for i in 0..1000u16 {
        let r = register(&s.app, &claude_code(50001 + i)).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "registration {i}: {}",
            r.body
        );
        assert_eq!(r.body["client_id"], id.as_str(), "registration {i}");
        assert!(r.body.get("client_secret").is_none());
    }
    assert_eq!(
        s.server.client_store().count_clients().await.unwrap(),
        1,
        "the store holds one client"
    );
    // Other metadata is another client.
    let mut other = claude_code(1);
    other["client_name"] = json!("Another tool");
    let r = register(&s.app, &other).await;
    assert_ne!(r.body["client_id"], id.as_str());
    assert_eq!(s.server.client_store().count_clients().await.unwrap(), 2);
}

#[tokio::test]
async fn identical_registrations_are_one_client_in_memory() {
    thousand_identical_registrations(start(AuthorizationServer::builder()).await).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn identical_registrations_are_one_client_on_sqlite() {
    let store = mcp_oauth::store::sql::SqliteStore::in_memory()
        .await
        .unwrap();
    thousand_identical_registrations(start(AuthorizationServer::builder().store(store)).await)
        .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_registrations_are_one_client_on_postgres() {
    let Some(schema) = stores::PgSchema::create("dcr_pg").await else {
        return;
    };
    let store = schema.store(4).await;
    thousand_identical_registrations(
        start(AuthorizationServer::builder().store(store).ephemeral_keys()).await,
    )
    .await;
    schema.drop_schema().await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_registrations_are_one_client_on_redis() {
    let Some(ns) = stores::RedisNamespace::create("dcr_redis").await else {
        return;
    };
    let store = ns.store().await;
    thousand_identical_registrations(
        start(AuthorizationServer::builder().store(store).ephemeral_keys()).await,
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn confidential_registrations_never_share_a_client_or_a_secret() {
    let s = start(AuthorizationServer::builder()).await;
    let mut ids = Vec::new();
    let mut secrets = Vec::new();
    for method in [
        "client_secret_post",
        "client_secret_basic",
        "client_secret_post",
    ] {
        let r = register(&s.app, &claude_ai(method)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["client_id"].as_str().unwrap().to_owned();
        let secret = r.body["client_secret"].as_str().unwrap().to_owned();
        assert!(!ids.contains(&id));
        assert!(!secrets.contains(&secret));
        ids.push(id);
        secrets.push(secret);
    }
    // The same metadata as a public client: a public client of its own, no secret.
    let r = register(&s.app, &claude_ai("none")).await;
    assert!(!ids.iter().any(|id| r.body["client_id"] == id.as_str()));
    assert!(r.body.get("client_secret").is_none());
}

#[tokio::test]
async fn the_rate_limit_counts_created_clients_and_every_request_ten_times_over() {
    let s = start(
        AuthorizationServer::builder().register_rate_limit(RateLimit::per_minute(2).with_burst(2)),
    )
    .await;
    let a = register(&s.app, &claude_code(1)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let mut other = claude_code(1);
    other["client_name"] = json!("Other");
    assert_eq!(register(&s.app, &other).await.status, StatusCode::CREATED);
    // A third new client is over the limit …
    let mut third = claude_code(1);
    third["client_name"] = json!("Third");
    let r = register(&s.app, &third).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error(), "slow_down");
    assert!(r.headers.get("retry-after").is_some());
    // … but repeating an identical registration is not (3 requests so far of 20).
    for port in 2..=18 {
        let r = register(&s.app, &claude_code(port)).await;
        assert_eq!(r.status, StatusCode::CREATED, "repeat on port {port}");
        assert_eq!(r.body["client_id"], a.body["client_id"]);
    }
    // Every request counts against ten times the budget: the 21st is refused.
    let r = register(&s.app, &claude_code(19)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
}

#[test]
fn the_default_register_limit_is_sized_for_shared_addresses() {
    assert_eq!(mcp_oauth::server::DEFAULT_REGISTER_PER_MINUTE, 60);
    assert_eq!(mcp_oauth::server::DEFAULT_REGISTER_BURST, 120);
    assert_eq!(
        Retention::default().unused_client_after,
        Some(Duration::from_secs(3 * 3600))
    );
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// `GET /authorize` for `client_id`, approved at once: the code.
async fn authorize(app: &Router, client_id: &str, redirect_uri: &str) -> String {
    let q = form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", &challenge(VERIFIER)),
        ("code_challenge_method", "S256"),
        ("state", "st"),
        ("scope", "read"),
        ("resource", RESOURCE),
    ]);
    let r = send(
        app,
        Request::get(format!("/authorize?{q}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let location = r.headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location}"
    );
    let url = url::Url::parse(&location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[tokio::test]
async fn claude_ai_client_secret_post_completes_the_flow() {
    let s = start(AuthorizationServer::builder()).await;
    let r = register(&s.app, &claude_ai("client_secret_post")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["token_endpoint_auth_method"], "client_secret_post");
    let id = r.body["client_id"].as_str().unwrap().to_owned();
    let secret = r.body["client_secret"].as_str().unwrap().to_owned();

    let code = authorize(&s.app, &id, CLAUDE_AI).await;
    // Exactly what claude.ai sends: the secret in the body.
    let t = post_form(
        &s.app,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLAUDE_AI),
            ("code_verifier", VERIFIER),
            ("client_id", &id),
            ("client_secret", &secret),
            ("resource", RESOURCE),
        ],
        None,
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert!(t.body["access_token"].is_string());
    let refresh = t.body["refresh_token"].as_str().unwrap().to_owned();
    // The client is used now: never reaped as never used.
    let stored = s
        .server
        .client_store()
        .get_client(&id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.last_used_at, 0);

    // Refresh the same way; a wrong or missing secret is invalid_client.
    let t = post_form(
        &s.app,
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let refresh = t.body["refresh_token"].as_str().unwrap().to_owned();
    for bad in [Some("wrong"), None] {
        let mut pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", id.as_str()),
        ];
        if let Some(b) = bad {
            pairs.push(("client_secret", b));
        }
        let t = post_form(&s.app, "/token", &pairs, None).await;
        assert_eq!(t.status, StatusCode::UNAUTHORIZED, "{bad:?}: {}", t.body);
        assert_eq!(t.error(), "invalid_client");
    }
}

#[tokio::test]
async fn client_secret_basic_completes_the_flow() {
    let s = start(AuthorizationServer::builder()).await;
    let r = register(&s.app, &claude_ai("client_secret_basic")).await;
    let id = r.body["client_id"].as_str().unwrap().to_owned();
    let secret = r.body["client_secret"].as_str().unwrap().to_owned();
    let code = authorize(&s.app, &id, CLAUDE_AI).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let t = post_form(
        &s.app,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLAUDE_AI),
            ("code_verifier", VERIFIER),
            ("resource", RESOURCE),
        ],
        Some(&basic),
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert!(t.body["refresh_token"].is_string());
}

#[tokio::test]
async fn never_used_clients_are_reaped_used_ones_never() {
    let s = start(
        AuthorizationServer::builder().retention(
            Retention::default()
                .manual()
                .with_unused_client_after(Duration::from_secs(3600)),
        ),
    )
    .await;
    let store = s.server.client_store();
    // Two registrations; one completes a flow, then both are backdated past the window.
    let unused = register(&s.app, &claude_code(1)).await.body["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let used_meta = json!({"redirect_uris": ["http://127.0.0.1/callback"], "client_name": "Used"});
    let used = register(&s.app, &used_meta).await.body["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = authorize(&s.app, &used, "http://127.0.0.1/callback").await;
    let t = post_form(
        &s.app,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1/callback"),
            ("code_verifier", VERIFIER),
            ("client_id", &used),
            ("resource", RESOURCE),
        ],
        None,
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    // Revoke the grant, so that nothing live keeps the used client: only the rule could.
    let refresh = t.body["refresh_token"].as_str().unwrap().to_owned();
    let r = post_form(
        &s.app,
        "/revoke",
        &[("token", &refresh), ("client_id", &used)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // A sweep now removes neither: the never-used one is young.
    assert_eq!(s.server.sweep_now().await.unwrap().unused_clients, 0);
    let backdate = |mut c: Client| {
        c.issued_at -= 2 * 3600;
        if c.last_used_at != 0 {
            c.last_used_at -= 2 * 3600;
        }
        c
    };
    for id in [&unused, &used] {
        let c = store.get_client(id).await.unwrap().unwrap();
        store.upsert_client(backdate(c)).await.unwrap();
    }
    let report = s.server.sweep_now().await.unwrap();
    assert_eq!(report.unused_clients, 1);
    assert!(
        store.get_client(&unused).await.unwrap().is_none(),
        "never used: reaped"
    );
    assert!(
        store.get_client(&used).await.unwrap().is_some(),
        "used: kept"
    );
    // The reaped client is unknown now: it registers again and gets a new client.
    let again = register(&s.app, &claude_code(2)).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_ne!(again.body["client_id"], unused.as_str());
}

// ---------------------------------------------------------------------------------------
// A client store that fails: 503 at every lookup, never 401
// ---------------------------------------------------------------------------------------

/// A client store whose every operation fails (a database outage).
struct DownClients;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::unavailable("connection refused"))
}

#[async_trait]
impl ClientStore for DownClients {
    async fn insert_client(&self, _: Client) -> Result<(), StoreError> {
        down()
    }
    async fn upsert_client(&self, _: Client) -> Result<(), StoreError> {
        down()
    }
    async fn get_client(&self, _: &str) -> Result<Option<Client>, StoreError> {
        down()
    }
    async fn delete_client(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn touch_client(&self, _: &str, _: u64) -> Result<(), StoreError> {
        down()
    }
    async fn count_clients(&self) -> Result<u64, StoreError> {
        down()
    }
    async fn find_client_by_fingerprint(
        &self,
        _: &mcp_oauth::store::ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        down()
    }
}

#[tokio::test]
async fn a_failing_client_store_is_503_at_every_lookup_never_401() {
    let s = start(
        AuthorizationServer::builder()
            .client_store(DownClients)
            .grant_store(MemoryStore::new()),
    )
    .await;
    let json_503 = |r: &Reply, what: &str| {
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            r.body
        );
        assert_eq!(r.error(), "temporarily_unavailable", "{what}");
        assert!(r.headers.get("retry-after").is_some(), "{what}");
        assert!(!r.body.to_string().contains("connection refused"), "{what}");
    };
    let secret_basic = base64::engine::general_purpose::STANDARD.encode("some-client:some-secret");
    for (what, basic) in [("public", None), ("basic", Some(secret_basic.as_str()))] {
        let client = [("client_id", "some-client")];
        let client: &[(&str, &str)] = if basic.is_some() { &[] } else { &client };
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = pairs.to_vec();
            v.extend_from_slice(client);
            v
        };
        let r = post_form(
            &s.app,
            "/token",
            &with(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("code_verifier", VERIFIER),
            ]),
            basic,
        )
        .await;
        json_503(&r, &format!("token (code, {what})"));
        let r = post_form(
            &s.app,
            "/token",
            &with(&[("grant_type", "refresh_token"), ("refresh_token", "r")]),
            basic,
        )
        .await;
        json_503(&r, &format!("token (refresh, {what})"));
        let r = post_form(&s.app, "/revoke", &with(&[("token", "t")]), basic).await;
        json_503(&r, &format!("revoke ({what})"));
        let r = post_form(&s.app, "/introspect", &with(&[("token", "t")]), basic).await;
        json_503(&r, &format!("introspect ({what})"));
    }
    // Registration: the dedup lookup fails, so no second client either.
    json_503(&register(&s.app, &claude_code(1)).await, "register");
    // /authorize: a 503 page, not the unknown-client page.
    let q = form(&[
        ("response_type", "code"),
        ("client_id", "some-client"),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("code_challenge", &challenge(VERIFIER)),
        ("code_challenge_method", "S256"),
    ]);
    let res = s
        .app
        .clone()
        .oneshot(
            Request::get(format!("/authorize?{q}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("location").is_none());
}
