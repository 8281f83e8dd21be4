//! [`AuthorizationServer::upstream_tokens`]: the host reads the upstream tokens an
//! [`UpstreamOidc`](crate::authn::UpstreamOidc) login kept, for its own calls to the
//! provider (feature `upstream-oidc`).

use super::AuthorizationServer;
use crate::authn::{UpstreamTokens, UpstreamTokensError};

impl AuthorizationServer {
    /// The upstream tokens kept for `subject` (the `sub` of our access token, e.g.
    /// [`Auth::subject`](crate::Auth) in a tool) by an [`UpstreamOidc`](crate::authn::UpstreamOidc)
    /// authenticator built with
    /// [`keep_upstream_tokens`](crate::authn::UpstreamOidcBuilder::keep_upstream_tokens),
    /// decrypted from this server's grant store; `None` when this user has none kept. An
    /// expired access token is refreshed at the provider first when a refresh token was
    /// issued (see [`UpstreamOidc::upstream_tokens`](crate::authn::UpstreamOidc::upstream_tokens)).
    ///
    /// These are the provider's tokens for **this server's** calls (the host acting as the
    /// provider's OAuth client): never return them to an MCP client, never log them.
    ///
    /// ```no_run
    /// # async fn run(server: mcp_oauth::server::AuthorizationServer, subject: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(tokens) = server.upstream_tokens(subject).await? {
    ///     let _authorization = format!("Bearer {}", tokens.access_token);
    ///     // … call the provider's API with it.
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`UpstreamTokensError::NotKept`] when the authenticator is not an `UpstreamOidc` that
    /// keeps tokens; otherwise as [`UpstreamOidc::upstream_tokens`](crate::authn::UpstreamOidc::upstream_tokens).
    pub async fn upstream_tokens(
        &self,
        subject: &str,
    ) -> Result<Option<UpstreamTokens>, UpstreamTokensError> {
        let Some(up) = self.inner.authenticator.upstream() else {
            return Err(UpstreamTokensError::NotKept);
        };
        up.upstream_tokens(&*self.inner.grants, subject).await
    }

    /// Forgets the upstream tokens kept for `subject`; `true` when there were some.
    ///
    /// # Errors
    /// As [`upstream_tokens`](Self::upstream_tokens), without the key and refresh errors.
    pub async fn forget_upstream_tokens(&self, subject: &str) -> Result<bool, UpstreamTokensError> {
        let Some(up) = self.inner.authenticator.upstream() else {
            return Err(UpstreamTokensError::NotKept);
        };
        up.forget_upstream_tokens(&*self.inner.grants, subject)
            .await
    }
}
