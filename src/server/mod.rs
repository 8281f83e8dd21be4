//! The embedded authorization server: [`AuthorizationServer::mount`] turns an MCP server
//! into a complete, spec-exact OAuth 2.1 authorization server and protected resource in one
//! call; serve the app with [`mcp_oauth::serve`](crate::serve).
//!
//! It serves, relative to the issuer:
//!
//! | endpoint | what |
//! |---|---|
//! | `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration` (root, path-inserted and path-appended forms) | RFC 8414 / OIDC discovery |
//! | `/.well-known/oauth-protected-resource[/path]` | RFC 9728 metadata of every resource |
//! | `/register` | RFC 7591 dynamic client registration |
//! | `/authorize` | authorization code + PKCE S256, login and consent pages |
//! | `/token` | `authorization_code` and `refresh_token` grants; client authentication `none`, `client_secret_basic`, `client_secret_post`, and `private_key_jwt` (feature `private-key-jwt`, see `client_jwks`) |
//! | `/revoke` | RFC 7009 revocation |
//! | `/introspect` | RFC 7662 introspection (only the configured [`introspection_clients`](AuthorizationServerBuilder::introspection_clients)) |
//! | `/jwks.json` | the signing keys |
//! | `/health` | readiness (store, signing keys) and the `oauth_compliant` flag ([`health`]) |
//!
//! ```no_run
//! use mcp_oauth::McpOAuthConfig;
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::AuthorizationServer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
//!     .build()
//!     .await?;
//! let cfg = McpOAuthConfig::builder()
//!     .resource("http://127.0.0.1:8000/mcp")
//!     .scope("read", "Read your data")
//!     .authorization_server(&server)
//!     .build()?;
//! # let mcp = axum::routing::any(|| async { "mcp" });
//! let app = server.mount(&cfg, mcp)?; // mcp: e.g. rmcp's StreamableHttpService
//! // Inside the Tokio runtime that serves the app: sweeps expired state until dropped.
//! let _upkeep = server.start_upkeep();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! mcp_oauth::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Composing by hand, [`oauth_router`]`(&cfg, &server)` is every endpoint above, to merge
//! beside the MCP endpoint behind [`McpOAuthLayer`](crate::McpOAuthLayer), in either order:
//!
//! ```
//! use axum::Router;
//! use mcp_oauth::{McpOAuthConfig, McpOAuthLayer, oauth_router};
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::AuthorizationServer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     .build()
//!     .await
//!     .unwrap();
//! let cfg = McpOAuthConfig::builder()
//!     .resource("http://127.0.0.1:8000/mcp")
//!     .scope("read", "Read your data")
//!     .authorization_server(&server)
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/mcp", axum::routing::post(|| async { "mcp" }))
//!     .layer(McpOAuthLayer::new(&cfg))
//!     .merge(oauth_router(&cfg, &server));
//! // Inside the Tokio runtime that serves the app: sweeps expired state until dropped.
//! let upkeep = server.start_upkeep();
//! assert!(upkeep.is_running());
//! # }
//! ```
//!
//! Building the router starts nothing in the background: call
//! [`AuthorizationServer::start_upkeep`] once, inside the runtime, and keep the handle for as
//! long as the server runs (see [`retention`]).

#[cfg(feature = "client-metadata")]
#[cfg_attr(docsrs, doc(cfg(feature = "client-metadata")))]
pub mod client_metadata;
pub mod pages;
pub mod retention;

mod authorize;
mod builder;
mod client_addr;
pub(crate) mod client_auth;
#[cfg(feature = "private-key-jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
pub mod client_jwks;
mod discovery;
pub mod health;
mod introspect;
mod jwks;
mod login_throttle;
mod rate_limit;
pub(crate) mod register;
mod revoke;
mod router;
mod static_client;
mod token;
#[cfg(feature = "upstream-oidc")]
mod upstream_tokens;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

pub use builder::{
    AuthorizationServerBuilder, DEFAULT_REGISTER_BURST, DEFAULT_REGISTER_PER_MINUTE,
};
#[cfg(feature = "client-metadata")]
pub use client_metadata::ClientMetadataPolicy;
pub use rate_limit::RateLimit;
pub use retention::{DEFAULT_UNUSED_CLIENT_AFTER, Retention, SweepReport, UpkeepHandle};
pub use router::oauth_router;
pub use static_client::StaticClient;

use crate::authn::{ScopePolicy, UserAuthenticator};
use crate::config::McpOAuthConfig;
use crate::issuer::{JwtIssuer, TokenIssuer};
use crate::keys::KeyRing;
use crate::store::{Client, ClientStore, GrantStore};
use crate::verify::{RevokedTokens, VerifyError};

pub(crate) use crate::flows::Lifetimes;

/// Per-endpoint rate limits, keyed on the client address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) register: RateLimit,
    pub(crate) token: RateLimit,
    pub(crate) login: RateLimit,
    /// `/authorize` and its login and consent forms, per address.
    pub(crate) authorize: RateLimit,
    /// Failed sign-ins per (account, client address).
    pub(crate) login_account: RateLimit,
    /// Failed sign-ins per account, all addresses together.
    pub(crate) login_account_total: RateLimit,
}

pub(crate) struct ServerInner {
    pub(crate) clients: Arc<dyn ClientStore>,
    pub(crate) grants: Arc<dyn GrantStore>,
    pub(crate) custom_issuer: Option<Arc<dyn TokenIssuer>>,
    pub(crate) authenticator: Arc<dyn UserAuthenticator>,
    pub(crate) scope_policy: Option<Arc<dyn ScopePolicy>>,
    pub(crate) pages: Arc<dyn pages::Pages>,
    pub(crate) key_ring: KeyRing,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) limits: Limits,
    pub(crate) static_clients: Arc<HashMap<String, Client>>,
    /// The configured clients allowed to call `/introspect` (resource servers).
    pub(crate) introspection_clients: Vec<String>,
    pub(crate) dynamic_registration: bool,
    pub(crate) remember_consent: bool,
    pub(crate) trusted_proxies: Vec<IpAddr>,
    pub(crate) stats_endpoint: bool,
    pub(crate) limiter: rate_limit::Limiter,
    pub(crate) login_accounts: login_throttle::AccountThrottle,
    /// Custom redirect URI schemes allowed besides reverse-domain ones (lower case).
    pub(crate) redirect_schemes: Vec<String>,
    /// Whether a dynamically registered client's `scope` caps what it is granted.
    pub(crate) registered_scope_is_ceiling: bool,
    pub(crate) upkeep: retention::Upkeep,
    /// Client ID metadata documents, unless switched off.
    #[cfg(feature = "client-metadata")]
    pub(crate) client_metadata: Option<Arc<crate::flows::client_metadata::Resolver>>,
    /// Fetches `private_key_jwt` clients' `jwks_uri` (`None` when its HTTP client could not
    /// be built: such clients then get `503`).
    #[cfg(feature = "private-key-jwt")]
    pub(crate) client_jwks: Option<Arc<client_jwks::ClientJwksFetcher>>,
}

/// The embedded authorization server's settings and collaborators. Build one with
/// [`AuthorizationServer::builder`], hand it (or a reference) to
/// [`McpOAuthConfigBuilder::authorization_server`](crate::McpOAuthConfigBuilder::authorization_server)
/// so the layer verifies its tokens, serve it with [`mount`](Self::mount)`(&cfg, mcp)` (or
/// [`oauth_router`]`(&cfg, &server)` composed by hand), and start its background upkeep with
/// [`start_upkeep`](Self::start_upkeep).
#[derive(Clone)]
pub struct AuthorizationServer {
    pub(crate) inner: Arc<ServerInner>,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("lifetimes", &self.inner.lifetimes)
            .field(
                "static_clients",
                &self.inner.static_clients.keys().collect::<Vec<_>>(),
            )
            .field("dynamic_registration", &self.inner.dynamic_registration)
            .finish_non_exhaustive()
    }
}

impl AuthorizationServer {
    /// Starts a builder with safe defaults: in-memory store, a generated ES256 key (kept in
    /// the store instead when it is a durable one), codes
    /// living 60 s, access tokens 1 h, refresh tokens 30 days with a 30 s rotation grace,
    /// dynamic registration on, client ID metadata documents on (feature `client-metadata`;
    /// see `server::client_metadata`).
    pub fn builder() -> AuthorizationServerBuilder {
        AuthorizationServerBuilder::default()
    }

    /// The key ring tokens are signed with.
    #[must_use]
    pub fn key_ring(&self) -> &KeyRing {
        &self.inner.key_ring
    }

    /// Generates a new signing key and makes it current; tokens signed with the old key
    /// keep verifying until they expire.
    ///
    /// With a ring kept in a store (the default on a durable store, or
    /// [`KeyRing::from_store`]) this is a compare-and-swap in the store: every instance signs with the new key after its next reload (30 s by
    /// default) and verifies it at once, and of instances rotating at the same moment one
    /// wins ([`RotationOutcome::Superseded`](crate::keys::RotationOutcome::Superseded) for
    /// the others). Otherwise it rotates this process's ring.
    ///
    /// ```
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::keys::KeyRing;
    /// use mcp_oauth::server::AuthorizationServer;
    /// use mcp_oauth::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // In production `.store(PostgresStore or RedisStore)` alone: the ring is then kept in
    /// // it, and every instance sees the rotation.
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .store(MemoryStore::new())
    ///     .key_ring(KeyRing::from_store(MemoryStore::new()).open().await?)
    ///     .build()
    ///     .await?;
    /// let before = server.key_ring().current().kid().to_owned();
    /// let outcome = server.rotate_signing_key().await?;
    /// assert_ne!(outcome.kid(), before);
    /// assert!(server.key_ring().find(&before).is_some(), "the old key still verifies");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`KeyError::Store`](crate::keys::KeyError::Store) when the key store fails;
    /// [`KeyError::Generation`](crate::keys::KeyError::Generation) when no key could be
    /// generated.
    pub async fn rotate_signing_key(
        &self,
    ) -> Result<crate::keys::RotationOutcome, crate::keys::KeyError> {
        self.inner.key_ring.rotate_fresh().await
    }

    /// The grant store.
    #[must_use]
    pub fn grant_store(&self) -> &Arc<dyn GrantStore> {
        &self.inner.grants
    }

    /// The client store.
    #[must_use]
    pub fn client_store(&self) -> &Arc<dyn ClientStore> {
        &self.inner.clients
    }

    /// A revocation list backed by the grant store, for the layer's local verifier.
    #[must_use]
    pub fn revocations(&self) -> Arc<dyn RevokedTokens> {
        Arc::new(StoreRevocations(self.inner.grants.clone()))
    }
}

impl crate::config::LocalAuthorizationServer for AuthorizationServer {
    fn signing_keys(&self) -> KeyRing {
        self.inner.key_ring.clone()
    }

    fn revoked_tokens(&self) -> Arc<dyn RevokedTokens> {
        self.revocations()
    }

    fn loopback_issuer_only(&self) -> bool {
        self.inner.authenticator.loopback_issuer_only()
    }

    fn serves_registration(&self) -> bool {
        self.inner.dynamic_registration
    }

    fn serves_stats(&self) -> bool {
        self.inner.stats_endpoint
    }

    #[cfg(feature = "upstream-oidc")]
    fn serves_upstream_login(&self) -> bool {
        self.inner.authenticator.upstream().is_some()
    }
}

/// Adapts the grant store to the layer's [`RevokedTokens`] hook.
struct StoreRevocations(Arc<dyn GrantStore>);

#[async_trait]
impl RevokedTokens for StoreRevocations {
    async fn is_revoked(&self, jti: &str) -> Result<bool, VerifyError> {
        self.0
            .is_token_revoked(jti, crate::util::now())
            .await
            .map_err(|e| VerifyError::unavailable_with("revocation list", e))
    }

    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), VerifyError> {
        self.0
            .revoke_token(
                jti,
                expires_at.saturating_add(crate::store::REVOCATION_HORIZON_SLACK),
            )
            .await
            .map_err(|e| VerifyError::unavailable_with("revocation list", e))
    }
}

/// Everything a handler needs: the shared configuration and the server.
#[derive(Clone)]
pub(crate) struct AsContext {
    pub(crate) cfg: McpOAuthConfig,
    pub(crate) server: Arc<ServerInner>,
    /// The token issuer bound to the configured issuer string.
    pub(crate) issuer: Arc<dyn TokenIssuer>,
    /// What the socket-free flows read (see [`crate::flows`]).
    pub(crate) env: crate::flows::Env,
    /// The health endpoint's compliance report (the mounted app, the cached doctor run).
    pub(crate) compliance: Arc<health::Compliance>,
}

impl AsContext {
    /// The context for a configuration that holds an authorization server.
    pub(crate) fn new(cfg: McpOAuthConfig, server: &AuthorizationServer) -> Self {
        let issuer = server.inner.custom_issuer.clone().unwrap_or_else(|| {
            Arc::new(JwtIssuer::new(cfg.issuer(), server.inner.key_ring.clone()))
        });
        let env = crate::flows::Env {
            cfg: cfg.clone(),
            clients: server.inner.clients.clone(),
            grants: server.inner.grants.clone(),
            static_clients: server.inner.static_clients.clone(),
            issuer: issuer.clone(),
            clock: Arc::new(crate::flows::SystemClock),
            random: Arc::new(crate::flows::OsRandom),
            lifetimes: server.inner.lifetimes,
            introspection_clients: server.inner.introspection_clients.clone().into(),
            authenticator: server.inner.authenticator.clone(),
            scope_policy: server.inner.scope_policy.clone(),
            remember_consent: server.inner.remember_consent,
            redirect_schemes: server.inner.redirect_schemes.clone().into(),
            registered_scope_is_ceiling: server.inner.registered_scope_is_ceiling,
            #[cfg(feature = "client-metadata")]
            client_metadata: server.inner.client_metadata.clone(),
            unused_client_after: server.inner.upkeep.unused_after(),
        };
        Self {
            cfg,
            server: server.inner.clone(),
            issuer,
            env,
            compliance: Arc::default(),
        }
    }

    /// The absolute URL of an endpoint (`Token` → `"{issuer}/token"`).
    pub(crate) fn endpoint(&self, endpoint: crate::paths::Endpoint) -> String {
        endpoint.url(self.cfg.issuer())
    }

    /// The router path of an endpoint (the issuer's path + the endpoint's; see
    /// [`crate::paths`], which the layer reads too).
    pub(crate) fn route(&self, endpoint: crate::paths::Endpoint) -> String {
        endpoint.route(self.cfg.issuer())
    }

    /// Whether cookies must carry `Secure` and the `__Host-` prefix (an https issuer).
    pub(crate) fn secure_cookies(&self) -> bool {
        self.cfg.issuer().starts_with("https://")
    }
}
