use axum::Router;
use http::Method;
use tower_http::cors::{Any, CorsLayer};

use super::AsContext;
use crate::config::McpOAuthConfig;
use crate::metadata::protected_resource_router;

/// Every endpoint of the authorization server plus the protected-resource metadata, ready to
/// merge next to the MCP endpoint. Without an
/// [`authorization_server`](crate::McpOAuthConfigBuilder::authorization_server) in the
/// configuration (the resource-server-only mode) it serves only the protected-resource
/// metadata. See the [module docs](crate::server).
///
/// Built inside a Tokio runtime, it also starts the server's scheduled sweep (once per
/// server, ending with it; see [`retention`](crate::server::retention)).
#[must_use]
pub fn oauth_router<S: Clone + Send + Sync + 'static>(cfg: impl Into<McpOAuthConfig>) -> Router<S> {
    let cfg = cfg.into();
    let prm = protected_resource_router(&cfg);
    let Some(server) = cfg.authorization_server().cloned() else {
        return prm;
    };
    super::retention::start(&server.inner);
    let ctx = AsContext::new(cfg, &server);
    // Browser clients (the Inspector, web SDK clients) call these cross-origin: CORS `*`
    // without credentials. `/authorize` is a navigation and gets none.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(std::time::Duration::from_secs(86_400));
    let machine = Router::new()
        .merge(super::discovery::routes(&ctx))
        .merge(super::register::routes(&ctx))
        .merge(super::token::routes(&ctx))
        .merge(super::revoke::routes(&ctx))
        .merge(super::introspect::routes(&ctx))
        .merge(super::jwks::routes(&ctx))
        .layer(cors);
    let browser = super::authorize::routes(&ctx);
    machine.merge(browser).with_state(ctx).merge(prm)
}
