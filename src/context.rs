//! [`AuthContext`]: who made a request, with which scopes, as established by a verifier.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::scope::ScopeSet;

/// How a request's credentials were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// A JWT access token checked against a key set.
    Jwt,
    /// An opaque token checked through RFC 7662 introspection.
    Introspection,
    /// A static API key.
    ApiKey,
    /// A verifier written by the application.
    Custom,
}

/// The identity and grant behind an authenticated request.
///
/// [`McpOAuthLayer`](crate::McpOAuthLayer) puts it into the request extensions once the token
/// has been verified; handlers read it with the [`Auth`](crate::Auth) extractor, and rmcp tools
/// (with the `rmcp` feature) take `Auth` as a parameter.
///
/// The raw token is never stored here, so logging an `AuthContext` leaks no credential.
///
/// Cloning is cheap (a reference count): the verified-token cache, the request extensions and
/// the handler share one context.
#[derive(Clone)]
pub struct AuthContext {
    inner: Arc<Fields>,
}

#[derive(Debug, Clone)]
struct Fields {
    subject: String,
    client_id: Option<String>,
    scopes: ScopeSet,
    audience: Vec<String>,
    issuer: Option<String>,
    expires_at: Option<u64>,
    token_id: Option<String>,
    kind: TokenKind,
    claims: Map<String, Value>,
}

impl std::fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &*self.inner;
        f.debug_struct("AuthContext")
            .field("subject", &i.subject)
            .field("client_id", &i.client_id)
            .field("scopes", &i.scopes)
            .field("audience", &i.audience)
            .field("issuer", &i.issuer)
            .field("expires_at", &i.expires_at)
            .field("token_id", &i.token_id)
            .field("kind", &i.kind)
            .field("claims", &i.claims)
            .finish()
    }
}

impl AuthContext {
    /// A context for `subject` with no scopes; fill it with the `with_*` methods. Custom
    /// [`TokenVerifier`](crate::verify::TokenVerifier)s build their result this way.
    #[must_use]
    pub fn new(subject: impl Into<String>, kind: TokenKind) -> Self {
        Self {
            inner: Arc::new(Fields {
                subject: subject.into(),
                client_id: None,
                scopes: ScopeSet::new(),
                audience: Vec::new(),
                issuer: None,
                expires_at: None,
                token_id: None,
                kind,
                claims: Map::new(),
            }),
        }
    }

    /// The fields, for the `with_*` builders (copied only when the context is shared).
    fn fields(&mut self) -> &mut Fields {
        Arc::make_mut(&mut self.inner)
    }

    /// Sets the OAuth client the token was issued to.
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.fields().client_id = Some(client_id.into());
        self
    }

    /// Sets the granted scopes.
    #[must_use]
    pub fn with_scopes(mut self, scopes: ScopeSet) -> Self {
        self.fields().scopes = scopes;
        self
    }

    /// Sets the audiences the token was issued for.
    #[must_use]
    pub fn with_audience(mut self, audience: Vec<String>) -> Self {
        self.fields().audience = audience;
        self
    }

    /// Sets the issuer that minted the token.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.fields().issuer = Some(issuer.into());
        self
    }

    /// Sets the expiry, in seconds since the Unix epoch.
    #[must_use]
    pub fn with_expires_at(mut self, exp: u64) -> Self {
        self.fields().expires_at = Some(exp);
        self
    }

    /// Sets the token identifier (`jti`), which revocation lists key on.
    #[must_use]
    pub fn with_token_id(mut self, jti: impl Into<String>) -> Self {
        self.fields().token_id = Some(jti.into());
        self
    }

    /// Sets the raw claims (JWT payload or introspection response).
    #[must_use]
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Self {
        self.fields().claims = claims;
        self
    }

    /// The subject: the user (or, for API keys, the key's owner).
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The OAuth client the token was issued to, when known.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.inner.client_id.as_deref()
    }

    /// The granted scopes, exactly as the token carries them.
    #[must_use]
    pub fn scopes(&self) -> &ScopeSet {
        &self.inner.scopes
    }

    /// The token's audiences.
    #[must_use]
    pub fn audience(&self) -> &[String] {
        &self.inner.audience
    }

    /// The issuer that minted the token, when known.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        self.inner.issuer.as_deref()
    }

    /// The expiry in seconds since the Unix epoch, when the token has one.
    #[must_use]
    pub fn expires_at(&self) -> Option<u64> {
        self.inner.expires_at
    }

    /// The token identifier (`jti`), when the token has one.
    #[must_use]
    pub fn token_id(&self) -> Option<&str> {
        self.inner.token_id.as_deref()
    }

    /// How the token was verified.
    #[must_use]
    pub fn kind(&self) -> TokenKind {
        self.inner.kind
    }

    /// Every claim of the token, for application-specific fields (`email`, `org_id`, …).
    #[must_use]
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// One claim by name.
    #[must_use]
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.inner.claims.get(name)
    }

    /// Whether the token carries `scope` exactly. To honour the configured scope hierarchy use
    /// [`Auth::has_scope`](crate::Auth::has_scope) or the [`Scoped`](crate::Scoped) extractor.
    #[must_use]
    pub fn has_exact_scope(&self, scope: &str) -> bool {
        self.inner.scopes.contains(scope)
    }

    /// Time left before expiry, `None` when the token has no expiry.
    #[must_use]
    pub fn time_left(&self) -> Option<Duration> {
        let exp = self.inner.expires_at?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Duration::from_secs(exp.saturating_sub(now)))
    }
}
