//! [`RemoteJwksVerifier`]: JWT access tokens from an external authorization server (Auth0,
//! Keycloak, Okta, Entra, WorkOS, any OIDC provider), verified against the keys it publishes
//! at its `jwks_uri`.
//!
//! See [`RemoteJwksVerifier`] for the refresh and key-selection rules: they keep a flood of
//! forged tokens from turning into a flood of requests to the identity provider.
//!
//! ```no_run
//! use std::time::Duration;
//! use mcp_oauth::verify::{RemoteJwksVerifier, TokenVerifier};
//!
//! # async fn run(token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = RemoteJwksVerifier::builder("https://auth.example.com")
//!     .audience("https://mcp.example.com/mcp")
//!     .unknown_kid_cooldown(Duration::from_secs(60))
//!     .discover()
//!     .await?;
//! println!("keys from {}", verifier.jwks_uri());
//! let ctx = verifier.verify(token).await?;
//! println!("{} with scopes {}", ctx.subject(), ctx.scopes());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde_json::{Map, Value};

use super::jwt::{JwtRules, TypRule};
use super::{TokenVerifier, VerifyError};
use crate::config::Compat;
use crate::context::AuthContext;
use crate::outbound::{Outbound, OutboundBuilder, OutboundError};

/// Largest JWKS (and discovery document) the verifier reads.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Bounds applied to a `Cache-Control: max-age` sent by the identity provider.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// Smallest accepted `refresh_interval`.
const MIN_REFRESH: Duration = Duration::from_secs(1);

const DEFAULT_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a [`RemoteJwksVerifier`] could not be built or discovered.
///
/// Opaque, like `reqwest::Error`: ask [`is_config`](Self::is_config),
/// [`is_discovery`](Self::is_discovery) or [`is_fetch`](Self::is_fetch), print it, or walk
/// [`source`](std::error::Error::source) for the underlying HTTP error.
pub struct RemoteJwksError {
    inner: Box<ErrorInner>,
}

struct ErrorInner {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Config,
    Discovery,
    Fetch,
}

impl RemoteJwksError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(ErrorInner {
                kind,
                message: message.into(),
                source: None,
            }),
        }
    }

    fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    fn discovery(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Discovery, message)
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// The builder was misconfigured: no audience, an HMAC or empty algorithm list, an
    /// issuer that is not an `https` URL (plain `http` only for loopback hosts), a
    /// `jwks_uri` the outbound rules refuse, or an HTTP client that could not be created.
    #[must_use]
    pub fn is_config(&self) -> bool {
        self.inner.kind == ErrorKind::Config
    }

    /// Discovery failed: no metadata document could be fetched (the outbound rules refusing
    /// the issuer's address included), its `issuer` differs from the configured one, or it
    /// names no usable `jwks_uri`.
    #[must_use]
    pub fn is_discovery(&self) -> bool {
        self.inner.kind == ErrorKind::Discovery
    }

    /// The key set could not be fetched or parsed (network error, non-2xx status, more
    /// than 256 KiB, not a JWK Set).
    #[must_use]
    pub fn is_fetch(&self) -> bool {
        self.inner.kind == ErrorKind::Fetch
    }

    /// The outbound request error behind this one, if any: a refused address or scheme
    /// ([`OutboundError::is_refused`]), a timeout, a redirect, an oversized document.
    #[must_use]
    pub fn outbound_error(&self) -> Option<&OutboundError> {
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            if let Some(found) = e.downcast_ref::<OutboundError>() {
                return Some(found);
            }
            source = e.source();
        }
        None
    }
}

impl std::fmt::Debug for RemoteJwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RemoteJwksError");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::fmt::Display for RemoteJwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.inner.kind {
            ErrorKind::Config => "invalid remote JWKS configuration",
            ErrorKind::Discovery => "authorization server discovery failed",
            ErrorKind::Fetch => "fetching the JWKS failed",
        };
        write!(f, "{what}: {}", self.inner.message)
    }
}

impl std::error::Error for RemoteJwksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A failed fetch of a document, kept short and free of token material.
#[derive(Debug)]
enum FetchFailure {
    /// The request was refused or failed ([`OutboundError`]).
    Outbound(OutboundError),
    /// The server answered, but not with the document.
    Document { url: String, why: String },
}

impl FetchFailure {
    fn document(url: &str, why: impl Into<String>) -> Self {
        Self::Document {
            url: url.to_owned(),
            why: why.into(),
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Outbound(e) => {
                write!(f, "{e}")?;
                if let Some(source) = std::error::Error::source(e) {
                    write!(f, ": {source}")?;
                }
                Ok(())
            }
            Self::Document { url, why } => write!(f, "GET {url}: {why}"),
        }
    }
}

impl std::error::Error for FetchFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Outbound(e) => Some(e),
            Self::Document { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: everything goes through `crate::outbound`

/// `https`, or `http` to a loopback host (the crate's one loopback rule); no fragment. The
/// issuer is an identifier: whether it may be fetched is the outbound guard's decision.
fn check_issuer_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("issuer {value:?} is not a URL: {e}"))?;
    let loopback = url.host_str().is_some_and(crate::net::is_loopback_host);
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "issuer {value:?} must be an https URL (plain http only for loopback hosts)"
            ));
        }
    }
    if url.fragment().is_some() {
        return Err(format!("issuer {value:?} must not have a fragment"));
    }
    Ok(url)
}

/// GETs a JSON document of at most 256 KiB; returns it with the response's `max-age`.
async fn get_json(
    http: &Outbound,
    url: &str,
    accept: &'static str,
) -> Result<(Value, Option<Duration>), FetchFailure> {
    let fetched = http
        .get(url, accept, MAX_DOCUMENT_BYTES)
        .await
        .map_err(FetchFailure::Outbound)?;
    if !fetched.status.is_success() {
        return Err(FetchFailure::document(
            url,
            format!("answered HTTP {}", fetched.status),
        ));
    }
    let max_age = fetched
        .headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_max_age);
    let json = serde_json::from_slice(&fetched.body)
        .map_err(|e| FetchFailure::document(url, format!("not JSON ({e})")))?;
    Ok((json, max_age))
}

/// The `max-age` directive of one `Cache-Control` header value.
fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, arg) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        let secs: u64 = arg.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The key types the verifier can use, with their curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyType {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                Self::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Self::EcP256, Algorithm::ES256)
                | (Self::EcP384, Algorithm::ES384)
                | (Self::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// What a JWK's own `alg` member allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlg {
    /// No `alg`: any algorithm the key type fits.
    Any,
    /// Exactly this one.
    Only(Algorithm),
    /// An algorithm we do not verify with (an encryption algorithm, ES512, …).
    Unusable,
}

/// One usable verification key from the set.
struct RemoteKey {
    kid: Option<String>,
    key_type: KeyType,
    alg: KeyAlg,
    key: DecodingKey,
}

impl RemoteKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key_type.fits(alg)
            && match self.alg {
                KeyAlg::Any => true,
                KeyAlg::Only(a) => a == alg,
                KeyAlg::Unusable => false,
            }
    }

    /// Parses one JWK; `None` for keys the verifier must not or cannot use.
    fn parse(value: Value) -> Option<Self> {
        let obj = value.as_object()?;
        if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return None;
        }
        if let Some(ops) = obj.get("key_ops") {
            let verify = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verify {
                return None;
            }
        }
        let alg = match obj.get("alg") {
            None => KeyAlg::Any,
            Some(Value::String(name)) => match name.parse::<Algorithm>() {
                Ok(a) if a.family() != jsonwebtoken::AlgorithmFamily::Hmac => KeyAlg::Only(a),
                _ => KeyAlg::Unusable,
            },
            Some(_) => return None,
        };
        let kid = match obj.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return None,
        };
        let jwk: Jwk = serde_json::from_value(value).ok()?;
        let key_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyType::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyType::EcP256,
                EllipticCurve::P384 => KeyType::EcP384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => KeyType::Ed25519,
                _ => return None,
            },
            // Symmetric keys never verify anything here; unknown key types are skipped.
            _ => return None,
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Self {
            kid,
            key_type,
            alg,
            key,
        })
    }
}

/// Parses a JWK Set; keys the verifier cannot use are skipped, not fatal.
fn parse_jwks(doc: Value) -> Result<Vec<RemoteKey>, String> {
    let Value::Object(mut doc) = doc else {
        return Err("the JWKS is not a JSON object".to_owned());
    };
    let Some(Value::Array(keys)) = doc.remove("keys") else {
        return Err("the JWKS has no `keys` array".to_owned());
    };
    Ok(keys.into_iter().filter_map(RemoteKey::parse).collect())
}

enum Selected<'a> {
    Key(&'a RemoteKey),
    /// No key fits; a refresh may find one.
    Missing,
    /// A token without `kid` and several fitting keys: never guessed.
    Ambiguous,
}

fn select<'a>(keys: &'a [RemoteKey], header: &Header) -> Selected<'a> {
    match header.kid.as_deref() {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.fits(header.alg))
            .map_or(Selected::Missing, Selected::Key),
        None => {
            let mut fitting = keys.iter().filter(|k| k.fits(header.alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Selected::Key(k),
                (None, _) => Selected::Missing,
                (Some(_), Some(_)) => Selected::Ambiguous,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The verifier

/// The shared key snapshot. Replaced as a whole after every fetch attempt.
#[derive(Clone)]
struct KeyState {
    /// `None` until a fetch has succeeded.
    keys: Option<Arc<[RemoteKey]>>,
    /// Bumped on every fetch attempt, successful or not.
    generation: u64,
    /// When the periodic refresh is due.
    refresh_at: Instant,
    /// When the last fetch attempt started.
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, if it did.
    last_error: Option<Arc<FetchFailure>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// No keys yet.
    Initial,
    /// The token names a key the snapshot lacks.
    UnknownKey,
    /// The periodic refresh is due.
    Periodic,
}

struct Shared {
    issuer: String,
    jwks_uri: String,
    rules: JwtRules,
    http: Outbound,
    refresh_interval: Duration,
    cooldown: Duration,
    state: RwLock<KeyState>,
    /// Single flight: held for the duration of one fetch.
    refresh_lock: tokio::sync::Mutex<()>,
    /// A background refresh is scheduled or running.
    refreshing: AtomicBool,
    fetches: AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> KeyState {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn cooled_down(&self, state: &KeyState, now: Instant) -> bool {
        state
            .last_attempt
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cooldown)
    }

    /// Fetches the key set unless another caller did so since `seen` was taken or the
    /// rules for `reason` forbid it now; returns the current snapshot either way.
    ///
    /// The fetch runs in its own task, so a caller that goes away (a client hanging up)
    /// does not cancel it half-way: otherwise the attempt would go unrecorded and a client
    /// could make the verifier fetch again and again without waiting for the cooldown.
    async fn refresh(self: &Arc<Self>, reason: Reason, seen: &KeyState) -> KeyState {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return self.refresh_now(reason, seen).await;
        };
        let shared = Arc::clone(self);
        let seen = seen.clone();
        match handle
            .spawn(async move { shared.refresh_now(reason, &seen).await })
            .await
        {
            Ok(state) => state,
            Err(_) => self.snapshot(),
        }
    }

    /// [`refresh`](Self::refresh) in the caller's task.
    async fn refresh_now(&self, reason: Reason, seen: &KeyState) -> KeyState {
        let _flight = self.refresh_lock.lock().await;
        let current = self.snapshot();
        if current.generation != seen.generation {
            return current;
        }
        let now = Instant::now();
        let allowed = match reason {
            Reason::Initial | Reason::UnknownKey => self.cooled_down(&current, now),
            Reason::Periodic => now >= current.refresh_at,
        };
        if !allowed {
            return current;
        }
        let next = match self.fetch().await {
            Ok((keys, max_age)) => {
                let ttl = match max_age {
                    Some(age) => self
                        .refresh_interval
                        .max(age.clamp(MIN_MAX_AGE, MAX_REFRESH)),
                    None => self.refresh_interval,
                };
                tracing::debug!(
                    target: "mcp_oauth::remote_jwks",
                    jwks_uri = %self.jwks_uri,
                    keys = keys.len(),
                    next_refresh_secs = ttl.as_secs(),
                    ?reason,
                    "JWKS fetched"
                );
                if keys.is_empty() {
                    tracing::warn!(
                        target: "mcp_oauth::remote_jwks",
                        jwks_uri = %self.jwks_uri,
                        "the JWKS holds no key this verifier can use"
                    );
                }
                KeyState {
                    keys: Some(keys.into()),
                    generation: current.generation + 1,
                    refresh_at: Instant::now() + ttl,
                    last_attempt: Some(now),
                    last_error: None,
                }
            }
            Err(failure) => {
                tracing::warn!(
                    target: "mcp_oauth::remote_jwks",
                    jwks_uri = %self.jwks_uri,
                    error = %failure,
                    serving_stale_keys = current.keys.is_some(),
                    "JWKS refresh failed"
                );
                KeyState {
                    keys: current.keys.clone(),
                    generation: current.generation + 1,
                    refresh_at: now + self.cooldown,
                    last_attempt: Some(now),
                    last_error: Some(Arc::new(failure)),
                }
            }
        };
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = next.clone();
        next
    }

    async fn fetch(&self) -> Result<(Vec<RemoteKey>, Option<Duration>), FetchFailure> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (doc, max_age) = get_json(
            &self.http,
            &self.jwks_uri,
            "application/jwk-set+json, application/json",
        )
        .await?;
        let keys = parse_jwks(doc).map_err(|why| FetchFailure::document(&self.jwks_uri, why))?;
        Ok((keys, max_age))
    }
}

/// Verifies JWT access tokens from an external authorization server against its published
/// key set.
///
/// The verifier finds the key set through RFC 8414 / OpenID discovery (or takes a `jwks_uri`
/// directly), keeps the parsed keys in a shared snapshot and refreshes it without letting
/// callers turn it into a weapon against the identity provider:
///
/// - **One fetch at a time.** Concurrent requests that need new keys share one fetch.
/// - **Unknown `kid`s refresh at most once per cooldown** (default 30 s). During the cooldown a
///   token naming an unknown key is refused with [`VerifyError::UnknownKey`] without any
///   network traffic, so a flood of forged `kid`s costs the identity provider one request per
///   cooldown at most.
/// - **Periodic refresh** after `max(refresh_interval, Cache-Control max-age)`, with the
///   server's `max-age` clamped to \[1 min, 24 h\]. The refresh runs in the background while
///   requests keep using the keys they have.
/// - **Stale keys are served while the identity provider is down.** Only when no key set was
///   ever fetched is a token answered with [`VerifyError::Unavailable`] (HTTP 503). A failed
///   fetch is retried no sooner than the cooldown.
/// - **Algorithms come from our allow-list** (default RS256, PS256, ES256, EdDSA; HMAC is
///   refused when building), never from the token or the key. A key must fit the token's
///   algorithm (`kty`, and `crv` for EC and OKP keys); keys whose `use` is not `sig`, whose
///   `key_ops` lack `verify`, or whose own `alg` differs from the token's are skipped. A token
///   without `kid` is tried against the only fitting key, if there is exactly one.
/// - **Fetches go through [`crate::outbound`]**: `https` only, no redirects, 5 s connect and
///   10 s total timeouts (see [`http_timeouts`](RemoteJwksVerifierBuilder::http_timeouts)),
///   documents over 256 KiB refused while they stream in, and an SSRF guard that refuses
///   loopback, private, link-local and metadata addresses unless
///   [`allow_loopback`](RemoteJwksVerifierBuilder::allow_loopback) or
///   [`allow_private_networks`](RemoteJwksVerifierBuilder::allow_private_networks) says
///   otherwise. Token material is never logged.
///
/// Tokens must carry `iss` (the configured issuer, byte for byte), `aud` (one of the
/// configured audiences, RFC 8707), `sub` and `exp`; `typ` must be RFC 9068's `at+jwt` unless
/// [`Compat::GenericJwtType`](crate::Compat::GenericJwtType) is on. `jti` is not required.
///
/// Cheap to clone: clones share the key snapshot and the fetch counter.
///
/// ```
/// use mcp_oauth::Compat;
/// use mcp_oauth::verify::RemoteJwksVerifier;
///
/// // Auth0: the issuer ends in a slash, and access tokens are typed `JWT`.
/// let verifier = RemoteJwksVerifier::builder("https://example.eu.auth0.com/")
///     .audience("https://mcp.example.com/mcp")
///     .jwks_uri("https://example.eu.auth0.com/.well-known/jwks.json")
///     .compat(Compat::GenericJwtType)
///     .build()
///     .unwrap();
/// assert_eq!(verifier.fetch_count(), 0); // keys are fetched on first use
/// ```
#[derive(Clone)]
pub struct RemoteJwksVerifier {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for RemoteJwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.snapshot();
        f.debug_struct("RemoteJwksVerifier")
            .field("issuer", &self.inner.issuer)
            .field("jwks_uri", &self.inner.jwks_uri)
            .field("audiences", &self.inner.rules.audiences)
            .field("algorithms", &self.inner.rules.algorithms)
            .field("keys", &state.keys.as_ref().map(|k| k.len()))
            .field("fetch_count", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl RemoteJwksVerifier {
    /// Starts a builder for tokens whose `iss` is exactly `issuer` (byte for byte, as the
    /// authorization server's metadata states it, trailing slash included if it has one).
    pub fn builder(issuer: impl Into<String>) -> RemoteJwksVerifierBuilder {
        RemoteJwksVerifierBuilder {
            issuer: issuer.into(),
            audiences: Vec::new(),
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            jwks_uri: None,
            leeway: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            outbound: OutboundBuilder::default(),
            compat: Vec::new(),
        }
    }

    /// The URL the keys are fetched from.
    #[must_use]
    pub fn jwks_uri(&self) -> &str {
        &self.inner.jwks_uri
    }

    /// How many JWKS fetches this verifier (and its clones) has attempted, successful or
    /// not. For monitoring and tests.
    #[must_use]
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Starts a background refresh if one is due and none is running; without a Tokio
    /// runtime the caller refreshes inline.
    async fn refresh_if_due(&self, state: &KeyState) {
        if Instant::now() < state.refresh_at {
            return;
        }
        if self
            .inner
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // Clears the flag however the task ends (finished, or dropped with its runtime).
        struct Running(Arc<Shared>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.refreshing.store(false, Ordering::Release);
            }
        }
        let running = Running(self.inner.clone());
        let seen = state.clone();
        let task = async move {
            running.0.refresh_now(Reason::Periodic, &seen).await;
            drop(running);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(task);
            }
            Err(_) => task.await,
        }
    }

    fn decode(
        &self,
        token: &str,
        header: &Header,
        key: &RemoteKey,
    ) -> Result<AuthContext, VerifyError> {
        self.inner.rules.decode(token, header, &key.key)
    }
}

impl RemoteJwksVerifier {
    /// Finds the key for `header` (fetching or refreshing the key set as the rules above
    /// allow) and runs `decode` with it.
    async fn with_key<T>(
        &self,
        header: &Header,
        decode: impl Fn(&RemoteKey) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let mut state = self.inner.snapshot();
        if state.keys.is_none() {
            state = self.inner.refresh(Reason::Initial, &state).await;
        } else {
            self.refresh_if_due(&state).await;
        }
        let Some(keys) = state.keys.clone() else {
            const CONTEXT: &str = "the authorization server's JWKS is unavailable";
            return Err(match &state.last_error {
                Some(failure) => VerifyError::Unavailable {
                    context: CONTEXT.to_owned(),
                    source: Some(failure.clone()),
                },
                None => VerifyError::unavailable(format!("{CONTEXT}: no key set fetched yet")),
            });
        };
        match select(&keys, header) {
            Selected::Key(key) => return decode(key),
            Selected::Ambiguous => return Err(VerifyError::UnknownKey),
            Selected::Missing => {}
        }
        // An unknown key: maybe the authorization server rotated. Refresh at most once per
        // cooldown; otherwise refuse without touching the network.
        if !self.inner.cooled_down(&state, Instant::now()) {
            return Err(VerifyError::UnknownKey);
        }
        let state = self.inner.refresh(Reason::UnknownKey, &state).await;
        let keys = state.keys.unwrap_or(keys);
        match select(&keys, header) {
            Selected::Key(key) => decode(key),
            Selected::Missing | Selected::Ambiguous => Err(VerifyError::UnknownKey),
        }
    }

    /// Verifies an OpenID Connect ID token (upstream login): signature through the same key
    /// handling as access tokens, `iss` equal to the issuer, `aud` containing one of the
    /// configured audiences (the upstream `client_id`), `exp`, `iat` and `sub` present and
    /// `exp`/`nbf` within the leeway. `typ` is not checked (ID tokens are `JWT` or untyped).
    /// Returns the claims; `nonce`, `azp` and `iat` sanity are the caller's. `also_issuers`
    /// are accepted besides the issuer (Google's ID tokens may say `accounts.google.com`).
    #[cfg(feature = "upstream-oidc")]
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
        also_issuers: &[&str],
    ) -> Result<Map<String, Value>, VerifyError> {
        if token.len() > 16 * 1024 {
            return Err(VerifyError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let rules = &self.inner.rules;
        if !rules.algorithms.contains(&header.alg) {
            return Err(VerifyError::DisallowedAlgorithm);
        }
        self.with_key(&header, |key| {
            crate::crypto::install_provider();
            if key.key.family() != header.alg.family() {
                return Err(VerifyError::InvalidSignature);
            }
            let mut validation = jsonwebtoken::Validation::new(header.alg);
            validation.algorithms = vec![header.alg];
            validation.leeway = rules.leeway;
            validation.validate_nbf = true;
            let mut issuers = vec![rules.issuer.as_str()];
            issuers.extend_from_slice(also_issuers);
            validation.set_issuer(&issuers);
            validation.set_audience(&rules.audiences);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
                .map(|data| data.claims)
                .map_err(|e| super::jwt::map_jwt_error(e.kind()))
        })
        .await
    }
}

#[async_trait]
impl TokenVerifier for RemoteJwksVerifier {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        let header = self.inner.rules.header(token)?;
        self.with_key(&header, |key| self.decode(token, &header, key))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// The builder

/// Builds a [`RemoteJwksVerifier`]: [`discover`](Self::discover) the key set from the
/// issuer's metadata, or [`build`](Self::build) with an explicit [`jwks_uri`](Self::jwks_uri).
#[must_use]
pub struct RemoteJwksVerifierBuilder {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    jwks_uri: Option<String>,
    leeway: Duration,
    refresh_interval: Duration,
    cooldown: Duration,
    outbound: OutboundBuilder,
    compat: Vec<Compat>,
}

impl std::fmt::Debug for RemoteJwksVerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwksVerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("jwks_uri", &self.jwks_uri)
            .field("compat", &self.compat)
            .finish_non_exhaustive()
    }
}

impl RemoteJwksVerifierBuilder {
    /// An accepted `aud`: this MCP server's resource URL, exactly as in its protected
    /// resource metadata (required; call again to accept several).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// The accepted signature algorithms, replacing the default RS256, PS256, ES256 and
    /// EdDSA. HMAC algorithms are refused by [`build`](Self::build): a public key set cannot
    /// verify them safely.
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algs.into_iter().collect();
        self
    }

    /// Fetches keys from this URL and skips discovery. [`build`](Self::build) checks it
    /// against the outbound rules (scheme, and the address of a literal IP host); a host
    /// name is checked each time it is resolved.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.jwks_uri = Some(uri.into());
        self
    }

    /// Clock leeway for `exp` and `nbf` (default 60 s, at most 24 h).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How often the key set is refreshed (default 10 min, at least 1 s, at most 24 h). A
    /// longer `Cache-Control: max-age` from the server, clamped to \[1 min, 24 h\], wins.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The least time between two fetches caused by requests: a token naming an unknown
    /// `kid`, or a retry after a failed fetch (default 30 s, at most 24 h). Until it has
    /// passed, a token signed with a key the verifier has not seen yet is refused, so keep it
    /// short enough for key rotations and long enough to protect the identity provider.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Allows fetching from loopback addresses (`127.0.0.0/8`, `::1`, `localhost`), and over
    /// plain `http` from a loopback host: an identity provider on this machine, in
    /// development. Refused by default (see [`crate::outbound`]).
    pub fn allow_loopback(mut self) -> Self {
        self.outbound.allow_loopback();
        self
    }

    /// Allows fetching from private network addresses (RFC 1918, IPv6 unique local
    /// `fc00::/7`, and the shared `100.64.0.0/10` range): an identity provider inside your
    /// network. Refused by default; link-local and cloud metadata addresses stay refused.
    pub fn allow_private_networks(mut self) -> Self {
        self.outbound.allow_private_networks();
        self
    }

    /// Allows plain `http` URLs (issuer, metadata and `jwks_uri`) to any host the address
    /// rules allow. Without TLS anyone on the path can swap the keys: use it only inside a
    /// network you trust.
    pub fn allow_http(mut self) -> Self {
        self.outbound.allow_http();
        self
    }

    /// The timeouts of discovery and key fetches: to open a connection (default 5 s) and for
    /// the whole request, body included (default 10 s).
    pub fn http_timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.outbound.timeouts(connect, total);
        self
    }

    /// Turns on a [`Compat`] switch: [`Compat::GenericJwtType`] accepts `typ: JWT` or no
    /// `typ`; [`Compat::ExtraAudience`] accepts one more `aud`. Each is logged once when the
    /// verifier is built.
    pub fn compat(mut self, switch: Compat) -> Self {
        self.compat.push(switch);
        self
    }

    /// Finds the key set through the issuer's metadata, then fetches it once.
    ///
    /// Tries `/.well-known/oauth-authorization-server` (RFC 8414, inserted before the
    /// issuer's path, if it has one), then `/.well-known/openid-configuration` (inserted,
    /// then appended). The document's `issuer` must equal the configured issuer byte for
    /// byte. With an explicit [`jwks_uri`](Self::jwks_uri) discovery is skipped.
    ///
    /// # Errors
    /// [`RemoteJwksError::is_config`] for a bad configuration,
    /// [`RemoteJwksError::is_discovery`] when no usable metadata was found or its issuer
    /// differs, [`RemoteJwksError::is_fetch`] when the key set could not be fetched.
    pub async fn discover(mut self) -> Result<RemoteJwksVerifier, RemoteJwksError> {
        self.validate()?;
        let http = self.client()?;
        if self.jwks_uri.is_none() {
            let jwks_uri = discover_jwks_uri(&http, &self.issuer).await?;
            self.jwks_uri = Some(jwks_uri);
        }
        let verifier = self.build_with(http)?;
        let seen = verifier.inner.snapshot();
        let state = verifier.inner.refresh(Reason::Initial, &seen).await;
        if state.keys.is_none() {
            return Err(match state.last_error {
                Some(failure) => {
                    RemoteJwksError::new(ErrorKind::Fetch, failure.to_string()).with_source(failure)
                }
                None => RemoteJwksError::new(ErrorKind::Fetch, "unknown error"),
            });
        }
        Ok(verifier)
    }

    /// Replaces the outbound rules (upstream login shares its provider's settings).
    #[cfg(feature = "upstream-oidc")]
    pub(crate) fn set_outbound(&mut self, outbound: OutboundBuilder) {
        self.outbound = outbound;
    }

    /// Builds the verifier without any network call; keys are fetched on the first
    /// verification.
    ///
    /// # Errors
    /// [`RemoteJwksError::is_config`]: no [`jwks_uri`](Self::jwks_uri), no audience, an
    /// empty or HMAC algorithm list, an issuer that is not an `https` URL (plain `http` is
    /// allowed for loopback hosts), a `jwks_uri` the outbound rules refuse (see
    /// [`crate::outbound`]; the [`OutboundError`] is the
    /// [`source`](std::error::Error::source)), or an HTTP client that could not be created.
    pub fn build(self) -> Result<RemoteJwksVerifier, RemoteJwksError> {
        self.validate()?;
        let http = self.client()?;
        self.build_with(http)
    }

    fn build_with(self, http: Outbound) -> Result<RemoteJwksVerifier, RemoteJwksError> {
        let Some(jwks_uri) = self.jwks_uri.clone() else {
            return Err(RemoteJwksError::config(
                "no jwks_uri: call `.jwks_uri(..)`, or `.discover().await` to find it",
            ));
        };
        http.check_url(&jwks_uri)
            .map_err(|e| RemoteJwksError::config(format!("jwks_uri: {e}")).with_source(e))?;
        let mut audiences = self.audiences;
        let mut typ = TypRule::AccessToken;
        for c in &self.compat {
            c.warn();
            match c {
                Compat::GenericJwtType => typ = TypRule::AccessTokenOrGenericJwt,
                Compat::ExtraAudience(aud) => audiences.push(aud.clone()),
                Compat::IntrospectionWithoutAudience => {}
            }
        }
        crate::crypto::install_provider();
        let refresh_interval = self.refresh_interval.clamp(MIN_REFRESH, MAX_REFRESH);
        Ok(RemoteJwksVerifier {
            inner: Arc::new(Shared {
                rules: JwtRules {
                    issuer: self.issuer.clone(),
                    audiences,
                    algorithms: self.algorithms,
                    leeway: self.leeway.min(MAX_REFRESH).as_secs(),
                    typ,
                    require_jti: false,
                },
                issuer: self.issuer,
                jwks_uri,
                http,
                refresh_interval,
                cooldown: self.cooldown.min(MAX_REFRESH),
                state: RwLock::new(KeyState {
                    keys: None,
                    generation: 0,
                    refresh_at: Instant::now(),
                    last_attempt: None,
                    last_error: None,
                }),
                refresh_lock: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
                fetches: AtomicU64::new(0),
            }),
        })
    }

    fn validate(&self) -> Result<(), RemoteJwksError> {
        if self.audiences.is_empty() {
            return Err(RemoteJwksError::config(
                "no audience: call `.audience(\"https://mcp.example.com/mcp\")` with this server's resource URL",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(RemoteJwksError::config("the algorithm list is empty"));
        }
        if let Some(alg) = self
            .algorithms
            .iter()
            .find(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(RemoteJwksError::config(format!(
                "{alg:?} is an HMAC algorithm; a public key set cannot verify it safely"
            )));
        }
        let issuer = check_issuer_url(&self.issuer).map_err(RemoteJwksError::config)?;
        if issuer.query().is_some() {
            return Err(RemoteJwksError::config(format!(
                "issuer {:?} must not have a query",
                self.issuer
            )));
        }
        Ok(())
    }

    fn client(&self) -> Result<Outbound, RemoteJwksError> {
        self.outbound.build().map_err(|e| {
            RemoteJwksError::config("the HTTP client could not be created").with_source(e)
        })
    }
}

/// The metadata URLs to try for `issuer`, in order (RFC 8414 §3.1, OpenID Discovery §4).
fn metadata_urls(issuer: &url::Url, raw: &str) -> Vec<String> {
    let origin = &issuer[..url::Position::BeforePath];
    let path = issuer.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!(
                "{}/.well-known/openid-configuration",
                raw.trim_end_matches('/')
            ),
        ]
    }
}

async fn discover_jwks_uri(http: &Outbound, issuer: &str) -> Result<String, RemoteJwksError> {
    let parsed = url::Url::parse(issuer)
        .map_err(|e| RemoteJwksError::config(format!("issuer {issuer:?}: {e}")))?;
    let mut failures = Vec::new();
    let mut last_source = None;
    for url in metadata_urls(&parsed, issuer) {
        let doc = match get_json(http, &url, "application/json").await {
            Ok((Value::Object(doc), _)) => doc,
            Ok(_) => {
                failures.push(format!("{url}: not a JSON object"));
                continue;
            }
            // A refused URL or address: every other form has the same host and scheme.
            Err(FetchFailure::Outbound(e)) if e.is_refused() => {
                return Err(RemoteJwksError::discovery(format!(
                    "the metadata of issuer {issuer:?} cannot be fetched: {e}"
                ))
                .with_source(e));
            }
            Err(failure) => {
                // A 404 (or any other answer) means "try the next form"; so does a network
                // error, which is reported if every form fails.
                failures.push(failure.to_string());
                if let FetchFailure::Outbound(e) = failure {
                    last_source = Some(e);
                }
                continue;
            }
        };
        return jwks_uri_from(http, &doc, issuer, &url);
    }
    let err = RemoteJwksError::discovery(format!(
        "no authorization server metadata for issuer {issuer:?} ({})",
        failures.join("; ")
    ));
    Err(match last_source {
        Some(source) => err.with_source(source),
        None => err,
    })
}

fn jwks_uri_from(
    http: &Outbound,
    doc: &Map<String, Value>,
    issuer: &str,
    url: &str,
) -> Result<String, RemoteJwksError> {
    match doc.get("issuer").and_then(Value::as_str) {
        Some(found) if found == issuer => {}
        Some(found) => {
            return Err(RemoteJwksError::discovery(format!(
                "the metadata at {url} names issuer {found:?}, not the configured {issuer:?} \
                 (they must match byte for byte, trailing slash included)"
            )));
        }
        None => {
            return Err(RemoteJwksError::discovery(format!(
                "the metadata at {url} has no `issuer`"
            )));
        }
    }
    let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
        return Err(RemoteJwksError::discovery(format!(
            "the metadata at {url} has no `jwks_uri`"
        )));
    };
    http.check_url(jwks_uri).map_err(|e| {
        RemoteJwksError::discovery(format!("the metadata at {url} names jwks_uri: {e}"))
            .with_source(e)
    })?;
    Ok(jwks_uri.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_parsed() {
        assert_eq!(
            parse_max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("MAX-AGE=\"5\""), Some(Duration::from_secs(5)));
        assert_eq!(parse_max_age("max-age=-1"), None);
    }

    #[test]
    fn metadata_urls_insert_the_path() {
        let u = url::Url::parse("https://a.example/tenant/x").unwrap();
        assert_eq!(
            metadata_urls(&u, "https://a.example/tenant/x"),
            [
                "https://a.example/.well-known/oauth-authorization-server/tenant/x",
                "https://a.example/.well-known/openid-configuration/tenant/x",
                "https://a.example/tenant/x/.well-known/openid-configuration",
            ]
        );
        let u = url::Url::parse("https://a.example/").unwrap();
        assert_eq!(
            metadata_urls(&u, "https://a.example/"),
            [
                "https://a.example/.well-known/oauth-authorization-server",
                "https://a.example/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn keys_are_filtered() {
        let ec = serde_json::json!({"kty":"EC","crv":"P-256","kid":"a",
            "x":"gODUuzF8WMtbtGy2aRJ3q3YkgAifvSeE1O0PgZEygLg",
            "y":"cOfu5kcq5fLErNqrpaAQJUv5Jwp7smNMTljSuzCQlVk"});
        let k = RemoteKey::parse(ec.clone()).unwrap();
        assert!(k.fits(Algorithm::ES256));
        assert!(!k.fits(Algorithm::ES384));
        assert!(!k.fits(Algorithm::RS256));
        let mut enc = ec.clone();
        enc["use"] = "enc".into();
        assert!(RemoteKey::parse(enc).is_none());
        let mut other_alg = ec.clone();
        other_alg["alg"] = "ES384".into();
        assert!(!RemoteKey::parse(other_alg).unwrap().fits(Algorithm::ES256));
        let mut ops = ec;
        ops["key_ops"] = serde_json::json!(["sign"]);
        assert!(RemoteKey::parse(ops).is_none());
        let oct = serde_json::json!({"kty":"oct","k":"c2VjcmV0","kid":"h"});
        assert!(RemoteKey::parse(oct).is_none());
    }
}
