//! A durable store survives the process: the authorization server runs as a separate process
//! (the `store_node` example binary), clients register and get refresh
//! tokens, then while refreshes and registrations are in flight the process is killed with
//! `SIGKILL`, restarted on the same store with the same signing key, and every registered
//! client, every refresh token (including those whose refresh was cut off by the kill: the
//! grace window hands them the successor the dead process had stored) and every access token
//! minted before still works. Once on a SQLite file, once on PostgreSQL (a schema of its own;
//! skipped without a server, failed under `CI`).

#![cfg(feature = "server")]

#[path = "support/stores.rs"]
mod stores;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stores::flow::{Http, ISSUER, Tokens};
use stores::{Node, PgSchema, signing_key_pem, unique};
use tokio::sync::Mutex;

/// One client's grant as the client knows it.
#[derive(Debug, Clone)]
struct Grant {
    client: String,
    tokens: Tokens,
}

/// What the client side knew at the moment of the kill.
#[derive(Debug, Default)]
struct Known {
    grants: Vec<Arc<Mutex<Grant>>>,
    clients: Vec<String>,
}

const STABLE_CLIENTS: usize = 4;
const GRANTS_PER_CLIENT: usize = 2;
const LOAD_WORKERS: usize = 4;

async fn scenario(backend: &str, env: HashMap<&'static str, String>) {
    let http = Http::new();
    let node = Node::spawn(&env).await;

    let mut known = Known::default();
    for _ in 0..STABLE_CLIENTS {
        let client = http.register(&node.base).await.expect("register");
        for _ in 0..GRANTS_PER_CLIENT {
            let code = http
                .authorize(&node.base, &client)
                .await
                .expect("authorize");
            let tokens = http
                .exchange(&node.base, &client, &code)
                .await
                .expect("exchange");
            assert_eq!(http.mcp(&node.base, &tokens.access).await, 200);
            known.grants.push(Arc::new(Mutex::new(Grant {
                client: client.clone(),
                tokens,
            })));
        }
        known.clients.push(client);
    }
    let access_before: Vec<String> = {
        let mut v = Vec::new();
        for g in &known.grants {
            v.push(g.lock().await.tokens.access.clone());
        }
        v
    };

    // The load: each worker refreshes its own grant over and over and registers a client
    // now and then, until the node dies under it.
    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    let mut load_grants = Vec::new();
    for _ in 0..LOAD_WORKERS {
        let (client, tokens) = http.new_grant(&node.base).await.expect("load grant");
        let grant = Arc::new(Mutex::new(Grant { client, tokens }));
        load_grants.push(grant.clone());
        let (http, base, registered, stop) = (
            http.clone(),
            node.base.clone(),
            registered.clone(),
            stop.clone(),
        );
        workers.spawn(async move {
            let mut refreshes = 0u32;
            for i in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (client, refresh) = {
                    let g = grant.lock().await;
                    (g.client.clone(), g.tokens.refresh.clone())
                };
                match http.refresh(&base, &client, &refresh).await {
                    Ok(t) => {
                        grant.lock().await.tokens = t;
                        refreshes += 1;
                    }
                    Err((0, _)) => break, // the node is gone
                    Err(e) => panic!("refresh under load failed: {e:?}"),
                }
                if i % 5 == 0 {
                    match http.register(&base).await {
                        Ok(id) => registered.lock().await.push(id),
                        Err((0, _)) => break,
                        Err(e) => panic!("registration under load failed: {e:?}"),
                    }
                }
            }
            refreshes
        });
    }
    known.grants.extend(load_grants);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let mut refreshes = 0;
    while let Some(r) = workers.join_next().await {
        refreshes += r.expect("load worker");
    }
    let registered = registered.lock().await.clone();
    eprintln!(
        "{backend}: killed with SIGKILL after {refreshes} refreshes and {} registrations under load",
        registered.len()
    );
    assert!(refreshes > 0, "the load never ran");

    // Same store, same key, new process.
    let restarted_at = Instant::now();
    let node = Node::spawn(&env).await;
    eprintln!("{backend}: restarted in {:?}", restarted_at.elapsed());

    for access in &access_before {
        assert_eq!(
            http.mcp(&node.base, access).await,
            200,
            "{backend}: an access token minted before the kill must still be accepted"
        );
    }
    for client in known.clients.iter().chain(&registered) {
        let code = http
            .authorize(&node.base, client)
            .await
            .unwrap_or_else(|e| panic!("{backend}: client {client} lost by the restart: {e:?}"));
        http.exchange(&node.base, client, &code)
            .await
            .unwrap_or_else(|e| panic!("{backend}: client {client} cannot exchange: {e:?}"));
    }
    for (i, grant) in known.grants.iter().enumerate() {
        let g = grant.lock().await.clone();
        let next = http
            .refresh(&node.base, &g.client, &g.tokens.refresh)
            .await
            .unwrap_or_else(|e| {
                panic!("{backend}: refresh token #{i} does not work after the restart: {e:?}")
            });
        assert_eq!(http.mcp(&node.base, &next.access).await, 200);
        // And the rotation goes on from there.
        http.refresh(&node.base, &g.client, &next.refresh)
            .await
            .unwrap_or_else(|e| panic!("{backend}: refresh #{i} after restart, again: {e:?}"));
    }
    eprintln!(
        "{backend}: after the restart {} clients and {} refresh tokens all work",
        known.clients.len() + registered.len(),
        known.grants.len()
    );
    node.kill9().await;
}

fn base_env(store: String) -> HashMap<&'static str, String> {
    HashMap::from([
        ("MCP_OAUTH_STORE", store),
        ("MCP_OAUTH_PUBLIC_URL", ISSUER.to_owned()),
        ("MCP_OAUTH_SIGNING_KEY_PEM", signing_key_pem()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_kill_9() {
    let dir = std::env::temp_dir().join(unique("mcp_oauth_restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("oauth.db");
    let outcome = tokio::spawn(scenario(
        "sqlite",
        base_env(format!("sqlite:{}", db.display())),
    ))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_kill_9() {
    let Some(schema) = PgSchema::create("store_restart").await else {
        return;
    };
    let mut env = base_env(format!("postgres:{}", schema.url));
    env.insert("MCP_OAUTH_STORE_NAMESPACE", schema.name.clone());
    let outcome = tokio::spawn(scenario("postgres", env)).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
