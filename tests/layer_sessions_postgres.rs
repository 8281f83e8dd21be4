//! Session bindings shared through PostgreSQL (issue 8 item 2): the store keeps the binding
//! rules, and two layers ("instances") on one [`PostgresStore`] agree on who opened a
//! session.
//!
//! The server comes from `MCP_OAUTH_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema of its own,
//! dropped afterwards. Without a server the tests say so and pass, except under `CI`, where
//! they fail.
#![cfg(feature = "postgres")]

use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_oauth::resource::{SessionBindings as _, SessionKey, SessionOwner};
use mcp_oauth::store::sql::PostgresStore;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

#[path = "support/sessions.rs"]
mod sessions;

/// A store in a fresh schema, and the admin pool that drops it.
async fn store(test: &str) -> Option<(PostgresStore, PgPool, String)> {
    let url = std::env::var("MCP_OAUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = PgConnectOptions::from_str(&url).expect("a PostgreSQL URL");
    let admin = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
    {
        Ok(p) => p,
        Err(e) if std::env::var_os("CI").is_some() => panic!("no PostgreSQL at {url}: {e}"),
        Err(e) => {
            eprintln!("skipping: no PostgreSQL at {url}: {e}");
            return None;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("layer_sessions_{test}_{nanos}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool).await.expect("migrate");
    Some((store, admin, schema))
}

async fn drop_schema(admin: &PgPool, schema: &str) {
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(admin)
    .await;
}

// issue 8 item 2: the store keeps the binding rules (claim once, keep the principal), one
// claim wins a race, and only hashes of session ids are stored.
#[tokio::test]
async fn postgres_bindings_follow_the_rules() {
    let Some((s, admin, schema)) = store("rules").await else {
        return;
    };
    sessions::binding_rules(&s, "pg-session").await;
    let k = SessionKey::of("pg-kept");
    s.bind(&k, &sessions::alice()).await.unwrap();
    // Of many instances racing to claim an anonymous session, one principal wins for all.
    let race = SessionKey::of("pg-race");
    s.bind(&race, &SessionOwner::Anonymous).await.unwrap();
    let claims = (0..8).map(|i| {
        let s = s.clone();
        let race = race.clone();
        tokio::spawn(async move {
            let me = SessionOwner::Principal {
                subject: format!("user-{i}"),
                client_id: None,
            };
            s.bind(&race, &me).await.unwrap()
        })
    });
    let winners: Vec<SessionOwner> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(winners.iter().all(|w| w == &winners[0]), "{winners:?}");
    // Only the hash of the session id is stored.
    let keys: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT key FROM \"{schema}\".mcp_oauth_sessions"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.len() == 64 && !k.contains("pg-")),
        "{keys:?}"
    );
    drop_schema(&admin, &schema).await;
}

// issue 8 item 2: a session opened on one instance is bound on the other.
#[tokio::test]
async fn two_instances_share_the_binding() {
    let Some((s, admin, schema)) = store("instances").await else {
        return;
    };
    sessions::two_instances_share_the_binding(s, "pg-shared-session").await;
    drop_schema(&admin, &schema).await;
}
