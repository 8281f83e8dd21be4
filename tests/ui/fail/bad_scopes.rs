#![allow(dead_code)]
use mcp_oauth::requires_scopes;

#[requires_scopes("files:read", "files:write", "files:read")]
async fn duplicate() {}

#[requires_scopes("")]
async fn empty() {}

#[requires_scopes("files:read files:write")]
async fn space() {}

#[requires_scopes("files\\read", "café")]
async fn bad_chars() {}

fn main() {}
