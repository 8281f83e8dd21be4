//! Signing keys in the store: the [`KeyStore`] trait, its records and the in-memory
//! implementation. The prose for users is on [`KeyStore`] (this module is private).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{MemoryStore, StoreError};
use crate::keys::{KeyError, SigningAlgorithm, SigningKey};

/// A private key as PKCS#8 v1 DER. Its `Debug` output never shows the bytes (nor do logs or
/// errors); see [`KeyStore`] on what storing it means.
#[derive(Clone)]
pub struct PrivateKey(Vec<u8>);

impl PrivateKey {
    /// Wraps PKCS#8 v1 DER bytes.
    #[must_use]
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// The PKCS#8 DER bytes, to store.
    #[must_use]
    pub fn as_pkcs8_der(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

/// One signing key of a ring, as the store keeps it.
///
/// A ring has exactly one **current** key (`retired_at` is `None`), which signs new tokens,
/// and any number of **retired** ones, which still verify (and are published at
/// `/jwks.json`) until `publish_until`, after which they are pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id (the RFC 7638 thumbprint of the public key).
    pub kid: String,
    /// The algorithm.
    pub algorithm: SigningAlgorithm,
    /// The private key: PKCS#8 DER, or a wrapped record when the ring encrypts keys
    /// ([`KeyEncryption`](crate::keys::KeyEncryption)). See [`KeyStore`] on what that means
    /// for the store.
    pub private_key: PrivateKey,
    /// When the key was created (seconds since the epoch); scheduled rotation counts from here.
    pub created_at: u64,
    /// When the key stopped signing; `None` for the current key.
    pub retired_at: Option<u64>,
    /// Until when a retired key is still published and accepted: at least as long as the
    /// tokens it signed live. `None` for the current key.
    pub publish_until: Option<u64>,
}

impl StoredKey {
    /// A freshly generated current key.
    ///
    /// # Errors
    /// When the crypto backend cannot generate a key.
    pub fn generate(algorithm: SigningAlgorithm, now: u64) -> Result<Self, KeyError> {
        let (key, der) = SigningKey::generate_with_der(algorithm)?;
        Ok(Self {
            kid: key.kid().to_owned(),
            algorithm,
            private_key: PrivateKey(der),
            created_at: now,
            retired_at: None,
            publish_until: None,
        })
    }

    /// Whether this is the current key.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.retired_at.is_none()
    }

    /// The usable key.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when the bytes are not a key of the stated algorithm;
    /// [`KeyError::KidMismatch`] when its thumbprint is not `kid` (a record that was tampered
    /// with or mixed up).
    pub fn signing_key(&self) -> Result<SigningKey, KeyError> {
        let key = SigningKey::from_pkcs8_der(self.algorithm, &self.private_key.0)?;
        if key.kid() != self.kid {
            return Err(KeyError::KidMismatch {
                kid: self.kid.clone(),
            });
        }
        Ok(key)
    }
}

/// The outcome of [`KeyStore::rotate_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRotation {
    /// The expected key was current; it is retired now and the new key is current.
    Rotated,
    /// The expected key was not current any more (another instance rotated first): nothing
    /// changed. `current` is the ring's current key id, if it has one.
    Superseded {
        /// The current key id.
        current: Option<String>,
    },
}

/// Signing keys shared by every instance of a deployment.
///
/// Several instances of one authorization server must sign with one key and verify with the
/// same set of keys, and a rotation done by one must reach all; and the keys must outlive a
/// restart as the grants do. So the key ring itself lives in the store, and every instance
/// loads it from there with
/// [`KeyRing::from_store`](crate::keys::KeyRing::from_store), which also reloads it when
/// another instance rotated. An authorization server does this by itself on a grant store
/// that hands out its key store ([`GrantStore::key_store`](super::GrantStore::key_store)),
/// as every built-in durable store does.
///
/// Keys are grouped into named **rings** (the authorization server uses `"default"`), so
/// several authorization servers can share one database. The two state changes are single
/// atomic methods, never read-then-write:
/// - [`create_initial_key`](Self::create_initial_key): of many instances starting at once on
///   an empty ring, exactly one key becomes current (first writer wins; the others load it);
/// - [`rotate_key`](Self::rotate_key): a compare-and-swap on the current key id, so of many
///   instances rotating at once exactly one new key becomes current.
///
/// [`testkit::run_key_store`](super::testkit::run_key_store) checks all of this against an
/// implementation.
///
/// # What the store is trusted with
/// A [`StoredKey`] carries the **private** key (PKCS#8 DER): whoever can read the key table
/// (or the Redis hash) can sign tokens that every instance accepts. The built-in stores keep
/// what it is given. Give the ring a key-encryption key
/// ([`KeyEncryption`](crate::keys::KeyEncryption): AES-256-GCM from the environment with
/// [`AesGcmKeyEncryption`](crate::keys::AesGcmKeyEncryption), or a KMS) and it hands the
/// store only wrapped keys (`StoredKey::private_key` then holds a wrapped record, not DER), so
/// the tables, replicas and backups are useless without that key; set it with
/// [`AuthorizationServerBuilder::key_encryption`](crate::server::AuthorizationServerBuilder::key_encryption)
/// or [`StoreRingBuilder::key_encryption`](crate::keys::StoreRingBuilder::key_encryption).
/// Without one the keys are stored unencrypted: protect the database accordingly (grant the
/// table to the store's role only, encrypt at rest, treat backups as secrets). The private
/// key never appears in `Debug` output, logs or errors.
///
/// A ring belongs to one authorization server: several issuers cannot share one ring name in
/// one store (and cannot share the grant tables or Redis prefix either; see the stores'
/// docs).
///
/// ```
/// use mcp_oauth::keys::SigningAlgorithm;
/// use mcp_oauth::store::{KeyRotation, KeyStore, MemoryStore, StoredKey};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let now = 1_700_000_000;
/// let first = StoredKey::generate(SigningAlgorithm::Es256, now)?;
/// assert!(store.create_initial_key("default", first.clone()).await?);
/// // A second instance starting at the same time loses, and loads the first key.
/// let late = StoredKey::generate(SigningAlgorithm::Es256, now)?;
/// assert!(!store.create_initial_key("default", late).await?);
///
/// let next = StoredKey::generate(SigningAlgorithm::Es256, now)?;
/// let rotated = store.rotate_key("default", &first.kid, next, now, now + 3900).await?;
/// assert_eq!(rotated, KeyRotation::Rotated);
/// assert_eq!(store.load_keys("default", now).await?.len(), 2, "the old key is still published");
/// assert_eq!(store.load_keys("default", now + 3900).await?.len(), 1, "…until publish_until");
/// assert!(!format!("{first:?}").contains(&format!("{:?}", first.private_key.as_pkcs8_der())));
/// # Ok(())
/// # }
/// ```
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `KeyStore`",
    note = "implement `mcp_oauth::store::KeyStore`, or use `MemoryStore`, `SqliteStore`, `PostgresStore` or `RedisStore`"
)]
pub trait KeyStore: Send + Sync + 'static {
    /// The current key of `ring` and every retired key whose `publish_until` is after `now`,
    /// in no particular order; empty for an unknown ring.
    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores `key` (a current key) as the current key of `ring` if, and only if, the ring
    /// has no current key. `true` when it did; `false` when another key is current (the caller
    /// then [loads](Self::load_keys) it).
    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError>;

    /// Atomically, if the current key of `ring` is `expected_current`: retires it (at `now`,
    /// published until `publish_until`) and makes `next` (a current key) current. Otherwise
    /// changes nothing and reports [`KeyRotation::Superseded`].
    async fn rotate_key(
        &self,
        ring: &str,
        expected_current: &str,
        next: StoredKey,
        now: u64,
        publish_until: u64,
    ) -> Result<KeyRotation, StoreError>;

    /// Deletes the retired keys of `ring` whose `publish_until` is at or before `now`; how
    /// many went. The current key is never pruned.
    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError>;

    /// Whether the keys outlive this process (on disk, or in a server other instances
    /// share). `true` unless the store says otherwise; [`MemoryStore`] says `false`, so an
    /// authorization server on a durable grant store refuses a ring kept in one (see
    /// [`GrantStore::is_durable`](super::GrantStore::is_durable)).
    fn is_durable(&self) -> bool {
        true
    }
}

#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        (**self).load_keys(ring, now).await
    }

    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
        (**self).create_initial_key(ring, key).await
    }

    async fn rotate_key(
        &self,
        ring: &str,
        expected_current: &str,
        next: StoredKey,
        now: u64,
        publish_until: u64,
    ) -> Result<KeyRotation, StoreError> {
        (**self)
            .rotate_key(ring, expected_current, next, now, publish_until)
            .await
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        (**self).prune_keys(ring, now).await
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }
}

/// Whether a retired key is still published at `now` (the current key always is).
pub(crate) fn is_live(key: &StoredKey, now: u64) -> bool {
    key.retired_at.is_none() || key.publish_until.is_some_and(|u| u > now)
}

/// Refuses a `next` or initial key that is not marked current.
pub(crate) fn check_new_current(key: &StoredKey) -> Result<(), StoreError> {
    if key.retired_at.is_some() || key.publish_until.is_some() {
        return Err(StoreError::conflict(format!(
            "key {}: a new current key must not be marked retired",
            key.kid
        )));
    }
    Ok(())
}

/// The key rings of a [`MemoryStore`].
#[derive(Debug, Default)]
pub(super) struct MemoryKeys(Mutex<HashMap<String, Vec<StoredKey>>>);

impl MemoryKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<StoredKey>>> {
        // Every method changes the map in one step, so a poisoned lock is safe to keep using.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    /// `false`: the keys are gone when the process ends.
    fn is_durable(&self) -> bool {
        false
    }

    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.keys.lock().get(ring).map_or_else(Vec::new, |keys| {
            keys.iter().filter(|k| is_live(k, now)).cloned().collect()
        }))
    }

    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
        check_new_current(&key)?;
        let mut rings = self.keys.lock();
        let keys = rings.entry(ring.to_owned()).or_default();
        if keys.iter().any(StoredKey::is_current) {
            return Ok(false);
        }
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::conflict(format!("key {} exists", key.kid)));
        }
        keys.push(key);
        Ok(true)
    }

    async fn rotate_key(
        &self,
        ring: &str,
        expected_current: &str,
        next: StoredKey,
        now: u64,
        publish_until: u64,
    ) -> Result<KeyRotation, StoreError> {
        check_new_current(&next)?;
        let mut rings = self.keys.lock();
        let keys = rings.entry(ring.to_owned()).or_default();
        let current = keys.iter().position(StoredKey::is_current);
        let Some(i) = current.filter(|&i| keys[i].kid == expected_current) else {
            return Ok(KeyRotation::Superseded {
                current: current.map(|i| keys[i].kid.clone()),
            });
        };
        if keys.iter().any(|k| k.kid == next.kid) {
            return Err(StoreError::conflict(format!("key {} exists", next.kid)));
        }
        keys[i].retired_at = Some(now);
        keys[i].publish_until = Some(publish_until);
        keys.push(next);
        Ok(KeyRotation::Rotated)
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        let mut rings = self.keys.lock();
        let Some(keys) = rings.get_mut(ring) else {
            return Ok(0);
        };
        let before = keys.len();
        keys.retain(|k| is_live(k, now));
        Ok((before - keys.len()) as u64)
    }
}
