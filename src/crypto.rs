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

/// AES-256-GCM sealing with a random 96-bit nonce, shared by everything the crate encrypts
/// at rest (kept upstream tokens, wrapped signing keys): `nonce || ciphertext || tag`.
pub(crate) mod aead {
    pub(crate) use aws_lc_rs::aead::NONCE_LEN;
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    fn key(bytes: &[u8; 32]) -> LessSafeKey {
        // A 32-byte key is always valid for AES-256-GCM.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!()))
    }

    /// Seals `plain` under `k` with associated data `aad`; `None` when the backend fails
    /// (never output holding plaintext).
    pub(crate) fn seal(k: &[u8; 32], aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::util::fill_random(&mut nonce);
        seal_with_nonce(k, nonce, aad, plain)
    }

    /// [`seal`] with a nonce the caller drew (from an injectable random source); it must
    /// never repeat under one key.
    pub(crate) fn seal_with_nonce(
        k: &[u8; 32],
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
    ) -> Option<Vec<u8>> {
        let mut in_out = plain.to_vec();
        key(k)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut in_out,
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Some(out)
    }

    /// Opens what [`seal`] made with the same key and associated data; `None` when it was
    /// tampered with, truncated, or sealed under another key or other data.
    pub(crate) fn open(k: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = body.to_vec();
        let plain = key(k)
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .ok()?;
        Some(plain.to_vec())
    }
}
