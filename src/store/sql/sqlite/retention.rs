//! [`SqliteStore`]'s idle-client sweep and shared rate-limit counters (migration 3).

use std::time::Duration;

use async_trait::async_trait;

use super::{SqliteStore, err};
use crate::store::rate_limit::Gcra;
use crate::store::sql::{col, db_time, time_of, to_json};
use crate::store::{RateLimitDecision, RateLimitStore, StoreError};

/// Deletes the idle dynamic clients that nothing live names, and returns their ids: one
/// statement, so the check and the delete cannot be split by a concurrent write. The
/// `json_extract` expressions are those of the migration's indexes.
const SWEEP_IDLE_CLIENTS: &str = "\
DELETE FROM mcp_oauth_clients AS c \
WHERE c.source = 'dynamic' AND c.last_used_at < ?1 AND c.issued_at < ?1 \
AND NOT EXISTS (SELECT 1 FROM mcp_oauth_families f \
    WHERE json_extract(f.record, '$.client_id') = c.client_id \
    AND f.revoked_at IS NULL AND f.expires_at > ?2) \
AND NOT EXISTS (SELECT 1 FROM mcp_oauth_codes k \
    WHERE json_extract(k.record, '$.client_id') = c.client_id AND k.expires_at > ?2) \
AND NOT EXISTS (SELECT 1 FROM mcp_oauth_pending p \
    WHERE json_extract(p.record, '$.client_id') = c.client_id AND p.expires_at > ?2) \
RETURNING client_id";

/// One GCRA step in one statement: `?1` key, `?2` now, `?3` interval, `?4` burst (ms). A new
/// key is always allowed (the interval never exceeds the burst).
const HIT: &str = "\
INSERT INTO mcp_oauth_rate_limits AS r (key, tat, allowed) VALUES (?1, ?2 + ?3, 1) \
ON CONFLICT (key) DO UPDATE SET \
allowed = (MAX(r.tat, ?2) + ?3 - ?2 <= ?4), \
tat = CASE WHEN MAX(r.tat, ?2) + ?3 - ?2 <= ?4 THEN MAX(r.tat, ?2) + ?3 ELSE r.tat END \
RETURNING tat, allowed";

impl SqliteStore {
    pub(super) async fn sweep_idle(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.run(async {
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(err)?;
            let gone: Vec<String> = sqlx::query_scalar(SWEEP_IDLE_CLIENTS)
                .bind(db_time(idle_before))
                .bind(db_time(now))
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            if !gone.is_empty() {
                sqlx::query(
                    "DELETE FROM mcp_oauth_consents \
                     WHERE client_id IN (SELECT value FROM json_each(?1))",
                )
                .bind(to_json(&gone, "client ids")?)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            Ok(gone.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        let gcra = Gcra::new(limit, window);
        self.run(async {
            let row = sqlx::query(HIT)
                .bind(key)
                .bind(db_time(now_ms))
                .bind(db_time(gcra.interval_ms))
                .bind(db_time(gcra.burst_ms))
                .fetch_one(&self.writer)
                .await
                .map_err(err)?;
            let tat = time_of(col(&row, "tat")?, "rate limit tat")?;
            let allowed: i64 = col(&row, "allowed")?;
            Ok(gcra.decision(allowed != 0, tat, now_ms))
        })
        .await
    }

    async fn sweep_rate_limits(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.run(async {
            let done = sqlx::query("DELETE FROM mcp_oauth_rate_limits WHERE tat <= ?1")
                .bind(db_time(now_ms))
                .execute(&self.writer)
                .await
                .map_err(err)?;
            Ok(done.rows_affected())
        })
        .await
    }
}
