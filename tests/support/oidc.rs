//! A real third-party authorization server for the tests: panva's `oidc-provider` 9, run by
//! `tests/interop/oidc_provider.mjs` on 127.0.0.1 with an OS-chosen port.
//!
//! Include it next to the shared support module:
//! ```ignore
//! mod support;
//! #[path = "support/oidc.rs"]
//! mod oidc;
//! ```
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::support::Interop;

/// The confidential client that mints tokens with the `client_credentials` grant.
pub const CLIENT_ID: &str = "test-client";
/// Its secret (`client_secret_basic`).
pub const CLIENT_SECRET: &str = "test-secret";
/// The confidential client a resource server uses for introspection.
pub const RS_CLIENT_ID: &str = "rs-client";
/// Its secret.
pub const RS_CLIENT_SECRET: &str = "rs-secret";
/// A second introspection client whose id and secret need form-urlencoding in
/// `client_secret_basic` (RFC 6749 §2.3.1).
pub const RS_ODD_CLIENT_ID: &str = "rs:odd client";
/// Its secret.
pub const RS_ODD_CLIENT_SECRET: &str = "p@ss w:rd%+&=";
/// The upstream-login client (`OidcProvider::start_upstream`).
pub const UPSTREAM_CLIENT_ID: &str = "mcp-upstream";
/// Its secret (`client_secret_basic`).
pub const UPSTREAM_CLIENT_SECRET: &str = "upstream-secret";
/// Scopes every resource accepts.
pub const SCOPES: &str = "read write admin";

/// A running `oidc-provider`; the process is killed when this is dropped.
#[derive(Debug)]
pub struct OidcProvider {
    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash).
    pub issuer: String,
    /// The port it listens on.
    pub port: u16,
    child: Option<Child>,
    /// Held open: the script exits when it closes, so no orphan outlives a killed test.
    _stdin: Option<ChildStdin>,
    _stdout: Option<BufReader<ChildStdout>>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct Ready {
    issuer: String,
    port: u16,
}

impl OidcProvider {
    /// Starts the provider. Tokens for `jwt_resources` are RFC 9068 JWTs signed with ES256;
    /// tokens for `opaque_resource` are opaque (introspection only).
    pub async fn start(interop: &Interop, jwt_resources: &[&str], opaque_resource: &str) -> Self {
        Self::start_with_alg(interop, jwt_resources, opaque_resource, "ES256").await
    }

    /// Like [`start`](Self::start), signing JWT access tokens with `alg` (`ES256`, `RS256`,
    /// `PS256` or `EdDSA`).
    pub async fn start_with_alg(
        interop: &Interop,
        jwt_resources: &[&str],
        opaque_resource: &str,
        alg: &str,
    ) -> Self {
        Self::spawn(interop, jwt_resources, opaque_resource, alg, false, None).await
    }

    /// A provider a user signs in at: open dynamic client registration (RFC 7591) and the
    /// provider's development login page (any login name, any password) and consent page
    /// (one "Continue" button, which the test browser of `browser.rs` submits), issuing
    /// ES256 JWT access tokens for `jwt_resources`.
    pub async fn start_interactive(interop: &Interop, jwt_resources: &[&str]) -> Self {
        Self::spawn(interop, jwt_resources, "", "ES256", true, None).await
    }

    async fn spawn(
        interop: &Interop,
        jwt_resources: &[&str],
        opaque_resource: &str,
        alg: &str,
        interactive: bool,
        upstream_redirect: Option<&str>,
    ) -> Self {
        let mut cmd = interop.node_script("tests/interop/oidc_provider.mjs");
        if let Some(uri) = upstream_redirect {
            cmd.env("OIDC_UPSTREAM_REDIRECT_URI", uri);
        }
        cmd.env("OIDC_JWT_RESOURCES", jwt_resources.join(" "))
            .env("OIDC_OPAQUE_RESOURCE", opaque_resource)
            .env("OIDC_JWT_ALG", alg)
            .env("OIDC_INTERACTIVE", if interactive { "1" } else { "0" })
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd
            .spawn()
            .expect("spawn node tests/interop/oidc_provider.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
            .await
            .expect("oidc-provider did not start within 60 s")
            .expect("read oidc-provider's stdout");
        assert!(read > 0, "oidc-provider exited before printing its address");
        let ready: Ready = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("unexpected first line from oidc-provider {line:?}: {e}"));
        Self {
            issuer: ready.issuer,
            port: ready.port,
            child: Some(child),
            _stdin: stdin,
            _stdout: Some(stdout),
            http: reqwest::Client::new(),
        }
    }

    /// Starts the provider as an upstream identity provider for `UpstreamOidc`: client
    /// [`UPSTREAM_CLIENT_ID`] may send users back to `redirect_uri`, and its development login
    /// page accepts any name (see `tests/interop/oidc_provider.mjs`).
    pub async fn start_upstream(interop: &Interop, redirect_uri: &str) -> Self {
        Self::spawn(interop, &[], "", "ES256", false, Some(redirect_uri)).await
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The RFC 7662 introspection endpoint.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// An access token for `resource` with `scope`, from the `client_credentials` grant.
    pub async fn client_credentials_token(&self, resource: &str, scope: &str) -> String {
        let response = self
            .http
            .post(self.token_endpoint())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("POST /token");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("token response JSON");
        assert!(status.is_success(), "token request failed: {status} {body}");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_owned()
    }

    /// Revokes `token` at the provider (RFC 7009).
    pub async fn revoke(&self, token: &str) {
        let response = self
            .http
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .expect("POST /token/revocation");
        assert!(
            response.status().is_success(),
            "revocation failed: {}",
            response.status()
        );
    }

    /// Swaps in a new signing key, listed first in the JWKS (earlier keys stay published);
    /// returns its `kid`.
    pub async fn rotate(&self) -> String {
        let body: serde_json::Value = self
            .http
            .post(format!("{}/__admin/rotate", self.issuer))
            .send()
            .await
            .expect("POST /__admin/rotate")
            .json()
            .await
            .expect("rotate response JSON");
        body["kid"].as_str().expect("kid").to_owned()
    }

    async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/__admin/stats", self.issuer))
            .send()
            .await
            .expect("GET /__admin/stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// How many times the JWKS has been fetched from the provider.
    pub async fn jwks_fetches(&self) -> u64 {
        self.stats().await["jwks_fetches"]
            .as_u64()
            .expect("jwks_fetches")
    }

    /// How many introspection requests the provider has received.
    pub async fn introspections(&self) -> u64 {
        self.stats().await["introspections"]
            .as_u64()
            .expect("introspections")
    }

    /// Kills the provider now (the issuer then refuses connections).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
