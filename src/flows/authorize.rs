//! The authorization code grant up to the code (RFC 6749 §4.1.1–4.1.2, with PKCE, RFC 7636,
//! resource indicators, RFC 8707, and the redirect rules of RFC 9700): validate the request,
//! decide whether the user must sign in or consent, and issue the code.
//!
//! Three entry points follow the browser through the grant:
//!
//! - [`authorize`]: a `GET`/`POST /authorize`. Validates the [`AuthorizeRequest`], asks who
//!   the user is (the caller passes the authenticator's answer as a future that is awaited
//!   only when needed), and answers with an [`AuthorizeOutcome`].
//! - [`check_form`], then [`signed_in`]: the login form. The caller verifies the password
//!   (and throttles it); the flow resumes the parked request with the user.
//! - [`check_form`], then [`decide`]: the consent form.
//!
//! The rules, in the order they apply, are documented on the HTTP endpoint
//! (`server::authorize`); the ones that matter for safety:
//!
//! - Nothing redirects before the client and its redirect URI are trusted: an unknown
//!   client or redirect URI is an [`ErrorPage`], never a redirect (no open redirect).
//! - Errors found before the user acted are redirected only to a client the user approved
//!   before, or when the authenticator approves everyone (RFC 9700 §4.11.2).
//! - PKCE with `S256` is required; the grant is the requested scopes within every ceiling;
//!   a resource must be one of the configured ones.
//! - Codes and CSRF tokens are stored hashed; a parked request is taken, not read, when a
//!   decision is made, so a decision cannot be replayed.
//!
//! Time comes only from [`Env::now`] and secrets only from [`Env::random`], so the tests
//! below drive expiry with a [`FakeClock`](super::FakeClock).

use std::fmt::Display;
use std::future::Future;

use serde_json::{Map, Value};

use super::Env;
use crate::authn::{Authentication, User};
use crate::flows::TOUCH_INTERVAL_SECS;
use crate::flows::client_auth::printable_name;
use crate::flows::register::{check_redirect_uri_with, redirect_uri_matches};
use crate::scope::{Scope, ScopeSet};
use crate::store::{
    AuthorizationCode, Client, ClientSource, PendingAuthorization, SecretHash, StoreError,
};

/// Longest `client_id`.
pub(crate) const MAX_CLIENT_ID: usize = 256;
/// Longest `redirect_uri` (as at registration).
pub(crate) const MAX_REDIRECT_URI: usize = 2048;
/// Longest `state` echoed back to the client.
const MAX_STATE: usize = 1024;
/// Bytes of randomness in a parked request's id.
const REQUEST_ID_BYTES: usize = 24;
/// Bytes of randomness in a flow id (the audit events' correlation id; not a secret).
const FLOW_ID_BYTES: usize = 12;
/// Bytes of randomness in a CSRF token and in a code.
const SECRET_BYTES: usize = 32;
/// Marks, in the claims of a request parked before login (which hold nothing else and are
/// replaced by the user's claims at login), that the client sent `prompt=consent`.
const PROMPT_CONSENT: &str = "mcp_oauth:prompt_consent";

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// The parameters of an authorization request, as the adapter read them from the query or
/// the form. A parameter given twice is absent here and named in `duplicated`; an empty
/// value counts as absent (RFC 6749 §3.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthorizeRequest {
    /// `client_id`.
    pub(crate) client_id: Option<String>,
    /// `redirect_uri`; may be omitted when the client registered exactly one.
    pub(crate) redirect_uri: Option<String>,
    /// `response_type`; only `code` is supported.
    pub(crate) response_type: Option<String>,
    /// `state`, echoed back exactly (when not over its cap).
    pub(crate) state: Option<String>,
    /// `scope`, space-separated.
    pub(crate) scope: Option<String>,
    /// `resource` (RFC 8707); absent means the canonical resource.
    pub(crate) resource: Option<String>,
    /// `code_challenge` (RFC 7636).
    pub(crate) code_challenge: Option<String>,
    /// `code_challenge_method`; only `S256`.
    pub(crate) code_challenge_method: Option<String>,
    /// `prompt`, space-separated (`none` and `consent` are honoured).
    pub(crate) prompt: Option<String>,
    /// Whether a `request` object was sent (not supported).
    pub(crate) request_object: bool,
    /// Whether a `request_uri` was sent (not supported).
    pub(crate) request_uri: bool,
    /// The parameter names given more than once, in the order first seen.
    pub(crate) duplicated: Vec<String>,
    /// Whether the request had more parameters than the adapter reads.
    pub(crate) too_many: bool,
    /// The first parameter (by name) longer than its cap, if any.
    pub(crate) over_cap: Option<String>,
}

impl AuthorizeRequest {
    fn is_duplicated(&self, name: &str) -> bool {
        self.duplicated.iter().any(|d| d == name)
    }
}

/// The user's answer on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsentDecision {
    /// Allow.
    Approve,
    /// Deny.
    Deny,
}

/// A parked request whose form post was checked: the binding cookie and the CSRF token
/// match. What [`check_form`] hands to [`signed_in`] and [`decide`].
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The parked request's id (the binding cookie's value).
    pub(crate) request_id: String,
    /// The CSRF token the form carried (it matched the stored hash).
    pub(crate) csrf: String,
    /// The parked request, as read (not taken).
    pub(crate) pending: PendingAuthorization,
    /// Its client, as it is now.
    pub(crate) client: Client,
}

// ---------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------

/// What answers a step of the authorization.
#[derive(Debug)]
pub(crate) enum AuthorizeOutcome {
    /// Show this error page; never redirect.
    ErrorPage(ErrorPage),
    /// Send the error back to the client (RFC 6749 §4.1.2.1).
    RedirectError { to: ReturnTo, error: AuthorizeError },
    /// Show the login form for this parked request.
    Login(Box<LoginPrompt>),
    /// Send the browser to the host application's login page.
    HostLogin(String),
    /// Show the consent page for this parked request.
    Consent(Box<ConsentPrompt>),
    /// Send the code back to the client.
    Code {
        /// Where, with which `state`.
        to: ReturnTo,
        /// The code; only its hash is stored.
        code: String,
    },
}

/// Where an authorization response goes, once the client and redirect URI are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReturnTo {
    pub(crate) redirect_uri: String,
    /// Exactly as received.
    pub(crate) state: Option<String>,
}

/// An authorization error response: the `error` code and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizeError {
    pub(crate) code: &'static str,
    pub(crate) description: String,
}

impl AuthorizeError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// Why the answer is an error page rather than a redirect.
#[derive(Debug)]
pub(crate) enum ErrorPage {
    /// The request cannot be trusted enough to redirect (no client, an unknown client or
    /// redirect URI, a parameter given twice…): the message says what is wrong.
    Invalid(&'static str),
    /// An error about a trusted client the user has not approved: shown rather than
    /// redirected, so this server is no open redirector.
    Refused {
        client: Box<Client>,
        redirect_uri: String,
        error: AuthorizeError,
    },
    /// The parked request expired, was completed or was replaced.
    Expired,
    /// A form post without a matching CSRF token or binding cookie.
    Forged,
    /// The parked request's client is gone.
    UnknownClient,
    /// A consent decision for a request nobody signed in to.
    NotSignedIn,
    /// A consent form with neither Allow nor Deny.
    InvalidDecision,
    /// A store, authenticator or policy failed.
    Unavailable,
    /// The client's metadata document cannot be fetched now: `503` with `Retry-After`.
    #[cfg(feature = "client-metadata")]
    MetadataUnavailable {
        /// What failed, for the page.
        problem: String,
        /// Seconds.
        retry_after: u64,
    },
    /// The client's metadata document was fetched (or its URL checked) and cannot be used.
    #[cfg(feature = "client-metadata")]
    MetadataInvalid(String),
}

/// A request parked while the user signs in or decides: its id (the binding cookie's
/// value) and the CSRF token of the form (only its hash is stored).
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    pub(crate) request_id: String,
    pub(crate) csrf: String,
}

/// What the login page shows.
#[derive(Debug)]
pub(crate) struct LoginPrompt {
    pub(crate) client: Client,
    pub(crate) redirect_uri: String,
    pub(crate) parked: Parked,
}

/// What the consent page shows.
#[derive(Debug)]
pub(crate) struct ConsentPrompt {
    pub(crate) client: Client,
    pub(crate) redirect_uri: String,
    pub(crate) parked: Parked,
    /// The user's display name (the subject when none).
    pub(crate) user: String,
    /// What will be granted.
    pub(crate) scope: ScopeSet,
    /// What was requested and will not be granted.
    pub(crate) withheld: Vec<Scope>,
    pub(crate) resource: String,
}

fn unavailable() -> AuthorizeOutcome {
    AuthorizeOutcome::ErrorPage(ErrorPage::Unavailable)
}

fn store_failure(e: &StoreError) -> AuthorizeOutcome {
    tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
    #[cfg(feature = "metrics")]
    crate::metrics::store_error(e);
    unavailable()
}

// ---------------------------------------------------------------------------------------
// GET/POST /authorize
// ---------------------------------------------------------------------------------------

/// A validated authorization request.
#[derive(Debug, Clone)]
struct Validated {
    client: Client,
    redirect_uri: String,
    /// Whether the request carried `redirect_uri` (then `/token` must repeat it).
    redirect_uri_in_request: bool,
    state: Option<String>,
    code_challenge: String,
    /// The scopes requested (the known ones; the default scopes when none is left), before
    /// any ceiling.
    scope: ScopeSet,
    resource: String,
    prompt_none: bool,
    prompt_consent: bool,
    /// The flow id of the audit events ([`crate::audit`]).
    fid: String,
}

impl Validated {
    fn target(&self) -> Target {
        Target {
            client: self.client.clone(),
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            fid: self.fid.clone(),
        }
    }
}

/// Where an error about a request with a trusted client and redirect URI may be sent.
#[derive(Debug)]
struct Target {
    client: Client,
    redirect_uri: String,
    state: Option<String>,
    /// The flow id of the audit events.
    fid: String,
}

impl Target {
    fn return_to(&self) -> ReturnTo {
        ReturnTo {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
        }
    }

    fn redirect(&self, error: AuthorizeError) -> AuthorizeOutcome {
        crate::audit::authorization_denied(&self.fid, &self.client.client_id, error.code);
        AuthorizeOutcome::RedirectError {
            to: self.return_to(),
            error,
        }
    }

    /// The error page shown instead of redirecting to a client the user has not approved.
    fn refused(self, error: AuthorizeError) -> AuthorizeOutcome {
        crate::audit::authorization_denied(&self.fid, &self.client.client_id, error.code);
        AuthorizeOutcome::ErrorPage(ErrorPage::Refused {
            client: Box::new(self.client),
            redirect_uri: self.redirect_uri,
            error,
        })
    }
}

/// Why a request was not validated.
enum Rejection {
    /// Nothing may redirect: this page is the answer.
    Page(ErrorPage),
    /// The client and redirect URI are trusted; the error may go back to the client if
    /// redirecting is safe (see [`refuse_before_interaction`]).
    Refuse {
        target: Box<Target>,
        error: AuthorizeError,
    },
}

/// A `GET`/`POST /authorize`: validates `req`, then decides between the code, the login
/// page, the host's login and the consent page. `user` is the authenticator's answer for
/// this browser; it is awaited at most once, and only when the request names a trusted
/// client and redirect URI.
pub(crate) async fn authorize<F, E>(env: &Env, req: &AuthorizeRequest, user: F) -> AuthorizeOutcome
where
    F: Future<Output = Result<Authentication, E>>,
    E: Display,
{
    let v = match validate(env, req).await {
        Ok(v) => {
            crate::audit::authorization_requested(
                &v.fid,
                &v.client.client_id,
                &v.scope,
                &v.resource,
            );
            v
        }
        Err(Rejection::Page(page)) => return AuthorizeOutcome::ErrorPage(page),
        Err(Rejection::Refuse { target, error }) => {
            return refuse_before_interaction(env, *target, error, user).await;
        }
    };
    let found = match user.await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "user authenticator failed");
            return unavailable();
        }
    };
    match found {
        Authentication::Authenticated(user) => {
            let now = env.now();
            after_login(env, v, user, now, false).await
        }
        Authentication::ShowLoginPage | Authentication::Redirect(_) if v.prompt_none => {
            // The user is unknown, so nobody approved this client: no automatic redirect
            // unless the authenticator approves everyone.
            refuse_unknown_user(
                env,
                v.target(),
                AuthorizeError::new("login_required", "The user is not signed in"),
            )
        }
        Authentication::ShowLoginPage => {
            let scope = v.scope.clone();
            let parked = match park(env, &v, &scope, None).await {
                Ok(p) => p,
                Err(e) => return store_failure(&e),
            };
            AuthorizeOutcome::Login(Box::new(LoginPrompt {
                client: v.client,
                redirect_uri: v.redirect_uri,
                parked,
            }))
        }
        Authentication::Redirect(url) => AuthorizeOutcome::HostLogin(url),
    }
}

/// An error about a request from an unknown user: redirected only when the authenticator
/// approves everyone (it would redirect a code just as readily), else the page.
fn refuse_unknown_user(env: &Env, target: Target, error: AuthorizeError) -> AuthorizeOutcome {
    if env.authenticator.skips_consent() {
        return target.redirect(error);
    }
    target.refused(error)
}

/// An error detected before the user did anything (issue 8 item 5). It is redirected to the
/// client only when that cannot make this server an open redirector: the authenticator
/// approves everyone anyway, or the signed-in user approved this client before (a
/// remembered consent). Otherwise the user sees an error page.
async fn refuse_before_interaction<F, E>(
    env: &Env,
    target: Target,
    error: AuthorizeError,
    user: F,
) -> AuthorizeOutcome
where
    F: Future<Output = Result<Authentication, E>>,
    E: Display,
{
    if env.authenticator.skips_consent() {
        return refuse_unknown_user(env, target, error);
    }
    let user = match user.await {
        Ok(Authentication::Authenticated(user)) => user,
        Ok(_) => return target.refused(error),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "user authenticator failed");
            return unavailable();
        }
    };
    refuse_known_user(env, target, &user.subject, error).await
}

/// An error for a known user who has not acted yet: redirected when the user approved this
/// client before, else the page.
async fn refuse_known_user(
    env: &Env,
    target: Target,
    subject: &str,
    error: AuthorizeError,
) -> AuthorizeOutcome {
    let approved = env.authenticator.skips_consent()
        || match env
            .grants
            .get_consent(subject, &target.client.client_id)
            .await
        {
            Ok(Some(granted)) => !granted.is_empty(),
            Ok(None) => false,
            Err(e) => return store_failure(&e),
        };
    if approved {
        return target.redirect(error);
    }
    target.refused(error)
}

/// Records that an authorization starts for `client`, **before** anything is stored for it,
/// and returns the client as it is now: `None` when a concurrent idle sweep removed it (the
/// caller answers as for an unknown client). Skipped (no store access) for a configured
/// client, and while the recorded use is under an hour old: such a client is far from idle.
async fn mark_in_use(env: &Env, client: Client) -> Result<Option<Client>, StoreError> {
    let now = env.now();
    // A metadata document client lives in no store: its document is its registration.
    let configured = client.source == ClientSource::Static
        || client.source == ClientSource::MetadataDocument
        || env.static_clients.contains_key(&client.client_id);
    let recently_used =
        client.last_used_at != 0 && now.saturating_sub(client.last_used_at) < TOUCH_INTERVAL_SECS;
    if configured || recently_used || unused_with_time_left(env, &client, now) {
        return Ok(Some(client));
    }
    env.clients.touch_client(&client.client_id, now).await?;
    env.clients.get_client(&client.client_id).await
}

/// Whether `client` was never used and has so long left before the never-used rule may
/// remove it that this authorization finishes (or its pending request expires) first: the
/// pending request, then the code, then the token endpoint's recorded use keep it. Starting
/// an authorization is then **not** recorded as a use, so an abandoned attempt leaves the
/// client to that rule. A later start (within the last stretch of the window) is recorded,
/// as for any other client.
fn unused_with_time_left(env: &Env, client: &Client, now: u64) -> bool {
    let Some(window) = env.unused_client_after else {
        return false;
    };
    let margin =
        env.lifetimes.pending.as_secs() + env.lifetimes.code.as_secs() + UNUSED_CLIENT_MARGIN_SECS;
    client.last_used_at == 0 && now + margin < client.issued_at.saturating_add(window.as_secs())
}

/// Slack (seconds) on top of the pending-request and code lifetimes before a never-used
/// client's deadline, within which starting an authorization counts as a use.
const UNUSED_CLIENT_MARGIN_SECS: u64 = 15 * 60;

/// Validates the request: `Err` says how to answer.
async fn validate(env: &Env, req: &AuthorizeRequest) -> Result<Validated, Rejection> {
    let page = |message: &'static str| Rejection::Page(ErrorPage::Invalid(message));

    // 1. Client and redirect URI: nothing may redirect before both are trusted.
    if req.is_duplicated("client_id") {
        return Err(page("The client_id parameter was given more than once."));
    }
    if req.is_duplicated("redirect_uri") {
        return Err(page("The redirect_uri parameter was given more than once."));
    }
    let Some(client_id) = req.client_id.as_deref() else {
        return Err(page("The request names no client (client_id is missing)."));
    };
    if client_id.len() > MAX_CLIENT_ID {
        return Err(page("The client_id is too long."));
    }
    if req
        .redirect_uri
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REDIRECT_URI)
    {
        return Err(page("The redirect_uri is too long."));
    }
    const UNKNOWN: &str = "The application is not registered with this server (unknown client_id). If it registered before, it must register again.";
    // A client ID metadata document: a fetch failure is 503 (retry), an unusable document
    // is a page naming the problem; neither is an unknown client.
    #[cfg(feature = "client-metadata")]
    let resolved = match &env.client_metadata {
        Some(resolver)
            if super::client_metadata::is_metadata_url(client_id)
                && !env.static_clients.contains_key(client_id) =>
        {
            use super::client_metadata::ResolveError;
            match resolver.resolve(client_id, env.now()).await {
                Ok(c) => Some(c),
                Err(ResolveError::Unavailable {
                    problem,
                    retry_after,
                }) => {
                    return Err(Rejection::Page(ErrorPage::MetadataUnavailable {
                        problem,
                        retry_after,
                    }));
                }
                Err(ResolveError::Invalid(problem)) => {
                    return Err(Rejection::Page(ErrorPage::MetadataInvalid(problem)));
                }
            }
        }
        _ => None,
    };
    #[cfg(not(feature = "client-metadata"))]
    let resolved: Option<Client> = None;
    let client = match resolved {
        Some(c) => c,
        None => match env.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(page(UNKNOWN)),
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
                return Err(Rejection::Page(ErrorPage::Unavailable));
            }
        },
    };
    // Record the use before anything is stored for this request, so an idle-client sweep
    // either sees it or has already removed the client (then it is unknown, as above).
    let client = match mark_in_use(env, client).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(page(UNKNOWN)),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(Rejection::Page(ErrorPage::Unavailable));
        }
    };
    let redirect_uri = match req.redirect_uri.as_deref() {
        Some(requested) => {
            if !client
                .redirect_uris
                .iter()
                .any(|r| redirect_uri_matches(r, requested))
            {
                return Err(page(
                    "The redirect_uri is not one the application registered, so this server will not send you there.",
                ));
            }
            requested.to_owned()
        }
        None => match client.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(page(
                    "The request has no redirect_uri, and the application registered more than one.",
                ));
            }
        },
    };
    // A client stored before the current redirect policy (an operating-system handler
    // scheme, a custom scheme no longer allowed) is not sent anywhere.
    if let Err(why) = check_redirect_uri_with(&redirect_uri, &env.redirect_schemes) {
        tracing::warn!(
            target: "mcp_oauth::authorize",
            client_id = %client.client_id,
            reason = %why,
            "redirect URI refused by the redirect policy"
        );
        return Err(page(
            "The application's redirect_uri is not allowed by this server's redirect policy, so this server will not send you there.",
        ));
    }

    // 2. Everything else may be answered at the (now trusted) redirect URI.
    let state = req
        .state
        .as_deref()
        .filter(|s| s.len() <= MAX_STATE)
        .map(str::to_owned);
    let target = Target {
        client,
        redirect_uri,
        state,
        fid: env.random.token(FLOW_ID_BYTES),
    };
    let fail = |target: Target, code: &'static str, description: &str| {
        Err(Rejection::Refuse {
            target: Box::new(target),
            error: AuthorizeError::new(code, description),
        })
    };
    if req.too_many {
        return fail(target, "invalid_request", "Too many parameters");
    }
    // A parameter name is the requester's text: only a short printable one is echoed, so
    // nobody can write their own words on this server's error page.
    if let Some(name) = &req.over_cap {
        let description = format!("The {} parameter is too long", printable_name(name));
        return fail(target, "invalid_request", &description);
    }
    if req.is_duplicated("resource") {
        return fail(
            target,
            "invalid_target",
            "Only one resource per authorization request is supported",
        );
    }
    if let Some(dup) = req.duplicated.first() {
        let description = format!(
            "The {} parameter was given more than once",
            printable_name(dup)
        );
        return fail(target, "invalid_request", &description);
    }
    if req.request_object {
        return fail(
            target,
            "request_not_supported",
            "Request objects are not supported",
        );
    }
    if req.request_uri {
        return fail(
            target,
            "request_uri_not_supported",
            "request_uri is not supported",
        );
    }
    match req.response_type.as_deref() {
        None => return fail(target, "invalid_request", "response_type is required"),
        Some("code") => {}
        Some(_) => {
            return fail(
                target,
                "unsupported_response_type",
                "Only the authorization code flow (response_type=code) is supported",
            );
        }
    }
    let Some(code_challenge) = req.code_challenge.as_deref() else {
        return fail(
            target,
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256",
        );
    };
    match req.code_challenge_method.as_deref() {
        Some("S256") => {}
        None => {
            return fail(
                target,
                "invalid_request",
                "code_challenge_method is required and must be S256",
            );
        }
        Some(_) => {
            return fail(
                target,
                "invalid_request",
                "Only the S256 code_challenge_method is supported",
            );
        }
    }
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            target,
            "invalid_request",
            "code_challenge must be the 43-character base64url SHA-256 of the verifier",
        );
    }
    let resource = match req.resource.as_deref() {
        None => env.cfg.resource().to_owned(),
        Some(r) if env.cfg.resources().iter().any(|known| known == r) => r.to_owned(),
        Some(_) => {
            return fail(
                target,
                "invalid_target",
                "The resource is not served by this authorization server",
            );
        }
    };
    let scope = requested_scopes(env, req.scope.as_deref());
    // The client's ceiling alone may already leave nothing (issue 8 item 4).
    // (Nothing requested and no default scopes is not an error: the token carries none.)
    if !scope.is_empty() && within_client_ceiling(env, &target.client, &scope).is_empty() {
        return fail(
            target,
            "invalid_scope",
            "None of the requested scopes may be granted to this client",
        );
    }
    let prompts: Vec<&str> = req
        .prompt
        .as_deref()
        .map(|p| p.split(' ').collect())
        .unwrap_or_default();
    Ok(Validated {
        client: target.client,
        redirect_uri: target.redirect_uri,
        redirect_uri_in_request: req.redirect_uri.is_some(),
        state: target.state,
        code_challenge: code_challenge.to_owned(),
        scope,
        resource,
        prompt_none: prompts.contains(&"none"),
        prompt_consent: prompts.contains(&"consent"),
        fid: target.fid,
    })
}

// ---------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------

/// The requested scopes this server declares; the default scopes when none is left.
fn requested_scopes(env: &Env, requested: Option<&str>) -> ScopeSet {
    let mut out = ScopeSet::new();
    for token in requested.unwrap_or("").split(' ') {
        if env.cfg.scopes().any(|(s, _)| s.as_str() == token)
            && let Ok(s) = Scope::new(token)
        {
            out.insert(s);
        }
    }
    if out.is_empty() {
        env.cfg.default_scopes().clone()
    } else {
        out
    }
}

/// The scopes of `a` that are also in `b`.
fn intersect(a: &ScopeSet, b: &ScopeSet) -> ScopeSet {
    let mut out = ScopeSet::new();
    for s in a.iter().filter(|s| b.contains(s.as_str())) {
        out.insert(s.clone());
    }
    out
}

/// `scope` within the client's ceiling (its registered `scope`, when it gave one and
/// registered scopes are ceilings, or the operator's for a static client).
fn within_client_ceiling(env: &Env, client: &Client, scope: &ScopeSet) -> ScopeSet {
    let applies = client.source == ClientSource::Static || env.registered_scope_is_ceiling;
    match &client.scope {
        Some(ceiling) if applies => intersect(scope, ceiling),
        _ => scope.clone(),
    }
}

/// What may be granted of `requested` (issue 8 item 4): requested ∩ the client's ceiling ∩
/// the user's ceiling ∩ the scope policy's answer. `None` when the policy failed.
async fn grantable(
    env: &Env,
    client: &Client,
    user: &User,
    resource: &str,
    requested: &ScopeSet,
) -> Option<ScopeSet> {
    let mut granted = within_client_ceiling(env, client, requested);
    if let Some(ceiling) = &user.allowed_scopes {
        granted = intersect(&granted, ceiling);
    }
    if let Some(policy) = &env.scope_policy
        && !granted.is_empty()
    {
        match policy
            .allowed_scopes(user, client, resource, &granted)
            .await
        {
            Ok(allowed) => granted = intersect(&granted, &allowed),
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "scope policy failed");
                return None;
            }
        }
    }
    Some(granted)
}

/// A remembered consent is kept per (user, client) in the store, as scope tokens qualified
/// by the resource: `"{resource}#{scope}"`. A resource never holds a `#` (the configuration
/// refuses fragments), so the first `#` after the resource splits the two unambiguously, and
/// consent given for one resource never covers another (issue 8 item 9).
fn qualify(resource: &str, scope: &ScopeSet) -> ScopeSet {
    let mut out = ScopeSet::new();
    for s in scope.iter() {
        if let Ok(q) = Scope::new(format!("{resource}#{}", s.as_str())) {
            out.insert(q);
        }
    }
    out
}

/// The scopes a remembered consent grants at `resource`.
fn consented_at(remembered: &ScopeSet, resource: &str) -> ScopeSet {
    let prefix = format!("{resource}#");
    let mut out = ScopeSet::new();
    for q in remembered.iter() {
        if let Some(s) = q.as_str().strip_prefix(&prefix)
            && let Ok(s) = Scope::new(s)
        {
            out.insert(s);
        }
    }
    out
}

/// Whether the consent page must be shown for `scope`.
async fn consent_needed(
    env: &Env,
    v: &Validated,
    scope: &ScopeSet,
    user: &User,
) -> Result<bool, StoreError> {
    if env.authenticator.skips_consent() {
        return Ok(false);
    }
    if !env.remember_consent || v.prompt_consent {
        return Ok(true);
    }
    Ok(
        match env
            .grants
            .get_consent(&user.subject, &v.client.client_id)
            .await?
        {
            Some(granted) => !scope.is_subset(&consented_at(&granted, &v.resource)),
            None => true,
        },
    )
}

// ---------------------------------------------------------------------------------------
// Deciding
// ---------------------------------------------------------------------------------------

/// Parks `v` (with `scope`, and the user once known) under a fresh request id and CSRF
/// token, for the pending lifetime ([`Lifetimes::pending`](super::Lifetimes)).
async fn park(
    env: &Env,
    v: &Validated,
    scope: &ScopeSet,
    user: Option<(&User, u64)>,
) -> Result<Parked, StoreError> {
    let request_id = env.random.token(REQUEST_ID_BYTES);
    let csrf = env.random.token(SECRET_BYTES);
    let pending = PendingAuthorization {
        client_id: v.client.client_id.clone(),
        redirect_uri: v.redirect_uri.clone(),
        redirect_uri_in_request: v.redirect_uri_in_request,
        state: v.state.clone(),
        code_challenge: v.code_challenge.clone(),
        scope: scope.clone(),
        resource: v.resource.clone(),
        csrf_hash: SecretHash::of(&csrf),
        subject: user.map(|(u, _)| u.subject.clone()),
        claims: with_fid(
            match user {
                Some((u, _)) => u.claims.clone(),
                None => anonymous_claims(v),
            },
            &v.fid,
        ),
        auth_time: user.map(|(_, t)| t),
        expires_at: env.now() + env.lifetimes.pending.as_secs(),
    };
    env.grants.put_pending(&request_id, pending).await?;
    Ok(Parked { request_id, csrf })
}

/// `claims` with the flow id under [`crate::audit::FLOW_ID_CLAIM`] (replacing any claim of
/// that name): it travels with the parked request, the code and the family into every
/// access token of the grant.
fn with_fid(mut claims: Map<String, Value>, fid: &str) -> Map<String, Value> {
    claims.insert(
        crate::audit::FLOW_ID_CLAIM.to_owned(),
        Value::String(fid.to_owned()),
    );
    claims
}

/// The claims parked with a request before anyone logged in: only what must survive the
/// login form.
fn anonymous_claims(v: &Validated) -> Map<String, Value> {
    let mut claims = Map::new();
    if v.prompt_consent {
        claims.insert(PROMPT_CONSENT.to_owned(), Value::Bool(true));
    }
    claims
}

/// The user is known: narrow the scopes to what may be granted, then issue the code at once
/// when consent is not needed, else park the request for the consent page.
/// `interacted` says whether the user acted (submitted the login form): errors then go back
/// to the client; before that, only to a client the user approved.
async fn after_login(
    env: &Env,
    v: Validated,
    user: User,
    auth_time: u64,
    interacted: bool,
) -> AuthorizeOutcome {
    let refuse = async |error: AuthorizeError| {
        let target = v.target();
        if interacted {
            target.redirect(error)
        } else {
            refuse_known_user(env, target, &user.subject, error).await
        }
    };
    let Some(scope) = grantable(env, &v.client, &user, &v.resource, &v.scope).await else {
        return unavailable();
    };
    if scope.is_empty() && !v.scope.is_empty() {
        tracing::info!(
            target: "mcp_oauth::authorize",
            client_id = %v.client.client_id,
            subject = %user.subject,
            requested = %v.scope,
            "no requested scope may be granted to this user"
        );
        return refuse(AuthorizeError::new(
            "invalid_scope",
            "None of the requested scopes may be granted to this user",
        ))
        .await;
    }
    let needed = match consent_needed(env, &v, &scope, &user).await {
        Ok(needed) => needed,
        Err(e) => return store_failure(&e),
    };
    if !needed {
        let claims = with_fid(user.claims.clone(), &v.fid);
        let grant = Grant {
            client_id: &v.client.client_id,
            redirect_uri: &v.redirect_uri,
            redirect_uri_in_request: v.redirect_uri_in_request,
            code_challenge: &v.code_challenge,
            scope: &scope,
            resource: &v.resource,
            subject: &user.subject,
            claims: &claims,
            auth_time,
        };
        return issue_code(env, &grant, v.target().return_to(), false).await;
    }
    if v.prompt_none {
        return refuse(AuthorizeError::new(
            "consent_required",
            "The user has not approved this application",
        ))
        .await;
    }
    let parked = match park(env, &v, &scope, Some((&user, auth_time))).await {
        Ok(p) => p,
        Err(e) => return store_failure(&e),
    };
    let withheld: Vec<Scope> = v
        .scope
        .iter()
        .filter(|s| !scope.contains(s.as_str()))
        .cloned()
        .collect();
    let display = user.display_name.unwrap_or(user.subject);
    AuthorizeOutcome::Consent(Box::new(ConsentPrompt {
        client: v.client,
        redirect_uri: v.redirect_uri,
        parked,
        user: display,
        scope,
        withheld,
        resource: v.resource,
    }))
}

// ---------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------

/// What a code is issued for.
struct Grant<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    redirect_uri_in_request: bool,
    code_challenge: &'a str,
    scope: &'a ScopeSet,
    resource: &'a str,
    subject: &'a str,
    claims: &'a Map<String, Value>,
    auth_time: u64,
}

/// Stores a new code, hashed (and the consent, when `consented` and consent is
/// remembered), and answers with the redirect that carries it.
async fn issue_code(env: &Env, g: &Grant<'_>, to: ReturnTo, consented: bool) -> AuthorizeOutcome {
    let unavailable = |to| AuthorizeOutcome::RedirectError {
        to,
        error: AuthorizeError::new(
            "temporarily_unavailable",
            "The authorization server is temporarily unavailable",
        ),
    };
    let issued_at = env.now();
    if consented && env.remember_consent {
        let consented = qualify(g.resource, g.scope);
        let remembered = match env.grants.get_consent(g.subject, g.client_id).await {
            Ok(prev) => prev.map_or_else(|| consented.clone(), |p| p.union(&consented)),
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
                return unavailable(to);
            }
        };
        if let Err(e) = env
            .grants
            .put_consent(g.subject, g.client_id, &remembered, issued_at)
            .await
        {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return unavailable(to);
        }
    }
    let code = env.random.token(SECRET_BYTES);
    let record = AuthorizationCode {
        client_id: g.client_id.to_owned(),
        redirect_uri: g.redirect_uri.to_owned(),
        redirect_uri_in_request: g.redirect_uri_in_request,
        code_challenge: g.code_challenge.to_owned(),
        scope: g.scope.clone(),
        resource: g.resource.to_owned(),
        subject: g.subject.to_owned(),
        claims: g.claims.clone(),
        auth_time: g.auth_time,
        expires_at: issued_at + env.lifetimes.code.as_secs(),
    };
    if let Err(e) = env.grants.put_code(SecretHash::of(&code), record).await {
        tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
        return unavailable(to);
    }
    crate::audit::authorization_granted(
        crate::audit::fid_of(g.claims),
        g.client_id,
        g.subject,
        g.scope,
        g.resource,
    );
    AuthorizeOutcome::Code { to, code }
}

// ---------------------------------------------------------------------------------------
// The forms
// ---------------------------------------------------------------------------------------

/// Checks a form post against its parked request: `request_id` and `csrf_token` as posted,
/// and `cookie_matches`, which tells whether the browser's binding cookie holds a given
/// request id. `Err` is the error page.
pub(crate) async fn check_form(
    env: &Env,
    request_id: Option<&str>,
    csrf: Option<&str>,
    cookie_matches: impl FnOnce(&str) -> bool,
) -> Result<Checked, ErrorPage> {
    let (Some(request_id), Some(csrf)) = (request_id, csrf) else {
        return Err(ErrorPage::Forged);
    };
    let pending = match env.grants.get_pending(request_id, env.now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(ErrorPage::Expired),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(ErrorPage::Unavailable);
        }
    };
    if !cookie_matches(request_id) || !SecretHash::of(csrf).ct_eq(&pending.csrf_hash) {
        tracing::warn!(
            target: "mcp_oauth::authorize",
            client_id = %pending.client_id,
            "form post with a missing or mismatched CSRF token or binding cookie"
        );
        return Err(ErrorPage::Forged);
    }
    let client = match env.client(&pending.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(ErrorPage::UnknownClient),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(ErrorPage::Unavailable);
        }
    };
    Ok(Checked {
        request_id: request_id.to_owned(),
        csrf: csrf.to_owned(),
        pending,
        client,
    })
}

/// The login form succeeded for `user`: retires the request id and CSRF token the
/// anonymous page carried, then continues as for a known user. Errors from here on go
/// back to the client (the user acted).
pub(crate) async fn signed_in(env: &Env, c: Checked, user: User) -> AuthorizeOutcome {
    let pending = match env.grants.take_pending(&c.request_id, env.now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return AuthorizeOutcome::ErrorPage(ErrorPage::Expired),
        Err(e) => return store_failure(&e),
    };
    let v = Validated {
        client: c.client,
        redirect_uri: pending.redirect_uri,
        redirect_uri_in_request: pending.redirect_uri_in_request,
        state: pending.state,
        code_challenge: pending.code_challenge,
        scope: pending.scope,
        resource: pending.resource,
        prompt_none: false,
        prompt_consent: pending.claims.contains_key(PROMPT_CONSENT),
        fid: match pending.claims.get(crate::audit::FLOW_ID_CLAIM) {
            Some(Value::String(fid)) => fid.clone(),
            _ => env.random.token(FLOW_ID_BYTES),
        },
    };
    let now = env.now();
    after_login(env, v, user, now, true).await
}

/// The consent form: `decision` is `None` when the form said neither Allow nor Deny. The
/// parked request is taken, so whoever takes it decides, once.
pub(crate) async fn decide(
    env: &Env,
    c: &Checked,
    decision: Option<ConsentDecision>,
) -> AuthorizeOutcome {
    let Some(subject) = c.pending.subject.clone() else {
        return AuthorizeOutcome::ErrorPage(ErrorPage::NotSignedIn);
    };
    let Some(decision) = decision else {
        return AuthorizeOutcome::ErrorPage(ErrorPage::InvalidDecision);
    };
    let pending = match env.grants.take_pending(&c.request_id, env.now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return AuthorizeOutcome::ErrorPage(ErrorPage::Expired),
        Err(e) => return store_failure(&e),
    };
    let to = ReturnTo {
        redirect_uri: pending.redirect_uri.clone(),
        state: pending.state.clone(),
    };
    if decision == ConsentDecision::Deny {
        crate::audit::authorization_denied(
            crate::audit::fid_of(&pending.claims),
            &pending.client_id,
            "access_denied",
        );
        return AuthorizeOutcome::RedirectError {
            to,
            error: AuthorizeError::new("access_denied", "The user denied access"),
        };
    }
    let grant = Grant {
        client_id: &pending.client_id,
        redirect_uri: &pending.redirect_uri,
        redirect_uri_in_request: pending.redirect_uri_in_request,
        code_challenge: &pending.code_challenge,
        scope: &pending.scope,
        resource: &pending.resource,
        subject: &subject,
        claims: &pending.claims,
        auth_time: pending.auth_time.unwrap_or_else(|| env.now()),
    };
    issue_code(env, &grant, to, true).await
}

#[cfg(test)]
mod tests {
    //! The grant rules, table by table, with a [`FakeClock`] and a
    //! [`MemoryStore`](crate::store::MemoryStore); no sockets.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::McpOAuthConfig;
    use crate::authn::{AuthnError, InsecureAutoApprove, ScopePolicy, StaticUsers};
    use crate::flows::{FakeClock, Random};
    use crate::server::{AsContext, AuthorizationServer, StaticClient};
    use crate::store::{ApplicationType, CodeTake, MemoryStore, TokenEndpointAuthMethod};

    const T0: u64 = 1_800_000_000;
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const RESOURCE: &str = "http://127.0.0.1:8000/mcp";
    const OTHER_RESOURCE: &str = "http://127.0.0.1:8000/other";
    const CALLBACK: &str = "http://127.0.0.1/callback";

    /// A random source that counts, so a test knows which secret a flow drew.
    #[derive(Default)]
    struct Counting(AtomicU8);

    impl Random for Counting {
        fn fill(&self, buf: &mut [u8]) {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            buf.fill(n);
        }
    }

    fn scopes(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    /// Allows only `read`, whatever else the ceilings leave.
    struct OnlyRead;

    #[async_trait::async_trait]
    impl ScopePolicy for OnlyRead {
        async fn allowed_scopes(
            &self,
            _: &User,
            _: &Client,
            _: &str,
            _: &ScopeSet,
        ) -> Result<ScopeSet, AuthnError> {
            Ok(scopes("read"))
        }
    }

    /// An environment with clients `c1` (public, one loopback callback), `capped` (ceiling
    /// `read`) and `two` (two redirect URIs); scopes `read`, `write`, `admin`, default
    /// `read`; resources [`RESOURCE`] and [`OTHER_RESOURCE`]; a code lifetime of 60 s and
    /// a pending lifetime of 600 s. `skip_consent` picks the authenticator.
    async fn test_env(skip_consent: bool) -> (Env, Arc<FakeClock>) {
        let mut b = AuthorizationServer::builder()
            .store(MemoryStore::new())
            .client(StaticClient::public("c1", [CALLBACK]).with_name("Client One"))
            .client(StaticClient::public("capped", [CALLBACK]).with_scope(scopes("read")))
            .client(StaticClient::public(
                "two",
                [CALLBACK, "http://127.0.0.1/second"],
            ))
            .remember_consent(true);
        b = if skip_consent {
            b.authenticator(InsecureAutoApprove::new("dev-user"))
        } else {
            b.authenticator(StaticUsers::new())
        };
        let server = b.build().await.unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .resource(OTHER_RESOURCE)
            .issuer("http://127.0.0.1:8000")
            .scope("read", "Read")
            .scope("write", "Write")
            .scope("admin", "Administer")
            .default_scopes(["read"])
            .authorization_server(server.clone())
            .build()
            .unwrap();
        let mut env = AsContext::new(cfg, &server).env;
        let clock = Arc::new(FakeClock::at(T0));
        env.clock = clock.clone();
        (env, clock)
    }

    /// Parameters to change in [`request`]: a name, and its new value or `None`.
    type Changes<'a> = &'a [(&'a str, Option<&'a str>)];

    /// A form post: what it is, its request id, its CSRF token, whether the cookie
    /// matches, and the expected page.
    type FormRow<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool, &'a str);

    /// A valid request from `c1`, with `changes` applied (`None` removes a parameter).
    fn request(changes: Changes<'_>) -> AuthorizeRequest {
        let mut r = AuthorizeRequest {
            client_id: Some("c1".into()),
            redirect_uri: Some(CALLBACK.into()),
            response_type: Some("code".into()),
            state: Some("xyz".into()),
            code_challenge: Some(CHALLENGE.into()),
            code_challenge_method: Some("S256".into()),
            ..AuthorizeRequest::default()
        };
        for (name, value) in changes {
            let value = value.map(str::to_owned);
            match *name {
                "client_id" => r.client_id = value,
                "redirect_uri" => r.redirect_uri = value,
                "response_type" => r.response_type = value,
                "state" => r.state = value,
                "scope" => r.scope = value,
                "resource" => r.resource = value,
                "code_challenge" => r.code_challenge = value,
                "code_challenge_method" => r.code_challenge_method = value,
                "prompt" => r.prompt = value,
                "request" => r.request_object = value.is_some(),
                other => panic!("no parameter {other} in this test"),
            }
        }
        r
    }

    fn signed_in_as(subject: &str) -> std::future::Ready<Result<Authentication, AuthnError>> {
        std::future::ready(Ok(Authentication::Authenticated(User::new(subject))))
    }

    fn anonymous() -> std::future::Ready<Result<Authentication, AuthnError>> {
        std::future::ready(Ok(Authentication::ShowLoginPage))
    }

    /// The outcome in a word, for tables: `page`, `refused:<error>`, `error:<error>`,
    /// `login`, `host`, `consent` or `code`.
    fn kind(o: &AuthorizeOutcome) -> String {
        match o {
            AuthorizeOutcome::ErrorPage(ErrorPage::Refused { error, .. }) => {
                format!("refused:{}", error.code)
            }
            AuthorizeOutcome::ErrorPage(p) => format!("page:{p:?}"),
            AuthorizeOutcome::RedirectError { error, .. } => format!("error:{}", error.code),
            AuthorizeOutcome::Login(_) => "login".into(),
            AuthorizeOutcome::HostLogin(_) => "host".into(),
            AuthorizeOutcome::Consent(_) => "consent".into(),
            AuthorizeOutcome::Code { .. } => "code".into(),
        }
    }

    /// The stored code record behind an issued code (redeems it).
    async fn redeem(env: &Env, o: &AuthorizeOutcome) -> CodeTake {
        let AuthorizeOutcome::Code { code, .. } = o else {
            panic!("no code: {o:?}");
        };
        env.grants
            .take_code(&SecretHash::of(code), "family", env.now())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn validation_rules() {
        let long_id = "c".repeat(MAX_CLIENT_ID + 1);
        let short_challenge = &CHALLENGE[..42];
        let bad_challenge = format!("{}+", &CHALLENGE[..42]);
        #[rustfmt::skip]
        let table: &[(&str, Changes<'_>, &str)] = &[
            ("valid", &[], "code"),
            // Nothing redirects before the client and the redirect URI are trusted.
            ("no client", &[("client_id", None)], "page:Invalid"),
            ("unknown client", &[("client_id", Some("nobody"))], "page:Invalid"),
            ("client_id too long", &[("client_id", Some(&long_id))], "page:Invalid"),
            ("unregistered redirect", &[("redirect_uri", Some("https://evil.example/cb"))], "page:Invalid"),
            ("other path", &[("redirect_uri", Some("http://127.0.0.1/callback/x"))], "page:Invalid"),
            ("query added", &[("redirect_uri", Some("http://127.0.0.1/callback?a=b"))], "page:Invalid"),
            ("loopback port ignored (RFC 8252 §7.3)", &[("redirect_uri", Some("http://127.0.0.1:5555/callback"))], "code"),
            ("one registered URI may be omitted", &[("redirect_uri", None)], "code"),
            ("two registered URIs: must be named", &[("client_id", Some("two")), ("redirect_uri", None)], "page:Invalid"),
            // Then errors go to the (trusted) redirect URI.
            ("no response_type", &[("response_type", None)], "error:invalid_request"),
            ("implicit", &[("response_type", Some("token"))], "error:unsupported_response_type"),
            ("request object", &[("request", Some("x"))], "error:request_not_supported"),
            ("no PKCE", &[("code_challenge", None)], "error:invalid_request"),
            ("no PKCE method", &[("code_challenge_method", None)], "error:invalid_request"),
            ("plain PKCE", &[("code_challenge_method", Some("plain"))], "error:invalid_request"),
            ("challenge too short", &[("code_challenge", Some(short_challenge))], "error:invalid_request"),
            ("challenge not base64url", &[("code_challenge", Some(&bad_challenge))], "error:invalid_request"),
            ("unknown resource", &[("resource", Some("https://elsewhere.example/mcp"))], "error:invalid_target"),
            ("resource with a trailing slash", &[("resource", Some("http://127.0.0.1:8000/mcp/"))], "error:invalid_target"),
            ("second resource", &[("resource", Some(OTHER_RESOURCE))], "code"),
            ("scope outside the client's ceiling", &[("client_id", Some("capped")), ("scope", Some("write"))], "error:invalid_scope"),
            ("unknown scopes are dropped", &[("scope", Some("read nonsense"))], "code"),
        ];
        for (what, changes, expected) in table {
            let (env, _) = test_env(true).await;
            let o = authorize(&env, &request(changes), signed_in_as("alice")).await;
            let got = kind(&o);
            assert!(
                got.starts_with(expected),
                "{what}: expected {expected}, got {got}"
            );
        }
    }

    #[tokio::test]
    async fn wire_problems_are_refused_in_order() {
        let (env, _) = test_env(true).await;
        let dup = |names: &[&str]| AuthorizeRequest {
            duplicated: names.iter().map(|n| (*n).to_owned()).collect(),
            ..request(&[])
        };
        #[rustfmt::skip]
        let table: Vec<(&str, AuthorizeRequest, &str)> = vec![
            ("client_id twice", dup(&["client_id"]), "page:Invalid"),
            ("redirect_uri twice", dup(&["redirect_uri"]), "page:Invalid"),
            ("resource twice", dup(&["resource"]), "error:invalid_target"),
            ("state twice", dup(&["state"]), "error:invalid_request"),
            ("too many", AuthorizeRequest { too_many: true, ..request(&[]) }, "error:invalid_request"),
            ("over a cap", AuthorizeRequest { over_cap: Some("nonce".into()), ..request(&[]) }, "error:invalid_request"),
        ];
        for (what, req, expected) in table {
            let got = kind(&authorize(&env, &req, signed_in_as("alice")).await);
            assert!(
                got.starts_with(expected),
                "{what}: expected {expected}, got {got}"
            );
        }
        // An over-long state is not echoed; a name that is not printable is not either.
        let req = AuthorizeRequest {
            over_cap: Some("bad\nname".into()),
            ..request(&[("state", Some(&"s".repeat(MAX_STATE + 1)))])
        };
        match authorize(&env, &req, signed_in_as("alice")).await {
            AuthorizeOutcome::RedirectError { to, error } => {
                assert_eq!(to.state, None);
                assert_eq!(error.description, "The (unprintable) parameter is too long");
            }
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn early_errors_redirect_only_to_an_approved_client() {
        // The authenticator approves everyone: the error may go back.
        let (env_auto, _) = test_env(true).await;
        let bad = request(&[("response_type", Some("token"))]);
        let o = authorize(&env_auto, &bad, anonymous()).await;
        assert_eq!(kind(&o), "error:unsupported_response_type");

        // A consent page would be shown: an unknown user, or one who never approved this
        // client, sees a page naming the error instead.
        let (env, _) = test_env(false).await;
        let o = authorize(&env, &bad, anonymous()).await;
        assert_eq!(kind(&o), "refused:unsupported_response_type");
        let o = authorize(&env, &bad, signed_in_as("alice")).await;
        assert_eq!(kind(&o), "refused:unsupported_response_type");
        let none = request(&[("prompt", Some("none"))]);
        let o = authorize(&env, &none, anonymous()).await;
        assert_eq!(kind(&o), "refused:login_required");
        let o = authorize(&env, &none, signed_in_as("alice")).await;
        assert_eq!(kind(&o), "refused:consent_required");

        // Once alice approved c1, errors before interaction go back to it.
        env.grants
            .put_consent("alice", "c1", &qualify(RESOURCE, &scopes("read")), T0)
            .await
            .unwrap();
        let o = authorize(&env, &bad, signed_in_as("alice")).await;
        assert_eq!(kind(&o), "error:unsupported_response_type");
        let o = authorize(&env, &bad, signed_in_as("bob")).await;
        assert_eq!(kind(&o), "refused:unsupported_response_type");
    }

    #[tokio::test]
    async fn the_user_is_asked_for_only_when_the_client_and_redirect_uri_are_trusted() {
        let (env, _) = test_env(false).await;
        let asked = AtomicBool::new(false);
        let user = async {
            asked.store(true, Ordering::SeqCst);
            Ok::<_, AuthnError>(Authentication::ShowLoginPage)
        };
        let o = authorize(&env, &request(&[("client_id", Some("nobody"))]), user).await;
        assert!(kind(&o).starts_with("page:Invalid"), "{o:?}");
        assert!(!asked.load(Ordering::SeqCst));

        let failing = std::future::ready(Err::<Authentication, _>(AuthnError::backend(
            std::io::Error::other("down"),
        )));
        let o = authorize(&env, &request(&[]), failing).await;
        assert_eq!(kind(&o), "page:Unavailable");
        let host = std::future::ready(Ok::<_, AuthnError>(Authentication::Redirect(
            "https://host.example/login".into(),
        )));
        match authorize(&env, &request(&[]), host).await {
            AuthorizeOutcome::HostLogin(url) => assert_eq!(url, "https://host.example/login"),
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn codes_are_drawn_from_the_random_source_stored_hashed_single_use_and_expire() {
        let (mut env, clock) = test_env(true).await;
        env.random = Arc::new(Counting::default());
        let o = authorize(&env, &request(&[]), signed_in_as("alice")).await;
        let AuthorizeOutcome::Code { to, code } = &o else {
            panic!("{o:?}");
        };
        // The first draw is the flow id (the audit events' correlation id), the second the code.
        let drawn = Counting::default();
        let fid = drawn.token(FLOW_ID_BYTES);
        assert_eq!(code, &drawn.token(SECRET_BYTES));
        assert_eq!(to.redirect_uri, CALLBACK);
        assert_eq!(to.state.as_deref(), Some("xyz"));
        // Stored under its hash only.
        let raw = env
            .grants
            .take_code(&SecretHash::of("not-hashed"), "f", T0)
            .await
            .unwrap();
        assert_eq!(raw, CodeTake::NotFound);
        match redeem(&env, &o).await {
            CodeTake::Taken(record) => {
                assert_eq!(record.expires_at, T0 + 60);
                assert_eq!(record.code_challenge, CHALLENGE);
                assert_eq!(record.subject, "alice");
                assert_eq!(record.resource, RESOURCE);
                assert_eq!(record.scope, scopes("read"));
                assert!(record.redirect_uri_in_request);
                assert_eq!(record.auth_time, T0);
                // The flow id travels with the code (and from there into the tokens).
                assert_eq!(
                    crate::audit::fid_of(&record.claims),
                    fid,
                    "{:?}",
                    record.claims
                );
            }
            t => panic!("{t:?}"),
        }
        assert!(matches!(redeem(&env, &o).await, CodeTake::Replayed { .. }));

        // A second code, redeemed after its 60 s.
        let o = authorize(&env, &request(&[]), signed_in_as("alice")).await;
        clock.advance(Duration::from_secs(61));
        assert_eq!(redeem(&env, &o).await, CodeTake::NotFound);
    }

    #[tokio::test]
    async fn scope_ceilings() {
        struct Row {
            what: &'static str,
            client: &'static str,
            requested: Option<&'static str>,
            user_ceiling: Option<&'static str>,
            policy: bool,
            expected: Result<&'static str, &'static str>,
        }
        #[rustfmt::skip]
        let table = [
            Row { what: "default scopes", client: "c1", requested: None, user_ceiling: None, policy: false, expected: Ok("read") },
            Row { what: "as requested", client: "c1", requested: Some("read write"), user_ceiling: None, policy: false, expected: Ok("read write") },
            Row { what: "client ceiling", client: "capped", requested: Some("read write"), user_ceiling: None, policy: false, expected: Ok("read") },
            Row { what: "user ceiling", client: "c1", requested: Some("read write admin"), user_ceiling: Some("write"), policy: false, expected: Ok("write") },
            Row { what: "policy", client: "c1", requested: Some("read write"), user_ceiling: None, policy: true, expected: Ok("read") },
            Row { what: "user ceiling leaves nothing", client: "c1", requested: Some("admin"), user_ceiling: Some("read"), policy: false, expected: Err("invalid_scope") },
            Row { what: "policy leaves nothing", client: "c1", requested: Some("write"), user_ceiling: None, policy: true, expected: Err("invalid_scope") },
            Row { what: "all ceilings", client: "capped", requested: Some("read write admin"), user_ceiling: Some("read admin"), policy: true, expected: Ok("read") },
        ];
        for row in table {
            let (mut env, _) = test_env(true).await;
            if row.policy {
                env.scope_policy = Some(Arc::new(OnlyRead));
            }
            let mut user = User::new("alice");
            if let Some(c) = row.user_ceiling {
                user = user.with_allowed_scopes(scopes(c));
            }
            let req = request(&[("client_id", Some(row.client)), ("scope", row.requested)]);
            let o = authorize(
                &env,
                &req,
                std::future::ready(Ok::<_, AuthnError>(Authentication::Authenticated(user))),
            )
            .await;
            match (row.expected, &o) {
                (Ok(granted), AuthorizeOutcome::Code { .. }) => match redeem(&env, &o).await {
                    CodeTake::Taken(record) => {
                        assert_eq!(record.scope, scopes(granted), "{}", row.what)
                    }
                    t => panic!("{}: {t:?}", row.what),
                },
                (Err(code), AuthorizeOutcome::RedirectError { error, .. }) => {
                    assert_eq!(error.code, code, "{}", row.what);
                }
                (_, o) => panic!("{}: {o:?}", row.what),
            }
        }
    }

    #[tokio::test]
    async fn a_dynamic_clients_registered_scope_is_a_ceiling_unless_switched_off() {
        for (ceiling, expected) in [(true, "error:invalid_scope"), (false, "code")] {
            let (mut env, _) = test_env(true).await;
            env.registered_scope_is_ceiling = ceiling;
            env.clients
                .insert_client(Client {
                    client_id: "dyn".into(),
                    secret_hash: None,
                    secret_expires_at: 0,
                    client_name: None,
                    redirect_uris: vec![CALLBACK.into()],
                    grant_types: vec!["authorization_code".into()],
                    token_endpoint_auth_method: TokenEndpointAuthMethod::None,
                    application_type: ApplicationType::Native,
                    scope: Some(scopes("read")),
                    extra: Map::new(),
                    // Near the end of its never-used window (3 h), so starting counts.
                    issued_at: T0 - 10_000,
                    last_used_at: 0,
                    source: ClientSource::Dynamic,
                })
                .await
                .unwrap();
            let req = request(&[("client_id", Some("dyn")), ("scope", Some("write"))]);
            let got = kind(&authorize(&env, &req, signed_in_as("alice")).await);
            assert_eq!(got, expected, "registered_scope_is_ceiling({ceiling})");
            // Starting an authorization recorded the use, at the flow's clock.
            let stored = env.clients.get_client("dyn").await.unwrap().unwrap();
            assert_eq!(stored.last_used_at, T0);
        }
    }

    /// A never-used client with time left in its never-used window stays never used when an
    /// authorization merely starts (an abandoned attempt must not exempt it from the rule);
    /// near its deadline the start is recorded; a used client's start is recorded as ever.
    #[tokio::test]
    async fn starting_an_authorization_is_a_use_only_near_the_never_used_deadline() {
        let window = crate::server::DEFAULT_UNUSED_CLIENT_AFTER.as_secs();
        for (issued_ago, last_used, recorded) in [
            (60, 0, false),
            (window / 2, 0, false),
            (window - 600, 0, true),
            (2 * window, T0 - 2 * window, true),
        ] {
            let (env, _) = test_env(true).await;
            assert_eq!(env.unused_client_after.map(|d| d.as_secs()), Some(window));
            env.clients
                .insert_client(Client {
                    client_id: "dyn".into(),
                    secret_hash: None,
                    secret_expires_at: 0,
                    client_name: None,
                    redirect_uris: vec![CALLBACK.into()],
                    grant_types: vec!["authorization_code".into()],
                    token_endpoint_auth_method: TokenEndpointAuthMethod::None,
                    application_type: ApplicationType::Native,
                    scope: None,
                    extra: Map::new(),
                    issued_at: T0 - issued_ago,
                    last_used_at: last_used,
                    source: ClientSource::Dynamic,
                })
                .await
                .unwrap();
            let req = request(&[("client_id", Some("dyn"))]);
            let got = kind(&authorize(&env, &req, signed_in_as("alice")).await);
            assert_eq!(got, "code", "issued {issued_ago} s ago");
            let stored = env.clients.get_client("dyn").await.unwrap().unwrap();
            let expected = if recorded { T0 } else { last_used };
            assert_eq!(stored.last_used_at, expected, "issued {issued_ago} s ago");
        }
    }

    /// Drives the login form: parks an anonymous request, then checks the form.
    async fn parked_login(env: &Env, req: &AuthorizeRequest) -> Parked {
        match authorize(env, req, anonymous()).await {
            AuthorizeOutcome::Login(p) => p.parked,
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn a_parked_request_expires_and_its_form_must_match() {
        let (env, clock) = test_env(false).await;
        let parked = parked_login(&env, &request(&[])).await;
        let id = parked.request_id.as_str();
        let same = |r: &str| r == id;
        #[rustfmt::skip]
        let table: [FormRow<'_>; 5] = [
            ("no request id", None, Some(&parked.csrf), true, "Forged"),
            ("no csrf token", Some(id), None, true, "Forged"),
            ("wrong csrf token", Some(id), Some("guess"), true, "Forged"),
            ("no cookie", Some(id), Some(&parked.csrf), false, "Forged"),
            ("unknown request", Some("nope"), Some(&parked.csrf), true, "Expired"),
        ];
        for (what, request_id, csrf, cookie, expected) in table {
            let got = check_form(&env, request_id, csrf, |_| cookie)
                .await
                .unwrap_err();
            assert_eq!(format!("{got:?}"), expected, "{what}");
        }
        clock.advance(Duration::from_secs(599));
        assert!(
            check_form(&env, Some(id), Some(&parked.csrf), same)
                .await
                .is_ok()
        );
        clock.advance(Duration::from_secs(2));
        let got = check_form(&env, Some(id), Some(&parked.csrf), same).await;
        assert!(matches!(got, Err(ErrorPage::Expired)), "{got:?}");
    }

    /// A client store that fails every operation.
    struct DownClients;

    #[async_trait::async_trait]
    impl crate::store::ClientStore for DownClients {
        async fn insert_client(&self, _: Client) -> Result<(), StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn upsert_client(&self, _: Client) -> Result<(), StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn get_client(&self, _: &str) -> Result<Option<Client>, StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn delete_client(&self, _: &str) -> Result<bool, StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn touch_client(&self, _: &str, _: u64) -> Result<(), StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn count_clients(&self) -> Result<u64, StoreError> {
            Err(StoreError::unavailable("down"))
        }
    }

    /// Every client lookup of `/authorize` (the request, the recorded use, the login and
    /// consent form posts) answers a store failure with the unavailable page, never the
    /// unknown-client page (after which a client would register again).
    #[tokio::test]
    async fn a_failing_client_store_is_the_unavailable_page_never_unknown_client() {
        let (mut env, _) = test_env(false).await;
        env.clients
            .insert_client(Client {
                client_id: "dyn".into(),
                secret_hash: None,
                secret_expires_at: 0,
                client_name: None,
                redirect_uris: vec![CALLBACK.into()],
                grant_types: vec!["authorization_code".into()],
                token_endpoint_auth_method: TokenEndpointAuthMethod::None,
                application_type: ApplicationType::Native,
                scope: None,
                extra: Map::new(),
                issued_at: T0,
                last_used_at: T0 - 7200,
                source: ClientSource::Dynamic,
            })
            .await
            .unwrap();
        let req = request(&[("client_id", Some("dyn"))]);
        let parked = parked_login(&env, &req).await;
        env.clients = Arc::new(DownClients);
        let got = check_form(&env, Some(&parked.request_id), Some(&parked.csrf), |_| true).await;
        assert!(
            matches!(got, Err(ErrorPage::Unavailable)),
            "form post: {got:?}"
        );
        let got = authorize(&env, &req, anonymous()).await;
        assert!(
            matches!(got, AuthorizeOutcome::ErrorPage(ErrorPage::Unavailable)),
            "request: {got:?}"
        );
    }

    #[tokio::test]
    async fn sign_in_replaces_the_parked_request_and_errors_then_go_back() {
        let (env, _) = test_env(false).await;
        let parked = parked_login(&env, &request(&[])).await;
        let c = check_form(&env, Some(&parked.request_id), Some(&parked.csrf), |_| true)
            .await
            .unwrap();
        let o = signed_in(&env, c.clone(), User::new("alice")).await;
        let AuthorizeOutcome::Consent(prompt) = o else {
            panic!("{o:?}");
        };
        assert_ne!(prompt.parked.request_id, parked.request_id);
        assert_eq!(prompt.scope, scopes("read"));
        // The anonymous request id is spent.
        let again = signed_in(&env, c, User::new("alice")).await;
        assert_eq!(kind(&again), "page:Expired");

        // After the user acted, an error goes back to the client even though the user never
        // approved it.
        let parked = parked_login(&env, &request(&[("scope", Some("admin"))])).await;
        let c = check_form(&env, Some(&parked.request_id), Some(&parked.csrf), |_| true)
            .await
            .unwrap();
        let user = User::new("bob").with_allowed_scopes(scopes("read"));
        let o = signed_in(&env, c, user).await;
        assert_eq!(kind(&o), "error:invalid_scope");
    }

    /// Signs `subject` in through the login page and answers the consent page.
    async fn consent_as(
        env: &Env,
        req: &AuthorizeRequest,
        subject: &str,
        decision: Option<ConsentDecision>,
    ) -> AuthorizeOutcome {
        let AuthorizeOutcome::Consent(p) = authorize(env, req, signed_in_as(subject)).await else {
            panic!("no consent page");
        };
        let c = check_form(
            env,
            Some(&p.parked.request_id),
            Some(&p.parked.csrf),
            |_| true,
        )
        .await
        .unwrap();
        decide(env, &c, decision).await
    }

    #[tokio::test]
    async fn consent_decisions_are_single_use() {
        let (env, _) = test_env(false).await;
        let o = consent_as(&env, &request(&[]), "alice", Some(ConsentDecision::Deny)).await;
        assert_eq!(kind(&o), "error:access_denied");
        let o = consent_as(&env, &request(&[]), "alice", None).await;
        assert_eq!(kind(&o), "page:InvalidDecision");

        let AuthorizeOutcome::Consent(p) =
            authorize(&env, &request(&[]), signed_in_as("alice")).await
        else {
            panic!("no consent page");
        };
        let c = check_form(
            &env,
            Some(&p.parked.request_id),
            Some(&p.parked.csrf),
            |_| true,
        )
        .await
        .unwrap();
        let o = decide(&env, &c, Some(ConsentDecision::Approve)).await;
        assert_eq!(kind(&o), "code");
        let replay = decide(&env, &c, Some(ConsentDecision::Approve)).await;
        assert_eq!(kind(&replay), "page:Expired");

        // A request parked before login has no user to consent.
        let parked = parked_login(&env, &request(&[])).await;
        let c = check_form(&env, Some(&parked.request_id), Some(&parked.csrf), |_| true)
            .await
            .unwrap();
        let o = decide(&env, &c, Some(ConsentDecision::Approve)).await;
        assert_eq!(kind(&o), "page:NotSignedIn");
    }

    #[tokio::test]
    async fn remembered_consent_covers_the_same_scopes_at_the_same_resource_only() {
        let (env, _) = test_env(false).await;
        let approve = Some(ConsentDecision::Approve);
        let o = consent_as(&env, &request(&[("scope", Some("read"))]), "alice", approve).await;
        assert_eq!(kind(&o), "code");
        #[rustfmt::skip]
        let table: &[(&str, &str, Changes<'_>, &str)] = &[
            ("same scopes", "alice", &[("scope", Some("read"))], "code"),
            ("fewer scopes (the default)", "alice", &[], "code"),
            ("more scopes", "alice", &[("scope", Some("read write"))], "consent"),
            ("other resource", "alice", &[("resource", Some(OTHER_RESOURCE))], "consent"),
            ("prompt=consent", "alice", &[("prompt", Some("consent"))], "consent"),
            ("other user", "bob", &[], "consent"),
            ("prompt=none, not approved", "bob", &[("prompt", Some("none"))], "refused:consent_required"),
            ("prompt=none, approved", "alice", &[("prompt", Some("none"))], "code"),
            ("prompt=none, more scopes, approved before", "alice", &[("prompt", Some("none")), ("scope", Some("write"))], "error:consent_required"),
        ];
        for (what, subject, changes, expected) in table {
            let got = kind(&authorize(&env, &request(changes), signed_in_as(subject)).await);
            assert_eq!(&got, expected, "{what}");
        }

        // Approving more adds to what is remembered.
        let wider = request(&[("scope", Some("read write"))]);
        assert_eq!(
            kind(&consent_as(&env, &wider, "alice", approve).await),
            "code"
        );
        assert_eq!(
            kind(&authorize(&env, &wider, signed_in_as("alice")).await),
            "code"
        );

        // Not remembered when switched off.
        let (mut env, _) = test_env(false).await;
        env.remember_consent = false;
        assert_eq!(
            kind(&consent_as(&env, &request(&[]), "alice", approve).await),
            "code"
        );
        let got = kind(&authorize(&env, &request(&[]), signed_in_as("alice")).await);
        assert_eq!(got, "consent");
    }

    #[tokio::test]
    async fn prompt_consent_survives_the_login_form() {
        let (env, _) = test_env(false).await;
        env.grants
            .put_consent("alice", "c1", &qualify(RESOURCE, &scopes("read")), T0)
            .await
            .unwrap();
        for (prompt, expected) in [(None, "code"), (Some("consent"), "consent")] {
            let parked = parked_login(&env, &request(&[("prompt", prompt)])).await;
            let c = check_form(&env, Some(&parked.request_id), Some(&parked.csrf), |_| true)
                .await
                .unwrap();
            let o = signed_in(&env, c, User::new("alice")).await;
            assert_eq!(kind(&o), expected, "prompt {prompt:?}");
        }
    }

    #[test]
    fn consent_is_qualified_by_resource() {
        let q = qualify("https://a.example/mcp", &scopes("read write"));
        assert_eq!(
            consented_at(&q, "https://a.example/mcp"),
            scopes("read write")
        );
        assert!(consented_at(&q, "https://a.example/mc").is_empty());
        assert!(consented_at(&q, "https://b.example/mcp").is_empty());
    }
}
