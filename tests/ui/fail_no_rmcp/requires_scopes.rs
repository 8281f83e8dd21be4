//! `#[requires_scopes]` on an rmcp tool, with mcp-oauth's `rmcp` feature off: the one error
//! is on the attribute and names the feature.
#![allow(dead_code)]
use mcp_oauth::requires_scopes;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData, tool};

struct Srv;

impl Srv {
    #[requires_scopes("files:read")]
    #[tool(description = "Read")]
    async fn files_read(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![]))
    }

    #[requires_scopes("files:write")]
    #[tool]
    fn files_write(&self) -> Result<String, ErrorData> {
        Ok("written".to_owned())
    }
}

fn main() {}
