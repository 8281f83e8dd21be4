//! Operations on the proxy: `GET /health` (the store and the signing keys), `/metrics` only
//! when asked (`--metrics` / `MCP_OAUTH_METRICS`), counting a sign-in, and `--doctor URL`
//! finding the running proxy compliant (exit 0) and a non-MCP URL not (exit 1); the access
//! log escapes request paths.

mod common;

use common::{Running, TempDir};

/// `name value` lines of the Prometheus text for `metric` (any labels), summed.
fn total(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn health_metrics_and_doctor() {
    let upstream = common::fake_mcp().await;
    let dir = TempDir::new("ops");
    let http = common::http();

    // Without --metrics there is no /metrics.
    let plain = Running::start(
        dir.path(),
        &["--upstream", &upstream, "--store", "plain.sqlite3"],
        &[
            ("MCP_OAUTH_DEMO_USER", common::USER),
            ("MCP_OAUTH_DEMO_PASSWORD", common::PASSWORD),
        ],
    )
    .await;
    let res = http
        .get(format!("{}/metrics", plain.base))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200, "/metrics must be opt-in");
    let (status, body) = {
        let res = http
            .get(format!("{}/health", plain.base))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["checks"]["store"], "ok", "{body}");
    assert_eq!(body["checks"]["keys"], "ok", "{body}");

    // --doctor against the running proxy: compliant, exit 0.
    let (code, out, err) = common::run(dir.path(), &["--doctor", &plain.mcp], &[]).await;
    assert_eq!(code, 0, "doctor:\n{out}\n{err}");
    assert!(out.contains("oauth_compliant: true"), "{out}");
    // ... and against something that is not an MCP server: exit 1, naming the challenge.
    let (code, out, _) = common::run(
        dir.path(),
        &["--doctor", &format!("{}/nothing-here", plain.base)],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[challenge]"), "{out}");
    plain.stop().await;

    // With MCP_OAUTH_METRICS=1: Prometheus text whose counters move with a sign-in.
    let proxy = Running::start(
        dir.path(),
        &["--upstream", &upstream, "--store", "metrics.sqlite3"],
        &[
            ("MCP_OAUTH_DEMO_USER", common::USER),
            ("MCP_OAUTH_DEMO_PASSWORD", common::PASSWORD),
            ("MCP_OAUTH_METRICS", "1"),
        ],
    )
    .await;
    let scrape = || async {
        let res = http
            .get(format!("{}/metrics", proxy.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    };
    let before = scrape().await;
    let client = common::register(&proxy.base, "metrics test").await;
    let tokens = common::sign_in(&proxy.base, &proxy.mcp, &client, "mcp").await;
    assert!(!tokens.access.is_empty());
    let after = scrape().await;
    let requests = "mcp_oauth_http_requests_total";
    assert!(
        total(&after, requests) - total(&before, requests) >= 3.0,
        "register, authorize and token were counted:\n{after}"
    );
    assert!(
        total(&after, "mcp_oauth_token_request_seconds_count")
            > total(&before, "mcp_oauth_token_request_seconds_count"),
        "{after}"
    );
    assert!(!after.contains(&client), "no client id in the metrics");
    proxy.stop().await;
}

/// The access log cannot be forged through the request path: a path holding raw line
/// separators (U+2028, U+0085) is logged escaped, on one line.
#[tokio::test]
async fn a_request_path_cannot_forge_an_access_log_line() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = common::fake_mcp().await;
    let proxy = Running::upstream(&upstream, &[]).await;
    let authority = proxy.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let mut request =
        b"GET /forged\xE2\x80\xA8mcp_oauth_proxy::access\xC2\x85line HTTP/1.1\r\nHost: ".to_vec();
    request.extend_from_slice(authority.as_bytes());
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    tcp.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    // Give the log line a moment to reach stderr.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = proxy.logs();
        if logs.contains("forged") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !logs.contains('\u{2028}') && !logs.contains('\u{85}'),
        "{logs}"
    );
}
