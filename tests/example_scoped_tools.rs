//! `examples/scoped_tools.rs`, served on loopback and driven over HTTP the way MCP clients
//! drive it (rmcp's stateful streamable HTTP: `initialize`, session id, SSE replies):
//!
//! - `tools/list` needs no token and gives every tool its `securitySchemes`;
//! - each tool is refused or allowed by its attribute, through the hierarchy
//!   `admin` ⊇ `files:write` ⊇ `files:read`, with the exact `401`/`403` challenges;
//! - a ChatGPT request gets the `200` tool error with `_meta["mcp/www_authenticate"]`;
//! - the axum route with `#[requires_scopes("admin")]` answers `401`/`403`/`200`.
#![cfg(all(feature = "server", feature = "rmcp", feature = "macros"))]

#[path = "support/example.rs"]
mod example;

#[path = "support/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use browser::{Browser, Decision, query_param};

const CHATGPT_UA: &str = "openai-mcp/1.0.0 (ChatGPT)";

const PASSWORD: &str = "demo-password-123";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "scoped-tools-test-verifier-0123456789-abcdefghijklmn";

/// The example binary, running on `127.0.0.1:0`, with an MCP session open.
struct Running {
    base: String,
    resource: String,
    http: reqwest::Client,
    session: String,
    /// The registered client, and one access token per scope asked for.
    client_id: String,
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
    _example: example::Example,
}

/// What one request got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

async fn start() -> Running {
    let example = example::Example::start(
        "scoped_tools",
        &[
            ("MCP_OAUTH_DEMO_USER", "alice"),
            ("MCP_OAUTH_DEMO_PASSWORD", PASSWORD),
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(example.url("/register"))
        .json(&json!({
            "client_name": "scoped tools test",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut running = Running {
        base: example.base.clone(),
        resource: example.url("/mcp"),
        http,
        session: String::new(),
        client_id: registered["client_id"].as_str().unwrap().to_owned(),
        tokens: tokio::sync::Mutex::new(HashMap::new()),
        _example: example,
    };
    // Connecting needs no token (lazy authentication).
    let res = running
        .post(
            None,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "example-test", "version": "0"},
            }}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    running.session = res
        .headers()
        .get("mcp-session-id")
        .expect("rmcp opens a session")
        .to_str()
        .unwrap()
        .to_owned();
    let res = running
        .post(
            None,
            None,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 202);
    running
}

impl Running {
    /// An access token for `scope`: signed in as the demo user through the authorization
    /// server (login and consent in a browser), once per scope.
    async fn token(&self, scope: &str) -> String {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(scope) {
            return token.clone();
        }
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(VERIFIER.as_bytes()));
        let url = url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
                ("scope", scope),
                ("resource", self.resource.as_str()),
            ],
        )
        .unwrap();
        let callback = Browser::new("alice", PASSWORD)
            .authorize(url.as_str(), Decision::Approve)
            .await;
        let code = query_param(&callback, "code").unwrap_or_else(|| panic!("{callback}"));
        let body: Value = self
            .http
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", self.client_id.as_str()),
                ("resource", self.resource.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["scope"], scope, "{body}");
        let token = body["access_token"].as_str().unwrap().to_owned();
        tokens.insert(scope.to_owned(), token.clone());
        token
    }

    async fn post(
        &self,
        scope: Option<&str>,
        user_agent: Option<&str>,
        msg: Value,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.resource)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("user-agent", user_agent.unwrap_or("example-test/0"))
            .body(msg.to_string());
        if !self.session.is_empty() {
            req = req
                .header("mcp-session-id", &self.session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        if let Some(scope) = scope {
            req = req.bearer_auth(self.token(scope).await);
        }
        req.send().await.unwrap()
    }

    async fn rpc_as(
        &self,
        scope: Option<&str>,
        user_agent: Option<&str>,
        method: &str,
        params: Value,
    ) -> Reply {
        let res = self
            .post(
                scope,
                user_agent,
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
            )
            .await;
        let status = res.status().as_u16();
        let www_authenticate = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        // SSE (rmcp's default) or plain JSON (the layer's own answers).
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .rfind(|v| v.get("result").is_some() || v.get("error").is_some())
                .unwrap_or(Value::Null)
        });
        Reply {
            status,
            www_authenticate,
            body,
        }
    }

    async fn call(&self, scope: Option<&str>, tool: &str) -> Reply {
        self.rpc_as(
            scope,
            None,
            "tools/call",
            json!({"name": tool, "arguments": {"name": "notes.txt"}}),
        )
        .await
    }

    async fn get(&self, path: &str, scope: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(scope) = scope {
            req = req.bearer_auth(self.token(scope).await);
        }
        let res = req.send().await.unwrap();
        let www = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status().as_u16(), www, res.text().await.unwrap())
    }

    fn prm(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }
}

/// The text of a successful tool result.
fn text(reply: &Reply) -> &str {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_ne!(
        reply.body["result"]["isError"],
        json!(true),
        "a tool error: {reply:?}"
    );
    reply.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {reply:?}"))
}

#[tokio::test]
async fn tools_list_declares_every_tools_security_schemes() {
    let app = start().await;
    let list = app.rpc_as(None, None, "tools/list", json!({})).await;
    assert_eq!(list.status, 200, "{list:?}");
    let tools = list.body["result"]["tools"].as_array().unwrap();
    let schemes = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {list:?}"))["securitySchemes"]
            .clone()
    };
    assert_eq!(tools.len(), 4, "{list:?}");
    assert_eq!(schemes("public_search"), json!([{"type": "noauth"}]));
    assert_eq!(
        schemes("files_read"),
        json!([{"type": "oauth2", "scopes": ["files:read"]}])
    );
    assert_eq!(
        schemes("files_write"),
        json!([{"type": "oauth2", "scopes": ["files:write"]}])
    );
    assert_eq!(
        schemes("admin_reset"),
        json!([{"type": "oauth2", "scopes": ["admin"]}])
    );
}

#[tokio::test]
async fn each_tool_gets_exactly_its_scopes_through_the_hierarchy() {
    let app = start().await;
    let prm = app.prm();

    // Public without a token.
    assert_eq!(
        text(&app.call(None, "public_search").await),
        r#"public results for "notes.txt""#
    );

    // No token: 401 naming the tool's scope.
    let r = app.call(None, "files_read").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(format!(r#"Bearer resource_metadata="{prm}", scope="files:read""#).as_str())
    );

    // files:read reads, but must step up to write: the 403 lists what to re-request.
    assert_eq!(
        text(&app.call(Some("files:read"), "files_read").await),
        "notes.txt: read by alice"
    );
    let r = app.call(Some("files:read"), "files_write").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(
            format!(
                r#"Bearer resource_metadata="{prm}", scope="files:read files:write", error="insufficient_scope", error_description="The access token lacks a scope this request needs""#
            )
            .as_str()
        )
    );

    // files:write implies files:read, but not admin.
    assert_eq!(
        text(&app.call(Some("files:write"), "files_read").await),
        "notes.txt: read by alice"
    );
    assert_eq!(
        text(&app.call(Some("files:write"), "files_write").await),
        "write #1 by alice"
    );
    let r = app.call(Some("files:write"), "admin_reset").await;
    assert_eq!(r.status, 403, "{r:?}");
    let www = r.www_authenticate.unwrap();
    assert!(
        www.contains(r#"scope="admin files:write""#) && www.contains("insufficient_scope"),
        "{www}"
    );

    // admin implies everything.
    assert_eq!(
        text(&app.call(Some("admin"), "files_read").await),
        "notes.txt: read by alice"
    );
    assert_eq!(
        text(&app.call(Some("admin"), "files_write").await),
        "write #2 by alice"
    );
    assert_eq!(
        text(&app.call(Some("admin"), "admin_reset").await),
        "reset by alice: 2 writes forgotten"
    );

    // An unknown tool needs a token (the policy's base requirement), then rmcp says no.
    let r = app.call(None, "no_such_tool").await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = app.call(Some("files:read"), "no_such_tool").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["error"].is_object(), "{r:?}");
}

#[tokio::test]
async fn chatgpt_gets_the_tool_result_challenge() {
    let app = start().await;
    let r = app
        .rpc_as(
            Some("files:read"),
            Some(CHATGPT_UA),
            "tools/call",
            json!({"name": "admin_reset", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let result = &r.body["result"];
    assert_eq!(result["isError"], json!(true), "{r:?}");
    let challenge = result["_meta"]["mcp/www_authenticate"]
        .as_array()
        .unwrap_or_else(|| panic!("no _meta challenge: {r:?}"))[0]
        .as_str()
        .unwrap();
    for needle in [
        format!(r#"resource_metadata="{}""#, app.prm()),
        r#"error="insufficient_scope""#.to_owned(),
        "error_description=".to_owned(),
        r#"scope="admin files:read""#.to_owned(),
    ] {
        assert!(challenge.contains(&needle), "{needle} in {challenge}");
    }

    // Without a token too: the challenge asks for a sign-in.
    let r = app
        .rpc_as(
            None,
            Some(CHATGPT_UA),
            "tools/call",
            json!({"name": "files_read", "arguments": {"name": "x"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let challenge = r.body["result"]["_meta"]["mcp/www_authenticate"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no _meta challenge: {r:?}"));
    assert_eq!(
        challenge,
        format!(
            r#"Bearer resource_metadata="{}", scope="files:read", error="insufficient_scope", error_description="Sign in to use this tool""#,
            app.prm()
        )
    );
}

#[tokio::test]
async fn the_axum_route_needs_admin() {
    let app = start().await;
    let (status, www, _) = app.get("/admin/stats", None).await;
    assert_eq!(status, 401);
    assert!(
        www.as_deref()
            .is_some_and(|w| w.starts_with(&format!(r#"Bearer resource_metadata="{}""#, app.prm()))),
        "{www:?}"
    );
    let (status, www, _) = app.get("/admin/stats", Some("files:write")).await;
    assert_eq!(status, 403);
    assert!(
        www.as_deref()
            .is_some_and(|w| w.contains(r#"error="insufficient_scope""#)),
        "{www:?}"
    );
    let (status, _, body) = app.get("/admin/stats", Some("admin")).await;
    assert_eq!((status, body.as_str()), (200, "stats for alice"));
}
