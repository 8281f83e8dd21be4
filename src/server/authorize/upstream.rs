//! The routes of an upstream login ([`UpstreamOidc`](crate::authn::UpstreamOidc)):
//! `GET {issuer}/upstream/start` binds the browser and leaves for the provider;
//! `GET {issuer}/upstream/callback` is where the provider sends the browser back. Both share
//! the `/authorize` rate limit; every refusal is an error page, never a redirect to the MCP
//! client.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderValue, StatusCode};

use super::render::error_page;
use super::{AsContext, limit_authorize};
use crate::authn::upstream::{CallbackOutcome, Refusal};

/// A refusal's page.
fn refused(ctx: &AsContext, provider: &str, r: &Refusal) -> Response {
    let (status, title, message) = r.page(provider);
    let mut res = error_page(ctx, status, &title, &message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    res
}

/// A `303` to `location` with these cookies and no caching.
fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(SET_COOKIE, v);
        }
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Mounted only for an upstream authenticator; answered anyway should that ever change.
fn not_configured(ctx: &AsContext) -> Response {
    error_page(
        ctx,
        StatusCode::NOT_FOUND,
        "Not found",
        "This server does not sign users in at another provider.",
    )
}

/// `GET …/upstream/start?state=…`.
pub(super) async fn start(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(up) = ctx.server.authenticator.upstream() else {
        return not_configured(&ctx);
    };
    let state = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
    });
    let Some(state) = state else {
        return refused(&ctx, up.provider_name(), &Refusal::UnknownState);
    };
    match up.start(&state, ctx.secure_cookies()).await {
        Ok((url, cookie)) => {
            let mut res = see_other(&url, &[cookie]);
            *res.status_mut() = StatusCode::FOUND;
            res
        }
        Err(r) => refused(&ctx, up.provider_name(), &r),
    }
}

/// `GET …/upstream/callback?code=…&state=…[&iss=…]`.
pub(super) async fn callback(State(ctx): State<AsContext>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(res) = limit_authorize(&ctx, &parts).await {
        return res;
    }
    let Some(up) = ctx.server.authenticator.upstream() else {
        return not_configured(&ctx);
    };
    match up.callback(&parts).await {
        CallbackOutcome::Return { location, cookies } => see_other(&location, &cookies),
        CallbackOutcome::Refused(r) => refused(&ctx, up.provider_name(), &r),
    }
}
