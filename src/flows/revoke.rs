//! Token revocation (RFC 7009) once the client is authenticated.
//!
//! - a **refresh token** of the client (current or rotated out) revokes its whole family:
//!   every refresh token of the grant and every access token it issued (their `jti` carries
//!   the family id);
//! - an **access token** of the client (a JWT the given verifier accepts: signed by this
//!   server, unexpired) is revoked by its `jti` until its `exp` plus
//!   [`REVOCATION_HORIZON_SLACK`](crate::store::REVOCATION_HORIZON_SLACK);
//! - a token issued to **another client** is left alone, and an unknown, malformed or already
//!   expired token needs no action. The adapter answers `200` to all of these (RFC 7009
//!   §2.2), so the endpoint cannot be used to probe for valid tokens; the [`Revocation`]
//!   outcome only tells the tests (and the logs) which case it was.
//!
//! `token_type_hint` only decides which kind is looked up first (§2.1). A store failure is
//! `temporarily_unavailable`.

use super::Env;
use crate::error::OAuthError;
use crate::store::{Client, SecretHash};
use crate::verify::TokenVerifier;

/// A revocation request: `token` and `token_type_hint`.
#[derive(Clone, Copy)]
pub(crate) struct RevokeRequest<'a> {
    /// The token to revoke (a secret).
    pub(crate) token: &'a str,
    /// `token_type_hint`, when sent.
    pub(crate) token_type_hint: Option<&'a str>,
}

/// What a revocation did. Every case is a `200` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// A refresh token of the client: its family is revoked.
    Family,
    /// An access token of the client: its `jti` is revoked.
    AccessToken,
    /// A token of another client: nothing changed.
    Foreign,
    /// Not a live token of this server: nothing to do.
    Unknown,
}

/// Revokes `request.token` for the authenticated `client`; `verifier` checks access tokens
/// (the server's own, without a revocation list: revoking twice is a no-op), `None` when the
/// server has no key ring to verify with.
///
/// # Errors
/// `temporarily_unavailable` when the store fails.
pub(crate) async fn revoke(
    env: &Env,
    verifier: Option<&dyn TokenVerifier>,
    client: &Client,
    request: RevokeRequest<'_>,
) -> Result<Revocation, OAuthError> {
    let token = request.token;
    let access_first = request.token_type_hint == Some("access_token");
    if access_first && let Some(done) = revoke_access(env, verifier, client, token).await? {
        return Ok(done);
    }
    if let Some(done) = revoke_refresh(env, client, token).await? {
        return Ok(done);
    }
    if !access_first && let Some(done) = revoke_access(env, verifier, client, token).await? {
        return Ok(done);
    }
    Ok(Revocation::Unknown)
}

/// Revokes the family of a refresh token; `None` when it is not a live refresh token.
async fn revoke_refresh(
    env: &Env,
    client: &Client,
    token: &str,
) -> Result<Option<Revocation>, OAuthError> {
    // Any token of the family, current or rotated out, revokes it: its client asks for it.
    let Some(family) = env
        .grants
        .family_of_refresh(&SecretHash::of(token), env.now())
        .await?
        .map(|l| l.family)
    else {
        return Ok(None);
    };
    if family.client_id == client.client_id {
        env.grants
            .revoke_family(&family.family_id, env.now())
            .await?;
        tracing::info!(target: "mcp_oauth::revoke", client_id = %client.client_id, family = %family.family_id,
            "grant revoked by its client");
        Ok(Some(Revocation::Family))
    } else {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family.family_id,
            "a client tried to revoke another client's refresh token; ignored");
        Ok(Some(Revocation::Foreign))
    }
}

/// Revokes an access token by `jti`; `None` when it is not one of ours.
async fn revoke_access(
    env: &Env,
    verifier: Option<&dyn TokenVerifier>,
    client: &Client,
    token: &str,
) -> Result<Option<Revocation>, OAuthError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    if !looks_like_jwt(token) {
        return Ok(None);
    }
    // Expired, foreign or forged tokens fail here and need no action.
    let Ok(auth) = verifier.verify(token).await else {
        return Ok(None);
    };
    let (Some(jti), Some(exp)) = (auth.token_id(), auth.expires_at()) else {
        return Ok(None);
    };
    if auth.client_id() == Some(client.client_id.as_str()) {
        // Remembered past `exp` by the largest leeway a verifier may use (issue 8 item 8).
        env.grants
            .revoke_token(
                jti,
                exp.saturating_add(crate::store::REVOCATION_HORIZON_SLACK),
            )
            .await?;
        tracing::info!(target: "mcp_oauth::revoke", client_id = %client.client_id, jti = %jti,
            "access token revoked by its client");
        Ok(Some(Revocation::AccessToken))
    } else {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id,
            "a client tried to revoke another client's access token; ignored");
        Ok(Some(Revocation::Foreign))
    }
}

/// Whether a token has the shape of a JWS (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
