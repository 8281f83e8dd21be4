//! The stdio bridge over raw HTTP: the `mcp-oauth-proxy` binary in front of the Python-SDK
//! fixture server (`tests/interop/proxy_fixture_server.py stdio`), with tokens from the
//! embedded authorization server (the scripted browser logs in and consents).
//!
//! One child per session (separate pids and state), sessions bound to their caller, the
//! transport's status codes (400/404/406/415/401), progress streamed before the result, a
//! crashing child reported as a JSON-RPC error and replaced on the next `initialize`, the
//! bound on children (`503`), the idle timeout, `DELETE`, and `SIGTERM` stopping every child.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use common::{Raw, Running, alive, fixture_command, gone, grant, grant_as};
use serde_json::json;

/// The proxy with the fixture as its stdio command, or `None` (skipped) without the interop
/// toolchain.
async fn start(test: &str, extra: &[&str]) -> Option<Running> {
    let interop = support::interop(test)?;
    Some(
        Running::stdio(
            test,
            extra,
            &fixture_command(&interop.python(), &interop.root),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_has_its_own_child_and_only_its_owner_can_use_it() {
    // Two users: the test user (alice) and bob, from a hash as an operator would give it.
    let bob_password = "bob's own long password";
    let bob_user = format!(
        "bob:{}",
        mcp_oauth::authn::StaticUsers::hash_password(bob_password)
    );
    let Some(proxy) = start(
        "each_session_has_its_own_child_and_only_its_owner_can_use_it",
        &["--users", &bob_user],
    )
    .await
    else {
        return;
    };
    let alice = grant(&proxy.base, &proxy.mcp, "client A").await;
    let bob = grant_as(&proxy.base, &proxy.mcp, "client B", "bob", bob_password).await;
    assert_ne!(alice.client_id, bob.client_id);

    let mut a = Raw::new(&proxy.mcp, &alice.access);
    let init = a.initialize().await;
    assert_eq!(init.status, 200, "{init:?}");
    assert!(
        init.content_type.starts_with("text/event-stream"),
        "{init:?}"
    );
    let sid_a = init.session.clone().expect("a session id");
    assert!(sid_a.len() >= 32, "an unguessable session id: {sid_a}");
    assert_eq!(
        init.response(0).unwrap()["result"]["protocolVersion"],
        "2025-06-18"
    );
    let mut b = Raw::new(&proxy.mcp, &bob.access);
    assert_eq!(b.initialize().await.status, 200);
    assert_ne!(a.session, b.session);

    // Separate processes, separate state.
    let pid_a = a.whoami(1).await;
    let pid_b = b.whoami(1).await;
    assert_ne!(pid_a, pid_b, "two sessions share a child");
    assert_eq!(a.whoami(2).await, pid_a, "a session keeps its child");
    let r = a
        .call(3, "remember", json!({"value": "alice's secret"}))
        .await;
    assert_eq!(Raw::text(&r, 3), "ok", "{r:?}");
    assert_eq!(
        Raw::text(&a.call(4, "recall", json!({})).await, 4),
        "alice's secret"
    );
    assert_eq!(Raw::text(&b.call(4, "recall", json!({})).await, 4), "");

    // The child inherits no MCP_OAUTH_* variable (the test sets MCP_OAUTH_TEST_SECRET).
    let environ = std::fs::read(format!("/proc/{pid_a}/environ")).unwrap_or_default();
    assert!(!environ.is_empty(), "cannot read the child's environment");
    assert!(
        !environ
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(b"MCP_OAUTH_")),
        "the child inherited an MCP_OAUTH_* variable"
    );

    // Bob with Alice's session id: the session does not exist for him.
    let mut thief = Raw::new(&proxy.mcp, &bob.access);
    thief.session = a.session.clone();
    let stolen = thief.call(5, "recall", json!({})).await;
    assert_eq!(stolen.status, 404, "{stolen:?}");
    assert!(!stolen.body.contains("alice's secret"));
    assert_eq!(thief.delete().await, 404);
    assert!(alive(pid_a), "a refused DELETE stopped the child");
    // … and Alice's session still works.
    assert_eq!(
        Raw::text(&a.call(6, "recall", json!({})).await, 6),
        "alice's secret"
    );

    // Progress is streamed on the request's SSE stream, before the result.
    let slow = a
        .post(&json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 3, "delay": 0.05},
                       "_meta": {"progressToken": "p-7"}}
        }))
        .await;
    assert_eq!(slow.status, 200, "{slow:?}");
    let progress: Vec<_> = slow
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{slow:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "p-7")
    );
    assert_eq!(
        slow.messages.last().unwrap()["id"],
        7,
        "the response comes last: {slow:?}"
    );
    assert_eq!(Raw::text(&slow, 7), "done");

    // A client accepting JSON only gets the response as JSON.
    let j = a
        .post_with(
            &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hi"}}}),
            "application/json",
        )
        .await;
    assert_eq!(j.status, 200, "{j:?}");
    assert!(j.content_type.starts_with("application/json"), "{j:?}");
    assert_eq!(Raw::text(&j, 8), "hi");

    // The transport's refusals.
    let mut none = a.clone();
    none.session = None;
    let missing = none.call(9, "echo", json!({"text": "x"})).await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert_eq!(missing.messages[0]["error"]["code"], -32600);
    let unknown = {
        let mut u = a.clone();
        u.session = Some("0".repeat(64));
        u.call(9, "echo", json!({"text": "x"})).await
    };
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let html = a
        .post_with(
            &json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}),
            "text/html",
        )
        .await;
    assert_eq!(html.status, 406, "{html:?}");
    assert!(html.content_type.starts_with("application/json"));
    assert!(html.messages[0]["error"]["message"].is_string());
    let text = common::read(
        a.request(reqwest::Method::POST, "application/json, text/event-stream")
            .header("content-type", "text/plain")
            .body(r#"{"jsonrpc":"2.0","id":11,"method":"ping"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text.status, 415, "{text:?}");
    let batch = a
        .post(&json!([
            {"jsonrpc": "2.0", "id": 12, "method": "ping"},
            {"jsonrpc": "2.0", "id": 13, "method": "ping"}
        ]))
        .await;
    assert_eq!(batch.status, 400, "{batch:?}");
    assert_eq!(batch.messages[0]["error"]["code"], -32600);
    assert!(batch.body.contains("batch"), "{batch:?}");
    let garbage = common::read(
        a.request(reqwest::Method::POST, "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.messages[0]["error"]["code"], -32700);
    let get_json = a
        .request(reqwest::Method::GET, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(get_json.status().as_u16(), 406);
    let get = a
        .request(reqwest::Method::GET, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    assert!(
        get.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(get);
    let anonymous = reqwest::Client::new()
        .post(&proxy.mcp)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // DELETE ends the session and stops its child.
    assert_eq!(a.delete().await, 204);
    assert!(gone(pid_a).await, "the child {pid_a} outlived its session");
    assert_eq!(a.call(14, "recall", json!({})).await.status, 404);
    assert!(alive(pid_b), "another session's child was stopped");
    // A new initialize gets a new child.
    assert_eq!(a.initialize().await.status, 200);
    assert_ne!(a.whoami(15).await, pid_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_child_fails_its_request_and_the_next_session_gets_a_new_one() {
    let Some(proxy) = start(
        "a_crashed_child_fails_its_request_and_the_next_session_gets_a_new_one",
        &[],
    )
    .await
    else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "crash client").await;
    let mut c = Raw::new(&proxy.mcp, &g.access);
    assert_eq!(c.initialize().await.status, 200);
    let pid = c.whoami(1).await;
    let crash = c.call(2, "crash", json!({})).await;
    assert_eq!(crash.status, 200, "{crash:?}");
    let err = &crash
        .response(2)
        .unwrap_or_else(|| panic!("no answer to the crashing call: {crash:?}"))["error"];
    assert_eq!(err["code"], -32603, "{crash:?}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("the MCP server process exited (status 3)"),
        "{crash:?}"
    );
    assert!(
        proxy.wait_log("fixture: crashing on purpose").await,
        "the child's stderr is not in the log:\n{}",
        proxy.logs()
    );
    assert!(gone(pid).await);
    // The session is gone: 404, so the client re-initializes and gets a fresh child.
    assert_eq!(c.call(3, "echo", json!({"text": "x"})).await.status, 404);
    assert_eq!(c.initialize().await.status, 200);
    let fresh = c.whoami(4).await;
    assert_ne!(fresh, pid);
    assert!(!proxy.logs().contains(&g.access), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_bounded_and_idle_sessions_are_ended() {
    let Some(proxy) = start(
        "children_are_bounded_and_idle_sessions_are_ended",
        &[
            "--max-children",
            "1",
            "--idle-timeout",
            "3",
            "--kill-grace",
            "1",
        ],
    )
    .await
    else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "bounded client").await;
    let mut first = Raw::new(&proxy.mcp, &g.access);
    assert_eq!(first.initialize().await.status, 200);
    let pid = first.whoami(1).await;
    let mut second = Raw::new(&proxy.mcp, &g.access);
    let full = second.initialize().await;
    assert_eq!(full.status, 503, "{full:?}");
    assert!(full.header("retry-after").is_some(), "{full:?}");
    assert!(full.messages[0]["error"]["message"].is_string(), "{full:?}");
    // Idle: the session ends, its child stops, the slot is free again.
    assert!(gone(pid).await, "the idle child {pid} was not stopped");
    assert_eq!(
        first.call(2, "echo", json!({"text": "x"})).await.status,
        404
    );
    let mut ok = false;
    for _ in 0..50 {
        if second.initialize().await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the slot of the idle child was not freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_proxy_stops_every_child() {
    let Some(mut proxy) = start("sigterm_to_the_proxy_stops_every_child", &[]).await else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "sigterm client").await;
    let mut pids = Vec::new();
    let mut clients = Vec::new();
    for i in 0..2 {
        let mut c = Raw::new(&proxy.mcp, &g.access);
        assert_eq!(c.initialize().await.status, 200);
        pids.push(c.whoami(i).await);
        clients.push(c);
    }
    assert_ne!(pids[0], pids[1]);
    // An open standalone stream (as SDK clients keep) does not hold the shutdown up.
    let stream = clients[0]
        .request(reqwest::Method::GET, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let status = proxy.terminate().await.expect("the proxy did not exit");
    assert!(status.success(), "{status}\n{}", proxy.logs());
    for pid in pids {
        assert!(gone(pid).await, "child {pid} survived the proxy");
    }
    drop(stream);
}
