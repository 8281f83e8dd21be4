//! Durable stores on SQL databases, through [`sqlx`]: [`SqliteStore`] (feature `sqlite`) keeps
//! everything (the signing keys too) in one SQLite file and is the choice for a single
//! instance that must survive restarts; [`PostgresStore`] (feature `postgres`) is shared by
//! every instance of a deployment.
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
//!   so the store can share a database (or a schema) with the application. They are safe for
//!   rolling upgrades: on PostgreSQL an instance waits for another one's migration (an
//!   advisory lock; it logs every few seconds while it waits, and does not give up after the
//!   operation timeout), new indexes are built with `CREATE INDEX CONCURRENTLY` (released
//!   migration 3 builds its indexes the plain way: on a database upgraded from before it
//!   with large tables, that step blocks writes to them while it runs), and an older version
//!   starts on a schema a newer one migrated, as long as every migration it knows is applied
//!   unchanged (a changed checksum is refused).
//! - **One issuer per schema.** The tables hold one authorization server's clients, grants
//!   and signing keys (ring `default`). Several authorization servers with different issuers
//!   cannot share one schema: a code, refresh token or client of one would be honoured by the
//!   other. Give each its own database or schema (PostgreSQL: a `search_path` per store), or
//!   its own SQLite file.
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
//! **One implementation, two dialects.** Both are names of one generic store,
//! [`SqlStore`]`<DB>`: every statement, transaction and decoding step is written once, with
//! `$1`-numbered placeholders that SQLite and PostgreSQL both accept, and the [`Backend`]
//! supplies only what the dialects spell differently (`MAX` or `GREATEST`, `BEGIN IMMEDIATE` or
//! a row lock with `FOR UPDATE`, and the idle-client sweep, which reads JSON with
//! `json_extract` on SQLite and `->>` on PostgreSQL). Session bindings
//! ([`SessionBindings`](crate::resource::SessionBindings)) exist only on PostgreSQL. The
//! migrations stay per backend, so existing databases keep working.
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
//! // One file; created with its tables on first start, reopened as it is afterwards. It
//! // keeps the signing keys too, so tokens survive a restart.
//! let store = SqliteStore::open("mcp-oauth.db").await?;
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
//!     .store(store)
//!     .build()
//!     .await?;
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

mod clients;
mod family;
mod grants;
mod keys;
#[cfg(feature = "postgres")]
mod postgres;
mod rate_limits;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Decode, Pool, Row, Type};

use super::{Client, SecretHash, StoreError};

/// A store on a SQL database, written once for every [`Backend`]: use it through its names
/// [`SqliteStore`] (`SqlStore<sqlx::Sqlite>`) and [`PostgresStore`]
/// (`SqlStore<sqlx::Postgres>`), whose constructors open the connections. See the
/// [module docs](self).
///
/// It implements [`ClientStore`](super::ClientStore), [`GrantStore`](super::GrantStore),
/// [`KeyStore`](super::KeyStore) and [`RateLimitStore`](super::RateLimitStore) for each
/// backend. Writes go to one pool and reads to another: on SQLite the writer is a single
/// connection beside a few readers, on PostgreSQL both are the same pool.
///
/// Cloning is cheap: clones share the connections.
pub struct SqlStore<DB: Backend> {
    writer: Pool<DB>,
    reader: Pool<DB>,
    timeout: Duration,
    path: Option<PathBuf>,
    /// Whether the data outlives the process (all but a SQLite in-memory database).
    durable: bool,
    /// How many rows one sweep statement removes at most.
    sweep_batch: u64,
}

impl<DB: Backend> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            timeout: self.timeout,
            path: self.path.clone(),
            durable: self.durable,
            sweep_batch: self.sweep_batch,
        }
    }
}

impl<DB: Backend> SqlStore<DB> {
    /// How long one store operation may take before it fails with
    /// [`StoreError::Unavailable`] (10 s by default).
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many expired rows one statement of [`sweep`](super::GrantStore::sweep) removes
    /// at most (500 by default, at least 1). Each batch is its own short transaction, so a
    /// sweep never holds the tables for long, however much expired.
    #[must_use]
    pub fn with_sweep_batch(mut self, rows: u64) -> Self {
        self.sweep_batch = rows.max(1);
        self
    }

    /// Runs one operation within the store's deadline.
    async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(DB::LABEL, self.timeout, op).await
    }
}

// The trait impls (in `clients`, `grants`, `keys`, `rate_limits`) all carry the same bounds:
// that `DB`'s driver runs statements on a connection and encodes and decodes the column types
// the statements use (text, `BIGINT`, bytes, booleans). `Sqlite` and `Postgres` meet them.

/// Maps a driver error of backend `DB` (see [`map_err`]).
fn err<DB: Backend>(e: sqlx::Error) -> StoreError {
    map_err(DB::LABEL, e)
}

mod sealed {
    /// Only this crate's backends implement [`Backend`](super::Backend).
    pub trait Sealed {}
}

/// What differs between the SQL databases [`SqlStore`] runs on (implemented for
/// [`sqlx::Sqlite`] and [`sqlx::Postgres`] only): the few SQL words the two dialects spell
/// differently, how a writing transaction starts, and the one statement (the idle-client
/// sweep) that each does its own way. Both accept `$1`-numbered placeholders, so every other
/// statement is written once.
pub trait Backend: sqlx::Database + sealed::Sealed {
    /// The name errors carry (`"SQLite"`, `"PostgreSQL"`).
    const LABEL: &'static str;
    /// The statement that opens a writing transaction: `BEGIN IMMEDIATE` on SQLite takes the
    /// write lock before the first read, so no other writer can slip between a read and the
    /// write that depends on it; PostgreSQL locks rows instead (see [`Self::LOCK_ROWS`]).
    const BEGIN_WRITE: &'static str;
    /// What ends a `SELECT` whose rows the transaction is about to change: `FOR UPDATE` on
    /// PostgreSQL, nothing on SQLite (whose transaction already holds the write lock).
    const LOCK_ROWS: &'static str;
    /// The larger of two values: `GREATEST` on PostgreSQL, the two-argument `MAX` on SQLite.
    const GREATEST: &'static str;
    /// Whether the store offers its rate-limit counters to the server
    /// ([`GrantStore::rate_limit_store`](super::GrantStore::rate_limit_store)): PostgreSQL
    /// does, since they are then shared by every instance; SQLite does not.
    const SHARES_RATE_LIMITS: bool;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Spends a live code and creates its family in one atomic step (see
    /// [`GrantStore::redeem_code`](super::GrantStore::redeem_code)): one statement on
    /// PostgreSQL, one `BEGIN IMMEDIATE` transaction (one commit) on SQLite.
    fn redeem_code(
        store: &SqlStore<Self>,
        hash: &SecretHash,
        redemption: &super::CodeRedemption,
        now: u64,
    ) -> impl Future<Output = Result<super::CodeRedeem, StoreError>> + Send;

    /// Rotates a refresh token in one statement where the backend can (see
    /// [`GrantStore::rotate_refresh`](super::GrantStore::rotate_refresh)): PostgreSQL calls
    /// the function of migration 9 (one round trip); `None` lets the generic transaction do
    /// it (SQLite).
    fn rotate_refresh(
        store: &SqlStore<Self>,
        presented: &SecretHash,
        successor: &SecretHash,
        sealed_successor: &[u8],
        now: u64,
        grace: u64,
    ) -> impl Future<Output = Result<Option<super::Rotation>, StoreError>> + Send;

    /// Deletes the idle dynamic clients that nothing live names, with their remembered
    /// consents, and counts them (see
    /// [`ClientStore::sweep_idle_clients`](super::ClientStore::sweep_idle_clients)).
    fn sweep_idle_clients(
        store: &SqlStore<Self>,
        idle_before: u64,
        now: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes the never-used dynamic clients registered before `registered_before` that
    /// nothing live names, with their remembered consents, and counts them (see
    /// [`ClientStore::sweep_unused_clients`](super::ClientStore::sweep_unused_clients)).
    fn sweep_unused_clients(
        store: &SqlStore<Self>,
        registered_before: u64,
        now: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The table holding the migration history (not sqlx's default `_sqlx_migrations`, so an
/// application's own migrations in the same database stay separate).
const MIGRATIONS_TABLE: &str = "mcp_oauth_migrations";

/// How long every store operation may take by default.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a revoked family (or the tombstone of an unknown one) is remembered after the
/// revocation: at least as long as the longest access token it may have issued (24 h), plus
/// the largest verifier leeway.
const REVOKED_KEEP_SECS: u64 = 24 * 3600 + super::REVOCATION_HORIZON_SLACK;

/// The first line of a migration that must run outside a transaction (sqlx's convention):
/// `CREATE INDEX CONCURRENTLY` on PostgreSQL, which builds an index without blocking writes,
/// cannot run inside one.
const NO_TRANSACTION: &str = "-- no-transaction";

/// A migrator for `(version, description, sql)` steps, recording into [`MIGRATIONS_TABLE`].
///
/// - A step whose first line is `-- no-transaction` runs outside a transaction. On
///   PostgreSQL every new index is created that way, `CREATE INDEX CONCURRENTLY`, one
///   statement per file (PostgreSQL runs several statements of one query in an implicit
///   transaction, which `CONCURRENTLY` refuses): a rolling upgrade then never blocks writes
///   to a large table while the index builds. If such a build fails, PostgreSQL leaves an
///   `INVALID` index behind: drop it (`DROP INDEX CONCURRENTLY name`) before the next start.
/// - Migrations applied by a **newer** version that this one does not know are ignored
///   (`ignore_missing`): during a rolling upgrade (or a rollback) an older instance keeps
///   starting after a newer one migrated. Every migration this version knows must still be
///   applied exactly as this version has it: a checksum that differs is refused
///   ([`StoreError::Unavailable`] naming the version), as is a migration that failed half
///   way (a "dirty" one). New migrations are therefore additive (new tables, columns with
///   defaults, indexes) so that older code keeps working on the newer schema.
fn migrator(steps: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = steps
        .iter()
        .map(|(version, description, sql)| {
            let no_tx = sql.trim_start().starts_with(NO_TRANSACTION);
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                no_tx,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m.set_ignore_missing(true);
    m
}

/// A migration error, said so an operator knows what to do.
fn migration_error(backend: &str, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let what = match &e {
        MigrateError::VersionMismatch(v) => format!(
            "{backend}: migration {v} was applied with other contents than this version of mcp-oauth has (an edited migration file, or line endings changed by a checkout); refusing to run on that schema"
        ),
        MigrateError::Dirty(v) => format!(
            "{backend}: migration {v} failed part way on an earlier start; repair it (for a failed CREATE INDEX CONCURRENTLY, drop the INVALID index) and delete its row from {MIGRATIONS_TABLE}"
        ),
        _ => format!("{backend}: migration failed"),
    };
    StoreError::backend(what, e)
}

/// A time for the database (`BIGINT`); times beyond `i64::MAX` saturate.
fn db_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A time from the database.
fn time_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("{what}: negative time {v}")))
}

/// A `COUNT(*)` from the database.
fn count_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("negative count {v}")))
}

fn to_json<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::corrupt_with(what, e))
}

fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt_with(what, e))
}

fn hash_of(bytes: &[u8], what: &str) -> Result<SecretHash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(SecretHash)
        .map_err(|_| StoreError::corrupt(format!("{what}: not a 32-byte hash")))
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
        .map_err(|e| StoreError::corrupt_with(format!("column {name}"), e))
}

/// Maps a driver error: duplicates are [`StoreError::Conflict`], undecodable data
/// [`StoreError::Corrupt`], everything else (connection refused, pool timeout, I/O, a locked
/// database) [`StoreError::Unavailable`], naming the backend.
fn map_err(backend: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::conflict(format!("{backend}: {db}"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::corrupt_with(backend, e),
        sqlx::Error::PoolTimedOut => StoreError::backend(
            format!("{backend}: no connection could be had in time (database down or overloaded)"),
            e,
        ),
        _ => StoreError::backend(backend, e),
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
        Err(_) => Err(StoreError::unavailable(format!(
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

#[cfg(test)]
mod tests {
    use super::SecretHash;

    /// Checks that `steps` are numbered in increasing order from 1 (a gap is left only where
    /// a step of another branch is still being merged; it is filled before a release) and that
    /// each is byte for byte the released file whose SHA-256 is in `released`. sqlx records a checksum of every migration it
    /// applies and refuses to open a database whose applied migrations no longer match, so an
    /// edited migration would lock every existing database out: add a new numbered step
    /// instead (and its hash here).
    fn never_edited(steps: &[(i64, &str, &str)], released: &[&str]) {
        assert_eq!(
            steps.len(),
            released.len(),
            "a migration was added or removed"
        );
        for (i, ((version, description, sql), hash)) in steps.iter().zip(released).enumerate() {
            assert_eq!(
                *version,
                i as i64 + 1,
                "migration versions are 1, 2, 3, … without gaps"
            );
            assert_eq!(
                SecretHash::of(sql).to_hex(),
                *hash,
                "migration {version} ({description}) was edited after its release"
            );
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_migrations_never_edited() {
        never_edited(
            super::sqlite::MIGRATIONS,
            &[
                "3d40766596cfc33a040596a28f65ffbe0b5ed7b6c7007ab8fa951d2dc2ca1bfe",
                "f7adac63950e1432eaef281a11606eb2014d2d0eb52a6633c402083d29eb2ae7",
                "13964fb41170d2548e16bbe1a0e9bcaa9211b3777203f8e62eb5cae739417100",
                "90b630a3b0b3db0d889a0943f158dbb61bf9eb83d012e8f42fa3e9a427201412",
                "2652e5a3b2378df0079c01307a3f6560a0db2e759a0b3c1f5ef05a6f9fba443a",
                "fd6c1aef7e5f66dd293b93063c65c9c7d0dfa760630bf751a9aac2a38ad83d96",
                "08c94c95239357e8b21fb7ece2359186a66bc1770d0639228508cf0d945102f1",
            ],
        );
    }

    /// Issue 13 item 6: from migration 9 on, every PostgreSQL index is built without
    /// blocking writes: `CREATE INDEX CONCURRENTLY` in a `-- no-transaction` file holding that
    /// one statement (PostgreSQL runs the statements of one query in an implicit
    /// transaction, which `CONCURRENTLY` refuses). Migrations 1 to 8 were released before the
    /// rule and are never edited.
    #[cfg(feature = "postgres")]
    #[test]
    fn new_postgres_indexes_are_built_concurrently() {
        for (version, description, sql) in super::postgres::MIGRATIONS {
            if *version <= 8 {
                continue;
            }
            let code: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_ascii_uppercase();
            if !code.contains("CREATE INDEX") && !code.contains("CREATE UNIQUE INDEX") {
                continue;
            }
            let what = format!("migration {version} ({description})");
            assert!(
                sql.trim_start().starts_with(super::NO_TRANSACTION),
                "{what}: an index migration starts with `-- no-transaction`"
            );
            assert!(
                code.contains("CONCURRENTLY"),
                "{what}: CREATE INDEX CONCURRENTLY"
            );
            assert_eq!(
                code.matches(';').count(),
                1,
                "{what}: one statement per no-transaction migration"
            );
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_migrations_never_edited() {
        never_edited(
            super::postgres::MIGRATIONS,
            &[
                "fb13d9be696008d94947ffb485ea022d79c3ba085c27ab819cae12d03028e439",
                "94953d881fd812424b353ab67c19c9fda89d0c106da0b7de0ae0478d2d13f25c",
                "f8d4e7a1708db64cbc7a5557b054b5fdf21fa8e5e8f9249922b9f612a367fcf0",
                "3c4d73978e4c1b0e22246985f599c4b4db8e27916f761a9b2850040bbf98d9c2",
                "5a9786b197375e023027a82829e6085b119b46743fcf55918b41821a10bcaba4",
                "25e9fc92e92af04eea73f20aa52886e6e10c3f919c3ae19e90a2701350a79b60",
                "e7fa8bc0ae110e0b9a00023988c1ce1b13154fc7cf43fcd9e729b4fdf591fc44",
                "66e1983218620aa9a9866ad90ced4bda3db6369c32ecd3a65c058550aad0ea8c",
                "fd8f0d550d2d9a2b90aea5a775187b02ef844db0ac4b5c3f07b62acb3472719b",
            ],
        );
    }
}
