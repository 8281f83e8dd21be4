//! The README's first program (`examples/readme.rs`, shown whole in README.md), run the way
//! a newcomer runs it:
//! - README.md's first code block is that file, byte for byte (so the README compiles);
//! - its `hash-password` command makes the hash it signs the user in with;
//! - an access token from before a restart on the same SQLite file still works (the signing
//!   keys live in the file with the clients and grants);
//! - deployed behind a public URL — a TLS proxy on 127.0.0.1 for `mcp.example.test`, so the
//!   server sees a loopback socket and `Host: mcp.example.test:PORT` — the official
//!   TypeScript SDK client goes through discovery, registration, sign-in and the tool call
//!   (rmcp's `Host` check passes because the allowed hosts derive from the public URL), and
//!   the MCP Inspector's origin passes CORS while a foreign origin is refused.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

mod support;

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;

#[path = "support/example.rs"]
mod example;

#[path = "support/tls_proxy.rs"]
mod tls_proxy;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use browser::{Browser, Decision, query_param};
use example::Example;

const PASSWORD: &str = "readme-demo-password";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "readme-test-verifier-0123456789-abcdefghijklmnopq";
const INSPECTOR: &str = "http://localhost:6274";

fn read(path: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_readmes_first_snippet_is_the_example_whole() {
    let readme = read("README.md");
    let first = readme
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```\n").next())
        .expect("README.md has a ```rust block");
    assert_eq!(
        format!("{first}\n"),
        read("examples/readme.rs"),
        "README.md's first ```rust block must be examples/readme.rs, whole: copy the file over"
    );
}

fn temp_file(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mcp-oauth-readme-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("notes.sqlite3").display().to_string()
}

/// `hash-password`: the password on stdin, the hash on stdout.
async fn hash_password(password: &str) -> String {
    let mut cmd = example::command("readme");
    cmd.arg("hash-password").stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A client of the running program: registration, authorization through the test browser,
/// tokens, and MCP calls.
struct Client {
    base: String,
    http: reqwest::Client,
    browser: Browser,
}

impl Client {
    fn new(base: &str, builder: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> Self {
        Self {
            base: base.to_owned(),
            http: builder(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()))
                .build()
                .unwrap(),
            browser: Browser::with_client("demo", PASSWORD, builder(Browser::client_builder())),
        }
    }

    /// Registers, signs in as `demo` and redeems the code: the access token.
    async fn sign_in(&self) -> String {
        let res = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({
                "client_name": "readme test",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let client: Value = res.json().await.unwrap();
        let client_id = client["client_id"].as_str().unwrap();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(VERIFIER.as_bytes()));
        let resource = format!("{}/mcp", self.base);
        let url = url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
                ("scope", "notes:read"),
                ("resource", resource.as_str()),
            ],
        )
        .unwrap();
        let callback = self
            .browser
            .authorize(url.as_str(), Decision::Approve)
            .await;
        let code = query_param(&callback, "code").expect("a code in the callback");
        let res = self
            .http
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", client_id),
                ("resource", &resource),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let tokens: Value = res.json().await.unwrap();
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    /// One JSON-RPC message to `/mcp`: the status and the response (JSON or the first SSE
    /// `data:` event), and the session id the server gave.
    async fn rpc(
        &self,
        token: &str,
        session: Option<&str>,
        msg: Value,
    ) -> (u16, Value, Option<String>) {
        let mut req = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(token)
            .json(&msg);
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let session = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            // rmcp's stream may open with an empty priming event: the first JSON-RPC one.
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .unwrap_or(Value::Null)
        });
        (status, body, session)
    }

    /// `initialize`, `notifications/initialized` and `tools/call read_notes`: the tool's text.
    async fn read_notes(&self, token: &str) -> Result<String, (u16, Value)> {
        let (status, body, session) = self
            .rpc(
                token,
                None,
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "readme-test", "version": "0"},
                }}),
            )
            .await;
        if status != 200 {
            return Err((status, body));
        }
        let session = session.expect("a session id");
        let (status, ..) = self
            .rpc(
                token,
                Some(&session),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(status, 202);
        let (status, body, _) = self
            .rpc(
                token,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "read_notes", "arguments": {}}}),
            )
            .await;
        match body["result"]["content"][0]["text"].as_str() {
            Some(text) if status == 200 => Ok(text.to_owned()),
            _ => Err((status, body)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_a_restart_on_the_same_sqlite_file_still_works() {
    let hash = hash_password(PASSWORD).await;
    let store = temp_file("restart");
    let env = [
        ("MCP_OAUTH_DEMO_USER", "demo"),
        ("MCP_OAUTH_DEMO_PASSWORD_HASH", hash.as_str()),
        ("MCP_OAUTH_STORE", store.as_str()),
    ];
    // One fixed port, so the public URL (and the token's audience) is the same after the
    // restart, as it is for a deployed server.
    let port = example::free_port();
    let addr = format!("127.0.0.1:{port}");
    let env: Vec<(&str, &str)> = env
        .into_iter()
        .chain([("MCP_OAUTH_ADDR", addr.as_str())])
        .collect();

    let first = Example::start("readme", &env, &[]).await;
    let client = Client::new(&first.base, |b| b);
    let token = client.sign_in().await;
    let notes = client.read_notes(&token).await.expect("the tool answers");
    assert_eq!(notes, "demo's notes: water the plants");
    let err = client
        .read_notes("not-a-token")
        .await
        .expect_err("a forged token is refused");
    assert_eq!(err.0, 401, "{err:?}");
    first.kill9().await;

    let second = Example::start("readme", &env, &[]).await;
    let client = Client::new(&second.base, |b| b);
    assert_eq!(
        client.read_notes(&token).await.as_deref(),
        Ok("demo's notes: water the plants"),
        "the token from before the restart verifies: the signing key is in the SQLite file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_public_url_the_ts_sdk_client_connects_and_the_inspector_passes_cors() {
    let Some(interop) = support::interop(
        "behind_a_public_url_the_ts_sdk_client_connects_and_the_inspector_passes_cors",
    ) else {
        return;
    };
    let mut proxy = tls_proxy::TlsProxy::bind("mcp.example.test").await;
    let public = proxy.url();
    let store = temp_file("public");
    let server = Example::start(
        "readme",
        &[
            ("MCP_OAUTH_PUBLIC_URL", public.as_str()),
            ("MCP_OAUTH_DEMO_USER", "demo"),
            ("MCP_OAUTH_DEMO_PASSWORD", PASSWORD),
            ("MCP_OAUTH_STORE", store.as_str()),
        ],
        &[],
    )
    .await;
    proxy.forward_to(server.addr);
    let mcp_url = format!("{public}/mcp");
    let http = proxy.client(reqwest::Client::builder()).build().unwrap();

    // The Inspector's page: the preflight and the call itself carry its origin.
    let pre = http
        .request(reqwest::Method::OPTIONS, &mcp_url)
        .header("origin", INSPECTOR)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], INSPECTOR);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "inspector", "version": "0"}}});
    let call = |origin: &'static str| {
        http.post(&mcp_url)
            .header("origin", origin)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
    };
    let res = call(INSPECTOR).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "rmcp accepts the public Host and the layer the origin"
    );
    assert_eq!(res.headers()["access-control-allow-origin"], INSPECTOR);
    // A foreign page is refused (DNS rebinding guard), before rmcp sees it.
    let res = call("https://evil.example").await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // The official TypeScript SDK client, reaching the name through the proxy.
    let browser = Browser::with_client("demo", PASSWORD, proxy.client(Browser::client_builder()));
    let mut cmd = interop.node_script("tests/interop/ts_client_full_flow.mjs");
    cmd.args([mcp_url.as_str(), REDIRECT, "read_notes"])
        .env("MCP_OAUTH_TEST_RESOLVE", &proxy.name)
        .env("NODE_EXTRA_CA_CERTS", proxy.ca());
    let run =
        browser::drive_script(cmd, &browser, Decision::Approve, Duration::from_secs(120)).await;
    let report = &run.report;
    assert!(run.success, "{report:#}\n{}", run.stderr);
    assert_eq!(report["steps"]["anonymous"]["tools"], json!(["read_notes"]));
    assert_eq!(
        report["steps"]["authorize"]["read_notes"]["text"], "demo's notes: water the plants",
        "{report:#}"
    );
    let claims = &report["steps"]["authorize"]["claims"];
    assert_eq!(claims["iss"], public.as_str());
    assert_eq!(claims["aud"], mcp_url.as_str());
    // Every request the SDK made went to the public name; the authorization was one.
    let requests = report["requests"].as_array().unwrap();
    assert!(requests.len() >= 5, "{report:#}");
    for r in requests {
        assert!(r["url"].as_str().unwrap().starts_with(&public), "{r}");
    }
    assert_eq!(run.authorizations.len(), 1);
    assert!(
        run.authorizations[0]
            .url
            .starts_with(&format!("{public}/authorize?"))
    );
}
