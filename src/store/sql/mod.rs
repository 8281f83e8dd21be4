//! Durable stores on SQL databases, through [`sqlx`]: [`SqliteStore`] (feature `sqlite`) keeps
//! everything in one SQLite file and is the choice for a single instance that must survive
//! restarts; [`PostgresStore`] (feature `postgres`) is shared by every instance of a
//! deployment.
//!
//! Both implement [`ClientStore`](super::ClientStore) and [`GrantStore`](super::GrantStore)
//! with exactly the semantics of [`MemoryStore`](super::MemoryStore), and pass the
//! [`testkit`](super::testkit):
//!
//! - **Atomic steps are single statements or one transaction.** A code is taken by one
//!   `UPDATE … WHERE used_by IS NULL … RETURNING`, so of many racing redemptions exactly one
//!   binds its family; a refresh token is rotated inside one transaction that locks the
//!   family (`SELECT … FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so of many
//!   racing refreshes exactly one rotates and the others get its sealed successor; reuse
//!   revokes the family in that same transaction.
//! - **Secrets are stored only as SHA-256 hashes** (`BLOB` / `BYTEA`); pending authorization
//!   requests are keyed by the hash of their id.
//! - **Migrations are embedded** (`migrations/sqlite`, `migrations/postgres` in the crate),
//!   versioned, and run when the store is opened; running them again is a no-op. Their history
//!   lives in its own table, `mcp_oauth_migrations`, and every table is prefixed `mcp_oauth_`,
//!   so the store can share a database (or a schema) with the application.
//! - **An unreachable database is an error, never a hang.** Every operation is bounded (10 s by
//!   default, [`with_operation_timeout`](SqliteStore::with_operation_timeout)); failures
//!   surface as [`StoreError::Unavailable`], which the
//!   endpoints answer with `503 temporarily_unavailable`.
//!
//! The authorization server sweeps them on a schedule (see
//! [`server::retention`](crate::server::retention)): [`sweep`](super::GrantStore::sweep)
//! drops expired codes, pending requests, revocations and families, and
//! [`sweep_idle_clients`](super::ClientStore::sweep_idle_clients) removes idle dynamic clients
//! in one statement that also checks, through indexes on the records' `client_id`, that no
//! live family, code or pending request names them. Both stores implement
//! [`RateLimitStore`](super::RateLimitStore) with one `INSERT … ON CONFLICT … RETURNING` per
//! hit; [`PostgresStore`] offers it to the server for limits shared by every instance.
//!
//! These stores need Rust 1.94 or newer (sqlx 0.9's requirement); the rest of the crate builds
//! with 1.88.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::AuthorizationServer;
//! use mcp_oauth::store::sql::SqliteStore;
//!
//! // One file; created with its tables on first start, reopened as it is afterwards.
//! let store = SqliteStore::open("mcp-oauth.db").await?;
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
//!     .store(store)
//!     .build()?;
//! # let _ = server;
//! # Ok(())
//! # }
//! ```
//!
//! With several instances, point them all at one PostgreSQL database:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::store::sql::PostgresStore;
//!
//! let store = PostgresStore::connect("postgres://mcp@db.internal/mcp").await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

mod keys;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Client, RefreshFamily, RefreshLookup, RefreshTokenState, SecretHash, StoreError};

/// The table holding the migration history (not sqlx's default `_sqlx_migrations`, so an
/// application's own migrations in the same database stay separate).
const MIGRATIONS_TABLE: &str = "mcp_oauth_migrations";

/// How long every store operation may take by default.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a revoked family (or the tombstone of an unknown one) is remembered after the
/// revocation: at least as long as the longest access token it may have issued (24 h), plus
/// the largest verifier leeway.
const REVOKED_KEEP_SECS: u64 = 24 * 3600 + super::REVOCATION_HORIZON_SLACK;

/// A migrator for `(version, description, sql)` steps, recording into [`MIGRATIONS_TABLE`].
fn migrator(steps: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = steps
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

/// A time for the database (`BIGINT`); times beyond `i64::MAX` saturate.
fn db_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A time from the database.
fn time_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: negative time {v}")))
}

/// A `COUNT(*)` from the database.
fn count_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v}")))
}

fn to_json<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn hash_of(bytes: &[u8], what: &str) -> Result<SecretHash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(SecretHash)
        .map_err(|_| StoreError::Corrupt(format!("{what}: not a 32-byte hash")))
}

/// The key of a pending request: the hash of its id (the id is a bearer handle).
fn pending_key(id: &str) -> String {
    SecretHash::of(id).to_hex()
}

/// The family part of an access token id (`"{family}.{random}"`).
fn family_of_jti(jti: &str) -> &str {
    jti.split_once('.').map_or(jti, |(f, _)| f)
}

/// A column of a row, as `T`; a missing or mistyped column is [`StoreError::Corrupt`].
fn col<'r, R, T>(row: &'r R, name: &'static str) -> Result<T, StoreError>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// Maps a driver error: duplicates are [`StoreError::Conflict`], undecodable data
/// [`StoreError::Corrupt`], everything else (connection refused, pool timeout, I/O, a locked
/// database) [`StoreError::Unavailable`], naming the backend.
fn map_err(backend: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("{backend}: {db}"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("{backend}: {e}")),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "{backend}: no connection could be had in time (database down or overloaded)"
        )),
        _ => StoreError::Unavailable(format!("{backend}: {e}")),
    }
}

/// Runs one store operation with a deadline, so a database that stops answering makes the
/// caller fail with [`StoreError::Unavailable`] instead of waiting forever.
async fn bounded<T>(
    backend: &str,
    limit: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "{backend}: no answer within {} ms",
            limit.as_millis()
        ))),
    }
}

/// A client from its stored record and `last_used_at` column.
fn client_of(record: &str, last_used_at: i64) -> Result<Client, StoreError> {
    let mut c: Client = from_json(record, "client")?;
    c.last_used_at = time_of(last_used_at, "client last_used_at")?;
    Ok(c)
}

/// The state of a family row, as rotation sees it.
struct FamilyRow {
    family_id: String,
    record: Option<String>,
    revoked_at: Option<i64>,
    current_hash: Option<Vec<u8>>,
    previous_hash: Option<Vec<u8>>,
    previous_rotated_at: Option<i64>,
    previous_sealed: Option<Vec<u8>>,
}

/// The columns [`FamilyRow::from_row`] reads, as a literal for `concat!`-built `SELECT`s.
macro_rules! family_columns {
    () => {
        "family_id, record, revoked_at, current_hash, previous_hash, \
         previous_rotated_at, previous_sealed"
    };
}
use family_columns;

impl FamilyRow {
    fn from_row<R>(row: &R) -> Result<Self, StoreError>
    where
        R: Row,
        &'static str: ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(Self {
            family_id: col(row, "family_id")?,
            record: col(row, "record")?,
            revoked_at: col(row, "revoked_at")?,
            current_hash: col(row, "current_hash")?,
            previous_hash: col(row, "previous_hash")?,
            previous_rotated_at: col(row, "previous_rotated_at")?,
            previous_sealed: col(row, "previous_sealed")?,
        })
    }

    /// The family when it is live at `now`: created (not a tombstone), unrevoked, unexpired.
    fn active(&self, now: u64) -> Result<Option<RefreshFamily>, StoreError> {
        if self.revoked_at.is_some() {
            return Ok(None);
        }
        let Some(record) = &self.record else {
            return Ok(None);
        };
        let family: RefreshFamily = from_json(record, "family")?;
        Ok((family.expires_at > now).then_some(family))
    }

    /// The family when live at `now`, with where `presented` stands in it.
    fn lookup(
        &self,
        presented: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        let Some(family) = self.active(now)? else {
            return Ok(None);
        };
        let mut state = RefreshTokenState::Retired;
        if let Some(current) = &self.current_hash {
            if hash_of(current, "current refresh hash")?.ct_eq(presented) {
                state = RefreshTokenState::Current;
            }
        }
        if state == RefreshTokenState::Retired {
            if let (Some(prev), Some(at)) = (&self.previous_hash, self.previous_rotated_at) {
                if hash_of(prev, "previous refresh hash")?.ct_eq(presented) {
                    state = RefreshTokenState::Previous {
                        rotated_at: time_of(at, "previous_rotated_at")?,
                    };
                }
            }
        }
        Ok(Some(RefreshLookup { family, state }))
    }

    /// What presenting `presented` at `now` does to this family (see
    /// [`Rotation`](super::Rotation)).
    fn decide(&self, presented: &SecretHash, now: u64, grace: u64) -> Result<Decision, StoreError> {
        let Some(family) = self.active(now)? else {
            return Ok(Decision::Invalid);
        };
        if let Some(current) = &self.current_hash {
            if hash_of(current, "current refresh hash")?.ct_eq(presented) {
                return Ok(Decision::Rotate(family));
            }
        }
        if let (Some(prev), Some(at)) = (&self.previous_hash, self.previous_rotated_at) {
            let at = time_of(at, "previous_rotated_at")?;
            if hash_of(prev, "previous refresh hash")?.ct_eq(presented)
                && now <= at.saturating_add(grace)
            {
                let sealed = self.previous_sealed.clone().unwrap_or_default();
                return Ok(Decision::Grace(family, sealed));
            }
        }
        Ok(Decision::Reuse)
    }
}

/// The outcome of [`FamilyRow::decide`], before it is applied.
enum Decision {
    /// The presented token is current: rotate.
    Rotate(RefreshFamily),
    /// The presented token is the previous one, inside the grace window.
    Grace(RefreshFamily, Vec<u8>),
    /// An older token of a live family: revoke the family.
    Reuse,
    /// Unknown, expired or revoked.
    Invalid,
}

fn reuse_detected(family_id: &str) {
    tracing::warn!(
        target: "mcp_oauth::security",
        family = %family_id,
        "refresh token reuse detected; family revoked"
    );
}
