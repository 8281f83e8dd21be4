//! The examples as black boxes: [`Example::start`] builds an example binary (once per test
//! binary and example, with the features this test binary was compiled with, so nothing is
//! rebuilt with other features), runs it with the given environment and arguments, reads the
//! bound address from its `listening on http://ADDR` line, and kills it when dropped.
//!
//! Include it next to the shared support module or on its own:
//! ```ignore
//! #[path = "support/example.rs"]
//! mod example;
//! ```
#![allow(dead_code, unreachable_pub)]

#[path = "ports.rs"]
mod ports;
#[allow(unused_imports)]
pub(crate) use ports::free_port;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader, Lines};
use tokio::process::{Child, Command};

/// The crate's features this test binary was built with, as a `--features` list. Every
/// feature of the crate is named here: a new feature must be added, or the examples are built
/// without it.
fn features() -> String {
    let all = [
        ("aws-lc-rs", cfg!(feature = "aws-lc-rs")),
        ("server", cfg!(feature = "server")),
        ("macros", cfg!(feature = "macros")),
        ("consent-page", cfg!(feature = "consent-page")),
        ("remote-jwks", cfg!(feature = "remote-jwks")),
        ("introspection", cfg!(feature = "introspection")),
        ("private-key-jwt", cfg!(feature = "private-key-jwt")),
        ("rmcp", cfg!(feature = "rmcp")),
        ("sqlite", cfg!(feature = "sqlite")),
        ("postgres", cfg!(feature = "postgres")),
        ("redis", cfg!(feature = "redis")),
        ("testkit", cfg!(feature = "testkit")),
        ("client-metadata", cfg!(feature = "client-metadata")),
        ("upstream-oidc", cfg!(feature = "upstream-oidc")),
        ("metrics", cfg!(feature = "metrics")),
        ("doctor", cfg!(feature = "doctor")),
    ];
    // The list must name every feature in Cargo.toml: a forgotten one would make cargo
    // rebuild the crate (and the example) without it.
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml is readable");
    let declared: Vec<&str> = manifest
        .split("\n[features]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("Cargo.toml has a [features] table")
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
        .filter(|k| *k != "default" && !k.starts_with('#'))
        .collect();
    for f in &declared {
        assert!(
            all.iter().any(|(name, _)| name == f),
            "tests/support/example.rs does not know the feature `{f}`: add it to features()"
        );
    }
    all.iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds `examples/{name}.rs` (`cargo build --example`) and returns the binary's path.
fn build(name: &str) -> Result<PathBuf, String> {
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "--example",
            name,
        ])
        .args(["--no-default-features", "--features", &features()])
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --example {name} failed ({})",
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo built no executable for example {name}"))
}

/// The path of the example binary `name`, built on first use in this test binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let path = build(name).unwrap_or_else(|e| panic!("{e}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// A command running the example `name` (built first), with a quiet default log filter.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs the example `name` to its end (for settings it refuses): at most 60 seconds.
pub async fn run(name: &str, env: &[(&str, &str)], args: &[&str]) -> Finished {
    let mut cmd = command(name);
    cmd.envs(env.iter().copied()).args(args);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("example {name} did not exit"))
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    Finished {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running example, killed on drop.
#[derive(Debug)]
pub struct Example {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// Copies `from` into `into`, line by line, until it closes (so the child never blocks on a
/// full pipe).
fn collect<R: AsyncRead + Unpin + Send + 'static>(
    mut lines: Lines<BufReader<R>>,
    into: Arc<Mutex<String>>,
) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut out = into.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl Example {
    /// Starts the example `name` with `env` and `args` (`MCP_OAUTH_ADDR` is
    /// `127.0.0.1:0` unless `env` sets it) and waits until it prints its address.
    pub async fn start(name: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = command(name);
        cmd.env("MCP_OAUTH_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .args(args);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(
            BufReader::new(child.stderr.take().expect("piped stderr")).lines(),
            stderr.clone(),
        );
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                {
                    let mut out = stdout.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
                if let Some((_, addr)) = line.split_once("listening on http://") {
                    return addr.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            panic!(
                "example {name} did not start\n--- stdout\n{}\n--- stderr\n{}",
                stdout.lock().unwrap_or_else(|e| e.into_inner()),
                stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        };
        collect(lines, stdout.clone());
        Self {
            child,
            addr,
            base: format!("http://{addr}"),
            stdout,
            stderr,
        }
    }

    /// The URL of `path` on this example.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything it printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Everything it printed on standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The process id, while it runs (to read its `/proc/PID/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9`, and waits until the process is gone.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A running `quickstart` binary and the URLs a client needs.
pub struct Running {
    /// The MCP endpoint (`…/mcp`).
    pub mcp_url: String,
    /// The issuer (the server's base URL).
    pub issuer: String,
    /// The protected-resource metadata URL of `/mcp`.
    pub metadata_url: String,
    /// Kills the server when dropped.
    pub _example: Example,
}

/// The quickstart binary on `127.0.0.1:0`: memory store, `user` signing in with `password`.
pub async fn start_quickstart(user: &str, password: &str) -> Running {
    let example = Example::start(
        "quickstart",
        &[
            ("MCP_OAUTH_DEMO_USER", user),
            ("MCP_OAUTH_DEMO_PASSWORD", password),
            ("MCP_OAUTH_STORE", "memory"),
        ],
        &[],
    )
    .await;
    Running {
        mcp_url: example.url("/mcp"),
        issuer: example.base.clone(),
        metadata_url: example.url("/.well-known/oauth-protected-resource/mcp"),
        _example: example,
    }
}
