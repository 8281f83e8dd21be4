//! Per-request cost of [`McpOAuthLayer`], each case beside the same trivial service without it.
//!
//! Every case drives the same axum `Router` (a `POST /mcp` handler returning a small JSON body)
//! with `tower::ServiceExt::oneshot` on a clone of the service, on a current-thread tokio
//! runtime. Every request is built the same way inside the timed loop (method, URI,
//! `content-type`, an optional `Authorization` header and a small JSON-RPC body), so the
//! difference between a case and `baseline` is what the layer adds. All cases are in one
//! criterion group, `layer`, so their ratios to `baseline` come from one run on one machine.
//!
//! | case | what the layer does |
//! |---|---|
//! | `baseline` | nothing: no layer (the request still carries a token header) |
//! | `no_token_401` | default policy, no token: the `401` challenge |
//! | `es256_cache_hit` | ES256 token from a local `KeyRing`, verified-token cache on: SHA-256 + cache hit |
//! | `es256_no_cache` | the same, cache off: full JWT verification on every request |
//! | `eddsa_no_cache` | EdDSA token, cache off |
//! | `rs256_remote_jwks_no_cache` | RS256 token checked by `RemoteJwksVerifier`; the JWKS is fetched once from a loopback server and cached; cache off |
//! | `bad_signature_401` | ES256 token with a corrupted signature, cache off: verify fails, `401` |
//! | `lazy_tools_list_no_token` | lazy policy, no token, `tools/list`: body peek, public |
//! | `lazy_scoped_call_cache_hit` | lazy policy, token, `tools/call` of a scoped tool: body peek + cache hit + scope check |
//!
//! A second group, `blocks`, times building blocks on their own: `ScopeSet::parse`, SHA-256 of
//! a token, a `TokenCache` hit, the bare aws-lc-rs signature checks (P-256, Ed25519,
//! RSA-2048) and `JwtVerifier::verify` (ES256 and EdDSA) without the layer.
//! (The JSON-RPC body peek is internal, so it is measured through the layer only.)
//!
//! Before anything is timed, each case is run once and its status checked, so a case that
//! silently measured the wrong path (say, a `401` where a `200` was meant) fails loudly.
//!
//! Run (the `remote-jwks` feature is required):
//!
//! ```text
//! cargo bench --bench layer --features remote-jwks -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Results and their interpretation are in `BENCHMARKS.md`.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::routing::{get, post};
use axum::{Json, Router};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::AccessPolicy;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::verify::{JwtVerifier, RemoteJwksVerifier, TokenCache, TokenVerifier};
use mcp_oauth::{McpOAuthConfig, McpOAuthLayer};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const SCOPED_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret","arguments":{}}}"#;

/// The trivial inner service every case shares.
fn app() -> Router {
    Router::new().route(
        "/mcp",
        post(|| async { Json(json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})) }),
    )
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 9068 access-token claims valid for an hour (longer than any run).
fn claims(issuer: &str) -> serde_json::Value {
    let now = now();
    json!({
        "iss": issuer, "sub": "alice", "aud": RESOURCE, "exp": now + 3600, "iat": now,
        "jti": "bench-1", "client_id": "bench-client", "scope": "read",
    })
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a valid header value")
}

/// One request as a client sends it; built inside the timed loop in every case alike.
fn request(auth: Option<&HeaderValue>, body: &'static str) -> Request<Body> {
    let mut req = Request::post("/mcp").header("content-type", "application/json");
    if let Some(auth) = auth {
        req = req.header("authorization", auth.clone());
    }
    req.body(Body::from(body)).expect("a valid request")
}

fn config() -> mcp_oauth::McpOAuthConfigBuilder {
    McpOAuthConfig::builder().resource(RESOURCE).issuer(ISSUER)
}

fn cache_off(b: mcp_oauth::McpOAuthConfigBuilder) -> mcp_oauth::McpOAuthConfigBuilder {
    b.token_cache(0, Duration::ZERO)
}

/// Replaces one character in the middle of the signature, keeping the token well-formed.
fn corrupt_signature(token: &str) -> String {
    let sig_start = token.rfind('.').expect("a JWT has three parts") + 1;
    let i = sig_start + 10;
    let replacement = if &token[i..=i] == "A" { "B" } else { "A" };
    format!("{}{}{}", &token[..i], replacement, &token[i + 1..])
}

/// A JWKS endpoint on `127.0.0.1:0`, run on its own thread and runtime so that it never
/// competes with the measured runtime. Returns the `jwks_uri`.
fn serve_jwks(jwks: serde_json::Value) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("a local address");
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let app = Router::new().route("/jwks", get(move || async move { Json(jwks) }));
            axum::serve(listener, app).await.expect("the JWKS server");
        });
    });
    format!("http://{addr}/jwks")
}

/// An RS256 key from aws-lc-rs as `jsonwebtoken` wants it: PKCS#1 `RSAPrivateKey` DER.
mod rsa {
    use aws_lc_rs::encoding::AsDer as _;
    use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub(crate) struct RsaSigner {
        key: EncodingKey,
        kid: &'static str,
        pub(crate) jwks: JwkSet,
    }

    /// Splits one DER TLV off `input`: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The PKCS#1 key inside a PKCS#8 v1 `PrivateKeyInfo`:
    /// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }`.
    fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<&[u8]> {
        let (0x30, info, _) = tlv(pkcs8)? else {
            return None;
        };
        let (0x02, _, rest) = tlv(info)? else {
            return None;
        };
        let (0x30, _, rest) = tlv(rest)? else {
            return None;
        };
        let (0x04, key, _) = tlv(rest)? else {
            return None;
        };
        Some(key)
    }

    impl RsaSigner {
        pub(crate) fn generate() -> Self {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .expect("RSA key generation");
            let pkcs8 = pair.as_der().expect("PKCS#8 export");
            let pkcs1 = pkcs8_to_pkcs1(pkcs8.as_ref()).expect("a PKCS#8 RSA key");
            let key = EncodingKey::from_rsa_der(pkcs1);
            let kid = "bench-rsa";
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("an RSA JWK");
            jwk.common.key_id = Some(kid.to_owned());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            Self {
                key,
                kid,
                jwks: JwkSet { keys: vec![jwk] },
            }
        }

        pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::RS256);
            header.typ = Some("at+jwt".to_owned());
            header.kid = Some(self.kid.to_owned());
            jsonwebtoken::encode(&header, claims, &self.key).expect("RS256 signing")
        }
    }
}

/// One measured case: which service, which `Authorization` header, which body, and the
/// status it must answer with (checked once before timing).
struct Case<'a> {
    name: &'static str,
    svc: &'a Router,
    auth: Option<&'a HeaderValue>,
    body: &'static str,
    status: StatusCode,
}

impl<'a> Case<'a> {
    fn new(
        name: &'static str,
        svc: &'a Router,
        auth: Option<&'a HeaderValue>,
        body: &'static str,
        status: StatusCode,
    ) -> Self {
        Self {
            name,
            svc,
            auth,
            body,
            status,
        }
    }
}

fn layer_group(c: &mut Criterion) {
    let rt = runtime();

    let es = KeyRing::generate(SigningAlgorithm::Es256).expect("an ES256 key");
    let ed = KeyRing::generate(SigningAlgorithm::EdDsa).expect("an EdDSA key");
    let es_token = es.sign("at+jwt", &claims(ISSUER)).expect("ES256 signing");
    let ed_token = ed.sign("at+jwt", &claims(ISSUER)).expect("EdDSA signing");
    let es_auth = bearer(&es_token);
    let ed_auth = bearer(&ed_token);
    let bad_auth = bearer(&corrupt_signature(&es_token));

    let build = |b: mcp_oauth::McpOAuthConfigBuilder| {
        app().layer(McpOAuthLayer::new(b.build().expect("a valid config")))
    };
    let baseline = app();
    let es_cached = build(config().key_ring(es.clone()));
    let es_uncached = build(cache_off(config().key_ring(es.clone())));
    let ed_uncached = build(cache_off(config().key_ring(ed)));
    let lazy = build(
        config()
            .scope("read", "Read")
            .policy(AccessPolicy::new().lazy().tool_scopes("secret", ["read"]))
            .key_ring(es),
    );

    let rsa = rsa::RsaSigner::generate();
    let rs_auth = bearer(&rsa.sign(&claims(ISSUER)));
    let jwks_uri = serve_jwks(serde_json::to_value(&rsa.jwks).expect("a JWKS"));
    let remote = RemoteJwksVerifier::builder(ISSUER)
        .allow_loopback()
        .audience(RESOURCE)
        .jwks_uri(jwks_uri)
        .build()
        .expect("a remote JWKS verifier");
    let rs_uncached = build(cache_off(config().verifier(remote.clone())));

    let ok = StatusCode::OK;
    let unauthorized = StatusCode::UNAUTHORIZED;
    // A table: one line per case.
    #[rustfmt::skip]
    let cases = [
        Case::new("baseline", &baseline, Some(&es_auth), SCOPED_CALL, ok),
        Case::new("no_token_401", &es_uncached, None, SCOPED_CALL, unauthorized),
        Case::new("es256_cache_hit", &es_cached, Some(&es_auth), SCOPED_CALL, ok),
        Case::new("es256_no_cache", &es_uncached, Some(&es_auth), SCOPED_CALL, ok),
        Case::new("eddsa_no_cache", &ed_uncached, Some(&ed_auth), SCOPED_CALL, ok),
        Case::new("rs256_remote_jwks_no_cache", &rs_uncached, Some(&rs_auth), SCOPED_CALL, ok),
        Case::new("bad_signature_401", &es_uncached, Some(&bad_auth), SCOPED_CALL, unauthorized),
        Case::new("lazy_tools_list_no_token", &lazy, None, TOOLS_LIST, ok),
        Case::new("lazy_scoped_call_cache_hit", &lazy, Some(&es_auth), SCOPED_CALL, ok),
    ];

    // Check every case once; this also fills the caches and fetches the remote JWKS.
    for case in &cases {
        let res = rt
            .block_on(case.svc.clone().oneshot(request(case.auth, case.body)))
            .unwrap_or_else(|e| match e {});
        assert_eq!(res.status(), case.status, "case {}", case.name);
    }

    let mut group = c.benchmark_group("layer");
    for Case {
        name,
        svc,
        auth,
        body,
        ..
    } in cases
    {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let svc = svc.clone();
                let req = request(auth, body);
                async move { black_box(svc.oneshot(req).await) }
            });
        });
    }
    group.finish();
    assert_eq!(
        remote.fetch_count(),
        1,
        "the remote JWKS must have been fetched once and then served from its cache"
    );
}

fn blocks_group(c: &mut Criterion) {
    let rt = runtime();
    let es = KeyRing::generate(SigningAlgorithm::Es256).expect("an ES256 key");
    let ed = KeyRing::generate(SigningAlgorithm::EdDsa).expect("an EdDSA key");
    let es_token = es.sign("at+jwt", &claims(ISSUER)).expect("ES256 signing");
    let ed_token = ed.sign("at+jwt", &claims(ISSUER)).expect("EdDSA signing");
    let verifier = |ring: KeyRing| {
        JwtVerifier::builder(ring)
            .issuer(ISSUER)
            .audience(RESOURCE)
            .build()
            .expect("a JWT verifier")
    };
    let es_verifier = verifier(es);
    let ed_verifier = verifier(ed);
    let ctx = rt
        .block_on(es_verifier.verify(&es_token))
        .expect("a valid ES256 token");
    assert!(rt.block_on(ed_verifier.verify(&ed_token)).is_ok());
    let cache = TokenCache::new(10_000);
    cache.insert(&es_token, ctx, Duration::from_secs(3600));

    let mut group = c.benchmark_group("blocks");
    group.bench_function("scopeset_parse_3", |b| {
        b.iter(|| ScopeSet::parse(black_box("files:read files:write admin")));
    });
    group.bench_function("sha256_of_token", |b| {
        b.iter(|| Sha256::digest(black_box(es_token.as_bytes())));
    });
    group.bench_function("token_cache_hit", |b| {
        b.iter(|| cache.get(black_box(&es_token)));
    });
    raw_signature_blocks(&mut group, es_token.as_bytes());
    group.bench_function("jwt_verify_es256", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(es_verifier.verify(black_box(&es_token)).await) });
    });
    group.bench_function("jwt_verify_eddsa", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ed_verifier.verify(black_box(&ed_token)).await) });
    });
    group.finish();
}

/// Signature verification alone (aws-lc-rs, no JWT parsing or claim checks), over a message
/// the size of a token: separates the crypto from the JWT handling around it.
fn raw_signature_blocks(group: &mut BenchmarkGroup<'_, WallTime>, msg: &[u8]) {
    use aws_lc_rs::signature::{self as sig, KeyPair as _};
    let rng = aws_lc_rs::rand::SystemRandom::new();

    let p256 =
        sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
    let p256_sig = p256.sign(&rng, msg).expect("P-256 signing");
    let p256_pub = sig::UnparsedPublicKey::new(
        &sig::ECDSA_P256_SHA256_FIXED,
        p256.public_key().as_ref().to_vec(),
    );
    group.bench_function("raw_p256_verify", |b| {
        b.iter(|| p256_pub.verify(black_box(msg), black_box(p256_sig.as_ref())));
    });

    let ed = sig::Ed25519KeyPair::generate().expect("an Ed25519 key");
    let ed_sig = ed.sign(msg);
    let ed_pub = sig::UnparsedPublicKey::new(&sig::ED25519, ed.public_key().as_ref().to_vec());
    group.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| ed_pub.verify(black_box(msg), black_box(ed_sig.as_ref())));
    });

    let rsa =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let mut rsa_sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&sig::RSA_PKCS1_SHA256, &rng, msg, &mut rsa_sig)
        .expect("RS256 signing");
    let rsa_pub = sig::UnparsedPublicKey::new(
        &sig::RSA_PKCS1_2048_8192_SHA256,
        rsa.public_key().as_ref().to_vec(),
    );
    group.bench_function("raw_rsa2048_verify", |b| {
        b.iter(|| rsa_pub.verify(black_box(msg), black_box(&rsa_sig)));
    });
}

criterion_group!(benches, layer_group, blocks_group);
criterion_main!(benches);
