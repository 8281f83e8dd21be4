//! Binding MCP sessions to the principal that opened them.
//!
//! The MCP security best practices say servers MUST NOT use sessions for authentication and
//! SHOULD bind session IDs to the user. A session id travels in a header any client can
//! copy, so the layer remembers, for every session it sees the MCP service issue (an
//! `Mcp-Session-Id` **response** header answering a request that carried none), who opened
//! it: the token's subject and client, or [`SessionOwner::Anonymous`] under lazy
//! authentication. Every later request naming that session must come from the same owner:
//!
//! | session bound to | request carries | answer |
//! |---|---|---|
//! | nobody (never seen issued, forgotten, evicted) | anything | `404`, as the transport answers an unknown session: the client starts a new one |
//! | a principal | no token | `401` with the usual challenge, even for methods that are public under lazy authentication |
//! | a principal | a valid token of another subject or client | `404`: for this caller the session does not exist |
//! | a principal | a valid token of the same subject and client | the policy decides, as usual |
//! | anonymous | no token | the policy decides |
//! | anonymous | a valid token | bound to that principal from then on, then the policy decides |
//!
//! A `DELETE` that succeeded, and any `404` the service itself answers on a session, forget
//! the binding. Bindings are keyed by the SHA-256 of the session id ([`SessionKey`]), so a
//! shared store never holds a usable session id.
//!
//! [`SessionBindings`] is the storage: [`MemorySessionBindings`] (bounded, least recently
//! used evicted first, anonymous sessions before signed-in ones, idle entries expire) is the default; implement the trait over a
//! shared store when several instances serve the same sessions, or a session opened on one
//! is unknown (`404`) on the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use crate::context::AuthContext;
use crate::store::StoreError;

/// Who opened an MCP session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SessionOwner {
    /// Opened without a token (lazy authentication); bound to the first principal that
    /// presents a token on it.
    Anonymous,
    /// Opened (or claimed) by this subject through this client.
    Principal {
        /// The token's subject.
        subject: String,
        /// The token's client, if it names one.
        client_id: Option<String>,
    },
}

impl SessionOwner {
    /// The owner a request with this caller establishes.
    #[must_use]
    pub fn of(caller: Option<&AuthContext>) -> Self {
        match caller {
            None => Self::Anonymous,
            Some(ctx) => Self::Principal {
                subject: ctx.subject().to_owned(),
                client_id: ctx.client_id().map(str::to_owned),
            },
        }
    }

    /// Whether `ctx` is this principal (never true for [`Anonymous`](Self::Anonymous)).
    #[must_use]
    pub fn is(&self, ctx: &AuthContext) -> bool {
        match self {
            Self::Anonymous => false,
            Self::Principal { subject, client_id } => {
                subject == ctx.subject() && client_id.as_deref() == ctx.client_id()
            }
        }
    }
}

/// The key a session is stored under: the lowercase hex SHA-256 of its `Mcp-Session-Id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of a session id (its bytes as sent in the header).
    #[must_use]
    pub fn of(session_id: impl AsRef<[u8]>) -> Self {
        let digest = Sha256::digest(session_id.as_ref());
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Self(hex)
    }

    /// The key as text (64 hex digits).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the layer keeps session bindings: which principal opened each MCP session. Share
/// one implementation between instances that serve the same MCP sessions
/// ([`RedisStore`](crate::store::redis::RedisStore) implements it with the `redis` feature).
///
/// Session ids travel in a header any client can copy, and the MCP security best practices
/// say servers MUST NOT use sessions for authentication and SHOULD bind them to the user. So
/// the layer records, for every session it sees the service issue (an `Mcp-Session-Id`
/// **response** header answering a request that named none), the token's subject and client,
/// or [`SessionOwner::Anonymous`] under lazy authentication, and then:
///
/// | session bound to | request carries | answer |
/// |---|---|---|
/// | nobody (never seen issued, deleted, evicted, expired) | anything | `404`, as the transport answers an unknown session: the client starts a new one. A session id is never bound to the first caller that names it |
/// | a principal | no token | `401` with the usual challenge, even for methods public under lazy authentication, `GET` streams, `DELETE`, notifications and responses |
/// | a principal | a valid token of another subject or client | `404`: for this caller the session does not exist |
/// | a principal | a valid token of the same subject and client | the policy decides, as usual |
/// | anonymous | no token | the policy decides |
/// | anonymous | a valid token the policy accepts | bound to that principal from then on |
/// | the store fails | anything | `503` with `Retry-After` |
///
/// A `DELETE` the service answered with success, and any `404` the service answers on a
/// session, forget the binding. Keys are the SHA-256 of the session id ([`SessionKey`]), so
/// a shared store never holds a usable session id.
///
/// ```
/// use mcp_oauth::resource::{MemorySessionBindings, SessionBindings, SessionKey, SessionOwner};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bindings = MemorySessionBindings::default();
/// let key = SessionKey::of("3f1c…");
/// assert_eq!(bindings.get(&key).await.unwrap(), None);
/// bindings.bind(&key, &SessionOwner::Anonymous).await.unwrap();
/// let alice = SessionOwner::Principal { subject: "alice".into(), client_id: Some("c1".into()) };
/// // An anonymous session is claimed by the first principal ...
/// assert_eq!(bindings.bind(&key, &alice).await.unwrap(), alice);
/// // ... and then kept.
/// let bob = SessionOwner::Principal { subject: "bob".into(), client_id: None };
/// assert_eq!(bindings.bind(&key, &bob).await.unwrap(), alice);
/// # }
/// ```
#[async_trait]
pub trait SessionBindings: Send + Sync + 'static {
    /// The owner of a session, if it is known. Implementations with an idle timeout
    /// refresh it here.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer; the layer then refuses with `503`.
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionOwner>, StoreError>;

    /// Binds a session, atomically: an unknown session gets `owner`; an
    /// [`Anonymous`](SessionOwner::Anonymous) one gets `owner` if it is a principal; a
    /// session bound to a principal keeps it. Returns the owner in force afterwards.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn bind(
        &self,
        key: &SessionKey,
        owner: &SessionOwner,
    ) -> Result<SessionOwner, StoreError>;

    /// Forgets a session (it was deleted, or the service no longer knows it).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn forget(&self, key: &SessionKey) -> Result<(), StoreError>;
}

/// The owner that [`SessionBindings::bind`] leaves in force, given the current one.
#[must_use]
pub fn merged_owner(current: Option<&SessionOwner>, owner: &SessionOwner) -> SessionOwner {
    match current {
        Some(p @ SessionOwner::Principal { .. }) => p.clone(),
        Some(SessionOwner::Anonymous) | None => owner.clone(),
    }
}

/// In-process [`SessionBindings`]: at most `capacity` sessions (the least recently used
/// anonymous one is evicted first, then the least recently used one bound to a principal,
/// so sessions opened without a token cannot push signed-in users' sessions out), each
/// forgotten after `idle` without a request. An evicted or expired
/// session is answered `404`, and the client opens a new one.
#[derive(Debug)]
pub struct MemorySessionBindings {
    inner: Mutex<Lru>,
    capacity: usize,
    idle: Duration,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<SessionKey, (SessionOwner, Instant, u64)>,
    /// `(last use, tiebreak) -> key` of anonymous sessions, oldest first.
    anonymous: BTreeMap<(Instant, u64), SessionKey>,
    /// The same for sessions bound to a principal. Kept apart so that sessions anyone can
    /// open without a token are evicted first: churning anonymous sessions cannot push
    /// signed-in users' sessions out (and answer them `404`).
    principals: BTreeMap<(Instant, u64), SessionKey>,
    next: u64,
}

impl Lru {
    fn order_of(&mut self, owner: &SessionOwner) -> &mut BTreeMap<(Instant, u64), SessionKey> {
        match owner {
            SessionOwner::Anonymous => &mut self.anonymous,
            SessionOwner::Principal { .. } => &mut self.principals,
        }
    }

    fn touch(&mut self, key: &SessionKey, now: Instant) {
        let seq = self.next;
        self.next += 1;
        let Some((owner, at, s)) = self.entries.get_mut(key) else {
            return;
        };
        let (owner, old) = (owner.clone(), (*at, *s));
        *at = now;
        *s = seq;
        let order = self.order_of(&owner);
        order.remove(&old);
        order.insert((now, seq), key.clone());
    }

    fn remove(&mut self, key: &SessionKey) -> Option<SessionOwner> {
        let (owner, at, s) = self.entries.remove(key)?;
        self.order_of(&owner).remove(&(at, s));
        Some(owner)
    }

    fn expire(&mut self, now: Instant, idle: Duration) {
        for order in [&mut self.anonymous, &mut self.principals] {
            while let Some((&(at, s), _)) = order.first_key_value() {
                if now.saturating_duration_since(at) < idle {
                    break;
                }
                if let Some(key) = order.remove(&(at, s)) {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// Evicts the least recently used anonymous session, or else the least recently used
    /// one bound to a principal.
    fn evict(&mut self) -> bool {
        let oldest = match self.anonymous.pop_first() {
            Some((_, key)) => key,
            None => match self.principals.pop_first() {
                Some((_, key)) => key,
                None => return false,
            },
        };
        self.entries.remove(&oldest);
        true
    }
}

/// Default capacity of [`MemorySessionBindings`].
pub const DEFAULT_SESSION_CAPACITY: usize = 100_000;

/// Default idle timeout of [`MemorySessionBindings`]: a day, longer than MCP transports
/// keep an idle session.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for MemorySessionBindings {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_CAPACITY, DEFAULT_SESSION_IDLE)
    }
}

impl MemorySessionBindings {
    /// Bindings for at most `capacity` sessions (at least 1), each kept while used at least
    /// once per `idle`.
    #[must_use]
    pub fn new(capacity: usize, idle: Duration) -> Self {
        Self {
            inner: Mutex::new(Lru::default()),
            capacity: capacity.max(1),
            idle,
        }
    }

    /// How many sessions are bound now (expired ones may still count until the next write).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no session is bound.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_at(&self, key: &SessionKey, now: Instant) -> Option<SessionOwner> {
        let mut lru = self.lock();
        let (owner, at, _) = lru.entries.get(key)?;
        if now.saturating_duration_since(*at) >= self.idle {
            lru.remove(key);
            return None;
        }
        let owner = owner.clone();
        lru.touch(key, now);
        Some(owner)
    }

    fn bind_at(&self, key: &SessionKey, owner: &SessionOwner, now: Instant) -> SessionOwner {
        let mut lru = self.lock();
        lru.expire(now, self.idle);
        let current = lru.remove(key);
        let merged = merged_owner(current.as_ref(), owner);
        while lru.entries.len() >= self.capacity {
            if !lru.evict() {
                break;
            }
        }
        let seq = lru.next;
        lru.next += 1;
        lru.entries.insert(key.clone(), (merged.clone(), now, seq));
        lru.order_of(&merged).insert((now, seq), key.clone());
        merged
    }
}

#[async_trait]
impl SessionBindings for MemorySessionBindings {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionOwner>, StoreError> {
        Ok(self.get_at(key, Instant::now()))
    }

    async fn bind(
        &self,
        key: &SessionKey,
        owner: &SessionOwner,
    ) -> Result<SessionOwner, StoreError> {
        Ok(self.bind_at(key, owner, Instant::now()))
    }

    async fn forget(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> SessionOwner {
        SessionOwner::Principal {
            subject: "alice".into(),
            client_id: Some("c1".into()),
        }
    }

    #[test]
    fn keys_are_hashes() {
        let k = SessionKey::of("abc");
        assert_eq!(
            k.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn owners_compare_subject_and_client() {
        use crate::context::TokenKind;
        let ctx = AuthContext::new("alice", TokenKind::Jwt).with_client_id("c1");
        assert!(alice().is(&ctx));
        assert!(!alice().is(&AuthContext::new("alice", TokenKind::Jwt).with_client_id("c2")));
        assert!(!alice().is(&AuthContext::new("alice", TokenKind::Jwt)));
        assert!(!SessionOwner::Anonymous.is(&ctx));
        assert_eq!(SessionOwner::of(Some(&ctx)), alice());
        assert_eq!(SessionOwner::of(None), SessionOwner::Anonymous);
    }

    // issue 8 item 2: bounded memory, least recently used evicted first.
    #[test]
    fn evicts_the_least_recently_used() {
        let b = MemorySessionBindings::new(2, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (k1, k2, k3) = (
            SessionKey::of("1"),
            SessionKey::of("2"),
            SessionKey::of("3"),
        );
        b.bind_at(&k1, &alice(), t0);
        b.bind_at(&k2, &alice(), t0 + Duration::from_secs(1));
        // Using k1 makes k2 the least recently used.
        assert_eq!(b.get_at(&k1, t0 + Duration::from_secs(2)), Some(alice()));
        b.bind_at(&k3, &SessionOwner::Anonymous, t0 + Duration::from_secs(3));
        assert_eq!(b.len(), 2);
        assert_eq!(b.get_at(&k2, t0 + Duration::from_secs(4)), None);
        assert_eq!(b.get_at(&k1, t0 + Duration::from_secs(4)), Some(alice()));
        assert_eq!(
            b.get_at(&k3, t0 + Duration::from_secs(4)),
            Some(SessionOwner::Anonymous)
        );
    }

    // issue 8 item 2 (review): anonymous sessions (which anyone can open without a token
    // under lazy authentication) are evicted before sessions bound to a principal, so
    // churning them cannot push a signed-in user's session out. Before the fix the oldest
    // binding went whoever owned it.
    #[test]
    fn anonymous_churn_does_not_evict_principals() {
        let b = MemorySessionBindings::new(3, Duration::from_secs(3600));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let k = SessionKey::of("alice's");
        b.bind_at(&k, &alice(), at(0));
        for i in 0..100 {
            b.bind_at(
                &SessionKey::of(format!("anon-{i}")),
                &SessionOwner::Anonymous,
                at(1 + i),
            );
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.get_at(&k, at(200)), Some(alice()));
        // The newest anonymous sessions are kept, the oldest went.
        assert_eq!(
            b.get_at(&SessionKey::of("anon-99"), at(200)),
            Some(SessionOwner::Anonymous)
        );
        assert_eq!(b.get_at(&SessionKey::of("anon-0"), at(200)), None);
        // With only principals left, the least recently used principal goes.
        let full = MemorySessionBindings::new(2, Duration::from_secs(3600));
        let bob = SessionOwner::Principal {
            subject: "bob".into(),
            client_id: None,
        };
        full.bind_at(&SessionKey::of("1"), &alice(), at(0));
        full.bind_at(&SessionKey::of("2"), &bob, at(1));
        full.bind_at(&SessionKey::of("3"), &bob, at(2));
        assert_eq!(full.get_at(&SessionKey::of("1"), at(3)), None);
        assert_eq!(full.get_at(&SessionKey::of("2"), at(3)), Some(bob.clone()));
        // A claimed session moves from the anonymous tier to the principals'.
        let claim = MemorySessionBindings::new(2, Duration::from_secs(3600));
        let c = SessionKey::of("c");
        claim.bind_at(&c, &SessionOwner::Anonymous, at(0));
        claim.bind_at(&c, &alice(), at(1));
        claim.bind_at(&SessionKey::of("x"), &SessionOwner::Anonymous, at(2));
        claim.bind_at(&SessionKey::of("y"), &SessionOwner::Anonymous, at(3));
        assert_eq!(claim.get_at(&c, at(4)), Some(alice()));
        // Expiry sweeps both tiers.
        claim.bind_at(&SessionKey::of("z"), &SessionOwner::Anonymous, at(10_000));
        assert_eq!(claim.len(), 1);
    }

    // issue 8 item 2: idle sessions expire (an injected clock, no sleeping).
    #[test]
    fn idle_sessions_expire() {
        let b = MemorySessionBindings::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let k = SessionKey::of("s");
        b.bind_at(&k, &alice(), t0);
        assert_eq!(b.get_at(&k, t0 + Duration::from_secs(59)), Some(alice()));
        // The get refreshed it.
        assert_eq!(b.get_at(&k, t0 + Duration::from_secs(118)), Some(alice()));
        assert_eq!(b.get_at(&k, t0 + Duration::from_secs(178)), None);
        // Expired entries are swept on the next write.
        b.bind_at(&SessionKey::of("a"), &alice(), t0);
        b.bind_at(
            &SessionKey::of("b"),
            &alice(),
            t0 + Duration::from_secs(600),
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn anonymous_sessions_are_claimed_once() {
        let b = MemorySessionBindings::default();
        let t0 = Instant::now();
        let k = SessionKey::of("s");
        assert_eq!(
            b.bind_at(&k, &SessionOwner::Anonymous, t0),
            SessionOwner::Anonymous
        );
        assert_eq!(b.bind_at(&k, &alice(), t0), alice());
        let bob = SessionOwner::Principal {
            subject: "bob".into(),
            client_id: None,
        };
        assert_eq!(b.bind_at(&k, &bob, t0), alice());
        assert_eq!(b.bind_at(&k, &SessionOwner::Anonymous, t0), alice());
    }
}
