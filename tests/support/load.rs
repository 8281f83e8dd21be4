//! The load tests' client: one simulated MCP client over HTTP, driving the OAuth flow and MCP
//! calls the way a real one does, and recording the status of **every** answer it got, so a
//! test can assert that no request anywhere was answered with a 5xx.
//!
//! Each client connects from a loopback source address of its own (`127.0.0.N`, the whole
//! `127.0.0.0/8` is loopback on Linux): the authorization server's per-address rate limits
//! then see many users, as behind real clients, and stay on with their defaults.
//!
//! ```ignore
//! #[path = "support/load.rs"]
//! mod load;
//! ```
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The redirect URI every load client registers (loopback: any port matches).
pub const REDIRECT: &str = "http://127.0.0.1/callback";
/// The MCP protocol version the clients speak.
pub const PROTOCOL: &str = "2025-11-25";

/// The loopback address of client `n` (`127.0.0.2` …): distinct per client, so each has
/// its own rate-limit buckets.
pub fn source_address(n: usize) -> IpAddr {
    let n = u32::try_from(n).expect("client number") + 2;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n))
}

/// A random PKCE verifier (43 characters) and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).expect("random");
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// One answer: which request, and its status (0: no answer at all).
#[derive(Debug, Clone)]
pub struct Answer {
    /// `POST /token (refresh)`, …
    pub what: String,
    /// The HTTP status; 0 when the request got no response.
    pub status: u16,
    /// The start of the body, for failure messages.
    pub body: String,
}

/// Every answer every client got, shared.
#[derive(Debug, Clone, Default)]
pub struct Answers(Arc<Mutex<Vec<Answer>>>);

impl Answers {
    /// Records one answer.
    pub fn push(&self, what: &str, status: u16, body: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Answer {
                what: what.to_owned(),
                status,
                body: body.chars().take(300).collect(),
            });
    }

    /// How many answers were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The answers with a 5xx status.
    pub fn server_errors(&self) -> Vec<Answer> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| a.status >= 500)
            .cloned()
            .collect()
    }

    /// How many answers had each status.
    pub fn histogram(&self) -> std::collections::BTreeMap<u16, usize> {
        let mut h = std::collections::BTreeMap::new();
        for a in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *h.entry(a.status).or_insert(0) += 1;
        }
        h
    }
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

/// What a token request got.
#[derive(Debug, Clone)]
pub enum TokenAnswer {
    /// 200 with both tokens.
    Tokens(Tokens),
    /// An answer without tokens: status and body.
    Refused(u16, String),
    /// No answer (the connection failed or timed out).
    Lost(String),
}

/// One simulated client: an HTTP client on its own source address, against `base`.
#[derive(Debug, Clone)]
pub struct Client {
    /// The reqwest client (no redirects followed).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the server.
    pub base: String,
    /// The resource (`{public}/mcp`).
    pub resource: String,
    /// Where answers are recorded.
    pub answers: Answers,
}

impl Client {
    /// The client builder every load client uses: no redirects, a timeout, source address
    /// `source_address(n)`.
    pub fn builder(n: usize) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .local_address(source_address(n))
    }

    /// Client number `n` against `base`, whose resource is `resource`.
    pub fn new(n: usize, base: &str, resource: &str, answers: Answers) -> Self {
        Self {
            http: Self::builder(n).build().expect("reqwest client"),
            base: base.to_owned(),
            resource: resource.to_owned(),
            answers,
        }
    }

    /// Sends `req`, records its answer under `what`: `(status, body)`, status 0 when no
    /// answer came.
    pub async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> (u16, String) {
        let (status, body) = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                match res.text().await {
                    Ok(body) => (status, body),
                    Err(e) => (0, format!("body of a {status}: {e}")),
                }
            }
            Err(e) => (0, e.to_string()),
        };
        self.answers.push(what, status, &body);
        (status, body)
    }

    /// RFC 7591 registration of a public client: its id, or the status and body.
    pub async fn register(&self, name: &str) -> Result<String, (u16, String)> {
        let req = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({
                "client_name": name,
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }));
        let (status, body) = self.send("POST /register", req).await;
        if status != 201 {
            return Err((status, body));
        }
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["client_id"].as_str().map(str::to_owned))
            .ok_or((status, body))
    }

    /// The authorization URL for `client_id` with this PKCE `challenge` and `state`.
    pub fn authorize_url(&self, client_id: &str, challenge: &str, state: &str) -> String {
        url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("state", state),
                ("scope", "files:read"),
                ("resource", self.resource.as_str()),
            ],
        )
        .expect("authorization URL")
        .to_string()
    }

    /// `GET /authorize` on a server that approves by itself: the code from the redirect,
    /// or the status and body.
    pub async fn authorize_auto(
        &self,
        client_id: &str,
        challenge: &str,
    ) -> Result<String, (u16, String)> {
        let url = self.authorize_url(client_id, challenge, "s1");
        let res = self.http.get(url).send().await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                self.answers.push("GET /authorize", 0, &e.to_string());
                return Err((0, e.to_string()));
            }
        };
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = res.text().await.unwrap_or_default();
        self.answers.push("GET /authorize", status, &body);
        let Some(location) = location.filter(|l| l.starts_with(REDIRECT)) else {
            return Err((status, body));
        };
        code_of(&location).ok_or((status, location))
    }

    /// Whether `client_id` is known: `/authorize` with it answers the login page or a
    /// redirect into the authorization server's own pages (or the callback with a code),
    /// never the "unknown client" error page.
    pub async fn client_is_known(&self, client_id: &str) -> Result<(), (u16, String)> {
        let (_, challenge) = pkce();
        let url = self.authorize_url(client_id, &challenge, "check");
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| (0, e.to_string()))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = res.text().await.unwrap_or_default();
        self.answers.push("GET /authorize (check)", status, &body);
        match (status, location) {
            (200, _) => Ok(()),
            (302 | 303, Some(l)) if !l.contains("error=") => Ok(()),
            (s, l) => Err((s, format!("location {l:?}: {body}"))),
        }
    }

    async fn token(&self, what: &str, form: &[(&str, &str)]) -> TokenAnswer {
        let req = self.http.post(format!("{}/token", self.base)).form(form);
        let (status, body) = self.send(what, req).await;
        if status == 0 {
            return TokenAnswer::Lost(body);
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        match (
            status,
            v["access_token"].as_str(),
            v["refresh_token"].as_str(),
        ) {
            (200, Some(a), Some(r)) => TokenAnswer::Tokens(Tokens {
                access: a.to_owned(),
                refresh: r.to_owned(),
            }),
            _ => TokenAnswer::Refused(status, body),
        }
    }

    /// The authorization-code grant with PKCE.
    pub async fn exchange(&self, client_id: &str, code: &str, verifier: &str) -> TokenAnswer {
        self.token(
            "POST /token (code)",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                ("client_id", client_id),
                ("resource", &self.resource),
            ],
        )
        .await
    }

    /// The refresh-token grant.
    pub async fn refresh(&self, client_id: &str, refresh: &str) -> TokenAnswer {
        self.token(
            "POST /token (refresh)",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", client_id),
            ],
        )
        .await
    }

    /// One MCP request to `/mcp` with `access` (and `session`, when given): status, the
    /// session id answered, and the body.
    pub async fn mcp(
        &self,
        what: &str,
        access: &str,
        session: Option<&str>,
        body: &Value,
    ) -> (u16, Option<String>, String) {
        let mut req = self
            .http
            .post(format!("{}/mcp", self.base))
            .bearer_auth(access)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .json(body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let (status, session, text) = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let session = res
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match res.text().await {
                    Ok(t) => (status, session, t),
                    Err(e) => (0, session, format!("body of a {status}: {e}")),
                }
            }
            Err(e) => (0, None, e.to_string()),
        };
        self.answers.push(what, status, &text);
        (status, session, text)
    }

    /// `initialize` and `notifications/initialized` with `access`: the MCP session id.
    pub async fn open_session(&self, access: &str) -> Result<String, (u16, String)> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "load-test", "version": "0"},
        }});
        let (status, session, body) = self.mcp("POST /mcp initialize", access, None, &init).await;
        let session = match (status, session) {
            (200, Some(s)) => s,
            (s, _) => return Err((s, body)),
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, body) = self
            .mcp(
                "POST /mcp notifications/initialized",
                access,
                Some(&session),
                &note,
            )
            .await;
        if !(200..300).contains(&status) {
            return Err((status, body));
        }
        Ok(session)
    }

    /// `tools/call` of `files_read` (needs `files:read`): the tool's text, or the status and
    /// body.
    pub async fn read_file(&self, access: &str, session: &str) -> Result<String, (u16, String)> {
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "files_read", "arguments": {"path": "welcome.txt"},
        }});
        let (status, _, body) = self
            .mcp("POST /mcp tools/call", access, Some(session), &call)
            .await;
        if status != 200 || !body.contains("Hello from the mcp-oauth quickstart!") {
            return Err((status, body));
        }
        Ok(body)
    }
}

/// The `code` of a callback URL.
pub fn code_of(callback: &str) -> Option<String> {
    url::Url::parse(callback)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

/// The value of query parameter `name` in `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
