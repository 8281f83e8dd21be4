//! Reading the JSON-RPC method and target name of a request: from the `Mcp-Method` /
//! `Mcp-Name` headers (protocol 2026-07-28 and later) or from the body.

use std::borrow::Cow;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::policy::{AccessPolicy, Requirement};

/// The first protocol revision whose clients send `Mcp-Method` / `Mcp-Name`.
pub(crate) const HEADER_PROTOCOL: &str = "2026-07-28";

/// One message of a request body, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A request or notification.
    Call {
        method: String,
        name: Option<String>,
    },
    /// A response to a server-initiated request (no method, a result or an error).
    Response,
    /// Not a JSON-RPC message.
    Invalid,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

fn message(env: Envelope<'_>) -> Message {
    let Some(method) = env.method else {
        return if env.result.is_some() || env.error.is_some() {
            Message::Response
        } else {
            Message::Invalid
        };
    };
    let params = env
        .params
        .and_then(|raw| serde_json::from_str::<Params<'_>>(raw.get()).ok());
    let name = params.and_then(|p| match method.as_ref() {
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => p.uri,
        _ => p.name,
    });
    Message::Call {
        method: method.into_owned(),
        name: name.map(Cow::into_owned),
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

/// The method and name from the 2026-07-28 headers, when the request carries them.
pub(crate) fn from_headers(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    let version = headers.get("mcp-protocol-version")?.to_str().ok()?;
    if version < HEADER_PROTOCOL {
        return None;
    }
    let mut methods = headers.get_all("mcp-method").iter();
    let method = methods.next()?.to_str().ok()?.to_owned();
    if methods.next().is_some() {
        return None;
    }
    let mut names = headers.get_all("mcp-name").iter();
    let name = match names.next() {
        Some(v) => Some(v.to_str().ok()?.to_owned()),
        None => None,
    };
    if names.next().is_some() {
        return None;
    }
    Some((method, name))
}

/// What the messages of a body need under `policy`.
pub(crate) fn requirement_of(policy: &AccessPolicy, messages: &[Message]) -> Requirement {
    messages
        .iter()
        .map(|m| match m {
            Message::Call { method, name } => policy.requirement(Some(method), name.as_deref()),
            Message::Response => policy.response_requirement(),
            Message::Invalid => policy.unknown_requirement(),
        })
        .reduce(Requirement::and)
        .unwrap_or_else(|| policy.unknown_requirement())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &str, n: Option<&str>) -> Message {
        Message::Call {
            method: m.to_owned(),
            name: n.map(str::to_owned),
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
        assert_eq!(parse_body(b"[]"), vec![Message::Invalid]);
        assert_eq!(parse_body(b"not json"), vec![Message::Invalid]);
        assert_eq!(parse_body(b""), vec![Message::Invalid]);
        // Positional params and escaped names are handled.
        assert_eq!(
            parse_body(br#"{"method":"tools/call","params":[1,2]}"#),
            vec![call("tools/call", None)]
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
}
