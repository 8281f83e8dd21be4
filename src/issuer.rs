//! [`TokenIssuer`]: how the embedded authorization server mints access tokens.
//!
//! The default, [`JwtIssuer`], mints RFC 9068 JWT access tokens (`typ: at+jwt`; `iss`, `sub`,
//! `aud`, `client_id`, `scope`, `exp`, `iat`, `auth_time`, `jti`) signed with the
//! [`KeyRing`]'s current key (ES256 by default). The `jti` is `"{family_id}.{random}"`, so
//! revoking a grant's family revokes every access token it issued.
//!
//! ```
//! use mcp_oauth::issuer::{AccessTokenRequest, JwtIssuer, TokenIssuer};
//! use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
//! use mcp_oauth::verify::{JwtVerifier, TokenVerifier};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
//! let issuer = JwtIssuer::new("https://auth.example.com", ring.clone());
//! let scope = "read".parse().unwrap();
//! let claims = serde_json::Map::new();
//! let token = issuer.issue(&AccessTokenRequest {
//!     subject: "alice", client_id: "c1", scope: &scope, audience: "https://mcp.example.com/mcp",
//!     family_id: "fam1", auth_time: 0, claims: &claims, lifetime: std::time::Duration::from_secs(3600),
//! }).await.unwrap();
//! let verifier = JwtVerifier::builder(ring).issuer("https://auth.example.com")
//!     .audience("https://mcp.example.com/mcp").build().unwrap();
//! let ctx = verifier.verify(&token.token).await.unwrap();
//! assert_eq!(ctx.subject(), "alice");
//! assert!(ctx.token_id().unwrap().starts_with("fam1."));
//! # }
//! ```

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value, json};

use crate::keys::KeyRing;
use crate::scope::ScopeSet;

/// What to mint.
#[derive(Debug, Clone)]
pub struct AccessTokenRequest<'a> {
    /// The user.
    pub subject: &'a str,
    /// The client.
    pub client_id: &'a str,
    /// Granted scopes.
    pub scope: &'a ScopeSet,
    /// The resource the token is for (`aud`).
    pub audience: &'a str,
    /// The grant family (prefix of the `jti`).
    pub family_id: &'a str,
    /// When the user authenticated.
    pub auth_time: u64,
    /// Extra claims about the user (standard claims are never overwritten by these).
    pub claims: &'a Map<String, Value>,
    /// How long the token lives.
    pub lifetime: Duration,
}

/// A minted access token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The token string (secret).
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.jti)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Minting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The signing key failed.
    #[error("token issuing failed: {0}")]
    Signing(#[from] crate::keys::KeyError),
    /// Another issuer's own failure (build it with [`IssueError::other`]).
    #[error("token issuing failed: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IssueError {
    /// A failure of a custom [`TokenIssuer`], with its cause.
    pub fn other(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(cause.into())
    }
}

/// Mints access tokens. Implement it for another format; the layer must then be given a
/// verifier for that format too.
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `TokenIssuer`",
    note = "implement `mcp_oauth::issuer::TokenIssuer`, or use `JwtIssuer`"
)]
pub trait TokenIssuer: Send + Sync + 'static {
    /// Mints one access token.
    async fn issue(&self, request: &AccessTokenRequest<'_>) -> Result<IssuedToken, IssueError>;

    /// The public keys to publish at `jwks_uri`, if the tokens are signed.
    fn jwks(&self) -> Option<JwkSet> {
        None
    }
}

/// RFC 9068 JWT access tokens signed by a [`KeyRing`].
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    issuer: String,
    ring: KeyRing,
}

impl JwtIssuer {
    /// Tokens with `iss` = `issuer`, signed by `ring`.
    #[must_use]
    pub fn new(issuer: impl Into<String>, ring: KeyRing) -> Self {
        Self {
            issuer: issuer.into(),
            ring,
        }
    }

    /// The key ring.
    #[must_use]
    pub fn key_ring(&self) -> &KeyRing {
        &self.ring
    }
}

#[async_trait]
impl TokenIssuer for JwtIssuer {
    async fn issue(&self, r: &AccessTokenRequest<'_>) -> Result<IssuedToken, IssueError> {
        let now = crate::util::now();
        let exp = now + r.lifetime.as_secs();
        let jti = format!("{}.{}", r.family_id, crate::util::random_token(16));
        let mut claims = r.claims.clone();
        let standard = json!({
            "iss": self.issuer,
            "sub": r.subject,
            "aud": r.audience,
            "client_id": r.client_id,
            "scope": r.scope.to_string(),
            "iat": now,
            "exp": exp,
            "auth_time": r.auth_time,
            "jti": jti,
        });
        if let Value::Object(std) = standard {
            claims.extend(std);
        }
        let token = self
            .ring
            .sign_fresh("at+jwt", &claims)
            .await
            .map_err(IssueError::Signing)?;
        Ok(IssuedToken {
            token,
            jti,
            expires_in: r.lifetime.as_secs(),
            expires_at: exp,
        })
    }

    fn jwks(&self) -> Option<JwkSet> {
        Some(self.ring.jwks())
    }
}
