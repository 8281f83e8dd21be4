//! [`McpOAuthConfig`]: the one configuration both halves of the crate share.
//!
//! The resource URL(s) and the issuer are kept as the **exact strings clients see**. They are
//! never round-tripped through a URL type, because a single added trailing slash makes
//! ChatGPT, Claude, VS Code and the SDK clients reject the metadata. The builder refuses, at
//! start-up, a resource or issuer that:
//! - ends in `/`, or has a query or a fragment;
//! - is not `https` (plain `http` is allowed only for loopback hosts, for development);
//! - is not in canonical form (upper-case scheme or host, a default port, dot segments).
//!
//! ```
//! use mcp_oauth::McpOAuthConfig;
//! use mcp_oauth::verify::ApiKeyVerifier;
//!
//! let cfg = McpOAuthConfig::builder()
//!     .resource("https://mcp.example.com/mcp")
//!     .issuer("https://auth.example.com")
//!     .scope("files:read", "Read your files")
//!     .scope("files:write", "Change your files")
//!     .scope_implies("files:write", ["files:read"])
//!     .default_scopes(["files:read"])
//!     .verifier(ApiKeyVerifier::new())
//!     .build()
//!     .unwrap();
//! assert_eq!(cfg.resource(), "https://mcp.example.com/mcp");
//!
//! let err = McpOAuthConfig::builder()
//!     .resource("https://mcp.example.com/mcp/")
//!     .issuer("https://auth.example.com")
//!     .verifier(ApiKeyVerifier::new())
//!     .build()
//!     .unwrap_err();
//! assert!(err.to_string().contains("trailing slash"));
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::keys::KeyRing;
use crate::resource::policy::AccessPolicy;
use crate::scope::{InvalidScope, Scope, ScopeHierarchy, ScopeSet};
use crate::verify::{ChainVerifier, JwtVerifier, RevokedTokens, TokenCache, TokenVerifier};

/// Default upper bound on a JSON-RPC body the layer buffers to read the method (4 MiB, the
/// same as rmcp's own limit).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A configuration could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No resource URL was given.
    #[error("no resource URL: call `.resource(\"https://host/mcp\")`")]
    MissingResource,
    /// No issuer was given.
    #[error(
        "no issuer: call `.issuer(\"https://auth.example.com\")` with the external authorization server's exact issuer string (with an embedded `.authorization_server(..)` it defaults to the resource's origin)"
    )]
    MissingIssuer,
    /// No way to verify tokens was given.
    #[error(
        "no token verifier: call `.verifier(...)` (e.g. `RemoteJwksVerifier`) or `.key_ring(...)`"
    )]
    MissingVerifier,
    /// A URL is not acceptable.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidUrl {
        /// Which setting (`resource`, `issuer`, `origin`).
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A scope is not valid RFC 6749 syntax.
    #[error(transparent)]
    InvalidScope(#[from] InvalidScope),
    /// A default or policy scope is not among the supported scopes.
    #[error("scope {scope:?} is used but not declared: add it with `.scope(name, description)`")]
    UndeclaredScope {
        /// The scope used.
        scope: String,
    },
    /// An authorization server was configured without a user authenticator.
    #[error(
        "no user authenticator: call `.authenticator(StaticUsers::new()...)` (or `HostSession`, or your own `UserAuthenticator`)"
    )]
    MissingAuthenticator,
    /// A duration is outside its allowed range.
    #[error("{field} must be between {min} and {max} seconds, got {value}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// Smallest allowed value, in seconds.
        min: u64,
        /// Largest allowed value, in seconds.
        max: u64,
        /// The value given, in seconds.
        value: u64,
    },
    /// A key could not be generated or loaded.
    #[error("signing key: {0}")]
    Key(#[from] crate::keys::KeyError),
    /// A shared key ring keeps retired keys for less time than access tokens live plus the
    /// ring's refresh interval plus a margin, so tokens would stop verifying before they
    /// expire (an instance that has not reloaded yet may sign with a key up to a refresh
    /// interval after another retired it).
    #[error(
        "retired keys are kept {} s (`retain_retired_for`), but access tokens live {} s and instances reload the ring every {} s: keep them at least {} s (access-token lifetime + refresh interval + 300 s) so no token outlives its key",
        retention.as_secs(), access_token_ttl.as_secs(), refresh_interval.as_secs(), needed.as_secs()
    )]
    KeyRetentionTooShort {
        /// How long the ring keeps retired keys.
        retention: Duration,
        /// How long access tokens live.
        access_token_ttl: Duration,
        /// How often the ring reloads from its store.
        refresh_interval: Duration,
        /// The least retention that is safe.
        needed: Duration,
    },
    /// The authorization server's store outlives the process but its signing keys would not,
    /// so every access token it issued would be refused after a restart while the grants
    /// behind them live on. Keep the keys in the store (give no key ring, on a store whose
    /// [`GrantStore::key_store`](crate::store::GrantStore::key_store) offers one), pass keys
    /// that survive a restart with `.key_ring(..)`, or accept that a restart signs everyone
    /// out with `.ephemeral_keys()`.
    #[error(
        "the store is durable but the signing keys are not: {reason}, so every access token would be refused after a restart; pass durable keys with `.key_ring(KeyRing::from_store(store).open().await?)` (or `KeyRing::new(SigningKey::from_pkcs8_pem(..)?)`), or call `.ephemeral_keys()` to accept that a restart signs everyone out"
    )]
    EphemeralKeys {
        /// Why the keys would not survive.
        reason: EphemeralKeysReason,
    },
    /// A configured client is not acceptable.
    #[error("invalid client {client_id:?}: {problem}")]
    InvalidClient {
        /// The client's id.
        client_id: String,
        /// What is wrong with it.
        problem: ClientProblem,
    },
    /// `offline_access` was declared as a resource scope.
    #[error(
        "`offline_access` is an authorization-server scope; the MCP spec says a resource SHOULD NOT advertise it"
    )]
    OfflineAccessAsResourceScope,
    /// A development-only authenticator
    /// ([`InsecureAutoApprove`](crate::authn::InsecureAutoApprove)) was configured with an
    /// issuer that is not on a loopback host.
    #[error(
        "InsecureAutoApprove gives tokens to anyone, and the issuer {issuer:?} is not on a loopback host: use a real authenticator, or call `.i_understand_this_approves_everyone()` on it"
    )]
    InsecureAuthenticator {
        /// The issuer given.
        issuer: String,
    },
    /// A resource's path is one the crate serves itself (protected-resource metadata, or an
    /// endpoint of the embedded authorization server), which the layer lets through
    /// unguarded.
    #[error(
        "resource {resource:?} sits at {path:?}, a path this crate serves itself (metadata or an authorization-server endpoint): put the MCP endpoint elsewhere, such as `/mcp`"
    )]
    ReservedPath {
        /// The resource given.
        resource: String,
        /// Its path.
        path: String,
    },
    /// A configuration was handed to the `mount` that cannot serve it.
    #[error("cannot mount this configuration: {0}")]
    Mount(MountProblem),
    /// The HTTP client for client ID metadata documents could not be set up (an extra root
    /// certificate that is not PEM, say).
    #[error("client metadata documents: {0}")]
    ClientMetadata(String),
}

/// Why a configuration cannot be mounted ([`ConfigError::Mount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountProblem {
    /// `mcp_oauth::mount` was given a configuration built with
    /// [`authorization_server`](McpOAuthConfigBuilder::authorization_server): it would serve
    /// none of that server's endpoints.
    #[error(
        "it was built with `.authorization_server(..)`, whose endpoints `mcp_oauth::mount` does not serve: mount it with `server.mount(&cfg, mcp)`"
    )]
    EmbeddedServer,
    /// `AuthorizationServer::mount` was given a configuration built without
    /// [`authorization_server`](McpOAuthConfigBuilder::authorization_server).
    #[error(
        "it was built without `.authorization_server(&server)`, so the layer would not know this server's tokens: add `.authorization_server(&server)` to the builder (or, for tokens from an external authorization server, use `mcp_oauth::mount(&cfg, mcp)`)"
    )]
    NoEmbeddedServer,
    /// `AuthorizationServer::mount` was given a configuration built with another server.
    #[error(
        "it was built with `.authorization_server(..)` of another server, whose keys this server does not sign with: build it with `.authorization_server(&server)` of the server you mount"
    )]
    OtherServer,
}

/// What is wrong with a configured client ([`ConfigError::InvalidClient`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientProblem {
    /// Client ids beginning with `https://` are reserved for client ID metadata documents.
    #[error("client ids beginning with https:// are reserved for client ID metadata documents")]
    ReservedId,
    /// A redirect URI breaks the registration policy.
    #[error("redirect URI {uri:?}: {reason}")]
    RedirectUri {
        /// The redirect URI.
        uri: String,
        /// Why it is refused.
        reason: String,
    },
    /// An introspection client must be confidential (it authenticates with a secret).
    #[error("an introspection client must be confidential (it authenticates with a secret)")]
    IntrospectionClientNotConfidential,
    /// An introspection client must be one of the configured clients.
    #[error(
        "introspection clients must be configured with `.client(StaticClient::confidential(..))`"
    )]
    IntrospectionClientNotConfigured,
    /// A `private_key_jwt` client's key set (`jwks`) or its `jwks_uri` is unusable.
    #[error("private_key_jwt keys: {reason}")]
    Jwks {
        /// What is wrong.
        reason: String,
    },
}

/// Why the signing keys would not survive a restart ([`ConfigError::EphemeralKeys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EphemeralKeysReason {
    /// No key ring was given, and the grant store offers no
    /// [`key_store`](crate::store::GrantStore::key_store) to keep the keys in.
    #[error(
        "no key ring was given and the grant store offers no key store (`GrantStore::key_store`) to keep them in"
    )]
    NoKeyStore,
    /// The key ring given lives in this process only: its current key was generated here
    /// ([`KeyRing::generate`], [`SigningKey::generate`](crate::keys::SigningKey::generate))
    /// rather than loaded from PEM or DER, or it is kept in a key store that is not
    /// durable ([`KeyStore::is_durable`](crate::store::KeyStore::is_durable), e.g. a
    /// [`MemoryStore`](crate::store::MemoryStore)).
    #[error(
        "the key ring given lives in this process only (a key from `KeyRing::generate` / `SigningKey::generate`, or a ring kept in a `MemoryStore`)"
    )]
    EphemeralKeyRing,
}

/// A named compatibility switch: behaviour the specs do not ask for but some real client or
/// identity provider needs. Each logs one warning when the configuration is built, so a
/// deployment always shows which relaxations it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compat {
    /// Accept JWT access tokens whose `typ` header is `JWT` or absent instead of RFC 9068's
    /// `at+jwt`. Keycloak, Okta and Auth0 (without its RFC 9068 profile) need it. The
    /// audience check still stops ID tokens.
    GenericJwtType,
    /// Also accept this `aud` value (an IdP that cannot put the resource URL in `aud`, such
    /// as an Auth0 API identifier). Use a value unique to this server.
    ExtraAudience(String),
    /// Accept introspection responses that carry no `aud` (many authorization servers omit
    /// it). The token is then only known to be active at the trusted issuer.
    IntrospectionWithoutAudience,
}

impl Compat {
    fn warning(&self) -> String {
        match self {
            Self::GenericJwtType => {
                "accepting JWT access tokens with typ `JWT` or none (RFC 9068 wants `at+jwt`)"
                    .to_owned()
            }
            Self::ExtraAudience(aud) => {
                format!("accepting access tokens whose audience is {aud:?} besides this resource")
            }
            Self::IntrospectionWithoutAudience => {
                "accepting introspected tokens that carry no audience".to_owned()
            }
        }
    }

    /// Logs this switch's warning (once per call; builders call it once).
    pub(crate) fn warn(&self) {
        tracing::warn!(target: "mcp_oauth::compat", switch = ?self, "compatibility switch on: {}", self.warning());
    }
}

/// What the layer takes from an embedded authorization server, and nothing more: the keys it
/// signs access tokens with, the revocation list of its grant store, and whether its
/// authenticator is only safe on a loopback issuer. `server::AuthorizationServer` implements
/// it (feature `server`); pass one (or a reference) to
/// [`McpOAuthConfigBuilder::authorization_server`]. The configuration sits below the server:
/// it never holds one, so a resource-server-only build has no server at all.
pub trait LocalAuthorizationServer {
    /// The key ring the server signs access tokens with (a cheap clone of a shared ring).
    fn signing_keys(&self) -> KeyRing;
    /// The revocation list backed by the server's grant store.
    fn revoked_tokens(&self) -> Arc<dyn RevokedTokens>;
    /// Whether the server's authenticator approves without checking anyone, so that the
    /// configuration must refuse an issuer that is not on a loopback host.
    fn loopback_issuer_only(&self) -> bool;
    /// Whether the server answers dynamic client registration at `/register` (default:
    /// no). The layer lets the crate's own endpoints through whatever the mount order, but
    /// only those the server serves: a path it leaves off stays guarded.
    fn serves_registration(&self) -> bool {
        false
    }
    /// Whether the server answers its statistics at `/oauth/stats` (default: no).
    fn serves_stats(&self) -> bool {
        false
    }
    /// Whether the server signs users in at an upstream provider, answering
    /// `/upstream/start` and `/upstream/callback` (default: no).
    fn serves_upstream_login(&self) -> bool {
        false
    }
}

impl<T: LocalAuthorizationServer + ?Sized> LocalAuthorizationServer for &T {
    fn signing_keys(&self) -> KeyRing {
        (**self).signing_keys()
    }
    fn revoked_tokens(&self) -> Arc<dyn RevokedTokens> {
        (**self).revoked_tokens()
    }
    fn loopback_issuer_only(&self) -> bool {
        (**self).loopback_issuer_only()
    }
    fn serves_registration(&self) -> bool {
        (**self).serves_registration()
    }
    fn serves_stats(&self) -> bool {
        (**self).serves_stats()
    }
    fn serves_upstream_login(&self) -> bool {
        (**self).serves_upstream_login()
    }
}

/// What a layer needs, shared behind an `Arc` by the layer, its services and the routers.
pub(crate) struct Inner {
    pub(crate) resources: Vec<String>,
    pub(crate) issuer: String,
    pub(crate) scopes: Vec<(Scope, String)>,
    pub(crate) default_scopes: ScopeSet,
    pub(crate) hierarchy: ScopeHierarchy,
    pub(crate) resource_name: Option<String>,
    pub(crate) resource_documentation: Option<String>,
    pub(crate) policy: AccessPolicy,
    pub(crate) verifier: Arc<dyn TokenVerifier>,
    pub(crate) cache: Option<TokenCache>,
    pub(crate) cache_max_ttl: Duration,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) any_origin: bool,
    /// The `Host` values the MCP service should accept (see `allowed_hosts()`).
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) trust_mcp_headers: bool,
    pub(crate) compat: Vec<Compat>,
    pub(crate) key_ring: Option<KeyRing>,
    pub(crate) leeway: Duration,
    pub(crate) challenge_style: crate::resource::ChallengeStyleRule,
    pub(crate) shape_tools_list: bool,
    pub(crate) filter_tools_list: bool,
    /// `resource_metadata` URL per resource, precomputed.
    pub(crate) metadata_urls: Vec<String>,
    /// Path of each resource, for matching requests and mounting metadata routes.
    pub(crate) resource_paths: Vec<String>,
    /// Every path the crate serves itself (see [`crate::paths::own_paths`]): the layer
    /// passes exactly these to the inner service unguarded. Sorted.
    pub(crate) own_paths: Vec<String>,
    /// The key ring of the embedded authorization server given to
    /// [`McpOAuthConfigBuilder::authorization_server`], if any: which server this
    /// configuration was built for.
    pub(crate) local_ring: Option<KeyRing>,
    /// Which principal opened each MCP session.
    pub(crate) session_bindings: Arc<dyn crate::resource::SessionBindings>,
}

/// The configuration of [`McpOAuthLayer`](crate::McpOAuthLayer) and the routers. Cheap to
/// clone (one `Arc`).
#[derive(Clone)]
pub struct McpOAuthConfig {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for McpOAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpOAuthConfig")
            .field("resources", &self.inner.resources)
            .field("issuer", &self.inner.issuer)
            .field("default_scopes", &self.inner.default_scopes.to_string())
            .field("policy", &self.inner.policy)
            .field("compat", &self.inner.compat)
            .finish_non_exhaustive()
    }
}

impl McpOAuthConfig {
    /// Starts a builder.
    pub fn builder() -> McpOAuthConfigBuilder {
        McpOAuthConfigBuilder::default()
    }

    /// The canonical resource: the first configured, used when a request names none.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.inner.resources[0]
    }

    /// Every configured resource URL.
    #[must_use]
    pub fn resources(&self) -> &[String] {
        &self.inner.resources
    }

    /// The authorization server's issuer string.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The protected-resource metadata URL of the canonical resource (the path-inserted
    /// form), as sent in `resource_metadata`.
    #[must_use]
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.metadata_urls[0]
    }

    /// Supported scopes with their descriptions, in declaration order.
    pub fn scopes(&self) -> impl Iterator<Item = (&Scope, &str)> {
        self.inner.scopes.iter().map(|(s, d)| (s, d.as_str()))
    }

    /// The scopes asked for when nothing more specific is needed.
    #[must_use]
    pub fn default_scopes(&self) -> &ScopeSet {
        &self.inner.default_scopes
    }

    /// The scope hierarchy.
    #[must_use]
    pub fn hierarchy(&self) -> &ScopeHierarchy {
        &self.inner.hierarchy
    }

    /// The access policy.
    pub fn policy(&self) -> &AccessPolicy {
        &self.inner.policy
    }

    /// The key ring, when one was configured.
    #[must_use]
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.inner.key_ring.as_ref()
    }

    /// The verifier the layer uses.
    #[must_use]
    pub fn verifier(&self) -> &Arc<dyn TokenVerifier> {
        &self.inner.verifier
    }

    /// The compatibility switches in force.
    #[must_use]
    pub fn compat(&self) -> &[Compat] {
        &self.inner.compat
    }

    /// The clock leeway verifiers built by the configuration use.
    #[must_use]
    pub fn leeway(&self) -> Duration {
        self.inner.leeway
    }

    /// The browser origins the layer lets call the MCP endpoint: each resource's origin,
    /// the MCP Inspector's (unless turned off with
    /// [`inspector_origin(false)`](McpOAuthConfigBuilder::inspector_origin)) and every
    /// [`allow_origin`](McpOAuthConfigBuilder::allow_origin), in that order of first
    /// appearance. Ignored under
    /// [`insecure_allow_any_origin`](McpOAuthConfigBuilder::insecure_allow_any_origin).
    #[must_use]
    pub fn allowed_origins(&self) -> &[String] {
        &self.inner.allowed_origins
    }

    /// The `Host` values the MCP service should accept, derived from the one public URL:
    /// the loopback names (`localhost`, `127.0.0.1`, `::1`), the host of every resource, the
    /// issuer's host when the authorization server is embedded, and every
    /// [`allow_host`](McpOAuthConfigBuilder::allow_host); lower case, without ports (any
    /// port matches).
    ///
    /// rmcp's streamable HTTP service refuses every other `Host` with `403` (its guard
    /// against DNS rebinding), and by default knows only the loopback names: a server behind
    /// a public URL needs this list, which [`rmcp_server_config`](Self::rmcp_server_config)
    /// hands it.
    ///
    /// ```
    /// # use mcp_oauth::McpOAuthConfig;
    /// # use mcp_oauth::verify::ApiKeyVerifier;
    /// let cfg = McpOAuthConfig::builder()
    ///     .resource("https://mcp.example.com/mcp")
    ///     .issuer("https://auth.example.com")
    ///     .verifier(ApiKeyVerifier::new())
    ///     .allow_host("mcp.internal:8080")
    ///     .build()?;
    /// assert_eq!(
    ///     cfg.allowed_hosts(),
    ///     ["localhost", "127.0.0.1", "::1", "mcp.example.com", "mcp.internal:8080"]
    /// );
    /// # Ok::<_, mcp_oauth::ConfigError>(())
    /// ```
    #[must_use]
    pub fn allowed_hosts(&self) -> &[String] {
        &self.inner.allowed_hosts
    }

    /// rmcp's streamable HTTP settings with [`allowed_hosts`](Self::allowed_hosts) filled
    /// in, so the server answers under its public URL (a tunnel, a reverse proxy) instead of
    /// refusing ChatGPT and Claude with `403 Host header is not allowed`. Everything else is
    /// rmcp's default; change fields on the result as you need. rmcp's own `Origin` list is
    /// left empty: the layer checks `Origin` (see
    /// [`allowed_origins`](Self::allowed_origins)) before rmcp sees the request.
    ///
    /// ```
    /// # use mcp_oauth::McpOAuthConfig;
    /// # use mcp_oauth::verify::ApiKeyVerifier;
    /// let cfg = McpOAuthConfig::builder()
    ///     .resource("https://mcp.example.com/mcp")
    ///     .issuer("https://auth.example.com")
    ///     .verifier(ApiKeyVerifier::new())
    ///     .build()?;
    /// let http = cfg.rmcp_server_config();
    /// assert!(http.allowed_hosts.contains(&"mcp.example.com".to_owned()));
    /// # Ok::<_, mcp_oauth::ConfigError>(())
    /// ```
    #[cfg(feature = "rmcp")]
    #[must_use]
    pub fn rmcp_server_config(
        &self,
    ) -> rmcp::transport::streamable_http_server::StreamableHttpServerConfig {
        rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
            .with_allowed_hosts(self.inner.allowed_hosts.iter().cloned())
    }
}

/// The MCP Inspector's page, on its fixed default port.
const INSPECTOR_ORIGINS: [&str; 2] = ["http://localhost:6274", "http://127.0.0.1:6274"];

/// The names a server on the loopback interface is reached under.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Refuses an extra host that is not a bare `host[:port]` authority.
fn check_host(value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidUrl {
        field: "allow_host",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let authority: http::uri::Authority = value
        .parse()
        .map_err(|e| bad(&format!("not a host[:port] ({e})")))?;
    let rebuilt = match authority.port_u16() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    // User info, an empty or non-numeric port: the parser accepts them, a `Host` never is.
    if rebuilt != value || authority.host().is_empty() {
        return Err(bad(
            "a host is a name or an address, with an optional port, nothing else",
        ));
    }
    Ok(())
}

impl From<&Self> for McpOAuthConfig {
    fn from(cfg: &Self) -> Self {
        cfg.clone()
    }
}

/// Builds a [`McpOAuthConfig`]; see the [module docs](self).
#[must_use]
pub struct McpOAuthConfigBuilder {
    resources: Vec<String>,
    issuer: Option<String>,
    scopes: Vec<(String, String)>,
    default_scopes: Vec<String>,
    implies: Vec<(String, Vec<String>)>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    policy: AccessPolicy,
    verifier: Option<Arc<dyn TokenVerifier>>,
    key_ring: Option<KeyRing>,
    revocation: Option<Arc<dyn RevokedTokens>>,
    /// Set by [`authorization_server`](Self::authorization_server) when the server's
    /// authenticator is only safe on a loopback issuer.
    loopback_issuer_only: bool,
    /// The key ring of the embedded authorization server, when one was given (the issuer
    /// then defaults to the canonical resource's origin, and the server's paths are its own).
    local_server: Option<KeyRing>,
    /// The endpoints that server serves (set with it).
    local_endpoints: Vec<crate::paths::Endpoint>,
    challenge_style: crate::resource::ChallengeStyleRule,
    shape_tools_list: bool,
    filter_tools_list: bool,
    cache_capacity: usize,
    cache_max_ttl: Duration,
    revocation_cache: Duration,
    allowed_origins: Vec<String>,
    any_origin: bool,
    inspector_origin: bool,
    extra_hosts: Vec<String>,
    max_body_bytes: usize,
    trust_mcp_headers: bool,
    compat: Vec<Compat>,
    leeway: Duration,
    session_bindings: Option<Arc<dyn crate::resource::SessionBindings>>,
}

impl Default for McpOAuthConfigBuilder {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            issuer: None,
            scopes: Vec::new(),
            default_scopes: Vec::new(),
            implies: Vec::new(),
            resource_name: None,
            resource_documentation: None,
            policy: AccessPolicy::default(),
            verifier: None,
            key_ring: None,
            revocation: None,
            loopback_issuer_only: false,
            local_server: None,
            local_endpoints: Vec::new(),
            challenge_style: crate::resource::ChallengeStyleRule::default(),
            shape_tools_list: true,
            filter_tools_list: false,
            cache_capacity: 10_000,
            cache_max_ttl: Duration::from_secs(60),
            revocation_cache: Duration::ZERO,
            allowed_origins: Vec::new(),
            any_origin: false,
            inspector_origin: true,
            extra_hosts: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            trust_mcp_headers: false,
            compat: Vec::new(),
            leeway: Duration::from_secs(60),
            session_bindings: None,
        }
    }
}

impl std::fmt::Debug for McpOAuthConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpOAuthConfigBuilder")
            .field("resources", &self.resources)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl McpOAuthConfigBuilder {
    /// Adds a protected resource: the MCP endpoint URL exactly as users enter it in their
    /// client (`https://mcp.example.com/mcp`). The first is the canonical one.
    pub fn resource(mut self, url: impl Into<String>) -> Self {
        self.resources.push(url.into());
        self
    }

    /// The authorization server's issuer, byte for byte as its metadata states it (and as
    /// the protected-resource metadata will list it in `authorization_servers`). With an
    /// embedded [`authorization_server`](Self::authorization_server) it defaults to the
    /// origin of the first resource (`https://mcp.example.com` for
    /// `https://mcp.example.com/mcp`); an external authorization server must be named.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Declares a supported scope with a human description (shown on consent pages).
    pub fn scope(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.scopes.push((name.into(), description.into()));
        self
    }

    /// The scopes to ask for when a request needs a token but no particular scope (the
    /// `scope` of a plain 401 challenge).
    pub fn default_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Records that `broader` satisfies each of `narrower` (transitively), as the MCP spec
    /// requires servers to honour: `.scope_implies("files:write", ["files:read"])`.
    pub fn scope_implies<I, S>(mut self, broader: impl Into<String>, narrower: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.implies.push((
            broader.into(),
            narrower.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// A human-readable name for the protected-resource metadata (`resource_name`).
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// A documentation URL for the protected-resource metadata (`resource_documentation`).
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// Which JSON-RPC methods and tools need which scopes, and which pass without a token.
    pub fn policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How tokens are verified. With [`key_ring`](Self::key_ring) too, the ring's tokens are
    /// tried first, then this verifier.
    pub fn verifier(mut self, verifier: impl TokenVerifier) -> Self {
        self.verifier = Some(Arc::new(verifier));
        self
    }

    /// Verifies tokens signed by this ring (the embedded authorization server's), with this
    /// configuration's issuer and resources and no network call.
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.key_ring = Some(ring);
        self
    }

    /// Makes this configuration's issuer the embedded authorization server (any
    /// [`LocalAuthorizationServer`], such as `server::AuthorizationServer`, or a reference to
    /// one): its key ring and revocation list become the layer's local verifier (unless set
    /// explicitly), and `build()` refuses an issuer its authenticator is not safe with. The
    /// configuration does not keep the server: serve both with `server.mount(&cfg, mcp)`
    /// (or, composing by hand, `oauth_router(&cfg, &server)`).
    ///
    /// The server's paths (its discovery URLs, `/authorize`, `/authorize/login`,
    /// `/authorize/consent`, `/token`, `/register`, `/revoke`, `/introspect`, `/jwks.json`,
    /// `/oauth/stats` and `/health` under the issuer's path) become the crate's own: the layer lets a
    /// request for exactly one of them through to the router, and `build()` refuses a
    /// resource at one of them.
    pub fn authorization_server(mut self, server: impl LocalAuthorizationServer) -> Self {
        let ring = server.signing_keys();
        if self.key_ring.is_none() {
            self.key_ring = Some(ring.clone());
        }
        if self.revocation.is_none() {
            self.revocation = Some(server.revoked_tokens());
        }
        self.loopback_issuer_only |= server.loopback_issuer_only();
        self.local_server = Some(ring);
        self.local_endpoints = crate::paths::Endpoint::ALL
            .into_iter()
            .filter(|e| match e {
                crate::paths::Endpoint::Register => server.serves_registration(),
                crate::paths::Endpoint::Stats => server.serves_stats(),
                crate::paths::Endpoint::UpstreamStart
                | crate::paths::Endpoint::UpstreamCallback => server.serves_upstream_login(),
                _ => true,
            })
            .collect();
        self
    }

    /// A revocation list for tokens signed by the [`key_ring`](Self::key_ring).
    pub fn revocation(mut self, list: Arc<dyn RevokedTokens>) -> Self {
        self.revocation = Some(list);
        self
    }

    /// Clock leeway for `exp`/`nbf` of tokens signed by the key ring (default 60 s, at most
    /// [`MAX_LEEWAY`](crate::verify::MAX_LEEWAY); `build()` refuses more).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sizes the verified-token cache (default 10,000 entries, 60 s). `max_ttl` of zero turns
    /// it off. An entry never outlives its token, and revocation is checked on every hit
    /// (see [`revocation_cache`](Self::revocation_cache)).
    pub fn token_cache(mut self, capacity: usize, max_ttl: Duration) -> Self {
        self.cache_capacity = capacity;
        self.cache_max_ttl = max_ttl;
        self
    }

    /// Trusts a "not revoked" answer of the [revocation list](Self::revocation) for `ttl`
    /// (default zero: the list is asked on every request, and a revocation takes effect at
    /// once; at most [`MAX_REVOCATION_CACHE`](crate::verify::MAX_REVOCATION_CACHE), 60 s).
    ///
    /// With the embedded authorization server on a SQL or Redis store, the revocation check is
    /// one store query per request, cache hits included; this makes it one per token per
    /// `ttl` ([`CachedRevocations`](crate::verify::CachedRevocations), as many token ids as
    /// the [token cache](Self::token_cache) holds). The price: **a revoked access token keeps
    /// working for up to `ttl`**, on every instance. Refresh tokens, introspection and the
    /// authorization server's own checks are not affected. Pick a few seconds where that
    /// window is acceptable; BENCHMARKS.md ("Revocation checks") has the measured gain.
    pub fn revocation_cache(mut self, ttl: Duration) -> Self {
        self.revocation_cache = ttl;
        self
    }

    /// Also allows browser requests from this origin (`scheme://host[:port]`, canonical).
    /// Additive: the resources' own origins are always allowed, and so is the MCP
    /// Inspector's page unless [`inspector_origin(false)`](Self::inspector_origin). Requests
    /// without an `Origin` header (every non-browser client) are not affected.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Whether the MCP Inspector's page (`http://localhost:6274` and
    /// `http://127.0.0.1:6274`, its fixed default) may call the MCP endpoint from the browser
    /// (default: yes).
    ///
    /// The `Origin` check exists against DNS rebinding: a hostile web site whose name
    /// resolves to your server, reaching it from a visitor's browser. The Inspector's page is
    /// served by the developer's own machine on its own port, and the MCP endpoint takes
    /// bearer tokens, never cookies, so a page allowed here gains nothing a `curl` on that
    /// machine would not have. Turn it off to allow only the resources' origins and those
    /// given to [`allow_origin`](Self::allow_origin).
    pub fn inspector_origin(mut self, allow: bool) -> Self {
        self.inspector_origin = allow;
        self
    }

    /// Also accepts this `Host` (`name` or `name:port`) at the MCP service: additive to the
    /// derived list of [`McpOAuthConfig::allowed_hosts`] (the resources' hosts, the embedded
    /// issuer's host and the loopback names). For a server reached under more names than
    /// its resource URL, e.g. an internal name used by a load balancer's health check.
    /// `build()` refuses a value with a scheme, a path, user info or no host.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.extra_hosts.push(host.into());
        self
    }

    /// Turns the `Origin` check off. The MCP transport spec requires it against DNS
    /// rebinding; only for servers that sit behind a gateway doing the check.
    pub fn insecure_allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Largest JSON-RPC body the layer buffers to find the method (default 4 MiB); larger
    /// bodies get `413` when the policy needs the method.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Where the layer remembers which principal opened each MCP session (see
    /// [`SessionBindings`](crate::resource::SessionBindings)); default: a
    /// [`MemorySessionBindings`](crate::resource::MemorySessionBindings) of 100,000 sessions
    /// idle for at most a day. Pass a shared implementation when several instances serve
    /// the same MCP sessions.
    pub fn session_bindings(mut self, bindings: impl crate::resource::SessionBindings) -> Self {
        self.session_bindings = Some(Arc::new(bindings));
        self
    }

    /// Trusts the `Mcp-Method` / `Mcp-Name` headers (protocol 2026-07-28 and later) without
    /// reading the body. Only safe when the inner service rejects requests whose headers
    /// contradict the body, as rmcp's `StreamableHttpService` does; otherwise the layer reads
    /// the body and refuses a mismatch with `400`.
    pub fn trust_mcp_headers(mut self, trust: bool) -> Self {
        self.trust_mcp_headers = trust;
        self
    }

    /// How refusals of `tools/call` reach each client: HTTP `401`/`403` (the spec, and
    /// what Claude and the SDKs act on) or a `200` tool result carrying
    /// `_meta["mcp/www_authenticate"]` (what ChatGPT acts on). By default ChatGPT's user
    /// agents get the tool-result form and everyone else HTTP.
    pub fn challenge_style(mut self, rule: crate::resource::ChallengeStyleRule) -> Self {
        self.challenge_style = rule;
        self
    }

    /// Adds `securitySchemes` (`noauth` / `oauth2` with scopes) to every tool of a
    /// `tools/list` result, from the policy (on by default; ChatGPT needs it). It applies
    /// when the layer knows the method: the policy depends on it (lazy authentication or
    /// tool rules), or trusted `Mcp-Method` headers name it.
    pub fn tools_list_security_schemes(mut self, on: bool) -> Self {
        self.shape_tools_list = on;
        self
    }

    /// Drops from `tools/list` the tools the caller may not call (off by default: clients
    /// then never learn that signing in would unlock more).
    pub fn filter_tools_list(mut self, on: bool) -> Self {
        self.filter_tools_list = on;
        self
    }

    /// Turns on a named [`Compat`] switch (logged once at build).
    pub fn compat(mut self, switch: Compat) -> Self {
        self.compat.push(switch);
        self
    }

    /// Validates everything and builds the configuration.
    ///
    /// # Errors
    /// Any [`ConfigError`]: a missing or malformed resource or issuer, undeclared scopes, no
    /// verifier, a [`leeway`](Self::leeway) above [`MAX_LEEWAY`](crate::verify::MAX_LEEWAY)
    /// or a [`revocation_cache`](Self::revocation_cache) above
    /// [`MAX_REVOCATION_CACHE`](crate::verify::MAX_REVOCATION_CACHE), a resource at a path
    /// the crate serves itself ([`ConfigError::ReservedPath`]).
    pub fn build(self) -> Result<McpOAuthConfig, ConfigError> {
        crate::crypto::install_provider();
        if self.resources.is_empty() {
            return Err(ConfigError::MissingResource);
        }
        for r in &self.resources {
            check_public_url("resource", r, true)?;
        }
        let issuer = match self.issuer {
            Some(issuer) => issuer,
            None if self.local_server.is_some() => origin_of(&self.resources[0]),
            None => return Err(ConfigError::MissingIssuer),
        };
        check_public_url("issuer", &issuer, true)?;
        if self.loopback_issuer_only {
            check_loopback_issuer(&issuer)?;
        }
        crate::verify::check_leeway(self.leeway.as_secs())?;
        crate::verify::check_revocation_cache(self.revocation_cache)?;

        let mut scopes = Vec::new();
        for (name, desc) in self.scopes {
            let scope = Scope::new(name)?;
            if scope.as_str() == "offline_access" {
                return Err(ConfigError::OfflineAccessAsResourceScope);
            }
            if !scopes.iter().any(|(s, _)| s == &scope) {
                scopes.push((scope, desc));
            }
        }
        let declared = |s: &str| {
            scopes
                .iter()
                .any(|(d, _): &(Scope, String)| d.as_str() == s)
        };
        let default_scopes = ScopeSet::try_from_iter(self.default_scopes)?;
        let mut hierarchy = ScopeHierarchy::new();
        for (broader, narrower) in self.implies {
            for s in std::iter::once(&broader).chain(narrower.iter()) {
                Scope::new(s.clone())?;
            }
            hierarchy.add(broader, narrower);
        }
        if !scopes.is_empty() {
            for s in default_scopes.iter().chain(self.policy.all_scopes().iter()) {
                if !declared(s.as_str()) {
                    return Err(ConfigError::UndeclaredScope {
                        scope: s.to_string(),
                    });
                }
            }
        }

        let mut allowed_origins = Vec::new();
        for o in self.allowed_origins {
            check_origin(&o)?;
            allowed_origins.push(o);
        }
        let inspector = INSPECTOR_ORIGINS
            .iter()
            .filter(|_| self.inspector_origin)
            .map(|o| (*o).to_owned());
        for o in self.resources.iter().map(|r| origin_of(r)).chain(inspector) {
            if !allowed_origins.contains(&o) {
                allowed_origins.push(o);
            }
        }
        let mut allowed_hosts: Vec<String> =
            LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let issuer_host = self.local_server.is_some().then_some(&issuer);
        for url in self.resources.iter().chain(issuer_host) {
            if let Some(host) = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            {
                push_unique(&mut allowed_hosts, host);
            }
        }
        for h in self.extra_hosts {
            check_host(&h)?;
            push_unique(&mut allowed_hosts, h.to_ascii_lowercase());
        }

        for c in &self.compat {
            c.warn();
        }

        let local = match &self.key_ring {
            Some(ring) => {
                let mut b = JwtVerifier::builder(ring.clone())
                    .issuer(&issuer)
                    .leeway(self.leeway);
                for r in &self.resources {
                    b = b.audience(r);
                }
                for c in &self.compat {
                    if let Compat::ExtraAudience(a) = c {
                        b = b.audience(a);
                    }
                }
                if let Some(mut list) = self.revocation.clone() {
                    if !self.revocation_cache.is_zero() {
                        list = Arc::new(crate::verify::CachedRevocations::new(
                            list,
                            self.revocation_cache,
                            self.cache_capacity,
                        )?);
                    }
                    b = b.revocation(list);
                }
                Some(b.build()?)
            }
            None => None,
        };
        let verifier: Arc<dyn TokenVerifier> = match (local, self.verifier) {
            (Some(l), Some(v)) => Arc::new(ChainVerifier::new().with(l).with_arc(v)),
            (Some(l), None) => Arc::new(l),
            (None, Some(v)) => v,
            (None, None) => return Err(ConfigError::MissingVerifier),
        };

        let metadata_urls = self.resources.iter().map(|r| metadata_url_for(r)).collect();
        let resource_paths: Vec<String> = self
            .resources
            .iter()
            .map(|r| path_of(r).to_owned())
            .collect();
        let embedded = self.local_server.is_some();
        let own_paths = crate::paths::own_paths(
            &self.resources,
            embedded.then_some((issuer.as_str(), self.local_endpoints.as_slice())),
        );
        // Every path the server could serve is reserved, served today or not.
        let reserved = crate::paths::own_paths(
            &self.resources,
            embedded.then_some((issuer.as_str(), &crate::paths::Endpoint::ALL[..])),
        );
        for (resource, path) in self.resources.iter().zip(&resource_paths) {
            if crate::paths::is_exempt(&reserved, path) {
                return Err(ConfigError::ReservedPath {
                    resource: resource.clone(),
                    path: path.clone(),
                });
            }
        }
        let cache = (!self.cache_max_ttl.is_zero() && self.cache_capacity > 0)
            .then(|| TokenCache::new(self.cache_capacity));

        if self.any_origin {
            tracing::warn!(target: "mcp_oauth::config", "the Origin check is off (insecure_allow_any_origin)");
        }
        if self.trust_mcp_headers {
            tracing::warn!(target: "mcp_oauth::config", "judging requests by their Mcp-Method/Mcp-Name headers without reading the body (trust_mcp_headers): the MCP service must refuse headers that contradict the body");
        }

        Ok(McpOAuthConfig {
            inner: Arc::new(Inner {
                resources: self.resources,
                issuer,
                scopes,
                default_scopes,
                hierarchy,
                resource_name: self.resource_name,
                resource_documentation: self.resource_documentation,
                policy: self.policy,
                verifier,
                cache,
                cache_max_ttl: self.cache_max_ttl,
                allowed_origins,
                any_origin: self.any_origin,
                allowed_hosts,
                max_body_bytes: self.max_body_bytes,
                trust_mcp_headers: self.trust_mcp_headers,
                compat: self.compat,
                key_ring: self.key_ring,
                leeway: self.leeway,
                challenge_style: self.challenge_style,
                shape_tools_list: self.shape_tools_list,
                filter_tools_list: self.filter_tools_list,
                metadata_urls,
                resource_paths,
                own_paths,
                local_ring: self.local_server,
                session_bindings: self
                    .session_bindings
                    .unwrap_or_else(|| Arc::new(crate::resource::MemorySessionBindings::default())),
            }),
        })
    }
}

/// Refuses an issuer that is not on a loopback host, for an authenticator that approves
/// everyone ([`InsecureAutoApprove`](crate::authn::InsecureAutoApprove)).
fn check_loopback_issuer(issuer: &str) -> Result<(), ConfigError> {
    let loopback = url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(crate::net::is_loopback_host))
        .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err(ConfigError::InsecureAuthenticator {
            issuer: issuer.to_owned(),
        })
    }
}

/// Validates a resource or issuer string as clients will compare it.
pub(crate) fn check_public_url(
    field: &'static str,
    value: &str,
    allow_path: bool,
) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidUrl {
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(value).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    if value.contains('#') {
        return Err(bad("it has a fragment; remove the `#…` part"));
    }
    if value.contains('?') {
        return Err(bad("it has a query; remove the `?…` part"));
    }
    if value.ends_with('/') {
        return Err(bad(
            "it has a trailing slash; clients compare this string byte for byte, so write it without the final `/`",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it holds user information"));
    }
    let host = url.host_str().ok_or_else(|| bad("it has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if crate::net::is_loopback_host(host) => {}
        "http" => {
            return Err(bad(
                "plain http is only allowed for loopback hosts (localhost, 127.0.0.1, [::1]); use https",
            ));
        }
        _ => return Err(bad("the scheme must be https")),
    }
    if !allow_path && url.path() != "/" {
        return Err(bad("it must not have a path"));
    }
    let normalised = url.as_str();
    // Without a path the parser adds a `/`; everything else must be as written.
    let canonical =
        normalised == value || (url.path() == "/" && normalised.strip_suffix('/') == Some(value));
    if !canonical {
        return Err(bad(&format!(
            "it is not in canonical form (clients will use {normalised:?}); write scheme and host in lower case, without a default port or dot segments"
        )));
    }
    Ok(())
}

fn check_origin(value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidUrl {
        field: "origin",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(value).map_err(|e| bad(&format!("not an origin ({e})")))?;
    if url.path() != "/" || value.ends_with('/') || url.query().is_some() {
        return Err(bad(
            "an origin is scheme://host[:port] with nothing after it",
        ));
    }
    if url.origin().ascii_serialization() != value {
        return Err(bad("not in canonical form (lower case, no default port)"));
    }
    Ok(())
}

/// `scheme://host[:port]` of a validated URL string.
pub(crate) fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url[..after_scheme + i].to_owned(),
        None => url.to_owned(),
    }
}

/// The path of a validated URL string (`""` for none).
pub(crate) fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[after_scheme + i..],
        None => "",
    }
}

/// The RFC 9728 path-inserted metadata URL for a resource.
pub(crate) fn metadata_url_for(resource: &str) -> String {
    format!(
        "{}{}",
        origin_of(resource),
        crate::paths::protected_resource_path(resource)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_servers_issuer_defaults_to_the_resources_origin() {
        for (resource, origin) in [
            ("https://mcp.example.com/mcp", "https://mcp.example.com"),
            ("https://mcp.example.com", "https://mcp.example.com"),
            ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000"),
            ("http://[::1]:9/x/y", "http://[::1]:9"),
        ] {
            assert_eq!(origin_of(resource), origin);
        }
        struct Local(KeyRing);
        impl LocalAuthorizationServer for Local {
            fn signing_keys(&self) -> KeyRing {
                self.0.clone()
            }
            fn revoked_tokens(&self) -> Arc<dyn RevokedTokens> {
                Arc::new(crate::verify::MemoryRevocations::new())
            }
            fn loopback_issuer_only(&self) -> bool {
                false
            }
        }
        let ring = KeyRing::generate(crate::keys::SigningAlgorithm::Es256).unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource("https://mcp.example.com:8443/mcp")
            .authorization_server(Local(ring.clone()))
            .build()
            .unwrap();
        assert_eq!(cfg.issuer(), "https://mcp.example.com:8443");
        // An explicit issuer wins.
        let cfg = McpOAuthConfig::builder()
            .resource("https://mcp.example.com/mcp")
            .issuer("https://auth.example.com")
            .authorization_server(Local(ring))
            .build()
            .unwrap();
        assert_eq!(cfg.issuer(), "https://auth.example.com");
        // Without an embedded server the issuer is someone else's: it must be named.
        let err = McpOAuthConfig::builder()
            .resource("https://mcp.example.com/mcp")
            .verifier(crate::verify::ApiKeyVerifier::new())
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::MissingIssuer), "{err}");
    }

    fn rs_config(b: McpOAuthConfigBuilder) -> Result<McpOAuthConfig, ConfigError> {
        b.issuer("https://auth.example.com")
            .verifier(crate::verify::ApiKeyVerifier::new())
            .build()
    }

    #[test]
    fn hosts_derive_from_the_public_urls_and_extras_add() {
        let cfg = rs_config(
            McpOAuthConfig::builder()
                .resource("https://MCP.example.com/mcp")
                .resource("https://other.example.com:8443/b/mcp")
                .resource("http://[::1]:9000/mcp"),
        );
        // An upper-case host is refused as non-canonical before anything is derived.
        assert!(cfg.is_err());
        let cfg = rs_config(
            McpOAuthConfig::builder()
                .resource("https://mcp.example.com/mcp")
                .resource("https://other.example.com:8443/b/mcp")
                .resource("http://[::1]:9000/mcp")
                .allow_host("Health.Internal:8080")
                .allow_host("mcp.example.com"),
        )
        .unwrap();
        assert_eq!(
            cfg.allowed_hosts(),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "mcp.example.com",
                "other.example.com",
                "[::1]",
                "health.internal:8080"
            ]
        );
        // The external issuer is not this server's name; an embedded one is.
        assert!(!cfg.allowed_hosts().iter().any(|h| h == "auth.example.com"));
        for bad in [
            "https://mcp.example.com",
            "mcp.example.com/mcp",
            "user@mcp.example.com",
            "",
            "mcp.example.com:port",
        ] {
            let err = rs_config(
                McpOAuthConfig::builder()
                    .resource("https://mcp.example.com/mcp")
                    .allow_host(bad),
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::InvalidUrl {
                        field: "allow_host",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn origins_are_the_resources_the_inspectors_and_the_extras() {
        let cfg = rs_config(
            McpOAuthConfig::builder()
                .resource("https://mcp.example.com/mcp")
                .allow_origin("https://app.example.com"),
        )
        .unwrap();
        assert_eq!(
            cfg.allowed_origins(),
            [
                "https://app.example.com",
                "https://mcp.example.com",
                "http://localhost:6274",
                "http://127.0.0.1:6274"
            ]
        );
        let cfg = rs_config(
            McpOAuthConfig::builder()
                .resource("https://mcp.example.com/mcp")
                .inspector_origin(false),
        )
        .unwrap();
        assert_eq!(cfg.allowed_origins(), ["https://mcp.example.com"]);
    }

    #[cfg(feature = "rmcp")]
    #[test]
    fn rmcp_gets_the_derived_hosts() {
        let cfg =
            rs_config(McpOAuthConfig::builder().resource("https://mcp.example.com/mcp")).unwrap();
        let http = cfg.rmcp_server_config();
        assert_eq!(http.allowed_hosts, cfg.allowed_hosts());
        assert!(http.allowed_origins.is_empty());
    }

    #[test]
    fn url_rules() {
        for ok in [
            "https://mcp.example.com/mcp",
            "https://mcp.example.com",
            "http://127.0.0.1:8000/mcp",
            "http://localhost:3000",
            "http://[::1]:9/x/y",
            "https://h.example.com:8443/a",
        ] {
            check_public_url("resource", ok, true).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/",
            "https://mcp.example.com/mcp#x",
            "https://mcp.example.com/mcp?a=b",
            "http://mcp.example.com/mcp",
            "ftp://mcp.example.com/mcp",
            "https://MCP.example.com/mcp",
            "HTTPS://mcp.example.com/mcp",
            "https://mcp.example.com:443/mcp",
            "https://mcp.example.com/a/../mcp",
            "https://user:pw@mcp.example.com/mcp",
            "mcp.example.com/mcp",
        ] {
            assert!(
                check_public_url("resource", bad, true).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn metadata_urls() {
        assert_eq!(
            metadata_url_for("https://h.example.com/public/mcp"),
            "https://h.example.com/.well-known/oauth-protected-resource/public/mcp"
        );
        assert_eq!(
            metadata_url_for("http://127.0.0.1:8000"),
            "http://127.0.0.1:8000/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8000/mcp"),
            "http://127.0.0.1:8000"
        );
    }
}
