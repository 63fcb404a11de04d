//! Latency from the mock IMAP server writing `* N EXISTS` to the push arriving at the
//! sink, over `--sessions` (default 19,000) idle sessions: single events at a steady rate,
//! and one burst to every session at once.
//!
//! ```sh
//! cargo run --release -p benches --bin latency
//! # options: --sessions 17800 --security tls|plain --rate 200 --secs 10
//! ```
//!
//! Three processes besides this one share the two cores: the proxy, `mock-imapd` and
//! `push-sink`. Latency is the sink's arrival time minus the mock's `timestamps` entry for
//! that session's EXISTS write (both `CLOCK_REALTIME`). Every new-mail endpoint is
//! `http://SINK/n/I` without keys (clear JSON).
//!
//! Phases, each on sessions that had no push for over a second (the proxy's coalescing
//! window merges a second event of one subscription within it):
//! 1. sweep: one event per session, in order (this also maps the mock's session indices to
//!    account names for the burst, and warms the sender's connection pool);
//! 2. steady: `--rate` events per second for `--secs` seconds, distinct random sessions;
//! 3. burst: `exists all`.
//!
//! Prints a table and writes `target/bench/latency.json`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use benches::e2e::{self, Options, Setup};
use hdrhistogram::Histogram;

/// Latencies for the (mock index or account) -> write ns pairs, against arrivals.
fn latencies(writes: &[(usize, u64)], arrivals: &HashMap<usize, u64>) -> (Histogram<u64>, usize) {
    let mut h = e2e::histogram_us();
    let mut missing = 0;
    for (account, written) in writes {
        match arrivals.get(account) {
            Some(&at) => {
                let _ = h.record((at.saturating_sub(*written) / 1000).max(1));
            }
            None => missing += 1,
        }
    }
    (h, missing)
}

/// A small deterministic shuffle (xorshift), so runs pick the same sessions.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn sweep(setup: &mut Setup) -> Result<(serde_json::Value, HashMap<usize, usize>), String> {
    let mut control = setup.mock.connect()?;
    let n = setup.sessions;
    let mut writes = Vec::with_capacity(n);
    let mut index_to_account = HashMap::with_capacity(n);
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let names: Vec<String> = chunk.iter().map(|&i| Setup::name(i)).collect();
        for (&account, (index, ns)) in chunk.iter().zip(control.exists_stamped(&names)?) {
            index_to_account.insert(index, account);
            writes.push((account, ns));
        }
        // About 5,000 events per second: fast, but not a burst.
        std::thread::sleep(Duration::from_millis(20));
    }
    let all: Vec<usize> = (0..n).collect();
    let got = setup.tail.collect(&all, Duration::from_secs(60));
    let (h, missing) = latencies(&writes, &got.first);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut s = e2e::summary_ms(&h);
    s["missing"] = missing.into();
    s["events_per_s"] = rate.into();
    Ok((s, index_to_account))
}

fn steady(setup: &mut Setup, rate: f64, secs: f64) -> Result<serde_json::Value, String> {
    let mut control = setup.mock.connect()?;
    let events = ((rate * secs) as usize).min(setup.sessions);
    let pick = shuffled(setup.sessions, 0x5eed_1a7e);
    let cpu0 = e2e::cpu_ns(setup.proxy.proc.pid());
    let started = Instant::now();
    let mut writes = Vec::with_capacity(events);
    for (k, &account) in pick.iter().take(events).enumerate() {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (_, ns) = control.exists_stamped(&[Setup::name(account)])?[0];
        writes.push((account, ns));
    }
    let accounts: Vec<usize> = writes.iter().map(|w| w.0).collect();
    let got = setup.tail.collect(&accounts, Duration::from_secs(10));
    let cpu = e2e::cpu_ns(setup.proxy.proc.pid()) - cpu0;
    let (h, missing) = latencies(&writes, &got.first);
    let mut s = e2e::summary_ms(&h);
    s["missing"] = missing.into();
    s["events_per_s"] = rate.into();
    s["proxy_cpu_per_event_us"] = (cpu as f64 / 1000.0 / events.max(1) as f64).into();
    Ok(s)
}

fn burst(
    setup: &mut Setup,
    index_to_account: &HashMap<usize, usize>,
) -> Result<serde_json::Value, String> {
    let mut control = setup.mock.connect()?;
    let cpu0 = e2e::cpu_ns(setup.proxy.proc.pid());
    control.cmd("exists all")?;
    let stamps = e2e::parse_timestamps(&control.cmd("timestamps")?);
    let writes: Vec<(usize, u64)> = stamps
        .iter()
        .filter_map(|(index, ns)| Some((*index_to_account.get(index)?, *ns)))
        .collect();
    let unmapped = stamps.len() - writes.len();
    let accounts: Vec<usize> = writes.iter().map(|w| w.0).collect();
    let got = setup.tail.collect(&accounts, Duration::from_secs(60));
    let cpu = e2e::cpu_ns(setup.proxy.proc.pid()) - cpu0;
    let (h, missing) = latencies(&writes, &got.first);
    let first_write = writes.iter().map(|w| w.1).min().unwrap_or(0);
    let last_write = writes.iter().map(|w| w.1).max().unwrap_or(0);
    let last_arrival = got.first.values().copied().max().unwrap_or(0);
    let mut s = e2e::summary_ms(&h);
    s["missing"] = (missing + unmapped).into();
    s["mock_write_pass_ms"] = ((last_write - first_write) as f64 / 1e6).into();
    s["all_pushed_ms"] = (last_arrival.saturating_sub(first_write) as f64 / 1e6).into();
    s["pushes_per_s"] = (got.first.len() as f64
        / (last_arrival.saturating_sub(first_write) as f64 / 1e9).max(1e-9))
    .into();
    s["proxy_cpu_ms"] = (cpu as f64 / 1e6).into();
    Ok(s)
}

fn row(name: &str, s: &serde_json::Value) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        s["count"],
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("p999_ms"),
        f("max_ms"),
        s["missing"]
    )
}

fn run(o: &Options) -> Result<serde_json::Value, String> {
    let rate = o.num("rate", 200.0);
    let secs = o.num("secs", 10.0);
    let mut setup = Setup::start("latency", o, &[], "", None)?;
    let fds = setup.proxy.fds();
    eprintln!("bench: sweep");
    let (sweep, index_to_account) = sweep(&mut setup)?;
    std::thread::sleep(Duration::from_millis(1500));
    eprintln!("bench: steady {rate}/s for {secs} s");
    let steady = steady(&mut setup, rate, secs)?;
    std::thread::sleep(Duration::from_millis(1500));
    eprintln!("bench: burst");
    let burst = burst(&mut setup, &index_to_account)?;
    let metrics = setup.proxy.metrics();
    let proxy_summary: serde_json::Value = ["0.5", "0.99", "0.999"]
        .iter()
        .map(|q| {
            let key = format!("imap_push_delivery_latency_seconds{{quantile=\"{q}\"}}");
            (
                q.to_string(),
                serde_json::Value::from(e2e::metric(&metrics, &key) * 1000.0),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    println!(
        "\nlatency: mock EXISTS write -> push at the sink, {} sessions ({}), ms\n",
        o.sessions, o.security
    );
    println!("| phase | pushes | p50 | p90 | p99 | p99.9 | max | missing |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "{}",
        row(
            &format!(
                "sweep, {:.0}/s in order",
                sweep["events_per_s"].as_f64().unwrap_or(0.0)
            ),
            &sweep
        )
    );
    println!("{}", row(&format!("steady, {rate:.0}/s random"), &steady));
    println!("{}", row("burst, `exists all`", &burst));
    println!(
        "\nburst: all {} pushed {:.1} ms after the first EXISTS write (mock write pass {:.1} ms; {:.0} pushes/s; proxy CPU {:.0} ms). target: p99 <= 2 ms steady, burst <= 1000 ms",
        burst["count"],
        burst["all_pushed_ms"].as_f64().unwrap_or(0.0),
        burst["mock_write_pass_ms"].as_f64().unwrap_or(0.0),
        burst["pushes_per_s"].as_f64().unwrap_or(0.0),
        burst["proxy_cpu_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "setup: {} registrations in {:.1} s ({:.0}/s), proxy fds {fds}",
        setup.registration["created"],
        setup.registration["elapsed_s"].as_f64().unwrap_or(0.0),
        setup.registration["registrations_per_s"]
            .as_f64()
            .unwrap_or(0.0)
    );
    Ok(serde_json::json!({
        "bench": "latency",
        "sessions": o.sessions,
        "security": o.security,
        "machine": e2e::machine(),
        "registration": setup.registration,
        "proxy_fds": fds,
        "sweep": sweep,
        "steady": steady,
        "burst": burst,
        "proxy_metrics_event_to_push_ms": proxy_summary,
        "targets": {"steady_p99_ms": 2.0, "burst_all_pushed_ms": 1000.0},
    }))
}

fn main() {
    e2e::bench_main(
        "latency",
        e2e::PROXY_SESSIONS_DEFAULT,
        e2e::Quiet::Needed,
        run,
    );
}
