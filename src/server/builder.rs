//! [`AuthorizationServerBuilder`]: the embedded authorization server's settings, checked
//! once when [`build`](AuthorizationServerBuilder::build) turns them into an
//! [`AuthorizationServer`]. Its retention and shared-rate-limit settings are in
//! [`retention`](super::retention); the `jwks_uri` settings of `private_key_jwt` clients
//! (feature `private-key-jwt`) are in `client_jwks`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AuthorizationServer, Lifetimes, Limits, RateLimit, ServerInner, StaticClient, login_throttle,
    pages, rate_limit, register, retention,
};
use crate::authn::{ScopePolicy, UserAuthenticator};
use crate::config::{ClientProblem, ConfigError, EphemeralKeysReason};
use crate::issuer::TokenIssuer;
use crate::keys::{KeyEncryption, KeyError, KeyRing, SigningAlgorithm};
use crate::store::{ClientStore, GrantStore, MemoryStore};

/// Default sustained rate of `/register` requests that **create** a client, per client
/// address and minute. See [`AuthorizationServerBuilder::register_rate_limit`].
pub const DEFAULT_REGISTER_PER_MINUTE: u32 = 60;
/// Default burst of `/register` requests that create a client, per client address.
pub const DEFAULT_REGISTER_BURST: u32 = 120;

/// Builds an [`AuthorizationServer`].
///
/// Clients authenticate at the token, revocation and introspection endpoints with `none`,
/// `client_secret_basic` or `client_secret_post`, and, with the feature `private-key-jwt`,
/// with `private_key_jwt` (RFC 7523): dynamically registered clients that send `jwks` or
/// `jwks_uri`, and configured ones (`StaticClient::private_key_jwt`,
/// `StaticClient::private_key_jwt_uri`). Whether their `jwks_uri` may be on loopback or a
/// private network, and how often an unknown `kid` may make it be fetched again, is set with
/// `client_jwks_allow_loopback`, `client_jwks_allow_private_networks` and
/// `client_jwks_refetch_cooldown` (see `server::client_jwks`).
#[must_use]
pub struct AuthorizationServerBuilder {
    clients: Option<Arc<dyn ClientStore>>,
    grants: Option<Arc<dyn GrantStore>>,
    issuer: Option<Arc<dyn TokenIssuer>>,
    authenticator: Option<Arc<dyn UserAuthenticator>>,
    scope_policy: Option<Arc<dyn ScopePolicy>>,
    pages: Option<Arc<dyn pages::Pages>>,
    key_ring: Option<KeyRing>,
    key_encryption: Option<Arc<dyn KeyEncryption>>,
    ephemeral_keys: bool,
    lifetimes: Lifetimes,
    limits: Limits,
    static_clients: Vec<StaticClient>,
    introspection_clients: Vec<String>,
    dynamic_registration: bool,
    remember_consent: bool,
    trusted_proxies: Vec<IpAddr>,
    stats_endpoint: bool,
    redirect_schemes: Vec<String>,
    registered_scope_is_ceiling: bool,
    pub(super) upkeep: retention::Upkeep,
    #[cfg(feature = "client-metadata")]
    client_metadata: Option<super::ClientMetadataPolicy>,
    /// `jwks_uri` fetch settings (see [`client_jwks`](super::client_jwks)).
    #[cfg(feature = "private-key-jwt")]
    pub(super) client_jwks: super::client_jwks::Options,
}

impl std::fmt::Debug for AuthorizationServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServerBuilder")
            .finish_non_exhaustive()
    }
}

impl Default for AuthorizationServerBuilder {
    fn default() -> Self {
        Self {
            clients: None,
            grants: None,
            issuer: None,
            authenticator: None,
            scope_policy: None,
            pages: None,
            key_ring: None,
            key_encryption: None,
            ephemeral_keys: false,
            lifetimes: Lifetimes {
                code: Duration::from_secs(60),
                access: Duration::from_secs(3600),
                refresh: Duration::from_secs(30 * 24 * 3600),
                refresh_grace: Duration::from_secs(30),
                pending: Duration::from_secs(600),
            },
            limits: Limits {
                register: RateLimit::per_minute(DEFAULT_REGISTER_PER_MINUTE)
                    .with_burst(DEFAULT_REGISTER_BURST),
                token: RateLimit::per_minute(120),
                login: RateLimit::per_minute(20),
                authorize: RateLimit::per_minute(60),
                login_account: RateLimit::per_minute(2).with_burst(10),
                login_account_total: RateLimit::per_minute(20).with_burst(100),
            },
            static_clients: Vec::new(),
            introspection_clients: Vec::new(),
            dynamic_registration: true,
            remember_consent: false,
            trusted_proxies: Vec::new(),
            stats_endpoint: false,
            redirect_schemes: register::DEFAULT_REDIRECT_SCHEMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            registered_scope_is_ceiling: true,
            upkeep: retention::Upkeep::default(),
            #[cfg(feature = "client-metadata")]
            client_metadata: Some(super::ClientMetadataPolicy::default()),
            #[cfg(feature = "private-key-jwt")]
            client_jwks: super::client_jwks::Options::default(),
        }
    }
}

impl AuthorizationServerBuilder {
    /// One store for clients and grants (e.g. [`MemoryStore`], or a database store).
    ///
    /// A [durable](GrantStore::is_durable) store keeps the signing keys too: given no
    /// [`key_ring`](Self::key_ring), [`build`](Self::build) loads the ring from the store's
    /// [`key_store`](GrantStore::key_store) (creating its first key when there is none), so
    /// tokens survive a restart and every instance on a shared store signs with one ring.
    /// On a [`MemoryStore`] the server signs with a key generated per process.
    pub fn store<S: ClientStore + GrantStore>(mut self, store: S) -> Self {
        let store = Arc::new(store);
        self.clients = Some(store.clone());
        self.grants = Some(store);
        self
    }

    /// The client store alone.
    pub fn client_store(mut self, store: impl ClientStore) -> Self {
        self.clients = Some(Arc::new(store));
        self
    }

    /// The grant store alone. It, not the client store, decides where the signing keys live
    /// (see [`store`](Self::store)).
    pub fn grant_store(mut self, store: impl GrantStore) -> Self {
        self.grants = Some(Arc::new(store));
        self
    }

    /// Who the user is (required): [`StaticUsers`](crate::authn::StaticUsers),
    /// [`HostSession`](crate::authn::HostSession), or your own.
    pub fn authenticator(mut self, authenticator: impl UserAuthenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// A scope-ceiling hook: which requested scopes a user may be granted for a client and a
    /// resource (see [`ScopePolicy`] and the [`authn`](crate::authn#scope-ceilings) docs).
    /// Without one, only the client's registered `scope` and the user's
    /// [`allowed_scopes`](crate::authn::User::allowed_scopes) limit the grant.
    pub fn scope_policy(mut self, policy: impl ScopePolicy) -> Self {
        self.scope_policy = Some(Arc::new(policy));
        self
    }

    /// Login, consent and error pages; the built-in askama pages by default.
    pub fn pages(mut self, pages: impl pages::Pages) -> Self {
        self.pages = Some(Arc::new(pages));
        self
    }

    /// The signing keys. Without this, [`build`](Self::build) keeps them in a
    /// [durable](GrantStore::is_durable) store (see [`store`](Self::store)), or generates an
    /// ES256 key for this process on a [`MemoryStore`].
    ///
    /// Pass a ring to choose the ring's name, algorithm, refresh or scheduled rotation
    /// (`.key_ring(KeyRing::from_store(store.clone()).ring_name("as-2").open().await?)`, see
    /// [`KeyRing::from_store`]), to keep the keys in another store, or to sign with keys
    /// loaded from PEM or DER ([`KeyRing::new`]). A shared ring's retired keys stay published
    /// for the access-token lifetime plus the ring's refresh interval plus 5 minutes, unless
    /// set explicitly with
    /// [`retain_retired_for`](crate::keys::StoreRingBuilder::retain_retired_for).
    ///
    /// On a durable store, a ring whose key was generated in this process
    /// ([`KeyRing::generate`]) is refused with [`ConfigError::EphemeralKeys`]: after a
    /// restart it would be gone and every token with it. Say
    /// [`ephemeral_keys`](Self::ephemeral_keys) to accept that.
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.key_ring = Some(ring);
        self
    }

    /// Envelope encryption of the signing keys the server keeps in its store (see
    /// [`KeyEncryption`]): the store, its replicas and backups then hold only wrapped private
    /// keys. For the ring [`build`](Self::build) opens in a durable store; a ring passed with
    /// [`key_ring`](Self::key_ring) takes it from
    /// [`StoreRingBuilder::key_encryption`](crate::keys::StoreRingBuilder::key_encryption)
    /// instead (setting both is refused).
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::keys::AesGcmKeyEncryption;
    /// use mcp_oauth::server::AuthorizationServer;
    /// use mcp_oauth::store::sql::SqliteStore;
    ///
    /// let kek = AesGcmKeyEncryption::from_env()?.expect("MCP_OAUTH_KEY_ENCRYPTION_KEY is set");
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .store(SqliteStore::open("mcp-oauth.db").await?)
    ///     .key_encryption(kek)
    ///     .build()
    ///     .await?;
    /// # let _ = server;
    /// # Ok(())
    /// # }
    /// ```
    pub fn key_encryption(mut self, encryption: impl KeyEncryption) -> Self {
        self.key_encryption = Some(Arc::new(encryption));
        self
    }

    /// The named opt-out from durable keys: sign with a key that lives in this process only
    /// (generated, or the generated [`key_ring`](Self::key_ring) given), even on a
    /// [durable](GrantStore::is_durable) store. Every access token is then refused after a
    /// restart, and instances sharing the store do not accept each other's tokens;
    /// [`build`](Self::build) logs a warning saying so. Nothing changes on a [`MemoryStore`],
    /// whose keys are per process anyway.
    ///
    /// ```
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::config::{ConfigError, EphemeralKeysReason};
    /// use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
    /// use mcp_oauth::server::AuthorizationServer;
    /// # use mcp_oauth::store::*;
    /// # use std::sync::Arc;
    /// # #[derive(Default)] struct DurableStore(MemoryStore);
    /// # #[async_trait::async_trait] impl GrantStore for DurableStore {
    /// #   async fn put_code(&self, h: SecretHash, c: AuthorizationCode) -> Result<(), StoreError> { self.0.put_code(h, c).await }
    /// #   async fn take_code(&self, h: &SecretHash, f: &str, n: u64) -> Result<CodeTake, StoreError> { self.0.take_code(h, f, n).await }
    /// #   async fn create_family(&self, f: RefreshFamily, r: Option<SecretHash>) -> Result<(), StoreError> { self.0.create_family(f, r).await }
    /// #   async fn rotate_refresh(&self, p: &SecretHash, s: SecretHash, x: Vec<u8>, n: u64, g: u64) -> Result<Rotation, StoreError> { self.0.rotate_refresh(p, s, x, n, g).await }
    /// #   async fn revoke_family(&self, f: &str, n: u64) -> Result<(), StoreError> { self.0.revoke_family(f, n).await }
    /// #   async fn family_of_refresh(&self, h: &SecretHash, n: u64) -> Result<Option<RefreshLookup>, StoreError> { self.0.family_of_refresh(h, n).await }
    /// #   async fn revoke_token(&self, j: &str, e: u64) -> Result<(), StoreError> { self.0.revoke_token(j, e).await }
    /// #   async fn is_token_revoked(&self, j: &str, n: u64) -> Result<bool, StoreError> { self.0.is_token_revoked(j, n).await }
    /// #   async fn get_consent(&self, s: &str, c: &str) -> Result<Option<mcp_oauth::scope::ScopeSet>, StoreError> { self.0.get_consent(s, c).await }
    /// #   async fn put_consent(&self, s: &str, c: &str, x: &mcp_oauth::scope::ScopeSet, n: u64) -> Result<(), StoreError> { self.0.put_consent(s, c, x, n).await }
    /// #   async fn put_pending(&self, i: &str, p: PendingAuthorization) -> Result<(), StoreError> { self.0.put_pending(i, p).await }
    /// #   async fn get_pending(&self, i: &str, n: u64) -> Result<Option<PendingAuthorization>, StoreError> { self.0.get_pending(i, n).await }
    /// #   async fn take_pending(&self, i: &str, n: u64) -> Result<Option<PendingAuthorization>, StoreError> { self.0.take_pending(i, n).await }
    /// #   async fn sweep(&self, n: u64) -> Result<u64, StoreError> { self.0.sweep(n).await }
    /// #   async fn stats(&self, n: u64) -> Result<StoreStats, StoreError> { self.0.stats(n).await }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A grant store of your own: durable (the default), with no key store to offer.
    /// let refused = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .grant_store(DurableStore::default())
    ///     .build()
    ///     .await;
    /// assert!(matches!(
    ///     refused,
    ///     Err(ConfigError::EphemeralKeys { reason: EphemeralKeysReason::NoKeyStore })
    /// ));
    ///
    /// // Fine for a demo: a restart signs everyone out (and the build logs a warning).
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .grant_store(DurableStore::default())
    ///     .ephemeral_keys()
    ///     .build()
    ///     .await?;
    /// # let _ = server;
    /// # Ok(())
    /// # }
    /// ```
    pub fn ephemeral_keys(mut self) -> Self {
        self.ephemeral_keys = true;
        self
    }

    /// A custom token format (the default is RFC 9068 JWTs signed by the key ring).
    pub fn token_issuer(mut self, issuer: impl TokenIssuer) -> Self {
        self.issuer = Some(Arc::new(issuer));
        self
    }

    /// How long authorization codes live (60 s by default; 10 s to 10 min allowed).
    pub fn code_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.code = ttl;
        self
    }

    /// How long access tokens live (1 h by default; 1 min to 24 h allowed).
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.access = ttl;
        self
    }

    /// How long a refresh family lives (30 days by default; 1 h to 365 days allowed).
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.refresh = ttl;
        self
    }

    /// How long a rotated-out refresh token still returns the same successor to concurrent
    /// refreshes (30 s by default; at most 5 min).
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.lifetimes.refresh_grace = grace;
        self
    }

    /// Adds a pre-registered client.
    pub fn client(mut self, client: StaticClient) -> Self {
        self.static_clients.push(client);
        self
    }

    /// The clients allowed to call `/introspect`: your resource servers, each a
    /// [confidential `StaticClient`](StaticClient::confidential) configured with
    /// [`client`](Self::client) (`build()` refuses any other id). RFC 7662 §2.1 requires the
    /// endpoint to be protected, and an introspection answer tells who a token belongs to:
    /// no other client, and certainly no dynamically registered one, may ask. With none
    /// configured (the default) every call is refused with `401 invalid_client`.
    ///
    /// ```
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::server::{AuthorizationServer, StaticClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .client(StaticClient::confidential("rs-1", "rs-secret-0123456789abcdef", ["https://rs.example.com/cb"]))
    ///     .introspection_clients(["rs-1"])
    ///     .build()
    ///     .await
    ///     .unwrap();
    /// # let _ = server;
    /// assert!(AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .introspection_clients(["not-configured"])
    ///     .build()
    ///     .await
    ///     .is_err());
    /// # }
    /// ```
    pub fn introspection_clients<I, S>(mut self, client_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.introspection_clients
            .extend(client_ids.into_iter().map(Into::into));
        self
    }

    /// Turns RFC 7591 dynamic registration on or off (on by default; ChatGPT, Claude, VS
    /// Code, Cursor and the SDK clients rely on it).
    ///
    /// # Deduplication
    ///
    /// A **public** registration (`token_endpoint_auth_method: none`) identical to an
    /// earlier one is answered with the earlier registration's client (same `client_id`,
    /// `201`, no new row) instead of a new one. *Identical* means the same
    /// [fingerprint](crate::store::ClientFingerprint): the SHA-256 of the registering
    /// party (none: registration is open) and of the validated metadata, i.e. the redirect
    /// URIs as a set (loopback `http` ones without their port, which `/authorize` ignores
    /// for them anyway, RFC 8252 §7.3), `token_endpoint_auth_method`, the grant types as a
    /// set, `application_type` (as recorded), `scope`, `client_name` and the kept
    /// informational fields (`client_uri`, `logo_uri`, `tos_uri`, `policy_uri`,
    /// `contacts`, `software_id`, `software_version`). Any difference, a new
    /// `software_version` included, gives a new client.
    ///
    /// Why that cannot hand one party another's client: a public client holds no secret,
    /// its `client_id` is public anyway (it travels in every authorization URL), and codes
    /// only ever go to its exact redirect URIs, which are the ones this registrant asked
    /// for. So the second registrant gets nothing it could not already use. With
    /// [`remember_consent`](Self::remember_consent) on, a remembered consent would be shared
    /// too, so then only clients whose redirect URIs are all `https` are deduplicated (a
    /// loopback or custom-scheme redirect can be received by another program on the user's
    /// machine).
    /// **Confidential** registrations (`client_secret_basic`, `client_secret_post`) are
    /// never deduplicated: each gets a client and a secret of its own, and no registration
    /// ever returns a secret it did not just create.
    ///
    /// The bound: one client per fingerprint, except that a client never used is reused
    /// only during the first half of its [never-used window](super::Retention::unused_client_after)
    /// (1.5 hours by default; then the next identical registration gets a new client and
    /// the old one is removed unused), and that registrations racing each other may each
    /// create one. The newest client filed under a fingerprint is the one reused. Stores
    /// that do not implement [`ClientStore::find_client_by_fingerprint`] never deduplicate.
    /// On Redis a fingerprint is forgotten 30 days after the registration that filed it.
    pub fn dynamic_registration(mut self, on: bool) -> Self {
        self.dynamic_registration = on;
        self
    }

    /// Remembers consent per user, client, resource and scope set, so a returning client
    /// that asks for no more than before, for the same resource, skips the consent page. A
    /// remembered consent also counts as the user having approved the client: errors found
    /// before the user acts are then redirected to it instead of shown as a page.
    pub fn remember_consent(mut self, on: bool) -> Self {
        self.remember_consent = on;
        self
    }

    /// Rate limit of `/register` per client address: how many registrations that
    /// **create** a client one address may make. By default
    /// [`DEFAULT_REGISTER_PER_MINUTE`] (60) a minute in bursts of [`DEFAULT_REGISTER_BURST`]
    /// (120). Every `/register` request, valid or not, also counts against ten times this
    /// budget (checked before the body is read); a registration answered with the client of
    /// an identical earlier one ([deduplication](Self::dynamic_registration)) counts only
    /// there.
    ///
    /// Why these numbers: one address is often many people. Claude Code registers on every
    /// connection, an office or VPN puts hundreds of developers behind one NAT address, and
    /// every claude.ai user of a server registers from Anthropic's few egress addresses. A
    /// budget of a few registrations an hour per address (as other servers default to)
    /// refuses them at the first busy morning. Deduplication absorbs the repeats (Claude
    /// Code's loopback redirect differs only in its port, which the fingerprint ignores),
    /// and the [never-used rule](super::Retention::unused_client_after) removes abandoned
    /// clients after 3 hours, so what one address can pile up is bounded: at these defaults
    /// about 60 × 180 + 120 ≈ 11,000 never-used clients per address at any time, against
    /// 20 a minute kept for 90 days before.
    pub fn register_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.register = limit;
        self
    }

    /// Rate limit of `/token` (and `/revoke`, `/introspect`) per client address.
    pub fn token_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.token = limit;
        self
    }

    /// Rate limit of login form submissions per client address.
    pub fn login_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.login = limit;
        self
    }

    /// Rate limit of `/authorize` (and of its login and consent form posts) per client
    /// address: 60 a minute by default. Over it, the browser gets a `429` page with
    /// `Retry-After` (never a redirect).
    pub fn authorize_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.authorize = limit;
        self
    }

    /// Rate limit of failed sign-ins per account (user name) **from one client address**
    /// (an IPv4 address or an IPv6 `/64`): bursts of 10, then 2 a minute, by default. Over
    /// it, the login page answers `429` with `Retry-After` and the password is not checked.
    /// An address that keeps failing only spends its own budget for that account, so it
    /// cannot lock the user out from elsewhere; the account-wide ceiling is
    /// [`login_account_total_rate_limit`](Self::login_account_total_rate_limit). Counted in
    /// process (per instance); successful sign-ins cost nothing.
    pub fn login_account_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.login_account = limit;
        self
    }

    /// Rate limit of failed sign-ins per account (user name) **from all addresses
    /// together**: bursts of 100, then 20 a minute, by default, far above what one address
    /// may spend ([`login_account_rate_limit`](Self::login_account_rate_limit)), so only an
    /// attack from many addresses reaches it. Over it, the login page answers `429` and the
    /// password is not checked, from any address: it caps online guessing at one account,
    /// at the price that such an attack also slows down the real user. Counted in process
    /// (per instance); successful sign-ins cost nothing.
    pub fn login_account_total_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.login_account_total = limit;
        self
    }

    /// The custom (private-use) redirect URI schemes accepted besides reverse-domain ones
    /// such as `com.example.app:` (RFC 8252 §7.1), replacing the default list (`cursor`,
    /// `vscode`, `vscode-insiders`, `vscodium`, `windsurf`: schemes real MCP clients use).
    /// Operating-system handler and browser-internal schemes (`ms-*`, `search-ms`, `jar`,
    /// `file`, `javascript`, `data`, …) are refused whatever this list says.
    pub fn redirect_schemes<I, S>(mut self, schemes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redirect_schemes = schemes
            .into_iter()
            .map(|s| s.into().to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether the `scope` a client gave at dynamic registration (RFC 7591) caps what it is
    /// ever granted (on by default: least privilege). The scope of a
    /// [`StaticClient::with_scope`] always applies.
    ///
    /// Interop caveat: the MCP Python SDK registers with the scope of the first challenge it
    /// meets and later steps up (asks for more) with the same client; with the ceiling on,
    /// that step-up gets only the registered scopes (the resource keeps answering `403
    /// insufficient_scope`). Turn this off for such clients; the user's ceiling and any
    /// [`ScopePolicy`] still apply.
    pub fn registered_scope_is_ceiling(mut self, on: bool) -> Self {
        self.registered_scope_is_ceiling = on;
        self
    }

    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed when keying rate
    /// limits. Without any, the peer address is used.
    pub fn trusted_proxies<I: IntoIterator<Item = IpAddr>>(mut self, proxies: I) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Serves `GET /oauth/stats` (client, code and family counts) for operators. Off by
    /// default; put it behind your own access control.
    pub fn stats_endpoint(mut self, on: bool) -> Self {
        self.stats_endpoint = on;
        self
    }

    /// Whether a `client_id` that is an `https` URL is resolved through its client ID
    /// metadata document (default on; see [`client_metadata`](super::client_metadata)).
    /// Off, the metadata no longer advertises `client_id_metadata_document_supported`, and
    /// a URL `client_id` is an unknown client like any other (deployments that want dynamic
    /// registration only).
    #[cfg(feature = "client-metadata")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client-metadata")))]
    pub fn client_id_metadata_documents(mut self, on: bool) -> Self {
        self.client_metadata = match (on, self.client_metadata.take()) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => Some(super::ClientMetadataPolicy::default()),
        };
        self
    }

    /// How client ID metadata documents are fetched and cached: an allow-list of client
    /// hosts, loopback for development, cache bounds, timeouts, the per-host limit (see
    /// [`ClientMetadataPolicy`](super::ClientMetadataPolicy)). Also switches them on.
    #[cfg(feature = "client-metadata")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client-metadata")))]
    pub fn client_metadata_policy(mut self, policy: super::ClientMetadataPolicy) -> Self {
        self.client_metadata = Some(policy);
        self
    }

    /// Validates the settings, then sets up the signing keys and builds.
    ///
    /// The keys: the [`key_ring`](Self::key_ring) given; or, without one, on a
    /// [durable](GrantStore::is_durable) grant store, the ring kept in the store's
    /// [`key_store`](GrantStore::key_store), loaded (or created, on first start) with
    /// [`KeyRing::from_store`] under the name `default` and with retired keys published for
    /// the access-token lifetime plus the refresh interval (30 s) plus 5 minutes; or, on a [`MemoryStore`] (or with
    /// [`ephemeral_keys`](Self::ephemeral_keys)), a fresh ES256 key for this process. This is
    /// why the call is `async`: it may read the store.
    ///
    /// ```
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::server::AuthorizationServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mcp_oauth::ConfigError> {
    /// // In memory: a key per process, fine for development and tests.
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .build()
    ///     .await?;
    /// assert!(!server.key_ring().is_shared());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::MissingAuthenticator`] without an authenticator;
    /// [`ConfigError::OutOfRange`] for a lifetime outside its allowed range;
    /// [`ConfigError::InvalidClient`] for a configured client that is not acceptable;
    /// [`ConfigError::EphemeralKeys`] when the grant store is durable but the keys would not
    /// be (it offers no key store, or the ring given was generated in this process) and
    /// [`ephemeral_keys`](Self::ephemeral_keys) was not called;
    /// [`ConfigError::KeyRetentionTooShort`] for a shared ring that forgets retired keys
    /// before the tokens they signed expire; [`ConfigError::Key`] when no key could be
    /// generated, or the key store failed (unreachable, or holding a key that cannot be
    /// loaded).
    pub async fn build(self) -> Result<AuthorizationServer, ConfigError> {
        crate::crypto::install_provider();
        self.warn_loosened();
        let authenticator = self
            .authenticator
            .ok_or(ConfigError::MissingAuthenticator)?;
        let l = self.lifetimes;
        check_range("code_ttl", l.code, 10, 600)?;
        check_range("access_token_ttl", l.access, 60, 24 * 3600)?;
        check_range("refresh_token_ttl", l.refresh, 3600, 365 * 24 * 3600)?;
        check_range("refresh_grace", l.refresh_grace, 0, 300)?;
        let (clients, grants): (Arc<dyn ClientStore>, Arc<dyn GrantStore>) =
            match (self.clients, self.grants) {
                (Some(c), Some(g)) => (c, g),
                (c, g) => {
                    let mem = Arc::new(MemoryStore::new());
                    (c.unwrap_or_else(|| mem.clone()), g.unwrap_or(mem))
                }
            };
        let mut static_clients = HashMap::new();
        for c in self.static_clients {
            if c.0.client_id.starts_with("https://") {
                return Err(ConfigError::InvalidClient {
                    client_id: c.0.client_id,
                    problem: ClientProblem::ReservedId,
                });
            }
            for uri in &c.0.redirect_uris {
                register::check_redirect_uri_with(uri, &self.redirect_schemes).map_err(|why| {
                    ConfigError::InvalidClient {
                        client_id: c.0.client_id.clone(),
                        problem: ClientProblem::RedirectUri {
                            uri: uri.clone(),
                            reason: why.to_string(),
                        },
                    }
                })?;
            }
            static_clients.insert(c.0.client_id.clone(), c.0);
        }
        for id in &self.introspection_clients {
            match static_clients.get(id) {
                Some(c) if c.is_confidential() => {}
                Some(_) => {
                    return Err(ConfigError::InvalidClient {
                        client_id: id.clone(),
                        problem: ClientProblem::IntrospectionClientNotConfidential,
                    });
                }
                None => {
                    return Err(ConfigError::InvalidClient {
                        client_id: id.clone(),
                        problem: ClientProblem::IntrospectionClientNotConfigured,
                    });
                }
            }
        }
        let upkeep = self.upkeep.validate(l.refresh)?;
        #[cfg(feature = "client-metadata")]
        let client_metadata = match self.client_metadata {
            None => None,
            Some(policy) => {
                check_range("client_metadata min cache_ttl", policy.min_ttl, 0, 3600)?;
                check_range(
                    "client_metadata max cache_ttl",
                    policy.max_ttl,
                    60,
                    7 * 24 * 3600,
                )?;
                check_range("client_metadata timeout", policy.timeout, 1, 10)?;
                if policy.min_ttl > policy.max_ttl {
                    return Err(ConfigError::OutOfRange {
                        field: "client_metadata min cache_ttl",
                        min: 0,
                        max: policy.max_ttl.as_secs(),
                        value: policy.min_ttl.as_secs(),
                    });
                }
                if policy.allow_loopback {
                    tracing::warn!(target: "mcp_oauth::config", "client metadata documents may be fetched from loopback addresses (ClientMetadataPolicy::allow_loopback): for development and tests only");
                }
                let resolver = crate::flows::client_metadata::Resolver::new(
                    policy,
                    self.redirect_schemes.clone().into(),
                )
                .map_err(|e| ConfigError::ClientMetadata(e.to_string()))?;
                Some(Arc::new(resolver))
            }
        };
        let pages = match self.pages {
            Some(p) => p,
            None => pages::default_pages(),
        };
        // Last: everything else is checked before the store is read.
        let key_ring = signing_keys(
            self.key_ring,
            self.key_encryption,
            self.ephemeral_keys,
            &grants,
        )
        .await?;
        check_key_retention(&key_ring, l.access)?;
        Ok(AuthorizationServer {
            inner: Arc::new(ServerInner {
                clients,
                grants,
                custom_issuer: self.issuer,
                authenticator,
                scope_policy: self.scope_policy,
                pages,
                key_ring,
                lifetimes: l,
                limits: self.limits,
                static_clients: Arc::new(static_clients),
                introspection_clients: self.introspection_clients,
                dynamic_registration: self.dynamic_registration,
                remember_consent: self.remember_consent,
                trusted_proxies: self.trusted_proxies,
                stats_endpoint: self.stats_endpoint,
                limiter: rate_limit::Limiter::new(),
                login_accounts: login_throttle::AccountThrottle::new(),
                redirect_schemes: self.redirect_schemes,
                registered_scope_is_ceiling: self.registered_scope_is_ceiling,
                upkeep,
                #[cfg(feature = "client-metadata")]
                client_metadata,
                #[cfg(feature = "private-key-jwt")]
                client_jwks: match super::client_jwks::ClientJwksFetcher::new(self.client_jwks) {
                    Ok(f) => Some(Arc::new(f)),
                    Err(e) => {
                        tracing::error!(target: "mcp_oauth::client_jwks", error = %e,
                            "no HTTP client for private_key_jwt jwks_uri; such clients will get 503");
                        None
                    }
                },
            }),
        })
    }
}

/// The server's key ring: the one given, or the grant store's, or a generated one (see
/// [`AuthorizationServerBuilder::build`]). A durable store with keys that are not is refused
/// unless `ephemeral` (the named opt-out), which logs a warning.
async fn signing_keys(
    given: Option<KeyRing>,
    encryption: Option<Arc<dyn KeyEncryption>>,
    ephemeral: bool,
    grants: &Arc<dyn GrantStore>,
) -> Result<KeyRing, ConfigError> {
    let durable = grants.is_durable();
    let ring = match given {
        Some(_) if encryption.is_some() => {
            return Err(ConfigError::Key(KeyError::InvalidSetting {
                setting: "key_encryption",
                reason: "a key ring was passed with key_ring(..): set the encryption on its StoreRingBuilder (key_encryption) instead".into(),
            }));
        }
        Some(ring) => ring,
        None if !durable || ephemeral => KeyRing::generate(SigningAlgorithm::Es256)?,
        None => match grants.clone().key_store() {
            Some(store) => {
                let builder = KeyRing::from_store(store);
                let builder = match encryption {
                    Some(e) => builder.key_encryption_arc(e),
                    None => builder,
                };
                builder.open().await?
            }
            None => {
                return Err(ConfigError::EphemeralKeys {
                    reason: EphemeralKeysReason::NoKeyStore,
                });
            }
        },
    };
    if durable && ring.is_ephemeral() {
        if !ephemeral {
            return Err(ConfigError::EphemeralKeys {
                reason: EphemeralKeysReason::EphemeralKeyRing,
            });
        }
        tracing::warn!(
            target: "mcp_oauth::config",
            "the signing keys live in this process only (ephemeral_keys) although the store is durable: a restart signs everyone out (every access token is refused), and instances sharing the store refuse each other's tokens"
        );
    }
    Ok(ring)
}

/// A shared ring keeps retired keys as long as access tokens live, plus its refresh interval
/// (an instance that has not reloaded yet may still sign with a key another one retired),
/// plus a margin; an explicit retention shorter than that would make tokens fail before they
/// expire.
fn check_key_retention(ring: &KeyRing, access: Duration) -> Result<(), ConfigError> {
    let Some((retention, explicit, refresh)) = ring.shared_retention() else {
        return Ok(());
    };
    let needed = crate::keys::needed_retention(access, refresh);
    if !explicit {
        ring.set_default_retention(needed);
    } else if retention < needed {
        return Err(ConfigError::KeyRetentionTooShort {
            retention,
            access_token_ttl: access,
            refresh_interval: refresh,
            needed,
        });
    }
    Ok(())
}

impl AuthorizationServerBuilder {
    /// Logs a warning for each setting that loosens a default (the README's "Switches that
    /// loosen it" table), once, when the server is built.
    fn warn_loosened(&self) {
        let limits = [
            ("register_rate_limit", self.limits.register),
            ("token_rate_limit", self.limits.token),
            ("login_rate_limit", self.limits.login),
            ("authorize_rate_limit", self.limits.authorize),
            ("login_account_rate_limit", self.limits.login_account),
            (
                "login_account_total_rate_limit",
                self.limits.login_account_total,
            ),
        ];
        for (name, limit) in limits {
            if limit.is_unlimited() {
                tracing::warn!(target: "mcp_oauth::config", limit = name, "a rate limit is off (RateLimit::unlimited)");
            }
        }
        if !self.registered_scope_is_ceiling {
            tracing::warn!(target: "mcp_oauth::config", "a client's registered scope does not cap its grants (registered_scope_is_ceiling(false))");
        }
        let extra: Vec<&str> = self
            .redirect_schemes
            .iter()
            .map(String::as_str)
            .filter(|s| !register::DEFAULT_REDIRECT_SCHEMES.contains(s))
            .collect();
        if !extra.is_empty() {
            tracing::warn!(target: "mcp_oauth::config", schemes = ?extra, "extra custom redirect schemes trusted as native-app callbacks (redirect_schemes)");
        }
        if !self.trusted_proxies.is_empty() {
            tracing::warn!(target: "mcp_oauth::config", proxies = ?self.trusted_proxies, "believing X-Forwarded-For / Forwarded from these addresses (trusted_proxies)");
        }
    }
}

pub(super) fn check_range(
    field: &'static str,
    d: Duration,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    let s = d.as_secs();
    if s < min || s > max {
        return Err(ConfigError::OutOfRange {
            field,
            min,
            max,
            value: s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
