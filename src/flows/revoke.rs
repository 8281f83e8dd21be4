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
//! `temporarily_unavailable`, and so is a token that cannot be checked because the key ring
//! could not be reloaded: the endpoint never answers `200` without having revoked.

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
        crate::audit::token_revoked(
            crate::audit::fid_of(&family.claims),
            &client.client_id,
            "refresh_token",
            Some(&family.family_id),
        );
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
    // Expired, foreign or forged tokens fail here and need no action. A verifier that could
    // not decide (the key ring's store failed while looking up an unknown `kid`) is not an
    // answer: saying `200` then would tell the client its token is revoked when it is not.
    let auth = match verifier.verify(token).await {
        Ok(auth) => auth,
        Err(crate::verify::VerifyError::Unavailable { context, .. }) => {
            tracing::error!(target: "mcp_oauth::revoke", client_id = %client.client_id, %context,
                "cannot verify the access token to revoke (key ring unavailable)");
            return Err(OAuthError::unavailable_retry(
                "The authorization server is temporarily unavailable",
                5,
            ));
        }
        Err(_) => return Ok(None),
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
        let family_id = jti.split_once('.').map(|(f, _)| f);
        crate::audit::token_revoked(
            crate::audit::fid_of(auth.claims()),
            &client.client_id,
            "access_token",
            family_id,
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OAuthErrorCode;
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

    /// Which token of the grant a row revokes.
    #[derive(Debug, Clone, Copy)]
    enum Which {
        Refresh,
        Access,
        Garbage,
        ForgedJwt,
    }

    #[tokio::test]
    async fn revocation_rules() {
        use Which::{Access, ForgedJwt, Garbage, Refresh};
        // (token, hint, revoking client, outcome, refresh still works, access still works)
        let table = [
            (Refresh, None, "public", Revocation::Family, false, false),
            (
                Refresh,
                Some("access_token"),
                "public",
                Revocation::Family,
                false,
                false,
            ),
            (
                Refresh,
                None,
                "confidential",
                Revocation::Foreign,
                true,
                true,
            ),
            (Access, None, "public", Revocation::AccessToken, true, false),
            (
                Access,
                Some("refresh_token"),
                "public",
                Revocation::AccessToken,
                true,
                false,
            ),
            (
                Access,
                None,
                "confidential",
                Revocation::Foreign,
                true,
                true,
            ),
            (Garbage, None, "public", Revocation::Unknown, true, true),
            (ForgedJwt, None, "public", Revocation::Unknown, true, true),
        ];
        for (which, hint, revoker, outcome, refresh_lives, access_lives) in table {
            let t = TestEnv::new().await;
            let tokens = grant(&t).await;
            let refresh = tokens.refresh_token.clone().unwrap();
            let token = match which {
                Refresh => refresh.clone(),
                Access => tokens.access.token.clone(),
                Garbage => "not-a-token".to_owned(),
                ForgedJwt => "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
            };
            let verifier = t.verifier();
            let client = t.client(revoker).await;
            let got = revoke(
                &t.env,
                Some(&verifier),
                &client,
                RevokeRequest {
                    token: &token,
                    token_type_hint: hint,
                },
            )
            .await
            .unwrap();
            let row = format!("{which:?} {hint:?} by {revoker}");
            assert_eq!(got, outcome, "{row}");
            let access_ok = verifier.verify(&tokens.access.token).await.is_ok();
            assert_eq!(access_ok, access_lives, "{row}: access token");
            let owner = t.client("public").await;
            let refreshed = exchange(
                &t.env,
                &owner,
                TokenRequest::RefreshToken {
                    refresh_token: &refresh,
                    scope: None,
                    resource: None,
                },
            )
            .await;
            assert_eq!(refreshed.is_ok(), refresh_lives, "{row}: refresh token");
            if let Err(e) = refreshed {
                assert_eq!(e.code(), OAuthErrorCode::InvalidGrant);
            }
        }
    }

    #[tokio::test]
    async fn without_a_verifier_access_tokens_are_unknown() {
        let t = TestEnv::new().await;
        let tokens = grant(&t).await;
        let client = t.client("public").await;
        let request = RevokeRequest {
            token: &tokens.access.token,
            token_type_hint: Some("access_token"),
        };
        let got = revoke(&t.env, None, &client, request).await.unwrap();
        assert_eq!(got, Revocation::Unknown);
    }

    #[tokio::test]
    async fn a_rotated_out_refresh_token_still_revokes_its_family() {
        let t = TestEnv::new().await;
        let tokens = grant(&t).await;
        let old = tokens.refresh_token.unwrap();
        let client = t.client("public").await;
        let rotate = TokenRequest::RefreshToken {
            refresh_token: &old,
            scope: None,
            resource: None,
        };
        let new = exchange(&t.env, &client, rotate)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
        t.advance(3600);
        let request = RevokeRequest {
            token: &old,
            token_type_hint: None,
        };
        let got = revoke(&t.env, None, &client, request).await.unwrap();
        assert_eq!(got, Revocation::Family);
        let refresh = TokenRequest::RefreshToken {
            refresh_token: &new,
            scope: None,
            resource: None,
        };
        assert!(exchange(&t.env, &client, refresh).await.is_err());
    }

    /// A key store that fails every call once told to (a database that went away).
    struct FailingKeys {
        inner: crate::store::MemoryStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl FailingKeys {
        fn check(&self) -> Result<(), crate::store::StoreError> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::store::StoreError::unavailable("key store down"));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl crate::store::KeyStore for FailingKeys {
        async fn load_keys(
            &self,
            ring: &str,
            now: u64,
        ) -> Result<Vec<crate::store::StoredKey>, crate::store::StoreError> {
            self.check()?;
            self.inner.load_keys(ring, now).await
        }
        async fn create_initial_key(
            &self,
            ring: &str,
            key: crate::store::StoredKey,
        ) -> Result<bool, crate::store::StoreError> {
            self.check()?;
            self.inner.create_initial_key(ring, key).await
        }
        async fn rotate_key(
            &self,
            ring: &str,
            expected: &str,
            next: crate::store::StoredKey,
            now: u64,
            until: u64,
        ) -> Result<crate::store::KeyRotation, crate::store::StoreError> {
            self.check()?;
            self.inner
                .rotate_key(ring, expected, next, now, until)
                .await
        }
        async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, crate::store::StoreError> {
            self.check()?;
            self.inner.prune_keys(ring, now).await
        }
    }

    /// Issue 13 item 6: an access token signed with a key this instance does not hold yet
    /// (another instance rotated) cannot be checked while the key store is down; `/revoke`
    /// must answer `503`, not `200` without revoking anything.
    #[tokio::test]
    async fn a_key_reload_failure_is_unavailable_not_200() {
        use crate::keys::{KeyRing, SigningAlgorithm, SigningKey};
        let t = TestEnv::new().await;
        let keys = std::sync::Arc::new(FailingKeys {
            inner: crate::store::MemoryStore::new(),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let ring = KeyRing::from_store(keys.clone()).open().await.unwrap();
        let verifier = crate::verify::JwtVerifier::builder(ring)
            .issuer(t.env.cfg.issuer())
            .audience(RESOURCE_FOR_TESTS)
            .build()
            .unwrap();
        // A token signed with a key rotated in elsewhere: its kid is unknown here.
        let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let token = other
            .sign(
                "at+jwt",
                &serde_json::json!({"sub": "alice", "client_id": "public"}),
            )
            .unwrap();
        keys.failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let client = t.client("public").await;
        for hint in [Some("access_token"), None] {
            let got = revoke(
                &t.env,
                Some(&verifier),
                &client,
                RevokeRequest {
                    token: &token,
                    token_type_hint: hint,
                },
            )
            .await;
            let err = got.expect_err("a revocation that could not be checked is not a 200");
            assert_eq!(
                err.code(),
                OAuthErrorCode::TemporarilyUnavailable,
                "{hint:?}"
            );
        }
    }

    const RESOURCE_FOR_TESTS: &str = crate::flows::test_env::RESOURCE;
}
