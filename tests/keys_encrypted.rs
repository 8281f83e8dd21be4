//! Issue 13 item 6: private signing keys are not stored in plain text. With a key-encryption
//! key (`AesGcmKeyEncryption`, from `MCP_OAUTH_KEY_ENCRYPTION_KEY` in production), the rows
//! (SQLite, PostgreSQL) and the hash (Redis) hold only wrapped keys: no PKCS#8 DER, no PEM,
//! no JWK `d`, nothing a PKCS#8 parser accepts; a server without the key cannot load them;
//! after a restart the server still verifies the tokens signed before and signs new ones.
//! Keys stored in plain text by an older version still load, and the plain current key is
//! rotated away to a wrapped one.

#[path = "support/logs.rs"]
mod logs;
#[path = "support/stores.rs"]
mod stores;

use std::future::Future;

use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::keys::{AesGcmKeyEncryption, KeyError, KeyRing, SigningAlgorithm, SigningKey};
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::store::{ClientStore, GrantStore, KeyStore};
use mcp_oauth::{ConfigError, TokenKind};
use serde_json::json;

const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";

fn kek() -> AesGcmKeyEncryption {
    AesGcmKeyEncryption::new("test-kek-1", [42; 32]).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    let n = now();
    json!({
        "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": n + 300, "iat": n,
        "jti": format!("fam-{n}.x"), "client_id": "c1", "scope": "read",
    })
}

async fn server<S: ClientStore + GrantStore>(
    store: S,
    kek: Option<AesGcmKeyEncryption>,
) -> Result<AuthorizationServer, ConfigError> {
    let b = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
        .store(store);
    match kek {
        Some(k) => b.key_encryption(k).build().await,
        None => b.build().await,
    }
}

async fn verifies(ring: &KeyRing, token: &str) -> bool {
    use mcp_oauth::verify::{JwtVerifier, TokenVerifier};
    let v = JwtVerifier::builder(ring.clone())
        .issuer(ISSUER)
        .audience(RESOURCE)
        .build()
        .unwrap();
    v.verify(token)
        .await
        .is_ok_and(|a| a.kind() == TokenKind::Jwt)
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// No private key material in a stored key: not PKCS#8 (ASN.1 `SEQUENCE`, the EC and
/// Ed25519 OIDs), not PEM, not a JWK with `d`, and nothing a parser accepts as a key.
fn assert_wrapped(raw: &[u8], what: &str) {
    assert!(raw.starts_with(b"MSK1"), "{what}: a wrapped record");
    for (pattern, name) in [
        (
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..],
            "id-ecPublicKey OID",
        ),
        (
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07][..],
            "P-256 OID",
        ),
        (&[0x06, 0x03, 0x2b, 0x65, 0x70][..], "Ed25519 OID"),
        (b"-----BEGIN", "PEM"),
        (b"\"d\"", "JWK d"),
    ] {
        assert!(!contains(raw, pattern), "{what}: holds a {name}");
    }
    for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
        assert!(SigningKey::from_pkcs8_der(alg, raw).is_err(), "{what}");
    }
}

/// The whole check on one kind of store: `open` opens a fresh handle on the same data (a
/// restart), `raw` reads the stored private keys straight from the database.
async fn check<S, O, OF, R, RF>(open: O, raw: R)
where
    S: ClientStore + GrantStore,
    O: Fn() -> OF,
    OF: Future<Output = S>,
    R: Fn() -> RF,
    RF: Future<Output = Vec<Vec<u8>>>,
{
    let first = server(open().await, Some(kek())).await.unwrap();
    let ring = first.key_ring().clone();
    let kid = ring.current().kid().to_owned();
    let token = ring.sign("at+jwt", &claims()).unwrap();
    // A retired key is wrapped too.
    first.rotate_signing_key().await.unwrap();
    let token2 = first.key_ring().sign("at+jwt", &claims()).unwrap();
    drop(first);
    drop(ring);

    let rows = raw().await;
    assert_eq!(rows.len(), 2, "the current and the retired key");
    for (i, row) in rows.iter().enumerate() {
        assert_wrapped(row, &format!("stored key {i}"));
    }

    // Without the key-encryption key the keys cannot be used: the server does not start.
    let err = server(open().await, None).await.unwrap_err();
    assert!(
        matches!(err, ConfigError::Key(KeyError::Encryption(_))),
        "{err:?}"
    );
    // With another key neither.
    let other = AesGcmKeyEncryption::new("test-kek-2", [7; 32]).unwrap();
    assert!(server(open().await, Some(other)).await.is_err());

    // A restart with the key: the tokens signed before verify, new ones are signed.
    let again = server(open().await, Some(kek())).await.unwrap();
    let ring = again.key_ring();
    assert!(
        ring.find(&kid).is_some(),
        "the retired key is still published"
    );
    assert!(
        verifies(ring, &token).await,
        "a token from before the restart"
    );
    assert!(
        verifies(ring, &token2).await,
        "a token from before the restart"
    );
    let fresh = ring.sign("at+jwt", &claims()).unwrap();
    assert!(verifies(ring, &fresh).await);
}

/// Keys written in plain text (an older version, or no encryption yet) still load under
/// encryption; the plain current key is rotated away, the new one is wrapped.
async fn plain_keys_still_load<K: KeyStore + Clone>(store: K) {
    let plain = KeyRing::from_store(store.clone()).open().await.unwrap();
    let old_kid = plain.current().kid().to_owned();
    let token = plain.sign("at+jwt", &claims()).unwrap();
    drop(plain);
    let (captured, guard) = logs::Captured::start();
    let ring = KeyRing::from_store(store.clone())
        .key_encryption(kek())
        .open()
        .await
        .unwrap();
    drop(guard);
    assert!(
        verifies(&ring, &token).await,
        "the plain key still verifies"
    );
    assert_ne!(
        ring.current().kid(),
        old_kid,
        "the plain current key was rotated away"
    );
    let stored = store.load_keys("default", now()).await.unwrap();
    let current = stored.iter().find(|k| k.is_current()).unwrap();
    assert_wrapped(current.private_key.as_pkcs8_der(), "the new current key");
    assert!(
        captured.text().contains("plain text"),
        "{}",
        captured.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keys_are_wrapped() {
    let dir = std::env::temp_dir().join(stores::unique("keys-encrypted"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("oauth.db");
    let open = || {
        let path = path.clone();
        async move { mcp_oauth::store::SqliteStore::open(&path).await.unwrap() }
    };
    let raw = || {
        let path = path.clone();
        async move {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let rows: Vec<Vec<u8>> =
                sqlx::query_scalar("SELECT private_key FROM mcp_oauth_signing_keys")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            rows
        }
    };
    check(open, raw).await;
    plain_keys_still_load(
        mcp_oauth::store::SqliteStore::open(dir.join("plain.db"))
            .await
            .unwrap(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keys_are_wrapped() {
    let Some(schema) = stores::PgSchema::create("keys_encrypted").await else {
        return;
    };
    let open = || schema.store(2);
    let raw = || async {
        let store = schema.store(1).await;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT private_key FROM mcp_oauth_signing_keys")
                .fetch_all(store.pool())
                .await
                .unwrap();
        rows
    };
    check(open, raw).await;
    let other = stores::PgSchema::create("keys_plain").await.unwrap();
    plain_keys_still_load(other.store(2).await).await;
    other.drop_schema().await;
    schema.drop_schema().await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_wrapped() {
    use base64::Engine as _;
    let Some(ns) = stores::RedisNamespace::create("keys_encrypted").await else {
        return;
    };
    let open = || ns.store();
    let raw = || async {
        let client = redis::Client::open(ns.url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}keys:default", ns.prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for (field, value) in hash {
            if field.starts_with("key:") {
                let record: serde_json::Value = serde_json::from_str(&value).unwrap();
                assert!(record.get("d").is_none());
                let b64 = record["pkcs8"].as_str().unwrap();
                rows.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                );
            }
        }
        rows
    };
    check(open, raw).await;
    ns.cleanup().await;
    let plain_ns = stores::RedisNamespace::create("keys_plain").await.unwrap();
    plain_keys_still_load(plain_ns.store().await).await;
    plain_ns.cleanup().await;
}
