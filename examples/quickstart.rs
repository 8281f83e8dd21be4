//! # `quickstart`: an MCP server with its own OAuth 2.1 authorization server
//!
//! Shows the whole crate in one server: an `rmcp` MCP server at `/mcp` behind the OAuth layer,
//! next to the embedded authorization server (`server.mount`), with clients, grants and signing keys
//! kept in a SQLite file. ChatGPT, Claude, the MCP Inspector and the SDK clients connect with
//! nothing but its URL. `public_search` is public, `files_read` needs `files:read` and
//! `files_write` needs `files:write` (which implies `files:read`): each requirement is written
//! once, on the tool. Authentication is lazy: clients sign in on the first protected call.
//!
//! ```text
//! cargo run --example quickstart --features rmcp,sqlite,macros
//! ```
//!
//! It prints the MCP URL, the demo user's credentials and what to enter in each client, then
//! `listening on http://ADDR`. `--help` lists the settings; each also reads an `MCP_OAUTH_*`
//! variable (`MCP_OAUTH_ADDR`, `MCP_OAUTH_PUBLIC_URL`, `MCP_OAUTH_DEMO_USER`, `MCP_OAUTH_STORE`…).
//!
//! Operations: `GET /health` answers readiness (store and signing keys) and the
//! `oauth_compliant` flag; with the feature `metrics`, `MCP_OAUTH_METRICS=1` (or `--metrics`)
//! serves Prometheus metrics at `/metrics`; with the feature `doctor`, `--doctor URL` checks a
//! server's discovery documents the way MCP clients read them and exits 0 when compliant.
//!
//! With the feature `postgres`, `MCP_OAUTH_STORE` may also be a `postgres://` URL: several
//! instances then share clients, grants and keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use clap::Parser;
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, StaticClient, UpkeepHandle};
use mcp_oauth::store::sql::SqliteStore;
use mcp_oauth::{Auth, McpOAuthConfig, public_tool, requires_scopes, scoped_tools};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The files a fresh server starts with.
const FILES: [(&str, &str); 2] = [
    ("welcome.txt", "Hello from the mcp-oauth quickstart!"),
    ("notes/todo.txt", "try files_write: it needs files:write"),
];

/// The quickstart's settings: each flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(about = "An MCP server with its own OAuth 2.1 authorization server")]
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
    /// The demo user's scope ceiling, space- or comma-separated (default: every scope).
    #[arg(long, env = "MCP_OAUTH_DEMO_SCOPES")]
    demo_scopes: Option<String>,
    /// Also pre-register a client with this id (for clients that cannot register).
    #[arg(long, env = "MCP_OAUTH_CLIENT_ID")]
    client_id: Option<String>,
    /// Make that client confidential with this secret (16 characters or more).
    #[arg(long, env = "MCP_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Its redirect URIs, comma-separated (loopback URIs match on any port).
    #[arg(
        long,
        env = "MCP_OAUTH_CLIENT_REDIRECT_URIS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1/callback,http://localhost/callback"
    )]
    client_redirect_uris: Vec<String>,
    /// A SQLite file for clients, grants and signing keys (created if missing), `memory`, or
    /// (with the feature `postgres`) a `postgres://` URL (`?options[search_path]=SCHEMA`
    /// picks a schema).
    #[arg(long, env = "MCP_OAUTH_STORE", default_value = "mcp-oauth.sqlite3")]
    store: String,
    /// INSECURE: approve every request as the demo user without login (automated tests only).
    #[arg(long, env = "MCP_OAUTH_INSECURE_AUTO_APPROVE", num_args = 0..=1, default_missing_value = "1",
          default_value = "0", value_parser = clap::builder::BoolishValueParser::new())]
    insecure_auto_approve: bool,
    /// Serve Prometheus metrics at `/metrics` (needs the feature `metrics`). Public on this
    /// listener: bind it to a private address or protect it at the proxy.
    #[arg(long, env = "MCP_OAUTH_METRICS", num_args = 0..=1, default_missing_value = "1",
          default_value = "0", value_parser = clap::builder::BoolishValueParser::new())]
    metrics: bool,
    /// Check the MCP server at this URL (e.g. https://mcp.example.com/mcp) the way MCP
    /// clients discover it, print the report and exit: 0 when compliant, 1 otherwise (needs
    /// the feature `doctor`).
    #[arg(long, value_name = "URL")]
    doctor: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SearchArgs {
    /// Words to look for in the file names.
    query: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct ReadArgs {
    /// The file name, e.g. `welcome.txt`.
    path: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct WriteArgs {
    /// The file name.
    path: String,
    /// The new content.
    content: String,
}

/// The MCP server: one public and two protected tools over an in-memory file set.
#[derive(Debug, Clone)]
struct Files(Arc<Mutex<BTreeMap<String, String>>>);

#[scoped_tools]
#[tool_router]
impl Files {
    #[public_tool]
    #[tool(description = "Search file names. Public: works without signing in.")]
    fn public_search(&self, Parameters(SearchArgs { query }): Parameters<SearchArgs>) -> String {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<&str> = files
            .keys()
            .map(String::as_str)
            .filter(|n| n.contains(&query))
            .collect();
        hits.join("\n")
    }

    #[requires_scopes("files:read")]
    #[tool(description = "Read a file (needs scope files:read).")]
    fn files_read(
        &self,
        auth: Auth,
        Parameters(ReadArgs { path }): Parameters<ReadArgs>,
    ) -> Result<String, ErrorData> {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let content = files.get(&path).map_or("no such file", String::as_str);
        Ok(format!("{path}: {content} (read by {})", caller(&auth)))
    }

    #[requires_scopes("files:write")]
    #[tool(description = "Create or replace a file (needs scope files:write).")]
    fn files_write(
        &self,
        auth: Auth,
        Parameters(WriteArgs { path, content }): Parameters<WriteArgs>,
    ) -> Result<String, ErrorData> {
        let len = content.len();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), content);
        Ok(format!(
            "{path}: wrote {len} bytes (written by {})",
            caller(&auth)
        ))
    }
}

#[tool_handler]
impl ServerHandler for Files {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// `"alice via client-123"`: who called.
fn caller(auth: &Auth) -> String {
    match auth.client_id() {
        Some(client) => format!("{} via {client}", auth.subject()),
        None => auth.subject().to_owned(),
    }
}

/// Everything the library is asked for: the authorization server, the layer's configuration,
/// and the app (`/mcp` behind the layer, plus the OAuth endpoints).
async fn app(
    args: &Args,
    public: &str,
    password: &str,
) -> Result<(Router, McpOAuthConfig, UpkeepHandle), BoxError> {
    let ceiling = args
        .demo_scopes
        .as_deref()
        .map(|s| s.replace(',', " ").parse::<ScopeSet>())
        .transpose()?;
    let mut server = AuthorizationServer::builder();
    server = if args.insecure_auto_approve {
        let auto = InsecureAutoApprove::new(&args.demo_user);
        server.authenticator(match ceiling {
            Some(c) => auto.with_allowed_scopes(c),
            None => auto,
        })
    } else {
        let users = StaticUsers::new().with_password(&args.demo_user, password);
        server.authenticator(match ceiling {
            Some(c) => users.with_user_scopes(&args.demo_user, c),
            None => users,
        })
    };
    // The Python SDK registers with its first challenge's scope and steps up later.
    server = server.registered_scope_is_ceiling(false);
    if let Some(id) = &args.client_id {
        let uris = args.client_redirect_uris.clone();
        let client = match &args.client_secret {
            Some(secret) => StaticClient::confidential(id, secret, uris),
            None => StaticClient::public(id, uris),
        };
        server = server.client(client.with_name("Pre-registered client"));
    }
    if args.store.starts_with("postgres://") || args.store.starts_with("postgresql://") {
        // Several instances may share one database (and its key ring).
        #[cfg(feature = "postgres")]
        {
            use mcp_oauth::store::sql::PostgresStore;
            server = server.store(PostgresStore::connect(&args.store).await?);
        }
        #[cfg(not(feature = "postgres"))]
        return Err("MCP_OAUTH_STORE: a PostgreSQL URL needs the feature `postgres`".into());
    } else if args.store != "memory" {
        // Clients, grants and the signing keys (kept in the same file by `build`) all
        // persist: a restart signs nobody out.
        server = server.store(SqliteStore::open(&args.store).await?);
    }
    let server = server.build().await?;
    let config = McpOAuthConfig::builder()
        .resource(format!("{public}/mcp"))
        .issuer(public)
        .resource_name("mcp-oauth quickstart")
        .scope("files:read", "Read your files")
        .scope("files:write", "Create and change your files")
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .policy(AccessPolicy::new().lazy().tools(Files::tool_requirements()))
        .authorization_server(&server)
        .build()?;

    let files = FILES.map(|(name, text)| (name.to_owned(), text.to_owned()));
    let files = Files(Arc::new(Mutex::new(BTreeMap::from(files))));
    let mcp = StreamableHttpService::new(
        move || Ok(files.clone()),
        Arc::new(LocalSessionManager::default()),
        // rmcp accepts only loopback `Host`s by default; this adds the public URL's host.
        config.rmcp_server_config(),
    );
    // `/mcp` behind the layer, the OAuth endpoints beside it (the Inspector's origin and
    // the resource's own are allowed by default).
    let app = server.mount(&config, mcp)?;
    // The retention sweep (expired grants, idle clients) runs while this handle lives.
    let upkeep = server.start_upkeep();
    Ok((app, config, upkeep))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if let Some(url) = &args.doctor {
        #[cfg(feature = "doctor")]
        {
            let code = mcp_oauth::doctor::run(url).await;
            std::process::exit(if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                1
            });
        }
        #[cfg(not(feature = "doctor"))]
        return Err(format!("--doctor {url}: build with --features doctor").into());
    }
    if args.client_id.is_none() && args.client_secret.is_some() {
        return Err("MCP_OAUTH_CLIENT_SECRET needs MCP_OAUTH_CLIENT_ID".into());
    }
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
        None if bound.ip().is_unspecified() => format!("http://127.0.0.1:{}", bound.port()),
        None => format!("http://{bound}"),
    };
    let password = args.demo_password.clone().unwrap_or_else(random_password);
    let (app, config, _upkeep) = app(&args, &public, &password).await?;
    #[cfg(feature = "metrics")]
    let app = if args.metrics {
        // Installed before the first request, so every count is seen.
        app.merge(mcp_oauth::metrics::router(
            mcp_oauth::metrics::install_prometheus()?,
        ))
    } else {
        app
    };
    #[cfg(not(feature = "metrics"))]
    if args.metrics {
        return Err("MCP_OAUTH_METRICS / --metrics: build with --features metrics".into());
    }

    let url = config.resource();
    let user = &args.demo_user;
    let sign_in = match args.insecure_auto_approve {
        true => {
            format!("!!! INSECURE AUTO-APPROVE as {user:?}: automated tests only, never expose it")
        }
        false => format!("sign in as user {user:?}, password {password:?}"),
    };
    // Never print a database URL: it may hold a password.
    let state = match &args.store {
        s if s.starts_with("postgres") => "PostgreSQL",
        s => s.as_str(),
    };
    println!(
        "mcp-oauth quickstart\n  MCP server URL: {url}\n  OAuth issuer: {public}\n  {sign_in}\n  \
         state: {state}\n  ChatGPT (Settings > Apps & Connectors > Create), Claude (Settings > \
         Connectors): add {url} with OAuth; they need https (a tunnel and MCP_OAUTH_PUBLIC_URL)\n  \
         MCP Inspector: npx @modelcontextprotocol/inspector, Streamable HTTP, URL {url}"
    );
    if args.metrics {
        println!("  metrics: {public}/metrics (public on this listener: keep it private)");
    }
    println!("listening on http://{bound}");
    // TCP_NODELAY on every connection, and each client's address for the rate limits.
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}

/// A random password for the demo user: 18 bytes from the OS generator, base64url.
fn random_password() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 18];
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system's random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
