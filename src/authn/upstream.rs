//! [`UpstreamOidc`]: users sign in at the identity provider a team already has (Google,
//! GitHub, Microsoft Entra, Okta, Auth0, Keycloak, Stytch, WorkOS, any OpenID Connect
//! provider), while this server stays the spec-exact authorization server towards MCP clients.
//!
//! # The flow
//!
//! 1. An MCP client sends the browser to our `/authorize`. The authenticator finds no upstream
//!    login for this exact request, parks a login attempt (a random `state`, a `nonce` and a
//!    PKCE `S256` verifier of its own, bound to the authorization request's URL, expiring after
//!    ten minutes) and redirects to `{issuer}/upstream/start?state=…`.
//! 2. `/upstream/start` (single use) sets a browser-binding cookie (`__Host-mcp-oauth-upstream`
//!    on an `https` issuer, `mcp-oauth-upstream` on a development `http` one; `HttpOnly;
//!    SameSite=Lax`) whose hash is kept with the attempt, and redirects to the provider's
//!    authorization endpoint. Our `resource` and `scope` are **never** forwarded (Entra refuses
//!    an unknown `resource` with AADSTS9010010); the upstream scopes are the configured ones.
//! 3. The provider sends the browser to `{issuer}/upstream/callback`. The attempt named by
//!    `state` is taken out of the table whatever happens next (a replay finds nothing); the
//!    binding cookie must match; an RFC 9207 `iss` must equal the provider's issuer (and is
//!    required when its metadata says it sends one). The code is exchanged with the PKCE
//!    verifier; the ID token is verified through the remote-JWKS machinery
//!    ([`RemoteJwksVerifier`]: signature, `iss`, `aud` = the
//!    upstream `client_id`, `exp`), then `nonce` and an `iat` no older than the attempt. Claims
//!    from the UserInfo endpoint are added when it has one (same `sub` only). GitHub, which is
//!    plain OAuth 2, is asked for `/user`, `/user/emails`, `/user/orgs` and `/user/teams`
//!    instead.
//! 4. The allow-lists are checked (emails, email domains, groups, any claim, GitHub orgs and
//!    teams; a user must pass every list configured). A user outside them sees an error page
//!    naming why; nothing is sent to the MCP client. Otherwise the user (subject, display name,
//!    `email`, scope ceiling) is kept for a minute under a random handle set as a cookie, and
//!    the browser returns to the original `/authorize` URL, where the consent page follows as
//!    for any other user.
//!
//! Every failure of steps 2–4 (an unknown, reused or expired `state`, a missing binding
//! cookie, an `iss`, `nonce` or signature mismatch, an upstream error) is an error page; none
//! is a redirect to the MCP client. The upstream access and ID tokens are **never** handed to
//! MCP clients (no token passthrough): by default they are dropped once the user is known;
//! with [`keep_upstream_tokens`](UpstreamOidcBuilder::keep_upstream_tokens) the access token,
//! refresh token, expiry and scope are kept in the grant store, sealed with AES-256-GCM and
//! bound to the user's subject, for the host's own calls to the provider (see
//! [`upstream_tokens`](super::upstream_tokens) and
//! [`AuthorizationServer::upstream_tokens`](crate::server::AuthorizationServer::upstream_tokens)).
//!
//! # Several instances: shared through the grant store
//!
//! Attempts and finished logins are kept in the authorization server's grant store
//! ([`GrantStore::put_upstream_login`] /
//! [`take_upstream_login`](crate::store::GrantStore::take_upstream_login)), keyed by the
//! SHA-256 of their handle (`state`, the login cookie), so instances sharing a store
//! (PostgreSQL, Redis, one SQLite file) finish each other's logins without sticky sessions.
//! Every use is a single atomic take: of two callbacks with one `state`, on one instance or
//! two, one wins. Expiry is enforced at the take and swept by the retention sweep. A store
//! that cannot be reached (or does not implement these methods) fails closed: the sign-in
//! answers a `503` page, never lets a login through. The records hold the PKCE verifier and
//! `nonce` (single-use, ten minutes at most); they are never logged. On the default
//! [`MemoryStore`](crate::store::MemoryStore) logins live in this process only.
//!
//! # Subjects and scope ceilings
//!
//! The subject of our tokens is `{upstream issuer}|{sub}` by default (`github|{numeric id}`
//! for github.com, `{web base URL}|{numeric id}` for another GitHub), so two providers never
//! share a subject;
//! [`subject_claim`](UpstreamOidcBuilder::subject_claim) picks a claim instead (e.g. `email`).
//! [`scopes_for_claim`](UpstreamOidcBuilder::scopes_for_claim) and
//! [`default_user_scopes`](UpstreamOidcBuilder::default_user_scopes) map upstream claims to
//! the user's scope ceiling ([`User::allowed_scopes`]).
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::authn::UpstreamOidc;
//! use mcp_oauth::server::AuthorizationServer;
//!
//! let google = UpstreamOidc::google("1234.apps.googleusercontent.com", "client-secret")
//!     .hosted_domain("example.com") // Workspace accounts of example.com only
//!     .build()
//!     .await?;
//! let server = AuthorizationServer::builder()
//!     .authenticator(google)
//!     .build()
//!     .await?;
//! // Register https://mcp.example.com/upstream/callback (the issuer, then /upstream/callback)
//! // as the redirect URI of the Google OAuth client.
//! # let _ = server; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::upstream_tokens::{Sealer, UpstreamTokenKey, UpstreamTokens, UpstreamTokensError};
use super::{Authentication, AuthnError, User, UserAuthenticator};
use crate::outbound::{Outbound, OutboundBuilder, OutboundError};
use crate::scope::ScopeSet;
use crate::store::{GrantStore, SecretHash, UpstreamLogin};
use crate::util::random_token;
use crate::verify::RemoteJwksVerifier;

/// How long a login attempt may take at the provider.
const ATTEMPT_LIFETIME: Duration = Duration::from_secs(600);
/// How long a finished upstream login waits for the browser to come back to `/authorize`.
const LOGIN_LIFETIME: Duration = Duration::from_secs(60);
/// The largest document read from the provider.
const MAX_BODY: usize = 256 * 1024;
/// Clock skew tolerated for `iat`.
const SKEW: u64 = 60;

/// Why an [`UpstreamOidc`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The configuration is unusable (a bad URL, a missing setting).
    #[error("upstream login: {0}")]
    Config(String),
    /// The provider's metadata could not be fetched or is unusable.
    #[error("upstream login: discovery failed: {0}")]
    Discovery(String),
}

/// Which kind of provider.
#[derive(Debug, Clone)]
enum Kind {
    /// OpenID Connect, discovered from the issuer.
    Oidc,
    /// GitHub's OAuth apps: plain OAuth 2 and the REST API.
    GitHub { web: String, api: String },
}

/// The provider's endpoints, after discovery.
#[derive(Debug)]
struct Endpoints {
    issuer: String,
    authorization: String,
    token: String,
    userinfo: Option<String>,
    /// `client_secret_basic` at the token endpoint (else `client_secret_post`).
    basic_auth: bool,
    /// The provider said it sends RFC 9207 `iss` on its responses.
    iss_required: bool,
    verifier: Option<RemoteJwksVerifier>,
}

/// Our own absolute URLs, known once mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Urls {
    /// The authorization endpoint (the browser returns there).
    pub(crate) authorize: String,
    /// `/upstream/start`.
    pub(crate) start: String,
    /// `/upstream/callback` (the redirect URI registered at the provider).
    pub(crate) callback: String,
}

impl Urls {
    fn secure(&self) -> bool {
        self.callback.starts_with("https:")
    }
}

/// A login in progress at the provider (kept in the grant store under the hash of
/// `state`, see [`attempt_key`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Attempt {
    /// The query of the authorization request that started it.
    return_to: String,
    nonce: String,
    verifier: String,
    /// The hash of the binding cookie, once `/upstream/start` set it.
    binding: Option<SecretHash>,
    /// When it started (seconds since the epoch).
    started: u64,
}

/// A finished upstream login, waiting for the browser at `/authorize` (kept in the grant
/// store under the hash of the login cookie, see [`finished_key`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Finished {
    return_to: String,
    subject: String,
    display_name: Option<String>,
    claims: Map<String, Value>,
    allowed_scopes: Option<ScopeSet>,
}

impl Finished {
    fn new(return_to: String, user: User) -> Self {
        Self {
            return_to,
            subject: user.subject,
            display_name: user.display_name,
            claims: user.claims,
            allowed_scopes: user.allowed_scopes,
        }
    }

    fn user(self) -> User {
        let mut user = User::new(self.subject);
        user.display_name = self.display_name;
        user.claims = self.claims;
        user.allowed_scopes = self.allowed_scopes;
        user
    }
}

/// The store key of the attempt named by `state` (domain-separated from login handles).
fn attempt_key(state: &str) -> SecretHash {
    SecretHash::of(&format!("mcp-oauth upstream state\0{state}"))
}

/// The store key of the finished login behind the login cookie's `handle`.
fn finished_key(handle: &str) -> SecretHash {
    SecretHash::of(&format!("mcp-oauth upstream login\0{handle}"))
}

/// What the callback adapter should do (crate-internal; rendered by the server).
#[derive(Debug)]
pub(crate) enum CallbackOutcome {
    /// Back to `/authorize` with the login cookie.
    Return {
        /// `path?query` of the authorization request.
        location: String,
        /// The `Set-Cookie` values.
        cookies: Vec<String>,
    },
    /// An error page.
    Refused(Refusal),
}

/// Why an upstream callback (or start) was refused; each renders its own page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `state` unknown, already used or expired.
    UnknownState,
    /// The browser is not the one that started the login.
    NotThisBrowser,
    /// The provider reported an error (`error=access_denied`, …): the code, if readable.
    ProviderError(Option<String>),
    /// The response's `iss` is missing (when required) or names another issuer.
    WrongIssuer,
    /// The code exchange or the user API failed.
    Exchange,
    /// The ID token failed a check (signature, `iss`, `aud`, `exp`, `nonce`, `iat`).
    BadIdToken,
    /// The user is outside the allow-lists: a sentence saying why.
    NotAllowed(String),
    /// The upstream tokens could not be kept (the store failed, or the provider sent no
    /// access token): the login fails closed rather than losing them.
    NotKept,
    /// The grant store keeping logins in progress failed (`503`).
    Unavailable,
}

impl Refusal {
    /// The HTTP status, the title and the message of the page.
    pub(crate) fn page(&self, provider: &str) -> (http::StatusCode, String, String) {
        use http::StatusCode as S;
        let (status, title, message) = match self {
            Self::UnknownState => (
                S::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in link is unknown, was already used or has expired. Go back to \
                 your application and connect again."
                    .to_owned(),
            ),
            Self::NotThisBrowser => (
                S::BAD_REQUEST,
                "Sign-in refused",
                "This sign-in was started in another browser. Go back to your application and \
                 connect again."
                    .to_owned(),
            ),
            Self::ProviderError(code) => (
                S::BAD_REQUEST,
                "Sign-in did not complete",
                match code {
                    Some(code) => format!("{provider} did not sign you in ({code})."),
                    None => format!("{provider} did not sign you in."),
                },
            ),
            Self::WrongIssuer => (
                S::BAD_REQUEST,
                "Sign-in refused",
                format!("The answer did not come from {provider}."),
            ),
            Self::Exchange => (
                S::BAD_GATEWAY,
                "Sign-in failed",
                format!("{provider} could not be reached to finish the sign-in. Try again."),
            ),
            Self::BadIdToken => (
                S::BAD_REQUEST,
                "Sign-in refused",
                format!("The identity {provider} returned could not be verified."),
            ),
            Self::NotAllowed(why) => (S::FORBIDDEN, "Access denied", why.clone()),
            Self::Unavailable => (
                S::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in cannot be completed right now. Try again in a minute.".to_owned(),
            ),
            Self::NotKept => (
                S::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                format!("The sign-in at {provider} could not be saved. Try again in a minute."),
            ),
        };
        (status, title.to_owned(), message)
    }
}

/// The allow-lists and claim mappings.
#[derive(Debug, Clone, Default)]
struct Rules {
    emails: Vec<String>,
    email_domains: Vec<String>,
    /// `(claim, allowed values)`; `groups` is one of these.
    claims: Vec<(String, Vec<String>)>,
    hosted_domain: Option<String>,
    github_orgs: Vec<String>,
    github_teams: Vec<String>,
    subject_claim: Option<String>,
    scopes_for: Vec<(String, String, ScopeSet)>,
    default_scopes: Option<ScopeSet>,
}

struct Inner {
    name: String,
    kind: Kind,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    extra_params: Vec<(String, String)>,
    map_scopes_prefix: Option<String>,
    rules: Rules,
    endpoints: Endpoints,
    http: Outbound,
    /// Set when `oauth_router` mounts the routes.
    urls: OnceLock<Urls>,
    /// The authorization server's grant store, where logins in progress live; set when
    /// mounted.
    store: OnceLock<Arc<dyn GrantStore>>,
    /// Set by `keep_upstream_tokens`: the keys that seal and open kept upstream tokens.
    sealer: Option<Sealer>,
}

/// A [`UserAuthenticator`] that signs users in at an upstream identity provider. See the
/// [module docs](self). Cheap to clone.
///
/// `oauth_router` (and `AuthorizationServer::mount`) mounts its two routes,
/// `{issuer}/upstream/start` and `{issuer}/upstream/callback`; register the latter at the
/// provider as the redirect URI.
#[derive(Clone)]
pub struct UpstreamOidc {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOidc")
            .field("provider", &self.inner.name)
            .field("issuer", &self.inner.endpoints.issuer)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Builds an [`UpstreamOidc`]; start from [`UpstreamOidc::oidc`], [`UpstreamOidc::google`],
/// [`UpstreamOidc::entra`] or [`UpstreamOidc::github`].
#[must_use]
pub struct UpstreamOidcBuilder {
    name: String,
    kind: Kind,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Option<Vec<String>>,
    extra_params: Vec<(String, String)>,
    map_scopes_prefix: Option<String>,
    rules: Rules,
    outbound: OutboundBuilder,
    force_post: bool,
    token_key: Option<UpstreamTokenKey>,
    old_token_keys: Vec<UpstreamTokenKey>,
}

impl std::fmt::Debug for UpstreamOidcBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOidcBuilder")
            .field("provider", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl UpstreamOidc {
    /// Any OpenID Connect provider, discovered from `issuer`
    /// (`{issuer}/.well-known/openid-configuration`; its `issuer` must equal this string
    /// byte for byte). Okta (`https://{org}.okta.com` or a custom authorization server),
    /// Auth0 (`https://{tenant}.auth0.com/`, with the trailing slash), Keycloak
    /// (`https://{host}/realms/{realm}`), Stytch, WorkOS and others. `client_secret` is `None`
    /// for a public upstream client (PKCE only).
    pub fn oidc(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
    ) -> UpstreamOidcBuilder {
        let issuer = issuer.into();
        UpstreamOidcBuilder {
            name: host_of(&issuer),
            kind: Kind::Oidc,
            issuer,
            client_id: client_id.into(),
            client_secret,
            scopes: None,
            extra_params: Vec::new(),
            map_scopes_prefix: None,
            rules: Rules::default(),
            outbound: OutboundBuilder::default(),
            force_post: false,
            token_key: None,
            old_token_keys: Vec::new(),
        }
    }

    /// Google (`https://accounts.google.com`). Combine with
    /// [`hosted_domain`](UpstreamOidcBuilder::hosted_domain) for one Workspace domain.
    pub fn google(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> UpstreamOidcBuilder {
        Self::oidc(
            "https://accounts.google.com",
            client_id,
            Some(client_secret.into()),
        )
        .provider_name("Google")
    }

    /// Microsoft Entra ID, one tenant (`https://login.microsoftonline.com/{tenant}/v2.0`;
    /// `tenant` is the directory's id, a GUID: the multi-tenant `common` endpoint has no fixed
    /// issuer and is refused by discovery). Our `resource` is never forwarded; upstream scopes
    /// map to `api://…` only when [`map_scopes_to`](UpstreamOidcBuilder::map_scopes_to) asks.
    pub fn entra(
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> UpstreamOidcBuilder {
        Self::oidc(
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            client_id,
            Some(client_secret.into()),
        )
        .provider_name("Microsoft")
    }

    /// GitHub (an OAuth app or a GitHub App's user authorization): plain OAuth 2, then
    /// `GET /user`, `/user/emails` and, for the allow-lists, `/user/orgs` and `/user/teams`.
    /// Subjects are `github|{numeric user id}` (a login name can be renamed and reused; the
    /// id cannot).
    pub fn github(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> UpstreamOidcBuilder {
        let mut b = Self::oidc("github", client_id, Some(client_secret.into()));
        b.kind = Kind::GitHub {
            web: "https://github.com".to_owned(),
            api: "https://api.github.com".to_owned(),
        };
        b.name = "GitHub".to_owned();
        b
    }

    /// The provider's name, as pages show it.
    #[must_use]
    pub fn provider_name(&self) -> &str {
        &self.inner.name
    }

    /// The provider's issuer (`https://github.com` for GitHub).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.endpoints.issuer
    }

    /// Mounting: our absolute URLs (first call wins; a second, different one is logged and
    /// ignored).
    pub(crate) fn bind_urls(&self, urls: Urls) {
        let set = self.inner.urls.get_or_init(|| urls.clone());
        if *set != urls {
            tracing::error!(
                target: "mcp_oauth::upstream",
                kept = %set.callback,
                ignored = %urls.callback,
                "UpstreamOidc mounted under two issuers; the first callback URL is used"
            );
        }
    }

    /// Mounting: the grant store where logins in progress live (first call wins).
    pub(crate) fn bind_store(&self, store: Arc<dyn GrantStore>) {
        if self.inner.store.set(store).is_err() {
            tracing::debug!(
                target: "mcp_oauth::upstream",
                "UpstreamOidc mounted twice; the first grant store is kept"
            );
        }
    }

    /// The grant store, once mounted.
    fn store(&self) -> Result<&Arc<dyn GrantStore>, StoreFailure> {
        self.inner.store.get().ok_or(StoreFailure)
    }

    /// Takes the attempt named by `state` out of the store (unexpired only).
    async fn take_attempt(&self, state: &str) -> Result<Option<Attempt>, StoreFailure> {
        let store = self.store()?;
        let Some(login) = store
            .take_upstream_login(&attempt_key(state), crate::util::now())
            .await
            .map_err(|e| store_failed("take a login attempt", &e))?
        else {
            return Ok(None);
        };
        // An unreadable record counts as none (it is gone now in any case).
        Ok(serde_json::from_str(&login.payload).ok())
    }

    /// Keeps `record` in the store under `key` until `expires_at`.
    async fn put_record<T: serde::Serialize>(
        &self,
        key: &SecretHash,
        record: &T,
        expires_at: u64,
    ) -> Result<(), StoreFailure> {
        let payload = serde_json::to_string(record).map_err(|_| StoreFailure)?;
        self.store()?
            .put_upstream_login(
                key,
                UpstreamLogin {
                    payload,
                    expires_at,
                },
            )
            .await
            .map_err(|e| store_failed("keep an upstream login", &e))
    }

    /// `GET /upstream/start?state=…`: binds the browser, then the provider's URL.
    pub(crate) async fn start(
        &self,
        state: &str,
        secure: bool,
    ) -> Result<(String, String), Refusal> {
        let Some(Urls { callback, .. }) = self.inner.urls.get() else {
            return Err(Refusal::UnknownState);
        };
        let binding = random_token(32);
        // Single use: the attempt is taken, bound, and put back under the same key; a
        // concurrent second start finds nothing.
        let Some(mut a) = self.take_attempt(state).await? else {
            return Err(Refusal::UnknownState);
        };
        if a.binding.is_some() {
            return Err(Refusal::UnknownState);
        }
        a.binding = Some(SecretHash::of(&binding));
        let expires_at = a.started + ATTEMPT_LIFETIME.as_secs();
        self.put_record(&attempt_key(state), &a, expires_at).await?;
        let (nonce, challenge, return_to) = (
            a.nonce,
            URL_SAFE_NO_PAD.encode(sha256(&a.verifier)),
            a.return_to,
        );
        let mut scopes = self.inner.scopes.clone();
        if let Some(prefix) = &self.inner.map_scopes_prefix {
            let requested = form_urlencoded::parse(return_to.as_bytes())
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            scopes.extend(
                requested
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("{prefix}{s}")),
            );
        }
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &self.inner.client_id)
            .append_pair("redirect_uri", callback)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if matches!(self.inner.kind, Kind::Oidc) {
            q.append_pair("nonce", &nonce);
        }
        if let Some(hd) = &self.inner.rules.hosted_domain {
            q.append_pair("hd", hd);
        }
        for (k, v) in &self.inner.extra_params {
            q.append_pair(k, v);
        }
        let sep = if self.inner.endpoints.authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}{}", self.inner.endpoints.authorization, q.finish());
        let cookie = format!(
            "{}={binding}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            binding_cookie(secure),
            ATTEMPT_LIFETIME.as_secs(),
            if secure { "; Secure" } else { "" }
        );
        Ok((url, cookie))
    }

    /// `GET /upstream/callback`: checks everything, exchanges the code, applies the rules.
    pub(crate) async fn callback(&self, parts: &http::request::Parts) -> CallbackOutcome {
        let secure = self.inner.urls.get().is_some_and(Urls::secure);
        match self.finish(parts, secure).await {
            Ok((location, handle)) => CallbackOutcome::Return {
                location,
                cookies: vec![
                    format!(
                        "{}={handle}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
                        login_cookie(secure),
                        LOGIN_LIFETIME.as_secs(),
                        if secure { "; Secure" } else { "" }
                    ),
                    clear(binding_cookie(secure), secure),
                ],
            },
            Err(r) => {
                tracing::info!(target: "mcp_oauth::upstream", refusal = ?r, "upstream login refused");
                CallbackOutcome::Refused(r)
            }
        }
    }

    async fn finish(
        &self,
        parts: &http::request::Parts,
        secure: bool,
    ) -> Result<(String, String), Refusal> {
        let query = parts.uri.query().unwrap_or("");
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            params
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
        let one = |k: &str| match params.get(k).map(Vec::as_slice) {
            Some([v]) => Some(v.as_str()),
            _ => None,
        };
        let Some(state) = one("state") else {
            return Err(Refusal::UnknownState);
        };
        // Single use: the attempt leaves the store whatever happens next (an atomic take,
        // so of two callbacks with one `state`, on any instances, one gets it). The store
        // refuses an expired one.
        let Some(attempt) = self.take_attempt(state).await? else {
            return Err(Refusal::UnknownState);
        };
        let bound = attempt.binding.is_some_and(|hash| {
            cookie(&parts.headers, binding_cookie(secure))
                .is_some_and(|v| SecretHash::of(v).ct_eq(&hash))
        });
        if !bound {
            return Err(Refusal::NotThisBrowser);
        }
        match one("iss") {
            Some(iss) if iss != self.inner.endpoints.issuer => return Err(Refusal::WrongIssuer),
            None if self.inner.endpoints.iss_required => return Err(Refusal::WrongIssuer),
            _ => {}
        }
        if let Some(error) = params.get("error") {
            let code = error
                .first()
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .cloned();
            return Err(Refusal::ProviderError(code));
        }
        let Some(code) = one("code") else {
            return Err(Refusal::ProviderError(None));
        };
        let body = self.exchange(code, &attempt).await?;
        let claims = match &self.inner.kind {
            Kind::Oidc => self.oidc_claims(&body, &attempt).await?,
            Kind::GitHub { api, .. } => self.github_claims(&body, api).await?,
        };
        let user = self.user_from(&claims)?;
        if let Some(sealer) = &self.inner.sealer {
            // The same grant store that holds the logins in progress.
            let store = self.store()?;
            self.keep_tokens(sealer, &**store, &user.subject, &body)
                .await?;
        }
        let Some(urls) = self.inner.urls.get() else {
            return Err(Refusal::UnknownState);
        };
        let handle = random_token(32);
        self.put_record(
            &finished_key(&handle),
            &Finished::new(attempt.return_to.clone(), user),
            crate::util::now() + LOGIN_LIFETIME.as_secs(),
        )
        .await?;
        Ok((format!("{}?{}", urls.authorize, attempt.return_to), handle))
    }

    /// Exchanges `code` at the token endpoint; the JSON answer.
    async fn exchange(&self, code: &str, attempt: &Attempt) -> Result<Map<String, Value>, Refusal> {
        let Some(Urls { callback, .. }) = self.inner.urls.get() else {
            return Err(Refusal::Exchange);
        };
        self.token_request(vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback),
            ("code_verifier", &attempt.verifier),
        ])
        .await
    }

    /// A request to the provider's token endpoint with our client authentication; the JSON
    /// answer when it is a success.
    async fn token_request(
        &self,
        mut form: Vec<(&str, &str)>,
    ) -> Result<Map<String, Value>, Refusal> {
        let ep = &self.inner.endpoints;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        match &self.inner.client_secret {
            Some(secret) if ep.basic_auth => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let raw = format!("{}:{}", enc(&self.inner.client_id), enc(secret));
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                );
                let mut value = reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| Refusal::Exchange)?;
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            Some(secret) => {
                form.push(("client_id", &self.inner.client_id));
                form.push(("client_secret", secret));
            }
            None => form.push(("client_id", &self.inner.client_id)),
        }
        let fetched = self
            .inner
            .http
            .post_form(&ep.token, headers, &form, MAX_BODY)
            .await
            .map_err(|e| log_outbound("token", &e))?;
        let body: Value = serde_json::from_slice(&fetched.body).map_err(|_| Refusal::Exchange)?;
        let Value::Object(body) = body else {
            return Err(Refusal::Exchange);
        };
        if !fetched.status.is_success() || body.contains_key("error") {
            let error = body.get("error").and_then(|e| e.as_str()).unwrap_or("");
            tracing::warn!(
                target: "mcp_oauth::upstream",
                status = fetched.status.as_u16(),
                error,
                "the upstream token endpoint refused the request"
            );
            return Err(Refusal::Exchange);
        }
        Ok(body)
    }

    async fn oidc_claims(
        &self,
        body: &Map<String, Value>,
        attempt: &Attempt,
    ) -> Result<Map<String, Value>, Refusal> {
        let Some(id_token) = body.get("id_token").and_then(Value::as_str) else {
            tracing::warn!(target: "mcp_oauth::upstream", "the upstream token response has no id_token");
            return Err(Refusal::BadIdToken);
        };
        let Some(verifier) = &self.inner.endpoints.verifier else {
            return Err(Refusal::BadIdToken);
        };
        // Google documents `accounts.google.com` (no scheme) as an ID token issuer too.
        let also: &[&str] = if self.inner.endpoints.issuer == "https://accounts.google.com" {
            &["accounts.google.com"]
        } else {
            &[]
        };
        let mut claims = verifier.verify_id_token(id_token, also).await.map_err(|e| {
            tracing::warn!(target: "mcp_oauth::upstream", error = %e, "upstream ID token refused");
            Refusal::BadIdToken
        })?;
        check_id_token(
            &claims,
            &attempt.nonce,
            &self.inner.client_id,
            attempt.started,
        )?;
        // UserInfo adds the claims an ID token may leave out (email, groups); it cannot
        // change who the user is.
        if let (Some(url), Some(at)) = (
            &self.inner.endpoints.userinfo,
            body.get("access_token").and_then(Value::as_str),
        ) && let Ok(Value::Object(info)) = self.get_json(url, at, "application/json").await
            && info.get("sub") == claims.get("sub")
        {
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    async fn get_json(
        &self,
        url: &str,
        token: &str,
        accept: &'static str,
    ) -> Result<Value, Refusal> {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Refusal::Exchange)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let fetched = self
            .inner
            .http
            .get_with(url, accept, headers, MAX_BODY)
            .await
            .map_err(|e| log_outbound("user API", &e))?;
        if !fetched.status.is_success() {
            tracing::warn!(target: "mcp_oauth::upstream", status = fetched.status.as_u16(), %url, "upstream user API refused");
            return Err(Refusal::Exchange);
        }
        serde_json::from_slice(&fetched.body).map_err(|_| Refusal::Exchange)
    }

    async fn github_claims(
        &self,
        body: &Map<String, Value>,
        api: &str,
    ) -> Result<Map<String, Value>, Refusal> {
        const GH: &str = "application/vnd.github+json";
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(Refusal::Exchange);
        };
        let Value::Object(user) = self.get_json(&format!("{api}/user"), token, GH).await? else {
            return Err(Refusal::Exchange);
        };
        let Some(id) = user.get("id").and_then(Value::as_u64) else {
            return Err(Refusal::Exchange);
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(id.to_string()));
        for k in ["login", "name"] {
            if let Some(v) = user.get(k).filter(|v| v.is_string()) {
                claims.insert(k.into(), v.clone());
            }
        }
        // Only a verified primary address counts as the user's email.
        if let Ok(Value::Array(emails)) = self
            .get_json(&format!("{api}/user/emails"), token, GH)
            .await
            && let Some(primary) = emails.iter().find(|e| {
                e.get("primary") == Some(&Value::Bool(true))
                    && e.get("verified") == Some(&Value::Bool(true))
            })
            && let Some(email) = primary.get("email").and_then(Value::as_str)
        {
            claims.insert("email".into(), Value::String(email.to_owned()));
            claims.insert("email_verified".into(), Value::Bool(true));
        }
        if !self.inner.rules.github_orgs.is_empty() {
            let Value::Array(orgs) = self
                .get_json(&format!("{api}/user/orgs"), token, GH)
                .await?
            else {
                return Err(Refusal::Exchange);
            };
            let names: Vec<Value> = orgs
                .iter()
                .filter_map(|o| o.get("login").and_then(Value::as_str))
                .map(|s| Value::String(s.to_ascii_lowercase()))
                .collect();
            claims.insert("orgs".into(), Value::Array(names));
        }
        if !self.inner.rules.github_teams.is_empty() {
            let Value::Array(teams) = self
                .get_json(&format!("{api}/user/teams"), token, GH)
                .await?
            else {
                return Err(Refusal::Exchange);
            };
            let names: Vec<Value> = teams
                .iter()
                .filter_map(|t| {
                    let org = t.get("organization")?.get("login")?.as_str()?;
                    let slug = t.get("slug")?.as_str()?;
                    Some(Value::String(format!("{org}/{slug}").to_ascii_lowercase()))
                })
                .collect();
            claims.insert("teams".into(), Value::Array(names));
        }
        Ok(claims)
    }

    /// Applies the allow-lists and maps the claims to our user.
    fn user_from(&self, claims: &Map<String, Value>) -> Result<User, Refusal> {
        let rules = &self.inner.rules;
        let Some(sub) = claims.get("sub").and_then(Value::as_str) else {
            return Err(Refusal::BadIdToken);
        };
        let email = verified_email(claims);
        let who = email.clone().unwrap_or_else(|| "This account".to_owned());
        let name = &self.inner.name;
        if let Some(hd) = &rules.hosted_domain
            && claims.get("hd").and_then(Value::as_str) != Some(hd.as_str())
        {
            return Err(Refusal::NotAllowed(format!(
                "{who} is not an account of {hd}, so it may not sign in here."
            )));
        }
        if !rules.emails.is_empty() || !rules.email_domains.is_empty() {
            let ok = email.as_deref().is_some_and(|e| {
                let e = e.to_ascii_lowercase();
                rules.emails.contains(&e)
                    || e.rsplit_once('@')
                        .is_some_and(|(_, d)| rules.email_domains.iter().any(|a| a == d))
            });
            if !ok {
                return Err(Refusal::NotAllowed(match &email {
                    Some(_) => format!("{who} is not allowed to sign in to this server."),
                    None => format!(
                        "Your {name} account has no verified email address, which this server requires."
                    ),
                }));
            }
        }
        for (claim, allowed) in &rules.claims {
            if !claim_matches(claims.get(claim), allowed) {
                return Err(Refusal::NotAllowed(format!(
                    "{who} is not in a group allowed to sign in to this server."
                )));
            }
        }
        if !rules.github_orgs.is_empty() && !claim_matches(claims.get("orgs"), &rules.github_orgs) {
            return Err(Refusal::NotAllowed(format!(
                "{who} is not a member of an organization allowed to sign in to this server \
                 (or has not granted this app access to it on GitHub)."
            )));
        }
        if !rules.github_teams.is_empty()
            && !claim_matches(claims.get("teams"), &rules.github_teams)
        {
            return Err(Refusal::NotAllowed(format!(
                "{who} is not in a team allowed to sign in to this server."
            )));
        }
        let subject = match &rules.subject_claim {
            Some(claim) => match claims.get(claim) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(Refusal::NotAllowed(format!(
                        "Your {name} account has no `{claim}`, which this server uses to \
                         identify you."
                    )));
                }
            },
            None => format!("{}|{sub}", self.inner.endpoints.issuer_label()),
        };
        let mut user = User::new(subject);
        if let Some(n) = claims
            .get("name")
            .or_else(|| claims.get("login"))
            .and_then(Value::as_str)
            .or(email.as_deref())
        {
            user = user.with_display_name(n);
        }
        if let Some(e) = &email {
            user = user
                .with_claim("email", Value::String(e.clone()))
                .with_claim("email_verified", Value::Bool(true));
        }
        let mut ceiling: Option<ScopeSet> = None;
        for (claim, value, scopes) in &rules.scopes_for {
            if claim_matches(claims.get(claim), std::slice::from_ref(value)) {
                ceiling.get_or_insert_with(ScopeSet::default).extend(scopes);
            }
        }
        user.allowed_scopes = ceiling.or_else(|| rules.default_scopes.clone());
        Ok(user)
    }

    /// Starts a login attempt for this authorization request; the URL of `/upstream/start`.
    async fn begin(&self, return_to: String) -> Result<String, AuthnError> {
        let Some(Urls { start, .. }) = self.inner.urls.get() else {
            return Err(AuthnError::backend(
                "UpstreamOidc is not mounted: serve it through oauth_router or AuthorizationServer::mount",
            ));
        };
        let state = random_token(32);
        let started = crate::util::now();
        let attempt = Attempt {
            return_to,
            nonce: random_token(32),
            verifier: random_token(32),
            binding: None,
            started,
        };
        self.put_record(
            &attempt_key(&state),
            &attempt,
            started + ATTEMPT_LIFETIME.as_secs(),
        )
        .await
        .map_err(|_| AuthnError::backend("the grant store could not keep the upstream login"))?;
        Ok(format!("{start}?state={state}"))
    }
}

/// Kept upstream tokens (see [`UpstreamOidcBuilder::keep_upstream_tokens`]).
impl UpstreamOidc {
    /// Whether this login keeps the upstream tokens
    /// ([`keep_upstream_tokens`](UpstreamOidcBuilder::keep_upstream_tokens)).
    #[must_use]
    pub fn keeps_upstream_tokens(&self) -> bool {
        self.inner.sealer.is_some()
    }

    /// The name under which this provider's records are kept in the store: its issuer.
    fn store_provider(&self) -> &str {
        &self.inner.endpoints.issuer
    }

    /// Seals and stores the tokens of a finished login.
    async fn keep_tokens(
        &self,
        sealer: &Sealer,
        store: &dyn GrantStore,
        subject: &str,
        body: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let now = crate::util::now();
        let Some(tokens) = UpstreamTokens::from_response(body, now, None) else {
            tracing::warn!(target: "mcp_oauth::upstream", "the upstream token response has no access_token to keep");
            return Err(Refusal::NotKept);
        };
        let Some(record) = sealer.seal(self.store_provider(), subject, &tokens) else {
            return Err(Refusal::NotKept);
        };
        store
            .put_upstream_tokens(self.store_provider(), subject, record, now)
            .await
            .map_err(|e| {
                tracing::warn!(target: "mcp_oauth::upstream", error = %e, "upstream tokens could not be kept; the login fails");
                Refusal::NotKept
            })
    }

    /// The upstream tokens kept for `subject` (our subject, as in our tokens' `sub`) in
    /// `store` (the authorization server's grant store), decrypted; `None` when none are
    /// kept for this user. An access token that has expired (or expires within 30 seconds)
    /// is refreshed first through the provider's token endpoint when a refresh token was
    /// issued, and the new tokens are kept; without a refresh token the expired tokens are
    /// returned as they are ([`UpstreamTokens::is_expired`] says so). A record sealed with an
    /// old key ([`decrypt_upstream_tokens_with`](UpstreamOidcBuilder::decrypt_upstream_tokens_with))
    /// is sealed again with the current one.
    ///
    /// Most hosts call
    /// [`AuthorizationServer::upstream_tokens`](crate::server::AuthorizationServer::upstream_tokens)
    /// instead, which passes its own store.
    ///
    /// Two instances refreshing the same user's tokens at the same moment both call the
    /// provider; a provider that rotates refresh tokens and detects reuse may then revoke
    /// them, and the user signs in again.
    ///
    /// # Errors
    /// [`UpstreamTokensError::NotKept`] when this login does not keep tokens;
    /// [`Store`](UpstreamTokensError::Store) when the store fails;
    /// [`UnknownKey`](UpstreamTokensError::UnknownKey) for a record sealed with a key that is
    /// not configured; [`Tampered`](UpstreamTokensError::Tampered) for a record that does not
    /// open (altered, or moved from another subject); [`Refresh`](UpstreamTokensError::Refresh)
    /// when an expired access token could not be refreshed.
    pub async fn upstream_tokens(
        &self,
        store: &dyn GrantStore,
        subject: &str,
    ) -> Result<Option<UpstreamTokens>, UpstreamTokensError> {
        let Some(sealer) = &self.inner.sealer else {
            return Err(UpstreamTokensError::NotKept);
        };
        let provider = self.store_provider();
        let Some(record) = store
            .get_upstream_tokens(provider, subject)
            .await
            .map_err(UpstreamTokensError::Store)?
        else {
            return Ok(None);
        };
        let tokens = sealer.open(provider, subject, &record)?;
        let now = crate::util::now();
        if tokens.is_expired(now)
            && let Some(refresh) = tokens.refresh_token.as_deref()
        {
            let body = self
                .token_request(vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                ])
                .await
                .map_err(|_| UpstreamTokensError::Refresh)?;
            let fresh = UpstreamTokens::from_response(&body, now, Some(&tokens))
                .ok_or(UpstreamTokensError::Refresh)?;
            let record = sealer
                .seal(provider, subject, &fresh)
                .ok_or(UpstreamTokensError::Refresh)?;
            store
                .put_upstream_tokens(provider, subject, record, now)
                .await
                .map_err(UpstreamTokensError::Store)?;
            return Ok(Some(fresh));
        }
        if !sealer.is_current(&record) {
            // Rotation: seal again with the current key (best effort; the old one still opens it).
            if let Some(resealed) = sealer.seal(provider, subject, &tokens)
                && let Err(e) = store
                    .put_upstream_tokens(provider, subject, resealed, now)
                    .await
            {
                tracing::warn!(target: "mcp_oauth::upstream", error = %e, "could not seal upstream tokens again with the current key");
            }
        }
        Ok(Some(tokens))
    }

    /// Forgets the upstream tokens kept for `subject` (e.g. when the user signs out of the
    /// host); `true` when there were some.
    ///
    /// # Errors
    /// [`UpstreamTokensError::NotKept`] when this login does not keep tokens;
    /// [`Store`](UpstreamTokensError::Store) when the store fails.
    pub async fn forget_upstream_tokens(
        &self,
        store: &dyn GrantStore,
        subject: &str,
    ) -> Result<bool, UpstreamTokensError> {
        if self.inner.sealer.is_none() {
            return Err(UpstreamTokensError::NotKept);
        }
        store
            .delete_upstream_tokens(self.store_provider(), subject)
            .await
            .map_err(UpstreamTokensError::Store)
    }
}

impl Endpoints {
    /// The issuer as subjects name it (`github` for GitHub).
    fn issuer_label(&self) -> &str {
        if self.verifier.is_none() && self.issuer == "https://github.com" {
            "github"
        } else {
            &self.issuer
        }
    }
}

#[async_trait]
impl UserAuthenticator for UpstreamOidc {
    async fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError> {
        let return_to = request.uri.query().unwrap_or_default().to_owned();
        let secure = self.inner.urls.get().is_some_and(Urls::secure);
        if let Some(handle) = cookie(&request.headers, login_cookie(secure)) {
            let unavailable =
                |_| AuthnError::backend("the grant store could not read the upstream login");
            let key = finished_key(handle);
            let store = self.store().map_err(unavailable)?;
            let taken = store
                .take_upstream_login(&key, crate::util::now())
                .await
                .map_err(|e| unavailable(store_failed("take a finished login", &e)))?;
            // A finished login counts once, for the authorization request that started it;
            // one for another request is put back untouched.
            if let Some(login) = taken {
                match serde_json::from_str::<Finished>(&login.payload) {
                    Ok(f) if f.return_to == return_to => {
                        return Ok(Authentication::Authenticated(f.user()));
                    }
                    Ok(_) => store
                        .put_upstream_login(&key, login)
                        .await
                        .map_err(|e| unavailable(store_failed("keep a finished login", &e)))?,
                    Err(_) => {}
                }
            }
        }
        self.begin(return_to).await.map(Authentication::Redirect)
    }

    fn upstream(&self) -> Option<&UpstreamOidc> {
        Some(self)
    }
}

impl UpstreamOidcBuilder {
    /// The provider's name on pages ("Sign-in at Okta did not complete").
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The scopes asked of the provider (default `openid email profile`; GitHub
    /// `read:user user:email`, plus `read:org` when an org or team allow-list is set).
    /// `openid` is added for OpenID Connect providers when missing.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// An extra parameter for the provider's authorization endpoint (`prompt`,
    /// `login_hint`, Entra's `domain_hint`, Auth0's `connection`, …). The protocol's own
    /// (`client_id`, `redirect_uri`, `state`, `nonce`, `code_challenge*`, `response_type`,
    /// `scope`) and `resource` are refused by [`build`](Self::build).
    pub fn authorization_param(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }

    /// Also asks the provider for each MCP scope of the request, prefixed
    /// (`api://{app id}/` for an Entra app that exposes them). Off by default: our scopes and
    /// `resource` are not the provider's business.
    pub fn map_scopes_to(mut self, prefix: impl Into<String>) -> Self {
        self.map_scopes_prefix = Some(prefix.into());
        self
    }

    /// Only these email addresses may sign in (compared case-insensitively; the address must
    /// be verified: `email_verified` true, or GitHub's verified primary address).
    pub fn allow_emails<I, S>(mut self, emails: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .emails
            .extend(emails.into_iter().map(|e| e.into().to_ascii_lowercase()));
        self
    }

    /// Only verified email addresses in these domains may sign in (exact domain, no
    /// subdomains). Combined with [`allow_emails`](Self::allow_emails), either list admits.
    pub fn allow_email_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules.email_domains.extend(
            domains
                .into_iter()
                .map(|d| d.into().trim_start_matches('@').to_ascii_lowercase()),
        );
        self
    }

    /// Only users whose `groups` claim holds one of these may sign in.
    pub fn allow_groups<I, S>(self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_claim("groups", groups)
    }

    /// Only users whose `claim` equals (or, for an array, contains) one of `values` may
    /// sign in. Each call adds a list the user must pass.
    pub fn allow_claim<I, S>(mut self, claim: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .claims
            .push((claim.into(), values.into_iter().map(Into::into).collect()));
        self
    }

    /// Google Workspace: sends `hd` as a hint and admits only ID tokens whose `hd` claim is
    /// this domain (the hint alone is not a check).
    pub fn hosted_domain(mut self, domain: impl Into<String>) -> Self {
        self.rules.hosted_domain = Some(domain.into());
        self
    }

    /// GitHub: only members of one of these organizations (by login) may sign in.
    pub fn allow_github_orgs<I, S>(mut self, orgs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .github_orgs
            .extend(orgs.into_iter().map(|o| o.into().to_ascii_lowercase()));
        self
    }

    /// GitHub: only members of one of these teams (`org/team-slug`) may sign in.
    pub fn allow_github_teams<I, S>(mut self, teams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .github_teams
            .extend(teams.into_iter().map(|t| t.into().to_ascii_lowercase()));
        self
    }

    /// Takes our subject from this upstream claim (`email`, `preferred_username`, `oid`)
    /// instead of `{issuer}|{sub}`. Pick a claim the provider does not let users change.
    pub fn subject_claim(mut self, claim: impl Into<String>) -> Self {
        self.rules.subject_claim = Some(claim.into());
        self
    }

    /// Users whose `claim` equals (or contains) `value` may be granted `scopes`; a user
    /// matching several such rules gets their union as ceiling ([`User::allowed_scopes`]).
    pub fn scopes_for_claim(
        mut self,
        claim: impl Into<String>,
        value: impl Into<String>,
        scopes: ScopeSet,
    ) -> Self {
        self.rules
            .scopes_for
            .push((claim.into(), value.into(), scopes));
        self
    }

    /// The ceiling of users that no [`scopes_for_claim`](Self::scopes_for_claim) rule
    /// matches (default: no per-user ceiling).
    pub fn default_user_scopes(mut self, scopes: ScopeSet) -> Self {
        self.rules.default_scopes = Some(scopes);
        self
    }

    /// Replaces the preset's issuer URL (Entra's national clouds, a test imitation). For
    /// GitHub use [`github_urls`](Self::github_urls).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sends the client secret in the token request's body (`client_secret_post`) instead
    /// of `client_secret_basic`. By default Basic is used unless the provider's metadata
    /// lists only `client_secret_post` (GitHub: always the body).
    pub fn client_secret_post(mut self) -> Self {
        self.force_post = true;
        self
    }

    /// Allows a provider on a loopback address, over plain `http` too (development and
    /// tests).
    pub fn allow_loopback(mut self) -> Self {
        self.outbound.allow_loopback();
        self
    }

    /// Allows a provider on a private network address (an in-house Keycloak).
    pub fn allow_private_networks(mut self) -> Self {
        self.outbound.allow_private_networks();
        self
    }

    /// GitHub Enterprise, or a test imitation: the web base (`https://github.example.com`)
    /// and the API base (`https://github.example.com/api/v3`).
    pub fn github_urls(mut self, web: impl Into<String>, api: impl Into<String>) -> Self {
        if let Kind::GitHub { .. } = self.kind {
            self.kind = Kind::GitHub {
                web: web.into().trim_end_matches('/').to_owned(),
                api: api.into().trim_end_matches('/').to_owned(),
            };
        }
        self
    }

    /// Keeps the upstream tokens of every login (access token, refresh token, expiry, scope)
    /// for the host's own calls to the provider, sealed with AES-256-GCM under `key` (a
    /// random 96-bit nonce per record; the associated data binds each record to the provider,
    /// the user's subject and the key id, so a record moved to another user does not open).
    /// They go to the authorization server's grant store, one record per (provider,
    /// subject), replaced at each login; the store holds no plaintext token. Read them with
    /// [`AuthorizationServer::upstream_tokens`](crate::server::AuthorizationServer::upstream_tokens)
    /// (which refreshes an expired access token through the provider's token endpoint when
    /// a refresh token was issued). They are still never handed to MCP clients.
    ///
    /// A login whose tokens cannot be kept (the store fails, or the provider sent no access
    /// token) fails closed with a "try again" page. A store must implement
    /// [`GrantStore::put_upstream_tokens`] (every built-in store does).
    ///
    /// Ask the provider for a refresh token if the host needs the tokens beyond the access
    /// token's lifetime (`offline_access` in [`scopes`](Self::scopes) for most OIDC
    /// providers; `authorization_param("access_type", "offline")` for Google).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use mcp_oauth::authn::{UpstreamOidc, UpstreamTokenKey};
    ///
    /// let key = UpstreamTokenKey::from_base64url("2026-12", &std::env::var("UPSTREAM_TOKEN_KEY")?)?;
    /// let upstream = UpstreamOidc::oidc("https://example.okta.com", "client-id", None)
    ///     .scopes(["openid", "email", "offline_access"])
    ///     .keep_upstream_tokens(key)
    ///     .build()
    ///     .await?;
    /// # let _ = upstream; Ok(()) }
    /// ```
    pub fn keep_upstream_tokens(mut self, key: UpstreamTokenKey) -> Self {
        self.token_key = Some(key);
        self
    }

    /// Older keys that still open kept upstream tokens (key rotation): records name the key
    /// that sealed them, so after switching
    /// [`keep_upstream_tokens`](Self::keep_upstream_tokens) to a new key, list the previous
    /// ones here until every record has been read (a record opened with an old key is sealed
    /// again with the current one) or replaced by a new login. Key ids must be distinct.
    pub fn decrypt_upstream_tokens_with<I>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = UpstreamTokenKey>,
    {
        self.old_token_keys.extend(keys);
        self
    }

    /// Discovers the provider (not for GitHub) and builds the authenticator.
    ///
    /// # Errors
    /// [`UpstreamError::Config`] for an empty `client_id`, a reserved
    /// [`authorization_param`](Self::authorization_param), a URL the outbound rules refuse,
    /// an upstream token key id that is empty, longer than 64 characters, not printable
    /// ASCII or used twice, or old keys without a current one;
    /// [`UpstreamError::Discovery`] when the metadata cannot be fetched, names another issuer,
    /// lacks an endpoint, does not offer the `code` flow with `S256`, or its key set cannot
    /// be fetched.
    pub async fn build(self) -> Result<UpstreamOidc, UpstreamError> {
        if self.client_id.is_empty() {
            return Err(UpstreamError::Config("the client_id is empty".into()));
        }
        const RESERVED: [&str; 10] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "resource",
            "hd",
        ];
        if let Some((k, _)) = self
            .extra_params
            .iter()
            .find(|(k, _)| RESERVED.contains(&k.as_str()))
        {
            return Err(UpstreamError::Config(format!(
                "authorization_param({k:?}) is set by the login itself"
            )));
        }
        let sealer = match self.token_key {
            Some(key) => Some(Sealer::new(key, self.old_token_keys)?),
            None if !self.old_token_keys.is_empty() => {
                return Err(UpstreamError::Config(
                    "decrypt_upstream_tokens_with needs keep_upstream_tokens".into(),
                ));
            }
            None => None,
        };
        let http = self
            .outbound
            .build()
            .map_err(|e| UpstreamError::Config(format!("the HTTP client: {e}")))?;
        let (endpoints, default_scopes) = match &self.kind {
            Kind::GitHub { web, api } => {
                for url in [web, api] {
                    http.check_url(url)
                        .map_err(|e| UpstreamError::Config(e.to_string()))?;
                }
                let mut scopes = vec!["read:user".to_owned(), "user:email".to_owned()];
                if !self.rules.github_orgs.is_empty() || !self.rules.github_teams.is_empty() {
                    scopes.push("read:org".to_owned());
                }
                (
                    Endpoints {
                        issuer: web.clone(),
                        authorization: format!("{web}/login/oauth/authorize"),
                        token: format!("{web}/login/oauth/access_token"),
                        userinfo: None,
                        basic_auth: false,
                        iss_required: false,
                        verifier: None,
                    },
                    scopes,
                )
            }
            Kind::Oidc => (
                {
                    let mut e =
                        discover(&http, &self.issuer, &self.client_id, self.outbound).await?;
                    e.basic_auth &= !self.force_post;
                    e
                },
                vec![
                    "openid".to_owned(),
                    "email".to_owned(),
                    "profile".to_owned(),
                ],
            ),
        };
        let mut scopes = self.scopes.unwrap_or(default_scopes);
        if matches!(self.kind, Kind::Oidc) && !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        Ok(UpstreamOidc {
            inner: Arc::new(Inner {
                name: self.name,
                kind: self.kind,
                client_id: self.client_id,
                client_secret: self.client_secret,
                scopes,
                extra_params: self.extra_params,
                map_scopes_prefix: self.map_scopes_prefix,
                rules: self.rules,
                endpoints,
                http,
                urls: OnceLock::new(),
                store: OnceLock::new(),
                sealer,
            }),
        })
    }
}

/// OpenID Connect discovery of `issuer`, and its key set fetched once.
async fn discover(
    http: &Outbound,
    issuer: &str,
    client_id: &str,
    outbound: OutboundBuilder,
) -> Result<Endpoints, UpstreamError> {
    let d = |m: String| UpstreamError::Discovery(m);
    http.check_url(issuer)
        .map_err(|e| UpstreamError::Config(format!("issuer: {e}")))?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let fetched = http
        .get(&url, "application/json", MAX_BODY)
        .await
        .map_err(|e| d(e.to_string()))?;
    if fetched.status != reqwest::StatusCode::OK {
        return Err(d(format!("{url} answered {}", fetched.status)));
    }
    let doc: Map<String, Value> =
        serde_json::from_slice(&fetched.body).map_err(|e| d(format!("{url}: {e}")))?;
    let s = |k: &str| doc.get(k).and_then(Value::as_str);
    if s("issuer") != Some(issuer) {
        return Err(d(format!(
            "{url} names issuer {:?}, not {issuer:?} (they must match byte for byte)",
            s("issuer")
        )));
    }
    let endpoint = |k: &str| -> Result<String, UpstreamError> {
        let v = s(k).ok_or_else(|| d(format!("{url} has no {k}")))?;
        http.check_url(v).map_err(|e| d(format!("{k}: {e}")))?;
        Ok(v.to_owned())
    };
    let authorization = endpoint("authorization_endpoint")?;
    let token = endpoint("token_endpoint")?;
    let jwks_uri = endpoint("jwks_uri")?;
    let userinfo = endpoint("userinfo_endpoint").ok();
    let list = |k: &str| -> Option<Vec<&str>> {
        doc.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
    };
    if list("response_types_supported").is_some_and(|l| !l.contains(&"code")) {
        return Err(d(format!(
            "{url}: the provider does not offer the code flow"
        )));
    }
    // PKCE: refuse a provider that says it lacks S256; one that says nothing gets it anyway.
    if list("code_challenge_methods_supported").is_some_and(|l| !l.contains(&"S256")) {
        return Err(d(format!("{url}: the provider does not offer PKCE S256")));
    }
    let basic_auth = list("token_endpoint_auth_methods_supported")
        .is_none_or(|l| l.contains(&"client_secret_basic") || !l.contains(&"client_secret_post"));
    let iss_required =
        doc.get("authorization_response_iss_parameter_supported") == Some(&Value::Bool(true));
    let mut builder = RemoteJwksVerifier::builder(issuer)
        .audience(client_id)
        .jwks_uri(jwks_uri);
    builder.set_outbound(outbound);
    let verifier = builder
        .discover()
        .await
        .map_err(|e| d(format!("the provider's keys: {e}")))?;
    Ok(Endpoints {
        issuer: issuer.to_owned(),
        authorization,
        token,
        userinfo,
        basic_auth,
        iss_required,
        verifier: Some(verifier),
    })
}

/// The ID token checks the key set does not make: `nonce`, `iat` and `azp`.
fn check_id_token(
    claims: &Map<String, Value>,
    nonce: &str,
    client_id: &str,
    started: u64,
) -> Result<(), Refusal> {
    let refuse = |why: &str| {
        tracing::warn!(target: "mcp_oauth::upstream", "upstream ID token refused: {why}");
        Err(Refusal::BadIdToken)
    };
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return refuse("nonce mismatch");
    }
    let now = crate::util::now();
    let earliest = started.min(now).saturating_sub(SKEW);
    match claims.get("iat").and_then(Value::as_u64) {
        Some(iat) if iat <= now + SKEW && iat >= earliest => {}
        _ => return refuse("iat is not within the login attempt"),
    }
    if let Some(azp) = claims.get("azp").and_then(Value::as_str)
        && azp != client_id
    {
        return refuse("azp names another client");
    }
    Ok(())
}

/// The email address, when the provider says it is verified.
fn verified_email(claims: &Map<String, Value>) -> Option<String> {
    let email = claims.get("email").and_then(Value::as_str)?;
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    verified.then(|| email.to_owned())
}

/// Whether a claim (a string, a number or an array of them) holds one of `allowed`.
fn claim_matches(value: Option<&Value>, allowed: &[String]) -> bool {
    let hit = |v: &Value| match v {
        Value::String(s) => allowed.iter().any(|a| a == s),
        Value::Number(n) => allowed.iter().any(|a| *a == n.to_string()),
        Value::Bool(b) => allowed.iter().any(|a| *a == b.to_string()),
        _ => false,
    };
    match value {
        Some(Value::Array(items)) => items.iter().any(hit),
        Some(v) => hit(v),
        None => false,
    }
}

fn log_outbound(what: &str, e: &OutboundError) -> Refusal {
    tracing::warn!(target: "mcp_oauth::upstream", error = %e, "upstream {what} request failed");
    Refusal::Exchange
}

/// The grant store failed (or is not bound): the sign-in answers `503`.
#[derive(Debug)]
struct StoreFailure;

impl From<StoreFailure> for Refusal {
    fn from(_: StoreFailure) -> Self {
        Self::Unavailable
    }
}

/// Logs a store failure (the error names the backend and operation, never a record's
/// content) and turns it into a [`StoreFailure`].
fn store_failed(what: &str, e: &crate::store::StoreError) -> StoreFailure {
    tracing::error!(target: "mcp_oauth::upstream", error = %e, "upstream login: the grant store could not {what}");
    StoreFailure
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn binding_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-mcp-oauth-upstream"
    } else {
        "mcp-oauth-upstream"
    }
}

fn login_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-mcp-oauth-upstream-login"
    } else {
        "mcp-oauth-upstream-login"
    }
}

fn clear(name: &str, secure: bool) -> String {
    format!(
        "{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name`, if sent once.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn host_of(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| issuer.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// A GitHub-kind authenticator (no discovery needed), mounted at `http://127.0.0.1:1` on
    /// a memory store.
    fn mounted() -> UpstreamOidc {
        unmounted(Arc::new(crate::store::MemoryStore::new()))
    }

    /// Like [`mounted`], on `store`.
    fn unmounted(store: Arc<dyn GrantStore>) -> UpstreamOidc {
        let up = UpstreamOidc {
            inner: Arc::new(Inner {
                name: "GitHub".into(),
                kind: Kind::GitHub {
                    web: "http://127.0.0.1:2".into(),
                    api: "http://127.0.0.1:2/api".into(),
                },
                client_id: "c".into(),
                client_secret: Some("s".into()),
                scopes: vec!["read:user".into()],
                extra_params: Vec::new(),
                map_scopes_prefix: None,
                rules: Rules::default(),
                endpoints: Endpoints {
                    issuer: "http://127.0.0.1:2".into(),
                    authorization: "http://127.0.0.1:2/login/oauth/authorize".into(),
                    token: "http://127.0.0.1:2/login/oauth/access_token".into(),
                    userinfo: None,
                    basic_auth: false,
                    iss_required: false,
                    verifier: None,
                },
                http: OutboundBuilder::default().build().unwrap(),
                urls: OnceLock::new(),
                store: OnceLock::new(),
                sealer: None,
            }),
        };
        up.bind_store(store);
        up.bind_urls(Urls {
            authorize: "http://127.0.0.1:1/authorize".into(),
            start: "http://127.0.0.1:1/upstream/start".into(),
            callback: "http://127.0.0.1:1/upstream/callback".into(),
        });
        up
    }

    fn parts(uri: &str, cookie: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::get(uri);
        if let Some(c) = cookie {
            b = b.header(http::header::COOKIE, c);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn state_of(redirect: &Authentication) -> String {
        let Authentication::Redirect(url) = redirect else {
            panic!("{redirect:?}");
        };
        url.split_once("?state=").unwrap().1.to_owned()
    }

    /// Puts a record straight into the store.
    async fn put<T: serde::Serialize>(up: &UpstreamOidc, key: &SecretHash, t: &T, exp: u64) {
        up.put_record(key, t, exp).await.unwrap();
    }

    #[tokio::test]
    async fn attempts_expire_and_start_once() {
        let up = mounted();
        let first = up
            .authenticate(&parts("/authorize?a=1", None))
            .await
            .unwrap();
        let state = state_of(&first);
        // Started once; a second start of the same attempt is refused.
        let (url, cookie) = up.start(&state, false).await.unwrap();
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(!url.contains("nonce="), "GitHub gets no nonce: {url}");
        assert!(cookie.starts_with("mcp-oauth-upstream="), "{cookie}");
        assert_eq!(up.start(&state, false).await, Err(Refusal::UnknownState));
        // An expired attempt is refused at start and at the callback.
        let old = crate::util::now() - ATTEMPT_LIFETIME.as_secs() - 1;
        let expired = |binding: Option<SecretHash>| Attempt {
            return_to: "a=2".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            binding,
            started: old,
        };
        put(&up, &attempt_key("s2"), &expired(None), old + 600).await;
        assert_eq!(up.start("s2", false).await, Err(Refusal::UnknownState));
        let binding = SecretHash::of("b");
        put(&up, &attempt_key("s3"), &expired(Some(binding)), old + 600).await;
        let cb = parts(
            "/upstream/callback?code=x&state=s3",
            Some("mcp-oauth-upstream=b"),
        );
        assert!(matches!(
            up.callback(&cb).await,
            CallbackOutcome::Refused(Refusal::UnknownState)
        ));
    }

    #[tokio::test]
    async fn a_finished_login_counts_once_and_for_its_own_request() {
        let up = mounted();
        let now = crate::util::now();
        let finished = |query: &str| Finished::new(query.to_owned(), User::new("octocat"));
        put(&up, &finished_key("handle-1"), &finished("a=1"), now + 60).await;
        let cookie = "mcp-oauth-upstream-login=handle-1";
        // Another authorization request: not this login (a new upstream round trip).
        let other = up
            .authenticate(&parts("/authorize?a=2", Some(cookie)))
            .await
            .unwrap();
        assert!(matches!(other, Authentication::Redirect(_)), "{other:?}");
        let mine = up
            .authenticate(&parts("/authorize?a=1", Some(cookie)))
            .await
            .unwrap();
        assert_eq!(mine, Authentication::Authenticated(User::new("octocat")));
        // Used once.
        let again = up
            .authenticate(&parts("/authorize?a=1", Some(cookie)))
            .await
            .unwrap();
        assert!(matches!(again, Authentication::Redirect(_)), "{again:?}");
        // Expired.
        put(&up, &finished_key("handle-2"), &finished("a=1"), now - 1).await;
        let late = up
            .authenticate(&parts(
                "/authorize?a=1",
                Some("mcp-oauth-upstream-login=handle-2"),
            ))
            .await
            .unwrap();
        assert!(matches!(late, Authentication::Redirect(_)), "{late:?}");
    }

    /// A store that keeps nothing (the trait's fail-closed defaults for upstream logins).
    struct Down;

    #[async_trait]
    impl GrantStore for Down {
        async fn put_code(
            &self,
            _: SecretHash,
            _: crate::store::AuthorizationCode,
        ) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn take_code(
            &self,
            _: &SecretHash,
            _: &str,
            _: u64,
        ) -> Result<crate::store::CodeTake, crate::store::StoreError> {
            unreachable!()
        }
        async fn create_family(
            &self,
            _: crate::store::RefreshFamily,
            _: Option<SecretHash>,
        ) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn rotate_refresh(
            &self,
            _: &SecretHash,
            _: SecretHash,
            _: Vec<u8>,
            _: u64,
            _: u64,
        ) -> Result<crate::store::Rotation, crate::store::StoreError> {
            unreachable!()
        }
        async fn revoke_family(&self, _: &str, _: u64) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn family_of_refresh(
            &self,
            _: &SecretHash,
            _: u64,
        ) -> Result<Option<crate::store::RefreshLookup>, crate::store::StoreError> {
            unreachable!()
        }
        async fn revoke_token(&self, _: &str, _: u64) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn is_token_revoked(
            &self,
            _: &str,
            _: u64,
        ) -> Result<bool, crate::store::StoreError> {
            unreachable!()
        }
        async fn get_consent(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<ScopeSet>, crate::store::StoreError> {
            unreachable!()
        }
        async fn put_consent(
            &self,
            _: &str,
            _: &str,
            _: &ScopeSet,
            _: u64,
        ) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn put_pending(
            &self,
            _: &str,
            _: crate::store::PendingAuthorization,
        ) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn get_pending(
            &self,
            _: &str,
            _: u64,
        ) -> Result<Option<crate::store::PendingAuthorization>, crate::store::StoreError> {
            unreachable!()
        }
        async fn take_pending(
            &self,
            _: &str,
            _: u64,
        ) -> Result<Option<crate::store::PendingAuthorization>, crate::store::StoreError> {
            unreachable!()
        }
        async fn sweep(&self, _: u64) -> Result<u64, crate::store::StoreError> {
            unreachable!()
        }
        async fn stats(
            &self,
            _: u64,
        ) -> Result<crate::store::StoreStats, crate::store::StoreError> {
            unreachable!()
        }
    }

    /// A store without upstream logins fails closed: no redirect to the provider, `503` at
    /// start and at the callback, a backend error (not a login) at `/authorize`.
    #[tokio::test]
    async fn a_store_without_upstream_logins_fails_closed() {
        let up = unmounted(Arc::new(Down));
        assert!(matches!(
            up.authenticate(&parts("/authorize?a=1", None)).await,
            Err(AuthnError::Backend(_))
        ));
        assert!(matches!(
            up.authenticate(&parts("/authorize?a=1", Some("mcp-oauth-upstream-login=h")))
                .await,
            Err(AuthnError::Backend(_))
        ));
        assert_eq!(up.start("s", false).await, Err(Refusal::Unavailable));
        let cb = parts("/upstream/callback?code=x&state=s", None);
        let CallbackOutcome::Refused(r) = up.callback(&cb).await else {
            panic!("a callback passed without a store");
        };
        assert_eq!(r, Refusal::Unavailable);
        assert_eq!(r.page("GitHub").0, http::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn not_mounted_is_a_backend_error() {
        let up = mounted();
        let fresh = UpstreamOidc {
            inner: Arc::new(Inner {
                urls: OnceLock::new(),
                store: OnceLock::new(),
                sealer: None,
                name: up.inner.name.clone(),
                kind: up.inner.kind.clone(),
                client_id: String::new(),
                client_secret: None,
                scopes: Vec::new(),
                extra_params: Vec::new(),
                map_scopes_prefix: None,
                rules: Rules::default(),
                endpoints: Endpoints {
                    issuer: String::new(),
                    authorization: String::new(),
                    token: String::new(),
                    userinfo: None,
                    basic_auth: false,
                    iss_required: false,
                    verifier: None,
                },
                http: up.inner.http.clone(),
            }),
        };
        assert!(matches!(
            fresh.authenticate(&parts("/authorize?a=1", None)).await,
            Err(AuthnError::Backend(_))
        ));
    }

    #[test]
    fn claim_matching() {
        let allowed = vec!["eng".to_owned()];
        assert!(claim_matches(
            Some(&serde_json::json!(["ops", "eng"])),
            &allowed
        ));
        assert!(claim_matches(Some(&serde_json::json!("eng")), &allowed));
        assert!(!claim_matches(
            Some(&serde_json::json!(["engineering"])),
            &allowed
        ));
        assert!(!claim_matches(None, &allowed));
    }

    #[test]
    fn only_verified_emails_count() {
        assert_eq!(
            verified_email(&claims(
                serde_json::json!({"email": "a@x.io", "email_verified": true})
            )),
            Some("a@x.io".into())
        );
        assert_eq!(
            verified_email(&claims(
                serde_json::json!({"email": "a@x.io", "email_verified": false})
            )),
            None
        );
        assert_eq!(
            verified_email(&claims(serde_json::json!({"email": "a@x.io"}))),
            None
        );
    }

    #[test]
    fn id_token_nonce_iat_and_azp() {
        let now = crate::util::now();
        let started = now;
        let good = serde_json::json!({"nonce": "n", "iat": now, "aud": "c"});
        assert!(check_id_token(&claims(good), "n", "c", started).is_ok());
        let wrong_nonce = serde_json::json!({"nonce": "m", "iat": now});
        assert_eq!(
            check_id_token(&claims(wrong_nonce), "n", "c", started),
            Err(Refusal::BadIdToken)
        );
        let no_nonce = serde_json::json!({"iat": now});
        assert!(check_id_token(&claims(no_nonce), "n", "c", started).is_err());
        let old = serde_json::json!({"nonce": "n", "iat": now - 3600});
        assert!(check_id_token(&claims(old), "n", "c", started).is_err());
        let future = serde_json::json!({"nonce": "n", "iat": now + 3600});
        assert!(check_id_token(&claims(future), "n", "c", started).is_err());
        let azp = serde_json::json!({"nonce": "n", "iat": now, "azp": "other"});
        assert!(check_id_token(&claims(azp), "n", "c", started).is_err());
    }
}
