//! The outbound HTTP rules (`mcp_oauth::outbound`) as the verifiers meet them: loopback,
//! private and metadata addresses refused by default with an error naming the switch that
//! allows them, names resolving to loopback refused at connect time, no redirects, size caps
//! enforced while the body streams in, and timeouts.
#![cfg(all(feature = "remote-jwks", feature = "introspection"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{StatusCode, header};
use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use mcp_oauth::outbound::{AddressClass, OutboundError};
use mcp_oauth::verify::{IntrospectionVerifier, RemoteJwksVerifier, TokenVerifier, VerifyError};
use serde_json::json;

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A local identity provider: metadata naming `issuer`, a JWKS, an introspection endpoint,
/// and endpoints that misbehave. Counts every request.
struct Idp {
    port: u16,
    key: SigningKey,
    hits: Arc<AtomicU64>,
    redirect_target_hits: Arc<AtomicU64>,
    user_agent: Arc<Mutex<Option<String>>>,
}

impl Idp {
    async fn start() -> Self {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let jwks = json!({ "keys": [serde_json::to_value(key.jwk()).unwrap()] });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}");
        let hits = Arc::new(AtomicU64::new(0));
        let redirect_target_hits = Arc::new(AtomicU64::new(0));
        let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
        let big = "x".repeat(300 * 1024);
        let target_hits = Arc::clone(&redirect_target_hits);
        let app = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || async move { axum::Json(metadata) }),
            )
            .route(
                "/jwks",
                get({
                    let jwks = jwks.clone();
                    move || async move { axum::Json(jwks) }
                }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/jwks-elsewhere")]) }),
            )
            .route(
                "/jwks-elsewhere",
                get(move || async move {
                    target_hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(jwks)
                }),
            )
            .route("/big", get(move || async move { big }))
            .route(
                "/endless",
                get(|| async {
                    // No Content-Length and no end: only a cap counted while streaming stops it.
                    let chunk = bytes::Bytes::from(vec![b' '; 8 * 1024]);
                    let stream = futures_util::stream::repeat_with(move || {
                        Ok::<_, std::io::Error>(chunk.clone())
                    });
                    Body::from_stream(stream)
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "{}"
                }),
            )
            .route(
                "/introspect",
                post(|| async {
                    axum::Json(json!({ "active": true, "sub": "alice", "aud": RESOURCE,
                        "iss": "https://idp.example.com", "scope": "read" }))
                }),
            )
            .route(
                "/introspect-big",
                post(|| async {
                    format!("{{\"active\":true,\"pad\":\"{}\"}}", "x".repeat(70_000))
                }),
            )
            .route(
                "/introspect-slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "{}"
                }),
            )
            .route(
                "/introspect-redirect",
                post(|| async {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, "/introspect")],
                    )
                }),
            );
        let counted = hits.clone();
        let user_agent = Arc::new(Mutex::new(None));
        let seen_agent = Arc::clone(&user_agent);
        let app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, Ordering::SeqCst);
                *seen_agent.lock().unwrap() = req
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                next.run(req)
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            key,
            hits,
            redirect_target_hits,
            user_agent,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn token(&self) -> String {
        let claims = json!({ "iss": self.issuer(), "sub": "alice", "aud": RESOURCE,
            "iat": now(), "exp": now() + 300 });
        self.key.sign("at+jwt", &claims).unwrap()
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwks_builder(issuer: &str) -> mcp_oauth::verify::RemoteJwksVerifierBuilder {
    RemoteJwksVerifier::builder(issuer).audience(RESOURCE)
}

fn introspection_builder(endpoint: &str) -> mcp_oauth::verify::IntrospectionVerifierBuilder {
    IntrospectionVerifier::builder(endpoint)
        .client_credentials("rs", "top-secret-client-secret")
        .issuer("https://idp.example.com")
        .audience(RESOURCE)
}

fn unavailable(err: VerifyError) -> String {
    match err {
        e @ VerifyError::Unavailable { .. } => e.to_string(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_loopback_issuer_is_refused_by_default_and_works_when_allowed() {
    let idp = Idp::start().await;

    // Default: plain http is refused before any connection, naming both switches.
    let err = jwks_builder(&idp.issuer()).discover().await.unwrap_err();
    assert!(err.is_discovery(), "{err}");
    let outbound = err.outbound_error().expect("an OutboundError source");
    assert!(outbound.is_refused());
    assert!(
        matches!(outbound, OutboundError::HttpRefused { .. }),
        "{outbound:?}"
    );
    assert!(err.to_string().contains(".allow_loopback()"), "{err}");

    // http allowed, loopback not: the address is refused, and the error says which and why.
    let err = jwks_builder(&idp.issuer())
        .allow_http()
        .discover()
        .await
        .unwrap_err();
    match err.outbound_error() {
        Some(OutboundError::AddressRefused { addr, class, .. }) => {
            assert_eq!(addr.to_string(), "127.0.0.1");
            assert_eq!(*class, AddressClass::Loopback);
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1") && message.contains("`.allow_loopback()`"),
        "{message}"
    );
    // A private-network allowance does not cover loopback.
    let err = jwks_builder(&idp.issuer())
        .allow_http()
        .allow_private_networks()
        .discover()
        .await
        .unwrap_err();
    assert!(err.outbound_error().is_some_and(OutboundError::is_refused));
    assert_eq!(idp.hits(), 0, "nothing was sent to a refused address");

    // Allowed: discovery, the key fetch and verification work.
    let verifier = jwks_builder(&idp.issuer())
        .allow_loopback()
        .discover()
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&idp.token()).await.unwrap().subject(),
        "alice"
    );

    // An explicit loopback jwks_uri is refused when building, before any fetch.
    let err = jwks_builder("https://idp.example.com")
        .jwks_uri(format!("https://127.0.0.1:{}/jwks", idp.port))
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(
        matches!(
            err.outbound_error(),
            Some(OutboundError::AddressRefused {
                class: AddressClass::Loopback,
                ..
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
    let idp = Idp::start().await;
    let jwks_uri = format!("http://localhost:{}/jwks", idp.port);
    // `localhost` is a name: building succeeds, the resolver refuses the address it finds.
    let verifier = jwks_builder(&idp.issuer())
        .allow_http()
        .jwks_uri(&jwks_uri)
        .build()
        .unwrap();
    let why = unavailable(verifier.verify(&idp.token()).await.unwrap_err());
    assert!(
        why.contains("localhost") && why.contains("a loopback address"),
        "{why}"
    );
    assert!(why.contains("`.allow_loopback()`"), "{why}");
    assert_eq!(idp.hits(), 0);

    let err = jwks_builder(&idp.issuer())
        .allow_http()
        .jwks_uri(&jwks_uri)
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_fetch(), "{err}");
    match err.outbound_error() {
        Some(OutboundError::AddressRefused { host, class, .. }) => {
            assert_eq!(host, "localhost");
            assert_eq!(*class, AddressClass::Loopback);
        }
        other => panic!("{other:?}"),
    }

    let allowed = jwks_builder(&idp.issuer())
        .allow_loopback()
        .jwks_uri(&jwks_uri)
        .build()
        .unwrap();
    assert!(allowed.verify(&idp.token()).await.is_ok());
    assert_eq!(idp.hits(), 1);
    let agent = idp.user_agent.lock().unwrap().clone().unwrap_or_default();
    assert!(agent.starts_with("mcp-oauth/"), "{agent}");
}

#[test]
fn private_and_metadata_addresses_are_refused_and_name_their_switch() {
    let err = jwks_builder("https://idp.example.com")
        .jwks_uri("https://10.1.2.3/jwks")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err.outbound_error(),
            Some(OutboundError::AddressRefused {
                class: AddressClass::Private,
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("`.allow_private_networks()`"),
        "{err}"
    );
    assert!(
        jwks_builder("https://idp.example.com")
            .jwks_uri("https://10.1.2.3/jwks")
            .allow_private_networks()
            .build()
            .is_ok()
    );
    assert!(
        jwks_builder("https://idp.example.com")
            .jwks_uri("https://[fd12:3456::1]/jwks")
            .allow_private_networks()
            .build()
            .is_ok()
    );

    // Metadata services stay refused whatever is allowed, in every spelling.
    for uri in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
    ] {
        let err = jwks_builder("https://idp.example.com")
            .jwks_uri(uri)
            .allow_loopback()
            .allow_private_networks()
            .allow_http()
            .build()
            .unwrap_err();
        assert!(
            err.outbound_error().is_some_and(OutboundError::is_refused),
            "{uri}: {err}"
        );
        assert!(err.to_string().contains("no setting allows it"), "{err}");
    }

    // Introspection: the same rules, as a configuration error.
    let err = introspection_builder("http://127.0.0.1:1/introspect")
        .build()
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(".allow_loopback()"), "{message}");
    assert!(!message.contains("top-secret-client-secret"), "{message}");
    let err = introspection_builder("https://192.168.1.10/introspect")
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("`.allow_private_networks()`"),
        "{err}"
    );
    assert!(
        introspection_builder("https://192.168.1.10/introspect")
            .allow_private_networks()
            .build()
            .is_ok()
    );
    assert!(
        introspection_builder("http://192.168.1.10/introspect")
            .allow_private_networks()
            .build()
            .is_err(),
        "private networks still need https unless http is allowed"
    );
}

#[tokio::test]
async fn introspection_through_a_name_resolving_to_loopback_is_refused() {
    let idp = Idp::start().await;
    let endpoint = format!("http://localhost:{}/introspect", idp.port);
    let strict = introspection_builder(&endpoint)
        .allow_http()
        .build()
        .unwrap();
    let why = unavailable(strict.verify("opaque-token-value").await.unwrap_err());
    assert!(
        why.contains("localhost") && why.contains(".allow_loopback()"),
        "{why}"
    );
    assert!(!why.contains("top-secret-client-secret") && !why.contains("opaque-token-value"));
    assert_eq!(idp.hits(), 0);

    let allowed = introspection_builder(&endpoint)
        .allow_loopback()
        .build()
        .unwrap();
    assert_eq!(
        allowed
            .verify("opaque-token-value")
            .await
            .unwrap()
            .subject(),
        "alice"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let idp = Idp::start().await;
    let err = jwks_builder(&idp.issuer())
        .allow_loopback()
        .jwks_uri(idp.url("/redirect"))
        .discover()
        .await
        .unwrap_err();
    assert!(err.is_fetch(), "{err}");
    assert!(
        matches!(
            err.outbound_error(),
            Some(OutboundError::Redirect { status: 302, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not followed"), "{err}");

    let introspection = introspection_builder(&idp.url("/introspect-redirect"))
        .allow_loopback()
        .build()
        .unwrap();
    let why = unavailable(
        introspection
            .verify("opaque-token-value")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("307") && why.contains("not followed"), "{why}");
    assert_eq!(idp.redirect_target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_responses_are_refused_while_streaming() {
    let idp = Idp::start().await;
    for path in ["/big", "/endless"] {
        let started = Instant::now();
        let err = jwks_builder(&idp.issuer())
            .allow_loopback()
            .jwks_uri(idp.url(path))
            .discover()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.outbound_error(),
                Some(OutboundError::TooLarge { limit: 262_144, .. })
            ),
            "{path}: {err}"
        );
        assert!(err.to_string().contains("256 KiB"), "{err}");
        // The endless body is cut off at the cap, long before the 10 s total timeout.
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    let introspection = introspection_builder(&idp.url("/introspect-big"))
        .allow_loopback()
        .build()
        .unwrap();
    let why = unavailable(
        introspection
            .verify("opaque-token-value")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("64 KiB"), "{why}");
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let idp = Idp::start().await;
    let started = Instant::now();
    let err = jwks_builder(&idp.issuer())
        .allow_loopback()
        .jwks_uri(idp.url("/slow"))
        .http_timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(err.outbound_error(), Some(OutboundError::Timeout { .. })),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = Instant::now();
    let introspection = introspection_builder(&idp.url("/introspect-slow"))
        .allow_loopback()
        .http_timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .build()
        .unwrap();
    let why = unavailable(
        introspection
            .verify("opaque-token-value")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("timed out"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn address_classes_are_public_and_documented() {
    let class = |s: &str| AddressClass::of(s.parse().unwrap());
    assert_eq!(class("8.8.8.8"), None);
    assert_eq!(class("::ffff:127.0.0.1"), Some(AddressClass::Loopback));
    assert_eq!(
        AddressClass::Loopback.allowed_by(),
        Some(".allow_loopback()")
    );
    assert_eq!(AddressClass::CloudMetadata.allowed_by(), None);
}
