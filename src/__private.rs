//! Support code for the expansions of `mcp-oauth-macros` (`#[requires_scopes]`,
//! `#[public_tool]`, `#[scoped_tools]`). Not public API: anything here may change in any
//! release.

pub use http;

pub use crate::resource::{ScopeList, Scoped, ToolAccess, ToolRequirement};

#[cfg(feature = "rmcp")]
pub use rmcp::ErrorData;
#[cfg(feature = "rmcp")]
pub use rmcp::handler::server::common::Extension;

#[cfg(not(feature = "rmcp"))]
pub use self::no_rmcp::{EnableTheRmcpFeatureOfMcpOauth as Extension, check_tool_scopes};

/// The in-tool check `#[requires_scopes]` adds to an rmcp tool: the caller the layer put in
/// the request's extensions must hold every scope of `needed` (with the configured scope
/// hierarchy).
///
/// Fails closed, with an error whose message and `data` name the required and the missing
/// scopes (never token material):
/// - no `McpOAuthLayer` in front of the service: `-32603` (internal error, a server bug);
/// - no token (the call was let through as public): `-32600`, `data.error = "unauthenticated"`;
/// - missing scopes: `-32600`, `data.error = "insufficient_scope"`.
///
/// # Errors
/// As above.
#[cfg(feature = "rmcp")]
pub fn check_tool_scopes(extensions: &http::Extensions, needed: &[&str]) -> Result<(), ErrorData> {
    use crate::resource::{Auth, AuthExtractError};

    let required = needed.join(" ");
    let auth = match Auth::from_extensions(extensions) {
        Ok(auth) => auth,
        Err(AuthExtractError::LayerMissing) => {
            return Err(ErrorData::internal_error(
                "this tool requires scopes, but `McpOAuthLayer` is not installed in front of the \
                 MCP service",
                None,
            ));
        }
        Err(_) => {
            return Err(ErrorData::invalid_request(
                format!(
                    "this tool needs an access token with scope `{required}`; the call carried no token"
                ),
                Some(serde_json::json!({
                    "error": "unauthenticated",
                    "required_scope": required,
                    "missing_scope": required,
                })),
            ));
        }
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|s| !auth.has_scope(s))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let missing = missing.join(" ");
    tracing::debug!(
        target: "mcp_oauth::rejection",
        required = %required,
        missing = %missing,
        "rmcp tool refused: insufficient scope"
    );
    Err(ErrorData::invalid_request(
        format!(
            "insufficient scope: this tool needs `{required}`; the access token lacks `{missing}`"
        ),
        Some(serde_json::json!({
            "error": "insufficient_scope",
            "required_scope": required,
            "missing_scope": missing,
        })),
    ))
}

/// What `#[scoped_tools]` writes into a declared tool's `#[tool(meta = …)]`: the tool's
/// `_meta` object (the one the code gave, if any, its other keys kept) with
/// `securitySchemes` set for `access`, in the shape the layer would add to `tools/list`
/// (`[{"type":"noauth"}]`, or `[{"type":"oauth2","scopes":[…]}]` with the scopes sorted and
/// unique, as the layer lists them).
///
/// Plain `serde_json` types, so the expansion works whether or not `mcp_oauth`'s `rmcp`
/// feature is on; the expansion wraps the result in `rmcp::model::MetaObject`.
#[must_use]
pub fn with_security_schemes(
    meta: Option<serde_json::Map<String, serde_json::Value>>,
    access: ToolAccess,
) -> serde_json::Map<String, serde_json::Value> {
    let mut meta = meta.unwrap_or_default();
    meta.insert(
        "securitySchemes".to_owned(),
        crate::resource::shape::schemes_for_access(access),
    );
    meta
}

#[cfg(not(feature = "rmcp"))]
mod no_rmcp {
    /// Stands in for rmcp's `Extension` when `mcp_oauth`'s `rmcp` feature is off, so that
    /// `#[requires_scopes]` on an rmcp tool fails with an error naming the fix.
    #[derive(Debug, Clone)]
    pub struct EnableTheRmcpFeatureOfMcpOauth<T>(pub T);

    /// Stands in for the rmcp check when the `rmcp` feature is off.
    ///
    /// # Errors
    /// Always: `#[requires_scopes]` on an rmcp tool needs the `rmcp` feature.
    pub fn check_tool_scopes(
        _extensions: &http::Extensions,
        _needed: &[&str],
    ) -> Result<(), EnableTheRmcpFeatureOfMcpOauth<()>> {
        Err(EnableTheRmcpFeatureOfMcpOauth(()))
    }
}
