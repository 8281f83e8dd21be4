//! Without mcp-oauth's `rmcp` feature, `#[scoped_tools]` and `#[public_tool]` still work, and
//! a tool parameter of the user's own type named `Auth` is not taken for mcp-oauth's.
use mcp_oauth::resource::{ToolAccess, ToolRequirement};
use mcp_oauth::{public_tool, scoped_tools};
use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
use rmcp::{ErrorData, tool, tool_router};

/// The user's own extractor, named like mcp-oauth's.
struct Auth(String);

impl<C: AsRequestContext> FromContextPart<C> for Auth {
    fn from_context_part(_: &mut C) -> Result<Self, ErrorData> {
        Ok(Self("someone".to_owned()))
    }
}

#[derive(Clone)]
struct Srv;

#[scoped_tools]
#[tool_router(server_handler)]
impl Srv {
    #[public_tool]
    #[tool]
    async fn search(&self, auth: Auth) -> String {
        auth.0
    }

    #[tool]
    async fn plain(&self, auth: self::Auth) -> String {
        auth.0
    }
}

fn main() {
    assert_eq!(
        Srv::tool_requirements(),
        [ToolRequirement {
            name: "search",
            access: ToolAccess::Public
        }]
    );
    let _ = Srv::tool_router();
}
