//! setup: how fast the engine establishes sessions (TCP, TLS, LOGIN, EXAMINE, IDLE) and
//! what each costs the proxy in CPU.
//!
//! ```text
//! cargo run --release -p benches --bin setup [-- --n 5000]
//! ```
//!
//! For each case, N watches are started as fast as `Engine::watch` takes them and the
//! clock stops at the N-th `Ready` (IDLE accepted). Cases: TLS and plain, with 2 reactor
//! threads and with 1; TLS with resumption (the mock's stateless tickets, as a provider
//! would offer) and with full handshakes only. CPU per setup is the bench process's
//! utime + stime over the run divided by N (the engine is the proxy here; the mock's CPU is
//! reported beside it: the two share the 2 cores). Each case runs in a fresh child process
//! with its own mock-imapd child. Prints a table and writes `target/bench/setup.json`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use benches::proc::{self, Chain, Child, MockServer};
use benches::progress::Progress;
use engine::{Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Sessions per case.
const N_DEFAULT: usize = 5_000;
/// Time for all sessions of a case to become ready.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Target from the issue: session setups per second.
const TARGET_SETUPS_PER_S: f64 = 3_000.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--mock-child") => proc::mock_child_main(&args[1..]),
        Some("--measure") => {
            let result = measure(&args[1..]).unwrap_or_else(|e| json!({ "error": e }));
            println!("RESULT {result}");
            let _ = std::io::stdout().flush();
            // Exit at once: an orderly shutdown would LOGOUT every session.
            std::process::exit(0);
        }
        _ => {}
    }
    if let Err(e) = parent(&args) {
        eprintln!("setup: {e}");
        std::process::exit(1);
    }
}

fn parent(args: &[String]) -> Result<(), String> {
    let mut n = N_DEFAULT;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--n" => {
                n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0 && v <= 19_000)
                    .ok_or("--n needs a number in 1..=19000")?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let _lock = proc::bench_lock(Duration::from_secs(30 * 60));
    let busy = proc::wait_for_quiet(Duration::from_secs(120));
    if !busy.is_empty() {
        eprintln!("setup: measuring on a busy machine: {}", busy.join("; "));
    }
    let cases = [
        ("tls", "2", "resume"),
        ("tls", "1", "resume"),
        ("tls", "2", "full"),
        ("plain", "2", "resume"),
        ("plain", "1", "resume"),
    ];
    let mut results = Vec::new();
    for (security, reactors, handshake) in cases {
        let args: Vec<String> = ["--measure", security, reactors, handshake, &n.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        eprintln!("setup: measuring {}", args.join(" "));
        let mut child = Child::spawn_self(&args).map_err(|e| format!("spawn: {e}"))?;
        let line = child.read_until("RESULT ", 100_000)?;
        child.finish(Duration::from_secs(30));
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad result: {e}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!("{}: {e}", args.join(" ")));
        }
        results.push(v);
    }
    print_table(&results);
    let report = json!({
        "bench": "setup",
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "busy_processes_at_start": busy,
        "target_setups_per_s": TARGET_SETUPS_PER_S,
        "cases": results,
    });
    let path = proc::bench_out_dir().join("setup.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn print_table(results: &[Value]) {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "Session setup (TCP, TLS, LOGIN, EXAMINE, IDLE) through the engine; N = {}",
        results.first().map_or(Value::Null, |v| v["n"].clone())
    );
    println!(
        "{:<6} {:>8} {:>9} {:>10} {:>12} {:>11} {:>10} {:>10} {:>10} {:>11} {:>12}",
        "kind",
        "reactors",
        "handshake",
        "setups/s",
        "target 3000",
        "CPU µs/set",
        "p50 ms",
        "p99 ms",
        "max ms",
        "mock CPU %",
        "mock µs/set"
    );
    for v in results {
        let rate = f(v, "setups_per_s");
        println!(
            "{:<6} {:>8} {:>9} {:>10.0} {:>12} {:>11.0} {:>10.1} {:>10.1} {:>10.1} {:>11.0} {:>12.0}",
            v["security"].as_str().unwrap_or("?"),
            v["reactor_threads"],
            v["handshake"].as_str().unwrap_or("?"),
            rate,
            if rate >= TARGET_SETUPS_PER_S {
                "ok"
            } else {
                "MISSED"
            },
            f(v, "proxy_cpu_us_per_setup"),
            f(v, "latency_p50_ms"),
            f(v, "latency_p99_ms"),
            f(v, "latency_max_ms"),
            f(v, "mock_cpu_pct"),
            f(v, "mock_cpu_us_per_setup"),
        );
    }
    println!();
}

/// `--measure tls|plain REACTORS resume|full N`
fn measure(args: &[String]) -> Result<Value, String> {
    proc::raise_nofile_limit();
    let tls = args.first().map(String::as_str) == Some("tls");
    let reactors: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    let resume = args.get(2).map(String::as_str) != Some("full");
    let n: usize = args
        .get(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(N_DEFAULT);
    let mock = MockServer::start(Chain::Small, 4, resume)?;
    let engine = Engine::start(EngineConfig {
        reactor_threads: reactors,
        webpki_roots: false,
        extra_roots_der: vec![mock.ca_der.clone()],
        ..EngineConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let addrs = if tls { &mock.tls } else { &mock.plain };
    let security = if tls {
        Security::Tls
    } else {
        Security::DangerousPlain
    };
    // Warm-up: one session, so the first full handshake (and with resumption, the first
    // tickets) is not part of the count, as on a proxy that has been running a while.
    let _ = engine
        .watch(spec(0, addrs[0], security))
        .map_err(|e| e.to_string())?;
    match engine.events().recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Ready { .. }) => {}
        other => return Err(format!("warm-up session: {other:?}")),
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut started_at: Vec<Option<Instant>> = vec![None; n + 2];
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let (cpu0, mock_cpu0) = (proc::cpu_self(), proc::cpu_pid(mock.pid()));
    let t0 = Instant::now();
    for i in 0..n {
        let id = engine
            .watch(spec(i + 1, addrs[i % addrs.len()], security))
            .map_err(|e| e.to_string())?;
        if let Some(slot) = started_at.get_mut(id.as_u64() as usize) {
            *slot = Some(Instant::now());
        }
    }
    let watch_s = t0.elapsed().as_secs_f64();
    let (mut ready, mut failed, mut first_failure) = (0usize, 0usize, String::new());
    let deadline = t0 + CASE_TIMEOUT;
    let mut progress = Progress::new("setup: sessions ready", n, Instant::now());
    while ready + failed < n && Instant::now() < deadline {
        progress.tick(ready + failed);
        match engine.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Ready { id, .. }) => {
                ready += 1;
                if let Some(Some(t)) = started_at.get(id.as_u64() as usize) {
                    let _ = latency.record(t.elapsed().as_micros() as u64);
                }
            }
            Ok(Event::Failed { reason, .. } | Event::SessionLost { reason, .. }) => {
                if failed == 0 {
                    first_failure = reason.to_string();
                }
                failed += 1;
            }
            _ => {}
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (proc::cpu_self() - cpu0).as_secs_f64();
    let mock_cpu = (proc::cpu_pid(mock.pid()) - mock_cpu0).as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1e3;
    Ok(json!({
        "security": if tls { "tls" } else { "plain" },
        "reactor_threads": reactors,
        "handshake": if !tls { "-" } else if resume { "resumed" } else { "full" },
        "n": n,
        "ready": ready,
        "failed": failed,
        "first_failure": first_failure,
        "watch_calls_s": watch_s,
        "elapsed_s": elapsed,
        "setups_per_s": ready as f64 / elapsed,
        "proxy_cpu_s": cpu,
        "proxy_cpu_us_per_setup": cpu * 1e6 / ready.max(1) as f64,
        "proxy_cpu_pct_of_core": cpu / elapsed * 100.0,
        "mock_cpu_s": mock_cpu,
        "mock_cpu_pct": mock_cpu / elapsed * 100.0,
        "mock_cpu_us_per_setup": mock_cpu * 1e6 / ready.max(1) as f64,
        "latency_p50_ms": ms(0.5),
        "latency_p99_ms": ms(0.99),
        "latency_max_ms": latency.max() as f64 / 1e3,
    }))
}

fn spec(i: usize, addr: std::net::SocketAddr, security: Security) -> WatchSpec {
    WatchSpec {
        host: addr.ip().to_string(),
        port: addr.port(),
        security,
        username: format!("user{i}"),
        secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}
