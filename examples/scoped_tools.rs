//! # `scoped_tools`: tools with different scopes, one attribute each
//!
//! Shows per-tool scopes: an rmcp MCP server whose four tools each need something different,
//! declared once on the tool: `public_search` (`#[public_tool]`: anyone, without signing in),
//! `files_read` (`#[requires_scopes("files:read")]`), `files_write` (`files:write`) and
//! `admin_reset` (`admin`), with the hierarchy `admin` ⊇ `files:write` ⊇ `files:read`
//! (`scope_implies`). `#[scoped_tools]` collects the attributes into the layer's policy, so:
//! - a call it must refuse is answered **before rmcp runs**: no token → `401` naming the tool's
//!   scope; too little scope → `403 insufficient_scope` listing what to re-request (clients
//!   step up); ChatGPT (by its `User-Agent`) gets a `200` tool error carrying
//!   `_meta["mcp/www_authenticate"]` instead, which opens its sign-in;
//! - `tools/list` gives every tool its `securitySchemes`;
//! - `#[requires_scopes]` checks again inside the tool, and works on a plain axum handler too
//!   (`GET /admin/stats` needs `admin`).
//!
//! ```text
//! cargo run --example scoped_tools --features rmcp,macros
//! ```
//!
//! Configured like the quickstart (`--help`): `MCP_OAUTH_ADDR` (default `127.0.0.1:8000`),
//! `MCP_OAUTH_PUBLIC_URL`, `MCP_OAUTH_DEMO_USER` (default `demo`), `MCP_OAUTH_DEMO_PASSWORD`
//! (default: random, printed); state in memory. It prints `listening on http://ADDR`; connect
//! the MCP Inspector (`npx @modelcontextprotocol/inspector`, Streamable HTTP) to `/mcp`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use clap::Parser;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::{AuthorizationServer, UpkeepHandle};
use mcp_oauth::{
    Auth, McpOAuthConfig, McpOAuthConfigBuilder, McpOAuthLayer, public_tool, requires_scopes,
    scoped_tools,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The settings every example reads: each flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(about = "Tools with different scopes, one attribute each")]
struct Args {
    /// Socket address to bind (port 0 picks a free port).
    #[arg(long, env = "MCP_OAUTH_ADDR", default_value = "127.0.0.1:8000")]
    addr: String,
    /// The URL clients reach the server at, without path (default: http://<bound address>).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// The demo user's name.
    #[arg(long, env = "MCP_OAUTH_DEMO_USER", default_value = "demo")]
    demo_user: String,
    /// The demo user's password (default: a random one, printed).
    #[arg(long, env = "MCP_OAUTH_DEMO_PASSWORD", hide_env_values = true)]
    demo_password: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct NameArgs {
    /// A file name (or part of one, for the search).
    name: String,
}

/// The server's state: a counter of writes, shared by every session.
#[derive(Debug, Clone, Default)]
struct ScopedServer {
    writes: Arc<AtomicU64>,
}

#[scoped_tools]
#[tool_router]
impl ScopedServer {
    #[public_tool]
    #[tool(description = "Search the public catalogue. Works without signing in.")]
    fn public_search(&self, Parameters(NameArgs { name }): Parameters<NameArgs>) -> String {
        format!("public results for {name:?}")
    }

    #[requires_scopes("files:read")]
    #[tool(description = "Read a file (needs files:read).")]
    fn files_read(
        &self,
        auth: Auth,
        Parameters(NameArgs { name }): Parameters<NameArgs>,
    ) -> Result<String, ErrorData> {
        Ok(format!("{name}: read by {}", auth.subject()))
    }

    #[requires_scopes("files:write")]
    #[tool(description = "Write a file (needs files:write).")]
    fn files_write(&self, auth: Auth) -> Result<String, ErrorData> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(format!("write #{n} by {}", auth.subject()))
    }

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

/// The configuration shared by the MCP endpoint and the axum route: scopes and hierarchy.
fn config(public: &str, server: &AuthorizationServer) -> McpOAuthConfigBuilder {
    McpOAuthConfig::builder()
        .resource(format!("{public}/mcp"))
        .issuer(public)
        .resource_name("mcp-oauth scoped tools")
        .scope("files:read", "Read your files")
        .scope("files:write", "Create and change your files")
        .scope("admin", "Administer the server")
        .scope_implies("admin", ["files:write"])
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .authorization_server(server)
}

/// Everything the library is asked for: `/mcp`, `/admin/stats` and the OAuth endpoints.
async fn app(public: &str, user: &str, password: &str) -> Result<(Router, UpkeepHandle), BoxError> {
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new().with_password(user, password))
        .build()
        .await?;
    // Lazy authentication: clients connect and list tools without a token.
    let policy = AccessPolicy::new()
        .lazy()
        .tools(ScopedServer::tool_requirements());
    let mcp_config = config(public, &server).policy(policy).build()?;
    // Outside MCP there are no tools: every request to the axum routes needs a token.
    let api_config = config(public, &server).build()?;
    let mcp = StreamableHttpService::new(
        || Ok(ScopedServer::default()),
        Arc::new(LocalSessionManager::default()),
        // rmcp accepts only loopback `Host`s by default; this adds the public URL's host.
        mcp_config.rmcp_server_config(),
    );
    // An axum route beside the MCP endpoint, behind its own layer.
    let api = Router::new()
        .route("/admin/stats", get(admin_stats))
        .layer(McpOAuthLayer::new(api_config));
    let app = server.mount(&mcp_config, mcp)?.merge(api);
    // The retention sweep (expired grants, idle clients) runs while this handle lives.
    Ok((app, server.start_upkeep()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let bound = listener.local_addr()?;
    let public = match &args.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    };
    let password = args.demo_password.clone().unwrap_or_else(random_password);
    let (app, _upkeep) = app(&public, &args.demo_user, &password).await?;

    println!("mcp-oauth scoped_tools\n  MCP server URL: {public}/mcp");
    println!(
        "  sign in as {:?} with password {password:?}",
        args.demo_user
    );
    println!("listening on http://{bound}");
    // TCP_NODELAY on every connection, and each client's address for the rate limits.
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}

/// 18 random bytes from the OS generator, base64url.
fn random_password() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 18];
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system's random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
