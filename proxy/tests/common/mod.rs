//! Shared helpers for the proxy's integration tests and its benchmark (one module for all):
//!
//! - [`process`]: the binary started as a child process on `127.0.0.1:0` ([`Running`]: its
//!   URL read from its `MCP server URL:` line, its stderr kept for log assertions; in front
//!   of a stdio command or an HTTP upstream, or with any flags and variables), temporary
//!   directories, free ports, process liveness.
//! - [`oauth`]: registration, PKCE S256, the scripted browser (`tests/support/browser.rs`,
//!   here as [`browser`]) through login and consent, the code exchange, refresh.
//! - [`mcp`]: raw MCP posts, a raw streamable-HTTP client with a session, SSE parsing, and a
//!   tiny MCP server to forward to.
//! - [`sdk`]: the official SDK clients (`tests/interop/proxy_client.{mjs,py}`) through the
//!   proxy, their reports checked.
//!
//! Include it with `mod common;` from `proxy/tests/*.rs`, or with
//! `#[path = "../tests/common/mod.rs"] mod common;` from a bench.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

#[path = "../../../tests/support/browser.rs"]
pub mod browser;
pub mod mcp;
pub mod oauth;
pub mod process;
pub mod sdk;

// Not every test crate uses every part.
#[allow(unused_imports)]
pub use mcp::*;
#[allow(unused_imports)]
pub use oauth::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use sdk::*;

/// The user every test proxy knows.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "correct horse battery staple";
/// The redirect URI test clients register (nothing listens there: the browser stops at it).
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// A plain HTTP client (no redirects followed).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}
