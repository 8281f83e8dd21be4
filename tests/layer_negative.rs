//! The resource-server layer against hostile and malformed input: every refusal asserts the
//! status and the exact `WWW-Authenticate` parameters, and nothing may answer 500 or panic.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use base64::Engine as _;
use http::{Request, Response, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, AuthRejection};
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::verify::{ApiKeyVerifier, MemoryRevocations, RevokedTokens};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, Scoped, scopes};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
const API_KEY: &str = "sk-test-key-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

struct Fixture {
    ring: KeyRing,
    revoked: Arc<MemoryRevocations>,
    app: Router,
}

scopes!(FilesWrite = "files:write");

fn fixture_with(policy: AccessPolicy) -> Fixture {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let revoked = Arc::new(MemoryRevocations::new());
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .scope("admin", "Administer")
        .scope_implies("admin", ["files:write"])
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .policy(policy)
        .key_ring(ring.clone())
        .revocation(revoked.clone())
        .verifier(ApiKeyVerifier::new().with_key(
            API_KEY,
            "ci-bot",
            ScopeSet::parse("files:read").unwrap(),
        ))
        .allow_origin("http://localhost:6274")
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/mcp",
            post(|auth: Option<Auth>| async move {
                axum::Json(json!({ "subject": auth.map(|a| a.subject().to_owned()) }))
            })
            .get(|| async { "stream" }),
        )
        .route(
            "/write",
            post(|auth: Scoped<FilesWrite>| async move { auth.subject().to_owned() }),
        )
        .route(
            "/who",
            get(|auth: Auth| async move { auth.subject().to_owned() }),
        )
        .layer(McpOAuthLayer::new(cfg));
    Fixture { ring, revoked, app }
}

fn fixture() -> Fixture {
    fixture_with(
        AccessPolicy::new()
            .lazy()
            .public_tool("public_search")
            .tool_scopes("files_read", ["files:read"])
            .tool_scopes("files_write", ["files:write"])
            .tool_scopes("admin_reset", ["admin"]),
    )
}

fn claims(overrides: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1",
        "scope": "files:read", "iat": now(), "exp": now() + 600, "jti": format!("jti-{}", rand_suffix()),
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Fixture {
    fn token(&self, overrides: Value) -> String {
        self.ring.sign("at+jwt", &claims(overrides)).unwrap()
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        let res = self.app.clone().oneshot(req).await.unwrap();
        assert_ne!(
            res.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "no request may produce a 500"
        );
        res
    }

    async fn call(&self, auth: Option<&str>, body: &str) -> Response<Body> {
        let mut req = Request::post("/mcp").header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        self.send(req.body(Body::from(body.to_owned())).unwrap())
            .await
    }
}

fn tool_call(name: &str) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{}}})
        .to_string()
}

fn www(res: &Response<Body>) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn invalid_token(desc: &str) -> String {
    format!(
        r#"Bearer resource_metadata="{PRM}", scope="files:read", error="invalid_token", error_description="{desc}""#
    )
}

async fn json_body(res: Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn no_header_gets_401_with_metadata_and_scope() {
    let f = fixture();
    let res = f.call(None, &tool_call("files_read")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        format!(r#"Bearer resource_metadata="{PRM}", scope="files:read""#)
    );
    assert!(matches!(
        res.extensions().get::<AuthRejection>(),
        Some(AuthRejection::MissingToken { .. })
    ));
    assert_eq!(res.headers()["cache-control"], "no-store");
    // A JSON-RPC call is answered with a JSON-RPC error echoing its id (2026-07-28), the
    // OAuth error in `data`.
    let body = json_body(res).await;
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32600,
            "message": "An access token is required",
            "data": {"error": "invalid_token", "error_description": "An access token is required"},
        }})
    );
    // String ids are echoed too; a batch gets `null`.
    let call =
        json!({"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{"name":"files_read"}});
    let res = f.call(None, &call.to_string()).await;
    assert_eq!(json_body(res).await["id"], "req-7");
    let res = f.call(None, &json!([call]).to_string()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(res).await["id"], Value::Null);
}

#[tokio::test]
async fn refusals_outside_json_rpc_are_oauth_error_objects() {
    let f = fixture_with(AccessPolicy::new());
    let res = f
        .send(Request::get("/mcp").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(res).await,
        json!({"error": "invalid_token", "error_description": "An access token is required"})
    );
}

#[tokio::test]
async fn no_header_on_tool_lists_that_tools_scope() {
    let f = fixture();
    let res = f.call(None, &tool_call("files_write")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        format!(r#"Bearer resource_metadata="{PRM}", scope="files:write""#)
    );
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_request() {
    let f = fixture();
    let t = f.token(json!({}));
    let req = Request::post("/mcp")
        .header("authorization", format!("Bearer {t}"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::from(tool_call("files_read")))
        .unwrap();
    let res = f.send(req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        www(&res),
        format!(
            r#"Bearer resource_metadata="{PRM}", error="invalid_request", error_description="More than one Authorization header""#
        )
    );
}

#[tokio::test]
async fn wrong_scheme_counts_as_no_token() {
    let f = fixture();
    let res = f
        .call(Some("Basic YWxpY2U6c2VjcmV0"), &tool_call("files_read"))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        format!(r#"Bearer resource_metadata="{PRM}", scope="files:read""#)
    );
}

#[tokio::test]
async fn empty_token_is_invalid_request() {
    let f = fixture();
    for value in ["Bearer", "Bearer ", "Bearer    "] {
        let res = f.call(Some(value), &tool_call("files_read")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{value:?}");
        assert_eq!(
            www(&res),
            format!(
                r#"Bearer resource_metadata="{PRM}", error="invalid_request", error_description="The bearer token is empty""#
            )
        );
    }
}

#[tokio::test]
async fn oversized_token_is_refused_without_parsing() {
    let f = fixture();
    let big = format!("Bearer {}", "a".repeat(9 * 1024));
    let res = f.call(Some(&big), &tool_call("files_read")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www(&res), invalid_token("The access token is malformed"));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture();
    let header = b64(br#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = b64(claims(json!({})).to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let res = f
            .call(Some(&format!("Bearer {token}")), &tool_call("files_read"))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let w = www(&res);
        assert!(
            w == invalid_token("The access token uses an algorithm that is not accepted")
                || w == invalid_token("The access token is malformed"),
            "{w}"
        );
    }
    // With a structurally complete token, the algorithm itself is what is refused.
    let token = format!("{header}.{payload}.{}", b64(b"sig"));
    let res = f
        .call(Some(&format!("Bearer {token}")), &tool_call("files_read"))
        .await;
    assert_eq!(
        www(&res),
        invalid_token("The access token uses an algorithm that is not accepted")
    );
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture();
    let jwk = serde_json::to_vec(f.ring.current().jwk()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(f.ring.current().kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(json!({"scope": "admin"})),
        &jsonwebtoken::EncodingKey::from_secret(&jwk),
    )
    .unwrap();
    let res = f
        .call(Some(&format!("Bearer {forged}")), &tool_call("files_read"))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        invalid_token("The access token uses an algorithm that is not accepted")
    );
}

#[tokio::test]
async fn wrong_issuer_audience_expiry_and_nbf_are_refused() {
    let f = fixture();
    let cases = [
        (
            json!({"iss": "https://evil.example.com"}),
            "The access token was issued by an untrusted issuer",
        ),
        (
            json!({"aud": "https://other.example.com/mcp"}),
            "The access token was not issued for this resource",
        ),
        (
            json!({"aud": [RESOURCE.to_owned() + "/"]}),
            "The access token was not issued for this resource",
        ),
        (json!({"exp": now() - 3600}), "The access token expired"),
        (
            json!({"nbf": now() + 3600}),
            "The access token is not valid yet",
        ),
        (
            json!({"sub": null}),
            "The access token lacks a required claim",
        ),
        (
            json!({"jti": null}),
            "The access token lacks a required claim",
        ),
    ];
    for (overrides, desc) in cases {
        let t = f.token(overrides.clone());
        let res = f
            .call(Some(&format!("Bearer {t}")), &tool_call("files_read"))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{overrides}");
        assert_eq!(www(&res), invalid_token(desc), "{overrides}");
    }
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let f = fixture();
    let t = f.ring.sign("JWT", &claims(json!({}))).unwrap();
    let res = f
        .call(Some(&format!("Bearer {t}")), &tool_call("files_read"))
        .await;
    assert_eq!(www(&res), invalid_token("The token is not an access token"));
}

#[tokio::test]
async fn unknown_kid_and_garbage_are_refused() {
    let f = fixture();
    let other = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let t = other.sign("at+jwt", &claims(json!({}))).unwrap();
    let res = f
        .call(Some(&format!("Bearer {t}")), &tool_call("files_read"))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        invalid_token("The access token signature is invalid")
    );

    for garbage in ["abc.def.ghi", "!!!", "eyJhbGciOiJFUzI1NiJ9", "a.b", "x"] {
        let res = f
            .call(Some(&format!("Bearer {garbage}")), &tool_call("files_read"))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{garbage}");
        assert!(
            www(&res).contains(r#"error="invalid_token""#),
            "{garbage}: {}",
            www(&res)
        );
    }
}

#[tokio::test]
async fn tampered_signature_is_refused() {
    let f = fixture();
    let t = f.token(json!({}));
    let (head, sig) = t.rsplit_once('.').unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{head}.{}", b64(&sig));
    let res = f
        .call(Some(&format!("Bearer {forged}")), &tool_call("files_read"))
        .await;
    assert_eq!(
        www(&res),
        invalid_token("The access token signature is invalid")
    );
    // And a payload swapped under a valid signature.
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims(json!({"scope":"admin"})).to_string().as_bytes()),
        parts[2]
    );
    let res = f
        .call(Some(&format!("Bearer {forged}")), &tool_call("files_read"))
        .await;
    assert_eq!(
        www(&res),
        invalid_token("The access token signature is invalid")
    );
}

#[tokio::test]
async fn missing_scope_gets_403_with_the_full_scope_list() {
    let f = fixture();
    let t = f.token(json!({"scope": "files:read"}));
    let res = f
        .call(Some(&format!("Bearer {t}")), &tool_call("admin_reset"))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        www(&res),
        format!(
            r#"Bearer resource_metadata="{PRM}", scope="admin files:read", error="insufficient_scope", error_description="The access token lacks a scope this request needs""#
        )
    );
    assert!(matches!(
        res.extensions().get::<AuthRejection>(),
        Some(AuthRejection::InsufficientScope { .. })
    ));
}

#[tokio::test]
async fn scope_hierarchy_is_honoured() {
    let f = fixture();
    let admin = f.token(json!({"scope": "admin"}));
    for tool in ["files_read", "files_write", "admin_reset"] {
        let res = f
            .call(Some(&format!("Bearer {admin}")), &tool_call(tool))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "admin must satisfy {tool}");
    }
    let writer = f.token(json!({"scope": "files:write"}));
    let res = f
        .call(Some(&format!("Bearer {writer}")), &tool_call("files_read"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = f
        .call(Some(&format!("Bearer {writer}")), &tool_call("admin_reset"))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn public_methods_pass_without_a_token() {
    let f = fixture();
    for body in [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}).to_string(),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string(),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string(),
        tool_call("public_search"),
    ] {
        let res = f.call(None, &body).await;
        assert_eq!(res.status(), StatusCode::OK, "{body}");
        assert_eq!(json_body(res).await["subject"], Value::Null);
    }
    // A token on a public call is still verified and the caller is known.
    let t = f.token(json!({}));
    let res = f
        .call(Some(&format!("Bearer {t}")), &tool_call("public_search"))
        .await;
    assert_eq!(json_body(res).await["subject"], "alice");
    // A bad token on a public call is refused, so the client learns to refresh.
    let res = f
        .call(Some("Bearer not-a-real-token"), &tool_call("public_search"))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_lazy_auth_everything_needs_a_token() {
    let f = fixture_with(AccessPolicy::new());
    let res = f
        .call(
            None,
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = f
        .send(Request::get("/mcp").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_batch_holding_one_protected_call_is_refused() {
    let f = fixture();
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"tools/list"},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"files_write"}},
        {"jsonrpc":"2.0","method":"notifications/initialized"}
    ])
    .to_string();
    let res = f.call(None, &batch).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www(&res),
        format!(r#"Bearer resource_metadata="{PRM}", scope="files:write""#)
    );
    // The union of scopes across the batch is demanded in one challenge.
    let t = f.token(json!({"scope": "files:read"}));
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write"}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_reset"}}
    ])
    .to_string();
    let res = f.call(Some(&format!("Bearer {t}")), &batch).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        www(&res).contains(r#"scope="admin files:read files:write""#),
        "{}",
        www(&res)
    );
}

#[tokio::test]
async fn unknown_tools_and_junk_bodies_need_a_token() {
    let f = fixture();
    for body in [
        tool_call("no_such_tool"),
        "{not json".to_owned(),
        "[]".to_owned(),
        "42".to_owned(),
    ] {
        let res = f.call(None, &body).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[tokio::test]
async fn disallowed_origin_is_403_without_a_bearer_challenge() {
    let f = fixture();
    let req = Request::post("/mcp")
        .header("origin", "https://evil.example.net")
        .body(Body::from(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
        ))
        .unwrap();
    let res = f.send(req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.headers().get("www-authenticate").is_none(),
        "must not look like insufficient_scope"
    );
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(json_body(res).await["error"]["code"], -32600);
}

#[tokio::test]
async fn allowed_origins_get_cors_and_preflight() {
    let f = fixture();
    for origin in ["http://localhost:6274", "https://mcp.example.com"] {
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/mcp")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, mcp-protocol-version",
            )
            .body(Body::empty())
            .unwrap();
        let res = f.send(req).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(res.headers()["access-control-allow-origin"], origin);
        let allow = res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for h in [
            "authorization",
            "content-type",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "mcp-session-id",
        ] {
            assert!(allow.contains(h), "{h} missing from {allow}");
        }
    }
    // The 401 itself exposes WWW-Authenticate to the browser.
    let req = Request::post("/mcp")
        .header("origin", "http://localhost:6274")
        .body(Body::from(tool_call("files_read")))
        .unwrap();
    let res = f.send(req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:6274"
    );
    let expose = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for h in ["WWW-Authenticate", "Mcp-Session-Id", "MCP-Protocol-Version"] {
        assert!(expose.contains(h));
    }
}

#[tokio::test]
async fn query_string_tokens_are_refused() {
    let f = fixture();
    let t = f.token(json!({}));
    // Also percent-encoded or in capitals, as a framework behind the layer would still read.
    for name in ["access_token", "access%5Ftoken", "ACCESS_TOKEN"] {
        let req = Request::post(format!("/mcp?{name}={t}"))
            .body(Body::from(tool_call("files_read")))
            .unwrap();
        let res = f.send(req).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name}");
        assert!(www(&res).contains(r#"error="invalid_request""#));
    }
}

#[tokio::test]
async fn oversized_body_is_413_when_the_method_must_be_read() {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .policy(AccessPolicy::new().lazy())
        .key_ring(ring)
        .max_body_bytes(1024)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/mcp", post(|| async { "ok" }))
        .layer(McpOAuthLayer::new(cfg));
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad": "x".repeat(4096)}})
            .to_string();
    let res = app
        .oneshot(Request::post("/mcp").body(Body::from(body)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (&body["id"], &body["error"]["code"]),
        (&Value::Null, &json!(-32600)),
        "{body}"
    );
}

#[tokio::test]
async fn the_body_reaches_the_service_unchanged() {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .policy(AccessPolicy::new().lazy())
        .key_ring(ring)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/mcp", post(|body: String| async move { body }))
        .layer(McpOAuthLayer::new(cfg));
    let body =
        json!({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"é✓"}}).to_string();
    let res = app
        .oneshot(
            Request::post("/mcp")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    let got = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(got, body.as_bytes());
}

#[tokio::test]
async fn mcp_headers_that_contradict_the_body_are_refused() {
    let f = fixture();
    let req = Request::post("/mcp")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "public_search")
        .body(Body::from(tool_call("admin_reset")))
        .unwrap();
    let res = f.send(req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.headers().get("www-authenticate").is_none(),
        "not a credentials problem: {}",
        www(&res)
    );
    assert!(matches!(
        res.extensions().get::<AuthRejection>(),
        Some(AuthRejection::HeaderMismatch)
    ));
    let body = json_body(res).await;
    assert_eq!(body["id"], 1, "{body}");
    assert_eq!(body["error"]["code"], -32020, "HeaderMismatch: {body}");
    // Matching headers are fine.
    let req = Request::post("/mcp")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "public_search")
        .body(Body::from(tool_call("public_search")))
        .unwrap();
    assert_eq!(f.send(req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoked_tokens_are_refused_even_from_the_cache() {
    let f = fixture();
    let jti = "revoke-me";
    let t = f.token(json!({"jti": jti}));
    let auth = format!("Bearer {t}");
    assert_eq!(
        f.call(Some(&auth), &tool_call("files_read")).await.status(),
        StatusCode::OK
    );
    f.revoked.revoke(jti, now() + 600).await.unwrap();
    let res = f.call(Some(&auth), &tool_call("files_read")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www(&res), invalid_token("The access token was revoked"));
}

#[tokio::test]
async fn api_keys_sit_beside_oauth() {
    let f = fixture();
    let res = f
        .call(Some(&format!("Bearer {API_KEY}")), &tool_call("files_read"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["subject"], "ci-bot");
    let res = f
        .call(
            Some(&format!("Bearer {API_KEY}")),
            &tool_call("files_write"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = f
        .call(Some("Bearer sk-test-key-wrong"), &tool_call("files_read"))
        .await;
    assert_eq!(www(&res), invalid_token("The access token is invalid"));
}

#[tokio::test]
async fn extractors_enforce_and_explain() {
    let f = fixture();
    let reader = f.token(json!({"scope": "files:read"}));
    let writer = f.token(json!({"scope": "admin"}));
    let req = |t: &str| {
        Request::post("/write")
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    // `/write` is not an MCP call: without lazy rules for it, the layer needs only a token;
    // the Scoped extractor then demands files:write (admin implies it).
    let res = f.send(req(&reader)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(www(&res).contains(r#"error="insufficient_scope""#));
    let res = f.send(req(&writer)).await;
    assert_eq!(res.status(), StatusCode::OK);

    // A route without the layer: the Auth extractor says how to fix it.
    let bare = Router::new().route(
        "/who",
        get(|auth: Auth| async move { auth.subject().to_owned() }),
    );
    let res = bare
        .oneshot(Request::get("/who").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8(
        axum::body::to_bytes(res.into_body(), 4096)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("McpOAuthLayer` is not installed"), "{text}");
}

#[tokio::test]
async fn lazy_get_stream_passes_and_auth_extractor_then_asks_for_a_token() {
    let f = fixture();
    let res = f
        .send(Request::get("/mcp").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = f
        .send(Request::get("/who").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
