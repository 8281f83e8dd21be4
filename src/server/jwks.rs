//! The JSON Web Key Set endpoint (`GET {issuer}/jwks.json`): the public keys access tokens are
//! signed with, for resource servers that verify them on their own.
//!
//! The set is read from the token issuer on every request, so a key-ring rotation shows at
//! once (the retired keys stay listed while they may still verify live tokens). Responses are
//! cacheable for five minutes (`Cache-Control: public, max-age=300`). A custom
//! [`TokenIssuer`](crate::issuer::TokenIssuer) that signs nothing publishes no keys: the
//! endpoint then answers `404` with a JSON error, and the metadata omits `jwks_uri`.

use crate::paths::Endpoint;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::json;

use super::AsContext;
use super::discovery::json_response;
use crate::error::{OAuthError, OAuthErrorCode};

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new().route(&ctx.route(Endpoint::Jwks), get(jwks))
}

async fn jwks(State(ctx): State<AsContext>) -> Response {
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "error_description": "This server publishes no signing keys"})
                .to_string(),
            "no-store",
        )
    };
    let Some(set) = ctx.issuer.jwks() else {
        return not_found();
    };
    match serde_json::to_string(&set) {
        Ok(body) => json_response(StatusCode::OK, body, "public, max-age=300"),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::jwks", error = %e, "the key set could not be encoded");
            OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The key set is unavailable",
            )
            .into_response()
        }
    }
}
