#![allow(dead_code)]
use mcp_oauth::public_tool;
use rmcp::tool;

struct Srv;

impl Srv {
    #[public_tool("files:read")]
    #[tool]
    async fn search(&self) -> String {
        String::new()
    }
}

fn main() {}
