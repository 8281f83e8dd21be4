//! [`SqliteStore`]: the SQLite dialect of [`SqlStore`] and how its file is opened.

use std::fmt;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::{
    Backend, DEFAULT_OPERATION_TIMEOUT, SqlStore, col, db_time, err, from_json, migrator, sealed,
    to_json,
};
use crate::store::{CodeRedeem, CodeRedemption, SecretHash, StoreError};

/// How long a writer waits for another process holding the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readers kept for concurrent reads (WAL lets them run beside the writer).
const READERS: u32 = 4;

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "signing keys",
        include_str!("../../../migrations/sqlite/0002_signing_keys.sql"),
    ),
    (
        3,
        "retention and rate limits",
        include_str!("../../../migrations/sqlite/0003_retention_rate_limits.sql"),
    ),
    (
        4,
        "client assertion ids",
        include_str!("../../../migrations/sqlite/0004_assertion_ids.sql"),
    ),
    (
        5,
        "registration fingerprints",
        include_str!("../../../migrations/sqlite/0005_registration_fingerprints.sql"),
    ),
    (
        6,
        "upstream logins",
        include_str!("../../../migrations/sqlite/0006_upstream_logins.sql"),
    ),
    (
        7,
        "upstream tokens",
        include_str!("../../../migrations/sqlite/0007_upstream_tokens.sql"),
    ),
];

/// A statement that deletes the dynamic clients `$cond` picks that nothing live names, and
/// returns their ids: one statement, so the check and the delete cannot be split by a
/// concurrent write. The `json_extract` expressions are those of the migration's indexes.
macro_rules! sweep_clients_sql {
    ($cond:literal) => {
        concat!(
            "DELETE FROM mcp_oauth_clients AS c WHERE c.source = 'dynamic' AND ",
            $cond,
            " AND NOT EXISTS (SELECT 1 FROM mcp_oauth_families f \
    WHERE json_extract(f.record, '$.client_id') = c.client_id \
    AND f.revoked_at IS NULL AND f.expires_at > $2) \
AND NOT EXISTS (SELECT 1 FROM mcp_oauth_codes k \
    WHERE json_extract(k.record, '$.client_id') = c.client_id AND k.expires_at > $2) \
AND NOT EXISTS (SELECT 1 FROM mcp_oauth_pending p \
    WHERE json_extract(p.record, '$.client_id') = c.client_id AND p.expires_at > $2) \
RETURNING client_id"
        )
    };
}

/// The idle clients: last used (or registered) before `$1`.
const SWEEP_IDLE_CLIENTS: &str = sweep_clients_sql!("c.last_used_at < $1 AND c.issued_at < $1");
/// The never-used clients registered before `$1`.
const SWEEP_UNUSED_CLIENTS: &str = sweep_clients_sql!("c.last_used_at = 0 AND c.issued_at < $1");

impl sealed::Sealed for Sqlite {}

impl Backend for Sqlite {
    const LABEL: &'static str = "SQLite";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_ROWS: &'static str = "";
    const GREATEST: &'static str = "MAX";
    const SHARES_RATE_LIMITS: bool = false;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// One `BEGIN IMMEDIATE` transaction, so one commit (one `fsync`) where taking the code
    /// and creating the family used to be two.
    async fn redeem_code(
        store: &SqliteStore,
        hash: &SecretHash,
        redemption: &CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        let err = err::<Self>;
        let family = &redemption.family;
        let mut tx = store
            .writer
            .begin_with(Self::BEGIN_WRITE)
            .await
            .map_err(err)?;
        let spent = sqlx::query(
            "UPDATE mcp_oauth_codes SET used_by = $2 \
             WHERE code_hash = $1 AND used_by IS NULL AND expires_at > $3",
        )
        .bind(&hash.0[..])
        .bind(&family.family_id)
        .bind(db_time(now))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if spent.rows_affected() == 0 {
            // Nothing changed; dropping the transaction rolls it back.
            let row = sqlx::query(
                "SELECT used_by, record FROM mcp_oauth_codes WHERE code_hash = $1 AND expires_at > $2",
            )
            .bind(&hash.0[..])
            .bind(db_time(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            let Some(row) = row else {
                return Ok(CodeRedeem::NotFound);
            };
            return Ok(match col::<_, Option<String>>(&row, "used_by")? {
                Some(family_id) => CodeRedeem::Spent {
                    family_id,
                    code: from_json(&col::<_, String>(&row, "record")?, "code")?,
                },
                None => CodeRedeem::NotFound,
            });
        }
        let created = sqlx::query(
            "INSERT INTO mcp_oauth_families \
             (family_id, record, expires_at, current_hash, keep_until, previous_sealed) \
             VALUES ($1, $2, $3, $4, $3, $5) ON CONFLICT (family_id) DO NOTHING",
        )
        .bind(&family.family_id)
        .bind(to_json(family, "family")?)
        .bind(db_time(family.expires_at))
        .bind(redemption.refresh.map(|h| h.0.to_vec()))
        .bind(&redemption.sealed_grant)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if created.rows_affected() == 0 {
            // Rolled back with the transaction: the code stays unspent.
            return Err(StoreError::conflict(format!(
                "family {} exists or was revoked",
                family.family_id
            )));
        }
        if let Some(h) = redemption.refresh {
            sqlx::query(
                "INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
            )
            .bind(&h.0[..])
            .bind(&family.family_id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(CodeRedeem::Redeemed)
    }

    /// `None`: the generic transaction (`BEGIN IMMEDIATE`, read, write, one commit) is
    /// already one commit, and SQLite has no round trips to save.
    async fn rotate_refresh(
        _store: &SqliteStore,
        _presented: &SecretHash,
        _successor: &SecretHash,
        _sealed_successor: &[u8],
        _now: u64,
        _grace: u64,
    ) -> Result<Option<crate::store::Rotation>, StoreError> {
        Ok(None)
    }

    async fn sweep_idle_clients(
        store: &SqliteStore,
        idle_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        sweep_clients(store, SWEEP_IDLE_CLIENTS, idle_before, now).await
    }

    async fn sweep_unused_clients(
        store: &SqliteStore,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        sweep_clients(store, SWEEP_UNUSED_CLIENTS, registered_before, now).await
    }
}

/// Runs one client sweep: two statements in one `BEGIN IMMEDIATE` transaction, the clients,
/// then their consents.
async fn sweep_clients(
    store: &SqliteStore,
    statement: &'static str,
    before: u64,
    now: u64,
) -> Result<u64, StoreError> {
    store
        .run(async {
            let err = err::<Sqlite>;
            let mut tx = store
                .writer
                .begin_with(Sqlite::BEGIN_WRITE)
                .await
                .map_err(err)?;
            let gone: Vec<String> = sqlx::query_scalar(statement)
                .bind(db_time(before))
                .bind(db_time(now))
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            if !gone.is_empty() {
                sqlx::query(
                    "DELETE FROM mcp_oauth_consents \
                     WHERE client_id IN (SELECT value FROM json_each($1))",
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

/// A durable store in one SQLite file (bundled SQLite, WAL journal, `synchronous = FULL`), for
/// a single instance that must survive restarts. See the [module docs](super).
///
/// Writes go through one connection, so the process's writers queue without spinning on the
/// database lock; reads use a few more connections beside it. Several processes may open the
/// same file (each write then waits up to 5 s for the lock), but a store shared by several
/// instances belongs in PostgreSQL or Redis.
///
/// Cloning is cheap: clones share the connections.
///
/// ```no_run
/// # async fn demo() -> Result<(), mcp_oauth::store::StoreError> {
/// use mcp_oauth::store::sql::SqliteStore;
/// use mcp_oauth::store::ClientStore as _;
///
/// let store = SqliteStore::open("/var/lib/my-mcp/oauth.db").await?;
/// println!("{} registered clients", store.count_clients().await?);
/// # Ok(())
/// # }
/// ```
pub type SqliteStore = SqlStore<Sqlite>;

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` and brings its tables up to
    /// date. An authorization server on it keeps its signing keys in the file too, so tokens
    /// survive a restart.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or created, or a migration
    /// fails (e.g. the file is not a database, or was written by a newer version of this
    /// crate).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let unavailable =
            |e: sqlx::Error| StoreError::backend(format!("SQLite: {}", path.display()), e);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(DEFAULT_OPERATION_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        let store = Self {
            writer: writer.clone(),
            reader: writer,
            timeout: DEFAULT_OPERATION_TIMEOUT,
            path: Some(path.clone()),
            durable: true,
            sweep_batch: super::grants::SWEEP_BATCH,
        };
        store.migrate().await?;
        // Readers open only once the schema (and WAL mode) is in place.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(DEFAULT_OPERATION_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(Self { reader, ..store })
    }

    /// A private in-memory database, gone when the last clone of the store is dropped: for
    /// tests. It runs on a single connection. It is not
    /// [durable](crate::store::GrantStore::is_durable): an authorization server on it signs
    /// with a key generated per process, as on a [`MemoryStore`](crate::store::MemoryStore).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when SQLite cannot start (out of memory).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(err::<Sqlite>)?
            .foreign_keys(true);
        // One connection that is never closed: the database lives in it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(DEFAULT_OPERATION_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(err::<Sqlite>)?;
        let store = Self {
            writer: pool.clone(),
            reader: pool,
            timeout: DEFAULT_OPERATION_TIMEOUT,
            path: None,
            durable: false,
            sweep_batch: super::grants::SWEEP_BATCH,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The database file (`None` for [`in_memory`](Self::in_memory)).
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let m = migrator(MIGRATIONS);
        let first = m.run(&self.writer).await;
        // Two processes opening a new file at the same instant can both try to create the
        // tables; the loser finds them on a second pass.
        let result = match first {
            Ok(()) => Ok(()),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                m.run(&self.writer).await
            }
        };
        result.map_err(|e| super::migration_error("SQLite", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 item 6: a SQLite file migrated by a newer version (one more step) still
    /// opens with this one; a file whose known migration differs is refused.
    #[tokio::test]
    async fn an_older_version_opens_a_file_a_newer_one_migrated() {
        let path = std::env::temp_dir().join(format!(
            "mcp-oauth-older-{}.db",
            crate::util::random_token(8)
        ));
        let store = SqliteStore::open(&path).await.unwrap();
        let mut newer: Vec<(i64, &'static str, &'static str)> = MIGRATIONS.to_vec();
        newer.push((
            MIGRATIONS.len() as i64 + 1,
            "a future table",
            "CREATE TABLE mcp_oauth_future_test (x INTEGER);\n",
        ));
        migrator(&newer).run(&store.writer).await.unwrap();
        drop(store);
        let older = SqliteStore::open(&path)
            .await
            .expect("an older version opens the newer file");
        let mut edited: Vec<(i64, &'static str, &'static str)> = MIGRATIONS.to_vec();
        edited[0].2 = "-- edited\nSELECT 1;\n";
        let err = migrator(&edited).run(&older.writer).await.unwrap_err();
        assert!(
            matches!(err, sqlx::migrate::MigrateError::VersionMismatch(1)),
            "{err}"
        );
        drop(older);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
