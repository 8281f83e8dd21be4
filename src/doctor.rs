//! The compliance doctor: fetches a server's discovery documents the way ChatGPT, Claude,
//! VS Code and the SDK clients do and reports every mismatch.
//!
//! Two ways to fetch, the same checks:
//!
//! - over the network (`check`, `check_with`, `run`; feature `doctor`, through
//!   `reqwest`): what a client on another machine sees, proxies and TLS included;
//! - in process ([`check_app`], always available): each request (path and query of the URL,
//!   a `Host` header naming the URL's host and port, the `Origin` where the doctor sends one,
//!   a loopback peer address as `ConnectInfo`) is sent to an axum [`Router`] directly. The
//!   health endpoint (`server::health`) runs it against the mounted app. In process, the
//!   `clock` check (8.) is skipped: the router's answers carry no `Date` (the HTTP server
//!   adds it) and there is no other clock than this machine's to compare with.
//!
//! ```no_run
//! # #[cfg(feature = "doctor")]
//! # async fn run() {
//! let report = mcp_oauth::doctor::check("https://mcp.example.com/mcp").await;
//! println!("{report}");
//! std::process::exit(if report.compliant() { 0 } else { 1 });
//! # }
//! ```
//!
//! What it does, in the clients' order, with the check names of [`Finding::check`]:
//!
//! 1. `challenge`: an unauthenticated MCP `POST` (`initialize`, or for a server that
//!    authenticates lazily a `tools/call`) must answer `401` with a `WWW-Authenticate: Bearer`
//!    challenge carrying `resource_metadata`.
//! 2. `resource_metadata`: the protected-resource metadata (RFC 9728) at the path-inserted
//!    URL (`/.well-known/oauth-protected-resource{path}`) and, as a fallback, the root; the
//!    challenge's URL must be one of them. `resource`: the document's `resource` must equal
//!    the MCP URL **byte for byte** (a trailing slash is a mismatch: clients compare strings).
//!    `authorization_servers`: exactly the issuer clients will use (the first entry).
//! 3. `as_metadata`: the authorization-server metadata at the RFC 8414 path-inserted URL
//!    (`/.well-known/oauth-authorization-server{issuer path}`), then the OpenID Connect
//!    fallbacks (`/.well-known/openid-configuration{path}`, `{path}/.well-known/openid-configuration`);
//!    the RFC 8414 one is required. `issuer`: each document's `issuer` must equal the issuer
//!    named by the resource metadata byte for byte, and must not end with `/`.
//! 4. `pkce`: `S256` in `code_challenge_methods_supported`; `public_clients`: `none` in
//!    `token_endpoint_auth_methods_supported`; `iss`:
//!    `authorization_response_iss_parameter_supported: true`; `registration`: a
//!    `registration_endpoint` or `client_id_metadata_document_supported` (a warning
//!    without either: clients then need a pre-registered id).
//! 5. `cors`: the metadata documents answer a `GET` with an `Origin` with
//!    `Access-Control-Allow-Origin` (browser-based clients, the MCP Inspector).
//! 6. `https`: the MCP URL, the issuer and every endpoint are `https`, or `http` on a loopback
//!    host.
//! 7. `jwks`: the `jwks_uri`, when advertised, serves at least one key with a `kid`.
//! 8. `clock`: the server's `Date` header is within [`MAX_SKEW`] of this machine's clock (a
//!    larger skew makes fresh tokens look expired or not yet valid against the key ring's
//!    signatures' `iat`/`exp`, beyond the verifiers' leeway).
//!
//! [`Report::compliant`] is true when no finding is an [`Severity::Error`]; it is the
//! `oauth_compliant` flag the health endpoint (`server::health`) shows, computed from what
//! the mounted app serves.

use std::fmt;
use std::time::{Duration, SystemTime};

use axum::Router;
use bytes::Bytes;
use http::header::{
    ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, DATE, HOST, HeaderName, ORIGIN,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method};
use serde_json::Value;

/// The largest clock difference the doctor accepts (the verifiers' default leeway).
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Severity {
    /// Some client will fail.
    Error,
    /// Works, but some client may need more (a pre-registered id, say).
    Warning,
}

impl Severity {
    /// `error` or `warning` (the health endpoint's word).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The check's name (`challenge`, `resource`, `issuer`, `pkce`, `cors`, …; see the
    /// [module docs](self)).
    pub check: &'static str,
    /// What is wrong, with the URLs and values involved.
    pub message: String,
}

/// What the doctor found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The MCP URL checked.
    pub url: String,
    /// The issuer found (from the resource metadata), if any.
    pub issuer: Option<String>,
    /// Every URL fetched, in order, with its status (`0`: no answer).
    pub fetched: Vec<(String, u16)>,
    /// Every mismatch, in the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// No [`Severity::Error`] finding: the `oauth_compliant` flag.
    #[must_use]
    pub fn compliant(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// The findings of `check`.
    pub fn findings_of<'a>(&'a self, check: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.check == check)
    }

    fn error(&mut self, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            check,
            message: message.into(),
        });
    }

    fn warn(&mut self, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            check,
            message: message.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mcp-oauth doctor: {}", self.url)?;
        if let Some(issuer) = &self.issuer {
            writeln!(f, "  issuer: {issuer}")?;
        }
        for (url, status) in &self.fetched {
            writeln!(f, "  fetched {url} -> {status}")?;
        }
        for finding in &self.findings {
            let tag = match finding.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "warning",
            };
            writeln!(f, "  {tag} [{}] {}", finding.check, finding.message)?;
        }
        writeln!(
            f,
            "oauth_compliant: {}",
            if self.compliant() { "true" } else { "false" }
        )
    }
}

/// What `--doctor URL` does in the quickstart (and the proxy): [`check`]s `url`, prints the
/// report on standard output and returns the exit code, success when compliant.
///
/// ```no_run
/// # async fn run() -> std::process::ExitCode {
/// mcp_oauth::doctor::run("https://mcp.example.com/mcp").await
/// # }
/// ```
#[cfg(feature = "doctor")]
#[cfg_attr(docsrs, doc(cfg(feature = "doctor")))]
pub async fn run(url: &str) -> std::process::ExitCode {
    let report = check(url).await;
    print!("{report}");
    if report.compliant() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The `Origin` the CORS check sends.
const PROBE_ORIGIN: &str = "https://doctor.mcp-oauth.invalid";

/// The largest answer the network doctor reads (1 MiB): metadata documents and key sets are a
/// few KiB.
#[cfg(feature = "doctor")]
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Checks the MCP endpoint at `url` (the resource URL exactly as clients are given it); see
/// the [module docs](self). Never fails: an unreachable server is a finding.
#[cfg(feature = "doctor")]
#[cfg_attr(docsrs, doc(cfg(feature = "doctor")))]
pub async fn check(url: &str) -> Report {
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let mut r = Report {
                url: url.to_owned(),
                ..Report::default()
            };
            r.error("http", format!("no HTTP client: {e}"));
            return r;
        }
    };
    check_with(&http, url).await
}

/// [`check`] with a client of your own (proxies, custom roots). It should not follow
/// redirects: clients do not for these requests.
#[cfg(feature = "doctor")]
#[cfg_attr(docsrs, doc(cfg(feature = "doctor")))]
pub async fn check_with(http: &reqwest::Client, url: &str) -> Report {
    checks(&Fetch::Net(http), url).await
}

/// The doctor in process: every request goes to `app` (the whole app, as
/// [`AuthorizationServer::mount`](crate::server::AuthorizationServer::mount) builds it)
/// instead of the network; `url` is the MCP URL clients are given, and its origin is what
/// the requests' `Host` header names. The `clock` check is skipped (see the
/// [module docs](self)). Needs no feature.
pub async fn check_app(app: &Router, url: &str) -> Report {
    checks(&Fetch::App(app), url).await
}

/// An answer, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// How the doctor reaches the server.
enum Fetch<'a> {
    /// Over the network.
    #[cfg(feature = "doctor")]
    Net(&'a reqwest::Client),
    /// In process, to this router.
    App(&'a Router),
}

impl Fetch<'_> {
    /// Whether answers crossed a network (and carry the server's `Date`).
    fn network(&self) -> bool {
        match self {
            #[cfg(feature = "doctor")]
            Self::Net(_) => true,
            Self::App(_) => false,
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        match self {
            #[cfg(feature = "doctor")]
            Self::Net(http) => {
                let mut req = http.request(method, url);
                for (name, value) in headers {
                    req = req.header(name, *value);
                }
                if let Some(body) = body {
                    req = req.body(body);
                }
                let mut res = req.send().await.map_err(|e| e.to_string())?;
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                // A document bigger than any real one is refused while it is read, so a
                // hostile server cannot make the doctor hold an endless answer.
                let mut body = Vec::new();
                while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err(format!(
                            "the answer is larger than {} KiB",
                            MAX_ANSWER_BYTES / 1024
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                let body = Bytes::from(body);
                Ok(Answer {
                    status,
                    headers,
                    body,
                })
            }
            Self::App(app) => {
                use http_body_util::BodyExt;
                use tower_service::Service;
                let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
                let host = parsed
                    .host_str()
                    .ok_or_else(|| format!("{url} has no host"))?;
                let host = match parsed.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                };
                let target = match parsed.query() {
                    Some(q) => format!("{}?{q}", parsed.path()),
                    None => parsed.path().to_owned(),
                };
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(target)
                    .header(HOST, host);
                for (name, value) in headers {
                    req = req.header(name, *value);
                }
                let mut req = req
                    .body(axum::body::Body::from(body.unwrap_or_default()))
                    .map_err(|e| e.to_string())?;
                req.extensions_mut().insert(axum::extract::ConnectInfo(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                ));
                let mut svc = (*app).clone();
                if let Err(e) = std::future::poll_fn(|cx| {
                    Service::<http::Request<axum::body::Body>>::poll_ready(&mut svc, cx)
                })
                .await
                {
                    match e {}
                }
                let res = match svc.call(req).await {
                    Ok(res) => res,
                    Err(e) => match e {},
                };
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let body = res
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok(Answer {
                    status,
                    headers,
                    body,
                })
            }
        }
    }
}

/// Every check, through `http`.
async fn checks(http: &Fetch<'_>, url: &str) -> Report {
    let mut r = Report {
        url: url.to_owned(),
        ..Report::default()
    };
    let Ok(parsed) = url::Url::parse(url) else {
        r.error("url", format!("{url} is not a URL"));
        return r;
    };
    https(&mut r, "the MCP URL", url);
    let origin = parsed.origin().ascii_serialization();
    let path = parsed.path().trim_end_matches('/').to_owned();

    // 1. The challenge: on `initialize`, or (a server that authenticates lazily) on a
    // `tools/call`.
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "mcp-oauth-doctor", "version": env!("CARGO_PKG_VERSION")},
    }});
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "mcp-oauth-doctor-probe", "arguments": {}}});
    let mut challenge_metadata = None;
    let mut statuses = Vec::new();
    for body in [&init, &call] {
        let res = match http
            .send(
                Method::POST,
                url,
                &[
                    (ACCEPT, "application/json, text/event-stream"),
                    (CONTENT_TYPE, "application/json"),
                    (
                        HeaderName::from_static("mcp-protocol-version"),
                        "2025-11-25",
                    ),
                ],
                Some(body.to_string().into_bytes()),
            )
            .await
        {
            Ok(res) => res,
            Err(e) => {
                r.fetched.push((format!("POST {url}"), 0));
                r.error("challenge", format!("POST {url} failed: {e}"));
                return r;
            }
        };
        r.fetched.push((format!("POST {url}"), res.status));
        clock(http, &mut r, &res);
        statuses.push(res.status);
        if res.status != 401 {
            continue;
        }
        match res
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
        {
            None => r.error("challenge", "the 401 has no WWW-Authenticate header"),
            Some(h) => {
                if !h.trim_start().to_ascii_lowercase().starts_with("bearer") {
                    r.error(
                        "challenge",
                        format!("WWW-Authenticate is not a Bearer challenge: {h}"),
                    );
                }
                challenge_metadata = auth_param(h, "resource_metadata");
                if challenge_metadata.is_none() {
                    r.error(
                        "challenge",
                        format!("WWW-Authenticate has no resource_metadata (RFC 9728 §5.1): {h}"),
                    );
                }
            }
        }
        break;
    }
    if !statuses.contains(&401) {
        r.error(
            "challenge",
            format!("unauthenticated POSTs to {url} (initialize, tools/call) answered {statuses:?}: clients expect 401 with WWW-Authenticate"),
        );
    }

    // 2. The protected-resource metadata.
    let inserted = format!("{origin}/.well-known/oauth-protected-resource{path}");
    let root = format!("{origin}/.well-known/oauth-protected-resource");
    if let Some(c) = &challenge_metadata
        && *c != inserted
        && *c != root
    {
        r.warn(
            "resource_metadata",
            format!("the challenge names {c}, neither {inserted} nor {root}"),
        );
    }
    let mut prm = None;
    for candidate in [
        Some(inserted.clone()),
        challenge_metadata.clone(),
        Some(root.clone()),
    ]
    .into_iter()
    .flatten()
    {
        if r.fetched.iter().any(|(u, _)| *u == candidate) {
            continue;
        }
        if let Some(doc) = fetch_json(http, &mut r, &candidate, true).await {
            if candidate == inserted || prm.is_none() {
                prm.get_or_insert((candidate.clone(), doc));
            }
        } else if candidate == inserted && !path.is_empty() {
            r.error(
                "resource_metadata",
                format!("no protected-resource metadata at the path-inserted {inserted} (Claude, the SDKs and VS Code try it first)"),
            );
        }
    }
    let Some((prm_url, prm)) = prm else {
        r.error("resource_metadata", "no protected-resource metadata found");
        return r;
    };
    match prm.get("resource").and_then(Value::as_str) {
        Some(res) if res == url => {}
        Some(res) => r.error(
            "resource",
            format!("{prm_url} says resource {res:?}, the MCP URL is {url:?} (compared byte for byte, trailing slash included)"),
        ),
        None => r.error("resource", format!("{prm_url} has no resource")),
    }
    let Some(issuer) = prm
        .get("authorization_servers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        r.error(
            "authorization_servers",
            format!("{prm_url} names no authorization server"),
        );
        return r;
    };
    r.issuer = Some(issuer.clone());
    https(&mut r, "the issuer", &issuer);
    if issuer.ends_with('/') {
        r.error(
            "issuer",
            format!("the issuer {issuer:?} ends with a slash: clients build the metadata URL without it and compare issuer strings byte for byte"),
        );
    }

    // 3. The authorization-server metadata.
    let Ok(issuer_url) = url::Url::parse(&issuer) else {
        r.error("issuer", format!("the issuer {issuer:?} is not a URL"));
        return r;
    };
    let as_origin = issuer_url.origin().ascii_serialization();
    let ipath = issuer_url.path().trim_end_matches('/').to_owned();
    let rfc8414 = format!("{as_origin}/.well-known/oauth-authorization-server{ipath}");
    let mut oidc = vec![format!(
        "{as_origin}/.well-known/openid-configuration{ipath}"
    )];
    if !ipath.is_empty() {
        oidc.push(format!(
            "{as_origin}{ipath}/.well-known/openid-configuration"
        ));
    }
    let mut metadata = None;
    match fetch_json(http, &mut r, &rfc8414, true).await {
        Some(doc) => metadata = Some((rfc8414.clone(), doc)),
        None => r.error(
            "as_metadata",
            format!("no authorization-server metadata at the RFC 8414 URL {rfc8414}"),
        ),
    }
    for u in &oidc {
        if let Some(doc) = fetch_json(http, &mut r, u, false).await {
            check_issuer(&mut r, u, &doc, &issuer);
            metadata.get_or_insert((u.clone(), doc));
        }
    }
    let Some((meta_url, meta)) = metadata else {
        return r;
    };
    check_issuer(&mut r, &meta_url, &meta, &issuer);

    // 4. What the clients need of it.
    let has = |field: &str, value: &str| {
        meta.get(field)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(value)))
    };
    if !has("code_challenge_methods_supported", "S256") {
        r.error(
            "pkce",
            format!("{meta_url}: S256 is not in code_challenge_methods_supported (clients refuse a server without it)"),
        );
    }
    if !has("token_endpoint_auth_methods_supported", "none") {
        r.error(
            "public_clients",
            format!("{meta_url}: none is not in token_endpoint_auth_methods_supported (public clients such as Claude and VS Code cannot use the token endpoint)"),
        );
    }
    if meta.get("authorization_response_iss_parameter_supported") != Some(&Value::Bool(true)) {
        r.error(
            "iss",
            format!("{meta_url}: authorization_response_iss_parameter_supported is not true (RFC 9207 mix-up defence)"),
        );
    }
    if meta.get("registration_endpoint").is_none()
        && meta.get("client_id_metadata_document_supported") != Some(&Value::Bool(true))
    {
        r.warn(
            "registration",
            format!("{meta_url}: neither registration_endpoint nor client_id_metadata_document_supported: clients need a pre-registered client id"),
        );
    }
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ] {
        if let Some(u) = meta.get(field).and_then(Value::as_str) {
            https(&mut r, field, u);
        }
    }
    for field in ["authorization_endpoint", "token_endpoint"] {
        if meta.get(field).and_then(Value::as_str).is_none() {
            r.error("as_metadata", format!("{meta_url} has no {field}"));
        }
    }

    // 5. CORS on the metadata.
    for u in [&prm_url, &meta_url] {
        cors(http, &mut r, u).await;
    }

    // 7. The key set.
    if let Some(jwks) = meta.get("jwks_uri").and_then(Value::as_str) {
        match fetch_json(http, &mut r, jwks, false).await {
            Some(set) => {
                let keys = set.get("keys").and_then(Value::as_array);
                if !keys.is_some_and(|k| k.iter().any(|k| k.get("kid").is_some())) {
                    r.error("jwks", format!("{jwks} serves no key with a kid"));
                }
            }
            None => r.error("jwks", format!("{jwks} does not serve a key set")),
        }
    }
    r
}

/// `issuer` of `doc` (fetched from `url`) against the expected one.
fn check_issuer(r: &mut Report, url: &str, doc: &Value, expected: &str) {
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == expected => {}
        Some(i) => r.error(
            "issuer",
            format!("{url} says issuer {i:?}, the resource metadata names {expected:?} (compared byte for byte)"),
        ),
        None => r.error("issuer", format!("{url} has no issuer")),
    }
}

/// GETs `url` as JSON; `None` when it is not a 200 JSON object (a finding when `required`
/// and the answer is not JSON; a missing document is the caller's to judge).
async fn fetch_json(http: &Fetch<'_>, r: &mut Report, url: &str, required: bool) -> Option<Value> {
    match http.send(Method::GET, url, &[], None).await {
        Ok(res) => {
            r.fetched.push((url.to_owned(), res.status));
            clock(http, r, &res);
            if !(200..300).contains(&res.status) {
                return None;
            }
            match serde_json::from_slice::<Value>(&res.body) {
                Ok(v) if v.is_object() => Some(v),
                _ => {
                    if required {
                        r.error("json", format!("{url} is not a JSON object"));
                    }
                    None
                }
            }
        }
        Err(e) => {
            r.fetched.push((url.to_owned(), 0));
            if required {
                r.error("http", format!("GET {url} failed: {e}"));
            }
            None
        }
    }
}

async fn cors(http: &Fetch<'_>, r: &mut Report, url: &str) {
    match http
        .send(Method::GET, url, &[(ORIGIN, PROBE_ORIGIN)], None)
        .await
    {
        Ok(res) => {
            let allowed = res
                .headers
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "*" || v == PROBE_ORIGIN);
            if !allowed {
                r.error(
                    "cors",
                    format!("GET {url} with an Origin gets no Access-Control-Allow-Origin (browser-based clients and the MCP Inspector cannot read it)"),
                );
            }
        }
        Err(e) => r.error("cors", format!("GET {url} with an Origin failed: {e}")),
    }
}

/// `https`, or `http` on a loopback host.
fn https(r: &mut Report, what: &str, url: &str) {
    let ok = match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => u.host_str().is_some_and(crate::net::is_loopback_host),
        _ => false,
    };
    if !ok {
        r.error(
            "https",
            format!("{what} {url} is neither https nor http on a loopback host"),
        );
    }
}

/// Compares the response's `Date` with this machine's clock (once per report; over the
/// network only).
fn clock(http: &Fetch<'_>, r: &mut Report, res: &Answer) {
    if !http.network()
        || r.findings.iter().any(|f| f.check == "clock")
        || r.fetched.iter().filter(|(_, s)| *s != 0).count() > 1
    {
        return;
    }
    let Some(date) = res.headers.get(DATE).and_then(|v| v.to_str().ok()) else {
        r.warn(
            "clock",
            "the server sends no Date header: clock skew not checked",
        );
        return;
    };
    let Some(theirs) = parse_http_date(date) else {
        r.warn("clock", format!("unreadable Date header {date:?}"));
        return;
    };
    let ours = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let skew = theirs.abs_diff(ours);
    if skew > MAX_SKEW.as_secs() {
        r.error(
            "clock",
            format!("the server's clock is {skew} s off this machine's (Date: {date}): tokens signed there look expired or not yet valid beyond the {} s leeway", MAX_SKEW.as_secs()),
        );
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm), for years after 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The value of the auth-param `name` in a challenge (quoted or token form).
fn auth_param(header: &str, name: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before = lower[..start].trim_end();
        if !(before.ends_with(',') || before.ends_with("bearer")) {
            continue;
        }
        let rest = header[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out),
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            }
            return None;
        }
        return Some(rest.split([',', ' ']).next().unwrap_or_default().to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn challenge_params() {
        let h = r#"Bearer error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp", scope="x""#;
        assert_eq!(
            auth_param(h, "resource_metadata").as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            auth_param("Bearer resource_metadata=https://x/y", "resource_metadata").as_deref(),
            Some("https://x/y")
        );
        assert_eq!(auth_param("Bearer realm=\"x\"", "resource_metadata"), None);
    }
}
