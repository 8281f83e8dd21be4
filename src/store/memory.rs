mod retention;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AuthorizationCode, Client, ClientFingerprint, ClientStore, CodePeek, CodeRedeem,
    CodeRedemption, CodeTake, GrantStore, InitialGrant, PendingAuthorization, RefreshFamily,
    RefreshLookup, RefreshTokenState, Rotation, SecretHash, StoreError, StoreStats,
};
use crate::scope::ScopeSet;

/// How long a revoked family's tombstone outlives an unknown family (seconds).
const TOMBSTONE_SECS: u64 = 24 * 3600 + super::REVOCATION_HORIZON_SLACK;

/// The in-memory store: the default, for one instance. Everything is lost on restart, so
/// registered clients must register again (and an authorization server on it signs with a
/// key generated per process); use a durable store for anything that must survive one.
///
/// All state sits behind one mutex, so every trait method is trivially atomic.
///
/// # Bounded memory
///
/// Every map has a cap ([`MemoryLimits`], sane defaults), so no amount of unauthenticated
/// traffic grows the process without bound. When a map is full, expired records are dropped
/// first; if it is still full:
///
/// - **pending authorization requests** (created by anyone who can reach `/authorize`) and
///   **authorization codes**: the one closest to expiry is evicted (its user starts again);
///   refusing instead would let a flood lock everyone out until the flood's records expire;
/// - **remembered consents**: the least recently updated is forgotten (its user is asked
///   again);
/// - **clients** (dynamic registration) and **refresh families**: the new one is refused
///   ([`StoreError::Unavailable`], answered `503`): evicting would silently log users out
///   or break registered clients;
/// - **refresh families of one user and client**: at most
///   [`families_per_subject_client`](MemoryLimits::families_per_subject_client) live at
///   once; a new grant past it **revokes that pair's oldest family** (the user's oldest
///   sign-in with that client has to sign in again) instead of being refused. So one
///   account that can sign in over and over cannot fill the store-wide cap above and lock
///   everyone else out;
/// - **revoked access tokens**: the new revocation is refused (`503`, the client retries):
///   forgetting a revocation would make a revoked token work again. Revoking a family is
///   never refused.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    limits: MemoryLimits,
    pub(super) keys: super::keys::MemoryKeys,
    pub(super) rate_limits: super::rate_limit::MemoryRateLimits,
}

/// The caps of a [`MemoryStore`]'s maps; see [its docs](MemoryStore#bounded-memory) for what
/// happens at a cap.
///
/// ```
/// use mcp_oauth::store::{MemoryLimits, MemoryStore};
///
/// let mut limits = MemoryLimits::default();
/// limits.pending = 1_000;
/// let store = MemoryStore::with_limits(limits);
/// # let _ = store;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryLimits {
    /// Registered clients (default 50,000; new registrations are refused at the cap).
    pub clients: usize,
    /// Authorization codes, redeemed ones included until they expire (default 10,000; the
    /// one closest to expiry is evicted).
    pub codes: usize,
    /// Pending authorization requests (default 10,000; the one closest to expiry is
    /// evicted).
    pub pending: usize,
    /// Refresh families, tombstones excluded (default 100,000; new grants are refused).
    pub families: usize,
    /// Live refresh families of one (subject, client) pair (default 100; a new grant
    /// revokes the pair's oldest family). At least 1.
    pub families_per_subject_client: usize,
    /// Revoked access-token ids (default 100,000; new revocations are refused).
    pub revoked_tokens: usize,
    /// Remembered consents (default 50,000; the least recently updated is forgotten).
    pub consents: usize,
    /// Recorded client-assertion ids (`private_key_jwt`; default 100,000; when full of live
    /// ones, new assertions are refused with `503` rather than an id forgotten).
    pub assertion_ids: usize,
    /// Kept upstream tokens, one record per (provider, subject) (default 50,000; when full,
    /// a new user's tokens are refused with `503` rather than another's forgotten).
    pub upstream_tokens: usize,
    /// Upstream logins in progress and finished ones awaiting pickup
    /// ([`UpstreamLogin`](super::UpstreamLogin); default 20,000; when full of live ones, new
    /// sign-ins are refused with a `503` page).
    pub upstream_logins: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            clients: 50_000,
            codes: 10_000,
            pending: 10_000,
            families: 100_000,
            families_per_subject_client: 100,
            revoked_tokens: 100_000,
            consents: 50_000,
            assertion_ids: 100_000,
            upstream_tokens: 50_000,
            upstream_logins: 20_000,
        }
    }
}

/// `Unavailable` for a full map.
fn full(what: &str) -> StoreError {
    tracing::warn!(target: "mcp_oauth::store", map = what, "memory store full; refusing a new record");
    StoreError::unavailable(format!("memory store: too many {what}"))
}

/// Removes the entry with the smallest `order` key from `map`.
fn evict_min<K: Clone + Eq + std::hash::Hash, V, O: Ord>(
    map: &mut HashMap<K, V>,
    order: impl Fn(&V) -> O,
) {
    if let Some(k) = map
        .iter()
        .min_by_key(|(_, v)| order(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, Client>,
    codes: HashMap<SecretHash, CodeEntry>,
    families: HashMap<String, FamilyState>,
    /// The families of each (subject, client), oldest first (revoked and expired ones are
    /// dropped lazily).
    grant_families: HashMap<(String, String), Vec<String>>,
    refresh_index: HashMap<SecretHash, String>,
    revoked_jtis: HashMap<String, u64>,
    /// Client-assertion ids ([`super::assertion_id_key`]) and until when they are kept.
    assertion_ids: HashMap<SecretHash, u64>,
    /// Sealed upstream tokens ([`super::upstream_tokens_key`]).
    upstream_tokens: HashMap<SecretHash, Vec<u8>>,
    /// Scope and when it was last updated.
    consents: HashMap<(String, String), (ScopeSet, u64)>,
    pending: HashMap<String, PendingAuthorization>,
    /// Upstream logins in progress ([`super::UpstreamLogin`]), by the hash of their handle.
    upstream_logins: HashMap<SecretHash, super::UpstreamLogin>,
    /// The newest client filed under each registration fingerprint (entries whose client
    /// is gone are dropped by the client sweeps and by lookups).
    fingerprints: HashMap<ClientFingerprint, String>,
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
    /// The sealed first grant ([`CodeRedemption::sealed_grant`]), until the first rotation.
    initial_sealed: Option<Vec<u8>>,
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
    /// An empty store with the default [`MemoryLimits`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with these caps.
    #[must_use]
    pub fn with_limits(limits: MemoryLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Creates a family under the caller's lock (see [`GrantStore::create_family`]).
    fn create_family_locked(
        &self,
        s: &mut State,
        family: RefreshFamily,
        refresh: Option<SecretHash>,
        initial_sealed: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if s.families.contains_key(&family.family_id) {
            return Err(StoreError::conflict(format!(
                "family {} exists or was revoked",
                family.family_id
            )));
        }
        let now = crate::util::now();
        cap_grant_families(
            s,
            &family,
            self.limits.families_per_subject_client.max(1),
            now,
        );
        if s.families.len() >= self.limits.families {
            sweep_families(s, now);
            // Tombstones (bounded by the codes they stand for) do not count against the cap.
            let live = s.families.values().filter(|f| f.family.is_some()).count();
            if live >= self.limits.families {
                return Err(full("refresh families"));
            }
        }
        let id = family.family_id.clone();
        if let Some(h) = refresh {
            s.refresh_index.insert(h, id.clone());
        }
        s.grant_families
            .entry((family.subject.clone(), family.client_id.clone()))
            .or_default()
            .push(id.clone());
        s.families.insert(
            id,
            FamilyState {
                family: Some(family),
                revoked_at: None,
                current: refresh,
                previous: None,
                hashes: refresh.into_iter().collect(),
                initial_sealed,
            },
        );
        Ok(())
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
            return Err(StoreError::conflict(format!(
                "client {} exists",
                client.client_id
            )));
        }
        if s.clients.len() >= self.limits.clients {
            return Err(full("clients"));
        }
        s.clients.insert(client.client_id.clone(), client);
        Ok(())
    }

    async fn upsert_client(&self, client: Client) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.clients.contains_key(&client.client_id) && s.clients.len() >= self.limits.clients {
            return Err(full("clients"));
        }
        s.clients.insert(client.client_id.clone(), client);
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

    async fn insert_client_with_fingerprint(
        &self,
        client: Client,
        fingerprint: &ClientFingerprint,
    ) -> Result<(), StoreError> {
        let id = client.client_id.clone();
        let mut s = self.lock();
        if s.clients.contains_key(&id) {
            return Err(StoreError::conflict(format!("client {id} exists")));
        }
        if s.clients.len() >= self.limits.clients {
            return Err(full("clients"));
        }
        s.clients.insert(id.clone(), client);
        s.fingerprints.insert(*fingerprint, id);
        Ok(())
    }

    async fn find_client_by_fingerprint(
        &self,
        fingerprint: &ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        let mut s = self.lock();
        let Some(id) = s.fingerprints.get(fingerprint) else {
            return Ok(None);
        };
        let found = s.clients.get(id).cloned();
        if found.is_none() {
            s.fingerprints.remove(fingerprint);
        }
        Ok(found)
    }

    async fn sweep_unused_clients(
        &self,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        Ok(retention::sweep_unused_clients(
            &mut self.lock(),
            registered_before,
            now,
        ))
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    /// `false`: everything is gone when the process ends, so a server on this store signs
    /// with a key generated per process (and hands out no [`key_store`](Self::key_store)).
    fn is_durable(&self) -> bool {
        false
    }

    async fn put_code(&self, hash: SecretHash, code: AuthorizationCode) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.codes.contains_key(&hash) {
            return Err(StoreError::conflict("code exists"));
        }
        if s.codes.len() >= self.limits.codes {
            let now = crate::util::now();
            s.codes.retain(|_, c| c.code.expires_at > now);
            if s.codes.len() >= self.limits.codes {
                evict_min(&mut s.codes, |c| c.code.expires_at);
            }
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
                code: entry.code.clone(),
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
        self.create_family_locked(&mut s, family, refresh, None)
    }

    async fn peek_code(&self, hash: &SecretHash, now: u64) -> Result<CodePeek, StoreError> {
        let s = self.lock();
        Ok(match s.codes.get(hash) {
            Some(entry) if entry.code.expires_at > now => match &entry.used_by {
                Some(family_id) => CodePeek::Spent {
                    family_id: family_id.clone(),
                    code: entry.code.clone(),
                },
                None => CodePeek::Live(entry.code.clone()),
            },
            _ => CodePeek::NotFound,
        })
    }

    async fn redeem_code(
        &self,
        hash: &SecretHash,
        redemption: CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        let mut s = self.lock();
        let Some(entry) = s.codes.get(hash) else {
            return Ok(CodeRedeem::NotFound);
        };
        if entry.code.expires_at <= now {
            s.codes.remove(hash);
            return Ok(CodeRedeem::NotFound);
        }
        if let Some(family_id) = &entry.used_by {
            return Ok(CodeRedeem::Spent {
                family_id: family_id.clone(),
                code: entry.code.clone(),
            });
        }
        // Under the one lock: the family first (it may be refused), then the code is spent.
        let family_id = redemption.family.family_id.clone();
        self.create_family_locked(
            &mut s,
            redemption.family,
            redemption.refresh,
            Some(redemption.sealed_grant),
        )?;
        if let Some(entry) = s.codes.get_mut(hash) {
            entry.used_by = Some(family_id);
        }
        Ok(CodeRedeem::Redeemed)
    }

    async fn claim_initial_grant(&self, family_id: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        Ok(s.families
            .get_mut(family_id)
            .and_then(|f| f.initial_sealed.take())
            .is_some())
    }

    async fn initial_grant(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Option<InitialGrant>, StoreError> {
        let s = self.lock();
        let Some(state) = s.families.get(family_id) else {
            return Ok(None);
        };
        Ok(
            match (state.active(now), &state.previous, &state.initial_sealed) {
                (Some(family), None, Some(sealed)) => Some(InitialGrant {
                    family: family.clone(),
                    sealed_grant: sealed.clone(),
                }),
                _ => None,
            },
        )
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
            state.initial_sealed = None;
            state.hashes.push(successor);
            s.refresh_index.insert(successor, family_id);
            return Ok(Rotation::Rotated(family));
        }
        if let Some(prev) = &state.previous
            && prev.hash.ct_eq(presented)
            && now <= prev.rotated_at.saturating_add(grace)
        {
            return Ok(Rotation::Grace {
                family,
                sealed_successor: prev.sealed_successor.clone(),
            });
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
                initial_sealed: None,
            });
        state.revoked_at.get_or_insert(now);
        Ok(())
    }

    async fn family_of_refresh(
        &self,
        hash: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        let s = self.lock();
        let Some(state) = s.refresh_index.get(hash).and_then(|id| s.families.get(id)) else {
            return Ok(None);
        };
        let Some(family) = state.active(now) else {
            return Ok(None);
        };
        let token_state = if state.current.as_ref().is_some_and(|c| c.ct_eq(hash)) {
            RefreshTokenState::Current
        } else {
            match &state.previous {
                Some(p) if p.hash.ct_eq(hash) => RefreshTokenState::Previous {
                    rotated_at: p.rotated_at,
                },
                _ => RefreshTokenState::Retired,
            }
        };
        Ok(Some(RefreshLookup {
            family: family.clone(),
            state: token_state,
        }))
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.revoked_jtis.contains_key(jti) && s.revoked_jtis.len() >= self.limits.revoked_tokens {
            let now = crate::util::now();
            s.revoked_jtis.retain(|_, exp| *exp >= now);
            if s.revoked_jtis.len() >= self.limits.revoked_tokens {
                return Err(full("revoked access tokens"));
            }
        }
        s.revoked_jtis.insert(jti.to_owned(), expires_at);
        Ok(())
    }

    async fn put_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
        record: Vec<u8>,
        _now: u64,
    ) -> Result<(), StoreError> {
        let key = super::upstream_tokens_key(provider, subject);
        let mut s = self.lock();
        if !s.upstream_tokens.contains_key(&key)
            && s.upstream_tokens.len() >= self.limits.upstream_tokens
        {
            return Err(full("upstream token records"));
        }
        s.upstream_tokens.insert(key, record);
        Ok(())
    }

    async fn get_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = super::upstream_tokens_key(provider, subject);
        Ok(self.lock().upstream_tokens.get(&key).cloned())
    }

    async fn delete_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let key = super::upstream_tokens_key(provider, subject);
        Ok(self.lock().upstream_tokens.remove(&key).is_some())
    }

    async fn record_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = super::assertion_id_key(client_id, jti);
        let mut s = self.lock();
        if s.assertion_ids.get(&key).is_some_and(|exp| *exp >= now) {
            return Ok(false);
        }
        if !s.assertion_ids.contains_key(&key) && s.assertion_ids.len() >= self.limits.assertion_ids
        {
            s.assertion_ids.retain(|_, exp| *exp >= now);
            if s.assertion_ids.len() >= self.limits.assertion_ids {
                return Err(full("client assertion ids"));
            }
        }
        s.assertion_ids.insert(key, expires_at);
        Ok(true)
    }

    async fn put_upstream_login(
        &self,
        key: &SecretHash,
        login: super::UpstreamLogin,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.upstream_logins.contains_key(key)
            && s.upstream_logins.len() >= self.limits.upstream_logins
        {
            let now = crate::util::now();
            s.upstream_logins.retain(|_, l| l.expires_at > now);
            if s.upstream_logins.len() >= self.limits.upstream_logins {
                return Err(full("upstream logins"));
            }
        }
        s.upstream_logins.insert(*key, login);
        Ok(())
    }

    async fn take_upstream_login(
        &self,
        key: &SecretHash,
        now: u64,
    ) -> Result<Option<super::UpstreamLogin>, StoreError> {
        Ok(self
            .lock()
            .upstream_logins
            .remove(key)
            .filter(|l| l.expires_at > now))
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
            .map(|(scope, _)| scope.clone()))
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &ScopeSet,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        let key = (subject.to_owned(), client_id.to_owned());
        if !s.consents.contains_key(&key) && s.consents.len() >= self.limits.consents {
            evict_min(&mut s.consents, |(_, updated)| *updated);
        }
        s.consents.insert(key, (scope.clone(), now));
        Ok(())
    }

    async fn put_pending(&self, id: &str, pending: PendingAuthorization) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.pending.contains_key(id) && s.pending.len() >= self.limits.pending {
            let now = crate::util::now();
            s.pending.retain(|_, p| p.expires_at > now);
            if s.pending.len() >= self.limits.pending {
                evict_min(&mut s.pending, |p| p.expires_at);
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
        sweep_families(&mut s, now);
        let after = s.codes.len() + s.pending.len() + s.revoked_jtis.len() + s.families.len();
        let ids = s.assertion_ids.len() + s.upstream_logins.len();
        s.assertion_ids.retain(|_, exp| *exp >= now);
        s.upstream_logins.retain(|_, l| l.expires_at > now);
        Ok((before - after + ids - s.assertion_ids.len() - s.upstream_logins.len()) as u64)
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

/// Makes room for one more family of `family`'s (subject, client) pair: while the pair
/// has `cap` live families, the oldest is revoked and reduced to a tombstone (its refresh
/// tokens forgotten, its revocation kept as long as its access tokens may live), which no
/// longer counts against the store-wide cap.
fn cap_grant_families(s: &mut State, family: &RefreshFamily, cap: usize, now: u64) {
    let State {
        families,
        grant_families,
        refresh_index,
        ..
    } = s;
    let key = (family.subject.clone(), family.client_id.clone());
    let Some(ids) = grant_families.get_mut(&key) else {
        return;
    };
    ids.retain(|id| families.get(id).is_some_and(|f| f.active(now).is_some()));
    while ids.len() >= cap {
        let oldest = ids.remove(0);
        if let Some(f) = families.get_mut(&oldest) {
            for h in f.hashes.drain(..) {
                refresh_index.remove(&h);
            }
            f.family = None;
            f.current = None;
            f.previous = None;
            f.revoked_at.get_or_insert(now);
            tracing::info!(target: "mcp_oauth::store", family = %oldest, "too many refresh families for one user and client; the oldest was revoked");
        }
    }
    if ids.is_empty() {
        grant_families.remove(&key);
    }
}

/// Drops the families (and their refresh-token index entries) nothing needs after `now`.
fn sweep_families(s: &mut State, now: u64) {
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
    let State {
        families,
        grant_families,
        ..
    } = s;
    grant_families.retain(|_, ids| {
        ids.retain(|id| families.get(id).is_some_and(|f| f.active(now).is_some()));
        !ids.is_empty()
    });
}
