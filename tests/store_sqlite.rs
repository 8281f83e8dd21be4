//! The store contract ([`mcp_oauth::store::testkit`]) on [`SqliteStore`]: in memory and on a
//! real file (WAL), each rule its own test, on a multi-thread runtime so that the 64 racing
//! code redemptions and 32 racing refreshes contend for real. Then what only a file can show:
//! data survives reopening, migrations are idempotent, two stores opened on one file (as two
//! processes would) still let exactly one racer win, and a file that is not a database is a
//! clear error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use mcp_oauth::store::sql::SqliteStore;
use mcp_oauth::store::{
    ClientStore, CodeTake, GrantStore, Rotation, SecretHash, StoreError, testkit,
};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-oauth-sqlite-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("oauth.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[path = "support/sweep_batches.rs"]
mod sweep_batches;
use sweep_batches::sweep_batches;

async fn file_store() -> (Arc<SqliteStore>, TempDir) {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.db()).await.unwrap();
    (Arc::new(store), dir)
}

macro_rules! rule_tests {
    ($($rule:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $rule() {
                let (store, _dir) = file_store().await;
                testkit::$rule(&*store).await;
            }
        )*
    };
}

rule_tests!(
    clients,
    codes_single_use,
    code_expiry,
    family_lifecycle,
    revoke_before_create,
    rotation,
    // Issue 8 item 8: current / previous / retired on every store.
    refresh_token_states,
    reuse_after_grace,
    expired_family,
    // Issue 13: spending a code and creating its family are one atomic step; the store
    // judges a refresh token's family by the `now` it is given.
    redeem_code,
    family_of_refresh_uses_now,
    revoke_token,
    // Issue 11: client-assertion ids (private_key_jwt replay) on every store.
    assertion_ids,
    // Issue 11: upstream tokens kept (sealed) for the host's own calls, on every store.
    upstream_tokens,
    consent,
    pending,
    sweep_removes_only_expired,
    stats,
    revocation_outlives_family,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_take_code() {
    let (store, _dir) = file_store().await;
    let start = Instant::now();
    for _ in 0..20 {
        testkit::concurrent_take_code(store.clone()).await;
    }
    eprintln!(
        "sqlite: 20 rounds of {} racing take_code: {:?}",
        testkit::CODE_RACERS,
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeem_code() {
    let (store, _dir) = file_store().await;
    for _ in 0..20 {
        testkit::concurrent_redeem_code(store.clone()).await;
    }
}

/// Issue 13: the sweep removes what expired in bounded batches, each its own transaction,
/// and still removes all of it (and only it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_in_batches() {
    let (store, _dir) = file_store().await;
    let store = Arc::new((*store).clone().with_sweep_batch(2));
    sweep_batches(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assertion_id() {
    let (store, _dir) = file_store().await;
    for _ in 0..5 {
        testkit::concurrent_assertion_id(store.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_in_grace() {
    let (store, _dir) = file_store().await;
    let start = Instant::now();
    for _ in 0..20 {
        testkit::concurrent_rotation_in_grace(store.clone()).await;
    }
    eprintln!(
        "sqlite: 20 rounds of {} racing rotate_refresh: {:?}",
        testkit::ROTATION_RACERS,
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_a_file() {
    let (store, _dir) = file_store().await;
    testkit::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_in_memory() {
    testkit::run_all(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn client(id: &str) -> mcp_oauth::store::Client {
    serde_json::from_value(serde_json::json!({
        "client_id": id,
        "secret_hash": null,
        "secret_expires_at": 0,
        "client_name": "Restart survivor",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "scope": "read",
        "extra": {},
        "issued_at": now(),
        "last_used_at": 0,
        "source": "dynamic"
    }))
    .unwrap()
}

fn family(id: &str) -> mcp_oauth::store::RefreshFamily {
    serde_json::from_value(serde_json::json!({
        "family_id": id,
        "client_id": "c",
        "subject": "alice",
        "scope": "read",
        "resource": "https://mcp.example.com/mcp",
        "claims": {},
        "auth_time": now(),
        "created_at": now(),
        "expires_at": now() + 3600
    }))
    .unwrap()
}

/// Everything written is there after the store is dropped and the file reopened (the second
/// open re-runs the migrations: a no-op).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening() {
    let dir = TempDir::new();
    let rt = SecretHash::of("refresh-token");
    {
        let store = SqliteStore::open(dir.db()).await.unwrap();
        store.insert_client(client("kept")).await.unwrap();
        store
            .create_family(family("fam-kept"), Some(rt))
            .await
            .unwrap();
        store.revoke_family("fam-gone", now()).await.unwrap();
    }
    for _ in 0..2 {
        let store = SqliteStore::open(dir.db()).await.unwrap();
        assert_eq!(
            store.get_client("kept").await.unwrap(),
            Some(client_with_time(&store).await)
        );
        assert!(store.family_of_refresh(&rt, now()).await.unwrap().is_some());
        assert!(store.is_token_revoked("fam-gone.x", now()).await.unwrap());
        assert_eq!(store.count_clients().await.unwrap(), 1);
    }
    // The rotation made before the "restart" continues after it.
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let next = SecretHash::of("next");
    let r = store
        .rotate_refresh(&rt, next, b"sealed".to_vec(), now(), 30)
        .await
        .unwrap();
    assert!(matches!(r, Rotation::Rotated(_)), "{r:?}");
}

async fn client_with_time(store: &SqliteStore) -> mcp_oauth::store::Client {
    // `issued_at` was set when the test built the client; read it back to compare the rest.
    let stored = store.get_client("kept").await.unwrap().unwrap();
    let mut expected = client("kept");
    expected.issued_at = stored.issued_at;
    expected
}

/// The migration history is versioned in its own table and applied once.
#[tokio::test]
async fn migrations_are_versioned_and_idempotent() {
    let dir = TempDir::new();
    drop(SqliteStore::open(dir.db()).await.unwrap());
    drop(SqliteStore::open(dir.db()).await.unwrap());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM mcp_oauth_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7]);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    // Only hashes: the code column holds 32 bytes, not the code.
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let code: mcp_oauth::store::AuthorizationCode = serde_json::from_value(serde_json::json!({
        "client_id": "c", "redirect_uri": "https://a/cb", "code_challenge": "x",
        "scope": "read", "resource": "https://r", "subject": "alice", "claims": {},
        "auth_time": now(), "expires_at": now() + 60
    }))
    .unwrap();
    store
        .put_code(SecretHash::of("the-raw-code"), code)
        .await
        .unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM mcp_oauth_codes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, SecretHash::of("the-raw-code").0.to_vec());
}

/// Two stores on one file (what two processes would have) race for one code and one refresh
/// token: SQLite's write lock still lets exactly one win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_still_have_one_winner() {
    let dir = TempDir::new();
    let a = Arc::new(SqliteStore::open(dir.db()).await.unwrap());
    let b = Arc::new(SqliteStore::open(dir.db()).await.unwrap());
    let code = SecretHash::of("shared-code");
    let c: mcp_oauth::store::AuthorizationCode = serde_json::from_value(serde_json::json!({
        "client_id": "c", "redirect_uri": "https://a/cb", "code_challenge": "x",
        "scope": "read", "resource": "https://r", "subject": "alice", "claims": {},
        "auth_time": now(), "expires_at": now() + 60
    }))
    .unwrap();
    a.put_code(code, c).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move { s.take_code(&code, &format!("fam-{i}"), now()).await });
    }
    let mut taken = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap().unwrap() {
            CodeTake::Taken(_) => taken += 1,
            CodeTake::Replayed { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, 1);

    let rt = SecretHash::of("shared-rt");
    a.create_family(family("fam-shared"), Some(rt))
        .await
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move {
            s.rotate_refresh(
                &rt,
                SecretHash::of(&format!("succ-{i}")),
                vec![i],
                now(),
                30,
            )
            .await
        });
    }
    let mut rotated = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap().unwrap() {
            Rotation::Rotated(_) => rotated += 1,
            Rotation::Grace { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rotated, 1);
}

/// A file that is not a SQLite database: a clear `Unavailable`, no panic.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = TempDir::new();
    std::fs::write(dir.db(), vec![b'x'; 8192]).unwrap();
    match SqliteStore::open(dir.db()).await {
        Err(StoreError::Unavailable { context: msg, .. }) => {
            assert!(msg.contains("SQLite"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A directory that does not exist.
    match SqliteStore::open(dir.0.join("missing/dir/oauth.db")).await {
        Err(StoreError::Unavailable { context: msg, .. }) => {
            assert!(msg.contains("oauth.db"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The sweep deletes expired upstream-login rows (and keeps live ones).
#[tokio::test]
async fn sweep_deletes_expired_upstream_logins() {
    use mcp_oauth::store::UpstreamLogin;
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let n = now();
    let login = |expires_at| UpstreamLogin {
        payload: "{}".into(),
        expires_at,
    };
    let (old, live) = (SecretHash::of("old"), SecretHash::of("live"));
    store.put_upstream_login(&old, login(n + 1)).await.unwrap();
    store
        .put_upstream_login(&live, login(n + 600))
        .await
        .unwrap();
    assert_eq!(store.sweep(n + 2).await.unwrap(), 1);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mcp_oauth_upstream_logins")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert!(store.take_upstream_login(&live, n).await.unwrap().is_some());
}
