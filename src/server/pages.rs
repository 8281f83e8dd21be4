//! The HTML pages of the authorization endpoint: login, consent and error.
//!
//! Pages return HTML text; the server always adds the security headers itself
//! (`Content-Security-Policy: frame-ancestors 'none'`, `X-Frame-Options: DENY`,
//! `Cache-Control: no-store`, `Referrer-Policy: no-referrer`), so a custom [`Pages`] cannot
//! forget them. Every value in a view is untrusted (client names are self-asserted): escape
//! it. The built-in pages (feature `consent-page`) are askama templates that need no
//! JavaScript.
//!
//! The consent page lists only the scopes that can be granted ([`ConsentView::scopes`]) and
//! names those withheld ([`ConsentView::withheld`]).
//!
//! ```
//! use mcp_oauth::server::pages::{ConsentView, ErrorView, LoginView, Pages};
//!
//! struct Plain;
//! impl Pages for Plain {
//!     fn login(&self, v: &LoginView<'_>) -> String {
//!         format!("<form method=post action='{}'>…</form>", v.action)
//!     }
//!     fn consent(&self, v: &ConsentView<'_>) -> String {
//!         format!("Allow {}?", v.client_name)
//!     }
//!     fn error(&self, v: &ErrorView<'_>) -> String {
//!         v.message.to_owned()
//!     }
//! }
//! ```
//!
//! (Escape everything in real pages; `ConsentView::escape` helps.)

use std::sync::Arc;

/// The login form. It POSTs `username`, `password`, `request_id` and `csrf_token` to
/// `action`.
#[derive(Debug, Clone)]
pub struct LoginView<'a> {
    /// The client's self-asserted name (or its id); for a client identified by a client ID
    /// metadata document, the verified host instead.
    pub client_name: &'a str,
    /// For a client identified by a client ID metadata document: the host its `client_id`
    /// URL names, verified by fetching the document from it. Show it instead of a name.
    pub verified_host: Option<&'a str>,
    /// The host the browser will be sent back to.
    pub redirect_host: &'a str,
    /// Where the form posts.
    pub action: &'a str,
    /// The pending request id (hidden field `request_id`).
    pub request_id: &'a str,
    /// The CSRF token (hidden field `csrf_token`).
    pub csrf_token: &'a str,
    /// A message after a failed attempt.
    pub error: Option<&'a str>,
    /// The name typed last time.
    pub username: Option<&'a str>,
}

/// One requested scope.
#[derive(Debug, Clone)]
pub struct ScopeView<'a> {
    /// The scope.
    pub name: &'a str,
    /// Its configured description (the name itself when none).
    pub description: &'a str,
}

/// The consent page. Its form POSTs `request_id`, `csrf_token` and `decision`
/// (`approve` or `deny`) to `action`.
#[derive(Debug, Clone)]
pub struct ConsentView<'a> {
    /// The client's self-asserted name (or its id); for a client identified by a client ID
    /// metadata document, the verified host instead.
    pub client_name: &'a str,
    /// For a client identified by a client ID metadata document: the host its `client_id`
    /// URL names, verified by fetching the document from it. Show it instead of a name.
    pub verified_host: Option<&'a str>,
    /// The client id.
    pub client_id: &'a str,
    /// The redirect URI the code goes to.
    pub redirect_uri: &'a str,
    /// Its host, to show prominently (the spec requires it).
    pub redirect_host: &'a str,
    /// Whether the redirect URI this request uses is a loopback address (any local program
    /// could be listening): show a warning.
    pub loopback_only: bool,
    /// The scopes that will be granted if the user allows (requested, and within the
    /// client's and the user's ceilings).
    pub scopes: &'a [ScopeView<'a>],
    /// Requested scopes that will not be granted (outside the client's or the user's
    /// ceiling, or refused by the scope policy): show them as withheld.
    pub withheld: &'a [ScopeView<'a>],
    /// The resource the token will be for.
    pub resource: &'a str,
    /// Who is signed in.
    pub user: &'a str,
    /// Where the form posts.
    pub action: &'a str,
    /// The pending request id (hidden field `request_id`).
    pub request_id: &'a str,
    /// The CSRF token (hidden field `csrf_token`).
    pub csrf_token: &'a str,
}

impl ConsentView<'_> {
    /// HTML-escapes text for custom pages.
    #[must_use]
    pub fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#x27;"),
                c => out.push(c),
            }
        }
        out
    }
}

/// An error page (shown instead of redirecting when redirecting would be unsafe).
#[derive(Debug, Clone)]
pub struct ErrorView<'a> {
    /// A short title.
    pub title: &'a str,
    /// What went wrong, for the user.
    pub message: &'a str,
}

/// Renders the authorization endpoint's pages as HTML.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Pages` implementation",
    note = "implement `mcp_oauth::server::pages::Pages` (login, consent, error)"
)]
pub trait Pages: Send + Sync + 'static {
    /// The login form.
    fn login(&self, view: &LoginView<'_>) -> String;
    /// The consent form.
    fn consent(&self, view: &ConsentView<'_>) -> String;
    /// An error page.
    fn error(&self, view: &ErrorView<'_>) -> String;
}

/// The pages used when none are configured.
pub(crate) fn default_pages() -> Arc<dyn Pages> {
    builtin::default_pages()
}

mod builtin;
