//! How the stdio bridge routes what a child writes, with a scripted stub child (Python
//! standard library only, written by the test): a server→client request on the open request's
//! stream and the client's answer POSTed back (`202`), a notification sent outside any request
//! on the standalone GET stream, an over-long line and a non-JSON line dropped without harm,
//! batches in protocol version `2025-03-26` (the last that had them), the body bound (`413`),
//! method and stream refusals (`405`, `409`), and a child that ignores `SIGTERM` killed after
//! the grace when the proxy stops.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use common::{Raw, Running, gone, grant, temp_dir};
use serde_json::{Value, json};

const STUB: &str = r#"
import json, os, signal, sys, threading, time

if "stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

lock = threading.Lock()
def send(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

waiting = {}
last = None
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if method is None:
        # A response from the client to one of our requests.
        orig = waiting.pop(msg["id"], None)
        if orig is None:
            last = msg
        else:
            send({"jsonrpc": "2.0", "id": orig, "result": {"got": msg.get("result")}})
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {},
            "serverInfo": {"name": "stub", "version": "0"}, "pid": os.getpid()}})
    elif method == "stub/ask":
        waiting["srv-1"] = mid
        send({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
    elif method == "stub/later":
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
        def later():
            time.sleep(0.3)
            send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "stub://x"}})
        threading.Thread(target=later).start()
    elif method == "stub/ask-later":
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
        def ask():
            time.sleep(0.3)
            send({"jsonrpc": "2.0", "id": "srv-2", "method": "roots/list"})
        threading.Thread(target=ask).start()
    elif method == "stub/last":
        send({"jsonrpc": "2.0", "id": mid, "result": {"last": last}})
    elif method == "stub/huge":
        with lock:
            sys.stdout.write("[" + "1," * (3 << 20) + "1]\n")
            sys.stdout.write("this is not JSON\n")
            sys.stdout.flush()
        send({"jsonrpc": "2.0", "id": mid, "result": {"after": "huge"}})
    elif method == "stub/never" or method == "notifications/cancelled":
        pass
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})

if "stubborn" in sys.argv:
    # Deaf to the end of stdin and to SIGTERM: only SIGKILL stops it.
    time.sleep(3600)
"#;

async fn start(test: &str, extra: &[&str], stubborn: bool) -> Option<Running> {
    let interop = support::interop(test)?;
    let script = temp_dir(test).join("stub.py");
    std::fs::write(&script, STUB).expect("write the stub");
    let mut command = vec![
        interop.python().display().to_string(),
        "-u".to_owned(),
        script.display().to_string(),
    ];
    if stubborn {
        command.push("stubborn".to_owned());
    }
    Some(Running::stdio(test, extra, &command).await)
}

async fn initialize(raw: &mut Raw, version: &str) -> u64 {
    raw.session = None;
    let a = raw
        .post(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    raw.session = a.session.clone();
    raw.protocol = version.to_owned();
    a.response(0).unwrap()["result"]["pid"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_childs_messages_reach_the_right_stream() {
    let test = "the_childs_messages_reach_the_right_stream";
    let Some(proxy) = start(test, &[], false).await else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "routing client").await;
    let mut raw = Raw::new(&proxy.mcp, &g.access);
    initialize(&mut raw, "2025-06-18").await;

    // A server→client request arrives on the open request's stream; the client's answer is
    // POSTed (202) and reaches the child, which then answers the original request.
    let res = raw
        .request(reqwest::Method::POST, "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "stub/ask"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut body = res.bytes_stream();
    let mut text = String::new();
    use futures_util::StreamExt as _;
    while !text.contains("roots/list") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("the server's request did not arrive")
            .expect("the stream ended early")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ask = common::sse_messages(&text);
    assert_eq!(ask[0]["id"], "srv-1", "{text}");
    let answered = raw
        .post(&json!({"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}}))
        .await;
    assert_eq!(answered.status, 202, "{answered:?}");
    while !text.contains("\"got\"") {
        let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("no answer after the client's response")
        else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let all = common::sse_messages(&text);
    assert_eq!(
        all.last().unwrap()["result"]["got"],
        json!({"roots": []}),
        "{text}"
    );
    assert!(
        body.next().await.is_none(),
        "the stream stays open after the response"
    );

    // A notification outside any request goes to the standalone stream.
    let get = raw
        .request(reqwest::Method::GET, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    let second = raw
        .request(reqwest::Method::GET, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 409, "a second standalone stream");
    let later = raw
        .post(&json!({"jsonrpc": "2.0", "id": 2, "method": "stub/later"}))
        .await;
    assert_eq!(later.status, 200);
    assert_eq!(later.messages.len(), 1, "{later:?}");
    let mut stream = get.bytes_stream();
    let mut text = String::new();
    while !text.contains("resources/updated") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the notification did not reach the standalone stream")
            .expect("the standalone stream ended")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(common::sse_messages(&text)[0]["params"]["uri"], "stub://x");
    drop(stream);

    // A request of the child with no stream to carry it is answered with an error.
    let asked = raw
        .post(&json!({"jsonrpc": "2.0", "id": 20, "method": "stub/ask-later"}))
        .await;
    assert_eq!(asked.status, 200);
    let mut last = Value::Null;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = raw
            .post(&json!({"jsonrpc": "2.0", "id": 100 + i, "method": "stub/last"}))
            .await;
        last = a.response(100 + i).unwrap()["result"]["last"].clone();
        if !last.is_null() {
            break;
        }
    }
    assert_eq!(last["id"], "srv-2", "{last}");
    assert_eq!(last["error"]["code"], -32603, "{last}");

    // A request the client cancels: its stream ends without a response.
    let never = raw
        .request(reqwest::Method::POST, "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 30, "method": "stub/never"}))
        .send()
        .await
        .unwrap();
    assert_eq!(never.status().as_u16(), 200);
    let cancel = raw
        .post(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 30, "reason": "test"}}),
        )
        .await;
    assert_eq!(cancel.status, 202, "{cancel:?}");
    let rest = tokio::time::timeout(Duration::from_secs(20), never.text())
        .await
        .expect("the cancelled request's stream did not end")
        .unwrap();
    assert!(common::sse_messages(&rest).is_empty(), "{rest}");

    // An over-long line and a non-JSON line are dropped; the session goes on.
    let huge = raw
        .post(&json!({"jsonrpc": "2.0", "id": 3, "method": "stub/huge"}))
        .await;
    assert_eq!(huge.status, 200);
    assert_eq!(
        huge.messages.len(),
        1,
        "{}",
        &huge.body[..huge.body.len().min(300)]
    );
    assert_eq!(huge.response(3).unwrap()["result"]["after"], "huge");
    assert!(proxy.wait_log("longer than the line bound").await);
    assert!(proxy.wait_log("not a JSON-RPC message").await);

    // The body bound, methods, and batches under 2025-06-18.
    let big = json!({"jsonrpc": "2.0", "id": 4, "method": "ping",
                     "params": {"pad": "x".repeat(5 << 20)}});
    // (On a client of its own: the proxy answers before reading the whole body and closes
    // that connection.)
    let mut bounded = Raw::new(&proxy.mcp, &g.access);
    bounded.session = raw.session.clone();
    assert_eq!(bounded.post(&big).await.status, 413);
    let put = raw
        .request(reqwest::Method::PUT, "application/json, text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert!(put.headers().contains_key("allow"));

    // Another protocol version than the negotiated one is refused.
    let mut other = raw.clone();
    other.protocol = "1999-01-01".to_owned();
    let wrong = other
        .post(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        .await;
    assert_eq!(wrong.status, 400, "{wrong:?}");
    assert!(wrong.body.contains("2025-06-18"), "{wrong:?}");

    // Protocol version 2025-03-26 had batches: both answers on one stream.
    let mut old = Raw::new(&proxy.mcp, &g.access);
    initialize(&mut old, "2025-03-26").await;
    let batch = old
        .post(&json!([
            {"jsonrpc": "2.0", "id": 10, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 11, "method": "ping"}
        ]))
        .await;
    assert_eq!(batch.status, 200, "{batch:?}");
    assert!(
        batch.response(10).is_some() && batch.response(11).is_some(),
        "{batch:?}"
    );
    let json_batch = old
        .post_with(
            &json!([
                {"jsonrpc": "2.0", "id": 12, "method": "ping"},
                {"jsonrpc": "2.0", "id": 13, "method": "ping"}
            ]),
            "application/json",
        )
        .await;
    assert_eq!(json_batch.status, 200, "{json_batch:?}");
    assert!(
        json_batch.body.trim_start().starts_with('['),
        "{json_batch:?}"
    );
    assert_eq!(json_batch.messages.len(), 2);
    let in_batch_init = old
        .post(&json!([{"jsonrpc": "2.0", "id": 14, "method": "initialize", "params": {}}]))
        .await;
    assert_eq!(in_batch_init.status, 400);
    let _: Value = in_batch_init.messages[0].clone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let test = "a_child_ignoring_sigterm_is_killed_after_the_grace";
    let Some(mut proxy) = start(test, &["--kill-grace", "1"], true).await else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "stubborn client").await;
    let mut raw = Raw::new(&proxy.mcp, &g.access);
    let pid = initialize(&mut raw, "2025-06-18").await;
    // DELETE: the child ignores SIGTERM and stdin's end… until SIGKILL.
    assert_eq!(raw.delete().await, 204);
    assert!(gone(pid).await, "the stubborn child {pid} survived DELETE");
    let pid = initialize(&mut raw, "2025-06-18").await;
    let status = proxy.terminate().await.expect("the proxy did not stop");
    assert!(status.success());
    assert!(
        gone(pid).await,
        "the stubborn child {pid} survived the proxy"
    );
    let log = proxy.logs();
    assert!(log.contains("child stopped"), "{log}");
    assert!(log.contains("signal 9"), "not killed by SIGKILL: {log}");
}
