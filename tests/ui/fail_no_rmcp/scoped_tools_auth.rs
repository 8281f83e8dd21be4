//! A `#[scoped_tools]` impl whose tools take `Auth` or use `#[requires_scopes]`, with
//! mcp-oauth's `rmcp` feature off: the first errors are on the parameter and the attribute
//! and name the feature; rmcp's own (its extractor trait) follow.
use mcp_oauth::{Auth, public_tool, requires_scopes, scoped_tools};
use rmcp::model::CallToolResult;
use rmcp::{ErrorData, tool, tool_router};

#[derive(Clone)]
struct Srv;

#[scoped_tools]
#[tool_router(server_handler)]
impl Srv {
    #[tool]
    async fn whoami(&self, auth: Auth) -> String {
        auth.subject().to_owned()
    }

    #[requires_scopes("files:read")]
    #[tool]
    async fn files_read(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![]))
    }

    #[public_tool]
    #[tool]
    async fn search(&self) -> String {
        String::new()
    }
}

fn main() {
    let _ = Srv::tool_requirements();
}
