//! [`AccessPolicy`]: which JSON-RPC calls pass without a token and which scopes each needs.
//!
//! The layer decides per request, before the MCP service runs, so that a missing scope is an
//! HTTP `403 insufficient_scope` challenge that clients can act on (a JSON-RPC error inside a
//! `200` cannot trigger a client's step-up).
//!
//! ```
//! use mcp_oauth::resource::{AccessPolicy, Requirement};
//!
//! let policy = AccessPolicy::new()
//!     .lazy()                                   // initialize, tools/list, ping, … need no token
//!     .public_tool("public_search")
//!     .tool_scopes("files_read", ["files:read"])
//!     .tool_scopes("files_write", ["files:write"]);
//!
//! assert_eq!(policy.requirement(Some("tools/list"), None), Requirement::Public);
//! assert_eq!(policy.requirement(Some("tools/call"), Some("public_search")), Requirement::Public);
//! assert_eq!(
//!     policy.requirement(Some("tools/call"), Some("files_write")),
//!     Requirement::Token("files:write".parse().unwrap()),
//! );
//! // Unknown tools still need a token.
//! assert!(matches!(policy.requirement(Some("tools/call"), Some("nope")), Requirement::Token(_)));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::scope::{Scope, ScopeSet};

/// Methods that lazy authentication lets through without a token: the handshake, listings,
/// `ping` and every notification. Calls (`tools/call`, `resources/read`, `prompts/get`, …)
/// are not among them.
pub const LAZY_PUBLIC_METHODS: &[&str] = &[
    "initialize",
    "server/discover",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
];

/// What one request (or the union of a batch) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// No token needed (a token that is sent is still verified).
    Public,
    /// A valid token holding these scopes (possibly none).
    Token(ScopeSet),
}

impl Requirement {
    /// The stricter of two requirements (a batch needs what all its members need).
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Public, Self::Public) => Self::Public,
            (Self::Token(s), Self::Public) | (Self::Public, Self::Token(s)) => Self::Token(s),
            (Self::Token(a), Self::Token(b)) => Self::Token(a.union(&b)),
        }
    }
}

/// How one tool may be called, as declared next to its code (`#[requires_scopes]`,
/// `#[public_tool]`) and collected by `#[scoped_tools]` into
/// [`AccessPolicy::tools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolAccess {
    /// Callable without a token.
    Public,
    /// Needs a token holding these scopes (with the hierarchy).
    Scopes(&'static [&'static str]),
}

/// One tool's declared access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolRequirement {
    /// The tool name, as `tools/call` names it.
    pub name: &'static str,
    /// What calling it takes.
    pub access: ToolAccess,
}

/// Which calls need which scopes; see the [`resource`](crate::resource) module docs.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AccessPolicy {
    lazy: bool,
    public_methods: BTreeSet<String>,
    method_scopes: BTreeMap<String, ScopeSet>,
    public_tools: BTreeSet<String>,
    tool_scopes: BTreeMap<String, ScopeSet>,
    resource_scopes: BTreeMap<String, ScopeSet>,
    prompt_scopes: BTreeMap<String, ScopeSet>,
    required: ScopeSet,
}

fn scopes<I, S>(items: I) -> ScopeSet
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    // Invalid scope strings are caught by the config builder's check of `all_scopes`; here
    // they are kept verbatim-free by dropping them, and the builder reports them.
    items
        .into_iter()
        .filter_map(|s| Scope::new(s).ok())
        .collect()
}

impl AccessPolicy {
    /// Every request needs a valid token (with the [`require_scopes`](Self::require_scopes),
    /// if any). This is the default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lazy authentication: [`LAZY_PUBLIC_METHODS`], notifications, responses and the
    /// `GET`/`DELETE` stream requests pass without a token, so clients can connect and list
    /// tools before signing in, and are challenged only when they call something protected.
    /// Both ChatGPT and Claude show sign-in at once unless listing works without a token.
    ///
    /// A request naming an MCP session that a signed-in principal opened (or claimed) needs
    /// that principal's token all the same, whatever the method; see
    /// [`SessionBindings`](crate::resource::SessionBindings).
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// Lets a JSON-RPC method through without a token.
    pub fn public_method(mut self, method: impl Into<String>) -> Self {
        self.public_methods.insert(method.into());
        self
    }

    /// Scopes a JSON-RPC method needs (on top of [`require_scopes`](Self::require_scopes)).
    pub fn method_scopes<I, S>(mut self, method: impl Into<String>, needed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.method_scopes.insert(method.into(), scopes(needed));
        self
    }

    /// Lets `tools/call` of this tool through without a token.
    pub fn public_tool(mut self, name: impl Into<String>) -> Self {
        self.public_tools.insert(name.into());
        self
    }

    /// Scopes `tools/call` of this tool needs.
    pub fn tool_scopes<I, S>(mut self, name: impl Into<String>, needed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tool_scopes.insert(name.into(), scopes(needed));
        self
    }

    /// Adds declared tool requirements, typically `Server::tool_requirements()` generated by
    /// `#[scoped_tools]` from the `#[requires_scopes]` and `#[public_tool]` attributes, so
    /// the policy cannot drift from the code: `.tools(Server::tool_requirements())`. Takes
    /// requirements by value or by reference.
    pub fn tools<I>(mut self, tools: I) -> Self
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<ToolRequirement>,
    {
        for t in tools {
            let t: ToolRequirement = *std::borrow::Borrow::borrow(&t);
            match t.access {
                ToolAccess::Public => {
                    self.public_tools.insert(t.name.to_owned());
                }
                ToolAccess::Scopes(s) => {
                    self.tool_scopes
                        .insert(t.name.to_owned(), scopes(s.iter().copied()));
                }
            }
        }
        self
    }

    /// Scopes `resources/read` (and `resources/subscribe`, a `subscriptions/listen` that
    /// names it, and a `completion/complete` of its arguments) of this URI needs. Every usual spelling of the URI is protected alike:
    /// scheme and authority in any case, percent-encoded letters, dot segments, an added
    /// query, fragment or trailing `/`.
    pub fn resource_scopes<I, S>(mut self, uri: impl Into<String>, needed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resource_scopes.insert(uri.into(), scopes(needed));
        self
    }

    /// Scopes `prompts/get` of this prompt needs (and a `completion/complete` of its
    /// arguments).
    pub fn prompt_scopes<I, S>(mut self, name: impl Into<String>, needed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.prompt_scopes.insert(name.into(), scopes(needed));
        self
    }

    /// Scopes every authenticated request needs.
    pub fn require_scopes<I, S>(mut self, needed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required = scopes(needed);
        self
    }

    /// Whether lazy authentication is on.
    #[must_use]
    pub fn is_lazy(&self) -> bool {
        self.lazy
    }

    /// Whether any decision depends on the JSON-RPC method or name. When not, the layer
    /// never reads the request body.
    #[must_use]
    pub fn needs_method(&self) -> bool {
        self.lazy
            || !self.public_methods.is_empty()
            || !self.method_scopes.is_empty()
            || !self.public_tools.is_empty()
            || !self.tool_scopes.is_empty()
            || !self.resource_scopes.is_empty()
            || !self.prompt_scopes.is_empty()
    }

    /// Every scope the policy mentions (checked against the declared scopes at build).
    #[must_use]
    pub fn all_scopes(&self) -> ScopeSet {
        let mut all = self.required.clone();
        for set in self
            .method_scopes
            .values()
            .chain(self.tool_scopes.values())
            .chain(self.resource_scopes.values())
            .chain(self.prompt_scopes.values())
        {
            all.extend(set);
        }
        all
    }

    /// Scopes declared for a tool, if any.
    #[must_use]
    pub fn scopes_for_tool(&self, name: &str) -> Option<&ScopeSet> {
        self.tool_scopes.get(name)
    }

    /// Whether a tool is declared public.
    #[must_use]
    pub fn is_public_tool(&self, name: &str) -> bool {
        self.public_tools.contains(name)
    }

    /// The requirement of a request that is not a JSON-RPC `POST` (`GET` stream, `DELETE`
    /// session).
    #[must_use]
    pub fn stream_requirement(&self) -> Requirement {
        if self.lazy {
            Requirement::Public
        } else {
            Requirement::Token(self.required.clone())
        }
    }

    /// The base requirement: a token with the [`require_scopes`](Self::require_scopes). The
    /// layer uses it when the policy does not depend on the method; a body it cannot read
    /// under a policy that does gets [`strictest_requirement`](Self::strictest_requirement).
    #[must_use]
    pub fn unknown_requirement(&self) -> Requirement {
        Requirement::Token(self.required.clone())
    }

    /// The strictest requirement: a token holding every scope the policy names. The layer
    /// applies it to a body that is not JSON-RPC at all when the policy depends on the
    /// method, so a body the layer cannot read is never judged by a weaker rule than any
    /// call the service might find in it.
    #[must_use]
    pub fn strictest_requirement(&self) -> Requirement {
        Requirement::Token(self.all_scopes())
    }

    /// The requirement of a JSON-RPC response (a message with a result or error but no
    /// method): public under lazy authentication, since it invokes nothing.
    #[must_use]
    pub fn response_requirement(&self) -> Requirement {
        self.stream_requirement()
    }

    /// What subscribing to updates of the resource `uri` needs beyond the method itself: its
    /// [`resource_scopes`](Self::resource_scopes) (with the base scopes), or nothing.
    pub(crate) fn subscription_requirement(&self, uri: &str) -> Requirement {
        match self.scopes_for_resource(uri) {
            Some(s) => Requirement::Token(self.required.union(&s)),
            None => Requirement::Public,
        }
    }

    /// What completing the arguments of the prompt `name` needs beyond the method itself:
    /// its [`prompt_scopes`](Self::prompt_scopes) (with the base scopes), or nothing.
    pub(crate) fn prompt_ref_requirement(&self, name: &str) -> Requirement {
        match self.prompt_scopes.get(name) {
            Some(s) => Requirement::Token(self.required.union(s)),
            None => Requirement::Public,
        }
    }

    /// The scopes of every [`resource_scopes`](Self::resource_scopes) entry that names `uri`,
    /// however either is spelt (see [`normalise_uri`]): a service that normalises the URI it
    /// is asked for must not serve a protected resource to a token judged for another
    /// spelling of it. `None` when no entry names it.
    fn scopes_for_resource(&self, uri: &str) -> Option<ScopeSet> {
        if self.resource_scopes.is_empty() {
            return None;
        }
        let wanted = normalise_uri(uri);
        self.resource_scopes
            .iter()
            .filter(|(k, _)| k.as_str() == uri || normalise_uri(k) == wanted)
            .map(|(_, s)| s.clone())
            .reduce(|a, b| a.union(&b))
    }

    /// The requirement of one JSON-RPC request or notification. `name` is the tool or
    /// prompt name, or the resource URI.
    #[must_use]
    pub fn requirement(&self, method: Option<&str>, name: Option<&str>) -> Requirement {
        let Some(method) = method else {
            return self.unknown_requirement();
        };
        let with = |extra: &ScopeSet| Requirement::Token(self.required.union(extra));
        let named = match (method, name) {
            ("tools/call", Some(n)) => {
                if let Some(s) = self.tool_scopes.get(n) {
                    return with(s);
                }
                if self.public_tools.contains(n) {
                    return Requirement::Public;
                }
                None
            }
            ("resources/read" | "resources/subscribe", Some(u)) => self.scopes_for_resource(u),
            ("prompts/get", Some(n)) => self.prompt_scopes.get(n).cloned(),
            _ => None,
        };
        if let Some(s) = named {
            return with(&s);
        }
        if let Some(s) = self.method_scopes.get(method) {
            return with(s);
        }
        let lazy_public = self.lazy
            && (LAZY_PUBLIC_METHODS.contains(&method) || method.starts_with("notifications/"));
        if lazy_public || self.public_methods.contains(method) {
            Requirement::Public
        } else {
            Requirement::Token(self.required.clone())
        }
    }
}

/// A resource URI in a form that every usual spelling of it shares, for matching
/// [`AccessPolicy::resource_scopes`] (issue 8 item 1): scheme and authority in lower case
/// (`file://localhost/`, and any loopback host by [the crate's one rule](crate::net), is
/// `file:///`), percent-encoded unreserved characters decoded and
/// other escapes in upper case, dot segments removed, and the query, fragment and a
/// trailing `/` dropped. It deliberately makes more URIs equal than a service may: matching
/// is for protecting, so a spelling that might reach a protected resource is protected.
fn normalise_uri(uri: &str) -> String {
    // Percent-decoding of unreserved characters first, so that an encoded `.`, `/`-free
    // segment or letter is seen as what it stands for.
    let bytes = uri.as_bytes();
    let mut decoded = String::with_capacity(uri.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            let c = char::from(u8::try_from(h * 16 + l).unwrap_or(0));
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                decoded.push(c);
            } else {
                decoded.push('%');
                decoded.push(char::from(bytes[i + 1]).to_ascii_uppercase());
                decoded.push(char::from(bytes[i + 2]).to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        // Multi-byte characters are copied whole.
        let ch = uri[i..].chars().next().unwrap_or('\u{fffd}');
        decoded.push(ch);
        i += ch.len_utf8();
    }
    let without = decoded.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match without.split_once(':') {
        Some((s, r)) if !s.is_empty() && !s.contains('/') => (s.to_ascii_lowercase(), r),
        _ => (String::new(), without),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(r) => {
            let end = r.find('/').unwrap_or(r.len());
            let mut a = r[..end].to_ascii_lowercase();
            // RFC 8089: `file://localhost/` is `file:///`; every loopback spelling
            // (`127.0.0.1`, `[::1]`, `localhost.`) is treated alike, to protect more.
            if scheme == "file" && crate::net::is_loopback_host(&a) {
                a.clear();
            }
            (Some(a), &r[end..])
        }
        None => (None, rest),
    };
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
            }
            s => segments.push(s),
        }
    }
    let mut path = segments.join("/");
    while path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    let mut out = scheme;
    out.push(':');
    if let Some(a) = authority {
        out.push_str("//");
        out.push_str(&a);
    }
    out.push_str(&path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 8 item 1 (review): every usual spelling of a protected URI matches it.
    #[test]
    fn uris_normalise_to_one_form() {
        for (a, b) in [
            ("file:///secret", "FILE:///secret"),
            ("file:///secret", "file:///%73ecret"),
            ("file:///secret", "file:///./secret"),
            ("file:///secret", "file:///x/../secret"),
            ("file:///secret", "file:///secret?x#y"),
            ("file:///secret", "file:///secret/"),
            ("file:///secret", "file://localhost/secret"),
            ("file:///secret", "file://LOCALHOST./secret"),
            ("file:///secret", "file://127.0.0.1/secret"),
            ("file:///secret", "file://[::1]/secret"),
            ("https://Example.COM/a%2fb", "https://example.com/a%2Fb"),
            ("ui://widget/a", "UI://WIDGET/a"),
            ("mem:a/./b", "mem:a/b"),
        ] {
            assert_eq!(normalise_uri(a), normalise_uri(b), "{a} {b}");
        }
        for (a, b) in [
            ("file:///secret", "file:///secretive"),
            ("file:///secret", "file://localhost.example.com/secret"),
            ("file:///secret", "file:///Secret"),
            ("file:///secret", "file:///secret/x"),
            ("https://example.com/a%2Fb", "https://example.com/a/b"),
            ("file:///s", "file:///%"),
        ] {
            assert_ne!(normalise_uri(a), normalise_uri(b), "{a} {b}");
        }
        // Odd input never panics.
        for odd in [
            "", "%", "%4", "%zz", ":", "//", "é%C3%A9", "a:%e9", "/../..",
        ] {
            let _ = normalise_uri(odd);
        }
    }
}
