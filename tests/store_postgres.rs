//! The store contract ([`mcp_oauth::store::testkit`]) on [`PostgresStore`], against a real
//! PostgreSQL server, each rule its own test on a multi-thread runtime so that the 64 racing
//! code redemptions and 32 racing refreshes contend for real (through several connections,
//! so the row locks do the work). Then the failure modes: a server that is unreachable at
//! start is a clear error within a bound, and a server that goes away (connections refused, or
//! accepted and never answered) makes `/token` answer `503 temporarily_unavailable` within
//! seconds; when it comes back, everything stored before still works.
//!
//! The server comes from `MCP_OAUTH_TEST_POSTGRES_URL` (`.ci/run` sets it), default
//! `postgres://postgres@127.0.0.1:5432/test`. Every test works in a schema of its own, made
//! for it and dropped after it. Without a server the tests say so and pass, except under `CI`,
//! where they fail.

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use mcp_oauth::authn::InsecureAutoApprove;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::server::{AuthorizationServer, StaticClient};
use mcp_oauth::store::sql::PostgresStore;
use mcp_oauth::store::{AuthorizationCode, GrantStore, SecretHash, StoreError, testkit};
use mcp_oauth::{McpOAuthConfig, oauth_router};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr as _;
use stores::PgSchema;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::AbortHandle;
use tower::ServiceExt as _;

/// What the [`Proxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    /// Pass them to the database.
    Forward,
    /// Close them at once (a server that is down).
    Refuse,
    /// Accept them and never answer (a server that hangs, or a black-holed network).
    Blackhole,
}

/// Where the proxy sends connections: the database's TCP address or its Unix socket (the
/// `?host=/var/run/postgresql` URL form), whichever the test URL names.
#[derive(Debug, Clone)]
enum Upstream {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl Upstream {
    /// The upstream of a PostgreSQL URL, TCP or Unix socket.
    fn of(url: &str) -> Self {
        let o = PgConnectOptions::from_str(url).expect("postgres URL");
        if let Some(dir) = o.get_socket() {
            return Self::Unix(dir.join(format!(".s.PGSQL.{}", o.get_port())));
        }
        let host = match o.get_host() {
            "localhost" => "127.0.0.1",
            h => h,
        };
        Self::Tcp(
            format!("{host}:{}", o.get_port())
                .parse()
                .unwrap_or_else(|e| panic!("PostgreSQL host {host:?} is not an address: {e}")),
        )
    }
}

/// A proxy in front of PostgreSQL whose behaviour the test switches; switching cuts every
/// open connection. It listens on a Unix socket of its own (`<dir>/.s.PGSQL.<port>`), so
/// the store reaches it the same way whatever form the test URL has; it forwards to the
/// database over TCP or a Unix socket, as the URL says.
#[derive(Clone)]
struct Proxy {
    dir: std::path::PathBuf,
    mode: Arc<std::sync::Mutex<ProxyMode>>,
    conns: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: Upstream, port: u16, mode: ProxyMode) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-oauth-pg-proxy-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}"))).unwrap();
        let proxy = Self {
            dir,
            mode: Arc::new(std::sync::Mutex::new(mode)),
            conns: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mode = *p.mode.lock().unwrap();
                let upstream = upstream.clone();
                let task = match mode {
                    ProxyMode::Forward => tokio::spawn(async move {
                        let _ = match upstream {
                            Upstream::Tcp(addr) => match TcpStream::connect(addr).await {
                                Ok(mut out) => {
                                    tokio::io::copy_bidirectional(&mut inbound, &mut out).await
                                }
                                Err(e) => Err(e),
                            },
                            Upstream::Unix(path) => match UnixStream::connect(path).await {
                                Ok(mut out) => {
                                    tokio::io::copy_bidirectional(&mut inbound, &mut out).await
                                }
                                Err(e) => Err(e),
                            },
                        };
                    }),
                    ProxyMode::Blackhole => tokio::spawn(async move {
                        let _held = inbound;
                        std::future::pending::<()>().await;
                    }),
                    ProxyMode::Refuse => continue,
                };
                p.conns.lock().unwrap().push(task.abort_handle());
            }
        });
        proxy
    }

    /// The directory holding the proxy's socket (what `PgConnectOptions::socket` takes).
    fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Switches the mode and cuts every open connection.
    fn set(&self, mode: ProxyMode) {
        *self.mode.lock().unwrap() = mode;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Runs `body` with a store in a fresh schema (dropped afterwards, also when `body` panics),
/// or reports the missing server.
async fn with_store<F, Fut>(body: F)
where
    F: FnOnce(Arc<PostgresStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = PgSchema::create("store_pg").await else {
        return;
    };
    let store = Arc::new(schema.store(16).await);
    let outcome = tokio::spawn(body(store)).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[path = "support/sweep_batches.rs"]
mod sweep_batches;
use sweep_batches::sweep_batches;

macro_rules! rule_tests {
    ($($rule:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $rule() {
                with_store(|store| async move { testkit::$rule(&*store).await }).await;
            }
        )*
    };
}

rule_tests!(
    clients,
    codes_single_use,
    code_expiry,
    family_lifecycle,
    revoke_before_create,
    rotation,
    // Issue 8 item 8: current / previous / retired on every store.
    refresh_token_states,
    reuse_after_grace,
    expired_family,
    // Issue 13: spending a code and creating its family are one atomic step; the store
    // judges a refresh token's family by the `now` it is given.
    redeem_code,
    family_of_refresh_uses_now,
    revoke_token,
    // Issue 11: client-assertion ids (private_key_jwt replay) on every store.
    assertion_ids,
    // Issue 11: upstream tokens kept (sealed) for the host's own calls, on every store.
    upstream_tokens,
    consent,
    pending,
    sweep_removes_only_expired,
    stats,
    revocation_outlives_family,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeem_code() {
    with_store(|store| async move {
        for _ in 0..20 {
            testkit::concurrent_redeem_code(store.clone()).await;
        }
    })
    .await;
}

/// Issue 13: the sweep removes what expired in bounded batches, each its own transaction,
/// and still removes all of it (and only it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_in_batches() {
    with_store(|store| async move {
        sweep_batches(Arc::new((*store).clone().with_sweep_batch(2))).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assertion_id() {
    with_store(|store| async move {
        for _ in 0..5 {
            testkit::concurrent_assertion_id(store.clone()).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_take_code() {
    with_store(|store| async move {
        let start = Instant::now();
        for _ in 0..20 {
            testkit::concurrent_take_code(store.clone()).await;
        }
        eprintln!(
            "postgres: 20 rounds of {} racing take_code: {:?}",
            testkit::CODE_RACERS,
            start.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_in_grace() {
    with_store(|store| async move {
        let start = Instant::now();
        for _ in 0..20 {
            testkit::concurrent_rotation_in_grace(store.clone()).await;
        }
        eprintln!(
            "postgres: 20 rounds of {} racing rotate_refresh: {:?}",
            testkit::ROTATION_RACERS,
            start.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all() {
    with_store(|store| async move { testkit::run_all(store).await }).await;
}

/// Two stores (two pools, as two instances would have) on one schema race for one code: the
/// database, not the process, decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_race_for_one_code() {
    let Some(schema) = PgSchema::create("store_pg_two").await else {
        return;
    };
    let a = Arc::new(schema.store(8).await);
    let b = Arc::new(schema.store(8).await);
    let outcome = tokio::spawn(async move {
        for round in 0..10 {
            let hash = SecretHash::of(&format!("two-instances-{round}"));
            a.put_code(hash, code(now() + 60)).await.unwrap();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..32 {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                set.spawn(async move { s.take_code(&hash, &format!("f{i}"), now()).await });
            }
            let mut taken = 0;
            while let Some(r) = set.join_next().await {
                if matches!(r.unwrap().unwrap(), mcp_oauth::store::CodeTake::Taken(_)) {
                    taken += 1;
                }
            }
            assert_eq!(taken, 1, "round {round}");
        }
    })
    .await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Migrations are versioned in their own table, applied once, and a second start (here a
/// second store on the same schema) is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_versioned_and_idempotent() {
    let Some(schema) = PgSchema::create("store_pg_migrate").await else {
        return;
    };
    let first = schema.store(2).await;
    let second = schema.store(2).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM mcp_oauth_migrations ORDER BY version")
            .fetch_all(second.pool())
            .await
            .unwrap();
    drop(first);
    schema.drop_schema().await;
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

/// A TCP port where no PostgreSQL answers: closed (`Refuse`), or accepting connections and
/// never answering (`Blackhole`).
async fn dead_tcp_port(mode: ProxyMode) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match mode {
        ProxyMode::Refuse => drop(listener),
        _ => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((conn, _)) = listener.accept().await {
                    held.push(conn);
                }
            });
        }
    }
    addr
}

/// A server that cannot be reached at start: `connect` fails with a clear `Unavailable`
/// within its 5 s bound, whether the port refuses or accepts and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unreachable_server_is_a_clear_error() {
    // The bounds below only tell "gives up after its 5 s timeout" from "hangs" (sqlx's own
    // default is 30 s): generous, so a loaded 2-core machine cannot flake them.
    let start = Instant::now();
    let refused = dead_tcp_port(ProxyMode::Refuse).await;
    match PostgresStore::connect(&format!("postgres://postgres@{refused}/test")).await {
        Err(StoreError::Unavailable { context: msg, .. }) => {
            assert!(msg.contains("PostgreSQL"), "{msg}");
            assert!(msg.contains(&refused.to_string()), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let silent = dead_tcp_port(ProxyMode::Blackhole).await;
    match PostgresStore::connect(&format!("postgres://postgres@{silent}/test")).await {
        Err(StoreError::Unavailable { context: msg, .. }) => {
            assert!(msg.contains("PostgreSQL"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );

    match PostgresStore::connect("postgres://postgres@127.0.0.1:notaport/test").await {
        Err(StoreError::Unavailable { context: msg, .. }) => {
            assert!(msg.contains("invalid URL"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A connection error keeps sqlx's error as its source and never shows the password of the
/// URL, neither in `Display` nor in `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_keep_the_cause_and_hide_the_password() {
    let refused = dead_tcp_port(ProxyMode::Refuse).await;
    for url in [
        format!("postgres://postgres:hunter2-secret@{refused}/test"),
        "postgres://postgres:hunter2-secret@127.0.0.1:notaport/test".to_owned(),
    ] {
        let err = match PostgresStore::connect(&url).await {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {url}"),
        };
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("PostgreSQL"), "{text}");
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
        let source = std::error::Error::source(&err).expect("the driver error is kept");
        assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
    }
}

const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "https://app.example.com/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn code(expires_at: u64) -> AuthorizationCode {
    AuthorizationCode {
        client_id: "app".to_owned(),
        redirect_uri: REDIRECT.to_owned(),
        redirect_uri_in_request: true,
        code_challenge: CHALLENGE.to_owned(),
        scope: ScopeSet::parse("read").unwrap(),
        resource: RESOURCE.to_owned(),
        subject: "alice".to_owned(),
        claims: serde_json::Map::new(),
        auth_time: now(),
        expires_at,
    }
}

async fn exchange(app: &Router, code: &str) -> (StatusCode, Value, Duration) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", "app"),
        ])
        .finish();
    let req = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let start = Instant::now();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, start.elapsed())
}

/// The store's database goes away under a running authorization server: `/token` answers
/// `503 temporarily_unavailable` within the bound, never hangs, never a 500 — whether the
/// connections are refused or accepted and left unanswered. When the database is back, the
/// codes stored before the outage redeem normally: nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_endpoint_answers_503_quickly_while_postgres_is_down() {
    let Some(schema) = PgSchema::create("store_pg_down").await else {
        return;
    };
    // issue 8 item 11: runs whatever form the URL has (TCP, or the Unix-socket
    // `?host=/var/run/postgresql` form), never skips.
    let upstream = Upstream::of(&schema.url);
    let port = PgConnectOptions::from_str(&schema.url)
        .expect("postgres URL")
        .get_port();
    let proxy = Proxy::start(upstream, port, ProxyMode::Forward).await;
    let outcome = tokio::spawn({
        let options = PgConnectOptions::from_str(&schema.url)
            .expect("postgres URL")
            .options([("search_path", schema.name.as_str())])
            .socket(proxy.dir());
        let schema_store = async move {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(2))
                .connect_with(options)
                .await
                .expect("connect through the proxy");
            PostgresStore::from_pool(pool).await.expect("migrate")
        };
        let proxy = proxy.clone();
        async move {
            let store = schema_store
                .await
                .with_operation_timeout(Duration::from_secs(3));
            let server = AuthorizationServer::builder()
                .authenticator(
                    InsecureAutoApprove::new("alice").i_understand_this_approves_everyone(),
                )
                .client(StaticClient::public("app", [REDIRECT]))
                .store(store)
                .build()
                .await
                .unwrap();
            let cfg = McpOAuthConfig::builder()
                .resource(RESOURCE)
                .issuer("https://mcp.example.com")
                .scope("read", "Read")
                .authorization_server(&server)
                .build()
                .unwrap();
            let app: Router = oauth_router(&cfg, &server);
            let grants = server.grant_store().clone();
            let mut codes = Vec::new();
            for i in 0..3 {
                let raw = format!("outage-code-{i}-{}", now());
                grants
                    .put_code(SecretHash::of(&raw), code(now() + 120))
                    .await
                    .unwrap();
                codes.push(raw);
            }
            let (status, body, _) = exchange(&app, &codes[0]).await;
            assert_eq!(status, StatusCode::OK, "{body}");

            for mode in [ProxyMode::Refuse, ProxyMode::Blackhole] {
                proxy.set(mode);
                let (status, body, took) = exchange(&app, &codes[1]).await;
                eprintln!("postgres down ({mode:?}): /token answered {status} in {took:?}");
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}: {body}");
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                // The store gives up after 2-3 s; the bound only tells that from a hang,
                // with room for a loaded machine.
                assert!(
                    took < Duration::from_secs(15),
                    "{mode:?}: /token took {took:?} while the database was down"
                );
            }

            proxy.set(ProxyMode::Forward);
            // The pool reconnects on its own; the untouched code still works.
            let mut last = None;
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let (status, body, _) = exchange(&app, &codes[1]).await;
                if status == StatusCode::OK {
                    last = None;
                    break;
                }
                last = Some((status, body));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert!(last.is_none(), "no recovery after the outage: {last:?}");
            let (status, body, _) = exchange(&app, &codes[2]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    })
    .await;
    proxy.set(ProxyMode::Refuse);
    schema.drop_schema().await;
    let _ = std::fs::remove_dir_all(proxy.dir());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
