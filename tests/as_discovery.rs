//! Authorization server metadata (RFC 8414 / OIDC discovery), the JWKS endpoint and the
//! operator stats endpoint, driven through `oauth_router` as an application mounts it.

#![cfg(feature = "server")]

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::issuer::{AccessTokenRequest, IssueError, IssuedToken, TokenIssuer};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm, SigningKey};
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, StaticClient};
use mcp_oauth::store::{
    ApplicationType, AuthorizationCode, Client, ClientSource, SecretHash, TokenEndpointAuthMethod,
};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ROOT_ISSUER: &str = "https://mcp.example.com";
const PATH_ISSUER: &str = "https://mcp.example.com/tenant1";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "https://app.example.com/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .client(StaticClient::public("public-client", [REDIRECT]))
}

async fn app(issuer: &str, builder: AuthorizationServerBuilder) -> (AuthorizationServer, Router) {
    let server = builder.build().await.unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(issuer)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .authorization_server(&server)
        .build()
        .unwrap();
    let router = oauth_router(&cfg, &server);
    (server, router)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn get(app: &Router, path: &str) -> Reply {
    get_with(app, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn get_with(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn expected_metadata(issuer: &str) -> Value {
    let mut doc = base_metadata(issuer);
    if cfg!(feature = "client-metadata") {
        doc["client_id_metadata_document_supported"] = json!(true);
    }
    if cfg!(feature = "private-key-jwt") {
        // Issue 11: private_key_jwt wherever clients authenticate, with its algorithms.
        let algs = json!(["ES256", "EdDSA", "RS256", "PS256"]);
        for endpoint in ["token", "revocation", "introspection"] {
            doc[format!("{endpoint}_endpoint_auth_methods_supported")]
                .as_array_mut()
                .unwrap()
                .push(json!("private_key_jwt"));
            doc[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")] = algs.clone();
        }
    }
    doc
}

fn base_metadata(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "registration_endpoint": format!("{issuer}/register"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "jwks_uri": format!("{issuer}/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": ["files:read", "files:write"],
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
    })
}

#[tokio::test]
async fn root_issuer_serves_both_documents_at_the_root() {
    let (_, app) = app(ROOT_ISSUER, builder()).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let r = get(&app, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.body,
            expected_metadata(ROOT_ISSUER),
            "{path}: exactly the advertised capabilities"
        );
        // Byte for byte: no trailing slash added.
        assert_eq!(r.body["issuer"].as_str(), Some(ROOT_ISSUER));
        // Client ID metadata documents are on by default (Claude uses them only when this
        // flag is true and `none` is among the methods).
        assert_eq!(
            r.body.get("client_id_metadata_document_supported"),
            cfg!(feature = "client-metadata").then_some(&json!(true))
        );
        assert!(
            !r.body["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("offline_access"))
        );
    }
    // Path-form URLs do not exist for a root issuer.
    assert_eq!(
        get(&app, "/.well-known/oauth-authorization-server/tenant1")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn issuer_with_a_path_is_served_at_all_three_probe_urls() {
    let (_, app) = app(PATH_ISSUER, builder()).await;
    for path in [
        "/.well-known/oauth-authorization-server/tenant1",
        "/.well-known/openid-configuration/tenant1",
        "/tenant1/.well-known/openid-configuration",
    ] {
        let r = get(&app, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body, expected_metadata(PATH_ISSUER), "{path}");
    }
    // The root URLs belong to a root issuer; this one does not answer there.
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        assert_eq!(
            get(&app, path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn advertised_endpoints_exist() {
    for issuer in [ROOT_ISSUER, PATH_ISSUER] {
        let (_, app) = app(issuer, builder()).await;
        let meta = get(
            &app,
            &format!(
                "/.well-known/oauth-authorization-server{}",
                &issuer[ROOT_ISSUER.len()..]
            ),
        )
        .await
        .body;
        let path = |key: &str| meta[key].as_str().unwrap()[ROOT_ISSUER.len()..].to_owned();
        for key in [
            "token_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
        ] {
            let r = get_with(
                &app,
                Request::post(path(key))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from("client_id=nobody"))
                    .unwrap(),
            )
            .await;
            assert_ne!(r.status, StatusCode::NOT_FOUND, "{issuer}: {key}");
            assert!(r.body["error"].is_string(), "{issuer}: {key}: OAuth JSON");
        }
        let r = get(&app, &path("jwks_uri")).await;
        assert_eq!(r.status, StatusCode::OK, "{issuer}: jwks_uri");
        // The protected-resource metadata names this issuer byte for byte.
        let prm = get(&app, "/.well-known/oauth-protected-resource/mcp").await;
        assert_eq!(prm.body["authorization_servers"][0], meta["issuer"]);
    }
}

#[tokio::test]
async fn registration_endpoint_only_with_dynamic_registration() {
    let (_, app) = app(ROOT_ISSUER, builder().dynamic_registration(false)).await;
    let r = get(&app, "/.well-known/oauth-authorization-server").await;
    assert!(r.body.get("registration_endpoint").is_none(), "{}", r.body);
    let mut expected = expected_metadata(ROOT_ISSUER);
    expected
        .as_object_mut()
        .unwrap()
        .remove("registration_endpoint");
    assert_eq!(r.body, expected);
}

/// Client ID metadata documents switched off: the flag goes, nothing else changes.
#[cfg(feature = "client-metadata")]
#[tokio::test]
async fn the_cimd_flag_goes_when_metadata_documents_are_off() {
    let (_, off) = app(ROOT_ISSUER, builder().client_id_metadata_documents(false)).await;
    let r = get(&off, "/.well-known/oauth-authorization-server").await;
    let mut expected = expected_metadata(ROOT_ISSUER);
    expected
        .as_object_mut()
        .unwrap()
        .remove("client_id_metadata_document_supported");
    assert_eq!(r.body, expected);
    let (_, on) = app(ROOT_ISSUER, builder()).await;
    let r = get(&on, "/.well-known/oauth-authorization-server").await;
    assert_eq!(r.body["client_id_metadata_document_supported"], true);
}

#[tokio::test]
async fn metadata_is_readable_cross_origin() {
    let (_, app) = app(ROOT_ISSUER, builder()).await;
    let r = get_with(
        &app,
        Request::get("/.well-known/oauth-authorization-server")
            .header("origin", "http://localhost:6274")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
}

// ---------------------------------------------------------------- JWKS

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn issue_token(server: &AuthorizationServer, app: &Router, token_path: &str) -> String {
    let code = format!("code-{}", rand::random());
    let now = now();
    server
        .grant_store()
        .put_code(
            SecretHash::of(&code),
            AuthorizationCode {
                client_id: "public-client".into(),
                redirect_uri: REDIRECT.into(),
                redirect_uri_in_request: true,
                code_challenge: CHALLENGE.into(),
                scope: ScopeSet::parse("files:read").unwrap(),
                resource: RESOURCE.into(),
                subject: "alice".into(),
                claims: serde_json::Map::new(),
                auth_time: now,
                expires_at: now + 60,
            },
        )
        .await
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", "public-client"),
        ])
        .finish();
    let r = get_with(
        app,
        Request::post(token_path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

mod rand {
    pub(crate) fn random() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwks_publishes_the_signing_keys_and_follows_rotation() {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let (server, app) = app(ROOT_ISSUER, builder().key_ring(ring.clone())).await;
    let r = get(&app, "/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "public, max-age=300");
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "never the private key");
    assert_eq!(keys[0]["kty"], "EC");

    let token = issue_token(&server, &app, "/token").await;
    assert_eq!(keys[0]["kid"].as_str().unwrap(), kid_of(&token));

    ring.rotate(SigningKey::generate(SigningAlgorithm::EdDsa).unwrap())
        .unwrap();
    let r = get(&app, "/jwks.json").await;
    let kids: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "the retired key stays published");
    assert!(kids.contains(&kid_of(&token).as_str()));
    let fresh = issue_token(&server, &app, "/token").await;
    assert_eq!(kids[0], kid_of(&fresh), "the current key first");
}

#[tokio::test]
async fn jwks_lives_under_the_issuer_path() {
    let (server, app) = app(PATH_ISSUER, builder()).await;
    assert_eq!(get(&app, "/tenant1/jwks.json").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/jwks.json").await.status, StatusCode::NOT_FOUND);
    let token = issue_token(&server, &app, "/tenant1/token").await;
    let r = get(&app, "/tenant1/jwks.json").await;
    assert_eq!(r.body["keys"][0]["kid"].as_str().unwrap(), kid_of(&token));
}

/// Opaque tokens: nothing to publish.
struct OpaqueIssuer;

#[async_trait]
impl TokenIssuer for OpaqueIssuer {
    async fn issue(&self, r: &AccessTokenRequest<'_>) -> Result<IssuedToken, IssueError> {
        Ok(IssuedToken {
            token: format!("opaque-{}", rand::random()),
            jti: format!("{}.{}", r.family_id, rand::random()),
            expires_in: r.lifetime.as_secs(),
            expires_at: now() + r.lifetime.as_secs(),
        })
    }
}

#[tokio::test]
async fn an_issuer_without_keys_has_no_jwks() {
    let (_, app) = app(ROOT_ISSUER, builder().token_issuer(OpaqueIssuer)).await;
    let r = get(&app, "/jwks.json").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.body["error"].is_string());
    let meta = get(&app, "/.well-known/oauth-authorization-server")
        .await
        .body;
    assert!(meta.get("jwks_uri").is_none(), "{meta}");
}

// ---------------------------------------------------------------- stats

#[tokio::test]
async fn stats_endpoint_is_off_by_default() {
    let (_, app) = app(ROOT_ISSUER, builder()).await;
    assert_eq!(
        get(&app, "/oauth/stats").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn stats_endpoint_counts_live_records() {
    let (server, app) = app(ROOT_ISSUER, builder().stats_endpoint(true)).await;
    let r = get(&app, "/oauth/stats").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(
        r.body,
        json!({"clients": 0, "static_clients": 1, "live_codes": 0, "live_families": 0, "revoked_tokens": 0})
    );
    server
        .client_store()
        .insert_client(Client {
            client_id: "dyn-1".into(),
            secret_hash: None,
            secret_expires_at: 0,
            client_name: None,
            redirect_uris: vec![REDIRECT.into()],
            grant_types: vec!["authorization_code".into()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            application_type: ApplicationType::Web,
            scope: None,
            extra: serde_json::Map::new(),
            issued_at: now(),
            last_used_at: 0,
            source: ClientSource::Dynamic,
        })
        .await
        .unwrap();
    issue_token(&server, &app, "/token").await;
    let r = get(&app, "/oauth/stats").await;
    assert_eq!(r.body["clients"], 1);
    assert_eq!(r.body["live_families"], 1);
    assert_eq!(r.body["live_codes"], 0, "the code was redeemed");
}
