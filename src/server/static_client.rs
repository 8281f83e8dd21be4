//! [`StaticClient`]: a client the operator configures instead of one registered dynamically.

#[cfg(feature = "private-key-jwt")]
use crate::config::{ClientProblem, ConfigError};
use crate::store::{ApplicationType, Client, ClientSource, SecretHash, TokenEndpointAuthMethod};

/// A client configured by the operator instead of registered dynamically.
///
/// ```
/// use mcp_oauth::server::StaticClient;
/// let inspector = StaticClient::public("inspector", ["http://localhost:6274/oauth/callback"]);
/// let backend = StaticClient::confidential("backend", "s3cr3t-0123456789abcdef", ["https://app.example.com/cb"]);
/// # let _ = (inspector, backend);
/// ```
#[derive(Debug, Clone)]
pub struct StaticClient(pub(crate) Client);

impl StaticClient {
    fn base(id: &str, redirect_uris: Vec<String>) -> Client {
        Client {
            client_id: id.to_owned(),
            secret_hash: None,
            secret_expires_at: 0,
            client_name: None,
            redirect_uris,
            grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            application_type: ApplicationType::Web,
            scope: None,
            extra: serde_json::Map::new(),
            issued_at: 0,
            last_used_at: 0,
            source: ClientSource::Static,
        }
    }

    /// A public client (PKCE only, no secret).
    pub fn public<I, S>(client_id: impl AsRef<str>, redirect_uris: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(Self::base(
            client_id.as_ref(),
            redirect_uris.into_iter().map(Into::into).collect(),
        ))
    }

    /// A confidential client authenticating with `secret` (basic or post). Only the
    /// secret's hash is kept.
    pub fn confidential<I, S>(client_id: impl AsRef<str>, secret: &str, redirect_uris: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = Self::base(
            client_id.as_ref(),
            redirect_uris.into_iter().map(Into::into).collect(),
        );
        c.secret_hash = Some(SecretHash::of(secret));
        c.token_endpoint_auth_method = TokenEndpointAuthMethod::ClientSecretBasic;
        Self(c)
    }

    /// A client authenticating with `private_key_jwt` (RFC 7523): it signs an assertion with
    /// a private key whose public half is in `jwks` (a JWK Set: `{"keys": [...]}`). See
    /// [`client_jwks`](crate::server::client_jwks) for an example.
    ///
    /// # Errors
    /// [`ConfigError::InvalidClient`] with [`ClientProblem::Jwks`] when `jwks` is not a JWK
    /// Set of at most 10 public keys with at least one ES256, EdDSA, RS256 or PS256 signing
    /// key, or holds a private key member.
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn private_key_jwt<I, S>(
        client_id: impl AsRef<str>,
        jwks: &serde_json::Value,
        redirect_uris: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let id = client_id.as_ref();
        crate::flows::client_assertion::parse_jwks(jwks).map_err(|reason| {
            ConfigError::InvalidClient {
                client_id: id.to_owned(),
                problem: ClientProblem::Jwks { reason },
            }
        })?;
        Ok(Self::key_client(id, "jwks", jwks.clone(), redirect_uris))
    }

    /// A client authenticating with `private_key_jwt` whose public keys are published at
    /// `jwks_uri` (fetched SSRF-safely and cached; see
    /// [`client_jwks`](crate::server::client_jwks)).
    ///
    /// # Errors
    /// [`ConfigError::InvalidClient`] with [`ClientProblem::Jwks`] when `jwks_uri` is not an
    /// `https` URL (or `http` on a loopback host) without user information or fragment.
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn private_key_jwt_uri<I, S>(
        client_id: impl AsRef<str>,
        jwks_uri: &str,
        redirect_uris: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let id = client_id.as_ref();
        crate::flows::register::check_jwks_uri(jwks_uri).map_err(|reason| {
            ConfigError::InvalidClient {
                client_id: id.to_owned(),
                problem: ClientProblem::Jwks { reason },
            }
        })?;
        Ok(Self::key_client(
            id,
            "jwks_uri",
            serde_json::Value::String(jwks_uri.to_owned()),
            redirect_uris,
        ))
    }

    #[cfg(feature = "private-key-jwt")]
    fn key_client<I, S>(id: &str, field: &str, value: serde_json::Value, redirect_uris: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = Self::base(id, redirect_uris.into_iter().map(Into::into).collect());
        c.token_endpoint_auth_method = TokenEndpointAuthMethod::PrivateKeyJwt;
        c.extra.insert(field.to_owned(), value);
        Self(c)
    }

    /// Sets the name shown on the consent page.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.0.client_name = Some(name.into());
        self
    }

    /// Sets the client's scope ceiling: it is never granted a scope outside `scope`, whatever
    /// it requests (like the `scope` a dynamically registered client gives). An empty set
    /// means no scope at all (a request for any scope is `invalid_scope`), never "no
    /// ceiling": leave this unset for that.
    #[must_use]
    pub fn with_scope(mut self, scope: crate::scope::ScopeSet) -> Self {
        // Fail closed: an empty ceiling grants nothing (issue 8 item 4).
        self.0.scope = Some(scope);
        self
    }

    /// The client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }
}
