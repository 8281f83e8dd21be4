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
//! - [`InsecureAutoApprove`]: approves everyone as one fixed user, with a warning logged at
//!   every use. For local development and automated tests only.
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

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use static_users::StaticUsers;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The stable subject identifier (becomes `sub`).
    pub subject: String,
    /// A name to show on the consent page.
    pub display_name: Option<String>,
    /// Extra claims to carry into access tokens (`email`, `email_verified`, …).
    pub claims: Map<String, Value>,
}

impl User {
    /// A user with just a subject.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            display_name: None,
            claims: Map::new(),
        }
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

/// The authenticator failed (its backend is down): the endpoint answers with an error page.
#[derive(Debug, Clone, thiserror::Error)]
#[error("user authentication failed: {0}")]
pub struct AuthnError(pub String);

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
#[derive(Debug, Clone)]
pub struct InsecureAutoApprove {
    user: User,
}

impl InsecureAutoApprove {
    /// Approves everyone as `subject`.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            user: User::new(subject),
        }
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
}
