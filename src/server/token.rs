//! The token endpoint (`POST {issuer}/token`): the `authorization_code` and `refresh_token`
//! grants of OAuth 2.1.
//!
//! # Requests
//! Only `application/x-www-form-urlencoded` bodies are accepted (Claude and every SDK client
//! send forms; a JSON body is `invalid_request`). A parameter sent twice is refused; an
//! empty parameter counts as absent. Every request counts against the token rate limit of
//! its client address, and the client authenticates as described in
//! [`client_auth`](super::client_auth).
//!
//! # Grants
//! The grant rules (`authorization_code` with single-use codes and replay revocation,
//! `refresh_token` with rotation and its grace window) live in
//! [`flows::token`](crate::flows); this file reads the form, authenticates the client,
//! checks it may use the grant, calls the flow and renders the answer.
//!
//! # Responses
//! `200` with `access_token`, `token_type: "Bearer"`, `expires_in`, `scope` and
//! `refresh_token` when one is issued; errors are RFC 6749 §5.2 JSON. Both carry
//! `Cache-Control: no-store` and `Pragma: no-cache`. A store failure is `503
//! temporarily_unavailable`; nothing answers 500.

use crate::paths::Endpoint;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::AsContext;
use super::client_auth::{FormParams, authenticate, read_form};
use super::rate_limit::{self, LimitKind};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::flows::token::{TokenRequest, Tokens, exchange};

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new().route(
        &ctx.route(Endpoint::Token),
        post(token).fallback(method_not_allowed),
    )
}

/// `405` for anything but `POST`, still as OAuth JSON.
pub(crate) async fn method_not_allowed() -> Response {
    let mut res = OAuthError::new(
        OAuthErrorCode::InvalidRequest,
        "This endpoint only accepts POST",
    )
    .into_response();
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    res
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        Self {
            access_token: t.access.token,
            token_type: "Bearer",
            expires_in: t.access.expires_in,
            scope: t.scope.to_string(),
            refresh_token: t.refresh_token,
        }
    }
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let Ok(body) = serde_json::to_string(&self) else {
            return OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The token response could not be encoded",
            )
            .into_response();
        };
        let mut res = (StatusCode::OK, body).into_response();
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        res
    }
}

async fn token(State(ctx): State<AsContext>, req: Request) -> Response {
    match handle(&ctx, req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(ctx: &AsContext, req: Request) -> Result<TokenResponse, OAuthError> {
    let (parts, body) = req.into_parts();
    rate_limit::check(ctx, LimitKind::Token, &parts).await?;
    let form = read_form(&parts.headers, body).await?;
    let grant = match form.get("grant_type") {
        None => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "grant_type is required",
            ));
        }
        Some(g @ ("authorization_code" | "refresh_token")) => g,
        Some(_) => {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "Supported grant types: authorization_code, refresh_token",
            ));
        }
    };
    let client = authenticate(ctx, &parts.headers, &form).await?;
    if !client.allows_grant(grant) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            format!("This client is not registered for the {grant} grant"),
        ));
    }
    // `authenticate` recorded the client's use (for idle-client retention).
    let request = if grant == "authorization_code" {
        TokenRequest::AuthorizationCode {
            code: required(&form, "code")?,
            redirect_uri: form.get("redirect_uri"),
            code_verifier: required(&form, "code_verifier")?,
            resource: form.get("resource"),
        }
    } else {
        TokenRequest::RefreshToken {
            refresh_token: required(&form, "refresh_token")?,
            scope: form.get("scope"),
            resource: form.get("resource"),
        }
    };
    exchange(&ctx.env, &client, request).await.map(Into::into)
}

fn required<'a>(form: &'a FormParams, name: &'static str) -> Result<&'a str, OAuthError> {
    form.get(name).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            format!("{name} is required"),
        )
    })
}
