//! [`SessionBindings`] on Redis, so several instances serving the same MCP sessions agree on
//! who opened each one: `{prefix}session:{sha256 of the session id}` → the owner as JSON,
//! expiring after [`DEFAULT_SESSION_IDLE`] without a request (each read renews it, `GETEX`).
//! Binding is one Lua script (read, decide, write in one step), so two instances cannot both
//! claim an anonymous session.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::{RedisStore, err, from_json, to_json};
use crate::resource::{DEFAULT_SESSION_IDLE, SessionBindings, SessionKey, SessionOwner};
use crate::store::StoreError;

/// KEYS: session. ARGV: owner, anonymous owner, idle seconds. Leaves a principal in place,
/// otherwise stores the owner; returns the owner in force.
static BIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[2] then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return v
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return ARGV[1]
",
    )
});

#[async_trait]
impl SessionBindings for RedisStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionOwner>, StoreError> {
        let k = self.key("session", key.as_str());
        self.run(|mut c| async move {
            let v: Option<Vec<u8>> = ::redis::cmd("GETEX")
                .arg(&k)
                .arg("EX")
                .arg(DEFAULT_SESSION_IDLE.as_secs())
                .query_async(&mut c)
                .await
                .map_err(err)?;
            v.map(|v| from_json(&v, "session owner")).transpose()
        })
        .await
    }

    async fn bind(
        &self,
        key: &SessionKey,
        owner: &SessionOwner,
    ) -> Result<SessionOwner, StoreError> {
        let k = self.key("session", key.as_str());
        let owner = to_json(owner, "session owner")?;
        let anonymous = to_json(&SessionOwner::Anonymous, "session owner")?;
        self.run(|mut c| async move {
            let v: Vec<u8> = BIND
                .key(&k)
                .arg(owner)
                .arg(anonymous)
                .arg(DEFAULT_SESSION_IDLE.as_secs())
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            from_json(&v, "session owner")
        })
        .await
    }

    async fn forget(&self, key: &SessionKey) -> Result<(), StoreError> {
        let k = self.key("session", key.as_str());
        self.run(|mut c| async move {
            let _: u64 = ::redis::cmd("DEL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }
}
