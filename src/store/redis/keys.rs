//! [`KeyStore`] on Redis: a ring is one hash, `{prefix}keys:{ring}`, holding
//! `current` → the current key id, `key:{kid}` → the key (JSON: algorithm, PKCS#8 DER in
//! base64, creation time) and, once retired, `retired:{kid}` → `"{retired_at}:{publish_until}"`.
//! Creating the first key and rotating are each one Lua script (the check and the change in
//! one step); loading is one `HGETALL`, a consistent snapshot. The hash has no expiry: the
//! current key lives until it is rotated, and pruning drops retired ones.

use std::collections::HashMap;
use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{RedisStore, err, from_json, t, to_json};
use crate::keys::SigningAlgorithm;
use crate::store::keys::check_new_current;
use crate::store::{KeyRotation, KeyStore, PrivateKey, StoreError, StoredKey};

/// The immutable part of a key, as stored under `key:{kid}`.
#[derive(Serialize, Deserialize)]
struct Record {
    alg: String,
    /// PKCS#8 DER, base64 (standard alphabet).
    pkcs8: String,
    created_at: u64,
}

impl Record {
    fn of(key: &StoredKey) -> Self {
        Self {
            alg: key.algorithm.name().to_owned(),
            pkcs8: base64::engine::general_purpose::STANDARD.encode(key.private_key.as_pkcs8_der()),
            created_at: key.created_at,
        }
    }
}

/// The scripts' helper: integral numbers as Redis wants them (as the store's other scripts).
macro_rules! lua {
    ($body:literal) => {
        concat!(
            "local function fmt(n) return string.format('%.0f', n) end\n",
            $body
        )
    };
}

/// KEYS: ring. ARGV: kid, record. 1 when the key became current, 0 when one was.
static CREATE_INITIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if redis.call('HEXISTS', KEYS[1], 'current') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'key:' .. ARGV[1]) == 1 then return -1 end
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'key:' .. ARGV[1], ARGV[2])
return 1
"
    ))
});

/// KEYS: ring. ARGV: expected current kid, next kid, next record, now, publish_until.
/// `{'rotated'}`, `{'superseded', current or ''}` or `{'exists'}`.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local cur = redis.call('HGET', KEYS[1], 'current')
if cur ~= ARGV[1] then return {'superseded', cur or ''} end
if redis.call('HEXISTS', KEYS[1], 'key:' .. ARGV[2]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1],
  'retired:' .. ARGV[1], fmt(tonumber(ARGV[4])) .. ':' .. fmt(tonumber(ARGV[5])),
  'key:' .. ARGV[2], ARGV[3],
  'current', ARGV[2])
return {'rotated'}
"
    ))
});

/// KEYS: ring. ARGV: now. Drops retired keys published until `now` or earlier; how many.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 8) == 'retired:' then
    local untilv = tonumber(string.match(all[i + 1], ':(%d+)$'))
    if untilv and untilv <= tonumber(ARGV[1]) then
      local kid = string.sub(f, 9)
      redis.call('HDEL', KEYS[1], f, 'key:' .. kid)
      n = n + 1
    end
  end
end
return n
"
    ))
});

fn time_pair(v: &[u8], kid: &str) -> Result<(u64, u64), StoreError> {
    let corrupt = || StoreError::corrupt(format!("Redis: key {kid}: bad retirement record"));
    let s = std::str::from_utf8(v).map_err(|_| corrupt())?;
    let (a, b) = s.split_once(':').ok_or_else(corrupt)?;
    Ok((
        a.parse().map_err(|_| corrupt())?,
        b.parse().map_err(|_| corrupt())?,
    ))
}

impl RedisStore {
    fn ring_key(&self, ring: &str) -> String {
        self.key("keys", ring)
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn load_keys(&self, ring: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        let key = self.ring_key(ring);
        let fields: HashMap<String, Vec<u8>> = self
            .run(|mut c| async move {
                ::redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        let current = fields
            .get("current")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let mut keys = Vec::new();
        for (field, value) in &fields {
            let Some(kid) = field.strip_prefix("key:") else {
                continue;
            };
            let retired = match fields.get(&format!("retired:{kid}")) {
                Some(v) => Some(time_pair(v, kid)?),
                None if current.as_deref() == Some(kid) => None,
                // Neither current nor retired: the leftover of a pruning; skip it.
                None => continue,
            };
            if retired.is_some_and(|(_, until)| until <= now) {
                continue;
            }
            let record: Record = from_json(value, "signing key")?;
            let algorithm = SigningAlgorithm::from_name(&record.alg).ok_or_else(|| {
                StoreError::corrupt(format!("Redis: key {kid}: unknown algorithm"))
            })?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(record.pkcs8.as_bytes())
                .map_err(|e| {
                    StoreError::corrupt_with(format!("Redis: key {kid}: bad key encoding"), e)
                })?;
            keys.push(StoredKey {
                kid: kid.to_owned(),
                algorithm,
                private_key: PrivateKey::from_pkcs8_der(der),
                created_at: record.created_at,
                retired_at: retired.map(|(at, _)| at),
                publish_until: retired.map(|(_, until)| until),
            });
        }
        Ok(keys)
    }

    async fn create_initial_key(&self, ring: &str, key: StoredKey) -> Result<bool, StoreError> {
        check_new_current(&key)?;
        let ring_key = self.ring_key(ring);
        let record = to_json(&Record::of(&key), "signing key")?;
        let kid = key.kid.clone();
        let created: i64 = self
            .run(|mut c| async move {
                CREATE_INITIAL
                    .key(&ring_key)
                    .arg(&kid)
                    .arg(record)
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        match created {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::conflict(format!(
                "Redis: key {} exists (retired)",
                key.kid
            ))),
        }
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
        let ring_key = self.ring_key(ring);
        let record = to_json(&Record::of(&next), "signing key")?;
        let reply: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                ROTATE
                    .key(&ring_key)
                    .arg(expected_current)
                    .arg(&next.kid)
                    .arg(record)
                    .arg(t(now))
                    .arg(t(publish_until))
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"rotated") => Ok(KeyRotation::Rotated),
            Some(b"superseded") => {
                let current = reply
                    .get(1)
                    .filter(|v| !v.is_empty())
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                Ok(KeyRotation::Superseded { current })
            }
            Some(b"exists") => Err(StoreError::conflict("Redis: the next key exists")),
            _ => Err(StoreError::corrupt(
                "Redis: unexpected reply of the key rotation",
            )),
        }
    }

    async fn prune_keys(&self, ring: &str, now: u64) -> Result<u64, StoreError> {
        let ring_key = self.ring_key(ring);
        self.run(|mut c| async move {
            PRUNE
                .key(&ring_key)
                .arg(t(now))
                .invoke_async(&mut c)
                .await
                .map_err(err)
        })
        .await
    }
}
