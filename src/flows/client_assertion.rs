//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9):
//! the client proves who it is with a JWT signed by its private key, sent as
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//! `client_assertion=<JWT>`.
//!
//! The client's public keys are its [key source](ClientKeySource): the `jwks` it registered
//! (inline), or its `jwks_uri`, fetched through a [`KeyFetcher`] (the server's is SSRF-safe and
//! caches). Whoever made the client record (dynamic registration, a configured client, a
//! client ID metadata document) only has to put `jwks` or `jwks_uri` into
//! [`Client::extra`] and set [`TokenEndpointAuthMethod::PrivateKeyJwt`]; this flow does the
//! rest.
//!
//! An assertion is accepted only when all of this holds:
//!
//! - its `alg` is one of [`ALGORITHMS`] (ES256, EdDSA, RS256, PS256): never `none`, never an
//!   HMAC algorithm (a public key set cannot check those), and it must fit the key;
//! - its signature verifies with a key of the client's set, chosen by `kid` (or the only key
//!   that fits when there is no `kid`; several is refused, never guessed). A `kid` the set
//!   lacks makes a `jwks_uri` client's keys be fetched again, at most once per cooldown;
//! - `iss` and `sub` are both the client id;
//! - `aud` is this server's issuer or its token endpoint URL, byte for byte (a string, or an
//!   array holding nothing else); a root issuer may also be written with its trailing slash
//!   (`https://as.example.com/`, the same URL, as Python clients send it);
//! - `exp` is present, not past (with [`LEEWAY_SECS`] of clock skew) and at most
//!   [`MAX_LIFETIME_SECS`] (+ leeway) ahead: an assertion that lives for hours is a bearer
//!   token in disguise; `nbf` and `iat`, when present, are not in the future;
//! - `jti` is present (1 to 256 bytes) and was never used by this client before: it is
//!   recorded in the shared store ([`GrantStore::record_assertion_id`]) until `exp` + leeway,
//!   so a replay is refused by every instance sharing the store. The `jti` is recorded only
//!   after the signature checked out, so nobody else can burn a client's ids.
//!
//! Every refusal is `401 invalid_client` with a description that says which rule failed; a
//! `jwks_uri` that cannot be fetched is `503 temporarily_unavailable` (the client is not at
//! fault, and must not be told to register again), and so is a store failure.
//!
//! [`GrantStore::record_assertion_id`]: crate::store::GrantStore::record_assertion_id

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::Env;
use super::client_auth::printable_name;
use crate::error::OAuthError;
use crate::paths::Endpoint;
use crate::store::{Client, TokenEndpointAuthMethod};

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The signature algorithms accepted for client assertions, as advertised in
/// `token_endpoint_auth_signing_alg_values_supported`.
pub(crate) const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// Their JWA names, in the same order.
pub(crate) const ALGORITHM_NAMES: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];

/// How far ahead of now an assertion's `exp` may be (seconds), besides the leeway.
pub(crate) const MAX_LIFETIME_SECS: u64 = 600;

/// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
pub(crate) const LEEWAY_SECS: u64 = 60;

/// The longest assertion read (bytes).
const MAX_ASSERTION_LEN: usize = 8 * 1024;

/// The longest `jti` accepted (bytes).
const MAX_JTI_LEN: usize = 256;

/// The most keys a client's set may hold.
pub(crate) const MAX_KEYS: usize = 10;

/// Where a client's public keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKeySource<'a> {
    /// A JWK Set registered inline (`jwks`).
    Inline(&'a Value),
    /// A JWK Set published at a URL (`jwks_uri`).
    Uri(&'a str),
}

impl<'a> ClientKeySource<'a> {
    /// The key source a client record names: `jwks` or `jwks_uri` in its metadata. `None`
    /// when it names neither or both (registration refuses both).
    pub(crate) fn of(client: &'a Client) -> Option<Self> {
        match (client.extra.get("jwks"), client.extra.get("jwks_uri")) {
            (Some(jwks), None) => Some(Self::Inline(jwks)),
            (None, Some(Value::String(uri))) => Some(Self::Uri(uri)),
            _ => None,
        }
    }
}

/// The key types a client key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    EcP256,
    Ed25519,
}

impl KeyType {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (Self::Rsa, Algorithm::RS256 | Algorithm::PS256)
                | (Self::EcP256, Algorithm::ES256)
                | (Self::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// One usable verification key of a client.
pub(crate) struct ClientKey {
    kid: Option<String>,
    key_type: KeyType,
    /// The key's own `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key_type.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Parses one JWK into a usable key, or says why it is not one.
fn parse_key(value: &Value) -> Result<Option<ClientKey>, String> {
    let Some(obj) = value.as_object() else {
        return Err("every key must be a JSON object".to_owned());
    };
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(format!(
            "a key holds the private member `{m}`: publish public keys only"
        ));
    }
    if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Ok(None);
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => match ALGORITHMS
            .iter()
            .zip(ALGORITHM_NAMES)
            .find(|(_, n)| n == name)
        {
            Some((a, _)) => Some(*a),
            None => return Ok(None),
        },
        Some(_) => return Err("a key's `alg` must be a string".to_owned()),
    };
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("a key's `kid` must be a string".to_owned()),
    };
    let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
        return Err("a key is not a valid JWK".to_owned());
    };
    let key_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyType::EcP256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyType::Ed25519
        }
        _ => return Ok(None),
    };
    let Ok(key) = DecodingKey::from_jwk(&jwk) else {
        return Err("a key's parameters are not a valid public key".to_owned());
    };
    Ok(Some(ClientKey {
        kid,
        key_type,
        alg,
        key,
    }))
}

/// Parses a client's JWK Set: a JSON object with a `keys` array of at most [`MAX_KEYS`] public
/// keys, at least one of which can verify one of [`ALGORITHMS`]. Keys of other types (P-384,
/// encryption keys) are skipped; a private key member anywhere is an error.
///
/// # Errors
/// What is wrong with the set, for an `invalid_client_metadata` or `invalid_client`
/// description.
pub(crate) fn parse_jwks(doc: &Value) -> Result<Vec<ClientKey>, String> {
    let Some(keys) = doc.as_object().and_then(|d| d.get("keys")) else {
        return Err("a JWK Set must be a JSON object with a `keys` array".to_owned());
    };
    let Some(keys) = keys.as_array() else {
        return Err("a JWK Set must be a JSON object with a `keys` array".to_owned());
    };
    if keys.len() > MAX_KEYS {
        return Err(format!("a JWK Set may hold at most {MAX_KEYS} keys"));
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(key) = parse_key(k)? {
            out.push(key);
        }
    }
    if out.is_empty() {
        return Err(
            "the JWK Set holds no public signing key for ES256, EdDSA, RS256 or PS256".to_owned(),
        );
    }
    Ok(out)
}

/// Why a client's `jwks_uri` could not be used. Answered `503 temporarily_unavailable`.
#[derive(Debug, Clone)]
pub(crate) struct KeyFetchError(pub(crate) String);

/// Fetches (and caches) the key sets of `jwks_uri` clients.
#[async_trait]
pub(crate) trait KeyFetcher: Send + Sync {
    /// The keys published at `uri`. `refetch`: the cached keys lack the assertion's key, so
    /// fetch again unless that was done within the cooldown.
    async fn keys(&self, uri: &str, refetch: bool) -> Result<Arc<[ClientKey]>, KeyFetchError>;
}

fn refuse(description: impl Into<String>) -> OAuthError {
    OAuthError::invalid_client(description.into(), false)
}

/// A base64url JSON segment of a JWT, as an object.
fn segment(token: &str, index: usize) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The client an assertion claims to come from (its `sub`), read without verifying anything,
/// to find the client whose keys then verify it.
///
/// # Errors
/// `invalid_client` when the assertion is not a JWT with a string `sub`.
pub(crate) fn claimed_client_id(assertion: &str) -> Result<String, OAuthError> {
    if assertion.len() > MAX_ASSERTION_LEN {
        return Err(refuse("The client assertion is too long"));
    }
    segment(assertion, 1)
        .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| {
            refuse("The client assertion is not a JWT naming the client in `sub`; send client_id or a well-formed assertion")
        })
}

enum Selected<'a> {
    Key(&'a ClientKey),
    Missing,
    Ambiguous,
}

fn select<'a>(keys: &'a [ClientKey], kid: Option<&str>, alg: Algorithm) -> Selected<'a> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg))
            .map_or(Selected::Missing, Selected::Key),
        None => {
            let mut fitting = keys.iter().filter(|k| k.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Selected::Key(k),
                (None, _) => Selected::Missing,
                (Some(_), Some(_)) => Selected::Ambiguous,
            }
        }
    }
}

fn fetch_error(client: &Client, e: &KeyFetchError) -> OAuthError {
    tracing::warn!(target: "mcp_oauth::token", client_id = %client.client_id, error = %e.0,
        "client jwks_uri could not be fetched");
    OAuthError::temporarily_unavailable(
        format!(
            "The client's jwks_uri could not be fetched ({}); retry later",
            e.0
        ),
        5,
    )
}

/// Authenticates `client` by its `assertion`; see the [module docs](self).
///
/// # Errors
/// `401 invalid_client` naming the broken rule; `503 temporarily_unavailable` when the
/// client's `jwks_uri` cannot be fetched or the store fails.
pub(crate) async fn verify_assertion(
    env: &Env,
    fetcher: Option<&dyn KeyFetcher>,
    client: &Client,
    assertion: &str,
) -> Result<(), OAuthError> {
    let id = client.client_id.as_str();
    if client.token_endpoint_auth_method != TokenEndpointAuthMethod::PrivateKeyJwt {
        return Err(refuse(format!(
            "Client {} is not registered for private_key_jwt; authenticate with {}",
            printable_name(id),
            client.token_endpoint_auth_method.as_str()
        )));
    }
    if assertion.len() > MAX_ASSERTION_LEN {
        return Err(refuse("The client assertion is too long"));
    }

    // The header: an accepted algorithm, and the key it names.
    let Some(header) = segment(assertion, 0) else {
        return Err(refuse("The client assertion is not a JWT"));
    };
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(alg) = ALGORITHM_NAMES
        .iter()
        .position(|n| *n == alg_name)
        .map(|i| ALGORITHMS[i])
    else {
        return Err(refuse(format!(
            "The client assertion's alg {} is not accepted; sign with ES256, EdDSA, RS256 or PS256",
            printable_name(alg_name)
        )));
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(refuse("The client assertion's kid must be a string")),
    };

    // The keys.
    let Some(source) = ClientKeySource::of(client) else {
        return Err(refuse(
            "The client has no registered jwks or jwks_uri to verify its assertion with",
        ));
    };
    let mut keys: Arc<[ClientKey]> = match source {
        ClientKeySource::Inline(doc) => parse_jwks(doc)
            .map_err(|why| refuse(format!("The client's registered jwks is unusable: {why}")))?
            .into(),
        ClientKeySource::Uri(uri) => {
            let Some(fetcher) = fetcher else {
                return Err(fetch_error(
                    client,
                    &KeyFetchError("this server has no HTTP client for jwks_uri".to_owned()),
                ));
            };
            fetcher
                .keys(uri, false)
                .await
                .map_err(|e| fetch_error(client, &e))?
        }
    };
    if matches!(select(&keys, kid, alg), Selected::Missing)
        && let (ClientKeySource::Uri(uri), Some(fetcher)) = (source, fetcher)
    {
        // The client may have rotated its keys: look once more (the fetcher's cooldown
        // keeps a stream of unknown kids from turning into a stream of fetches).
        keys = fetcher
            .keys(uri, true)
            .await
            .map_err(|e| fetch_error(client, &e))?;
    }
    let key = match select(&keys, kid, alg) {
        Selected::Key(k) => k,
        Selected::Missing => {
            return Err(refuse(match kid {
                Some(kid) => format!(
                    "No key of the client has kid {} for {alg_name}",
                    printable_name(kid)
                ),
                None => format!("No key of the client can verify {alg_name}"),
            }));
        }
        Selected::Ambiguous => {
            return Err(refuse(
                "Several keys of the client fit the assertion; name one with kid",
            ));
        }
    };

    // The signature (claims are checked below, against the injected clock).
    crate::crypto::install_provider();
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims::<&str>(&[]);
    let claims = match jsonwebtoken::decode::<Map<String, Value>>(assertion, &key.key, &validation)
    {
        Ok(data) => data.claims,
        Err(e) => {
            tracing::info!(target: "mcp_oauth::security", client_id = %id, error = %e,
                "client assertion refused: signature");
            return Err(refuse(
                "The client assertion's signature does not verify with the client's key",
            ));
        }
    };

    // The claims.
    let string = |name: &str| claims.get(name).and_then(Value::as_str);
    if string("iss") != Some(id) || string("sub") != Some(id) {
        return Err(refuse(
            "The client assertion's iss and sub must both be the client_id",
        ));
    }
    let issuer = env.cfg.issuer();
    let token_endpoint = Endpoint::Token.url(issuer);
    // A root issuer written with its slash (`https://as.example.com/`) is the same URL; Python
    // clients (pydantic URLs) send it that way.
    let root_with_slash = url::Url::parse(issuer)
        .ok()
        .filter(|u| u.path() == "/" && !issuer.ends_with('/'))
        .map(|_| format!("{issuer}/"));
    let ours = |v: &Value| {
        v.as_str().is_some_and(|a| {
            a == issuer || a == token_endpoint || root_with_slash.as_deref() == Some(a)
        })
    };
    let aud_ok = match claims.get("aud") {
        Some(v @ Value::String(_)) => ours(v),
        Some(Value::Array(list)) => !list.is_empty() && list.iter().all(ours),
        _ => false,
    };
    if !aud_ok {
        return Err(refuse(format!(
            "The client assertion's aud must be this server's issuer ({issuer}) or token endpoint ({token_endpoint})"
        )));
    }
    let now = env.now();
    let time = |name: &str| claims.get(name).map(|v| v.as_u64().ok_or(()));
    let exp = match time("exp") {
        Some(Ok(exp)) => exp,
        None => return Err(refuse("The client assertion has no exp")),
        Some(Err(())) => return Err(refuse("The client assertion's exp is not a time")),
    };
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(refuse("The client assertion has expired"));
    }
    if exp > now + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(refuse(format!(
            "The client assertion's exp is too far ahead; assertions may live at most {MAX_LIFETIME_SECS} seconds"
        )));
    }
    for name in ["nbf", "iat"] {
        match time(name) {
            None => {}
            Some(Ok(t)) if t <= now + LEEWAY_SECS => {}
            Some(Ok(_)) => {
                return Err(refuse(format!(
                    "The client assertion's {name} is in the future"
                )));
            }
            Some(Err(())) => {
                return Err(refuse(format!(
                    "The client assertion's {name} is not a time"
                )));
            }
        }
    }
    let jti = match string("jti") {
        Some(j) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j,
        Some(_) => {
            return Err(refuse(format!(
                "The client assertion's jti must be 1 to {MAX_JTI_LEN} bytes"
            )));
        }
        None => return Err(refuse("The client assertion has no jti")),
    };

    // Single use, across every instance sharing the store.
    let first = env
        .grants
        .record_assertion_id(id, jti, exp.saturating_add(LEEWAY_SECS), now)
        .await?;
    if !first {
        tracing::warn!(target: "mcp_oauth::security", client_id = %id,
            "client assertion replayed (jti already used)");
        return Err(refuse(
            "The client assertion was used before (jti replay); sign a new one for every request",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
