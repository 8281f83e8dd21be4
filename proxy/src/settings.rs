//! The proxy's settings, from three sources: command-line flags, `MCP_OAUTH_*` environment
//! variables and a TOML file (`--config FILE` or `MCP_OAUTH_CONFIG`).
//!
//! [`Settings`] is the command line as clap reads it (each flag also reads its environment
//! variable; clap gives the flag precedence). [`crate::config_file::FileConfig`] is the file.
//! [`Settings::resolve`] merges them into one [`Config`] with the precedence
//! **flag > environment > file > default**: a setting given on the command line or in the
//! environment replaces the file's value whole (lists are not merged).
//!
//! Every key of the file has a flag and a variable, except the tables (`users`, `scopes`,
//! `scope_implies`, `tool_scopes`, `rate_limits`), whose flags take `KEY=VALUE` items instead.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;

use crate::config_file::{self, FileConfig, Users};

const LONG_ABOUT: &str = "\
Puts spec-exact OAuth 2.1 in front of an existing MCP server, with no code changes.

The proxy serves the MCP endpoint at {public URL}/mcp behind the mcp-oauth layer, and beside it \
an embedded authorization server: discovery documents (RFC 9728, RFC 8414, both path-inserted and \
root forms), dynamic client registration, /authorize with login and consent pages, /token \
(PKCE S256 only, rotating refresh tokens), revocation and the signing keys. Requests that carry \
a valid token are forwarded to the MCP server: a streamable-HTTP endpoint (--upstream URL) or a \
stdio server started once per MCP session (the command after `--`).

Users sign in with a password (--user/--password for one user, or users_file with argon2 hashes \
made by `mcp-oauth-proxy hash-password`), through a header set by a trusted front proxy \
(login = \"host-session\"), or at an upstream identity provider (OpenID Connect, Google, \
Microsoft Entra, GitHub; login = \"upstream\").

Settings come from flags, MCP_OAUTH_* environment variables and a TOML file (--config), with the \
precedence flag > variable > file > default. Unknown keys in the file \
are refused. `--check` validates everything (store opened, login built) and prints the URLs and \
discovery documents clients will see, without serving.";

const AFTER_HELP: &str = "\
Examples:
  # One user, an HTTP MCP server on this machine:
  MCP_OAUTH_DEMO_PASSWORD=s3cret mcp-oauth-proxy --upstream http://127.0.0.1:3000/mcp

  # A stdio server, one child process per MCP session:
  MCP_OAUTH_DEMO_PASSWORD=s3cret mcp-oauth-proxy -- npx -y @modelcontextprotocol/server-everything

  # Everything from a file, checked before it is served:
  mcp-oauth-proxy --config /etc/mcp-oauth-proxy.toml --check
  mcp-oauth-proxy --config /etc/mcp-oauth-proxy.toml

  # TLS from certificate files (reloaded when they change, or on SIGHUP):
  mcp-oauth-proxy --config proxy.toml --tls-cert fullchain.pem --tls-key privkey.pem

  # A password hash for users_file (on a terminal it asks twice, without echo;
  # from a pipe it reads one line):
  mcp-oauth-proxy hash-password

The sample configuration file (mcp-oauth-proxy.example.toml) documents every key.";

/// The command line: flags (each also read from its `MCP_OAUTH_*` variable) and subcommands.
///
/// Every setting is optional here: a missing one is taken from the file, then the default,
/// by [`Settings::resolve`].
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "mcp-oauth-proxy",
    version,
    about = "Spec-exact OAuth 2.1 in front of any MCP server, with no code changes",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Settings {
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub subcommand: Option<Subcommand>,

    // ---- General ----
    /// A TOML configuration file (see mcp-oauth-proxy.example.toml; unknown keys are refused).
    #[arg(
        long,
        env = "MCP_OAUTH_CONFIG",
        value_name = "FILE",
        help_heading = "General"
    )]
    pub config: Option<PathBuf>,
    /// Validate the configuration (open the store, build the login), print the URLs and
    /// discovery documents clients will see, and exit without serving (0: valid).
    #[arg(long, help_heading = "General")]
    pub check: bool,
    /// Check a running MCP server at URL (this proxy's MCP URL, or any other) the way ChatGPT,
    /// Claude, VS Code and the SDK clients discover it, print every mismatch, and exit (0:
    /// compliant, 1: not). Needs no other setting.
    #[arg(long, value_name = "URL", help_heading = "General")]
    pub doctor: Option<String>,
    /// Serve Prometheus metrics at `/metrics` on the listener [default: false]. Anyone who
    /// reaches the listener can read them: expose the proxy's port only through a front
    /// proxy that does not route `/metrics`, or keep this off.
    #[arg(long, env = "MCP_OAUTH_METRICS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL", help_heading = "General")]
    pub metrics: Option<bool>,
    /// Log line format: `text` or `json` (one JSON object per line). The level comes from
    /// RUST_LOG (default: info, with every grant and refusal).
    #[arg(
        long,
        env = "MCP_OAUTH_LOG_FORMAT",
        value_name = "FORMAT",
        help_heading = "General"
    )]
    pub log_format: Option<LogFormat>,

    // ---- Listener ----
    /// Socket address to bind (port 0 picks a free port) [default: 127.0.0.1:8000].
    #[arg(
        long,
        env = "MCP_OAUTH_ADDR",
        value_name = "HOST:PORT",
        help_heading = "Listener"
    )]
    pub addr: Option<String>,
    /// The URL clients reach the proxy at, without the /mcp path (default: `http(s)://` and
    /// the bound address). Set it behind a TLS terminator or a tunnel.
    #[arg(
        long,
        env = "MCP_OAUTH_PUBLIC_URL",
        value_name = "URL",
        help_heading = "Listener"
    )]
    pub public_url: Option<String>,
    /// Serve TLS with this PEM certificate chain (with --tls-key; reloaded on change).
    #[arg(
        long,
        env = "MCP_OAUTH_TLS_CERT",
        value_name = "FILE",
        help_heading = "Listener"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "MCP_OAUTH_TLS_KEY",
        value_name = "FILE",
        help_heading = "Listener"
    )]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes (e.g. `5s`) [default: 5s];
    /// SIGHUP reloads at once.
    #[arg(
        long,
        env = "MCP_OAUTH_TLS_RELOAD_INTERVAL",
        value_name = "DURATION",
        help_heading = "Listener"
    )]
    pub tls_reload_interval: Option<String>,
    /// Addresses of front proxies whose X-Forwarded-For is believed (comma-separated), and
    /// the only addresses a host-session header is honoured from.
    #[arg(
        long = "trusted-proxy",
        env = "MCP_OAUTH_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP",
        help_heading = "Listener"
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Another `Host` the MCP endpoint answers (the public URL's host is always allowed).
    #[arg(
        long = "allow-host",
        env = "MCP_OAUTH_ALLOW_HOSTS",
        value_delimiter = ',',
        value_name = "HOST",
        help_heading = "Listener"
    )]
    pub allow_hosts: Vec<String>,
    /// Another browser `Origin` allowed at the MCP endpoint (e.g. `https://app.example.com`).
    #[arg(
        long = "allow-origin",
        env = "MCP_OAUTH_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN",
        help_heading = "Listener"
    )]
    pub allow_origins: Vec<String>,

    // ---- Backend ----
    /// The streamable-HTTP MCP endpoint to forward to (instead of a stdio command).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM",
        value_name = "URL",
        help_heading = "Backend"
    )]
    pub upstream: Option<String>,
    /// A static header sent to the upstream with every request, `Name: value` (repeatable;
    /// the upstream's own credential, e.g. `Authorization: Bearer …`; never logged). Prefer
    /// the file's `upstream_headers` for secrets: flags show in `ps`.
    #[arg(
        long = "upstream-header",
        value_name = "NAME: VALUE",
        help_heading = "Backend"
    )]
    pub upstream_headers: Vec<String>,
    /// How long the upstream has to answer, its response headers and a JSON body together,
    /// before the client gets 504 (seconds, or like 90s, 2m) [default: 120s].
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Backend"
    )]
    pub upstream_timeout: Option<String>,
    /// How many upstream requests may be in flight at once, open SSE streams included; more
    /// get 503 with Retry-After [default: 256].
    #[arg(
        long,
        env = "MCP_OAUTH_MAX_UPSTREAM_REQUESTS",
        value_name = "N",
        help_heading = "Backend"
    )]
    pub max_upstream_requests: Option<usize>,
    /// The stdio MCP server to start, one child per MCP session (after `--`).
    #[arg(last = true, value_name = "COMMAND", help_heading = "Backend")]
    pub command: Vec<String>,
    /// Where clients, grants and keys are kept: a SQLite file path, or a `postgres://` or
    /// `redis://` URL [default: mcp-oauth-proxy.sqlite3].
    #[arg(
        long,
        env = "MCP_OAUTH_STORE",
        value_name = "PATH|URL",
        help_heading = "Backend"
    )]
    pub store: Option<String>,
    /// Stdio: at most this many children (MCP sessions) at once; more get 503 [default: 32].
    #[arg(
        long,
        env = "MCP_OAUTH_MAX_CHILDREN",
        value_name = "N",
        help_heading = "Backend"
    )]
    pub max_children: Option<usize>,
    /// Stdio: at most this many children (MCP sessions) of one user at once, whatever client
    /// they come through; more get 503 [default: a quarter of --max-children, at least 1].
    #[arg(
        long,
        env = "MCP_OAUTH_MAX_CHILDREN_PER_USER",
        value_name = "N",
        help_heading = "Backend"
    )]
    pub max_children_per_user: Option<usize>,
    /// Stdio: a session with no request for this long ends and its child is stopped
    /// (seconds, or like 90s, 15m) [default: 10m].
    #[arg(
        long,
        env = "MCP_OAUTH_IDLE_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Backend"
    )]
    pub idle_timeout: Option<String>,
    /// Stdio: time between SIGTERM and SIGKILL when a child is stopped [default: 5s].
    #[arg(
        long,
        env = "MCP_OAUTH_KILL_GRACE",
        value_name = "DURATION",
        help_heading = "Backend"
    )]
    pub kill_grace: Option<String>,

    // ---- Login ----
    /// How users sign in: `users` (passwords), `host-session` (a header from a trusted front
    /// proxy) or `upstream` (an identity provider) [default: upstream when
    /// --upstream-provider/--upstream-client-id is set, host-session when
    /// --host-session-header is, users otherwise].
    #[arg(
        long,
        env = "MCP_OAUTH_LOGIN",
        value_name = "KIND",
        help_heading = "Login"
    )]
    pub login: Option<LoginKind>,
    /// The single user's name [default: demo].
    #[arg(long = "user", env = "MCP_OAUTH_DEMO_USER", help_heading = "Login")]
    pub user: Option<String>,
    /// The single user's password (hashed in memory at start; prefer the variable).
    #[arg(
        long = "password",
        env = "MCP_OAUTH_DEMO_PASSWORD",
        hide_env_values = true,
        help_heading = "Login"
    )]
    pub password: Option<String>,
    /// A file of `name:$argon2id$...` lines (from `hash-password`); `#` starts a comment.
    #[arg(
        long,
        env = "MCP_OAUTH_USERS_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub users_file: Option<PathBuf>,
    /// Users as `name:$argon2id$...` items separated by whitespace.
    #[arg(
        long = "users",
        env = "MCP_OAUTH_USERS",
        hide_env_values = true,
        value_name = "NAME:HASH ...",
        help_heading = "Login"
    )]
    pub users: Option<String>,
    /// login = host-session: the header naming the signed-in user (e.g. X-Forwarded-User),
    /// honoured only on connections from --trusted-proxy addresses.
    #[arg(
        long,
        env = "MCP_OAUTH_HOST_SESSION_HEADER",
        value_name = "HEADER",
        help_heading = "Login"
    )]
    pub host_session_header: Option<String>,
    /// login = host-session: where strangers are sent to sign in (`return_to=` is appended).
    #[arg(
        long,
        env = "MCP_OAUTH_HOST_SESSION_LOGIN_URL",
        value_name = "URL",
        help_heading = "Login"
    )]
    pub host_session_login_url: Option<String>,
    /// login = upstream: `oidc` (any issuer URL), `google`, `entra` or `github` [default: oidc].
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_PROVIDER",
        value_name = "PROVIDER",
        help_heading = "Login"
    )]
    pub upstream_provider: Option<String>,
    /// The provider's issuer URL (`oidc`; overrides the preset's for `google`/`entra`).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_ISSUER",
        value_name = "URL",
        help_heading = "Login"
    )]
    pub upstream_issuer: Option<String>,
    /// The Entra directory (tenant) id.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_TENANT", help_heading = "Login")]
    pub upstream_tenant: Option<String>,
    /// The proxy's client id at the provider.
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_CLIENT_ID", help_heading = "Login")]
    pub upstream_client_id: Option<String>,
    /// The proxy's client secret at the provider.
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_CLIENT_SECRET",
        hide_env_values = true,
        help_heading = "Login"
    )]
    pub upstream_client_secret: Option<String>,
    /// Scopes asked of the provider (comma-separated) [default: the preset's].
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_SCOPES",
        value_delimiter = ',',
        help_heading = "Login"
    )]
    pub upstream_scopes: Vec<String>,
    /// Email domains allowed to sign in (comma-separated).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_ALLOWED_DOMAINS",
        value_delimiter = ',',
        help_heading = "Login"
    )]
    pub upstream_allowed_domains: Vec<String>,
    /// Email addresses allowed to sign in (comma-separated).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_ALLOWED_EMAILS",
        value_delimiter = ',',
        help_heading = "Login"
    )]
    pub upstream_allowed_emails: Vec<String>,
    /// Groups (the `groups` claim) allowed to sign in (comma-separated).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_ALLOWED_GROUPS",
        value_delimiter = ',',
        help_heading = "Login"
    )]
    pub upstream_allowed_groups: Vec<String>,
    /// GitHub organizations allowed to sign in (comma-separated).
    #[arg(
        long,
        env = "MCP_OAUTH_UPSTREAM_GITHUB_ORGS",
        value_delimiter = ',',
        help_heading = "Login"
    )]
    pub upstream_github_orgs: Vec<String>,
    /// Allow a provider on a loopback address over plain http (development only).
    #[arg(long, env = "MCP_OAUTH_UPSTREAM_ALLOW_LOOPBACK", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL", help_heading = "Login")]
    pub upstream_allow_loopback: Option<bool>,
    /// Remember a user's consent per client, so the consent page is shown once [default: false].
    #[arg(long, env = "MCP_OAUTH_REMEMBER_CONSENT", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL", help_heading = "Login")]
    pub remember_consent: Option<bool>,

    // ---- Scopes and tools ----
    /// A scope and its description for the consent page, `NAME=DESCRIPTION` (repeat; `;`
    /// between items in the variable) [default: mcp=Use the MCP server].
    #[arg(
        long = "scope",
        env = "MCP_OAUTH_SCOPES",
        value_delimiter = ';',
        value_name = "NAME=DESCRIPTION",
        help_heading = "Scopes and tools"
    )]
    pub scopes: Vec<String>,
    /// A scope granted when a client asks for none (comma-separated) [default: every scope].
    #[arg(
        long = "default-scope",
        env = "MCP_OAUTH_DEFAULT_SCOPES",
        value_delimiter = ',',
        value_name = "SCOPE",
        help_heading = "Scopes and tools"
    )]
    pub default_scopes: Vec<String>,
    /// A scope that implies others, `BROADER=NARROWER[,NARROWER]` (repeat; `;` in the variable).
    #[arg(
        long = "scope-implies",
        env = "MCP_OAUTH_SCOPE_IMPLIES",
        value_delimiter = ';',
        value_name = "BROADER=NARROWER,..",
        help_heading = "Scopes and tools"
    )]
    pub scope_implies: Vec<String>,
    /// The scopes a tool needs, `TOOL=SCOPE[,SCOPE]` (repeat; `;` in the variable): a token
    /// without them gets 403 insufficient_scope on that tool's tools/call.
    #[arg(
        long = "tool-scope",
        env = "MCP_OAUTH_TOOL_SCOPES",
        value_delimiter = ';',
        value_name = "TOOL=SCOPE,..",
        help_heading = "Scopes and tools"
    )]
    pub tool_scopes: Vec<String>,
    /// A tool callable without a token (needs --lazy; comma-separated).
    #[arg(
        long = "public-tool",
        env = "MCP_OAUTH_PUBLIC_TOOLS",
        value_delimiter = ',',
        value_name = "TOOL",
        help_heading = "Scopes and tools"
    )]
    pub public_tools: Vec<String>,
    /// Scopes every MCP request needs (comma-separated) [default: none beyond a valid token].
    #[arg(
        long = "required-scope",
        env = "MCP_OAUTH_REQUIRED_SCOPES",
        value_delimiter = ',',
        value_name = "SCOPE",
        help_heading = "Scopes and tools"
    )]
    pub required_scopes: Vec<String>,
    /// Lazy authentication: initialize, tools/list and public tools work without a token;
    /// the first protected call gets the challenge (HTTP upstream only) [default: false].
    #[arg(long, env = "MCP_OAUTH_LAZY", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL", help_heading = "Scopes and tools")]
    pub lazy: Option<bool>,
    /// How a refused tools/call reaches the client: `auto` (ChatGPT gets a tool result with
    /// the challenge in `_meta`, others HTTP 401/403), `http` or `tool-result` [default: auto].
    #[arg(
        long,
        env = "MCP_OAUTH_CHALLENGE_STYLE",
        value_name = "STYLE",
        help_heading = "Scopes and tools"
    )]
    pub challenge_style: Option<ChallengeStyleSetting>,
    /// The resource's name in its metadata (`resource_name`).
    #[arg(
        long,
        env = "MCP_OAUTH_RESOURCE_NAME",
        value_name = "NAME",
        help_heading = "Scopes and tools"
    )]
    pub resource_name: Option<String>,

    // ---- Limits and lifetimes ----
    /// A rate limit per client address, `ENDPOINT=RATE` with ENDPOINT one of token, register,
    /// login, authorize and RATE like `120/min`, `60/min burst 120` or `off` (comma-separated)
    /// [default: token=120/min, register=60/min burst 120, login=20/min, authorize=60/min].
    #[arg(
        long = "rate-limit",
        env = "MCP_OAUTH_RATE_LIMITS",
        value_delimiter = ',',
        value_name = "ENDPOINT=RATE",
        help_heading = "Limits and lifetimes"
    )]
    pub rate_limits: Vec<String>,
    /// Access token lifetime (e.g. `1h`, `15m`, `3600`) [default: 1h].
    #[arg(
        long,
        env = "MCP_OAUTH_ACCESS_TOKEN_TTL",
        value_name = "DURATION",
        help_heading = "Limits and lifetimes"
    )]
    pub access_token_ttl: Option<String>,
    /// Refresh token lifetime [default: 30d].
    #[arg(
        long,
        env = "MCP_OAUTH_REFRESH_TOKEN_TTL",
        value_name = "DURATION",
        help_heading = "Limits and lifetimes"
    )]
    pub refresh_token_ttl: Option<String>,
    /// Authorization code lifetime [default: 60s].
    #[arg(
        long,
        env = "MCP_OAUTH_CODE_TTL",
        value_name = "DURATION",
        help_heading = "Limits and lifetimes"
    )]
    pub code_ttl: Option<String>,
    /// How long a rotated-out refresh token still returns the same successor to a concurrent
    /// refresh; after it, reuse revokes the whole grant (`0s`: at once) [default: 30s].
    #[arg(
        long,
        env = "MCP_OAUTH_REFRESH_GRACE",
        value_name = "DURATION",
        help_heading = "Limits and lifetimes"
    )]
    pub refresh_grace: Option<String>,
    /// How long a token found not revoked is trusted before the store is asked again
    /// (`0s`: on every request, so a revocation takes effect at once; at most 60s). Saves one
    /// store query per request; the price is that a revoked access token keeps working up to
    /// this long [default: 0s].
    #[arg(
        long,
        env = "MCP_OAUTH_REVOCATION_CACHE",
        value_name = "DURATION",
        help_heading = "Limits and lifetimes"
    )]
    pub revocation_cache: Option<String>,
}

/// What runs instead of the proxy.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Subcommand {
    /// Read a password and print its argon2id hash, for a `name:HASH` line of users_file or
    /// the `[users]` table. On a terminal it asks twice with echo off; from a pipe it reads
    /// one line (the newline is dropped).
    HashPassword,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How users sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginKind {
    /// Local users with passwords.
    Users,
    /// A header set by a trusted front proxy that already signed the user in.
    HostSession,
    /// An upstream identity provider.
    Upstream,
}

/// The challenge style setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeStyleSetting {
    /// ChatGPT's user agents get the tool-result form, everyone else HTTP.
    #[default]
    Auto,
    /// Always HTTP 401/403 with `WWW-Authenticate`.
    Http,
    /// Always an HTTP 200 tool result carrying the challenge in `_meta`.
    ToolResult,
}

/// A rate limit: a sustained rate per minute and an optional burst, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// No limit.
    Off,
    /// `per_minute` requests a minute, bursts of `burst` (default: the rate).
    PerMinute {
        /// Sustained requests per minute.
        per_minute: u32,
        /// The burst, when not the rate.
        burst: Option<u32>,
    },
}

/// The configured rate limits; `None` keeps the library's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// `/token`.
    pub token: Option<Rate>,
    /// `/register`.
    pub register: Option<Rate>,
    /// Login attempts.
    pub login: Option<Rate>,
    /// `/authorize`.
    pub authorize: Option<Rate>,
}

/// Upstream identity provider settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamLogin {
    /// `oidc`, `google`, `entra` or `github`.
    pub provider: String,
    /// The issuer URL.
    pub issuer: Option<String>,
    /// The Entra tenant.
    pub tenant: Option<String>,
    /// Client id at the provider.
    pub client_id: String,
    /// Client secret at the provider.
    pub client_secret: Option<String>,
    /// Scopes asked of the provider.
    pub scopes: Vec<String>,
    /// Allowed email domains.
    pub allowed_domains: Vec<String>,
    /// Allowed emails.
    pub allowed_emails: Vec<String>,
    /// Allowed groups.
    pub allowed_groups: Vec<String>,
    /// Allowed GitHub organizations.
    pub github_orgs: Vec<String>,
    /// A provider on loopback over plain http.
    pub allow_loopback: bool,
}

/// How users sign in, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Local users: name → argon2 PHC hash (or a password to hash at start).
    Users(Vec<LocalUser>),
    /// A host-session header from trusted proxies.
    HostSession {
        /// The header naming the user.
        header: String,
        /// Where strangers are sent.
        login_url: String,
    },
    /// An upstream identity provider.
    Upstream(UpstreamLogin),
}

/// A local user.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalUser {
    /// The user name.
    pub name: String,
    /// Its secret.
    pub secret: UserSecret,
}

impl std::fmt::Debug for LocalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A local user's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum UserSecret {
    /// An argon2 PHC hash.
    Hash(String),
    /// A password, hashed in memory at start.
    Password(String),
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hash(_) => "Hash(..)",
            Self::Password(_) => "Password(..)",
        })
    }
}

/// The whole configuration, every source merged and every value checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Validate and print instead of serving.
    pub check: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Socket address to bind.
    pub addr: String,
    /// Public URL without the MCP path, no trailing slash (None: from the bound address).
    pub public_url: Option<String>,
    /// TLS certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often the TLS files are checked.
    pub tls_reload_interval: Duration,
    /// Trusted front proxies.
    pub trusted_proxies: Vec<IpAddr>,
    /// Extra allowed hosts.
    pub allow_hosts: Vec<String>,
    /// Extra allowed origins.
    pub allow_origins: Vec<String>,
    /// HTTP upstream URL.
    pub upstream: Option<String>,
    /// Static headers for the upstream, `Name: value` lines.
    pub upstream_headers: Vec<String>,
    /// How long the upstream has to answer (headers, and a JSON body with them).
    pub upstream_timeout: Duration,
    /// HTTP upstream: the most requests (and open streams) at once.
    pub max_upstream_requests: usize,
    /// Stdio command.
    pub command: Vec<String>,
    /// Stdio: the most children at once.
    pub max_children: usize,
    /// Stdio: the most children of one user at once.
    pub max_children_per_user: usize,
    /// Stdio: how long an idle session lives.
    pub idle_timeout: Duration,
    /// Stdio: SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// Store path or URL.
    pub store: String,
    /// How users sign in.
    pub login: Login,
    /// Remember consent.
    pub remember_consent: bool,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// Scopes with descriptions, in order.
    pub scopes: Vec<(String, String)>,
    /// Default scopes (empty: the library's default, every scope).
    pub default_scopes: Vec<String>,
    /// Scope hierarchy.
    pub scope_implies: BTreeMap<String, Vec<String>>,
    /// Per-tool scopes.
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Public tools.
    pub public_tools: Vec<String>,
    /// Scopes every request needs.
    pub required_scopes: Vec<String>,
    /// Lazy authentication.
    pub lazy: bool,
    /// Challenge style.
    pub challenge_style: ChallengeStyleSetting,
    /// Resource name.
    pub resource_name: Option<String>,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Access token lifetime.
    pub access_token_ttl: Option<Duration>,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Option<Duration>,
    /// Code lifetime.
    pub code_ttl: Option<Duration>,
    /// Refresh grace.
    pub refresh_grace: Option<Duration>,
    /// How long the layer trusts a "not revoked" answer (zero: it asks on every request).
    pub revocation_cache: Duration,
}

/// A setting that cannot work, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn err(msg: impl Into<String>) -> SettingsError {
    SettingsError(msg.into())
}

/// The default SQLite file.
pub const DEFAULT_STORE: &str = "mcp-oauth-proxy.sqlite3";
/// The default bind address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

impl Settings {
    /// Reads the configuration file (if any) and merges it with the flags and environment
    /// (already in `self`), with the precedence flag > environment > file > default.
    ///
    /// # Errors
    /// An unreadable file, an unknown key, a value that cannot be parsed (the error names
    /// the setting), or settings that contradict each other.
    pub fn resolve(&self) -> Result<Config, SettingsError> {
        let file = match &self.config {
            Some(path) => config_file::load(path)?,
            None => FileConfig::default(),
        };
        self.resolve_with(file)
    }

    /// [`resolve`](Self::resolve) with an already parsed file.
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn resolve_with(&self, file: FileConfig) -> Result<Config, SettingsError> {
        let pick = |cli: &Option<String>, f: Option<String>| cli.clone().or(f);
        let list = |cli: &Vec<String>, f: Option<Vec<String>>| {
            let cli: Vec<String> = cli
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if cli.is_empty() {
                f.unwrap_or_default()
            } else {
                cli
            }
        };

        let addr = pick(&self.addr, file.addr).unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let public_url = match pick(&self.public_url, file.public_url) {
            Some(u) => Some(check_public_url(&u)?),
            None => None,
        };
        let tls_cert = self.tls_cert.clone().or(file.tls_cert);
        let tls_key = self.tls_key.clone().or(file.tls_key);
        let tls = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(err("tls_cert is set but tls_key is not")),
            (None, Some(_)) => return Err(err("tls_key is set but tls_cert is not")),
        };
        let tls_reload_interval = match &self.tls_reload_interval {
            Some(s) => parse_duration("tls_reload_interval", s)?,
            None => match file.tls_reload_interval {
                Some(v) => v.to_duration("tls_reload_interval")?,
                None => Duration::from_secs(5),
            },
        };
        if tls_reload_interval.is_zero() {
            return Err(err("tls_reload_interval: must be more than 0"));
        }
        let trusted_proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            self.trusted_proxies.clone()
        };
        let allow_hosts = list(&self.allow_hosts, file.allow_hosts);
        let allow_origins = list(&self.allow_origins, file.allow_origins);

        let upstream = pick(&self.upstream, file.upstream);
        let command = if self.command.is_empty() {
            file.command.unwrap_or_default()
        } else {
            self.command.clone()
        };
        if let Some(u) = &upstream {
            let parsed = url::Url::parse(u)
                .map_err(|e| err(format!("upstream: {u:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(err(format!("upstream: {u:?} is not an http(s) URL")));
            }
        }
        match (&upstream, command.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    "both upstream (an HTTP MCP server) and a stdio command are set: give one",
                ));
            }
            (None, true) => {
                return Err(err(
                    "no MCP server: give --upstream URL (MCP_OAUTH_UPSTREAM, `upstream` in the file) or a stdio command after `--` (`command` in the file)",
                ));
            }
            _ => {}
        }
        let store = pick(&self.store, file.store).unwrap_or_else(|| DEFAULT_STORE.to_owned());
        if store.trim().is_empty() {
            return Err(err("store: empty"));
        }

        let login = self.resolve_login(
            LoginFileParts {
                login: file.login,
                user: file.user,
                password: file.password,
                users_file: file.users_file,
                users: file.users,
                host_session_header: file.host_session_header,
                host_session_login_url: file.host_session_login_url,
                upstream_provider: file.upstream_provider,
                upstream_issuer: file.upstream_issuer,
                upstream_tenant: file.upstream_tenant,
                upstream_client_id: file.upstream_client_id,
                upstream_client_secret: file.upstream_client_secret,
                upstream_scopes: file.upstream_scopes,
                upstream_allowed_domains: file.upstream_allowed_domains,
                upstream_allowed_emails: file.upstream_allowed_emails,
                upstream_allowed_groups: file.upstream_allowed_groups,
                upstream_github_orgs: file.upstream_github_orgs,
                upstream_allow_loopback: file.upstream_allow_loopback,
            },
            &trusted_proxies,
        )?;

        let scopes: Vec<(String, String)> = if self.scopes.is_empty() {
            match file.scopes {
                Some(map) => map.into_iter().collect(),
                None => vec![("mcp".to_owned(), "Use the MCP server".to_owned())],
            }
        } else {
            let mut out = Vec::new();
            for item in &self.scopes {
                let (k, v) = split_kv("scope", item)?;
                out.push((k, v));
            }
            out
        };
        for (name, _) in &scopes {
            check_scope_token("scopes", name)?;
        }
        let default_scopes = list(&self.default_scopes, file.default_scopes);
        let scope_implies = if self.scope_implies.is_empty() {
            file.scope_implies.unwrap_or_default()
        } else {
            kv_lists("scope_implies", &self.scope_implies)?
        };
        let tool_scopes = if self.tool_scopes.is_empty() {
            file.tool_scopes.unwrap_or_default()
        } else {
            kv_lists("tool_scopes", &self.tool_scopes)?
        };
        let public_tools = list(&self.public_tools, file.public_tools);
        let required_scopes = list(&self.required_scopes, file.required_scopes);
        let known = |s: &str| scopes.iter().any(|(n, _)| n == s);
        for (key, names) in [
            ("default_scopes", &default_scopes),
            ("required_scopes", &required_scopes),
        ] {
            for s in names {
                if !known(s) {
                    return Err(err(format!("{key}: scope {s:?} is not among the scopes")));
                }
            }
        }
        for (key, map) in [
            ("scope_implies", &scope_implies),
            ("tool_scopes", &tool_scopes),
        ] {
            for (k, v) in map {
                if key == "scope_implies" && !known(k) {
                    return Err(err(format!("{key}: scope {k:?} is not among the scopes")));
                }
                for s in v {
                    if !known(s) {
                        return Err(err(format!(
                            "{key}.{k}: scope {s:?} is not among the scopes"
                        )));
                    }
                }
            }
        }
        let lazy = self.lazy.or(file.lazy).unwrap_or(false);
        if lazy && !command.is_empty() {
            return Err(err(
                "lazy cannot be used with a stdio command: a stdio session belongs to the signed-in user who started it, so an initialize without a token is refused; remove lazy (--lazy, MCP_OAUTH_LAZY) or use an HTTP upstream",
            ));
        }
        if !public_tools.is_empty() && !lazy {
            return Err(err(
                "public_tools need lazy = true (without it every request needs a token)",
            ));
        }
        for t in &public_tools {
            if tool_scopes.contains_key(t) {
                return Err(err(format!(
                    "tool {t:?} is both in public_tools and in tool_scopes"
                )));
            }
        }

        let rate_limits = if self.rate_limits.is_empty() {
            let mut out = RateLimits::default();
            if let Some(f) = file.rate_limits {
                let set = |v: Option<String>, name: &str| -> Result<Option<Rate>, SettingsError> {
                    v.map(|s| parse_rate(&format!("rate_limits.{name}"), &s))
                        .transpose()
                };
                out.token = set(f.token, "token")?;
                out.register = set(f.register, "register")?;
                out.login = set(f.login, "login")?;
                out.authorize = set(f.authorize, "authorize")?;
            }
            out
        } else {
            let mut out = RateLimits::default();
            for item in &self.rate_limits {
                let (k, v) = split_kv("rate_limit", item)?;
                let rate = parse_rate(&format!("rate_limit {k}"), &v)?;
                match k.as_str() {
                    "token" => out.token = Some(rate),
                    "register" => out.register = Some(rate),
                    "login" => out.login = Some(rate),
                    "authorize" => out.authorize = Some(rate),
                    other => {
                        return Err(err(format!(
                            "rate_limit: unknown endpoint {other:?} (token, register, login or authorize)"
                        )));
                    }
                }
            }
            out
        };
        let ttl = |name: &str,
                   cli: &Option<String>,
                   f: Option<config_file::DurationValue>|
         -> Result<Option<Duration>, SettingsError> {
            let d = match cli {
                Some(s) => Some(parse_duration(name, s)?),
                None => f.map(|v| v.to_duration(name)).transpose()?,
            };
            if d.is_some_and(|d| d.is_zero()) {
                return Err(err(format!("{name}: must be more than 0")));
            }
            Ok(d)
        };

        let upstream_headers = if self.upstream_headers.is_empty() {
            file.upstream_headers.unwrap_or_default()
        } else {
            self.upstream_headers.clone()
        };
        if !upstream_headers.is_empty() && upstream.is_none() {
            return Err(err(
                "upstream_headers: only with an HTTP upstream (`upstream`)",
            ));
        }
        let upstream_timeout = ttl(
            "upstream_timeout",
            &self.upstream_timeout,
            file.upstream_timeout,
        )?
        .unwrap_or(Duration::from_secs(120));
        let max_upstream_requests = self
            .max_upstream_requests
            .or(file.max_upstream_requests)
            .unwrap_or(crate::http_upstream::DEFAULT_MAX_REQUESTS);
        if max_upstream_requests == 0 {
            return Err(err("max_upstream_requests: must be more than 0"));
        }
        let max_children = self.max_children.or(file.max_children).unwrap_or(32);
        if max_children == 0 {
            return Err(err("max_children: must be more than 0"));
        }
        let max_children_per_user = self
            .max_children_per_user
            .or(file.max_children_per_user)
            .unwrap_or_else(|| crate::stdio::default_children_per_user(max_children));
        if max_children_per_user == 0 {
            return Err(err("max_children_per_user: must be more than 0"));
        }
        if max_children_per_user > max_children {
            return Err(err(format!(
                "max_children_per_user: {max_children_per_user} is more than max_children ({max_children})"
            )));
        }
        let idle_timeout = ttl("idle_timeout", &self.idle_timeout, file.idle_timeout)?
            .unwrap_or(Duration::from_secs(600));
        let kill_grace =
            ttl("kill_grace", &self.kill_grace, file.kill_grace)?.unwrap_or(Duration::from_secs(5));

        Ok(Config {
            check: self.check,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            addr,
            public_url,
            tls,
            tls_reload_interval,
            trusted_proxies,
            allow_hosts,
            allow_origins,
            upstream,
            upstream_headers,
            upstream_timeout,
            max_upstream_requests,
            command,
            max_children,
            max_children_per_user,
            idle_timeout,
            kill_grace,
            store,
            login,
            metrics: self.metrics.or(file.metrics).unwrap_or(false),
            remember_consent: self
                .remember_consent
                .or(file.remember_consent)
                .unwrap_or(false),
            scopes,
            default_scopes,
            scope_implies,
            tool_scopes,
            public_tools,
            required_scopes,
            lazy,
            challenge_style: self
                .challenge_style
                .or(file.challenge_style)
                .unwrap_or_default(),
            resource_name: pick(&self.resource_name, file.resource_name),
            rate_limits,
            access_token_ttl: ttl(
                "access_token_ttl",
                &self.access_token_ttl,
                file.access_token_ttl,
            )?,
            refresh_token_ttl: ttl(
                "refresh_token_ttl",
                &self.refresh_token_ttl,
                file.refresh_token_ttl,
            )?,
            code_ttl: ttl("code_ttl", &self.code_ttl, file.code_ttl)?,
            refresh_grace: match &self.refresh_grace {
                Some(s) => Some(parse_duration("refresh_grace", s)?),
                None => file
                    .refresh_grace
                    .map(|v| v.to_duration("refresh_grace"))
                    .transpose()?,
            }
            .map(|d| {
                if d > Duration::from_secs(300) {
                    Err(err("refresh_grace: at most 5m"))
                } else {
                    Ok(d)
                }
            })
            .transpose()?,
            revocation_cache: {
                let d = match &self.revocation_cache {
                    Some(s) => Some(parse_duration("revocation_cache", s)?),
                    None => file
                        .revocation_cache
                        .map(|v| v.to_duration("revocation_cache"))
                        .transpose()?,
                }
                .unwrap_or(Duration::ZERO);
                if d > mcp_oauth::verify::MAX_REVOCATION_CACHE {
                    return Err(err("revocation_cache: at most 60s"));
                }
                d
            },
        })
    }

    fn resolve_login(
        &self,
        f: LoginFileParts,
        trusted_proxies: &[IpAddr],
    ) -> Result<Login, SettingsError> {
        let pick = |cli: &Option<String>, f: Option<String>| cli.clone().or(f);
        let list = |cli: &Vec<String>, f: Option<Vec<String>>| {
            let cli: Vec<String> = cli
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if cli.is_empty() {
                f.unwrap_or_default()
            } else {
                cli
            }
        };
        let header = pick(&self.host_session_header, f.host_session_header);
        let provider = pick(&self.upstream_provider, f.upstream_provider);
        let client_id = pick(&self.upstream_client_id, f.upstream_client_id);
        let kind = self
            .login
            .or(f.login)
            .unwrap_or(if provider.is_some() || client_id.is_some() {
                LoginKind::Upstream
            } else if header.is_some() {
                LoginKind::HostSession
            } else {
                LoginKind::Users
            });
        match kind {
            LoginKind::Users => {
                let mut users: Vec<LocalUser> = Vec::new();
                let mut add = |name: String, secret: UserSecret, from: &str| {
                    if users.iter().any(|u| u.name == name) {
                        return Err(err(format!("{from}: user {name:?} is defined twice")));
                    }
                    users.push(LocalUser { name, secret });
                    Ok(())
                };
                if let Some(path) = self.users_file.clone().or(f.users_file) {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        err(format!("users_file: cannot read {}: {e}", path.display()))
                    })?;
                    for (name, hash) in
                        parse_user_lines(&text, &format!("users_file {}", path.display()))?
                    {
                        add(name, UserSecret::Hash(hash), "users_file")?;
                    }
                }
                match (&self.users, f.users) {
                    (Some(text), _) => {
                        for (name, hash) in parse_user_lines(
                            &text.split_whitespace().collect::<Vec<_>>().join("\n"),
                            "users (MCP_OAUTH_USERS)",
                        )? {
                            add(name, UserSecret::Hash(hash), "users")?;
                        }
                    }
                    (None, Some(Users(map))) => {
                        for (name, hash) in map {
                            check_hash(&format!("users.{name}"), &hash)?;
                            add(name, UserSecret::Hash(hash), "users")?;
                        }
                    }
                    (None, None) => {}
                }
                if let Some(password) = pick(&self.password, f.password) {
                    if password.is_empty() {
                        return Err(err("password: empty"));
                    }
                    let name = pick(&self.user, f.user).unwrap_or_else(|| "demo".to_owned());
                    add(name, UserSecret::Password(password), "user/password")?;
                } else if self.user.is_some() || f.user.is_some() {
                    return Err(err(
                        "user is set but no password: set MCP_OAUTH_DEMO_PASSWORD (or --password)",
                    ));
                }
                if users.is_empty() {
                    return Err(err(
                        "no users: set MCP_OAUTH_DEMO_PASSWORD (or --password) for one user, or users_file / [users] with argon2 hashes from `mcp-oauth-proxy hash-password`",
                    ));
                }
                Ok(Login::Users(users))
            }
            LoginKind::HostSession => {
                let header = header.ok_or_else(|| {
                    err("login = host-session needs host_session_header (e.g. X-Forwarded-User)")
                })?;
                http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    err(format!(
                        "host_session_header: {header:?} is not a header name"
                    ))
                })?;
                let login_url = pick(&self.host_session_login_url, f.host_session_login_url)
                    .ok_or_else(|| {
                        err("login = host-session needs host_session_login_url (where strangers sign in)")
                    })?;
                url::Url::parse(&login_url).map_err(|e| {
                    err(format!(
                        "host_session_login_url: {login_url:?} is not a URL: {e}"
                    ))
                })?;
                if trusted_proxies.is_empty() {
                    return Err(err(
                        "login = host-session needs trusted_proxies: the header is honoured only on connections from them",
                    ));
                }
                Ok(Login::HostSession { header, login_url })
            }
            LoginKind::Upstream => {
                let provider = provider.unwrap_or_else(|| "oidc".to_owned());
                if !matches!(provider.as_str(), "oidc" | "google" | "entra" | "github") {
                    return Err(err(format!(
                        "upstream_provider: {provider:?} is not one of oidc, google, entra, github"
                    )));
                }
                let client_id =
                    client_id.ok_or_else(|| err("login = upstream needs upstream_client_id"))?;
                Ok(Login::Upstream(UpstreamLogin {
                    provider,
                    issuer: pick(&self.upstream_issuer, f.upstream_issuer),
                    tenant: pick(&self.upstream_tenant, f.upstream_tenant),
                    client_id,
                    client_secret: pick(&self.upstream_client_secret, f.upstream_client_secret),
                    scopes: list(&self.upstream_scopes, f.upstream_scopes),
                    allowed_domains: list(
                        &self.upstream_allowed_domains,
                        f.upstream_allowed_domains,
                    ),
                    allowed_emails: list(&self.upstream_allowed_emails, f.upstream_allowed_emails),
                    allowed_groups: list(&self.upstream_allowed_groups, f.upstream_allowed_groups),
                    github_orgs: list(&self.upstream_github_orgs, f.upstream_github_orgs),
                    allow_loopback: self
                        .upstream_allow_loopback
                        .or(f.upstream_allow_loopback)
                        .unwrap_or(false),
                }))
            }
        }
    }
}

/// The login-related part of the file, moved out for [`Settings::resolve_login`].
struct LoginFileParts {
    login: Option<LoginKind>,
    user: Option<String>,
    password: Option<String>,
    users_file: Option<PathBuf>,
    users: Option<Users>,
    host_session_header: Option<String>,
    host_session_login_url: Option<String>,
    upstream_provider: Option<String>,
    upstream_issuer: Option<String>,
    upstream_tenant: Option<String>,
    upstream_client_id: Option<String>,
    upstream_client_secret: Option<String>,
    upstream_scopes: Option<Vec<String>>,
    upstream_allowed_domains: Option<Vec<String>>,
    upstream_allowed_emails: Option<Vec<String>>,
    upstream_allowed_groups: Option<Vec<String>>,
    upstream_github_orgs: Option<Vec<String>>,
    upstream_allow_loopback: Option<bool>,
}

/// `public_url`: an absolute http(s) URL without query or fragment, trailing slash dropped.
fn check_public_url(u: &str) -> Result<String, SettingsError> {
    let parsed =
        url::Url::parse(u).map_err(|e| err(format!("public_url: {u:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(err(format!("public_url: {u:?} is not an http(s) URL")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err(format!("public_url: {u:?} has a query or fragment")));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// A scope name as RFC 6749 allows (printable ASCII, no space, `"` or `\`).
fn check_scope_token(key: &str, s: &str) -> Result<(), SettingsError> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    {
        return Err(err(format!("{key}: {s:?} is not a valid scope name")));
    }
    Ok(())
}

/// `KEY=VALUE`.
fn split_kv(key: &str, item: &str) -> Result<(String, String), SettingsError> {
    let (k, v) = item
        .split_once('=')
        .ok_or_else(|| err(format!("{key}: {item:?} is not KEY=VALUE")))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() {
        return Err(err(format!("{key}: {item:?} has an empty name")));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `KEY=A,B` items into a map.
fn kv_lists(key: &str, items: &[String]) -> Result<BTreeMap<String, Vec<String>>, SettingsError> {
    let mut out = BTreeMap::new();
    for item in items {
        if item.trim().is_empty() {
            continue;
        }
        let (k, v) = split_kv(key, item)?;
        let list: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        out.insert(k, list);
    }
    Ok(out)
}

/// Lines `name:$argon2...`; blank lines and `#` comments skipped.
///
/// # Errors
/// A line without `:`, an empty name, or a value that is not an argon2 PHC hash (the
/// error names the line, never its content beyond the name).
pub fn parse_user_lines(text: &str, from: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| err(format!("{from}: line {} is not name:HASH", i + 1)))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err(format!("{from}: line {} has an empty name", i + 1)));
        }
        check_hash(
            &format!("{from}: line {} (user {name:?})", i + 1),
            hash.trim(),
        )?;
        out.push((name.to_owned(), hash.trim().to_owned()));
    }
    Ok(out)
}

fn check_hash(what: &str, hash: &str) -> Result<(), SettingsError> {
    if !hash.starts_with("$argon2") {
        return Err(err(format!(
            "{what}: not an argon2 hash (make one with `mcp-oauth-proxy hash-password`)"
        )));
    }
    Ok(())
}

/// A duration: seconds as a number, or a number with `s`, `m`, `h` or `d`.
///
/// # Errors
/// Anything else, naming `key`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, SettingsError> {
    let s = s.trim();
    let bad = || {
        err(format!(
            "{key}: {s:?} is not a duration (a number of seconds, or like 90s, 15m, 1h, 30d)"
        ))
    };
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

/// A rate: `off`, `N/min`, `N/min burst B` (also `N/s`, `N/h`, rounded to per minute).
///
/// # Errors
/// Anything else, naming `key`.
pub fn parse_rate(key: &str, s: &str) -> Result<Rate, SettingsError> {
    let s = s.trim();
    let bad = || {
        err(format!(
            "{key}: {s:?} is not a rate (like 120/min, 60/min burst 120, or off)"
        ))
    };
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("unlimited") {
        return Ok(Rate::Off);
    }
    let mut words = s.split_whitespace();
    let rate = words.next().ok_or_else(bad)?;
    let (n, per) = rate.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    let per_minute = match per {
        "min" | "m" | "minute" => n,
        "s" | "sec" | "second" => n.checked_mul(60).ok_or_else(bad)?,
        "h" | "hour" => n.div_ceil(60),
        _ => return Err(bad()),
    };
    let burst = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("burst"), Some(b), None) => Some(b.parse::<u32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if per_minute == 0 || burst == Some(0) {
        return Err(err(format!(
            "{key}: {s:?}: a rate of 0 refuses everything; use `off` for no limit"
        )));
    }
    Ok(Rate::PerMinute { per_minute, burst })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("k", "15m").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            parse_duration("k", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse_duration("k", "2d").unwrap(),
            Duration::from_secs(172_800)
        );
        let e = parse_duration("access_token_ttl", "5x").unwrap_err();
        assert!(e.0.contains("access_token_ttl"), "{e}");
        assert!(parse_duration("k", "").is_err());
        assert!(parse_duration("k", "99999999999999999999d").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("k", "off").unwrap(), Rate::Off);
        assert_eq!(
            parse_rate("k", "120/min").unwrap(),
            Rate::PerMinute {
                per_minute: 120,
                burst: None
            }
        );
        assert_eq!(
            parse_rate("k", "60/min burst 120").unwrap(),
            Rate::PerMinute {
                per_minute: 60,
                burst: Some(120)
            }
        );
        assert_eq!(
            parse_rate("k", "2/s").unwrap(),
            Rate::PerMinute {
                per_minute: 120,
                burst: None
            }
        );
        for bad in [
            "0/min",
            "abc",
            "5/fortnight",
            "5/min burst",
            "5/min burst x",
        ] {
            let e = parse_rate("rate_limits.token", bad).unwrap_err();
            assert!(e.0.contains("rate_limits.token"), "{e}");
        }
    }

    #[test]
    fn user_lines() {
        let ok = parse_user_lines(
            "# c\n\nalice:$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA\n",
            "f",
        )
        .unwrap();
        assert_eq!(ok[0].0, "alice");
        assert!(parse_user_lines("alice", "f").is_err());
        assert!(parse_user_lines(":$argon2id$x", "f").is_err());
        let e = parse_user_lines("bob:plaintext", "f").unwrap_err();
        assert!(!e.0.contains("plaintext"), "the secret is not echoed: {e}");
    }
}
