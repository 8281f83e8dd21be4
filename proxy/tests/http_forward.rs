//! The HTTP-upstream forwarder, end to end: the `mcp-oauth-proxy` binary in front of small
//! axum upstreams written in the test, which record exactly what reached them and answer
//! in the ways that matter (SSE sent slowly, redirects, `401`, huge bodies, no answer).
//!
//! Every request carries a real access token, obtained through the proxy's own OAuth flow
//! (`common::obtain_token`: registration, the scripted browser's sign-in and consent,
//! the PKCE code exchange).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use common::{Running, TempDir, browser, free_port, obtain_token};
use futures_util::StreamExt as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Lets the slow SSE stream send its last event.
    go: Arc<tokio::sync::Notify>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const SESSION: &str = "upstream-session-1";
const UPSTREAM_SECRET: &str = "upstream-secret-5f1e2d";

/// The upstream's behaviour, chosen by the request's `x-mode` header (forwarded like any).
async fn handle(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let mode = parts
        .headers
        .get("x-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let id = serde_json::from_slice::<Value>(&body)
        .ok()
        .map_or(Value::Null, |v| v["id"].clone());
    let json = |status: u16, v: Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap()
    };
    match (parts.method.as_str(), mode.as_str()) {
        ("GET", _) => {
            let last = parts
                .headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from(format!(
                    "id: 7\ndata: {{\"resumed_after\":\"{last}\"}}\n\n"
                )))
                .unwrap()
        }
        ("DELETE", _) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .unwrap(),
        (_, "slow-sse") => {
            let go = Arc::clone(&up.go);
            let events = futures_util::stream::unfold(0u8, move |step| {
                let go = Arc::clone(&go);
                async move {
                    match step {
                        0 => Some((
                            Ok::<_, std::io::Error>(Bytes::from_static(
                                b"id: 1\ndata: {\"event\":\"first\"}\n\n",
                            )),
                            1,
                        )),
                        1 => {
                            go.notified().await;
                            Some((
                                Ok(Bytes::from_static(b"id: 2\ndata: {\"event\":\"last\"}\n\n")),
                                2,
                            ))
                        }
                        _ => None,
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(events))
                .unwrap()
        }
        (_, "huge-sse-event") => Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(format!(
                "data: {{\"small\":1}}\n\ndata: {}\n\n",
                "x".repeat(17 << 20)
            )))
            .unwrap(),
        (_, "hang-sse") => {
            let events = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(
                    b"id: 1\ndata: {\"event\":\"first\"}\n\n",
                ))
            })
            .chain(futures_util::stream::pending());
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(events))
                .unwrap()
        }
        (_, "hang") => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        (_, "slow-headers-slow-body") => {
            // Each half within the timeout (5 s in the test), the whole not.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let body = futures_util::stream::once(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, std::io::Error>(Bytes::from(
                    json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
                ))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(body))
                .unwrap()
        }
        (_, "gzip") => Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Body::from(&b"\x1f\x8b\x08\x00\x00\x00\x00\x00"[..]))
            .unwrap(),
        (_, "error-500") => {
            let mut res = json(
                500,
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "upstream broke"}}),
            );
            res.headers_mut()
                .insert("x-upstream", "yes".parse().unwrap());
            res
        }
        (_, "unavailable-503") => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "text/plain")
            .header("retry-after", "7")
            .body(Body::from("down for maintenance"))
            .unwrap(),
        (_, "hang-body") => {
            let body = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"jsonrpc\""))
            })
            .chain(futures_util::stream::pending());
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(body))
                .unwrap()
        }
        (_, "redirect") => Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header("location", "http://127.0.0.1:9/elsewhere")
            .body(Body::empty())
            .unwrap(),
        (_, "unauthorized") => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .body(Body::empty())
            .unwrap(),
        (_, "huge-json") => json(200, json!({"pad": "x".repeat(17 << 20)})),
        (_, "huge-json-chunked") => {
            let chunk = Bytes::from(vec![b' '; 1 << 20]);
            let chunks = futures_util::stream::iter(
                (0..17).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(chunks))
                .unwrap()
        }
        _ => {
            let mut res = json(
                200,
                json!({"jsonrpc": "2.0", "id": id, "result": {"ok": true}}),
            );
            let h = res.headers_mut();
            h.insert("mcp-session-id", SESSION.parse().unwrap());
            h.insert("x-upstream", "yes".parse().unwrap());
            h.insert("set-cookie", "upstream=1; Path=/".parse().unwrap());
            h.insert("www-authenticate", "Basic realm=\"up\"".parse().unwrap());
            // Headers that speak for the whole origin, which is the proxy's.
            h.insert("clear-site-data", "\"cookies\"".parse().unwrap());
            h.insert("alt-svc", "h3=\":443\"".parse().unwrap());
            h.insert(
                "strict-transport-security",
                "max-age=63072000".parse().unwrap(),
            );
            h.insert("refresh", "0; url=https://evil.example".parse().unwrap());
            h.insert("access-control-allow-origin", "*".parse().unwrap());
            h.insert("access-control-allow-credentials", "true".parse().unwrap());
            h.insert("access-control-expose-headers", "*".parse().unwrap());
            res
        }
    }
}

/// The upstream on `127.0.0.1:0`; returns it and its MCP URL.
async fn upstream() -> (Upstream, String) {
    let up = Upstream::default();
    let app = Router::new().fallback(handle).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (up, format!("http://{addr}/mcp"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn rpc(id: u32, method: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}}).to_string()
}

async fn post(
    http: &reqwest::Client,
    proxy: &Running,
    token: &str,
    mode: &str,
    body: String,
) -> reqwest::Response {
    post_to(http, &proxy.mcp, token, mode, body).await
}

/// [`post`] to `url` (the MCP URL with a query string, say).
async fn post_to(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    mode: &str,
    body: String,
) -> reqwest::Response {
    http.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("x-mode", mode)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Reads a streamed answer until its first event has come (bounded), and returns it.
async fn first_event(res: &mut reqwest::Response) -> String {
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !got.contains("\n\n") {
            let chunk = res.chunk().await.unwrap().expect("stream ended early");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("no first event");
    got
}

/// Checks a forwarder error about the upstream: status, JSON-RPC shape, code `-32603`, id,
/// message prefix.
async fn assert_rpc_error(res: reqwest::Response, status: u16, id: Value, prefix: &str) {
    assert_rpc_error_code(res, status, -32603, id, prefix).await;
}

/// Checks a forwarder refusal of the request itself: code `-32600`.
async fn assert_rpc_refusal(res: reqwest::Response, status: u16, id: Value, prefix: &str) {
    assert_rpc_error_code(res, status, -32600, id, prefix).await;
}

/// Checks a forwarder error: status, JSON-RPC shape, `code`, id, message prefix.
async fn assert_rpc_error_code(
    res: reqwest::Response,
    status: u16,
    code: i64,
    id: Value,
    prefix: &str,
) {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_rpc_body(&body, code, &id, prefix);
}

/// Checks a JSON-RPC error body: shape, `code`, id, message prefix.
fn assert_rpc_body(body: &Value, code: i64, id: &Value, prefix: &str) {
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(&body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(prefix), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_cross_both_ways_but_the_clients_credentials_never_reach_the_upstream() {
    let (up, url) = upstream().await;
    let header = format!("Authorization: Bearer {UPSTREAM_SECRET}");
    let proxy = Running::upstream(
        &url,
        &[
            "--upstream-header",
            &header,
            "--upstream-header",
            "X-Api-Key: k-42",
        ],
    )
    .await;
    let http = client();

    // Without a token: the OAuth layer refuses, and the upstream sees nothing.
    let res = http
        .post(&proxy.mcp)
        .header("content-type", "application/json")
        .body(rpc(1, "initialize"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(up.seen().is_empty());

    let token = obtain_token(&proxy.base).await;
    let body = rpc(1, "initialize");
    let res = http
        .post(format!("{}?tenant=a&x=%20y", proxy.mcp))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("cookie", "mcp_oauth_req=browser-secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        // What a gateway such as oauth2-proxy (or the client itself) says about the user.
        .header("x-forwarded-user", "admin")
        .header("x-forwarded-email", "admin@example.com")
        .header("x-forwarded-groups", "admins")
        .header("x-forwarded-access-token", "idp-token-3c9a")
        .header("x-forwarded-preferred-username", "admin")
        .header("x-forwarded-prefix", "/admin")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "443")
        .header("x-auth-request-user", "admin")
        .header("x-auth-request-access-token", "idp-token-3c9a")
        .header("remote-user", "admin")
        .header("x-remote-user", "admin")
        .header("x-original-url", "/admin")
        .header("x-original-uri", "/admin")
        .header("x-rewrite-url", "/admin")
        .header("true-client-ip", "6.6.6.6")
        .header("x-client-ip", "6.6.6.6")
        .header("cf-connecting-ip", "6.6.6.6")
        .header("x-cluster-client-ip", "6.6.6.6")
        .header("x-http-method-override", "PUT")
        .header("x-http-method", "PUT")
        .header("x-method-override", "PUT")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "hop")
        .header("x-client-header", "passes")
        .header("accept-encoding", "gzip, br")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["mcp-session-id"], SESSION);
    assert_eq!(h["x-upstream"], "yes");
    assert!(h.get("set-cookie").is_none(), "{h:?}");
    for dropped in [
        "www-authenticate",
        "clear-site-data",
        "alt-svc",
        "strict-transport-security",
        "refresh",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert!(h.get(dropped).is_none(), "{dropped}: {h:?}");
    }
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"ok": true}})
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.uri, "/mcp?tenant=a&x=%20y");
    assert_eq!(s.body, body.as_bytes());
    let authorization: Vec<_> = s.headers.get_all("authorization").iter().collect();
    assert_eq!(
        authorization,
        [format!("Bearer {UPSTREAM_SECRET}").as_str()]
    );
    assert_eq!(s.headers["x-api-key"], "k-42");
    assert!(s.headers.get("cookie").is_none(), "{:?}", s.headers);
    // The only X-Forwarded-* is the proxy's own, naming the TCP peer.
    let forwarded_for: Vec<_> = s.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(forwarded_for, ["127.0.0.1"]);
    for (name, _) in &s.headers {
        assert!(
            !name.as_str().starts_with("x-forwarded-") || name == "x-forwarded-for",
            "{name} reached the upstream"
        );
    }
    for dropped in [
        "forwarded",
        "x-real-ip",
        "x-auth-request-user",
        "x-auth-request-access-token",
        "remote-user",
        "x-remote-user",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-hop-secret",
    ] {
        assert!(
            s.headers.get(dropped).is_none(),
            "{dropped}: {:?}",
            s.headers
        );
    }
    assert!(
        !format!("{:?}", s.headers).contains("idp-token-3c9a"),
        "the identity provider's token reached the upstream"
    );
    // The upstream is asked for an uncompressed answer (the client asked for gzip, br).
    let accept_encoding: Vec<_> = s.headers.get_all("accept-encoding").iter().collect();
    assert_eq!(accept_encoding, ["identity"]);
    let upstream_authority = url.trim_start_matches("http://").trim_end_matches("/mcp");
    assert_eq!(s.headers["host"], upstream_authority);
    assert_eq!(s.headers["mcp-protocol-version"], "2025-11-25");
    assert_eq!(s.headers["x-client-header"], "passes");
    assert_eq!(s.headers["accept"], "application/json, text/event-stream");
    let everything = format!("{:?}", s.headers);
    assert!(
        !everything.contains(&token),
        "the client's token reached the upstream"
    );

    // The session's GET stream, resumed: Last-Event-ID and the session id pass.
    let res = http
        .get(&proxy.mcp)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", SESSION)
        .header("last-event-id", "6")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    assert_eq!(text, "id: 7\ndata: {\"resumed_after\":\"6\"}\n\n");
    // DELETE ends the session.
    let res = http
        .delete(&proxy.mcp)
        .bearer_auth(&token)
        .header("mcp-session-id", SESSION)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].headers["last-event-id"], "6");
    assert_eq!(seen[1].headers["mcp-session-id"], SESSION);
    assert_eq!(seen[2].method, "DELETE");
    assert_eq!(seen[2].headers["mcp-session-id"], SESSION);
    for s in &seen {
        let all = format!("{:?}", s.headers);
        assert!(
            !all.contains(&token),
            "the client's token reached the upstream"
        );
        assert_eq!(
            s.headers["authorization"],
            format!("Bearer {UPSTREAM_SECRET}")
        );
    }

    // Neither the upstream's credential nor the client's token is in the logs (at debug).
    let logs = proxy.logs();
    assert!(!logs.contains(UPSTREAM_SECRET), "upstream secret logged");
    assert!(!logs.contains("k-42"), "upstream key logged");
    assert!(!logs.contains(&token), "client token logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_reach_the_client_as_the_upstream_sends_them() {
    let (up, url) = upstream().await;
    let proxy = Running::upstream(&url, &[]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();
    let mut res = post(&http, &proxy, &token, "slow-sse", rpc(5, "tools/call")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    // The upstream sends its last event only after the client has seen the first: a proxy
    // that buffered the stream would never deliver it (bounded by the timeout).
    let mut got = first_event(&mut res).await;
    assert_eq!(got, "id: 1\ndata: {\"event\":\"first\"}\n\n");
    up.go.notify_one();
    while let Some(chunk) = res.chunk().await.unwrap() {
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        got,
        "id: 1\ndata: {\"event\":\"first\"}\n\nid: 2\ndata: {\"event\":\"last\"}\n\n"
    );

    // An event over the bound (16 MiB by default) ends the stream; the events before pass.
    let mut res = post(
        &http,
        &proxy,
        &token,
        "huge-sse-event",
        rpc(6, "tools/call"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut total = 0usize;
    let mut first = String::new();
    let ended = loop {
        match res.chunk().await {
            Ok(Some(c)) => {
                if first.len() < 64 {
                    first.push_str(&String::from_utf8_lossy(&c[..c.len().min(64)]));
                }
                total += c.len();
            }
            Ok(None) => break "clean",
            Err(_) => break "cut",
        }
    };
    assert!(first.starts_with("data: {\"small\":1}\n\n"), "{first}");
    assert!(total < (17 << 20), "{total} bytes relayed ({ended})");
    // The 200 was sent before the event came: the response is cut short (its chunked body
    // never ends), which the client sees as a failed read, not as a clean end.
    assert_eq!(ended, "cut", "{total} bytes relayed");

    // Without static upstream headers, no Authorization reaches the upstream at all.
    for s in up.seen() {
        assert!(s.headers.get("authorization").is_none(), "{:?}", s.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_answer_json_rpc_errors() {
    let (up, url) = upstream().await;
    // Long enough for 17 MiB through a debug build on a loaded machine.
    let proxy = Running::upstream(&url, &["--upstream-timeout", "5"]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();

    // A request body over 4 MiB: 413 before the upstream is contacted. Sent raw: the proxy
    // answers without reading what it refuses, so a client still writing the body could
    // lose the answer to the connection's reset; these send only what the proxy reads.
    let authority = proxy.base.trim_start_matches("http://").to_owned();
    let head = |framing: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
    };
    let before = up.seen().len();
    // Announced by Content-Length: refused from the head alone.
    let (status, body) = common::raw_http(
        &proxy.base,
        head(&format!("Content-Length: {}", 5 << 20)).as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_rpc_body(
        &serde_json::from_str(&body).unwrap(),
        -32600,
        &Value::Null,
        "request body larger than 4194304 bytes",
    );
    // Chunked, with no Content-Length: refused once more than 4 MiB has come.
    let mut chunked = head("Transfer-Encoding: chunked").into_bytes();
    let size = (4 << 20) + 1;
    chunked.extend_from_slice(format!("{size:x}\r\n").as_bytes());
    chunked.extend(std::iter::repeat_n(b' ', size));
    chunked.extend_from_slice(b"\r\n");
    let (status, body) = common::raw_http(&proxy.base, &chunked).await;
    assert_eq!(status, 413, "{body}");
    assert_rpc_body(
        &serde_json::from_str(&body).unwrap(),
        -32600,
        &Value::Null,
        "request body larger than 4194304 bytes",
    );
    assert_eq!(
        up.seen().len(),
        before,
        "an oversize body reached the upstream"
    );

    // Each upstream misbehaviour (the fake's route) becomes a JSON-RPC error with the
    // request's id and a status of its own:
    for (route, id, method, status, message) in [
        // no response headers within the timeout;
        (
            "hang",
            11,
            "tools/call",
            504,
            "upstream did not answer in time",
        ),
        // headers, then a JSON body that never ends;
        (
            "hang-body",
            17,
            "tools/call",
            504,
            "upstream did not answer in time",
        ),
        // the timeout covers the headers and the JSON body together: 3 s each is within
        // it, 6 s in all is not;
        (
            "slow-headers-slow-body",
            18,
            "tools/call",
            504,
            "upstream did not answer in time",
        ),
        // a compressed answer (the bounds would count compressed bytes, and the OAuth layer
        // could not read it);
        (
            "gzip",
            19,
            "tools/list",
            502,
            "upstream answered with a Content-Encoding other than identity",
        ),
        // JSON answers over 16 MiB, announced or not.
        (
            "huge-json",
            14,
            "tools/list",
            502,
            "upstream response larger than",
        ),
        (
            "huge-json-chunked",
            15,
            "tools/list",
            502,
            "upstream response larger than",
        ),
    ] {
        assert_rpc_error(
            post(&http, &proxy, &token, route, rpc(id, method)).await,
            status,
            json!(id),
            message,
        )
        .await;
    }
    // The upstream's own errors (5xx) pass unchanged: status, headers, body.
    let res = post(&http, &proxy, &token, "error-500", rpc(20, "tools/call")).await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["x-upstream"], "yes");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 20, "error": {"code": -32603, "message": "upstream broke"}})
    );
    let res = post(&http, &proxy, &token, "unavailable-503", rpc(21, "ping")).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(res.text().await.unwrap(), "down for maintenance");
    // A redirect is neither followed nor passed on.
    let res = post(&http, &proxy, &token, "redirect", rpc(12, "tools/list")).await;
    assert!(res.headers().get("location").is_none());
    assert_rpc_error(res, 502, json!(12), "upstream answered with a redirect").await;
    // The upstream refusing the proxy's credentials is not the client's problem: 502, and
    // no challenge that would send the client back through sign-in.
    let res = post(&http, &proxy, &token, "unauthorized", rpc(13, "tools/list")).await;
    assert!(res.headers().get("www-authenticate").is_none());
    assert_rpc_error(
        res,
        502,
        json!(13),
        "upstream refused the proxy's credentials",
    )
    .await;
    // Notifications and batches have no id to echo.
    assert_rpc_error(
        post(
            &http,
            &proxy,
            &token,
            "redirect",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_owned(),
        )
        .await,
        502,
        Value::Null,
        "upstream answered with a redirect",
    )
    .await;
    // Still serving normally afterwards.
    let res = post(&http, &proxy, &token, "", rpc(16, "ping")).await;
    assert_eq!(res.status(), 200);
    assert!(!proxy.logs().contains(&token), "client token logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502() {
    let port = free_port();
    let mut proxy = Running::upstream(&format!("http://127.0.0.1:{port}/mcp"), &[]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();
    assert_rpc_error(
        post(&http, &proxy, &token, "", rpc(21, "initialize")).await,
        502,
        json!(21),
        "upstream unreachable: connection refused",
    )
    .await;
    assert_rpc_error(
        post(
            &http,
            &proxy,
            &token,
            "",
            r#"{"jsonrpc":"2.0","id":"s-1","method":"ping"}"#.into(),
        )
        .await,
        502,
        json!("s-1"),
        "upstream unreachable",
    )
    .await;
    // Other methods too, without a JSON-RPC id.
    let res = http
        .get(&proxy.mcp)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_rpc_error(res, 502, Value::Null, "upstream unreachable").await;
    assert!(proxy.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_transports_methods_are_forwarded_and_get_and_delete_carry_no_body() {
    let (up, url) = upstream().await;
    let proxy = Running::upstream(&url, &[]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();
    // The OAuth layer reads the body of a POST only (to judge per-tool scopes): a `tools/call`
    // sent any other way must not reach the upstream, method override or not.
    let call = json!({"jsonrpc": "2.0", "id": 31, "method": "tools/call",
        "params": {"name": "write", "arguments": {}}})
    .to_string();
    for method in ["PUT", "PATCH", "OPTIONS", "PROPFIND"] {
        let res = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &proxy.mcp,
            )
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("x-http-method-override", "POST")
            .body(call.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], "GET, POST, DELETE", "{method}");
        assert_rpc_refusal(
            res,
            405,
            Value::Null,
            &format!("method {method} is not allowed"),
        )
        .await;
    }
    let res = http
        .head(&proxy.mcp)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, POST, DELETE");
    // GET with a body (announced by Content-Length) and an override to POST: 400.
    let res = http
        .get(&proxy.mcp)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .header("x-http-method-override", "POST")
        .body(call.clone())
        .send()
        .await
        .unwrap();
    assert_rpc_refusal(res, 400, Value::Null, "a GET request cannot carry a body").await;
    // DELETE with a chunked body (Transfer-Encoding, no Content-Length): 400.
    let chunked = futures_util::stream::once({
        let call = call.clone();
        async move { Ok::<_, std::io::Error>(Bytes::from(call)) }
    });
    let res = http
        .delete(&proxy.mcp)
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .unwrap();
    assert_rpc_refusal(
        res,
        400,
        Value::Null,
        "a DELETE request cannot carry a body",
    )
    .await;
    // A Connection header that is not visible ASCII: which headers it names cannot be told.
    let res = http
        .post(&proxy.mcp)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(
            "connection",
            http::HeaderValue::from_bytes(b"x-hop-secret, \xe9").unwrap(),
        )
        .header("x-hop-secret", "hop")
        .body(rpc(32, "tools/call"))
        .send()
        .await
        .unwrap();
    assert_rpc_refusal(
        res,
        400,
        json!(32),
        "the Connection header is not visible ASCII",
    )
    .await;
    assert!(up.seen().is_empty(), "{:?}", up.seen());

    // A browser's CORS preflight is still answered (by the OAuth layer, before the
    // forwarder), and the actual request gets the layer's CORS headers, not the upstream's.
    let inspector = "http://localhost:6274";
    let res = http
        .request(reqwest::Method::OPTIONS, &proxy.mcp)
        .header("origin", inspector)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let allowed = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("POST") && allowed.contains("DELETE"),
        "{allowed}"
    );
    assert_eq!(res.headers()["access-control-allow-origin"], inspector);
    let res = http
        .post(&proxy.mcp)
        .bearer_auth(&token)
        .header("origin", inspector)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(rpc(33, "ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let allow_origin: Vec<_> = res
        .headers()
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(allow_origin, [inspector]);
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "{:?}",
        res.headers()
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_query_parameters_cannot_shadow_the_upstreams_or_carry_a_token() {
    let (up, url) = upstream().await;
    let proxy = Running::upstream(&format!("{url}?tenant=acme"), &[]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();
    let shadowing = "a query parameter the upstream URL sets is not accepted";
    for (id, query, refusal) in [
        (41, "tenant=other", shadowing),
        (42, "x=1&Tenant=other", shadowing),
        (43, "ten%61nt=other", shadowing),
        // The library's layer refuses a query token (in any spelling) before the forwarder.
        (
            44,
            "access%5Ftoken=abc",
            "Access tokens are not accepted in the query string",
        ),
        (45, "x=1;tenant=other", shadowing),
    ] {
        let res = post_to(
            &http,
            &format!("{}?{query}", proxy.mcp),
            &token,
            "",
            rpc(id, "tools/call"),
        )
        .await;
        assert_rpc_refusal(res, 400, json!(id), refusal).await;
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    // Other parameters still pass, after the upstream URL's own.
    let res = post_to(
        &http,
        &format!("{}?cursor=abc&x=%20y", proxy.mcp),
        &token,
        "",
        rpc(46, "ping"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/mcp?tenant=acme&cursor=abc&x=%20y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_requests_beyond_the_limit_get_503_until_a_stream_ends_or_its_client_leaves() {
    let (up, url) = upstream().await;
    let proxy = Running::upstream(&url, &["--max-upstream-requests", "2"]).await;
    let token = obtain_token(&proxy.base).await;
    let http = client();
    let (h, p, t) = (&http, &proxy, token.as_str());
    let ping = move |id: u32| post(h, p, t, "", rpc(id, "ping"));

    // Two open streams hold both slots.
    let mut a = post(&http, &proxy, &token, "hang-sse", rpc(51, "tools/call")).await;
    assert_eq!(a.status(), 200);
    first_event(&mut a).await;
    let mut b = post(&http, &proxy, &token, "slow-sse", rpc(52, "tools/call")).await;
    assert_eq!(b.status(), 200);
    first_event(&mut b).await;
    // A third request: 503 with Retry-After, and the upstream never sees it.
    let before = up.seen().len();
    let res = ping(53).await;
    assert_eq!(res.headers()["retry-after"], "5");
    assert_rpc_error_code(
        res,
        503,
        -32000,
        json!(53),
        "too many upstream requests at once",
    )
    .await;
    assert_eq!(up.seen().len(), before);

    // A stream that ends frees its slot.
    up.go.notify_one();
    while b.chunk().await.unwrap().is_some() {}
    assert_eq!(ping(54).await.status(), 200);

    // So does a client that goes away in the middle of a stream.
    let mut c = post(&http, &proxy, &token, "hang-sse", rpc(55, "tools/call")).await;
    first_event(&mut c).await;
    assert_eq!(ping(56).await.status(), 503);
    drop(a);
    let mut freed = false;
    for _ in 0..100 {
        if ping(57).await.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        freed,
        "the slot of a stream whose client left was not freed"
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_session_header_never_reaches_the_upstream() {
    let (up, url) = upstream().await;
    let dir = TempDir::new("http-host-session");
    let store = dir.path().join("s.sqlite3");
    let proxy = Running::start(
        dir.path(),
        &[
            "--upstream",
            &url,
            "--store",
            store.to_str().unwrap(),
            "--host-session-header",
            "X-Sso-User",
            "--host-session-login-url",
            "https://sso.example.com/login",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        &[],
    )
    .await;
    // Signed in through the front proxy's header.
    let client_id = common::register(&proxy.base, "host session forward").await;
    let pkce = common::pkce();
    let authorize = common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp);
    let mut headers = HeaderMap::new();
    headers.insert("x-sso-user", "alice".parse().unwrap());
    let b = browser::Browser::with_client(
        "unused",
        "unused",
        browser::Browser::client_builder().default_headers(headers),
    );
    let callback = b.authorize(&authorize, browser::Decision::Approve).await;
    let code = browser::query_param(&callback, "code").expect("a code");
    let tokens = common::redeem(&proxy.base, &client_id, &code, &pkce.verifier).await;
    let token = tokens["access_token"].as_str().unwrap();

    // The front proxy adds the header to every request, MCP ones too (or a client sends
    // it): the upstream must not take it for the user.
    let res = client()
        .post(&proxy.mcp)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-sso-user", "admin")
        .body(rpc(61, "initialize"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.get("x-sso-user").is_none(),
        "{:?}",
        seen[0].headers
    );
    proxy.stop().await;
}
