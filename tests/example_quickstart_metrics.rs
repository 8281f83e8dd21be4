//! Issue 13 items 2 and 3 on the quickstart binary:
//!
//! - with `MCP_OAUTH_METRICS=1` it serves `/metrics` in the Prometheus text format; a real
//!   parser (`prometheus-parse`) reads it before and after a whole flow (a refused call,
//!   registration, authorization, code exchange, MCP calls, a refresh, rate-limited token
//!   requests), and the counters and histograms move as they should;
//! - without it there is no `/metrics` (nothing is public by accident);
//! - `--doctor URL` prints the report and exits 0 against the quickstart, 1 against a URL
//!   that serves nothing.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros",
    feature = "metrics",
    feature = "doctor"
))]

#[path = "support/example.rs"]
mod example;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "metrics-test-verifier-0123456789-abcdefghijklmnopqrs";
const PROTOCOL: &str = "2025-11-25";

/// `/metrics`, parsed.
async fn scrape(http: &reqwest::Client, base: &str) -> prometheus_parse::Scrape {
    let res = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of `metric` with exactly these labels (0 when absent).
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric}: {other:?}"),
        })
        .sum()
}

/// Whether `metric` is a histogram with buckets for these labels.
fn is_histogram(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> bool {
    s.samples.iter().any(|x| {
        x.metric == metric
            && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
            && matches!(&x.value, prometheus_parse::Value::Histogram(b) if !b.is_empty())
    })
}

#[tokio::test]
async fn metrics_move_with_a_flow_and_are_served_only_when_asked() {
    let running = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_STORE", "memory"),
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
            ("MCP_OAUTH_METRICS", "1"),
        ],
        &[],
    )
    .await;
    let base = running.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let before = scrape(&http, &base).await;

    let mcp = |token: Option<&str>, body: Value| {
        let mut req = http
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    };
    let read = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "files_read", "arguments": {"path": "welcome.txt"}}});

    // A protected call without a token: the layer refuses it.
    assert_eq!(mcp(None, read.clone()).send().await.unwrap().status(), 401);

    // Registration, authorization (auto-approved), code exchange.
    let res = http
        .post(format!("{base}/register"))
        .json(&json!({
            "client_name": "metrics test",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let client_id = res.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER));
    let url = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("scope", "files:read"),
        ],
    )
    .unwrap();
    let res = http.get(url).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let res = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Two calls with the token: a cache miss (verified), then a hit.
    for _ in 0..2 {
        let res = mcp(Some(&access), read.clone()).send().await.unwrap();
        assert_ne!(res.status(), 401);
        let _ = res.bytes().await;
    }

    // A refresh.
    let res = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Token requests until the rate limit refuses one.
    let mut limited = false;
    for _ in 0..1000 {
        let res = http
            .post(format!("{base}/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "nope"),
                ("client_id", &client_id),
            ])
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the token endpoint never answered 429");

    let after = scrape(&http, &base).await;
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    let requests = "mcp_oauth_http_requests_total";
    assert_eq!(
        delta(requests, &[("endpoint", "register"), ("status", "201")]),
        1.0
    );
    assert_eq!(
        delta(requests, &[("endpoint", "authorize"), ("status", "302")]),
        1.0
    );
    assert_eq!(
        delta(requests, &[("endpoint", "token"), ("status", "200")]),
        2.0
    );
    assert!(delta(requests, &[("endpoint", "token"), ("status", "400")]) >= 1.0);
    assert!(delta(requests, &[("endpoint", "token"), ("status", "429")]) >= 1.0);
    assert_eq!(
        delta(
            "mcp_oauth_token_request_seconds_count",
            &[("status", "200")]
        ),
        2.0
    );
    assert!(is_histogram(
        &after,
        "mcp_oauth_token_request_seconds",
        &[("status", "200")]
    ));
    assert!(delta("mcp_oauth_layer_verify_seconds_count", &[("outcome", "ok")]) >= 1.0);
    assert!(delta("mcp_oauth_token_cache_misses_total", &[]) >= 1.0);
    assert!(delta("mcp_oauth_token_cache_hits_total", &[]) >= 1.0);
    assert_eq!(
        delta(
            "mcp_oauth_layer_refusals_total",
            &[("reason", "missing_token")]
        ),
        1.0
    );
    assert!(delta("mcp_oauth_rate_limited_total", &[("limit", "token")]) >= 1.0);
    for (event, n) in [
        ("client.registered", 1.0),
        ("authorization.requested", 1.0),
        ("authorization.granted", 1.0),
        ("token.issued", 1.0),
        ("refresh.rotated", 1.0),
        ("resource.token_accepted", 1.0),
    ] {
        assert_eq!(
            delta("mcp_oauth_audit_events_total", &[("event", event)]),
            n,
            "{event}"
        );
    }
    // No identifier is a label: no client id, subject or token anywhere in the exposition.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret_or_id in [
        client_id.as_str(),
        access.as_str(),
        refresh.as_str(),
        "demo",
    ] {
        assert!(!text.contains(secret_or_id), "{secret_or_id} in /metrics");
    }

    // The doctor, run as `--doctor URL`, against this server: compliant, exit 0.
    let doctor = example::run(
        "quickstart",
        &[("MCP_OAUTH_STORE", "memory")],
        &["--doctor", &format!("{base}/mcp")],
    )
    .await;
    assert!(doctor.success, "{doctor:?}");
    assert!(
        doctor.stdout.contains("oauth_compliant: true"),
        "{doctor:?}"
    );
    drop(running);

    // Not asked for: no /metrics.
    let plain = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_STORE", "memory"),
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
        ],
        &[],
    )
    .await;
    let res = http.get(plain.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // The doctor against something that is no MCP server: exit 1, each failure named.
    let doctor = example::run(
        "quickstart",
        &[("MCP_OAUTH_STORE", "memory")],
        &["--doctor", &plain.url("/nothing-here")],
    )
    .await;
    assert!(!doctor.success, "{doctor:?}");
    assert!(
        doctor.stdout.contains("oauth_compliant: false"),
        "{doctor:?}"
    );
    assert!(doctor.stdout.contains("[challenge]"), "{doctor:?}");
}
