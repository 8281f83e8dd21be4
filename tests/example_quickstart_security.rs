//! The quickstart over real HTTP (rmcp behind the layer), attacked the way issue 8 found it
//! open:
//! - item 1: a `files:read` token calling `files_write` with malformed `params` (the name
//!   hidden behind a `uri` of another type, duplicated keys, positional params, an encoded
//!   body, a Base64 `Mcp-Name`) is refused by the layer (`403 insufficient_scope` or `400`),
//!   never handed to rmcp;
//! - item 2: `GET` / `DELETE /mcp` (and notifications and public calls) naming another
//!   principal's session are refused: `401` without a token, `404` with another user's
//!   token or the same user's token from another client.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

#[path = "support/example.rs"]
mod example;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const PUBLIC: &str = "http://127.0.0.1:9";
const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "security-test-verifier-0123456789-abcdefghijklmnop";
const PROTOCOL: &str = "2025-11-25";

/// The quickstart binary on `127.0.0.1:0` (auto-approving as `demo`), killed on drop.
struct Running {
    base: String,
    http: reqwest::Client,
    _example: example::Example,
    /// The SQLite file it keeps its signing keys in.
    store: PathBuf,
    /// Whether dropping it removes that file's directory.
    owns_store: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.owns_store {
            let _ = std::fs::remove_dir_all(self.store.parent().unwrap());
        }
    }
}

/// Starts the quickstart as `user` on the SQLite file `store` (created when missing).
async fn start_as(user: &str, store: PathBuf) -> Running {
    let example = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_PUBLIC_URL", PUBLIC),
            ("MCP_OAUTH_DEMO_USER", user),
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
            ("MCP_OAUTH_STORE", &store.display().to_string()),
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
        store,
        owns_store: true,
    }
}

async fn start() -> Running {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mcp-oauth-security-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    start_as("demo", dir.join("quickstart.sqlite3")).await
}

impl Running {
    /// Registers a new client, authorizes `scope` (auto-approved as `demo`) and redeems the code:
    /// `(client_id, access token)`.
    async fn sign_in(&self, scope: &str) -> (String, String) {
        // A client of its own each time: identical public registrations share one client.
        static CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let res = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({
                "client_name": format!("security test {n}"),
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let client_id = res.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(VERIFIER.as_bytes()));
        let resource = format!("{PUBLIC}/mcp");
        let url = url::Url::parse_with_params(
            &format!("{}/authorize", self.base),
            [
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
                ("scope", scope),
                ("resource", resource.as_str()),
            ],
        )
        .unwrap();
        let res = self.http.get(url).send().await.unwrap();
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let code = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let res = self
            .http
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", &client_id),
                ("resource", &resource),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let tokens: Value = res.json().await.unwrap();
        (
            client_id,
            tokens["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A token of another user of the same server (the quickstart has one user): a second
    /// quickstart run as `subject` on the same SQLite file (so on the same signing keys, with
    /// the same issuer) signs in, and is stopped.
    async fn token_as(&self, subject: &str) -> String {
        let mut other = start_as(subject, self.store.clone()).await;
        other.owns_store = false;
        other.sign_in("files:read").await.1
    }

    fn mcp(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        session: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req
    }

    async fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        self.mcp(reqwest::Method::POST, token, session)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// `initialize` + `notifications/initialized`: the session id rmcp issued.
    async fn open_session(&self, token: Option<&str>) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "security-test", "version": "0"},
        }})
        .to_string();
        let res = self.post(token, None, &init).await;
        assert_eq!(res.status(), 200);
        let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = res.bytes().await;
        let res = self.post(token, Some(&session), NOTIFICATION).await;
        assert_eq!(res.status(), 202);
        session
    }
}

const NOTIFICATION: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

fn call(name: &str) -> String {
    json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":name,"arguments":{"path":"pwned.txt","content":"x"}}})
        .to_string()
}

// issue 8 item 1, over HTTP against the quickstart.
#[tokio::test]
async fn a_read_token_never_reaches_files_write_through_malformed_params() {
    let app = start().await;
    let (_, reader) = app.sign_in("files:read").await;
    let session = app.open_session(Some(&reader)).await;
    let args = r#""arguments":{"path":"pwned.txt","content":"x"}"#;
    let bodies = [
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"files_write","uri":0,{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"uri":{{}},"name":"files_write",{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"files_read","name":"files_write",{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"files_write","name":"files_read",{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"x",{args}}},"params":{{"name":"files_write",{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"ping","method":"tools/call","params":{{"name":"files_write",{args}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"n\u0061me":"files\u005fwrite","uri":0,{args}}}}}"#),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":["files_write",{"path":"pwned.txt","content":"x"}]}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":["files_write"]}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":3,"method":{"name":"tools/call"},"params":{"name":"files_write"}}"#.to_owned(),
        format!(r#"[{{"jsonrpc":"2.0","id":4,"method":"ping"}},{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"files_write","uri":0,{args}}}}}]"#),
        "{not json".to_owned(),
    ];
    for body in &bodies {
        let res = app.post(Some(&reader), Some(&session), body).await;
        let status = res.status().as_u16();
        assert!(status == 403 || status == 400, "{status} for {body}");
        if status == 403 {
            let www = res.headers()["www-authenticate"].to_str().unwrap();
            assert!(www.contains(r#"error="insufficient_scope""#), "{www}");
            assert!(www.contains("files:write"), "{www}");
        }
    }
    // An encoded body is refused, whatever it holds.
    let res = app
        .mcp(reqwest::Method::POST, Some(&reader), Some(&session))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(call("files_write"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // A Base64 `Mcp-Name` is decoded as rmcp decodes it.
    let res = app
        .mcp(reqwest::Method::POST, Some(&reader), Some(&session))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "=?base64?ZmlsZXNfd3JpdGU=?=")
        .header("content-type", "application/json")
        .body(call("files_write"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // The controls: the well-formed call is refused the same way, files_read works, and
    // nothing was written.
    assert_eq!(
        app.post(Some(&reader), Some(&session), &call("files_write"))
            .await
            .status(),
        403
    );
    let read = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"files_read","arguments":{"path":"pwned.txt"}}}).to_string();
    let res = app.post(Some(&reader), Some(&session), &read).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("no such file"), "{text}");
}

// issue 8 item 2, over HTTP against the quickstart (rmcp's sessions).
#[tokio::test]
async fn another_principals_session_is_refused() {
    let app = start().await;
    let (_, owner) = app.sign_in("files:read").await;
    let (_, same_user_other_client) = app.sign_in("files:read").await;
    let other_user = app.token_as("mallory").await;
    let session = app.open_session(Some(&owner)).await;

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let res = app
            .mcp(method.clone(), None, Some(&session))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} without a token");
        let www = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("Bearer resource_metadata="), "{www}");
        for other in [&other_user, &same_user_other_client] {
            let res = app
                .mcp(method.clone(), Some(other), Some(&session))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404, "{method} with another principal's token");
        }
    }
    // Notifications, answers to server requests and public methods likewise.
    for body in [
        NOTIFICATION,
        r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#,
        LIST,
    ] {
        assert_eq!(
            app.post(None, Some(&session), body).await.status(),
            401,
            "{body}"
        );
        assert_eq!(
            app.post(Some(&other_user), Some(&session), body)
                .await
                .status(),
            404,
            "{body}"
        );
    }
    // The owner is served: the stream opens, listing works, and DELETE ends the session.
    let res = app
        .mcp(reqwest::Method::GET, Some(&owner), Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    assert_eq!(
        app.post(Some(&owner), Some(&session), LIST).await.status(),
        200
    );
    let res = app
        .mcp(reqwest::Method::DELETE, Some(&owner), Some(&session))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        app.post(Some(&owner), Some(&session), LIST).await.status(),
        404
    );
}

// issue 8 item 2: under lazy authentication an anonymous session works without a token
// until a principal claims it; from then on it is theirs.
#[tokio::test]
async fn an_anonymous_session_becomes_the_first_signed_in_users() {
    let app = start().await;
    let (_, owner) = app.sign_in("files:read").await;
    let other_user = app.token_as("mallory").await;
    let session = app.open_session(None).await;
    assert_eq!(app.post(None, Some(&session), LIST).await.status(), 200);
    let read = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"files_read","arguments":{"path":"welcome.txt"}}}).to_string();
    assert_eq!(app.post(None, Some(&session), &read).await.status(), 401);
    assert_eq!(
        app.post(Some(&owner), Some(&session), &read).await.status(),
        200
    );
    assert_eq!(app.post(None, Some(&session), LIST).await.status(), 401);
    assert_eq!(
        app.post(Some(&other_user), Some(&session), &read)
            .await
            .status(),
        404
    );
    let res = app
        .mcp(reqwest::Method::GET, None, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .mcp(reqwest::Method::DELETE, Some(&other_user), Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.post(Some(&owner), Some(&session), LIST).await.status(),
        200
    );
}
