use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http::header::{AUTHORIZATION, ORIGIN, VARY};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::challenge::AuthRejection;
use super::jsonrpc::{self, HeaderTarget};
use super::policy::Requirement;
use super::session::{SessionBindings, SessionKey, SessionOwner};
use super::shape::{self, ChallengeStyle};
use crate::config::{Inner, McpOAuthConfig};
use crate::context::AuthContext;
use crate::scope::ScopeSet;
use crate::store::StoreError;
use crate::verify::VerifyError;

/// Largest JSON `tools/list` result the layer rewrites to add `securitySchemes` (4 MiB);
/// larger ones pass unchanged.
const DEFAULT_SHAPE_LIMIT: usize = 4 * 1024 * 1024;

/// Longest `Authorization` header value the layer reads (8 KiB).
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a request that went through the layer; extractors read it to tell "no token on a
/// public call" from "the layer is not installed", and to honour the scope hierarchy.
#[derive(Clone)]
pub(crate) struct LayerState(pub(crate) Arc<Inner>);

/// Protects an MCP endpoint: verifies bearer tokens, applies the [`AccessPolicy`] and answers
/// refusals with the challenges MCP clients act on. See the [module docs](crate::resource).
///
/// Most apps do not compose it by hand: [`mount`](crate::mount)`(&cfg, mcp)` (or
/// `server.mount(&cfg, mcp)` with the embedded authorization server) puts the MCP service
/// behind it and the OAuth endpoints beside it. Composed by hand, the order does not matter
/// for the crate's own endpoints: the layer lets exactly their paths through.
///
/// [`AccessPolicy`]: crate::resource::AccessPolicy
#[derive(Clone)]
#[must_use]
pub struct McpOAuthLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for McpOAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpOAuthLayer")
            .field("resources", &self.inner.resources)
            .finish()
    }
}

impl McpOAuthLayer {
    /// A layer enforcing `config` (pass the config or a reference to it).
    pub fn new(config: impl Into<McpOAuthConfig>) -> Self {
        Self {
            inner: config.into().inner,
        }
    }
}

impl<S> Layer<S> for McpOAuthLayer {
    type Service = McpOAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        McpOAuth {
            inner,
            config: self.inner.clone(),
        }
    }
}

/// The service [`McpOAuthLayer`] produces.
#[derive(Clone)]
#[must_use]
pub struct McpOAuth<S> {
    inner: S,
    config: Arc<Inner>,
}

impl<S> std::fmt::Debug for McpOAuth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpOAuth")
            .field("resources", &self.config.resources)
            .finish_non_exhaustive()
    }
}

impl<S> McpOAuth<S> {
    /// Wraps `inner` with `config`.
    pub fn new(inner: S, config: McpOAuthConfig) -> Self {
        Self {
            inner,
            config: config.inner,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The bearer token of a request, or why there is none.
enum Bearer {
    None,
    Token(String),
    Bad(AuthRejection),
}

fn bearer(headers: &HeaderMap, scope: &ScopeSet) -> Bearer {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::None;
    };
    if values.next().is_some() {
        return Bearer::Bad(AuthRejection::InvalidRequest(
            "More than one Authorization header",
        ));
    }
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Bearer::Bad(AuthRejection::InvalidToken {
            error: VerifyError::Malformed,
            scope: scope.clone(),
        });
    }
    let bytes = value.as_bytes();
    let is_bearer = bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"bearer");
    if !is_bearer || (bytes.len() > 6 && bytes[6] != b' ') {
        // Another scheme (Basic, DPoP, …): as far as bearer auth goes, no credentials.
        return Bearer::None;
    }
    let token = trim_spaces(&bytes[6..]);
    if token.is_empty() {
        return Bearer::Bad(AuthRejection::InvalidRequest("The bearer token is empty"));
    }
    // RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" followed by "="s.
    // One pass over the bytes through a table; being ASCII, the token is then valid UTF-8.
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let ok = body_len > 0 && token[..body_len].iter().all(|&b| B64TOKEN[usize::from(b)]);
    match (ok, std::str::from_utf8(token)) {
        (true, Ok(token)) => Bearer::Token(token.to_owned()),
        _ => Bearer::Bad(AuthRejection::InvalidToken {
            error: VerifyError::Malformed,
            scope: scope.clone(),
        }),
    }
}

/// `bytes` without leading and trailing spaces.
fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The RFC 6750 `b64token` characters before the trailing `=`s.
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    table
};

/// Whether the query string carries an `access_token` parameter, named any way a framework
/// behind the layer could read as that name ([`query_name_forms`]), after `&` or `;`.
fn query_has_token(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split(['&', ';'])
            .filter_map(|pair| pair.split('=').next())
            .any(|name| query_name_forms(name).iter().any(|f| f == "access_token"))
    })
}

/// The names a web framework may read the raw query parameter name `raw` as, normalised:
/// percent-decoded with `+` taken both as itself and as a space, ASCII case folded, and `.`,
/// space and `[` read as `_` (as PHP does). Two names that share a form may be read as the
/// same parameter by some framework, so a rule about one name must refuse all of them: the
/// layer refuses `access_token` in the query this way, and `mcp-oauth-proxy` the parameters
/// its upstream URL sets.
///
/// ```
/// use mcp_oauth::resource::query_name_forms;
///
/// assert!(query_name_forms("access%5Ftoken").contains(&"access_token".to_owned()));
/// assert!(query_name_forms("Access.Token").contains(&"access_token".to_owned()));
/// assert!(query_name_forms("access+token").contains(&"access_token".to_owned()));
/// assert!(!query_name_forms("my_access_token").contains(&"access_token".to_owned()));
/// ```
#[must_use]
pub fn query_name_forms(raw: &str) -> Vec<String> {
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(s.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default()
    };
    let normalise = |s: String| -> String {
        s.chars()
            .map(|c| match c {
                '.' | ' ' | '[' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    let mut forms = vec![
        normalise(decode(&raw.replace('+', "%2B"))),
        normalise(decode(raw)),
    ];
    forms.dedup();
    forms
}

/// Which resource a request is for (issue 8 item 3).
///
/// A single resource protects whatever the layer wraps: routes beside the MCP endpoint share
/// its tokens, and a proxy may strip a path prefix. With several, the request's path must
/// lie under one of theirs by whole segments, the longest match winning: `/b/mcp`,
/// `/b/mcp/` and `/b/mcp/x` belong to `/b/mcp`, `/b/mcpx` to none. Resources that share a
/// path are told apart by the `Host` header (or the HTTP/2 authority). `None` (refused with `404`) when no resource,
/// or more than one, fits: a request is never judged as the first resource by default.
fn resource_index(
    inner: &Inner,
    req_path: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Option<usize> {
    if inner.resource_paths.len() <= 1 {
        return Some(0);
    }
    // A path that means another one once normalised could be judged as one resource and
    // served as another by whatever normalises it behind the layer: under none.
    if !is_plain_path(req_path) {
        return None;
    }
    let longest = inner
        .resource_paths
        .iter()
        .filter(|p| path_under(req_path, p))
        .map(|p| p.trim_end_matches('/').len())
        .max()?;
    let mut candidates = inner
        .resource_paths
        .iter()
        .enumerate()
        .filter(|(_, p)| path_under(req_path, p) && p.trim_end_matches('/').len() == longest)
        .map(|(i, _)| i);
    let first = candidates.next()?;
    let Some(second) = candidates.next() else {
        return Some(first);
    };
    let host = request_host(headers, authority)?;
    let mut by_host = [first, second]
        .into_iter()
        .chain(candidates)
        .filter(|&i| authority_of(&inner.resources[i]).eq_ignore_ascii_case(host));
    match (by_host.next(), by_host.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// The host a request names, to tell apart resources that share a path: the HTTP/1.1
/// `Host` or the HTTP/2 `:authority` in the URI. Every other place a host is named
/// (`X-Forwarded-Host`, `Forwarded: host=`, a second `Host`) must agree with it, or the
/// layer could judge the request as one resource while the service behind, reading another
/// of them, serves the other: `None` then, and the request is under no resource.
pub(crate) fn request_host<'h>(
    headers: &'h HeaderMap,
    authority: Option<&'h str>,
) -> Option<&'h str> {
    let mut named: Vec<&str> = Vec::new();
    for value in headers
        .get_all(http::header::HOST)
        .iter()
        .chain(headers.get_all("x-forwarded-host"))
    {
        for host in value.to_str().ok()?.split(',') {
            named.push(host.trim());
        }
    }
    for value in headers.get_all(http::header::FORWARDED) {
        for pair in value.to_str().ok()?.split([',', ';']) {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim().eq_ignore_ascii_case("host")
            {
                named.push(v.trim().trim_matches('"'));
            }
        }
    }
    named.extend(authority);
    let (first, rest) = named.split_first()?;
    rest.iter()
        .all(|h| h.eq_ignore_ascii_case(first))
        .then_some(*first)
}

/// Whether `path` reads the same before and after normalisation: no `.` or `..` segment
/// (written plainly or percent-encoded), no encoded `/`, `\` or `.`, and no raw `\`
/// (which some servers read as `/`). Other percent-encodings are left as they are: the
/// layer and whatever routes behind it both match them literally.
fn is_plain_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return false;
    }
    // `%2E` (`.`), `%2F` (`/`), `%5C` (`\`), in either case.
    let encoded_separator = bytes.windows(3).any(|w| {
        matches!(
            (w[0], w[1], w[2].to_ascii_uppercase()),
            (b'%', b'2', b'E' | b'F') | (b'%', b'5', b'C')
        )
    });
    !encoded_separator && path.split('/').all(|seg| seg != "." && seg != "..")
}

/// Whether `path` is `prefix` or lies below it, by whole segments.
fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `host[:port]` of a URL string.
pub(crate) fn authority_of(url: &str) -> &str {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    rest.split('/').next().unwrap_or(rest)
}

/// Adds CORS headers to a response for an allowed browser origin.
fn apply_cors(response: &mut Response<Body>, origin: &HeaderValue) {
    let h = response.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version"),
    );
    h.append(VARY, HeaderValue::from_static("Origin"));
}

fn preflight(origin: &HeaderValue) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, Accept, Last-Event-ID, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Mcp-Session-Id",
        ),
    );
    h.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    apply_cors(&mut r, origin);
    r
}

fn origin_allowed(inner: &Inner, origin: &HeaderValue) -> bool {
    inner.any_origin
        || origin
            .to_str()
            .is_ok_and(|o| inner.allowed_origins.iter().any(|a| a == o))
}

/// An authorized request and what the response future must record about its session.
type Authorized = (Request<Body>, SessionNote);

type AuthFuture = Pin<Box<dyn Future<Output = Result<Authorized, Response<Body>>> + Send>>;

type RefusalFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Renders a refusal. A JSON-RPC call (`POST`) gets a JSON-RPC error response echoing its
/// request `id`, read from the body (bounded by the peek limit; `null` when unreadable);
/// anything else gets the OAuth error object.
async fn refusal(
    cfg: &Inner,
    resource_idx: usize,
    rejection: AuthRejection,
    req: Request<Body>,
) -> Response<Body> {
    let metadata = &cfg.metadata_urls[resource_idx];
    if req.method() != Method::POST {
        return rejection.into_response(metadata);
    }
    let id = match http_body_util::Limited::new(req.into_body(), cfg.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => jsonrpc::request_id(&c.to_bytes()),
        Err(_) => serde_json::Value::Null,
    };
    rejection.into_jsonrpc_response(metadata, id)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for McpOAuth<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let cfg = self.config.clone();
        let req = req.map(Body::new);

        let path = req
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| req.uri().path().to_owned(), |o| o.0.path().to_owned());
        // 0. The crate's own endpoints (metadata, and the embedded authorization server's),
        // whatever the mount order: exactly these paths, byte for byte, pass unguarded (they
        // answer their own CORS). A near miss (`/token/`, `/TOKEN`, `/x/../token`) does not.
        if crate::paths::is_exempt(&cfg.own_paths, &path) {
            return ResponseFuture::call(service, req, None);
        }
        let resource = resource_index(
            &cfg,
            &path,
            req.headers(),
            req.uri().authority().map(http::uri::Authority::as_str),
        );
        let idx = resource.unwrap_or(0);
        let reject = |r: AuthRejection, cors: Option<HeaderValue>, req: Request<Body>| {
            let cfg = cfg.clone();
            ResponseFuture::refusing(
                Box::pin(async move { refusal(&cfg, idx, r, req).await }),
                cors,
            )
        };

        // 1. Origin (DNS rebinding) and CORS preflight.
        let cors = match req.headers().get(ORIGIN) {
            Some(origin) if origin_allowed(&cfg, origin) => Some(origin.clone()),
            // A foreign page's body is not read: the JSON-RPC error carries no `id`.
            Some(_) => {
                return ResponseFuture::done(
                    AuthRejection::OriginNotAllowed.into_response(&cfg.metadata_urls[idx]),
                    None,
                );
            }
            None => None,
        };
        if let Some(origin) = &cors
            && req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return ResponseFuture::done(preflight(origin), None);
        }
        // With several resources, a path under none of them is never judged as the first.
        if resource.is_none() {
            return reject(AuthRejection::UnknownResource, cors, req);
        }

        // 2. Credentials: the Authorization header only, never the query string.
        let base = cfg.policy.unknown_requirement();
        let base_scope = match &base {
            Requirement::Token(s) if s.is_empty() => cfg.default_scopes.clone(),
            Requirement::Token(s) => s.clone(),
            Requirement::Public => ScopeSet::new(),
        };
        if query_has_token(req.uri()) {
            return reject(
                AuthRejection::InvalidRequest("Access tokens are not accepted in the query string"),
                cors,
                req,
            );
        }
        let token = match bearer(req.headers(), &base_scope) {
            Bearer::Bad(r) => return reject(r, cors, req),
            Bearer::None => None,
            Bearer::Token(t) => Some(t),
        };
        // The session the request names, if any: bound to whoever opened it.
        let session = {
            let mut ids = req.headers().get_all(&MCP_SESSION_ID).iter();
            match (ids.next(), ids.next()) {
                (None, _) => None,
                (Some(id), None) => Some(SessionKey::of(id.as_bytes())),
                (Some(_), Some(_)) => {
                    return reject(
                        AuthRejection::InvalidRequest("More than one Mcp-Session-Id header"),
                        cors,
                        req,
                    );
                }
            }
        };
        let is_delete = req.method() == Method::DELETE;

        // 3. What does the request need? Decide without the body when possible.
        let is_call = req.method() == Method::POST;
        let from_headers = if is_call {
            jsonrpc::from_headers(req.headers())
        } else {
            HeaderTarget::Absent
        };
        if from_headers == HeaderTarget::Bad && cfg.policy.needs_method() {
            return reject(AuthRejection::HeaderMismatch, cors, req);
        }
        let from_headers = match from_headers {
            HeaderTarget::Present(m, n) => Some((m, n)),
            HeaderTarget::Absent | HeaderTarget::Bad => None,
        };
        let style = cfg.challenge_style.style_for(req.headers());
        // Trusted 2026-07-28 headers name the method, so the body is read only for what the
        // headers cannot give: the request id of a ChatGPT-style tool-result challenge. A
        // method with a target but no `Mcp-Name` is read from the body.
        let header_method = from_headers.as_ref().map(|(m, _)| m.as_str());
        let trusted = cfg.trust_mcp_headers
            && from_headers
                .as_ref()
                .is_some_and(|(m, n)| jsonrpc::headers_suffice(m, n.is_some()));
        let needs_body = is_call
            && cfg.policy.needs_method()
            && (!trusted
                || (style == ChallengeStyle::ToolResult && header_method == Some("tools/call")));
        let shaper = |caller: Option<AuthContext>| shaper_for(&cfg, caller);
        let shape_by_header =
            trusted && cfg.shape_tools_list && header_method == Some("tools/list");
        if !needs_body {
            let requirement = if !is_call {
                cfg.policy.stream_requirement()
            } else if let (true, Some((m, n))) = (trusted, &from_headers) {
                cfg.policy.requirement(Some(m), n.as_deref())
            } else {
                base
            };
            match (&requirement, &token, &session) {
                (Requirement::Public, None, None) => {
                    let mut req = req;
                    req.extensions_mut().insert(LayerState(cfg.clone()));
                    let mut fut = ResponseFuture::call(service, req, cors);
                    fut.session = Some(SessionNote {
                        bindings: cfg.session_bindings.clone(),
                        work: SessionWork::Issue(None),
                    });
                    if shape_by_header {
                        fut.shape = Some(shaper(None));
                        fut.shape_limit = DEFAULT_SHAPE_LIMIT;
                    }
                    return fut;
                }
                (Requirement::Token(scope), None, _) => {
                    let scope = if scope.is_empty() {
                        cfg.default_scopes.clone()
                    } else {
                        scope.clone()
                    };
                    return reject(AuthRejection::MissingToken { scope }, cors, req);
                }
                _ => {}
            }
            let shape = shape_by_header.then(|| shaper(None));
            let fut = Box::pin(async move {
                let mut req = req;
                let (caller, note) = match authorize(
                    &cfg,
                    idx,
                    requirement,
                    token,
                    &mut req,
                    session.as_ref(),
                    is_delete,
                )
                .await
                {
                    Ok(authorized) => authorized,
                    Err(r) => return Err(refusal(&cfg, idx, r, req).await),
                };
                if let Some(ShapeTools(s)) = shape {
                    let mut s = Arc::unwrap_or_clone(s);
                    s.caller = caller;
                    req.extensions_mut().insert(ShapeTools(Arc::new(s)));
                }
                Ok((req, note))
            });
            return ResponseFuture::authorizing(fut, service, cors);
        }

        // The layer reads the body as the service will; an encoded one it cannot.
        let encoded = req
            .headers()
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return ResponseFuture::done(
                AuthRejection::UnsupportedEncoding
                    .into_jsonrpc_response(&cfg.metadata_urls[idx], serde_json::Value::Null),
                cors,
            );
        }

        let fut: AuthFuture = Box::pin(async move {
            let metadata = &cfg.metadata_urls[idx];
            let (parts, body) = req.into_parts();
            let bytes = match http_body_util::Limited::new(body, cfg.max_body_bytes)
                .collect()
                .await
            {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(AuthRejection::PayloadTooLarge
                        .into_jsonrpc_response(metadata, serde_json::Value::Null));
                }
                Err(_) => {
                    return Err(AuthRejection::InvalidRequest(
                        "The request body could not be read",
                    )
                    .into_jsonrpc_response(metadata, serde_json::Value::Null));
                }
            };
            let messages = jsonrpc::parse_body(&bytes);
            if let Some((method, name)) = &from_headers
                && let [
                    jsonrpc::Message::Call {
                        method: m, name: n, ..
                    },
                ] = messages.as_slice()
                && (m != method || (name.is_some() && n != name))
            {
                return Err(AuthRejection::HeaderMismatch
                    .into_jsonrpc_response(metadata, jsonrpc::request_id(&bytes)));
            }
            let Some(requirement) = jsonrpc::requirement_of(&cfg.policy, &messages) else {
                tracing::debug!(target: "mcp_oauth::rejection", "unreadable JSON-RPC method or target");
                return Err(AuthRejection::UnreadableRequest
                    .into_jsonrpc_response(metadata, jsonrpc::request_id(&bytes)));
            };
            let single = match messages.as_slice() {
                [jsonrpc::Message::Call { method, .. }] => Some(method.as_str()),
                _ => None,
            };
            let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
            let (caller, note) = match authorize(
                &cfg,
                idx,
                requirement,
                token,
                &mut req,
                session.as_ref(),
                is_delete,
            )
            .await
            {
                Ok(authorized) => authorized,
                Err(rejection) => {
                    let credential_refusal = matches!(
                        rejection,
                        AuthRejection::MissingToken { .. }
                            | AuthRejection::InvalidToken { .. }
                            | AuthRejection::InsufficientScope { .. }
                    );
                    let id = jsonrpc::request_id(&bytes);
                    if style == ChallengeStyle::ToolResult
                        && credential_refusal
                        && single == Some("tools/call")
                    {
                        return Err(shape::tool_result_challenge(&rejection, id, metadata));
                    }
                    return Err(rejection.into_jsonrpc_response(metadata, id));
                }
            };
            if cfg.shape_tools_list && single == Some("tools/list") {
                req.extensions_mut().insert(shaper_for(&cfg, caller));
            }
            Ok((req, note))
        });
        ResponseFuture::authorizing(fut, service, cors)
    }
}

fn shaper_for(cfg: &Arc<Inner>, caller: Option<AuthContext>) -> ShapeTools {
    ShapeTools(Arc::new(shape::ToolsListShaper {
        cfg: cfg.clone(),
        caller,
    }))
}

/// Asks the response future to add `securitySchemes` to a `tools/list` result.
#[derive(Clone)]
struct ShapeTools(Arc<shape::ToolsListShaper>);

/// The `Mcp-Session-Id` header (request and response).
const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");

/// What the response future does about sessions once the service has answered.
#[derive(Clone)]
struct SessionNote {
    bindings: Arc<dyn SessionBindings>,
    work: SessionWork,
}

#[derive(Clone)]
enum SessionWork {
    /// The request named no session: a session id in a successful response was issued to
    /// this caller (`None`: anonymous). The owner is built only when a session is issued.
    Issue(Option<AuthContext>),
    /// The request named this session: forget it when the service deleted it (`DELETE`
    /// answered with success) or does not know it (`404`).
    Known { key: SessionKey, delete: bool },
}

impl SessionNote {
    /// The store work this response calls for, or the response back when there is none.
    fn after(self, response: Response<Body>) -> AfterResponse {
        let status = response.status();
        match self.work {
            SessionWork::Issue(caller) => {
                if !status.is_success() {
                    return AfterResponse::Respond(response);
                }
                let mut ids = response.headers().get_all(&MCP_SESSION_ID).iter();
                let key = match (ids.next(), ids.next()) {
                    (Some(id), None) => SessionKey::of(id.as_bytes()),
                    _ => return AfterResponse::Respond(response),
                };
                let owner = SessionOwner::of(caller.as_ref());
                AfterResponse::Record(Box::pin(async move {
                    match self.bindings.bind(&key, &owner).await {
                        Ok(_) => response,
                        Err(error) => {
                            // Unrecorded, the session would answer 404 to its owner; say
                            // so now rather than hand out a session nobody can use.
                            tracing::warn!(target: "mcp_oauth::rejection", %error, "cannot record the session's owner");
                            AuthRejection::Unavailable.into_response("")
                        }
                    }
                }))
            }
            SessionWork::Known { key, delete } => {
                let gone = (delete && status.is_success()) || status == StatusCode::NOT_FOUND;
                if !gone {
                    return AfterResponse::Respond(response);
                }
                AfterResponse::Record(Box::pin(async move {
                    if let Err(error) = self.bindings.forget(&key).await {
                        tracing::warn!(target: "mcp_oauth::rejection", %error, "cannot forget a deleted session");
                    }
                    response
                }))
            }
        }
    }
}

/// What follows the service's response: session store work that then yields it, or the
/// response itself.
enum AfterResponse {
    Record(RefusalFuture),
    Respond(Response<Body>),
}

fn unavailable(error: StoreError) -> AuthRejection {
    tracing::warn!(target: "mcp_oauth::rejection", %error, "session bindings unavailable");
    #[cfg(feature = "metrics")]
    crate::metrics::store_error(&error);
    AuthRejection::Unavailable
}

/// [`check`], plus the session rules (see [`SessionBindings`]): a request on a session
/// bound to a principal needs that principal's token; an anonymous session is claimed by
/// the first token shown on it; an unknown session is `404`. Returns the caller and what the
/// response future must record.
async fn authorize(
    cfg: &Arc<Inner>,
    resource_idx: usize,
    requirement: Requirement,
    token: Option<String>,
    req: &mut Request<Body>,
    session: Option<&SessionKey>,
    is_delete: bool,
) -> Result<(Option<AuthContext>, SessionNote), AuthRejection> {
    let bindings = &cfg.session_bindings;
    let Some(key) = session else {
        let caller = check(cfg, resource_idx, requirement, token, req, None).await?;
        let note = SessionNote {
            bindings: bindings.clone(),
            work: SessionWork::Issue(caller.clone()),
        };
        return Ok((caller, note));
    };
    let Some(owner) = bindings.get(key).await.map_err(unavailable)? else {
        tracing::debug!(target: "mcp_oauth::rejection", "unknown session");
        return Err(AuthRejection::SessionNotFound);
    };
    let requirement = match owner {
        SessionOwner::Anonymous => requirement,
        // Even a method public under lazy authentication needs the owner's token here.
        _ => requirement.and(Requirement::Token(ScopeSet::new())),
    };
    let caller = check(cfg, resource_idx, requirement, token, req, Some(&owner)).await?;
    if let (SessionOwner::Anonymous, Some(ctx)) = (&owner, &caller) {
        let now = bindings
            .bind(key, &SessionOwner::of(Some(ctx)))
            .await
            .map_err(unavailable)?;
        if !now.is(ctx) {
            // Another principal claimed it first.
            return Err(AuthRejection::SessionNotFound);
        }
    }
    let note = SessionNote {
        bindings: bindings.clone(),
        work: SessionWork::Known {
            key: key.clone(),
            delete: is_delete,
        },
    };
    Ok((caller, note))
}

/// Verifies the token (through the cache) and checks the requirement; on success inserts the
/// [`AuthContext`] and the layer marker into the request and returns the caller.
async fn check(
    cfg: &Arc<Inner>,
    resource_idx: usize,
    requirement: Requirement,
    token: Option<String>,
    req: &mut Request<Body>,
    bound: Option<&SessionOwner>,
) -> Result<Option<AuthContext>, AuthRejection> {
    req.extensions_mut().insert(LayerState(cfg.clone()));
    let needed = match requirement {
        Requirement::Public => None,
        Requirement::Token(s) => Some(s),
    };
    let challenge_scope = || match &needed {
        Some(s) if !s.is_empty() => s.clone(),
        _ => cfg.default_scopes.clone(),
    };
    let Some(token) = token else {
        return match needed {
            None => Ok(None),
            Some(_) => Err(AuthRejection::MissingToken {
                scope: challenge_scope(),
            }),
        };
    };
    let ctx = match verify(cfg, &token).await {
        Ok(ctx) => ctx,
        Err(error @ VerifyError::Unavailable { .. }) => {
            tracing::warn!(target: "mcp_oauth::rejection", %error, "token verification unavailable");
            return Err(AuthRejection::Unavailable);
        }
        Err(error) => {
            tracing::debug!(target: "mcp_oauth::rejection", %error, "token refused");
            return Err(AuthRejection::InvalidToken {
                error,
                scope: challenge_scope(),
            });
        }
    };
    // With several resources the verifier accepts any of them as `aud`; the token must name
    // the one this request is for (RFC 8707), or a token minted for one resource would open
    // every other. Tokens without an audience (API keys, introspection answers without
    // `aud`) are bound by their verifier instead.
    if cfg.resources.len() > 1 && !ctx.audience().is_empty() {
        let resource = &cfg.resources[resource_idx];
        if !ctx.audience().iter().any(|a| a == resource) {
            tracing::debug!(target: "mcp_oauth::rejection", %resource, "token is for another resource");
            return Err(AuthRejection::InvalidToken {
                error: VerifyError::WrongAudience,
                scope: challenge_scope(),
            });
        }
    }
    // A session bound to a principal is theirs alone; for anyone else it does not exist.
    if let Some(owner @ SessionOwner::Principal { .. }) = bound
        && !owner.is(&ctx)
    {
        tracing::debug!(target: "mcp_oauth::rejection", "session opened by another principal");
        return Err(AuthRejection::SessionNotFound);
    }
    if let Some(needed) = &needed {
        let missing = cfg.hierarchy.missing(ctx.scopes(), needed);
        if !missing.is_empty() {
            tracing::debug!(target: "mcp_oauth::rejection", %missing, "insufficient scope");
            return Err(AuthRejection::InsufficientScope {
                needed: needed.clone(),
                granted: ctx.scopes().clone(),
            });
        }
    }
    req.extensions_mut().insert(ctx.clone());
    Ok(Some(ctx))
}

async fn verify(cfg: &Inner, token: &str) -> Result<AuthContext, VerifyError> {
    if let Some(cache) = &cfg.cache {
        let hit = cache.get(token);
        #[cfg(feature = "metrics")]
        crate::metrics::token_cache(hit.is_some());
        if let Some(ctx) = hit {
            cfg.verifier.recheck(&ctx).await?;
            return Ok(ctx);
        }
        let ctx = timed_verify(cfg, token).await?;
        crate::audit::token_accepted(&ctx);
        let ttl = cfg.cache_max_ttl.min(cfg.verifier.cache_ttl());
        cache.insert(token, ctx.clone(), ttl);
        return Ok(ctx);
    }
    let ctx = timed_verify(cfg, token).await?;
    crate::audit::token_accepted(&ctx);
    Ok(ctx)
}

/// The verifier's answer, timed for the `mcp_oauth_layer_verify_seconds` histogram
/// (feature `metrics`).
async fn timed_verify(cfg: &Inner, token: &str) -> Result<AuthContext, VerifyError> {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let result = cfg.verifier.verify(token).await;
    #[cfg(feature = "metrics")]
    crate::metrics::layer_verified(started.elapsed(), result.is_ok());
    result
}

pin_project! {
    /// The response future of [`McpOAuth`].
    pub struct ResponseFuture<S: Service<Request<Body>>> {
        #[pin]
        state: State<S::Future>,
        service: Option<S>,
        cors: Option<HeaderValue>,
        shape: Option<ShapeTools>,
        shape_limit: usize,
        session: Option<SessionNote>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Authorizing { fut: AuthFuture },
        Refusing { fut: RefusalFuture },
        Calling { #[pin] fut: F },
        Done { response: Option<Response<Body>> },
    }
}

impl<S: Service<Request<Body>>> ResponseFuture<S> {
    fn done(response: Response<Body>, cors: Option<HeaderValue>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
            service: None,
            cors,
            shape: None,
            shape_limit: 0,
            session: None,
        }
    }

    fn call(mut service: S, req: Request<Body>, cors: Option<HeaderValue>) -> Self {
        Self {
            state: State::Calling {
                fut: service.call(req),
            },
            service: None,
            cors,
            shape: None,
            shape_limit: 0,
            session: None,
        }
    }

    fn refusing(fut: RefusalFuture, cors: Option<HeaderValue>) -> Self {
        Self {
            state: State::Refusing { fut },
            service: None,
            cors,
            shape: None,
            shape_limit: 0,
            session: None,
        }
    }

    fn authorizing(fut: AuthFuture, service: S, cors: Option<HeaderValue>) -> Self {
        Self {
            state: State::Authorizing { fut },
            service: Some(service),
            cors,
            shape: None,
            shape_limit: DEFAULT_SHAPE_LIMIT,
            session: None,
        }
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<Body>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ResBody> Future for ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let mut response = match this.state.as_mut().project() {
                StateProj::Authorizing { fut } => match ready!(fut.as_mut().poll(cx)) {
                    Ok((mut req, note)) => {
                        *this.shape = req.extensions_mut().remove::<ShapeTools>();
                        *this.session = Some(note);
                        let Some(mut service) = this.service.take() else {
                            unreachable!("the service is kept until authorization completes")
                        };
                        let fut = service.call(req);
                        this.state.set(State::Calling { fut });
                        continue;
                    }
                    Err(response) => response,
                },
                StateProj::Refusing { fut } => ready!(fut.as_mut().poll(cx)),
                StateProj::Calling { fut } => {
                    let response = ready!(fut.poll(cx))?.map(Body::new);
                    let response = match this.shape.take() {
                        Some(ShapeTools(shaper)) => shaper.shape(response, *this.shape_limit),
                        None => response,
                    };
                    match this.session.take() {
                        Some(note) => match note.after(response) {
                            // Record or forget the session, then answer.
                            AfterResponse::Record(fut) => {
                                this.state.set(State::Refusing { fut });
                                continue;
                            }
                            AfterResponse::Respond(response) => response,
                        },
                        None => response,
                    }
                }
                StateProj::Done { response } => response
                    .take()
                    .expect("ResponseFuture polled after completion"),
            };
            if let Some(origin) = this.cors.take() {
                apply_cors(&mut response, &origin);
            }
            return Poll::Ready(Ok(response));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        let s = ScopeSet::new();
        assert!(
            matches!(bearer(&headers(&["Bearer abc.def-_~+/=="]), &s), Bearer::Token(t) if t == "abc.def-_~+/==")
        );
        assert!(matches!(bearer(&headers(&["bEaReR abc"]), &s), Bearer::Token(t) if t == "abc"));
        assert!(matches!(
            bearer(&headers(&["Basic YTpi"]), &s),
            Bearer::None
        ));
        assert!(matches!(bearer(&headers(&["Bearerabc"]), &s), Bearer::None));
        assert!(matches!(
            bearer(&headers(&["Bearer "]), &s),
            Bearer::Bad(AuthRejection::InvalidRequest(_))
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer"]), &s),
            Bearer::Bad(AuthRejection::InvalidRequest(_))
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer a", "Bearer b"]), &s),
            Bearer::Bad(AuthRejection::InvalidRequest(_))
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer a b"]), &s),
            Bearer::Bad(AuthRejection::InvalidToken { .. })
        ));
        assert!(matches!(
            bearer(&headers(&["Bearer ==="]), &s),
            Bearer::Bad(AuthRejection::InvalidToken { .. })
        ));
        // Surrounding spaces are trimmed; only spaces is empty; bytes outside ASCII are
        // malformed, never a panic.
        assert!(
            matches!(bearer(&headers(&["Bearer   abc  "]), &s), Bearer::Token(t) if t == "abc")
        );
        assert!(matches!(
            bearer(&headers(&["Bearer    "]), &s),
            Bearer::Bad(AuthRejection::InvalidRequest(_))
        ));
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer ab\xe9cd").unwrap(),
        );
        assert!(matches!(
            bearer(&h, &s),
            Bearer::Bad(AuthRejection::InvalidToken { .. })
        ));
    }

    // issue 8 item 3: whole segments, longest prefix first, never resource 0 by default.
    #[test]
    fn paths_match_resources_by_segments() {
        assert!(path_under("/b/mcp", "/b/mcp"));
        assert!(path_under("/b/mcp/", "/b/mcp"));
        assert!(path_under("/b/mcp/x", "/b/mcp"));
        assert!(!path_under("/b/mcpx", "/b/mcp"));
        assert!(!path_under("/b", "/b/mcp"));
        assert!(path_under("/anything", ""));
        // issue 8 item 3 (review): paths that normalise to another path are not plain.
        for p in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/%2e%2e/b",
            "/a/%2Fb",
            "/a\\b",
            "/a/%5cb",
        ] {
            assert!(!is_plain_path(p), "{p}");
        }
        for p in ["/a/b", "/a/b/", "/a/..b/c.d", "/a/%41", ""] {
            assert!(is_plain_path(p), "{p}");
        }
        assert_eq!(authority_of("https://a.example:8443/mcp"), "a.example:8443");
        assert_eq!(authority_of("https://a.example"), "a.example");
    }

    #[test]
    fn query_tokens_are_spotted() {
        assert!(query_has_token(&"/mcp?access_token=x".parse().unwrap()));
        assert!(query_has_token(&"/mcp?a=1&access_token".parse().unwrap()));
        assert!(!query_has_token(&"/mcp?my_access_token=x".parse().unwrap()));
        // Spelled the ways a framework would still read as `access_token`.
        for q in [
            "/mcp?access%5Ftoken=x",
            "/mcp?access%5ftoken=x",
            "/mcp?%61ccess_token=x",
            "/mcp?ACCESS_TOKEN=x",
            "/mcp?a=1;access_token=x",
            "/mcp?access+token=x",
            "/mcp?access.token=x",
            "/mcp?access[token=x",
        ] {
            assert!(query_has_token(&q.parse().unwrap()), "{q}");
        }
        assert!(!query_has_token(&"/mcp?access%5Ftokens=x".parse().unwrap()));
    }
}
