//! End-to-end plumbing for the latency, storm and push-throughput benches: the proxy
//! (`imap-push-proxy serve`), a `mock-imapd` process with its control channel, a
//! `push-sink` process whose record file is followed, and `loadgen` for registrations.
//!
//! # What this module never does
//!
//! - **No stray processes.** Every child is held by a [`Proc`] guard that kills that one
//!   child by its PID and reaps it on drop (also while unwinding from a panic).
//! - **No unbounded waits.** Every wait takes a deadline and reports what it got.
//! - **No shared state with other benches** beyond `/tmp/bench.lock` and `target/bench/`.
//!
//! Linux only: CPU time is read from `/proc/PID/task/*/schedstat` (nanoseconds).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::progress::{Progress, Ticker};

/// `CLOCK_REALTIME` now, nanoseconds (the clock mock-imapd and push-sink stamp with).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `target/` of the running bench binary (`target/release/latency` -> `target/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|release| release.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// A release binary beside this bench binary.
pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The environment variable naming another proxy binary.
pub const PROXY_BIN_VAR: &str = "BENCH_PROXY_BIN";

/// The proxy binary: the one named by [`PROXY_BIN_VAR`] when set (to run the same bench
/// against another build of the proxy, e.g. an older commit, side by side; said on
/// stderr), else the one built beside this bench.
fn proxy_bin() -> PathBuf {
    match std::env::var_os(PROXY_BIN_VAR) {
        Some(path) => {
            let path = PathBuf::from(path);
            eprintln!("bench: proxy {} ({PROXY_BIN_VAR})", path.display());
            path
        }
        None => release_bin("imap-push-proxy"),
    }
}

/// Builds the proxy and the tools in release mode (a no-op when fresh), so that one
/// `cargo run --release -p benches --bin X` is the whole command.
pub fn build_tools() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["build", "--release", "--quiet"])
        .args(["-p", "server", "-p", "mock-imapd"])
        .args(["-p", "push-sink", "-p", "loadgen"])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build: {status}"));
    }
    Ok(())
}

/// PIDs of this process and its ancestors (a `cargo run` parent is not a disturbance).
fn ancestors() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    let mut pid = std::process::id();
    for _ in 0..64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        if ppid <= 1 {
            break;
        }
        out.push(ppid);
        pid = ppid;
    }
    out
}

/// Fuzzers running on the machine (`pid cmdline`), not counting our own ancestors (as
/// `pgrep -fa fuzz` would show them).
pub fn fuzzers() -> Vec<String> {
    let mine = ancestors();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        // `cargo fuzz ...`, `cargo-fuzz ...` or a target under `fuzz/target/`; not a
        // command that merely mentions fuzzers in an argument.
        let mut argv = cmd.split_whitespace();
        let (exe, first) = (argv.next().unwrap_or(""), argv.next().unwrap_or(""));
        if exe.contains("fuzz") || first == "fuzz" {
            found.push(format!(
                "{pid} {}",
                cmd.chars().take(80).collect::<String>()
            ));
        }
    }
    found
}

/// Waits up to `wait` for fuzzers to finish; returns those still running (reported in
/// the JSON, since they share the two cores with the measurement).
pub fn wait_for_no_fuzzers(wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let f = fuzzers();
        if f.is_empty() || Instant::now() >= deadline {
            return f;
        }
        eprintln!("bench: waiting for fuzzers to end: {}", f.join("; "));
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// A child process, killed by its PID and reaped on drop.
pub struct Proc {
    child: std::process::Child,
    stdout: Option<BufReader<std::process::ChildStdout>>,
    name: &'static str,
}

impl Proc {
    /// Starts `bin` with `args`; stdout piped (read with [`Proc::line`]), stdin piped
    /// (closed on drop), stderr to `log`.
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Proc, String> {
        let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Proc {
            child,
            stdout,
            name,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line that starts with `prefix` (without it), reading at most
    /// `lines_max` lines.
    pub fn line(&mut self, prefix: &str, lines_max: usize) -> Result<String, String> {
        let out = self.stdout.as_mut().ok_or("no stdout")?;
        for _ in 0..lines_max {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) => return Err(format!("{} exited before `{prefix}`", self.name)),
                Ok(_) => {}
                Err(e) => return Err(format!("reading {}: {e}", self.name)),
            }
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
        }
        Err(format!(
            "no `{prefix}` from {} in {lines_max} lines",
            self.name
        ))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// CPU time of every thread of `pid`, nanoseconds (`/proc/PID/task/*/schedstat`).
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for task in dir.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// The mock IMAP server process and its control channel.
pub struct Mock {
    pub proc: Proc,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub control: SocketAddr,
    pub ca_file: PathBuf,
}

impl Mock {
    pub fn start(dir: &Path) -> Result<Mock, String> {
        let ca_file = dir.join("mock-ca.pem");
        let args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--max-sessions",
            "19500",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--self-signed-ca-out".into(), ca_file.display().to_string()])
        .collect();
        let mut proc = Proc::spawn(
            "mock-imapd",
            &release_bin("mock-imapd"),
            &args,
            &dir.join("mock.log"),
        )?;
        let addr = |s: String| s.parse::<SocketAddr>().map_err(|e| format!("{s}: {e}"));
        let plain = addr(proc.line("plain ", 20)?)?;
        let tls = addr(proc.line("tls ", 20)?)?;
        let control = addr(proc.line("control ", 20)?)?;
        proc.line("ready", 20)?;
        Ok(Mock {
            proc,
            plain,
            tls,
            control,
            ca_file,
        })
    }

    pub fn connect(&self) -> Result<Control, String> {
        Control::connect(self.control)
    }
}

/// One connection to mock-imapd's control channel.
pub struct Control {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Control {
    pub fn connect(addr: SocketAddr) -> Result<Control, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("control {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Control { writer: s, reader })
    }

    /// Sends lines without waiting (pipelining); read the answers with [`Control::answer`].
    pub fn send(&mut self, lines: &str) -> Result<(), String> {
        self.writer
            .write_all(lines.as_bytes())
            .map_err(|e| format!("control write: {e}"))
    }

    /// Reads one answer: data lines, then its `OK ...` (returned last) or an error.
    pub fn answer(&mut self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        for _ in 0..1_000_000 {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("control closed".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("control read: {e}")),
            }
            let line = line.trim_end().to_string();
            if line.starts_with("ERR") {
                return Err(format!("control: {line}"));
            }
            let done = line.starts_with("OK");
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
        Err("control answer too long".into())
    }

    pub fn cmd(&mut self, line: &str) -> Result<Vec<String>, String> {
        self.send(&format!("{line}\n"))?;
        self.answer()
    }

    /// `exists NAME` then `timestamps`: the write time of that one EXISTS, with the mock's
    /// session index. Pipelines `names` and returns one entry per name.
    pub fn exists_stamped(&mut self, names: &[String]) -> Result<Vec<(usize, u64)>, String> {
        let mut batch = String::new();
        for n in names {
            batch.push_str(&format!("exists {n}\ntimestamps\n"));
        }
        self.send(&batch)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            self.answer()?;
            let stamps = parse_timestamps(&self.answer()?);
            let &[one] = &stamps[..] else {
                return Err(format!("exists {n}: {} timestamps, want 1", stamps.len()));
            };
            out.push(one);
        }
        Ok(out)
    }
}

/// `INDEX UNIX_NS` lines of a `timestamps` answer.
pub fn parse_timestamps(lines: &[String]) -> Vec<(usize, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// The push-sink process and its record file.
pub struct Sink {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub record: PathBuf,
}

impl Sink {
    pub fn start(dir: &Path, extra: &[String]) -> Result<Sink, String> {
        let record = dir.join("sink.rec");
        let mut args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--record".into(),
            record.display().to_string(),
            "--max-secs".into(),
            "1800".into(),
            "--exit-on-stdin-eof".into(),
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(
            "push-sink",
            &release_bin("push-sink"),
            &args,
            &dir.join("sink.log"),
        )?;
        let addr = proc.line("listening ", 5)?;
        let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        Ok(Sink { proc, addr, record })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The sink's counters (`GET /_sink/stats`).
    pub fn stats(&self) -> serde_json::Value {
        http_get(self.addr, "/_sink/stats")
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }
}

/// Follows a push-sink record file.
pub struct Tail {
    file: std::fs::File,
    pos: u64,
    partial: String,
}

/// One recorded push: the account index from `/n/I` (or `/r/I`), reconnect or not, and
/// the arrival time.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub index: usize,
    pub reconnect: bool,
    pub ns: u64,
    pub undecryptable: bool,
    /// The sink's answer when it was not a 2xx (a failure it was told to make), else 0.
    pub status: u16,
}

impl Tail {
    pub fn open(path: &Path) -> Result<Tail, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Tail {
            file,
            pos: 0,
            partial: String::new(),
        })
    }

    /// The records appended since the last call.
    pub fn read(&mut self) -> Vec<Arrival> {
        let mut text = String::new();
        if self.file.seek(SeekFrom::Start(self.pos)).is_ok() {
            let _ = self.file.read_to_string(&mut text);
        }
        self.pos += text.len() as u64;
        self.partial.push_str(&text);
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        complete
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let path = w.next()?;
                let ns = w.next()?.parse().ok()?;
                let rest: Vec<&str> = w.collect();
                let undecryptable = rest.first() == Some(&"undecryptable");
                let status = rest
                    .iter()
                    .find_map(|t| t.strip_prefix("status=")?.parse().ok())
                    .unwrap_or(0);
                let (reconnect, index) = if let Some(i) = path.strip_prefix("/n/") {
                    (false, i)
                } else {
                    (true, path.strip_prefix("/r/")?)
                };
                Some(Arrival {
                    index: index.parse().ok()?,
                    reconnect,
                    ns,
                    undecryptable,
                    status,
                })
            })
            .collect()
    }

    /// Collects new-mail arrivals until every index in `want` has one or `timeout`
    /// passes; returns index -> first arrival ns (reconnect pushes are counted apart).
    pub fn collect(&mut self, want: &[usize], timeout: Duration) -> Collected {
        let wanted: std::collections::HashSet<usize> = want.iter().copied().collect();
        let mut got = Collected::default();
        let deadline = Instant::now() + timeout;
        let mut progress = Progress::new("bench: pushes arriving", wanted.len(), Instant::now());
        loop {
            progress.tick(got.first.len());
            // A push the sink failed on purpose did not arrive; its retry will.
            for a in self.read().into_iter().filter(|a| a.status == 0) {
                if a.reconnect {
                    got.reconnects += 1;
                } else if wanted.contains(&a.index) {
                    got.undecryptable += usize::from(a.undecryptable);
                    got.first.entry(a.index).or_insert(a.ns);
                } else {
                    got.unexpected += 1;
                }
            }
            if got.first.len() >= wanted.len() || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What [`Tail::collect`] saw.
#[derive(Debug, Default)]
pub struct Collected {
    pub first: HashMap<usize, u64>,
    pub reconnects: usize,
    pub unexpected: usize,
    pub undecryptable: usize,
}

/// A GET over a fresh connection; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| "no HTTP body".into())
}

/// The proxy process.
pub struct Proxy {
    pub proc: Proc,
    pub api: SocketAddr,
    pub config: String,
}

impl Proxy {
    /// Starts `imap-push-proxy serve` with a config that allows loopback, `http://` and
    /// plain IMAP, trusts the mock's CA and lifts the rate limits; `extra` is appended to
    /// the top-level keys.
    pub fn start(dir: &Path, ca_file: &Path, extra: &str) -> Result<Proxy, String> {
        let api = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let config = format!(
            r#"listen = "{api}"
data_dir = "{}"
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
imap_extra_ca_file = "{}"
{extra}
[limits]
registrations_per_minute_per_ip = 100000000
logins_per_second_per_host = 1000000
pending_registrations_max = 100000
"#,
            dir.join("data").display(),
            ca_file.display()
        );
        let path = dir.join("proxy.toml");
        std::fs::write(&path, &config).map_err(|e| e.to_string())?;
        let args = vec![
            "serve".to_string(),
            "--config".into(),
            path.display().to_string(),
        ];
        let proc = Proc::spawn(
            "imap-push-proxy",
            &proxy_bin(),
            &args,
            &dir.join("proxy.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(api, "/healthz").is_err() {
            if Instant::now() > deadline {
                return Err("proxy did not answer /healthz in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Proxy { proc, api, config })
    }

    pub fn metrics(&self) -> String {
        http_get(self.api, "/metrics").unwrap_or_default()
    }

    /// The value of the first metric line starting with `name` (labels included).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name)
    }

    /// Open descriptors of the proxy process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.pid())).map_or(0, |d| d.count())
    }
}

/// Sessions ready on the proxy (idle or polling), from its metrics.
pub fn live_sessions(metrics: &str) -> usize {
    let idle = metric(metrics, "imap_push_sessions{state=\"idle\"}");
    let polling = metric(metrics, "imap_push_sessions{state=\"polling\"}");
    (idle + polling) as usize
}

/// The value of the first line of Prometheus `text` starting with `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs loadgen to completion and returns its `result` JSON.
pub fn loadgen(dir: &Path, args: &[String]) -> Result<serde_json::Value, String> {
    let mut proc = Proc::spawn(
        "loadgen",
        &release_bin("loadgen"),
        args,
        &dir.join("loadgen.log"),
    )?;
    let line = proc.line("result ", 10)?;
    serde_json::from_str(&line).map_err(|e| format!("loadgen said {line}: {e}"))
}

/// Options every end-to-end bench takes.
#[derive(Clone, Debug)]
pub struct Options {
    pub sessions: usize,
    /// `tls` or `plain`: how the proxy talks to the mock.
    pub security: String,
    /// Further `--key value` pairs for the bench itself.
    pub rest: HashMap<String, String>,
}

impl Options {
    /// Parses `--sessions N --security tls|plain` and any other `--key value`.
    pub fn parse(sessions_default: usize) -> Result<Options, String> {
        let mut o = Options {
            sessions: sessions_default,
            security: "tls".into(),
            rest: HashMap::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let key = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag}"))?;
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match key {
                "sessions" => o.sessions = value.parse().map_err(|_| format!("bad {flag}"))?,
                "security" if value == "tls" || value == "plain" => o.security = value,
                "security" => return Err("--security: tls or plain".into()),
                _ => {
                    o.rest.insert(key.to_string(), value);
                }
            }
        }
        if o.sessions == 0 || o.sessions > 19_000 {
            return Err("--sessions: 1..=19000 (one mock process, 20,000 descriptors)".into());
        }
        Ok(o)
    }

    pub fn num(&self, key: &str, default: f64) -> f64 {
        self.rest
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// A running set-up: mock, sink, proxy, and `sessions` registered accounts `u0..`.
pub struct Setup {
    pub dir: PathBuf,
    pub mock: Mock,
    pub sink: Sink,
    pub proxy: Proxy,
    pub tail: Tail,
    pub registration: serde_json::Value,
    pub sessions: usize,
}

impl Setup {
    /// Starts everything in a fresh directory under `target/bench/` and registers
    /// `o.sessions` accounts through loadgen (64 keep-alive API connections).
    ///
    /// With `webpush_keys` (a file of `/n/ PRIVATE AUTH`, see loadgen) every new-mail
    /// endpoint gets those Web Push keys.
    pub fn start(
        name: &str,
        o: &Options,
        sink_args: &[String],
        proxy_extra: &str,
        webpush_keys: Option<&Path>,
    ) -> Result<Setup, String> {
        let dir = target_dir()
            .join("bench")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mock = Mock::start(&dir)?;
        let sink = Sink::start(&dir, sink_args)?;
        let proxy = Proxy::start(&dir, &mock.ca_file, proxy_extra)?;
        let tail = Tail::open(&sink.record)?;
        let port = if o.security == "tls" {
            mock.tls.port()
        } else {
            mock.plain.port()
        };
        let mut args: Vec<String> = vec![
            "--api".into(),
            format!("http://{}", proxy.api),
            "--imap-host".into(),
            "127.0.0.1".into(),
            "--imap-port".into(),
            port.to_string(),
            "--security".into(),
            o.security.clone(),
            "--count".into(),
            o.sessions.to_string(),
            "--concurrency".into(),
            "64".into(),
            "--sink".into(),
            sink.url(),
            "--timeout-secs".into(),
            "300".into(),
        ];
        if let Some(keys) = webpush_keys {
            args.push("--webpush-keys".into());
            args.push(keys.display().to_string());
        }
        eprintln!(
            "bench: registering {} accounts ({})",
            o.sessions, o.security
        );
        // loadgen's own progress goes to its log: here, the sessions the proxy holds.
        let api = proxy.api;
        let ticker = Ticker::start("bench: registering", o.sessions, move || {
            live_sessions(&http_get(api, "/metrics").unwrap_or_default())
        });
        let registration = loadgen(&dir, &args);
        drop(ticker);
        let registration = registration?;
        let created = registration["created"].as_u64().unwrap_or(0) as usize;
        eprintln!(
            "bench: {created} created in {:.1} s ({:.0}/s)",
            registration["elapsed_s"].as_f64().unwrap_or(0.0),
            registration["registrations_per_s"].as_f64().unwrap_or(0.0)
        );
        if created != o.sessions {
            return Err(format!("registration: {registration}"));
        }
        Ok(Setup {
            dir,
            mock,
            sink,
            proxy,
            tail,
            registration,
            sessions: o.sessions,
        })
    }

    /// Account names `u0..u{sessions}`.
    pub fn name(i: usize) -> String {
        format!("u{i}")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The processes go first (fields drop after this), then their files.
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// Latency summary in milliseconds.
pub fn summary_ms(h: &Histogram<u64>) -> serde_json::Value {
    let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

/// A microsecond histogram from 1 µs to 10 minutes.
pub fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

/// Writes `value` to `target/bench/{name}.json`; returns the path.
pub fn write_json(name: &str, value: &serde_json::Value) -> PathBuf {
    let dir = target_dir().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("bench: {}: {e}", path.display());
    }
    path
}

/// The machine, for the JSON: cores and kernel.
pub fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({"cores": cores, "kernel": kernel.trim()})
}

/// Whether a bench needs the machine to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// Its figures are rates or latencies: take the bench lock and wait (bounded) for
    /// fuzzers, so no other bench or fuzzer runs beside it.
    Needed,
    /// Its figures do not depend on the CPU it gets (memory over time, counts), and it
    /// runs for long: holding the lock would stall every other bench that long.
    NotNeeded,
}

/// Sessions the end-to-end benches hold by default: what the proxy's descriptor budget
/// (`server::fd_budget`) admits under this machine's hard limit of 20,000 descriptors
/// (`check-config` says `sessions_capacity=17800`). Past it a registration is refused
/// with `503 at_capacity`, as it should be. The README's figures before the budget
/// existed were taken at 19,000.
pub const PROXY_SESSIONS_DEFAULT: usize = 17_800;

/// The whole `main` of an end-to-end bench: parse the options (default `sessions`), build
/// the tools, take the bench lock and wait (bounded) for fuzzers if `quiet` says so, run,
/// write the JSON.
pub fn bench_main(
    name: &str,
    sessions: usize,
    quiet: Quiet,
    run: impl FnOnce(&Options) -> Result<serde_json::Value, String>,
) {
    let fail = |e: String, code: i32| -> ! {
        eprintln!("{name}: {e}");
        std::process::exit(code);
    };
    let o = Options::parse(sessions).unwrap_or_else(|e| fail(e, 2));
    build_tools().unwrap_or_else(|e| fail(e, 1));
    let (_lock, fuzzers) = if quiet == Quiet::Needed {
        let lock = crate::proc::bench_lock(Duration::from_secs(1800));
        let wait = Duration::from_secs(o.num("wait-fuzzers-secs", 300.0) as u64);
        (Some(lock), wait_for_no_fuzzers(wait))
    } else {
        (None, fuzzers())
    };
    let mut json = run(&o).unwrap_or_else(|e| fail(e, 1));
    json["fuzzers_running"] = fuzzers.into();
    let path = write_json(name, &json);
    println!("wrote {}", path.display());
}
