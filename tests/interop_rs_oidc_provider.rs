//! The resource-server-only mode end to end: the official MCP TypeScript SDK client
//! (`@modelcontextprotocol/sdk` 1.32.2) against the `resource_server` example, whose
//! authorization server is a real third-party one — `oidc-provider` on 127.0.0.1 with dynamic
//! registration, resource indicators (RFC 8707) and its development login and consent pages.
//!
//! - Our `401` and protected-resource metadata send the SDK to `oidc-provider`; it registers
//!   there (RFC 7591), and the test browser signs in and consents on the provider's pages.
//! - The SDK exchanges the code for a JWT whose `aud` is our resource and `iss` the provider,
//!   and calls a protected tool through the layer, which checks it through the provider's
//!   JWKS (fetched over loopback: `MCP_OAUTH_ALLOW_LOCAL_IDP=1`).
//! - A token from that provider for another resource, and one for our resource from another
//!   issuer, are refused with `401 invalid_token`; a token for our resource from the provider
//!   is accepted (so the refusals are about `aud` and `iss`, nothing else).
//!
//! The node side is `tests/interop/ts_client_full_flow.mjs` with one tool to call.
#![cfg(all(feature = "remote-jwks", feature = "introspection", feature = "rmcp"))]

mod support;

#[path = "support/oidc.rs"]
mod oidc;

#[path = "support/example.rs"]
mod example;

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;

use std::time::Duration;

use serde_json::{Value, json};

use browser::{Browser, Decision, query_param};

const SCRIPT: &str = "tests/interop/ts_client_full_flow.mjs";
/// The SDK's redirect URI: never listened on; the browser hands the callback to the script.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// The login name typed on the provider's page (it accepts any name and password).
const USER: &str = "alice@provider.test";

/// `initialize` on `url` with `token` as the bearer token: the status and `WWW-Authenticate`.
async fn initialize(url: &str, token: &str) -> (u16, String) {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let res = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&init)
        .send()
        .await
        .unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (res.status().as_u16(), challenge)
}

/// `aud` as a list (a JWT may carry one string or an array).
fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_signs_in_at_oidc_provider_and_calls_a_tool_on_the_resource_server() {
    let Some(interop) = support::interop(
        "ts_sdk_signs_in_at_oidc_provider_and_calls_a_tool_on_the_resource_server",
    ) else {
        return;
    };
    // The resource URL holds the server's port, and the provider must know the resource
    // before the server discovers the provider: pick a free port, then start both.
    let port = example::free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let other_resource = format!("http://127.0.0.1:{port}/other");
    let provider =
        oidc::OidcProvider::start_interactive(&interop, &[&resource, &other_resource]).await;
    // Another issuer, which also issues tokens naming our resource.
    let stranger = oidc::OidcProvider::start(&interop, &[&resource], "").await;

    let addr = format!("127.0.0.1:{port}");
    let server = example::Example::start(
        "resource_server",
        &[
            ("MCP_OAUTH_ADDR", &addr),
            ("MCP_OAUTH_ISSUER", &provider.issuer),
            ("MCP_OAUTH_LAZY", "1"),
            ("MCP_OAUTH_ALLOW_LOCAL_IDP", "1"),
        ],
        &[],
    )
    .await;
    assert_eq!(server.url("/mcp"), resource);

    // The whole flow, driven by the SDK; the browser signs in and consents at the provider.
    let browser = Browser::new(USER, "any-password-the-dev-pages-accept");
    let mut cmd = interop.node_script(SCRIPT);
    cmd.args([resource.as_str(), REDIRECT, "secret_read"]);
    let run =
        browser::drive_script(cmd, &browser, Decision::Approve, Duration::from_secs(120)).await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- stderr ---\n{}\n--- browser ---\n{}\n--- server ---\n{}",
        run.stderr,
        browser.transcript(),
        server.stderr()
    );
    assert!(run.success && report.get("fatal").is_none(), "{ctx}");
    let steps = &report["steps"];
    assert_eq!(
        steps["anonymous"]["tools"],
        json!(["public_echo", "secret_read", "whoami"]),
        "{ctx}"
    );
    assert_eq!(
        steps["authorize"]["secret_read"],
        json!({"text": format!("the secret is 42 (read by {USER})"), "is_error": false}),
        "{ctx}"
    );

    // Our metadata sent the SDK to the provider: it registered there, and the one
    // authorization went to the provider's endpoint with our resource and PKCE.
    let requests = report["requests"].as_array().unwrap();
    let registration = requests
        .iter()
        .find(|r| r["method"] == "POST" && r["url"] == format!("{}/reg", provider.issuer))
        .unwrap_or_else(|| panic!("no registration at the provider: {ctx}"));
    assert_eq!(registration["status"], 201, "{ctx}");
    assert_eq!(run.authorizations.len(), 1, "{ctx}");
    let auth = &run.authorizations[0];
    assert_eq!(
        auth.url.split('?').next().unwrap(),
        format!("{}/auth", provider.issuer),
        "{ctx}"
    );
    assert_eq!(
        query_param(&auth.url, "resource").as_deref(),
        Some(resource.as_str())
    );
    assert_eq!(
        query_param(&auth.url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    // The sign-in and the consent happened on the provider's own pages.
    let log = browser.log();
    let interaction = format!("{}/interaction/", provider.issuer);
    assert!(
        log.iter().any(|s| s.method == "POST"
            && s.url.starts_with(&interaction)
            && s.form.iter().any(|(k, v)| k == "prompt" && v == "login")),
        "{ctx}"
    );
    assert!(
        log.iter().any(|s| s.method == "POST"
            && s.url.starts_with(&interaction)
            && s.form.iter().any(|(k, v)| k == "prompt" && v == "consent")),
        "{ctx}"
    );
    // The callback came back with the provider as `iss` (RFC 9207), checked by the script.
    let callback = &steps["authorize"]["callback"];
    assert_eq!(callback["iss"], provider.issuer.as_str(), "{ctx}");
    assert_eq!(callback["iss_matches_metadata"], true, "{ctx}");
    assert_eq!(callback["code_present"], true, "{ctx}");
    // The access token is the provider's JWT for our resource, for the signed-in user.
    let claims = &steps["authorize"]["claims"];
    assert_eq!(claims["iss"], provider.issuer.as_str(), "{ctx}");
    assert_eq!(audiences(claims), vec![resource.clone()], "{ctx}");
    assert_eq!(claims["sub"], USER, "{ctx}");
    // The MCP requests that carried it went to our server only.
    assert!(
        requests
            .iter()
            .filter(|r| r["authorization"] == "Bearer")
            .all(|r| r["url"].as_str().unwrap().starts_with(&resource)),
        "{ctx}"
    );

    // Control: the provider's token for our resource is accepted.
    let ours = provider.client_credentials_token(&resource, "read").await;
    assert_eq!(initialize(&resource, &ours).await.0, 200, "{ctx}");
    // The same provider's token for another resource is refused.
    let elsewhere = provider
        .client_credentials_token(&other_resource, "read")
        .await;
    let (status, challenge) = initialize(&resource, &elsewhere).await;
    assert_eq!(status, 401, "a token for {other_resource} must be refused");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    // Another issuer's token naming our resource is refused.
    let foreign = stranger.client_credentials_token(&resource, "read").await;
    let (status, challenge) = initialize(&resource, &foreign).await;
    assert_eq!(
        status, 401,
        "a token from {} must be refused",
        stranger.issuer
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}
