//! Process and kernel measurements (RSS, slab, CPU), and the child processes the benches
//! spawn (a mock IMAP server, or the bench binary itself in a measuring mode).
//!
//! Linux only: everything here reads `/proc`. `/proc/slabinfo` needs root.
//!
//! A bench that spawns children holds them in a [`Child`] guard: dropping it (also while
//! unwinding from a panic) kills that one child by its PID and reaps it. A mock server child
//! also exits by itself when its standard input closes, so it cannot outlive its parent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Memory of one process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    /// `VmRSS` from `/proc/PID/status`.
    pub rss: u64,
    /// `Private_Dirty` from `/proc/PID/smaps_rollup` (0 if unreadable).
    pub private_dirty: u64,
    /// `Anonymous` from `/proc/PID/smaps_rollup` (0 if unreadable).
    pub anonymous: u64,
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })
}

/// Memory of process `pid` (`None`: this process).
pub fn mem(pid: Option<u32>) -> Mem {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("{dir}/smaps_rollup")).unwrap_or_default();
    Mem {
        rss: kb_field(&status, "VmRSS").unwrap_or(0) * 1024,
        private_dirty: kb_field(&rollup, "Private_Dirty").unwrap_or(0) * 1024,
        anonymous: kb_field(&rollup, "Anonymous").unwrap_or(0) * 1024,
    }
}

/// CPU time (user + system) this process has used, at microsecond resolution.
pub fn cpu_self() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (utime + stime from `/proc/PID/stat`, clock-tick resolution) of process `pid`.
pub fn cpu_pid(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to fill and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Slab caches that one TCP socket end registered in an epoll instance allocates: the
/// socket (`TCP`), its inode (`sock_inode_cache`), its `struct file` (`filp`), its dentry,
/// and the epoll item (`eventpoll_epi`; `eventpoll_pwq` where the kernel has that cache,
/// newer kernels put the wait-queue entry in `kmalloc-64`).
pub const SOCKET_CACHES: &[&str] = &[
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
    "tcp_bind_bucket",
    "tcp_bind2_bucket",
];

/// A reading of `/proc/slabinfo` and `/proc/meminfo`'s `Slab`.
#[derive(Clone, Debug, Default)]
pub struct Slab {
    /// Cache name -> (active objects, object size in bytes).
    pub caches: BTreeMap<String, (u64, u64)>,
    /// `Slab` from `/proc/meminfo`, bytes (all caches, slack included).
    pub total: u64,
}

/// What changed between two [`Slab`] readings.
#[derive(Clone, Debug, Default)]
pub struct SlabDelta {
    /// (cache, active objects added, bytes added) for [`SOCKET_CACHES`].
    pub named: Vec<(String, i64, i64)>,
    /// Sum of `named` bytes.
    pub named_bytes: i64,
    /// Bytes added in every `kmalloc-*` cache (noisy: shared by the whole kernel).
    pub kmalloc_bytes: i64,
    /// Change of `/proc/meminfo` `Slab`, bytes.
    pub total_bytes: i64,
}

impl Slab {
    /// Reads the kernel's slab state. Empty caches when `/proc/slabinfo` is unreadable.
    pub fn read() -> Slab {
        let mut caches = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string("/proc/slabinfo") {
            for line in text.lines().skip(2) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 4 {
                    continue;
                }
                if let (Ok(active), Ok(size)) = (f[1].parse::<u64>(), f[3].parse::<u64>()) {
                    caches.insert(f[0].to_string(), (active, size));
                }
            }
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Slab {
            caches,
            total: kb_field(&meminfo, "Slab").unwrap_or(0) * 1024,
        }
    }

    /// True when `/proc/slabinfo` could be read.
    pub fn available(&self) -> bool {
        !self.caches.is_empty()
    }

    /// The change from `earlier` to `self`.
    pub fn since(&self, earlier: &Slab) -> SlabDelta {
        let get = |s: &Slab, name: &str| s.caches.get(name).copied().unwrap_or((0, 0));
        let mut d = SlabDelta {
            total_bytes: self.total as i64 - earlier.total as i64,
            ..SlabDelta::default()
        };
        for name in SOCKET_CACHES {
            if !self.caches.contains_key(*name) && !earlier.caches.contains_key(*name) {
                continue;
            }
            let (a1, size) = get(self, name);
            let (a0, _) = get(earlier, name);
            let objects = a1 as i64 - a0 as i64;
            let bytes = objects * size as i64;
            d.named_bytes += bytes;
            d.named.push((name.to_string(), objects, bytes));
        }
        for (name, &(a1, size)) in &self.caches {
            if name.starts_with("kmalloc-") && !name.contains("rcl") && !name.contains("cg") {
                let (a0, _) = get(earlier, name);
                d.kmalloc_bytes += (a1 as i64 - a0 as i64) * size as i64;
            }
        }
        d
    }
}

/// Least-squares fit `y = slope * x + intercept`; returns (slope, intercept, r²).
pub fn linear_fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, points.first().map_or(0.0, |p| p.1), 1.0);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    let r2 = if syy == 0.0 || sxx == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    (slope, my - slope * mx, r2)
}

/// Where benches write their JSON: `target/bench/` beside the running binary's
/// `target/release/` (honours a shared `CARGO_TARGET_DIR` that way).
pub fn bench_out_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .parent()
        .and_then(|release| release.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("bench");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A child process killed (by its PID) and reaped when dropped.
pub struct Child {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Child {
    /// Runs this bench binary again with `args` (stdin and stdout piped, stderr inherited).
    pub fn spawn_self(args: &[String]) -> std::io::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Child {
            child,
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout lines until one starts with `prefix` (returned without it), at most
    /// `lines_max` lines; a line that does not match is echoed to stderr.
    pub fn read_until(&mut self, prefix: &str, lines_max: usize) -> Result<String, String> {
        let out = self.stdout.as_mut().ok_or("no stdout")?;
        for _ in 0..lines_max {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) => return Err(format!("child exited before `{prefix}`")),
                Ok(_) => {}
                Err(e) => return Err(format!("reading child: {e}")),
            }
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim_end().to_string());
            }
            eprint!("  | {line}");
        }
        Err(format!("no `{prefix}` in {lines_max} lines"))
    }

    /// Waits (bounded) for the child to exit by itself; kills it past `timeout`.
    pub fn finish(mut self, timeout: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Closing stdin asks a mock server child to exit; the kill makes sure.
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Which certificate chain a mock server child generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Leaf + CA, RSA (~1.8 KB): the chain the density targets are stated for.
    Small,
    /// Leaf + intermediate, RSA (~3.5 KB): what public providers send.
    Realistic,
}

impl Chain {
    pub fn name(self) -> &'static str {
        match self {
            Chain::Small => "small",
            Chain::Realistic => "realistic",
        }
    }

    pub fn parse(s: &str) -> Option<Chain> {
        match s {
            "small" => Some(Chain::Small),
            "realistic" => Some(Chain::Realistic),
            _ => None,
        }
    }
}

/// A mock-imapd server in a child process (this binary re-run with `--mock-child`, which
/// calls [`mock_child_main`]).
pub struct MockServer {
    child: Child,
    /// Implicit-TLS listeners (one per `listeners`).
    pub tls: Vec<SocketAddr>,
    /// Plain listeners.
    pub plain: Vec<SocketAddr>,
    /// The CA to trust, DER.
    pub ca_der: Vec<u8>,
    /// (certificates, DER bytes) the server sends.
    pub chain: (usize, usize),
}

impl MockServer {
    /// Starts a mock with `listeners` plain and TLS listeners (spreading connections over
    /// several accept queues), one worker thread, and the given chain and resumption policy.
    pub fn start(chain: Chain, listeners: usize, resumption: bool) -> Result<MockServer, String> {
        let args = vec![
            "--mock-child".to_string(),
            chain.name().to_string(),
            listeners.to_string(),
            if resumption { "resume" } else { "full" }.to_string(),
        ];
        let mut child = Child::spawn_self(&args).map_err(|e| format!("spawn mock: {e}"))?;
        let line = child.read_until("MOCK ", 100)?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("mock said {line}: {e}"))?;
        let addrs = |k: &str| -> Vec<SocketAddr> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
                .unwrap_or_default()
        };
        let ca_hex = v["ca_der_hex"].as_str().unwrap_or("");
        let ca_der = (0..ca_hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&ca_hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        Ok(MockServer {
            tls: addrs("tls"),
            plain: addrs("plain"),
            ca_der,
            chain: (
                v["chain_certs"].as_u64().unwrap_or(0) as usize,
                v["chain_bytes"].as_u64().unwrap_or(0) as usize,
            ),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The body of a mock server child: `--mock-child CHAIN LISTENERS resume|full`. Prints one
/// `MOCK {json}` line, then serves until its standard input closes, and exits.
pub fn mock_child_main(args: &[String]) -> ! {
    use rustls::pki_types::pem::PemObject as _;
    let chain = args
        .first()
        .and_then(|s| Chain::parse(s))
        .unwrap_or(Chain::Small);
    let listeners: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let resumption = args.get(2).map(String::as_str) != Some("full");
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let config = mock_imapd::Config {
        listen: vec![loopback; listeners.max(1)],
        listen_tls: vec![loopback; listeners.max(1)],
        tls: Some(mock_imapd::TlsSource::Generated {
            chain: match chain {
                Chain::Small => mock_imapd::ChainKind::Small,
                Chain::Realistic => mock_imapd::ChainKind::Realistic,
            },
            alg: mock_imapd::KeyAlg::Rsa,
        }),
        threads: 1,
        tls_resumption: resumption,
        ..mock_imapd::Config::default()
    };
    let handle = match mock_imapd::run(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mock child: {e}");
            std::process::exit(1);
        }
    };
    let ca_der = handle
        .ca_pem()
        .and_then(|pem| rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let hex: String = ca_der.iter().map(|b| format!("{b:02x}")).collect();
    let (certs, bytes) = handle.tls_chain().unwrap_or((0, 0));
    let line = serde_json::json!({
        "tls": handle.tls_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "plain": handle.plain_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "ca_der_hex": hex,
        "chain_certs": certs,
        "chain_bytes": bytes,
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "MOCK {line}");
    let _ = out.flush();
    // Serve until the parent goes away (its end of our stdin closes).
    let mut sink = [0u8; 64];
    while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
    // Exiting at once: a graceful stop would log 19k sessions out one by one.
    std::process::exit(0);
}

/// Holds `/tmp/bench.lock` (flock) for the life of the value, so measurement runs on this
/// shared machine never overlap (`flock /tmp/bench.lock CMD` takes the same lock).
pub struct BenchLock {
    _file: Option<std::fs::File>,
}

/// Takes the bench lock, waiting at most `wait`; past that the run goes on unlocked (and
/// says so on stderr). Under `flock /tmp/bench.lock CMD` the lock is already ours: the
/// inherited descriptor is recognised and nothing is taken.
pub fn bench_lock(wait: Duration) -> BenchLock {
    use std::os::fd::AsRawFd as _;
    let inherited = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/tmp/bench.lock")));
    if inherited {
        return BenchLock { _file: None };
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/bench.lock")
    else {
        return BenchLock { _file: None };
    };
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return BenchLock { _file: Some(file) };
        }
        if Instant::now() >= deadline {
            eprintln!("bench: /tmp/bench.lock still held after {wait:?}; running anyway");
            return BenchLock { _file: None };
        }
        if !told {
            eprintln!("bench: waiting for /tmp/bench.lock (another bench is measuring)");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Other processes that would disturb a measurement (fuzzers, cargo, rustc), as
/// `pid command` lines.
pub fn busy_processes() -> Vec<String> {
    let mine = ancestors();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let exe = cmd.split_whitespace().next().unwrap_or("");
        let name = exe.rsplit('/').next().unwrap_or("");
        // A fuzzer is `cargo-fuzz` or a libFuzzer binary under `fuzz/target/`; the word
        // "fuzz" among another program's arguments does not make one.
        let fuzzer =
            name.contains("fuzz") || exe.contains("/fuzz/target/") || exe.starts_with("fuzz/");
        if fuzzer || matches!(name, "cargo" | "rustc" | "cargo-clippy" | "clippy-driver") {
            found.push(format!(
                "{pid} {}",
                cmd.chars().take(100).collect::<String>()
            ));
        }
    }
    found
}

/// Waits up to `wait` for [`busy_processes`] to be gone; returns what is still running.
pub fn wait_for_quiet(wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let busy = busy_processes();
        if busy.is_empty() || Instant::now() >= deadline {
            return busy;
        }
        eprintln!("bench: waiting for a quiet machine: {}", busy.join("; "));
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// This process, its parent (`cargo run`), and so on up to init.
fn ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    for _ in 0..64 {
        let pid = chain[chain.len() - 1];
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = &s[s.rfind(')')? + 1..];
                after.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        match ppid {
            Some(p) if p > 1 && !chain.contains(&p) => chain.push(p),
            _ => break,
        }
    }
    chain
}
