//! A real browser drives the pages: headless Chromium (Debian's `chromium`, through the npm
//! package `playwright-core`) opens an authorization URL, signs in, approves on our consent
//! page, and reaches the client's callback (a loopback listener the test runs, as a native MCP
//! client does) with `code`, `state` and `iss` — with no console message, no page error, no
//! failed request and no HTTP error on any of our pages. The code it brings back is then
//! redeemed, so the pages really did authorize. Two runs:
//!
//! - a local password user signs in on our login page (the quickstart example);
//! - (feature `upstream-oidc`) a user signs in at an upstream provider — a real
//!   `oidc-provider` on loopback — in front of which runs the `upstream_oidc` example: our
//!   `/authorize` sends the browser to the provider's login page, then its consent page, then
//!   back through our `/upstream/callback` to our consent page. The provider's own pages are a
//!   third party's (they load Google Fonts and meet a 404 for its favicon): only they are left
//!   out of the clean check, never our origin.
//!
//! The node side is `tests/interop/browser_flow.mjs`, driven by a plan of steps (one per page,
//! each naming the origin it expects). One browser launch per run.
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

mod support;

#[path = "support/example.rs"]
mod example;
#[cfg(feature = "upstream-oidc")]
#[path = "support/oidc.rs"]
mod oidc;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SCRIPT: &str = "tests/interop/browser_flow.mjs";
/// The page the test's client listener answers its redirect URI with.
const CALLBACK_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
    <title>Signed in</title><link rel=\"icon\" href=\"data:,\"></head>\
    <body><p>Signed in. You can close this window.</p></body></html>";
const PASSWORD: &str = "chromium-demo-password";
const VERIFIER: &str = "chromium-test-code-verifier-0123456789-abcdefghijklmnop";
const STATE: &str = "state-from-the-chromium-test";

/// What one browser run reported.
struct BrowserRun {
    report: Value,
    success: bool,
    stderr: String,
}

/// Runs `browser_flow.mjs` with a plan: open `authorize_url`, then act on one page per step.
async fn run_browser(
    interop: &support::Interop,
    chromium: &Path,
    authorize_url: &str,
    redirect: &str,
    steps: Value,
) -> BrowserRun {
    let plan = json!({
        "chromium": chromium,
        "authorize_url": authorize_url,
        "callback": redirect,
        "steps": steps,
    });
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "browser-plan-{}-{}.json",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&file, plan.to_string()).unwrap();
    let mut cmd = interop.node_script(SCRIPT);
    cmd.arg(&file);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the browser did not finish within 90 s")
        .expect("cannot run node");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("no JSON report from the browser\nstdout: {stdout}\nstderr: {stderr}")
        });
    BrowserRun {
        report,
        success: out.status.success(),
        stderr,
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The client's redirect listener on `127.0.0.1` (a loopback redirect URI, RFC 8252), as a
/// native MCP client runs one: its redirect URI. It serves until the test ends.
async fn callback_listener() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect = format!("http://{}/callback", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(|| async { axum::response::Html(CALLBACK_PAGE) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    redirect
}

/// Registers a public client with `redirect`: its `client_id`.
async fn register(http: &reqwest::Client, issuer: &str, redirect: &str) -> String {
    let res = http
        .post(format!("{issuer}/register"))
        .json(&json!({
            "client_name": "Chromium test client",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The authorization URL a client with `client_id` and `redirect` opens for `scope` at
/// `resource`, with PKCE (S256 of [`VERIFIER`]) and [`STATE`].
fn authorize_url(
    issuer: &str,
    client_id: &str,
    redirect: &str,
    scope: &str,
    resource: &str,
) -> String {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER));
    url::Url::parse_with_params(
        &format!("{issuer}/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", STATE),
            ("scope", scope),
            ("resource", resource),
        ],
    )
    .unwrap()
    .to_string()
}

/// Checks the callback the browser reached: at `redirect`, with `code`, the client's `state`
/// and our `iss` (RFC 9207), no `error`. Returns the code.
fn callback_code(report: &Value, redirect: &str, issuer: &str, ctx: &str) -> String {
    let callback = report["callback"]
        .as_str()
        .unwrap_or_else(|| panic!("no callback: {ctx}"));
    assert!(callback.starts_with(&format!("{redirect}?")), "{ctx}");
    assert_eq!(query(callback, "state").as_deref(), Some(STATE), "{ctx}");
    assert_eq!(query(callback, "iss").as_deref(), Some(issuer), "{ctx}");
    assert_eq!(query(callback, "error"), None, "{ctx}");
    query(callback, "code").unwrap_or_else(|| panic!("no code: {ctx}"))
}

/// Redeems `code` at the token endpoint of `issuer` (a public client, PKCE with
/// [`VERIFIER`]): the token response and the access token's claims.
async fn redeem(
    http: &reqwest::Client,
    issuer: &str,
    client_id: &str,
    redirect: &str,
    code: &str,
    resource: &str,
) -> (Value, Value) {
    let res = http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
            ("resource", resource),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let payload = tokens["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    (tokens, claims)
}

fn query(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).unwrap();
    let mut values = url.query_pairs().filter(|(k, _)| k == name);
    let first = values.next().map(|(_, v)| v.into_owned());
    assert!(values.next().is_none(), "{name} twice in {url}");
    first
}

/// Asserts the browser saw nothing wrong: no console message of any kind, no uncaught
/// error, no failed request, no HTTP error answer — on every page except those of the
/// origins in `third_parties` (an upstream provider's pages are not ours to judge).
fn assert_clean(report: &Value, third_parties: &[&str], ctx: &str) {
    for (key, page) in [
        ("console", "url"),
        ("page_errors", "url"),
        ("failed_requests", "page"),
        ("error_responses", "page"),
    ] {
        let ours: Vec<&Value> = report[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in the report: {ctx}"))
            .iter()
            .filter(|entry| {
                let origin = url::Url::parse(entry[page].as_str().unwrap_or_default())
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                !third_parties.contains(&origin.as_str())
            })
            .collect();
        assert!(ours.is_empty(), "{key} must be empty: {ours:#?}\n{ctx}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_a_local_password_user_and_approves() {
    const TEST: &str = "chromium_signs_in_with_a_local_password_user_and_approves";
    let Some(interop) = support::interop(TEST) else {
        return;
    };
    let Some(chromium) = support::chromium(TEST) else {
        return;
    };
    let running = example::start_quickstart("demo", PASSWORD).await;
    let issuer = running.issuer.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = callback_listener().await;
    let client_id = register(&http, &issuer, &redirect).await;
    let authorize_url = authorize_url(
        &issuer,
        &client_id,
        &redirect,
        "files:read",
        &running.mcp_url,
    );

    let run = run_browser(
        &interop,
        &chromium,
        &authorize_url,
        &redirect,
        json!([
            {"kind": "login", "origin": issuer, "username": "demo", "password": PASSWORD},
            {"kind": "consent", "origin": issuer, "decision": "approve"},
        ]),
    )
    .await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- browser stderr ---\n{}\n--- server stderr ---\n{}",
        run.stderr,
        running._example.stderr()
    );
    assert!(run.success && report["fatal"].is_null(), "{ctx}");

    // The pages it acted on: our login page, then our consent page naming the client and
    // the scope, both on the issuer's origin.
    let pages = report["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3, "{ctx}");
    assert_eq!(pages[0]["kind"], "login", "{ctx}");
    assert_eq!(pages[1]["kind"], "consent", "{ctx}");
    for page in &pages[..2] {
        assert!(page["url"].as_str().unwrap().starts_with(&issuer), "{ctx}");
    }
    let consent = pages[1]["text"].as_str().unwrap();
    assert!(consent.contains("Chromium test client"), "{ctx}");
    assert!(consent.contains("files:read"), "{ctx}");

    // The callback: `code`, the client's `state`, and our `iss` (RFC 9207).
    let code = callback_code(report, &redirect, &issuer, &ctx);
    assert_clean(report, &[], &ctx);

    // The code is real: it redeems for a token for the user, the client and the resource.
    let (tokens, claims) = redeem(
        &http,
        &issuer,
        &client_id,
        &redirect,
        &code,
        &running.mcp_url,
    )
    .await;
    assert_eq!(tokens["scope"], "files:read");
    assert_eq!(claims["sub"], "demo");
    assert_eq!(claims["aud"], running.mcp_url.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());
}

/// The upstream run: `oidc-provider` on loopback as the identity provider, the `upstream_oidc`
/// example in front of it. Chromium goes from our `/authorize` to the provider's login page
/// (its development form: any login name, any password), the provider's consent page
/// ("Continue"), back through our `/upstream/callback` to our consent page, approves there and
/// reaches the client's callback; the code redeems for a token whose `sub` is the subject
/// mapped from the upstream account (`{upstream issuer}|{upstream sub}`).
#[cfg(feature = "upstream-oidc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_at_the_upstream_provider_and_approves() {
    const TEST: &str = "chromium_signs_in_at_the_upstream_provider_and_approves";
    let Some(interop) = support::interop(TEST) else {
        return;
    };
    let Some(chromium) = support::chromium(TEST) else {
        return;
    };
    // The example's port must be known before the provider starts (its redirect URI there).
    let port = example::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let idp =
        oidc::OidcProvider::start_upstream(&interop, &format!("{issuer}/upstream/callback")).await;
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
    assert_eq!(running.base, issuer);
    let mcp_url = running.url("/mcp");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = callback_listener().await;
    let client_id = register(&http, &issuer, &redirect).await;
    let authorize_url = authorize_url(&issuer, &client_id, &redirect, "profile", &mcp_url);

    let run = run_browser(
        &interop,
        &chromium,
        &authorize_url,
        &redirect,
        json!([
            {"kind": "login", "origin": idp.issuer, "username": "alice", "password": "any-password"},
            {"kind": "continue", "origin": idp.issuer},
            {"kind": "consent", "origin": issuer, "decision": "approve"},
        ]),
    )
    .await;
    let report = &run.report;
    let ctx = format!(
        "{report:#}\n--- browser stderr ---\n{}\n--- server stderr ---\n{}",
        run.stderr,
        running.stderr()
    );
    assert!(run.success && report["fatal"].is_null(), "{ctx}");

    // The pages it acted on: the provider's login and consent pages, then ours.
    let pages = report["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 4, "{ctx}");
    let kinds: Vec<&str> = pages.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["login", "continue", "consent", "callback"], "{ctx}");
    for page in &pages[..2] {
        assert!(
            page["url"].as_str().unwrap().starts_with(&idp.issuer),
            "{ctx}"
        );
    }
    assert!(
        pages[2]["url"].as_str().unwrap().starts_with(&issuer),
        "{ctx}"
    );
    let consent = pages[2]["text"].as_str().unwrap();
    assert!(consent.contains("Chromium test client"), "{ctx}");
    assert!(consent.contains("profile"), "{ctx}");

    let code = callback_code(report, &redirect, &issuer, &ctx);
    // Our pages are clean; the provider's are its own business.
    assert_clean(report, &[idp.issuer.as_str()], &ctx);

    // The code redeems for our token (not the provider's) for the upstream-mapped subject.
    let (tokens, claims) = redeem(&http, &issuer, &client_id, &redirect, &code, &mcp_url).await;
    assert_eq!(tokens["scope"], "profile", "{tokens}");
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    assert_eq!(claims["sub"], format!("{}|alice", idp.issuer), "{claims}");
    assert_eq!(claims["aud"], mcp_url.as_str(), "{claims}");
    assert_eq!(claims["client_id"], client_id.as_str(), "{claims}");
}

/// A report with one entry of each kind, all on pages of `origin`.
fn report_with_faults_on(origin: &str) -> Value {
    let page = format!("{origin}/interaction/abc");
    json!({
        "console": [{"type": "error", "text": "Failed to load resource", "url": page}],
        "page_errors": [{"message": "ReferenceError", "url": page}],
        "failed_requests": [{"url": "https://fonts.example/css", "failure": "net::ERR_NAME_NOT_RESOLVED", "page": page}],
        "error_responses": [{"status": 404, "url": format!("{origin}/favicon.ico"), "page": page}],
    })
}

#[test]
fn the_clean_check_leaves_out_only_the_named_third_party() {
    let provider = "http://127.0.0.1:4001";
    assert_clean(&report_with_faults_on(provider), &[provider], "third party");
    // Same host, another port: another origin, so still judged.
    let ours = "http://127.0.0.1:4002";
    for key in [
        "console",
        "page_errors",
        "failed_requests",
        "error_responses",
    ] {
        let mut report = report_with_faults_on(provider);
        report[key] = report_with_faults_on(ours)[key].clone();
        let caught = std::panic::catch_unwind(|| assert_clean(&report, &[provider], key));
        assert!(
            caught.is_err(),
            "a fault in {key} on our page passed the check"
        );
    }
}
