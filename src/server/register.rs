//! RFC 7591 dynamic client registration: `POST {issuer path}/register`.
//!
//! Deprecated in MCP 2026-07-28 in favour of client ID metadata documents, but ChatGPT,
//! Claude, VS Code, Cursor, the SDK clients and the Inspector still register this way, so it
//! is on by default ([`dynamic_registration`](super::AuthorizationServerBuilder::dynamic_registration)
//! turns it off). Registration is open: anyone may register, rate-limited per address.
//!
//! Built for the volume real clients produce (Claude Code registers on every connection):
//! an identical public registration is answered with the earlier registration's client
//! instead of a new one ([deduplication](super::AuthorizationServerBuilder::dynamic_registration));
//! clients that never complete an authorization are removed after a few hours
//! ([`Retention::unused_client_after`](super::Retention::unused_client_after)); and the rate
//! limit counts the registrations that create a client
//! ([`register_rate_limit`](super::AuthorizationServerBuilder::register_rate_limit), sized
//! for shared addresses), while every request counts against ten times that budget, checked
//! before the body is read. A store failure is `503 temporarily_unavailable`, never a
//! second client.
//!
//! The metadata rules and the redirect URI policy live in `flows::register`: `redirect_uris` (required: `https`, loopback `http`, or a native
//! app's private-use scheme), `token_endpoint_auth_method` (`none` by default,
//! `client_secret_basic`, `client_secret_post`), `grant_types` (`authorization_code` and
//! `refresh_token`, both by default), `response_types` (`code`), `application_type`,
//! `scope` (the client's scope ceiling), `client_name` and the kept informational fields.
//! This file reads the body (a JSON object sent as `application/json`, at most 8 KiB),
//! calls the flow and renders the answer.
//!
//! The answer is `201 Created` with every registered field, the new `client_id` (random,
//! never beginning with `https://`, so it cannot collide with a client ID metadata document
//! URL) and `client_id_issued_at`. Failures are `400` with `invalid_redirect_uri` or
//! `invalid_client_metadata` and a description naming the problem; too many registrations
//! from one address get `429 slow_down` with `Retry-After`.
//!
//! ```
//! use axum::body::Body;
//! use http::Request;
//! use mcp_oauth::{McpOAuthConfig, oauth_router};
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::AuthorizationServer;
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = AuthorizationServer::builder().authenticator(StaticUsers::new()).build().await.unwrap();
//! let cfg = McpOAuthConfig::builder()
//!     .resource("http://127.0.0.1:8000/mcp")
//!     .issuer("http://127.0.0.1:8000")
//!     .authorization_server(&server)
//!     .build()
//!     .unwrap();
//! let app: axum::Router = oauth_router(&cfg, &server);
//! let res = app
//!     .oneshot(
//!         Request::post("/register")
//!             .header("content-type", "application/json")
//!             .body(Body::from(r#"{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback"],"client_name":"Cursor"}"#))
//!             .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 201);
//! # }
//! ```

use crate::paths::Endpoint;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::AsContext;
use super::rate_limit::{self, LimitKind};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::flows::register::{Prepared, Registration, create, prepare};
use crate::store::ApplicationType;

// The redirect URI policy moved to `flows::register`; these names stay here for the
// callers of the old path (`server/mod.rs`, `server/authorize.rs`, `__fuzz.rs`).
pub(crate) use crate::flows::register::{
    DEFAULT_REDIRECT_SCHEMES, all_loopback, check_redirect_uri, check_redirect_uri_with,
    is_invisible_char, redirect_uri_matches,
};

/// Largest registration body read.
const MAX_BODY: usize = 8 * 1024;

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    if !ctx.server.dynamic_registration {
        return Router::new();
    }
    Router::new().route(&ctx.route(Endpoint::Register), post(register))
}

fn metadata_error(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClientMetadata, description)
}

async fn register(State(ctx): State<AsContext>, request: Request) -> Response {
    match handle(&ctx, request).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn handle(ctx: &AsContext, request: Request) -> Result<Response, OAuthError> {
    let (parts, body) = request.into_parts();
    rate_limit::check(ctx, LimitKind::RegisterRequest, &parts).await?;
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !is_json {
        return Err(metadata_error(
            "a registration request must be a JSON object sent with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(Body::new(body), MAX_BODY)
        .await
        .map_err(|_| metadata_error("the registration request is too large or was cut short"))?;
    let Ok(Value::Object(meta)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(metadata_error(
            "the registration request is not a JSON object",
        ));
    };
    // Open registration: no registrant identity goes into the fingerprint.
    let registration = match prepare(&ctx.env, &meta, None).await? {
        Prepared::Existing(registration) => registration,
        Prepared::New(new) => {
            rate_limit::check(ctx, LimitKind::Register, &parts).await?;
            create(&ctx.env, new).await?
        }
    };
    Ok(render(registration))
}

/// The `201 Created` answer (RFC 7591 §3.2.1): every registered field, the client id, its
/// issue time and, for a confidential client, its secret.
fn render(registration: Registration) -> Response {
    let Registration {
        client,
        client_secret: secret,
        ..
    } = registration;
    let issued_at = client.issued_at;
    let mut out = Map::new();
    out.insert("client_id".into(), json!(client.client_id));
    out.insert("client_id_issued_at".into(), json!(issued_at));
    if let Some(secret) = secret {
        out.insert("client_secret".into(), json!(secret));
        out.insert("client_secret_expires_at".into(), json!(0));
    }
    out.insert("redirect_uris".into(), json!(client.redirect_uris));
    out.insert(
        "token_endpoint_auth_method".into(),
        json!(client.token_endpoint_auth_method.as_str()),
    );
    out.insert("grant_types".into(), json!(client.grant_types));
    out.insert("response_types".into(), json!(["code"]));
    out.insert(
        "application_type".into(),
        json!(match client.application_type {
            ApplicationType::Native => "native",
            ApplicationType::Web => "web",
        }),
    );
    if let Some(name) = &client.client_name {
        out.insert("client_name".into(), json!(name));
    }
    if let Some(scope) = &client.scope {
        out.insert("scope".into(), json!(scope.to_string()));
    }
    for (k, v) in &client.extra {
        out.insert(k.clone(), v.clone());
    }
    let mut res = (StatusCode::CREATED, Value::Object(out).to_string()).into_response();
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
