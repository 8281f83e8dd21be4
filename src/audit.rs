//! Audit events: what happened to whom, as `tracing` events with one stable name and one
//! stable set of fields each, so operators can alert on them and follow a sign-in from
//! `/authorize` to the first MCP call made with the token it produced.
//!
//! Every event is emitted at `INFO` level (`WARN` for the two security events) on the target
//! [`TARGET`] (`mcp_oauth::audit`) with a field `event` holding the event's name (one of
//! [`event`]) and the fields below. Filter them with
//! `RUST_LOG=mcp_oauth::audit=info` (or a `tracing_subscriber::filter::Targets` on
//! [`TARGET`]); render them as JSON with `tracing_subscriber::fmt().json()`.
//!
//! # The correlation id (`fid`)
//!
//! Each authorization request gets a random flow id (16 base64url characters, not a secret)
//! when `/authorize` accepts it. It is parked with the pending request, kept with the
//! authorization code and the refresh family, and carried in every access token of that
//! grant as the private claim [`FLOW_ID_CLAIM`] (`"fid"`). The layer reads it from the
//! token the first time it verifies that token (a miss of its verified-token cache, so
//! once per token and process) and logs it with [`event::TOKEN_ACCEPTED`]. Events that
//! belong to no flow (a registration, a key rotation, a sweep, a refusal before a token was
//! verified) carry no `fid`; where the flow is unknown the field is `-`.
//! A claim named `fid` from the authenticator is replaced by the flow id. When the login
//! happens elsewhere (an upstream identity provider, or a host login page that sends the
//! browser back to `/authorize`), the return to `/authorize` starts a new flow id: the two
//! `authorization.requested` events share the `client_id`.
//!
//! # No secrets
//!
//! No event (and no other log line of the crate, at any level) carries an authorization
//! code, an access or refresh token, a PKCE verifier, a client secret, a password or a CSRF
//! token, in plain or encoded form; `tests/audit_events.rs` runs a whole flow at `TRACE` and
//! searches every line for each of them. Token ids (`jti`), family ids, client ids and
//! subjects are identifiers, not credentials, and are logged.
//!
//! # The events
//!
//! | `event` | level | fields | when |
//! |---|---|---|---|
//! | `client.registered` | info | `client_id`, `auth_method`, `source` | a client registered dynamically (RFC 7591) |
//! | `client.reaped` | info | `reason` (`idle` \| `unused`), `count` | the upkeep sweep removed clients |
//! | `authorization.requested` | info | `fid`, `client_id`, `scope`, `resource` | `/authorize` accepted a request (client, redirect URI, PKCE, resource valid) |
//! | `authorization.granted` | info | `fid`, `client_id`, `subject`, `scope`, `resource` | a code was issued |
//! | `authorization.denied` | info | `fid`, `client_id`, `error` | the request ended in an OAuth error for a known client (`access_denied` when the user denied, `invalid_scope`, `consent_required`, `login_required`, `invalid_request`, …) |
//! | `login.failed` | info | `fid`, `client_id`, `reason` (`bad_credentials` \| `throttled`) | the login form was refused (the account name is not logged) |
//! | `token.issued` | info | `fid`, `client_id`, `subject`, `family_id`, `jti`, `scope` | a code was exchanged for tokens |
//! | `refresh.rotated` | info | `fid`, `client_id`, `family_id`, `jti`, `grace` | a refresh token was used (`grace=true`: a concurrent duplicate got the same successor) |
//! | `refresh.reuse_detected` | warn | `fid`, `client_id`, `family_id` | a rotated-out refresh token came back: the family is revoked |
//! | `code.replay_detected` | warn | `fid`, `client_id`, `family_id`, `revoked` | a spent code came back (`revoked=true`: by its own client with its verifier, so the family is revoked) |
//! | `token.revoked` | info | `fid`, `client_id`, `token_type`, `family_id` | `/revoke` revoked a token (`family_id` is `-` for an access token outside any family) |
//! | `resource.token_accepted` | info | `fid`, `client_id`, `subject`, `jti` | the layer verified a token for the first time (once per token and process with the verified-token cache, the default; at every verification without it) |
//! | `resource.refused` | info (`missing_token`: debug) | `reason`, `status` | the layer refused a request (`reason`: `missing_token`, `invalid_token`, `insufficient_scope`, `origin_not_allowed`, …) |
//! | `key.rotated` | info | `kid`, `previous_kid` | this instance rotated the signing key |
//!
//! The same table is in `docs/audit-events.md`; [`EVENTS`] lists it for programs (a test
//! keeps the three in step). With the feature `metrics` every event also counts
//! `mcp_oauth_audit_events_total{event=…}`.

/// The `tracing` target of every audit event.
pub const TARGET: &str = "mcp_oauth::audit";

/// The private JWT claim (and the key in the stored grant's claims) that carries the flow id.
pub const FLOW_ID_CLAIM: &str = "fid";

/// The event names (the value of the `event` field).
pub mod event {
    /// A client registered dynamically.
    pub const CLIENT_REGISTERED: &str = "client.registered";
    /// The upkeep sweep removed clients.
    pub const CLIENT_REAPED: &str = "client.reaped";
    /// `/authorize` accepted a request.
    pub const AUTHORIZATION_REQUESTED: &str = "authorization.requested";
    /// A code was issued.
    pub const AUTHORIZATION_GRANTED: &str = "authorization.granted";
    /// The request ended in an OAuth error for a known client.
    pub const AUTHORIZATION_DENIED: &str = "authorization.denied";
    /// The login form was refused.
    pub const LOGIN_FAILED: &str = "login.failed";
    /// A code was exchanged for tokens.
    pub const TOKEN_ISSUED: &str = "token.issued";
    /// A refresh token was rotated.
    pub const REFRESH_ROTATED: &str = "refresh.rotated";
    /// A rotated-out refresh token came back; its family is revoked.
    pub const REFRESH_REUSE_DETECTED: &str = "refresh.reuse_detected";
    /// A spent authorization code came back.
    pub const CODE_REPLAY_DETECTED: &str = "code.replay_detected";
    /// `/revoke` revoked a token.
    pub const TOKEN_REVOKED: &str = "token.revoked";
    /// The layer verified a token for the first time.
    pub const TOKEN_ACCEPTED: &str = "resource.token_accepted";
    /// The layer refused a request.
    pub const RESOURCE_REFUSED: &str = "resource.refused";
    /// This instance rotated the signing key.
    pub const KEY_ROTATED: &str = "key.rotated";
}

/// Every event with its fields (besides `event`), in the order of the table above.
pub const EVENTS: &[(&str, &[&str])] = &[
    (
        event::CLIENT_REGISTERED,
        &["client_id", "auth_method", "source"],
    ),
    (event::CLIENT_REAPED, &["reason", "count"]),
    (
        event::AUTHORIZATION_REQUESTED,
        &["fid", "client_id", "scope", "resource"],
    ),
    (
        event::AUTHORIZATION_GRANTED,
        &["fid", "client_id", "subject", "scope", "resource"],
    ),
    (event::AUTHORIZATION_DENIED, &["fid", "client_id", "error"]),
    (event::LOGIN_FAILED, &["fid", "client_id", "reason"]),
    (
        event::TOKEN_ISSUED,
        &["fid", "client_id", "subject", "family_id", "jti", "scope"],
    ),
    (
        event::REFRESH_ROTATED,
        &["fid", "client_id", "family_id", "jti", "grace"],
    ),
    (
        event::REFRESH_REUSE_DETECTED,
        &["fid", "client_id", "family_id"],
    ),
    (
        event::CODE_REPLAY_DETECTED,
        &["fid", "client_id", "family_id", "revoked"],
    ),
    (
        event::TOKEN_REVOKED,
        &["fid", "client_id", "token_type", "family_id"],
    ),
    (
        event::TOKEN_ACCEPTED,
        &["fid", "client_id", "subject", "jti"],
    ),
    (event::RESOURCE_REFUSED, &["reason", "status"]),
    (event::KEY_ROTATED, &["kid", "previous_kid"]),
];

/// What a missing field prints.
const NONE: &str = "-";

/// The flow id kept in a grant's claims, or `-`.
#[cfg(feature = "server")]
pub(crate) fn fid_of(claims: &serde_json::Map<String, serde_json::Value>) -> &str {
    claims
        .get(FLOW_ID_CLAIM)
        .and_then(serde_json::Value::as_str)
        .unwrap_or(NONE)
}

#[inline]
fn counted(name: &'static str) {
    #[cfg(feature = "metrics")]
    crate::metrics::audit_event(name);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

#[cfg(feature = "server")]
pub(crate) fn client_registered(client_id: &str, auth_method: &str, source: &str) {
    counted(event::CLIENT_REGISTERED);
    tracing::info!(target: TARGET, event = event::CLIENT_REGISTERED, client_id, auth_method, source);
}

#[cfg(feature = "server")]
pub(crate) fn client_reaped(reason: &'static str, count: u64) {
    counted(event::CLIENT_REAPED);
    tracing::info!(target: TARGET, event = event::CLIENT_REAPED, reason, count);
}

#[cfg(feature = "server")]
pub(crate) fn authorization_requested(
    fid: &str,
    client_id: &str,
    scope: &dyn std::fmt::Display,
    resource: &str,
) {
    counted(event::AUTHORIZATION_REQUESTED);
    tracing::info!(target: TARGET, event = event::AUTHORIZATION_REQUESTED, fid, client_id, scope = %scope, resource);
}

#[cfg(feature = "server")]
pub(crate) fn authorization_granted(
    fid: &str,
    client_id: &str,
    subject: &str,
    scope: &dyn std::fmt::Display,
    resource: &str,
) {
    counted(event::AUTHORIZATION_GRANTED);
    tracing::info!(target: TARGET, event = event::AUTHORIZATION_GRANTED, fid, client_id, subject, scope = %scope, resource);
}

#[cfg(feature = "server")]
pub(crate) fn authorization_denied(fid: &str, client_id: &str, error: &str) {
    counted(event::AUTHORIZATION_DENIED);
    tracing::info!(target: TARGET, event = event::AUTHORIZATION_DENIED, fid, client_id, error);
}

#[cfg(feature = "server")]
pub(crate) fn login_failed(fid: &str, client_id: &str, reason: &'static str) {
    counted(event::LOGIN_FAILED);
    tracing::info!(target: TARGET, event = event::LOGIN_FAILED, fid, client_id, reason);
}

#[cfg(feature = "server")]
pub(crate) fn token_issued(
    fid: &str,
    client_id: &str,
    subject: &str,
    family_id: &str,
    jti: &str,
    scope: &dyn std::fmt::Display,
) {
    counted(event::TOKEN_ISSUED);
    tracing::info!(target: TARGET, event = event::TOKEN_ISSUED, fid, client_id, subject, family_id, jti, scope = %scope);
}

#[cfg(feature = "server")]
pub(crate) fn refresh_rotated(fid: &str, client_id: &str, family_id: &str, jti: &str, grace: bool) {
    counted(event::REFRESH_ROTATED);
    tracing::info!(target: TARGET, event = event::REFRESH_ROTATED, fid, client_id, family_id, jti, grace);
}

#[cfg(feature = "server")]
pub(crate) fn refresh_reuse_detected(fid: &str, client_id: &str, family_id: &str) {
    counted(event::REFRESH_REUSE_DETECTED);
    tracing::warn!(target: TARGET, event = event::REFRESH_REUSE_DETECTED, fid, client_id, family_id);
}

#[cfg(feature = "server")]
pub(crate) fn code_replay_detected(fid: &str, client_id: &str, family_id: &str, revoked: bool) {
    counted(event::CODE_REPLAY_DETECTED);
    tracing::warn!(target: TARGET, event = event::CODE_REPLAY_DETECTED, fid, client_id, family_id, revoked);
}

#[cfg(feature = "server")]
pub(crate) fn token_revoked(
    fid: &str,
    client_id: &str,
    token_type: &'static str,
    family_id: Option<&str>,
) {
    counted(event::TOKEN_REVOKED);
    let family_id = family_id.unwrap_or(NONE);
    tracing::info!(target: TARGET, event = event::TOKEN_REVOKED, fid, client_id, token_type, family_id);
}

pub(crate) fn token_accepted(ctx: &crate::AuthContext) {
    counted(event::TOKEN_ACCEPTED);
    let fid = ctx
        .claim(FLOW_ID_CLAIM)
        .and_then(serde_json::Value::as_str)
        .unwrap_or(NONE);
    let client_id = ctx.client_id().unwrap_or(NONE);
    let jti = ctx.token_id().unwrap_or(NONE);
    tracing::info!(target: TARGET, event = event::TOKEN_ACCEPTED, fid, client_id, subject = ctx.subject(), jti);
}

pub(crate) fn resource_refused(reason: &'static str, status: u16) {
    counted(event::RESOURCE_REFUSED);
    #[cfg(feature = "metrics")]
    crate::metrics::layer_refusal(reason);
    // A missing token is how every client's first request looks (it is what makes it
    // discover the authorization server), and anyone can send it: debug, so it cannot flood
    // an info log. The refusals that say something (a bad token, too little scope) are info.
    if reason == "missing_token" {
        tracing::debug!(target: TARGET, event = event::RESOURCE_REFUSED, reason, status);
    } else {
        tracing::info!(target: TARGET, event = event::RESOURCE_REFUSED, reason, status);
    }
}

pub(crate) fn key_rotated(kid: &str, previous_kid: &str) {
    counted(event::KEY_ROTATED);
    tracing::info!(target: TARGET, event = event::KEY_ROTATED, kid, previous_kid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_table_lists_every_event_with_its_fields() {
        let module = include_str!("audit.rs");
        let doc = include_str!("../docs/audit-events.md");
        for (name, fields) in EVENTS {
            for text in [module, doc] {
                let row = text
                    .lines()
                    .find(|l| l.contains(&format!("| `{name}` |")))
                    .unwrap_or_else(|| panic!("no table row for {name}"));
                for f in *fields {
                    assert!(
                        row.contains(&format!("`{f}`")),
                        "{name}: {f} missing in {row}"
                    );
                }
            }
        }
    }
}
