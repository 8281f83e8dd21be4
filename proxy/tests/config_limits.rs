//! Rate limits and token lifetimes from the configuration reach the authorization server.

mod common;

use common::{Running, TempDir, http};

async fn register_status(base: &str, name: &str) -> u16 {
    http()
        .post(format!("{base}/register"))
        .json(&serde_json::json!({
            "client_name": name,
            "redirect_uris": [common::REDIRECT_URI],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_configured_rate_limit_and_lifetime_apply() {
    let dir = TempDir::new("limits");
    let upstream = common::fake_mcp().await;
    let cfg = dir.path().join("l.toml");
    std::fs::write(
        &cfg,
        format!(
            "upstream = \"{upstream}\"\nuser = \"{}\"\npassword = \"{}\"\naccess_token_ttl = \"2m\"\n[rate_limits]\nregister = \"1/min burst 2\"\n",
            common::USER,
            common::PASSWORD
        ),
    )
    .unwrap();
    let proxy = Running::start(dir.path(), &["--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(register_status(&proxy.base, "one").await, 201);
    assert_eq!(register_status(&proxy.base, "two").await, 201);
    // The burst of 2 is spent: the third new client is refused.
    assert_eq!(register_status(&proxy.base, "three").await, 429);

    let client_id = common::register(&proxy.base, "one").await; // identical: the same client
    let pkce = common::pkce();
    let b = common::browser::Browser::new(common::USER, common::PASSWORD);
    let cb = b
        .authorize(
            &common::authorize_url(&proxy.base, &client_id, &pkce, "mcp", &proxy.mcp),
            common::browser::Decision::Approve,
        )
        .await;
    let code = common::browser::query_param(&cb, "code").unwrap();
    let body: serde_json::Value = common::exchange_code(
        &format!("{}/token", proxy.base),
        &client_id,
        &code,
        &pkce.verifier,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["expires_in"], 120, "{body}");
    proxy.stop().await;

    // `off` lifts the limit.
    let proxy = Running::start(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--rate-limit",
            "register=off",
        ],
        &[],
    )
    .await;
    for i in 0..5 {
        assert_eq!(register_status(&proxy.base, &format!("c{i}")).await, 201);
    }
    proxy.stop().await;
}
