//! `private_key_jwt` (RFC 7523) at this server: the fetching and caching of clients'
//! `jwks_uri` key sets, and the builder switches for it (feature `private-key-jwt`).
//!
//! A client authenticates with `private_key_jwt` when it registered (dynamic registration with
//! `token_endpoint_auth_method: private_key_jwt` and exactly one of `jwks` / `jwks_uri`) or was
//! configured ([`StaticClient::private_key_jwt`](super::StaticClient::private_key_jwt),
//! [`StaticClient::private_key_jwt_uri`](super::StaticClient::private_key_jwt_uri)) that way,
//! or (with the `client-metadata` feature) its client ID metadata document asks for it with
//! exactly one of `jwks` / `jwks_uri` (see `client_metadata`; its `jwks_uri` is fetched here,
//! under the same switches).
//! At the token, revocation and introspection endpoints it then sends
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//! `client_assertion=<JWT>`, which must meet these rules (each failure is `401
//! invalid_client` naming the rule):
//!
//! - `alg` ES256, EdDSA, RS256 or PS256 (never `none` or HMAC), verified with the client's
//!   key named by `kid` (or its only fitting key when there is no `kid`);
//! - `iss` = `sub` = the client id;
//! - `aud` = the issuer or the token endpoint URL, byte for byte, nothing else (a root
//!   issuer may carry its trailing slash);
//! - `exp` present, not past (60 s leeway), at most 10 minutes ahead; `nbf`, `iat` not in
//!   the future;
//! - `jti` present and single-use: recorded until `exp` in the grant store
//!   ([`GrantStore::record_assertion_id`](crate::store::GrantStore::record_assertion_id)),
//!   so every instance sharing the store refuses a replay.
//!
//! A `private_key_jwt` client that sends only its `client_id` or a secret is refused; an
//! assertion together with a secret or HTTP Basic is `invalid_request`.
//!
//! A `jwks_uri` is a URL the registering client chose, so it is fetched like every outbound
//! request of this crate ([`outbound`](crate::outbound)): SSRF-guarded (loopback, private,
//! link-local and metadata addresses refused unless allowed here), no redirects, short
//! timeouts, at most 64 KiB, `200` with a JSON JWK Set only. The keys are cached per URL
//! (5 minutes by default, or the response's `Cache-Control: max-age` within 1 minute and
//! 1 hour); an assertion naming a `kid` the cached set lacks makes the set be fetched again,
//! at most once per [cooldown](AuthorizationServerBuilder::client_jwks_refetch_cooldown)
//! (30 s by default), so a stream of made-up `kid`s cannot become a stream of fetches. A
//! set that cannot be fetched (and none cached) is `503 temporarily_unavailable`, never
//! `invalid_client`; a failed refresh keeps serving the keys fetched before.
//!
//! ```
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::{AuthorizationServer, StaticClient};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let jwks = serde_json::json!({"keys": [{
//!     "kty": "EC", "crv": "P-256", "kid": "backend-1", "alg": "ES256",
//!     "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//!     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
//! }]});
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     // A configured client that signs its assertions with the key above.
//!     .client(StaticClient::private_key_jwt("backend", &jwks, ["https://app.example.com/cb"])?)
//!     // Development only: let clients publish their jwks_uri on this machine.
//!     .client_jwks_allow_loopback()
//!     .build()
//!     .await?;
//! # let _ = server; Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::AuthorizationServerBuilder;
use crate::flows::client_assertion::{ClientKey, KeyFetchError, KeyFetcher, parse_jwks};
use crate::outbound::{Outbound, OutboundBuilder, OutboundError};

/// How long fetched keys are used without `Cache-Control`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The bounds a `max-age` is clamped to.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// The default least time between two fetches of one URL for unknown `kid`s.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// The largest key set read.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// The most URLs cached (the least recently fetched goes).
const MAX_ENTRIES: usize = 1024;

/// The `jwks_uri` fetch settings of an authorization server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    allow_loopback: bool,
    allow_private_networks: bool,
    cooldown: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            allow_private_networks: false,
            cooldown: DEFAULT_COOLDOWN,
        }
    }
}

impl AuthorizationServerBuilder {
    /// Lets `private_key_jwt` clients' `jwks_uri` be on a loopback address (and plain
    /// `http` to a loopback host): for development and tests, where the client runs on the
    /// same machine. Off by default. See [`client_jwks`](crate::server::client_jwks).
    pub fn client_jwks_allow_loopback(mut self) -> Self {
        self.client_jwks.allow_loopback = true;
        self
    }

    /// Lets `private_key_jwt` clients' `jwks_uri` be on a private network address (RFC 1918,
    /// ULA, shared address space): for clients inside the operator's own network. Off by
    /// default.
    pub fn client_jwks_allow_private_networks(mut self) -> Self {
        self.client_jwks.allow_private_networks = true;
        self
    }

    /// The least time between two fetches of one client's `jwks_uri` caused by assertions
    /// naming a `kid` the cached set lacks (30 s by default, at least 1 s).
    pub fn client_jwks_refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.client_jwks.cooldown = cooldown.max(Duration::from_secs(1));
        self
    }
}

/// The outcome of a fetch (or of the cache standing in for one).
type Fetched = Result<Arc<[ClientKey]>, KeyFetchError>;

/// One cached URL.
struct Entry {
    /// The last keys fetched, if any fetch succeeded.
    keys: Option<Arc<[ClientKey]>>,
    /// Until when `keys` are used without fetching.
    fresh_until: Instant,
    /// When the last fetch started.
    last_attempt: Instant,
    /// Why the last fetch failed, when it did.
    last_error: Option<String>,
}

/// Fetches and caches the key sets of `jwks_uri` clients; see the [module docs](self).
pub(crate) struct ClientJwksFetcher {
    http: Outbound,
    cooldown: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    /// One fetch at a time (a handful of `jwks_uri` clients at most is the norm).
    flight: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for ClientJwksFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientJwksFetcher")
            .field("cooldown", &self.cooldown)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ClientJwksFetcher {
    /// A fetcher with these settings.
    pub(crate) fn new(options: Options) -> Result<Self, OutboundError> {
        let mut http = OutboundBuilder::default();
        if options.allow_loopback {
            http.allow_loopback();
        }
        if options.allow_private_networks {
            http.allow_private_networks();
        }
        Ok(Self {
            http: http.build()?,
            cooldown: options.cooldown,
            entries: Mutex::new(HashMap::new()),
            flight: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        })
    }

    /// The cached answer for `uri`, when no fetch is wanted or allowed now; `None` to fetch.
    /// `since`: the last attempt the caller already saw (another caller fetched after it).
    fn cached(
        &self,
        uri: &str,
        refetch: bool,
        since: Option<Instant>,
    ) -> (Option<Fetched>, Option<Instant>) {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(e) = entries.get(uri) else {
            return (None, None);
        };
        let now = Instant::now();
        let cooled = now.saturating_duration_since(e.last_attempt) >= self.cooldown;
        let someone_fetched = since.is_some_and(|s| s != e.last_attempt);
        let answer = || match &e.keys {
            Some(k) => Ok(k.clone()),
            None => Err(KeyFetchError(
                e.last_error
                    .clone()
                    .unwrap_or_else(|| "no key set fetched yet".to_owned()),
            )),
        };
        let use_cache = someone_fetched
            || match (&e.keys, refetch) {
                (Some(_), false) => now < e.fresh_until,
                // Unknown kid, or a failed fetch: not again within the cooldown.
                _ => !cooled,
            };
        (use_cache.then(answer), Some(e.last_attempt))
    }

    /// Fetches `uri` once and records the outcome.
    async fn fetch(&self, uri: &str) -> Fetched {
        let started = Instant::now();
        {
            // The attempt counts from its start, even if the caller goes away mid-fetch.
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if !entries.contains_key(uri) && entries.len() >= MAX_ENTRIES {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_attempt)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    entries.remove(&k);
                }
            }
            let e = entries.entry(uri.to_owned()).or_insert(Entry {
                keys: None,
                fresh_until: started,
                last_attempt: started,
                last_error: None,
            });
            e.last_attempt = started;
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = self.get(uri).await;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(e) = entries.get_mut(uri) else {
            return outcome.map(|(k, _)| k);
        };
        match outcome {
            Ok((keys, ttl)) => {
                tracing::debug!(target: "mcp_oauth::client_jwks", jwks_uri = %uri, keys = keys.len(), "client JWKS fetched");
                e.keys = Some(keys.clone());
                e.fresh_until = Instant::now() + ttl;
                e.last_error = None;
                Ok(keys)
            }
            Err(failure) => {
                tracing::warn!(target: "mcp_oauth::client_jwks", jwks_uri = %uri, error = %failure.0,
                    serving_stale_keys = e.keys.is_some(), "client JWKS fetch failed");
                e.last_error = Some(failure.0.clone());
                match &e.keys {
                    Some(stale) => Ok(stale.clone()),
                    None => Err(failure),
                }
            }
        }
    }

    /// One GET of the key set, with its time to live.
    async fn get(&self, uri: &str) -> Result<(Arc<[ClientKey]>, Duration), KeyFetchError> {
        let fetched = self
            .http
            .get(
                uri,
                "application/jwk-set+json, application/json",
                MAX_JWKS_BYTES,
            )
            .await
            .map_err(|e| KeyFetchError(e.to_string()))?;
        if fetched.status != reqwest::StatusCode::OK {
            return Err(KeyFetchError(format!(
                "{uri} answered HTTP {}",
                fetched.status.as_u16()
            )));
        }
        let doc: serde_json::Value = serde_json::from_slice(&fetched.body)
            .map_err(|_| KeyFetchError(format!("{uri} did not answer JSON")))?;
        let keys = parse_jwks(&doc).map_err(|why| KeyFetchError(format!("{uri}: {why}")))?;
        let ttl = fetched
            .headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age)
            .map_or(DEFAULT_TTL, |age| age.clamp(MIN_TTL, MAX_TTL));
        Ok((keys.into(), ttl))
    }
}

/// The `max-age` of one `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let (name, arg) = d.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| arg.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[async_trait]
impl KeyFetcher for ClientJwksFetcher {
    async fn keys(&self, uri: &str, refetch: bool) -> Result<Arc<[ClientKey]>, KeyFetchError> {
        let (answer, seen) = self.cached(uri, refetch, None);
        if let Some(answer) = answer {
            return answer;
        }
        let _flight = self.flight.lock().await;
        // Another caller may have fetched while this one waited.
        if let (Some(answer), _) = self.cached(uri, refetch, seen) {
            return answer;
        }
        self.fetch(uri).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
