//! Rendering the authorization flow's outcomes: the pages (with every security header),
//! the redirects back to the client (with `iss`, RFC 9207, and `state` exactly as
//! received), and the redirect to a host's login page.

use crate::paths::Endpoint;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, REFERRER_POLICY, SET_COOKIE};
use http::{HeaderValue, StatusCode};

use super::AsContext;
use super::cookies::set_cookie;
use crate::flows::authorize::{
    AuthorizeError, AuthorizeOutcome, ConsentPrompt, ErrorPage, LoginPrompt, ReturnTo,
};
use crate::scope::Scope;
use crate::server::pages::{ConsentView, ErrorView, LoginView, ScopeView};
use crate::server::register::{all_loopback, is_invisible_char};
use crate::store::Client;

/// The content security policy of every page.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// How an endpoint answers with a redirect to the client: the status (`302`, or `303` to
/// turn a POST that carried a password into a GET) and the cookie to set with it.
#[derive(Debug, Clone)]
pub(super) struct Redirects {
    pub(super) status: StatusCode,
    pub(super) cookie: Option<String>,
}

/// The response for `outcome`.
pub(super) fn render(ctx: &AsContext, outcome: AuthorizeOutcome, how: Redirects) -> Response {
    match outcome {
        AuthorizeOutcome::ErrorPage(p) => error(ctx, &p),
        AuthorizeOutcome::RedirectError { to, error } => {
            redirect_error(ctx, &to, &error, how.status, how.cookie)
        }
        AuthorizeOutcome::Code { to, code } => {
            let url = redirect_url(ctx, &to, &[("code", &code)]);
            redirect(how.status, &url, how.cookie).unwrap_or_else(|| unavailable_page(ctx))
        }
        AuthorizeOutcome::Login(p) => login_page(ctx, &p, None, None, StatusCode::OK),
        AuthorizeOutcome::Consent(p) => consent_page(ctx, &p),
        AuthorizeOutcome::HostLogin(url) => redirect(StatusCode::FOUND, &url, None)
            .unwrap_or_else(|| {
                tracing::error!(target: "mcp_oauth::authorize", "the authenticator's login URL is not a valid Location header");
                unavailable_page(ctx)
            }),
    }
}

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

/// An error page: shown instead of redirecting whenever redirecting would be unsafe.
pub(super) fn error_page(
    ctx: &AsContext,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let html = ctx.server.pages.error(&ErrorView { title, message });
    page(status, html, None)
}

/// The page for one of the flow's [`ErrorPage`]s.
pub(super) fn error(ctx: &AsContext, p: &ErrorPage) -> Response {
    let bad = StatusCode::BAD_REQUEST;
    match p {
        ErrorPage::Invalid(message) => {
            error_page(ctx, bad, "Invalid authorization request", message)
        }
        ErrorPage::Refused {
            client,
            redirect_uri,
            error,
        } => {
            // RFC 9700 §4.11.2: the server must not be an open redirector.
            let message = format!(
                "The application {} sent a request this server cannot accept: {} ({}). \
                 You were not sent back to {} because you have not approved this application before.",
                client_label(client),
                error.description,
                error.code,
                display_host(redirect_uri),
            );
            error_page(ctx, bad, "Invalid authorization request", &message)
        }
        ErrorPage::Expired => error_page(
            ctx,
            bad,
            "This sign-in has expired",
            "This authorization request expired, was already completed, or was replaced by a newer one in this browser.",
        ),
        ErrorPage::Forged => error_page(
            ctx,
            bad,
            "This form could not be verified",
            "The form did not come from this browser's sign-in page (its security token or cookie is missing or does not match).",
        ),
        ErrorPage::UnknownClient => error_page(
            ctx,
            bad,
            "Unknown application",
            "The application is no longer registered with this server.",
        ),
        ErrorPage::NotSignedIn => error_page(
            ctx,
            bad,
            "Not signed in",
            "Sign in before approving an application.",
        ),
        ErrorPage::InvalidDecision => {
            error_page(ctx, bad, "Invalid decision", "Choose Allow or Deny.")
        }
        ErrorPage::Unavailable => unavailable_page(ctx),
        #[cfg(feature = "client-metadata")]
        ErrorPage::MetadataUnavailable {
            problem,
            retry_after,
        } => {
            let message = format!(
                "This server could not fetch the application's identity document right now ({problem}). Try again in a moment."
            );
            let mut res = error_page(
                ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                &message,
            );
            res.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from((*retry_after).max(1)),
            );
            res
        }
        #[cfg(feature = "client-metadata")]
        ErrorPage::MetadataInvalid(problem) => {
            let message = format!(
                "The application identifies itself by a client metadata document this server cannot accept: {problem}. You were not sent back to the application."
            );
            error_page(ctx, bad, "Invalid client metadata document", &message)
        }
    }
}

/// `503`: a store, the authenticator or the scope policy failed.
pub(super) fn unavailable_page(ctx: &AsContext) -> Response {
    error_page(
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The authorization server cannot complete this request right now. Try again in a moment.",
    )
}

/// `429` with `Retry-After`: too many requests from this address (never a redirect).
pub(super) fn too_many_page(ctx: &AsContext, retry_after: u64) -> Response {
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

/// `503` with `Retry-After`: the password checks are saturated (issue 8 item 7).
pub(super) fn busy_page(ctx: &AsContext) -> Response {
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

/// The redirect URI with `params`, `state` and `iss` appended to its query.
fn redirect_url(ctx: &AsContext, to: &ReturnTo, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    if let Some(s) = &to.state {
        ser.append_pair("state", s);
    }
    ser.append_pair("iss", ctx.cfg.issuer());
    let query = ser.finish();
    let redirect_uri = &to.redirect_uri;
    let sep = match redirect_uri.find('?') {
        None => "?",
        Some(_) if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{sep}{query}")
}

/// The authorization error response (RFC 6749 §4.1.2.1), with `iss`.
fn redirect_error(
    ctx: &AsContext,
    to: &ReturnTo,
    error: &AuthorizeError,
    status: StatusCode,
    cookie: Option<String>,
) -> Response {
    let params = [
        ("error", error.code),
        ("error_description", error.description.as_str()),
    ];
    let url = redirect_url(ctx, to, &params);
    redirect(status, &url, cookie).unwrap_or_else(|| unavailable_page(ctx))
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

/// The name to show for a client: the verified host of a metadata document client; else
/// its self-asserted name, unless that holds control or invisible format characters (a
/// client stored before registration refused them), then its id.
fn client_label(client: &Client) -> &str {
    if let Some(host) = verified_host(client) {
        return host;
    }
    match client.client_name.as_deref() {
        Some(name) if !name.chars().any(|c| c.is_control() || is_invisible_char(c)) => name,
        _ => &client.client_id,
    }
}

/// The host of a metadata document client's `client_id` (the document was fetched from it,
/// so it is verified, unlike the self-declared name).
fn verified_host(client: &Client) -> Option<&str> {
    if client.source != crate::store::ClientSource::MetadataDocument {
        return None;
    }
    let rest = client.client_id.strip_prefix("https://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    Some(authority)
}

/// The login page for a parked request, with the binding cookie; `error` and `username`
/// when the form is shown again after a failed attempt.
pub(super) fn login_page(
    ctx: &AsContext,
    p: &LoginPrompt,
    error: Option<&str>,
    username: Option<&str>,
    status: StatusCode,
) -> Response {
    let host = display_host(&p.redirect_uri);
    let action = ctx.endpoint(Endpoint::AuthorizeLogin);
    let html = ctx.server.pages.login(&LoginView {
        client_name: client_label(&p.client),
        verified_host: verified_host(&p.client),
        redirect_host: &host,
        action: &action,
        request_id: &p.parked.request_id,
        csrf_token: &p.parked.csrf,
        error,
        username,
    });
    page(status, html, Some(set_cookie(ctx, &p.parked.request_id)))
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

/// The consent page for a parked request, with the binding cookie: lists only what will
/// be granted, names what was withheld, and warns when the redirect URI of this request is
/// a loopback address.
fn consent_page(ctx: &AsContext, p: &ConsentPrompt) -> Response {
    let host = display_host(&p.redirect_uri);
    let action = ctx.endpoint(Endpoint::AuthorizeConsent);
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
        client_name: client_label(&p.client),
        verified_host: verified_host(&p.client),
        client_id: &p.client.client_id,
        redirect_uri: &p.redirect_uri,
        redirect_host: &host,
        // The URI this request actually uses (issue 8 item 9), not the client's list.
        loopback_only: all_loopback(std::slice::from_ref(&p.redirect_uri)),
        scopes: &scopes,
        withheld: &withheld,
        resource: &p.resource,
        user: &p.user,
        action: &action,
        request_id: &p.parked.request_id,
        csrf_token: &p.parked.csrf,
    });
    page(
        StatusCode::OK,
        html,
        Some(set_cookie(ctx, &p.parked.request_id)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
