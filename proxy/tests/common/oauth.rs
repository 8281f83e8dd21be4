//! Tokens the way an MCP client gets them: dynamic registration, an authorization request
//! with PKCE S256 and `resource`, the scripted browser's login and consent, the code
//! exchange; the endpoints either at their default paths ([`Endpoints::at`]) or discovered
//! from the metadata ([`Endpoints::discover`]).

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::browser::{Browser, Decision, query_param};
use super::{PASSWORD, REDIRECT_URI, USER, http};

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

/// The authorization server's endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The authorization endpoint.
    pub authorize: String,
    /// The token endpoint.
    pub token: String,
    /// The registration endpoint.
    pub register: String,
    /// The scope to ask for (`mcp` when offered).
    pub scope: String,
}

impl Endpoints {
    /// The default paths under `base`, scope `mcp`.
    pub fn at(base: &str) -> Self {
        Self {
            authorize: format!("{base}/authorize"),
            token: format!("{base}/token"),
            register: format!("{base}/register"),
            scope: "mcp".to_owned(),
        }
    }

    /// Discovered as a client does: the protected-resource metadata of `{base}/mcp` (its
    /// `resource` checked), then the authorization server's metadata.
    pub async fn discover(base: &str) -> Self {
        let http = http();
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
        let prm = get_json(format!("{base}/.well-known/oauth-protected-resource/mcp")).await;
        assert_eq!(prm["resource"], format!("{base}/mcp").as_str(), "{prm}");
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
        let offers_mcp = asm["scopes_supported"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == "mcp"));
        Self {
            authorize: endpoint("authorization_endpoint"),
            token: endpoint("token_endpoint"),
            register: endpoint("registration_endpoint"),
            scope: if offers_mcp { "mcp" } else { "" }.to_owned(),
        }
    }
}

/// Registers a public client (authorization code + refresh token) at the registration
/// endpoint `url`; its client_id.
pub async fn register_at(url: &str, name: &str) -> String {
    let resp = http()
        .post(url)
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

/// Registers a public client at `{base}/register`; its client_id.
pub async fn register(base: &str, name: &str) -> String {
    register_at(&format!("{base}/register"), name).await
}

/// The authorization request at `endpoint` for `client_id` with `pkce`, asking for `scope`
/// (none when empty) for `resource`, with `state`.
pub fn authorize_url_at(
    endpoint: &str,
    client_id: &str,
    pkce: &Pkce,
    scope: &str,
    resource: &str,
    state: &str,
) -> String {
    let mut url = url::Url::parse(endpoint).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if !scope.is_empty() {
            q.append_pair("scope", scope);
        }
        q.append_pair("resource", resource)
            .append_pair("state", state);
    }
    url.to_string()
}

/// The authorization URL at `{base}/authorize` (state `s1`).
pub fn authorize_url(
    base: &str,
    client_id: &str,
    pkce: &Pkce,
    scope: &str,
    resource: &str,
) -> String {
    authorize_url_at(
        &format!("{base}/authorize"),
        client_id,
        pkce,
        scope,
        resource,
        "s1",
    )
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

/// Reads a token response.
pub fn tokens(body: &serde_json::Value) -> Tokens {
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().map(str::to_owned),
        scope: body["scope"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The whole flow for `client_id` at `ep`: the browser logs in as `user` with `password`
/// and approves (the callback's `state` checked), and the code is exchanged (PKCE S256,
/// `resource`).
pub async fn sign_in_at(
    ep: &Endpoints,
    client_id: &str,
    scope: &str,
    resource: &str,
    user: &str,
    password: &str,
) -> Tokens {
    let pkce = pkce();
    let state = self::pkce().verifier;
    let browser = Browser::new(user, password);
    let callback = browser
        .authorize(
            &authorize_url_at(&ep.authorize, client_id, &pkce, scope, resource, &state),
            Decision::Approve,
        )
        .await;
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(state.as_str())
    );
    let code = query_param(&callback, "code")
        .unwrap_or_else(|| panic!("no code in {callback}\n{}", browser.transcript()));
    let resp = exchange_code(&ep.token, client_id, &code, &pkce.verifier, Some(resource)).await;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "token exchange failed: {body}");
    tokens(&body)
}

/// The code exchange at the proxy at `base` (no `resource`), which must succeed; the token
/// response.
pub async fn redeem(base: &str, client_id: &str, code: &str, verifier: &str) -> serde_json::Value {
    let resp = exchange_code(&format!("{base}/token"), client_id, code, verifier, None).await;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(status, 200, "token exchange failed: {body}");
    body
}

/// The code exchange at the token endpoint `token` (PKCE `verifier`, the `resource` when
/// given); the raw response.
pub async fn exchange_code(
    token: &str,
    client_id: &str,
    code: &str,
    verifier: &str,
    resource: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", client_id),
        ("code_verifier", verifier),
    ];
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    http().post(token).form(&form).send().await.unwrap()
}

/// Logs in as [`USER`] through the browser, approves, and exchanges the code.
pub async fn sign_in(base: &str, mcp: &str, client_id: &str, scope: &str) -> Tokens {
    sign_in_at(&Endpoints::at(base), client_id, scope, mcp, USER, PASSWORD).await
}

/// A registered client and its access token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The client id.
    pub client_id: String,
    /// The access token.
    pub access: String,
}

/// Registers a new client named `client_name` and signs in as [`USER`] with scope `mcp` for
/// `mcp`.
pub async fn grant(base: &str, mcp: &str, client_name: &str) -> Grant {
    grant_as(base, mcp, client_name, USER, PASSWORD).await
}

/// [`grant`] signing in as `user` with `password`.
pub async fn grant_as(
    base: &str,
    mcp: &str,
    client_name: &str,
    user: &str,
    password: &str,
) -> Grant {
    let client_id = register(base, client_name).await;
    let access = sign_in_at(&Endpoints::at(base), &client_id, "mcp", mcp, user, password)
        .await
        .access;
    Grant { client_id, access }
}

/// An access token for the proxy at `base` (its resource `{base}/mcp`), obtained as an MCP
/// client obtains one: metadata discovery, registration, then [`sign_in_at`] as [`USER`].
pub async fn obtain_token(base: &str) -> String {
    obtain_token_as(base, USER, PASSWORD).await
}

/// [`obtain_token`] for another user's credentials.
pub async fn obtain_token_as(base: &str, user: &str, password: &str) -> String {
    let ep = Endpoints::discover(base).await;
    let client_id = register_at(&ep.register, "proxy http test").await;
    let resource = format!("{base}/mcp");
    sign_in_at(&ep, &client_id, &ep.scope, &resource, user, password)
        .await
        .access
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
