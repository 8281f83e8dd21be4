use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{TokenVerifier, VerifyError};
use crate::context::AuthContext;

/// Tries several verifiers in order; the first that accepts wins.
///
/// When all refuse, the error reported is the first "specific" one (a bad signature, a wrong
/// audience, an expired token) rather than a later verifier's "not my kind of token", so a
/// client with an expired JWT hears that it expired, not that it is an unknown API key.
///
/// ```
/// use mcp_oauth::verify::{ApiKeyVerifier, ChainVerifier, TokenVerifier};
/// use mcp_oauth::scope::ScopeSet;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let chain = ChainVerifier::new()
///     .with(ApiKeyVerifier::new().with_key("key-one-0123456789", "one", ScopeSet::new()))
///     .with(ApiKeyVerifier::new().with_key("key-two-0123456789", "two", ScopeSet::new()));
/// assert_eq!(chain.verify("key-two-0123456789").await.unwrap().subject(), "two");
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ChainVerifier {
    verifiers: Vec<Arc<dyn TokenVerifier>>,
}

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainVerifier")
            .field("len", &self.verifiers.len())
            .finish()
    }
}

impl ChainVerifier {
    /// An empty chain (refuses everything until a verifier is added).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a verifier.
    #[must_use]
    pub fn with(mut self, verifier: impl TokenVerifier) -> Self {
        self.verifiers.push(Arc::new(verifier));
        self
    }

    /// Appends an already shared verifier.
    #[must_use]
    pub fn with_arc(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.verifiers.push(verifier);
        self
    }

    /// How many verifiers the chain holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    /// Whether the chain is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }
}

#[async_trait]
impl TokenVerifier for ChainVerifier {
    async fn verify(&self, token: &str) -> Result<AuthContext, VerifyError> {
        let mut generic: Option<VerifyError> = None;
        let mut specific: Option<VerifyError> = None;
        for verifier in &self.verifiers {
            match verifier.verify(token).await {
                Ok(ctx) => return Ok(ctx),
                Err(e) if e.is_not_mine() => {
                    // "unknown" (well-formed for some verifier, just not known) says more
                    // than "malformed" (not even the right shape for another).
                    if generic.is_none() || e == VerifyError::Unknown {
                        generic = Some(e);
                    }
                }
                Err(e) => {
                    specific.get_or_insert(e);
                }
            }
        }
        Err(specific.or(generic).unwrap_or(VerifyError::Unknown))
    }

    async fn recheck(&self, ctx: &AuthContext) -> Result<(), VerifyError> {
        for verifier in &self.verifiers {
            verifier.recheck(ctx).await?;
        }
        Ok(())
    }

    fn cache_ttl(&self) -> Duration {
        self.verifiers
            .iter()
            .map(|v| v.cache_ttl())
            .min()
            .unwrap_or(Duration::ZERO)
    }
}
