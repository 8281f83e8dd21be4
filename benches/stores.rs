//! The token endpoint's throughput per store: `oauth_router` driven in process
//! (`tower::ServiceExt::oneshot`, no sockets), a public client, rate limits off, on
//! `MemoryStore`, `SqliteStore` (a file in the temp directory, WAL, `synchronous = FULL`),
//! `PostgresStore` and `RedisStore` (local servers; a fresh schema / key prefix, removed
//! afterwards).
//!
//! - `stores/<store>/code_exchange`: one `authorization_code` grant (code taken once, family
//!   created, an ES256 access token). Codes are put into the store outside the timing.
//! - `stores/<store>/refresh`: one `refresh_token` grant with rotation, each presenting the
//!   token the previous one returned.
//! - `stores/<store>/code_exchange_x16`, `refresh_x16`: 16 of them at once (16 grants, each
//!   refreshing its own chain), to show how each store behaves when requests overlap.
//!
//! ```text
//! cargo bench --features sqlite,postgres,redis --bench stores
//! MCP_OAUTH_TEST_POSTGRES_URL=… MCP_OAUTH_TEST_REDIS_URL=… cargo bench …   # other servers
//! ```
//!
//! A store whose server is not reachable is skipped with a message.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt as _;
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, RateLimit, StaticClient};
use mcp_oauth::store::redis::RedisStore;
use mcp_oauth::store::sql::{PostgresStore, SqliteStore};
use mcp_oauth::store::{
    AuthorizationCode, ClientStore, GrantStore, MemoryLimits, MemoryStore, SecretHash,
};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::Value;
use sha2::Digest as _;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

const CLIENT_ID: &str = "bench-client";
const REDIRECT: &str = "http://127.0.0.1/callback";
const VERIFIER: &str = "bench-code-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
const ISSUER: &str = "http://127.0.0.1:8000";
const PARALLEL: usize = 16;

fn challenge() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER))
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A name unique to this run.
fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), now())
}

/// Deletes every key under `prefix`.
async fn redis_cleanup(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
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
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await;
        let Ok((next, keys)) = r else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Bench {
    app: Router,
    grants: Arc<dyn GrantStore>,
    n: std::sync::atomic::AtomicU64,
}

async fn app<S: ClientStore + GrantStore>(store: S) -> Bench {
    let server = AuthorizationServer::builder()
        .authenticator(InsecureAutoApprove::new("alice"))
        .client(StaticClient::public(CLIENT_ID, [REDIRECT]))
        .token_rate_limit(RateLimit::unlimited())
        .authorize_rate_limit(RateLimit::unlimited())
        .store(store)
        .build()
        .await
        .unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(format!("{ISSUER}/mcp"))
        .issuer(ISSUER)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    Bench {
        app: oauth_router(&cfg, &server),
        grants: server.grant_store().clone(),
        n: std::sync::atomic::AtomicU64::new(0),
    }
}

impl Bench {
    async fn put_code(&self) -> String {
        let i = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let code = format!("bench-code-{i}-{}", now());
        let stored = AuthorizationCode {
            client_id: CLIENT_ID.to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            redirect_uri_in_request: true,
            code_challenge: challenge(),
            scope: ScopeSet::parse("read").unwrap(),
            resource: format!("{ISSUER}/mcp"),
            subject: "alice".to_owned(),
            claims: serde_json::Map::new(),
            auth_time: now(),
            expires_at: now() + 600,
        };
        self.grants
            .put_code(SecretHash::of(&code), stored)
            .await
            .unwrap();
        code
    }

    async fn token(&self, form: &[(&str, &str)]) -> Value {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(status.is_success(), "{status}: {json}");
        json
    }

    async fn exchange(&self, code: &str) -> String {
        let json = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", CLIENT_ID),
            ])
            .await;
        json["refresh_token"].as_str().unwrap().to_owned()
    }

    async fn refresh(&self, token: &str) -> String {
        let json = self
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", CLIENT_ID),
            ])
            .await;
        json["refresh_token"].as_str().unwrap().to_owned()
    }
}

fn run_store(c: &mut Criterion, rt: &Runtime, name: &str, bench: Bench) {
    let bench = Arc::new(bench);
    let mut g = c.benchmark_group(format!("stores/{name}"));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    g.throughput(Throughput::Elements(1));
    g.bench_function("code_exchange", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut codes = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    codes.push(bench.put_code().await);
                }
                let start = Instant::now();
                for code in &codes {
                    bench.exchange(code).await;
                }
                start.elapsed()
            }
        });
    });

    let first = rt.block_on(async {
        let code = bench.put_code().await;
        bench.exchange(&code).await
    });
    let chain = Arc::new(tokio::sync::Mutex::new(first));
    g.bench_function("refresh", |b| {
        b.to_async(rt).iter(|| {
            let (bench, chain) = (bench.clone(), chain.clone());
            async move {
                let mut token = chain.lock().await;
                *token = bench.refresh(&token).await;
            }
        });
    });

    g.throughput(Throughput::Elements(PARALLEL as u64));
    g.bench_function(format!("code_exchange_x{PARALLEL}"), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut batches = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    let mut codes = Vec::with_capacity(PARALLEL);
                    for _ in 0..PARALLEL {
                        codes.push(bench.put_code().await);
                    }
                    batches.push(codes);
                }
                let start = Instant::now();
                for codes in batches {
                    let mut set = tokio::task::JoinSet::new();
                    for code in codes {
                        let bench = bench.clone();
                        set.spawn(async move { bench.exchange(&code).await });
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap();
                    }
                }
                start.elapsed()
            }
        });
    });

    let chains: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..PARALLEL {
            let code = bench.put_code().await;
            v.push(Arc::new(tokio::sync::Mutex::new(
                bench.exchange(&code).await,
            )));
        }
        v
    });
    let chains = Arc::new(chains);
    g.bench_function(format!("refresh_x{PARALLEL}"), |b| {
        b.to_async(rt).iter(|| {
            let (bench, chains) = (bench.clone(), chains.clone());
            async move {
                let mut set = tokio::task::JoinSet::new();
                for chain in chains.iter() {
                    let (bench, chain) = (bench.clone(), chain.clone());
                    set.spawn(async move {
                        let mut token = chain.lock().await;
                        *token = bench.refresh(&token).await;
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.unwrap();
                }
            }
        });
    });
    g.finish();
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Criterion puts every code of a sample before timing it: room for them all (the
    // default cap of 10,000 codes would evict the oldest).
    let mut limits = MemoryLimits::default();
    limits.codes = 10_000_000;
    run_store(
        c,
        &rt,
        "memory",
        rt.block_on(app(MemoryStore::with_limits(limits))),
    );

    let dir = std::env::temp_dir().join(unique("mcp_oauth_bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = rt
        .block_on(SqliteStore::open(dir.join("oauth.db")))
        .unwrap();
    run_store(c, &rt, "sqlite", rt.block_on(app(sqlite)));
    let _ = std::fs::remove_dir_all(&dir);

    let pg_url = env_or(
        "MCP_OAUTH_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let schema = unique("bench");
    let pg = rt.block_on(async {
        let options = sqlx::postgres::PgConnectOptions::from_str(&pg_url).ok()?;
        let admin = sqlx::PgPool::connect_with(options.clone()).await.ok()?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&admin)
            .await
            .ok()?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .ok()?;
        let store = PostgresStore::from_pool(pool).await.ok()?;
        Some((store, admin))
    });
    match pg {
        Some((store, admin)) => {
            run_store(c, &rt, "postgres", rt.block_on(app(store)));
            rt.block_on(async {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&admin)
                .await;
            });
        }
        None => eprintln!("stores/postgres: skipped, no PostgreSQL at {pg_url}"),
    }

    let redis_url = env_or("MCP_OAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = format!("{}:", unique("bench"));
    match rt.block_on(RedisStore::connect(&redis_url)) {
        Ok(store) => {
            run_store(
                c,
                &rt,
                "redis",
                rt.block_on(app(store.with_prefix(prefix.clone()))),
            );
            rt.block_on(redis_cleanup(&redis_url, &prefix));
        }
        Err(e) => eprintln!("stores/redis: skipped: {e}"),
    }
}

criterion_group!(benches, stores);
criterion_main!(benches);
