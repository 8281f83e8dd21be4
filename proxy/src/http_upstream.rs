//! A streamable-HTTP MCP upstream: requests forwarded, responses streamed back untouched.
//!
//! [`HttpUpstream::router`] is the service the proxy mounts behind the OAuth layer at the
//! resource's path. The transport's three methods (`POST` messages, the `GET` stream,
//! `DELETE` of a session) go to the one configured upstream URL, with the request's query
//! string appended.
//!
//! What crosses, and what does not:
//!
//! - **Methods.** `POST`, `GET` and `DELETE` only; anything else is `405` with
//!   `Allow: GET, POST, DELETE` (a browser's CORS preflight never gets here: the OAuth layer
//!   answers it). The OAuth layer reads the body of a `POST` only (to judge per-tool
//!   scopes), so a `GET` or `DELETE` with a body (`Content-Length` above 0,
//!   `Transfer-Encoding`, or any body bytes) is `400`, and the method-override headers
//!   (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) are never forwarded:
//!   the upstream handles the method the layer judged.
//! - **The query string** is appended after the upstream URL's own query. A client parameter
//!   named like one of the upstream URL's own parameters is `400` (frameworks disagree on
//!   which of two equal names wins); names are compared in every form a framework may read
//!   them as ([`mcp_oauth::resource::query_name_forms`]: percent-decoded, `+` both ways, ASCII
//!   case ignored, `.`, ` ` and `[` as `_`), with `;` taken as a separator too. A token in
//!   the query (`access_token` in any of those forms) never gets this far: the OAuth layer
//!   refuses it.
//! - **Requests.** The body is read whole, up to [`UpstreamOptions::max_request_body`]
//!   (`413` with a JSON-RPC error above it, announced or chunked), so a refused or failed
//!   request can name its JSON-RPC `id`. Headers pass, except:
//!   - hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//!     `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Proxy-*`), `Content-Length` (set
//!     again for the body sent) and `Expect` (the body is already read). A `Connection`
//!     value that is not visible ASCII is `400`: the headers it names could not be told;
//!   - `Accept-Encoding`: the proxy sends `Accept-Encoding: identity` instead (see
//!     responses);
//!   - `Host`: the upstream's own authority is sent;
//!   - **the client's credentials**: `Authorization` (the token the OAuth layer verified is
//!     for this proxy, never for the upstream) and `Cookie` (the authorization server's
//!     cookies live on this origin);
//!   - `Origin`: the OAuth layer checked it against its allow-list; an upstream bound to
//!     loopback would refuse a browser origin it does not know;
//!   - **whatever names the client, its user or its URL**: every `X-Forwarded-*` and
//!     `X-Auth-Request-*` header (`X-Forwarded-User`, `-Email`, `-Groups`,
//!     `-Access-Token`, `-Prefix`, …), `Forwarded`, `X-Real-IP`, `True-Client-IP`,
//!     `X-Client-IP`, `CF-Connecting-IP`, `X-Cluster-Client-IP`, `Remote-User`,
//!     `X-Remote-User`, `X-Original-URL`, `X-Original-URI`, `X-Rewrite-URL`, and the
//!     configured host-session header ([`UpstreamOptions::dropped_headers`]). A client, or a
//!     gateway in front such as oauth2-proxy, could otherwise name a user, groups, a path or
//!     an address to an upstream that believes them, or hand it an identity provider's
//!     token. The proxy sets `X-Forwarded-For` to the client's address (the TCP peer; behind
//!     a reverse proxy, that proxy's address) instead; `X-Forwarded-Proto` /
//!     `X-Forwarded-Host` are not sent (the upstream's `Host` is its own, which is what
//!     servers guarding against DNS rebinding check);
//!   - the method-override headers (above).
//!
//!   The upstream's own static headers ([`UpstreamOptions::headers`], such as
//!   `Authorization: Bearer <upstream secret>`) are added last, replacing any header of the
//!   same name; their values are marked sensitive and never logged.
//! - **Responses.** Status and headers pass, except hop-by-hop headers (an unreadable
//!   `Connection` value: `502`) and:
//!   - `Set-Cookie` and `Clear-Site-Data` (the authorization server's login and consent
//!     cookies live on this origin: the upstream must neither set nor wipe them),
//!     `Strict-Transport-Security`, `Alt-Svc` and `Refresh` (they speak for the whole
//!     origin, which is the proxy's), and every `Access-Control-*` header (the OAuth layer
//!     answers CORS itself);
//!   - `WWW-Authenticate`: a challenge from the upstream is about the proxy's credentials,
//!     not the client's token: relayed, it would send the client back through sign-in
//!     forever. An upstream `401` becomes `502` for the same reason.
//!
//!   Redirects (`3xx` other than `304`) are **not followed and not passed on**: they become
//!   `502`, since a client following one would carry its token to wherever the upstream
//!   points. A `Content-Encoding` other than `identity` is `502`: the bounds below count
//!   real bytes and events, and the OAuth layer must be able to read a `tools/list` answer.
//!   Other statuses, `5xx` included, pass unchanged with their bodies.
//!   - `text/event-stream` is streamed chunk by chunk as it arrives (`Mcp-Session-Id`,
//!     event ids and `Last-Event-ID` resumption pass through unchanged), each event bounded
//!     by [`UpstreamOptions::max_sse_event`]: a longer one cuts the stream (its `200` and
//!     the events before have been sent; the client sees the response end early).
//!   - `application/json` is read whole, bounded by [`UpstreamOptions::max_response_body`]
//!     (`502` above it, also when a `Content-Length` announces more);
//!     [`UpstreamOptions::response_timeout`] covers the response headers and this body
//!     together (`504`).
//!   - anything else is streamed, bounded in total by the same limit (the stream is cut
//!     there).
//! - **Concurrency.** At most [`UpstreamOptions::max_requests`] upstream requests at once;
//!   beyond that `503` with `Retry-After`. A streamed response holds its slot until it ends
//!   or the client goes away.
//! - **Failures** answer with a JSON-RPC error body (the request's `id`, or `null`): the
//!   client's mistakes (`400`, `405`, `413`) with `code` `-32600` (invalid request), no free
//!   slot (`503`) with `-32000`, and the upstream's (`502`, `504`) with `-32603`: `502` when
//!   the upstream cannot be reached (`upstream unreachable: …`) or fails, `504` when its
//!   answer does not come within [`UpstreamOptions::response_timeout`].
//!
//! Upstream connections are kept alive in a pool, with `TCP_NODELAY` set (MCP answers come
//! in small writes; Nagle's algorithm would hold the second one for a delayed ACK).

use mcp_oauth::resource::query_name_forms;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default bound on a request body: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 << 20;
/// Default bound on a non-streamed response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 << 20;
/// Default bound on one server-sent event: 16 MiB.
pub const DEFAULT_MAX_SSE_EVENT: usize = 16 << 20;
/// Default wait for the upstream's answer (its headers, and a JSON body with them): 120 s (a
/// tool answering in JSON sends its headers only when it is done).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on opening a connection to the upstream: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on upstream requests (and streams) at once: 256.
pub const DEFAULT_MAX_REQUESTS: usize = 256;

/// The JSON-RPC error code of the forwarder's errors about the upstream (`502`, `504`:
/// internal error).
pub const FORWARD_ERROR_CODE: i64 = -32603;
/// The JSON-RPC error code of the forwarder's refusals of the request itself (`400`, `405`,
/// `413`: invalid request).
pub const REQUEST_ERROR_CODE: i64 = -32600;
/// The JSON-RPC error code of `503` when every upstream slot is taken (server error, as the
/// stdio bridge's).
pub const BUSY_ERROR_CODE: i64 = -32000;

/// `Retry-After` of a `503` when every upstream slot is taken, in seconds.
const RETRY_AFTER_SECONDS: &str = "5";

/// Request headers never forwarded, beyond the hop-by-hop ones and the prefixes in
/// [`REQUEST_DROPPED_PREFIXES`].
const REQUEST_DROPPED: &[&str] = &[
    "host",
    "content-length",
    "expect",
    "accept-encoding",
    "authorization",
    "cookie",
    "origin",
    // Who the client is, as a front proxy or the client itself says.
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "remote-user",
    "x-remote-user",
    // Which URL it asked for, as a front proxy says.
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    // Another method than the one the OAuth layer judged.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Prefixes of request headers never forwarded: a front proxy's word on who the client is
/// (`X-Forwarded-User`, `-Email`, `-Groups`, `-Access-Token`, … from oauth2-proxy and the
/// like; `X-Auth-Request-*` from its `auth_request` mode).
const REQUEST_DROPPED_PREFIXES: &[&str] = &["x-forwarded-", "x-auth-request-"];

/// Response headers never passed back, beyond the hop-by-hop ones and `Access-Control-*`.
const RESPONSE_DROPPED: &[&str] = &[
    "set-cookie",
    "www-authenticate",
    "clear-site-data",
    "strict-transport-security",
    "alt-svc",
    "refresh",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1), dropped both ways.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The methods forwarded (the streamable-HTTP transport's).
const ALLOWED_METHODS: &str = "GET, POST, DELETE";

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The upstream MCP endpoint.
    pub url: url::Url,
    /// Static headers sent with every upstream request (the upstream's own credential, for
    /// example), replacing any header of the same name. Values are never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Client headers never forwarded beyond the built-in ones: the host-session header
    /// naming the signed-in user, when the proxy is configured with one.
    pub dropped_headers: Vec<HeaderName>,
    /// Bound on a request body (larger: `413`).
    pub max_request_body: usize,
    /// Bound on a non-streamed response body (larger: `502`).
    pub max_response_body: usize,
    /// Bound on one server-sent event (larger: the stream ends).
    pub max_sse_event: usize,
    /// Wait for the upstream's response headers and, for a JSON answer, its whole body
    /// (longer: `504`).
    pub response_timeout: Duration,
    /// Bound on opening a connection to the upstream (longer: `502`).
    pub connect_timeout: Duration,
    /// Upstream requests at once, streamed responses included until they end (more: `503`).
    pub max_requests: usize,
}

impl UpstreamOptions {
    /// Options forwarding to `url`, with the default bounds and no static headers.
    pub fn new(url: url::Url) -> Self {
        Self {
            url,
            headers: Vec::new(),
            dropped_headers: Vec::new(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_sse_event: DEFAULT_MAX_SSE_EVENT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_requests: DEFAULT_MAX_REQUESTS,
        }
    }

    /// Adds a static upstream header from `Name: value` (as given on the command line).
    ///
    /// # Errors
    /// No colon, or a name or value that is not a valid header; the message never contains
    /// the value.
    pub fn header_line(mut self, line: &str) -> Result<Self, UpstreamError> {
        let (name, value) = parse_header_line(line)?;
        self.headers.push((name, value));
        Ok(self)
    }
}

/// Whether `name` cannot be a static upstream header: hop-by-hop, `Host`, `Content-Length`,
/// or `Accept-Encoding` (the proxy asks for `identity`, the only coding it relays).
fn reserved_static_header(name: &HeaderName) -> bool {
    is_hop_by_hop(name)
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::ACCEPT_ENCODING
}

/// Parses `Name: value` into a header (value marked sensitive).
///
/// # Errors
/// No colon, an invalid name, a hop-by-hop, `Host`, `Content-Length` or `Accept-Encoding`
/// name, or an invalid value; the message never contains the value.
pub fn parse_header_line(line: &str) -> Result<(HeaderName, HeaderValue), UpstreamError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| UpstreamError::Header("expected `Name: value`".to_owned()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| UpstreamError::Header(format!("invalid header name {:?}", name.trim())))?;
    if reserved_static_header(&name) {
        return Err(UpstreamError::Header(format!(
            "{name} cannot be set as an upstream header"
        )));
    }
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| UpstreamError::Header(format!("invalid value for header {name}")))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Why the forwarder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL is not `http` or `https`, or has no host.
    #[error("upstream URL must be http:// or https:// with a host")]
    Url,
    /// A static header is malformed.
    #[error("upstream header: {0}")]
    Header(String),
    /// The HTTP client could not be built.
    #[error("upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The forwarding service.
#[derive(Debug)]
pub struct HttpUpstream {
    options: UpstreamOptions,
    client: reqwest::Client,
    /// The upstream URL as logged: without user info, query or fragment.
    shown: String,
    /// Query parameter names a client may not send: the upstream URL's own, in every form
    /// a framework may read them as ([`query_name_forms`]). (`access_token` in any form is
    /// the OAuth layer's to refuse, before the forwarder.)
    reserved_query: Vec<String>,
    /// One permit per upstream request or stream in flight.
    slots: Arc<Semaphore>,
}

impl HttpUpstream {
    /// A forwarder to `options.url`.
    ///
    /// # Errors
    /// A URL that is not `http(s)://host…`, a malformed static header, or a client that
    /// cannot be built.
    pub fn new(options: UpstreamOptions) -> Result<Arc<Self>, UpstreamError> {
        if !matches!(options.url.scheme(), "http" | "https") || options.url.host().is_none() {
            return Err(UpstreamError::Url);
        }
        for (name, _) in &options.headers {
            if reserved_static_header(name) {
                return Err(UpstreamError::Header(format!(
                    "{name} cannot be set as an upstream header"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .no_proxy()
            .build()?;
        let mut shown = options.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        let mut reserved_query = Vec::new();
        for name in options
            .url
            .query()
            .unwrap_or_default()
            .split(['&', ';'])
            .filter_map(|pair| pair.split('=').next())
            .filter(|n| !n.is_empty())
        {
            reserved_query.extend(query_name_forms(name));
        }
        reserved_query.sort();
        reserved_query.dedup();
        Ok(Arc::new(Self {
            shown: shown.to_string(),
            reserved_query,
            slots: Arc::new(Semaphore::new(options.max_requests.max(1))),
            options,
            client,
        }))
    }

    /// The upstream URL.
    pub fn url(&self) -> &url::Url {
        &self.options.url
    }

    /// The upstream URL as it is shown in logs and by `--check`: without user info, query
    /// or fragment (any of which may hold a secret).
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The options.
    pub fn options(&self) -> &UpstreamOptions {
        &self.options
    }

    /// The MCP endpoint (any path: mounted at the resource's path, behind the OAuth layer).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(self))
    }

    /// The upstream URL for a request with `query`.
    fn target(&self, query: Option<&str>) -> url::Url {
        let mut url = self.options.url.clone();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            let joined = match url.query() {
                Some(own) if !own.is_empty() => format!("{own}&{q}"),
                _ => q.to_owned(),
            };
            url.set_query(Some(&joined));
        }
        url
    }

    /// Whether the client's `query` names a parameter the upstream URL sets, however it is
    /// encoded.
    fn query_conflicts(&self, query: &str) -> bool {
        query
            .split(['&', ';'])
            .filter_map(|pair| pair.split('=').next())
            .filter(|n| !n.is_empty())
            .any(|name| {
                query_name_forms(name)
                    .iter()
                    .any(|form| self.reserved_query.binary_search(form).is_ok())
            })
    }

    /// Whether a client header is never forwarded (beyond the hop-by-hop ones).
    fn request_header_dropped(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        REQUEST_DROPPED.contains(&n)
            || REQUEST_DROPPED_PREFIXES.iter().any(|p| n.starts_with(p))
            || self.options.dropped_headers.contains(name)
    }

    /// Forwards one request.
    async fn forward(&self, req: Request<Body>) -> Response {
        let (parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());

        // The transport's methods only: the OAuth layer judged this one.
        let method = parts.method.clone();
        if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
            let mut res = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                REQUEST_ERROR_CODE,
                None,
                &format!("method {method} is not allowed: {ALLOWED_METHODS}"),
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            return res;
        }
        // A GET or DELETE body was not read by the layer: it must not reach the upstream.
        let bodiless = method != Method::POST;
        if bodiless && announces_body(&parts.headers) {
            return refuse(
                StatusCode::BAD_REQUEST,
                None,
                &format!("a {method} request cannot carry a body"),
            );
        }

        // The request body, bounded.
        let too_large = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.options.max_request_body as u64);
        let too_large_message = format!(
            "request body larger than {} bytes",
            self.options.max_request_body
        );
        if too_large {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, None, &too_large_message);
        }
        let body = match http_body_util::Limited::new(body, self.options.max_request_body)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, None, &too_large_message);
            }
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    None,
                    "the request body could not be read",
                );
            }
        };
        if bodiless && !body.is_empty() {
            return refuse(
                StatusCode::BAD_REQUEST,
                None,
                &format!("a {method} request cannot carry a body"),
            );
        }

        if let Some(q) = parts.uri.query()
            && self.query_conflicts(q)
        {
            tracing::warn!(target: "mcp_oauth_proxy::security", upstream = %self.shown,
                "query parameter refused: the upstream URL sets it");
            return refuse(
                StatusCode::BAD_REQUEST,
                Some(&body),
                "a query parameter the upstream URL sets is not accepted",
            );
        }

        let Ok(mut headers) = forwarded_headers(&parts.headers, |n| self.request_header_dropped(n))
        else {
            return refuse(
                StatusCode::BAD_REQUEST,
                Some(&body),
                "the Connection header is not visible ASCII",
            );
        };
        if let Some(ip) = peer
            && let Ok(v) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        for (name, value) in &self.options.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );

        // A slot, held until the response (or its stream) is done.
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(upstream = %self.shown, max = self.options.max_requests,
                "refusing a request: every upstream slot is taken (max_upstream_requests)");
            let mut res = rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                BUSY_ERROR_CODE,
                Some(&body),
                "too many upstream requests at once; retry later",
            );
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            return res;
        };

        let deadline = tokio::time::Instant::now() + self.options.response_timeout;
        let url = self.target(parts.uri.query());
        let request = self
            .client
            .request(method.clone(), url)
            .headers(headers)
            .body(body.clone());
        let sent = tokio::time::timeout_at(deadline, request.send()).await;
        let upstream = match sent {
            Err(_) => {
                tracing::warn!(
                    upstream = %self.shown,
                    %method,
                    timeout_s = self.options.response_timeout.as_secs_f64(),
                    "upstream response headers timed out"
                );
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    Some(&body),
                    "upstream did not answer in time",
                );
            }
            Ok(Err(e)) => {
                let why = describe(&e);
                tracing::warn!(upstream = %self.shown, %method, error = %e.without_url(), "upstream request failed");
                return error(StatusCode::BAD_GATEWAY, Some(&body), &why);
            }
            Ok(Ok(res)) => res,
        };
        self.relay(upstream, &body, deadline, permit).await
    }

    /// The upstream's response, as the client gets it. `permit` is held until the body is
    /// done; a JSON body must be read by `deadline`.
    async fn relay(
        &self,
        upstream: reqwest::Response,
        request_body: &Bytes,
        deadline: tokio::time::Instant,
        permit: OwnedSemaphorePermit,
    ) -> Response {
        let status = upstream.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            tracing::warn!(upstream = %self.shown, %status, "upstream answered with a redirect; not followed");
            return error(
                StatusCode::BAD_GATEWAY,
                Some(request_body),
                &format!(
                    "upstream answered with a redirect ({status}), which the proxy does not follow"
                ),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            tracing::warn!(upstream = %self.shown, "upstream refused the proxy's credentials (401)");
            return error(
                StatusCode::BAD_GATEWAY,
                Some(request_body),
                "upstream refused the proxy's credentials",
            );
        }
        if !identity_coded(upstream.headers()) {
            tracing::warn!(upstream = %self.shown, "upstream answered with a Content-Encoding other than identity");
            return error(
                StatusCode::BAD_GATEWAY,
                Some(request_body),
                "upstream answered with a Content-Encoding other than identity",
            );
        }
        let Ok(headers) = forwarded_headers(upstream.headers(), response_header_dropped) else {
            tracing::warn!(upstream = %self.shown, "upstream sent a Connection header that is not visible ASCII");
            return error(
                StatusCode::BAD_GATEWAY,
                Some(request_body),
                "upstream sent an unreadable Connection header",
            );
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let announced = upstream.content_length();

        let body = if content_type == "text/event-stream" {
            Body::from_stream(Bounded::sse(
                upstream.bytes_stream(),
                self.options.max_sse_event,
                permit,
            ))
        } else {
            let limit = self.options.max_response_body;
            if announced.is_some_and(|n| n > limit as u64) {
                tracing::warn!(upstream = %self.shown, limit, "upstream response body too large");
                return error(
                    StatusCode::BAD_GATEWAY,
                    Some(request_body),
                    &format!("upstream response larger than {limit} bytes"),
                );
            }
            if content_type == "application/json" {
                let read = tokio::time::timeout_at(deadline, read_bounded(upstream, limit)).await;
                drop(permit);
                let Ok(read) = read else {
                    tracing::warn!(upstream = %self.shown, "upstream response body timed out");
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        Some(request_body),
                        "upstream did not answer in time",
                    );
                };
                match read {
                    Ok(bytes) => Body::from(bytes),
                    Err(ReadError::TooLarge) => {
                        tracing::warn!(upstream = %self.shown, limit, "upstream response body too large");
                        return error(
                            StatusCode::BAD_GATEWAY,
                            Some(request_body),
                            &format!("upstream response larger than {limit} bytes"),
                        );
                    }
                    Err(ReadError::Failed(e)) => {
                        tracing::warn!(upstream = %self.shown, error = %e.without_url(), "upstream response body failed");
                        return error(
                            StatusCode::BAD_GATEWAY,
                            Some(request_body),
                            "upstream response failed",
                        );
                    }
                }
            } else {
                Body::from_stream(Bounded::total(upstream.bytes_stream(), limit, permit))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// The axum handler.
async fn forward(State(up): State<Arc<HttpUpstream>>, req: Request<Body>) -> Response {
    up.forward(req).await
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name.as_str().starts_with("proxy-")
}

/// Whether an upstream response header is never passed back (beyond the hop-by-hop ones).
fn response_header_dropped(name: &HeaderName) -> bool {
    RESPONSE_DROPPED.contains(&name.as_str()) || name.as_str().starts_with("access-control-")
}

/// Whether request headers announce a body: `Content-Length` above 0 (or unreadable), or
/// any `Transfer-Encoding`.
fn announces_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

/// Whether every `Content-Encoding` of a response is `identity` (or there is none).
fn identity_coded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        })
    })
}

/// The `Connection` header's values are not all visible ASCII: the headers they name
/// cannot be told.
#[derive(Debug)]
struct UnreadableConnection;

/// `from` without hop-by-hop headers (and those `Connection` names) and without the ones
/// `dropped` names.
fn forwarded_headers(
    from: &HeaderMap,
    dropped: impl Fn(&HeaderName) -> bool,
) -> Result<HeaderMap, UnreadableConnection> {
    let mut named: Vec<String> = Vec::new();
    for value in from.get_all(header::CONNECTION) {
        let value = value.to_str().map_err(|_| UnreadableConnection)?;
        named.extend(
            value
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty()),
        );
    }
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if is_hop_by_hop(name) || dropped(name) || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    Ok(out)
}

/// A short, helpful reason for a failed upstream request (no addresses, no internals).
fn describe(e: &reqwest::Error) -> String {
    let io_kind = {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut kind = None;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = s.source();
        }
        kind
    };
    if e.is_connect() {
        match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                "upstream unreachable: connection refused".to_owned()
            }
            Some(std::io::ErrorKind::TimedOut) => {
                "upstream unreachable: connect timed out".to_owned()
            }
            _ if e.is_timeout() => "upstream unreachable: connect timed out".to_owned(),
            _ => "upstream unreachable: cannot connect".to_owned(),
        }
    } else if e.is_timeout() {
        "upstream unreachable: timed out".to_owned()
    } else {
        "upstream unreachable: the connection failed before a response".to_owned()
    }
}

/// An error about the upstream ([`FORWARD_ERROR_CODE`]).
fn error(status: StatusCode, request_body: Option<&Bytes>, message: &str) -> Response {
    rpc_error(status, FORWARD_ERROR_CODE, request_body, message)
}

/// A refusal of the request itself ([`REQUEST_ERROR_CODE`]).
fn refuse(status: StatusCode, request_body: Option<&Bytes>, message: &str) -> Response {
    rpc_error(status, REQUEST_ERROR_CODE, request_body, message)
}

/// A JSON-RPC error response: `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`,
/// with the `id` of the request in `request_body` when it has one.
fn rpc_error(
    status: StatusCode,
    code: i64,
    request_body: Option<&Bytes>,
    message: &str,
) -> Response {
    let id = request_body
        .map(|b| request_id(b))
        .unwrap_or(serde_json::Value::Null);
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    (status, axum::Json(body)).into_response()
}

/// The `id` of a single JSON-RPC request (`null` for a batch, a notification, or anything
/// unreadable). Only a string or a number is echoed.
fn request_id(body: &[u8]) -> serde_json::Value {
    #[derive(serde::Deserialize)]
    struct Msg {
        id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(Msg {
            id: Some(id @ (serde_json::Value::String(_) | serde_json::Value::Number(_))),
        }) => id,
        _ => serde_json::Value::Null,
    }
}

enum ReadError {
    TooLarge,
    Failed(reqwest::Error),
}

/// The whole body, at most `limit` bytes.
async fn read_bounded(mut res: reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    let first = match res.chunk().await.map_err(ReadError::Failed)? {
        None => return Ok(Bytes::new()),
        Some(c) => c,
    };
    if first.len() > limit {
        return Err(ReadError::TooLarge);
    }
    let Some(second) = res.chunk().await.map_err(ReadError::Failed)? else {
        return Ok(first);
    };
    let mut buf = Vec::with_capacity(first.len() + second.len());
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second);
    if buf.len() > limit {
        return Err(ReadError::TooLarge);
    }
    while let Some(c) = res.chunk().await.map_err(ReadError::Failed)? {
        if buf.len() + c.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&c);
    }
    Ok(Bytes::from(buf))
}

/// Why a relayed stream was cut.
#[derive(Debug, thiserror::Error)]
enum StreamCut {
    #[error("upstream event larger than {0} bytes")]
    Event(usize),
    #[error("upstream response larger than {0} bytes")]
    Total(usize),
    #[error("upstream stream failed")]
    Upstream,
}

/// An upstream body relayed chunk by chunk, unchanged, cut when a bound is crossed; it holds
/// its upstream slot until it ends (or is dropped, when the client goes away).
struct Bounded<S> {
    inner: S,
    limit: usize,
    /// Per-event counting (SSE) or total counting.
    sse: bool,
    /// Bytes of the current event (SSE) or of the whole body.
    count: usize,
    /// SSE parsing: at the start of a line; the last byte was `\r`.
    line_start: bool,
    after_cr: bool,
    done: bool,
    /// The upstream slot, released when the stream ends.
    permit: Option<OwnedSemaphorePermit>,
}

impl<S> Bounded<S> {
    fn sse(inner: S, limit: usize, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            limit,
            sse: true,
            count: 0,
            line_start: true,
            after_cr: false,
            done: false,
            permit: Some(permit),
        }
    }

    fn total(inner: S, limit: usize, permit: OwnedSemaphorePermit) -> Self {
        Self {
            sse: false,
            ..Self::sse(inner, limit, permit)
        }
    }

    /// The stream is over: no more polling, and the slot is free.
    fn finish(&mut self) {
        self.done = true;
        self.permit = None;
    }

    /// Counts `chunk` against the bound; `false` when it is crossed.
    fn account(&mut self, chunk: &[u8]) -> bool {
        if !self.sse {
            self.count = self.count.saturating_add(chunk.len());
            return self.count <= self.limit;
        }
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.line_start {
                        // A blank line: the event ends.
                        self.count = 0;
                    } else {
                        self.line_start = true;
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line_start = false;
                    self.count += 1;
                    if self.count > self.limit {
                        return false;
                    }
                }
            }
        }
        true
    }
}

impl<S> Stream for Bounded<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    type Item = Result<Bytes, StreamCut>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish();
                tracing::warn!(error = %e.without_url(), "upstream stream failed");
                Poll::Ready(Some(Err(StreamCut::Upstream)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if self.account(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    self.finish();
                    let cut = if self.sse {
                        StreamCut::Event(self.limit)
                    } else {
                        StreamCut::Total(self.limit)
                    };
                    tracing::warn!(reason = %cut, "upstream stream cut");
                    Poll::Ready(Some(Err(cut)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    fn sse(limit: usize) -> Bounded<futures_util::stream::Empty<Result<Bytes, reqwest::Error>>> {
        Bounded::sse(futures_util::stream::empty(), limit, permit())
    }

    #[test]
    fn sse_events_are_bounded_one_by_one() {
        let mut b = sse(10);
        assert!(b.account(b"data: 1234\n\n"));
        assert!(b.account(b"data: 1234\r\n\r\n"));
        assert!(b.account(b"data: 12"));
        assert!(b.account(b"34\n\ndata: 1234\r\r"));
        // Two lines of one event add up.
        assert!(!b.account(b"data: 1\ndata: 2\n\n"));
    }

    #[test]
    fn total_is_bounded() {
        let mut b = Bounded::total(
            futures_util::stream::empty::<Result<Bytes, reqwest::Error>>(),
            5,
            permit(),
        );
        assert!(b.account(b"abc"));
        assert!(b.account(b"de"));
        assert!(!b.account(b"f"));
    }

    #[test]
    fn hop_by_hop_and_credentials_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("authorization", HeaderValue::from_static("Bearer client"));
        h.insert("cookie", HeaderValue::from_static("a=b"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        h.insert("x-auth-request-email", HeaderValue::from_static("a@x"));
        h.insert("x-sso-user", HeaderValue::from_static("admin"));
        h.insert("x-http-method-override", HeaderValue::from_static("POST"));
        h.insert("mcp-session-id", HeaderValue::from_static("s1"));
        h.insert("last-event-id", HeaderValue::from_static("e1"));
        let mut options = UpstreamOptions::new("http://127.0.0.1:9/mcp".parse().unwrap());
        options
            .dropped_headers
            .push(HeaderName::from_static("x-sso-user"));
        let up = HttpUpstream::new(options).unwrap();
        let out = forwarded_headers(&h, |n| up.request_header_dropped(n)).unwrap();
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["mcp-session-id", "last-event-id"]);

        // A Connection value that is not visible ASCII: the headers it names are unknown.
        h.insert(
            "connection",
            HeaderValue::from_bytes(b"x-secret-hop, \xe9").unwrap(),
        );
        assert!(forwarded_headers(&h, |n| up.request_header_dropped(n)).is_err());
    }

    #[test]
    fn response_headers_speaking_for_the_origin_are_dropped() {
        for name in [
            "set-cookie",
            "clear-site-data",
            "strict-transport-security",
            "alt-svc",
            "refresh",
            "www-authenticate",
            "access-control-allow-origin",
            "access-control-allow-credentials",
        ] {
            assert!(
                response_header_dropped(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        assert!(!response_header_dropped(&header::CONTENT_TYPE));
        assert!(!response_header_dropped(&HeaderName::from_static(
            "mcp-session-id"
        )));
    }

    #[test]
    fn content_encodings_and_bodies_are_told() {
        let mut h = HeaderMap::new();
        assert!(identity_coded(&h));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("Identity"),
        );
        assert!(identity_coded(&h));
        h.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!identity_coded(&h));

        let mut h = HeaderMap::new();
        assert!(!announces_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!announces_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        assert!(announces_body(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(announces_body(&h));
    }

    #[test]
    fn reserved_query_names_are_refused_however_encoded() {
        let up = HttpUpstream::new(UpstreamOptions::new(
            "http://127.0.0.1:9/mcp?tenant=acme&api%5Fkey=s"
                .parse()
                .unwrap(),
        ))
        .unwrap();
        for q in [
            "tenant=other",
            "x=1&TENANT=other",
            "ten%61nt=other",
            "api_key=x",
            "x=1;tenant=other",
            "api.key=x",
            "API%5BKEY=x",
        ] {
            assert!(up.query_conflicts(q), "{q}");
        }
        for q in ["tenants=x", "x=tenant", "a=1&b=%20y", "cursor=abc", ""] {
            assert!(!up.query_conflicts(q), "{q}");
        }
    }

    #[test]
    fn header_lines_parse_and_refuse() {
        let (n, v) = parse_header_line("Authorization: Bearer up").unwrap();
        assert_eq!(n, header::AUTHORIZATION);
        assert_eq!(v, "Bearer up");
        assert!(v.is_sensitive());
        assert!(parse_header_line("no colon").is_err());
        assert!(parse_header_line("Connection: close").is_err());
        assert!(parse_header_line("Host: x").is_err());
        assert!(parse_header_line("Accept-Encoding: gzip").is_err());
        let e = parse_header_line("X-Key: bad\u{7f}value").unwrap_err();
        assert!(!e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn ids_are_echoed_only_when_readable() {
        assert_eq!(request_id(br#"{"jsonrpc":"2.0","id":7,"method":"x"}"#), 7);
        assert_eq!(request_id(br#"{"id":"a"}"#), "a");
        assert_eq!(request_id(br#"[{"id":1}]"#), serde_json::Value::Null);
        assert_eq!(request_id(br#"{"id":{"x":1}}"#), serde_json::Value::Null);
        assert_eq!(request_id(b"garbage"), serde_json::Value::Null);
    }

    #[test]
    fn query_strings_are_kept() {
        let up = HttpUpstream::new(UpstreamOptions::new(
            "http://127.0.0.1:9/mcp?k=1".parse().unwrap(),
        ))
        .unwrap();
        assert_eq!(
            up.target(Some("a=b")).as_str(),
            "http://127.0.0.1:9/mcp?k=1&a=b"
        );
        assert_eq!(up.target(None).as_str(), "http://127.0.0.1:9/mcp?k=1");
    }
}
