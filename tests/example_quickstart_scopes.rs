//! The quickstart's demo user has a scope ceiling when `MCP_OAUTH_DEMO_SCOPES` is set
//! (issue 8 item 4): over real HTTP, a client that asks for `files:write` gets only
//! `files:read`, or `invalid_scope` when it asks for nothing else. Without the setting the
//! same requests are granted (the control that shows the test can fail).
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

#[path = "support/example.rs"]
mod example;

#[path = "support/browser.rs"]
#[allow(dead_code)]
mod browser;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use browser::{Browser, Decision};

const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "scope-ceiling-test-verifier-0123456789-abcdefghijk";
const PASSWORD: &str = "demo-password-for-tests";

struct Running {
    base: String,
    http: reqwest::Client,
    _example: example::Example,
}

/// The quickstart binary on a free port, with `env` added to its environment.
async fn start(env: &[(&str, &str)]) -> Running {
    let mut vars = vec![
        ("MCP_OAUTH_DEMO_PASSWORD", PASSWORD),
        ("MCP_OAUTH_STORE", "memory"),
    ];
    vars.extend_from_slice(env);
    let example = example::Example::start("quickstart", &vars, &[]).await;
    Running {
        base: example.base.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _example: example,
    }
}

impl Running {
    async fn register(&self) -> String {
        let res = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({
                "client_name": "scope ceiling test",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["client_id"].as_str().unwrap().to_owned()
    }

    fn authorize_url(&self, client_id: &str, scope: &str) -> String {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(VERIFIER.as_bytes()));
        let resource = format!("{}/mcp", self.base);
        url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
                ("scope", scope),
                ("resource", resource.as_str()),
            ],
        )
        .unwrap()
        .to_string()
    }

    /// Logs in as the demo user in a browser and approves: the callback's parameters.
    async fn authorize(&self, client_id: &str, scope: &str) -> Vec<(String, String)> {
        let browser = Browser::new("demo", PASSWORD);
        let callback = browser
            .authorize(&self.authorize_url(client_id, scope), Decision::Approve)
            .await;
        assert!(callback.starts_with(REDIRECT), "{callback}");
        url::Url::parse(&callback)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The scope of the access token a code is exchanged for.
    async fn token_scope(&self, client_id: &str, code: &str) -> String {
        let res = self
            .http
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", client_id),
                ("resource", &format!("{}/mcp", self.base)),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["scope"].as_str().unwrap().to_owned()
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// issue 8 item 4: the demo user cannot be granted a scope outside its ceiling.
#[tokio::test]
async fn demo_scopes_cap_what_the_demo_user_is_granted_over_http() {
    let app = start(&[("MCP_OAUTH_DEMO_SCOPES", "files:read")]).await;
    let client = app.register().await;

    // Both requested: only the one inside the ceiling is granted.
    let params = app.authorize(&client, "files:read files:write").await;
    let code = param(&params, "code").expect("a code");
    assert_eq!(app.token_scope(&client, code).await, "files:read");

    // Only a scope outside the ceiling: refused with invalid_scope after the login.
    let params = app.authorize(&client, "files:write").await;
    assert_eq!(param(&params, "error"), Some("invalid_scope"), "{params:?}");
    assert_eq!(param(&params, "code"), None);
}

// The control: without a ceiling, the same requests are granted.
#[tokio::test]
async fn without_demo_scopes_the_demo_user_gets_what_it_asks() {
    let app = start(&[]).await;
    let client = app.register().await;
    let params = app.authorize(&client, "files:read files:write").await;
    let code = param(&params, "code").expect("a code");
    assert_eq!(
        app.token_scope(&client, code).await,
        "files:read files:write"
    );
    let params = app.authorize(&client, "files:write").await;
    let code = param(&params, "code").expect("a code");
    assert_eq!(app.token_scope(&client, code).await, "files:write");
}
