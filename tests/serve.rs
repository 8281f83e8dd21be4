//! `mcp_oauth::serve` gives every request the client's address (issue 10 item 4): a handler
//! extracts `ConnectInfo<SocketAddr>`, the MCP endpoint answers over a real socket, and the
//! authorization server never logs that clients share one rate-limit bucket. Alone in its
//! binary: that error is logged once per process.

#![cfg(all(feature = "server", feature = "rmcp"))]

#[path = "support/echo_tools.rs"]
mod echo_tools;

#[path = "support/logs.rs"]
mod logs;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, StatusCode};
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::server::AuthorizationServer;
use tower::ServiceExt as _;

const FIX: &str = "into_make_service_with_connect_info";

// The current-thread runtime runs the served connections on this thread, where the
// subscriber is installed.
#[tokio::test]
async fn serve_gives_every_request_the_clients_address() {
    let (captured, _guard) = logs::Captured::start();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("http://{addr}/mcp"))
        .authorization_server(&server)
        .build()
        .unwrap();
    let app = server
        .mount(&cfg, echo_tools::mcp_service())
        .unwrap()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        mcp_oauth::serve(listener, app.clone())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let peer = http.get(format!("{base}/peer")).send().await.unwrap();
    assert_eq!(peer.status(), StatusCode::OK);
    let peer: SocketAddr = peer.text().await.unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_ne!(peer.port(), addr.port());

    // The rate-limited endpoints see the address too: no error about a shared bucket.
    let res = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "nobody"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http
        .post(format!("{base}/register"))
        .json(&serde_json::json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    // The MCP endpoint answers through the socket, behind the layer.
    let res = http
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !captured.text().contains(FIX),
        "logged although served with mcp_oauth::serve:\n{}",
        captured.text()
    );

    // The control: the same app without the address logs the error, so the check above
    // would have seen it.
    let res = app
        .oneshot(
            Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(
                    "grant_type=authorization_code&code=x&client_id=nobody",
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        captured.text().matches(FIX).count(),
        1,
        "{}",
        captured.text()
    );

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}
