//! `--check`: builds everything the configuration describes (the store is opened, the login
//! built, the certificate loaded), serves nothing, and reports what clients will see: the
//! exact URLs and the discovery documents, fetched in-process from the built router (so what
//! is printed is what would be served).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::app::{Backend, Built, default_public_url};
use crate::settings::{Config, Login};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds everything from `config` and returns the report `--check` prints.
///
/// # Errors
/// Whatever would stop the proxy from starting, or a discovery document that is not served.
pub async fn report(config: &Config) -> Result<String, BoxError> {
    let public_url = match &config.public_url {
        Some(u) => u.clone(),
        None => match config.addr.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => default_public_url(config, addr),
            Ok(_) => return Err(
                "addr has port 0 (a free port chosen at start) and no public_url is set: the URLs are not known before serving".into(),
            ),
            Err(_) => {
                let scheme = if config.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", config.addr)
            }
        },
    };
    let built = Built::assemble(config, &public_url).await?;
    let resource = built.oauth.resource().to_owned();
    let issuer = built.oauth.issuer().trim_end_matches('/').to_owned();
    let prm_url = built.oauth.resource_metadata_url().to_owned();
    let origin = url::Url::parse(&issuer)?.origin().ascii_serialization();
    let issuer_path = url::Url::parse(&issuer)?
        .path()
        .trim_end_matches('/')
        .to_owned();
    let as_url = format!("{origin}/.well-known/oauth-authorization-server{issuer_path}");
    let prm_root = format!(
        "{}/.well-known/oauth-protected-resource",
        url::Url::parse(&resource)?.origin().ascii_serialization()
    );

    let prm = fetch_json(&built, &prm_url).await?;
    let asm = fetch_json(&built, &as_url).await?;
    // The root form is served too (clients that ignore the path still find it).
    fetch_json(&built, &prm_root).await?;

    let field = |doc: &serde_json::Value, k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("(not advertised)")
            .to_owned()
    };
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        out.push_str(&format!("{k:<38} {v}\n"));
    };
    line("configuration", "OK");
    line(
        "listen",
        &format!(
            "{} ({})",
            config.addr,
            if config.tls.is_some() {
                "TLS"
            } else {
                "plain HTTP"
            }
        ),
    );
    line("MCP server URL", &resource);
    line("protected resource metadata", &prm_url);
    line("protected resource metadata (root)", &prm_root);
    line("authorization server metadata", &as_url);
    line(
        "OpenID configuration",
        &format!("{origin}/.well-known/openid-configuration{issuer_path}"),
    );
    line("issuer", &issuer);
    line(
        "authorization endpoint",
        &field(&asm, "authorization_endpoint"),
    );
    line("token endpoint", &field(&asm, "token_endpoint"));
    line(
        "registration endpoint",
        &field(&asm, "registration_endpoint"),
    );
    line("revocation endpoint", &field(&asm, "revocation_endpoint"));
    line("JWKS", &field(&asm, "jwks_uri"));
    match &config.login {
        Login::Users(users) => {
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            line("login", &format!("local users: {}", names.join(", ")));
        }
        Login::HostSession { header, login_url } => {
            line(
                "login",
                &format!("host session: header {header} from trusted proxies"),
            );
            line("host login URL", login_url);
        }
        Login::Upstream(up) => {
            line("login", &format!("upstream provider {}", up.provider));
            line(
                "upstream redirect URI (register it)",
                &format!("{issuer}/upstream/callback"),
            );
            line("upstream login start", &format!("{issuer}/upstream/start"));
        }
    }
    line("store", &describe_store(&config.store));
    line(
        "revocation checks",
        &if config.revocation_cache.is_zero() {
            "every request (a revocation takes effect at once)".to_owned()
        } else {
            format!(
                "cached {:?} (a revoked token keeps working up to that long)",
                config.revocation_cache
            )
        },
    );
    match &built.backend {
        Backend::Http(up) => line("backend", &format!("HTTP upstream {}", up.shown_url())),
        Backend::Stdio(b) => line("backend", &format!("stdio command {:?}", b.command())),
    }
    out.push_str("\n# protected resource metadata (");
    out.push_str(&prm_url);
    out.push_str(")\n");
    out.push_str(&serde_json::to_string_pretty(&prm)?);
    out.push_str("\n\n# authorization server metadata (");
    out.push_str(&as_url);
    out.push_str(")\n");
    out.push_str(&serde_json::to_string_pretty(&asm)?);
    out.push('\n');
    Ok(out)
}

/// The store, with any password in a URL hidden.
fn describe_store(store: &str) -> String {
    match url::Url::parse(store) {
        Ok(mut u) if matches!(u.scheme(), "postgres" | "postgresql" | "redis" | "rediss") => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        _ => format!(
            "SQLite file {}",
            store.strip_prefix("sqlite://").unwrap_or(store)
        ),
    }
}

/// GETs `url` from the built router in-process, as a client at 127.0.0.1 would.
async fn fetch_json(built: &Built, url: &str) -> Result<serde_json::Value, BoxError> {
    let parsed = url::Url::parse(url)?;
    let host = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_owned(),
    };
    let mut req = Request::get(parsed.path())
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Body::empty())?;
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 0))));
    let resp = built.app.clone().oneshot(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "{url} is not served: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(serde_json::from_slice(&body)?)
}
