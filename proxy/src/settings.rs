//! The proxy's settings: flags, each also read from an `MCP_OAUTH_*` environment variable.

use std::path::PathBuf;

/// Everything the proxy is configured with.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "mcp-oauth-proxy",
    version,
    about = "Spec-exact OAuth 2.1 in front of any MCP server, with no code changes"
)]
pub struct Settings {
    /// Socket address to bind (port 0 picks a free port).
    #[arg(long, env = "MCP_OAUTH_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// The URL clients reach the proxy at, without path (default: http://<bound address>).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The streamable-HTTP MCP endpoint to forward to (instead of a stdio command).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM", conflicts_with = "command")]
    pub upstream: Option<String>,
    /// A static header sent to the upstream with every request, `Name: value` (repeatable;
    /// the upstream's own credential, e.g. `Authorization: Bearer …`). Never logged.
    #[arg(
        long = "upstream-header",
        value_name = "NAME: VALUE",
        requires = "upstream"
    )]
    pub upstream_headers: Vec<String>,
    /// Seconds to wait for the upstream's response headers before answering 504.
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_TIMEOUT",
        value_name = "SECS",
        default_value_t = 120.0
    )]
    pub upstream_timeout: f64,
    /// The single user's name.
    #[arg(long = "user", env = "MCP_OAUTH_DEMO_USER", default_value = "demo")]
    pub user: String,
    /// The single user's password (hashed in memory at start).
    #[arg(
        long = "password",
        env = "MCP_OAUTH_DEMO_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Where clients, grants and keys are kept: a SQLite file path, or a `postgres://` or
    /// `redis://` URL.
    #[arg(
        long,
        env = "MCP_OAUTH_STORE",
        default_value = "mcp-oauth-proxy.sqlite3"
    )]
    pub store: String,
    /// The stdio MCP server to start, one child per MCP session (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Unused placeholder for the configuration file.
    #[arg(long, env = "MCP_OAUTH_CONFIG")]
    pub config: Option<PathBuf>,
}
