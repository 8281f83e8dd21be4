//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document, the MCP
//! specification's preferred way for a client to identify itself): how the authorization
//! server fetches, checks and caches them. On by default with the `client-metadata` feature;
//! the settings live in [`ClientMetadataPolicy`].
//!
//! A `client_id` that is an `https` URL with a path names a JSON document the client
//! publishes. At `/authorize` the server fetches it (through the crate's SSRF-guarded
//! [outbound client](crate::outbound)), checks it and uses it as the client's registration:
//!
//! - **The URL**: `https`, a host (in the [allow-list](ClientMetadataPolicy::hosts) when one
//!   is set), a path other than `/`, no user information, query, fragment, or `.`/`..`
//!   segment, and already in its normal form (lower-case host, no default port), because
//!   the document's `client_id` is compared with it as a plain string.
//! - **The fetch**: the host is resolved once and loopback, private, link-local, cloud
//!   metadata and every other special-use address is refused (loopback and private networks
//!   only with [`allow_loopback`](ClientMetadataPolicy::allow_loopback) /
//!   [`allow_private_networks`](ClientMetadataPolicy::allow_private_networks), for
//!   development and tests); the connection goes to the address checked; redirects are not
//!   followed; only `200` with a JSON content type is accepted; the body is capped at 5 KB;
//!   the connect timeout is 2 s and the whole fetch 5 s; at most 2 fetches run at once per
//!   host and at most 30 start per host and minute.
//! - **The document**: its `client_id` equals the URL exactly; `client_name` and a non-empty
//!   `redirect_uris` are present, and every redirect URI passes the same policy as a
//!   dynamic registration; `response_types`, if present, allows `code`; no shared-secret
//!   authentication (`client_secret_basic`, `client_secret_post`, `client_secret_jwt`, or a
//!   `client_secret` member). The client is public (`none`) when the document names no
//!   method, names `none`, or lists `none` among its `token_endpoint_auth_methods_supported`
//!   (as ChatGPT's does). `jwks`, `jwks_uri` and the other members are kept in
//!   [`Client::extra`](crate::store::Client::extra).
//! - **`private_key_jwt`** (feature `private-key-jwt`): a document whose
//!   `token_endpoint_auth_method` is `private_key_jwt` (or whose method list offers it and
//!   not `none`) is a confidential client that authenticates at the token, revocation and
//!   introspection endpoints with a signed assertion (RFC 7523) whose `iss` and `sub` are
//!   the URL `client_id`; the rules are those of the `client_jwks` module, replayed `jti`s
//!   included. The document must publish exactly one of `jwks` (checked as dynamic
//!   registration checks it: at most 10 public keys, no private member) and `jwks_uri` (an
//!   absolute `https` URL, fetched by the same SSRF-guarded, caching key fetcher as a
//!   registered client's, under the same switches, such as `client_jwks_allow_loopback`);
//!   without keys, with both, or with unusable ones it is refused, naming the problem.
//!   Built without the feature, such a document is refused as asking for a method this
//!   server does not support, never taken for a public client.
//! - **The cache**: a good document is kept for its `Cache-Control: max-age`, bounded by
//!   [`cache_ttl`](ClientMetadataPolicy::cache_ttl) (60 s to 24 h by default; 10 minutes
//!   without a `max-age`; `no-store`/`no-cache` count as the minimum). Errors and invalid
//!   documents are never cached. The cache is per process and never written to the store.
//!
//! How `/authorize` answers: a document that cannot be fetched (timeout, connection refused,
//! a `5xx` or `429`, the per-host limit) is `503` with `Retry-After`, never
//! `invalid_client`, so a client does not give up on a passing outage. A document fetched
//! but unusable (the checks above) is a `400` page naming the problem; nothing is
//! redirected to its unverified redirect URIs. The consent page names the verified host of
//! the `client_id` instead of the self-declared `client_name`, and warns when the code goes
//! to a loopback redirect URI. The authorization server metadata advertises
//! `client_id_metadata_document_supported: true`; with the feature off or
//! [`client_id_metadata_documents(false)`](super::AuthorizationServerBuilder::client_id_metadata_documents),
//! a URL `client_id` is an unknown client like any other.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mcp_oauth::ConfigError> {
//! use mcp_oauth::authn::StaticUsers;
//! use mcp_oauth::server::{AuthorizationServer, ClientMetadataPolicy};
//!
//! let server = AuthorizationServer::builder()
//!     .authenticator(StaticUsers::new())
//!     // Only these clients may identify themselves by a metadata document.
//!     .client_metadata_policy(
//!         ClientMetadataPolicy::new().hosts(["claude.ai", "chatgpt.com", "vscode.dev"]),
//!     )
//!     .build()
//!     .await?;
//! # let _ = server;
//! # Ok(()) }
//! ```

use std::time::Duration;

/// How client ID metadata documents are fetched and cached (see the
/// [module docs](self)). Hand it to
/// [`client_metadata_policy`](super::AuthorizationServerBuilder::client_metadata_policy).
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientMetadataPolicy {
    pub(crate) hosts: Option<Vec<String>>,
    pub(crate) allow_loopback: bool,
    pub(crate) allow_private_networks: bool,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) default_ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) host_fetches_per_minute: u32,
    pub(crate) host_concurrency: usize,
}

impl Default for ClientMetadataPolicy {
    fn default() -> Self {
        Self {
            hosts: None,
            allow_loopback: false,
            allow_private_networks: false,
            root_certificates: Vec::new(),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            host_fetches_per_minute: 30,
            host_concurrency: 2,
        }
    }
}

impl ClientMetadataPolicy {
    /// The defaults: any public host, 5 s fetches, cache 60 s – 24 h.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only documents on these hosts (compared case-insensitively with the URL's host,
    /// without the port) are fetched; a `client_id` URL on another host is refused with a
    /// page saying so. Without a list any public host is accepted.
    pub fn hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hosts = Some(
            hosts
                .into_iter()
                .map(|h| h.into().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// Allows documents on loopback addresses (`127.0.0.0/8`, `::1`, `localhost`). For
    /// development and tests only: on a public server it lets anyone make the server fetch
    /// from itself.
    pub fn allow_loopback(mut self) -> Self {
        self.allow_loopback = true;
        self
    }

    /// Allows documents on private network addresses (RFC 1918, `fc00::/7`, `100.64/10`).
    pub fn allow_private_networks(mut self) -> Self {
        self.allow_private_networks = true;
        self
    }

    /// Trusts the certificates in `pem` (one or more PEM blocks) as extra roots when
    /// fetching documents, besides the platform's (a private CA, or a test's).
    pub fn root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// The bounds of how long a good document is cached, whatever its `Cache-Control`
    /// says (defaults 60 s and 24 h; `min` at most 1 h, `max` between 60 s and 7 days).
    pub fn cache_ttl(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }

    /// How long a document without `Cache-Control: max-age` is cached (default 10
    /// minutes; kept within [`cache_ttl`](Self::cache_ttl)).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The connect timeout and the timeout of the whole fetch (defaults 2 s and 5 s; the
    /// total at most 10 s, since the user's browser waits).
    pub fn timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    /// The per-host fetch limit: how many fetches may start per host and minute (default
    /// 30) and how many may run at once (default 2). Over it, `/authorize` answers `503`
    /// with `Retry-After`.
    pub fn host_fetch_limit(mut self, per_minute: u32, concurrent: usize) -> Self {
        self.host_fetches_per_minute = per_minute.max(1);
        self.host_concurrency = concurrent.max(1);
        self
    }
}
