//! Client ID metadata documents end to end: the test serves the documents over HTTPS on
//! loopback (`https://localhost:<port>/…`, a certificate from a test CA, through
//! `support/tls_proxy.rs`), the authorization server runs on 127.0.0.1 with loopback
//! documents allowed and the test CA trusted, and the test browser (`support/browser.rs`)
//! logs in and approves. Then the code is redeemed with PKCE and refreshed, with no client
//! authentication (`none`).
//!
//! Every refusal is checked to be a page naming the problem (never a redirect, never
//! `invalid_client`); a fetch failure is `503` with `Retry-After`; the cache is checked by
//! counting the document server's hits.

#![cfg(all(feature = "client-metadata", feature = "consent-page"))]

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[allow(dead_code)]
#[path = "support/tls_proxy.rs"]
mod tls_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, ClientMetadataPolicy};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::{Value, json};
use sha2::Digest as _;

use browser::{Browser, Decision, query_param};
use tls_proxy::TlsProxy;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PASSWORD: &str = "cimd-test-password";

/// The document server: counts hits per path.
#[derive(Clone, Default)]
struct Docs {
    base: Arc<std::sync::OnceLock<String>>,
    hits: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    flaky: Arc<AtomicUsize>,
}

impl Docs {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn doc(id: &str) -> Value {
    json!({
        "client_id": id,
        "client_name": "Totally Official App",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn json_reply(v: &Value, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, cache),
        ],
        v.to_string(),
    )
        .into_response()
}

async fn serve_doc(
    State(docs): State<Docs>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    *docs.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    let base = docs.base.get().unwrap().clone();
    let id = format!("{base}/{name}");
    match name.as_str() {
        "good.json" | "second.json" => json_reply(&doc(&id), "public, max-age=300"),
        "other-id.json" => json_reply(&doc(&format!("{base}/good.json")), "max-age=300"),
        "big.json" => {
            let mut d = doc(&id);
            d["padding"] = json!("x".repeat(6 * 1024));
            json_reply(&d, "max-age=300")
        }
        "redirect.json" => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{base}/good.json"))],
        )
            .into_response(),
        "secret.json" => {
            let mut d = doc(&id);
            d["token_endpoint_auth_method"] = json!("client_secret_post");
            json_reply(&d, "max-age=300")
        }
        "slow.json" => {
            tokio::time::sleep(Duration::from_secs(8)).await;
            json_reply(&doc(&id), "max-age=300")
        }
        "page.json" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>not json</html>",
        )
            .into_response(),
        // Fails once, then serves the document: the failure must not be cached.
        "flaky.json" => {
            if docs.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            } else {
                json_reply(&doc(&id), "max-age=300")
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Setup {
    issuer: String,
    docs: Docs,
    base: String,
    http: reqwest::Client,
    _proxy: TlsProxy,
}

/// The document server behind TLS on `localhost`, and an authorization server configured by
/// `configure` (given the test CA), both on loopback.
async fn setup(
    configure: impl FnOnce(AuthorizationServerBuilder, &[u8]) -> AuthorizationServerBuilder,
) -> Setup {
    let docs = Docs::default();
    let app = Router::new()
        .route("/{name}", get(serve_doc))
        .with_state(docs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut proxy = TlsProxy::bind("localhost").await;
    proxy.forward_to(backend);
    let base = proxy.url();
    docs.base.set(base.clone()).unwrap();
    let ca = std::fs::read(proxy.ca()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let builder = AuthorizationServer::builder()
        .authenticator(StaticUsers::new().with_password("alice", PASSWORD));
    let server = configure(builder, &ca).build().await.unwrap();
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
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Setup {
        issuer,
        docs,
        base,
        http,
        _proxy: proxy,
    }
}

fn loopback_allowed(b: AuthorizationServerBuilder, ca: &[u8]) -> AuthorizationServerBuilder {
    b.client_metadata_policy(
        ClientMetadataPolicy::new()
            .allow_loopback()
            .root_certificates_pem(ca),
    )
}

fn challenge() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER))
}

fn authorize_url(issuer: &str, client_id: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "st-1")
        .append_pair("scope", "read")
        .append_pair("code_challenge", &challenge())
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{issuer}/authorize?{q}")
}

/// A GET of the authorization URL: status, headers, body.
async fn open(s: &Setup, client_id: &str) -> (StatusCode, HeaderMap, String) {
    let res = s
        .http
        .get(authorize_url(&s.issuer, client_id))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

async fn token(s: &Setup, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let res = s
        .http
        .post(format!("{}/token", s.issuer))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_document_client_authorizes_redeems_and_refreshes() {
    let s = setup(loopback_allowed).await;
    let client_id = format!("{}/good.json", s.base);

    // Discovery advertises the flag, with `none` among the methods.
    let meta: Value = s
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            s.issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["client_id_metadata_document_supported"], true,
        "{meta}"
    );
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );

    // The login page names the verified host, not the self-declared name (the consent
    // page's wording is checked in the crate's page tests).
    let (status, _, login) = open(&s, &client_id).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let host = s.base.trim_start_matches("https://");
    assert!(login.contains(host), "{login}");
    assert!(login.contains("verified: this server fetched"), "{login}");
    assert!(
        !login.contains("Totally Official App"),
        "the self-declared name is not shown: {login}"
    );

    let browser = Browser::new("alice", PASSWORD);
    let callback = browser
        .authorize(&authorize_url(&s.issuer, &client_id), Decision::Approve)
        .await;
    let transcript = browser.transcript();
    assert!(
        callback.starts_with("http://127.0.0.1:9/callback?"),
        "{callback}"
    );
    assert_eq!(query_param(&callback, "state").as_deref(), Some("st-1"));
    let code = query_param(&callback, "code").unwrap();

    // Redeem with PKCE and no client authentication.
    let (status, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(body["access_token"].is_string());

    // Refresh.
    let (status, body) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());

    // Within max-age, the whole flow fetched the document once.
    assert_eq!(s.docs.hits("good.json"), 1, "{transcript}");
    let (status, _, _) = open(&s, &client_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.docs.hits("good.json"),
        1,
        "another authorize within max-age"
    );

    // A code for this client is not redeemable by another document client.
    let (status, body) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &format!("{}/second.json", s.base)),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_documents_are_refused_with_a_page_naming_the_problem() {
    let s = setup(loopback_allowed).await;
    let cases = [
        ("other-id.json", "names another client_id"),
        ("big.json", "larger than 5120 bytes"),
        ("redirect.json", "redirects are not followed"),
        ("secret.json", "client_secret_post"),
        ("page.json", "text/html"),
        ("missing.json", "HTTP 404"),
    ];
    for (name, problem) in cases {
        let (status, headers, body) = open(&s, &format!("{}/{name}", s.base)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            headers.get(header::LOCATION).is_none(),
            "{name}: redirected"
        );
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{name}"
        );
        let text = browser::decode_entities(&body);
        assert!(text.contains(problem), "{name}: {text}");
        assert!(text.contains("Invalid client metadata document"), "{name}");
        assert!(!text.contains("invalid_client"), "{name}");
    }

    // A redirect URI the document does not list.
    let url = authorize_url(&s.issuer, &format!("{}/good.json", s.base))
        .replace("127.0.0.1%3A9%2Fcallback", "127.0.0.1%3A9%2Fother");
    let res = s.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(header::LOCATION).is_none());
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("not one the application registered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_failures_are_503_with_retry_after_and_are_refetched() {
    let s = setup(|b, ca| {
        b.client_metadata_policy(
            ClientMetadataPolicy::new()
                .allow_loopback()
                .root_certificates_pem(ca)
                .timeouts(Duration::from_secs(1), Duration::from_secs(2)),
        )
    })
    .await;
    // Slow: the fetch times out.
    let started = std::time::Instant::now();
    let (status, headers, body) = open(&s, &format!("{}/slow.json", s.base)).await;
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.get(header::RETRY_AFTER).is_some());
    assert!(
        browser::decode_entities(&body).contains("timed out"),
        "{body}"
    );
    assert!(!body.contains("invalid_client"));

    // A 503 from the document's host, then the document: the error is not cached.
    let flaky = format!("{}/flaky.json", s.base);
    let (status, headers, body) = open(&s, &flaky).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.get(header::RETRY_AFTER).is_some());
    let (status, _, body) = open(&s, &flaky).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.docs.hits("flaky.json"), 2);

    // At the token endpoint an unreachable document is 503 too, never invalid_client.
    let (status, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", "nope"),
            ("redirect_uri", REDIRECT),
            ("client_id", &format!("{}/slow.json", s.base)),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_documents_are_refused_by_default() {
    // The CA is trusted, but loopback is not allowed (the default policy).
    let s = setup(|b, ca| {
        b.client_metadata_policy(ClientMetadataPolicy::new().root_certificates_pem(ca))
    })
    .await;
    let (status, headers, body) = open(&s, &format!("{}/good.json", s.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(headers.get(header::LOCATION).is_none());
    let text = browser::decode_entities(&body);
    assert!(text.contains("a loopback address"), "{text}");
    assert_eq!(s.docs.hits("good.json"), 0, "nothing was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_allow_list_refuses_other_hosts() {
    let s = setup(|b, ca| {
        b.client_metadata_policy(
            ClientMetadataPolicy::new()
                .allow_loopback()
                .root_certificates_pem(ca)
                .hosts(["claude.ai"]),
        )
    })
    .await;
    let (status, _, body) = open(&s, &format!("{}/good.json", s.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(browser::decode_entities(&body).contains("does not accept clients from localhost"));
    assert_eq!(s.docs.hits("good.json"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_a_url_client_id_is_an_unknown_client() {
    let s = setup(|b, ca| loopback_allowed(b, ca).client_id_metadata_documents(false)).await;
    let meta: Value = s
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            s.issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta.get("client_id_metadata_document_supported").is_none(),
        "{meta}"
    );
    let client_id = format!("{}/good.json", s.base);
    let (status, _, body) = open(&s, &client_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown client_id"), "{body}");
    let (status, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", "nope"),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(s.docs.hits("good.json"), 0);
}
