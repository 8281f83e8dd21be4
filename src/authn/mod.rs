//! [`UserAuthenticator`]: who the user is at `/authorize`.
//!
//! The authenticator sees the raw request (headers and cookies included), so it can reuse the
//! host application's own session. It answers one of three things ([`Authentication`]):
//! the user is known; show the built-in login page; or redirect to the host's login URL.
//!
//! Provided:
//! - [`StaticUsers`]: a fixed user table with Argon2id password hashes, checked through the
//!   built-in login page (a dummy verification runs for unknown names, so timing does not
//!   reveal which users exist);
//! - [`HostSession`]: adapts a closure that reads the host application's session;
//! - `UpstreamOidc` (feature `upstream-oidc`, module `upstream`): signs users in at an
//!   upstream identity provider (any OpenID Connect issuer, Google, Microsoft Entra, GitHub),
//!   with allow-lists and claim-to-scope mapping; the upstream tokens are never handed to
//!   MCP clients, and can be kept encrypted at rest for the host's own calls to the provider
//!   (module `upstream_tokens`);
//! - [`InsecureAutoApprove`]: approves everyone as one fixed user, with a warning logged at
//!   every use. For local development and automated tests only: it refuses to start with an
//!   issuer that is not on a loopback host unless
//!   [`i_understand_this_approves_everyone`](InsecureAutoApprove::i_understand_this_approves_everyone)
//!   is called.
//!
//! # Scope ceilings
//!
//! Signing in does not entitle a user to every scope the server declares. What a user may be
//! granted is limited, at the authorization endpoint, by the intersection of:
//! - the scopes requested (unknown ones dropped, the default scopes when none is left);
//! - the client's ceiling (the `scope` it registered with, when it gave one);
//! - the user's ceiling, [`User::allowed_scopes`] (e.g. [`StaticUsers::with_user_scopes`]);
//! - a [`ScopePolicy`], when one is configured
//!   ([`AuthorizationServerBuilder::scope_policy`](crate::server::AuthorizationServerBuilder::scope_policy)),
//!   which sees the user, the client and the resource.
//!
//! The consent page lists only what can be granted and says what was withheld; a request
//! left with nothing grantable is refused with `invalid_scope`.
//!
//! ```
//! use mcp_oauth::authn::{Authentication, HostSession, User, UserAuthenticator};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Reuse the host app's session cookie; send strangers to its login page.
//! let auth = HostSession::new("/login", |parts: &http::request::Parts| {
//!     let user = parts
//!         .headers
//!         .get("cookie")
//!         .and_then(|c| c.to_str().ok())
//!         .filter(|c| c.contains("session=valid"))
//!         .map(|_| User::new("alice"));
//!     async move { user }
//! });
//! let (parts, _) = http::Request::get("/authorize?x=1").body(()).unwrap().into_parts();
//! match auth.authenticate(&parts).await.unwrap() {
//!     Authentication::Redirect(url) => assert!(url.starts_with("/login?return_to=")),
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

mod static_users;
#[cfg(feature = "upstream-oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream-oidc")))]
pub mod upstream;
#[cfg(feature = "upstream-oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream-oidc")))]
pub mod upstream_tokens;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::scope::ScopeSet;
use crate::store::Client;

pub use static_users::StaticUsers;
#[cfg(feature = "upstream-oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream-oidc")))]
pub use upstream::{UpstreamError, UpstreamOidc, UpstreamOidcBuilder};
#[cfg(feature = "upstream-oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream-oidc")))]
pub use upstream_tokens::{UpstreamTokenKey, UpstreamTokens, UpstreamTokensError};

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The stable subject identifier (becomes `sub`).
    pub subject: String,
    /// A name to show on the consent page.
    pub display_name: Option<String>,
    /// Extra claims to carry into access tokens (`email`, `email_verified`, …).
    pub claims: Map<String, Value>,
    /// The most this user may be granted (the user's scope ceiling): requested scopes
    /// outside it are withheld at the authorization endpoint. `None` means no per-user
    /// ceiling (the client's ceiling and any [`ScopePolicy`] still apply).
    pub allowed_scopes: Option<ScopeSet>,
}

impl User {
    /// A user with just a subject.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            display_name: None,
            claims: Map::new(),
            allowed_scopes: None,
        }
    }

    /// Sets the user's scope ceiling (see [`allowed_scopes`](Self::allowed_scopes)).
    ///
    /// ```
    /// use mcp_oauth::authn::User;
    /// let bob = User::new("bob").with_allowed_scopes("files:read".parse().unwrap());
    /// assert!(bob.allowed_scopes.unwrap().contains("files:read"));
    /// ```
    #[must_use]
    pub fn with_allowed_scopes(mut self, scopes: ScopeSet) -> Self {
        self.allowed_scopes = Some(scopes);
        self
    }

    /// Sets the display name.
    #[must_use]
    pub fn with_display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Adds a claim.
    #[must_use]
    pub fn with_claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }
}

/// What the authenticator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// The user is known.
    Authenticated(User),
    /// Show the built-in login form (its POST goes to [`UserAuthenticator::verify_password`]).
    ShowLoginPage,
    /// Redirect the browser to this URL (the host application's login), which sends the user
    /// back to the authorization URL afterwards.
    Redirect(String),
}

/// The authenticator failed (overloaded, or its backend is down): the endpoint answers with an
/// error page, never with the details.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// Too many password checks are waiting already
    /// ([`StaticUsers`] bounds its queue): the server is overloaded.
    #[error("user authentication failed: too many password checks are waiting")]
    Overloaded,
    /// No password-check slot became free in time.
    #[error("user authentication failed: no password-check slot became free in time")]
    TimedOut,
    /// The password check did not complete (its worker stopped).
    #[error("user authentication failed: the password check did not complete")]
    Interrupted,
    /// The authenticator's own backend failed (build it with [`AuthnError::backend`]).
    #[error("user authentication failed: {0}")]
    Backend(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl AuthnError {
    /// A failure of the authenticator's backend (a directory, a database), with its cause:
    /// `AuthnError::backend("the user directory is unreachable")` or
    /// `AuthnError::backend(io_error)`.
    pub fn backend(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(Arc::from(cause.into()))
    }
}

/// Decides who the user is at `/authorize`. See the [module docs](self).
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `UserAuthenticator`",
    note = "implement `mcp_oauth::authn::UserAuthenticator`, or use `StaticUsers` or `HostSession`"
)]
pub trait UserAuthenticator: Send + Sync + 'static {
    /// Looks at the authorization request (cookies, headers) and decides.
    async fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError>;

    /// Checks a user name and password posted from the built-in login page. The default
    /// accepts nobody.
    async fn verify_password(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Option<User>, AuthnError> {
        Ok(None)
    }

    /// Whether consent may be skipped for this user (the development authenticator says
    /// yes). The default is no: consent is always asked unless remembered.
    fn skips_consent(&self) -> bool {
        false
    }

    /// Whether this authenticator is only safe on a development (loopback) issuer: building
    /// a configuration whose issuer is on another host then fails with
    /// [`ConfigError::InsecureAuthenticator`](crate::ConfigError::InsecureAuthenticator).
    /// The default is no; [`InsecureAutoApprove`] says yes unless told otherwise.
    fn loopback_issuer_only(&self) -> bool {
        false
    }

    /// The upstream login this authenticator runs, if any: `oauth_router` then mounts its
    /// routes (`{issuer}/upstream/start` and `{issuer}/upstream/callback`). Only
    /// [`UpstreamOidc`] (and wrappers forwarding to it) answers `Some`.
    #[cfg(feature = "upstream-oidc")]
    fn upstream(&self) -> Option<&UpstreamOidc> {
        None
    }
}

#[async_trait]
impl<T: UserAuthenticator + ?Sized> UserAuthenticator for Arc<T> {
    async fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError> {
        (**self).authenticate(request).await
    }
    async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, AuthnError> {
        (**self).verify_password(username, password).await
    }
    fn skips_consent(&self) -> bool {
        (**self).skips_consent()
    }
    fn loopback_issuer_only(&self) -> bool {
        (**self).loopback_issuer_only()
    }
    #[cfg(feature = "upstream-oidc")]
    fn upstream(&self) -> Option<&UpstreamOidc> {
        (**self).upstream()
    }
}

/// Decides which of the requested scopes a user may be granted for a client and a resource:
/// a scope-ceiling hook, consulted at the authorization endpoint after the user is known.
///
/// The answer is intersected with what was requested (and with the client's and the user's
/// own ceilings), so a policy can only take scopes away. Answering an empty set refuses the
/// request with `invalid_scope`; an error renders the "temporarily unavailable" page.
///
/// ```
/// use async_trait::async_trait;
/// use mcp_oauth::authn::{AuthnError, ScopePolicy, User};
/// use mcp_oauth::scope::ScopeSet;
/// use mcp_oauth::store::Client;
///
/// /// Only staff may have `admin`.
/// struct StaffOnlyAdmin;
///
/// #[async_trait]
/// impl ScopePolicy for StaffOnlyAdmin {
///     async fn allowed_scopes(
///         &self,
///         user: &User,
///         _client: &Client,
///         _resource: &str,
///         requested: &ScopeSet,
///     ) -> Result<ScopeSet, AuthnError> {
///         let mut out = requested.clone();
///         if !user.subject.ends_with("@staff.example.com") {
///             out.remove("admin");
///         }
///         Ok(out)
///     }
/// }
/// ```
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `ScopePolicy`",
    note = "implement `mcp_oauth::authn::ScopePolicy` (async `allowed_scopes`)"
)]
pub trait ScopePolicy: Send + Sync + 'static {
    /// The scopes out of `requested` that `user` may be granted for `client` at `resource`.
    async fn allowed_scopes(
        &self,
        user: &User,
        client: &Client,
        resource: &str,
        requested: &ScopeSet,
    ) -> Result<ScopeSet, AuthnError>;
}

#[async_trait]
impl<T: ScopePolicy + ?Sized> ScopePolicy for Arc<T> {
    async fn allowed_scopes(
        &self,
        user: &User,
        client: &Client,
        resource: &str,
        requested: &ScopeSet,
    ) -> Result<ScopeSet, AuthnError> {
        (**self)
            .allowed_scopes(user, client, resource, requested)
            .await
    }
}

/// Adapts a closure that reads the host application's session. Strangers are redirected to
/// `login_url` with `return_to=<the authorization URL>` appended.
pub struct HostSession<F> {
    login_url: String,
    lookup: F,
}

impl<F> std::fmt::Debug for HostSession<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSession")
            .field("login_url", &self.login_url)
            .finish_non_exhaustive()
    }
}

impl<F> HostSession<F> {
    /// `lookup` returns the logged-in user, or `None`.
    pub fn new(login_url: impl Into<String>, lookup: F) -> Self {
        Self {
            login_url: login_url.into(),
            lookup,
        }
    }
}

#[async_trait]
impl<F, Fut> UserAuthenticator for HostSession<F>
where
    F: Fn(&http::request::Parts) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<User>> + Send,
{
    async fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError> {
        match (self.lookup)(request).await {
            Some(user) => Ok(Authentication::Authenticated(user)),
            None => {
                let back = request.uri.path_and_query().map_or("/", |p| p.as_str());
                let sep = if self.login_url.contains('?') {
                    '&'
                } else {
                    '?'
                };
                let encoded: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
                Ok(Authentication::Redirect(format!(
                    "{}{sep}return_to={encoded}",
                    self.login_url
                )))
            }
        }
    }
}

/// Approves every authorization request as one fixed user, without login or consent.
///
/// **Insecure**: anyone who can reach `/authorize` gets tokens. It exists for local
/// development and for automated tests, and logs a warning every time it is used.
///
/// Building a configuration with it fails
/// ([`ConfigError::InsecureAuthenticator`](crate::ConfigError::InsecureAuthenticator)) when
/// the issuer is not on a loopback host (`127.0.0.1`, `[::1]`, `localhost`), unless
/// [`i_understand_this_approves_everyone`](Self::i_understand_this_approves_everyone) is
/// called: a staging server reachable by others would hand tokens to anyone.
#[derive(Debug, Clone)]
pub struct InsecureAutoApprove {
    user: User,
    allow_non_loopback: bool,
}

impl InsecureAutoApprove {
    /// Approves everyone as `subject`.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            user: User::new(subject),
            allow_non_loopback: false,
        }
    }

    /// Allows an issuer that is not on a loopback host (test deployments behind a private
    /// name). **Everyone who can reach the server gets tokens** as this user.
    #[must_use]
    pub fn i_understand_this_approves_everyone(mut self) -> Self {
        self.allow_non_loopback = true;
        self
    }

    /// Sets the fixed user's scope ceiling (see [`User::allowed_scopes`]).
    #[must_use]
    pub fn with_allowed_scopes(mut self, scopes: ScopeSet) -> Self {
        self.user.allowed_scopes = Some(scopes);
        self
    }
}

#[async_trait]
impl UserAuthenticator for InsecureAutoApprove {
    async fn authenticate(
        &self,
        _request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError> {
        tracing::warn!(
            target: "mcp_oauth::insecure",
            subject = %self.user.subject,
            "InsecureAutoApprove approved an authorization request without login or consent"
        );
        Ok(Authentication::Authenticated(self.user.clone()))
    }

    fn skips_consent(&self) -> bool {
        true
    }

    fn loopback_issuer_only(&self) -> bool {
        !self.allow_non_loopback
    }
}
