//! The authorization endpoint driven as a browser would: follow the pages, carry the cookie,
//! read the hidden fields from the HTML, submit the forms. Every MUST has a negative test.

#![cfg(feature = "server")]

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::{HostSession, InsecureAutoApprove, StaticUsers, User};
use mcp_oauth::oauth_router;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit, StaticClient};
use mcp_oauth::store::{AuthorizationCode, CodeTake, SecretHash};
use mcp_oauth::verify::TokenVerifier as _;
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:8000";
const RESOURCE: &str = "http://127.0.0.1:8000/mcp";
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Alice's password hash, computed once per test binary (Argon2 is slow in debug builds).
fn alice_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| StaticUsers::hash_password("pw"))
}

fn users() -> StaticUsers {
    StaticUsers::new()
        .with_user("alice", alice_hash())
        .with_display_name("alice", "Alice Liddell")
}

fn server() -> AuthorizationServerBuilder {
    AuthorizationServer::builder()
        .authenticator(users())
        .client(StaticClient::public("c1", ["http://127.0.0.1/callback"]).with_name("Demo client"))
}

/// A configuration with the server it was built from: the configuration no longer holds the
/// server, and `oauth_router` takes both.
struct Cfg {
    cfg: McpOAuthConfig,
    server: AuthorizationServer,
}

impl std::ops::Deref for Cfg {
    type Target = McpOAuthConfig;
    fn deref(&self) -> &McpOAuthConfig {
        &self.cfg
    }
}

async fn config(server: AuthorizationServerBuilder) -> Cfg {
    config_with(server, ISSUER, RESOURCE).await
}

async fn config_with(server: AuthorizationServerBuilder, issuer: &str, resource: &str) -> Cfg {
    let server = server.build().await.unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(resource)
        .resource(format!("{resource}2"))
        .issuer(issuer)
        .scope("read", "Read your notes")
        .scope("write", "Change your notes")
        .default_scopes(["read"])
        .authorization_server(&server)
        .build()
        .unwrap();
    Cfg { cfg, server }
}

/// An authorization URL with the usual parameters; `extra` overrides or adds (an empty value
/// removes the parameter).
fn authorize_url(extra: &[(&str, &str)]) -> String {
    let challenge = challenge(VERIFIER);
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "c1"),
        ("redirect_uri", "http://127.0.0.1:49152/callback"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
        ("scope", "read"),
        ("resource", RESOURCE),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/authorize?{q}")
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn location(&self) -> Option<&str> {
        self.headers.get("location").map(|v| v.to_str().unwrap())
    }

    /// The query parameters of the redirect.
    fn redirect_params(&self) -> HashMap<String, String> {
        let loc = self.location().expect("a redirect");
        let q = loc.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    /// A hidden input's value.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    /// The path of the page's form action.
    fn form_path(&self) -> String {
        let marker = "action=\"";
        let start = self.body.find(marker).expect("a form") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        let action = &self.body[start..start + end];
        action
            .strip_prefix(ISSUER)
            .or_else(|| action.strip_prefix("https://auth.example.com"))
            .unwrap_or(action)
            .to_owned()
    }

    fn assert_page_headers(&self) {
        let h = &self.headers;
        assert_eq!(h["content-security-policy"], CSP);
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
    }

    /// An error page: 400, the security headers, no redirect.
    fn assert_error_page(&self) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.body);
        assert!(self.location().is_none());
        self.assert_page_headers();
    }
}

/// A browser: one cookie jar, requests through `oneshot`.
struct Browser {
    app: Router,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(cfg: &Cfg) -> Self {
        Self {
            app: oauth_router(&cfg.cfg, &cfg.server),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.unwrap();
        for sc in res.headers().get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let (pair, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, uri: &str) -> Resp {
        let req = Request::get(uri)
            .header("cookie", self.cookie_header())
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    async fn post(&mut self, uri: &str, fields: &[(&str, &str)]) -> Resp {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", self.cookie_header())
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Submits the login form of `page`.
    async fn login(&mut self, page: &Resp, username: &str, password: &str) -> Resp {
        let (rid, csrf) = (page.hidden("request_id"), page.hidden("csrf_token"));
        self.post(
            &page.form_path(),
            &[
                ("username", username),
                ("password", password),
                ("request_id", &rid),
                ("csrf_token", &csrf),
            ],
        )
        .await
    }

    /// Submits the consent form of `page`.
    async fn decide(&mut self, page: &Resp, decision: &str) -> Resp {
        let (rid, csrf) = (page.hidden("request_id"), page.hidden("csrf_token"));
        self.post(
            &page.form_path(),
            &[
                ("request_id", &rid),
                ("csrf_token", &csrf),
                ("decision", decision),
            ],
        )
        .await
    }

    /// Authorization URL → login → consent page.
    async fn reach_consent(&mut self, url: &str) -> Resp {
        let login = self.get(url).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        let consent = self.login(&login, "alice", "pw").await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
        assert!(
            consent.body.contains("value=\"approve\""),
            "{}",
            consent.body
        );
        consent
    }
}

/// Takes the code from the store (spending it) to inspect what it is bound to.
async fn code_record(cfg: &Cfg, code: &str) -> AuthorizationCode {
    let grants = cfg.server.grant_store();
    match grants
        .take_code(&SecretHash::of(code), "inspect", now())
        .await
        .unwrap()
    {
        CodeTake::Taken(c) => c,
        other => panic!("{other:?}"),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An error redirect to the client: the code, the state and `iss`, nothing else.
fn assert_error_redirect(res: &Resp, error: &str) {
    assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
    let loc = res.location().unwrap();
    assert!(loc.starts_with("http://127.0.0.1:49152/callback?"), "{loc}");
    let p = res.redirect_params();
    assert_eq!(p["error"], error, "{loc}");
    assert!(!p["error_description"].is_empty());
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], ISSUER);
    assert!(!p.contains_key("code"));
}

// ---------------------------------------------------------------------------------------
// The whole flow
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn login_and_consent_issue_a_code_bound_to_the_request() {
    // Built exactly like the crate's users do.
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new().with_password("alice", "pw"))
        .client(StaticClient::public("c1", ["http://127.0.0.1/callback"]));
    let cfg = config(server).await;
    let mut b = Browser::new(&cfg);

    let login = b.get(&authorize_url(&[("scope", "read write")])).await;
    assert_eq!(login.status, StatusCode::OK);
    login.assert_page_headers();
    assert!(login.body.contains("name=\"password\""));
    assert!(
        login.body.contains("127.0.0.1:49152"),
        "redirect host shown"
    );
    // Development issuer: a plain cookie, HttpOnly, SameSite=Lax.
    let sc = login.headers["set-cookie"].to_str().unwrap();
    assert!(sc.starts_with("mcp-oauth-req="), "{sc}");
    assert!(sc.contains("HttpOnly") && sc.contains("SameSite=Lax") && sc.contains("Path=/"));
    assert!(!sc.contains("Secure"), "{sc}");

    // A wrong password re-renders the login page with an error.
    let again = b.login(&login, "alice", "wrong").await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body.contains("Wrong user name or password"));
    assert!(again.body.contains("value=\"alice\""));
    again.assert_page_headers();

    let consent = b.login(&again, "alice", "pw").await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    consent.assert_page_headers();
    // A new request id and CSRF token after login.
    assert_ne!(consent.hidden("request_id"), login.hidden("request_id"));
    assert_ne!(consent.hidden("csrf_token"), login.hidden("csrf_token"));
    for shown in [
        "127.0.0.1:49152",
        "Read your notes",
        "Change your notes",
        RESOURCE,
        "not verified",
        "loopback",
    ] {
        assert!(
            consent.body.contains(shown),
            "{shown} missing: {}",
            consent.body
        );
    }

    let done = b.decide(&consent, "approve").await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.headers["cache-control"], "no-store");
    let loc = done.location().unwrap();
    assert!(
        loc.starts_with("http://127.0.0.1:49152/callback?code="),
        "{loc}"
    );
    let p = done.redirect_params();
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], ISSUER);
    assert_eq!(p.len(), 3, "{loc}");
    // 32 random bytes, base64url.
    assert_eq!(p["code"].len(), 43);
    assert!(b.cookies.is_empty(), "the binding cookie is cleared");

    let code = code_record(&cfg, &p["code"]).await;
    assert_eq!(code.client_id, "c1");
    assert_eq!(code.redirect_uri, "http://127.0.0.1:49152/callback");
    assert_eq!(code.code_challenge, challenge(VERIFIER));
    assert_eq!(code.scope.to_string(), "read write");
    assert_eq!(code.resource, RESOURCE);
    assert_eq!(code.subject, "alice");
    let t = now();
    assert!(code.auth_time <= t && code.auth_time + 30 > t);
    assert!(
        code.expires_at > t + 30 && code.expires_at <= t + 61,
        "60 s code lifetime"
    );
}

#[tokio::test]
async fn deny_redirects_access_denied_with_state_and_iss() {
    let cfg = config(server()).await;
    let mut b = Browser::new(&cfg);
    let consent = b.reach_consent(&authorize_url(&[])).await;
    let res = b.decide(&consent, "deny").await;
    assert_error_redirect(&res, "access_denied");
}

#[tokio::test]
async fn a_consent_decision_cannot_be_replayed() {
    let cfg = config(server()).await;
    let mut b = Browser::new(&cfg);
    let consent = b.reach_consent(&authorize_url(&[])).await;
    let cookies = b.cookies.clone();
    let first = b.decide(&consent, "approve").await;
    assert_eq!(first.status, StatusCode::FOUND);
    // Replay with the same cookie and form.
    b.cookies = cookies;
    let replay = b.decide(&consent, "approve").await;
    replay.assert_error_page();
    let replay = b.decide(&consent, "deny").await;
    replay.assert_error_page();
}

#[tokio::test]
async fn csrf_token_missing_wrong_or_from_another_request_is_refused() {
    let cfg = config(server()).await;
    let mut a = Browser::new(&cfg);
    let mut b = Browser::new(&cfg);
    let consent_a = a.reach_consent(&authorize_url(&[])).await;
    let consent_b = b.reach_consent(&authorize_url(&[])).await;
    let path = consent_a.form_path();
    let rid_a = consent_a.hidden("request_id");

    // Missing token.
    let res = a
        .post(&path, &[("request_id", &rid_a), ("decision", "approve")])
        .await;
    res.assert_error_page();
    // Another request's token.
    let res = a
        .post(
            &path,
            &[
                ("request_id", &rid_a),
                ("csrf_token", &consent_b.hidden("csrf_token")),
                ("decision", "approve"),
            ],
        )
        .await;
    res.assert_error_page();
    // Another request's id and token, with this browser's cookie.
    let res = a.decide(&consent_b, "approve").await;
    res.assert_error_page();
    // The right form without the binding cookie (a cross-site post, or another browser).
    let mut stranger = Browser::new(&cfg);
    let res = stranger.decide(&consent_a, "approve").await;
    res.assert_error_page();
    // A made-up request id.
    let res = a
        .post(
            &path,
            &[
                ("request_id", "nope"),
                ("csrf_token", &consent_a.hidden("csrf_token")),
                ("decision", "approve"),
            ],
        )
        .await;
    res.assert_error_page();
    // Failed attempts did not consume the request: the real form still works.
    let ok = a.decide(&consent_a, "approve").await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    assert!(ok.redirect_params().contains_key("code"));
}

#[tokio::test]
async fn login_form_checks_csrf_and_cookie_too() {
    let cfg = config(server()).await;
    let mut a = Browser::new(&cfg);
    let login = a.get(&authorize_url(&[])).await;
    let res = a
        .post(
            &login.form_path(),
            &[
                ("username", "alice"),
                ("password", "pw"),
                ("request_id", &login.hidden("request_id")),
                ("csrf_token", "forged"),
            ],
        )
        .await;
    res.assert_error_page();
    let mut stranger = Browser::new(&cfg);
    stranger
        .login(&login, "alice", "pw")
        .await
        .assert_error_page();
    // Consent before login is refused.
    let res = a
        .post(
            "/authorize/consent",
            &[
                ("request_id", &login.hidden("request_id")),
                ("csrf_token", &login.hidden("csrf_token")),
                ("decision", "approve"),
            ],
        )
        .await;
    res.assert_error_page();
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let cfg = config(server().login_rate_limit(RateLimit::per_minute(1))).await;
    let mut b = Browser::new(&cfg);
    let login = b.get(&authorize_url(&[])).await;
    let first = b.login(&login, "alice", "wrong").await;
    assert_eq!(first.status, StatusCode::OK);
    let second = b.login(&login, "alice", "pw").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.body.contains("Too many sign-in attempts"));
    second.assert_page_headers();
}

// ---------------------------------------------------------------------------------------
// Client and redirect URI: error pages, never redirects
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_and_redirect_uri_are_checked_before_any_redirect() {
    let cfg = config(server().client(StaticClient::public(
        "two",
        ["https://app.example.com/cb", "https://app.example.com/cb2"],
    )))
    .await;
    let mut b = Browser::new(&cfg);
    for (label, url) in [
        ("unknown client", authorize_url(&[("client_id", "nobody")])),
        ("no client", authorize_url(&[("client_id", "")])),
        (
            "unregistered redirect",
            authorize_url(&[("redirect_uri", "https://evil.example/callback")]),
        ),
        (
            "other path",
            authorize_url(&[("redirect_uri", "http://127.0.0.1:49152/callback/x")]),
        ),
        (
            "localhost is not 127.0.0.1",
            authorize_url(&[("redirect_uri", "http://localhost:49152/callback")]),
        ),
        (
            "https is not http",
            authorize_url(&[("redirect_uri", "https://127.0.0.1/callback")]),
        ),
        (
            "no redirect with two registered",
            authorize_url(&[("client_id", "two"), ("redirect_uri", "")]),
        ),
        (
            "prefix of a registered URI",
            authorize_url(&[
                ("client_id", "two"),
                ("redirect_uri", "https://app.example.com/c"),
            ]),
        ),
        (
            "duplicate redirect_uri",
            format!(
                "{}&redirect_uri=https%3A%2F%2Fevil.example%2F",
                authorize_url(&[])
            ),
        ),
        (
            "duplicate client_id",
            format!("{}&client_id=two", authorize_url(&[])),
        ),
        (
            "dangerous scheme",
            authorize_url(&[("redirect_uri", "javascript:alert(1)")]),
        ),
    ] {
        let res = b.get(&url).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{label}: {}", res.body);
        assert!(res.location().is_none(), "{label}");
        res.assert_page_headers();
        // Even a bad PKCE or response type does not turn this into a redirect.
        let res = b.get(&format!("{url}&response_type=token")).await;
        assert!(res.location().is_none(), "{label}");
    }
}

#[tokio::test]
async fn loopback_redirect_matches_on_any_port_and_missing_redirect_uses_the_only_one() {
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev"))).await;
    let mut b = Browser::new(&cfg);
    for port_uri in [
        "http://127.0.0.1:1/callback",
        "http://127.0.0.1:65535/callback",
        "http://127.0.0.1/callback",
    ] {
        let res = b.get(&authorize_url(&[("redirect_uri", port_uri)])).await;
        assert_eq!(res.status, StatusCode::FOUND);
        assert!(
            res.location()
                .unwrap()
                .starts_with(&format!("{port_uri}?code="))
        );
    }
    let res = b.get(&authorize_url(&[("redirect_uri", "")])).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert!(
        res.location()
            .unwrap()
            .starts_with("http://127.0.0.1/callback?code=")
    );
}

// ---------------------------------------------------------------------------------------
// The request: errors redirect with iss
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pkce_is_required_and_only_s256() {
    // Errors go back to the client only when redirecting cannot make the server an open
    // redirector (issue 8 item 5): here the authenticator approves everyone. (Updated: this
    // test used StaticUsers, whose never-approved users now get an error page instead; see
    // tests/as_authorize_least_privilege.rs.)
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev"))).await;
    let mut b = Browser::new(&cfg);
    for extra in [
        [("code_challenge", ""), ("code_challenge_method", "")],
        [("code_challenge", ""), ("code_challenge_method", "S256")],
        [("code_challenge_method", "plain"), ("state", "st-1")],
        [("code_challenge_method", ""), ("state", "st-1")],
        [("code_challenge_method", "s256"), ("state", "st-1")],
        [("code_challenge_method", "S512"), ("state", "st-1")],
        [("code_challenge", "short"), ("state", "st-1")],
        [
            (
                "code_challenge",
                "dBjftJeZ4CVP+mB92K27uhbUJU1p1r/wW1gFWFOEjXk",
            ),
            ("state", "st-1"),
        ],
        [
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMx",
            ),
            ("state", "st-1"),
        ],
    ] {
        let res = b.get(&authorize_url(&extra)).await;
        assert_error_redirect(&res, "invalid_request");
    }
    // The plain method with a verifier-as-challenge is refused too (no downgrade).
    let res = b
        .get(&authorize_url(&[
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ]))
        .await;
    assert_error_redirect(&res, "invalid_request");
}

#[tokio::test]
async fn response_type_other_parameters_and_duplicates() {
    // Redirected errors: see `pkce_is_required_and_only_s256` (updated for issue 8 item 5).
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev"))).await;
    let mut b = Browser::new(&cfg);
    assert_error_redirect(
        &b.get(&authorize_url(&[("response_type", "token")])).await,
        "unsupported_response_type",
    );
    assert_error_redirect(
        &b.get(&authorize_url(&[("response_type", "code id_token")]))
            .await,
        "unsupported_response_type",
    );
    assert_error_redirect(
        &b.get(&authorize_url(&[("response_type", "")])).await,
        "invalid_request",
    );
    assert_error_redirect(
        &b.get(&format!("{}&scope=write", authorize_url(&[]))).await,
        "invalid_request",
    );
    assert_error_redirect(
        &b.get(&format!(
            "{}&code_challenge_method=plain",
            authorize_url(&[])
        ))
        .await,
        "invalid_request",
    );
    assert_error_redirect(
        &b.get(&authorize_url(&[("request_uri", "urn:x")])).await,
        "request_uri_not_supported",
    );
    // A duplicated state cannot be echoed: the error carries none.
    let res = b.get(&format!("{}&state=other", authorize_url(&[]))).await;
    assert_eq!(res.status, StatusCode::FOUND);
    let p = res.redirect_params();
    assert_eq!(p["error"], "invalid_request");
    assert!(!p.contains_key("state"));
    assert_eq!(p["iss"], ISSUER);
}

#[tokio::test]
async fn resource_must_be_ours_and_defaults_to_the_canonical_one() {
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev"))).await;
    let mut b = Browser::new(&cfg);
    for other in [
        "https://other.example.com/mcp",
        "http://127.0.0.1:8000/mcp/",
        "http://127.0.0.1:8000",
    ] {
        let res = b.get(&authorize_url(&[("resource", other)])).await;
        assert_error_redirect(&res, "invalid_target");
    }
    let res = b
        .get(&format!(
            "{}&resource={}",
            authorize_url(&[]),
            form_urlencoded::byte_serialize(format!("{RESOURCE}2").as_bytes()).collect::<String>()
        ))
        .await;
    assert_error_redirect(&res, "invalid_target");

    let res = b.get(&authorize_url(&[("resource", "")])).await;
    let code = code_record(&cfg, &res.redirect_params()["code"]).await;
    assert_eq!(code.resource, RESOURCE);
    let second = format!("{RESOURCE}2");
    let res = b.get(&authorize_url(&[("resource", &second)])).await;
    let code = code_record(&cfg, &res.redirect_params()["code"]).await;
    assert_eq!(code.resource, second);
}

#[tokio::test]
async fn unknown_scopes_are_dropped_and_none_means_the_defaults() {
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev"))).await;
    let mut b = Browser::new(&cfg);
    for (requested, granted) in [
        ("write bogus openid offline_access", "write"),
        ("openid email profile", "read"),
        ("", "read"),
        ("read  write", "read write"),
        ("bad\"scope write", "write"),
    ] {
        let res = b.get(&authorize_url(&[("scope", requested)])).await;
        assert_eq!(res.status, StatusCode::FOUND, "{requested}");
        let code = code_record(&cfg, &res.redirect_params()["code"]).await;
        assert_eq!(code.scope.to_string(), granted, "{requested}");
    }
}

#[tokio::test]
async fn state_is_echoed_verbatim_and_iss_appended_to_an_existing_query() {
    let cfg = config(
        server()
            .authenticator(InsecureAutoApprove::new("dev"))
            .client(StaticClient::public(
                "q",
                ["https://app.example.com/cb?tenant=a%20b"],
            )),
    )
    .await;
    let mut b = Browser::new(&cfg);
    let state = "a b&c=d/é+%25;\"<x>";
    let res = b
        .get(&authorize_url(&[
            ("client_id", "q"),
            ("redirect_uri", "https://app.example.com/cb?tenant=a%20b"),
            ("state", state),
        ]))
        .await;
    assert_eq!(res.status, StatusCode::FOUND);
    let loc = res.location().unwrap();
    assert!(
        loc.starts_with("https://app.example.com/cb?tenant=a%20b&code="),
        "{loc}"
    );
    let p = res.redirect_params();
    assert_eq!(p["state"], state);
    assert_eq!(p["iss"], ISSUER);
    assert_eq!(p["tenant"], "a b");
    // No state sent: none returned.
    let res = b
        .get(&authorize_url(&[
            ("client_id", "q"),
            ("redirect_uri", "https://app.example.com/cb?tenant=a%20b"),
            ("state", ""),
        ]))
        .await;
    assert!(!res.redirect_params().contains_key("state"));
}

// ---------------------------------------------------------------------------------------
// Authenticators and consent
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn insecure_auto_approve_answers_get_authorize_with_the_code() {
    let cfg = config(server().authenticator(InsecureAutoApprove::new("dev-user"))).await;
    let mut b = Browser::new(&cfg);
    let res = b.get(&authorize_url(&[])).await;
    assert_eq!(res.status, StatusCode::FOUND);
    let p = res.redirect_params();
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], ISSUER);
    let code = code_record(&cfg, &p["code"]).await;
    assert_eq!(code.subject, "dev-user");
    // POST /authorize works the same.
    let challenge = challenge(VERIFIER);
    let res = b
        .post(
            "/authorize",
            &[
                ("response_type", "code"),
                ("client_id", "c1"),
                ("redirect_uri", "http://127.0.0.1:49152/callback"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "st-1"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert!(res.redirect_params().contains_key("code"));
}

#[tokio::test]
async fn host_session_redirects_strangers_and_shows_consent_to_known_users() {
    let auth = HostSession::new("/login", |parts: &http::request::Parts| {
        let known = parts
            .headers
            .get("cookie")
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.contains("session=alice"));
        async move {
            known.then(|| {
                User::new("alice")
                    .with_display_name("Alice")
                    .with_claim("email", "alice@example.com".into())
            })
        }
    });
    let cfg = config(server().authenticator(auth)).await;
    let mut b = Browser::new(&cfg);
    let res = b.get(&authorize_url(&[])).await;
    assert_eq!(res.status, StatusCode::FOUND);
    let loc = res.location().unwrap();
    assert!(loc.starts_with("/login?return_to=%2Fauthorize%3F"), "{loc}");

    // prompt=none without a session: login_required, shown as a page (updated for issue 8
    // item 5: nobody known approved this client, so the server does not redirect).
    let res = b.get(&authorize_url(&[("prompt", "none")])).await;
    res.assert_error_page();
    assert!(res.body.contains("login_required"), "{}", res.body);

    b.cookies.insert("session".into(), "alice".into());
    let consent = b.get(&authorize_url(&[])).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(consent.body.contains("Alice"));
    let done = b.decide(&consent, "approve").await;
    let code = code_record(&cfg, &done.redirect_params()["code"]).await;
    assert_eq!(code.subject, "alice");
    assert_eq!(code.claims["email"], "alice@example.com");
    // prompt=none with a session but no remembered consent: consent_required, as a page
    // (updated for issue 8 item 5: no remembered approval of this client).
    let res = b.get(&authorize_url(&[("prompt", "none")])).await;
    res.assert_error_page();
    assert!(res.body.contains("consent_required"), "{}", res.body);

    // Once the user's approval is remembered, errors go back to the client again.
    let cfg = config(
        server()
            .authenticator(session_alice())
            .remember_consent(true),
    )
    .await;
    let mut b = Browser::new(&cfg);
    b.cookies.insert("session".into(), "alice".into());
    let consent = b.get(&authorize_url(&[])).await;
    assert_eq!(
        b.decide(&consent, "approve").await.status,
        StatusCode::FOUND
    );
    let res = b
        .get(&authorize_url(&[
            ("scope", "read write"),
            ("prompt", "none"),
        ]))
        .await;
    assert_error_redirect(&res, "consent_required");
}

/// A host session that knows alice by her cookie.
fn session_alice() -> impl mcp_oauth::authn::UserAuthenticator {
    HostSession::new("/login", |parts: &http::request::Parts| {
        let known = parts
            .headers
            .get("cookie")
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.contains("session=alice"));
        async move { known.then(|| User::new("alice")) }
    })
}

#[tokio::test]
async fn remembered_consent_skips_the_page_for_the_same_or_fewer_scopes() {
    let cfg = config(server().remember_consent(true)).await;
    let mut b = Browser::new(&cfg);
    let consent = b
        .reach_consent(&authorize_url(&[("scope", "read write")]))
        .await;
    assert_eq!(
        b.decide(&consent, "approve").await.status,
        StatusCode::FOUND
    );

    // Same client, fewer scopes: after login straight back to the client (303: the POST
    // carried the password).
    let login = b.get(&authorize_url(&[("scope", "read")])).await;
    let res = b.login(&login, "alice", "pw").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let p = res.redirect_params();
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], ISSUER);
    let code = code_record(&cfg, &p["code"]).await;
    assert_eq!(code.scope.to_string(), "read");

    // prompt=consent asks again.
    let login = b
        .get(&authorize_url(&[("scope", "read"), ("prompt", "consent")]))
        .await;
    let res = b.login(&login, "alice", "pw").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.contains("value=\"approve\""));

    // Without remember_consent nothing is skipped.
    let cfg = config(server()).await;
    let mut b = Browser::new(&cfg);
    let consent = b.reach_consent(&authorize_url(&[])).await;
    assert_eq!(
        b.decide(&consent, "approve").await.status,
        StatusCode::FOUND
    );
    let _ = b.reach_consent(&authorize_url(&[])).await;
}

// ---------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_name_is_escaped_and_loopback_warning_only_for_loopback_clients() {
    let cfg = config(
        server().client(
            StaticClient::public("web", ["https://app.example.com/cb"])
                .with_name("<script>alert('x')</script>"),
        ),
    )
    .await;
    let mut b = Browser::new(&cfg);
    let url = authorize_url(&[
        ("client_id", "web"),
        ("redirect_uri", "https://app.example.com/cb"),
    ]);
    let login = b.get(&url).await;
    assert!(!login.body.contains("<script>"), "{}", login.body);
    assert!(login.body.contains("&#60;script&#62;"), "{}", login.body);
    let consent = b.login(&login, "alice", "pw").await;
    assert!(!consent.body.contains("<script>"));
    assert!(consent.body.contains("&#60;script&#62;"));
    assert!(consent.body.contains("app.example.com"));
    assert!(!consent.body.contains("loopback"), "{}", consent.body);
    // The loopback-only demo client gets the warning.
    let consent = b.reach_consent(&authorize_url(&[])).await;
    assert!(consent.body.contains("loopback"));

    // A dynamically registered name is escaped the same way.
    let reg = b
        .send(
            Request::post("/register")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"redirect_uris":["https://dyn.example.com/cb"],"client_name":"<img src=x onerror=alert(1)>"}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    let id = serde_json::from_str::<serde_json::Value>(&reg.body).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let login = b
        .get(&authorize_url(&[
            ("client_id", &id),
            ("redirect_uri", "https://dyn.example.com/cb"),
        ]))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(!login.body.contains("<img"));
}

#[tokio::test]
async fn https_issuer_uses_a_host_prefixed_secure_cookie() {
    let cfg = config_with(
        server(),
        "https://auth.example.com",
        "https://mcp.example.com/mcp",
    )
    .await;
    let mut b = Browser::new(&cfg);
    let login = b
        .get(&authorize_url(&[(
            "resource",
            "https://mcp.example.com/mcp",
        )]))
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let sc = login.headers["set-cookie"].to_str().unwrap();
    assert!(sc.starts_with("__Host-mcp-oauth-req="), "{sc}");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(sc.contains(attr), "{attr} missing: {sc}");
    }
    assert!(!sc.contains("Domain"), "{sc}");
    assert!(
        login
            .body
            .contains("action=\"https://auth.example.com/authorize/login\"")
    );
    let consent = b.login(&login, "alice", "pw").await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    let done = b.decide(&consent, "approve").await;
    assert_eq!(done.redirect_params()["iss"], "https://auth.example.com");
}

#[tokio::test]
async fn issuer_with_a_path_serves_the_endpoint_under_it() {
    let cfg = config_with(
        server().authenticator(InsecureAutoApprove::new("dev")),
        "http://127.0.0.1:8000/tenant/a",
        RESOURCE,
    )
    .await;
    let mut b = Browser::new(&cfg);
    let url = authorize_url(&[]).replacen("/authorize", "/tenant/a/authorize", 1);
    let res = b.get(&url).await;
    assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
    assert_eq!(
        res.redirect_params()["iss"],
        "http://127.0.0.1:8000/tenant/a"
    );
}

// ---------------------------------------------------------------------------------------
// The code works at the token endpoint
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_code_is_redeemed_at_the_token_endpoint() {
    let cfg = config(server()).await;
    let mut b = Browser::new(&cfg);
    let consent = b
        .reach_consent(&authorize_url(&[("scope", "read write")]))
        .await;
    let done = b.decide(&consent, "approve").await;
    let code = done.redirect_params()["code"].clone();
    let token = b
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:49152/callback"),
                ("code_verifier", VERIFIER),
                ("client_id", "c1"),
                ("resource", RESOURCE),
            ],
        )
        .await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    let body: serde_json::Value = serde_json::from_str(&token.body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");
    let access = body["access_token"].as_str().unwrap();
    // The layer's verifier accepts it for the resource.
    let ctx = cfg.verifier().verify(access).await.unwrap();
    assert_eq!(ctx.subject(), "alice");
    assert_eq!(ctx.audience(), [RESOURCE.to_owned()]);

    // A wrong verifier on a fresh code fails, and a code is single-use.
    let replay = b
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:49152/callback"),
                ("code_verifier", VERIFIER),
                ("client_id", "c1"),
            ],
        )
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
}
