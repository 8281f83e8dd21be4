//! [`PostgresStore`]: the PostgreSQL dialect of [`SqlStore`] and how it connects.

mod sessions;

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};

use super::{
    Backend, DEFAULT_OPERATION_TIMEOUT, SqlStore, col, count_of, db_time, from_json, migrator,
    sealed, to_json,
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
/// instances starting together do not collide) in the connection's `search_path`, usually
/// `public`; to keep them apart, give the store a role or a connection whose `search_path`
/// is a schema of its own (`?options=-c%20search_path%3Doauth` in the URL).
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
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is invalid, the server cannot be reached or
    /// refuses the login within 5 s, or a migration fails.
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
        store
            .run(async {
                migrator(MIGRATIONS)
                    .run(&store.writer)
                    .await
                    .map_err(|e| StoreError::backend("PostgreSQL: migration failed", e))
            })
            .await?;
        Ok(store)
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.writer
    }
}
