//! Server-side cost of the embedded authorization server, in process (`oauth_router` and the
//! quickstart app driven with `tower::ServiceExt::oneshot`, no sockets), on the memory store:
//!
//! - `token/code_exchange`: one `authorization_code` grant (client lookup, code taken once,
//!   PKCE S256 check, family creation, an ES256 access token, a refresh token). The codes are
//!   put straight into the grant store outside the timing, so only the exchange is measured;
//! - `token/refresh`: one `refresh_token` grant with rotation (each iteration presents the
//!   token the previous one returned);
//! - `flow/full`: what a client's whole first connection costs the server:
//!   `GET /authorize` (with `InsecureAutoApprove`, so it answers the code at once) →
//!   `POST /token` → MCP `initialize` → `tools/call files_read` with the new token, through
//!   `McpOAuthLayer` and rmcp.
//!
//! ```text
//! cargo bench --features rmcp --bench authorization_server
//! ```
//!
//! Token endpoint rate limits are off here (the default, 120 per minute per address, would
//! measure the limiter's refusals).

#[path = "../tests/support/quickstart_app.rs"]
mod quickstart_app;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt as _;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, RateLimit, StaticClient};
use mcp_oauth::store::{AuthorizationCode, SecretHash};
use serde_json::Value;
use sha2::Digest as _;
use tower::ServiceExt as _;

const CLIENT_ID: &str = "bench-client";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "bench-code-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
const ADDR: &str = "127.0.0.1:8000";

fn challenge() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The quickstart app with a pre-registered public client and no token rate limit.
async fn app(auto_approve: bool) -> (Router, AuthorizationServer, String) {
    let server = quickstart_app::authorization_server(auto_approve, "demo", "bench-password")
        .client(StaticClient::public(CLIENT_ID, [REDIRECT]))
        .token_rate_limit(RateLimit::unlimited())
        .authorize_rate_limit(RateLimit::unlimited())
        .build()
        .await
        .unwrap();
    let (app, config) = quickstart_app::app(&format!("http://{ADDR}"), server.clone());
    let resource = config.resource().to_owned();
    (app, server, resource)
}

fn form_request(uri: &str, form: &[(&str, &str)]) -> Request<Body> {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    Request::post(uri)
        .header("host", ADDR)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (u16, http::HeaderMap, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

async fn token(app: &Router, form: &[(&str, &str)]) -> Value {
    let (status, _, body) = send(app, form_request("/token", form)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

async fn put_code(server: &AuthorizationServer, resource: &str, code: &str) {
    let now = now();
    server
        .grant_store()
        .put_code(
            SecretHash::of(code),
            AuthorizationCode {
                client_id: CLIENT_ID.to_owned(),
                redirect_uri: REDIRECT.to_owned(),
                redirect_uri_in_request: true,
                code_challenge: challenge(),
                scope: ScopeSet::parse("files:read").unwrap(),
                resource: resource.to_owned(),
                subject: "demo".to_owned(),
                claims: serde_json::Map::new(),
                auth_time: now,
                expires_at: now + 600,
            },
        )
        .await
        .unwrap();
}

fn exchange_form(code: &str) -> [(&'static str, &str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", CLIENT_ID),
        ("code_verifier", VERIFIER),
    ]
}

/// A JSON-RPC POST to `/mcp`.
fn mcp(body: &Value, token: &str, session: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/mcp")
        .header("host", ADDR)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {token}"));
    if let Some(s) = session {
        b = b
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    b.body(Body::from(body.to_string())).unwrap()
}

/// One whole first connection; returns the session id (to close it outside the timing).
async fn full_flow(app: &Router, n: u64) -> String {
    let state = format!("s{n}");
    let authorize = format!(
        "/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state={state}",
        form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        challenge()
    );
    let req = Request::get(authorize)
        .header("host", ADDR)
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(app, req).await;
    assert_eq!(status, 302, "{}", String::from_utf8_lossy(&body));
    let location = url::Url::parse(headers["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens = token(app, &exchange_form(&code)).await;
    let access = tokens["access_token"].as_str().unwrap();

    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}});
    let (status, headers, body) = send(app, mcp(&init, access, None)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = send(app, mcp(&initialized, access, Some(&session))).await;
    assert_eq!(status, 202);
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "files_read", "arguments": {"path": "welcome.txt"}}});
    let (status, _, body) = send(app, mcp(&call, access, Some(&session))).await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        status == 200 && text.contains("read by demo"),
        "{status} {text}"
    );
    session
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));

    let (router, server, resource) = rt.block_on(app(false));
    let counter = AtomicU64::new(0);
    group.bench_function("code_exchange", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (router, server, resource) = (router.clone(), server.clone(), resource.clone());
            let counter = &counter;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let code = format!("bench-code-{}", counter.fetch_add(1, Ordering::Relaxed));
                    put_code(&server, &resource, &code).await;
                    let start = Instant::now();
                    let t = token(&router, &exchange_form(&code)).await;
                    total += start.elapsed();
                    assert!(t["refresh_token"].is_string());
                }
                total
            }
        });
    });

    // One grant, refreshed over and over (each refresh presents the previous successor).
    let first = rt.block_on(async {
        put_code(&server, &resource, "bench-refresh-seed").await;
        token(&router, &exchange_form("bench-refresh-seed")).await
    });
    let current = std::sync::Mutex::new(first["refresh_token"].as_str().unwrap().to_owned());
    group.bench_function("refresh", |b| {
        b.to_async(&rt).iter(|| {
            let router = router.clone();
            let presented = current.lock().unwrap().clone();
            let current = &current;
            async move {
                let t = token(
                    &router,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", presented.as_str()),
                        ("client_id", CLIENT_ID),
                    ],
                )
                .await;
                *current.lock().unwrap() = t["refresh_token"].as_str().unwrap().to_owned();
            }
        });
    });
    group.finish();

    let mut group = c.benchmark_group("flow");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    let (router, _, _) = rt.block_on(app(true));
    let counter = AtomicU64::new(0);
    group.bench_function("full", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let router = router.clone();
            let counter = &counter;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let start = Instant::now();
                    let session = full_flow(&router, n).await;
                    total += start.elapsed();
                    // Close the MCP session outside the timing, so sessions do not pile up.
                    let req = Request::delete("/mcp")
                        .header("host", ADDR)
                        .header("mcp-session-id", session)
                        .body(Body::empty())
                        .unwrap();
                    let _ = router.clone().oneshot(req).await;
                }
                total
            }
        });
    });
    group.finish();
}

criterion_group!(authorization_server, benches);
criterion_main!(authorization_server);
