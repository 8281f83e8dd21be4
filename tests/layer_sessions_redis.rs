//! Session bindings shared through Redis (issue 8 item 2): two layers ("instances") on one
//! [`RedisStore`] agree on who opened a session, whichever instance the request reaches.
//!
//! The server comes from `MCP_OAUTH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! Without a server the tests say so and pass, except under `CI`, where they fail.
#![cfg(feature = "redis")]

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, SessionBindings, SessionKey, SessionOwner};
use mcp_oauth::store::redis::RedisStore;
use mcp_oauth::{McpOAuthConfig, McpOAuthLayer};
use serde_json::json;
use tower::{Layer as _, ServiceExt as _};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";

async fn store(test: &str) -> Option<RedisStore> {
    let url = std::env::var("MCP_OAUTH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    match RedisStore::connect(&url).await {
        Ok(s) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Some(s.with_prefix(format!("mcp_oauth_test:{test}:{nanos}:")))
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("no Redis at {url}: {e}"),
        Err(e) => {
            eprintln!("skipping: no Redis at {url}: {e}");
            None
        }
    }
}

fn alice() -> SessionOwner {
    SessionOwner::Principal {
        subject: "alice".into(),
        client_id: Some("c1".into()),
    }
}

// issue 8 item 2: the store keeps the binding rules (claim once, keep the principal).
#[tokio::test]
async fn redis_bindings_follow_the_rules() {
    let Some(s) = store("rules").await else {
        return;
    };
    let k = SessionKey::of("redis-session");
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert_eq!(
        s.bind(&k, &SessionOwner::Anonymous).await.unwrap(),
        SessionOwner::Anonymous
    );
    assert_eq!(s.get(&k).await.unwrap(), Some(SessionOwner::Anonymous));
    assert_eq!(s.bind(&k, &alice()).await.unwrap(), alice());
    let bob = SessionOwner::Principal {
        subject: "bob".into(),
        client_id: None,
    };
    assert_eq!(s.bind(&k, &bob).await.unwrap(), alice());
    assert_eq!(s.bind(&k, &SessionOwner::Anonymous).await.unwrap(), alice());
    assert_eq!(s.get(&k).await.unwrap(), Some(alice()));
    s.forget(&k).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), None);
}

async fn fake(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let open = req.method() == Method::POST && !req.headers().contains_key("mcp-session-id");
    let mut res = Response::new(Body::from("{}"));
    if open {
        res.headers_mut()
            .insert("mcp-session-id", "shared-session-1".parse().unwrap());
    }
    Ok(res)
}

// issue 8 item 2: a session opened on one instance is bound on the other.
#[tokio::test]
async fn two_instances_share_the_binding() {
    let Some(s) = store("instances").await else {
        return;
    };
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let instance = || {
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer(ISSUER)
            .scope("files:read", "Read")
            .policy(AccessPolicy::new().lazy())
            .key_ring(ring.clone())
            .session_bindings(s.clone())
            .build()
            .unwrap();
        McpOAuthLayer::new(cfg).layer(tower::service_fn(fake))
    };
    let (one, two) = (instance(), instance());
    let token = |sub: &str| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        ring.sign(
            "at+jwt",
            &json!({"iss": ISSUER, "sub": sub, "aud": RESOURCE, "client_id": "c1",
                    "scope": "files:read", "iat": now, "exp": now + 600, "jti": format!("{sub}-{now}")}),
        )
        .unwrap()
    };
    let req = |method: Method, token: Option<&str>, session: Option<&str>| {
        let mut r = Request::builder().method(method).uri("/mcp");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(sid) = session {
            r = r.header("mcp-session-id", sid);
        }
        r.body(Body::from(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
        ))
        .unwrap()
    };
    let alice = token("alice");
    let res = one
        .clone()
        .oneshot(req(Method::POST, Some(&alice), None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let sid = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();

    let status = |svc: &_, r| {
        let svc: &mcp_oauth::McpOAuth<_> = svc;
        let svc = svc.clone();
        async move { svc.oneshot(r).await.unwrap().status() }
    };
    assert_eq!(status(&two, req(Method::GET, None, Some(&sid))).await, 401);
    assert_eq!(
        status(&two, req(Method::GET, Some(&token("mallory")), Some(&sid))).await,
        404
    );
    assert_eq!(
        status(&two, req(Method::GET, Some(&alice), Some(&sid))).await,
        200
    );
    assert_eq!(
        status(&two, req(Method::DELETE, Some(&alice), Some(&sid))).await,
        200
    );
    // Deleted through instance two: unknown on instance one.
    assert_eq!(
        status(&one, req(Method::GET, Some(&alice), Some(&sid))).await,
        404
    );
}
