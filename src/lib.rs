//! # mcp-oauth
//!
//! OAuth 2.1 for [Model Context Protocol](https://modelcontextprotocol.io) servers, for axum
//! and any tower stack: a layer that protects the MCP endpoint the way every spec-following
//! MCP client (ChatGPT, Claude, VS Code, Cursor, the Inspector, the official SDKs) expects.
//!
//! Two halves, used together or apart:
//!
//! - **The resource server.** [`McpOAuthLayer`] verifies bearer tokens (local key ring, a
//!   remote JWKS, RFC 7662 introspection, static API keys, or your own
//!   [`TokenVerifier`](verify::TokenVerifier)), applies a method- and tool-aware
//!   [`AccessPolicy`](resource::AccessPolicy), and refuses with exactly the `401`/`403`
//!   challenges clients act on; [`protected_resource_router`] serves the RFC 9728 metadata
//!   those challenges point to. [`mount`]`(&cfg, mcp)` puts the two together.
//! - **The embedded authorization server** (feature `server`, on by default).
//!   `server.mount(&cfg, mcp)` with an `AuthorizationServer` serves the MCP endpoint behind
//!   the layer and, beside it, discovery, dynamic client registration, client ID metadata
//!   documents (a URL `client_id`, fetched behind the SSRF guard; feature
//!   `client-metadata`, on by default; see `server::client_metadata`), `/authorize` with
//!   login and consent pages, `/token`, revocation, introspection and the signing keys,
//!   storing its state in a [`store`] (memory, SQLite, PostgreSQL or Redis). The
//!   configuration never holds the server: it takes only the server's keys and revocation
//!   list, through [`LocalAuthorizationServer`](config::LocalAuthorizationServer). Nothing
//!   runs in the background until you call `AuthorizationServer::start_upkeep` (the
//!   retention sweep; see `server::retention`), once, inside the runtime that serves the app.
//!
//! Serve either app with [`serve`]: it sets `TCP_NODELAY` on every connection (without it,
//! each request after the first on a keep-alive connection waits ~40 ms for a delayed ACK)
//! and gives every request the client's address (without it, every client shares one
//! rate-limit bucket).
//!
//! Tools declare what they need with [`requires_scopes`] and [`public_tool`] (feature
//! `macros`), collected by [`scoped_tools`] into the policy, so the layer answers a missing
//! scope with the `403 insufficient_scope` step-up challenge before the tool runs, and
//! `tools/list` carries each tool's `securitySchemes`.
//!
//! ## Quick start: the embedded authorization server
//!
//! ```no_run
//! # #[cfg(feature = "server")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::McpOAuthConfig;
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::resource::AccessPolicy;
//! use mcp_oauth::server::AuthorizationServer;
//!
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
//!     .build()
//!     .await?;
//! let cfg = McpOAuthConfig::builder()
//!     .resource("https://mcp.example.com/mcp")
//!     .scope("files:read", "Read your files")
//!     .scope("files:write", "Change your files")
//!     .scope_implies("files:write", ["files:read"])
//!     .default_scopes(["files:read"])
//!     .policy(AccessPolicy::new().lazy().public_tool("search").tool_scopes("write", ["files:write"]))
//!     .authorization_server(&server)
//!     .build()?;
//!
//! # let mcp_service = axum::routing::any(|| async { "mcp" });
//! // The MCP service (e.g. rmcp's StreamableHttpService) behind the layer, every OAuth
//! // endpoint beside it: one call, in the right order.
//! let app = server.mount(&cfg, mcp_service)?;
//! // Background upkeep (the retention sweep) runs while this handle lives.
//! let _upkeep = server.start_upkeep();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! mcp_oauth::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Quick start: tokens from an external authorization server
//!
//! ```no_run
//! # #[cfg(feature = "remote-jwks")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::McpOAuthConfig;
//! use mcp_oauth::verify::RemoteJwksVerifier;
//!
//! let resource = "https://mcp.example.com/mcp";
//! let issuer = "https://example.auth0.com";
//! let verifier = RemoteJwksVerifier::builder(issuer).audience(resource).discover().await?;
//! let cfg = McpOAuthConfig::builder()
//!     .resource(resource)
//!     .issuer(issuer)
//!     .scope("read", "Read your data")
//!     .default_scopes(["read"])
//!     .verifier(verifier)
//!     .build()?;
//!
//! # let mcp_service = axum::routing::any(|| async { "mcp" });
//! let app = mcp_oauth::mount(&cfg, mcp_service)?; // e.g. rmcp's StreamableHttpService
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! mcp_oauth::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Composing by hand stays possible: `Router::new().route_service("/mcp", mcp)`, then
//! `.layer(McpOAuthLayer::new(&cfg))` and `.merge(oauth_router(&cfg, &server))` (or
//! [`protected_resource_router`]) in either order. The layer lets exactly the crate's own
//! paths through; everything else it wraps, it guards.
//!
//! Handlers read the caller with the [`Auth`] extractor (`Option<Auth>` for routes that
//! also serve anonymous callers) or require scopes with [`Scoped`]; with the `rmcp` feature
//! rmcp tools take `auth: Auth` as a parameter.
//!
//! ## Security model
//!
//! - Tokens come only from one `Authorization: Bearer` header; the query string is refused.
//! - Every verifier checks signature, `iss`, `aud` (this resource, RFC 8707), `exp`/`nbf`;
//!   algorithms come from our allow-list, never from the token or the key (`alg: none` and
//!   HS256-with-a-public-key are refused). Local tokens must be RFC 9068 `at+jwt`.
//! - Verified tokens are cached by their SHA-256, never beyond `exp`; revocation is checked
//!   on every hit.
//! - `Origin` is checked against an allow-list (DNS rebinding); CORS is only granted to
//!   allowed origins.
//! - Refusal descriptions name a class of failure and never echo token material; API keys
//!   are stored as hashes and compared in constant time.
//! - Relaxations real identity providers need are [`Compat`] switches, each logged at start.
//! - The layer fails closed: a JSON-RPC target it cannot read exactly as the MCP service will
//!   (a field of another type, duplicated keys, an undecodable `Mcp-Name`, an encoded body) is
//!   refused, never judged by the base requirement; MCP sessions are bound to the subject and
//!   client that opened them ([`resource::SessionBindings`]); with several resources a request
//!   is matched by whole path segments and an unknown path is refused.
//! - The authorization server grants least privilege (requested ∩ client ceiling ∩ user
//!   ceiling ∩ [`authn::ScopePolicy`]), is no open redirector, revokes on code replay only for
//!   the code's own client with its verifier, bounds every input and table, and answers
//!   `/introspect` only for the resource servers it is told about.
//!
//! The README's "Security model" section lists every guarantee, what is left to the host (TLS,
//! secrets at rest, client addresses, shared stores) and every switch that loosens a default
//! with its cost.
//!
//! Where this differs from the project's original design notes (DESIGN.md §4), the security
//! review (issue 8) wins: errors found before the user acts render a page for *every* client
//! the user has not approved (not only for an unknown client or redirect URI); a client's
//! registered `scope` is a ceiling; `InsecureAutoApprove` needs a loopback issuer or an
//! explicit opt-in; the layer refuses unreadable targets instead of applying its base rule.
//!
//! The reshape (issue 9) changes DESIGN.md §1–2 too, and wins: the configuration is the bottom
//! floor and no longer holds the authorization server, its stores or its authenticator (the
//! layer takes only the server's keys and revocation check through
//! [`config::LocalAuthorizationServer`]), so the router is `oauth_router(&cfg, &server)`; the
//! authorization server is behind the `server` feature; background upkeep starts only when
//! asked (`AuthorizationServer::start_upkeep`); the grant logic lives in socket-free flows
//! under `src/flows/` with an injected clock; and every outbound fetch goes through
//! [`outbound`] (feature `remote-jwks`, `introspection`, `client-metadata` or
//! `private-key-jwt`), whose SSRF guard refuses loopback and private addresses unless a
//! verifier (or the client metadata or client JWKS policy) is told to allow them.
//!
//! "The first hour" (issue 10) changes DESIGN.md §2 and §4, and wins: instead of refusing to
//! start without a key when instances share a store, a durable store now *supplies* the keys
//! (`AuthorizationServerBuilder::build` is `async` and loads or creates the ring in the
//! store), and keys that would die with the process on a durable store are refused unless
//! named (`ephemeral_keys()`); the crate mounts the app itself (`server.mount`, [`mount`],
//! [`serve`]), and the layer lets the crate's own endpoints through whatever the order; the
//! `rmcp` feature also enables rmcp's streamable HTTP server, so that
//! [`McpOAuthConfig::rmcp_server_config`] can hand it the `Host` names derived from the
//! public URL; and the MCP Inspector's origin is allowed at the MCP endpoint by default
//! (`inspector_origin(false)` turns it off).
//!
//! "Running it in production" (issue 13) changes DESIGN.md §4 and §7, and wins: a code is
//! still redeemed once and a replay still revokes what it issued, but a code's grant that was
//! never delivered (the first exchange failed after its commit) goes to the same client's
//! retry of the same exchange (same `redirect_uri`, `resource` and PKCE verifier) instead of
//! signing the user out; retired signing keys stay published for at least the access-token
//! lifetime plus the ring's refresh interval plus 5 minutes, and an instance whose view of a
//! shared ring is stale refuses to sign; `RedisStore` refuses a `maxmemory-policy` that may
//! evict (every key has a TTL).
//!
//! ## Operations
//!
//! Every security-relevant step is an [audit event](audit) (`tracing` target
//! `mcp_oauth::audit`, one fixed name and field set each, a per-flow `fid` from `/authorize`
//! to the first MCP call). The embedded server answers `GET {issuer path}/health`
//! (readiness of the store and the signing keys, and the `oauth_compliant` flag: the
//! [`doctor`]'s verdict on the mounted app, run in process; see `server::health`). The
//! `metrics` feature adds Prometheus metrics, the `doctor` feature the doctor over the
//! network (`doctor::check(url)`, `--doctor URL`).
//!
//! ## Crypto provider
//!
//! JWTs are signed and verified with `jsonwebtoken` on `aws-lc-rs`. The crate installs that
//! provider itself before first use, so enabling `jsonwebtoken`'s other backend elsewhere in
//! the dependency graph does not turn into a run-time panic.
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `aws-lc-rs` | yes | the crypto backend (required) |
//! | `server` | yes | the embedded authorization server (`server`, `authn`, `server.mount`, `oauth_router`); off, the crate is a resource server only and pulls no `argon2` or `askama` |
//! | `consent-page` | yes | built-in login and consent pages (askama); implies `server` |
//! | `client-metadata` | yes | client ID metadata documents: a `client_id` that is an `https` URL is fetched (SSRF-guarded, 5 KB, cached per `Cache-Control`) and used as the client's registration; implies `server` and pulls `reqwest` |
//! | `macros` | yes | `#[requires_scopes]`, `#[public_tool]`, `#[scoped_tools]` |
//! | `remote-jwks` | no | `RemoteJwksVerifier` for external authorization servers |
//! | `introspection` | no | `IntrospectionVerifier` for opaque tokens (RFC 7662) |
//! | `upstream-oidc` | no | `authn::UpstreamOidc`: users sign in at an upstream identity provider (any OpenID Connect issuer, Google, Microsoft Entra, GitHub); implies `server` and `remote-jwks` |
//! | `private-key-jwt` | yes | `private_key_jwt` client authentication (RFC 7523) for clients with `jwks` or `jwks_uri` (DCR, `StaticClient::private_key_jwt`, client ID metadata documents with `client-metadata`), `jwks_uri` fetched through [`outbound`]; implies `server` |
//! | `rmcp` | no | `Auth` as an rmcp tool parameter, `#[requires_scopes]` on rmcp tools (without it, these fail to compile with an error naming the feature) |
//! | `sqlite` | no | [`SqliteStore`](store::sql::SqliteStore): durable state in one file |
//! | `postgres` | no | [`PostgresStore`](store::sql::PostgresStore): state shared by instances |
//! | `redis` | no | [`RedisStore`](store::redis::RedisStore): state shared by instances |
//! | `testkit` | no | `store::testkit`: the conformance suite for a store of your own |
//! | `metrics` | no | `mcp_oauth::metrics`: counters and latency histograms through the `metrics` facade, served as Prometheus text (`install_prometheus`, `router`) |
//! | `doctor` | no | `mcp_oauth::doctor::check(url)` (the in-process `check_app` needs no feature) fetches a server's discovery documents as MCP clients do and reports every mismatch; pulls `reqwest` |
//!
//! The minimum supported Rust version is 1.88; `sqlite` and `postgres` need 1.94 (sqlx 0.9).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod authn;
pub mod config;
pub mod context;
mod crypto;
pub mod doctor;
pub mod error;
#[cfg(feature = "server")]
mod flows;
pub mod issuer;
pub mod keys;
pub mod metadata;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod mounting;
mod net;
#[cfg(any(
    feature = "remote-jwks",
    feature = "introspection",
    feature = "client-metadata",
    feature = "private-key-jwt"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "remote-jwks",
        feature = "introspection",
        feature = "client-metadata",
        feature = "private-key-jwt"
    )))
)]
pub mod outbound;
mod paths;
pub mod resource;
pub mod scope;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod store;
mod util;
pub mod verify;

pub use config::{Compat, ConfigError, McpOAuthConfig, McpOAuthConfigBuilder};
pub use context::{AuthContext, TokenKind};
pub use metadata::{protected_resource_metadata, protected_resource_router};
pub use mounting::{Serving, mount, serve};
pub use resource::{Auth, McpOAuth, McpOAuthLayer, Scoped};
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use server::oauth_router;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "server")]
#[doc(hidden)]
pub mod __fuzz;

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc(inline)]
pub use mcp_oauth_macros::{public_tool, requires_scopes, scoped_tools};
