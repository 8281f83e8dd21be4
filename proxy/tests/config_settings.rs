//! Settings: the precedence flag > environment > file > default (through the binary's
//! `--check`, with variables set on the child only), the file's parsing (unknown keys refused
//! by name, bad values named), and the library's resolution of every kind of value.

mod common;

use std::time::Duration;

use clap::Parser as _;
use common::TempDir;
use mcp_oauth_proxy::config_file;
use mcp_oauth_proxy::settings::{ChallengeStyleSetting, Login, Rate, Settings, UserSecret};

const UPSTREAM: &str = "http://127.0.0.1:9/mcp";

/// Runs `--check` with `args` and `envs` in `dir` and asserts the address it would listen on
/// and the MCP URL clients would see.
async fn assert_check(
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
    listen: &str,
    mcp_url: &str,
) {
    let mut all = vec!["--check"];
    all.extend_from_slice(args);
    let (code, out, err) = common::run(dir, &all, envs).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        common::check_value(&out, "listen").starts_with(&format!("{listen} ")),
        "{out}"
    );
    assert_eq!(
        common::check_value(&out, "MCP server URL"),
        mcp_url,
        "{out}"
    );
}

#[tokio::test]
async fn flag_beats_env_beats_file_beats_default() {
    let dir = TempDir::new("precedence");
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "upstream = \"{UPSTREAM}\"\npassword = \"pw\"\naddr = \"127.0.0.1:7001\"\npublic_url = \"https://file.example.com\"\n"
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();

    // Default: no addr anywhere.
    assert_check(
        dir.path(),
        &["--upstream", UPSTREAM],
        &[("MCP_OAUTH_DEMO_PASSWORD", "pw")],
        "127.0.0.1:8000",
        "http://127.0.0.1:8000/mcp",
    )
    .await;
    // File.
    assert_check(
        dir.path(),
        &["--config", c],
        &[],
        "127.0.0.1:7001",
        "https://file.example.com/mcp",
    )
    .await;
    // Environment beats the file (MCP_OAUTH_CONFIG names the file too).
    let envs = [
        ("MCP_OAUTH_CONFIG", c),
        ("MCP_OAUTH_ADDR", "127.0.0.1:7002"),
        ("MCP_OAUTH_PUBLIC_URL", "https://env.example.com/"),
    ];
    assert_check(
        dir.path(),
        &[],
        &envs,
        "127.0.0.1:7002",
        "https://env.example.com/mcp",
    )
    .await;
    // A flag beats both.
    assert_check(
        dir.path(),
        &[
            "--addr",
            "127.0.0.1:7003",
            "--public-url",
            "https://flag.example.com",
        ],
        &envs,
        "127.0.0.1:7003",
        "https://flag.example.com/mcp",
    )
    .await;
}

/// Runs `--check` on `dir/bad.toml` holding an upstream, a password and `rest`.
async fn check_file(dir: &std::path::Path, rest: &str) -> (i32, String, String) {
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        format!("upstream = \"{UPSTREAM}\"\npassword = \"pw\"\n{rest}\n"),
    )
    .unwrap();
    common::check(dir, &["--config", cfg.to_str().unwrap()]).await
}

#[tokio::test]
async fn an_unknown_key_is_refused_by_name() {
    let dir = TempDir::new("unknown");
    let (code, out, err) = check_file(dir.path(), "remember_consnet = true").await;
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("remember_consnet"), "{err}");
    assert!(err.contains("bad.toml"), "the file is named: {err}");
    assert!(out.is_empty(), "{out}");

    // In a table too.
    let (code, _, err) = check_file(dir.path(), "[rate_limits]\ntokne = \"5/min\"").await;
    assert_eq!(code, 2);
    assert!(err.contains("tokne"), "{err}");
}

#[tokio::test]
async fn bad_values_are_named() {
    let dir = TempDir::new("badvalues");
    let cases = [
        ("addr = 5", "addr"),
        ("lazy = \"maybe\"", "lazy"),
        ("trusted_proxies = [\"not-an-ip\"]", "trusted_proxies"),
        ("access_token_ttl = \"5 fortnights\"", "access_token_ttl"),
        ("revocation_cache = \"2m\"", "revocation_cache"),
        ("max_upstream_requests = 0", "max_upstream_requests"),
        ("max_upstream_requests = \"many\"", "max_upstream_requests"),
        ("[rate_limits]\ntoken = \"lots\"", "rate_limits.token"),
        ("challenge_style = \"loud\"", "challenge_style"),
        ("public_url = \"ftp://x.example.com\"", "public_url"),
        ("default_scopes = [\"nope\"]", "default_scopes"),
        (
            "[tool_scopes]\nwrite = [\"files:write\"]",
            "tool_scopes.write",
        ),
    ];
    for (line, key) in cases {
        let (code, _, err) = check_file(dir.path(), line).await;
        assert_eq!(code, 2, "{line}: {err}");
        assert!(
            err.contains(key),
            "{line}: the key {key} is not named: {err}"
        );
    }
    // A bad flag value is named too.
    let (code, _, err) = common::check(
        dir.path(),
        &[
            "--upstream",
            UPSTREAM,
            "--password",
            "pw",
            "--rate-limit",
            "tokn=5/min",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("rate_limit"), "{err}");
}

#[tokio::test]
async fn missing_or_double_backend_and_missing_users_are_refused() {
    let dir = TempDir::new("backend");
    let (code, _, err) = common::check(dir.path(), &["--password", "pw"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no MCP server"), "{err}");
    let (code, _, err) = common::check(
        dir.path(),
        &["--password", "pw", "--upstream", UPSTREAM, "--", "cat"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("both"), "{err}");
    let (code, _, err) = common::check(dir.path(), &["--upstream", UPSTREAM]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no users"), "{err}");
}

fn parse(args: &[&str], file: &str) -> Result<mcp_oauth_proxy::settings::Config, String> {
    let mut argv = vec!["mcp-oauth-proxy"];
    argv.extend_from_slice(args);
    let settings = Settings::try_parse_from(argv).map_err(|e| e.to_string())?;
    let file = config_file::parse(file).map_err(|e| e.to_string())?;
    settings.resolve_with(file).map_err(|e| e.to_string())
}

#[test]
fn the_file_fills_every_kind_of_value_and_flags_replace_lists() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let file = format!(
        r#"
upstream = "{UPSTREAM}"
store = "postgres://u:p@db/mcp"
remember_consent = true
lazy = true
public_tools = ["search"]
default_scopes = ["files:read"]
trusted_proxies = ["10.0.0.1", "::1"]
allow_hosts = ["mcp.internal"]
allow_origins = ["https://app.example.com"]
challenge_style = "tool-result"
access_token_ttl = "15m"
refresh_token_ttl = 86400
code_ttl = "30s"
revocation_cache = "5s"
max_upstream_requests = 8
log_format = "json"

[users]
bob = "{hash}"

[scopes]
"files:read" = "Read your files"
"files:write" = "Change your files"

[scope_implies]
"files:write" = ["files:read"]

[tool_scopes]
write = ["files:write"]

[rate_limits]
token = "10/min burst 20"
login = "off"
"#
    );
    let c = parse(&[], &file).unwrap();
    assert_eq!(c.upstream.as_deref(), Some(UPSTREAM));
    assert_eq!(c.store, "postgres://u:p@db/mcp");
    assert!(c.remember_consent && c.lazy);
    assert_eq!(c.public_tools, ["search"]);
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.challenge_style, ChallengeStyleSetting::ToolResult);
    assert_eq!(c.access_token_ttl, Some(Duration::from_secs(900)));
    assert_eq!(c.refresh_token_ttl, Some(Duration::from_secs(86400)));
    assert_eq!(c.code_ttl, Some(Duration::from_secs(30)));
    assert_eq!(c.revocation_cache, Duration::from_secs(5));
    assert_eq!(c.max_upstream_requests, 8);
    assert_eq!(c.scope_implies["files:write"], ["files:read"]);
    assert_eq!(c.tool_scopes["write"], ["files:write"]);
    assert_eq!(
        c.rate_limits.token,
        Some(Rate::PerMinute {
            per_minute: 10,
            burst: Some(20)
        })
    );
    assert_eq!(c.rate_limits.login, Some(Rate::Off));
    assert_eq!(
        c.rate_limits.register, None,
        "unset keeps the library default"
    );
    match &c.login {
        Login::Users(users) => {
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].name, "bob");
            assert!(matches!(users[0].secret, UserSecret::Hash(_)));
        }
        other => panic!("{other:?}"),
    }

    // Flags replace the file's lists and tables whole.
    let c = parse(
        &[
            "--public-tool",
            "find",
            "--tool-scope",
            "write=files:read",
            "--trusted-proxy",
            "10.9.9.9",
            "--lazy",
        ],
        &file,
    )
    .unwrap();
    assert_eq!(c.public_tools, ["find"]);
    assert_eq!(c.tool_scopes.len(), 1);
    assert_eq!(c.tool_scopes["write"], ["files:read"]);
    assert_eq!(
        c.trusted_proxies,
        ["10.9.9.9".parse::<std::net::IpAddr>().unwrap()]
    );
    // A limit from a flag beats the file's; unset anywhere, the default.
    let c = parse(&["--max-upstream-requests", "3"], &file).unwrap();
    assert_eq!(c.max_upstream_requests, 3);
    let c = parse(&["--upstream", UPSTREAM, "--password", "pw"], "").unwrap();
    assert_eq!(c.max_upstream_requests, 256);
    // `--lazy=false` turns off what the file turned on.
    let e = parse(&["--lazy=false"], &file).unwrap_err();
    assert!(e.contains("public_tools need lazy"), "{e}");
}

#[test]
fn login_kinds_are_resolved_and_checked() {
    let base = format!("upstream = \"{UPSTREAM}\"\n");
    // The single user from flags: name defaults to demo.
    let c = parse(&["--password", "pw"], &base).unwrap();
    assert!(matches!(&c.login, Login::Users(u) if u[0].name == "demo"));
    // A host session needs the header, the login URL and trusted proxies.
    let e = parse(&["--login", "host-session"], &base).unwrap_err();
    assert!(e.contains("host_session_header"), "{e}");
    let e = parse(
        &[
            "--host-session-header",
            "X-Forwarded-User",
            "--host-session-login-url",
            "https://sso.example.com/login",
        ],
        &base,
    )
    .unwrap_err();
    assert!(e.contains("trusted_proxies"), "{e}");
    let c = parse(
        &[
            "--host-session-header",
            "X-Forwarded-User",
            "--host-session-login-url",
            "https://sso.example.com/login",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        &base,
    )
    .unwrap();
    assert!(matches!(c.login, Login::HostSession { .. }));
    // An upstream provider is inferred from its client id; a bad provider is named.
    let c = parse(
        &[
            "--upstream-client-id",
            "abc",
            "--upstream-issuer",
            "https://idp.example.com",
        ],
        &base,
    )
    .unwrap();
    assert!(matches!(&c.login, Login::Upstream(u) if u.provider == "oidc"));
    let e = parse(
        &[
            "--upstream-client-id",
            "abc",
            "--upstream-provider",
            "myspace",
        ],
        &base,
    )
    .unwrap_err();
    assert!(e.contains("upstream_provider"), "{e}");
    // A users_file line that is not a hash is refused without echoing it.
    let dir = TempDir::new("usersfile");
    let f = dir.path().join("users");
    std::fs::write(&f, "# users\ncarol:hunter2\n").unwrap();
    let e = parse(&["--users-file", f.to_str().unwrap()], &base).unwrap_err();
    assert!(e.contains("line 2") && e.contains("carol"), "{e}");
    assert!(!e.contains("hunter2"), "the secret is echoed: {e}");
}

#[tokio::test]
async fn the_sample_configuration_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp-oauth-proxy.example.toml");
    let text = std::fs::read_to_string(sample).unwrap();
    config_file::parse(&text).unwrap();
    let dir = TempDir::new("sample");
    let (code, out, err) =
        common::check(dir.path(), &["--config", sample, "--password", "pw"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration"), "{out}");
}

#[test]
fn stdio_settings_are_resolved_and_checked() {
    let base = "command = [\"python\", \"server.py\"]\npassword = \"pw\"\n";
    let c = parse(&[], base).unwrap();
    assert_eq!(c.command, ["python", "server.py"]);
    assert_eq!((c.max_children, c.max_children_per_user), (32, 8));
    // The per-user bound follows max_children (a quarter, at least 1) unless given.
    let c = parse(&["--max-children", "12"], base).unwrap();
    assert_eq!(c.max_children_per_user, 3);
    let c = parse(&[], &format!("{base}max_children = 2\n")).unwrap();
    assert_eq!(c.max_children_per_user, 1);
    let c = parse(
        &["--max-children-per-user", "5"],
        &format!("{base}max_children_per_user = 2\n"),
    )
    .unwrap();
    assert_eq!(c.max_children_per_user, 5);
    let e = parse(&["--max-children-per-user", "0"], base).unwrap_err();
    assert!(e.contains("max_children_per_user"), "{e}");
    let e = parse(
        &["--max-children", "4", "--max-children-per-user", "5"],
        base,
    )
    .unwrap_err();
    assert!(
        e.contains("max_children_per_user") && e.contains("max_children (4)"),
        "{e}"
    );
    // Lazy authentication cannot work with a stdio command: refused, naming both.
    for (args, file) in [
        (&["--lazy"][..], base.to_owned()),
        (&[][..], format!("{base}lazy = true\n")),
    ] {
        let e = parse(args, &file).unwrap_err();
        assert!(e.contains("lazy") && e.contains("stdio command"), "{e}");
    }
    assert!(parse(&["--lazy=false"], base).is_ok());
}
