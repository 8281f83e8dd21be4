//! [`KeyStore`] on [`SqlStore`]: the first key is one `INSERT … ON CONFLICT DO NOTHING`
//! against a unique index on the ring's current key; a rotation is one transaction that
//! retires the expected key only while it is still current (on SQLite `BEGIN IMMEDIATE` holds
//! the write lock; on PostgreSQL a racing rotation waits on the row lock, then finds the key
//! retired) and inserts the next.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{Backend, SqlStore, col, db_time, err, time_of};
use crate::keys::SigningAlgorithm;
use crate::store::keys::check_new_current;
use crate::store::{KeyRotation, KeyStore, PrivateKey, StoreError, StoredKey};

/// The columns [`stored_key_of`] reads, for `SELECT`s.
const KEY_COLUMNS: &str = "kid, alg, private_key, created_at, retired_at, publish_until";

/// A key from its row.
fn stored_key_of<R>(row: &R) -> Result<StoredKey, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let kid: String = col(row, "kid")?;
    let alg: String = col(row, "alg")?;
    let algorithm = SigningAlgorithm::from_name(&alg)
        .ok_or_else(|| StoreError::corrupt(format!("key {kid}: unknown algorithm {alg:?}")))?;
    let opt_time = |name: &'static str| -> Result<Option<u64>, StoreError> {
        col::<_, Option<i64>>(row, name)?
            .map(|v| time_of(v, name))
            .transpose()
    };
    Ok(StoredKey {
        algorithm,
        private_key: PrivateKey::from_pkcs8_der(col(row, "private_key")?),
        created_at: time_of(col(row, "created_at")?, "created_at")?,
        retired_at: opt_time("retired_at")?,
        publish_until: opt_time("publish_until")?,
        kid,
    })
}

#[async_trait]
impl<DB> KeyStore for SqlStore<DB>
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
    /// `true`, except for [`SqliteStore::in_memory`](crate::store::SqliteStore::in_memory).
    fn is_durable(&self) -> bool {
        self.durable
    }

    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        self.run(async {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM mcp_oauth_signing_keys \
                 WHERE ring = $1 AND (retired_at IS NULL OR publish_until > $2)"
            )))
            .bind(ring)
            .bind(db_time(now))
            .fetch_all(&self.reader)
            .await
            .map_err(err::<DB>)?;
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
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(ring)
            .bind(&key.kid)
            .bind(key.algorithm.name())
            .bind(key.private_key.as_pkcs8_der())
            .bind(db_time(key.created_at))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done) == 1)
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
                .begin_with(DB::BEGIN_WRITE)
                .await
                .map_err(err::<DB>)?;
            let retired = sqlx::query(
                "UPDATE mcp_oauth_signing_keys SET retired_at = $3, publish_until = $4 \
                 WHERE ring = $1 AND kid = $2 AND retired_at IS NULL",
            )
            .bind(ring)
            .bind(expected_current)
            .bind(db_time(now))
            .bind(db_time(publish_until))
            .execute(&mut *tx)
            .await
            .map_err(err::<DB>)?;
            if DB::rows_affected(&retired) == 0 {
                let current: Option<String> = sqlx::query_scalar(
                    "SELECT kid FROM mcp_oauth_signing_keys WHERE ring = $1 AND retired_at IS NULL",
                )
                .bind(ring)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err::<DB>)?;
                // Dropping the transaction rolls it back (nothing was changed).
                return Ok(KeyRotation::Superseded { current });
            }
            sqlx::query(
                "INSERT INTO mcp_oauth_signing_keys (ring, kid, alg, private_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(ring)
            .bind(&next.kid)
            .bind(next.algorithm.name())
            .bind(next.private_key.as_pkcs8_der())
            .bind(db_time(next.created_at))
            .execute(&mut *tx)
            .await
            .map_err(err::<DB>)?;
            tx.commit().await.map_err(err::<DB>)?;
            Ok(KeyRotation::Rotated)
        })
        .await
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        self.run(async {
            let done = sqlx::query(
                "DELETE FROM mcp_oauth_signing_keys \
                 WHERE ring = $1 AND retired_at IS NOT NULL AND publish_until <= $2",
            )
            .bind(ring)
            .bind(db_time(now))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done))
        })
        .await
    }
}
