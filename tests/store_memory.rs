//! The store contract ([`mcp_oauth::store::testkit`]) on [`MemoryStore`], on a multi-thread
//! runtime so that the concurrency checks (64 racing code redemptions, 32 racing refresh
//! rotations) contend for real. Each rule is its own test, so a failure names the rule; the
//! last test runs the whole kit the way a store author would.

use std::sync::Arc;

use mcp_oauth::store::{MemoryStore, testkit};

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients() {
    testkit::clients(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codes_single_use() {
    testkit::codes_single_use(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_expiry() {
    testkit::code_expiry(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_take_code() {
    // Races are probabilistic: run them on several fresh stores.
    for _ in 0..20 {
        testkit::concurrent_take_code(store()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn family_lifecycle() {
    testkit::family_lifecycle(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_before_create() {
    testkit::revoke_before_create(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation() {
    testkit::rotation(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_in_grace() {
    for _ in 0..20 {
        testkit::concurrent_rotation_in_grace(store()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuse_after_grace() {
    testkit::reuse_after_grace(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_family() {
    testkit::expired_family(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_token() {
    testkit::revoke_token(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent() {
    testkit::consent(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending() {
    testkit::pending(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_removes_only_expired() {
    testkit::sweep_removes_only_expired(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats() {
    testkit::stats(&*store()).await;
}

/// Fails on the current `MemoryStore`: `sweep` drops a revoked family as soon as the family
/// itself expires (`FamilyState::keep_until` returns `family.expires_at` when the family is
/// known), so access tokens minted shortly before the family's expiry, which outlive it, are
/// accepted again after the sweep. Left failing on purpose until `memory.rs` keeps a revoked
/// family until `max(expires_at, revoked_at + 24 h)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_outlives_family() {
    testkit::revocation_outlives_family(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all() {
    testkit::run_all(store()).await;
}

/// The kit itself: a store whose `take_code` is get-then-set with an await in between (the
/// classic non-atomic mistake) must fail the concurrency check, proving the 64 racers really
/// contend.
mod racy {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use mcp_oauth::scope::ScopeSet;
    use mcp_oauth::store::{
        AuthorizationCode, CodeTake, GrantStore, MemoryStore, PendingAuthorization, RefreshFamily,
        RefreshLookup, Rotation, SecretHash, StoreError, StoreStats, testkit,
    };

    #[derive(Default)]
    struct RacyCodes {
        inner: MemoryStore,
        codes: Mutex<HashMap<SecretHash, (AuthorizationCode, Option<String>)>>,
    }

    #[async_trait]
    impl GrantStore for RacyCodes {
        async fn put_code(&self, h: SecretHash, c: AuthorizationCode) -> Result<(), StoreError> {
            self.codes.lock().unwrap().insert(h, (c, None));
            Ok(())
        }
        async fn take_code(
            &self,
            h: &SecretHash,
            family_id: &str,
            now: u64,
        ) -> Result<CodeTake, StoreError> {
            let seen = self.codes.lock().unwrap().get(h).cloned();
            // The bug: the check and the update are separate steps.
            tokio::task::yield_now().await;
            match seen {
                Some((c, None)) if c.expires_at > now => {
                    self.codes
                        .lock()
                        .unwrap()
                        .insert(*h, (c.clone(), Some(family_id.to_owned())));
                    Ok(CodeTake::Taken(c))
                }
                Some((c, Some(f))) => Ok(CodeTake::Replayed {
                    family_id: f,
                    code: c,
                }),
                _ => Ok(CodeTake::NotFound),
            }
        }
        async fn create_family(
            &self,
            f: RefreshFamily,
            r: Option<SecretHash>,
        ) -> Result<(), StoreError> {
            self.inner.create_family(f, r).await
        }
        async fn rotate_refresh(
            &self,
            p: &SecretHash,
            s: SecretHash,
            sealed: Vec<u8>,
            now: u64,
            grace: u64,
        ) -> Result<Rotation, StoreError> {
            self.inner.rotate_refresh(p, s, sealed, now, grace).await
        }
        async fn revoke_family(&self, id: &str, now: u64) -> Result<(), StoreError> {
            self.inner.revoke_family(id, now).await
        }
        async fn family_of_refresh(
            &self,
            h: &SecretHash,
            now: u64,
        ) -> Result<Option<RefreshLookup>, StoreError> {
            self.inner.family_of_refresh(h, now).await
        }
        async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
            self.inner.revoke_token(jti, exp).await
        }
        async fn is_token_revoked(&self, jti: &str, now: u64) -> Result<bool, StoreError> {
            self.inner.is_token_revoked(jti, now).await
        }
        async fn get_consent(&self, s: &str, c: &str) -> Result<Option<ScopeSet>, StoreError> {
            self.inner.get_consent(s, c).await
        }
        async fn put_consent(
            &self,
            s: &str,
            c: &str,
            sc: &ScopeSet,
            now: u64,
        ) -> Result<(), StoreError> {
            self.inner.put_consent(s, c, sc, now).await
        }
        async fn put_pending(&self, id: &str, p: PendingAuthorization) -> Result<(), StoreError> {
            self.inner.put_pending(id, p).await
        }
        async fn get_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<PendingAuthorization>, StoreError> {
            self.inner.get_pending(id, now).await
        }
        async fn take_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<PendingAuthorization>, StoreError> {
            self.inner.take_pending(id, now).await
        }
        async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
            self.inner.sweep(now).await
        }
        async fn stats(&self, now: u64) -> Result<StoreStats, StoreError> {
            self.inner.stats(now).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[should_panic(expected = "exactly one of 64 concurrent take_code calls may win")]
    async fn a_non_atomic_take_code_is_caught() {
        testkit::concurrent_take_code(Arc::new(RacyCodes::default())).await;
    }
}
