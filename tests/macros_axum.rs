//! `#[requires_scopes]` on axum handlers behind `McpOAuthLayer`: a caller lacking the scope
//! gets the `403 insufficient_scope` challenge before the handler body runs; one holding it
//! (directly or through the scope hierarchy) gets through.
#![cfg(feature = "macros")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, Response, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, AuthRejection, ScopeList as _};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, requires_scopes};
use serde_json::json;
use tower::ServiceExt as _;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

thread_local! {
    /// How often a handler body ran on this thread: a refused request must not reach it.
    /// Per thread, because each `#[tokio::test]` drives the app in-process on its own
    /// current-thread runtime while other tests run in parallel on theirs.
    static BODIES_RUN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn bodies_run() -> usize {
    BODIES_RUN.with(std::cell::Cell::get)
}

fn body_ran() {
    BODIES_RUN.with(|n| n.set(n.get() + 1));
}

#[requires_scopes("files:write")]
async fn upload(body: String) -> String {
    body_ran();
    format!("stored {} bytes", body.len())
}

/// Several scopes, plus the caller through `Auth`.
#[requires_scopes("files:read", "files:write")]
async fn sync(auth: Auth) -> String {
    body_ran();
    format!("synced for {}", auth.subject())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Fixture {
    ring: KeyRing,
    app: Router,
}

fn fixture() -> Fixture {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .scope("admin", "Administer")
        .scope_implies("admin", ["files:write"])
        .scope_implies("files:write", ["files:read"])
        .policy(AccessPolicy::new())
        .key_ring(ring.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/upload", post(upload))
        .route("/sync", post(sync))
        .layer(McpOAuthLayer::new(cfg));
    Fixture { ring, app }
}

impl Fixture {
    fn token(&self, scope: &str) -> String {
        static JTI: AtomicUsize = AtomicUsize::new(0);
        self.ring
            .sign(
                "at+jwt",
                &json!({
                    "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1",
                    "scope": scope, "iat": now(), "exp": now() + 600,
                    "jti": format!("axum-{}", JTI.fetch_add(1, Ordering::Relaxed)),
                }),
            )
            .unwrap()
    }

    async fn post(&self, path: &str, scope: Option<&str>) -> Response<Body> {
        let mut req = Request::post(path);
        if let Some(scope) = scope {
            req = req.header("authorization", format!("Bearer {}", self.token(scope)));
        }
        self.app
            .clone()
            .oneshot(req.body(Body::from("hello")).unwrap())
            .await
            .unwrap()
    }
}

fn www(res: &Response<Body>) -> &str {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

async fn text(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn the_marker_records_the_scopes() {
    assert_eq!(__McpOAuthScopes_upload::SCOPES, ["files:write"]);
    assert_eq!(__McpOAuthScopes_sync::SCOPES, ["files:read", "files:write"]);
}

#[tokio::test]
async fn missing_scope_is_a_403_challenge_before_the_body_runs() {
    let f = fixture();
    let before = bodies_run();
    let res = f.post("/upload", Some("files:read")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        www(&res),
        format!(
            r#"Bearer resource_metadata="{PRM}", scope="files:read files:write", error="insufficient_scope", error_description="The access token lacks a scope this request needs""#
        )
    );
    assert!(matches!(
        res.extensions().get::<AuthRejection>(),
        Some(AuthRejection::InsufficientScope { .. })
    ));
    let res = f.post("/sync", Some("files:read")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(www(&res).contains(r#"error="insufficient_scope""#));
    assert_eq!(bodies_run(), before);
}

#[tokio::test]
async fn no_token_is_a_401_from_the_layer() {
    let f = fixture();
    let res = f.post("/upload", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        www(&res).starts_with(&format!(r#"Bearer resource_metadata="{PRM}""#)),
        "{}",
        www(&res)
    );
}

#[tokio::test]
async fn holding_the_scope_gets_through() {
    let f = fixture();
    let before = bodies_run();
    let res = f.post("/upload", Some("files:write")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "stored 5 bytes");

    // The hierarchy: admin ⊃ files:write ⊃ files:read.
    let res = f.post("/upload", Some("admin")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = f.post("/sync", Some("files:write")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "synced for alice");
    // The counter sees bodies that ran, so its silence in the refusal test means something.
    assert_eq!(bodies_run(), before + 3);
}
