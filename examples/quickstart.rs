//! # `quickstart`: an MCP server with its own OAuth 2.1 authorization server
//!
//! A streamable-HTTP MCP server (the official `rmcp` SDK) at `/mcp`, protected by
//! `McpOAuthLayer`, next to the embedded authorization server (`oauth_router`): discovery,
//! dynamic client registration, `/authorize` with login and consent pages, `/token`,
//! `/revoke`, `/introspect` and the signing keys. ChatGPT, Claude, the MCP Inspector, VS Code,
//! Cursor and the SDK clients connect to it with nothing but its URL.
//!
//! | tool | needs |
//! |---|---|
//! | `public_search` | nothing: callable without signing in |
//! | `files_read` | scope `files:read` (or `files:write`, which implies it) |
//! | `files_write` | scope `files:write`; a client holding only `files:read` gets `403 insufficient_scope` and steps up |
//!
//! Lazy authentication is on: clients connect and list tools without a token and are asked to
//! sign in on the first protected call. The protected tools take the caller (`auth: Auth`)
//! and say who called.
//!
//! Each tool's requirement is written once, on the tool: `#[requires_scopes("files:read")]` or
//! `#[public_tool]`, collected by `#[scoped_tools]` into `QuickstartServer::tool_requirements()`,
//! which feeds the layer's policy (HTTP `401`/`403` challenges before rmcp runs, and
//! `securitySchemes` on every tool in `tools/list`). The attribute also re-checks inside the
//! tool, so a policy that forgot the map still cannot let a caller through.
//!
//! ## Run it
//!
//! ```text
//! cargo run --example quickstart --features rmcp
//! ```
//!
//! It prints the MCP URL, the demo user's credentials and what to enter in ChatGPT, Claude
//! and the MCP Inspector, then `listening on http://ADDR`.
//!
//! ## Configuration
//!
//! Every setting is an environment variable or the matching `--flag value` argument (the
//! argument wins):
//!
//! | variable | flag | meaning |
//! |---|---|---|
//! | `MCP_OAUTH_ADDR` | `--addr` | socket address to bind (default `127.0.0.1:8000`; port `0` picks a free port) |
//! | `MCP_OAUTH_PUBLIC_URL` | `--public-url` | the URL clients reach the server at, without path (default `http://<bound addr>`). It is the OAuth issuer; the MCP endpoint and OAuth *resource* is `<public url>/mcp`. ChatGPT and Claude connect from the internet: give them an `https` URL (a tunnel to this port) |
//! | `MCP_OAUTH_DEMO_USER` | `--demo-user` | the demo user's name (default `demo`) |
//! | `MCP_OAUTH_DEMO_PASSWORD` | `--demo-password` | its password (default: a random one, printed at start) |
//! | `MCP_OAUTH_DEMO_SCOPES` | `--demo-scopes` | the demo user's scope ceiling, space- or comma-separated (e.g. `files:read`): the user is never granted a scope outside it, whatever the client asks (default: every scope) |
//! | `MCP_OAUTH_CLIENT_ID` | `--client-id` | also pre-register a client with this id (clients that cannot register themselves, the conformance suite) |
//! | `MCP_OAUTH_CLIENT_SECRET` | `--client-secret` | make that client confidential with this secret (at least 16 characters) |
//! | `MCP_OAUTH_CLIENT_REDIRECT_URIS` | `--client-redirect-uris` | its redirect URIs, comma-separated (default `http://127.0.0.1/callback,http://localhost/callback`; loopback URIs match on any port) |
//! | `MCP_OAUTH_STORE` | `--store` | where clients, grants and signing keys live: a SQLite file path (default `mcp-oauth.sqlite3` in the current directory, created if missing), or `memory` to keep nothing across restarts |
//! | `MCP_OAUTH_INSECURE_AUTO_APPROVE` | `--insecure-auto-approve` | `1`: **insecure**, approve every authorization request as the demo user without login or consent, for automated tests such as the MCP conformance suite's `authorization` mode. Never expose a server running this way |
//!
//! `RUST_LOG` sets the log filter (default `info`); logs go to stderr.
//!
//! By default registrations, refresh tokens, consents and the signing keys persist in a SQLite
//! file, so a restart signs nobody out and no connector has to be re-added. Delete the file (or run with
//! `--store memory`) to start from scratch.

use axum::serve::ListenerExt as _;
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::keys::KeyRing;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, StaticClient};
use mcp_oauth::store::sql::SqliteStore;
use mcp_oauth::{
    Auth, McpOAuth, McpOAuthConfig, oauth_router, public_tool, requires_scopes, scoped_tools,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};

/// Errors of this example.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// The MCP path under the public URL.
pub(crate) const MCP_PATH: &str = "/mcp";

/// The demo user's default name.
pub(crate) const DEFAULT_DEMO_USER: &str = "demo";

/// Redirect URIs of the pre-registered client when none are configured.
pub(crate) const DEFAULT_CLIENT_REDIRECT_URIS: &[&str] =
    &["http://127.0.0.1/callback", "http://localhost/callback"];

/// The MCP Inspector's web UI, allowed to call the server from the browser.
pub(crate) const INSPECTOR_ORIGIN: &str = "http://localhost:6274";

/// The SQLite file used when `MCP_OAUTH_STORE` is not set.
pub(crate) const DEFAULT_STORE_PATH: &str = "mcp-oauth.sqlite3";

/// Where the authorization server keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum StoreChoice {
    /// In memory: nothing survives a restart (what tests building `Settings` by hand get).
    #[default]
    Memory,
    /// A SQLite file, created if missing (the default from the environment and flags).
    Sqlite(PathBuf),
}

/// Everything the server is configured with (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) addr: String,
    pub(crate) public_url: Option<String>,
    pub(crate) demo_user: String,
    pub(crate) demo_password: Option<String>,
    /// The demo user's scope ceiling (`None`: every scope).
    pub(crate) demo_scopes: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_redirect_uris: Vec<String>,
    pub(crate) insecure_auto_approve: bool,
    pub(crate) store: StoreChoice,
}

const USAGE: &str = "usage: quickstart [--addr ADDR] [--public-url URL] [--demo-user NAME] \
[--demo-password PASSWORD] [--demo-scopes SCOPES] [--client-id ID [--client-secret SECRET] [--client-redirect-uris URI,...]] \
[--store PATH|memory] [--insecure-auto-approve 1]
(each flag also reads MCP_OAUTH_<FLAG>, e.g. MCP_OAUTH_PUBLIC_URL; see the example's docs)";

/// `(flag, environment variable)` of every setting.
const SETTINGS: &[(&str, &str)] = &[
    ("addr", "MCP_OAUTH_ADDR"),
    ("public-url", "MCP_OAUTH_PUBLIC_URL"),
    ("demo-user", "MCP_OAUTH_DEMO_USER"),
    ("demo-password", "MCP_OAUTH_DEMO_PASSWORD"),
    ("demo-scopes", "MCP_OAUTH_DEMO_SCOPES"),
    ("client-id", "MCP_OAUTH_CLIENT_ID"),
    ("client-secret", "MCP_OAUTH_CLIENT_SECRET"),
    ("client-redirect-uris", "MCP_OAUTH_CLIENT_REDIRECT_URIS"),
    ("insecure-auto-approve", "MCP_OAUTH_INSECURE_AUTO_APPROVE"),
    ("store", "MCP_OAUTH_STORE"),
];

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{name}: expected 1 or 0, got {other:?}")),
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Settings {
    /// Reads the process environment and command line.
    pub(crate) fn from_env_and_args() -> Result<Self, String> {
        Self::parse(|name| std::env::var(name).ok(), std::env::args().skip(1))
    }

    /// Reads settings from `env` (an environment lookup), overridden by `args` (`--flag value`
    /// or `--flag=value`).
    pub(crate) fn parse(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let mut values: Vec<(&str, String)> = SETTINGS
            .iter()
            .filter_map(|(flag, var)| env(var).map(|v| (*flag, v)))
            .collect();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(USAGE.to_owned());
            }
            let Some(stripped) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
            };
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (stripped, None),
            };
            let Some((flag, _)) = SETTINGS.iter().find(|(f, _)| *f == name) else {
                return Err(format!("unknown flag --{name}\n{USAGE}"));
            };
            let value = match inline {
                Some(v) => v,
                // `--insecure-auto-approve` alone turns it on.
                None if *flag == "insecure-auto-approve" => match args.peek() {
                    Some(next) if parse_bool("--insecure-auto-approve", next).is_ok() => {
                        args.next().unwrap_or_default()
                    }
                    _ => "1".to_owned(),
                },
                None => args
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?,
            };
            values.retain(|(f, _)| f != flag);
            values.push((flag, value));
        }

        let mut s = Self {
            addr: "127.0.0.1:8000".to_owned(),
            demo_user: DEFAULT_DEMO_USER.to_owned(),
            store: StoreChoice::Sqlite(PathBuf::from(DEFAULT_STORE_PATH)),
            ..Self::default()
        };
        let non_empty = |v: String| (!v.trim().is_empty()).then(|| v.trim().to_owned());
        for (flag, value) in values {
            match flag {
                "addr" => s.addr = value.trim().to_owned(),
                "public-url" => s.public_url = non_empty(value),
                "demo-user" => {
                    s.demo_user = non_empty(value).unwrap_or_else(|| DEFAULT_DEMO_USER.to_owned());
                }
                // A password is taken as given (no trimming); empty means "generate one".
                "demo-password" => s.demo_password = (!value.is_empty()).then_some(value),
                "demo-scopes" => s.demo_scopes = non_empty(value.replace(',', " ")),
                "client-id" => s.client_id = non_empty(value),
                "client-secret" => s.client_secret = (!value.is_empty()).then_some(value),
                "client-redirect-uris" => {
                    s.client_redirect_uris = split_list(&value).map(str::to_owned).collect();
                }
                "insecure-auto-approve" => {
                    s.insecure_auto_approve =
                        parse_bool("MCP_OAUTH_INSECURE_AUTO_APPROVE", &value)?;
                }
                "store" => {
                    s.store = match value.trim() {
                        "" => StoreChoice::Sqlite(PathBuf::from(DEFAULT_STORE_PATH)),
                        "memory" => StoreChoice::Memory,
                        path => StoreChoice::Sqlite(PathBuf::from(path)),
                    };
                }
                _ => unreachable!("every flag in SETTINGS is handled"),
            }
        }
        if s.client_id.is_none()
            && (s.client_secret.is_some() || !s.client_redirect_uris.is_empty())
        {
            return Err(
                "MCP_OAUTH_CLIENT_SECRET and MCP_OAUTH_CLIENT_REDIRECT_URIS need MCP_OAUTH_CLIENT_ID"
                    .to_owned(),
            );
        }
        Ok(s)
    }

    /// The public base URL, given the address actually bound (for port `0`).
    pub(crate) fn public_base(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = bound;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        }
    }
}

/// A random password for the demo user: 18 bytes from the OS generator, base64url (24
/// characters).
pub(crate) fn generate_password() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 18];
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system's random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Arguments of `public_search`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct SearchArgs {
    /// Words to look for in the file names.
    pub(crate) query: String,
}

/// Arguments of `files_read`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct ReadArgs {
    /// The file name, e.g. `welcome.txt`.
    pub(crate) path: String,
}

/// Arguments of `files_write`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct WriteArgs {
    /// The file name.
    pub(crate) path: String,
    /// The new content.
    pub(crate) content: String,
}

/// The demo's files, shared by every session.
pub(crate) type Files = Arc<Mutex<BTreeMap<String, String>>>;

/// The files a fresh server starts with.
pub(crate) fn demo_files() -> Files {
    let mut files = BTreeMap::new();
    files.insert(
        "welcome.txt".to_owned(),
        "Hello from the mcp-oauth quickstart!".to_owned(),
    );
    files.insert(
        "notes/todo.txt".to_owned(),
        "try files_write: it needs files:write".to_owned(),
    );
    Arc::new(Mutex::new(files))
}

/// `"alice via client-123"`: who called, for the tools' answers.
fn caller(auth: &Auth) -> String {
    match auth.client_id() {
        Some(client) => format!("{} via {client}", auth.subject()),
        None => auth.subject().to_owned(),
    }
}

/// The MCP server: one public and two protected tools over an in-memory file set.
#[derive(Debug, Clone)]
pub(crate) struct QuickstartServer {
    files: Files,
}

#[scoped_tools]
#[tool_router]
impl QuickstartServer {
    /// A server over `files`.
    pub(crate) fn new(files: Files) -> Self {
        Self { files }
    }

    /// Public: which file names contain the query.
    #[public_tool]
    #[tool(description = "Search file names. Public: works without signing in.")]
    fn public_search(&self, Parameters(SearchArgs { query }): Parameters<SearchArgs>) -> String {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<&str> = files
            .keys()
            .filter(|name| name.contains(query.trim()))
            .map(String::as_str)
            .collect();
        if hits.is_empty() {
            format!("no file matches {query:?}")
        } else {
            hits.join("\n")
        }
    }

    /// Needs `files:read` (or `files:write`, which implies it). The layer refuses a caller
    /// without it before the tool runs; the attribute checks again inside.
    #[requires_scopes("files:read")]
    #[tool(description = "Read a file (needs scope files:read).")]
    fn files_read(
        &self,
        auth: Auth,
        Parameters(ReadArgs { path }): Parameters<ReadArgs>,
    ) -> Result<String, ErrorData> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match files.get(&path) {
            Some(content) => format!("{path}: {content} (read by {})", caller(&auth)),
            None => format!("{path}: no such file (asked by {})", caller(&auth)),
        })
    }

    /// Needs `files:write`.
    #[requires_scopes("files:write")]
    #[tool(description = "Create or replace a file (needs scope files:write).")]
    fn files_write(
        &self,
        auth: Auth,
        Parameters(WriteArgs { path, content }): Parameters<WriteArgs>,
    ) -> Result<String, ErrorData> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let len = content.len();
        files.insert(path.clone(), content);
        Ok(format!(
            "{path}: wrote {len} bytes (written by {})",
            caller(&auth)
        ))
    }
}

#[tool_handler]
impl ServerHandler for QuickstartServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "mcp-oauth quickstart: public_search is public, files_read needs files:read, files_write needs files:write.",
        )
    }
}

/// The host part of a URL (`[::1]` for IPv6), for rmcp's `Host` allow-list.
pub(crate) fn host_of(url: &str) -> Result<String, BoxError> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid public URL {url:?}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("public URL {url:?} has no host"))?;
    Ok(host.to_owned())
}

/// The rmcp service. rmcp checks `Host` against its own allow-list (loopback only by
/// default): the public URL's host is added, so the server also answers through a tunnel or
/// proxy.
pub(crate) fn mcp_service(
    public_host: &str,
    files: Files,
) -> StreamableHttpService<QuickstartServer, LocalSessionManager> {
    let mut hosts = vec!["localhost", "127.0.0.1", "::1"];
    if !hosts.contains(&public_host) {
        hosts.push(public_host);
    }
    StreamableHttpService::new(
        move || Ok(QuickstartServer::new(files.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(hosts),
    )
}

/// The access policy: lazy authentication, and each tool's requirement as its attribute
/// declares it (one public tool, two scoped ones).
pub(crate) fn policy() -> AccessPolicy {
    AccessPolicy::new()
        .lazy()
        .tools(QuickstartServer::tool_requirements().iter().copied())
}

/// The assembled server.
#[derive(Debug)]
pub(crate) struct Server {
    /// The axum app: `/mcp` behind the layer, plus every OAuth endpoint.
    pub(crate) app: Router,
    /// The shared configuration.
    pub(crate) config: McpOAuthConfig,
    /// The embedded authorization server.
    pub(crate) server: AuthorizationServer,
    /// The demo user's password (generated when not configured). Also in `instructions`;
    /// the tests that include this file read it here.
    #[allow(dead_code)]
    pub(crate) demo_password: String,
    /// What to tell users (printed on start).
    pub(crate) instructions: String,
}

/// Builds the authorization server's builder as the quickstart configures it (tests and
/// benchmarks adjust it before building).
pub(crate) fn authorization_server(
    settings: &Settings,
    demo_password: &str,
) -> Result<mcp_oauth::server::AuthorizationServerBuilder, BoxError> {
    let mut builder = AuthorizationServer::builder();
    // The demo user's scope ceiling: never granted a scope outside it.
    let ceiling = match &settings.demo_scopes {
        Some(list) => Some(
            list.parse::<ScopeSet>()
                .map_err(|e| format!("MCP_OAUTH_DEMO_SCOPES: {e}"))?,
        ),
        None => None,
    };
    builder = if settings.insecure_auto_approve {
        let auth = InsecureAutoApprove::new(&settings.demo_user);
        builder.authenticator(match ceiling {
            Some(c) => auth.with_allowed_scopes(c),
            None => auth,
        })
    } else {
        let users = StaticUsers::new().with_user(
            &settings.demo_user,
            &StaticUsers::hash_password(demo_password),
        );
        builder.authenticator(match ceiling {
            Some(c) => users.with_user_scopes(&settings.demo_user, c),
            None => users,
        })
    };
    // The MCP Python SDK registers with the scope of the first challenge and later steps up
    // with the same client: a registered scope must not cap it here. Users keep their
    // ceiling (MCP_OAUTH_DEMO_SCOPES).
    builder = builder.registered_scope_is_ceiling(false);
    if let Some(id) = &settings.client_id {
        let uris: Vec<String> = if settings.client_redirect_uris.is_empty() {
            DEFAULT_CLIENT_REDIRECT_URIS
                .iter()
                .map(|u| (*u).to_owned())
                .collect()
        } else {
            settings.client_redirect_uris.clone()
        };
        let client = match &settings.client_secret {
            Some(secret) => StaticClient::confidential(id, secret, uris),
            None => StaticClient::public(id, uris),
        };
        builder = builder.client(client.with_name("Pre-registered client"));
    }
    Ok(builder)
}

/// Builds the app for a server bound at `bound`, opening the configured store.
pub(crate) async fn build(settings: &Settings, bound: SocketAddr) -> Result<Server, BoxError> {
    let demo_password = settings
        .demo_password
        .clone()
        .unwrap_or_else(generate_password);
    let mut builder = authorization_server(settings, &demo_password)?;
    if let StoreChoice::Sqlite(path) = &settings.store {
        let store = SqliteStore::open(path)
            .await
            .map_err(|e| format!("cannot open the SQLite store {}: {e}", path.display()))?;
        // The signing keys live there too, so access tokens survive a restart as well.
        let ring = KeyRing::from_store(store.clone())
            .open()
            .await
            .map_err(|e| format!("cannot load the signing keys from {}: {e}", path.display()))?;
        builder = builder.store(store).key_ring(ring);
    }
    let server = builder.build()?;
    build_with(settings, bound, server, demo_password)
}

/// Builds the app around an authorization server built elsewhere (from
/// [`authorization_server`], possibly adjusted).
pub(crate) fn build_with(
    settings: &Settings,
    bound: SocketAddr,
    server: AuthorizationServer,
    demo_password: String,
) -> Result<Server, BoxError> {
    let public = settings.public_base(bound);
    let resource = format!("{public}{MCP_PATH}");
    let config = McpOAuthConfig::builder()
        .resource(&resource)
        .issuer(&public)
        .resource_name("mcp-oauth quickstart")
        .scope("files:read", "Read your files")
        .scope("files:write", "Create and change your files")
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .policy(policy())
        .allow_origin(INSPECTOR_ORIGIN)
        .authorization_server(&server)
        .build()?;

    let files = demo_files();
    let app = Router::new()
        .route_service(
            MCP_PATH,
            McpOAuth::new(mcp_service(&host_of(&public)?, files), config.clone()),
        )
        .merge(oauth_router(&config, &server));
    let instructions = instructions(settings, &config, &demo_password);
    Ok(Server {
        app,
        config,
        server,
        demo_password,
        instructions,
    })
}

fn instructions(settings: &Settings, config: &McpOAuthConfig, demo_password: &str) -> String {
    let url = config.resource();
    let mut out = String::new();
    let _ = writeln!(out, "mcp-oauth quickstart");
    let _ = writeln!(out, "  MCP server URL:       {url}");
    let _ = writeln!(out, "  OAuth issuer:         {}", config.issuer());
    if settings.insecure_auto_approve {
        let _ = writeln!(
            out,
            "  !!! INSECURE AUTO-APPROVE: every authorization request is approved as {:?} without login or consent.",
            settings.demo_user
        );
        let _ = writeln!(
            out,
            "  !!! For automated tests (the MCP conformance suite) only: never expose this server."
        );
    } else {
        let generated = if settings.demo_password.is_none() {
            " (generated; set MCP_OAUTH_DEMO_PASSWORD to choose one)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  sign in as:           user {:?}, password {demo_password:?}{generated}",
            settings.demo_user
        );
    }
    match &settings.store {
        StoreChoice::Sqlite(path) => {
            let _ = writeln!(
                out,
                "  state:                {} (SQLite; survives restarts)",
                path.display()
            );
        }
        StoreChoice::Memory => {
            let _ = writeln!(
                out,
                "  state:                in memory (a restart forgets every client and sign-in)"
            );
        }
    }
    if let Some(id) = &settings.client_id {
        let kind = if settings.client_secret.is_some() {
            "confidential"
        } else {
            "public"
        };
        let uris = if settings.client_redirect_uris.is_empty() {
            DEFAULT_CLIENT_REDIRECT_URIS.join(", ")
        } else {
            settings.client_redirect_uris.join(", ")
        };
        let _ = writeln!(
            out,
            "  pre-registered {kind} client: {id:?}, redirect URIs {uris} (loopback: any port)"
        );
    }
    let _ = writeln!(
        out,
        "  tools: public_search (public), files_read (files:read), files_write (files:write)"
    );
    let _ = writeln!(out);
    let public_https = url.starts_with("https://");
    if !public_https {
        let _ = writeln!(
            out,
            "  ChatGPT and Claude connect from the internet: expose this port over https (a tunnel)"
        );
        let _ = writeln!(
            out,
            "  and restart with MCP_OAUTH_PUBLIC_URL=https://<your tunnel host>; then use the URLs it prints."
        );
    }
    let _ = writeln!(
        out,
        "  ChatGPT (Settings > Apps & Connectors > Advanced: developer mode; then Create):"
    );
    let _ = writeln!(
        out,
        "    MCP Server URL: {url}    Authentication: OAuth (registration is automatic)"
    );
    let _ = writeln!(
        out,
        "  Claude (Settings > Connectors > Add custom connector):"
    );
    let _ = writeln!(
        out,
        "    Remote MCP server URL: {url}    (leave the advanced OAuth fields empty)"
    );
    let _ = writeln!(
        out,
        "  MCP Inspector: run `npx @modelcontextprotocol/inspector`, then in its web page:"
    );
    let _ = writeln!(
        out,
        "    Transport Type: Streamable HTTP    URL: {url}    then Connect (or Open Auth Settings > Quick OAuth Flow)"
    );
    if !settings.insecure_auto_approve {
        let _ = writeln!(
            out,
            "  Each client opens this server's sign-in page: log in as {:?} and approve.",
            settings.demo_user
        );
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let settings = match Settings::from_env_and_args() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let listener = tokio::net::TcpListener::bind(&settings.addr)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", settings.addr))?;
    let bound = listener.local_addr()?;
    let server = build(&settings, bound).await?;
    print!("{}", server.instructions);
    tracing::info!(resource = server.config.resource(), "serving");
    // The retention sweep runs while this handle lives.
    let _upkeep = server.server.start_upkeep();
    println!("listening on http://{bound}");
    // TCP_NODELAY: rmcp answers over SSE in several writes; without it the second request on
    // a keep-alive connection waits ~40 ms for Nagle and delayed ACKs.
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        server
            .app
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
