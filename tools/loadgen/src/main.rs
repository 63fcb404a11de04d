//! `loadgen`: registers N subscriptions through the proxy's REST API at a set
//! rate, over several keep-alive connections, and reports registrations per
//! second, answer latency and failures.
//!
//! # What it never does
//!
//! - **No retries.** Every registration is tried once; a failure is counted
//!   by its status (`0` for a broken connection or a timeout).
//! - **No unbounded run.** It stops after `--count` attempts or
//!   `--timeout-secs`, whichever comes first.
//! - **No real secrets.** Every account has the same password (`--password`,
//!   default `x`); the mock IMAP server accepts anything.
//!
//! Account `i` (from `--start`) is user `{prefix}{i}`; its `new_mail`
//! endpoint is `{sink}/n/{i}` and its `reconnect` endpoint `{sink}/r/{i}`.
//! With `--webpush-keys FILE` every `new_mail` endpoint carries the same Web
//! Push keys (so bodies are RFC 8291-encrypted): those of FILE's line
//! `/n/ PRIVATE AUTH` (the format `push-sink --decrypt-keys` reads) if FILE
//! exists, else a freshly drawn pair that is written there.
//!
//! Output: a progress line on stderr at least every 2 s (answered, rate, left), a table
//! on stderr at the end, and one `result {json}` line on stdout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use ring::rand::SecureRandom as _;

// The benches' progress lines, shared by source: loadgen is a tool of its own, without
// the benches' dependencies.
#[path = "../../../benches/src/progress.rs"]
#[allow(dead_code)]
mod progress;

const USAGE: &str = "\
loadgen: register N subscriptions through the proxy's REST API at a set rate

  --api URL                 proxy API, http://HOST:PORT (default http://127.0.0.1:8080)
  --imap-host HOST          IMAP host every account uses (default 127.0.0.1)
  --imap-port PORT          IMAP port (default 993)
  --security MODE           plain, tls or starttls (default tls)
  --count N                 registrations (default 1000)
  --start I                 first account index (default 0)
  --rate R                  registrations started per second; 0 = as fast as answered (default 0)
  --concurrency C           keep-alive API connections, one registration in flight each (default 64)
  --sink URL                push endpoint base, http://HOST:PORT (new_mail {URL}/n/I, reconnect {URL}/r/I)
  --user-prefix P           usernames P0, P1, ... (default u)
  --password W              password for every account (default x)
  --webpush-keys FILE       give new_mail endpoints Web Push keys: those in FILE (`/n/ PRIVATE AUTH`)
                            if it exists, else drawn and written there (for push-sink --decrypt-keys)
  --api-token T             Authorization: Bearer T
  --timeout-secs S          stop starting registrations after S seconds (default 600)
";

struct Cli {
    api: SocketAddr,
    api_host: String,
    imap_host: String,
    imap_port: u16,
    security: String,
    count: usize,
    start: usize,
    rate: f64,
    concurrency: usize,
    sink: String,
    user_prefix: String,
    password: String,
    webpush_keys: Option<String>,
    api_token: Option<String>,
    timeout: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut api = "http://127.0.0.1:8080".to_string();
    let mut cli = Cli {
        api: "127.0.0.1:8080".parse().expect("literal address"),
        api_host: String::new(),
        imap_host: "127.0.0.1".into(),
        imap_port: 993,
        security: "tls".into(),
        count: 1000,
        start: 0,
        rate: 0.0,
        concurrency: 64,
        sink: String::new(),
        user_prefix: "u".into(),
        password: "x".into(),
        webpush_keys: None,
        api_token: None,
        timeout: Duration::from_secs(600),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: bad value {v:?}");
        match flag.as_str() {
            "--api" => api = value()?,
            "--imap-host" => cli.imap_host = value()?,
            "--imap-port" => {
                let v = value()?;
                cli.imap_port = v.parse().map_err(|_| bad(&v))?;
            }
            "--security" => {
                cli.security = value()?;
                if !matches!(cli.security.as_str(), "plain" | "tls" | "starttls") {
                    return Err(bad(&cli.security));
                }
            }
            "--count" => {
                let v = value()?;
                cli.count = v.parse().map_err(|_| bad(&v))?;
            }
            "--start" => {
                let v = value()?;
                cli.start = v.parse().map_err(|_| bad(&v))?;
            }
            "--rate" => {
                let v = value()?;
                cli.rate = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| *r >= 0.0)
                    .ok_or_else(|| bad(&v))?;
            }
            "--concurrency" => {
                let v = value()?;
                cli.concurrency = v
                    .parse()
                    .ok()
                    .filter(|c| (1..=4096).contains(c))
                    .ok_or_else(|| bad(&v))?;
            }
            "--sink" => cli.sink = value()?.trim_end_matches('/').to_string(),
            "--user-prefix" => cli.user_prefix = value()?,
            "--password" => cli.password = value()?,
            "--webpush-keys" => cli.webpush_keys = Some(value()?),
            "--api-token" => cli.api_token = Some(value()?),
            "--timeout-secs" => {
                let v = value()?;
                cli.timeout = Duration::from_secs(v.parse().map_err(|_| bad(&v))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if cli.sink.is_empty() {
        return Err("--sink is required".into());
    }
    let authority = api
        .strip_prefix("http://")
        .ok_or("--api must be http://HOST:PORT")?
        .trim_end_matches('/');
    cli.api_host = authority.to_string();
    cli.api = authority
        .to_socket_addrs()
        .map_err(|e| format!("--api {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("--api {authority}: no address"))?;
    Ok(cli)
}

/// A user agent's Web Push keys: (p256dh, auth, private), base64url.
fn webpush_keys() -> Result<(String, String, String), String> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let rng = ring::rand::SystemRandom::new();
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).map_err(|_| "system RNG")?;
    // A random 32-byte string is a valid scalar but with probability ~2^-32.
    for _ in 0..16 {
        let mut scalar = [0u8; 32];
        rng.fill(&mut scalar).map_err(|_| "system RNG")?;
        if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
            let public = secret.public_key().to_encoded_point(false);
            return Ok((enc(public.as_bytes()), enc(&auth), enc(&scalar)));
        }
    }
    Err("no valid P-256 scalar drawn".into())
}

/// The keys in a `/n/ PRIVATE AUTH` file: (p256dh, auth, private), base64url.
fn read_webpush_keys(text: &str) -> Result<(String, String, String), String> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut words = text.split_whitespace().skip(1);
    let (Some(private), Some(auth)) = (words.next(), words.next()) else {
        return Err("keys file: want `/n/ PRIVATE AUTH`".into());
    };
    let scalar = b64.decode(private).map_err(|e| format!("keys file: {e}"))?;
    let secret = p256::SecretKey::from_slice(&scalar).map_err(|_| "keys file: bad private key")?;
    let public = secret.public_key().to_encoded_point(false);
    Ok((
        b64.encode(public.as_bytes()),
        auth.to_string(),
        private.to_string(),
    ))
}

fn body(cli: &Cli, i: usize, keys: Option<&(String, String, String)>) -> String {
    let mut new_mail = serde_json::json!({"endpoint": format!("{}/n/{i}", cli.sink)});
    if let Some((p256dh, auth, _)) = keys {
        new_mail["keys"] = serde_json::json!({"p256dh": p256dh, "auth": auth});
    }
    serde_json::json!({
        "imap": {"host": cli.imap_host, "port": cli.imap_port, "security": cli.security,
                 "username": format!("{}{i}", cli.user_prefix), "password": cli.password},
        "new_mail": new_mail,
        "reconnect": {"endpoint": format!("{}/r/{i}", cli.sink)},
    })
    .to_string()
}

/// One keep-alive API connection.
struct Client {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    /// POSTs one registration; the status, or 0 for a broken connection.
    fn register(&mut self, body: &str) -> u16 {
        match self.try_register(body) {
            Ok(status) => status,
            Err(_) => {
                self.stream = None;
                0
            }
        }
    }

    fn try_register(&mut self, body: &str) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            // The proxy answers once the IMAP session idles (register_timeout_secs, 30 s).
            s.set_read_timeout(Some(Duration::from_secs(40)))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        let auth = self
            .token
            .as_ref()
            .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "POST /v1/subscriptions HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut chunk = [0u8; 4096];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap_or(0);
                let mut len = 0usize;
                let mut close = false;
                for h in resp.headers.iter() {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = v.parse().unwrap_or(0);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = v.eq_ignore_ascii_case("close");
                    }
                }
                if self.buf.len() >= head + len {
                    self.buf.drain(..head + len);
                    if close {
                        self.stream = None;
                    }
                    return Ok(status);
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

struct Tally {
    latency_us: Histogram<u64>,
    by_status: std::collections::BTreeMap<u16, usize>,
}

fn run(cli: &Cli) -> Result<serde_json::Value, String> {
    let keys = match &cli.webpush_keys {
        Some(path) if std::path::Path::new(path).exists() => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(read_webpush_keys(&text)?)
        }
        Some(path) => {
            let k = webpush_keys()?;
            std::fs::write(path, format!("/n/ {} {}\n", k.2, k.1))
                .map_err(|e| format!("{path}: {e}"))?;
            Some(k)
        }
        None => None,
    };
    let next = AtomicUsize::new(0);
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&answered);
    let ticker = progress::Ticker::start("loadgen: registering", cli.count, move || {
        count.load(Ordering::Relaxed)
    });
    let tally = Mutex::new(Tally {
        latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
        by_status: Default::default(),
    });
    let started = Instant::now();
    let deadline = started + cli.timeout;
    std::thread::scope(|scope| {
        for _ in 0..cli.concurrency.min(cli.count.max(1)) {
            scope.spawn(|| {
                let mut client = Client {
                    addr: cli.api,
                    host: cli.api_host.clone(),
                    token: cli.api_token.clone(),
                    stream: None,
                    buf: Vec::new(),
                };
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cli.count || Instant::now() >= deadline {
                        return;
                    }
                    if cli.rate > 0.0 {
                        let due = started + Duration::from_secs_f64(n as f64 / cli.rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    let body = body(cli, cli.start + n, keys.as_ref());
                    let t0 = Instant::now();
                    let status = client.register(&body);
                    let us = t0.elapsed().as_micros() as u64;
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = t.latency_us.record(us.max(1));
                    *t.by_status.entry(status).or_default() += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    drop(ticker);
    let elapsed = started.elapsed().as_secs_f64();
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let ok = t.by_status.get(&201).copied().unwrap_or(0);
    let attempted: usize = t.by_status.values().sum();
    let h = &t.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "attempted": attempted,
        "created": ok,
        "failed": attempted - ok,
        "by_status": t.by_status.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        "elapsed_s": elapsed,
        "registrations_per_s": ok as f64 / elapsed.max(1e-9),
        "answer_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        "security": cli.security,
        "concurrency": cli.concurrency,
        "rate_limit_per_s": cli.rate,
        "webpush_keys": keys.is_some(),
    }))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(result) => {
            eprintln!(
                "| registrations | created | failed | elapsed s | per s | answer p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} |",
                result["attempted"],
                result["created"],
                result["failed"],
                result["elapsed_s"].as_f64().unwrap_or(0.0),
                result["registrations_per_s"].as_f64().unwrap_or(0.0),
                result["answer_ms"]["p50"].as_f64().unwrap_or(0.0),
                result["answer_ms"]["p99"].as_f64().unwrap_or(0.0),
                result["answer_ms"]["max"].as_f64().unwrap_or(0.0),
            );
            if result["failed"] != 0 {
                eprintln!("loadgen: failures by status: {}", result["by_status"]);
            }
            println!("result {result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
