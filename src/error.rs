//! [`OAuthError`]: RFC 6749 §5.2 error responses (and the RFC 7591 / RFC 8707 codes).
//!
//! Every OAuth endpoint answers failures with a JSON body `{"error": …, "error_description": …}`,
//! `Cache-Control: no-store`, and the status the RFCs give (`invalid_client` is `401`, with a
//! `WWW-Authenticate: Basic` challenge when the client tried HTTP Basic). A store outage is
//! `503 temporarily_unavailable`, never a 500.
//!
//! ```
//! use axum::response::IntoResponse;
//! use mcp_oauth::error::{OAuthError, OAuthErrorCode};
//!
//! let res = OAuthError::new(OAuthErrorCode::InvalidGrant, "The code has expired").into_response();
//! assert_eq!(res.status(), 400);
//! assert_eq!(res.headers()["cache-control"], "no-store");
//! ```

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::store::StoreError;

/// The `error` codes the endpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// Malformed request (RFC 6749).
    InvalidRequest,
    /// Client authentication failed or the client is unknown (RFC 6749): `401`.
    InvalidClient,
    /// Bad code, verifier, redirect URI or refresh token (RFC 6749).
    InvalidGrant,
    /// The client may not use this grant (RFC 6749).
    UnauthorizedClient,
    /// Unknown grant type (RFC 6749).
    UnsupportedGrantType,
    /// Bad scope (RFC 6749).
    InvalidScope,
    /// Bad `resource` (RFC 8707).
    InvalidTarget,
    /// The user or server refused (RFC 6749 §4.1.2.1).
    AccessDenied,
    /// Only `code` is supported (RFC 6749 §4.1.2.1).
    UnsupportedResponseType,
    /// Bad redirect URI in a registration (RFC 7591).
    InvalidRedirectUri,
    /// Bad metadata in a registration (RFC 7591).
    InvalidClientMetadata,
    /// Unsupported `token_type_hint` (RFC 7009).
    UnsupportedTokenType,
    /// Too many requests: `429` (not an RFC 6749 code, but the same JSON shape).
    SlowDown,
    /// The server failed (RFC 6749).
    ServerError,
    /// The server (its store) is unavailable right now: `503` (RFC 6749).
    TemporarilyUnavailable,
}

impl OAuthErrorCode {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::SlowDown => "slow_down",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status for this code at the token, registration, revocation and
    /// introspection endpoints.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidClient => StatusCode::UNAUTHORIZED,
            Self::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An OAuth error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    code: OAuthErrorCode,
    description: Cow<'static, str>,
    basic_challenge: bool,
    retry_after: Option<u64>,
}

impl OAuthError {
    /// An error with a description safe to show the client (never put secrets in it).
    pub fn new(code: OAuthErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    /// `invalid_client`, with a `WWW-Authenticate: Basic` challenge when the client tried
    /// HTTP Basic (RFC 6749 §5.2).
    pub fn invalid_client(description: impl Into<Cow<'static, str>>, used_basic: bool) -> Self {
        Self {
            basic_challenge: used_basic,
            ..Self::new(OAuthErrorCode::InvalidClient, description)
        }
    }

    /// `503 temporarily_unavailable` with `Retry-After` and the given description (a
    /// dependency such as a client's `jwks_uri` could not be reached: never the client's
    /// fault, so never `invalid_client`).
    #[cfg(feature = "private-key-jwt")]
    #[must_use]
    pub(crate) fn temporarily_unavailable(
        description: impl Into<Cow<'static, str>>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(OAuthErrorCode::TemporarilyUnavailable, description)
        }
    }

    /// `503 temporarily_unavailable` with `Retry-After`, in every build (a dependency of
    /// the server, such as the key ring's store, failed).
    #[cfg(feature = "server")]
    #[must_use]
    pub(crate) fn unavailable_retry(
        description: impl Into<Cow<'static, str>>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(OAuthErrorCode::TemporarilyUnavailable, description)
        }
    }

    /// `429 slow_down` with `Retry-After`.
    #[must_use]
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(OAuthErrorCode::SlowDown, "Too many requests; retry later")
        }
    }

    /// The code.
    #[must_use]
    pub fn code(&self) -> OAuthErrorCode {
        self.code
    }

    /// The description.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code.as_str(), "error_description": self.description })
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        tracing::error!(target: "mcp_oauth::store", error = %e, "store failure");
        #[cfg(feature = "metrics")]
        crate::metrics::store_error(&e);
        Self {
            retry_after: Some(5),
            ..Self::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The authorization server is temporarily unavailable",
            )
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut res = (self.code.status(), self.body().to_string()).into_response();
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.basic_challenge {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
