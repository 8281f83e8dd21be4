#![allow(dead_code)]
use mcp_oauth::{public_tool, requires_scopes};
use rmcp::{ErrorData, tool};

struct Srv;

impl Srv {
    #[requires_scopes("files:read")]
    #[public_tool]
    #[tool]
    async fn scoped_first(&self) -> Result<String, ErrorData> {
        Ok(String::new())
    }

    #[public_tool]
    #[requires_scopes("files:read")]
    #[tool]
    async fn public_first(&self) -> Result<String, ErrorData> {
        Ok(String::new())
    }
}

fn main() {}
