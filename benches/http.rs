//! Loopback HTTP load test: an rmcp streamable HTTP server with scoped tools behind
//! `McpOAuthLayer`, against **the same server with the layer removed**, both over keep-alive
//! connections, for authenticated `tools/list` and `tools/call`.
//!
//! What it stands up, twice, on `127.0.0.1:0`:
//! - the quickstart's server: rmcp's `StreamableHttpService` (stateful sessions, SSE answers,
//!   the default config) over the quickstart's `#[scoped_tools]` server (one public and two
//!   scoped tools over in-memory files, `tests/support/quickstart_app.rs`); served by `axum::serve` with `TCP_NODELAY` set on every accepted connection
//!   (`ListenerExt::tap_io`), unless `--no-nodelay`;
//! - `protected`: behind `McpOAuthLayer` (lazy policy from `tool_requirements()`, an ES256
//!   `KeyRing`, the verified-token cache on, as configured by default);
//! - `plain`: the same service and router without the layer; since `#[requires_scopes]`
//!   checks the caller inside the tool and fails closed without one, a fixed `AuthContext` is
//!   put into every request's extensions (`axum::Extension`, one clone per request).
//!
//! The client: `--conns` workers (32 by default), each with its own `reqwest` client holding
//! one keep-alive HTTP/1.1 connection per server, each with its own MCP session
//! (`initialize`, then `notifications/initialized`, as rmcp requires). Every request carries
//! the same `Authorization: Bearer` header (an `at+jwt` signed by the key ring the layer
//! trusts, scope `files:read files:write`), so both servers parse the same bytes.
//!
//! The run interleaves: for each of `--rounds` rounds (3), for each operation (`tools/list`,
//! `tools/call` of `files_read`), it loads `protected` and `plain` in turn (the order flips
//! every round) for `--secs` seconds (2) each, all connections busy, so the machine's load
//! hits both alike. Before that, every connection is warmed and every answer checked once
//! (`tools/list` through the layer must show `securitySchemes`; `tools/call` must be a tool
//! result, not an error).
//!
//! It prints, per operation and server, the requests, req/s, p50 and p99 latency, and the
//! ratio protected/plain of req/s; then a verdict against the goal of issue 9 (each ratio
//! ≥ 0.9, each p50 < 5 ms). `--check` exits with status 1 when the goal is missed, so a
//! regression like the 40 ms Nagle stall (try `--no-nodelay`: p50 jumps to ~40 ms) or a
//! costly `tools/list` rewrite fails the run.
//!
//! Run it (about 30 s with the defaults, loopback only):
//!
//! ```text
//! cargo bench --bench http --features rmcp,macros
//! cargo bench --bench http --features rmcp,macros -- --secs 3 --rounds 3 --conns 32 --check
//! cargo bench --bench http --features rmcp,macros -- --no-nodelay --rounds 1
//! cargo bench --bench http --features rmcp,macros -- --no-shape   # layer without tools/list shaping
//! ```
//!
//! Results and the machine they came from are in `BENCHMARKS.md`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::serve::ListenerExt as _;
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::{AuthContext, McpOAuthConfig, McpOAuthLayer, TokenKind};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

const ISSUER: &str = "https://auth.example.com";
const PROTOCOL: &str = "2025-11-25";
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;
const CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"files_read","arguments":{"path":"welcome.txt"}}}"#;

/// The quickstart's tools, policy and files, in process.
#[path = "../tests/support/quickstart_app.rs"]
mod quickstart_app;
use quickstart_app::Files;

/// Command-line settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    conns: usize,
    secs: f64,
    rounds: usize,
    nodelay: bool,
    shape: bool,
    check: bool,
}

fn settings() -> Settings {
    let mut s = Settings {
        conns: 32,
        secs: 2.0,
        rounds: 3,
        nodelay: true,
        shape: true,
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--conns" => s.conns = num("--conns").max(1.0) as usize,
            "--secs" => s.secs = num("--secs").clamp(0.2, 20.0),
            "--rounds" => s.rounds = num("--rounds").clamp(1.0, 10.0) as usize,
            "--no-nodelay" => s.nodelay = false,
            "--no-shape" => s.shape = false,
            "--check" => s.check = true,
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    s
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves `app` on `127.0.0.1:0`; returns the MCP URL.
async fn serve(app: Router, nodelay: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(nodelay);
        });
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}/mcp")
}

fn mcp_service() -> StreamableHttpService<Files, LocalSessionManager> {
    StreamableHttpService::new(
        || Ok(Files::new()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}

/// One keep-alive connection with its MCP session.
#[derive(Clone)]
struct Conn {
    http: reqwest::Client,
    url: String,
    session: String,
    bearer: Arc<str>,
}

impl Conn {
    async fn open(url: &str, bearer: Arc<str>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .http1_only()
            .build()
            .expect("client");
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "http-bench", "version": "0"},
            },
        });
        let res = http
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", &*bearer)
            .body(init.to_string())
            .send()
            .await
            .expect("initialize");
        assert!(res.status().is_success(), "initialize: {}", res.status());
        let session = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("rmcp gives a session id")
            .to_owned();
        let _ = res.bytes().await.expect("initialize body");
        let conn = Self {
            http,
            url: url.to_owned(),
            session,
            bearer,
        };
        let (status, _) = conn
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        assert!(status.is_success(), "notifications/initialized: {status}");
        conn
    }

    async fn post(&self, body: &'static str) -> (reqwest::StatusCode, bytes::Bytes) {
        let res = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-session-id", &self.session)
            .header("authorization", &*self.bearer)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        (status, res.bytes().await.expect("body"))
    }
}

/// One request through `app` in-process, its body read to the end.
async fn in_process(app: &Router, session: &str, bearer: &str, body: &'static str) {
    use tower::ServiceExt as _;
    let req = http::Request::post("/mcp")
        .header("host", "127.0.0.1")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", PROTOCOL)
        .header("mcp-session-id", session)
        .header("authorization", bearer)
        .body(axum::body::Body::from(body))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    assert!(res.status().is_success(), "{}", res.status());
    let _ = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
}

/// Loads `conns` for `secs`, every connection busy; returns the latencies (µs) and the
/// elapsed time.
async fn load(conns: &[Conn], body: &'static str, secs: f64) -> (Vec<u32>, Duration) {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns.len());
    for c in conns {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            while Instant::now() < until {
                let t = Instant::now();
                let (status, _) = c.post(body).await;
                assert!(status.is_success(), "{status}");
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (all, start.elapsed())
}

/// Totals of one operation on one server over the run.
#[derive(Default)]
struct Tally {
    lat: Vec<u32>,
    time: Duration,
}

impl Tally {
    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.time.as_secs_f64().max(1e-9)
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.lat.sort_unstable();
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() - 1) as f64 * p).round() as usize;
        f64::from(self.lat[i]) / 1000.0
    }
}

async fn check_answers(protected: &Conn, plain: &Conn) {
    for (name, conn) in [("protected", protected), ("plain", plain)] {
        let (_, list) = conn.post(LIST).await;
        let list = String::from_utf8_lossy(&list);
        assert!(list.contains("\"tools\""), "{name} tools/list: {list}");
        let (_, call) = conn.post(CALL).await;
        let call = String::from_utf8_lossy(&call);
        assert!(
            call.contains("welcome.txt: Hello from the mcp-oauth quickstart!")
                && !call.contains("\"error\""),
            "{name} tools/call: {call}"
        );
    }
    let (_, list) = protected.post(LIST).await;
    let list = String::from_utf8_lossy(&list);
    assert!(
        list.contains("\"securitySchemes\""),
        "protected tools/list lacks securitySchemes: {list}"
    );
    // The top-level copy is the layer's (rmcp's `Tool` has no field for it).
    println!("protected tools/list answer:\n{list}");
}

fn main() -> ExitCode {
    let s = settings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(s))
}

async fn run(s: Settings) -> ExitCode {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).expect("key ring");
    // The layer's resource must be the URL it is served at; bind first, then build.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let resource = format!("http://{addr}/mcp");
    let config = McpOAuthConfig::builder()
        .resource(&resource)
        .issuer(ISSUER)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .key_ring(ring.clone())
        .policy(AccessPolicy::new().lazy().tools(Files::tool_requirements()))
        .tools_list_security_schemes(s.shape)
        .build()
        .expect("config");
    let protected_app = Router::new()
        .route_service("/mcp", mcp_service())
        .layer(McpOAuthLayer::new(config));
    let protected_inproc = protected_app.clone();
    let nodelay = s.nodelay;
    tokio::spawn(async move {
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(nodelay);
        });
        axum::serve(listener, protected_app).await.expect("serve");
    });
    // Without the layer, `#[requires_scopes]`' in-tool check fails closed (no caller in the
    // request). The plain server gets a fixed caller put in every request's extensions, which
    // costs one clone: the layer's whole work (reading the token, verifying it, the policy,
    // the `tools/list` shaping) is what is missing.
    let caller = AuthContext::new("bench-user", TokenKind::Jwt)
        .with_scopes(ScopeSet::parse("files:read files:write").expect("scopes"));
    let plain_app = Router::new()
        .route_service("/mcp", mcp_service())
        .layer(axum::Extension(caller));
    let plain_inproc = plain_app.clone();
    let plain_url = serve(plain_app, s.nodelay).await;

    let token = ring
        .sign(
            "at+jwt",
            &json!({
                "iss": ISSUER, "sub": "bench-user", "aud": resource, "client_id": "bench",
                "scope": "files:read files:write", "iat": now(), "exp": now() + 3600,
                "jti": "http-bench",
            }),
        )
        .expect("sign");
    let bearer: Arc<str> = format!("Bearer {token}").into();

    let mut protected = Vec::with_capacity(s.conns);
    let mut plain = Vec::with_capacity(s.conns);
    for _ in 0..s.conns {
        protected.push(Conn::open(&resource, bearer.clone()).await);
        plain.push(Conn::open(&plain_url, bearer.clone()).await);
    }
    if s.shape {
        check_answers(&protected[0], &plain[0]).await;
    }
    // Warm every connection and both code paths.
    for body in [LIST, CALL] {
        let _ = load(&protected, body, 0.3).await;
        let _ = load(&plain, body, 0.3).await;
    }

    println!(
        "loopback HTTP: {} keep-alive connections, {} rounds x {} s per case, TCP_NODELAY {}",
        s.conns,
        s.rounds,
        s.secs,
        if s.nodelay { "on" } else { "OFF" }
    );
    let ops = [("tools/list", LIST), ("tools/call", CALL)];
    let mut tallies: Vec<[Tally; 2]> = ops.iter().map(|_| Default::default()).collect();
    for round in 0..s.rounds {
        for (i, (_, body)) in ops.iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let conns = if which == 0 { &protected } else { &plain };
                let (lat, time) = load(conns, body, s.secs).await;
                let t = &mut tallies[i][which];
                t.lat.extend(lat);
                t.time += time;
            }
        }
    }

    println!(
        "{:<11} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "op", "server", "requests", "req/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut ok = true;
    for ((op, _), [p, u]) in ops.iter().zip(tallies.iter_mut()) {
        let ratio = p.rps() / u.rps().max(1e-9);
        for (name, t) in [("protected", &mut *p), ("plain", &mut *u)] {
            let p50 = t.pct(0.50);
            let p99 = t.pct(0.99);
            let shown_ratio = if name == "protected" {
                format!("{ratio:.2}x")
            } else {
                String::new()
            };
            println!(
                "{op:<11} {name:<10} {:>9} {:>9.0} {p50:>9.2} {p99:>9.2} {shown_ratio:>7}",
                t.lat.len(),
                t.rps()
            );
            if p50 >= 5.0 {
                println!("  MISSED: {op} {name} p50 {p50:.2} ms >= 5 ms");
                ok = false;
            }
        }
        if ratio < 0.9 {
            println!("  MISSED: {op} protected/plain {ratio:.2}x < 0.9x");
            ok = false;
        }
    }
    println!(
        "goal (issue 9: ratio >= 0.9x, p50 < 5 ms): {}",
        if ok { "met" } else { "MISSED" }
    );

    // The server's own cost per request, without sockets or the client: the same two
    // routers (sharing the sessions opened above), driven one request at a time in-process,
    // interleaved in blocks. Less sensitive to a loaded machine than the HTTP numbers.
    let apps = [
        (protected_inproc, protected[0].session.clone()),
        (plain_inproc, plain[0].session.clone()),
    ];
    let mut per_req = [[Duration::ZERO; 2]; 2];
    let block = 300u32;
    for round in 0..(s.rounds * 4) {
        for (i, (_, body)) in ops.iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let (app, session) = &apps[which];
                let t = Instant::now();
                for _ in 0..block {
                    in_process(app, session, &bearer, body).await;
                }
                per_req[i][which] += t.elapsed();
            }
        }
    }
    println!("in-process, one request at a time (µs per request, lower is better):");
    for ((op, _), [p, u]) in ops.iter().zip(per_req) {
        let n = f64::from(block) * (s.rounds * 4) as f64;
        let (p, u) = (p.as_secs_f64() * 1e6 / n, u.as_secs_f64() * 1e6 / n);
        println!(
            "{op:<11} protected {p:>7.1}  plain {u:>7.1}  layer adds {:>6.1} µs ({:.2}x throughput)",
            p - u,
            u / p
        );
    }
    if s.check && !ok {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
