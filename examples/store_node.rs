//! # `store_node`: the embedded authorization server on a durable, shared store
//!
//! Shows how instances share state: the OAuth endpoints and a protected
//! `POST /mcp` answering who called, on the store you choose. Start it twice on one PostgreSQL
//! or Redis with the same public URL and the two are interchangeable: one key ring kept in the
//! store, a client registered on one authorizes on the other, a revocation on one is refused by
//! both. Start it on a SQLite file, kill it, start it again: nothing is lost.
//!
//! ```text
//! MCP_OAUTH_STORE=sqlite:oauth.db cargo run --example store_node --features sqlite
//! MCP_OAUTH_STORE=postgres:postgres://postgres@127.0.0.1/test cargo run --example store_node --features postgres
//! MCP_OAUTH_STORE=redis:redis://127.0.0.1:6379 cargo run --example store_node --features redis
//! ```
//!
//! It prints `listening on http://ADDR` once it serves. Settings (`--help`): `MCP_OAUTH_STORE`,
//! `MCP_OAUTH_STORE_NAMESPACE`, `MCP_OAUTH_ADDR` (default `127.0.0.1:8000`),
//! `MCP_OAUTH_PUBLIC_URL` (the issuer, the same on every instance), `MCP_OAUTH_DEMO_USER`,
//! `MCP_OAUTH_DEMO_PASSWORD`, `MCP_OAUTH_SIGNING_KEY_PEM`, `MCP_OAUTH_KEY_REFRESH_SECS`,
//! `MCP_OAUTH_TOKEN_CACHE_ENTRIES`, `MCP_OAUTH_RATE_LIMITS` and, for automated tests only, `MCP_OAUTH_INSECURE_AUTO_APPROVE` and
//! `MCP_OAUTH_INSECURE_ADMIN_ROUTES`.

use std::time::Duration;

use axum::routing::post;
use clap::Parser;
use clap::builder::BoolishValueParser;
use mcp_oauth::authn::{InsecureAutoApprove, StaticUsers};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm, SigningKey};
use mcp_oauth::server::{AuthorizationServer, AuthorizationServerBuilder, RateLimit};
use mcp_oauth::store::{KeyStore, MemoryStore};
use mcp_oauth::{Auth, McpOAuthConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A node's settings: each flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(about = "The embedded authorization server on a durable, shared store")]
struct Args {
    /// `memory`, `sqlite:PATH`, `postgres:URL` or `redis:URL`.
    #[arg(long, env = "MCP_OAUTH_STORE", default_value = "memory")]
    store: String,
    /// PostgreSQL: a schema of its own (created when missing); Redis: the key prefix.
    #[arg(long, env = "MCP_OAUTH_STORE_NAMESPACE")]
    store_namespace: Option<String>,
    /// Socket address to bind (port 0 picks a free port).
    #[arg(long, env = "MCP_OAUTH_ADDR", default_value = "127.0.0.1:8000")]
    addr: String,
    /// The issuer, the same on every instance (default: http://<bound address>).
    #[arg(long, env = "MCP_OAUTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// The demo user's name.
    #[arg(long, env = "MCP_OAUTH_DEMO_USER", default_value = "demo")]
    demo_user: String,
    /// The demo user's password (default: random, printed).
    #[arg(long, env = "MCP_OAUTH_DEMO_PASSWORD", hide_env_values = true)]
    demo_password: Option<String>,
    /// An ES256 signing key (PKCS#8 PEM) instead of the store's key ring.
    #[arg(long, env = "MCP_OAUTH_SIGNING_KEY_PEM", hide_env_values = true)]
    signing_key_pem: Option<String>,
    /// How often the key ring reloads from the store, in seconds.
    #[arg(long, env = "MCP_OAUTH_KEY_REFRESH_SECS")]
    key_refresh_secs: Option<u64>,
    /// Entries of the layer's verified-token cache (default 10,000; a soak test makes it
    /// small to reach its steady state sooner).
    #[arg(long, env = "MCP_OAUTH_TOKEN_CACHE_ENTRIES")]
    token_cache_entries: Option<usize>,
    /// `off` lifts the per-address rate limits (load tests from one address).
    #[arg(long, env = "MCP_OAUTH_RATE_LIMITS", default_value = "on", value_parser = BoolishValueParser::new())]
    rate_limits: bool,
    /// INSECURE: approve every request as the demo user without login (automated tests).
    #[arg(long, env = "MCP_OAUTH_INSECURE_AUTO_APPROVE", default_value = "0", value_parser = BoolishValueParser::new())]
    insecure_auto_approve: bool,
    /// INSECURE: serve `POST /admin/rotate-signing-key` unauthenticated (automated tests).
    #[arg(long, env = "MCP_OAUTH_INSECURE_ADMIN_ROUTES", default_value = "0", value_parser = BoolishValueParser::new())]
    insecure_admin_routes: bool,
}

/// Puts the configured store, and its key ring (or the PEM key), into the builder.
async fn with_store(
    builder: AuthorizationServerBuilder,
    args: &Args,
) -> Result<AuthorizationServerBuilder, BoxError> {
    async fn keys(store: impl KeyStore, args: &Args) -> Result<KeyRing, BoxError> {
        if let Some(pem) = &args.signing_key_pem {
            return Ok(KeyRing::new(SigningKey::from_pkcs8_pem(
                SigningAlgorithm::Es256,
                pem,
            )?));
        }
        let ring = KeyRing::from_store(store);
        let ring = match args.key_refresh_secs {
            Some(secs) => ring.refresh_interval(Duration::from_secs(secs)),
            None => ring,
        };
        Ok(ring.open().await?)
    }
    let (kind, target) = args.store.split_once(':').unwrap_or((&args.store, ""));
    let _ = target; // unused when no durable store is compiled in
    match kind {
        "memory" => Ok(builder
            .store(MemoryStore::new())
            .key_ring(keys(MemoryStore::new(), args).await?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let store = mcp_oauth::store::sql::SqliteStore::open(target).await?;
            Ok(builder
                .key_ring(keys(store.clone(), args).await?)
                .store(store))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let store = postgres_store(target, args.store_namespace.as_deref()).await?;
            Ok(builder
                .key_ring(keys(store.clone(), args).await?)
                .store(store))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let mut store = mcp_oauth::store::redis::RedisStore::connect(target).await?;
            if let Some(prefix) = &args.store_namespace {
                store = store.with_prefix(prefix.clone());
            }
            Ok(builder
                .key_ring(keys(store.clone(), args).await?)
                .store(store))
        }
        other => Err(format!("MCP_OAUTH_STORE: {other:?} is unknown or its feature is off").into()),
    }
}

/// A PostgreSQL store, in its own `schema` (created when missing) when one is given.
#[cfg(feature = "postgres")]
async fn postgres_store(
    url: &str,
    schema: Option<&str>,
) -> Result<mcp_oauth::store::sql::PostgresStore, BoxError> {
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
    let options: PgConnectOptions = url.parse()?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    let options = options.options([("search_path", schema)]);
    Ok(PostgresStore::from_pool(
        PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await?,
    )
    .await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let bound = listener.local_addr()?;
    let issuer = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));

    let mut builder = AuthorizationServer::builder();
    builder = if args.insecure_auto_approve {
        builder.authenticator(
            InsecureAutoApprove::new(&args.demo_user).i_understand_this_approves_everyone(),
        )
    } else {
        let password = args
            .demo_password
            .clone()
            .unwrap_or_else(|| format!("{:016x}", random_u64()));
        println!(
            "sign in as user {:?}, password {password:?}",
            args.demo_user
        );
        builder.authenticator(StaticUsers::new().with_password(&args.demo_user, &password))
    };
    if !args.rate_limits {
        let off = RateLimit::unlimited;
        builder = builder
            .register_rate_limit(off())
            .token_rate_limit(off())
            .login_rate_limit(off())
            .authorize_rate_limit(off());
    }
    let server = with_store(builder, &args).await?.build().await?;
    let mut config = McpOAuthConfig::builder()
        .resource(format!("{issuer}/mcp"))
        .issuer(&issuer)
        .scope("read", "Read your data")
        .authorization_server(&server);
    if let Some(entries) = args.token_cache_entries {
        config = config.token_cache(entries, Duration::from_secs(60));
    }
    let config = config.build()?;
    let whoami = |auth: Auth| async move {
        axum::Json(
            serde_json::json!({"sub": auth.subject(), "client_id": auth.client_id(), "scope": auth.scopes().to_string()}),
        )
    };
    // `/mcp` (here a plain axum handler) behind the layer, the OAuth endpoints beside it.
    let mut app = server.mount(&config, post(whoami))?;
    // The retention sweep (expired grants, idle clients) runs while this handle lives.
    let _upkeep = server.start_upkeep();
    if args.insecure_admin_routes {
        eprintln!(
            "INSECURE: serving unauthenticated admin routes (MCP_OAUTH_INSECURE_ADMIN_ROUTES)"
        );
        // Rotates the ring in the store, for every instance: `{"kid", "rotated"}`.
        let rotate = move || {
            let server = server.clone();
            async move {
                let outcome = server.rotate_signing_key().await.map_err(|e| {
                    eprintln!("key rotation failed: {e}");
                    http::StatusCode::SERVICE_UNAVAILABLE
                })?;
                let rotated = matches!(outcome, mcp_oauth::keys::RotationOutcome::Rotated { .. });
                Ok::<_, http::StatusCode>(axum::Json(
                    serde_json::json!({"kid": outcome.kid(), "rotated": rotated}),
                ))
            }
        };
        app = app.route("/admin/rotate-signing-key", post(rotate));
    }

    println!("listening on http://{bound}");
    // TCP_NODELAY on every connection, and each client's address for the rate limits.
    mcp_oauth::serve(listener, app).await?;
    Ok(())
}

/// A little randomness for the demo password, without another dependency.
fn random_u64() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}
