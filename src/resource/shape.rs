//! Tool-level authorization as clients see it: `securitySchemes` on every tool of a
//! `tools/list` result, and the challenge style per client (HTTP status or a tool result
//! carrying `_meta["mcp/www_authenticate"]`, which is what ChatGPT acts on).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use pin_project_lite::pin_project;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;

use super::challenge::AuthRejection;
use super::policy::{AccessPolicy, Requirement};
use crate::config::Inner;
use crate::context::AuthContext;
use crate::scope::ScopeSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a refusal of a `tools/call` reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeStyle {
    /// HTTP `401`/`403` with `WWW-Authenticate` (the MCP spec; Claude, VS Code, Cursor, the
    /// SDK clients and rmcp step up only on this).
    Http,
    /// HTTP `200` with a JSON-RPC result `{isError: true, _meta: {"mcp/www_authenticate":
    /// [challenge]}}` (ChatGPT shows its sign-in UI only for this form).
    ToolResult,
}

/// Chooses the [`ChallengeStyle`] for a request.
#[derive(Clone)]
#[non_exhaustive]
pub enum ChallengeStyleRule {
    /// Always this style.
    Always(ChallengeStyle),
    /// [`ChallengeStyle::ToolResult`] when the `User-Agent` contains any of these
    /// (case-insensitive), [`ChallengeStyle::Http`] otherwise.
    UserAgentContains(Vec<String>),
    /// Your own choice from the request headers.
    Custom(Arc<dyn Fn(&HeaderMap) -> ChallengeStyle + Send + Sync>),
}

impl std::fmt::Debug for ChallengeStyleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Always(s) => f.debug_tuple("Always").field(s).finish(),
            Self::UserAgentContains(p) => f.debug_tuple("UserAgentContains").field(p).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Default for ChallengeStyleRule {
    /// ChatGPT's user agents (`openai-mcp/1.0.0 (ChatGPT)`) get the tool-result form;
    /// everyone else HTTP.
    fn default() -> Self {
        Self::UserAgentContains(vec!["openai-mcp".to_owned(), "chatgpt".to_owned()])
    }
}

impl ChallengeStyleRule {
    /// The style for a request with these headers.
    #[must_use]
    pub fn style_for(&self, headers: &HeaderMap) -> ChallengeStyle {
        match self {
            Self::Always(s) => *s,
            Self::UserAgentContains(patterns) => {
                let ua = headers
                    .get(http::header::USER_AGENT)
                    .map_or(&b""[..], http::HeaderValue::as_bytes);
                if patterns
                    .iter()
                    .any(|p| contains_ignore_ascii_case(ua, p.as_bytes()))
                {
                    ChallengeStyle::ToolResult
                } else {
                    ChallengeStyle::Http
                }
            }
            Self::Custom(f) => f(headers),
        }
    }
}

/// Whether `haystack` contains `needle`, ASCII case-insensitively, without allocating.
fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `[{"type":"noauth"}]`: a tool callable without a token.
fn noauth_schemes() -> Value {
    json!([{ "type": "noauth" }])
}

/// `[{"type":"oauth2","scopes":[…]}]`, the scopes in the order given.
fn oauth2_schemes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Value {
    json!([{ "type": "oauth2", "scopes": scopes.into_iter().collect::<Vec<_>>() }])
}

/// The `securitySchemes` a macro-declared tool carries in its own `_meta` (see
/// `__private::with_security_schemes`): the same shape as [`security_schemes`], with the
/// scopes sorted and unique as a [`ScopeSet`] lists them, so that a policy built from the
/// same declarations (`AccessPolicy::tools`, no base scopes) finds them equal.
pub(crate) fn schemes_for_access(access: super::policy::ToolAccess) -> Value {
    match access {
        super::policy::ToolAccess::Public => noauth_schemes(),
        super::policy::ToolAccess::Scopes(s) => oauth2_schemes(
            s.iter()
                .copied()
                .collect::<std::collections::BTreeSet<&str>>(),
        ),
    }
}

/// The `securitySchemes` of a tool under `policy`: `noauth` for public tools, `oauth2` with
/// the tool's scopes otherwise (the policy's base scopes, or `default_scopes`, for tools it
/// does not list). This is what the layer enforces on `tools/call`, so it is what
/// `tools/list` must show.
pub(crate) fn security_schemes(
    policy: &AccessPolicy,
    default_scopes: &ScopeSet,
    tool: &str,
) -> Value {
    match policy.requirement(Some("tools/call"), Some(tool)) {
        Requirement::Public => noauth_schemes(),
        Requirement::Token(s) => {
            let scopes = if s.is_empty() { default_scopes } else { &s };
            oauth2_schemes(scopes.iter().map(|s| s.as_str()))
        }
    }
}

/// What the shaper needs to rewrite a `tools/list` result.
#[derive(Clone)]
pub(crate) struct ToolsListShaper {
    /// The layer's configuration: policy, default scopes, hierarchy and whether to filter
    /// (shared, so building a shaper per `tools/list` copies nothing).
    pub(crate) cfg: Arc<Inner>,
    /// The caller, if authenticated.
    pub(crate) caller: Option<AuthContext>,
}

impl ToolsListShaper {
    fn may_call(&self, tool: &str) -> bool {
        match self.cfg.policy.requirement(Some("tools/call"), Some(tool)) {
            Requirement::Public => true,
            Requirement::Token(needed) => self
                .caller
                .as_ref()
                .is_some_and(|c| self.cfg.hierarchy.satisfies(c.scopes(), &needed)),
        }
    }

    /// Rewrites one JSON-RPC message if it is a result with a `tools` array; `None` when
    /// there is nothing to change.
    ///
    /// The cheap path first ([`Self::splice`]): a borrowing scan reads each tool's name and
    /// its `securitySchemes` (top level and in `_meta`) without building a tree. When every
    /// tool already shows what the layer enforces (and, when filtering, every tool may be
    /// called), the message is left byte for byte as it is. Otherwise only the tools that
    /// lack their schemes are touched: a tool whose `_meta` already carries the right copy
    /// (a tool declared with `#[scoped_tools]`) gets the top-level field spliced in as
    /// bytes, a tool without it is parsed and re-serialised on its own, and every other tool
    /// is copied as it came. A message the scan cannot read takes the full rewrite.
    pub(crate) fn rewrite(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(payload).ok()?;
        match self.splice(text) {
            Spliced::Untouched => None,
            Spliced::Out(out) => Some(out),
            Spliced::Unreadable => self.rewrite_whole(payload),
        }
    }

    /// What one tool needs, from a borrowing scan of it.
    fn tool_action(&self, raw: &RawValue) -> Option<ToolAction> {
        let head: ToolHead<'_> = serde_json::from_str(raw.get()).ok()?;
        let Some(name) = head.name else {
            // Unnamed: left alone, or dropped when filtering (what the full rewrite does).
            return Some(if self.cfg.filter_tools_list {
                ToolAction::Drop
            } else {
                ToolAction::Keep
            });
        };
        if self.cfg.filter_tools_list && !self.may_call(&name) {
            return Some(ToolAction::Drop);
        }
        let expected = security_schemes(&self.cfg.policy, &self.cfg.default_scopes, &name);
        let same = |raw: Option<&RawValue>| {
            raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
                .is_some_and(|v| v == expected)
        };
        let meta_ok = match head.meta {
            None => false,
            Some(m) => {
                let meta: MetaHead<'_> = serde_json::from_str(m.get()).ok()?;
                same(meta.schemes)
            }
        };
        Some(match (meta_ok, head.schemes) {
            (true, Some(top)) if same(Some(top)) => ToolAction::Keep,
            (true, None) => ToolAction::AddTop(expected),
            _ => ToolAction::Rewrite,
        })
    }

    /// The cheap path of [`Self::rewrite`].
    fn splice(&self, text: &str) -> Spliced {
        if !self.cfg.filter_tools_list
            && let Some(hit) = same_list_again(&self.cfg, text)
        {
            return hit;
        }
        let Ok(msg) = serde_json::from_str::<MsgHead<'_>>(text) else {
            return Spliced::Unreadable;
        };
        let Some(tools_raw) = msg.result.and_then(|r| r.tools) else {
            return Spliced::Untouched;
        };
        // Where the `tools` array sits in `text` (the raw value borrows from it).
        let start = tools_raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let end = start + tools_raw.get().len();
        let around = |array: &[u8]| {
            let mut out = Vec::with_capacity(text.len() - (end - start) + array.len());
            out.extend_from_slice(&text.as_bytes()[..start]);
            out.extend_from_slice(array);
            out.extend_from_slice(&text.as_bytes()[end..]);
            out
        };
        // Without filtering the result depends only on the array and the policy: a server
        // answers the same list again and again, so the last one is remembered.
        let cacheable = !self.cfg.filter_tools_list && tools_raw.get().len() <= CACHE_MAX;
        if cacheable && let Some(hit) = last_shaped(&self.cfg, tools_raw.get()) {
            return hit.map_or(Spliced::Untouched, |array| Spliced::Out(around(&array)));
        }
        let shaped = self.shape_array(tools_raw);
        if cacheable && let Spliced::Untouched | Spliced::Out(_) = &shaped {
            remember_shaped(&self.cfg, tools_raw.get(), &shaped);
        }
        match shaped {
            Spliced::Out(array) => Spliced::Out(around(&array)),
            other => other,
        }
    }

    /// Shapes one `tools` array: `Out` holds the new array alone.
    fn shape_array(&self, tools_raw: &RawValue) -> Spliced {
        let Ok(tools) = serde_json::from_str::<Vec<&RawValue>>(tools_raw.get()) else {
            // Not an array: the full rewrite leaves it alone too.
            return Spliced::Untouched;
        };
        let mut actions = Vec::with_capacity(tools.len());
        for raw in &tools {
            match self.tool_action(raw) {
                Some(a) => actions.push(a),
                None => return Spliced::Unreadable,
            }
        }
        if actions.iter().all(|a| matches!(a, ToolAction::Keep)) {
            return Spliced::Untouched;
        }
        let mut out = Vec::with_capacity(tools_raw.get().len() + 64 * tools.len());
        out.push(b'[');
        let mut first = true;
        for (raw, action) in tools.iter().zip(actions) {
            let piece: std::borrow::Cow<'_, [u8]> = match action {
                ToolAction::Drop => continue,
                ToolAction::Keep => raw.get().as_bytes().into(),
                ToolAction::AddTop(schemes) => {
                    let body = raw.get().trim_start().strip_prefix('{').unwrap_or_default();
                    let sep = if body.trim_start().starts_with('}') {
                        ""
                    } else {
                        ","
                    };
                    format!("{{\"securitySchemes\":{schemes}{sep}{body}")
                        .into_bytes()
                        .into()
                }
                ToolAction::Rewrite => {
                    let Ok(mut tool) = serde_json::from_str::<Value>(raw.get()) else {
                        return Spliced::Unreadable;
                    };
                    self.add_schemes(&mut tool);
                    match serde_json::to_vec(&tool) {
                        Ok(v) => v.into(),
                        Err(_) => return Spliced::Unreadable,
                    }
                }
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&piece);
        }
        out.push(b']');
        Spliced::Out(out)
    }

    /// Sets `securitySchemes` (top level and in `_meta`) on one parsed tool.
    fn add_schemes(&self, tool: &mut Value) {
        let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let Some(obj) = tool.as_object_mut() else {
            return;
        };
        let schemes = security_schemes(&self.cfg.policy, &self.cfg.default_scopes, &name);
        // ChatGPT reads the top-level field; some SDKs strip unknown top-level fields,
        // so a copy rides in `_meta` too.
        obj.insert("securitySchemes".to_owned(), schemes.clone());
        if let Some(meta) = obj
            .entry("_meta")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            meta.insert("securitySchemes".to_owned(), schemes);
        }
    }

    /// The full rewrite: parse the whole message, filter and shape every tool, re-serialise.
    /// Only for messages the borrowing scan cannot read (duplicate keys, odd types).
    fn rewrite_whole(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut msg: Value = serde_json::from_slice(payload).ok()?;
        let tools = msg.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        if self.cfg.filter_tools_list {
            tools.retain(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| self.may_call(n))
            });
        }
        for tool in tools.iter_mut() {
            self.add_schemes(tool);
        }
        serde_json::to_vec(&msg).ok()
    }

    /// Wraps a response so its `tools/list` result gains `securitySchemes`: JSON bodies are
    /// rewritten whole (up to `limit` bytes), SSE streams event by event as they flow.
    pub(crate) fn shape(self: Arc<Self>, response: Response<Body>, limit: usize) -> Response<Body> {
        if !response.status().is_success() {
            return response;
        }
        let ctype = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let (mut parts, body) = response.into_parts();
        if ctype.starts_with("text/event-stream") {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = SseRewrite {
                inner: body,
                buf: BytesMut::new(),
                shaper: self,
                ended: false,
            };
            Response::from_parts(parts, Body::new(body))
        } else if ctype.starts_with("application/json") {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = JsonRewrite {
                inner: body,
                buf: BytesMut::new(),
                shaper: self,
                limit,
                passthrough: false,
                done: false,
            };
            Response::from_parts(parts, Body::new(body))
        } else {
            Response::from_parts(parts, body)
        }
    }
}

/// Largest `tools` array remembered by the one-entry cache (64 KiB).
const CACHE_MAX: usize = 64 * 1024;

/// The last `tools` array shaped without filtering, for which layer configuration, and what
/// it became (`None`: left as it was). One entry for the process: a server answers the same
/// list to every client, so one entry is what matters; several layers in one process only
/// take turns. The configuration is held weakly and compared by address: while the `Weak`
/// lives its allocation cannot be reused, so a different configuration never matches.
struct LastShaped {
    cfg: Weak<Inner>,
    input: Box<str>,
    output: Option<Bytes>,
}

static LAST_SHAPED: Mutex<Option<LastShaped>> = Mutex::new(None);

/// The remembered shaping of `input` under `cfg`, if it is the last one: `Some(None)` when
/// it needed nothing, `Some(Some(array))` for the new array.
fn last_shaped(cfg: &Arc<Inner>, input: &str) -> Option<Option<Bytes>> {
    let last = LAST_SHAPED.lock().unwrap_or_else(PoisonError::into_inner);
    let last = last.as_ref()?;
    (std::ptr::eq(last.cfg.as_ptr(), Arc::as_ptr(cfg)) && *last.input == *input)
        .then(|| last.output.clone())
}

/// The last list again, but for its id, recognised without a parse: when `text` is exactly
/// `{"jsonrpc":"2.0","id":ID,"result":{"tools":TOOLS}}` (how rmcp writes a `tools/list`
/// result), ID is a plain JSON number or string, and TOOLS is the remembered array for
/// `cfg`, then `result.tools` is that array and the remembered shaping applies.
fn same_list_again(cfg: &Arc<Inner>, text: &str) -> Option<Spliced> {
    const HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;
    const MID: &str = r#","result":{"tools":"#;
    let body = text.strip_suffix("}}")?;
    let last = LAST_SHAPED.lock().unwrap_or_else(PoisonError::into_inner);
    let last = last.as_ref()?;
    if !std::ptr::eq(last.cfg.as_ptr(), Arc::as_ptr(cfg)) {
        return None;
    }
    let head = body.strip_suffix(&*last.input)?;
    let id = head.strip_prefix(HEAD)?.strip_suffix(MID)?;
    if !plain_id(id.as_bytes()) {
        return None;
    }
    Some(match &last.output {
        None => Spliced::Untouched,
        Some(array) => {
            let mut out = Vec::with_capacity(head.len() + array.len() + 2);
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(array);
            out.extend_from_slice(b"}}");
            Spliced::Out(out)
        }
    })
}

/// Whether `id` is a JSON-RPC id that cannot hide any structure: an integer without
/// leading zeros, or a string of printable characters other than `"` and `\`.
fn plain_id(id: &[u8]) -> bool {
    match id {
        [b'"', inner @ .., b'"'] => inner.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\'),
        _ => {
            let digits = id.strip_prefix(b"-").unwrap_or(id);
            match digits {
                [b'0'] => true,
                [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
                _ => false,
            }
        }
    }
}

/// Remembers the shaping of `input` under `cfg` (only `Untouched` and `Out` are passed).
fn remember_shaped(cfg: &Arc<Inner>, input: &str, shaped: &Spliced) {
    let output = match shaped {
        Spliced::Out(array) => Some(Bytes::copy_from_slice(array)),
        _ => None,
    };
    *LAST_SHAPED.lock().unwrap_or_else(PoisonError::into_inner) = Some(LastShaped {
        cfg: Arc::downgrade(cfg),
        input: input.into(),
        output,
    });
}

/// The outcome of the cheap path.
enum Spliced {
    /// Nothing to change: the message goes out as it came.
    Untouched,
    /// The message with only the tools that needed it changed.
    Out(Vec<u8>),
    /// The scan could not read it: take the full rewrite.
    Unreadable,
}

/// What one tool of a `tools/list` result needs.
enum ToolAction {
    /// Shows what the layer enforces already (top level and `_meta`).
    Keep,
    /// Its `_meta` copy is right; only the top-level field is missing: splice these schemes in.
    AddTop(Value),
    /// Missing or wrong schemes: parse this tool, set them, re-serialise it.
    Rewrite,
    /// Filtered out: the caller may not call it.
    Drop,
}

/// A JSON-RPC message, read only as far as `result.tools`.
#[derive(Deserialize)]
struct MsgHead<'a> {
    #[serde(borrow, default)]
    result: Option<ResultHead<'a>>,
}

/// A result, read only as far as `tools`.
#[derive(Deserialize)]
struct ResultHead<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
}

/// One tool, read only as far as its name and schemes.
#[derive(Deserialize)]
struct ToolHead<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "securitySchemes", borrow, default)]
    schemes: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<&'a RawValue>,
}

/// A tool's `_meta`, read only as far as `securitySchemes`.
#[derive(Deserialize)]
struct MetaHead<'a> {
    #[serde(rename = "securitySchemes", borrow, default)]
    schemes: Option<&'a RawValue>,
}

pin_project! {
    /// Buffers a JSON body, then emits it rewritten (or unchanged when over the limit).
    struct JsonRewrite {
        #[pin]
        inner: Body,
        buf: BytesMut,
        shaper: Arc<ToolsListShaper>,
        limit: usize,
        passthrough: bool,
        done: bool,
    }
}

impl http_body::Body for JsonRewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    if *this.passthrough {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.buf.extend_from_slice(&data);
                    if this.buf.len() > *this.limit {
                        // Too big to rewrite: pass it on untouched, the rest as it comes.
                        *this.passthrough = true;
                        let held = std::mem::take(this.buf).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(held))));
                    }
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    if *this.passthrough {
                        return Poll::Ready(None);
                    }
                    let raw = std::mem::take(this.buf).freeze();
                    let out = this.shaper.rewrite(&raw).map_or(raw, Bytes::from);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }
}

pin_project! {
    /// Rewrites an SSE stream event by event.
    struct SseRewrite {
        #[pin]
        inner: Body,
        buf: BytesMut,
        shaper: Arc<ToolsListShaper>,
        ended: bool,
    }
}

/// The end of the first complete SSE event in `buf` (index after its blank line: `\n\n`,
/// or `\r\n\r\n`), in one pass over the line feeds.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|&b| b == b'\n') {
        let lf = from + p;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// Rewrites the `data:` payload of one SSE event when it is a `tools/list` result.
/// An event left alone goes out as the same bytes, without a copy.
fn rewrite_event(shaper: &ToolsListShaper, event: Bytes) -> Bytes {
    let Ok(text) = std::str::from_utf8(&event) else {
        return event;
    };
    let mut data = text.lines().filter_map(|l| {
        l.strip_prefix("data:")
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
    });
    // The usual event has one `data:` line: borrowed as it is, no list, no join.
    let joined;
    let payload = match (data.next(), data.next()) {
        (None, _) => return event,
        (Some(one), None) => one,
        (Some(first), Some(second)) => {
            let mut all = vec![first, second];
            all.extend(data);
            joined = all.join("\n");
            &joined
        }
    };
    // No data, or only an empty `data:` line (rmcp's priming event): nothing to shape.
    if payload.is_empty() {
        return event;
    }
    let Some(new) = shaper.rewrite(payload.as_bytes()) else {
        return event;
    };
    let mut out = Vec::with_capacity(new.len() + 64);
    let mut wrote = false;
    for line in text.lines() {
        if line.starts_with("data:") {
            if !wrote {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&new);
                out.push(b'\n');
                wrote = true;
            }
        } else if !line.is_empty() {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    Bytes::from(out)
}

impl http_body::Body for SseRewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(end) = event_end(this.buf) {
                let event = this.buf.split_to(end);
                let event = rewrite_event(this.shaper, event.freeze());
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            if *this.ended {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = std::mem::take(this.buf).freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // The usual frame is one whole event (rmcp writes them so): shaped
                    // from the frame itself, without a copy into the buffer.
                    Ok(data) if this.buf.is_empty() && event_end(&data) == Some(data.len()) => {
                        return Poll::Ready(Some(Ok(Frame::data(rewrite_event(
                            this.shaper,
                            data,
                        )))));
                    }
                    Ok(data) => this.buf.extend_from_slice(&data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => *this.ended = true,
            }
        }
    }
}

/// The ChatGPT form of a refusal: HTTP 200 with a JSON-RPC tool result that is an error and
/// carries the challenge in `_meta["mcp/www_authenticate"]`.
pub(crate) fn tool_result_challenge(
    rejection: &AuthRejection,
    id: Value,
    resource_metadata: &str,
) -> Response<Body> {
    // ChatGPT needs both `error` and `error_description`; a missing token is reported the
    // way OpenAI's own example does, as `insufficient_scope`.
    let (code, description) = match rejection {
        AuthRejection::MissingToken { .. } => ("insufficient_scope", "Sign in to use this tool"),
        AuthRejection::InvalidToken { error, .. } => ("invalid_token", error.description()),
        _ => (
            "insufficient_scope",
            "The access token lacks a scope this tool needs",
        ),
    };
    let mut c = super::challenge::Challenge::bearer();
    c.param("resource_metadata", resource_metadata);
    if let Some(scope) = rejection.challenge_scope().filter(|s| !s.is_empty()) {
        c.param("scope", &scope.to_string());
    }
    c.param("error", code);
    c.param("error_description", description);
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "isError": true,
            "content": [{ "type": "text", "text": description }],
            "_meta": { "mcp/www_authenticate": [c.finish()] },
        },
    });
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    crate::audit::resource_refused(rejection.audit_reason(), 200);
    res.extensions_mut().insert(rejection.clone());
    res
}

#[cfg(test)]
mod tests {
    use super::{event_end, plain_id};

    #[test]
    fn plain_ids_are_numbers_and_simple_strings() {
        for ok in [&b"0"[..], b"7", b"-12", b"123456", b"\"a-b 1\"", b"\"\""] {
            assert!(plain_id(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"1.5",
            b"1e3",
            b"\"a\\\"\"",
            b"\"a\"b\"",
            b"\"tab\t\"",
            b"null",
            b"{}",
            b"\"x",
        ] {
            assert!(!plain_id(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn events_end_at_a_blank_line() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: x\ndata: y\n"), None);
        assert_eq!(event_end(b"a\nb\r\nc\n\n"), Some(8));
        assert_eq!(event_end(b""), None);
    }
}
