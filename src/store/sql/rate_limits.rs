//! [`RateLimitStore`] on [`SqlStore`] (migration 3): one GCRA counter per key, each hit one
//! `INSERT … ON CONFLICT … RETURNING`, whose row lock serializes racing instances.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, SqlStore, col, db_time, err, time_of};
use crate::store::rate_limit::Gcra;
use crate::store::{RateLimitDecision, RateLimitStore, StoreError};

#[async_trait]
impl<DB> RateLimitStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> String: Decode<'a, DB> + Encode<'a, DB> + Type<DB>,
    for<'a> i64: Decode<'a, DB> + Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB>,
    for<'a> bool: Decode<'a, DB> + Type<DB>,
{
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        let gcra = Gcra::new(limit, window);
        // One GCRA step in one statement: `$1` key, `$2` now, `$3` interval, `$4` burst (ms).
        // A new key is always allowed (the interval never exceeds the burst).
        let hit = format!(
            "INSERT INTO mcp_oauth_rate_limits AS r (key, tat, allowed) VALUES ($1, $2 + $3, TRUE) \
             ON CONFLICT (key) DO UPDATE SET \
             allowed = ({max}(r.tat, $2) + $3 - $2 <= $4), \
             tat = CASE WHEN {max}(r.tat, $2) + $3 - $2 <= $4 THEN {max}(r.tat, $2) + $3 ELSE r.tat END \
             RETURNING tat, allowed",
            max = DB::GREATEST
        );
        self.run(async {
            let row = sqlx::query(sqlx::AssertSqlSafe(hit))
                .bind(key)
                .bind(db_time(now_ms))
                .bind(db_time(gcra.interval_ms))
                .bind(db_time(gcra.burst_ms))
                .fetch_one(&self.writer)
                .await
                .map_err(err::<DB>)?;
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
                .execute(&self.writer)
                .await
                .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done))
        })
        .await
    }
}
