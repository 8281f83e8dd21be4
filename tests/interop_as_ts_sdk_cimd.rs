//! The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk` 1.32.2) identifying
//! itself by a client ID metadata document (`clientMetadataUrl`) through the whole flow: the
//! test serves the document over HTTPS on `localhost` (test CA, `support/tls_proxy.rs`), the
//! authorization server and an rmcp server behind the layer run on 127.0.0.1 with loopback
//! documents allowed. The SDK reads `client_id_metadata_document_supported`, uses the URL as
//! its `client_id` without registering, the test's browser logs in and approves, and the SDK
//! redeems the code (PKCE, `none`) and calls a protected tool.
//!
//! The node side is `tests/interop/ts_client_full_flow.mjs` (with
//! `MCP_OAUTH_TEST_CLIENT_METADATA_URL`).
#![cfg(all(
    feature = "client-metadata",
    feature = "consent-page",
    feature = "rmcp"
))]

mod support;

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/echo_tools.rs"]
mod echo_tools;
#[allow(dead_code)]
#[path = "support/tls_proxy.rs"]
mod tls_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::{AuthorizationServer, ClientMetadataPolicy};
use serde_json::json;

use browser::{Browser, Decision};
use tls_proxy::TlsProxy;

const SCRIPT: &str = "tests/interop/ts_client_full_flow.mjs";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "interop-cimd-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_client_with_a_client_metadata_url_completes_the_flow() {
    let Some(interop) =
        support::interop("ts_sdk_client_with_a_client_metadata_url_completes_the_flow")
    else {
        return;
    };
    // The document, over TLS on localhost.
    let hits = Arc::new(AtomicUsize::new(0));
    let mut proxy = TlsProxy::bind("localhost").await;
    let client_id = format!("{}/oauth/client.json", proxy.url());
    let document = json!({
        "client_id": client_id,
        "client_name": "mcp-oauth interop (TypeScript SDK, CIMD)",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();
    let counter = hits.clone();
    let docs = Router::new().route(
        "/oauth/client.json",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = document.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, docs).await.unwrap() });
    proxy.forward_to(backend);
    let ca = std::fs::read(proxy.ca()).unwrap();

    // The authorization server and the MCP server on one origin.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new().with_password("demo", PASSWORD))
        .client_metadata_policy(
            ClientMetadataPolicy::new()
                .allow_loopback()
                .root_certificates_pem(&ca),
        )
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{issuer}/mcp"))
        .issuer(&issuer)
        .scope("read", "Read the secret")
        .policy(
            AccessPolicy::new()
                .public_tool("public_echo")
                .tool_scopes("secret_read", ["read"])
                .lazy(),
        )
        .authorization_server(&server)
        .build()
        .unwrap();
    let app = server.mount(&cfg, echo_tools::mcp_service()).unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });

    let browser = Browser::new("demo", PASSWORD);
    let mut cmd = interop.node_script(SCRIPT);
    cmd.args([&format!("{issuer}/mcp"), REDIRECT, "secret_read"])
        .env("MCP_OAUTH_TEST_CLIENT_METADATA_URL", &client_id);
    let run =
        browser::drive_script(cmd, &browser, Decision::Approve, Duration::from_secs(120)).await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- stderr ---\n{}\n--- browser ---\n{}",
        run.stderr,
        browser.transcript()
    );
    assert!(
        run.success && report.get("fatal").is_none(),
        "the script failed: {ctx}"
    );
    let steps = &report["steps"];
    assert_eq!(
        steps["authorize"]["secret_read"]["text"], "the secret is 42 (read by demo)",
        "{ctx}"
    );
    // The authorization URL carried the document URL as client_id; nothing registered.
    let urls = report["authorization_urls"].as_array().unwrap();
    assert!(
        urls.iter().all(
            |u| browser::query_param(u.as_str().unwrap(), "client_id").as_deref()
                == Some(client_id.as_str())
        ),
        "{ctx}"
    );
    let requests = report["requests"].as_array().unwrap();
    assert!(
        !requests
            .iter()
            .any(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/register"))),
        "the SDK registered instead: {ctx}"
    );
    assert!(hits.load(Ordering::SeqCst) >= 1, "the document was fetched");
}
