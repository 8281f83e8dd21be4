//! A loopback port for a server that must be named before it starts (an identity provider
//! registers its URL first, or a restart must come back on the same address).
//!
//! Binding `127.0.0.1:0` and releasing the port is not enough: the port comes from the
//! kernel's ephemeral range, so any other test's `bind(0)` or outgoing connection can take it
//! before the server binds it (seen: `AddrInUse` under a parallel run). These ports are drawn
//! below that range (Linux: 32768–60999), which the kernel never hands out by itself.

use std::sync::atomic::{AtomicU64, Ordering};

/// A free loopback port in 20000–32767 (checked by binding it, then released).
pub(crate) fn free_port() -> u16 {
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 20)
        ^ DRAWN
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in 0..2_000u64 {
        let n = seed.wrapping_add(i.wrapping_mul(7_919));
        let port = 20_000 + (n % 12_768) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-32767");
}
