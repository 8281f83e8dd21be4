//! Small shared helpers: the clock and the secret generator.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `bytes` bytes from the operating system's random source, base64url without padding.
/// Codes, refresh tokens and secrets use 32 bytes (256 bits).
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    token_text(&buf)
}

/// Random bytes as a token's text: base64url without padding.
pub(crate) fn token_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // aws-lc-rs draws from the OS generator; failure here means the platform has no usable
    // randomness, which no caller could recover from.
    aws_lc_rs::rand::fill(buf).expect("the operating system's random generator failed");
}
