//! [`AuthorizationServerBuilder`]: the embedded authorization server's settings, checked
//! once when [`build`](AuthorizationServerBuilder::build) turns them into an
//! [`AuthorizationServer`]. Its retention and shared-rate-limit settings are in
//! [`retention`](super::retention).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AuthorizationServer, Lifetimes, Limits, RateLimit, ServerInner, StaticClient, login_throttle,
    pages, rate_limit, register, retention,
};
use crate::authn::{ScopePolicy, UserAuthenticator};
use crate::config::{ClientProblem, ConfigError};
use crate::issuer::TokenIssuer;
use crate::keys::{KeyRing, SigningAlgorithm};
use crate::store::{ClientStore, GrantStore, MemoryStore};

/// Builds an [`AuthorizationServer`].
#[must_use]
pub struct AuthorizationServerBuilder {
    clients: Option<Arc<dyn ClientStore>>,
    grants: Option<Arc<dyn GrantStore>>,
    issuer: Option<Arc<dyn TokenIssuer>>,
    authenticator: Option<Arc<dyn UserAuthenticator>>,
    scope_policy: Option<Arc<dyn ScopePolicy>>,
    pages: Option<Arc<dyn pages::Pages>>,
    key_ring: Option<KeyRing>,
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
            lifetimes: Lifetimes {
                code: Duration::from_secs(60),
                access: Duration::from_secs(3600),
                refresh: Duration::from_secs(30 * 24 * 3600),
                refresh_grace: Duration::from_secs(30),
                pending: Duration::from_secs(600),
            },
            limits: Limits {
                register: RateLimit::per_minute(20),
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
        }
    }
}

impl AuthorizationServerBuilder {
    /// One store for clients and grants (e.g. [`MemoryStore`], or a database store).
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

    /// The grant store alone.
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

    /// The signing keys (a fresh ES256 key by default: tokens do not survive a restart, and
    /// several instances must share one ring).
    ///
    /// For several instances, or keys that survive restarts, keep the ring in the store:
    /// `.key_ring(KeyRing::from_store(store.clone()).open().await?)` (see
    /// [`KeyRing::from_store`]). Its retired keys then stay published for the access-token
    /// lifetime plus 5 minutes, unless set explicitly with
    /// [`retain_retired_for`](crate::keys::StoreRingBuilder::retain_retired_for).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.key_ring = Some(ring);
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
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .client(StaticClient::confidential("rs-1", "rs-secret-0123456789abcdef", ["https://rs.example.com/cb"]))
    ///     .introspection_clients(["rs-1"])
    ///     .build()
    ///     .unwrap();
    /// # let _ = server;
    /// assert!(AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new())
    ///     .introspection_clients(["not-configured"])
    ///     .build()
    ///     .is_err());
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

    /// Rate limit of `/register` per client address.
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

    /// Validates and builds.
    ///
    /// # Errors
    /// [`ConfigError::MissingAuthenticator`] without an authenticator;
    /// [`ConfigError::OutOfRange`] for a lifetime outside its allowed range; a key error.
    pub fn build(self) -> Result<AuthorizationServer, ConfigError> {
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
        let key_ring = match self.key_ring {
            Some(r) => r,
            None => KeyRing::generate(SigningAlgorithm::Es256)?,
        };
        check_key_retention(&key_ring, l.access)?;
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
        let pages = match self.pages {
            Some(p) => p,
            None => pages::default_pages(),
        };
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
            }),
        })
    }
}

/// A shared ring keeps retired keys as long as access tokens live (plus a margin); an
/// explicit retention shorter than that would make tokens fail before they expire.
fn check_key_retention(ring: &KeyRing, access: Duration) -> Result<(), ConfigError> {
    let Some((retention, explicit)) = ring.shared_retention() else {
        return Ok(());
    };
    let needed = access + Duration::from_secs(60);
    if !explicit {
        ring.set_default_retention(access + crate::keys::RETENTION_MARGIN);
    } else if retention < needed {
        return Err(ConfigError::KeyRetentionTooShort {
            retention,
            access_token_ttl: access,
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
