//! Token verification: the [`TokenVerifier`] trait and the verifiers that ship with the crate.
//!
//! | verifier | for | feature |
//! |---|---|---|
//! | [`JwtVerifier`] | JWT access tokens signed by keys you hold (the embedded authorization server's [`KeyRing`](crate::keys::KeyRing), or any fixed key set) | — |
//! | `RemoteJwksVerifier` | JWT access tokens from an external authorization server (Auth0, Keycloak, Okta, Entra, WorkOS, Stytch, any OIDC provider), keys fetched from its JWKS | `remote-jwks` |
//! | `IntrospectionVerifier` | opaque tokens, checked through RFC 7662 introspection | `introspection` |
//! | [`ApiKeyVerifier`] | static API keys for scripts and CLI clients | — |
//! | [`ChainVerifier`] | several of the above, tried in order | — |
//!
//! Every verifier checks what RFC 9068, RFC 8707 and the MCP specification require: the
//! signature (with an algorithm from *our* allow-list, never from the token or the key), the
//! issuer, the audience (this resource), and `exp`/`nbf` with a small leeway.
//!
//! The two verifiers that talk to an authorization server fetch through the crate's one
//! outbound HTTP client (`mcp_oauth::outbound`, with either feature): `https` only, no
//! redirects, timeouts, size caps, and an SSRF guard that refuses loopback and private
//! addresses unless the builder's `allow_loopback()` or `allow_private_networks()` says
//! otherwise.
//!
//! Successful results are cached by the layer (keyed by the SHA-256 of the token, never longer
//! than the token lives nor than [`TokenVerifier::cache_ttl`]); a cache hit still goes through
//! [`TokenVerifier::recheck`], which is where revocation lists are consulted: on every
//! request, unless [`CachedRevocations`] (opt-in) trusts a "not revoked" answer for a few
//! seconds.
//!
//! ```
//! use mcp_oauth::verify::{ApiKeyVerifier, TokenVerifier};
//! use mcp_oauth::scope::ScopeSet;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let keys = ApiKeyVerifier::new()
//!     .with_key("sk-test-0123456789abcdef", "ci-bot", ScopeSet::parse("read").unwrap());
//! let ctx = keys.verify("sk-test-0123456789abcdef").await.unwrap();
//! assert_eq!(ctx.subject(), "ci-bot");
//! assert!(keys.verify("sk-wrong").await.is_err());
//! # }
//! ```

mod api_key;
mod cache;
mod chain;
mod jwt;
mod revocation_cache;

#[cfg(feature = "introspection")]
mod introspection;
#[cfg(feature = "remote-jwks")]
mod remote_jwks;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::context::AuthContext;

pub use api_key::{ApiKeyVerifier, InvalidKeyHash};
pub use cache::TokenCache;
pub use chain::ChainVerifier;
pub(crate) use jwt::check_leeway;
pub use jwt::{JwtVerifier, JwtVerifierBuilder, MemoryRevocations, RevokedTokens};
pub(crate) use revocation_cache::check_revocation_cache;
pub use revocation_cache::{CachedRevocations, MAX_REVOCATION_CACHE};

#[cfg(feature = "introspection")]
#[cfg_attr(docsrs, doc(cfg(feature = "introspection")))]
pub use introspection::{IntrospectionVerifier, IntrospectionVerifierBuilder};
#[cfg(feature = "remote-jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote-jwks")))]
pub use remote_jwks::{RemoteJwksError, RemoteJwksVerifier, RemoteJwksVerifierBuilder};

/// The largest clock leeway a verifier built by this crate accepts for `exp`/`nbf` (5
/// minutes): [`JwtVerifierBuilder::build`] and
/// [`McpOAuthConfigBuilder::build`](crate::McpOAuthConfigBuilder::build) refuse more. A
/// revoked access token is remembered until its `exp` plus this much
/// ([`REVOCATION_HORIZON_SLACK`](crate::store::REVOCATION_HORIZON_SLACK)), so no verifier's
/// leeway can outlast its revocation.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Why a token was refused.
///
/// [`description`](Self::description) is what the client sees in `error_description`: it
/// names the class of failure and never echoes the token, a key or a claim value.
///
/// `Display` (for logs) says the same in lower case; for
/// [`Unavailable`](Self::Unavailable) it adds the context and the whole cause chain, and
/// [`source`](std::error::Error::source) returns the underlying error itself. Equality
/// compares the variant and its fields but not the source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a token this verifier understands (not a JWT, bad base64, bad JSON).
    Malformed,
    /// The token's algorithm is not on the allow-list (this includes `alg: none`).
    DisallowedAlgorithm,
    /// No key with the token's `kid` (after any refresh the verifier allows).
    UnknownKey,
    /// The signature does not verify.
    InvalidSignature,
    /// `typ` is not what the profile requires (RFC 9068: `at+jwt`).
    WrongType,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// `aud` does not name this resource (RFC 8707).
    WrongAudience,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// A claim the profile requires is absent or has the wrong type.
    MissingClaim(&'static str),
    /// The token was revoked.
    Revoked,
    /// The authorization server reports the token inactive (introspection).
    Inactive,
    /// No verifier recognised the token (unknown API key, unknown opaque token).
    Unknown,
    /// Verification could not be completed right now (key set or introspection endpoint
    /// unreachable and nothing cached). Answered with `503`, not `401`, so clients do not
    /// throw away a token that may be fine.
    ///
    /// Build it with [`unavailable`](Self::unavailable) or
    /// [`unavailable_with`](Self::unavailable_with).
    Unavailable {
        /// What could not be reached or used, e.g. `the authorization server's JWKS is
        /// unavailable`. Never token material or a secret.
        context: String,
        /// The failure behind it (an outbound HTTP error, a store error), when there is one.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Malformed => "malformed token",
            Self::DisallowedAlgorithm => "algorithm not allowed",
            Self::UnknownKey => "unknown signing key",
            Self::InvalidSignature => "invalid signature",
            Self::WrongType => "wrong token type",
            Self::WrongIssuer => "wrong issuer",
            Self::WrongAudience => "wrong audience",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::MissingClaim(claim) => return write!(f, "missing or invalid claim `{claim}`"),
            Self::Revoked => "token revoked",
            Self::Inactive => "token inactive",
            Self::Unknown => "unknown token",
            Self::Unavailable { context, source } => {
                write!(f, "verification unavailable: {context}")?;
                // The whole chain: outbound errors keep the OS's reason in their source. A
                // level whose text already ends with its source's (a `StoreError`) is not
                // repeated.
                let mut next = source
                    .as_deref()
                    .map(|e| e as &(dyn std::error::Error + 'static));
                let mut previous = String::new();
                while let Some(e) = next {
                    let text = e.to_string();
                    if !previous.ends_with(&text) {
                        write!(f, ": {text}")?;
                    }
                    previous = text;
                    next = e.source();
                }
                return Ok(());
            }
        };
        f.write_str(text)
    }
}

impl std::error::Error for VerifyError {
    /// For [`Unavailable`](VerifyError::Unavailable), the underlying error itself (not the
    /// `Arc` around it), so callers can downcast it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl PartialEq for VerifyError {
    /// The same variant with the same fields; a source is not compared.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::MissingClaim(a), Self::MissingClaim(b)) => a == b,
            (Self::Unavailable { context: a, .. }, Self::Unavailable { context: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for VerifyError {}

impl VerifyError {
    /// [`Unavailable`](Self::Unavailable) without an underlying error.
    #[must_use]
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    /// [`Unavailable`](Self::Unavailable) caused by `error`, which is kept as the source.
    /// `context` must not hold token material or a secret.
    #[must_use]
    pub fn unavailable_with(
        context: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(Arc::new(error)),
        }
    }

    /// The `error_description` sent to the client. Safe to show: it never holds token
    /// material.
    #[must_use]
    pub fn description(&self) -> &'static str {
        match self {
            Self::Malformed => "The access token is malformed",
            Self::DisallowedAlgorithm => "The access token uses an algorithm that is not accepted",
            Self::UnknownKey | Self::InvalidSignature => "The access token signature is invalid",
            Self::WrongType => "The token is not an access token",
            Self::WrongIssuer => "The access token was issued by an untrusted issuer",
            Self::WrongAudience => "The access token was not issued for this resource",
            Self::Expired => "The access token expired",
            Self::NotYetValid => "The access token is not valid yet",
            Self::MissingClaim(_) => "The access token lacks a required claim",
            Self::Revoked => "The access token was revoked",
            Self::Inactive | Self::Unknown => "The access token is invalid",
            Self::Unavailable { .. } => "The access token cannot be verified right now",
        }
    }

    /// Whether this error means "not my kind of token", so a [`ChainVerifier`] should try the
    /// next verifier and prefer a later, more specific error.
    #[must_use]
    pub fn is_not_mine(&self) -> bool {
        matches!(self, Self::Malformed | Self::Unknown)
    }
}

/// Turns a bearer token into an [`AuthContext`], or says why it cannot.
///
/// Implement it to plug in your own token format; the crate's verifiers cover JWTs (local
/// keys or a remote JWKS), RFC 7662 introspection and static API keys.
///
/// ```
/// use async_trait::async_trait;
/// use mcp_oauth::{AuthContext, TokenKind};
/// use mcp_oauth::verify::{TokenVerifier, VerifyError};
///
/// struct Fixed;
///
/// #[async_trait]
/// impl TokenVerifier for Fixed {
///     async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
///         if token == "let-me-in" {
///             Ok(AuthContext::new("alice", TokenKind::Custom))
///         } else {
///             Err(VerifyError::Unknown)
///         }
///     }
/// }
/// ```
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `TokenVerifier`",
    note = "implement `mcp_oauth::verify::TokenVerifier`, or use `JwtVerifier`, `RemoteJwksVerifier`, `IntrospectionVerifier` or `ApiKeyVerifier`"
)]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` completely: signature or lookup, issuer, audience, expiry.
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError>;

    /// Called when the layer serves a token from its cache. Return an error to refuse a
    /// token that has since been revoked. The default accepts.
    async fn recheck(&self, _ctx: &AuthContext) -> Result<(), VerifyError> {
        Ok(())
    }

    /// How long the layer may reuse a successful verification (it never outlives `exp`
    /// either). `Duration::ZERO` turns caching off for this verifier.
    fn cache_ttl(&self) -> Duration {
        Duration::from_secs(300)
    }
}

#[async_trait]
impl<T: TokenVerifier + ?Sized> TokenVerifier for std::sync::Arc<T> {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        (**self).verify(token).await
    }
    async fn recheck(&self, ctx: &AuthContext) -> Result<(), VerifyError> {
        (**self).recheck(ctx).await
    }
    fn cache_ttl(&self) -> Duration {
        (**self).cache_ttl()
    }
}

#[async_trait]
impl<T: TokenVerifier + ?Sized> TokenVerifier for Box<T> {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        (**self).verify(token).await
    }
    async fn recheck(&self, ctx: &AuthContext) -> Result<(), VerifyError> {
        (**self).recheck(ctx).await
    }
    fn cache_ttl(&self) -> Duration {
        (**self).cache_ttl()
    }
}

#[cfg(test)]
mod tests {
    use super::VerifyError;
    use std::error::Error as _;

    /// `Unavailable` keeps its cause as the source (downcastable), shows the whole chain in
    /// `Display`, and still tells the client only the generic description.
    #[test]
    fn unavailable_keeps_the_cause() {
        let store = crate::store::StoreError::backend(
            "Redis",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        );
        let err = VerifyError::unavailable_with("revocation list", store);
        assert_eq!(
            err.to_string(),
            "verification unavailable: revocation list: store unavailable: Redis: refused"
        );
        let source = err.source().expect("the cause is kept");
        let store = source
            .downcast_ref::<crate::store::StoreError>()
            .expect("the store error itself");
        assert!(
            store
                .source()
                .unwrap()
                .downcast_ref::<std::io::Error>()
                .is_some()
        );
        assert_eq!(
            err.description(),
            "The access token cannot be verified right now"
        );
        assert!(VerifyError::unavailable("down").source().is_none());
    }

    /// Equality compares variant and fields, not the source.
    #[test]
    fn equality_ignores_the_source() {
        let io = || std::io::Error::other("x");
        assert_eq!(
            VerifyError::unavailable_with("jwks", io()),
            VerifyError::unavailable("jwks")
        );
        assert_ne!(
            VerifyError::unavailable("jwks"),
            VerifyError::unavailable("introspection")
        );
        assert_ne!(
            VerifyError::MissingClaim("sub"),
            VerifyError::MissingClaim("exp")
        );
        assert_eq!(VerifyError::Expired, VerifyError::Expired);
        assert_ne!(VerifyError::Expired, VerifyError::Revoked);
        assert_eq!(
            VerifyError::MissingClaim("sub").to_string(),
            "missing or invalid claim `sub`"
        );
    }
}
