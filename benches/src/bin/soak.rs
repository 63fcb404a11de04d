//! Soak: thousands of sessions on the mock for half an hour while subscriptions are
//! deleted and registered again, the mock drops sessions, and pushes fail at random.
//!
//! ```sh
//! cargo run --release -p benches --bin soak        # ~32 min; target/bench/soak.json
//! # options: --sessions 5000 --minutes 30 --warmup-minutes 7 --churn-per-s 100
//! #          --drop-percent-per-min 1 --mail-per-s 20 --fail-per-mille 50 --security tls|plain
//! ```
//!
//! What runs, all bounded in count and time:
//! - `--sessions` accounts registered through the API (the proxy's per-IP and per-host
//!   rate limits are raised by the bench's config, printed at the start);
//! - churn: `--churn-per-s` times a second an account is deleted (`DELETE`, 204) and
//!   registered again (`POST`, 201), spread over [`WORKERS`] API connections;
//! - drops: the mock closes `--drop-percent-per-min` of the sessions a minute (`close`
//!   by name); the bench, as an app would, registers an account again once its
//!   reconnect push has arrived;
//! - new mail: `exists random K`, `--mail-per-s` a second; the push sink fails
//!   `--fail-per-mille` of all pushes with 500, so the proxy retries.
//!
//! Every [`SAMPLE_EVERY`] it samples the proxy's RSS, live heap (the counting allocator,
//! `imap_push_heap_live_bytes`), descriptors and sessions. After the warm-up (at least
//! one turn of the engine's timing wheel, 409.6 s) it fits a line through RSS and heap
//! over time: the slope must be zero within noise (its 95 % interval holds zero, or the
//! drift over the window is under 0.5 % of the level). At the end it checks that every
//! dropped session got its reconnect push, that no reconnect came unasked, and that the
//! proxy and the mock hold exactly one session per registered account (none leaked).
//! Exit status 1 if any check fails. It does not take the bench lock: its figures are
//! memory and counts over time, which do not depend on the CPU it gets, and holding the
//! lock for half an hour would stall every other bench.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::e2e::{self, Options};
use benches::proc;
use crossbeam_channel::{Receiver, Sender};

/// API connections, each owning the accounts `i` with `i % WORKERS == its number`, so
/// one account's DELETE, POST, drop and re-registration never race.
const WORKERS: usize = 4;
/// How often the proxy is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// One turn of the engine's timing wheel (`engine::wheel`: 4,096 slots of 100 ms).
const WHEEL_TURN: Duration = Duration::from_millis(409_600);
/// How long the end waits for the last reconnect pushes (backoff after 500s included).
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// An API answer must come within this (a registration waits for the IMAP login).
const API_TIMEOUT: Duration = Duration::from_secs(40);

struct Plan {
    sessions: usize,
    security: String,
    imap_port: u16,
    api: SocketAddr,
    sink: String,
    run_for: Duration,
    churn_per_s: f64,
    drops_per_min: f64,
    control: SocketAddr,
}

/// One keep-alive API connection.
struct Api {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// `METHOD path` with an optional JSON body: (status, body), status 0 if the
    /// connection broke.
    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        match self.try_call(method, path, body) {
            Ok(answer) => answer,
            Err(_) => {
                self.stream = None;
                (0, String::new())
            }
        }
    }

    fn try_call(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(API_TIMEOUT))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((status, len, head)) = parse_head(&self.buf) {
                if self.buf.len() >= head + len {
                    let body = String::from_utf8_lossy(&self.buf[head..head + len]).into_owned();
                    self.buf.drain(..head + len);
                    return Ok((status, body));
                }
            } else if self.buf.len() > 64 * 1024 {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// (status, Content-Length, head length) of a complete response head in `buf`.
fn parse_head(buf: &[u8]) -> Option<(u16, usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    Some((status, len, end))
}

fn registration(plan: &Plan, i: usize) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": plan.imap_port, "security": plan.security,
                 "username": format!("u{i}"), "password": "x"},
        "new_mail": {"endpoint": format!("{}/n/{i}", plan.sink)},
        "reconnect": {"endpoint": format!("{}/r/{i}", plan.sink)},
    })
    .to_string()
}

/// What the workers count, shared with the sampler.
#[derive(Default)]
struct Counts {
    registered: AtomicU64,
    deleted: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    unasked_reconnects: AtomicU64,
    api_failures: AtomicU64,
    awaiting: AtomicU64,
}

/// One worker's accounts and their subscription ids.
struct Worker {
    plan: Arc<Plan>,
    counts: Arc<Counts>,
    api: Api,
    control: e2e::Control,
    ids: HashMap<usize, String>,
    /// Dropped by the mock, waiting for the reconnect push (since when).
    awaiting: HashMap<usize, Instant>,
    reconnects: Receiver<usize>,
    failures: Vec<String>,
    rng: u64,
}

impl Worker {
    fn register(&mut self, i: usize) -> bool {
        let (status, body) =
            self.api
                .call("POST", "/v1/subscriptions", &registration(&self.plan, i));
        let id = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        match (status, id) {
            (201, Some(id)) => {
                self.ids.insert(i, id);
                self.counts.registered.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => {
                self.fail(format!("POST u{i}: {status}"));
                false
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.counts.api_failures.fetch_add(1, Ordering::Relaxed);
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }

    fn random(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    /// An account that is registered and not waiting for a reconnect push.
    fn pick(&mut self) -> Option<usize> {
        let mine: Vec<usize> = self.ids.keys().copied().collect();
        if mine.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let i = mine[self.random(mine.len())];
            if !self.awaiting.contains_key(&i) {
                return Some(i);
            }
        }
        None
    }

    fn churn(&mut self) {
        let Some(i) = self.pick() else { return };
        let Some(id) = self.ids.remove(&i) else {
            return;
        };
        let (status, _) = self
            .api
            .call("DELETE", &format!("/v1/subscriptions/{id}"), "");
        if status != 204 {
            self.fail(format!("DELETE u{i}: {status}"));
            return;
        }
        self.counts.deleted.fetch_add(1, Ordering::Relaxed);
        self.register(i);
    }

    fn drop_one(&mut self) {
        let Some(i) = self.pick() else { return };
        match self.control.cmd(&format!("close u{i}")) {
            // One session, or (rarely) also the last one of a DELETE, still logging out.
            Ok(answer)
                if answer
                    .last()
                    .is_some_and(|l| l.starts_with("OK ") && l != "OK 0") =>
            {
                self.awaiting.insert(i, Instant::now());
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                self.counts.awaiting.fetch_add(1, Ordering::Relaxed);
            }
            other => self.fail(format!("close u{i}: {other:?}")),
        }
    }

    /// Reconnect pushes that arrived: each must answer a drop; the app registers again.
    fn on_reconnects(&mut self) {
        while let Ok(i) = self.reconnects.try_recv() {
            if self.awaiting.remove(&i).is_none() {
                self.counts
                    .unasked_reconnects
                    .fetch_add(1, Ordering::Relaxed);
                if self.failures.len() < 20 {
                    self.failures
                        .push(format!("reconnect push for u{i}, never dropped"));
                }
                continue;
            }
            self.counts.reconnects.fetch_add(1, Ordering::Relaxed);
            self.counts.awaiting.fetch_sub(1, Ordering::Relaxed);
            self.ids.remove(&i);
            self.register(i);
        }
    }

    /// Churns and drops at the planned rates until `stop`, then waits (bounded) for the
    /// reconnect pushes still owed. Returns the accounts still waiting and the failures.
    fn run(mut self, stop: &AtomicBool) -> (Vec<usize>, Vec<String>) {
        let share = WORKERS as f64;
        let churn_every = Duration::from_secs_f64(share / self.plan.churn_per_s.max(0.001));
        let drop_every = Duration::from_secs_f64(60.0 * share / self.plan.drops_per_min.max(0.001));
        let start = Instant::now();
        let (mut churns, mut drops) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) {
            self.on_reconnects();
            let now = Instant::now();
            if now >= start + churn_every * churns {
                churns += 1;
                self.churn();
            } else if now >= start + drop_every * (drops + 1) {
                drops += 1;
                self.drop_one();
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let end = Instant::now() + SETTLE_MAX;
        while !self.awaiting.is_empty() && Instant::now() < end {
            self.on_reconnects();
            std::thread::sleep(Duration::from_millis(20));
        }
        self.on_reconnects();
        let left = self.awaiting.keys().copied().collect();
        (left, self.failures)
    }
}

/// Follows the sink's record: routes each delivered reconnect push to its account's
/// worker, and counts new-mail pushes and failed answers.
fn route_arrivals(
    mut tail: e2e::Tail,
    to: Vec<Sender<usize>>,
    stop: &AtomicBool,
    pushed: &AtomicU64,
    refused: &AtomicU64,
) {
    while !stop.load(Ordering::Relaxed) {
        for a in tail.read() {
            if a.status != 0 {
                refused.fetch_add(1, Ordering::Relaxed);
            } else if a.reconnect {
                let _ = to[a.index % WORKERS].send(a.index);
            } else {
                pushed.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One sample of the proxy.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    rss: f64,
    heap: f64,
    fds: f64,
    sessions: f64,
}

/// Slope per hour, its 95 % half-interval, and the verdict "zero within noise".
fn flat(points: &[(f64, f64)]) -> serde_json::Value {
    let (slope, intercept, r2) = proc::linear_fit(points);
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - (slope * p.0 + intercept)).powi(2))
        .sum();
    let se = if n > 2.0 && sxx > 0.0 {
        (sse / (n - 2.0) / sxx).sqrt()
    } else {
        f64::INFINITY
    };
    let level = points.iter().map(|p| p.1).sum::<f64>() / n;
    let span = points.last().map_or(0.0, |l| l.0) - points.first().map_or(0.0, |f| f.0);
    let drift = (slope * span).abs();
    let flat = slope.abs() <= 2.0 * se || drift <= 0.005 * level;
    serde_json::json!({
        "slope_per_hour": slope * 3600.0,
        "ci95_per_hour": 2.0 * se * 3600.0,
        "drift_over_window": slope * span,
        "level": level,
        "r2": r2,
        "flat": flat,
    })
}

fn sample(proxy: &e2e::Proxy, start: Instant) -> Sample {
    let metrics = proxy.metrics();
    Sample {
        secs: start.elapsed().as_secs_f64(),
        rss: proc::mem(Some(proxy.proc.pid())).rss as f64,
        heap: e2e::metric(&metrics, "imap_push_heap_live_bytes"),
        fds: proxy.fds() as f64,
        sessions: e2e::live_sessions(&metrics) as f64,
    }
}

fn register_all(plan: &Arc<Plan>, workers: &mut [Worker]) -> Result<(), String> {
    let mut progress =
        benches::progress::Progress::new("soak: registering", plan.sessions, Instant::now());
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .enumerate()
            .map(|(w, worker)| {
                s.spawn(move || {
                    (w..plan.sessions)
                        .step_by(WORKERS)
                        .filter(|&i| worker.register(i))
                        .count()
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            let done = workers_registered(plan);
            if let Some(line) = progress.poll_line(done, Instant::now()) {
                eprintln!("{line}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let created: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        if created == plan.sessions {
            Ok(())
        } else {
            Err(format!("registered {created} of {}", plan.sessions))
        }
    })
}

/// Sessions ready at the proxy (for the progress line while registering).
fn workers_registered(plan: &Plan) -> usize {
    e2e::live_sessions(&e2e::http_get(plan.api, "/metrics").unwrap_or_default())
}

fn run(o: &Options) -> Result<serde_json::Value, String> {
    let minutes = o.num("minutes", 30.0);
    let warmup = Duration::from_secs_f64(o.num("warmup-minutes", 7.0) * 60.0).max(WHEEL_TURN);
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    if run_for < warmup + SAMPLE_EVERY * 6 {
        return Err("--minutes must leave at least a minute after the warm-up".into());
    }
    let dir = e2e::target_dir()
        .join("bench")
        .join(format!("soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mock = e2e::Mock::start(&dir)?;
    let fail = o.num("fail-per-mille", 50.0) as u16;
    let sink_secs = (run_for + Duration::from_secs(3600)).as_secs().to_string();
    let sink = e2e::Sink::start(
        &dir,
        &[
            "--fail-per-mille".into(),
            fail.to_string(),
            "--max-secs".into(),
            sink_secs,
        ],
    )?;
    let proxy = e2e::Proxy::start(&dir, &mock.ca_file, "")?;
    let limits = proxy.config.split("[limits]").nth(1).unwrap_or("").trim();
    eprintln!("soak: the proxy's limits, raised for the bench:\n{limits}");
    let tail = e2e::Tail::open(&sink.record)?;
    let plan = Arc::new(Plan {
        sessions: o.sessions,
        imap_port: if o.security == "tls" {
            mock.tls.port()
        } else {
            mock.plain.port()
        },
        security: o.security.clone(),
        api: proxy.api,
        sink: sink.url(),
        run_for,
        churn_per_s: o.num("churn-per-s", 100.0),
        drops_per_min: o.num("drop-percent-per-min", 1.0) / 100.0 * o.sessions as f64,
        control: mock.control,
    });
    let counts = Arc::new(Counts::default());
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (tx, rx) = crossbeam_channel::bounded(plan.sessions + 1);
        senders.push(tx);
        workers.push(Worker {
            plan: Arc::clone(&plan),
            counts: Arc::clone(&counts),
            api: Api::new(plan.api),
            control: e2e::Control::connect(plan.control)?,
            ids: HashMap::new(),
            awaiting: HashMap::new(),
            reconnects: rx,
            failures: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1),
        });
    }
    eprintln!(
        "soak: registering {} accounts ({}), then {minutes} min of churn",
        plan.sessions, plan.security
    );
    register_all(&plan, &mut workers)?;
    let baseline_registered = counts.registered.load(Ordering::Relaxed);
    eprintln!(
        "soak: {baseline_registered} registered; churn, drops, mail and failing pushes start"
    );

    let stop_load = AtomicBool::new(false);
    let stop_tail = AtomicBool::new(false);
    let (pushed, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let mail_per_s = o.num("mail-per-s", 20.0).max(0.0) as usize;
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut mail = mock.connect()?;
    let (left, failures) = std::thread::scope(|s| {
        let tail_thread = s.spawn(|| route_arrivals(tail, senders, &stop_tail, &pushed, &refused));
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| s.spawn(|| w.run(&stop_load)))
            .collect();
        let mut next_sample = start;
        let mut next_line = start;
        let mut next_mail = start;
        while start.elapsed() < plan.run_for {
            let now = Instant::now();
            if now >= next_mail && mail_per_s > 0 {
                next_mail += Duration::from_secs(1);
                let _ = mail.cmd(&format!("exists random {mail_per_s}"));
            }
            if now >= next_sample {
                next_sample += SAMPLE_EVERY;
                samples.push(sample(&proxy, start));
            }
            if now >= next_line {
                next_line += Duration::from_secs(2);
                let last = samples.last().copied();
                eprintln!(
                    "soak: {:>5.0} s of {:.0}; churned {} dropped {} reconnected {} waiting {} pushed {} refused {}; rss {:.1} MiB heap {:.1} MiB fds {} sessions {}",
                    start.elapsed().as_secs_f64(),
                    plan.run_for.as_secs_f64(),
                    counts.deleted.load(Ordering::Relaxed),
                    counts.dropped.load(Ordering::Relaxed),
                    counts.reconnects.load(Ordering::Relaxed),
                    counts.awaiting.load(Ordering::Relaxed),
                    pushed.load(Ordering::Relaxed),
                    refused.load(Ordering::Relaxed),
                    last.map_or(0.0, |l| l.rss / 1048576.0),
                    last.map_or(0.0, |l| l.heap / 1048576.0),
                    last.map_or(0.0, |l| l.fds),
                    last.map_or(0.0, |l| l.sessions),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_load.store(true, Ordering::Relaxed);
        eprintln!(
            "soak: load stopped; waiting (at most {} s) for owed reconnect pushes",
            SETTLE_MAX.as_secs()
        );
        let mut left = Vec::new();
        let mut failures = Vec::new();
        for h in handles {
            let (l, f) = h.join().unwrap_or_default();
            left.extend(l);
            failures.extend(f);
        }
        stop_tail.store(true, Ordering::Relaxed);
        let _ = tail_thread.join();
        (left, failures)
    });

    // Settled: one session per account at the proxy and at the mock.
    std::thread::sleep(Duration::from_secs(5));
    let end = sample(&proxy, start);
    let mock_sessions = mail
        .cmd("sessions")
        .ok()
        .and_then(|a| {
            a.last()
                .and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(-1.0);
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.secs >= warmup.as_secs_f64())
        .collect();
    let series = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        window.iter().map(|s| (s.secs, f(s))).collect()
    };
    let rss = flat(&series(|s| s.rss));
    let heap = flat(&series(|s| s.heap));
    let fds = flat(&series(|s| s.fds));
    let owed: HashSet<usize> = left.into_iter().collect();
    let expected = plan.sessions as f64;
    let checks = serde_json::json!({
        "rss_flat": rss["flat"],
        "heap_flat": heap["flat"],
        "fds_flat": fds["flat"],
        "every_drop_got_its_reconnect": owed.is_empty(),
        "no_unasked_reconnect": counts.unasked_reconnects.load(Ordering::Relaxed) == 0,
        "proxy_sessions_equal_accounts": end.sessions == expected,
        "mock_sessions_equal_accounts": mock_sessions == expected,
        "no_api_failure": counts.api_failures.load(Ordering::Relaxed) == 0,
    });
    let ok = checks
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == true));
    println!(
        "Soak: {} sessions, {minutes} min, fit after {:.0} s of warm-up ({} samples)",
        plan.sessions,
        warmup.as_secs_f64(),
        window.len()
    );
    println!("| series | level | slope per hour | 95 % interval | drift over window | flat |");
    println!("|---|---|---|---|---|---|");
    for (name, v, unit) in [
        ("RSS", &rss, 1048576.0),
        ("live heap", &heap, 1048576.0),
        ("descriptors", &fds, 1.0),
    ] {
        let u = if unit > 1.0 { " MiB" } else { "" };
        let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN) / unit;
        println!(
            "| {name} | {:.2}{u} | {:+.3}{u} | ±{:.3}{u} | {:+.3}{u} | {} |",
            g("level"),
            g("slope_per_hour"),
            g("ci95_per_hour"),
            g("drift_over_window"),
            v["flat"]
        );
    }
    println!(
        "churned {} (DELETE + POST), dropped {}, reconnect pushes {}, owed at the end {}, unasked {}, new-mail pushes {}, refused by the sink {}, API failures {}",
        counts.deleted.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        counts.reconnects.load(Ordering::Relaxed),
        owed.len(),
        counts.unasked_reconnects.load(Ordering::Relaxed),
        pushed.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        counts.api_failures.load(Ordering::Relaxed),
    );
    println!(
        "sessions at the end: proxy {} mock {mock_sessions} accounts {expected}",
        end.sessions
    );
    for f in failures.iter().take(10) {
        println!("failure: {f}");
    }
    println!("checks: {checks}");
    let json = serde_json::json!({
        "sessions": plan.sessions,
        "security": plan.security,
        "minutes": minutes,
        "warmup_s": warmup.as_secs_f64(),
        "rss": rss, "heap": heap, "fds": fds,
        "churned": counts.deleted.load(Ordering::Relaxed),
        "dropped": counts.dropped.load(Ordering::Relaxed),
        "reconnects": counts.reconnects.load(Ordering::Relaxed),
        "owed": owed.len(),
        "new_mail_pushes": pushed.load(Ordering::Relaxed),
        "refused_by_sink": refused.load(Ordering::Relaxed),
        "api_failures": counts.api_failures.load(Ordering::Relaxed),
        "samples": samples.iter().map(|s| [s.secs, s.rss, s.heap, s.fds, s.sessions]).collect::<Vec<_>>(),
        "checks": checks,
        "ok": ok,
        "machine": e2e::machine(),
    });
    if !ok {
        e2e::write_json("soak", &json);
        return Err(format!("a check failed: {checks}"));
    }
    Ok(json)
}

fn main() {
    e2e::bench_main("soak", 5000, e2e::Quiet::NotNeeded, run);
}
