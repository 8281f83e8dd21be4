//! `mcp-oauth-proxy`: see `--help` and the crate docs.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = mcp_oauth_proxy::settings::Settings::parse();
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let proxy = match mcp_oauth_proxy::app::Proxy::start(settings).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match proxy.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
