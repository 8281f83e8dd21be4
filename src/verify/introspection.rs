//! [`IntrospectionVerifier`]: opaque access tokens, checked by asking the authorization
//! server (RFC 7662 token introspection).
//!
//! See [`IntrospectionVerifier`] for what is sent and checked.
//!
//! ```no_run
//! use std::time::Duration;
//! use mcp_oauth::verify::{IntrospectionVerifier, TokenVerifier};
//!
//! # async fn run(token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = IntrospectionVerifier::builder("https://auth.example.com/oauth2/introspect")
//!     .client_credentials("mcp-server", "s3cret")
//!     .issuer("https://auth.example.com")
//!     .audience("https://mcp.example.com/mcp")
//!     .cache_ttl(Duration::from_secs(10))
//!     .build()?;
//! let ctx = verifier.verify(token).await?;
//! println!("{} with scopes {}", ctx.subject(), ctx.scopes());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Map, Value};

use super::jwt::claims_to_context;
use super::{TokenVerifier, VerifyError};
use crate::config::{Compat, ConfigError};
use crate::context::{AuthContext, TokenKind};

/// Largest token sent for introspection; anything longer is refused unseen.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

struct Shared {
    endpoint: String,
    client_id: String,
    /// `Basic …`, marked sensitive.
    authorization: HeaderValue,
    issuer: String,
    audiences: Vec<String>,
    allow_missing_audience: bool,
    leeway: u64,
    cache_ttl: Duration,
    http: reqwest::Client,
}

/// Verifies opaque access tokens through RFC 7662 introspection.
///
/// Each verification POSTs `token=…&token_type_hint=access_token` to the introspection
/// endpoint with `Accept: application/json`, authenticating as a confidential client with
/// `client_secret_basic` (client id and secret form-urlencoded before base64, RFC 6749
/// §2.3.1). The answer is then checked like a JWT's claims:
///
/// - `active` must be `true`, otherwise [`VerifyError::Inactive`];
/// - `iss`, when present, must equal the configured issuer byte for byte;
/// - `aud` (a string or an array) must name one of the configured audiences. Many
///   authorization servers leave `aud` out; accepting that takes the named switch
///   [`Compat::IntrospectionWithoutAudience`](crate::Compat::IntrospectionWithoutAudience);
/// - `exp` and `nbf`, when present, are checked with the leeway (default 60 s);
/// - a `token_type` other than `Bearer` (a DPoP-bound token, say) is refused.
///
/// The subject is `sub`, else `username`, else `client_id` (a client-credentials token has
/// no user). Scopes come from `scope`. A network error, a timeout, or an answer other than
/// `200` (the endpoint refusing our client credentials included) is
/// [`VerifyError::Unavailable`], which the layer answers with `503` so that clients keep
/// their token. A `400` with `unsupported_token_type` or `invalid_token` (some servers
/// refuse to introspect JWTs) is [`VerifyError::Unknown`], so a
/// [`ChainVerifier`](super::ChainVerifier) moves on.
///
/// Introspection costs a round trip per token, so the layer caches successful answers for
/// [`cache_ttl`](IntrospectionVerifierBuilder::cache_ttl) (default 30 s, never beyond the
/// token's `exp`): a token revoked at the authorization server keeps working until its
/// cache entry expires.
///
/// Cheap to clone (one `Arc`).
///
/// ```
/// use std::time::Duration;
/// use mcp_oauth::Compat;
/// use mcp_oauth::verify::{IntrospectionVerifier, TokenVerifier};
///
/// let verifier = IntrospectionVerifier::builder("https://auth.example.com/introspect")
///     .client_credentials("mcp-server", "s3cret")
///     .issuer("https://auth.example.com")
///     .audience("https://mcp.example.com/mcp")
///     .compat(Compat::IntrospectionWithoutAudience) // this server leaves `aud` out
///     .cache_ttl(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(verifier.cache_ttl(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct IntrospectionVerifier {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for IntrospectionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionVerifier")
            .field("endpoint", &self.inner.endpoint)
            .field("client_id", &self.inner.client_id)
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .field("cache_ttl", &self.inner.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl IntrospectionVerifier {
    /// Starts a builder for the introspection endpoint at `endpoint` (the authorization
    /// server metadata's `introspection_endpoint`).
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionVerifierBuilder {
        IntrospectionVerifierBuilder {
            endpoint: endpoint.into(),
            credentials: None,
            issuer: None,
            audiences: Vec::new(),
            cache_ttl: Duration::from_secs(30),
            leeway: Duration::from_secs(60),
            http: None,
            compat: Vec::new(),
        }
    }

    /// Asks the endpoint about `token`; returns the response object of a `200`.
    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let s = &self.inner;
        let unavailable = |why: String| VerifyError::Unavailable(why);
        let response = s
            .http
            .post(&s.endpoint)
            .header(AUTHORIZATION, s.authorization.clone())
            .header(ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                unavailable(format!(
                    "introspection request to {} failed: {}",
                    s.endpoint,
                    e.without_url()
                ))
            })?;
        let status = response.status();
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|why| unavailable(format!("introspection response: {why}")))?;
        let json: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        if status != reqwest::StatusCode::OK {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect::<String>();
            // RFC 7009 / 7662: the server does not introspect this kind of token (a JWT, for
            // instance): not a token for this verifier.
            if status == reqwest::StatusCode::BAD_REQUEST
                && matches!(code.as_str(), "unsupported_token_type" | "invalid_token")
            {
                return Err(VerifyError::Unknown);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                tracing::error!(
                    target: "mcp_oauth::introspection",
                    endpoint = %s.endpoint,
                    client_id = %s.client_id,
                    %status,
                    error = %code,
                    "the introspection endpoint refused this server's client credentials"
                );
                return Err(unavailable(format!(
                    "the introspection endpoint refused the client credentials of {:?} (HTTP {status} {code})",
                    s.client_id
                )));
            }
            return Err(unavailable(format!(
                "the introspection endpoint answered HTTP {status} {code}"
            )));
        }
        json.ok_or_else(|| unavailable("the introspection response is not a JSON object".into()))
    }

    /// Applies the checks listed on [`IntrospectionVerifier`] to a response.
    fn check(&self, claims: Map<String, Value>) -> Result<AuthContext, VerifyError> {
        let s = &self.inner;
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(VerifyError::Inactive);
        }
        if let Some(tt) = claims.get("token_type") {
            let bearer = tt
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
            if !bearer {
                return Err(VerifyError::WrongType);
            }
        }
        match claims.get("iss") {
            None => {}
            Some(Value::String(iss)) if *iss == s.issuer => {}
            Some(_) => return Err(VerifyError::WrongIssuer),
        }
        let audience_ok = match claims.get("aud") {
            None => s.allow_missing_audience,
            Some(Value::String(aud)) => s.audiences.contains(aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|a| s.audiences.iter().any(|ours| ours == a)),
            Some(_) => false,
        };
        if !audience_ok {
            return Err(VerifyError::WrongAudience);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match claims.get("exp") {
            None => {}
            Some(exp) => match exp.as_u64() {
                Some(exp) if now > exp.saturating_add(s.leeway) => {
                    return Err(VerifyError::Expired);
                }
                Some(_) => {}
                None => return Err(VerifyError::MissingClaim("exp")),
            },
        }
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_u64() {
                Some(nbf) if nbf > now.saturating_add(s.leeway) => {
                    return Err(VerifyError::NotYetValid);
                }
                Some(_) => {}
                None => return Err(VerifyError::MissingClaim("nbf")),
            }
        }
        // The subject: `sub`, else `username`, else `client_id` (client-credentials tokens).
        if claims.get("sub").and_then(Value::as_str).is_some() {
            return claims_to_context(claims, TokenKind::Introspection, false);
        }
        let subject = ["username", "client_id"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .ok_or(VerifyError::MissingClaim("sub"))?
            .to_owned();
        let mut with_sub = claims.clone();
        with_sub.insert("sub".to_owned(), Value::String(subject));
        Ok(claims_to_context(with_sub, TokenKind::Introspection, false)?.with_claims(claims))
    }
}

#[async_trait]
impl TokenVerifier for IntrospectionVerifier {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed);
        }
        let claims = self.introspect(token).await?;
        self.check(claims)
    }

    fn cache_ttl(&self) -> Duration {
        self.inner.cache_ttl
    }
}

/// Builds an [`IntrospectionVerifier`]. [`client_credentials`](Self::client_credentials),
/// [`issuer`](Self::issuer) and [`audience`](Self::audience) are required.
#[must_use]
pub struct IntrospectionVerifierBuilder {
    endpoint: String,
    credentials: Option<(String, String)>,
    issuer: Option<String>,
    audiences: Vec<String>,
    cache_ttl: Duration,
    leeway: Duration,
    http: Option<reqwest::Client>,
    compat: Vec<Compat>,
}

impl std::fmt::Debug for IntrospectionVerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionVerifierBuilder")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("compat", &self.compat)
            .finish_non_exhaustive()
    }
}

impl IntrospectionVerifierBuilder {
    /// This server's client registration at the authorization server, sent with
    /// `client_secret_basic` (required: RFC 7662 endpoints authenticate their callers).
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.credentials = Some((client_id.into(), client_secret.into()));
        self
    }

    /// The authorization server's issuer (required). A response carrying `iss` must match it
    /// byte for byte.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// An accepted audience: this MCP server's resource URL (required; call again to accept
    /// several). The response's `aud` must name one of them.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// How long the layer may reuse an answer (default 30 s; never beyond the token's
    /// `exp`). `Duration::ZERO` asks the endpoint on every request.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Clock leeway for `exp` and `nbf` (default 60 s, at most 24 h).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The HTTP client. The default has 5 s connect and 10 s total timeouts and follows no
    /// redirects; a client you pass is used as it is.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Turns on a [`Compat`] switch: [`Compat::IntrospectionWithoutAudience`] accepts
    /// responses without `aud`; [`Compat::ExtraAudience`] accepts one more `aud`. Each is
    /// logged once when the verifier is built.
    pub fn compat(mut self, switch: Compat) -> Self {
        self.compat.push(switch);
        self
    }

    /// Builds the verifier (no network call).
    ///
    /// # Errors
    /// [`ConfigError::MissingIssuer`] or [`ConfigError::MissingResource`] (no audience) when
    /// those were not set; [`ConfigError::InvalidUrl`] when the endpoint is not an `https`
    /// URL (plain `http` is allowed for loopback hosts only), when no client credentials were
    /// given, or when the HTTP client cannot be created.
    pub fn build(self) -> Result<IntrospectionVerifier, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidUrl {
            field: "introspection endpoint",
            value: self.endpoint.clone(),
            reason,
        };
        check_endpoint_url("introspection endpoint", &self.endpoint).map_err(&invalid)?;
        let Some((client_id, secret)) = &self.credentials else {
            return Err(invalid(
                "no client credentials: call `.client_credentials(id, secret)`; \
                 introspection endpoints authenticate their callers"
                    .to_owned(),
            ));
        };
        let issuer = self.issuer.clone().ok_or(ConfigError::MissingIssuer)?;
        if self.audiences.is_empty() {
            return Err(ConfigError::MissingResource);
        }
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(client_id),
            encode(secret)
        ));
        let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|_| invalid("the client credentials cannot be sent in a header".to_owned()))?;
        authorization.set_sensitive(true);
        let http = match &self.http {
            Some(c) => c.clone(),
            None => default_http_client()
                .map_err(|e| invalid(format!("the HTTP client could not be created: {e}")))?,
        };
        let mut audiences = self.audiences.clone();
        let mut allow_missing_audience = false;
        for c in &self.compat {
            c.warn();
            match c {
                Compat::IntrospectionWithoutAudience => allow_missing_audience = true,
                Compat::ExtraAudience(aud) => audiences.push(aud.clone()),
                Compat::GenericJwtType => {}
            }
        }
        Ok(IntrospectionVerifier {
            inner: Arc::new(Shared {
                endpoint: self.endpoint.clone(),
                client_id: client_id.clone(),
                authorization,
                issuer,
                audiences,
                allow_missing_audience,
                leeway: self.leeway.min(Duration::from_secs(24 * 60 * 60)).as_secs(),
                cache_ttl: self.cache_ttl,
                http,
            }),
        })
    }
}

// The HTTP helpers below mirror those of `remote_jwks` (each feature compiles alone).

/// `https`, or `http` to a loopback host (development); no fragment.
fn check_endpoint_url(field: &str, value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("{field} {value:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "{field} {value:?} must be an https URL (plain http only for loopback hosts)"
            ));
        }
    }
    if url.fragment().is_some() {
        return Err(format!("{field} {value:?} must not have a fragment"));
    }
    Ok(())
}

/// The HTTP client used when none is given: 5 s to connect, 10 s in all, no redirects.
fn default_http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-oauth/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Reads at most `limit` bytes of a response body; a longer body is an error.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(format!("the response is larger than {} KiB", limit / 1024));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("the response is larger than {} KiB", limit / 1024));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the response failed: {}", e.without_url())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(compat: Option<Compat>) -> IntrospectionVerifier {
        let mut b = IntrospectionVerifier::builder("http://127.0.0.1:9/introspect")
            .client_credentials("rs", "secret")
            .issuer("http://127.0.0.1:9")
            .audience("http://127.0.0.1:8/mcp");
        if let Some(c) = compat {
            b = b.compat(c);
        }
        b.build().unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn responses_are_checked() {
        let v = verifier(None);
        let ok = serde_json::json!({"active": true, "client_id": "c", "scope": "read write",
            "aud": ["x", "http://127.0.0.1:8/mcp"], "iss": "http://127.0.0.1:9", "token_type": "Bearer"});
        let ctx = v.check(claims(ok.clone())).unwrap();
        assert_eq!(ctx.subject(), "c");
        assert_eq!(ctx.client_id(), Some("c"));
        assert!(ctx.has_exact_scope("write"));
        assert!(
            ctx.claim("sub").is_none(),
            "the raw claims are not rewritten"
        );
        let mut m = ok.clone();
        m["active"] = "true".into();
        assert_eq!(v.check(claims(m)).unwrap_err(), VerifyError::Inactive);
        let mut m = ok.clone();
        m["iss"] = "http://127.0.0.1:9/".into();
        assert_eq!(v.check(claims(m)).unwrap_err(), VerifyError::WrongIssuer);
        let mut m = ok.clone();
        m["aud"] = "http://127.0.0.1:8/other".into();
        assert_eq!(v.check(claims(m)).unwrap_err(), VerifyError::WrongAudience);
        let mut m = ok.clone();
        m["token_type"] = "DPoP".into();
        assert_eq!(v.check(claims(m)).unwrap_err(), VerifyError::WrongType);
        let mut m = ok.clone();
        m["exp"] = 1_000.into();
        assert_eq!(v.check(claims(m)).unwrap_err(), VerifyError::Expired);
        let mut m = ok.clone();
        m["username"] = "alice".into();
        assert_eq!(v.check(claims(m)).unwrap().subject(), "alice");
        let mut m = ok;
        m.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            v.check(claims(m.clone())).unwrap_err(),
            VerifyError::WrongAudience
        );
        let lax = verifier(Some(Compat::IntrospectionWithoutAudience));
        assert!(lax.check(claims(m)).is_ok());
    }

    #[test]
    fn build_requires_credentials_and_https() {
        let err = IntrospectionVerifier::builder("http://auth.example.com/introspect")
            .client_credentials("a", "b")
            .issuer("https://auth.example.com")
            .audience("https://mcp.example.com/mcp")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = IntrospectionVerifier::builder("https://auth.example.com/introspect")
            .issuer("https://auth.example.com")
            .audience("https://mcp.example.com/mcp")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("client credentials"), "{err}");
    }
}
