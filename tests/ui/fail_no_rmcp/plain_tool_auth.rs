//! The limit of what mcp-oauth can say: `Auth` in an rmcp tool without mcp-oauth's `rmcp`
//! feature and without `#[scoped_tools]` on the impl. No mcp-oauth macro expands here, so
//! the only error is rmcp's (`#[tool_router]` finds no extractor for `Auth`), whose wording
//! mcp-oauth cannot change; `#[scoped_tools]` on the impl adds the error naming the fix
//! (`scoped_tools_auth.rs`).
use mcp_oauth::Auth;
use rmcp::{tool, tool_router};

#[derive(Clone)]
struct Srv;

#[tool_router(server_handler)]
impl Srv {
    #[tool]
    async fn whoami(&self, auth: Auth) -> String {
        auth.subject().to_owned()
    }
}

fn main() {}
