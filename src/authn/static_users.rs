//! [`StaticUsers`]: a fixed table of users with Argon2id password hashes, checked through
//! the built-in login page.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{Authentication, AuthnError, User, UserAuthenticator};
use crate::scope::ScopeSet;

/// An Argon2id hash of a random password, with the default (OWASP) parameters
/// (`m=19456,t=2,p=1`). Unknown user names are checked against it, so a login attempt costs
/// the same whether or not the user exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bWNwLW9hdXRoLWR1bW15LXNhbHQ$4a0nO6Y7m2l9S2rG0i9yQyxmN3b3Qm5bTnJ2b0Q0Y0E";

/// How many password checks run at once (each holds ~19 MiB with the default parameters);
/// further attempts wait their turn.
const MAX_CONCURRENT_CHECKS: usize = 8;
/// How many password checks may wait for a free slot; more are refused at once.
const MAX_WAITING_CHECKS: usize = 64;
/// How long a password check waits for a free slot before it is refused.
const CHECK_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounded queue in front of the password checks.
#[derive(Debug)]
struct CheckQueue {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    timeout: Duration,
}

/// Counts a waiting check for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

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
///   eight checks at once; at most 64 more wait, for at most 10 s
///   ([`with_check_limits`](Self::with_check_limits)), and a check that finds the queue full
///   or times out fails with an [`AuthnError`] (the login page answers `503` with
///   `Retry-After`), so a flood of logins cannot pile up memory or time;
/// - an unknown user name is checked against a dummy hash made with the same Argon2
///   parameters as the configured users (the costliest, if they differ), so the response
///   time does not reveal which users exist;
/// - [`with_user_scopes`](Self::with_user_scopes) sets a user's scope ceiling;
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
    queue: Arc<CheckQueue>,
    /// Verified for unknown and disabled users: an Argon2id hash with the same parameters
    /// as the (costliest) configured users, so they cost the same.
    dummy: Arc<String>,
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
            queue: Arc::new(CheckQueue {
                permits: Semaphore::new(MAX_CONCURRENT_CHECKS),
                waiting: AtomicUsize::new(0),
                max_waiting: MAX_WAITING_CHECKS,
                timeout: CHECK_QUEUE_TIMEOUT,
            }),
            dummy: Arc::new(DUMMY_HASH.to_owned()),
        }
    }

    /// Sets how many password checks run at once (at least one), how many more may wait
    /// for a slot, and how long they wait before failing (defaults: 8, 64, 10 s).
    #[must_use]
    pub fn with_check_limits(
        mut self,
        concurrent: usize,
        max_waiting: usize,
        timeout: Duration,
    ) -> Self {
        self.queue = Arc::new(CheckQueue {
            permits: Semaphore::new(concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            timeout,
        });
        self
    }

    /// Sets a user's scope ceiling: the user is never granted a scope outside `scopes`,
    /// whatever the client asks (see [`User::allowed_scopes`]). The order of the builder
    /// calls does not matter: a ceiling set before [`with_user`](Self::with_user) applies
    /// once the user is added (a ceiling alone does not let anyone sign in), and adding the
    /// user again (a new password hash) keeps it.
    ///
    /// ```
    /// use mcp_oauth::authn::StaticUsers;
    /// let users = StaticUsers::new()
    ///     .with_password("demo", "demo")
    ///     .with_user_scopes("demo", "files:read".parse().unwrap());
    /// # let _ = users;
    /// ```
    #[must_use]
    pub fn with_user_scopes(self, username: &str, scopes: ScopeSet) -> Self {
        if self.users.contains_key(username) {
            return self.update(username, |u| u.with_allowed_scopes(scopes));
        }
        // Not added yet: park the ceiling on a user who cannot sign in (no hash), so the
        // later `with_user` keeps it (issue 8 item 4: fail closed, whatever the order).
        let mut this = self;
        Arc::make_mut(&mut this.users).insert(
            username.to_owned(),
            Entry {
                hash: None,
                user: User::new(username).with_allowed_scopes(scopes),
            },
        );
        this
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

    fn insert(mut self, mut entry: Entry) -> Self {
        // Adding a user again (or after `with_user_scopes`) keeps the ceiling set for it.
        if entry.user.allowed_scopes.is_none()
            && let Some(ceiling) = self
                .users
                .get(&entry.user.subject)
                .and_then(|e| e.user.allowed_scopes.clone())
        {
            entry.user.allowed_scopes = Some(ceiling);
        }
        let configured = self.users.values().any(|e| e.hash.is_some());
        if let Some(hash) = &entry.hash
            && let Some(dummy) = costlier_dummy(&self.dummy, configured, hash)
        {
            self.dummy = Arc::new(dummy);
        }
        Arc::make_mut(&mut self.users).insert(entry.user.subject.clone(), entry);
        self
    }

    /// The Argon2 parameters unknown users are checked with (`m=…,t=…,p=…`).
    #[cfg(test)]
    fn dummy_params(&self) -> String {
        PasswordHash::new(&self.dummy)
            .map(|p| p.params.to_string())
            .unwrap_or_default()
    }

    /// Waits for a password-check slot in the bounded queue.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthnError> {
        let q = &*self.queue;
        if let Ok(p) = q.permits.try_acquire() {
            return Ok(p);
        }
        if q.waiting.fetch_add(1, Ordering::AcqRel) >= q.max_waiting {
            q.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AuthnError::Overloaded);
        }
        let _waiting = Waiting(&q.waiting);
        match tokio::time::timeout(q.timeout, q.permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(AuthnError::Interrupted),
            Err(_) => Err(AuthnError::TimedOut),
        }
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
            .unwrap_or_else(|| (*self.dummy).clone());
        let password = password.to_owned();
        let _permit = self.permit().await?;
        let matches = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|_| AuthnError::Interrupted)?;
        Ok(match entry {
            Some(e) if matches && e.hash.is_some() => Some(e.user),
            _ => None,
        })
    }
}

/// The cost of an Argon2 parameter set, to pick the costliest.
fn cost(p: &Params) -> u64 {
    u64::from(p.m_cost()) * u64::from(p.t_cost()) * u64::from(p.p_cost())
}

/// A new dummy hash with `user_hash`'s parameters, or `None` to keep `current`: kept when
/// it already has the same parameters, or when it was made for configured users
/// (`configured`) and costs at least as much.
fn costlier_dummy(current: &str, configured: bool, user_hash: &str) -> Option<String> {
    let user = PasswordHash::new(user_hash).ok()?;
    let user_params = Params::try_from(&user).ok()?;
    let current_hash = PasswordHash::new(current).ok();
    if current_hash
        .as_ref()
        .is_some_and(|h| h.params.to_string() == user.params.to_string())
    {
        return None;
    }
    let current_params = current_hash.and_then(|c| Params::try_from(&c).ok());
    if configured && current_params.is_some_and(|c| cost(&c) >= cost(&user_params)) {
        return None;
    }
    let version = Version::try_from(user.version.unwrap_or(0x13)).unwrap_or_default();
    let argon2 = Argon2::new(Algorithm::Argon2id, version, user_params);
    let random = crate::util::random_token(24);
    match argon2.hash_password(random.as_bytes()) {
        Ok(h) => Some(h.to_string()),
        Err(e) => {
            tracing::error!(target: "mcp_oauth::authn", error = %e, "could not make the dummy hash");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 8 item 9: unknown users are checked with the configured users' parameters.
    #[test]
    fn dummy_hash_follows_the_configured_users_parameters() {
        let cheap = Params::new(8 * 1024, 1, 1, None).unwrap();
        let strong = Params::new(32 * 1024, 3, 1, None).unwrap();
        let hash_with = |p: Params| {
            Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
                .hash_password(b"pw")
                .unwrap()
                .to_string()
        };
        let users = StaticUsers::new().with_user("strong", &hash_with(strong.clone()));
        assert_eq!(users.dummy_params(), "m=32768,t=3,p=1");
        // A cheaper user added later does not lower the dummy's cost.
        let users = users.with_user("cheap", &hash_with(cheap.clone()));
        assert_eq!(users.dummy_params(), "m=32768,t=3,p=1");
        // Only cheap users: the dummy is as cheap as they are (not the default m=19456).
        let only_cheap = StaticUsers::new().with_user("cheap", &hash_with(cheap));
        assert_eq!(only_cheap.dummy_params(), "m=8192,t=1,p=1");
        // Default parameters keep the built-in dummy.
        let default = StaticUsers::new().with_password("d", "pw");
        assert_eq!(default.dummy_params(), "m=19456,t=2,p=1");
        assert_eq!(*default.dummy, DUMMY_HASH);
    }

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
