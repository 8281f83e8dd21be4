#![allow(dead_code)]
use mcp_oauth::requires_scopes;
use rmcp::{ErrorData, tool};

struct Srv;

impl Srv {
    #[tool]
    #[requires_scopes("files:read")]
    async fn files_read(&self) -> Result<String, ErrorData> {
        Ok(String::new())
    }
}

fn main() {}
