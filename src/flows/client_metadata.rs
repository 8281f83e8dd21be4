//! Resolving a client ID metadata document URL into a [`Client`]: the URL rules, the fetch
//! (through [`crate::outbound`]), the document checks, the cache and the per-host limit.
//! The rules are documented on [`crate::server::ClientMetadataPolicy`]'s module. A document
//! asking for `private_key_jwt` (feature `private-key-jwt`) becomes a
//! [`TokenEndpointAuthMethod::PrivateKeyJwt`] client with its `jwks` or `jwks_uri` in
//! [`Client::extra`], checked here as registration checks them; `flows::client_assertion`
//! then authenticates it like any other such client.
//!
//! The fetch is behind the [`Fetch`] trait and time comes from the caller, so the tests
//! below drive the cache with a fake fetcher and a [`FakeClock`](super::FakeClock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::flows::register::check_redirect_uri_with;
use crate::outbound::{Fetched, Outbound, OutboundBuilder, OutboundError};
use crate::scope::ScopeSet;
use crate::server::ClientMetadataPolicy;
use crate::store::{ApplicationType, Client, ClientSource, TokenEndpointAuthMethod};

/// The most bytes of a document read (draft §5.2 recommends 5 KB).
pub(crate) const MAX_DOCUMENT: usize = 5 * 1024;
/// The most documents cached at once; past it the one closest to expiry goes.
const MAX_ENTRIES: usize = 10_000;
/// `Retry-After` (seconds) when a fetch failed.
const RETRY_AFTER: u64 = 10;

/// Whether `client_id` has the shape of a metadata document URL (`https://` with a path):
/// such ids are reserved for documents (no configured or registered id starts so).
pub(crate) fn is_metadata_url(client_id: &str) -> bool {
    client_id
        .strip_prefix("https://")
        .is_some_and(|rest| rest.contains('/'))
}

/// Why a document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// It could not be fetched now (timeout, connection failure, a `5xx`, the per-host
    /// limit): try again after `retry_after` seconds. Never cached.
    Unavailable { problem: String, retry_after: u64 },
    /// It was fetched (or its URL checked) and cannot be used: the problem, for the page.
    Invalid(String),
}

/// Where documents come from: the guarded outbound client, or a fake in tests.
#[async_trait]
pub(crate) trait Fetch: Send + Sync + 'static {
    /// `GET url` accepting JSON, at most [`MAX_DOCUMENT`] bytes.
    async fn get(&self, url: &str) -> Result<Fetched, OutboundError>;
}

#[async_trait]
impl Fetch for Outbound {
    async fn get(&self, url: &str) -> Result<Fetched, OutboundError> {
        Self::get(self, url, "application/json", MAX_DOCUMENT).await
    }
}

#[derive(Debug)]
struct Entry {
    client: Client,
    expires_at: u64,
}

#[derive(Debug)]
struct HostState {
    window_start: u64,
    started: u32,
    running: Arc<tokio::sync::Semaphore>,
}

/// Resolves and caches metadata documents. One per server, shared by its handlers.
pub(crate) struct Resolver {
    fetch: Arc<dyn Fetch>,
    policy: ClientMetadataPolicy,
    redirect_schemes: Arc<[String]>,
    cache: Mutex<HashMap<String, Entry>>,
    hosts: Mutex<HashMap<String, HostState>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver fetching through the guarded outbound client set up from `policy`.
    pub(crate) fn new(
        policy: ClientMetadataPolicy,
        redirect_schemes: Arc<[String]>,
    ) -> Result<Self, OutboundError> {
        let mut b = OutboundBuilder::default();
        if policy.allow_loopback {
            b.allow_loopback();
        }
        if policy.allow_private_networks {
            b.allow_private_networks();
        }
        b.timeouts(policy.connect_timeout, policy.timeout);
        for pem in &policy.root_certificates {
            b.add_root_certificates(pem);
        }
        let outbound = b.build()?;
        Ok(Self::with_fetch(
            Arc::new(outbound),
            policy,
            redirect_schemes,
        ))
    }

    /// A resolver over any fetcher.
    pub(crate) fn with_fetch(
        fetch: Arc<dyn Fetch>,
        policy: ClientMetadataPolicy,
        redirect_schemes: Arc<[String]>,
    ) -> Self {
        Self {
            fetch,
            policy,
            redirect_schemes,
            cache: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, url: &str, now: u64) -> Option<Client> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(url)
            .filter(|e| e.expires_at > now)
            .map(|e| e.client.clone())
    }

    /// The client `url` names: from the cache while fresh, else fetched and checked.
    pub(crate) async fn resolve(&self, url: &str, now: u64) -> Result<Client, ResolveError> {
        let host = check_url(url, self.policy.hosts.as_deref())?;
        if let Some(c) = self.cached(url, now) {
            return Ok(c);
        }
        let running = self.admit(&host, now)?;
        // At most `host_concurrency` fetches per host at once; a request that waited finds
        // the document a finished fetch just cached.
        // The wait is bounded like a fetch: a host that answers slowly does not pile up
        // requests waiting for it.
        let _permit = match tokio::time::timeout(self.policy.timeout, running.acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(unavailable(&format!(
                    "other fetches from {host} are still running"
                )));
            }
        };
        if let Some(c) = self.cached(url, now) {
            return Ok(c);
        }
        let fetched = self.fetch.get(url).await.map_err(fetch_error)?;
        let (client, ttl) = self.check_document(url, &fetched, now)?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, e| e.expires_at > now);
            if cache.len() >= MAX_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            url.to_owned(),
            Entry {
                client: client.clone(),
                expires_at: now.saturating_add(ttl),
            },
        );
        Ok(client)
    }

    /// Counts a fetch against `host`'s minute; the host's concurrency gate.
    fn admit(&self, host: &str, now: u64) -> Result<Arc<tokio::sync::Semaphore>, ResolveError> {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hosts.len() >= MAX_ENTRIES {
            // Keep hosts counted this minute or with a fetch running.
            let limit = self.policy.host_concurrency;
            hosts.retain(|_, h| {
                now.saturating_sub(h.window_start) < 60 || h.running.available_permits() < limit
            });
        }
        let state = hosts.entry(host.to_owned()).or_insert_with(|| HostState {
            window_start: now,
            started: 0,
            running: Arc::new(tokio::sync::Semaphore::new(self.policy.host_concurrency)),
        });
        if now.saturating_sub(state.window_start) >= 60 {
            state.window_start = now;
            state.started = 0;
        }
        if state.started >= self.policy.host_fetches_per_minute {
            let retry_after = (state.window_start + 60).saturating_sub(now).max(1);
            tracing::warn!(target: "mcp_oauth::client_metadata", host, "per-host fetch limit reached");
            return Err(ResolveError::Unavailable {
                problem: format!(
                    "too many client metadata documents were fetched from {host} in the last minute"
                ),
                retry_after,
            });
        }
        state.started += 1;
        Ok(state.running.clone())
    }

    /// Checks a fetched document; the client and how long to cache it.
    fn check_document(
        &self,
        url: &str,
        fetched: &Fetched,
        now: u64,
    ) -> Result<(Client, u64), ResolveError> {
        let status = fetched.status.as_u16();
        if status == 429 || status >= 500 {
            return Err(ResolveError::Unavailable {
                problem: format!("the client metadata document at {url} answered HTTP {status}"),
                retry_after: RETRY_AFTER,
            });
        }
        if status != 200 {
            return Err(invalid(format!(
                "the client metadata document at {url} answered HTTP {status}, not 200"
            )));
        }
        let content_type = fetched
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(invalid(format!(
                "the client metadata document at {url} is served as {}, not JSON",
                if content_type.is_empty() {
                    "no content type".to_owned()
                } else {
                    printable(content_type)
                }
            )));
        }
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&fetched.body) else {
            return Err(invalid(format!(
                "the client metadata document at {url} is not a JSON object"
            )));
        };
        let client = self.check_members(url, doc, now)?;
        let ttl = self.ttl(&fetched.headers);
        Ok((client, ttl))
    }

    fn check_members(
        &self,
        url: &str,
        mut doc: Map<String, Value>,
        now: u64,
    ) -> Result<Client, ResolveError> {
        let bad = |what: &str| invalid(format!("the client metadata document at {url} {what}"));
        match doc.remove("client_id") {
            Some(Value::String(id)) if id == url => {}
            Some(Value::String(id)) => {
                return Err(bad(&format!(
                    "names another client_id ({}); it must be the document's own URL exactly",
                    printable(&id)
                )));
            }
            _ => return Err(bad("has no client_id")),
        }
        let client_name = match doc.remove("client_name") {
            Some(Value::String(n)) if !n.trim().is_empty() => n,
            _ => return Err(bad("has no client_name")),
        };
        let redirect_uris: Vec<String> = match doc.remove("redirect_uris") {
            Some(Value::Array(list)) if !list.is_empty() => {
                let mut out = Vec::with_capacity(list.len());
                for v in list {
                    let Value::String(uri) = v else {
                        return Err(bad("has a redirect_uris entry that is not a string"));
                    };
                    if let Err(why) = check_redirect_uri_with(&uri, &self.redirect_schemes) {
                        return Err(bad(&format!(
                            "lists the redirect URI {}, which this server does not allow: {why}",
                            printable(&uri)
                        )));
                    }
                    out.push(uri);
                }
                out
            }
            _ => return Err(bad("has no redirect_uris")),
        };
        if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
            return Err(bad(
                "holds a client_secret; a client identified by a metadata document has no shared secret",
            ));
        }
        let method = match doc.remove("token_endpoint_auth_method") {
            None => None,
            Some(Value::String(m)) => Some(m),
            Some(_) => return Err(bad("has a token_endpoint_auth_method that is not a string")),
        };
        let supported: Option<Vec<String>> =
            match doc.remove("token_endpoint_auth_methods_supported") {
                None => None,
                Some(Value::Array(list)) => Some(
                    list.into_iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                Some(_) => {
                    return Err(bad(
                        "has a token_endpoint_auth_methods_supported that is not a list",
                    ));
                }
            };
        let token_endpoint_auth_method =
            auth_method(method.as_deref(), supported.as_deref()).map_err(|why| bad(&why))?;
        if let Some(rt) = doc.remove("response_types") {
            let ok = rt
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v.as_str() == Some("code")));
            if !ok {
                return Err(bad("has response_types without code"));
            }
        }
        let grant_types: Vec<String> = match doc.remove("grant_types") {
            None => vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            Some(Value::Array(list)) => {
                let list: Vec<String> = list
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .filter(|g| g == "authorization_code" || g == "refresh_token")
                    .collect();
                if !list.iter().any(|g| g == "authorization_code") {
                    return Err(bad("has grant_types without authorization_code"));
                }
                list
            }
            Some(_) => return Err(bad("has grant_types that is not a list")),
        };
        if doc.contains_key("jwks") && doc.contains_key("jwks_uri") {
            return Err(bad(
                "has both jwks and jwks_uri; a client publishes its keys in exactly one of them",
            ));
        }
        #[cfg(feature = "private-key-jwt")]
        if token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt {
            check_keys(&doc).map_err(|why| bad(&why))?;
        }
        let scope = match doc.remove("scope") {
            None => None,
            Some(Value::String(s)) => match ScopeSet::parse(&s) {
                Ok(set) => Some(set),
                Err(_) => return Err(bad("has a scope that is not a valid scope list")),
            },
            Some(_) => return Err(bad("has a scope that is not a string")),
        };
        let application_type = match doc.remove("application_type") {
            Some(Value::String(t)) if t == "native" => ApplicationType::Native,
            Some(Value::String(t)) if t == "web" => ApplicationType::Web,
            None if !redirect_uris.iter().any(|u| u.starts_with("https:")) => {
                ApplicationType::Native
            }
            None => ApplicationType::Web,
            Some(_) => return Err(bad("has an application_type other than native or web")),
        };
        Ok(Client {
            client_id: url.to_owned(),
            secret_hash: None,
            secret_expires_at: 0,
            client_name: Some(client_name),
            redirect_uris,
            grant_types,
            token_endpoint_auth_method,
            application_type,
            scope,
            // `jwks`, `jwks_uri`, `client_uri`, `logo_uri`, … as published.
            extra: doc,
            issued_at: now,
            last_used_at: now,
            source: ClientSource::MetadataDocument,
        })
    }

    /// How long to cache a good document: its `max-age` within the bounds.
    fn ttl(&self, headers: &reqwest::header::HeaderMap) -> u64 {
        let p = &self.policy;
        let (min, max) = (p.min_ttl.as_secs(), p.max_ttl.as_secs().max(1));
        let (mut max_age, mut no_store) = (None, false);
        for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                if lower == "no-store" || lower == "no-cache" {
                    no_store = true;
                } else if let Some(secs) = lower.strip_prefix("max-age=")
                    && let Ok(secs) = secs.trim_matches('"').parse::<u64>()
                {
                    max_age = Some(max_age.map_or(secs, |m: u64| m.min(secs)));
                }
            }
        }
        let ttl = if no_store {
            0
        } else {
            max_age.unwrap_or(p.default_ttl.as_secs())
        };
        ttl.clamp(min.min(max), max)
    }
}

/// The token endpoint authentication a document asks for, from its
/// `token_endpoint_auth_method` and `token_endpoint_auth_methods_supported`: `none` when it
/// names nothing or offers `none` among others (the client is then public, as ChatGPT's
/// document allows), `private_key_jwt` when that is all it asks for (feature
/// `private-key-jwt`); anything else is the problem, for the page.
fn auth_method(
    method: Option<&str>,
    supported: Option<&[String]>,
) -> Result<TokenEndpointAuthMethod, String> {
    let shared_secret = |m: &str| m.starts_with("client_secret");
    if let Some(m) = method.filter(|m| shared_secret(m)) {
        return Err(format!(
            "asks for {}, a shared-secret authentication method; a client identified by a metadata document has no shared secret (this server supports {SUPPORTED_METHODS} for such clients)",
            printable(m)
        ));
    }
    let offers = |name: &str| match (method, supported) {
        (_, Some(list)) => list.iter().any(|m| m == name),
        (None, None) => name == "none",
        (Some(m), None) => m == name,
    };
    if offers("none") {
        return Ok(TokenEndpointAuthMethod::None);
    }
    // The client's own choice first, else the first method of its list.
    let asked = method
        .or_else(|| supported.and_then(|l| l.first()).map(String::as_str))
        .unwrap_or("(nothing)");
    if asked == "private_key_jwt" || (method.is_none() && offers("private_key_jwt")) {
        #[cfg(feature = "private-key-jwt")]
        return Ok(TokenEndpointAuthMethod::PrivateKeyJwt);
        #[cfg(not(feature = "private-key-jwt"))]
        return Err(
            "asks for token endpoint authentication \"private_key_jwt\", which this server is not built to support (the private-key-jwt feature is off); it supports none"
                .to_owned(),
        );
    }
    Err(format!(
        "asks for token endpoint authentication {}, which this server does not support for such clients (it supports {SUPPORTED_METHODS})",
        printable(asked)
    ))
}

/// The methods a document client may use, for problem descriptions.
#[cfg(feature = "private-key-jwt")]
const SUPPORTED_METHODS: &str = "none and private_key_jwt";
#[cfg(not(feature = "private-key-jwt"))]
const SUPPORTED_METHODS: &str = "none";

/// The keys of a `private_key_jwt` document, checked as dynamic registration checks them:
/// exactly one of `jwks` (a JWK Set of at most 10 public keys, no private member) and
/// `jwks_uri` (an absolute `https` URL without user information or fragment; where it
/// points is decided when it is fetched, by the same SSRF guard as a registered client's).
#[cfg(feature = "private-key-jwt")]
fn check_keys(doc: &Map<String, Value>) -> Result<(), String> {
    let present = |f: &str| doc.get(f).filter(|v| !v.is_null());
    match (present("jwks"), present("jwks_uri")) {
        (Some(jwks), None) => crate::flows::client_assertion::parse_jwks(jwks)
            .map(drop)
            .map_err(|why| format!("has an unusable jwks: {why}")),
        (None, Some(Value::String(uri))) => crate::flows::register::check_jwks_uri(uri)
            .map_err(|why| format!("has an unusable jwks_uri: {why}")),
        (None, Some(_)) => Err("has a jwks_uri that is not a string".to_owned()),
        (Some(_), Some(_)) => Err(
            "has both jwks and jwks_uri; a client publishes its keys in exactly one of them"
                .to_owned(),
        ),
        (None, None) => Err(
            "asks for private_key_jwt but publishes no keys: it needs jwks or jwks_uri".to_owned(),
        ),
    }
}

fn unavailable(problem: &str) -> ResolveError {
    ResolveError::Unavailable {
        problem: problem.to_owned(),
        retry_after: RETRY_AFTER,
    }
}

fn invalid(problem: String) -> ResolveError {
    ResolveError::Invalid(problem)
}

/// Text from a document or a header, safe to show: printable, at most 100 characters.
fn printable(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(100).collect();
    format!("{clean:?}")
}

/// `application/json` or `application/<something>+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Checks the shape of a document URL (draft §3) and the host allow-list; the host.
fn check_url(url: &str, hosts: Option<&[String]>) -> Result<String, ResolveError> {
    let bad = |why: &str| {
        invalid(format!(
            "the client_id {} is not a usable client metadata document URL: {why}",
            printable(url)
        ))
    };
    let Ok(parsed) = url::Url::parse(url) else {
        return Err(bad("it is not a URL"));
    };
    if parsed.scheme() != "https" {
        return Err(bad("it must be https"));
    }
    let Some(host) = parsed.host_str().map(str::to_owned) else {
        return Err(bad("it has no host"));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it holds user information"));
    }
    if parsed.fragment().is_some() || url.contains('#') {
        return Err(bad("it has a fragment"));
    }
    if parsed.query().is_some() {
        return Err(bad("it has a query"));
    }
    if parsed.path() == "/" || parsed.path().is_empty() {
        return Err(bad("it has no path"));
    }
    let raw_path = url
        .strip_prefix("https://")
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or("");
    if raw_path.split('/').any(|seg| {
        seg == "."
            || seg == ".."
            || seg.eq_ignore_ascii_case("%2e")
            || seg.eq_ignore_ascii_case("%2e%2e")
    }) {
        return Err(bad("it has a . or .. path segment"));
    }
    if parsed.as_str() != url {
        return Err(bad(&format!(
            "it is not in normal form (it would be {})",
            printable(parsed.as_str())
        )));
    }
    if let Some(list) = hosts
        && !list.contains(&host)
    {
        return Err(invalid(format!(
            "this server does not accept clients from {host} (the client_id {} is not on its list of client hosts)",
            printable(url)
        )));
    }
    Ok(host)
}

/// A fetch failure: refused addresses, redirects and oversized bodies are the document's
/// problem; the rest may pass.
fn fetch_error(e: OutboundError) -> ResolveError {
    match e {
        OutboundError::AddressRefused { host, addr, class } => invalid(format!(
            "the client metadata document's host {host} is {addr}, {class}, which this server does not fetch from"
        )),
        OutboundError::Redirect { url, status } => invalid(format!(
            "the client metadata document at {url} answered HTTP {status}, a redirect; redirects are not followed"
        )),
        OutboundError::TooLarge { url, .. } => invalid(format!(
            "the client metadata document at {url} is larger than {MAX_DOCUMENT} bytes"
        )),
        e @ (OutboundError::InvalidUrl { .. } | OutboundError::HttpRefused { .. }) => {
            invalid(e.to_string())
        }
        OutboundError::Timeout { url } => ResolveError::Unavailable {
            problem: format!("fetching the client metadata document at {url} timed out"),
            retry_after: RETRY_AFTER,
        },
        e => {
            tracing::warn!(target: "mcp_oauth::client_metadata", error = %e, "fetch failed");
            ResolveError::Unavailable {
                problem: format!("{e}"),
                retry_after: RETRY_AFTER,
            }
        }
    }
}

#[cfg(test)]
mod tests;
