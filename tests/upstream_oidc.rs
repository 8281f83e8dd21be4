//! `UpstreamOidc` end to end: our `/authorize` → the upstream provider's login → our
//! `/upstream/callback` → our consent page → a code → a token for the MCP client.
//!
//! The upstream is a real `oidc-provider` on 127.0.0.1 (`tests/interop/oidc_provider.mjs`,
//! its development login and consent pages filled in by the test browser), and, for what a
//! real provider will not do on request (a wrong `nonce`, a missing `iss`), GitHub's API and
//! Entra's refusal of `resource`, a small imitation served by the test itself.
//!
//! Negative tests: a user outside the allow-list gets a 403 page; a replayed callback, an
//! unknown `state`, a callback in another browser, an `iss` mismatch (tampered, and missing
//! when the provider promises it) and a `nonce` mismatch each get an error page, never a
//! redirect to the MCP client.
//!
//! Several instances: a login started on one instance finishes on another sharing the grant
//! store (one SQLite file; PostgreSQL and Redis with `MCP_OAUTH_TEST_POSTGRES_URL` /
//! `MCP_OAUTH_TEST_REDIS_URL`); its replayed callback is refused by the other instance; a store
//! outage at the callback is a `503` page.
#![cfg(feature = "upstream-oidc")]

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/oidc.rs"]
mod oidc;
mod support;

use std::collections::HashMap;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use browser::{Browser, Decision, Outcome, query_param};
use http::{HeaderMap, StatusCode};
use mcp_oauth::authn::{UpstreamOidc, UpstreamOidcBuilder, UpstreamTokenKey, UpstreamTokensError};
use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use mcp_oauth::server::{AuthorizationServer, StaticClient};
use mcp_oauth::store::{GrantStore, MemoryStore, StoreError};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use oidc::OidcProvider;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::net::TcpListener;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
use tower::ServiceExt as _;

/// The MCP client's redirect URI (never listened on: the browser stops there).
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "a-pkce-verifier-long-enough-to-be-valid-0123456789abcdef";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Our authorization server on 127.0.0.1, listening before it is built (the upstream must
/// know the callback URL first).
struct Ours {
    issuer: String,
    listener: Option<TcpListener>,
}

impl Ours {
    async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        Self {
            issuer,
            listener: Some(listener),
        }
    }

    fn callback(&self) -> String {
        format!("{}/upstream/callback", self.issuer)
    }

    /// Builds the server around `upstream` and serves it.
    async fn serve(&mut self, upstream: UpstreamOidc) {
        let server = AuthorizationServer::builder()
            .authenticator(upstream)
            .client(StaticClient::public("mcp-client", [REDIRECT]))
            .build()
            .await
            .unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource(format!("{}/mcp", self.issuer))
            .issuer(&self.issuer)
            .scope("read", "Read")
            .scope("write", "Write")
            .authorization_server(&server)
            .build()
            .unwrap();
        let app: Router = oauth_router(&cfg, &server);
        let listener = self.listener.take().unwrap();
        tokio::spawn(async move {
            let _ = mcp_oauth::serve(listener, app).await;
        });
    }

    fn authorize_url(&self, scope: &str) -> String {
        let challenge = b64(&sha2::Sha256::digest(VERIFIER.as_bytes()));
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", "mcp-client")
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "client-state")
            .append_pair("scope", scope)
            .append_pair("resource", &format!("{}/mcp", self.issuer))
            .finish();
        format!("{}/authorize?{q}", self.issuer)
    }

    /// Exchanges the code from the client's callback URL; the token response.
    async fn redeem(&self, callback: &str) -> Value {
        assert!(callback.starts_with(REDIRECT), "{callback}");
        assert_eq!(
            query_param(callback, "state").as_deref(),
            Some("client-state")
        );
        assert_eq!(
            query_param(callback, "iss").as_deref(),
            Some(self.issuer.as_str())
        );
        let code = query_param(callback, "code").expect("code");
        let res = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", "mcp-client"),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// The page the browser got stuck at: `(status, body)`.
async fn stuck(browser: &Browser, url: &str) -> (u16, String) {
    match browser.run(url, Decision::Approve).await {
        Ok(Outcome::Stuck(page)) => (page.status, page.body),
        other => panic!(
            "expected an error page, got {other:?}\n{}",
            browser.transcript()
        ),
    }
}

/// The upstream callback URL the browser was sent to (from its log).
fn logged_callback(browser: &Browser) -> String {
    browser
        .log()
        .iter()
        .find(|s| s.url.contains("/upstream/callback"))
        .expect("the browser went through the upstream callback")
        .url
        .clone()
}

/// `oidc-provider` as the upstream, our server around it.
async fn with_oidc_provider(
    test: &str,
    configure: impl FnOnce(UpstreamOidcBuilder) -> UpstreamOidcBuilder,
) -> Option<(Ours, OidcProvider)> {
    let interop = support::interop(test)?;
    let mut ours = Ours::bind().await;
    let idp = OidcProvider::start_upstream(&interop, &ours.callback()).await;
    let builder = UpstreamOidc::oidc(
        &idp.issuer,
        oidc::UPSTREAM_CLIENT_ID,
        Some(oidc::UPSTREAM_CLIENT_SECRET.to_owned()),
    )
    .allow_loopback()
    .scopes(["openid", "email", "profile", "groups"]);
    let upstream = configure(builder).build().await.expect("discovery");
    ours.serve(upstream).await;
    Some((ours, idp))
}

fn browser(user: &str, idp: &str) -> Browser {
    let b = Browser::new(user, "any-password");
    b.follow_origin(idp);
    b
}

#[tokio::test]
async fn oidc_provider_login_reaches_our_consent_and_a_token() {
    let Some((ours, idp)) = with_oidc_provider("oidc_provider_login", |b| {
        b.allow_email_domains(["example.com"])
            .scopes_for_claim("groups", "admins", "read write".parse().unwrap())
            .default_user_scopes("read".parse().unwrap())
    })
    .await
    else {
        return;
    };
    let alice = browser("alice", &idp.issuer);
    let callback = alice
        .authorize(&ours.authorize_url("read write"), Decision::Approve)
        .await;
    let transcript = alice.transcript();
    // Our consent page was shown (the login happened upstream, never on our login form).
    assert!(
        alice
            .log()
            .iter()
            .any(|s| s.url.ends_with("/authorize/consent")),
        "{transcript}"
    );
    assert!(
        !alice
            .log()
            .iter()
            .any(|s| s.url.ends_with("/authorize/login")),
        "{transcript}"
    );
    let tokens = ours.redeem(&callback).await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], format!("{}|alice", idp.issuer));
    assert_eq!(claims["iss"], ours.issuer);
    // The verified email came from UserInfo (oidc-provider keeps it out of the ID token).
    assert_eq!(claims["email"], "alice@example.com", "{claims}");
    // alice's groups are ["users"]: the default ceiling, `read` only.
    assert_eq!(tokens["scope"], "read", "{tokens}");
    // The upstream's tokens never reach the MCP client.
    let text = tokens.to_string();
    assert!(!text.contains("id_token"), "{text}");

    // An admin (groups ["admins"]) gets both.
    let admin = browser("admin", &idp.issuer);
    let callback = admin
        .authorize(&ours.authorize_url("read write"), Decision::Approve)
        .await;
    let tokens = ours.redeem(&callback).await;
    assert_eq!(tokens["scope"], "read write", "{tokens}");
}

#[tokio::test]
async fn oidc_provider_user_outside_the_allow_list_gets_a_page() {
    let Some((ours, idp)) = with_oidc_provider("oidc_provider_allow_list", |b| {
        b.allow_email_domains(["example.com"])
    })
    .await
    else {
        return;
    };
    let mallory = browser("mallory@evil.test", &idp.issuer);
    let (status, body) = stuck(&mallory, &ours.authorize_url("read")).await;
    assert_eq!(status, 403, "{}", mallory.transcript());
    assert!(body.contains("mallory@evil.test is not allowed"), "{body}");
    // Nothing was sent to the MCP client.
    assert!(
        !mallory.log().iter().any(|s| s
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(REDIRECT))),
        "{}",
        mallory.transcript()
    );

    // A group allow-list the user is not in.
    let Some((ours, idp)) =
        with_oidc_provider("oidc_provider_groups", |b| b.allow_groups(["admins"])).await
    else {
        return;
    };
    let bob = browser("bob", &idp.issuer);
    let (status, body) = stuck(&bob, &ours.authorize_url("read")).await;
    assert_eq!(status, 403, "{}", bob.transcript());
    assert!(body.contains("not in a group allowed"), "{body}");
    let admin = browser("admin", &idp.issuer);
    admin
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
}

#[tokio::test]
async fn forged_and_replayed_callbacks_are_refused() {
    let Some((ours, idp)) = with_oidc_provider("oidc_provider_forged", |b| b).await else {
        return;
    };
    // Replayed: the callback of a finished login, sent again by the same browser.
    let alice = browser("alice", &idp.issuer);
    let callback = alice
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    ours.redeem(&callback).await;
    let replay = logged_callback(&alice);
    let (status, body) = stuck(&alice, &replay).await;
    assert_eq!(status, 400);
    assert!(body.contains("already used"), "{body}");

    // Unknown state.
    let res = reqwest::get(format!(
        "{}/upstream/callback?state=forged&code=x",
        ours.issuer
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("already used"));
    // Unknown state at the start route too.
    let res = reqwest::get(format!("{}/upstream/start?state=forged", ours.issuer))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // iss mismatch (RFC 9207): the provider's callback with another issuer.
    let bob = browser("bob", &idp.issuer);
    bob.stop_at_path(Some("/upstream/callback"));
    let Outcome::Callback(upstream_cb) = bob
        .run(&ours.authorize_url("read"), Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("{}", bob.transcript());
    };
    assert_eq!(
        query_param(&upstream_cb, "iss").as_deref(),
        Some(idp.issuer.as_str())
    );
    let tampered = upstream_cb.replace(
        &form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>(),
        "http%3A%2F%2Fevil.example",
    );
    assert_ne!(tampered, upstream_cb);
    bob.stop_at_path(None);
    let (status, body) = stuck(&bob, &tampered).await;
    assert_eq!(status, 400);
    assert!(body.contains("did not come from"), "{body}");
    // The state was spent by the refused attempt: the genuine callback is refused now.
    let (status, _) = stuck(&bob, &upstream_cb).await;
    assert_eq!(status, 400);

    // The provider's error answer: a page naming the error code, nothing for the MCP client.
    let dave = browser("dave", &idp.issuer);
    dave.stop_at_path(Some("/upstream/callback"));
    let Outcome::Callback(dave_cb) = dave
        .run(&ours.authorize_url("read"), Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("{}", dave.transcript());
    };
    let denied = format!(
        "{}?error=access_denied&error_description=%3Cscript%3E&state={}&iss={}",
        ours.callback(),
        query_param(&dave_cb, "state").unwrap(),
        form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
    );
    dave.stop_at_path(None);
    let (status, body) = stuck(&dave, &denied).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("did not sign you in (access_denied)"),
        "{body}"
    );
    assert!(!body.contains("<script>"), "{body}");

    // A callback opened in another browser (a login CSRF attempt): refused.
    let carol = browser("carol", &idp.issuer);
    carol.stop_at_path(Some("/upstream/callback"));
    let Outcome::Callback(carol_cb) = carol
        .run(&ours.authorize_url("read"), Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("{}", carol.transcript());
    };
    let victim = browser("victim", &idp.issuer);
    let (status, body) = stuck(&victim, &carol_cb).await;
    assert_eq!(status, 400);
    assert!(body.contains("another browser"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// An imitation of an OpenID provider (with switches for what real ones will not do), of
// Entra's refusal of `resource`, and of GitHub's OAuth and REST endpoints.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Oidc,
    Entra,
    GitHub,
}

struct Fake {
    issuer: String,
    mode: Mode,
    key: SigningKey,
    wrong_nonce: bool,
    omit_iss: bool,
    /// `code` → (`nonce`, `code_challenge`, `redirect_uri`).
    codes: Mutex<HashMap<String, (String, String, String)>>,
    /// Every authorization request's query.
    seen: Mutex<Vec<HashMap<String, String>>>,
    /// Refresh-token grants answered, and whether to refuse them.
    refreshes: std::sync::atomic::AtomicUsize,
    refuse_refresh: std::sync::atomic::AtomicBool,
}

type FakeState = Arc<Fake>;

async fn start_fake(mode: Mode, wrong_nonce: bool, omit_iss: bool) -> FakeState {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = match mode {
        Mode::Entra => format!("{base}/tenant-1/v2.0"),
        _ => base,
    };
    let fake = Arc::new(Fake {
        issuer,
        mode,
        key: SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
        wrong_nonce,
        omit_iss,
        codes: Mutex::new(HashMap::new()),
        seen: Mutex::new(Vec::new()),
        refreshes: Default::default(),
        refuse_refresh: Default::default(),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(fake_discovery))
        .route(
            "/tenant-1/v2.0/.well-known/openid-configuration",
            get(fake_discovery),
        )
        .route("/jwks", get(fake_jwks))
        .route("/authorize", get(fake_authorize))
        .route("/login/oauth/authorize", get(fake_authorize))
        .route("/token", post(fake_token))
        .route("/login/oauth/access_token", post(fake_token))
        .route("/api/user", get(gh_user))
        .route("/api/user/emails", get(gh_emails))
        .route("/api/user/orgs", get(gh_orgs))
        .route("/api/user/teams", get(gh_teams))
        .with_state(fake.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    fake
}

fn base_of(fake: &Fake) -> String {
    let u = url::Url::parse(&fake.issuer).unwrap();
    u[..url::Position::BeforePath].to_owned()
}

async fn fake_discovery(State(f): State<FakeState>) -> Response {
    let base = base_of(&f);
    axum::Json(json!({
        "issuer": f.issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "authorization_response_iss_parameter_supported": f.mode == Mode::Oidc,
    }))
    .into_response()
}

async fn fake_jwks(State(f): State<FakeState>) -> Response {
    axum::Json(json!({ "keys": [f.key.jwk()] })).into_response()
}

async fn fake_authorize(
    State(f): State<FakeState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    f.seen.lock().unwrap().push(q.clone());
    if f.mode == Mode::Entra && q.contains_key("resource") {
        return (
            StatusCode::BAD_REQUEST,
            "AADSTS9010010: The resource parameter provided in the request doesn't match \
             with the requested scopes.",
        )
            .into_response();
    }
    let code = format!("code-{}", f.codes.lock().unwrap().len());
    f.codes.lock().unwrap().insert(
        code.clone(),
        (
            q.get("nonce").cloned().unwrap_or_default(),
            q["code_challenge"].clone(),
            q["redirect_uri"].clone(),
        ),
    );
    let mut back = form_urlencoded::Serializer::new(String::new());
    back.append_pair("code", &code)
        .append_pair("state", &q["state"]);
    if f.mode != Mode::GitHub && !f.omit_iss {
        back.append_pair("iss", &f.issuer);
    }
    Redirect::to(&format!("{}?{}", q["redirect_uri"], back.finish())).into_response()
}

async fn fake_token(
    State(f): State<FakeState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    use std::sync::atomic::Ordering;
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        if f.refuse_refresh.load(Ordering::SeqCst)
            || form.get("refresh_token").map(String::as_str) != Some("rt-fake")
            || form.get("client_secret").map(String::as_str) != Some("fake-secret")
        {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        }
        let n = f.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        // Short-lived on purpose: every read of kept tokens refreshes again.
        return axum::Json(json!({
            "access_token": format!("at-refreshed-{n}"),
            "token_type": "Bearer",
            "expires_in": 10,
        }))
        .into_response();
    }
    let Some((nonce, challenge, redirect)) = f.codes.lock().unwrap().remove(&form["code"]) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier_ok = b64(&sha2::Sha256::digest(form["code_verifier"].as_bytes())) == challenge;
    if !verifier_ok
        || form["redirect_uri"] != redirect
        || form.get("client_secret").map(String::as_str) != Some("fake-secret")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    if f.mode == Mode::GitHub {
        return axum::Json(json!({"access_token": "gho_fake", "token_type": "bearer"}))
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id_token = f
        .key
        .sign(
            "JWT",
            &json!({
                "iss": f.issuer,
                "aud": "fake-client",
                "sub": "u-1",
                "email": "dev@example.com",
                "email_verified": true,
                "nonce": if f.wrong_nonce { "another-nonce".to_owned() } else { nonce },
                "iat": now,
                "exp": now + 300,
            }),
        )
        .unwrap();
    axum::Json(json!({
        "access_token": "at-fake",
        "token_type": "Bearer",
        "id_token": id_token,
        "refresh_token": "rt-fake",
        "expires_in": 10,
        "scope": "openid email profile",
    }))
    .into_response()
}

fn gh_authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer gho_fake")
}

async fn gh_user(h: HeaderMap) -> Response {
    if !gh_authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"id": 4242, "login": "octocat", "name": "Octo Cat"})).into_response()
}

async fn gh_emails(h: HeaderMap) -> Response {
    if !gh_authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!([
        {"email": "old@example.org", "primary": false, "verified": true},
        {"email": "octo@example.com", "primary": true, "verified": true}
    ]))
    .into_response()
}

async fn gh_orgs(h: HeaderMap) -> Response {
    if !gh_authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!([{"login": "Acme"}])).into_response()
}

async fn gh_teams(h: HeaderMap) -> Response {
    if !gh_authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!([{"slug": "core", "organization": {"login": "acme"}}])).into_response()
}

async fn with_fake(
    fake: &Fake,
    configure: impl FnOnce(UpstreamOidcBuilder) -> UpstreamOidcBuilder,
) -> Ours {
    let mut ours = Ours::bind().await;
    let builder = match fake.mode {
        Mode::Oidc => UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into())),
        Mode::Entra => {
            UpstreamOidc::entra("tenant-1", "fake-client", "fake-secret").issuer(&fake.issuer)
        }
        Mode::GitHub => UpstreamOidc::github("fake-client", "fake-secret")
            .github_urls(&fake.issuer, format!("{}/api", fake.issuer)),
    };
    let upstream = configure(builder.allow_loopback()).build().await.unwrap();
    ours.serve(upstream).await;
    ours
}

#[tokio::test]
async fn imitation_happy_path_then_nonce_and_missing_iss_are_refused() {
    let fake = start_fake(Mode::Oidc, false, false).await;
    let ours = with_fake(&fake, |b| b.allow_emails(["DEV@example.com"])).await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    let tokens = ours.redeem(&callback).await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], format!("{}|u-1", fake.issuer));
    // Our own parameters stayed here: no `resource`, no MCP scope upstream.
    let seen = fake.seen.lock().unwrap()[0].clone();
    assert!(!seen.contains_key("resource"), "{seen:?}");
    assert_eq!(seen["scope"], "openid email profile");
    assert_eq!(seen["code_challenge_method"], "S256");

    let fake = start_fake(Mode::Oidc, true, false).await;
    let ours = with_fake(&fake, |b| b).await;
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 400, "{}", b.transcript());
    assert!(body.contains("could not be verified"), "{body}");

    // The provider promises RFC 9207 `iss` but the callback lacks it.
    let fake = start_fake(Mode::Oidc, false, true).await;
    let ours = with_fake(&fake, |b| b).await;
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 400, "{}", b.transcript());
    assert!(body.contains("did not come from"), "{body}");
}

#[tokio::test]
async fn google_hosted_domain_is_a_hint_and_a_check() {
    // The imitation's ID tokens carry no `hd`: a personal account, refused.
    let fake = start_fake(Mode::Oidc, false, false).await;
    let mut ours = Ours::bind().await;
    let upstream = UpstreamOidc::google("fake-client", "fake-secret")
        .issuer(&fake.issuer)
        .hosted_domain("example.com")
        .allow_loopback()
        .build()
        .await
        .unwrap();
    assert_eq!(upstream.provider_name(), "Google");
    ours.serve(upstream).await;
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 403, "{}", b.transcript());
    assert!(
        body.contains("dev@example.com is not an account of example.com"),
        "{body}"
    );
    assert_eq!(fake.seen.lock().unwrap()[0]["hd"], "example.com");
}

#[tokio::test]
async fn entra_preset_never_forwards_resource_and_maps_scopes_only_when_asked() {
    let fake = start_fake(Mode::Entra, false, false).await;
    let ours = with_fake(&fake, |b| b).await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    ours.redeem(&callback).await;
    assert_eq!(
        fake.seen.lock().unwrap()[0]["scope"],
        "openid email profile"
    );

    let fake = start_fake(Mode::Entra, false, false).await;
    let ours = with_fake(&fake, |b| b.map_scopes_to("api://mcp-app/")).await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read write"), Decision::Approve)
        .await;
    ours.redeem(&callback).await;
    assert_eq!(
        fake.seen.lock().unwrap()[0]["scope"],
        "openid email profile api://mcp-app/read api://mcp-app/write"
    );
}

#[tokio::test]
async fn github_preset_with_org_and_team_allow_lists() {
    let fake = start_fake(Mode::GitHub, false, false).await;
    let ours = with_fake(&fake, |b| {
        b.allow_github_orgs(["acme"])
            .allow_github_teams(["acme/core"])
    })
    .await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    let tokens = ours.redeem(&callback).await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    // `github|4242` on github.com; the web base of another GitHub (Enterprise, here the
    // imitation) names its subjects.
    assert_eq!(claims["sub"], format!("{}|4242", fake.issuer));
    // The verified primary address, not the other verified one.
    assert_eq!(claims["email"], "octo@example.com", "{claims}");
    let seen = fake.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["scope"], "read:user user:email read:org");
    assert!(!seen.contains_key("nonce"));

    // Not in the team: a page, no redirect to the client.
    let fake = start_fake(Mode::GitHub, false, false).await;
    let ours = with_fake(&fake, |b| b.allow_github_teams(["acme/security"])).await;
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 403, "{}", b.transcript());
    assert!(body.contains("not in a team allowed"), "{body}");

    // Not in the org.
    let fake = start_fake(Mode::GitHub, false, false).await;
    let ours = with_fake(&fake, |b| b.allow_github_orgs(["globex"])).await;
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 403, "{}", b.transcript());
    assert!(body.contains("not a member of an organization"), "{body}");
}

/// Serves `app` on `listener` in the background.
async fn serve_app(listener: TcpListener, app: Router) {
    tokio::spawn(async move {
        let _ = mcp_oauth::serve(listener, app).await;
    });
}

#[tokio::test]
async fn upstream_paths_pass_the_layer_only_with_an_upstream_login() {
    let fake = start_fake(Mode::Oidc, false, false).await;
    for upstream_login in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let builder = AuthorizationServer::builder();
        let builder = if upstream_login {
            builder.authenticator(
                UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
                    .allow_loopback()
                    .build()
                    .await
                    .unwrap(),
            )
        } else {
            builder.authenticator(mcp_oauth::authn::StaticUsers::new())
        };
        let server = builder.build().await.unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource(format!("{issuer}/mcp"))
            .issuer(&issuer)
            .authorization_server(&server)
            .build()
            .unwrap();
        let app = Router::new()
            .merge(oauth_router(&cfg, &server))
            .layer(mcp_oauth::McpOAuthLayer::new(&cfg));
        serve_app(listener, app).await;
        for path in [
            "/upstream/start?state=x",
            "/upstream/callback?state=x&code=y",
        ] {
            let res = reqwest::get(format!("{issuer}{path}")).await.unwrap();
            if upstream_login {
                // The crate's own page: the state is unknown.
                assert_eq!(res.status(), 400, "{path}");
                assert!(res.text().await.unwrap().contains("already used"));
            } else {
                // Not the crate's path without an upstream login: the layer guards it.
                assert_eq!(res.status(), 401, "{path}");
            }
        }
    }
}

// ------------------------------------------------ upstream tokens kept for the host's calls

const RS: &str = "resource-server";
const RS_SECRET: &str = "rs-secret-0123456789abcdef";

/// Like [`Ours::serve`], keeping the server (the host reads upstream tokens through it) and
/// with a resource server allowed to introspect.
async fn serve_keeping(ours: &mut Ours, upstream: UpstreamOidc) -> AuthorizationServer {
    let server = AuthorizationServer::builder()
        .authenticator(upstream)
        .client(StaticClient::public("mcp-client", [REDIRECT]))
        .client(StaticClient::confidential(RS, RS_SECRET, [REDIRECT]))
        .introspection_clients([RS])
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{}/mcp", ours.issuer))
        .issuer(&ours.issuer)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app: Router = oauth_router(&cfg, &server);
    let listener = ours.listener.take().unwrap();
    tokio::spawn(async move {
        let _ = mcp_oauth::serve(listener, app).await;
    });
    server
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn upstream_with_keys(
    idp: &OidcProvider,
    key: UpstreamTokenKey,
    old: Vec<UpstreamTokenKey>,
) -> UpstreamOidc {
    UpstreamOidc::oidc(
        &idp.issuer,
        oidc::UPSTREAM_CLIENT_ID,
        Some(oidc::UPSTREAM_CLIENT_SECRET.to_owned()),
    )
    .allow_loopback()
    .scopes(["openid", "email", "profile"])
    .keep_upstream_tokens(key)
    .decrypt_upstream_tokens_with(old)
    .build()
    .await
    .expect("discovery")
}

/// Issue 11 item 3: after an upstream login the host reads the provider's access token (and
/// it works at the provider's UserInfo endpoint), while the MCP client's token response and
/// its introspection carry none of its bytes and the store holds no plaintext. A tampered
/// record, a record moved to another subject and a record naming an unknown key are each
/// refused; after a key rotation the old key (in the decryption list) still reads old
/// records, which are then sealed again with the new key.
#[tokio::test]
async fn kept_upstream_tokens_serve_the_host_and_never_the_mcp_client() {
    let Some(interop) = support::interop("kept_upstream_tokens") else {
        return;
    };
    let mut ours = Ours::bind().await;
    let idp = OidcProvider::start_upstream(&interop, &ours.callback()).await;
    let key_a = UpstreamTokenKey::new("key-a", [0xa5; 32]);
    let key_b = UpstreamTokenKey::new("key-b", [0x5b; 32]);
    let upstream = upstream_with_keys(&idp, key_a.clone(), vec![]).await;
    assert!(upstream.keeps_upstream_tokens());
    let server = serve_keeping(&mut ours, upstream).await;

    let alice = browser("alice", &idp.issuer);
    let callback = alice
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    let mcp_tokens = ours.redeem(&callback).await;
    let subject = format!("{}|alice", idp.issuer);
    assert_eq!(
        payload(mcp_tokens["access_token"].as_str().unwrap())["sub"],
        subject
    );

    // The host reads the upstream tokens, and the access token works at the provider.
    let kept = server
        .upstream_tokens(&subject)
        .await
        .unwrap()
        .expect("tokens kept for alice");
    assert!(!kept.access_token.is_empty());
    assert!(!format!("{kept:?}").contains(&kept.access_token));
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let userinfo = discovery["userinfo_endpoint"].as_str().unwrap();
    let res = reqwest::Client::new()
        .get(userinfo)
        .bearer_auth(&kept.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["sub"], "alice", "{info}");
    // Nobody else has tokens.
    assert!(server.upstream_tokens("bob").await.unwrap().is_none());

    // No token passthrough: the MCP client's token response and its introspection hold
    // none of the upstream token's bytes.
    let response_text = mcp_tokens.to_string();
    assert!(
        !response_text.contains(&kept.access_token),
        "{response_text}"
    );
    let introspection = reqwest::Client::new()
        .post(format!("{}/introspect", ours.issuer))
        .basic_auth(RS, Some(RS_SECRET))
        .form(&[("token", mcp_tokens["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(introspection.status(), 200);
    let introspection = introspection.text().await.unwrap();
    assert!(introspection.contains("\"active\":true"), "{introspection}");
    assert!(
        !introspection.contains(&kept.access_token),
        "{introspection}"
    );
    // Nor does any string of the access token's JWT payload (if it is one).
    let at_payload = payload(mcp_tokens["access_token"].as_str().unwrap()).to_string();
    assert!(!at_payload.contains(&kept.access_token), "{at_payload}");

    // The store holds the record sealed: no plaintext token in it.
    let store = server.grant_store().clone();
    let record = store
        .get_upstream_tokens(&idp.issuer, &subject)
        .await
        .unwrap()
        .expect("a record under (provider, subject)");
    assert!(!contains(&record, &kept.access_token));
    if let Some(r) = &kept.refresh_token {
        assert!(!contains(&record, r));
    }

    // Tampered ciphertext: refused.
    let mut tampered = record.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0x80;
    store
        .put_upstream_tokens(&idp.issuer, &subject, tampered, 0)
        .await
        .unwrap();
    assert!(matches!(
        server.upstream_tokens(&subject).await,
        Err(UpstreamTokensError::Tampered)
    ));
    // Moved to another subject: refused (the associated data names the subject).
    let mallory = format!("{}|mallory", idp.issuer);
    store
        .put_upstream_tokens(&idp.issuer, &mallory, record.clone(), 0)
        .await
        .unwrap();
    assert!(matches!(
        server.upstream_tokens(&mallory).await,
        Err(UpstreamTokensError::Tampered)
    ));
    // A key id that is not configured: refused, naming the key.
    let mut unknown = record.clone();
    let id_at = 5; // "MUT1", the id's length, then the id.
    assert_eq!(&unknown[id_at..id_at + 5], b"key-a");
    unknown[id_at + 4] = b'z';
    store
        .put_upstream_tokens(&idp.issuer, &subject, unknown, 0)
        .await
        .unwrap();
    match server.upstream_tokens(&subject).await {
        Err(UpstreamTokensError::UnknownKey { key_id }) => assert_eq!(key_id, "key-z"),
        other => panic!("{other:?}"),
    }
    // None of these errors carries the token.
    let e = server
        .upstream_tokens(&mallory)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains(&kept.access_token), "{e}");

    // Key rotation: B seals, A still opens; the record is sealed again with B on read.
    store
        .put_upstream_tokens(&idp.issuer, &subject, record.clone(), 0)
        .await
        .unwrap();
    let rotated = upstream_with_keys(&idp, key_b.clone(), vec![key_a.clone()]).await;
    let read = rotated
        .upstream_tokens(&*store, &subject)
        .await
        .unwrap()
        .expect("the old record still opens");
    assert_eq!(read.access_token, kept.access_token);
    let resealed = store
        .get_upstream_tokens(&idp.issuer, &subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&resealed[id_at..id_at + 5], b"key-b");
    let only_b = upstream_with_keys(&idp, key_b, vec![]).await;
    assert_eq!(
        only_b
            .upstream_tokens(&*store, &subject)
            .await
            .unwrap()
            .unwrap()
            .access_token,
        kept.access_token
    );
    // The server still on key A alone cannot read a record sealed with B.
    assert!(matches!(
        server.upstream_tokens(&subject).await,
        Err(UpstreamTokensError::UnknownKey { .. })
    ));

    // Forgetting them.
    assert!(server.forget_upstream_tokens(&subject).await.unwrap());
    assert!(server.upstream_tokens(&subject).await.unwrap().is_none());
}

/// Without `keep_upstream_tokens` nothing is stored and the host is told so.
#[tokio::test]
async fn upstream_tokens_are_not_kept_unless_asked() {
    let fake = start_fake(Mode::Oidc, false, false).await;
    let mut ours = Ours::bind().await;
    let upstream = UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
        .allow_loopback()
        .build()
        .await
        .unwrap();
    assert!(!upstream.keeps_upstream_tokens());
    let server = serve_keeping(&mut ours, upstream).await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    ours.redeem(&callback).await;
    let subject = format!("{}|u-1", fake.issuer);
    assert!(matches!(
        server.upstream_tokens(&subject).await,
        Err(UpstreamTokensError::NotKept)
    ));
    assert_eq!(
        server
            .grant_store()
            .get_upstream_tokens(&fake.issuer, &subject)
            .await
            .unwrap(),
        None
    );
}

/// A store that cannot keep upstream tokens (the trait's fail-closed default) fails the
/// login with a "try again" page instead of dropping them silently; a bad key configuration
/// is refused at build.
#[tokio::test]
async fn a_store_that_cannot_keep_them_fails_the_login_closed() {
    let fake = start_fake(Mode::Oidc, false, false).await;
    let mut ours = Ours::bind().await;
    let upstream = UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
        .allow_loopback()
        .keep_upstream_tokens(UpstreamTokenKey::new("k", [1; 32]))
        .build()
        .await
        .unwrap();
    let server = AuthorizationServer::builder()
        .authenticator(upstream)
        .client(StaticClient::public("mcp-client", [REDIRECT]))
        .client_store(MemoryStore::new())
        .grant_store(NoUpstreamTokens(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{}/mcp", ours.issuer))
        .issuer(&ours.issuer)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app: Router = oauth_router(&cfg, &server);
    let listener = ours.listener.take().unwrap();
    tokio::spawn(async move {
        let _ = mcp_oauth::serve(listener, app).await;
    });
    let b = browser("unused", &fake.issuer);
    let (status, body) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 503, "{}", b.transcript());
    assert!(body.contains("could not be saved"), "{body}");

    for bad in [
        UpstreamOidc::oidc(&fake.issuer, "c", None)
            .keep_upstream_tokens(UpstreamTokenKey::new("", [1; 32])),
        UpstreamOidc::oidc(&fake.issuer, "c", None)
            .keep_upstream_tokens(UpstreamTokenKey::new("k", [1; 32]))
            .decrypt_upstream_tokens_with([UpstreamTokenKey::new("k", [2; 32])]),
        UpstreamOidc::oidc(&fake.issuer, "c", None)
            .decrypt_upstream_tokens_with([UpstreamTokenKey::new("k", [2; 32])]),
    ] {
        assert!(matches!(
            bad.allow_loopback().build().await,
            Err(mcp_oauth::authn::UpstreamError::Config(_))
        ));
    }
}

/// A grant store on the trait's defaults for upstream tokens (which fail closed).
struct NoUpstreamTokens(MemoryStore);

#[async_trait::async_trait]
impl GrantStore for NoUpstreamTokens {
    fn is_durable(&self) -> bool {
        false
    }
    async fn put_code(
        &self,
        hash: mcp_oauth::store::SecretHash,
        code: mcp_oauth::store::AuthorizationCode,
    ) -> Result<(), StoreError> {
        self.0.put_code(hash, code).await
    }
    async fn take_code(
        &self,
        hash: &mcp_oauth::store::SecretHash,
        family_id: &str,
        now: u64,
    ) -> Result<mcp_oauth::store::CodeTake, StoreError> {
        self.0.take_code(hash, family_id, now).await
    }
    async fn create_family(
        &self,
        family: mcp_oauth::store::RefreshFamily,
        refresh: Option<mcp_oauth::store::SecretHash>,
    ) -> Result<(), StoreError> {
        self.0.create_family(family, refresh).await
    }
    async fn rotate_refresh(
        &self,
        presented: &mcp_oauth::store::SecretHash,
        successor: mcp_oauth::store::SecretHash,
        sealed: Vec<u8>,
        now: u64,
        grace: u64,
    ) -> Result<mcp_oauth::store::Rotation, StoreError> {
        self.0
            .rotate_refresh(presented, successor, sealed, now, grace)
            .await
    }
    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
        self.0.revoke_family(family_id, now).await
    }
    async fn family_of_refresh(
        &self,
        hash: &mcp_oauth::store::SecretHash,
        now: u64,
    ) -> Result<Option<mcp_oauth::store::RefreshLookup>, StoreError> {
        self.0.family_of_refresh(hash, now).await
    }
    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.0.revoke_token(jti, expires_at).await
    }
    async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
        self.0.is_token_revoked(jti, now).await
    }
    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<mcp_oauth::scope::ScopeSet>, StoreError> {
        self.0.get_consent(subject, client_id).await
    }
    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &mcp_oauth::scope::ScopeSet,
        now: u64,
    ) -> Result<(), StoreError> {
        self.0.put_consent(subject, client_id, scope, now).await
    }
    async fn put_pending(
        &self,
        id: &str,
        pending: mcp_oauth::store::PendingAuthorization,
    ) -> Result<(), StoreError> {
        self.0.put_pending(id, pending).await
    }
    async fn get_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<mcp_oauth::store::PendingAuthorization>, StoreError> {
        self.0.get_pending(id, now).await
    }
    async fn take_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<mcp_oauth::store::PendingAuthorization>, StoreError> {
        self.0.take_pending(id, now).await
    }
    // Logins in progress are kept (the store cannot keep tokens, nothing else).
    async fn put_upstream_login(
        &self,
        key: &mcp_oauth::store::SecretHash,
        login: mcp_oauth::store::UpstreamLogin,
    ) -> Result<(), StoreError> {
        self.0.put_upstream_login(key, login).await
    }
    async fn take_upstream_login(
        &self,
        key: &mcp_oauth::store::SecretHash,
        now: u64,
    ) -> Result<Option<mcp_oauth::store::UpstreamLogin>, StoreError> {
        self.0.take_upstream_login(key, now).await
    }
    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        self.0.sweep(now).await
    }
    async fn stats(&self, now: u64) -> Result<mcp_oauth::store::StoreStats, StoreError> {
        self.0.stats(now).await
    }
}

/// An expired kept access token is refreshed through the provider's token endpoint (with
/// our client authentication), the new tokens are kept (the refresh token the provider did
/// not rotate stays), and a refused refresh is an error, never stale tokens passed off as
/// fresh.
#[tokio::test]
async fn an_expired_kept_access_token_is_refreshed_at_the_provider() {
    use std::sync::atomic::Ordering;
    let fake = start_fake(Mode::Oidc, false, false).await;
    let mut ours = Ours::bind().await;
    let upstream = UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
        .allow_loopback()
        .keep_upstream_tokens(UpstreamTokenKey::new("k1", [3; 32]))
        .build()
        .await
        .unwrap();
    let server = serve_keeping(&mut ours, upstream).await;
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    let mcp_tokens = ours.redeem(&callback).await;
    let text = mcp_tokens.to_string();
    assert!(
        !text.contains("at-fake") && !text.contains("rt-fake"),
        "{text}"
    );
    let subject = format!("{}|u-1", fake.issuer);

    // The login's access token expires in 10 s: reading it refreshes first.
    let t = server.upstream_tokens(&subject).await.unwrap().unwrap();
    assert_eq!(t.access_token, "at-refreshed-1");
    assert_eq!(t.refresh_token.as_deref(), Some("rt-fake"));
    assert_eq!(t.scope.as_deref(), Some("openid email profile"));
    assert!(t.expires_at.is_some());
    assert_eq!(fake.refreshes.load(Ordering::SeqCst), 1);
    // The refreshed tokens were kept (sealed) in place of the old ones.
    let record = server
        .grant_store()
        .get_upstream_tokens(&fake.issuer, &subject)
        .await
        .unwrap()
        .unwrap();
    assert!(!contains(&record, "at-refreshed-1") && !contains(&record, "rt-fake"));

    // The provider refuses the refresh token: an error, not the expired token.
    fake.refuse_refresh.store(true, Ordering::SeqCst);
    assert!(matches!(
        server.upstream_tokens(&subject).await,
        Err(UpstreamTokensError::Refresh)
    ));
}

/// The store holds no plaintext upstream token, searched in the raw bytes of a SQLite
/// database file and its WAL after a login that kept tokens and a refresh that replaced
/// them (positive control: the record's key is found, so the dump is the real thing).
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_no_plaintext_upstream_token() {
    use mcp_oauth::store::sql::SqliteStore;

    let fake = start_fake(Mode::Oidc, false, false).await;
    let dir = std::env::temp_dir().join(format!(
        "mcp_oauth_upstream_tokens_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("oauth.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut ours = Ours::bind().await;
    let upstream = UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
        .allow_loopback()
        .keep_upstream_tokens(UpstreamTokenKey::new("k1", [4; 32]))
        .build()
        .await
        .unwrap();
    let server = AuthorizationServer::builder()
        .authenticator(upstream)
        .client(StaticClient::public("mcp-client", [REDIRECT]))
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{}/mcp", ours.issuer))
        .issuer(&ours.issuer)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app: Router = oauth_router(&cfg, &server);
    let listener = ours.listener.take().unwrap();
    tokio::spawn(async move {
        let _ = mcp_oauth::serve(listener, app).await;
    });
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    ours.redeem(&callback).await;
    let subject = format!("{}|u-1", fake.issuer);
    let t = server.upstream_tokens(&subject).await.unwrap().unwrap();
    assert_eq!(t.access_token, "at-refreshed-1");

    let mut dump = std::fs::read(&path).unwrap();
    for extra in ["oauth.db-wal", "oauth.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.join(extra)) {
            dump.extend(bytes);
        }
    }
    drop(server);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let key = mcp_oauth::store::upstream_tokens_key(&fake.issuer, &subject).to_hex();
    assert!(
        contains(&dump, &key),
        "positive control: the record's key is in the dump"
    );
    for secret in [
        "at-fake",
        "rt-fake",
        "at-refreshed-1",
        "openid email profile",
    ] {
        assert!(!contains(&dump, secret), "{secret} is stored in plaintext");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!contains(&dump, &hex), "{secret} is stored as hex");
    }
}

// ---------------------------------------------------------------------------------------------
// Several instances sharing one grant store, behind one address.

/// Two instances of our server (each with its own `UpstreamOidc`, as two processes would
/// have) on `store_a` and `store_b`, behind one "load balancer" address: `/upstream/callback`
/// goes to the instances in turn, B first; everything else goes to A. So a login is started
/// on A, finished on B, and its replayed callback lands on A. Returns our issuer (the
/// balancer) and how many callbacks it forwarded.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn serve_pair<A, B>(fake: &Fake, store_a: A, store_b: B) -> (Ours, Arc<AtomicUsize>)
where
    A: mcp_oauth::store::ClientStore + mcp_oauth::store::GrantStore,
    B: mcp_oauth::store::ClientStore + mcp_oauth::store::GrantStore,
{
    let mut ours = Ours::bind().await;
    let app = |store: Box<
        dyn FnOnce(
            mcp_oauth::server::AuthorizationServerBuilder,
        ) -> mcp_oauth::server::AuthorizationServerBuilder,
    >| {
        let issuer = ours.issuer.clone();
        async move {
            let upstream =
                UpstreamOidc::oidc(&fake.issuer, "fake-client", Some("fake-secret".into()))
                    .allow_loopback()
                    .build()
                    .await
                    .unwrap();
            let server = store(AuthorizationServer::builder())
                .authenticator(upstream)
                .client(StaticClient::public("mcp-client", [REDIRECT]))
                .build()
                .await
                .unwrap();
            let cfg = McpOAuthConfig::builder()
                .resource(format!("{issuer}/mcp"))
                .issuer(&issuer)
                .scope("read", "Read")
                .authorization_server(&server)
                .build()
                .unwrap();
            oauth_router(&cfg, &server)
        }
    };
    let a: Router = app(Box::new(move |b| b.store(store_a))).await;
    let b: Router = app(Box::new(move |b| b.store(store_b))).await;
    let callbacks = Arc::new(AtomicUsize::new(0));
    let counter = callbacks.clone();
    let (to_a, to_b) = (a.clone(), b);
    let balancer = Router::new()
        .route(
            "/upstream/callback",
            get(move |req: axum::extract::Request| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let target = if n.is_multiple_of(2) {
                    to_b.clone()
                } else {
                    to_a.clone()
                };
                async move { target.oneshot(req).await.unwrap() }
            }),
        )
        .fallback_service(a);
    let listener = ours.listener.take().unwrap();
    serve_app(listener, balancer).await;
    (ours, callbacks)
}

/// A login started on A finishes on B (one shared store); the same callback replayed (to A)
/// is refused; the code A then issues is redeemed.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn login_crosses_instances(ours: &Ours, callbacks: &AtomicUsize, fake: &Fake) -> Browser {
    let b = browser("unused", &fake.issuer);
    let callback = b
        .authorize(&ours.authorize_url("read"), Decision::Approve)
        .await;
    assert_eq!(
        callbacks.load(Ordering::SeqCst),
        1,
        "the upstream callback went to instance B\n{}",
        b.transcript()
    );
    let tokens = ours.redeem(&callback).await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], format!("{}|u-1", fake.issuer));
    // The callback replayed, now reaching instance A: the state was taken by B.
    let replay = logged_callback(&b);
    let (status, body) = stuck(&b, &replay).await;
    assert_eq!(callbacks.load(Ordering::SeqCst), 2);
    assert_eq!(status, 400, "{}", b.transcript());
    assert!(body.contains("already used"), "{body}");
    b
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_login_started_on_one_instance_finishes_on_another() {
    use mcp_oauth::store::SqliteStore;
    let dir = std::env::temp_dir().join(format!("mcp-oauth-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("oauth.db");
    let _ = std::fs::remove_file(&db);
    let fake = start_fake(Mode::Oidc, false, false).await;
    let (store_a, store_b) = (
        SqliteStore::open(&db).await.unwrap(),
        SqliteStore::open(&db).await.unwrap(),
    );
    let (ours, callbacks) = serve_pair(&fake, store_a, store_b).await;
    let b = login_crosses_instances(&ours, &callbacks, &fake).await;

    // A store outage at the callback: a 503 page, nothing for the MCP client.
    b.stop_at_path(Some("/upstream/callback"));
    let Outcome::Callback(upstream_cb) = b
        .run(&ours.authorize_url("read"), Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("{}", b.transcript());
    };
    b.stop_at_path(None);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE mcp_oauth_upstream_logins")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = stuck(&b, &upstream_cb).await;
    assert_eq!(status, 503, "{}", b.transcript());
    assert!(body.contains("cannot be completed right now"), "{body}");
    let last = b.log().last().cloned().unwrap();
    assert!(
        last.url.contains("/upstream/callback"),
        "{}",
        b.transcript()
    );
    assert_eq!(last.location, None, "{}", b.transcript());
    // And at `/authorize`, starting a login: an error page, not a redirect upstream.
    let (status, _) = stuck(&b, &ours.authorize_url("read")).await;
    assert_eq!(status, 503, "{}", b.transcript());
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_login_started_on_one_instance_finishes_on_another() {
    use mcp_oauth::store::PostgresStore;
    let Ok(url) = std::env::var("MCP_OAUTH_TEST_POSTGRES_URL") else {
        eprintln!("skipped: MCP_OAUTH_TEST_POSTGRES_URL is not set");
        return;
    };
    let fake = start_fake(Mode::Oidc, false, false).await;
    let store_a = PostgresStore::connect(&url).await.unwrap();
    let store_b = PostgresStore::connect(&url).await.unwrap();
    let (ours, callbacks) = serve_pair(&fake, store_a, store_b).await;
    login_crosses_instances(&ours, &callbacks, &fake).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_login_started_on_one_instance_finishes_on_another() {
    use mcp_oauth::store::RedisStore;
    let Ok(url) = std::env::var("MCP_OAUTH_TEST_REDIS_URL") else {
        eprintln!("skipped: MCP_OAUTH_TEST_REDIS_URL is not set");
        return;
    };
    let fake = start_fake(Mode::Oidc, false, false).await;
    let store_a = RedisStore::connect(&url).await.unwrap();
    let store_b = RedisStore::connect(&url).await.unwrap();
    let (ours, callbacks) = serve_pair(&fake, store_a, store_b).await;
    login_crosses_instances(&ours, &callbacks, &fake).await;
}
