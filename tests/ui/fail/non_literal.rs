#![allow(dead_code)]
use mcp_oauth::requires_scopes;

const FILES_READ: &str = "files:read";

#[requires_scopes(FILES_READ)]
async fn constant() {}

#[requires_scopes(concat!("files", ":read"))]
async fn macro_call() {}

#[requires_scopes(42)]
async fn integer() {}

fn main() {}
