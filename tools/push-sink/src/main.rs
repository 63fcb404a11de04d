//! `push-sink`: the push-service stand-in of the end-to-end benchmarks, as a
//! process: a thin command line over `push::testing::Sink`, the same stand-in the
//! tests use in process.
//!
//! # What it never does
//!
//! - **No TLS, no chunked bodies, no HTTP/2** (the sink's own limits).
//! - **No unbounded life or memory.** It exits after `--max-secs`, or when its
//!   standard input closes with `--exit-on-stdin-eof`; requests go to the record
//!   file, never into memory.
//!
//! # What it does
//!
//! Answers every request with `--status` (default `201 Created`,
//! `Content-Length: 0`) and keeps the connection open (HTTP/1.1). Each
//! request is recorded, when `--record FILE` is given, as one line
//! `PATH ARRIVAL_UNIX_NS` (`CLOCK_REALTIME` right after the read that
//! completed the request), plus ` ok` or ` undecryptable` when it was
//! decrypted. The file is flushed after every turn of the sink's loop, so
//! another process can follow it.
//!
//! `--decrypt-keys FILE` holds lines `PATH_PREFIX PRIVATE_KEY AUTH` (the
//! user agent's raw P-256 scalar and auth secret, base64url); an
//! `aes128gcm` body is decrypted (RFC 8291) with the longest matching
//! prefix's keys, every `--decrypt-every N`th one.
//!
//! `GET /_sink/stats` answers the counters as JSON (not recorded), and the
//! same JSON is printed as a `stats {...}` line on exit.

use std::io::{BufWriter, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use push::testing::{DecryptKey, Sink, SinkConfig, SinkStats};
use zeroize::Zeroizing;

const USAGE: &str = "\
push-sink: a keep-alive HTTP/1.1 push service stand-in that records arrival times

  --listen ADDR           IP:PORT to listen on (default 127.0.0.1:0; the bound address is printed)
  --status CODE           status answered to every request (default 201)
  --decrypt-keys FILE     lines `PATH_PREFIX PRIVATE_KEY_B64URL AUTH_B64URL`: decrypt aes128gcm bodies
  --decrypt-every N       decrypt only every Nth encrypted request (default 1)
  --record FILE           append `PATH ARRIVAL_UNIX_NS [ok|undecryptable] [status=N]` per request
  --fail-per-mille N      answer N of every 1,000 requests, at random, with --fail-status (default 0)
  --fail-status S         the status of those failures (default 500)
  --max-secs S            exit after S seconds (default 3600)
  --exit-on-stdin-eof     exit when standard input closes (for a parent process)
";

/// How often the main thread looks at the clock and standard input.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

struct Cli {
    listen: SocketAddr,
    status: u16,
    keys: Vec<DecryptKey>,
    decrypt_every: u64,
    record: Option<String>,
    max_secs: u64,
    exit_on_stdin_eof: bool,
    fail_per_mille: u16,
    fail_status: u16,
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("bad base64url {text:?}: {e}"))
}

fn read_keys(path: &str) -> Result<Vec<DecryptKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [prefix, private, auth] = f[..] else {
            return Err(format!("{path}: want `PREFIX PRIVATE AUTH`, got {line:?}"));
        };
        let private: [u8; 32] = b64(private)?
            .try_into()
            .map_err(|_| "private key must be 32 bytes")?;
        keys.push(DecryptKey {
            prefix: prefix.to_string(),
            private_key: Zeroizing::new(private),
            auth: b64(auth)?
                .try_into()
                .map_err(|_| "auth secret must be 16 bytes")?,
        });
    }
    Ok(keys)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut cli = Cli {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        status: 201,
        keys: Vec::new(),
        decrypt_every: 1,
        record: None,
        max_secs: 3600,
        exit_on_stdin_eof: false,
        fail_per_mille: 0,
        fail_status: 500,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: bad value {v:?}");
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                cli.listen = v.parse().map_err(|_| bad(&v))?;
            }
            "--status" => {
                let v = value()?;
                cli.status = v
                    .parse()
                    .ok()
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| bad(&v))?;
            }
            "--decrypt-keys" => cli.keys = read_keys(&value()?)?,
            "--decrypt-every" => {
                let v = value()?;
                cli.decrypt_every = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad(&v))?;
            }
            "--record" => cli.record = Some(value()?),
            "--fail-per-mille" => {
                let v = value()?;
                cli.fail_per_mille = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= 1000)
                    .ok_or_else(|| bad(&v))?;
            }
            "--fail-status" => {
                let v = value()?;
                cli.fail_status = v
                    .parse()
                    .ok()
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| bad(&v))?;
            }
            "--max-secs" => {
                let v = value()?;
                cli.max_secs = v.parse().map_err(|_| bad(&v))?;
            }
            "--exit-on-stdin-eof" => cli.exit_on_stdin_eof = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(cli)
}

fn watch_stdin(flag: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        flag.store(true, Ordering::SeqCst);
    });
}

/// Runs the sink until `--max-secs` pass or, with `--exit-on-stdin-eof`, standard
/// input closes.
fn serve(cli: Cli) -> Result<SinkStats, String> {
    let record: Option<Box<dyn Write + Send>> = match &cli.record {
        Some(path) => Some(Box::new(BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?,
        ))),
        None => None,
    };
    let sink = Sink::with_config(SinkConfig {
        listen: cli.listen,
        status: cli.status,
        // A benchmark sends far more than memory should hold; the record file has it.
        keep_requests: false,
        record,
        decrypt_keys: cli.keys,
        decrypt_every: cli.decrypt_every,
        fail_per_mille: cli.fail_per_mille,
        fail_status: cli.fail_status,
        fail_seed: cli.fail_per_mille.into(),
        ..SinkConfig::default()
    })
    .map_err(|e| format!("bind {}: {e}", cli.listen))?;
    let stdin_closed = Arc::new(AtomicBool::new(false));
    if cli.exit_on_stdin_eof {
        watch_stdin(Arc::clone(&stdin_closed));
    }
    println!("listening {}", sink.addr());
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_secs(cli.max_secs);
    while Instant::now() < deadline && !stdin_closed.load(Ordering::SeqCst) {
        std::thread::sleep(WATCH_INTERVAL);
    }
    sink.stop().map_err(|e| format!("sink: {e}"))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("push-sink: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(cli) {
        Ok(stats) => {
            println!("stats {}", stats.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("push-sink: {e}");
            ExitCode::FAILURE
        }
    }
}
