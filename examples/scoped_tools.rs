//! # `scoped_tools`: tools with different scopes, one attribute each
//!
//! An rmcp MCP server whose four tools each need something different, declared once on the
//! tool itself:
//!
//! | tool | attribute | who may call it |
//! |---|---|---|
//! | `public_search` | `#[public_tool]` | anyone, without signing in |
//! | `files_read` | `#[requires_scopes("files:read")]` | a token with `files:read`, `files:write` or `admin` |
//! | `files_write` | `#[requires_scopes("files:write")]` | a token with `files:write` or `admin` |
//! | `admin_reset` | `#[requires_scopes("admin")]` | a token with `admin` |
//!
//! The scope hierarchy is `admin` ⊇ `files:write` ⊇ `files:read`
//! ([`scope_implies`](mcp_oauth::McpOAuthConfigBuilder::scope_implies)), so a token holding
//! `admin` calls every tool.
//!
//! `#[scoped_tools]` beside rmcp's `#[tool_router]` collects the attributes into
//! `ScopedServer::tool_requirements()`, which feeds the layer's
//! [`AccessPolicy`](mcp_oauth::resource::AccessPolicy). From that one source:
//! - the layer answers a call it must refuse **before rmcp runs**: no token → `401` with
//!   `WWW-Authenticate: Bearer resource_metadata="…", scope="files:read"`; a token lacking the
//!   scope → `403 insufficient_scope` with `scope=` listing what the client must re-request
//!   (what it holds plus what the tool needs), which Claude, VS Code and the SDK clients use to
//!   step up; ChatGPT (recognised by its `User-Agent`) instead gets a `200` tool error carrying
//!   `_meta["mcp/www_authenticate"]`, which opens its sign-in UI;
//! - `tools/list` gives every tool `securitySchemes` (`noauth` or `oauth2` with its scopes),
//!   which ChatGPT reads to decide which tools need sign-in;
//! - `#[requires_scopes]` also checks again inside the tool, so a policy that forgot the map
//!   cannot let a caller through.
//!
//! The same attribute works on a plain axum handler: `GET /admin/stats` needs `admin` and is
//! refused with a `403` challenge before the handler body runs.
//!
//! ## Run it
//!
//! ```text
//! cargo run --example scoped_tools --features rmcp
//! ```
//!
//! Configured like the quickstart: `MCP_OAUTH_ADDR` (default `127.0.0.1:8000`),
//! `MCP_OAUTH_PUBLIC_URL` (default `http://<bound addr>`; the MCP endpoint is
//! `<public url>/mcp`), `MCP_OAUTH_DEMO_USER` (default `demo`) and `MCP_OAUTH_DEMO_PASSWORD`
//! (default: random, printed at start). State is kept in memory (see the quickstart for a
//! SQLite store). Connect with the MCP Inspector (`npx @modelcontextprotocol/inspector`,
//! Streamable HTTP, the printed URL): `public_search` works at once, `files_read` asks you to
//! sign in, `files_write` and `admin_reset` ask for more scope.

use axum::serve::ListenerExt as _;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::{
    Auth, McpOAuth, McpOAuthConfig, McpOAuthConfigBuilder, McpOAuthLayer, oauth_router,
    public_tool, requires_scopes, scoped_tools,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};

/// Errors of this example.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// The MCP path under the public URL.
pub(crate) const MCP_PATH: &str = "/mcp";

/// Arguments of `public_search` and `files_read`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct NameArgs {
    /// A file name (or part of one, for the search).
    pub(crate) name: String,
}

/// The server's state: a counter of writes, shared by every session.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopedServer {
    writes: Arc<AtomicU64>,
}

#[scoped_tools]
#[tool_router]
impl ScopedServer {
    /// Public: no token needed.
    #[public_tool]
    #[tool(description = "Search the public catalogue. Works without signing in.")]
    fn public_search(&self, Parameters(NameArgs { name }): Parameters<NameArgs>) -> String {
        format!("public results for {name:?}")
    }

    /// Needs `files:read` (or anything that implies it).
    #[requires_scopes("files:read")]
    #[tool(description = "Read a file (needs files:read).")]
    fn files_read(
        &self,
        auth: Auth,
        Parameters(NameArgs { name }): Parameters<NameArgs>,
    ) -> Result<String, ErrorData> {
        Ok(format!("{name}: read by {}", auth.subject()))
    }

    /// Needs `files:write` (or `admin`).
    #[requires_scopes("files:write")]
    #[tool(description = "Write a file (needs files:write).")]
    fn files_write(&self, auth: Auth) -> Result<String, ErrorData> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(format!("write #{n} by {}", auth.subject()))
    }

    /// Needs `admin`.
    #[requires_scopes("admin")]
    #[tool(description = "Reset the write counter (needs admin).")]
    fn admin_reset(&self, auth: Auth) -> Result<String, ErrorData> {
        let before = self.writes.swap(0, Ordering::Relaxed);
        Ok(format!(
            "reset by {}: {before} writes forgotten",
            auth.subject()
        ))
    }
}

#[tool_handler]
impl ServerHandler for ScopedServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// An axum handler with the same attribute: `admin` or a `403` before the body runs.
#[requires_scopes("admin")]
async fn admin_stats(auth: Auth) -> String {
    format!("stats for {}", auth.subject())
}

/// The settings every example reads (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) addr: String,
    pub(crate) public_url: Option<String>,
    pub(crate) demo_user: String,
    pub(crate) demo_password: String,
}

impl Settings {
    /// From the environment; a missing password is generated.
    pub(crate) fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            addr: var("MCP_OAUTH_ADDR").unwrap_or_else(|| "127.0.0.1:8000".to_owned()),
            public_url: var("MCP_OAUTH_PUBLIC_URL"),
            demo_user: var("MCP_OAUTH_DEMO_USER").unwrap_or_else(|| "demo".to_owned()),
            demo_password: var("MCP_OAUTH_DEMO_PASSWORD").unwrap_or_else(random_password),
        }
    }
}

/// 18 random bytes, base64url.
fn random_password() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 18];
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system's random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The policy from the attributes: lazy authentication, so clients connect and list tools
/// without a token and sign in on the first protected call.
pub(crate) fn policy() -> AccessPolicy {
    AccessPolicy::new()
        .lazy()
        .tools(ScopedServer::tool_requirements().iter().copied())
}

/// The configuration shared by the MCP endpoint and the axum route: scopes and hierarchy.
fn config(public: &str, server: &AuthorizationServer) -> McpOAuthConfigBuilder {
    McpOAuthConfig::builder()
        .resource(format!("{public}{MCP_PATH}"))
        .issuer(public)
        .resource_name("mcp-oauth scoped tools")
        .scope("files:read", "Read your files")
        .scope("files:write", "Create and change your files")
        .scope("admin", "Administer the server")
        .scope_implies("admin", ["files:write"])
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .allow_origin("http://localhost:6274")
        .authorization_server(server)
}

/// The assembled server.
#[derive(Debug)]
pub(crate) struct App {
    /// `/mcp`, `/admin/stats` and the OAuth endpoints.
    pub(crate) router: Router,
    /// The MCP endpoint's configuration.
    pub(crate) config: McpOAuthConfig,
    /// The embedded authorization server.
    pub(crate) server: AuthorizationServer,
}

/// The app for a server bound at `bound`.
pub(crate) fn build(settings: &Settings, bound: SocketAddr) -> Result<App, BoxError> {
    let public = match &settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    };
    let server = AuthorizationServer::builder()
        .authenticator(
            StaticUsers::new().with_password(&settings.demo_user, &settings.demo_password),
        )
        .build()?;
    let mcp_config = config(&public, &server).policy(policy()).build()?;
    // Outside MCP there are no tools: every request to the axum routes needs a token.
    let api_config = config(&public, &server).build()?;

    let host = url::Url::parse(&public)?
        .host_str()
        .ok_or("the public URL has no host")?
        .to_owned();
    let mcp = StreamableHttpService::new(
        || Ok(ScopedServer::default()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts([
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            host,
        ]),
    );
    let api = Router::new()
        .route("/admin/stats", get(admin_stats))
        .layer(McpOAuthLayer::new(api_config));
    let router = Router::new()
        .route_service(MCP_PATH, McpOAuth::new(mcp, mcp_config.clone()))
        .merge(api)
        .merge(oauth_router(&mcp_config, &server));
    Ok(App {
        router,
        config: mcp_config,
        server,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::from_env();
    let listener = tokio::net::TcpListener::bind(&settings.addr)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", settings.addr))?;
    let bound = listener.local_addr()?;
    let app = build(&settings, bound)?;
    let url = app.config.resource();
    println!("mcp-oauth scoped_tools");
    println!("  MCP server URL: {url}");
    println!(
        "  sign in as {:?} with password {:?}",
        settings.demo_user, settings.demo_password
    );
    println!(
        "  tools: public_search (public), files_read (files:read), files_write (files:write), admin_reset (admin)"
    );
    // The retention sweep runs while this handle lives.
    let _upkeep = app.server.start_upkeep();
    println!("listening on http://{bound}");
    // TCP_NODELAY: rmcp answers over SSE in several writes; without it the second request on
    // a keep-alive connection waits ~40 ms for Nagle and delayed ACKs.
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
