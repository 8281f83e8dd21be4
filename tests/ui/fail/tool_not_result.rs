#![allow(dead_code)]
use mcp_oauth::requires_scopes;
use rmcp::tool;

struct Srv;

impl Srv {
    #[requires_scopes("files:read")]
    #[tool]
    async fn returns_string(&self) -> String {
        String::new()
    }

    #[requires_scopes("files:read")]
    #[tool]
    async fn returns_nothing(&self) {}
}

fn main() {}
