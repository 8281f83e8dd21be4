//! `allow_hosts` and `allow_origins`: the MCP endpoint refuses a `Host` or a browser
//! `Origin` it does not know (DNS rebinding), and accepts the ones the configuration adds.

mod common;

use common::{Running, TempDir, http};

async fn status(mcp: &str, header: (&str, &str)) -> u16 {
    http()
        .post(mcp)
        .header("accept", "application/json, text/event-stream")
        .header(header.0, header.1)
        .json(&common::tool_call("echo"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn unknown_hosts_and_origins_are_refused_and_configured_ones_accepted() {
    let dir = TempDir::new("hosts");
    let upstream = common::fake_mcp().await;
    let base = ["--upstream", upstream.as_str(), "--password", "pw"];
    let proxy = Running::start(dir.path(), &base, &[]).await;
    let port = proxy.base.rsplit(':').next().unwrap().to_owned();
    let evil_host = format!("evil.example:{port}");
    // The control: the proxy's own host gets as far as the token check.
    assert_eq!(status(&proxy.mcp, ("x-unused", "1")).await, 401);
    assert_eq!(status(&proxy.mcp, ("host", &evil_host)).await, 403);
    assert_eq!(
        status(&proxy.mcp, ("origin", "https://evil.example")).await,
        403
    );
    // The OAuth endpoints are not behind the Host check (clients reach them by any name the
    // metadata gives).
    let meta = http()
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            proxy.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    proxy.stop().await;

    let mut args = base.to_vec();
    args.extend([
        "--allow-host",
        "evil.example",
        "--allow-origin",
        "https://evil.example",
    ]);
    let proxy = Running::start(dir.path(), &args, &[]).await;
    let port = proxy.base.rsplit(':').next().unwrap().to_owned();
    assert_eq!(
        status(&proxy.mcp, ("host", &format!("evil.example:{port}"))).await,
        401
    );
    assert_eq!(
        status(&proxy.mcp, ("origin", "https://evil.example")).await,
        401
    );
    assert_eq!(
        status(&proxy.mcp, ("origin", "https://other.example")).await,
        403
    );
    proxy.stop().await;
}
