//! Shared helpers for the proxy's integration tests: the binary started as a child process
//! (bound to 127.0.0.1:0, its URL read from its first stdout line), a tiny MCP server over
//! streamable HTTP (JSON responses) to forward to, and an OAuth client (dynamic registration,
//! PKCE S256, the scripted browser for login and consent, the token exchange).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

#[path = "../../../tests/support/browser.rs"]
pub mod browser;

/// The user every test proxy knows.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "correct horse battery staple";
/// The redirect URI test clients register (nothing listens there: the browser stops at it).
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// The proxy binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-oauth-proxy")
}

/// A `Command` for the binary in `dir`, with no `MCP_OAUTH_*` variable inherited.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_OAUTH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub async fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = command(dir);
    cmd.args(args).envs(envs.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the binary did not finish in time")
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The public base URL (no path).
    pub base: String,
    /// The MCP URL.
    pub mcp: String,
    /// Everything it wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts the binary in `dir` with `args` (and `--addr 127.0.0.1:0` unless given) and
    /// waits for its `MCP server URL:` line.
    pub async fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = command(dir);
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mcp = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("MCP server URL: ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(mcp) = mcp else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!(
                "the proxy did not start; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = mcp.trim_end_matches("/mcp").to_owned();
        Self {
            child,
            base,
            mcp,
            stderr,
        }
    }

    /// Stops it (SIGKILL) and waits.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A fresh temporary directory under the target dir (removed when dropped).
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A new empty directory named after `name`.
    pub fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-oauth-proxy-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain HTTP client (no redirects followed).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A PKCE pair.
#[derive(Debug, Clone)]
pub struct Pkce {
    /// The verifier.
    pub verifier: String,
    /// Its S256 challenge.
    pub challenge: String,
}

/// A fresh PKCE pair (the verifier: 64 hex characters of a hash of time, pid and a counter).
pub fn pkce() -> Pkce {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}-{}-{}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let verifier: String = Sha256::digest(seed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// Registers a public client (authorization code + refresh token) at `base`; its client_id.
pub async fn register(base: &str, name: &str) -> String {
    let resp = http()
        .post(format!("{base}/register"))
        .json(&serde_json::json!({
            "client_name": name,
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "registration failed: {body}");
    body["client_id"].as_str().unwrap().to_owned()
}

/// The authorization URL for `client_id` with `pkce`, asking for `scope` for `resource`.
pub fn authorize_url(
    base: &str,
    client_id: &str,
    pkce: &Pkce,
    scope: &str,
    resource: &str,
) -> String {
    let mut url = url::Url::parse(&format!("{base}/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", scope)
        .append_pair("resource", resource)
        .append_pair("state", "s1");
    url.to_string()
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: Option<String>,
    /// The granted scope.
    pub scope: String,
}

/// Logs in as [`USER`] through the browser, approves, and exchanges the code.
pub async fn sign_in(base: &str, mcp: &str, client_id: &str, scope: &str) -> Tokens {
    let pkce = pkce();
    let browser = browser::Browser::new(USER, PASSWORD);
    let callback = browser
        .authorize(
            &authorize_url(base, client_id, &pkce, scope, mcp),
            browser::Decision::Approve,
        )
        .await;
    let code = browser::query_param(&callback, "code")
        .unwrap_or_else(|| panic!("no code in the callback {callback}"));
    let resp = http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", client_id),
            ("code_verifier", &pkce.verifier),
            ("resource", mcp),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "token exchange failed: {body}");
    tokens(&body)
}

/// Reads a token response.
pub fn tokens(body: &serde_json::Value) -> Tokens {
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().map(str::to_owned),
        scope: body["scope"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A refresh-token grant: (status, body).
pub async fn refresh(base: &str, client_id: &str, refresh: &str) -> (u16, serde_json::Value) {
    let resp = http()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// POSTs a JSON-RPC message to the MCP URL (with `token` if any).
pub async fn mcp_post(
    mcp: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut req = http()
        .post(mcp)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A `tools/call` message.
pub fn tool_call(name: &str) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": name, "arguments": {"text": "hi"}}
    })
}

/// A tiny MCP server over streamable HTTP (stateless, JSON responses) at `/mcp`: tools
/// `echo`, `write`, `search`; `tools/call` answers `called NAME`. Returns its URL.
pub async fn fake_mcp() -> String {
    use axum::Json;
    use axum::routing::post;
    async fn handle(Json(msg): Json<serde_json::Value>) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let Some(id) = msg.get("id").cloned() else {
            return http::StatusCode::ACCEPTED.into_response();
        };
        let result = match msg["method"].as_str().unwrap_or_default() {
            "initialize" => serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "0"}
            }),
            "tools/list" => serde_json::json!({"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}},
                {"name": "write", "inputSchema": {"type": "object"}},
                {"name": "search", "inputSchema": {"type": "object"}}
            ]}),
            "tools/call" => serde_json::json!({"content": [
                {"type": "text", "text": format!("called {}", msg["params"]["name"].as_str().unwrap_or_default())}
            ]}),
            _ => serde_json::json!({}),
        };
        Json(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
    }
    let app = axum::Router::new().route("/mcp", post(handle));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/mcp")
}
