//! The quickstart keeps its state in a SQLite file by default: after a restart on the same
//! file, a client registered before still authorizes, its access token still verifies (the
//! signing keys are in the file too) and its refresh token still refreshes. With
//! `--store memory` the same restart forgets all of it (the control that shows the test
//! can fail).
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

#[path = "support/example.rs"]
mod example;

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const PUBLIC: &str = "http://127.0.0.1:9";
const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "restart-test-verifier-0123456789-abcdefghijklmnop";

/// One run of the quickstart binary on `127.0.0.1:0`, killed on drop.
struct Running {
    base: String,
    http: reqwest::Client,
    _example: example::Example,
}

/// Starts the quickstart on `store` (a SQLite path, or `memory`), auto-approving as `demo`.
async fn start(store: &str) -> Running {
    let example = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_PUBLIC_URL", PUBLIC),
            ("MCP_OAUTH_DEMO_USER", "demo"),
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
            ("MCP_OAUTH_STORE", store),
        ],
        &[],
    )
    .await;
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
                "client_name": "restart test",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["client_id"].as_str().unwrap().to_owned()
    }

    /// The authorization code (auto-approved), or the status when there is none.
    async fn authorize(&self, client_id: &str) -> Result<String, u16> {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(VERIFIER.as_bytes()));
        let resource = format!("{PUBLIC}/mcp");
        let url = url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
                ("scope", "files:read"),
                ("resource", resource.as_str()),
            ],
        )
        .unwrap();
        let res = self.http.get(url).send().await.unwrap();
        let location = res
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .filter(|l| l.starts_with(REDIRECT))
            .ok_or(res.status().as_u16())?;
        let url = url::Url::parse(location).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or(0)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// `initialize` with a bearer token: the layer verifies any token it is shown.
    async fn mcp_status(&self, access_token: &str) -> u16 {
        self.http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(access_token)
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "restart-test", "version": "0"},
                }}),
            )
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Registers, authorizes and redeems: `(client_id, access token, refresh token)`.
async fn sign_in(app: &Running) -> (String, String, String) {
    let client_id = app.register().await;
    let code = app.authorize(&client_id).await.expect("a code");
    let (status, tokens) = app
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &client_id),
            ("resource", &format!("{PUBLIC}/mcp")),
        ])
        .await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.mcp_status(&access).await, 200);
    (client_id, access, refresh)
}

async fn refresh(app: &Running, client_id: &str, refresh: &str) -> (u16, Value) {
    app.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", client_id),
    ])
    .await
}

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-oauth-restart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("quickstart.sqlite3")
}

#[tokio::test]
async fn a_restart_on_the_sqlite_file_keeps_clients_tokens_and_keys() {
    let file = temp_db("sqlite");
    let store = file.display().to_string();
    let first = start(&store).await;
    let (client_id, access, refresh_token) = sign_in(&first).await;
    first._example.kill9().await;

    let second = start(&store).await;
    assert_eq!(
        second.mcp_status(&access).await,
        200,
        "the access token verifies: the signing key survived"
    );
    let (status, body) = refresh(&second, &client_id, &refresh_token).await;
    assert_eq!(status, 200, "the refresh token survived: {body}");
    let new_access = body["access_token"].as_str().unwrap();
    assert_eq!(second.mcp_status(new_access).await, 200);
    assert!(
        second.authorize(&client_id).await.is_ok(),
        "the client registered before the restart is known"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[tokio::test]
async fn a_restart_in_memory_forgets_everything() {
    let first = start("memory").await;
    let (client_id, access, refresh_token) = sign_in(&first).await;
    first._example.kill9().await;

    let second = start("memory").await;
    assert_eq!(second.mcp_status(&access).await, 401);
    let (status, body) = refresh(&second, &client_id, &refresh_token).await;
    assert!(
        status == 400 || status == 401,
        "an unknown client or refresh token is refused: {status} {body}"
    );
    assert!(second.authorize(&client_id).await.is_err());
}
