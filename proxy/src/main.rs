//! `mcp-oauth-proxy`: see `--help`, the package README and the crate docs.
//!
//! Exit status: 0 on a clean stop (or a passing `--check`), 2 for a configuration that
//! cannot work (the reason is printed), 1 when serving fails.

use std::io::{BufRead, IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use mcp_oauth_proxy::settings::{LogFormat, Settings, Subcommand};

/// The log filter without RUST_LOG: info, plus the library's per-request refusals (token
/// refused, insufficient scope, unknown client), which it logs at debug.
const DEFAULT_LOG_FILTER: &str = "info,mcp_oauth::rejection=debug,mcp_oauth::token=debug";

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(e) = not_dumpable() {
        // Fail closed: without it, the stdio children could read the proxy's secrets.
        eprintln!("mcp-oauth-proxy: cannot make the process non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    let settings = Settings::parse();
    if let Some(Subcommand::HashPassword) = settings.subcommand {
        return hash_password();
    }
    if let Some(url) = &settings.doctor {
        init_logging(LogFormat::Text);
        return mcp_oauth::doctor::run(url).await;
    }
    let config = match settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    if config.check {
        return match mcp_oauth_proxy::check::report(&config).await {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-oauth-proxy: configuration error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let proxy = match mcp_oauth_proxy::app::Proxy::start_with(config).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    match proxy.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the process non-dumpable (Linux): `/proc/<pid>/environ`, `mem`, `maps` and the like
/// become unreadable to other processes of the same uid — such as the stdio children, which
/// could otherwise read the `MCP_OAUTH_*` secrets from `/proc/$PPID/environ` — and it cannot
/// be ptraced by them; no core dump is written. Children are dumpable again once they exec.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn not_dumpable() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(std::io::Error::from)
}

/// Nothing to do where there is no `/proc/<pid>/environ`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn not_dumpable() -> std::io::Result<()> {
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `hash-password`: one line from stdin, its argon2id hash on stdout.
///
/// On a terminal it asks twice with echo turned off (the password never shows on the screen
/// or in the scrollback) and refuses two different answers; from a pipe it reads one line.
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = match prompt_hidden("Password: ") {
            Ok(line) => line,
            Err(e) => return hash_password_error(&e),
        };
        let again = match prompt_hidden("Again: ") {
            Ok(line) => line,
            Err(e) => return hash_password_error(&e),
        };
        if first != again {
            eprintln!("mcp-oauth-proxy: the two passwords differ; nothing was hashed");
            return ExitCode::from(2);
        }
        first
    } else {
        match read_line(&mut stdin.lock()) {
            Ok(line) => line,
            Err(e) => return hash_password_error(&e),
        }
    };
    if password.is_empty() {
        eprintln!("mcp-oauth-proxy: empty password");
        return ExitCode::from(2);
    }
    println!(
        "{}",
        mcp_oauth::authn::StaticUsers::hash_password(&password)
    );
    ExitCode::SUCCESS
}

fn hash_password_error(e: &std::io::Error) -> ExitCode {
    eprintln!("mcp-oauth-proxy: cannot read the password from stdin: {e}");
    ExitCode::from(2)
}

/// One line without its line ending.
fn read_line(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned())
}

/// Prints `prompt` on stderr and reads a line from the terminal on stdin with echo off,
/// restoring the terminal's settings afterwards (also when reading fails).
#[cfg(unix)]
fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

    /// Puts the saved settings back when dropped.
    struct Restore(rustix::termios::Termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.0);
        }
    }

    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Still show the Enter key's new line, so the next prompt starts on its own line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo goes off before the prompt shows, so nothing typed after the prompt is echoed.
    tcsetattr(&stdin, OptionalActions::Flush, &quiet)?;
    let restore = Restore(saved);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let line = read_line(&mut stdin.lock());
    drop(restore);
    line
}

/// Without termios the password cannot be hidden: say so before reading it.
#[cfg(not(unix))]
fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}(echoed) ");
    std::io::stderr().flush()?;
    read_line(&mut std::io::stdin().lock())
}
