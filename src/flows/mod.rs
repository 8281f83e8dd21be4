//! The grants as socket-free functions over the store and issuer traits.
//!
//! Each flow takes a typed request and an [`Env`] and returns a typed outcome; nothing here
//! knows about HTTP, cookies or pages. `src/server/` is the thin adapter around these
//! functions: it parses the wire format, calls the flow and renders the outcome. Grant rules
//! (expiry, grace windows, leeway, retention) are tested here with a [`FakeClock`] instead of
//! HTTP round trips.
//!
//! - [`authorize`]: `/authorize` and its login and consent forms, up to the code.
//! - [`token`]: the authorization-code exchange and refresh-token rotation.
//! - [`client_auth`]: who the calling client is (secrets compared in constant time).
//! - `client_metadata` (feature `client-metadata`): a `client_id` URL resolved through its
//!   client ID metadata document (fetched, checked, cached).
//! - `client_assertion` (feature `private-key-jwt`): RFC 7523 `private_key_jwt` assertions.
//! - [`register`]: RFC 7591 dynamic client registration and the redirect URI policy.
//! - [`revoke`]: RFC 7009 revocation.
//! - [`introspect`]: RFC 7662 introspection.
//!
//! The clock and the random source are injected so that tests control time and can tell
//! which secrets a flow drew.

pub(crate) mod authorize;
#[cfg(feature = "private-key-jwt")]
pub(crate) mod client_assertion;
pub(crate) mod client_auth;
#[cfg(feature = "client-metadata")]
pub(crate) mod client_metadata;
pub(crate) mod introspect;
pub(crate) mod register;
pub(crate) mod revoke;
#[cfg(test)]
mod test_env;
pub(crate) mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::authn::{ScopePolicy, UserAuthenticator};
use crate::config::McpOAuthConfig;
use crate::issuer::TokenIssuer;
use crate::store::{Client, ClientStore, GrantStore};

/// Where a flow reads the time: seconds since the Unix epoch.
pub(crate) trait Clock: Send + Sync + 'static {
    /// Now, in seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        crate::util::now()
    }
}

/// A clock that only moves when told to, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeClock(std::sync::atomic::AtomicU64);

#[cfg(test)]
impl FakeClock {
    /// A clock standing at `now`.
    pub(crate) fn at(now: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(now))
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_secs(), std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where a flow draws secrets (codes, refresh tokens, client ids and secrets).
pub(crate) trait Random: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);

    /// `bytes` random bytes, base64url without padding.
    fn token(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.fill(&mut buf);
        crate::util::token_text(&buf)
    }
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        crate::util::fill_random(buf);
    }
}

/// A client's use is recorded at most this often (seconds): a touch is skipped while the
/// recorded time is younger.
pub(crate) const TOUCH_INTERVAL_SECS: u64 = 3600;

/// Token lifetimes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub(crate) code: Duration,
    pub(crate) access: Duration,
    pub(crate) refresh: Duration,
    pub(crate) refresh_grace: Duration,
    pub(crate) pending: Duration,
}

/// Everything a flow reads besides its request: the configuration (resources, scopes,
/// issuer), the stores, the token issuer, the clock, the random source and the lifetimes.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Env {
    /// Resources, issuer string, scopes, default scopes, hierarchy.
    pub(crate) cfg: McpOAuthConfig,
    pub(crate) clients: Arc<dyn ClientStore>,
    pub(crate) grants: Arc<dyn GrantStore>,
    /// Clients configured in code, looked up before the store.
    pub(crate) static_clients: Arc<HashMap<String, Client>>,
    pub(crate) issuer: Arc<dyn TokenIssuer>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Arc<dyn Random>,
    pub(crate) lifetimes: Lifetimes,
    /// Who the user is, and whether everyone is approved without a consent page.
    pub(crate) authenticator: Arc<dyn UserAuthenticator>,
    /// The host's narrowing of what a user may grant a client, if any.
    pub(crate) scope_policy: Option<Arc<dyn ScopePolicy>>,
    /// Whether a consent, once given, covers later requests for the same scopes.
    pub(crate) remember_consent: bool,
    /// Custom redirect URI schemes allowed besides reverse-domain ones (lower case).
    pub(crate) redirect_schemes: Arc<[String]>,
    /// Whether a dynamically registered client's `scope` caps what it is granted.
    pub(crate) registered_scope_is_ceiling: bool,
    /// The configured clients allowed to introspect (resource servers).
    pub(crate) introspection_clients: Arc<[String]>,
    /// Client ID metadata documents, unless switched off.
    #[cfg(feature = "client-metadata")]
    pub(crate) client_metadata: Option<Arc<client_metadata::Resolver>>,
    /// How long a never-used dynamic client is kept after its registration (`None`: the
    /// rule is off); registration reuses such a client only while it has time left.
    pub(crate) unused_client_after: Option<Duration>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("issuer", &self.cfg.issuer())
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// Now, from the injected clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// A client by id: configured clients first, then a client ID metadata document (when
    /// on, for a URL id; from the cache, or fetched), then the store. A document that
    /// cannot be fetched now is [`StoreError::Unavailable`](crate::store::StoreError) (`503`,
    /// never `invalid_client`); one that is fetched but unusable is no client.
    pub(crate) async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<Client>, crate::store::StoreError> {
        if let Some(c) = self.static_clients.get(client_id) {
            return Ok(Some(c.clone()));
        }
        #[cfg(feature = "client-metadata")]
        if let Some(resolver) = &self.client_metadata
            && client_metadata::is_metadata_url(client_id)
        {
            return match resolver.resolve(client_id, self.now()).await {
                Ok(c) => Ok(Some(c)),
                Err(client_metadata::ResolveError::Invalid(problem)) => {
                    tracing::info!(target: "mcp_oauth::client_metadata", %problem, "unusable client metadata document");
                    Ok(None)
                }
                Err(client_metadata::ResolveError::Unavailable { problem, .. }) => {
                    Err(crate::store::StoreError::Unavailable {
                        context: problem,
                        source: None,
                    })
                }
            };
        }
        self.clients.get_client(client_id).await
    }
}
