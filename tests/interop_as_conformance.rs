//! The official MCP conformance suite in `authorization` mode
//! (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, run by the Node 22 binary of the
//! interop toolchain) against the embedded authorization server, in the quickstart's app.
//!
//! The suite runs both of its scenarios in order:
//! - `authorization-server-metadata-endpoint`: RFC 8414 metadata at the issuer, `issuer`
//!   byte-equal to `--url`, `S256`, `code`; plus an advisory check that warns unless client ID
//!   metadata documents are advertised (they are, with the default `client-metadata` feature:
//!   no warning is accepted then);
//! - `authorization-code-grant`: with the pre-registered public client `--client-id` whose
//!   redirect URI is `http://127.0.0.1:<port>/callback`, it prints an authorization URL (PKCE
//!   S256 and `state`, no `resource`, no `scope`) and waits for the browser. The server runs
//!   with `InsecureAutoApprove` (as the quickstart does with
//!   `MCP_OAUTH_INSECURE_AUTO_APPROVE=1`), so the test follows that URL with one `GET`, gets
//!   the `302` with the code, and delivers the `Location` to the suite's callback listener,
//!   which then checks `state`, `code`, `iss` and exchanges the code (`none` auth).
//!
//! Results: `target/conformance-authorization/` (the suite's `checks.json` per scenario) and
//! a summary in `target/conformance-authorization-summary.md`, also printed
//! (`cargo test --all-features --test interop_as_conformance -- --nocapture`).
#![cfg(all(
    feature = "server",
    feature = "rmcp",
    feature = "sqlite",
    feature = "macros"
))]

mod support;

#[path = "support/example.rs"]
mod example;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

const CLIENT_ID: &str = "conformance-client";
/// Bound on the whole suite run (it waits up to 5 minutes for a callback by itself).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const SCENARIOS: [&str; 2] = [
    "authorization-server-metadata-endpoint",
    "authorization-code-grant",
];

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A port nobody listens on right now, for the suite's callback listener.
use example::free_port;

/// The quickstart binary with the pre-registered client and auto-approval: it and its
/// issuer.
async fn start(callback_port: u16) -> (example::Example, String) {
    let redirect = format!("http://127.0.0.1:{callback_port}/callback");
    let quickstart = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_CLIENT_ID", CLIENT_ID),
            ("MCP_OAUTH_CLIENT_REDIRECT_URIS", &redirect),
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
            ("MCP_OAUTH_STORE", "memory"),
        ],
        &[],
    )
    .await;
    assert!(quickstart.stdout().contains("INSECURE AUTO-APPROVE"));
    let issuer = quickstart.base.clone();
    (quickstart, issuer)
}

/// What the browser does with the printed URL: one GET, no redirect following, then the
/// `Location` delivered to the suite's callback listener. Returns (status, location).
async fn follow(url: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let res = http.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.text().await.unwrap_or_default();
    assert!(
        (300..400).contains(&status) && !location.is_empty(),
        "GET of the authorization URL answered {status} without a redirect: {body}"
    );
    let delivered = http.get(&location).send().await.unwrap();
    assert!(
        delivered.status().is_success(),
        "the suite's callback listener answered {}",
        delivered.status()
    );
    (status, location)
}

/// scenario → its checks, from `<out>/authorization-server-<scenario>-<timestamp>/checks.json`.
fn read_results(out: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut results = BTreeMap::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(scenario) = SCENARIOS
            .iter()
            .find(|s| name.starts_with(&format!("authorization-server-{s}-")))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("checks.json"))
            .unwrap_or_else(|e| panic!("{name}/checks.json: {e}"));
        results.insert((*scenario).to_owned(), serde_json::from_str(&text).unwrap());
    }
    results
}

fn summary(results: &BTreeMap<String, Vec<Value>>, issuer: &str, redirect: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# MCP conformance (authorization mode) against the embedded authorization server\n"
    );
    let _ = writeln!(
        md,
        "`@modelcontextprotocol/conformance@0.2.0-alpha.12 authorization --url {issuer} --client-id {CLIENT_ID}` (public client, redirect `{redirect}`), the quickstart app with `InsecureAutoApprove`.\n"
    );
    let _ = writeln!(md, "| scenario | check | status | detail |");
    let _ = writeln!(md, "|---|---|---|---|");
    for (scenario, checks) in results {
        for c in checks {
            let detail = c["errorMessage"]
                .as_str()
                .or_else(|| c["description"].as_str())
                .unwrap_or_default()
                .replace('|', "\\|");
            let _ = writeln!(
                md,
                "| {scenario} | {} | {} | {detail} |",
                c["id"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?")
            );
        }
    }
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_authorization_mode_passes_both_scenarios() {
    let Some(interop) = support::interop("conformance_authorization_mode_passes_both_scenarios")
    else {
        return;
    };
    let port = free_port();
    let (_quickstart, issuer) = start(port).await;
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let out = target_dir().join("conformance-authorization");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let mut cmd = interop.conformance(&out);
    cmd.args([
        "authorization",
        "--url",
        &issuer,
        "--client-id",
        CLIENT_ID,
        "-p",
    ])
    .arg(port.to_string())
    .arg("-o")
    .arg(&out)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run the conformance suite");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s).await;
        s
    });
    let authorize_prefix = format!("{issuer}/authorize?");
    let mut transcript = Vec::new();
    let mut followed = None;
    let run = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.starts_with(&authorize_prefix) {
                followed = Some((line.clone(), follow(&line).await));
            }
            transcript.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the conformance suite did not finish in {RUN_TIMEOUT:?}"));
    let stderr = stderr_task.await.unwrap_or_default();
    let transcript = transcript.join("\n");
    std::fs::write(out.join("stdout.log"), &transcript).unwrap();
    std::fs::write(out.join("stderr.log"), &stderr).unwrap();
    let ctx = format!("exit {status}\n--- stdout ---\n{transcript}\n--- stderr ---\n{stderr}");

    // The authorization URL the suite printed, and what our server answered.
    let (auth_url, (code_status, location)) =
        followed.unwrap_or_else(|| panic!("the suite printed no authorization URL: {ctx}"));
    let q = |url: &str, k: &str| {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(q(&auth_url, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(
        q(&auth_url, "resource"),
        None,
        "the suite sends no resource"
    );
    assert_eq!(q(&auth_url, "scope"), None, "the suite sends no scope");
    assert_eq!(code_status, 302, "{ctx}");
    assert!(location.starts_with(&format!("{redirect}?")), "{location}");
    assert_eq!(q(&location, "iss").as_deref(), Some(issuer.as_str()));
    assert_eq!(q(&location, "state"), q(&auth_url, "state"));
    assert!(
        q(&location, "code").is_some_and(|c| !c.is_empty()),
        "{location}"
    );

    // The suite's verdicts.
    let results = read_results(&out);
    let md = summary(&results, &issuer, &redirect);
    std::fs::write(
        target_dir().join("conformance-authorization-summary.md"),
        &md,
    )
    .unwrap();
    println!("{md}\n(results under {})", out.display());
    for s in SCENARIOS {
        assert!(results.contains_key(s), "no results for {s}: {ctx}");
    }
    let mut problems = Vec::new();
    for (scenario, checks) in &results {
        assert!(!checks.is_empty(), "{scenario} has no checks");
        for c in checks {
            let id = c["id"].as_str().unwrap_or("?");
            let status = c["status"].as_str().unwrap_or("?");
            // Without client ID metadata documents the conformance package warns that the
            // server does not advertise them; with them (the default) nothing may warn.
            let expected_warning = !cfg!(feature = "client-metadata")
                && id == "authorization-server-metadata-cimd"
                && status == "WARNING";
            if status != "SUCCESS" && !expected_warning {
                problems.push(format!("{scenario} {id}: {status} {c}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unexpected results:\n{}\n{ctx}",
        problems.join("\n")
    );
    let grant = &results["authorization-code-grant"][0];
    assert_eq!(grant["id"], "authorization-code-grant");
    assert_eq!(grant["status"], "SUCCESS", "{grant}");
    assert!(status.success(), "the suite exited with {status}: {ctx}");
}

/// GETs `url` and parses the JSON it answers.
async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The quickstart's configuration: environment, overridden by `--flag value`, and the
/// instructions it prints (the binary, as a user runs it).
#[tokio::test]
async fn quickstart_settings_come_from_env_and_flags() {
    let env = [
        ("MCP_OAUTH_DEMO_USER", "alice"),
        ("MCP_OAUTH_CLIENT_ID", "my-client"),
        (
            "MCP_OAUTH_CLIENT_REDIRECT_URIS",
            "http://127.0.0.1:3000/callback,https://app.example.com/cb",
        ),
        ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "0"),
        ("MCP_OAUTH_STORE", "memory"),
    ];
    let args = [
        "--public-url",
        "http://127.0.0.1:9/",
        "--insecure-auto-approve",
    ];
    let s = example::Example::start("quickstart", &env, &args).await;
    let out = s.stdout();
    assert!(
        out.contains("INSECURE AUTO-APPROVE as \"alice\""),
        "the flag overrides the environment: {out}"
    );
    assert!(out.contains("http://127.0.0.1:9/mcp"), "{out}");
    let meta = get_json(&s.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(meta["issuer"], "http://127.0.0.1:9", "{meta}");
    // The pre-registered client with both redirect URIs: authorizing to the second one is
    // accepted (a redirect to it), to an unregistered one refused (no redirect).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (redirect, accepted) in [
        ("https://app.example.com/cb", true),
        ("https://evil.example.com/cb", false),
    ] {
        let url = url::Url::parse_with_params(
            &s.url("/authorize"),
            [
                ("response_type", "code"),
                ("client_id", "my-client"),
                ("redirect_uri", redirect),
                (
                    "code_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                ),
                ("code_challenge_method", "S256"),
                ("state", "s"),
            ],
        )
        .unwrap();
        let res = http.get(url).send().await.unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert_eq!(
            location.starts_with(redirect),
            accepted,
            "{redirect}: {location}"
        );
    }
    drop(s);

    // A flag with `=` keeps its value as given, spaces included, over the environment.
    let p = example::Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_DEMO_PASSWORD", "from-the-environment"),
            ("MCP_OAUTH_STORE", "memory"),
        ],
        &["--demo-password=s3cret pass"],
    )
    .await;
    assert!(
        p.stdout().contains("password \"s3cret pass\""),
        "{}",
        p.stdout()
    );
    drop(p);

    // Defaults: a generated password, printed with what to paste into each client. State
    // persists in a SQLite file by default (in the current directory); `MCP_OAUTH_STORE` moves
    // it.
    let dir = std::env::temp_dir().join(format!("mcp-oauth-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.sqlite3");
    let path = file.display().to_string();
    let d = example::Example::start("quickstart", &[("MCP_OAUTH_STORE", &path)], &[]).await;
    let out = d.stdout();
    assert!(file.exists(), "the SQLite store is created on start");
    assert!(out.contains(&path), "{out}");
    let password = out
        .split("password \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a generated password: {out}"));
    assert!(password.len() >= 20, "{password}");
    assert!(out.contains("user \"demo\""), "{out}");
    let mcp = d.url("/mcp");
    for needle in [
        mcp.as_str(),
        "ChatGPT",
        "Claude",
        "npx @modelcontextprotocol/inspector",
        "Streamable HTTP",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert!(!out.contains("INSECURE"));
    let meta = get_json(&d.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(meta["issuer"], d.base, "{meta}");
    drop(d);

    // `--help` names every variable, and the defaults.
    let help = example::run("quickstart", &[], &["--help"]).await;
    assert!(help.success, "{help:?}");
    for needle in [
        "MCP_OAUTH_ADDR",
        "127.0.0.1:8000",
        "MCP_OAUTH_PUBLIC_URL",
        "MCP_OAUTH_DEMO_USER",
        "MCP_OAUTH_DEMO_PASSWORD",
        "MCP_OAUTH_DEMO_SCOPES",
        "MCP_OAUTH_CLIENT_ID",
        "MCP_OAUTH_CLIENT_SECRET",
        "MCP_OAUTH_CLIENT_REDIRECT_URIS",
        "MCP_OAUTH_STORE",
        "mcp-oauth.sqlite3",
        "MCP_OAUTH_INSECURE_AUTO_APPROVE",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {}", help.stdout);
    }

    // Mistakes are refused with a hint.
    let bad = example::run("quickstart", &[], &["--nope"]).await;
    assert!(!bad.success && bad.stderr.contains("--nope"), "{bad:?}");
    let bad = example::run(
        "quickstart",
        &[
            ("MCP_OAUTH_CLIENT_SECRET", "0123456789abcdef"),
            ("MCP_OAUTH_STORE", "memory"),
        ],
        &[],
    )
    .await;
    assert!(
        !bad.success && bad.stderr.contains("MCP_OAUTH_CLIENT_ID"),
        "{bad:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
