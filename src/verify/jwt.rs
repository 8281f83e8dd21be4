use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::{TokenVerifier, VerifyError};
use crate::context::{AuthContext, TokenKind};
use crate::keys::KeyRing;
use crate::scope::ScopeSet;

/// Largest JWT the verifiers will parse; anything larger is refused before any decoding.
pub(crate) const MAX_JWT_LEN: usize = 8 * 1024;

/// What `typ` header a JWT access token must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypRule {
    /// RFC 9068: `at+jwt` (or `application/at+jwt`).
    AccessToken,
    /// `at+jwt`, `JWT`, or no `typ` at all (many IdPs; a named compatibility switch).
    AccessTokenOrGenericJwt,
}

/// The checks shared by every JWT verifier: algorithm allow-list, `typ`, `iss`, `aud`,
/// `exp`/`nbf` with leeway, required claims.
#[derive(Debug, Clone)]
pub(crate) struct JwtRules {
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) leeway: u64,
    pub(crate) typ: TypRule,
    pub(crate) require_jti: bool,
}

impl JwtRules {
    /// Decodes and checks the header: size, algorithm on the allow-list, `typ`.
    pub(crate) fn header(&self, token: &str) -> Result<Header, VerifyError> {
        if token.len() > MAX_JWT_LEN {
            return Err(VerifyError::Malformed);
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Err(classify_bad_header(token)),
        };
        if !self.algorithms.contains(&header.alg) {
            return Err(VerifyError::DisallowedAlgorithm);
        }
        let typ_ok = match header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("at+jwt" | "application/at+jwt") => true,
            Some("jwt") | None => self.typ == TypRule::AccessTokenOrGenericJwt,
            Some(_) => false,
        };
        if !typ_ok {
            return Err(VerifyError::WrongType);
        }
        Ok(header)
    }

    /// Verifies the signature with `key` and checks the claims; builds the context.
    pub(crate) fn decode(
        &self,
        token: &str,
        header: &Header,
        key: &DecodingKey,
    ) -> Result<AuthContext, VerifyError> {
        crate::crypto::install_provider();
        if key.family() != header.alg.family() {
            return Err(VerifyError::InvalidSignature);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        claims_to_context(data.claims, TokenKind::Jwt, self.require_jti)
    }
}

/// A header that `jsonwebtoken` could not parse: an unknown `alg` (such as `none`) is a
/// disallowed algorithm; anything else is malformed.
fn classify_bad_header(token: &str) -> VerifyError {
    let first = token.split('.').next().unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first) else {
        return VerifyError::Malformed;
    };
    match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(h) if h.get("alg").is_some_and(Value::is_string) => VerifyError::DisallowedAlgorithm,
        _ => VerifyError::Malformed,
    }
}

pub(super) fn map_jwt_error(kind: &ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            VerifyError::DisallowedAlgorithm
        }
        ErrorKind::MissingRequiredClaim(c) => VerifyError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            _ => "unknown",
        }),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => VerifyError::Malformed,
        _ => VerifyError::InvalidSignature,
    }
}

/// Reads the standard claims into an [`AuthContext`]. Understands `scope` (RFC 9068, a
/// space-separated string) and `scp` (an array or string, as Entra and Okta send), and
/// `client_id`, `azp` or `cid` for the client.
pub(crate) fn claims_to_context(
    claims: Map<String, Value>,
    kind: TokenKind,
    require_jti: bool,
) -> Result<AuthContext, VerifyError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(VerifyError::MissingClaim("sub"))?;
    let mut ctx = AuthContext::new(sub, kind);
    if let Some(iss) = claims.get("iss").and_then(Value::as_str) {
        ctx = ctx.with_issuer(iss);
    }
    let audience = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    ctx = ctx.with_audience(audience);
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        ctx = ctx.with_expires_at(exp);
    }
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) => ctx = ctx.with_token_id(jti),
        None if require_jti => return Err(VerifyError::MissingClaim("jti")),
        None => {}
    }
    let client = ["client_id", "azp", "cid"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str));
    if let Some(client) = client {
        ctx = ctx.with_client_id(client);
    }
    let scopes = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
            ScopeSet::parse(s).map_err(|_| VerifyError::MissingClaim("scope"))?
        }
        (None, Some(Value::Array(items))) => items
            .iter()
            .filter_map(Value::as_str)
            .map(crate::scope::Scope::new)
            .collect::<Result<_, _>>()
            .map_err(|_| VerifyError::MissingClaim("scope"))?,
        (None, None) => ScopeSet::new(),
        _ => return Err(VerifyError::MissingClaim("scope")),
    };
    Ok(ctx.with_scopes(scopes).with_claims(claims))
}

/// Answers whether a token id (`jti`) has been revoked.
///
/// The embedded authorization server's store implements it; the layer asks on every request,
/// cache hits included, so a revoked access token stops working at once (unless
/// [`McpOAuthConfigBuilder::revocation_cache`](crate::McpOAuthConfigBuilder::revocation_cache)
/// trades that for fewer store queries).
#[async_trait]
pub trait RevokedTokens: Send + Sync + 'static {
    /// Whether `jti` is revoked. An error fails the request closed with `503`.
    async fn is_revoked(&self, jti: &str) -> Result<bool, VerifyError>;

    /// Records a revocation of a token whose `exp` is `expires_at` (seconds since the
    /// epoch). Implementations must remember it until at least `expires_at` plus
    /// [`REVOCATION_HORIZON_SLACK`](crate::store::REVOCATION_HORIZON_SLACK): a verifier
    /// accepts a token up to its leeway past `exp`, and the revocation must last as long.
    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), VerifyError>;
}

/// An in-process revocation list: enough for one instance; share a store across several.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    inner: Mutex<HashMap<String, u64>>,
}

impl MemoryRevocations {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RevokedTokens for MemoryRevocations {
    async fn is_revoked(&self, jti: &str) -> Result<bool, VerifyError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(jti))
    }

    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Kept past `exp` by the largest leeway a verifier may use, so a token accepted
        // "just expired" is still known to be revoked.
        let horizon = expires_at.saturating_add(crate::store::REVOCATION_HORIZON_SLACK);
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, until| *until >= now);
        map.insert(jti.to_owned(), horizon);
        Ok(())
    }
}

/// Verifies JWT access tokens signed by keys this process holds: the embedded authorization
/// server's [`KeyRing`] (no network call), with `typ: at+jwt`, `iss`, `aud`, `exp`/`nbf` and
/// `jti` checked, and an optional revocation list consulted on every request.
///
/// ```
/// use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
/// use mcp_oauth::verify::{JwtVerifier, TokenVerifier, VerifyError};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
/// let verifier = JwtVerifier::builder(ring.clone())
///     .issuer("https://auth.example.com")
///     .audience("https://mcp.example.com/mcp")
///     .build()
///     .unwrap();
/// let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
/// let token = ring.sign("at+jwt", &serde_json::json!({
///     "iss": "https://auth.example.com", "sub": "alice", "aud": "https://mcp.example.com/mcp",
///     "exp": now + 300, "iat": now, "jti": "t-1", "client_id": "c1", "scope": "read",
/// })).unwrap();
/// assert_eq!(verifier.verify(&token).await.unwrap().subject(), "alice");
/// # }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    ring: KeyRing,
    rules: JwtRules,
    revoked: Option<Arc<dyn RevokedTokens>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.rules.issuer)
            .field("audiences", &self.rules.audiences)
            .field("revocation", &self.revoked.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`JwtVerifier`].
#[derive(Debug)]
#[must_use]
pub struct JwtVerifierBuilder {
    ring: KeyRing,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: u64,
    revoked: Option<Arc<dyn RevokedTokens>>,
}

impl std::fmt::Debug for dyn RevokedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevokedTokens")
    }
}

impl JwtVerifier {
    /// Starts a builder for tokens signed by `ring`.
    pub fn builder(ring: KeyRing) -> JwtVerifierBuilder {
        JwtVerifierBuilder {
            ring,
            issuer: None,
            audiences: Vec::new(),
            leeway: 60,
            revoked: None,
        }
    }
}

impl JwtVerifierBuilder {
    /// The exact `iss` tokens must carry (required).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// An accepted audience: this resource's URL, exactly as in its metadata (required; call
    /// again for several resources).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock leeway for `exp`/`nbf` (default 60 s, at most [`MAX_LEEWAY`](super::MAX_LEEWAY):
    /// [`build`](Self::build) refuses more).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs();
        self
    }

    /// A revocation list consulted for every token, cached or not.
    pub fn revocation(mut self, list: Arc<dyn RevokedTokens>) -> Self {
        self.revoked = Some(list);
        self
    }

    /// Builds the verifier.
    ///
    /// # Errors
    /// [`ConfigError::MissingIssuer`](crate::ConfigError::MissingIssuer) or
    /// [`ConfigError::MissingResource`](crate::ConfigError::MissingResource) when those were
    /// not set; [`ConfigError::OutOfRange`](crate::ConfigError::OutOfRange) for a leeway
    /// above [`MAX_LEEWAY`](super::MAX_LEEWAY) (a revoked token is only remembered that long
    /// past its `exp`).
    pub fn build(self) -> Result<JwtVerifier, crate::ConfigError> {
        check_leeway(self.leeway)?;
        let issuer = self.issuer.ok_or(crate::ConfigError::MissingIssuer)?;
        if self.audiences.is_empty() {
            return Err(crate::ConfigError::MissingResource);
        }
        Ok(JwtVerifier {
            ring: self.ring,
            rules: JwtRules {
                issuer,
                audiences: self.audiences,
                algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
                leeway: self.leeway,
                typ: TypRule::AccessToken,
                require_jti: true,
            },
            revoked: self.revoked,
        })
    }
}

/// Refuses a leeway (seconds) above [`MAX_LEEWAY`](super::MAX_LEEWAY).
pub(crate) fn check_leeway(leeway: u64) -> Result<(), crate::ConfigError> {
    let max = super::MAX_LEEWAY.as_secs();
    if leeway > max {
        return Err(crate::ConfigError::OutOfRange {
            field: "leeway",
            min: 0,
            max,
            value: leeway,
        });
    }
    Ok(())
}

#[async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        let header = self.rules.header(token)?;
        let key = match header.kid.as_deref() {
            Some(kid) => self
                .ring
                .find_or_reload(kid)
                .await
                .map_err(|e| VerifyError::unavailable_with("signing key ring", e))?
                .ok_or(VerifyError::UnknownKey)?,
            None => return Err(VerifyError::UnknownKey),
        };
        if key.algorithm().jose() != header.alg {
            return Err(VerifyError::DisallowedAlgorithm);
        }
        let ctx = self.rules.decode(token, &header, key.decoding_key())?;
        self.recheck(&ctx).await?;
        Ok(ctx)
    }

    async fn recheck(&self, ctx: &AuthContext) -> Result<(), VerifyError> {
        if let (Some(list), Some(jti)) = (&self.revoked, ctx.token_id())
            && ctx.kind() == TokenKind::Jwt
            && list.is_revoked(jti).await?
        {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8 item 8: a revocation outlives the token's `exp` by the largest leeway, so
    /// pruning the list (on the next revocation) cannot forget a token a verifier would still
    /// accept.
    #[tokio::test]
    async fn memory_revocations_outlive_exp_by_the_max_leeway() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let list = MemoryRevocations::new();
        list.revoke("just-expired", now - 30).await.unwrap();
        list.revoke("other", now + 600).await.unwrap();
        assert!(list.is_revoked("just-expired").await.unwrap());
        let horizon = list.inner.lock().unwrap()["just-expired"];
        assert_eq!(horizon, now - 30 + super::super::MAX_LEEWAY.as_secs());
    }

    #[test]
    fn leeway_is_capped() {
        assert!(check_leeway(300).is_ok());
        assert!(check_leeway(301).is_err());
    }
}
