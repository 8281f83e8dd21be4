use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response};
use tower_service::Service;

use super::{AsContext, AuthorizationServer};
use crate::config::{ConfigError, McpOAuthConfig, MountProblem};
use crate::metadata::{protected_resource_router, public_cors};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AuthorizationServer {
    /// The whole app in one call: `mcp` at the path of every resource of `cfg`, behind
    /// [`McpOAuthLayer`](crate::McpOAuthLayer), and every endpoint of this server with the
    /// protected-resource metadata ([`oauth_router`]), public. The order is right by
    /// construction. Serve it with [`mcp_oauth::serve`](crate::serve), which gives each
    /// connection `TCP_NODELAY` and each request the client's address (the rate limits
    /// need it).
    ///
    /// `mcp` is any tower service over `Request<Body>` that axum's `route_service` accepts,
    /// such as rmcp's `StreamableHttpService`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use mcp_oauth::McpOAuthConfig;
    /// use mcp_oauth::authn::StaticUsers;
    /// use mcp_oauth::server::AuthorizationServer;
    /// use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    /// use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    /// # #[derive(Clone)] struct MyServer;
    /// # impl rmcp::ServerHandler for MyServer {}
    ///
    /// let server = AuthorizationServer::builder()
    ///     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
    ///     .build()
    ///     .await?;
    /// let cfg = McpOAuthConfig::builder()
    ///     .resource("http://127.0.0.1:8000/mcp")
    ///     .scope("read", "Read your data")
    ///     .authorization_server(&server)
    ///     .build()?;
    /// let mcp = StreamableHttpService::new(
    ///     || Ok(MyServer),
    ///     Arc::new(LocalSessionManager::default()),
    ///     StreamableHttpServerConfig::default(),
    /// );
    /// let app = server.mount(&cfg, mcp)?;
    /// let _upkeep = server.start_upkeep();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    /// mcp_oauth::serve(listener, app).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Mount`]: [`MountProblem::NoEmbeddedServer`] when `cfg` was built
    /// without `.authorization_server(&server)` (the layer would not verify this server's
    /// tokens), [`MountProblem::OtherServer`] when it was built with another server's.
    /// [`ConfigError::InvalidUrl`] when the issuer's or a resource's path cannot be an axum
    /// route (a segment beginning with `:` or `*`).
    pub fn mount<M, B>(&self, cfg: impl Into<McpOAuthConfig>, mcp: M) -> Result<Router, ConfigError>
    where
        M: Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        M::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let cfg = cfg.into();
        match &cfg.inner.local_ring {
            None => return Err(ConfigError::Mount(MountProblem::NoEmbeddedServer)),
            Some(ring) if !ring.is_same(&self.inner.key_ring) => {
                return Err(ConfigError::Mount(MountProblem::OtherServer));
            }
            Some(_) => {}
        }
        crate::mounting::check_routable("issuer", cfg.issuer())?;
        let mcp = crate::mounting::protected_mcp(&cfg, mcp)?;
        let (router, compliance) = routes(cfg, self);
        let app = mcp.merge(router);
        // The health endpoint runs the doctor in process against exactly this app.
        compliance.mount(app.clone());
        Ok(app)
    }
}

/// Every endpoint of `server` plus the protected-resource metadata of `cfg`, ready to merge
/// next to the MCP endpoint. The resource-server-only mode (no embedded server) serves
/// [`protected_resource_router`] instead. See the [module docs](crate::server).
///
/// For hand composition: [`AuthorizationServer::mount`] builds the whole app (this router
/// and the MCP service behind the layer) in one call. Merged before or after
/// [`McpOAuthLayer`](crate::McpOAuthLayer) is applied, these endpoints answer the same: the
/// layer lets exactly their paths through.
///
/// Building the router starts nothing in the background: the scheduled sweep runs once
/// [`AuthorizationServer::start_upkeep`] is called (see
/// [`retention`](crate::server::retention)).
pub fn oauth_router<S: Clone + Send + Sync + 'static>(
    cfg: impl Into<McpOAuthConfig>,
    server: &AuthorizationServer,
) -> Router<S> {
    routes(cfg.into(), server).0
}

/// [`oauth_router`] and the health endpoint's compliance slot (which
/// [`AuthorizationServer::mount`] fills with the whole app).
fn routes<S: Clone + Send + Sync + 'static>(
    cfg: McpOAuthConfig,
    server: &AuthorizationServer,
) -> (Router<S>, std::sync::Arc<super::health::Compliance>) {
    let prm = protected_resource_router(&cfg);
    let ctx = AsContext::new(cfg, server);
    let compliance = ctx.compliance.clone();
    // Browser clients (the Inspector, web SDK clients) call these cross-origin: CORS `*`
    // without credentials. `/authorize` is a navigation and gets none.
    let cors = public_cors(&[Method::GET, Method::POST]);
    let machine = Router::new()
        .merge(super::discovery::routes(&ctx))
        .merge(super::register::routes(&ctx))
        .merge(super::token::routes(&ctx))
        .merge(super::revoke::routes(&ctx))
        .merge(super::introspect::routes(&ctx))
        .merge(super::jwks::routes(&ctx))
        .layer(cors);
    let browser = super::authorize::routes(&ctx);
    let router = machine.merge(browser).merge(super::health::routes(&ctx));
    #[cfg(feature = "metrics")]
    let labels = metric_labels(&ctx);
    let router = router.with_state(ctx).merge(prm);
    #[cfg(feature = "metrics")]
    let router = crate::metrics::track(router, labels);
    (router, compliance)
}

/// Every path of the server with its `endpoint` label (the request metrics).
#[cfg(feature = "metrics")]
fn metric_labels(ctx: &AsContext) -> Vec<(String, &'static str)> {
    let mut labels: Vec<(String, &'static str)> = crate::paths::Endpoint::ALL
        .into_iter()
        .map(|e| (ctx.route(e), e.metric_label()))
        .collect();
    labels.extend(
        crate::paths::as_metadata_paths(ctx.cfg.issuer())
            .into_iter()
            .map(|p| (p, "metadata")),
    );
    labels.extend(
        crate::paths::protected_resource_paths(ctx.cfg.resources())
            .into_iter()
            .map(|p| (p, "resource_metadata")),
    );
    labels
}
