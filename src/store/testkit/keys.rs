//! The [`KeyStore`] contract: one current key per ring whatever races, compare-and-swap
//! rotation, retired keys published until their time and then pruned.

use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::{now, ok, uid};
use crate::keys::SigningAlgorithm;
use crate::store::{KeyRotation, KeyStore, StoredKey};

/// Instances racing to create a ring's first key in [`concurrent_initial_key`], and to
/// rotate it in [`concurrent_key_rotation`].
pub const KEY_RACERS: usize = 16;

/// Runs every key-store check. Each uses a ring of its own (a unique name), so they may run
/// against a store that holds other rings. Use a **multi-thread** runtime, so the races are
/// real.
///
/// ```
/// use std::sync::Arc;
/// use mcp_oauth::store::{MemoryStore, testkit};
///
/// # fn main() {
/// // In your tests: #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
/// rt.block_on(testkit::run_key_store(Arc::new(MemoryStore::new())));
/// # }
/// ```
///
/// # Panics
/// When the store breaks a rule (the message names it) or fails.
pub async fn run_key_store<S: KeyStore>(store: Arc<S>) {
    key_lifecycle(&*store).await;
    concurrent_initial_key(store.clone()).await;
    concurrent_key_rotation(store.clone()).await;
    retired_keys_until_pruned(&*store).await;
}

fn new_key(alg: SigningAlgorithm, created_at: u64) -> StoredKey {
    match StoredKey::generate(alg, created_at) {
        Ok(k) => k,
        Err(e) => panic!("testkit: key generation failed: {e}"),
    }
}

fn currents(keys: &[StoredKey]) -> Vec<&StoredKey> {
    keys.iter().filter(|k| k.is_current()).collect()
}

/// The basic rules: an unknown ring is empty; the first key round-trips every field (the
/// private key byte for byte, for both algorithms); a second initial key is refused while one
/// is current; rings are separate; a rotation from a key that is not current changes nothing
/// and names the current one; a rotation from the current key retires it (with the given
/// times) and makes the next current.
pub async fn key_lifecycle<S: KeyStore + ?Sized>(store: &S) {
    let n = now();
    let ring = uid("ring");
    assert!(
        ok("load_keys", store.load_keys(&ring, n).await).is_empty(),
        "key store contract: an unknown ring has no keys"
    );
    let first = new_key(SigningAlgorithm::Es256, n - 10);
    assert!(
        ok(
            "create_initial_key",
            store.create_initial_key(&ring, first.clone()).await
        ),
        "key store contract: the first key of an empty ring must be created"
    );
    let loaded = ok("load_keys", store.load_keys(&ring, n).await);
    assert_eq!(
        loaded,
        vec![first.clone()],
        "key store contract: load_keys must return the created key unchanged"
    );
    assert!(
        loaded[0].signing_key().is_ok(),
        "key store contract: the stored private key must load"
    );
    let second = new_key(SigningAlgorithm::EdDsa, n);
    assert!(
        !ok(
            "create_initial_key",
            store.create_initial_key(&ring, second.clone()).await
        ),
        "key store contract: create_initial_key must refuse while the ring has a current key"
    );
    assert_eq!(
        ok("load_keys", store.load_keys(&ring, n).await),
        vec![first.clone()],
        "key store contract: a refused initial key must leave the ring unchanged"
    );

    // Rings are separate; an EdDSA key round-trips too.
    let other = uid("ring");
    assert!(ok(
        "create_initial_key",
        store.create_initial_key(&other, second.clone()).await
    ));
    assert_eq!(
        ok("load_keys", store.load_keys(&other, n).await),
        vec![second.clone()],
        "key store contract: rings must be separate"
    );
    assert_eq!(
        ok("load_keys", store.load_keys(&ring, n).await).len(),
        1,
        "key store contract: another ring's key must not show in this ring"
    );

    // A stale compare-and-swap changes nothing.
    let next = new_key(SigningAlgorithm::Es256, n);
    let stale = ok(
        "rotate_key",
        store
            .rotate_key(&ring, &uid("not-current"), next.clone(), n, n + 100)
            .await,
    );
    assert_eq!(
        stale,
        KeyRotation::Superseded {
            current: Some(first.kid.clone())
        },
        "key store contract: rotating from a key that is not current must report the current one"
    );
    assert_eq!(
        ok("load_keys", store.load_keys(&ring, n).await),
        vec![first.clone()],
        "key store contract: a superseded rotation must change nothing"
    );

    // The real rotation.
    let rotated = ok(
        "rotate_key",
        store
            .rotate_key(&ring, &first.kid, next.clone(), n, n + 100)
            .await,
    );
    assert_eq!(rotated, KeyRotation::Rotated);
    let loaded = ok("load_keys", store.load_keys(&ring, n).await);
    let current = currents(&loaded);
    assert_eq!(
        current,
        vec![&next],
        "key store contract: after a rotation the next key is the one current key"
    );
    let old = loaded.iter().find(|k| k.kid == first.kid);
    assert_eq!(
        old.map(|k| (k.retired_at, k.publish_until, &k.private_key)),
        Some((Some(n), Some(n + 100), &first.private_key)),
        "key store contract: the rotated-out key must stay, retired at `now` and published until `publish_until`"
    );
    assert_eq!(loaded.len(), 2);
    // The old key cannot be rotated from again.
    let again = ok(
        "rotate_key",
        store
            .rotate_key(
                &ring,
                &first.kid,
                new_key(SigningAlgorithm::Es256, n),
                n,
                n + 100,
            )
            .await,
    );
    assert_eq!(
        again,
        KeyRotation::Superseded {
            current: Some(next.kid.clone())
        },
        "key store contract: a retired key is no longer current"
    );
    // A ring with no key at all has nothing to rotate from.
    let empty = uid("ring");
    let none = ok(
        "rotate_key",
        store
            .rotate_key(
                &empty,
                &first.kid,
                new_key(SigningAlgorithm::Es256, n),
                n,
                n + 100,
            )
            .await,
    );
    assert_eq!(
        none,
        KeyRotation::Superseded { current: None },
        "key store contract: rotating an empty ring must report no current key"
    );
    assert!(ok("load_keys", store.load_keys(&empty, n).await).is_empty());
}

/// [`KEY_RACERS`] instances start at once on an empty ring, each creating its own first key:
/// exactly one is created, and every instance then loads that one.
///
/// # Panics
/// When more or fewer than one key was created, or the loaded current key is not the
/// winner's.
pub async fn concurrent_initial_key<S: KeyStore>(store: Arc<S>) {
    let ring = uid("ring");
    let barrier = Arc::new(Barrier::new(KEY_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..KEY_RACERS {
        let (store, barrier, ring) = (store.clone(), barrier.clone(), ring.clone());
        set.spawn(async move {
            let key = new_key(SigningAlgorithm::Es256, now());
            barrier.wait().await;
            let created = ok(
                "create_initial_key",
                store.create_initial_key(&ring, key.clone()).await,
            );
            (created, key.kid)
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = set.join_next().await {
        let (created, kid) = r.unwrap_or_else(|e| panic!("testkit task: {e}"));
        if created {
            winners.push(kid);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "key store contract: of {KEY_RACERS} instances creating a ring's first key at once, exactly one must win"
    );
    let loaded = ok("load_keys", store.load_keys(&ring, now()).await);
    assert_eq!(
        loaded.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        vec![winners[0].as_str()],
        "key store contract: the ring must hold the winner's key and only it"
    );
    assert!(loaded[0].is_current());
}

/// [`KEY_RACERS`] instances rotate away from the same current key at once: exactly one
/// rotation happens, the others report it as the current key, and the ring ends with one
/// current key and the old one retired.
///
/// # Panics
/// When several rotations (or none) happened.
pub async fn concurrent_key_rotation<S: KeyStore>(store: Arc<S>) {
    let ring = uid("ring");
    let n = now();
    let initial = new_key(SigningAlgorithm::Es256, n);
    assert!(ok(
        "create_initial_key",
        store.create_initial_key(&ring, initial.clone()).await
    ));
    let barrier = Arc::new(Barrier::new(KEY_RACERS));
    let mut set = JoinSet::new();
    for _ in 0..KEY_RACERS {
        let (store, barrier, ring) = (store.clone(), barrier.clone(), ring.clone());
        let expected = initial.kid.clone();
        set.spawn(async move {
            let next = new_key(SigningAlgorithm::Es256, now());
            let kid = next.kid.clone();
            barrier.wait().await;
            let outcome = ok(
                "rotate_key",
                store
                    .rotate_key(&ring, &expected, next, now(), now() + 3600)
                    .await,
            );
            (outcome, kid)
        });
    }
    let mut winner = Vec::new();
    let mut reported = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.unwrap_or_else(|e| panic!("testkit task: {e}")) {
            (KeyRotation::Rotated, kid) => winner.push(kid),
            (KeyRotation::Superseded { current }, _) => reported.push(current),
        }
    }
    assert_eq!(
        winner.len(),
        1,
        "key store contract: of {KEY_RACERS} rotations from one key at once, exactly one must rotate"
    );
    assert!(
        reported
            .iter()
            .all(|c| c.as_deref() == Some(winner[0].as_str())),
        "key store contract: the losing rotations must report the winner's key as current: {reported:?}"
    );
    let loaded = ok("load_keys", store.load_keys(&ring, now()).await);
    assert_eq!(
        currents(&loaded)
            .iter()
            .map(|k| k.kid.as_str())
            .collect::<Vec<_>>(),
        vec![winner[0].as_str()],
        "key store contract: after racing rotations the ring has exactly one current key, the winner's"
    );
    assert_eq!(
        loaded.len(),
        2,
        "key store contract: the ring holds the winner's key and the retired initial key, nothing else"
    );
}

/// A retired key is loaded while `now` is before its `publish_until`, not from then on;
/// pruning removes it only once its time has passed; the current key is never pruned.
pub async fn retired_keys_until_pruned<S: KeyStore + ?Sized>(store: &S) {
    let ring = uid("ring");
    let n = now();
    let old = new_key(SigningAlgorithm::Es256, n - 100);
    assert!(ok(
        "create_initial_key",
        store.create_initial_key(&ring, old.clone()).await
    ));
    let current = new_key(SigningAlgorithm::EdDsa, n);
    assert_eq!(
        ok(
            "rotate_key",
            store
                .rotate_key(&ring, &old.kid, current.clone(), n, n + 100)
                .await
        ),
        KeyRotation::Rotated
    );
    let kids = |keys: Vec<StoredKey>| {
        let mut v: Vec<String> = keys.into_iter().map(|k| k.kid).collect();
        v.sort();
        v
    };
    let mut both = vec![old.kid.clone(), current.kid.clone()];
    both.sort();
    for t in [n, n + 99] {
        assert_eq!(
            kids(ok("load_keys", store.load_keys(&ring, t).await)),
            both,
            "key store contract: a retired key must be loaded before its publish_until"
        );
    }
    assert_eq!(
        kids(ok("load_keys", store.load_keys(&ring, n + 100).await)),
        vec![current.kid.clone()],
        "key store contract: a retired key must not be loaded from its publish_until on"
    );
    assert_eq!(
        ok("prune_keys", store.prune_keys(&ring, n + 50).await),
        0,
        "key store contract: prune_keys must keep a retired key still published"
    );
    assert_eq!(kids(ok("load_keys", store.load_keys(&ring, n).await)), both);
    assert_eq!(
        ok("prune_keys", store.prune_keys(&ring, n + 100).await),
        1,
        "key store contract: prune_keys must drop a retired key past its publish_until"
    );
    assert_eq!(
        kids(ok("load_keys", store.load_keys(&ring, n).await)),
        vec![current.kid.clone()],
        "key store contract: a pruned key is gone"
    );
    assert_eq!(
        ok(
            "prune_keys",
            store.prune_keys(&ring, u64::from(u32::MAX)).await
        ),
        0,
        "key store contract: the current key is never pruned"
    );
    assert_eq!(
        kids(ok("load_keys", store.load_keys(&ring, n).await)),
        vec![current.kid.clone()]
    );
}
