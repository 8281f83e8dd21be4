//! The resource-server half: [`McpOAuthLayer`] in front of the MCP endpoint.
//!
//! For every request the layer:
//! 1. checks `Origin` against the allow-list (DNS-rebinding protection, `403` otherwise) and
//!    answers CORS preflights for allowed browser origins;
//! 2. reads the bearer token from a single `Authorization: Bearer …` header (≤ 8 KiB; never
//!    the query string);
//! 3. works out what the request needs from the [`AccessPolicy`]: from the `Mcp-Method` /
//!    `Mcp-Name` headers (protocol 2026-07-28) or a bounded read of the JSON-RPC body
//!    (batches element by element, the body passed on unchanged, too large → `413`), and
//!    only when the policy depends on the method at all;
//! 4. verifies the token (through a cache keyed by its SHA-256) and checks scopes with the
//!    configured hierarchy;
//! 5. refuses with the challenges MCP clients act on, or passes the request on with an
//!    [`AuthContext`](crate::AuthContext) in its extensions.
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token | 401 | `Bearer resource_metadata="…", scope="…"` |
//! | bad, expired or foreign token | 401 | `… error="invalid_token", error_description="…"` |
//! | malformed request (two headers, empty token, query token) | 400 | `… error="invalid_request"` |
//! | token lacks scope | 403 | `… scope="<granted ∪ needed>", error="insufficient_scope"` |
//! | `Mcp-Method` / `Mcp-Name` headers contradict the body | 400 | none (JSON-RPC `-32020`) |
//! | disallowed `Origin` | 403 | none (JSON-RPC error body) |
//! | body over the read limit | 413 | none |
//! | verification unavailable (IdP down, nothing cached) | 503 | none, `Retry-After` |
//!
//! The reason is attached to every refusal's extensions as an [`AuthRejection`]. A refused
//! JSON-RPC call (`POST`) gets a JSON-RPC error response as its body, echoing the request
//! `id` (`null` for batches) with the OAuth `error` and `error_description` in `error.data`,
//! as the 2026-07-28 transport requires of every HTTP error; other requests (the `GET`
//! stream, `DELETE`) get the OAuth error object `{"error": …, "error_description": …}`.
//!
//! ```
//! use axum::{Router, routing::post, body::Body};
//! use http::{Request, StatusCode};
//! use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer};
//! use mcp_oauth::resource::AccessPolicy;
//! use mcp_oauth::verify::ApiKeyVerifier;
//! use mcp_oauth::scope::ScopeSet;
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cfg = McpOAuthConfig::builder()
//!     .resource("https://mcp.example.com/mcp")
//!     .issuer("https://auth.example.com")
//!     .scope("read", "Read")
//!     .policy(AccessPolicy::new().lazy().tool_scopes("secret", ["read"]))
//!     .verifier(ApiKeyVerifier::new().with_key("k-0123456789abcdef", "bot", ScopeSet::parse("read").unwrap()))
//!     .build()
//!     .unwrap();
//! let app = Router::new()
//!     .route("/mcp", post(|auth: Option<Auth>| async move {
//!         auth.map_or("anonymous".to_owned(), |a| a.subject().to_owned())
//!     }))
//!     .layer(McpOAuthLayer::new(cfg));
//!
//! let call = |token: Option<&str>, body: &'static str| {
//!     let mut req = Request::post("/mcp").header("content-type", "application/json");
//!     if let Some(t) = token { req = req.header("authorization", format!("Bearer {t}")); }
//!     req.body(Body::from(body)).unwrap()
//! };
//! let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
//! let secret = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret"}}"#;
//!
//! assert_eq!(app.clone().oneshot(call(None, list)).await.unwrap().status(), StatusCode::OK);
//! let res = app.clone().oneshot(call(None, secret)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     res.headers()["www-authenticate"],
//!     r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="read""#
//! );
//! let res = app.oneshot(call(Some("k-0123456789abcdef"), secret)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! # }
//! ```

mod challenge;
mod extract;
pub(crate) mod jsonrpc;
mod layer;
pub(crate) mod policy;
mod session;
mod shape;

pub use challenge::AuthRejection;
pub use extract::{Auth, AuthExtractError, ScopeList, Scoped};
pub use layer::{MAX_AUTHORIZATION_LEN, McpOAuth, McpOAuthLayer, ResponseFuture};
pub use policy::{AccessPolicy, LAZY_PUBLIC_METHODS, Requirement, ToolAccess, ToolRequirement};
pub use session::{
    DEFAULT_SESSION_CAPACITY, DEFAULT_SESSION_IDLE, MemorySessionBindings, SessionBindings,
    SessionKey, SessionOwner, merged_owner,
};
pub use shape::{ChallengeStyle, ChallengeStyleRule};
