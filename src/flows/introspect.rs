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
        Err(e @ VerifyError::Unavailable { .. }) => {
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

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::flows::test_env::{REDIRECT, TestEnv};
    use crate::flows::token::{TokenRequest, Tokens, exchange};

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    async fn grant(t: &TestEnv) -> Tokens {
        t.put_code("the-code", "public", VERIFIER).await;
        let client = t.client("public").await;
        let request = TokenRequest::AuthorizationCode {
            code: "the-code",
            redirect_uri: Some(REDIRECT),
            code_verifier: VERIFIER,
            resource: None,
        };
        exchange(&t.env, &client, request).await.unwrap()
    }

    async fn rotate(t: &TestEnv, token: &str) -> String {
        let client = t.client("public").await;
        let request = TokenRequest::RefreshToken {
            refresh_token: token,
            scope: None,
            resource: None,
        };
        exchange(&t.env, &client, request)
            .await
            .unwrap()
            .refresh_token
            .unwrap()
    }

    fn ask(token: &str) -> IntrospectRequest<'_> {
        IntrospectRequest {
            token,
            token_type_hint: None,
        }
    }

    /// A verifier that always answers the same failure.
    struct Failing(fn() -> VerifyError);

    #[async_trait]
    impl TokenVerifier for Failing {
        async fn verify(&self, _token: &str) -> Result<AuthContext, VerifyError> {
            Err((self.0)())
        }
    }

    #[tokio::test]
    async fn only_configured_introspection_clients_may_ask() {
        let t = TestEnv::new().await;
        let dynamic = t.confidential_client("rs-dynamic", "secret");
        let mut impostor = t.confidential_client("rs", "secret");
        impostor.source = ClientSource::Dynamic;
        // (client, expected error)
        let table = [
            (t.client("rs").await, None),
            (
                t.client("public").await,
                Some(OAuthErrorCode::InvalidClient),
            ),
            (
                t.client("confidential").await,
                Some(OAuthErrorCode::UnauthorizedClient),
            ),
            (dynamic, Some(OAuthErrorCode::UnauthorizedClient)),
            // A registered client that took the id of an introspection client.
            (impostor, Some(OAuthErrorCode::UnauthorizedClient)),
        ];
        for (client, expect) in table {
            let got = check_caller(&t.env, &client).err().map(|e| e.code());
            assert_eq!(got, expect, "{}", client.client_id);
        }
    }

    #[tokio::test]
    async fn refresh_tokens_are_active_while_usable() {
        let t = TestEnv::new().await;
        let first = grant(&t).await.refresh_token.unwrap();
        let Introspection::Refresh(family) = introspect(&t.env, None, ask(&first)).await.unwrap()
        else {
            panic!("the current refresh token is active");
        };
        assert_eq!(family.client_id, "public");
        assert_eq!(family.subject, "alice");
        assert_eq!(family.expires_at, t.start + 30 * 24 * 3600);

        let second = rotate(&t, &first).await;
        // (seconds to wait, token, active?)
        let table = [
            (30, first.as_str(), true),
            (0, second.as_str(), true),
            (1, first.as_str(), false),
            (0, second.as_str(), true),
        ];
        for (wait, token, active) in table {
            t.advance(wait);
            let got = introspect(&t.env, None, ask(token)).await.unwrap();
            assert_eq!(
                matches!(got, Introspection::Refresh(_)),
                active,
                "{} s after rotation: {got:?}",
                t.env.now() - t.start
            );
        }
        // The family expires 30 days after it was created.
        t.advance(30 * 24 * 3600 - 31);
        let got = introspect(&t.env, None, ask(&second)).await.unwrap();
        assert!(matches!(got, Introspection::Inactive), "{got:?}");
    }

    #[tokio::test]
    async fn revoked_and_foreign_tokens_are_inactive() {
        let t = TestEnv::new().await;
        let tokens = grant(&t).await;
        let verifier = t.verifier();
        let refresh = tokens.refresh_token.clone().unwrap();
        let access = tokens.access.token.clone();

        // Active first, whatever the hint.
        for hint in [None, Some("access_token"), Some("refresh_token")] {
            let request = IntrospectRequest {
                token: &access,
                token_type_hint: hint,
            };
            let got = introspect(&t.env, Some(&verifier), request).await.unwrap();
            let Introspection::Access(auth) = got else {
                panic!("{hint:?}: {got:?}");
            };
            assert_eq!(auth.client_id(), Some("public"));
            assert_eq!(auth.subject(), "alice");
        }

        // Tokens of another server (another key ring, same issuer) and garbage.
        let other = TestEnv::new().await;
        let foreign = grant(&other).await;
        for token in [
            foreign.access.token.as_str(),
            foreign.refresh_token.as_deref().unwrap(),
            "not-a-token",
            "a.b.c",
        ] {
            let got = introspect(&t.env, Some(&verifier), ask(token))
                .await
                .unwrap();
            assert!(matches!(got, Introspection::Inactive), "{got:?}");
        }

        // Revoking the family makes both inactive.
        let family = tokens.access.jti.split('.').next().unwrap();
        t.env
            .grants
            .revoke_family(family, t.env.now())
            .await
            .unwrap();
        for token in [access.as_str(), refresh.as_str()] {
            let got = introspect(&t.env, Some(&verifier), ask(token))
                .await
                .unwrap();
            assert!(matches!(got, Introspection::Inactive), "{got:?}");
        }
    }

    #[tokio::test]
    async fn verifier_failures() {
        let t = TestEnv::new().await;
        // An expired (or otherwise refused) access token is inactive; an unavailable
        // revocation list is an error, not `active: false`.
        let expired = Failing(|| VerifyError::Expired);
        let got = introspect(&t.env, Some(&expired), ask("a.b.c"))
            .await
            .unwrap();
        assert!(matches!(got, Introspection::Inactive), "{got:?}");
        let down = Failing(|| VerifyError::unavailable("down"));
        let e = introspect(&t.env, Some(&down), ask("a.b.c"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::TemporarilyUnavailable);
        // A token that is not a JWT never reaches the verifier.
        let got = introspect(&t.env, Some(&down), ask("opaque"))
            .await
            .unwrap();
        assert!(matches!(got, Introspection::Inactive), "{got:?}");
    }
}
