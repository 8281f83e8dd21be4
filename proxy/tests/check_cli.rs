//! `--check` (the exact URLs and the discovery documents clients will see; exit codes),
//! `hash-password` (a hash that then signs the user in), and `--help`.

mod common;

use common::{Running, TempDir};

const UPSTREAM: &str = "http://127.0.0.1:9/mcp";

/// The JSON document printed after the `# {title} (` header.
fn json_after(out: &str, title: &str) -> serde_json::Value {
    let start = out
        .find(&format!("# {title} ("))
        .unwrap_or_else(|| panic!("no {title}: {out}"));
    let rest = &out[start..];
    let body_start = rest.find('\n').unwrap() + 1;
    let mut de = serde_json::Deserializer::from_str(&rest[body_start..]).into_iter();
    de.next().unwrap().unwrap()
}

fn value_of(out: &str, key: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no line {key}: {out}"))[key.len()..]
        .trim()
        .to_owned()
}

#[tokio::test]
async fn check_prints_the_exact_urls_and_documents() {
    let dir = TempDir::new("check");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
upstream = "{UPSTREAM}"
public_url = "https://mcp.example.com/team"
password = "pw"
[scopes]
"files:read" = "Read your files"
"#
        ),
    )
    .unwrap();
    let (code, out, err) = common::run(
        dir.path(),
        &["--check", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(value_of(&out, "configuration"), "OK");
    assert_eq!(
        value_of(&out, "MCP server URL"),
        "https://mcp.example.com/team/mcp"
    );
    assert_eq!(
        value_of(&out, "protected resource metadata"),
        "https://mcp.example.com/.well-known/oauth-protected-resource/team/mcp"
    );
    assert_eq!(
        value_of(&out, "protected resource metadata (root)"),
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        value_of(&out, "authorization server metadata"),
        "https://mcp.example.com/.well-known/oauth-authorization-server/team"
    );
    assert_eq!(
        value_of(&out, "authorization endpoint"),
        "https://mcp.example.com/team/authorize"
    );
    assert_eq!(
        value_of(&out, "token endpoint"),
        "https://mcp.example.com/team/token"
    );
    assert_eq!(
        value_of(&out, "registration endpoint"),
        "https://mcp.example.com/team/register"
    );
    assert_eq!(
        value_of(&out, "backend"),
        format!("HTTP upstream {UPSTREAM}")
    );

    let prm = json_after(&out, "protected resource metadata");
    assert_eq!(prm["resource"], "https://mcp.example.com/team/mcp");
    assert_eq!(
        prm["authorization_servers"],
        serde_json::json!(["https://mcp.example.com/team"])
    );
    assert_eq!(prm["scopes_supported"], serde_json::json!(["files:read"]));
    let asm = json_after(&out, "authorization server metadata");
    assert_eq!(asm["issuer"], "https://mcp.example.com/team");
    assert_eq!(
        asm["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    // The store was opened (created) by the check.
    assert!(dir.path().join("mcp-oauth-proxy.sqlite3").exists());
}

#[tokio::test]
async fn check_shows_the_host_session_login() {
    let dir = TempDir::new("check-host");
    let (code, out, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--upstream",
            UPSTREAM,
            "--public-url",
            "https://mcp.example.com",
            "--host-session-header",
            "X-Forwarded-User",
            "--host-session-login-url",
            "https://sso.example.com/login",
            "--trusted-proxy",
            "10.0.0.1",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        value_of(&out, "login").contains("X-Forwarded-User"),
        "{out}"
    );
    assert_eq!(
        value_of(&out, "host login URL"),
        "https://sso.example.com/login"
    );
}

#[tokio::test]
async fn a_broken_configuration_fails_the_check_with_the_reason() {
    let dir = TempDir::new("check-broken");
    // A store that cannot be opened.
    let (code, out, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--store",
            "/nonexistent-dir/for/sure/x.sqlite3",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("store"), "{err}");
    assert!(!out.contains("configuration"), "{out}");
    // Certificate files that do not exist.
    let (code, _, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--tls-cert",
            "nope.pem",
            "--tls-key",
            "nope.key",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("TLS") && err.contains("nope.pem"), "{err}");
    // A stdio program that does not exist.
    let (code, _, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--password",
            "pw",
            "--",
            "no-such-mcp-server-program",
            "--stdio",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("no-such-mcp-server-program"), "{err}");
    // One that does: the check passes and names it.
    let (code, out, err) = common::run(
        dir.path(),
        &["--check", "--password", "pw", "--", "cat"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stdio command [\"cat\"]"), "{out}");
    // A config file that does not exist.
    let (code, _, err) =
        common::run(dir.path(), &["--check", "--config", "missing.toml"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");
}

#[tokio::test]
async fn hash_password_makes_a_hash_that_signs_the_user_in() {
    use tokio::io::AsyncWriteExt as _;
    let dir = TempDir::new("hash");
    let mut cmd = common::command(dir.path());
    cmd.arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", common::PASSWORD).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(common::PASSWORD));

    // Empty input is refused.
    let mut cmd = common::command(dir.path());
    cmd.arg("hash-password").stdin(std::process::Stdio::null());
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The hash in a users file signs alice in; a wrong password does not.
    let users = dir.path().join("users");
    std::fs::write(&users, format!("# test users\n{}:{hash}\n", common::USER)).unwrap();
    let upstream = common::fake_mcp().await;
    let proxy = Running::start(
        dir.path(),
        &[
            "--upstream",
            &upstream,
            "--users-file",
            users.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let client_id = common::register(&proxy.base, "hash test client").await;
    let tokens = common::sign_in(&proxy.base, &proxy.mcp, &client_id, "mcp").await;
    assert!(!tokens.access.is_empty());
    let pkce = common::pkce();
    let wrong = common::browser::Browser::new(common::USER, "wrong password");
    let outcome = wrong
        .run(
            &common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp),
            common::browser::Decision::Approve,
        )
        .await;
    assert!(
        !matches!(&outcome, Ok(common::browser::Outcome::Callback(u)) if u.contains("code=")),
        "a wrong password got a code: {outcome:?}"
    );
    // Grants and refusals show in the default log level, and no secret does.
    let logs = proxy.logs();
    assert!(logs.contains("event=\"authorization.granted\""), "{logs}");
    assert!(logs.contains("event=\"token.issued\""), "{logs}");
    assert!(logs.contains("event=\"login.failed\""), "{logs}");
    assert!(logs.contains("path=/token status=200"), "{logs}");
    assert!(!logs.contains(common::PASSWORD), "the password is logged");
    assert!(!logs.contains(&tokens.access), "a token is logged");
    proxy.stop().await;
}

#[tokio::test]
async fn help_reads_like_documentation() {
    let dir = TempDir::new("help");
    let (code, out, _) = common::run(dir.path(), &["--help"], &[]).await;
    assert_eq!(code, 0);
    for needle in [
        "Listener:",
        "Backend:",
        "Login:",
        "Scopes and tools:",
        "Limits and lifetimes:",
        "Examples:",
        "MCP_OAUTH_DEMO_PASSWORD",
        "hash-password",
        "--check",
        "precedence",
    ] {
        assert!(out.contains(needle), "--help lacks {needle:?}:\n{out}");
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = TempDir::new("jsonlog");
    let (code, _, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("target").is_some(),
            "{line}"
        );
    }
}

/// PostgreSQL and Redis stores, when the environment names test servers
/// (`MCP_OAUTH_TEST_POSTGRES_URL`, `MCP_OAUTH_TEST_REDIS_URL`, as the root crate's tests).
#[tokio::test]
async fn shared_stores_open_by_url_when_available() {
    let dir = TempDir::new("stores");
    for var in ["MCP_OAUTH_TEST_POSTGRES_URL", "MCP_OAUTH_TEST_REDIS_URL"] {
        let Ok(mut url) = std::env::var(var) else {
            eprintln!("{var} not set: that store is not checked");
            continue;
        };
        // PostgreSQL under the test setup's trust authentication accepts any password: give
        // one, to see that `--check` hides it. (Redis would refuse an AUTH it does not expect.)
        if var.contains("POSTGRES") {
            let mut parsed = url::Url::parse(&url).unwrap();
            if parsed.password().is_none() && !parsed.username().is_empty() {
                parsed.set_password(Some("not-a-real-secret-pw")).unwrap();
                url = parsed.to_string();
            }
        }
        let password = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned));
        let (code, out, err) = common::run(
            dir.path(),
            &[
                "--check",
                "--upstream",
                UPSTREAM,
                "--password",
                "pw",
                "--store",
                &url,
            ],
            &[],
        )
        .await;
        assert_eq!(code, 0, "{var}: {err}");
        if let Some(password) = password {
            assert!(
                !out.contains(&password),
                "{var}: the store password is printed"
            );
            assert!(
                !err.contains(&password),
                "{var}: the store password is logged"
            );
        }
    }
    // A URL that cannot be reached fails the check, naming the store.
    let (code, _, err) = common::run(
        dir.path(),
        &[
            "--check",
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--store",
            "redis://127.0.0.1:9",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("store") && err.contains("Redis"), "{err}");
}
