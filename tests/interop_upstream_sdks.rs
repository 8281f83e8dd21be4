//! The official MCP TypeScript and Python SDK clients through the whole flow with the login
//! happening at an upstream provider: `examples/upstream_oidc.rs` (compiled into this test) in
//! front of a real `oidc-provider` on 127.0.0.1. The SDK discovers, registers, opens the
//! authorization URL; the test browser is sent on to oidc-provider's login and consent pages,
//! comes back through `/upstream/callback` to our consent page, approves; the SDK exchanges
//! the code and calls `whoami`, which answers with the upstream identity.
#![cfg(all(feature = "upstream-oidc", feature = "rmcp", feature = "macros"))]

mod support;

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/example.rs"]
mod example;
#[path = "support/oidc.rs"]
mod oidc;

use std::time::Duration;

use browser::{Browser, Decision};
use oidc::OidcProvider;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// oidc-provider and the example in front of it; the example's base URL.
async fn start(interop: &support::Interop) -> (OidcProvider, example::Example, String) {
    // The example's port must be known before the provider starts (its redirect URI).
    let port = example::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = OidcProvider::start_upstream(interop, &format!("{base}/upstream/callback")).await;
    let addr = format!("127.0.0.1:{port}");
    let running = example::Example::start(
        "upstream_oidc",
        &[
            ("MCP_OAUTH_ADDR", addr.as_str()),
            ("MCP_OAUTH_UPSTREAM_ISSUER", idp.issuer.as_str()),
            ("MCP_OAUTH_UPSTREAM_CLIENT_ID", oidc::UPSTREAM_CLIENT_ID),
            (
                "MCP_OAUTH_UPSTREAM_CLIENT_SECRET",
                oidc::UPSTREAM_CLIENT_SECRET,
            ),
            ("MCP_OAUTH_UPSTREAM_ALLOWED_DOMAINS", "example.com"),
            ("MCP_OAUTH_UPSTREAM_ALLOW_LOOPBACK", "1"),
        ],
        &[],
    )
    .await;
    assert!(
        running.stdout().contains(&format!(
            "redirect URI to register there: {base}/upstream/callback"
        )),
        "{}",
        running.stdout()
    );
    (idp, running, base)
}

/// Runs a client script through the flow as `alice` and checks what it reports.
async fn check(
    mut cmd: tokio::process::Command,
    idp: &OidcProvider,
    running: &example::Example,
    base: &str,
) {
    let browser = Browser::new("alice", "any-password");
    browser.follow_origin(&idp.issuer);
    cmd.args([running.url("/mcp").as_str(), REDIRECT, "whoami"]);
    let run =
        browser::drive_script(cmd, &browser, Decision::Approve, Duration::from_secs(120)).await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- stderr ---\n{}\n--- browser ---\n{}\n--- server ---\n{}",
        run.stderr,
        browser.transcript(),
        running.stderr()
    );
    assert!(run.success && report.get("fatal").is_none(), "{ctx}");
    assert_eq!(
        report["steps"]["authorize"]["whoami"]["text"],
        format!("{}|alice (alice@example.com)", idp.issuer),
        "{ctx}"
    );
    let claims = &report["steps"]["authorize"]["claims"];
    assert_eq!(claims["iss"], base, "{ctx}");
    assert_eq!(claims["aud"], running.url("/mcp"), "{ctx}");
    // The login happened upstream: the browser posted oidc-provider's login form, never ours.
    let log = browser.log();
    assert!(
        log.iter()
            .any(|s| s.method == "POST" && s.url.starts_with(&idp.issuer)),
        "{ctx}"
    );
    assert!(
        !log.iter().any(|s| s.url.ends_with("/authorize/login")),
        "{ctx}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_client_signs_in_at_the_upstream_provider() {
    let Some(interop) = support::interop("ts_sdk_client_signs_in_at_the_upstream_provider") else {
        return;
    };
    let (idp, running, base) = start(&interop).await;
    let cmd = interop.node_script("tests/interop/ts_client_full_flow.mjs");
    check(cmd, &idp, &running, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_signs_in_at_the_upstream_provider() {
    let Some(interop) = support::interop("python_sdk_client_signs_in_at_the_upstream_provider")
    else {
        return;
    };
    let (idp, running, base) = start(&interop).await;
    let cmd = interop.python_script("tests/interop/python_client_full_flow.py");
    check(cmd, &idp, &running, &base).await;
}
