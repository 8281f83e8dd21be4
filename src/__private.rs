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
pub use self::no_rmcp::{
    EnableTheRmcpFeatureOfMcpOauth as Extension, Never, check_tool_scopes, tool_error,
};

/// What the macros require of mcp-oauth when they expand on an rmcp tool: the `rmcp`
/// feature. Implemented for [`RmcpTool`] and [`AuthParam`] only when the feature is on, so
/// without it `#[requires_scopes]` on an rmcp tool, and a tool parameter of type `Auth` in a
/// `#[scoped_tools]` impl, fail with this message, pointing at the attribute or the
/// parameter.
#[diagnostic::on_unimplemented(
    message = "enable the `rmcp` feature of mcp-oauth: an rmcp tool that uses `#[requires_scopes]` or takes `Auth` needs it",
    label = "needs the `rmcp` feature of mcp-oauth",
    note = "in Cargo.toml: mcp-oauth = {{ version = \"0.1\", features = [\"rmcp\"] }}"
)]
pub trait RmcpFeatureEnabled {}

/// Stands for `#[requires_scopes]` on an rmcp tool in [`require_rmcp_feature`].
#[derive(Debug, Clone, Copy)]
pub struct RmcpTool;

/// Stands for a tool parameter of type [`Auth`](crate::Auth) in [`require_rmcp_feature`].
#[derive(Debug, Clone, Copy)]
pub struct AuthParam;

/// Stands for a tool parameter of any other type (which needs no feature of mcp-oauth).
#[derive(Debug, Clone, Copy)]
pub struct OtherParam;

#[cfg(feature = "rmcp")]
impl RmcpFeatureEnabled for RmcpTool {}
#[cfg(feature = "rmcp")]
impl RmcpFeatureEnabled for AuthParam {}
impl RmcpFeatureEnabled for OtherParam {}

/// The check the expansions emit: compiles only when `use_` needs no feature or the `rmcp`
/// feature is on. Does nothing at run time.
#[inline(always)]
pub fn require_rmcp_feature<T: RmcpFeatureEnabled>(use_: T) {
    let _ = use_;
}

/// Tells apart, by the type alone, a tool parameter of type [`Auth`](crate::Auth) from any
/// other (a user's own `Auth` included): `(&ParamProbe::<T>::new()).use_()` is
/// [`AuthParam`] for `T = Auth` (the impl on `ParamProbe<Auth>` takes `&self` and wins
/// method resolution) and [`OtherParam`] otherwise (the impl on `&ParamProbe<T>` needs one
/// more autoref).
#[derive(Debug)]
pub struct ParamProbe<T>(std::marker::PhantomData<fn() -> T>);

impl<T> ParamProbe<T> {
    /// A probe for `T`.
    #[must_use]
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for ParamProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// [`ParamProbe`] of [`Auth`](crate::Auth): an [`AuthParam`].
pub trait ProbeAuth {
    /// [`AuthParam`].
    fn use_(&self) -> AuthParam {
        AuthParam
    }
}
impl ProbeAuth for ParamProbe<crate::Auth> {}

/// [`ParamProbe`] of any other type: an [`OtherParam`].
pub trait ProbeOther {
    /// [`OtherParam`].
    fn use_(&self) -> OtherParam {
        OtherParam
    }
}
impl<T> ProbeOther for &ParamProbe<T> {}

/// The in-tool check `#[requires_scopes]` adds to an rmcp tool: the caller the layer put in
/// the extensions of the request's HTTP parts must hold every scope of `needed` (with the configured scope
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
pub fn check_tool_scopes(
    parts: &Extension<http::request::Parts>,
    needed: &[&str],
) -> Result<(), ErrorData> {
    use crate::resource::{Auth, AuthExtractError};

    let extensions = &parts.0.extensions;

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

/// Turns the error of [`check_tool_scopes`] into the tool's error type: `E::from`.
#[cfg(feature = "rmcp")]
#[inline]
pub fn tool_error<E: From<ErrorData>>(error: ErrorData) -> E {
    E::from(error)
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
    /// A type without values: what the stand-ins below hold and return.
    #[derive(Debug, Clone, Copy)]
    pub enum Never {}

    /// Stands in for rmcp's `Extension` when `mcp_oauth`'s `rmcp` feature is off. It has no
    /// values, so the stand-in check below cannot run, let alone let a call through; the
    /// expansion still type-checks, so the only error is the one naming the fix
    /// ([`RmcpFeatureEnabled`](super::RmcpFeatureEnabled)), plus rmcp's own when
    /// `#[tool_router]` looks for its extractor.
    #[derive(Debug, Clone, Copy)]
    pub struct EnableTheRmcpFeatureOfMcpOauth<T>(pub Never, pub std::marker::PhantomData<T>);

    /// Stands in for the rmcp check when the `rmcp` feature is off; cannot be called, as
    /// `parts` has no values.
    ///
    /// # Errors
    /// Never returns.
    pub fn check_tool_scopes(
        parts: &EnableTheRmcpFeatureOfMcpOauth<http::request::Parts>,
        _needed: &[&str],
    ) -> Result<(), Never> {
        let never: Never = parts.0;
        match never {}
    }

    /// Stands in for the conversion of the check's error; cannot be called.
    pub fn tool_error<E>(error: Never) -> E {
        match error {}
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthParam, OtherParam, ParamProbe, ProbeAuth as _, ProbeOther as _};

    /// The probe tells mcp-oauth's `Auth` from any other type, a user's own `Auth` included,
    /// with or without the `rmcp` feature (which only decides whether `AuthParam` passes).
    #[test]
    // The borrow is the point: the same expression as the expansion's, so that both impls
    // are candidates.
    #[allow(clippy::needless_borrow)]
    fn param_probe_tells_auth_apart() {
        struct Auth;
        let _ = Auth;
        let ours: AuthParam = (&ParamProbe::<crate::Auth>::new()).use_();
        let theirs: OtherParam = (&ParamProbe::<Auth>::new()).use_();
        let other: OtherParam = (&ParamProbe::<Option<crate::Auth>>::new()).use_();
        let _ = (ours, theirs, other);
        super::require_rmcp_feature(other);
        #[cfg(feature = "rmcp")]
        {
            super::require_rmcp_feature(ours);
            super::require_rmcp_feature(super::RmcpTool);
        }
    }

    /// The note of the error naming the `rmcp` feature gives this crate's version, as a
    /// dependency would spell it.
    #[test]
    fn rmcp_feature_note_names_this_version() {
        let major = env!("CARGO_PKG_VERSION_MAJOR");
        let minor = env!("CARGO_PKG_VERSION_MINOR");
        let req = if major == "0" {
            format!("{major}.{minor}")
        } else {
            major.to_owned()
        };
        let note = format!(
            r#"note = "in Cargo.toml: mcp-oauth = {{{{ version = \"{req}\", features = [\"rmcp\"] }}}}""#
        );
        assert!(
            include_str!("__private.rs").contains(&note),
            "the note should read {note}"
        );
    }
}
