//! Authorization server metadata (RFC 8414) and OpenID Connect discovery, served at every URL
//! MCP clients probe, plus the optional operator statistics endpoint.
//!
//! For an issuer without a path (`https://auth.example.com`) the document is served at
//! `/.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`. For an
//! issuer with a path (`https://auth.example.com/tenant1`) it is served at the three URLs the
//! MCP specification's clients try, in their order:
//! `/.well-known/oauth-authorization-server/tenant1`,
//! `/.well-known/openid-configuration/tenant1` and `/tenant1/.well-known/openid-configuration`.
//!
//! The `issuer` member is the configured issuer **byte for byte** (clients refuse metadata
//! whose issuer differs from the one they derived the URL from, trailing slash included). The
//! document advertises exactly what the server does: the `code` response type with S256 PKCE
//! only, the `authorization_code` and `refresh_token` grants, the `none`,
//! `client_secret_basic` and `client_secret_post` client authentication methods (and, with
//! the feature `private-key-jwt`, `private_key_jwt` at the token, revocation and
//! introspection endpoints, with `token_endpoint_auth_signing_alg_values_supported` (and
//! the revocation and introspection twins) `["ES256", "EdDSA", "RS256", "PS256"]`),
//! `authorization_response_iss_parameter_supported` (every authorization response carries
//! `iss`), `registration_endpoint` only while dynamic registration is on, and the configured
//! scopes (never `offline_access`: clients append it when listed, and refresh tokens are issued
//! by grant type anyway), and `client_id_metadata_document_supported: true` while client ID
//! metadata documents are on (the `client-metadata` feature, default; see
//! [`client_metadata`](super::client_metadata)). Claude and other clients use a URL
//! `client_id` only when that flag is present and `none` is an accepted token endpoint
//! authentication method, which it is. With the `private-key-jwt` feature as well, a
//! metadata document client may also use `private_key_jwt` (the advertised methods and
//! signing algorithms hold for it as for every client).
//!
//! With [`stats_endpoint`](super::AuthorizationServerBuilder::stats_endpoint) on,
//! `GET {issuer path}/oauth/stats` answers the live counts of clients, codes, refresh families
//! and revoked tokens.

use crate::paths::Endpoint;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::AsContext;
use crate::error::OAuthError;

/// A JSON response with the given status and `Cache-Control`.
pub(crate) fn json_response(
    status: StatusCode,
    body: impl Into<Bytes>,
    cache_control: &'static str,
) -> Response {
    let mut res = (status, body.into()).into_response();
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    res
}

/// The metadata document (RFC 8414 §2, also a valid OIDC discovery document for what this
/// server does).
pub(crate) fn metadata(ctx: &AsContext) -> Value {
    let scopes: Vec<&str> = ctx
        .cfg
        .scopes()
        .map(|(s, _)| s.as_str())
        .filter(|s| *s != "offline_access")
        .collect();
    let mut doc = json!({
        "issuer": ctx.cfg.issuer(),
        "authorization_endpoint": ctx.endpoint(Endpoint::Authorize),
        "token_endpoint": ctx.endpoint(Endpoint::Token),
        "revocation_endpoint": ctx.endpoint(Endpoint::Revoke),
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint": ctx.endpoint(Endpoint::Introspect),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
    });
    #[cfg(feature = "private-key-jwt")]
    {
        use crate::flows::client_assertion::ALGORITHM_NAMES;
        for field in [
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
            "introspection_endpoint_auth_methods_supported",
        ] {
            if let Some(list) = doc[field].as_array_mut() {
                list.push(json!("private_key_jwt"));
            }
        }
        doc["token_endpoint_auth_signing_alg_values_supported"] = json!(ALGORITHM_NAMES);
        doc["revocation_endpoint_auth_signing_alg_values_supported"] = json!(ALGORITHM_NAMES);
        doc["introspection_endpoint_auth_signing_alg_values_supported"] = json!(ALGORITHM_NAMES);
    }
    if ctx.server.dynamic_registration {
        doc["registration_endpoint"] = json!(ctx.endpoint(Endpoint::Register));
    }
    #[cfg(feature = "client-metadata")]
    if ctx.server.client_metadata.is_some() {
        doc["client_id_metadata_document_supported"] = json!(true);
    }
    if ctx.issuer.jwks().is_some() {
        doc["jwks_uri"] = json!(ctx.endpoint(Endpoint::Jwks));
    }
    doc
}

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    let body = Bytes::from(metadata(ctx).to_string());
    let mut router = Router::new();
    for path in crate::paths::as_metadata_paths(ctx.cfg.issuer()) {
        let body = body.clone();
        router = router.route(
            &path,
            get(move || {
                let body = body.clone();
                async move { json_response(StatusCode::OK, body, "public, max-age=300") }
            }),
        );
    }
    if ctx.server.stats_endpoint {
        router = router.route(&ctx.route(Endpoint::Stats), get(stats));
    }
    router
}

async fn stats(State(ctx): State<AsContext>) -> Response {
    let now = crate::util::now();
    let counts = async {
        let mut stats = ctx.server.grants.stats(now).await?;
        // Clients may live in a separate store from grants: ask the client store.
        stats.clients = ctx.server.clients.count_clients().await?;
        Ok::<_, crate::store::StoreError>(stats)
    }
    .await;
    match counts {
        Ok(stats) => json_response(
            StatusCode::OK,
            json!({
                "clients": stats.clients,
                "static_clients": ctx.server.static_clients.len(),
                "live_codes": stats.live_codes,
                "live_families": stats.live_families,
                "revoked_tokens": stats.revoked_tokens,
            })
            .to_string(),
            "no-store",
        ),
        Err(e) => OAuthError::from(e).into_response(),
    }
}
