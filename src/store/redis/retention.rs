//! [`RedisStore`]'s idle-client sweep and shared rate-limit counters.
//!
//! # Idle clients
//!
//! Redis keeps no per-client index of grants, so the sweep works in three steps, each
//! bounded so that Redis is never blocked for long:
//!
//! 1. the clients set is walked with `SSCAN`, and a script picks, batch by batch, the
//!    dynamic clients whose last use (or registration) is older than the cutoff;
//! 2. only when there are such candidates, the live-family, code and pending-request indexes
//!    are walked with `ZSCAN` (which returns every member present for the whole walk), and a
//!    script names the client of each live record in the batch; candidates named there are
//!    in use and kept;
//! 3. one script per batch deletes the remaining candidates, **re-checking** inside the
//!    script that each is still dynamic and idle.
//!
//! Anything created for a client between steps 2 and 3 was created by a flow that first
//! [touched](crate::store::ClientStore::touch_client) the client (the authorization server
//! records the use before it parks a request, and refreshes need a family that step 2 saw),
//! so step 3's re-check keeps it; and a touch that comes after step 3 finds no client, which
//! the authorization server answers as an unknown client before anything is stored for it.
//!
//! The never-used sweep ([`sweep_unused_clients`](crate::store::ClientStore::sweep_unused_clients))
//! takes the same three steps, picking dynamic clients never used (`used` is `0`) and
//! registered before the cutoff. The authorization server skips the touch at `/authorize`
//! only for a never-used client with more than the request's lifetime left before that
//! cutoff, so a client this sweep can pick was touched by any flow started for it, and step
//! 3's re-check (still never used?) keeps it.
//!
//! # Rate limits
//!
//! One script per hit does the GCRA step on one key (`{prefix}rl:{key}`) holding the TAT in
//! milliseconds; the key expires (`PX`) when its bucket is full again, so nothing needs
//! sweeping.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;

use super::{RedisStore, err, t};
use crate::store::rate_limit::Gcra;
use crate::store::{RateLimitDecision, RateLimitStore, StoreError};

/// Which clients a sweep removes.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Last used (or registered, when never used) before the cutoff.
    Idle,
    /// Never used, registered before the cutoff.
    Unused,
}

impl Rule {
    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Unused => "unused",
        }
    }
}

/// Clients, or index members, handled per script call.
const BATCH: usize = 256;

/// Milliseconds a rate-limit key outlives the moment its bucket is full again (clock skew
/// between instances).
const RATE_KEY_SLACK_MS: u64 = 1_000;

/// KEYS: clients index. ARGV: prefix, cutoff, delete ('1'/'0'), rule ('idle'/'unused'),
/// client ids… Returns the ids that are dynamic and idle (last use and registration before
/// the cutoff) or, under `unused`, never used and registered before the cutoff (and, with
/// delete, deletes them).
static IDLE_CLIENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
local cutoff = tonumber(ARGV[2])
for i = 5, #ARGV do
  local id = ARGV[i]
  local k = ARGV[1] .. 'client:' .. id
  local v = redis.call('HMGET', k, 'rec', 'used')
  if v[1] then
    local ok, c = pcall(cjson.decode, v[1])
    if ok and type(c) == 'table' and c.source == 'dynamic' then
      local used = tonumber(v[2]) or 0
      local issued = tonumber(c.issued_at) or 0
      local doomed
      if ARGV[4] == 'unused' then
        doomed = used == 0 and issued < cutoff
      else
        doomed = used < cutoff and issued < cutoff
      end
      if doomed then
        if ARGV[3] == '1' then
          redis.call('DEL', k)
          redis.call('SREM', KEYS[1], id)
        end
        out[#out + 1] = id
      end
    end
  end
end
return out
",
    )
});

/// ARGV: key prefix of the records (`{prefix}fam:` …), members… Returns the `client_id` of
/// every record that exists (unreadable records name no client).
static CLIENTS_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 2, #ARGV do
  local rec = redis.call('HGET', ARGV[1] .. ARGV[i], 'rec')
  if rec then
    local ok, r = pcall(cjson.decode, rec)
    if ok and type(r) == 'table' and type(r.client_id) == 'string' then
      out[#out + 1] = r.client_id
    end
  end
end
return out
",
    )
});

/// KEYS: the counter. ARGV: now, interval, burst, slack (ms). Returns {allowed (1/0), tat}.
static HIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local nxt = math.max(tat, now) + tonumber(ARGV[2])
if nxt - now <= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX',
    string.format('%.0f', nxt - now + tonumber(ARGV[4])))
  return {1, nxt}
end
return {0, tat}
",
    )
});

impl RedisStore {
    /// Runs [`IDLE_CLIENTS`] on `ids`.
    async fn idle_clients(
        &self,
        ids: &[String],
        rule: Rule,
        idle_before: u64,
        delete: bool,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.index("clients");
        let prefix = self.prefix.clone();
        self.run(|mut c| async move {
            IDLE_CLIENTS
                .key(&index)
                .arg(&*prefix)
                .arg(t(idle_before))
                .arg(if delete { "1" } else { "0" })
                .arg(rule.as_str())
                .arg(ids)
                .invoke_async(&mut c)
                .await
                .map_err(err)
        })
        .await
    }

    /// Step 1: the dynamic clients `rule` picks at `idle_before`.
    async fn idle_candidates(
        &self,
        rule: Rule,
        idle_before: u64,
    ) -> Result<HashSet<String>, StoreError> {
        let index = self.index("clients");
        let mut cursor = "0".to_owned();
        let mut candidates = HashSet::new();
        loop {
            let (next, ids): (String, Vec<String>) = {
                let (index, cursor) = (index.clone(), cursor.clone());
                self.run(|mut c| async move {
                    ::redis::cmd("SSCAN")
                        .arg(&index)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut c)
                        .await
                        .map_err(err)
                })
                .await?
            };
            for chunk in ids.chunks(BATCH) {
                candidates.extend(self.idle_clients(chunk, rule, idle_before, false).await?);
            }
            if next == "0" {
                return Ok(candidates);
            }
            cursor = next;
        }
    }

    /// Step 2: removes from `candidates` every client a live record in `index` names.
    async fn drop_named(
        &self,
        candidates: &mut HashSet<String>,
        index: &str,
        records: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut cursor = "0".to_owned();
        while !candidates.is_empty() {
            let (next, flat): (String, Vec<String>) = {
                let (index, cursor) = (index.to_owned(), cursor.clone());
                self.run(|mut c| async move {
                    ::redis::cmd("ZSCAN")
                        .arg(&index)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut c)
                        .await
                        .map_err(err)
                })
                .await?
            };
            // Member, score, member, score…; the score is the record's expiry.
            let live: Vec<&String> = flat
                .chunks(2)
                .filter(|pair| {
                    pair.get(1)
                        .and_then(|s| s.parse::<f64>().ok())
                        .is_some_and(|exp| exp > t(now) as f64)
                })
                .map(|pair| &pair[0])
                .collect();
            for chunk in live.chunks(BATCH) {
                let records = records.to_owned();
                let named: Vec<String> = self
                    .run(|mut c| async move {
                        CLIENTS_OF
                            .arg(&records)
                            .arg(chunk)
                            .invoke_async(&mut c)
                            .await
                            .map_err(err)
                    })
                    .await?;
                for id in named {
                    candidates.remove(&id);
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    pub(super) async fn sweep_idle(&self, idle_before: u64, now: u64) -> Result<u64, StoreError> {
        self.sweep_clients(Rule::Idle, idle_before, now).await
    }

    pub(super) async fn sweep_unused(
        &self,
        registered_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.sweep_clients(Rule::Unused, registered_before, now)
            .await
    }

    async fn sweep_clients(
        &self,
        rule: Rule,
        idle_before: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        let mut candidates = self.idle_candidates(rule, idle_before).await?;
        for (index, records) in [
            ("families:live", "fam"),
            ("codes", "code"),
            ("pending", "pending"),
        ] {
            self.drop_named(
                &mut candidates,
                &self.index(index),
                &self.key(records, ""),
                now,
            )
            .await?;
        }
        let candidates: Vec<String> = candidates.into_iter().collect();
        let mut removed = 0;
        for chunk in candidates.chunks(BATCH) {
            removed += self
                .idle_clients(chunk, rule, idle_before, true)
                .await?
                .len() as u64;
        }
        Ok(removed)
    }
}

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: u64,
    ) -> Result<RateLimitDecision, StoreError> {
        let gcra = Gcra::new(limit, window);
        let key = self.key("rl", key);
        let (allowed, tat): (u64, u64) = self
            .run(|mut c| async move {
                HIT.key(&key)
                    .arg(now_ms)
                    .arg(gcra.interval_ms)
                    .arg(gcra.burst_ms)
                    .arg(RATE_KEY_SLACK_MS)
                    .invoke_async(&mut c)
                    .await
                    .map_err(err)
            })
            .await?;
        Ok(gcra.decision(allowed == 1, tat, now_ms))
    }
}
