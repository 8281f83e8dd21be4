//! What the SQL stores share for [`KeyStore`](crate::store::KeyStore): the columns and their
//! decoding.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{col, time_of};
use crate::keys::SigningAlgorithm;
use crate::store::{PrivateKey, StoreError, StoredKey};

/// The columns [`stored_key_of`] reads, for `SELECT`s.
pub(super) const KEY_COLUMNS: &str = "kid, alg, private_key, created_at, retired_at, publish_until";

/// A key from its row.
pub(super) fn stored_key_of<R>(row: &R) -> Result<StoredKey, StoreError>
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
        .ok_or_else(|| StoreError::Corrupt(format!("key {kid}: unknown algorithm {alg:?}")))?;
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
