mod retention;

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    DEFAULT_OPERATION_TIMEOUT, Decision, FamilyRow, REVOKED_KEEP_SECS, bounded, client_of, col,
    count_of, db_time, family_of_jti, from_json, map_err, migrator, pending_key, reuse_detected,
    to_json,
};
use crate::scope::ScopeSet;
use crate::store::{
    AuthorizationCode, Client, ClientSource, ClientStore, CodeTake, GrantStore,
    PendingAuthorization, RateLimitStore, RefreshFamily, RefreshLookup, Rotation, SecretHash,
    StoreError, StoreStats,
};

mod keys;
mod sessions;

const BACKEND: &str = "PostgreSQL";

/// Connections [`PostgresStore::connect`] keeps at most.
const MAX_CONNECTIONS: u32 = 10;

/// How long [`PostgresStore::connect`]'s pool waits for a connection (including opening one)
/// before the operation fails with [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const MIGRATIONS: &[(i64, &str, &str)] = &[
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
];

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
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    timeout: Duration,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.pool.size())
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
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: invalid URL: {e}")))?;
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
                StoreError::Unavailable(format!("PostgreSQL: cannot connect to {target}: {e}"))
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
            pool,
            timeout: DEFAULT_OPERATION_TIMEOUT,
        };
        bounded(BACKEND, store.timeout, async {
            migrator(MIGRATIONS)
                .run(&store.pool)
                .await
                .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: migration failed: {e}")))
        })
        .await?;
        Ok(store)
    }

    /// How long one store operation may take before it fails with
    /// [`StoreError::Unavailable`] (10 s by default).
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(BACKEND, self.timeout, op).await
    }
}

fn err(e: sqlx::Error) -> StoreError {
    map_err(BACKEND, e)
}

fn source_str(s: ClientSource) -> &'static str {
    match s {
        ClientSource::Dynamic => "dynamic",
        ClientSource::Static => "static",
    }
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn insert_client(&self, client: Client) -> Result<(), StoreError> {
        self.run(async {
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_clients (client_id, record, source, issued_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id) DO NOTHING",
            )
            .bind(&client.client_id)
            .bind(to_json(&client, "client")?)
            .bind(source_str(client.source))
            .bind(db_time(client.issued_at))
            .bind(db_time(client.last_used_at))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!(
                    "client {} exists",
                    client.client_id
                )));
            }
            Ok(())
        })
        .await
    }

    async fn upsert_client(&self, client: Client) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_clients (client_id, record, source, issued_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id) DO UPDATE SET \
                 record = excluded.record, source = excluded.source, \
                 issued_at = excluded.issued_at, last_used_at = excluded.last_used_at",
            )
            .bind(&client.client_id)
            .bind(to_json(&client, "client")?)
            .bind(source_str(client.source))
            .bind(db_time(client.issued_at))
            .bind(db_time(client.last_used_at))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT record, last_used_at FROM mcp_oauth_clients WHERE client_id = $1",
            )
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            row.map(|r| client_of(&col::<_, String>(&r, "record")?, col(&r, "last_used_at")?))
                .transpose()
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        self.run(async {
            let done = sqlx::query("DELETE FROM mcp_oauth_clients WHERE client_id = $1")
                .bind(client_id)
                .execute(&self.pool)
                .await
                .map_err(err)?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("UPDATE mcp_oauth_clients SET last_used_at = $2 WHERE client_id = $1")
                .bind(client_id)
                .bind(db_time(now))
                .execute(&self.pool)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn count_clients(&self) -> Result<u64, StoreError> {
        self.run(async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mcp_oauth_clients")
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
            count_of(n)
        })
        .await
    }

    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.sweep_idle(idle_before, now).await
    }
}

#[async_trait]
impl GrantStore for PostgresStore {
    fn rate_limit_store(&self) -> Option<&dyn RateLimitStore> {
        Some(self)
    }

    async fn put_code(&self, hash: SecretHash, code: AuthorizationCode) -> Result<(), StoreError> {
        self.run(async {
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_codes (code_hash, record, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (code_hash) DO NOTHING",
            )
            .bind(&hash.0[..])
            .bind(to_json(&code, "code")?)
            .bind(db_time(code.expires_at))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict("code exists".to_owned()));
            }
            Ok(())
        })
        .await
    }

    async fn take_code(
        &self,
        hash: &SecretHash,
        family_id: &str,
        now: u64,
    ) -> Result<CodeTake, StoreError> {
        self.run(async {
            let mut conn = self.pool.acquire().await.map_err(err)?;
            // The whole decision is this one statement: of racing callers, exactly one finds
            // `used_by` empty and binds its family.
            let taken: Option<String> = sqlx::query_scalar(
                "UPDATE mcp_oauth_codes SET used_by = $2 \
                 WHERE code_hash = $1 AND used_by IS NULL AND expires_at > $3 RETURNING record",
            )
            .bind(&hash.0[..])
            .bind(family_id)
            .bind(db_time(now))
            .fetch_optional(&mut *conn)
            .await
            .map_err(err)?;
            if let Some(record) = taken {
                return Ok(CodeTake::Taken(from_json(&record, "code")?));
            }
            // Not taken: tell a replay (reporting the family bound first) from a missing or
            // expired code. `used_by` never changes once set, so this read is consistent.
            let row = sqlx::query(
                "SELECT used_by, expires_at, record FROM mcp_oauth_codes WHERE code_hash = $1",
            )
            .bind(&hash.0[..])
            .fetch_optional(&mut *conn)
            .await
            .map_err(err)?;
            let Some(row) = row else {
                return Ok(CodeTake::NotFound);
            };
            let expires_at: i64 = col(&row, "expires_at")?;
            if expires_at <= db_time(now) {
                sqlx::query(
                    "DELETE FROM mcp_oauth_codes WHERE code_hash = $1 AND expires_at <= $2",
                )
                .bind(&hash.0[..])
                .bind(db_time(now))
                .execute(&mut *conn)
                .await
                .map_err(err)?;
                return Ok(CodeTake::NotFound);
            }
            match col::<_, Option<String>>(&row, "used_by")? {
                Some(family_id) => Ok(CodeTake::Replayed {
                    family_id,
                    code: from_json(&col::<_, String>(&row, "record")?, "code")?,
                }),
                None => Ok(CodeTake::NotFound),
            }
        })
        .await
    }

    async fn create_family(
        &self,
        family: RefreshFamily,
        refresh: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        self.run(async {
            let mut tx = self.pool.begin()
                .await
                .map_err(err)?;
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_families (family_id, record, expires_at, current_hash, keep_until) \
                 VALUES ($1, $2, $3, $4, $3) ON CONFLICT (family_id) DO NOTHING",
            )
            .bind(&family.family_id)
            .bind(to_json(&family, "family")?)
            .bind(db_time(family.expires_at))
            .bind(refresh.as_ref().map(|h| h.0.to_vec()))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            if done.rows_affected() == 0 {
                // Dropping the transaction rolls it back.
                return Err(StoreError::Conflict(format!(
                    "family {} exists or was revoked",
                    family.family_id
                )));
            }
            if let Some(h) = refresh {
                sqlx::query(
                    "INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
                )
                .bind(&h.0[..])
                .bind(&family.family_id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            tx.commit().await.map_err(err)
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        successor: SecretHash,
        sealed_successor: Vec<u8>,
        now: u64,
        grace: u64,
    ) -> Result<Rotation, StoreError> {
        self.run(async {
            // FOR UPDATE locks the family row: racing rotations (from any instance) queue
            // behind ours and then read what we wrote.
            let mut tx = self.pool.begin()
                .await
                .map_err(err)?;
            let row = sqlx::query(concat!(
                "SELECT ",
                super::family_columns!(),
                " FROM mcp_oauth_families WHERE family_id = \
                 (SELECT family_id FROM mcp_oauth_refresh_tokens WHERE token_hash = $1) FOR UPDATE"
            ))
            .bind(&presented.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            let Some(row) = row else {
                tx.commit().await.map_err(err)?;
                return Ok(Rotation::Invalid);
            };
            let state = FamilyRow::from_row(&row)?;
            let outcome = match state.decide(presented, now, grace)? {
                Decision::Rotate(family) => {
                    sqlx::query(
                        "UPDATE mcp_oauth_families SET current_hash = $2, previous_hash = $3, \
                         previous_rotated_at = $4, previous_sealed = $5 WHERE family_id = $1",
                    )
                    .bind(&state.family_id)
                    .bind(&successor.0[..])
                    .bind(&presented.0[..])
                    .bind(db_time(now))
                    .bind(&sealed_successor)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    sqlx::query(
                        "INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
                    )
                    .bind(&successor.0[..])
                    .bind(&state.family_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    Rotation::Rotated(family)
                }
                Decision::Grace(family, sealed_successor) => Rotation::Grace {
                    family,
                    sealed_successor,
                },
                Decision::Reuse => {
                    sqlx::query(
                        "UPDATE mcp_oauth_families SET revoked_at = $2, \
                         keep_until = GREATEST(keep_until, $3) WHERE family_id = $1",
                    )
                    .bind(&state.family_id)
                    .bind(db_time(now))
                    .bind(db_time(now.saturating_add(REVOKED_KEEP_SECS)))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    reuse_detected(&state.family_id);
                    Rotation::Reused {
                        family_id: state.family_id.clone(),
                    }
                }
                Decision::Invalid => Rotation::Invalid,
            };
            tx.commit().await.map_err(err)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
        self.run(async {
            // A new row is a tombstone; an existing one keeps its first revocation time.
            sqlx::query(
                "INSERT INTO mcp_oauth_families (family_id, revoked_at, keep_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (family_id) DO UPDATE SET \
                 keep_until = CASE WHEN mcp_oauth_families.revoked_at IS NULL \
                              THEN GREATEST(mcp_oauth_families.keep_until, excluded.keep_until) \
                              ELSE mcp_oauth_families.keep_until END, \
                 revoked_at = COALESCE(mcp_oauth_families.revoked_at, excluded.revoked_at)",
            )
            .bind(family_id)
            .bind(db_time(now))
            .bind(db_time(now.saturating_add(REVOKED_KEEP_SECS)))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn family_of_refresh(
        &self,
        hash: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        self.run(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                super::family_columns!(),
                " FROM mcp_oauth_families WHERE family_id = \
                 (SELECT family_id FROM mcp_oauth_refresh_tokens WHERE token_hash = $1)"
            ))
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            match row {
                Some(row) => FamilyRow::from_row(&row)?.lookup(hash, now),
                None => Ok(None),
            }
        })
        .await
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(jti)
            .bind(db_time(expires_at))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
        self.run(async {
            let revoked: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM mcp_oauth_revoked_tokens WHERE jti = $1 AND expires_at >= $2) \
                 OR EXISTS (SELECT 1 FROM mcp_oauth_families WHERE family_id = $3 AND revoked_at IS NOT NULL)",
            )
            .bind(jti)
            .bind(db_time(now))
            .bind(family_of_jti(jti))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
            Ok(revoked)
        })
        .await
    }

    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError> {
        self.run(async {
            let scope: Option<String> = sqlx::query_scalar(
                "SELECT scope FROM mcp_oauth_consents WHERE subject = $1 AND client_id = $2",
            )
            .bind(subject)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            scope.map(|s| from_json(&s, "consent scope")).transpose()
        })
        .await
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &ScopeSet,
        now: u64,
    ) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_consents (subject, client_id, scope, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (subject, client_id) DO UPDATE SET \
                 scope = excluded.scope, updated_at = excluded.updated_at",
            )
            .bind(subject)
            .bind(client_id)
            .bind(to_json(scope, "consent scope")?)
            .bind(db_time(now))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn put_pending(&self, id: &str, pending: PendingAuthorization) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_pending (id_hash, record, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id_hash) DO UPDATE SET \
                 record = excluded.record, expires_at = excluded.expires_at",
            )
            .bind(pending_key(id))
            .bind(to_json(&pending, "pending request")?)
            .bind(db_time(pending.expires_at))
            .execute(&self.pool)
            .await
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn get_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.run(async {
            let record: Option<String> = sqlx::query_scalar(
                "SELECT record FROM mcp_oauth_pending WHERE id_hash = $1 AND expires_at > $2",
            )
            .bind(pending_key(id))
            .bind(db_time(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            record.map(|r| from_json(&r, "pending request")).transpose()
        })
        .await
    }

    async fn take_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.run(async {
            // One statement: of racing consent decisions, one gets the row.
            let row = sqlx::query(
                "DELETE FROM mcp_oauth_pending WHERE id_hash = $1 RETURNING record, expires_at",
            )
            .bind(pending_key(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            let Some(row) = row else {
                return Ok(None);
            };
            if col::<_, i64>(&row, "expires_at")? <= db_time(now) {
                return Ok(None);
            }
            Ok(Some(from_json(
                &col::<_, String>(&row, "record")?,
                "pending request",
            )?))
        })
        .await
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        self.run(async {
            let now = db_time(now);
            let mut tx = self.pool.begin().await.map_err(err)?;
            let mut removed = 0;
            for sql in [
                "DELETE FROM mcp_oauth_codes WHERE expires_at <= $1",
                "DELETE FROM mcp_oauth_pending WHERE expires_at <= $1",
                "DELETE FROM mcp_oauth_revoked_tokens WHERE expires_at < $1",
            ] {
                removed += sqlx::query(sql)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?
                    .rows_affected();
            }
            sqlx::query(
                "DELETE FROM mcp_oauth_refresh_tokens WHERE family_id IN \
                 (SELECT family_id FROM mcp_oauth_families WHERE keep_until <= $1)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            removed += sqlx::query("DELETE FROM mcp_oauth_families WHERE keep_until <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected();
            tx.commit().await.map_err(err)?;
            Ok(removed)
        })
        .await
    }

    async fn stats(&self, now: u64) -> Result<StoreStats, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT \
                 (SELECT COUNT(*) FROM mcp_oauth_clients) AS clients, \
                 (SELECT COUNT(*) FROM mcp_oauth_codes WHERE used_by IS NULL AND expires_at > $1) AS live_codes, \
                 (SELECT COUNT(*) FROM mcp_oauth_families WHERE record IS NOT NULL \
                    AND revoked_at IS NULL AND expires_at > $1) AS live_families, \
                 (SELECT COUNT(*) FROM mcp_oauth_revoked_tokens WHERE expires_at >= $1) AS revoked_tokens",
            )
            .bind(db_time(now))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
            Ok(StoreStats {
                clients: count_of(col(&row, "clients")?)?,
                live_codes: count_of(col(&row, "live_codes")?)?,
                live_families: count_of(col(&row, "live_families")?)?,
                revoked_tokens: count_of(col(&row, "revoked_tokens")?)?,
            })
        })
        .await
    }
}
