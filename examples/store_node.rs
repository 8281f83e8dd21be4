//! # `store_node`: the embedded authorization server on a durable, shared store
//!
//! One instance of an MCP server's authorization side: `oauth_router` (discovery, dynamic
//! registration, `/authorize`, `/token`, `/revoke`, `/introspect`, `/jwks.json`) next to a
//! protected `POST /mcp` that answers who called, all on the store you choose. Start it twice
//! on the same PostgreSQL or Redis with the same issuer, and the two instances are
//! interchangeable: they sign with one key ring kept in the store, a client registers on one,
//! authorizes on the other, refreshes on either, a revocation on one is refused by the other
//! at once, and a key rotated on one verifies on the other. Start it on a SQLite file, kill
//! it, start it again: every client, refresh token and signing key is still there.
//!
//! ## Run it
//!
//! ```text
//! MCP_OAUTH_STORE=sqlite:oauth.db cargo run --example store_node --features sqlite
//! MCP_OAUTH_STORE=postgres:postgres://postgres@127.0.0.1/test cargo run --example store_node --features postgres
//! MCP_OAUTH_STORE=redis:redis://127.0.0.1:6379 cargo run --example store_node --features redis
//! ```
//!
//! It prints `listening on http://ADDR` on standard output once it serves.
//!
//! ## Configuration (environment)
//!
//! | variable | meaning |
//! |---|---|
//! | `MCP_OAUTH_STORE` | `memory` (default), `sqlite:PATH`, `postgres:URL` or `redis:URL` |
//! | `MCP_OAUTH_STORE_NAMESPACE` | PostgreSQL: a schema of its own for the tables (created when missing); Redis: the key prefix |
//! | `MCP_OAUTH_ADDR` | socket address to bind (default `127.0.0.1:0`: a free port) |
//! | `MCP_OAUTH_ISSUER` | the issuer, the same on every instance (default `http://<bound addr>`); the resource is `<issuer>/mcp` |
//! | `MCP_OAUTH_SIGNING_KEY_PEM` | an ES256 signing key (PKCS#8 PEM) to use instead of the store's key ring (then the same on every instance, and rotated by you) |
//! | `MCP_OAUTH_KEY_REFRESH_SECS` | how often the key ring reloads from the store (default 30) |
//! | `MCP_OAUTH_INSECURE_ADMIN_ROUTES` | `1`: **insecure**, serve `POST /admin/rotate-signing-key` without any authentication (automated tests) |
//! | `MCP_OAUTH_INSECURE_AUTO_APPROVE` | `1`: **insecure**, approve every authorization request as user `alice` without login or consent (automated tests) |
//! | `MCP_OAUTH_DEMO_PASSWORD` | otherwise: the password of user `demo` (default: random, printed) |
//! | `MCP_OAUTH_RATE_LIMITS` | `off` to lift the per-address rate limits (load tests from one address) |
//!
//! The crate's store tests (`tests/store_restart.rs`, `tests/store_multi_instance.rs`,
//! `tests/store_postgres.rs`) include this file and run it as a child process; the
//! `harness` module at the end is theirs and is compiled only into them.

use axum::serve::ListenerExt as _;
use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::post;
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm, SigningKey};
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit};
use mcp_oauth::store::{KeyStore, MemoryStore};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, oauth_router};

/// Errors of this example.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// Everything the node is configured with (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) store: String,
    pub(crate) namespace: Option<String>,
    pub(crate) addr: String,
    pub(crate) issuer: Option<String>,
    pub(crate) signing_key_pem: Option<String>,
    pub(crate) key_refresh_secs: Option<u64>,
    pub(crate) insecure_admin_routes: bool,
    pub(crate) insecure_auto_approve: bool,
    pub(crate) demo_password: Option<String>,
    pub(crate) rate_limits: bool,
}

impl Settings {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            store: var("MCP_OAUTH_STORE").unwrap_or_else(|| "memory".to_owned()),
            namespace: var("MCP_OAUTH_STORE_NAMESPACE"),
            addr: var("MCP_OAUTH_ADDR").unwrap_or_else(|| "127.0.0.1:0".to_owned()),
            issuer: var("MCP_OAUTH_ISSUER"),
            signing_key_pem: var("MCP_OAUTH_SIGNING_KEY_PEM"),
            key_refresh_secs: var("MCP_OAUTH_KEY_REFRESH_SECS").and_then(|v| v.parse().ok()),
            insecure_admin_routes: var("MCP_OAUTH_INSECURE_ADMIN_ROUTES").as_deref() == Some("1"),
            insecure_auto_approve: var("MCP_OAUTH_INSECURE_AUTO_APPROVE").as_deref() == Some("1"),
            demo_password: var("MCP_OAUTH_DEMO_PASSWORD"),
            rate_limits: var("MCP_OAUTH_RATE_LIMITS").as_deref() != Some("off"),
        }
    }
}

/// The signing keys: the PEM key when one is configured, else the ring kept in `store`.
async fn with_keys(
    builder: AuthorizationServerBuilder,
    store: impl KeyStore,
    settings: &Settings,
) -> Result<AuthorizationServerBuilder, BoxError> {
    let ring = match &settings.signing_key_pem {
        Some(pem) => KeyRing::new(SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, pem)?),
        None => {
            let mut keys = KeyRing::from_store(store);
            if let Some(secs) = settings.key_refresh_secs {
                keys = keys.refresh_interval(std::time::Duration::from_secs(secs));
            }
            keys.open().await?
        }
    };
    Ok(builder.key_ring(ring))
}

/// Puts the configured store, and the signing keys, into the builder.
async fn with_store(
    builder: AuthorizationServerBuilder,
    settings: &Settings,
) -> Result<AuthorizationServerBuilder, BoxError> {
    let (kind, target) = settings
        .store
        .split_once(':')
        .unwrap_or((settings.store.as_str(), ""));
    // Unused when the features of the stores that need them are off.
    let _ = (target, &settings.namespace);
    match kind {
        // A memory store lives and dies with the process; so do its keys.
        "memory" => {
            with_keys(
                builder.store(MemoryStore::new()),
                MemoryStore::new(),
                settings,
            )
            .await
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let store = mcp_oauth::store::sql::SqliteStore::open(target).await?;
            with_keys(builder.store(store.clone()), store, settings).await
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let store = postgres_store(target, settings.namespace.as_deref()).await?;
            with_keys(builder.store(store.clone()), store, settings).await
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let mut store = mcp_oauth::store::redis::RedisStore::connect(target).await?;
            if let Some(prefix) = &settings.namespace {
                store = store.with_prefix(prefix.clone());
            }
            with_keys(builder.store(store.clone()), store, settings).await
        }
        other => Err(format!(
            "MCP_OAUTH_STORE: unknown or not compiled in: {other:?} (memory, sqlite:PATH, \
             postgres:URL, redis:URL; enable the matching feature)"
        )
        .into()),
    }
}

/// A PostgreSQL store, in `schema` (created when missing) when one is given.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres_store(
    url: &str,
    schema: Option<&str>,
) -> Result<mcp_oauth::store::sql::PostgresStore, BoxError> {
    use std::str::FromStr as _;
    use std::time::Duration;

    use mcp_oauth::store::sql::PostgresStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let Some(schema) = schema else {
        return Ok(PostgresStore::connect(url).await?);
    };
    if schema.is_empty()
        || !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("schema {schema:?}: use lower-case letters, digits and _").into());
    }
    let options = PgConnectOptions::from_str(url)?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.options([("search_path", schema)]))
        .await?;
    Ok(PostgresStore::from_pool(pool).await?)
}

/// Builds the app on `listener` and serves until the process ends.
pub(crate) async fn serve(settings: Settings) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(&settings.addr).await?;
    let addr = listener.local_addr()?;
    let issuer = settings
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let mut builder = AuthorizationServer::builder();
    builder = if settings.insecure_auto_approve {
        builder
            .authenticator(InsecureAutoApprove::new("alice").i_understand_this_approves_everyone())
    } else {
        let password = settings
            .demo_password
            .clone()
            .unwrap_or_else(|| format!("{:016x}", rand_u64()));
        eprintln!("user: demo, password: {password}");
        builder.authenticator(StaticUsers::new().with_password("demo", &password))
    };
    if !settings.rate_limits {
        builder = builder
            .register_rate_limit(RateLimit::unlimited())
            .token_rate_limit(RateLimit::unlimited())
            .login_rate_limit(RateLimit::unlimited())
            .authorize_rate_limit(RateLimit::unlimited());
    }
    let server = with_store(builder, &settings).await?.build()?;

    let cfg = McpOAuthConfig::builder()
        .resource(format!("{issuer}/mcp"))
        .issuer(issuer.clone())
        .scope("read", "Read your data")
        .authorization_server(&server)
        .build()?;
    let mut app = Router::new()
        .route(
            "/mcp",
            post(|auth: Auth| async move {
                axum::Json(serde_json::json!({
                    "sub": auth.subject(),
                    "client_id": auth.client_id(),
                    "scope": auth.scopes().to_string(),
                }))
            }),
        )
        .layer(McpOAuthLayer::new(cfg.clone()))
        .merge(oauth_router(&cfg, &server));
    // The retention sweep runs while this handle lives.
    let _upkeep = server.start_upkeep();
    if settings.insecure_admin_routes {
        eprintln!(
            "INSECURE: serving unauthenticated admin routes (MCP_OAUTH_INSECURE_ADMIN_ROUTES)"
        );
        app = app.route(
            "/admin/rotate-signing-key",
            post(move || rotate_signing_key(server.clone())),
        );
    }

    println!("listening on http://{addr}");
    // TCP_NODELAY: rmcp answers over SSE in several writes; without it the second request on
    // a keep-alive connection waits ~40 ms for Nagle and delayed ACKs.
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// `POST /admin/rotate-signing-key`: rotates the ring (in the store, for every instance).
async fn rotate_signing_key(server: AuthorizationServer) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use mcp_oauth::keys::RotationOutcome;
    match server.rotate_signing_key().await {
        Ok(outcome) => {
            let rotated = matches!(outcome, RotationOutcome::Rotated { .. });
            axum::Json(serde_json::json!({ "kid": outcome.kid(), "rotated": rotated }))
                .into_response()
        }
        Err(e) => {
            eprintln!("key rotation failed: {e}");
            (http::StatusCode::SERVICE_UNAVAILABLE, "key rotation failed").into_response()
        }
    }
}

/// A little randomness for the demo password, without another dependency.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    serve(Settings::from_env()).await
}

/// The store tests' side of this file: service URLs (and the rule for a missing service),
/// per-run PostgreSQL schemas and Redis prefixes, and nodes run as child processes.
#[cfg(test)]
pub(crate) mod harness {
    use std::collections::HashMap;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt as _, BufReader};
    use tokio::process::{Child, Command};

    /// The environment variable that turns a test binary into a node (see [`child_main`]).
    const NODE_VAR: &str = "MCP_OAUTH_STORE_NODE";

    /// The name of the test function that runs [`child_main`] in every file spawning nodes.
    pub(crate) const CHILD_TEST: &str = "store_node_child";

    /// In a test binary started by [`Node::spawn`]: serves as a node from the environment,
    /// forever. In a normal test run: returns at once.
    pub(crate) async fn child_main() {
        if std::env::var(NODE_VAR).as_deref() != Ok("1") {
            return;
        }
        if let Err(e) = super::serve(super::Settings::from_env()).await {
            eprintln!("store node failed: {e}");
            std::process::exit(2);
        }
    }

    /// A name unique to this run: `{prefix}_{pid}_{n}_{nanos}`.
    pub(crate) fn unique(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A service the test needs is missing: fail under `CI`, else skip loudly.
    pub(crate) fn missing(service: &str, why: &str) {
        let msg = format!(
            "{service} is not reachable ({why}); start it or set the URL variable. `.ci/run` \
             starts PostgreSQL and Redis and sets MCP_OAUTH_TEST_POSTGRES_URL and \
             MCP_OAUTH_TEST_REDIS_URL"
        );
        if std::env::var_os("CI").is_some() {
            panic!("CI: {msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }

    /// A fresh ES256 key as PKCS#8 PEM, to share between nodes.
    pub(crate) fn signing_key_pem() -> String {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        use base64::Engine as _;
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("keygen");
        let der = pair.to_pkcs8v1().expect("pkcs8");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            body.join("\n")
        )
    }

    /// A node: this test binary re-run as a child process serving [`super::serve`].
    #[derive(Debug)]
    pub(crate) struct Node {
        child: Child,
        /// `http://127.0.0.1:PORT`
        pub(crate) base: String,
    }

    impl Node {
        /// Starts a node with `env` (the `MCP_OAUTH_*` settings) and waits until it serves.
        pub(crate) async fn spawn(env: &HashMap<&str, String>) -> Self {
            let exe = std::env::current_exe().expect("test binary path");
            let mut cmd = Command::new(exe);
            cmd.args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(NODE_VAR, "1")
                .env("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1")
                .env("MCP_OAUTH_RATE_LIMITS", "off")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            let mut child = cmd.spawn().expect("spawn node");
            let stdout = child.stdout.take().expect("node stdout");
            let mut lines = BufReader::new(stdout).lines();
            let base = tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    // libtest may have printed `test store_node_child ... ` on the same line.
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        return Some(addr.trim().to_owned());
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .expect("the node did not start (see its stderr above)");
            // Keep reading, so the node never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Self { child, base }
        }

        /// `kill -9`, and waits until the process is gone.
        pub(crate) async fn kill9(mut self) {
            self.child.start_kill().expect("kill node");
            let _ = self.child.wait().await;
        }

        /// The URL of `path` on this node.
        pub(crate) fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }
    }

    /// The OAuth flow as a client drives it over HTTP, against any node.
    pub(crate) mod flow {
        use serde_json::{Value, json};

        /// The issuer every test node shares.
        pub(crate) const ISSUER: &str = "https://mcp-oauth.test";
        /// The redirect URI test clients register (loopback: any port matches).
        pub(crate) const REDIRECT: &str = "http://127.0.0.1/callback";
        /// RFC 7636 appendix B.
        const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

        /// Tokens from the token endpoint.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) struct Tokens {
            pub(crate) access: String,
            pub(crate) refresh: String,
        }

        /// A refused or failed call: the status (0 when the request did not get through) and
        /// the body.
        pub(crate) type Failure = (u16, String);

        /// An HTTP client that does not follow redirects.
        #[derive(Debug, Clone)]
        pub(crate) struct Http(reqwest::Client);

        impl Http {
            pub(crate) fn new() -> Self {
                Self(
                    reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .timeout(std::time::Duration::from_secs(20))
                        .build()
                        .expect("reqwest client"),
                )
            }

            async fn json(res: reqwest::Result<reqwest::Response>) -> Result<Value, Failure> {
                let res = res.map_err(|e| (0, e.to_string()))?;
                let status = res.status().as_u16();
                let text = res.text().await.map_err(|e| (status, e.to_string()))?;
                if !(200..300).contains(&status) {
                    return Err((status, text));
                }
                serde_json::from_str(&text).map_err(|e| (status, format!("{e}: {text}")))
            }

            /// RFC 7591 registration; the new client id.
            pub(crate) async fn register(&self, base: &str) -> Result<String, Failure> {
                let res = self
                    .0
                    .post(format!("{base}/register"))
                    .json(&json!({
                        "redirect_uris": [REDIRECT],
                        "client_name": "store test client",
                        "token_endpoint_auth_method": "none",
                    }))
                    .send()
                    .await;
                let body = Self::json(res).await?;
                body["client_id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or((201, body.to_string()))
            }

            /// `GET /authorize` (auto-approved): the code from the redirect.
            pub(crate) async fn authorize(
                &self,
                base: &str,
                client_id: &str,
            ) -> Result<String, Failure> {
                let url = url::Url::parse_with_params(
                    &format!("{base}/authorize"),
                    &[
                        ("response_type", "code"),
                        ("client_id", client_id),
                        ("redirect_uri", REDIRECT),
                        ("code_challenge", CHALLENGE),
                        ("code_challenge_method", "S256"),
                        ("scope", "read"),
                        ("state", "s"),
                    ],
                )
                .map_err(|e| (0, e.to_string()))?;
                let res = self
                    .0
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| (0, e.to_string()))?;
                let status = res.status().as_u16();
                let location = res
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let Some(location) = location.filter(|_| status == 302 || status == 303) else {
                    return Err((status, res.text().await.unwrap_or_default()));
                };
                let url = url::Url::parse(&location).map_err(|e| (status, e.to_string()))?;
                url.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .ok_or((status, location))
            }

            async fn token(&self, base: &str, form: &[(&str, &str)]) -> Result<Tokens, Failure> {
                let res = self.0.post(format!("{base}/token")).form(form).send().await;
                let body = Self::json(res).await?;
                match (
                    body["access_token"].as_str(),
                    body["refresh_token"].as_str(),
                ) {
                    (Some(a), Some(r)) => Ok(Tokens {
                        access: a.to_owned(),
                        refresh: r.to_owned(),
                    }),
                    _ => Err((200, body.to_string())),
                }
            }

            /// The authorization-code grant.
            pub(crate) async fn exchange(
                &self,
                base: &str,
                client_id: &str,
                code: &str,
            ) -> Result<Tokens, Failure> {
                self.token(
                    base,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", REDIRECT),
                        ("code_verifier", VERIFIER),
                        ("client_id", client_id),
                    ],
                )
                .await
            }

            /// The refresh-token grant.
            pub(crate) async fn refresh(
                &self,
                base: &str,
                client_id: &str,
                refresh: &str,
            ) -> Result<Tokens, Failure> {
                self.token(
                    base,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh),
                        ("client_id", client_id),
                    ],
                )
                .await
            }

            /// Registers, authorizes and exchanges on `base`.
            pub(crate) async fn new_grant(&self, base: &str) -> Result<(String, Tokens), Failure> {
                let client = self.register(base).await?;
                let code = self.authorize(base, &client).await?;
                let tokens = self.exchange(base, &client, &code).await?;
                Ok((client, tokens))
            }

            /// A call to the protected `/mcp`: its status.
            pub(crate) async fn mcp(&self, base: &str, access: &str) -> u16 {
                self.0
                    .post(format!("{base}/mcp"))
                    .bearer_auth(access)
                    .header("accept", "application/json, text/event-stream")
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }

            /// RFC 7009 revocation by a public client: the status.
            pub(crate) async fn revoke(&self, base: &str, client_id: &str, token: &str) -> u16 {
                self.0
                    .post(format!("{base}/revoke"))
                    .form(&[("token", token), ("client_id", client_id)])
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }

            /// `POST /admin/rotate-signing-key` (a node started with
            /// `MCP_OAUTH_INSECURE_ADMIN_ROUTES=1`): the new current key id and whether this
            /// node's rotation won.
            pub(crate) async fn rotate_signing_key(&self, base: &str) -> (String, bool) {
                let v = Self::json(
                    self.0
                        .post(format!("{base}/admin/rotate-signing-key"))
                        .send()
                        .await,
                )
                .await
                .expect("rotate-signing-key");
                (
                    v["kid"].as_str().expect("kid").to_owned(),
                    v["rotated"].as_bool().expect("rotated"),
                )
            }

            /// The published keys.
            pub(crate) async fn jwks(&self, base: &str) -> Value {
                Self::json(self.0.get(format!("{base}/jwks.json")).send().await)
                    .await
                    .expect("jwks")
            }
        }
    }

    /// The PostgreSQL URL for tests.
    pub(crate) fn postgres_url() -> String {
        std::env::var("MCP_OAUTH_TEST_POSTGRES_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// The Redis URL for tests.
    pub(crate) fn redis_url() -> String {
        std::env::var("MCP_OAUTH_TEST_REDIS_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
    }

    #[cfg(feature = "postgres")]
    #[allow(unused_imports)]
    pub(crate) use pg::PgSchema;

    #[cfg(feature = "postgres")]
    mod pg {
        use std::net::SocketAddr;
        use std::str::FromStr as _;
        use std::time::Duration;

        use mcp_oauth::store::sql::PostgresStore;
        use sqlx::PgPool;
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

        /// A schema of its own in the test database, for one test.
        #[derive(Debug)]
        pub(crate) struct PgSchema {
            pub(crate) url: String,
            pub(crate) name: String,
            admin: PgPool,
        }

        impl PgSchema {
            /// Creates the schema, or reports the missing server (`None`).
            pub(crate) async fn create(prefix: &str) -> Option<Self> {
                // Once the server was found missing, later tests skip without waiting again.
                static DOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let url = super::postgres_url();
                if let Some(why) = DOWN.get() {
                    super::missing(&format!("PostgreSQL at {url}"), why);
                    return None;
                }
                let options = match PgConnectOptions::from_str(&url) {
                    Ok(o) => o,
                    Err(e) => panic!("MCP_OAUTH_TEST_POSTGRES_URL {url:?}: {e}"),
                };
                let admin = match PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        super::missing(&format!("PostgreSQL at {url}"), &e.to_string());
                        let _ = DOWN.set(e.to_string());
                        return None;
                    }
                };
                let name = super::unique(prefix);
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                Some(Self { url, name, admin })
            }

            fn options(&self) -> PgConnectOptions {
                PgConnectOptions::from_str(&self.url)
                    .expect("postgres URL")
                    .options([("search_path", self.name.as_str())])
            }

            /// A store in this schema with up to `connections` connections.
            pub(crate) async fn store(&self, connections: u32) -> PostgresStore {
                let pool = PgPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(self.options())
                    .await
                    .expect("connect to the test schema");
                PostgresStore::from_pool(pool).await.expect("migrate")
            }

            /// A store in this schema reached through `addr` (a proxy), whose pool waits at
            /// most `acquire_timeout` for a connection.
            pub(crate) fn store_via(
                &self,
                addr: SocketAddr,
                acquire_timeout: Duration,
            ) -> impl Future<Output = PostgresStore> + Send + 'static {
                let options = self
                    .options()
                    .host(&addr.ip().to_string())
                    .port(addr.port());
                async move {
                    let pool = PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(acquire_timeout)
                        .connect_with(options)
                        .await
                        .expect("connect through the proxy");
                    PostgresStore::from_pool(pool).await.expect("migrate")
                }
            }

            /// The server's TCP address, when the URL names one (not a Unix socket).
            pub(crate) fn addr(&self) -> Option<SocketAddr> {
                let o = PgConnectOptions::from_str(&self.url).ok()?;
                if o.get_socket().is_some() {
                    return None;
                }
                let host = match o.get_host() {
                    "localhost" => "127.0.0.1",
                    h => h,
                };
                format!("{host}:{}", o.get_port()).parse().ok()
            }

            /// Drops the schema with everything in it.
            pub(crate) async fn drop_schema(&self) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                    self.name
                )))
                .execute(&self.admin)
                .await;
            }
        }
    }

    #[cfg(feature = "redis")]
    #[allow(unused_imports)]
    pub(crate) use rd::RedisNamespace;

    #[cfg(feature = "redis")]
    mod rd {
        use mcp_oauth::store::redis::RedisStore;

        /// A key prefix of its own in the test Redis, for one test.
        #[derive(Debug)]
        pub(crate) struct RedisNamespace {
            pub(crate) url: String,
            pub(crate) prefix: String,
        }

        impl RedisNamespace {
            /// Checks the server and picks a prefix, or reports the missing server (`None`).
            pub(crate) async fn create(prefix: &str) -> Option<Self> {
                static DOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let url = super::redis_url();
                if let Some(why) = DOWN.get() {
                    super::missing(&format!("Redis at {url}"), why);
                    return None;
                }
                match RedisStore::connect(&url).await {
                    Ok(_) => Some(Self {
                        url,
                        prefix: format!("{}:", super::unique(prefix)),
                    }),
                    Err(e) => {
                        super::missing(&format!("Redis at {url}"), &e.to_string());
                        let _ = DOWN.set(e.to_string());
                        None
                    }
                }
            }

            /// A store under this prefix.
            pub(crate) async fn store(&self) -> RedisStore {
                RedisStore::connect(&self.url)
                    .await
                    .expect("connect to Redis")
                    .with_prefix(self.prefix.clone())
            }

            /// Deletes every key under the prefix.
            pub(crate) async fn cleanup(&self) {
                let Ok(client) = redis::Client::open(self.url.as_str()) else {
                    return;
                };
                let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let mut cursor: u64 = 0;
                loop {
                    let r: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}*", self.prefix))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await;
                    let Ok((next, keys)) = r else { return };
                    if !keys.is_empty() {
                        let _: redis::RedisResult<u64> =
                            redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
                    }
                    if next == 0 {
                        return;
                    }
                    cursor = next;
                }
            }
        }
    }
}
