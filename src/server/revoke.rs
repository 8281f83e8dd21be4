//! Token revocation (RFC 7009, `POST {issuer}/revoke`).
//!
//! The client authenticates like at the token endpoint; a public client sends just its
//! `client_id` (the MCP clients that revoke are public). Then:
//!
//! - a **refresh token** revokes its whole family: every refresh token of the grant and every
//!   access token it issued (their `jti` carries the family id), so the layer refuses them at
//!   once;
//! - an **access token** (a JWT this server signed, still within its lifetime) is revoked by
//!   its `jti` until it expires; the layer refuses it from then on, cached or not;
//! - a token issued to **another client** is left alone, and an unknown, malformed or already
//!   expired token needs no action: all of these still answer `200` (RFC 7009 §2.2), so the
//!   endpoint cannot be used to probe for valid tokens.
//!
//! `token_type_hint` only decides which kind is looked up first (§2.1). A store outage is
//! `503 temporarily_unavailable`, which RFC 7009 §2.2.1 allows, so the client retries.
//!
//! The rules live in [`flows::revoke`](crate::flows); this file reads the form,
//! authenticates the client and answers.

use crate::paths::Endpoint;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse as _;
use axum::routing::post;
use http::StatusCode;

use super::AsContext;
use super::client_auth::{authenticate, read_form};
use super::discovery::json_response;
use super::introspect::own_tokens_verifier;
use super::rate_limit::{self, LimitKind};
use super::token::method_not_allowed;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::flows::revoke::{RevokeRequest, revoke};
use crate::verify::{JwtVerifier, TokenVerifier};

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    // No revocation list: revoking an already revoked token is a no-op, not an error.
    let verifier = own_tokens_verifier(ctx, false);
    Router::new().route(
        &ctx.route(Endpoint::Revoke),
        post(move |State(ctx): State<AsContext>, req: Request| {
            let verifier = verifier.clone();
            async move {
                match handle(&ctx, verifier.as_ref(), req).await {
                    Ok(()) => json_response(StatusCode::OK, "{}", "no-store"),
                    Err(e) => e.into_response(),
                }
            }
        })
        .fallback(method_not_allowed),
    )
}

async fn handle(
    ctx: &AsContext,
    verifier: Option<&JwtVerifier>,
    req: Request,
) -> Result<(), OAuthError> {
    let (parts, body) = req.into_parts();
    rate_limit::check(ctx, LimitKind::Token, &parts).await?;
    let form = read_form(&parts.headers, body).await?;
    let client = authenticate(ctx, &parts.headers, &form).await?;
    let Some(token) = form.get("token") else {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "token is required",
        ));
    };
    let request = RevokeRequest {
        token,
        token_type_hint: form.get("token_type_hint"),
    };
    // Whatever the outcome (revoked, another client's, unknown), the answer is 200.
    let verifier = verifier.map(|v| v as &dyn TokenVerifier);
    revoke(&ctx.env, verifier, &client, request).await?;
    Ok(())
}
