//! The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk` 1.32.2) against the
//! example resource server (the `resource_server` example binary), with a
//! real third-party authorization server (`oidc-provider`, through `support/oidc.rs`).
//!
//! - Without a token the SDK gets our `401`, reads `resource_metadata` from the challenge,
//!   fetches our protected-resource metadata, then the provider's metadata, and builds an
//!   authorization URL for the provider's `authorization_endpoint` with `resource` = our
//!   exact MCP URL and PKCE S256.
//! - With lazy authentication it connects, lists tools and calls `public_echo` with no token,
//!   and `whoami` is refused with `401`.
//! - With a token from the provider (a JWT checked through its JWKS, or an opaque token
//!   checked through introspection) and with an API key, the protected tools answer.
//!
//! The node side is `tests/interop/ts_client_discovery.mjs`; it prints one JSON line.
#![cfg(all(feature = "remote-jwks", feature = "introspection", feature = "rmcp"))]

mod support;

#[path = "support/oidc.rs"]
mod oidc;

#[path = "support/example.rs"]
mod example;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

const SCRIPT: &str = "tests/interop/ts_client_discovery.mjs";
/// The redirect URI the script's OAuth client uses.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// The pre-registered client id the script presents (the provider offers no registration;
/// the SDK needs an id only to build the authorization URL).
const CLIENT_ID: &str = "mcp-interop-client";
const API_KEY: &str = "interop-api-key-0123456789";

/// The example server, running with a real `oidc-provider` as its authorization server.
struct Running {
    mcp_url: String,
    metadata_url: String,
    issuer: String,
    /// The provider's OpenID configuration.
    as_metadata: Value,
    provider: oidc::OidcProvider,
    _example: example::Example,
}

/// Which kind of access token the provider issues for the example's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// RFC 9068 JWTs, verified through the provider's JWKS.
    Jwt,
    /// Opaque tokens, verified through RFC 7662 introspection.
    Opaque,
}

async fn start(interop: &support::Interop, lazy: bool, tokens: Tokens) -> Running {
    // The resource URL has the server's port in it, and the provider must know the resource
    // before the server can discover the provider: pick a free port, then start both.
    let port = example::free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let provider = match tokens {
        Tokens::Jwt => oidc::OidcProvider::start(interop, &[resource.as_str()], "").await,
        Tokens::Opaque => oidc::OidcProvider::start(interop, &[], &resource).await,
    };
    let issuer = provider.issuer.clone();
    let as_metadata: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Configured as a user would: MCP_OAUTH_ISSUER, MCP_OAUTH_INTROSPECTION_*, MCP_OAUTH_API_KEYS.
    let addr = format!("127.0.0.1:{port}");
    let introspection = provider.introspection_endpoint();
    let api_keys = format!("{API_KEY}:script-bot:read");
    let server = example::Example::start(
        "resource_server",
        &[
            ("MCP_OAUTH_ADDR", &addr),
            ("MCP_OAUTH_ISSUER", &issuer),
            ("MCP_OAUTH_INTROSPECTION_URL", &introspection),
            ("MCP_OAUTH_INTROSPECTION_CLIENT_ID", oidc::RS_CLIENT_ID),
            (
                "MCP_OAUTH_INTROSPECTION_CLIENT_SECRET",
                oidc::RS_CLIENT_SECRET,
            ),
            ("MCP_OAUTH_API_KEYS", &api_keys),
            ("MCP_OAUTH_LAZY", if lazy { "1" } else { "0" }),
            ("MCP_OAUTH_ALLOW_LOCAL_IDP", "1"),
        ],
        &[],
    )
    .await;
    assert_eq!(server.url("/mcp"), resource);
    Running {
        mcp_url: resource,
        metadata_url: server.url("/.well-known/oauth-protected-resource/mcp"),
        issuer,
        as_metadata,
        provider,
        _example: server,
    }
}

/// Runs the script and returns its JSON report.
async fn run_script(interop: &support::Interop, args: &[&str]) -> Value {
    let mut cmd = interop.node_script(SCRIPT);
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the TypeScript SDK script did not finish in 120 s")
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("no JSON report from the script\nstdout: {stdout}\nstderr: {stderr}")
        });
    assert!(
        out.status.success(),
        "the script failed: {report:#}\nstderr: {stderr}"
    );
    report
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn query_param(url: &url::Url, name: &str) -> Option<String> {
    let mut values = url.query_pairs().filter(|(k, _)| k == name);
    let first = values.next().map(|(_, v)| v.into_owned());
    assert!(values.next().is_none(), "{name} appears twice in {url}");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_discovers_the_authorization_server_from_our_401() {
    let Some(interop) = support::interop("ts_sdk_discovers_the_authorization_server_from_our_401")
    else {
        return;
    };
    let running = start(&interop, false, Tokens::Jwt).await;
    let report = run_script(
        &interop,
        &["discovery", &running.mcp_url, CLIENT_ID, &running.issuer],
    )
    .await;
    let requests = report["requests"].as_array().unwrap();
    let context = format!("{report:#}");

    // connect() stopped at the redirect, as the SDK does when it needs the user.
    assert_eq!(report["connected"], false, "{context}");
    assert_eq!(report["error"]["name"], "UnauthorizedError", "{context}");
    assert_eq!(report["error"]["unauthorized"], true, "{context}");

    // 1. The first request is refused with a challenge naming our metadata.
    assert_eq!(requests[0]["method"], "POST", "{context}");
    assert_eq!(requests[0]["url"], running.mcp_url, "{context}");
    assert_eq!(requests[0]["status"], 401, "{context}");
    let challenge = requests[0]["www_authenticate"].as_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&format!("resource_metadata=\"{}\"", running.metadata_url)),
        "{challenge}"
    );
    // 2. The SDK fetches exactly that URL next.
    assert_eq!(requests[1]["method"], "GET", "{context}");
    assert_eq!(requests[1]["url"], running.metadata_url, "{context}");
    assert_eq!(requests[1]["status"], 200, "{context}");
    // 3. Then the authorization server's metadata, at the issuer we advertise.
    let as_fetch = requests[2..]
        .iter()
        .find(|r| r["status"] == 200)
        .unwrap_or_else(|| panic!("no successful AS metadata fetch: {context}"));
    let as_fetch_url = as_fetch["url"].as_str().unwrap();
    assert!(
        as_fetch_url.starts_with(&format!("{}/.well-known/", running.issuer)),
        "{context}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r["url"] != running.mcp_url || r["status"] == 401),
        "no MCP request may succeed without a token: {context}"
    );

    // The authorization URL: the provider's endpoint, our exact resource, PKCE S256.
    let auth_url = url::Url::parse(report["authorization_url"].as_str().unwrap()).unwrap();
    let endpoint = running.as_metadata["authorization_endpoint"]
        .as_str()
        .unwrap();
    assert_eq!(
        format!(
            "{}{}",
            auth_url.origin().ascii_serialization(),
            auth_url.path()
        ),
        endpoint
    );
    assert_eq!(
        query_param(&auth_url, "resource").as_deref(),
        Some(running.mcp_url.as_str())
    );
    assert_eq!(
        query_param(&auth_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let challenge = query_param(&auth_url, "code_challenge").unwrap();
    assert_eq!(
        challenge.len(),
        43,
        "S256 challenge is 32 bytes base64url: {challenge}"
    );
    assert_eq!(
        query_param(&auth_url, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(&auth_url, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        query_param(&auth_url, "redirect_uri").as_deref(),
        Some(REDIRECT)
    );
    // No scope in the challenge, so the SDK asks for the metadata's scopes_supported.
    assert_eq!(query_param(&auth_url, "scope").as_deref(), Some("read"));
    assert_eq!(report["code_verifier_saved"], true);

    // The SDK's own helpers agree.
    assert_eq!(report["bare_initialize_status"], 401);
    assert_eq!(report["header_resource_metadata"], running.metadata_url);
    assert_eq!(
        report["discovered_prm"],
        json!({
            "resource": running.mcp_url,
            "authorization_servers": [running.issuer],
            "scopes_supported": ["read"],
            "bearer_methods_supported": ["header"],
            "resource_name": "mcp-oauth example",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_connects_lists_and_calls_the_public_tool_without_a_token_under_lazy_auth() {
    let Some(interop) = support::interop(
        "ts_sdk_connects_lists_and_calls_the_public_tool_without_a_token_under_lazy_auth",
    ) else {
        return;
    };
    let running = start(&interop, true, Tokens::Jwt).await;
    let report = run_script(&interop, &["lazy", &running.mcp_url]).await;
    let context = format!("{report:#}");

    assert_eq!(report["connected"], true, "{context}");
    assert_eq!(
        report["tools"],
        json!(["public_echo", "secret_read", "whoami"]),
        "{context}"
    );
    assert_eq!(
        report["echo"],
        json!({"text": "hello from the TypeScript SDK", "is_error": false}),
        "{context}"
    );
    // whoami needs a token: the layer answers 401 with the challenge, which the SDK (with no
    // auth provider) surfaces as an HTTP error.
    assert_eq!(report["whoami_error"]["code"], 401, "{context}");
    let requests = report["requests"].as_array().unwrap();
    let last = requests.last().unwrap();
    assert_eq!(last["status"], 401, "{context}");
    assert!(
        last["www_authenticate"]
            .as_str()
            .unwrap()
            .contains(&format!("resource_metadata=\"{}\"", running.metadata_url)),
        "{context}"
    );
    // Everything before it went through without a token.
    assert!(
        requests[..requests.len() - 1].iter().all(|r| r["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))),
        "{context}"
    );
}

/// Runs `token` mode and checks both protected tools answer as `subject`.
async fn assert_protected_tools_answer(
    interop: &support::Interop,
    running: &Running,
    token: &str,
    subject: &str,
) {
    let report = run_script(interop, &["token", &running.mcp_url, token]).await;
    let context = format!("{report:#}");
    assert_eq!(report["connected"], true, "{context}");
    assert_eq!(
        report["tools"],
        json!(["public_echo", "secret_read", "whoami"]),
        "{context}"
    );
    assert_eq!(
        report["whoami"],
        json!({"text": subject, "is_error": false}),
        "{context}"
    );
    assert_eq!(
        report["secret_read"],
        json!({"text": format!("the secret is 42 (read by {subject})"), "is_error": false}),
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_calls_protected_tools_with_a_provider_jwt_and_with_an_api_key() {
    let Some(interop) =
        support::interop("ts_sdk_calls_protected_tools_with_a_provider_jwt_and_with_an_api_key")
    else {
        return;
    };
    let running = start(&interop, false, Tokens::Jwt).await;

    // An API key from MCP_OAUTH_API_KEYS; the chain tries keys first, so a key is never sent
    // to the provider's introspection endpoint.
    assert_protected_tools_answer(&interop, &running, API_KEY, "script-bot").await;
    assert_eq!(running.provider.introspections().await, 0);

    // A JWT access token minted by oidc-provider for our resource, verified through its JWKS.
    let token = running
        .provider
        .client_credentials_token(&running.mcp_url, "read")
        .await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["aud"], running.mcp_url);
    let subject = claims["sub"].as_str().unwrap().to_owned();
    assert_protected_tools_answer(&interop, &running, &token, &subject).await;
    assert!(running.provider.jwks_fetches().await >= 1);
    assert_eq!(running.provider.introspections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_calls_protected_tools_with_an_opaque_provider_token() {
    let Some(interop) =
        support::interop("ts_sdk_calls_protected_tools_with_an_opaque_provider_token")
    else {
        return;
    };
    let running = start(&interop, false, Tokens::Opaque).await;
    let token = running
        .provider
        .client_credentials_token(&running.mcp_url, "read")
        .await;
    assert_eq!(token.split('.').count(), 1, "expected an opaque token");
    // Client-credentials tokens name the client as their subject.
    assert_protected_tools_answer(&interop, &running, &token, oidc::CLIENT_ID).await;
    assert!(running.provider.introspections().await >= 1);
}

/// `initialize` on `url`, with `key` as the bearer token when given: the status.
async fn initialize(url: &str, key: Option<&str>) -> u16 {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&init);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap().status().as_u16()
}

/// The example's configuration: environment, overridden by `--flag value` (the binary, as a
/// user runs it, with API keys only).
#[tokio::test]
async fn example_settings_come_from_env_and_flags() {
    use sha2::Digest as _;
    let bob_hash: String = sha2::Sha256::digest(b"k-two-0123456789")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let api_keys = format!("k-one-0123456789:alice:read write, sha256hex={bob_hash}:bob:");
    let server = example::Example::start(
        "resource_server",
        &[("MCP_OAUTH_API_KEYS", &api_keys), ("MCP_OAUTH_LAZY", "0")],
        &[
            "--public-url",
            "http://localhost:9/",
            "--lazy",
            "--allow-origin",
            "http://localhost:6274",
            "--allow-origin=https://app.example.com",
        ],
    )
    .await;
    let out = server.stdout();
    assert!(out.contains("http://localhost:9/mcp"), "{out}");
    let mcp = server.url("/mcp");
    // `--lazy` overrides MCP_OAUTH_LAZY=0: `initialize` needs no token.
    assert_eq!(initialize(&mcp, None).await, 200);
    // Both keys, the plain one and the hashed one, authenticate.
    assert_eq!(initialize(&mcp, Some("k-one-0123456789")).await, 200);
    assert_eq!(initialize(&mcp, Some("k-two-0123456789")).await, 200);
    assert_eq!(initialize(&mcp, Some("k-three-0123456789")).await, 401);
    // Both origins are allowed, another is not.
    let client = reqwest::Client::new();
    for (origin, allowed) in [
        ("http://localhost:6274", true),
        ("https://app.example.com", true),
        ("https://evil.example.com", false),
    ] {
        let res = client
            .post(&mcp)
            .header("origin", origin)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status() != 403, allowed, "{origin}: {}", res.status());
    }
    drop(server);

    // `--help` names every variable.
    let help = example::run("resource_server", &[], &["--help"]).await;
    for needle in [
        "MCP_OAUTH_ADDR",
        "127.0.0.1:8000",
        "MCP_OAUTH_PUBLIC_URL",
        "MCP_OAUTH_ISSUER",
        "MCP_OAUTH_JWKS_URI",
        "MCP_OAUTH_INTROSPECTION_URL",
        "MCP_OAUTH_API_KEYS",
        "MCP_OAUTH_LAZY",
        "MCP_OAUTH_ALLOW_ORIGIN",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {help:?}");
    }

    // Mistakes are refused, and errors never echo a key.
    assert!(
        !example::run("resource_server", &[], &["--nope"])
            .await
            .success
    );
    assert!(
        !example::run("resource_server", &[], &["--issuer"])
            .await
            .success
    );
    let bad = example::run(
        "resource_server",
        &[("MCP_OAUTH_API_KEYS", "secret-key-without-subject")],
        &[],
    )
    .await;
    assert!(!bad.success, "{bad:?}");
    assert!(
        !bad.stderr.contains("secret-key") && !bad.stdout.contains("secret-key"),
        "errors never echo a key: {bad:?}"
    );
}

/// With API keys only (no identity provider) the example serves, and refuses without a key.
#[tokio::test]
async fn example_serves_with_api_keys_only() {
    let api_keys = format!("{API_KEY}:script-bot:read");
    let server =
        example::Example::start("resource_server", &[("MCP_OAUTH_API_KEYS", &api_keys)], &[]).await;
    let url = server.url("/mcp");
    assert!(server.stdout().contains(&url), "{}", server.stdout());
    assert_eq!(initialize(&url, None).await, 401);
    assert_eq!(initialize(&url, Some("wrong-key-0123456789")).await, 401);
    assert_eq!(initialize(&url, Some(API_KEY)).await, 200);
    drop(server);

    // Neither an issuer nor API keys: refused at start with a hint.
    let bad = example::run("resource_server", &[], &[]).await;
    assert!(
        !bad.success && bad.stderr.contains("MCP_OAUTH_ISSUER"),
        "{bad:?}"
    );
}
