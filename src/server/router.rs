use axum::Router;
use http::Method;

use super::{AsContext, AuthorizationServer};
use crate::config::McpOAuthConfig;
use crate::metadata::{protected_resource_router, public_cors};

/// Every endpoint of `server` plus the protected-resource metadata of `cfg`, ready to merge
/// next to the MCP endpoint. The resource-server-only mode (no embedded server) serves
/// [`protected_resource_router`] instead. See the [module docs](crate::server).
///
/// Building the router starts nothing in the background: the scheduled sweep runs once
/// [`AuthorizationServer::start_upkeep`] is called (see
/// [`retention`](crate::server::retention)).
pub fn oauth_router<S: Clone + Send + Sync + 'static>(
    cfg: impl Into<McpOAuthConfig>,
    server: &AuthorizationServer,
) -> Router<S> {
    let cfg = cfg.into();
    let prm = protected_resource_router(&cfg);
    let ctx = AsContext::new(cfg, server);
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
    machine.merge(browser).with_state(ctx).merge(prm)
}
