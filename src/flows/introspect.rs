//! Token introspection (RFC 7662) once the caller is authenticated.
//!
//! Only the configured introspection clients (confidential, configured clients: the
//! resource servers) may ask (RFC 7662 §2.1): a public client never authenticated at all
//! (`invalid_client`), and any other client, every dynamically registered one included, is
//! `unauthorized_client` (the adapter renders it `403`).
//!
//! A token is [`Introspection::Access`] when the given verifier accepts it (signed by the key
//! ring, for this issuer and a configured resource, unexpired, not revoked), and
//! [`Introspection::Refresh`] when its family is live and the token is the current one, or
//! the one just rotated out and still inside the grace window (an older one would trip reuse
//! detection). Anything else is [`Introspection::Inactive`], with no reason given. A store
//! outage is `temporarily_unavailable`, not inactive, so a resource server does not drop a
//! token that may be fine. `token_type_hint` only orders the look-ups.

use super::Env;
use super::revoke::looks_like_jwt;
use crate::context::AuthContext;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Client, ClientSource, RefreshFamily, SecretHash};
use crate::verify::{TokenVerifier, VerifyError};

/// An introspection request: `token` and `token_type_hint`.
#[derive(Clone, Copy)]
pub(crate) struct IntrospectRequest<'a> {
    /// The token asked about (a secret).
    pub(crate) token: &'a str,
    /// `token_type_hint`, when sent.
    pub(crate) token_type_hint: Option<&'a str>,
}

/// The answer about a token.
#[derive(Debug)]
pub(crate) enum Introspection {
    /// Not an active token of this server.
    Inactive,
    /// An active access token.
    Access(Box<AuthContext>),
    /// An active refresh token, of this family.
    Refresh(Box<RefreshFamily>),
}

/// Whether `client` may call the introspection endpoint.
///
/// # Errors
/// `invalid_client` for a public client; `unauthorized_client` for any client that is not a
/// configured introspection client.
pub(crate) fn check_caller(env: &Env, client: &Client) -> Result<(), OAuthError> {
    if !client.is_confidential() {
        // A public client never authenticated at all (it only named itself).
        return Err(OAuthError::invalid_client(
            "Introspection is only available to authenticated resource servers",
            false,
        ));
    }
    // Issue 8 item 8: authenticated is not enough; only the configured resource servers
    // (confidential static clients) may introspect.
    let allowed = client.source == ClientSource::Static
        && env.introspection_clients.contains(&client.client_id);
    if !allowed {
        tracing::info!(target: "mcp_oauth::security", client_id = %client.client_id,
            "introspection refused: not a configured introspection client");
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "This client may not use the introspection endpoint",
        ));
    }
    Ok(())
}

/// Introspects `request.token` for `client`, which [`check_caller`] must have accepted;
/// `verifier` checks access tokens (with the revocation list), `None` when the server has
/// no key ring to verify with.
///
/// # Errors
/// `temporarily_unavailable` when the store or the revocation list fails.
pub(crate) async fn introspect(
    env: &Env,
    verifier: Option<&dyn TokenVerifier>,
    request: IntrospectRequest<'_>,
) -> Result<Introspection, OAuthError> {
    let token = request.token;
    let refresh_first = request.token_type_hint == Some("refresh_token");
    let found = if refresh_first {
        match refresh(env, token).await? {
            Some(v) => Some(v),
            None => access(verifier, token).await?,
        }
    } else {
        match access(verifier, token).await? {
            Some(v) => Some(v),
            None => refresh(env, token).await?,
        }
    };
    Ok(found.unwrap_or(Introspection::Inactive))
}

async fn access(
    verifier: Option<&dyn TokenVerifier>,
    token: &str,
) -> Result<Option<Introspection>, OAuthError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    if !looks_like_jwt(token) {
        return Ok(None);
    }
    match verifier.verify(token).await {
        Ok(auth) => Ok(Some(Introspection::Access(Box::new(auth)))),
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

async fn refresh(env: &Env, token: &str) -> Result<Option<Introspection>, OAuthError> {
    let now = env.now();
    let Some(lookup) = env
        .grants
        .family_of_refresh(&SecretHash::of(token), now)
        .await?
    else {
        return Ok(None);
    };
    // A token rotated out past the grace window would trip reuse detection: not active
    // (issue 8 item 8).
    if !lookup.is_usable(now, env.lifetimes.refresh_grace.as_secs()) {
        return Ok(None);
    }
    let family = lookup.family;
    if family.expires_at <= now {
        return Ok(None);
    }
    Ok(Some(Introspection::Refresh(Box::new(family))))
}
