//! Rate limits and token lifetimes from the configuration reach the authorization server, and
//! `revocation_cache` reaches the layer.

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
    let body = common::redeem(&proxy.base, &client_id, &code, &pkce.verifier).await;
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

/// Revokes `token` at the proxy's revocation endpoint as the public client `client_id`.
async fn revoke(base: &str, client_id: &str, token: &str) {
    let res = http()
        .post(format!("{base}/revoke"))
        .form(&[("token", token), ("client_id", client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn tools_list_status(mcp: &str, token: &str) -> u16 {
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    common::mcp_post(mcp, Some(token), list)
        .await
        .status()
        .as_u16()
}

/// By default a revoked access token is refused at once; with `--revocation-cache 3s` the
/// layer trusts its "not revoked" answer for 3 s (so the setting really reaches it) and
/// refuses the token once they are over.
#[tokio::test]
async fn revocation_takes_effect_at_once_or_within_the_revocation_cache() {
    let upstream = common::fake_mcp().await;
    let proxy = Running::upstream(&upstream, &[]).await;
    let g = common::grant(&proxy.base, &proxy.mcp, "revocation default").await;
    assert_eq!(tools_list_status(&proxy.mcp, &g.access).await, 200);
    revoke(&proxy.base, &g.client_id, &g.access).await;
    assert_eq!(tools_list_status(&proxy.mcp, &g.access).await, 401);
    proxy.stop().await;

    let ttl = std::time::Duration::from_secs(3);
    let proxy = Running::upstream(&upstream, &["--revocation-cache", "3s"]).await;
    let g = common::grant(&proxy.base, &proxy.mcp, "revocation cached").await;
    assert_eq!(tools_list_status(&proxy.mcp, &g.access).await, 200);
    revoke(&proxy.base, &g.client_id, &g.access).await;
    assert_eq!(
        tools_list_status(&proxy.mcp, &g.access).await,
        200,
        "inside the revocation cache's 3 s"
    );
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    assert_eq!(tools_list_status(&proxy.mcp, &g.access).await, 401);
    proxy.stop().await;
}
