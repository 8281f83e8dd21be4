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
//! The client scripts are `tests/interop/proxy_http_client.{mjs,py}`.

mod common_http;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common_http::browser::{self, Browser, Decision};
use common_http::{PASSWORD, ProxyProcess, REDIRECT, USER, free_port};
use serde_json::{Value, json};

const FLOW_TIMEOUT: Duration = Duration::from_secs(150);

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

async fn run_client(test: &str, script: &str, node: bool) {
    let Some(interop) = support::interop(test) else {
        return;
    };
    let (_fixture, upstream) = fixture(&interop).await;
    let proxy = ProxyProcess::start(&upstream, &[]).await;
    let browser = Browser::new(USER, PASSWORD);
    let mut cmd = if node {
        interop.node_script(script)
    } else {
        interop.python_script(script)
    };
    cmd.args([proxy.mcp_url.as_str(), REDIRECT]);
    let run = browser::drive_script(cmd, &browser, Decision::Approve, FLOW_TIMEOUT).await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- stderr ---\n{}\n--- proxy ---\n{}",
        run.stderr,
        proxy.stderr()
    );
    assert!(
        run.success && report.get("fatal").is_none(),
        "the script failed: {ctx}"
    );
    assert_eq!(run.authorizations.len(), 1, "{ctx}");
    assert!(
        run.authorizations[0]
            .url
            .starts_with(&format!("{}/authorize?", proxy.base)),
        "{ctx}"
    );
    let steps = &report["steps"];
    assert_eq!(steps["connect"]["unauthorized_first"], true, "{ctx}");
    assert_eq!(steps["connect"]["has_token"], true, "{ctx}");
    assert_eq!(
        steps["tools"],
        json!(["crash", "echo", "recall", "remember", "slow", "whoami"]),
        "{ctx}"
    );
    assert_eq!(
        steps["echo"],
        json!({"text": "hello through the proxy", "is_error": false}),
        "{ctx}"
    );
    let slow = &steps["slow"];
    assert_eq!(slow["text"], "done", "{ctx}");
    assert_eq!(slow["is_error"], false, "{ctx}");
    let progress = slow["progress"].as_array().expect("progress");
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0], "{ctx}");
    assert_eq!(progress[0]["message"], "step 1 of 3", "{ctx}");
    let at = |v: &Value| v.as_f64().expect("milliseconds");
    let result_at = at(&slow["result_at_ms"]);
    for p in progress {
        assert!(at(&p["at_ms"]) <= result_at, "{ctx}");
    }
    // The tool sleeps 0.5 s after each report: streamed, the first report comes about 1.5 s
    // before the result; buffered, with it.
    assert!(
        result_at - at(&progress[0]["at_ms"]) >= 500.0,
        "progress was not streamed ahead of the result: {ctx}"
    );
    // Every MCP request the SDK made after the authorization carried its token; no request
    // was refused after it.
    let requests = report["requests"].as_array().expect("requests");
    let exchange = requests
        .iter()
        .rposition(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/token")))
        .unwrap_or_else(|| panic!("no token request: {ctx}"));
    for r in &requests[exchange + 1..] {
        if r["url"] == proxy.mcp_url.as_str() {
            assert_eq!(r["authorization"], "Bearer", "{ctx}");
            let status = r["status"].as_u64().unwrap_or(0);
            assert!((200..300).contains(&status), "{r}: {ctx}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy() {
    run_client(
        "ts_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy",
        "tests/interop/proxy_http_client.mjs",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy() {
    run_client(
        "python_sdk_client_signs_in_and_uses_the_python_upstream_through_the_proxy",
        "tests/interop/proxy_http_client.py",
        false,
    )
    .await;
}
