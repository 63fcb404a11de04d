//! density: memory and idle CPU of idle IMAP IDLE sessions held by the engine.
//!
//! ```text
//! cargo run --release -p benches --bin density [-- --max 19000 --plain|--tls|--compact-only --chain small|realistic]
//! ```
//!
//! Default: every variant (TLS with the small and the realistic chain, each on the compact
//! record layer and on rustls for the whole session (`tls_compact = false`), plain TCP),
//! each measured at N = 1k, 5k, 10k, 19k sessions, plus the floor measured in the same run.
//! Prints the tables and writes `target/bench/density.json`.
//!
//! Every measurement runs in a fresh child process (this binary re-run with `--measure`),
//! so freed heap from one variant never hides growth in the next; each child spawns its
//! own mock-imapd child process (`--mock-child`: the mock-imapd library in this binary),
//! which holds the server ends. The engine is embedded as a library; no HTTP server.
//!
//! - **User space per session** is the slope of a least-squares line through the bench
//!   process's RSS at each step (fixed costs such as threads, pools and the wheel drop out).
//!   A counting global allocator gives the live heap bytes and blocks per session too.
//! - **Kernel per socket end** is the slope of the slab growth (`/proc/slabinfo`, named
//!   caches; and `/proc/meminfo` `Slab`) over the steps, divided by 2: the mock's end of each
//!   connection lives in the same kernel and costs the same objects (a TCP socket, its
//!   inode, file, dentry and epoll item), so one session adds two ends.
//! - **Floor**: N loopback TCP pairs registered in one epoll (kernel per end), and N bare
//!   rustls `UnbufferedClientConnection`s (inside `engine::tls::Tls`, 48 bytes more) after a
//!   handshake against the same mock with no buffer held (user space per connection); the
//!   buffered `rustls::ClientConnection` is measured alongside for reference. For the
//!   compact path the user-space floor is the TLS state that must exist: the size of
//!   `engine::tls::Tls` (raw keys, IVs, sequence numbers, TLS 1.3 secrets), inline in a slot.
//! - **Idle CPU**: utime + stime of the bench process over 30 s with every session idle.
//!
//! Loops are bounded in count and time; children are killed by PID if anything panics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::proc::{self, Chain, Child, MockServer, Slab};
use benches::progress::Progress;
use engine::tls::{RecordPool, Tls, TlsClient};
use engine::{Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Counts live heap bytes and blocks: what the sessions hold, without RSS's page rounding
/// and allocator slack.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Session counts measured, capped by `--max`.
const STEPS: [usize; 4] = [1_000, 5_000, 10_000, 19_000];
/// Most sessions one process may hold: 20,000 descriptors, a few for itself.
const SESSIONS_MAX: usize = 19_400;
/// Time for all sessions of one step to become ready.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
/// Quiet time before each reading (late tickets, lent buffers returned).
const SETTLE: Duration = Duration::from_secs(2);
/// Idle CPU is measured over this long at the largest N.
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(30);
/// Socket pairs for the kernel floor: 2 descriptors each.
const FLOOR_PAIRS: usize = 9_000;
/// Connections handshaking at once in the rustls floor.
const HANDSHAKE_BATCH: usize = 64;

/// Targets from the issues: the compact TLS path (issue 11), rustls kept (the old target).
const TARGET_TLS_COMPACT_USER_BYTES: f64 = 1_024.0;
const TARGET_TLS_USER_BYTES: f64 = 6_000.0;
const TARGET_PLAIN_USER_BYTES: f64 = 1_000.0;
const TARGET_IDLE_CPU_PCT: f64 = 1.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--mock-child") => proc::mock_child_main(&args[1..]),
        Some("--measure") => {
            let result = match measure(&args[1..]) {
                Ok(v) => v,
                Err(e) => json!({ "error": e }),
            };
            println!("RESULT {result}");
            let _ = std::io::stdout().flush();
            // Exit at once: an orderly engine shutdown would LOGOUT 19k sessions.
            std::process::exit(0);
        }
        _ => {}
    }
    if let Err(e) = parent(&args) {
        eprintln!("density: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Parent: runs the variants, prints the tables, writes the JSON.

struct Options {
    max: usize,
    tls: bool,
    plain: bool,
    chains: Vec<Chain>,
    idle_secs: u64,
    /// Only the compact TLS path: no rustls floors, no `tls_compact = false` variant (a
    /// quick look while working on the slot; the README's figures come from full runs).
    compact_only: bool,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        max: 19_000,
        tls: true,
        plain: true,
        chains: vec![Chain::Small, Chain::Realistic],
        idle_secs: IDLE_CPU_WINDOW.as_secs(),
        compact_only: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--plain" => (o.tls, o.plain) = (false, true),
            "--tls" => (o.tls, o.plain) = (true, false),
            "--compact-only" => (o.tls, o.plain, o.compact_only) = (true, false, true),
            "--max" => {
                o.max = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--max needs a number")?
            }
            "--chain" => {
                let v = it.next().ok_or("--chain needs small|realistic")?;
                o.chains = vec![Chain::parse(v).ok_or("--chain: small or realistic")?];
            }
            "--idle-secs" => {
                o.idle_secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--idle-secs needs a number")?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.max == 0 || o.max > SESSIONS_MAX {
        return Err(format!(
            "--max must be 1..={SESSIONS_MAX} (20,000 descriptors)"
        ));
    }
    Ok(o)
}

fn run_child(args: &[String]) -> Result<Value, String> {
    eprintln!("density: measuring {}", args.join(" "));
    let mut child = Child::spawn_self(args).map_err(|e| format!("spawn: {e}"))?;
    let line = child.read_until("RESULT ", 100_000)?;
    child.finish(Duration::from_secs(30));
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad result: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("{} failed: {e}", args.join(" ")));
    }
    Ok(v)
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn parent(args: &[String]) -> Result<(), String> {
    let o = options(args)?;
    let _lock = proc::bench_lock(Duration::from_secs(30 * 60));
    let busy = proc::wait_for_quiet(Duration::from_secs(120));
    if !busy.is_empty() {
        eprintln!("density: measuring on a busy machine: {}", busy.join("; "));
    }
    let max = o.max.to_string();
    let idle = o.idle_secs.to_string();
    let kernel = run_child(&strings(&["--measure", "kernel"]))?;
    let mut variants = Vec::new();
    let mut floors = Vec::new();
    if o.tls {
        for chain in &o.chains {
            let c = chain.name();
            let kinds: &[&str] = if o.compact_only {
                &[]
            } else {
                &["unbuffered", "buffered"]
            };
            for kind in kinds {
                floors.push(run_child(&strings(&[
                    "--measure",
                    "rustls",
                    "--chain",
                    c,
                    "--max",
                    &max,
                    "--kind",
                    *kind,
                ]))?);
            }
            let paths: &[&str] = if o.compact_only {
                &["true"]
            } else {
                &["true", "false"]
            };
            for compact in paths {
                variants.push(run_child(&strings(&[
                    "--measure",
                    "engine",
                    "--security",
                    "tls",
                    "--chain",
                    c,
                    "--max",
                    &max,
                    "--idle-secs",
                    &idle,
                    "--compact",
                    *compact,
                ]))?);
            }
        }
    }
    if o.plain {
        variants.push(run_child(&strings(&[
            "--measure",
            "engine",
            "--security",
            "plain",
            "--chain",
            "small",
            "--max",
            &max,
            "--idle-secs",
            &idle,
        ]))?);
    }
    let report = summarize(&kernel, &floors, &variants, &busy);
    let path = proc::bench_out_dir().join("density.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// Prints the tables and returns the JSON report.
fn summarize(kernel: &Value, floors: &[Value], variants: &[Value], busy: &[String]) -> Value {
    let kernel_end = f(kernel, "named_bytes_per_end");
    println!();
    println!(
        "Kernel floor: {} loopback TCP pairs in one epoll: {:.0} B per socket end (named caches), {:.0} B (meminfo Slab)",
        kernel["pairs"],
        kernel_end,
        f(kernel, "slab_bytes_per_end")
    );
    if let Some(named) = kernel["named"].as_array() {
        let parts: Vec<String> = named
            .iter()
            .map(|c| {
                format!(
                    "{} {:.0}",
                    c[0].as_str().unwrap_or("?"),
                    c[2].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!("  per end: {}", parts.join(", "));
    }
    println!();
    println!("Per-step readings (bench process; kernel = both socket ends)");
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "variant", "N", "RSS MiB", "priv MiB", "heap MiB", "blocks", "slab MiB", "mock MiB"
    );
    for v in floors.iter().chain(variants) {
        for s in v["steps"].as_array().into_iter().flatten() {
            println!(
                "{:<28} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>10.1} {:>10.1}",
                v["name"].as_str().unwrap_or("?"),
                s["n"],
                f(s, "rss") / 1048576.0,
                f(s, "private_dirty") / 1048576.0,
                f(s, "heap_live") / 1048576.0,
                s["heap_blocks"],
                f(s, "slab_total") / 1048576.0,
                f(s, "mock_rss") / 1048576.0,
            );
        }
    }
    println!();
    println!("Floor (user space per connection, RSS slope; heap = live bytes counted)");
    println!(
        "{:<30} {:>8} {:>10} {:>10} {:>8} {:>7}",
        "floor", "chain B", "RSS B", "heap B", "blocks", "r²"
    );
    for v in floors {
        println!(
            "{:<30} {:>8} {:>10.0} {:>10.0} {:>8.1} {:>7.4}",
            v["name"].as_str().unwrap_or("?"),
            v["chain_bytes"],
            f(v, "rss_slope"),
            f(v, "heap_slope"),
            f(v, "blocks_slope"),
            f(v, "rss_r2"),
        );
    }
    println!();
    println!("Density (per idle session; user = bench process RSS slope 1k..19k; kernel = per socket end)");
    println!(
        "{:<28} {:>7} {:>9} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>7}",
        "variant",
        "user B",
        "target",
        "heap B",
        "blocks",
        "r²",
        "kernel B",
        "total B",
        "floor B",
        "ratio",
        "1M GiB",
        "idle CPU",
        "CPU ok"
    );
    let mut rows = Vec::new();
    for v in variants {
        let tls = v["security"] == "tls";
        let compact = v["compact"] == true;
        let chain = v["chain"].as_str().unwrap_or("small");
        let floor_user = if compact {
            std::mem::size_of::<Tls>() as f64
        } else {
            floors
                .iter()
                .find(|fl| fl["chain"] == chain && fl["kind"] == "unbuffered")
                .map_or(0.0, |fl| f(fl, "rss_slope"))
        };
        let user = f(v, "rss_slope");
        let kern = f(v, "kernel_named_per_end");
        let floor = kernel_end + if tls { floor_user } else { 0.0 };
        let total = user + kern;
        let target = if compact {
            TARGET_TLS_COMPACT_USER_BYTES
        } else if tls {
            TARGET_TLS_USER_BYTES
        } else {
            TARGET_PLAIN_USER_BYTES
        };
        let cpu = f(v, "idle_cpu_pct");
        let row = json!({
            "variant": v["name"],
            "user_bytes_per_session": user,
            "user_target_bytes": target,
            "user_within_target": user <= target,
            "heap_bytes_per_session": f(v, "heap_slope"),
            "heap_blocks_per_session": f(v, "blocks_slope"),
            "rss_r2": f(v, "rss_r2"),
            "kernel_bytes_per_socket_end": kern,
            "kernel_slab_total_per_end": f(v, "kernel_slab_per_end"),
            "total_bytes_per_session": total,
            "floor_bytes_per_session": floor,
            "ratio_to_floor": total / floor,
            "projection_1m_gib": total * 1e6 / 1073741824.0,
            "idle_cpu_pct_of_core": cpu,
            "idle_cpu_within_target": cpu < TARGET_IDLE_CPU_PCT,
        });
        println!(
            "{:<28} {:>7.0} {:>9} {:>8.0} {:>7.1} {:>7.4} {:>9.0} {:>9.0} {:>9.0} {:>8.2} {:>9.2} {:>7.2}% {:>7}",
            v["name"].as_str().unwrap_or("?"),
            user,
            format!("{} {}", target, verdict(user <= target)),
            f(v, "heap_slope"),
            f(v, "blocks_slope"),
            f(v, "rss_r2"),
            kern,
            total,
            floor,
            total / floor,
            total * 1e6 / 1073741824.0,
            cpu,
            verdict(cpu < TARGET_IDLE_CPU_PCT),
        );
        rows.push(row);
    }
    let slope_of = |name: &str| {
        variants
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| f(v, "rss_slope"))
    };
    let floor_of = |chain: &str| {
        floors
            .iter()
            .find(|v| v["chain"] == chain && v["kind"] == "unbuffered")
    };
    let mut chain_cost = Value::Null;
    if let (Some(small), Some(real), Some(fs), Some(fr)) = (
        slope_of("engine-tls-small-rustls"),
        slope_of("engine-tls-realistic-rustls"),
        floor_of("small"),
        floor_of("realistic"),
    ) {
        let der = f(fr, "chain_bytes") - f(fs, "chain_bytes");
        println!();
        println!(
            "Kept certificate chain: realistic ({} B) - small ({} B) = {:.0} B more DER; engine RSS +{:.0} B, bare rustls RSS +{:.0} B, heap +{:.0} B per session",
            fr["chain_bytes"],
            fs["chain_bytes"],
            der,
            real - small,
            f(fr, "rss_slope") - f(fs, "rss_slope"),
            f(fr, "heap_slope") - f(fs, "heap_slope"),
        );
        chain_cost = json!({
            "der_bytes_small": fs["chain_bytes"],
            "der_bytes_realistic": fr["chain_bytes"],
            "engine_rss_delta": real - small,
            "rustls_rss_delta": f(fr, "rss_slope") - f(fs, "rss_slope"),
            "rustls_heap_delta": f(fr, "heap_slope") - f(fs, "heap_slope"),
        });
    }
    let sizes = json!({
        "slot": engine::reactor::SLOT_BYTES,
        "slot_max": engine::reactor::SLOT_BYTES_MAX,
        "session": std::mem::size_of::<engine::session::Session>(),
        "tls_state": std::mem::size_of::<Tls>(),
        "wheel_node": engine::wheel::NODE_BYTES,
        "presize_sessions_max": engine::reactor::PRESIZE_SESSIONS_MAX,
    });
    println!();
    println!(
        "Fixed-size state per session: slot {} B (session {} B, TLS state {} B), wheel node {} B",
        sizes["slot"], sizes["session"], sizes["tls_state"], sizes["wheel_node"]
    );
    println!();
    json!({
        "bench": "density",
        "sizes": sizes,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "busy_processes_at_start": busy,
        "kernel_floor": kernel,
        "rustls_floors": floors,
        "variants": variants,
        "summary": rows,
        "cert_chain_cost": chain_cost,
    })
}

// ---------------------------------------------------------------------------------------
// Children: one measurement each, printed as `RESULT {json}`.

fn arg<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn measure(args: &[String]) -> Result<Value, String> {
    proc::raise_nofile_limit();
    let max: usize = arg(args, "--max")
        .and_then(|v| v.parse().ok())
        .unwrap_or(19_000);
    let chain = arg(args, "--chain")
        .and_then(Chain::parse)
        .unwrap_or(Chain::Small);
    let mut steps: Vec<usize> = STEPS.iter().copied().filter(|&s| s < max).collect();
    steps.push(max);
    match args.first().map(String::as_str) {
        Some("kernel") => kernel_floor(),
        Some("rustls") => rustls_floor(chain, &steps, arg(args, "--kind") == Some("buffered")),
        Some("engine") => engine_density(
            chain,
            &steps,
            arg(args, "--security") != Some("plain"),
            arg(args, "--idle-secs")
                .and_then(|v| v.parse().ok())
                .unwrap_or(IDLE_CPU_WINDOW.as_secs()),
            arg(args, "--compact") != Some("false"),
        ),
        other => Err(format!("unknown measurement {other:?}")),
    }
}

/// One reading of everything at `n` sessions.
fn reading(n: usize, mock_pid: Option<u32>) -> Value {
    let m = proc::mem(None);
    let slab = Slab::read();
    let named: i64 = proc::SOCKET_CACHES
        .iter()
        .filter_map(|c| slab.caches.get(*c))
        .map(|&(objects, size)| (objects * size) as i64)
        .sum();
    json!({
        "n": n,
        "rss": m.rss,
        "private_dirty": m.private_dirty,
        "anonymous": m.anonymous,
        "heap_live": LIVE_BYTES.load(Ordering::Relaxed),
        "heap_blocks": LIVE_BLOCKS.load(Ordering::Relaxed),
        "slab_total": slab.total,
        "slab_named": named,
        "mock_rss": mock_pid.map_or(0, |p| proc::mem(Some(p)).rss),
    })
}

/// Slopes (per session) of the readings' fields, fitted over `n`.
fn slopes(steps: &[Value]) -> Value {
    let fit = |key: &str| {
        let pts: Vec<(f64, f64)> = steps.iter().map(|s| (f(s, "n"), f(s, key))).collect();
        proc::linear_fit(&pts)
    };
    let (rss, _, rss_r2) = fit("rss");
    let (private_dirty, _, _) = fit("private_dirty");
    let (heap, _, _) = fit("heap_live");
    let (blocks, _, _) = fit("heap_blocks");
    let (slab_total, _, _) = fit("slab_total");
    let (slab_named, _, _) = fit("slab_named");
    let (mock, _, _) = fit("mock_rss");
    // Consecutive-step slopes show whether growth is linear.
    let pairwise: Vec<f64> = steps
        .windows(2)
        .map(|w| (f(&w[1], "rss") - f(&w[0], "rss")) / (f(&w[1], "n") - f(&w[0], "n")))
        .collect();
    json!({
        "rss_slope": rss,
        "rss_r2": rss_r2,
        "rss_slope_pairwise": pairwise,
        "private_dirty_slope": private_dirty,
        "heap_slope": heap,
        "blocks_slope": blocks,
        "kernel_named_per_end": slab_named / 2.0,
        "kernel_slab_per_end": slab_total / 2.0,
        "mock_rss_slope": mock,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// N loopback TCP pairs, both ends registered (edge-triggered, readable) in one epoll.
fn kernel_floor() -> Result<Value, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // SAFETY: plain syscall; the descriptor is closed when the process exits.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err("epoll_create1 failed".into());
    }
    let register = |fd: i32| {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is valid for the call; `fd` is an open socket.
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) == 0 }
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = Slab::read();
    let mut held: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(FLOOR_PAIRS);
    let deadline = Instant::now() + Duration::from_secs(120);
    while held.len() < FLOOR_PAIRS && Instant::now() < deadline {
        let c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        if !register(c.as_raw_fd()) || !register(s.as_raw_fd()) {
            return Err("epoll_ctl failed".into());
        }
        held.push((c, s));
    }
    std::thread::sleep(SETTLE);
    let after = Slab::read();
    if !before.available() {
        return Err("/proc/slabinfo is not readable (run as root)".into());
    }
    let d = after.since(&before);
    let ends = (2 * held.len()) as f64;
    Ok(json!({
        "pairs": held.len(),
        "named": d.named.iter().map(|(n, o, b)| json!([n, *o as f64 / ends, *b as f64 / ends])).collect::<Vec<_>>(),
        "named_bytes_per_end": d.named_bytes as f64 / ends,
        "kmalloc_bytes_per_end": d.kmalloc_bytes as f64 / ends,
        "slab_bytes_per_end": d.total_bytes as f64 / ends,
    }))
}

/// Bare rustls client connections after a handshake against the mock, no buffer held.
fn rustls_floor(chain: Chain, steps: &[usize], buffered: bool) -> Result<Value, String> {
    let mock = MockServer::start(chain, 4, true)?;
    let config = engine::tls::client_config(false, None, std::slice::from_ref(&mock.ca_der))
        .map_err(|e| e.to_string())?;
    // The bare rustls floor: rustls kept for the whole connection.
    let client = TlsClient::new((*config).clone(), false);
    let max = steps.last().copied().unwrap_or(0);
    let mut unbuffered: Vec<(TcpStream, Box<Tls>)> = Vec::with_capacity(max);
    let mut buffered_conns: Vec<(TcpStream, Box<rustls::ClientConnection>)> =
        Vec::with_capacity(max);
    let mut pool = RecordPool::default();
    let mut readings = Vec::new();
    std::thread::sleep(SETTLE);
    let start = Instant::now();
    for &step in steps {
        let mut i = unbuffered.len() + buffered_conns.len();
        let phase = format!("  ramping rustls {} to {step}", chain.name());
        let mut progress = Progress::new(phase, step, Instant::now());
        while i < step {
            progress.tick(i);
            let batch = HANDSHAKE_BATCH.min(step - i);
            let addrs: Vec<SocketAddr> = (i..i + batch)
                .map(|k| mock.tls[k % mock.tls.len()])
                .collect();
            if buffered {
                buffered_conns.extend(handshake_buffered(&config, &addrs)?);
            } else {
                unbuffered.extend(handshake_unbuffered(&client, &addrs, &mut pool)?);
            }
            i += batch;
        }
        std::thread::sleep(SETTLE);
        readings.push(reading(step, Some(mock.pid())));
        eprintln!(
            "  rustls {} {}: {step} connections",
            chain.name(),
            if buffered { "buffered" } else { "unbuffered" }
        );
    }
    let kind = if buffered { "buffered" } else { "unbuffered" };
    let base = json!({
        "name": format!("rustls-{kind}-{}", chain.name()),
        "kind": kind,
        "chain": chain.name(),
        "chain_certs": mock.chain.0,
        "chain_bytes": mock.chain.1,
        "handshakes_per_s": max as f64 / start.elapsed().as_secs_f64(),
        "steps": readings.clone(),
    });
    Ok(merge(base, slopes(&readings)))
}

/// Waits (poll(2), bounded) until one of `fds` is readable.
fn wait_readable(fds: &[i32]) {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of pollfd for the call.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 100) };
}

fn connect_nonblocking(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Handshakes on `addrs` at once with `engine::tls::Tls` until each has received the IMAP
/// greeting (so the server's session tickets have been processed too).
fn handshake_unbuffered(
    client: &TlsClient,
    addrs: &[SocketAddr],
    pool: &mut RecordPool,
) -> Result<Vec<(TcpStream, Box<Tls>)>, String> {
    let mut conns = Vec::with_capacity(addrs.len());
    for &a in addrs {
        let tls = Tls::new(client, "127.0.0.1").map_err(|e| format!("{e:?}"))?;
        conns.push((connect_nonblocking(a)?, Box::new(tls), false));
    }
    let mut scratch = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while conns.iter().any(|c| !c.2) {
        if Instant::now() > deadline {
            return Err("rustls floor: handshakes timed out".into());
        }
        for (sock, tls, done) in conns.iter_mut().filter(|c| !c.2) {
            let mut got = false;
            tls.pump(sock, pool, &mut scratch, 1 << 16, |pt| {
                got |= pt.ends_with(b"\r\n");
                true
            })
            .map_err(|e| format!("rustls floor: {e:?}"))?;
            *done = got;
        }
        let fds: Vec<i32> = conns
            .iter()
            .filter(|c| !c.2)
            .map(|c| c.0.as_raw_fd())
            .collect();
        if !fds.is_empty() {
            wait_readable(&fds);
        }
    }
    Ok(conns
        .into_iter()
        .map(|(sock, mut tls, _)| {
            tls.release(pool);
            assert!(!tls.holds_buffers());
            (sock, tls)
        })
        .collect())
}

/// The same with rustls's buffered `ClientConnection`.
fn handshake_buffered(
    config: &Arc<rustls::ClientConfig>,
    addrs: &[SocketAddr],
) -> Result<Vec<(TcpStream, Box<rustls::ClientConnection>)>, String> {
    use std::io::Read as _;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .map_err(|e| e.to_string())?
        .to_owned();
    let mut conns = Vec::with_capacity(addrs.len());
    for &a in addrs {
        let conn = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(|e| e.to_string())?;
        conns.push((connect_nonblocking(a)?, Box::new(conn), false));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut plain = [0u8; 512];
    while conns.iter().any(|c| !c.2) {
        if Instant::now() > deadline {
            return Err("buffered floor: handshakes timed out".into());
        }
        for (sock, conn, done) in conns.iter_mut().filter(|c| !c.2) {
            while conn.wants_write() {
                match conn.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("write_tls: {e}")),
                }
            }
            match conn.read_tls(sock) {
                Ok(0) => return Err("buffered floor: server closed".into()),
                Ok(_) => {
                    conn.process_new_packets()
                        .map_err(|e| format!("buffered floor: {e}"))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("read_tls: {e}")),
            }
            match conn.reader().read(&mut plain) {
                Ok(n) if n > 0 => *done = plain[..n].ends_with(b"\r\n"),
                _ => {}
            }
            while conn.wants_write() {
                match conn.write_tls(sock) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let fds: Vec<i32> = conns
            .iter()
            .filter(|c| !c.2)
            .map(|c| c.0.as_raw_fd())
            .collect();
        if !fds.is_empty() {
            wait_readable(&fds);
        }
    }
    Ok(conns.into_iter().map(|(s, c, _)| (s, c)).collect())
}

fn spec(i: usize, addr: SocketAddr, security: Security) -> WatchSpec {
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

/// The engine holding N idle sessions against the mock, at each step.
fn engine_density(
    chain: Chain,
    steps: &[usize],
    tls: bool,
    idle_secs: u64,
    compact: bool,
) -> Result<Value, String> {
    let mock = MockServer::start(chain, 4, true)?;
    let engine = Engine::start(EngineConfig {
        reactor_threads: 2,
        session: engine::SessionConfig {
            tls_compact: compact,
            ..engine::SessionConfig::default()
        },
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
    std::thread::sleep(SETTLE);
    let mut readings = vec![];
    let (mut started, mut ready, mut failed) = (0usize, 0usize, 0usize);
    let mut first_failure = String::new();
    for &step in steps {
        let t = Instant::now();
        while started < step {
            match engine.watch(spec(started, addrs[started % addrs.len()], security)) {
                Ok(_) => started += 1,
                // A burst faster than the dispatcher takes it (its queue holds 4,096
                // commands, a step adds up to 9,000 sessions): wait for room.
                Err(engine::WatchError::AtCapacity) if t.elapsed() < STEP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let deadline = t + STEP_TIMEOUT;
        let phase = format!("  ramping engine {} to {step}", chain.name());
        let mut progress = Progress::new(phase, step, Instant::now());
        while ready + failed < step && Instant::now() < deadline {
            progress.tick(ready + failed);
            match engine.events().recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Ready { .. }) => ready += 1,
                Ok(Event::Failed { reason, .. } | Event::SessionLost { reason, .. }) => {
                    if failed == 0 {
                        first_failure = reason.to_string();
                    }
                    failed += 1;
                }
                _ => {}
            }
        }
        let setup_s = t.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let stats = engine.stats();
        let mut r = reading(step, Some(mock.pid()));
        r["ready"] = json!(ready);
        r["failed"] = json!(failed);
        r["setup_s"] = json!(setup_s);
        r["line_buffers_lent"] = json!(stats.line_buffers_lent);
        r["record_buffers_lent"] = json!(stats.record_buffers_lent);
        r["tls_compact_sessions"] = json!(stats.tls_compact_sessions);
        r["heap_trims"] = json!(stats.heap_trims);
        eprintln!(
            "  engine {} {}: {step} started, {ready} ready, {failed} failed in {setup_s:.1} s; buffers lent {}+{}; compact {}",
            if tls { "tls" } else { "plain" },
            chain.name(),
            stats.line_buffers_lent,
            stats.record_buffers_lent,
            stats.tls_compact_sessions
        );
        readings.push(r);
        if failed > 0 {
            return Err(format!("{failed} sessions failed, first: {first_failure}"));
        }
    }
    // Idle CPU of the largest N.
    let turns0 = engine.stats().loop_turns;
    let (cpu0, mock_cpu0, t0) = (proc::cpu_self(), proc::cpu_pid(mock.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (proc::cpu_self() - cpu0).as_secs_f64();
    let mock_cpu = (proc::cpu_pid(mock.pid()) - mock_cpu0).as_secs_f64();
    let turns = engine.stats().loop_turns - turns0;
    let name = if tls && compact {
        format!("engine-tls-{}", chain.name())
    } else if tls {
        format!("engine-tls-{}-rustls", chain.name())
    } else {
        "engine-plain".to_string()
    };
    let base = json!({
        "name": name,
        "security": if tls { "tls" } else { "plain" },
        "compact": tls && compact,
        "chain": if tls { chain.name() } else { "none" },
        "chain_certs": mock.chain.0,
        "chain_bytes": mock.chain.1,
        "reactor_threads": 2,
        "steps": readings.clone(),
        "idle_window_s": wall,
        "idle_cpu_s": cpu,
        "idle_cpu_pct": cpu / wall * 100.0,
        "idle_loop_turns": turns,
        "mock_idle_cpu_pct": mock_cpu / wall * 100.0,
    });
    Ok(merge(base, slopes(&readings)))
}
