//! TLS from certificate files: the proxy serves the certificate it was started with, a
//! replacement is picked up by new connections (on the poll, or at once on SIGHUP), and a
//! broken replacement leaves the old certificate serving. Certificates are made with the
//! `openssl` command: two CAs, and leaves for 127.0.0.1 signed by each, so which CA a fresh
//! client must trust tells which certificate is served.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Running, TempDir};

/// `{prefix}-ca.pem`, `{prefix}.pem`, `{prefix}.key` in `dir`: a CA and a leaf for
/// 127.0.0.1 / localhost signed by it.
fn make_certificates(dir: &Path, prefix: &str) {
    let ext = dir.join(format!("{prefix}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let ca_key = format!("{prefix}-ca.key");
    let ca = format!("{prefix}-ca.pem");
    let key = format!("{prefix}.key");
    let csr = format!("{prefix}.csr");
    let leaf = format!("{prefix}.pem");
    let ext = format!("{prefix}.ext");
    let subj = format!("/CN=mcp-oauth-proxy test CA {prefix}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &ca_key,
                "-out",
                &ca,
                "-days",
                "2",
                "-subj",
                &subj,
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
            &["-keyout", &key, "-out", &csr, "-subj", "/CN=leaf"],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &leaf,
            "-days",
            "2",
            "-extfile",
            &ext,
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

/// A client trusting only `ca` that opens a new connection for every request.
fn client(dir: &Path, ca: &str) -> reqwest::Client {
    let pem = std::fs::read(dir.join(ca)).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Whether a new connection trusting `ca` gets the metadata.
async fn works(dir: &Path, ca: &str, base: &str) -> bool {
    client(dir, ca)
        .get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Replaces `cert.pem`/`cert.key` with `{prefix}.pem`/`{prefix}.key` (write, then rename).
fn install(dir: &Path, prefix: &str) {
    for (from, to) in [
        (format!("{prefix}.key"), "cert.key"),
        (format!("{prefix}.pem"), "cert.pem"),
    ] {
        let tmp = dir.join(format!("{to}.tmp"));
        std::fs::copy(dir.join(&from), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(to)).unwrap();
    }
}

/// Waits (bounded) until `cond` holds.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..120 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn start(dir: &TempDir, interval: &str) -> Running {
    let upstream = common::fake_mcp().await;
    let d = dir.path();
    Running::start(
        d,
        &[
            "--upstream",
            &upstream,
            "--tls-cert",
            d.join("cert.pem").to_str().unwrap(),
            "--tls-key",
            d.join("cert.key").to_str().unwrap(),
            "--tls-reload-interval",
            interval,
        ],
        &[("MCP_OAUTH_DEMO_PASSWORD", common::PASSWORD)],
    )
    .await
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
    let dir = TempDir::new("tls");
    let d = dir.path();
    make_certificates(d, "one");
    make_certificates(d, "two");
    install(d, "one");
    let proxy = start(&dir, "1s").await;
    assert!(
        proxy.base.starts_with("https://127.0.0.1:"),
        "{}",
        proxy.base
    );

    assert!(
        works(d, "one-ca.pem", &proxy.base).await,
        "{}",
        proxy.logs()
    );
    assert!(!works(d, "two-ca.pem", &proxy.base).await, "the control");

    // The authorization server sees each client's address over TLS too (no shared bucket).
    let resp = client(d, "one-ca.pem")
        .post(format!("{}/register", proxy.base))
        .json(&serde_json::json!({
            "client_name": "tls", "redirect_uris": [common::REDIRECT_URI],
            "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        !proxy.logs().contains("without the client's address"),
        "{}",
        proxy.logs()
    );

    // Replaced: new connections get the new certificate.
    install(d, "two");
    eventually("the new certificate is served", || {
        works(d, "two-ca.pem", &proxy.base)
    })
    .await;
    assert!(
        !works(d, "one-ca.pem", &proxy.base).await,
        "the old certificate is still served"
    );

    // A broken replacement (a certificate with another certificate's key) is refused, logged,
    // and the current one keeps serving.
    std::fs::copy(d.join("one.key"), d.join("cert.key.tmp")).unwrap();
    std::fs::rename(d.join("cert.key.tmp"), d.join("cert.key")).unwrap();
    eventually("the broken replacement is logged", || {
        let logs = proxy.logs();
        async move { logs.contains("still serving the previous one") }
    })
    .await;
    assert!(
        works(d, "two-ca.pem", &proxy.base).await,
        "{}",
        proxy.logs()
    );
    // Garbage too.
    std::fs::write(d.join("cert.pem.tmp"), "not a certificate").unwrap();
    std::fs::rename(d.join("cert.pem.tmp"), d.join("cert.pem")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        works(d, "two-ca.pem", &proxy.base).await,
        "{}",
        proxy.logs()
    );
    // And a good pair again is picked up.
    install(d, "one");
    eventually("the repaired certificate is served", || {
        works(d, "one-ca.pem", &proxy.base)
    })
    .await;
    proxy.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_at_once() {
    let dir = TempDir::new("tls-hup");
    let d = dir.path();
    make_certificates(d, "one");
    make_certificates(d, "two");
    install(d, "one");
    // An interval far beyond the test: only the signal can reload.
    let proxy = start(&dir, "1h").await;
    assert!(works(d, "one-ca.pem", &proxy.base).await);
    install(d, "two");
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reloads the certificate", || {
        works(d, "two-ca.pem", &proxy.base)
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused_at_start() {
    let dir = TempDir::new("tls-mismatch");
    let d = dir.path();
    make_certificates(d, "one");
    make_certificates(d, "two");
    let (code, _, err) = common::run(
        d,
        &[
            "--check",
            "--upstream",
            "http://127.0.0.1:9/mcp",
            "--password",
            "pw",
            "--tls-cert",
            "one.pem",
            "--tls-key",
            "two.key",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("TLS"), "{err}");
}
