//! A streamable-HTTP MCP upstream: requests forwarded, responses streamed back untouched.
//!
//! [`HttpUpstream::router`] is the service the proxy mounts behind the OAuth layer at the
//! resource's path. Every method (`POST` messages, the `GET` stream, `DELETE` of a session)
//! goes to the one configured upstream URL, with the request's query string appended.
//!
//! What crosses, and what does not:
//!
//! - **Requests.** The body is read whole, up to [`UpstreamOptions::max_request_body`]
//!   (`413` with a JSON-RPC error above it), so a refused or failed request can name its
//!   JSON-RPC `id`. Headers pass, except:
//!   - hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//!     `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Proxy-*`), `Content-Length` (set
//!     again for the body sent) and `Expect` (the body is already read);
//!   - `Accept-Encoding`: the upstream answers uncompressed, so that the bounds below count
//!     real bytes and events, and the OAuth layer can read a `tools/list` answer;
//!   - `Host`: the upstream's own authority is sent;
//!   - **the client's credentials**: `Authorization` (the token the OAuth layer verified is
//!     for this proxy, never for the upstream) and `Cookie` (the authorization server's
//!     cookies live on this origin);
//!   - `Origin`: the OAuth layer checked it against its allow-list; an upstream bound to
//!     loopback would refuse a browser origin it does not know;
//!   - `Forwarded`, `X-Forwarded-*` and `X-Real-IP` from the client: a client cannot tell
//!     the upstream who it is. The proxy sets `X-Forwarded-For` to the client's address (the
//!     TCP peer; behind a reverse proxy, that proxy's address) instead, and
//!     `X-Forwarded-Proto` / `X-Forwarded-Host` are not sent (the upstream's `Host` is its
//!     own, which is what servers guarding against DNS rebinding check).
//!
//!   The upstream's own static headers ([`UpstreamOptions::headers`], such as
//!   `Authorization: Bearer <upstream secret>`) are added last, replacing any header of the
//!   same name; their values are marked sensitive and never logged.
//! - **Responses.** Status and headers pass, except hop-by-hop headers, `Set-Cookie` (the
//!   upstream must not set cookies on the authorization server's origin) and
//!   `WWW-Authenticate` (a challenge from the upstream is about the proxy's credentials, not
//!   the client's token: relayed, it would send the client back through sign-in forever).
//!   An upstream `401` becomes `502` for the same reason. Redirects (`3xx` other than `304`)
//!   are **not followed and not passed on**: they become `502`, since a client following one
//!   would carry its token to wherever the upstream points.
//!   - `text/event-stream` is streamed chunk by chunk as it arrives (`Mcp-Session-Id`,
//!     event ids and `Last-Event-ID` resumption pass through unchanged), each event bounded
//!     by [`UpstreamOptions::max_sse_event`]: a longer one ends the stream.
//!   - `application/json` is read whole, bounded by [`UpstreamOptions::max_response_body`]
//!     (`502` above it, also when a `Content-Length` announces more) and in time by
//!     [`UpstreamOptions::response_timeout`] (`504`).
//!   - anything else is streamed, bounded in total by the same limit (the stream is cut
//!     there).
//! - **Failures** answer with a JSON-RPC error body (`code` `-32603`, the request's `id`, or
//!   `null`): `502` when the upstream cannot be reached (`upstream unreachable: …`) or
//!   fails, `504` when its response headers do not come within
//!   [`UpstreamOptions::response_timeout`].
//!
//! Upstream connections are kept alive in a pool, with `TCP_NODELAY` set (MCP answers come
//! in small writes; Nagle's algorithm would hold the second one for a delayed ACK).

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
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;

/// Default bound on a request body: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 << 20;
/// Default bound on a non-streamed response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 << 20;
/// Default bound on one server-sent event: 16 MiB.
pub const DEFAULT_MAX_SSE_EVENT: usize = 16 << 20;
/// Default wait for the upstream's response headers: 120 s (a tool answering in JSON sends
/// its headers only when it is done).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on opening a connection to the upstream: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON-RPC error code of every error the forwarder answers itself (internal error).
pub const FORWARD_ERROR_CODE: i64 = -32603;

/// Request headers never forwarded, beyond the hop-by-hop ones.
const REQUEST_DROPPED: &[&str] = &[
    "host",
    "content-length",
    "expect",
    "accept-encoding",
    "authorization",
    "cookie",
    "origin",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

/// Response headers never passed back, beyond the hop-by-hop ones.
const RESPONSE_DROPPED: &[&str] = &["set-cookie", "www-authenticate"];

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

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The upstream MCP endpoint.
    pub url: url::Url,
    /// Static headers sent with every upstream request (the upstream's own credential, for
    /// example), replacing any header of the same name. Values are never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bound on a request body (larger: `413`).
    pub max_request_body: usize,
    /// Bound on a non-streamed response body (larger: `502`).
    pub max_response_body: usize,
    /// Bound on one server-sent event (larger: the stream ends).
    pub max_sse_event: usize,
    /// Wait for the upstream's response headers (longer: `504`).
    pub response_timeout: Duration,
    /// Bound on opening a connection to the upstream (longer: `502`).
    pub connect_timeout: Duration,
}

impl UpstreamOptions {
    /// Options forwarding to `url`, with the default bounds and no static headers.
    pub fn new(url: url::Url) -> Self {
        Self {
            url,
            headers: Vec::new(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_sse_event: DEFAULT_MAX_SSE_EVENT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
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

/// Parses `Name: value` into a header (value marked sensitive).
///
/// # Errors
/// No colon, an invalid name, a hop-by-hop or `Host`/`Content-Length` name, or an invalid
/// value; the message never contains the value.
pub fn parse_header_line(line: &str) -> Result<(HeaderName, HeaderValue), UpstreamError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| UpstreamError::Header("expected `Name: value`".to_owned()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| UpstreamError::Header(format!("invalid header name {:?}", name.trim())))?;
    if is_hop_by_hop(&name) || name == header::HOST || name == header::CONTENT_LENGTH {
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
            if is_hop_by_hop(name) || name == header::HOST || name == header::CONTENT_LENGTH {
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
        Ok(Arc::new(Self {
            shown: shown.to_string(),
            options,
            client,
        }))
    }

    /// The upstream URL.
    pub fn url(&self) -> &url::Url {
        &self.options.url
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

    /// Forwards one request.
    async fn forward(&self, req: Request<Body>) -> Response {
        let (parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());

        // The request body, bounded.
        let too_large = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.options.max_request_body as u64);
        if too_large {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                &format!(
                    "request body larger than {} bytes",
                    self.options.max_request_body
                ),
            );
        }
        let body = match http_body_util::Limited::new(body, self.options.max_request_body)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    &format!(
                        "request body larger than {} bytes",
                        self.options.max_request_body
                    ),
                );
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    None,
                    "the request body could not be read",
                );
            }
        };

        let mut headers = forwarded_headers(&parts.headers, REQUEST_DROPPED);
        if let Some(ip) = peer
            && let Ok(v) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        for (name, value) in &self.options.headers {
            headers.insert(name.clone(), value.clone());
        }

        let url = self.target(parts.uri.query());
        let request = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(body.clone());
        let sent = tokio::time::timeout(self.options.response_timeout, request.send()).await;
        let upstream = match sent {
            Err(_) => {
                tracing::warn!(
                    upstream = %self.shown,
                    method = %parts.method,
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
                tracing::warn!(upstream = %self.shown, method = %parts.method, error = %e.without_url(), "upstream request failed");
                return error(StatusCode::BAD_GATEWAY, Some(&body), &why);
            }
            Ok(Ok(res)) => res,
        };
        self.relay(upstream, &body).await
    }

    /// The upstream's response, as the client gets it.
    async fn relay(&self, upstream: reqwest::Response, request_body: &Bytes) -> Response {
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
        let headers = forwarded_headers(upstream.headers(), RESPONSE_DROPPED);
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
                let read = tokio::time::timeout(
                    self.options.response_timeout,
                    read_bounded(upstream, limit),
                )
                .await;
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
                Body::from_stream(Bounded::total(upstream.bytes_stream(), limit))
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

/// `from` without hop-by-hop headers (and those `Connection` names) and without `dropped`.
fn forwarded_headers(from: &HeaderMap, dropped: &[&str]) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if is_hop_by_hop(name) || dropped.contains(&n) || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
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

/// A JSON-RPC error response: `{"jsonrpc":"2.0","id":…,"error":{"code":-32603,"message":…}}`.
fn error(status: StatusCode, request_body: Option<&Bytes>, message: &str) -> Response {
    let id = request_body
        .map(|b| request_id(b))
        .unwrap_or(serde_json::Value::Null);
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": FORWARD_ERROR_CODE, "message": message},
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

/// An upstream body relayed chunk by chunk, unchanged, cut when a bound is crossed.
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
}

impl<S> Bounded<S> {
    fn sse(inner: S, limit: usize) -> Self {
        Self {
            inner,
            limit,
            sse: true,
            count: 0,
            line_start: true,
            after_cr: false,
            done: false,
        }
    }

    fn total(inner: S, limit: usize) -> Self {
        Self {
            sse: false,
            ..Self::sse(inner, limit)
        }
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
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                tracing::warn!(error = %e.without_url(), "upstream stream failed");
                Poll::Ready(Some(Err(StreamCut::Upstream)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if self.account(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    self.done = true;
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

    fn sse(limit: usize) -> Bounded<futures_util::stream::Empty<Result<Bytes, reqwest::Error>>> {
        Bounded::sse(futures_util::stream::empty(), limit)
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
        h.insert("mcp-session-id", HeaderValue::from_static("s1"));
        h.insert("last-event-id", HeaderValue::from_static("e1"));
        let out = forwarded_headers(&h, REQUEST_DROPPED);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["mcp-session-id", "last-event-id"]);
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
