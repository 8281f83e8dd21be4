//! Upstream tokens kept, encrypted at rest, for the host's own calls to the provider.
//!
//! An [`UpstreamOidc`](super::UpstreamOidc) login ends with tokens the provider issued to
//! *this server* (an access token, often a refresh token). They are **never** handed to MCP
//! clients — MCP clients get our own tokens, whose audience is our resource (no token
//! passthrough). By default they are dropped once the user is known. With
//! [`keep_upstream_tokens`](super::UpstreamOidcBuilder::keep_upstream_tokens) they are kept
//! instead, so that the host (a tool calling the provider's API on the user's behalf) can
//! read them back with
//! [`AuthorizationServer::upstream_tokens`](crate::server::AuthorizationServer::upstream_tokens).
//!
//! # How they are kept
//!
//! - One record per (provider, our subject), in the grant store
//!   ([`GrantStore::put_upstream_tokens`](crate::store::GrantStore::put_upstream_tokens)),
//!   replaced at every login of that user.
//! - Sealed with **AES-256-GCM** (aws-lc-rs) under a 32-byte [`UpstreamTokenKey`], with a
//!   random 96-bit nonce per record. The associated data binds the record to its provider,
//!   its subject and its key id, so a record copied to another user (or provider) does not
//!   open ([`UpstreamTokensError::Tampered`]), nor does one with a flipped bit.
//! - The record names the key it was sealed with, so keys can rotate: seal with a new key
//!   and keep the old one among the decryption keys
//!   ([`decrypt_upstream_tokens_with`](super::UpstreamOidcBuilder::decrypt_upstream_tokens_with));
//!   a record read with an old key is sealed again with the current one. A record naming a
//!   key that is not configured is refused ([`UpstreamTokensError::UnknownKey`]).
//! - The store holds no plaintext token. [`UpstreamTokens`]' `Debug` redacts the tokens,
//!   and no error or log line carries them.
//!
//! Record layout: `"MUT1"`, the key id's length (one byte) and bytes, the 12-byte nonce, then
//! the ciphertext and its 16-byte tag. The plaintext is a small JSON object.
//!
//! ```
//! use mcp_oauth::authn::upstream_tokens::{UpstreamTokenKey, UpstreamTokens};
//!
//! // A key from 32 random bytes (in production: from a secret manager, base64url-encoded).
//! let key = UpstreamTokenKey::from_base64url("2026-12", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")?;
//! assert_eq!(key.id(), "2026-12");
//! // Neither the key nor a token ever shows in Debug output.
//! assert!(!format!("{key:?}").contains("AAEC"));
//! # Ok::<(), mcp_oauth::authn::UpstreamError>(())
//! ```

use std::fmt;

use aws_lc_rs::aead::NONCE_LEN;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::UpstreamError;
use crate::store::StoreError;

/// The record's first bytes: format and version.
const MAGIC: &[u8; 4] = b"MUT1";
/// Domain separation for the associated data.
const AAD_CONTEXT: &[u8] = b"mcp-oauth/upstream-tokens/v1";
/// The longest key id.
const MAX_KEY_ID: usize = 64;
/// Tokens this close to expiry count as expired (a call made with them would race it).
pub(crate) const EXPIRY_MARGIN: u64 = 30;

/// A 32-byte AES-256-GCM key that seals kept upstream tokens, with the id recorded in every
/// record it seals (1 to 64 printable ASCII characters, e.g. `2026-12`), so that keys can
/// rotate. Its `Debug` shows the id only.
#[derive(Clone)]
pub struct UpstreamTokenKey {
    id: String,
    key: [u8; 32],
}

impl UpstreamTokenKey {
    /// A key from its id and 32 bytes (draw them from a secure random source and keep them
    /// in a secret manager; losing the key loses the kept tokens, which the next login
    /// replaces).
    #[must_use]
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Self {
        Self { id: id.into(), key }
    }

    /// A key from its id and its 32 bytes in base64url (padding optional), as kept in an
    /// environment variable.
    ///
    /// # Errors
    /// [`UpstreamError::Config`] when the text is not base64url of exactly 32 bytes (the
    /// message does not repeat the text).
    pub fn from_base64url(id: impl Into<String>, text: &str) -> Result<Self, UpstreamError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                UpstreamError::Config(
                    "an upstream token key must be 32 bytes, base64url-encoded".into(),
                )
            })?;
        Ok(Self::new(id, bytes))
    }

    /// The key id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn check(&self) -> Result<(), UpstreamError> {
        if self.id.is_empty()
            || self.id.len() > MAX_KEY_ID
            || !self.id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(UpstreamError::Config(format!(
                "an upstream token key id must be 1 to {MAX_KEY_ID} printable ASCII characters"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for UpstreamTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The tokens an upstream provider issued to this server at a user's login (or at a later
/// refresh), as kept. For the host's own calls to the provider: never hand them to an MCP
/// client. `Debug` redacts the tokens.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamTokens {
    /// The access token, for `Authorization: Bearer …` at the provider's APIs.
    pub access_token: String,
    /// The token type the provider named (usually `Bearer`).
    pub token_type: String,
    /// The refresh token, when the provider issued one (OIDC providers usually need the
    /// `offline_access` scope, Google `access_type=offline`).
    pub refresh_token: Option<String>,
    /// When the access token expires (seconds since the Unix epoch), when the provider said
    /// (`expires_in`).
    pub expires_at: Option<u64>,
    /// The scope the provider granted, when it said.
    pub scope: Option<String>,
    /// When these tokens were obtained (seconds since the Unix epoch).
    pub obtained_at: u64,
}

impl UpstreamTokens {
    /// Whether the access token has expired at `now` (or expires within 30 seconds); `false`
    /// when the provider gave no lifetime.
    #[must_use]
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at
            .is_some_and(|exp| exp <= now.saturating_add(EXPIRY_MARGIN))
    }

    /// Reads a token endpoint's JSON answer; `None` without an `access_token`. A missing
    /// `refresh_token` is taken from `previous` (a provider that does not rotate it).
    pub(crate) fn from_response(
        body: &Map<String, Value>,
        now: u64,
        previous: Option<&Self>,
    ) -> Option<Self> {
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let expires_in = body.get("expires_in").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        Some(Self {
            access_token: text("access_token")?,
            token_type: text("token_type").unwrap_or_else(|| "Bearer".to_owned()),
            refresh_token: text("refresh_token")
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            expires_at: expires_in.map(|s| now.saturating_add(s)),
            scope: text("scope").or_else(|| previous.and_then(|p| p.scope.clone())),
            obtained_at: now,
        })
    }
}

impl fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

/// Why kept upstream tokens could not be read. The messages never carry a token or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamTokensError {
    /// The authorization server does not keep upstream tokens: its authenticator is not an
    /// `UpstreamOidc`, or one built without `keep_upstream_tokens`.
    #[error("upstream tokens are not kept (UpstreamOidcBuilder::keep_upstream_tokens)")]
    NotKept,
    /// The store failed (retry later).
    #[error("upstream tokens: the store failed: {0}")]
    Store(#[source] StoreError),
    /// The record was sealed with a key id that is not among the configured keys.
    #[error(
        "upstream tokens: the record was sealed with key {key_id:?}, which is not among the decryption keys"
    )]
    UnknownKey {
        /// The key id the record names.
        key_id: String,
    },
    /// The record does not open: it was altered, or it belongs to another subject or
    /// provider (moved), or it is not a record at all.
    #[error("upstream tokens: the record does not open (altered, or not this user's)")]
    Tampered,
    /// The access token had expired and refreshing it at the provider failed (the refresh
    /// token was refused, or the provider could not be reached). The user has to sign in
    /// again for new tokens.
    #[error("upstream tokens: refreshing at the provider failed")]
    Refresh,
}

/// The plaintext inside a record.
#[derive(Serialize, Deserialize)]
struct Plain {
    #[serde(rename = "a")]
    access_token: String,
    #[serde(rename = "t")]
    token_type: String,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(rename = "o")]
    obtained_at: u64,
}

/// The keys: the first seals, all open.
#[derive(Clone)]
pub(crate) struct Sealer {
    keys: Vec<UpstreamTokenKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(UpstreamTokenKey::id))
            .finish()
    }
}

/// The associated data: context, then provider, subject and key id, each length-prefixed.
fn aad(provider: &str, subject: &str, key_id: &str) -> Vec<u8> {
    let mut out = AAD_CONTEXT.to_vec();
    for part in [provider, subject, key_id] {
        out.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

impl Sealer {
    /// `current` seals; `current` and `old` open. Key ids must be valid and distinct.
    pub(crate) fn new(
        current: UpstreamTokenKey,
        old: Vec<UpstreamTokenKey>,
    ) -> Result<Self, UpstreamError> {
        let mut keys = vec![current];
        keys.extend(old);
        for (i, k) in keys.iter().enumerate() {
            k.check()?;
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(UpstreamError::Config(format!(
                    "two upstream token keys have the id {:?}",
                    k.id
                )));
            }
        }
        Ok(Self { keys })
    }

    /// Whether `record` was sealed with the current key.
    pub(crate) fn is_current(&self, record: &[u8]) -> bool {
        split(record).is_some_and(|(id, _, _)| id == self.keys[0].id.as_bytes())
    }

    /// Seals `tokens` for `subject` at `provider` with the current key and a random nonce;
    /// `None` when sealing fails (never a record holding plaintext).
    pub(crate) fn seal(
        &self,
        provider: &str,
        subject: &str,
        tokens: &UpstreamTokens,
    ) -> Option<Vec<u8>> {
        let key = &self.keys[0];
        let plain = Plain {
            access_token: tokens.access_token.clone(),
            token_type: tokens.token_type.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires_at: tokens.expires_at,
            scope: tokens.scope.clone(),
            obtained_at: tokens.obtained_at,
        };
        let json = serde_json::to_vec(&plain).ok()?;
        let sealed = crate::crypto::aead::seal(&key.key, &aad(provider, subject, &key.id), &json)?;
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + key.id.len() + sealed.len());
        out.extend_from_slice(MAGIC);
        out.push(u8::try_from(key.id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens a record of `subject` at `provider`.
    pub(crate) fn open(
        &self,
        provider: &str,
        subject: &str,
        record: &[u8],
    ) -> Result<UpstreamTokens, UpstreamTokensError> {
        let (id, _, _) = split(record).ok_or(UpstreamTokensError::Tampered)?;
        let Some(key) = self.keys.iter().find(|k| k.id.as_bytes() == id) else {
            return Err(UpstreamTokensError::UnknownKey {
                key_id: String::from_utf8_lossy(id).into_owned(),
            });
        };
        // The nonce and the sealed body, as `crypto::aead::seal` laid them out.
        let sealed = &record[MAGIC.len() + 1 + id.len()..];
        let plain = crate::crypto::aead::open(&key.key, &aad(provider, subject, &key.id), sealed)
            .ok_or(UpstreamTokensError::Tampered)?;
        let p: Plain = serde_json::from_slice(&plain).map_err(|_| UpstreamTokensError::Tampered)?;
        Ok(UpstreamTokens {
            access_token: p.access_token,
            token_type: p.token_type,
            refresh_token: p.refresh_token,
            expires_at: p.expires_at,
            scope: p.scope,
            obtained_at: p.obtained_at,
        })
    }
}

/// `(key id, nonce, ciphertext and tag)` of a record.
fn split(record: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let rest = record.strip_prefix(MAGIC.as_slice())?;
    let (&len, rest) = rest.split_first()?;
    let (id, rest) = rest.split_at_checked(usize::from(len))?;
    let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
    Some((id, nonce, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "https://idp.example.com";

    fn tokens() -> UpstreamTokens {
        UpstreamTokens {
            access_token: "upstream-access-secret".into(),
            token_type: "Bearer".into(),
            refresh_token: Some("upstream-refresh-secret".into()),
            expires_at: Some(1_700_003_600),
            scope: Some("openid email".into()),
            obtained_at: 1_700_000_000,
        }
    }

    fn sealer(id: &str, byte: u8) -> Sealer {
        Sealer::new(UpstreamTokenKey::new(id, [byte; 32]), vec![]).unwrap()
    }

    #[test]
    fn a_sealed_record_opens_for_its_subject_and_holds_no_plaintext() {
        let s = sealer("k1", 7);
        let record = s.seal(P, "alice", &tokens()).unwrap();
        assert_eq!(s.open(P, "alice", &record).unwrap(), tokens());
        for secret in [
            "upstream-access-secret",
            "upstream-refresh-secret",
            "openid",
        ] {
            assert!(
                !record.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in the record"
            );
        }
        // Two seals of the same tokens differ (a fresh nonce each time).
        assert_ne!(record, s.seal(P, "alice", &tokens()).unwrap());
    }

    #[test]
    fn a_flipped_bit_anywhere_after_the_key_id_is_refused() {
        let s = sealer("k1", 7);
        let record = s.seal(P, "alice", &tokens()).unwrap();
        for i in (MAGIC.len() + 1 + 2)..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(s.open(P, "alice", &bad), Err(UpstreamTokensError::Tampered)),
                "byte {i}"
            );
        }
        assert!(matches!(
            s.open(P, "alice", &record[..record.len() - 1]),
            Err(UpstreamTokensError::Tampered)
        ));
        assert!(matches!(
            s.open(P, "alice", b"MUT1"),
            Err(UpstreamTokensError::Tampered)
        ));
        assert!(matches!(
            s.open(P, "alice", b""),
            Err(UpstreamTokensError::Tampered)
        ));
    }

    #[test]
    fn a_record_moved_to_another_subject_or_provider_is_refused() {
        let s = sealer("k1", 7);
        let record = s.seal(P, "alice", &tokens()).unwrap();
        assert!(matches!(
            s.open(P, "mallory", &record),
            Err(UpstreamTokensError::Tampered)
        ));
        assert!(matches!(
            s.open("https://other.example.com", "alice", &record),
            Err(UpstreamTokensError::Tampered)
        ));
        // Moving bytes between provider and subject changes the associated data too.
        let r2 = s
            .seal("https://idp.example.com|a", "lice", &tokens())
            .unwrap();
        assert!(matches!(
            s.open("https://idp.example.com", "a|lice", &r2),
            Err(UpstreamTokensError::Tampered)
        ));
    }

    #[test]
    fn an_unknown_key_id_or_another_key_is_refused() {
        let record = sealer("k1", 7).seal(P, "alice", &tokens()).unwrap();
        match sealer("k2", 7).open(P, "alice", &record) {
            Err(UpstreamTokensError::UnknownKey { key_id }) => assert_eq!(key_id, "k1"),
            other => panic!("{other:?}"),
        }
        // Same id, other bytes: does not open.
        assert!(matches!(
            sealer("k1", 8).open(P, "alice", &record),
            Err(UpstreamTokensError::Tampered)
        ));
        // A record whose key id was rewritten to a configured one does not open either.
        let two = Sealer::new(
            UpstreamTokenKey::new("k1", [7; 32]),
            vec![UpstreamTokenKey::new("k2", [7; 32])],
        )
        .unwrap();
        let mut moved = record.clone();
        moved[MAGIC.len() + 2] = b'2';
        assert!(matches!(
            two.open(P, "alice", &moved),
            Err(UpstreamTokensError::Tampered)
        ));
    }

    #[test]
    fn rotation_reads_old_records_and_seals_with_the_new_key() {
        let old = sealer("2026-01", 1);
        let record = old.seal(P, "alice", &tokens()).unwrap();
        let rotated = Sealer::new(
            UpstreamTokenKey::new("2026-02", [2; 32]),
            vec![UpstreamTokenKey::new("2026-01", [1; 32])],
        )
        .unwrap();
        assert!(!rotated.is_current(&record));
        assert_eq!(rotated.open(P, "alice", &record).unwrap(), tokens());
        let resealed = rotated.seal(P, "alice", &tokens()).unwrap();
        assert!(rotated.is_current(&resealed));
        assert!(matches!(
            old.open(P, "alice", &resealed),
            Err(UpstreamTokensError::UnknownKey { .. })
        ));
    }

    #[test]
    fn bad_key_ids_and_duplicates_are_configuration_errors() {
        for id in ["", "has space", &"x".repeat(65), "é"] {
            assert!(Sealer::new(UpstreamTokenKey::new(id, [0; 32]), vec![]).is_err());
        }
        assert!(
            Sealer::new(
                UpstreamTokenKey::new("a", [0; 32]),
                vec![UpstreamTokenKey::new("a", [1; 32])]
            )
            .is_err()
        );
        assert!(UpstreamTokenKey::from_base64url("a", "c2hvcnQ").is_err());
        let k = UpstreamTokenKey::from_base64url("a", &URL_SAFE_NO_PAD.encode([9u8; 32])).unwrap();
        assert_eq!(k.key, [9; 32]);
    }

    #[test]
    fn debug_redacts_tokens_and_keys() {
        let t = format!("{:?}", tokens());
        assert!(!t.contains("secret"), "{t}");
        assert!(t.contains("<redacted>"));
        let k = format!("{:?}", UpstreamTokenKey::new("k1", [0x41; 32]));
        assert!(!k.contains("65") && !k.contains("AAAA"), "{k}");
        let e = UpstreamTokensError::UnknownKey {
            key_id: "k9".into(),
        }
        .to_string();
        assert!(e.contains("k9"));
    }

    #[test]
    fn token_responses_are_read_with_the_previous_refresh_token_kept() {
        let body: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "access_token": "new-at", "expires_in": 3600, "token_type": "Bearer"
        }))
        .unwrap();
        let t = UpstreamTokens::from_response(&body, 100, Some(&tokens())).unwrap();
        assert_eq!(t.access_token, "new-at");
        assert_eq!(t.expires_at, Some(3700));
        assert_eq!(t.refresh_token.as_deref(), Some("upstream-refresh-secret"));
        assert!(!t.is_expired(3600) && t.is_expired(3671));
        assert!(UpstreamTokens::from_response(&Map::new(), 0, None).is_none());
    }
}
