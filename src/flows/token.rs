//! The grants of the token endpoint: `authorization_code` and `refresh_token` (OAuth 2.1).
//!
//! The adapter ([`server::token`](crate::server)) parses the form, authenticates the client
//! and checks that it may use the grant; [`exchange`] does the rest and returns the
//! [`Tokens`] to render, or the RFC 6749 §5.2 error.
//!
//! # `authorization_code`
//! 1. The `code_verifier` must be 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
//!    `redirect_uri` is required when the authorization request carried one (OAuth 2.1
//!    §4.1.3), and may be omitted when the server used the client's only registered URI.
//! 2. The code is read without spending it ([`GrantStore::peek_code`](crate::store::GrantStore::peek_code)) and checked: it must
//!    belong to the client, a `redirect_uri`, when sent or required, must be byte-equal to
//!    the authorization request's (a loopback one too, port included), the verifier must
//!    hash to the S256 challenge (compared in constant time), and a `resource`, if sent,
//!    must equal the code's (`invalid_target`). A failed check spends the code (bound to a
//!    family id that is never created): one guess per code.
//! 3. Spending the code and creating its family (with a refresh token when the client's
//!    `grant_types` include `refresh_token`, whether or not `offline_access` was asked for:
//!    Claude often does not ask, and would be logged out at expiry) are **one atomic store
//!    step** ([`GrantStore::redeem_code`](crate::store::GrantStore::redeem_code)). A store failure, or a timeout before the commit,
//!    leaves the code unspent, so the client's retry is simply the first redemption. Of
//!    racing redemptions one wins. The access token is an RFC 9068 JWT whose `aud` is the
//!    code's resource.
//! 4. Tokens are answered only once the grant's delivery is claimed
//!    ([`GrantStore::claim_initial_grant`](crate::store::GrantStore::claim_initial_grant),
//!    atomic): a code's grant leaves the server **at most once**.
//! 5. A spent code presented again is a **retry** when it is the same exchange (the code's
//!    own client, the same `redirect_uri` and `resource`, the PKCE verifier) and its grant
//!    was never delivered: the first attempt failed after the commit (a store timeout, a
//!    failed signing, a failed claim) and answered `503`. The client gets that grant (the
//!    same refresh token, opened from a copy sealed under a key derived from the code and the
//!    verifier, and an access token of the same family), which used to be revoked instead,
//!    signing the user out. Anything else is a **replay**: `invalid_grant`, and, when it
//!    comes from the code's own client with the right verifier, the family is revoked
//!    (every access and refresh token the first redemption issued stops working, RFC 6749
//!    §4.1.2). A replay by anyone else (another client, a wrong verifier) changes nothing,
//!    so a code seen in a log or a browser history is no kill switch for its user's session.
//!
//! Why a retry may be answered: RFC 6749 §4.1.2 (and OAuth 2.1 §4.1.3) deny a code used
//! more than once and revoke what it issued. Here the code's grant was never issued: no
//! answer carrying it left the server, which the claim makes certain (the tokens are sent
//! only after it, and a retry is served only when nobody claimed). Serving the retry is
//! the first and only delivery of the one grant the code stands for, to a party proving
//! the PKCE verifier (RFC 7636), which never leaves the client except in this request, over
//! TLS. What the server cannot know (an answer that was sent and then lost on the way) is
//! still a replay, as before: the user signs in again.
//!
//! # `refresh_token`
//! The family of the presented token must belong to the client (checked before anything
//! changes, so another client cannot burn it), `scope` may narrow the family's scope but never
//! widen it (`invalid_scope`), and `resource` must equal the family's (`invalid_target`).
//! Every use rotates the token. The successor is sealed (AES-256-GCM, a random nonce, under
//! SHA-256(`"mcp-oauth/refresh-grace/v1"` ‖ presented token)) and stored with the rotation,
//! so a concurrent refresh with the same token inside the grace window (real clients do
//! refresh twice at once) decrypts and receives **the same successor** instead of tripping
//! reuse detection. Outside the window, presenting a rotated-out token is reuse: the store
//! revokes the whole family and the answer is `invalid_grant`, which makes clients
//! re-authorize.
//!
//! Time is [`Env::now`]; codes, family ids, refresh tokens and nonces come from
//! [`Env::random`](super::Env).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::Env;
use crate::crypto::aead;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::issuer::{AccessTokenRequest, IssuedToken};
use crate::scope::ScopeSet;
use crate::store::{
    AuthorizationCode, Client, CodePeek, CodeRedeem, CodeRedemption, CodeTake, RefreshFamily,
    Rotation, SecretHash, StoreError,
};

/// Domain separation for the key that seals a rotated refresh token's successor.
const GRACE_KEY_CONTEXT: &[u8] = b"mcp-oauth/refresh-grace/v1";

/// Domain separation for the key that seals a code's first grant.
const CODE_GRANT_KEY_CONTEXT: &[u8] = b"mcp-oauth/code-grant/v1";

/// A token request, its parameters read off the form (an empty parameter is absent).
#[derive(Clone, Copy)]
pub(crate) enum TokenRequest<'a> {
    /// `grant_type=authorization_code`.
    AuthorizationCode {
        /// `code`.
        code: &'a str,
        /// `redirect_uri`, when sent.
        redirect_uri: Option<&'a str>,
        /// `code_verifier`.
        code_verifier: &'a str,
        /// `resource`, when sent.
        resource: Option<&'a str>,
    },
    /// `grant_type=refresh_token`.
    RefreshToken {
        /// `refresh_token`.
        refresh_token: &'a str,
        /// `scope`, when sent: a narrowing of the family's scope.
        scope: Option<&'a str>,
        /// `resource`, when sent.
        resource: Option<&'a str>,
    },
}

impl std::fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Codes, verifiers and refresh tokens are secrets: only the grant is printed.
        f.write_str(match self {
            Self::AuthorizationCode { .. } => "TokenRequest::AuthorizationCode { .. }",
            Self::RefreshToken { .. } => "TokenRequest::RefreshToken { .. }",
        })
    }
}

/// What a successful token request issues (RFC 6749 §5.1).
pub(crate) struct Tokens {
    /// The access token.
    pub(crate) access: IssuedToken,
    /// The scope it carries.
    pub(crate) scope: ScopeSet,
    /// The refresh token, when one is issued.
    pub(crate) refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("jti", &self.access.jti)
            .field("scope", &self.scope)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Runs a token request of the authenticated `client`, which the caller has checked may
/// use the grant; see the [module docs](self).
///
/// # Errors
/// RFC 6749 §5.2 errors: `invalid_request`, `invalid_grant`, `invalid_scope`,
/// `invalid_target`; `temporarily_unavailable` when the store or the issuer fails.
pub(crate) async fn exchange(
    env: &Env,
    client: &Client,
    request: TokenRequest<'_>,
) -> Result<Tokens, OAuthError> {
    match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
            resource,
        } => authorization_code(env, client, code, redirect_uri, code_verifier, resource).await,
        TokenRequest::RefreshToken {
            refresh_token: presented,
            scope,
            resource,
        } => refresh_token(env, client, presented, scope, resource).await,
    }
}

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
fn verifier_well_formed(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `BASE64URL(SHA256(verifier))` equals `challenge`, in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let computed =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// Suffix of the family id bound to a code spent by a request that failed its checks: no
/// family of that id is ever created (a real family id has no `.`), so a later request
/// cannot finish that exchange. One guess per code.
const REJECTED: &str = ".rejected";

/// What the token request asks of the code, checked against it.
struct CodeRequest<'a> {
    code: &'a str,
    redirect_uri: Option<&'a str>,
    verifier: &'a str,
    resource: Option<&'a str>,
}

impl CodeRequest<'_> {
    /// Step 3 of the [module docs](self): the code belongs to `client`, `redirect_uri` and
    /// `resource` match, the verifier hashes to the challenge.
    fn check(&self, client: &Client, code: &AuthorizationCode) -> Result<(), OAuthError> {
        if code.client_id != client.client_id {
            tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id,
                "authorization code presented by a client it was not issued to");
            return Err(invalid_grant(
                "The authorization code was issued to another client",
            ));
        }
        match self.redirect_uri {
            // Byte for byte: a loopback URI with another port is another URI here.
            Some(sent) if sent != code.redirect_uri => {
                return Err(invalid_grant(
                    "redirect_uri does not match the authorization request",
                ));
            }
            Some(_) => {}
            None if code.redirect_uri_in_request => {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    "redirect_uri is required: the authorization request carried one",
                ));
            }
            None => {}
        }
        if !pkce_matches(self.verifier, &code.code_challenge) {
            return Err(invalid_grant("PKCE verification failed"));
        }
        if self.resource.is_some_and(|r| r != code.resource) {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidTarget,
                "resource does not match the authorization request",
            ));
        }
        Ok(())
    }
}

/// The family a redemption of `code` creates.
fn family_of_code(
    env: &Env,
    client: &Client,
    code: &AuthorizationCode,
    family_id: &str,
    now: u64,
) -> RefreshFamily {
    RefreshFamily {
        family_id: family_id.to_owned(),
        client_id: client.client_id.clone(),
        subject: code.subject.clone(),
        scope: code.scope.clone(),
        resource: code.resource.clone(),
        claims: code.claims.clone(),
        auth_time: code.auth_time,
        created_at: now,
        expires_at: now.saturating_add(env.lifetimes.refresh.as_secs()),
    }
}

async fn authorization_code(
    env: &Env,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: &str,
    resource: Option<&str>,
) -> Result<Tokens, OAuthError> {
    if !verifier_well_formed(verifier) {
        return Err(invalid_grant(
            "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
        ));
    }
    let request = CodeRequest {
        code,
        redirect_uri,
        verifier,
        resource,
    };
    let now = env.now();
    let hash = SecretHash::of(code);
    let grants = &env.grants;
    let stored = match grants.peek_code(&hash, now).await? {
        CodePeek::Live(stored) => stored,
        CodePeek::Spent { family_id, code } => {
            return spent_code(env, client, &request, &family_id, &code, now, false).await;
        }
        CodePeek::Unsupported => {
            return authorization_code_in_two_steps(env, client, &request).await;
        }
        _ => return Err(invalid_grant("Unknown or expired authorization code")),
    };
    if let Err(e) = request.check(client, &stored) {
        // A failed check spends the code, bound to a family that never exists.
        let rejected = format!("{}{REJECTED}", env.random.token(16));
        grants.take_code(&hash, &rejected, now).await?;
        return Err(e);
    }
    let family_id = env.random.token(16);
    let family = family_of_code(env, client, &stored, &family_id, now);
    let refresh = client
        .allows_grant("refresh_token")
        .then(|| env.random.token(32));
    let sealed_grant = seal(
        env,
        &code_grant_key(code, verifier),
        &family_id,
        refresh.as_deref().unwrap_or_default(),
    )?;
    let redemption = CodeRedemption {
        family: family.clone(),
        refresh: refresh.as_deref().map(SecretHash::of),
        sealed_grant,
    };
    match grants.redeem_code(&hash, redemption, now).await {
        Ok(CodeRedeem::Redeemed) => {}
        // A racing request spent it between our read and our redemption.
        Ok(CodeRedeem::Spent { family_id, code }) => {
            return spent_code(env, client, &request, &family_id, &code, now, false).await;
        }
        Ok(_) => return Err(invalid_grant("Unknown or expired authorization code")),
        Err(StoreError::Conflict { .. }) => {
            return Err(invalid_grant("The authorization code was already used"));
        }
        Err(e) => return Err(e.into()),
    }
    let access = mint(env, &family, &family.scope).await?;
    // Tokens leave only after the delivery is claimed: a failure up to here leaves the grant
    // undelivered, so the client's retry gets it (see `spent_code`).
    if !grants.claim_initial_grant(&family_id).await? {
        // A retry of this very exchange, racing us, delivered the grant first.
        return Err(invalid_grant("The authorization code was already used"));
    }
    audit_issued(client, &family, &access);
    Ok(Tokens {
        access,
        scope: family.scope,
        refresh_token: refresh,
    })
}

/// The `token.issued` audit event of a code exchange that hands `access` to `client`.
fn audit_issued(client: &Client, family: &RefreshFamily, access: &IssuedToken) {
    crate::audit::token_issued(
        crate::audit::fid_of(&family.claims),
        &client.client_id,
        &family.subject,
        &family.family_id,
        &access.jti,
        &family.scope,
    );
}

/// A code that was spent before, presented again.
///
/// When the request is the same exchange again (the code's own client, the same
/// `redirect_uri` and `resource`, the PKCE verifier) and the code's grant was **never
/// delivered**, it is a **retry** of an attempt that failed after the commit (a store
/// timeout, a failed signing): the client gets that grant, never a second one:
/// - while [`GrantStore::initial_grant`](crate::store::GrantStore::initial_grant) still has
///   it (never claimed, never rotated): the **same** refresh token, opened from the copy
///   sealed under a key only the holder of the code and the verifier can derive, and an
///   access token of the same family, once this request wins the
///   [claim](crate::store::GrantStore::claim_initial_grant);
/// - on a store without [`GrantStore::redeem_code`](crate::store::GrantStore::redeem_code)
///   (`two_steps`), the family itself, when the first attempt spent the code but never
///   created it (its `create_family` failed): nothing was ever issued for it. Of that retry
///   and a first attempt still in flight, one creates the family; the other is refused. On
///   a store with the atomic step, a spent code without its family was spent by an older
///   instance's two-step exchange (in flight or failed, which cannot be told apart), and is
///   a replay.
///
/// Otherwise (the grant was delivered, the family was revoked, or the first attempt failed
/// its checks) it is a replay: RFC 6749 §4.1.2, the family is revoked when the replay comes
/// from the code's own client with the verifier, and the answer is `invalid_grant`. Anyone
/// else replaying a code they saw changes nothing.
async fn spent_code(
    env: &Env,
    client: &Client,
    request: &CodeRequest<'_>,
    family_id: &str,
    code: &AuthorizationCode,
    now: u64,
    two_steps: bool,
) -> Result<Tokens, OAuthError> {
    let grants = &env.grants;
    let owner =
        code.client_id == client.client_id && pkce_matches(request.verifier, &code.code_challenge);
    if !owner {
        crate::audit::code_replay_detected(
            crate::audit::fid_of(&code.claims),
            &client.client_id,
            family_id,
            false,
        );
        return Err(invalid_grant("The authorization code was already used"));
    }
    if family_id.ends_with(REJECTED) {
        return Err(invalid_grant("The authorization code was already used"));
    }
    if request.check(client, code).is_ok()
        && let Some(grant) = grants.initial_grant(family_id, now).await?
        && let Some(refresh) = open(
            &code_grant_key(request.code, request.verifier),
            family_id,
            &grant.sealed_grant,
        )
    {
        let access = mint(env, &grant.family, &grant.family.scope).await?;
        if grants.claim_initial_grant(family_id).await? {
            tracing::info!(target: "mcp_oauth::token", client_id = %client.client_id, family = %family_id,
                    "retry of a code exchange that failed after its commit; its grant is delivered now");
            audit_issued(client, &grant.family, &access);
            return Ok(Tokens {
                access,
                scope: grant.family.scope,
                refresh_token: (!refresh.is_empty()).then_some(refresh),
            });
        }
    }
    if two_steps && request.check(client, code).is_ok() {
        let family = family_of_code(env, client, code, family_id, now);
        let refresh = client
            .allows_grant("refresh_token")
            .then(|| env.random.token(32));
        match grants
            .create_family(family.clone(), refresh.as_deref().map(SecretHash::of))
            .await
        {
            Ok(()) => {
                tracing::info!(target: "mcp_oauth::token", client_id = %client.client_id, family = %family_id,
                    "retry of a code exchange whose family was never created; the exchange is finished now");
                let access = mint(env, &family, &family.scope).await?;
                audit_issued(client, &family, &access);
                return Ok(Tokens {
                    access,
                    scope: family.scope,
                    refresh_token: refresh,
                });
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Issue 8 item 6: only the code's own client, proving the PKCE verifier, may trigger the
    // revocation; anyone else replaying a code they saw changes nothing.
    crate::audit::code_replay_detected(
        crate::audit::fid_of(&code.claims),
        &client.client_id,
        family_id,
        true,
    );
    grants.revoke_family(family_id, now).await?;
    Err(invalid_grant("The authorization code was already used"))
}

/// The exchange on a store that cannot read a code without spending it
/// ([`CodePeek::Unsupported`]): take the code, check, create the family.
async fn authorization_code_in_two_steps(
    env: &Env,
    client: &Client,
    request: &CodeRequest<'_>,
) -> Result<Tokens, OAuthError> {
    let now = env.now();
    let family_id = env.random.token(16);
    let grants = &env.grants;
    let code = match grants
        .take_code(&SecretHash::of(request.code), &family_id, now)
        .await?
    {
        CodeTake::Taken(code) => code,
        CodeTake::Replayed { family_id, code } => {
            return spent_code(env, client, request, &family_id, &code, now, true).await;
        }
        _ => return Err(invalid_grant("Unknown or expired authorization code")),
    };
    // From here on the code is spent: a failed check costs the caller the code, and its
    // family is revoked before it exists, so no retry can create it.
    if let Err(e) = request.check(client, &code) {
        grants.revoke_family(&family_id, now).await?;
        return Err(e);
    }
    let refresh = client
        .allows_grant("refresh_token")
        .then(|| env.random.token(32));
    let family = family_of_code(env, client, &code, &family_id, now);
    match grants
        .create_family(family.clone(), refresh.as_deref().map(SecretHash::of))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(invalid_grant("The authorization code was already used"));
        }
        Err(e) => return Err(e.into()),
    }
    let access = mint(env, &family, &family.scope).await?;
    audit_issued(client, &family, &access);
    Ok(Tokens {
        access,
        scope: family.scope,
        refresh_token: refresh,
    })
}

/// Mints an access token of `family` with `scope` (the family's, or a narrower one).
async fn mint(
    env: &Env,
    family: &RefreshFamily,
    scope: &ScopeSet,
) -> Result<IssuedToken, OAuthError> {
    env.issuer
        .issue(&AccessTokenRequest {
            subject: &family.subject,
            client_id: &family.client_id,
            scope,
            audience: &family.resource,
            family_id: &family.family_id,
            auth_time: family.auth_time,
            claims: &family.claims,
            lifetime: env.lifetimes.access,
        })
        .await
        .map_err(|e| {
            tracing::error!(target: "mcp_oauth::token", error = %e, "access token issuing failed");
            OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The access token could not be issued; retry later",
            )
        })
}

async fn refresh_token(
    env: &Env,
    client: &Client,
    presented: &str,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<Tokens, OAuthError> {
    let hash = SecretHash::of(presented);
    let grants = &env.grants;
    // Check ownership and the request before rotating, so a wrong request (or another
    // client) cannot burn the token.
    let Some(family) = grants
        .family_of_refresh(&hash, env.now())
        .await?
        .map(|l| l.family)
    else {
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    };
    let fid = crate::audit::fid_of(&family.claims).to_owned();
    if family.client_id != client.client_id {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family.family_id,
            "refresh token presented by a client it was not issued to");
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    }
    let scope = match scope {
        None => family.scope.clone(),
        Some(s) => {
            let requested = ScopeSet::parse(s)
                .map_err(|_| OAuthError::new(OAuthErrorCode::InvalidScope, "scope is malformed"))?;
            if !requested.is_subset(&family.scope) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidScope,
                    "A refresh may narrow the granted scope but never widen it",
                ));
            }
            requested
        }
    };
    if resource.is_some_and(|r| r != family.resource) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            "resource does not match the grant",
        ));
    }

    let now = env.now();
    let successor = env.random.token(32);
    let sealed = seal_successor(env, presented, &family.family_id, &successor)?;
    let rotation = grants
        .rotate_refresh(
            &hash,
            SecretHash::of(&successor),
            sealed,
            now,
            env.lifetimes.refresh_grace.as_secs(),
        )
        .await?;
    let (family, refresh, grace) = match rotation {
        Rotation::Rotated(family) => (family, successor, false),
        Rotation::Grace {
            family,
            sealed_successor,
        } => {
            let Some(successor) = open_successor(presented, &family.family_id, &sealed_successor)
            else {
                tracing::error!(target: "mcp_oauth::token", family = %family.family_id,
                    "the sealed successor of a rotated refresh token does not open");
                return Err(invalid_grant("Unknown, expired or revoked refresh token"));
            };
            (family, successor, true)
        }
        Rotation::Reused { family_id } => {
            crate::audit::refresh_reuse_detected(&fid, &client.client_id, &family_id);
            return Err(invalid_grant(
                "The refresh token was already used; the grant is revoked",
            ));
        }
        _ => return Err(invalid_grant("Unknown, expired or revoked refresh token")),
    };
    if family.client_id != client.client_id {
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    }
    let access = mint(env, &family, &scope).await?;
    crate::audit::refresh_rotated(
        &fid,
        &client.client_id,
        &family.family_id,
        &access.jti,
        grace,
    );
    Ok(Tokens {
        access,
        scope,
        refresh_token: Some(refresh),
    })
}

/// The AES-256-GCM key only a holder of `presented` can derive.
fn grace_key(presented: &str) -> [u8; 32] {
    key_of(&[GRACE_KEY_CONTEXT, presented.as_bytes()])
}

/// The AES-256-GCM key of a code's sealed first grant: only a holder of the code **and** its
/// PKCE verifier can derive it (the store keeps the SHA-256 of each, never the values).
fn code_grant_key(code: &str, verifier: &str) -> [u8; 32] {
    key_of(&[
        CODE_GRANT_KEY_CONTEXT,
        code.as_bytes(),
        b"\0",
        verifier.as_bytes(),
    ])
}

/// SHA-256 of the parts, as an AES-256-GCM key.
fn key_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `nonce ‖ ciphertext ‖ tag` of `successor`, bound to the family id as associated data; the
/// nonce comes from `env.random`.
fn seal_successor(
    env: &Env,
    presented: &str,
    family_id: &str,
    successor: &str,
) -> Result<Vec<u8>, OAuthError> {
    seal(env, &grace_key(presented), family_id, successor)
}

/// `nonce ‖ ciphertext ‖ tag` of `plain` under `key` (`crypto::aead`), bound to the family
/// id as associated data; the nonce comes from `env.random`.
fn seal(env: &Env, key: &[u8; 32], family_id: &str, plain: &str) -> Result<Vec<u8>, OAuthError> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    env.random.fill(&mut nonce);
    aead::seal_with_nonce(key, nonce, family_id.as_bytes(), plain.as_bytes()).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorCode::TemporarilyUnavailable,
            "The token could not be sealed; retry later",
        )
    })
}

/// Opens what [`seal_successor`] produced; `None` when it does not authenticate.
fn open_successor(presented: &str, family_id: &str, sealed: &[u8]) -> Option<String> {
    open(&grace_key(presented), family_id, sealed)
}

/// Opens what [`seal`] produced; `None` when it does not authenticate.
fn open(key: &[u8; 32], family_id: &str, sealed: &[u8]) -> Option<String> {
    String::from_utf8(aead::open(key, family_id.as_bytes(), sealed)?).ok()
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
