//! [`PostgresStore`]: the PostgreSQL dialect of [`SqlStore`] and how it connects.

mod sessions;

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};

use super::{
    Backend, DEFAULT_OPERATION_TIMEOUT, SqlStore, col, count_of, db_time, from_json,
    migration_error, migrator, sealed, to_json,
};
use crate::store::{CodeRedeem, CodeRedemption, Rotation, SecretHash, StoreError};

/// Connections [`PostgresStore::connect`] keeps at most.
const MAX_CONNECTIONS: u32 = 10;

/// How long [`PostgresStore::connect`]'s pool waits for a connection (including opening one)
/// before the operation fails with [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "signing keys",
        include_str!("../../../migrations/postgres/0002_signing_keys.sql"),
    ),
    (
        3,
        "retention and rate limits",
        include_str!("../../../migrations/postgres/0003_retention_rate_limits.sql"),
    ),
    (
        4,
        "session bindings",
        include_str!("../../../migrations/postgres/0004_session_bindings.sql"),
    ),
    (
        5,
        "client assertion ids",
        include_str!("../../../migrations/postgres/0005_assertion_ids.sql"),
    ),
    (
        6,
        "registration fingerprints",
        include_str!("../../../migrations/postgres/0006_registration_fingerprints.sql"),
    ),
    (
        7,
        "upstream logins",
        include_str!("../../../migrations/postgres/0007_upstream_logins.sql"),
    ),
    (
        8,
        "upstream tokens",
        include_str!("../../../migrations/postgres/0008_upstream_tokens.sql"),
    ),
    (
        9,
        "refresh rotation in one round trip",
        include_str!("../../../migrations/postgres/0009_rotate_refresh_function.sql"),
    ),
];

/// How often a start waiting for another instance's migration says so.
const MIGRATION_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The advisory lock sqlx's PostgreSQL migrator takes for `database` (the same key, so this
/// version and older ones, which let sqlx take it, exclude each other): the CRC-32 (IEEE) of
/// the database name times `0x3d32ad9e`.
fn migration_lock_id(database: &str) -> i64 {
    let mut crc = !0u32;
    for &b in database.as_bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    0x3d32_ad9e * i64::from(!crc)
}

/// Brings the tables up to date: takes the migration lock (waiting, with a log line every
/// `progress_every`, while another instance migrates: a rolling upgrade must not fail
/// because a neighbour's migration takes longer than the operation timeout), runs `steps`
/// on the locked connection, releases the lock.
async fn migrate(
    pool: &PgPool,
    steps: &[(i64, &'static str, &'static str)],
    progress_every: Duration,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(err)?;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    let lock = migration_lock_id(&database);
    let started = std::time::Instant::now();
    // Wait on the lock in slices of `progress_every` (`lock_timeout` bounds an advisory lock
    // wait too), so the wait wakes the moment the lock is free and says so between slices.
    let slice_ms = progress_every.as_millis().max(1);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = {slice_ms}"
    )))
    .execute(&mut *conn)
    .await
    .map_err(err)?;
    loop {
        match sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => break,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                tracing::warn!(
                    target: "mcp_oauth::store",
                    database = %database,
                    lock,
                    waited_secs = started.elapsed().as_secs(),
                    "waiting for another instance's migration of the database (PostgreSQL advisory lock held elsewhere)"
                );
            }
            Err(e) => return Err(err(e)),
        }
    }
    let reset = sqlx::query("RESET lock_timeout").execute(&mut *conn).await;
    if started.elapsed() >= progress_every {
        tracing::info!(target: "mcp_oauth::store", database = %database,
            waited_secs = started.elapsed().as_secs(), "the migration lock is free; migrating");
    }
    if let Err(e) = reset {
        let _ = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(lock)
            .fetch_one(&mut *conn)
            .await;
        return Err(err(e));
    }
    let mut m = migrator(steps);
    // This connection holds the lock already.
    m.set_locking(false);
    // `run_direct` is `run` on a connection (sqlx's way around a lifetime problem that makes
    // `run(&mut conn)` futures not `Send`).
    let result = m.run_direct(None, &mut *conn, false).await;
    let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .fetch_one(&mut *conn)
        .await;
    if unlocked.is_err() {
        // The lock dies with the session: make sure the connection is not reused.
        let _ = conn.detach();
    }
    result.map_err(|e| migration_error("PostgreSQL", e))
}

/// A statement that deletes the dynamic clients `$cond` picks that nothing live names, with
/// their remembered consents, and counts them: one statement. Under `READ COMMITTED` a client
/// row touched concurrently is re-checked against its new `last_used_at` before it is
/// deleted, so a touch that commits first keeps the client. The `->>` expressions are those
/// of the migration's indexes.
macro_rules! sweep_clients_sql {
    ($cond:literal) => {
        concat!(
            "WITH gone AS ( \
    DELETE FROM mcp_oauth_clients c WHERE c.source = 'dynamic' AND ",
            $cond,
            " AND NOT EXISTS (SELECT 1 FROM mcp_oauth_families f \
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
SELECT COUNT(*) FROM gone"
        )
    };
}

/// The idle clients: last used (or registered) before `$1`.
const SWEEP_IDLE_CLIENTS: &str = sweep_clients_sql!("c.last_used_at < $1 AND c.issued_at < $1");
/// The never-used clients registered before `$1`.
const SWEEP_UNUSED_CLIENTS: &str = sweep_clients_sql!("c.last_used_at = 0 AND c.issued_at < $1");

/// Redeems a code in one statement, so one round trip: the code is spent only when it is
/// live, unspent and the family id is free, and the family and its first refresh token are
/// inserted from the same statement. The final `SELECT` reads the code as it was before the
/// statement (every part of a statement sees one snapshot), which tells a replay (and its
/// family) from a missing or expired code.
const REDEEM_CODE: &str = "WITH fam_taken AS ( \
    SELECT EXISTS (SELECT 1 FROM mcp_oauth_families WHERE family_id = $2::text) AS taken \
), spent AS ( \
    UPDATE mcp_oauth_codes SET used_by = $2::text \
    WHERE code_hash = $1::bytea AND used_by IS NULL AND expires_at > $3::bigint \
    AND NOT (SELECT taken FROM fam_taken) \
    RETURNING code_hash \
), fam AS ( \
    INSERT INTO mcp_oauth_families \
        (family_id, record, expires_at, current_hash, keep_until, previous_sealed) \
    SELECT $2::text, $4::text, $5::bigint, $6::bytea, $5::bigint, $7::bytea FROM spent \
    RETURNING family_id \
), rt AS ( \
    INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id) \
    SELECT $6::bytea, family_id FROM fam WHERE $6::bytea IS NOT NULL \
) \
SELECT (SELECT COUNT(*) FROM fam) AS created, (SELECT taken FROM fam_taken) AS family_taken, \
    c.used_by, c.expires_at, c.record \
FROM (SELECT 1) AS one LEFT JOIN mcp_oauth_codes c ON c.code_hash = $1::bytea";

/// Maps a driver error (see [`map_err`](super::map_err)).
fn err(e: sqlx::Error) -> StoreError {
    super::err::<Postgres>(e)
}

impl sealed::Sealed for Postgres {}

impl Backend for Postgres {
    const LABEL: &'static str = "PostgreSQL";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_ROWS: &'static str = "FOR UPDATE";
    const GREATEST: &'static str = "GREATEST";
    const SHARES_RATE_LIMITS: bool = true;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn redeem_code(
        store: &PostgresStore,
        hash: &SecretHash,
        redemption: &CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        let family = &redemption.family;
        let row = sqlx::query(REDEEM_CODE)
            .bind(&hash.0[..])
            .bind(&family.family_id)
            .bind(db_time(now))
            .bind(to_json(family, "family")?)
            .bind(db_time(family.expires_at))
            .bind(redemption.refresh.map(|h| h.0.to_vec()))
            .bind(&redemption.sealed_grant)
            .fetch_one(&store.writer)
            .await
            .map_err(err)?;
        if col::<_, i64>(&row, "created")? > 0 {
            return Ok(CodeRedeem::Redeemed);
        }
        if col::<_, bool>(&row, "family_taken")? {
            return Err(StoreError::conflict(format!(
                "family {} exists or was revoked",
                family.family_id
            )));
        }
        let (Some(record), Some(expires_at)) = (
            col::<_, Option<String>>(&row, "record")?,
            col::<_, Option<i64>>(&row, "expires_at")?,
        ) else {
            return Ok(CodeRedeem::NotFound);
        };
        if expires_at <= db_time(now) {
            return Ok(CodeRedeem::NotFound);
        }
        let family_id = match col::<_, Option<String>>(&row, "used_by")? {
            Some(family_id) => family_id,
            // Unspent in this statement's snapshot, yet not spent by it: a racing redemption
            // committed in between. Read what it bound.
            None => {
                let used_by: Option<Option<String>> =
                    sqlx::query_scalar("SELECT used_by FROM mcp_oauth_codes WHERE code_hash = $1")
                        .bind(&hash.0[..])
                        .fetch_optional(&store.writer)
                        .await
                        .map_err(err)?;
                match used_by.flatten() {
                    Some(family_id) => family_id,
                    None => return Ok(CodeRedeem::NotFound),
                }
            }
        };
        Ok(CodeRedeem::Spent {
            family_id,
            code: from_json(&record, "code")?,
        })
    }

    /// One call of `mcp_oauth_rotate_refresh` (migration 9), which locks the family row and
    /// decides as the generic transaction does: one round trip.
    async fn rotate_refresh(
        store: &PostgresStore,
        presented: &SecretHash,
        successor: &SecretHash,
        sealed_successor: &[u8],
        now: u64,
        grace: u64,
    ) -> Result<Option<Rotation>, StoreError> {
        let row = sqlx::query(
            "SELECT outcome, family_id, record, sealed FROM mcp_oauth_rotate_refresh($1, $2, $3, $4, $5, $6)",
        )
        .bind(&presented.0[..])
        .bind(&successor.0[..])
        .bind(sealed_successor)
        .bind(db_time(now))
        .bind(db_time(grace))
        .bind(db_time(super::REVOKED_KEEP_SECS))
        .fetch_one(&store.writer)
        .await
        .map_err(err)?;
        let outcome: String = col(&row, "outcome")?;
        let family = || -> Result<crate::store::RefreshFamily, StoreError> {
            from_json(&col::<_, String>(&row, "record")?, "family")
        };
        Ok(Some(match outcome.as_str() {
            "rotated" => Rotation::Rotated(family()?),
            "grace" => Rotation::Grace {
                family: family()?,
                sealed_successor: col::<_, Option<Vec<u8>>>(&row, "sealed")?.unwrap_or_default(),
            },
            "reused" => {
                let family_id: String = col(&row, "family_id")?;
                super::family::reuse_detected(&family_id);
                Rotation::Reused { family_id }
            }
            _ => Rotation::Invalid,
        }))
    }

    async fn sweep_idle_clients(
        store: &PostgresStore,
        idle_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        sweep_clients(store, SWEEP_IDLE_CLIENTS, idle_before, now).await
    }

    async fn sweep_unused_clients(
        store: &PostgresStore,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        sweep_clients(store, SWEEP_UNUSED_CLIENTS, registered_before, now).await
    }
}

/// Runs one client sweep statement.
async fn sweep_clients(
    store: &PostgresStore,
    statement: &'static str,
    before: u64,
    now: u64,
) -> Result<u64, StoreError> {
    store
        .run(async {
            let n: i64 = sqlx::query_scalar(statement)
                .bind(db_time(before))
                .bind(db_time(now))
                .fetch_one(&store.writer)
                .await
                .map_err(err)?;
            count_of(n)
        })
        .await
}

/// A store in PostgreSQL, shared by every instance of a deployment. See the
/// [module docs](super).
///
/// Tables are created (by embedded, versioned migrations, under an advisory lock so that
/// instances starting together do not collide; see the [module docs](super) on rolling
/// upgrades) in the connection's `search_path`, usually `public`; to keep them apart, give
/// the store a role or a connection whose `search_path` is a schema of its own
/// (`?options=-c%20search_path%3Doauth` in the URL). One schema holds **one** authorization
/// server: several issuers cannot share it (give each its own schema or database).
///
/// Cloning is cheap: clones share the pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), mcp_oauth::store::StoreError> {
/// use mcp_oauth::store::sql::PostgresStore;
/// use mcp_oauth::store::GrantStore as _;
///
/// let store = PostgresStore::connect("postgres://mcp:secret@db.internal:5432/mcp").await?;
/// // Somewhere periodic: drop expired codes, requests, revocations and families.
/// let removed = store.sweep(std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()).await?;
/// # let _ = removed;
/// # Ok(())
/// # }
/// ```
pub type PostgresStore = SqlStore<Postgres>;

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.writer.size())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// libpq's parameters such as `sslmode=require`), with a pool of up to 10 connections
    /// that waits at most 5 s for one, and brings the tables up to date.
    ///
    /// While another instance holds the migration lock, this waits (logging a warning every
    /// 5 s) rather than failing: a neighbour's long migration must not fail a rolling
    /// upgrade. The advisory lock is per database, shared with older versions.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is invalid, the server cannot be reached or
    /// refuses the login within 5 s, or a migration fails (or was applied with other
    /// contents than this version has).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::backend("PostgreSQL: invalid URL", e))?;
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::backend(format!("PostgreSQL: cannot connect to {target}"), e)
            })?;
        Self::from_pool(pool).await
    }

    /// A store on a pool you configured (size, timeouts, TLS, `search_path`); brings the
    /// tables up to date. Give the pool an `acquire_timeout`: it bounds how long a request
    /// waits while the database is down.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or a migration fails.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let store = Self {
            writer: pool.clone(),
            reader: pool,
            timeout: DEFAULT_OPERATION_TIMEOUT,
            path: None,
            durable: true,
            sweep_batch: super::grants::SWEEP_BATCH,
        };
        migrate(&store.writer, MIGRATIONS, MIGRATION_PROGRESS_EVERY).await?;
        Ok(store)
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_lock_id_is_sqlx_s() {
        // CRC-32 (IEEE) of "123456789" is 0xCBF43926.
        assert_eq!(migration_lock_id("123456789"), 0x3d32_ad9e * 0xCBF4_3926);
    }

    /// A database of its own (its migration lock is its own too), dropped at the end.
    struct TempDb {
        admin: PgPool,
        name: String,
        url: String,
    }

    impl TempDb {
        async fn new(tag: &str) -> Option<Self> {
            let Ok(base) = std::env::var("MCP_OAUTH_TEST_POSTGRES_URL") else {
                eprintln!("MCP_OAUTH_TEST_POSTGRES_URL is not set; skipping");
                return None;
            };
            let admin = PgPoolOptions::new()
                .max_connections(2)
                .connect(&base)
                .await
                .unwrap();
            let name = format!(
                "mcp_oauth_{tag}_{}",
                crate::util::random_token(6).to_lowercase()
            )
            .replace('-', "_");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&admin)
                .await
                .unwrap();
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(&name);
            Some(Self {
                admin,
                name,
                url: url.to_string(),
            })
        }

        async fn pool(&self) -> PgPool {
            PgPoolOptions::new()
                .max_connections(3)
                .connect(&self.url)
                .await
                .unwrap()
        }

        async fn drop_db(self) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&self.admin)
            .await;
        }
    }

    /// Log lines written while a test runs (this thread only).
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// Issue 13 item 6: a start while another instance holds the migration lock waits
    /// (saying so) and succeeds once it is released, however long that takes; it used to
    /// fail after the 10 s operation timeout. The lock is held for 11 s here.
    #[tokio::test(flavor = "current_thread")]
    async fn a_start_waits_for_another_instance_s_migration() {
        let Some(db) = TempDb::new("lockwait").await else {
            return;
        };
        let lines = Lines::default();
        let writer = lines.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let holder_pool = db.pool().await;
        let mut holder = holder_pool.acquire().await.unwrap();
        let lock = migration_lock_id(&db.name);
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock)
            .execute(&mut *holder)
            .await
            .unwrap();
        let start = tokio::spawn({
            let url = db.url.clone();
            async move { PostgresStore::connect(&url).await }
        });
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(!start.is_finished(), "the start must wait for the lock");
        assert!(
            lines
                .text()
                .contains("waiting for another instance's migration"),
            "progress is logged: {}",
            lines.text()
        );
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock)
            .execute(&mut *holder)
            .await
            .unwrap();
        let store = start
            .await
            .unwrap()
            .expect("the start succeeds once the lock is free");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mcp_oauth_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        drop(holder);
        holder_pool.close().await;
        store.pool().close().await;
        db.drop_db().await;
    }

    /// Issue 13 item 6: after a newer version migrated (here: one more step, an index built
    /// `CONCURRENTLY` outside a transaction), an older version (this one) still starts; one
    /// whose known migration differs from what was applied is refused.
    #[tokio::test]
    async fn an_older_version_starts_after_a_newer_one_migrated() {
        let Some(db) = TempDb::new("older").await else {
            return;
        };
        let pool = db.pool().await;
        let mut newer: Vec<(i64, &'static str, &'static str)> = MIGRATIONS.to_vec();
        newer.push((
            MIGRATIONS.len() as i64 + 1,
            "a future index",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY mcp_oauth_future_test ON mcp_oauth_clients (issued_at);\n",
        ));
        migrate(&pool, &newer, MIGRATION_PROGRESS_EVERY)
            .await
            .expect("a CONCURRENTLY index runs as a no-transaction migration");
        let valid: bool = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 'mcp_oauth_future_test'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(valid);

        // The older binary: the released migrations only.
        let older = PostgresStore::connect(&db.url)
            .await
            .expect("an older version starts on the newer schema");
        drop(older);

        // A binary whose migration 8 differs from the applied one is refused, and says why.
        let mut edited: Vec<(i64, &'static str, &'static str)> = MIGRATIONS.to_vec();
        edited[7].2 = "-- edited\nSELECT 1;\n";
        let err = migrate(&pool, &edited, MIGRATION_PROGRESS_EVERY)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("migration 8"), "{err}");
        pool.close().await;
        db.drop_db().await;
    }
}
