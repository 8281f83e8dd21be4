//! Login through a host session: a trusted front proxy names the signed-in user in a header.
//! The header is honoured only on connections from `trusted_proxies`; from anywhere else it
//! is ignored and the browser is sent to the host's login URL (the negative test).

mod common;

use common::{Running, TempDir, browser, http};

const LOGIN_URL: &str = "https://sso.example.com/login";

async fn start(dir: &TempDir, trusted: &str) -> Running {
    let upstream = common::fake_mcp().await;
    Running::start(
        dir.path(),
        &[
            "--upstream",
            &upstream,
            "--host-session-header",
            "X-Forwarded-User",
            "--host-session-login-url",
            LOGIN_URL,
            "--trusted-proxy",
            trusted,
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn the_header_from_an_untrusted_address_is_ignored() {
    let dir = TempDir::new("host-untrusted");
    let proxy = start(&dir, "10.0.0.1").await;
    let client_id = common::register(&proxy.base, "host session client").await;
    let pkce = common::pkce();
    let url = common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp);
    let resp = http()
        .get(&url)
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no redirect to the host login: {}", resp.status()));
    assert!(location.starts_with(LOGIN_URL), "{location}");
    assert!(
        browser::query_param(&location, "return_to").is_some(),
        "{location}"
    );
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains("decision"),
        "a consent page for a forged user"
    );
    assert!(
        proxy.logs().contains("untrusted address ignored"),
        "{}",
        proxy.logs()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_header_from_a_trusted_proxy_signs_the_user_in() {
    let dir = TempDir::new("host-trusted");
    let proxy = start(&dir, "127.0.0.1").await;
    let client_id = common::register(&proxy.base, "host session client").await;

    // Without the header: off to the host's login page.
    let pkce = common::pkce();
    let url = common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp);
    let resp = http().get(&url).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(LOGIN_URL), "{location}");

    // With it (as the front proxy would add it): the consent page, then a code and tokens.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-forwarded-user", "alice".parse().unwrap());
    let b = browser::Browser::with_client(
        "unused",
        "unused",
        browser::Browser::client_builder().default_headers(headers),
    );
    let callback = b.authorize(&url, browser::Decision::Approve).await;
    let code = browser::query_param(&callback, "code").expect("a code");
    assert!(
        b.log()
            .iter()
            .any(|s| s.body.contains("Allow access?") && s.method == "GET")
            && b.log()
                .iter()
                .any(|s| s.method == "POST" && s.url.ends_with("/authorize/consent")),
        "no consent page:\n{}",
        b.transcript()
    );
    common::redeem(&proxy.base, &client_id, &code, &pkce.verifier).await;
    assert!(
        proxy.logs().contains("subject=\"alice\""),
        "{}",
        proxy.logs()
    );
    proxy.stop().await;
}
