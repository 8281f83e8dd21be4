//! # `resource_server`: an rmcp MCP server protected by tokens from your identity provider
//!
//! A streamable-HTTP MCP server (the official `rmcp` SDK) at `/mcp` with three tools, behind
//! `McpOAuthLayer` (here as the `McpOAuth` service it makes), plus the RFC 9728 protected-resource metadata that MCP clients (Claude,
//! ChatGPT, VS Code, Cursor, the Inspector, the SDKs) read to find where to sign in:
//!
//! | tool | needs |
//! |---|---|
//! | `public_echo` | nothing: public even without a token |
//! | `whoami` | any valid token; answers the caller's subject (through the `Auth` parameter) |
//! | `secret_read` | a token with scope `read` (else `403 insufficient_scope`, which clients step up on) |
//!
//! Tokens are checked by a chain: (optionally) static API keys, then JWTs from the external OIDC
//! provider through its JWKS, then (optionally) opaque tokens through RFC 7662 introspection.
//!
//! ## Run it
//!
//! ```text
//! MCP_OAUTH_ISSUER=https://your-tenant.example-idp.com \
//!   cargo run --example resource_server --features remote-jwks,introspection,rmcp
//! ```
//!
//! On start it prints what to enter in an MCP client and what to register at the identity
//! provider, then `listening on http://ADDR`.
//!
//! ## Configuration
//!
//! Every setting is an environment variable or the matching `--flag value` argument (the
//! argument wins):
//!
//! | variable | flag | meaning |
//! |---|---|---|
//! | `MCP_OAUTH_ADDR` | `--addr` | socket address to bind (default `127.0.0.1:8000`; port `0` picks a free port) |
//! | `MCP_OAUTH_PUBLIC_URL` | `--public-url` | the URL clients reach the server at, without path (default `http://<bound addr>`); the MCP endpoint and the OAuth *resource* is `<public url>/mcp` |
//! | `MCP_OAUTH_ISSUER` | `--issuer` | the external OIDC provider's issuer, byte for byte as its metadata states it (required unless only API keys are configured) |
//! | `MCP_OAUTH_JWKS_URI` | `--jwks-uri` | the provider's JWKS URL (optional: skips OIDC discovery) |
//! | `MCP_OAUTH_INTROSPECTION_URL` | `--introspection-url` | RFC 7662 endpoint for opaque tokens (optional) |
//! | `MCP_OAUTH_INTROSPECTION_CLIENT_ID` | `--introspection-client-id` | client id for the introspection endpoint |
//! | `MCP_OAUTH_INTROSPECTION_CLIENT_SECRET` | `--introspection-client-secret` | its secret |
//! | `MCP_OAUTH_API_KEYS` | `--api-keys` | comma-separated `KEY:SUBJECT:SCOPES` (scopes space-separated, may be empty); write `sha256hex=<64 hex>` as `KEY` to give the key's SHA-256 instead of the key |
//! | `MCP_OAUTH_LAZY` | `--lazy` | `1`: lazy authentication, so `initialize`, `tools/list` and `public_echo` work without a token and sign-in happens on the first protected call |
//! | `MCP_OAUTH_ALLOW_ORIGIN` | `--allow-origin` | extra browser origins allowed to call the endpoint (comma-separated, e.g. `http://localhost:6274` for the MCP Inspector) |
//! | `MCP_OAUTH_ALLOW_LOCAL_IDP` | `--allow-local-idp` | `1`: the identity provider may be on this machine or a private network (plain `http` on loopback included); refused by default, see `mcp_oauth::outbound` |
//!
//! `RUST_LOG` sets the log filter (default `info`); logs go to stderr.
//!
//! With API keys only (no issuer), the metadata names the server itself as authorization
//! server: OAuth clients cannot sign in, scripts send `Authorization: Bearer KEY`.
//!
//! ## At the identity provider
//!
//! Register the resource URL `<public url>/mcp` as the API / audience / resource indicator, so
//! access tokens carry it in `aud` (RFC 8707), declare the scope `read`, and let MCP clients
//! register (dynamic client registration or client ID metadata documents) or pre-register
//! them with their redirect URIs.

use axum::serve::ListenerExt as _;
use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::verify::{ApiKeyVerifier, ChainVerifier, IntrospectionVerifier, RemoteJwksVerifier};
use mcp_oauth::{Auth, McpOAuth, McpOAuthConfig, protected_resource_router};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};

/// Errors of this example.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// The MCP path under the public URL.
pub(crate) const MCP_PATH: &str = "/mcp";

/// One configured API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiKeySpec {
    /// The key itself, or its SHA-256 when `hashed`.
    pub(crate) key: String,
    /// Whether `key` is the hex SHA-256 digest (`sha256hex=` prefix).
    pub(crate) hashed: bool,
    /// The subject the key authenticates as.
    pub(crate) subject: String,
    /// Space-separated scopes.
    pub(crate) scopes: String,
}

/// Everything the server is configured with (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) addr: String,
    pub(crate) public_url: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) introspection_url: Option<String>,
    pub(crate) introspection_client_id: Option<String>,
    pub(crate) introspection_client_secret: Option<String>,
    pub(crate) api_keys: Vec<ApiKeySpec>,
    pub(crate) lazy: bool,
    pub(crate) allow_origins: Vec<String>,
    pub(crate) allow_local_idp: bool,
}

const USAGE: &str = "usage: resource_server [--addr ADDR] [--public-url URL] [--issuer ISSUER] \
[--jwks-uri URL] [--introspection-url URL --introspection-client-id ID --introspection-client-secret SECRET] \
[--api-keys KEY:SUBJECT:SCOPES,...] [--lazy 1] [--allow-origin ORIGIN,...] [--allow-local-idp 1]
(each flag also reads MCP_OAUTH_<FLAG>, e.g. MCP_OAUTH_PUBLIC_URL; see the example's docs)";

/// `(flag, environment variable)` of every setting.
const SETTINGS: &[(&str, &str)] = &[
    ("addr", "MCP_OAUTH_ADDR"),
    ("public-url", "MCP_OAUTH_PUBLIC_URL"),
    ("issuer", "MCP_OAUTH_ISSUER"),
    ("jwks-uri", "MCP_OAUTH_JWKS_URI"),
    ("introspection-url", "MCP_OAUTH_INTROSPECTION_URL"),
    (
        "introspection-client-id",
        "MCP_OAUTH_INTROSPECTION_CLIENT_ID",
    ),
    (
        "introspection-client-secret",
        "MCP_OAUTH_INTROSPECTION_CLIENT_SECRET",
    ),
    ("api-keys", "MCP_OAUTH_API_KEYS"),
    ("lazy", "MCP_OAUTH_LAZY"),
    ("allow-origin", "MCP_OAUTH_ALLOW_ORIGIN"),
    ("allow-local-idp", "MCP_OAUTH_ALLOW_LOCAL_IDP"),
];

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{name}: expected 1 or 0, got {other:?}")),
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Parses `KEY:SUBJECT:SCOPES,...`.
pub(crate) fn parse_api_keys(value: &str) -> Result<Vec<ApiKeySpec>, String> {
    split_list(value)
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let key = parts.next().unwrap_or_default();
            let subject = parts.next().unwrap_or_default();
            let scopes = parts.next().unwrap_or_default();
            // Never echo the key itself in an error.
            if key.is_empty() || subject.is_empty() {
                return Err(format!(
                    "MCP_OAUTH_API_KEYS: each entry is KEY:SUBJECT:SCOPES; an entry with subject {subject:?} is incomplete"
                ));
            }
            let (key, hashed) = match key.strip_prefix("sha256hex=") {
                Some(hex) => (hex.to_owned(), true),
                None => (key.to_owned(), false),
            };
            Ok(ApiKeySpec {
                key,
                hashed,
                subject: subject.to_owned(),
                scopes: scopes.to_owned(),
            })
        })
        .collect()
}

impl Settings {
    /// Reads the process environment and command line.
    pub(crate) fn from_env_and_args() -> Result<Self, String> {
        Self::parse(|name| std::env::var(name).ok(), std::env::args().skip(1))
    }

    /// Reads settings from `env` (an environment lookup), overridden by `args` (`--flag value`
    /// or `--flag=value`).
    pub(crate) fn parse(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let mut values: Vec<(&str, String)> = SETTINGS
            .iter()
            .filter_map(|(flag, var)| env(var).map(|v| (*flag, v)))
            .collect();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(USAGE.to_owned());
            }
            let Some(stripped) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
            };
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (stripped, None),
            };
            let Some((flag, _)) = SETTINGS.iter().find(|(f, _)| *f == name) else {
                return Err(format!("unknown flag --{name}\n{USAGE}"));
            };
            let value = match inline {
                Some(v) => v,
                // `--lazy` alone turns lazy authentication on.
                None if *flag == "lazy" => match args.peek() {
                    Some(next) if parse_bool("--lazy", next).is_ok() => {
                        args.next().unwrap_or_default()
                    }
                    _ => "1".to_owned(),
                },
                None => args
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?,
            };
            // Repeated `--allow-origin` flags add up; other flags replace the environment.
            if *flag == "allow-origin"
                && let Some((_, v)) = values.iter_mut().find(|(f, _)| *f == "allow-origin")
            {
                v.push(',');
                v.push_str(&value);
                continue;
            }
            values.retain(|(f, _)| f != flag);
            values.push((flag, value));
        }

        let mut s = Self {
            addr: "127.0.0.1:8000".to_owned(),
            ..Self::default()
        };
        let non_empty = |v: String| (!v.trim().is_empty()).then(|| v.trim().to_owned());
        for (flag, value) in values {
            match flag {
                "addr" => s.addr = value.trim().to_owned(),
                "public-url" => s.public_url = non_empty(value),
                "issuer" => s.issuer = non_empty(value),
                "jwks-uri" => s.jwks_uri = non_empty(value),
                "introspection-url" => s.introspection_url = non_empty(value),
                "introspection-client-id" => s.introspection_client_id = non_empty(value),
                "introspection-client-secret" => s.introspection_client_secret = non_empty(value),
                "api-keys" => s.api_keys = parse_api_keys(&value)?,
                "lazy" => s.lazy = parse_bool("MCP_OAUTH_LAZY", &value)?,
                "allow-origin" => s.allow_origins = split_list(&value).map(str::to_owned).collect(),
                "allow-local-idp" => {
                    s.allow_local_idp = parse_bool("MCP_OAUTH_ALLOW_LOCAL_IDP", &value)?;
                }
                _ => unreachable!("every flag in SETTINGS is handled"),
            }
        }
        Ok(s)
    }

    /// The public base URL, given the address actually bound (for port `0`).
    pub(crate) fn public_base(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = bound;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        }
    }
}

/// Arguments of `public_echo`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct EchoArgs {
    /// The text to send back.
    pub(crate) text: String,
}

/// The MCP server: one public and two protected tools.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExampleServer;

#[tool_router]
impl ExampleServer {
    /// Public: answers its input, with or without a token.
    #[tool(description = "Echo the text back. Public: works without signing in.")]
    fn public_echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Any signed-in caller: who the token says they are.
    #[tool(description = "Tell who you are signed in as (needs any valid token).")]
    fn whoami(&self, auth: Auth) -> String {
        auth.subject().to_owned()
    }

    /// Needs scope `read` (enforced by the layer's policy before the tool runs).
    #[tool(description = "Read the secret (needs scope `read`).")]
    fn secret_read(&self, auth: Auth) -> String {
        format!("the secret is 42 (read by {})", auth.subject())
    }
}

#[tool_handler]
impl ServerHandler for ExampleServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "mcp-oauth example: public_echo is public, whoami needs a token, secret_read needs scope `read`.",
        )
    }
}

/// The host part of a URL (`[::1]` for IPv6), for rmcp's `Host` allow-list.
pub(crate) fn host_of(url: &str) -> Result<String, BoxError> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid public URL {url:?}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("public URL {url:?} has no host"))?;
    Ok(host.to_owned())
}

/// The rmcp service, accepting `Host: <host>` (rmcp's own DNS-rebinding check allows only
/// loopback hosts unless told otherwise).
pub(crate) fn mcp_service(host: &str) -> StreamableHttpService<ExampleServer, LocalSessionManager> {
    StreamableHttpService::new(
        || Ok(ExampleServer),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts([host]),
    )
}

/// The verifier chain: API keys (local, checked first so a key is never sent to the identity
/// provider's introspection endpoint), then JWTs through the provider's JWKS, then opaque
/// tokens through introspection (each when configured).
async fn verifier(
    settings: &Settings,
    issuer: Option<&str>,
    resource: &str,
) -> Result<ChainVerifier, BoxError> {
    let mut chain = ChainVerifier::new();
    if !settings.api_keys.is_empty() {
        let mut keys = ApiKeyVerifier::new();
        for k in &settings.api_keys {
            let scopes = ScopeSet::parse(&k.scopes)
                .map_err(|e| format!("API key of {:?}: {e}", k.subject))?;
            keys = if k.hashed {
                keys.with_key_hash(&k.key, k.subject.clone(), scopes)
                    .map_err(|e| format!("API key of {:?}: {e}", k.subject))?
            } else {
                keys.with_key(&k.key, k.subject.clone(), scopes)
            };
        }
        chain = chain.with(keys);
    }
    if let Some(issuer) = issuer {
        let mut builder = RemoteJwksVerifier::builder(issuer).audience(resource);
        if settings.allow_local_idp {
            builder = builder.allow_loopback().allow_private_networks();
        }
        let jwks = match &settings.jwks_uri {
            Some(uri) => builder.jwks_uri(uri).build()?,
            None => builder.discover().await?,
        };
        chain = chain.with(jwks);
    }
    if let Some(endpoint) = &settings.introspection_url {
        let issuer = issuer.ok_or("MCP_OAUTH_INTROSPECTION_URL needs MCP_OAUTH_ISSUER")?;
        let (Some(id), Some(secret)) = (
            &settings.introspection_client_id,
            &settings.introspection_client_secret,
        ) else {
            return Err("MCP_OAUTH_INTROSPECTION_URL needs MCP_OAUTH_INTROSPECTION_CLIENT_ID and MCP_OAUTH_INTROSPECTION_CLIENT_SECRET".into());
        };
        let mut builder = IntrospectionVerifier::builder(endpoint)
            .client_credentials(id, secret)
            .issuer(issuer)
            .audience(resource);
        if settings.allow_local_idp {
            builder = builder.allow_loopback().allow_private_networks();
        }
        let introspection = builder.build()?;
        chain = chain.with(introspection);
    }
    Ok(chain)
}

/// The assembled server.
#[derive(Debug)]
pub(crate) struct Server {
    /// The axum app: `/mcp` behind the layer, plus the metadata routes.
    pub(crate) app: Router,
    /// The layer's configuration.
    pub(crate) config: McpOAuthConfig,
    /// What to tell users (printed on start).
    pub(crate) instructions: String,
}

/// Builds the app for a server bound at `bound`.
pub(crate) async fn build(settings: &Settings, bound: SocketAddr) -> Result<Server, BoxError> {
    let public = settings.public_base(bound);
    let resource = format!("{public}{MCP_PATH}");
    if settings.issuer.is_none() && settings.api_keys.is_empty() {
        return Err(
            "set MCP_OAUTH_ISSUER (your OIDC provider's issuer) or MCP_OAUTH_API_KEYS".into(),
        );
    }
    if settings.issuer.is_none() && settings.jwks_uri.is_some() {
        return Err("MCP_OAUTH_JWKS_URI needs MCP_OAUTH_ISSUER".into());
    }
    let verifier = verifier(settings, settings.issuer.as_deref(), &resource).await?;
    // With API keys only there is no authorization server; the metadata then names this
    // server, which OAuth clients will find has none.
    let issuer = settings.issuer.clone().unwrap_or_else(|| public.clone());

    let mut policy = AccessPolicy::new()
        .public_tool("public_echo")
        .tool_scopes("secret_read", ["read"]);
    if settings.lazy {
        policy = policy.lazy();
    }
    let mut builder = McpOAuthConfig::builder()
        .resource(&resource)
        .issuer(&issuer)
        .resource_name("mcp-oauth example")
        .scope("read", "Read the secret")
        .policy(policy)
        .verifier(verifier);
    for origin in &settings.allow_origins {
        builder = builder.allow_origin(origin);
    }
    let config = builder.build()?;

    let app = Router::new()
        .route_service(
            MCP_PATH,
            McpOAuth::new(mcp_service(&host_of(&public)?), config.clone()),
        )
        .merge(protected_resource_router(&config));
    let instructions = instructions(settings, &config);
    Ok(Server {
        app,
        config,
        instructions,
    })
}

fn instructions(settings: &Settings, config: &McpOAuthConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mcp-oauth example resource server");
    let _ = writeln!(
        out,
        "  MCP server URL (enter this in the client): {}",
        config.resource()
    );
    let _ = writeln!(
        out,
        "  protected-resource metadata:               {}",
        config.resource_metadata_url()
    );
    match &settings.issuer {
        Some(issuer) => {
            let _ = writeln!(out, "  authorization server (issuer):             {issuer}");
            let _ = writeln!(
                out,
                "  at the identity provider: register the API/audience/resource {:?}, scope `read`,",
                config.resource()
            );
            let _ = writeln!(
                out,
                "    and let clients register (DCR or client ID metadata documents) or pre-register their redirect URIs"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  no issuer configured: OAuth sign-in is unavailable, only API keys work"
            );
        }
    }
    for k in &settings.api_keys {
        let _ = writeln!(
            out,
            "  API key for {:?} (scopes {:?}): send `Authorization: Bearer <the key>`",
            k.subject, k.scopes
        );
    }
    let _ = writeln!(
        out,
        "  lazy authentication: {}",
        if settings.lazy {
            "on (clients connect, list tools and call public_echo without a token)"
        } else {
            "off (every request but a public_echo call needs a token, so clients sign in on connect)"
        }
    );
    let _ = writeln!(
        out,
        "  tools: public_echo (public), whoami (any token), secret_read (scope `read`)"
    );
    out
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let settings = match Settings::from_env_and_args() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let listener = tokio::net::TcpListener::bind(&settings.addr)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", settings.addr))?;
    let bound = listener.local_addr()?;
    let server = build(&settings, bound).await?;
    print!("{}", server.instructions);
    tracing::info!(resource = server.config.resource(), "serving");
    println!("listening on http://{bound}");
    // TCP_NODELAY: rmcp answers over SSE in several writes; without it the second request on
    // a keep-alive connection waits ~40 ms for Nagle and delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, server.app).await?;
    Ok(())
}
