//! [`SessionBindings`] on PostgreSQL, so every instance of a deployment agrees on who opened
//! each MCP session: one row per session in `mcp_oauth_sessions` (migration 4), keyed by the
//! SHA-256 of the session id. A row unused for [`DEFAULT_SESSION_IDLE`] counts as absent.
//! Binding is one `INSERT … ON CONFLICT … DO UPDATE … RETURNING`, so of instances racing to
//! claim an anonymous session exactly one principal wins; reads renew `seen` at most once a
//! minute, so a busy session costs one write a minute, not one per request.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{PostgresStore, err};
use crate::resource::{DEFAULT_SESSION_IDLE, SessionBindings, SessionKey, SessionOwner};
use crate::store::StoreError;
use crate::store::sql::{col, db_time, from_json, to_json};

/// How stale `seen` may get before a read renews it.
const RENEW_AFTER_SECS: u64 = 60;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The oldest `seen` that still counts as live at `now`.
fn cutoff(now: u64) -> i64 {
    db_time(now.saturating_sub(DEFAULT_SESSION_IDLE.as_secs()))
}

#[async_trait]
impl SessionBindings for PostgresStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionOwner>, StoreError> {
        let now = now();
        self.run(async {
            let row = sqlx::query(
                "SELECT owner, seen FROM mcp_oauth_sessions WHERE key = $1 AND seen > $2",
            )
            .bind(key.as_str())
            .bind(cutoff(now))
            .fetch_optional(&self.writer)
            .await
            .map_err(err)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let owner: String = col(&row, "owner")?;
            let seen: i64 = col(&row, "seen")?;
            if seen < db_time(now.saturating_sub(RENEW_AFTER_SECS)) {
                sqlx::query("UPDATE mcp_oauth_sessions SET seen = $2 WHERE key = $1")
                    .bind(key.as_str())
                    .bind(db_time(now))
                    .execute(&self.writer)
                    .await
                    .map_err(err)?;
            }
            from_json(&owner, "session owner").map(Some)
        })
        .await
    }

    async fn bind(
        &self,
        key: &SessionKey,
        owner: &SessionOwner,
    ) -> Result<SessionOwner, StoreError> {
        let now = now();
        let owner = to_json(owner, "session owner")?;
        let anonymous = to_json(&SessionOwner::Anonymous, "session owner")?;
        self.run(async {
            sqlx::query("DELETE FROM mcp_oauth_sessions WHERE seen <= $1")
                .bind(cutoff(now))
                .execute(&self.writer)
                .await
                .map_err(err)?;
            let row = sqlx::query(
                "INSERT INTO mcp_oauth_sessions (key, owner, seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   owner = CASE WHEN mcp_oauth_sessions.owner = $4 \
                                  OR mcp_oauth_sessions.seen <= $5 \
                                THEN EXCLUDED.owner ELSE mcp_oauth_sessions.owner END, \
                   seen = EXCLUDED.seen \
                 RETURNING owner",
            )
            .bind(key.as_str())
            .bind(&owner)
            .bind(db_time(now))
            .bind(&anonymous)
            .bind(cutoff(now))
            .fetch_one(&self.writer)
            .await
            .map_err(err)?;
            let owner: String = col(&row, "owner")?;
            from_json(&owner, "session owner")
        })
        .await
    }

    async fn forget(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("DELETE FROM mcp_oauth_sessions WHERE key = $1")
                .bind(key.as_str())
                .execute(&self.writer)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }
}
