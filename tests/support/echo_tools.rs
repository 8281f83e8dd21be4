//! The `resource_server` example's rmcp server (`public_echo`, `whoami`, `secret_read`) as a
//! library, without the layer: the control the conformance test compares the running example
//! against ("every check that passes without the layer passes with it"). Keep it in step with
//! `examples/resource_server.rs`.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use mcp_oauth::Auth;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};

/// Arguments of `public_echo`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to send back.
    pub text: String,
}

/// The example's MCP server: one public and two protected tools.
#[derive(Debug, Clone, Default)]
pub struct ExampleServer;

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

/// The rmcp service the example serves at `/mcp`, with rmcp's loopback `Host` allow-list.
pub fn mcp_service() -> StreamableHttpService<ExampleServer, LocalSessionManager> {
    StreamableHttpService::new(
        || Ok(ExampleServer),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(["localhost", "127.0.0.1", "::1"]),
    )
}
