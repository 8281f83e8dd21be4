//! The official SDK clients through the proxy: `tests/interop/proxy_client.{mjs,py}` run
//! against a [`Running`] proxy (whatever is behind it: a stdio child or an HTTP upstream
//! serving `tests/interop/proxy_fixture_server.py`'s tools), driven through login and consent
//! by the scripted browser, and their report checked ([`drive_sdk_client`]).

use std::time::Duration;

use serde_json::{Value, json};

use super::browser::{Browser, Decision, drive_script};
use super::{PASSWORD, REDIRECT_URI, Running, USER};

/// How long one client's whole run may take.
pub const SDK_FLOW_TIMEOUT: Duration = Duration::from_secs(150);
/// How many progress notifications the clients ask `slow` for.
pub const SDK_STEPS: u64 = 3;
/// Seconds `slow` waits after each notification: streamed, the first one arrives at least
/// this long before the result; buffered, with it.
pub const SDK_DELAY: f64 = 0.5;

/// Runs `cmd` (`proxy_client.mjs` or `.py` under the interop toolchain) against `proxy` with
/// the scripted browser signing in as [`USER`] and approving, keeps its report in
/// `CARGO_TARGET_TMPDIR/{test}.json`, and checks it ([`check_sdk_report`]).
pub async fn drive_sdk_client(test: &str, mut cmd: tokio::process::Command, proxy: &Running) {
    let browser = Browser::new(USER, PASSWORD);
    let (steps, delay) = (SDK_STEPS.to_string(), SDK_DELAY.to_string());
    cmd.args([
        proxy.mcp.as_str(),
        REDIRECT_URI,
        steps.as_str(),
        delay.as_str(),
    ]);
    let run = drive_script(cmd, &browser, Decision::Approve, SDK_FLOW_TIMEOUT).await;
    // Kept for inspection.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}.json")),
        serde_json::to_string_pretty(&run.report).unwrap_or_default(),
    );
    let ctx = format!(
        "{:#}\n--- stderr ---\n{}\n--- proxy ---\n{}",
        run.report,
        run.stderr,
        proxy.logs()
    );
    assert!(
        run.success && run.report.get("fatal").is_none(),
        "the script failed: {ctx}"
    );
    assert_eq!(run.authorizations.len(), 1, "{ctx}");
    assert!(
        run.authorizations[0]
            .url
            .starts_with(&format!("{}/authorize?", proxy.base)),
        "{ctx}"
    );
    check_sdk_report(&run.report, &proxy.mcp, &ctx);
}

/// Checks one client's report: authorized after a 401; the fixture's tools listed; `echo`,
/// `whoami` answered; `slow`'s progress streamed ahead of its result; every MCP request after
/// the code exchange carried the token and succeeded.
pub fn check_sdk_report(report: &Value, mcp: &str, ctx: &str) {
    assert!(report.get("fatal").is_none(), "the script failed: {ctx}");
    let steps = &report["steps"];
    assert_eq!(steps["initialize"]["server"], "proxy-fixture", "{ctx}");
    assert_eq!(steps["initialize"]["authorized"], true, "{ctx}");
    assert_eq!(
        steps["tools"]["names"],
        json!(["crash", "echo", "recall", "remember", "slow", "whoami"]),
        "{ctx}"
    );
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
    assert_eq!(slow["is_error"], false, "{ctx}");
    assert_eq!(slow["progress_count"], SDK_STEPS, "{ctx}");
    let progress = slow["progress"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}"));
    let values: Vec<f64> = progress
        .iter()
        .filter_map(|p| p["progress"].as_f64())
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0], "{ctx}");
    assert_eq!(progress[0]["message"], "step 1 of 3", "{ctx}");
    let at = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("no time: {ctx}"));
    let result_at = at(&slow["result_at"]);
    for p in progress {
        assert!(at(&p["at"]) <= result_at, "{ctx}");
    }
    // Streamed: the first notification arrived while the call was still running.
    let ahead = at(&slow["first_progress_before_result"]);
    assert!(
        ahead >= SDK_DELAY,
        "progress was not streamed before the result ({ahead}s ahead): {ctx}"
    );
    // The first initialize got 401; one got 200 with the token and a session.
    let requests = report["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}"));
    let inits: Vec<&Value> = requests
        .iter()
        .filter(|r| r["rpc"] == "initialize")
        .collect();
    assert_eq!(
        inits.first().map(|r| &r["status"]),
        Some(&Value::from(401)),
        "{ctx}"
    );
    assert!(
        inits
            .iter()
            .any(|r| r["status"] == 200 && r["authorization"] == "Bearer" && r["session"] == true),
        "{ctx}"
    );
    // Every MCP request after the code exchange carried the token and was not refused.
    let exchange = requests
        .iter()
        .rposition(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/token")))
        .unwrap_or_else(|| panic!("no token request: {ctx}"));
    for r in &requests[exchange + 1..] {
        if r["url"] == mcp {
            assert_eq!(r["authorization"], "Bearer", "{ctx}");
            let status = r["status"].as_u64().unwrap_or(0);
            assert!((200..300).contains(&status), "{r}: {ctx}");
        }
    }
}
