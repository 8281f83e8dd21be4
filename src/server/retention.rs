//! Retention: what the authorization server forgets, and when.
//!
//! A store fills up with things that stop mattering: expired authorization codes, pending
//! requests nobody finished, revocations of tokens that have expired anyway, dead refresh
//! families, full rate-limit buckets, and clients that registered once and never came back
//! (every MCP client registers dynamically, often once per install). The server sweeps them
//! on a schedule, configured with [`Retention`]:
//!
//! - every [`sweep_every`](Retention::sweep_every) (10 minutes by default) it calls
//!   [`GrantStore::sweep`], [`ClientStore::sweep_idle_clients`][sweep_idle_clients] and,
//!   with shared rate limits, [`RateLimitStore::sweep_rate_limits`], and logs what went
//!   (`tracing` target `mcp_oauth::retention`: `info` when something was removed, `debug`
//!   otherwise, `warn` on a store error, after which the next round simply tries again);
//! - a dynamically registered client is removed once it has been idle for
//!   [`idle_client_after`](Retention::idle_client_after) (90 days by default), never sooner
//!   than the refresh-token lifetime plus an hour, and only when it holds nothing live: no
//!   live refresh family, no unexpired code, no pending authorization (the store checks this
//!   and deletes in one atomic step). Configured ([`StaticClient`](super::StaticClient))
//!   clients are never removed;
//! - a dynamically registered client that was **never used** is removed sooner, once it is
//!   [`unused_client_after`](Retention::unused_client_after) (3 hours by default) old and
//!   holds nothing live ([`ClientStore::sweep_unused_clients`][sweep_unused_clients]); see
//!   [clients that never finish](#clients-that-never-finish).
//!
//! **Nothing sweeps until you ask.** Call [`AuthorizationServer::start_upkeep`] once, inside
//! the Tokio runtime, when the server starts serving (next to `axum::serve`), and keep the
//! [`UpkeepHandle`] it returns: the sweep stops when that handle is dropped, or when the last
//! handle on the server (router, [`AuthorizationServer`]) is dropped, as the task holds only
//! a weak reference. Building [`oauth_router`](super::oauth_router) starts nothing. Several
//! instances sharing a store may all sweep: every delete is idempotent. With your own
//! scheduler, turn the schedule off ([`Retention::manual`]) and call
//! [`AuthorizationServer::sweep_now`].
//!
//! # What counts as use
//!
//! A client is *used* when it authenticates at `/token` (a code redeemed, a token
//! refreshed), `/revoke` or `/introspect`, and when it starts an authorization at
//! `/authorize`; the server then records the time with
//! [`ClientStore::touch_client`][touch_client]. To keep that cheap the write is skipped
//! while the recorded time is less than an hour old, which is why the idle window is never
//! shorter than the refresh-token lifetime plus an hour. At `/authorize` the use is
//! recorded **before** anything is stored for the request, and the client is read back
//! afterwards: a client that a concurrent sweep removed is answered as unknown (it registers
//! again), never half-used.
//!
//! One exception: a client never used yet that starts an authorization while its
//! never-used window has more than the pending-request and code lifetimes plus 15 minutes
//! left is **not** recorded as used, so that an abandoned attempt does not exempt it from
//! the never-used rule. That is safe because the rule removes nothing that holds a pending
//! request, a code or a refresh family, and the token endpoint records the use before it
//! redeems the code; the attempt finishes (or its request expires) before the deadline.
//!
//! # Clients that never finish
//!
//! Public servers see millions of registrations, most from clients that register on every
//! connection and never complete an authorization. Keeping each for 90 days makes a cap on
//! clients a cap on users. So a dynamic client that was never used (its `last_used_at` is
//! `0`: registration stores it so) is removed once it is
//! [`unused_client_after`](Retention::unused_client_after) old (3 hours by default, 1 hour
//! to 30 days, never longer than the idle window) and holds nothing live. A client that was
//! used once, however long ago, is never removed by this rule; only the idle rule applies to
//! it. Clients registered before this rule existed were recorded as used at registration,
//! so they too follow only the idle rule.
//!
//! The cost: a client that registers, abandons its first attempt and comes back after the
//! window with the same `client_id` is unknown (`/authorize` shows the unknown-client page;
//! `/token` answers `401 invalid_client`) and must register again, which the MCP clients
//! do. Lengthen the window, or [`keep_unused_clients`](Retention::keep_unused_clients), for
//! clients that keep a registration across days without finishing.
//!
//! ```
//! use std::time::Duration;
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::{AuthorizationServer, Retention};
//! use mcp_oauth::store::{ApplicationType, Client, ClientSource, TokenEndpointAuthMethod};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     // Sweep hourly; forget clients unused for half a year.
//!     .retention(
//!         Retention::default()
//!             .with_sweep_every(Duration::from_secs(3600))
//!             .with_idle_client_after(Duration::from_secs(180 * 24 * 3600)),
//!     )
//!     .build()
//!     .await
//!     .unwrap();
//!
//! // A client that registered a year ago and was never used again.
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
//! let idle = Client {
//!     client_id: "idle-client".into(),
//!     secret_hash: None,
//!     secret_expires_at: 0,
//!     client_name: None,
//!     redirect_uris: vec!["http://127.0.0.1/cb".into()],
//!     grant_types: vec!["authorization_code".into()],
//!     token_endpoint_auth_method: TokenEndpointAuthMethod::None,
//!     application_type: ApplicationType::Native,
//!     scope: None,
//!     extra: Default::default(),
//!     issued_at: now - 365 * 24 * 3600,
//!     last_used_at: 0,
//!     source: ClientSource::Dynamic,
//! };
//! server.client_store().insert_client(idle).await.unwrap();
//!
//! // With your own scheduler (or in a test), sweep now:
//! let report = server.sweep_now().await.unwrap();
//! assert_eq!(report.idle_clients, 1);
//! assert!(server.client_store().get_client("idle-client").await.unwrap().is_none());
//! # }
//! ```
//!
//! [sweep_idle_clients]: crate::store::ClientStore::sweep_idle_clients
//! [sweep_unused_clients]: crate::store::ClientStore::sweep_unused_clients
//! [touch_client]: crate::store::ClientStore::touch_client

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{AsContext, AuthorizationServer, AuthorizationServerBuilder, ServerInner};
use crate::config::ConfigError;
use crate::store::rate_limit::now_ms;
use crate::store::{Client, ClientSource, GrantStore, RateLimitStore, StoreError};

/// Log target of the sweep.
const TARGET: &str = "mcp_oauth::retention";

pub(crate) use crate::flows::TOUCH_INTERVAL_SECS;

/// What the server forgets, and how often it looks. See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use mcp_oauth::server::Retention;
///
/// let r = Retention::default();
/// assert_eq!(r.sweep_every, Some(Duration::from_secs(600)));
/// assert_eq!(r.idle_client_after, Some(Duration::from_secs(90 * 24 * 3600)));
/// assert_eq!(r.unused_client_after, Some(Duration::from_secs(3 * 3600)));
/// // Keep every client forever, but still drop expired codes and tokens every 5 minutes.
/// let r = Retention::default().with_sweep_every(Duration::from_secs(300)).keep_idle_clients();
/// assert_eq!(r.idle_client_after, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// How often the server sweeps on its own (`None`: never; call
    /// [`AuthorizationServer::sweep_now`] yourself). 10 minutes by default; 1 s to 1 day.
    pub sweep_every: Option<Duration>,
    /// How long a dynamically registered client may stay unused before a sweep removes it
    /// (`None`: never). 90 days by default; at least 1 day, and never shorter than the
    /// refresh-token lifetime plus an hour (a longer one is used instead).
    pub idle_client_after: Option<Duration>,
    /// How long a dynamically registered client that has **never** been used (no
    /// authorization completed: see [what counts as use](self#what-counts-as-use)) is kept
    /// after its registration (`None`: such clients follow
    /// [`idle_client_after`](Self::idle_client_after) only). 3 hours by default; 1 hour to
    /// 30 days. See [clients that never finish](self#clients-that-never-finish).
    pub unused_client_after: Option<Duration>,
}

/// The default of [`Retention::unused_client_after`]: 3 hours.
pub const DEFAULT_UNUSED_CLIENT_AFTER: Duration = Duration::from_secs(3 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Self {
            sweep_every: Some(Duration::from_secs(600)),
            idle_client_after: Some(Duration::from_secs(90 * 24 * 3600)),
            unused_client_after: Some(DEFAULT_UNUSED_CLIENT_AFTER),
        }
    }
}

impl Retention {
    /// The defaults: sweep every 10 minutes, remove clients idle for 90 days and clients
    /// never used 3 hours after their registration.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sweeps every `every` (1 s to 1 day).
    #[must_use]
    pub fn with_sweep_every(mut self, every: Duration) -> Self {
        self.sweep_every = Some(every);
        self
    }

    /// No scheduled sweep: call [`AuthorizationServer::sweep_now`] from your own scheduler.
    #[must_use]
    pub fn manual(mut self) -> Self {
        self.sweep_every = None;
        self
    }

    /// Removes dynamically registered clients idle for `after` (at least 1 day).
    #[must_use]
    pub fn with_idle_client_after(mut self, after: Duration) -> Self {
        self.idle_client_after = Some(after);
        self
    }

    /// Never removes a registered client, however long unused (neither idle clients nor
    /// [never-used](Self::keep_unused_clients) ones).
    #[must_use]
    pub fn keep_idle_clients(mut self) -> Self {
        self.idle_client_after = None;
        self.unused_client_after = None;
        self
    }

    /// Removes dynamically registered clients that were never used `after` their
    /// registration (1 hour to 30 days; 3 hours by default).
    #[must_use]
    pub fn with_unused_client_after(mut self, after: Duration) -> Self {
        self.unused_client_after = Some(after);
        self
    }

    /// Keeps never-used clients as long as idle ones
    /// ([`idle_client_after`](Self::idle_client_after)).
    #[must_use]
    pub fn keep_unused_clients(mut self) -> Self {
        self.unused_client_after = None;
        self
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Expired codes, pending requests, revocations and dead families
    /// ([`GrantStore::sweep`]).
    pub expired_grants: u64,
    /// Idle dynamic clients
    /// ([`ClientStore::sweep_idle_clients`](crate::store::ClientStore::sweep_idle_clients)).
    pub idle_clients: u64,
    /// Dynamic clients never used within [`Retention::unused_client_after`] of their
    /// registration
    /// ([`ClientStore::sweep_unused_clients`](crate::store::ClientStore::sweep_unused_clients)).
    pub unused_clients: u64,
    /// Full rate-limit buckets of the shared counters
    /// ([`RateLimitStore::sweep_rate_limits`]).
    pub rate_limit_entries: u64,
}

impl SweepReport {
    fn total(&self) -> u64 {
        self.expired_grants + self.idle_clients + self.unused_clients + self.rate_limit_entries
    }
}

/// The builder's retention and shared-rate-limit settings.
#[derive(Clone)]
pub(crate) struct Upkeep {
    pub(crate) retention: Retention,
    /// The idle window actually used (after [`validate`](Self::validate)).
    idle_after: Option<Duration>,
    /// The never-used window actually used (after [`validate`](Self::validate)).
    unused_after: Option<Duration>,
    rate_limit_store: Option<Arc<dyn RateLimitStore>>,
    shared_rate_limits: bool,
}

impl Default for Upkeep {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            idle_after: None,
            unused_after: None,
            rate_limit_store: None,
            shared_rate_limits: true,
        }
    }
}

impl std::fmt::Debug for Upkeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upkeep")
            .field("retention", &self.retention)
            .field("idle_after", &self.idle_after)
            .field("unused_after", &self.unused_after)
            .field("rate_limit_store", &self.rate_limit_store.is_some())
            .field("shared_rate_limits", &self.shared_rate_limits)
            .finish()
    }
}

impl Upkeep {
    /// Checks the ranges and fixes the idle window against the refresh-token lifetime.
    pub(crate) fn validate(mut self, refresh_ttl: Duration) -> Result<Self, ConfigError> {
        if let Some(every) = self.retention.sweep_every {
            super::builder::check_range("retention.sweep_every", every, 1, 24 * 3600)?;
        }
        self.idle_after = match self.retention.idle_client_after {
            Some(after) => {
                super::builder::check_range(
                    "retention.idle_client_after",
                    after,
                    24 * 3600,
                    10 * 365 * 24 * 3600,
                )?;
                let floor = refresh_ttl + Duration::from_secs(TOUCH_INTERVAL_SECS);
                Some(after.max(floor))
            }
            None => None,
        };
        self.unused_after = match self.retention.unused_client_after {
            Some(after) => {
                super::builder::check_range(
                    "retention.unused_client_after",
                    after,
                    3600,
                    30 * 24 * 3600,
                )?;
                // Never longer than the idle window: that rule removes them sooner anyway.
                Some(self.idle_after.map_or(after, |idle| after.min(idle)))
            }
            None => None,
        };
        Ok(self)
    }

    /// The never-used window in force (`None`: off).
    pub(crate) fn unused_after(&self) -> Option<Duration> {
        self.unused_after
    }

    /// The shared counters to use: the explicit store, else the grant store's own (unless
    /// turned off).
    pub(crate) fn shared_limiter<'a>(
        &'a self,
        grants: &'a dyn GrantStore,
    ) -> Option<&'a dyn RateLimitStore> {
        match &self.rate_limit_store {
            Some(explicit) => Some(&**explicit),
            None if self.shared_rate_limits => grants.rate_limit_store(),
            None => None,
        }
    }
}

impl AuthorizationServerBuilder {
    /// What the server forgets and how often it sweeps ([`Retention::default`]: every 10
    /// minutes; dynamic clients idle for 90 days, or never used 3 hours after registering).
    /// See [`retention`](crate::server::retention).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.upkeep.retention = retention;
        self
    }

    /// Whether the per-address rate limits count in the store when it offers shared
    /// counters ([`GrantStore::rate_limit_store`]: PostgreSQL and Redis do), so that every
    /// instance sharing the store shares one budget per address. On by default; off keeps
    /// the counters in process (each instance then grants the full budget on its own).
    ///
    /// While the store's counters fail, each instance falls back to its own in-process
    /// buckets and logs a warning (at most once a minute): a limiter outage never becomes a
    /// login outage.
    pub fn shared_rate_limits(mut self, on: bool) -> Self {
        self.upkeep.shared_rate_limits = on;
        self
    }

    /// Counts the per-address rate limits in `store` (shared by every instance using it),
    /// whatever the grant store offers, e.g. a Redis next to a PostgreSQL grant store.
    pub fn rate_limit_store(mut self, store: impl RateLimitStore) -> Self {
        self.upkeep.rate_limit_store = Some(Arc::new(store));
        self
    }
}

impl AuthorizationServer {
    /// Sweeps now, whatever the schedule: expired grants, idle clients (when
    /// [`Retention::idle_client_after`] is set) and full shared rate-limit buckets. Safe to
    /// run on several instances at once.
    ///
    /// # Errors
    /// The first store error; the other steps still ran (their counts are logged).
    pub async fn sweep_now(&self) -> Result<SweepReport, StoreError> {
        let (report, error) = sweep(&self.inner).await;
        match error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// One sweep over everything; each step runs even when an earlier one failed.
async fn sweep(inner: &ServerInner) -> (SweepReport, Option<StoreError>) {
    let now = crate::util::now();
    let mut report = SweepReport::default();
    let mut first_error = None;
    let mut note = |step: &str, e: StoreError| {
        tracing::warn!(
            target: TARGET,
            step,
            error = %e,
            "sweep step failed; the next sweep tries again"
        );
        first_error.get_or_insert(e);
    };
    match inner.grants.sweep(now).await {
        Ok(n) => report.expired_grants = n,
        Err(e) => note("grants", e),
    }
    if let Some(idle) = inner.upkeep.idle_after {
        let before = now.saturating_sub(idle.as_secs());
        match inner.clients.sweep_idle_clients(before, now).await {
            Ok(n) => {
                if n > 0 {
                    crate::audit::client_reaped("idle", n);
                }
                report.idle_clients = n;
            }
            Err(e) => note("idle clients", e),
        }
    }
    if let Some(unused) = inner.upkeep.unused_after {
        let before = now.saturating_sub(unused.as_secs());
        match inner.clients.sweep_unused_clients(before, now).await {
            Ok(n) => {
                if n > 0 {
                    crate::audit::client_reaped("unused", n);
                }
                report.unused_clients = n;
            }
            Err(e) => note("unused clients", e),
        }
    }
    if let Some(limiter) = inner.upkeep.shared_limiter(&*inner.grants) {
        match limiter.sweep_rate_limits(now_ms()).await {
            Ok(n) => report.rate_limit_entries = n,
            Err(e) => note("rate limits", e),
        }
    }
    if report.total() > 0 {
        tracing::info!(
            target: TARGET,
            expired_grants = report.expired_grants,
            idle_clients = report.idle_clients,
            unused_clients = report.unused_clients,
            rate_limit_entries = report.rate_limit_entries,
            "swept the store"
        );
    } else {
        tracing::debug!(target: TARGET, "swept the store; nothing to remove");
    }
    (report, first_error)
}

impl AuthorizationServer {
    /// Starts the server's background upkeep: the scheduled sweep of
    /// [`Retention::sweep_every`] (see the [module docs](self)). Nothing runs in the
    /// background until this is called; building the server or [`oauth_router`] starts
    /// nothing.
    ///
    /// Call it once, inside the Tokio runtime that serves the router, and keep the returned
    /// [`UpkeepHandle`] for as long as the server runs: dropping it (or
    /// [`UpkeepHandle::stop`]) stops the sweep, and so does dropping the last handle on the
    /// server (the task holds only a weak reference). Outside a Tokio runtime, or with
    /// [`Retention::manual`], nothing is started (outside a runtime a warning is logged) and
    /// [`UpkeepHandle::is_running`] is `false`.
    ///
    /// A shared key ring ([`KeyRing::from_store`](crate::keys::KeyRing::from_store)) reloads
    /// itself from the store from the moment it is opened; that is not part of this upkeep.
    ///
    /// [`oauth_router`]: super::oauth_router
    pub fn start_upkeep(&self) -> UpkeepHandle {
        let Some(every) = self.inner.upkeep.retention.sweep_every else {
            return UpkeepHandle(None);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                target: TARGET,
                "start_upkeep was called outside a Tokio runtime: the scheduled sweep is not \
                 running (call it inside the runtime, or call AuthorizationServer::sweep_now)"
            );
            return UpkeepHandle(None);
        };
        // Instances started together should not all sweep at the same moment.
        let first = jitter(every.min(Duration::from_secs(60)));
        let weak = Arc::downgrade(&self.inner);
        UpkeepHandle(Some(runtime.spawn(run(weak, every, first))))
    }
}

/// The running upkeep of an [`AuthorizationServer`], from
/// [`start_upkeep`](AuthorizationServer::start_upkeep): it stops when this handle is
/// dropped.
#[derive(Debug)]
#[must_use = "the upkeep stops when its handle is dropped"]
pub struct UpkeepHandle(Option<JoinHandle<()>>);

impl UpkeepHandle {
    /// Whether the scheduled sweep is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the upkeep (as dropping the handle does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for UpkeepHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

async fn run(server: Weak<ServerInner>, every: Duration, first: Duration) {
    tokio::time::sleep(first).await;
    loop {
        let Some(inner) = server.upgrade() else {
            return;
        };
        let _ = sweep(&inner).await;
        drop(inner);
        tokio::time::sleep(every).await;
    }
}

/// A random duration below `max`.
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    crate::util::fill_random(&mut b);
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from_le_bytes(b) % millis)
}

/// Whether `client`'s recorded use is recent enough to skip recording this one (`0`: no use
/// recorded yet).
fn recently_used(client: &Client, now: u64) -> bool {
    client.last_used_at != 0 && now.saturating_sub(client.last_used_at) < TOUCH_INTERVAL_SECS
}

fn is_static(ctx: &AsContext, client: &Client) -> bool {
    client.source == ClientSource::Static
        || ctx.server.static_clients.contains_key(&client.client_id)
}

/// Records a use of an authenticated client (token, revocation, introspection), at most
/// once an hour; best effort, as the request itself does not depend on it.
pub(crate) async fn note_use(ctx: &AsContext, client: &Client) {
    let now = crate::util::now();
    if is_static(ctx, client) || recently_used(client, now) {
        return;
    }
    if let Err(e) = ctx
        .server
        .clients
        .touch_client(&client.client_id, now)
        .await
    {
        tracing::warn!(target: "mcp_oauth::store", error = %e, "could not record client use");
    }
}

#[cfg(test)]
mod tests;
