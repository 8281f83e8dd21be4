//! `crate = "…"`: a crate that re-exports `mcp_oauth` under another path.
#![allow(dead_code)]

mod sdk {
    pub use mcp_oauth as oauth;
}

use mcp_oauth::resource::{ToolAccess, ToolRequirement};
use mcp_oauth::{public_tool, requires_scopes, scoped_tools};
use rmcp::tool;

#[requires_scopes("files:write", crate = "crate::sdk::oauth")]
async fn upload(body: String) -> String {
    body
}

struct Srv;

#[scoped_tools(crate = "crate::sdk::oauth")]
impl Srv {
    #[public_tool]
    #[tool]
    async fn search(&self) -> String {
        String::new()
    }

    #[tool(name = "plain-tool")]
    async fn plain(&self) -> String {
        String::new()
    }
}

fn main() {
    let _: axum::routing::MethodRouter = axum::routing::post(upload);
    assert_eq!(
        Srv::tool_requirements(),
        [ToolRequirement {
            name: "search",
            access: ToolAccess::Public
        }]
    );
}
