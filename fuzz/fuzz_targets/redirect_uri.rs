//! Redirect-URI validation (DCR) and matching (`/authorize`): `<registered>\n<requested>`.
//! A match must be byte-for-byte equality, or two `http` loopback URIs that differ only in
//! their port.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_oauth::__fuzz::{check_redirect_uri, redirect_uri_matches};

/// `(host, rest)` when `uri` is `http://` + a loopback host + an optional `:digits` port,
/// followed by nothing or by `/`, `?` or `#`. Written apart from the crate's code on purpose.
fn loopback(uri: &str) -> Option<(&'static str, &str)> {
    let after = uri.strip_prefix("http://")?;
    for host in ["127.0.0.1", "[::1]", "localhost"] {
        if let Some(mut rest) = after.strip_prefix(host) {
            if let Some(port) = rest.strip_prefix(':') {
                let digits = port.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || digits > 5 {
                    return None;
                }
                rest = &port[digits..];
            }
            if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
                return Some((host, rest));
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, requested) = text.split_once('\n').unwrap_or((text, text));
    let _ = check_redirect_uri(registered);
    let _ = check_redirect_uri(requested);
    if redirect_uri_matches(registered, requested) {
        let same = registered == requested;
        let loopback_same = matches!(
            (loopback(registered), loopback(requested)),
            (Some(a), Some(b)) if a == b
        );
        assert!(
            same || loopback_same,
            "{requested:?} matched the registered {registered:?}"
        );
    }
});
