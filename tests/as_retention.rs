//! Retention and shared rate limits, through the authorization server's endpoints: the
//! scheduled sweep removes idle clients and keeps the rest; `/authorize` and `/token` record
//! a client's use (at most once an hour), and an authorization racing the sweep fails as an
//! unknown client instead of half-succeeding; two servers on one store share one
//! registration budget (in process, and on PostgreSQL and Redis with their features); a
//! failing limiter fails open.

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit, Retention};
use mcp_oauth::store::{
    ApplicationType, Client, ClientSource, ClientStore, GrantStore, MemoryStore, RateLimitDecision,
    RateLimitStore, StoreError, TokenEndpointAuthMethod,
};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use tower::ServiceExt as _;

const REDIRECT: &str = "http://127.0.0.1:49152/callback";
const RESOURCE: &str = "http://127.0.0.1:8000/mcp";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(server: &AuthorizationServer) -> McpOAuthConfig {
    McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer("http://127.0.0.1:8000")
        .scope("read", "Read")
        .authorization_server(server)
        .build()
        .unwrap()
}

/// The authorization server's routes for `server` (its configuration built on the way).
fn router(server: AuthorizationServer) -> Router {
    oauth_router(config(&server), &server)
}

fn builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder().authenticator(StaticUsers::new())
}

/// A public dynamic client registered `age` seconds ago and last used `idle` seconds ago
/// (`None`: never).
fn client(id: &str, age: u64, idle: Option<u64>) -> Client {
    Client {
        client_id: id.to_owned(),
        secret_hash: None,
        secret_expires_at: 0,
        client_name: Some("Test".to_owned()),
        redirect_uris: vec![REDIRECT.to_owned()],
        grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        token_endpoint_auth_method: TokenEndpointAuthMethod::None,
        application_type: ApplicationType::Native,
        scope: None,
        extra: serde_json::Map::new(),
        issued_at: now() - age,
        last_used_at: idle.map_or(0, |i| now() - i),
        source: ClientSource::Dynamic,
    }
}

const YEAR: u64 = 365 * 24 * 3600;

fn authorize_uri(client_id: &str) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("resource", RESOURCE),
        ])
        .finish();
    format!("/authorize?{q}")
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let res = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A registration from `peer`.
/// Registers a client no other call repeats (its own `client_name`: identical registrations
/// reuse one client and cost no registration).
async fn register(app: &Router, peer: &str) -> StatusCode {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut req = Request::post("/register")
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                "client_name": format!("Client {n}") })
            .to_string(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    app.clone().oneshot(req).await.unwrap().status()
}

/// A client store that counts touches and can be told to lose the client on a touch (what
/// a sweep that wins the race looks like from the server).
#[derive(Debug, Default)]
struct Watched {
    inner: MemoryStore,
    touches: Arc<AtomicUsize>,
    vanish_on_touch: bool,
}

#[async_trait]
impl ClientStore for Watched {
    async fn insert_client(&self, client: Client) -> Result<(), StoreError> {
        self.inner.insert_client(client).await
    }
    async fn upsert_client(&self, client: Client) -> Result<(), StoreError> {
        self.inner.upsert_client(client).await
    }
    async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.inner.get_client(client_id).await
    }
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        self.inner.delete_client(client_id).await
    }
    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        if self.vanish_on_touch {
            self.inner.delete_client(client_id).await?;
        }
        self.inner.touch_client(client_id, now).await
    }
    async fn count_clients(&self) -> Result<u64, StoreError> {
        self.inner.count_clients().await
    }
    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.inner.sweep_idle_clients(idle_before, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_sweep_removes_idle_clients_and_keeps_the_rest() {
    let server = builder()
        .retention(Retention::default().with_sweep_every(Duration::from_secs(1)))
        .build()
        .await
        .unwrap();
    let clients = server.client_store().clone();
    clients
        .insert_client(client("idle", YEAR, Some(100 * 24 * 3600)))
        .await
        .unwrap();
    clients
        .insert_client(client("never-used", YEAR, None))
        .await
        .unwrap();
    clients
        .insert_client(client("active", YEAR, Some(24 * 3600)))
        .await
        .unwrap();
    let mut pinned = client("static", YEAR, None);
    pinned.source = ClientSource::Static;
    clients.upsert_client(pinned).await.unwrap();

    let _app: Router = router(server.clone());
    // Building the router starts nothing: two sweep periods later the idle client is there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        clients.get_client("idle").await.unwrap().is_some(),
        "no sweep may run before start_upkeep"
    );
    let upkeep = server.start_upkeep();
    assert!(upkeep.is_running());
    let mut removed = false;
    // Up to 30 s for a 1 s period: the bound only catches "never", not a slow machine.
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if clients.get_client("idle").await.unwrap().is_none() {
            removed = true;
            break;
        }
    }
    assert!(removed, "the scheduled sweep must run within its period");
    assert!(clients.get_client("never-used").await.unwrap().is_none());
    assert!(clients.get_client("active").await.unwrap().is_some());
    assert!(clients.get_client("static").await.unwrap().is_some());
}

#[tokio::test]
async fn no_idle_sweep_when_clients_are_kept() {
    let server = builder()
        .retention(Retention::default().manual().keep_idle_clients())
        .build()
        .await
        .unwrap();
    server
        .client_store()
        .insert_client(client("idle", 5 * YEAR, None))
        .await
        .unwrap();
    let report = server.sweep_now().await.unwrap();
    assert_eq!(report.idle_clients, 0);
    assert!(
        server
            .client_store()
            .get_client("idle")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn idle_window_is_validated() {
    let e = builder()
        .retention(Retention::default().with_idle_client_after(Duration::from_secs(60)))
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("retention.idle_client_after"), "{e}");
    let e = builder()
        .retention(Retention::default().with_sweep_every(Duration::ZERO))
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("retention.sweep_every"), "{e}");
}

#[tokio::test]
async fn authorize_records_use_at_most_hourly() {
    let watched = Watched::default();
    let touches = watched.touches.clone();
    watched
        .insert_client(client("c1", YEAR, Some(200 * 24 * 3600)))
        .await
        .unwrap();
    let server = builder().client_store(watched).build().await.unwrap();
    let clients = server.client_store().clone();
    let app: Router = router(server);

    let (status, _) = get(&app, &authorize_uri("c1")).await;
    assert_eq!(status, StatusCode::OK, "the login page");
    assert_eq!(touches.load(Ordering::SeqCst), 1);
    let used = clients
        .get_client("c1")
        .await
        .unwrap()
        .unwrap()
        .last_used_at;
    assert!(now() - used < 5, "authorize must record the use");

    // Within the hour: no more writes.
    for _ in 0..3 {
        let (status, _) = get(&app, &authorize_uri("c1")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(touches.load(Ordering::SeqCst), 1);
    // The idle sweep now keeps the client.
    assert_eq!(
        clients
            .sweep_idle_clients(now() - 90 * 24 * 3600, now())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn authorize_racing_the_sweep_answers_unknown_client() {
    let watched = Watched {
        vanish_on_touch: true,
        ..Watched::default()
    };
    watched
        .insert_client(client("c1", YEAR, None))
        .await
        .unwrap();
    let server = builder().client_store(watched).build().await.unwrap();
    let grants = server.grant_store().clone();
    let app: Router = router(server);
    let (status, body) = get(&app, &authorize_uri("c1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("not registered"), "{body}");
    assert_eq!(
        grants.stats(now()).await.unwrap(),
        Default::default(),
        "nothing may be parked for a client the sweep removed"
    );
}

#[tokio::test]
async fn token_endpoint_records_use() {
    let watched = Watched::default();
    let touches = watched.touches.clone();
    watched
        .insert_client(client("c1", YEAR, None))
        .await
        .unwrap();
    let server = builder().client_store(watched).build().await.unwrap();
    let clients = server.client_store().clone();
    let app: Router = router(server);
    for _ in 0..2 {
        let res = app
            .clone()
            .oneshot(
                Request::post("/token")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(
                        "grant_type=refresh_token&refresh_token=nope&client_id=c1",
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        touches.load(Ordering::SeqCst),
        1,
        "an authenticated client is touched once, then not for an hour"
    );
    let c = clients.get_client("c1").await.unwrap().unwrap();
    assert!(now() - c.last_used_at < 5);
}

/// Two servers on one shared limiter: one budget between them, per address.
async fn assert_shared_budget(a: Router, b: Router) {
    let mut created = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        match register(app, "198.51.100.7:5000").await {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 3, "both servers together grant one budget of 3");
    // Another address has its own.
    assert_eq!(register(&a, "198.51.100.8:5000").await, StatusCode::CREATED);
}

fn limited() -> AuthorizationServerBuilder {
    builder().register_rate_limit(RateLimit::per_minute(3))
}

#[tokio::test]
async fn two_servers_share_one_registration_budget() {
    let counters = Arc::new(MemoryStore::new());
    let a = limited()
        .rate_limit_store(counters.clone())
        .build()
        .await
        .unwrap();
    let b = limited().rate_limit_store(counters).build().await.unwrap();
    assert_shared_budget(router(a), router(b)).await;
}

#[tokio::test]
async fn without_shared_counters_each_server_grants_its_own_budget() {
    // The memory store offers no shared counters: each server counts in process.
    let a = router(limited().store(MemoryStore::new()).build().await.unwrap());
    let b = router(limited().store(MemoryStore::new()).build().await.unwrap());
    let mut created = 0;
    for i in 0..8 {
        let app: &Router = if i % 2 == 0 { &a } else { &b };
        if register(app, "198.51.100.7:5000").await == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 6);
}

/// Counters that are down.
#[derive(Debug)]
struct Down(AtomicUsize);

#[async_trait]
impl RateLimitStore for Down {
    async fn hit(
        &self,
        _key: &str,
        _limit: u32,
        _window: Duration,
        _now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::unavailable("counters down"))
    }
}

#[tokio::test]
async fn a_failing_limiter_fails_open_to_the_local_buckets() {
    let down = Arc::new(Down(AtomicUsize::new(0)));
    let app: Router = router(
        limited()
            .rate_limit_store(down.clone())
            .build()
            .await
            .unwrap(),
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(register(&app, "198.51.100.7:5000").await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "the limiter being down neither blocks registration nor lifts the limit"
    );
    assert_eq!(
        down.0.load(Ordering::SeqCst),
        8,
        "the shared counters are tried first, for both registration budgets (every request, \
         created clients)"
    );
}

#[tokio::test]
async fn shared_rate_limits_can_be_turned_off() {
    let down = Arc::new(Down(AtomicUsize::new(0)));
    let app: Router = router(
        limited()
            .rate_limit_store(down.clone())
            .shared_rate_limits(false)
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(
        register(&app, "198.51.100.7:5000").await,
        StatusCode::CREATED
    );
    // An explicit store wins over the switch (the switch is about the grant store's own):
    // one hit for the request budget, one for the created client.
    assert_eq!(down.0.load(Ordering::SeqCst), 2);
}

/// A grant store whose sweep fails: `sweep_now` reports it, and still sweeps idle clients.
#[tokio::test]
async fn sweep_now_reports_errors_and_keeps_going() {
    #[derive(Debug, Default)]
    struct BrokenSweep(MemoryStore);

    #[async_trait]
    impl GrantStore for BrokenSweep {
        fn is_durable(&self) -> bool {
            self.0.is_durable()
        }
        async fn put_code(
            &self,
            hash: mcp_oauth::store::SecretHash,
            code: mcp_oauth::store::AuthorizationCode,
        ) -> Result<(), StoreError> {
            self.0.put_code(hash, code).await
        }
        async fn take_code(
            &self,
            hash: &mcp_oauth::store::SecretHash,
            family_id: &str,
            now: u64,
        ) -> Result<mcp_oauth::store::CodeTake, StoreError> {
            self.0.take_code(hash, family_id, now).await
        }
        async fn create_family(
            &self,
            family: mcp_oauth::store::RefreshFamily,
            refresh: Option<mcp_oauth::store::SecretHash>,
        ) -> Result<(), StoreError> {
            self.0.create_family(family, refresh).await
        }
        async fn rotate_refresh(
            &self,
            presented: &mcp_oauth::store::SecretHash,
            successor: mcp_oauth::store::SecretHash,
            sealed: Vec<u8>,
            now: u64,
            grace: u64,
        ) -> Result<mcp_oauth::store::Rotation, StoreError> {
            self.0
                .rotate_refresh(presented, successor, sealed, now, grace)
                .await
        }
        async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
            self.0.revoke_family(family_id, now).await
        }
        async fn family_of_refresh(
            &self,
            hash: &mcp_oauth::store::SecretHash,
            now: u64,
        ) -> Result<Option<mcp_oauth::store::RefreshLookup>, StoreError> {
            self.0.family_of_refresh(hash, now).await
        }
        async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
            self.0.revoke_token(jti, expires_at).await
        }
        async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
            self.0.is_token_revoked(jti, now).await
        }
        async fn get_consent(
            &self,
            subject: &str,
            client_id: &str,
        ) -> Result<Option<mcp_oauth::scope::ScopeSet>, StoreError> {
            self.0.get_consent(subject, client_id).await
        }
        async fn put_consent(
            &self,
            subject: &str,
            client_id: &str,
            scope: &mcp_oauth::scope::ScopeSet,
            now: u64,
        ) -> Result<(), StoreError> {
            self.0.put_consent(subject, client_id, scope, now).await
        }
        async fn put_pending(
            &self,
            id: &str,
            pending: mcp_oauth::store::PendingAuthorization,
        ) -> Result<(), StoreError> {
            self.0.put_pending(id, pending).await
        }
        async fn get_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<mcp_oauth::store::PendingAuthorization>, StoreError> {
            self.0.get_pending(id, now).await
        }
        async fn take_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<mcp_oauth::store::PendingAuthorization>, StoreError> {
            self.0.take_pending(id, now).await
        }
        async fn sweep(&self, _now: u64) -> Result<u64, StoreError> {
            Err(StoreError::unavailable("sweep refused"))
        }
        async fn stats(&self, now: u64) -> Result<mcp_oauth::store::StoreStats, StoreError> {
            self.0.stats(now).await
        }
    }

    let server = builder()
        .client_store(MemoryStore::new())
        .grant_store(BrokenSweep::default())
        .build()
        .await
        .unwrap();
    let clients = server.client_store().clone();
    clients
        .insert_client(client("idle", YEAR, None))
        .await
        .unwrap();
    let e = server.sweep_now().await.unwrap_err();
    assert!(e.to_string().contains("sweep refused"), "{e}");
    assert!(
        clients.get_client("idle").await.unwrap().is_none(),
        "the idle-client step runs even when the grant step failed"
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::stores::PgSchema;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_database_share_one_budget() {
        let Some(schema) = PgSchema::create("as_retention").await else {
            return;
        };
        let a = schema.store(4).await;
        let b = schema.store(4).await;
        let outcome = tokio::spawn(async move {
            assert!(a.rate_limit_store().is_some());
            let a = router(limited().store(a).build().await.unwrap());
            let b = router(limited().store(b).build().await.unwrap());
            assert_shared_budget(a, b).await;
        })
        .await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::stores::RedisNamespace;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_redis_share_one_budget() {
        let Some(ns) = RedisNamespace::create("as_retention").await else {
            return;
        };
        let ns = Arc::new(ns);
        let n = ns.clone();
        let outcome = tokio::spawn(async move {
            let a = router(limited().store(n.store().await).build().await.unwrap());
            let b = router(limited().store(n.store().await).build().await.unwrap());
            assert_shared_budget(a, b).await;
        })
        .await;
        ns.cleanup().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
