//! `allow_hosts` and `allow_origins`: the MCP endpoint refuses a `Host` or a browser
//! `Origin` it does not know (DNS rebinding), and accepts the ones the configuration adds; a
//! request that names its host twice, or two ways that disagree, is refused.

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

#[tokio::test]
async fn a_host_named_twice_or_two_ways_is_refused() {
    let dir = TempDir::new("hosts-twice");
    let upstream = common::fake_mcp().await;
    let proxy = Running::start(
        dir.path(),
        &["--upstream", upstream.as_str(), "--password", "pw"],
        &[],
    )
    .await;
    let addr = proxy.base.trim_start_matches("http://").to_owned();
    let body = common::tool_call("echo").to_string();
    let request = |target: &str, hosts: &[&[u8]]| {
        let mut r = format!("POST {target} HTTP/1.1\r\n").into_bytes();
        for host in hosts {
            r.extend_from_slice(b"Host: ");
            r.extend_from_slice(host);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        r
    };
    let own = addr.as_bytes();
    let absolute = format!("http://{addr}/mcp");
    // The controls: the proxy's own host, named once (and by an absolute-form target that
    // agrees), gets as far as the token check.
    let (status, _) = common::raw_http(&proxy.base, &request("/mcp", &[own])).await;
    assert_eq!(status, 401);
    let (status, _) = common::raw_http(&proxy.base, &request(&absolute, &[own])).await;
    assert_eq!(status, 401);
    // Two Host headers, the first one allowed: 400 (RFC 9112 §3.2), whichever is read.
    let (status, body) =
        common::raw_http(&proxy.base, &request("/mcp", &[own, b"evil.example"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than one Host header"), "{body}");
    assert!(body.contains("-32600"), "{body}");
    // An absolute-form target naming another host than the (allowed) Host header.
    let (status, body) =
        common::raw_http(&proxy.base, &request("http://evil.example/mcp", &[own])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("name different hosts"), "{body}");
    // A Host that is not visible ASCII is not skipped for the target's (allowed) authority.
    let (status, body) =
        common::raw_http(&proxy.base, &request(&absolute, &[b"\xe9vil.example"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not visible ASCII"), "{body}");
    proxy.stop().await;
}
