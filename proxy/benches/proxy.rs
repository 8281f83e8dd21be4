//! Loopback load test of the HTTP-upstream proxy: authenticated `tools/list` **through
//! `mcp-oauth-proxy`** against the same `tools/list` sent **directly to the upstream**,
//! unauthenticated, by the same client in the same run.
//!
//! Two upstreams, each loaded in turn in the same run (`--upstream rmcp|python|both`, both by
//! default), each with its own proxy and forwarder in front:
//! - `python`: the kind of server the proxy is for, one written in another language: the
//!   official Python SDK's `MCPServer` (`tests/interop/proxy_fixture_server.py
//!   http-stateless PORT`, stateless, JSON answers), run by the interop venv's python
//!   (`.interop/venv/bin/python`; when it is missing, a loud SKIPPED line and the rmcp
//!   upstream alone). Its process's CPU (`/proc/<pid>/stat`) is added to the CPU per request
//!   and shown apart ("of it upstr");
//! - `rmcp`: the worst case for the ratio, an upstream that answers in ~30 µs of CPU.
//!
//! `--store URL` gives the proxies' store (`postgres://…`, `redis://…`, a SQLite path); a
//! SQLite file in a temporary directory by default. The layer looks a token's revocation up
//! in the store on every request, so the store shows in the proxied column.
//!
//! What it stands up on `127.0.0.1:0`:
//! - the rmcp upstream: an rmcp streamable-HTTP server (`StreamableHttpService`) with three tools,
//!   stateless and answering in JSON (`legacy_session_mode(false)`, `json_response(true)`),
//!   served with `TCP_NODELAY` on every accepted connection;
//! - the proxy: the library's [`Proxy`](mcp_oauth_proxy::app::Proxy), in process, started
//!   from the same flags as the binary (`--upstream <the upstream>`, a SQLite store in a
//!   temporary directory, the demo user), serving with `mcp_oauth::serve`.
//!
//! The token is obtained through the proxy's real OAuth flow (`tests/common/mod.rs`:
//! metadata, registration, the scripted browser's sign-in and consent, the PKCE code
//! exchange), and every request through the proxy is verified by its OAuth layer as any
//! other: nothing is skipped.
//!
//! A third target, `fwd-only`, is the forwarder alone (`HttpUpstream::router()` served
//! without the OAuth layer, which the binary never does): it splits what the proxy costs
//! into forwarding and authorization. It is printed, not part of the goal.
//!
//! A fourth, `proxied-rc`, is a second proxy on the same store started with
//! `--revocation-cache 5s`: its layer asks the store about a token once per 5 s instead of
//! on every request, which shows what the per-request revocation lookup costs.
//!
//! The client: `--conns` workers (16 by default), each with its own `reqwest` client holding
//! one keep-alive HTTP/1.1 connection per target. The run interleaves: for each of
//! `--rounds` rounds (3), it loads `direct`, `proxied`, `fwd-only` and `proxied-rc` in turn (the order flips every
//! round) for `--secs` seconds (2) each, all connections busy. Every answer is checked once
//! first (both must list the same tools).
//!
//! It prints the requests, req/s, p50 and p99 of each, and the ratio proxied/direct of req/s
//! against the goal of issue 12 (≥ 0.8×); `--check` exits with status 1 when it is missed.
//! It also prints the CPU time the process spent per request in each case (client, proxy and
//! upstream together, from `/proc/self/stat`), which a busy machine disturbs far less than
//! req/s: direct/proxied of it is the throughput ratio of a CPU-bound run.
//!
//! ```text
//! cargo bench -p mcp-oauth-proxy --bench proxy
//! cargo bench -p mcp-oauth-proxy --bench proxy -- --secs 3 --rounds 3 --conns 16 --check
//! cargo bench -p mcp-oauth-proxy --bench proxy -- --upstream rmcp --store redis://127.0.0.1:6379
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::ListenerExt as _;
use clap::Parser as _;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};

// The browser's unit tests are compiled out of a bench (`harness = false`).
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

const PROTOCOL: &str = "2025-11-25";
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;

/// The upstream's MCP server: three tools without arguments.
#[derive(Debug, Clone, Default)]
struct Upstream;

#[tool_router]
impl Upstream {
    #[tool(description = "Say hello.")]
    fn hello(&self) -> String {
        "hello".to_owned()
    }

    #[tool(description = "Tell the time of day, roughly.")]
    fn time_of_day(&self) -> String {
        "noon".to_owned()
    }

    #[tool(description = "Count the calls so far (not really).")]
    fn count(&self) -> String {
        "1".to_owned()
    }
}

#[tool_handler]
impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Command-line settings.
#[derive(Debug, Clone)]
struct Settings {
    conns: usize,
    secs: f64,
    rounds: usize,
    check: bool,
    /// Which upstreams to load: `rmcp`, `python` or both (the default).
    upstreams: Vec<String>,
    /// The proxy's store (`--store`): a SQLite file in a temporary directory by default.
    store: Option<String>,
}

fn settings() -> Settings {
    let mut s = Settings {
        conns: 16,
        secs: 2.0,
        rounds: 3,
        check: false,
        upstreams: vec!["rmcp".to_owned(), "python".to_owned()],
        store: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--conns" => s.conns = num("--conns").max(1.0) as usize,
            "--secs" => s.secs = num("--secs").clamp(0.2, 20.0),
            "--rounds" => s.rounds = num("--rounds").clamp(1.0, 10.0) as usize,
            "--check" => s.check = true,
            "--upstream" => {
                let v = args.next().expect("--upstream needs rmcp, python or both");
                s.upstreams = match v.as_str() {
                    "both" => vec!["rmcp".to_owned(), "python".to_owned()],
                    "rmcp" | "python" => vec![v],
                    _ => panic!("--upstream: rmcp, python or both, not {v:?}"),
                };
            }
            "--store" => s.store = Some(args.next().expect("--store needs a URL")),
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    s
}

/// One keep-alive connection to one target.
#[derive(Clone)]
struct Conn {
    http: reqwest::Client,
    url: Arc<str>,
    bearer: Option<Arc<str>>,
}

impl Conn {
    fn new(url: &str, bearer: Option<Arc<str>>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .expect("client");
        Self {
            http,
            url: url.into(),
            bearer,
        }
    }

    async fn list(&self) -> (reqwest::StatusCode, bytes::Bytes) {
        self.try_list().await.expect("request")
    }

    async fn try_list(&self) -> reqwest::Result<(reqwest::StatusCode, bytes::Bytes)> {
        let mut req = self
            .http
            .post(&*self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .body(LIST);
        if let Some(b) = &self.bearer {
            req = req.header("authorization", &**b);
        }
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.bytes().await?))
    }
}

/// Loads `conns` for `secs`, every connection busy; returns the latencies (µs) and the
/// elapsed time.
async fn load(conns: &[Conn], secs: f64) -> (Vec<u32>, Duration) {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns.len());
    for c in conns {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            while Instant::now() < until {
                let t = Instant::now();
                let (status, _) = c.list().await;
                assert!(status.is_success(), "{status}");
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (all, start.elapsed())
}

#[derive(Default)]
struct Tally {
    lat: Vec<u32>,
    time: Duration,
    /// CPU time the whole process (client, proxy and upstream) used meanwhile.
    cpu: Duration,
}

/// CPU time used by this process so far, all threads (`utime + stime` of `/proc/self/stat`;
/// zero where there is no `/proc`).
fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

/// CPU time used so far by the process whose `stat` file is `path` (zero when unreadable).
fn cpu_of(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `utime` and `stime` are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

impl Tally {
    /// CPU microseconds per request.
    fn cpu_per_req(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.lat.len().max(1) as f64)
    }

    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.time.as_secs_f64().max(1e-9)
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.lat.sort_unstable();
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() - 1) as f64 * p).round() as usize;
        f64::from(self.lat[i]) / 1000.0
    }
}

/// The tool names of a `tools/list` answer (JSON, or one SSE `data:` line).
fn tool_names(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(&text)
        .trim()
        .to_owned();
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut names: Vec<String> = v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {text}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn main() -> ExitCode {
    let s = settings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(s))
}

/// Serves the in-process rmcp upstream on `127.0.0.1:0`; returns its `/mcp` URL.
async fn start_rmcp() -> String {
    let service = StreamableHttpService::new(
        || Ok(Upstream),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let app = Router::new().route_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream_url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve upstream");
    });
    upstream_url
}

/// The Python SDK upstream: `tests/interop/proxy_fixture_server.py http-stateless PORT`
/// run by the interop venv's python, killed on drop.
struct PythonUpstream {
    child: std::process::Child,
    url: String,
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Python SDK upstream and waits until it answers `tools/list`; `None` (after a
/// loud SKIPPED line) when the interop toolchain is missing or the server does not come up.
async fn start_python() -> Option<PythonUpstream> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let python = root.join(".interop/venv/bin/python");
    let script = root.join("tests/interop/proxy_fixture_server.py");
    if !python.exists() {
        println!(
            "*** SKIPPED upstream python: no interop toolchain ({} is missing; \
             `cargo test --test interop_as_python` installs it) ***",
            python.display()
        );
        return None;
    }
    let port = common::free_port();
    let child = std::process::Command::new(&python)
        .arg(&script)
        .arg("http-stateless")
        .arg(port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            println!(
                "*** SKIPPED upstream python: cannot start {}: {e} ***",
                python.display()
            );
            return None;
        }
    };
    let up = PythonUpstream {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    };
    let probe = Conn::new(&up.url, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = probe.try_list().await
            && res.0.is_success()
        {
            return Some(up);
        }
        if Instant::now() > deadline {
            println!("*** SKIPPED upstream python: it did not answer within 30 s ***");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one upstream's run found.
struct Outcome {
    name: &'static str,
    ratio: f64,
}

async fn run(s: Settings) -> ExitCode {
    let dir = common::temp_dir("bench");
    let store = s.store.clone().unwrap_or_else(|| {
        dir.join("s.sqlite3")
            .to_str()
            .expect("store path")
            .to_owned()
    });
    println!(
        "proxy store: {}",
        if s.store.is_some() {
            &store
        } else {
            "SQLite (temporary file)"
        }
    );
    let mut outcomes = Vec::new();
    for which in &s.upstreams {
        match which.as_str() {
            "rmcp" => {
                let url = start_rmcp().await;
                let names = ["count", "hello", "time_of_day"];
                outcomes.push(bench("rmcp", &url, None, &names, &s, &store).await);
            }
            _ => {
                let Some(up) = start_python().await else {
                    continue;
                };
                let stat = format!("/proc/{}/stat", up.child.id());
                let names = ["crash", "echo", "recall", "remember", "slow", "whoami"];
                outcomes.push(bench("python", &up.url, Some(&stat), &names, &s, &store).await);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    let mut ok = true;
    for o in &outcomes {
        let met = o.ratio >= 0.8;
        ok &= met;
        println!(
            "goal (issue 12: proxied/direct >= 0.8x), upstream {}: {} ({:.2}x)",
            o.name,
            if met { "met" } else { "MISSED" },
            o.ratio
        );
    }
    if s.check && !ok {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts a proxy in process in front of `upstream_url` on `store` with the demo user and
/// `extra` flags; returns its base URL and MCP URL.
async fn start_proxy(upstream_url: &str, store: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "mcp-oauth-proxy",
        "--addr",
        "127.0.0.1:0",
        "--upstream",
        upstream_url,
        "--user",
        common::USER,
        "--password",
        common::PASSWORD,
        "--store",
        store,
    ];
    args.extend_from_slice(extra);
    let settings = mcp_oauth_proxy::settings::Settings::parse_from(args);
    let proxy = mcp_oauth_proxy::app::Proxy::start(settings)
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.local_addr().expect("proxy addr"));
    let url = proxy.mcp_url();
    tokio::spawn(async move { proxy.run().await.expect("proxy run") });
    (base, url)
}

/// Loads one upstream directly, through a proxy in front of it, and through the forwarder
/// alone; prints the table. `upstream_stat` is the `/proc/<pid>/stat` of an upstream in
/// another process (its CPU is added to this process's).
async fn bench(
    name: &'static str,
    upstream_url: &str,
    upstream_stat: Option<&str>,
    tools: &[&str],
    s: &Settings,
    store: &str,
) -> Outcome {
    println!();
    println!("=== upstream {name}: {upstream_url} ===");
    // The proxy, in process; and a second one trusting "not revoked" for 5 s.
    let (base, proxied_url) = start_proxy(upstream_url, store, &[]).await;
    let (rc_base, rc_url) = start_proxy(upstream_url, store, &["--revocation-cache", "5s"]).await;

    // The forwarder alone, without the OAuth layer in front (not a configuration the binary
    // offers): it splits the proxy's cost into forwarding and authorization.
    let bare = mcp_oauth_proxy::http_upstream::HttpUpstream::new(
        mcp_oauth_proxy::http_upstream::UpstreamOptions::new(upstream_url.parse().expect("url")),
    )
    .expect("forwarder");
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bare_url = format!("http://{}/mcp", bare_listener.local_addr().expect("addr"));
    let bare_app = bare.router();
    tokio::spawn(async move { mcp_oauth::serve(bare_listener, bare_app).await });

    let token = common::obtain_token(&base).await;
    let bearer: Arc<str> = format!("Bearer {token}").into();
    let rc_token = common::obtain_token(&rc_base).await;
    let rc_bearer: Arc<str> = format!("Bearer {rc_token}").into();

    let direct: Vec<Conn> = (0..s.conns)
        .map(|_| Conn::new(upstream_url, None))
        .collect();
    let bare: Vec<Conn> = (0..s.conns).map(|_| Conn::new(&bare_url, None)).collect();
    let proxied: Vec<Conn> = (0..s.conns)
        .map(|_| Conn::new(&proxied_url, Some(bearer.clone())))
        .collect();
    let cached: Vec<Conn> = (0..s.conns)
        .map(|_| Conn::new(&rc_url, Some(rc_bearer.clone())))
        .collect();

    // Check the answers once: the same tools, both ways; the proxy refuses without a token.
    let (st_d, body_d) = direct[0].list().await;
    let (st_p, body_p) = proxied[0].list().await;
    assert!(st_d.is_success() && st_p.is_success(), "{st_d} {st_p}");
    let (names_d, names_p) = (tool_names(&body_d), tool_names(&body_p));
    assert_eq!(names_d, tools);
    assert_eq!(names_d, names_p);
    let (st_anon, _) = Conn::new(&proxied_url, None).list().await;
    assert_eq!(
        st_anon, 401,
        "the proxy must refuse a request without a token"
    );
    println!(
        "direct answer: {} bytes; proxied answer: {} bytes",
        body_d.len(),
        body_p.len()
    );

    // Warm every connection.
    let _ = load(&direct, 0.3).await;
    let _ = load(&proxied, 0.3).await;
    let _ = load(&bare, 0.3).await;
    let _ = load(&cached, 0.3).await;

    println!(
        "loopback HTTP: {} keep-alive connections, {} rounds x {} s per case",
        s.conns, s.rounds, s.secs
    );
    let up_cpu = || upstream_stat.map_or(Duration::ZERO, cpu_of);
    let mut tallies: [Tally; 4] = Default::default();
    let mut up_tallies = [Duration::ZERO; 4];
    for round in 0..s.rounds {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for which in order {
            let conns = match which {
                0 => &direct,
                1 => &proxied,
                2 => &bare,
                _ => &cached,
            };
            let (cpu, up) = (process_cpu(), up_cpu());
            let (lat, time) = load(conns, s.secs).await;
            up_tallies[which] += up_cpu().saturating_sub(up);
            tallies[which].cpu += process_cpu().saturating_sub(cpu);
            tallies[which].lat.extend(lat);
            tallies[which].time += time;
        }
    }
    // The CPU per request counts the upstream's process too, when it is another one.
    for (t, up) in tallies.iter_mut().zip(up_tallies) {
        t.cpu += up;
    }
    let up_per_req: Vec<f64> = (0..4)
        .map(|i| up_tallies[i].as_secs_f64() * 1e6 / (tallies[i].lat.len().max(1) as f64))
        .collect();
    let ratio = tallies[1].rps() / tallies[0].rps().max(1e-9);
    println!(
        "{:<11} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>11}",
        "op",
        "target",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "cpu us/req",
        "of it upstr"
    );
    let bare_ratio = tallies[2].rps() / tallies[0].rps().max(1e-9);
    let cached_ratio = tallies[3].rps() / tallies[0].rps().max(1e-9);
    for (target, i) in [
        ("direct", 0),
        ("proxied", 1),
        ("fwd-only", 2),
        ("proxied-rc", 3),
    ] {
        let up = if upstream_stat.is_some() {
            format!("{:.1}", up_per_req[i])
        } else {
            "(in total)".to_owned()
        };
        let t = &mut tallies[i];
        let (p50, p99) = (t.pct(0.5), t.pct(0.99));
        let shown = match i {
            1 => format!("{ratio:.2}x"),
            2 => format!("{bare_ratio:.2}x"),
            3 => format!("{cached_ratio:.2}x"),
            _ => String::new(),
        };
        println!(
            "{:<11} {target:<10} {:>9} {:>9.0} {p50:>9.2} {p99:>9.2} {shown:>7} {:>10.1} {up:>11}",
            "tools/list",
            t.lat.len(),
            t.rps(),
            t.cpu_per_req()
        );
    }
    // With client, proxy and upstream on one shared machine, req/s swings with whatever
    // else runs; CPU per request does not. Their ratio is the throughput ratio a CPU-bound
    // run would show.
    let cpu_ratio = tallies[0].cpu_per_req() / tallies[1].cpu_per_req().max(1e-9);
    let cpu_bare = tallies[0].cpu_per_req() / tallies[2].cpu_per_req().max(1e-9);
    println!(
        "CPU per request (client + proxy + upstream): direct/proxied {cpu_ratio:.2}x, \
         direct/fwd-only {cpu_bare:.2}x; the proxy adds {:.1} us per request ({:.1} us of it \
         forwarding)",
        tallies[1].cpu_per_req() - tallies[0].cpu_per_req(),
        tallies[2].cpu_per_req() - tallies[0].cpu_per_req(),
    );
    println!(
        "revocation cache (proxied-rc, --revocation-cache 5s): {:.1} us per request less than \
         proxied; proxied-rc/direct {cached_ratio:.2}x",
        tallies[1].cpu_per_req() - tallies[3].cpu_per_req(),
    );
    println!("upstream {name}: proxied/direct {ratio:.2}x");
    Outcome { name, ratio }
}
