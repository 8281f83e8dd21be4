//! Storage for the embedded authorization server: registered clients ([`ClientStore`]) and
//! everything a grant leaves behind ([`GrantStore`]): authorization codes, refresh-token
//! families, revoked access tokens, remembered consents, pending authorization requests,
//! client-assertion ids and upstream logins in progress ([`UpstreamLogin`]).
//!
//! # Rules every store follows
//! - **Secrets are stored as hashes.** Codes, refresh tokens and client secrets arrive here
//!   as [`SecretHash`]es (SHA-256); no store ever sees the raw value.
//! - **Every state change that must be atomic is one method.** Taking a code, redeeming one
//!   (spending it and creating its family together, [`GrantStore::redeem_code`]), claiming
//!   the delivery of its grant, rotating a refresh token (with the grace-window rule) and
//!   revoking a family are single calls, never get-then-delete, so two instances sharing a
//!   database cannot both win.
//! - **Time is passed in** (`now`, seconds since the Unix epoch), so behaviour is testable and
//!   identical across instances.
//!
//! Durable stores, re-exported here: `SqliteStore` (feature `sqlite`, one instance that must
//! survive restarts), `PostgresStore` (`postgres`) and `RedisStore` (`redis`), both for several
//! instances sharing one state.
//!
//! [`MemoryStore`] implements both traits and is the default; [`testkit`] (feature `testkit`)
//! holds the contract every implementation must pass — run it against your own store with one
//! call.
//!
//! The signing keys live in the store too ([`KeyStore`], implemented by every built-in
//! store), so that they survive restarts, instances sharing a store sign and verify with one
//! key ring, and a rotation by one reaches all. A store says whether it is durable
//! ([`GrantStore::is_durable`]; only [`MemoryStore`] and an in-memory SQLite store are not)
//! and hands out its key store ([`GrantStore::key_store`]); an authorization server on a
//! durable store then keeps its keys there unless given others, and refuses to start with
//! keys that would die with the process unless told
//! [`ephemeral_keys`](crate::server::AuthorizationServerBuilder::ephemeral_keys). See
//! [`KeyRing::from_store`](crate::keys::KeyRing::from_store) to open a ring by hand.
//!
//! So can the authorization server's per-address rate-limit counters ([`RateLimitStore`],
//! offered by PostgreSQL and Redis through [`GrantStore::rate_limit_store`]), so that every
//! instance behind a load balancer shares one budget. What expires is swept by the server on a
//! schedule ([`GrantStore::sweep`], and [`ClientStore::sweep_idle_clients`] for dynamically
//! registered clients idle for months); see [`server::retention`](crate::server::retention).
//!
//! ```
//! use mcp_oauth::store::{GrantStore, MemoryStore, SecretHash, CodeTake};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = MemoryStore::new();
//! let hash = SecretHash::of("no-such-code");
//! assert!(matches!(store.take_code(&hash, "family-1", 1_700_000_000).await.unwrap(), CodeTake::NotFound));
//! # }
//! ```

mod keys;
mod memory;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use keys::{KeyRotation, KeyStore, PrivateKey, StoredKey};
pub use memory::{MemoryLimits, MemoryStore};
pub use rate_limit::{RateLimitDecision, RateLimitStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sql::SqliteStore;

use crate::scope::ScopeSet;

/// How long past an access token's `exp` its revocation is remembered (and how much longer
/// than the longest access-token lifetime a revoked family's tombstone is kept): the largest
/// clock leeway a verifier may use ([`MAX_LEEWAY`](crate::verify::MAX_LEEWAY)), so a revoked
/// token is refused for as long as any verifier would still accept it.
pub const REVOCATION_HORIZON_SLACK: u64 = crate::verify::MAX_LEEWAY.as_secs();

/// The SHA-256 of a secret (code, refresh token, client secret). Compare with
/// [`ct_eq`](Self::ct_eq), never `==`, where timing could matter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretHash(#[serde(with = "hex32")] pub [u8; 32]);

impl SecretHash {
    /// Hashes a secret.
    #[must_use]
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time equality.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&other.0).into()
    }

    /// Lower-case hex, for stores that key on text.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`to_hex`](Self::to_hex) output.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; the hash is not a secret, but keep logs short.
        write!(f, "SecretHash({}…)", &self.to_hex()[..8])
    }
}

/// What identifies a dynamic registration request for deduplication: the SHA-256 of the
/// registering party (when registration is authenticated) and of the normalized registration
/// metadata (the server's [registration docs](crate::server::AuthorizationServerBuilder::dynamic_registration)
/// say exactly what goes in).
/// Identical public registrations share one client; a store finds it with
/// [`ClientStore::find_client_by_fingerprint`]. Not a secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientFingerprint(pub [u8; 32]);

impl ClientFingerprint {
    /// Lower-case hex, for stores that key on text.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ClientFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientFingerprint({}…)", &self.to_hex()[..12])
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::SecretHash(*v).to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::SecretHash::from_hex(&s)
            .map(|h| h.0)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// The backend error behind a [`StoreError`], shared so that the error stays `Clone`.
pub type StoreCause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A store could not do what was asked. Endpoints answer `503 temporarily_unavailable`, never
/// a 500, and never lose data.
///
/// Each variant says what failed in words (`context` / `what`: the backend, the operation,
/// the record) and, where a backend error caused it, keeps that error as the
/// [`source`](std::error::Error::source) (a `sqlx::Error`, a `redis::RedisError`, a
/// `serde_json::Error`). The `Display` text is the context followed by the backend's message,
/// so one log line is enough to diagnose; it never holds a database password, a raw code or
/// a token (connection errors name only `host:port/database`).
///
/// Build one with the small constructors ([`unavailable`](Self::unavailable),
/// [`backend`](Self::backend), [`conflict`](Self::conflict), [`corrupt`](Self::corrupt),
/// [`corrupt_with`](Self::corrupt_with)); match on the variant with `{ .. }`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is unreachable or failed.
    Unavailable {
        /// What failed, e.g. `PostgreSQL: cannot connect to 127.0.0.1:5432/oauth`.
        context: String,
        /// The backend error, when there is one.
        source: Option<StoreCause>,
    },
    /// A record with this key exists already.
    Conflict {
        /// Which record, e.g. `client abc exists`.
        what: String,
    },
    /// Stored data could not be decoded.
    Corrupt {
        /// Which record or column, e.g. `column expires_at`.
        what: String,
        /// The decoding error, when there is one.
        source: Option<StoreCause>,
    },
}

impl fmt::Display for StoreError {
    /// The context, then the backend's message after `": "` when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self {
            Self::Unavailable { context, source } => {
                write!(f, "store unavailable: {context}")?;
                source
            }
            Self::Conflict { what } => return write!(f, "conflict: {what}"),
            Self::Corrupt { what, source } => {
                write!(f, "corrupt record: {what}")?;
                source
            }
        };
        match source {
            Some(e) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for StoreError {
    /// The backend error itself (not the `Arc` around it), so callers can downcast it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } | Self::Corrupt { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            Self::Conflict { .. } => None,
        }
    }
}

impl StoreError {
    /// [`Unavailable`](Self::Unavailable) without a backend error (a timeout, a full memory
    /// store, a switched-off test double).
    #[must_use]
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    /// [`Unavailable`](Self::Unavailable) caused by a backend error, which is kept as the
    /// source. `context` must not hold a secret (no URL with a password).
    #[must_use]
    pub fn backend(
        context: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(std::sync::Arc::new(error)),
        }
    }

    /// [`Conflict`](Self::Conflict): a record with this key exists already.
    #[must_use]
    pub fn conflict(what: impl Into<String>) -> Self {
        Self::Conflict { what: what.into() }
    }

    /// [`Corrupt`](Self::Corrupt) without a decoding error.
    #[must_use]
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// [`Corrupt`](Self::Corrupt) caused by a decoding error, which is kept as the source.
    #[must_use]
    pub fn corrupt_with(
        what: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: Some(std::sync::Arc::new(error)),
        }
    }
}

/// How a client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenEndpointAuthMethod {
    /// A public client: no secret, PKCE only.
    #[default]
    None,
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523 §2.2): the client's public keys
    /// are its registered `jwks` or `jwks_uri` (kept in [`Client::extra`]).
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    /// The RFC 7591 name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// RFC 7591 / OIDC `application_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    /// A web application (redirects to `https` URLs).
    #[default]
    Web,
    /// A native application (loopback or custom-scheme redirects).
    Native,
}

/// Where a client came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    /// Registered through RFC 7591 dynamic client registration.
    #[default]
    Dynamic,
    /// Configured by the operator.
    Static,
    /// Identified by a client ID metadata document: the `client_id` is the document's URL.
    /// Such clients are fetched and cached in memory, never written to a store.
    MetadataDocument,
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client id. A configured or registered id never begins with `https://`, so it
    /// cannot collide with a client ID metadata document URL, which is the id of a
    /// [`MetadataDocument`](ClientSource::MetadataDocument) client.
    pub client_id: String,
    /// SHA-256 of the secret, for confidential clients.
    pub secret_hash: Option<SecretHash>,
    /// When the secret expires (seconds since the epoch); `0` means never.
    pub secret_expires_at: u64,
    /// The human-readable name the client registered (self-asserted).
    pub client_name: Option<String>,
    /// The registered redirect URIs, exactly as registered.
    pub redirect_uris: Vec<String>,
    /// Grant types (`authorization_code`, `refresh_token`).
    pub grant_types: Vec<String>,
    /// How the client authenticates at the token endpoint.
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// `web` or `native`.
    pub application_type: ApplicationType,
    /// The scopes the client registered for, if it named any.
    pub scope: Option<ScopeSet>,
    /// Other registered metadata (`client_uri`, `logo_uri`, `contacts`, …), echoed back.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// When the client was registered.
    pub issued_at: u64,
    /// When the client last used the token endpoint (for retention of idle clients).
    pub last_used_at: u64,
    /// Dynamic or static.
    pub source: ClientSource,
}

impl Client {
    /// Whether the client may use `grant_type`.
    #[must_use]
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    /// Whether the client is confidential: it holds a secret, or authenticates with a
    /// signed assertion ([`TokenEndpointAuthMethod::PrivateKeyJwt`]).
    #[must_use]
    pub fn is_confidential(&self) -> bool {
        self.secret_hash.is_some()
            || self.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt
    }
}

/// The key under which the built-in stores record a client assertion's `jti`
/// ([`GrantStore::record_assertion_id`]): the SHA-256 of the client id, a NUL and the `jti`,
/// so the record has a fixed size whatever the client sends and one client's ids never
/// collide with another's.
#[must_use]
pub fn assertion_id_key(client_id: &str, jti: &str) -> SecretHash {
    SecretHash::of(&format!("{client_id}\0{jti}"))
}

/// The key under which the built-in stores keep a user's upstream tokens
/// ([`GrantStore::put_upstream_tokens`]): the SHA-256 of the provider, a NUL and our subject,
/// so the key has a fixed size and two providers' records for one subject never collide.
#[must_use]
pub fn upstream_tokens_key(provider: &str, subject: &str) -> SecretHash {
    SecretHash::of(&format!("{provider}\0{subject}"))
}

/// Registered clients.
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `ClientStore`",
    note = "implement `mcp_oauth::store::ClientStore`, or use `MemoryStore`"
)]
pub trait ClientStore: Send + Sync + 'static {
    /// Stores a new client; [`StoreError::Conflict`] when the id exists.
    async fn insert_client(&self, client: Client) -> Result<(), StoreError>;
    /// Replaces or creates a client (used for configured, static clients at start-up).
    async fn upsert_client(&self, client: Client) -> Result<(), StoreError>;
    /// The client with this id.
    async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError>;
    /// Deletes a client; whether it existed.
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;
    /// Records that the client was just used (for retention).
    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError>;
    /// How many clients are registered.
    async fn count_clients(&self) -> Result<u64, StoreError>;

    /// Deletes the [dynamically registered](ClientSource::Dynamic) clients that are idle
    /// (last used, or registered when never used, before `idle_before`) and hold nothing
    /// live at `now`: no unrevoked, unexpired refresh family, no unexpired authorization
    /// code, no unexpired pending authorization request. Returns how many went. Static
    /// clients are never deleted. Deleting is idempotent, so several instances may sweep at
    /// once.
    ///
    /// The check and the delete are one atomic step per client (one statement, one script,
    /// one lock), so a client [touched](Self::touch_client) while the sweep runs is either
    /// still there afterwards or was gone before the touch. A store that does not hold the
    /// grants itself can only go by the times. The built-in stores also forget the
    /// remembered consents of the clients they delete (Redis keeps them: they are keyed by
    /// user, and a deleted client id never comes back).
    ///
    /// The default does nothing and returns `0`: such a store keeps every client forever.
    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        let _ = (idle_before, now);
        Ok(0)
    }

    /// Stores a new dynamically registered client, as [`insert_client`](Self::insert_client)
    /// does, and files it under `fingerprint`, so that
    /// [`find_client_by_fingerprint`](Self::find_client_by_fingerprint) finds it (the newest
    /// client filed under a fingerprint wins).
    ///
    /// The default ignores the fingerprint: such a store never deduplicates registrations.
    async fn insert_client_with_fingerprint(
        &self,
        client: Client,
        fingerprint: &ClientFingerprint,
    ) -> Result<(), StoreError> {
        let _ = fingerprint;
        self.insert_client(client).await
    }

    /// The newest client filed under `fingerprint` by
    /// [`insert_client_with_fingerprint`](Self::insert_client_with_fingerprint), as
    /// [`get_client`](Self::get_client) returns it; `None` when there is none. A deleted
    /// client is never returned (once the newest is deleted, a store may answer `None` or
    /// an older one). A lookup that fails is an error, never `None`: the registration then
    /// answers `503`, not a second client.
    ///
    /// The default finds nothing (no deduplication).
    async fn find_client_by_fingerprint(
        &self,
        fingerprint: &ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        let _ = fingerprint;
        Ok(None)
    }

    /// Deletes the [dynamically registered](ClientSource::Dynamic) clients that never
    /// completed an authorization (`last_used_at == 0`: never
    /// [touched](Self::touch_client)), registered before `registered_before`, that hold
    /// nothing live at `now` (the same check, in the same single atomic step per client, as
    /// [`sweep_idle_clients`](Self::sweep_idle_clients)). Returns how many went. A client
    /// with any recorded use is never deleted by this rule, however old.
    ///
    /// The default does nothing and returns `0`.
    async fn sweep_unused_clients(
        &self,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        let _ = (registered_before, now);
        Ok(0)
    }
}

/// What an authorization code stands for; stored under the code's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI of the authorization request, byte for byte.
    pub redirect_uri: String,
    /// Whether the authorization request carried `redirect_uri` itself (rather than the
    /// server using the client's only registered one). When it did, the token request must
    /// repeat it byte for byte; when it did not, the token request may omit it (OAuth 2.1
    /// §4.1.3). Records written before this field existed read as `true` (the strict rule).
    #[serde(default = "yes")]
    pub redirect_uri_in_request: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The granted scopes.
    pub scope: ScopeSet,
    /// The resource (RFC 8707) the tokens will be bound to.
    pub resource: String,
    /// The user.
    pub subject: String,
    /// Extra claims about the user to put into access tokens (e.g. `email`).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// When the user authenticated.
    pub auth_time: u64,
    /// When the code stops being redeemable.
    pub expires_at: u64,
}

/// `serde(default)` for fields whose safe default is `true`.
fn yes() -> bool {
    true
}

/// The outcome of [`GrantStore::take_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeTake {
    /// First redemption: the code is now spent and bound to the given family.
    Taken(AuthorizationCode),
    /// The code was redeemed before; here is the family its first redemption created and the
    /// code itself. The caller revokes that family (RFC 6749 §4.1.2: a replayed code revokes
    /// what it issued) **only** when the replay comes from the code's own client with the
    /// right PKCE verifier, which it checks against `code`; any other replay must change
    /// nothing, or anyone who saw a used code could log its user out.
    Replayed {
        /// The family bound at first redemption.
        family_id: String,
        /// The code as stored, so the caller can check who replays it.
        code: AuthorizationCode,
    },
    /// No such code, or it expired.
    NotFound,
}

/// What a read of a code that does not spend it finds ([`GrantStore::peek_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodePeek {
    /// The code is live and unspent: the caller checks the token request against it, then
    /// redeems it with [`GrantStore::redeem_code`].
    Live(AuthorizationCode),
    /// The code was spent; `family_id` is the family its redemption bound (see
    /// [`CodeTake::Replayed`]).
    Spent {
        /// The family bound when the code was spent.
        family_id: String,
        /// The code as stored.
        code: AuthorizationCode,
    },
    /// No such code, or it expired.
    NotFound,
    /// The store cannot read a code without spending it (the trait's default): the caller
    /// falls back to [`take_code`](GrantStore::take_code) and then
    /// [`create_family`](GrantStore::create_family), two steps.
    Unsupported,
}

/// What redeeming a code creates ([`GrantStore::redeem_code`]): the family and its first
/// refresh token, and the sealed first grant that a retry of the same exchange may be given
/// again ([`GrantStore::initial_grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRedemption {
    /// The family to create; its id is bound to the code.
    pub family: RefreshFamily,
    /// The hash of its first refresh token, when the client gets one.
    pub refresh: Option<SecretHash>,
    /// The first grant, sealed (AES-256-GCM) under a key only a holder of the code and its
    /// PKCE verifier can derive; opaque to the store, kept with the family until it is
    /// [claimed](GrantStore::claim_initial_grant) (or the family rotates).
    pub sealed_grant: Vec<u8>,
}

/// The outcome of [`GrantStore::redeem_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // as `CodeTake`: the code travels by value, once
pub enum CodeRedeem {
    /// The code is now spent, bound to the new family, and the family exists with its first
    /// refresh token: all in one atomic step.
    Redeemed,
    /// The code was spent before (a racing redemption won); nothing was created.
    Spent {
        /// The family bound when the code was spent.
        family_id: String,
        /// The code as stored.
        code: AuthorizationCode,
    },
    /// No such code, or it expired; nothing was created.
    NotFound,
}

/// A family's first grant, never delivered: the family is live, its first refresh token was
/// never rotated and the grant was never claimed ([`GrantStore::initial_grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialGrant {
    /// The family.
    pub family: RefreshFamily,
    /// What [`CodeRedemption::sealed_grant`] held.
    pub sealed_grant: Vec<u8>,
}

/// A refresh-token family: every refresh token descending from one authorization code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    /// The family id (also the prefix of every access token `jti` it issues).
    pub family_id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub subject: String,
    /// The scopes of the original grant (refreshes may narrow, never widen).
    pub scope: ScopeSet,
    /// The resource tokens are bound to.
    pub resource: String,
    /// Extra claims carried into access tokens.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// When the user authenticated.
    pub auth_time: u64,
    /// When the family was created.
    pub created_at: u64,
    /// When the family's refresh tokens stop working, whatever rotation does.
    pub expires_at: u64,
}

/// The outcome of [`GrantStore::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// The presented token was current; the new hash is now current and the presented one
    /// became the "previous" token, valid for `grace` more seconds.
    Rotated(RefreshFamily),
    /// The presented token is the previous one and still inside the grace window: a
    /// concurrent refresh. `successor` is what the winner stored with its rotation (the new
    /// refresh token, sealed with a key only the presented token can derive) so every racer
    /// gets the same successor.
    Grace {
        /// The family.
        family: RefreshFamily,
        /// The sealed successor, opaque to the store.
        sealed_successor: Vec<u8>,
    },
    /// An older token was replayed outside the grace window: the store has revoked the whole
    /// family (atomically, in the same operation).
    Reused {
        /// The revoked family.
        family_id: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Where a refresh token stands in its family, as [`GrantStore::family_of_refresh`] reports
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshTokenState {
    /// The family's current token: the one a refresh rotates.
    Current,
    /// The token the last rotation replaced. It still returns the same successor to a
    /// concurrent refresh until `rotated_at` plus the grace window; after that, presenting
    /// it is reuse.
    Previous {
        /// When it was rotated out (seconds since the epoch).
        rotated_at: u64,
    },
    /// An older token of the family: presenting it is reuse, which revokes the family.
    Retired,
}

/// A refresh token's live family and the token's place in it
/// ([`GrantStore::family_of_refresh`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLookup {
    /// The family (live: unrevoked, unexpired).
    pub family: RefreshFamily,
    /// Where the presented token stands.
    pub state: RefreshTokenState,
}

impl RefreshLookup {
    /// Whether the token can still be used at `now` with a grace window of `grace` seconds:
    /// it is current, or the previous one inside the window. A retired token, or the
    /// previous one past the window, is not (RFC 7662 introspects it as inactive).
    #[must_use]
    pub fn is_usable(&self, now: u64, grace: u64) -> bool {
        match self.state {
            RefreshTokenState::Current => true,
            RefreshTokenState::Previous { rotated_at } => now <= rotated_at.saturating_add(grace),
            RefreshTokenState::Retired => false,
        }
    }
}

/// A pending authorization request, parked while the user logs in and consents. Keyed by a
/// random id that travels in the login/consent form and in a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    /// The client.
    pub client_id: String,
    /// The validated redirect URI.
    pub redirect_uri: String,
    /// Whether the request carried `redirect_uri` (see
    /// [`AuthorizationCode::redirect_uri_in_request`]); older records read as `true`.
    #[serde(default = "yes")]
    pub redirect_uri_in_request: bool,
    /// The client's `state`, echoed on the redirect.
    pub state: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// Requested (already filtered) scopes.
    pub scope: ScopeSet,
    /// The resource.
    pub resource: String,
    /// The hash of the CSRF token bound to this request.
    pub csrf_hash: SecretHash,
    /// The user, once authenticated.
    pub subject: Option<String>,
    /// Claims about the user, once authenticated.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// When the user authenticated.
    pub auth_time: Option<u64>,
    /// When the pending request is dropped.
    pub expires_at: u64,
}

/// A record of an upstream login in progress ([`UpstreamOidc`](crate::authn::UpstreamOidc)):
/// a login attempt (its PKCE verifier, `nonce`, the authorization request it belongs to) or
/// a finished login waiting for the browser to return to `/authorize`. Kept in the grant
/// store so that every instance sharing the store can finish a login another started.
///
/// The store keys it by the [`SecretHash`] of the bearer handle (the `state` or a cookie
/// value), so the handle itself is never stored. `payload` is opaque to the store (JSON
/// written and read by the authenticator); it holds single-use, short-lived secrets (the PKCE
/// verifier, the nonce), so it is never logged: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamLogin {
    /// The authenticator's record, opaque to the store.
    pub payload: String,
    /// When the record stops being usable (seconds since the epoch): a take at or after it
    /// finds nothing, and the sweep drops it.
    pub expires_at: u64,
}

impl fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Live counts, for the operator's stats view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Registered clients.
    pub clients: u64,
    /// Unredeemed, unexpired codes.
    pub live_codes: u64,
    /// Unrevoked, unexpired refresh families.
    pub live_families: u64,
    /// Revoked access-token ids still remembered.
    pub revoked_tokens: u64,
}

/// Grants and their remains. See the [module docs](self) for the rules.
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `GrantStore`",
    note = "implement `mcp_oauth::store::GrantStore`, or use `MemoryStore`"
)]
pub trait GrantStore: Send + Sync + 'static {
    /// Stores a new code under its hash.
    async fn put_code(&self, hash: SecretHash, code: AuthorizationCode) -> Result<(), StoreError>;

    /// Redeems a code exactly once, atomically: the first caller gets
    /// [`CodeTake::Taken`] and binds `family_id` to the code; every later caller (until the
    /// code's expiry) gets [`CodeTake::Replayed`] with that family id.
    async fn take_code(
        &self,
        hash: &SecretHash,
        family_id: &str,
        now: u64,
    ) -> Result<CodeTake, StoreError>;

    /// Creates a family with its first refresh token (or none, when the client gets no
    /// refresh token: the family still anchors its access tokens for revocation).
    /// [`StoreError::Conflict`] when the family was revoked before it was created (a code
    /// replay raced the first redemption), so the first exchange fails too.
    async fn create_family(
        &self,
        family: RefreshFamily,
        refresh: Option<SecretHash>,
    ) -> Result<(), StoreError>;

    /// Reads a code without spending it, so the caller can check the token request against
    /// it before [`redeem_code`](Self::redeem_code). A code at or past its `expires_at` is
    /// [`CodePeek::NotFound`].
    ///
    /// The default answers [`CodePeek::Unsupported`], and the token endpoint then takes the
    /// code and creates the family in two steps ([`take_code`](Self::take_code), then
    /// [`create_family`](Self::create_family)).
    async fn peek_code(&self, hash: &SecretHash, now: u64) -> Result<CodePeek, StoreError> {
        let _ = (hash, now);
        Ok(CodePeek::Unsupported)
    }

    /// Spends a live code **and** creates its family in one atomic step: either the code is
    /// spent, bound to `redemption.family.family_id`, and the family exists with its first
    /// refresh token and the sealed grant, or nothing changed. Of racing callers exactly one
    /// gets [`CodeRedeem::Redeemed`]; the others get [`CodeRedeem::Spent`] with the
    /// winner's family id. [`StoreError::Conflict`] (and nothing spent) when the family id
    /// exists or was revoked. So a store failure (or a timeout before the commit) leaves the
    /// code unspent, and the client's retry is a first redemption.
    ///
    /// The default is the two steps [`take_code`](Self::take_code) and
    /// [`create_family`](Self::create_family), not atomic, and keeps no sealed grant.
    async fn redeem_code(
        &self,
        hash: &SecretHash,
        redemption: CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        let family_id = redemption.family.family_id.clone();
        match self.take_code(hash, &family_id, now).await? {
            CodeTake::Taken(_) => {
                self.create_family(redemption.family, redemption.refresh)
                    .await?;
                Ok(CodeRedeem::Redeemed)
            }
            CodeTake::Replayed { family_id, code } => Ok(CodeRedeem::Spent { family_id, code }),
            _ => Ok(CodeRedeem::NotFound),
        }
    }

    /// The first grant of family `family_id` while it was never delivered: the family is
    /// live at `now` (created, unrevoked, unexpired), its first refresh token was never
    /// rotated, it was created by [`redeem_code`](Self::redeem_code) with a sealed grant, and
    /// that grant was not [claimed](Self::claim_initial_grant). `None` otherwise. The token
    /// endpoint uses it to answer a retry of a code exchange whose first attempt failed after
    /// the commit (a store timeout, a failed signing) with the same grant instead of revoking
    /// it.
    ///
    /// The default finds nothing, so such a retry revokes the family (the RFC 6749 §4.1.2
    /// rule for a reused code).
    async fn initial_grant(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Option<InitialGrant>, StoreError> {
        let _ = (family_id, now);
        Ok(None)
    }

    /// Claims the delivery of family `family_id`'s first grant, atomically: `true` for the
    /// one caller that finds the sealed grant still there (it is dropped in the same step),
    /// `false` when it was claimed before, the family was rotated, or there never was one.
    /// The token endpoint answers with tokens only after a successful claim, so a code's grant
    /// is delivered at most once: a retry gets it only when no answer carrying it ever left
    /// the server ([`initial_grant`](Self::initial_grant)).
    ///
    /// The default answers `true` (a store that keeps no sealed grant delivers every
    /// successful exchange, as before).
    async fn claim_initial_grant(&self, family_id: &str) -> Result<bool, StoreError> {
        let _ = family_id;
        Ok(true)
    }

    /// Rotates a refresh token atomically; see [`Rotation`]. `sealed_successor` is kept with
    /// the rotation for `grace` seconds so concurrent refreshes return the same successor.
    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        successor: SecretHash,
        sealed_successor: Vec<u8>,
        now: u64,
        grace: u64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes a family: its refresh tokens stop working and every access token whose `jti`
    /// starts with `"{family_id}."` is refused. Idempotent; works for unknown ids too (a
    /// tombstone), so a later [`create_family`](Self::create_family) of that id fails.
    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError>;

    /// The live family (unrevoked, unexpired at `now`) a refresh token belongs to, with the
    /// token's [state](RefreshTokenState) in it: current, the previous one (with its rotation
    /// time) or retired. Used for RFC 7009 revocation, RFC 7662 introspection (only a usable
    /// token is active) and the ownership check before a rotation. `None` for an unknown
    /// token or a family that is revoked or expired.
    async fn family_of_refresh(
        &self,
        hash: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError>;

    /// Revokes one access token by `jti` until `expires_at`. Callers pass the token's `exp`
    /// plus [`REVOCATION_HORIZON_SLACK`], so the entry outlives every verifier's clock leeway.
    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError>;

    /// Whether an access token is revoked: its `jti` itself, or its family (`jti` is
    /// `"{family_id}.{random}"`).
    async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError>;

    /// The scopes `subject` already granted `client_id`, when consent is remembered.
    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError>;

    /// Remembers consent (replacing what was there).
    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &ScopeSet,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Parks a pending authorization request under `id`.
    async fn put_pending(&self, id: &str, pending: PendingAuthorization) -> Result<(), StoreError>;

    /// Reads a pending request (unexpired).
    async fn get_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError>;

    /// Removes and returns a pending request, atomically (one consent decision per request).
    async fn take_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError>;

    /// Records the `jti` of a client assertion (RFC 7523 `private_key_jwt`) until
    /// `expires_at`, atomically: `true` when this (`client_id`, `jti`) pair was not recorded
    /// (or its record expired before `now`), `false` when it is a replay. Instances sharing
    /// the store share the record, so an assertion used at one is refused at every other.
    ///
    /// The built-in stores key the record by the SHA-256 of the pair
    /// ([`assertion_id_key`]) and drop it in [`sweep`](Self::sweep) once expired.
    ///
    /// The default fails closed: it returns [`StoreError::Unavailable`], so a store that does
    /// not implement it never lets an assertion be replayed (`private_key_jwt` clients then
    /// get `503` until it does).
    async fn record_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let _ = (client_id, jti, expires_at, now);
        Err(StoreError::unavailable(
            "this store does not record client assertion ids (GrantStore::record_assertion_id)",
        ))
    }

    /// Keeps `record`, the sealed (encrypted and authenticated) upstream tokens of `subject`
    /// at `provider`, replacing any record for the pair. The record is opaque to the store:
    /// [`UpstreamOidc`](crate::authn::UpstreamOidc) seals it with AES-256-GCM before it gets
    /// here, so the store never holds a plaintext token. Records do not expire on their own
    /// (a refresh token may outlive any access token): they stay until replaced or
    /// [deleted](Self::delete_upstream_tokens).
    ///
    /// The built-in stores key the record by [`upstream_tokens_key`].
    ///
    /// The default fails closed: it returns [`StoreError::Unavailable`], so an upstream login
    /// configured to keep tokens on a store that cannot keep them is refused rather than
    /// silently dropping the tokens.
    async fn put_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
        record: Vec<u8>,
        now: u64,
    ) -> Result<(), StoreError> {
        let _ = (provider, subject, record, now);
        Err(StoreError::unavailable(
            "this store does not keep upstream tokens (GrantStore::put_upstream_tokens)",
        ))
    }

    /// The record [`put_upstream_tokens`](Self::put_upstream_tokens) kept for `subject` at
    /// `provider`, if any. The default fails closed ([`StoreError::Unavailable`]).
    async fn get_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = (provider, subject);
        Err(StoreError::unavailable(
            "this store does not keep upstream tokens (GrantStore::get_upstream_tokens)",
        ))
    }

    /// Forgets the upstream tokens of `subject` at `provider`; `true` when there were some.
    /// The default fails closed ([`StoreError::Unavailable`]).
    async fn delete_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let _ = (provider, subject);
        Err(StoreError::unavailable(
            "this store does not keep upstream tokens (GrantStore::delete_upstream_tokens)",
        ))
    }

    /// Keeps an upstream login record under `key` (the hash of its handle), replacing any
    /// record there. See [`UpstreamLogin`].
    ///
    /// The default fails closed: it returns [`StoreError::Unavailable`], so an
    /// [`UpstreamOidc`](crate::authn::UpstreamOidc) on a store that does not implement it
    /// answers every sign-in with a `503` page rather than losing track of a login.
    async fn put_upstream_login(
        &self,
        key: &SecretHash,
        login: UpstreamLogin,
    ) -> Result<(), StoreError> {
        let _ = (key, login);
        Err(StoreError::unavailable(
            "this store does not keep upstream logins (GrantStore::put_upstream_login)",
        ))
    }

    /// Removes and returns the upstream login record under `key`, atomically: of any number
    /// of concurrent callers (on any instance sharing the store) at most one gets it. A
    /// record whose `expires_at` is at or before `now` is never returned (`None`, as for a
    /// missing one). The built-in stores drop expired records in [`sweep`](Self::sweep) (Redis
    /// lets them expire).
    ///
    /// The default fails closed like [`put_upstream_login`](Self::put_upstream_login).
    async fn take_upstream_login(
        &self,
        key: &SecretHash,
        now: u64,
    ) -> Result<Option<UpstreamLogin>, StoreError> {
        let _ = (key, now);
        Err(StoreError::unavailable(
            "this store does not keep upstream logins (GrantStore::take_upstream_login)",
        ))
    }

    /// Drops everything expired; returns how many records went.
    async fn sweep(&self, now: u64) -> Result<u64, StoreError>;

    /// Live counts.
    async fn stats(&self, now: u64) -> Result<StoreStats, StoreError>;

    /// The shared rate-limit counters this store offers, if any: an authorization server on
    /// this store then counts its per-address limits here, so every instance sharing the
    /// store shares one budget (unless turned off with
    /// [`shared_rate_limits(false)`](crate::server::AuthorizationServerBuilder::shared_rate_limits)).
    /// [`PostgresStore`] and [`RedisStore`] offer
    /// themselves; the default offers nothing, and the server counts in process.
    fn rate_limit_store(&self) -> Option<&dyn RateLimitStore> {
        None
    }

    /// Whether what this store keeps outlives the process: it is on disk, or in a server
    /// that other instances share. `true` unless the store says otherwise (so a store that
    /// does not say is treated as durable, the safe assumption);
    /// [`MemoryStore`] and [`SqliteStore::in_memory`] say `false`.
    ///
    /// An [`AuthorizationServer`](crate::server::AuthorizationServer) on a durable grant
    /// store keeps its signing keys durable too, or tokens it issued would all be refused
    /// after a restart while the grants behind them live on: given no
    /// [`key_ring`](crate::server::AuthorizationServerBuilder::key_ring), it keeps the keys
    /// in this store's [`key_store`](Self::key_store); it refuses to build when there is none,
    /// or when the key ring it was given lives in this process only (a generated key, or a
    /// ring kept in a [`MemoryStore`]), unless told
    /// [`ephemeral_keys`](crate::server::AuthorizationServerBuilder::ephemeral_keys).
    fn is_durable(&self) -> bool {
        true
    }

    /// Where an authorization server on this (durable) store keeps its signing keys when it
    /// is given no key ring: usually the store itself, as a [`KeyStore`]. The built-in
    /// database stores ([`SqliteStore`], [`PostgresStore`], [`RedisStore`]) hand out
    /// themselves; the default hands out nothing, and a server on a durable store then needs
    /// an explicit key ring (see [`is_durable`](Self::is_durable)).
    ///
    /// A store that also implements [`KeyStore`] offers it with `Some(self)`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mcp_oauth::store::{GrantStore, MemoryStore};
    ///
    /// // A memory store is not durable: a server on it generates a key per process.
    /// let memory = Arc::new(MemoryStore::new());
    /// assert!(!memory.is_durable());
    /// assert!(memory.key_store().is_none());
    /// ```
    fn key_store(self: Arc<Self>) -> Option<Arc<dyn KeyStore>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use std::error::Error as _;

    /// A backend error is kept as the source (downcastable), and shows after the context.
    #[test]
    fn backend_errors_are_kept_as_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::backend("PostgreSQL: cannot connect to db:5432/oauth", io);
        assert!(matches!(
            &err,
            StoreError::Unavailable { context, .. } if context == "PostgreSQL: cannot connect to db:5432/oauth"
        ));
        assert_eq!(
            err.to_string(),
            "store unavailable: PostgreSQL: cannot connect to db:5432/oauth: refused"
        );
        let source = err.source().expect("the backend error is kept");
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        // Clone shares the cause.
        assert!(err.clone().source().is_some());

        let bad = serde_json::from_str::<u32>("x").unwrap_err();
        let err = StoreError::corrupt_with("column client", bad);
        assert!(
            err.to_string()
                .starts_with("corrupt record: column client: "),
            "{err}"
        );
        assert!(
            err.source()
                .unwrap()
                .downcast_ref::<serde_json::Error>()
                .is_some()
        );
    }

    /// Without a cause there is no source and no trailing separator.
    #[test]
    fn errors_without_a_cause_have_no_source() {
        for (err, text) in [
            (
                StoreError::unavailable("memory store: too many codes"),
                "store unavailable: memory store: too many codes",
            ),
            (StoreError::conflict("code exists"), "conflict: code exists"),
            (
                StoreError::corrupt("key k: unknown algorithm"),
                "corrupt record: key k: unknown algorithm",
            ),
        ] {
            assert_eq!(err.to_string(), text);
            assert!(err.source().is_none());
        }
    }
}
