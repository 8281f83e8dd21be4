//! [`KeyStore`] on SQLite: the first key is one `INSERT … ON CONFLICT DO NOTHING` against a
//! unique index on the ring's current key; a rotation is one `BEGIN IMMEDIATE` transaction
//! that retires the expected key (or finds it was not current) and inserts the next.

use async_trait::async_trait;

use super::super::keys::{KEY_COLUMNS, stored_key_of};
use super::{SqliteStore, err};
use crate::store::keys::check_new_current;
use crate::store::sql::db_time;
use crate::store::{KeyRotation, KeyStore, StoreError, StoredKey};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        self.run(async {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM mcp_oauth_signing_keys \
                 WHERE ring = ?1 AND (retired_at IS NULL OR publish_until > ?2)"
            )))
            .bind(ring)
            .bind(db_time(now))
            .fetch_all(&self.reader)
            .await
            .map_err(err)?;
            rows.iter().map(stored_key_of).collect()
        })
        .await
    }

    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
        check_new_current(&key)?;
        self.run(async {
            // The unique index on (ring) WHERE retired_at IS NULL makes this a no-op when
            // the ring has a current key, so of racing instances exactly one inserts.
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_signing_keys (ring, kid, alg, private_key, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )
            .bind(ring)
            .bind(&key.kid)
            .bind(key.algorithm.name())
            .bind(key.private_key.as_pkcs8_der())
            .bind(db_time(key.created_at))
            .execute(&self.writer)
            .await
            .map_err(err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn rotate_key(
        &self,
        ring: &str,
        expected_current: &str,
        next: StoredKey,
        now: u64,
        publish_until: u64,
    ) -> Result<KeyRotation, StoreError> {
        check_new_current(&next)?;
        self.run(async {
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(err)?;
            let retired = sqlx::query(
                "UPDATE mcp_oauth_signing_keys SET retired_at = ?3, publish_until = ?4 \
                 WHERE ring = ?1 AND kid = ?2 AND retired_at IS NULL",
            )
            .bind(ring)
            .bind(expected_current)
            .bind(db_time(now))
            .bind(db_time(publish_until))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            if retired.rows_affected() == 0 {
                let current: Option<String> = sqlx::query_scalar(
                    "SELECT kid FROM mcp_oauth_signing_keys WHERE ring = ?1 AND retired_at IS NULL",
                )
                .bind(ring)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                // Dropping the transaction rolls it back (nothing was changed).
                return Ok(KeyRotation::Superseded { current });
            }
            sqlx::query(
                "INSERT INTO mcp_oauth_signing_keys (ring, kid, alg, private_key, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(ring)
            .bind(&next.kid)
            .bind(next.algorithm.name())
            .bind(next.private_key.as_pkcs8_der())
            .bind(db_time(next.created_at))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(KeyRotation::Rotated)
        })
        .await
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        self.run(async {
            let done = sqlx::query(
                "DELETE FROM mcp_oauth_signing_keys \
                 WHERE ring = ?1 AND retired_at IS NOT NULL AND publish_until <= ?2",
            )
            .bind(ring)
            .bind(db_time(now))
            .execute(&self.writer)
            .await
            .map_err(err)?;
            Ok(done.rows_affected())
        })
        .await
    }
}
