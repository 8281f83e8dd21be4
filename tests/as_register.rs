//! RFC 7591 dynamic client registration: what real clients send is accepted, everything
//! dangerous or unsupported is refused with the right error.

#![cfg(feature = "server")]

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::oauth_router;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit};
use mcp_oauth::store::{ApplicationType, ClientSource, SecretHash, TokenEndpointAuthMethod};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// A configuration with the server it was built from (the configuration does not hold it).
struct Cfg {
    cfg: McpOAuthConfig,
    server: AuthorizationServer,
}

impl Cfg {
    fn router(&self) -> Router {
        oauth_router(&self.cfg, &self.server)
    }
}

async fn config(server: AuthorizationServerBuilder) -> Cfg {
    let server = server.build().await.unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource("http://127.0.0.1:8000/mcp")
        .issuer("http://127.0.0.1:8000")
        .scope("read", "Read your notes")
        .authorization_server(&server)
        .build()
        .unwrap();
    Cfg { cfg, server }
}

/// Registration without a rate limit (the tests send many requests from one "address").
async fn default_config() -> Cfg {
    config(
        AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .register_rate_limit(RateLimit::unlimited()),
    )
    .await
}

async fn send(
    app: &Router,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = Request::post("/register");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let res = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

async fn register(app: &Router, meta: &Value) -> (StatusCode, Value) {
    let (status, _, body) = send(app, Some("application/json"), meta.to_string()).await;
    (status, body)
}

async fn assert_refused(app: &Router, meta: Value, error: &str) {
    let (status, body) = register(app, &meta).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{meta} → {body}");
    assert_eq!(body["error"], error, "{meta} → {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

/// Every redirect URI the real clients use (requirements §1-O), registered the way each
/// client does.
#[tokio::test]
async fn real_clients_register() {
    let cfg = default_config().await;
    let app: Router = cfg.router();
    let clients: Vec<(&str, Vec<&str>)> = vec![
        (
            "ChatGPT (stable)",
            vec!["https://chatgpt.com/connector_platform_oauth_redirect"],
        ),
        (
            "ChatGPT (callback id)",
            vec!["https://chatgpt.com/connector/oauth/cb_6f1c2e9a0b"],
        ),
        ("claude.ai", vec!["https://claude.ai/api/mcp/auth_callback"]),
        (
            "claude.com",
            vec!["https://claude.com/api/mcp/auth_callback"],
        ),
        (
            "Claude Code",
            vec![
                "http://localhost:54212/callback",
                "http://127.0.0.1:54212/callback",
            ],
        ),
        (
            "VS Code",
            vec![
                "https://insiders.vscode.dev/redirect",
                "https://vscode.dev/redirect",
                "http://127.0.0.1/",
                "http://127.0.0.1:33418/",
            ],
        ),
        (
            "Cursor (three in one request)",
            vec![
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "https://www.cursor.com/agents/mcp/oauth/callback",
                "http://localhost:8787/callback",
            ],
        ),
        (
            "Inspector (web)",
            vec!["http://localhost:6274/oauth/callback"],
        ),
        (
            "Inspector (CLI)",
            vec!["http://127.0.0.1:6276/oauth/callback"],
        ),
        ("IPv6 loopback", vec!["http://[::1]:9000/cb"]),
        (
            "RFC 8252 private-use scheme",
            vec!["com.example.app:/oauth2redirect"],
        ),
    ];
    for (name, uris) in clients {
        let meta = json!({
            "client_name": name,
            "redirect_uris": uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        });
        let (status, body) = register(&app, &meta).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["redirect_uris"], json!(uris), "{name}");
        assert_eq!(body["client_name"], name);
    }
}

#[tokio::test]
async fn defaults_echo_and_storage() {
    let cfg = default_config().await;
    let app: Router = cfg.router();
    let before = now();
    let (status, headers, body) = send(
        &app,
        Some("application/json; charset=utf-8"),
        json!({
            "redirect_uris": ["http://127.0.0.1:6276/oauth/callback"],
            "client_name": "Minimal",
            "scope": "read offline_access",
            "client_uri": "https://example.com",
            "logo_uri": "https://example.com/logo.png",
            "contacts": ["ops@example.com"],
            "software_id": "minimal-client",
            "software_version": "1.2.3",
            "unknown_field": {"ignored": true},
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");

    let id = body["client_id"].as_str().unwrap();
    assert!(!id.starts_with("https://"));
    assert!(id.len() >= 20, "random id: {id}");
    let issued = body["client_id_issued_at"].as_u64().unwrap();
    assert!(issued >= before && issued <= now());
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert!(
        body.get("client_secret").is_none(),
        "public clients get no secret"
    );
    assert!(body.get("client_secret_expires_at").is_none());
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(
        body["application_type"], "native",
        "derived from a loopback-only client"
    );
    assert_eq!(body["scope"], "offline_access read");
    assert_eq!(body["client_uri"], "https://example.com");
    assert_eq!(body["logo_uri"], "https://example.com/logo.png");
    assert_eq!(body["contacts"], json!(["ops@example.com"]));
    assert_eq!(body["software_id"], "minimal-client");
    assert_eq!(body["software_version"], "1.2.3");
    assert!(body.get("unknown_field").is_none());

    let stored = cfg
        .server
        .client_store()
        .get_client(id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.client_name.as_deref(), Some("Minimal"));
    assert_eq!(
        stored.redirect_uris,
        ["http://127.0.0.1:6276/oauth/callback"]
    );
    assert_eq!(stored.source, ClientSource::Dynamic);
    assert_eq!(
        stored.token_endpoint_auth_method,
        TokenEndpointAuthMethod::None
    );
    assert!(stored.secret_hash.is_none());
    assert_eq!(stored.issued_at, issued);

    // Two registrations get two different ids.
    let (_, again) = register(&app, &json!({"redirect_uris": ["https://a.example/cb"]})).await;
    assert_ne!(again["client_id"], body["client_id"]);
    assert_eq!(again["application_type"], "web");
}

#[tokio::test]
async fn confidential_clients_get_a_secret_that_never_expires() {
    let cfg = default_config().await;
    let app: Router = cfg.router();
    for method in ["client_secret_basic", "client_secret_post"] {
        let (status, body) = register(
            &app,
            &json!({
                "redirect_uris": ["https://app.example.com/cb"],
                "token_endpoint_auth_method": method,
                "application_type": "web",
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["token_endpoint_auth_method"], method);
        assert_eq!(body["client_secret_expires_at"], 0);
        let secret = body["client_secret"].as_str().unwrap();
        assert!(secret.len() >= 43);
        let stored = cfg
            .server
            .client_store()
            .get_client(body["client_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.secret_hash, Some(SecretHash::of(secret)));
        assert_eq!(stored.secret_expires_at, 0);
        assert_eq!(stored.application_type, ApplicationType::Web);
        assert!(stored.is_confidential());
    }
}

#[tokio::test]
async fn explicit_grant_types_and_application_type_are_kept() {
    let app: Router = default_config().await.router();
    let (status, body) = register(
        &app,
        &json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["authorization_code"],
            "application_type": "native",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["grant_types"], json!(["authorization_code"]));
    assert_eq!(body["application_type"], "native");
}

#[tokio::test]
async fn dangerous_redirect_uris_are_refused_after_normalisation() {
    let app: Router = default_config().await.router();
    for uri in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "JAVASCRIPT:alert(1)",
        " javascript:alert(1)",
        "javascript:alert(1) ",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "javascript\u{0000}:alert(1)",
        "\u{0001}javascript:alert(1)",
        "javascript\u{00a0}:alert(1)",
        "java\u{200b}script:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "Data:text/html,x",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
        "VBScript:msgbox(1)",
        "blob:https://app.example.com/uuid",
        "about:blank",
        "http://app.example.com/cb",
        "http://127.0.0.1.nip.io/cb",
        "https://app.example.com/cb#fragment",
        "https://user:pass@app.example.com/cb",
        "https:///no-host",
        "relative/path",
        "//app.example.com/cb",
        "",
    ] {
        assert_refused(
            &app,
            json!({ "redirect_uris": [uri] }),
            "invalid_redirect_uri",
        )
        .await;
        // One bad URI among good ones refuses the registration.
        assert_refused(
            &app,
            json!({ "redirect_uris": ["https://app.example.com/cb", uri] }),
            "invalid_redirect_uri",
        )
        .await;
    }
    // The description says which URI and why, for the client's developer.
    let (_, body) = register(&app, &json!({ "redirect_uris": ["JavaScript:alert(1)"] })).await;
    let d = body["error_description"].as_str().unwrap();
    assert!(
        d.contains("JavaScript:alert(1)") && d.contains("javascript"),
        "{d}"
    );
}

#[tokio::test]
async fn malformed_or_unsupported_metadata_is_refused() {
    let app: Router = default_config().await.router();
    let ok = "https://app.example.com/cb";
    for (meta, error) in [
        (json!({}), "invalid_redirect_uri"),
        (json!({ "redirect_uris": [] }), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ok }), "invalid_redirect_uri"),
        (json!({ "redirect_uris": [42] }), "invalid_redirect_uri"),
        (
            json!({ "redirect_uris": [ok], "grant_types": ["client_credentials"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "grant_types": ["authorization_code", "implicit"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "grant_types": ["refresh_token"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "grant_types": "authorization_code" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "response_types": ["token"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "response_types": ["code", "id_token"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "token_endpoint_auth_method": 1 }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "application_type": "desktop" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "scope": "read \"quoted\"" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "scope": ["read"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "client_name": "evil\u{0007}name" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "client_name": "x".repeat(500) }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "contacts": "ops@example.com" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [ok], "logo_uri": {"x": 1} }),
            "invalid_client_metadata",
        ),
    ] {
        assert_refused(&app, meta, error).await;
    }
}

#[tokio::test]
async fn only_json_objects_are_read() {
    let app: Router = default_config().await.router();
    let body = json!({ "redirect_uris": ["https://app.example.com/cb"] }).to_string();
    for (ct, payload) in [
        (
            Some("application/x-www-form-urlencoded"),
            "redirect_uris=https%3A%2F%2Fa".to_owned(),
        ),
        (Some("text/plain"), body.clone()),
        (None, body.clone()),
        (Some("application/json"), "{not json".to_owned()),
        (Some("application/json"), "[1,2]".to_owned()),
        (Some("application/json"), "\"string\"".to_owned()),
        (Some("application/json"), String::new()),
        (
            Some("application/json"),
            format!(
                "{{\"redirect_uris\":[\"https://a.example/cb\"],\"pad\":\"{}\"}}",
                "x".repeat(100 * 1024)
            ),
        ),
    ] {
        let (status, headers, json) = send(&app, ct, payload).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ct:?}: {json}");
        assert_eq!(json["error"], "invalid_client_metadata", "{ct:?}");
        assert_eq!(headers["content-type"], "application/json");
    }
}

/// Registration metadata that no other request repeats (a different `client_name`), so
/// that it creates a client (identical registrations reuse one and cost no registration).
fn distinct(n: u32) -> Value {
    json!({ "redirect_uris": ["https://app.example.com/cb"], "client_name": format!("App {n}") })
}

#[tokio::test]
async fn registrations_are_rate_limited_per_address() {
    let cfg = config(
        AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .register_rate_limit(RateLimit::per_minute(2)),
    )
    .await;
    let app: Router = cfg.router();
    for n in 0..2 {
        assert_eq!(register(&app, &distinct(n)).await.0, StatusCode::CREATED);
    }
    let (status, headers, body) =
        send(&app, Some("application/json"), distinct(2).to_string()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "slow_down");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // An identical registration creates nothing and is answered.
    assert_eq!(register(&app, &distinct(0)).await.0, StatusCode::CREATED);
    // Every request, malformed ones too, counts against ten times the budget (checked
    // before the body is read): 4 so far, 16 more fit, the 21st is refused.
    for _ in 0..16 {
        let (status, _, _) = send(&app, Some("text/plain"), "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _, _) = send(&app, Some("text/plain"), "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send(&app, Some("application/json"), distinct(0).to_string()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn rate_limit_keys_on_the_peer_address_not_forwarded_headers() {
    let cfg = config(
        AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .register_rate_limit(RateLimit::per_minute(1)),
    )
    .await;
    let app: Router = cfg.router();
    let from = |peer: &str, xff: &str, n: u32| {
        let mut req = Request::post("/register")
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(Body::from(distinct(n).to_string()))
            .unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            peer.parse::<std::net::SocketAddr>().unwrap(),
        ));
        req
    };
    let status = |req: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(
        status(from("192.0.2.1:1000", "1.1.1.1", 1)).await,
        StatusCode::CREATED
    );
    // A spoofed X-Forwarded-For from an untrusted peer does not buy a new bucket.
    assert_eq!(
        status(from("192.0.2.1:1001", "2.2.2.2", 2)).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another peer has its own bucket.
    assert_eq!(
        status(from("192.0.2.2:1000", "1.1.1.1", 3)).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn trusted_proxy_forwards_the_client_address() {
    let cfg = config(
        AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .register_rate_limit(RateLimit::per_minute(1))
            .trusted_proxies(["10.0.0.1".parse().unwrap()]),
    )
    .await;
    let app: Router = cfg.router();
    let via_proxy = |xff: &str, n: u32| {
        let mut req = Request::post("/register")
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(Body::from(distinct(n).to_string()))
            .unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            "10.0.0.1:443".parse::<std::net::SocketAddr>().unwrap(),
        ));
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(via_proxy("203.0.113.1", 1).await, StatusCode::CREATED);
    assert_eq!(via_proxy("203.0.113.2", 2).await, StatusCode::CREATED);
    assert_eq!(
        via_proxy("203.0.113.1", 3).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client prepending a fake address is still keyed on what the proxy saw.
    assert_eq!(
        via_proxy("9.9.9.9, 203.0.113.2", 4).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn registration_can_be_turned_off() {
    let cfg = config(
        AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .dynamic_registration(false),
    )
    .await;
    let app: Router = cfg.router();
    let (status, _) = register(&app, &json!({ "redirect_uris": ["https://a.example/cb"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn browsers_may_register_cross_origin() {
    let app: Router = default_config().await.router();
    let res = app
        .oneshot(
            Request::post("/register")
                .header("content-type", "application/json")
                .header("origin", "http://localhost:6274")
                .body(Body::from(
                    json!({ "redirect_uris": ["http://localhost:6274/oauth/callback"] })
                        .to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

/// Whether `err` refuses client `c` for one of its redirect URIs.
fn is_bad_redirect_of_c(err: &mcp_oauth::ConfigError) -> bool {
    matches!(
        err,
        mcp_oauth::ConfigError::InvalidClient {
            client_id,
            problem: mcp_oauth::config::ClientProblem::RedirectUri { .. },
        } if client_id == "c"
    )
}

#[tokio::test]
async fn static_clients_are_held_to_the_same_redirect_policy() {
    use mcp_oauth::server::StaticClient;
    for bad in [
        "javascript:alert(1)",
        "http://example.com/cb",
        "https://x.example/cb#f",
    ] {
        let err = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .client(StaticClient::public("c", [bad]))
            .build()
            .await
            .unwrap_err();
        assert!(is_bad_redirect_of_c(&err), "{err}");
    }
    AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .client(StaticClient::public(
            "c",
            [
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "http://127.0.0.1/cb",
            ],
        ))
        .build()
        .await
        .unwrap();
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// issue 8 item 5 (follow-up review): a scheme is not a reverse domain name because it holds
// a dot. Operating-system vendor namespaces (`microsoft.windows.camera:` launches the
// Windows camera) and dotted schemes that cannot be domain names are refused with
// invalid_redirect_uri; `com.example.app:` still registers. Before: any dotted scheme passed.
#[tokio::test]
async fn dotted_os_handler_schemes_are_not_reverse_domain_names() {
    let app: Router = default_config().await.router();
    for uri in [
        "microsoft.windows.camera:",
        "microsoft.windows.camera.picker:x",
        "MICROSOFT.WINDOWS.PHOTOS.CROP:x",
        "windows.immersivecontrolpanel:x",
        "ms.settings:privacy",
        "com.apple.preference.security:x",
        "com.microsoft.teams:/cb",
        "x-apple.systempreferences:com.apple.preference.security",
        "com..app:/cb",
        "com.:/cb",
        "a+b.c:/cb",
    ] {
        assert_refused(
            &app,
            json!({ "redirect_uris": [uri] }),
            "invalid_redirect_uri",
        )
        .await;
    }
    let (_, body) = register(
        &app,
        &json!({ "redirect_uris": ["microsoft.windows.camera:"] }),
    )
    .await;
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains("microsoft.windows.camera"), "{d}");
    for ok in [
        "com.example.app:/oauth2redirect",
        "io.modelcontextprotocol.inspector:/cb",
    ] {
        let (status, body) = register(&app, &json!({ "redirect_uris": [ok] })).await;
        assert_eq!(status, StatusCode::CREATED, "{ok}: {body}");
    }
    // Configured clients and the allow-list are held to the same rule.
    let err = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .redirect_schemes(["microsoft.windows.camera"])
        .client(mcp_oauth::server::StaticClient::public(
            "c",
            ["microsoft.windows.camera:x"],
        ))
        .build()
        .await
        .unwrap_err();
    assert!(is_bad_redirect_of_c(&err), "{err}");
}

// issue 8 item 9 (follow-up review): client_name refuses invisible characters that are not
// format characters (Cf): Hangul fillers, the Braille blank, line and paragraph separators
// and the other default-ignorable code points. A name made of them looks empty, or hides
// where it ends. Before: only controls and Cf were refused.
#[tokio::test]
async fn client_name_refuses_default_ignorable_and_blank_characters() {
    let app: Router = default_config().await.router();
    for name in [
        "\u{3164}",
        "Claude\u{3164}\u{3164}\u{3164}(verified)",
        "\u{115F}Claude",
        "Cla\u{1160}ude",
        "Claude\u{FFA0}",
        "\u{2800}\u{2800}",
        "Claude\u{2028}Official",
        "Claude\u{2029}Official",
        "Cl\u{034F}aude",
        "Claude\u{FE0F}",
        "Claude\u{E0100}",
        "Cl\u{17B4}aude",
        "Cl\u{180B}aude",
    ] {
        assert_refused(
            &app,
            json!({ "redirect_uris": ["https://app.example.com/cb"], "client_name": name }),
            "invalid_client_metadata",
        )
        .await;
    }
    // Visible text in any script still registers.
    for name in ["Café 日本 ✓", "한국어 클라이언트", "⠁⠃⠉ Braille"] {
        let (status, body) = register(
            &app,
            &json!({ "redirect_uris": ["https://app.example.com/cb"], "client_name": name }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{name:?}: {body}");
        assert_eq!(body["client_name"], name);
    }
}
