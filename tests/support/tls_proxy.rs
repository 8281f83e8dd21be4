//! A TLS-terminating proxy on 127.0.0.1: what a reverse proxy or a tunnel is in front of a
//! server deployed behind a public URL. It serves a certificate for a public-looking name
//! (made for the test with the `openssl` command: a CA, and a leaf for the name signed by
//! it), and pipes the decrypted bytes to the server's loopback port untouched, so the
//! server sees the client's `Host: name:port` on a loopback socket.
//!
//! Clients reach it under the name through a resolver override (reqwest's `resolve`, the
//! node scripts' `MCP_OAUTH_TEST_RESOLVE`) and trust [`TlsProxy::ca`] (reqwest's
//! `add_root_certificate`, node's `NODE_EXTRA_CA_CERTS`).
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The proxy: bound at once (so its URL is known before the server starts), forwarding once
/// told where to.
pub struct TlsProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The name its certificate is for.
    pub name: String,
    dir: PathBuf,
    listener: Option<TcpListener>,
    acceptor: TlsAcceptor,
    task: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// Binds 127.0.0.1:0 and makes a CA and a certificate for `name`.
    pub async fn bind(name: &str) -> Self {
        // Unique per proxy: tests in one process may bind several for the same name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-oauth-tls-{}-{}-{}",
            std::process::id(),
            name.replace('.', "-"),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir, name);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("leaf.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self {
            port: listener.local_addr().unwrap().port(),
            name: name.to_owned(),
            dir,
            listener: Some(listener),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            task: None,
        }
    }

    /// `https://name:port`: the public URL clients use.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.name, self.port)
    }

    /// The CA certificate (PEM file) clients must trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client that reaches the name at the proxy and trusts its CA.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let ca = std::fs::read(self.ca()).unwrap();
        builder
            .resolve(&self.name, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
    }

    /// Starts forwarding every connection to `backend`.
    pub fn forward_to(&mut self, backend: SocketAddr) {
        let listener = self.listener.take().expect("forwarding already");
        let acceptor = self.acceptor.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        }));
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ca.pem` (a CA) and `leaf.pem` / `leaf.key` (for `name`, signed by the CA) in `dir`.
fn make_certificates(dir: &Path, name: &str) {
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{name}\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &[
                "-subj",
                "/CN=mcp-oauth test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("the `openssl` command is needed to make the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
