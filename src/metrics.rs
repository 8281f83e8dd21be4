//! Metrics (feature `metrics`), recorded through the [`metrics`](https://docs.rs/metrics)
//! facade, so any recorder works; [`install_prometheus`] installs the Prometheus one and
//! [`router`] serves it at `/metrics` in the text exposition format.
//!
//! ```no_run
//! # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let handle = mcp_oauth::metrics::install_prometheus()?;
//! let app = app.merge(mcp_oauth::metrics::router(handle));
//! # Ok(()) }
//! ```
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `mcp_oauth_http_requests_total` | counter | `endpoint`, `status` | requests to the authorization server's endpoints (`endpoint`: `authorize`, `authorize_login`, `authorize_consent`, `token`, `register`, `revoke`, `introspect`, `jwks`, `stats`, `health`, `metadata`, `resource_metadata`, `upstream_start`, `upstream_callback`; `status`: the HTTP status code) |
//! | `mcp_oauth_token_request_seconds` | histogram | `status` | time to answer `/token` |
//! | `mcp_oauth_layer_verify_seconds` | histogram | `outcome` (`ok` \| `refused`) | time the layer's verifier took on a token it had not cached |
//! | `mcp_oauth_token_cache_hits_total` | counter | | the layer found the token in its verified-token cache |
//! | `mcp_oauth_token_cache_misses_total` | counter | | it had to verify the token (hit ratio = hits / (hits + misses)) |
//! | `mcp_oauth_layer_refusals_total` | counter | `reason` | the layer refused a request (the `reason` of the `resource.refused` audit event) |
//! | `mcp_oauth_rate_limited_total` | counter | `limit` (`register`, `register_request`, `token`, `login`, `authorize`) | requests refused by a rate limit |
//! | `mcp_oauth_store_errors_total` | counter | `kind` (`unavailable` \| `conflict` \| `corrupt`) | store failures that reached a response |
//! | `mcp_oauth_audit_events_total` | counter | `event` | every [audit event](crate::audit) |
//!
//! # Who may see `/metrics`
//!
//! Nothing is served unless the host mounts [`router`]: the quickstart does so only with
//! `MCP_OAUTH_METRICS=1` or `--metrics`. The numbers hold no secret and no identifier (no
//! client id, subject or token id is a label), but they tell an outsider how busy the server
//! is and how often it refuses: serve `/metrics` on a separate listener bound to a private
//! address, or behind the reverse proxy's access control, rather than next to the public
//! endpoints. The MCP layer does not guard it (it is not an MCP path).

use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Requests to the authorization server's endpoints, by `endpoint` and `status`.
pub const HTTP_REQUESTS: &str = "mcp_oauth_http_requests_total";
/// `/token` latency (seconds), by `status`.
pub const TOKEN_SECONDS: &str = "mcp_oauth_token_request_seconds";
/// The layer's token verification latency (seconds), by `outcome`.
pub const LAYER_VERIFY_SECONDS: &str = "mcp_oauth_layer_verify_seconds";
/// Verified-token cache hits.
pub const CACHE_HITS: &str = "mcp_oauth_token_cache_hits_total";
/// Verified-token cache misses.
pub const CACHE_MISSES: &str = "mcp_oauth_token_cache_misses_total";
/// The layer's refusals, by `reason`.
pub const LAYER_REFUSALS: &str = "mcp_oauth_layer_refusals_total";
/// Rate-limit refusals, by `limit`.
pub const RATE_LIMITED: &str = "mcp_oauth_rate_limited_total";
/// Store errors, by `kind`.
pub const STORE_ERRORS: &str = "mcp_oauth_store_errors_total";
/// Audit events, by `event`.
pub const AUDIT_EVENTS: &str = "mcp_oauth_audit_events_total";

/// Histogram buckets (seconds): 100 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the Prometheus recorder as the process's global `metrics` recorder (latency
/// histograms with buckets from 100 µs to 5 s) and returns the handle [`router`] renders.
///
/// # Errors
/// When a global recorder is installed already (this can be called once per process).
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "Requests to the authorization server's endpoints"
    );
    metrics::describe_histogram!(
        TOKEN_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer /token"
    );
    metrics::describe_histogram!(
        LAYER_VERIFY_SECONDS,
        metrics::Unit::Seconds,
        "Token verification time in the layer (cache misses)"
    );
    metrics::describe_counter!(CACHE_HITS, "Verified-token cache hits");
    metrics::describe_counter!(CACHE_MISSES, "Verified-token cache misses");
    metrics::describe_counter!(LAYER_REFUSALS, "Requests refused by the layer");
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(STORE_ERRORS, "Store failures that reached a response");
    metrics::describe_counter!(AUDIT_EVENTS, "Audit events");
    // Counters that exist from the start, so a scrape sees them at 0.
    metrics::counter!(CACHE_HITS).increment(0);
    metrics::counter!(CACHE_MISSES).increment(0);
}

/// A router serving `GET /metrics`: the Prometheus text exposition format (version 0.0.4)
/// of `handle`. Merge it into the app, or better serve it on a private listener (see the
/// [module docs](self) on who may see it).
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                let mut res = (StatusCode::OK, handle.render()).into_response();
                res.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
        }),
    )
}

pub(crate) fn audit_event(event: &'static str) {
    metrics::counter!(AUDIT_EVENTS, "event" => event).increment(1);
}

pub(crate) fn layer_refusal(reason: &'static str) {
    metrics::counter!(LAYER_REFUSALS, "reason" => reason).increment(1);
}

pub(crate) fn token_cache(hit: bool) {
    if hit {
        metrics::counter!(CACHE_HITS).increment(1);
    } else {
        metrics::counter!(CACHE_MISSES).increment(1);
    }
}

pub(crate) fn layer_verified(took: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "refused" };
    metrics::histogram!(LAYER_VERIFY_SECONDS, "outcome" => outcome).record(took.as_secs_f64());
}

#[cfg(feature = "server")]
pub(crate) fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

pub(crate) fn store_error(e: &crate::store::StoreError) {
    use crate::store::StoreError;
    let kind = match e {
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Conflict { .. } => "conflict",
        _ => "corrupt",
    };
    metrics::counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// Counts every request to one of the authorization server's paths (`labels`: exact path →
/// endpoint label), and times `/token`.
#[cfg(feature = "server")]
pub(crate) fn track<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    labels: Vec<(String, &'static str)>,
) -> Router<S> {
    use axum::body::Body;
    use axum::response::Response;
    use http::Request;
    use std::time::Instant;
    let labels = std::sync::Arc::new(labels);
    router.layer(axum::middleware::from_fn(
        move |req: Request<Body>, next: axum::middleware::Next| {
            let labels = labels.clone();
            async move {
                let path = req
                    .extensions()
                    .get::<axum::extract::OriginalUri>()
                    .map_or_else(|| req.uri().path().to_owned(), |o| o.0.path().to_owned());
                let label = labels.iter().find(|(p, _)| *p == path).map(|(_, l)| *l);
                let started = Instant::now();
                let res: Response = next.run(req).await;
                if let Some(endpoint) = label {
                    let status = res.status().as_u16().to_string();
                    if endpoint == "token" {
                        metrics::histogram!(TOKEN_SECONDS, "status" => status.clone())
                            .record(started.elapsed().as_secs_f64());
                    }
                    metrics::counter!(HTTP_REQUESTS, "endpoint" => endpoint, "status" => status)
                        .increment(1);
                }
                res
            }
        },
    ))
}
