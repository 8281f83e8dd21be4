//! Extractors: [`Auth`] for the caller's [`AuthContext`], [`Scoped`] to require scopes.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use super::challenge::AuthRejection;
use super::layer::LayerState;
use crate::context::AuthContext;
use crate::scope::{Scope, ScopeSet};

/// The authenticated caller, put there by [`McpOAuthLayer`](crate::McpOAuthLayer).
///
/// Use `Auth` in handlers that always need a caller and `Option<Auth>` in handlers that also
/// serve anonymous callers (public methods under lazy authentication).
///
/// ```
/// use mcp_oauth::Auth;
///
/// async fn whoami(auth: Auth) -> String {
///     format!("{} via {:?}", auth.subject(), auth.client_id())
/// }
/// async fn hello(auth: Option<Auth>) -> String {
///     match auth {
///         Some(a) => format!("hello {}", a.subject()),
///         None => "hello stranger".to_owned(),
///     }
/// }
/// # let _ = axum::Router::<()>::new().route("/a", axum::routing::get(whoami)).route("/b", axum::routing::get(hello));
/// ```
///
/// # In an rmcp tool
///
/// With the `rmcp` feature, an rmcp `#[tool]` method takes `auth: Auth` as a parameter (rmcp's
/// `FromContextPart`). Without the feature, `Auth` is no rmcp extractor, and the error comes
/// from rmcp's `#[tool_router]`, in words mcp-oauth cannot change ("the trait bound
/// `(Tool, fn(&Srv, Auth) -> … {…::whoami}): IntoToolRoute<…, _>` is not satisfied"). With
/// `#[scoped_tools]` (feature `macros`) on the impl block, the first error is instead on the
/// parameter and names the fix:
///
/// ```text
/// error[E0277]: enable the `rmcp` feature of mcp-oauth: an rmcp tool that uses `#[requires_scopes]` or takes `Auth` needs it
///    = note: in Cargo.toml: mcp-oauth = { version = "0.1", features = ["rmcp"] }
/// ```
#[derive(Debug, Clone)]
pub struct Auth {
    ctx: AuthContext,
    state: Option<LayerState>,
}

impl std::fmt::Debug for LayerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerState")
    }
}

impl Deref for Auth {
    type Target = AuthContext;
    fn deref(&self) -> &AuthContext {
        &self.ctx
    }
}

impl Auth {
    /// Reads the caller from request extensions (`http::Extensions`), as the extractors do.
    ///
    /// # Errors
    /// [`AuthExtractError`] when the layer is missing or the request carried no token.
    pub fn from_extensions(ext: &http::Extensions) -> Result<Self, AuthExtractError> {
        let state = ext.get::<LayerState>().cloned();
        match (ext.get::<AuthContext>(), &state) {
            (Some(ctx), _) => Ok(Self {
                ctx: ctx.clone(),
                state,
            }),
            (None, Some(_)) => Err(AuthExtractError::Unauthenticated),
            (None, None) => Err(AuthExtractError::LayerMissing),
        }
    }

    /// The context itself.
    #[must_use]
    pub fn context(&self) -> &AuthContext {
        &self.ctx
    }

    /// Takes the context out.
    #[must_use]
    pub fn into_context(self) -> AuthContext {
        self.ctx
    }

    /// Whether the caller holds `scope`, honouring the configured scope hierarchy.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.state {
            Some(s) => s.0.hierarchy.satisfies_one(self.ctx.scopes(), scope),
            None => self.ctx.has_exact_scope(scope),
        }
    }

    /// Checks that the caller holds every scope in `needed` (with the hierarchy).
    ///
    /// # Errors
    /// [`AuthExtractError::InsufficientScope`] naming what is needed.
    pub fn require(&self, needed: &ScopeSet) -> Result<(), AuthExtractError> {
        if needed.iter().all(|s| self.has_scope(s.as_str())) {
            Ok(())
        } else {
            Err(AuthExtractError::InsufficientScope {
                needed: needed.clone(),
                granted: self.ctx.scopes().clone(),
                metadata: self.state.as_ref().map(|s| s.0.metadata_urls[0].clone()),
            })
        }
    }
}

/// Why [`Auth`] or [`Scoped`] could not be extracted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthExtractError {
    /// The route is not behind the layer: a server bug, answered with `500`.
    #[error(
        "`McpOAuthLayer` is not installed on this route: add `.layer(McpOAuthLayer::new(cfg))` to it, or extract `Option<Auth>`"
    )]
    LayerMissing,
    /// The request was let through without a token (a public method) but the handler needs
    /// a caller: `401`.
    #[error(
        "this handler needs an authenticated caller, but the request carried no token (it was let through as public)"
    )]
    Unauthenticated,
    /// The caller lacks scopes: `403` with an `insufficient_scope` challenge.
    #[error("the access token lacks scope: needs {needed}")]
    InsufficientScope {
        /// Needed scopes.
        needed: ScopeSet,
        /// Granted scopes.
        granted: ScopeSet,
        /// The `resource_metadata` URL for the challenge.
        metadata: Option<String>,
    },
}

impl AuthExtractError {
    /// The status the rejection answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for AuthExtractError {
    fn into_response(self) -> Response {
        tracing::debug!(target: "mcp_oauth::rejection", error = %self, "extractor rejected the request");
        match self {
            Self::LayerMissing => (self.status(), self.to_string()).into_response(),
            Self::Unauthenticated => AuthRejection::MissingToken {
                scope: ScopeSet::new(),
            }
            .into_response(""),
            Self::InsufficientScope {
                needed,
                granted,
                metadata,
            } => AuthRejection::InsufficientScope { needed, granted }
                .into_response(metadata.as_deref().unwrap_or_default()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = AuthExtractError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_extensions(&parts.extensions)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Auth {
    type Rejection = AuthExtractError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match Self::from_extensions(&parts.extensions) {
            Ok(a) => Ok(Some(a)),
            Err(AuthExtractError::Unauthenticated | AuthExtractError::LayerMissing) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A list of scopes known at compile time, for [`Scoped`]. Declare one with
/// [`scopes!`](crate::scopes).
pub trait ScopeList: Send + Sync + 'static {
    /// The scopes.
    const SCOPES: &'static [&'static str];
}

/// Declares a [`ScopeList`] type: `scopes!(FilesWrite = "files:write");`
#[macro_export]
macro_rules! scopes {
    ($(#[$m:meta])* $vis:vis $name:ident = $($scope:literal),+ $(,)?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::resource::ScopeList for $name {
            const SCOPES: &'static [&'static str] = &[$($scope),+];
        }
    };
}

/// The caller, who must hold every scope of `L` (with the scope hierarchy); otherwise `403`
/// with an `insufficient_scope` challenge.
///
/// ```
/// use mcp_oauth::{Scoped, scopes};
///
/// scopes!(FilesWrite = "files:write");
///
/// async fn write(auth: Scoped<FilesWrite>) -> String {
///     format!("{} may write", auth.subject())
/// }
/// # let _ = axum::Router::<()>::new().route("/w", axum::routing::post(write));
/// ```
#[derive(Debug, Clone)]
pub struct Scoped<L: ScopeList> {
    auth: Auth,
    _scopes: PhantomData<L>,
}

impl<L: ScopeList> Deref for Scoped<L> {
    type Target = Auth;
    fn deref(&self) -> &Auth {
        &self.auth
    }
}

impl<L: ScopeList> Scoped<L> {
    /// The caller.
    #[must_use]
    pub fn into_auth(self) -> Auth {
        self.auth
    }
}

impl<S: Send + Sync, L: ScopeList> FromRequestParts<S> for Scoped<L> {
    type Rejection = AuthExtractError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_extensions(&parts.extensions)?;
        let needed: ScopeSet = L::SCOPES
            .iter()
            .filter_map(|s| Scope::new(*s).ok())
            .collect();
        auth.require(&needed)?;
        Ok(Self {
            auth,
            _scopes: PhantomData,
        })
    }
}

#[cfg(feature = "rmcp")]
mod rmcp_glue {
    use rmcp::handler::server::common::{AsRequestContext, FromContextPart};

    use super::Auth;

    /// With the `rmcp` feature, rmcp tool handlers take `auth: Auth` directly. A call that
    /// reached the tool without a token (a public tool) fails with an `invalid_params`
    /// error; take `Extension<http::request::Parts>` and `Auth::from_extensions` to serve
    /// both.
    impl<C: AsRequestContext> FromContextPart<C> for Auth {
        fn from_context_part(context: &mut C) -> Result<Self, rmcp::ErrorData> {
            let parts = context
                .as_request_context()
                .extensions
                .get::<http::request::Parts>()
                .ok_or_else(|| {
                    rmcp::ErrorData::internal_error(
                        "no HTTP request parts: is the tool served over streamable HTTP?",
                        None,
                    )
                })?;
            Self::from_extensions(&parts.extensions)
                .map_err(|e| rmcp::ErrorData::invalid_request(e.to_string(), None))
        }
    }
}
