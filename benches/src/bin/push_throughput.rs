//! Web Push throughput with RFC 8291 encryption and VAPID to a keep-alive `push-sink`.
//!
//! ```sh
//! cargo run --release -p benches --bin push_throughput
//! # options: --sessions 17800 --security tls|plain --secs 10
//! ```
//!
//! Two measurements:
//! 1. **Sender, in-process**: `push::Sender` (the proxy's client) with 1, 2 and 8 threads
//!    pushing for `--secs` seconds each, one `/n/T` endpoint with Web Push keys per thread.
//!    Pushes per second, and CPU per push from `getrusage` of this process (encryption,
//!    VAPID signature, HTTP) and from the sink's `schedstat`.
//! 2. **Through the proxy**: `--sessions` subscriptions with Web Push keys, then
//!    `exists all` twice (1.5 s apart): pushes per second from the first EXISTS write to the
//!    last arrival, and the proxy's CPU per push (IMAP read, event, encryption, HTTP).
//!
//! The sink decrypts every 50th body (every 20th through the proxy) with the subscriber's
//! private key and counts failures, so the bodies are checked without the sink's P-256
//! work dominating the two cores. Prints a table and writes
//! `target/bench/push_throughput.json`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use benches::e2e::{self, Options, Setup};
use push::{Kind, Notification, Outcome, PushTarget, Sender, SenderConfig, Topic};

/// Pushes from a single sender thread are capped here as well as by time.
const PUSHES_PER_THREAD_MAX: u64 = 500_000;

fn rusage_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// A user agent's keys: (p256dh, auth, private), base64url; and the sink's keys-file line.
fn subscriber_keys() -> (String, String, String) {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).expect("system RNG");
    loop {
        let mut scalar = [0u8; 32];
        rng.fill(&mut scalar).expect("system RNG");
        if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
            let public = secret.public_key().to_encoded_point(false);
            return (enc(public.as_bytes()), enc(&auth), enc(&scalar));
        }
    }
}

fn sender_run(
    sink: &e2e::Sink,
    sender: &Sender,
    keys: &(String, String, String),
    threads: usize,
    secs: f64,
) -> Result<serde_json::Value, String> {
    let delivered = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let sink_cpu0 = e2e::cpu_ns(sink.proc.pid());
    let cpu0 = rusage_cpu_ns();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (delivered, failed) = (&delivered, &failed);
            scope.spawn(move || {
                let Ok(target) = PushTarget::web_push(&format!("{}/n/{t}", sink.url()), &keys.0, &keys.1) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let id = format!("bench-{t}");
                let topic = Topic::for_subscription(&id);
                for n in 0..PUSHES_PER_THREAD_MAX {
                    if Instant::now() >= end {
                        return;
                    }
                    let payload = serde_json::json!({"type": "new_mail", "subscription": id, "mailbox": "INBOX", "exists": n}).to_string();
                    let note = Notification {
                        kind: Kind::NewMail,
                        payload_json: payload.as_bytes(),
                        topic: Some(&topic),
                        simple_push_version: 0,
                    };
                    let now_unix = e2e::unix_ns() / 1_000_000_000;
                    match sender.send(&target, &note, now_unix) {
                        Outcome::Delivered => delivered.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = rusage_cpu_ns() - cpu0;
    let sink_cpu = e2e::cpu_ns(sink.proc.pid()) - sink_cpu0;
    let n = delivered.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "threads": threads,
        "delivered": n,
        "failed": failed.load(Ordering::Relaxed),
        "seconds": wall,
        "pushes_per_s": n as f64 / wall,
        "sender_cpu_per_push_us": cpu as f64 / 1000.0 / n.max(1) as f64,
        "sink_cpu_per_push_us": sink_cpu as f64 / 1000.0 / n.max(1) as f64,
        "sender_cores_busy": cpu as f64 / 1e9 / wall,
    }))
}

fn in_process(o: &Options, secs: f64) -> Result<Vec<serde_json::Value>, String> {
    let dir = e2e::target_dir()
        .join("bench")
        .join(format!("push-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let keys = subscriber_keys();
    let keys_file = dir.join("keys");
    std::fs::write(&keys_file, format!("/n/ {} {}\n", keys.2, keys.1))
        .map_err(|e| e.to_string())?;
    let sink = e2e::Sink::start(
        &dir,
        &[
            "--decrypt-keys".into(),
            keys_file.display().to_string(),
            "--decrypt-every".into(),
            "50".into(),
        ],
    )?;
    let vapid = push::VapidKey::load_or_generate(&dir.join("vapid.pk8"))
        .map_err(|e| format!("vapid: {e:?}"))?;
    let sender = Sender::new(SenderConfig {
        use_env_proxy: false,
        ..SenderConfig::default()
    })
    .with_vapid(vapid, "mailto:bench@localhost");
    let mut rows = Vec::new();
    for threads in [1, 2, 8] {
        let _ = o;
        eprintln!("bench: sender, {threads} threads, {secs} s");
        let mut row = sender_run(&sink, &sender, &keys, threads, secs)?;
        row["sink"] = sink.stats();
        rows.push(row);
    }
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

fn through_proxy(o: &Options) -> Result<(Vec<serde_json::Value>, serde_json::Value), String> {
    let keys = subscriber_keys();
    let keys_file = e2e::target_dir()
        .join("bench")
        .join(format!("push-keys-{}", std::process::id()));
    std::fs::write(&keys_file, format!("/n/ {} {}\n", keys.2, keys.1))
        .map_err(|e| e.to_string())?;
    let sink_args = [
        "--decrypt-keys".into(),
        keys_file.display().to_string(),
        "--decrypt-every".into(),
        "20".into(),
    ];
    let setup = Setup::start("push-throughput", o, &sink_args, "", Some(&keys_file));
    let _ = std::fs::remove_file(&keys_file);
    let mut setup = setup?;
    let mut rows = Vec::new();
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        let mut control = setup.mock.connect()?;
        let cpu0 = e2e::cpu_ns(setup.proxy.proc.pid());
        let sink_cpu0 = e2e::cpu_ns(setup.sink.proc.pid());
        control.cmd("exists all")?;
        let stamps = e2e::parse_timestamps(&control.cmd("timestamps")?);
        let all: Vec<usize> = (0..o.sessions).collect();
        let got = setup.tail.collect(&all, Duration::from_secs(60));
        let cpu = e2e::cpu_ns(setup.proxy.proc.pid()) - cpu0;
        let sink_cpu = e2e::cpu_ns(setup.sink.proc.pid()) - sink_cpu0;
        let first_write = stamps.iter().map(|s| s.1).min().unwrap_or(0);
        let last = got.first.values().copied().max().unwrap_or(0);
        let secs = last.saturating_sub(first_write) as f64 / 1e9;
        let n = got.first.len();
        rows.push(serde_json::json!({
            "round": round + 1,
            "pushed": n,
            "missing": o.sessions - n,
            "seconds": secs,
            "pushes_per_s": n as f64 / secs.max(1e-9),
            "proxy_cpu_per_push_us": cpu as f64 / 1000.0 / n.max(1) as f64,
            "sink_cpu_per_push_us": sink_cpu as f64 / 1000.0 / n.max(1) as f64,
            "proxy_cores_busy": cpu as f64 / 1e9 / secs.max(1e-9),
        }));
    }
    let stats = setup.sink.stats();
    Ok((
        rows,
        serde_json::json!({"registration": setup.registration, "sink": stats}),
    ))
}

fn run(o: &Options) -> Result<serde_json::Value, String> {
    let secs = o.num("secs", 10.0);
    let sender_rows = in_process(o, secs)?;
    let (proxy_rows, proxy_extra) = through_proxy(o)?;
    println!("\npush throughput: Web Push, RFC 8291 aes128gcm + VAPID ES256, keep-alive HTTP/1.1 to push-sink\n");
    println!("| path | threads | pushes | pushes/s | CPU/push us (pusher) | CPU/push us (sink) | sink decrypted ok / failed |");
    println!("|---|---|---|---|---|---|---|");
    for r in &sender_rows {
        println!(
            "| push::Sender in-process | {} | {} | {:.0} | {:.1} | {:.1} | {} / {} |",
            r["threads"],
            r["delivered"],
            r["pushes_per_s"].as_f64().unwrap_or(0.0),
            r["sender_cpu_per_push_us"].as_f64().unwrap_or(0.0),
            r["sink_cpu_per_push_us"].as_f64().unwrap_or(0.0),
            r["sink"]["decrypted"],
            r["sink"]["undecryptable"],
        );
    }
    for r in &proxy_rows {
        println!(
            "| proxy, `exists all` round {} | 8 | {} | {:.0} | {:.1} | {:.1} | {} / {} |",
            r["round"],
            r["pushed"],
            r["pushes_per_s"].as_f64().unwrap_or(0.0),
            r["proxy_cpu_per_push_us"].as_f64().unwrap_or(0.0),
            r["sink_cpu_per_push_us"].as_f64().unwrap_or(0.0),
            proxy_extra["sink"]["decrypted"],
            proxy_extra["sink"]["undecryptable"],
        );
    }
    println!("\ntarget: >= 5000 encrypted pushes/s over keep-alive connections");
    Ok(serde_json::json!({
        "bench": "push_throughput",
        "sessions": o.sessions,
        "security": o.security,
        "machine": e2e::machine(),
        "sender_in_process": sender_rows,
        "through_proxy": proxy_rows,
        "through_proxy_setup": proxy_extra,
        "target_pushes_per_s": 5000,
    }))
}

fn main() {
    e2e::bench_main(
        "push_throughput",
        e2e::PROXY_SESSIONS_DEFAULT,
        e2e::Quiet::Needed,
        run,
    );
}
