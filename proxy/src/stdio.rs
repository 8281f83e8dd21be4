//! A stdio MCP server served as streamable HTTP (MCP 2025-06-18 / 2025-11-25 transport), one
//! child process per MCP session.
//!
//! The router is mounted behind the OAuth layer, so every request it sees is authorized; the
//! layer puts the caller's [`AuthContext`] in the request's extensions.
//!
//! - `POST` of an `initialize` request without `Mcp-Session-Id` starts a child (at most
//!   [`StdioOptions::max_children`] at once, and [`StdioOptions::max_children_per_user`] of
//!   one token subject: `503` with `Retry-After` beyond) and answers with a fresh,
//!   unguessable session id in `Mcp-Session-Id`. The session belongs to the caller (the
//!   token's subject and client): a request naming it with anyone else's token gets `404`, as
//!   an unknown session does; a request other than `initialize` without a session id gets
//!   `400`.
//! - `POST` of JSON-RPC requests: the answer is an SSE stream (`text/event-stream`) carrying
//!   the child's responses to them, the `notifications/progress` whose `progressToken` those
//!   requests named, and the other requests and notifications the child sends while it still
//!   waits for a response; it ends after the last response (a stream whose last response has
//!   been routed takes nothing more). A client that accepts only `application/json` gets the
//!   response(s) as JSON and nothing else: what the child sends meanwhile goes to another
//!   open SSE answer or the standalone stream. Only notifications or responses: `202
//!   Accepted`. Batches are refused (JSON-RPC `-32600`) unless the session negotiated
//!   protocol version `2025-03-26`, the last that had them. A request whose id is already
//!   awaited in the session gets `400` (`-32600`); more than
//!   [`StdioOptions::max_requests_per_session`] POSTs in flight, `503` with `Retry-After`. A
//!   client's `notifications/cancelled` is passed on to the child and ends the wait for the
//!   cancelled request's response (its stream closes without one). A child's request that no
//!   stream can carry is answered for the client with a JSON-RPC error.
//! - `GET` with `Accept: text/event-stream`: the session's standalone stream, for what the
//!   child sends outside any open request (one at a time: `409` for a second).
//! - A stream (SSE answer or standalone) ends when the caller's token expires; the session
//!   goes on for the same caller with a fresh token.
//! - `DELETE`: ends the session and stops its child.
//! - A line of the child longer than [`StdioOptions::max_line_bytes`] is dropped; when its
//!   first bytes show the response to a pending request, that request gets a JSON-RPC
//!   `-32603` error "response larger than N bytes" instead.
//! - A child that exits (or closes its stdout) fails its open requests with a JSON-RPC
//!   `-32603` error "the MCP server process exited (status N)", is logged with its last stderr
//!   lines, and its session is gone (`404`): the client's next `initialize` gets a new child.
//!   A session without requests for [`StdioOptions::idle_timeout`] is ended the same way, and
//!   so is one whose `initialize` did not succeed within [`StdioOptions::init_timeout`].
//! - [`StdioBridge::shutdown`] sends `SIGTERM` to every child's process group and `SIGKILL`
//!   after [`StdioOptions::kill_grace`].
//!
//! **What a child inherits.** The proxy's environment, minus every variable whose name begins
//! with `MCP_OAUTH_` (they may hold the proxy's passwords and store URLs). Nothing from the
//! HTTP request reaches it but the JSON-RPC messages: not the `Authorization` header, not the
//! token, not the caller's identity. Its working directory is the proxy's, and it runs as the
//! proxy's user: it can read every file the proxy can. The `mcp-oauth-proxy` binary makes
//! itself non-dumpable on Linux, so a child cannot read the proxy's own environment from
//! `/proc/<pid>/environ` (an embedding program has to do the same).

pub mod child;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use mcp_oauth::AuthContext;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use child::{Line, StderrRing};

/// The header carrying the session id.
const SESSION_HEADER: &str = "mcp-session-id";
/// How many messages may wait for a slow HTTP client on one stream before the child's reader
/// waits too (only that session's child is held up).
const STREAM_BUFFER: usize = 64;
/// How many messages may wait for the child's stdin before a POST waits too (each may be as
/// large as a request body: the queue is kept short, and `send().await` pushes back).
const INPUT_QUEUE: usize = 4;
/// A comment line sent on idle standalone streams, so a client that went away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How children are started and bounded.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// At most this many children at once; a new session beyond is refused with `503`.
    pub max_children: usize,
    /// At most this many children of one user (token subject) at once; a new session of
    /// that user beyond is refused with `503` (whatever client it comes through).
    pub max_children_per_user: usize,
    /// A session with no request in flight for this long is ended and its child stopped.
    pub idle_timeout: Duration,
    /// A session whose `initialize` has not succeeded (the child answered it with a result)
    /// this long after it started, with no request in flight, is ended the same way.
    pub init_timeout: Duration,
    /// Between `SIGTERM` and `SIGKILL` when a child is stopped.
    pub kill_grace: Duration,
    /// The longest line read from a child's stdout. A longer message is dropped (and
    /// logged); when its first bytes show it is the response to a pending request, that
    /// request gets a JSON-RPC error instead.
    pub max_line_bytes: usize,
    /// The largest request body accepted (`413` beyond).
    pub max_body_bytes: usize,
    /// At most this many POSTs of one session in flight at once (an SSE answer counts until
    /// it ends); more get `503` with `Retry-After`.
    pub max_requests_per_session: usize,
    /// How many of a child's last stderr lines are kept for the log when it exits.
    pub stderr_lines: usize,
}

impl StdioOptions {
    /// The defaults for `command`: 32 children, 8 per user, 10 minutes idle, 60 s to
    /// initialize, 5 s grace, 16 MiB lines, 4 MiB bodies, 64 POSTs in flight per session,
    /// 20 stderr lines.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            max_children: 32,
            max_children_per_user: default_children_per_user(32),
            idle_timeout: Duration::from_secs(600),
            init_timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            max_line_bytes: 16 << 20,
            max_body_bytes: 4 << 20,
            max_requests_per_session: 64,
            stderr_lines: 20,
        }
    }
}

/// The default `max_children_per_user` for `max_children`: a quarter of it, at least 1.
pub fn default_children_per_user(max_children: usize) -> usize {
    (max_children / 4).max(1)
}

/// Who opened a session: the token's subject and client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    subject: String,
    client_id: Option<String>,
}

impl Owner {
    fn of(ctx: &AuthContext) -> Self {
        Self {
            subject: ctx.subject().to_owned(),
            client_id: ctx.client_id().map(str::to_owned),
        }
    }
}

/// The bridge between streamable-HTTP sessions and stdio children.
#[derive(Debug)]
pub struct StdioBridge {
    options: StdioOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// One permit per running child, held until it has been reaped.
    slots: Arc<Semaphore>,
    /// Running children per user (token subject), each counted until it has been reaped.
    users: Arc<Mutex<HashMap<String, usize>>>,
    closing: AtomicBool,
    reaper: AtomicBool,
}

/// What a stream receives.
#[derive(Debug)]
enum Out {
    /// A message of the child (or the bridge's error in place of a response).
    Msg(Value),
    /// The client cancelled this request (`notifications/cancelled`): no response will come.
    Cancelled(String),
}

/// Where the child's messages go: the open POST streams and the standalone GET stream.
#[derive(Debug, Default)]
struct Routes {
    next_stream: u64,
    streams: HashMap<u64, mpsc::Sender<Out>>,
    /// POST streams that carry the child's requests and notifications, oldest first: SSE
    /// answers still waiting for a response (one that has them all leaves at once).
    open: Vec<u64>,
    /// Request id (its JSON text) → the stream waiting for its response.
    pending: HashMap<String, u64>,
    /// Stream → how many of its requests still wait for a response.
    waiting: HashMap<u64, usize>,
    /// Progress token (its JSON text) → the stream of the request that named it.
    progress: HashMap<String, u64>,
    standalone: Option<u64>,
    /// The session has ended: nothing may register any more.
    gone: bool,
}

/// One MCP session and its child.
#[derive(Debug)]
struct Session {
    owner: Owner,
    pid: u32,
    input: mpsc::Sender<Vec<u8>>,
    routes: Mutex<Routes>,
    /// POSTs in flight, an SSE answer until it ends (an idle session has none).
    busy: AtomicUsize,
    /// When the child was started.
    created: Instant,
    last_used: Mutex<Instant>,
    /// The child answered the `initialize` request with a result.
    initialized: AtomicBool,
    /// The negotiated protocol version, from the child's `initialize` result.
    protocol: Mutex<Option<String>>,
    /// The id of the `initialize` request that opened the session.
    init_id: String,
    /// Set to ask the supervisor to stop the child.
    stop: watch::Sender<Option<&'static str>>,
    /// Becomes `true` once the child has been reaped.
    done: watch::Sender<bool>,
}

impl Session {
    /// A session of `owner` whose child `pid` reads `input`, opened by the `initialize`
    /// request `init_id`, not yet initialized.
    fn new(
        owner: Owner,
        pid: u32,
        input: mpsc::Sender<Vec<u8>>,
        init_id: String,
        stop: watch::Sender<Option<&'static str>>,
        done: watch::Sender<bool>,
    ) -> Self {
        Self {
            owner,
            pid,
            input,
            routes: Mutex::new(Routes::default()),
            busy: AtomicUsize::new(0),
            created: Instant::now(),
            last_used: Mutex::new(Instant::now()),
            initialized: AtomicBool::new(false),
            protocol: Mutex::new(None),
            init_id,
            stop,
            done,
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    fn request_stop(&self, why: &'static str) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Counts one more POST in flight, unless `max` are already: the guard counts it down.
    fn enter(self: &Arc<Self>, max: usize) -> Option<InFlight> {
        self.busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight(self.clone()))
    }

    /// Registers a POST stream waiting for `ids` (and the progress of `tokens`); `carries`:
    /// it may also carry the child's requests and notifications (an SSE answer, not JSON).
    fn open_stream(
        &self,
        ids: &[String],
        tokens: &[String],
        tx: mpsc::Sender<Out>,
        carries: bool,
    ) -> Result<u64, NotOpened> {
        let mut r = self.routes.lock().map_err(|_| NotOpened::Gone)?;
        if r.gone {
            return Err(NotOpened::Gone);
        }
        // A second request with the id of one still waiting would take its response.
        if let Some(id) = ids.iter().find(|id| r.pending.contains_key(*id)) {
            return Err(NotOpened::Duplicate(id.clone()));
        }
        r.next_stream += 1;
        let sid = r.next_stream;
        r.streams.insert(sid, tx);
        if carries {
            r.open.push(sid);
        }
        for id in ids {
            r.pending.insert(id.clone(), sid);
        }
        r.waiting.insert(sid, ids.len());
        for t in tokens {
            r.progress.insert(t.clone(), sid);
        }
        Ok(sid)
    }

    fn close_stream(&self, sid: u64) {
        if let Ok(mut r) = self.routes.lock() {
            r.streams.remove(&sid);
            r.open.retain(|s| *s != sid);
            r.pending.retain(|_, s| *s != sid);
            r.waiting.remove(&sid);
            r.progress.retain(|_, s| *s != sid);
            if r.standalone == Some(sid) {
                r.standalone = None;
            }
        }
    }

    /// Where a message from the child goes, and whether that is the standalone stream
    /// (which nobody waits on: a client not reading it must not hold the child's output up).
    fn route(&self, msg: &Value) -> Option<(mpsc::Sender<Out>, bool)> {
        let mut r = self.routes.lock().ok()?;
        if is_response(msg) {
            let key = msg.get("id").map(id_key)?;
            let sid = r.answered(&key)?;
            return r.streams.get(&sid).map(|tx| (tx.clone(), false));
        }
        if msg.get("method").and_then(Value::as_str) == Some("notifications/progress")
            && let Some(sid) = msg
                .pointer("/params/progressToken")
                .map(id_key)
                .and_then(|t| r.progress.get(&t).copied())
            && let Some(tx) = r.streams.get(&sid)
        {
            return Some((tx.clone(), false));
        }
        // Requests and notifications of the server: the newest SSE answer still waiting for
        // a response (the one most likely waiting on them), else the standalone stream.
        let sid = r.open.last().copied().or(r.standalone)?;
        let standalone = r.standalone == Some(sid);
        r.streams.get(&sid).map(|tx| (tx.clone(), standalone))
    }

    /// The client cancelled request `key`: its stream stops waiting for the response.
    fn cancel(&self, key: &str) {
        let Ok(mut r) = self.routes.lock() else {
            return;
        };
        if let Some(sid) = r.answered(key)
            && let Some(tx) = r.streams.get(&sid)
        {
            let _ = tx.try_send(Out::Cancelled(key.to_owned()));
        }
    }

    /// Ends every stream: each request still waiting gets a JSON-RPC error saying `why`.
    fn fail_all(&self, why: &str) {
        let Ok(mut r) = self.routes.lock() else {
            return;
        };
        r.gone = true;
        for (id, sid) in r.pending.drain().collect::<Vec<_>>() {
            if let Some(tx) = r.streams.get(&sid) {
                let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
                let _ = tx.try_send(Out::Msg(error_message(id, -32603, why)));
            }
        }
        r.streams.clear();
        r.open.clear();
        r.waiting.clear();
        r.progress.clear();
        r.standalone = None;
    }
}

impl Routes {
    /// Request `key` is answered (or cancelled): forgets it and returns its stream. A stream
    /// with no request left leaves `open` at once, under the same lock, so that nothing the
    /// child sends afterwards is queued on a stream about to end.
    fn answered(&mut self, key: &str) -> Option<u64> {
        let sid = self.pending.remove(key)?;
        let left = self.waiting.get_mut(&sid).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left.unwrap_or(0) == 0 {
            self.waiting.remove(&sid);
            self.open.retain(|s| *s != sid);
        }
        Some(sid)
    }
}

/// Why a POST stream was not registered.
#[derive(Debug)]
enum NotOpened {
    /// The session has ended.
    Gone,
    /// A request of the POST has the id (JSON text) of one still waiting in the session.
    Duplicate(String),
}

/// One POST in flight (counted in [`Session::busy`] until dropped).
struct InFlight(Arc<Session>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// The JSON text of a request id or progress token, as a map key.
fn id_key(v: &Value) -> String {
    v.to_string()
}

fn error_message(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A JSON-RPC error as an HTTP response.
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    let body = error_message(Value::Null, code, message).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The response `builder` describes with `body`; should it be invalid (a header value that
/// cannot be sent), a `500` with a JSON-RPC error, never an empty `200`.
fn respond(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "stdio: cannot build a response");
        rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            -32603,
            "Internal error: the proxy could not build its answer",
        )
    })
}

/// A refusal not yet turned into a response (small, for `Result`s).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: i64,
    message: String,
    retry_after: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, message: &str) -> Self {
        Self {
            status,
            code,
            message: message.to_owned(),
            retry_after: false,
        }
    }

    fn response(self) -> Response<Body> {
        let mut res = rpc_error(self.status, self.code, &self.message);
        if self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

/// A new session id: 32 random bytes, hex (visible ASCII, as the transport requires).
fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a POST body holds, checked.
struct Incoming {
    /// The messages, in order.
    messages: Vec<Value>,
    batch: bool,
    /// The ids of the requests among them (their JSON text).
    request_ids: Vec<String>,
    /// The progress tokens those requests named.
    tokens: Vec<String>,
    /// The `initialize` request's id, when there is one.
    initialize: Option<String>,
}

/// Parses and checks a POST body's JSON-RPC message(s).
fn parse_body(body: &[u8]) -> Result<Incoming, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            -32700,
            "Parse error: the body is not JSON",
        )
    })?;
    let (messages, batch) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if messages.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: an empty batch",
        ));
    }
    let mut incoming = Incoming {
        messages: Vec::new(),
        batch,
        request_ids: Vec::new(),
        tokens: Vec::new(),
        initialize: None,
    };
    let mut seen = HashSet::new();
    for msg in messages {
        let invalid = |why: &str| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                -32600,
                &format!("Invalid Request: {why}"),
            )
        };
        let Some(obj) = msg.as_object() else {
            return Err(invalid("a message is not a JSON object"));
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = obj.get("id");
        match obj.get("method") {
            Some(Value::String(method)) => {
                if let Some(id) = id {
                    if !(id.is_string() || id.is_i64() || id.is_u64()) {
                        return Err(invalid("a request id must be a string or an integer"));
                    }
                    let key = id_key(id);
                    if !seen.insert(key.clone()) {
                        return Err(invalid("two requests with the same id"));
                    }
                    if method == "initialize" {
                        incoming.initialize = Some(key.clone());
                    }
                    if let Some(t) = obj
                        .get("params")
                        .and_then(|p| p.pointer("/_meta/progressToken"))
                        && (t.is_string() || t.is_i64() || t.is_u64())
                    {
                        incoming.tokens.push(id_key(t));
                    }
                    incoming.request_ids.push(key);
                }
            }
            Some(_) => return Err(invalid("\"method\" must be a string")),
            None => {
                if id.is_none() || !(obj.contains_key("result") || obj.contains_key("error")) {
                    return Err(invalid("neither a request, a notification nor a response"));
                }
            }
        }
        incoming.messages.push(msg);
    }
    Ok(incoming)
}

/// What the client accepts, from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepts {
    Sse,
    JsonOnly,
    Neither,
}

fn accepts(headers: &HeaderMap) -> Accepts {
    let mut json = false;
    let mut sse = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            if refused {
                continue;
            }
            match media.as_str() {
                "text/event-stream" => sse = true,
                "application/json" | "application/*" | "*/*" => json = true,
                _ => {}
            }
        }
    }
    match (sse, json) {
        (true, _) => Accepts::Sse,
        (false, true) => Accepts::JsonOnly,
        (false, false) => Accepts::Neither,
    }
}

fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn sse_event(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

/// Closes a stream however it ends (answered, client gone, session ended, token expired);
/// a POST's stream also holds its [`InFlight`] count.
struct StreamGuard {
    session: Arc<Session>,
    sid: u64,
    _post: Option<InFlight>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.session.close_stream(self.sid);
        self.session.touch();
    }
}

/// Resolves when the caller's token expires (never without a deadline).
async fn expiry(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl StdioBridge {
    /// A bridge starting `options.command` for each new session.
    pub fn new(options: StdioOptions) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(options.max_children.max(1)));
        Arc::new(Self {
            options,
            sessions: Mutex::new(HashMap::new()),
            slots,
            users: Arc::new(Mutex::new(HashMap::new())),
            closing: AtomicBool::new(false),
            reaper: AtomicBool::new(false),
        })
    }

    /// The command this bridge starts.
    pub fn command(&self) -> &[String] {
        &self.options.command
    }

    /// The options the bridge was built with.
    pub fn options(&self) -> &StdioOptions {
        &self.options
    }

    /// How many sessions are open now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The MCP endpoint (any path: mounted at the resource's path, behind the OAuth layer).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Stops every child: `SIGTERM` to its process group, then `SIGKILL` after the grace;
    /// returns when all have been reaped (or a little after the grace). New sessions are
    /// refused from the call on.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .map(|mut s| s.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let mut waits = Vec::new();
        for s in &sessions {
            s.request_stop("the proxy is shutting down");
            waits.push(s.done.subscribe());
        }
        let all = async {
            for mut w in waits {
                let _ = w.wait_for(|d| *d).await;
            }
        };
        let _ = tokio::time::timeout(self.options.kill_grace + Duration::from_secs(2), all).await;
    }

    fn find(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().ok()?.get(id).cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().ok()?.remove(id)
    }

    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let tick = (self.options.idle_timeout.min(self.options.init_timeout) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let Some(bridge) = weak.upgrade() else { return };
                let (idle, init) = (bridge.options.idle_timeout, bridge.options.init_timeout);
                // Why a session not busy ends: idle, or never initialized in time.
                let why = |s: &Session| -> Option<&'static str> {
                    if s.busy.load(Ordering::SeqCst) != 0 {
                        None
                    } else if s.idle_for() >= idle {
                        Some("the session was idle too long")
                    } else if !s.initialized.load(Ordering::SeqCst) && s.created.elapsed() >= init {
                        Some("the session was not initialized in time")
                    } else {
                        None
                    }
                };
                let expired: Vec<(Arc<Session>, &'static str)> = match bridge.sessions.lock() {
                    Ok(mut map) => {
                        let ids: Vec<(String, &'static str)> = map
                            .iter()
                            .filter_map(|(k, s)| why(s).map(|w| (k.clone(), w)))
                            .collect();
                        ids.into_iter()
                            .filter_map(|(k, w)| map.remove(&k).map(|s| (s, w)))
                            .collect()
                    }
                    Err(_) => Vec::new(),
                };
                for (s, why) in expired {
                    tracing::info!(
                        pid = s.pid,
                        reason = why,
                        "stdio: stopping the child of an unused session"
                    );
                    s.request_stop(why);
                }
            }
        });
    }

    /// Starts a child for a new session of `owner`.
    fn start_session(
        self: &Arc<Self>,
        owner: Owner,
        init_id: String,
    ) -> Result<(String, Arc<Session>), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(unavailable("the proxy is shutting down"));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = self.options.max_children,
                "stdio: refusing a new session, every child slot is taken"
            );
            return Err(unavailable("too many MCP sessions are open; retry later"));
        };
        let Some(user_slot) = UserSlot::take(
            &self.users,
            &owner.subject,
            self.options.max_children_per_user,
        ) else {
            tracing::warn!(
                max = self.options.max_children_per_user,
                subject = %owner.subject,
                "stdio: refusing a new session, the user has the most children allowed"
            );
            return Err(unavailable(
                "too many MCP sessions of this user are open; end one (DELETE) or retry later",
            ));
        };
        let id = new_session_id().map_err(|e| {
            tracing::error!(error = %e, "stdio: no randomness for a session id");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                -32603,
                "cannot create a session",
            )
        })?;
        let mut proc = child::spawn(&self.options.command).map_err(|e| {
            tracing::error!(command = ?self.options.command, error = %e, "stdio: cannot start the MCP server");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                -32603,
                "the MCP server process could not be started",
            )
        })?;
        let pid = proc.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                -32603,
                "the MCP server process has no pipes",
            ));
        };
        let ring = StderrRing::default();
        let stderr_task = ring.drain(stderr, self.options.stderr_lines);
        let (input, input_rx) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
        let (stop, stop_rx) = watch::channel(None);
        let (done, _) = watch::channel(false);
        let session = Arc::new(Session::new(owner, pid, input, init_id, stop, done));
        // Known before its supervisor runs, which forgets it when the child is gone.
        if let Ok(mut map) = self.sessions.lock() {
            map.insert(id.clone(), session.clone());
        }
        tokio::spawn(write_stdin(stdin, input_rx, stop_rx.clone()));
        let reader = tokio::spawn(read_stdout(
            session.clone(),
            stdout,
            self.options.max_line_bytes,
        ));
        tokio::spawn(supervise(Supervised {
            bridge: Arc::downgrade(self),
            id: id.clone(),
            session: session.clone(),
            child: proc,
            reader,
            stderr_task,
            ring,
            stop_rx,
            grace: self.options.kill_grace,
            _permit: permit,
            _user_slot: user_slot,
        }));
        self.start_reaper();
        if self.closing.load(Ordering::SeqCst) {
            // Shutdown began meanwhile and did not see this session.
            session.request_stop("the proxy is shutting down");
        }
        tracing::info!(pid, subject = %session.owner.subject, "stdio: started a child for a new session");
        Ok((id, session))
    }
}

/// One running child counted against its user's [`StdioOptions::max_children_per_user`]
/// until dropped (when the child has been reaped).
#[derive(Debug)]
struct UserSlot {
    users: Arc<Mutex<HashMap<String, usize>>>,
    subject: String,
}

impl UserSlot {
    /// Counts one more child of `subject`, unless it has `max` already.
    fn take(users: &Arc<Mutex<HashMap<String, usize>>>, subject: &str, max: usize) -> Option<Self> {
        let mut map = users.lock().ok()?;
        let n = map.entry(subject.to_owned()).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            users: users.clone(),
            subject: subject.to_owned(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.users.lock()
            && let Some(n) = map.get_mut(&self.subject)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.subject);
            }
        }
    }
}

fn unavailable(message: &str) -> Refusal {
    Refusal {
        retry_after: true,
        ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, -32000, message)
    }
}

/// Writes queued lines to the child's stdin; closes it when asked to stop.
async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<Option<&'static str>>,
) {
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            r = stop.changed() => {
                if r.is_err() || stop.borrow().is_some() {
                    break;
                }
            }
        }
    }
}

/// A line buffer grown beyond this by a long message is given back afterwards.
const KEEP_LINE_BUFFER: usize = 1 << 20;

/// Reads the child's stdout line by line and routes each message; returns at EOF.
async fn read_stdout(session: Arc<Session>, stdout: tokio::process::ChildStdout, max: usize) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if buf.capacity() > KEEP_LINE_BUFFER {
            buf.shrink_to(KEEP_LINE_BUFFER);
        }
        let msg = match child::read_line_bounded(&mut reader, &mut buf, max).await {
            Err(_) | Ok(Line::Eof) => return,
            Ok(Line::TooLong) => match child::peek_response_id(&buf) {
                // The response to a request (if still pending): it gets an error instead.
                Some(id) => {
                    tracing::warn!(
                        pid = session.pid,
                        max,
                        "stdio: a response longer than the line bound; its request gets an error"
                    );
                    error_message(id, -32603, &format!("response larger than {max} bytes"))
                }
                None => {
                    tracing::warn!(
                        pid = session.pid,
                        max,
                        "stdio: dropped a message longer than the line bound"
                    );
                    continue;
                }
            },
            Ok(Line::Complete) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice(&buf) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        tracing::warn!(
                            pid = session.pid,
                            "stdio: the child wrote a line that is not a JSON-RPC message"
                        );
                        continue;
                    }
                }
            }
        };
        if msg.get("id").map(id_key).as_deref() == Some(session.init_id.as_str())
            && is_response(&msg)
            && let Some(result) = msg.get("result")
        {
            session.initialized.store(true, Ordering::SeqCst);
            if let Some(v) = result.get("protocolVersion").and_then(Value::as_str)
                && let Ok(mut p) = session.protocol.lock()
            {
                *p = Some(v.to_owned());
            }
        }
        let undelivered = match session.route(&msg) {
            Some((tx, false)) => match tx.send(Out::Msg(msg)).await {
                Ok(()) => None,
                Err(mpsc::error::SendError(Out::Msg(msg))) => Some(msg),
                Err(_) => None,
            },
            Some((tx, true)) => match tx.try_send(Out::Msg(msg)) {
                Ok(()) => None,
                Err(
                    mpsc::error::TrySendError::Full(Out::Msg(msg))
                    | mpsc::error::TrySendError::Closed(Out::Msg(msg)),
                ) => {
                    tracing::debug!(
                        pid = session.pid,
                        "stdio: the standalone stream is not being read; a message was dropped"
                    );
                    Some(msg)
                }
                Err(_) => None,
            },
            None => {
                tracing::debug!(
                    pid = session.pid,
                    "stdio: no open stream for a message of the child; dropped"
                );
                Some(msg)
            }
        };
        // A request nobody can answer: say so, rather than leave the child waiting.
        if let Some(msg) = undelivered
            && let (Some(_), Some(id)) = (msg.get("method"), msg.get("id"))
        {
            let refusal = error_message(
                id.clone(),
                -32603,
                "no client stream is open to deliver this request",
            );
            // Not awaited here: with the child's stdin full, the reader must keep reading.
            let s = session.clone();
            tokio::spawn(async move {
                let _ = send_line(&s, &refusal).await;
            });
        }
    }
}

/// Everything the supervisor of one child owns.
struct Supervised {
    bridge: Weak<StdioBridge>,
    id: String,
    session: Arc<Session>,
    child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
    stderr_task: tokio::task::JoinHandle<()>,
    ring: StderrRing,
    stop_rx: watch::Receiver<Option<&'static str>>,
    grace: Duration,
    _permit: OwnedSemaphorePermit,
    _user_slot: UserSlot,
}

/// Waits for the child to exit (or close its stdout, or be asked to stop), stops it, fails
/// its open requests and forgets its session. The slot is freed when it has been reaped.
async fn supervise(mut s: Supervised) {
    let pid = s.session.pid;
    let mut reader_done = false;
    let mut asked: Option<&'static str> = None;
    let mut status = None;
    tokio::select! {
        st = s.child.wait() => status = st.ok(),
        _ = &mut s.reader => reader_done = true,
        r = s.stop_rx.wait_for(Option::is_some) => asked = r.ok().and_then(|v| *v),
    }
    // Asked to stop, the child may have gone first (its stdin closed): still a stop.
    if asked.is_none() {
        asked = *s.stop_rx.borrow();
    }
    if status.is_none() {
        if asked.is_none() {
            // Stdout closed: give the process the grace to exit by itself.
            if let Ok(st) = tokio::time::timeout(s.grace, s.child.wait()).await {
                status = st.ok();
            }
        }
        if status.is_none() {
            status = stop_child(&mut s.child, pid, s.grace).await;
        }
    }
    #[cfg(unix)]
    child::signal_group(pid, child::KILL); // whatever the leader left behind in its group
    if !reader_done {
        // Let the reader deliver what the child wrote before it went.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut s.reader).await;
        s.reader.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut s.stderr_task).await;
    let how = status
        .as_ref()
        .map_or_else(|| "status unknown".to_owned(), child::describe);
    if let Some(bridge) = s.bridge.upgrade() {
        let mut map = bridge.sessions.lock().ok();
        if let Some(map) = map.as_mut()
            && map.get(&s.id).is_some_and(|v| Arc::ptr_eq(v, &s.session))
        {
            map.remove(&s.id);
        }
    }
    match asked {
        Some(why) => {
            tracing::info!(pid, exit = %how, reason = why, "stdio: child stopped");
            s.session.fail_all(&format!("the MCP session ended: {why}"));
        }
        None => {
            let stderr = s.ring.lines();
            tracing::warn!(pid, exit = %how, stderr = ?stderr, "stdio: the MCP server process exited");
            s.session
                .fail_all(&format!("the MCP server process exited ({how})"));
        }
    }
    s.session.done.send_replace(true);
}

/// `SIGTERM` to the child's group, `SIGKILL` after `grace`; the exit status.
async fn stop_child(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    #[cfg(unix)]
    child::signal_group(pid, child::TERM);
    #[cfg(not(unix))]
    let _ = (pid, child.start_kill());
    if let Ok(st) = tokio::time::timeout(grace, child.wait()).await {
        return st.ok();
    }
    #[cfg(unix)]
    child::signal_group(pid, child::KILL);
    let _ = child.start_kill();
    tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .ok()
        .and_then(Result::ok)
}

/// The one handler: method dispatch, session lookup and ownership.
async fn handle(State(bridge): State<Arc<StdioBridge>>, req: Request<Body>) -> Response<Body> {
    let Some(ctx) = req.extensions().get::<AuthContext>() else {
        // Mounted behind the layer, every request has a caller; fail closed if not.
        return rpc_error(
            StatusCode::UNAUTHORIZED,
            -32001,
            "an authenticated caller is required",
        );
    };
    let owner = Owner::of(ctx);
    // Streams end when the token does: what the child sends later needs a fresh token.
    let deadline = ctx
        .time_left()
        .map(|left| tokio::time::Instant::now() + left);
    let session_id = match req.headers().get(SESSION_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Bad Request: an invalid Mcp-Session-Id header",
            );
        }
    };
    // A session the caller may use, or the answer refusing it.
    let lookup = |id: &str| -> Option<Arc<Session>> {
        match bridge.find(id) {
            Some(s) if s.owner == owner => Some(s),
            Some(_) => {
                tracing::debug!("stdio: a session named by another caller");
                None
            }
            None => None,
        }
    };
    match *req.method() {
        Method::POST => {
            let session = match &session_id {
                None => None,
                Some(id) => match lookup(id) {
                    Some(s) => Some(s),
                    None => return session_not_found(),
                },
            };
            post(&bridge, owner, session, deadline, req).await
        }
        Method::GET => {
            if !matches!(accepts(req.headers()), Accepts::Sse) {
                return rpc_error(
                    StatusCode::NOT_ACCEPTABLE,
                    -32600,
                    "Not Acceptable: a GET must accept text/event-stream",
                );
            }
            let Some(id) = session_id else {
                return missing_session();
            };
            match lookup(&id) {
                Some(s) => {
                    version_mismatch(&s, req.headers()).unwrap_or_else(|| standalone(s, deadline))
                }
                None => session_not_found(),
            }
        }
        Method::DELETE => {
            let Some(id) = session_id else {
                return missing_session();
            };
            match lookup(&id) {
                Some(s) => {
                    if let Some(refused) = version_mismatch(&s, req.headers()) {
                        return refused;
                    }
                    bridge.remove(&id);
                    s.request_stop("the client ended the session");
                    respond(
                        Response::builder().status(StatusCode::NO_CONTENT),
                        Body::empty(),
                    )
                }
                None => session_not_found(),
            }
        }
        _ => {
            let mut res = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                -32600,
                "Method Not Allowed: use POST, GET or DELETE",
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            res
        }
    }
}

/// The header naming the protocol version after initialization.
const VERSION_HEADER: &str = "mcp-protocol-version";

/// A `400` when the request's `MCP-Protocol-Version` is not the version the session
/// negotiated (absent: the transport says to assume `2025-03-26`, which is not checked).
fn version_mismatch(session: &Session, headers: &HeaderMap) -> Option<Response<Body>> {
    let sent = headers.get(VERSION_HEADER)?;
    let negotiated = session.protocol.lock().ok()?.clone()?;
    if sent.as_bytes() == negotiated.as_bytes() {
        return None;
    }
    Some(rpc_error(
        StatusCode::BAD_REQUEST,
        -32600,
        &format!("Bad Request: unsupported MCP-Protocol-Version; this session uses {negotiated}"),
    ))
}

fn session_not_found() -> Response<Body> {
    rpc_error(
        StatusCode::NOT_FOUND,
        -32001,
        "Session not found: initialize a new session",
    )
}

fn missing_session() -> Response<Body> {
    rpc_error(
        StatusCode::BAD_REQUEST,
        -32600,
        "Bad Request: Mcp-Session-Id header is required",
    )
}

async fn post(
    bridge: &Arc<StdioBridge>,
    owner: Owner,
    existing: Option<Arc<Session>>,
    deadline: Option<tokio::time::Instant>,
    req: Request<Body>,
) -> Response<Body> {
    let mode = accepts(req.headers());
    if mode == Accepts::Neither {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            -32600,
            "Not Acceptable: accept application/json and text/event-stream",
        );
    }
    if !is_json_content(req.headers()) {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32600,
            "Unsupported Media Type: the body must be application/json",
        );
    }
    let max_in_flight = bridge.options.max_requests_per_session;
    // A session's version and its bound on POSTs in flight are checked before the body is
    // read (and held in memory).
    let existing = match existing {
        None => None,
        Some(s) => {
            if let Some(refused) = version_mismatch(&s, req.headers()) {
                return refused;
            }
            let Some(in_flight) = s.enter(max_in_flight) else {
                return too_many_in_flight(&s, max_in_flight);
            };
            Some((s, in_flight))
        }
    };
    let body = match axum::body::to_bytes(req.into_body(), bridge.options.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                "the request body is too large",
            );
        }
    };
    let incoming = match parse_body(&body) {
        Ok(i) => i,
        Err(r) => return r.response(),
    };
    drop(body);
    if incoming.initialize.is_some() && incoming.batch {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: initialize cannot be part of a batch",
        );
    }
    let (session, in_flight, new_id) = match (existing, &incoming.initialize) {
        (Some(_), Some(_)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Bad Request: initialize starts a session; send it without Mcp-Session-Id",
            );
        }
        (None, None) => return missing_session(),
        (None, Some(init_id)) => match bridge.start_session(owner, init_id.clone()) {
            Ok((id, s)) => {
                let Some(in_flight) = s.enter(max_in_flight) else {
                    return too_many_in_flight(&s, max_in_flight);
                };
                (s, in_flight, Some(id))
            }
            Err(r) => return r.response(),
        },
        (Some((s, in_flight)), None) => (s, in_flight, None),
    };
    if incoming.batch {
        let version = session.protocol.lock().ok().and_then(|p| p.clone());
        if version.as_deref() != Some("2025-03-26") {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                &format!(
                    "Invalid Request: JSON-RPC batches are not supported in protocol version {}",
                    version.as_deref().unwrap_or("(none negotiated)")
                ),
            );
        }
    }
    session.touch();
    for msg in &incoming.messages {
        if msg.get("method").and_then(Value::as_str) == Some("notifications/cancelled")
            && let Some(id) = msg.pointer("/params/requestId")
        {
            session.cancel(&id_key(id));
        }
    }
    if incoming.request_ids.is_empty() {
        // Notifications and responses: delivered, nothing to wait for.
        for msg in &incoming.messages {
            if !send_line(&session, msg).await {
                return session_not_found();
            }
        }
        drop(in_flight);
        return respond(
            Response::builder().status(StatusCode::ACCEPTED),
            Body::empty(),
        );
    }
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    // Only an SSE answer can carry what the child asks meanwhile: a JSON-only POST waits for
    // its responses alone, and the child's requests go elsewhere (or get an error).
    let sid = match session.open_stream(
        &incoming.request_ids,
        &incoming.tokens,
        tx,
        mode == Accepts::Sse,
    ) {
        Ok(sid) => sid,
        Err(NotOpened::Gone) if new_id.is_some() => {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                -32603,
                "the MCP server process exited as it started (the proxy's log has its stderr)",
            );
        }
        Err(NotOpened::Gone) => return session_not_found(),
        Err(NotOpened::Duplicate(id)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                &format!(
                    "Invalid Request: request id {id} is already in use in this session (its response is still awaited)"
                ),
            );
        }
    };
    let guard = StreamGuard {
        session: session.clone(),
        sid,
        _post: Some(in_flight),
    };
    for msg in &incoming.messages {
        if !send_line(&session, msg).await {
            drop(guard);
            return session_not_found();
        }
    }
    let remaining: HashSet<String> = incoming.request_ids.iter().cloned().collect();
    let mut builder = Response::builder().status(StatusCode::OK);
    if let Some(id) = &new_id {
        builder = builder.header(SESSION_HEADER, id.as_str());
    }
    match mode {
        Accepts::Sse => {
            let stream = futures_util::stream::unfold(
                (rx, remaining, guard),
                move |(mut rx, mut remaining, guard)| async move {
                    loop {
                        if remaining.is_empty() {
                            return None;
                        }
                        let out = tokio::select! {
                            out = rx.recv() => out?,
                            () = expiry(deadline) => {
                                tracing::debug!(
                                    pid = guard.session.pid,
                                    "stdio: the caller's token expired; its POST stream ends"
                                );
                                return None;
                            }
                        };
                        let msg = match out {
                            Out::Cancelled(id) => {
                                remaining.remove(&id);
                                continue;
                            }
                            Out::Msg(msg) => msg,
                        };
                        if is_response(&msg)
                            && let Some(id) = msg.get("id")
                        {
                            remaining.remove(&id_key(id));
                        }
                        return Some((
                            Ok::<_, Infallible>(sse_event(&msg)),
                            (rx, remaining, guard),
                        ));
                    }
                },
            );
            respond(
                builder
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache"),
                Body::from_stream(stream),
            )
        }
        _ => {
            // JSON only: wait for the response(s); nothing else was routed to this request.
            let (mut rx, mut remaining) = (rx, remaining);
            let mut responses = Vec::new();
            let mut cancelled = false;
            while !remaining.is_empty() {
                let msg = match rx.recv().await {
                    None => break,
                    Some(Out::Cancelled(id)) => {
                        cancelled |= remaining.remove(&id);
                        continue;
                    }
                    Some(Out::Msg(msg)) => msg,
                };
                if is_response(&msg)
                    && let Some(id) = msg.get("id")
                    && remaining.remove(&id_key(id))
                {
                    responses.push(msg);
                }
            }
            drop(guard);
            if responses.is_empty() {
                if cancelled {
                    return respond(
                        Response::builder().status(StatusCode::ACCEPTED),
                        Body::empty(),
                    );
                }
                return session_not_found();
            }
            let body = if incoming.batch {
                Value::Array(responses)
            } else {
                responses.swap_remove(0)
            };
            respond(
                builder.header(header::CONTENT_TYPE, "application/json"),
                Body::from(body.to_string()),
            )
        }
    }
}

/// `503` with `Retry-After`: `session` has `max` POSTs in flight already.
fn too_many_in_flight(session: &Session, max: usize) -> Response<Body> {
    tracing::warn!(
        pid = session.pid,
        max,
        "stdio: refusing a POST, the session has the most requests in flight allowed"
    );
    unavailable("too many requests in flight on this MCP session; retry later").response()
}

fn is_response(msg: &Value) -> bool {
    msg.get("method").is_none() && (msg.get("result").is_some() || msg.get("error").is_some())
}

/// Queues one message for the child's stdin; `false` when the child is gone.
async fn send_line(session: &Session, msg: &Value) -> bool {
    let mut line = msg.to_string().into_bytes();
    line.push(b'\n');
    session.input.send(line).await.is_ok()
}

/// The session's standalone SSE stream (`409` when one is open already), ended at
/// `deadline` (the caller's token expiry).
fn standalone(session: Arc<Session>, deadline: Option<tokio::time::Instant>) -> Response<Body> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let sid = {
        let Ok(mut r) = session.routes.lock() else {
            return session_not_found();
        };
        if r.gone {
            return session_not_found();
        }
        if r.standalone.is_some() {
            return rpc_error(
                StatusCode::CONFLICT,
                -32600,
                "Conflict: this session already has a standalone stream",
            );
        }
        r.next_stream += 1;
        let sid = r.next_stream;
        r.streams.insert(sid, tx);
        r.standalone = Some(sid);
        sid
    };
    let guard = StreamGuard {
        session,
        sid,
        _post: None,
    };
    let stream = futures_util::stream::unfold((rx, guard), move |(mut rx, guard)| async move {
        tokio::select! {
            msg = rx.recv() => match msg? {
                Out::Msg(msg) => Some((Ok::<_, Infallible>(sse_event(&msg)), (rx, guard))),
                Out::Cancelled(_) => Some((Ok(Bytes::new()), (rx, guard))),
            },
            () = tokio::time::sleep(KEEPALIVE) => {
                Some((Ok(Bytes::from_static(b": keepalive\n\n")), (rx, guard)))
            }
            () = expiry(deadline) => {
                tracing::debug!(
                    pid = guard.session.pid,
                    "stdio: the caller's token expired; its standalone stream ends"
                );
                None
            }
        }
    });
    respond(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache"),
        Body::from_stream(stream),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn accept_decides_the_answer() {
        assert_eq!(
            accepts(&headers("application/json, text/event-stream")),
            Accepts::Sse
        );
        assert_eq!(accepts(&headers("application/json")), Accepts::JsonOnly);
        assert_eq!(accepts(&headers("*/*")), Accepts::JsonOnly);
        assert_eq!(accepts(&headers("text/html")), Accepts::Neither);
        assert_eq!(
            accepts(&headers("text/event-stream;q=0, text/html")),
            Accepts::Neither
        );
        assert_eq!(accepts(&HeaderMap::new()), Accepts::Neither);
    }

    #[test]
    fn bodies_are_checked() {
        assert!(parse_body(b"nope").is_err());
        assert!(parse_body(b"[]").is_err());
        assert!(parse_body(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).is_err());
        assert!(parse_body(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).is_err());
        assert!(parse_body(br#"{"jsonrpc":"2.0","id":1}"#).is_err());
        assert!(
            parse_body(
                br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":1,"method":"b"}]"#
            )
            .is_err()
        );
        let i = parse_body(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"progressToken":7}}}"#,
        )
        .unwrap_or_else(|_| panic!("a valid request"));
        assert_eq!(i.request_ids, ["\"a\""]);
        assert_eq!(i.tokens, ["7"]);
        assert!(!i.batch && i.initialize.is_none());
        let n = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .unwrap_or_else(|_| panic!("a notification"));
        assert!(n.request_ids.is_empty());
    }

    /// A session without a child (its input goes nowhere).
    fn bare_session() -> Arc<Session> {
        let (input, _) = mpsc::channel(1);
        let (stop, _) = watch::channel(None);
        let (done, _) = watch::channel(false);
        let owner = Owner {
            subject: "alice".to_owned(),
            client_id: None,
        };
        Arc::new(Session::new(owner, 0, input, "0".to_owned(), stop, done))
    }

    fn request_of_the_child() -> Value {
        json!({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
    }

    #[test]
    fn a_stream_whose_last_response_was_routed_takes_nothing_more() {
        let s = bare_session();
        let (tx, _rx) = mpsc::channel(8);
        let sid = s
            .open_stream(&["1".to_owned(), "2".to_owned()], &[], tx, true)
            .unwrap();
        // While it waits, the child's requests go to it.
        assert!(s.route(&request_of_the_child()).is_some());
        assert!(
            s.route(&json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
                .is_some()
        );
        assert!(s.route(&request_of_the_child()).is_some());
        // Its last response routed: it is no longer open, under the same lock.
        assert!(
            s.route(&json!({"jsonrpc": "2.0", "id": 2, "result": {}}))
                .is_some()
        );
        assert!(
            s.route(&request_of_the_child()).is_none(),
            "a request after the last response went to the ending stream"
        );
        // A cancelled last request too.
        let (tx, _rx2) = mpsc::channel(8);
        s.open_stream(&["3".to_owned()], &[], tx, true).unwrap();
        s.cancel("3");
        assert!(s.route(&request_of_the_child()).is_none());
        s.close_stream(sid);
        let r = s.routes.lock().unwrap();
        assert!(r.open.is_empty() && r.pending.is_empty(), "{r:?}");
    }

    #[test]
    fn a_json_only_post_carries_no_request_of_the_child() {
        let s = bare_session();
        let (tx, _rx) = mpsc::channel(8);
        s.open_stream(&["1".to_owned()], &[], tx, false).unwrap();
        assert!(s.route(&request_of_the_child()).is_none());
        // … its response still reaches it.
        assert!(
            s.route(&json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
                .is_some()
        );
    }

    #[test]
    fn an_id_already_awaited_is_refused() {
        let s = bare_session();
        let (tx, _rx) = mpsc::channel(8);
        s.open_stream(&["7".to_owned()], &[], tx, true).unwrap();
        let (tx, _rx2) = mpsc::channel(8);
        assert!(matches!(
            s.open_stream(&["8".to_owned(), "7".to_owned()], &[], tx, true),
            Err(NotOpened::Duplicate(id)) if id == "7"
        ));
        // Once answered, the id may be used again.
        assert!(
            s.route(&json!({"jsonrpc": "2.0", "id": 7, "result": {}}))
                .is_some()
        );
        let (tx, _rx3) = mpsc::channel(8);
        assert!(s.open_stream(&["7".to_owned()], &[], tx, true).is_ok());
    }

    #[test]
    fn posts_in_flight_are_bounded_per_session() {
        let s = bare_session();
        let a = s.enter(2).unwrap();
        let _b = s.enter(2).unwrap();
        assert!(s.enter(2).is_none());
        drop(a);
        assert!(s.enter(2).is_some());
    }

    #[test]
    fn children_per_user_are_counted_until_dropped() {
        let users = Arc::new(Mutex::new(HashMap::new()));
        let a = UserSlot::take(&users, "alice", 2).unwrap();
        let _b = UserSlot::take(&users, "alice", 2).unwrap();
        assert!(UserSlot::take(&users, "alice", 2).is_none());
        assert!(UserSlot::take(&users, "bob", 2).is_some());
        drop(a);
        assert!(UserSlot::take(&users, "alice", 2).is_some());
        assert_eq!(default_children_per_user(32), 8);
        assert_eq!(default_children_per_user(3), 1);
    }

    #[test]
    fn an_unbuildable_response_is_a_500_not_an_empty_200() {
        let res = respond(
            Response::builder().header(SESSION_HEADER, "bad\nvalue"),
            Body::empty(),
        );
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn session_ids_are_long_random_and_visible_ascii() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }
}
