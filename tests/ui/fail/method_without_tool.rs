#![allow(dead_code)]
use mcp_oauth::requires_scopes;

struct Srv;

impl Srv {
    #[requires_scopes("files:read")]
    async fn forgot_tool(&self) -> Result<String, String> {
        Ok(String::new())
    }
}

#[requires_scopes("files:read")]
fn not_async() -> String {
    String::new()
}

fn main() {}
