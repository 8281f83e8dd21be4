//! Procedural macros for [`mcp-oauth`](https://docs.rs/mcp-oauth): declare next to the code
//! which scopes an MCP tool or an axum handler needs.
//!
//! - [`#[requires_scopes("a", …)]`](macro@requires_scopes) on an rmcp `#[tool]` method or an
//!   axum handler;
//! - [`#[public_tool]`](macro@public_tool) on an rmcp `#[tool]` method callable without a
//!   token;
//! - [`#[scoped_tools]`](macro@scoped_tools) on the `#[tool_router]` impl block, which
//!   collects both into `Self::tool_requirements()` for `AccessPolicy::tools`.
//!
//! Use them through `mcp_oauth` (feature `macros`, on by default), which re-exports them; the
//! expansions name `::mcp_oauth::__private`, so a crate that re-exports `mcp_oauth` under
//! another path passes `crate = "path::to::mcp_oauth"`.
//!
//! On an rmcp tool, `#[requires_scopes]` needs `mcp_oauth`'s `rmcp` feature, and so does a
//! tool parameter of type `Auth`. Without the feature, the first error names the fix:
//!
//! ```text
//! error[E0277]: enable the `rmcp` feature of mcp-oauth: an rmcp tool that uses `#[requires_scopes]` or takes `Auth` needs it
//!   --> src/server.rs:11:5
//!    |
//! 11 |     #[requires_scopes("files:read")]
//!    |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ needs the `rmcp` feature of mcp-oauth
//!    |
//!    = note: in Cargo.toml: mcp-oauth = { version = "0.1", features = ["rmcp"] }
//! ```
//!
//! It points at the `#[requires_scopes]` attribute, or, for `Auth`, at the parameter's type
//! when the impl block carries [`#[scoped_tools]`](macro@scoped_tools). rmcp's own errors
//! may follow it (its `#[tool_router]` finds no extractor for the parameter). An `Auth`
//! parameter in an impl block **without** `#[scoped_tools]` gets only rmcp's error, which
//! mcp-oauth cannot reword (it does not name `Auth`'s missing trait either); put
//! `#[scoped_tools]` on the impl so that the error names the fix.
//!
//! Set the environment variable `MCP_OAUTH_MACROS_DEBUG` while building to print every
//! expansion to stderr.
//!
//! The examples below are not compiled here (a proc-macro crate cannot depend on the crate
//! that re-exports it); runnable versions live in `mcp-oauth`'s `tests/macros_rmcp.rs`,
//! `tests/macros_axum.rs` and `tests/ui/pass/`.

use proc_macro::TokenStream;

mod args;
mod requires_scopes;
mod scoped_tools;
mod util;

/// Requires the caller's access token to hold every listed scope (with the configured scope
/// hierarchy: a token holding a broader scope satisfies a narrower one).
///
/// ```text
/// #[requires_scopes("files:read")]
/// #[requires_scopes("files:read", "files:write")]
/// #[requires_scopes("files:read", crate = "my_sdk::oauth")]   // when re-exported
/// ```
///
/// Each argument is a string literal holding one RFC 6749 scope token (printable ASCII other
/// than space, `"` and `\`). Empty lists, empty or invalid scopes, duplicates, anything that
/// is not a literal (constants, `concat!`) and unknown `key = value` arguments are compile
/// errors. Literals are required so [`#[scoped_tools]`](macro@scoped_tools) can read them.
///
/// # On an rmcp tool: place it **above** `#[tool]`
///
/// ```text
/// use mcp_oauth::{public_tool, requires_scopes, scoped_tools};
/// use rmcp::{ErrorData, model::CallToolResult, tool, tool_router};
///
/// #[scoped_tools]
/// #[tool_router(server_handler)]
/// impl Files {
///     #[requires_scopes("files:read")]
///     #[tool(description = "Read a file")]
///     async fn files_read(&self) -> Result<CallToolResult, ErrorData> {
///         Ok(CallToolResult::success(vec![]))
///     }
/// }
/// ```
///
/// Attributes expand outermost first, so `#[tool_router]` and `#[scoped_tools]` see both
/// attributes untouched, then `#[requires_scopes]` rewrites the `async fn`, and only then
/// does `#[tool]` turn it into a fn returning a boxed future. The method above becomes,
/// roughly:
///
/// ```text
/// #[doc(hidden)]
/// #[allow(dead_code)]
/// fn files_read_required_scopes() -> &'static [&'static str] {
///     // compiles only with mcp_oauth's `rmcp` feature (the error otherwise names it)
///     ::mcp_oauth::__private::require_rmcp_feature(::mcp_oauth::__private::RmcpTool);
///     &["files:read"]
/// }
///
/// #[tool(description = "Read a file")]
/// async fn files_read(
///     &self,
///     __mcp_oauth_parts: ::mcp_oauth::__private::Extension<::mcp_oauth::__private::http::request::Parts>,
/// ) -> Result<CallToolResult, ErrorData> {
///     if let Err(e) = ::mcp_oauth::__private::check_tool_scopes(
///         &__mcp_oauth_parts, &["files:read"],
///     ) {
///         return Err(::mcp_oauth::__private::tool_error(e)); // E::from(e)
///     }
///     Ok(CallToolResult::success(vec![]))
/// }
/// ```
///
/// The extra parameter is rmcp's `Extension<http::request::Parts>`: rmcp's streamable HTTP
/// server stores the HTTP request parts, including the `AuthContext` that `McpOAuthLayer`
/// put there, in every request's context. The check fails closed: no layer, no token, or a
/// missing scope each return an `rmcp::ErrorData` (`-32600`, or `-32603` when the layer is
/// not installed) whose message names the missing scopes. So the fn must return
/// `Result<_, E>` with `E: From<rmcp::ErrorData>`, spelled `Result<…>` (an alias is refused,
/// because the macro cannot see through it). This needs `mcp_oauth`'s `rmcp` feature;
/// without it, the error on the attribute says "enable the `rmcp` feature of mcp-oauth" (see
/// the [crate docs](crate)).
///
/// This is a **second line of defence**: a refusal inside the tool is an HTTP `200` carrying a
/// JSON-RPC error, which cannot make a client ask for more scopes. The first line is the
/// layer, fed with [`#[scoped_tools]`](macro@scoped_tools)' map, which answers
/// `403 insufficient_scope` before rmcp runs.
///
/// Below `#[tool]` the macro would see an already desugared fn and cannot add its check; it
/// says so: "place `#[requires_scopes]` above `#[tool]`".
///
/// # On an axum handler
///
/// On a free `async fn` without `#[tool]`, the macro adds a first parameter
/// `_: ::mcp_oauth::Scoped<Marker>`, with a hidden marker type implementing `ScopeList`, so a
/// caller lacking a scope gets `403` with a `WWW-Authenticate: Bearer
/// error="insufficient_scope", scope="…"` challenge before the body runs:
///
/// ```text
/// #[requires_scopes("files:write")]
/// async fn upload(body: String) -> &'static str { "stored" }
///
/// // expands to
/// #[doc(hidden)]
/// #[allow(non_camel_case_types)]
/// #[derive(Debug, Clone, Copy)]
/// struct __McpOAuthScopes_upload;
/// impl ::mcp_oauth::__private::ScopeList for __McpOAuthScopes_upload {
///     const SCOPES: &'static [&'static str] = &["files:write"];
/// }
/// async fn upload(
///     _: ::mcp_oauth::__private::Scoped<__McpOAuthScopes_upload>,
///     body: String,
/// ) -> &'static str { "stored" }
/// ```
///
/// The marker is a sibling item, so this form works on free functions (every usual axum
/// handler), not on associated functions inside an `impl` block. Take `auth: Auth` as well
/// if the body needs the caller.
#[proc_macro_attribute]
pub fn requires_scopes(args: TokenStream, item: TokenStream) -> TokenStream {
    util::expand_attr(
        "requires_scopes",
        args.into(),
        item.into(),
        requires_scopes::expand,
    )
    .into()
}

/// Marks an rmcp `#[tool]` method as callable **without a token**, for
/// [`#[scoped_tools]`](macro@scoped_tools) to collect as `ToolAccess::Public`.
///
/// ```text
/// #[public_tool]
/// #[tool(description = "Search public documents")]
/// async fn public_search(&self) -> Result<CallToolResult, ErrorData> { todo!() }
/// ```
///
/// It takes no arguments and leaves the method unchanged; it may sit above or below
/// `#[tool]`. It cannot be combined with [`#[requires_scopes]`](macro@requires_scopes) on
/// the same method. The tool is public only when the layer's `AccessPolicy` is built with
/// `.tools(Self::tool_requirements())` (and `.lazy()`, so that clients can
/// connect and list tools without a token); inside the tool, take `Option<Auth>`-style access
/// through `Auth::from_extensions` if signed-in callers get more.
#[proc_macro_attribute]
pub fn public_tool(args: TokenStream, item: TokenStream) -> TokenStream {
    util::expand_attr(
        "public_tool",
        args.into(),
        item.into(),
        scoped_tools::expand_public_tool,
    )
    .into()
}

/// Collects the declared access of every `#[tool]` method of an impl block into
/// `Self::tool_requirements()`, so the layer's policy cannot drift from the code.
///
/// Place it on the impl block that carries rmcp's `#[tool_router]` (above it is the usual
/// place; it reads the methods' attributes before any of them expands, so the order of
/// `#[requires_scopes]` and `#[tool]` does not matter to it):
///
/// ```text
/// use mcp_oauth::resource::AccessPolicy;
/// use mcp_oauth::{public_tool, requires_scopes, scoped_tools};
///
/// #[scoped_tools]
/// #[tool_router(server_handler)]
/// impl Files {
///     #[requires_scopes("files:read")]
///     #[tool]
///     async fn files_read(&self) -> Result<CallToolResult, ErrorData> { todo!() }
///
///     #[public_tool]
///     #[tool(name = "search")]
///     async fn public_search(&self) -> Result<CallToolResult, ErrorData> { todo!() }
///
///     #[tool]
///     async fn whoami(&self) -> Result<CallToolResult, ErrorData> { todo!() }
/// }
///
/// let policy = AccessPolicy::new()
///     .lazy()
///     .tools(Files::tool_requirements());
/// ```
///
/// Each declared tool also carries its `securitySchemes` **in its own definition**: the
/// macro adds `meta = …` to the tool's `#[tool(…)]` (before `#[tool]` expands), so the rmcp
/// `Tool` it builds has `_meta.securitySchemes` set to `[{"type":"noauth"}]` for a
/// `#[public_tool]`, or `[{"type":"oauth2","scopes":[…]}]` (sorted, unique) for
/// `#[requires_scopes(…)]`. A `meta = …` the tool already has is kept; the schemes are added
/// to that object. rmcp's `tools/list` then already shows what the layer enforces, and the
/// layer does not rebuild the response: it only splices in the top-level `securitySchemes`
/// copy (rmcp's `Tool` type has no field for it) and fills in tools that declared nothing.
///
/// Apart from that `meta`, the impl block is left unchanged and followed by a second one:
///
/// ```text
/// impl Files {
///     #[must_use]
///     pub fn tool_requirements() -> &'static [::mcp_oauth::resource::ToolRequirement] {
///         const TOOLS: &[ToolRequirement] = &[
///             ToolRequirement { name: "files_read", access: ToolAccess::Scopes(&["files:read"]) },
///             ToolRequirement { name: "search", access: ToolAccess::Public },
///         ];
///         TOOLS
///     }
/// }
/// ```
///
/// - A method counts as a tool when it carries an attribute whose path ends in `tool`
///   (`#[tool]`, `#[rmcp::tool]`), the rule `#[tool_router]` uses.
/// - The name is `#[tool(name = "…")]` if given, else the fn name, as rmcp names it.
/// - `#[requires_scopes(...)]` → `ToolAccess::Scopes`, `#[public_tool]` → `ToolAccess::Public`.
///   A tool with neither is not listed: it needs a token with the policy's base scopes (and
///   its `securitySchemes` come from the layer's `tools/list` fallback, since only the
///   policy knows those scopes).
/// - The schemes written into a definition match the layer only when the policy is built
///   from `tool_requirements()` without base scopes for those tools; where they differ (base
///   scopes, a hand-written policy), the layer shows its own: `tools/list` always shows what
///   `tools/call` enforces.
/// - The only argument is `crate = "path::to::mcp_oauth"`. An impl block without any
///   `#[tool]` method is an error (the attribute is probably on the wrong block).
/// - One `#[scoped_tools]` per type: a second would define `tool_requirements` twice.
/// - A tool parameter whose type is mcp-oauth's `Auth` (a path ending in `Auth`; the
///   expansion checks the type itself, so a type of your own named `Auth` is left alone)
///   needs `mcp_oauth`'s `rmcp` feature. The macro adds a hidden fn at the top of the block
///   that does not compile without it, with an error on the parameter that says "enable
///   the `rmcp` feature of mcp-oauth" and comes before rmcp's own (see the
///   [crate docs](crate)).
#[proc_macro_attribute]
pub fn scoped_tools(args: TokenStream, item: TokenStream) -> TokenStream {
    util::expand_attr(
        "scoped_tools",
        args.into(),
        item.into(),
        scoped_tools::expand,
    )
    .into()
}
