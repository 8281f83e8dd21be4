//! A store on Redis (or Valkey), shared by every instance of a deployment: [`RedisStore`]
//! (feature `redis`).
//!
//! It implements [`ClientStore`] and [`GrantStore`]
//! with exactly the semantics of [`MemoryStore`](super::MemoryStore) and passes the
//! [`testkit`](super::testkit):
//!
//! - **Every atomic step is one Lua script**, which Redis runs alone: taking a code (it is
//!   marked with the family of its first redemption, the replay marker, in the same step),
//!   rotating a refresh token with the grace-window rule, and revoking the family on reuse.
//!   Of 64 racing redemptions exactly one wins; of 32 racing refreshes exactly one rotates
//!   and the others get its sealed successor.
//! - **Secrets are stored only as SHA-256 hashes** (hex in key names); pending requests are
//!   keyed by the hash of their id.
//! - **Keys expire on their own** (`EXPIREAT`, a few minutes after the record's own expiry,
//!   which is what the logic compares against, so clock skew between the instances and Redis
//!   does not matter); [`sweep`](super::GrantStore::sweep) drops what expired early, keeps
//!   the counts of [`stats`](super::GrantStore::stats) exact, and is cheap.
//!   Kept upstream tokens ([`put_upstream_tokens`](super::GrantStore::put_upstream_tokens),
//!   already sealed when they arrive) are the exception: they stay until replaced or deleted.
//! - **One connection, multiplexed and reconnecting** ([`redis::aio::ConnectionManager`]);
//!   every operation is bounded (5 s by default), so a Redis that is down makes the endpoints
//!   answer `503 temporarily_unavailable` instead of hanging.
//!
//! It also keeps the authorization server's shared rate-limit counters (one script per hit,
//! keys that expire by themselves) and sweeps idle clients in bounded steps; see
//! [`RateLimitStore`](super::RateLimitStore) and
//! [`sweep_idle_clients`](super::ClientStore::sweep_idle_clients).
//!
//! All keys begin with a prefix (`mcp_oauth:` by default, [`RedisStore::with_prefix`]), so
//! one Redis database can serve several deployments. The scripts reach keys named from
//! others (a refresh token's family), so this store needs a standalone Redis (with replicas
//! or Sentinel as you like), not Redis Cluster. Redis 5 or newer.
//!
//! Registered clients, remembered consents and live refresh families are data you want to
//! keep: run Redis with persistence (AOF, `appendfsync everysec` or `always`), or use
//! PostgreSQL.
//!
//! # Eviction and failover: what Redis can lose
//! - **`maxmemory-policy` must be `noeviction`.** Every key this store writes has a TTL, so
//!   under any `volatile-*` policy (and any `allkeys-*` one) a full Redis evicts them:
//!   revocation tombstones (a revoked token or family works again), refresh tokens (users
//!   signed out), signing keys (tokens refused). With `noeviction` a full Redis refuses
//!   writes instead, which the endpoints answer with `503`. [`RedisStore::connect`] reads
//!   the policy (`CONFIG GET maxmemory-policy`) and refuses to start on any other; where the
//!   command is refused (managed services often disable `CONFIG`), it logs an error-level
//!   warning that it could not check, and starts. The named opt-out is
//!   [`RedisOptions::allow_eviction_policy`].
//! - **A failover loses the last writes.** Redis replicates asynchronously: when a primary
//!   dies, what it had not yet sent to the promoted replica is gone, typically the last
//!   second. That can undo a rotation (the client holds a successor the store never saw: it
//!   signs in again), a revocation (a token revoked in that second works again until it
//!   expires), a registration or a code exchange (the client retries). `WAIT 1 <ms>` per
//!   write would narrow it at a cost in latency; this store does not do it. If losing a
//!   revocation is not acceptable, use PostgreSQL with synchronous replication.
//! - **One issuer per prefix.** The keys under one prefix hold one authorization server's
//!   clients, grants and signing keys; several issuers cannot share a prefix (a code, token
//!   or client of one would be honoured by the other). Give each its own prefix
//!   ([`RedisStore::with_prefix`]) or database.
//!
//! ```no_run
//! # #[cfg(feature = "server")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::AuthorizationServer;
//! use mcp_oauth::store::redis::RedisStore;
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379/0")
//!     .await?
//!     .with_prefix("my-mcp:oauth:");
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new().with_password("alice", "correct horse battery staple"))
//!     .store(store) // and the signing keys: every instance signs with one ring
//!     .build()
//!     .await?;
//! # let _ = server;
//! # Ok(())
//! # }
//! ```

mod retention;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client as RedisClient, RedisError, Script};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AuthorizationCode, Client, ClientFingerprint, ClientSource, ClientStore, CodePeek, CodeRedeem,
    CodeRedemption, CodeTake, GrantStore, InitialGrant, PendingAuthorization, RefreshFamily,
    RefreshLookup, RefreshTokenState, Rotation, SecretHash, StoreError, StoreStats,
};
use crate::scope::ScopeSet;

mod keys;
mod sessions;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "mcp_oauth:";

/// How long every store operation may take by default.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a revoked family (or the tombstone of an unknown one) is remembered after the
/// revocation: at least as long as the longest access token it may have issued (24 h), plus
/// the largest verifier leeway.
const REVOKED_KEEP_SECS: u64 = 24 * 3600 + super::REVOCATION_HORIZON_SLACK;

/// How long after a record's own expiry Redis drops its key: the logic compares the stored
/// expiry with the caller's clock, so the key must outlive it by more than any clock skew.
const EXPIRY_SLACK_SECS: u64 = 300;

/// Times handed to the scripts are capped here, where Lua's doubles are still exact.
const MAX_TIME: u64 = 1 << 50;

/// How many expired records one sweep step removes.
const SWEEP_BATCH: u64 = 500;

/// A store on Redis. See the [module docs](self).
///
/// Cloning is cheap: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How [`RedisStore::connect_with`] connects; [`RedisOptions::default`] is what
/// [`RedisStore::connect`] uses.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisOptions {
    allow_eviction: bool,
}

impl RedisOptions {
    /// The defaults: the server's `maxmemory-policy` must be `noeviction`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts even when the server's `maxmemory-policy` may evict this store's keys (see
    /// the [module docs](self#eviction-and-failover-what-redis-can-lose)): revoked tokens
    /// may work again and users may be signed out when Redis fills up. Logged as an error at
    /// every start. For caches you do not mind losing, or a Redis that can never fill.
    pub fn allow_eviction_policy(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }
}

/// What [`RedisStore::check_eviction_policy`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// `noeviction`: a full Redis refuses writes rather than dropping keys.
    NoEviction,
    /// Another policy (`volatile-lru`, `allkeys-lfu`, …): keys of this store may be evicted.
    Evicting(String),
    /// The server refused `CONFIG GET` (managed services often do): unknown.
    Unknown,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`, `rediss://` for TLS when the
    /// `redis` crate's TLS feature is on, `redis+unix:///path`), waiting at most 5 s, and
    /// checks that the server never evicts this store's keys (`maxmemory-policy
    /// noeviction`; see the [module docs](self#eviction-and-failover-what-redis-can-lose)).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is invalid or the server cannot be reached;
    /// [`StoreError::Conflict`] when the server's `maxmemory-policy` is not `noeviction`
    /// (the message names the policy and the fix).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// [`connect`](Self::connect) with options, e.g. the opt-out
    /// [`allow_eviction_policy`](RedisOptions::allow_eviction_policy).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let store = Self::connect_unchecked(url).await?;
        let policy = store.check_eviction_policy().await?;
        match policy {
            EvictionPolicy::NoEviction => {}
            EvictionPolicy::Unknown => {
                tracing::error!(
                    target: "mcp_oauth::store",
                    "Redis refused CONFIG GET maxmemory-policy: could not check that it never evicts keys; make sure the policy is noeviction, or revoked tokens may work again and users be signed out when it fills up"
                );
            }
            EvictionPolicy::Evicting(p) if options.allow_eviction => {
                tracing::error!(
                    target: "mcp_oauth::store",
                    policy = %p,
                    "Redis maxmemory-policy may evict this store's keys (allowed by allow_eviction_policy): when it fills up, revoked tokens may work again and users be signed out"
                );
            }
            EvictionPolicy::Evicting(p) => {
                return Err(StoreError::conflict(format!(
                    "Redis maxmemory-policy is {p}: every key of this store has a TTL, so a full Redis would evict revocations (revoked tokens work again), refresh tokens and signing keys; set `maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction, and in redis.conf), or opt out with RedisOptions::allow_eviction_policy(true)"
                )));
            }
        }
        Ok(store)
    }

    /// Reads the server's `maxmemory-policy`. [`connect`](Self::connect) does this; call it
    /// yourself on a store made with [`from_manager`](Self::from_manager).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn check_eviction_policy(&self) -> Result<EvictionPolicy, StoreError> {
        self.run(|mut conn| async move {
            let reply: Result<Vec<String>, RedisError> = ::redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(v) => Ok(match v.get(1).map(|p| p.to_ascii_lowercase()) {
                    Some(p) if p == "noeviction" => EvictionPolicy::NoEviction,
                    Some(p) => EvictionPolicy::Evicting(p),
                    None => EvictionPolicy::Unknown,
                }),
                // Refused (unknown or renamed command, ACL): the server answered.
                Err(e)
                    if e.kind()
                        == ::redis::ErrorKind::Server(::redis::ServerErrorKind::ResponseError)
                        || e.code().is_some() =>
                {
                    Ok(EvictionPolicy::Unknown)
                }
                Err(e) => Err(err(e)),
            }
        })
        .await
    }

    /// Connects without checking the eviction policy.
    async fn connect_unchecked(url: &str) -> Result<Self, StoreError> {
        let client =
            RedisClient::open(url).map_err(|e| StoreError::backend("Redis: invalid URL", e))?;
        let target = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(DEFAULT_OPERATION_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            DEFAULT_OPERATION_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::unavailable(format!("Redis: {target}: no answer in time")))?
        .map_err(|e| StoreError::backend(format!("Redis: cannot connect to {target}"), e))?;
        Ok(Self::from_manager(conn))
    }

    /// A store on a connection manager you configured.
    #[must_use]
    pub fn from_manager(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
            timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Sets the prefix of every key (`mcp_oauth:` by default); instances sharing a store must
    /// use the same one.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// How long one store operation may take before it fails with
    /// [`StoreError::Unavailable`] (5 s by default).
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn index(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs one operation with a fresh handle on the shared connection, bounded in time.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match tokio::time::timeout(self.timeout, op(self.conn.clone())).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::unavailable(format!(
                "Redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

fn err(e: RedisError) -> StoreError {
    StoreError::backend("Redis", e)
}

/// A time for the scripts (capped where Lua's doubles are exact).
fn t(v: u64) -> u64 {
    v.min(MAX_TIME)
}

fn expire_at(v: u64) -> u64 {
    t(v).saturating_add(EXPIRY_SLACK_SECS)
}

fn to_json<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::corrupt_with(format!("Redis: {what}"), e))
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt_with(format!("Redis: {what}"), e))
}

fn parse_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::corrupt(format!("Redis: {what}: not a number")))
}

/// A script's reply: a tag, then its values.
struct Reply(Vec<Vec<u8>>);

impl Reply {
    fn tag(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    fn take(&mut self, i: usize, what: &str) -> Result<Vec<u8>, StoreError> {
        self.0
            .get_mut(i)
            .map(std::mem::take)
            .ok_or_else(|| StoreError::corrupt(format!("Redis: {what}: short script reply")))
    }
}

/// Lua helpers shared by the scripts: integral numbers as Redis wants them.
macro_rules! lua {
    ($body:literal) => {
        concat!(
            "local function fmt(n) return string.format('%.0f', n) end\n",
            $body
        )
    };
}

/// KEYS: code, codes index. ARGV: record, expires_at, member, expire_at.
static PUT_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'exp', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"
    ))
});

/// KEYS: code, codes index. ARGV: family, now, member.
static TAKE_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local v = redis.call('HMGET', KEYS[1], 'rec', 'exp', 'used')
if not v[1] then return {'none'} end
if tonumber(v[2]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'none'}
end
if v[3] then return {'replayed', v[3], v[1]} end
redis.call('HSET', KEYS[1], 'used', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return {'taken', v[1]}
"
    ))
});

/// KEYS: family, families index, live index, refresh key (may be unused).
/// ARGV: id, record, expires_at, current hash or '', expire_at.
static CREATE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'exp', ARGV[3], 'keep', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'cur', ARGV[4])
  redis.call('SET', KEYS[4], ARGV[1])
  redis.call('EXPIREAT', KEYS[4], ARGV[5])
end
redis.call('EXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"
    ))
});

/// KEYS: code, codes index, family, families index, live index, refresh key (may be unused).
/// ARGV: family id, now, code member, family record, family expires_at, current hash or '',
/// family expire_at, sealed grant. Taking the code and creating its family, in one step.
static REDEEM_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local v = redis.call('HMGET', KEYS[1], 'rec', 'exp', 'used')
if not v[1] then return {'none'} end
if tonumber(v[2]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'none'}
end
if v[3] then return {'replayed', v[3], v[1]} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], 'used', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'rec', ARGV[4], 'exp', ARGV[5], 'keep', ARGV[5], 'prev_sealed', ARGV[8])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], 'cur', ARGV[6])
  redis.call('SET', KEYS[6], ARGV[1])
  redis.call('EXPIREAT', KEYS[6], ARGV[7])
end
redis.call('EXPIREAT', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return {'redeemed'}
"
    ))
});

/// KEYS: family. 1 when the first grant's sealed copy was there (and is dropped now), 0
/// when it was claimed before or the family rotated (its `prev_sealed` is then the
/// successor's, and stays).
static CLAIM_INITIAL_GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if redis.call('HEXISTS', KEYS[1], 'prev') == 1 then return 0 end
return redis.call('HDEL', KEYS[1], 'prev_sealed')
"
    ))
});

/// KEYS: presented refresh key. ARGV: prefix, presented hash, successor hash, sealed
/// successor, now, grace, revoked keep, slack.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local fid = redis.call('GET', KEYS[1])
if not fid then return {'invalid'} end
local fk = ARGV[1] .. 'fam:' .. fid
local f = redis.call('HMGET', fk, 'rec', 'exp', 'rev', 'cur', 'prev', 'prev_at', 'prev_sealed', 'keep')
local now = tonumber(ARGV[5])
if not f[1] or f[3] or tonumber(f[2]) <= now then return {'invalid'} end
if f[4] == ARGV[2] then
  redis.call('HSET', fk, 'cur', ARGV[3], 'prev', ARGV[2], 'prev_at', ARGV[5], 'prev_sealed', ARGV[4])
  local rk = ARGV[1] .. 'rt:' .. ARGV[3]
  redis.call('SET', rk, fid)
  redis.call('EXPIREAT', rk, fmt(tonumber(f[2]) + tonumber(ARGV[8])))
  return {'rotated', f[1]}
end
if f[5] == ARGV[2] and now <= tonumber(f[6]) + tonumber(ARGV[6]) then
  return {'grace', f[1], f[7] or ''}
end
local keep = math.max(tonumber(f[8]), now + tonumber(ARGV[7]))
redis.call('HSET', fk, 'rev', ARGV[5], 'keep', fmt(keep))
redis.call('EXPIREAT', fk, fmt(keep + tonumber(ARGV[8])))
redis.call('ZADD', ARGV[1] .. 'families', fmt(keep), fid)
redis.call('ZREM', ARGV[1] .. 'families:live', fid)
return {'reused', fid}
"
    ))
});

/// KEYS: family, families index, live index. ARGV: id, now, revoked keep, slack.
static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local f = redis.call('HMGET', KEYS[1], 'rev', 'keep')
if f[1] then return 0 end
local keep = tonumber(ARGV[2]) + tonumber(ARGV[3])
if f[2] then keep = math.max(keep, tonumber(f[2])) end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'keep', fmt(keep))
redis.call('EXPIREAT', KEYS[1], fmt(keep + tonumber(ARGV[4])))
redis.call('ZADD', KEYS[2], fmt(keep), ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"
    ))
});

/// KEYS: refresh key. ARGV: prefix, now, presented hash.
static FAMILY_OF_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local fid = redis.call('GET', KEYS[1])
if not fid then return {'none'} end
local f = redis.call('HMGET', ARGV[1] .. 'fam:' .. fid, 'rec', 'exp', 'rev', 'cur', 'prev', 'prev_at')
if not f[1] or f[3] or tonumber(f[2]) <= tonumber(ARGV[2]) then return {'none'} end
if f[4] == ARGV[3] then return {'family', f[1], 'current'} end
if f[5] == ARGV[3] and f[6] then return {'family', f[1], 'previous', f[6]} end
return {'family', f[1], 'retired'}
"
    ))
});

/// KEYS: jti, jti index. ARGV: jti, expires_at, expire_at.
static REVOKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
redis.call('SET', KEYS[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"
    ))
});

/// KEYS: assertion id. ARGV: expires_at, now, expire_at. 1 when recorded now, 0 for a
/// replay of a live one.
static RECORD_ASSERTION_ID: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local e = redis.call('GET', KEYS[1])
if e and tonumber(e) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"
    ))
});

/// KEYS: upstream login. ARGV: record, expire_at. (`SET … EXAT` and `GETDEL` need Redis
/// 6.2; these scripts work on Redis 5.)
static PUT_UPSTREAM_LOGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"
    ))
});

/// KEYS: upstream login. The record, deleted in the same step (false when there is none).
static TAKE_UPSTREAM_LOGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
"
    ))
});

/// KEYS: jti, family. ARGV: now.
static IS_REVOKED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local e = redis.call('GET', KEYS[1])
if e and tonumber(e) >= tonumber(ARGV[1]) then return 1 end
return redis.call('HEXISTS', KEYS[2], 'rev')
"
    ))
});

/// KEYS: client, clients index. ARGV: id, record, last used, only-if-new ('1'/'0').
static PUT_CLIENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'used', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"
    ))
});

/// KEYS: client. ARGV: now.
static TOUCH_CLIENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end
return 1
"
    ))
});

/// KEYS: client, clients index. ARGV: id.
static DELETE_CLIENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"
    ))
});

/// KEYS: pending, pending index. ARGV: member, record, expires_at, expire_at.
static PUT_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'exp', ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"
    ))
});

/// KEYS: pending, pending index. ARGV: member, now, take ('1'/'0').
static GET_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local v = redis.call('HMGET', KEYS[1], 'rec', 'exp')
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if not v[1] or tonumber(v[2]) <= tonumber(ARGV[2]) then return {'none'} end
return {'pending', v[1]}
"
    ))
});

/// KEYS: index, second index to clean (or the same). ARGV: key prefix of the members, max
/// score (inclusive, or `(n` exclusive), batch size. Deletes up to a batch of members with
/// their keys; returns how many went.
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #ids
"
    ))
});

#[async_trait]
impl ClientStore for RedisStore {
    async fn insert_client(&self, client: Client) -> Result<(), StoreError> {
        self.put_client(client, true).await
    }

    async fn upsert_client(&self, client: Client) -> Result<(), StoreError> {
        self.put_client(client, false).await
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        let key = self.key("client", client_id);
        self.run(|mut c| async move {
            let (rec, used): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
                .arg(&key)
                .arg("rec")
                .arg("used")
                .query_async(&mut c)
                .await
                .map_err(err)?;
            let Some(rec) = rec else {
                return Ok(None);
            };
            let mut client: Client = from_json(&rec, "client")?;
            if let Some(used) = used {
                client.last_used_at = parse_u64(&used, "client last_used_at")?;
            }
            Ok(Some(client))
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let (key, index) = (self.key("client", client_id), self.index("clients"));
        self.run(|mut c| async move {
            let n: u64 = DELETE_CLIENT
                .key(&key)
                .key(&index)
                .arg(client_id)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn touch_client(&self, client_id: &str, now: u64) -> Result<(), StoreError> {
        let key = self.key("client", client_id);
        self.run(|mut c| async move {
            let _: u64 = TOUCH_CLIENT
                .key(&key)
                .arg(now)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn count_clients(&self) -> Result<u64, StoreError> {
        let index = self.index("clients");
        self.run(|mut c| async move {
            ::redis::cmd("SCARD")
                .arg(&index)
                .query_async(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    async fn sweep_idle_clients(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.sweep_idle(idle_before, now).await
    }

    /// Inserts the client, then files its id under `{prefix}client_fp:{fingerprint}` for
    /// [`FINGERPRINT_TTL`] (each identical registration that creates a client files it anew).
    async fn insert_client_with_fingerprint(
        &self,
        client: Client,
        fingerprint: &ClientFingerprint,
    ) -> Result<(), StoreError> {
        let id = client.client_id.clone();
        self.put_client(client, true).await?;
        let key = self.key("client_fp", &fingerprint.to_hex());
        self.run(|mut c| async move {
            ::redis::cmd("SET")
                .arg(&key)
                .arg(&id)
                .arg("EX")
                .arg(FINGERPRINT_TTL.as_secs())
                .query_async::<()>(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    async fn find_client_by_fingerprint(
        &self,
        fingerprint: &ClientFingerprint,
    ) -> Result<Option<Client>, StoreError> {
        let key = self.key("client_fp", &fingerprint.to_hex());
        let id: Option<String> = self
            .run(|mut c| async move {
                ::redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        match id {
            Some(id) => Ok(self
                .get_client(&id)
                .await?
                .filter(|c| c.source == ClientSource::Dynamic)),
            None => Ok(None),
        }
    }

    async fn sweep_unused_clients(
        &self,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.sweep_unused(registered_before, now).await
    }
}

/// How long Redis remembers the client of a registration fingerprint after the registration
/// that filed it: identical registrations further apart than this get a new client.
pub const FINGERPRINT_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl RedisStore {
    async fn put_client(&self, client: Client, only_if_new: bool) -> Result<(), StoreError> {
        let (key, index) = (self.key("client", &client.client_id), self.index("clients"));
        let record = to_json(&client, "client")?;
        let created: u64 = self
            .run(|mut c| async move {
                PUT_CLIENT
                    .key(&key)
                    .key(&index)
                    .arg(&client.client_id)
                    .arg(record)
                    .arg(client.last_used_at)
                    .arg(if only_if_new { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        if created == 0 {
            return Err(StoreError::conflict("client exists"));
        }
        Ok(())
    }

    async fn pending_op(
        &self,
        id: &str,
        now: u64,
        take: bool,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let member = SecretHash::of(id).to_hex();
        let (key, index) = (self.key("pending", &member), self.index("pending"));
        let mut reply = self
            .run(|mut c| async move {
                GET_PENDING
                    .key(&key)
                    .key(&index)
                    .arg(&member)
                    .arg(t(now))
                    .arg(if take { "1" } else { "0" })
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
                    .map(Reply)
                    .map_err(err)
            })
            .await?;
        if reply.tag() != b"pending" {
            return Ok(None);
        }
        Ok(Some(from_json(
            &reply.take(1, "pending request")?,
            "pending request",
        )?))
    }
}

#[async_trait]
impl GrantStore for RedisStore {
    fn rate_limit_store(&self) -> Option<&dyn super::RateLimitStore> {
        Some(self)
    }

    /// `true`: the state lives in the Redis server, shared by every instance.
    fn is_durable(&self) -> bool {
        true
    }

    /// The store itself: a server on it keeps its signing keys here too, so they survive
    /// restarts and every instance signs with the same ring.
    fn key_store(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn super::KeyStore>> {
        Some(self)
    }

    async fn put_code(&self, hash: SecretHash, code: AuthorizationCode) -> Result<(), StoreError> {
        let member = hash.to_hex();
        let (key, index) = (self.key("code", &member), self.index("codes"));
        let record = to_json(&code, "code")?;
        let stored: u64 = self
            .run(|mut c| async move {
                PUT_CODE
                    .key(&key)
                    .key(&index)
                    .arg(record)
                    .arg(t(code.expires_at))
                    .arg(&member)
                    .arg(expire_at(code.expires_at))
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        if stored == 0 {
            return Err(StoreError::conflict("code exists"));
        }
        Ok(())
    }

    async fn take_code(
        &self,
        hash: &SecretHash,
        family_id: &str,
        now: u64,
    ) -> Result<CodeTake, StoreError> {
        let member = hash.to_hex();
        let (key, index) = (self.key("code", &member), self.index("codes"));
        let mut reply = self
            .run(|mut c| async move {
                TAKE_CODE
                    .key(&key)
                    .key(&index)
                    .arg(family_id)
                    .arg(t(now))
                    .arg(&member)
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
                    .map(Reply)
                    .map_err(err)
            })
            .await?;
        match reply.tag() {
            b"taken" => Ok(CodeTake::Taken(from_json(&reply.take(1, "code")?, "code")?)),
            b"replayed" => {
                let family = reply.take(1, "code family")?;
                let family_id = String::from_utf8(family)
                    .map_err(|e| StoreError::corrupt_with("Redis: code family: not UTF-8", e))?;
                let code = from_json(&reply.take(2, "code")?, "code")?;
                Ok(CodeTake::Replayed { family_id, code })
            }
            _ => Ok(CodeTake::NotFound),
        }
    }

    async fn create_family(
        &self,
        family: RefreshFamily,
        refresh: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        let current = refresh.map(|h| h.to_hex()).unwrap_or_default();
        let keys = [
            self.key("fam", &family.family_id),
            self.index("families"),
            self.index("families:live"),
            self.key("rt", &current),
        ];
        let record = to_json(&family, "family")?;
        let created: u64 = self
            .run(|mut c| async move {
                CREATE_FAMILY
                    .key(&keys[..])
                    .arg(&family.family_id)
                    .arg(record)
                    .arg(t(family.expires_at))
                    .arg(&current)
                    .arg(expire_at(family.expires_at))
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        if created == 0 {
            return Err(StoreError::conflict("family exists or was revoked"));
        }
        Ok(())
    }

    async fn peek_code(&self, hash: &SecretHash, now: u64) -> Result<CodePeek, StoreError> {
        let key = self.key("code", &hash.to_hex());
        let v: Vec<Option<Vec<u8>>> = self
            .run(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("rec")
                    .arg("exp")
                    .arg("used")
                    .query_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        let (Some(Some(rec)), Some(Some(exp))) = (v.first(), v.get(1)) else {
            return Ok(CodePeek::NotFound);
        };
        if parse_u64(exp, "code expiry")? <= t(now) {
            return Ok(CodePeek::NotFound);
        }
        let code = from_json(rec, "code")?;
        Ok(match v.get(2) {
            Some(Some(used)) => CodePeek::Spent {
                family_id: String::from_utf8(used.clone())
                    .map_err(|e| StoreError::corrupt_with("Redis: code family: not UTF-8", e))?,
                code,
            },
            _ => CodePeek::Live(code),
        })
    }

    async fn redeem_code(
        &self,
        hash: &SecretHash,
        redemption: CodeRedemption,
        now: u64,
    ) -> Result<CodeRedeem, StoreError> {
        let member = hash.to_hex();
        let family = redemption.family;
        let current = redemption.refresh.map(|h| h.to_hex()).unwrap_or_default();
        let keys = [
            self.key("code", &member),
            self.index("codes"),
            self.key("fam", &family.family_id),
            self.index("families"),
            self.index("families:live"),
            self.key("rt", &current),
        ];
        let record = to_json(&family, "family")?;
        let sealed = redemption.sealed_grant;
        let family_id = family.family_id.clone();
        let mut reply = self
            .run(|mut c| async move {
                REDEEM_CODE
                    .key(&keys[..])
                    .arg(&family.family_id)
                    .arg(t(now))
                    .arg(&member)
                    .arg(record)
                    .arg(t(family.expires_at))
                    .arg(&current)
                    .arg(expire_at(family.expires_at))
                    .arg(sealed)
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
                    .map(Reply)
                    .map_err(err)
            })
            .await?;
        match reply.tag() {
            b"redeemed" => Ok(CodeRedeem::Redeemed),
            b"replayed" => {
                let family = reply.take(1, "code family")?;
                let family_id = String::from_utf8(family)
                    .map_err(|e| StoreError::corrupt_with("Redis: code family: not UTF-8", e))?;
                let code = from_json(&reply.take(2, "code")?, "code")?;
                Ok(CodeRedeem::Spent { family_id, code })
            }
            b"conflict" => Err(StoreError::conflict(format!(
                "family {family_id} exists or was revoked"
            ))),
            _ => Ok(CodeRedeem::NotFound),
        }
    }

    async fn claim_initial_grant(&self, family_id: &str) -> Result<bool, StoreError> {
        let key = self.key("fam", family_id);
        let claimed: u64 = self
            .run(|mut c| async move {
                CLAIM_INITIAL_GRANT
                    .key(&key)
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        Ok(claimed == 1)
    }

    async fn initial_grant(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Option<InitialGrant>, StoreError> {
        let key = self.key("fam", family_id);
        let v: Vec<Option<Vec<u8>>> = self
            .run(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("rec")
                    .arg("exp")
                    .arg("rev")
                    .arg("prev")
                    .arg("prev_sealed")
                    .query_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        let field = |i: usize| v.get(i).and_then(Option::as_ref);
        let (Some(rec), Some(exp), None, None, Some(sealed)) =
            (field(0), field(1), field(2), field(3), field(4))
        else {
            return Ok(None);
        };
        if parse_u64(exp, "family expiry")? <= t(now) {
            return Ok(None);
        }
        Ok(Some(InitialGrant {
            family: from_json(rec, "family")?,
            sealed_grant: sealed.clone(),
        }))
    }

    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        successor: SecretHash,
        sealed_successor: Vec<u8>,
        now: u64,
        grace: u64,
    ) -> Result<Rotation, StoreError> {
        let presented = presented.to_hex();
        let key = self.key("rt", &presented);
        let prefix = self.prefix.clone();
        let mut reply = self
            .run(|mut c| async move {
                ROTATE
                    .key(&key)
                    .arg(&*prefix)
                    .arg(&presented)
                    .arg(successor.to_hex())
                    .arg(sealed_successor)
                    .arg(t(now))
                    .arg(t(grace))
                    .arg(REVOKED_KEEP_SECS)
                    .arg(EXPIRY_SLACK_SECS)
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
                    .map(Reply)
                    .map_err(err)
            })
            .await?;
        match reply.tag() {
            b"rotated" => Ok(Rotation::Rotated(from_json(
                &reply.take(1, "family")?,
                "family",
            )?)),
            b"grace" => Ok(Rotation::Grace {
                family: from_json(&reply.take(1, "family")?, "family")?,
                sealed_successor: reply.take(2, "sealed successor")?,
            }),
            b"reused" => {
                let family_id = String::from_utf8(reply.take(1, "family id")?)
                    .map_err(|e| StoreError::corrupt_with("Redis: family id: not UTF-8", e))?;
                tracing::warn!(
                    target: "mcp_oauth::security",
                    family = %family_id,
                    "refresh token reuse detected; family revoked"
                );
                Ok(Rotation::Reused { family_id })
            }
            _ => Ok(Rotation::Invalid),
        }
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), StoreError> {
        let keys = [
            self.key("fam", family_id),
            self.index("families"),
            self.index("families:live"),
        ];
        self.run(|mut c| async move {
            let _: u64 = REVOKE_FAMILY
                .key(&keys[..])
                .arg(family_id)
                .arg(t(now))
                .arg(REVOKED_KEEP_SECS)
                .arg(EXPIRY_SLACK_SECS)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn family_of_refresh(
        &self,
        hash: &SecretHash,
        now: u64,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        let presented = hash.to_hex();
        let key = self.key("rt", &presented);
        let prefix = self.prefix.clone();
        let mut reply = self
            .run(|mut c| async move {
                FAMILY_OF_REFRESH
                    .key(&key)
                    .arg(&*prefix)
                    .arg(t(now))
                    .arg(&presented)
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
                    .map(Reply)
                    .map_err(err)
            })
            .await?;
        if reply.tag() != b"family" {
            return Ok(None);
        }
        let family = from_json(&reply.take(1, "family")?, "family")?;
        let state = match reply.take(2, "refresh state")?.as_slice() {
            b"current" => RefreshTokenState::Current,
            b"previous" => {
                let at = reply.take(3, "previous rotated at")?;
                let rotated_at = std::str::from_utf8(&at)
                    .ok()
                    .and_then(|a| a.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::corrupt("Redis: previous rotated at: not a time"))?;
                RefreshTokenState::Previous { rotated_at }
            }
            _ => RefreshTokenState::Retired,
        };
        Ok(Some(RefreshLookup { family, state }))
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        let (key, index) = (self.key("jti", jti), self.index("jtis"));
        self.run(|mut c| async move {
            let _: u64 = REVOKE_TOKEN
                .key(&key)
                .key(&index)
                .arg(jti)
                .arg(t(expires_at))
                .arg(expire_at(expires_at))
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn put_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
        record: Vec<u8>,
        _now: u64,
    ) -> Result<(), StoreError> {
        // Keyed by the hash of the pair; no expiry (a refresh token may outlive any access
        // token): the record stays until replaced or deleted.
        let key = self.key(
            "upt",
            &super::upstream_tokens_key(provider, subject).to_hex(),
        );
        self.run(|mut c| async move {
            ::redis::cmd("SET")
                .arg(&key)
                .arg(record)
                .query_async::<()>(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    async fn get_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(
            "upt",
            &super::upstream_tokens_key(provider, subject).to_hex(),
        );
        self.run(|mut c| async move {
            ::redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    async fn delete_upstream_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let key = self.key(
            "upt",
            &super::upstream_tokens_key(provider, subject).to_hex(),
        );
        self.run(|mut c| async move {
            let n: u64 = ::redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        // Keyed by the hash of the pair; Redis drops the key itself after it expires.
        let key = self.key("aid", &super::assertion_id_key(client_id, jti).to_hex());
        self.run(|mut c| async move {
            let recorded: u64 = RECORD_ASSERTION_ID
                .key(&key)
                .arg(t(expires_at))
                .arg(t(now))
                .arg(expire_at(expires_at))
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(recorded == 1)
        })
        .await
    }

    /// `{prefix}upl:{hash}`, expiring on its own a little after the record.
    async fn put_upstream_login(
        &self,
        key: &SecretHash,
        login: super::UpstreamLogin,
    ) -> Result<(), StoreError> {
        let key = self.key("upl", &key.to_hex());
        let record = to_json(&login, "upstream login")?;
        self.run(|mut c| async move {
            PUT_UPSTREAM_LOGIN
                .key(&key)
                .arg(&record)
                .arg(expire_at(login.expires_at))
                .invoke_async::<()>(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    /// Read and delete in one script: of racing callbacks one gets the record.
    async fn take_upstream_login(
        &self,
        key: &SecretHash,
        now: u64,
    ) -> Result<Option<super::UpstreamLogin>, StoreError> {
        let key = self.key("upl", &key.to_hex());
        let raw: Option<Vec<u8>> = self
            .run(|mut c| async move {
                TAKE_UPSTREAM_LOGIN
                    .key(&key)
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let login: super::UpstreamLogin = from_json(&raw, "upstream login")?;
        Ok((login.expires_at > now).then_some(login))
    }

    async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
        let family = jti.split_once('.').map_or(jti, |(f, _)| f);
        let (key, fam) = (self.key("jti", jti), self.key("fam", family));
        self.run(|mut c| async move {
            let revoked: u64 = IS_REVOKED
                .key(&key)
                .key(&fam)
                .arg(t(now))
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(revoked == 1)
        })
        .await
    }

    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError> {
        let key = self.key("consent", subject);
        self.run(|mut c| async move {
            let scope: Option<Vec<u8>> = ::redis::cmd("HGET")
                .arg(&key)
                .arg(client_id)
                .query_async(&mut c)
                .await
                .map_err(err)?;
            scope.map(|s| from_json(&s, "consent scope")).transpose()
        })
        .await
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &ScopeSet,
        _now: u64,
    ) -> Result<(), StoreError> {
        let key = self.key("consent", subject);
        let scope = to_json(scope, "consent scope")?;
        self.run(|mut c| async move {
            let _: u64 = ::redis::cmd("HSET")
                .arg(&key)
                .arg(client_id)
                .arg(scope)
                .query_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn put_pending(&self, id: &str, pending: PendingAuthorization) -> Result<(), StoreError> {
        let member = SecretHash::of(id).to_hex();
        let (key, index) = (self.key("pending", &member), self.index("pending"));
        let record = to_json(&pending, "pending request")?;
        self.run(|mut c| async move {
            let _: u64 = PUT_PENDING
                .key(&key)
                .key(&index)
                .arg(&member)
                .arg(record)
                .arg(t(pending.expires_at))
                .arg(expire_at(pending.expires_at))
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn get_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.pending_op(id, now, false).await
    }

    async fn take_pending(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        self.pending_op(id, now, true).await
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        let now = t(now);
        let inclusive = now.to_string();
        let exclusive = format!("({now}");
        // (index, members' key prefix, max score, second index)
        let steps = [
            (
                self.index("codes"),
                self.key("code", ""),
                inclusive.clone(),
                None,
            ),
            (
                self.index("pending"),
                self.key("pending", ""),
                inclusive.clone(),
                None,
            ),
            (self.index("jtis"), self.key("jti", ""), exclusive, None),
            (
                self.index("families"),
                self.key("fam", ""),
                inclusive,
                Some(self.index("families:live")),
            ),
        ];
        let mut removed = 0;
        for (index, members, max, second) in steps {
            loop {
                let (index, second, members, max) =
                    (index.clone(), second.clone(), members.clone(), max.clone());
                let n: u64 = self
                    .run(|mut c| async move {
                        SWEEP
                            .key(&index)
                            .key(second.as_ref().unwrap_or(&index))
                            .arg(&members)
                            .arg(&max)
                            .arg(SWEEP_BATCH)
                            .invoke_async(&mut c)
                            .await
                            .map_err(err)
                    })
                    .await?;
                removed += n;
                if n < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn stats(&self, now: u64) -> Result<StoreStats, StoreError> {
        let now = t(now);
        let keys = [
            self.index("clients"),
            self.index("codes"),
            self.index("families:live"),
            self.index("jtis"),
        ];
        self.run(|mut c| async move {
            let (clients, live_codes, live_families, revoked_tokens): (u64, u64, u64, u64) =
                ::redis::pipe()
                    .cmd("SCARD")
                    .arg(&keys[0])
                    .cmd("ZCOUNT")
                    .arg(&keys[1])
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .cmd("ZCOUNT")
                    .arg(&keys[2])
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .cmd("ZCOUNT")
                    .arg(&keys[3])
                    .arg(now)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
                    .map_err(err)?;
            Ok(StoreStats {
                clients,
                live_codes,
                live_families,
                revoked_tokens,
            })
        })
        .await
    }
}
