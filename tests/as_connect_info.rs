//! A server mounted without `ConnectInfo` cannot tell clients apart: every client shares one
//! rate-limit bucket. The first such request logs an error that names the fix, once per
//! process; requests that carry the peer address log nothing (issue 10 item 4).

#![cfg(feature = "server")]

#[path = "support/logs.rs"]
mod logs;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::{McpOAuthConfig, oauth_router};
use tower::ServiceExt as _;

const FIX: &str = "into_make_service_with_connect_info";

fn token_request(peer: Option<SocketAddr>) -> Request<Body> {
    let mut req = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(
            "grant_type=authorization_code&code=x&client_id=nobody",
        ))
        .unwrap();
    if let Some(peer) = peer {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    req
}

#[tokio::test]
async fn a_server_without_connect_info_says_so_once() {
    let (captured, _guard) = logs::Captured::start();

    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource("https://mcp.example.com/mcp")
        .issuer("https://mcp.example.com")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app: axum::Router = oauth_router(&cfg, &server);

    // Served right: the peer is known, nothing to say.
    for _ in 0..2 {
        let res = app
            .clone()
            .oneshot(token_request(Some("192.0.2.7:50000".parse().unwrap())))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        !captured.text().contains(FIX),
        "logged with ConnectInfo present:\n{}",
        captured.text()
    );

    // Served without ConnectInfo: one error naming the fix, however many requests follow.
    for _ in 0..3 {
        let res = app.clone().oneshot(token_request(None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let logs = captured.text();
    assert_eq!(logs.matches(FIX).count(), 1, "{logs}");
    let line = logs.lines().find(|l| l.contains(FIX)).unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("mcp_oauth::config"), "{line}");
    assert!(line.contains("one rate-limit bucket"), "{line}");
}
