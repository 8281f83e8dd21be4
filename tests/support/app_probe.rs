//! Probes of an in-process app (an axum `Router` with the layer and the OAuth routes), for the
//! key tests: does a token open `/mcp`, and which key ids does `/jwks.json` publish.
#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The status of a `tools/list` on `/mcp` with `token`.
pub async fn mcp(app: &Router, token: &str) -> StatusCode {
    let req = Request::post("/mcp")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
        ))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

/// The `kid`s `/jwks.json` publishes, in its order.
pub async fn jwks_kids(app: &Router) -> Vec<String> {
    let res = app
        .clone()
        .oneshot(Request::get("/jwks.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}
