//! Issue 13 item 1: the audit events over real HTTP.
//!
//! One whole flow against the quickstart's app served in process on `127.0.0.1:0`, with a
//! capturing subscriber at `TRACE` for every target: registration (a confidential client) →
//! `/authorize` → a wrong password → the right one → consent → `/token` → an MCP call → a
//! refresh → an access-token revocation → the old refresh token again (reuse) → the code
//! again (replay), then a second flow the user denies, a key rotation and a sweep that reaps
//! a never-used client.
//!
//! - `every_event_fires_once_with_its_fields`: each event of `mcp_oauth::audit::EVENTS`
//!   appears exactly once for the flow (by its `fid` where it has one), with every field of
//!   the table, and the `fid` of `/authorize` is the one the layer logs on the first MCP call.
//! - the same test then searches every captured line for every secret the flow saw (codes,
//!   access and refresh tokens, the PKCE verifier, the client secret, the passwords, the
//!   CSRF tokens and request ids), plain and URL-encoded.
#![cfg(all(feature = "server", feature = "rmcp", feature = "macros"))]

#[path = "support/quickstart_app.rs"]
mod quickstart_app;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use mcp_oauth::audit::{EVENTS, FLOW_ID_CLAIM, event};
use mcp_oauth::store::{ApplicationType, Client, ClientSource, TokenEndpointAuthMethod};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "audit-test-verifier-0123456789-abcdefghijklmnopqrstuv";
const PASSWORD: &str = "correct horse battery staple audit";
const WRONG_PASSWORD: &str = "wrong & horse + battery/staple";
const PROTOCOL: &str = "2025-11-25";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A browser of one: follows nothing, keeps cookies by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.join("; ")
    }

    fn keep_cookies(&mut self, res: &reqwest::Response) {
        for c in res.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            self.cookies.push(pair);
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let res = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&res);
        res
    }

    async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&res);
        res
    }

    /// Posts the login form of `page` as alice with `password`; the form's hidden values
    /// (request id, CSRF token) go into `secrets`.
    async fn sign_in(
        &mut self,
        page: &str,
        password: &str,
        secrets: &mut Vec<String>,
    ) -> reqwest::Response {
        let (request_id, csrf) = (hidden(page, "request_id"), hidden(page, "csrf_token"));
        secrets.extend([request_id.clone(), csrf.clone()]);
        self.post_form(
            "/authorize/login",
            &[
                ("request_id", &request_id),
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("password", password),
            ],
        )
        .await
    }

    /// Posts the consent form of `page` with `decision`; its hidden values go into `secrets`.
    async fn decide(
        &mut self,
        page: &str,
        decision: &str,
        secrets: &mut Vec<String>,
    ) -> reqwest::Response {
        let (request_id, csrf) = (hidden(page, "request_id"), hidden(page, "csrf_token"));
        secrets.extend([request_id.clone(), csrf.clone()]);
        self.post_form(
            "/authorize/consent",
            &[
                ("request_id", &request_id),
                ("csrf_token", &csrf),
                ("decision", decision),
            ],
        )
        .await
    }
}

/// Posts `form` to the token endpoint.
async fn post_token(
    http: &reqwest::Client,
    base: &str,
    form: &[(&str, String)],
) -> reqwest::Response {
    http.post(format!("{base}/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The value of the hidden input `name` in an HTML page.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The audit lines (target `mcp_oauth::audit`) with `event=name`.
fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.contains("mcp_oauth::audit") && l.contains(&format!("event=\"{name}\"")))
        .collect()
}

/// The value of `field=` on an audit line (quoted strings unquoted).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return Some(&quoted[..quoted.find('"')?]);
    }
    Some(rest.split(' ').next().unwrap_or(rest))
}

#[tokio::test(flavor = "current_thread")]
async fn every_event_fires_once_with_its_fields_and_no_secret_is_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = quickstart_app::authorization_server(false, "alice", PASSWORD)
        .refresh_grace(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let (app, _cfg) = quickstart_app::app(&base, server.clone());
    tokio::spawn(async move { mcp_oauth::serve(listener, app).await.unwrap() });

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut secrets: Vec<String> = vec![
        VERIFIER.to_owned(),
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
    ];

    // An MCP call without a token: the layer's refusal.
    let res = http
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", PROTOCOL)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_read","arguments":{"path":"a"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Registration: a confidential client (so a client secret exists).
    let res = http
        .post(format!("{base}/register"))
        .json(&json!({
            "client_name": "audit test",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let reg: Value = res.json().await.unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let client_secret = reg["client_secret"].as_str().unwrap().to_owned();
    secrets.push(client_secret.clone());

    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER));
    let resource = format!("{base}/mcp");
    let authorize_url = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s1"),
            ("scope", "files:read"),
            ("resource", resource.as_str()),
        ],
    )
    .unwrap()
    .to_string();

    // /authorize → the login page; a wrong password; the right one → consent → the code.
    let mut browser = Browser {
        http: http.clone(),
        base: base.clone(),
        cookies: Vec::new(),
    };
    let res = browser.get(&authorize_url).await;
    assert_eq!(res.status(), 200);
    let login = res.text().await.unwrap();
    let res = browser.sign_in(&login, WRONG_PASSWORD, &mut secrets).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Wrong user name or password"), "{page}");
    let res = browser.sign_in(&login, PASSWORD, &mut secrets).await;
    assert_eq!(res.status(), 200, "the consent page");
    let page = res.text().await.unwrap();
    let res = browser.decide(&page, "approve", &mut secrets).await;
    assert!(res.status().is_redirection(), "{}", res.status());
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let code = query_param(&location, "code").expect("a code");
    secrets.push(code.clone());

    // /token.
    let token_form = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.clone()),
            ("resource", resource.clone()),
        ]
    };
    let res = post_token(&http, &base, &token_form(&code)).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), refresh1.clone()]);

    // The first MCP call with the token.
    let res = http
        .post(format!("{base}/mcp"))
        .bearer_auth(&access)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", PROTOCOL)
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "audit-test", "version": "0"},
            }})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;

    // A refresh.
    let refresh = |token: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token.to_owned()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.clone()),
        ]
    };
    let res = post_token(&http, &base, &refresh(&refresh1)).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let access2 = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh2 = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access2.clone(), refresh2.clone()]);

    // The client revokes its first access token.
    let res = http
        .post(format!("{base}/revoke"))
        .form(&[
            ("token", access.as_str()),
            ("token_type_hint", "access_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The rotated-out refresh token again, once the (zero) grace is over (whole seconds):
    // reuse, the family is revoked.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = post_token(&http, &base, &refresh(&refresh1)).await;
    assert_eq!(res.status(), 400);

    // The code again: a replay by its own client.
    let res = post_token(&http, &base, &token_form(&code)).await;
    assert_eq!(res.status(), 400);

    // A second flow, which the user denies (already signed in? no: a fresh browser).
    let mut other = Browser {
        http: http.clone(),
        base: base.clone(),
        cookies: Vec::new(),
    };
    let page = other.get(&authorize_url).await.text().await.unwrap();
    let page = other
        .sign_in(&page, PASSWORD, &mut secrets)
        .await
        .text()
        .await
        .unwrap();
    let res = other.decide(&page, "deny", &mut secrets).await;
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );

    // A key rotation, and a sweep that reaps a client never used since long ago.
    server.rotate_signing_key().await.unwrap();
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7 * 24 * 3600;
    server
        .client_store()
        .insert_client(Client {
            client_id: "never-used".to_owned(),
            secret_hash: None,
            secret_expires_at: 0,
            client_name: None,
            redirect_uris: vec![REDIRECT.to_owned()],
            grant_types: vec!["authorization_code".to_owned()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            application_type: ApplicationType::Native,
            scope: None,
            extra: serde_json::Map::new(),
            issued_at: long_ago,
            last_used_at: 0,
            source: ClientSource::Dynamic,
        })
        .await
        .unwrap();
    let report = server.sweep_now().await.unwrap();
    assert_eq!(report.unused_clients, 1, "{report:?}");

    let text = captured.text();

    // The flow id of the first /authorize, carried in the access token.
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let fid = claims[FLOW_ID_CLAIM]
        .as_str()
        .expect("the fid claim")
        .to_owned();
    assert_eq!(fid.len(), 16, "{fid}");

    // Every event of the table, once (the flow's by its fid), with all its fields.
    let first_flow = [
        event::AUTHORIZATION_REQUESTED,
        event::LOGIN_FAILED,
        event::AUTHORIZATION_GRANTED,
        event::TOKEN_ISSUED,
        event::TOKEN_ACCEPTED,
        event::REFRESH_ROTATED,
        event::TOKEN_REVOKED,
        event::REFRESH_REUSE_DETECTED,
        event::CODE_REPLAY_DETECTED,
    ];
    let mut denied_fid = None;
    for (name, fields) in EVENTS {
        let all = lines_of(&text, name);
        let lines: Vec<&str> = if first_flow.contains(name) {
            all.iter()
                .copied()
                .filter(|l| field(l, "fid") == Some(fid.as_str()))
                .collect()
        } else {
            all.clone()
        };
        // `resource.token_accepted`: the first token's first verification (the refreshed
        // token was never used); `resource.refused`: the token-less call.
        assert_eq!(lines.len(), 1, "{name}: {all:#?}\n{text}");
        let line = lines[0];
        for f in *fields {
            let value = field(line, f).unwrap_or_else(|| panic!("{name} lacks {f}: {line}"));
            assert!(!value.is_empty(), "{name}: empty {f}: {line}");
        }
        match *name {
            n if n == event::CLIENT_REGISTERED || n == event::TOKEN_ISSUED => {
                assert_eq!(field(line, "client_id"), Some(client_id.as_str()), "{line}");
            }
            n if n == event::LOGIN_FAILED => {
                assert_eq!(field(line, "reason"), Some("bad_credentials"), "{line}");
                assert!(!line.contains("alice"), "no account name: {line}");
            }
            n if n == event::TOKEN_ACCEPTED || n == event::AUTHORIZATION_GRANTED => {
                assert_eq!(field(line, "subject"), Some("alice"), "{line}");
            }
            n if n == event::TOKEN_REVOKED => {
                assert_eq!(field(line, "token_type"), Some("access_token"), "{line}");
            }
            n if n == event::CODE_REPLAY_DETECTED => {
                assert_eq!(field(line, "revoked"), Some("true"), "{line}");
            }
            n if n == event::RESOURCE_REFUSED => {
                assert_eq!(field(line, "reason"), Some("missing_token"), "{line}");
                assert_eq!(field(line, "status"), Some("401"), "{line}");
                // Every client's first request: debug, so anyone's flood stays out of info.
                assert!(line.contains("DEBUG"), "{line}");
            }
            n if n == event::AUTHORIZATION_DENIED => {
                assert_eq!(field(line, "error"), Some("access_denied"), "{line}");
                denied_fid = field(line, "fid").map(str::to_owned);
            }
            n if n == event::CLIENT_REAPED => {
                assert_eq!(field(line, "reason"), Some("unused"), "{line}");
                assert_eq!(field(line, "count"), Some("1"), "{line}");
            }
            _ => {}
        }
    }
    // The denied flow is another flow, with its own id, requested once too.
    let denied_fid = denied_fid.unwrap();
    assert_ne!(denied_fid, fid);
    let requested = lines_of(&text, event::AUTHORIZATION_REQUESTED);
    assert_eq!(requested.len(), 2, "{requested:#?}");
    assert!(
        requested
            .iter()
            .any(|l| field(l, "fid") == Some(denied_fid.as_str()))
    );

    // No secret, plain or URL-encoded, on any line at any level.
    assert!(text.lines().count() > 50, "TRACE captured little: {text}");
    for secret in &secrets {
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let percent = secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>();
        for form in [secret.as_str(), encoded.as_str(), percent.as_str()] {
            for line in text.lines() {
                assert!(
                    !line.contains(form),
                    "a secret ({}…) was logged: {line}",
                    &secret[..4]
                );
            }
        }
    }
}
