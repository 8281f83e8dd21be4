//! `IntrospectionVerifier` (RFC 7662) against a real third-party authorization server
//! (`oidc-provider` 9, see `tests/interop/oidc_provider.mjs`), directly and through
//! `McpOAuthLayer`.
#![cfg(feature = "introspection")]

#[path = "support/oidc.rs"]
mod oidc;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode, header};
use mcp_oauth::verify::{IntrospectionVerifier, TokenVerifier, VerifyError};
use mcp_oauth::{AuthContext, McpOAuthConfig, McpOAuthLayer, TokenKind};
use oidc::{OidcProvider, RS_CLIENT_ID, RS_CLIENT_SECRET, RS_ODD_CLIENT_ID, RS_ODD_CLIENT_SECRET};
use tower::ServiceExt as _;

/// The MCP endpoint; the provider issues opaque tokens for it.
const RESOURCE: &str = "http://127.0.0.1:8766/mcp";
/// A resource the provider issues JWTs for.
const JWT_RESOURCE: &str = "http://127.0.0.1:8766/jwt";
const METADATA: &str = "http://127.0.0.1:8766/.well-known/oauth-protected-resource/mcp";

async fn provider(test: &str) -> Option<OidcProvider> {
    let interop = support::interop(test)?;
    Some(OidcProvider::start(&interop, &[JWT_RESOURCE], RESOURCE).await)
}

fn verifier(idp: &OidcProvider) -> mcp_oauth::verify::IntrospectionVerifierBuilder {
    IntrospectionVerifier::builder(idp.introspection_endpoint())
        .allow_loopback()
        .client_credentials(RS_CLIENT_ID, RS_CLIENT_SECRET)
        .issuer(&idp.issuer)
        .audience(RESOURCE)
}

fn app(verifier: IntrospectionVerifier, issuer: &str) -> Router {
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(issuer)
        .scope("read", "Read")
        .scope("write", "Write")
        .default_scopes(["read"])
        .verifier(verifier)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/mcp",
            post(
                |axum::Extension(ctx): axum::Extension<AuthContext>| async move {
                    format!("{} {}", ctx.subject(), ctx.scopes())
                },
            ),
        )
        .layer(McpOAuthLayer::new(cfg))
}

async fn call(app: &Router, token: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn an_active_opaque_token_is_accepted() {
    let Some(idp) = provider("an_active_opaque_token_is_accepted").await else {
        return;
    };
    let v = verifier(&idp).build().unwrap();
    let token = idp.client_credentials_token(RESOURCE, "read write").await;
    assert_eq!(token.split('.').count(), 1, "opaque, not a JWT");

    let before = idp.introspections().await;
    let ctx = v.verify(&token).await.unwrap();
    assert_eq!(idp.introspections().await, before + 1);
    // A client-credentials token has no `sub`: the subject falls back to `client_id`.
    assert_eq!(ctx.subject(), "test-client");
    assert_eq!(ctx.client_id(), Some("test-client"));
    assert_eq!(ctx.kind(), TokenKind::Introspection);
    assert_eq!(ctx.issuer(), Some(idp.issuer.as_str()));
    assert_eq!(ctx.audience(), [RESOURCE]);
    assert!(ctx.has_exact_scope("read") && ctx.has_exact_scope("write"));
    assert!(!ctx.has_exact_scope("admin"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = ctx.expires_at().unwrap();
    assert!(exp > now + 500 && exp <= now + 601, "exp {exp}, now {now}");
    assert_eq!(ctx.claim("active"), Some(&serde_json::Value::Bool(true)));
    assert!(
        ctx.claim("sub").is_none(),
        "the raw response is kept as it was"
    );

    let (status, _, body) = call(&app(v, &idp.issuer), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "test-client read write");
}

#[tokio::test]
async fn inactive_garbage_and_foreign_tokens_are_refused() {
    let Some(idp) = provider("inactive_garbage_and_foreign_tokens_are_refused").await else {
        return;
    };
    let v = verifier(&idp).build().unwrap();
    let app = app(v.clone(), &idp.issuer);
    let invalid = format!(
        "Bearer resource_metadata=\"{METADATA}\", scope=\"read\", error=\"invalid_token\", error_description=\"The access token is invalid\""
    );

    // Never issued.
    assert_eq!(
        v.verify("made-up-token-0123456789").await.unwrap_err(),
        VerifyError::Inactive
    );
    let (status, challenge, _) = call(&app, "made-up-token-0123456789").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some(invalid.as_str()));

    // Revoked at the authorization server.
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    idp.revoke(&token).await;
    assert_eq!(v.verify(&token).await.unwrap_err(), VerifyError::Inactive);
    let (status, challenge, _) = call(&app, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some(invalid.as_str()));

    // A JWT: oidc-provider does not introspect those (`unsupported_token_type`), so it is
    // not this verifier's kind of token.
    let jwt = idp.client_credentials_token(JWT_RESOURCE, "read").await;
    assert_eq!(v.verify(&jwt).await.unwrap_err(), VerifyError::Unknown);

    // Active, but for another audience or issuer.
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    let elsewhere = IntrospectionVerifier::builder(idp.introspection_endpoint())
        .allow_loopback()
        .client_credentials(RS_CLIENT_ID, RS_CLIENT_SECRET)
        .issuer(&idp.issuer)
        .audience(JWT_RESOURCE)
        .build()
        .unwrap();
    assert_eq!(
        elsewhere.verify(&token).await.unwrap_err(),
        VerifyError::WrongAudience
    );
    let other_issuer = verifier(&idp)
        .issuer(format!("{}/", idp.issuer))
        .build()
        .unwrap();
    assert_eq!(
        other_issuer.verify(&token).await.unwrap_err(),
        VerifyError::WrongIssuer
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_wrong_client_secret_is_unavailable_not_invalid() {
    let Some(mut idp) = provider("a_wrong_client_secret_is_unavailable_not_invalid").await else {
        return;
    };
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    let wrong = IntrospectionVerifier::builder(idp.introspection_endpoint())
        .allow_loopback()
        .client_credentials(RS_CLIENT_ID, "not-the-secret")
        .issuer(&idp.issuer)
        .audience(RESOURCE)
        .build()
        .unwrap();
    match wrong.verify(&token).await.unwrap_err() {
        e @ VerifyError::Unavailable { .. } => {
            let why = e.to_string();
            assert!(why.contains("refused the client credentials"), "{why}");
            assert!(
                why.contains("401") && why.contains("invalid_client"),
                "{why}"
            );
            assert!(!why.contains(&token), "never echoes the token");
        }
        other => panic!("{other:?}"),
    }
    let (status, challenge, body) = call(&app(wrong, &idp.issuer), &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        challenge, None,
        "a 503 does not tell the client to drop its token"
    );

    // Credentials with characters that must be form-urlencoded before base64 (RFC 6749
    // §2.3.1): the server decodes them back and accepts them.
    let odd = IntrospectionVerifier::builder(idp.introspection_endpoint())
        .allow_loopback()
        .client_credentials(RS_ODD_CLIENT_ID, RS_ODD_CLIENT_SECRET)
        .issuer(&idp.issuer)
        .audience(RESOURCE)
        .build()
        .unwrap();
    assert_eq!(odd.verify(&token).await.unwrap().subject(), "test-client");

    // The endpoint down: unavailable too.
    let v = verifier(&idp).build().unwrap();
    idp.kill().await;
    assert!(matches!(
        v.verify(&token).await.unwrap_err(),
        VerifyError::Unavailable { .. }
    ));
}

#[tokio::test]
async fn the_layer_cache_honours_the_verifier_ttl() {
    let Some(idp) = provider("the_layer_cache_honours_the_verifier_ttl").await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let v = verifier(&idp).cache_ttl(ttl).build().unwrap();
    assert_eq!(v.cache_ttl(), ttl);
    let app = app(v, &idp.issuer);
    let token = idp.client_credentials_token(RESOURCE, "read").await;

    let base = idp.introspections().await;
    let started = std::time::Instant::now();
    assert_eq!(call(&app, &token).await.0, StatusCode::OK);
    assert_eq!(call(&app, &token).await.0, StatusCode::OK);
    assert_eq!(
        idp.introspections().await,
        base + 1,
        "the second request hit the cache"
    );

    // Revoked at the server: the cached answer still stands until the TTL runs out ...
    idp.revoke(&token).await;
    if started.elapsed() < ttl {
        assert_eq!(call(&app, &token).await.0, StatusCode::OK);
        assert_eq!(idp.introspections().await, base + 1);
    }
    // ... and then the server is asked again, and says no.
    tokio::time::sleep(ttl.saturating_sub(started.elapsed()) + Duration::from_millis(200)).await;
    assert_eq!(call(&app, &token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(idp.introspections().await, base + 2);

    // A zero TTL asks every time.
    let uncached = app_uncached(&idp);
    let token = idp.client_credentials_token(RESOURCE, "read").await;
    let base = idp.introspections().await;
    for _ in 0..3 {
        assert_eq!(call(&uncached, &token).await.0, StatusCode::OK);
    }
    assert_eq!(idp.introspections().await, base + 3);
}

fn app_uncached(idp: &OidcProvider) -> Router {
    app(
        verifier(idp).cache_ttl(Duration::ZERO).build().unwrap(),
        &idp.issuer,
    )
}

#[test]
fn the_builder_requires_what_the_checks_need() {
    let endpoint = "http://127.0.0.1:1/token/introspection";
    let base = || {
        IntrospectionVerifier::builder(endpoint)
            .allow_loopback()
            .client_credentials("a", "very-secret-value")
            .issuer("http://127.0.0.1:1")
            .audience(RESOURCE)
    };
    assert!(base().build().is_ok());
    assert_eq!(base().build().unwrap().cache_ttl(), Duration::from_secs(30));
    let no_issuer = IntrospectionVerifier::builder(endpoint)
        .allow_loopback()
        .client_credentials("a", "b")
        .audience(RESOURCE)
        .build()
        .unwrap_err();
    assert!(matches!(no_issuer, mcp_oauth::ConfigError::MissingIssuer));
    let no_audience = IntrospectionVerifier::builder(endpoint)
        .allow_loopback()
        .client_credentials("a", "b")
        .issuer("http://127.0.0.1:1")
        .build()
        .unwrap_err();
    assert!(matches!(
        no_audience,
        mcp_oauth::ConfigError::MissingResource
    ));
    let debug = format!("{:?}", base().build().unwrap());
    assert!(!debug.contains("very-secret-value"), "{debug}");
}
