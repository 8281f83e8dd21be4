//! Reading the JSON-RPC method and target name of a request: from the `Mcp-Method` /
//! `Mcp-Name` headers (protocol 2026-07-28 and later) or from the body.
//!
//! The layer decides on what it reads here, and the MCP service acts on what *it* reads, so
//! the two must never disagree (DESIGN §7, "fail closed on targets"). Each field is read on
//! its own, exactly as serde (and so rmcp) reads it: a `name` string next to a `uri` of
//! another type still gives the name, escapes are decoded, and `Mcp-Name` values wrapped as
//! `=?base64?…?=` are decoded the way rmcp's transport decodes them. Whatever cannot be read
//! that way (a `method` or target that is not a string, `params` that is not an object for
//! a method with a target, a duplicated key) is [`Message::Malformed`], and the layer refuses
//! the request (`400`) rather than judge it by a weaker requirement. A body that is not a
//! JSON-RPC message at all ([`Message::Invalid`]) needs the policy's strictest requirement.

use std::fmt;

use base64::Engine as _;
use http::HeaderMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::policy::{AccessPolicy, Requirement};

/// The first protocol revision whose clients send `Mcp-Method` / `Mcp-Name`.
pub(crate) const HEADER_PROTOCOL: &str = "2026-07-28";

/// The sentinel rmcp wraps a Base64-encoded `Mcp-Name` value in (SEP-2243).
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// One message of a request body, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A request or notification.
    Call {
        method: String,
        name: Option<String>,
        /// The resource URIs a `subscriptions/listen` asks updates for
        /// (`params.notifications.resourceSubscriptions`): each needs what
        /// `resources/subscribe` of it needs.
        subscriptions: Vec<String>,
        /// The prompt or resource whose arguments a `completion/complete` completes
        /// (`params.ref`): it needs what reading that prompt or resource needs.
        completes: Option<Completes>,
    },
    /// A response to a server-initiated request (no method, a result or an error).
    Response,
    /// Not a JSON-RPC message at all (not JSON, not an object, no method, result or
    /// error): needs the policy's strictest requirement.
    Invalid,
    /// A JSON-RPC message whose method or target the layer cannot read exactly as the
    /// service would: refused.
    Malformed,
}

/// The `params` key that names the target of `method`, as rmcp reads it.
pub(crate) fn target_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// What a `completion/complete` completes the arguments of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Completes {
    /// `{"type":"ref/prompt","name":…}`.
    Prompt(String),
    /// `{"type":"ref/resource","uri":…}`.
    Resource(String),
}

/// The method whose `params.ref` names a prompt or resource.
pub(crate) const COMPLETE: &str = "completion/complete";

/// The method whose `params.notifications.resourceSubscriptions` lists resource URIs to
/// receive updates of (protocol 2026-07-28), as `resources/subscribe` does one by one.
pub(crate) const LISTEN: &str = "subscriptions/listen";

/// Whether the `Mcp-Method` / `Mcp-Name` headers say all the policy needs about a request
/// of `method` (with `has_name`): not for a method whose target is not in the headers.
pub(crate) fn headers_suffice(method: &str, has_name: bool) -> bool {
    method != LISTEN && method != COMPLETE && (has_name || target_key(method).is_none())
}

/// The keys the parser looks at; any other key is skipped whatever its type.
enum Key {
    Method,
    Params,
    Result,
    Error,
    Name,
    Uri,
    Notifications,
    ResourceSubscriptions,
    Ref,
    Type,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            // Called for borrowed and escaped keys alike, with the decoded key, as serde's
            // derived field visitors see it.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "method" => Key::Method,
                    "params" => Key::Params,
                    "result" => Key::Result,
                    "error" => Key::Error,
                    "name" => Key::Name,
                    "uri" => Key::Uri,
                    "notifications" => Key::Notifications,
                    "resourceSubscriptions" => Key::ResourceSubscriptions,
                    "ref" => Key::Ref,
                    "type" => Key::Type,
                    "id" => Key::Id,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Stores a value seen once; a second occurrence of the key sets `dup` (serde's derived
/// structs refuse duplicate fields, and a map would keep the last: never guess).
fn once<'de, A: MapAccess<'de>>(
    slot: &mut Option<&'de RawValue>,
    dup: &mut bool,
    map: &mut A,
) -> Result<(), A::Error> {
    let value = map.next_value()?;
    if slot.is_some() {
        *dup = true;
    }
    *slot = Some(value);
    Ok(())
}

/// The top level of one message: the raw `method` and `params`, and whether it has a
/// `result` or an `error`.
#[derive(Default)]
struct Envelope<'a> {
    method: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
    result: bool,
    error: bool,
    /// An `id` member of any value: the message is a request, not a notification.
    id: bool,
    dup: bool,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Method => once(&mut env.method, &mut env.dup, &mut map)?,
                        Key::Params => once(&mut env.params, &mut env.dup, &mut map)?,
                        Key::Result => {
                            env.result = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        Key::Error => {
                            env.error = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        Key::Id => {
                            if env.id {
                                env.dup = true;
                            }
                            env.id = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

/// The `name`, `uri`, `notifications` and `resourceSubscriptions` of an object, raw; other
/// keys are skipped.
#[derive(Default)]
struct Targets<'a> {
    name: Option<&'a RawValue>,
    uri: Option<&'a RawValue>,
    notifications: Option<&'a RawValue>,
    resource_subscriptions: Option<&'a RawValue>,
    reference: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    dup: bool,
}

impl<'de> Deserialize<'de> for Targets<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Targets<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a params object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Targets<'de>, A::Error> {
                let mut t = Targets::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Name => once(&mut t.name, &mut t.dup, &mut map)?,
                        Key::Uri => once(&mut t.uri, &mut t.dup, &mut map)?,
                        Key::Notifications => once(&mut t.notifications, &mut t.dup, &mut map)?,
                        Key::ResourceSubscriptions => {
                            once(&mut t.resource_subscriptions, &mut t.dup, &mut map)?;
                        }
                        Key::Ref => once(&mut t.reference, &mut t.dup, &mut map)?,
                        Key::Type => once(&mut t.kind, &mut t.dup, &mut map)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON string, decoded; `None` for any other JSON value.
fn json_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    // A validated JSON string without escapes is its content between the quotes (the hot
    // path: no second parse); anything else goes through serde.
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(inner.to_owned()),
        _ => serde_json::from_str::<String>(text).ok(),
    }
}

fn message(env: Envelope<'_>) -> Message {
    if env.dup {
        return Message::Malformed;
    }
    let Some(method) = env.method else {
        return if env.result || env.error {
            Message::Response
        } else {
            Message::Invalid
        };
    };
    // A `method` key of another type (even `null`) is a malformed request to the service.
    let Some(method) = json_string(method) else {
        return Message::Malformed;
    };
    // A message with an `id` is a request whatever its method is called: one named
    // `notifications/…` would otherwise pass as a public notification under `lazy()` and
    // reach the service's custom-request handler (issue 8 item 1, fail closed).
    if env.id && method.starts_with("notifications/") {
        return Message::Malformed;
    }
    let name = match (target_key(&method), env.params) {
        (Some(key), Some(raw)) => {
            // `params` must be an object for a method with a target (rmcp refuses anything
            // else); read only the target field, whatever the others hold.
            let targets = match serde_json::from_str::<Targets<'_>>(raw.get()) {
                Ok(t) if !t.dup => t,
                _ => return Message::Malformed,
            };
            let field = if key == "name" {
                targets.name
            } else {
                targets.uri
            };
            match field.map(json_string) {
                None => None,
                Some(Some(name)) => Some(name),
                Some(None) => return Message::Malformed,
            }
        }
        // No params: the service cannot call a named target without one.
        _ => None,
    };
    let subscriptions = if method == LISTEN {
        match env.params.map(listen_subscriptions) {
            None => Vec::new(),
            Some(Some(uris)) => uris,
            Some(None) => return Message::Malformed,
        }
    } else {
        Vec::new()
    };
    let completes = if method == COMPLETE {
        match env.params.map(completion_ref) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(c))) => Some(c),
            Some(Err(Unreadable)) => return Message::Malformed,
        }
    } else {
        None
    };
    Message::Call {
        method,
        name,
        subscriptions,
        completes,
    }
}

/// A params object (or any object) with its keys of interest, `None` when it is not an
/// object or repeats one of them.
fn object(raw: &RawValue) -> Option<Targets<'_>> {
    match serde_json::from_str::<Targets<'_>>(raw.get()) {
        Ok(t) if !t.dup => Some(t),
        _ => None,
    }
}

/// A part of a request the layer cannot read exactly as the MCP service will (a duplicated
/// key, a field of another type, a repeated or non-ASCII header): the request is refused,
/// never judged by a guess (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreadable;

/// The prompt or resource of a `completion/complete`'s `params.ref`, as rmcp reads it (a
/// `type`-tagged object); `Ok(None)` without a `ref` or for another `type` (the service
/// refuses those); `Err` when the layer cannot read it as the service would.
fn completion_ref(params: &RawValue) -> Result<Option<Completes>, Unreadable> {
    let Some(reference) = object(params).ok_or(Unreadable)?.reference else {
        return Ok(None);
    };
    let r = object(reference).ok_or(Unreadable)?;
    let kind = r.kind.map(json_string);
    let text = |field: Option<&RawValue>| match field.map(json_string) {
        Some(Some(v)) => Ok(Some(v)),
        Some(None) => Err(Unreadable),
        None => Ok(None),
    };
    match kind {
        Some(Some(k)) if k == "ref/prompt" => Ok(text(r.name)?.map(Completes::Prompt)),
        Some(Some(k)) if k == "ref/resource" => Ok(text(r.uri)?.map(Completes::Resource)),
        Some(Some(_)) | None => Ok(None),
        Some(None) => Err(Unreadable),
    }
}

/// The URIs of `params.notifications.resourceSubscriptions` of a `subscriptions/listen`, as
/// rmcp reads them (an absent or `null` list is none); `None` when the service would not
/// read them as a list of strings (a duplicated key, another type).
fn listen_subscriptions(params: &RawValue) -> Option<Vec<String>> {
    let Some(notifications) = object(params)?.notifications else {
        return Some(Vec::new());
    };
    match object(notifications)?.resource_subscriptions {
        None => Some(Vec::new()),
        Some(list) => serde_json::from_str::<Option<Vec<String>>>(list.get())
            .ok()
            .map(Option::unwrap_or_default),
    }
}

/// Parses a body into its messages: one for an object, one per element for a batch, and a
/// single [`Message::Invalid`] for anything that is not JSON-RPC.
pub(crate) fn parse_body(body: &[u8]) -> Vec<Message> {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &body[i..]);
    match trimmed.first() {
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
            Ok(items) if !items.is_empty() => items
                .into_iter()
                .map(|raw| {
                    serde_json::from_str::<Envelope<'_>>(raw.get())
                        .map_or(Message::Invalid, message)
                })
                .collect(),
            _ => vec![Message::Invalid],
        },
        Some(b'{') => {
            vec![serde_json::from_slice::<Envelope<'_>>(trimmed).map_or(Message::Invalid, message)]
        }
        _ => vec![Message::Invalid],
    }
}

/// The `id` of a single JSON-RPC request body: a string or a number; `null` for a batch,
/// a notification, an id of another type, or a body that is not a JSON object.
pub(crate) fn request_id(body: &[u8]) -> serde_json::Value {
    // A map, not a derived struct: serde would also read an array's first element as `id`.
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut msg) => match msg.remove("id") {
            Some(id @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => id,
            _ => serde_json::Value::Null,
        },
        Err(_) => serde_json::Value::Null,
    }
}

/// What the 2026-07-28 headers say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderTarget {
    /// No `Mcp-Method` header, or a protocol revision before the headers existed.
    Absent,
    /// The method and (decoded) name.
    Present(String, Option<String>),
    /// Duplicated, non-ASCII or undecodable headers: the transport refuses these, and so
    /// does the layer.
    Bad,
}

/// Decodes an `Mcp-Name` value as rmcp's transport does: `=?base64?<b64>?=` wraps standard
/// Base64 of UTF-8 text; anything else is taken as is. `None` when the wrapper holds
/// invalid Base64 or UTF-8.
pub(crate) fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|inner| inner.strip_suffix(BASE64_SUFFIX))
    {
        Some(inner) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(inner)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

/// The sole value of a header as text: `Ok(None)` when absent, `Err` when repeated or not
/// visible ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Unreadable> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Unreadable);
    }
    value.to_str().map(Some).map_err(|_| Unreadable)
}

/// The method and name from the 2026-07-28 headers, when the request carries them.
pub(crate) fn from_headers(headers: &HeaderMap) -> HeaderTarget {
    let Some(version) = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
    else {
        return HeaderTarget::Absent;
    };
    if version < HEADER_PROTOCOL {
        return HeaderTarget::Absent;
    }
    let method = match single(headers, "mcp-method") {
        Ok(Some(m)) => m.to_owned(),
        Ok(None) => return HeaderTarget::Absent,
        Err(Unreadable) => return HeaderTarget::Bad,
    };
    let name = match single(headers, "mcp-name") {
        Ok(Some(raw)) => match decode_header_value(raw) {
            Some(n) => Some(n),
            None => return HeaderTarget::Bad,
        },
        Ok(None) => None,
        Err(Unreadable) => return HeaderTarget::Bad,
    };
    HeaderTarget::Present(method, name)
}

/// What the messages of a body need under `policy`, or `None` when any of them is
/// [`Message::Malformed`] (the layer then refuses the request: it is never judged by the
/// base requirement). A body that is not JSON-RPC at all needs the strictest requirement.
pub(crate) fn requirement_of(policy: &AccessPolicy, messages: &[Message]) -> Option<Requirement> {
    messages
        .iter()
        .map(|m| match m {
            Message::Call {
                method,
                name,
                subscriptions,
                completes,
            } => {
                let own = policy.requirement(Some(method), name.as_deref());
                let own = match completes {
                    Some(Completes::Prompt(p)) => own.and(policy.prompt_ref_requirement(p)),
                    Some(Completes::Resource(u)) => own.and(policy.subscription_requirement(u)),
                    None => own,
                };
                Some(
                    subscriptions
                        .iter()
                        .fold(own, |r, uri| r.and(policy.subscription_requirement(uri))),
                )
            }
            Message::Response => Some(policy.response_requirement()),
            Message::Invalid => Some(policy.strictest_requirement()),
            Message::Malformed => None,
        })
        .try_fold(None::<Requirement>, |acc, r| {
            let r = r?;
            Some(Some(match acc {
                Some(a) => a.and(r),
                None => r,
            }))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &str, n: Option<&str>) -> Message {
        Message::Call {
            method: m.to_owned(),
            name: n.map(str::to_owned),
            subscriptions: Vec::new(),
            completes: None,
        }
    }

    #[test]
    fn parses_objects_batches_and_junk() {
        assert_eq!(
            parse_body(br#" {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#),
            vec![call("tools/call", Some("x"))]
        );
        assert_eq!(
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#),
            vec![call("resources/read", Some("file:///a"))]
        );
        assert_eq!(
            parse_body(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"result":{}},7]"#),
            vec![call("notifications/initialized", None), Message::Response, Message::Invalid]
        );
        // A request named like a notification is not one (fail closed under `lazy()`).
        assert_eq!(
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}"#),
            vec![Message::Malformed]
        );
        assert_eq!(parse_body(b"[]"), vec![Message::Invalid]);
        assert_eq!(parse_body(b"not json"), vec![Message::Invalid]);
        assert_eq!(parse_body(b""), vec![Message::Invalid]);
        // Positional params cannot name a tool the way rmcp reads it (issue 8 item 1: this
        // used to read as "no name" and fall back to the base requirement); escaped names
        // are decoded.
        assert_eq!(
            parse_body(br#"{"method":"tools/call","params":[1,2]}"#),
            vec![Message::Malformed]
        );
        assert_eq!(
            parse_body(br#"{"method":"tools\/call","params":{"name":"a\"b"}}"#),
            vec![call("tools/call", Some("a\"b"))]
        );
    }

    #[test]
    fn request_ids() {
        use serde_json::{Value, json};
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":7,"method":"x"}"#),
            json!(7)
        );
        assert_eq!(request_id(br#"{"id":"a-1","method":"x"}"#), json!("a-1"));
        // Batches, notifications, odd ids and non-JSON have none.
        assert_eq!(request_id(br#"[{"id":1,"method":"x"}]"#), Value::Null);
        assert_eq!(request_id(br#"{"method":"notifications/x"}"#), Value::Null);
        assert_eq!(request_id(br#"{"id":{"a":1},"method":"x"}"#), Value::Null);
        assert_eq!(request_id(br#"{"id":true}"#), Value::Null);
        assert_eq!(request_id(b"not json"), Value::Null);
    }

    // issue 8 item 1: every field is read on its own, as serde reads it.
    #[test]
    fn each_field_is_read_on_its_own() {
        // A `uri` of another type next to a string `name` still gives the name.
        assert_eq!(
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write","uri":0,"arguments":{}}}"#),
            vec![call("tools/call", Some("files_write"))]
        );
        // And a `name` of another type next to a `uri` still gives the URI.
        assert_eq!(
            parse_body(br#"{"method":"resources/read","params":{"uri":"file:///s","name":[1]}}"#),
            vec![call("resources/read", Some("file:///s"))]
        );
        // Escapes in keys and values are decoded, as serde decodes them.
        assert_eq!(
            parse_body(
                br#"{"m\u0065thod":"tools/call","params":{"n\u0061me":"files\u005fwrite"}}"#
            ),
            vec![call("tools/call", Some("files_write"))]
        );
        // Methods without a target ignore params of any shape.
        assert_eq!(
            parse_body(br#"{"method":"tools/list","params":7}"#),
            vec![call("tools/list", None)]
        );
        // A target method without params has no target (the service refuses it).
        assert_eq!(
            parse_body(br#"{"method":"tools/call"}"#),
            vec![call("tools/call", None)]
        );
        assert_eq!(
            parse_body(br#"{"method":"prompts/get","params":{"arguments":{}}}"#),
            vec![call("prompts/get", None)]
        );
    }

    // issue 8 item 1: whatever the layer cannot read exactly as the service would is
    // Malformed (refused), and a body that is not JSON-RPC at all is Invalid (strictest).
    #[test]
    fn unreadable_targets_are_malformed() {
        for body in [
            // The target of another type.
            r#"{"method":"tools/call","params":{"name":0}}"#,
            r#"{"method":"tools/call","params":{"name":null}}"#,
            r#"{"method":"tools/call","params":{"name":["files_write"]}}"#,
            r#"{"method":"tools/call","params":{"name":{"x":"files_write"}}}"#,
            r#"{"method":"prompts/get","params":{"name":true}}"#,
            r#"{"method":"resources/read","params":{"uri":1}}"#,
            r#"{"method":"resources/subscribe","params":{"uri":{}}}"#,
            r#"{"method":"resources/unsubscribe","params":{"uri":false}}"#,
            // Params that are not an object.
            r#"{"method":"tools/call","params":null}"#,
            r#"{"method":"tools/call","params":"files_write"}"#,
            r#"{"method":"tools/call","params":["files_write"]}"#,
            r#"{"method":"resources/read","params":3}"#,
            // Duplicate keys (serde's derived structs refuse them; a map keeps the last).
            r#"{"method":"tools/call","params":{"name":"files_read","name":"files_write"}}"#,
            r#"{"method":"tools/call","params":{"n\u0061me":"files_read","name":"files_write"}}"#,
            r#"{"method":"tools/list","method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"method":"tools/call","params":{"name":"a"},"params":{"name":"files_write"}}"#,
            r#"{"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
            // A method of another type.
            r#"{"method":7,"params":{"name":"files_write"}}"#,
            r#"{"method":null,"result":{}}"#,
            r#"{"method":["tools/call"]}"#,
            // A lone surrogate serde cannot decode.
            r#"{"method":"tools/call","params":{"name":"\ud800"}}"#,
        ] {
            assert_eq!(
                parse_body(body.as_bytes()),
                vec![Message::Malformed],
                "{body}"
            );
        }
        // Not valid JSON, trailing data: not JSON-RPC at all.
        for body in [
            r#"{"method":"tools/call","params":{"name":"files_write"}} x"#,
            r#"{"method":"tools/call","params":{"name":"files_write"}"#,
            r#"{"params":{"name":"files_write"}}"#,
        ] {
            assert_eq!(
                parse_body(body.as_bytes()),
                vec![Message::Invalid],
                "{body}"
            );
        }
        // A batch with any unreadable element makes the whole body unreadable.
        let policy = AccessPolicy::new().lazy().tool_scopes("w", ["w"]);
        let batch = parse_body(
            br#"[{"method":"tools/list"},{"method":"tools/call","params":{"name":"w","name":"x"}}]"#,
        );
        assert_eq!(batch[1], Message::Malformed);
        assert_eq!(requirement_of(&policy, &batch), None);
        // Junk needs every scope the policy knows.
        let strictest = Some(Requirement::Token("w".parse().unwrap()));
        assert_eq!(requirement_of(&policy, &parse_body(b"[]")), strictest);
        assert_eq!(
            requirement_of(&policy, &parse_body(br#"[{"method":"tools/list"},7]"#)),
            strictest
        );
        assert_eq!(
            requirement_of(&policy, &parse_body(br#"[{"method":"tools/list"}]"#)),
            Some(Requirement::Public)
        );
    }

    // issue 8 item 1 (review): `subscriptions/listen` names resources to receive updates of;
    // each needs its resource scopes, and an unreadable list is Malformed.
    #[test]
    fn listen_subscriptions_are_read() {
        let listen = |notifications: &str| {
            parse_body(
                format!(r#"{{"method":"subscriptions/listen","id":1,"params":{{"notifications":{notifications}}}}}"#)
                    .as_bytes(),
            )
        };
        let subs = |uris: &[&str]| {
            vec![Message::Call {
                method: LISTEN.to_owned(),
                name: None,
                subscriptions: uris.iter().map(|u| (*u).to_owned()).collect(),
                completes: None,
            }]
        };
        assert_eq!(
            listen(r#"{"resourceSubscriptions":["file:///a","file:///s"]}"#),
            subs(&["file:///a", "file:///s"])
        );
        assert_eq!(listen(r#"{"toolsListChanged":true}"#), subs(&[]));
        assert_eq!(listen(r#"{"resourceSubscriptions":null}"#), subs(&[]));
        for bad in [
            r#"{"resourceSubscriptions":"file:///a"}"#,
            r#"{"resourceSubscriptions":[1]}"#,
            r#"{"resourceSubscriptions":[],"resourceSubscriptions":["file:///a"]}"#,
            r#"["file:///a"]"#,
            "null",
        ] {
            assert_eq!(listen(bad), vec![Message::Malformed], "{bad}");
        }
        let policy = AccessPolicy::new()
            .lazy()
            .resource_scopes("file:///s", ["admin"]);
        assert_eq!(
            requirement_of(
                &policy,
                &listen(r#"{"resourceSubscriptions":["file:///a","file:///s"]}"#)
            ),
            Some(Requirement::Token("admin".parse().unwrap()))
        );
        assert!(!headers_suffice(LISTEN, false));
        assert!(headers_suffice("tools/list", false));
        assert!(!headers_suffice("tools/call", false));
    }

    // issue 8 item 1 (review): the layer reads the method and target exactly as rmcp
    // 3.11 does, for every body rmcp accepts; whatever it reads differently is refused
    // (Malformed) or judged by the strictest requirement (Invalid), never by another target.
    #[cfg(feature = "rmcp")]
    #[test]
    fn agrees_with_rmcp_on_every_body_it_accepts() {
        use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ClientRequest};
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write","uri":0}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"files\u005fwrite"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools\/call","params":{"name":"a\"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_read","name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"name":"public"},"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write","arguments":{"name":"public"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["files_write",{}]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":0}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"Tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"id":1,"method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"files_write"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{"name":"files_write"}}"#,
            " \t\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"files_write\"}} \n",
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"files_write\"}}",
            "\u{c}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"files_write\"}}",
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files_write"}}]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///secret"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///secret","name":0}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///secret","uri":"file:///x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///s\u0065cret"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"file:///secret"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret_prompt","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret_prompt","uri":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///secret"]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":null}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"file:///secret"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"secret_prompt"},"argument":{"name":"a","value":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"name":"secret_prompt","type":"ref/prompt","uri":7},"argument":{"name":"a","value":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///secret","name":7},"argument":{"name":"a","value":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","name":"b"},"argument":{"name":"a","value":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/other","name":"secret_prompt"},"argument":{"name":"a","value":""}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"s-1","result":{"action":"accept"}}"#,
            r#"{"jsonrpc":"2.0","id":"s-1","error":{"code":1,"message":"no"}}"#,
        ];
        let mut accepted = Vec::new();
        for body in bodies {
            let layer = parse_body(body.as_bytes());
            let Ok(message) = serde_json::from_str::<ClientJsonRpcMessage>(body) else {
                // rmcp refuses it: whatever the layer reads is judged and then refused.
                continue;
            };
            accepted.push(body);
            let mut completes = None;
            let (method, target, subscriptions) = match &message {
                ClientJsonRpcMessage::Request(r) => {
                    let (target, subs) = match &r.request {
                        ClientRequest::CallToolRequest(c) => {
                            (Some(c.params.name.to_string()), vec![])
                        }
                        ClientRequest::GetPromptRequest(p) => (Some(p.params.name.clone()), vec![]),
                        ClientRequest::ReadResourceRequest(p) => {
                            (Some(p.params.uri.clone()), vec![])
                        }
                        ClientRequest::SubscribeRequest(p) => (Some(p.params.uri.clone()), vec![]),
                        ClientRequest::UnsubscribeRequest(p) => {
                            (Some(p.params.uri.clone()), vec![])
                        }
                        ClientRequest::CompleteRequest(c) => {
                            completes = Some(match &c.params.r#ref {
                                rmcp::model::Reference::Prompt(p) => {
                                    Completes::Prompt(p.name.clone())
                                }
                                rmcp::model::Reference::Resource(r) => {
                                    Completes::Resource(r.uri.clone())
                                }
                                other => panic!("add {other:?}"),
                            });
                            (None, vec![])
                        }
                        ClientRequest::SubscriptionsListenRequest(p) => (
                            None,
                            p.params
                                .notifications
                                .resource_subscriptions
                                .clone()
                                .unwrap_or_default(),
                        ),
                        _ => (None, vec![]),
                    };
                    (r.request.method().to_owned(), target, subs)
                }
                ClientJsonRpcMessage::Notification(n) => {
                    let method = match &n.notification {
                        ClientNotification::CustomNotification(c) => c.method.clone(),
                        ClientNotification::InitializedNotification(_) => {
                            "notifications/initialized".to_owned()
                        }
                        other => panic!("add {other:?}"),
                    };
                    (method, None, vec![])
                }
                ClientJsonRpcMessage::Response(_) | ClientJsonRpcMessage::Error(_) => {
                    assert_eq!(layer, vec![Message::Response], "{body}");
                    continue;
                }
            };
            match layer.as_slice() {
                [Message::Malformed] | [Message::Invalid] => {}
                [
                    Message::Call {
                        method: m,
                        name,
                        subscriptions: s,
                        completes: c,
                    },
                ] => {
                    assert_eq!(m, &method, "{body}");
                    // A request rmcp reads with a target the layer read the same target;
                    // one rmcp reads without (a custom request) the layer judged by name or
                    // not at all, never by another target.
                    if target.is_some() {
                        assert_eq!(name, &target, "{body}");
                    }
                    assert_eq!(s, &subscriptions, "{body}");
                    if completes.is_some() {
                        assert_eq!(c, &completes, "{body}");
                    }
                }
                other => panic!("{other:?} for {body}"),
            }
        }
        // The comparison is not vacuous: rmcp accepts the odd shapes too.
        assert!(accepted.len() >= 20, "{}", accepted.len());
    }

    // issue 8 item 1: `Mcp-Name` is decoded as rmcp's transport decodes it.
    #[test]
    fn mcp_name_headers_are_decoded_like_rmcp() {
        use http::HeaderValue;
        let headers = |pairs: &[(&'static str, &[u8])]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_bytes(v).unwrap());
            }
            h
        };
        let v = ("mcp-protocol-version", &b"2026-07-28"[..]);
        let m = ("mcp-method", &b"tools/call"[..]);
        assert_eq!(
            from_headers(&headers(&[
                v,
                m,
                ("mcp-name", b"=?base64?ZmlsZXNfd3JpdGU=?=")
            ])),
            HeaderTarget::Present("tools/call".into(), Some("files_write".into()))
        );
        assert_eq!(
            from_headers(&headers(&[v, m, ("mcp-name", b"files_write")])),
            HeaderTarget::Present("tools/call".into(), Some("files_write".into()))
        );
        // Undecodable, repeated or non-ASCII headers are refused.
        for bad in [
            &[v, m, ("mcp-name", &b"=?base64?!!!?="[..])][..],
            &[v, m, ("mcp-name", &b"=?base64?//79?="[..])][..],
            &[v, m, ("mcp-name", &b"a"[..]), ("mcp-name", &b"b"[..])][..],
            &[v, m, ("mcp-name", &b"caf\xe9"[..])][..],
            &[v, m, ("mcp-method", &b"tools/list"[..])][..],
        ] {
            assert_eq!(from_headers(&headers(bad)), HeaderTarget::Bad);
        }
        // Older revisions and requests without Mcp-Method carry no header target.
        assert_eq!(
            from_headers(&headers(&[("mcp-protocol-version", b"2025-11-25"), m])),
            HeaderTarget::Absent
        );
        assert_eq!(from_headers(&headers(&[v])), HeaderTarget::Absent);
    }
}
