//! Envelope encryption of the private signing keys a store keeps: [`KeyEncryption`], with an
//! AES-256-GCM key-encryption key ([`AesGcmKeyEncryption`]) or a KMS of your own.

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{KeyError, SigningAlgorithm};

/// The first bytes of a wrapped key record: format and version. A plain PKCS#8 key starts
/// with `0x30` (an ASN.1 `SEQUENCE`), so the two never mix up.
const MAGIC: &[u8; 4] = b"MSK1";
/// Domain separation for the associated data.
const CONTEXT: &[u8] = b"mcp-oauth/signing-key/v1";
/// The longest key-encryption key id.
const MAX_KEK_ID: usize = 64;

/// The environment variable [`AesGcmKeyEncryption::from_env`] reads the key from: 32 bytes,
/// base64url.
pub const KEK_ENV: &str = "MCP_OAUTH_KEY_ENCRYPTION_KEY";
/// The environment variable naming the key's id (`env` when unset); change it when the key
/// changes, so stored keys say which key wrapped them.
pub const KEK_ID_ENV: &str = "MCP_OAUTH_KEY_ENCRYPTION_KEY_ID";

/// Wraps and unwraps the private signing keys of a shared key ring
/// ([`KeyRing::from_store`](super::KeyRing::from_store)) so that the store (its tables,
/// replicas and backups) holds only wrapped keys: whoever reads them cannot sign tokens
/// without the key-encryption key too.
///
/// [`AesGcmKeyEncryption`] wraps with a 32-byte key kept outside the store (an environment
/// variable, a secret manager). A KMS plugs in by implementing this trait: `wrap` calls its
/// encrypt operation (or generates a data key), `unwrap` its decrypt operation; both are
/// `async` and run only when a ring loads or rotates a key, never per request. `context`
/// names the key being wrapped (ring, key id, algorithm); bind it as associated data (AES-GCM
/// AAD, a KMS "encryption context") so a wrapped key cannot be moved to another row.
///
/// Keys written in plain text (by an older version, or before encryption was configured)
/// still load; the ring logs a warning for each, and the next rotation replaces them with a
/// wrapped key ([`KeyRing::rotate_fresh`](super::KeyRing::rotate_fresh)).
#[async_trait]
pub trait KeyEncryption: Send + Sync + 'static {
    /// The id of the key-encryption key, recorded with every key it wraps (1 to 64
    /// printable ASCII characters), so that a key wrapped by another one is recognised.
    fn key_id(&self) -> &str;

    /// Wraps `plain` (a PKCS#8 private key) bound to `context`.
    ///
    /// # Errors
    /// [`KeyError::Encryption`] when it cannot (a KMS unreachable).
    async fn wrap(&self, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps what [`wrap`](Self::wrap) returned for the same `context`, wrapped by the key
    /// `key_id` (this one's, or an older one a KMS still knows).
    ///
    /// # Errors
    /// [`KeyError::Encryption`] when it cannot: another key, tampered bytes, a KMS
    /// unreachable.
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, KeyError>;
}

/// [`KeyEncryption`] with AES-256-GCM under a 32-byte key-encryption key, a random nonce per
/// key (the primitives that seal kept upstream tokens). Its `Debug` shows the id only, and
/// the key's bytes are wiped from memory when the last copy is dropped.
#[derive(Clone)]
pub struct AesGcmKeyEncryption {
    id: String,
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl fmt::Debug for AesGcmKeyEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesGcmKeyEncryption")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AesGcmKeyEncryption {
    /// A key-encryption key from its id and 32 bytes (draw them from a secure random source;
    /// losing them loses the stored signing keys, which a new ring replaces: every token
    /// issued before is then refused).
    ///
    /// # Errors
    /// [`KeyError::InvalidSetting`] for an id that is empty, longer than 64 or not printable
    /// ASCII.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self, KeyError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_KEK_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::InvalidSetting {
                setting: "key_encryption",
                reason: format!("the key id must be 1 to {MAX_KEK_ID} printable ASCII characters"),
            });
        }
        Ok(Self {
            id,
            key: zeroize::Zeroizing::new(key),
        })
    }

    /// A key-encryption key from its id and its 32 bytes in base64url (padding optional).
    ///
    /// # Errors
    /// [`KeyError::InvalidSetting`] when the text is not base64url of exactly 32 bytes (the
    /// message never repeats it), or for a bad id.
    pub fn from_base64url(id: impl Into<String>, text: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .ok()
            .map(zeroize::Zeroizing::new)
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| KeyError::InvalidSetting {
                setting: "key_encryption",
                reason: "a key-encryption key must be 32 bytes, base64url-encoded".into(),
            })?;
        Self::new(id, bytes)
    }

    /// The key in [`KEK_ENV`] (`MCP_OAUTH_KEY_ENCRYPTION_KEY`, 32 bytes base64url; make one
    /// with `openssl rand -base64 32 | tr '+/' '-_'`), with the id in [`KEK_ID_ENV`] (`env`
    /// when unset); `None` when the variable is not set.
    ///
    /// # Errors
    /// As [`from_base64url`](Self::from_base64url), when the variable is set but invalid.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        let Ok(text) = std::env::var(KEK_ENV) else {
            return Ok(None);
        };
        let id = std::env::var(KEK_ID_ENV).unwrap_or_else(|_| "env".to_owned());
        Self::from_base64url(id, &text).map(Some)
    }
}

#[async_trait]
impl KeyEncryption for AesGcmKeyEncryption {
    fn key_id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        crate::crypto::aead::seal(&self.key, context, plain)
            .ok_or_else(|| KeyError::Encryption("AES-256-GCM sealing failed".into()))
    }

    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        if key_id != self.id {
            return Err(KeyError::Encryption(format!(
                "the key was wrapped by key-encryption key {key_id:?}, not {:?}",
                self.id
            )));
        }
        crate::crypto::aead::open(&self.key, context, wrapped).ok_or_else(|| {
            KeyError::Encryption(
                "the wrapped key does not open with this key-encryption key (another key, or tampered with)".into(),
            )
        })
    }
}

/// The associated data of a stored key: what it is, whose, which.
pub(crate) fn context(ring: &str, kid: &str, alg: SigningAlgorithm) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    for part in [ring, kid, alg.name()] {
        out.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Whether stored bytes are a wrapped key (rather than plain PKCS#8).
pub(crate) fn is_wrapped(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// Wraps PKCS#8 `plain` into a stored record: `MSK1`, the KEK id's length and bytes, then
/// what the [`KeyEncryption`] returned.
pub(crate) async fn wrap(
    enc: &dyn KeyEncryption,
    plain: &[u8],
    context: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let id = enc.key_id();
    let id_len = u8::try_from(id.len())
        .ok()
        .filter(|&n| n > 0 && usize::from(n) <= MAX_KEK_ID)
        .ok_or_else(|| {
            KeyError::Encryption("the key-encryption key id must be 1 to 64 bytes".into())
        })?;
    let body = enc.wrap(plain, context).await?;
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + id.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(id_len);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Unwraps a stored record made by [`wrap`].
pub(crate) async fn unwrap(
    enc: &dyn KeyEncryption,
    stored: &[u8],
    context: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let malformed = || KeyError::Encryption("a wrapped key record is malformed".into());
    let rest = stored
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(malformed)?;
    let (&len, rest) = rest.split_first().ok_or_else(malformed)?;
    let (id, body) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(malformed)?;
    let id = std::str::from_utf8(id).map_err(|_| malformed())?;
    enc.unwrap(id, body, context).await
}
