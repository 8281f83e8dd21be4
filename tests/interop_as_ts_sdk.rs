//! The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk` 1.32.2) through the whole
//! OAuth flow against the embedded authorization server, in the quickstart's app
//! (`examples/quickstart.rs`, compiled into this test and served on 127.0.0.1).
//!
//! The SDK connects without a token (lazy authentication), gets `401` on `files_read`, reads
//! our protected-resource and authorization-server metadata, registers itself (RFC 7591),
//! and builds the authorization URL. The test's browser (`support/browser.rs`) opens it, logs
//! in as the demo user, approves, and hands the callback to the SDK, which exchanges the code
//! and calls the tool. Then a refresh (the SDK's own, on `401 invalid_token`) and the step-up
//! `files_write` → `403 insufficient_scope` → re-authorization with
//! `files:read files:write`.
//!
//! The node side is `tests/interop/ts_client_full_flow.mjs`.
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

const SCRIPT: &str = "tests/interop/ts_client_full_flow.mjs";
/// The SDK's redirect URI: a loopback URI (any port matches), never listened on: the
/// browser hands the callback to the script over stdin.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "interop-demo-password-ts";
const FLOW_TIMEOUT: Duration = Duration::from_secs(150);

/// The quickstart app on 127.0.0.1.
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
async fn ts_sdk_client_completes_the_oauth_flow_refreshes_and_steps_up() {
    let Some(interop) =
        support::interop("ts_sdk_client_completes_the_oauth_flow_refreshes_and_steps_up")
    else {
        return;
    };
    let running = start().await;
    let browser = Browser::new("demo", PASSWORD);
    let mut cmd = interop.node_script(SCRIPT);
    cmd.args([running.mcp_url.as_str(), REDIRECT]);
    let run = browser::drive_script(cmd, &browser, Decision::Approve, FLOW_TIMEOUT).await;
    let report = &run.report;
    // Kept for inspection: every request the SDK made, and what it reported.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-ts-sdk-report.json"),
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

    // 1. Anonymous: listing and the public tool work without a token.
    assert_eq!(
        steps["anonymous"]["tools"],
        serde_json::json!(["files_read", "files_write", "public_search"]),
        "{ctx}"
    );
    assert_eq!(
        steps["anonymous"]["public_search"]["text"], "notes/todo.txt\nwelcome.txt",
        "{ctx}"
    );

    // 2. The flow, request by request, as the SDK made it.
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
    let reg_req = &requests(report)[reg];
    assert_eq!(reg_req["status"], 201, "DCR must answer 201: {ctx}");
    assert_eq!(
        reg_req["json"]["redirect_uris"],
        serde_json::json!([REDIRECT]),
        "{ctx}"
    );
    let exchange = find(report, reg, "code exchange", |r| {
        r["form"]["grant_type"] == "authorization_code"
    });
    let ex = &requests(report)[exchange];
    assert_eq!(ex["url"], format!("{}/token", running.issuer), "{ctx}");
    assert_eq!(ex["status"], 200, "{ctx}");
    assert_eq!(ex["form"]["resource"], running.mcp_url, "{ctx}");
    assert_eq!(ex["form"]["redirect_uri"], REDIRECT, "{ctx}");

    // The authorization request the SDK built, and what the browser got back.
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
        query_param(&first.url, "response_type").as_deref(),
        Some("code")
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
    assert!(first.callback.starts_with(&format!("{REDIRECT}?")), "{ctx}");
    assert_eq!(
        query_param(&first.callback, "iss").as_deref(),
        Some(running.issuer.as_str())
    );
    let auth = &steps["authorize"];
    assert_eq!(auth["callback"]["state_matches"], true, "{ctx}");
    assert_eq!(auth["callback"]["iss_matches_metadata"], true, "{ctx}");
    // The browser saw a login form and a consent form, then the redirect.
    let log = browser.log();
    assert!(
        log.iter()
            .any(|s| s.method == "POST" && s.form.iter().any(|(k, _)| k == "password")),
        "no login was posted: {ctx}"
    );
    assert!(
        log.iter().any(|s| s.method == "POST"
            && s.form
                .iter()
                .any(|(k, v)| k == "decision" && v == "approve")),
        "no consent was posted: {ctx}"
    );

    // The token and the tool's answer.
    assert_eq!(
        auth["files_read"]["text"],
        format!("welcome.txt: Hello from the mcp-oauth quickstart! (read by demo via {client_id})"),
        "{ctx}"
    );
    assert_eq!(auth["files_read"]["is_error"], false, "{ctx}");
    assert!(
        auth["token_type"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("bearer"),
        "{ctx}"
    );
    assert_eq!(auth["has_refresh_token"], true, "{ctx}");
    let claims = &auth["claims"];
    assert_eq!(claims["iss"], running.issuer, "{ctx}");
    assert_eq!(claims["sub"], "demo", "{ctx}");
    assert_eq!(claims["client_id"], client_id, "{ctx}");
    assert!(
        claims["aud"] == running.mcp_url
            || claims["aud"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from(running.mcp_url.as_str()))),
        "aud must be the resource: {ctx}"
    );
    assert_eq!(claims["scope"], "files:read", "{ctx}");

    // 3. Refresh: the SDK refreshed on 401 invalid_token, without a new authorization.
    let refresh = &steps["refresh"];
    assert_eq!(refresh["files_read"]["is_error"], false, "{ctx}");
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
    let garbage = find(report, exchange + 1, "call with the garbage token", |r| {
        r["status"] == 401 && r["authorization"] == "Bearer"
    });
    assert!(
        requests(report)[garbage]["www_authenticate"]
            .as_str()
            .unwrap()
            .contains("error=\"invalid_token\""),
        "{ctx}"
    );
    let rt = find(report, garbage, "refresh", |r| {
        r["form"]["grant_type"] == "refresh_token"
    });
    assert_eq!(requests(report)[rt]["status"], 200, "{ctx}");
    assert_eq!(
        requests(report)[rt]["form"]["resource"],
        running.mcp_url,
        "{ctx}"
    );

    // 4. Step-up: 403 insufficient_scope names both scopes; the second authorization asks for
    //    them and the new token holds them.
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
    assert_eq!(
        query_param(&second.url, "scope").as_deref(),
        Some("files:read files:write"),
        "{ctx}"
    );
    let up = &steps["step_up"];
    assert_eq!(
        up["files_write"]["text"],
        format!("notes/from-ts.txt: wrote 29 bytes (written by demo via {client_id})"),
        "{ctx}"
    );
    assert_eq!(up["claims"]["scope"], "files:read files:write", "{ctx}");
    assert_eq!(
        up["files_read"]["text"],
        format!("notes/from-ts.txt: hello from the TypeScript SDK (read by demo via {client_id})"),
        "{ctx}"
    );
    println!(
        "TypeScript SDK step-up, native handling: {}",
        steps["step_up_native"]
    );
}
