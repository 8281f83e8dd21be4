//! The layer's refusals: `WWW-Authenticate` challenges (RFC 6750 §3, RFC 9728 §5.1) and the
//! [`AuthRejection`] that travels in the response extensions.

use axum::body::Body;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::scope::ScopeSet;
use crate::verify::VerifyError;

/// Why the layer refused a request. It is inserted into the response's extensions, so an
/// outer layer can log or reshape refusals:
///
/// ```
/// # use mcp_oauth::resource::AuthRejection;
/// # fn log(response: &http::Response<axum::body::Body>) {
/// if let Some(why) = response.extensions().get::<AuthRejection>() {
///     tracing::info!(status = %why.status(), reason = %why, "refused");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No bearer token; `scope` lists what the request needs.
    #[error("no access token")]
    MissingToken {
        /// Scopes the request needs.
        scope: ScopeSet,
    },
    /// The request is malformed (two `Authorization` headers, an empty token, a token in
    /// the query string).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The `Mcp-Method` / `Mcp-Name` headers (protocol 2026-07-28) contradict the JSON-RPC
    /// body: `400` with the JSON-RPC `HeaderMismatch` error (`-32020`).
    #[error("the Mcp-Method or Mcp-Name header does not match the request body")]
    HeaderMismatch,
    /// The token was refused.
    #[error("invalid token: {error}")]
    InvalidToken {
        /// Why.
        error: VerifyError,
        /// Scopes the request needs.
        scope: ScopeSet,
    },
    /// The token is valid but lacks scopes.
    #[error("insufficient scope: needs {needed}")]
    InsufficientScope {
        /// What the request needs.
        needed: ScopeSet,
        /// What the token holds.
        granted: ScopeSet,
    },
    /// The `Origin` is not allowed (DNS-rebinding protection).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The body is larger than the layer reads to find the JSON-RPC method.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The token could not be verified right now.
    #[error("verification unavailable")]
    Unavailable,
    /// The policy depends on the JSON-RPC method or target and the layer cannot read it
    /// exactly as the MCP service will (not JSON-RPC, a `method` or target name that is not
    /// a string, `params` that is not an object, a duplicated key, a batch holding any such
    /// message): `400` with the JSON-RPC invalid-request error (`-32600`), no challenge.
    #[error("the JSON-RPC method or target of the request cannot be read")]
    UnreadableRequest,
    /// The body has a `Content-Encoding` other than `identity`, and the policy needs to read
    /// it: `415`.
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// With several resources on one layer, the path belongs to none of them: `404`.
    #[error("no protected resource at this path")]
    UnknownResource,
    /// The `Mcp-Session-Id` names a session this caller did not open (never issued, forgotten,
    /// or bound to another principal): `404`, as the transport answers an unknown session,
    /// so the client starts a new one.
    #[error("session not found")]
    SessionNotFound,
}

impl AuthRejection {
    /// The HTTP status of the refusal.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken { .. } | Self::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) | Self::HeaderMismatch | Self::UnreadableRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnknownResource | Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::InsufficientScope { .. } | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The scope the challenge carries: for `insufficient_scope`, everything the token
    /// holds plus everything needed, because clients re-request exactly that set.
    #[must_use]
    pub fn challenge_scope(&self) -> Option<ScopeSet> {
        match self {
            Self::MissingToken { scope } | Self::InvalidToken { scope, .. } => Some(scope.clone()),
            Self::InsufficientScope { needed, granted } => Some(granted.union(needed)),
            _ => None,
        }
    }

    fn error_code(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::MissingToken { .. } => None,
            Self::InvalidRequest(d) => Some(("invalid_request", d)),
            Self::HeaderMismatch => Some((
                "invalid_request",
                "The Mcp-Method or Mcp-Name header does not match the request body",
            )),
            Self::InvalidToken { error, .. } => Some(("invalid_token", error.description())),
            Self::InsufficientScope { .. } => Some((
                "insufficient_scope",
                "The access token lacks a scope this request needs",
            )),
            Self::OriginNotAllowed => Some(("forbidden", "Origin not allowed")),
            Self::PayloadTooLarge => Some(("invalid_request", "The request body is too large")),
            Self::Unavailable => Some((
                "temporarily_unavailable",
                "The access token cannot be verified right now",
            )),
            Self::UnreadableRequest => Some((
                "invalid_request",
                "The JSON-RPC method or target of the request cannot be read",
            )),
            Self::UnsupportedEncoding => Some((
                "invalid_request",
                "The request body must not have a Content-Encoding",
            )),
            Self::UnknownResource => {
                Some(("invalid_request", "No protected resource at this path"))
            }
            Self::SessionNotFound => Some(("invalid_request", "Session not found")),
        }
    }

    /// The `WWW-Authenticate` value for this refusal, or `None` for refusals that are not
    /// about credentials (origin, size, availability, contradicting headers, unreadable
    /// bodies, unknown paths and sessions).
    #[must_use]
    pub fn www_authenticate(&self, resource_metadata: &str) -> Option<String> {
        if matches!(
            self,
            Self::OriginNotAllowed
                | Self::PayloadTooLarge
                | Self::Unavailable
                | Self::HeaderMismatch
                | Self::UnreadableRequest
                | Self::UnsupportedEncoding
                | Self::UnknownResource
                | Self::SessionNotFound
        ) {
            return None;
        }
        let mut c = Challenge::bearer();
        c.param("resource_metadata", resource_metadata);
        if let Some(scope) = self.challenge_scope().filter(|s| !s.is_empty()) {
            c.param("scope", &scope.to_string());
        }
        if let Some((code, description)) = self.error_code() {
            c.param("error", code);
            c.param("error_description", description);
        }
        Some(c.finish())
    }

    /// The OAuth `error` and `error_description` of a refusal body (a missing token is
    /// described like an invalid one, though its challenge names no error, RFC 6750 §3.1).
    fn body_error(&self) -> (&'static str, &'static str) {
        self.error_code()
            .unwrap_or(("invalid_token", "An access token is required"))
    }

    /// Renders the refusal: status, challenge, a small JSON body, `no-store`, and the
    /// rejection itself in the extensions.
    pub(crate) fn into_response(self, resource_metadata: &str) -> Response<Body> {
        let body = match &self {
            Self::OriginNotAllowed => serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": { "code": -32600, "message": "Forbidden: Origin not allowed" },
            }),
            other => {
                let (code, description) = other.body_error();
                serde_json::json!({ "error": code, "error_description": description })
            }
        };
        self.respond(resource_metadata, &body)
    }

    /// The response for this refusal with `body`: status, headers and extensions.
    fn respond(self, resource_metadata: &str, body: &serde_json::Value) -> Response<Body> {
        crate::audit::resource_refused(self.audit_reason(), self.status().as_u16());
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = self.www_authenticate(resource_metadata)
            && let Ok(v) = HeaderValue::from_str(&value)
        {
            headers.insert(WWW_AUTHENTICATE, v);
        }
        if matches!(self, Self::Unavailable) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response.extensions_mut().insert(self);
        response
    }

    /// The `reason` of the `resource.refused` audit event ([`crate::audit`]).
    pub(crate) fn audit_reason(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } => "missing_token",
            Self::InvalidRequest(_) => "invalid_request",
            Self::HeaderMismatch => "header_mismatch",
            Self::InvalidToken { .. } => "invalid_token",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unavailable => "unavailable",
            Self::UnreadableRequest => "unreadable_request",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::UnknownResource => "unknown_resource",
            Self::SessionNotFound => "session_not_found",
        }
    }

    /// The JSON-RPC error code of this refusal when it answers a JSON-RPC request:
    /// `-32020` (`HeaderMismatch`) for contradicting headers, `-32603` when verification is
    /// unavailable, `-32600` (invalid request) otherwise.
    #[must_use]
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            Self::HeaderMismatch => -32020,
            Self::Unavailable => -32603,
            _ => -32600,
        }
    }

    /// Renders the refusal of a JSON-RPC request: the same status and headers as
    /// [`into_response`](Self::into_response), with a JSON-RPC error response as the body
    /// (`id` echoed, the OAuth `error` / `error_description` in `error.data`), as the
    /// 2026-07-28 transport requires of every HTTP error answering a request.
    pub(crate) fn into_jsonrpc_response(
        self,
        resource_metadata: &str,
        id: serde_json::Value,
    ) -> Response<Body> {
        let (error, description) = self.body_error();
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": self.jsonrpc_code(),
                "message": description,
                "data": { "error": error, "error_description": description },
            },
        });
        self.respond(resource_metadata, &body)
    }
}

/// Builds an RFC 7235 challenge: `Bearer k="v", k2="v2"`, every value a quoted-string.
#[derive(Debug)]
pub(crate) struct Challenge {
    out: String,
    first: bool,
}

impl Challenge {
    pub(crate) fn bearer() -> Self {
        Self {
            out: String::from("Bearer"),
            first: true,
        }
    }

    /// Appends `name="value"`, escaping `"` and `\` and dropping control characters (which
    /// could otherwise split or corrupt the header).
    pub(crate) fn param(&mut self, name: &str, value: &str) {
        self.out.push_str(if self.first { " " } else { ", " });
        self.first = false;
        self.out.push_str(name);
        self.out.push_str("=\"");
        for ch in value.chars() {
            match ch {
                '"' | '\\' => {
                    self.out.push('\\');
                    self.out.push(ch);
                }
                c if c.is_control() || !c.is_ascii() => {}
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quoted_strings() {
        let mut c = Challenge::bearer();
        c.param("a", "x\"y\\z\r\nw");
        c.param("b", "ok");
        assert_eq!(c.finish(), r#"Bearer a="x\"y\\zw", b="ok""#);
    }

    #[test]
    fn insufficient_scope_lists_union() {
        let r = AuthRejection::InsufficientScope {
            needed: "files:write".parse().unwrap(),
            granted: "files:read".parse().unwrap(),
        };
        assert_eq!(
            r.www_authenticate("https://h/.well-known/oauth-protected-resource/mcp")
                .unwrap(),
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\", scope=\"files:read files:write\", error=\"insufficient_scope\", error_description=\"The access token lacks a scope this request needs\""
        );
    }
}
