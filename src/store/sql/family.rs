//! A refresh-token family as the SQL stores read it: the row, and the pure decisions
//! (lookup, rotation) taken on it inside the caller's statement or transaction.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{col, from_json, hash_of, time_of};
use crate::store::{RefreshFamily, RefreshLookup, RefreshTokenState, SecretHash, StoreError};

/// The state of a family row, as rotation sees it.
pub(super) struct FamilyRow {
    pub(super) family_id: String,
    record: Option<String>,
    revoked_at: Option<i64>,
    current_hash: Option<Vec<u8>>,
    previous_hash: Option<Vec<u8>>,
    previous_rotated_at: Option<i64>,
    previous_sealed: Option<Vec<u8>>,
}

/// The family that refresh token `$1` belongs to, with the columns [`FamilyRow::from_row`]
/// reads.
pub(super) const SELECT_FAMILY: &str = "SELECT family_id, record, revoked_at, current_hash, previous_hash, \
     previous_rotated_at, previous_sealed FROM mcp_oauth_families WHERE family_id = \
     (SELECT family_id FROM mcp_oauth_refresh_tokens WHERE token_hash = $1)";

impl FamilyRow {
    pub(super) fn from_row<R>(row: &R) -> Result<Self, StoreError>
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
    pub(super) fn lookup(
        &self,
        presented: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        let Some(family) = self.active(now)? else {
            return Ok(None);
        };
        let mut state = RefreshTokenState::Retired;
        if let Some(current) = &self.current_hash
            && hash_of(current, "current refresh hash")?.ct_eq(presented)
        {
            state = RefreshTokenState::Current;
        }
        if state == RefreshTokenState::Retired
            && let (Some(prev), Some(at)) = (&self.previous_hash, self.previous_rotated_at)
            && hash_of(prev, "previous refresh hash")?.ct_eq(presented)
        {
            state = RefreshTokenState::Previous {
                rotated_at: time_of(at, "previous_rotated_at")?,
            };
        }
        Ok(Some(RefreshLookup { family, state }))
    }

    /// What presenting `presented` at `now` does to this family (see
    /// [`Rotation`](crate::store::Rotation)).
    pub(super) fn decide(
        &self,
        presented: &SecretHash,
        now: u64,
        grace: u64,
    ) -> Result<Decision, StoreError> {
        let Some(family) = self.active(now)? else {
            return Ok(Decision::Invalid);
        };
        if let Some(current) = &self.current_hash
            && hash_of(current, "current refresh hash")?.ct_eq(presented)
        {
            return Ok(Decision::Rotate(family));
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
pub(super) enum Decision {
    /// The presented token is current: rotate.
    Rotate(RefreshFamily),
    /// The presented token is the previous one, inside the grace window.
    Grace(RefreshFamily, Vec<u8>),
    /// An older token of a live family: revoke the family.
    Reuse,
    /// Unknown, expired or revoked.
    Invalid,
}

pub(super) fn reuse_detected(family_id: &str) {
    tracing::warn!(
        target: "mcp_oauth::security",
        family = %family_id,
        "refresh token reuse detected; family revoked"
    );
}
