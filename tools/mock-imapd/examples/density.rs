//! Density probe: opens N IDLE sessions against a running mock-imapd (plain
//! or TLS), reports the setup rate and the server's RSS per session, then
//! times an `exists all` and a `still-here all` storm.
//!
//! ```text
//! mock-imapd --listen-tls 127.0.0.1:20993-20996 --self-signed-ca-out /tmp/ca.pem \
//!     --control 127.0.0.1:20000 &
//! cargo run --release -p mock-imapd --example density -- \
//!     --imap 127.0.0.1:20993-20996 --ca /tmp/ca.pem --control 127.0.0.1:20000 \
//!     --sessions 19000 --threads 4 [--no-resume]
//! ```
//!
//! Loopback only; every read has a timeout and every loop a bound. The
//! process raises its own RLIMIT_NOFILE (it holds one socket per session).

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

const TIMEOUT: Duration = Duration::from_secs(30);

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Args {
    imap: Vec<SocketAddr>,
    ca: Option<String>,
    control: SocketAddr,
    sessions: usize,
    threads: usize,
    resume: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        imap: Vec::new(),
        ca: None,
        control: "127.0.0.1:20000".parse().map_err(|_| "addr")?,
        sessions: 1000,
        threads: 4,
        resume: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-resume" {
            a.resume = false;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--imap" => a.imap = mock_imapd::parse_addrs(&v).map_err(|e| e.to_string())?,
            "--ca" => a.ca = Some(std::fs::read_to_string(&v).map_err(|e| format!("{v}: {e}"))?),
            "--control" => a.control = v.parse().map_err(|_| format!("bad --control {v}"))?,
            "--sessions" => a.sessions = v.parse().map_err(|_| "bad --sessions")?,
            "--threads" => a.threads = v.parse().map_err(|_| "bad --threads")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.imap.is_empty() {
        return Err("--imap ADDR needed".into());
    }
    Ok(a)
}

fn tls_config(ca_pem: &str, resume: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// Reads until `needle` has arrived (bounded by bytes and the socket
/// timeout).
fn read_until(s: &mut dyn Stream, needle: &[u8]) -> Result<(), String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < 64 * 1024 {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&chunk[..n]);
        if got.windows(needle.len()).any(|w| w == needle) {
            return Ok(());
        }
    }
    Err("no end".into())
}

fn open(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    i: usize,
) -> Result<Box<dyn Stream>, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut s: Box<dyn Stream> = match tls {
        Some(cfg) => {
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let conn =
                rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    read_until(&mut *s, b"mock ready\r\n")?;
    s.write_all(format!("a LOGIN user{i} pw\r\nb EXAMINE INBOX\r\nc IDLE\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    read_until(&mut *s, b"+ idling\r\n")?;
    Ok(s)
}

fn control(
    ctl: &mut (BufReader<TcpStream>, TcpStream),
    line: &str,
) -> Result<(usize, String), String> {
    ctl.1
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    for data in 0..10_000_000 {
        let mut l = String::new();
        if ctl.0.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
            return Err("control closed".into());
        }
        if l.starts_with("OK") || l.starts_with("ERR") {
            return Ok((data, l.trim_end().to_string()));
        }
    }
    Err("control answer never ended".into())
}

fn stat(stats: &str, key: &str) -> u64 {
    stats
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), String> {
    let a = args()?;
    let _ = mock_imapd::raise_nofile_limit();
    let tls =
        a.ca.as_deref()
            .map(|ca| tls_config(ca, a.resume))
            .transpose()?;
    let c = TcpStream::connect_timeout(&a.control, TIMEOUT).map_err(|e| format!("control: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut ctl = (BufReader::new(c.try_clone().map_err(|e| e.to_string())?), c);
    let before = control(&mut ctl, "stats")?.1;
    let rss0 = stat(&before, "rss_kb");

    let start = Instant::now();
    let per = a.sessions.div_ceil(a.threads.max(1));
    let workers: Vec<_> = (0..a.threads.max(1))
        .map(|t| {
            let (imap, tls) = (a.imap.clone(), tls.clone());
            let range = (t * per)..((t + 1) * per).min(a.sessions);
            std::thread::spawn(move || {
                let mut held = Vec::with_capacity(range.len());
                for i in range {
                    match open(imap[i % imap.len()], tls.as_ref(), i) {
                        Ok(s) => held.push(s),
                        Err(e) => return Err(format!("session {i}: {e}")),
                    }
                }
                Ok(held)
            })
        })
        .collect();
    let mut held = Vec::new();
    for w in workers {
        held.extend(w.join().map_err(|_| "client thread panicked")??);
    }
    let setup = start.elapsed();
    println!(
        "opened {} sessions in {:.2} s: {:.0} sessions/s ({})",
        held.len(),
        setup.as_secs_f64(),
        held.len() as f64 / setup.as_secs_f64(),
        if tls.is_some() { "TLS" } else { "plain" }
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = control(&mut ctl, "stats")?.1;
    let rss1 = stat(&after, "rss_kb");
    println!(
        "server: sessions={} idling={} handshakes={} resumed={} rss {} KiB -> {} KiB: {:.2} KiB per session",
        stat(&after, "sessions"),
        stat(&after, "idling"),
        stat(&after, "handshakes"),
        stat(&after, "resumed"),
        rss0,
        rss1,
        (rss1.saturating_sub(rss0)) as f64 / held.len().max(1) as f64
    );

    let t = Instant::now();
    let answer = control(&mut ctl, "exists all")?.1;
    println!(
        "exists all: {answer} in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let (lines, last) = control(&mut ctl, "timestamps")?;
    println!(
        "timestamps: {lines} lines, {last}, dumped in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let answer = control(&mut ctl, "still-here all")?.1;
    println!(
        "still-here all: {answer} in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let rss2 = stat(&control(&mut ctl, "stats")?.1, "rss_kb");
    println!("server rss after the storms: {rss2} KiB");
    drop(held);
    Ok(())
}
