//! The proxy assembled from [`Settings`]: the embedded authorization server, the OAuth layer
//! and the backend (an HTTP upstream or stdio children), on one listener.

use std::sync::Arc;

use mcp_oauth::McpOAuthConfig;
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::server::{AuthorizationServer, UpkeepHandle};
use mcp_oauth::store::sql::SqliteStore;
use tokio::net::TcpListener;

use crate::http_upstream::{HttpUpstream, UpstreamOptions};
use crate::settings::Settings;
use crate::stdio::{StdioBridge, StdioOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A streamable-HTTP upstream.
    Http(Arc<HttpUpstream>),
    /// A stdio server, one child per session.
    Stdio(Arc<StdioBridge>),
}

/// A started proxy: bound, configured, not yet serving.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    app: axum::Router,
    backend: Backend,
    public_url: String,
    _upkeep: UpkeepHandle,
}

impl Proxy {
    /// Binds the listener and builds everything from `settings`.
    ///
    /// # Errors
    /// A setting that cannot work (no backend, a bad URL, a store that cannot be opened).
    pub async fn start(settings: Settings) -> Result<Self, BoxError> {
        let backend = match (&settings.upstream, settings.command.is_empty()) {
            (Some(url), true) => {
                let mut options = UpstreamOptions::new(url.parse()?);
                for line in &settings.upstream_headers {
                    options = options.header_line(line)?;
                }
                if !(settings.upstream_timeout.is_finite() && settings.upstream_timeout > 0.0) {
                    return Err("--upstream-timeout must be a positive number of seconds".into());
                }
                options.response_timeout =
                    std::time::Duration::from_secs_f64(settings.upstream_timeout);
                Backend::Http(HttpUpstream::new(options)?)
            }
            (None, false) => Backend::Stdio(StdioBridge::new(StdioOptions {
                command: settings.command.clone(),
            })),
            _ => return Err("give either --upstream URL or a stdio command after `--`".into()),
        };
        let listener = TcpListener::bind(&settings.addr).await?;
        let local = format!("http://{}", listener.local_addr()?);
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or(local)
            .trim_end_matches('/')
            .to_owned();
        let password = settings
            .password
            .clone()
            .ok_or("set MCP_OAUTH_DEMO_PASSWORD (or --password)")?;
        let users = StaticUsers::new().with_password(&settings.user, &password);
        let store = SqliteStore::open(&settings.store).await?;
        let server = AuthorizationServer::builder()
            .authenticator(users)
            .store(store)
            .build()
            .await?;
        let cfg = McpOAuthConfig::builder()
            .resource(format!("{public_url}/mcp"))
            .scope("mcp", "Use the MCP server")
            .policy(AccessPolicy::new())
            .authorization_server(&server)
            .build()?;
        let service = match &backend {
            Backend::Http(up) => up.router(),
            Backend::Stdio(bridge) => bridge.router(),
        };
        let app = server.mount(&cfg, service)?;
        let upkeep = server.start_upkeep();
        Ok(Self {
            listener,
            app,
            backend,
            public_url,
            _upkeep: upkeep,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The MCP URL clients use.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.public_url)
    }

    /// Serves until SIGTERM or Ctrl-C, then stops the backend's children.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run(self) -> Result<(), BoxError> {
        println!("MCP server URL: {}", self.mcp_url());
        println!("listening on http://{}", self.listener.local_addr()?);
        mcp_oauth::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        if let Backend::Stdio(bridge) = &self.backend {
            bridge.shutdown().await;
        }
        Ok(())
    }
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
