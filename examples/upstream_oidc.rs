//! # `upstream_oidc`: an MCP server whose users sign in at the identity provider you have
//!
//! The MCP server at `/mcp` is behind the OAuth layer and the embedded authorization server
//! talks to MCP clients exactly as in the quickstart (discovery, registration, PKCE, consent,
//! tokens), but nobody has a password here: `/authorize` sends the browser to an upstream
//! OpenID Connect provider (Okta, Auth0, Keycloak, Stytch, WorkOS, Google, Microsoft Entra, any
//! issuer URL) or to GitHub, and admits the users the allow-lists let through. The upstream
//! tokens stay here; MCP clients get this server's tokens.
//!
//! ```text
//! MCP_OAUTH_UPSTREAM_ISSUER=https://dev-123.okta.com \
//! MCP_OAUTH_UPSTREAM_CLIENT_ID=... MCP_OAUTH_UPSTREAM_CLIENT_SECRET=... \
//! MCP_OAUTH_UPSTREAM_ALLOWED_DOMAINS=example.com \
//! cargo run --example upstream_oidc --features upstream-oidc,rmcp,macros
//! ```
//!
//! Register `{public URL}/upstream/callback` as the redirect URI at the provider (the example
//! prints it). `--help` lists the settings; each also reads an `MCP_OAUTH_*` variable
//! (`MCP_OAUTH_ADDR`, `MCP_OAUTH_PUBLIC_URL` as in the quickstart, plus
//! `MCP_OAUTH_UPSTREAM_PROVIDER` = `oidc` (default), `google`, `entra` or `github`,
//! `MCP_OAUTH_UPSTREAM_ISSUER`, `MCP_OAUTH_UPSTREAM_TENANT` (Entra),
//! `MCP_OAUTH_UPSTREAM_CLIENT_ID`, `MCP_OAUTH_UPSTREAM_CLIENT_SECRET`,
//! `MCP_OAUTH_UPSTREAM_ALLOWED_DOMAINS`, `MCP_OAUTH_UPSTREAM_ALLOWED_EMAILS`,
//! `MCP_OAUTH_UPSTREAM_ALLOWED_GROUPS`, `MCP_OAUTH_UPSTREAM_GITHUB_ORGS`,
//! `MCP_OAUTH_UPSTREAM_ALLOW_LOOPBACK` for a provider on this machine).

use clap::Parser;
use mcp_oauth::authn::UpstreamOidc;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::{Auth, McpOAuthConfig, requires_scopes, scoped_tools};
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use std::sync::Arc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The settings: each flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(about = "An MCP server whose users sign in at an upstream identity provider")]
struct Args {
    /// Socket address to bind (port 0 picks a free port).
    #[arg(long, env = "MCP_OAUTH_ADDR", default_value = "127.0.0.1:8000")]
    addr: String,
    /// The URL clients reach the server at, without path (default: http://<bound address>).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// `oidc` (any issuer URL), `google`, `entra` or `github`.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_PROVIDER", default_value = "oidc")]
    upstream_provider: String,
    /// The provider's issuer URL (`oidc`; overrides the preset's for `google`/`entra`).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ISSUER")]
    upstream_issuer: Option<String>,
    /// The Entra directory (tenant) id.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_TENANT")]
    upstream_tenant: Option<String>,
    /// This server's client id at the provider.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_CLIENT_ID")]
    upstream_client_id: String,
    /// Its client secret.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_CLIENT_SECRET", hide_env_values = true)]
    upstream_client_secret: Option<String>,
    /// Email domains allowed to sign in, comma-separated.
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_ALLOWED_DOMAINS",
        value_delimiter = ','
    )]
    upstream_allowed_domains: Vec<String>,
    /// Email addresses allowed to sign in, comma-separated.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ALLOWED_EMAILS", value_delimiter = ',')]
    upstream_allowed_emails: Vec<String>,
    /// Groups (the `groups` claim) allowed to sign in, comma-separated.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ALLOWED_GROUPS", value_delimiter = ',')]
    upstream_allowed_groups: Vec<String>,
    /// GitHub organizations allowed to sign in, comma-separated.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_GITHUB_ORGS", value_delimiter = ',')]
    upstream_github_orgs: Vec<String>,
    /// Allow a provider on a loopback address over plain http (development only).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ALLOW_LOOPBACK", num_args = 0..=1, default_missing_value = "1",
          default_value = "0", value_parser = clap::builder::BoolishValueParser::new())]
    upstream_allow_loopback: bool,
}

/// The MCP server: one tool that says who called.
#[derive(Debug, Clone)]
struct WhoAmI;

#[scoped_tools]
#[tool_router]
impl WhoAmI {
    #[requires_scopes("profile")]
    #[tool(description = "Who signed in (needs scope profile).")]
    fn whoami(&self, auth: Auth) -> Result<String, ErrorData> {
        let email = auth
            .claims()
            .get("email")
            .and_then(|e| e.as_str())
            .unwrap_or("no email");
        Ok(format!("{} ({email})", auth.subject()))
    }
}

#[tool_handler]
impl ServerHandler for WhoAmI {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The upstream login the settings describe.
async fn upstream(args: &Args) -> Result<UpstreamOidc, BoxError> {
    let id = args.upstream_client_id.clone();
    let secret = args.upstream_client_secret.clone();
    let need_secret = || {
        secret
            .clone()
            .ok_or("MCP_OAUTH_UPSTREAM_CLIENT_SECRET is required")
    };
    let mut b = match args.upstream_provider.as_str() {
        "oidc" => {
            let issuer = args
                .upstream_issuer
                .clone()
                .ok_or("MCP_OAUTH_UPSTREAM_ISSUER is required for provider oidc")?;
            UpstreamOidc::oidc(issuer, id, secret.clone())
        }
        "google" => UpstreamOidc::google(id, need_secret()?),
        "entra" => {
            let tenant = args
                .upstream_tenant
                .as_deref()
                .ok_or("MCP_OAUTH_UPSTREAM_TENANT is required for provider entra")?;
            UpstreamOidc::entra(tenant, id, need_secret()?)
        }
        "github" => UpstreamOidc::github(id, need_secret()?),
        other => return Err(format!("unknown MCP_OAUTH_UPSTREAM_PROVIDER {other:?}").into()),
    };
    if let (Some(issuer), "google" | "entra") =
        (&args.upstream_issuer, args.upstream_provider.as_str())
    {
        b = b.issuer(issuer);
    }
    let nonempty = |v: &[String]| v.iter().any(|s| !s.trim().is_empty());
    if nonempty(&args.upstream_allowed_domains) {
        b = b.allow_email_domains(args.upstream_allowed_domains.iter().map(|s| s.trim()));
    }
    if nonempty(&args.upstream_allowed_emails) {
        b = b.allow_emails(args.upstream_allowed_emails.iter().map(|s| s.trim()));
    }
    if nonempty(&args.upstream_allowed_groups) {
        b = b.allow_groups(args.upstream_allowed_groups.iter().map(|s| s.trim()));
    }
    if nonempty(&args.upstream_github_orgs) {
        b = b.allow_github_orgs(args.upstream_github_orgs.iter().map(|s| s.trim()));
    }
    if args.upstream_allow_loopback {
        b = b.allow_loopback();
    }
    Ok(b.build().await?)
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
        None if bound.ip().is_unspecified() => format!("http://127.0.0.1:{}", bound.port()),
        None => format!("http://{bound}"),
    };
    let upstream = upstream(&args).await?;
    let provider = upstream.provider_name().to_owned();
    let server = AuthorizationServer::builder()
        .authenticator(upstream)
        // Clients register with the scope of their first challenge and step up later.
        .registered_scope_is_ceiling(false)
        .build()
        .await?;
    let config = McpOAuthConfig::builder()
        .resource(format!("{public}/mcp"))
        .issuer(&public)
        .resource_name("mcp-oauth upstream login example")
        .scope("profile", "See who you are")
        .default_scopes(["profile"])
        .policy(
            AccessPolicy::new()
                .lazy()
                .tools(WhoAmI::tool_requirements()),
        )
        .authorization_server(&server)
        .build()?;
    let mcp = StreamableHttpService::new(
        || Ok(WhoAmI),
        Arc::new(LocalSessionManager::default()),
        config.rmcp_server_config(),
    );
    let app = server.mount(&config, mcp)?;
    let _upkeep = server.start_upkeep();
    println!(
        "mcp-oauth upstream_oidc\n  MCP server URL: {}\n  OAuth issuer: {public}\n  \
         sign-in at: {provider}\n  redirect URI to register there: {public}/upstream/callback",
        config.resource()
    );
    println!("listening on http://{bound}");
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}
