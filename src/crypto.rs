//! The process-wide crypto provider for `jsonwebtoken`.
//!
//! `jsonwebtoken` 11 picks its backend from Cargo features and panics at the first sign or
//! verify when both of its backends end up enabled (feature unification can do that behind
//! your back). The crate installs the `aws-lc-rs` provider explicitly before any key is used,
//! which makes that combination work instead of panicking. If the application installed a
//! provider first, that one stays.

#[cfg(not(feature = "aws-lc-rs"))]
compile_error!(
    "mcp-oauth needs its crypto backend: enable the `aws-lc-rs` feature (on by default)"
);

/// Installs the `aws-lc-rs` provider for `jsonwebtoken` unless one is installed already.
/// Idempotent and cheap after the first call.
pub(crate) fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
    });
}
