#![allow(dead_code)]
use mcp_oauth::requires_scopes;

#[requires_scopes]
async fn bare() {}

#[requires_scopes()]
async fn empty_list() {}

#[requires_scopes(crate = "mcp_oauth")]
async fn only_crate() {}

fn main() {}
