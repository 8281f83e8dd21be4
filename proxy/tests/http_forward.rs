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
use common::{Running, free_port, obtain_token};
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
        (_, "hang") => {
            std::future::pending::<()>().await;
            unreachable!()
        }
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
    http.post(&proxy.mcp)
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

/// Checks a forwarder error: status, JSON-RPC shape, code, id, message prefix.
async fn assert_rpc_error(res: reqwest::Response, status: u16, id: Value, prefix: &str) {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], -32603, "{body}");
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
    assert!(h.get("www-authenticate").is_none(), "{h:?}");
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
    assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
    for dropped in [
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-hop-secret",
        "accept-encoding",
    ] {
        assert!(
            s.headers.get(dropped).is_none(),
            "{dropped}: {:?}",
            s.headers
        );
    }
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
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !got.contains("\n\n") {
            let chunk = res.chunk().await.unwrap().expect("stream ended early");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the first event did not arrive before the last was sent");
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

    // A request body over 4 MiB: 413 before the upstream is contacted.
    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x".repeat(5 << 20)}}})
    .to_string();
    let before = up.seen().len();
    let res = post(&http, &proxy, &token, "", big).await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        up.seen().len(),
        before,
        "an oversize body reached the upstream"
    );

    // No response headers within the timeout: 504, with the request's id.
    assert_rpc_error(
        post(&http, &proxy, &token, "hang", rpc(11, "tools/call")).await,
        504,
        json!(11),
        "upstream did not answer in time",
    )
    .await;
    // Headers, then a JSON body that never ends: 504 too.
    assert_rpc_error(
        post(&http, &proxy, &token, "hang-body", rpc(17, "tools/call")).await,
        504,
        json!(17),
        "upstream did not answer in time",
    )
    .await;
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
    // JSON answers over 16 MiB: 502, announced or not.
    assert_rpc_error(
        post(&http, &proxy, &token, "huge-json", rpc(14, "tools/list")).await,
        502,
        json!(14),
        "upstream response larger than",
    )
    .await;
    assert_rpc_error(
        post(
            &http,
            &proxy,
            &token,
            "huge-json-chunked",
            rpc(15, "tools/list"),
        )
        .await,
        502,
        json!(15),
        "upstream response larger than",
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
