//! The store tests' shared side: service URLs (and the rule for a missing service), per-run
//! PostgreSQL schemas and Redis prefixes, shared signing keys, and nodes (the `store_node`
//! example binary, started through [`example`]) with the OAuth flow a client drives against
//! them.
//!
//! ```ignore
//! #[path = "support/stores.rs"]
//! mod stores;
//! ```
#![allow(dead_code, unreachable_pub)]

#[path = "example.rs"]
pub mod example;

use example::Example;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Three tests of one two-instance scenario, in a module named `$name`: `$scenario(a, b)`
/// with two stores sharing their state — one SQLite file opened twice (`on_one_sqlite_file`),
/// one PostgreSQL schema (`on_postgres`), one Redis namespace (`on_redis`), each behind its
/// feature; a service that is not configured is skipped as [`PgSchema::create`] and
/// [`RedisNamespace::create`] say. The including file declares this module as `stores` with
/// `#[macro_use]`.
#[allow(unused_macros)]
macro_rules! across_shared_stores {
    ($name:ident, $scenario:ident, $prefix:literal) => {
        mod $name {
            #[cfg(feature = "sqlite")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_one_sqlite_file() {
                use mcp_oauth::store::sql::SqliteStore;
                let dir = std::env::temp_dir().join(crate::stores::unique($prefix));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("shared.sqlite3");
                let a = SqliteStore::open(&path).await.unwrap();
                let b = SqliteStore::open(&path).await.unwrap();
                super::$scenario(a, b).await;
                let _ = std::fs::remove_dir_all(dir);
            }

            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some(schema) = crate::stores::PgSchema::create($prefix).await else {
                    return;
                };
                super::$scenario(schema.store(4).await, schema.store(4).await).await;
                schema.drop_schema().await;
            }

            #[cfg(feature = "redis")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                let Some(ns) = crate::stores::RedisNamespace::create($prefix).await else {
                    return;
                };
                super::$scenario(ns.store().await, ns.store().await).await;
                ns.cleanup().await;
            }
        }
    };
}

/// A name unique to this run: `{prefix}_{pid}_{n}_{nanos}`.
pub fn unique(prefix: &str) -> String {
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
pub fn missing(service: &str, why: &str) {
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
pub fn signing_key_pem() -> String {
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

/// A node: the `store_node` example binary, run with the `MCP_OAUTH_*` settings given (plus
/// auto-approval and no rate limits), killed on drop.
#[derive(Debug)]
pub struct Node {
    example: Example,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Node {
    /// Starts a node with `env` (the `MCP_OAUTH_*` settings) and waits until it serves.
    pub async fn spawn(env: &HashMap<&str, String>) -> Self {
        let mut vars: Vec<(&str, &str)> = vec![
            ("MCP_OAUTH_INSECURE_AUTO_APPROVE", "1"),
            ("MCP_OAUTH_RATE_LIMITS", "off"),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
        let example = Example::start("store_node", &vars, &[]).await;
        let base = example.base.clone();
        Self { example, base }
    }

    /// `kill -9`, and waits until the process is gone.
    pub async fn kill9(self) {
        self.example.kill9().await;
    }

    /// The URL of `path` on this node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The OAuth flow as a client drives it over HTTP, against any node.
pub mod flow {
    use serde_json::{Value, json};

    /// The issuer every test node shares.
    pub const ISSUER: &str = "https://mcp-oauth.test";
    /// The redirect URI test clients register (loopback: any port matches).
    pub const REDIRECT: &str = "http://127.0.0.1/callback";
    /// RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    /// Tokens from the token endpoint.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Tokens {
        pub access: String,
        pub refresh: String,
    }

    /// A refused or failed call: the status (0 when the request did not get through) and
    /// the body.
    pub type Failure = (u16, String);

    /// An HTTP client that does not follow redirects.
    #[derive(Debug, Clone)]
    pub struct Http(reqwest::Client);

    impl Http {
        pub fn new() -> Self {
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
        pub async fn register(&self, base: &str) -> Result<String, Failure> {
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
        pub async fn authorize(&self, base: &str, client_id: &str) -> Result<String, Failure> {
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
        pub async fn exchange(
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
        pub async fn refresh(
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
        pub async fn new_grant(&self, base: &str) -> Result<(String, Tokens), Failure> {
            let client = self.register(base).await?;
            let code = self.authorize(base, &client).await?;
            let tokens = self.exchange(base, &client, &code).await?;
            Ok((client, tokens))
        }

        /// A call to the protected `/mcp`: its status.
        pub async fn mcp(&self, base: &str, access: &str) -> u16 {
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
        pub async fn revoke(&self, base: &str, client_id: &str, token: &str) -> u16 {
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
        pub async fn rotate_signing_key(&self, base: &str) -> (String, bool) {
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
        pub async fn jwks(&self, base: &str) -> Value {
            Self::json(self.0.get(format!("{base}/jwks.json")).send().await)
                .await
                .expect("jwks")
        }
    }
}

/// The PostgreSQL URL for tests.
pub fn postgres_url() -> String {
    std::env::var("MCP_OAUTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The Redis URL for tests.
pub fn redis_url() -> String {
    std::env::var("MCP_OAUTH_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

#[cfg(feature = "postgres")]
#[allow(unused_imports)]
pub use pg::PgSchema;

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
    pub struct PgSchema {
        pub url: String,
        pub name: String,
        admin: PgPool,
    }

    impl PgSchema {
        /// Creates the schema, or reports the missing server (`None`).
        pub async fn create(prefix: &str) -> Option<Self> {
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
        pub async fn store(&self, connections: u32) -> PostgresStore {
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
        pub fn store_via(
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
        pub fn addr(&self) -> Option<SocketAddr> {
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
        pub async fn drop_schema(&self) {
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
pub use rd::RedisNamespace;

#[cfg(feature = "redis")]
mod rd {
    use mcp_oauth::store::redis::RedisStore;

    /// A key prefix of its own in the test Redis, for one test.
    #[derive(Debug)]
    pub struct RedisNamespace {
        pub url: String,
        pub prefix: String,
    }

    impl RedisNamespace {
        /// Checks the server and picks a prefix, or reports the missing server (`None`).
        pub async fn create(prefix: &str) -> Option<Self> {
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
        pub async fn store(&self) -> RedisStore {
            RedisStore::connect(&self.url)
                .await
                .expect("connect to Redis")
                .with_prefix(self.prefix.clone())
        }

        /// Deletes every key under the prefix.
        pub async fn cleanup(&self) {
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
