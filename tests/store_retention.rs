//! The retention and rate-limit contract ([`testkit::run_retention`],
//! [`testkit::run_rate_limits`]) on every built-in store: memory always, SQLite, PostgreSQL
//! and Redis with their features. Each rule is its own test on a multi-thread runtime, so the
//! races (a touch during a sweep, 40 hits against a limit of 7) contend for real.
//!
//! PostgreSQL and Redis come from `MCP_OAUTH_TEST_POSTGRES_URL` / `MCP_OAUTH_TEST_REDIS_URL`
//! (defaults `postgres://postgres@127.0.0.1:5432/test`, `redis://127.0.0.1:6379`); each test
//! works in a schema or key prefix of its own. Without a server the tests say so and pass,
//! except under `CI`, where they fail.

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

/// One `#[tokio::test]` per rule, each running `$run` with the rule's body.
macro_rules! contract_tests {
    ($with:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn idle_clients_removed() {
            $with(|s| async move { mcp_oauth::store::testkit::idle_clients_removed(&*s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn unused_clients_removed() {
            $with(|s| async move { mcp_oauth::store::testkit::unused_clients_removed(&*s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn client_fingerprints() {
            $with(|s| async move { mcp_oauth::store::testkit::client_fingerprints(&*s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn clients_in_use_kept() {
            $with(|s| async move { mcp_oauth::store::testkit::clients_in_use_kept(&*s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn static_clients_kept() {
            $with(|s| async move { mcp_oauth::store::testkit::static_clients_kept(&*s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn touch_during_idle_sweep() {
            $with(|s| async move { mcp_oauth::store::testkit::touch_during_idle_sweep(s).await })
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_rate_limit_hits() {
            $with(|s| async move {
                for _ in 0..5 {
                    mcp_oauth::store::testkit::concurrent_rate_limit_hits(s.clone()).await;
                }
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn rate_limit_window() {
            $with(|s| async move { mcp_oauth::store::testkit::rate_limit_window(&*s).await }).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn whole_kit() {
            $with(|s| async move {
                mcp_oauth::store::testkit::run_retention(s.clone()).await;
                mcp_oauth::store::testkit::run_rate_limits(s).await;
            })
            .await;
        }
    };
}

mod memory {
    use std::future::Future;
    use std::sync::Arc;

    use mcp_oauth::store::{GrantStore as _, MemoryStore};

    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<MemoryStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        body(Arc::new(MemoryStore::new())).await;
    }

    contract_tests!(with_store);

    #[test]
    fn offers_no_shared_counters() {
        // One instance: the server's in-process buckets do the same work for free.
        assert!(MemoryStore::new().rate_limit_store().is_none());
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::future::Future;
    use std::sync::Arc;

    use mcp_oauth::store::sql::SqliteStore;
    use mcp_oauth::store::{ClientStore as _, GrantStore as _, RateLimitStore as _, testkit};

    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<SqliteStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        body(Arc::new(SqliteStore::in_memory().await.expect("sqlite"))).await;
    }

    contract_tests!(with_store);

    /// On a file (a writer and several readers, WAL), and reopened: the migration is applied
    /// once and the counters persist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_a_file_and_reopened() {
        let dir = std::env::temp_dir().join(super::stores::unique("retention"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("oauth.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        testkit::run_retention(store.clone()).await;
        testkit::run_rate_limits(store.clone()).await;
        let w = std::time::Duration::from_secs(60);
        let t = 1_000_000;
        assert!(store.hit("k", 1, w, t).await.unwrap().allowed);
        assert!(store.rate_limit_store().is_none());
        drop(store);
        let again = SqliteStore::open(&path).await.unwrap();
        assert!(
            !again.hit("k", 1, w, t).await.unwrap().allowed,
            "the counter must survive a restart"
        );
        assert_eq!(again.sweep_idle_clients(0, 0).await.unwrap(), 0);
        drop(again);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::future::Future;
    use std::sync::Arc;

    use mcp_oauth::store::GrantStore as _;
    use mcp_oauth::store::sql::PostgresStore;

    use super::stores::PgSchema;

    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<PostgresStore>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(schema) = PgSchema::create("retention_pg").await else {
            return;
        };
        let store = Arc::new(schema.store(16).await);
        let outcome = tokio::spawn(body(store)).await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    contract_tests!(with_store);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn offers_shared_counters() {
        with_store(|s| async move { assert!(s.rate_limit_store().is_some()) }).await;
    }

    /// Two pools (two instances) racing on one key still allow exactly the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_share_one_budget() {
        let Some(schema) = PgSchema::create("retention_pg").await else {
            return;
        };
        let a = Arc::new(schema.store(8).await);
        let b = Arc::new(schema.store(8).await);
        let outcome = tokio::spawn(super::two_instances(a, b)).await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::future::Future;
    use std::sync::Arc;

    use mcp_oauth::scope::ScopeSet;
    use mcp_oauth::store::redis::RedisStore;
    use mcp_oauth::store::{
        Client, ClientSource, ClientStore as _, GrantStore as _, RefreshFamily,
        TokenEndpointAuthMethod,
    };

    use super::stores::RedisNamespace;

    async fn with_ns<F, Fut>(body: F)
    where
        F: FnOnce(Arc<RedisNamespace>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(ns) = RedisNamespace::create("retention_redis").await else {
            return;
        };
        let ns = Arc::new(ns);
        let outcome = tokio::spawn(body(ns.clone())).await;
        ns.cleanup().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<RedisStore>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        with_ns(|ns| async move { body(Arc::new(ns.store().await)).await }).await;
    }

    contract_tests!(with_store);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn offers_shared_counters() {
        with_store(|s| async move { assert!(s.rate_limit_store().is_some()) }).await;
    }

    /// Two connections (two instances) racing on one key still allow exactly the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_share_one_budget() {
        with_ns(|ns| async move {
            let a = Arc::new(ns.store().await);
            let b = Arc::new(ns.store().await);
            super::two_instances(a, b).await;
        })
        .await;
    }

    fn client(id: &str, last_used_at: u64) -> Client {
        Client {
            client_id: id.to_owned(),
            secret_hash: None,
            secret_expires_at: 0,
            client_name: None,
            redirect_uris: vec!["http://127.0.0.1/cb".to_owned()],
            grant_types: vec!["authorization_code".to_owned()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            application_type: mcp_oauth::store::ApplicationType::Native,
            scope: None,
            extra: serde_json::Map::new(),
            issued_at: 1,
            last_used_at,
            source: ClientSource::Dynamic,
        }
    }

    /// More clients and families than one scan batch: the paged walks find them all. Half
    /// the idle clients hold a live family (created before the sweep) and stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn paged_sweep_over_many_clients() {
        with_store(|s| async move {
            let now = mcp_oauth_now();
            for i in 0..700 {
                s.insert_client(client(&format!("idle-{i}"), now - 10_000))
                    .await
                    .unwrap();
                if i % 2 == 0 {
                    let family = RefreshFamily {
                        family_id: format!("fam-{i}"),
                        client_id: format!("idle-{i}"),
                        subject: "alice".to_owned(),
                        scope: ScopeSet::parse("read").unwrap(),
                        resource: "https://mcp.example.com/mcp".to_owned(),
                        claims: serde_json::Map::new(),
                        auth_time: now,
                        created_at: now,
                        expires_at: now + 3600,
                    };
                    s.create_family(family, None).await.unwrap();
                }
            }
            for i in 0..300 {
                s.insert_client(client(&format!("busy-{i}"), now))
                    .await
                    .unwrap();
            }
            assert_eq!(s.sweep_idle_clients(now - 5_000, now).await.unwrap(), 350);
            assert_eq!(s.count_clients().await.unwrap(), 650);
            assert!(s.get_client("idle-0").await.unwrap().is_some());
            assert!(s.get_client("idle-1").await.unwrap().is_none());
            assert_eq!(s.sweep_idle_clients(now - 5_000, now).await.unwrap(), 0);
        })
        .await;
    }

    fn mcp_oauth_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}

/// Hits from two stores on one backend, interleaved and concurrent: one budget.
#[cfg(any(feature = "postgres", feature = "redis"))]
async fn two_instances<A, B>(a: std::sync::Arc<A>, b: std::sync::Arc<B>)
where
    A: mcp_oauth::store::RateLimitStore,
    B: mcp_oauth::store::RateLimitStore,
{
    use std::time::Duration;
    let key = stores::unique("shared");
    let t = 5_000_000;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (a, b, k) = (a.clone(), b.clone(), key.clone());
        set.spawn(async move {
            let w = Duration::from_secs(60);
            if i % 2 == 0 {
                a.hit(&k, 10, w, t).await.unwrap().allowed
            } else {
                b.hit(&k, 10, w, t).await.unwrap().allowed
            }
        });
    }
    let mut allowed = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "two instances must share one budget of 10");
}
