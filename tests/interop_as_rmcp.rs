//! rmcp's own OAuth client (`rmcp` 3.11: `AuthorizationManager`, `OAuthState` /
//! `AuthorizationSession`, `AuthClient`) through the whole flow against the embedded
//! authorization server, in the quickstart's app (`examples/quickstart.rs`, served on
//! 127.0.0.1).
//!
//! 1. An `AuthClient` with no credentials connects (lazy authentication lets the handshake,
//!    `tools/list` and `public_search` through) and calls `files_read`: `401`, surfaced as the
//!    request's `auth_challenge()`.
//! 2. `OAuthState::start_authorization` seeded with that challenge discovers our metadata
//!    (RFC 9728 → RFC 8414), registers (RFC 7591) and builds the authorization URL; the
//!    test's browser logs in and approves; `handle_callback_url` checks `state` and `iss` and
//!    exchanges the code. A new `AuthClient` over the authorized manager calls `files_read`.
//! 3. The stored token is aged past its expiry: the manager refreshes it on its own before
//!    the next call.
//! 4. `files_write` → `403 insufficient_scope`; `request_scope_upgrade` (the
//!    `ScopeUpgradeConfig` path) builds the re-authorization URL with the union of scopes;
//!    after the browser, the exchange gives a token that holds `files:write`.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;

#[path = "support/example.rs"]
mod example;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationCallback, AuthorizationManager, AuthorizationRequest,
    CredentialStore, OAuthState, ScopeUpgradeConfig, StoredCredentials, WWWAuthenticateParams,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use tokio::sync::RwLock;

use browser::{Browser, Decision, query_param};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "interop-demo-password-rmcp";
/// Bound on each step of the flow.
const STEP: Duration = Duration::from_secs(30);

/// A credential store the test can reach into: in memory, shared, and able to age the stored
/// token as the clock would.
#[derive(Clone, Default)]
struct SharedStore(Arc<RwLock<Option<StoredCredentials>>>);

impl SharedStore {
    async fn get(&self) -> Option<StoredCredentials> {
        self.0.read().await.clone()
    }

    /// Makes the stored token look received long ago (so it is expired).
    async fn age(&self) {
        if let Some(c) = self.0.write().await.as_mut() {
            c.token_received_at = Some(1);
        }
    }
}

#[async_trait]
impl CredentialStore for SharedStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        Ok(self.0.read().await.clone())
    }
    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        *self.0.write().await = Some(credentials);
        Ok(())
    }
    async fn clear(&self) -> Result<(), AuthError> {
        *self.0.write().await = None;
        Ok(())
    }
}

use example::Running;

/// The quickstart binary on `127.0.0.1:0` (memory store, the demo user with `PASSWORD`).
async fn start() -> Running {
    example::start_quickstart("demo", PASSWORD).await
}

type Client = RunningService<RoleClient, ()>;

async fn connect(auth: AuthClient<reqwest::Client>, url: &str) -> Client {
    let transport = StreamableHttpClientTransport::with_client(
        auth,
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    );
    tokio::time::timeout(STEP, ().serve(transport))
        .await
        .expect("connect timed out")
        .expect("connect")
}

fn args(v: Value) -> CallToolRequestParams {
    let Value::Object(map) = v else {
        unreachable!()
    };
    CallToolRequestParams::new("").with_arguments(map)
}

async fn call(
    client: &Client,
    name: &'static str,
    arguments: Value,
) -> Result<String, rmcp::ServiceError> {
    let mut params = args(arguments);
    params.name = name.into();
    let result = tokio::time::timeout(STEP, client.call_tool(params))
        .await
        .expect("tools/call timed out")?;
    let json = serde_json::to_value(&result).unwrap();
    assert_ne!(json["isError"], true, "{name} failed: {json}");
    Ok(json["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect())
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The stored access and refresh tokens (through the token response's serde form).
async fn access_token(store: &SharedStore) -> (String, Option<String>) {
    let creds = store.get().await.expect("stored credentials");
    let token = serde_json::to_value(creds.token_response.expect("a token")).unwrap();
    (
        token["access_token"].as_str().unwrap().to_owned(),
        token["refresh_token"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_oauth_client_completes_the_flow_refreshes_and_upgrades_scope() {
    let running = start().await;
    let browser = Browser::new("demo", PASSWORD);
    let store = SharedStore::default();

    // 1. No credentials: the request goes out without a token.
    let mut manager = AuthorizationManager::new(running.mcp_url.as_str())
        .await
        .unwrap();
    manager.set_credential_store(store.clone());
    let anonymous = connect(
        AuthClient::new(reqwest::Client::new(), manager),
        &running.mcp_url,
    )
    .await;
    let tools = anonymous.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["files_read", "files_write", "public_search"]);
    assert_eq!(
        call(
            &anonymous,
            "public_search",
            serde_json::json!({"query": "welcome"})
        )
        .await
        .unwrap(),
        "welcome.txt"
    );
    let err = call(
        &anonymous,
        "files_read",
        serde_json::json!({"path": "welcome.txt"}),
    )
    .await
    .unwrap_err();
    let challenge = err
        .auth_challenge()
        .unwrap_or_else(|| panic!("files_read without a token: {err:?}"))
        .to_owned();
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", running.metadata_url)),
        "{challenge}"
    );
    let _ = anonymous.cancel().await;

    // 2. Authorize from the challenge: discovery, registration, browser, exchange.
    let mut state = OAuthState::new(running.mcp_url.as_str(), None)
        .await
        .unwrap();
    let OAuthState::Unauthorized(m) = &mut state else {
        unreachable!()
    };
    m.set_credential_store(store.clone());
    m.set_scope_upgrade_config(ScopeUpgradeConfig::default());
    tokio::time::timeout(
        STEP,
        state.start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("mcp-oauth interop (rmcp)")
                .with_initial_scope_selection()
                .with_challenge(challenge.clone()),
        ),
    )
    .await
    .expect("start_authorization timed out")
    .unwrap_or_else(|e| panic!("start_authorization: {e}"));
    let auth_url = state.get_authorization_url().await.unwrap();
    assert!(
        auth_url.starts_with(&format!("{}/authorize?", running.issuer)),
        "{auth_url}"
    );
    assert_eq!(
        query_param(&auth_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&auth_url, "resource").as_deref(),
        Some(running.mcp_url.as_str())
    );
    assert_eq!(
        query_param(&auth_url, "redirect_uri").as_deref(),
        Some(REDIRECT)
    );
    assert_eq!(
        query_param(&auth_url, "scope").as_deref(),
        Some("files:read"),
        "{auth_url}"
    );
    let client_id = query_param(&auth_url, "client_id").unwrap();
    let callback = browser.authorize(&auth_url, Decision::Approve).await;
    assert!(callback.starts_with(&format!("{REDIRECT}?")), "{callback}");
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(running.issuer.as_str())
    );
    tokio::time::timeout(STEP, state.handle_callback_url(&callback))
        .await
        .expect("code exchange timed out")
        .unwrap_or_else(|e| panic!("code exchange: {e}\n{}", browser.transcript()));
    let manager = state.into_authorization_manager().expect("authorized");
    assert_eq!(manager.get_current_scopes().await, ["files:read"]);
    let (first_access, first_refresh) = access_token(&store).await;
    let c = claims(&first_access);
    assert_eq!(c["iss"], running.issuer);
    assert_eq!(c["sub"], "demo");
    assert_eq!(c["client_id"], client_id);
    assert_eq!(c["scope"], "files:read");
    assert!(
        c["aud"] == running.mcp_url || c["aud"][0] == running.mcp_url,
        "{c}"
    );
    assert!(
        first_refresh.is_some(),
        "a refresh token is issued to a client registered for it"
    );

    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let client = connect(auth.clone(), &running.mcp_url).await;
    assert_eq!(
        call(
            &client,
            "files_read",
            serde_json::json!({"path": "welcome.txt"})
        )
        .await
        .unwrap(),
        format!("welcome.txt: Hello from the mcp-oauth quickstart! (read by demo via {client_id})")
    );

    // 3. Refresh: the token looks expired, so the manager refreshes before the next request.
    store.age().await;
    assert_eq!(
        call(
            &client,
            "files_read",
            serde_json::json!({"path": "notes/todo.txt"})
        )
        .await
        .unwrap(),
        format!(
            "notes/todo.txt: try files_write: it needs files:write (read by demo via {client_id})"
        )
    );
    let (second_access, second_refresh) = access_token(&store).await;
    assert_ne!(second_access, first_access, "the manager refreshed");
    assert_ne!(second_refresh, first_refresh, "refresh tokens rotate");
    assert!(store.get().await.unwrap().token_received_at.unwrap() > 1);

    // 4. Step-up: 403 insufficient_scope, then re-authorization with the union.
    let err = call(
        &client,
        "files_write",
        serde_json::json!({"path": "notes/from-rmcp.txt", "content": "hello from rmcp"}),
    )
    .await
    .unwrap_err();
    let challenge = err
        .auth_challenge()
        .unwrap_or_else(|| panic!("files_write with files:read: {err:?}"))
        .to_owned();
    let params =
        WWWAuthenticateParams::parse(&challenge, &url::Url::parse(&running.mcp_url).unwrap());
    assert!(params.is_insufficient_scope(), "{challenge}");
    assert_eq!(params.scope.as_deref(), Some("files:read files:write"));
    let upgrade_url = {
        let manager = auth.auth_manager.lock().await;
        assert!(manager.can_attempt_scope_upgrade().await);
        manager
            .request_scope_upgrade(params.scope.as_deref().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(
        query_param(&upgrade_url, "scope").as_deref(),
        Some("files:read files:write")
    );
    let callback = browser.authorize(&upgrade_url, Decision::Approve).await;
    let cb = AuthorizationCallback::from_redirect_url(&callback).unwrap();
    {
        let manager = auth.auth_manager.lock().await;
        tokio::time::timeout(
            STEP,
            manager.exchange_code_for_token_with_issuer(
                &cb.code,
                &cb.csrf_token,
                cb.issuer.as_deref(),
            ),
        )
        .await
        .expect("upgrade exchange timed out")
        .unwrap_or_else(|e| panic!("upgrade exchange: {e}\n{}", browser.transcript()));
        assert_eq!(
            manager.get_current_scopes().await,
            ["files:read", "files:write"]
        );
    }
    let (upgraded, _) = access_token(&store).await;
    assert_eq!(claims(&upgraded)["scope"], "files:read files:write");
    let _ = client.cancel().await;
    let client = connect(auth.clone(), &running.mcp_url).await;
    assert_eq!(
        call(
            &client,
            "files_write",
            serde_json::json!({"path": "notes/from-rmcp.txt", "content": "hello from rmcp"}),
        )
        .await
        .unwrap(),
        format!("notes/from-rmcp.txt: wrote 15 bytes (written by demo via {client_id})")
    );
    assert_eq!(
        call(
            &client,
            "files_read",
            serde_json::json!({"path": "notes/from-rmcp.txt"})
        )
        .await
        .unwrap(),
        format!("notes/from-rmcp.txt: hello from rmcp (read by demo via {client_id})")
    );
    let _ = client.cancel().await;
}
