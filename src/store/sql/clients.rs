//! [`ClientStore`] on [`SqlStore`]: one row per client, the record as JSON beside the columns
//! that queries filter on.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, SqlStore, client_of, col, count_of, db_time, err, to_json};
use crate::store::{Client, ClientFingerprint, ClientSource, ClientStore, StoreError};

fn source_str(s: ClientSource) -> &'static str {
    match s {
        ClientSource::Dynamic => "dynamic",
        ClientSource::Static => "static",
        ClientSource::MetadataDocument => "metadata_document",
    }
}

impl<DB> SqlStore<DB>
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
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> bool: Decode<'a, DB> + Type<DB>,
{
    /// Inserts a new client, filed under `fingerprint` when there is one.
    async fn insert_filed(
        &self,
        client: Client,
        fingerprint: Option<String>,
    ) -> Result<(), StoreError> {
        self.run(async {
            let done = sqlx::query(
                "INSERT INTO mcp_oauth_clients \
                 (client_id, record, source, issued_at, last_used_at, fingerprint) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (client_id) DO NOTHING",
            )
            .bind(&client.client_id)
            .bind(to_json(&client, "client")?)
            .bind(source_str(client.source))
            .bind(db_time(client.issued_at))
            .bind(db_time(client.last_used_at))
            .bind(fingerprint)
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
            if DB::rows_affected(&done) == 0 {
                return Err(StoreError::conflict(format!(
                    "client {} exists",
                    client.client_id
                )));
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl<DB> ClientStore for SqlStore<DB>
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
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> bool: Decode<'a, DB> + Type<DB>,
{
    async fn insert_client(&self, client: Client) -> Result<(), StoreError> {
        self.insert_filed(client, None).await
    }

    async fn insert_client_with_fingerprint(
        &self,
        client: Client,
        fingerprint: &ClientFingerprint,
    ) -> Result<(), StoreError> {
        self.insert_filed(client, Some(fingerprint.to_hex())).await
    }

    async fn find_client_by_fingerprint(
        &self,
        fingerprint: &ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT record, last_used_at FROM mcp_oauth_clients \
                 WHERE fingerprint = $1 AND source = 'dynamic' \
                 ORDER BY issued_at DESC LIMIT 1",
            )
            .bind(fingerprint.to_hex())
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
            row.map(|r| client_of(&col::<_, String>(&r, "record")?, col(&r, "last_used_at")?))
                .transpose()
        })
        .await
    }

    async fn sweep_unused_clients(
        &self,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        DB::sweep_unused_clients(self, registered_before, now).await
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
            .execute(&self.writer)
            .await
            .map_err(err::<DB>)?;
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
            .fetch_optional(&self.reader)
            .await
            .map_err(err::<DB>)?;
            row.map(|r| client_of(&col::<_, String>(&r, "record")?, col(&r, "last_used_at")?))
                .transpose()
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        self.run(async {
            let done = sqlx::query("DELETE FROM mcp_oauth_clients WHERE client_id = $1")
                .bind(client_id)
                .execute(&self.writer)
                .await
                .map_err(err::<DB>)?;
            Ok(DB::rows_affected(&done) > 0)
        })
        .await
    }

    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("UPDATE mcp_oauth_clients SET last_used_at = $2 WHERE client_id = $1")
                .bind(client_id)
                .bind(db_time(now))
                .execute(&self.writer)
                .await
                .map_err(err::<DB>)?;
            Ok(())
        })
        .await
    }

    async fn count_clients(&self) -> Result<u64, StoreError> {
        self.run(async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mcp_oauth_clients")
                .fetch_one(&self.reader)
                .await
                .map_err(err::<DB>)?;
            count_of(n)
        })
        .await
    }

    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        DB::sweep_idle_clients(self, idle_before, now).await
    }
}
