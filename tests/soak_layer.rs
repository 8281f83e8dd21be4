//! A soak of the resource-server layer (issue 13, item 5): many requests with valid,
//! expired and otherwise invalid tokens through `McpOAuthLayer` in the `store_node` example
//! binary, while the binary's resident memory (`VmRSS` of `/proc/PID/status`) is sampled.
//! No answer may be a 5xx, every answer must be the one its token deserves (200 or 401), and
//! memory must level off.
//!
//! # What is sent
//!
//! [`CONNS`] keep-alive connections send `POST /mcp` in a fixed rotation of eight kinds:
//! three with tokens from a pool of 64 valid ones (verified-token cache hits), one with a
//! valid token never seen before (a cache miss, a full ES256 verification and a cache
//! insert that evicts once the cache is full), one expired (past the 60 s leeway), one with
//! a broken signature, one for another audience, and one with no token at all. The tokens
//! are signed by the test with the key the binary is given (`MCP_OAUTH_SIGNING_KEY_PEM`).
//!
//! # Phases, and the criterion "memory levels off"
//!
//! 1. **Warm-up**: [`WARMUP`] requests with distinct valid tokens: more than the token
//!    cache holds (the binary is started with a cache of [`CACHE_ENTRIES`], so the
//!    steady state — a full cache that evicts on every insert — is reached in seconds;
//!    the long mode keeps the default 10,000). Allocator arenas, connection buffers and the
//!    cache all reach their working size here.
//! 2. **Measurement**: [`MEASURE`] requests of the mix, RSS sampled every 100 ms.
//!
//! The criterion: the growth of RSS over the **second half** of the measurement must stay
//! below `max(NOISE, warm-up growth / 4)`. Why this form:
//! - a leak grows RSS in proportion to the requests served, so it shows in the second half
//!   as much as in the first, however late it starts; legitimate structures are bounded and
//!   reached their size during the warm-up (which was sized to overfill the cache), so they
//!   add nothing later;
//! - RSS moves in steps (the allocator maps and trims arenas of a MiB and more), so a small
//!   absolute floor ([`NOISE`], 2 MiB) absorbs one or two such steps, and the relative term
//!   scales the floor for a binary whose working set is larger (a release build, a bigger
//!   cache); comparing with the *warm-up* growth rather than the total keeps the bound
//!   independent of what the binary mapped before serving;
//! - comparing the end of the measurement with its middle (not the first sample with the
//!   last) discards the first half's tail of warm-up effects.
//!
//! With 10,000 measured requests, the floor alone catches any leak above about
//! 2 MiB / 5,000 ≈ 420 bytes per request — less than one leaked token (≈ 460 bytes).
//! [`levels_off`] is that criterion; a unit test below shows it refusing a leaking curve.
//!
//! # The long mode, for BENCHMARKS.md
//!
//! `MCP_OAUTH_SOAK_SECS=120 cargo test --release --all-features --test soak_layer -- --nocapture`
//! runs the measurement for that many seconds instead of a request count, with the
//! default cache size, and prints the RSS curve as a Markdown table (the same criterion is
//! asserted).
#![cfg(feature = "server")]

#[path = "support/example.rs"]
mod example;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_oauth::keys::{SigningAlgorithm, SigningKey};
use serde_json::json;

/// The issuer the binary is given (nothing listens there).
const ISSUER: &str = "http://127.0.0.1:9";
/// Concurrent keep-alive connections.
const CONNS: usize = 16;
/// The token cache's capacity in the CI mode.
const CACHE_ENTRIES: usize = 1_000;
/// Warm-up requests, each with a token never seen before (more than the cache holds).
const WARMUP: usize = 2_000;
/// Measured requests in the CI mode.
const MEASURE: usize = 10_000;
/// The allocator's step size that a level curve may still show.
const NOISE: u64 = 2 * 1024 * 1024;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A fresh ES256 key as PKCS#8 PEM.
fn key_pem() -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("keygen");
    let der = pair.to_pkcs8v1().expect("pkcs8");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Signs access tokens the way the binary's authorization server does.
struct Minter {
    key: SigningKey,
    n: AtomicU64,
}

impl Minter {
    fn token(&self, aud: &str, exp: u64) -> String {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.key
            .sign(
                "at+jwt",
                &json!({
                    "iss": ISSUER, "aud": aud, "sub": format!("user-{}", n % 100),
                    "client_id": "soak-client", "scope": "read",
                    "iat": now(), "exp": exp, "jti": format!("soak-{n}"),
                }),
            )
            .expect("sign")
    }

    fn valid(&self) -> String {
        self.token(&format!("{ISSUER}/mcp"), now() + 3600)
    }
}

/// The eight kinds of request, in rotation: `(token, expected status)`.
fn request(kind: usize, minter: &Minter, pool: &[String], i: usize) -> (Option<String>, u16) {
    match kind % 8 {
        0..=2 => (Some(pool[i % pool.len()].clone()), 200),
        3 => (Some(minter.valid()), 200),
        4 => (
            Some(minter.token(&format!("{ISSUER}/mcp"), now() - 600)),
            401,
        ),
        5 => {
            // One character of the signature changed: a full verification that fails.
            let mut t = minter.valid().into_bytes();
            let last = t.len() - 2;
            t[last] = if t[last] == b'A' { b'B' } else { b'A' };
            (Some(String::from_utf8(t).expect("ascii")), 401)
        }
        6 => (
            Some(minter.token("http://127.0.0.1:9/other", now() + 3600)),
            401,
        ),
        _ => (None, 401),
    }
}

/// One sample: seconds since the measurement began, requests done, RSS in bytes.
type Sample = (f64, usize, u64);

/// The criterion (see the module docs): `Ok(growth)` when the RSS growth over the second half
/// of the measured requests is within `max(NOISE, warm-up growth / 4)`, else
/// `Err((growth, bound))`.
fn levels_off(rss_start: u64, rss_warm: u64, samples: &[Sample]) -> Result<u64, (u64, u64)> {
    let measured = samples.last().map_or(0, |s| s.1);
    let middle = samples
        .iter()
        .find(|s| s.1 >= measured / 2)
        .map_or(rss_warm, |s| s.2);
    let end = samples.last().map_or(rss_warm, |s| s.2);
    let late_growth = end.saturating_sub(middle);
    let bound = NOISE.max(rss_warm.saturating_sub(rss_start) / 4);
    if late_growth <= bound {
        Ok(late_growth)
    } else {
        Err((late_growth, bound))
    }
}

#[test]
fn the_criterion_accepts_a_level_curve_and_refuses_a_leak() {
    const MIB: u64 = 1024 * 1024;
    // 10,000 requests, a sample every 100; the warm-up grew RSS from 20 to 26 MiB.
    let curve = |leak_per_request: u64, steps: u64| -> Vec<Sample> {
        (0..=100u64)
            .map(|k| {
                let n = k * 100;
                // allocator steps of 1 MiB every 40 samples, plus the leak
                let step = (k / 40) * steps * MIB;
                (
                    k as f64 * 0.1,
                    n as usize,
                    26 * MIB + step + n * leak_per_request,
                )
            })
            .collect()
    };
    assert!(levels_off(20 * MIB, 26 * MIB, &curve(0, 0)).is_ok());
    assert!(
        levels_off(20 * MIB, 26 * MIB, &curve(0, 1)).is_ok(),
        "one or two allocator steps"
    );
    // 500 bytes per request: 2.4 MiB over the second half.
    assert!(levels_off(20 * MIB, 26 * MIB, &curve(500, 0)).is_err());
    // A bigger warm-up allows proportionally more: 40 MiB of warm-up, bound 10 MiB.
    assert!(levels_off(20 * MIB, 60 * MIB, &curve(500, 0)).is_ok());
    assert!(levels_off(20 * MIB, 60 * MIB, &curve(3_000, 0)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_under_a_soak_answers_no_5xx_and_its_memory_levels_off() {
    let long_secs: Option<u64> = std::env::var("MCP_OAUTH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let pem = key_pem();
    let cache = CACHE_ENTRIES.to_string();
    let mut env = vec![
        ("MCP_OAUTH_STORE", "memory"),
        ("MCP_OAUTH_PUBLIC_URL", ISSUER),
        ("MCP_OAUTH_SIGNING_KEY_PEM", pem.as_str()),
        ("MCP_OAUTH_RATE_LIMITS", "off"),
    ];
    if long_secs.is_none() {
        env.push(("MCP_OAUTH_TOKEN_CACHE_ENTRIES", cache.as_str()));
    }
    let node = example::Example::start("store_node", &env, &[]).await;
    let pid = node.pid().expect("the binary runs");
    let url = node.url("/mcp");
    let minter = Arc::new(Minter {
        key: SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem).expect("key"),
        n: AtomicU64::new(0),
    });
    let pool: Arc<Vec<String>> = Arc::new((0..64).map(|_| minter.valid()).collect());
    let warmup = if long_secs.is_some() { 12_000 } else { WARMUP };

    let rss_start = rss(pid);
    let wrong = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    // Warm-up and measurement share one request counter; the measurement starts after
    // `warmup` requests and ends at `warmup + MEASURE`, or at the deadline in the long mode.
    let issued = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let limit = match long_secs {
        Some(_) => usize::MAX,
        None => warmup + MEASURE,
    };
    let mut workers = Vec::new();
    for _ in 0..CONNS {
        let (url, minter, pool) = (url.clone(), minter.clone(), pool.clone());
        let (issued, done, stop) = (issued.clone(), done.clone(), stop.clone());
        let (wrong, statuses) = (wrong.clone(), statuses.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= limit || stop.load(Ordering::Relaxed) {
                    break;
                }
                let (token, expected) = if i < warmup {
                    (Some(minter.valid()), 200)
                } else {
                    request(i, &minter, &pool, i / 8)
                };
                let mut req = http
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let status = match req.send().await {
                    Ok(res) => {
                        let s = res.status().as_u16();
                        let _ = res.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                *statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status)
                    .or_insert(0) += 1;
                if status != expected {
                    let mut w = wrong.lock().unwrap_or_else(|e| e.into_inner());
                    if w.len() < 20 {
                        w.push(format!(
                            "request {i} (kind {}): {status}, expected {expected}",
                            i % 8
                        ));
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Sample every 100 ms; the measurement's clock starts when the warm-up is done.
    let mut samples: Vec<Sample> = Vec::new();
    let mut rss_warm = None;
    let mut measure_start = None;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = done.load(Ordering::Relaxed);
        let finished = workers.iter().all(|w| w.is_finished());
        if d >= warmup && measure_start.is_none() {
            measure_start = Some(Instant::now());
            rss_warm = Some(rss(pid));
        }
        if let Some(t0) = measure_start {
            samples.push((t0.elapsed().as_secs_f64(), d - warmup.min(d), rss(pid)));
            if long_secs.is_some_and(|s| t0.elapsed() >= Duration::from_secs(s)) {
                stop.store(true, Ordering::Relaxed);
            }
        }
        if finished {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(long_secs.unwrap_or(0) + 300),
            "the soak does not end"
        );
    }
    for w in workers {
        w.await.expect("worker");
    }
    let rss_warm = rss_warm.expect("the warm-up ended");
    let measured = done.load(Ordering::Relaxed) - warmup;

    // The curve: about 20 rows.
    let step = (samples.len() / 20).max(1);
    let mut table = String::from("| t (s) | requests | RSS (MiB) |\n|---:|---:|---:|\n");
    for (k, (t, n, r)) in samples.iter().enumerate() {
        if k % step == 0 || k + 1 == samples.len() {
            table.push_str(&format!(
                "| {t:.1} | {n} | {:.1} |\n",
                *r as f64 / 1048576.0
            ));
        }
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let middle = samples
        .iter()
        .find(|s| s.1 >= measured / 2)
        .map_or(rss_warm, |s| s.2);
    let end = samples.last().map_or(rss_warm, |s| s.2);
    let verdict = levels_off(rss_start, rss_warm, &samples);
    let (late_growth, bound) = match verdict {
        Ok(g) => (g, NOISE.max(rss_warm.saturating_sub(rss_start) / 4)),
        Err(gb) => gb,
    };
    let statuses = statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let server_errors: usize = statuses.range(500..).map(|(_, n)| n).sum();
    eprintln!(
        "soak: {warmup} warm-up + {measured} measured requests through the layer in {:.1} s \
         (cache {}), statuses {statuses:?}, 5xx: {server_errors}\n\
         RSS: start {:.1} MiB, after warm-up {:.1} MiB, middle {:.1} MiB, end {:.1} MiB; \
         second-half growth {:.2} MiB (bound {:.2} MiB)\n{table}",
        started.elapsed().as_secs_f64(),
        if long_secs.is_some() { "10000" } else { &cache },
        mib(rss_start),
        mib(rss_warm),
        mib(middle),
        mib(end),
        mib(late_growth),
        mib(bound),
    );
    assert_eq!(server_errors, 0, "5xx answers: {statuses:?}");
    let wrong = wrong.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(wrong.is_empty(), "answers other than expected: {wrong:#?}");
    assert!(
        long_secs.is_some() || measured == MEASURE,
        "every measured request was sent"
    );
    assert!(
        verdict.is_ok(),
        "RSS still grows: {:.2} MiB over the second half of the measurement, bound {:.2} MiB\n{table}",
        mib(late_growth),
        mib(bound)
    );
    drop(node);
}
