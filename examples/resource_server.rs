//! # `resource_server`: an rmcp MCP server protected by tokens from your identity provider
//!
//! Shows the layer alone, with an external authorization server: an rmcp MCP server at `/mcp`
//! behind `McpOAuth`, plus the RFC 9728 metadata clients read to find where to sign in.
//! `public_echo` is public, `whoami` needs any valid token, `secret_read` needs scope `read`.
//! Tokens are checked by a chain: API keys (optional), JWTs through the provider's JWKS, then
//! opaque tokens through RFC 7662 introspection (optional).
//!
//! ```text
//! MCP_OAUTH_ISSUER=https://your-tenant.example-idp.com \
//!   cargo run --example resource_server --features remote-jwks,introspection,rmcp
//! ```
//!
//! It prints what to enter in an MCP client, then `listening on http://ADDR`. Settings
//! (`--help`; each flag also reads an environment variable): `MCP_OAUTH_ADDR` (default
//! `127.0.0.1:8000`), `MCP_OAUTH_PUBLIC_URL`, `MCP_OAUTH_ISSUER`, `MCP_OAUTH_JWKS_URI`,
//! `MCP_OAUTH_INTROSPECTION_URL` / `_CLIENT_ID` / `_CLIENT_SECRET`, `MCP_OAUTH_API_KEYS`
//! (`KEY:SUBJECT:SCOPES,…`), `MCP_OAUTH_LAZY`, `MCP_OAUTH_ALLOW_ORIGIN` and
//! `MCP_OAUTH_ALLOW_LOCAL_IDP` (`1`: the identity provider may be on this machine or a
//! private network; refused by default, see `mcp_oauth::outbound`).
//!
//! At the identity provider, register `<public url>/mcp` as the API / audience / resource
//! indicator (tokens carry it in `aud`, RFC 8707) and declare the scope `read`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Router;
use clap::Parser;
use clap::builder::BoolishValueParser;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::verify::{ApiKeyVerifier, ChainVerifier, IntrospectionVerifier, RemoteJwksVerifier};
use mcp_oauth::{Auth, McpOAuthConfig};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The resource server's settings: each flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(about = "An MCP server protected by tokens from your identity provider")]
struct Args {
    /// Socket address to bind (port 0 picks a free port).
    #[arg(long, env = "MCP_OAUTH_ADDR", default_value = "127.0.0.1:8000")]
    addr: String,
    /// The URL clients reach the server at, without path (default: http://<bound address>).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// The identity provider's issuer (required unless only API keys are configured).
    #[arg(long, env = "MCP_OAUTH_ISSUER")]
    issuer: Option<String>,
    /// The provider's JWKS URL (skips OIDC discovery).
    #[arg(long, env = "MCP_OAUTH_JWKS_URI", requires = "issuer")]
    jwks_uri: Option<String>,
    /// RFC 7662 introspection endpoint for opaque tokens.
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_URL", requires_all = ["issuer", "introspection_client_id", "introspection_client_secret"])]
    introspection_url: Option<String>,
    /// Client id at the introspection endpoint.
    #[arg(long, env = "MCP_OAUTH_INTROSPECTION_CLIENT_ID")]
    introspection_client_id: Option<String>,
    /// Its secret.
    #[arg(
        long,
        env = "MCP_OAUTH_INTROSPECTION_CLIENT_SECRET",
        hide_env_values = true
    )]
    introspection_client_secret: Option<String>,
    /// API keys, comma-separated `KEY:SUBJECT:SCOPES` (`sha256hex=<64 hex>` as KEY: its hash).
    #[arg(
        long,
        env = "MCP_OAUTH_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Lazy authentication: connecting and listing tools need no token.
    #[arg(long, env = "MCP_OAUTH_LAZY", num_args = 0..=1, default_missing_value = "1", default_value = "0", value_parser = BoolishValueParser::new())]
    lazy: bool,
    /// Browser origins allowed to call the endpoint (comma-separated or repeated).
    #[arg(
        long = "allow-origin",
        env = "MCP_OAUTH_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allow_origins: Vec<String>,
    /// The identity provider may be on this machine or a private network (plain http on
    /// loopback included); refused by default as a server-side request forgery guard.
    #[arg(long, env = "MCP_OAUTH_ALLOW_LOCAL_IDP", num_args = 0..=1, default_missing_value = "1", default_value = "0", value_parser = BoolishValueParser::new())]
    allow_local_idp: bool,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

/// The MCP server: one public and two protected tools.
#[derive(Debug, Clone, Default)]
struct ExampleServer;

#[tool_router]
impl ExampleServer {
    #[tool(description = "Echo the text back. Public: works without signing in.")]
    fn public_echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Tell who you are signed in as (needs any valid token).")]
    fn whoami(&self, auth: Auth) -> String {
        auth.subject().to_owned()
    }

    #[tool(description = "Read the secret (needs scope `read`).")]
    fn secret_read(&self, auth: Auth) -> String {
        format!("the secret is 42 (read by {})", auth.subject())
    }
}

#[tool_handler]
impl ServerHandler for ExampleServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The verifier chain: API keys (local, first, so a key never reaches the provider), then JWTs
/// through the provider's JWKS, then opaque tokens through introspection (each when set).
async fn verifier(args: &Args, resource: &str) -> Result<ChainVerifier, BoxError> {
    let mut chain = ChainVerifier::new();
    if !args.api_keys.is_empty() {
        let mut keys = ApiKeyVerifier::new();
        for entry in args
            .api_keys
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let mut parts = entry.splitn(3, ':');
            let (key, subject, scopes) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            // Never echo the key itself in an error.
            let bad = |why: String| {
                format!("MCP_OAUTH_API_KEYS: the entry of subject {subject:?}: {why}")
            };
            if key.is_empty() || subject.is_empty() {
                return Err(bad("each entry is KEY:SUBJECT:SCOPES".to_owned()).into());
            }
            let scopes = ScopeSet::parse(scopes).map_err(|e| bad(e.to_string()))?;
            keys = match key.strip_prefix("sha256hex=") {
                Some(hex) => keys
                    .with_key_hash(hex, subject, scopes)
                    .map_err(|e| bad(e.to_string()))?,
                None => keys.with_key(key, subject, scopes),
            };
        }
        chain = chain.with(keys);
    }
    if let Some(issuer) = &args.issuer {
        let mut builder = RemoteJwksVerifier::builder(issuer).audience(resource);
        if args.allow_local_idp {
            builder = builder.allow_loopback().allow_private_networks();
        }
        chain = chain.with(match &args.jwks_uri {
            Some(uri) => builder.jwks_uri(uri).build()?,
            None => builder.discover().await?,
        });
    }
    if let (Some(endpoint), Some(issuer), Some(id), Some(secret)) = (
        &args.introspection_url,
        &args.issuer,
        &args.introspection_client_id,
        &args.introspection_client_secret,
    ) {
        let mut introspection = IntrospectionVerifier::builder(endpoint)
            .client_credentials(id, secret)
            .issuer(issuer)
            .audience(resource);
        if args.allow_local_idp {
            introspection = introspection.allow_loopback().allow_private_networks();
        }
        let introspection = introspection.build()?;
        chain = chain.with(introspection);
    }
    Ok(chain)
}

/// Everything the library is asked for: `/mcp` behind the layer, plus the RFC 9728 metadata.
async fn app(args: &Args, public: &str) -> Result<(Router, McpOAuthConfig), BoxError> {
    let resource = format!("{public}/mcp");
    let mut policy = AccessPolicy::new()
        .public_tool("public_echo")
        .tool_scopes("secret_read", ["read"]);
    if args.lazy {
        policy = policy.lazy();
    }
    // With API keys only there is no authorization server; the metadata then names this one.
    let mut config = McpOAuthConfig::builder()
        .resource(&resource)
        .issuer(args.issuer.as_deref().unwrap_or(public))
        .resource_name("mcp-oauth example")
        .scope("read", "Read the secret")
        .policy(policy)
        .verifier(verifier(args, &resource).await?);
    for origin in &args.allow_origins {
        config = config.allow_origin(origin);
    }
    let config = config.build()?;
    let mcp = StreamableHttpService::new(
        || Ok(ExampleServer),
        Arc::new(LocalSessionManager::default()),
        // rmcp accepts only loopback `Host`s by default; this adds the public URL's host.
        config.rmcp_server_config(),
    );
    // `/mcp` behind the layer, and the metadata that points clients at the issuer.
    let app = mcp_oauth::mount(&config, mcp)?;
    Ok((app, config))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.issuer.is_none() && args.api_keys.is_empty() {
        return Err(
            "set MCP_OAUTH_ISSUER (your OIDC provider's issuer) or MCP_OAUTH_API_KEYS".into(),
        );
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
        None if bound.ip().is_unspecified() => {
            format!("http://{}:{}", Ipv4Addr::LOCALHOST, bound.port())
        }
        None => format!("http://{bound}"),
    };
    let (app, config) = app(&args, &public).await?;

    println!("mcp-oauth example resource server");
    println!(
        "  MCP server URL (enter this in the client): {}",
        config.resource()
    );
    println!(
        "  protected-resource metadata: {}",
        config.resource_metadata_url()
    );
    match &args.issuer {
        Some(issuer) => println!(
            "  authorization server: {issuer}; register the resource {:?} there, scope `read`",
            config.resource()
        ),
        None => println!("  no issuer: OAuth sign-in is unavailable, only API keys work"),
    }
    println!("listening on http://{bound}");
    // TCP_NODELAY on every connection, and each client's address.
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}
