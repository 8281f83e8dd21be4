//! MCP over streamable HTTP, by hand: raw posts ([`mcp_post`], [`Raw`] with a token and a
//! session), answers read whole ([`read`], SSE parsed by [`sse_messages`]), raw HTTP/1.1
//! bytes over TCP ([`raw_http`]), and a tiny MCP server to forward to ([`fake_mcp`]).

use serde_json::{Value, json};

use super::http;

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
            return ::http::StatusCode::ACCEPTED.into_response();
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

/// Sends `request`, raw HTTP/1.1 bytes (which should say `Connection: close`), to the
/// address of `base` (`http://host:port`) and reads the answer to its end: the status and
/// everything after the head. For what an HTTP client library will not send: two `Host`
/// headers, an absolute-form target, bytes that are not ASCII.
pub async fn raw_http(base: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("no answer in time")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let rest = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, rest)
}
