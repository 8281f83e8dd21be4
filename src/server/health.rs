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
//! The endpoint is public, so its cost is bounded: the two checks run at most once per
//! [`READINESS_TTL`] (one second) whatever the request rate; concurrent requests share that
//! one run, and a flood of probes costs the store one read of each kind per second.
//!
//! Both pass: `200` with
//! `{"status":"ok","oauth_compliant":true,"checks":{"store":"ok","keys":"ok"},"compliance":{…},"problems":[]}`.
//! One fails: `503` with `"status":"unavailable"` and the failing check's value
//! `"failed"` (the reason is logged, not served). The answer is `no-store`, has no CORS and
//! holds no secret: it can face a load balancer. Only readiness decides the status: a
//! `false` `oauth_compliant` does not make the endpoint `503` (the server works, for the
//! clients that tolerate it).
//!
//! ## `oauth_compliant`
//!
//! The compliance [doctor](crate::doctor)'s verdict ([`Report::compliant`]) on every
//! resource of the configuration, run **in process** ([`doctor::check_app`]) against the
//! whole app [`AuthorizationServer::mount`](super::AuthorizationServer::mount) built: the
//! challenge, both metadata documents, the issuer and resource strings, `S256`, `none`,
//! `iss`, CORS, https outside loopback, the key set, exactly as clients read them, without a
//! network (the `clock` check is skipped in process; see the doctor's docs).
//!
//! - The doctor runs on the **first** health request, synchronously, bounded by
//!   [`COMPLIANCE_TIMEOUT`] (a run that does not finish in time is the error finding
//!   `timeout`, and the flag is `false`), so the flag is always a boolean; concurrent first
//!   requests wait for that one run. Its report is then served for [`COMPLIANCE_TTL`]; the
//!   first request after that starts a new run **in the background** and is answered with the
//!   previous report, as are all requests until the new one is ready. So a slow MCP backend
//!   (the doctor's `initialize` reaches it under lazy authentication) never holds a health
//!   probe up after the first one.
//! - `compliance` shows the report: `source` (`"doctor"`), `computed_at` (Unix seconds),
//!   `run` (how many times this server's doctor ran: the same number across requests is the
//!   same cached report), `resources` (the MCP URLs checked) and `findings`, each
//!   `{"resource", "check", "severity", "message"}` ([`Finding`](crate::doctor::Finding);
//!   `severity` is `error` or `warning`). `problems` lists the messages of the errors.
//! - The doctor's requests are real requests to the app: they show in the metrics (feature
//!   `metrics`) and come from the loopback address.
//! - Composed by hand ([`oauth_router`](crate::oauth_router) merged next to your own MCP
//!   route) the router cannot see the whole app: `source` is then `"configuration"` and
//!   the flag is what the configuration alone decides (the issuer and every resource
//!   `https`, or loopback `http`; no trailing slash on the issuer); run
//!   [`doctor::check_app`] on your app for the rest.
//!
//! The mounted app holds its own compliance slot (and so itself): it lives as long as the
//! process serves it.
//!
//! [`Report::compliant`]: crate::doctor::Report::compliant
//! [`doctor::check_app`]: crate::doctor::check_app

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use serde_json::{Value, json};

use super::AsContext;
use super::discovery::json_response;
use crate::paths::Endpoint;

/// An id no client or token has (ids are random base64url, never with `:`).
const PROBE_ID: &str = "mcp-oauth:health-probe";

pub(crate) fn routes(ctx: &AsContext) -> Router<AsContext> {
    Router::new().route(&ctx.route(Endpoint::Health), get(health))
}

/// How long the health endpoint serves a doctor report before recomputing it.
pub const COMPLIANCE_TTL: Duration = Duration::from_secs(300);

/// The longest one doctor run may take (all resources); past it the flag is `false` with the
/// finding `timeout`.
pub const COMPLIANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the readiness checks' answer (store and keys) is reused: they run at most once
/// per this interval, however many requests the endpoint gets.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// The health endpoint's compliance state: the whole app (set by `mount`) and the cached
/// report.
#[derive(Default)]
pub(crate) struct Compliance {
    app: OnceLock<Router>,
    /// The last report; `None` until the first run has finished.
    cached: std::sync::Mutex<Option<Computed>>,
    /// Held by the first run (concurrent first requests wait on it).
    first: tokio::sync::Mutex<()>,
    /// Set while a background run is in progress.
    refreshing: std::sync::atomic::AtomicBool,
    runs: AtomicU64,
    /// The last readiness answer and when it was taken.
    readiness: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

/// The readiness checks' answer.
#[derive(Clone, Copy)]
struct Readiness {
    store: bool,
    keys: bool,
}

/// One compliance report.
#[derive(Clone)]
struct Computed {
    at: Instant,
    computed_at: u64,
    run: u64,
    source: &'static str,
    compliant: bool,
    findings: Vec<Value>,
}

impl Compliance {
    /// The app the doctor checks (the first one set wins).
    pub(crate) fn mount(&self, app: Router) {
        let _ = self.app.set(app);
    }

    /// The cached report, or a new one (see the [module docs](self)).
    async fn report(&self, ctx: &AsContext) -> Computed {
        let Some(app) = self.app.get() else {
            return from_configuration(ctx);
        };
        if let Some(c) = self.cached() {
            if c.at.elapsed() >= COMPLIANCE_TTL && !self.refreshing.swap(true, Ordering::AcqRel) {
                // Recomputed in the background; this and later requests get the last report
                // until the new one is ready.
                let (ctx, app) = (ctx.clone(), app.clone());
                tokio::spawn(async move {
                    let fresh = run_doctor(&ctx, &app).await;
                    ctx.compliance.store(fresh);
                    ctx.compliance.refreshing.store(false, Ordering::Release);
                });
            }
            return c;
        }
        let _first = self.first.lock().await;
        if let Some(c) = self.cached() {
            return c;
        }
        let fresh = run_doctor(ctx, app).await;
        self.store(fresh.clone());
        fresh
    }

    fn cached(&self) -> Option<Computed> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn store(&self, c: Computed) {
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
    }

    /// The readiness checks, run at most once per [`READINESS_TTL`] (concurrent requests
    /// share the run).
    async fn readiness(&self, ctx: &AsContext) -> Readiness {
        let mut last = self.readiness.lock().await;
        if let Some((at, r)) = *last
            && at.elapsed() < READINESS_TTL
        {
            return r;
        }
        let r = Readiness {
            store: check_store(ctx).await,
            keys: check_keys(ctx),
        };
        *last = Some((Instant::now(), r));
        r
    }
}

/// One doctor run over every resource of the configuration, bounded by
/// [`COMPLIANCE_TIMEOUT`].
async fn run_doctor(ctx: &AsContext, app: &Router) -> Computed {
    let run = ctx.compliance.runs.fetch_add(1, Ordering::Relaxed) + 1;
    let resources = ctx.cfg.resources();
    let doctor = async {
        let mut reports = Vec::with_capacity(resources.len());
        for resource in resources {
            reports.push(crate::doctor::check_app(app, resource).await);
        }
        reports
    };
    let (compliant, findings) = match tokio::time::timeout(COMPLIANCE_TIMEOUT, doctor).await {
        Ok(reports) => (
            reports.iter().all(crate::doctor::Report::compliant),
            reports
                .iter()
                .flat_map(|r| {
                    r.findings.iter().map(|f| {
                        json!({
                            "resource": r.url,
                            "check": f.check,
                            "severity": f.severity.as_str(),
                            "message": f.message,
                        })
                    })
                })
                .collect(),
        ),
        Err(_) => (
            false,
            vec![json!({
                "resource": Value::Null,
                "check": "timeout",
                "severity": "error",
                "message": format!("the compliance doctor did not finish within {} s", COMPLIANCE_TIMEOUT.as_secs()),
            })],
        ),
    };
    if !compliant {
        let shown = Value::from(findings.clone());
        tracing::warn!(target: "mcp_oauth::health", findings = %shown, "the compliance doctor found errors: MCP clients may fail");
    }
    Computed {
        at: Instant::now(),
        computed_at: crate::util::now(),
        run,
        source: "doctor",
        compliant,
        findings,
    }
}

/// What the configuration alone decides (no mounted app to run the doctor on).
fn from_configuration(ctx: &AsContext) -> Computed {
    let findings: Vec<Value> = compliance_problems(ctx.cfg.issuer(), ctx.cfg.resources())
        .into_iter()
        .map(|(resource, check, message)| {
            json!({ "resource": resource, "check": check, "severity": "error", "message": message })
        })
        .collect();
    Computed {
        at: Instant::now(),
        computed_at: crate::util::now(),
        run: 0,
        source: "configuration",
        compliant: findings.is_empty(),
        findings,
    }
}

async fn health(State(ctx): State<AsContext>) -> Response {
    let Readiness { store, keys } = ctx.compliance.readiness(&ctx).await;
    let compliance = ctx.compliance.report(&ctx).await;
    let problems: Vec<&Value> = compliance
        .findings
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| &f["message"])
        .collect();
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
            "oauth_compliant": compliance.compliant,
            "checks": { "store": word(store), "keys": word(keys) },
            "compliance": {
                "source": compliance.source,
                "computed_at": compliance.computed_at,
                "run": compliance.run,
                "resources": ctx.cfg.resources(),
                "findings": compliance.findings,
            },
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

/// What the configuration alone breaks for MCP clients (see the [module docs](self)): the
/// resource involved (`None` for the issuer), the doctor's check name and the message.
pub(crate) fn compliance_problems(
    issuer: &str,
    resources: &[String],
) -> Vec<(Option<String>, &'static str, String)> {
    let mut problems = Vec::new();
    if !secure_or_loopback(issuer) {
        problems.push((
            None,
            "https",
            format!("the issuer {issuer} is neither https nor a loopback http URL"),
        ));
    }
    if issuer.ends_with('/') {
        problems.push((
            None,
            "issuer",
            format!("the issuer {issuer} ends with a slash (clients compare it byte for byte)"),
        ));
    }
    for r in resources {
        if !secure_or_loopback(r) {
            problems.push((
                Some(r.clone()),
                "https",
                format!("the resource {r} is neither https nor a loopback http URL"),
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
