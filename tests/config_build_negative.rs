//! `McpOAuthConfig::builder().build()` refuses the issuer and resource strings that clients
//! would compare wrongly or fetch insecurely (issue 8 item 11, negative tests): plain `http`
//! on a host that is not loopback, a trailing slash on the issuer (RFC 8414 §3.3 and RFC
//! 9728 §3.3 compare these strings byte for byte), and the look-alikes of loopback hosts.
//! Each refusal is a `ConfigError::InvalidUrl` naming the field and the value, never a panic.

use mcp_oauth::scope::ScopeSet;
use mcp_oauth::verify::ApiKeyVerifier;
use mcp_oauth::{ConfigError, McpOAuthConfig};

const GOOD_ISSUER: &str = "https://auth.example.com";
const GOOD_RESOURCE: &str = "https://mcp.example.com/mcp";

fn build(issuer: &str, resources: &[&str]) -> Result<McpOAuthConfig, ConfigError> {
    let mut b = McpOAuthConfig::builder()
        .issuer(issuer)
        .verifier(ApiKeyVerifier::new().with_key("k-0123456789", "alice", ScopeSet::new()));
    for r in resources {
        b = b.resource(*r);
    }
    b.build()
}

#[track_caller]
fn assert_refused(result: Result<McpOAuthConfig, ConfigError>, field: &str, value: &str) {
    match result {
        Ok(_) => panic!("build() accepted {field} {value:?}"),
        Err(ConfigError::InvalidUrl {
            field: f,
            value: v,
            reason,
        }) => {
            assert_eq!(f, field, "{reason}");
            assert_eq!(v, value, "{reason}");
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("{field} {value:?}: expected InvalidUrl, got {other:?}"),
    }
}

#[test]
fn the_good_configuration_builds() {
    build(GOOD_ISSUER, &[GOOD_RESOURCE]).expect("https issuer and resource");
    // Loopback over plain http is the one exception (local development). Loopback is the
    // crate's one rule (issue 9 item 4): all of 127.0.0.0/8, `::1`, and the name
    // `localhost` in any case, with or without its final dot.
    for host in [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "127.0.0.2",
        "localhost.",
        "[::ffff:7f00:1]",
    ] {
        let issuer = format!("http://{host}:3000");
        let resource = format!("http://{host}:3000/mcp");
        build(&issuer, &[&resource]).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
}

// issue 8 item 11: an http issuer on a non-loopback host is refused.
#[test]
fn http_issuer_on_a_public_host_is_refused() {
    for issuer in [
        "http://auth.example.com",
        "http://auth.example.com:8080",
        "http://10.0.0.5",
        "http://0.0.0.0:3000",
        // Look-alikes of loopback hosts.
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://localhost..:3000",
        "http://app.localhost:3000",
        "http://128.0.0.1",
        "http://[::2]",
    ] {
        assert_refused(build(issuer, &[GOOD_RESOURCE]), "issuer", issuer);
    }
}

// issue 8 item 11: an http resource on a non-loopback host is refused, also when it is not
// the first resource.
#[test]
fn http_resource_on_a_public_host_is_refused() {
    for resource in [
        "http://mcp.example.com/mcp",
        "http://192.168.1.10:8080/mcp",
        "http://localhost.example.com/mcp",
    ] {
        assert_refused(build(GOOD_ISSUER, &[resource]), "resource", resource);
        assert_refused(
            build(GOOD_ISSUER, &[GOOD_RESOURCE, resource]),
            "resource",
            resource,
        );
    }
}

// issue 8 item 11: a trailing-slash issuer is refused (clients compare the `iss` of the
// metadata and of tokens byte for byte with what they were given).
#[test]
fn trailing_slash_issuer_is_refused() {
    for issuer in [
        "https://auth.example.com/",
        "https://auth.example.com/tenant/",
        "http://localhost:3000/",
    ] {
        assert_refused(build(issuer, &[GOOD_RESOURCE]), "issuer", issuer);
    }
    assert_refused(
        build(GOOD_ISSUER, &["https://mcp.example.com/mcp/"]),
        "resource",
        "https://mcp.example.com/mcp/",
    );
}

#[test]
fn other_schemes_queries_fragments_and_userinfo_are_refused() {
    for issuer in [
        "ftp://auth.example.com",
        "https://auth.example.com?tenant=a",
        "https://auth.example.com#x",
        "https://user:pw@auth.example.com",
        "auth.example.com",
        "",
        // Not canonical: clients would write it differently.
        "https://AUTH.example.com",
        "https://auth.example.com:443",
        "HTTP://localhost:3000",
    ] {
        assert_refused(build(issuer, &[GOOD_RESOURCE]), "issuer", issuer);
    }
}

#[test]
fn a_missing_issuer_or_resource_is_refused() {
    let no_issuer = McpOAuthConfig::builder()
        .resource(GOOD_RESOURCE)
        .verifier(ApiKeyVerifier::new())
        .build();
    assert!(matches!(no_issuer, Err(ConfigError::MissingIssuer)));
    let no_resource = McpOAuthConfig::builder()
        .issuer(GOOD_ISSUER)
        .verifier(ApiKeyVerifier::new())
        .build();
    assert!(matches!(no_resource, Err(ConfigError::MissingResource)));
}
