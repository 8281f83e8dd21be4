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

use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse as _;
use axum::routing::post;
use http::StatusCode;

use super::AsContext;
use super::client_auth::{authenticate, read_form};
use super::discovery::json_response;
use super::introspect::{looks_like_jwt, own_tokens_verifier};
use super::rate_limit::{self, LimitKind};
use super::token::method_not_allowed;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Client, SecretHash};
use crate::verify::{JwtVerifier, TokenVerifier as _};

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    // No revocation list: revoking an already revoked token is a no-op, not an error.
    let verifier = own_tokens_verifier(ctx, false);
    Router::new().route(
        &ctx.route("/revoke"),
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
    let access_first = form.get("token_type_hint") == Some("access_token");
    if access_first && revoke_access(ctx, verifier, &client, token).await? {
        return Ok(());
    }
    if revoke_refresh(ctx, &client, token).await? {
        return Ok(());
    }
    if !access_first {
        revoke_access(ctx, verifier, &client, token).await?;
    }
    Ok(())
}

/// Revokes the family of a refresh token; whether the token was a known refresh token.
async fn revoke_refresh(ctx: &AsContext, client: &Client, token: &str) -> Result<bool, OAuthError> {
    let grants = &ctx.server.grants;
    // Any token of the family, current or rotated out, revokes it: its client asks for it.
    let Some(family) = grants
        .family_of_refresh(&SecretHash::of(token), crate::util::now())
        .await?
        .map(|l| l.family)
    else {
        return Ok(false);
    };
    if family.client_id == client.client_id {
        grants
            .revoke_family(&family.family_id, crate::util::now())
            .await?;
        tracing::info!(target: "mcp_oauth::revoke", client_id = %client.client_id, family = %family.family_id,
            "grant revoked by its client");
    } else {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family.family_id,
            "a client tried to revoke another client's refresh token; ignored");
    }
    Ok(true)
}

/// Revokes an access token by `jti`; whether the token was one of ours.
async fn revoke_access(
    ctx: &AsContext,
    verifier: Option<&JwtVerifier>,
    client: &Client,
    token: &str,
) -> Result<bool, OAuthError> {
    let Some(verifier) = verifier else {
        return Ok(false);
    };
    if !looks_like_jwt(token) {
        return Ok(false);
    }
    // Expired, foreign or forged tokens fail here and need no action.
    let Ok(auth) = verifier.verify(token).await else {
        return Ok(false);
    };
    let (Some(jti), Some(exp)) = (auth.token_id(), auth.expires_at()) else {
        return Ok(false);
    };
    if auth.client_id() == Some(client.client_id.as_str()) {
        // Remembered past `exp` by the largest leeway a verifier may use (issue 8 item 8).
        ctx.server
            .grants
            .revoke_token(
                jti,
                exp.saturating_add(crate::store::REVOCATION_HORIZON_SLACK),
            )
            .await?;
        tracing::info!(target: "mcp_oauth::revoke", client_id = %client.client_id, jti = %jti,
            "access token revoked by its client");
    } else {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id,
            "a client tried to revoke another client's access token; ignored");
    }
    Ok(true)
}
