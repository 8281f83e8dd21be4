//! The official MCP SDK clients (TypeScript `@modelcontextprotocol/sdk`, Python `mcp`) through
//! the `mcp-oauth-proxy` binary to an MCP server written with the Python SDK that knows
//! nothing of OAuth (`tests/interop/proxy_fixture_server.py http PORT`).
//!
//! Each client runs the whole OAuth flow against the proxy (401 on `initialize`, discovery,
//! registration, the scripted browser's sign-in and consent, the code exchange), then lists
//! the upstream's tools, calls `echo`, and calls `slow`, whose progress notifications must be
//! streamed through the proxy ahead of the result: the last progress arrives before the
//! result, and the first arrives well before it (the tool waits 0.5 s after each of its three
//! reports, so a proxy that buffered the response would deliver all three with the result).
//!
//! The client scripts are `tests/interop/proxy_client.{mjs,py}` (shared with
//! `stdio_sdk_clients.rs`); `common::drive_sdk_client` runs and checks them.

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{Running, free_port};

/// The Python SDK fixture server in streamable-HTTP mode on a free port; returns it and its
/// MCP URL once it accepts connections.
async fn fixture(interop: &support::Interop) -> (tokio::process::Child, String) {
    let port = free_port();
    let mut cmd = interop.python_script("tests/interop/proxy_fixture_server.py");
    cmd.args(["http", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("start the fixture server");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the fixture server exited: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fixture server did not listen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

async fn run_client(test: &str, node: bool) {
    let Some(interop) = support::interop(test) else {
        return;
    };
    let (_fixture, upstream) = fixture(&interop).await;
    let proxy = Running::upstream(&upstream, &[]).await;
    let cmd = if node {
        interop.node_script("tests/interop/proxy_client.mjs")
    } else {
        interop.python_script("tests/interop/proxy_client.py")
    };
    common::drive_sdk_client(test, cmd, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy() {
    run_client(
        "ts_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy() {
    run_client(
        "python_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy",
        false,
    )
    .await;
}
