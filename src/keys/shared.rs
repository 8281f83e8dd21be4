//! Key rings kept in a [`KeyStore`], shared by every instance of a deployment.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::encryption::{self, KeyEncryption};
use super::{KeyError, KeyRing, RingState, SigningAlgorithm, SigningKey};
use crate::store::{KeyRotation, KeyStore, PrivateKey, StoreError, StoredKey};

/// The ring the authorization server uses unless told otherwise.
pub(crate) const DEFAULT_RING: &str = "default";

/// How often a shared ring reloads from the store by default.
const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// How often at most an unknown `kid` makes a shared ring reload, by default.
const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(5);

/// The longest access-token lifetime the authorization server allows (24 h): how long
/// retired keys stay published (plus the refresh interval and [`RETENTION_MARGIN`]) when
/// nothing else says. An [`AuthorizationServer`](crate::server::AuthorizationServer) built
/// with the ring lowers it to its own access-token lifetime plus the same.
const LONGEST_ACCESS_TOKEN: Duration = Duration::from_secs(24 * 3600);

/// What retired keys are kept for beyond the access-token lifetime and the refresh interval:
/// the grace a ring's view may lag behind its refresh ([`STALE_GRACE`]), the verifiers'
/// leeway and clock skew.
pub(crate) const RETENTION_MARGIN: Duration = Duration::from_secs(300);

/// How much longer than its refresh interval a shared ring's view of the store may be before
/// it stops signing (a slow or late reload). A ring whose last reload failed, or whose last
/// good load is older than `refresh_interval + STALE_GRACE`, refuses to sign: it may hold a
/// current key another instance has retired, and signing with it could outlive the key's
/// publication. The retention a server demands covers this lag.
pub(crate) const STALE_GRACE: Duration = Duration::from_secs(30);

/// How often at most signing on a stale ring makes it try a reload itself.
const STALE_RELOAD_COOLDOWN: Duration = Duration::from_secs(1);

/// The least retention that is safe for tokens living `access`, on a ring reloading every
/// `refresh`: a stale instance may sign with a key retired up to `refresh` plus
/// [`STALE_GRACE`] ago, and its tokens live `access` beyond that; [`RETENTION_MARGIN`] covers
/// the grace, leeway and clock skew.
pub(crate) fn needed_retention(access: Duration, refresh: Duration) -> Duration {
    access + refresh + RETENTION_MARGIN
}

/// How often a shared ring prunes retired keys from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What [`KeyRing::rotate_fresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationOutcome {
    /// This call rotated: `kid` is the new current key.
    Rotated {
        /// The new current key id.
        kid: String,
    },
    /// Another instance had rotated away from the key this instance knew as current (at the
    /// same moment, or since the last reload); this call changed nothing and the ring now
    /// holds that instance's current key, `kid`. Of instances rotating at once, one wins and
    /// the others see this.
    Superseded {
        /// The current key id.
        kid: String,
    },
}

impl RotationOutcome {
    /// The current key id after the call.
    #[must_use]
    pub fn kid(&self) -> &str {
        match self {
            Self::Rotated { kid } | Self::Superseded { kid } => kid,
        }
    }
}

/// Opens a [`KeyRing`] kept in a [`KeyStore`]; start one with [`KeyRing::from_store`].
#[must_use]
pub struct StoreRingBuilder {
    store: Arc<dyn KeyStore>,
    ring: String,
    algorithm: SigningAlgorithm,
    refresh_interval: Duration,
    unknown_kid_cooldown: Duration,
    rotate_every: Option<Duration>,
    retention: Option<Duration>,
    encryption: Option<Arc<dyn KeyEncryption>>,
}

impl fmt::Debug for StoreRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreRingBuilder")
            .field("ring", &self.ring)
            .field("algorithm", &self.algorithm)
            .field("refresh_interval", &self.refresh_interval)
            .field("unknown_kid_cooldown", &self.unknown_kid_cooldown)
            .field("rotate_every", &self.rotate_every)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring kept in `store` and shared with every instance using the same store (and ring
    /// name): they all sign with one current key and accept the same retired ones, and a
    /// rotation by one reaches the others.
    ///
    /// An [`AuthorizationServer`](crate::server::AuthorizationServer) given a durable
    /// [`store`](crate::server::AuthorizationServerBuilder::store) and no key ring does this
    /// for you (ring `default`, default settings, in that store). Open one yourself to choose
    /// the [ring name](StoreRingBuilder::ring_name), [algorithm](StoreRingBuilder::algorithm),
    /// [refresh](StoreRingBuilder::refresh_interval) or
    /// [scheduled rotation](StoreRingBuilder::rotate_every), or to keep the keys in another
    /// store, and pass it with
    /// [`key_ring`](crate::server::AuthorizationServerBuilder::key_ring). A ring kept in a
    /// [`MemoryStore`](crate::store::MemoryStore) dies with the process like a generated one,
    /// and a server on a durable store refuses it.
    ///
    /// [`open`](StoreRingBuilder::open) loads the ring, creating its first key when the store
    /// has none (of instances starting at once, one key wins). The ring then reloads from
    /// the store every 30 s in the background, and at once (at most once per 5 s) when a
    /// token names a key it does not hold, so a key another instance rotated in verifies
    /// within moments.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mcp_oauth::keys::KeyRing;
    /// use mcp_oauth::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mcp_oauth::keys::KeyError> {
    /// // Two instances on one store (in production: a PostgresStore or RedisStore each).
    /// let store = Arc::new(MemoryStore::new());
    /// let a = KeyRing::from_store(store.clone()).open().await?;
    /// let b = KeyRing::from_store(store.clone()).open().await?;
    /// assert_eq!(a.current().kid(), b.current().kid(), "one key, created once");
    ///
    /// let rotated = a.rotate_fresh().await?;
    /// b.reload().await?; // what B's background refresh (or an unknown kid) does
    /// assert_eq!(b.current().kid(), rotated.kid());
    /// assert_eq!(b.jwks().keys.len(), 2, "the retired key still verifies");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_store(store: impl KeyStore) -> StoreRingBuilder {
        StoreRingBuilder {
            store: Arc::new(store),
            ring: DEFAULT_RING.to_owned(),
            algorithm: SigningAlgorithm::Es256,
            refresh_interval: DEFAULT_REFRESH,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
            rotate_every: None,
            retention: None,
            encryption: None,
        }
    }

    /// Whether this ring is kept in a store ([`from_store`](Self::from_store)).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Reloads a shared ring from its store now (the background refresh does this every
    /// 30 s); does nothing to a ring that is not shared.
    ///
    /// # Errors
    /// [`KeyError::Store`] when the store fails; the ring keeps the keys it had.
    pub async fn reload(&self) -> Result<(), KeyError> {
        match &self.shared {
            Some(b) => {
                let _flight = b.flight.lock().await;
                b.reload_locked(self).await
            }
            None => Ok(()),
        }
    }

    /// Generates a key (of the current key's algorithm, or the shared ring's configured one)
    /// and makes it current; the old key keeps verifying until the tokens it signed expired.
    ///
    /// On a shared ring this is a compare-and-swap in the store on the current key this
    /// instance knows: of instances rotating at once exactly one new key becomes current, and
    /// the others get [`RotationOutcome::Superseded`] and that key. On other rings it rotates
    /// this process's ring, like [`rotate`](Self::rotate).
    ///
    /// # Errors
    /// [`KeyError::Store`] when the store fails (nothing changed, or the rotation happened and
    /// only the reload after it failed: the next reload picks it up);
    /// [`KeyError::Generation`] when no key could be generated.
    pub async fn rotate_fresh(&self) -> Result<RotationOutcome, KeyError> {
        let previous = self.current().kid().to_owned();
        let outcome = match &self.shared {
            Some(b) => {
                let _flight = b.flight.lock().await;
                b.rotate_locked(self, None).await?
            }
            None => {
                let key = SigningKey::generate(self.current().algorithm())?;
                let kid = key.kid().to_owned();
                self.rotate_local(key);
                RotationOutcome::Rotated { kid }
            }
        };
        if let (None, RotationOutcome::Rotated { kid }) = (&self.shared, &outcome) {
            // (A shared ring's rotation is recorded where it happens, `rotate_locked`.)
            crate::audit::key_rotated(kid, &previous);
        }
        Ok(outcome)
    }

    /// How long retired keys of a shared ring stay published, whether that was set
    /// explicitly, and the ring's refresh interval; `None` for a ring that is not shared.
    #[cfg(feature = "server")]
    pub(crate) fn shared_retention(&self) -> Option<(Duration, bool, Duration)> {
        self.shared.as_ref().map(|b| {
            (
                Duration::from_secs(b.retention_secs.load(Ordering::Relaxed)),
                b.retention_explicit,
                b.refresh_interval,
            )
        })
    }

    /// Sets how long retired keys of a shared ring stay published, unless it was set
    /// explicitly (the authorization server derives it from its access-token lifetime).
    #[cfg(feature = "server")]
    pub(crate) fn set_default_retention(&self, retention: Duration) {
        if let Some(b) = &self.shared
            && !b.retention_explicit
        {
            b.retention_secs
                .store(retention.as_secs(), Ordering::Relaxed);
        }
    }
}

impl StoreRingBuilder {
    /// The ring's name in the store (`default` by default): instances sharing keys use the
    /// same name; authorization servers with different issuers sharing a database use
    /// different ones. ASCII letters, digits, `-`, `_` and `.`, at most 64 of them.
    pub fn ring_name(mut self, name: impl Into<String>) -> Self {
        self.ring = name.into();
        self
    }

    /// The algorithm of keys this instance generates (ES256 by default). Keys already in the
    /// store keep theirs.
    pub fn algorithm(mut self, algorithm: SigningAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How often the ring reloads from the store in the background (30 s by default; 1 s to
    /// 1 h). A rotation by another instance is signed with here at the latest this long
    /// after, and verified at once.
    pub fn refresh_interval(mut self, every: Duration) -> Self {
        self.refresh_interval = every;
        self
    }

    /// How often at most a token with an unknown `kid` makes the ring reload from the store
    /// (5 s by default; at most 5 min). Tokens naming made-up keys cost one store read per
    /// cooldown in all, never one each.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// Rotates the key on a schedule: once the current key is this old, the first instance
    /// to notice (on its background refresh) rotates it, the others take the new key. Off by
    /// default; at least 1 s (weeks or months are typical).
    pub fn rotate_every(mut self, age: Duration) -> Self {
        self.rotate_every = Some(age);
        self
    }

    /// How long a retired key stays published and accepted (by default the authorization
    /// server's access-token lifetime plus the [refresh interval](Self::refresh_interval)
    /// plus 5 min, or 24 h plus the same for a ring used without one). It must outlive every
    /// token the key signed, including tokens an instance that has not reloaded yet still
    /// signs with it, so an authorization server refuses to start
    /// ([`ConfigError::KeyRetentionTooShort`](crate::ConfigError::KeyRetentionTooShort)) when
    /// this is shorter than its access-token lifetime plus the refresh interval plus 5 min.
    pub fn retain_retired_for(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Wraps the private keys this ring writes to the store with `encryption` (envelope
    /// encryption: the store, its replicas and backups hold only wrapped keys), and unwraps
    /// them when loading. Keys stored in plain text before (by an older version, or before
    /// this was set) still load, each with a warning, and a plain current key is rotated
    /// away at once (the retired plain key is pruned once its tokens expired). Every
    /// instance of the ring needs the same key-encryption key (or KMS).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mcp_oauth::keys::{AesGcmKeyEncryption, KeyRing};
    /// use mcp_oauth::store::{KeyStore as _, MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mcp_oauth::keys::KeyError> {
    /// let store = Arc::new(MemoryStore::new());
    /// // In production: AesGcmKeyEncryption::from_env()? (MCP_OAUTH_KEY_ENCRYPTION_KEY).
    /// let kek = AesGcmKeyEncryption::new("2026-12", [7; 32])?;
    /// let ring = KeyRing::from_store(store.clone()).key_encryption(kek).open().await?;
    /// let stored = store.load_keys("default", u64::MAX / 2).await?;
    /// assert!(stored[0].private_key.as_pkcs8_der().starts_with(b"MSK1"), "wrapped");
    /// # let _ = ring;
    /// # Ok(())
    /// # }
    /// ```
    pub fn key_encryption(mut self, encryption: impl KeyEncryption) -> Self {
        self.encryption = Some(Arc::new(encryption));
        self
    }

    /// [`key_encryption`](Self::key_encryption) with a shared one.
    pub fn key_encryption_arc(mut self, encryption: Arc<dyn KeyEncryption>) -> Self {
        self.encryption = Some(encryption);
        self
    }

    /// Loads the ring from the store, creating its first key when it has none, and starts the
    /// background refresh (on the current tokio runtime; it stops when the last clone of
    /// the ring is dropped).
    ///
    /// # Errors
    /// [`KeyError::Store`] when the store is unreachable or holds a current key that cannot
    /// be loaded; [`KeyError::InvalidSetting`] for a setting out of range;
    /// [`KeyError::Generation`] when no key could be generated.
    pub async fn open(self) -> Result<KeyRing, KeyError> {
        crate::crypto::install_provider();
        if self.ring.is_empty()
            || self.ring.len() > 64
            || !self
                .ring
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(KeyError::InvalidSetting {
                setting: "ring_name",
                reason: format!(
                    "{:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'",
                    self.ring
                ),
            });
        }
        let check = |what: &'static str, d: Duration, min: u64, max: u64| {
            let s = d.as_secs();
            if s < min || s > max {
                return Err(KeyError::InvalidSetting {
                    setting: what,
                    reason: format!("must be between {min} and {max} seconds, got {s}"),
                });
            }
            Ok(())
        };
        check("refresh_interval", self.refresh_interval, 1, 3600)?;
        check("unknown_kid_cooldown", self.unknown_kid_cooldown, 0, 300)?;
        if let Some(every) = self.rotate_every {
            check("rotate_every", every, 1, u64::MAX)?;
        }
        if let Some(r) = self.retention {
            check("retain_retired_for", r, 1, 400 * 24 * 3600)?;
        }
        let binding = Arc::new(Binding {
            store: self.store,
            ring: self.ring,
            algorithm: self.algorithm,
            refresh_interval: self.refresh_interval,
            unknown_kid_cooldown: self.unknown_kid_cooldown,
            rotate_every: self.rotate_every,
            retention_secs: AtomicU64::new(
                self.retention
                    .unwrap_or_else(|| {
                        needed_retention(LONGEST_ACCESS_TOKEN, self.refresh_interval)
                    })
                    .as_secs(),
            ),
            #[cfg(feature = "server")]
            retention_explicit: self.retention.is_some(),
            encryption: self.encryption,
            warned_plain: Mutex::new(std::collections::HashSet::new()),
            flight: tokio::sync::Mutex::new(()),
            last_unknown: Mutex::new(None),
            meta: Mutex::new(Meta::default()),
            health: Mutex::new(Health {
                loaded_at: Instant::now(),
                failed: false,
                last_forced: None,
            }),
        });
        let (current, previous) = {
            let _flight = binding.flight.lock().await;
            binding.load(None).await?
        };
        binding.record_load(true);
        let plain_current = binding.lock_meta().current_plain;
        let ring = KeyRing::new_shared(current, previous, binding.clone());
        if plain_current {
            // A current key in plain text under key encryption: rotate it away (of instances
            // doing this at once, one wins), so new tokens are signed with a wrapped key and
            // the plain one is pruned when its tokens have expired.
            let _flight = binding.flight.lock().await;
            match binding.rotate_locked(&ring, None).await {
                Ok(outcome) => tracing::warn!(
                    target: "mcp_oauth::keys",
                    ring = %binding.ring,
                    kid = %outcome.kid(),
                    "the current signing key was stored in plain text; rotated to a wrapped key"
                ),
                Err(e) => tracing::warn!(
                    target: "mcp_oauth::keys",
                    ring = %binding.ring,
                    error = %e,
                    "the current signing key is stored in plain text and rotating it away failed"
                ),
            }
        }
        spawn_refresher(&binding, &ring);
        tracing::info!(
            target: "mcp_oauth::keys",
            ring = %binding.ring,
            kid = %ring.current().kid(),
            "signing keys loaded from the store"
        );
        Ok(ring)
    }
}

impl KeyRing {
    fn new_shared(
        current: Arc<SigningKey>,
        previous: Vec<Arc<SigningKey>>,
        binding: Arc<Binding>,
    ) -> Self {
        Self {
            state: Arc::new(std::sync::RwLock::new(Arc::new(RingState {
                current,
                previous,
            }))),
            retain: super::DEFAULT_RETAINED_KEYS,
            shared: Some(binding),
        }
    }
}

/// What the last load learned beyond the keys themselves.
#[derive(Debug, Default)]
struct Meta {
    /// `created_at` of the current key (scheduled rotation counts from it).
    current_created_at: u64,
    /// Whether the current key is stored in plain text although the ring encrypts keys.
    current_plain: bool,
    /// When retired keys were last pruned.
    last_prune: Option<Instant>,
}

/// A shared ring's link to its store.
pub(crate) struct Binding {
    store: Arc<dyn KeyStore>,
    ring: String,
    algorithm: SigningAlgorithm,
    refresh_interval: Duration,
    unknown_kid_cooldown: Duration,
    rotate_every: Option<Duration>,
    retention_secs: AtomicU64,
    /// Whether the retention was set explicitly (the server then leaves it alone).
    #[cfg(feature = "server")]
    retention_explicit: bool,
    /// Serialises this process's reloads and rotations: one store read at a time, and
    /// callers that find a reload in flight wait for its result instead of starting another.
    pub(super) flight: tokio::sync::Mutex<()>,
    /// When an unknown `kid` last made the ring reload.
    last_unknown: Mutex<Option<Instant>>,
    meta: Mutex<Meta>,
    /// Wraps and unwraps the private keys in the store.
    encryption: Option<Arc<dyn KeyEncryption>>,
    /// Plain-text keys already warned about.
    warned_plain: Mutex<std::collections::HashSet<String>>,
    /// Whether this instance's view of the ring is recent enough to sign with.
    health: Mutex<Health>,
}

/// How recent a shared ring's view of the store is.
#[derive(Debug)]
struct Health {
    /// When the ring was last loaded successfully.
    loaded_at: Instant,
    /// Whether the last reload failed (the ring keeps its keys, but may have missed a
    /// rotation).
    failed: bool,
    /// When signing on a stale ring last tried a reload itself.
    last_forced: Option<Instant>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl Binding {
    /// Whether the store keeps the keys beyond this process.
    #[cfg(feature = "server")]
    pub(crate) fn is_durable(&self) -> bool {
        self.store.is_durable()
    }

    /// Loads the ring's keys from the store, creating the first key when there is none.
    /// `known` is the ring as loaded before, whose parsed keys are reused.
    async fn load(
        &self,
        known: Option<&KeyRing>,
    ) -> Result<(Arc<SigningKey>, Vec<Arc<SigningKey>>), KeyError> {
        let now = crate::util::now();
        let mut keys = self.store.load_keys(&self.ring, now).await?;
        if !keys.iter().any(StoredKey::is_current) {
            if known.is_some() {
                tracing::warn!(
                    target: "mcp_oauth::keys",
                    ring = %self.ring,
                    "the key store holds no current key for this ring any more; creating one"
                );
            }
            let initial = self.seal(StoredKey::generate(self.algorithm, now)?).await?;
            let kid = initial.kid.clone();
            if self.store.create_initial_key(&self.ring, initial).await? {
                tracing::info!(target: "mcp_oauth::keys", ring = %self.ring, %kid, "created the ring's first signing key");
            }
            keys = self.store.load_keys(&self.ring, now).await?;
        }
        let mut current: Option<StoredKey> = None;
        let mut retired = Vec::new();
        for k in keys {
            // The store filters too; a retired key past its time is never used.
            if k.retired_at.is_some() && k.publish_until.is_none_or(|u| u <= now) {
                continue;
            }
            if k.is_current() {
                if let Some(other) = current.take() {
                    // A broken store; sign with the newest and keep verifying the other.
                    tracing::warn!(
                        target: "mcp_oauth::keys",
                        ring = %self.ring,
                        "the key store holds two current keys; using the newest"
                    );
                    let (newer, older) = if k.created_at >= other.created_at {
                        (k, other)
                    } else {
                        (other, k)
                    };
                    retired.push(older);
                    current = Some(newer);
                } else {
                    current = Some(k);
                }
            } else {
                retired.push(k);
            }
        }
        let Some(current) = current else {
            return Err(KeyError::Store(StoreError::corrupt(format!(
                "ring {}: no current key after creating one",
                self.ring
            ))));
        };
        // Newest first, like a local ring's retained keys; the same order on every instance.
        retired.sort_by(|a, b| {
            (b.retired_at, b.created_at)
                .cmp(&(a.retired_at, a.created_at))
                .then_with(|| a.kid.cmp(&b.kid))
        });
        let current_key = self.open_key(&current, known).await.map_err(|e| match e {
            KeyError::Encryption(_) => e,
            e => KeyError::Store(StoreError::corrupt(format!(
                "ring {}: current key {}: {e}",
                self.ring, current.kid
            ))),
        })?;
        let mut previous = Vec::with_capacity(retired.len());
        for k in &retired {
            match self.open_key(k, known).await {
                Ok(key) => previous.push(key),
                Err(e) => tracing::warn!(
                    target: "mcp_oauth::keys",
                    ring = %self.ring,
                    kid = %k.kid,
                    error = %e,
                    "skipping a retired key that cannot be loaded"
                ),
            }
        }
        {
            let mut meta = self.lock_meta();
            meta.current_created_at = current.created_at;
            meta.current_plain = self.encryption.is_some()
                && !encryption::is_wrapped(current.private_key.as_pkcs8_der());
        }
        Ok((current_key, previous))
    }

    /// Wraps a new key's private key when the ring encrypts keys.
    async fn seal(&self, mut key: StoredKey) -> Result<StoredKey, KeyError> {
        if let Some(enc) = &self.encryption {
            let context = encryption::context(&self.ring, &key.kid, key.algorithm);
            let wrapped =
                encryption::wrap(&**enc, key.private_key.as_pkcs8_der(), &context).await?;
            key.private_key = PrivateKey::from_pkcs8_der(wrapped);
        }
        Ok(key)
    }

    /// The usable key of a stored one: the parsed key `known` already holds, or the stored
    /// one, unwrapped when it is wrapped.
    async fn open_key(
        &self,
        k: &StoredKey,
        known: Option<&KeyRing>,
    ) -> Result<Arc<SigningKey>, KeyError> {
        if let Some(found) = known.and_then(|r| r.find(&k.kid)) {
            return Ok(found);
        }
        let stored = k.private_key.as_pkcs8_der();
        if encryption::is_wrapped(stored) {
            let Some(enc) = &self.encryption else {
                return Err(KeyError::Encryption(format!(
                    "key {} is stored wrapped, but this ring has no key encryption (StoreRingBuilder::key_encryption, AuthorizationServerBuilder::key_encryption)",
                    k.kid
                )));
            };
            let context = encryption::context(&self.ring, &k.kid, k.algorithm);
            let plain = encryption::unwrap(&**enc, stored, &context).await?;
            let mut open = k.clone();
            open.private_key = PrivateKey::from_pkcs8_der(plain);
            return open.signing_key().map(Arc::new);
        }
        if self.encryption.is_some()
            && self
                .warned_plain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(k.kid.clone())
        {
            tracing::warn!(
                target: "mcp_oauth::keys",
                ring = %self.ring,
                kid = %k.kid,
                "a signing key is stored in plain text (written by an older version, or before key encryption was set); it stays usable until it is rotated away and pruned"
            );
        }
        k.signing_key().map(Arc::new)
    }

    fn lock_meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome of a load.
    fn record_load(&self, ok: bool) {
        let mut h = self.lock_health();
        h.failed = !ok;
        if ok {
            h.loaded_at = Instant::now();
        }
    }

    /// The longest this instance's view may lag behind the store and still sign.
    fn max_staleness(&self) -> Duration {
        self.refresh_interval + STALE_GRACE
    }

    /// `Ok` when the ring may sign: its last reload succeeded, no longer than the refresh
    /// interval (plus [`STALE_GRACE`]) ago. Otherwise [`KeyError::Stale`].
    pub(crate) fn check_fresh(&self) -> Result<(), KeyError> {
        let h = self.lock_health();
        let age = h.loaded_at.elapsed();
        if h.failed || age > self.max_staleness() {
            return Err(KeyError::Stale {
                ring: self.ring.clone(),
                age_secs: age.as_secs(),
                reload_failed: h.failed,
            });
        }
        Ok(())
    }

    /// Makes the ring fit to sign: when it is stale (see [`check_fresh`](Self::check_fresh)),
    /// reloads it now (at most once per [`STALE_RELOAD_COOLDOWN`], one reload at a time).
    pub(crate) async fn ensure_fresh(&self, ring: &KeyRing) -> Result<(), KeyError> {
        if self.check_fresh().is_ok() {
            return Ok(());
        }
        let _flight = self.flight.lock().await;
        if self.check_fresh().is_ok() {
            return Ok(());
        }
        let due = {
            let mut h = self.lock_health();
            let due = h
                .last_forced
                .is_none_or(|t| t.elapsed() >= STALE_RELOAD_COOLDOWN);
            if due {
                h.last_forced = Some(Instant::now());
            }
            due
        };
        if due && let Err(e) = self.reload_locked(ring).await {
            tracing::warn!(
                target: "mcp_oauth::keys",
                ring = %self.ring,
                error = %e,
                "the signing keys are stale and reloading them failed; refusing to sign"
            );
        }
        self.check_fresh()
    }

    /// Reloads into `ring`; the caller holds `flight`.
    async fn reload_locked(&self, ring: &KeyRing) -> Result<(), KeyError> {
        let loaded = self.load(Some(ring)).await;
        self.record_load(loaded.is_ok());
        let (current, previous) = loaded?;
        let before = ring.current().kid().to_owned();
        ring.replace(current, previous);
        let after = ring.current();
        if after.kid() != before {
            tracing::info!(target: "mcp_oauth::keys", ring = %self.ring, kid = %after.kid(), "now signing with a key rotated in by another instance");
        }
        Ok(())
    }

    /// The compare-and-swap rotation to `key` (or a generated one); the caller holds
    /// `flight`.
    pub(super) async fn rotate_locked(
        &self,
        ring: &KeyRing,
        key: Option<SigningKey>,
    ) -> Result<RotationOutcome, KeyError> {
        let expected = ring.current().kid().to_owned();
        let now = crate::util::now();
        let next = match key {
            None => StoredKey::generate(self.algorithm, now)?,
            Some(key) => StoredKey {
                kid: key.kid().to_owned(),
                algorithm: key.algorithm(),
                private_key: crate::store::PrivateKey::from_pkcs8_der(key.pkcs8_der().to_vec()),
                created_at: now,
                retired_at: None,
                publish_until: None,
            },
        };
        let next = self.seal(next).await?;
        let next_kid = next.kid.clone();
        let publish_until = now.saturating_add(self.retention_secs.load(Ordering::Relaxed));
        let outcome = self
            .store
            .rotate_key(&self.ring, &expected, next, now, publish_until)
            .await?;
        self.reload_locked(ring).await?;
        Ok(match outcome {
            KeyRotation::Rotated => {
                crate::audit::key_rotated(&next_kid, &expected);
                RotationOutcome::Rotated { kid: next_kid }
            }
            _ => RotationOutcome::Superseded {
                kid: ring.current().kid().to_owned(),
            },
        })
    }

    /// A miss for `kid`: waits for a reload in flight, and reloads when the cooldown allows.
    pub(crate) async fn reload_for_unknown_kid(
        &self,
        ring: &KeyRing,
        kid: &str,
    ) -> Result<Option<Arc<SigningKey>>, KeyError> {
        let due = {
            let mut last = self
                .last_unknown
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|t| t.elapsed() >= self.unknown_kid_cooldown);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        let _flight = self.flight.lock().await;
        if let Some(k) = ring.find(kid) {
            return Ok(Some(k));
        }
        if !due {
            // Within the cooldown after a reload that failed, the key may well exist: the
            // answer is "unavailable", not "no such key".
            if self.lock_health().failed {
                return Err(KeyError::Store(StoreError::unavailable(format!(
                    "ring {}: the last reload of the signing keys failed",
                    self.ring
                ))));
            }
            return Ok(None);
        }
        self.reload_locked(ring).await?;
        Ok(ring.find(kid))
    }

    /// One background step: reload, rotate when the schedule says so, prune now and then.
    async fn tick(&self, ring: &KeyRing) {
        let _flight = self.flight.lock().await;
        if let Err(e) = self.reload_locked(ring).await {
            tracing::warn!(
                target: "mcp_oauth::keys",
                ring = %self.ring,
                error = %e,
                "reloading the signing keys failed; keeping the keys loaded before"
            );
            return;
        }
        let now = crate::util::now();
        if let Some(every) = self.rotate_every {
            let created = self.lock_meta().current_created_at;
            if now >= created.saturating_add(every.as_secs())
                && let Err(e) = self.rotate_locked(ring, None).await
            {
                tracing::warn!(target: "mcp_oauth::keys", ring = %self.ring, error = %e, "scheduled key rotation failed");
            }
        }
        let prune_due = self
            .lock_meta()
            .last_prune
            .is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if prune_due {
            match self.store.prune_keys(&self.ring, now).await {
                Ok(_) => self.lock_meta().last_prune = Some(Instant::now()),
                Err(e) => {
                    tracing::warn!(target: "mcp_oauth::keys", ring = %self.ring, error = %e, "pruning retired keys failed");
                }
            }
        }
    }
}

/// Reloads `ring` every refresh interval while any clone of it lives.
fn spawn_refresher(binding: &Arc<Binding>, ring: &KeyRing) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            target: "mcp_oauth::keys",
            ring = %binding.ring,
            "no tokio runtime: the shared key ring reloads only for unknown key ids"
        );
        return;
    };
    let weak_binding: Weak<Binding> = Arc::downgrade(binding);
    let weak_state = Arc::downgrade(&ring.state);
    let retain = ring.retain;
    let every = binding.refresh_interval;
    runtime.spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the ring was just loaded.
        interval.tick().await;
        loop {
            interval.tick().await;
            let (Some(binding), Some(state)) = (weak_binding.upgrade(), weak_state.upgrade())
            else {
                return;
            };
            let ring = KeyRing {
                state,
                retain,
                shared: Some(binding.clone()),
            };
            binding.tick(&ring).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// Issue 13 item 6: a ring whose view of the store is older than its refresh interval
    /// plus the grace (its background refresh stalled) refuses to sign; minting reloads
    /// first and then signs.
    #[tokio::test]
    async fn a_stale_view_refuses_to_sign_until_reloaded() {
        let ring = KeyRing::from_store(MemoryStore::new())
            .refresh_interval(Duration::from_secs(3600))
            .open()
            .await
            .unwrap();
        let claims = serde_json::json!({"sub": "alice"});
        assert!(ring.sign("at+jwt", &claims).is_ok());
        let binding = ring.shared.clone().unwrap();
        let Some(long_ago) = Instant::now()
            .checked_sub(Duration::from_secs(3600) + STALE_GRACE + Duration::from_secs(1))
        else {
            return; // the machine has not been up that long
        };
        binding.lock_health().loaded_at = long_ago;
        let err = ring.sign("at+jwt", &claims).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::Stale {
                    reload_failed: false,
                    age_secs,
                    ..
                } if age_secs > 3600
            ),
            "{err:?}"
        );
        // The issuer's path reloads the stale ring, then signs.
        assert!(ring.sign_fresh("at+jwt", &claims).await.is_ok());
        assert!(ring.sign("at+jwt", &claims).is_ok());
    }
}
