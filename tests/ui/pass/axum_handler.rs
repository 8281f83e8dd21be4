//! `#[requires_scopes]` on axum handlers: a `Scoped<Marker>` first parameter, the handler
//! still an axum `Handler`, the marker recording the scopes.
use axum::Router;
use axum::routing::{get, post};
use mcp_oauth::resource::ScopeList;
use mcp_oauth::{Auth, requires_scopes};

#[requires_scopes("files:write")]
async fn upload(body: String) -> String {
    body
}

#[requires_scopes("files:read", "admin")]
pub async fn listing(auth: Auth) -> String {
    auth.subject().to_owned()
}

#[requires_scopes("files:read")]
pub(crate) async fn no_args() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new()
        .route("/upload", post(upload))
        .route("/list", get(listing))
        .route("/plain", get(no_args));
    assert_eq!(__McpOAuthScopes_upload::SCOPES, ["files:write"]);
    assert_eq!(__McpOAuthScopes_listing::SCOPES, ["files:read", "admin"]);
}
