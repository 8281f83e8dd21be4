//! Whole OAuth flows from many concurrent clients against the quickstart's app over loopback
//! HTTP (issue 13, item 5): no answer is a 5xx, and no grant is lost.
//!
//! 32 simulated users, each its own MCP client on its own loopback source address (so the
//! server's per-address rate limits stay on, at their defaults) with its own browser and
//! account, run up to [`FLOWS_PER_CLIENT`] flows each, all at once:
//!
//! register (RFC 7591) → `/authorize` with PKCE S256 in the test browser (login page with a
//! password, consent page, callback with `code`, `state` and `iss`) → code exchange →
//! MCP `initialize` + `tools/call files_read` with the access token → refresh → the same
//! `tools/call` with the new access token. The refresh is sent twice at once with the same
//! token (real clients do): both answers must carry the same successor.
//!
//! It runs on the memory store and on a SQLite file (the quickstart's default).
//!
//! The run is bounded twice: by count (at most `CLIENTS × FLOWS_PER_CLIENT` flows) and by
//! time (no flow starts after [`START_FLOWS_FOR`]), whichever comes first, so a slow
//! machine runs fewer flows rather than a longer test. It asserts correctness only, never
//! speed:
//!
//! - every answer of every request (the browser's included) is below 500;
//! - every flow completes (no 4xx either: nothing here is a client mistake);
//! - afterwards, every client whose registration was answered `201` is still found
//!   (`/authorize` with its id shows the login page, not the unknown-client error);
//! - every family's last refresh token works exactly once: it refreshes (200), presenting it
//!   again inside the grace window returns **the same** successor (no second token is
//!   minted from one refresh token), the new access token calls the tool, and the successor
//!   refreshes in turn (the family is alive).
#![cfg(all(feature = "server", feature = "rmcp", feature = "macros"))]

#[allow(dead_code)]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/load.rs"]
mod load;
#[path = "support/quickstart_app.rs"]
mod quickstart_app;

use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHasher as _;
use browser::{Browser, Decision, Outcome};
use load::{Answers, Client, TokenAnswer, Tokens};
use mcp_oauth::authn::StaticUsers;
use mcp_oauth::server::AuthorizationServer;

/// Simulated users (each one MCP client at a time, its own source address and account).
const CLIENTS: usize = 32;
/// The count bound: flows per user.
const FLOWS_PER_CLIENT: usize = 5;
/// The time bound: no flow starts after this long.
const START_FLOWS_FOR: Duration = Duration::from_secs(10);
/// Every user's password.
const PASSWORD: &str = "load-test-password";

/// A grant as its client holds it at the end: the client and the last tokens delivered.
#[derive(Debug, Clone)]
struct Family {
    user: usize,
    client_id: String,
    tokens: Tokens,
}

/// An Argon2id hash of [`PASSWORD`] with the smallest parameters: the test checks the
/// flows, not the password hashing, and the default parameters cost seconds per login in a
/// debug build.
fn cheap_hash() -> String {
    let params = argon2::Params::new(64, 1, 1, None).expect("argon2 params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes())
        .expect("hash")
        .to_string()
}

/// The quickstart's app on `127.0.0.1:0` with `CLIENTS` users, on the memory store or on the
/// SQLite file `sqlite`: the base URL.
async fn start(sqlite: Option<&std::path::Path>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let public = format!("http://{}", listener.local_addr().expect("addr"));
    let hash = cheap_hash();
    let users = (0..CLIENTS).fold(StaticUsers::new(), |u, n| {
        u.with_user(format!("user-{n}"), &hash)
    });
    let mut server = AuthorizationServer::builder()
        .registered_scope_is_ceiling(false)
        .authenticator(users);
    #[cfg(feature = "sqlite")]
    if let Some(path) = sqlite {
        server = server.store(
            mcp_oauth::store::sql::SqliteStore::open(path)
                .await
                .expect("SQLite store"),
        );
    }
    #[cfg(not(feature = "sqlite"))]
    let _ = sqlite;
    let server = server.build().await.expect("authorization server");
    let (app, _config) = quickstart_app::app(&public, server);
    tokio::spawn(async move {
        let _ = mcp_oauth::serve(listener, app).await;
    });
    public
}

/// One whole flow of user `n`: the family it ends with, or what went wrong.
async fn flow(
    n: usize,
    client: &Client,
    browser: &Browser,
    registered: &std::sync::Mutex<Vec<(usize, String)>>,
) -> Result<Family, String> {
    let client_id = client
        .register(&format!("load client {n}"))
        .await
        .map_err(|e| format!("register: {e:?}"))?;
    registered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((n, client_id.clone()));

    let (verifier, challenge) = load::pkce();
    let state = format!("state-{n}-{}", client_id.len());
    let url = client.authorize_url(&client_id, &challenge, &state);
    let seen = browser.log().len();
    let outcome = browser.run(&url, Decision::Approve).await;
    for step in &browser.log()[seen..] {
        client.answers.push(
            &format!("browser {} {}", step.method, step.url),
            step.status,
            &step.body,
        );
    }
    let callback = match outcome {
        Ok(Outcome::Callback(cb)) => cb,
        other => return Err(format!("authorize ended at {other:?}")),
    };
    if load::param(&callback, "state").as_deref() != Some(state.as_str())
        || load::param(&callback, "iss").as_deref() != Some(client.base.as_str())
    {
        return Err(format!("callback without our state and iss: {callback}"));
    }
    let code = load::code_of(&callback).ok_or(format!("callback without code: {callback}"))?;

    let tokens = match client.exchange(&client_id, &code, &verifier).await {
        TokenAnswer::Tokens(t) => t,
        other => return Err(format!("code exchange: {other:?}")),
    };
    let session = client
        .open_session(&tokens.access)
        .await
        .map_err(|e| format!("MCP initialize: {e:?}"))?;
    let text = client
        .read_file(&tokens.access, &session)
        .await
        .map_err(|e| format!("tools/call: {e:?}"))?;
    if !text.contains(&format!("read by user-{n}")) {
        return Err(format!("the tool ran for someone else: {text}"));
    }

    // Two refreshes with the same token at once, as real clients do: both get the same
    // successor.
    let (first, second) = tokio::join!(
        client.refresh(&client_id, &tokens.refresh),
        client.refresh(&client_id, &tokens.refresh)
    );
    let tokens = match (first, second) {
        (TokenAnswer::Tokens(a), TokenAnswer::Tokens(b)) if a.refresh == b.refresh => a,
        other => return Err(format!("two concurrent refreshes: {other:?}")),
    };
    client
        .read_file(&tokens.access, &session)
        .await
        .map_err(|e| format!("tools/call after refresh: {e:?}"))?;
    Ok(Family {
        user: n,
        client_id,
        tokens,
    })
}

/// The family's last refresh token works exactly once, and the family lives on.
async fn check_family(client: &Client, f: &Family) -> Result<(), String> {
    let next = match client.refresh(&f.client_id, &f.tokens.refresh).await {
        TokenAnswer::Tokens(t) => t,
        other => {
            return Err(format!(
                "the last refresh token of {f:?} is lost: {other:?}"
            ));
        }
    };
    // Inside the grace window a second presentation gets the same successor back: one
    // refresh token never yields two live successors.
    match client.refresh(&f.client_id, &f.tokens.refresh).await {
        TokenAnswer::Tokens(t) if t.refresh == next.refresh => {}
        TokenAnswer::Tokens(t) => {
            return Err(format!(
                "a refresh token of user {} yielded two successors ({} and {})",
                f.user, next.refresh, t.refresh
            ));
        }
        other => return Err(format!("the grace retry of {f:?}: {other:?}")),
    }
    let session = client
        .open_session(&next.access)
        .await
        .map_err(|e| format!("MCP initialize after the final refresh: {e:?}"))?;
    client
        .read_file(&next.access, &session)
        .await
        .map_err(|e| format!("tools/call after the final refresh: {e:?}"))?;
    match client.refresh(&f.client_id, &next.refresh).await {
        TokenAnswer::Tokens(_) => Ok(()),
        other => Err(format!(
            "the successor of {f:?} does not refresh: {other:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_run_whole_flows_without_5xx_or_lost_grants() {
    run(None).await;
}

/// The same on the quickstart's default store, a SQLite file.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_run_whole_flows_on_sqlite_without_5xx_or_lost_grants() {
    let dir = std::env::temp_dir().join(format!(
        "mcp-oauth-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    run(Some(&dir.join("load.sqlite3"))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn run(sqlite: Option<&std::path::Path>) {
    let base = start(sqlite).await;
    let resource = format!("{base}/mcp");
    let answers = Answers::default();
    let registered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();

    // One HTTP client per user, built once (building one loads the TLS roots: slow) and
    // cloned (cheap, the same connection pool) for its checks.
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|n| Client::new(n, &base, &resource, answers.clone()))
        .collect();
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().cloned().enumerate() {
        let registered = registered.clone();
        tasks.push(tokio::spawn(async move {
            let browser = Browser::with_client(
                &format!("user-{n}"),
                PASSWORD,
                Browser::client_builder().local_address(load::source_address(n)),
            );
            let mut families = Vec::new();
            let mut failures = Vec::new();
            for _ in 0..FLOWS_PER_CLIENT {
                if started.elapsed() > START_FLOWS_FOR {
                    break;
                }
                match flow(n, &client, &browser, &registered).await {
                    Ok(f) => families.push(f),
                    Err(e) => failures.push(format!("user {n}: {e}")),
                }
            }
            (families, failures)
        }));
    }
    let mut families = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (f, e) = t.await.expect("a client task panicked");
        families.extend(f);
        failures.extend(e);
    }
    let load_time = started.elapsed();
    let flows = families.len();

    // Afterwards: every answered registration is still a known client, every family's last
    // refresh token works exactly once.
    let registered = registered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut checks = Vec::new();
    for (n, client_id) in registered.clone() {
        let client = clients[n].clone();
        checks.push(tokio::spawn(async move {
            client
                .client_is_known(&client_id)
                .await
                .map_err(|e| format!("client {client_id} of user {n} is lost: {e:?}"))
        }));
    }
    for f in families {
        let client = clients[f.user].clone();
        checks.push(tokio::spawn(async move { check_family(&client, &f).await }));
    }
    for c in checks {
        if let Err(e) = c.await.expect("a check panicked") {
            failures.push(e);
        }
    }

    eprintln!(
        "load_flows ({}): {flows} flows by {CLIENTS} clients in {load_time:?}, {} clients registered, \
         {} answers, statuses {:?}",
        if sqlite.is_some() { "SQLite" } else { "memory" },
        registered.len(),
        answers.len(),
        answers.histogram()
    );
    let errors = answers.server_errors();
    assert!(errors.is_empty(), "5xx answers: {errors:#?}");
    assert!(failures.is_empty(), "failed flows or checks: {failures:#?}");
    assert!(
        flows >= CLIENTS,
        "every client completes at least its first flow"
    );
    assert_eq!(
        registered.len(),
        flows,
        "every registration led to a completed flow"
    );
}
