//! The one way this crate makes outbound HTTP requests: the remote JWKS verifier's discovery
//! and key fetches, token introspection, client ID metadata documents (whose URLs an attacker
//! chooses), the `jwks_uri` of `private_key_jwt` clients (feature `private-key-jwt`, a URL the
//! registering client chooses), and the upstream login's discovery, code exchange, UserInfo and
//! GitHub API calls (`authn::UpstreamOidc`, feature `upstream-oidc`, with its own
//! `.allow_loopback()` / `.allow_private_networks()`) go through here.
//!
//! Every request:
//!
//! - needs an `https` URL, unless plain `http` was allowed (`.allow_http()` on the verifier
//!   builder; `.allow_loopback()` also allows `http` to a loopback host such as `localhost`,
//!   for development). URLs with user information or a fragment are refused;
//! - goes to an address that passed the **SSRF guard**: the host is resolved once, every
//!   address it resolves to is classified ([`AddressClass`]), and the connection is made to
//!   exactly those checked addresses (a DNS resolver inside the HTTP client does both, so a
//!   second, different DNS answer between check and connect cannot happen). A literal IP
//!   host is checked the same way. Refused by default: loopback, private networks
//!   (RFC 1918, ULA `fc00::/7`), shared address space (`100.64.0.0/10`), link-local and cloud
//!   metadata addresses (`169.254.169.254`, `fd00:ec2::254`), unspecified, broadcast,
//!   multicast, documentation and other reserved ranges, and the IPv4-mapped, IPv4-compatible,
//!   NAT64 and 6to4 forms of those;
//! - uses no proxy (the proxy would resolve the name, not the guard), follows **no
//!   redirects** (a `3xx` is an error: a redirect could point anywhere), has a connect
//!   timeout (default 5 s) and a total timeout covering the body (default 10 s), and reads at
//!   most a fixed number of bytes, counted while the body streams in;
//! - identifies itself with `User-Agent: mcp-oauth/<version>`, over TLS through rustls.
//!
//! Operators who run their identity provider on a private network, or on loopback during
//! development, opt in on the verifier builder:
//!
//! ```no_run
//! # #[cfg(feature = "remote-jwks")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_oauth::verify::RemoteJwksVerifier;
//!
//! let verifier = RemoteJwksVerifier::builder("http://127.0.0.1:8080/realms/dev")
//!     .audience("http://127.0.0.1:8000/mcp")
//!     .allow_loopback() // the identity provider runs on this machine
//!     .discover()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A refusal is an [`OutboundError`], found as the [`source`](std::error::Error::source) of
//! the verifier's error; its message names the refused address and the builder switch that
//! would allow it. Errors and logs carry URLs and addresses, never request bodies, client
//! secrets or tokens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use crate::net::embedded_ipv4;

/// Default time to open a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a whole request, body included.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!(
    "mcp-oauth/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/mcp-oauth/mcp-oauth)"
);

// ---------------------------------------------------------------------------------------------
// Address classes

/// Why an address is not a public unicast address. Every class is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`. Allowed by `.allow_loopback()`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), IPv6 unique local `fc00::/7` and the
    /// deprecated site-local `fec0::/10`. Allowed by `.allow_private_networks()`.
    Private,
    /// The carrier-grade NAT range `100.64.0.0/10` (RFC 6598), also used by overlay networks
    /// such as Tailscale. Allowed by `.allow_private_networks()`.
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`. Never allowed: no identity provider lives there, cloud
    /// instance services do.
    LinkLocal,
    /// A cloud instance metadata service (`169.254.169.254`, `169.254.170.2`,
    /// `fd00:ec2::254`), which hands out credentials to whoever asks. Never allowed.
    CloudMetadata,
    /// `0.0.0.0/8`, `::`: on many systems a connection to them reaches this machine. Never
    /// allowed.
    Unspecified,
    /// `255.255.255.255`. Never allowed.
    Broadcast,
    /// `224.0.0.0/4`, `ff00::/8`. Never allowed.
    Multicast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    /// Never allowed.
    Documentation,
    /// Any other special-purpose range: `240.0.0.0/4`, `192.0.0.0/24`, `198.18.0.0/15`,
    /// `192.88.99.0/24`, `2001::/23` (Teredo and other protocol assignments), and IPv6
    /// outside `2000::/3`. Never allowed.
    Reserved,
}

impl AddressClass {
    /// The class of `ip`, or `None` for a public unicast address.
    ///
    /// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
    /// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`) addresses take the class of the IPv4
    /// address they carry; an IPv4-compatible address is [`Reserved`](Self::Reserved) even
    /// when that IPv4 address is public (no current stack routes them).
    #[must_use]
    pub fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        }
    }

    /// The builder switch that allows this class, if any.
    #[must_use]
    pub fn allowed_by(self) -> Option<&'static str> {
        match self {
            Self::Loopback => Some(".allow_loopback()"),
            Self::Private | Self::SharedAddressSpace => Some(".allow_private_networks()"),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private network address",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Self::LinkLocal => "a link-local address",
            Self::CloudMetadata => "a cloud metadata service address",
            Self::Unspecified => "an unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::Multicast => "a multicast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved address",
        }
    }
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass as C;
    let table: [([u8; 4], u32, C); 18] = [
        ([0, 0, 0, 0], 8, C::Unspecified),
        ([127, 0, 0, 0], 8, C::Loopback),
        ([10, 0, 0, 0], 8, C::Private),
        ([172, 16, 0, 0], 12, C::Private),
        ([192, 168, 0, 0], 16, C::Private),
        ([100, 64, 0, 0], 10, C::SharedAddressSpace),
        ([169, 254, 169, 254], 32, C::CloudMetadata),
        ([169, 254, 170, 2], 32, C::CloudMetadata),
        ([169, 254, 0, 0], 16, C::LinkLocal),
        ([255, 255, 255, 255], 32, C::Broadcast),
        ([224, 0, 0, 0], 4, C::Multicast),
        ([240, 0, 0, 0], 4, C::Reserved),
        ([192, 0, 2, 0], 24, C::Documentation),
        ([198, 51, 100, 0], 24, C::Documentation),
        ([203, 0, 113, 0], 24, C::Documentation),
        ([192, 0, 0, 0], 24, C::Reserved),
        ([198, 18, 0, 0], 15, C::Reserved),
        ([192, 88, 99, 0], 24, C::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|&(_, _, class)| class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass as C;
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    if ip.is_unspecified() {
        return Some(C::Unspecified);
    }
    if ip.is_loopback() {
        return Some(C::Loopback);
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if let Some(v4) = embedded_ipv4(ip) {
        // IPv4-compatible: deprecated; private ones keep their class, the rest are reserved.
        return Some(classify_v4(v4).unwrap_or(C::Reserved));
    }
    let segments = ip.segments();
    if in_v6(ip, v6("64:ff9b::"), 96) {
        let [.., a, b, c, d] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if segments[0] == 0x2002 {
        let [_, _, a, b, c, d, ..] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip == v6("fd00:ec2::254") {
        return Some(C::CloudMetadata);
    }
    let table: [(&str, u32, C); 7] = [
        ("fc00::", 7, C::Private),
        ("fec0::", 10, C::Private),
        ("fe80::", 10, C::LinkLocal),
        ("ff00::", 8, C::Multicast),
        ("2001:db8::", 32, C::Documentation),
        ("3fff::", 20, C::Documentation),
        ("2001::", 23, C::Reserved),
    ];
    if let Some(&(_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, v6(net), *prefix))
    {
        return Some(class);
    }
    // Only 2000::/3 is global unicast.
    if !in_v6(ip, v6("2000::"), 3) {
        return Some(C::Reserved);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an outbound request was refused or failed.
///
/// The message names the URL or host and, for a refused address, the builder switch that
/// allows it (or says none does). It never holds a request body, a client secret or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The URL cannot be used: not absolute, no host, a scheme other than `http(s)`, user
    /// information, or a fragment.
    #[error("{url:?} cannot be fetched: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL is plain `http` and that was not allowed.
    #[error(
        "{url:?} is plain http; https is required (call `.allow_http()` to allow http, or `.allow_loopback()` for a loopback host in development)"
    )]
    HttpRefused {
        /// The URL as given.
        url: String,
    },
    /// The host is, or resolves to, an address the SSRF guard refuses.
    #[error("{host} is {addr}, {class}: refused ({})", match .class.allowed_by() {
        Some(switch) => format!("call `{switch}` on the verifier builder to allow it"),
        None => "no setting allows it".to_owned(),
    })]
    AddressRefused {
        /// The host of the URL.
        host: String,
        /// The address it is or resolved to.
        addr: IpAddr,
        /// Why the address is refused.
        class: AddressClass,
    },
    /// The host name could not be resolved, or resolved to no address.
    #[error("resolving {host} failed")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The connection, or the whole request, took longer than its timeout.
    #[error("the request to {url} timed out")]
    Timeout {
        /// The URL requested.
        url: String,
    },
    /// The server answered with a redirect, which is never followed.
    #[error("{url} answered HTTP {status}, a redirect, which is not followed")]
    Redirect {
        /// The URL requested.
        url: String,
        /// The `3xx` status.
        status: u16,
    },
    /// The response body is larger than the limit for this kind of document.
    #[error("the response from {url} is larger than {} KiB", .limit / 1024)]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request failed for another reason (connection refused, TLS, a broken body).
    #[error("the request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// The HTTP client's error, without the URL.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be created (no TLS roots, say).
    #[error("the HTTP client could not be created")]
    Client {
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
}

impl OutboundError {
    /// Whether this is a refusal by the SSRF guard or the scheme rule (as opposed to a
    /// network failure): a configuration matter, not a transient one.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::AddressRefused { .. } | Self::HttpRefused { .. })
    }
}

/// A refusal raised inside the DNS resolver, carried through the HTTP client's error chain.
#[derive(Debug, Clone)]
struct Refusal {
    host: String,
    addr: IpAddr,
    class: AddressClass,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}, {}", self.host, self.addr, self.class)
    }
}

impl std::error::Error for Refusal {}

/// A failed lookup inside the DNS resolver, carried through the HTTP client's error chain.
#[derive(Debug)]
struct ResolveFailure {
    host: String,
    kind: std::io::ErrorKind,
    message: String,
}

impl std::fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "resolving {} failed: {}", self.host, self.message)
    }
}

impl std::error::Error for ResolveFailure {}

// ---------------------------------------------------------------------------------------------
// Policy and resolver

/// What the guard lets through besides public addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Policy {
    loopback: bool,
    private_networks: bool,
    http: bool,
}

impl Policy {
    /// The addresses a lookup of `host` returned, if every one of them is allowed. These,
    /// and only these, are what the connection is made to.
    fn screen(self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
        for addr in &addrs {
            self.check(host, addr.ip())?;
        }
        Ok(addrs)
    }

    fn check(self, host: &str, addr: IpAddr) -> Result<(), Refusal> {
        let Some(class) = AddressClass::of(addr) else {
            return Ok(());
        };
        let allowed = match class {
            AddressClass::Loopback => self.loopback,
            AddressClass::Private | AddressClass::SharedAddressSpace => self.private_networks,
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal {
                host: host.to_owned(),
                addr,
                class,
            })
        }
    }
}

/// Resolves a name once and returns only addresses the policy allows; any refused address
/// fails the whole lookup (a name that also points somewhere private is not trusted).
#[derive(Debug)]
struct GuardedResolver {
    policy: Policy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = host.clone();
            let failed = |kind, message: String| ResolveFailure {
                host: host.clone(),
                kind,
                message,
            };
            let addrs: Vec<SocketAddr> = tokio::task::spawn_blocking(move || {
                (lookup.as_str(), 0)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            })
            .await
            .map_err(|e| failed(std::io::ErrorKind::Other, e.to_string()))?
            .map_err(|e| failed(e.kind(), e.to_string()))?;
            if addrs.is_empty() {
                return Err(failed(
                    std::io::ErrorKind::NotFound,
                    "the name resolved to no address".to_owned(),
                )
                .into());
            }
            let checked = policy.screen(&host, addrs)?;
            Ok(Box::new(checked.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// How an [`Outbound`] client is set up; the verifier builders hold one.
#[derive(Debug, Clone)]
pub(crate) struct OutboundBuilder {
    policy: Policy,
    connect_timeout: Duration,
    timeout: Duration,
    /// Extra trusted root certificates (PEM), besides the platform's.
    roots: Vec<Vec<u8>>,
}

impl Default for OutboundBuilder {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            connect_timeout: CONNECT_TIMEOUT,
            timeout: TOTAL_TIMEOUT,
            roots: Vec::new(),
        }
    }
}

impl OutboundBuilder {
    /// Allows loopback addresses, and plain `http` to a loopback host.
    pub(crate) fn allow_loopback(&mut self) {
        self.policy.loopback = true;
    }

    /// Allows private network and shared (CGNAT) addresses.
    pub(crate) fn allow_private_networks(&mut self) {
        self.policy.private_networks = true;
    }

    /// Allows plain `http` to any host the address rules allow.
    #[cfg_attr(
        not(any(test, feature = "remote-jwks", feature = "introspection")),
        expect(
            dead_code,
            reason = "client metadata documents and client JWKS are https only"
        )
    )]
    pub(crate) fn allow_http(&mut self) {
        self.policy.http = true;
    }

    /// Sets the connect and total timeouts (each at least 1 ms).
    #[cfg_attr(
        not(any(
            feature = "remote-jwks",
            feature = "introspection",
            feature = "client-metadata"
        )),
        expect(dead_code, reason = "the private_key_jwt fetcher sets neither")
    )]
    pub(crate) fn timeouts(&mut self, connect: Duration, total: Duration) {
        let floor = Duration::from_millis(1);
        self.connect_timeout = connect.max(floor);
        self.timeout = total.max(floor);
    }

    /// Trusts the certificates in `pem` (one or more PEM blocks) as extra roots.
    #[cfg_attr(
        not(feature = "client-metadata"),
        expect(dead_code, reason = "only client metadata documents take extra roots")
    )]
    pub(crate) fn add_root_certificates(&mut self, pem: &[u8]) {
        self.roots.push(pem.to_vec());
    }

    /// Creates the client.
    pub(crate) fn build(&self) -> Result<Outbound, OutboundError> {
        let mut builder = reqwest::Client::builder();
        for pem in &self.roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|source| OutboundError::Client { source })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy,
            }))
            .build()
            .map_err(|source| OutboundError::Client { source })?;
        Ok(Outbound {
            client,
            policy: self.policy,
        })
    }
}

/// The guarded HTTP client (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    client: reqwest::Client,
    policy: Policy,
}

/// A response read in full (within its limit), status not yet judged.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The status, never a `3xx`.
    pub(crate) status: reqwest::StatusCode,
    /// The response headers.
    #[cfg_attr(
        not(any(
            feature = "remote-jwks",
            feature = "client-metadata",
            feature = "private-key-jwt"
        )),
        expect(
            dead_code,
            reason = "only the JWKS fetchers and client metadata read headers (Cache-Control)"
        )
    )]
    pub(crate) headers: reqwest::header::HeaderMap,
    /// The body, at most the limit given.
    pub(crate) body: Vec<u8>,
}

impl Outbound {
    /// Checks `url` against the scheme rule and, for a literal IP host, the address rules;
    /// host names are checked when they are resolved.
    pub(crate) fn check_url(&self, url: &str) -> Result<url::Url, OutboundError> {
        let invalid = |reason| OutboundError::InvalidUrl {
            url: redact_userinfo(url),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|_| invalid("not an absolute URL"))?;
        let host = match parsed.host() {
            Some(host) => host,
            None => return Err(invalid("it has no host")),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("it holds user information"));
        }
        if parsed.fragment().is_some() {
            return Err(invalid("it has a fragment"));
        }
        let host_str = parsed.host_str().unwrap_or_default();
        match parsed.scheme() {
            "https" => {}
            "http"
                if self.policy.http
                    || (self.policy.loopback && crate::net::is_loopback_host(host_str)) => {}
            "http" => {
                return Err(OutboundError::HttpRefused {
                    url: url.to_owned(),
                });
            }
            _ => return Err(invalid("the scheme must be https")),
        }
        let literal = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        };
        if let Some(addr) = literal {
            self.policy
                .check(host_str, addr)
                .map_err(|r| OutboundError::AddressRefused {
                    host: r.host,
                    addr: r.addr,
                    class: r.class,
                })?;
        }
        Ok(parsed)
    }

    /// `GET url` with this `Accept`, reading at most `limit` bytes.
    #[cfg_attr(
        not(any(
            feature = "remote-jwks",
            feature = "client-metadata",
            feature = "private-key-jwt"
        )),
        expect(dead_code, reason = "only the JWKS fetchers and client metadata GET")
    )]
    pub(crate) async fn get(
        &self,
        url: &str,
        accept: &'static str,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        let parsed = self.check_url(url)?;
        let request = self
            .client
            .get(parsed)
            .header(reqwest::header::ACCEPT, accept);
        self.send(url, request, limit).await
    }

    /// `POST url` with a form body and extra headers (marked sensitive by the caller where
    /// they hold credentials), reading at most `limit` bytes.
    #[cfg_attr(
        not(any(feature = "introspection", feature = "upstream-oidc")),
        expect(dead_code, reason = "only introspection and upstream login POST")
    )]
    pub(crate) async fn post_form(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        form: &[(&str, &str)],
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        let parsed = self.check_url(url)?;
        let request = self.client.post(parsed).headers(headers).form(form);
        self.send(url, request, limit).await
    }

    /// `GET url` with this `Accept` and extra headers (a bearer token for an upstream
    /// provider's user API), reading at most `limit` bytes.
    #[cfg(feature = "upstream-oidc")]
    pub(crate) async fn get_with(
        &self,
        url: &str,
        accept: &'static str,
        headers: reqwest::header::HeaderMap,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        let parsed = self.check_url(url)?;
        let request = self
            .client
            .get(parsed)
            .header(reqwest::header::ACCEPT, accept)
            .headers(headers);
        self.send(url, request, limit).await
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        let response = request.send().await.map_err(|e| request_error(url, e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(OutboundError::Redirect {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let headers = response.headers().clone();
        let body = read_limited(url, response, limit).await?;
        Ok(Fetched {
            status,
            headers,
            body,
        })
    }
}

/// `url` with any user information replaced by `***`, for error messages.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Turns a client error into an [`OutboundError`], finding a refusal or resolver failure in
/// its source chain.
fn request_error(url: &str, error: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return OutboundError::AddressRefused {
                host: r.host.clone(),
                addr: r.addr,
                class: r.class,
            };
        }
        if let Some(r) = e.downcast_ref::<ResolveFailure>() {
            return OutboundError::Resolve {
                host: r.host.clone(),
                source: std::io::Error::new(r.kind, r.message.clone()),
            };
        }
        source = e.source();
    }
    if error.is_timeout() {
        return OutboundError::Timeout {
            url: url.to_owned(),
        };
    }
    OutboundError::Request {
        url: url.to_owned(),
        source: error.without_url(),
    }
}

/// Reads at most `limit` bytes of a response body, counting while it streams in.
async fn read_limited(
    url: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, OutboundError> {
    let too_large = || OutboundError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(request_error(url, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass as C;

    fn class(s: &str) -> Option<AddressClass> {
        AddressClass::of(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges_and_boundaries() {
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("0.0.0.0", Some(C::Unspecified)),
            ("0.255.255.255", Some(C::Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(C::Private)),
            ("10.255.255.255", Some(C::Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(C::SharedAddressSpace)),
            ("100.127.255.255", Some(C::SharedAddressSpace)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(C::Loopback)),
            ("127.0.0.1", Some(C::Loopback)),
            ("127.255.255.255", Some(C::Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(C::LinkLocal)),
            ("169.254.169.253", Some(C::LinkLocal)),
            ("169.254.169.254", Some(C::CloudMetadata)),
            ("169.254.170.2", Some(C::CloudMetadata)),
            ("169.254.255.255", Some(C::LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(C::Private)),
            ("172.31.255.255", Some(C::Private)),
            ("172.32.0.0", None),
            ("192.0.0.0", Some(C::Reserved)),
            ("192.0.0.255", Some(C::Reserved)),
            ("192.0.1.255", None),
            ("192.0.2.0", Some(C::Documentation)),
            ("192.0.2.255", Some(C::Documentation)),
            ("192.0.3.0", None),
            ("192.88.99.1", Some(C::Reserved)),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(C::Private)),
            ("192.168.255.255", Some(C::Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(C::Reserved)),
            ("198.19.255.255", Some(C::Reserved)),
            ("198.20.0.0", None),
            ("198.51.100.7", Some(C::Documentation)),
            ("203.0.113.255", Some(C::Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(C::Multicast)),
            ("239.255.255.255", Some(C::Multicast)),
            ("240.0.0.0", Some(C::Reserved)),
            ("255.255.255.254", Some(C::Reserved)),
            ("255.255.255.255", Some(C::Broadcast)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), *want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("::", Some(C::Unspecified)),
            ("::1", Some(C::Loopback)),
            ("::2", Some(C::Unspecified)), // IPv4-compatible 0.0.0.2
            ("::ffff:127.0.0.1", Some(C::Loopback)),
            ("::ffff:10.0.0.1", Some(C::Private)),
            ("::ffff:169.254.169.254", Some(C::CloudMetadata)),
            ("::ffff:100.64.0.1", Some(C::SharedAddressSpace)),
            ("::ffff:0.0.0.0", Some(C::Unspecified)),
            ("::ffff:255.255.255.255", Some(C::Broadcast)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(C::Loopback)),
            ("::192.168.1.1", Some(C::Private)),
            ("::8.8.8.8", Some(C::Reserved)),
            ("64:ff9b::7f00:1", Some(C::Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(C::CloudMetadata)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(C::Reserved)),
            ("2002:7f00:1::", Some(C::Loopback)),
            ("2002:c0a8:101::1", Some(C::Private)),
            ("2002:808:808::1", None),
            ("fc00::", Some(C::Private)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Private)),
            ("fd00:ec2::254", Some(C::CloudMetadata)),
            ("fd00:ec2::253", Some(C::Private)),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("fe80::", Some(C::LinkLocal)),
            (
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::LinkLocal),
            ),
            ("fec0::1", Some(C::Private)),
            ("ff02::1", Some(C::Multicast)),
            ("ff00::", Some(C::Multicast)),
            ("2001:db8::", Some(C::Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::Documentation),
            ),
            ("2001:db9::", None),
            ("2001:db7:ffff::", None),
            ("3fff::1", Some(C::Documentation)),
            ("3fff:0fff:ffff::", Some(C::Documentation)),
            ("3fff:1000::", None),
            ("2001::1", Some(C::Reserved)),
            ("2001:1ff::1", Some(C::Reserved)),
            ("2001:200::1", None),
            ("100::1", Some(C::Reserved)),
            ("1fff:ffff::", Some(C::Reserved)),
            ("2000::", None),
            ("3fff:ffff::", None),
            ("4000::", Some(C::Reserved)),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), *want, "{ip}");
        }
    }

    #[test]
    fn switches_allow_only_their_classes() {
        let strict = Policy::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let cgnat: IpAddr = "100.64.1.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(strict.check("h", public).is_ok());
        for ip in [lo, private, cgnat, metadata] {
            assert!(strict.check("h", ip).is_err(), "{ip}");
        }
        let loopback = Policy {
            loopback: true,
            ..Policy::default()
        };
        assert!(loopback.check("h", lo).is_ok());
        assert!(loopback.check("h", private).is_err());
        let private_ok = Policy {
            private_networks: true,
            ..Policy::default()
        };
        assert!(private_ok.check("h", private).is_ok());
        assert!(private_ok.check("h", cgnat).is_ok());
        assert!(private_ok.check("h", "fd12::1".parse().unwrap()).is_ok());
        assert!(private_ok.check("h", lo).is_err());
        let everything = Policy {
            loopback: true,
            private_networks: true,
            http: true,
        };
        for never in [
            "169.254.169.254",
            "fd00:ec2::254",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "240.0.0.1",
        ] {
            assert!(
                everything.check("h", never.parse().unwrap()).is_err(),
                "{never}"
            );
        }
    }

    #[test]
    fn one_refused_address_fails_the_whole_lookup() {
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 443);
        let strict = Policy::default();
        let public = vec![addr("93.184.216.34"), addr("2606:4700::1111")];
        assert_eq!(
            strict.screen("idp.example", public.clone()).unwrap(),
            public
        );
        // A name answering with a public and a private address (a rebinding attempt that
        // hopes the client tries the second) is refused as a whole.
        let mixed = vec![addr("93.184.216.34"), addr("10.0.0.7")];
        let refusal = strict.screen("idp.example", mixed).unwrap_err();
        assert_eq!(refusal.addr, addr("10.0.0.7").ip());
        assert_eq!(refusal.class, AddressClass::Private);
        let metadata = vec![addr("93.184.216.34"), addr("::ffff:169.254.169.254")];
        assert!(strict.screen("idp.example", metadata).is_err());
    }

    fn outbound(f: impl FnOnce(&mut OutboundBuilder)) -> Outbound {
        let mut b = OutboundBuilder::default();
        f(&mut b);
        b.build().unwrap()
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let strict = outbound(|_| {});
        assert!(strict.check_url("https://idp.example.com/jwks").is_ok());
        let err = strict.check_url("http://idp.example.com/jwks").unwrap_err();
        assert!(matches!(err, OutboundError::HttpRefused { .. }), "{err}");
        assert!(err.to_string().contains(".allow_http()"), "{err}");
        let err = strict.check_url("https://127.0.0.1:8443/jwks").unwrap_err();
        assert!(err.is_refused());
        assert!(
            err.to_string().contains("127.0.0.1")
                && err.to_string().contains("`.allow_loopback()`"),
            "{err}"
        );
        // The URL parser turns shorthand and hex into the address it means.
        for sneaky in [
            "https://0x7f.1/",
            "https://2130706433/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fd00:ec2::254]/",
            "https://0.0.0.0/",
        ] {
            let err = strict.check_url(sneaky).unwrap_err();
            assert!(
                matches!(err, OutboundError::AddressRefused { .. }),
                "{sneaky}: {err}"
            );
        }
        let err = strict
            .check_url("https://169.254.169.254/latest/meta-data/")
            .unwrap_err();
        assert!(err.to_string().contains("no setting allows it"), "{err}");
        for bad in [
            "https://user:pw@idp.example.com/",
            "https://user:pw@bad host/",
            "https://idp.example.com/#x",
            "ftp://idp.example.com/",
            "file:///etc/passwd",
            "not a url",
        ] {
            let err = strict.check_url(bad).unwrap_err();
            assert!(
                matches!(err, OutboundError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }

        let dev = outbound(OutboundBuilder::allow_loopback);
        assert!(dev.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(dev.check_url("http://localhost:8080/").is_ok());
        assert!(dev.check_url("http://[::1]:8080/").is_ok());
        assert!(matches!(
            dev.check_url("http://idp.example.com/").unwrap_err(),
            OutboundError::HttpRefused { .. }
        ));
        assert!(matches!(
            dev.check_url("https://10.1.2.3/").unwrap_err(),
            OutboundError::AddressRefused {
                class: AddressClass::Private,
                ..
            }
        ));
        let lan = outbound(|b| {
            b.allow_private_networks();
            b.allow_http();
        });
        assert!(lan.check_url("http://10.1.2.3/").is_ok());
        assert!(lan.check_url("http://idp.internal/").is_ok());
        assert!(lan.check_url("http://127.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        // `localhost` is a name: it passes the URL check and is refused by the resolver.
        let strict = outbound(|b| b.allow_http());
        let err = strict
            .get("http://localhost:9/x", "application/json", 1024)
            .await
            .unwrap_err();
        match &err {
            OutboundError::AddressRefused { host, class, .. } => {
                assert_eq!(host, "localhost");
                assert_eq!(*class, AddressClass::Loopback);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(".allow_loopback()"), "{err}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_resolve_error() {
        let strict = outbound(|_| {});
        let err = strict
            .get("https://does-not-exist.invalid/x", "application/json", 1024)
            .await
            .unwrap_err();
        match &err {
            OutboundError::Resolve { host, .. } => assert_eq!(host, "does-not-exist.invalid"),
            other => panic!("{other:?}"),
        }
        assert!(!err.is_refused());
    }
}
