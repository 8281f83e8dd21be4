//! One way to mount that cannot be wrong (issue 10 items 1 and 4): the layer never refuses
//! the crate's own endpoints whatever the mount order, only exactly those paths pass it, and
//! `server.mount` / `mcp_oauth::mount` build the right app or refuse a config they cannot
//! serve.

#![cfg(all(feature = "server", feature = "rmcp"))]

#[path = "support/echo_tools.rs"]
mod echo_tools;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, Method, Request, StatusCode};
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::config::MountProblem;
use mcp_oauth::server::{AuthorizationServer, StaticClient};
use mcp_oauth::verify::ApiKeyVerifier;
use mcp_oauth::{ConfigError, McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ORIGIN: &str = "http://127.0.0.1:8000";
const RESOURCE: &str = "http://127.0.0.1:8000/mcp";
const PRM: &str = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";

async fn server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .client(StaticClient::public("static-client", [REDIRECT]))
        .build()
        .await
        .unwrap()
}

fn config(server: &AuthorizationServer) -> McpOAuthConfig {
    McpOAuthConfig::builder()
        .resource(RESOURCE)
        .scope("read", "Read things")
        .default_scopes(["read"])
        .authorization_server(server)
        .build()
        .unwrap()
}

/// The three ways to compose the same app.
fn apps(server: &AuthorizationServer, cfg: &McpOAuthConfig) -> [(&'static str, Router); 3] {
    let merge_then_layer = Router::new()
        .route_service("/mcp", echo_tools::mcp_service())
        .merge(oauth_router(cfg, server))
        .layer(McpOAuthLayer::new(cfg));
    let layer_then_merge = Router::new()
        .route_service("/mcp", echo_tools::mcp_service())
        .layer(McpOAuthLayer::new(cfg))
        .merge(oauth_router(cfg, server));
    let mounted = server.mount(cfg, echo_tools::mcp_service()).unwrap();
    [
        ("merge-then-layer", merge_then_layer),
        ("layer-then-merge", layer_then_merge),
        ("server.mount", mounted),
    ]
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// Sends `req` as a client at `peer` would reach a served app (with its address and `Host`).
async fn send(app: &Router, peer: u8, mut req: Request<Body>) -> Reply {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, peer], 40_000))));
    req.headers_mut()
        .insert(http::header::HOST, "127.0.0.1:8000".parse().unwrap());
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        // rmcp answers over SSE: the JSON is on the `data:` line.
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
            .unwrap_or(Value::Null)
    });
    Reply {
        status,
        headers,
        body,
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn post_form(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn registration() -> Value {
    json!({
        "client_name": "mount test",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    })
}

fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    })
}

/// What the checks compare across apps: the status, the sorted member names, the `error`
/// member and the challenge.
fn shape(r: &Reply) -> (StatusCode, Vec<String>, Value, Option<String>) {
    let mut keys: Vec<String> = r
        .body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    let challenge = r
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status, keys, r.body["error"].clone(), challenge)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(server: &AuthorizationServer, jti: &str) -> String {
    let claims = json!({
        "iss": ORIGIN, "sub": "alice", "aud": RESOURCE, "client_id": "static-client",
        "scope": "read", "iat": now(), "exp": now() + 600, "jti": jti,
    });
    server.key_ring().sign("at+jwt", &claims).unwrap()
}

/// The scripted checks give the same answers whether the app was composed merge-then-layer,
/// layer-then-merge or by `server.mount`: discovery, registration (201), `/token` (an RFC
/// 6749 400, not the layer's 401), the keys, and the MCP endpoint's challenge.
#[tokio::test]
async fn every_mount_order_answers_the_same() {
    let server = server().await;
    let cfg = config(&server);
    let mut shapes = Vec::new();
    for (i, (name, app)) in apps(&server, &cfg).into_iter().enumerate() {
        let peer = 10 + u8::try_from(i).unwrap();
        let mut seen = Vec::new();

        let prm = send(&app, peer, get("/.well-known/oauth-protected-resource/mcp")).await;
        assert_eq!(prm.status, StatusCode::OK, "{name}");
        assert_eq!(prm.body["resource"], RESOURCE, "{name}");
        assert_eq!(prm.body["authorization_servers"][0], ORIGIN, "{name}");
        seen.push((shape(&prm), prm.body.clone()));

        let root = send(&app, peer, get("/.well-known/oauth-protected-resource")).await;
        assert_eq!(root.status, StatusCode::OK, "{name}");
        seen.push((shape(&root), root.body.clone()));

        let asm = send(&app, peer, get("/.well-known/oauth-authorization-server")).await;
        assert_eq!(asm.status, StatusCode::OK, "{name}");
        assert_eq!(asm.body["issuer"], ORIGIN, "{name}");
        seen.push((shape(&asm), asm.body.clone()));
        let oidc = send(&app, peer, get("/.well-known/openid-configuration")).await;
        assert_eq!(oidc.status, StatusCode::OK, "{name}");

        let reg = send(&app, peer, post_json("/register", &registration())).await;
        assert_eq!(reg.status, StatusCode::CREATED, "{name}: {}", reg.body);
        assert!(reg.body["client_id"].is_string(), "{name}");
        seen.push((shape(&reg), Value::Null));

        let tok = send(
            &app,
            peer,
            post_form(
                "/token",
                &format!(
                    "grant_type=authorization_code&code=bogus&client_id=static-client&redirect_uri={}&code_verifier={}",
                    "http%3A%2F%2F127.0.0.1%3A9999%2Fcallback",
                    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
                ),
            ),
        )
        .await;
        assert_eq!(tok.status, StatusCode::BAD_REQUEST, "{name}: {}", tok.body);
        assert_eq!(tok.body["error"], "invalid_grant", "{name}");
        assert!(tok.headers.get("www-authenticate").is_none(), "{name}");
        seen.push((shape(&tok), tok.body.clone()));

        let unsupported = send(
            &app,
            peer,
            post_form("/token", "grant_type=password&client_id=static-client"),
        )
        .await;
        assert_eq!(unsupported.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(
            unsupported.body["error"], "unsupported_grant_type",
            "{name}"
        );
        seen.push((shape(&unsupported), unsupported.body.clone()));

        let jwks = send(&app, peer, get("/jwks.json")).await;
        assert_eq!(jwks.status, StatusCode::OK, "{name}");
        assert!(jwks.body["keys"].as_array().is_some_and(|k| !k.is_empty()));
        seen.push((shape(&jwks), jwks.body.clone()));

        // The login page is the server's, not the layer's.
        let authorize = send(&app, peer, get("/authorize?client_id=static-client")).await;
        assert_ne!(authorize.status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(
            authorize.headers.get("www-authenticate").is_none(),
            "{name}"
        );
        seen.push((shape(&authorize), Value::Null));

        let mcp = send(&app, peer, post_json("/mcp", &initialize())).await;
        assert_eq!(mcp.status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = mcp.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains(&format!("resource_metadata=\"{PRM}\"")),
            "{name}: {challenge}"
        );
        seen.push((shape(&mcp), mcp.body.clone()));

        // With a token the MCP service answers behind the layer.
        let mut req = post_json("/mcp", &initialize());
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token(&server, &format!("j-{name}")))
                .parse()
                .unwrap(),
        );
        let ok = send(&app, peer, req).await;
        assert_eq!(ok.status, StatusCode::OK, "{name}: {}", ok.body);
        assert!(
            ok.body["result"]["serverInfo"].is_object(),
            "{name}: {}",
            ok.body
        );
        seen.push((shape(&ok), Value::Null));

        shapes.push((name, seen));
    }
    let (first, reference) = &shapes[0];
    for (name, seen) in &shapes[1..] {
        assert_eq!(seen, reference, "{name} differs from {first}");
    }
}

/// Browsers reach the server's endpoints cross-origin from any page (they carry their own
/// CORS), even when the layer, which refuses foreign origins, wraps them.
#[tokio::test]
async fn the_servers_endpoints_keep_their_own_cors_under_the_layer() {
    let server = server().await;
    let cfg = config(&server);
    for (name, app) in apps(&server, &cfg) {
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri("/token")
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap();
        let res = send(&app, 20, preflight).await;
        assert_eq!(res.status, StatusCode::OK, "{name}");
        assert_eq!(res.headers["access-control-allow-origin"], "*", "{name}");

        let mut req = post_json("/register", &registration());
        req.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        let res = send(&app, 20, req).await;
        assert_eq!(res.status, StatusCode::CREATED, "{name}");
        assert_eq!(res.headers["access-control-allow-origin"], "*", "{name}");

        // The MCP endpoint itself still refuses that origin.
        let mut req = post_json("/mcp", &initialize());
        req.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        let res = send(&app, 20, req).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{name}");
    }
}

/// Only the exact paths pass: a near miss goes through the layer wherever the layer wraps it
/// (here, merge-then-layer: every route and the fallback), and gets its refusal.
#[tokio::test]
async fn near_misses_get_the_layers_refusal() {
    let server = server().await;
    let cfg = config(&server);
    let [(_, app), ..] = apps(&server, &cfg);
    for (method, path) in [
        (Method::POST, "/token/"),
        (Method::POST, "/tokens"),
        (Method::POST, "/TOKEN"),
        (Method::POST, "/token%2F"),
        (Method::POST, "/%2Ftoken"),
        (Method::POST, "/mcp/../token"),
        (Method::POST, "/./token"),
        (Method::POST, "//token"),
        (Method::POST, "/register/"),
        (Method::POST, "/regist%65r"),
        (Method::GET, "/jwks.json/"),
        (Method::GET, "/authorize/"),
        (Method::GET, "/.well-known/oauth-protected-resource/other"),
        (Method::GET, "/.well-known/oauth-protected-resource/mcp/"),
        (Method::GET, "/.well-known/oauth-protected-resource/MCP"),
        (Method::GET, "/.well-known/oauth-authorization-server/x"),
        (Method::GET, "/.well-known/openid-configuration%2F"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("grant_type=password"))
            .unwrap();
        let res = send(&app, 30, req).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let challenge = res.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{path}: {challenge}");

        // And a foreign origin is refused there, before anything else.
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("origin", "https://evil.example")
            .body(Body::empty())
            .unwrap();
        let res = send(&app, 30, req).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{method} {path}");
    }

    // A query does not change the path: still exactly the server's endpoint.
    let res = send(&app, 31, post_json("/register?x=1", &registration())).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let res = send(&app, 31, get("/.well-known/oauth-protected-resource/mcp?x")).await;
    assert_eq!(res.status, StatusCode::OK);
}

/// Endpoints a server leaves off (`/register` without dynamic registration, `/oauth/stats`
/// by default) are not the crate's to let through: an app's own handler at such a path,
/// under the layer, stays guarded. With them on, the server's own endpoints pass.
#[tokio::test]
async fn endpoints_the_server_leaves_off_stay_guarded() {
    let mine = || {
        Router::new()
            .route(
                "/register",
                axum::routing::post(|| async { "my own /register" }),
            )
            .route(
                "/oauth/stats",
                axum::routing::get(|| async { "my own stats" }),
            )
    };
    let off = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .dynamic_registration(false)
        .build()
        .await
        .unwrap();
    let cfg = config(&off);
    let app = mine()
        .merge(oauth_router(&cfg, &off))
        .layer(McpOAuthLayer::new(&cfg));
    let res = send(&app, 40, post_json("/register", &registration())).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    let res = send(&app, 40, get("/oauth/stats")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);

    let on = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .stats_endpoint(true)
        .build()
        .await
        .unwrap();
    let cfg = config(&on);
    let app = Router::new()
        .merge(oauth_router(&cfg, &on))
        .layer(McpOAuthLayer::new(&cfg));
    let res = send(&app, 41, post_json("/register", &registration())).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let res = send(&app, 41, get("/oauth/stats")).await;
    assert_ne!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
}

/// A resource at one of the crate's own paths is refused when the configuration is built.
#[tokio::test]
async fn a_resource_at_an_own_path_is_refused() {
    let server = server().await;
    for path in [
        "/token",
        "/register",
        "/authorize/login",
        "/jwks.json",
        "/oauth/stats",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
    ] {
        let err = McpOAuthConfig::builder()
            .resource(format!("{ORIGIN}{path}"))
            .authorization_server(&server)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::ReservedPath { path: p, .. } if p == path),
            "{path}: {err}"
        );
    }
    // Under an issuer with a path, the server's paths move with it.
    let err = McpOAuthConfig::builder()
        .resource(format!("{ORIGIN}/t/token"))
        .issuer(format!("{ORIGIN}/t"))
        .authorization_server(&server)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ReservedPath { .. }), "{err}");
    McpOAuthConfig::builder()
        .resource(format!("{ORIGIN}/token"))
        .issuer(format!("{ORIGIN}/t"))
        .authorization_server(&server)
        .build()
        .unwrap();

    // Without an embedded server only the metadata paths are the crate's.
    let rs = |path: &str| {
        McpOAuthConfig::builder()
            .resource(format!("{ORIGIN}{path}"))
            .issuer("https://auth.example.com")
            .verifier(ApiKeyVerifier::new())
            .build()
    };
    assert!(matches!(
        rs("/.well-known/oauth-protected-resource"),
        Err(ConfigError::ReservedPath { .. })
    ));
    rs("/token").unwrap();
}

/// Each `mount` refuses a configuration it cannot serve, saying which to use.
#[tokio::test]
async fn mount_refuses_the_wrong_configuration() {
    let server = server().await;
    let cfg = config(&server);

    let err = mcp_oauth::mount(&cfg, echo_tools::mcp_service()).unwrap_err();
    assert!(
        matches!(err, ConfigError::Mount(MountProblem::EmbeddedServer)),
        "{err}"
    );
    assert!(err.to_string().contains("server.mount(&cfg, mcp)"), "{err}");

    let other = self::server().await;
    let err = other.mount(&cfg, echo_tools::mcp_service()).unwrap_err();
    assert!(
        matches!(err, ConfigError::Mount(MountProblem::OtherServer)),
        "{err}"
    );

    let rs_cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer("https://auth.example.com")
        .verifier(ApiKeyVerifier::new())
        .build()
        .unwrap();
    let err = server
        .mount(&rs_cfg, echo_tools::mcp_service())
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Mount(MountProblem::NoEmbeddedServer)),
        "{err}"
    );
    assert!(err.to_string().contains(".authorization_server(&server)"));

    // A clone of the server is the same server.
    let _app = server
        .clone()
        .mount(&cfg, echo_tools::mcp_service())
        .unwrap();

    // A path axum cannot route is an error, not a panic.
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{ORIGIN}/:mcp"))
        .authorization_server(&server)
        .build()
        .unwrap();
    assert!(matches!(
        server.mount(&cfg, echo_tools::mcp_service()),
        Err(ConfigError::InvalidUrl { .. })
    ));
}

/// `mcp_oauth::mount` serves the protected MCP endpoint and its metadata, and nothing of an
/// authorization server.
#[tokio::test]
async fn resource_server_mount_serves_the_endpoint_and_its_metadata() {
    let ring =
        mcp_oauth::keys::KeyRing::generate(mcp_oauth::keys::SigningAlgorithm::Es256).unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .resource("http://127.0.0.1:8000/other/mcp")
        .issuer("https://auth.example.com")
        .scope("read", "Read things")
        .key_ring(ring.clone())
        .build()
        .unwrap();
    let app = mcp_oauth::mount(&cfg, echo_tools::mcp_service()).unwrap();

    for (path, resource) in [
        ("/.well-known/oauth-protected-resource/mcp", RESOURCE),
        ("/.well-known/oauth-protected-resource", RESOURCE),
        (
            "/.well-known/oauth-protected-resource/other/mcp",
            "http://127.0.0.1:8000/other/mcp",
        ),
    ] {
        let res = send(&app, 40, get(path)).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert_eq!(res.body["resource"], resource, "{path}");
        assert_eq!(
            res.body["authorization_servers"][0],
            "https://auth.example.com"
        );
    }
    for path in ["/mcp", "/other/mcp"] {
        let res = send(&app, 40, post_json(path, &initialize())).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(res.headers.contains_key("www-authenticate"));
    }
    for path in [
        "/token",
        "/register",
        "/.well-known/oauth-authorization-server",
    ] {
        let res = send(&app, 40, post_json(path, &json!({}))).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
    }

    let claims = json!({
        "iss": "https://auth.example.com", "sub": "bob", "aud": RESOURCE,
        "client_id": "c", "scope": "read", "iat": now(), "exp": now() + 600, "jti": "j-rs",
    });
    let mut req = post_json("/mcp", &initialize());
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", ring.sign("at+jwt", &claims).unwrap())
            .parse()
            .unwrap(),
    );
    let res = send(&app, 40, req).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(res.body["result"]["serverInfo"].is_object(), "{}", res.body);
}
