//! `GET {issuer path}/health`: readiness and the `oauth_compliant` flag.
//!
//! Served by [`oauth_router`](crate::oauth_router) (and so by
//! [`AuthorizationServer::mount`](super::AuthorizationServer::mount)) at the issuer's path
//! followed by `/health` (`/health` for an issuer without a path); the layer lets exactly
//! that path through. Two checks decide readiness:
//!
//! - `store`: one cheap read of the client store and one of the grant store (a lookup of a
//!   client id and a token id that do not exist);
//! - `keys`: the key ring's current key is in the published key set and signs.
//!
//! Both pass: `200` with
//! `{"status":"ok","oauth_compliant":true,"checks":{"store":"ok","keys":"ok"},"problems":[]}`.
//! One fails: `503` with `"status":"unavailable"` and the failing check's value
//! `"failed"` (the reason is logged, not served). The answer is `no-store`, has no CORS and
//! holds no secret: it can face a load balancer.
//!
//! `oauth_compliant` is the static part of the compliance [doctor](crate::doctor): what the
//! configuration alone decides (the issuer and every resource `https`, or loopback `http`;
//! no trailing slash on the issuer, which clients compare byte for byte with the metadata's
//! `issuer`); `problems` names each failure. The served documents themselves are checked by
//! the doctor (`mcp_oauth::doctor::check(url)`, feature `doctor`), which fetches them as the
//! clients do. A `false` flag does not make the endpoint `503`: the server works, for the
//! clients that tolerate it.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use serde_json::json;

use super::AsContext;
use super::discovery::json_response;
use crate::paths::Endpoint;

/// An id no client or token has (ids are random base64url, never with `:`).
const PROBE_ID: &str = "mcp-oauth:health-probe";

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new().route(&ctx.route(Endpoint::Health), get(health))
}

async fn health(State(ctx): State<AsContext>) -> Response {
    let store = check_store(&ctx).await;
    let keys = check_keys(&ctx);
    let problems = compliance_problems(ctx.cfg.issuer(), ctx.cfg.resources());
    let ok = store && keys;
    let word = |b: bool| if b { "ok" } else { "failed" };
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({
            "status": if ok { "ok" } else { "unavailable" },
            "oauth_compliant": problems.is_empty(),
            "checks": { "store": word(store), "keys": word(keys) },
            "problems": problems,
        })
        .to_string(),
        "no-store",
    )
}

async fn check_store(ctx: &AsContext) -> bool {
    let clients = ctx.server.clients.get_client(PROBE_ID).await;
    let grants = ctx
        .server
        .grants
        .is_token_revoked(PROBE_ID, crate::util::now())
        .await;
    match (clients, grants) {
        (Ok(_), Ok(_)) => true,
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(target: "mcp_oauth::health", error = %e, "health check: the store failed");
            #[cfg(feature = "metrics")]
            crate::metrics::store_error(&e);
            false
        }
    }
}

fn check_keys(ctx: &AsContext) -> bool {
    let ring = &ctx.server.key_ring;
    let current = ring.current();
    let published = ring
        .jwks()
        .keys
        .iter()
        .any(|k| k.common.key_id.as_deref() == Some(current.kid()));
    if !published {
        tracing::error!(target: "mcp_oauth::health", kid = %current.kid(), "health check: the current signing key is not published");
        return false;
    }
    match current.sign("JWT", &json!({ "health": true })) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(target: "mcp_oauth::health", error = %e, "health check: the current signing key cannot sign");
            false
        }
    }
}

/// What the configuration alone breaks for MCP clients (see the [module docs](self)).
pub(crate) fn compliance_problems(issuer: &str, resources: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !secure_or_loopback(issuer) {
        problems.push(format!(
            "the issuer {issuer} is neither https nor a loopback http URL"
        ));
    }
    if issuer.ends_with('/') {
        problems.push(format!(
            "the issuer {issuer} ends with a slash (clients compare it byte for byte)"
        ));
    }
    for r in resources {
        if !secure_or_loopback(r) {
            problems.push(format!(
                "the resource {r} is neither https nor a loopback http URL"
            ));
        }
    }
    problems
}

/// `https`, or `http` on a loopback host.
pub(crate) fn secure_or_loopback(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => u.host_str().is_some_and(crate::net::is_loopback_host),
        _ => false,
    }
}
