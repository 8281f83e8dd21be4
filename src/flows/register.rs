//! RFC 7591 dynamic client registration, once the request body is a JSON object: the
//! metadata rules, the redirect URI policy (shared with `/authorize` and the configured
//! clients) and the creation of the client.
//!
//! The adapter ([`server::register`](crate::server)) reads the body and renders the `201`
//! answer; [`prepare`] validates the metadata and looks for an identical earlier
//! registration ([deduplication](#deduplication)), and [`create`] stores a new client with a
//! random id (and a random secret for a confidential client) drawn from
//! [`Env::random`](super::Env), issued at [`Env::now`] and never used yet
//! (`last_used_at: 0`, see [`server::retention`](crate::server::retention)).
//!
//! # Deduplication
//!
//! Claude Code registers on every connection, and most of those registrations never finish
//! an authorization; left alone they pile up as identical rows. So a **public** registration
//! (`token_endpoint_auth_method: none`) is answered with the client of an identical earlier
//! one when there is one, and nothing is stored.
//!
//! *Identical* is the [`ClientFingerprint`]: the SHA-256 of a versioned canonical form of
//! the registering party's identity (`None` for open registration, the only kind today; a
//! future authenticated registration puts the registrant here, so two parties never share a
//! fingerprint) and of the **validated** metadata: the redirect URIs as a set, loopback
//! `http` URIs without their port (RFC 8252 §7.3: `/authorize` accepts any port for them,
//! so the port never distinguished two clients), `token_endpoint_auth_method`, the grant
//! types as a set, `application_type` as recorded, `scope`, `client_name`, and the kept
//! fields (`client_uri`, `logo_uri`, `tos_uri`, `policy_uri`, `contacts`, `software_id`,
//! `software_version`). Unknown fields are dropped before, as they are not stored.
//!
//! The rule, and why nobody takes over anybody's client:
//! - only public clients are reused. They hold no secret, their `client_id` is public
//!   anyway, and codes go only to their exact redirect URIs, which are the ones this
//!   registrant sent; so the second registrant gets nothing it could not use already;
//! - a confidential registration always gets a new client and a new secret: no
//!   registration ever returns a secret it did not create;
//! - the reused client must be a dynamic public client whose redirect URIs accept every
//!   requested one (checked again, whatever the fingerprint says);
//! - a client never used is reused only during the first half of its never-used window
//!   ([`Retention::unused_client_after`](crate::server::Retention::unused_client_after)),
//!   so the registrant has time to finish before the [never-used
//!   rule](crate::server::retention#clients-that-never-finish) removes it; later, a new
//!   client is created and filed under the fingerprint (the newest wins);
//! - with [`remember_consent`](crate::server::AuthorizationServerBuilder::remember_consent)
//!   on (it is off by default), only clients whose redirect URIs are all `https` are
//!   deduplicated. A remembered consent belongs to a (user, client) pair; shared by every
//!   registrant of a loopback or custom-scheme client, it would let another program on the
//!   user's machine that presents the same metadata skip the consent page.
//!
//! The answer is `201` with the existing `client_id` and `client_id_issued_at` and the
//! redirect URIs this request sent. The bound: one client per fingerprint and never-used
//! window half, plus one per registration that races another identical one; clients that
//! were used stay reused for as long as they exist.
//!
//! # What is accepted
//!
//! - A JSON object (`Content-Type: application/json`), at most 8 KiB; each kept string at
//!   most 2,048 bytes, at most 10 `contacts`.
//! - `redirect_uris` (required): see [redirect URI policy](#redirect-uri-policy).
//! - `token_endpoint_auth_method`: `none` (the default: a public client, PKCE only),
//!   `client_secret_basic` or `client_secret_post` (a confidential client, which gets a
//!   `client_secret` that never expires: `client_secret_expires_at: 0`), or, with the
//!   feature `private-key-jwt`, `private_key_jwt` (RFC 7523: no secret; the client sends
//!   exactly one of `jwks`, a JWK Set of at most 10 public keys with no private member, or
//!   `jwks_uri`, an `https` URL; both are echoed back and kept with the client).
//! - `grant_types`: `authorization_code` and `refresh_token` only. When absent, **both** are
//!   registered. RFC 7591 would default to `authorization_code` alone, but then a client
//!   that omits the field never gets a refresh token and its users must log in again every
//!   hour; the MCP clients that omit it all expect refresh tokens.
//! - `response_types`: `code` only.
//! - `application_type`: `native` or `web`. Optional: clients before MCP 2026-07-28 omit it;
//!   the server then records `native` when every redirect URI is loopback or a custom
//!   scheme, `web` otherwise.
//! - `scope`: RFC 6749 scope syntax. It becomes the client's **scope ceiling**: the
//!   authorization endpoint never grants it a scope outside this set.
//! - `client_name` (shown on the consent page, marked as self-asserted; control, bidi and
//!   other format characters such as U+202E, U+200B or U+2066 are refused, and so are
//!   invisible ones: Unicode default-ignorable code points such as the Hangul fillers
//!   U+3164 and U+115F or variation selectors, the Braille blank U+2800, and U+2028,
//!
//! # Redirect URI policy
//!
//! [`check_redirect_uri`] accepts exactly:
//! - `https` URLs with a host (ChatGPT, claude.ai, VS Code's web redirects, Cursor's web
//!   redirect);
//! - `http` on a loopback host, `127.0.0.1`, `[::1]` or `localhost`, on any port (Claude
//!   Code, VS Code, the Inspector; RFC 8252 §7.3);
//! - private-use custom schemes of native apps (RFC 8252 §7.1): reverse-domain schemes,
//!   which contain a `.` (`com.example.app:/callback`), and the schemes of the
//!   [allow-list](crate::server::AuthorizationServerBuilder::redirect_schemes), by default those of
//!   real MCP clients: `cursor` (`cursor://anysphere.cursor-mcp/oauth/callback`), `vscode`,
//!   `vscode-insiders`, `vscodium`, `windsurf`. Other single-word schemes (`myapp:`) are
//!   refused: they are where operating-system handlers live. A reverse-domain scheme needs
//!   at least two non-empty labels of letters, digits and hyphens, and a first label that
//!   can be a top-level domain (letters only, or `xn--…`), so `ms-excel.x:`,
//!   `x-apple.systempreferences:` or `com..app:` do not pass for one.
//!
//! Operating-system handler schemes are refused whatever the allow-list says: every
//! `ms-*` scheme (`ms-settings:`, `ms-msdt:`…), `search-ms`, `search`, `jar`, `shell`,
//! `its`, `mk`, `hcp`, `help`, `res`, `ldap`, `smb` and the like, and every dotted scheme in
//! an operating-system vendor's namespace: `microsoft.*` (`microsoft.windows.camera:`),
//! `windows.*`, `ms.*`, `msft.*`, `xbox.*`, `apple.*`, `android.*`, `com.microsoft.*`,
//! `com.apple.*`, `com.android.*`; an app's publisher does not control those names
//! (RFC 8252 §7.1). The same policy is applied
//! again at `/authorize`, so a client stored before this policy cannot be used to reach such
//! a handler.
//!
//! A URI holding whitespace or a control character anywhere is refused outright, and the
//! scheme is compared case-insensitively, so `JavaScript:`, ` javascript:`,
//! `java\tscript:` and `javascript\0:` are all refused like `javascript:` (the bypasses
//! reported against other authorization servers). `data:`, `file:`, `vbscript:`, `blob:`,
//! `about:` and other browser-internal schemes, plain `http` to other hosts, user
//! information (`https://user@host`) and fragments are refused too.

use serde_json::{Map, Value};

use super::Env;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::scope::ScopeSet;
use crate::store::{
    ApplicationType, Client, ClientFingerprint, ClientSource, SecretHash, StoreError,
    TokenEndpointAuthMethod,
};

/// Longest kept metadata string (`client_uri`, `logo_uri`, …, each contact).
const MAX_FIELD_LEN: usize = 2048;
/// Most `contacts`.
const MAX_CONTACTS: usize = 10;
/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 32;
/// Longest redirect URI accepted.
const MAX_URI_LEN: usize = 2048;
/// Longest `client_name`.
const MAX_NAME_LEN: usize = 200;
/// Metadata kept besides the fields the server interprets.
const KEPT_FIELDS: &[&str] = &[
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "contacts",
    "software_id",
    "software_version",
];
/// Schemes a redirect must never use, whatever the client is (compared in lower case).
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "filesystem",
    "view-source",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
    "intent",
    // Operating-system and application handlers (Windows protocol handlers, Java, help
    // viewers, file shares): a redirect there launches a program, not an app's callback.
    "search-ms",
    "search",
    "jar",
    "shell",
    "its",
    "mk",
    "hcp",
    "help",
    "res",
    "ldap",
    "ldaps",
    "smb",
    "nfs",
    "afp",
    "telnet",
    "ssh",
    "sftp",
    "gopher",
    "news",
    "nntp",
    "callto",
    "chrome",
    "chrome-extension",
    "moz-extension",
    "resource",
    "jrunscript",
    "x-exec",
];

/// Custom redirect URI schemes allowed by default besides reverse-domain ones: those real
/// MCP clients register.
pub(crate) const DEFAULT_REDIRECT_SCHEMES: &[&str] = &[
    "cursor",
    "vscode",
    "vscode-insiders",
    "vscodium",
    "windsurf",
];

fn metadata_error(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClientMetadata, description.into())
}

fn redirect_error(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidRedirectUri, description.into())
}

/// A registered client, and its secret when it is confidential (shown once, never stored).
pub(crate) struct Registration {
    /// The stored client: id, metadata, `issued_at`.
    pub(crate) client: Client,
    /// The client secret of a confidential client.
    pub(crate) client_secret: Option<String>,
    /// Whether an identical earlier registration's client was returned (nothing stored).
    pub(crate) reused: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("client_id", &self.client.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

/// A validated registration request that needs a new client.
#[derive(Debug)]
pub(crate) struct NewClient {
    client: Client,
    /// Set for public clients: the new client is filed under it.
    fingerprint: Option<ClientFingerprint>,
}

/// What a registration request comes to before anything is stored.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// An identical public registration's client, answered again (see
    /// [deduplication](self#deduplication)).
    Existing(Registration),
    /// A new client is to be created ([`create`]).
    New(NewClient),
}

/// Registers a client from its RFC 7591 metadata; see the [module docs](self):
/// [`prepare`] then, unless an identical registration's client is reused, [`create`].
///
/// # Errors
/// `invalid_redirect_uri` or `invalid_client_metadata` naming the problem;
/// `temporarily_unavailable` when the store fails.
#[cfg(test)]
pub(crate) async fn register(
    env: &Env,
    meta: &Map<String, Value>,
) -> Result<Registration, OAuthError> {
    match prepare(env, meta, None).await? {
        Prepared::Existing(r) => Ok(r),
        Prepared::New(new) => create(env, new).await,
    }
}

/// Validates the metadata and, for a public client, looks for the client of an identical
/// earlier registration by the same `registrant` (`None` for open registration) that may be
/// reused ([deduplication](self#deduplication)). Stores nothing.
///
/// # Errors
/// `invalid_redirect_uri` or `invalid_client_metadata` naming the problem;
/// `temporarily_unavailable` when the store fails (never a second client instead).
pub(crate) async fn prepare(
    env: &Env,
    meta: &Map<String, Value>,
    registrant: Option<&str>,
) -> Result<Prepared, OAuthError> {
    let client = parse_metadata(meta, &env.redirect_schemes)?;
    if client.token_endpoint_auth_method != TokenEndpointAuthMethod::None {
        // Confidential: always a client (and a secret) of its own.
        return Ok(Prepared::New(NewClient {
            client,
            fingerprint: None,
        }));
    }
    if env.remember_consent && !client.redirect_uris.iter().all(|u| is_https(u)) {
        // A remembered consent is per (user, client): shared, it would let another local
        // program presenting the same metadata skip the consent page. Not deduplicated.
        return Ok(Prepared::New(NewClient {
            client,
            fingerprint: None,
        }));
    }
    let fingerprint = fingerprint(&client, registrant);
    if let Some(existing) = env.clients.find_client_by_fingerprint(&fingerprint).await?
        && reusable(env, &existing, &client)
    {
        tracing::debug!(
            target: "mcp_oauth::register",
            client_id = %existing.client_id,
            "identical registration: the existing client is returned"
        );
        // The answer names the redirect URIs this request sent: they match the stored
        // ones exactly, or as loopback URIs on another port (which `/authorize` accepts).
        let mut answer = existing;
        answer.redirect_uris = client.redirect_uris;
        return Ok(Prepared::Existing(Registration {
            client: answer,
            client_secret: None,
            reused: true,
        }));
    }
    Ok(Prepared::New(NewClient {
        client,
        fingerprint: Some(fingerprint),
    }))
}

/// Whether `uri` is an `https` URL (the only redirects no other program on the user's
/// machine can receive).
fn is_https(uri: &str) -> bool {
    uri.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
}

/// Whether `existing`, found under the fingerprint of `requested`, may be handed to this
/// registrant: a dynamic public client (no secret to leak) whose redirect URIs accept every
/// requested one, issued no later than now, and, unless it was used, young enough to survive
/// the [never-used rule](crate::server::retention#clients-that-never-finish) for at least
/// half its window.
fn reusable(env: &Env, existing: &Client, requested: &Client) -> bool {
    let now = env.now();
    let public = existing.source == ClientSource::Dynamic
        && existing.secret_hash.is_none()
        && existing.token_endpoint_auth_method == TokenEndpointAuthMethod::None;
    let same_uris = requested.redirect_uris.iter().all(|uri| {
        existing
            .redirect_uris
            .iter()
            .any(|r| redirect_uri_matches(r, uri))
    });
    let alive = existing.last_used_at != 0
        || env
            .unused_client_after
            .is_none_or(|window| existing.issued_at + window.as_secs() / 2 > now);
    public && same_uris && existing.issued_at <= now && alive
}

/// The fingerprint of a registration: SHA-256 over a versioned, canonical JSON form of the
/// registrant and of the validated metadata, with redirect URIs and grant types sorted and
/// loopback redirect URIs without their port.
pub(crate) fn fingerprint(client: &Client, registrant: Option<&str>) -> ClientFingerprint {
    use sha2::{Digest as _, Sha256};
    let mut uris: Vec<String> = client
        .redirect_uris
        .iter()
        .map(|u| match loopback_parts(u) {
            Some((host, tail)) => format!("http://{}{tail}", host.to_ascii_lowercase()),
            None => u.clone(),
        })
        .collect();
    uris.sort();
    uris.dedup();
    let mut grants = client.grant_types.clone();
    grants.sort();
    let mut extra: Vec<(&String, &Value)> = client.extra.iter().collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    let canonical = serde_json::json!([
        "mcp-oauth registration fingerprint v1",
        registrant,
        uris,
        client.token_endpoint_auth_method.as_str(),
        grants,
        match client.application_type {
            ApplicationType::Native => "native",
            ApplicationType::Web => "web",
        },
        client.scope.as_ref().map(ToString::to_string),
        client.client_name,
        extra,
    ]);
    ClientFingerprint(Sha256::digest(canonical.to_string().as_bytes()).into())
}

/// Stores a new client with a random id (and a random secret for a confidential client),
/// issued now and never used yet; a public one is filed under its fingerprint.
///
/// # Errors
/// `temporarily_unavailable` when the store fails.
pub(crate) async fn create(env: &Env, new: NewClient) -> Result<Registration, OAuthError> {
    let NewClient {
        mut client,
        fingerprint,
    } = new;
    // Only the shared-secret methods get a secret (`none` and `private_key_jwt` have none).
    let has_secret = matches!(
        client.token_endpoint_auth_method,
        TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost
    );
    let secret = if !has_secret {
        None
    } else {
        let secret = env.random.token(32);
        client.secret_hash = Some(SecretHash::of(&secret));
        Some(secret)
    };
    client.issued_at = env.now();
    // Never used: `0` until the client authenticates at the token, revocation or
    // introspection endpoint (see `server::retention`).
    client.last_used_at = 0;

    // A collision of 144 random bits does not happen; retry once anyway rather than fail.
    let mut stored = None;
    for _ in 0..2 {
        client.client_id = env.random.token(18);
        let done = match &fingerprint {
            Some(fp) => {
                env.clients
                    .insert_client_with_fingerprint(client.clone(), fp)
                    .await
            }
            None => env.clients.insert_client(client.clone()).await,
        };
        match done {
            Ok(()) => {
                stored = Some(());
                break;
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if stored.is_none() {
        return Err(StoreError::conflict("client id collision").into());
    }
    crate::audit::client_registered(
        &client.client_id,
        client.token_endpoint_auth_method.as_str(),
        "dynamic",
    );
    tracing::debug!(
        target: "mcp_oauth::register",
        client_id = %client.client_id,
        client_name = ?client.client_name.as_deref().unwrap_or(""),
        redirect_uris = ?client.redirect_uris,
        "client registered"
    );
    Ok(Registration {
        client,
        client_secret: secret,
        reused: false,
    })
}

/// A list of strings from a JSON field, or a metadata error naming the field.
fn string_list(meta: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match meta.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| metadata_error(format!("{field} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(metadata_error(format!(
            "{field} must be an array of strings"
        ))),
    }
}

fn optional_string<'a>(
    meta: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, OAuthError> {
    match meta.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(metadata_error(format!("{field} must be a string"))),
    }
}

/// The authentication methods registration accepts, for error descriptions.
#[cfg(feature = "private-key-jwt")]
const SUPPORTED_AUTH_METHODS: &str =
    "none, client_secret_basic, client_secret_post or private_key_jwt";
#[cfg(not(feature = "private-key-jwt"))]
const SUPPORTED_AUTH_METHODS: &str = "none, client_secret_basic or client_secret_post";

/// Checks a `jwks_uri`: an absolute `https` URL (or `http` on a loopback host, which the
/// fetcher reaches only when loopback is allowed) with a host, without user information or
/// fragment, at most 2,048 bytes. Where it may point is decided when it is fetched (the
/// outbound SSRF guard).
///
/// # Errors
/// What is wrong, for a description.
#[cfg(feature = "private-key-jwt")]
pub(crate) fn check_jwks_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_FIELD_LEN {
        return Err(format!("jwks_uri is longer than {MAX_FIELD_LEN} bytes"));
    }
    let Ok(url) = url::Url::parse(uri) else {
        return Err("jwks_uri must be an absolute URL".to_owned());
    };
    let host = url.host_str().unwrap_or_default();
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && crate::net::is_loopback_host(host));
    if !scheme_ok || host.is_empty() {
        return Err("jwks_uri must be an https URL".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("jwks_uri must not hold user information or a fragment".to_owned());
    }
    Ok(())
}

/// The key source of a `private_key_jwt` registration: exactly one of `jwks` (a JWK Set of
/// public keys, checked) and `jwks_uri` (checked by [`check_jwks_uri`]), as the field to keep
/// and its value. Other methods keep neither.
#[cfg(feature = "private-key-jwt")]
fn client_keys(
    meta: &Map<String, Value>,
    method: TokenEndpointAuthMethod,
) -> Result<Option<(&'static str, Value)>, OAuthError> {
    if method != TokenEndpointAuthMethod::PrivateKeyJwt {
        return Ok(None);
    }
    let present = |f: &str| meta.get(f).filter(|v| !v.is_null());
    match (present("jwks"), present("jwks_uri")) {
        (Some(jwks), None) => {
            crate::flows::client_assertion::parse_jwks(jwks)
                .map_err(|why| metadata_error(format!("jwks: {why}")))?;
            Ok(Some(("jwks", jwks.clone())))
        }
        (None, Some(Value::String(uri))) => {
            check_jwks_uri(uri).map_err(metadata_error)?;
            Ok(Some(("jwks_uri", Value::String(uri.clone()))))
        }
        (None, Some(_)) => Err(metadata_error("jwks_uri must be a string")),
        (Some(_), Some(_)) => Err(metadata_error(
            "jwks and jwks_uri must not both be present (RFC 7591 §2)",
        )),
        (None, None) => Err(metadata_error(
            "private_key_jwt needs the client's public keys: send jwks or jwks_uri",
        )),
    }
}

/// Validates registration metadata into a client (without id, secret or timestamps).
fn parse_metadata(
    meta: &Map<String, Value>,
    allowed_schemes: &[String],
) -> Result<Client, OAuthError> {
    // Redirect URIs first: the most likely problem, reported with its own error code.
    let redirect_uris = match meta.get("redirect_uris") {
        None | Some(Value::Null) => {
            return Err(redirect_error("redirect_uris is required"));
        }
        Some(Value::Array(items)) => {
            let mut uris: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let Some(uri) = item.as_str() else {
                    return Err(redirect_error("redirect_uris must be an array of strings"));
                };
                check_redirect_uri_with(uri, allowed_schemes).map_err(|why| {
                    redirect_error(format!("redirect URI {}: {why}", quote_for_error(uri)))
                })?;
                if !uris.iter().any(|u| u == uri) {
                    uris.push(uri.to_owned());
                }
            }
            if uris.is_empty() {
                return Err(redirect_error("redirect_uris must name at least one URI"));
            }
            if uris.len() > MAX_REDIRECT_URIS {
                return Err(redirect_error(format!(
                    "at most {MAX_REDIRECT_URIS} redirect URIs may be registered"
                )));
            }
            uris
        }
        Some(_) => return Err(redirect_error("redirect_uris must be an array of strings")),
    };

    let token_endpoint_auth_method = match optional_string(meta, "token_endpoint_auth_method")? {
        None | Some("none") => TokenEndpointAuthMethod::None,
        Some("client_secret_basic") => TokenEndpointAuthMethod::ClientSecretBasic,
        Some("client_secret_post") => TokenEndpointAuthMethod::ClientSecretPost,
        #[cfg(feature = "private-key-jwt")]
        Some("private_key_jwt") => TokenEndpointAuthMethod::PrivateKeyJwt,
        Some(other) => {
            return Err(metadata_error(format!(
                "token_endpoint_auth_method {} is not supported; use {SUPPORTED_AUTH_METHODS}",
                quote_for_error(other)
            )));
        }
    };
    #[cfg(feature = "private-key-jwt")]
    let key_source = client_keys(meta, token_endpoint_auth_method)?;

    let grant_types = match string_list(meta, "grant_types")? {
        None => vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for g in list {
                if g != "authorization_code" && g != "refresh_token" {
                    return Err(metadata_error(format!(
                        "grant type {} is not supported; only authorization_code and refresh_token are",
                        quote_for_error(&g)
                    )));
                }
                if !out.contains(&g) {
                    out.push(g);
                }
            }
            if !out.iter().any(|g| g == "authorization_code") {
                return Err(metadata_error(
                    "grant_types must include authorization_code (the only way to obtain tokens here)",
                ));
            }
            out
        }
    };

    if let Some(list) = string_list(meta, "response_types")?
        && (list.is_empty() || list.iter().any(|r| r != "code"))
    {
        return Err(metadata_error("response_types may only be [\"code\"]"));
    }

    let application_type = match optional_string(meta, "application_type")? {
        Some("native") => ApplicationType::Native,
        Some("web") => ApplicationType::Web,
        Some(other) => {
            return Err(metadata_error(format!(
                "application_type {} is not supported; use native or web",
                quote_for_error(other)
            )));
        }
        None => {
            let is_https =
                |u: &String| u.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("https:"));
            if !redirect_uris.iter().any(is_https) {
                ApplicationType::Native
            } else {
                ApplicationType::Web
            }
        }
    };

    let scope = match optional_string(meta, "scope")? {
        None => None,
        Some(s) => {
            let set = ScopeSet::parse(s).map_err(|e| metadata_error(e.to_string()))?;
            (!set.is_empty()).then_some(set)
        }
    };

    let client_name = match optional_string(meta, "client_name")? {
        None => None,
        Some(name) => {
            let name = name.trim();
            if name.chars().any(char::is_control) {
                return Err(metadata_error(
                    "client_name must not contain control characters",
                ));
            }
            if name.chars().any(is_invisible_char) {
                return Err(metadata_error(
                    "client_name must not contain bidirectional, format or other invisible characters",
                ));
            }
            if name.chars().count() > MAX_NAME_LEN {
                return Err(metadata_error(format!(
                    "client_name is longer than {MAX_NAME_LEN} characters"
                )));
            }
            (!name.is_empty()).then(|| name.to_owned())
        }
    };

    let mut extra = Map::new();
    for field in KEPT_FIELDS {
        match meta.get(*field) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if *field != "contacts" && v.len() > MAX_FIELD_LEN => {
                return Err(metadata_error(format!(
                    "{field} is longer than {MAX_FIELD_LEN} bytes"
                )));
            }
            Some(v @ Value::String(_)) if *field != "contacts" => {
                extra.insert((*field).to_owned(), v.clone());
            }
            Some(Value::Array(items))
                if *field == "contacts"
                    && (items.len() > MAX_CONTACTS
                        || items
                            .iter()
                            .any(|c| c.as_str().is_some_and(|c| c.len() > MAX_FIELD_LEN))) =>
            {
                return Err(metadata_error(format!(
                    "contacts may hold at most {MAX_CONTACTS} addresses of at most {MAX_FIELD_LEN} bytes"
                )));
            }
            Some(v @ Value::Array(items))
                if *field == "contacts" && items.iter().all(Value::is_string) =>
            {
                extra.insert((*field).to_owned(), v.clone());
            }
            Some(_) if *field == "contacts" => {
                return Err(metadata_error("contacts must be an array of strings"));
            }
            Some(_) => return Err(metadata_error(format!("{field} must be a string"))),
        }
    }

    #[cfg(feature = "private-key-jwt")]
    if let Some((field, value)) = key_source {
        extra.insert(field.to_owned(), value);
    }

    Ok(Client {
        client_id: String::new(),
        secret_hash: None,
        secret_expires_at: 0,
        client_name,
        redirect_uris,
        grant_types,
        token_endpoint_auth_method,
        application_type,
        scope,
        extra,
        issued_at: 0,
        last_used_at: 0,
        source: ClientSource::Dynamic,
    })
}

/// A value quoted for an error description: control characters escaped, length capped.
fn quote_for_error(value: &str) -> String {
    let mut short: String = value.chars().take(120).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Whether `c` is invisible, or can make a name look different from what it is: a format
/// character ([`is_format_char`]), a Unicode `Default_Ignorable_Code_Point` (Hangul fillers
/// U+115F, U+1160, U+3164, U+FFA0, combining grapheme joiner U+034F, variation selectors
/// U+FE00–U+FE0F and U+E0100–U+E01EF, Khmer and Mongolian invisibles, and the rest), the
/// Braille blank U+2800, or the line and paragraph separators U+2028, U+2029.
pub(crate) fn is_invisible_char(c: char) -> bool {
    is_format_char(c)
        || is_default_ignorable(c)
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{2800}')
}

/// Unicode's `Default_Ignorable_Code_Point` property (DerivedCoreProperties.txt, Unicode
/// 15.1; the ranges are reserved for it, so later versions add nothing outside them).
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `c` is an invisible format character (Unicode general category Cf): bidi
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F, U+061C),
/// zero-width characters (U+200B–U+200D, U+2060, U+FEFF), soft hyphen, and the rest of the
/// category. They let a name display differently from what it is.
pub(crate) fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Why the redirect URI policy refuses a URI. `Display` is the reason shown to the client's
/// developer (in a registration error, a configuration error, a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedirectUriRefusal {
    /// The URI is empty.
    Empty,
    /// Longer than [`MAX_URI_LEN`].
    TooLong,
    /// Whitespace or control characters anywhere.
    WhitespaceOrControl,
    /// Characters outside ASCII (they must be percent-encoded).
    NonAscii,
    /// A backslash, which browsers read as a slash.
    Backslash,
    /// No `scheme:`.
    NoScheme,
    /// The part before `:` is not a URI scheme.
    InvalidScheme,
    /// A scheme never allowed for redirects (`javascript:`, `data:`, `ms-…:`); lower case.
    ForbiddenScheme(String),
    /// A fragment (`#…`).
    Fragment,
    /// Nothing after `scheme:`.
    NothingAfterScheme,
    /// The URL parser refuses it.
    Unparsable(url::ParseError),
    /// `user@host` or `user:password@host`.
    UserInfo,
    /// `https:` without a host.
    HttpsWithoutHost,
    /// `http:` to a host that is not loopback.
    PlainHttpNotLoopback,
    /// A dotted scheme in an operating-system vendor's namespace; lower case.
    VendorNamespace(String),
    /// A custom scheme without a dot that is not on the allow-list; lower case.
    UnlistedCustomScheme(String),
    /// A dotted custom scheme that is not a reverse domain name; lower case.
    NotReverseDomain(String),
}

impl std::fmt::Display for RedirectUriRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong => write!(f, "it is longer than {MAX_URI_LEN} bytes"),
            Self::WhitespaceOrControl => f.write_str("it contains whitespace or control characters"),
            Self::NonAscii => f.write_str("it contains non-ASCII characters; percent-encode them"),
            Self::Backslash => f.write_str("it contains a backslash"),
            Self::NoScheme => f.write_str("it is not an absolute URI (no scheme)"),
            Self::InvalidScheme => f.write_str("it does not start with a valid URI scheme"),
            Self::ForbiddenScheme(s) => write!(f, "the {s}: scheme is not allowed for redirects"),
            Self::Fragment => f.write_str("it has a fragment (#…); redirect URIs must not"),
            Self::NothingAfterScheme => f.write_str("it has nothing after the scheme"),
            Self::Unparsable(e) => write!(f, "it is not a valid URI ({e})"),
            Self::UserInfo => f.write_str("it holds user information (user@host)"),
            Self::HttpsWithoutHost => {
                f.write_str("an https redirect URI needs a host (https://host/…)")
            }
            Self::PlainHttpNotLoopback => f.write_str(
                "plain http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https",
            ),
            Self::VendorNamespace(s) => write!(
                f,
                "the {s}: scheme is in an operating-system vendor's namespace, not an app's reverse domain name"
            ),
            Self::UnlistedCustomScheme(s) => write!(
                f,
                "the custom scheme {s}: is neither a reverse domain name (com.example.app:) nor on this server's allow-list"
            ),
            Self::NotReverseDomain(s) => write!(
                f,
                "the custom scheme {s}: is not a reverse domain name (com.example.app:): it needs two or more dot-separated labels of letters, digits and hyphens, starting with a top-level domain"
            ),
        }
    }
}

/// Checks one redirect URI against the registration policy (see the
/// [module docs](self#redirect-uri-policy)); the error says why, for the client's developer.
/// `allowed_schemes` (lower case) are the custom schemes allowed besides reverse-domain ones.
pub(crate) fn check_redirect_uri_with(
    uri: &str,
    allowed_schemes: &[String],
) -> Result<(), RedirectUriRefusal> {
    if uri.is_empty() {
        return Err(RedirectUriRefusal::Empty);
    }
    if uri.len() > MAX_URI_LEN {
        return Err(RedirectUriRefusal::TooLong);
    }
    // Browsers strip or ignore whitespace and control characters inside schemes
    // (` javascript:`, `java\tscript:`); refusing them everywhere closes that door and
    // makes the exact string match at /authorize unambiguous.
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RedirectUriRefusal::WhitespaceOrControl);
    }
    if !uri.is_ascii() {
        return Err(RedirectUriRefusal::NonAscii);
    }
    if uri.contains('\\') {
        return Err(RedirectUriRefusal::Backslash);
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(RedirectUriRefusal::NoScheme);
    };
    let scheme = scheme.to_ascii_lowercase();
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(RedirectUriRefusal::InvalidScheme);
    }
    if FORBIDDEN_SCHEMES.contains(&scheme.as_str()) || scheme.starts_with("ms-") {
        return Err(RedirectUriRefusal::ForbiddenScheme(scheme));
    }
    if uri.contains('#') {
        return Err(RedirectUriRefusal::Fragment);
    }
    if rest.is_empty() {
        return Err(RedirectUriRefusal::NothingAfterScheme);
    }
    let url = url::Url::parse(uri).map_err(RedirectUriRefusal::Unparsable)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectUriRefusal::UserInfo);
    }
    match scheme.as_str() {
        "https" => {
            // Checked on the string as written: the URL parser would read `https:///x`
            // as host `x`, and browsers may not.
            if strip_port(authority_of(rest)).is_empty() || url.host_str().is_none_or(str::is_empty)
            {
                return Err(RedirectUriRefusal::HttpsWithoutHost);
            }
            Ok(())
        }
        "http" => {
            let authority = authority_of(rest);
            let host = strip_port(authority);
            if crate::net::is_loopback_host(host) {
                Ok(())
            } else {
                Err(RedirectUriRefusal::PlainHttpNotLoopback)
            }
        }
        s if is_vendor_namespace(s) => Err(RedirectUriRefusal::VendorNamespace(s.to_owned())),
        s if allowed_schemes.iter().any(|a| a == s) => Ok(()),
        // RFC 8252 §7.1: private-use schemes are reverse domain names.
        s if s.contains('.') => check_reverse_domain(s),
        s => Err(RedirectUriRefusal::UnlistedCustomScheme(s.to_owned())),
    }
}

/// Dotted scheme namespaces that belong to operating-system vendors, not to the app that
/// registers: their schemes (`microsoft.windows.camera:`, `windows.immersivecontrolpanel:`,
/// `com.apple.…`) launch system handlers. Compared by whole leading labels, lower case.
const VENDOR_NAMESPACES: &[&[&str]] = &[
    &["microsoft"],
    &["windows"],
    &["ms"],
    &["msft"],
    &["xbox"],
    &["apple"],
    &["android"],
    &["com", "microsoft"],
    &["com", "apple"],
    &["com", "android"],
];

/// Whether the (lower-case) scheme `s` lies in an operating-system vendor's namespace
/// ([`VENDOR_NAMESPACES`]).
fn is_vendor_namespace(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() > 1 && VENDOR_NAMESPACES.iter().any(|ns| labels.starts_with(ns))
}

/// RFC 8252 §7.1: a private-use scheme is "a domain name under [the app's] control,
/// expressed in reverse order". So at least two non-empty labels of letters, digits and
/// hyphens, none starting or ending with a hyphen, the first (a top-level domain) letters
/// only or an IDN `xn--` label. `com.example.app` passes; `com..app`, `com.`, `a+b.c`,
/// `ms-excel.x` and `x-apple.systempreferences` (handler schemes that merely contain a
/// dot) do not.
fn check_reverse_domain(s: &str) -> Result<(), RedirectUriRefusal> {
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let tld_ok = labels
        .first()
        .is_some_and(|t| t.chars().all(|c| c.is_ascii_alphabetic()) || t.starts_with("xn--"));
    if labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok {
        Ok(())
    } else {
        Err(RedirectUriRefusal::NotReverseDomain(s.to_owned()))
    }
}

/// [`check_redirect_uri_with`] the default custom-scheme allow-list
/// ([`DEFAULT_REDIRECT_SCHEMES`]).
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), RedirectUriRefusal> {
    let defaults: Vec<String> = DEFAULT_REDIRECT_SCHEMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    check_redirect_uri_with(uri, &defaults)
}

/// The authority of `//authority/path…` (the part after `scheme:`), or `""`.
fn authority_of(after_scheme: &str) -> &str {
    let Some(rest) = after_scheme.strip_prefix("//") else {
        return "";
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// The host of an authority without its `:port` (brackets of IPv6 literals kept).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether a redirect URI from an authorization request matches a registered one: byte for
/// byte, except that for `http` loopback URIs the port is ignored (RFC 8252 §7.3), so a
/// native app may listen on whatever port is free.
pub(crate) fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(requested)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `(host, everything after the authority)` of an `http://<loopback>[:port]…` URI whose port,
/// if any, is all digits.
fn loopback_parts(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = strip_port(authority);
    if !crate::net::is_loopback_host(host) {
        return None;
    }
    let port = &authority[host.len()..];
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((host, tail))
}

/// Whether every redirect URI of a client is a loopback one (any program on the user's
/// machine could receive the code): the consent page warns.
pub(crate) fn all_loopback(uris: &[String]) -> bool {
    !uris.is_empty() && uris.iter().all(|u| loopback_parts(u).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::test_env::TestEnv;

    fn defaults() -> Vec<String> {
        DEFAULT_REDIRECT_SCHEMES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Each refusal is a typed reason, and its text is the one the client's developer reads.
    #[test]
    fn refusals_are_typed_reasons() {
        let refused = |uri: &str| check_redirect_uri_with(uri, &defaults()).unwrap_err();
        assert_eq!(refused(""), RedirectUriRefusal::Empty);
        assert_eq!(refused("https://a/#x"), RedirectUriRefusal::Fragment);
        assert_eq!(
            refused("JavaScript:alert(1)"),
            RedirectUriRefusal::ForbiddenScheme("javascript".to_owned())
        );
        assert_eq!(
            refused("http://example.com/cb"),
            RedirectUriRefusal::PlainHttpNotLoopback
        );
        assert_eq!(
            refused("com.apple.x:/cb"),
            RedirectUriRefusal::VendorNamespace("com.apple.x".to_owned())
        );
        assert_eq!(
            refused("myapp://cb"),
            RedirectUriRefusal::UnlistedCustomScheme("myapp".to_owned())
        );
        assert!(matches!(
            refused("https://[::1/cb"),
            RedirectUriRefusal::Unparsable(_)
        ));
        assert_eq!(
            refused("JavaScript:alert(1)").to_string(),
            "the javascript: scheme is not allowed for redirects"
        );
        assert_eq!(
            refused("http://example.com/cb").to_string(),
            "plain http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https"
        );
    }

    // issue 8 item 5: RFC 8252 §7.1 custom schemes: reverse-domain or allow-listed; OS
    // handler schemes refused even when allow-listed.
    #[test]
    fn custom_schemes_are_reverse_domain_or_allow_listed() {
        for ok in [
            "vscode://vscode.github-authentication/did-authenticate",
            "vscode-insiders://x/cb",
            "windsurf://codeium.windsurf/cb",
            "CURSOR://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/cb",
            "io.modelcontextprotocol.app://cb",
        ] {
            assert_eq!(check_redirect_uri_with(ok, &defaults()), Ok(()), "{ok}");
        }
        for bad in [
            "myapp://cb",
            "ms-settings:privacy",
            "ms-msdt:/id",
            "MS-Word:ofe|u|https://evil.example/x.docx",
            "ms-excel.x:/cb",
            "search-ms:query=x",
            "search:query=x",
            "jar:https://evil.example/x.jar!/",
            "file:///c:/windows",
            "javascript:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "shell:startup",
            "hcp://system",
            "its:c:/x.chm",
            "smb://evil.example/share",
            "ldap://evil.example/x",
        ] {
            assert!(
                check_redirect_uri_with(bad, &defaults()).is_err(),
                "{bad:?} was accepted"
            );
        }
        // An allow-listed OS handler is still refused; an allow-listed word is accepted.
        let custom = vec![
            "myapp".to_owned(),
            "search-ms".to_owned(),
            "ms-word".to_owned(),
        ];
        assert_eq!(check_redirect_uri_with("myapp://cb", &custom), Ok(()));
        assert!(check_redirect_uri_with("search-ms:x", &custom).is_err());
        assert!(check_redirect_uri_with("ms-word:x", &custom).is_err());
        assert!(check_redirect_uri_with("cursor://x/cb", &custom).is_err());
        // The one-argument form applies the default allow-list.
        assert_eq!(check_redirect_uri("cursor://x/cb"), Ok(()));
        assert!(check_redirect_uri("myapp://cb").is_err());
    }

    // issue 8 item 9: client_name refuses bidi and format characters (Unicode Cf).
    #[test]
    fn format_characters_are_recognised() {
        for c in [
            '\u{202E}',
            '\u{200B}',
            '\u{2066}',
            '\u{200E}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_format_char(c), "{:04X}", c as u32);
        }
        for c in ['a', 'é', '日', ' ', '\u{0301}', '-'] {
            assert!(!is_format_char(c), "{:04X}", c as u32);
        }
    }

    // issue 8 item 5 (follow-up review): a dot alone does not make a reverse domain name.
    // Vendor handler namespaces and malformed label lists are refused, even allow-listed
    // vendor ones. Before: any scheme containing a dot passed.
    #[test]
    fn dotted_schemes_must_be_reverse_domain_names_an_app_can_own() {
        for ok in [
            "com.example.app:/cb",
            "io.modelcontextprotocol.app://cb",
            "com.googleusercontent.apps.123-abc:/oauth2redirect",
            "xn--p1ai.example:/cb",
            "org.my-app.x2:/cb",
        ] {
            assert_eq!(check_redirect_uri_with(ok, &defaults()), Ok(()), "{ok}");
        }
        for bad in [
            "microsoft.windows.camera:",
            "microsoft.windows.camera.multipicker:x",
            "Microsoft.Windows.Photos.Crop:x",
            "windows.immersivecontrolpanel:x",
            "ms.settings:x",
            "msft.x:y",
            "xbox.app:y",
            "com.apple.preference.security:x",
            "com.microsoft.teams:/cb",
            "com.android.settings:/cb",
            "apple.x:y",
            "x-apple.systempreferences:com.apple.preference.security",
            "microsoft-edge.x:y",
            "com.:x",
            "com..app:/cb",
            "com.-app:/cb",
            "com.app-:/cb",
            "a+b.c:/cb",
            "c0m.example:/cb",
        ] {
            assert!(
                check_redirect_uri_with(bad, &defaults()).is_err(),
                "{bad:?} was accepted"
            );
        }
        // Allow-listing a vendor namespace does not open it.
        let custom = vec!["microsoft.windows.camera".to_owned()];
        assert!(check_redirect_uri_with("microsoft.windows.camera:x", &custom).is_err());
    }

    // issue 8 item 9 (follow-up review): invisible characters beyond Cf.
    #[test]
    fn invisible_characters_are_recognised() {
        for c in [
            '\u{3164}',
            '\u{115F}',
            '\u{1160}',
            '\u{FFA0}',
            '\u{2800}',
            '\u{2028}',
            '\u{2029}',
            '\u{034F}',
            '\u{17B4}',
            '\u{180B}',
            '\u{FE0F}',
            '\u{E0100}',
            '\u{202E}',
            '\u{0600}',
        ] {
            assert!(is_invisible_char(c), "{:04X}", c as u32);
        }
        for c in ['a', 'é', '日', ' ', '\u{0301}', '-', '한', '⠁', '\u{3000}'] {
            assert!(!is_invisible_char(c), "{:04X}", c as u32);
        }
    }

    #[test]
    fn policy_accepts_real_clients() {
        for ok in [
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "https://chatgpt.com/connector/oauth/abc123",
            "https://claude.ai/api/mcp/auth_callback",
            "http://localhost:54321/callback",
            "http://127.0.0.1:6276/oauth/callback",
            "http://127.0.0.1/",
            "http://[::1]:8080/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/oauth2redirect",
            "https://app.example.com/cb?tenant=1",
        ] {
            assert_eq!(check_redirect_uri_with(ok, &defaults()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn policy_refuses_dangerous_uris() {
        for bad in [
            "",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "java\tscript:alert(1)",
            "javascript\0:alert(1)",
            "javascript\u{00a0}:alert(1)",
            "java\u{200b}script:alert(1)",
            "data:text/html,hi",
            "DATA:text/html,hi",
            "file:///etc/passwd",
            "vbscript:msgbox",
            "blob:https://x/1",
            "about:blank",
            "http://example.com/cb",
            "http://127.0.0.1.evil.com/cb",
            "http://localhost.evil.com/cb",
            "https://",
            "https:///path",
            "https://user:pw@example.com/cb",
            "https://example.com/cb#frag",
            "https://example.com/cb\n",
            "https:\\\\evil.com",
            "no-scheme",
            "1abc://x",
            "%6aavascript:alert(1)",
            "https://exämple.com/cb",
        ] {
            assert!(
                check_redirect_uri_with(bad, &defaults()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn loopback_port_is_ignored_nothing_else() {
        let reg = "http://127.0.0.1/callback";
        assert!(redirect_uri_matches(reg, "http://127.0.0.1:49152/callback"));
        assert!(redirect_uri_matches(reg, "http://127.0.0.1/callback"));
        assert!(!redirect_uri_matches(reg, "http://127.0.0.1:49152/other"));
        assert!(!redirect_uri_matches(
            reg,
            "http://localhost:49152/callback"
        ));
        assert!(!redirect_uri_matches(reg, "http://127.0.0.1:abc/callback"));
        assert!(!redirect_uri_matches(reg, "https://127.0.0.1:443/callback"));
        assert!(redirect_uri_matches(
            "http://[::1]:33418/",
            "http://[::1]:1234/"
        ));
        assert!(redirect_uri_matches(
            "http://localhost:8787/callback",
            "http://localhost:9999/callback"
        ));
        // Not loopback: exact only.
        assert!(!redirect_uri_matches(
            "https://app.example.com/cb",
            "https://app.example.com:443/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb/"
        ));
        assert!(all_loopback(&[
            "http://127.0.0.1/callback".to_owned(),
            "http://localhost:1/x".to_owned()
        ]));
        assert!(!all_loopback(&[
            "http://127.0.0.1/callback".to_owned(),
            "cursor://x/y".to_owned()
        ]));
    }

    fn meta(v: serde_json::Value) -> Map<String, Value> {
        let Value::Object(m) = v else { panic!() };
        m
    }

    // RFC 7591 §2 and the server's own limits, one row per rule.
    #[tokio::test]
    async fn registration_metadata_rules() {
        use OAuthErrorCode::{InvalidClientMetadata as Meta, InvalidRedirectUri as Uri};
        use serde_json::json;
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let many: Vec<String> = (0..=MAX_REDIRECT_URIS)
            .map(|i| format!("https://app.example.com/cb{i}"))
            .collect();
        let cb = json!(["https://app.example.com/cb"]);
        // (metadata, None when accepted or the error and a fragment of its description)
        let table: Vec<(Value, Option<(OAuthErrorCode, &str)>)> = vec![
            (json!({"redirect_uris": cb}), None),
            (json!({}), Some((Uri, "redirect_uris is required"))),
            (json!({"redirect_uris": []}), Some((Uri, "at least one"))),
            (
                json!({"redirect_uris": "https://a.example/cb"}),
                Some((Uri, "array")),
            ),
            (
                json!({"redirect_uris": [1]}),
                Some((Uri, "array of strings")),
            ),
            (
                json!({"redirect_uris": ["javascript:alert(1)"]}),
                Some((Uri, "javascript")),
            ),
            (
                json!({"redirect_uris": ["http://example.com/cb"]}),
                Some((Uri, "loopback")),
            ),
            (json!({"redirect_uris": many}), Some((Uri, "at most 32"))),
            (
                json!({"redirect_uris": cb, "token_endpoint_auth_method": "private_key_jwt"}),
                Some((
                    Meta,
                    if cfg!(feature = "private-key-jwt") {
                        "send jwks or jwks_uri"
                    } else {
                        "not supported"
                    },
                )),
            ),
            (
                json!({"redirect_uris": cb, "token_endpoint_auth_method": 1}),
                Some((Meta, "must be a string")),
            ),
            (
                json!({"redirect_uris": cb, "grant_types": ["client_credentials"]}),
                Some((Meta, "not supported")),
            ),
            (
                json!({"redirect_uris": cb, "grant_types": ["refresh_token"]}),
                Some((Meta, "must include authorization_code")),
            ),
            (
                json!({"redirect_uris": cb, "grant_types": ["authorization_code"]}),
                None,
            ),
            (
                json!({"redirect_uris": cb, "response_types": ["token"]}),
                Some((Meta, "response_types")),
            ),
            (
                json!({"redirect_uris": cb, "response_types": []}),
                Some((Meta, "response_types")),
            ),
            (
                json!({"redirect_uris": cb, "response_types": ["code"]}),
                None,
            ),
            (
                json!({"redirect_uris": cb, "application_type": "desktop"}),
                Some((Meta, "application_type")),
            ),
            (
                json!({"redirect_uris": cb, "scope": "read \u{1}"}),
                Some((Meta, "")),
            ),
            (
                json!({"redirect_uris": cb, "client_name": "Evil\u{202E}gnp.exe"}),
                Some((Meta, "invisible")),
            ),
            (
                json!({"redirect_uris": cb, "client_name": "a\u{7}b"}),
                Some((Meta, "control")),
            ),
            (
                json!({"redirect_uris": cb, "client_name": "n".repeat(MAX_NAME_LEN + 1)}),
                Some((Meta, "longer")),
            ),
            (
                json!({"redirect_uris": cb, "client_uri": long}),
                Some((Meta, "longer")),
            ),
            (
                json!({"redirect_uris": cb, "logo_uri": 5}),
                Some((Meta, "must be a string")),
            ),
            (
                json!({"redirect_uris": cb, "contacts": "a@example.com"}),
                Some((Meta, "contacts must be")),
            ),
            (
                json!({"redirect_uris": cb, "contacts": vec!["a@example.com"; MAX_CONTACTS + 1]}),
                Some((Meta, "at most 10")),
            ),
            (
                json!({"redirect_uris": cb, "unknown_field": {"ignored": true}}),
                None,
            ),
        ];
        for (m, expect) in table {
            let t = TestEnv::new().await;
            let got = register(&t.env, &meta(m.clone())).await;
            match (got, expect) {
                (Ok(_), None) => {}
                (Err(e), Some((code, why))) => {
                    assert_eq!(e.code(), code, "{m}: {e}");
                    assert!(e.description().contains(why), "{m}: {e}");
                }
                (got, _) => panic!("{m}: {got:?}"),
            }
        }
    }

    /// Issue 11: `private_key_jwt` registrations carry exactly one well-formed key source
    /// and get no secret.
    #[cfg(feature = "private-key-jwt")]
    #[tokio::test]
    async fn private_key_jwt_registration_rules() {
        use serde_json::json;
        let key = crate::keys::SigningKey::generate(crate::keys::SigningAlgorithm::Es256).unwrap();
        let jwk = serde_json::to_value(key.jwk()).unwrap();
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        let cb = json!(["https://app.example.com/cb"]);
        let pk = |extra: Value| {
            let mut m =
                json!({"redirect_uris": cb, "token_endpoint_auth_method": "private_key_jwt"});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            m
        };
        let table: Vec<(Value, Option<&str>)> = vec![
            (pk(json!({"jwks": {"keys": [jwk]}})), None),
            (
                pk(json!({"jwks_uri": "https://client.example.com/jwks.json"})),
                None,
            ),
            (pk(json!({"jwks_uri": "http://127.0.0.1:8080/jwks"})), None),
            (
                pk(json!({"jwks": {"keys": [jwk]}, "jwks_uri": "https://client.example.com/j"})),
                Some("must not both"),
            ),
            (pk(json!({})), Some("send jwks or jwks_uri")),
            (
                pk(json!({"jwks": {"keys": [private]}})),
                Some("private member `d`"),
            ),
            (pk(json!({"jwks": [jwk]})), Some("JSON object")),
            (
                pk(json!({"jwks": {"keys": []}})),
                Some("no public signing key"),
            ),
            (
                pk(json!({"jwks_uri": "http://client.example.com/jwks"})),
                Some("https"),
            ),
            (
                pk(json!({"jwks_uri": "https://u:p@client.example.com/jwks"})),
                Some("user information"),
            ),
            (
                pk(json!({"jwks_uri": "https://client.example.com/jwks#x"})),
                Some("fragment"),
            ),
            (pk(json!({"jwks_uri": "jwks.json"})), Some("absolute URL")),
            (pk(json!({"jwks_uri": 7})), Some("must be a string")),
        ];
        for (m, expect) in table {
            let t = TestEnv::new().await;
            match (register(&t.env, &meta(m.clone())).await, expect) {
                (Ok(r), None) => {
                    assert!(r.client_secret.is_none(), "{m}: no secret");
                    assert!(r.client.secret_hash.is_none());
                    assert_eq!(
                        r.client.token_endpoint_auth_method,
                        TokenEndpointAuthMethod::PrivateKeyJwt
                    );
                    assert!(r.client.is_confidential());
                    assert!(
                        crate::flows::client_assertion::ClientKeySource::of(&r.client).is_some(),
                        "{m}: the key source is kept"
                    );
                }
                (Err(e), Some(why)) => {
                    assert_eq!(e.code(), OAuthErrorCode::InvalidClientMetadata, "{m}: {e}");
                    assert!(e.description().contains(why), "{m}: {e}");
                }
                (got, _) => panic!("{m}: {got:?}"),
            }
        }
        // Keys sent with another method are not kept (they would mean nothing).
        let t = TestEnv::new().await;
        let r = register(
            &t.env,
            &meta(json!({"redirect_uris": cb, "jwks": {"keys": [jwk]}})),
        )
        .await
        .unwrap();
        assert!(!r.client.extra.contains_key("jwks"));
    }

    #[tokio::test]
    async fn registration_creates_the_client() {
        use serde_json::json;
        let t = TestEnv::new().await;
        t.advance(5);
        let confidential = register(
            &t.env,
            &meta(json!({
                "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb"],
                "token_endpoint_auth_method": "client_secret_post",
                "client_name": "  App  ",
                "scope": "read",
                "contacts": ["a@example.com"],
            })),
        )
        .await
        .unwrap();
        let secret = confidential.client_secret.clone().unwrap();
        let c = &confidential.client;
        assert!(!c.client_id.starts_with("https://"));
        assert_eq!(c.issued_at, t.start + 5, "issued at the flow's clock");
        assert_eq!(
            c.redirect_uris,
            ["https://app.example.com/cb"],
            "deduplicated"
        );
        assert_eq!(c.client_name.as_deref(), Some("App"));
        assert_eq!(c.application_type, ApplicationType::Web);
        assert_eq!(c.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(
            c.scope.as_ref().map(ToString::to_string).as_deref(),
            Some("read")
        );
        assert_eq!(c.source, ClientSource::Dynamic);
        // The store holds the secret's hash only, and the client authenticates with it.
        let stored = t
            .env
            .clients
            .get_client(&c.client_id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            stored
                .secret_hash
                .as_ref()
                .unwrap()
                .ct_eq(&SecretHash::of(&secret))
        );
        assert!(!format!("{confidential:?}").contains(&secret));

        let public = register(
            &t.env,
            &meta(json!({"redirect_uris": ["http://127.0.0.1/cb", "cursor://x/cb"]})),
        )
        .await
        .unwrap();
        assert!(public.client_secret.is_none());
        assert!(public.client.secret_hash.is_none());
        assert_eq!(public.client.application_type, ApplicationType::Native);
        assert_ne!(public.client.client_id, c.client_id);
    }

    /// Claude Code's registration, on a loopback port of its choosing.
    fn claude_code(port: u16) -> Map<String, Value> {
        meta(serde_json::json!({
            "client_name": "Claude Code (example)",
            "redirect_uris": [format!("http://localhost:{port}/callback")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
    }

    #[tokio::test]
    async fn the_same_public_registration_a_thousand_times_is_one_client() {
        let t = TestEnv::new().await;
        let first = register(&t.env, &claude_code(40001)).await.unwrap();
        assert!(!first.reused);
        for i in 0..1000u16 {
            // Another port each time, as Claude Code does: loopback ports do not count.
            let again = register(&t.env, &claude_code(40002 + i % 50))
                .await
                .unwrap();
            assert!(again.reused);
            assert_eq!(again.client.client_id, first.client.client_id);
            assert_eq!(again.client.issued_at, first.client.issued_at);
            assert!(again.client_secret.is_none());
            assert_eq!(
                again.client.redirect_uris,
                [format!("http://localhost:{}/callback", 40002 + i % 50)],
                "the answer names the URIs this registrant sent"
            );
        }
        // The client list holds the configured clients and the one registration.
        let dynamic = t.env.clients.count_clients().await.unwrap();
        assert_eq!(dynamic, 1, "one client in the store");
    }

    #[tokio::test]
    async fn different_metadata_is_a_different_client() {
        use serde_json::json;
        let t = TestEnv::new().await;
        let base = json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "App",
            "software_id": "app", "software_version": "1.0"});
        let id = |r: Registration| r.client.client_id;
        let first = id(register(&t.env, &meta(base.clone())).await.unwrap());
        assert_eq!(
            id(register(&t.env, &meta(base.clone())).await.unwrap()),
            first
        );
        let mut variants = Vec::new();
        for (field, value) in [
            ("redirect_uris", json!(["https://app.example.com/other"])),
            ("redirect_uris", json!(["https://evil.example.com/cb"])),
            ("client_name", json!("App 2")),
            ("software_id", json!("other-app")),
            ("software_version", json!("1.1")),
            ("scope", json!("read")),
            ("grant_types", json!(["authorization_code"])),
            ("application_type", json!("native")),
            ("logo_uri", json!("https://app.example.com/logo.png")),
        ] {
            let mut m = base.clone();
            m[field] = value;
            let got = id(register(&t.env, &meta(m.clone())).await.unwrap());
            assert_ne!(got, first, "{m}");
            assert!(!variants.contains(&got), "{m}");
            variants.push(got);
        }
        // Another loopback host, or another path, is another client too.
        let a = id(register(&t.env, &claude_code(1)).await.unwrap());
        let mut other_path = claude_code(1);
        other_path["redirect_uris"] = json!(["http://localhost:1/other"]);
        let mut other_host = claude_code(1);
        other_host["redirect_uris"] = json!(["http://127.0.0.1:1/callback"]);
        assert_ne!(id(register(&t.env, &other_path).await.unwrap()), a);
        assert_ne!(id(register(&t.env, &other_host).await.unwrap()), a);
        // The order of redirect URIs and grant types does not matter.
        let mut two = base.clone();
        two["redirect_uris"] = json!(["https://a.example.com/cb", "https://b.example.com/cb"]);
        let mut swapped = two.clone();
        swapped["redirect_uris"] = json!(["https://b.example.com/cb", "https://a.example.com/cb"]);
        assert_eq!(
            id(register(&t.env, &meta(two)).await.unwrap()),
            id(register(&t.env, &meta(swapped)).await.unwrap())
        );
    }

    #[tokio::test]
    async fn a_confidential_registration_never_returns_another_registrants_secret() {
        use serde_json::json;
        let t = TestEnv::new().await;
        let body = meta(json!({
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "client_name": "Claude",
            "token_endpoint_auth_method": "client_secret_post",
        }));
        let mut seen_ids = Vec::new();
        let mut seen_secrets = Vec::new();
        for _ in 0..5 {
            let r = register(&t.env, &body).await.unwrap();
            assert!(!r.reused);
            let secret = r.client_secret.clone().unwrap();
            assert!(!seen_ids.contains(&r.client.client_id));
            assert!(!seen_secrets.contains(&secret));
            seen_ids.push(r.client.client_id);
            seen_secrets.push(secret);
        }
        assert_eq!(t.env.clients.count_clients().await.unwrap(), 5);
        // Nor does a public registration with the same metadata get a confidential client.
        let mut public = body.clone();
        public.insert("token_endpoint_auth_method".into(), json!("none"));
        let p = register(&t.env, &public).await.unwrap();
        assert!(!seen_ids.contains(&p.client.client_id));
        assert!(p.client_secret.is_none());
    }

    /// A never-used client is reused during the first half of its never-used window only;
    /// a used one for as long as it exists.
    #[tokio::test]
    async fn reuse_follows_the_never_used_window() {
        let t = TestEnv::new().await;
        let window = t.env.unused_client_after.unwrap().as_secs();
        let first = register(&t.env, &claude_code(1)).await.unwrap().client;
        t.advance(window / 2 - 10);
        assert_eq!(
            register(&t.env, &claude_code(2))
                .await
                .unwrap()
                .client
                .client_id,
            first.client_id
        );
        t.advance(20);
        let second = register(&t.env, &claude_code(3)).await.unwrap();
        assert!(!second.reused, "too close to removal: a new client");
        assert_ne!(second.client.client_id, first.client_id);
        // The newest is reused from now on; once used, long after.
        t.env
            .clients
            .touch_client(&second.client.client_id, t.env.now())
            .await
            .unwrap();
        t.advance(10 * window);
        assert_eq!(
            register(&t.env, &claude_code(4))
                .await
                .unwrap()
                .client
                .client_id,
            second.client.client_id
        );
    }

    /// With remembered consent, loopback and custom-scheme clients are not shared (another
    /// local program would inherit the user's consent); `https` ones still are.
    #[tokio::test]
    async fn remembered_consent_limits_sharing_to_https_clients() {
        use serde_json::json;
        let mut t = TestEnv::new().await;
        t.env.remember_consent = true;
        let a = register(&t.env, &claude_code(1)).await.unwrap();
        let b = register(&t.env, &claude_code(1)).await.unwrap();
        assert!(!b.reused);
        assert_ne!(a.client.client_id, b.client.client_id);
        let cursor =
            meta(json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"]}));
        let a = register(&t.env, &cursor).await.unwrap();
        let b = register(&t.env, &cursor).await.unwrap();
        assert_ne!(a.client.client_id, b.client.client_id);
        let web = meta(json!({"redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}));
        let a = register(&t.env, &web).await.unwrap();
        let b = register(&t.env, &web).await.unwrap();
        assert!(b.reused);
        assert_eq!(a.client.client_id, b.client.client_id);
    }

    #[test]
    fn the_fingerprint_ignores_loopback_ports_and_order_only() {
        let parse = |m: &Map<String, Value>| parse_metadata(m, &defaults()).unwrap();
        let a = fingerprint(&parse(&claude_code(1)), None);
        assert_eq!(a, fingerprint(&parse(&claude_code(65535)), None));
        assert_ne!(a, fingerprint(&parse(&claude_code(1)), Some("registrant")));
        let mut b = claude_code(1);
        b["client_name"] = Value::String("Claude Code (other)".into());
        assert_ne!(a, fingerprint(&parse(&b), None));
    }
}
