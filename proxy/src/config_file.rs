//! The TOML configuration file (`--config FILE`, `MCP_OAUTH_CONFIG`).
//!
//! Every key is optional; a key the proxy does not know is refused (a typo must not silently
//! leave a security setting at its default), and so is a value of the wrong type, with the
//! key and the line named. `mcp-oauth-proxy.example.toml` documents every key. Flags and
//! environment variables override the file (see [`crate::settings`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{ChallengeStyleSetting, LogFormat, LoginKind, SettingsError};

/// The file's keys (see `mcp-oauth-proxy.example.toml` for what each does).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Log line format.
    pub log_format: Option<LogFormat>,
    /// Socket address to bind.
    pub addr: Option<String>,
    /// Public URL.
    pub public_url: Option<String>,
    /// TLS certificate chain file.
    pub tls_cert: Option<PathBuf>,
    /// TLS key file.
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files are checked.
    pub tls_reload_interval: Option<DurationValue>,
    /// Trusted front proxies.
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Extra allowed hosts.
    pub allow_hosts: Option<Vec<String>>,
    /// Extra allowed origins.
    pub allow_origins: Option<Vec<String>>,
    /// HTTP upstream.
    pub upstream: Option<String>,
    /// Static headers for the upstream, `Name: value` lines.
    pub upstream_headers: Option<Vec<String>>,
    /// How long the upstream has to answer with headers.
    pub upstream_timeout: Option<DurationValue>,
    /// How many upstream requests at once.
    pub max_upstream_requests: Option<usize>,
    /// Stdio command.
    pub command: Option<Vec<String>>,
    /// Stdio: the most children at once.
    pub max_children: Option<usize>,
    /// Stdio: the most children of one user at once.
    pub max_children_per_user: Option<usize>,
    /// Stdio: how long an idle session lives.
    pub idle_timeout: Option<DurationValue>,
    /// Stdio: SIGTERM to SIGKILL.
    pub kill_grace: Option<DurationValue>,
    /// Store path or URL.
    pub store: Option<String>,
    /// How users sign in.
    pub login: Option<LoginKind>,
    /// Single user's name.
    pub user: Option<String>,
    /// Single user's password.
    pub password: Option<String>,
    /// Users file.
    pub users_file: Option<PathBuf>,
    /// Users table: name = argon2 hash.
    pub users: Option<Users>,
    /// Host-session header.
    pub host_session_header: Option<String>,
    /// Host-session login URL.
    pub host_session_login_url: Option<String>,
    /// Upstream provider.
    pub upstream_provider: Option<String>,
    /// Upstream issuer.
    pub upstream_issuer: Option<String>,
    /// Entra tenant.
    pub upstream_tenant: Option<String>,
    /// Upstream client id.
    pub upstream_client_id: Option<String>,
    /// Upstream client secret.
    pub upstream_client_secret: Option<String>,
    /// Upstream scopes.
    pub upstream_scopes: Option<Vec<String>>,
    /// Allowed email domains.
    pub upstream_allowed_domains: Option<Vec<String>>,
    /// Allowed emails.
    pub upstream_allowed_emails: Option<Vec<String>>,
    /// Allowed groups.
    pub upstream_allowed_groups: Option<Vec<String>>,
    /// Allowed GitHub organizations.
    pub upstream_github_orgs: Option<Vec<String>>,
    /// Provider on loopback.
    pub upstream_allow_loopback: Option<bool>,
    /// Remember consent.
    pub remember_consent: Option<bool>,
    /// Serve `/metrics`.
    pub metrics: Option<bool>,
    /// Scopes: name = description.
    pub scopes: Option<BTreeMap<String, String>>,
    /// Default scopes.
    pub default_scopes: Option<Vec<String>>,
    /// Scope hierarchy: `broader = ["narrower", ...]`.
    pub scope_implies: Option<BTreeMap<String, Vec<String>>>,
    /// Tool scopes: `tool = ["scope", ...]`.
    pub tool_scopes: Option<BTreeMap<String, Vec<String>>>,
    /// Public tools.
    pub public_tools: Option<Vec<String>>,
    /// Scopes every request needs.
    pub required_scopes: Option<Vec<String>>,
    /// Lazy authentication.
    pub lazy: Option<bool>,
    /// Challenge style.
    pub challenge_style: Option<ChallengeStyleSetting>,
    /// Resource name.
    pub resource_name: Option<String>,
    /// Rate limits.
    pub rate_limits: Option<RateLimitsFile>,
    /// Access token lifetime.
    pub access_token_ttl: Option<DurationValue>,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Option<DurationValue>,
    /// Code lifetime.
    pub code_ttl: Option<DurationValue>,
    /// Refresh grace.
    pub refresh_grace: Option<DurationValue>,
    /// How long a "not revoked" answer is trusted.
    pub revocation_cache: Option<DurationValue>,
}

/// The `[users]` table: user name → argon2 PHC hash.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Users(pub BTreeMap<String, String>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The `[rate_limits]` table: each a rate like `"120/min"`, `"60/min burst 120"` or `"off"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    /// `/token`.
    pub token: Option<String>,
    /// `/register`.
    pub register: Option<String>,
    /// Login attempts.
    pub login: Option<String>,
    /// `/authorize`.
    pub authorize: Option<String>,
}

/// A duration in the file: a number of seconds or a string like `"15m"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    /// Seconds.
    Seconds(u64),
    /// A string like `"90s"`, `"15m"`, `"1h"`, `"30d"`.
    Text(String),
}

impl DurationValue {
    /// The duration, or an error naming `key`.
    ///
    /// # Errors
    /// A string that is not a duration.
    pub fn to_duration(&self, key: &str) -> Result<Duration, SettingsError> {
        match self {
            Self::Seconds(s) => Ok(Duration::from_secs(*s)),
            Self::Text(t) => crate::settings::parse_duration(key, t),
        }
    }
}

/// Reads and parses `path`.
///
/// # Errors
/// An unreadable file, a TOML syntax error, an unknown key or a mistyped value; the message
/// names the file, the key and the line.
pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SettingsError(format!(
            "config file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| SettingsError(format!("config file {}: {}", path.display(), e.0)))
}

/// Parses a file's text.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str) -> Result<FileConfig, SettingsError> {
    toml::from_str(text).map_err(|e| SettingsError(e.to_string().trim_end().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse("addr = \"127.0.0.1:1\"\nremember_consnet = true\n").unwrap_err();
        assert!(e.0.contains("remember_consnet"), "{e}");
        let e = parse("[rate_limits]\ntokne = \"1/min\"\n").unwrap_err();
        assert!(e.0.contains("tokne"), "{e}");
    }

    #[test]
    fn durations_as_numbers_or_text() {
        let f = parse("access_token_ttl = 60\nrefresh_token_ttl = \"7d\"\n").unwrap();
        assert_eq!(
            f.access_token_ttl.unwrap().to_duration("a").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            f.refresh_token_ttl.unwrap().to_duration("r").unwrap(),
            Duration::from_secs(7 * 86400)
        );
    }
}
