//! [`PostgresStore`]'s idle-client sweep and shared rate-limit counters (migration 3).

use std::time::Duration;

use async_trait::async_trait;

use super::{PostgresStore, err};
use crate::store::rate_limit::Gcra;
use crate::store::sql::{col, count_of, db_time, time_of};
use crate::store::{RateLimitDecision, RateLimitStore, StoreError};

/// Deletes the idle dynamic clients that nothing live names, with their remembered consents,
/// and counts them: one statement. Under `READ COMMITTED` a client row touched concurrently
/// is re-checked against its new `last_used_at` before it is deleted, so a touch that
/// commits first keeps the client. The `->>` expressions are those of the migration's
/// indexes.
const SWEEP_IDLE_CLIENTS: &str = "\
WITH gone AS ( \
    DELETE FROM mcp_oauth_clients c \
    WHERE c.source = 'dynamic' AND c.last_used_at < $1 AND c.issued_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM mcp_oauth_families f \
        WHERE ((f.record::jsonb) ->> 'client_id') = c.client_id \
        AND f.revoked_at IS NULL AND f.expires_at > $2) \
    AND NOT EXISTS (SELECT 1 FROM mcp_oauth_codes k \
        WHERE ((k.record::jsonb) ->> 'client_id') = c.client_id AND k.expires_at > $2) \
    AND NOT EXISTS (SELECT 1 FROM mcp_oauth_pending p \
        WHERE ((p.record::jsonb) ->> 'client_id') = c.client_id AND p.expires_at > $2) \
    RETURNING c.client_id \
), forgotten AS ( \
    DELETE FROM mcp_oauth_consents WHERE client_id IN (SELECT client_id FROM gone) \
) \
SELECT COUNT(*) FROM gone";

/// One GCRA step in one statement (the row lock serializes racing instances): `$1` key,
/// `$2` now, `$3` interval, `$4` burst (ms). A new key is always allowed.
const HIT: &str = "\
INSERT INTO mcp_oauth_rate_limits AS r (key, tat, allowed) VALUES ($1, $2 + $3, TRUE) \
ON CONFLICT (key) DO UPDATE SET \
allowed = (GREATEST(r.tat, $2) + $3 - $2 <= $4), \
tat = CASE WHEN GREATEST(r.tat, $2) + $3 - $2 <= $4 THEN GREATEST(r.tat, $2) + $3 ELSE r.tat END \
RETURNING tat, allowed";

impl PostgresStore {
    pub(super) async fn sweep_idle(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.run(async {
            let n: i64 = sqlx::query_scalar(SWEEP_IDLE_CLIENTS)
                .bind(db_time(idle_before))
                .bind(db_time(now))
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
            count_of(n)
        })
        .await
    }
}

#[async_trait]
impl RateLimitStore for PostgresStore {
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
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
            let tat = time_of(col(&row, "tat")?, "rate limit tat")?;
            let allowed: bool = col(&row, "allowed")?;
            Ok(gcra.decision(allowed, tat, now_ms))
        })
        .await
    }

    async fn sweep_rate_limits(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.run(async {
            let done = sqlx::query("DELETE FROM mcp_oauth_rate_limits WHERE tat <= $1")
                .bind(db_time(now_ms))
                .execute(&self.pool)
                .await
                .map_err(err)?;
            Ok(done.rows_affected())
        })
        .await
    }
}
