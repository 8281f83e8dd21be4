//! The official MCP Python SDK client (PyPI `mcp`, pinned in `tests/interop/requirements.txt`,
//! in `.interop/venv`) through the whole OAuth flow against the embedded authorization server,
//! in the quickstart's app (`examples/quickstart.rs`, served on 127.0.0.1).
//!
//! The SDK's `OAuthClientProvider` runs inside its HTTP client: on `401` it discovers our
//! protected-resource and authorization-server metadata, registers (RFC 7591), and hands the
//! authorization URL to its redirect handler; the test's browser (`support/browser.rs`) logs
//! in as the demo user, approves, and hands the callback back, the SDK checks `state` and
//! `iss` (RFC 9207) and exchanges the code, and the same `tools/call` goes through. Then a
//! refresh (the token marked expired, as time would) and the step-up `files_write` →
//! `403 insufficient_scope` → re-authorization with the union of scopes.
//!
//! The Python side is `tests/interop/python_client_full_flow.py`.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

mod support;

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;

#[path = "support/example.rs"]
mod example;

use std::time::Duration;

use serde_json::Value;

use browser::{Browser, Decision, query_param};

const SCRIPT: &str = "tests/interop/python_client_full_flow.py";
/// The SDK's redirect URI: loopback (any port matches), never listened on; the browser hands
/// the callback to the script over stdin.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "interop-demo-password-python";
const FLOW_TIMEOUT: Duration = Duration::from_secs(150);

use example::Running;

/// The quickstart binary on `127.0.0.1:0` (memory store, the demo user with `PASSWORD`).
async fn start() -> Running {
    example::start_quickstart("demo", PASSWORD).await
}

fn requests(report: &Value) -> &[Value] {
    report["requests"].as_array().map_or(&[], Vec::as_slice)
}

/// The index of the first request after `from` matching `pred`.
fn find(report: &Value, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    requests(report)
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, r)| pred(r))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {what} after request #{from}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_completes_the_oauth_flow_refreshes_and_steps_up() {
    let Some(interop) =
        support::interop("python_sdk_client_completes_the_oauth_flow_refreshes_and_steps_up")
    else {
        return;
    };
    let running = start().await;
    let browser = Browser::new("demo", PASSWORD);
    let mut cmd = interop.python_script(SCRIPT);
    cmd.args([running.mcp_url.as_str(), REDIRECT]);
    let run = browser::drive_script(cmd, &browser, Decision::Approve, FLOW_TIMEOUT).await;
    let report = &run.report;
    // Kept for inspection: every request the SDK made, and what it reported.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-python-report.json"),
        serde_json::to_string_pretty(report).unwrap_or_default(),
    );
    let ctx = format!(
        "{report:#}\n--- stderr ---\n{}\n--- browser ---\n{}",
        run.stderr,
        browser.transcript()
    );
    assert!(
        run.success && report.get("fatal").is_none(),
        "the script failed: {ctx}"
    );
    let steps = &report["steps"];
    let client_id = steps["authorize"]["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}"));

    // 1. Anonymous.
    assert_eq!(
        steps["anonymous"]["tools"],
        serde_json::json!(["files_read", "files_write", "public_search"]),
        "{ctx}"
    );
    assert_eq!(
        steps["anonymous"]["public_search"]["text"], "notes/todo.txt\nwelcome.txt",
        "{ctx}"
    );
    assert_eq!(steps["anonymous"]["had_token"], false, "{ctx}");

    // 2. The flow as the SDK made it.
    let call = find(report, 0, "files_read call", |r| {
        r["rpc"] == "tools/call files_read"
    });
    let r = &requests(report)[call];
    assert_eq!(r["status"], 401, "{ctx}");
    assert!(
        r["www_authenticate"]
            .as_str()
            .unwrap()
            .contains(&format!("resource_metadata=\"{}\"", running.metadata_url)),
        "{ctx}"
    );
    let prm = find(report, call, "PRM fetch", |r| {
        r["url"] == running.metadata_url
    });
    assert_eq!(requests(report)[prm]["status"], 200, "{ctx}");
    let asm = find(report, prm, "AS metadata fetch", |r| {
        r["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{}/.well-known/", running.issuer)))
            && r["status"] == 200
    });
    let reg = find(report, asm, "registration", |r| {
        r["url"] == format!("{}/register", running.issuer)
    });
    assert_eq!(
        requests(report)[reg]["status"],
        201,
        "DCR must answer 201: {ctx}"
    );
    let exchange = find(report, reg, "code exchange", |r| {
        r["form"]["grant_type"] == "authorization_code"
    });
    let ex = &requests(report)[exchange];
    assert_eq!(ex["url"], format!("{}/token", running.issuer), "{ctx}");
    assert_eq!(ex["status"], 200, "{ctx}");
    assert_eq!(ex["form"]["resource"], running.mcp_url, "{ctx}");
    // The same call, retried with the token.
    let retried = find(report, exchange, "retried files_read", |r| {
        r["rpc"] == "tools/call files_read"
    });
    assert_eq!(requests(report)[retried]["status"], 200, "{ctx}");
    assert_eq!(
        requests(report)[retried]["authorization"],
        "Bearer",
        "{ctx}"
    );

    assert_eq!(run.authorizations.len(), 2, "{ctx}");
    let first = &run.authorizations[0];
    assert!(
        first
            .url
            .starts_with(&format!("{}/authorize?", running.issuer)),
        "{ctx}"
    );
    assert_eq!(
        query_param(&first.url, "client_id").as_deref(),
        Some(client_id)
    );
    assert_eq!(
        query_param(&first.url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&first.url, "resource").as_deref(),
        Some(running.mcp_url.as_str())
    );
    assert_eq!(
        query_param(&first.url, "redirect_uri").as_deref(),
        Some(REDIRECT)
    );
    assert_eq!(
        query_param(&first.url, "scope").as_deref(),
        Some("files:read"),
        "{ctx}"
    );
    let auth = &steps["authorize"];
    assert_eq!(auth["callback"]["iss"], running.issuer, "{ctx}");
    assert_eq!(auth["metadata_issuer"], running.issuer, "{ctx}");
    assert_eq!(
        auth["files_read"]["text"],
        format!("welcome.txt: Hello from the mcp-oauth quickstart! (read by demo via {client_id})"),
        "{ctx}"
    );
    assert_eq!(auth["token_type"], "Bearer", "{ctx}");
    assert_eq!(auth["has_refresh_token"], true, "{ctx}");
    let claims = &auth["claims"];
    assert_eq!(claims["iss"], running.issuer, "{ctx}");
    assert_eq!(claims["sub"], "demo", "{ctx}");
    assert_eq!(claims["client_id"], client_id, "{ctx}");
    assert!(
        claims["aud"] == running.mcp_url || claims["aud"][0] == running.mcp_url,
        "aud must be the resource: {ctx}"
    );
    assert_eq!(claims["scope"], "files:read", "{ctx}");

    // 3. Refresh, proactively, without a new authorization.
    let refresh = &steps["refresh"];
    assert!(
        refresh["files_read"]["text"]
            .as_str()
            .unwrap()
            .starts_with("welcome.txt: Hello"),
        "{ctx}"
    );
    assert_eq!(refresh["access_token_changed"], true, "{ctx}");
    assert_eq!(refresh["refresh_token_rotated"], true, "{ctx}");
    assert_eq!(refresh["authorizations_so_far"], 1, "{ctx}");
    let rt = find(report, exchange, "refresh", |r| {
        r["form"]["grant_type"] == "refresh_token"
    });
    assert_eq!(requests(report)[rt]["status"], 200, "{ctx}");
    assert_eq!(
        requests(report)[rt]["form"]["resource"],
        running.mcp_url,
        "{ctx}"
    );

    // 4. Step-up.
    let forbidden = find(report, rt, "403 on files_write", |r| r["status"] == 403);
    let challenge = requests(report)[forbidden]["www_authenticate"]
        .as_str()
        .unwrap();
    assert!(challenge.contains("error=\"insufficient_scope\""), "{ctx}");
    assert!(
        challenge.contains("scope=\"files:read files:write\""),
        "{ctx}"
    );
    let second = &run.authorizations[1];
    let scopes: std::collections::BTreeSet<String> = query_param(&second.url, "scope")
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert!(
        scopes.contains("files:read") && scopes.contains("files:write"),
        "{ctx}"
    );
    let up = &steps["step_up"];
    assert_eq!(
        up["files_write"]["text"],
        format!("notes/from-python.txt: wrote 25 bytes (written by demo via {client_id})"),
        "{ctx}"
    );
    let granted: std::collections::BTreeSet<&str> = up["claims"]["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    assert!(granted.contains("files:write"), "{ctx}");
    assert_eq!(
        up["files_read"]["text"],
        format!("notes/from-python.txt: hello from the Python SDK (read by demo via {client_id})"),
        "{ctx}"
    );
}
