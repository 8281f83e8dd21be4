//! The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk` 1.32.2) against the
//! example resource server (`examples/resource_server.rs`, compiled into this test), with a
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

#[allow(dead_code)]
#[path = "support/oidc.rs"]
mod oidc;

#[allow(dead_code)]
#[path = "../examples/resource_server.rs"]
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
    // before the server can discover the provider: bind first, then start both.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bound = listener.local_addr().unwrap();
    let resource = format!("http://{bound}{}", example::MCP_PATH);
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
    let settings = example::Settings {
        issuer: Some(issuer.clone()),
        introspection_url: Some(provider.introspection_endpoint()),
        introspection_client_id: Some(oidc::RS_CLIENT_ID.to_owned()),
        introspection_client_secret: Some(oidc::RS_CLIENT_SECRET.to_owned()),
        api_keys: example::parse_api_keys(&format!("{API_KEY}:script-bot:read")).unwrap(),
        lazy,
        allow_local_idp: true,
        ..example::Settings::default()
    };
    let server = example::build(&settings, bound).await.unwrap();
    assert_eq!(server.config.resource(), resource);
    let metadata_url = server.config.resource_metadata_url().to_owned();
    tokio::spawn(async move { axum::serve(listener, server.app).await.unwrap() });
    Running {
        mcp_url: resource,
        metadata_url,
        issuer,
        as_metadata,
        provider,
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

/// The example's configuration parsing: environment, overridden by `--flag value`.
#[test]
fn example_settings_come_from_env_and_flags() {
    let env = |name: &str| match name {
        "MCP_OAUTH_ADDR" => Some("127.0.0.1:0".to_owned()),
        "MCP_OAUTH_ISSUER" => Some("https://idp.example.com".to_owned()),
        "MCP_OAUTH_API_KEYS" => Some(format!(
            "k-one:alice:read write, sha256hex={}:bob:",
            "ab".repeat(32)
        )),
        "MCP_OAUTH_LAZY" => Some("0".to_owned()),
        _ => None,
    };
    let args = [
        "--public-url",
        "https://mcp.example.com/",
        "--lazy",
        "--allow-origin",
        "http://localhost:6274",
        "--allow-origin=https://app.example.com",
    ]
    .map(str::to_owned);
    let s = example::Settings::parse(env, args).unwrap();
    assert_eq!(s.addr, "127.0.0.1:0");
    assert_eq!(s.issuer.as_deref(), Some("https://idp.example.com"));
    assert!(s.lazy, "--lazy overrides MCP_OAUTH_LAZY=0");
    assert_eq!(
        s.allow_origins,
        ["http://localhost:6274", "https://app.example.com"]
    );
    assert_eq!(
        s.api_keys,
        [
            example::ApiKeySpec {
                key: "k-one".to_owned(),
                hashed: false,
                subject: "alice".to_owned(),
                scopes: "read write".to_owned(),
            },
            example::ApiKeySpec {
                key: "ab".repeat(32),
                hashed: true,
                subject: "bob".to_owned(),
                scopes: String::new(),
            },
        ]
    );
    let bound: std::net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
    assert_eq!(s.public_base(bound), "https://mcp.example.com");
    assert_eq!(
        example::Settings::default().public_base("0.0.0.0:8000".parse().unwrap()),
        "http://127.0.0.1:8000"
    );
    assert_eq!(
        example::host_of("https://mcp.example.com").unwrap(),
        "mcp.example.com"
    );

    assert!(example::Settings::parse(|_| None, ["--nope".to_owned()]).is_err());
    assert!(example::Settings::parse(|_| None, ["--issuer".to_owned()]).is_err());
    let err = example::parse_api_keys("secret-key-without-subject").unwrap_err();
    assert!(
        !err.contains("secret-key"),
        "errors never echo a key: {err}"
    );
}

/// With API keys only (no identity provider) the example serves, and refuses without a key.
#[tokio::test]
async fn example_serves_with_api_keys_only() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bound = listener.local_addr().unwrap();
    let settings = example::Settings {
        api_keys: example::parse_api_keys(&format!("{API_KEY}:script-bot:read")).unwrap(),
        ..example::Settings::default()
    };
    let server = example::build(&settings, bound).await.unwrap();
    let url = server.config.resource().to_owned();
    assert_eq!(url, format!("http://{bound}/mcp"));
    assert!(server.instructions.contains(&url));
    tokio::spawn(async move { axum::serve(listener, server.app).await.unwrap() });

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let client = reqwest::Client::new();
    let post = |key: Option<&str>| {
        let mut req = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("wrong-key-0123456789")).await.unwrap().status(),
        401
    );
    assert_eq!(post(Some(API_KEY)).await.unwrap().status(), 200);

    // Neither an issuer nor API keys: refused at start with a hint.
    let err = example::build(&example::Settings::default(), bound)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MCP_OAUTH_ISSUER"), "{err}");
}
