//! `mcp-oauth-proxy`: see `--help`, the package README and the crate docs.
//!
//! Exit status: 0 on a clean stop (or a passing `--check`), 2 for a configuration that
//! cannot work (the reason is printed), 1 when serving fails.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use mcp_oauth_proxy::settings::{LogFormat, Settings, Subcommand};

/// The log filter without RUST_LOG: info, plus the library's per-request refusals (token
/// refused, insufficient scope, unknown client), which it logs at debug.
const DEFAULT_LOG_FILTER: &str = "info,mcp_oauth::rejection=debug,mcp_oauth::token=debug";

#[tokio::main]
async fn main() -> ExitCode {
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
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (echoed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("mcp-oauth-proxy: cannot read the password from stdin: {e}");
        return ExitCode::from(2);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("mcp-oauth-proxy: empty password");
        return ExitCode::from(2);
    }
    println!("{}", mcp_oauth::authn::StaticUsers::hash_password(password));
    ExitCode::SUCCESS
}
