//! "Stores keep only hashes", proven end to end (issue 8 item 11).
//!
//! For each durable store (SQLite, PostgreSQL, Redis) a real authorization server is served
//! on `127.0.0.1` and driven over HTTP the way a client drives it: dynamic registration of a
//! confidential client (it receives a `client_secret`), `/authorize` with PKCE (the code
//! arrives in the redirect), the code exchange, two refreshes and a revocation. Then
//! **everything the store holds** is read back, and none of the secrets the client saw may
//! appear in it, neither as text nor as the hex of their bytes: the authorization code, the
//! refresh tokens, the client secret and the PKCE verifier.
//!
//! - SQLite: the raw bytes of the database file and of its WAL (so nothing hides in a page
//!   the SQL layer no longer shows);
//! - PostgreSQL: every row of every table of the test's own schema, as `row_to_json` text
//!   (`bytea` shows as hex there);
//! - Redis: every key under the test's own prefix, with its value read by type (strings,
//!   hashes, sorted sets, sets, lists).
//!
//! A positive control makes sure each dump is the real thing: the SHA-256 of the code must
//! be found in it (that is what the store is supposed to keep).
//!
//! The services come from `MCP_OAUTH_TEST_POSTGRES_URL` and `MCP_OAUTH_TEST_REDIS_URL`
//! (defaults `postgres://postgres@127.0.0.1:5432/test`, `redis://127.0.0.1:6379`). Without a
//! server a test says so and passes, except under `CI`, where it fails.

#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::server::AuthorizationServer;
use mcp_oauth::store::redis::RedisStore;
use mcp_oauth::store::sql::{PostgresStore, SqliteStore};
use mcp_oauth::store::{ClientStore, GrantStore, SecretHash};
use mcp_oauth::{McpOAuthConfig, McpOAuthLayer, oauth_router};
use serde_json::{Value, json};
use sha2::Digest as _;

/// What the client saw and the store must never hold.
#[derive(Debug)]
struct Secrets {
    code: String,
    refresh_tokens: Vec<String>,
    client_secret: String,
    verifier: String,
}

impl Secrets {
    fn all(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("authorization code", self.code.as_str()),
            ("client secret", self.client_secret.as_str()),
            ("PKCE verifier", self.verifier.as_str()),
        ];
        v.extend(
            self.refresh_tokens
                .iter()
                .map(|t| ("refresh token", t.as_str())),
        );
        v
    }
}

/// The registered client's name (stored as is: a positive control).
const CLIENT_NAME: &str = "hashes-only test client";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Panics when `dump` holds any secret as text or as the hex of its bytes; checks that it
/// holds the code's hash (positive control).
fn assert_only_hashes(store: &str, dump: &[u8], secrets: &Secrets) {
    assert!(
        dump.len() > 100,
        "{store}: the dump is suspiciously small ({} bytes)",
        dump.len()
    );
    // Positive controls: what the store should keep is in the dump, so a secret would be too.
    let found = |h: SecretHash| contains(dump, &h.0) || contains(dump, h.to_hex().as_bytes());
    assert!(
        found(SecretHash::of(&secrets.code)),
        "{store}: the code's hash is not in the dump; the dump does not show the codes"
    );
    let current = secrets.refresh_tokens.last().map_or("", String::as_str);
    assert!(
        found(SecretHash::of(current)),
        "{store}: the current refresh token's hash is not in the dump"
    );
    assert!(
        found(SecretHash::of(&secrets.client_secret)),
        "{store}: the client secret's hash is not in the dump"
    );
    assert!(
        contains(dump, CLIENT_NAME.as_bytes()),
        "{store}: the registered client is not in the dump"
    );
    for (what, secret) in secrets.all() {
        assert!(
            !contains(dump, secret.as_bytes()),
            "{store}: the raw {what} is stored"
        );
        assert!(
            !contains(dump, hex(secret.as_bytes()).as_bytes()),
            "{store}: the {what} is stored (hex-encoded)"
        );
    }
}

/// A service the test needs is missing: fail under `CI`, else skip loudly.
fn missing(service: &str, why: &str) {
    let msg = format!("{service} is not reachable ({why}); skipping");
    if std::env::var_os("CI").is_some() {
        panic!("CI: {msg}");
    }
    eprintln!("{msg}");
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Serves an authorization server on `store` at `127.0.0.1:{port}`, runs the flow over
/// HTTP and returns what the client saw.
async fn run_flow<S: ClientStore + GrantStore>(store: S) -> Secrets {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("http://127.0.0.1:{}", addr.port());
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice"))
        .store(store)
        .remember_consent(true)
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{base}/mcp"))
        .issuer(&base)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(|| async { "ok" }))
        .layer(McpOAuthLayer::new(&cfg))
        .merge(oauth_router(&cfg, &server));
    let serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let redirect = "http://127.0.0.1:43123/callback";

    // Dynamic registration of a confidential client.
    let reg: Value = http
        .post(format!("{base}/register"))
        .json(&json!({
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": CLIENT_NAME,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().expect("client_id").to_owned();
    let client_secret = reg["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();

    // Authorization with PKCE: the code arrives in the redirect.
    // 43-128 characters of [A-Za-z0-9-._~], unique to this run.
    let verifier = format!("pkce-verifier-{}-0123456789abcdef", unique("v"));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", "read"),
            ("state", "st"),
        ])
        .finish();
    let res = http
        .get(format!("{base}/authorize?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{:?}", res.text().await);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code in the redirect");

    let token = |params: Vec<(&'static str, String)>| {
        let http = http.clone();
        let (base, id, secret) = (base.clone(), client_id.clone(), client_secret.clone());
        async move {
            let res = http
                .post(format!("{base}/token"))
                .basic_auth(id, Some(secret))
                .form(&params)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let first = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", redirect.into()),
        ("code_verifier", verifier.clone()),
    ])
    .await;
    let mut refresh_tokens = vec![first["refresh_token"].as_str().unwrap().to_owned()];
    let mut access = first["access_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let next = token(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh_tokens.last().unwrap().clone()),
        ])
        .await;
        refresh_tokens.push(next["refresh_token"].as_str().unwrap().to_owned());
        access = next["access_token"].as_str().unwrap().to_owned();
    }
    // Revoke the last access token (a revoked-token record), keep the grant alive.
    let res = http
        .post(format!("{base}/revoke"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("token", access.as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    serving.abort();
    Secrets {
        code,
        refresh_tokens,
        client_secret,
        verifier,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_only_hashes() {
    let dir = std::env::temp_dir().join(unique("mcp_oauth_hashes"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("oauth.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let secrets = run_flow(store.clone()).await;
    let mut dump = std::fs::read(&path).unwrap();
    for extra in ["oauth.db-wal", "oauth.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.join(extra)) {
            dump.extend(bytes);
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    assert_only_hashes("SQLite", &dump, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_only_hashes() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let url = std::env::var("MCP_OAUTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = PgConnectOptions::from_str(&url).expect("MCP_OAUTH_TEST_POSTGRES_URL");
    let admin = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
    {
        Ok(p) => p,
        Err(e) => return missing(&format!("PostgreSQL at {url}"), &e.to_string()),
    };
    let schema = unique("hashes_only");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool).await.unwrap();
    let outcome = tokio::spawn({
        let (admin, schema) = (admin.clone(), schema.clone());
        async move {
            let secrets = run_flow(store).await;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(&schema)
            .fetch_all(&admin)
            .await
            .unwrap();
            assert!(tables.len() >= 5, "tables: {tables:?}");
            let mut dump = Vec::new();
            for t in &tables {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM \"{schema}\".\"{t}\" t"
                )))
                .fetch_all(&admin)
                .await
                .unwrap();
                for r in rows {
                    dump.extend_from_slice(r.as_bytes());
                    dump.push(b'\n');
                }
            }
            assert_only_hashes("PostgreSQL", &dump, &secrets);
        }
    })
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_only_hashes() {
    let url = std::env::var("MCP_OAUTH_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("{}:", unique("hashes_only"));
    let store = match RedisStore::connect(&url).await {
        Ok(s) => s.with_prefix(prefix.clone()),
        Err(e) => return missing(&format!("Redis at {url}"), &e.to_string()),
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let outcome = tokio::spawn({
        let mut conn = conn.clone();
        let prefix = prefix.clone();
        async move {
            let secrets = run_flow(store).await;
            let keys = scan(&mut conn, &prefix).await;
            assert!(keys.len() >= 5, "keys: {keys:?}");
            let mut dump = Vec::new();
            for key in &keys {
                dump.extend_from_slice(key.as_bytes());
                dump.push(b'\n');
                let kind: String = redis::cmd("TYPE")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => vec![
                        redis::cmd("GET")
                            .arg(key)
                            .query_async(&mut conn)
                            .await
                            .unwrap(),
                    ],
                    "hash" => redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "zset" => redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "set" => redis::cmd("SMEMBERS")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "list" => redis::cmd("LRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    other => panic!("Redis: unexpected type {other} of {key}"),
                };
                for v in values {
                    dump.extend_from_slice(&v);
                    dump.push(b'\n');
                }
            }
            assert_only_hashes("Redis", &dump, &secrets);
        }
    })
    .await;
    for key in scan(&mut conn, &prefix).await {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Every key under `prefix`.
async fn scan(conn: &mut redis::aio::ConnectionManager, prefix: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}
