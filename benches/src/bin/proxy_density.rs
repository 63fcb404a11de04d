//! proxy_density: memory of the whole proxy per idle subscription.
//!
//! ```sh
//! cargo run --release -p benches --bin proxy_density
//! # options: --max 4000 (steps of max/4) --settle-secs 5 --imap mock|dovecot
//! ```
//!
//! Runs `imap-push-proxy serve` twice, once with `tls_compact = true` (the default) and
//! once with `tls_compact = false`, each against its own `mock-imapd` (implicit TLS, a
//! generated RSA chain) and `push-sink`. With `--imap dovecot` the IMAP server is a real
//! Dovecot instead (OpenSSL, its own CA and server certificate, one user per subscription,
//! started on loopback by `testkit` as the tests start it): the same figure against a
//! server that is not ours. Subscriptions are registered through the REST API
//! by `tools/loadgen` in four steps (1k, 2k, 3k, 4k by default), each with a new-mail
//! endpoint carrying Web Push keys (aes128gcm) and a reconnect endpoint on the sink. After
//! each step, once every session is idle (the proxy's own metrics) and a settle time has
//! passed, the proxy's `VmRSS` is read from `/proc/PID/status`.
//!
//! The figure is the least-squares slope of RSS over the subscription count: fixed costs
//! (threads, pools, the journal's buffers) drop out, and what is left is everything the
//! proxy keeps per subscription: the engine's session and TLS state, the server's
//! registry, the core's maps and the journal's caches. Kernel memory is not in it (see the
//! `density` bench for the kernel's share).
//!
//! # What it never does
//!
//! - **No stray processes**: every child is held by a guard that kills it by PID.
//! - **No unbounded waits**: every step has a deadline ([`STEP_TIMEOUT`]).

use std::path::Path;
use std::time::{Duration, Instant};

use benches::e2e::{self, Mock, Proxy, Sink};
use benches::proc;
use serde_json::{json, Value};
use testkit::{Dovecot, DovecotConfig};

/// The issue's whole-proxy target: RSS slope per subscription.
const TARGET_BYTES_PER_SUBSCRIPTION: f64 = 2_048.0;
/// Subscriptions at the last step unless `--max` says otherwise (the issue's range).
const MAX_DEFAULT: usize = 4_000;
/// Steps: `max / STEPS`, `2 * max / STEPS`, ... `max`.
const STEPS: usize = 4;
/// Most subscriptions this bench registers: one mock process holds the server ends.
const MAX_LIMIT: usize = 19_000;
/// Time for one step's registrations to complete and its sessions to idle.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Quiet time after the sessions idle and before RSS is read (late session tickets, the
/// reactors' heap trim after the last handshake, the journal's flush).
const SETTLE_DEFAULT: Duration = Duration::from_secs(5);
/// Concurrent API connections of loadgen: under httpd's per-client cap (64,
/// `httpd::limits::CONNECTIONS_PER_CLIENT_MAX`), so that a connection loadgen opens again
/// while the proxy has not yet counted the old one closed is never refused (a `503` that
/// once failed a run on a busy machine).
const CONCURRENCY: usize = 48;

struct Options {
    max: usize,
    settle: Duration,
    /// Only `tls_compact = true` (a quick look; the figures come from full runs).
    compact_only: bool,
    imap: Imap,
}

/// The IMAP server the subscriptions log in to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imap {
    /// `mock-imapd` (ours; holds up to [`MAX_LIMIT`] sessions in one process).
    Mock,
    /// A real Dovecot with one user per subscription (an IMAP process each).
    Dovecot,
}

impl Imap {
    fn name(self) -> &'static str {
        match self {
            Imap::Mock => "mock-imapd",
            Imap::Dovecot => "dovecot",
        }
    }
}

/// Dovecot users for `--imap dovecot` are `u0`, `u1`, ... with this password: loadgen's
/// defaults (`--user-prefix u`, `--password x`).
const DOVECOT_USER_PREFIX: &str = "u";
const DOVECOT_PASSWORD: &str = "x";
/// Most subscriptions against Dovecot: an IMAP process per session (a few MiB each).
const DOVECOT_MAX_LIMIT: usize = 4_000;
/// Dovecot is sized for this many connections beyond the subscriptions (its process and
/// client limits): room for login processes still closing, never a limit the bench meets.
const DOVECOT_CONNECTION_HEADROOM: usize = 400;

fn options() -> Result<Options, String> {
    let mut o = Options {
        max: MAX_DEFAULT,
        settle: SETTLE_DEFAULT,
        compact_only: false,
        imap: Imap::Mock,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--compact-only" {
            o.compact_only = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--max" => o.max = value.parse().map_err(|_| bad())?,
            "--settle-secs" => o.settle = Duration::from_secs(value.parse().map_err(|_| bad())?),
            "--imap" => {
                o.imap = match value.as_str() {
                    "mock" => Imap::Mock,
                    "dovecot" => Imap::Dovecot,
                    _ => return Err(bad()),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let limit = match o.imap {
        Imap::Mock => MAX_LIMIT,
        Imap::Dovecot => DOVECOT_MAX_LIMIT,
    };
    if o.max < STEPS || o.max > limit {
        return Err(format!(
            "--max must be {STEPS}..={limit} with --imap {}",
            o.imap.name()
        ));
    }
    Ok(o)
}

fn main() {
    let fail = |e: String| -> ! {
        eprintln!("proxy_density: {e}");
        std::process::exit(1);
    };
    let o = options().unwrap_or_else(|e| fail(e));
    e2e::build_tools().unwrap_or_else(|e| fail(e));
    let _lock = proc::bench_lock(Duration::from_secs(1800));
    let busy = proc::wait_for_quiet(Duration::from_secs(30));
    if !busy.is_empty() {
        eprintln!(
            "proxy_density: measuring on a busy machine: {}",
            busy.join("; ")
        );
    }
    let steps: Vec<usize> = (1..=STEPS).map(|k| o.max * k / STEPS).collect();
    let mut runs = Vec::new();
    for compact in [true, false] {
        if compact || !o.compact_only {
            runs.push(run(compact, &steps, o.settle, o.imap).unwrap_or_else(|e| fail(e)));
        } else {
            runs.push(Value::Null);
        }
    }
    print_table(&steps, &runs[0], &runs[1], o.imap);
    let report = json!({
        "imap": o.imap.name(),
        "steps": steps,
        "settle_s": o.settle.as_secs(),
        "target_bytes_per_subscription": TARGET_BYTES_PER_SUBSCRIPTION,
        "compact": runs[0],
        "rustls": runs[1],
        "ratio_rustls_to_compact": f(&runs[1], "rss_slope") / f(&runs[0], "rss_slope"),
        "machine": e2e::machine(),
        "busy_processes_at_start": busy,
    });
    let path = e2e::write_json("proxy_density", &report);
    println!("wrote {}", path.display());
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// One proxy (`tls_compact` as given) taken through every step.
fn run(compact: bool, steps: &[usize], settle: Duration, imap: Imap) -> Result<Value, String> {
    let name = if compact { "compact" } else { "rustls" };
    let dir = e2e::target_dir()
        .join("bench")
        .join(format!("proxy-density-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(&dir, compact, steps, settle, imap);
    let _ = std::fs::remove_dir_all(dir.join("data"));
    result
}

/// The IMAP server of one run: where to log in, its CA, and its own memory to report.
enum Server {
    Mock(Mock),
    Dovecot(Dovecot),
}

impl Server {
    fn start(dir: &Path, imap: Imap, max: usize) -> Result<(Server, std::path::PathBuf), String> {
        match imap {
            Imap::Mock => {
                let mock = Mock::start(dir)?;
                let ca = mock.ca_file.clone();
                Ok((Server::Mock(mock), ca))
            }
            Imap::Dovecot => {
                let users =
                    (0..max).map(|i| (format!("{DOVECOT_USER_PREFIX}{i}"), DOVECOT_PASSWORD));
                let max_connections =
                    u32::try_from(max + DOVECOT_CONNECTION_HEADROOM).map_err(|e| e.to_string())?;
                let dovecot = Dovecot::start(
                    DovecotConfig::default()
                        .with_users(users)
                        .max_connections(max_connections),
                )
                .map_err(|e| format!("dovecot: {e}"))?;
                let ca = dir.join("dovecot-ca.pem");
                std::fs::write(&ca, dovecot.ca_pem()).map_err(|e| e.to_string())?;
                Ok((Server::Dovecot(dovecot), ca))
            }
        }
    }

    fn tls_port(&self) -> u16 {
        match self {
            Server::Mock(mock) => mock.tls.port(),
            Server::Dovecot(dovecot) => dovecot.imaps_port(),
        }
    }

    /// RSS of the server's process (Dovecot's master only: its sessions are other processes).
    fn rss(&self) -> u64 {
        let pid = match self {
            Server::Mock(mock) => mock.proc.pid(),
            Server::Dovecot(dovecot) => dovecot.pid(),
        };
        proc::mem(Some(pid)).rss
    }
}

fn run_in(
    dir: &Path,
    compact: bool,
    steps: &[usize],
    settle: Duration,
    imap: Imap,
) -> Result<Value, String> {
    let (server, ca_file) = Server::start(dir, imap, steps.last().copied().unwrap_or(0))?;
    let sink = Sink::start(dir, &[])?;
    let proxy = Proxy::start(dir, &ca_file, &format!("tls_compact = {compact}"))?;
    let pid = proxy.proc.pid();
    std::thread::sleep(settle);
    let base = proc::mem(Some(pid));
    eprintln!(
        "proxy_density: tls_compact = {compact}: {:.1} MiB before any subscription",
        base.rss as f64 / 1048576.0
    );
    // loadgen draws the Web Push keys on its first run and reads them back after.
    let keys = dir.join("webpush-keys");
    let mut readings = Vec::new();
    let mut registered = 0;
    for &step in steps {
        let t = Instant::now();
        register(
            dir,
            &proxy,
            server.tls_port(),
            &sink,
            &keys,
            registered,
            step - registered,
        )?;
        registered = step;
        wait_idle(&proxy, step, t + STEP_TIMEOUT)?;
        let setup_s = t.elapsed().as_secs_f64();
        std::thread::sleep(settle);
        let m = proc::mem(Some(pid));
        let metrics = proxy.metrics();
        let idle = e2e::live_sessions(&metrics);
        eprintln!(
            "proxy_density: tls_compact = {compact}: {step} subscriptions ({idle} idle) in {setup_s:.1} s, RSS {:.1} MiB, live heap {:.1} MiB",
            m.rss as f64 / 1048576.0,
            e2e::metric(&metrics, "imap_push_heap_live_bytes") / 1048576.0
        );
        if idle != step {
            return Err(format!("{idle} sessions idle after settling, want {step}"));
        }
        readings.push(json!({
            "n": step,
            "rss": m.rss,
            "heap_live": e2e::metric(&metrics, "imap_push_heap_live_bytes"),
            "private_dirty": m.private_dirty,
            "anonymous": m.anonymous,
            "server_rss": server.rss(),
            "setup_s": setup_s,
            "fds": proxy.fds(),
            "largest_mappings": largest_mappings(pid),
        }));
    }
    let fit = |key: &str| {
        let pts: Vec<(f64, f64)> = readings.iter().map(|r| (f(r, "n"), f(r, key))).collect();
        proc::linear_fit(&pts)
    };
    let (rss_slope, rss_intercept, rss_r2) = fit("rss");
    let (dirty_slope, _, _) = fit("private_dirty");
    let (heap_slope, _, _) = fit("heap_live");
    let pairwise: Vec<f64> = readings
        .windows(2)
        .map(|w| (f(&w[1], "rss") - f(&w[0], "rss")) / (f(&w[1], "n") - f(&w[0], "n")))
        .collect();
    Ok(json!({
        "tls_compact": compact,
        "rss_before": base.rss,
        "steps": readings,
        "rss_slope": rss_slope,
        "rss_intercept": rss_intercept,
        "rss_r2": rss_r2,
        "rss_slope_pairwise": pairwise,
        "private_dirty_slope": dirty_slope,
        "heap_live_slope": heap_slope,
        "within_target": rss_slope <= TARGET_BYTES_PER_SUBSCRIPTION,
    }))
}

/// The proxy's mappings with the most resident memory, as `[start-end, kB]`: the main heap,
/// the threads' malloc arenas and large allocations show apart, so a step's growth can be
/// traced to the thread that allocated it.
fn largest_mappings(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kb = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            if let (Some(kb), Some(last)) = (kb, maps.last_mut()) {
                last.1 = kb;
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
        {
            let mut words = line.split_whitespace();
            let range = words.next().unwrap_or("");
            let name = words.nth(4).unwrap_or("[anon]");
            maps.push((format!("{range} {name}"), 0));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.1));
    json!(maps.into_iter().take(8).collect::<Vec<_>>())
}

/// Registers accounts `start..start + count` through the API (loadgen).
fn register(
    dir: &Path,
    proxy: &Proxy,
    imap_port: u16,
    sink: &Sink,
    keys: &Path,
    start: usize,
    count: usize,
) -> Result<(), String> {
    let args: Vec<String> = [
        "--api",
        &format!("http://{}", proxy.api),
        "--imap-host",
        "127.0.0.1",
        "--imap-port",
        &imap_port.to_string(),
        "--security",
        "tls",
        "--start",
        &start.to_string(),
        "--count",
        &count.to_string(),
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--sink",
        &sink.url(),
        "--webpush-keys",
        &keys.display().to_string(),
        "--timeout-secs",
        &STEP_TIMEOUT.as_secs().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let result = e2e::loadgen(dir, &args)?;
    let created = result["created"].as_u64().unwrap_or(0) as usize;
    if created != count {
        return Err(format!(
            "registration: {created} of {count} created: {result}"
        ));
    }
    Ok(())
}

/// Waits until the proxy reports `want` sessions idle (or polling), or `deadline`.
fn wait_idle(proxy: &Proxy, want: usize, deadline: Instant) -> Result<(), String> {
    loop {
        let live = e2e::live_sessions(&proxy.metrics());
        if live >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{live} of {want} sessions idle at the deadline"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The table: RSS at each step for both paths side by side, then slope, r² and ratio.
fn print_table(steps: &[usize], compact: &Value, rustls: &Value, imap: Imap) {
    let mib = |v: &Value, i: usize| f(&v["steps"][i], "rss") / 1048576.0;
    println!();
    println!(
        "Whole proxy: RSS of `imap-push-proxy serve` per idle subscription (TLS IMAP to {}, Web Push keys)",
        imap.name()
    );
    println!();
    println!("| subscriptions | RSS MiB, tls_compact = true | RSS MiB, tls_compact = false |");
    println!("|---|---|---|");
    for (i, n) in steps.iter().enumerate() {
        println!("| {n} | {:.1} | {:.1} |", mib(compact, i), mib(rustls, i));
    }
    let slope_c = f(compact, "rss_slope");
    let slope_r = f(rustls, "rss_slope");
    println!("| **slope B/subscription** | **{slope_c:.0}** | {slope_r:.0} |");
    println!(
        "| r² | {:.4} | {:.4} |",
        f(compact, "rss_r2"),
        f(rustls, "rss_r2")
    );
    let pair = |v: &Value| {
        v["rss_slope_pairwise"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{:.0}", x.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default()
    };
    println!("| step by step B | {} | {} |", pair(compact), pair(rustls));
    println!(
        "| live heap slope B | {:.0} | {:.0} |",
        f(compact, "heap_live_slope"),
        f(rustls, "heap_live_slope")
    );
    println!();
    println!(
        "target <= {TARGET_BYTES_PER_SUBSCRIPTION:.0} B per subscription (tls_compact = true): {}; rustls / compact = {:.2}",
        if slope_c <= TARGET_BYTES_PER_SUBSCRIPTION { "ok" } else { "MISSED" },
        slope_r / slope_c
    );
}
