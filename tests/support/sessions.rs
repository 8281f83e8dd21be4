//! The session-binding scenarios every shared [`SessionBindings`] store must pass (issue 8
//! item 2): the binding rules, and two layers ("instances") on one store agreeing on who
//! opened a session. `tests/layer_sessions_{redis,postgres}.rs` run them on their store.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, SessionBindings, SessionKey, SessionOwner};
use mcp_oauth::{McpOAuthConfig, McpOAuthLayer};
use serde_json::json;
use tower::{Layer as _, ServiceExt as _};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";

/// The principal the scenarios sign in as.
pub(crate) fn alice() -> SessionOwner {
    SessionOwner::Principal {
        subject: "alice".into(),
        client_id: Some("c1".into()),
    }
}

/// Claim once, keep the principal, forget: the binding rules on `s`, for session `id`.
pub(crate) async fn binding_rules<B: SessionBindings>(s: &B, id: &str) {
    let k = SessionKey::of(id);
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

/// A stand-in MCP service: a `POST` without a session opens `session_id`.
async fn fake(req: Request<Body>, session_id: &'static str) -> Result<Response<Body>, Infallible> {
    let open = req.method() == Method::POST && !req.headers().contains_key("mcp-session-id");
    let mut res = Response::new(Body::from("{}"));
    if open {
        res.headers_mut()
            .insert("mcp-session-id", session_id.parse().unwrap());
    }
    Ok(res)
}

/// A session opened through one layer on `s` is bound on a second layer on the same store,
/// and a `DELETE` through the second forgets it for the first.
pub(crate) async fn two_instances_share_the_binding<B: SessionBindings + Clone>(
    s: B,
    session_id: &'static str,
) {
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
        McpOAuthLayer::new(cfg).layer(tower::service_fn(move |r| fake(r, session_id)))
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
    let status = |svc: &mcp_oauth::McpOAuth<_>, r| {
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
