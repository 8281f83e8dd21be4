//! The stdio bridge's own session binding, in process (no OAuth layer in front): the
//! router is called with the caller the layer would have put in the request's extensions.
//! Behind the layer a foreign session id is already refused there; the bridge refuses it
//! again (`404`) by subject and client, and fails closed (`401`) on a request without a
//! caller. `shutdown` stops the children.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use axum::body::Body;
use http::Request;
use mcp_oauth::{AuthContext, TokenKind};
use mcp_oauth_proxy::stdio::{StdioBridge, StdioOptions};
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn caller(subject: &str, client: &str) -> AuthContext {
    AuthContext::new(subject, TokenKind::Jwt).with_client_id(client)
}

async fn call(
    app: &axum::Router,
    who: Option<AuthContext>,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, String) {
    let mut req = Request::post("/mcp")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    if let Some(who) = who {
        req.extensions_mut().insert(who);
    }
    let res = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req))
        .await
        .expect("the bridge did not answer")
        .unwrap();
    let status = res.status().as_u16();
    let sid = res
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, sid, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_binds_sessions_to_subject_and_client_and_fails_closed() {
    let Some(interop) =
        support::interop("the_bridge_binds_sessions_to_subject_and_client_and_fails_closed")
    else {
        return;
    };
    let bridge = StdioBridge::new(StdioOptions {
        kill_grace: Duration::from_secs(2),
        ..StdioOptions::new(common::fixture_command(&interop.python(), &interop.root))
    });
    let app = bridge.router();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});

    // No caller in the extensions: refused, and no child is started.
    let (status, sid, _) = call(&app, None, None, init.clone()).await;
    assert_eq!((status, sid), (401, None));
    assert_eq!(bridge.session_count(), 0);

    let alice = || Some(caller("alice", "client-1"));
    let (status, sid, body) = call(&app, alice(), None, init.clone()).await;
    assert_eq!(status, 200, "{body}");
    let sid = sid.expect("a session id");
    assert_eq!(bridge.session_count(), 1);
    let whoami = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "whoami", "arguments": {}}});
    let (status, _, body) = call(&app, alice(), Some(&sid), whoami.clone()).await;
    assert_eq!(status, 200, "{body}");
    let msg = &common::sse_messages(&body)[0];
    let text = msg["result"]["content"][0]["text"].as_str().unwrap();
    let pid = serde_json::from_str::<Value>(text).unwrap()["pid"]
        .as_u64()
        .unwrap();

    // Another subject, or the same subject through another client: no such session.
    for other in [caller("bob", "client-1"), caller("alice", "client-2")] {
        let (status, _, body) = call(&app, Some(other), Some(&sid), whoami.clone()).await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.contains("pid"), "{body}");
    }
    let (status, _, _) = call(&app, None, Some(&sid), whoami.clone()).await;
    assert_eq!(status, 401);
    // The owner still can.
    let (status, _, _) = call(&app, alice(), Some(&sid), whoami).await;
    assert_eq!(status, 200);

    bridge.shutdown().await;
    assert!(common::gone(pid).await, "child {pid} survived shutdown");
    assert_eq!(bridge.session_count(), 0);
    // After shutdown, no new child.
    let (status, _, body) = call(&app, alice(), None, init).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_clear_error() {
    let bridge = StdioBridge::new(StdioOptions::new(vec![
        "/nonexistent/mcp-server-for-the-test".to_owned(),
    ]));
    let app = bridge.router();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (status, sid, body) = call(&app, Some(caller("alice", "c")), None, init).await;
    assert_eq!((status, sid), (500, None), "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], -32603);
    assert_eq!(
        body["error"]["message"],
        "the MCP server process could not be started"
    );
    assert_eq!(bridge.session_count(), 0);
}

#[tokio::test]
async fn a_child_that_dies_at_once_fails_the_initialize_clearly() {
    let bridge = StdioBridge::new(StdioOptions::new(
        ["sh", "-c", "sleep 0.2; echo boom >&2; exit 7"]
            .map(str::to_owned)
            .to_vec(),
    ));
    let app = bridge.router();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (status, _, body) = call(&app, Some(caller("alice", "c")), None, init).await;
    assert_eq!(status, 200, "{body}");
    let msgs = common::sse_messages(&body);
    assert_eq!(msgs.len(), 1, "{body}");
    assert_eq!(msgs[0]["id"], 0);
    assert_eq!(msgs[0]["error"]["code"], -32603);
    assert_eq!(
        msgs[0]["error"]["message"],
        "the MCP server process exited (status 7)"
    );
    // The session is gone and its slot free.
    for _ in 0..50 {
        if bridge.session_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bridge.session_count(), 0);
}
