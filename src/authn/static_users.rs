//! [`StaticUsers`]: a fixed table of users with Argon2id password hashes, checked through
//! the built-in login page.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{Authentication, AuthnError, User, UserAuthenticator};

/// An Argon2id hash of a random password, with the default (OWASP) parameters
/// (`m=19456,t=2,p=1`). Unknown user names are checked against it, so a login attempt costs
/// the same whether or not the user exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bWNwLW9hdXRoLWR1bW15LXNhbHQ$4a0nO6Y7m2l9S2rG0i9yQyxmN3b3Qm5bTnJ2b0Q0Y0E";

/// How many password checks run at once (each holds ~19 MiB with the default parameters);
/// further attempts wait their turn.
const MAX_CONCURRENT_CHECKS: usize = 8;

/// A password hash string was not an Argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the password hash of user {user:?} is not an Argon2id PHC string ($argon2id$v=19$…): {reason}"
)]
pub struct InvalidPasswordHash {
    user: String,
    reason: String,
}

#[derive(Clone)]
struct Entry {
    /// The PHC string; `None` when the configured hash was unusable (the user cannot log in).
    hash: Option<String>,
    user: User,
}

/// A fixed table of users with Argon2id password hashes, for small deployments and demos.
///
/// [`authenticate`](UserAuthenticator::authenticate) always asks for the built-in login page;
/// [`verify_password`](UserAuthenticator::verify_password) checks the posted name and
/// password:
/// - Argon2 runs on tokio's blocking pool (it takes tens of milliseconds by design), at most
///   eight checks at once;
/// - an unknown user name is checked against a dummy hash, so the response time does not
///   reveal which users exist;
/// - passwords and hashes are never logged.
///
/// Store only hashes in your configuration: produce them with
/// [`StaticUsers::hash_password`] (or any Argon2id tool, e.g. `argon2` on the command line)
/// and load them with [`with_user`](Self::with_user). [`with_password`](Self::with_password)
/// hashes a clear-text password at start-up, for demos and tests.
///
/// ```
/// use mcp_oauth::authn::{StaticUsers, UserAuthenticator};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let hash = StaticUsers::hash_password("correct horse battery staple");
/// assert!(hash.starts_with("$argon2id$"));
/// let users = StaticUsers::new().with_user("alice", &hash);
///
/// let alice = users.verify_password("alice", "correct horse battery staple").await.unwrap();
/// assert_eq!(alice.unwrap().subject, "alice");
/// assert!(users.verify_password("alice", "wrong").await.unwrap().is_none());
/// assert!(users.verify_password("mallory", "anything").await.unwrap().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct StaticUsers {
    users: Arc<HashMap<String, Entry>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for StaticUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("StaticUsers")
            .field("users", &names)
            .finish_non_exhaustive()
    }
}

impl Default for StaticUsers {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticUsers {
    /// An empty table (nobody can log in).
    #[must_use]
    pub fn new() -> Self {
        Self {
            users: Arc::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        }
    }

    /// Hashes a password with Argon2id and the default parameters, as a PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$…`) for [`with_user`](Self::with_user).
    ///
    /// This takes tens of milliseconds on purpose; call it from a tool or at start-up, not on
    /// an async executor thread in a hot path.
    #[must_use]
    pub fn hash_password(password: &str) -> String {
        let argon2 = Argon2::default();
        match argon2.hash_password(password.as_bytes()) {
            Ok(hash) => hash.to_string(),
            // Argon2 with default parameters only fails on a password over 4 GiB or when
            // the OS has no random source; neither has a useful recovery. Return a hash no
            // password matches rather than panicking.
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authn", error = %e, "could not hash a password");
                DUMMY_HASH.to_owned()
            }
        }
    }

    /// Adds a user with an Argon2id PHC hash string (see [`hash_password`](Self::hash_password)).
    /// The user name becomes the token subject (`sub`).
    ///
    /// A string that is not an Argon2id PHC hash is logged as an error and the user can never
    /// log in (the table fails closed); use [`try_with_user`](Self::try_with_user) to get the
    /// error instead.
    #[must_use]
    pub fn with_user(self, username: impl Into<String>, phc_hash: &str) -> Self {
        let username = username.into();
        match self.clone().try_with_user(username.clone(), phc_hash) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(target: "mcp_oauth::authn", error = %e, "user disabled");
                self.insert(Entry {
                    hash: None,
                    user: User::new(username),
                })
            }
        }
    }

    /// Like [`with_user`](Self::with_user), but refuses a hash that is not an Argon2id PHC
    /// string.
    ///
    /// # Errors
    /// `InvalidPasswordHash` when `phc_hash` does not parse or is not Argon2id.
    pub fn try_with_user(
        self,
        username: impl Into<String>,
        phc_hash: &str,
    ) -> Result<Self, InvalidPasswordHash> {
        let username = username.into();
        let bad = |reason: String| InvalidPasswordHash {
            user: username.clone(),
            reason,
        };
        let parsed = PasswordHash::new(phc_hash).map_err(|e| bad(e.to_string()))?;
        if parsed.algorithm.as_str() != Algorithm::Argon2id.ident().as_str() {
            return Err(bad(format!(
                "the algorithm is {}, expected argon2id",
                parsed.algorithm
            )));
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(bad("it has no salt or no hash".to_owned()));
        }
        Ok(self.insert(Entry {
            hash: Some(phc_hash.to_owned()),
            user: User::new(username),
        }))
    }

    /// Adds a user with a clear-text password, hashed now (slow: tens of milliseconds per
    /// user). For demos and tests; production configurations should hold only hashes.
    #[must_use]
    pub fn with_password(self, username: impl Into<String>, password: &str) -> Self {
        let hash = Self::hash_password(password);
        self.with_user(username, &hash)
    }

    /// Gives an existing user a display name (shown on the consent page).
    #[must_use]
    pub fn with_display_name(self, username: &str, name: impl Into<String>) -> Self {
        self.update(username, |u| u.with_display_name(name))
    }

    /// Adds a claim carried into the user's access tokens (`email`, …).
    #[must_use]
    pub fn with_claim(
        self,
        username: &str,
        claim: impl Into<String>,
        value: serde_json::Value,
    ) -> Self {
        self.update(username, |u| u.with_claim(claim, value))
    }

    fn insert(mut self, entry: Entry) -> Self {
        Arc::make_mut(&mut self.users).insert(entry.user.subject.clone(), entry);
        self
    }

    fn update(mut self, username: &str, f: impl FnOnce(User) -> User) -> Self {
        if let Some(e) = Arc::make_mut(&mut self.users).get_mut(username) {
            e.user = f(e.user.clone());
        }
        self
    }
}

#[async_trait]
impl UserAuthenticator for StaticUsers {
    async fn authenticate(
        &self,
        _request: &http::request::Parts,
    ) -> Result<Authentication, AuthnError> {
        Ok(Authentication::ShowLoginPage)
    }

    async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, AuthnError> {
        let entry = self.users.get(username).cloned();
        // Unknown users and disabled users cost one full verification too.
        let hash = entry
            .as_ref()
            .and_then(|e| e.hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let password = password.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthnError("the password checker is shut down".to_owned()))?;
        let matches = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|_| AuthnError("the password check did not complete".to_owned()))?;
        Ok(match entry {
            Some(e) if matches && e.hash.is_some() => Some(e.user),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_parses_with_default_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let real = StaticUsers::hash_password("x");
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(parsed.params.to_string(), real.params.to_string());
        assert_eq!(parsed.version, real.version);
    }
}
