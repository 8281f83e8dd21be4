//! One way to mount that cannot be wrong ([`mount`], `AuthorizationServer::mount`), and one
//! way to serve that tells clients apart and does not stall ([`serve`]).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::middleware::AddExtension;
use axum::serve::{ListenerExt as _, TapIo};
use bytes::Bytes;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::config::{ConfigError, McpOAuthConfig, MountProblem};
use crate::resource::McpOAuthLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves an MCP endpoint protected by tokens from an external authorization server (a
/// resource server only): `mcp` at the path of every configured resource, behind
/// [`McpOAuthLayer`], and the RFC 9728 protected-resource metadata those resources'
/// challenges point to. The order is right by construction: the metadata is public, the MCP
/// endpoint is not. Serve the result with [`serve`].
///
/// `mcp` is any tower service over `Request<Body>` that axum's `route_service` accepts, such
/// as rmcp's `StreamableHttpService`. For the embedded authorization server use
/// `server.mount(&cfg, mcp)` (`AuthorizationServer::mount`, feature `server`), which serves
/// its endpoints too.
///
/// ```no_run
/// # #[cfg(feature = "remote-jwks")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use mcp_oauth::McpOAuthConfig;
/// use mcp_oauth::verify::RemoteJwksVerifier;
/// use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
/// use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
/// # #[derive(Clone)] struct MyServer;
/// # impl rmcp::ServerHandler for MyServer {}
///
/// let resource = "https://mcp.example.com/mcp";
/// let issuer = "https://example.auth0.com";
/// let verifier = RemoteJwksVerifier::builder(issuer).audience(resource).discover().await?;
/// let cfg = McpOAuthConfig::builder()
///     .resource(resource)
///     .issuer(issuer)
///     .scope("read", "Read your data")
///     .verifier(verifier)
///     .build()?;
/// let mcp = StreamableHttpService::new(
///     || Ok(MyServer),
///     Arc::new(LocalSessionManager::default()),
///     StreamableHttpServerConfig::default(),
/// );
/// let app = mcp_oauth::mount(&cfg, mcp)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// mcp_oauth::serve(listener, app).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`ConfigError::Mount`] with [`MountProblem::EmbeddedServer`] when `cfg` was built with
/// `.authorization_server(..)` (this would serve none of its endpoints: use
/// `server.mount(&cfg, mcp)`); [`ConfigError::InvalidUrl`] when a resource's path cannot be
/// an axum route (a segment beginning with `:` or `*`).
pub fn mount<M, B>(cfg: impl Into<McpOAuthConfig>, mcp: M) -> Result<Router, ConfigError>
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
    if cfg.inner.local_ring.is_some() {
        return Err(ConfigError::Mount(MountProblem::EmbeddedServer));
    }
    Ok(protected_mcp(&cfg, mcp)?.merge(crate::metadata::protected_resource_router(&cfg)))
}

/// `mcp` behind the layer at the path of every resource of `cfg`, and nothing else.
pub(crate) fn protected_mcp<M, B>(cfg: &McpOAuthConfig, mcp: M) -> Result<Router, ConfigError>
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
    let inner = &cfg.inner;
    let protected = McpOAuthLayer::new(cfg).layer(mcp);
    let mut router = Router::new();
    let mut mounted: Vec<&str> = Vec::new();
    for (resource, path) in inner.resources.iter().zip(&inner.resource_paths) {
        check_routable("resource", resource)?;
        let path = if path.is_empty() { "/" } else { path.as_str() };
        // Resources told apart by host share a path: one route serves them all.
        if !mounted.contains(&path) {
            mounted.push(path);
            router = router.route_service(path, protected.clone());
        }
    }
    Ok(router)
}

/// Refuses a URL whose path axum would refuse to route (and panic on): a segment that begins
/// with `:` or `*` (axum 0.7 capture syntax). Other characters axum treats specially (`{`,
/// `}`) cannot be in a validated URL's path: they are percent-encoded.
pub(crate) fn check_routable(field: &'static str, url: &str) -> Result<(), ConfigError> {
    let path = crate::config::path_of(url);
    if path
        .split('/')
        .any(|seg| seg.starts_with(':') || seg.starts_with('*'))
    {
        return Err(ConfigError::InvalidUrl {
            field,
            value: url.to_owned(),
            reason: "a path segment beginning with `:` or `*` cannot be mounted as an axum route"
                .to_owned(),
        });
    }
    Ok(())
}

/// What [`serve`] returns: axum's [`Serve`](axum::serve::Serve) over a listener whose
/// connections get `TCP_NODELAY`, with each request's
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo). `.await` it to serve until an
/// error, or call `.with_graceful_shutdown(signal)` first.
pub type Serving = axum::serve::Serve<
    TapIo<TcpListener, fn(&mut TcpStream)>,
    IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    AddExtension<Router, ConnectInfo<SocketAddr>>,
>;

/// Serves `app` (from [`mount`] or `server.mount`) on `listener` the way an MCP server
/// must be served, which a bare `axum::serve(listener, app)` is not:
///
/// - **`TCP_NODELAY` on every accepted connection.** MCP servers answer over SSE in several
///   small writes; with Nagle's algorithm on, the second write waits for the client's
///   delayed ACK, and every request after the first on a keep-alive connection stalls
///   about 40 ms.
/// - **The client's address on every request** (`into_make_service_with_connect_info`):
///   the authorization server's rate limits are per address, and without it every client
///   shares one bucket, so one abusive client throttles everyone (the server logs an error
///   when that happens). Behind a reverse proxy, also list it in the server's
///   `trusted_proxies`.
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// mcp_oauth::serve(listener, app)
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// # Ok(()) }
/// ```
pub fn serve(listener: TcpListener, app: Router) -> Serving {
    let listener = listener.tap_io(set_nodelay as fn(&mut TcpStream));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
}

/// Turns Nagle's algorithm off on an accepted connection. A failure (the peer already gone)
/// is logged and the connection served anyway.
fn set_nodelay(tcp: &mut TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(target: "mcp_oauth::serve", %error, "cannot set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tapped = listener.tap_io(set_nodelay as fn(&mut TcpStream));
        let client = tokio::spawn(TcpStream::connect(addr));
        let (accepted, _) = axum::serve::Listener::accept(&mut tapped).await;
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off");
        client.await.unwrap().unwrap();

        // The control: a plain accept leaves Nagle on, so the check above means something.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(TcpStream::connect(addr));
        let (plain, _) = listener.accept().await.unwrap();
        assert!(!plain.nodelay().unwrap());
        client.await.unwrap().unwrap();
    }

    #[test]
    fn colon_and_star_segments_are_refused_not_panicked_on() {
        for bad in ["https://h.example/:mcp", "https://h.example/a/*x"] {
            assert!(matches!(
                check_routable("resource", bad),
                Err(ConfigError::InvalidUrl { .. })
            ));
        }
        for ok in [
            "https://h.example/a:b/c*",
            "https://h.example",
            "https://h.example/mcp",
        ] {
            check_routable("resource", ok).unwrap();
        }
    }
}
