//! The token endpoint (`POST {issuer}/token`): the `authorization_code` and `refresh_token`
//! grants of OAuth 2.1.
//!
//! # Requests
//! Only `application/x-www-form-urlencoded` bodies are accepted (Claude and every SDK client
//! send forms; a JSON body is `invalid_request`). A parameter sent twice is refused; an
//! empty parameter counts as absent. Every request counts against the token rate limit of
//! its client address, and the client authenticates as described in
//! [`client_auth`](super::client_auth).
//!
//! # `authorization_code`
//! 1. The client must be allowed the grant, and send `code` and a `code_verifier` of 43–128
//!    characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1). `redirect_uri` is required when the
//!    authorization request carried one (OAuth 2.1 §4.1.3), and may be omitted when the
//!    server used the client's only registered URI.
//! 2. The code is taken from the store **once**, atomically, binding a fresh family id to it.
//!    A second redemption gets `invalid_grant`. It revokes that family (every access and
//!    refresh token the first redemption issued stops working, RFC 6749 §4.1.2) **only**
//!    when it comes from the code's own client with the right PKCE verifier: a replay by
//!    anyone else (another client, a wrong verifier) changes nothing, so a code seen in a
//!    log or a browser history is no kill switch for its user's session.
//! 3. The code must belong to the client, a `redirect_uri`, when sent or required, must be
//!    byte-equal to the authorization request's (a loopback one too, port included), the
//!    verifier must hash to the S256 challenge (compared in constant time), and a
//!    `resource`, if sent, must equal the code's (`invalid_target`). A failure here still
//!    spends the code: one guess per code.
//! 4. The family is created (a conflict means a replay revoked it first: `invalid_grant`) with
//!    a refresh token when the client's `grant_types` include `refresh_token`, whether or not
//!    `offline_access` was asked for (Claude often does not ask, and would be logged out at
//!    expiry); the access token is an RFC 9068 JWT whose `aud` is the code's resource.
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
//! # Responses
//! `200` with `access_token`, `token_type: "Bearer"`, `expires_in`, `scope` and
//! `refresh_token` when one is issued; errors are RFC 6749 §5.2 JSON. Both carry
//! `Cache-Control: no-store` and `Pragma: no-cache`. A store failure is `503
//! temporarily_unavailable`; nothing answers 500.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AsContext;
use super::client_auth::{FormParams, authenticate, read_form};
use super::rate_limit::{self, LimitKind};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::issuer::{AccessTokenRequest, IssuedToken};
use crate::scope::ScopeSet;
use crate::store::{Client, CodeTake, RefreshFamily, Rotation, SecretHash, StoreError};

/// Domain separation for the key that seals a rotated refresh token's successor.
const GRACE_KEY_CONTEXT: &[u8] = b"mcp-oauth/refresh-grace/v1";

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new().route(
        &ctx.route("/token"),
        post(token).fallback(method_not_allowed),
    )
}

/// `405` for anything but `POST`, still as OAuth JSON.
pub(crate) async fn method_not_allowed() -> Response {
    let mut res = OAuthError::new(
        OAuthErrorCode::InvalidRequest,
        "This endpoint only accepts POST",
    )
    .into_response();
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    res
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl TokenResponse {
    fn new(access: IssuedToken, scope: &ScopeSet, refresh_token: Option<String>) -> Self {
        Self {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope: scope.to_string(),
            refresh_token,
        }
    }
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let Ok(body) = serde_json::to_string(&self) else {
            return OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The token response could not be encoded",
            )
            .into_response();
        };
        let mut res = (StatusCode::OK, body).into_response();
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        res
    }
}

async fn token(State(ctx): State<AsContext>, req: Request) -> Response {
    match handle(&ctx, req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(ctx: &AsContext, req: Request) -> Result<TokenResponse, OAuthError> {
    let (parts, body) = req.into_parts();
    rate_limit::check(ctx, LimitKind::Token, &parts).await?;
    let form = read_form(&parts.headers, body).await?;
    let grant = match form.get("grant_type") {
        None => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "grant_type is required",
            ));
        }
        Some(g @ ("authorization_code" | "refresh_token")) => g,
        Some(_) => {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "Supported grant types: authorization_code, refresh_token",
            ));
        }
    };
    let client = authenticate(ctx, &parts.headers, &form).await?;
    if !client.allows_grant(grant) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            format!("This client is not registered for the {grant} grant"),
        ));
    }
    // `authenticate` recorded the client's use (for idle-client retention).
    if grant == "authorization_code" {
        authorization_code(ctx, &client, &form).await
    } else {
        refresh_token(ctx, &client, &form).await
    }
}

fn required<'a>(form: &'a FormParams, name: &'static str) -> Result<&'a str, OAuthError> {
    form.get(name).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            format!("{name} is required"),
        )
    })
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

async fn authorization_code(
    ctx: &AsContext,
    client: &Client,
    form: &FormParams,
) -> Result<TokenResponse, OAuthError> {
    let code = required(form, "code")?;
    let redirect_uri = form.get("redirect_uri");
    let verifier = required(form, "code_verifier")?;
    if !verifier_well_formed(verifier) {
        return Err(invalid_grant(
            "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
        ));
    }
    let now = crate::util::now();
    let family_id = crate::util::random_token(16);
    let grants = &ctx.server.grants;
    let code = match grants
        .take_code(&SecretHash::of(code), &family_id, now)
        .await?
    {
        CodeTake::Taken(code) => code,
        CodeTake::Replayed { family_id, code } => {
            // Issue 8 item 6: only the code's own client, proving the PKCE verifier, may
            // trigger the revocation; anyone else replaying a code they saw changes nothing.
            if code.client_id == client.client_id && pkce_matches(verifier, &code.code_challenge) {
                tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family_id,
                    "authorization code replayed by its own client; revoking every token it issued");
                grants.revoke_family(&family_id, now).await?;
            } else {
                tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family_id,
                    "authorization code replayed by another client or without its verifier; nothing revoked");
            }
            return Err(invalid_grant("The authorization code was already used"));
        }
        _ => return Err(invalid_grant("Unknown or expired authorization code")),
    };
    // From here on the code is spent: a failed check costs the caller the code.
    if code.client_id != client.client_id {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id,
            "authorization code presented by a client it was not issued to");
        return Err(invalid_grant(
            "The authorization code was issued to another client",
        ));
    }
    match redirect_uri {
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
    if !pkce_matches(verifier, &code.code_challenge) {
        return Err(invalid_grant("PKCE verification failed"));
    }
    if form.get("resource").is_some_and(|r| r != code.resource) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            "resource does not match the authorization request",
        ));
    }
    let refresh = client
        .allows_grant("refresh_token")
        .then(|| crate::util::random_token(32));
    let family = RefreshFamily {
        family_id: family_id.clone(),
        client_id: client.client_id.clone(),
        subject: code.subject.clone(),
        scope: code.scope.clone(),
        resource: code.resource.clone(),
        claims: code.claims.clone(),
        auth_time: code.auth_time,
        created_at: now,
        expires_at: now.saturating_add(ctx.server.lifetimes.refresh.as_secs()),
    };
    match grants
        .create_family(family.clone(), refresh.as_deref().map(SecretHash::of))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(invalid_grant("The authorization code was already used"));
        }
        Err(e) => return Err(e.into()),
    }
    let access = mint(ctx, &family, &family.scope).await?;
    Ok(TokenResponse::new(access, &family.scope, refresh))
}

/// Mints an access token of `family` with `scope` (the family's, or a narrower one).
async fn mint(
    ctx: &AsContext,
    family: &RefreshFamily,
    scope: &ScopeSet,
) -> Result<IssuedToken, OAuthError> {
    ctx.issuer
        .issue(&AccessTokenRequest {
            subject: &family.subject,
            client_id: &family.client_id,
            scope,
            audience: &family.resource,
            family_id: &family.family_id,
            auth_time: family.auth_time,
            claims: &family.claims,
            lifetime: ctx.server.lifetimes.access,
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
    ctx: &AsContext,
    client: &Client,
    form: &FormParams,
) -> Result<TokenResponse, OAuthError> {
    let presented = required(form, "refresh_token")?;
    let hash = SecretHash::of(presented);
    let grants = &ctx.server.grants;
    // Check ownership and the request before rotating, so a wrong request (or another
    // client) cannot burn the token.
    let Some(family) = grants
        .family_of_refresh(&hash, crate::util::now())
        .await?
        .map(|l| l.family)
    else {
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    };
    if family.client_id != client.client_id {
        tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family.family_id,
            "refresh token presented by a client it was not issued to");
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    }
    let scope = match form.get("scope") {
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
    if form.get("resource").is_some_and(|r| r != family.resource) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            "resource does not match the grant",
        ));
    }

    let now = crate::util::now();
    let successor = crate::util::random_token(32);
    let sealed = seal_successor(presented, &family.family_id, &successor)?;
    let rotation = grants
        .rotate_refresh(
            &hash,
            SecretHash::of(&successor),
            sealed,
            now,
            ctx.server.lifetimes.refresh_grace.as_secs(),
        )
        .await?;
    let (family, refresh) = match rotation {
        Rotation::Rotated(family) => (family, successor),
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
            (family, successor)
        }
        Rotation::Reused { family_id } => {
            tracing::warn!(target: "mcp_oauth::security", client_id = %client.client_id, family = %family_id,
                "refresh token reuse; the grant is revoked");
            return Err(invalid_grant(
                "The refresh token was already used; the grant is revoked",
            ));
        }
        _ => return Err(invalid_grant("Unknown, expired or revoked refresh token")),
    };
    if family.client_id != client.client_id {
        return Err(invalid_grant("Unknown, expired or revoked refresh token"));
    }
    let access = mint(ctx, &family, &scope).await?;
    Ok(TokenResponse::new(access, &scope, Some(refresh)))
}

/// The AES-256-GCM key only a holder of `presented` can derive.
fn grace_key(presented: &str) -> Option<LessSafeKey> {
    let mut h = Sha256::new();
    h.update(GRACE_KEY_CONTEXT);
    h.update(presented.as_bytes());
    let key = h.finalize();
    UnboundKey::new(&AES_256_GCM, &key)
        .ok()
        .map(LessSafeKey::new)
}

/// `nonce ‖ ciphertext ‖ tag` of `successor`, bound to the family id as associated data.
fn seal_successor(
    presented: &str,
    family_id: &str,
    successor: &str,
) -> Result<Vec<u8>, OAuthError> {
    let unavailable = || {
        OAuthError::new(
            OAuthErrorCode::TemporarilyUnavailable,
            "The refresh token could not be rotated; retry later",
        )
    };
    let key = grace_key(presented).ok_or_else(unavailable)?;
    let mut nonce = [0u8; NONCE_LEN];
    crate::util::fill_random(&mut nonce);
    let mut in_out = successor.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(family_id.as_bytes()),
        &mut in_out,
    )
    .map_err(|_| unavailable())?;
    let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&in_out);
    Ok(out)
}

/// Opens what [`seal_successor`] produced; `None` when it does not authenticate.
fn open_successor(presented: &str, family_id: &str, sealed: &[u8]) -> Option<String> {
    let key = grace_key(presented)?;
    let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(family_id.as_bytes()), &mut in_out)
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_only_with_the_presented_token() {
        let sealed = seal_successor("old-token", "fam", "new-token").unwrap();
        assert_eq!(
            open_successor("old-token", "fam", &sealed).as_deref(),
            Some("new-token")
        );
        assert_eq!(open_successor("other-token", "fam", &sealed), None);
        assert_eq!(open_successor("old-token", "other-fam", &sealed), None);
        assert_eq!(open_successor("old-token", "fam", &sealed[..5]), None);
        let again = seal_successor("old-token", "fam", "new-token").unwrap();
        assert_ne!(sealed, again, "a fresh nonce every time");
    }

    #[test]
    fn verifier_rules() {
        assert!(verifier_well_formed(&"a".repeat(43)));
        assert!(verifier_well_formed(&"A-._~9".repeat(22)[..128]));
        assert!(!verifier_well_formed(&"a".repeat(42)));
        assert!(!verifier_well_formed(&"a".repeat(129)));
        assert!(!verifier_well_formed(&format!("{}+", "a".repeat(42))));
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(verifier, &challenge[..42]));
        assert!(!pkce_matches("x", challenge));
    }
}
