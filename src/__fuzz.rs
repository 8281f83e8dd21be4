//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the property tests in
//! `tests/prop_*.rs`. Not public API: anything here may change in any release.
//!
//! Each function feeds untrusted bytes to the real code that parses them, as a request would
//! reach it, and panics when an invariant every input must keep is broken:
//!
//! - no input makes a handler answer a server error (`5xx`) — the stores here are in memory
//!   and never unavailable, so a `5xx` is a bug;
//! - the OAuth endpoints answer every refusal with an RFC 6749 JSON body that has an `error`;
//! - the JSON-RPC peek always yields at least one message, and a request id is a string, a
//!   number or `null`.
//!
//! The private parsers are reached through thin wrappers (the redirect-URI rules) or through
//! the public routers and layer (the form parsers, the `Authorization` header), so the
//! fuzzers exercise exactly what a request exercises.

use std::cell::RefCell;
use std::fmt;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;
use tower_service::Service as _;

use crate::authn::InsecureAutoApprove;
use crate::keys::{KeyRing, SigningAlgorithm};
use crate::resource::AccessPolicy;
use crate::scope::ScopeSet;
use crate::server::{AuthorizationServer, RateLimit, StaticClient};
use crate::verify::{ApiKeyVerifier, JwtVerifier, TokenVerifier};
use crate::{McpOAuthConfig, McpOAuthLayer, oauth_router};

/// The issuer of the fuzzing harness (loopback, so `InsecureAutoApprove` may run there).
pub const ISSUER: &str = "http://127.0.0.1:3000";
/// The protected resource of the fuzzing harness.
pub const RESOURCE: &str = "http://127.0.0.1:3000/mcp";
/// The redirect URI of the harness's static clients.
pub const REDIRECT: &str = "http://127.0.0.1/callback";
/// A public static client of the harness.
pub const PUBLIC_CLIENT: &str = "app";
/// A confidential static client of the harness (its secret is [`CONFIDENTIAL_SECRET`]),
/// allowed to call `/introspect`.
pub const CONFIDENTIAL_CLIENT: &str = "rs";
/// The secret of [`CONFIDENTIAL_CLIENT`].
pub const CONFIDENTIAL_SECRET: &str = "rs-secret-0123456789abcdef";
/// The API key the layer harness accepts (scope `read`).
pub const API_KEY: &str = "fuzz-key-0123456789";

/// Requests a harness serves before it is rebuilt, so stored codes and clients do not grow
/// without bound over millions of runs.
const REBUILD_EVERY: u32 = 4096;

/// An endpoint of the authorization server that takes untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /authorize?<input>`.
    AuthorizeGet,
    /// `POST /authorize` with the input as a form body (the login/consent form).
    AuthorizePost,
    /// `POST /token` with the input as a form body.
    Token,
    /// `POST /revoke` with the input as a form body.
    Revoke,
    /// `POST /introspect` with the input as a form body.
    Introspect,
    /// `POST /register` with the input as the JSON client metadata.
    Register,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AuthorizeGet => "GET /authorize",
            Self::AuthorizePost => "POST /authorize",
            Self::Token => "POST /token",
            Self::Revoke => "POST /revoke",
            Self::Introspect => "POST /introspect",
            Self::Register => "POST /register",
        })
    }
}

/// What one request through a harness answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// The single-threaded runtime a harness serves (and builds its server) on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

struct Harness {
    rt: tokio::runtime::Runtime,
    app: Router,
    served: u32,
}

impl Harness {
    fn oauth() -> Self {
        let rt = runtime();
        let builder = AuthorizationServer::builder()
            .authenticator(InsecureAutoApprove::new("alice"))
            .client(StaticClient::public(PUBLIC_CLIENT, [REDIRECT]))
            .client(StaticClient::confidential(
                CONFIDENTIAL_CLIENT,
                CONFIDENTIAL_SECRET,
                [REDIRECT],
            ))
            .introspection_clients([CONFIDENTIAL_CLIENT])
            .dynamic_registration(true)
            .register_rate_limit(RateLimit::unlimited())
            .token_rate_limit(RateLimit::unlimited())
            .login_rate_limit(RateLimit::unlimited())
            .authorize_rate_limit(RateLimit::unlimited())
            .login_account_rate_limit(RateLimit::unlimited())
            .login_account_total_rate_limit(RateLimit::unlimited());
        let server = rt
            .block_on(builder.build())
            .expect("the fuzzing authorization server builds");
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer(ISSUER)
            .scope("read", "Read")
            .scope("write", "Write")
            .authorization_server(&server)
            .build()
            .expect("the fuzzing config builds");
        Self {
            rt,
            app: oauth_router(&cfg, &server),
            served: 0,
        }
    }

    fn layer() -> Self {
        let read = ScopeSet::parse("read").expect("scope");
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer(ISSUER)
            .scope("read", "Read")
            .scope("write", "Write")
            .policy(
                AccessPolicy::new()
                    .require_scopes(["read"])
                    .tool_scopes("files_write", ["write"])
                    .resource_scopes("file:///secret", ["write"])
                    .prompt_scopes("admin", ["write"]),
            )
            .verifier(ApiKeyVerifier::new().with_key(API_KEY, "alice", read))
            .build()
            .expect("the fuzzing config builds");
        let app = Router::new()
            .route("/mcp", post(|| async { "ok" }).get(|| async { "ok" }))
            .layer(McpOAuthLayer::new(cfg));
        Self::new(app)
    }

    fn new(app: Router) -> Self {
        Self {
            rt: runtime(),
            app,
            served: 0,
        }
    }

    fn send(&mut self, req: Request<Body>) -> Answer {
        self.served += 1;
        let mut app = self.app.clone();
        self.rt.block_on(async move {
            let res = app.call(req).await.expect("Router is infallible");
            let (parts, body) = res.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("the body is readable")
                .to_vec();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
    }
}

thread_local! {
    static OAUTH: RefCell<Option<Harness>> = const { RefCell::new(None) };
    static LAYER: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness<T>(
    cell: &'static std::thread::LocalKey<RefCell<Option<Harness>>>,
    make: fn() -> Harness,
    f: impl FnOnce(&mut Harness) -> T,
) -> T {
    cell.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.as_ref().is_none_or(|h| h.served >= REBUILD_EVERY) {
            *slot = Some(make());
        }
        f(slot.as_mut().expect("just built"))
    })
}

/// Sends `input` to `endpoint` of an in-memory authorization server (static clients
/// [`PUBLIC_CLIENT`] and [`CONFIDENTIAL_CLIENT`], dynamic registration on, no rate limits,
/// users auto-approved as `alice`) and checks the answer: never a `5xx`, and every refusal
/// of `/token`, `/revoke`, `/introspect` and `/register` is RFC 6749 JSON with an `error`.
/// `basic` adds HTTP Basic authentication of [`CONFIDENTIAL_CLIENT`]. `None` when the input
/// cannot even form an HTTP request (a query `http` refuses).
///
/// # Panics
/// When an invariant is broken (that is the point).
pub fn oauth_request(endpoint: Endpoint, input: &[u8], basic: bool) -> Option<Answer> {
    let (method, uri, content_type) = match endpoint {
        Endpoint::AuthorizeGet => {
            // A query with bytes a URI cannot hold is refused by `http` before the server
            // sees it; percent-encode those so every input reaches the parser.
            let mut query = String::with_capacity(input.len());
            for &b in input {
                if b.is_ascii_graphic() && b != b'#' {
                    query.push(char::from(b));
                } else {
                    query.push_str(&format!("%{b:02X}"));
                }
            }
            (Method::GET, format!("/authorize?{query}"), None)
        }
        Endpoint::AuthorizePost => (
            Method::POST,
            "/authorize".to_owned(),
            Some("application/x-www-form-urlencoded"),
        ),
        Endpoint::Token => (
            Method::POST,
            "/token".to_owned(),
            Some("application/x-www-form-urlencoded"),
        ),
        Endpoint::Revoke => (
            Method::POST,
            "/revoke".to_owned(),
            Some("application/x-www-form-urlencoded"),
        ),
        Endpoint::Introspect => (
            Method::POST,
            "/introspect".to_owned(),
            Some("application/x-www-form-urlencoded"),
        ),
        Endpoint::Register => (
            Method::POST,
            "/register".to_owned(),
            Some("application/json"),
        ),
    };
    let mut req = Request::builder().method(method).uri(uri.as_str());
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    if basic {
        use base64::Engine as _;
        let creds = base64::engine::general_purpose::STANDARD
            .encode(format!("{CONFIDENTIAL_CLIENT}:{CONFIDENTIAL_SECRET}"));
        req = req.header(http::header::AUTHORIZATION, format!("Basic {creds}"));
    }
    let body = if endpoint == Endpoint::AuthorizeGet {
        Body::empty()
    } else {
        Body::from(input.to_vec())
    };
    // A URI `http` refuses never reaches the server.
    let Ok(req) = req.body(body) else {
        return None;
    };
    let answer = with_harness(&OAUTH, Harness::oauth, |h| h.send(req));
    assert!(
        !answer.status.is_server_error(),
        "{endpoint} answered {} to {:?}: {}",
        answer.status,
        String::from_utf8_lossy(input),
        String::from_utf8_lossy(&answer.body)
    );
    let json_endpoint = matches!(
        endpoint,
        Endpoint::Token | Endpoint::Revoke | Endpoint::Introspect | Endpoint::Register
    );
    if json_endpoint && answer.status.is_client_error() {
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{endpoint} answered {} with a body that is not JSON ({e}) to {:?}: {}",
                answer.status,
                String::from_utf8_lossy(input),
                String::from_utf8_lossy(&answer.body)
            )
        });
        assert!(
            body["error"].is_string(),
            "{endpoint} answered {} without an `error` to {:?}: {body}",
            answer.status,
            String::from_utf8_lossy(input)
        );
    }
    Some(answer)
}

/// Sends `POST /mcp` through the resource layer (an API-key verifier accepting [`API_KEY`]
/// with scope `read`; tool `files_write`, resource `file:///secret` and prompt `admin` need
/// `write`). `input` is split at its first `\n`: the first part is the `Authorization`
/// header value (left out when it is not a valid header value), the rest the body. Checks
/// that the layer never answers `5xx`, that a refusal for a missing or bad token is a `401`
/// with a `Bearer` challenge, and that the write-only targets never reach the service.
///
/// # Panics
/// When an invariant is broken.
pub fn layer_request(input: &[u8]) -> Answer {
    let (header, body) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream");
    if let Ok(v) = HeaderValue::from_bytes(header) {
        req = req.header(http::header::AUTHORIZATION, v);
    }
    let req = req
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    let answer = with_harness(&LAYER, Harness::layer, |h| h.send(req));
    assert!(
        !answer.status.is_server_error(),
        "the layer answered {} to {:?}",
        answer.status,
        String::from_utf8_lossy(input)
    );
    if answer.status == StatusCode::UNAUTHORIZED {
        let challenge = answer
            .headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("a 401 without WWW-Authenticate to {input:?}"));
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    if answer.status == StatusCode::OK {
        // The only credential that passes holds `read` alone: a body naming a write-only
        // target must never have reached the service.
        let text = String::from_utf8_lossy(body);
        let names_write_target = text.contains("files_write")
            || text.contains("file:///secret")
            || text.contains("\"admin\"");
        let is_simple = serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object());
        if names_write_target && is_simple {
            // What the MCP service will act on: the method, and the target it reads from
            // `params` (an rmcp server deserialises these fields on their own).
            let v: Value = serde_json::from_slice(body).expect("checked");
            let target = match v["method"].as_str() {
                Some("tools/call") => v["params"]["name"].as_str() == Some("files_write"),
                Some("resources/read" | "resources/subscribe") => {
                    v["params"]["uri"].as_str() == Some("file:///secret")
                }
                Some("prompts/get") => v["params"]["name"].as_str() == Some("admin"),
                _ => false,
            };
            assert!(!target, "a read-only key reached the service for {text}");
        }
    }
    answer
}

/// The JSON-RPC peek of the layer on `body`: the parsed messages (never none), the request
/// id (a string, a number or `null`), and what the messages need under a policy with
/// per-tool, per-resource and per-prompt scopes.
///
/// # Panics
/// When an invariant is broken.
pub fn jsonrpc_body(body: &[u8]) -> String {
    use crate::resource::jsonrpc::{parse_body, request_id, requirement_of};
    let messages = parse_body(body);
    assert!(!messages.is_empty(), "parse_body gave no message");
    let id = request_id(body);
    assert!(
        id.is_null() || id.is_string() || id.is_number(),
        "request id {id}"
    );
    let policy = AccessPolicy::new()
        .require_scopes(["read"])
        .tool_scopes("files_write", ["write"])
        .resource_scopes("file:///secret", ["write"])
        .prompt_scopes("admin", ["write"]);
    let requirement = requirement_of(&policy, &messages);
    format!("{messages:?} {id} {requirement:?}")
}

/// What the `Mcp-Method` / `Mcp-Name` headers said, as the layer reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPeek {
    /// No usable `Mcp-Method` (or a protocol revision before the headers).
    Absent,
    /// The method and the decoded name.
    Present(String, Option<String>),
    /// Duplicated, non-ASCII or undecodable headers, refused by the layer.
    Bad,
}

/// The `Mcp-Method` / `Mcp-Name` header peek on headers made from `input`: one header per
/// line, `name: value` (lines that are not a valid header are left out).
pub fn jsonrpc_headers(input: &[u8]) -> HeaderPeek {
    let mut headers = HeaderMap::new();
    for line in input.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    match crate::resource::jsonrpc::from_headers(&headers) {
        crate::resource::jsonrpc::HeaderTarget::Absent => HeaderPeek::Absent,
        crate::resource::jsonrpc::HeaderTarget::Present(m, n) => HeaderPeek::Present(m, n),
        crate::resource::jsonrpc::HeaderTarget::Bad => HeaderPeek::Bad,
    }
}

/// Whether the authorization server accepts `requested` for a client that registered
/// `registered` (exact match; for `http` loopback URIs any port).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    crate::server::register::redirect_uri_matches(registered, requested)
}

/// Whether dynamic client registration accepts `uri` as a redirect URI, and why not.
///
/// # Errors
/// The reason the URI is refused.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    crate::server::register::check_redirect_uri(uri).map_err(|why| why.to_string())
}

struct Jwt {
    rt: tokio::runtime::Runtime,
    ring: KeyRing,
    verifier: JwtVerifier,
}

thread_local! {
    static JWT: Jwt = {
        let ring = KeyRing::generate(SigningAlgorithm::Es256).expect("a key");
        let verifier = JwtVerifier::builder(ring.clone())
            .issuer(ISSUER)
            .audience(RESOURCE)
            .build()
            .expect("a verifier");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime");
        Jwt { rt, ring, verifier }
    };
}

/// Verifies `input` with a [`JwtVerifier`] for [`ISSUER`] and [`RESOURCE`]. The first byte
/// picks how: `0` (and any even byte) verifies the rest as a compact token as received
/// (header decoding, algorithm and key choice, signature); an odd byte reads the rest as
/// JSON claims and signs them with the verifier's own key first, so claim decoding and
/// validation are reached. Returns whether the token was accepted.
///
/// # Panics
/// When a token with forged or missing claims is accepted.
pub fn jwt(input: &[u8]) -> bool {
    let Some((&mode, rest)) = input.split_first() else {
        return false;
    };
    JWT.with(|j| {
        if mode % 2 == 0 {
            let Ok(token) = std::str::from_utf8(rest) else {
                return false;
            };
            let accepted = j.rt.block_on(j.verifier.verify(token)).is_ok();
            assert!(
                !accepted,
                "a token not signed by the ring was accepted: {token}"
            );
            accepted
        } else {
            let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
                return false;
            };
            let Ok(token) = j.ring.sign("at+jwt", &claims) else {
                return false;
            };
            match j.rt.block_on(j.verifier.verify(&token)) {
                Ok(ctx) => {
                    assert_eq!(claims["iss"], ISSUER, "wrong issuer accepted: {claims}");
                    let aud_ok = claims["aud"] == RESOURCE
                        || claims["aud"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|v| v == RESOURCE));
                    assert!(aud_ok, "wrong audience accepted: {claims}");
                    assert!(claims["exp"].is_number(), "no exp accepted: {claims}");
                    assert_eq!(
                        claims["sub"].as_str(),
                        Some(ctx.subject()),
                        "subject: {claims}"
                    );
                    true
                }
                Err(_) => false,
            }
        }
    })
}
