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
//! The rules (who may ask, what is active) live in [`flows::introspect`](crate::flows);
//! this file reads the form, authenticates the caller and renders the JSON.
//!
//! Tokens of a custom [`TokenIssuer`](crate::issuer::TokenIssuer) that are not JWTs signed by
//! the key ring are reported inactive.

use crate::paths::Endpoint;
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
use crate::flows::introspect::{IntrospectRequest, Introspection, check_caller, introspect};
use crate::store::RefreshFamily;
use crate::verify::{JwtVerifier, TokenVerifier};

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

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    let verifier = own_tokens_verifier(ctx, true);
    Router::new().route(
        &ctx.route(Endpoint::Introspect),
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
    // `unauthorized_client` is rendered as 403 by `routes`: the client is known, it just
    // may not ask.
    check_caller(&ctx.env, &client)?;
    let Some(token) = form.get("token") else {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "token is required",
        ));
    };
    let request = IntrospectRequest {
        token,
        token_type_hint: form.get("token_type_hint"),
    };
    let verifier = verifier.map(|v| v as &dyn TokenVerifier);
    Ok(match introspect(&ctx.env, verifier, request).await? {
        Introspection::Inactive => json!({ "active": false }),
        Introspection::Access(auth) => access_response(&auth),
        Introspection::Refresh(family) => refresh_response(&family),
    })
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

fn refresh_response(family: &RefreshFamily) -> Value {
    json!({
        "active": true,
        "token_type": "refresh_token",
        "client_id": family.client_id,
        "scope": family.scope.to_string(),
        "sub": family.subject,
        "exp": family.expires_at,
    })
}
