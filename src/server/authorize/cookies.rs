//! The browser-binding cookie: the id of the request parked while the user signs in and
//! decides. `__Host-mcp-oauth-req` (`Secure`) on an `https` issuer, `mcp-oauth-req` on a
//! development `http` issuer; `HttpOnly; SameSite=Lax; Path=/` either way.

use http::header::COOKIE;

use super::AsContext;

fn cookie_name(ctx: &AsContext) -> &'static str {
    if ctx.secure_cookies() {
        "__Host-mcp-oauth-req"
    } else {
        "mcp-oauth-req"
    }
}

/// The `Set-Cookie` value binding this browser to `request_id`.
pub(super) fn set_cookie(ctx: &AsContext, request_id: &str) -> String {
    let max_age = ctx.server.lifetimes.pending.as_secs();
    let secure = if ctx.secure_cookies() { "; Secure" } else { "" };
    format!(
        "{}={request_id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(ctx)
    )
}

/// The `Set-Cookie` value that removes the binding.
pub(super) fn clear_cookie(ctx: &AsContext) -> String {
    let secure = if ctx.secure_cookies() { "; Secure" } else { "" };
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
        cookie_name(ctx)
    )
}

/// Whether the request carries the binding cookie for `request_id` (compared in constant
/// time).
pub(super) fn cookie_matches(ctx: &AsContext, headers: &http::HeaderMap, request_id: &str) -> bool {
    let name = cookie_name(ctx);
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| {
            k == name && {
                use subtle::ConstantTimeEq as _;
                bool::from(v.as_bytes().ct_eq(request_id.as_bytes()))
            }
        })
}
