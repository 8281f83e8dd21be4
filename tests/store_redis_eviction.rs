//! Issue 13 item 6: Redis must never evict this store's keys. Every key has a TTL, so under a
//! `volatile-*` `maxmemory-policy` a full Redis drops revocation tombstones (revoked tokens
//! work again) and refresh tokens: `RedisStore::connect` refuses such a server (the error
//! names the policy and the fix) unless told `allow_eviction_policy`, and accepts
//! `noeviction`. A user that may not run `CONFIG` starts with a loud warning.
//!
//! The test changes the shared test server's policy with `CONFIG SET` for a moment and puts
//! it back (a guard restores it even when an assertion fails). Its own test binary, so no
//! other test of this crate connects meanwhile. Without a server it says so and passes,
//! except under `CI`.

#[path = "support/logs.rs"]
mod logs;

use mcp_oauth::store::StoreError;
use mcp_oauth::store::redis::{EvictionPolicy, RedisOptions, RedisStore};

/// The two tests change one server setting: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("MCP_OAUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Sets the server's `maxmemory-policy` and puts the previous one back when dropped.
struct PolicyGuard {
    conn: redis::Connection,
    previous: String,
}

impl PolicyGuard {
    fn set(policy: &str) -> Option<Self> {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = match client.get_connection() {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("no Redis at {}: {e}; skipping", redis_url());
                return None;
            }
            Err(e) => panic!("no Redis at {}: {e}", redis_url()),
        };
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut conn)
            .unwrap();
        let previous = v[1].clone();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query(&mut conn)
            .unwrap();
        Some(Self { conn, previous })
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let _: Result<(), _> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(&self.previous)
            .query(&mut self.conn);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_evicting_policy_is_refused_unless_allowed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(guard) = PolicyGuard::set("volatile-lru") else {
        return;
    };
    let refused = RedisStore::connect(&redis_url()).await;
    let allowed = {
        let (captured, _logs) = logs::Captured::start();
        let store = RedisStore::connect_with(
            &redis_url(),
            RedisOptions::new().allow_eviction_policy(true),
        )
        .await;
        (store, captured.text())
    };
    drop(guard);

    let err = refused.expect_err("volatile-lru must be refused");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("volatile-lru"), "names the policy: {text}");
    assert!(text.contains("noeviction"), "names the fix: {text}");
    let (store, logged) = allowed;
    let store = store.expect("the opt-out starts");
    assert!(
        logged.contains("ERROR"),
        "the opt-out is logged loudly: {logged}"
    );
    assert!(logged.contains("volatile-lru"), "{logged}");
    // The guard put the policy back.
    assert_eq!(
        store.check_eviction_policy().await.unwrap(),
        EvictionPolicy::NoEviction
    );
}

#[tokio::test(flavor = "current_thread")]
async fn noeviction_is_accepted_and_an_uncheckable_server_warns() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(guard) = PolicyGuard::set("noeviction") else {
        return;
    };
    RedisStore::connect(&redis_url())
        .await
        .expect("noeviction is fine");
    drop(guard);

    // A user that may not run CONFIG (as on managed services): starts, warning loudly.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut admin = client.get_connection().unwrap();
    let user = format!("mcp_oauth_noconfig_{}", std::process::id());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">pw-0123456789")
        .arg("~*")
        .arg("+@all")
        .arg("-config")
        .query(&mut admin)
        .unwrap();
    let mut url = url::Url::parse(&redis_url()).unwrap();
    url.set_username(&user).unwrap();
    url.set_password(Some("pw-0123456789")).unwrap();
    let (captured, logs_guard) = logs::Captured::start();
    let store = RedisStore::connect(url.as_str()).await;
    drop(logs_guard);
    let policy = match &store {
        Ok(s) => Some(s.check_eviction_policy().await),
        Err(_) => None,
    };
    // (Deleting the user closes its connections.)
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query(&mut admin)
        .unwrap();
    store.expect("an uncheckable server starts");
    assert_eq!(policy.unwrap().unwrap(), EvictionPolicy::Unknown);
    let logged = captured.text();
    assert!(
        logged.contains("ERROR") && logged.contains("could not check"),
        "{logged}"
    );
}
