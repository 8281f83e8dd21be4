//! The official MCP SDK clients (TypeScript `@modelcontextprotocol/sdk`, Python `mcp`) through
//! `mcp-oauth-proxy` in front of a stdio server (the Python-SDK fixture,
//! `tests/interop/proxy_fixture_server.py stdio`): each completes the whole OAuth flow (the
//! scripted browser logs in as the user and consents), lists the tools, calls `echo`, and
//! calls `slow`, receiving its progress notifications streamed before the result.
//!
//! The client scripts are `tests/interop/proxy_client.{mjs,py}` (generic: MCP URL and
//! redirect URI as arguments, JSON lines out).

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use common::{Running, fixture_command};

async fn run_client(test: &str, node: bool) {
    let Some(interop) = support::interop(test) else {
        return;
    };
    let proxy = Running::stdio(
        test,
        &[],
        &fixture_command(&interop.python(), &interop.root),
    )
    .await;
    let cmd = if node {
        interop.node_script("tests/interop/proxy_client.mjs")
    } else {
        interop.python_script("tests/interop/proxy_client.py")
    };
    common::drive_sdk_client(test, cmd, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_client_through_the_stdio_proxy() {
    run_client("typescript_sdk_client_through_the_stdio_proxy", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_through_the_stdio_proxy() {
    run_client("python_sdk_client_through_the_stdio_proxy", false).await;
}
