use async_trait::async_trait;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{TokenVerifier, VerifyError};
use crate::context::{AuthContext, TokenKind};
use crate::scope::ScopeSet;

/// Static API keys for scripts and CLI clients, beside OAuth.
///
/// Keys are kept only as SHA-256 hashes and a presented key is compared against every
/// stored hash in constant time, so neither memory dumps nor response timing reveal a key.
/// Each key has its own subject and scopes, and the resulting [`AuthContext`] has
/// [`TokenKind::ApiKey`], so handlers can tell keys from OAuth tokens.
///
/// Prefer [`with_key_hash`](Self::with_key_hash) in production, so the configuration never
/// holds the key itself: `printf %s "$KEY" | sha256sum` gives the hex digest.
///
/// ```
/// use mcp_oauth::verify::{ApiKeyVerifier, TokenVerifier};
/// use mcp_oauth::scope::ScopeSet;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // sha256("sk-live-abcdefghijklmnop")
/// let hash = "3d1e5b3c4e0fb0cf8e9b8ad9e2b58ff0d52bbb2e1bc1d0cb2d2a9cbe1e4a3bfa";
/// let keys = ApiKeyVerifier::new()
///     .with_key_hash(hash, "nightly-job", ScopeSet::parse("read").unwrap())
///     .unwrap();
/// assert!(keys.verify("sk-live-abcdefghijklmnop").await.is_err()); // hash above is made up
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ApiKeyVerifier {
    keys: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    hash: [u8; 32],
    subject: String,
    scopes: ScopeSet,
}

impl std::fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field(
                "subjects",
                &self
                    .keys
                    .iter()
                    .map(|k| k.subject.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The hex digest was not 64 hex characters.
#[derive(Debug, Clone, thiserror::Error)]
#[error("an API key hash must be the 64-character hex SHA-256 digest of the key")]
pub struct InvalidKeyHash;

impl ApiKeyVerifier {
    /// No keys yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key given in clear text; only its hash is kept.
    #[must_use]
    pub fn with_key(mut self, key: &str, subject: impl Into<String>, scopes: ScopeSet) -> Self {
        self.keys.push(Entry {
            hash: Sha256::digest(key.as_bytes()).into(),
            subject: subject.into(),
            scopes,
        });
        self
    }

    /// Adds a key by the hex SHA-256 digest of its bytes.
    ///
    /// # Errors
    /// When `hex_sha256` is not 64 hex characters.
    pub fn with_key_hash(
        mut self,
        hex_sha256: &str,
        subject: impl Into<String>,
        scopes: ScopeSet,
    ) -> Result<Self, InvalidKeyHash> {
        let hex = hex_sha256.trim();
        if hex.len() != 64 {
            return Err(InvalidKeyHash);
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| InvalidKeyHash)?;
        }
        self.keys.push(Entry {
            hash,
            subject: subject.into(),
            scopes,
        });
        Ok(self)
    }

    /// How many keys are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[async_trait]
impl TokenVerifier for ApiKeyVerifier {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Look at every entry, whatever matches, so timing says nothing about which key (or
        // whether any) matched.
        let mut found: Option<&Entry> = None;
        for entry in &self.keys {
            let eq: bool = entry.hash.ct_eq(&presented).into();
            if eq && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(VerifyError::Unknown)?;
        Ok(AuthContext::new(entry.subject.clone(), TokenKind::ApiKey)
            .with_scopes(entry.scopes.clone()))
    }
}
