//! [`GrantStore`] on [`SqlStore`]: codes, refresh-token families, revocations, consents and
//! pending requests. The atomic steps are single statements or one transaction (see the
//! [module docs](super)).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::family::{Decision, FamilyRow, SELECT_FAMILY, reuse_detected};
use super::{
    Backend, REVOKED_KEEP_SECS, SqlStore, col, count_of, db_time, err, family_of_jti, from_json,
    pending_key, time_of, to_json,
};
use crate::scope::ScopeSet;
use crate::store::{
    AuthorizationCode, CodePeek, CodeRedeem, CodeRedemption, CodeTake, GrantStore, InitialGrant,
    KeyStore, PendingAuthorization, RateLimitStore, RefreshFamily, RefreshLookup, Rotation,
    SecretHash, StoreError, StoreStats,
};

/// How many rows one sweep statement removes at most.
pub(super) const SWEEP_BATCH: u64 = 500;

/// The sweep's statements: each deletes at most `$2` expired rows of one table (`$1` is now).
const SWEEPS: &[&str] = &[
    "DELETE FROM mcp_oauth_codes WHERE code_hash IN \
     (SELECT code_hash FROM mcp_oauth_codes WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM mcp_oauth_pending WHERE id_hash IN \
     (SELECT id_hash FROM mcp_oauth_pending WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM mcp_oauth_revoked_tokens WHERE jti IN \
     (SELECT jti FROM mcp_oauth_revoked_tokens WHERE expires_at < $1 LIMIT $2)",
    "DELETE FROM mcp_oauth_assertion_ids WHERE key IN \
     (SELECT key FROM mcp_oauth_assertion_ids WHERE expires_at < $1 LIMIT $2)",
    "DELETE FROM mcp_oauth_upstream_logins WHERE key IN \
     (SELECT key FROM mcp_oauth_upstream_logins WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM mcp_oauth_families WHERE family_id IN \
     (SELECT family_id FROM mcp_oauth_families WHERE keep_until <= $1 LIMIT $2)",
];

#[async_trait]
impl<DB> GrantStore for SqlStore<DB>
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
    fn rate_limit_store(&self) -> Option<&dyn RateLimitStore> {
        if DB::SHARES_RATE_LIMITS {
            Some(self)
        } else {
            None
        }
    }

    /// `true`, except for [`SqliteStore::in_memory`](crate::store::SqliteStore::in_memory).
    fn is_durable(&self) -> bool {
        self.durable
    }

    /// The store itself: a server on it keeps its signing keys here too, so they survive
    /// restarts (and, on PostgreSQL, every instance signs with the same ring).
    fn key_store(self: Arc<Self>) -> Option<Arc<dyn KeyStore>> {
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
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            if DB::rows_affected(&done) == 0 {
                return Err(StoreError::conflict("code exists"));
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
            let mut conn = self.writer.acquire().await.map_err(err::<DB>)?;
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
            .map_err(err::<DB>)?;
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
            .map_err(err::<DB>)?;
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
                .map_err(err::<DB>)?;
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
            let mut tx = self
                .writer
                .begin_with(DB::BEGIN_WRITE)
                .await
                .map_err(err::<DB>)?;
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
            .map_err(err::<DB>)?;
            if DB::rows_affected(&done) == 0 {
                // Dropping the transaction rolls it back.
                return Err(StoreError::conflict(format!(
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
                .map_err(err::<DB>)?;
            }
            tx.commit().await.map_err(err::<DB>)
        })
        .await
    }

    async fn peek_code(&self, hash: &SecretHash, now: u64) -> Result<CodePeek, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT used_by, record FROM mcp_oauth_codes WHERE code_hash = $1 AND expires_at > $2",
            )
            .bind(&hash.0[..])
            .bind(db_time(now))
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
            let Some(row) = row else {
                return Ok(CodePeek::NotFound);
            };
            let code = from_json(&col::<_, String>(&row, "record")?, "code")?;
            Ok(match col::<_, Option<String>>(&row, "used_by")? {
                Some(family_id) => CodePeek::Spent { family_id, code },
                None => CodePeek::Live(code),
            })
        })
        .await
    }

    async fn redeem_code(
        &self,
        hash: &SecretHash,
        redemption: CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        self.run(DB::redeem_code(self, hash, &redemption, now))
            .await
    }

    async fn claim_initial_grant(&self, family_id: &str) -> Result<bool, StoreError> {
        self.run(async {
            // One statement: of racing claims, one finds the sealed grant and drops it. A
            // rotated family keeps its successor's sealed copy (`previous_hash` is set).
            let done = sqlx::query(
                "UPDATE mcp_oauth_families SET previous_sealed = NULL WHERE family_id = $1 \
                 AND previous_hash IS NULL AND previous_sealed IS NOT NULL",
            )
            .bind(family_id)
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done) == 1)
        })
        .await
    }

    async fn initial_grant(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Option<InitialGrant>, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT record, previous_sealed FROM mcp_oauth_families WHERE family_id = $1 \
                 AND record IS NOT NULL AND revoked_at IS NULL AND previous_hash IS NULL \
                 AND previous_sealed IS NOT NULL AND expires_at > $2",
            )
            .bind(family_id)
            .bind(db_time(now))
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let family: RefreshFamily = from_json(&col::<_, String>(&row, "record")?, "family")?;
            if family.expires_at <= now {
                return Ok(None);
            }
            Ok(Some(InitialGrant {
                family,
                sealed_grant: col(&row, "previous_sealed")?,
            }))
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
            if let Some(done) = DB::rotate_refresh(
                self,
                presented,
                &successor,
                &sealed_successor,
                now,
                grace,
            )
            .await?
            {
                return Ok(done);
            }
            // No other writer (in this process or another) can rotate the family between our
            // read and our write: SQLite's BEGIN IMMEDIATE takes the write lock before the
            // read; PostgreSQL's FOR UPDATE locks the family row, so racing rotations queue
            // behind ours and then read what we wrote.
            let mut tx = self
                .writer
                .begin_with(DB::BEGIN_WRITE)
                .await
                .map_err(err::<DB>)?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT_FAMILY} {}",
                DB::LOCK_ROWS
            )))
            .bind(&presented.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(err::<DB>)?;
            let Some(row) = row else {
                tx.commit().await.map_err(err::<DB>)?;
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
                    .map_err(err::<DB>)?;
                    sqlx::query(
                        "INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
                    )
                    .bind(&successor.0[..])
                    .bind(&state.family_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err::<DB>)?;
                    Rotation::Rotated(family)
                }
                Decision::Grace(family, sealed_successor) => Rotation::Grace {
                    family,
                    sealed_successor,
                },
                Decision::Reuse => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE mcp_oauth_families SET revoked_at = $2, \
                         keep_until = {}(keep_until, $3) WHERE family_id = $1",
                        DB::GREATEST
                    )))
                    .bind(&state.family_id)
                    .bind(db_time(now))
                    .bind(db_time(now.saturating_add(REVOKED_KEEP_SECS)))
                    .execute(&mut *tx)
                    .await
                    .map_err(err::<DB>)?;
                    reuse_detected(&state.family_id);
                    Rotation::Reused {
                        family_id: state.family_id.clone(),
                    }
                }
                Decision::Invalid => Rotation::Invalid,
            };
            tx.commit().await.map_err(err::<DB>)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
        self.run(async {
            // A new row is a tombstone; an existing one keeps its first revocation time.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO mcp_oauth_families (family_id, revoked_at, keep_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (family_id) DO UPDATE SET \
                 keep_until = CASE WHEN mcp_oauth_families.revoked_at IS NULL \
                              THEN {}(mcp_oauth_families.keep_until, excluded.keep_until) \
                              ELSE mcp_oauth_families.keep_until END, \
                 revoked_at = COALESCE(mcp_oauth_families.revoked_at, excluded.revoked_at)",
                DB::GREATEST
            )))
            .bind(family_id)
            .bind(db_time(now))
            .bind(db_time(now.saturating_add(REVOKED_KEEP_SECS)))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
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
            let row = sqlx::query(SELECT_FAMILY)
                .bind(&hash.0[..])
                .fetch_optional(&self.reader)
                .await
                .map_err(err::<DB>)?;
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
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(())
        })
        .await
    }

    async fn put_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
        record: Vec<u8>,
        now: u64,
    ) -> Result<(), StoreError> {
        let key = crate::store::upstream_tokens_key(provider, subject).to_hex();
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_upstream_tokens (key, record, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
            )
            .bind(key.as_str())
            .bind(record.as_slice())
            .bind(db_time(now))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(())
        })
        .await
    }

    async fn get_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = crate::store::upstream_tokens_key(provider, subject).to_hex();
        self.run(async {
            let record: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT record FROM mcp_oauth_upstream_tokens WHERE key = $1")
                    .bind(key.as_str())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(err::<DB>)?;
            Ok(record)
        })
        .await
    }

    async fn delete_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let key = crate::store::upstream_tokens_key(provider, subject).to_hex();
        self.run(async {
            let done = sqlx::query("DELETE FROM mcp_oauth_upstream_tokens WHERE key = $1")
                .bind(key.as_str())
                .execute(&self.writer)
                .await
                .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done) > 0)
        })
        .await
    }

    async fn record_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = crate::store::assertion_id_key(client_id, jti).to_hex();
        self.run(async {
            // One statement: a new id is inserted; a recorded one is taken over only when its
            // record has expired; a live one changes nothing (0 rows: a replay).
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_assertion_ids (key, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE mcp_oauth_assertion_ids.expires_at < $3",
            )
            .bind(key.as_str())
            .bind(db_time(expires_at))
            .bind(db_time(now))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done) == 1)
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
            .fetch_one(&self.reader)
            .await
            .map_err(err::<DB>)?;
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
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
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
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
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
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
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
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
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
            .fetch_optional(&self.writer)
            .await
            .map_err(err::<DB>)?;
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

    async fn put_upstream_login(
        &self,
        key: &SecretHash,
        login: crate::store::UpstreamLogin,
    ) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO mcp_oauth_upstream_logins (key, record, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
            )
            .bind(key.to_hex())
            .bind(login.payload.as_str())
            .bind(db_time(login.expires_at))
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            Ok(())
        })
        .await
    }

    async fn take_upstream_login(
        &self,
        key: &SecretHash,
        now: u64,
    ) -> Result<Option<crate::store::UpstreamLogin>, StoreError> {
        self.run(async {
            // One statement: of racing callbacks (on any instance), one gets the row.
            let row = sqlx::query(
                "DELETE FROM mcp_oauth_upstream_logins WHERE key = $1 RETURNING record, expires_at",
            )
            .bind(key.to_hex())
            .fetch_optional(&self.writer)
            .await
            .map_err(err::<DB>)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let expires_at = col::<_, i64>(&row, "expires_at")?;
            if expires_at <= db_time(now) {
                return Ok(None);
            }
            Ok(Some(crate::store::UpstreamLogin {
                payload: col::<_, String>(&row, "record")?,
                expires_at: time_of(expires_at, "upstream login expires_at")?,
            }))
        })
        .await
    }

    /// Removes what expired in bounded batches (500 rows by default,
    /// [`with_sweep_batch`](SqlStore::with_sweep_batch)), each its own statement and so its
    /// own short transaction, as the Redis store does: a sweep after a long outage never
    /// holds locks (or SQLite's write lock) on everything at once, and the token endpoint's
    /// writes slip in between the batches. A family goes with its refresh tokens in one
    /// statement (`ON DELETE CASCADE`).
    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        let now = db_time(now);
        let mut removed = 0;
        for sql in SWEEPS {
            loop {
                let done = self
                    .run(async {
                        sqlx::query(*sql)
                            .bind(now)
                            .bind(db_time(self.sweep_batch))
                            .execute(&self.writer)
                            .await
                            .map_err(err::<DB>)
                    })
                    .await?;
                let n = DB::rows_affected(&done);
                removed += n;
                if n < self.sweep_batch {
                    break;
                }
            }
        }
        Ok(removed)
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
            .fetch_one(&self.reader)
            .await
            .map_err(err::<DB>)?;
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
