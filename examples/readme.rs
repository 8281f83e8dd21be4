//! The README's first program: an rmcp MCP server whose tool needs a signed-in user, with
//! its own OAuth 2.1 authorization server and its state in a SQLite file — ready for
//! ChatGPT, Claude, VS Code, Cursor and the MCP Inspector. (README.md shows this file
//! whole; `tests/readme.rs` keeps the two equal.)
//!
//! ```text
//! echo -n 'a long password' | cargo run --example readme --features rmcp,sqlite -- hash-password
//! MCP_OAUTH_DEMO_PASSWORD_HASH='$argon2id$…' cargo run --example readme --features rmcp,sqlite
//! ```
use std::env::var;

use mcp_oauth::authn::StaticUsers;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::store::sql::SqliteStore;
use mcp_oauth::{Auth, McpOAuthConfig, requires_scopes, scoped_tools};
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};

/// The MCP server: one tool, for users who granted `notes:read`.
#[derive(Clone)]
struct Notes;

#[scoped_tools] // collects each tool's requirement for the layer: `Notes::tool_requirements()`
#[tool_router]
impl Notes {
    #[requires_scopes("notes:read")]
    #[tool(description = "Read your notes (needs notes:read).")]
    fn read_notes(&self, auth: Auth) -> Result<String, ErrorData> {
        Ok(format!("{}'s notes: water the plants", auth.subject()))
    }
}

#[tool_handler]
impl ServerHandler for Notes {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // `… -- hash-password`: reads a password on stdin, prints its Argon2id hash.
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
        println!("{}", StaticUsers::hash_password(password));
        return Ok(());
    }
    // mcp-oauth logs through `tracing`: without a subscriber its warnings go nowhere.
    tracing_subscriber::fmt()
        .with_env_filter(var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();

    let addr = var("MCP_OAUTH_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The URL clients reach the server at: behind a tunnel or a proxy, its https URL.
    let local = format!("http://{}", listener.local_addr()?);
    let public_url = var("MCP_OAUTH_PUBLIC_URL").unwrap_or(local);
    let user = var("MCP_OAUTH_DEMO_USER").unwrap_or_else(|_| "demo".into());
    let users = match (
        var("MCP_OAUTH_DEMO_PASSWORD_HASH"),
        var("MCP_OAUTH_DEMO_PASSWORD"),
    ) {
        (Ok(hash), _) => StaticUsers::new().try_with_user(&user, &hash)?,
        (_, Ok(password)) => StaticUsers::new().with_password(&user, &password), // for trying out
        _ => return Err("set MCP_OAUTH_DEMO_PASSWORD_HASH (see `hash-password`)".into()),
    };

    // Clients, grants and the signing keys live in one SQLite file: restarts sign no one out.
    let store =
        SqliteStore::open(var("MCP_OAUTH_STORE").unwrap_or_else(|_| "notes.sqlite3".into()))
            .await?;
    let server = AuthorizationServer::builder()
        .authenticator(users)
        .store(store)
        .build()
        .await?;
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{public_url}/mcp")) // exactly what users paste into their client
        .scope("notes:read", "Read your notes")
        .policy(AccessPolicy::new().lazy().tools(Notes::tool_requirements()))
        .authorization_server(&server) // the issuer is the resource's origin
        .build()?;

    // rmcp's service, accepting the public host name (rmcp alone accepts only loopback ones).
    let mcp = StreamableHttpService::new(
        || Ok(Notes),
        LocalSessionManager::default().into(),
        cfg.rmcp_server_config(),
    );
    // `/mcp` behind the OAuth layer; discovery, registration, sign-in and tokens beside it.
    let app = server.mount(&cfg, mcp)?;
    let _upkeep = server.start_upkeep(); // sweeps expired grants while it lives

    println!("MCP server URL: {public_url}/mcp (sign in as {user:?})");
    println!("listening on http://{}", listener.local_addr()?);
    // TCP_NODELAY on every connection, and each client's address for the rate limits.
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}
