//! The quickstart's app in process, for what cannot run the `quickstart` binary: the in-process
//! benchmark `benches/authorization_server.rs` adjusts the authorization server (a
//! pre-registered client, no rate limits) before building, and the loopback load test
//! `benches/http.rs` serves these tools with and without the layer. The same tools, scopes and policy
//! as `examples/quickstart.rs`, on the memory store.
//!
//! ```ignore
//! #[path = "../tests/support/quickstart_app.rs"]
//! mod quickstart_app;
//! ```
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder};
use mcp_oauth::{
    Auth, McpOAuth, McpOAuthConfig, oauth_router, public_tool, requires_scopes, scoped_tools,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};

/// Arguments of `public_search`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// Words to look for in the file names.
    pub query: String,
}

/// Arguments of `files_read`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ReadArgs {
    /// The file name.
    pub path: String,
}

/// Arguments of `files_write`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct WriteArgs {
    /// The file name.
    pub path: String,
    /// The new content.
    pub content: String,
}

/// The quickstart's MCP server: one public and two protected tools over in-memory files.
#[derive(Debug, Clone)]
pub struct Files(Arc<Mutex<BTreeMap<String, String>>>);

#[scoped_tools]
#[tool_router]
impl Files {
    /// The quickstart's two files.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(BTreeMap::from([
            (
                "welcome.txt".to_owned(),
                "Hello from the mcp-oauth quickstart!".to_owned(),
            ),
            (
                "notes/todo.txt".to_owned(),
                "try files_write: it needs files:write".to_owned(),
            ),
        ]))))
    }

    #[public_tool]
    #[tool(description = "Search file names. Public: works without signing in.")]
    fn public_search(&self, Parameters(SearchArgs { query }): Parameters<SearchArgs>) -> String {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<&str> = files
            .keys()
            .filter(|n| n.contains(query.trim()))
            .map(String::as_str)
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
        Ok(format!("{path}: {content} (read by {})", auth.subject()))
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
        Ok(format!("{path}: wrote {len} bytes (by {})", auth.subject()))
    }
}

#[tool_handler]
impl ServerHandler for Files {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The quickstart's authorization server for `user`: auto-approving, or signing in with
/// `password`.
pub fn authorization_server(
    auto_approve: bool,
    user: &str,
    password: &str,
) -> AuthorizationServerBuilder {
    let builder = AuthorizationServer::builder().registered_scope_is_ceiling(false);
    if auto_approve {
        builder.authenticator(InsecureAutoApprove::new(user))
    } else {
        builder.authenticator(StaticUsers::new().with_password(user, password))
    }
}

/// The quickstart's app at `public` (`http://127.0.0.1:8000`, no trailing slash) around
/// `server`: `/mcp` behind the layer, plus every OAuth endpoint.
pub fn app(public: &str, server: AuthorizationServer) -> (Router, McpOAuthConfig) {
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
        .build()
        .expect("the quickstart's configuration");
    let files = Files::new();
    let mcp = StreamableHttpService::new(
        move || Ok(files.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = Router::new()
        .route_service("/mcp", McpOAuth::new(mcp, config.clone()))
        .merge(oauth_router(&config, &server));
    (app, config)
}
