//! The one list of the paths the crate serves itself, below the configuration so that the
//! routers (`protected_resource_router`, `oauth_router`) build their routes from it and the
//! layer lets exactly these paths through: route paths and the layer's list cannot drift.
//!
//! - Protected-resource metadata (RFC 9728), served in both modes: the path-inserted
//!   `/.well-known/oauth-protected-resource{resource path}` of every resource, and the root
//!   `/.well-known/oauth-protected-resource`.
//! - With an embedded authorization server, under the issuer's path: the RFC 8414 / OIDC
//!   discovery URLs and every [`Endpoint`].

use crate::config::path_of;

/// The RFC 9728 well-known prefix.
pub(crate) const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";

/// The path-inserted protected-resource metadata path of a resource URL.
pub(crate) fn protected_resource_path(resource: &str) -> String {
    format!("{PROTECTED_RESOURCE}{}", path_of(resource))
}

/// Every path at which the protected-resource metadata of `resources` is served: the
/// path-inserted path of each, then the root (served for the canonical resource, or for the
/// resource whose path is empty). Without duplicates.
pub(crate) fn protected_resource_paths(resources: &[String]) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for path in resources
        .iter()
        .map(|r| protected_resource_path(r))
        .chain(std::iter::once(PROTECTED_RESOURCE.to_owned()))
    {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

/// Every URL path a client may derive from the issuer to fetch the authorization server's
/// metadata (MCP authorization spec, "Authorization Server Metadata Discovery"), in the
/// order clients try them.
pub(crate) fn as_metadata_paths(issuer: &str) -> Vec<String> {
    let path = path_of(issuer);
    let mut paths = vec![
        format!("/.well-known/oauth-authorization-server{path}"),
        format!("/.well-known/openid-configuration{path}"),
    ];
    if !path.is_empty() {
        paths.push(format!("{path}/.well-known/openid-configuration"));
    }
    paths
}

/// An endpoint of the embedded authorization server, served under the issuer's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Authorize,
    AuthorizeLogin,
    AuthorizeConsent,
    Token,
    Register,
    Revoke,
    Introspect,
    Jwks,
    Stats,
    /// Upstream login (`UpstreamOidc`): sets the browser binding, then leaves for the provider.
    UpstreamStart,
    /// Upstream login: the provider sends the browser back here.
    UpstreamCallback,
    /// The readiness and compliance view (`server::health`).
    Health,
}

impl Endpoint {
    /// Every endpoint (those a server may leave off, `/register` and `/oauth/stats`,
    /// included: the paths stay the server's either way).
    pub(crate) const ALL: [Self; 12] = [
        Self::Authorize,
        Self::AuthorizeLogin,
        Self::AuthorizeConsent,
        Self::Token,
        Self::Register,
        Self::Revoke,
        Self::Introspect,
        Self::Jwks,
        Self::Stats,
        Self::UpstreamStart,
        Self::UpstreamCallback,
        Self::Health,
    ];

    /// The endpoint's path relative to the issuer.
    pub(crate) const fn suffix(self) -> &'static str {
        match self {
            Self::Authorize => "/authorize",
            Self::AuthorizeLogin => "/authorize/login",
            Self::AuthorizeConsent => "/authorize/consent",
            Self::Token => "/token",
            Self::Register => "/register",
            Self::Revoke => "/revoke",
            Self::Introspect => "/introspect",
            Self::Jwks => "/jwks.json",
            Self::Stats => "/oauth/stats",
            Self::UpstreamStart => "/upstream/start",
            Self::UpstreamCallback => "/upstream/callback",
            Self::Health => "/health",
        }
    }

    /// The `endpoint` label of the request metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", feature = "server"))]
    pub(crate) const fn metric_label(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::AuthorizeLogin => "authorize_login",
            Self::AuthorizeConsent => "authorize_consent",
            Self::Token => "token",
            Self::Register => "register",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
            Self::Jwks => "jwks",
            Self::Stats => "stats",
            Self::UpstreamStart => "upstream_start",
            Self::UpstreamCallback => "upstream_callback",
            Self::Health => "health",
        }
    }

    /// The router path: the issuer's path, then the endpoint's.
    pub(crate) fn route(self, issuer: &str) -> String {
        format!("{}{}", path_of(issuer), self.suffix())
    }

    /// The absolute URL, as the metadata and the pages name it.
    #[cfg(feature = "server")]
    pub(crate) fn url(self, issuer: &str) -> String {
        format!("{issuer}{}", self.suffix())
    }
}

/// Every path the crate serves itself for a configuration: the protected-resource metadata
/// paths of `resources`, and with an embedded authorization server (`Some((issuer,
/// endpoints))`) the discovery paths and the given endpoints of that issuer. Sorted, without
/// duplicates, for [`is_exempt`].
pub(crate) fn own_paths(
    resources: &[String],
    embedded: Option<(&str, &[Endpoint])>,
) -> Vec<String> {
    let mut paths = protected_resource_paths(resources);
    if let Some((issuer, endpoints)) = embedded {
        paths.extend(as_metadata_paths(issuer));
        paths.extend(endpoints.iter().map(|e| e.route(issuer)));
    }
    paths.sort_unstable();
    paths.dedup();
    paths
}

/// Whether `path` is exactly one of `own` (as built by [`own_paths`]): byte for byte, with
/// no normalisation, so a near miss (`/token/`, `/TOKEN`, `/token%2F`, `/x/../token`) is
/// not one.
pub(crate) fn is_exempt(own: &[String], path: &str) -> bool {
    own.binary_search_by(|p| p.as_str().cmp(path)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_urls() {
        assert_eq!(
            as_metadata_paths("https://a.example.com"),
            [
                "/.well-known/oauth-authorization-server",
                "/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            as_metadata_paths("https://a.example.com/t1"),
            [
                "/.well-known/oauth-authorization-server/t1",
                "/.well-known/openid-configuration/t1",
                "/t1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn own_paths_are_exact() {
        let resources = vec!["https://h.example/a/mcp".to_owned()];
        let rs_only = own_paths(&resources, None);
        assert_eq!(
            rs_only,
            [
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource/a/mcp",
            ]
        );
        assert!(!is_exempt(&rs_only, "/token"));

        let own = own_paths(
            &resources,
            Some(("https://h.example/t", &Endpoint::ALL[..])),
        );
        for p in [
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/a/mcp",
            "/.well-known/oauth-authorization-server/t",
            "/.well-known/openid-configuration/t",
            "/t/.well-known/openid-configuration",
            "/t/authorize",
            "/t/authorize/login",
            "/t/authorize/consent",
            "/t/token",
            "/t/register",
            "/t/revoke",
            "/t/introspect",
            "/t/jwks.json",
            "/t/oauth/stats",
            "/t/health",
        ] {
            assert!(is_exempt(&own, p), "{p}");
        }
        for p in [
            "/token",
            "/t/token/",
            "/t/tokens",
            "/t/TOKEN",
            "/t/token%2F",
            "/t/mcp/../token",
            "/t//token",
            "/.well-known/oauth-protected-resource/other",
            "/.well-known/oauth-protected-resource/a/mcp/",
            "/.well-known/oauth-authorization-server",
            "",
            "/",
        ] {
            assert!(!is_exempt(&own, p), "{p}");
        }
    }
}
