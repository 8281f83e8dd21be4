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

#[allow(dead_code)]
#[path = "../../tests/support/browser.rs"]
mod browser;

mod support_proxy;

use std::time::Duration;

use serde_json::Value;

use browser::{Browser, Decision};
use support_proxy::{PASSWORD, RunningProxy, USER, fixture_command};

/// The SDKs' redirect URI: loopback, never listened on; the browser hands the callback to the
/// script over stdin.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const FLOW_TIMEOUT: Duration = Duration::from_secs(150);
const STEPS: u64 = 3;
/// Seconds between progress notifications: the first arrives at least this long before the
/// result when they are streamed, not buffered.
const DELAY: f64 = 0.4;

/// Checks one client's report.
fn check(report: &Value, ctx: &str) {
    assert!(report.get("fatal").is_none(), "the script failed: {ctx}");
    let steps = &report["steps"];
    assert_eq!(steps["initialize"]["server"], "proxy-fixture", "{ctx}");
    let tools: Vec<&str> = steps["tools"]["names"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in ["crash", "echo", "recall", "remember", "slow", "whoami"] {
        assert!(tools.contains(&t), "{t} missing: {ctx}");
    }
    assert_eq!(steps["echo"]["text"], "hello through the proxy", "{ctx}");
    assert_eq!(steps["echo"]["is_error"], false, "{ctx}");
    assert!(
        steps["whoami"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("pid"),
        "{ctx}"
    );
    let slow = &steps["slow"];
    assert_eq!(slow["text"], "done", "{ctx}");
    assert_eq!(slow["progress_count"], STEPS, "{ctx}");
    let progress: Vec<f64> = slow["progress"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}"))
        .iter()
        .filter_map(|p| p["progress"].as_f64())
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0], "{ctx}");
    // Streamed: the first notification arrived while the call was still running (the server
    // sleeps DELAY after each, so buffering would deliver it with the result).
    let ahead = slow["first_progress_before_result"]
        .as_f64()
        .unwrap_or_else(|| panic!("{ctx}"));
    assert!(
        ahead >= DELAY,
        "progress was not streamed before the result ({ahead}s ahead): {ctx}"
    );
    // The MCP calls went through the proxy with a token, after a 401.
    let mcp_calls: Vec<&Value> = report["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}"))
        .iter()
        .filter(|r| r["rpc"] == "initialize")
        .collect();
    assert_eq!(
        mcp_calls.first().map(|r| &r["status"]),
        Some(&Value::from(401)),
        "{ctx}"
    );
    assert!(
        mcp_calls
            .iter()
            .any(|r| r["status"] == 200 && r["authorization"] == "Bearer" && r["session"] == true),
        "{ctx}"
    );
}

async fn run_client(test: &str, node: bool) {
    let Some(interop) = support::interop(test) else {
        return;
    };
    let proxy = RunningProxy::start(test, &[], &fixture_command(&interop)).await;
    let browser = Browser::new(USER, PASSWORD);
    let (steps, delay) = (STEPS.to_string(), DELAY.to_string());
    let args = [proxy.mcp.as_str(), REDIRECT, steps.as_str(), delay.as_str()];
    let mut cmd = if node {
        interop.node_script("tests/interop/proxy_client.mjs")
    } else {
        interop.python_script("tests/interop/proxy_client.py")
    };
    cmd.args(args);
    let run = browser::drive_script(cmd, &browser, Decision::Approve, FLOW_TIMEOUT).await;
    // Kept for inspection.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}.json")),
        serde_json::to_string_pretty(&run.report).unwrap_or_default(),
    );
    let ctx = format!(
        "{:#}\n--- stderr ---\n{}\n--- proxy ---\n{}",
        run.report,
        run.stderr,
        proxy.stderr()
    );
    assert!(run.success, "{ctx}");
    assert_eq!(run.authorizations.len(), 1, "{ctx}");
    check(&run.report, &ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_client_through_the_stdio_proxy() {
    run_client("typescript_sdk_client_through_the_stdio_proxy", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_through_the_stdio_proxy() {
    run_client("python_sdk_client_through_the_stdio_proxy", false).await;
}
