//! The key-store contract ([`mcp_oauth::store::testkit::run_key_store`] and its parts) on
//! every store: [`MemoryStore`], [`SqliteStore`] (in memory and on a file), [`PostgresStore`]
//! and [`RedisStore`] (the last two against real servers, from `MCP_OAUTH_TEST_POSTGRES_URL`
//! and `MCP_OAUTH_TEST_REDIS_URL`; skipped without them, failed under `CI`). Each on a
//! multi-thread runtime so the 16 instances racing to create the first key, or to rotate it,
//! contend for real. Then what is particular to the SQL stores: the database itself refuses
//! a second current key. Last, what the stores are for: two authorization servers on one
//! SQLite file, PostgreSQL schema or Redis prefix, built with no key ring, keep their keys in it, publish the same
//! JWKS and accept each other's tokens, also after one of them rotates.

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

#[path = "support/app_probe.rs"]
mod app_probe;

use std::sync::Arc;

use mcp_oauth::store::{MemoryStore, testkit};

macro_rules! key_rules {
    ($run:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn key_lifecycle() {
            $run(|s| async move { testkit::key_lifecycle(&*s).await }).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_initial_key() {
            $run(|s| async move {
                for _ in 0..5 {
                    testkit::concurrent_initial_key(s.clone()).await;
                }
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_key_rotation() {
            $run(|s| async move {
                for _ in 0..5 {
                    testkit::concurrent_key_rotation(s.clone()).await;
                }
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn retired_keys_until_pruned() {
            $run(|s| async move { testkit::retired_keys_until_pruned(&*s).await }).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn run_key_store() {
            $run(|s| async move { testkit::run_key_store(s).await }).await;
        }
    };
}

/// Two authorization servers built on two handles of one store, with no `.key_ring(..)`:
/// they load (or create) one ring in it, publish the same keys and accept each other's
/// tokens, before and after a rotation by one of them.
#[allow(dead_code)]
mod two_servers {
    use axum::Router;
    use axum::routing::post;
    use http::StatusCode;
    use mcp_oauth::authn::StaticUsers;
    use mcp_oauth::server::AuthorizationServer;
    use mcp_oauth::store::{ClientStore, GrantStore};
    use mcp_oauth::{McpOAuthConfig, McpOAuthLayer, oauth_router};
    use serde_json::json;

    const ISSUER: &str = "https://mcp.example.com";
    const RESOURCE: &str = "https://mcp.example.com/mcp";

    async fn instance(store: impl ClientStore + GrantStore) -> (AuthorizationServer, Router) {
        let server = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .store(store)
            .build()
            .await
            .expect("a durable store keeps the keys itself");
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer(ISSUER)
            .scope("read", "Read")
            .authorization_server(&server)
            .build()
            .unwrap();
        let app = Router::new()
            .route("/mcp", post(|| async { "ok" }))
            .layer(McpOAuthLayer::new(&cfg))
            .merge(oauth_router(&cfg, &server));
        (server, app)
    }

    fn token(server: &AuthorizationServer) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": now + 300, "iat": now,
            "jti": format!("fam-{now}.x"), "client_id": "c1", "scope": "read",
        });
        server.key_ring().sign("at+jwt", &claims).unwrap()
    }

    /// The check, on two handles `a` and `b` of one store.
    pub(crate) async fn share_one_ring(
        a: impl ClientStore + GrantStore,
        b: impl ClientStore + GrantStore,
    ) {
        let (sa, app_a) = instance(a).await;
        let (sb, app_b) = instance(b).await;
        assert!(sa.key_ring().is_shared() && sb.key_ring().is_shared());
        let kid = sa.key_ring().current().kid().to_owned();
        assert_eq!(sb.key_ring().current().kid(), kid, "one key, created once");
        assert_eq!(crate::app_probe::jwks_kids(&app_a).await, vec![kid.clone()]);
        assert_eq!(crate::app_probe::jwks_kids(&app_b).await, vec![kid.clone()]);

        let (ta, tb) = (token(&sa), token(&sb));
        for (app, t) in [(&app_a, &tb), (&app_b, &ta), (&app_a, &ta), (&app_b, &tb)] {
            assert_eq!(crate::app_probe::mcp(app, t).await, StatusCode::OK);
        }

        // A rotates in the store; B verifies A's new token at once and then signs with it.
        let rotated = sa.rotate_signing_key().await.unwrap();
        assert_ne!(rotated.kid(), kid);
        let t_new = token(&sa);
        assert_eq!(crate::app_probe::mcp(&app_b, &t_new).await, StatusCode::OK);
        assert_eq!(sb.key_ring().current().kid(), rotated.kid());
        assert_eq!(
            crate::app_probe::jwks_kids(&app_a).await,
            crate::app_probe::jwks_kids(&app_b).await
        );
        assert_eq!(
            crate::app_probe::mcp(&app_b, &ta).await,
            StatusCode::OK,
            "the old key still verifies"
        );

        // Control: a server with keys of its own refuses them all.
        let (_, lone) = instance(mcp_oauth::store::MemoryStore::new()).await;
        assert_eq!(
            crate::app_probe::mcp(&lone, &t_new).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

mod memory {
    use super::*;

    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<MemoryStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        body(Arc::new(MemoryStore::new())).await;
    }

    key_rules!(with_store);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use mcp_oauth::keys::SigningAlgorithm;
    use mcp_oauth::store::sql::SqliteStore;
    use mcp_oauth::store::{KeyStore, StoreError, StoredKey};

    use super::*;

    /// A store on a file of its own (the file's directory is removed afterwards).
    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<SqliteStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = std::env::temp_dir().join(stores::unique("store_keys"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        body(Arc::new(store)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    key_rules!(with_store);

    /// Two authorization servers on one file (two processes), with no key ring: one ring,
    /// in the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_servers_without_a_key_ring_share_one_ring() {
        let dir = std::env::temp_dir().join(stores::unique("store_keys_servers"));
        std::fs::create_dir_all(&dir).unwrap();
        let a = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let b = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        super::two_servers::share_one_ring(a, b).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn run_key_store_in_memory() {
        testkit::run_key_store(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
    }

    /// Two stores on one file (two processes) race for the first key: the file decides.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_handles_one_first_key() {
        let dir = std::env::temp_dir().join(stores::unique("store_keys_two"));
        std::fs::create_dir_all(&dir).unwrap();
        let a = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let b = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        let now = 1_700_000_000;
        let (ka, kb) = (
            StoredKey::generate(SigningAlgorithm::Es256, now).unwrap(),
            StoredKey::generate(SigningAlgorithm::Es256, now).unwrap(),
        );
        let (ra, rb) = tokio::join!(
            a.create_initial_key("r", ka.clone()),
            b.create_initial_key("r", kb.clone())
        );
        assert_eq!(
            usize::from(ra.unwrap()) + usize::from(rb.unwrap()),
            1,
            "exactly one first key"
        );
        assert_eq!(
            a.load_keys("r", now).await.unwrap(),
            b.load_keys("r", now).await.unwrap()
        );
        // A new current key marked retired is refused before it reaches the database.
        let mut retired = StoredKey::generate(SigningAlgorithm::Es256, now).unwrap();
        retired.retired_at = Some(now);
        assert!(matches!(
            a.create_initial_key("other", retired).await,
            Err(StoreError::Conflict { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use mcp_oauth::store::sql::PostgresStore;
    use stores::PgSchema;

    use super::*;

    /// A store in a schema of its own (dropped afterwards, also when `body` panics).
    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<PostgresStore>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(schema) = PgSchema::create("store_keys").await else {
            return;
        };
        let store = Arc::new(schema.store(16).await);
        let outcome = tokio::spawn(body(store)).await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    key_rules!(with_store);

    /// Two pools (two instances) on one schema race for the first key and for a rotation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_pools() {
        let Some(schema) = PgSchema::create("store_keys_two").await else {
            return;
        };
        let a = schema.store(8).await;
        let b = schema.store(8).await;
        let outcome = tokio::spawn(async move {
            use mcp_oauth::keys::KeyRing;
            let (ra, rb) = tokio::join!(
                KeyRing::from_store(a.clone()).open(),
                KeyRing::from_store(b.clone()).open()
            );
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ra.current().kid(), rb.current().kid());
            let (oa, ob) = tokio::join!(ra.rotate_fresh(), rb.rotate_fresh());
            let (oa, ob) = (oa.unwrap(), ob.unwrap());
            assert_eq!(oa.kid(), ob.kid(), "one rotation wins: {oa:?} / {ob:?}");
            assert_eq!(ra.jwks(), rb.jwks());
        })
        .await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// Two authorization servers on one schema, with no key ring: one ring, in the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_servers_without_a_key_ring_share_one_ring() {
        let Some(schema) = PgSchema::create("store_keys_servers").await else {
            return;
        };
        let (a, b) = (schema.store(4).await, schema.store(4).await);
        let outcome = tokio::spawn(super::two_servers::share_one_ring(a, b)).await;
        schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    use mcp_oauth::store::redis::RedisStore;
    use stores::RedisNamespace;

    use super::*;

    /// A store under a key prefix of its own (its keys deleted afterwards).
    async fn with_store<F, Fut>(body: F)
    where
        F: FnOnce(Arc<RedisStore>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(ns) = RedisNamespace::create("store_keys").await else {
            return;
        };
        let store = Arc::new(ns.store().await);
        let outcome = tokio::spawn(body(store)).await;
        ns.cleanup().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    key_rules!(with_store);

    /// Two authorization servers on one prefix, with no key ring: one ring, in the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_servers_without_a_key_ring_share_one_ring() {
        let Some(ns) = RedisNamespace::create("store_keys_servers").await else {
            return;
        };
        let (a, b) = (ns.store().await, ns.store().await);
        let outcome = tokio::spawn(super::two_servers::share_one_ring(a, b)).await;
        ns.cleanup().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The kit catches a store that checks and then writes in two steps (the mistake the atomic
/// methods exist to prevent).
mod racy {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use mcp_oauth::store::{KeyRotation, KeyStore, StoreError, StoredKey};

    use super::*;

    /// Get-then-set, with a pause between the check and the write.
    #[derive(Default)]
    struct RacyKeys(Mutex<HashMap<String, Vec<StoredKey>>>);

    impl RacyKeys {
        fn current(&self, ring: &str) -> Option<String> {
            let rings = self.0.lock().unwrap();
            rings
                .get(ring)
                .and_then(|keys| keys.iter().find(|k| k.is_current()).map(|k| k.kid.clone()))
        }
    }

    #[async_trait]
    impl KeyStore for RacyKeys {
        async fn load_keys(&self, ring: &str, _now: u64) -> Result<Vec<StoredKey>, StoreError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(ring)
                .cloned()
                .unwrap_or_default())
        }

        async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
            if self.current(ring).is_some() {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.0
                .lock()
                .unwrap()
                .entry(ring.to_owned())
                .or_default()
                .push(key);
            Ok(true)
        }

        async fn rotate_key(
            &self,
            ring: &str,
            expected_current: &str,
            next: StoredKey,
            now: u64,
            publish_until: u64,
        ) -> Result<KeyRotation, StoreError> {
            let current = self.current(ring);
            if current.as_deref() != Some(expected_current) {
                return Ok(KeyRotation::Superseded { current });
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let mut rings = self.0.lock().unwrap();
            let keys = rings.entry(ring.to_owned()).or_default();
            for k in keys.iter_mut().filter(|k| k.kid == expected_current) {
                k.retired_at = Some(now);
                k.publish_until = Some(publish_until);
            }
            keys.push(next);
            Ok(KeyRotation::Rotated)
        }

        async fn prune_keys(&self, _ring: &str, _now: u64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[should_panic(expected = "exactly one must win")]
    async fn a_non_atomic_first_key_is_caught() {
        testkit::concurrent_initial_key(Arc::new(RacyKeys::default())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[should_panic(expected = "exactly one must rotate")]
    async fn a_non_atomic_rotation_is_caught() {
        testkit::concurrent_key_rotation(Arc::new(RacyKeys::default())).await;
    }
}
