//! Keepalive storm: every session gets `* OK Still here` in one pass of the mock server
//! (Dovecot times keepalives by client IP, so all of a proxy's sessions hear them in the
//! same second), while real EXISTS events are injected.
//!
//! ```sh
//! cargo run --release -p benches --bin storm
//! # options: --sessions 17800 --security tls|plain
//! ```
//!
//! Measured:
//! - the mock's write pass (`still-here all` answered);
//! - drain, in a first storm with nothing else going on: from the storm's start until the
//!   proxy's threads have spent 99% of the CPU the storm cost them (per-thread `schedstat`,
//!   sampled every millisecond, less the idle rate measured for a second before);
//! - in a second storm 1.5 s later, the latency (EXISTS write to push arrival) of probe
//!   events injected 0, 1, 2, 5, 10, 20, 50, 100, 200 and 500 ms after its start, each on
//!   its own session, against the same probes sent with no storm.
//!
//! Prints a table and writes `target/bench/storm.json`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::e2e::{self, Options, Setup};

const PROBE_OFFSETS_MS: [u64; 10] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500];

/// Probe latencies (ms) for (account, write ns) pairs.
fn probe(setup: &mut Setup, writes: &[(usize, u64)]) -> Vec<f64> {
    let accounts: Vec<usize> = writes.iter().map(|w| w.0).collect();
    let got = setup.tail.collect(&accounts, Duration::from_secs(10));
    writes
        .iter()
        .map(|(a, ns)| {
            got.first
                .get(a)
                .map_or(f64::NAN, |at| at.saturating_sub(*ns) as f64 / 1e6)
        })
        .collect()
}

/// Sends the probes at their offsets from `start` on sessions `first..`.
fn send_probes(
    control: &mut e2e::Control,
    start: Instant,
    first: usize,
) -> Result<Vec<(usize, u64)>, String> {
    let mut writes = Vec::new();
    for (k, off) in PROBE_OFFSETS_MS.iter().enumerate() {
        let due = start + Duration::from_millis(*off);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let account = first + k;
        let (_, ns) = control.exists_stamped(&[Setup::name(account)])?[0];
        writes.push((account, ns));
    }
    Ok(writes)
}

/// (unix ns, proxy CPU ns) every millisecond while `stop` is false (bounded to 10 s).
fn sample_cpu(pid: u32, stop: &AtomicBool) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(10_000);
    let end = Instant::now() + Duration::from_secs(10);
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        out.push((e2e::unix_ns(), e2e::cpu_ns(pid)));
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

/// Drain time: when the storm's CPU (less the idle rate) reached 99% of its total.
fn drain_ms(samples: &[(u64, u64)], start_ns: u64, idle_rate: f64) -> (f64, f64) {
    let Some(base) = samples
        .iter()
        .rev()
        .find(|s| s.0 <= start_ns)
        .or(samples.first())
    else {
        return (f64::NAN, f64::NAN);
    };
    let excess = |s: &(u64, u64)| {
        s.1.saturating_sub(base.1) as f64 - idle_rate * s.0.saturating_sub(base.0) as f64
    };
    let total = samples.iter().map(excess).fold(0.0, f64::max);
    let end = samples
        .iter()
        .find(|s| s.0 >= base.0 && excess(s) >= 0.99 * total)
        .map_or(f64::NAN, |s| s.0.saturating_sub(start_ns) as f64 / 1e6);
    (end, total / 1e6)
}

fn run(o: &Options) -> Result<serde_json::Value, String> {
    let mut setup = Setup::start("storm", o, &[], "", None)?;
    let pid = setup.proxy.proc.pid();
    let mut control = setup.mock.connect()?;
    // Warm the sender's connections, then wait out their coalescing window.
    let warm: Vec<String> = (o.sessions - 50..o.sessions).map(Setup::name).collect();
    control.exists_stamped(&warm)?;
    let warm_ids: Vec<usize> = (o.sessions - 50..o.sessions).collect();
    setup.tail.collect(&warm_ids, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));

    // Baseline: the same probes, no storm; and the proxy's idle CPU rate.
    let calm_writes = send_probes(&mut control, Instant::now(), 0)?;
    let calm = probe(&mut setup, &calm_writes);
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (e2e::unix_ns(), e2e::cpu_ns(pid));
    std::thread::sleep(Duration::from_secs(1));
    let idle_rate = (e2e::cpu_ns(pid) - c0) as f64 / (e2e::unix_ns() - t0) as f64;
    let turns0 = setup.proxy.metric("imap_push_reactor_loop_turns_total");

    // Storm 1, alone, with a CPU sampler: the mock's pass and the proxy's drain.
    let stop = AtomicBool::new(false);
    let (storm_ns, pass_ms, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_cpu(pid, &stop));
        std::thread::sleep(Duration::from_millis(20));
        let storm_ns = e2e::unix_ns();
        let start = Instant::now();
        let answer = control.cmd("still-here all");
        let pass = start.elapsed();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        let samples = sampler.join().unwrap_or_default();
        (storm_ns, answer.map(|_| pass.as_secs_f64() * 1e3), samples)
    });
    let pass_ms = pass_ms?;
    let (drain, cpu_ms) = drain_ms(&samples, storm_ns, idle_rate);
    let turns = setup.proxy.metric("imap_push_reactor_loop_turns_total") - turns0;

    // Storm 2, with probes on their own control connection.
    let mut probe_control = setup.mock.connect()?;
    let storm_writes = std::thread::scope(|scope| {
        let start = Instant::now();
        let storm = scope.spawn(move || control.cmd("still-here all"));
        let writes = send_probes(&mut probe_control, start, PROBE_OFFSETS_MS.len());
        storm
            .join()
            .unwrap_or(Err("storm thread".into()))
            .and(writes)
    })?;
    let stormy = probe(&mut setup, &storm_writes);
    let lost = setup.proxy.metric("imap_push_sessions_lost_total");
    let idle = setup.proxy.metric("imap_push_sessions{state=\"idle\"}");

    println!(
        "\nstorm: `* OK Still here` to all {} sessions ({}) in one pass\n",
        o.sessions, o.security
    );
    println!("| mock write pass ms | proxy drain ms | proxy CPU ms | CPU per session us | reactor loop turns | sessions lost | idle after |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {pass_ms:.1} | {drain:.1} | {cpu_ms:.1} | {:.2} | {turns:.0} | {lost:.0} | {idle:.0} |",
        cpu_ms * 1000.0 / o.sessions as f64
    );
    println!("\nprobe EXISTS latency, ms (probe sent N ms after the storm started)\n");
    println!(
        "| probe at ms | {} |",
        PROBE_OFFSETS_MS.map(|m| m.to_string()).join(" | ")
    );
    println!("|---|{}", "---|".repeat(PROBE_OFFSETS_MS.len()));
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("| during storm | {} |", fmt(&stormy));
    println!("| no storm | {} |", fmt(&calm));
    Ok(serde_json::json!({
        "bench": "storm",
        "sessions": o.sessions,
        "security": o.security,
        "machine": e2e::machine(),
        "registration": setup.registration,
        "mock_write_pass_ms": pass_ms,
        "proxy_drain_ms": drain,
        "proxy_storm_cpu_ms": cpu_ms,
        "proxy_idle_cpu_fraction": idle_rate,
        "reactor_loop_turns": turns,
        "sessions_lost_total": lost,
        "sessions_idle_after": idle,
        "probe_offsets_ms": PROBE_OFFSETS_MS,
        "probe_latency_ms_storm": stormy,
        "probe_latency_ms_calm": calm,
    }))
}

fn main() {
    e2e::bench_main(
        "storm",
        e2e::PROXY_SESSIONS_DEFAULT,
        e2e::Quiet::Needed,
        run,
    );
}
