//! The fuzz targets' seed inputs (`fuzz/seeds/<target>/`), replayed through the same entry
//! points (`mcp_oauth::__fuzz`) on every `cargo test`: the harness keeps working, and an input
//! that once broke an invariant (a crash the fuzzers found is added to the seeds) stays a
//! regression test here (issue 8 item 10). The entry points panic when an invariant breaks:
//! a 5xx, a non-JSON OAuth error, a write-only tool reached with a read-only key, a forged
//! JWT accepted, a redirect URI matched that is neither equal nor loopback-port-equal.

#![cfg(feature = "server")]

use std::path::PathBuf;

use mcp_oauth::__fuzz::{self, Endpoint, HeaderPeek};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

#[test]
fn authorization_header_seeds() {
    for (name, data) in seeds("authorization_header") {
        let answer = __fuzz::layer_request(&data);
        eprintln!("{name}: {}", answer.status);
    }
    // The valid key reaches the service with a read-only call; a bad one gets a challenge.
    let ok = __fuzz::layer_request(
        format!(
            "Bearer {}\n{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}}",
            __fuzz::API_KEY
        )
        .as_bytes(),
    );
    assert_eq!(ok.status, 200);
    let bad = __fuzz::layer_request(
        b"Bearer wrong\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}",
    );
    assert_eq!(bad.status, 401);
}

#[test]
fn jsonrpc_seeds() {
    for (_, data) in seeds("jsonrpc_body") {
        __fuzz::jsonrpc_body(&data);
    }
    for (_, data) in seeds("jsonrpc_headers") {
        __fuzz::jsonrpc_headers(&data);
    }
    assert_eq!(
        __fuzz::jsonrpc_headers(
            b"mcp-protocol-version: 2026-07-28\nmcp-method: tools/call\nmcp-name: x"
        ),
        HeaderPeek::Present("tools/call".to_owned(), Some("x".to_owned()))
    );
    // Encoded as rmcp's transport encodes non-ASCII names (issue 8 item 1).
    assert_eq!(
        __fuzz::jsonrpc_headers(
            b"mcp-protocol-version: 2026-07-28\nmcp-method: tools/call\nmcp-name: =?base64?ZmlsZXNfd3JpdGU=?="
        ),
        HeaderPeek::Present("tools/call".to_owned(), Some("files_write".to_owned()))
    );
    assert_eq!(
        __fuzz::jsonrpc_headers(
            b"mcp-protocol-version: 2026-07-28\nmcp-method: tools/call\nmcp-name: =?base64?!!?="
        ),
        HeaderPeek::Bad
    );
}

#[test]
fn oauth_endpoint_seeds() {
    for (target, endpoint, flagged) in [
        ("authorize_query", Endpoint::AuthorizeGet, false),
        ("authorize_form", Endpoint::AuthorizePost, false),
        ("token_form", Endpoint::Token, true),
        ("revoke_form", Endpoint::Revoke, false),
        ("introspect_form", Endpoint::Introspect, true),
        ("register_metadata", Endpoint::Register, false),
    ] {
        for (name, data) in seeds(target) {
            let (basic, input) = match data.split_first() {
                Some((&flags, rest)) if flagged => (flags & 1 == 1, rest),
                _ => (false, &data[..]),
            };
            let answer = __fuzz::oauth_request(endpoint, input, basic);
            eprintln!("{name}: {:?}", answer.map(|a| a.status));
        }
    }
    // The harness reaches real behaviour: a good registration is created.
    let created = __fuzz::oauth_request(
        Endpoint::Register,
        br#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}"#,
        false,
    )
    .expect("a request");
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

#[test]
fn jwt_seeds() {
    for (_, data) in seeds("jwt") {
        __fuzz::jwt(&data);
    }
    // Well-formed claims signed by the ring's key are accepted: the target reaches
    // claim validation, not only the signature check.
    let claims = format!(
        "\x01{{\"iss\":\"{}\",\"aud\":\"{}\",\"sub\":\"alice\",\"exp\":99999999999,\"iat\":1,\"jti\":\"f.1\",\"scope\":\"read\",\"client_id\":\"app\"}}",
        __fuzz::ISSUER,
        __fuzz::RESOURCE
    );
    assert!(__fuzz::jwt(claims.as_bytes()));
}

#[test]
fn redirect_uri_seeds() {
    for (_, data) in seeds("redirect_uri") {
        let text = String::from_utf8(data).unwrap();
        let (registered, requested) = text.split_once('\n').unwrap();
        let matched = __fuzz::redirect_uri_matches(registered, requested);
        let loopback_port_only = registered.starts_with("http://127.0.0.1/")
            && requested.starts_with("http://127.0.0.1:");
        assert_eq!(
            matched,
            registered == requested || loopback_port_only,
            "{text:?}"
        );
    }
    assert!(__fuzz::check_redirect_uri("https://app.example.com/cb").is_ok());
    assert!(__fuzz::check_redirect_uri("http://evil.example/cb").is_err());
}
