//! A stdio MCP server served as streamable HTTP: one child process per MCP session.

use std::sync::Arc;

/// How children are started and bounded.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// The program and its arguments.
    pub command: Vec<String>,
}

/// The bridge between streamable-HTTP sessions and stdio children.
#[derive(Debug)]
pub struct StdioBridge {
    options: StdioOptions,
}

impl StdioBridge {
    /// A bridge starting `options.command` for each new session.
    pub fn new(options: StdioOptions) -> Arc<Self> {
        Arc::new(Self { options })
    }

    /// The command this bridge starts.
    pub fn command(&self) -> &[String] {
        &self.options.command
    }

    /// The MCP endpoint (any path: mounted at the resource's path, behind the OAuth layer).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(|| async { (http::StatusCode::NOT_IMPLEMENTED, "stdio: not yet") })
    }

    /// Stops every child: SIGTERM, then SIGKILL after the grace.
    pub async fn shutdown(&self) {}
}
