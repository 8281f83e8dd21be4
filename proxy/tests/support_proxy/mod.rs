//! Shared helpers for the proxy's integration tests: the `mcp-oauth-proxy` binary started on
//! `127.0.0.1:0` (its stdout's `listening on http://ADDR` line parsed, its stderr kept for log
//! assertions), tokens the cheap way (registration, the scripted browser's login and consent,
//! PKCE code exchange) and a raw streamable-HTTP MCP client (SSE parsed).
//!
//! A test crate using it declares, at its root:
//!
//! ```ignore
//! #[path = "../../tests/support/mod.rs"] mod support;
//! #[allow(dead_code)] #[path = "../../tests/support/browser.rs"] mod browser;
//! mod support_proxy;
//! ```
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::browser::{Browser, Decision, query_param};

/// The password of the proxy's user in these tests.
pub const PASSWORD: &str = "proxy-test-password";
/// The user.
pub const USER: &str = "demo";
/// The redirect URI the raw clients register (loopback: never listened on).
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A fresh directory under the target's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running `mcp-oauth-proxy`.
pub struct RunningProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `{base}/mcp`.
    pub mcp: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl RunningProxy {
    /// Starts the binary with the test user, a fresh SQLite store, `extra` flags and, after
    /// `--`, `command`; waits for its `listening on` line.
    pub async fn start(name: &str, extra: &[&str], command: &[String]) -> Self {
        let dir = temp_dir(name);
        let store = dir.join("s.sqlite3");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-proxy"));
        cmd.args([
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--addr",
            "127.0.0.1:0",
        ])
        .arg("--store")
        .arg(&store)
        .args(extra)
        .arg("--")
        .args(command)
        .env("RUST_LOG", "info,mcp_oauth_proxy=debug")
        .env("MCP_OAUTH_TEST_SECRET", "must-not-reach-the-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("cannot start mcp-oauth-proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout_text = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err_lines.next_line().await {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&l);
                    s.push('\n');
                }
            }
        });
        let mut out_lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = stdout_text.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(l)) = out_lines.next_line().await {
                if let Some(addr) = l.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&l);
                    s.push('\n');
                }
            }
        });
        let base = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(base)) => base,
            _ => panic!(
                "the proxy did not report its address\nstderr: {}",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            ),
        };
        let mcp = format!("{base}/mcp");
        Self {
            child,
            base,
            mcp,
            stderr,
            stdout: stdout_text,
        }
    }

    /// Everything the proxy logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `SIGTERM` and waits (bounded) for the proxy to exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.pid();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.stderr().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// The fixture server's command line (`proxy_fixture_server.py stdio` under the interop
/// venv's Python).
pub fn fixture_command(interop: &crate::support::Interop) -> Vec<String> {
    vec![
        interop.python().display().to_string(),
        "-u".to_owned(),
        interop
            .root
            .join("tests/interop/proxy_fixture_server.py")
            .display()
            .to_string(),
        "stdio".to_owned(),
    ]
}

/// An HTTP client that follows no redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// A registered client and its access token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The client id.
    pub client_id: String,
    /// The access token.
    pub access: String,
}

/// Registers a new public client on the proxy's authorization server, has the browser log in
/// as the user and consent, and exchanges the code (PKCE, `resource` = the MCP URL).
pub async fn grant(base: &str, mcp: &str, client_name: &str) -> Grant {
    let http = http();
    let reg: Value = http
        .post(format!("{base}/register"))
        .json(&json!({
            "redirect_uris": [REDIRECT],
            "client_name": client_name,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("registration JSON");
    let client_id = reg["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no client_id: {reg}"))
        .to_owned();
    let url = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("scope", "mcp"),
            ("state", "s"),
            ("resource", mcp),
        ],
    )
    .expect("authorize URL");
    let browser = Browser::new(USER, PASSWORD);
    let callback = browser.authorize(url.as_str(), Decision::Approve).await;
    let code = query_param(&callback, "code")
        .unwrap_or_else(|| panic!("no code in {callback}\n{}", browser.transcript()));
    let tok: Value = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", client_id.as_str()),
            ("resource", mcp),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let access = tok["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {tok}"))
        .to_owned();
    Grant { client_id, access }
}

/// What a raw MCP call got back.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Mcp-Session-Id` response header.
    pub session: Option<String>,
    /// The `Content-Type`.
    pub content_type: String,
    /// The messages: the SSE events' data, or the JSON body.
    pub messages: Vec<Value>,
    /// The raw body.
    pub body: String,
    /// Every response header, lowercase name → value.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The response to request `id`.
    pub fn response(&self, id: i64) -> Option<&Value> {
        self.messages
            .iter()
            .find(|m| m["id"] == json!(id) && m.get("method").is_none())
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `data:` of every event of an SSE body, as JSON.
pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty())
                .then(|| serde_json::from_str(&data.join("\n")).ok())
                .flatten()
        })
        .collect()
}

/// A raw streamable-HTTP MCP client with a token.
#[derive(Debug, Clone)]
pub struct Raw {
    http: reqwest::Client,
    /// The MCP URL.
    pub mcp: String,
    /// The bearer token.
    pub token: String,
    /// The session, once initialized.
    pub session: Option<String>,
    /// The `MCP-Protocol-Version` sent (`2025-06-18` unless changed).
    pub protocol: String,
}

impl Raw {
    /// A client for `mcp` with `token`.
    pub fn new(mcp: &str, token: &str) -> Self {
        Self {
            http: http(),
            mcp: mcp.to_owned(),
            token: token.to_owned(),
            session: None,
            protocol: "2025-06-18".to_owned(),
        }
    }

    /// A request builder with the token, the session (when any) and `accept`.
    pub fn request(&self, method: reqwest::Method, accept: &str) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .request(method, &self.mcp)
            .bearer_auth(&self.token)
            .header("accept", accept)
            .header("mcp-protocol-version", &self.protocol);
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    /// Sends `body` as a POST and reads the whole answer.
    pub async fn post_with(&self, body: &Value, accept: &str) -> Answer {
        let res = self
            .request(reqwest::Method::POST, accept)
            .json(body)
            .send()
            .await
            .expect("POST to the proxy");
        read(res).await
    }

    /// POST with the spec's `Accept` (JSON and SSE).
    pub async fn post(&self, body: &Value) -> Answer {
        self.post_with(body, "application/json, text/event-stream")
            .await
    }

    /// `initialize` then `notifications/initialized`; keeps the session id.
    pub async fn initialize(&mut self) -> Answer {
        self.session = None;
        let a = self
            .post(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"}
                }
            }))
            .await;
        if a.status == 200 {
            self.session = a.session.clone();
            let n = self
                .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .await;
            assert_eq!(n.status, 202, "initialized notification: {n:?}");
        }
        a
    }

    /// `tools/call name(args)` as request `id`.
    pub async fn call(&self, id: i64, name: &str, args: Value) -> Answer {
        self.post(&json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}
        }))
        .await
    }

    /// The `pid` the fixture's `whoami` reports.
    pub async fn whoami(&self, id: i64) -> u64 {
        let a = self.call(id, "whoami", json!({})).await;
        let r = a
            .response(id)
            .unwrap_or_else(|| panic!("no whoami response: {a:?}"));
        let sc = &r["result"]["structuredContent"];
        let v = if sc.get("pid").is_some() {
            sc.clone()
        } else if sc.get("result").is_some() {
            sc["result"].clone()
        } else {
            let text = r["result"]["content"][0]["text"].as_str().unwrap_or("{}");
            serde_json::from_str(text).unwrap_or(Value::Null)
        };
        v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {r}"))
    }

    /// The text of a tool call's result.
    pub fn text(a: &Answer, id: i64) -> String {
        a.response(id)
            .and_then(|r| r["result"]["content"][0]["text"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// `DELETE` of the session.
    pub async fn delete(&self) -> u16 {
        self.request(
            reqwest::Method::DELETE,
            "application/json, text/event-stream",
        )
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
    }
}

/// Reads a whole response.
pub async fn read(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let session = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res.text().await.unwrap_or_default();
    let messages = if content_type.starts_with("text/event-stream") {
        sse_messages(&body)
    } else {
        serde_json::from_str::<Value>(&body)
            .map(|v| match v {
                Value::Array(a) => a,
                v => vec![v],
            })
            .unwrap_or_default()
    };
    Answer {
        status,
        session,
        content_type,
        messages,
        body,
        headers,
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` is gone.
pub async fn gone(pid: u64) -> bool {
    for _ in 0..150 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
