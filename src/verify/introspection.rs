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
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::jwt::claims_to_context;
use super::{TokenVerifier, VerifyError};
use crate::config::{Compat, ConfigError};
use crate::context::{AuthContext, TokenKind};
use crate::outbound::{Outbound, OutboundBuilder};

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
    http: Outbound,
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
/// Requests go through [`crate::outbound`]: `https` only, no redirects, 5 s connect and 10 s
/// total timeouts, responses over 64 KiB refused while they stream in, and an SSRF guard that
/// refuses loopback, private, link-local and metadata addresses unless
/// [`allow_loopback`](IntrospectionVerifierBuilder::allow_loopback) or
/// [`allow_private_networks`](IntrospectionVerifierBuilder::allow_private_networks) says
/// otherwise. The client secret is sent in a header marked sensitive and never appears in
/// errors or logs.
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
            outbound: OutboundBuilder::default(),
            compat: Vec::new(),
        }
    }

    /// Asks the endpoint about `token`; returns the response object of a `200`.
    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let s = &self.inner;
        let unavailable = |why: String| VerifyError::unavailable(why);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, s.authorization.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = s
            .http
            .post_form(
                &s.endpoint,
                headers,
                &[("token", token), ("token_type_hint", "access_token")],
                MAX_RESPONSE_BYTES,
            )
            .await
            .map_err(|e| {
                if e.is_refused() {
                    tracing::error!(
                        target: "mcp_oauth::introspection",
                        endpoint = %s.endpoint,
                        error = %e,
                        "the introspection endpoint is refused by the outbound rules"
                    );
                }
                VerifyError::unavailable_with("introspection", e)
            })?;
        let status = fetched.status;
        let json: Option<Map<String, Value>> = serde_json::from_slice(&fetched.body).ok();
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
    outbound: OutboundBuilder,
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

    /// Allows an endpoint on a loopback address (`127.0.0.0/8`, `::1`, `localhost`), and
    /// plain `http` to a loopback host: an authorization server on this machine, in
    /// development. Refused by default (see [`crate::outbound`]).
    pub fn allow_loopback(mut self) -> Self {
        self.outbound.allow_loopback();
        self
    }

    /// Allows an endpoint on a private network address (RFC 1918, IPv6 unique local
    /// `fc00::/7`, and the shared `100.64.0.0/10` range). Refused by default; link-local and
    /// cloud metadata addresses stay refused.
    pub fn allow_private_networks(mut self) -> Self {
        self.outbound.allow_private_networks();
        self
    }

    /// Allows a plain `http` endpoint on any host the address rules allow. The client secret
    /// and every token then cross the network in clear: use it only inside a network you
    /// trust.
    pub fn allow_http(mut self) -> Self {
        self.outbound.allow_http();
        self
    }

    /// The timeouts of each introspection request: to open a connection (default 5 s) and
    /// for the whole request, body included (default 10 s).
    pub fn http_timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.outbound.timeouts(connect, total);
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
    /// those were not set; [`ConfigError::InvalidUrl`] when the outbound rules refuse the
    /// endpoint (plain `http` without [`allow_http`](Self::allow_http), a literal loopback
    /// or private address without [`allow_loopback`](Self::allow_loopback) or
    /// [`allow_private_networks`](Self::allow_private_networks); see [`crate::outbound`]),
    /// when no client credentials were given, or when the HTTP client cannot be created. An
    /// endpoint whose *name* resolves to a refused address is refused on each verification
    /// instead ([`VerifyError::Unavailable`]).
    pub fn build(self) -> Result<IntrospectionVerifier, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidUrl {
            field: "introspection endpoint",
            value: self.endpoint.clone(),
            reason,
        };
        let http = self
            .outbound
            .build()
            .map_err(|e| invalid(format!("the HTTP client could not be created: {e}")))?;
        http.check_url(&self.endpoint)
            .map_err(|e| invalid(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(compat: Option<Compat>) -> IntrospectionVerifier {
        let mut b = IntrospectionVerifier::builder("http://127.0.0.1:9/introspect")
            .allow_loopback()
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
