//! Shared helpers for the proxy's HTTP tests (and its benchmark): start the proxy binary in
//! front of an upstream and get an access token for it through the real OAuth flow.
//!
//! - [`ProxyProcess::start`] runs `mcp-oauth-proxy --upstream URL` on `127.0.0.1:0` with a
//!   fresh SQLite store, reads the `listening on http://ADDR` line, and keeps its standard
//!   error (the logs) for assertions that secrets never appear there.
//! - [`obtain_token`] does what an MCP client does: the protected-resource metadata, the
//!   authorization server's metadata, dynamic client registration, an authorization request
//!   with PKCE S256 and `resource`, which the scripted browser (`tests/support/browser.rs`,
//!   here as [`browser`]) signs in to and approves, and the code exchange.
//!
//! Include it with `mod common_http;` from `proxy/tests/*.rs` (or with
//! `#[path = "../tests/common_http.rs"]` from a bench).
#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// The scripted browser (`tests/support/browser.rs`).
#[allow(dead_code)]
#[path = "../../tests/support/browser.rs"]
pub mod browser;

use self::browser::{Browser, Decision, query_param};

/// The demo user's name.
pub const USER: &str = "demo";
/// The demo user's password.
pub const PASSWORD: &str = "proxy-http-test-password";
/// A loopback redirect URI that is never listened on: the browser stops at it.
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A unique directory under the target's temporary directory.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "proxy-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running proxy binary.
#[derive(Debug)]
pub struct ProxyProcess {
    child: tokio::process::Child,
    /// `http://ADDR`.
    pub base: String,
    /// `http://ADDR/mcp`.
    pub mcp_url: String,
    /// Everything it wrote to standard error so far.
    stderr: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl ProxyProcess {
    /// Starts `mcp-oauth-proxy --upstream <upstream> <extra…>` (demo user, fresh store,
    /// `RUST_LOG=debug` so that the logs are as talkative as they get).
    pub async fn start(upstream: &str, extra: &[&str]) -> Self {
        let dir = temp_dir("http");
        let store = dir.join("s.sqlite3");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-proxy"));
        cmd.args(["--user", USER, "--password", PASSWORD, "--store"])
            .arg(&store)
            .args(["--addr", "127.0.0.1:0", "--upstream", upstream])
            .args(extra)
            .env("RUST_LOG", "debug")
            .env_remove("MCP_OAUTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start mcp-oauth-proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("proxy stdout") {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    return addr.trim().to_owned();
                }
            }
            panic!(
                "the proxy exited before listening: {}",
                stderr.lock().unwrap()
            );
        })
        .await
        .unwrap_or_else(|_| panic!("the proxy did not start: {}", stderr.lock().unwrap()));
        // Keep draining stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = format!("http://{addr}");
        Self {
            child,
            mcp_url: format!("{base}/mcp"),
            base,
            stderr,
            dir,
        }
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh PKCE verifier (43+ characters of the unreserved set) and its S256 challenge.
pub fn pkce() -> (String, String) {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}-{}-{}",
        SystemTime::now().duration_since(UNIX_EPOCH),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(sha2::Sha256::digest(seed.as_bytes()));
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// An access token for the proxy at `base` (its resource `{base}/mcp`), obtained as an MCP
/// client obtains one: metadata discovery, registration, authorization (the scripted
/// browser signs in as [`USER`] and approves) and the code exchange with PKCE S256.
pub async fn obtain_token(base: &str) -> String {
    obtain_token_as(base, USER, PASSWORD).await
}

/// [`obtain_token`] for another user's credentials.
pub async fn obtain_token_as(base: &str, user: &str, password: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let get_json = |url: String| {
        let http = http.clone();
        async move {
            let res = http.get(&url).send().await.expect("GET metadata");
            assert!(res.status().is_success(), "GET {url}: {}", res.status());
            res.json::<serde_json::Value>()
                .await
                .expect("metadata JSON")
        }
    };
    let resource = format!("{base}/mcp");
    let prm = get_json(format!("{base}/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(prm["resource"], resource.as_str(), "{prm}");
    let issuer = prm["authorization_servers"][0]
        .as_str()
        .expect("authorization_servers")
        .trim_end_matches('/')
        .to_owned();
    let issuer_url = url::Url::parse(&issuer).expect("issuer URL");
    let path = issuer_url.path().trim_end_matches('/');
    let asm = get_json(format!(
        "{}/.well-known/oauth-authorization-server{path}",
        issuer_url.origin().ascii_serialization()
    ))
    .await;
    let endpoint = |name: &str| {
        asm[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {asm}"))
            .to_owned()
    };
    let scope = asm["scopes_supported"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str())
                .filter(|s| *s == "mcp")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();

    let reg = http
        .post(endpoint("registration_endpoint"))
        .json(&serde_json::json!({
            "client_name": "proxy http test",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(reg.status(), 201, "registration");
    let reg: serde_json::Value = reg.json().await.expect("registration JSON");
    let client_id = reg["client_id"].as_str().expect("client_id").to_owned();

    let (verifier, challenge) = pkce();
    let state = pkce().0;
    let mut authorize = url::Url::parse(&endpoint("authorization_endpoint")).expect("authorize");
    {
        let mut q = authorize.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("resource", &resource);
        if !scope.is_empty() {
            q.append_pair("scope", &scope);
        }
    }
    let browser = Browser::new(user, password);
    let callback = browser
        .authorize(authorize.as_str(), Decision::Approve)
        .await;
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(state.as_str())
    );
    let code = query_param(&callback, "code")
        .unwrap_or_else(|| panic!("no code in {callback}: {}", browser.transcript()));

    let res = http
        .post(endpoint("token_endpoint"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", resource.as_str()),
        ])
        .send()
        .await
        .expect("token");
    let status = res.status();
    let body: serde_json::Value = res.json().await.expect("token JSON");
    assert_eq!(status, 200, "token exchange: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
