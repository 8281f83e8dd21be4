//! The authorization endpoint: `GET`/`POST {issuer path}/authorize`, with the login form
//! (`POST …/authorize/login`) and the consent form (`POST …/authorize/consent`).
//!
//! # Order of checks
//!
//! 0. **Rate limit and size.** `GET`/`POST /authorize` and the login and consent form posts
//!    share a per-address limit
//!    ([`authorize_rate_limit`](super::AuthorizationServerBuilder::authorize_rate_limit),
//!    60 a minute by default): over it, a `429` page with `Retry-After`. A query longer than
//!    16 KiB, a `client_id` over 256 bytes or a `redirect_uri` over 2,048 bytes renders an
//!    error page.
//! 1. **Client and redirect URI, before anything can redirect.** An unknown `client_id`, a
//!    `redirect_uri` that is not registered, a missing `redirect_uri` when the client has
//!    several, or either parameter given twice, renders an error page (`400`) and never
//!    redirects: redirecting to an unchecked URI is an open redirect (and how codes were
//!    stolen from authorization servers that checked it only at the token endpoint).
//!    Matching is exact, byte for byte, except that for `http` loopback URIs
//!    (`127.0.0.1`, `[::1]`, `localhost`) the port is ignored (RFC 8252 §7.3). The URI must
//!    also pass the current [redirect URI policy](super::register#redirect-uri-policy)
//!    (a client stored earlier with an operating-system handler scheme is refused here).
//! 2. **The request**: parameters given twice, a parameter over its length cap (`state`,
//!    `scope` 1,024 bytes; `resource` 2,048; `nonce` 512; `code_challenge` 128; `prompt`
//!    128; any other 2,048), `response_type` other than `code`, a missing PKCE
//!    `code_challenge`, a `code_challenge_method` other than `S256` (`plain` and a missing
//!    method are refused: no downgrade), a challenge that is not 43 base64url characters,
//!    a `resource` (RFC 8707) that is not one of the configured resources
//!    (`invalid_target`), and requested scopes of which the client's ceiling leaves none
//!    (`invalid_scope`). Unknown scopes are dropped, and when none remains the configured
//!    default scopes apply. An absent `resource` means the canonical one.
//!
//!    **These errors are redirected to the client only when that cannot make this server
//!    an open redirector** (RFC 9700 §4.11.2): when the authenticator approves everyone
//!    anyway ([`InsecureAutoApprove`](crate::authn::InsecureAutoApprove)), or when the
//!    signed-in user approved this client before (a remembered consent). Otherwise the user
//!    sees an error page naming the error. The same holds for `login_required` and
//!    `consent_required` (`prompt=none`) and for `invalid_scope` found before the user did
//!    anything. Once the user acts (signs in, allows, denies), errors redirect as usual.
//! 3. **The user**, through the configured [`UserAuthenticator`](crate::authn::UserAuthenticator):
//!    known already (host session), shown the login page, or redirected to the host's login.
//!    At the login form, failed sign-ins are also throttled per account and client address
//!    ([`login_account_rate_limit`](super::AuthorizationServerBuilder::login_account_rate_limit))
//!    and per account across all addresses
//!    ([`login_account_total_rate_limit`](super::AuthorizationServerBuilder::login_account_total_rate_limit));
//!    a failing password check (e.g. [`StaticUsers`](crate::authn::StaticUsers)' bounded
//!    queue is full) answers `503` with `Retry-After`.
//! 4. **Scope ceilings**: the grant is the requested scopes ∩ the client's ceiling ∩ the
//!    user's [`allowed_scopes`](crate::authn::User::allowed_scopes) ∩ what the
//!    [`ScopePolicy`](crate::authn::ScopePolicy) allows (see
//!    [`authn`](crate::authn#scope-ceilings)). Nothing left: `invalid_scope`.
//! 5. **Consent**, unless the authenticator skips it
//!    ([`InsecureAutoApprove`](crate::authn::InsecureAutoApprove): `GET /authorize` then
//!    answers with the code directly) or a remembered consent covers the scopes **for this
//!    resource**. The consent page lists only what will be granted, names what was
//!    withheld, and warns when the redirect URI of this request is a loopback address.
//!
//! Every redirect back to the client, success or error, carries `iss` (RFC 9207) equal to
//! the issuer string, and `state` exactly as received.
//!
//! # Browser binding
//!
//! While the user logs in and decides, the request is parked in the grant store under a
//! random id with a lifetime of ten minutes. The id travels in the forms and in a cookie
//! (`__Host-mcp-oauth-req`, `Secure; HttpOnly; SameSite=Lax; Path=/` on an `https` issuer;
//! `mcp-oauth-req` without `Secure` on a development `http` issuer); each form also carries
//! a CSRF token of which only the hash is stored. A form post whose cookie or token does not
//! match renders an error page. The pair is replaced after a successful login, and the
//! consent decision consumes the parked request, so a decision cannot be replayed. One
//! browser has one authorization in progress at a time: starting another replaces the
//! first.
//!
//! Pages carry `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline';
//! frame-ancestors 'none'` (no `form-action`: Chrome applies it to the redirect that
//! follows the consent form, which would block the return to the client),
//! `X-Frame-Options: DENY`, `Cache-Control: no-store` and `Referrer-Policy: no-referrer`.
//!
//! ```
//! use axum::body::Body;
//! use http::Request;
//! use mcp_oauth::{McpOAuthConfig, oauth_router};
//! use mcp_oauth::authn::InsecureAutoApprove;
//! use mcp_oauth::server::{AuthorizationServer, StaticClient};
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = AuthorizationServer::builder()
//!     .authenticator(InsecureAutoApprove::new("dev-user"))
//!     .client(StaticClient::public("c1", ["http://127.0.0.1/callback"]))
//!     .build()
//!     .unwrap();
//! let cfg = McpOAuthConfig::builder()
//!     .resource("http://127.0.0.1:8000/mcp")
//!     .issuer("http://127.0.0.1:8000")
//!     .authorization_server(&server)
//!     .build()
//!     .unwrap();
//! let app: axum::Router = oauth_router(&cfg, &server);
//! let res = app
//!     .oneshot(
//!         Request::get(
//!             "/authorize?response_type=code&client_id=c1\
//!              &redirect_uri=http%3A%2F%2F127.0.0.1%3A50123%2Fcallback\
//!              &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
//!              &code_challenge_method=S256&state=xyz",
//!         )
//!         .body(Body::empty())
//!         .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 302);
//! let location = res.headers()["location"].to_str().unwrap();
//! assert!(location.starts_with("http://127.0.0.1:50123/callback?code="));
//! assert!(location.ends_with("&state=xyz&iss=http%3A%2F%2F127.0.0.1%3A8000"));
//! # }
//! ```

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, PRAGMA, REFERRER_POLICY, SET_COOKIE,
};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use super::AsContext;
use super::client_auth::printable_name;
use super::login_throttle;
use super::pages::{ConsentView, ErrorView, LoginView, ScopeView};
use super::rate_limit::{self, LimitKind};
use super::register::{
    all_loopback, check_redirect_uri_with, is_invisible_char, redirect_uri_matches,
};
use crate::authn::{Authentication, User};
use crate::scope::{Scope, ScopeSet};
use crate::store::{AuthorizationCode, Client, ClientSource, PendingAuthorization, SecretHash};
use crate::util::{now, random_token};

/// The content security policy of every page.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";
/// Largest form body read.
const MAX_FORM: usize = 32 * 1024;
/// Most parameters read from one request.
const MAX_PARAMS: usize = 64;
/// Longest query string of a `GET /authorize`.
const MAX_QUERY: usize = 16 * 1024;
/// Longest `client_id`.
const MAX_CLIENT_ID: usize = 256;
/// Longest `redirect_uri` (as at registration).
const MAX_REDIRECT_URI: usize = 2048;
/// Length caps of the other parameters; any parameter not listed is capped at
/// [`MAX_OTHER_PARAM`].
const PARAM_CAPS: &[(&str, usize)] = &[
    ("state", 1024),
    ("scope", 1024),
    ("code_challenge", 128),
    ("code_challenge_method", 16),
    ("response_type", 64),
    ("response_mode", 64),
    ("resource", 2048),
    ("nonce", 512),
    ("prompt", 128),
    ("login_hint", 256),
];
/// Cap of any other parameter.
const MAX_OTHER_PARAM: usize = 2048;
/// Marks, in the claims of a request parked before login (which hold nothing else and are
/// replaced by the user's claims at login), that the client sent `prompt=consent`.
const PROMPT_CONSENT: &str = "mcp_oauth:prompt_consent";

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new()
        .route(&ctx.route("/authorize"), get(authorize).post(authorize))
        .route(&ctx.route("/authorize/login"), post(login))
        .route(&ctx.route("/authorize/consent"), post(consent))
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

/// Request parameters with duplicates noted. Empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Default)]
struct Params {
    values: HashMap<String, String>,
    duplicated: Vec<String>,
    too_many: bool,
}

impl Params {
    fn parse(raw: &[u8]) -> Self {
        let mut p = Self::default();
        for (i, (k, v)) in form_urlencoded::parse(raw).enumerate() {
            if i >= MAX_PARAMS {
                p.too_many = true;
                break;
            }
            if v.is_empty() {
                continue;
            }
            if p.values.contains_key(k.as_ref()) {
                if !p.duplicated.iter().any(|d| d == k.as_ref()) {
                    p.duplicated.push(k.into_owned());
                }
            } else {
                p.values.insert(k.into_owned(), v.into_owned());
            }
        }
        p
    }

    /// A parameter given once.
    fn one(&self, name: &str) -> Option<&str> {
        if self.is_duplicated(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    fn is_duplicated(&self, name: &str) -> bool {
        self.duplicated.iter().any(|d| d == name)
    }

    /// The first parameter longer than its cap (issue 8 item 7), if any.
    fn over_cap(&self) -> Option<&str> {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        names.into_iter().map(String::as_str).find(|name| {
            let cap = PARAM_CAPS
                .iter()
                .find(|(n, _)| n == name)
                .map_or(MAX_OTHER_PARAM, |(_, c)| *c);
            self.values[*name].len() > cap
        })
    }
}

/// Reads a form body (any content type is parsed as `application/x-www-form-urlencoded`).
async fn read_form(body: Body) -> Option<Params> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(Params::parse(&bytes))
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn set_security_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// An HTML page with every security header.
fn page(status: StatusCode, html: String, cookie: Option<String>) -> Response {
    let mut res = (status, html).into_response();
    set_security_headers(&mut res);
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(SET_COOKIE, c);
    }
    res
}

/// The error page: shown instead of redirecting whenever redirecting would be unsafe.
fn error_page(ctx: &AsContext, status: StatusCode, title: &str, message: &str) -> Response {
    let html = ctx.server.pages.error(&ErrorView { title, message });
    page(status, html, None)
}

fn expired_page(ctx: &AsContext) -> Response {
    error_page(
        ctx,
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "This authorization request expired, was already completed, or was replaced by a newer one in this browser.",
    )
}

fn forged_page(ctx: &AsContext) -> Response {
    error_page(
        ctx,
        StatusCode::BAD_REQUEST,
        "This form could not be verified",
        "The form did not come from this browser's sign-in page (its security token or cookie is missing or does not match).",
    )
}

fn unavailable_page(ctx: &AsContext) -> Response {
    error_page(
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The authorization server cannot complete this request right now. Try again in a moment.",
    )
}

/// `429` with `Retry-After`: too many requests from this address (never a redirect).
fn too_many_page(ctx: &AsContext, retry_after: u64) -> Response {
    let mut res = error_page(
        ctx,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "Too many sign-in requests came from your network. Wait a minute, then try again.",
    );
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after.max(1)),
    );
    res
}

/// Counts a request against the per-address `/authorize` limit; `Err` is the `429` page.
async fn limit_authorize(ctx: &AsContext, parts: &http::request::Parts) -> Result<(), Response> {
    rate_limit::check(ctx, LimitKind::Authorize, parts)
        .await
        .map_err(|e| {
            let secs = e
                .into_response()
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(60);
            too_many_page(ctx, secs)
        })
}

/// `503` with `Retry-After`: the password checks are saturated (issue 8 item 7).
fn busy_page(ctx: &AsContext) -> Response {
    let mut res = unavailable_page(ctx);
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// A plain redirect (`302`, or `303` to turn a POST that carried a password into a GET).
fn redirect(status: StatusCode, location: &str, cookie: Option<String>) -> Option<Response> {
    let value = HeaderValue::from_str(location).ok()?;
    let mut res = status.into_response();
    set_security_headers(&mut res);
    res.headers_mut().insert(LOCATION, value);
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().append(SET_COOKIE, c);
    }
    Some(res)
}

/// `redirect_uri` with `params` and `iss` appended to its query.
fn redirect_url(ctx: &AsContext, redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    ser.append_pair("iss", ctx.cfg.issuer());
    let query = ser.finish();
    let sep = match redirect_uri.find('?') {
        None => "?",
        Some(_) if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{sep}{query}")
}

/// Where an authorization response goes, once the redirect URI is trusted.
#[derive(Debug, Clone)]
struct Return<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Return<'_> {
    /// The authorization error response (RFC 6749 §4.1.2.1), with `iss`.
    fn error(
        &self,
        ctx: &AsContext,
        status: StatusCode,
        code: &str,
        description: &str,
        cookie: Option<String>,
    ) -> Response {
        let mut params = vec![("error", code), ("error_description", description)];
        if let Some(s) = self.state {
            params.push(("state", s));
        }
        let url = redirect_url(ctx, self.redirect_uri, &params);
        redirect(status, &url, cookie).unwrap_or_else(|| unavailable_page(ctx))
    }

    /// The success response with the code, with `iss`.
    fn code(
        &self,
        ctx: &AsContext,
        status: StatusCode,
        code: &str,
        cookie: Option<String>,
    ) -> Response {
        let mut params = vec![("code", code)];
        if let Some(s) = self.state {
            params.push(("state", s));
        }
        let url = redirect_url(ctx, self.redirect_uri, &params);
        redirect(status, &url, cookie).unwrap_or_else(|| unavailable_page(ctx))
    }
}

// ---------------------------------------------------------------------------------------
// The browser-binding cookie
// ---------------------------------------------------------------------------------------

fn cookie_name(ctx: &AsContext) -> &'static str {
    if ctx.secure_cookies() {
        "__Host-mcp-oauth-req"
    } else {
        "mcp-oauth-req"
    }
}

fn set_cookie(ctx: &AsContext, request_id: &str) -> String {
    let max_age = ctx.server.lifetimes.pending.as_secs();
    let secure = if ctx.secure_cookies() { "; Secure" } else { "" };
    format!(
        "{}={request_id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(ctx)
    )
}

fn clear_cookie(ctx: &AsContext) -> String {
    let secure = if ctx.secure_cookies() { "; Secure" } else { "" };
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
        cookie_name(ctx)
    )
}

/// Whether the request carries the binding cookie for `request_id`.
fn cookie_matches(ctx: &AsContext, headers: &http::HeaderMap, request_id: &str) -> bool {
    let name = cookie_name(ctx);
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| {
            k == name && {
                use subtle::ConstantTimeEq as _;
                bool::from(v.as_bytes().ct_eq(request_id.as_bytes()))
            }
        })
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
}

/// Where an error about a request with a trusted client and redirect URI may be sent.
#[derive(Debug)]
struct Target {
    client: Client,
    redirect_uri: String,
    state: Option<String>,
}

/// Why a request was not validated.
enum Rejection {
    /// Nothing may redirect: this page is the answer.
    Page(Box<Response>),
    /// The client and redirect URI are trusted; the error may go back to the client if
    /// redirecting is safe (see [`refuse_before_interaction`]).
    Refuse {
        target: Box<Target>,
        code: &'static str,
        description: String,
    },
}

async fn authorize(State(ctx): State<AsContext>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let params = if parts.method == Method::POST {
        let Some(form) = read_form(body).await else {
            return error_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "The authorization request could not be read.",
            );
        };
        form
    } else {
        let query = parts.uri.query().unwrap_or("");
        if query.len() > MAX_QUERY {
            return error_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "The authorization request is too long.",
            );
        }
        Params::parse(query.as_bytes())
    };

    let v = match validate(&ctx, &params).await {
        Ok(v) => v,
        Err(Rejection::Page(res)) => return *res,
        Err(Rejection::Refuse {
            target,
            code,
            description,
        }) => {
            return refuse_before_interaction(&ctx, &parts, &target, code, &description).await;
        }
    };
    // The authenticator sees the request as a GET with the parameters in the query, so a
    // host login that sends the user back to "this URL" works for POSTed requests too.
    if parts.method == Method::POST {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.values.iter())
            .finish();
        if let Ok(uri) = format!("{}?{query}", parts.uri.path()).parse() {
            parts.uri = uri;
            parts.method = Method::GET;
        }
    }
    let found = match ctx.server.authenticator.authenticate(&parts).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "user authenticator failed");
            return unavailable_page(&ctx);
        }
    };
    let target = || Target {
        client: v.client.clone(),
        redirect_uri: v.redirect_uri.clone(),
        state: v.state.clone(),
    };
    match found {
        Authentication::Authenticated(user) => {
            after_login(&ctx, v, user, now(), StatusCode::FOUND, None, false).await
        }
        Authentication::ShowLoginPage | Authentication::Redirect(_) if v.prompt_none => {
            // The user is unknown, so nobody approved this client: no automatic redirect
            // unless the authenticator approves everyone.
            refuse_unknown_user(&ctx, &target(), "login_required", "The user is not signed in")
        }
        Authentication::ShowLoginPage => {
            let request_id = random_token(24);
            let csrf = random_token(32);
            let pending = pending_of(&ctx, &v, &v.scope, &csrf, None);
            if let Err(e) = ctx.server.grants.put_pending(&request_id, pending).await {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
                return unavailable_page(&ctx);
            }
            login_page(&ctx, &v.client, &v.redirect_uri, &request_id, &csrf, None, None, StatusCode::OK)
        }
        Authentication::Redirect(url) => redirect(StatusCode::FOUND, &url, None).unwrap_or_else(|| {
            tracing::error!(target: "mcp_oauth::authorize", "the authenticator's login URL is not a valid Location header");
            unavailable_page(&ctx)
        }),
        // `Authentication` is non-exhaustive; a future variant we do not know is a failure.
        #[allow(unreachable_patterns)]
        _ => unavailable_page(&ctx),
    }
}

/// The error page shown instead of redirecting an error to a client the user has not
/// approved (RFC 9700 §4.11.2: the server must not be an open redirector).
fn refusal_page(ctx: &AsContext, target: &Target, code: &str, description: &str) -> Response {
    let message = format!(
        "The application {} sent a request this server cannot accept: {description} ({code}). \
         You were not sent back to {} because you have not approved this application before.",
        client_label(&target.client),
        display_host(&target.redirect_uri),
    );
    error_page(
        ctx,
        StatusCode::BAD_REQUEST,
        "Invalid authorization request",
        &message,
    )
}

/// An error about a request from an unknown user: redirected only when the authenticator
/// approves everyone (it would redirect a code just as readily), else the page.
fn refuse_unknown_user(
    ctx: &AsContext,
    target: &Target,
    code: &'static str,
    description: &str,
) -> Response {
    if ctx.server.authenticator.skips_consent() {
        let ret = Return {
            redirect_uri: &target.redirect_uri,
            state: target.state.as_deref(),
        };
        return ret.error(ctx, StatusCode::FOUND, code, description, None);
    }
    refusal_page(ctx, target, code, description)
}

/// An error detected before the user did anything (issue 8 item 5). It is redirected to the
/// client only when that cannot make this server an open redirector: the authenticator
/// approves everyone anyway, or the signed-in user approved this client before (a
/// remembered consent). Otherwise the user sees an error page.
async fn refuse_before_interaction(
    ctx: &AsContext,
    parts: &http::request::Parts,
    target: &Target,
    code: &'static str,
    description: &str,
) -> Response {
    if ctx.server.authenticator.skips_consent() {
        return refuse_unknown_user(ctx, target, code, description);
    }
    let user = match ctx.server.authenticator.authenticate(parts).await {
        Ok(Authentication::Authenticated(user)) => user,
        Ok(_) => return refusal_page(ctx, target, code, description),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "user authenticator failed");
            return unavailable_page(ctx);
        }
    };
    refuse_known_user(
        ctx,
        target,
        &user.subject,
        code,
        description,
        StatusCode::FOUND,
        None,
    )
    .await
}

/// An error for a known user who has not acted yet: redirected when the user approved this
/// client before, else the page.
async fn refuse_known_user(
    ctx: &AsContext,
    target: &Target,
    subject: &str,
    code: &'static str,
    description: &str,
    status: StatusCode,
    cookie: Option<String>,
) -> Response {
    let approved = ctx.server.authenticator.skips_consent()
        || match ctx
            .server
            .grants
            .get_consent(subject, &target.client.client_id)
            .await
        {
            Ok(Some(granted)) => !granted.is_empty(),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
                return unavailable_page(ctx);
            }
        };
    if approved {
        let ret = Return {
            redirect_uri: &target.redirect_uri,
            state: target.state.as_deref(),
        };
        return ret.error(ctx, status, code, description, cookie);
    }
    refusal_page(ctx, target, code, description)
}

/// Validates the request: `Err` says how to answer.
async fn validate(ctx: &AsContext, params: &Params) -> Result<Validated, Rejection> {
    let page_err = |message: &str| {
        Rejection::Page(Box::new(error_page(
            ctx,
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            message,
        )))
    };

    // 1. Client and redirect URI: nothing may redirect before both are trusted.
    if params.is_duplicated("client_id") {
        return Err(page_err(
            "The client_id parameter was given more than once.",
        ));
    }
    if params.is_duplicated("redirect_uri") {
        return Err(page_err(
            "The redirect_uri parameter was given more than once.",
        ));
    }
    let Some(client_id) = params.one("client_id") else {
        return Err(page_err(
            "The request names no client (client_id is missing).",
        ));
    };
    if client_id.len() > MAX_CLIENT_ID {
        return Err(page_err("The client_id is too long."));
    }
    if params
        .one("redirect_uri")
        .is_some_and(|r| r.len() > MAX_REDIRECT_URI)
    {
        return Err(page_err("The redirect_uri is too long."));
    }
    let unknown = || {
        page_err(
            "The application is not registered with this server (unknown client_id). If it registered before, it must register again.",
        )
    };
    let client = match ctx.client(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(unknown()),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(Rejection::Page(Box::new(unavailable_page(ctx))));
        }
    };
    // Record the use before anything is stored for this request, so an idle-client sweep
    // either sees it or has already removed the client (then it is unknown, as above).
    let client = match super::retention::mark_in_use(ctx, client).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(unknown()),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(Rejection::Page(Box::new(unavailable_page(ctx))));
        }
    };
    let redirect_uri = match params.one("redirect_uri") {
        Some(requested) => {
            if !client
                .redirect_uris
                .iter()
                .any(|r| redirect_uri_matches(r, requested))
            {
                return Err(page_err(
                    "The redirect_uri is not one the application registered, so this server will not send you there.",
                ));
            }
            requested.to_owned()
        }
        None => match client.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(page_err(
                    "The request has no redirect_uri, and the application registered more than one.",
                ));
            }
        },
    };
    // A client stored before the current redirect policy (an operating-system handler
    // scheme, a custom scheme no longer allowed) is not sent anywhere.
    if let Err(why) = check_redirect_uri_with(&redirect_uri, &ctx.server.redirect_schemes) {
        tracing::warn!(
            target: "mcp_oauth::authorize",
            client_id = %client.client_id,
            reason = %why,
            "redirect URI refused by the redirect policy"
        );
        return Err(page_err(
            "The application's redirect_uri is not allowed by this server's redirect policy, so this server will not send you there.",
        ));
    }

    // 2. Everything else may be answered at the (now trusted) redirect URI.
    let state = params
        .one("state")
        .filter(|s| s.len() <= 1024)
        .map(str::to_owned);
    let target = Target {
        client,
        redirect_uri,
        state,
    };
    let fail = |target: Target, code: &'static str, description: &str| {
        Err(Rejection::Refuse {
            target: Box::new(target),
            code,
            description: description.to_owned(),
        })
    };
    if params.too_many {
        return fail(target, "invalid_request", "Too many parameters");
    }
    // A parameter name is the requester's text: only a short printable one is echoed, so
    // nobody can write their own words on this server's error page.
    if let Some(name) = params.over_cap() {
        let description = format!("The {} parameter is too long", printable_name(name));
        return fail(target, "invalid_request", &description);
    }
    if params.is_duplicated("resource") {
        return fail(
            target,
            "invalid_target",
            "Only one resource per authorization request is supported",
        );
    }
    if let Some(dup) = params.duplicated.first() {
        let description = format!(
            "The {} parameter was given more than once",
            printable_name(dup)
        );
        return fail(target, "invalid_request", &description);
    }
    if params.one("request").is_some() {
        return fail(
            target,
            "request_not_supported",
            "Request objects are not supported",
        );
    }
    if params.one("request_uri").is_some() {
        return fail(
            target,
            "request_uri_not_supported",
            "request_uri is not supported",
        );
    }
    match params.one("response_type") {
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
    let Some(code_challenge) = params.one("code_challenge") else {
        return fail(
            target,
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256",
        );
    };
    match params.one("code_challenge_method") {
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
    let resource = match params.one("resource") {
        None => ctx.cfg.resource().to_owned(),
        Some(r) if ctx.cfg.resources().iter().any(|known| known == r) => r.to_owned(),
        Some(_) => {
            return fail(
                target,
                "invalid_target",
                "The resource is not served by this authorization server",
            );
        }
    };
    let scope = requested_scopes(ctx, params.one("scope"));
    // The client's ceiling alone may already leave nothing (issue 8 item 4).
    // (Nothing requested and no default scopes is not an error: the token carries none.)
    if !scope.is_empty() && within_client_ceiling(ctx, &target.client, &scope).is_empty() {
        return fail(
            target,
            "invalid_scope",
            "None of the requested scopes may be granted to this client",
        );
    }
    let prompts: Vec<&str> = params
        .one("prompt")
        .map(|p| p.split(' ').collect())
        .unwrap_or_default();
    Ok(Validated {
        client: target.client,
        redirect_uri: target.redirect_uri,
        redirect_uri_in_request: params.one("redirect_uri").is_some(),
        state: target.state,
        code_challenge: code_challenge.to_owned(),
        scope,
        resource,
        prompt_none: prompts.contains(&"none"),
        prompt_consent: prompts.contains(&"consent"),
    })
}

/// The requested scopes this server declares; the default scopes when none is left.
fn requested_scopes(ctx: &AsContext, requested: Option<&str>) -> ScopeSet {
    let mut out = ScopeSet::new();
    for token in requested.unwrap_or("").split(' ') {
        if ctx.cfg.scopes().any(|(s, _)| s.as_str() == token)
            && let Ok(s) = Scope::new(token)
        {
            out.insert(s);
        }
    }
    if out.is_empty() {
        ctx.cfg.default_scopes().clone()
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
fn within_client_ceiling(ctx: &AsContext, client: &Client, scope: &ScopeSet) -> ScopeSet {
    let applies = client.source == ClientSource::Static || ctx.server.registered_scope_is_ceiling;
    match &client.scope {
        Some(ceiling) if applies => intersect(scope, ceiling),
        _ => scope.clone(),
    }
}

/// What may be granted of `requested` (issue 8 item 4): requested ∩ the client's ceiling ∩
/// the user's ceiling ∩ the scope policy's answer. `Err` when the policy failed.
async fn grantable(
    ctx: &AsContext,
    client: &Client,
    user: &User,
    resource: &str,
    requested: &ScopeSet,
) -> Result<ScopeSet, ()> {
    let mut granted = within_client_ceiling(ctx, client, requested);
    if let Some(ceiling) = &user.allowed_scopes {
        granted = intersect(&granted, ceiling);
    }
    if let Some(policy) = &ctx.server.scope_policy
        && !granted.is_empty()
    {
        match policy
            .allowed_scopes(user, client, resource, &granted)
            .await
        {
            Ok(allowed) => granted = intersect(&granted, &allowed),
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "scope policy failed");
                return Err(());
            }
        }
    }
    Ok(granted)
}

fn pending_of(
    ctx: &AsContext,
    v: &Validated,
    scope: &ScopeSet,
    csrf: &str,
    user: Option<(&User, u64)>,
) -> PendingAuthorization {
    PendingAuthorization {
        client_id: v.client.client_id.clone(),
        redirect_uri: v.redirect_uri.clone(),
        redirect_uri_in_request: v.redirect_uri_in_request,
        state: v.state.clone(),
        code_challenge: v.code_challenge.clone(),
        scope: scope.clone(),
        resource: v.resource.clone(),
        csrf_hash: SecretHash::of(csrf),
        subject: user.map(|(u, _)| u.subject.clone()),
        claims: match user {
            Some((u, _)) => u.claims.clone(),
            None => anonymous_claims(v),
        },
        auth_time: user.map(|(_, t)| t),
        expires_at: now() + ctx.server.lifetimes.pending.as_secs(),
    }
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
/// when consent is not needed, else park the request and show the consent page.
/// `interacted` says whether the user acted (submitted the login form): errors then go back
/// to the client; before that, only to a client the user approved.
async fn after_login(
    ctx: &AsContext,
    v: Validated,
    user: User,
    auth_time: u64,
    redirect_status: StatusCode,
    clear: Option<String>,
    interacted: bool,
) -> Response {
    let ret = Return {
        redirect_uri: &v.redirect_uri,
        state: v.state.as_deref(),
    };
    let target = Target {
        client: v.client.clone(),
        redirect_uri: v.redirect_uri.clone(),
        state: v.state.clone(),
    };
    let ret_ref = &ret;
    let refuse = |code: &'static str, description: &'static str, clear: Option<String>| {
        let target = &target;
        let ret = ret_ref;
        let subject = user.subject.clone();
        async move {
            if interacted {
                ret.error(ctx, redirect_status, code, description, clear)
            } else {
                refuse_known_user(
                    ctx,
                    target,
                    &subject,
                    code,
                    description,
                    redirect_status,
                    clear,
                )
                .await
            }
        }
    };
    let Ok(scope) = grantable(ctx, &v.client, &user, &v.resource, &v.scope).await else {
        return unavailable_page(ctx);
    };
    if scope.is_empty() && !v.scope.is_empty() {
        tracing::info!(
            target: "mcp_oauth::authorize",
            client_id = %v.client.client_id,
            subject = %user.subject,
            requested = %v.scope,
            "no requested scope may be granted to this user"
        );
        return refuse(
            "invalid_scope",
            "None of the requested scopes may be granted to this user",
            clear,
        )
        .await;
    }
    let withheld: Vec<Scope> = v
        .scope
        .iter()
        .filter(|s| !scope.contains(s.as_str()))
        .cloned()
        .collect();
    let skip = match consent_needed(ctx, &v, &scope, &user).await {
        Ok(needed) => !needed,
        Err(()) => return unavailable_page(ctx),
    };
    if skip {
        let grant = Grant {
            client_id: &v.client.client_id,
            redirect_uri: &v.redirect_uri,
            redirect_uri_in_request: v.redirect_uri_in_request,
            code_challenge: &v.code_challenge,
            scope: &scope,
            resource: &v.resource,
            subject: &user.subject,
            claims: &user.claims,
            auth_time,
        };
        return issue_code(ctx, &grant, &ret, redirect_status, clear, false).await;
    }
    if v.prompt_none {
        return refuse(
            "consent_required",
            "The user has not approved this application",
            clear,
        )
        .await;
    }
    let request_id = random_token(24);
    let csrf = random_token(32);
    let pending = pending_of(ctx, &v, &scope, &csrf, Some((&user, auth_time)));
    if let Err(e) = ctx.server.grants.put_pending(&request_id, pending).await {
        tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
        return unavailable_page(ctx);
    }
    let display = user.display_name.as_deref().unwrap_or(&user.subject);
    consent_page(
        ctx,
        &v.client,
        &PendingView {
            redirect_uri: &v.redirect_uri,
            scope: &scope,
            withheld: &withheld,
            resource: &v.resource,
        },
        display,
        &request_id,
        &csrf,
    )
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

/// Whether the consent page must be shown for `scope`. `Err` on a store failure.
async fn consent_needed(
    ctx: &AsContext,
    v: &Validated,
    scope: &ScopeSet,
    user: &User,
) -> Result<bool, ()> {
    if ctx.server.authenticator.skips_consent() {
        return Ok(false);
    }
    if !ctx.server.remember_consent || v.prompt_consent {
        return Ok(true);
    }
    match ctx
        .server
        .grants
        .get_consent(&user.subject, &v.client.client_id)
        .await
    {
        Ok(Some(granted)) => Ok(!scope.is_subset(&consented_at(&granted, &v.resource))),
        Ok(None) => Ok(true),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            Err(())
        }
    }
}

/// What the pages show about a parked request.
struct PendingView<'a> {
    redirect_uri: &'a str,
    scope: &'a ScopeSet,
    withheld: &'a [Scope],
    resource: &'a str,
}

/// The host to show for a redirect URI: the (punycode) host with a non-default port for
/// web URLs, `scheme://host` or `scheme:` for a native app's custom scheme.
fn display_host(redirect_uri: &str) -> String {
    let Ok(url) = url::Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" | "http" => match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        },
        scheme if host.is_empty() => format!("{scheme}:"),
        scheme => format!("{scheme}://{host}"),
    }
}

/// The name to show for a client: its self-asserted name, unless that holds control or
/// invisible format characters (a client stored before registration refused them), then
/// its id.
fn client_label(client: &Client) -> &str {
    match client.client_name.as_deref() {
        Some(name) if !name.chars().any(|c| c.is_control() || is_invisible_char(c)) => name,
        _ => &client.client_id,
    }
}

#[allow(clippy::too_many_arguments)]
fn login_page(
    ctx: &AsContext,
    client: &Client,
    redirect_uri: &str,
    request_id: &str,
    csrf: &str,
    error: Option<&str>,
    username: Option<&str>,
    status: StatusCode,
) -> Response {
    let host = display_host(redirect_uri);
    let action = ctx.endpoint("/authorize/login");
    let html = ctx.server.pages.login(&LoginView {
        client_name: client_label(client),
        redirect_host: &host,
        action: &action,
        request_id,
        csrf_token: csrf,
        error,
        username,
    });
    page(status, html, Some(set_cookie(ctx, request_id)))
}

/// The configured description of a scope (its name when none).
fn describe(ctx: &AsContext, s: &Scope) -> (String, String) {
    let d = ctx
        .cfg
        .scopes()
        .find(|(d, _)| *d == s)
        .map_or_else(|| s.to_string(), |(_, desc)| desc.to_owned());
    (s.to_string(), d)
}

fn consent_page(
    ctx: &AsContext,
    client: &Client,
    p: &PendingView<'_>,
    user: &str,
    request_id: &str,
    csrf: &str,
) -> Response {
    let host = display_host(p.redirect_uri);
    let action = ctx.endpoint("/authorize/consent");
    let descriptions: Vec<(String, String)> = p.scope.iter().map(|s| describe(ctx, s)).collect();
    let scopes: Vec<ScopeView<'_>> = descriptions
        .iter()
        .map(|(name, description)| ScopeView { name, description })
        .collect();
    let withheld_text: Vec<(String, String)> =
        p.withheld.iter().map(|s| describe(ctx, s)).collect();
    let withheld: Vec<ScopeView<'_>> = withheld_text
        .iter()
        .map(|(name, description)| ScopeView { name, description })
        .collect();
    let html = ctx.server.pages.consent(&ConsentView {
        client_name: client_label(client),
        client_id: &client.client_id,
        redirect_uri: p.redirect_uri,
        redirect_host: &host,
        // The URI this request actually uses (issue 8 item 9), not the client's list.
        loopback_only: all_loopback(std::slice::from_ref(&p.redirect_uri.to_owned())),
        scopes: &scopes,
        withheld: &withheld,
        resource: p.resource,
        user,
        action: &action,
        request_id,
        csrf_token: csrf,
    });
    page(StatusCode::OK, html, Some(set_cookie(ctx, request_id)))
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

/// Stores a new code (and the consent, when remembered) and redirects to the client.
async fn issue_code(
    ctx: &AsContext,
    g: &Grant<'_>,
    ret: &Return<'_>,
    status: StatusCode,
    cookie: Option<String>,
    consented: bool,
) -> Response {
    let unavailable = |cookie| {
        ret.error(
            ctx,
            status,
            "temporarily_unavailable",
            "The authorization server is temporarily unavailable",
            cookie,
        )
    };
    let issued_at = now();
    if consented && ctx.server.remember_consent {
        let grants = &ctx.server.grants;
        let consented = qualify(g.resource, g.scope);
        let remembered = match grants.get_consent(g.subject, g.client_id).await {
            Ok(prev) => prev.map_or_else(|| consented.clone(), |p| p.union(&consented)),
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
                return unavailable(cookie);
            }
        };
        if let Err(e) = grants
            .put_consent(g.subject, g.client_id, &remembered, issued_at)
            .await
        {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return unavailable(cookie);
        }
    }
    let code = random_token(32);
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
        expires_at: issued_at + ctx.server.lifetimes.code.as_secs(),
    };
    if let Err(e) = ctx
        .server
        .grants
        .put_code(SecretHash::of(&code), record)
        .await
    {
        tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
        return unavailable(cookie);
    }
    tracing::info!(
        target: "mcp_oauth::authorize",
        client_id = g.client_id,
        subject = g.subject,
        scope = %g.scope,
        resource = g.resource,
        "authorization code issued"
    );
    ret.code(ctx, status, &code, cookie)
}

// ---------------------------------------------------------------------------------------
// The forms
// ---------------------------------------------------------------------------------------

/// A parked request whose form post was checked: the cookie and the CSRF token match.
struct Checked {
    request_id: String,
    csrf: String,
    pending: PendingAuthorization,
    client: Client,
}

/// Reads a form and checks it against its parked request; `Err` is the error page.
async fn check_form(
    ctx: &AsContext,
    parts: &http::request::Parts,
    form: &Params,
) -> Result<Checked, Box<Response>> {
    let (Some(request_id), Some(csrf)) = (form.one("request_id"), form.one("csrf_token")) else {
        return Err(Box::new(forged_page(ctx)));
    };
    let pending = match ctx.server.grants.get_pending(request_id, now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Box::new(expired_page(ctx))),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(Box::new(unavailable_page(ctx)));
        }
    };
    if !cookie_matches(ctx, &parts.headers, request_id)
        || !SecretHash::of(csrf).ct_eq(&pending.csrf_hash)
    {
        tracing::warn!(
            target: "mcp_oauth::authorize",
            client_id = %pending.client_id,
            "form post with a missing or mismatched CSRF token or binding cookie"
        );
        return Err(Box::new(forged_page(ctx)));
    }
    let client = match ctx.client(&pending.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Box::new(error_page(
                ctx,
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "The application is no longer registered with this server.",
            )));
        }
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return Err(Box::new(unavailable_page(ctx)));
        }
    };
    Ok(Checked {
        request_id: request_id.to_owned(),
        csrf: csrf.to_owned(),
        pending,
        client,
    })
}

/// `POST …/authorize/login`: `username`, `password`, `request_id`, `csrf_token`.
async fn login(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(form) = read_form(body).await else {
        return forged_page(&ctx);
    };
    let c = match check_form(&ctx, &parts, &form).await {
        Ok(c) => c,
        Err(res) => return *res,
    };
    let relogin = |error: &str, username: Option<&str>, status| {
        login_page(
            &ctx,
            &c.client,
            &c.pending.redirect_uri,
            &c.request_id,
            &c.csrf,
            Some(error),
            username,
            status,
        )
    };
    if rate_limit::check(&ctx, LimitKind::Login, &parts)
        .await
        .is_err()
    {
        return relogin(
            "Too many sign-in attempts. Wait a minute, then try again.",
            form.one("username"),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let (Some(username), Some(password)) = (form.one("username"), form.one("password")) else {
        return relogin(
            "Enter your user name and password.",
            form.one("username"),
            StatusCode::OK,
        );
    };
    // Failed sign-ins are throttled per account too (issue 8 item 7): per (account, client
    // address), so one address cannot lock a user out elsewhere, and per account across all
    // addresses. While either budget is spent, the password is not even checked. The
    // attempt reserves its tokens first, so guesses sent at once cannot overdraw the
    // budgets; they are given back unless the password was wrong.
    let budgets = login_throttle::LoginBudgets {
        per_address: ctx.server.limits.login_account,
        per_account: ctx.server.limits.login_account_total,
    };
    let address = rate_limit::client_address(&parts, &ctx.server.trusted_proxies);
    if let Err(wait) = ctx
        .server
        .login_accounts
        .reserve(username, address, budgets, Instant::now())
    {
        tracing::info!(target: "mcp_oauth::authorize", "sign-in refused: too many failures for this account");
        let mut res = relogin(
            "Too many failed sign-ins for this account. Wait a few minutes, then try again.",
            Some(username),
            StatusCode::TOO_MANY_REQUESTS,
        );
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        return res;
    }
    let user = match ctx
        .server
        .authenticator
        .verify_password(username, password)
        .await
    {
        Ok(Some(user)) => {
            ctx.server
                .login_accounts
                .refund(username, address, budgets, Instant::now());
            user
        }
        Ok(None) => {
            tracing::info!(target: "mcp_oauth::authorize", "failed sign-in attempt");
            return relogin(
                "Wrong user name or password.",
                Some(username),
                StatusCode::OK,
            );
        }
        Err(e) => {
            // A saturated password checker, or a failed backend: try again shortly.
            ctx.server
                .login_accounts
                .refund(username, address, budgets, Instant::now());
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "password check failed");
            return busy_page(&ctx);
        }
    };

    // Signed in: retire the request id and CSRF token the anonymous page carried.
    let pending = match ctx.server.grants.take_pending(&c.request_id, now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired_page(&ctx),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return unavailable_page(&ctx);
        }
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
    };
    // A direct redirect answers the POST that carried the password: 303, so the browser
    // does not resend it (RFC 9700 §4.12).
    after_login(
        &ctx,
        v,
        user,
        now(),
        StatusCode::SEE_OTHER,
        Some(clear_cookie(&ctx)),
        true,
    )
    .await
}

/// `POST …/authorize/consent`: `request_id`, `csrf_token`, `decision` (`approve`/`deny`).
async fn consent(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(form) = read_form(body).await else {
        return forged_page(&ctx);
    };
    let c = match check_form(&ctx, &parts, &form).await {
        Ok(c) => c,
        Err(res) => return *res,
    };
    let Some(subject) = c.pending.subject.clone() else {
        return error_page(
            &ctx,
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "Sign in before approving an application.",
        );
    };
    let approve = match form.one("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return error_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Invalid decision",
                "Choose Allow or Deny.",
            );
        }
    };
    // One decision per request: whoever takes the parked request decides.
    let pending = match ctx.server.grants.take_pending(&c.request_id, now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired_page(&ctx),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authorize", error = %e, "store failure");
            return unavailable_page(&ctx);
        }
    };
    let ret = Return {
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
    };
    let clear = Some(clear_cookie(&ctx));
    if !approve {
        tracing::info!(
            target: "mcp_oauth::authorize",
            client_id = %pending.client_id,
            subject = %subject,
            "the user denied access"
        );
        return ret.error(
            &ctx,
            StatusCode::FOUND,
            "access_denied",
            "The user denied access",
            clear,
        );
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
        auth_time: pending.auth_time.unwrap_or_else(now),
    };
    issue_code(&ctx, &grant, &ret, StatusCode::FOUND, clear, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_note_duplicates_and_ignore_empty_values() {
        let p = Params::parse(b"a=1&b=2&a=3&c=&c=4&d=%20");
        assert_eq!(p.one("a"), None);
        assert!(p.is_duplicated("a"));
        assert_eq!(p.one("b"), Some("2"));
        assert_eq!(p.one("c"), Some("4"));
        assert_eq!(p.one("d"), Some(" "));
        let many: String = (0..100).map(|i| format!("p{i}=x&")).collect();
        assert!(Params::parse(many.as_bytes()).too_many);
    }

    #[test]
    fn display_hosts() {
        assert_eq!(
            display_host("https://claude.ai/api/mcp/auth_callback"),
            "claude.ai"
        );
        assert_eq!(display_host("https://x.example:8443/cb"), "x.example:8443");
        assert_eq!(display_host("http://127.0.0.1:5555/cb"), "127.0.0.1:5555");
        assert_eq!(
            display_host("cursor://anysphere.cursor-mcp/oauth/callback"),
            "cursor://anysphere.cursor-mcp"
        );
        assert_eq!(display_host("com.example.app:/cb"), "com.example.app:");
        assert_eq!(
            display_host("https://xn--80ak6aa92e.com/cb"),
            "xn--80ak6aa92e.com"
        );
    }
}
