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
//!     .await
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

//! # Layout
//!
//! The grant rules live in [`crate::flows::authorize`], which knows nothing of HTTP. This
//! module is the adapter: `forms` reads the parameters, `cookies` binds the browser,
//! `render` turns the flow's outcomes into pages and redirects; the handlers below add the
//! rate limits and the login throttle and call the flow.

use crate::paths::Endpoint;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, Method, StatusCode};

use super::AsContext;
use super::login_throttle;
use super::rate_limit::{self, LimitKind};
use crate::flows::authorize::{self as flow, ConsentDecision, ErrorPage, LoginPrompt, Parked};

mod cookies;
mod forms;
mod render;
#[cfg(feature = "upstream-oidc")]
mod upstream;

use cookies::{clear_cookie, cookie_matches};
use forms::{MAX_QUERY, Params, read_form};
use render::{Redirects, busy_page, error_page, login_page, render, too_many_page};

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    let router = Router::new()
        .route(
            &ctx.route(Endpoint::Authorize),
            get(authorize).post(authorize),
        )
        .route(&ctx.route(Endpoint::AuthorizeLogin), post(login))
        .route(&ctx.route(Endpoint::AuthorizeConsent), post(consent));
    // The upstream login's routes exist only when the authenticator runs one: otherwise
    // the paths are not the crate's (the layer keeps guarding them).
    #[cfg(feature = "upstream-oidc")]
    if let Some(up) = ctx.server.authenticator.upstream() {
        up.bind_store(ctx.server.grants.clone());
        up.bind_urls(crate::authn::upstream::Urls {
            authorize: ctx.endpoint(Endpoint::Authorize),
            start: ctx.endpoint(Endpoint::UpstreamStart),
            callback: ctx.endpoint(Endpoint::UpstreamCallback),
        });
        return router
            .route(&ctx.route(Endpoint::UpstreamStart), get(upstream::start))
            .route(
                &ctx.route(Endpoint::UpstreamCallback),
                get(upstream::callback),
            );
    }
    router
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

/// The page for an unreadable authorization request.
fn unreadable(ctx: &AsContext, message: &str) -> Response {
    error_page(ctx, StatusCode::BAD_REQUEST, "Invalid request", message)
}

/// `GET`/`POST …/authorize`.
async fn authorize(State(ctx): State<AsContext>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let params = if parts.method == Method::POST {
        let Some(form) = read_form(body).await else {
            return unreadable(&ctx, "The authorization request could not be read.");
        };
        form
    } else {
        let query = parts.uri.query().unwrap_or("");
        if query.len() > MAX_QUERY {
            return unreadable(&ctx, "The authorization request is too long.");
        }
        Params::parse(query.as_bytes())
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
    // Not awaited unless the flow needs to know who the user is.
    let user = ctx.server.authenticator.authenticate(&parts);
    let outcome = flow::authorize(&ctx.env, &params.to_request(), user).await;
    let how = Redirects {
        status: StatusCode::FOUND,
        cookie: None,
    };
    render(&ctx, outcome, how)
}

/// Reads a form post and checks it against its parked request (binding cookie and CSRF
/// token); `Err` is the error page.
async fn checked_form(
    ctx: &AsContext,
    parts: &http::request::Parts,
    form: &Params,
) -> Result<flow::Checked, Response> {
    flow::check_form(
        &ctx.env,
        form.one("request_id"),
        form.one("csrf_token"),
        |request_id| cookie_matches(ctx, &parts.headers, request_id),
    )
    .await
    .map_err(|p| render::error(ctx, &p))
}

/// `POST …/authorize/login`: `username`, `password`, `request_id`, `csrf_token`.
async fn login(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(form) = read_form(body).await else {
        return render::error(&ctx, &ErrorPage::Forged);
    };
    let c = match checked_form(&ctx, &parts, &form).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let prompt = LoginPrompt {
        client: c.client.clone(),
        redirect_uri: c.pending.redirect_uri.clone(),
        parked: Parked {
            request_id: c.request_id.clone(),
            csrf: c.csrf.clone(),
        },
    };
    let relogin = |error: &str, username: Option<&str>, status| {
        login_page(&ctx, &prompt, Some(error), username, status)
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
        crate::audit::login_failed(
            crate::audit::fid_of(&c.pending.claims),
            &c.client.client_id,
            "throttled",
        );
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
            crate::audit::login_failed(
                crate::audit::fid_of(&c.pending.claims),
                &c.client.client_id,
                "bad_credentials",
            );
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
    let outcome = flow::signed_in(&ctx.env, c, user).await;
    // A direct redirect answers the POST that carried the password: 303, so the browser
    // does not resend it (RFC 9700 §4.12).
    let how = Redirects {
        status: StatusCode::SEE_OTHER,
        cookie: Some(clear_cookie(&ctx)),
    };
    render(&ctx, outcome, how)
}

/// `POST …/authorize/consent`: `request_id`, `csrf_token`, `decision` (`approve`/`deny`).
async fn consent(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(form) = read_form(body).await else {
        return render::error(&ctx, &ErrorPage::Forged);
    };
    let c = match checked_form(&ctx, &parts, &form).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let decision = match form.one("decision") {
        Some("approve") => Some(ConsentDecision::Approve),
        Some("deny") => Some(ConsentDecision::Deny),
        _ => None,
    };
    let outcome = flow::decide(&ctx.env, &c, decision).await;
    let how = Redirects {
        status: StatusCode::FOUND,
        cookie: Some(clear_cookie(&ctx)),
    };
    render(&ctx, outcome, how)
}
