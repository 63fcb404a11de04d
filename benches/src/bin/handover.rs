//! In-place upgrade (SIGUSR2) of a proxy holding many sessions: how long the API is away
//! and what the new process costs.
//!
//! ```sh
//! cargo run --release -p benches --bin handover
//! # options: --sessions 17800 --security tls|plain --rounds 3
//! ```
//!
//! Measured per round: the handover as the old process logs it (export, push drain,
//! journal flush: `handover_ms`), the time from the signal until `/healthz` answers from
//! the new process (its "resumed" log line is there), the RSS before and after (the new
//! process, right after adoption and 2 s later), the sessions the new process reports
//! ready, and then EXISTS on 200 sessions: every one gives its push and no app gets a
//! reconnect push. The PID must stay the same.
//!
//! Prints a table and writes `target/bench/handover.json`.

use std::time::{Duration, Instant};

use benches::e2e::{self, Options, Quiet, Setup};

/// Sessions probed with new mail after each upgrade.
const PROBES: usize = 200;
const RESUMED: &str = "upgrade: resumed the sessions handed over";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `key=N` value of the last line holding `needle` in `log`.
fn logged(log: &str, needle: &str, key: &str) -> f64 {
    log.lines()
        .rev()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split(&format!("{key}=")).nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(f64::NAN)
}

struct Round {
    handover_ms: f64,
    healthz_ms: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    rss_settled_mib: f64,
    adopted: f64,
    ready_after: usize,
    probes_arrived: usize,
    reconnects: usize,
}

fn round(setup: &mut Setup, n: usize, first_probe: usize) -> Result<Round, String> {
    let pid = setup.proxy.proc.pid();
    let log_path = setup.dir.join("proxy.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let resumed_before = log().matches(RESUMED).count();
    let rss_before = rss_kib(pid);
    let signalled = Instant::now();
    // SAFETY: a signal to the proxy we started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
    loop {
        let up = log().matches(RESUMED).count() > resumed_before
            && e2e::http_get(setup.proxy.api, "/healthz").is_ok();
        if up {
            break;
        }
        if signalled.elapsed() > Duration::from_secs(60) {
            return Err(format!("round {n}: no new process in 60 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let healthz_ms = signalled.elapsed().as_secs_f64() * 1e3;
    let rss_after = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(2));
    let rss_settled = rss_kib(pid);
    let text = log();
    let ready_after = e2e::live_sessions(&setup.proxy.metrics());
    let mut control = setup.mock.connect()?;
    let probes: Vec<usize> = (first_probe..first_probe + PROBES).collect();
    let names: Vec<String> = probes.iter().map(|i| Setup::name(*i)).collect();
    control.exists_stamped(&names)?;
    let got = setup.tail.collect(&probes, Duration::from_secs(20));
    Ok(Round {
        handover_ms: logged(&text, "upgrade: executing the binary", "handover_ms"),
        healthz_ms,
        rss_before_mib: rss_before as f64 / 1024.0,
        rss_after_mib: rss_after as f64 / 1024.0,
        rss_settled_mib: rss_settled as f64 / 1024.0,
        adopted: logged(&text, RESUMED, "sessions_adopted"),
        ready_after,
        probes_arrived: got.first.len(),
        reconnects: got.reconnects,
    })
}

fn run(o: &Options) -> Result<serde_json::Value, String> {
    let mut setup = Setup::start("handover", o, &[], "", None)?;
    let pid = setup.proxy.proc.pid();
    // Settle: the registration burst's buffers given back, the sessions idle.
    std::thread::sleep(Duration::from_secs(3));
    let rounds = o.num("rounds", 3.0) as usize;
    println!(
        "\nhandover: SIGUSR2 with {} sessions ({}), same PID\n",
        o.sessions, o.security
    );
    println!("| round | handover ms | SIGUSR2 to /healthz ms | RSS before MiB | RSS new process MiB | after 2 s MiB | adopted | ready | probes | reconnect pushes |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut json_rounds = Vec::new();
    for n in 0..rounds {
        let r = round(&mut setup, n, n * PROBES)?;
        if setup.proxy.proc.pid() != pid || rss_kib(pid) == 0 {
            return Err("the proxy process is gone".into());
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {}/{PROBES} | {} |",
            n + 1,
            r.handover_ms,
            r.healthz_ms,
            r.rss_before_mib,
            r.rss_after_mib,
            r.rss_settled_mib,
            r.adopted,
            r.ready_after,
            r.probes_arrived,
            r.reconnects
        );
        json_rounds.push(serde_json::json!({
            "handover_ms": r.handover_ms,
            "signal_to_healthz_ms": r.healthz_ms,
            "rss_before_mib": r.rss_before_mib,
            "rss_new_process_mib": r.rss_after_mib,
            "rss_new_process_settled_mib": r.rss_settled_mib,
            "sessions_adopted": r.adopted,
            "sessions_ready_after": r.ready_after,
            "probes_arrived": r.probes_arrived,
            "reconnect_pushes": r.reconnects,
        }));
    }
    Ok(serde_json::json!({
        "sessions": o.sessions,
        "security": o.security,
        "rounds": json_rounds,
        "machine": e2e::machine(),
    }))
}

fn main() {
    e2e::bench_main("handover", e2e::PROXY_SESSIONS_DEFAULT, Quiet::Needed, run);
}
