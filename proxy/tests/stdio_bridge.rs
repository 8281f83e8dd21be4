//! The stdio bridge in process (no OAuth layer in front): the router is called with the
//! caller the layer would have put in the request's extensions. Behind the layer a foreign
//! session id is already refused there; the bridge refuses it again (`404`) by subject and
//! client, and fails closed (`401`) on a request without a caller. `shutdown` stops the
//! children. With a shell child that answers `initialize` and nothing else: the children of
//! one user bounded (`503`), a session whose `initialize` failed ended after the init
//! timeout, POSTs in flight per session bounded (`503`), and streams ending when the
//! caller's token expires while the session goes on.

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

/// Sends `method` (with `body` as JSON, if any) as `who` in `session`: the response, its
/// body not read.
async fn send(
    app: &axum::Router,
    method: http::Method,
    who: Option<AuthContext>,
    session: Option<&str>,
    body: Option<Value>,
) -> http::Response<Body> {
    let accept = if method == http::Method::GET {
        "text/event-stream"
    } else {
        "application/json, text/event-stream"
    };
    let mut req = Request::builder()
        .method(method)
        .uri("/mcp")
        .header("accept", accept)
        .header("content-type", "application/json");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let mut req = req.body(body).unwrap();
    if let Some(who) = who {
        req.extensions_mut().insert(who);
    }
    tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req))
        .await
        .expect("the bridge did not answer")
        .unwrap()
}

/// POSTs `body`: (status, session id, the whole body).
async fn call(
    app: &axum::Router,
    who: Option<AuthContext>,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, String) {
    let res = send(app, http::Method::POST, who, session, Some(body)).await;
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

/// A child that answers the first line (an `initialize` with id 0) with `answer` and then
/// reads nothing more (a `sleep`, in its process group).
fn shell_child(answer: &str) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("read -r line; printf '%s\\n' '{answer}'; exec sleep 300"),
    ]
}

const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"sh","version":"0"}}}"#;

fn init() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
}

/// Waits (bounded) until the bridge has `n` sessions.
async fn sessions_become(bridge: &StdioBridge, n: usize) -> bool {
    for _ in 0..100 {
        if bridge.session_count() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_take_every_child() {
    let bridge = StdioBridge::new(StdioOptions {
        max_children: 3,
        max_children_per_user: 2,
        kill_grace: Duration::from_secs(1),
        ..StdioOptions::new(shell_child(INIT_OK))
    });
    let app = bridge.router();
    let mut alice_sessions = Vec::new();
    for _ in 0..2 {
        let (status, sid, body) = call(&app, Some(caller("alice", "c1")), None, init()).await;
        assert_eq!(status, 200, "{body}");
        alice_sessions.push(sid.unwrap());
    }
    // A third of hers is refused, through another client too; Bob still gets one.
    for client in ["c1", "c2"] {
        let res = send(
            &app,
            http::Method::POST,
            Some(caller("alice", client)),
            None,
            Some(init()),
        )
        .await;
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("of this user"),
            "{body}"
        );
    }
    assert_eq!(bridge.session_count(), 2);
    let (status, _, body) = call(&app, Some(caller("bob", "c1")), None, init()).await;
    assert_eq!(status, 200, "{body}");
    // Every slot taken now: the bound on all children answers.
    let (status, _, body) = call(&app, Some(caller("carol", "c1")), None, init()).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("of this user"), "{body}");
    // Once one of hers has ended (and been reaped), Alice may start another.
    let res = send(
        &app,
        http::Method::DELETE,
        Some(caller("alice", "c1")),
        Some(&alice_sessions[0]),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let mut ok = false;
    for _ in 0..50 {
        if call(&app, Some(caller("alice", "c1")), None, init())
            .await
            .0
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the ended session's child still counts for its user");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_initialize_failed_ends_after_the_init_timeout() {
    let failing = StdioBridge::new(StdioOptions {
        init_timeout: Duration::from_secs(1),
        kill_grace: Duration::from_secs(1),
        ..StdioOptions::new(shell_child(
            r#"{"jsonrpc":"2.0","id":0,"error":{"code":-32602,"message":"unsupported"}}"#,
        ))
    });
    let (status, sid, body) =
        call(&failing.router(), Some(caller("alice", "c")), None, init()).await;
    assert_eq!(status, 200, "{body}");
    assert!(sid.is_some() && body.contains("unsupported"), "{body}");
    assert_eq!(failing.session_count(), 1);
    // Far sooner than the idle timeout (10 minutes).
    assert!(
        sessions_become(&failing, 0).await,
        "a session that never initialized kept its child"
    );

    // An initialized session is not ended by it.
    let working = StdioBridge::new(StdioOptions {
        init_timeout: Duration::from_secs(1),
        kill_grace: Duration::from_secs(1),
        ..StdioOptions::new(shell_child(INIT_OK))
    });
    let (status, _, body) = call(&working.router(), Some(caller("alice", "c")), None, init()).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(working.session_count(), 1);
    working.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_in_flight_per_session_are_bounded() {
    let bridge = StdioBridge::new(StdioOptions {
        max_requests_per_session: 2,
        kill_grace: Duration::from_secs(1),
        ..StdioOptions::new(shell_child(INIT_OK))
    });
    let app = bridge.router();
    let alice = || Some(caller("alice", "c"));
    let (status, sid, body) = call(&app, alice(), None, init()).await;
    assert_eq!(status, 200, "{body}");
    let sid = sid.unwrap();
    let ping = |id: u64| Some(json!({"jsonrpc": "2.0", "id": id, "method": "ping"}));
    // Two requests the child never answers: their SSE answers stay open.
    let first = send(&app, http::Method::POST, alice(), Some(&sid), ping(1)).await;
    let second = send(&app, http::Method::POST, alice(), Some(&sid), ping(2)).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = send(&app, http::Method::POST, alice(), Some(&sid), ping(3)).await;
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    // A notification is a POST in flight too.
    let note = Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let refused = send(&app, http::Method::POST, alice(), Some(&sid), note.clone()).await;
    assert_eq!(refused.status(), 503);
    // One ends (its client went away): room for another.
    drop(first);
    let fourth = send(&app, http::Method::POST, alice(), Some(&sid), note).await;
    assert_eq!(fourth.status(), 202);
    drop(second);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_token_expires_and_the_session_goes_on() {
    let bridge = StdioBridge::new(StdioOptions {
        kill_grace: Duration::from_secs(1),
        ..StdioOptions::new(shell_child(INIT_OK))
    });
    let app = bridge.router();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiring = || Some(caller("alice", "c").with_expires_at(now + 2));
    let (status, sid, body) = call(&app, expiring(), None, init()).await;
    assert_eq!(status, 200, "{body}");
    let sid = sid.unwrap();
    let get = send(&app, http::Method::GET, expiring(), Some(&sid), None).await;
    assert_eq!(get.status(), 200);
    // A request the child never answers: its SSE answer would stay open.
    let post = send(
        &app,
        http::Method::POST,
        expiring(),
        Some(&sid),
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
    )
    .await;
    assert_eq!(post.status(), 200);
    for (what, res) in [("standalone", get), ("POST", post)] {
        tokio::time::timeout(
            Duration::from_secs(10),
            axum::body::to_bytes(res.into_body(), 1 << 20),
        )
        .await
        .unwrap_or_else(|_| panic!("the {what} stream outlived the token"))
        .unwrap();
    }
    // The session is still there for the same caller with a fresh token.
    assert_eq!(bridge.session_count(), 1);
    let fresh = Some(caller("alice", "c").with_expires_at(now + 3600));
    let again = send(&app, http::Method::GET, fresh, Some(&sid), None).await;
    assert_eq!(again.status(), 200);
    drop(again);
    bridge.shutdown().await;
}
