//! # `mcp-oauth-proxy`: spec-exact OAuth 2.1 in front of any MCP server
//!
//! The library behind the `mcp-oauth-proxy` binary: an authorization server from
//! [`mcp_oauth`] in front of an MCP server that knows nothing of OAuth — an HTTP upstream
//! speaking streamable HTTP ([`http_upstream`]), or a stdio server started as one child process
//! per MCP session ([`stdio`]). [`settings`] reads flags, `MCP_OAUTH_*` variables and a TOML
//! file ([`config_file`]); [`app`] builds the served router from them, served over plain HTTP
//! or TLS ([`tls`]); [`check`] validates a configuration and reports what clients will see.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use clap::Parser as _;
//! let settings = mcp_oauth_proxy::settings::Settings::parse_from([
//!     "mcp-oauth-proxy",
//!     "--upstream",
//!     "http://127.0.0.1:3000/mcp",
//! ]);
//! let proxy = mcp_oauth_proxy::app::Proxy::start(settings).await?;
//! proxy.run().await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod check;
pub mod config_file;
pub mod http_upstream;
pub mod settings;
pub mod stdio;
pub mod tls;
