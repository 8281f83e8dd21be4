//! The resource-server half: [`McpOAuthLayer`] in front of the MCP endpoint.
//!
//! Mount it with [`mcp_oauth::mount`](crate::mount)`(&cfg, mcp)` (tokens from an external
//! authorization server) or `server.mount(&cfg, mcp)` (the embedded one, feature `server`),
//! and serve the app with [`mcp_oauth::serve`](crate::serve): the MCP service sits behind
//! the layer and the metadata beside it, in the right order by construction. The layer
//! itself is for hand composition; it never refuses the crate's own endpoints, whatever the
//! order (see step 0 below).
//!
//! ```no_run
//! # async fn run(cfg: mcp_oauth::McpOAuthConfig) -> Result<(), Box<dyn std::error::Error>> {
//! # let mcp = axum::routing::any(|| async { "mcp" }); // e.g. rmcp's StreamableHttpService
//! let app = mcp_oauth::mount(&cfg, mcp)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! mcp_oauth::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! For every request the layer:
//! 0. passes a request whose path (the `OriginalUri`'s, else the URI's) is **exactly** one
//!    the crate serves itself straight to the service it wraps, before any check: the
//!    protected-resource metadata of every resource and, with an embedded authorization
//!    server, its discovery URLs and endpoints (`/authorize`, `/authorize/login`,
//!    `/authorize/consent`, `/token`, `/register`, `/revoke`, `/introspect`, `/jwks.json`,
//!    `/oauth/stats`, `/health` under the issuer's path). They answer their own CORS. Byte for byte:
//!    `/token/`, `/tokens`, `/TOKEN`, `/token%2F` or `/mcp/../token` go through every step
//!    below, and a resource at one of these paths is refused at `build()`
//!    ([`ConfigError::ReservedPath`](crate::ConfigError::ReservedPath));
//! 1. finds the resource the request is for: with several resources, by whole path
//!    segments, longest first (`/b/mcp`, `/b/mcp/` and `/b/mcp/x` are `/b/mcp`; `/b/mcpx` is
//!    none, and a path under no resource is `404`; so is a path with dot segments or
//!    encoded `/`, `\` or `.`, and, for resources sharing a path, a request whose `Host`,
//!    URI authority, `X-Forwarded-Host` and `Forwarded: host=` disagree); a single
//!    resource protects whatever the layer wraps;
//! 2. checks `Origin` against the allow-list (DNS-rebinding protection, `403` otherwise) and
//!    answers CORS preflights for allowed browser origins;
//! 3. reads the bearer token from a single `Authorization: Bearer …` header (≤ 8 KiB; never
//!    the query string);
//! 4. works out what the request needs from the [`AccessPolicy`]: from the `Mcp-Method` /
//!    `Mcp-Name` headers (protocol 2026-07-28; `Mcp-Name` decoded as rmcp decodes it) or a
//!    bounded read of the JSON-RPC body (batches element by element, the body passed on
//!    unchanged, too large → `413`), and only when the policy depends on the method at all.
//!    It **fails closed**: a message whose method or target it cannot read exactly as the
//!    MCP service will (a field of another type, `params` that is not an object, a
//!    duplicated key) is refused, a body that is not JSON-RPC at all needs the policy's
//!    strictest requirement, and an encoded body (`Content-Encoding`) is refused. The
//!    resources a `subscriptions/listen` subscribes to and the prompt or resource a
//!    `completion/complete` completes need their scopes too, and resource URIs match
//!    whatever their spelling (case, percent-encoding, dot segments, query);
//! 5. for a request naming an MCP session (`Mcp-Session-Id`), checks that the caller is the
//!    principal who opened it (see [`SessionBindings`]);
//! 6. verifies the token (through a cache keyed by its SHA-256) and checks scopes with the
//!    configured hierarchy;
//! 7. refuses with the challenges MCP clients act on, or passes the request on with an
//!    [`AuthContext`](crate::AuthContext) in its extensions; when the service opens a
//!    session (an `Mcp-Session-Id` response header), records who opened it.
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token | 401 | `Bearer resource_metadata="…", scope="…"` |
//! | bad, expired or foreign token | 401 | `… error="invalid_token", error_description="…"` |
//! | malformed request (two headers, empty token, query token) | 400 | `… error="invalid_request"` |
//! | token lacks scope | 403 | `… scope="<granted ∪ needed>", error="insufficient_scope"` |
//! | `Mcp-Method` / `Mcp-Name` headers contradict the body, or are repeated or undecodable | 400 | none (JSON-RPC `-32020`) |
//! | method or target unreadable as the service reads it | 400 | none (JSON-RPC `-32600`) |
//! | body with a `Content-Encoding` (policy reads the body) | 415 | none |
//! | path under none of several resources | 404 | none |
//! | session unknown, or opened by another principal (a valid token of someone else) | 404 | none |
//! | session opened by a principal, request without a token | 401 | `Bearer resource_metadata="…", scope="…"` |
//! | session bindings unavailable | 503 | none, `Retry-After` |
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
pub(crate) mod layer;
pub(crate) mod policy;
mod session;
pub(crate) mod shape;

pub use challenge::AuthRejection;
pub use extract::{Auth, AuthExtractError, ScopeList, Scoped};
pub use layer::{MAX_AUTHORIZATION_LEN, McpOAuth, McpOAuthLayer, ResponseFuture, query_name_forms};
pub use policy::{AccessPolicy, LAZY_PUBLIC_METHODS, Requirement, ToolAccess, ToolRequirement};
pub use session::{
    DEFAULT_SESSION_CAPACITY, DEFAULT_SESSION_IDLE, MemorySessionBindings, SessionBindings,
    SessionKey, SessionOwner, merged_owner,
};
pub use shape::{ChallengeStyle, ChallengeStyleRule};
