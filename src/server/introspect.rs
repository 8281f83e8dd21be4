//! Token introspection (RFC 7662, `POST {issuer}/introspect`), for resource servers that do
//! not verify the JWTs themselves.
//!
//! The endpoint is protected (RFC 7662 §2.1): only the clients named in
//! [`introspection_clients`](super::AuthorizationServerBuilder::introspection_clients)
//! (confidential, configured clients: your resource servers) may call it, authenticating
//! with their secret. A client that fails authentication, or a public client (it cannot
//! authenticate), gets `401 invalid_client`; any other authenticated client (every
//! dynamically registered one included) gets `403 unauthorized_client`.
//! Answers are `Cache-Control: no-store`:
//!
//! - an active access token (a JWT signed by the key ring, for this issuer and one of the
//!   configured resources, unexpired and not revoked):
//!   `{"active": true, "scope", "client_id", "sub", "aud", "iss", "exp", "iat",
//!   "token_type": "Bearer", "jti"}`;
//! - an active refresh token (its family live, and the token the current one, or the one
//!   just rotated out and still inside the grace window; an older one would trip reuse
//!   detection, so it is inactive):
//!   `{"active": true, "token_type": "refresh_token", "client_id", "scope", "sub", "exp"}`;
//! - anything else: `{"active": false}` (RFC 7662 §2.2 gives no reason, to leak nothing).
//!
//! `token_type_hint` only decides which kind is looked up first. A store outage is `503`, not
//! `active: false`, so a resource server does not drop a token that may be fine.
//!
//! Tokens of a custom [`TokenIssuer`](crate::issuer::TokenIssuer) that are not JWTs signed by
//! the key ring are reported inactive.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse as _;
use axum::routing::post;
use http::StatusCode;
use serde_json::{Value, json};

use super::client_auth::{authenticate, read_form};
use super::discovery::json_response;
use super::rate_limit::{self, LimitKind};
use super::token::method_not_allowed;
use super::{AsContext, AuthorizationServer};
use crate::context::AuthContext;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{ClientSource, SecretHash};
use crate::verify::{JwtVerifier, TokenVerifier as _, VerifyError};

/// A verifier for the access tokens this server issued: the key ring, this issuer, every
/// configured resource as an audience, the configuration's leeway; with the store's
/// revocation list when `check_revocation`.
pub(crate) fn own_tokens_verifier(ctx: &AsContext, check_revocation: bool) -> Option<JwtVerifier> {
    let mut b = JwtVerifier::builder(ctx.server.key_ring.clone())
        .issuer(ctx.cfg.issuer())
        .leeway(ctx.cfg.leeway());
    for r in ctx.cfg.resources() {
        b = b.audience(r);
    }
    if check_revocation {
        let server = AuthorizationServer {
            inner: ctx.server.clone(),
        };
        b = b.revocation(server.revocations());
    }
    b.build().ok()
}

/// Whether a token has the shape of a JWS (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    let verifier = own_tokens_verifier(ctx, true);
    Router::new().route(
        &ctx.route("/introspect"),
        post(move |State(ctx): State<AsContext>, req: Request| {
            let verifier = verifier.clone();
            async move {
                match handle(&ctx, verifier.as_ref(), req).await {
                    Ok(body) => json_response(StatusCode::OK, body.to_string(), "no-store"),
                    Err(e) if e.code() == OAuthErrorCode::UnauthorizedClient => {
                        let mut res = e.into_response();
                        *res.status_mut() = StatusCode::FORBIDDEN;
                        res
                    }
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
) -> Result<Value, OAuthError> {
    let (parts, body) = req.into_parts();
    rate_limit::check(ctx, LimitKind::Token, &parts).await?;
    let form = read_form(&parts.headers, body).await?;
    let client = authenticate(ctx, &parts.headers, &form).await?;
    if !client.is_confidential() {
        // A public client never authenticated at all (it only named itself).
        return Err(OAuthError::invalid_client(
            "Introspection is only available to authenticated resource servers",
            false,
        ));
    }
    // Issue 8 item 8: authenticated is not enough; only the configured resource servers
    // (confidential static clients) may introspect. Everyone else, every dynamically
    // registered client included, is refused.
    let allowed = client.source == ClientSource::Static
        && ctx.server.introspection_clients.contains(&client.client_id);
    if !allowed {
        tracing::info!(target: "mcp_oauth::security", client_id = %client.client_id,
            "introspection refused: not a configured introspection client");
        // Rendered as 403 by `routes`: the client is known, it just may not ask.
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "This client may not use the introspection endpoint",
        ));
    }
    let Some(token) = form.get("token") else {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "token is required",
        ));
    };
    // The hint only orders the look-ups (RFC 7662 §2.1).
    let refresh_first = form.get("token_type_hint") == Some("refresh_token");
    let found = if refresh_first {
        match refresh(ctx, token).await? {
            Some(v) => Some(v),
            None => access(verifier, token).await?,
        }
    } else {
        match access(verifier, token).await? {
            Some(v) => Some(v),
            None => refresh(ctx, token).await?,
        }
    };
    if let Some(v) = found {
        return Ok(v);
    }
    Ok(json!({ "active": false }))
}

async fn access(verifier: Option<&JwtVerifier>, token: &str) -> Result<Option<Value>, OAuthError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    if !looks_like_jwt(token) {
        return Ok(None);
    }
    match verifier.verify(token).await {
        Ok(auth) => Ok(Some(access_response(&auth))),
        Err(VerifyError::Unavailable(e)) => {
            tracing::error!(target: "mcp_oauth::introspect", error = %e, "revocation list unavailable");
            Err(OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The authorization server is temporarily unavailable",
            ))
        }
        Err(_) => Ok(None),
    }
}

fn access_response(auth: &AuthContext) -> Value {
    let aud = match auth.audience() {
        [one] => json!(one),
        many => json!(many),
    };
    json!({
        "active": true,
        "scope": auth.scopes().to_string(),
        "client_id": auth.client_id(),
        "sub": auth.subject(),
        "aud": aud,
        "iss": auth.issuer(),
        "exp": auth.expires_at(),
        "iat": auth.claim("iat"),
        "token_type": "Bearer",
        "jti": auth.token_id(),
    })
}

async fn refresh(ctx: &AsContext, token: &str) -> Result<Option<Value>, OAuthError> {
    let now = crate::util::now();
    let Some(lookup) = ctx
        .server
        .grants
        .family_of_refresh(&SecretHash::of(token), now)
        .await?
    else {
        return Ok(None);
    };
    // A token rotated out past the grace window would trip reuse detection: not active
    // (issue 8 item 8).
    if !lookup.is_usable(now, ctx.server.lifetimes.refresh_grace.as_secs()) {
        return Ok(None);
    }
    let family = lookup.family;
    if family.expires_at <= now {
        return Ok(None);
    }
    Ok(Some(json!({
        "active": true,
        "token_type": "refresh_token",
        "client_id": family.client_id,
        "scope": family.scope.to_string(),
        "sub": family.subject,
        "exp": family.expires_at,
    })))
}
