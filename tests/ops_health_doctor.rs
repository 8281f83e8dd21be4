//! Issue 13 item 3: the readiness endpoint `/health` and the compliance doctor.
//!
//! - `/health` answers 200 with `oauth_compliant` on the quickstart's app (mounted with
//!   `server.mount`, so through the layer: its path is the crate's own, exactly), 503 naming
//!   the store when the store fails; a near miss (`/health/`) is the layer's.
//! - `doctor::check` against the quickstart's app reports compliant; against a hand-written
//!   misconfigured server it names each mismatch (a trailing-slash issuer, a wrong resource,
//!   no S256, no `none`, no `iss` support, no CORS, a skewed clock, no path-inserted
//!   metadata).
//! - `/health`'s `oauth_compliant` is that doctor's verdict, run in process against the
//!   mounted app (`doctor::check_app`, no feature needed) once and cached: true with no
//!   error on the quickstart; false naming the `challenge` finding for a server configured to
//!   answer unauthenticated calls `200` (tool-result challenges for every client); the same
//!   `run` and `computed_at` across requests. Composed by hand (`oauth_router`), the flag is
//!   the configuration's (`source: "configuration"`).
//! - `/health` bounds its cost: one readiness probe of the store per second however many
//!   requests, and a stale doctor report served while the new run goes on in the background
//!   (on tokio's paused clock); the network doctor reads at most 1 MiB of an answer.
#![cfg(feature = "server")]

#[cfg(all(feature = "rmcp", feature = "macros"))]
#[path = "support/quickstart_app.rs"]
mod quickstart_app;

#[cfg(all(feature = "rmcp", feature = "macros"))]
use std::sync::Arc;
#[cfg(all(feature = "rmcp", feature = "macros"))]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(all(feature = "rmcp", feature = "macros"))]
use async_trait::async_trait;
use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::doctor::{self, Severity};
use mcp_oauth::resource::{AccessPolicy, ChallengeStyle, ChallengeStyleRule};
use mcp_oauth::server::AuthorizationServer;
#[cfg(all(feature = "rmcp", feature = "macros"))]
use mcp_oauth::store::{Client, ClientFingerprint, ClientStore, MemoryStore, StoreError};
use mcp_oauth::{McpOAuth, McpOAuthConfig, McpOAuthConfigBuilder, oauth_router};
#[cfg(all(feature = "rmcp", feature = "macros"))]
use rmcp::transport::streamable_http_server::StreamableHttpService;
#[cfg(all(feature = "rmcp", feature = "macros"))]
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::{Value, json};

/// Serves `app` on `127.0.0.1:0` (the base URL is known before the app is built).
#[cfg(feature = "doctor")]
async fn serve_at<F: FnOnce(&str) -> Router>(make: F) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = make(&base);
    tokio::spawn(async move { mcp_oauth::serve(listener, app).await.unwrap() });
    base
}

/// The quickstart's tools, configuration and server, mounted the one way (`server.mount`).
#[cfg(all(feature = "rmcp", feature = "macros"))]
async fn quickstart(server: AuthorizationServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = quickstart_router(&base, &server);
    tokio::spawn(async move { mcp_oauth::serve(listener, app).await.unwrap() });
    base
}

/// The quickstart's whole app for `base`, mounted with `server.mount`.
#[cfg(all(feature = "rmcp", feature = "macros"))]
fn quickstart_router(base: &str, server: &AuthorizationServer) -> Router {
    let (_, cfg) = quickstart_app::app(base, server.clone());
    let files = quickstart_app::Files::new();
    let mcp = StreamableHttpService::new(
        move || Ok(files.clone()),
        Arc::new(LocalSessionManager::default()),
        Default::default(),
    );
    server.mount(&cfg, mcp).unwrap()
}

/// The quickstart with a [`Flaky`] client store (down from the start when `down`); the
/// switch and the base URL.
#[cfg(all(feature = "rmcp", feature = "macros"))]
async fn flaky_quickstart(down: bool) -> (Arc<AtomicBool>, String) {
    let (down, _, server) = flaky_server(down).await;
    (down, quickstart(server).await)
}

/// An authorization server on a [`Flaky`] client store: the switch, the probe counter and
/// the server.
#[cfg(all(feature = "rmcp", feature = "macros"))]
async fn flaky_server(
    down: bool,
) -> (
    Arc<AtomicBool>,
    Arc<std::sync::atomic::AtomicUsize>,
    AuthorizationServer,
) {
    let down = Arc::new(AtomicBool::new(down));
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = quickstart_app::authorization_server(true, "demo", "")
        .client_store(Flaky {
            inner: MemoryStore::new(),
            down: down.clone(),
            probes: probes.clone(),
        })
        .grant_store(MemoryStore::new())
        .build()
        .await
        .unwrap();
    (down, probes, server)
}

/// A client store over memory whose reads fail while `down` is set.
#[cfg(all(feature = "rmcp", feature = "macros"))]
struct Flaky {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    /// How many client lookups `/health`'s readiness probe made.
    probes: Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(all(feature = "rmcp", feature = "macros"))]
impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("connection refused"));
        }
        Ok(())
    }
}

#[cfg(all(feature = "rmcp", feature = "macros"))]
#[async_trait]
impl ClientStore for Flaky {
    async fn insert_client(&self, c: Client) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_client(c).await
    }
    async fn upsert_client(&self, c: Client) -> Result<(), StoreError> {
        self.check()?;
        self.inner.upsert_client(c).await
    }
    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        if id == "mcp-oauth:health-probe" {
            self.probes.fetch_add(1, Ordering::SeqCst);
        }
        self.check()?;
        self.inner.get_client(id).await
    }
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_client(id).await
    }
    async fn touch_client(&self, id: &str, now: u64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.touch_client(id, now).await
    }
    async fn count_clients(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count_clients().await
    }
    async fn find_client_by_fingerprint(
        &self,
        fp: &ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        self.check()?;
        self.inner.find_client_by_fingerprint(fp).await
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let res = reqwest::get(url).await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[cfg(all(feature = "rmcp", feature = "macros"))]
#[tokio::test]
async fn health_is_ready_through_the_layer_and_503_naming_the_failing_store() {
    let (down, base) = flaky_quickstart(false).await;

    let (status, body) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 200, "{body}");
    let mut shape = body.clone();
    let compliance = shape.as_object_mut().unwrap().remove("compliance").unwrap();
    assert_eq!(
        shape,
        json!({
            "status": "ok",
            "oauth_compliant": true,
            "checks": {"store": "ok", "keys": "ok"},
            "problems": [],
        })
    );
    assert_eq!(compliance["source"], "doctor", "{body}");
    // Exactly the path: a near miss is guarded like any other path of the app.
    let res = reqwest::get(format!("{base}/health/")).await.unwrap();
    assert_ne!(res.status(), 200);

    // The readiness answer is reused for a second: the next one after that sees the store.
    let settle = mcp_oauth::server::health::READINESS_TTL + std::time::Duration::from_millis(100);
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(settle).await;
    let (status, body) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["store"], "failed");
    assert_eq!(body["checks"]["keys"], "ok");
    assert!(!body.to_string().contains("connection refused"), "{body}");

    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(settle).await;
    assert_eq!(get_json(&format!("{base}/health")).await.0, 200);
}

/// `/health` (in process, on tokio's paused clock) bounds what a flood of probes costs and
/// never holds a probe up behind a doctor run after the first one:
/// - 50 concurrent requests make one readiness probe of the store; a store that goes down is
///   seen once [`READINESS_TTL`](mcp_oauth::server::health::READINESS_TTL) has passed;
/// - once the doctor's report is older than
///   [`COMPLIANCE_TTL`](mcp_oauth::server::health::COMPLIANCE_TTL), the next request is
///   answered with it at once while a new run goes on in the background, and a later request
///   gets the new run.
#[cfg(all(feature = "rmcp", feature = "macros"))]
#[tokio::test(start_paused = true)]
async fn health_probes_are_bounded_and_the_doctor_reruns_in_the_background() {
    use mcp_oauth::server::health::{COMPLIANCE_TTL, READINESS_TTL};
    use tower::ServiceExt as _;

    let (down, probes, server) = flaky_server(false).await;
    let app = quickstart_router("http://127.0.0.1:8000", &server);
    let health = |app: Router| async move {
        let req = http::Request::get("/health")
            .header("host", "127.0.0.1:8000")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };

    let answers = futures_util::future::join_all((0..50).map(|_| health(app.clone()))).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        probes.load(Ordering::SeqCst),
        1,
        "one readiness probe for 50 requests"
    );
    assert!(answers.iter().all(|(_, b)| b["compliance"]["run"] == 1));

    down.store(true, Ordering::SeqCst);
    assert_eq!(
        health(app.clone()).await.0,
        200,
        "inside the readiness interval"
    );
    tokio::time::advance(READINESS_TTL).await;
    assert_eq!(health(app.clone()).await.0, 503);
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    down.store(false, Ordering::SeqCst);

    tokio::time::advance(COMPLIANCE_TTL).await;
    let (status, stale) = health(app.clone()).await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(
        stale["compliance"]["run"], 1,
        "the last report, served at once"
    );
    let mut fresh = stale;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        fresh = health(app.clone()).await.1;
        if fresh["compliance"]["run"] == 2 {
            break;
        }
    }
    assert_eq!(fresh["compliance"]["run"], 2, "{fresh}");
    assert_eq!(fresh["oauth_compliant"], true, "{fresh}");
}

#[cfg(all(feature = "rmcp", feature = "macros", feature = "doctor"))]
#[tokio::test]
async fn the_doctor_finds_the_quickstart_compliant() {
    let server = quickstart_app::authorization_server(true, "demo", "")
        .build()
        .await
        .unwrap();
    let base = quickstart(server).await;
    let report = doctor::check(&format!("{base}/mcp")).await;
    assert!(report.compliant(), "{report}");
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!(report.issuer.as_deref(), Some(base.as_str()));
    // It read what clients read: the challenge, both metadata locations, the AS metadata
    // (RFC 8414 and the OIDC fallback) and the key set.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks.json",
    ] {
        let url = format!("{base}{path}");
        assert!(
            report.fetched.iter().any(|(u, s)| *u == url && *s == 200),
            "{url}: {report}"
        );
    }
}

/// A server that gets everything wrong a client notices.
fn misconfigured(base: &str) -> Router {
    let resource_metadata = format!("{base}/.well-known/oauth-protected-resource");
    let challenge = format!(r#"Bearer resource_metadata="{resource_metadata}""#);
    let prm = json!({
        // The MCP URL with a trailing slash: not the URL clients were given.
        "resource": format!("{base}/mcp/"),
        "authorization_servers": [base],
    });
    let asm = json!({
        // The issuer with a trailing slash: not the one the resource names.
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": "http://auth.example.com/token",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["plain"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    });
    // An hour in the past.
    let skewed = "Thu, 01 Jan 2015 00:00:00 GMT";
    Router::new()
        .route(
            "/mcp",
            post(move || {
                let challenge = challenge.clone();
                async move {
                    (
                        http::StatusCode::UNAUTHORIZED,
                        [("www-authenticate", challenge), ("date", skewed.to_owned())],
                        "",
                    )
                        .into_response()
                }
            }),
        )
        // Only at the root (no path-inserted document), and without CORS.
        .route(
            "/.well-known/oauth-protected-resource",
            get(move || {
                let prm = prm.clone();
                async move { axum::Json(prm) }
            }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || {
                let asm = asm.clone();
                async move { axum::Json(asm) }
            }),
        )
}

#[cfg(feature = "doctor")]
#[tokio::test]
async fn the_doctor_names_each_mismatch_of_a_misconfigured_server() {
    let base = serve_at(misconfigured).await;
    let report = doctor::check(&format!("{base}/mcp")).await;
    assert!(!report.compliant(), "{report}");
    let text = report.to_string();
    assert!(text.contains("oauth_compliant: false"), "{text}");
    for (check, needle) in [
        ("resource_metadata", "path-inserted"),
        ("resource", "/mcp/\""),
        ("issuer", &format!("says issuer \"{base}/\"")),
        ("pkce", "S256"),
        ("public_clients", "none"),
        ("iss", "authorization_response_iss_parameter_supported"),
        ("cors", "Access-Control-Allow-Origin"),
        ("https", "http://auth.example.com/token"),
        ("clock", "off this machine's"),
    ] {
        let found: Vec<_> = report.findings_of(check).collect();
        assert!(
            found
                .iter()
                .any(|f| f.severity == Severity::Error && f.message.contains(needle)),
            "{check} ({needle}) not named: {text}"
        );
    }
    // A registration warning, not an error: clients could use a pre-registered id.
    assert!(
        report
            .findings_of("registration")
            .all(|f| f.severity == Severity::Warning)
    );
    assert_eq!(report.findings_of("registration").count(), 1, "{text}");
}

/// With the feature `metrics`: a failing store is counted (`mcp_oauth_store_errors_total`),
/// at `/health` and at the token endpoint, and `/health` requests by status.
#[cfg(all(feature = "metrics", feature = "rmcp", feature = "macros"))]
#[tokio::test]
async fn store_errors_are_counted() {
    // One global recorder per process (this test binary).
    let handle = mcp_oauth::metrics::install_prometheus().unwrap();
    let (_down, base) = flaky_quickstart(true).await;
    let count = |text: &str, line_start: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(line_start))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let before = handle.render();
    assert_eq!(get_json(&format!("{base}/health")).await.0, 503);
    let res = reqwest::Client::new()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "someone"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let after = handle.render();
    let errors = r#"mcp_oauth_store_errors_total{kind="unavailable"}"#;
    assert!(
        count(&after, errors) - count(&before, errors) >= 2.0,
        "{after}"
    );
    // At least: the recorder is global to this test binary, and the other tests here ask
    // `/health` concurrently (one of them of a failing store too).
    let health = r#"mcp_oauth_http_requests_total{endpoint="health",status="503"}"#;
    assert!(
        count(&after, health) - count(&before, health) >= 1.0,
        "{after}"
    );
}

/// `/health`'s compliance fields: `(status, oauth_compliant, compliance)`.
async fn health_of(base: &str) -> (u16, bool, Value) {
    let (status, body) = get_json(&format!("{base}/health")).await;
    let compliant = body["oauth_compliant"]
        .as_bool()
        .unwrap_or_else(|| panic!("oauth_compliant is not a boolean: {body}"));
    (status, compliant, body["compliance"].clone())
}

/// The error findings of a health `compliance` object.
fn errors(compliance: &Value) -> Vec<&Value> {
    compliance["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings list: {compliance}"))
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect()
}

#[cfg(all(feature = "rmcp", feature = "macros"))]
#[tokio::test]
async fn health_shows_the_doctors_verdict_on_the_quickstart_computed_once() {
    let server = quickstart_app::authorization_server(true, "demo", "")
        .build()
        .await
        .unwrap();
    let base = quickstart(server).await;
    let (status, compliant, first) = health_of(&base).await;
    assert_eq!(status, 200, "{first}");
    assert!(compliant, "{first}");
    assert_eq!(first["source"], "doctor", "{first}");
    assert_eq!(
        first["resources"],
        json!([format!("{base}/mcp")]),
        "{first}"
    );
    assert!(errors(&first).is_empty(), "{first}");
    // In process the clock check is skipped: the quickstart has no finding at all.
    assert_eq!(first["findings"], json!([]), "{first}");
    assert!(first["computed_at"].as_u64().unwrap() > 0, "{first}");
    // Cached: the second request serves the same run.
    let (_, _, second) = health_of(&base).await;
    assert_eq!(first["run"], 1, "{first}");
    assert_eq!(second["run"], first["run"], "{second}");
    assert_eq!(second["computed_at"], first["computed_at"], "{second}");
}

/// An authorization server and a minimal MCP endpoint (`POST` answers a JSON-RPC result),
/// mounted with `server.mount` on a loopback port; `configure` adjusts the configuration.
async fn plain_mount(
    configure: impl FnOnce(McpOAuthConfigBuilder) -> McpOAuthConfigBuilder,
) -> String {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("demo"))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = configure(
        McpOAuthConfig::builder()
            .resource(format!("{base}/mcp"))
            .issuer(&base)
            .scope("read", "Read")
            .authorization_server(&server),
    )
    .build()
    .unwrap();
    let mcp = post(|| async { axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {}})) });
    let app = server.mount(&cfg, mcp).unwrap();
    tokio::spawn(async move { mcp_oauth::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn health_of_a_plain_mount_is_compliant_and_cached() {
    let base = plain_mount(|b| b).await;
    let (status, compliant, first) = health_of(&base).await;
    assert_eq!(status, 200, "{first}");
    assert!(compliant, "{first}");
    assert!(errors(&first).is_empty(), "{first}");
    for _ in 0..3 {
        let (_, _, again) = health_of(&base).await;
        assert_eq!(again["run"], 1, "{again}");
        assert_eq!(again["computed_at"], first["computed_at"], "{again}");
    }
}

#[tokio::test]
async fn health_names_the_doctors_error_when_unauthenticated_calls_get_200() {
    // Lazy authentication (initialize is public) and tool-result challenges for every
    // client (ChatGPT's form): no unauthenticated POST ever answers 401, which Claude, VS
    // Code and the SDKs need to start the flow. The configuration alone looks fine.
    let base = plain_mount(|b| {
        b.policy(AccessPolicy::new().lazy())
            .challenge_style(ChallengeStyleRule::Always(ChallengeStyle::ToolResult))
    })
    .await;
    let (status, compliant, compliance) = health_of(&base).await;
    // Readiness alone decides the status.
    assert_eq!(status, 200, "{compliance}");
    assert!(!compliant, "{compliance}");
    assert_eq!(compliance["source"], "doctor", "{compliance}");
    let errs = errors(&compliance);
    assert!(
        errs.iter().any(|f| f["check"] == "challenge"
            && f["resource"] == format!("{base}/mcp")
            && f["message"].as_str().unwrap().contains("expect 401")),
        "{compliance}"
    );
    let (_, body) = get_json(&format!("{base}/health")).await;
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("expect 401")),
        "{body}"
    );
}

#[tokio::test]
async fn health_of_a_hand_composed_router_is_the_configurations() {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("demo"))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{base}/mcp"))
        .issuer(&base)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let mcp = post(|| async { "{}" });
    let app = Router::new()
        .route_service("/mcp", McpOAuth::new(mcp, cfg.clone()))
        .merge(oauth_router(&cfg, &server));
    tokio::spawn(async move { mcp_oauth::serve(listener, app).await.unwrap() });
    let (status, compliant, compliance) = health_of(&base).await;
    assert_eq!(status, 200, "{compliance}");
    assert!(compliant, "{compliance}");
    assert_eq!(compliance["source"], "configuration", "{compliance}");
    assert_eq!(compliance["run"], 0, "{compliance}");
}

#[tokio::test]
async fn the_doctor_in_process_names_each_mismatch_but_the_clock() {
    let base = "http://127.0.0.1:9";
    let app = misconfigured(base);
    let report = doctor::check_app(&app, &format!("{base}/mcp")).await;
    assert!(!report.compliant(), "{report}");
    let text = report.to_string();
    for (check, needle) in [
        ("resource_metadata", "path-inserted"),
        ("resource", "/mcp/\""),
        ("issuer", &format!("says issuer \"{base}/\"")),
        ("pkce", "S256"),
        ("public_clients", "none"),
        ("iss", "authorization_response_iss_parameter_supported"),
        ("cors", "Access-Control-Allow-Origin"),
        ("https", "http://auth.example.com/token"),
    ] {
        assert!(
            report
                .findings_of(check)
                .any(|f| f.severity == Severity::Error && f.message.contains(needle)),
            "{check} ({needle}) not named: {text}"
        );
    }
    // The skewed Date is not read in process.
    assert_eq!(report.findings_of("clock").count(), 0, "{text}");
}

/// The network doctor reads at most 1 MiB of an answer: a server sending an endless
/// metadata document gets an error finding, not a doctor that reads forever.
#[cfg(feature = "doctor")]
#[tokio::test]
async fn the_doctor_refuses_an_oversized_answer() {
    let base = serve_at(|base| {
        let prm = format!("{base}/.well-known/oauth-protected-resource/mcp");
        Router::new()
            .route(
                "/mcp",
                post(move || async move {
                    (
                        http::StatusCode::UNAUTHORIZED,
                        [(
                            http::header::WWW_AUTHENTICATE,
                            format!("Bearer resource_metadata=\"{prm}\""),
                        )],
                    )
                        .into_response()
                }),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(|| async {
                    // 4 MiB of white space, then an object: valid JSON, far too big.
                    let mut body = vec![b' '; 4 << 20];
                    body.extend_from_slice(b"{}");
                    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
                }),
            )
    })
    .await;
    let report = doctor::check(&format!("{base}/mcp")).await;
    assert!(!report.compliant(), "{report}");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("larger than 1024 KiB")),
        "{report}"
    );
}
