//! The document rules as a table over a fake fetcher, and the cache and per-host limit
//! driven by a [`FakeClock`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::flows::{Clock as _, FakeClock};

const URL: &str = "https://app.example.com/oauth/client.json";

/// What the fake answers for a URL.
#[derive(Clone)]
enum Answer {
    Doc {
        status: u16,
        content_type: &'static str,
        cache_control: Option<&'static str>,
        body: String,
    },
    Timeout,
    /// The good document, after a delay.
    Slow(Duration),
    Redirect,
    TooLarge,
    Refused,
}

struct FakeFetch {
    answer: Mutex<Answer>,
    calls: AtomicUsize,
}

#[async_trait]
impl Fetch for FakeFetch {
    async fn get(&self, url: &str) -> Result<Fetched, OutboundError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        match answer {
            Answer::Doc {
                status,
                content_type,
                cache_control,
                body,
            } => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert("content-type", content_type.parse().unwrap());
                if let Some(cc) = cache_control {
                    headers.insert("cache-control", cc.parse().unwrap());
                }
                Ok(Fetched {
                    status: reqwest::StatusCode::from_u16(status).unwrap(),
                    headers,
                    body: body.into_bytes(),
                })
            }
            Answer::Slow(delay) => {
                tokio::time::sleep(delay).await;
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert("content-type", "application/json".parse().unwrap());
                Ok(Fetched {
                    status: reqwest::StatusCode::OK,
                    headers,
                    body: good().to_string().into_bytes(),
                })
            }
            Answer::Timeout => Err(OutboundError::Timeout {
                url: url.to_owned(),
            }),
            Answer::Redirect => Err(OutboundError::Redirect {
                url: url.to_owned(),
                status: 302,
            }),
            Answer::TooLarge => Err(OutboundError::TooLarge {
                url: url.to_owned(),
                limit: MAX_DOCUMENT,
            }),
            Answer::Refused => Err(OutboundError::AddressRefused {
                host: "app.example.com".to_owned(),
                addr: "10.0.0.7".parse().unwrap(),
                class: crate::outbound::AddressClass::Private,
            }),
        }
    }
}

fn good() -> serde_json::Value {
    json!({
        "client_id": URL,
        "client_name": "Example App",
        "redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "jwks_uri": "https://app.example.com/jwks.json",
        "logo_uri": "https://app.example.com/logo.png",
    })
}

fn doc(body: &serde_json::Value, cache_control: Option<&'static str>) -> Answer {
    Answer::Doc {
        status: 200,
        content_type: "application/json",
        cache_control,
        body: body.to_string(),
    }
}

fn resolver(answer: Answer, policy: ClientMetadataPolicy) -> (Resolver, Arc<FakeFetch>) {
    let fetch = Arc::new(FakeFetch {
        answer: Mutex::new(answer),
        calls: AtomicUsize::new(0),
    });
    let schemes: Arc<[String]> = crate::flows::register::DEFAULT_REDIRECT_SCHEMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    (Resolver::with_fetch(fetch.clone(), policy, schemes), fetch)
}

fn with(f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> serde_json::Value {
    let mut v = good();
    f(v.as_object_mut().unwrap());
    v
}

#[tokio::test]
async fn a_good_document_is_a_public_client_keeping_its_keys() {
    let (r, _) = resolver(doc(&good(), None), ClientMetadataPolicy::new());
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(c.client_id, URL);
    assert_eq!(c.source, ClientSource::MetadataDocument);
    assert_eq!(c.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
    assert!(c.secret_hash.is_none());
    assert!(c.allows_grant("refresh_token"));
    assert_eq!(c.redirect_uris.len(), 2);
    assert_eq!(c.extra["jwks_uri"], "https://app.example.com/jwks.json");
    assert_eq!(c.client_name.as_deref(), Some("Example App"));
}

#[tokio::test]
async fn documents_and_urls_are_refused_with_the_problem_named() {
    type Case = (&'static str, &'static str, Answer, &'static str);
    let json_as = |content_type: &'static str| Answer::Doc {
        status: 200,
        content_type,
        cache_control: None,
        body: good().to_string(),
    };
    let status = |status: u16| Answer::Doc {
        status,
        content_type: "application/json",
        cache_control: None,
        body: good().to_string(),
    };
    let cases: Vec<Case> = vec![
        (
            "client_id differs",
            URL,
            doc(
                &with(|m| {
                    m.insert("client_id".into(), json!("https://evil.example/c.json"));
                }),
                None,
            ),
            "names another client_id",
        ),
        (
            "client_id missing",
            URL,
            doc(&with(|m| drop(m.remove("client_id"))), None),
            "has no client_id",
        ),
        (
            "no redirect_uris",
            URL,
            doc(&with(|m| drop(m.remove("redirect_uris"))), None),
            "has no redirect_uris",
        ),
        (
            "empty redirect_uris",
            URL,
            doc(
                &with(|m| {
                    m.insert("redirect_uris".into(), json!([]));
                }),
                None,
            ),
            "has no redirect_uris",
        ),
        (
            "no client_name",
            URL,
            doc(&with(|m| drop(m.remove("client_name"))), None),
            "has no client_name",
        ),
        (
            "client_secret_post",
            URL,
            doc(
                &with(|m| {
                    m.insert(
                        "token_endpoint_auth_method".into(),
                        json!("client_secret_post"),
                    );
                }),
                None,
            ),
            "client_secret_post",
        ),
        (
            "client_secret_basic",
            URL,
            doc(
                &with(|m| {
                    m.insert(
                        "token_endpoint_auth_method".into(),
                        json!("client_secret_basic"),
                    );
                }),
                None,
            ),
            "shared-secret",
        ),
        (
            "a client_secret member",
            URL,
            doc(
                &with(|m| {
                    m.insert("client_secret".into(), json!("s"));
                }),
                None,
            ),
            "client_secret",
        ),
        (
            "javascript redirect",
            URL,
            doc(
                &with(|m| {
                    m.insert("redirect_uris".into(), json!(["javascript:alert(1)"]));
                }),
                None,
            ),
            "does not allow",
        ),
        (
            "no code response type",
            URL,
            doc(
                &with(|m| {
                    m.insert("response_types".into(), json!(["token"]));
                }),
                None,
            ),
            "response_types",
        ),
        (
            "jwks and jwks_uri",
            URL,
            doc(
                &with(|m| {
                    m.insert("jwks".into(), json!({"keys": []}));
                }),
                None,
            ),
            "both jwks and jwks_uri",
        ),
        ("html", URL, json_as("text/html"), "text/html"),
        (
            "not an object",
            URL,
            Answer::Doc {
                status: 200,
                content_type: "application/json",
                cache_control: None,
                body: "[1]".into(),
            },
            "not a JSON object",
        ),
        ("404", URL, status(404), "HTTP 404"),
        (
            "redirect",
            URL,
            Answer::Redirect,
            "redirects are not followed",
        ),
        ("too large", URL, Answer::TooLarge, "larger than 5120 bytes"),
        ("private address", URL, Answer::Refused, "private network"),
        (
            "http",
            "http://app.example.com/c.json",
            doc(&good(), None),
            "https",
        ),
        (
            "no path",
            "https://app.example.com/",
            doc(&good(), None),
            "no path",
        ),
        (
            "query",
            "https://app.example.com/c.json?x=1",
            doc(&good(), None),
            "query",
        ),
        (
            "fragment",
            "https://app.example.com/c.json#x",
            doc(&good(), None),
            "fragment",
        ),
        (
            "userinfo",
            "https://u:p@app.example.com/c.json",
            doc(&good(), None),
            "user information",
        ),
        (
            "dot segment",
            "https://app.example.com/a/../c.json",
            doc(&good(), None),
            ". or ..",
        ),
        (
            "default port",
            "https://app.example.com:443/c.json",
            doc(&good(), None),
            "normal form",
        ),
        (
            "upper-case host",
            "https://APP.example.com/c.json",
            doc(&good(), None),
            "normal form",
        ),
    ];
    for (name, url, answer, want) in cases {
        let (r, _) = resolver(answer, ClientMetadataPolicy::new());
        match r.resolve(url, 1000).await {
            Err(ResolveError::Invalid(problem)) => {
                assert!(problem.contains(want), "{name}: {problem}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn chatgpt_style_method_lists_are_accepted_when_none_is_offered() {
    let (r, _) = resolver(
        doc(
            &with(|m| {
                m.insert(
                    "token_endpoint_auth_method".into(),
                    json!("private_key_jwt"),
                );
                m.insert(
                    "token_endpoint_auth_methods_supported".into(),
                    json!(["private_key_jwt", "none"]),
                );
            }),
            None,
        ),
        ClientMetadataPolicy::new(),
    );
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(c.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
}

#[tokio::test]
async fn fetch_failures_are_unavailable_and_never_cached() {
    for answer in [
        Answer::Timeout,
        Answer::Doc {
            status: 503,
            content_type: "application/json",
            cache_control: None,
            body: String::new(),
        },
    ] {
        let (r, fetch) = resolver(answer, ClientMetadataPolicy::new());
        for _ in 0..2 {
            match r.resolve(URL, 1000).await {
                Err(ResolveError::Unavailable { retry_after, .. }) => assert!(retry_after > 0),
                other => panic!("{other:?}"),
            }
        }
        // Both attempts fetched: the failure was not cached.
        assert_eq!(fetch.calls.load(Ordering::SeqCst), 2);
        // Once the document is back, it resolves at once.
        *fetch.answer.lock().unwrap() = doc(&good(), None);
        r.resolve(URL, 1000).await.unwrap();
    }
}

#[tokio::test]
async fn invalid_documents_are_not_cached() {
    let (r, fetch) = resolver(
        doc(&with(|m| drop(m.remove("redirect_uris"))), None),
        ClientMetadataPolicy::new(),
    );
    assert!(r.resolve(URL, 1000).await.is_err());
    assert!(r.resolve(URL, 1000).await.is_err());
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 2);
    *fetch.answer.lock().unwrap() = doc(&good(), None);
    assert!(r.resolve(URL, 1000).await.is_ok());
}

#[tokio::test]
async fn the_cache_honours_max_age_within_bounds() {
    // (Cache-Control, seconds it is served from the cache)
    let table: &[(Option<&'static str>, u64)] = &[
        (Some("public, max-age=300"), 300),
        (Some("max-age=5"), 60),             // raised to the minimum
        (Some("max-age=999999999"), 86_400), // capped at the maximum
        (Some("no-store"), 60),              // the minimum
        (Some("no-cache, max-age=600"), 60),
        (None, 600), // the default
    ];
    for (cc, ttl) in table {
        let clock = FakeClock::at(10_000);
        let (r, fetch) = resolver(doc(&good(), *cc), ClientMetadataPolicy::new());
        r.resolve(URL, clock.now()).await.unwrap();
        clock.advance(Duration::from_secs(ttl - 1));
        r.resolve(URL, clock.now()).await.unwrap();
        assert_eq!(
            fetch.calls.load(Ordering::SeqCst),
            1,
            "{cc:?}: refetched early"
        );
        clock.advance(Duration::from_secs(1));
        r.resolve(URL, clock.now()).await.unwrap();
        assert_eq!(
            fetch.calls.load(Ordering::SeqCst),
            2,
            "{cc:?}: not refetched at {ttl}"
        );
    }
    // Configured bounds apply.
    let clock = FakeClock::at(10_000);
    let (r, fetch) = resolver(
        doc(&good(), Some("max-age=3600")),
        ClientMetadataPolicy::new().cache_ttl(Duration::from_secs(0), Duration::from_secs(120)),
    );
    r.resolve(URL, clock.now()).await.unwrap();
    clock.advance(Duration::from_secs(120));
    r.resolve(URL, clock.now()).await.unwrap();
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_per_host_limit_is_unavailable_until_the_minute_ends() {
    let clock = FakeClock::at(10_000);
    let (r, fetch) = resolver(
        doc(&good(), Some("no-store")),
        ClientMetadataPolicy::new()
            .cache_ttl(Duration::ZERO, Duration::from_secs(60))
            .host_fetch_limit(3, 1),
    );
    for i in 0..3 {
        let url = format!("https://app.example.com/c{i}.json");
        let err = r.resolve(&url, clock.now()).await.unwrap_err();
        // Each fetch counted (the document names another id, so it is invalid).
        assert!(matches!(err, ResolveError::Invalid(_)), "{err:?}");
    }
    match r.resolve(URL, clock.now()).await {
        Err(ResolveError::Unavailable {
            retry_after,
            problem,
        }) => {
            assert_eq!(retry_after, 60);
            assert!(problem.contains("app.example.com"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 3);
    // Another host is not affected.
    let other = "https://other.example.com/c.json";
    assert!(matches!(
        r.resolve(other, clock.now()).await,
        Err(ResolveError::Invalid(_))
    ));
    clock.advance(Duration::from_secs(60));
    r.resolve(URL, clock.now()).await.unwrap();
}

#[tokio::test]
async fn the_host_allow_list_refuses_other_hosts_without_fetching() {
    let (r, fetch) = resolver(
        doc(&good(), None),
        ClientMetadataPolicy::new().hosts(["claude.ai", "APP.example.com"]),
    );
    r.resolve(URL, 1000).await.unwrap();
    let err = r
        .resolve("https://evil.example/c.json", 1000)
        .await
        .unwrap_err();
    match err {
        ResolveError::Invalid(p) => assert!(
            p.contains("does not accept clients from evil.example"),
            "{p}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn metadata_urls_are_recognised() {
    assert!(is_metadata_url(
        "https://claude.ai/oauth/claude-code-client-metadata"
    ));
    assert!(is_metadata_url("https://x/"));
    assert!(!is_metadata_url("https://x"));
    assert!(!is_metadata_url("http://x/y"));
    assert!(!is_metadata_url("Ab3xYz"));
}

/// Through [`Env::client`](crate::flows::Env::client), as the token endpoint sees a client:
/// a cached document authenticates with `none`; once the cache expired, a document that
/// cannot be fetched is `503 temporarily_unavailable` (never `invalid_client`), and one that
/// is fetched but unusable is `invalid_client`.
#[tokio::test]
async fn the_token_endpoint_sees_cache_expiry_and_outages() {
    use crate::error::OAuthErrorCode;
    use crate::flows::client_auth::{ClientCredentials, authenticate};
    use crate::flows::test_env::TestEnv;

    let mut t = TestEnv::new().await;
    let (r, fetch) = resolver(
        doc(&good(), Some("max-age=120")),
        ClientMetadataPolicy::new(),
    );
    t.env.client_metadata = Some(Arc::new(r));
    let creds = |secret| ClientCredentials {
        client_id: URL,
        secret,
        used_basic: false,
    };
    let c = authenticate(&t.env, creds(None)).await.unwrap();
    assert_eq!(c.source, ClientSource::MetadataDocument);
    // A secret is refused: the client is public.
    let e = authenticate(&t.env, creds(Some("x"))).await.unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidClient);

    // The host goes down: the cached document still serves until it expires.
    *fetch.answer.lock().unwrap() = Answer::Timeout;
    t.advance(119);
    authenticate(&t.env, creds(None)).await.unwrap();
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 1);
    t.advance(1);
    let e = authenticate(&t.env, creds(None)).await.unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::TemporarilyUnavailable, "{e}");

    // Back, but now invalid: no such client.
    *fetch.answer.lock().unwrap() = doc(&with(|m| drop(m.remove("redirect_uris"))), None);
    let e = authenticate(&t.env, creds(None)).await.unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidClient, "{e}");

    // Switched off, a URL id is an unknown client, and nothing is fetched.
    t.env.client_metadata = None;
    let before = fetch.calls.load(Ordering::SeqCst);
    let e = authenticate(&t.env, creds(None)).await.unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidClient);
    assert_eq!(fetch.calls.load(Ordering::SeqCst), before);
}

/// With one fetch per host at a time, a second request for the same host waits at most the
/// fetch timeout, then is told to retry; the first completes and serves the waiters after it.
#[tokio::test]
async fn a_busy_host_is_unavailable_after_the_fetch_timeout() {
    let (r, fetch) = resolver(
        Answer::Slow(Duration::from_millis(2500)),
        ClientMetadataPolicy::new()
            .host_fetch_limit(10, 1)
            .timeouts(Duration::from_secs(1), Duration::from_secs(1)),
    );
    let r = Arc::new(r);
    let first = tokio::spawn({
        let r = r.clone();
        async move { r.resolve(URL, 1000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match r.resolve("https://app.example.com/other.json", 1000).await {
        Err(ResolveError::Unavailable { problem, .. }) => {
            assert!(problem.contains("still running"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    first.await.unwrap().unwrap();
    // A request after the fetch finds the document cached.
    r.resolve(URL, 1000).await.unwrap();
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 1);
}

/// A public P-256 key (RFC 7515 appendix A.3's, without `d`).
#[cfg(feature = "private-key-jwt")]
fn public_jwk() -> serde_json::Value {
    json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    })
}

/// A document asking for `private_key_jwt` with these members besides (`jwks_uri` dropped
/// from the good document first).
#[cfg(feature = "private-key-jwt")]
fn pk(extra: serde_json::Value) -> serde_json::Value {
    with(|m| {
        m.remove("jwks_uri");
        m.insert(
            "token_endpoint_auth_method".into(),
            json!("private_key_jwt"),
        );
        for (k, v) in extra.as_object().unwrap() {
            m.insert(k.clone(), v.clone());
        }
    })
}

#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn private_key_jwt_documents_map_to_private_key_jwt_clients() {
    use crate::flows::client_assertion::ClientKeySource;

    // Inline keys: the client authenticates with assertions, keys kept in `extra`.
    let jwks = json!({"keys": [public_jwk()]});
    let (r, _) = resolver(
        doc(&pk(json!({ "jwks": jwks })), None),
        ClientMetadataPolicy::new(),
    );
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(
        c.token_endpoint_auth_method,
        TokenEndpointAuthMethod::PrivateKeyJwt
    );
    assert_eq!(c.source, ClientSource::MetadataDocument);
    assert!(c.secret_hash.is_none());
    assert_eq!(
        ClientKeySource::of(&c),
        Some(ClientKeySource::Inline(&jwks))
    );

    // A jwks_uri: kept for the SSRF-guarded fetcher.
    let uri = "https://app.example.com/jwks.json";
    let (r, _) = resolver(
        doc(&pk(json!({ "jwks_uri": uri })), None),
        ClientMetadataPolicy::new(),
    );
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(
        c.token_endpoint_auth_method,
        TokenEndpointAuthMethod::PrivateKeyJwt
    );
    assert_eq!(ClientKeySource::of(&c), Some(ClientKeySource::Uri(uri)));

    // Only private_key_jwt in the method list (no method of its own): the same.
    let (r, _) = resolver(
        doc(
            &with(|m| {
                m.remove("token_endpoint_auth_method");
                m.insert(
                    "token_endpoint_auth_methods_supported".into(),
                    json!(["private_key_jwt"]),
                );
            }),
            None,
        ),
        ClientMetadataPolicy::new(),
    );
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(
        c.token_endpoint_auth_method,
        TokenEndpointAuthMethod::PrivateKeyJwt
    );

    // A public document keeps whatever keys it lists, and stays public.
    let (r, _) = resolver(doc(&good(), None), ClientMetadataPolicy::new());
    let c = r.resolve(URL, 1000).await.unwrap();
    assert_eq!(c.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
}

#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn private_key_jwt_documents_without_usable_keys_are_refused() {
    let mut private = public_jwk();
    private["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
    let cases = [
        ("no keys", pk(json!({})), "publishes no keys"),
        ("null keys", pk(json!({"jwks": null})), "publishes no keys"),
        (
            "both",
            pk(json!({"jwks": {"keys": [public_jwk()]}, "jwks_uri": "https://app.example.com/j"})),
            "both jwks and jwks_uri",
        ),
        (
            "private key",
            pk(json!({"jwks": {"keys": [private]}})),
            "private member",
        ),
        (
            "empty set",
            pk(json!({"jwks": {"keys": []}})),
            "unusable jwks",
        ),
        (
            "not a set",
            pk(json!({"jwks": [public_jwk()]})),
            "unusable jwks",
        ),
        (
            "http jwks_uri",
            pk(json!({"jwks_uri": "http://app.example.com/jwks"})),
            "must be an https URL",
        ),
        (
            "relative jwks_uri",
            pk(json!({"jwks_uri": "jwks.json"})),
            "absolute URL",
        ),
        (
            "jwks_uri with user information",
            pk(json!({"jwks_uri": "https://u:p@app.example.com/jwks"})),
            "user information",
        ),
        (
            "jwks_uri not a string",
            pk(json!({"jwks_uri": 7})),
            "not a string",
        ),
        (
            "client_secret_jwt",
            with(|m| {
                m.insert(
                    "token_endpoint_auth_method".into(),
                    json!("client_secret_jwt"),
                );
            }),
            "shared-secret",
        ),
        (
            "tls_client_auth",
            with(|m| {
                m.insert(
                    "token_endpoint_auth_method".into(),
                    json!("tls_client_auth"),
                );
            }),
            "none and private_key_jwt",
        ),
    ];
    for (name, body, want) in cases {
        let (r, _) = resolver(doc(&body, None), ClientMetadataPolicy::new());
        match r.resolve(URL, 1000).await {
            Err(ResolveError::Invalid(problem)) => {
                assert!(problem.contains(want), "{name}: {problem}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Without the feature a `private_key_jwt` document is refused, never taken as public.
#[cfg(not(feature = "private-key-jwt"))]
#[tokio::test]
async fn private_key_jwt_documents_are_refused_without_the_feature() {
    let body = with(|m| {
        m.insert(
            "token_endpoint_auth_method".into(),
            json!("private_key_jwt"),
        );
    });
    let (r, _) = resolver(doc(&body, None), ClientMetadataPolicy::new());
    match r.resolve(URL, 1000).await {
        Err(ResolveError::Invalid(problem)) => {
            assert!(
                problem.contains("private-key-jwt feature is off"),
                "{problem}"
            );
        }
        other => panic!("{other:?}"),
    }
}
