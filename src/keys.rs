//! Signing keys and the [`KeyRing`] that holds them, with overlapping rotation.
//!
//! The embedded authorization server signs access tokens (RFC 9068 JWTs) with the ring's
//! current key; the layer's [`JwtVerifier`](crate::verify::JwtVerifier) verifies with the same
//! ring, with no network call; `/jwks.json` publishes the current key and the previous ones,
//! so tokens signed before a rotation stay valid until they expire.
//!
//! Keys are ES256 (P-256) by default, or EdDSA (Ed25519). Key ids are RFC 7638 thumbprints.
//!
//! # Shared rings
//! A ring built with [`KeyRing::generate`] lives in this process only (one built with
//! [`KeyRing::new`] from a key loaded from PEM or DER comes back after a restart, but is not
//! shared). Keys that survive restarts, and one ring for several instances behind a load
//! balancer, come from a store: an
//! [`AuthorizationServer`](crate::server::AuthorizationServer) on a durable store (SQLite,
//! PostgreSQL, Redis) keeps its ring there by itself, and [`KeyRing::from_store`] opens one
//! by hand (any [`KeyStore`](crate::store::KeyStore), with a ring name, rotation schedule or
//! refresh of your choice). The first instance creates the key, the others load it; each reloads
//! every 30 s and at once when a token names a key it does not hold (at most once per
//! cooldown, so made-up key ids cannot make it hammer the store);
//! [`KeyRing::rotate_fresh`] rotates for every instance with a compare-and-swap in the
//! store. Retired keys stay published until the tokens they signed have expired.
//!
//! ```
//! use mcp_oauth::keys::{KeyRing, SigningAlgorithm, SigningKey};
//!
//! let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
//! let first = ring.current().kid().to_owned();
//! ring.rotate(SigningKey::generate(SigningAlgorithm::EdDsa).unwrap()).unwrap();
//! assert_ne!(ring.current().kid(), first);
//! assert_eq!(ring.jwks().keys.len(), 2, "the previous key is still published");
//! ```

mod encryption;
mod shared;

use std::fmt;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

pub use encryption::{AesGcmKeyEncryption, KEK_ENV, KEK_ID_ENV, KeyEncryption};
#[cfg(feature = "server")]
pub(crate) use shared::needed_retention;
pub use shared::{RotationOutcome, StoreRingBuilder};

/// How many retired keys a ring keeps publishing after rotations.
pub const DEFAULT_RETAINED_KEYS: usize = 2;

/// The algorithms the crate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256: the default, understood by every client and IdP.
    #[default]
    Es256,
    /// Ed25519: smaller and faster to verify.
    EdDsa,
}

impl SigningAlgorithm {
    /// The JOSE algorithm.
    #[must_use]
    pub fn jose(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    /// The JWA name (`ES256`, `EdDSA`), as stores record it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named by [`name`](Self::name); `None` for any other name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// The underlying error of a [`KeyError`] (from the JWT or base64 library), shared so that
/// the error stays `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

fn cause(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
    Arc::new(e)
}

/// A key could not be generated, loaded or used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The system's key generation failed.
    #[error("key generation failed")]
    Generation,
    /// The key material is not a valid PKCS#8 key of the stated algorithm.
    #[error("invalid key material: {0}")]
    Invalid(#[source] Cause),
    /// A stored key's thumbprint is not its `kid` (a record that was tampered with or mixed
    /// up).
    #[error("stored key {kid:?}: the key's thumbprint does not match its kid")]
    KidMismatch {
        /// The `kid` the record claims.
        kid: String,
    },
    /// A setting of a shared ring ([`StoreRingBuilder`]) is not acceptable.
    #[error("shared key ring: {setting} {reason}")]
    InvalidSetting {
        /// The setting (`ring_name`, `refresh_interval`, …).
        setting: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(#[source] Cause),
    /// The [`KeyStore`](crate::store::KeyStore) holding a shared ring failed.
    #[error("key store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A shared ring refuses to sign: its last reload failed, or its view of the store is
    /// older than its refresh interval (plus a short grace). Another instance may have
    /// rotated and the key this instance holds as current may be on its way out of the
    /// published set; a token signed with it could outlive it. Minting answers `503
    /// temporarily_unavailable` until a reload succeeds (verifying with known keys goes on).
    #[error(
        "shared key ring {ring:?}: not reloaded for {age_secs} s{}; refusing to sign with a key other instances may have retired",
        if *reload_failed { " (the last reload failed)" } else { "" }
    )]
    Stale {
        /// The ring's name.
        ring: String,
        /// Seconds since the last successful load.
        age_secs: u64,
        /// Whether the last reload failed.
        reload_failed: bool,
    },
    /// A stored key could not be wrapped or unwrapped ([`KeyEncryption`]): the
    /// key-encryption key is missing, another one, or the KMS failed. Never key material.
    #[error("signing key encryption: {0}")]
    Encryption(String),
    /// [`KeyRing::rotate`] on a ring kept in a store: a key only this process would know.
    /// Use [`KeyRing::rotate_to`] or [`KeyRing::rotate_fresh`], which rotate in the store.
    #[error(
        "this key ring is kept in a store: rotate it with rotate_to(key).await or rotate_fresh().await, which every instance sees"
    )]
    SharedRing,
}

/// One private signing key with its public JWK.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    /// The PKCS#8 v1 DER the key was loaded from, for a store to keep when the key is
    /// rotated into a shared ring ([`KeyRing::rotate_to`]). Never printed.
    der: Vec<u8>,
    /// Generated in this process and never handed out ([`SigningKey::generate`]): the key
    /// dies with the process. Keys loaded from PEM, DER or a store are durable.
    generated: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh key from the operating system's random source.
    ///
    /// The key lives in this process only: tokens it signed stop verifying when the process
    /// restarts. An [`AuthorizationServer`](crate::server::AuthorizationServer) on a durable
    /// store therefore refuses a ring of such keys unless told
    /// [`ephemeral_keys`](crate::server::AuthorizationServerBuilder::ephemeral_keys); keys
    /// loaded with [`from_pkcs8_pem`](Self::from_pkcs8_pem) or
    /// [`from_pkcs8_der`](Self::from_pkcs8_der) come back after a restart and are accepted.
    ///
    /// # Errors
    /// When the crypto backend cannot generate a key.
    pub fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let mut key = Self::generate_with_der(alg)?.0;
        key.generated = true;
        Ok(key)
    }

    /// A fresh key and its PKCS#8 v1 DER, for a store to keep.
    pub(crate) fn generate_with_der(alg: SigningAlgorithm) -> Result<(Self, Vec<u8>), KeyError> {
        let der = generate_pkcs8(alg)?;
        Ok((Self::from_pkcs8_der(alg, &der)?, der))
    }

    /// Loads a PKCS#8 v1 DER private key (for Ed25519, v2 documents are refused by the JWK
    /// conversion; export v1).
    ///
    /// # Errors
    /// When the bytes are not a key of `alg`.
    pub fn from_pkcs8_der(alg: SigningAlgorithm, der: &[u8]) -> Result<Self, KeyError> {
        let encoding = match alg {
            SigningAlgorithm::Es256 => EncodingKey::from_ec_der(der),
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(der),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg.jose())
            .map_err(|e| KeyError::Invalid(cause(e)))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError::Invalid(cause(e)))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Invalid(cause(e)))?;
        Ok(Self {
            kid,
            alg,
            encoding,
            decoding,
            jwk,
            der: der.to_vec(),
            generated: false,
        })
    }

    /// Loads a PEM (PKCS#8) private key.
    ///
    /// # Errors
    /// When the text is not a PEM key of `alg`.
    pub fn from_pkcs8_pem(alg: SigningAlgorithm, pem: &str) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| KeyError::Invalid(cause(e)))?;
        Self::from_pkcs8_der(alg, &der)
    }

    /// The key id (RFC 7638 SHA-256 thumbprint), placed in every token's `kid` header.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    #[must_use]
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The public key as a JWK (`kid`, `alg`, `use: sig`).
    #[must_use]
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Whether the key was generated in this process ([`generate`](Self::generate)) rather
    /// than loaded (PEM, DER or a store), so that it is lost on a restart.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn is_generated(&self) -> bool {
        self.generated
    }

    /// The PKCS#8 v1 DER of the private key (for a store to keep).
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// The key to verify signatures with.
    #[must_use]
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims` as a JWT with header `typ` (e.g. `at+jwt`), `alg` and `kid`.
    ///
    /// # Errors
    /// When the claims cannot be serialised or the backend fails to sign.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg.jose());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Signing(cause(e)))
    }
}

#[cfg(feature = "aws-lc-rs")]
fn generate_pkcs8(alg: SigningAlgorithm) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    crate::crypto::install_provider();
    match alg {
        SigningAlgorithm::Es256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| KeyError::Generation)?;
            let doc = pair.to_pkcs8v1().map_err(|_| KeyError::Generation)?;
            Ok(doc.as_ref().to_vec())
        }
        SigningAlgorithm::EdDsa => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
            let doc = pair.to_pkcs8v1().map_err(|_| KeyError::Generation)?;
            Ok(doc.as_ref().to_vec())
        }
    }
}

#[derive(Debug)]
struct RingState {
    current: Arc<SigningKey>,
    previous: Vec<Arc<SigningKey>>,
}

/// The current signing key plus recently retired ones, shared by the token issuer, the local
/// verifier and the JWKS endpoint. Cloning is cheap and clones share state, so a rotation is
/// seen everywhere at once.
#[derive(Clone)]
pub struct KeyRing {
    state: Arc<RwLock<Arc<RingState>>>,
    retain: usize,
    /// The store a shared ring is kept in ([`KeyRing::from_store`]).
    shared: Option<Arc<shared::Binding>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.snapshot();
        f.debug_struct("KeyRing")
            .field("current", &state.current.kid)
            .field(
                "previous",
                &state
                    .previous
                    .iter()
                    .map(|k| k.kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeyRing {
    /// Whether `other` is this ring or a clone of it (one shared state): exact, where
    /// comparing key ids would take two rings loaded from one store for the same.
    #[cfg(feature = "server")]
    pub(crate) fn is_same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// A ring whose current key is `key`.
    #[must_use]
    pub fn new(key: SigningKey) -> Self {
        Self {
            state: Arc::new(RwLock::new(Arc::new(RingState {
                current: Arc::new(key),
                previous: Vec::new(),
            }))),
            retain: DEFAULT_RETAINED_KEYS,
            shared: None,
        }
    }

    /// A ring with a freshly generated key, which lives in this process only (see
    /// [`SigningKey::generate`]).
    ///
    /// # Errors
    /// When key generation fails.
    pub fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        Ok(Self::new(SigningKey::generate(alg)?))
    }

    /// Sets how many retired keys stay published (and accepted) after rotations.
    #[must_use]
    pub fn with_retained_keys(mut self, n: usize) -> Self {
        self.retain = n;
        self
    }

    fn snapshot(&self) -> Arc<RingState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the ring's keys die with this process: it is kept in a key store that is not
    /// durable, or in no store and its current key was generated here
    /// ([`KeyRing::generate`], [`SigningKey::generate`], [`rotate_fresh`](Self::rotate_fresh))
    /// rather than loaded from PEM or DER.
    #[cfg(feature = "server")]
    pub(crate) fn is_ephemeral(&self) -> bool {
        match &self.shared {
            Some(binding) => !binding.is_durable(),
            None => self.current().is_generated(),
        }
    }

    /// Makes `key` the signing key of this process's ring; the old one keeps verifying until
    /// it falls off the end of the retained list.
    ///
    /// # Errors
    /// [`KeyError::SharedRing`] on a ring kept in a store ([`from_store`](Self::from_store)),
    /// which is left unchanged: a key rotated in here would be known to this process only
    /// (other instances would refuse its tokens, and the next reload would drop it). Rotate a
    /// shared ring with [`rotate_to`](Self::rotate_to) or
    /// [`rotate_fresh`](Self::rotate_fresh), which go through the store.
    pub fn rotate(&self, key: SigningKey) -> Result<(), KeyError> {
        if self.shared.is_some() {
            return Err(KeyError::SharedRing);
        }
        let previous = self.current().kid().to_owned();
        let kid = key.kid().to_owned();
        self.rotate_local(key);
        crate::audit::key_rotated(&kid, &previous);
        Ok(())
    }

    /// Makes `key` the signing key, on every instance: on a ring kept in a store, a
    /// compare-and-swap in the store on the current key this instance knows, as
    /// [`rotate_fresh`](Self::rotate_fresh) does with a generated key (the store keeps the
    /// private key; of instances rotating at once one wins, the others get
    /// [`RotationOutcome::Superseded`]); on other rings, like [`rotate`](Self::rotate).
    ///
    /// # Errors
    /// [`KeyError::Store`] when the store fails.
    pub async fn rotate_to(&self, key: SigningKey) -> Result<RotationOutcome, KeyError> {
        match &self.shared {
            Some(b) => {
                let _flight = b.flight.lock().await;
                b.rotate_locked(self, Some(key)).await
            }
            None => {
                let previous = self.current().kid().to_owned();
                let kid = key.kid().to_owned();
                self.rotate_local(key);
                crate::audit::key_rotated(&kid, &previous);
                Ok(RotationOutcome::Rotated { kid })
            }
        }
    }

    /// Rotates this process's ring (no store).
    fn rotate_local(&self, key: SigningKey) {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut previous = vec![guard.current.clone()];
        previous.extend(guard.previous.iter().cloned());
        previous.truncate(self.retain);
        *guard = Arc::new(RingState {
            current: Arc::new(key),
            previous,
        });
    }

    /// The key new tokens are signed with.
    #[must_use]
    pub fn current(&self) -> Arc<SigningKey> {
        self.snapshot().current.clone()
    }

    /// The key with id `kid`, current or retained.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<Arc<SigningKey>> {
        let state = self.snapshot();
        std::iter::once(&state.current)
            .chain(state.previous.iter())
            .find(|k| k.kid == kid)
            .cloned()
    }

    /// [`find`](Self::find), and on a miss in a shared ring, one reload from the store (at
    /// most once per cooldown, whatever the number of unknown `kid`s presented), for a key
    /// another instance rotated in.
    ///
    /// # Errors
    /// [`KeyError::Store`] when the reload was due and the store failed.
    pub(crate) async fn find_or_reload(
        &self,
        kid: &str,
    ) -> Result<Option<Arc<SigningKey>>, KeyError> {
        if let Some(k) = self.find(kid) {
            return Ok(Some(k));
        }
        match &self.shared {
            Some(binding) => binding.reload_for_unknown_kid(self, kid).await,
            None => Ok(None),
        }
    }

    /// Replaces the whole ring (a shared ring, after loading it from the store).
    fn replace(&self, current: Arc<SigningKey>, previous: Vec<Arc<SigningKey>>) {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(RingState { current, previous });
    }

    /// The public keys to publish at `jwks_uri`: the current key first.
    #[must_use]
    pub fn jwks(&self) -> JwkSet {
        let state = self.snapshot();
        JwkSet {
            keys: std::iter::once(&state.current)
                .chain(state.previous.iter())
                .map(|k| k.jwk.clone())
                .collect(),
        }
    }

    /// Signs `claims` with the current key and header `typ`.
    ///
    /// # Errors
    /// When signing fails; [`KeyError::Stale`] on a ring kept in a store whose last reload
    /// failed or is older than its refresh interval (plus a short grace): it never signs
    /// with a key other instances may have retired.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        if let Some(b) = &self.shared {
            b.check_fresh()?;
        }
        self.current().sign(typ, claims)
    }

    /// [`sign`](Self::sign), after reloading a stale shared ring (at most once a second):
    /// what the authorization server mints with.
    ///
    /// # Errors
    /// As [`sign`](Self::sign), when the ring is still stale after the reload.
    pub(crate) async fn sign_fresh<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, KeyError> {
        if let Some(b) = &self.shared {
            b.ensure_fresh(self).await?;
        }
        self.current().sign(typ, claims)
    }
}
