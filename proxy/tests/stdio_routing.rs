//! How the stdio bridge routes what a child writes, with a scripted stub child (Python
//! standard library only, written by the test): a server→client request on the open request's
//! stream and the client's answer POSTed back (`202`), a notification sent outside any request
//! on the standalone GET stream, a request written right after a response (not lost on the
//! stream that response ends), a JSON-only client whose child asks something (the standalone
//! stream or an error, never a hang), an id already awaited refused (`400`), an over-long
//! line and a non-JSON line dropped without harm, an over-long response failing its request,
//! batches in protocol version `2025-03-26` (the last that had them), the body bound (`413`),
//! method and stream refusals (`405`, `409`), the proxy's environment out of the child's
//! reach, and a child that ignores `SIGTERM` killed after the grace when the proxy stops,
//! with its own child.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use common::{Raw, Running, gone, grant, temp_dir};
use serde_json::{Value, json};

const STUB: &str = r#"
import json, os, signal, subprocess, sys, threading, time

if "stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A child of the child, in its process group: it must go when the session or the proxy does.
grandchild = subprocess.Popen(["sleep", "300"]).pid if "grandchild" in sys.argv else None

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
            "serverInfo": {"name": "stub", "version": "0"}, "pid": os.getpid(),
            "grandchild": grandchild}})
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
    elif method == "stub/ask-right-after":
        # A request written right after a response, with no pause: it must not be queued on
        # the stream that this response ends.
        with lock:
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": mid, "result": {}}) + "\n")
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": "srv-3", "method": "roots/list"}) + "\n")
            sys.stdout.flush()
    elif method == "stub/parent-environ":
        # A child runs as the proxy's user: can it read the proxy's environment?
        try:
            with open("/proc/%d/environ" % os.getppid(), "rb") as f:
                env = f.read()
            seen = {"readable": True, "secret": b"MCP_OAUTH_TEST_SECRET" in env}
        except OSError as e:
            seen = {"readable": False, "error": str(e)}
        send({"jsonrpc": "2.0", "id": mid, "result": seen})
    elif method == "stub/huge-response":
        send({"jsonrpc": "2.0", "id": mid, "result": {"pad": "x" * (17 << 20)}})
    elif method == "stub/last":
        send({"jsonrpc": "2.0", "id": mid, "result": {"last": last}})
    elif method == "stub/huge":
        with lock:
            sys.stdout.write("[" + "1," * (9 << 20) + "1]\n")
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

/// The proxy in front of the stub, with `extra` flags and the stub's `flags` (`stubborn`,
/// `grandchild`), as an ordinary user runs it (no capabilities, should the tests run as
/// root).
async fn start(test: &str, extra: &[&str], flags: &[&str]) -> Option<Running> {
    let interop = support::interop(test)?;
    let script = temp_dir(test).join("stub.py");
    std::fs::write(&script, STUB).expect("write the stub");
    let mut command = vec![
        interop.python().display().to_string(),
        "-u".to_owned(),
        script.display().to_string(),
    ];
    command.extend(flags.iter().map(|f| (*f).to_owned()));
    Some(Running::stdio_unprivileged(test, extra, &command).await)
}

async fn initialize(raw: &mut Raw, version: &str) -> Value {
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
    a.response(0).unwrap()["result"].clone()
}

/// Reads `body` into `text` until it contains `needle` (bounded: panics naming `what`).
async fn read_until<S>(body: &mut S, text: &mut String, needle: &str, what: &str)
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    use futures_util::StreamExt as _;
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing came in time; so far: {text}"))
            .unwrap_or_else(|| panic!("{what}: the stream ended; so far: {text}"))
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_childs_messages_reach_the_right_stream() {
    let test = "the_childs_messages_reach_the_right_stream";
    let Some(proxy) = start(test, &[], &[]).await else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "routing client").await;
    let mut raw = Raw::new(&proxy.mcp, &g.access);
    initialize(&mut raw, "2025-06-18").await;

    // The child runs as the proxy's user, yet cannot read the proxy's environment (which
    // holds MCP_OAUTH_TEST_SECRET): the proxy is not dumpable.
    let seen = raw
        .post(&json!({"jsonrpc": "2.0", "id": 90, "method": "stub/parent-environ"}))
        .await;
    let seen = &seen.response(90).unwrap()["result"];
    assert_eq!(
        seen["readable"], false,
        "a child read /proc/<proxy>/environ: {seen}"
    );

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

    // A request the child writes right after a response goes to the standalone stream, not
    // onto the POST stream that the response ends (where it would be lost).
    let right_after = raw
        .post(&json!({"jsonrpc": "2.0", "id": 21, "method": "stub/ask-right-after"}))
        .await;
    assert_eq!(right_after.status, 200, "{right_after:?}");
    assert!(right_after.response(21).is_some(), "{right_after:?}");
    read_until(
        &mut stream,
        &mut text,
        "srv-3",
        "the request written right after a response",
    )
    .await;
    let answered = raw
        .post(&json!({"jsonrpc": "2.0", "id": "srv-3", "result": {"roots": []}}))
        .await;
    assert_eq!(answered.status, 202, "{answered:?}");

    // A client accepting JSON only: the child's request while it waits (roots/list) goes to
    // the standalone stream, and once answered there the JSON answer comes.
    let json_only = {
        let raw = raw.clone();
        tokio::spawn(async move {
            raw.post_with(
                &json!({"jsonrpc": "2.0", "id": 22, "method": "stub/ask"}),
                "application/json",
            )
            .await
        })
    };
    read_until(
        &mut stream,
        &mut text,
        "\"srv-1\"",
        "the request of the child during a JSON-only POST",
    )
    .await;
    let roots = json!({"roots": [{"uri": "file:///r"}]});
    let answered = raw
        .post(&json!({"jsonrpc": "2.0", "id": "srv-1", "result": roots}))
        .await;
    assert_eq!(answered.status, 202, "{answered:?}");
    let json_only = tokio::time::timeout(Duration::from_secs(20), json_only)
        .await
        .expect("the JSON-only request hangs")
        .unwrap();
    assert_eq!(json_only.status, 200, "{json_only:?}");
    assert!(
        json_only.content_type.starts_with("application/json"),
        "{json_only:?}"
    );
    assert_eq!(
        json_only.response(22).unwrap()["result"]["got"],
        roots,
        "{json_only:?}"
    );
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
        if last["id"] == "srv-2" {
            break;
        }
    }
    assert_eq!(last["id"], "srv-2", "{last}");
    assert_eq!(last["error"]["code"], -32603, "{last}");

    // The same, right after a response: the child's request is answered with the error too
    // (not queued on the ending stream, where it would wait forever).
    let asked = raw
        .post(&json!({"jsonrpc": "2.0", "id": 24, "method": "stub/ask-right-after"}))
        .await;
    assert_eq!(asked.status, 200);
    let mut last = Value::Null;
    for i in 0..50 {
        let a = raw
            .post(&json!({"jsonrpc": "2.0", "id": 200 + i, "method": "stub/last"}))
            .await;
        last = a.response(200 + i).unwrap()["result"]["last"].clone();
        if last["id"] == "srv-3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["id"], "srv-3", "{last}");
    assert_eq!(last["error"]["code"], -32603, "{last}");

    // JSON only, no standalone stream: the child's request gets the error at once and the
    // JSON request its answer; nothing waits forever.
    let json_only = tokio::time::timeout(
        Duration::from_secs(20),
        raw.post_with(
            &json!({"jsonrpc": "2.0", "id": 25, "method": "stub/ask"}),
            "application/json",
        ),
    )
    .await
    .expect("a JSON-only request whose child asks the client hangs");
    assert_eq!(json_only.status, 200, "{json_only:?}");
    assert_eq!(
        json_only.response(25).unwrap()["result"]["got"],
        Value::Null,
        "{json_only:?}"
    );

    // A request the client cancels: its stream ends without a response.
    let never = raw
        .request(reqwest::Method::POST, "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 30, "method": "stub/never"}))
        .send()
        .await
        .unwrap();
    assert_eq!(never.status().as_u16(), 200);
    // The same id again while the first waits: refused, the first keeps its response.
    let dup = raw
        .post(&json!({"jsonrpc": "2.0", "id": 30, "method": "stub/never"}))
        .await;
    assert_eq!(dup.status, 400, "{dup:?}");
    assert_eq!(dup.messages[0]["error"]["code"], -32600, "{dup:?}");
    assert!(dup.body.contains("already in use"), "{dup:?}");
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
    // An over-long response fails its request instead of leaving it waiting.
    let too_big = raw
        .post(&json!({"jsonrpc": "2.0", "id": 6, "method": "stub/huge-response"}))
        .await;
    assert_eq!(too_big.status, 200);
    let err = &too_big.response(6).unwrap_or_else(|| {
        panic!(
            "no answer: {}",
            &too_big.body[..too_big.body.len().min(300)]
        )
    })["error"];
    assert_eq!(err["code"], -32603, "{err}");
    assert_eq!(
        err["message"], "response larger than 16777216 bytes",
        "{err}"
    );
    assert!(
        raw.post(&json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
            .await
            .response(7)
            .is_some(),
        "the session did not go on"
    );

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
    let Some(mut proxy) = start(test, &["--kill-grace", "1"], &["stubborn", "grandchild"]).await
    else {
        return;
    };
    let g = grant(&proxy.base, &proxy.mcp, "stubborn client").await;
    let mut raw = Raw::new(&proxy.mcp, &g.access);
    let started = initialize(&mut raw, "2025-06-18").await;
    let (pid, grandchild) = (
        started["pid"].as_u64().unwrap(),
        started["grandchild"].as_u64().unwrap(),
    );
    // DELETE: the child ignores SIGTERM and stdin's end… until SIGKILL.
    assert_eq!(raw.delete().await, 204);
    assert!(gone(pid).await, "the stubborn child {pid} survived DELETE");
    assert!(
        gone(grandchild).await,
        "the child's own child {grandchild} survived DELETE"
    );
    let started = initialize(&mut raw, "2025-06-18").await;
    let (pid, grandchild) = (
        started["pid"].as_u64().unwrap(),
        started["grandchild"].as_u64().unwrap(),
    );
    assert!(common::alive(grandchild));
    let status = proxy.terminate().await.expect("the proxy did not stop");
    assert!(status.success());
    assert!(
        gone(pid).await,
        "the stubborn child {pid} survived the proxy"
    );
    // The process group: the child's own child goes with it.
    assert!(
        gone(grandchild).await,
        "the child's own child {grandchild} survived the proxy's SIGTERM"
    );
    let log = proxy.logs();
    assert!(log.contains("child stopped"), "{log}");
    assert!(log.contains("signal 9"), "not killed by SIGKILL: {log}");
}
