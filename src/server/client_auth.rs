//! Client authentication at the token, revocation and introspection endpoints, and the strict
//! form parsing those endpoints share.
//!
//! Three methods are accepted (RFC 6749 §2.3, RFC 7591 §2):
//!
//! | method | what the client sends |
//! |---|---|
//! | `none` | `client_id` in the body; a public client, PKCE protects the code |
//! | `client_secret_basic` | `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` |
//! | `client_secret_post` | `client_id` and `client_secret` in the body |
//! | `private_key_jwt` (feature `private-key-jwt`) | `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion=<JWT>`, optionally `client_id` |
//!
//! This file is the wire half: it reads the credentials off the header and the form and
//! refuses malformed or mixed ones; whether they authenticate the client is decided by
//! [`flows::client_auth`](crate::flows).
//!
//! A request using more than one method (Basic *and* `client_secret` in the body) is
//! `invalid_request`, as RFC 6749 §2.3 demands. An unknown client is `401 invalid_client`
//! (Claude registers again on exactly that answer), with a `WWW-Authenticate: Basic`
//! challenge when the client tried Basic. A confidential client must present its secret,
//! which is hashed and compared with
//! [`SecretHash::ct_eq`](crate::store::SecretHash::ct_eq); a public client must not present
//! one. A confidential client may use either `client_secret_basic` or `client_secret_post`,
//! whichever it registered: real clients do not always use the method they asked for.
//!
//! **`private_key_jwt`** (RFC 7523 §2.2, feature `private-key-jwt`; without the feature a
//! `client_assertion` is answered `invalid_client`): a client registered with
//! `token_endpoint_auth_method: private_key_jwt` and its public keys (`jwks` inline or a
//! `jwks_uri`, see [`client_jwks`](super::client_jwks)) signs a JWT for every request. The
//! JWT is accepted only when:
//!
//! - its `alg` is ES256, EdDSA, RS256 or PS256 (never `none` or HMAC) and it verifies with
//!   the client's key named by `kid` (an unknown `kid` makes a `jwks_uri` be fetched again,
//!   at most once per cooldown);
//! - `iss` and `sub` are both the client id (and equal `client_id` when the body sends one);
//! - `aud` is the issuer or the token endpoint URL, byte for byte, nothing else (a root
//!   issuer may carry its trailing slash);
//! - `exp` is present, not past (60 s leeway), at most 10 minutes ahead; `nbf` and `iat`,
//!   when present, are not in the future;
//! - `jti` is present and new: it is recorded in the grant store until `exp`
//!   ([`GrantStore::record_assertion_id`](crate::store::GrantStore::record_assertion_id)),
//!   so a replay is refused by every instance sharing the store.
//!
//! A failure is `401 invalid_client` naming the rule; a `jwks_uri` that cannot be fetched is
//! `503 temporarily_unavailable` (never `invalid_client`, which tells clients to register
//! again). A `private_key_jwt` client that sends only its `client_id` or a secret is
//! `invalid_client`; an assertion together with a secret or Basic is `invalid_request`.
//!
//! Secrets never appear in logs or in error descriptions.

use std::collections::HashMap;

use axum::body::Body;
use base64::Engine as _;
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE};

use super::AsContext;
use crate::error::{OAuthError, OAuthErrorCode};
pub(crate) use crate::flows::client_auth::printable_name;
use crate::flows::client_auth::{ClientCredentials, authenticate as authenticate_client};
use crate::store::Client;

/// Largest form body the endpoints read (a token request is a few hundred bytes; a JWT to
/// revoke or introspect at most 8 KiB).
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;

/// The parameters of an `application/x-www-form-urlencoded` body, each present at most once.
///
/// Empty values count as absent (RFC 6749 §3.1: "Parameters sent without a value MUST be
/// treated as if they were omitted from the request").
#[derive(Debug, Default)]
pub(crate) struct FormParams {
    params: HashMap<String, String>,
}

impl FormParams {
    /// Parses a form body, refusing any parameter that appears twice (RFC 6749 §3.2:
    /// "Request and response parameters MUST NOT be included more than once"). A repeated
    /// `resource` is `invalid_target` (RFC 8707 allows several, this server binds one);
    /// anything else repeated is `invalid_request`.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if params.contains_key(k.as_ref()) {
                return Err(if k == "resource" {
                    OAuthError::new(
                        OAuthErrorCode::InvalidTarget,
                        "Only one resource parameter is supported per request",
                    )
                } else {
                    OAuthError::new(
                        OAuthErrorCode::InvalidRequest,
                        format!("Parameter {} is repeated", printable_name(&k)),
                    )
                });
            }
            params.insert(k.into_owned(), v.into_owned());
        }
        Ok(Self { params })
    }

    /// A parameter's value; `None` when absent or empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Reads a request body as a form: the content type must be
/// `application/x-www-form-urlencoded` (a JSON body is `invalid_request`, since the specs and
/// every client use forms), at most [`MAX_FORM_BYTES`], with no repeated parameter.
pub(crate) async fn read_form(headers: &HeaderMap, body: Body) -> Result<FormParams, OAuthError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "The request body must be application/x-www-form-urlencoded",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "The request body is too large or could not be read",
            )
        })?;
    FormParams::parse(&bytes)
}

/// Credentials from an `Authorization: Basic` header.
struct BasicCredentials {
    client_id: String,
    secret: Option<String>,
}

/// Decodes one half of Basic credentials: `application/x-www-form-urlencoded` decoding
/// (RFC 6749 §2.3.1), `+` is a space, `%XX` a byte; a `%` not followed by two hex digits
/// stays as it is (the same leniency as form decoding). `None` when the result is not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The Basic credentials of the request, if it carries any. Other schemes are not client
/// authentication and are ignored; several `Authorization` headers are `invalid_request`;
/// undecodable Basic credentials are `invalid_client` with a Basic challenge.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, OAuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "More than one Authorization header",
        ));
    }
    let malformed = || OAuthError::invalid_client("Malformed Basic credentials", true);
    let Ok(value) = value.to_str() else {
        return Err(malformed());
    };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let rest = rest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(rest))
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let client_id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if client_id.is_empty() {
        return Err(malformed());
    }
    Ok(Some(BasicCredentials {
        client_id,
        secret: (!secret.is_empty()).then_some(secret),
    }))
}

/// Authenticates the client of a token, revocation or introspection request; see the
/// [module docs](self) for the rules.
///
/// # Errors
/// `invalid_request` for more than one authentication method; `401 invalid_client` for no
/// authentication, an unknown client, a wrong, missing, unexpected or expired secret, or an
/// unsupported method; `503 temporarily_unavailable` when the store fails.
pub(crate) async fn authenticate(
    ctx: &AsContext,
    headers: &HeaderMap,
    form: &FormParams,
) -> Result<Client, OAuthError> {
    let basic = basic_credentials(headers)?;
    let used_basic = basic.is_some();
    if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        #[cfg(feature = "private-key-jwt")]
        {
            if used_basic || form.get("client_secret").is_some() {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    "More than one client authentication method (client_assertion and a client secret)",
                ));
            }
            return authenticate_assertion(ctx, form).await;
        }
        #[cfg(not(feature = "private-key-jwt"))]
        return Err(OAuthError::invalid_client(
            "Client assertions (private_key_jwt) are not supported; use none, client_secret_basic or client_secret_post",
            used_basic,
        ));
    }
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    let (client_id, secret): (&str, Option<&str>) = match &basic {
        Some(b) => {
            if body_secret.is_some() {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    "More than one client authentication method (HTTP Basic and client_secret in the body)",
                ));
            }
            if body_id.is_some_and(|id| id != b.client_id) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    "client_id in the body differs from the HTTP Basic client id",
                ));
            }
            (b.client_id.as_str(), b.secret.as_deref())
        }
        None => match body_id {
            Some(id) => (id, body_secret),
            None => {
                return Err(OAuthError::invalid_client(
                    "No client authentication: send client_id (public clients) or the client credentials",
                    false,
                ));
            }
        },
    };
    let client = authenticate_client(
        &ctx.env,
        ClientCredentials {
            client_id,
            secret,
            used_basic,
        },
    )
    .await?;
    super::retention::note_use(ctx, &client).await;
    Ok(client)
}

/// Authenticates a client by its `client_assertion` (RFC 7523 §2.2); see
/// [`flows::client_assertion`](crate::flows) for the rules.
#[cfg(feature = "private-key-jwt")]
async fn authenticate_assertion(ctx: &AsContext, form: &FormParams) -> Result<Client, OAuthError> {
    use crate::flows::client_assertion::{
        JWT_BEARER, KeyFetcher, claimed_client_id, verify_assertion,
    };
    if form.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err(OAuthError::invalid_client(
            format!("client_assertion_type must be {JWT_BEARER}"),
            false,
        ));
    }
    let Some(assertion) = form.get("client_assertion") else {
        return Err(OAuthError::invalid_client(
            "client_assertion_type without a client_assertion",
            false,
        ));
    };
    // The client is the one named in the body, or else the assertion's `sub` (RFC 7521
    // §4.2 makes client_id optional); the assertion must then name that client as iss and
    // sub, which the flow checks once the signature verifies.
    let client_id = match form.get("client_id") {
        Some(id) => id.to_owned(),
        None => claimed_client_id(assertion)?,
    };
    let Some(client) = ctx.env.client(&client_id).await? else {
        tracing::debug!(target: "mcp_oauth::token",
            client_id = %printable_name(&client_id), "unknown client");
        return Err(OAuthError::invalid_client(
            "Unknown client; register again",
            false,
        ));
    };
    let fetcher = ctx
        .server
        .client_jwks
        .as_deref()
        .map(|f| f as &dyn KeyFetcher);
    verify_assertion(&ctx.env, fetcher, &client, assertion).await?;
    super::retention::note_use(ctx, &client).await;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_follows_rfc6749_2_3_1() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("%25%2B%26").as_deref(), Some("%+&"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(form_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(form_decode("%FF"), None);
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let e = FormParams::parse(b"a=1&a=2").unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::InvalidRequest);
        let e = FormParams::parse(b"resource=x&resource=y").unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::InvalidTarget);
        let f = FormParams::parse(b"a=&b=2").unwrap();
        assert_eq!(f.get("a"), None);
        assert_eq!(f.get("b"), Some("2"));
    }

    #[test]
    fn basic_header_parsing() {
        let mut h = HeaderMap::new();
        let creds = base64::engine::general_purpose::STANDARD.encode("my%3Aid:p%40ss+word");
        h.insert(AUTHORIZATION, format!("Basic {creds}").parse().unwrap());
        let b = basic_credentials(&h).unwrap().unwrap();
        assert_eq!(b.client_id, "my:id");
        assert_eq!(b.secret.as_deref(), Some("p@ss word"));

        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(basic_credentials(&h).unwrap().is_none());

        h.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        let e = basic_credentials(&h).err().unwrap();
        assert_eq!(e.code(), OAuthErrorCode::InvalidClient);

        let no_colon = base64::engine::general_purpose::STANDARD.encode("justid");
        h.insert(AUTHORIZATION, format!("Basic {no_colon}").parse().unwrap());
        assert!(basic_credentials(&h).is_err());
    }
}
