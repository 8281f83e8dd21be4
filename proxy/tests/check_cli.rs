//! `--check` (the exact URLs and the discovery documents clients will see; exit codes),
//! `hash-password` (a hash that then signs the user in; on a terminal, asked twice with echo
//! off), and `--help`.

mod common;

use common::{Running, TempDir, check_json, check_value};

const UPSTREAM: &str = "http://127.0.0.1:9/mcp";

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
    let (code, out, err) = common::check(dir.path(), &["--config", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let backend = format!("HTTP upstream {UPSTREAM}");
    for (key, expected) in [
        ("configuration", "OK"),
        ("MCP server URL", "https://mcp.example.com/team/mcp"),
        (
            "protected resource metadata",
            "https://mcp.example.com/.well-known/oauth-protected-resource/team/mcp",
        ),
        (
            "protected resource metadata (root)",
            "https://mcp.example.com/.well-known/oauth-protected-resource",
        ),
        (
            "authorization server metadata",
            "https://mcp.example.com/.well-known/oauth-authorization-server/team",
        ),
        (
            "authorization endpoint",
            "https://mcp.example.com/team/authorize",
        ),
        ("token endpoint", "https://mcp.example.com/team/token"),
        (
            "registration endpoint",
            "https://mcp.example.com/team/register",
        ),
        ("backend", backend.as_str()),
        (
            "revocation checks",
            "every request (a revocation takes effect at once)",
        ),
    ] {
        assert_eq!(check_value(&out, key), expected, "{key}");
    }

    let prm = check_json(&out, "protected resource metadata");
    assert_eq!(prm["resource"], "https://mcp.example.com/team/mcp");
    assert_eq!(
        prm["authorization_servers"],
        serde_json::json!(["https://mcp.example.com/team"])
    );
    assert_eq!(prm["scopes_supported"], serde_json::json!(["files:read"]));
    let asm = check_json(&out, "authorization server metadata");
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
    let (code, out, err) = common::check(
        dir.path(),
        &[
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
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        check_value(&out, "login").contains("X-Forwarded-User"),
        "{out}"
    );
    assert_eq!(
        check_value(&out, "host login URL"),
        "https://sso.example.com/login"
    );
}

#[tokio::test]
async fn check_never_prints_the_upstream_urls_secrets() {
    let dir = TempDir::new("check-upstream-secret");
    let (code, out, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            "http://svc:hunter2@127.0.0.1:9/mcp?api_key=s3cret-key#frag",
            "--password",
            "pw",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        check_value(&out, "backend"),
        "HTTP upstream http://127.0.0.1:9/mcp"
    );
    for secret in ["hunter2", "s3cret-key", "svc", "frag"] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
        assert!(!err.contains(secret), "{secret} logged: {err}");
    }
}

#[tokio::test]
async fn a_broken_configuration_fails_the_check_with_the_reason() {
    let dir = TempDir::new("check-broken");
    // A store that cannot be opened.
    let (code, out, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--store",
            "/nonexistent-dir/for/sure/x.sqlite3",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("store"), "{err}");
    assert!(!out.contains("configuration"), "{out}");
    // Certificate files that do not exist.
    let (code, _, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--tls-cert",
            "nope.pem",
            "--tls-key",
            "nope.key",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("TLS") && err.contains("nope.pem"), "{err}");
    // A stdio program that does not exist.
    let (code, _, err) = common::check(
        dir.path(),
        &[
            "--password",
            "pw",
            "--",
            "no-such-mcp-server-program",
            "--stdio",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("no-such-mcp-server-program"), "{err}");
    // One that does: the check passes and names it (and a revocation cache, when set).
    let (code, out, err) = common::check(
        dir.path(),
        &["--password", "pw", "--revocation-cache", "5s", "--", "cat"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stdio command [\"cat\"]"), "{out}");
    assert_eq!(
        check_value(&out, "revocation checks"),
        "cached 5s (a revoked token keeps working up to that long)"
    );
    // A config file that does not exist.
    let (code, _, err) = common::check(dir.path(), &["--config", "missing.toml"]).await;
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
    assert!(logs.contains("path=\"/token\" status=200"), "{logs}");
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
    let (code, _, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--log-format",
            "json",
        ],
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
        let (code, out, err) = common::check(
            dir.path(),
            &["--upstream", UPSTREAM, "--password", "pw", "--store", &url],
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
    let (code, _, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--store",
            "redis://127.0.0.1:9",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("store") && err.contains("Redis"), "{err}");
}

/// Drives `hash-password` on a pseudo-terminal (Python's `pty`, from the standard library):
/// answers its two prompts with `first` and `second` and returns (exit code, everything the
/// terminal showed).
async fn hash_password_on_a_terminal(first: &str, second: &str) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, sys
exe, first, second = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(exe, [exe, "hash-password"])
shown = b""
def read_until(marker):
    global shown
    while marker not in shown:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            chunk = b""
        if not chunk:
            raise SystemExit("the prompt %r never came: %r" % (marker, shown))
        shown += chunk
read_until(b"Password: ")
os.write(fd, first + b"\n")
read_until(b"Again: ")
os.write(fd, second + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    shown += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", DRIVER, common::bin(), first, second])
            .output(),
    )
    .await
    .expect("hash-password on a terminal did not finish")
    .expect("python3 (standard library only) runs the pseudo-terminal driver");
    assert!(
        out.stderr.is_empty(),
        "driver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// On a terminal the password is asked twice with echo off: neither answer shows on the
/// screen, the hash does, and two different answers are refused.
#[tokio::test]
async fn hash_password_on_a_terminal_hides_the_password() {
    let (code, shown) = hash_password_on_a_terminal(common::PASSWORD, common::PASSWORD).await;
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Password: "), "{shown}");
    assert!(shown.contains("Again: "), "{shown}");
    assert!(!shown.contains(common::PASSWORD), "echoed: {shown}");
    let hash = shown
        .split_whitespace()
        .find(|w| w.starts_with("$argon2id$"))
        .unwrap_or_else(|| panic!("no hash: {shown}"));
    use mcp_oauth::authn::UserAuthenticator as _;
    let users = mcp_oauth::authn::StaticUsers::new()
        .try_with_user(common::USER, hash)
        .expect("an argon2id hash");
    let signed_in = users
        .verify_password(common::USER, common::PASSWORD)
        .await
        .unwrap();
    assert!(signed_in.is_some(), "the hash is not of the typed password");
    let wrong = users.verify_password(common::USER, "wrong").await.unwrap();
    assert!(wrong.is_none());

    let (code, shown) = hash_password_on_a_terminal(common::PASSWORD, "something else").await;
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!shown.contains("$argon2id$"), "{shown}");
    assert!(!shown.contains("something else"), "echoed: {shown}");
}
