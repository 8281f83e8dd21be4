//! Session bindings shared through Redis (issue 8 item 2): two layers ("instances") on one
//! [`RedisStore`] agree on who opened a session, whichever instance the request reaches.
//!
//! The server comes from `MCP_OAUTH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! Without a server the tests say so and pass, except under `CI`, where they fail.
#![cfg(feature = "redis")]

use std::time::{SystemTime, UNIX_EPOCH};

use mcp_oauth::store::redis::RedisStore;

#[path = "support/sessions.rs"]
mod sessions;

async fn store(test: &str) -> Option<RedisStore> {
    let url = std::env::var("MCP_OAUTH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    match RedisStore::connect(&url).await {
        Ok(s) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Some(s.with_prefix(format!("mcp_oauth_test:{test}:{nanos}:")))
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("no Redis at {url}: {e}"),
        Err(e) => {
            eprintln!("skipping: no Redis at {url}: {e}");
            None
        }
    }
}

// issue 8 item 2: the store keeps the binding rules (claim once, keep the principal).
#[tokio::test]
async fn redis_bindings_follow_the_rules() {
    let Some(s) = store("rules").await else {
        return;
    };
    sessions::binding_rules(&s, "redis-session").await;
}

// issue 8 item 2: a session opened on one instance is bound on the other.
#[tokio::test]
async fn two_instances_share_the_binding() {
    let Some(s) = store("instances").await else {
        return;
    };
    sessions::two_instances_share_the_binding(s, "shared-session-1").await;
}
