//! An [`Env`] for the flow tests: a [`MemoryStore`], a [`FakeClock`] standing at [`T0`],
//! the server's default lifetimes and a few configured clients.

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

/// Where the fake clock starts.
pub(crate) const T0: u64 = 1_800_000_000;
/// The resource of the test configuration.
pub(crate) const RESOURCE: &str = "https://mcp.example.com/mcp";
/// The redirect URI of the configured clients.
pub(crate) const REDIRECT: &str = "https://app.example.com/cb";

/// A flow environment over fresh stores and a clock the test moves.
pub(crate) struct TestEnv {
    pub(crate) env: Env,
    pub(crate) clock: Arc<FakeClock>,
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
            .unwrap();
        let cfg = McpOAuthConfig::builder()
            .resource(RESOURCE)
            .issuer("https://as.example.com")
            .scope("read", "Read")
            .scope("write", "Write")
            .authorization_server(server.clone())
            .build()
            .unwrap();
        let clock = Arc::new(FakeClock::at(T0));
        let mut env = AsContext::new(cfg, &server).env;
        env.clock = clock.clone();
        Self { env, clock }
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
            issued_at: T0,
            last_used_at: T0,
            source: ClientSource::Dynamic,
        }
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
