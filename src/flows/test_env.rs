//! An [`Env`] for the flow tests: a [`MemoryStore`], a [`FakeClock`] that starts at the
//! system time (so that access tokens, which the JWT issuer and verifier date by the system
//! clock, agree with it until a test moves it), the server's default lifetimes and a few
//! configured clients.

use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Env, FakeClock};
use crate::authn::StaticUsers;
use crate::config::McpOAuthConfig;
use crate::scope::ScopeSet;
use crate::server::{AsContext, AuthorizationServer, StaticClient};
use crate::store::{
    ApplicationType, AuthorizationCode, Client, ClientSource, MemoryStore, SecretHash,
    TokenEndpointAuthMethod,
};

/// The resource of the test configuration.
pub(crate) const RESOURCE: &str = "https://mcp.example.com/mcp";
/// The redirect URI of the configured clients.
pub(crate) const REDIRECT: &str = "https://app.example.com/cb";

/// A flow environment over fresh stores and a clock the test moves.
pub(crate) struct TestEnv {
    pub(crate) env: Env,
    pub(crate) clock: Arc<FakeClock>,
    /// Where the clock started.
    pub(crate) start: u64,
    /// The server the environment was built from (its key ring, its revocation list).
    pub(crate) server: AuthorizationServer,
}

impl TestEnv {
    /// The secret of the configured confidential clients.
    pub(crate) const SECRET: &'static str = "s3cr3t-0123456789abcdef";

    /// Configured clients: `public` (public), `confidential` and `rs` (confidential, `rs`
    /// the only introspection client).
    pub(crate) async fn new() -> Self {
        let server = AuthorizationServer::builder()
            .authenticator(StaticUsers::new())
            .store(MemoryStore::new())
            .client(StaticClient::public("public", [REDIRECT]))
            .client(StaticClient::confidential(
                "confidential",
                Self::SECRET,
                [REDIRECT],
            ))
            .client(StaticClient::confidential("rs", Self::SECRET, [REDIRECT]))
            .introspection_clients(["rs"])
            .build()
            .await
            .unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer("https://as.example.com")
            .scope("read", "Read")
            .scope("write", "Write")
            .authorization_server(server.clone())
            .build()
            .unwrap();
        let start = crate::util::now();
        let clock = Arc::new(FakeClock::at(start));
        let mut env = AsContext::new(cfg, &server).env;
        env.clock = clock.clone();
        Self {
            env,
            clock,
            start,
            server,
        }
    }

    /// A dynamically registered confidential client (not stored).
    pub(crate) fn confidential_client(&self, id: &str, secret: &str) -> Client {
        Client {
            client_id: id.to_owned(),
            secret_hash: Some(SecretHash::of(secret)),
            secret_expires_at: 0,
            client_name: None,
            redirect_uris: vec![REDIRECT.to_owned()],
            grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
            application_type: ApplicationType::Web,
            scope: None,
            extra: serde_json::Map::new(),
            issued_at: self.start,
            last_used_at: self.start,
            source: ClientSource::Dynamic,
        }
    }

    /// A verifier for this server's access tokens: its key ring, issuer and resource, with
    /// its revocation list.
    pub(crate) fn verifier(&self) -> crate::verify::JwtVerifier {
        crate::verify::JwtVerifier::builder(self.server.key_ring().clone())
            .issuer(self.env.cfg.issuer())
            .audience(RESOURCE)
            .revocation(self.server.revocations())
            .build()
            .unwrap()
    }

    /// Moves the clock forward by `secs` seconds.
    pub(crate) fn advance(&self, secs: u64) {
        self.clock.advance(std::time::Duration::from_secs(secs));
    }

    /// A configured client by id.
    pub(crate) async fn client(&self, id: &str) -> Client {
        self.env.client(id).await.unwrap().unwrap()
    }

    /// Stores code `code` for `client_id`, with the S256 challenge of `verifier`, scope
    /// `read write`, living the configured code lifetime from now.
    pub(crate) async fn put_code(&self, code: &str, client_id: &str, verifier: &str) {
        let now = self.env.now();
        self.env
            .grants
            .put_code(
                SecretHash::of(code),
                AuthorizationCode {
                    client_id: client_id.to_owned(),
                    redirect_uri: REDIRECT.to_owned(),
                    redirect_uri_in_request: true,
                    code_challenge: challenge(verifier),
                    scope: ScopeSet::parse("read write").unwrap(),
                    resource: RESOURCE.to_owned(),
                    subject: "alice".to_owned(),
                    claims: serde_json::Map::new(),
                    auth_time: now,
                    expires_at: now + self.env.lifetimes.code.as_secs(),
                },
            )
            .await
            .unwrap();
    }
}

/// The S256 challenge of `verifier`.
pub(crate) fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier))
}
