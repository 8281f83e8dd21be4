//! Table tests of the assertion rules against a [`FakeClock`](crate::flows::FakeClock).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::error::OAuthErrorCode;
use crate::flows::test_env::TestEnv;
use crate::keys::{SigningAlgorithm, SigningKey};

const ISSUER: &str = "https://as.example.com";
const ID: &str = "pkjwt";

/// A generated key with its PKCS#8 DER, to sign assertions with any header.
struct Signer {
    key: SigningKey,
    encoding: EncodingKey,
    alg: Algorithm,
}

impl Signer {
    fn new(alg: SigningAlgorithm) -> Self {
        let (key, der) = SigningKey::generate_with_der(alg).unwrap();
        let encoding = match alg {
            SigningAlgorithm::Es256 => EncodingKey::from_ec_der(&der),
            _ => EncodingKey::from_ed_der(&der),
        };
        Self {
            alg: alg.jose(),
            key,
            encoding,
        }
    }

    fn jwk(&self) -> Value {
        serde_json::to_value(self.key.jwk()).unwrap()
    }

    fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.key.kid().to_owned());
        h
    }

    fn sign_with(&self, header: &Header, claims: &Value) -> String {
        crate::crypto::install_provider();
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A `private_key_jwt` client of `id` whose key source is `extra_key: value`.
fn pkjwt_client(t: &TestEnv, id: &str, extra_key: &str, value: Value) -> Client {
    let mut c = t.confidential_client(id, "unused");
    c.secret_hash = None;
    c.token_endpoint_auth_method = TokenEndpointAuthMethod::PrivateKeyJwt;
    c.extra.insert(extra_key.to_owned(), value);
    c
}

static JTI: AtomicUsize = AtomicUsize::new(0);

fn claims(now: u64) -> Value {
    let jti = format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed));
    json!({"iss": ID, "sub": ID, "aud": ISSUER, "exp": now + 300, "iat": now, "jti": jti})
}

/// `claims(now)` with `edit` applied (`Value::Null` removes a claim).
fn with(now: u64, edit: &[(&str, Value)]) -> Value {
    let mut c = claims(now);
    for (k, v) in edit {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(*k);
        } else {
            c[*k] = v.clone();
        }
    }
    c
}

#[tokio::test]
async fn assertion_rules() {
    let t = TestEnv::new().await;
    let now = t.start;
    let key = Signer::new(SigningAlgorithm::Es256);
    let ed = Signer::new(SigningAlgorithm::EdDsa);
    let other = Signer::new(SigningAlgorithm::Es256);
    let client = pkjwt_client(&t, ID, "jwks", json!({"keys": [key.jwk(), ed.jwk()]}));
    let token_endpoint = Endpoint::Token.url(ISSUER);

    let mut foreign_kid = other.header();
    foreign_kid.kid = key.header().kid;
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims(now)));
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = key.header().kid;
        jsonwebtoken::encode(&h, &claims(now), &EncodingKey::from_secret(b"secret")).unwrap()
    };
    let unsigned_rs256 = format!(
        "{}.{}.AAAA",
        b64(&json!({"alg": "RS256"})),
        b64(&claims(now))
    );

    // (case, assertion, accepted?, description fragment)
    let table: Vec<(&str, String, bool, &str)> = vec![
        ("good, aud = issuer", key.sign(&claims(now)), true, ""),
        (
            "good, aud = token endpoint",
            key.sign(&with(now, &[("aud", json!(token_endpoint))])),
            true,
            "",
        ),
        (
            "good, aud = [issuer]",
            key.sign(&with(now, &[("aud", json!([ISSUER]))])),
            true,
            "",
        ),
        ("good, EdDSA", ed.sign(&claims(now)), true, ""),
        (
            "good, no kid and one fitting key",
            ed.sign_with(&Header::new(Algorithm::EdDSA), &claims(now)),
            true,
            "",
        ),
        (
            "exp 30 s past, within the leeway",
            key.sign(&with(now, &[("exp", json!(now - 30))])),
            true,
            "",
        ),
        (
            "wrong aud",
            key.sign(&with(now, &[("aud", json!("https://other.example.com"))])),
            false,
            "aud",
        ),
        (
            "aud array with a stranger",
            key.sign(&with(
                now,
                &[("aud", json!([ISSUER, "https://other.example.com"]))],
            )),
            false,
            "aud",
        ),
        (
            "aud = the root issuer with its slash (the same URL)",
            key.sign(&with(now, &[("aud", json!(format!("{ISSUER}/")))])),
            true,
            "",
        ),
        (
            "aud = another path on the issuer's host",
            key.sign(&with(now, &[("aud", json!(format!("{ISSUER}/authorize")))])),
            false,
            "aud",
        ),
        (
            "aud = the token endpoint with a slash",
            key.sign(&with(now, &[("aud", json!(format!("{token_endpoint}/")))])),
            false,
            "aud",
        ),
        (
            "no aud",
            key.sign(&with(now, &[("aud", Value::Null)])),
            false,
            "aud",
        ),
        (
            "iss differs from sub",
            key.sign(&with(now, &[("iss", json!("someone-else"))])),
            false,
            "iss and sub",
        ),
        (
            "sub names another client",
            key.sign(&with(now, &[("sub", json!("public"))])),
            false,
            "iss and sub",
        ),
        (
            "expired",
            key.sign(&with(now, &[("exp", json!(now - 61))])),
            false,
            "expired",
        ),
        (
            "exp far in the future",
            key.sign(&with(now, &[("exp", json!(now + 3600))])),
            false,
            "too far ahead",
        ),
        (
            "no exp",
            key.sign(&with(now, &[("exp", Value::Null)])),
            false,
            "no exp",
        ),
        (
            "exp not a number",
            key.sign(&with(now, &[("exp", json!("soon"))])),
            false,
            "exp is not a time",
        ),
        (
            "nbf in the future",
            key.sign(&with(now, &[("nbf", json!(now + 600))])),
            false,
            "nbf",
        ),
        (
            "iat in the future",
            key.sign(&with(now, &[("iat", json!(now + 600))])),
            false,
            "iat",
        ),
        (
            "no jti",
            key.sign(&with(now, &[("jti", Value::Null)])),
            false,
            "no jti",
        ),
        (
            "jti too long",
            key.sign(&with(now, &[("jti", json!("x".repeat(257)))])),
            false,
            "jti must be",
        ),
        (
            "wrong key under the client's kid",
            other.sign_with(&foreign_kid, &claims(now)),
            false,
            "signature",
        ),
        (
            "unknown kid",
            other.sign(&claims(now)),
            false,
            "No key of the client has kid",
        ),
        ("alg none", none, false, "alg none is not accepted"),
        ("alg HS256", hs256, false, "alg HS256 is not accepted"),
        (
            "RS256 with no RSA key",
            unsigned_rs256,
            false,
            "No key of the client can verify RS256",
        ),
        ("not a JWT", "garbage".to_owned(), false, "not a JWT"),
        ("too long", "a".repeat(9000), false, "too long"),
    ];
    for (case, assertion, ok, why) in &table {
        let got = verify_assertion(&t.env, None, &client, assertion).await;
        match got {
            Ok(()) => assert!(ok, "{case}: accepted"),
            Err(e) => {
                assert!(!ok, "{case}: refused: {e}");
                assert_eq!(e.code(), OAuthErrorCode::InvalidClient, "{case}");
                assert!(
                    e.description().contains(why),
                    "{case}: {:?} lacks {why:?}",
                    e.description()
                );
            }
        }
    }
}

#[tokio::test]
async fn a_jti_is_single_use_until_it_expires() {
    let t = TestEnv::new().await;
    let key = Signer::new(SigningAlgorithm::Es256);
    let client = pkjwt_client(&t, ID, "jwks", json!({"keys": [key.jwk()]}));
    let assertion = key.sign(&claims(t.start));
    verify_assertion(&t.env, None, &client, &assertion)
        .await
        .unwrap();
    let e = verify_assertion(&t.env, None, &client, &assertion)
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidClient);
    assert!(e.description().contains("used before"), "{e}");

    // A new assertion with the same jti, once the first has expired (past the leeway), is
    // accepted: the record lives exactly as long as the first assertion could be used.
    let mut c = claims(t.start);
    c["jti"] = serde_json::from_str::<Value>(&assertion_claim(&assertion, "jti")).unwrap();
    t.advance(300 + LEEWAY_SECS + 1);
    let now = t.env.now();
    c["exp"] = json!(now + 300);
    c["iat"] = json!(now);
    verify_assertion(&t.env, None, &client, &key.sign(&c))
        .await
        .unwrap();
}

/// A claim of a JWT, as JSON text.
fn assertion_claim(jwt: &str, name: &str) -> String {
    segment(jwt, 1).unwrap()[name].to_string()
}

#[tokio::test]
async fn only_private_key_jwt_clients_use_assertions() {
    let t = TestEnv::new().await;
    let key = Signer::new(SigningAlgorithm::Es256);
    // A secret client with keys in its metadata still may not use an assertion.
    let mut c = t.confidential_client(ID, "secret");
    c.extra
        .insert("jwks".to_owned(), json!({"keys": [key.jwk()]}));
    let e = verify_assertion(&t.env, None, &c, &key.sign(&claims(t.start)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidClient);
    assert!(
        e.description()
            .contains("not registered for private_key_jwt"),
        "{e}"
    );

    // A private_key_jwt client without keys is refused, not waved through.
    let mut bare = pkjwt_client(&t, ID, "jwks", json!(null));
    bare.extra.clear();
    let e = verify_assertion(&t.env, None, &bare, &key.sign(&claims(t.start)))
        .await
        .unwrap_err();
    assert!(e.description().contains("no registered jwks"), "{e}");
}

#[tokio::test]
async fn a_store_failure_is_503_not_invalid_client() {
    let mut t = TestEnv::new().await;
    // A store that does not implement the replay record fails closed.
    struct NoRecord(MemoryStoreDelegate);
    type MemoryStoreDelegate = crate::store::MemoryStore;
    #[async_trait]
    impl crate::store::GrantStore for NoRecord {
        async fn put_code(
            &self,
            h: crate::store::SecretHash,
            c: crate::store::AuthorizationCode,
        ) -> Result<(), crate::store::StoreError> {
            self.0.put_code(h, c).await
        }
        async fn take_code(
            &self,
            h: &crate::store::SecretHash,
            f: &str,
            now: u64,
        ) -> Result<crate::store::CodeTake, crate::store::StoreError> {
            self.0.take_code(h, f, now).await
        }
        async fn create_family(
            &self,
            f: crate::store::RefreshFamily,
            r: Option<crate::store::SecretHash>,
        ) -> Result<(), crate::store::StoreError> {
            self.0.create_family(f, r).await
        }
        async fn rotate_refresh(
            &self,
            p: &crate::store::SecretHash,
            s: crate::store::SecretHash,
            sealed: Vec<u8>,
            now: u64,
            grace: u64,
        ) -> Result<crate::store::Rotation, crate::store::StoreError> {
            self.0.rotate_refresh(p, s, sealed, now, grace).await
        }
        async fn revoke_family(&self, f: &str, now: u64) -> Result<(), crate::store::StoreError> {
            self.0.revoke_family(f, now).await
        }
        async fn family_of_refresh(
            &self,
            h: &crate::store::SecretHash,
            now: u64,
        ) -> Result<Option<crate::store::RefreshLookup>, crate::store::StoreError> {
            self.0.family_of_refresh(h, now).await
        }
        async fn revoke_token(&self, j: &str, e: u64) -> Result<(), crate::store::StoreError> {
            self.0.revoke_token(j, e).await
        }
        async fn is_token_revoked(
            &self,
            j: &str,
            now: u64,
        ) -> Result<bool, crate::store::StoreError> {
            self.0.is_token_revoked(j, now).await
        }
        async fn get_consent(
            &self,
            s: &str,
            c: &str,
        ) -> Result<Option<crate::scope::ScopeSet>, crate::store::StoreError> {
            self.0.get_consent(s, c).await
        }
        async fn put_consent(
            &self,
            s: &str,
            c: &str,
            sc: &crate::scope::ScopeSet,
            now: u64,
        ) -> Result<(), crate::store::StoreError> {
            self.0.put_consent(s, c, sc, now).await
        }
        async fn put_pending(
            &self,
            id: &str,
            p: crate::store::PendingAuthorization,
        ) -> Result<(), crate::store::StoreError> {
            self.0.put_pending(id, p).await
        }
        async fn get_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<crate::store::PendingAuthorization>, crate::store::StoreError> {
            self.0.get_pending(id, now).await
        }
        async fn take_pending(
            &self,
            id: &str,
            now: u64,
        ) -> Result<Option<crate::store::PendingAuthorization>, crate::store::StoreError> {
            self.0.take_pending(id, now).await
        }
        async fn sweep(&self, now: u64) -> Result<u64, crate::store::StoreError> {
            self.0.sweep(now).await
        }
        async fn stats(
            &self,
            now: u64,
        ) -> Result<crate::store::StoreStats, crate::store::StoreError> {
            self.0.stats(now).await
        }
    }
    t.env.grants = Arc::new(NoRecord(crate::store::MemoryStore::new()));
    let key = Signer::new(SigningAlgorithm::Es256);
    let client = pkjwt_client(&t, ID, "jwks", json!({"keys": [key.jwk()]}));
    let e = verify_assertion(&t.env, None, &client, &key.sign(&claims(t.start)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::TemporarilyUnavailable);
}

/// A [`KeyFetcher`] double: answers from a list of key sets (one per fetch), or fails.
struct FakeFetcher {
    sets: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    fail: bool,
}

#[async_trait]
impl KeyFetcher for FakeFetcher {
    async fn keys(&self, _uri: &str, refetch: bool) -> Result<Arc<[ClientKey]>, KeyFetchError> {
        if self.fail {
            return Err(KeyFetchError("connection refused".to_owned()));
        }
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        assert_eq!(refetch, n > 0, "the second look is a refetch");
        let sets = self.sets.lock().unwrap();
        let doc = &sets[n.min(sets.len() - 1)];
        Ok(parse_jwks(doc).unwrap().into())
    }
}

#[tokio::test]
async fn jwks_uri_keys_are_fetched_and_refetched_for_an_unknown_kid() {
    let t = TestEnv::new().await;
    let old = Signer::new(SigningAlgorithm::Es256);
    let new = Signer::new(SigningAlgorithm::Es256);
    let client = pkjwt_client(&t, ID, "jwks_uri", json!("https://client.example.com/jwks"));
    // The cached set has only the old key; the client has rotated to the new one.
    let fetcher = FakeFetcher {
        sets: Mutex::new(vec![
            json!({"keys": [old.jwk()]}),
            json!({"keys": [old.jwk(), new.jwk()]}),
        ]),
        fetches: AtomicUsize::new(0),
        fail: false,
    };
    verify_assertion(&t.env, Some(&fetcher), &client, &new.sign(&claims(t.start)))
        .await
        .unwrap();
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);

    // An unreachable jwks_uri is 503, never invalid_client (which means "register again").
    let down = FakeFetcher {
        sets: Mutex::new(vec![]),
        fetches: AtomicUsize::new(0),
        fail: true,
    };
    let e = verify_assertion(&t.env, Some(&down), &client, &new.sign(&claims(t.start)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::TemporarilyUnavailable);
    assert!(e.description().contains("jwks_uri"), "{e}");
}

#[test]
fn jwks_shape_rules() {
    let key = Signer::new(SigningAlgorithm::Es256);
    let mut private = key.jwk();
    private["d"] = json!("AAAA");
    let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"});
    let hmac = json!({"kty": "oct", "k": "c2VjcmV0"});
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!({"keys": [key.jwk()]}), None),
        (json!({"keys": [key.jwk(), p384.clone()]}), None),
        (json!([key.jwk()]), Some("JSON object")),
        (json!({"keys": key.jwk()}), Some("`keys` array")),
        (json!({"keys": [private]}), Some("private member `d`")),
        (json!({"keys": [hmac]}), Some("private member `k`")),
        (json!({"keys": [p384]}), Some("no public signing key")),
        (json!({"keys": []}), Some("no public signing key")),
        (json!({"keys": ["x"]}), Some("JSON object")),
        (
            json!({"keys": vec![key.jwk(); MAX_KEYS + 1]}),
            Some("at most"),
        ),
    ];
    for (doc, err) in cases {
        match (parse_jwks(&doc), err) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => assert!(e.contains(want), "{doc}: {e}"),
            (got, want) => panic!("{doc}: {:?} but wanted {want:?}", got.map(|k| k.len())),
        }
    }
}

#[test]
fn the_claimed_client_is_the_sub() {
    let key = Signer::new(SigningAlgorithm::Es256);
    assert_eq!(claimed_client_id(&key.sign(&claims(1))).unwrap(), ID);
    assert!(claimed_client_id("garbage").is_err());
    let no_sub = key.sign(&json!({"iss": ID}));
    assert!(claimed_client_id(&no_sub).is_err());
}
