//! Login at an upstream identity provider, configured entirely from flags: a real
//! `oidc-provider` on 127.0.0.1 (the interop toolchain's `tests/interop/oidc_provider.mjs`),
//! whose development login page the test browser fills in. `--check` prints the redirect URI
//! to register at the provider; the browser goes from the proxy's `/authorize` to the
//! provider, back to `/upstream/callback`, to the proxy's consent page, and the MCP client gets
//! the proxy's tokens. A user outside the allow-list gets no code.
//!
//! Skipped with a loud message when the interop toolchain cannot be had (a failure under CI).

#![allow(dead_code)]

mod common;
#[path = "../../tests/support/oidc.rs"]
mod oidc;
#[path = "../../tests/support/mod.rs"]
mod support;

use common::{Running, TempDir, browser};

#[tokio::test]
async fn upstream_login_from_flags_reaches_consent_and_tokens() {
    let Some(interop) = support::interop("proxy_upstream_oidc") else {
        return;
    };
    let dir = TempDir::new("upstream-oidc");
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let callback = format!("{public}/upstream/callback");
    let idp = oidc::OidcProvider::start_upstream(&interop, &callback).await;
    let upstream = common::fake_mcp().await;
    let addr = format!("127.0.0.1:{port}");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--addr",
            &addr,
            "--upstream",
            &upstream,
            "--upstream-issuer",
            &idp.issuer,
            "--upstream-client-id",
            oidc::UPSTREAM_CLIENT_ID,
            "--upstream-scopes",
            "openid,email,profile",
            "--upstream-allow-loopback",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let secret = [(
        "MCP_OAUTH_UPSTREAM_CLIENT_SECRET",
        oidc::UPSTREAM_CLIENT_SECRET,
    )];

    // --check names the redirect URI to register.
    let check = args(&["--check"]);
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    let (code, out, err) = common::run(dir.path(), &check, &secret).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("upstream redirect URI") && l.ends_with(&callback)),
        "{out}"
    );

    // The whole login.
    let serve = args(&[]);
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let proxy = Running::start(dir.path(), &serve, &secret).await;
    assert_eq!(proxy.base, public);
    let client_id = common::register(&proxy.base, "upstream row client").await;
    let pkce = common::pkce();
    let b = browser::Browser::new("alice", "any-password");
    b.follow_origin(&idp.issuer);
    let back = b
        .authorize(
            &common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp),
            browser::Decision::Approve,
        )
        .await;
    let transcript = b.transcript();
    assert!(
        b.log().iter().any(|s| s.url.starts_with(&callback)),
        "{transcript}"
    );
    assert!(
        b.log()
            .iter()
            .any(|s| s.url.ends_with("/authorize/consent")),
        "{transcript}"
    );
    let code = browser::query_param(&back, "code").unwrap_or_else(|| panic!("{back}"));
    common::redeem(&proxy.base, &client_id, &code, &pkce.verifier).await;
    let logs = proxy.logs();
    assert!(
        logs.contains(&format!("subject=\"{}|alice\"", idp.issuer)),
        "{logs}"
    );
    assert!(
        !logs.contains(oidc::UPSTREAM_CLIENT_SECRET),
        "the secret is logged"
    );
    proxy.stop().await;

    // An allow-list the user is outside of: no code.
    let deny = args(&["--upstream-allowed-domains", "other.example"]);
    let deny: Vec<&str> = deny.iter().map(String::as_str).collect();
    let proxy = Running::start(dir.path(), &deny, &secret).await;
    let pkce = common::pkce();
    let b = browser::Browser::new("alice", "any-password");
    b.follow_origin(&idp.issuer);
    let outcome = b
        .run(
            &common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp),
            browser::Decision::Approve,
        )
        .await;
    assert!(
        !matches!(&outcome, Ok(browser::Outcome::Callback(u)) if u.contains("code=")),
        "a user outside the allow-list got a code: {outcome:?}"
    );
    proxy.stop().await;
}
