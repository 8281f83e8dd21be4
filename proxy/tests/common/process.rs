//! The proxy binary as a child process: [`Running`] starts it on `127.0.0.1:0`, reads its
//! `MCP server URL:` line and keeps its standard error (the logs) for assertions; [`run`]
//! runs it to completion, and [`check_value`] / [`check_json`] read a `--check` report. Also temporary directories, free ports and process liveness.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

use super::{PASSWORD, USER};

/// The proxy binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-oauth-proxy")
}

/// A `Command` for the binary in `dir`, with no `MCP_OAUTH_*` nor `RUST_LOG` inherited.
pub fn command(dir: &Path) -> Command {
    command_as(dir, bin())
}

/// [`command`] starting `program` (which starts the binary).
fn command_as(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_OAUTH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub async fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = command(dir);
    cmd.args(args).envs(envs.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the binary did not finish in time")
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of a `key   value` line of `--check`'s report (panics, with the report, when
/// there is none).
pub fn check_value(report: &str, key: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no line {key}: {report}"))[key.len()..]
        .trim()
        .to_owned()
}

/// The JSON document `--check`'s report prints after its `# {title} (` header.
pub fn check_json(report: &str, title: &str) -> serde_json::Value {
    let start = report
        .find(&format!("# {title} ("))
        .unwrap_or_else(|| panic!("no {title}: {report}"));
    let rest = &report[start..];
    let body_start = rest.find('\n').unwrap() + 1;
    let mut de = serde_json::Deserializer::from_str(&rest[body_start..]).into_iter();
    de.next().unwrap().unwrap()
}

/// Runs the binary's `--check` with `args` in `dir` (no extra variables): (exit code,
/// stdout, stderr).
pub async fn check(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--check"];
    all.extend_from_slice(args);
    run(dir, &all, &[]).await
}

/// A running proxy (killed when dropped; its own temporary directory, if any, removed).
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The public base URL (no path).
    pub base: String,
    /// The MCP URL.
    pub mcp: String,
    /// Everything it wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    _dir: Option<TempDir>,
}

impl Running {
    /// Starts the binary in `dir` with `args` (and `--addr 127.0.0.1:0` unless given) and
    /// the variables `envs`, and waits for its `MCP server URL:` line.
    pub async fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn(command(dir), args, envs).await
    }

    /// [`Running::start`] from the `Command` `cmd`.
    async fn spawn(mut cmd: Command, args: &[&str], envs: &[(&str, &str)]) -> Self {
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mcp = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("MCP server URL: ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(mcp) = mcp else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!(
                "the proxy did not start; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = mcp.trim_end_matches("/mcp").to_owned();
        Self {
            child,
            base,
            mcp,
            stderr,
            _dir: None,
        }
    }

    /// Starts it in a fresh temporary directory (removed when it is dropped) as the test
    /// user ([`USER`]/[`PASSWORD`]) with a fresh SQLite store there, `args` and `envs`.
    pub async fn with_user(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::with_user_as(name, false, args, envs).await
    }

    /// [`Running::with_user`]; `unprivileged`: as an ordinary user runs it, which when the
    /// tests run as root means with every capability dropped (`setpriv`), uid 0 then being
    /// an ordinary uid.
    async fn with_user_as(
        name: &str,
        unprivileged: bool,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let dir = TempDir::new(name);
        let store = dir.path().join("s.sqlite3");
        let store = store.to_str().expect("store path");
        let mut all = vec!["--user", USER, "--password", PASSWORD, "--store", store];
        all.extend_from_slice(args);
        let cmd = if unprivileged && rustix::process::geteuid().is_root() {
            let mut cmd = command_as(dir.path(), "setpriv");
            cmd.args(["--bounding-set", "-all", "--inh-caps", "-all", "--", bin()]);
            cmd
        } else {
            command(dir.path())
        };
        let mut running = Self::spawn(cmd, &all, envs).await;
        running._dir = Some(dir);
        running
    }

    /// [`Running::with_user`] in front of a stdio server: `extra` flags, then `--` and
    /// `command`; debug logs, and `MCP_OAUTH_TEST_SECRET` set (it must not reach the child).
    pub async fn stdio(name: &str, extra: &[&str], command: &[String]) -> Self {
        Self::stdio_as(name, false, extra, command).await
    }

    /// [`Running::stdio`] as an ordinary user runs it: should the tests run as root, the
    /// proxy (and so its children) starts without capabilities (`CAP_SYS_PTRACE`,
    /// `CAP_SYS_ADMIN` or `CAP_PERFMON` let a process read any other's
    /// `/proc/<pid>/environ`, whatever that one does).
    pub async fn stdio_unprivileged(name: &str, extra: &[&str], command: &[String]) -> Self {
        Self::stdio_as(name, true, extra, command).await
    }

    async fn stdio_as(name: &str, unprivileged: bool, extra: &[&str], command: &[String]) -> Self {
        let mut args = extra.to_vec();
        args.push("--");
        args.extend(command.iter().map(String::as_str));
        let envs = [
            ("RUST_LOG", "info,mcp_oauth_proxy=debug"),
            ("MCP_OAUTH_TEST_SECRET", "must-not-reach-the-child"),
        ];
        Self::with_user_as(name, unprivileged, &args, &envs).await
    }

    /// [`Running::with_user`] in front of the HTTP server at `upstream` (`--upstream`), with
    /// `extra` flags and `RUST_LOG=debug` so that the logs are as talkative as they get.
    pub async fn upstream(upstream: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--upstream", upstream];
        args.extend_from_slice(extra);
        Self::with_user("http", &args, &[("RUST_LOG", "debug")]).await
    }

    /// Stops it (SIGKILL) and waits.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends `SIGTERM` and waits (bounded) for it to exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.pid();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The child's process id (0 once it has exited).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// A fresh directory under the target's temporary directory (kept after the test).
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "proxy-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A fresh temporary directory ([`temp_dir`]) removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory named after `name`.
    pub fn new(name: &str) -> Self {
        Self(temp_dir(name))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[path = "../../../tests/support/ports.rs"]
mod ports;
/// A free loopback port outside the kernel's ephemeral range (`tests/support/ports.rs`).
#[allow(unused_imports)]
pub(crate) use ports::free_port;

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` is gone.
pub async fn gone(pid: u64) -> bool {
    for _ in 0..150 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The fixture server's command line (`tests/interop/proxy_fixture_server.py stdio` under
/// `python`, the interop venv's, from the workspace `root`).
pub fn fixture_command(python: &Path, root: &Path) -> Vec<String> {
    vec![
        python.display().to_string(),
        "-u".to_owned(),
        root.join("tests/interop/proxy_fixture_server.py")
            .display()
            .to_string(),
        "stdio".to_owned(),
    ]
}
