//! Client ID metadata document clients that authenticate with `private_key_jwt` (RFC 7523),
//! end to end: the test serves the documents over HTTPS on loopback (as
//! `as_client_metadata.rs` does, through `support/tls_proxy.rs`) and the client's JWK Set
//! over plain HTTP on loopback; the test browser logs in and approves; the code is redeemed
//! and the refresh token used with signed assertions whose `iss` = `sub` = the URL
//! `client_id`. A replayed assertion is refused, also by a second server sharing the store
//! (one SQLite file, PostgreSQL, Redis); a document asking for `private_key_jwt` without keys
//! or with both `jwks` and `jwks_uri` is refused with a page naming the problem; a `jwks_uri`
//! document works through the same SSRF-guarded fetcher as a registered client's (and is
//! refused by it without the loopback switch). Never a 500.

#![cfg(all(
    feature = "client-metadata",
    feature = "consent-page",
    feature = "private-key-jwt"
))]

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[macro_use]
#[path = "support/stores.rs"]
mod stores;
#[allow(dead_code)]
#[path = "support/tls_proxy.rs"]
mod tls_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, ClientMetadataPolicy};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::{Value, json};
use sha2::Digest as _;

use browser::{Browser, Decision, query_param};
use tls_proxy::TlsProxy;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PASSWORD: &str = "cimd-pkjwt-password";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The client's key pair and the assertions it signs.
struct ClientKey(SigningKey);

impl ClientKey {
    fn new() -> Self {
        Self(SigningKey::generate(SigningAlgorithm::Es256).unwrap())
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.0.jwk()]})
    }

    /// A fresh assertion (new `jti`) for `client_id`, to `aud`.
    fn assertion(&self, client_id: &str, aud: &str) -> String {
        let now = now();
        self.0
            .sign(
                "JWT",
                &json!({
                    "iss": client_id, "sub": client_id, "aud": aud,
                    "iat": now, "exp": now + 120, "jti": stores::unique("jti"),
                }),
            )
            .unwrap()
    }
}

/// The client's web server: its metadata documents (behind TLS) and its JWK Set (plain
/// HTTP on loopback), counting the key set's fetches.
#[derive(Clone)]
struct ClientSite {
    /// `https://localhost:<port>`, where the documents are.
    base: Arc<std::sync::OnceLock<String>>,
    /// `http://127.0.0.1:<port>`, where the key set is.
    plain: Arc<std::sync::OnceLock<String>>,
    jwks: Value,
    jwks_fetches: Arc<AtomicUsize>,
}

fn json_reply(v: &Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        v.to_string(),
    )
        .into_response()
}

async fn serve(
    State(site): State<ClientSite>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if name == "jwks.json" {
        site.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        return json_reply(&site.jwks);
    }
    let base = site.base.get().unwrap();
    let mut doc = json!({
        "client_id": format!("{base}/{name}"),
        "client_name": "Backend Agent",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "private_key_jwt",
    });
    let jwks_uri = format!("{}/jwks.json", site.plain.get().unwrap());
    match name.as_str() {
        "inline.json" => doc["jwks"] = site.jwks.clone(),
        "uri.json" => doc["jwks_uri"] = json!(jwks_uri),
        "no-keys.json" => {}
        "both.json" => {
            doc["jwks"] = site.jwks.clone();
            doc["jwks_uri"] = json!(jwks_uri);
        }
        "private-key.json" => {
            let mut jwks = site.jwks.clone();
            jwks["keys"][0]["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
            doc["jwks"] = jwks;
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    json_reply(&doc)
}

/// The client's site on loopback; the TLS proxy must be kept alive.
async fn client_site(key: &ClientKey) -> (ClientSite, TlsProxy) {
    let site = ClientSite {
        base: Arc::default(),
        plain: Arc::default(),
        jwks: key.jwks(),
        jwks_fetches: Arc::default(),
    };
    let app = Router::new()
        .route("/{name}", get(serve))
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut proxy = TlsProxy::bind("localhost").await;
    proxy.forward_to(backend);
    site.base.set(proxy.url()).unwrap();
    site.plain.set(format!("http://{backend}")).unwrap();
    (site, proxy)
}

/// An authorization server on loopback trusting the proxy's CA for documents, with loopback
/// documents allowed; `configure` adds the rest. Its URL, which is also its issuer.
async fn start_server(
    proxy: &TlsProxy,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder,
) -> String {
    start_server_as(proxy, None, configure).await
}

/// Like [`start_server`], with the issuer `issuer` when given (two instances of one
/// deployment share their issuer); the server's own URL.
async fn start_server_as(
    proxy: &TlsProxy,
    issuer: Option<&str>,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder,
) -> String {
    let ca = std::fs::read(proxy.ca()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = issuer.unwrap_or(&url).to_owned();
    let builder = AuthorizationServer::builder()
        .authenticator(StaticUsers::new().with_password("alice", PASSWORD))
        .client_metadata_policy(
            ClientMetadataPolicy::new()
                .allow_loopback()
                .root_certificates_pem(&ca),
        );
    let server = configure(builder).build().await.unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{issuer}/mcp"))
        .issuer(&issuer)
        .scope("read", "Read your notes")
        .authorization_server(&server)
        .build()
        .unwrap();
    let router: Router = oauth_router(&cfg, &server);
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    url
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn authorize_url(issuer: &str, client_id: &str) -> String {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER));
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "st-1")
        .append_pair("scope", "read")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{issuer}/authorize?{q}")
}

/// A form POST to `{issuer}{path}`: status and JSON body (never a 500).
async fn post(issuer: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let res = http()
        .post(format!("{issuer}{path}"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "no 500, ever");
    (status, res.json().await.unwrap_or(Value::Null))
}

#[track_caller]
fn assert_error(reply: &(StatusCode, Value), status: StatusCode, error: &str, fragment: &str) {
    let (got, body) = reply;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(fragment),
        "{description:?} lacks {fragment:?}"
    );
}

/// Logs in and approves in the test browser: the code.
async fn code_for(issuer: &str, client_id: &str) -> String {
    let browser = Browser::new("alice", PASSWORD);
    let callback = browser
        .authorize(&authorize_url(issuer, client_id), Decision::Approve)
        .await;
    assert!(
        callback.starts_with("http://127.0.0.1:9/callback?"),
        "{callback}\n{}",
        browser.transcript()
    );
    query_param(&callback, "code").unwrap()
}

/// Redeems `code` with `assertion`.
async fn exchange(
    issuer: &str,
    client_id: &str,
    code: &str,
    assertion: &str,
) -> (StatusCode, Value) {
    post(
        issuer,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// Revokes an unknown token authenticating with `assertion` (client authentication is all
/// that can fail).
async fn revoke(issuer: &str, assertion: &str) -> (StatusCode, Value) {
    post(
        issuer,
        "/revoke",
        &[
            ("token", "not-a-token"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_jwks_document_client_authorizes_redeems_and_refreshes_with_assertions() {
    let key = ClientKey::new();
    let (site, proxy) = client_site(&key).await;
    let issuer = start_server(&proxy, |b| b).await;
    let token_endpoint = format!("{issuer}/token");
    let client_id = format!("{}/inline.json", site.base.get().unwrap());

    // Discovery offers private_key_jwt besides none, with the document flag.
    let meta: Value = http()
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let methods = meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("none")) && methods.contains(&json!("private_key_jwt")));

    let code = code_for(&issuer, &client_id).await;

    // Without an assertion the client is refused: it is not public.
    let bare = post(
        &issuer,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_error(
        &bare,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "private_key_jwt",
    );
    // Another key's assertion is refused.
    let stranger = ClientKey::new();
    let forged = exchange(
        &issuer,
        &client_id,
        &code,
        &stranger.assertion(&client_id, &token_endpoint),
    )
    .await;
    assert_eq!(forged.0, StatusCode::UNAUTHORIZED, "{}", forged.1);
    assert_eq!(forged.1["error"], "invalid_client");

    // The client's own assertion (aud = the token endpoint) redeems the code.
    let assertion = key.assertion(&client_id, &token_endpoint);
    let (status, body) = exchange(&issuer, &client_id, &code, &assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // Refresh with a new assertion (aud = the issuer this time).
    let refresh_with = |refresh: String, assertion: String| {
        let issuer = issuer.clone();
        async move {
            post(
                &issuer,
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &refresh),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let second = key.assertion(&client_id, &issuer);
    let (status, body) = refresh_with(refresh, second.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // The same assertion again is a replay: refused, and the refresh token still works
    // with a fresh one.
    let replay = refresh_with(refresh.clone(), second).await;
    assert_error(
        &replay,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "used before",
    );
    let replay = revoke(&issuer, &assertion).await;
    assert_error(
        &replay,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "used before",
    );
    let (status, body) = refresh_with(refresh, key.assertion(&client_id, &token_endpoint)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Revocation authenticates it the same way.
    let (status, body) = revoke(&issuer, &key.assertion(&client_id, &token_endpoint)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_uri_document_client_uses_the_guarded_key_fetcher() {
    let key = ClientKey::new();
    let (site, proxy) = client_site(&key).await;
    let client_id = format!("{}/uri.json", site.base.get().unwrap());

    // With the key fetcher's loopback switch (tests only), the keys are fetched and cached.
    let issuer = start_server(
        &proxy,
        AuthorizationServerBuilder::client_jwks_allow_loopback,
    )
    .await;
    let token_endpoint = format!("{issuer}/token");
    let code = code_for(&issuer, &client_id).await;
    let (status, body) = exchange(
        &issuer,
        &client_id,
        &code,
        &key.assertion(&client_id, &token_endpoint),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = revoke(&issuer, &key.assertion(&client_id, &token_endpoint)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(site.jwks_fetches.load(Ordering::SeqCst), 1, "keys cached");

    // Without it, the document is still accepted, but the SSRF guard refuses to fetch its
    // loopback jwks_uri: 503, never invalid_client, and nothing is fetched.
    let guarded = start_server(&proxy, |b| b).await;
    let refused = revoke(
        &guarded,
        &key.assertion(&client_id, &format!("{guarded}/token")),
    )
    .await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "loopback",
    );
    assert_eq!(site.jwks_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_documents_without_usable_keys_are_refused() {
    let key = ClientKey::new();
    let (site, proxy) = client_site(&key).await;
    let issuer = start_server(&proxy, |b| b).await;
    let base = site.base.get().unwrap();
    for (name, problem) in [
        (
            "no-keys.json",
            "publishes no keys: it needs jwks or jwks_uri",
        ),
        ("both.json", "has both jwks and jwks_uri"),
        ("private-key.json", "private member"),
    ] {
        let client_id = format!("{base}/{name}");
        let res = http()
            .get(authorize_url(&issuer, &client_id))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name}");
        assert!(res.headers().get(header::LOCATION).is_none(), "{name}");
        let text = browser::decode_entities(&res.text().await.unwrap());
        assert!(
            text.contains("Invalid client metadata document"),
            "{name}: {text}"
        );
        assert!(text.contains(problem), "{name}: {text}");

        // At the token endpoint such a client does not exist, assertion or not.
        let reply = revoke(
            &issuer,
            &key.assertion(&client_id, &format!("{issuer}/token")),
        )
        .await;
        assert_eq!(reply.0, StatusCode::UNAUTHORIZED, "{name}: {}", reply.1);
        assert_eq!(reply.1["error"], "invalid_client", "{name}");
    }
}

/// Two instances of one deployment (one issuer) on one shared store, each resolving the
/// same document: an assertion used at one is refused at the other.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn replay_across<S>(a: S, b: S)
where
    S: mcp_oauth::store::ClientStore + mcp_oauth::store::GrantStore,
{
    let key = ClientKey::new();
    let (site, proxy) = client_site(&key).await;
    let client_id = format!("{}/inline.json", site.base.get().unwrap());
    let ia = start_server(&proxy, |builder| builder.store(a)).await;
    let ib = start_server_as(&proxy, Some(&ia), |builder| builder.store(b)).await;
    let aud = format!("{ia}/token");

    for (first, second) in [(&ia, &ib), (&ib, &ia)] {
        let assertion = key.assertion(&client_id, &aud);
        let (status, body) = revoke(first, &assertion).await;
        assert_eq!(status, StatusCode::OK, "{first}: {body}");
        let replay = revoke(second, &assertion).await;
        assert_error(
            &replay,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "used before",
        );
    }

    // A code issued at A is redeemed at B with an assertion; that assertion is then dead
    // at A too.
    let code = code_for(&ia, &client_id).await;
    let assertion = key.assertion(&client_id, &aud);
    let (status, body) = exchange(&ib, &client_id, &code, &assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let replay = revoke(&ia, &assertion).await;
    assert_error(
        &replay,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "used before",
    );
}

across_shared_stores!(
    a_replay_at_one_server_is_refused_at_another,
    replay_across,
    "cimdpk"
);
