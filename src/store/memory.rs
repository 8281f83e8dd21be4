mod retention;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AuthorizationCode, Client, ClientStore, CodeTake, GrantStore, PendingAuthorization,
    RefreshFamily, Rotation, SecretHash, StoreError, StoreStats,
};
use crate::scope::ScopeSet;

/// How long a revoked family's tombstone outlives an unknown family (seconds).
const TOMBSTONE_SECS: u64 = 24 * 3600;

/// The in-memory store: the default, for one instance. Everything is lost on restart, so
/// registered clients must register again; use a durable store for anything that must
/// survive one.
///
/// All state sits behind one mutex, so every trait method is trivially atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    pub(super) keys: super::keys::MemoryKeys,
    pub(super) rate_limits: super::rate_limit::MemoryRateLimits,
}

/// Most pending authorization requests kept; beyond it the oldest is dropped (its user sees
/// "this sign-in has expired").
pub(crate) const MAX_PENDING: usize = 10_000;
/// Most remembered consents kept; beyond it one is forgotten (its user is asked again).
pub(crate) const MAX_CONSENTS: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, Client>,
    codes: HashMap<SecretHash, CodeEntry>,
    families: HashMap<String, FamilyState>,
    refresh_index: HashMap<SecretHash, String>,
    revoked_jtis: HashMap<String, u64>,
    consents: HashMap<(String, String), ScopeSet>,
    pending: HashMap<String, PendingAuthorization>,
}

#[derive(Debug)]
struct CodeEntry {
    code: AuthorizationCode,
    used_by: Option<String>,
}

#[derive(Debug)]
struct FamilyState {
    family: Option<RefreshFamily>,
    revoked_at: Option<u64>,
    current: Option<SecretHash>,
    previous: Option<Previous>,
    hashes: Vec<SecretHash>,
}

#[derive(Debug)]
struct Previous {
    hash: SecretHash,
    rotated_at: u64,
    sealed_successor: Vec<u8>,
}

impl FamilyState {
    fn active(&self, now: u64) -> Option<&RefreshFamily> {
        if self.revoked_at.is_some() {
            return None;
        }
        self.family.as_ref().filter(|f| f.expires_at > now)
    }

    fn keep_until(&self) -> u64 {
        // A revoked family must be remembered as long as any access token it issued could
        // still be presented: up to a day after revocation (the longest access lifetime),
        // even when the family itself expires sooner.
        match (&self.family, self.revoked_at) {
            (Some(f), Some(at)) => f.expires_at.max(at + TOMBSTONE_SECS),
            (Some(f), None) => f.expires_at,
            (None, Some(at)) => at + TOMBSTONE_SECS,
            (None, None) => 0,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (each method
        // mutates in one step), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ClientStore for MemoryStore {
    async fn insert_client(&self, client: Client) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.clients.contains_key(&client.client_id) {
            return Err(StoreError::Conflict(format!(
                "client {} exists",
                client.client_id
            )));
        }
        s.clients.insert(client.client_id.clone(), client);
        Ok(())
    }

    async fn upsert_client(&self, client: Client) -> Result<(), StoreError> {
        self.lock().clients.insert(client.client_id.clone(), client);
        Ok(())
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        Ok(self.lock().clients.get(client_id).cloned())
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().clients.remove(client_id).is_some())
    }

    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError> {
        if let Some(c) = self.lock().clients.get_mut(client_id) {
            c.last_used_at = now;
        }
        Ok(())
    }

    async fn count_clients(&self) -> Result<u64, StoreError> {
        Ok(self.lock().clients.len() as u64)
    }

    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        Ok(retention::sweep_idle_clients(
            &mut self.lock(),
            idle_before,
            now,
        ))
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn put_code(&self, hash: SecretHash, code: AuthorizationCode) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.codes.contains_key(&hash) {
            return Err(StoreError::Conflict("code exists".to_owned()));
        }
        s.codes.insert(
            hash,
            CodeEntry {
                code,
                used_by: None,
            },
        );
        Ok(())
    }

    async fn take_code(
        &self,
        hash: &SecretHash,
        family_id: &str,
        now: u64,
    ) -> Result<CodeTake, StoreError> {
        let mut s = self.lock();
        let Some(entry) = s.codes.get_mut(hash) else {
            return Ok(CodeTake::NotFound);
        };
        if entry.code.expires_at <= now {
            s.codes.remove(hash);
            return Ok(CodeTake::NotFound);
        }
        match &entry.used_by {
            Some(family) => Ok(CodeTake::Replayed {
                family_id: family.clone(),
            }),
            None => {
                entry.used_by = Some(family_id.to_owned());
                Ok(CodeTake::Taken(entry.code.clone()))
            }
        }
    }

    async fn create_family(
        &self,
        family: RefreshFamily,
        refresh: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.families.contains_key(&family.family_id) {
            return Err(StoreError::Conflict(format!(
                "family {} exists or was revoked",
                family.family_id
            )));
        }
        let id = family.family_id.clone();
        if let Some(h) = refresh {
            s.refresh_index.insert(h, id.clone());
        }
        s.families.insert(
            id,
            FamilyState {
                family: Some(family),
                revoked_at: None,
                current: refresh,
                previous: None,
                hashes: refresh.into_iter().collect(),
            },
        );
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        successor: SecretHash,
        sealed_successor: Vec<u8>,
        now: u64,
        grace: u64,
    ) -> Result<Rotation, StoreError> {
        let mut s = self.lock();
        let Some(family_id) = s.refresh_index.get(presented).cloned() else {
            return Ok(Rotation::Invalid);
        };
        let Some(state) = s.families.get_mut(&family_id) else {
            return Ok(Rotation::Invalid);
        };
        let Some(family) = state.active(now).cloned() else {
            return Ok(Rotation::Invalid);
        };
        if state.current.as_ref().is_some_and(|c| c.ct_eq(presented)) {
            state.previous = Some(Previous {
                hash: *presented,
                rotated_at: now,
                sealed_successor,
            });
            state.current = Some(successor);
            state.hashes.push(successor);
            s.refresh_index.insert(successor, family_id);
            return Ok(Rotation::Rotated(family));
        }
        if let Some(prev) = &state.previous {
            if prev.hash.ct_eq(presented) && now <= prev.rotated_at.saturating_add(grace) {
                return Ok(Rotation::Grace {
                    family,
                    sealed_successor: prev.sealed_successor.clone(),
                });
            }
        }
        // An older token of a live family: someone replayed it. Revoke everything.
        state.revoked_at = Some(now);
        tracing::warn!(target: "mcp_oauth::security", family = %family_id, "refresh token reuse detected; family revoked");
        Ok(Rotation::Reused { family_id })
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
        let mut s = self.lock();
        let state = s
            .families
            .entry(family_id.to_owned())
            .or_insert_with(|| FamilyState {
                family: None,
                revoked_at: None,
                current: None,
                previous: None,
                hashes: Vec::new(),
            });
        state.revoked_at.get_or_insert(now);
        Ok(())
    }

    async fn family_of_refresh(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<RefreshFamily>, StoreError> {
        let s = self.lock();
        let now = crate::util::now();
        Ok(s.refresh_index
            .get(hash)
            .and_then(|id| s.families.get(id))
            .and_then(|f| f.active(now))
            .cloned())
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.lock().revoked_jtis.insert(jti.to_owned(), expires_at);
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
        let s = self.lock();
        if s.revoked_jtis.get(jti).is_some_and(|exp| *exp >= now) {
            return Ok(true);
        }
        let family = jti.split_once('.').map_or(jti, |(f, _)| f);
        Ok(s.families
            .get(family)
            .is_some_and(|f| f.revoked_at.is_some()))
    }

    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError> {
        Ok(self
            .lock()
            .consents
            .get(&(subject.to_owned(), client_id.to_owned()))
            .cloned())
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &ScopeSet,
        _now: u64,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        let key = (subject.to_owned(), client_id.to_owned());
        // Bounded: forgetting a remembered consent only means asking again.
        if !s.consents.contains_key(&key)
            && s.consents.len() >= MAX_CONSENTS
            && let Some(victim) = s.consents.keys().next().cloned()
        {
            s.consents.remove(&victim);
        }
        s.consents.insert(key, scope.clone());
        Ok(())
    }

    async fn put_pending(&self, id: &str, pending: PendingAuthorization) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.pending.contains_key(id) && s.pending.len() >= MAX_PENDING {
            // Bounded: drop the expired, then the oldest (soonest to expire) request.
            let now = crate::util::now();
            s.pending.retain(|_, p| p.expires_at > now);
            if s.pending.len() >= MAX_PENDING
                && let Some(oldest) = s
                    .pending
                    .iter()
                    .min_by_key(|(_, p)| p.expires_at)
                    .map(|(k, _)| k.clone())
            {
                s.pending.remove(&oldest);
            }
        }
        s.pending.insert(id.to_owned(), pending);
        Ok(())
    }

    async fn get_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        Ok(self
            .lock()
            .pending
            .get(id)
            .filter(|p| p.expires_at > now)
            .cloned())
    }

    async fn take_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        Ok(self
            .lock()
            .pending
            .remove(id)
            .filter(|p| p.expires_at > now))
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        let mut s = self.lock();
        let before = s.codes.len() + s.pending.len() + s.revoked_jtis.len() + s.families.len();
        s.codes.retain(|_, c| c.code.expires_at > now);
        s.pending.retain(|_, p| p.expires_at > now);
        s.revoked_jtis.retain(|_, exp| *exp >= now);
        let dead: Vec<String> = s
            .families
            .iter()
            .filter(|(_, f)| f.keep_until() <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            if let Some(f) = s.families.remove(&id) {
                for h in f.hashes {
                    s.refresh_index.remove(&h);
                }
            }
        }
        let after = s.codes.len() + s.pending.len() + s.revoked_jtis.len() + s.families.len();
        Ok((before - after) as u64)
    }

    async fn stats(&self, now: u64) -> Result<StoreStats, StoreError> {
        let s = self.lock();
        Ok(StoreStats {
            clients: s.clients.len() as u64,
            live_codes: s
                .codes
                .values()
                .filter(|c| c.used_by.is_none() && c.code.expires_at > now)
                .count() as u64,
            live_families: s
                .families
                .values()
                .filter(|f| f.active(now).is_some())
                .count() as u64,
            revoked_tokens: s.revoked_jtis.values().filter(|exp| **exp >= now).count() as u64,
        })
    }
}
