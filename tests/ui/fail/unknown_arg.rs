#![allow(dead_code)]
use mcp_oauth::requires_scopes;

#[requires_scopes("files:read", scope = "files:write")]
async fn unknown() {}

#[requires_scopes("files:read", crate = "mcp_oauth", crate = "mcp_oauth")]
async fn crate_twice() {}

#[requires_scopes("files:read", crate = mcp_oauth)]
async fn crate_not_a_string() {}

fn main() {}
