//! TLS from certificate files, reloaded while serving.
//!
//! [`CertFiles`] loads a PEM certificate chain and its private key into a rustls
//! [`CertifiedKey`] (aws-lc-rs provider) and hands it to every new handshake. A background
//! task ([`CertFiles::watch`]) checks the files' modification times every few seconds and
//! reloads on SIGHUP: new connections get the new certificate, open ones keep theirs. A
//! replacement that cannot be loaded (unparsable, a key that does not match the certificate,
//! a half-written file) is logged as an error and the previous certificate kept serving.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: a task accepts TCP connections (with
//! `TCP_NODELAY`, as [`mcp_oauth::serve`] sets it) and runs each handshake in a task of its
//! own, bounded in time, so a slow or silent client never holds up the others; finished
//! handshakes are handed to axum with the peer's address, which becomes each request's
//! `ConnectInfo<SocketAddr>` (the authorization server's per-client rate limits need it).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum.
const BACKLOG: usize = 64;

/// A certificate chain and key loaded from files, swapped in place when they change.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

impl CertFiles {
    /// Loads `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// Unreadable files, no certificate, no key, or a key that does not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = stamps(cert, key);
        let certified = load_pair(cert, key, &provider)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Loaded {
                key: certified,
                stamp,
            }),
        }))
    }

    /// The rustls server configuration serving the current certificate (HTTP/1.1).
    ///
    /// # Errors
    /// The provider refuses the default protocol versions (it does not).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads the files if their modification times changed (or `force`). Returns whether
    /// a new certificate is now served; a broken replacement is logged and the old one kept.
    pub fn reload(&self, force: bool) -> bool {
        let stamp = stamps(&self.cert, &self.key);
        let old = self.current.read().map(|c| c.stamp).unwrap_or_default();
        if !force && stamp == old {
            return false;
        }
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(key) => {
                if let Ok(mut cur) = self.current.write() {
                    *cur = Loaded { key, stamp };
                }
                tracing::info!(target: "mcp_oauth_proxy::tls", cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                // Remember the stamp so that the error is logged once per change, not every tick.
                if let Ok(mut cur) = self.current.write() {
                    cur.stamp = stamp;
                }
                tracing::error!(target: "mcp_oauth_proxy::tls", cert = %self.cert.display(), %error,
                    "the new TLS certificate cannot be used; still serving the previous one");
                false
            }
        }
    }

    /// Checks the files every `interval` and on SIGHUP, until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let forced = match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = tick.tick() => false,
                        _ = h.recv() => true,
                    },
                    None => {
                        tick.tick().await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tick.tick().await;
                    false
                };
                let me2 = me.clone();
                let _ = tokio::task::spawn_blocking(move || me2.reload(forced)).await;
            }
        })
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}

/// A TLS listener for [`axum::serve()`]: handshakes run concurrently in their own tasks.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener`, handshaking with `config`.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::error!(target: "mcp_oauth_proxy::tls", %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(target: "mcp_oauth_proxy::tls", %error, "cannot set TCP_NODELAY");
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(target: "mcp_oauth_proxy::tls", %peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(target: "mcp_oauth_proxy::tls", %peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self {
            local,
            ready,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone (it never ends on its own): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
