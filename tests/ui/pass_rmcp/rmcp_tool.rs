//! The rmcp form: `#[requires_scopes]` above `#[tool]` (async and sync tools, with other
//! parameters, `#[rmcp::tool]` spelled out), `#[public_tool]` on either side of `#[tool]`,
//! `#[scoped_tools]` above `#[tool_router(server_handler)]`, and a tool taking `Auth` (with
//! the `rmcp` feature, the check `#[scoped_tools]` adds for it compiles).
use mcp_oauth::resource::{ToolAccess, ToolRequirement};
use mcp_oauth::{public_tool, requires_scopes, scoped_tools};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData, schemars, tool, tool_router};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    path: String,
}

#[derive(Clone)]
struct Srv;

#[scoped_tools]
#[tool_router(server_handler)]
impl Srv {
    #[requires_scopes("files:read")]
    #[tool(description = "Read")]
    async fn files_read(
        &self,
        Parameters(Args { path }): Parameters<Args>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(path)]))
    }

    #[mcp_oauth::requires_scopes("files:write", "admin")]
    #[rmcp::tool(name = "write")]
    fn files_write(&self) -> Result<String, ErrorData> {
        Ok("written".to_owned())
    }

    #[tool]
    #[public_tool]
    async fn search(&self) -> Result<String, ErrorData> {
        Ok(String::new())
    }

    #[tool]
    async fn whoami(&self, auth: mcp_oauth::Auth) -> String {
        auth.subject().to_owned()
    }
}

fn main() {
    assert_eq!(
        Srv::tool_requirements(),
        [
            ToolRequirement {
                name: "files_read",
                access: ToolAccess::Scopes(&["files:read"])
            },
            ToolRequirement {
                name: "write",
                access: ToolAccess::Scopes(&["files:write", "admin"])
            },
            ToolRequirement {
                name: "search",
                access: ToolAccess::Public
            },
        ]
    );
    assert_eq!(Srv::files_read_required_scopes(), ["files:read"]);
    assert_eq!(Srv::files_write_required_scopes(), ["files:write", "admin"]);
    let _ = Srv::tool_router();
}
