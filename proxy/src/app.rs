//! The proxy assembled from [`Settings`]: the embedded authorization server, the OAuth layer
//! and the backend (an HTTP upstream or stdio children), on one listener (plain HTTP, or TLS
//! from certificate files reloaded on change).
//!
//! [`Proxy::start`] resolves the settings ([`Settings::resolve`]), binds, and builds;
//! [`Proxy::run`] serves until SIGTERM or Ctrl-C. [`Built::assemble`] builds everything
//! without binding, which is what `--check` uses ([`crate::check`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::serve::ListenerExt as _;
use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::{HostSession, StaticUsers, UpstreamOidc, User};
use mcp_oauth::resource::{AccessPolicy, ChallengeStyle, ChallengeStyleRule};
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit, UpkeepHandle};
use mcp_oauth::store::redis::RedisStore;
use mcp_oauth::store::sql::{PostgresStore, SqliteStore};
use tokio::net::{TcpListener, TcpStream};

use crate::http_upstream::{HttpUpstream, UpstreamOptions};
use crate::settings::{
    ChallengeStyleSetting, Config, Login, Rate, Settings, UpstreamLogin, UserSecret,
};
use crate::stdio::{StdioBridge, StdioOptions};
use crate::tls::{CertFiles, TlsListener};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A streamable-HTTP upstream.
    Http(Arc<HttpUpstream>),
    /// A stdio server, one child per session.
    Stdio(Arc<StdioBridge>),
}

/// Everything built from a [`Config`] for one public URL, not bound to a socket.
#[derive(Debug)]
pub struct Built {
    /// The served router: the MCP endpoint behind the layer, the OAuth endpoints beside it.
    pub app: axum::Router,
    /// The backend.
    pub backend: Backend,
    /// The public URL (no trailing slash).
    pub public_url: String,
    /// The layer's configuration (resource, issuer, metadata URL).
    pub oauth: McpOAuthConfig,
    /// The authorization server.
    pub server: AuthorizationServer,
    /// The TLS certificate, when serving TLS.
    pub tls: Option<Arc<CertFiles>>,
}

impl Built {
    /// Builds the backend, login, store, authorization server and router for `public_url`.
    ///
    /// # Errors
    /// A setting that cannot work: a bad URL, a store that cannot be opened, an unusable
    /// certificate, an upstream identity provider whose discovery fails.
    pub async fn assemble(config: &Config, public_url: &str) -> Result<Self, BoxError> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(CertFiles::load(cert, key).map_err(|e| format!("TLS: {e}"))?),
            None => None,
        };
        let backend = match (&config.upstream, config.command.is_empty()) {
            (Some(url), true) => {
                let mut options =
                    UpstreamOptions::new(url.parse().map_err(|e| format!("upstream: {e}"))?);
                for line in &config.upstream_headers {
                    options = options
                        .header_line(line)
                        .map_err(|e| format!("upstream_headers: {e}"))?;
                }
                options.response_timeout = config.upstream_timeout;
                options.max_requests = config.max_upstream_requests;
                // The header a front proxy names the signed-in user in is for this proxy's
                // login only: a client could send it to an upstream that believes it.
                if let Login::HostSession { header, .. } = &config.login {
                    options.dropped_headers.push(
                        http::HeaderName::from_bytes(header.as_bytes())
                            .map_err(|e| format!("host_session_header: {e}"))?,
                    );
                }
                Backend::Http(HttpUpstream::new(options)?)
            }
            (None, false) => {
                find_program(&config.command[0])?;
                Backend::Stdio(StdioBridge::new(StdioOptions {
                    max_children: config.max_children,
                    max_children_per_user: config.max_children_per_user,
                    idle_timeout: config.idle_timeout,
                    kill_grace: config.kill_grace,
                    ..StdioOptions::new(config.command.clone())
                }))
            }
            _ => return Err("give either --upstream URL or a stdio command after `--`".into()),
        };

        let builder = AuthorizationServer::builder();
        let builder = open_store(builder, &config.store).await?;
        let builder = with_login(builder, config).await?;
        let mut builder = builder
            .remember_consent(config.remember_consent)
            .trusted_proxies(config.trusted_proxies.iter().copied());
        // Signing keys wrapped before they reach the store (MCP_OAUTH_KEY_ENCRYPTION_KEY).
        if let Some(kek) = mcp_oauth::keys::AesGcmKeyEncryption::from_env()? {
            builder = builder.key_encryption(kek);
        }
        if let Some(rate) = config.rate_limits.token {
            builder = builder.token_rate_limit(rate_limit(rate));
        }
        if let Some(rate) = config.rate_limits.register {
            builder = builder.register_rate_limit(rate_limit(rate));
        }
        if let Some(rate) = config.rate_limits.login {
            builder = builder.login_rate_limit(rate_limit(rate));
        }
        if let Some(rate) = config.rate_limits.authorize {
            builder = builder.authorize_rate_limit(rate_limit(rate));
        }
        if let Some(ttl) = config.access_token_ttl {
            builder = builder.access_token_ttl(ttl);
        }
        if let Some(ttl) = config.refresh_token_ttl {
            builder = builder.refresh_token_ttl(ttl);
        }
        if let Some(ttl) = config.code_ttl {
            builder = builder.code_ttl(ttl);
        }
        if let Some(grace) = config.refresh_grace {
            builder = builder.refresh_grace(grace);
        }
        let server = builder.build().await?;

        let mut policy = AccessPolicy::new();
        if config.lazy {
            policy = policy.lazy();
        }
        for tool in &config.public_tools {
            policy = policy.public_tool(tool);
        }
        for (tool, scopes) in &config.tool_scopes {
            policy = policy.tool_scopes(tool, scopes);
        }
        if !config.required_scopes.is_empty() {
            policy = policy.require_scopes(&config.required_scopes);
        }
        let mut cfg = McpOAuthConfig::builder()
            .resource(format!("{public_url}/mcp"))
            .issuer(public_url)
            .policy(policy)
            .challenge_style(match config.challenge_style {
                ChallengeStyleSetting::Auto => ChallengeStyleRule::default(),
                ChallengeStyleSetting::Http => ChallengeStyleRule::Always(ChallengeStyle::Http),
                ChallengeStyleSetting::ToolResult => {
                    ChallengeStyleRule::Always(ChallengeStyle::ToolResult)
                }
            })
            .authorization_server(&server)
            .revocation_cache(config.revocation_cache);
        for (name, description) in &config.scopes {
            cfg = cfg.scope(name, description);
        }
        if !config.default_scopes.is_empty() {
            cfg = cfg.default_scopes(&config.default_scopes);
        }
        for (broader, narrower) in &config.scope_implies {
            cfg = cfg.scope_implies(broader, narrower);
        }
        if let Some(name) = &config.resource_name {
            cfg = cfg.resource_name(name);
        }
        for host in &config.allow_hosts {
            cfg = cfg.allow_host(host);
        }
        for origin in &config.allow_origins {
            cfg = cfg.allow_origin(origin);
        }
        let oauth = cfg.build()?;
        let service = match &backend {
            Backend::Http(up) => up.router(),
            Backend::Stdio(bridge) => bridge.router(),
        };
        let guard = Arc::new(HostGuard {
            path: url::Url::parse(oauth.resource())?.path().to_owned(),
            hosts: oauth
                .allowed_hosts()
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        });
        let mut app = server
            .mount(&oauth, service)?
            .layer(axum::middleware::from_fn_with_state(guard, host_guard));
        if config.metrics {
            let handle =
                mcp_oauth::metrics::install_prometheus().map_err(|e| format!("metrics: {e}"))?;
            app = app.merge(mcp_oauth::metrics::router(handle));
        }
        Ok(Self {
            app,
            backend,
            public_url: public_url.to_owned(),
            oauth,
            server,
            tls,
        })
    }
}

/// The `Host` names the MCP endpoint answers (DNS-rebinding protection, as rmcp's
/// `allowed_hosts`): the public URL's host, the loopback names and `allow_hosts`.
#[derive(Debug)]
struct HostGuard {
    path: String,
    hosts: Vec<String>,
}

impl HostGuard {
    /// Whether `host` (`name`, `name:port`, `[v6]:port`) is allowed: an entry equal to it
    /// whole, or to its name when the entry has no port.
    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
            None => host.split(':').next().unwrap_or_default().to_owned(),
        };
        self.hosts
            .iter()
            .any(|h| *h == host || h.trim_start_matches('[').trim_end_matches(']') == name)
    }
}

/// Refuses requests to the MCP endpoint whose `Host` is not allowed (`403`, JSON-RPC error),
/// or that name their host unclearly (`400`): more than one `Host` header, a `Host` that is
/// not visible ASCII, or an absolute-form request target whose authority is not the `Host`.
/// As the library's `request_host`: every place a host is named must agree, or the request
/// is refused rather than judged by one of them.
async fn host_guard(
    axum::extract::State(guard): axum::extract::State<Arc<HostGuard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if req.uri().path() == guard.path {
        let refuse = |status: http::StatusCode, message: &str| {
            (
                status,
                axum::Json(serde_json::json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": {"code": -32600, "message": message}
                })),
            )
                .into_response()
        };
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(why) => {
                tracing::warn!(target: "mcp_oauth_proxy::security", why,
                    "request to the MCP endpoint refused: its host is unclear");
                return refuse(
                    http::StatusCode::BAD_REQUEST,
                    &format!("Bad Request: {why}"),
                );
            }
        };
        if !host.is_some_and(|h| guard.allows(h)) {
            tracing::warn!(target: "mcp_oauth_proxy::security", host = ?host,
                "request to the MCP endpoint with a Host that is not allowed (allow_hosts)");
            return refuse(http::StatusCode::FORBIDDEN, "Forbidden: Host not allowed");
        }
    }
    next.run(req).await
}

/// The host a request names: its one `Host` header, or the request target's authority when
/// there is no `Host`; both, when present, must agree (ASCII case ignored).
fn request_host(req: &axum::extract::Request) -> Result<Option<&str>, &'static str> {
    let mut values = req.headers().get_all(http::header::HOST).iter();
    let header = match (values.next(), values.next()) {
        (_, Some(_)) => return Err("more than one Host header"),
        (None, None) => None,
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| "the Host header is not visible ASCII")?
                .trim(),
        ),
    };
    let authority = req.uri().authority().map(http::uri::Authority::as_str);
    match (header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            Err("the Host header and the request target name different hosts")
        }
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

/// One structured line per request (`mcp_oauth_proxy::access`, info; 5xx at warn): method,
/// path (never the query string, which may carry codes or state), status, client address and
/// time to the response head. With the library's own lines (registrations, codes issued,
/// refusals with their reason) this is the audit trail at the default level.
async fn access_log(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    // The path as a string field, which the log formatters escape (a request path may hold
    // any UTF-8, line separators included): a client cannot forge a log line.
    let path = path.as_str();
    if status >= 500 {
        tracing::warn!(target: "mcp_oauth_proxy::access", %method, path, status, %peer, ms, "request");
    } else {
        tracing::info!(target: "mcp_oauth_proxy::access", %method, path, status, %peer, ms, "request");
    }
    resp
}

/// The stdio command's program: a path that is an executable file, or a name found on
/// `PATH`.
fn find_program(program: &str) -> Result<std::path::PathBuf, String> {
    fn executable(p: &std::path::Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    }
    if program.is_empty() {
        return Err("command: the program is empty".to_owned());
    }
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("command: {program:?} is not an executable file"))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("command: program {program:?} not found on PATH"))
}

/// The store named by `store`: `postgres://` / `postgresql://`, `redis://` / `rediss://`,
/// or else a SQLite file path (`sqlite://PATH` also accepted).
async fn open_store(
    builder: AuthorizationServerBuilder,
    store: &str,
) -> Result<AuthorizationServerBuilder, BoxError> {
    let lower = store.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let s = PostgresStore::connect(store)
            .await
            .map_err(|e| format!("store: cannot connect to PostgreSQL: {e}"))?;
        Ok(builder.store(s))
    } else if lower.starts_with("redis://") || lower.starts_with("rediss://") {
        let s = RedisStore::connect(store)
            .await
            .map_err(|e| format!("store: cannot connect to Redis: {e}"))?;
        Ok(builder.store(s))
    } else {
        let path = store.strip_prefix("sqlite://").unwrap_or(store);
        let s = SqliteStore::open(path)
            .await
            .map_err(|e| format!("store: cannot open SQLite file {path:?}: {e}"))?;
        Ok(builder.store(s))
    }
}

fn rate_limit(rate: Rate) -> RateLimit {
    match rate {
        Rate::Off => RateLimit::unlimited(),
        Rate::PerMinute { per_minute, burst } => {
            let r = RateLimit::per_minute(per_minute);
            match burst {
                Some(b) => r.with_burst(b),
                None => r,
            }
        }
    }
}

/// The authenticator the login settings describe.
async fn with_login(
    builder: AuthorizationServerBuilder,
    config: &Config,
) -> Result<AuthorizationServerBuilder, BoxError> {
    match &config.login {
        Login::Users(users) => {
            let mut table = StaticUsers::new();
            for user in users {
                table = match &user.secret {
                    UserSecret::Hash(hash) => table
                        .try_with_user(user.name.clone(), hash)
                        .map_err(|e| format!("user {:?}: {e}", user.name))?,
                    UserSecret::Password(password) => table.with_password(&user.name, password),
                };
            }
            Ok(builder.authenticator(table))
        }
        Login::HostSession { header, login_url } => {
            let header = http::HeaderName::from_bytes(header.as_bytes())?;
            let trusted: Arc<[IpAddr]> = config.trusted_proxies.clone().into();
            let lookup = move |parts: &http::request::Parts| {
                std::future::ready(host_session_user(parts, &header, &trusted))
            };
            Ok(builder.authenticator(HostSession::new(login_url.clone(), lookup)))
        }
        Login::Upstream(up) => {
            let upstream = upstream_login(up).await?;
            Ok(builder
                .authenticator(upstream)
                .registered_scope_is_ceiling(false))
        }
    }
}

/// The user a trusted front proxy names in `header`, or `None`: the connection must come
/// from a trusted proxy and carry exactly one non-empty, visible-ASCII value.
fn host_session_user(
    parts: &http::request::Parts,
    header: &http::HeaderName,
    trusted: &[IpAddr],
) -> Option<User> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let mut values = parts.headers.get_all(header).iter();
    let first = values.next();
    if !trusted.contains(&peer) {
        if first.is_some() {
            tracing::warn!(target: "mcp_oauth_proxy::login", %peer, header = %header,
                "host-session header from an untrusted address ignored");
        }
        return None;
    }
    let value = first?;
    if values.next().is_some() {
        tracing::warn!(target: "mcp_oauth_proxy::login", header = %header, "several host-session headers: ignored");
        return None;
    }
    let name = value.to_str().ok()?.trim();
    if name.is_empty() || name.len() > 256 {
        return None;
    }
    Some(User::new(name))
}

/// The upstream identity provider the settings describe.
async fn upstream_login(up: &UpstreamLogin) -> Result<UpstreamOidc, BoxError> {
    let id = up.client_id.clone();
    let secret = up.client_secret.clone();
    let need_secret = || {
        secret.clone().ok_or_else(|| {
            format!(
                "upstream_client_secret is required for provider {}",
                up.provider
            )
        })
    };
    let mut b = match up.provider.as_str() {
        "oidc" => {
            let issuer = up
                .issuer
                .clone()
                .ok_or("upstream_issuer is required for provider oidc")?;
            UpstreamOidc::oidc(issuer, id, secret.clone())
        }
        "google" => UpstreamOidc::google(id, need_secret()?),
        "entra" => {
            let tenant = up
                .tenant
                .as_deref()
                .ok_or("upstream_tenant is required for provider entra")?;
            UpstreamOidc::entra(tenant, id, need_secret()?)
        }
        "github" => UpstreamOidc::github(id, need_secret()?),
        other => return Err(format!("unknown upstream_provider {other:?}").into()),
    };
    if let (Some(issuer), "google" | "entra") = (&up.issuer, up.provider.as_str()) {
        b = b.issuer(issuer);
    }
    if !up.scopes.is_empty() {
        b = b.scopes(&up.scopes);
    }
    if !up.allowed_domains.is_empty() {
        b = b.allow_email_domains(&up.allowed_domains);
    }
    if !up.allowed_emails.is_empty() {
        b = b.allow_emails(&up.allowed_emails);
    }
    if !up.allowed_groups.is_empty() {
        b = b.allow_groups(&up.allowed_groups);
    }
    if !up.github_orgs.is_empty() {
        b = b.allow_github_orgs(&up.github_orgs);
    }
    if up.allow_loopback {
        b = b.allow_loopback();
    }
    Ok(b.build()
        .await
        .map_err(|e| format!("upstream login ({}): {e}", up.provider))?)
}

/// A started proxy: bound, configured, not yet serving.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    built: Built,
    config: Config,
    _upkeep: UpkeepHandle,
}

impl Proxy {
    /// Resolves `settings` (file, environment, flags), binds the listener and builds
    /// everything.
    ///
    /// # Errors
    /// A setting that cannot work (no backend, a bad URL, a store that cannot be opened).
    pub async fn start(settings: Settings) -> Result<Self, BoxError> {
        let config = settings.resolve()?;
        Self::start_with(config).await
    }

    /// [`start`](Self::start) with an already resolved configuration.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with(config: Config) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(&config.addr)
            .await
            .map_err(|e| format!("addr: cannot bind {}: {e}", config.addr))?;
        let bound = listener.local_addr()?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => default_public_url(&config, bound),
        };
        let mut built = Built::assemble(&config, &public_url).await?;
        built.app = built.app.layer(axum::middleware::from_fn(access_log));
        let upkeep = built.server.start_upkeep();
        Ok(Self {
            listener,
            built,
            config,
            _upkeep: upkeep,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The MCP URL clients use.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.built.public_url)
    }

    /// Serves until SIGTERM or Ctrl-C, then stops the backend's children.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run(self) -> Result<(), BoxError> {
        let bound = self.listener.local_addr()?;
        let scheme = if self.built.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("MCP server URL: {}", self.mcp_url());
        println!("listening on {scheme}://{bound}");
        tracing::info!(target: "mcp_oauth_proxy", mcp_url = %self.mcp_url(), %bound, tls = self.built.tls.is_some(), "serving");
        let app = self.built.app.clone();
        // Stdio children are stopped as soon as the signal comes: that ends their sessions'
        // open SSE streams, which the graceful shutdown would otherwise wait on forever.
        let backend = self.built.backend.clone();
        let shutdown_signal = move || {
            let backend = backend.clone();
            async move {
                shutdown_signal().await;
                if let Backend::Stdio(bridge) = &backend {
                    bridge.shutdown().await;
                }
            }
        };
        match &self.built.tls {
            None => {
                mcp_oauth::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await?;
            }
            Some(certs) => {
                let watcher = certs.watch(self.config.tls_reload_interval);
                let listener = TlsListener::new(self.listener, certs.server_config()?)?
                    .tap_io(noop as fn(&mut tokio_rustls::server::TlsStream<TcpStream>));
                let served = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown_signal())
                .await;
                watcher.abort();
                served?;
            }
        }
        if let Backend::Stdio(bridge) = &self.built.backend {
            bridge.shutdown().await;
        }
        Ok(())
    }
}

fn noop(_: &mut tokio_rustls::server::TlsStream<TcpStream>) {}

/// `http(s)://<bound address>`, with 127.0.0.1 / \[::1\] for an unspecified address.
pub fn default_public_url(config: &Config, bound: SocketAddr) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
