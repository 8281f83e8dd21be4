//! The comparison-table rows, each checked against the `mcp-oauth-proxy` binary in front of a
//! tiny MCP server over streamable HTTP (an in-test axum app):
//!
//! - PKCE is required and only `S256` is accepted;
//! - an authorization request shows a consent page naming the client and the scopes (no
//!   silent grant);
//! - a `401` carries `WWW-Authenticate` with `resource_metadata`;
//! - the discovery documents are served at the path-inserted URLs (and the root ones);
//! - refresh tokens rotate, and reusing a rotated-out one revokes the whole grant;
//! - registered clients survive a restart on the same SQLite file;
//! - per-tool scopes from the configuration file: `403 insufficient_scope` on that tool's
//!   `tools/call`, and a public tool works without a token when authentication is lazy;
//! - ChatGPT gets the refusal as a tool result carrying the challenge in `_meta`, everyone
//!   else the HTTP `401`.
//!
//! Rows that need the request to reach the MCP server (a public tool's result) check the
//! result the in-test MCP server answered through the HTTP forwarder.

mod common;

use common::{PASSWORD, REDIRECT_URI, Running, TempDir, USER, browser, http};

/// A configuration file for the rows: alice, scopes `mcp` and `files:write`, the tool `write`
/// needing `files:write`, no refresh grace; with `lazy`, `search` public, lazy authentication
/// and the `auto` challenge style (`http` otherwise).
fn rows_config(upstream: &str, lazy: bool) -> String {
    format!(
        r#"
upstream = "{upstream}"
store = "proxy.sqlite3"
user = "{USER}"
password = "{PASSWORD}"
refresh_grace = 0
lazy = {lazy}
public_tools = {public}
challenge_style = "{style}"

[scopes]
mcp = "Use the MCP server"
"files:write" = "Change your files"

[tool_scopes]
write = ["files:write"]
"#,
        public = if lazy { r#"["search"]"# } else { "[]" },
        style = if lazy { "auto" } else { "http" }
    )
}

async fn start(dir: &TempDir, lazy: bool) -> Running {
    let upstream = common::fake_mcp().await;
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, rows_config(&upstream, lazy)).unwrap();
    Running::start(dir.path(), &["--config", path.to_str().unwrap()], &[]).await
}

/// Fetches a page, answering the given cookie header; returns (status, location, body,
/// set-cookie pairs).
async fn get(url: &str, cookies: &str) -> (u16, Option<String>, String, Vec<String>) {
    let mut req = http().get(url);
    if !cookies.is_empty() {
        req = req.header("cookie", cookies);
    }
    let resp = req.send().await.unwrap();
    split(resp).await
}

async fn split(resp: reqwest::Response) -> (u16, Option<String>, String, Vec<String>) {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    (
        status,
        location,
        resp.text().await.unwrap_or_default(),
        cookies,
    )
}

#[tokio::test]
async fn row_pkce_is_required_and_s256_only() {
    let dir = TempDir::new("pkce");
    let proxy = start(&dir, false).await;
    let client_id = common::register(&proxy.base, "pkce row client").await;
    let pkce = common::pkce();
    let good = common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp);

    // The control: with S256, the request goes on to the login page.
    let (status, _, body, _) = get(&good, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("type=\"password\""), "no login page: {body}");

    let without = {
        let mut u = url::Url::parse(&good).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !k.starts_with("code_challenge"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let plain = good
        .replace(&pkce.challenge, &pkce.verifier)
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    for (what, url) in [("no code_challenge", without), ("method plain", plain)] {
        let (status, location, body, _) = get(&url, "").await;
        assert!(
            !body.contains("type=\"password\""),
            "{what}: the login page was shown"
        );
        match location {
            // Refused back to the client with an OAuth error, never with a code.
            Some(loc) => {
                assert!(loc.starts_with(REDIRECT_URI), "{what}: {loc}");
                assert_eq!(
                    browser::query_param(&loc, "error").as_deref(),
                    Some("invalid_request"),
                    "{what}: {loc}"
                );
                assert!(browser::query_param(&loc, "code").is_none(), "{what}");
            }
            None => assert!(
                (400..500).contains(&status),
                "{what}: status {status}: {body}"
            ),
        }
    }
    // The metadata advertises S256 alone.
    let meta: serde_json::Value = http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            proxy.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    proxy.stop().await;
}

#[tokio::test]
async fn row_consent_page_names_the_client_and_scopes() {
    let dir = TempDir::new("consent");
    let proxy = start(&dir, false).await;
    let client_id = common::register(&proxy.base, "Consent Row Client").await;
    let pkce = common::pkce();
    let url = common::authorize_url(
        &proxy.base,
        &client_id,
        &pkce,
        "mcp files:write",
        &proxy.mcp,
    );
    let mut jar: Vec<String> = Vec::new();
    let (status, _, body, set) = get(&url, "").await;
    jar.extend(set);
    assert_eq!(status, 200);
    let forms = browser::parse_forms(&body, &url);
    let login = forms.iter().find(|f| f.is_login()).expect("a login form");
    let mut fields: Vec<(String, String)> = login.fields.clone();
    for (name, value) in &mut fields {
        match login.types.get(name).map(String::as_str) {
            Some("password") => *value = PASSWORD.to_owned(),
            Some("text" | "email") => *value = USER.to_owned(),
            _ if name == "username" => *value = USER.to_owned(),
            _ => {}
        }
    }
    let resp = http()
        .post(&login.action)
        .header("cookie", jar.join("; "))
        .form(&fields)
        .send()
        .await
        .unwrap();
    let (mut status, mut location, mut body, set) = split(resp).await;
    jar.extend(set);
    // Follow same-origin redirects to the consent page; none may go to the client.
    let mut page_url = login.action.clone();
    for _ in 0..5 {
        let Some(loc) = location.clone() else { break };
        let next = url::Url::parse(&page_url).unwrap().join(&loc).unwrap();
        assert!(
            !next.as_str().starts_with(REDIRECT_URI),
            "a silent grant: redirected to the client before any consent: {next}"
        );
        page_url = next.to_string();
        (status, location, body, _) = get(&page_url, &jar.join("; ")).await;
    }
    assert_eq!(status, 200, "{body}");
    let forms = browser::parse_forms(&body, &page_url);
    assert!(
        forms.iter().any(|f| f.has("decision")),
        "no consent form: {body}"
    );
    let text = browser::decode_entities(&body);
    assert!(
        text.contains("Consent Row Client"),
        "client not named: {body}"
    );
    assert!(
        text.contains("Use the MCP server"),
        "scope mcp not listed: {body}"
    );
    assert!(
        text.contains("Change your files"),
        "scope files:write not listed: {body}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn row_401_carries_www_authenticate_with_resource_metadata() {
    let dir = TempDir::new("401");
    let proxy = start(&dir, false).await;
    let resp = common::mcp_post(
        &proxy.mcp,
        None,
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let expected = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        proxy.base
    );
    assert!(challenge.contains(&expected), "{challenge}");
    // A bad token gets a 401 with invalid_token and the same pointer.
    let resp = common::mcp_post(&proxy.mcp, Some("not-a-token"), common::tool_call("echo")).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains(&expected), "{challenge}");
    proxy.stop().await;
}

#[tokio::test]
async fn row_path_inserted_metadata_is_served() {
    let dir = TempDir::new("metadata");
    let proxy = start(&dir, false).await;
    let fetch = |path: &str| {
        let url = format!("{}{path}", proxy.base);
        async move {
            let resp = http().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    let prm = fetch("/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(prm["resource"], proxy.mcp);
    assert_eq!(
        prm["authorization_servers"],
        serde_json::json!([proxy.base])
    );
    // The root form too, for clients that do not insert the path.
    let root = fetch("/.well-known/oauth-protected-resource").await;
    assert_eq!(root["resource"], proxy.mcp);
    let asm = fetch("/.well-known/oauth-authorization-server").await;
    assert_eq!(asm["issuer"], proxy.base);
    assert_eq!(asm["token_endpoint"], format!("{}/token", proxy.base));
    let oidc = fetch("/.well-known/openid-configuration").await;
    assert_eq!(oidc["issuer"], proxy.base);
    proxy.stop().await;
}

#[tokio::test]
async fn row_refresh_tokens_rotate_and_reuse_revokes_the_grant() {
    let dir = TempDir::new("refresh");
    let proxy = start(&dir, false).await;
    let client_id = common::register(&proxy.base, "refresh row client").await;
    let first = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp").await;
    let r1 = first.refresh.clone().expect("a refresh token");

    let (status, body) = common::refresh(&proxy.base, &client_id, &r1).await;
    assert_eq!(status, 200, "{body}");
    let second = common::tokens(&body);
    let r2 = second.refresh.clone().expect("a rotated refresh token");
    assert_ne!(r1, r2, "the refresh token was not rotated");

    // The old one is refused... (grace 0 s: the store counts whole seconds, so step past the
    // second of the rotation first; this is no speed assertion)
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = common::refresh(&proxy.base, &client_id, &r1).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    // ...and its reuse revoked the family: the successor is dead too.
    let (status, body) = common::refresh(&proxy.base, &client_id, &r2).await;
    assert_eq!(status, 400, "the successor still works after reuse: {body}");
    assert_eq!(body["error"], "invalid_grant");
    // As are the access tokens of the grant.
    let resp = common::mcp_post(&proxy.mcp, Some(&second.access), common::tool_call("echo")).await;
    assert_eq!(
        resp.status(),
        401,
        "an access token of a revoked grant works"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn row_registered_clients_survive_a_restart() {
    let dir = TempDir::new("restart");
    let upstream = common::fake_mcp().await;
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, rows_config(&upstream, false)).unwrap();
    let cfg = path.to_str().unwrap().to_owned();
    // A fixed port, so that the issuer and resource stay the same across the restart.
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let proxy = Running::start(dir.path(), &["--config", &cfg, "--addr", &addr], &[]).await;
    let client_id = common::register(&proxy.base, "restart row client").await;
    let before = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp").await;
    proxy.stop().await;

    let proxy = Running::start(dir.path(), &["--config", &cfg, "--addr", &addr], &[]).await;
    // The client is still known: a whole authorization works with its client_id.
    let after = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp").await;
    assert!(!after.access.is_empty());
    // And the refresh token issued before the restart still works (keys and grants persisted).
    let (status, body) =
        common::refresh(&proxy.base, &client_id, before.refresh.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    // An unknown client is refused, so the check above means something.
    let pkce = common::pkce();
    let (status, location, _, _) = get(
        &common::authorize_url(&proxy.base, "no-such-client", &pkce, "mcp", &proxy.mcp),
        "",
    )
    .await;
    assert!(
        location.is_none() && (400..500).contains(&status),
        "unknown client: {status} {location:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn row_per_tool_scopes_from_the_config_file() {
    let dir = TempDir::new("toolscopes");
    let proxy = start(&dir, false).await;
    let client_id = common::register(&proxy.base, "tool scope row client").await;
    let narrow = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp").await;
    assert!(!narrow.scope.contains("files:write"), "{}", narrow.scope);

    let resp = common::mcp_post(&proxy.mcp, Some(&narrow.access), common::tool_call("write")).await;
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("files:write"), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    // The control: a tool without a scope of its own is not refused by the layer.
    let resp = common::mcp_post(&proxy.mcp, Some(&narrow.access), common::tool_call("echo")).await;
    assert!(
        !matches!(resp.status().as_u16(), 401 | 403),
        "echo refused: {}",
        resp.status()
    );

    // With the scope, `write` passes the layer.
    let wide = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp files:write").await;
    assert!(wide.scope.contains("files:write"), "{}", wide.scope);
    let resp = common::mcp_post(&proxy.mcp, Some(&wide.access), common::tool_call("write")).await;
    assert_forwarded(resp, "write").await;
    proxy.stop().await;
}

#[tokio::test]
async fn row_public_tool_works_without_a_token_when_lazy() {
    let dir = TempDir::new("public");
    let proxy = start(&dir, true).await;
    let resp = common::mcp_post(&proxy.mcp, None, common::tool_call("search")).await;
    assert_forwarded(resp, "search").await;
    // A protected tool without a token still gets the challenge.
    let resp = common::mcp_post(&proxy.mcp, None, common::tool_call("echo")).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = common::mcp_post(&proxy.mcp, None, common::tool_call("write")).await;
    assert_eq!(resp.status(), 401);
    proxy.stop().await;
}

/// The request passed the OAuth layer and reached the MCP server, which answered it.
async fn assert_forwarded(resp: reqwest::Response, tool: &str) {
    let status = resp.status().as_u16();
    assert!(
        !matches!(status, 401 | 403) && !resp.headers().contains_key("www-authenticate"),
        "{tool}: refused by the layer: {status}"
    );
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{tool}: {body}");
    assert!(body.contains(&format!("called {tool}")), "{tool}: {body}");
}

#[tokio::test]
async fn row_chatgpt_gets_the_tool_result_challenge() {
    let dir = TempDir::new("chatgpt");
    let proxy = start(&dir, true).await;
    let call = |ua: &'static str| {
        let mcp = proxy.mcp.clone();
        async move {
            http()
                .post(&mcp)
                .header("accept", "application/json, text/event-stream")
                .header("user-agent", ua)
                .json(&common::tool_call("echo"))
                .send()
                .await
                .unwrap()
        }
    };
    // ChatGPT: HTTP 200, a tool result flagged as an error, the challenge in `_meta`.
    let resp = call("openai-mcp/1.0.0 (ChatGPT)").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["isError"], true, "{body}");
    let challenges = &body["result"]["_meta"]["mcp/www_authenticate"];
    let first = challenges[0].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(
        first.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            proxy.base
        )),
        "{first}"
    );
    // Everyone else: HTTP 401 with the header.
    let resp = call("some-sdk-client/1.0").await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    proxy.stop().await;
}
